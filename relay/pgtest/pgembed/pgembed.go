// Package pgembed runs a throwaway local PostgreSQL server: initdb into a
// directory, then pg_ctl on a loopback port with logical decoding enabled. It
// backs the `rowcast demo` command and the test helper relay/pgtest.
//
// The server binaries come from BinDir. PostgreSQL refuses to run as root, so
// when the current process is root every PostgreSQL command runs as the
// `postgres` OS user, which then owns the data directory; the working
// directory and all its parents must be traversable by that user (the default
// temp directory is created with mode 0755 under os.TempDir()).
//
// The server is a separate process started by pg_ctl; it outlives this
// process unless Stop or Close is called.
package pgembed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configures Start. The zero value is a server in a new temp dir on a
// free loopback port.
type Options struct {
	// Dir is the working directory: the cluster lives in Dir/data and the
	// server log in Dir/postgres.log. Empty means a new directory under
	// os.TempDir(), removed by Close. A non-empty Dir is created if missing,
	// never removed, and when Dir/data already holds a cluster it is started
	// again instead of running initdb.
	Dir string
	// Port is the TCP port on 127.0.0.1. Zero picks a free port (and picks
	// another if it is taken before the server binds it).
	Port int
	// Settings are extra postgresql.conf settings; they override the
	// defaults (wal_level=logical, fsync=off, …). "port" and
	// "listen_addresses" are not allowed: use Port.
	Settings map[string]string
	// Logf, if non-nil, receives progress messages (directory, port,
	// start/stop). It is called synchronously from Start, Stop and Close.
	Logf func(format string, args ...any)
}

// Server is a local PostgreSQL server started by Start. Its methods are safe
// for concurrent use.
type Server struct {
	bin     string               // directory of initdb and pg_ctl
	dir     string               // working directory
	data    string               // cluster directory, dir/data
	logPath string               // server log, dir/postgres.log
	ownDir  bool                 // dir was created by Start: Close removes it
	cred    *syscall.Credential  // non-nil: run PostgreSQL commands as this user
	logf    func(string, ...any) // never nil

	mu      sync.Mutex
	port    int
	running bool
	closed  bool
}

// defaultSettings are the postgresql.conf settings of every server: logical
// decoding on, durability off (the data is throwaway). synchronous_commit
// stays on: with it off, WAL reaches logical decoding only when the WAL
// writer flushes (every 200ms), which would delay logical capture; with fsync
// off a synchronous commit costs next to nothing.
func defaultSettings() map[string]string {
	return map[string]string{
		"wal_level":             "logical",
		"max_replication_slots": "20",
		"max_wal_senders":       "20",
		"max_connections":       "200",
		"fsync":                 "off",
		"full_page_writes":      "off",
		"shared_buffers":        "128MB",
	}
}

// startAttempts bounds how often Start picks another free port when the one
// it chose was taken before the server could bind it.
const startAttempts = 5

// confName is the settings file Start writes into the data directory and
// includes from postgresql.conf.
const confName = "rowcast.conf"

// Start creates (initdb) and starts a server as described by o and returns
// once it accepts connections (pg_ctl -w). ctx bounds the whole start-up; the
// server itself is not tied to ctx. On error nothing is left running and a
// directory Start created is removed; errors from the server include the tail
// of its log. A wrapped *NotFoundError means PostgreSQL is not installed. The
// caller must Close the returned Server.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	for k := range o.Settings {
		if !validSettingName(k) {
			return nil, fmt.Errorf("pgembed: invalid setting name %q", k)
		}
		if k == "port" || k == "listen_addresses" {
			return nil, fmt.Errorf("pgembed: setting %q is managed by pgembed; use Options.Port", k)
		}
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}

	s := &Server{bin: bin, cred: cred, logf: o.Logf}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if o.Dir == "" {
		s.dir, err = os.MkdirTemp(os.TempDir(), "rowcast-pg-")
		if err != nil {
			return nil, fmt.Errorf("pgembed: create temp dir: %w", err)
		}
		s.ownDir = true
		if err := os.Chmod(s.dir, 0o755); err != nil {
			s.removeDir()
			return nil, fmt.Errorf("pgembed: chmod temp dir: %w", err)
		}
	} else {
		if s.dir, err = filepath.Abs(o.Dir); err != nil {
			return nil, fmt.Errorf("pgembed: dir: %w", err)
		}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return nil, fmt.Errorf("pgembed: create dir: %w", err)
		}
	}
	s.data = filepath.Join(s.dir, "data")
	s.logPath = filepath.Join(s.dir, "postgres.log")

	if err := s.setup(ctx, o); err != nil {
		s.removeDir()
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(ctx, o.Port == 0); err != nil {
		s.removeDir()
		return nil, err
	}
	return s, nil
}

