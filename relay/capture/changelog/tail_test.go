package changelog_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// TestTailCommitOrder: the tail hands transactions on in commit order, not
// in the order they wrote: B writes after A but commits first, so B comes
// first, and B is not held back while A is still open.
func TestTailCommitOrder(t *testing.T) {
	d := newDB(t)
	rec := d.tail()

	a := d.begin()
	txExec(t, a, "insert into items (id, team_id) values (1, 7)")
	b := d.begin()
	txExec(t, b, "insert into items (id, team_id) values (2, 7)")
	commit(t, b)
	got := rec.waitChanges(t, 1) // A is still open
	if want := []key{{"team:7", "items", relay.OpInsert, "2"}}; !slices.Equal(keys(got), want) {
		t.Fatalf("while A is open got\n%swant %v", describe(got), want)
	}
	txExec(t, a, "update items set v = 1 where id = 1")
	commit(t, a)
	got = rec.waitChanges(t, 3)
	want := []key{
		{"team:7", "items", relay.OpInsert, "2"},
		{"team:7", "items", relay.OpInsert, "1"},
		{"team:7", "items", relay.OpUpdate, "1"},
	}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.txns) != 2 || len(rec.txns[1].Changes) != 2 {
		t.Fatalf("got %d transactions, want B then A with its two changes together", len(rec.txns))
	}
	if len(rec.resets) != 1 || rec.resets[0] != relay.TickEnd(1) {
		t.Fatalf("resets %v, want one at the end of tick 1 (the install's)", rec.resets)
	}
}

// TestTailResetHead: Reset names the end of the latest tick when the tail
// starts, and the tail hands on only what follows.
func TestTailResetHead(t *testing.T) {
	d := newDB(t)
	d.exec("insert into items (id, team_id) values (1, 7), (2, 7), (3, 8)")
	last := d.tick()
	rec := d.tail()
	d.exec("insert into items (id, team_id) values (4, 8)")
	got := rec.waitChanges(t, 1)
	if want := []key{{"team:8", "items", relay.OpInsert, "4"}}; !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.resets) != 1 || rec.resets[0] != relay.TickEnd(last) {
		t.Fatalf("resets %v, want one at the end of tick %d", rec.resets, last)
	}
	if got[0].Pos.Tick != last+1 {
		t.Fatalf("the change came in tick %d, want %d", got[0].Pos.Tick, last+1)
	}
}

// TestTailReportsBehind: each poll reports the ticks it found recorded and
// not yet read: the ticks recorded while the tail was held up, then none
// once it caught up.
func TestTailReportsBehind(t *testing.T) {
	d := newDB(t)
	rec := &gatedSink{recorder: newRecorder(), entered: make(chan struct{}), gate: make(chan struct{})}
	reports := make(chan int64, 100)
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour,
		OnBehind: func(n int64, age time.Duration) {
			if (n == 0) != (age == 0) || age < 0 || age > time.Minute {
				t.Errorf("reported %d ticks behind, the oldest %v old", n, age)
			}
			reports <- n
		}})
	// The tail waits in the sink, inside its poll, while five more ticks
	// are recorded.
	d.exec("insert into items (id, team_id) values (0, 7)")
	tl.Poke(d.tick())
	<-rec.entered
	for i := 1; i <= 5; i++ {
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		d.tick()
	}
	close(rec.gate)
	var got []int64
	deadline := time.After(10 * time.Second)
	for !slices.Contains(got, 5) || got[len(got)-1] != 0 {
		tl.Poke(0)
		select {
		case n := <-reports:
			got = append(got, n)
		case <-deadline:
			t.Fatalf("%d reports, the highest %d, the last %v; want 5 (the ticks recorded while it was held up), then 0",
				len(got), slices.Max(append(got, -1)), got[max(0, len(got)-1):])
		}
	}
}

