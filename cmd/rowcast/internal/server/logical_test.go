package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/capture/changelog"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

func logicalMode(c *config.Config) { c.Capture.Mode = config.ModeLogical }

// startLogicalFastRetry starts a relay in logical mode whose slot holder
// campaigns again 100ms after a failed attempt (2s by default).
func startLogicalFastRetry(t *testing.T) *env {
	t.Helper()
	e := startRelay(t, logicalMode)
	e.shutdown()
	e.logicalRetry = 100 * time.Millisecond
	e.start()
	return e
}

func TestLogicalOrderingOracle(t *testing.T) { orderingOracle(t, logicalMode) }

// wideSchema is one table with every common column type.
const wideSchema = `
create type mood as enum ('happy', 'sad', 'it''s complicated');
create table wide (
    id        bigint primary key,
    team_id   bigint not null,
    i2        int2, i4 int4, i8 int8,
    num       numeric, num_scaled numeric(10,2),
    f8        float8, f4 float4,
    txt       text, vc varchar(20), flag bool,
    d         date, ts timestamp, tstz timestamptz, iv interval,
    u         uuid, j json, jb jsonb,
    tags      text[], nums int[],
    raw       bytea, m mood,
    doubled   bigint generated always as (i8 * 2) stored,
    big       text,
    secret    text,
    shadow    text generated always as ('hush-' || id::text) stored,
    editor    bigint
);
create domain vault_code as text not null;
create table vault (id bigint primary key, team_id bigint not null, secret text, editor bigint, note text,
    code vault_code default 'c');`

// wideWorkload is the same scripted workload for both modes.
var wideWorkload = []string{
	`insert into wide (id, team_id, i2, i4, i8, num, num_scaled, f8, f4, txt, vc, flag, d, ts, tstz, iv, u, j, jb, tags, nums, raw, m, big, secret, editor)
	 values (1, 1, -2, 40000, 9007199254740993, 'NaN', 1.50, 'Infinity', 1.5, e'tab\tquote" back\\ slash ü', 'short', true,
	 '2026-11-25', '2026-11-25 18:05:15.123456', '2026-11-25 18:05:15.123456+02', '1 day 02:03:04.5',
	 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1, "a": [1, 2.50], "a": "dup"}', '{"z": null, "y": {"x": 1e3}}',
	 array['a', 'b c', null, 'd"e'], array[1, null, 3], '\xdeadbeef', 'it''s complicated', repeat('x', 1000000), 'hush-1', 5)`,
	`update wide set secret = 'hush-2' where id = 1`,
	`update wide set num = 12.340, f8 = '-Infinity', iv = '-3 mons', flag = false where id = 1`,
	`update wide set f8 = 1e20, f4 = 1.5e-7 where id = 1`,
	`update wide set txt = txt where id = 1`,
	`update wide set i8 = 21, tags = '{}' where id = 1`,
	`update wide set big = repeat('y', 1000000) where id = 1`,
	`update wide set ts = null, j = null, jb = '[]', secret = 'hush-3' where id = 1`,
	`insert into wide (id, team_id, f8, num) values (2, 1, 'NaN', '-Infinity')`,
	`update wide set team_id = 2 where id = 2`,
	`delete from wide where id = 1`,
	`insert into vault values (1, 1, 'hush-v', 7, 'a')`,
	`update vault set secret = 'hush-w', note = 'b', editor = 8`,
}

// runWide runs the workload under one capture mode and returns each event
// frame's data with committedAt removed.
func runWide(t *testing.T, tweak func(*config.Config)) []string {
	e := startRelay(t, func(c *config.Config) {
		if tweak != nil {
			tweak(c)
		}
		c.Tables = append(c.Tables, config.Table{Table: "wide", Entity: "wide", ActorColumn: "editor",
			ExcludeColumns: []string{"secret", "shadow", "editor"}}.WithDefaults(),
			// No generated column: the slot holder renders secret null
			// itself; editor, which the capture reads, the apply function.
			// A NOT NULL domain column the capture does not read is left
			// unset in the apply function's rows (it used to fail there).
			config.Table{Table: "vault", Entity: "vault", ActorColumn: "editor",
				ExcludeColumns: []string{"secret", "editor"}}.WithDefaults())
	}, wideSchema)
	c := e.connect(userToken(t, "9", 1, 2))
	for _, sql := range wideWorkload {
		e.exec(sql)
	}
	e.exec("insert into leads (team_id, first_name) values (1, 'end')")
	committed := regexp.MustCompile(`,"committedAt":"[^"]*"`)
	var out []string
	for {
		f := c.next()
		if f.Event == "lead:created" {
			break
		}
		if f.Type != "event" {
			t.Fatalf("unexpected frame %s", f.Raw)
		}
		out = append(out, f.Event+" "+committed.ReplaceAllString(string(f.Data), ""))
	}
	// An excluded column's value is never written to the changelog.
	var leaked int
	err := e.db.QueryRow(t.Context(), `select count(*) from rowcast.changelog
		where concat(row_data::text, old_row::text, changes::text, old_data::text) ~ 'hush|"editor" *: *[0-9]'`).Scan(&leaked)
	if err != nil || leaked > 0 {
		t.Errorf("%d changelog rows hold an excluded column's value (%v)", leaked, err)
	}
	return out
}