// setup prepares the working directory: initdb unless a cluster exists, the
// log file, and the settings file with a port chosen.
func (s *Server) setup(ctx context.Context, o Options) error {
	if s.cred != nil {
		if err := checkTraversable(s.dir, s.cred); err != nil {
			return err
		}
	}
	s.logf("pgembed: PostgreSQL binaries in %s, working directory %s", s.bin, s.dir)

	if _, err := os.Stat(filepath.Join(s.data, "PG_VERSION")); err == nil {
		s.logf("pgembed: reusing the cluster in %s", s.data)
	} else {
		if err := os.Mkdir(s.data, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pgembed: create data dir: %w", err)
		}
		if err := s.chown(s.data); err != nil {
			return err
		}
		if _, err := s.run(ctx, "initdb", "-D", s.data, "-U", "postgres", "--auth=trust",
			"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
			return fmt.Errorf("pgembed: %w", err)
		}
	}

	f, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgembed: create log file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgembed: create log file: %w", err)
	}
	if err := s.chown(s.logPath); err != nil {
		return err
	}

	s.port = o.Port
	if s.port == 0 {
		if s.port, err = freePort(); err != nil {
			return err
		}
	}
	if err := s.includeConf(); err != nil {
		return err
	}
	return s.writeConf(o.Settings)
}

// URL returns the superuser URL of the database postgres.
func (s *Server) URL() string { return s.URLFor("postgres") }

// URLFor returns the superuser URL of database db (postgres://…, usable by
// pgx and libpq). The database need not exist.
func (s *Server) URLFor(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the server's TCP port on 127.0.0.1.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// Dir returns the working directory (cluster in Dir()/data, log in
// Dir()/postgres.log).
func (s *Server) Dir() string { return s.dir }

// LogPath returns the path of the server log file.
func (s *Server) LogPath() string { return s.logPath }

// Running reports whether the server is started (by Start or Server.Start)
// and not since stopped by Stop or Close.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// CreateDatabase creates database name (UTF8, C locale, owned by postgres)
// and returns its URL. It returns once the database exists.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return "", fmt.Errorf("pgembed: create database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgembed: create database: %w", err)
	}
	return s.URLFor(name), nil
}

// Stop shuts the server down (pg_ctl stop -m fast, which disconnects
// clients) and returns once it has exited; the data is kept and Start starts
// it again. Stopping a stopped server does nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgembed: stop: server is closed")
	}
	return s.stopLocked(ctx, "fast")
}

// Crash stops the server the way a crash does (pg_ctl stop -m immediate:
// no checkpoint, WAL not yet written is lost) and returns once it has
// exited; Start then runs crash recovery. Crashing a stopped server does
// nothing.
func (s *Server) Crash(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgembed: crash: server is closed")
	}
	return s.stopLocked(ctx, "immediate")
}

// Start starts a stopped server again on the same port with the same data
// and returns once it accepts connections. Starting a running server does
// nothing. It fails if the port has been taken meanwhile.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgembed: start: server is closed")
	}
	if s.running {
		return nil
	}
	return s.startLocked(ctx, false)
}

// Close stops the server if it is running (fast, then immediate if that
// fails) and removes the working directory if Start created it. It returns
// when both are done. Calls after the first do nothing and return nil.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if err := s.stopLocked(ctx, "fast"); err != nil {
		if err2 := s.stopLocked(ctx, "immediate"); err2 != nil {
			errs = append(errs, err, err2)
		}
	}
	if s.ownDir {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("pgembed: remove dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// startLocked runs pg_ctl start and waits for the server to accept
// connections. With retryPort it picks another free port when the chosen one
// turns out to be taken. On failure no server is left running.
func (s *Server) startLocked(ctx context.Context, retryPort bool) error {
	for attempt := 1; ; attempt++ {
		off := fileSize(s.logPath)
		_, err := s.run(ctx, "pg_ctl", "start", "-w", "-t", waitSeconds(ctx),
			"-D", s.data, "-l", s.logPath)
		if err == nil {
			s.running = true
			s.logf("pgembed: server running on 127.0.0.1:%d", s.port)
			return nil
		}
		tail := logTail(s.logPath, off)
		s.abortStart()
		if retryPort && attempt < startAttempts && ctx.Err() == nil && portTaken(tail) {
			s.logf("pgembed: port %d is taken; picking another", s.port)
			if s.port, err = freePort(); err != nil {
				return err
			}
			if err := s.rewritePort(); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("pgembed: start: %w%s", err, tail)
	}
}

// abortStart kills a postmaster that a failed or interrupted pg_ctl start may
// have left behind.
func (s *Server) abortStart() {
	if _, err := os.Stat(filepath.Join(s.data, "postmaster.pid")); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = s.run(ctx, "pg_ctl", "stop", "-w", "-t", waitSeconds(ctx), "-m", "immediate", "-D", s.data)
}

// stopLocked runs pg_ctl stop with the given mode. A server whose
// postmaster.pid is gone counts as stopped.
func (s *Server) stopLocked(ctx context.Context, mode string) error {
	if !s.running {
		return nil
	}
	off := fileSize(s.logPath)
	_, err := s.run(ctx, "pg_ctl", "stop", "-w", "-t", waitSeconds(ctx), "-m", mode, "-D", s.data)
	if err != nil {
		if _, statErr := os.Stat(filepath.Join(s.data, "postmaster.pid")); !errors.Is(statErr, os.ErrNotExist) {
			return fmt.Errorf("pgembed: stop: %w%s", err, logTail(s.logPath, off))
		}
	}
	s.running = false
	s.logf("pgembed: server on 127.0.0.1:%d stopped", s.port)
	return nil
}

// run runs one of the PostgreSQL binaries as the server user in the working
// directory and returns its combined output; the error includes the output.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = commandEnv()
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	// pg_ctl start leaves the postmaster running with its output redirected
	// to the log; do not wait forever should it still hold our pipe.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		return out, fmt.Errorf("%s: %w:\n%s", name, err, msg)
	}
	return out, nil
}

// includeConf makes postgresql.conf include confName, once.
func (s *Server) includeConf() error {
	p := filepath.Join(s.data, "postgresql.conf")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("pgembed: read postgresql.conf: %w", err)
	}
	line := "include '" + confName + "'"
	if strings.Contains(string(b), line) {
		return nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgembed: open postgresql.conf: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by rowcast pgembed.\n%s\n", line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgembed: write postgresql.conf: %w", err)
	}
	return nil
}

