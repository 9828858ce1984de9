package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/capture/changelog"
	rowclient "github.com/rowcast/rowcast/relay/client"
	"github.com/rowcast/rowcast/relay/pgtest"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

var pg pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }

const secret = "test-secret-test-secret-test-secret-0123"

// env is one relay on one fresh demo CRM database.
type env struct {
	t     *testing.T
	url   string
	cfg   *config.Config
	relay *server.Relay
	reg   *prometheus.Registry // the running relay's metrics
	db    *pgxpool.Pool
	stop  context.CancelFunc
	done  chan error
	// logicalRetry is the slot holder's pause between attempts (zero: the
	// default), for relays started from now on.
	logicalRetry time.Duration
	// logicalStandby and logicalIdle are the slot holder's status interval
	// and idle timeout (zero: the defaults), for relays started from now on.
	logicalStandby, logicalIdle time.Duration
	// jwksMin is the least time between fetches of auth.jwks_url (zero:
	// the default), for relays started from now on.
	jwksMin time.Duration
	// lostAfter is how long the capture may be away before Sentry hears
	// of it (zero: 30 s).
	lostAfter time.Duration
	// stall is how long the changelog reader waits for an answer before
	// it reconnects (zero: 10 s).
	stall time.Duration
	// tickerPoll is the ticker's look interval (zero: the default), for
	// relays started from now on.
	tickerPoll time.Duration
	// addr, when set, is the address sessions dial instead of the relay's
	// (a relay in another process).
	addr string
	// relayMu guards relay against a session dialling while a test
	// restarts it (start replaces it); copies of the env share it.
	relayMu *sync.Mutex
}

// forT returns a copy of e that reports to t (a subtest).
func (e *env) forT(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// startRelay creates a demo CRM database (plus the extra schema statements), installs the triggers and runs a
// relay on a free port; tweak adjusts the configuration first.
func startRelay(t *testing.T, tweak func(*config.Config), schema ...string) *env {
	t.Helper()
	url := pg.NewDatabase(t)
	ctx := context.Background()
	if err := crm.Setup(ctx, url); err != nil {
		t.Fatal(err)
	}
	if len(schema) > 0 {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		for _, sql := range schema {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		conn.Close(ctx)
	}
	cfg := config.Defaults()
	cfg.Database.URL = url
	cfg.Listen = "127.0.0.1:0"
	cfg.Auth.JWTSecret = secret
	cfg.Origins = []string{"http://localhost:5173"}
	cfg.Tables = crm.Tables()
	cfg.Shutdown.Grace = 2 * time.Second
	cfg.Shutdown.Drain = 0 // TestDrainSpreadsCloses sets its own
	if tweak != nil {
		tweak(&cfg)
	}
	install(t, &cfg)
	e := &env{t: t, url: url, cfg: &cfg, done: make(chan error, 1), relayMu: &sync.Mutex{}}
	var err error
	e.db, err = pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	t.Cleanup(func() {
		e.shutdown()
		e.db.Close()
	})
	return e
}

func install(t *testing.T, cfg *config.Config) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cfg.Database.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	plan, err := triggers.Prepare(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := triggers.Install(ctx, conn, plan); err != nil {
		t.Fatal(err)
	}
}

func (e *env) start() {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	r, err := server.New(server.Options{Config: e.cfg, Version: "test", LogicalRetry: e.logicalRetry,
		LogicalStandby: e.logicalStandby, LogicalIdleTimeout: e.logicalIdle, JWKSMinInterval: e.jwksMin,
		DatabaseLostAfter: e.lostAfter, CaptureStallTimeout: e.stall, TickerPoll: e.tickerPoll, Registry: reg})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.relayMu.Lock()
	e.relay, e.reg, e.stop, e.done = r, reg, cancel, make(chan error, 1)
	e.relayMu.Unlock()
	go func() { e.done <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-e.done:
		e.t.Fatalf("relay did not start: %v", err)
	case <-time.After(30 * time.Second):
		e.t.Fatal("relay not ready after 30s")
	}
}

func (e *env) shutdown() {
	if e.stop == nil {
		return
	}
	e.stop()
	if err := <-e.done; err != nil {
		e.t.Errorf("relay run: %v", err)
	}
	e.stop = nil
}

// exec runs statements in one transaction.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("exec %q: %v", sql, err)
	}
}

// tx runs fn in one transaction.
func (e *env) tx(fn func(tx pgx.Tx) error) {
	e.t.Helper()
	if err := pgx.BeginFunc(context.Background(), e.db, fn); err != nil {
		e.t.Fatal(err)
	}
}

