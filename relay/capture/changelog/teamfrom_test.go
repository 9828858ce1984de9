package changelog_test

import (
	"slices"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// TestTeamFromCascadeDelete: deleting a deal deletes its notes by ON DELETE
// CASCADE; the notes take their team from the deal, which is gone by the
// time their delete is captured. Each note's delete must still reach the
// deal's team.
func TestTeamFromCascadeDelete(t *testing.T) {
	d := newDB(t)
	d.exec("insert into deals (id, team_id) values (1, 7), (2, 8)")
	d.exec("insert into notes (id, deal_id) values (10, 1), (11, 1), (12, 2)")
	rec := d.tail()

	d.exec("delete from deals where id = 1")
	d.exec("delete from notes where id = 12") // a plain delete, parent there
	got := rec.waitChanges(t, 4)
	want := []key{
		{"team:7", "deals", relay.OpDelete, "1"},
		{"team:7", "notes", relay.OpDelete, "10"},
		{"team:7", "notes", relay.OpDelete, "11"},
		{"team:8", "notes", relay.OpDelete, "12"},
	}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
	for _, ch := range got {
		if ch.Table == "public.notes" && ch.OldTeamID != "" || ch.TeamID != ch.Stream[len(relay.TeamPrefix):] {
			t.Errorf("%s %s: team %q old team %q", ch.Table, ch.EntityID, ch.TeamID, ch.OldTeamID)
		}
	}

	// What the deletes left for their children goes with the next prune.
	if n := d.queryInt("select count(*) from rowcast.gone"); n == 0 {
		t.Error("rowcast.gone is empty after a parent delete: what did the children read?")
	}
	if _, err := (&changelog.Pruner{Pool: d.pool, Retention: time.Hour}).Prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := d.queryInt("select count(*) from rowcast.gone"); n != 0 {
		t.Errorf("%d rows left in rowcast.gone after a prune", n)
	}
}

// TestTeamFromCascadeDeleteImmediate: the same with the sequencer made
// immediate, which fires it after each child's change, before the next
// child looks up its team.
func TestTeamFromCascadeDeleteImmediate(t *testing.T) {
	d := newDB(t)
	d.exec("insert into deals (id, team_id) values (1, 7)")
	d.exec("insert into notes (id, deal_id) values (10, 1), (11, 1), (12, 1)")
	rec := d.tail()

	tx := d.begin()
	txExec(t, tx, "set constraints all immediate")
	txExec(t, tx, "delete from deals where id = 1")
	commit(t, tx)
	got := rec.waitChanges(t, 4)
	want := []key{
		{"team:7", "deals", relay.OpDelete, "1"},
		{"team:7", "notes", relay.OpDelete, "10"},
		{"team:7", "notes", relay.OpDelete, "11"},
		{"team:7", "notes", relay.OpDelete, "12"},
	}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
}

// TestTeamFromSetNull: a link whose deal is deleted loses its deal (ON DELETE
// SET NULL) and with it its team: it leaves the deal's team's stream.
func TestTeamFromSetNull(t *testing.T) {
	d := newDB(t)
	d.exec("insert into deals (id, team_id) values (1, 7)")
	d.exec("insert into links (id, deal_id) values (20, 1)")
	rec := d.tail()

	d.exec("delete from deals where id = 1")
	got := rec.waitChanges(t, 2)
	want := []key{
		{"team:7", "deals", relay.OpDelete, "1"},
		{"team:7", "links", relay.OpDelete, "20"},
	}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("got\n%swant %v", describe(got), want)
	}
}
