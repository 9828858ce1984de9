package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/floor"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
)

// fanoutStep is one write rate tried by bench fanout. The rate is a target:
// with the relay saturating the CPUs commits slow down, and the rate
// written (reported beside it) can fall short.
type fanoutStep struct {
	rate float64
	res  loadResult
	cpu  time.Duration // this process's CPU time during the step's load (relay, sessions, writers)
}

// ok reports whether the step delivered every event to every session with
// p99 under limit.
func (s fanoutStep) ok(limit time.Duration) bool {
	return s.res.incomplete == 0 && s.res.delivered == s.res.expected && s.res.q(0.99) < limit
}

// runBenchFanout measures fan-out: many sessions of one team, the write rate
// stepped down (×--step from --rate) until a step delivers every event to
// every session with p99 under --p99, then refined by --refine bisections
// between that rate and the failed one above it; the best passing step's
// deliveries per second is the result. Every step connects its sessions afresh, so a slow step's
// backlog (or a session closed as a slow consumer) does not carry over. With
// --baseline notify the floor relay is stepped the same way in the same
// invocation, --rounds times each, in alternating order (rowcast first,
// then the floor first), so that a machine getting busier or quieter
// during the invocation does not favour whichever runs first.
func runBenchFanout(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("bench fanout", stderr)
	sessions := fs.Int("sessions", 5000, "WebSocket sessions, all of one team (each uses two file descriptors here)")
	startRate := fs.Float64("rate", 200, "first write rate, transactions per second")
	step := fs.Float64("step", 0.7, "factor applied to the write rate after a failed step")
	minRate := fs.Float64("min-rate", 1, "give up below this write rate")
	seconds := fs.Float64("seconds", 5, "writing time per step")
	limit := fs.Duration("p99", time.Second, "a step passes when every event reached every session with p99 under this")
	drain := fs.Duration("drain", 5*time.Second, "wait for the last deliveries after the last commit of a step")
	writers := fs.Int("writers", 8, "concurrent writer connections (enough that a slow commit does not hold the rate back)")
	mode := fs.String("mode", config.ModeTrigger, "rowcast capture mode: trigger or logical")
	baseline := fs.String("baseline", "", `also step a baseline in the same invocation: "notify" (the floor relay)`)
	rounds := fs.Int("rounds", 2, "with --baseline: runs of each relay, in alternating order")
	queue := fs.Int("queue", 1024, "outgoing frames queued per session, both relays")
	refine := fs.Int("refine", 3, "bisections between the first passing rate and the failed one above it (each a step)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (relays and sessions) to `file`")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench fanout: %v\n", err)
		return exitFailed
	}
	if *baseline != "" && *baseline != "notify" {
		return fail(errors.New(`--baseline must be "notify" or empty`))
	}
	if *step <= 0 || *step >= 1 || *startRate <= 0 || *sessions < 1 || *refine < 0 || *rounds < 1 {
		return fail(errors.New("--step must be in (0, 1); --rate, --sessions and --rounds positive; --refine not negative"))
	}
	if *baseline == "" {
		*rounds = 1
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return fail(err)
		}
		defer stop()
	}
	pg, err := benchServer(ctx, false)
	if err != nil {
		return fail(err)
	}
	defer pg.Close()
	fmt.Fprintf(stdout, "bench fanout: %d sessions of one team, %.0f writes/s ×%.2f per step, %v per step, pass: none lost and p99 < %v; rowcast %s mode\n",
		*sessions, *startRate, *step, time.Duration(*seconds*float64(time.Second)), *limit, *mode)
	stepper := fanoutStepper{pg: pg, sessions: *sessions, start: *startRate, step: *step, min: *minRate, refine: *refine,
		seconds: *seconds, limit: *limit, drain: *drain, writers: *writers, out: stdout}

	url, err := setupLoadDB(ctx, pg, "fanout_rowcast", 1)
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
	if err := installDemo(ctx, cfg); err != nil {
		return fail(err)
	}
	var rcBase, flBase int64 // the writes so far to each database (each write's value is new)
	runRowcast := func() (*fanoutStep, error) {
		r, stopRelay, err := startBenchRelay(ctx, cfg)
		if err != nil {
			return nil, err
		}
		defer stopRelay()
		best, err := stepper.run(ctx, url, rowcastTarget(r, cfg.Auth.JWTSecret), &rcBase)
		if err != nil {
			return nil, fmt.Errorf("rowcast: %w", err)
		}
		return best, nil
	}
	if *baseline == "" {
		rc, err := runRowcast()
		if err != nil {
			return fail(err)
		}
		return fanoutCode(rc)
	}

	furl, err := setupLoadDB(ctx, pg, "fanout_floor", 1)
	if err != nil {
		return fail(err)
	}
	if err := execSQL(ctx, furl, floor.TriggerSQL("escrows", "team_id")); err != nil {
		return fail(fmt.Errorf("floor trigger: %w", err))
	}
	runFloor := func() (*fanoutStep, error) {
		f, stopFloor, err := startFloor(ctx, furl, *queue)
		if err != nil {
			return nil, err
		}
		defer stopFloor()
		best, err := stepper.run(ctx, furl, floorTarget(f), &flBase)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		return best, nil
	}
	var rcs, fls []*fanoutStep
	for round := range *rounds {
		runs := []func() error{
			func() error { s, err := labelled("rowcast", runRowcast); rcs = append(rcs, s); return err },
			func() error { s, err := labelled("floor", runFloor); fls = append(fls, s); return err },
		}
		if round%2 == 1 {
			runs[0], runs[1] = runs[1], runs[0]
		}
		for _, run := range runs {
			if err := run(); err != nil {
				return fail(err)
			}
		}
	}
	printFanoutRatios(stdout, rcs, fls)
	return fanoutCode(bestStep(rcs))
}

