package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/floor"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
)

// runBenchLatency measures commit → client latency end to end: a throwaway
// PostgreSQL with the demo CRM, a relay in this process, N WebSocket
// sessions spread over M teams, and writers updating escrows of those teams
// at a fixed rate. Latency runs from the writer's commit returning to the
// frame's arrival, both on this process's clock (committedAt in the event is
// not used). With --baseline notify the same workload then runs, in the same
// invocation on the same server, against the floor relay (package floor),
// and the ratios are printed; PostgreSQL's CPU per change is reported for
// both.
func runBenchLatency(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("bench latency", stderr)
	sessions := fs.Int("sessions", 1000, "WebSocket sessions, spread evenly over the teams")
	teams := fs.Int("teams", 100, "teams written to (session i follows team 1 + i % teams)")
	seconds := fs.Float64("seconds", 10, "writing time (writes = rate × seconds unless --writes is set)")
	writes := fs.Int("writes", 0, "update transactions to commit (0: rate × seconds)")
	perSec := fs.Float64("rate", 1000, "transactions per second (all writers together)")
	writers := fs.Int("writers", 4, "concurrent writer connections")
	mode := fs.String("mode", config.ModeTrigger, "rowcast capture mode: trigger or logical")
	notify := fs.Bool("notify", true, "ring the LISTEN doorbell at commit (false: adaptive polling only; trigger mode)")
	stages := fs.Bool("stages", false, "also report where rowcast's latency goes up to the tick: source commit → changelog write (logical mode) and write → tick (adds a timestamp column to the benchmark's changelog)")
	baseline := fs.String("baseline", "", `also measure a baseline in the same invocation: "notify" (a pg_notify trigger and one LISTEN connection forwarding to sockets)`)
	queue := fs.Int("queue", 4096, "outgoing frames queued per session, both relays")
	floodOn := fs.Bool("flood", false, "then measure rowcast again while one client floods it with messages and another address with upgrades, and print the p99 ratio (goal ≤ 2); both runs with the default connection limits")
	floodMessages := fs.Int("flood-messages", 1000, "--flood: client messages per second")
	floodUpgrades := fs.Int("flood-upgrades", 500, "--flood: upgrade attempts per second")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench latency: %v\n", err)
		return exitFailed
	}
	if *baseline != "" && *baseline != "notify" {
		return fail(errors.New(`--baseline must be "notify" or empty`))
	}
	if *sessions < 1 || *teams < 1 || *writers < 1 || *perSec <= 0 {
		return fail(errors.New("--sessions, --teams, --writers and --rate must be positive"))
	}
	if *writes == 0 {
		*writes = int(*perSec * *seconds)
	}
	spec := loadSpec{teams: *teams, writes: *writes, writers: *writers, perSec: *perSec, drain: 30 * time.Second}
	pg, err := benchServer(ctx, false)
	if err != nil {
		return fail(err)
	}
	defer pg.Close()
	fmt.Fprintf(stdout, "bench latency: %d sessions over %d teams, %d update transactions at %.0f/s from %d writers, %s mode, doorbell=%v\n",
		*sessions, *teams, *writes, *perSec, *writers, *mode, *notify)

	url, err := setupLoadDB(ctx, pg, "latency_rowcast", *teams)
	if err != nil {
		return fail(err)
	}
	cfg, err := benchRelayConfig(url, *mode, *queue)
	if err == nil {
		cfg, err = benchOverrides(fs, cf).overlay(cfg)
	}
	if err != nil {
		return fail(err)
	}
	cfg.Capture.Notify = notify
	if err := cfg.Validate(); err != nil { // --notify=false with capture.tick_interval=0
		return fail(err)
	}
	if *floodOn {
		// Both runs with the default connection limits, as in production:
		// the measured sessions come as distinct users from distinct
		// addresses.
		cfg.Limits = config.Defaults().Limits
	}
	if err := installDemo(ctx, cfg); err != nil {
		return fail(err)
	}
	if *stages {
		if err := execSQL(ctx, url, stagesColumn); err != nil {
			return fail(err)
		}
	}
	rc, err := latencyRun(ctx, pg, url, spec, *sessions, func() (loadTarget, func(), error) {
		r, stop, err := startBenchRelay(ctx, cfg)
		if err != nil {
			return loadTarget{}, nil, err
		}
		return rowcastTargetFrom(r, cfg.Auth.JWTSecret, *floodOn), stop, nil
	})
	if err != nil {
		return fail(fmt.Errorf("rowcast: %w", err))
	}
	printLatency(stdout, "rowcast "+*mode, rc)
	if *stages {
		if err := printStages(ctx, url, stdout); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(stdout, "  load average %s after the run\n", loadAverage())
	code := exitOK
	if rc.delivered < rc.expected {
		code = exitFailed
	}
	if *floodOn {
		furl, err := setupLoadDB(ctx, pg, "latency_flooded", *teams)
		if err != nil {
			return fail(err)
		}
		fcfg, err := benchRelayConfig(furl, *mode, *queue)
		if err == nil {
			fcfg, err = benchOverrides(fs, cf).overlay(fcfg)
		}
		if err != nil {
			return fail(err)
		}
		fcfg.Capture.Notify = notify
		if err := fcfg.Validate(); err != nil {
			return fail(err)
		}
		fcfg.Limits = config.Defaults().Limits
		if err := installDemo(ctx, fcfg); err != nil {
			return fail(err)
		}
		var st floodStats
		fr, err := latencyRun(ctx, pg, furl, spec, *sessions, func() (loadTarget, func(), error) {
			r, stop, err := startBenchRelay(ctx, fcfg)
			if err != nil {
				return loadTarget{}, nil, err
			}
			tok, err := auth.Sign([]byte(fcfg.Auth.JWTSecret), map[string]any{"sub": "flooder", "teamId": 1})
			if err != nil {
				stop()
				return loadTarget{}, nil, err
			}
			fctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				flood(fctx, floodSpec{addr: r.Addr(), token: tok, messages: *floodMessages, upgrades: *floodUpgrades}, &st)
			}()
			return rowcastTargetFrom(r, fcfg.Auth.JWTSecret, true), func() { cancel(); <-done; stop() }, nil
		})
		if err != nil {
			return fail(fmt.Errorf("rowcast flooded: %w", err))
		}
		printLatency(stdout, "rowcast "+*mode+" under a flood", fr)
		st.print(stdout)
		fmt.Fprintf(stdout, "  load average %s after the run\n", loadAverage())
		fmt.Fprintf(stdout, "flooded / quiet: p50 %.2f×  p99 %.2f× (goal ≤ 2)\n",
			float64(fr.q(0.50))/float64(max(rc.q(0.50), time.Microsecond)), float64(fr.q(0.99))/float64(max(rc.q(0.99), time.Microsecond)))
		if fr.delivered < fr.expected {
			code = exitFailed
		}
	}
	if *baseline == "" {
		return code
	}

	furl, err := setupLoadDB(ctx, pg, "latency_floor", *teams)
	if err != nil {
		return fail(err)
	}
	if err := execSQL(ctx, furl, floor.TriggerSQL("escrows", "team_id")); err != nil {
		return fail(fmt.Errorf("floor trigger: %w", err))
	}
	fl, err := latencyRun(ctx, pg, furl, spec, *sessions, func() (loadTarget, func(), error) {
		f, stop, err := startFloor(ctx, furl, *queue)
		if err != nil {
			return loadTarget{}, nil, err
		}
		return floorTarget(f), stop, nil
	})
	if err != nil {
		return fail(fmt.Errorf("floor: %w", err))
	}
	printLatency(stdout, "floor (NOTIFY)", fl)
	fmt.Fprintf(stdout, "  load average %s after the run\n", loadAverage())
	if fl.delivered < fl.expected {
		code = exitFailed
	}
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(max(b, time.Microsecond)) }
	fmt.Fprintf(stdout, "rowcast / floor: p50 %.2f× (goal ≤ 1.3)  p99 %.2f× (goal ≤ 2)  PostgreSQL CPU per change %.2f× (goal ≤ 1.5, trigger mode)\n",
		ratio(rc.q(0.50), fl.q(0.50)), ratio(rc.q(0.99), fl.q(0.99)), ratio(rc.pgCPU, fl.pgCPU))
	return code
}