// TestTailLargeTransactionInParts: a transaction of 2,500 changes is handed
// on in parts of 1,000, 1,000 and 500, each but the last marked More, each
// part's head its last change's position; the changes are all there, in
// order, and the next transaction follows whole.
func TestTailLargeTransactionInParts(t *testing.T) {
	d := newDB(t)
	rec := d.tail()
	tx := d.begin()
	txExec(t, tx, "insert into items (id, team_id) select g, 7 from generate_series(1, 2500) g")
	commit(t, tx)
	d.exec("insert into items (id, team_id) values (9999, 7)")
	all := rec.waitChanges(t, 2501)
	if len(all) != 2501 {
		t.Fatalf("%d changes handed on, want 2501", len(all))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var sizes []int
	var more []bool
	for _, txn := range rec.txns {
		if len(txn.Changes) == 0 {
			continue
		}
		sizes, more = append(sizes, len(txn.Changes)), append(more, txn.More)
		if txn.More && txn.Head != txn.Changes[len(txn.Changes)-1].Pos {
			t.Errorf("a part's head %+v, want its last change's %+v", txn.Head, txn.Changes[len(txn.Changes)-1].Pos)
		}
	}
	if want := []int{1000, 1000, 500, 1}; !slices.Equal(sizes, want) {
		t.Errorf("transactions of %v changes, want %v", sizes, want)
	}
	if want := []bool{true, true, false, false}; !slices.Equal(more, want) {
		t.Errorf("More %v, want %v", more, want)
	}
}

// TestTailWaitsForASlowDatabase: a poll held up past StallTimeout by a
// database that still answers (here a lock on the changelog) is not cut:
// the probe finds the database there, the reader stays connected and
// reads the change once the lock goes. The stall timeout leaves the probe
// (a new connection and a query) half a second: under -race, with other
// packages' tests on the same two cores, 200 ms once did not suffice.
func TestTailWaitsForASlowDatabase(t *testing.T) {
	d := newDB(t)
	var lost atomic.Int32
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{StallTimeout: 500 * time.Millisecond,
		OnConnected: func(v bool) {
			if !v {
				lost.Add(1)
			}
		}})
	d.exec("insert into items (id, team_id) values (1, 7)")
	d.tick()
	lock := d.begin()
	txExec(t, lock, "lock table rowcast.changelog in access exclusive mode")
	tl.Poke(0)
	// The poll waits for the lock, then for five stall timeouts (and
	// probes, on connections of their own) more: the fault this test holds.
	deadline := time.Now().Add(30 * time.Second)
	for d.queryInt("select count(*) from pg_locks where not granted and relation = 'rowcast.changelog'::regclass") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the poll never waited for the lock")
		}
		tl.Poke(0)
		<-time.After(10 * time.Millisecond)
	}
	<-time.After(5 * 500 * time.Millisecond)
	commit(t, lock)
	rec.waitChanges(t, 1)
	if n := lost.Load(); n != 0 {
		t.Fatalf("the reader dropped its connection %d times while the database answered", n)
	}
}

// The reader's connections are named in pg_stat_activity ("rowcast
// reader", "rowcast listener"), so that a database's operator, and bench's
// CPU split, can tell them apart.
func TestTailNamesItsConnections(t *testing.T) {
	d := newDB(t)
	startTail(t, d, newRecorder(), changelog.TailOptions{Listen: true, PollMin: time.Hour, PollMax: time.Hour})
	conn, err := pgx.Connect(t.Context(), d.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	var names []string
	if err := conn.QueryRow(t.Context(), `select coalesce(array_agg(application_name order by application_name), '{}')
from pg_stat_activity where datname = current_database() and application_name like 'rowcast %'`).Scan(&names); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"rowcast listener", "rowcast reader"}) {
		t.Errorf("the tail's connections are named %q, want rowcast listener and rowcast reader", names)
	}
}