// labelled runs run with the profiler label relay=name, which the
// goroutines it starts (the relay's, its sessions', the writers') inherit:
// with --cpuprofile, `go tool pprof -tagfocus relay=floor` shows one
// relay's share.
func labelled(name string, run func() (*fanoutStep, error)) (s *fanoutStep, err error) {
	pprof.Do(context.Background(), pprof.Labels("relay", name), func(context.Context) { s, err = run() })
	return s, err
}

// printFanoutRatios prints rowcast's deliveries/s over the floor's, round by
// round and best against best; a relay with no passing step has none.
func printFanoutRatios(w io.Writer, rcs, fls []*fanoutStep) {
	fmt.Fprintf(w, "\nrowcast / floor, the deliveries/s (goal ≥ 1):")
	for i := range rcs {
		if rcs[i] == nil || fls[i] == nil {
			fmt.Fprintf(w, " round %d -", i+1)
			continue
		}
		fmt.Fprintf(w, " round %d %.2f×", i+1, rcs[i].deliveriesPerSec()/fls[i].deliveriesPerSec())
	}
	if rc, fl := bestStep(rcs), bestStep(fls); rc != nil && fl != nil {
		fmt.Fprintf(w, "; best %.0f / best %.0f = %.2f×", rc.deliveriesPerSec(), fl.deliveriesPerSec(), rc.deliveriesPerSec()/fl.deliveriesPerSec())
	}
	fmt.Fprintln(w)
}

// bestStep is the step of steps (nil for a run with none passing) with the
// most deliveries/s, nil when none passed.
func bestStep(steps []*fanoutStep) *fanoutStep {
	var best *fanoutStep
	for _, s := range steps {
		if s != nil && (best == nil || s.deliveriesPerSec() > best.deliveriesPerSec()) {
			best = s
		}
	}
	return best
}

// fanoutCode is the exit code: failure when no step passed.
func fanoutCode(passed *fanoutStep) int {
	if passed == nil {
		return exitFailed
	}
	return exitOK
}

// deliveriesPerSec is the step's deliveries over its writing time: for a
// passing step, the delivery rate the relay kept up with.
func (s fanoutStep) deliveriesPerSec() float64 {
	return float64(s.res.delivered) / s.res.wrote.Seconds()
}