// writeConf writes confName: the defaults, extra settings, and the
// connection settings for s.port.
func (s *Server) writeConf(extra map[string]string) error {
	set := defaultSettings()
	// The socket path (dir/.s.PGSQL.NNNNN) must fit in sun_path (108 bytes);
	// without a socket the server is reachable over TCP only.
	set["unix_socket_directories"] = ""
	if len(s.data)+len("/.s.PGSQL.65535") < 100 {
		set["unix_socket_directories"] = s.data
	}
	for k, v := range extra {
		set[k] = v
	}
	set["listen_addresses"] = "127.0.0.1"
	set["port"] = strconv.Itoa(s.port)

	var b strings.Builder
	b.WriteString("# Written by rowcast pgembed; rewritten on each pgembed.Start.\n")
	for _, k := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(set[k], "'", "''"))
	}
	p := filepath.Join(s.data, confName)
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("pgembed: write %s: %w", confName, err)
	}
	return s.chown(p)
}

// rewritePort replaces the port line of confName with s.port.
func (s *Server) rewritePort() error {
	p := filepath.Join(s.data, confName)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("pgembed: read %s: %w", confName, err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "port = ") {
			lines[i] = fmt.Sprintf("port = '%d'", s.port)
		}
	}
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		return fmt.Errorf("pgembed: write %s: %w", confName, err)
	}
	return nil
}

// chown gives path to the server user when PostgreSQL runs as another user.
func (s *Server) chown(path string) error {
	if s.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		return fmt.Errorf("pgembed: chown: %w", err)
	}
	return nil
}

// removeDir removes the working directory if Start created it.
func (s *Server) removeDir() {
	if s.ownDir {
		_ = os.RemoveAll(s.dir)
	}
}

// serverCredential returns the credential of the `postgres` OS user when the
// process runs as root, and nil otherwise (commands run as the current user).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgembed: running as root, PostgreSQL must run as the postgres user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgembed: postgres uid: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgembed: postgres gid: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// checkTraversable reports an error when the user of cred cannot reach dir
// because dir or one of its parents lacks the search permission.
func checkTraversable(dir string, cred *syscall.Credential) error {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgembed: %w", err)
		}
		perm := fi.Mode().Perm()
		ok := perm&0o001 != 0
		if st, isSys := fi.Sys().(*syscall.Stat_t); isSys {
			ok = ok || (st.Uid == cred.Uid && perm&0o100 != 0) || (st.Gid == cred.Gid && perm&0o010 != 0)
		}
		if !ok {
			return fmt.Errorf("pgembed: %s is not traversable by the postgres user; "+
				"use a directory under a world-searchable parent (for example set TMPDIR=/tmp)", p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// commandEnv is the environment of PostgreSQL commands: ours without PG*
// variables (which would redirect them) and with messages in English, so
// that log text can be matched.
func commandEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_ALL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgembed: find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgembed: find free port: %w", err)
	}
	return port, nil
}

// portTaken reports whether a server log says the port could not be bound.
func portTaken(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not bind")
}

// waitSeconds is pg_ctl's -t value: the time left before ctx's deadline,
// or pg_ctl's default of 60 seconds.
func waitSeconds(ctx context.Context) string {
	d, ok := ctx.Deadline()
	if !ok {
		return "60"
	}
	secs := int(time.Until(d).Seconds() + 0.999)
	return strconv.Itoa(max(secs, 1))
}

// validSettingName reports whether k looks like a configuration parameter
// name (letters, digits, '_' and '.' for extension settings).
func validSettingName(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case (r >= '0' && r <= '9') || r == '.':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// fileSize returns the size of path, or 0 when it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTailMax bounds how much of the server log an error includes.
const logTailMax = 4096

// logTail returns the end of what was appended to the log at path after
// offset off, formatted for appending to an error message, or "" when
// nothing was.
func logTail(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := fileSize(path)
	if size-off > logTailMax {
		off = size - logTailMax
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(f, logTailMax))
	if err != nil {
		return ""
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return ""
	}
	return "\n--- " + path + " (end) ---\n" + text
}
