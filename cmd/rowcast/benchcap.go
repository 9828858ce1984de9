package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
	"github.com/rowcast/rowcast/sql/crm"
)

const benchUsage = `usage: rowcast bench [latency|capture|writepath|fanout|idle] [flags]

  latency    commit → client latency with N sessions over M teams (the
             default); --baseline notify also measures the NOTIFY floor
  capture    sustained capture rate into the hub, changes/s, per capture mode
  writepath  pgbench tps of a CRM-like update with no capture, an outbox
             trigger (the baseline), trigger mode and logical mode
  fanout     deliveries/s to many sessions of one team, p99 < 1 s, none lost
  idle       the relay's memory (RSS) per idle WebSocket session, the
             clients in a separate process

Every benchmark runs on its own throwaway PostgreSQL; "rowcast bench X -h"
lists its flags.
`

// runBench dispatches to the benchmark named by the first argument.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && slices.Contains([]string{"-h", "-help", "--help", "help"}, args[0]) {
		fmt.Fprint(stdout, benchUsage)
		return exitOK
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return runBenchLatency(ctx, args, stdout, stderr)
	}
	switch args[0] {
	case "latency":
		return runBenchLatency(ctx, args[1:], stdout, stderr)
	case "capture":
		return runBenchCapture(ctx, args[1:], stdout, stderr)
	case "writepath":
		return runBenchWritePath(ctx, args[1:], stdout, stderr)
	case "fanout":
		return runBenchFanout(ctx, args[1:], stdout, stderr)
	case "idle":
		return runBenchIdle(ctx, args[1:], stdout, stderr)
	case "idle-clients": // bench idle's client process; not listed
		return runBenchIdleClients(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, benchUsage)
	return exitUsage
}

// benchServer starts a throwaway server (durable or not) for a benchmark.
func benchServer(ctx context.Context, durable bool) (*pgembed.Server, error) {
	o := pgembed.Options{}
	if durable {
		o.Settings = map[string]string{"fsync": "on", "full_page_writes": "on"}
	}
	return pgembed.Start(ctx, o)
}

// benchConfig returns a relay configuration for the demo CRM at url.
func benchConfig(url, mode string, notify bool) *config.Config {
	cfg := config.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Database.URL = url
	cfg.Auth.JWTSecret = "bench-secret-bench-secret-bench-secret"
	cfg.Tables = crm.Tables()
	cfg.Capture.Mode = mode
	cfg.Capture.Notify = &notify
	// Every benchmark client comes from this machine, one address, as user
	// 1: the connection limits would refuse most of them.
	cfg.Limits.SessionsPerUser, cfg.Limits.SessionsPerAddress, cfg.Limits.SessionsTotal = 1<<30, 1<<30, 1<<30
	cfg.Limits.UpgradeRate, cfg.Limits.UpgradeBurst = 1e9, 1<<30
	return &cfg
}

// startBenchRelay runs a relay until the returned stop is called.
func startBenchRelay(ctx context.Context, cfg *config.Config) (*server.Relay, func(), error) {
	r, err := server.New(server.Options{Config: cfg})
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	select {
	case <-r.Ready():
	case err := <-done:
		cancel()
		return nil, nil, fmt.Errorf("relay: %w", err)
	}
	return r, func() { cancel(); <-done }, nil
}

// runBenchCapture measures how many changes per second reach the hub:
// writers insert notes in transactions of --txn-rows rows as fast as they
// can, and the clock stops when the relay has published every change.
func runBenchCapture(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := newFlagSet("bench capture", stderr)
	modes := fs.String("modes", "trigger,logical", "capture modes to measure, comma-separated")
	changes := fs.Int("changes", 200000, "row changes to capture")
	txnRows := fs.Int("txn-rows", 100, "rows per writing transaction")
	writers := fs.Int("writers", 2, "concurrent writer connections")
	durable := fs.Bool("durable", false, "fsync on (default off: the database is throwaway)")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	if err := noOverrides(fs, "rowcast bench capture"); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench capture: %v\n", err)
		return exitFailed
	}
	pg, err := benchServer(ctx, *durable)
	if err != nil {
		return fail(err)
	}
	defer pg.Close()
	fmt.Fprintf(stdout, "bench capture: %d changes, %d rows per transaction, %d writers, fsync=%v\n",
		*changes, *txnRows, *writers, *durable)
	for i, mode := range strings.Split(*modes, ",") {
		url, err := pg.CreateDatabase(ctx, fmt.Sprintf("capture_%d", i))
		if err != nil {
			return fail(err)
		}
		rate, err := benchCaptureMode(ctx, url, mode, *changes, *txnRows, *writers)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", mode, err))
		}
		fmt.Fprintf(stdout, "%-8s %8.0f changes/s captured into the hub\n", mode, rate)
	}
	return exitOK
}

