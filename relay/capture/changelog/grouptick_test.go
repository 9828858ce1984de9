package changelog_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// groupCommitBatch is a transaction inserting item id, then its COMMIT, in
// one batch, as logical mode's slot holder sends a group.
func groupCommitBatch(id int) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue("begin")
	b.Queue("insert into items (id, team_id) values ($1, 7)", id)
	b.Queue("commit")
	return b
}

// sendGroup sends b, whose group tick g follows its first n statements, and
// returns what g's Done reports.
func sendGroup(t *testing.T, conn *pgx.Conn, b *pgx.Batch, n int, g *changelog.GroupTick) (ticked, refused bool) {
	t.Helper()
	br := conn.SendBatch(t.Context(), b)
	for i := range n {
		if _, err := br.Exec(); err != nil {
			br.Close()
			t.Fatalf("statement %d of the group: %v", i, err)
		}
	}
	g.Read(br)
	return g.Done(t.Context(), conn, br.Close())
}

// groupCommit commits, on conn, a transaction that inserts item id, with a
// group tick queued after its COMMIT, and returns what the group tick's
// Done reported.
func groupCommit(t *testing.T, tk *changelog.Ticker, conn *pgx.Conn, id int) (ticked, refused bool) {
	t.Helper()
	b := groupCommitBatch(id)
	return sendGroup(t, conn, b, 3, tk.QueueTick(b))
}

