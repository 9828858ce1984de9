package server_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestLogicalDroppedTypeDoesNotStall: a change to a column of an enum type
// that was dropped (with the column) before the holder decoded the change
// is delivered with the value's text, as trigger mode renders an enum,
// instead of failing every attempt at that position (format_type names a
// type that no longer exists "???").
func TestLogicalDroppedTypeDoesNotStall(t *testing.T) {
	e := startRelay(t, logicalMode, "create type mood as enum ('calm', 'busy')", "alter table leads add column mood mood")
	since := startPosition(t, e)
	e.shutdown()
	e.exec("insert into leads (team_id, first_name, mood) values (1, 'moody', 'busy')")
	e.exec("alter table leads drop column mood")
	e.exec("drop type mood")
	e.start()
	c, err := e.dial(userToken(t, "9", 1), "since="+since, nil)
	if err != nil {
		t.Fatal(err)
	}
	for {
		f := c.next()
		if f.Type != "event" || f.Event != "lead:created" {
			continue // welcome, resumed, the demo's own rows
		}
		lead, _ := f.data()["lead"].(map[string]any)
		if lead["first_name"] != "moody" {
			continue
		}
		if lead["mood"] != "busy" {
			t.Errorf("mood %v, want busy: %s", lead["mood"], f.Raw)
		}
		return
	}
}

// TestLogicalApplyUndefinedObjectIsNotAMissingPublication: undefined_object
// (42704) raised while writing the changelog (here by a trigger on
// rowcast.logical_state) is an apply failure: the holder retries it and
// reports failing, and it neither recreates the slot nor starts a new
// history epoch, which pgoutput's missing publication (the same SQLSTATE,
// on the replication connection) calls for. Once the cause is gone, the
// change is delivered.
func TestLogicalApplyUndefinedObjectIsNotAMissingPublication(t *testing.T) {
	e := startLogicalFastRetry(t)
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'before')")
	c.event("lead:created")
	epoch := func() string {
		var s string
		if err := e.db.QueryRow(context.Background(), "select epoch::text from rowcast.meta").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := epoch()

	e.exec(`create function public.undefined_object() returns trigger language plpgsql as $$
		begin raise exception 'no such object' using errcode = 'undefined_object'; end $$`)
	e.exec(`create trigger undefined_object before insert or update on rowcast.logical_state
		for each row execute function public.undefined_object()`)
	e.exec("insert into leads (team_id, first_name) values (1, 'during')")
	var body string
	waitFor(t, func() string { return "/readyz 503; last body: " + body }, func() bool {
		var code int
		code, body = e.readyz()
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "no such object") || strings.Contains(body, "publication") {
		t.Errorf("/readyz body: %q, want the apply failure", body)
	}
	if after := epoch(); after != before {
		t.Fatalf("the history epoch changed from %s to %s on an apply failure", before, after)
	}

	e.exec("drop trigger undefined_object on rowcast.logical_state")
	f := c.next()
	if f.Type != "event" || f.Event != "lead:created" {
		t.Fatalf("after the cause is gone: want lead:created, got %s", f.Raw)
	}
	if name := f.data()["lead"].(map[string]any)["first_name"]; name != "during" {
		t.Fatalf("after the cause is gone: lead %v, want during", name)
	}
}

// TestLogicalSynchronousStandbyDown: with a synchronous standby configured
// that is not there, commits that wait for it never end; the holder writes
// the changelog with synchronous_commit = local, so capture goes on.
func TestLogicalSynchronousStandbyDown(t *testing.T) {
	e := startRelay(t, logicalMode, "create table sync_probe (id int)")
	ctx := context.Background()
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'before')")
	c.event("lead:created")

	// Commits that wait for the standby are released when the setting is
	// reset, which runs first among the cleanups (before the relay stops).
	var mu sync.Mutex
	var probes []*probe
	t.Cleanup(func() {
		if _, err := e.db.Exec(ctx, "alter system reset synchronous_standby_names"); err != nil {
			t.Error(err)
		}
		if _, err := e.db.Exec(ctx, "select pg_reload_conf()"); err != nil {
			t.Error(err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range probes {
			<-p.done
			p.conn.Close(ctx)
		}
	})
	e.exec("alter system set synchronous_standby_names = 'rowcast_test_absent_standby'")
	e.exec("select pg_reload_conf()")
	// The checkpointer applies the setting a moment after the reload: wait
	// until a commit waits for the standby.
	waitFor(t, func() string { return "a commit to wait for the synchronous standby" }, func() bool {
		p := startProbe(t, e.url)
		mu.Lock()
		probes = append(probes, p)
		mu.Unlock()
		return p.waiting(t, e)
	})

	w, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	if _, err := w.Exec(ctx, "set synchronous_commit = local"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Exec(ctx, "insert into leads (team_id, first_name) values (1, 'during')"); err != nil {
		t.Fatal(err)
	}
	f := c.next()
	if f.Type != "event" || f.Event != "lead:created" || f.data()["lead"].(map[string]any)["first_name"] != "during" {
		t.Fatalf("with the synchronous standby down: got %s, want lead:created of during", f.Raw)
	}
	// The relay's reader disarmed its doorbell when "during" flowed and
	// arms it again once idle: those writes must not wait for the standby
	// either, or this second change never comes.
	waitFor(t, func() string { return "the relay's doorbell armed again" }, func() bool {
		var armed bool
		err := e.db.QueryRow(ctx, "select pg_sequence_last_value('rowcast.bell') is distinct from 0").Scan(&armed)
		return err == nil && armed
	})
	if _, err := w.Exec(ctx, "insert into leads (team_id, first_name) values (1, 'after')"); err != nil {
		t.Fatal(err)
	}
	f = c.next()
	if f.Type != "event" || f.Event != "lead:created" || f.data()["lead"].(map[string]any)["first_name"] != "after" {
		t.Fatalf("with the synchronous standby down, after the doorbell moved: got %s, want lead:created of after", f.Raw)
	}
}

// probe is a commit that may wait for a synchronous standby.
type probe struct {
	conn *pgx.Conn
	pid  uint32
	done chan struct{}
}

func startProbe(t *testing.T, url string) *probe {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{conn: conn, pid: conn.PgConn().PID(), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		_, _ = conn.Exec(context.Background(), "insert into sync_probe values (1)")
	}()
	return p
}

// waiting reports whether the probe's commit waits for the synchronous
// standby; false once it committed without waiting.
func (p *probe) waiting(t *testing.T, e *env) bool {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-p.done:
			return false
		case <-deadline:
			t.Fatalf("a probe commit (pid %d) neither ended nor waited for the synchronous standby", p.pid)
		case <-tick.C:
		}
		var syncRep bool
		err := e.db.QueryRow(context.Background(),
			"select exists (select 1 from pg_stat_activity where pid = $1 and wait_event = 'SyncRep')", p.pid).Scan(&syncRep)
		if err != nil {
			t.Fatal(err)
		}
		if syncRep {
			return true
		}
	}
}