// TestTailHeardPollsOnlyAtTicks: once its listener is known to the ticker,
// the reader reads at each tick announced (poked by its own process's
// ticker, notified by another's) and does not poll after it: a change
// costs one poll, not a backoff of empty ones (polling is the backstop,
// every PollMax).
func TestTailHeardPollsOnlyAtTicks(t *testing.T) {
	for _, local := range []bool{true, false} {
		name := map[bool]string{true: "poked", false: "notified"}[local]
		t.Run(name, func(t *testing.T) {
			d := newDB(t)
			d.exec("select rowcast.tick()")
			var empty atomic.Int64 // polls that found no tick
			rec := newRecorder()
			tl := startTail(t, d, rec, changelog.TailOptions{Listen: true, PollMin: time.Millisecond, PollMax: time.Hour,
				OnBehind: func(n int64, _ time.Duration) {
					if n == 0 {
						empty.Add(1)
					}
				}})
			to := changelog.TickerOptions{PollMax: 20 * time.Millisecond}
			if local {
				to.OnTick, to.LocalListener = tl.Poke, tl.ListenerPID
			}
			startTicker(t, d, to)
			// From the poll that counts on announcements on, no poll is
			// timed: each answers a tick's announcement, and finds it.
			waitUntil(t, 10*time.Second, "the reader counts on announcements", func() bool { return changelog.Announced(tl) })
			before := empty.Load()
			// Each change comes a commit and a tick after the one before
			// was read: polls backing off from PollMin (1 ms) would look
			// in between, and find nothing.
			for i := 1; i <= 5; i++ {
				d.exec("insert into items (id, team_id) values ($1, 7)", i)
				rec.waitChanges(t, i)
			}
			if n := empty.Load() - before; n > 0 {
				t.Fatalf("%d empty polls among 5 changes, want none (each tick announces itself)", n)
			}
		})
	}
}

// TestTailPollsOftenAfterAnUnannouncedTick: a listening reader that reads a
// tick nobody told it of (here its ticker neither pokes it nor, believing
// it local, notifies it) polls every PollMin again, rather than leave each
// change to the PollMax backstop.
func TestTailPollsOftenAfterAnUnannouncedTick(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	var polls atomic.Int64
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{Listen: true, PollMin: time.Millisecond, PollMax: time.Second,
		OnBehind: func(int64, time.Duration) { polls.Add(1) }})
	startTicker(t, d, changelog.TickerOptions{PollMax: 20 * time.Millisecond, LocalListener: tl.ListenerPID})
	waitUntil(t, 10*time.Second, "the reader counts on announcements", func() bool { return changelog.Announced(tl) })
	d.exec("insert into items (id, team_id) values (1, 7)")
	rec.waitChanges(t, 1) // by the backstop poll
	waitUntil(t, 5*time.Second, "the reader no longer counts on announcements", func() bool { return !changelog.Announced(tl) })
	// Ten polls in less time than the backstop (every second) takes for three.
	before := polls.Load()
	waitUntil(t, 3*time.Second, "ten polls", func() bool { return polls.Load()-before >= 10 })
}

// TestTailStalePokeHidesNoNotification: a poke for a tick that never
// committed (a tick whose connection died before its commit: the ticker
// or the slot holder pokes the reader, since the tick may have committed)
// must not hide the notification of the tick that does take its number,
// recorded by another relay's ticker, which would leave the change to the
// PollMax backstop.
func TestTailStalePokeHidesNoNotification(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{Listen: true, PollMin: time.Millisecond, PollMax: time.Hour})
	waitUntil(t, 10*time.Second, "the reader counts on announcements", func() bool { return changelog.Announced(tl) })
	latest := d.queryInt("select max(tick) from rowcast.ticks")
	tl.Poke(latest + 1) // a tick that rolled back
	waitUntil(t, 10*time.Second, "the reader's poll finds no such tick", func() bool { return changelog.Poked(tl) == latest })
	d.exec("insert into items (id, team_id) values (1, 7)")
	d.exec("select rowcast.tick(true)") // another relay's ticker records the number, and notifies
	rec.waitChanges(t, 1)
}

// TestCaptureIgnoresStatementTimeout: a statement_timeout set for the
// database (or the relay's role) shorter than the read of a large tick
// would fail every poll at that tick, stopping every relay's events for
// good; the reader and the ticker turn it off for themselves.
func TestCaptureIgnoresStatementTimeout(t *testing.T) {
	d := newDB(t)
	d.exec("do $$ begin execute format('alter database %I set statement_timeout = 1', current_database()); end $$")
	rec := d.tail()
	d.exec("insert into items (id, team_id) select g, 7 from generate_series(1, 20000) g")
	rec.waitChanges(t, 20000)
}
