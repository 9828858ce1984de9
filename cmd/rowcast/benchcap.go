package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
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
  idle       heap and goroutines per idle WebSocket session

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

// runBenchIdle measures what an idle session costs the relay: it opens N
// plain WebSocket sessions with raw connections (a hand-written upgrade
// request, nothing read after the handshake, so the client side holds only a
// socket) and reports the heap and goroutines per session once the relay
// counts them all.
func runBenchIdle(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := newFlagSet("bench idle", stderr)
	sessions := fs.Int("sessions", 5000, "idle sessions (each uses two file descriptors here)")
	memprofile := fs.String("memprofile", "", "write a heap profile to this `file` once the sessions are open")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench idle: %v\n", err)
		return exitFailed
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
	cfg := benchConfig(url, config.ModeTrigger, true)
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
	request := "GET /ws HTTP/1.1\r\nHost: " + r.Addr() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + token + "\r\n\r\n"
	before := heapNow()
	conns := make([]net.Conn, 0, *sessions)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 512)
	for i := 0; i < *sessions; i++ {
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			return fail(fmt.Errorf("session %d: %w", i, err))
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte(request)); err != nil {
			return fail(err)
		}
		// The 101 response; the welcome frame after it stays unread.
		if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 101") {
			return fail(fmt.Errorf("session %d: upgrade refused: %q %v", i, buf[:min(n, 80)], err))
		}
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
	after := heapNow()
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
	fmt.Fprintf(stdout, "bench idle: %d sessions\n", *sessions)
	fmt.Fprintf(stdout, "heap in use: %.1f KiB per session (client sockets in this process included)\n",
		float64(after.heap-before.heap)/n/1024)
	fmt.Fprintf(stdout, "goroutines:  %.2f per session\n", float64(after.goroutines-before.goroutines)/n)
	return exitOK
}

type heapSample struct {
	heap       uint64
	goroutines int
}

func heapNow() heapSample {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return heapSample{heap: m.HeapInuse + m.StackInuse, goroutines: runtime.NumGoroutine()}
}
