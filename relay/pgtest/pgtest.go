// Package pgtest gives each test a fresh, empty PostgreSQL database on a real
// server: one throwaway pgembed server per test package (started by the first
// NewDatabase, closed when Main returns), or the outside server named by
// $ROWCAST_TEST_DATABASE_URL, on which no server is ever started.
//
// Use it from a test package like this; the package-level Server is the one
// global a test package needs:
//
//	var pg pgtest.Server
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }
//
//	func TestX(t *testing.T) {
//		url := pg.NewDatabase(t) // dropped when t ends
//		…
//	}
//
// When PostgreSQL is not installed NewDatabase skips the test, naming how to
// install it; under CI=true it fails the test instead.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
)

// EnvURL names the environment variable holding the URL of an outside server
// to test against instead of a throwaway one. Its user must be allowed to
// create and drop databases; the URL's own database is only used to do so.
const EnvURL = "ROWCAST_TEST_DATABASE_URL"

// startTimeout bounds starting the throwaway server.
const startTimeout = 2 * time.Minute

// opTimeout bounds creating or dropping one database.
const opTimeout = time.Minute

// Server is the PostgreSQL server of one test package. The zero value is
// ready for Main; a Server must not be copied. Its methods are safe for
// concurrent use, including from parallel tests.
type Server struct {
	mu      sync.Mutex
	inMain  bool            // Main is running
	tried   bool            // setup ran (successfully or not)
	admin   string          // URL used to create and drop databases
	emb     *pgembed.Server // nil when external or not started
	missing error           // PostgreSQL is not installed (a *pgembed.NotFoundError)
	err     error           // setup failed otherwise
	tag     string          // random, makes names unique across processes
	n       int             // databases created so far
}

// Main runs the tests of a package with s as its server and returns the exit
// code for os.Exit. It runs m.Run, then closes the throwaway server if a test
// started one (stopping it and removing its directory); a failure to close
// turns a passing run into exit code 1. Call it once, from TestMain.
func Main(m *testing.M, s *Server) int {
	s.mu.Lock()
	s.inMain = true
	s.mu.Unlock()

	code := m.Run()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.inMain = false
	if s.emb != nil {
		if err := s.emb.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		s.emb = nil
	}
	return code
}

// NewDatabase creates a fresh, empty database (UTF8, C collation, from
// template0) and returns a postgres:// URL for it; its user is a superuser on
// the throwaway server. The name is unique per call: derived from t.Name()
// plus a counter and a per-process tag. A t.Cleanup drops the database WITH
// (FORCE) after terminating its sessions and dropping its replication slots;
// a failed drop fails t. On the throwaway server a database is not dropped
// while the server is stopped (a test that calls Embedded().Stop should
// register a Cleanup that starts it again, after NewDatabase).
//
// The first call starts the throwaway server. NewDatabase skips t when
// PostgreSQL is not installed, unless CI=true, and fails t when the server
// cannot be started or the package's TestMain does not call Main.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	admin, err := s.setup(t)
	if err != nil {
		t.Fatal(err)
	}

	s.mu.Lock()
	s.n++
	name := fmt.Sprintf("t_%s_%s_%d", sanitize(t.Name()), s.tag, s.n)
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := s.createDatabase(ctx, admin, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.dropDatabase(admin, name); err != nil {
			t.Error(err)
		}
	})
	return withDatabase(admin, name)
}

// Embedded returns the throwaway server, so that a test can Stop and Start
// it to simulate a database restart; Close is Main's job. It returns nil when
// tests run against the server of $ROWCAST_TEST_DATABASE_URL, and until
// NewDatabase has been called in this test binary.
func (s *Server) Embedded() *pgembed.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.emb
}

// setup finds or starts the server once, and returns the admin URL. It skips
// t when PostgreSQL is not installed (outside CI) and returns an error for
// everything else.
func (s *Server) setup(t testing.TB) (string, error) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.inMain {
		return "", errors.New("pgtest: NewDatabase needs the package's TestMain to run `os.Exit(pgtest.Main(m, &pg))`")
	}
	if !s.tried {
		s.tried = true
		s.start()
	}
	switch {
	case s.missing != nil && isCI():
		return "", fmt.Errorf("pgtest: CI=true but PostgreSQL is not installed: %w", s.missing)
	case s.missing != nil:
		t.Skipf("pgtest: skipping, needs PostgreSQL: %v (or set %s to an outside server)", s.missing, EnvURL)
	case s.err != nil:
		return "", s.err
	}
	return s.admin, nil
}

// start sets s.admin (and s.emb), or s.missing or s.err. s.mu is held.
func (s *Server) start() {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		s.err = fmt.Errorf("pgtest: random tag: %w", err)
		return
	}
	s.tag = hex.EncodeToString(b[:])

	if u := os.Getenv(EnvURL); u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
			s.err = fmt.Errorf("pgtest: %s must be a postgres:// URL", EnvURL)
			return
		}
		s.admin = u
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	emb, err := pgembed.Start(ctx, pgembed.Options{Logf: verboseLogf})
	var nf *pgembed.NotFoundError
	switch {
	case errors.As(err, &nf):
		s.missing = err
	case err != nil:
		s.err = fmt.Errorf("pgtest: %w", err)
	default:
		s.emb = emb
		s.admin = emb.URL()
	}
}

// createDatabase creates database name on the server of admin.
func (s *Server) createDatabase(ctx context.Context, admin, name string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+
		" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
	if err != nil {
		return fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return nil
}

// dropDatabase drops database name on the server of admin: it terminates
// the database's sessions (waiting for them to exit on PostgreSQL 14+),
// drops its replication slots, then drops it WITH (FORCE). It does nothing
// while the throwaway server is stopped.
func (s *Server) dropDatabase(admin, name string) error {
	if emb := s.Embedded(); emb != nil && !emb.Running() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("pgtest: drop database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	version, err := strconv.Atoi(conn.PgConn().ParameterStatus("server_version_num"))
	if err != nil {
		var v string
		if err := conn.QueryRow(ctx, "SHOW server_version_num").Scan(&v); err != nil {
			return fmt.Errorf("pgtest: drop database %s: %w", name, err)
		}
		version, _ = strconv.Atoi(v)
	}
	terminate := "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
	if version >= 140000 {
		terminate = "SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
	}
	for _, q := range []string{
		terminate,
		"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
	} {
		if _, err := conn.Exec(ctx, q, name); err != nil {
			return fmt.Errorf("pgtest: drop database %s: %w", name, err)
		}
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("pgtest: drop database %s: %w", name, err)
	}
	return nil
}

// withDatabase returns admin (a postgres:// URL) with its database replaced
// by name.
func withDatabase(admin, name string) string {
	u, err := url.Parse(admin)
	if err != nil {
		return admin // unreachable: start validated the URL
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// maxNameRunes bounds the part of a database name taken from the test name,
// keeping the whole name under PostgreSQL's 63-byte limit.
const maxNameRunes = 40

// sanitize turns a test name into lowercase [a-z0-9_], collapsing runs of
// other characters into one '_' and truncating to maxNameRunes.
func sanitize(name string) string {
	var b strings.Builder
	under := false
	for _, r := range strings.ToLower(name) {
		if b.Len() >= maxNameRunes {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			under = false
		} else if !under && b.Len() > 0 {
			b.WriteByte('_')
			under = true
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}

// isCI reports whether $CI is true, as CI systems set it.
func isCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// verboseLogf reports the throwaway server's progress on stderr under
// go test -v. Test loggers are avoided: the server outlives the test that
// started it.
func verboseLogf(format string, args ...any) {
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}