func TestModeEquivalence(t *testing.T) {
	trig := runWide(t, nil)
	logi := runWide(t, logicalMode)
	if len(trig) != 12 {
		t.Errorf("trigger mode sent %d events, want 12 (the no-op update and the excluded column's send none; the team move two)", len(trig))
	}
	for i := range max(len(trig), len(logi)) {
		var a, b string
		if i < len(trig) {
			a = trig[i]
		}
		if i < len(logi) {
			b = logi[i]
		}
		if a != b {
			t.Errorf("event %d differs\ntrigger: %.600s\nlogical: %.600s", i, a, b)
		}
	}
	if t.Failed() {
		return
	}
	// Spot checks of the rendering, so that identical-but-wrong fails:
	// capture writes to_json's text, events carry to_jsonb's (a json
	// column deduplicated and ordered, floats without exponents, the row's
	// keys in jsonb's order).
	first := trig[0]
	for _, want := range []string{`"num":"NaN"`, `"f8":"Infinity"`, `"num_scaled":1.50`, `"i8":9007199254740993`,
		`"iv":"P1DT2H3M4.5S"`, `"tstz":"2026-11-25T16:05:15.123456+00:00"`, `"raw":"\\xdeadbeef"`,
		`"tags":["a","b c",null,"d\"e"]`, `"doubled":18014398509481986`, `"m":"it's complicated"`,
		`"j":{"a":"dup","b":1}`, `"jb":{"y":{"x":1000},"z":null}`, `"f4":1.5,"f8":"Infinity","i2":-2,"i4":40000,"i8":9007199254740993`} {
		if !strings.Contains(first, want) {
			t.Errorf("created event lacks %s", want)
		}
	}
	for _, ev := range trig {
		if strings.Contains(ev, "secret") || strings.Contains(ev, "hush") || strings.Contains(ev, "shadow") || strings.Contains(ev, "editor") {
			t.Errorf("an event names an excluded column: %.300s", ev)
		}
	}
	if !strings.Contains(first, `"userId":"5"`) {
		t.Errorf("an excluded actor column still names the actor: %.300s", first)
	}
	if v := trig[len(trig)-1]; !strings.Contains(v, `"userId":"8"`) || !strings.Contains(v, `"changes":{"note":"b"}`) {
		t.Errorf("vault update: %.300s", v)
	}
	if !strings.Contains(trig[2], `"changes":{"f4":0.00000015,"f8":100000000000000000000}`) {
		t.Errorf("floats with exponents: %.300s", trig[2])
	}
	if !strings.Contains(trig[4], `"changes":{"big":"yyy`) || strings.Contains(trig[3], `"big"`) {
		t.Errorf("TOAST column: changed only when written: %.200s / %.200s", trig[3], trig[4])
	}
}

func TestLogicalIdleSlotAdvances(t *testing.T) {
	e := startRelay(t, logicalMode, "create table unrelated (id serial primary key, v text)")
	c := e.connect(userToken(t, "2", 1))
	for i := 0; i < 50; i++ {
		e.exec("insert into leads (team_id, first_name) values (1, $1)", fmt.Sprint(i))
	}
	for i := 0; i < 50; i++ {
		c.event("lead:created")
	}
	// Only WAL the slot does not publish from now on.
	var target string
	for i := 0; i < 20; i++ {
		e.exec("insert into unrelated (v) select repeat('z', 1000) from generate_series(1, 100)")
	}
	if err := e.db.QueryRow(context.Background(), "select pg_current_wal_lsn()::text").Scan(&target); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		var ok bool
		err := e.db.QueryRow(context.Background(),
			"select confirmed_flush_lsn >= $1::pg_lsn from pg_replication_slots where slot_name = 'rowcast'", target).Scan(&ok)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the idle slot's confirmed position never reached %s", target)
		}
	}
}

