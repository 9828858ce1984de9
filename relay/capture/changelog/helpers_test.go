package changelog_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
	"github.com/rowcast/rowcast/triggers"
)

// schema is the application the tests capture: items carry their team;
// notes take theirs from their deal, and go with it (ON DELETE CASCADE);
// links too, and lose it (ON DELETE SET NULL).
const schema = `
create table items (id bigint primary key, team_id bigint, v int not null default 0);
create table deals (id bigint primary key, team_id bigint not null);
create table notes (id bigint primary key, deal_id bigint not null references deals on delete cascade, body text);
create table links (id bigint primary key, deal_id bigint references deals on delete set null);
`

// db is a fresh database with schema and rowcast installed.
type db struct {
	t    testing.TB
	url  string
	conn *pgx.Conn
	pool *pgxpool.Pool
}

func newDB(t testing.TB) *db {
	t.Helper()
	url := pg.NewDatabase(t)
	d := &db{t: t, url: url, conn: connect(t, url)}
	d.exec(schema)
	cfg := &config.Config{Tables: []config.Table{
		config.Table{Table: "items"}.WithDefaults(),
		config.Table{Table: "deals"}.WithDefaults(),
		config.Table{Table: "notes", TeamFrom: &config.TeamFrom{Table: "deals", Key: "deal_id", Column: "team_id"}}.WithDefaults(),
		config.Table{Table: "links", TeamFrom: &config.TeamFrom{Table: "deals", Key: "deal_id", Column: "team_id"}}.WithDefaults(),
	}}
	cfg.Capture.Mode = config.ModeTrigger
	p, err := triggers.Prepare(t.Context(), d.conn, cfg)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if _, err := triggers.Install(t.Context(), d.conn, p); err != nil {
		t.Fatalf("install: %v", err)
	}
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	d.pool = pool
	return d
}

func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (d *db) exec(sql string, args ...any) {
	d.t.Helper()
	if _, err := d.conn.Exec(d.t.Context(), sql, args...); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
}

func (d *db) begin() pgx.Tx {
	d.t.Helper()
	tx, err := connect(d.t, d.url).Begin(d.t.Context())
	if err != nil {
		d.t.Fatal(err)
	}
	return tx
}

func txExec(t *testing.T, tx pgx.Tx, sql string, args ...any) {
	t.Helper()
	if _, err := tx.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func commit(t *testing.T, tx pgx.Tx) {
	t.Helper()
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func (d *db) queryInt(sql string, args ...any) int64 {
	d.t.Helper()
	var n int64
	if err := d.conn.QueryRow(d.t.Context(), sql, args...).Scan(&n); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (d *db) queryText(sql string, args ...any) string {
	d.t.Helper()
	var s string
	if err := d.conn.QueryRow(d.t.Context(), sql, args...).Scan(&s); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// at is the position p in d's history, of its current epoch.
func (d *db) at(p relay.Pos) relay.Position {
	d.t.Helper()
	return relay.Position{Epoch: d.queryText("select replace(epoch::text, '-', '') from rowcast.meta"), Pos: p}
}

// tick records a tick, as the ticker does, and returns its number; it fails
// the test when there was nothing to tick.
func (d *db) tick() int64 {
	d.t.Helper()
	var tick *int64
	if err := d.conn.QueryRow(d.t.Context(), "select rowcast.tick()").Scan(&tick); err != nil {
		d.t.Fatal(err)
	}
	if tick == nil {
		d.t.Fatal("nothing to tick")
	}
	return *tick
}

// recorder is a relay.Sink that keeps what it is handed.
type recorder struct {
	mu     sync.Mutex
	resets []relay.Pos
	txns   []relay.Txn
	more   chan struct{} // signalled after every call
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1)} }

func (r *recorder) Reset(epoch string, head relay.Pos) {
	r.mu.Lock()
	r.resets = append(r.resets, head)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) Txn(txn *relay.Txn) {
	r.mu.Lock()
	r.txns = append(r.txns, *txn)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) signal() {
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// changes returns every change handed on so far, in order.
func (r *recorder) changes() []relay.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []relay.Change
	for _, txn := range r.txns {
		all = append(all, txn.Changes...)
	}
	return all
}

// waitChanges waits until n changes were handed on and returns them; it
// fails the test after 10 seconds, and when their positions do not rise.
func (r *recorder) waitChanges(t *testing.T, n int) []relay.Change {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		if all := r.changes(); len(all) >= n {
			for i := 1; i < len(all); i++ {
				if all[i].Pos.Compare(all[i-1].Pos) <= 0 {
					t.Fatalf("positions do not rise:\n%s", describe(all))
				}
			}
			return all
		}
		select {
		case <-r.more:
		case <-deadline.C:
			t.Fatalf("got %d changes, want %d:\n%s", len(r.changes()), n, describe(r.changes()))
		}
	}
}

// describe renders changes one per line, for failure messages.
func describe(chs []relay.Change) string {
	var b strings.Builder
	for _, ch := range chs {
		fmt.Fprintf(&b, "  xid %d %s @%d.%d.%d %s %c %s\n", ch.XID, ch.Stream, ch.Pos.Tick, ch.Pos.Tx, ch.Pos.ID, ch.Table, ch.Op, ch.EntityID)
	}
	return b.String()
}

// tail starts a Tail of d into a new recorder and waits until it is ready.
func (d *db) tail() *recorder {
	d.t.Helper()
	rec := newRecorder()
	d.tailInto(rec)
	return rec
}

// tailInto starts a Tail of d into sink and waits until it is ready.
func (d *db) tailInto(sink relay.Sink) {
	d.t.Helper()
	d.tailWith(sink, changelog.TailOptions{})
}

// startTail runs a Tail of d into sink with o, and no Ticker (the test
// ticks, and pokes or notifies it), until the test ends; it returns once
// the tail is ready.
func startTail(t *testing.T, d *db, sink relay.Sink, o changelog.TailOptions) *changelog.Tail {
	t.Helper()
	tl := changelog.NewTail(d.url, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx, sink) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-tl.Ready():
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("tail: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("tail not ready after 30s")
	}
	return tl
}

// tailWith starts a Tail of d into sink, with o (but polling at least every
// 20ms), and a Ticker that reads its ticks for it (TickerOptions.Reader), and
// waits until the tail is ready. What was written
// before is ticked first: it is history, not handed on.
func (d *db) tailWith(sink relay.Sink, o changelog.TailOptions) {
	d.t.Helper()
	d.exec("select rowcast.tick()")
	o.PollMin, o.PollMax = time.Millisecond, 20*time.Millisecond
	tl := changelog.NewTail(d.url, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- tl.Run(ctx, sink) }()
	tk := changelog.NewTicker(d.url, changelog.TickerOptions{PollMax: 20 * time.Millisecond, Reader: tl,
		LocalListener: tl.ListenerPID})
	go func() { done <- tk.Run(ctx) }()
	d.t.Cleanup(func() { cancel(); <-done; <-done })
	select {
	case <-tl.Ready():
	case err := <-done:
		done <- err // for the cleanup
		d.t.Fatalf("tail: %v", err)
	case <-time.After(30 * time.Second):
		d.t.Fatal("tail not ready after 30s")
	}
}

// key is what identifies a change in a test's expectations.
type key struct {
	Stream string
	Table  string
	Op     relay.Op
	Entity string
}

func keys(chs []relay.Change) []key {
	out := make([]key, len(chs))
	for i, ch := range chs {
		out[i] = key{ch.Stream, strings.TrimPrefix(ch.Table, "public."), ch.Op, ch.EntityID}
	}
	return out
}
