package server_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

const nodeSecret = "node-e2e-secret-node-e2e-secret-0123456"

// nodeDir holds the Node suite: package.json, package-lock.json and the
// tests; node_modules is installed there by npm ci and not committed.
const nodeDir = "testdata/node"

// TestSocketIOClient runs the Node suite (testdata/node/sio.test.mjs: issue
// 5's nine cases, issue 8's polling cases and issue 13's per-user limit
// with the real socket.io-client) against a relay on a fresh demo CRM database, plus a
// second one with sessions.sio_polling off for the cases about refusing
// polling, and fails when it fails. Without node or npm it skips,
// or fails under CI=true.
func TestSocketIOClient(t *testing.T) {
	node, npm := nodeTool(t, "node"), nodeTool(t, "npm")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules")); os.IsNotExist(err) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		runNode(t, exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund"), "npm ci")
	}

	const heartbeat = time.Second
	addr := startNodeRelay(t, heartbeat, true)
	wsOnly := startNodeRelay(t, heartbeat, false)
	dbURL := addr.db
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "sio.test.mjs")
	cmd.Env = append(os.Environ(),
		"ROWCAST_URL=http://"+addr.relay,
		"ROWCAST_WS_ONLY_URL=http://"+wsOnly.relay,
		"ROWCAST_JWT_SECRET="+nodeSecret,
		"ROWCAST_DATABASE_URL="+dbURL,
		"ROWCAST_HEARTBEAT_MS="+strconv.FormatInt(heartbeat.Milliseconds(), 10),
		"ROWCAST_SESSIONS_PER_USER="+strconv.Itoa(config.Defaults().Limits.SessionsPerUser),
	)
	runNode(t, cmd, "node --test")
}

// nodeTool returns the path of a program the suite needs; without it the test
// skips, or fails under CI=true.
func nodeTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " not found: the Socket.IO end-to-end suite needs Node.js 20+ and npm (apt-get install nodejs npm)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// runNode runs cmd in nodeDir, logging its output line by line, and fails the
// test when it fails.
func runNode(t *testing.T, cmd *exec.Cmd, what string) {
	t.Helper()
	cmd.Dir = nodeDir
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

type relayAddr struct{ relay, db string }

// startNodeRelay runs a relay on a free port over a fresh demo CRM database with
// the capture triggers installed, until the test ends; polling sets
// sessions.sio_polling.
func startNodeRelay(t *testing.T, heartbeat time.Duration, polling bool) relayAddr {
	t.Helper()
	url := pg.NewDatabase(t)
	ctx := context.Background()
	if err := crm.Setup(ctx, url); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Database.URL = url
	cfg.Listen = "127.0.0.1:0"
	cfg.Auth.JWTSecret = nodeSecret
	cfg.Tables = crm.Tables()
	cfg.Sessions.Heartbeat = heartbeat
	cfg.Sessions.SIOPolling = &polling
	cfg.Shutdown.Grace, cfg.Shutdown.Drain = 2*time.Second, 0

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := triggers.Render(cfg.Tables, triggers.Options{Notify: cfg.Capture.Notify == nil || *cfg.Capture.Notify})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := triggers.Install(ctx, conn, plan); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	r, err := server.New(server.Options{Config: &cfg, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("relay run: %v", err)
		}
	})
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("relay did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("relay not ready after 30s")
	}
	return relayAddr{relay: r.Addr(), db: url}
}
