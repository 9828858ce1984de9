package changelog_test

import (
	"slices"
	"testing"

	"github.com/rowcast/rowcast/relay"
)

// TestSetConstraintsImmediateNumbersEveryChange: SET CONSTRAINTS ALL
// IMMEDIATE in the middle of a writer's transaction (which fired the
// commit-time sequencer of schema version 1 early) changes nothing: every
// change, before and after it, is handed on in order, as one transaction.
func TestSetConstraintsImmediateNumbersEveryChange(t *testing.T) {
	d := newDB(t)
	rec := d.tail()

	tx := d.begin()
	txExec(t, tx, "insert into items (id, team_id) values (1, 7)")
	txExec(t, tx, "insert into items (id, team_id) values (2, 8)")
	txExec(t, tx, "set constraints all immediate")
	txExec(t, tx, "insert into items (id, team_id) values (3, 7)")
	txExec(t, tx, "update items set v = 1 where id = 1")
	txExec(t, tx, "insert into items (id, team_id) values (4, 9)")
	commit(t, tx)
	d.exec("insert into items (id, team_id) values (5, 7)") // a later transaction

	got := rec.waitChanges(t, 6)
	want := []key{
		{"team:7", "items", relay.OpInsert, "1"},
		{"team:8", "items", relay.OpInsert, "2"},
		{"team:7", "items", relay.OpInsert, "3"},
		{"team:7", "items", relay.OpUpdate, "1"},
		{"team:9", "items", relay.OpInsert, "4"},
		{"team:7", "items", relay.OpInsert, "5"},
	}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.txns) != 2 || len(rec.txns[0].Changes) != 5 {
		t.Fatalf("got %d transactions, want the first with all five changes together", len(rec.txns))
	}
}

// TestSetConstraintsImmediateKeepsOneCommitTime: a transaction that ran
// SET CONSTRAINTS ALL IMMEDIATE is still handed on whole, with one commit
// time, after a transaction that committed in between on another stream.
func TestSetConstraintsImmediateKeepsOneCommitTime(t *testing.T) {
	d := newDB(t)
	rec := d.tail()

	a := d.begin()
	txExec(t, a, "insert into items (id, team_id) values (1, 7)")
	txExec(t, a, "set constraints all immediate")
	d.exec("insert into items (id, team_id) values (2, 8)") // commits while A is open
	txExec(t, a, "insert into items (id, team_id) values (3, 9)")
	commit(t, a)

	got := rec.waitChanges(t, 3)
	want := []key{
		{"team:8", "items", relay.OpInsert, "2"},
		{"team:7", "items", relay.OpInsert, "1"},
		{"team:9", "items", relay.OpInsert, "3"},
	}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.txns) != 2 {
		t.Fatalf("got %d transactions, want 2", len(rec.txns))
	}
	if a := rec.txns[1].Changes; !a[0].CommittedAt.Equal(a[1].CommittedAt) || a[0].CommittedAt.IsZero() {
		t.Errorf("the transaction has commit times %v and %v, want one", a[0].CommittedAt, a[1].CommittedAt)
	}
}