// TestLogicalHolderWakesItsTicker: each group commit of the slot holder
// wakes the ticker, whether or not the ticker asked for it (it stops asking
// while changes flow), so that the ticker records the holder's writes at
// once instead of at its next look (here an hour away). The ticker runs in
// the same process, so the holder wakes it there and sends no notification:
// PostgreSQL would wake every listening backend of the database with it.
func TestLogicalHolderWakesItsTicker(t *testing.T) {
	e := startRelay(t, logicalMode)
	e.shutdown()
	e.tickerPoll = time.Hour
	e.start()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "listen "+changelog.Channel); err != nil {
		t.Fatal(err)
	}
	c := e.connect(userToken(t, "2", 1))
	// The second needs a tick after the ticker's first look.
	for _, name := range []string{"first", "second"} {
		e.exec("insert into leads (team_id, first_name) values (1, $1)", name)
		if got := c.event("lead:created").data()["lead"].(map[string]any)["first_name"]; got != name {
			t.Fatalf("got lead %v, want %s", got, name)
		}
	}
	// Notifications arrive in commit order: the holder's would come first.
	e.exec("select pg_notify($1, 'marker')", changelog.Channel)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Payload != "marker" {
		t.Fatalf("the holder notified the database (%q) for a ticker in its own process", n.Payload)
	}
}

// TestLogicalGroupCommitTicksItself: the slot holder records the tick of
// each group commit in the commit's round trip, so its changes reach the
// sessions with no ticker ticking: here the ticker lock is held by a
// session that never ticks.
func TestLogicalGroupCommitTicksItself(t *testing.T) {
	e := startRelay(t, logicalMode)
	e.shutdown()
	e.holdLock("rowcast.ticker")
	e.start()
	c := e.connect(userToken(t, "2", 1))
	for _, name := range []string{"first", "second"} {
		e.exec("insert into leads (team_id, first_name) values (1, $1)", name)
		if got := c.event("lead:created").data()["lead"].(map[string]any)["first_name"]; got != name {
			t.Fatalf("got lead %v, want %s", got, name)
		}
	}
}

func TestLogicalAlterTableTruncateRollback(t *testing.T) {
	e := startRelay(t, logicalMode)
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'before')")
	c.event("lead:created")

	e.exec("alter table leads add column nickname text")
	e.exec("update leads set nickname = 'Nico' where first_name = 'before'")
	if f := c.event("lead:updated"); !bytes.Contains(f.Data, []byte(`"changes":{"nickname":"Nico"}`)) {
		t.Errorf("added column: %s", f.Raw)
	}
	e.exec("alter table leads drop column phone")
	e.exec("insert into leads (team_id, first_name) values (1, 'after')")
	if f := c.event("lead:created"); bytes.Contains(f.Data, []byte(`"phone"`)) || !bytes.Contains(f.Data, []byte(`"nickname":null`)) {
		t.Errorf("dropped column still sent, or added one missing: %s", f.Raw)
	}

	// A rolled-back transaction sends nothing.
	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into leads (team_id, first_name) values (1, 'rolled back')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.exec("truncate notes")
	if f := c.next(); string(f.Raw) != `{"type":"resync","reason":"truncate","entityType":"note"}` {
		t.Fatalf("after a rollback and a truncate got %s", f.Raw)
	}
}

func TestLogicalActorAndRequestID(t *testing.T) {
	e := startRelay(t, logicalMode)
	c := e.connect(userToken(t, "2", 1))
	e.tx(func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `select rowcast.set_actor('3'), rowcast.set_request_id('req-42');
			insert into leads (team_id, first_name, updated_by) values (1, 'A', 2)`)
		return err
	})
	d := c.event("lead:created").data()
	if d["userId"] != "3" || d["requestId"] != "req-42" {
		t.Errorf("set_actor / set_request_id in logical mode: %v", d)
	}
	e.exec("insert into leads (team_id, first_name, updated_by) values (1, 'B', 2)")
	if d := c.event("lead:created").data(); d["userId"] != "2" || d["requestId"] != nil {
		t.Errorf("actor column; the previous transaction's settings must not leak: %v", d)
	}
}