func token(t testing.TB, claims map[string]any) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	tok, err := auth.Sign([]byte(secret), claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func userToken(t testing.TB, user string, teams ...int) string {
	return token(t, map[string]any{"sub": user, "teamId": teams})
}

// frame is any server frame, as relay/client reads it (Raw is the frame as
// received).
type frame struct{ rowclient.Frame }

func (f frame) data() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(f.Data, &m)
	return m
}

// client is one plain-protocol connection through relay/client, the
// project's one client of the protocol.
type client struct {
	t    testing.TB
	conn *rowclient.Conn
	last string // last event position seen
}

// dial connects to /ws; query is added to the URL as is ("since=…"). A
// refused upgrade's error wraps a *rowclient.HandshakeError.
func (e *env) dial(tok string, query string, hdr http.Header) (*client, error) {
	e.relayMu.Lock()
	host := e.addr
	if host == "" {
		host = e.relay.Addr()
	}
	e.relayMu.Unlock()
	u := url.URL{Scheme: "ws", Host: host, Path: "/ws", RawQuery: query}
	conn, err := rowclient.Dial(context.Background(), rowclient.Options{URL: u.String(), Token: tok, Header: hdr})
	if err != nil {
		return nil, err
	}
	e.t.Cleanup(func() { conn.WebSocket().Close() })
	return &client{t: e.t, conn: conn}, nil
}

// holdLock opens a session that takes the session-level advisory lock
// hashtext(key) (a relay's election: "rowcast.ticker", "rowcast.slot:…")
// and does nothing else until release ends it, or the test ends.
func (e *env) holdLock(key string) (release func()) {
	e.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close(ctx) })
	if _, err := conn.Exec(ctx, "select pg_advisory_lock(hashtext($1))", key); err != nil {
		e.t.Fatal(err)
	}
	return func() {
		if err := conn.Close(ctx); err != nil {
			e.t.Fatal(err)
		}
	}
}

// connect dials and reads the welcome; it sends a ping so the session goes
// live at once instead of waiting out the resume grace period.
func (e *env) connect(tok string) *client {
	e.t.Helper()
	c, err := e.dial(tok, "", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	w := c.next()
	if w.Type != "welcome" {
		e.t.Fatalf("first frame %s, want welcome", w.Raw)
	}
	c.send(`{"type":"ping","id":0}`)
	if p := c.next(); p.Type != "pong" {
		e.t.Fatalf("want pong, got %s", p.Raw)
	}
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if err := c.conn.Send(s); err != nil {
		c.t.Fatal(err)
	}
}

// drop closes the TCP connection without a close frame, as a lost network
// does.
func (c *client) drop() { c.conn.WebSocket().Close() }

// next reads one frame, failing the test after 10s.
func (c *client) next() frame {
	c.t.Helper()
	f, err := c.read(10 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// read reads one frame within timeout; a frame that is not JSON is an
// error. A close from the relay is an error wrapping *rowclient.CloseError.
func (c *client) read(timeout time.Duration) (frame, error) {
	f, err := c.conn.NextWithin(timeout)
	if err != nil {
		return frame{}, err
	}
	if !json.Valid(f.Raw) {
		return frame{}, fmt.Errorf("frame is not JSON: %q", f.Raw)
	}
	if f.Type == "event" {
		c.last = f.Position
	}
	return frame{f}, nil
}

// event reads the next frame and checks it is the named event.
func (c *client) event(name string) frame {
	c.t.Helper()
	f := c.next()
	if f.Type != "event" || f.Event != name {
		c.t.Fatalf("want event %s, got %s", name, f.Raw)
	}
	return f
}

// closed reads until the connection closes and returns the close code
// (1006 when it ended without a close frame).
func (c *client) closed() int {
	c.t.Helper()
	for {
		_, err := c.read(10 * time.Second)
		if err == nil {
			continue
		}
		var ce *rowclient.CloseError
		if asClose(err, &ce) {
			return ce.Code
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection not closed: %v", err)
		}
		return websocket.CloseAbnormalClosure
	}
}

func signWith(key string, claims map[string]any) (string, error) {
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	return auth.Sign([]byte(key), claims)
}

func asClose(err error, ce **rowclient.CloseError) bool { return errors.As(err, ce) }

// pruneNow runs one prune with the relay's retention and returns the rows
// deleted.
func pruneNow(t *testing.T, e *env) int64 {
	t.Helper()
	p := &changelog.Pruner{Pool: e.db, Retention: e.cfg.History.Retention}
	n, err := p.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startPosition is the position before any change (the end of tick 0),
// for a session of any user and teams.
func startPosition(t *testing.T, e *env) string {
	t.Helper()
	var epoch string
	if err := e.db.QueryRow(context.Background(), "select replace(epoch::text, '-', '') from rowcast.meta").Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	return relay.Position{Epoch: epoch, Pos: relay.TickEnd(0)}.Encode()
}