// prepared connects to d and prepares the group tick's statements of tk.
func prepared(t *testing.T, d *db, tk *changelog.Ticker) *pgx.Conn {
	t.Helper()
	conn := connect(t, d.url)
	if err := tk.PrepareTick(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	return conn
}

// groupTicking starts a database with a tick recorded, a reader that polls
// only when poked (or at its start), a ticker of that reader that does not
// run, and a connection prepared for its group ticks.
func groupTicking(t *testing.T) (*db, *recorder, *changelog.Tail, *changelog.Ticker, *pgx.Conn) {
	t.Helper()
	d := newDB(t)
	d.exec("select rowcast.tick()")
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	tk := changelog.NewTicker(d.url, changelog.TickerOptions{Reader: tl})
	return d, rec, tl, tk, prepared(t, d, tk)
}

// waitingForTheTick counts the sessions of this database waiting for
// rowcast.tick's lock.
const waitingForTheTick = `select count(*) from pg_locks where locktype = 'advisory' and not granted
  and database = (select oid from pg_database where datname = current_database()) and objid = hashtext('rowcast.tick')::oid`

// TestGroupTickRecordsTheCommitsTick: a tick queued after another
// connection's COMMIT records the tick that shows the commit and hands its
// changes to the ticker's reader, with no look of the ticker (it does not
// run) and no poll of the reader. A group tick that finds its commit
// ticked already, by a tick recorded between the commit and itself,
// records nothing and reports it ticked.
func TestGroupTickRecordsTheCommitsTick(t *testing.T) {
	d, rec, tl, tk, conn := groupTicking(t)
	polls := changelog.Polls(tl)
	var want []key
	for i := 1; i <= 3; i++ {
		if ticked, refused := groupCommit(t, tk, conn, i); !ticked || refused {
			t.Fatalf("group commit %d: ticked %v, refused %v", i, ticked, refused)
		}
		rec.waitChanges(t, i)
		want = append(want, key{"team:7", "items", relay.OpInsert, strconv.Itoa(i)})
	}
	if got := rec.changes(); !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	if n := changelog.Polls(tl) - polls; n > 0 {
		t.Errorf("the reader polled %d times for three group ticks read for it, want none", n)
	}

	// The group tick waits for the tick's lock, which a transaction holds
	// that records the tick of the group's commit.
	ticks := d.queryInt("select count(*) from rowcast.ticks")
	lock := d.begin()
	txExec(t, lock, "select pg_advisory_xact_lock(hashtext('rowcast.tick'))")
	type result struct{ ticked, refused bool }
	done := make(chan result, 1)
	go func() {
		ticked, refused := groupCommit(t, tk, conn, 4)
		done <- result{ticked, refused}
	}()
	waitUntil(t, 10*time.Second, "the group tick waiting for the tick's lock", func() bool {
		return d.queryInt(waitingForTheTick) == 1
	})
	txExec(t, lock, "select rowcast.tick()")
	commit(t, lock)
	if r := <-done; !r.ticked || r.refused {
		t.Errorf("a group tick that found its commit ticked reported ticked %v, refused %v; want ticked", r.ticked, r.refused)
	}
	if n := d.queryInt("select count(*) from rowcast.ticks"); n != ticks+1 {
		t.Errorf("%d ticks recorded, want %d: the group tick's commit was ticked already", n, ticks+1)
	}
	tl.Poke(ticks + 1)
	if got := rec.waitChanges(t, 4); got[3].EntityID != "4" {
		t.Fatalf("got\n%swant item 4 last", describe(got))
	}
}

// TestGroupTickRefused: a group tick the server fails (here, the tick's
// lock held past its lock timeout) leaves the commit before it committed,
// reports it unticked and refused, and pauses group ticks; the ticker
// then ticks the commit. Prepared again, the connection records group
// ticks once the pause is over.
func TestGroupTickRefused(t *testing.T) {
	d, rec, tl, tk, conn := groupTicking(t)
	lock := d.begin()
	txExec(t, lock, "select pg_advisory_xact_lock(hashtext('rowcast.tick'))")
	if ticked, refused := groupCommit(t, tk, conn, 1); ticked || !refused {
		t.Fatalf("a group tick that waited past its lock timeout reported ticked %v, refused %v", ticked, refused)
	}
	commit(t, lock)
	var left int
	if err := conn.QueryRow(t.Context(), "select count(*) from pg_prepared_statements where statement = $1", "select rowcast.tick($1)").Scan(&left); err != nil || left != 0 {
		t.Errorf("%d group tick statements left prepared after a refusal (%v), want none: the schema may have changed under them", left, err)
	}
	if d.queryInt("select count(*) from items where id = 1") != 1 {
		t.Fatal("the commit before a refused group tick did not commit")
	}
	if tk.GroupTicks() {
		t.Error("group ticks not paused after the server refused one")
	}
	startTicker(t, d, changelog.TickerOptions{Reader: tl, PollMax: 20 * time.Millisecond})
	rec.waitChanges(t, 1)

	changelog.EndGroupPause(tk)
	if err := tk.PrepareTick(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	if ticked, refused := groupCommit(t, tk, conn, 2); !ticked || refused {
		t.Fatalf("group tick prepared again: ticked %v, refused %v", ticked, refused)
	}
}

// TestGroupTickNotifies: a group tick notifies the tailers of other
// relays, here one that only listens (it never polls), unless the ticker
// found none listening; one recorded without a notification after that
// answer lapsed is notified after all. Without Listen (capture.notify
// off), none is.
func TestGroupTickNotifies(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	tl := startTail(t, d, newRecorder(), changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	other := newRecorder()
	startTail(t, d, other, changelog.TailOptions{Listen: true, PollMin: time.Hour, PollMax: time.Hour})
	tk := changelog.NewTicker(d.url, changelog.TickerOptions{Reader: tl, Listen: true})
	conn := prepared(t, d, tk)
	if ticked, _ := groupCommit(t, tk, conn, 1); !ticked {
		t.Fatal("not ticked")
	}
	other.waitChanges(t, 1)

	listener := connect(t, d.url)
	if _, err := listener.Exec(t.Context(), "listen "+changelog.TickChannel); err != nil {
		t.Fatal(err)
	}
	silent := changelog.NewTicker(d.url, changelog.TickerOptions{Reader: tl})
	for i, tc := range []struct {
		name                 string
		tk                   *changelog.Ticker
		quiet, lapse, notify bool
	}{
		{"quiet", tk, true, false, false},
		{"quiet, lapsed", tk, true, true, true},
		{"without Listen", silent, false, false, false},
		{"without Listen, quiet, lapsed", silent, true, true, false},
	} {
		if tc.quiet {
			changelog.SetQuiet(tc.tk, time.Now().Add(time.Hour))
		}
		b := groupCommitBatch(2 + i)
		g := tc.tk.QueueTick(b)
		if tc.lapse {
			changelog.LapseQuiet(g)
		}
		if ticked, _ := sendGroup(t, conn, b, 3, g); !ticked {
			t.Fatal("not ticked")
		}
		d.exec("select pg_notify($1, 'marker')", changelog.TickChannel)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		n, err := listener.WaitForNotification(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if notified := n.Payload != "marker"; notified != tc.notify {
			t.Errorf("%s: first notification %q, want the tick's %v", tc.name, n.Payload, tc.notify)
		}
		for n.Payload != "marker" {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			n, err = listener.WaitForNotification(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestTickerQuietOnlyAlone: a ticker whose relay's reader is the only one
// listening lets its ticks, and group ticks, go without a notification;
// once another reader listens, it notifies them again.
func TestTickerQuietOnlyAlone(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	tl := startTail(t, d, newRecorder(), changelog.TailOptions{Listen: true, PollMin: time.Hour, PollMax: time.Hour})
	tk := startTicker(t, d, changelog.TickerOptions{Reader: tl, LocalListener: tl.ListenerPID, PollMax: 20 * time.Millisecond})
	waitUntil(t, 10*time.Second, "the ticker quiet while its reader listens alone", func() bool { return changelog.Quiet(tk.Ticker) })
	startTail(t, d, newRecorder(), changelog.TailOptions{Listen: true, PollMin: time.Hour, PollMax: time.Hour})
	waitUntil(t, 10*time.Second, "the ticker notifying once another reader listens", func() bool { return !changelog.Quiet(tk.Ticker) })
}

// TestTickerTicksInTurnWhateverTheIsolation: with the database's default
// isolation repeatable read, a tick of the ticker, or of a replay, that
// waited for rowcast.tick's lock while another recorded the tick of the
// same commit finds it recorded (its statements take their snapshots after
// the lock, as in read committed) rather than fail: the ticker would drop
// its connection and the ticker lock with it, the replay its resume.
func TestTickerTicksInTurnWhateverTheIsolation(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	d.exec("do $$ begin execute format('alter database %I set default_transaction_isolation = ''repeatable read''', current_database()); end $$")
	d.exec("insert into items (id, team_id) values (1, 7)")
	var mu sync.Mutex
	lost := false
	// The ticker looks when rung, and at its start, which ticks item 1.
	tk := startTicker(t, d, changelog.TickerOptions{PollMin: time.Hour, PollMax: time.Hour,
		OnHolding: func(h bool) { mu.Lock(); lost = lost || !h; mu.Unlock() }})
	tk.wait(t, "the tick of item 1")

	// The ticker's look begins once item 2 is committed and waits for the
	// lock while another records the tick of item 2.
	lock, err := connect(t, d.url).BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	txExec(t, lock, "select pg_advisory_xact_lock(hashtext('rowcast.tick'))")
	d.exec("insert into items (id, team_id) values (2, 7)")
	tk.Ring()
	waitUntil(t, 10*time.Second, "the ticker waiting for the tick's lock", func() bool { return d.queryInt(waitingForTheTick) == 1 })
	txExec(t, lock, "select rowcast.tick()")
	commit(t, lock)
	d.exec("insert into items (id, team_id) values (3, 7)")
	tk.Ring()
	tk.wait(t, "the tick of item 3")
	mu.Lock()
	if lost {
		t.Error("the ticker lost its lock (its tick failed) after waiting for another's")
	}
	mu.Unlock()

	lock, err = connect(t, d.url).BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	txExec(t, lock, "select pg_advisory_xact_lock(hashtext('rowcast.tick'))")
	d.exec("insert into items (id, team_id) values (4, 7)")
	replayed := make(chan error, 1)
	from := d.at(relay.Pos{})
	go func() {
		replayed <- changelog.NewHistory(d.pool).Replay(t.Context(), []string{"team:7"}, from, func([]relay.Change) error { return nil })
	}()
	waitUntil(t, 10*time.Second, "the replay's tick waiting for the tick's lock", func() bool { return d.queryInt(waitingForTheTick) == 1 })
	txExec(t, lock, "select rowcast.tick()")
	commit(t, lock)
	if err := <-replayed; err != nil {
		t.Errorf("a replay whose tick waited for another's: %v", err)
	}
}
