package changelog_test

import (
	"slices"
	"testing"

	"github.com/rowcast/rowcast/relay"
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