// cpuPerDelivery is this process's CPU time per delivery during the step,
// in µs: the relay's, its sessions' and the writers' work for one frame to
// one session, the steadier figure where both relays pass the same rate.
func (s fanoutStep) cpuPerDelivery() float64 {
	if s.res.delivered == 0 {
		return 0
	}
	return float64(s.cpu.Microseconds()) / float64(s.res.delivered)
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fanoutStepper steps one relay's write rate down.
type fanoutStepper struct {
	pg                *pgembed.Server
	sessions, writers int
	start, step, min  float64
	refine            int
	seconds           float64
	limit, drain      time.Duration
	out               io.Writer
}

// run steps t's rate down until a step passes, refines it by bisection
// (fs.refine steps between the passing rate and the failed one above it,
// geometrically) and returns the best passing step, or nil when the rate
// fell below the minimum first. *base is how many writes were made to the
// database at url before (each write's value is new, so that no update is
// a no-op); run adds its own.
func (fs fanoutStepper) run(ctx context.Context, url string, t loadTarget, base *int64) (*fanoutStep, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	fmt.Fprintf(fs.out, "\n%s:\n%10s %10s %12s %10s %10s %10s %10s %14s %9s\n", t.name, "target/s", "wrote/s", "delivered", "lost", "p50", "p99", "max", "deliveries/s", "CPU µs/d")
	seen0, base0 := t.seen(), *base
	try := func(rate float64) (fanoutStep, error) {
		spec := loadSpec{teams: 1, writes: max(1, int(rate*fs.seconds)), writers: fs.writers, perSec: rate, base: *base, drain: fs.drain}
		ss, err := dialSessions(ctx, t, fs.sessions, 1)
		if err != nil {
			return fanoutStep{}, err
		}
		cpu0 := processCPU()
		res, err := runLoad(ctx, pool, nil, t, ss, spec)
		if err != nil {
			return fanoutStep{}, err
		}
		*base += int64(spec.writes)
		s := fanoutStep{rate: rate, res: res, cpu: processCPU() - cpu0}
		verdict := ""
		if s.ok(fs.limit) {
			verdict = "  pass"
		}
		fmt.Fprintf(fs.out, "%10.1f %10.1f %12d %10d %10v %10v %10v %14.0f %9.2f%s\n", rate, float64(res.writes)/res.wrote.Seconds(), res.delivered, res.expected-res.delivered,
			res.q(0.5).Round(time.Millisecond), res.q(0.99).Round(time.Millisecond), res.q(1).Round(time.Millisecond),
			s.deliveriesPerSec(), s.cpuPerDelivery(), verdict)
		// Before the next step: the relay has dropped this step's sessions
		// (file descriptors) and read every change written so far.
		if err := waitFor(ctx, time.Minute, t.name+" sessions closed", func() bool { return t.sessions() == 0 }); err != nil {
			return fanoutStep{}, err
		}
		if err := waitFor(ctx, 5*time.Minute, t.name+" caught up", func() bool { return t.seen()-seen0 >= *base-base0 }); err != nil {
			return fanoutStep{}, err
		}
		return s, nil
	}
	var best *fanoutStep
	failed := 0.0 // the lowest failed rate above best
	for rate := fs.start; rate >= fs.min; rate *= fs.step {
		s, err := try(rate)
		if err != nil {
			return nil, err
		}
		if s.ok(fs.limit) {
			best = &s
			break
		}
		failed = rate
	}
	if best == nil {
		fmt.Fprintf(fs.out, "%s: no step passed down to %.1f writes/s\n", t.name, fs.min)
		return nil, nil
	}
	passed := best.rate // the highest passing rate
	for i := 0; i < fs.refine && failed > 0; i++ {
		rate := math.Sqrt(passed * failed)
		s, err := try(rate)
		if err != nil {
			return nil, err
		}
		if s.ok(fs.limit) {
			passed = rate
			if s.deliveriesPerSec() > best.deliveriesPerSec() {
				best = &s
			}
		} else {
			failed = rate
		}
	}
	fmt.Fprintf(fs.out, "load average %s\n", loadAverage())
	fmt.Fprintf(fs.out, "%s sustains %.0f deliveries/s (%.1f writes/s written × %d sessions)\n",
		t.name, best.deliveriesPerSec(), float64(best.res.writes)/best.res.wrote.Seconds(), fs.sessions)
	return best, nil
}

// startCPUProfile profiles this process's CPU into file until the returned
// function is called.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
