package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/aitask"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/app"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/sql/crm"
)

// appDir holds the demo page, its pinned npm packages and its end-to-end
// tests (e2e/*.test.mjs).
const appDir = "internal/demo/app"

// TestBrowser runs the demo app's end-to-end tests (internal/demo/app/e2e)
// in headless Chromium against the demo CRM served as `rowcast demo` serves
// it, on a database that outlives relay restarts. The Node tests drive the
// relay through a control endpoint (restart, stop, start, run SQL). Without
// Chromium or Node.js it skips, unless CI is set (.ci/run installs both).
func TestBrowser(t *testing.T) {
	chromium := browserPath(t)
	node := requireTool(t, "node")
	npmCI(t)

	dbURL := pg.NewDatabase(t)
	ctx := t.Context()
	if err := crm.Setup(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Database.URL = dbURL
	cfg.Auth.JWTSecret = hex.EncodeToString([]byte("browser-test-secret-0123456789abcdef"))
	cfg.Tables = crm.Tables()
	cfg.Shutdown.Grace, cfg.Shutdown.Drain = 2*time.Second, 0
	// The restart step opens fifty sessions of user 1 in one page, beside
	// the other steps' pages: more than limits.sessions_per_user's default.
	cfg.Limits.SessionsPerUser = 500
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := installDemo(ctx, &cfg); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	logFile, err := os.Create(filepath.Join(t.TempDir(), "relay.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logFile, nil))
	rl := &restartable{cfg: cfg, pool: pool, log: log}
	if err := rl.start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rl.stop)
	ctl := serveLoopback(t, rl.control())

	shots := os.Getenv("ROWCAST_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(appDir, "e2e", "screenshots")
	}
	shots, _ = filepath.Abs(shots)
	cmd := exec.CommandContext(ctx, node, "--test", "--test-concurrency=1", "--test-reporter=spec", "e2e/")
	cmd.Dir = appDir
	cmd.Env = append(os.Environ(),
		"ROWCAST_URL=http://"+rl.addr, "ROWCAST_CONTROL="+ctl, "ROWCAST_CHROMIUM="+chromium, "ROWCAST_SCREENSHOTS="+shots)
	out, err := cmd.CombinedOutput()
	if err != nil {
		logFile.Close()
		relayLog, _ := os.ReadFile(logFile.Name())
		t.Fatalf("node --test e2e: %v\n%s\n--- relay log (last 4 KiB)\n%s", err, out, tail(relayLog, 4096))
	}
	t.Logf("%s", out)
}

// restartable runs the demo relay (page, API, AI tasks) and can stop and
// start it on the same address, as a deploy would.
type restartable struct {
	cfg  config.Config
	pool *pgxpool.Pool
	log  *slog.Logger

	mu     sync.Mutex
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// start runs a relay and returns once it is ready. The first start picks
// a free port; later ones reuse it.
func (r *restartable) start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return errors.New("start: running")
	}
	cfg := r.cfg
	if r.addr != "" {
		cfg.Listen = r.addr
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	runner := &aitask.Runner{Pool: r.pool, StepDelay: 250 * time.Millisecond, Logger: r.log}
	crmAPI, err := demoAPI(rctx, &cfg, r.pool, runner, r.log)
	if err != nil {
		cancel()
		return err
	}
	rel, err := server.New(server.Options{Config: &cfg, Logger: r.log, Version: "test",
		Pages: map[string]http.Handler{"/": app.Handler(), "/api/": crmAPI}})
	if err != nil {
		cancel()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- rel.Run(rctx) }()
	select {
	case <-rel.Ready():
	case err := <-done:
		cancel()
		return fmt.Errorf("start: relay ended: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		return errors.New("start: relay not ready in 30s")
	}
	r.addr, r.cancel, r.done = rel.Addr(), cancel, done
	return nil
}

// stop drains the relay (sessions get 1001) and waits for it to end.
func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel, r.done = nil, nil
}

// control is the endpoint the Node tests drive the relay and database
// with: POST /stop, /start, /restart; POST /sql runs its body.
func (r *restartable) control() http.Handler {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, err error) {
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, req *http.Request) { r.stop(); answer(w, nil) })
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, req *http.Request) { answer(w, r.start(req.Context())) })
	mux.HandleFunc("POST /restart", func(w http.ResponseWriter, req *http.Request) {
		r.stop()
		answer(w, r.start(req.Context()))
	})
	mux.HandleFunc("POST /sql", func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if err == nil {
			_, err = r.pool.Exec(req.Context(), string(body))
		}
		answer(w, err)
	})
	return mux
}

// serveLoopback serves h on loopback for the test's life and returns its URL.
func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// browserPath returns Chromium's path (ROWCAST_CHROMIUM, or chromium on
// PATH), skipping the test when there is none unless CI is set.
func browserPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ROWCAST_CHROMIUM"); p != "" {
		return p
	}
	return requireTool(t, "chromium")
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found and CI is set: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// npmCI installs the app's pinned packages when node_modules is missing.
func npmCI(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(appDir, "node_modules", "playwright-core")); err == nil {
		return
	}
	npm := requireTool(t, "npm")
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = appDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", appDir, err, out)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
