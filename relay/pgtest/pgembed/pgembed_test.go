package pgembed_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
)

// requireBinaries skips the test when PostgreSQL is not installed, or fails
// it under CI=true, where a skip would hide missing coverage.
func requireBinaries(t *testing.T) {
	t.Helper()
	_, err := pgembed.BinDir()
	var nf *pgembed.NotFoundError
	switch {
	case err == nil:
	case errors.As(err, &nf):
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("CI=true and PostgreSQL is not installed: %v", err)
		}
		t.Skipf("skipping: %v", err)
	default:
		t.Fatal(err)
	}
}

// query runs a one-value query against url on a fresh connection.
func query[T any](ctx context.Context, t *testing.T, url, sql string) T {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func exec(ctx context.Context, t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestLifecycle(t *testing.T) {
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	s, err := pgembed.Start(ctx, pgembed.Options{
		Settings: map[string]string{"application_name": "pgembed's test"},
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})
	dir := s.Dir()
	if !s.Running() {
		t.Fatal("Running() = false after Start")
	}

	url, err := s.CreateDatabase(ctx, "Lifecycle-DB")
	if err != nil {
		t.Fatal(err)
	}
	if want := s.URLFor("Lifecycle-DB"); url != want {
		t.Errorf("CreateDatabase URL = %q, want %q", url, want)
	}
	if got := query[string](ctx, t, url, "SELECT current_database()"); got != "Lifecycle-DB" {
		t.Errorf("current_database() = %q", got)
	}
	if got := query[string](ctx, t, url, "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
	if got := query[string](ctx, t, url, "SHOW application_name"); got != "pgembed's test" {
		t.Errorf("application_name = %q (Settings not applied)", got)
	}
	if got := query[bool](ctx, t, s.URL(), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"); !got {
		t.Error("URL() is not a superuser URL")
	}
	exec(ctx, t, url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')")

	port := s.Port()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("Running() = true after Stop")
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped server")
	}

	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port {
		t.Errorf("port after restart = %d, want %d", s.Port(), port)
	}
	if got := query[string](ctx, t, url, "SELECT v FROM kept"); got != "before restart" {
		t.Errorf("after restart: %q", got)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir %s still exists after Close (stat: %v)", dir, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestDirKeptAndReused(t *testing.T) {
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// The postgres user must be able to traverse the directory, and
	// t.TempDir's parents are 0700; use a 0755 dir under os.TempDir().
	base, err := os.MkdirTemp("", "pgembed-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "pg")

	s, err := pgembed.Start(ctx, pgembed.Options{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	exec(ctx, t, s.URL(), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("Close removed a caller's Dir: %v", err)
	}

	s, err = pgembed.Start(ctx, pgembed.Options{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := query[int](ctx, t, s.URL(), "SELECT v FROM kept"); got != 42 {
		t.Errorf("reused cluster: v = %d, want 42", got)
	}
}

func TestStartErrorShowsLog(t *testing.T) {
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	_, err := pgembed.Start(ctx, pgembed.Options{Settings: map[string]string{"shared_buffers": "nonsense"}})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), "shared_buffers") {
		t.Errorf("error does not show the server log:\n%v", err)
	}
}

func TestBinDirEnv(t *testing.T) {
	t.Setenv(pgembed.EnvBinDir, t.TempDir())
	_, err := pgembed.BinDir()
	if err == nil {
		t.Fatal("BinDir accepted a directory without binaries")
	}
	var nf *pgembed.NotFoundError
	if errors.As(err, &nf) {
		t.Errorf("a bad %s is a NotFoundError: %v", pgembed.EnvBinDir, err)
	}
}

func TestInvalidSettings(t *testing.T) {
	for _, k := range []string{"port", "listen_addresses", "bad name", "x'y", ""} {
		_, err := pgembed.Start(t.Context(), pgembed.Options{Settings: map[string]string{k: "1"}})
		if err == nil {
			t.Errorf("Settings key %q accepted", k)
		}
	}
}
