package server_test

import (
	"reflect"
	"regexp"
	"testing"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay"
)

// participantsSchema has a composite primary key, one part of it text with
// the separator in it.
const participantsSchema = `
create table deal_participants (
    deal_ref text   not null,
    user_id  bigint not null,
    team_id  bigint not null,
    role     text,
    primary key (deal_ref, user_id)
)`

// runParticipants writes two participants of one deal, updates and deletes
// each, under one capture mode; it returns the event frames' data with
// committedAt removed.
func runParticipants(t *testing.T, tweak func(*config.Config)) []frame {
	e := startRelay(t, func(c *config.Config) {
		if tweak != nil {
			tweak(c)
		}
		c.Tables = append(c.Tables, config.Table{Table: "deal_participants", IDColumns: []string{"deal_ref", "user_id"}}.WithDefaults())
	}, participantsSchema)
	c := e.connect(userToken(t, "2", 1))
	for _, sql := range []string{
		"insert into deal_participants values ('d:5', 9, 1, 'buyer'), ('d:5', 10, 1, 'seller')",
		"update deal_participants set role = 'co-buyer' where user_id = 9",
		"update deal_participants set role = 'agent' where user_id = 10",
		"delete from deal_participants where user_id = 9",
		"delete from deal_participants where user_id = 10",
	} {
		e.exec(sql)
	}
	var out []frame
	for range 6 {
		out = append(out, c.next())
	}
	return out
}

func TestCompositeKeyEvents(t *testing.T) {
	modes := map[string][]frame{"trigger": runParticipants(t, nil), "logical": runParticipants(t, logicalMode)}
	id9, id10 := relay.JoinKey("d:5", "9"), relay.JoinKey("d:5", "10")
	if id9 != `d\:5:9` {
		t.Fatalf("JoinKey: %q", id9)
	}
	want := []struct {
		event, id string
		user      float64
		changes   map[string]any
	}{
		{"deal_participant:created", id9, 9, nil},
		{"deal_participant:created", id10, 10, nil},
		{"deal_participant:updated", id9, 9, map[string]any{"role": "co-buyer"}},
		{"deal_participant:updated", id10, 10, map[string]any{"role": "agent"}},
		{"deal_participant:deleted", id9, 9, nil},
		{"deal_participant:deleted", id10, 10, nil},
	}
	for mode, frames := range modes {
		for i, f := range frames {
			w := want[i]
			d := f.data()
			key := map[string]any{"deal_ref": "d:5", "user_id": w.user}
			switch {
			case f.Type != "event" || f.Event != w.event:
				t.Errorf("%s: frame %d is %s, want %s", mode, i, f.Raw, w.event)
			case d["entityId"] != w.id || d["dealParticipantId"] != w.id:
				t.Errorf("%s: %s: entityId %v, want %q: %s", mode, w.event, d["entityId"], w.id, f.Raw)
			case !reflect.DeepEqual(d["key"], key):
				t.Errorf("%s: %s: key %v, want %v: %s", mode, w.event, d["key"], key, f.Raw)
			case w.changes != nil && !reflect.DeepEqual(d["changes"], w.changes):
				t.Errorf("%s: %s: changes %v, want %v", mode, w.event, d["changes"], w.changes)
			}
		}
	}
	// Byte-identical in both modes.
	committed := regexp.MustCompile(`,"committedAt":"[^"]*"`)
	for i := range modes["trigger"] {
		a := committed.ReplaceAllString(string(modes["trigger"][i].Data), "")
		b := committed.ReplaceAllString(string(modes["logical"][i].Data), "")
		if a != b {
			t.Errorf("event %d differs\ntrigger: %s\nlogical: %s", i, a, b)
		}
	}
}