func benchCaptureMode(ctx context.Context, url, mode string, changes, txnRows, writers int) (float64, error) {
	if err := crm.Setup(ctx, url); err != nil {
		return 0, err
	}
	cfg := benchConfig(url, mode, true)
	if err := installDemo(ctx, cfg); err != nil {
		return 0, err
	}
	r, stop, err := startBenchRelay(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer stop()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	base := r.Hub().Stats().Published
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	txns := changes / txnRows
	for w := 0; w < writers; w++ {
		g.Go(func() error {
			for i := w; i < txns; i += writers {
				from := i*txnRows + 1
				if _, err := pool.Exec(gctx, `insert into notes (team_id, entity_type, entity_id, body)
					select 1 + g % 2, 'lead', g, 'note ' || g from generate_series($1::int, $2::int) g`,
					from, from+txnRows-1); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	want := uint64(txns * txnRows)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Minute)
	for r.Hub().Stats().Published-base < want {
		select {
		case <-tick.C:
		case <-deadline:
			return 0, fmt.Errorf("published %d of %d after 5 minutes", r.Hub().Stats().Published-base, want)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return float64(want) / time.Since(start).Seconds(), nil
}

// runBenchIdle measures what an idle session costs the relay. The relay runs
// in this process; the clients run in a child process (this binary again,
// "bench idle-clients"), so each process stays under the open-files limit
// and the relay's memory holds nothing of the clients. The clients open N
// plain WebSocket sessions with raw connections (a hand-written upgrade
// request, nothing read after the 101 response) and hold them until told to
// go. The figure per session is the relay process's resident set (VmRSS)
// with N sessions open minus the same with none, divided by N; heap and
// goroutine stacks, and goroutines, are reported next to it.
func runBenchIdle(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("bench idle", stderr)
	sessions := fs.Int("sessions", 19000, "idle sessions (one file descriptor each in the relay and in the client process)")
	memprofile := fs.String("memprofile", "", "write a heap profile to this `file` once the sessions are open")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench idle: %v\n", err)
		return exitFailed
	}
	self, err := os.Executable()
	if err != nil {
		return fail(fmt.Errorf("bench idle: %w", err))
	}
	pg, err := benchServer(ctx, false)
	if err != nil {
		return fail(err)
	}
	defer pg.Close()
	url, err := pg.CreateDatabase(ctx, "idle")
	if err != nil {
		return fail(err)
	}
	if err := crm.Setup(ctx, url); err != nil {
		return fail(err)
	}
	cfg, err := benchOverrides(fs, cf).overlay(benchConfig(url, config.ModeTrigger, true))
	if err != nil {
		return fail(err)
	}
	if err := installDemo(ctx, cfg); err != nil {
		return fail(err)
	}
	r, stop, err := startBenchRelay(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer stop()
	token, err := auth.Sign([]byte(cfg.Auth.JWTSecret), map[string]any{"sub": "1", "teamId": 1})
	if err != nil {
		return fail(err)
	}
	before, err := memNow()
	if err != nil {
		return fail(err)
	}

	cmd := exec.CommandContext(ctx, self, "bench", "idle-clients", "--addr", r.Addr(),
		"--sessions", strconv.Itoa(*sessions))
	cmd.Env = append(os.Environ(), "ROWCAST_BENCH_TOKEN="+token)
	cmd.Stderr = stderr
	hold, err := cmd.StdinPipe()
	if err != nil {
		return fail(fmt.Errorf("bench idle: clients: %w", err))
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(fmt.Errorf("bench idle: clients: %w", err))
	}
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("bench idle: clients: %w", err))
	}
	// Closing hold (stdin) tells the clients to close their sockets and exit.
	defer func() { hold.Close(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return fail(fmt.Errorf("bench idle: the client process failed (%q): %w", line, errors.Join(err, cmd.Wait())))
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for r.Hub().Stats().Subscribers < int64(*sessions) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return exitFailed
		}
	}
	after, err := memNow()
	if err != nil {
		return fail(err)
	}
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			return fail(err)
		}
		err = pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
		if err != nil {
			return fail(err)
		}
	}
	n := float64(*sessions)
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / n / 1024 }
	fmt.Fprintf(stdout, "bench idle: %d sessions, clients in another process\n", *sessions)
	fmt.Fprintf(stdout, "relay RSS:       %.1f KiB per session (%.0f MiB with none, %.0f MiB with %d)\n",
		per(after.rss, before.rss), float64(before.rss)/(1<<20), float64(after.rss)/(1<<20), *sessions)
	fmt.Fprintf(stdout, "heap in use:     %.1f KiB per session\n", per(after.heap, before.heap))
	fmt.Fprintf(stdout, "stacks in use:   %.1f KiB per session\n", per(after.stacks, before.stacks))
	fmt.Fprintf(stdout, "goroutines:      %.2f per session\n", float64(after.goroutines-before.goroutines)/n)
	return exitOK
}

// runBenchIdleClients is the client process of bench idle (hidden: "rowcast
// bench idle-clients"): it opens --sessions WebSocket sessions to --addr with
// the token in ROWCAST_BENCH_TOKEN, prints "ready" once every upgrade was
// answered 101, and holds them, reading nothing, until its stdin closes.
func runBenchIdleClients(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := newFlagSet("bench idle-clients", stderr)
	addr := fs.String("addr", "", "relay address")
	sessions := fs.Int("sessions", 0, "sessions to open")
	if fs.Parse(args) != nil || *addr == "" {
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench idle-clients: %v\n", err)
		return exitFailed
	}
	request := []byte("GET /ws HTTP/1.1\r\nHost: " + *addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + os.Getenv("ROWCAST_BENCH_TOKEN") + "\r\n\r\n")
	conns := make([]net.Conn, 0, *sessions)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var d net.Dialer
	buf := make([]byte, 512)
	for i := 0; i < *sessions; i++ {
		c, err := d.DialContext(ctx, "tcp", *addr)
		if err != nil {
			return fail(fmt.Errorf("session %d: %w", i, err))
		}
		conns = append(conns, c)
		if _, err := c.Write(request); err != nil {
			return fail(fmt.Errorf("session %d: %w", i, err))
		}
		// The 101 response; the welcome frame after it stays unread.
		n, err := c.Read(buf)
		if err != nil {
			return fail(fmt.Errorf("session %d: upgrade: %w", i, err))
		}
		if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 101") {
			return fail(fmt.Errorf("session %d: upgrade refused: %q", i, buf[:min(n, 80)]))
		}
	}
	fmt.Fprintln(stdout, "ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return exitOK
}

// memSample is what bench idle reads of this process's memory.
type memSample struct {
	rss, heap, stacks uint64
	goroutines        int
}

// memNow collects garbage (a few cycles), returns freed memory to the OS and samples the
// process: VmRSS from /proc/self/status, heap and stacks in use, goroutines.
func memNow() (memSample, error) {
	// A goroutine's stack shrinks by half at most per GC: a few cycles let
	// the stacks that grew during the upgrade settle, as they do in a relay
	// that runs.
	for range 3 {
		runtime.GC()
	}
	debug.FreeOSMemory() // a GC, then freed pages go back to the OS
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s := memSample{heap: m.HeapInuse, stacks: m.StackInuse, goroutines: runtime.NumGoroutine()}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return s, fmt.Errorf("rss: %w", err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("rss: %q: %w", l, err)
			}
			s.rss = kb * 1024
			return s, nil
		}
	}
	return s, errors.New("rss: no VmRSS in /proc/self/status")
}