// latencyRun starts a relay with start, connects sessions, runs spec
// against it and stops it.
func latencyRun(ctx context.Context, pg *pgembed.Server, url string, spec loadSpec, sessions int,
	start func() (loadTarget, func(), error)) (loadResult, error) {
	t, stop, err := start()
	if err != nil {
		return loadResult{}, err
	}
	defer stop()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return loadResult{}, err
	}
	defer pool.Close()
	ss, err := dialSessions(ctx, t, sessions, spec.teams)
	if err != nil {
		return loadResult{}, err
	}
	return runLoad(ctx, pool, pg, t, ss, spec)
}

// printLatency prints one run's deliveries, latency quantiles and
// PostgreSQL CPU per change.
func printLatency(w io.Writer, name string, r loadResult) {
	fmt.Fprintf(w, "\n%s:\n", name)
	fmt.Fprintf(w, "  wrote %d transactions in %v (%.0f/s)\n", r.writes, r.wrote.Round(time.Millisecond), float64(r.writes)/r.wrote.Seconds())
	fmt.Fprintf(w, "  delivered %d of %d events (%d sessions incomplete), last after %v\n",
		r.delivered, r.expected, r.incomplete, r.elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  commit returned → frame received: p50 %v  p90 %v  p99 %v  max %v",
		r.q(0.50).Round(10*time.Microsecond), r.q(0.90).Round(10*time.Microsecond),
		r.q(0.99).Round(10*time.Microsecond), r.q(1).Round(10*time.Microsecond))
	if r.early > 0 {
		fmt.Fprintf(w, "  (%d arrived before the commit returned, counted as 0)", r.early)
	}
	fmt.Fprintln(w)
	if r.pgCPU > 0 {
		fmt.Fprintf(w, "  PostgreSQL CPU: %v over %v, %.0f µs per change (%.0f%% of a core)\n",
			r.pgCPU.Round(10*time.Millisecond), r.elapsed.Round(time.Millisecond),
			float64(r.pgCPU.Microseconds())/float64(r.writes), 100*r.pgCPU.Seconds()/r.elapsed.Seconds())
		fmt.Fprintf(w, "    by process, µs per change: %s\n", formatProcCPU(r.pgSplit, float64(r.writes)))
	}
}

