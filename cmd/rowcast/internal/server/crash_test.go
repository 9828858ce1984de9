package server_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
)

// TestCrashWithAsyncCommitSendsNothingForgotten: with synchronous_commit
// off, PostgreSQL acknowledges commits before their WAL is flushed, and a
// crash forgets the last of them and hands their positions to new commits.
// 16 writers bump versions of hot rows; the server crashes under load until
// a crash forgot acknowledged commits (at most 5 times; the test fails if
// none did, as it would prove nothing), then once after the writers paused
// and the sessions received every acknowledged version (a relay that sends
// unflushed commits has then sent what the crash forgets). Every session
// must see every row's versions 2, 3, …, N exactly once, in order.
func TestCrashWithAsyncCommitSendsNothingForgotten(t *testing.T) {
	// Without the doorbell no relay write flushes the WAL for the writers.
	off := false
	e := startRelay(t, func(c *config.Config) {
		c.Capture.Notify = &off
		// The sessions read every version of hot rows while the writers
		// run flat out (under -race on two shared cores): a queue that
		// holds a whole burst keeps this test about crashes, not about
		// slow consumers (4008 has its own tests).
		c.Sessions.QueueSize = 1 << 16
	})
	emb := pg.Embedded()
	if emb == nil {
		t.Skip("outside PostgreSQL server: cannot crash it")
	}
	ctx := context.Background()
	// A slow WAL writer leaves the asynchronous commits of the last ten
	// seconds unflushed, which is what a crash forgets.
	e.exec("alter system set wal_writer_delay = '10s'")
	e.exec("select pg_reload_conf()")
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, e.url)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "alter system reset wal_writer_delay"); err != nil {
			t.Error(err)
		}
		if _, err := conn.Exec(ctx, "select pg_reload_conf()"); err != nil {
			t.Error(err)
		}
	})

	type watched struct {
		c      *client
		w      *versionWatcher
		teams  int
		rows   []string // the hot rows of its teams
		resync atomic.Int64
	}
	sessions := []*watched{
		{c: e.connect(userToken(t, "1", 1)), teams: 1},
		{c: e.connect(userToken(t, "4", 2)), teams: 1},
		{c: e.connect(userToken(t, "2", 1, 2)), teams: 2},
	}
	hot := hotRows(t, e)
	ids := append(slices.Clone(hot[1]), hot[2]...)
	sessions[0].rows, sessions[1].rows, sessions[2].rows = ids[:4], ids[4:], ids
	delivered := make(chan struct{}, 1) // signalled after each frame a session reads
	var readers sync.WaitGroup
	for i, s := range sessions {
		s.w = &versionWatcher{seen: map[string][]int{}}
		for range 4 * s.teams {
			s.c.event("escrow:created")
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for markers := 0; markers < s.teams; {
				f, err := s.c.read(60 * time.Second)
				if err != nil {
					t.Errorf("session %d: %v", i, err)
					return
				}
				switch {
				case f.Type == "resync":
					s.resync.Add(1)
				case f.Event == "lead:created":
					markers++
				}
				s.w.record(f)
				select {
				case delivered <- struct{}{}:
				default:
				}
			}
		}()
	}

	wcfg, err := pgxpool.ParseConfig(e.url)
	if err != nil {
		t.Fatal(err)
	}
	wcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	wcfg.MaxConns = 16
	writers, err := pgxpool.NewWithConfig(ctx, wcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer writers.Close()
	var (
		mu    sync.Mutex
		acked = map[string]int{} // highest version a commit acknowledged, per row
		stop  atomic.Bool
		up    atomic.Pointer[chan struct{}] // closed while the server is up
		done  atomic.Int64
		hit   = make(chan int64, 64) // done counts, every 500 commits
		pause atomic.Bool
	)
	open := make(chan struct{})
	close(open)
	up.Store(&open)
	g, gctx := errgroup.WithContext(ctx)
	for w := range 16 {
		g.Go(func() error {
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for !stop.Load() {
				if pause.Load() {
					<-*up.Load()
					continue
				}
				id := ids[rnd.IntN(len(ids))]
				var v int
				err := writers.QueryRow(gctx, "update escrows set version = version + 1 where id = $1 returning version", id).Scan(&v)
				if err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					<-*up.Load() // the server is down: wait until it is back
					continue
				}
				mu.Lock()
				acked[id] = max(acked[id], v)
				mu.Unlock()
				if n := done.Add(1); n%500 == 0 {
					select {
					case hit <- n:
					default:
					}
				}
			}
			return nil
		})
	}
	waitCommits := func(n int64) {
		t.Helper()
		for {
			select {
			case got := <-hit:
				if got >= n {
					return
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("writers stalled at %d commits", done.Load())
			}
		}
	}

	// seenAll reports whether every session has received each row's last
	// acknowledged version.
	seenAll := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range sessions {
			s.w.mu.Lock()
			for _, id := range s.rows {
				got := s.w.seen[id]
				if acked[id] > 1 && (len(got) == 0 || got[len(got)-1] < acked[id]) {
					s.w.mu.Unlock()
					return false
				}
			}
			s.w.mu.Unlock()
		}
		return true
	}
	// crash crashes the server after 1500 more commits (once the sessions
	// received every acknowledged version, if paused), starts it again and
	// returns how many acknowledged versions it forgot.
	crash := func(attempt int, paused bool) (forgot int) {
		t.Helper()
		waitCommits(done.Load() + 1500)
		down := make(chan struct{})
		up.Store(&down)
		if paused {
			// The writers stop before their next commit; wait until the
			// sessions have everything acknowledged.
			pause.Store(true)
			deadline := time.Now().Add(30 * time.Second)
			for !seenAll() {
				if time.Now().After(deadline) {
					t.Fatal("sessions never received the acknowledged versions")
				}
				select {
				case <-delivered:
				case <-time.After(100 * time.Millisecond): // a writer's last commit may still be on its way
				}
			}
		}
		if err := emb.Crash(ctx); err != nil {
			t.Fatal(err)
		}
		if err := emb.Start(ctx); err != nil {
			t.Fatal(err)
		}
		e.db.Reset()
		rows, err := e.db.Query(ctx, "select id::text, version from escrows where property_address = 'hot'")
		if err != nil {
			t.Fatal(err)
		}
		var id string
		var v int
		mu.Lock()
		_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error {
			if v < acked[id] {
				t.Logf("crash %d forgot escrow %s versions %d..%d", attempt, id, v+1, acked[id])
				forgot += acked[id] - v
				acked[id] = v
			}
			return nil
		})
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		pause.Store(false)
		close(down)
		return forgot
	}
	// Under load some acknowledged commits are almost always unflushed, but
	// the relay's own flushes can leave none at the instant of a crash: crash
	// again until one forgot something, or the test proves nothing.
	attempt := 0
	for forgot := 0; forgot == 0; attempt++ {
		if attempt == 5 {
			t.Fatal("5 crashes under load forgot no acknowledged commit: this test proves nothing")
		}
		forgot = crash(attempt, false)
	}
	crash(attempt, true)
	waitCommits(done.Load() + 1500)
	stop.Store(true)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	e.exec("insert into leads (team_id, first_name) values (1, 'end'), (2, 'end')")
	readers.Wait()

	final := map[string]int{}
	rows, err := e.db.Query(ctx, "select id::text, version from escrows where property_address = 'hot'")
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var v int
	if _, err := pgx.ForEachRow(rows, []any{&id, &v}, func() error { final[id] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	for i, s := range sessions {
		if n := s.resync.Load(); n > 0 {
			t.Fatalf("session %d was told to resync %d times; nothing it was sent was lost, so it need not be", i, n)
		}
		for _, id := range s.rows {
			got := s.w.seen[id]
			for k, v := range got {
				if v != k+2 {
					t.Fatalf("session %d escrow %s: versions %v: want 2..%d in order, once each (a repeat or a gap is a commit sent before the crash forgot it)",
						i, id, got, final[id])
				}
			}
			if len(got) != final[id]-1 {
				t.Fatalf("session %d escrow %s: saw %d versions, want %d (final %d)", i, id, len(got), final[id]-1, final[id])
			}
		}
	}
}

// TestRelayStartedWhileDatabaseDownWaits: a relay started while PostgreSQL
// is down listens, answers /readyz and sessions with 503 and the reason,
// and once PostgreSQL is up captures what is committed after its first
// position; in both capture modes.
func TestRelayStartedWhileDatabaseDownWaits(t *testing.T) {
	t.Run("trigger", func(t *testing.T) { relayStartedWhileDatabaseDown(t, nil) })
	t.Run("logical", func(t *testing.T) { relayStartedWhileDatabaseDown(t, logicalMode) })
}

func relayStartedWhileDatabaseDown(t *testing.T, tweak func(*config.Config)) {
	e := startRelay(t, tweak)
	emb := pg.Embedded()
	if emb == nil {
		t.Skip("outside PostgreSQL server: cannot stop it")
	}
	e.shutdown()
	ctx := context.Background()
	if err := emb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = emb.Start(ctx)
		}
	})
	r, err := server.New(server.Options{Config: e.cfg, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var runErr error
	finished := make(chan struct{}) // closed when Run returned runErr
	go func() { runErr = r.Run(rctx); close(finished) }()
	defer func() {
		stop()
		<-finished
		if runErr != nil {
			t.Errorf("relay run: %v", runErr)
		}
	}()
	select {
	case <-r.Listening():
	case <-finished:
		t.Fatalf("relay stopped while the database is down: %v", runErr)
	case <-time.After(30 * time.Second):
		t.Fatal("relay not listening after 30s")
	}
	base := "http://" + r.Addr()
	for _, path := range []string{"/readyz", "/ws"} {
		// "starting" until the first attempt to reach the database fails.
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("%s while the database is down: %d %q, want 503", path, resp.StatusCode, body)
			}
			if strings.Contains(string(body), "waiting for the database") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s while the database is down: %q, want it to say it waits for the database", path, body)
			}
			select {
			case <-time.After(20 * time.Millisecond):
			case <-finished:
				t.Fatalf("relay stopped while the database is down: %v", runErr)
			}
		}
	}
	if err := emb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	select {
	case <-r.Ready():
	case <-finished:
		t.Fatalf("relay stopped: %v", runErr)
	case <-time.After(30 * time.Second):
		t.Fatal("relay not ready 30s after the database started")
	}
	e.relay = r
	e.db.Reset()
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'after the wait')")
	if name := c.event("lead:created").data()["lead"].(map[string]any)["first_name"]; name != "after the wait" {
		t.Fatalf("got %v", name)
	}
	waitReady(t, e, http.StatusOK)
}
