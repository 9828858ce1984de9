package changelog_test

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// groupCommit commits, on conn, a transaction that inserts item id with a
// group tick queued after its COMMIT, as logical mode's slot holder does,
// and returns what the group tick's Done reported.
func groupCommit(t *testing.T, tk *changelog.Ticker, conn *pgx.Conn, id int) bool {
	t.Helper()
	b := &pgx.Batch{}
	b.Queue("begin")
	b.Queue("insert into items (id, team_id) values ($1, 7)", id)
	b.Queue("commit")
	g := tk.QueueTick(b)
	br := conn.SendBatch(t.Context(), b)
	for range 3 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			t.Fatalf("group commit of item %d: %v", id, err)
		}
	}
	g.Read(br)
	return g.Done(br.Close())
}

// TestGroupTickRecordsTheCommitsTick: a tick queued after another
// connection's COMMIT records the tick that shows the commit and hands its
// changes to the ticker's reader, with no look of the ticker (it does not
// run) and no poll of the reader; a group tick that finds its commit
// ticked already records nothing and reports it ticked.
func TestGroupTickRecordsTheCommitsTick(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	tk := changelog.NewTicker(d.url, changelog.TickerOptions{Reader: tl})
	conn := connect(t, d.url)
	if err := tk.PrepareTick(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	polls := changelog.Polls(tl)
	var want []key
	for i := 1; i <= 3; i++ {
		if !groupCommit(t, tk, conn, i) {
			t.Fatalf("group commit %d: not ticked", i)
		}
		rec.waitChanges(t, i)
		want = append(want, key{"team:7", "items", relay.OpInsert, string(rune('0' + i))})
	}
	if got := rec.changes(); !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	if n := changelog.Polls(tl) - polls; n > 0 {
		t.Errorf("the reader polled %d times for three group ticks read for it, want none", n)
	}

	// A tick recorded between the commit and the group tick.
	ticks := d.queryInt("select count(*) from rowcast.ticks")
	b := &pgx.Batch{}
	b.Queue("select rowcast.tick()")
	g := tk.QueueTick(b)
	br := conn.SendBatch(t.Context(), b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	g.Read(br)
	if !g.Done(br.Close()) {
		t.Errorf("a group tick that found its commit ticked reported it unticked")
	}
	if n := d.queryInt("select count(*) from rowcast.ticks"); n != ticks {
		t.Errorf("%d ticks recorded, want %d: one for nothing", n, ticks)
	}
}

// TestGroupTickRefused: a group tick the server fails (here, the tick's
// lock waited for past lock_timeout) leaves the commit before it
// committed, reports it unticked, and pauses group ticks; the ticker
// then ticks the commit.
func TestGroupTickRefused(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	tk := changelog.NewTicker(d.url, changelog.TickerOptions{Reader: tl})
	conn := connect(t, d.url)
	if err := tk.PrepareTick(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "set lock_timeout = 100"); err != nil {
		t.Fatal(err)
	}
	lock := d.begin()
	txExec(t, lock, "select pg_advisory_xact_lock(hashtext('rowcast.tick'))")
	if groupCommit(t, tk, conn, 1) {
		t.Fatal("a group tick that waited past lock_timeout reported its commit ticked")
	}
	commit(t, lock)
	if d.queryInt("select count(*) from items where id = 1") != 1 {
		t.Fatal("the commit before a refused group tick did not commit")
	}
	if tk.GroupTicks() {
		t.Error("group ticks not paused after the server refused one")
	}
	startTicker(t, d, changelog.TickerOptions{Reader: tl, PollMax: 20 * time.Millisecond})
	rec.waitChanges(t, 1)
}
