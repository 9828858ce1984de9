package main

import (
	"context"
	"maps"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/floor"
	"github.com/rowcast/rowcast/config"
)

func TestFindMarker(t *testing.T) {
	for _, tt := range []struct {
		frame string
		want  int64
		ok    bool
	}{
		{`{"data":{"changes":{"notes":"~rcb42"}}}`, 42, true},
		{`{"team":3,"row":{"notes": "~rcb0", "id": 7}}`, 0, true},
		{`{"notes":"~rcb"}`, 0, false},
		{`{"notes":"rcb12"}`, 0, false},
	} {
		got, ok := findMarker([]byte(tt.frame))
		if got != tt.want || ok != tt.ok {
			t.Errorf("findMarker(%s) = %d, %v; want %d, %v", tt.frame, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLoadSpecWantSumsToWrites(t *testing.T) {
	s := loadSpec{teams: 7, writes: 100}
	sum := 0
	for team := 1; team <= s.teams; team++ {
		sum += s.want(team)
	}
	if sum != s.writes || s.want(1) != 15 || s.want(7) != 14 {
		t.Errorf("want: sum %d, team 1 %d, team 7 %d; want 100, 15, 14", sum, s.want(1), s.want(7))
	}
}

func TestIntListAndCPUSplit(t *testing.T) {
	if got, err := intList("1, 8,32"); err != nil || len(got) != 3 || got[2] != 32 {
		t.Errorf("intList: %v, %v", got, err)
	}
	if _, err := intList("1,0"); err == nil {
		t.Error("intList accepted 0")
	}
	if _, _, err := cpuSplit("99999"); err == nil {
		t.Error("cpuSplit accepted a CPU that does not exist")
	}
	if _, _, err := cpuSplit("0"); runtime.NumCPU() == 1 && err == nil {
		t.Error("cpuSplit left PostgreSQL no CPU")
	}
	if mine, others, err := cpuSplit("0"); runtime.NumCPU() > 1 && (err != nil || mine != "0" || others[0] != '1') {
		t.Errorf("cpuSplit(0) = %q, %q, %v", mine, others, err)
	}
}

func TestProcStatReadsThisProcess(t *testing.T) {
	st, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != os.Getppid() {
		t.Errorf("ppid %d, want %d", st.ppid, os.Getppid())
	}
}

// PostgreSQL's CPU split by process: a process that started between two
// readings counts from zero, one that ended is not counted, an ending
// backend keeps its label; the split prints largest first, per unit.
func TestProcCPU(t *testing.T) {
	before := map[int]pgProc{1: {"rowcast reader", 100}, 2: {"pgbench", 50}, 3: {"walwriter", 7}}
	last := maps.Clone(before)
	mergeProcs(last, map[int]pgProc{1: {"rowcast reader", 160}, 2: {"other", 250}, 4: {"pgbench", 30}})
	got := procCPU(before, last)
	want := map[string]time.Duration{"rowcast reader": 600 * time.Millisecond, "pgbench": 2300 * time.Millisecond, "walwriter": 0}
	if !maps.Equal(got, want) {
		t.Errorf("procCPU: %v, want %v", got, want)
	}
	if s := formatProcCPU(got, 1000); s != "pgbench 2300, rowcast reader 600" {
		t.Errorf("formatProcCPU: %q", s)
	}
}

// TestLoadDeliversEveryChange runs a small load against the floor relay and
// a rowcast relay in trigger mode: every session gets every change of its
// team, each with a latency.
func TestLoadDeliversEveryChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := loadSpec{teams: 2, writes: 40, writers: 2, perSec: 2000, drain: time.Minute}
	check := func(t *testing.T, url string, target loadTarget) {
		t.Helper()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		ss, err := dialSessions(ctx, target, 4, spec.teams)
		if err != nil {
			t.Fatal(err)
		}
		res, err := runLoad(ctx, pool, nil, target, ss, spec)
		if err != nil {
			t.Fatal(err)
		}
		if res.expected != 4*spec.writes/2 || res.delivered != res.expected || res.incomplete != 0 || len(res.lat) != res.delivered {
			t.Errorf("%s: delivered %d of %d, %d sessions incomplete, %d latencies",
				target.name, res.delivered, res.expected, res.incomplete, len(res.lat))
		}
	}
	t.Run("floor", func(t *testing.T) {
		url := pg.NewDatabase(t)
		if err := seedLoadDB(ctx, url, spec.teams); err != nil {
			t.Fatal(err)
		}
		if err := execSQL(ctx, url, floor.TriggerSQL("escrows", "team_id")); err != nil {
			t.Fatal(err)
		}
		f, stop, err := startFloor(ctx, url, 64)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		check(t, url, floorTarget(f))
	})
	t.Run("rowcast", func(t *testing.T) {
		url := pg.NewDatabase(t)
		if err := seedLoadDB(ctx, url, spec.teams); err != nil {
			t.Fatal(err)
		}
		cfg, err := benchRelayConfig(url, config.ModeTrigger, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := installDemo(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		r, stop, err := startBenchRelay(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		check(t, url, rowcastTarget(r, cfg.Auth.JWTSecret))
	})
}