// execSQL runs sql on the database at url.
func execSQL(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// stagesColumn records when each changelog row was written, for
// printStages: in trigger mode inside the writer's transaction, in logical
// mode when the slot holder applies it.
const stagesColumn = "alter table rowcast.changelog add column bench_at timestamptz default clock_timestamp()"

// stagesSQL measures, over every transaction of the changelog (a sample
// would leave p99 to a handful of them), the time from the source commit
// to the changelog write (logical mode: origin_at is the source commit
// time) and from the write to the first tick whose snapshot shows it.
const stagesSQL = `with s as (select xid, min(origin_at) o, min(bench_at) b from rowcast.changelog group by xid),
v as (select s.*, (select min(t.at) from rowcast.ticks t where t.at >= s.b and pg_visible_in_snapshot(s.xid, t.snap)) t from s)
select percentile_cont(array[0.5, 0.9, 0.99]) within group (order by extract(epoch from b - o) * 1000),
       percentile_cont(array[0.5, 0.9, 0.99]) within group (order by extract(epoch from t - b) * 1000),
       (select count(*) from rowcast.ticks), (select count(*) from rowcast.changelog) from v`

// printStages prints where a run's latency went up to the tick, from the
// column stagesColumn added.
func printStages(ctx context.Context, url string, w io.Writer) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("stages: %w", err)
	}
	defer conn.Close(ctx)
	var written, ticked []float64
	var ticks, changes int64
	if err := conn.QueryRow(ctx, stagesSQL).Scan(&written, &ticked, &ticks, &changes); err != nil {
		return fmt.Errorf("stages: %w", err)
	}
	if written != nil {
		fmt.Fprintf(w, "  source commit → changelog write: p50 %.2fms  p90 %.2fms  p99 %.2fms (decoding, the slot holder's group commit)\n", written[0], written[1], written[2])
	}
	if ticked != nil {
		fmt.Fprintf(w, "  changelog write → tick:          p50 %.2fms  p90 %.2fms  p99 %.2fms\n", ticked[0], ticked[1], ticked[2])
	}
	if ticks > 0 {
		fmt.Fprintf(w, "  %d ticks recorded, %.1f changes per tick\n", ticks, float64(changes)/float64(ticks))
	}
	return nil
}
