package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/config"
)

// membersSchema adds teams 3 to 5 to the demo CRM, whose team_members
// has user 2 in team 1.
const membersSchema = `insert into teams (id, name) values (3, 'c'), (4, 'd'), (5, 'e')`

func withMembership(mode string) func(*config.Config) {
	return func(c *config.Config) {
		c.Auth.Membership = &config.Membership{Table: "team_members", Mode: mode}
	}
}

// sioNext returns the next Socket.IO event as its name and data, or the
// close code when the connection closes first.
func sioNext(t *testing.T, c *websocket.Conn) (name, data string, closed int) {
	t.Helper()
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return "", "", ce.Code
		}
		if err != nil {
			t.Fatalf("socket.io read: %v", err)
		}
		if string(b) == "2" {
			_ = c.WriteMessage(websocket.TextMessage, []byte("3"))
			continue
		}
		var args []json.RawMessage
		if !strings.HasPrefix(string(b), "42") || json.Unmarshal(b[2:], &args) != nil || len(args) < 2 {
			t.Fatalf("socket.io frame %q, want an event", b)
		}
		_ = json.Unmarshal(args[0], &name)
		return name, string(args[1]), 0
	}
}

// TestMembershipFollowsTheDatabase: with auth.membership a session's teams
// are the membership table's, whatever the token claims; a row added lets
// the team's events flow from that change on, without reconnecting; a row
// deleted is told (forbidden, with the team) at its position, no event of
// the team follows, and the last team gone closes with 4403. Both
// transports, both capture modes.
func TestMembershipFollowsTheDatabase(t *testing.T) {
	for _, mode := range []string{config.ModeTrigger, config.ModeLogical} {
		t.Run(mode, func(t *testing.T) {
			e := startRelay(t, func(c *config.Config) {
				c.Capture.Mode = mode
				withMembership("")(c)
			}, membersSchema)
			tok := userToken(t, "2", 3) // the token's team 3 is ignored
			plain, err := e.dial(tok, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			var w struct {
				TeamIDs []string `json:"teamIds"`
			}
			if f := plain.next(); f.Type != "welcome" || json.Unmarshal(f.Raw, &w) != nil || strings.Join(w.TeamIDs, ",") != "1" {
				t.Fatalf("welcome %s, want teamIds [1]", f.Raw)
			}
			plain.send(`{"type":"ping","id":0}`)
			plain.next()
			sio := sioDial(t, e, tok)

			lead := func(team int, name string) {
				e.exec("insert into leads (team_id, first_name) values ($1, $2)", team, name)
			}
			want := func(name string) {
				t.Helper()
				if f := plain.event("lead:created"); f.data()["lead"].(map[string]any)["first_name"] != name {
					t.Fatalf("/ws got %s, want lead %s", f.Raw, name)
				}
				if n, d, _ := sioNext(t, sio); n != "lead:created" || !strings.Contains(d, `"first_name":"`+name+`"`) {
					t.Fatalf("socket.io got %s %s, want lead %s", n, d, name)
				}
			}
			lead(3, "claimed only")
			lead(1, "member")
			want("member")

			// One transaction: what comes before the join is not sent, what
			// comes after it is.
			e.tx(func(tx pgx.Tx) error {
				for _, q := range []string{
					"insert into leads (team_id, first_name) values (2, 'before the join')",
					"insert into team_members (user_id, team_id) values (2, 2)",
					"insert into leads (team_id, first_name) values (2, 'after the join')",
				} {
					if _, err := tx.Exec(context.Background(), q); err != nil {
						return err
					}
				}
				return nil
			})
			want("after the join")
			lead(2, "later")
			want("later")

			e.exec("delete from team_members where user_id = 2 and team_id = 1")
			if f := plain.next(); f.Type != "error" || f.Code != "forbidden" || !strings.Contains(string(f.Raw), `"teamId":"1"`) {
				t.Fatalf("/ws got %s, want forbidden for team 1", f.Raw)
			}
			if n, d, _ := sioNext(t, sio); n != "error" || d != `{"code":"forbidden","teamId":"1"}` {
				t.Fatalf("socket.io got %s %s, want forbidden for team 1", n, d)
			}
			lead(1, "after the leave")
			lead(2, "still a member")
			want("still a member")

			e.exec("delete from team_members where user_id = 2")
			if f := plain.next(); f.Code != "forbidden" {
				t.Fatalf("/ws got %s, want forbidden for team 2", f.Raw)
			}
			if code := plain.closed(); code != 4403 {
				t.Fatalf("/ws close %d, want 4403", code)
			}
			if n, _, _ := sioNext(t, sio); n != "error" {
				t.Fatalf("socket.io got %s, want forbidden", n)
			}
			if _, _, code := sioNext(t, sio); code != 4403 {
				t.Fatalf("socket.io close %d, want 4403", code)
			}
		})
	}
}

// TestMembershipIntersect: in intersect mode a session follows the teams
// both its token and the table name.
func TestMembershipIntersect(t *testing.T) {
	e := startRelay(t, withMembership(config.MembershipIntersect), membersSchema,
		`insert into team_members (user_id, team_id) values (2, 2), (2, 3)`)
	c := e.connect(userToken(t, "2", 1, 3, 4))
	e.exec("insert into leads (team_id, first_name) values (1, 'a'), (2, 'b'), (4, 'c'), (3, 'd')")
	if f := c.event("lead:created"); f.data()["teamId"] != "1" {
		t.Fatalf("got %s, want team 1's lead", f.Raw)
	}
	if f := c.event("lead:created"); f.data()["teamId"] != "3" {
		t.Fatalf("got %s, want team 3's lead", f.Raw)
	}
	e.exec("insert into team_members (user_id, team_id) values (2, 4), (2, 5)")
	e.exec("insert into leads (team_id, first_name) values (5, 'e'), (4, 'f')")
	if f := c.event("lead:created"); f.data()["teamId"] != "4" {
		t.Fatalf("got %s, want team 4's lead", f.Raw)
	}
}
