package server_test

import (
	"testing"

	"github.com/rowcast/rowcast/config"
)

// Review of issue 13, R2 end to end: an UPDATE that moves the user's only
// membership to another team is a leave then a join in one change; the
// session is closed 4403 though the user is a member of team 3.
func TestMembershipUpdateMovesTeam(t *testing.T) {
	for _, mode := range []string{config.ModeTrigger, config.ModeLogical} {
		t.Run(mode, func(t *testing.T) {
			e := startRelay(t, func(c *config.Config) {
				c.Capture.Mode = mode
				withMembership("")(c)
			}, membersSchema)
			c := e.connect(userToken(t, "2"))
			e.exec("update team_members set team_id = 3 where user_id = 2 and team_id = 1")
			if f := c.next(); f.Code != "forbidden" {
				t.Fatalf("got %s, want forbidden for team 1", f.Raw)
			}
			e.exec("insert into leads (team_id, first_name) values (3, 'moved')")
			if f := c.next(); f.Type != "event" {
				t.Fatalf("got %s, want team 3's lead", f.Raw) // fails: closed 4403
			}
		})
	}
}

// Review of issue 13, R8: the membership table is read with the user id
// cast to the column's type ('02' -> 2), but membership changes go to the
// stream of the column's text ('user:2'), not the session's ('user:02'):
// the session never sees the leave, and keeps the team.
func TestMembershipNonCanonicalUserID(t *testing.T) {
	e := startRelay(t, withMembership(""), membersSchema)
	c := e.connect(userToken(t, "02"))
	e.exec("delete from team_members where user_id = 2 and team_id = 1")
	e.exec("insert into leads (team_id, first_name) values (1, 'after the leave')")
	if f, err := c.read(3e9); err == nil && f.Type == "event" {
		t.Fatalf("got %s after user 2 left team 1", f.Raw) // fails
	}
}

// Review of issue 13, R8b: the user id is cast to the column's type; an
// explicit cast to varchar(n) truncates silently, so a user whose id starts
// with another user's id reads that user's teams and receives their events.
func TestMembershipUserIDNeverTruncatedByCast(t *testing.T) {
	e := startRelay(t, func(c *config.Config) {
		c.Auth.Membership = &config.Membership{Table: "org_members"}
	}, membersSchema,
		`create table org_members (user_id varchar(3) not null, team_id bigint not null references teams(id), primary key (user_id, team_id))`,
		`insert into org_members values ('bob', 1)`)
	c := e.connect(userToken(t, "bobby")) // not a member of anything
	e.exec("insert into leads (team_id, first_name) values (1, 'bob''s team only')")
	if f, err := c.read(3e9); err == nil && f.Type == "event" {
		t.Fatalf("user bobby got %s, an event of bob's team", f.Raw) // fails
	}
}
