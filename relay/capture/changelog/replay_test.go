package changelog_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// TestReplayWindowsMatchTail: a replay from any position hands on exactly
// what the tail handed on after it, for the streams asked, in the same
// order and at the same positions, whatever its page size and window:
// across ticks with nothing for the stream, transactions of several rows
// split by a page, and a transaction open over many ticks that arrives at
// its commit.
func TestReplayWindowsMatchTail(t *testing.T) {
	d := newDB(t)
	rec := d.tail()
	long := d.begin()
	txExec(t, long, "insert into items (id, team_id) values (1000, 7)")
	id, total := 0, 0
	for i := range 30 {
		id++
		d.exec("insert into items (id, team_id) values ($1, 8)", id)
		total++
		if i%3 == 0 {
			// Two teams' rows in one transaction: a page of one stream's
			// can end before the transaction's last row.
			tx := d.begin()
			for _, team := range []int{7, 8, 7} {
				id++
				txExec(t, tx, "insert into items (id, team_id) values ($1, $2)", id, team)
			}
			commit(t, tx)
			total += 3
		}
		switch i {
		case 15:
			txExec(t, long, "update items set v = 1 where id = 1000")
		case 20:
			commit(t, long)
			total += 2
		}
		d.exec("select rowcast.tick()")
	}
	all := rec.waitChanges(t, total)
	rec.mu.Lock()
	start := rec.resets[0]
	rec.mu.Unlock()

	h := changelog.NewHistory(d.pool)
	for _, streams := range [][]string{{"team:7"}, {"team:7", "team:8"}} {
		var want []relay.Change
		for _, ch := range all {
			if slices.Contains(streams, ch.Stream) {
				want = append(want, ch)
			}
		}
		for _, p := range []struct {
			page int
			span int64
		}{{1, 1}, {2, 1}, {3, 4}, {2000, 64}} {
			changelog.SetPaging(h, p.page, p.span)
			from := append([]relay.Pos{start}, positions(want)...)
			for i, after := range from {
				var got []relay.Change
				err := h.Replay(t.Context(), streams, d.at(after), func(chs []relay.Change) error {
					if len(chs) > p.page {
						t.Errorf("a page of %d changes, more than %d", len(chs), p.page)
					}
					got = append(got, chs...)
					if len(got) > len(want) {
						return errors.New("more changes than the tail handed on")
					}
					return nil
				})
				if err != nil {
					t.Fatalf("%v page %d span %d, replay after %+v: %v", streams, p.page, p.span, after, err)
				}
				if g, w := describePos(got), describePos(want[i:]); g != w {
					t.Fatalf("%v page %d span %d, replay after %+v:\n%swant\n%s", streams, p.page, p.span, after, g, w)
				}
			}
		}
	}
}

func positions(chs []relay.Change) []relay.Pos {
	out := make([]relay.Pos, len(chs))
	for i, ch := range chs {
		out[i] = ch.Pos
	}
	return out
}

// describePos is describe with what a replay must reproduce exactly: the
// commit time and the row too.
func describePos(chs []relay.Change) string {
	s := ""
	for i, k := range keys(chs) {
		s += fmt.Sprintf("  %v %s %s\n", k, chs[i].CommittedAt.Format(time.RFC3339Nano), chs[i].Row)
	}
	return s + describe(chs)
}

// BenchmarkReplayFarBehind replays one team's changes, 20 per tick, from
// the start: in windows of ticks (as Replay does) and in one window up to
// the head (as it did, each page reading everything after its position).
// Compare each against the other at the two sizes: the windowed replay's
// time per change stays flat, the other's grows with the backlog.
func BenchmarkReplayFarBehind(b *testing.B) {
	for _, n := range []int{4000, 16000} {
		d := newDB(b)
		from := d.at(relay.TickEnd(d.queryInt("select max(tick) from rowcast.ticks")))
		for i := 0; i < n; i += 20 {
			d.exec("insert into items (id, team_id) select g, 7 from generate_series($1::bigint, $1::bigint + 19) g", i)
			d.exec("select rowcast.tick()")
		}
		h := changelog.NewHistory(d.pool)
		for _, w := range []struct {
			name string
			span int64
		}{{"windows", 64}, {"to-head", 1 << 40}} {
			b.Run(fmt.Sprintf("changes=%d/%s", n, w.name), func(b *testing.B) {
				changelog.SetPaging(h, 2000, w.span)
				for b.Loop() {
					got := 0
					if err := h.Replay(b.Context(), []string{"team:7"}, from, func(chs []relay.Change) error {
						got += len(chs)
						return nil
					}); err != nil {
						b.Fatal(err)
					}
					if got != n {
						b.Fatalf("replayed %d, want %d", got, n)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/change")
			})
		}
	}
}

// TestReplayRefusesAnotherEpoch: once the history started again
// (rowcast.tick's reset, when transaction ids went back), a position of
// the old epoch names other changes: its replay is answered with
// ErrHistoryExpired, also before this relay's reader noticed the reset.
func TestReplayRefusesAnotherEpoch(t *testing.T) {
	d := newDB(t)
	before := d.at(relay.TickEnd(d.queryInt("select max(tick) from rowcast.ticks")))
	d.exec("insert into items (id, team_id) values (1, 7)")
	d.tick()
	h := changelog.NewHistory(d.pool)
	var got []relay.Change
	if err := h.Replay(t.Context(), []string{"team:7"}, before, func(chs []relay.Change) error {
		got = append(got, chs...)
		return nil
	}); err != nil || len(got) != 1 {
		t.Fatalf("replay of the epoch: %d changes (%v), want 1", len(got), err)
	}
	d.exec("update rowcast.meta set epoch = gen_random_uuid()")
	err := h.Replay(t.Context(), []string{"team:7"}, before, func([]relay.Change) error { return nil })
	if !errors.Is(err, relay.ErrHistoryExpired) {
		t.Fatalf("replay of the epoch before: %v, want ErrHistoryExpired", err)
	}
}
