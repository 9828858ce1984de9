package changelog_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// TestPruneIgnoresStatementTimeout: a statement timeout set for the
// database shorter than a prune's delete would fail every prune, and the
// history would grow without end.
func TestPruneIgnoresStatementTimeout(t *testing.T) {
	d := newDB(t)
	d.exec("insert into items (id, team_id) select g, 7 from generate_series(1, 20000) g")
	d.tick()
	d.exec("update rowcast.ticks set at = now() - interval '2 hours'")
	d.exec("insert into items (id, team_id) values (0, 7)")
	d.tick()
	d.exec("do $$ begin execute format('alter database %I set statement_timeout = 1', current_database()); end $$")
	pool, err := pgxpool.New(t.Context(), d.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	n, err := (&changelog.Pruner{Pool: pool, Retention: time.Hour}).Prune(t.Context())
	if err != nil || n != 20000 {
		t.Fatalf("pruned %d rows (%v), want 20000", n, err)
	}
}

// TestPrune: Prune deletes the batches of the ticks recorded before the
// retention, records per stream the last tick that held a deleted row, and
// a replay from before it is answered with ErrHistoryExpired, from it with
// what is left. A stream whose last pruned row is before the position
// (a quiet team) resumes.
func TestPrune(t *testing.T) {
	d := newDB(t)
	d.exec("insert into items (id, team_id) values (1, 7), (2, 7), (3, 8)")
	d.exec("insert into items (id, team_id) values (5, 9)")
	old := d.tick()
	d.exec("update rowcast.ticks set at = now() - interval '2 hours'")
	d.exec("insert into items (id, team_id) values (4, 7)")
	d.tick()

	p := &changelog.Pruner{Pool: d.pool, Retention: time.Hour}
	n, err := p.Prune(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("pruned %d rows, want 4", n)
	}
	if left := d.queryInt("select count(*) from rowcast.changelog"); left != 1 {
		t.Errorf("%d rows left, want 1", left)
	}
	for _, st := range []string{"team:7", "team:8", "team:9"} {
		if got := d.queryInt("select through from rowcast.pruned where stream = $1", st); got != old {
			t.Errorf("%s pruned through %d, want tick %d", st, got, old)
		}
	}
	if first := d.queryInt("select min(tick) from rowcast.ticks"); first != old {
		t.Errorf("the oldest tick kept is %d, want %d (the cut, whose snapshot bounds the next batch)", first, old)
	}

	h := changelog.NewHistory(d.pool)
	noop := func([]relay.Change) error { return nil }
	for _, from := range []relay.Pos{relay.TickEnd(old - 1), {Tick: old, Tx: 1, ID: 1}} {
		if err := h.Replay(t.Context(), []string{"team:7"}, d.at(from), noop); !errors.Is(err, relay.ErrHistoryExpired) {
			t.Errorf("replay from %+v, before pruned rows: %v, want ErrHistoryExpired", from, err)
		}
	}
	var got []relay.Change
	err = h.Replay(t.Context(), []string{"team:7", "team:8", "team:9"}, d.at(relay.TickEnd(old)), func(chs []relay.Change) error {
		got = append(got, chs...)
		return nil
	})
	if err != nil {
		t.Fatalf("replay from what was pruned: %v", err)
	}
	if len(got) != 1 || got[0].Stream != "team:7" || got[0].EntityID != "4" || got[0].Pos.Tick != old+1 {
		t.Fatalf("replayed\n%swant item 4 of team:7, in tick %d", describe(got), old+1)
	}

	// A second Prune finds nothing more and keeps the record.
	if n, err := p.Prune(t.Context()); err != nil || n != 0 {
		t.Errorf("second prune: %d, %v; want 0, nil", n, err)
	}
	if got := d.queryInt("select through from rowcast.pruned where stream = 'team:7'"); got != old {
		t.Errorf("team:7 pruned through %d after a second prune, want %d", got, old)
	}
}

// TestPrunerDefaults: a Pruner with no Interval and no Logger runs (on the
// documented one-minute default) and stops when its context ends; with an
// Interval and no Logger it prunes and logs nowhere.
func TestPrunerDefaults(t *testing.T) {
	d := newDB(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := (&changelog.Pruner{Pool: d.pool}).Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}

	d.exec("insert into items (id, team_id) values (1, 7)")
	d.tick()
	ctx, cancel = context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- (&changelog.Pruner{Pool: d.pool, Interval: time.Millisecond}).Run(ctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for d.queryInt("select count(*) from rowcast.pruned") == 0 {
		select {
		case <-tick.C:
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		case <-deadline:
			t.Fatal("nothing pruned after 10s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestTailBehindPruningStartsNewEpoch: a tail that has not read the ticks a
// prune deleted cannot hand their changes on; it must not skip them
// silently either. It starts a new epoch (every session resyncs) and goes
// on from the latest tick.
func TestTailBehindPruningStartsNewEpoch(t *testing.T) {
	d := newDB(t)
	rec := &gatedSink{recorder: newRecorder(), entered: make(chan struct{}), gate: make(chan struct{})}
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	epoch := d.queryText("select epoch::text from rowcast.meta")
	// The tail reads this and then waits in the sink, inside its poll,
	// until the ticks after it were recorded and pruned.
	d.exec("insert into items (id, team_id) values (0, 7)")
	tl.Poke(d.tick())
	<-rec.entered

	for i := 1; i <= 3; i++ {
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		d.tick()
	}
	if _, err := (&changelog.Pruner{Pool: d.pool, Retention: -time.Hour}).Prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(rec.gate)
	tl.Poke(0)
	deadline := time.After(10 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.resets)
		rec.mu.Unlock()
		if n == 2 {
			break
		}
		select {
		case <-rec.more:
		case <-deadline:
			t.Fatalf("resets %v after the prune, want a second one; changes handed on:\n%s", rec.resets, describe(rec.changes()))
		}
	}
	if now := d.queryText("select epoch::text from rowcast.meta"); now == epoch {
		t.Error("the epoch did not change")
	}
	if got := rec.changes(); len(got) != 1 {
		t.Errorf("changes handed on from a history with a gap:\n%s", describe(got))
	}
}

// gatedSink holds the first transaction with changes it is handed until
// gate is closed, having closed entered.
type gatedSink struct {
	*recorder
	entered, gate chan struct{}
	once          sync.Once
}

func (s *gatedSink) Txn(txn *relay.Txn) {
	if len(txn.Changes) > 0 {
		s.once.Do(func() { close(s.entered); <-s.gate })
	}
	s.recorder.Txn(txn)
}

// TestTailOneSnapshotPerPoll: a prune that commits after a poll looked at
// the ticks and before it read their rows does not take the rows away: the
// poll reads both in one snapshot. The test holds the changelog locked so
// that the poll waits between the two, then deletes the rows.
func TestTailOneSnapshotPerPoll(t *testing.T) {
	d := newDB(t)
	rec := newRecorder()
	var polls atomic.Int64
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour,
		OnBehind: func(int64, time.Duration) { polls.Add(1) }})
	// The first poll prepares the statements: the lock must find the poll
	// below between them, not in their preparation.
	waitUntil(t, 10*time.Second, "the first poll", func() bool { return polls.Load() > 0 })
	d.exec("insert into items (id, team_id) values (1, 7), (2, 7)")
	tick := d.tick()

	blocker := connect(t, d.url)
	tx, err := blocker.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	txExec(t, tx, "lock table rowcast.changelog in access exclusive mode")
	tl.Poke(tick)
	waitUntil(t, 10*time.Second, "the poll waits for the changelog", func() bool {
		return d.queryInt(`select count(*) from pg_stat_activity
where application_name = 'rowcast reader' and wait_event_type = 'Lock'`) == 1
	})
	txExec(t, tx, "delete from rowcast.changelog")
	commit(t, tx)
	if got := rec.waitChanges(t, 2); len(got) != 2 {
		t.Fatalf("got %d changes, want the 2 of the tick the poll looked at", len(got))
	}
}