// TestLogicalSettingsStayInTheirTransaction: the source transactions of one
// group commit share a database transaction, and the holder applies their
// changes in one statement; each change still reads its own transaction's
// actor and request id, and none of the transaction before it.
func TestLogicalSettingsStayInTheirTransaction(t *testing.T) {
	e := startRelay(t, logicalMode)
	c := e.connect(userToken(t, "2", 1))
	ctx := context.Background()
	lock, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(ctx)
	held, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback(ctx)
	if _, err := held.Exec(ctx, "lock table rowcast.changelog in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	// The holder waits for the lock with the first change; the next three
	// reach it meanwhile, and it applies them together.
	e.exec("insert into leads (team_id, first_name, updated_by) values (1, 'first', 2)")
	waitFor(t, func() string { return "the holder waiting for the changelog's lock" }, func() bool {
		var waiting bool
		err := lock.QueryRow(ctx, `select exists (select from pg_stat_activity
			where application_name = 'rowcast holder' and wait_event_type = 'Lock')`).Scan(&waiting)
		return err == nil && waiting
	})
	e.tx(func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `select rowcast.set_actor('3'), rowcast.set_request_id('req-42');
			insert into leads (team_id, first_name, updated_by) values (1, 'A', 2)`)
		return err
	})
	e.exec("insert into leads (team_id, first_name, updated_by) values (1, 'B', 2)")
	e.tx(func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `insert into leads (team_id, first_name, updated_by) values (1, 'C', 2);
			select rowcast.set_request_id('req-7');
			insert into leads (team_id, first_name, updated_by) values (1, 'D', 2)`)
		return err
	})
	if err := held.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		name, user string
		request    any
	}{{"first", "2", nil}, {"A", "3", "req-42"}, {"B", "2", nil}, {"C", "2", nil}, {"D", "2", "req-7"}} {
		d := c.event("lead:created").data()
		if got := d["lead"].(map[string]any)["first_name"]; got != want.name || d["userId"] != want.user || d["requestId"] != want.request {
			t.Errorf("lead %v: userId %v requestId %v, want lead %s: %s, %v", got, d["userId"], d["requestId"], want.name, want.user, want.request)
		}
	}
	// And its own transaction's commit time: C and D share one.
	var times []time.Time
	err = lock.QueryRow(ctx, `select array_agg(origin_at order by id) from rowcast.changelog where tbl = 'public.leads'`).Scan(&times)
	if err != nil {
		t.Fatal(err)
	}
	if len(times) != 5 || !times[0].Before(times[1]) || !times[1].Before(times[2]) || !times[2].Before(times[3]) || !times[3].Equal(times[4]) {
		t.Errorf("commit times of first, A, B, C, D: %v", times)
	}
}

// TestLogicalGroupPauseIsBounded: a group commit waits for the stream to
// pause for capture.group_pause, but never past the group's 5 ms age.
func TestLogicalGroupPauseIsBounded(t *testing.T) {
	e := startRelay(t, func(c *config.Config) {
		logicalMode(c)
		c.Capture.GroupPause = time.Hour
	})
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'A')")
	f, err := c.read(5 * time.Second)
	if err != nil || f.Event != "lead:created" {
		t.Fatalf("with an hour's group pause, got %s, %v; want lead:created within seconds", f.Raw, err)
	}
}

func TestLogicalLargeTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("100k rows")
	}
	e := startRelay(t, logicalMode)
	const n = 100000
	e.exec(`insert into notes (team_id, entity_type, entity_id, body) select 1, 'lead', g, 'n' || g from generate_series(1, $1) g`, n)
	// Every row reached the changelog, in one stream.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(2 * time.Minute)
	for {
		var rows int64
		if err := e.db.QueryRow(context.Background(),
			"select count(*) from rowcast.changelog where stream = 'team:1'").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows == n {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("changelog has %d rows, want %d", rows, n)
		}
	}
	// And the relay read and published them.
	for e.relay.Hub().Stats().Published < n {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("relay published %d events, want %d", e.relay.Hub().Stats().Published, n)
		}
	}
}

