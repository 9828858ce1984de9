package changelog_test

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// TestTickerReadsItsTicksForTheReader: the ticker hands each tick it
// records, with its changes, to the reader of its process, which then
// polls for none of them; a tick of more than OfferMax changes it leaves
// to the reader to read.
func TestTickerReadsItsTicksForTheReader(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	startTicker(t, d, changelog.TickerOptions{PollMax: 20 * time.Millisecond, Reader: tl})
	var want []key
	for i := 1; i <= 5; i++ {
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		rec.waitChanges(t, i)
		want = append(want, key{"team:7", "items", relay.OpInsert, strconv.Itoa(i)})
	}
	if got := rec.changes(); !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	// The reader's first poll, when it started, may have been overtaken.
	if n := changelog.Polls(tl); n > 1 {
		t.Fatalf("the reader polled %d times for five ticks the ticker read for it, want at most once (when it started)", n)
	}

	before := changelog.Polls(tl)
	n := changelog.OfferMax + 1
	d.exec("insert into items (id, team_id) select g, 8 from generate_series(100, 99 + $1::int) g", n)
	got := rec.waitChanges(t, 5+n)
	if last := got[len(got)-1]; last.EntityID != strconv.Itoa(99+n) {
		t.Fatalf("last change %+v, want the large tick's last", last)
	}
	if changelog.Polls(tl) == before {
		t.Fatalf("the reader did not poll for a tick of %d changes: the ticker must leave it to the reader", n)
	}
}

// TestTickerReadsTheTickInItsOrder: the ticker's read of a tick holding
// two transactions that wrote in turns hands them to its reader as a poll
// reads them, at the same positions: B, which wrote last but had the lower
// highest id, before A, and A's changes in the order it wrote them.
func TestTickerReadsTheTickInItsOrder(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	rec, polled := newRecorder(), newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	startTail(t, d, polled, changelog.TailOptions{PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond})
	startTicker(t, d, changelog.TickerOptions{PollMax: 20 * time.Millisecond, Reader: tl})
	d.exec("insert into items (id, team_id) values (1, 7)")
	rec.waitChanges(t, 1) // the ticker's statements are prepared
	polls := changelog.Polls(tl)

	lock := d.begin() // no tick until both have committed
	txExec(t, lock, "select pg_advisory_xact_lock(hashtext('rowcast.tick'))")
	a := d.begin()
	txExec(t, a, "insert into items (id, team_id) values (2, 7)")
	b := d.begin()
	txExec(t, b, "insert into items (id, team_id) values (3, 8)")
	txExec(t, a, "update items set v = 1 where id = 2")
	commit(t, b)
	commit(t, a)
	commit(t, lock)

	got := rec.waitChanges(t, 4)
	want := []key{
		{"team:7", "items", relay.OpInsert, "1"},
		{"team:8", "items", relay.OpInsert, "3"},
		{"team:7", "items", relay.OpInsert, "2"},
		{"team:7", "items", relay.OpUpdate, "2"},
	}
	if !slices.Equal(keys(got), want) || got[1].Pos.Tick != got[3].Pos.Tick {
		t.Fatalf("got\n%swant %v, the last three in one tick", describe(got), want)
	}
	if n := changelog.Polls(tl); n != polls {
		t.Fatalf("the reader polled for the tick (%d polls, %d before): the ticker did not read it", n, polls)
	}
	other := polled.waitChanges(t, 4)
	for i := range got {
		if got[i].Pos != other[i].Pos || got[i].XID != other[i].XID {
			t.Fatalf("the ticker's read\n%sa poll's\n%s", describe(got), describe(other))
		}
	}
}

