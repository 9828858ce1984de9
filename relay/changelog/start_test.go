package changelog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
)

// flushSink answers, when the tail resets it, whether the WAL was flushed
// through lsn by then.
type flushSink struct {
	*recorder
	conn    *pgx.Conn
	lsn     string
	flushed chan error
}

func (s *flushSink) Reset(epoch string, heads map[string]int64) {
	var ok bool
	err := s.conn.QueryRow(context.Background(), "select pg_current_wal_flush_lsn() >= $1::pg_lsn", s.lsn).Scan(&ok)
	if err == nil && !ok {
		err = fmt.Errorf("the heads were handed on before the WAL held %s", s.lsn)
	}
	s.flushed <- err
	s.recorder.Reset(epoch, heads)
}

// TestStartWaitsForFlush: the heads a starting tail hands to Reset include a
// commit made with synchronous_commit off; they must not be handed on before
// the WAL holds it, or a crash could give its seq to another change.
func TestStartWaitsForFlush(t *testing.T) {
	d := newDB(t)
	if pg.Embedded() == nil {
		t.Skip("outside PostgreSQL server: its WAL writer is not ours to slow down")
	}
	// A slow WAL writer leaves an asynchronous commit unflushed for seconds.
	d.exec("alter system set wal_writer_delay = '10s'")
	d.exec("select pg_reload_conf()")
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := d.conn.Exec(ctx, "alter system reset wal_writer_delay"); err != nil {
			t.Error(err)
		}
		if _, err := d.conn.Exec(ctx, "select pg_reload_conf()"); err != nil {
			t.Error(err)
		}
	})
	w := connect(t, d.url)
	if _, err := w.Exec(t.Context(), "set synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Exec(t.Context(), "insert into items (id, team_id) values (1, 7)"); err != nil {
		t.Fatal(err)
	}
	s := &flushSink{recorder: newRecorder(), conn: connect(t, d.url), flushed: make(chan error, 1)}
	if err := w.QueryRow(t.Context(), "select pg_current_wal_insert_lsn()::text").Scan(&s.lsn); err != nil {
		t.Fatal(err)
	}
	d.tailInto(s)
	if err := <-s.flushed; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.resets) != 1 || s.resets[0]["team:7"] != 1 {
		t.Fatalf("resets %v, want one with team:7 at 1", s.resets)
	}
}