// TestLogicalHolderKilled: SIGKILL the slot holder (a real rowcast process)
// in the middle of a stream of writes; the relay in this process takes the
// slot over, and its sessions see every version exactly once, in order.
func TestLogicalHolderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a rowcast process")
	}
	// The session reads after all 300 writes: room for them all.
	e := startRelay(t, func(c *config.Config) { logicalMode(c); c.Sessions.QueueSize = 1024 })
	e.shutdown() // let the subprocess take the slot first
	bin := filepath.Join(t.TempDir(), "rowcast")
	build := exec.Command("go", "build", "-o", bin, "github.com/rowcast/rowcast/cmd/rowcast")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfgFile := filepath.Join(t.TempDir(), "rowcast.yaml")
	var yml bytes.Buffer
	if err := e.cfg.WriteYAML(&yml); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, yml.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := exec.Command(bin, "serve", "--config", cfgFile)
	proc.Env = append(os.Environ(), "ROWCAST_DATABASE_URL="+e.url, "ROWCAST_AUTH_JWT_SECRET="+secret)
	var logs lockedBuffer
	proc.Stdout, proc.Stderr = &logs, &logs
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Process.Kill(); _ = proc.Wait() })
	waitFor(t, func() string { return "the subprocess to hold the slot; its log:\n" + logs.String() }, func() bool {
		var held bool
		err := e.db.QueryRow(context.Background(),
			"select exists (select 1 from pg_locks where locktype = 'advisory' and granted)").Scan(&held)
		return err == nil && held
	})
	e.start() // not the holder: it reads the changelog the subprocess writes
	c := e.connect(userToken(t, "2", 1))

	var id int64
	if err := e.db.QueryRow(context.Background(), `insert into escrows (team_id, property_address, city, state, zip_code, purchase_price)
		values (1, 'hot', 'Austin', 'TX', '1', 1) returning id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	c.event("escrow:created")
	const n = 300
	for i := 1; i <= n; i++ {
		if i == n/3 {
			if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		e.exec("update escrows set version = version + 1 where id = $1", id)
	}
	for v := 2; v <= n+1; v++ {
		f := c.event("escrow:updated")
		var d struct {
			Changes struct{ Version int } `json:"changes"`
		}
		if err := json.Unmarshal(f.Data, &d); err != nil || d.Changes.Version != v {
			t.Fatalf("want version %d, got %s\nsubprocess log:\n%s", v, f.Raw, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "holding the replication slot") {
		t.Errorf("the subprocess never held the slot:\n%s", logs.String())
	}
}

// waitFor polls cond every 50ms for up to 60s; what describes the wait.
func waitFor(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	waitWithin(t, 60*time.Second, what, cond)
}

// waitWithin is waitFor with a deadline of d.
func waitWithin(t *testing.T, d time.Duration, what func() string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what())
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a writing process and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogicalSlotLostStartsNewEpoch: the slot disappears (as after a
// failover, or invalidated by max_slot_wal_keep_size); the holder recreates
// it, the history epoch changes, and every session is told to resync, then
// receives live events again.
func TestLogicalSlotLostStartsNewEpoch(t *testing.T) {
	e := startRelay(t, logicalMode)
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'before')")
	c.event("lead:created")
	old := c.last

	// Drop the slot from under the holder: end its walsender first.
	waitFor(t, func() string { return "the slot to be dropped" }, func() bool {
		_, err := e.db.Exec(context.Background(), `
select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = 'rowcast' and active_pid is not null;
select pg_drop_replication_slot('rowcast') from pg_replication_slots where slot_name = 'rowcast' and not active`)
		if err != nil {
			return false
		}
		var gone bool
		err = e.db.QueryRow(context.Background(), "select not exists (select 1 from pg_replication_slots where slot_name = 'rowcast')").Scan(&gone)
		return err == nil && gone
	})
	if f := c.next(); string(f.Raw) != `{"type":"resync","reason":"history_expired"}` {
		t.Fatalf("want resync after the slot was lost, got %s", f.Raw)
	}
	waitFor(t, func() string { return "the slot to be recreated" }, func() bool {
		var back bool
		err := e.db.QueryRow(context.Background(), "select exists (select 1 from pg_replication_slots where slot_name = 'rowcast')").Scan(&back)
		return err == nil && back
	})
	e.exec("insert into leads (team_id, first_name) values (1, 'after')")
	if name := c.event("lead:created").data()["lead"].(map[string]any)["first_name"]; name != "after" {
		t.Fatalf("live after the new epoch: %v", name)
	}
	// A position from the old epoch is answered with resync.
	c2, err := e.dial(userToken(t, "2", 1), "since="+old, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2.next() // welcome
	if f := c2.next(); string(f.Raw) != `{"type":"resync","reason":"history_expired"}` {
		t.Fatalf("old-epoch position: got %s", f.Raw)
	}
}

func TestLogicalIdentityIndexMustHoldTheTeam(t *testing.T) {
	url := pg.NewDatabase(t)
	ctx := context.Background()
	if err := crm.Setup(ctx, url); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create unique index leads_email on leads (email); create unique index leads_team_id on leads (team_id, id)"); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Database.URL = url
	cfg.Capture.Mode = config.ModeLogical
	for _, index := range []string{"leads_email", "leads_team_id"} {
		cfg.Tables = []config.Table{config.Table{Table: "leads", ReplicaIdentityIndex: index}.WithDefaults()}
		plan, err := triggers.Prepare(ctx, conn, &cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = triggers.Install(ctx, conn, plan)
		if index == "leads_email" {
			if err == nil || !strings.Contains(err.Error(), `index "leads_email" does not include the team column "team_id"`) {
				t.Fatalf("an identity index without the team: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("an identity index with the team: %v", err)
		}
	}
}

// migrationWorkload changes leads through migrations: a column added,
// written and dropped; a column written then renamed; a column written then
// retyped. 60 more columns make the holder render a row in more than one
// jsonb_build_object call (at most 100 arguments each).
var migrationWorkload = []string{
	"alter table leads add column referral text, " + manyColumns(60),
	"insert into leads (team_id, first_name, referral, score, created_at, updated_at) values (1, 'ref', 'friend', 3, '2026-01-02', '2026-01-02')",
	"alter table leads drop column referral",
	"update leads set last_name = 'Before rename' where first_name = 'ref'",
	"alter table leads rename column last_name to surname",
	"update leads set score = 7 where first_name = 'ref'",
	"alter table leads alter column score type text",
	"update leads set budget_min = 12.5 where first_name = 'ref'",
	"alter table leads alter column budget_min type numeric(12, 4)",
	"delete from leads where first_name = 'ref'",
	"insert into leads (team_id, first_name, surname, score, created_at, updated_at) values (1, 'end', 'x', 'high', '2026-01-02', '2026-01-02')",
}

// manyColumns returns n column definitions for ALTER TABLE … ADD.
func manyColumns(n int) string {
	cols := make([]string, n)
	for i := range cols {
		cols[i] = fmt.Sprintf("add column extra_%02d int default %d", i, i)
	}
	return strings.Join(cols, ", ")
}

// runMigrations runs migrationWorkload while no relay runs (a logical slot
// holder lagging behind the migrations), then starts the relay and returns
// each event's data, committedAt removed, replayed from the start.
func runMigrations(t *testing.T, tweak func(*config.Config)) []string {
	e := startRelay(t, tweak)
	since := startPosition(t, e)
	e.shutdown()
	for _, sql := range migrationWorkload {
		e.exec(sql)
	}
	e.start()
	c, err := e.dial(userToken(t, "9", 1), "since="+since, nil)
	if err != nil {
		t.Fatal(err)
	}
	committed := regexp.MustCompile(`,"committedAt":"[^"]*"`)
	var out []string
	for {
		f := c.next()
		if f.Type != "event" {
			continue // welcome, resumed
		}
		out = append(out, f.Event+" "+committed.ReplaceAllString(string(f.Data), ""))
		if f.Event == "lead:created" && bytes.Contains(f.Data, []byte(`"first_name":"end"`)) {
			return out
		}
	}
}

