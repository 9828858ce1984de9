package changelog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay"
)

// flushSink answers, when the tail hands it a transaction, whether the WAL
// was flushed through lsn by then.
type flushSink struct {
	*recorder
	conn    *pgx.Conn
	lsn     string        // set before known is closed
	known   chan struct{} // closed once lsn is set
	flushed chan error
}

func (s *flushSink) Txn(txn *relay.Txn) {
	if len(txn.Changes) > 0 {
		<-s.known
		var ok bool
		err := s.conn.QueryRow(context.Background(), "select pg_current_wal_flush_lsn() >= $1::pg_lsn", s.lsn).Scan(&ok)
		if err == nil && !ok {
			err = fmt.Errorf("a change was handed on before the WAL held %s", s.lsn)
		}
		select {
		case s.flushed <- err:
		default:
		}
	}
	s.recorder.Txn(txn)
}

// TestTickCoversOnlyDurableCommits: a commit made with synchronous_commit
// off is visible before the WAL holds it, and a crash could forget it and
// give its transaction id to another; it must not be handed on before the
// WAL holds it. The tick that covers it commits durably (even where the
// database's default is off), which flushes it too.
func TestTickCoversOnlyDurableCommits(t *testing.T) {
	d := newDB(t)
	if pg.Embedded() == nil {
		t.Skip("outside PostgreSQL server: its WAL writer is not ours to slow down")
	}
	// A slow WAL writer leaves an asynchronous commit unflushed for
	// seconds, and every connection commits asynchronously unless it says
	// otherwise.
	d.exec("alter system set wal_writer_delay = '10s'")
	d.exec("select pg_reload_conf()")
	d.exec("do $$ begin execute format('alter database %I set synchronous_commit = off', current_database()); end $$")
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := d.conn.Exec(ctx, "alter system reset wal_writer_delay"); err != nil {
			t.Error(err)
		}
		if _, err := d.conn.Exec(ctx, "select pg_reload_conf()"); err != nil {
			t.Error(err)
		}
	})
	s := &flushSink{recorder: newRecorder(), conn: connect(t, d.url), known: make(chan struct{}), flushed: make(chan error, 1)}
	d.tailInto(s)
	// The insert position read inside the writer's transaction, after its
	// change: past the change's WAL, before its commit record. (Read after
	// the commit it could include WAL others wrote since, which nothing
	// asked to flush.) Unflushed, the change's own WAL is behind it too.
	tx := d.begin()
	txExec(t, tx, "insert into items (id, team_id) values (1, 7)")
	if err := tx.QueryRow(t.Context(), "select pg_current_wal_insert_lsn()::text").Scan(&s.lsn); err != nil {
		t.Fatal(err)
	}
	commit(t, tx)
	close(s.known)
	if err := <-s.flushed; err != nil {
		t.Fatal(err)
	}
	if got := s.waitChanges(t, 1); got[0].EntityID != "1" {
		t.Fatalf("got\n%s", describe(got))
	}
}
