package changelog_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// TestBackendCrashReusedXID: a backend that dies makes PostgreSQL recover
// from its WAL without restarting the postmaster (pg_postmaster_start_time
// does not change), forgetting asynchronous commits the WAL writer had not
// flushed, and handing their transaction ids out again. A transaction that
// gets one of them after the crash must not look finished to the last tick's
// snapshot; the tail must hand it on.
func TestBackendCrashReusedXID(t *testing.T) {
	d := newDB(t)
	if pg.Embedded() == nil {
		t.Skip("outside PostgreSQL server: cannot crash it")
	}
	ctx := t.Context()
	d.exec("create table plain (n int)") // not captured
	// A slow WAL writer leaves asynchronous commits unflushed for seconds.
	d.exec("alter system set wal_writer_delay = '10s'")
	d.exec("select pg_reload_conf()")
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), d.url)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(context.Background())
		for _, sql := range []string{"alter system reset wal_writer_delay", "select pg_reload_conf()"} {
			if _, err := c.Exec(context.Background(), sql); err != nil {
				t.Error(err)
			}
		}
	})

	rec := newRecorder()
	connected := make(chan bool, 16)
	d.tailWith(rec, changelog.TailOptions{OnConnected: func(v bool) { connected <- v }})
	<-connected // true: reading

	// Transactions that touch no captured table, committed asynchronously
	// and not flushed: a crash forgets them.
	w := connect(t, d.url)
	if _, err := w.Exec(ctx, "set synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := w.Exec(ctx, "insert into plain values (1)"); err != nil {
			t.Fatal(err)
		}
	}
	var last int64
	if err := w.QueryRow(ctx, "select max(xid::text::bigint) from (select xmin as xid from plain) x").Scan(&last); err != nil {
		t.Fatal(err)
	}
	// Wait until the ticker has looked at a snapshot that shows them
	// finished: two of its calls began after the last one.
	mon := connect(t, d.url)
	seen := map[time.Time]bool{}
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for len(seen) < 2 {
		var xs *time.Time
		if err := mon.QueryRow(ctx, `select max(xact_start) from pg_stat_activity
			where datname = current_database() and backend_xmin::text::bigint > $1 and pid <> pg_backend_pid()
			  and query like '%rowcast.tick(%'`, last).Scan(&xs); err != nil {
			t.Fatal(err)
		}
		if xs != nil {
			seen[*xs] = true
		}
		select {
		case <-deadline:
			t.Fatal("the ticker did not look past the asynchronous commits")
		case <-tick.C:
		}
	}
	var flushed bool
	if err := mon.QueryRow(ctx, "select pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()").Scan(&flushed); err != nil {
		t.Fatal(err)
	}
	if flushed {
		t.Fatal("the WAL was flushed before the crash: it forgets nothing, and this test proves nothing")
	}

	// Crash a backend: the postmaster recovers, every session is cut.
	var pid int
	if err := w.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for v := range connected {
		if v { // reading again, after the recovery
			break
		}
	}
	a := connect(t, d.url)
	var n int64
	if err := a.QueryRow(ctx, "select count(*) from plain").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 5 {
		t.Fatal("the crash forgot nothing: this test proves nothing")
	}
	if _, err := a.Exec(ctx, "insert into items (id, team_id) values (1, 7)"); err != nil {
		t.Fatal(err)
	}
	var xid int64
	if err := a.QueryRow(ctx, "select xmin::text::bigint from items where id = 1").Scan(&xid); err != nil {
		t.Fatal(err)
	}
	if xid > last {
		t.Fatalf("the new transaction got xid %d, not one the crash forgot (up to %d): this test proves nothing", xid, last)
	}
	got := rec.waitChanges(t, 1)
	if got[0].Stream != "team:7" || got[0].EntityID != "1" || got[0].Op != relay.OpInsert {
		t.Fatalf("got\n%s", describe(got))
	}
}