// TestLogicalRendersTheTableAsCommitted: a holder that applies changes after
// later migrations renders each change with the columns and types the table
// had when the change was committed, byte for byte as trigger mode does.
func TestLogicalRendersTheTableAsCommitted(t *testing.T) {
	trig := runMigrations(t, nil)
	logi := runMigrations(t, logicalMode)
	if len(trig) != 6 {
		t.Errorf("trigger mode sent %d events, want 6:\n%s", len(trig), strings.Join(trig, "\n"))
	}
	for i := range max(len(trig), len(logi)) {
		var a, b string
		if i < len(trig) {
			a = trig[i]
		}
		if i < len(logi) {
			b = logi[i]
		}
		if a != b {
			t.Errorf("event %d differs\ntrigger: %s\nlogical: %s", i, a, b)
		}
	}
	for i, want := range []string{`"referral":"friend"`, `"changes":{"last_name":"Before rename"}`,
		`"changes":{"score":7}`, `"changes":{"budget_min":12.50}`} {
		if i < len(trig) && !strings.Contains(strings.Join(trig, "\n"), want) {
			t.Errorf("trigger mode's events lack %s", want)
		}
	}
}

// TestLogicalServeRefusesSlotOfAnotherDatabase: slot names are
// cluster-wide; a relay of a second database configured with the slot name
// another database owns refuses to start, naming that database and the
// setting to change, instead of reporting ready and never delivering.
func TestLogicalServeRefusesSlotOfAnotherDatabase(t *testing.T) {
	first := startRelay(t, logicalMode)
	var owner string
	if err := first.db.QueryRow(context.Background(), "select current_database()").Scan(&owner); err != nil {
		t.Fatal(err)
	}
	url := pg.NewDatabase(t)
	if err := crm.Setup(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	cfg := *first.cfg
	cfg.Database.URL = url
	// The schema, as an install in the old days would have left it.
	trig := cfg
	trig.Capture.Mode = config.ModeTrigger
	install(t, &trig)
	r, err := server.New(server.Options{Config: &cfg, SkipDriftCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case err := <-done:
		var setup *server.SetupError
		if !errors.As(err, &setup) || !strings.Contains(err.Error(), `belongs to database "`+owner+`"`) ||
			!strings.Contains(err.Error(), "capture.slot") {
			t.Fatalf("serve on a second database: %v", err)
		}
	case <-r.Ready():
		t.Fatal("the relay of the second database reported ready")
	case <-ctx.Done():
		t.Fatal("the relay of the second database neither refused nor stopped")
	}
}

// readyz returns /readyz's status and body.
func (e *env) readyz() (int, string) {
	resp, err := http.Get("http://" + e.relay.Addr() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestLogicalReadinessFollowsTheHolder: the publication disappears under a
// running holder (as a failed install --remove left it); the holder fails
// attempt after attempt, and /readyz says 503 with the reason and what to
// do. Once install creates the publication again, the holder recovers by
// itself: the slot, whose history lacks the publication, is recreated with a
// new history epoch, sessions are told to resync, /readyz says 200 and
// changes flow again.
func TestLogicalReadinessFollowsTheHolder(t *testing.T) {
	e := startLogicalFastRetry(t)
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'before')")
	c.event("lead:created")
	waitFor(t, func() string { return "/readyz 200" }, func() bool { code, _ := e.readyz(); return code == http.StatusOK })

	e.exec("drop publication rowcast")
	e.exec("insert into leads (team_id, first_name) values (1, 'lost')")
	var body string
	waitFor(t, func() string { return "/readyz 503; last body: " + body }, func() bool {
		var code int
		code, body = e.readyz()
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "publication rowcast does not exist") || !strings.Contains(body, "rowcast install") {
		t.Errorf("/readyz body does not say why and what to do: %q", body)
	}

	install(t, e.cfg)
	if f := c.next(); string(f.Raw) != `{"type":"resync","reason":"history_expired"}` {
		t.Fatalf("want resync after the slot was recreated, got %s", f.Raw)
	}
	waitFor(t, func() string { code, b := e.readyz(); return fmt.Sprintf("/readyz 200, have %d %q", code, b) },
		func() bool { code, _ := e.readyz(); return code == http.StatusOK })
	e.exec("insert into leads (team_id, first_name) values (1, 'after')")
	if name := c.event("lead:created").data()["lead"].(map[string]any)["first_name"]; name != "after" {
		t.Fatalf("live after recovery: %v", name)
	}
}

// TestLogicalReadinessWhenAnotherHolds: a replica that does not hold the
// slot is not ready while the replica that holds the election lock streams
// nothing (here a session that took the lock and does nothing), and is
// ready again, and delivering, once the lock is free.
func TestLogicalReadinessWhenAnotherHolds(t *testing.T) {
	e := startRelay(t, logicalMode)
	e.shutdown()
	release := e.holdLock("rowcast.slot:rowcast")
	e.logicalRetry = 100 * time.Millisecond
	e.start()
	c := e.connect(userToken(t, "2", 1))
	var body string
	waitFor(t, func() string { return "/readyz 503; last body: " + body }, func() bool {
		var code int
		code, body = e.readyz()
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "nothing has been streaming from the slot") {
		t.Errorf("/readyz body: %q", body)
	}
	release()
	waitFor(t, func() string { code, b := e.readyz(); return fmt.Sprintf("/readyz 200, have %d %q", code, b) },
		func() bool { code, _ := e.readyz(); return code == http.StatusOK })
	e.exec("insert into leads (team_id, first_name) values (1, 'after')")
	c.event("lead:created")
}

// TestLogicalExclusionsChangedUnderTheHolder: an install that excludes one
// more column while the slot holder runs keeps that column's values out of
// the changelog and the events, though the holder read the old list (the
// repeated install leaves the replica identity as it was, so the walsender
// sends no new Relation message): the apply function refuses rows rendered
// from another list than its own, and the holder's next attempt reads the
// new one. Nothing is lost.
func TestLogicalExclusionsChangedUnderTheHolder(t *testing.T) {
	e := startLogicalFastRetry(t)
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name, last_name) values (1, 'a', 'b')")
	c.event("lead:created") // the holder has read the leads' Relation message

	cfg := *e.cfg
	cfg.Tables = slices.Clone(cfg.Tables)
	for i, tb := range cfg.Tables {
		if tb.Name() == "leads" {
			cfg.Tables[i].ExcludeColumns = append(slices.Clone(tb.ExcludeColumns), "last_name")
		}
	}
	install(t, &cfg)
	e.exec("update leads set first_name = 'c', last_name = 'hush' where first_name = 'a'")
	ev := c.event("lead:updated")
	if ch := ev.data()["changes"]; fmt.Sprint(ch) != "map[first_name:c]" {
		t.Errorf("changes %v, want first_name alone", ch)
	}
	var leaked int
	err := e.db.QueryRow(t.Context(), `select count(*) from rowcast.changelog
		where concat(row_data::text, old_row::text, changes::text, old_data::text) like '%hush%'`).Scan(&leaked)
	if err != nil || leaked > 0 {
		t.Errorf("%d changelog rows hold the newly excluded column's value (%v)", leaked, err)
	}
}

// TestLogicalIdentityIndexActorDomain: with a replica identity index, the
// old row of an update holds the index's columns only, and a delete's or a
// key change's the others as null; an actor column of a NOT NULL domain
// type is then absent or null, and the holder and the apply function leave
// it so rather than failing on a cast of null (which stalled the holder).
func TestLogicalIdentityIndexActorDomain(t *testing.T) {
	e := startRelay(t, func(c *config.Config) {
		logicalMode(c)
		c.Tables = append(c.Tables, config.Table{Table: "ledger", Entity: "ledger", ActorColumn: "editor",
			ReplicaIdentityIndex: "ledger_team_id"}.WithDefaults(),
			// With a stored generated column the apply function reads the
			// whole row.
			config.Table{Table: "gledger", Entity: "gledger", ReplicaIdentityIndex: "gledger_team_id"}.WithDefaults())
	}, `create domain editor_id as bigint not null;
		create table ledger (id bigint primary key, team_id bigint not null, editor editor_id, note text);
		create unique index ledger_team_id on ledger (team_id, id);
		create table gledger (id bigint primary key, team_id bigint not null, code editor_id,
			twice bigint generated always as (id * 2) stored);
		create unique index gledger_team_id on gledger (team_id, id)`)
	c := e.connect(userToken(t, "9", 1))
	e.exec("insert into ledger values (1, 1, 5, 'a')")
	if ev := c.event("ledger:created"); ev.data()["userId"] != "5" {
		t.Errorf("created by %v, want 5", ev.data()["userId"])
	}
	e.exec("update ledger set note = 'b', editor = 6")
	if ev := c.event("ledger:updated"); ev.data()["userId"] != "6" {
		t.Errorf("updated by %v, want 6", ev.data()["userId"])
	}
	// A key change's and a delete's old rows hold the other columns as
	// null.
	e.exec("insert into ledger values (2, 1, 7, 'x')")
	c.event("ledger:created")
	e.exec("update ledger set team_id = 2 where id = 1")
	if ev := c.event("ledger:deleted"); ev.data()["entityId"] != "1" {
		t.Errorf("moved out: %s", ev.Raw)
	}
	e.exec("delete from ledger where id = 2")
	if ev := c.event("ledger:deleted"); ev.data()["entityId"] != "2" {
		t.Errorf("deleted: %s", ev.Raw)
	}
	e.exec("insert into gledger values (1, 1, 5)")
	c.event("gledger:created")
	e.exec("update gledger set code = 6")
	if ev := c.event("gledger:updated"); fmt.Sprint(ev.data()["changes"]) != "map[code:6]" {
		t.Errorf("updated: %s", ev.Raw)
	}
	e.exec("delete from gledger")
	c.event("gledger:deleted")
}
