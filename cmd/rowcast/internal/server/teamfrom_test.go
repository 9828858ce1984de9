package server_test

import (
	"testing"

	"github.com/rowcast/rowcast/config"
)

// dealNotesSchema: a note's team is its deal's organization.
const dealNotesSchema = `
create table deals (id bigint primary key, organization_id bigint not null, name text);
create table deal_notes (
    id      bigint generated always as identity primary key,
    deal_id bigint not null references deals (id),
    body    text
);
insert into deals values (1, 1, 'one'), (2, 2, 'two');`

func TestTeamFromParentTriggerMode(t *testing.T) { teamFromParent(t, nil) }
func TestTeamFromParentLogicalMode(t *testing.T) { teamFromParent(t, logicalMode) }

// teamFromParent: a table without a team column is scoped by its parent
// row's team, moves with its parent key, and a deleted row still finds it.
func teamFromParent(t *testing.T, mode func(*config.Config)) {
	e := startRelay(t, func(c *config.Config) {
		if mode != nil {
			mode(c)
		}
		c.Tables = append(c.Tables, config.Table{Table: "deal_notes",
			TeamFrom: &config.TeamFrom{Table: "deals", Key: "deal_id", Column: "organization_id"}}.WithDefaults())
	}, dealNotesSchema)
	one, two := e.connect(userToken(t, "3", 1)), e.connect(userToken(t, "4", 2))
	e.exec("insert into deal_notes (deal_id, body) values (1, 'hello')")
	if d := one.event("deal_note:created").data(); d["teamId"] != "1" || d["entityId"] != "1" {
		t.Errorf("created: %v", d)
	}
	e.exec("update deal_notes set body = 'edited' where id = 1")
	if d := one.event("deal_note:updated").data(); d["teamId"] != "1" {
		t.Errorf("updated: %v", d)
	}
	e.exec("update deal_notes set deal_id = 2 where id = 1")
	if d := one.event("deal_note:deleted").data(); d["teamId"] != "1" {
		t.Errorf("moved out: %v", d)
	}
	if d := two.event("deal_note:created").data(); d["teamId"] != "2" || body(d) != "edited" {
		t.Errorf("moved in: %v", d)
	}
	e.exec("delete from deal_notes where id = 1")
	if d := two.event("deal_note:deleted").data(); d["teamId"] != "2" {
		t.Errorf("deleted: %v", d)
	}
	// Team 1 saw nothing after the move: its next event is this one.
	e.exec("insert into deal_notes (deal_id, body) values (1, 'last')")
	if d := one.event("deal_note:created").data(); body(d) != "last" {
		t.Errorf("team 1 after the move: %v", d)
	}
}

// body is the body column of a created deal note's row, or nil.
func body(d map[string]any) any {
	row, _ := d["dealNote"].(map[string]any)
	return row["body"]
}