// TestTailTakesOnlyTheNextTickOfItsHistory: the reader takes a tick offered
// to it only when it read the tick before last, with the same epoch and
// snapshot (not a standby's that was behind, after a failover it has not
// noticed), on the connection it still has; it ignores a tick it read, and
// polls for any other. A poll that finds the tick it read last with another
// snapshot starts a new history epoch.
func TestTailTakesOnlyTheNextTickOfItsHistory(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	last := d.queryInt("select max(tick) from rowcast.ticks")
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	waitUntil(t, 10*time.Second, "the reader's first poll", func() bool { return changelog.Polls(tl) == 1 })
	epoch := d.queryText("select replace(epoch::text, '-', '') from rowcast.meta")
	snap := d.queryText("select snap::text from rowcast.ticks where tick = $1", last)
	other := strings.Replace(snap, ":", ":1", 1)
	session := changelog.Session(tl)
	made := func(tick int64, id string) []relay.Txn {
		ch := relay.Change{Stream: "team:7", Table: "public.items", Op: relay.OpInsert, EntityID: id,
			Pos: relay.Pos{Tick: tick, Tx: 1, ID: 1}}
		return []relay.Txn{{XID: 1, Changes: []relay.Change{ch}, Head: relay.TickEnd(tick)}}
	}

	changelog.Offer(t, tl, session, epoch, last, snap, snap, made(last, "read already"))          // ignored
	changelog.Offer(t, tl, session, epoch, last+1, snap, other, made(last+1, "another history"))  // polled for
	changelog.Offer(t, tl, session, "0ther", last+1, snap, snap, made(last+1, "another epoch"))   // polled for
	changelog.Offer(t, tl, session, epoch, last+2, snap, snap, made(last+2, "a tick after next")) // polled for
	changelog.Offer(t, tl, session-1, epoch, last+1, snap, snap, made(last+1, "an older connection's"))
	changelog.Offer(t, tl, session, epoch, last+1, snap, snap, made(last+1, "next"))
	got := rec.waitChanges(t, 1)
	if len(got) != 1 || got[0].EntityID != "next" {
		t.Fatalf("got\n%swant only the next tick's change", describe(got))
	}
	if n := changelog.Polls(tl); n != 5 {
		t.Fatalf("the reader polled %d times, want 5: when it started, and for the four offers it could not take", n)
	}

	// The reader now holds tick last+1 with the snapshot of tick last,
	// which the database's tick last+1 does not have.
	d.exec("insert into items (id, team_id) values (1, 7)")
	tl.Poke(d.tick())
	waitUntil(t, 10*time.Second, "a new history epoch", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.resets) == 2
	})
}

// TestTickerTicksWhenItCannotReadForTheReader: a read of its tick that the
// server fails (here, a lock it waits for past lock_timeout) undoes the
// tick; the ticker records it again without the read and leaves the reading
// to the reader, rather than stop ticking, and never reports the undone
// tick.
func TestTickerTicksWhenItCannotReadForTheReader(t *testing.T) {
	d := newDB(t)
	d.exec("select rowcast.tick()")
	rec := newRecorder()
	tl := startTail(t, d, rec, changelog.TailOptions{PollMin: time.Hour, PollMax: time.Hour})
	sep := "?"
	if strings.Contains(d.url, "?") {
		sep = "&"
	}
	var mu sync.Mutex
	var reported []int64
	startTickerAt(t, d.url+sep+"options=-c%20lock_timeout%3D100", changelog.TickerOptions{PollMax: 20 * time.Millisecond, Reader: tl,
		OnTick: func(n int64) { mu.Lock(); reported = append(reported, n); mu.Unlock() }})
	d.exec("insert into items (id, team_id) values (1, 7)")
	rec.waitChanges(t, 1) // the ticker's statements are prepared
	last := d.queryInt("select max(tick) from rowcast.ticks")

	lock := d.begin() // the ticker's read needs rowcast.meta, rowcast.tick() does not
	txExec(t, lock, "lock table rowcast.meta in access exclusive mode")
	d.exec("insert into items (id, team_id) values (2, 7)")
	waitUntil(t, 10*time.Second, "a tick recorded while the ticker cannot read its ticks", func() bool {
		return d.queryInt("select max(tick) from rowcast.ticks") > last
	})
	commit(t, lock)
	if got := rec.waitChanges(t, 2); got[1].EntityID != "2" {
		t.Fatalf("got\n%swant the two inserts", describe(got))
	}
	mu.Lock()
	defer mu.Unlock()
	for i, n := range reported { // an undone tick's number is recorded again
		if i > 0 && n <= reported[i-1] || d.queryInt("select count(*) from rowcast.ticks where tick = $1", n) != 1 {
			t.Fatalf("the ticker reported ticks %v: an undone one, or one the database does not have", reported)
		}
	}
}
