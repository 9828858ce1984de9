package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rowcast/rowcast/config"
	rowclient "github.com/rowcast/rowcast/relay/client"
)

// entityCase describes how to create, update and delete one demo entity.
type entityCase struct {
	entity, table string
	insert        string // returns id; $1 team
	update        string // $1 id
	changed       map[string]any
}

var entityCases = []entityCase{
	{"escrow", "escrows",
		`insert into escrows (team_id, property_address, city, state, zip_code, purchase_price, internal_notes, updated_by)
		 values ($1, '12 Oak St', 'Austin', 'TX', '78701', 450000.50, 'secret split', 2) returning id`,
		`update escrows set status = 'closed', purchase_price = 460000.00 where id = $1`,
		map[string]any{"status": "closed", "purchase_price": 460000.00}},
	{"listing", "listings",
		`insert into listings (team_id, street_address, city, state, zip_code, list_price, features, updated_by)
		 values ($1, '9 Lake Rd', 'Denver', 'CO', '80202', 525000, '{"pool":true}', 2) returning id`,
		`update listings set status = 'pending' where id = $1`,
		map[string]any{"status": "pending"}},
	{"client", "clients",
		`insert into clients (team_id, first_name, last_name, email, tags, internal_notes, updated_by)
		 values ($1, 'Maya', 'Chen', 'maya@example.com', '{vip,buyer}', 'pays late', 2) returning id`,
		`update clients set phone = '555-0100' where id = $1`,
		map[string]any{"phone": "555-0100"}},
	{"appointment", "appointments",
		`insert into appointments (team_id, title, starts_at, updated_by)
		 values ($1, 'Showing', '2026-12-01 15:00:00+00', 2) returning id`,
		`update appointments set status = 'completed', duration = '90 minutes' where id = $1`,
		map[string]any{"status": "completed", "duration": "PT1H30M"}},
	{"lead", "leads",
		`insert into leads (team_id, first_name, email, score, updated_by)
		 values ($1, 'Noah', 'noah@example.com', 10, 2) returning id`,
		`update leads set score = 42 where id = $1`,
		map[string]any{"score": 42.0}},
}

func TestEntityEventsEachAction(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "2", 1))
	for _, tc := range entityCases {
		t.Run(tc.entity, func(t *testing.T) {
			e := e.forT(t)
			c.t = t
			var id int64
			e.tx(func(tx pgx.Tx) error {
				if _, err := tx.Exec(context.Background(), "select rowcast.set_request_id('req-1')"); err != nil {
					return err
				}
				return tx.QueryRow(context.Background(), tc.insert, 1).Scan(&id)
			})
			ids := fmt.Sprint(id)
			f := c.event(tc.entity + ":created")
			d := f.data()
			camel := map[string]string{"escrow": "escrowId", "listing": "listingId", "client": "clientId",
				"appointment": "appointmentId", "lead": "leadId"}[tc.entity]
			want := map[string]any{"entityType": tc.entity, "entityId": ids, "action": "created", "teamId": "1",
				"userId": "2", "requestId": "req-1", camel: ids}
			for k, v := range want {
				if d[k] != v {
					t.Errorf("created %s = %#v, want %#v (frame %s)", k, d[k], v, f.Raw)
				}
			}
			row, ok := d[tc.entity].(map[string]any)
			if !ok || row["id"] != float64(id) || row["team_id"] != 1.0 {
				t.Errorf("created carries no whole row under %q: %s", tc.entity, f.Raw)
			}
			if _, leaked := row["internal_notes"]; leaked {
				t.Errorf("excluded column internal_notes left the database: %s", f.Raw)
			}
			if _, ok := d["changes"]; ok {
				t.Errorf("created has changes: %s", f.Raw)
			}
			if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(d["committedAt"])); err != nil {
				t.Errorf("committedAt: %v", err)
			}

			e.exec(tc.update, id)
			f = c.event(tc.entity + ":updated")
			d = f.data()
			changes, _ := d["changes"].(map[string]any)
			for k, v := range tc.changed {
				if changes[k] != v {
					t.Errorf("updated changes[%s] = %#v, want %#v (%s)", k, changes[k], v, f.Raw)
				}
			}
			// updated_at is not touched by these statements; only the changed columns travel.
			if len(changes) != len(tc.changed) {
				t.Errorf("updated carries %d columns, want only the %d changed: %s", len(changes), len(tc.changed), f.Raw)
			}
			if d["userId"] != "2" || d[tc.entity] != nil {
				t.Errorf("updated: actor from column or stray row: %s", f.Raw)
			}

			e.exec("delete from "+tc.table+" where id = $1", id)
			f = c.event(tc.entity + ":deleted")
			d = f.data()
			if d["entityId"] != ids || d[camel] != ids || d["teamId"] != "1" || d["changes"] != nil || d[tc.entity] != nil {
				t.Errorf("deleted: %s", f.Raw)
			}
		})
	}
}

func TestNoEventForNoopOrExcludedUpdate(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "2", 1))
	var id int64
	if err := e.db.QueryRow(context.Background(), entityCases[0].insert, 1).Scan(&id); err != nil {
		t.Fatal(err)
	}
	c.event("escrow:created")
	e.exec("update escrows set status = status where id = $1", id)
	e.exec("update escrows set internal_notes = 'changed but excluded' where id = $1", id)
	e.exec("update escrows set city = 'Dallas' where id = $1", id)
	f := c.event("escrow:updated")
	if got := string(f.Data); !strings.Contains(got, `"changes":{"city":"Dallas"}`) {
		t.Fatalf("the first update event must be the city change: %s", f.Raw)
	}
}

func TestActorFromSetLocalAndColumn(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "2", 1))
	e.tx(func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `set local rowcast.actor_id = '3';
			insert into leads (team_id, first_name, updated_by) values (1, 'A', 2)`)
		return err
	})
	if d := c.event("lead:created").data(); d["userId"] != "3" {
		t.Errorf("SET LOCAL actor: userId %v, want 3", d["userId"])
	}
	e.tx(func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `select rowcast.set_actor('1');
			insert into leads (team_id, first_name, updated_by) values (1, 'B', 2)`)
		return err
	})
	if d := c.event("lead:created").data(); d["userId"] != "1" {
		t.Errorf("set_actor: userId %v, want 1", d["userId"])
	}
	e.exec("insert into leads (team_id, first_name, updated_by) values (1, 'C', 2)")
	if d := c.event("lead:created").data(); d["userId"] != "2" {
		t.Errorf("actor column: userId %v, want 2", d["userId"])
	}
	e.exec("insert into leads (team_id, first_name) values (1, 'D')")
	if d := c.event("lead:created").data(); d["userId"] != nil {
		t.Errorf("no actor: userId %v, want absent", d["userId"])
	}
}

func TestTeamIsolationAndMove(t *testing.T) {
	e := startRelay(t, nil)
	t1 := e.connect(userToken(t, "2", 1))
	t2 := e.connect(userToken(t, "4", 2))
	both := e.connect(userToken(t, "1", 1, 2))
	var a, b int64
	if err := e.db.QueryRow(context.Background(), "insert into leads (team_id, first_name) values (1, 'one') returning id").Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := e.db.QueryRow(context.Background(), "insert into leads (team_id, first_name) values (2, 'two') returning id").Scan(&b); err != nil {
		t.Fatal(err)
	}
	if d := t1.event("lead:created").data(); d["entityId"] != fmt.Sprint(a) {
		t.Fatalf("team 1 got %v", d)
	}
	if d := t2.event("lead:created").data(); d["entityId"] != fmt.Sprint(b) {
		t.Fatalf("team 2 got another team's lead: %v", d)
	}
	both.event("lead:created")
	both.event("lead:created")

	// Move lead a from team 1 to team 2.
	e.exec("update leads set team_id = 2, score = 7 where id = $1", a)
	if d := t1.event("lead:deleted").data(); d["entityId"] != fmt.Sprint(a) || d["teamId"] != "1" {
		t.Errorf("old team: %v", d)
	}
	f := t2.event("lead:created")
	d := f.data()
	row, _ := d["lead"].(map[string]any)
	if d["teamId"] != "2" || row["score"] != 7.0 || row["first_name"] != "one" {
		t.Errorf("new team gets the whole row: %s", f.Raw)
	}
	// A member of both teams sees both halves, each once.
	got := []string{both.next().Event, both.next().Event}
	if !(got[0] == "lead:deleted" && got[1] == "lead:created") && !(got[0] == "lead:created" && got[1] == "lead:deleted") {
		t.Errorf("member of both teams got %v", got)
	}
	// Nothing else crossed: the next event each single-team session sees is its own.
	e.exec("insert into leads (team_id, first_name) values (1, 'marker1')")
	e.exec("insert into leads (team_id, first_name) values (2, 'marker2')")
	if d := t1.event("lead:created").data(); d["lead"].(map[string]any)["first_name"] != "marker1" {
		t.Errorf("team 1 saw %v", d)
	}
	if d := t2.event("lead:created").data(); d["lead"].(map[string]any)["first_name"] != "marker2" {
		t.Errorf("team 2 saw %v", d)
	}
}

func TestTruncateSendsResync(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "2", 1))
	other := e.connect(userToken(t, "4", 2))
	e.exec("truncate notes")
	for _, cl := range []*client{c, other} {
		f := cl.next()
		if string(f.Raw) != `{"type":"resync","reason":"truncate","entityType":"note"}` {
			t.Errorf("got %s", f.Raw)
		}
	}
}

func TestResumeAfterDisconnect(t *testing.T) {
	e := startRelay(t, nil)
	tok := userToken(t, "2", 1)
	c := e.connect(tok)
	e.exec("insert into leads (team_id, first_name) values (1, 'L1')")
	c.event("lead:created")
	pos := c.last
	c.drop()
	for i := 2; i <= 6; i++ {
		e.exec("insert into leads (team_id, first_name) values (1, $1)", fmt.Sprintf("L%d", i))
	}
	e.exec("insert into leads (team_id, first_name) values (2, 'other team')")
	c2, err := e.dial(tok, "since="+pos, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := c2.next(); w.Type != "welcome" {
		t.Fatalf("want welcome, got %s", w.Raw)
	}
	for i := 2; i <= 6; i++ {
		d := c2.event("lead:created").data()
		if name := d["lead"].(map[string]any)["first_name"]; name != fmt.Sprintf("L%d", i) {
			t.Fatalf("replay out of order: got %v want L%d", name, i)
		}
	}
	r := c2.next()
	if r.Type != "resumed" || r.Replayed != 5 || r.Position != c2.last {
		t.Fatalf("want resumed replayed=5 at the last event's position, got %s", r.Raw)
	}
	e.exec("insert into leads (team_id, first_name) values (1, 'L7')")
	if name := c2.event("lead:created").data()["lead"].(map[string]any)["first_name"]; name != "L7" {
		t.Fatalf("live after resume: %v", name)
	}

	// The resume message form, as the first message.
	pos = c2.last
	c2.drop()
	e.exec("insert into leads (team_id, first_name) values (1, 'L8')")
	c3, err := e.dial(tok, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c3.send(`{"type":"resume","since":"` + pos + `"}`)
	c3.next() // welcome
	if name := c3.event("lead:created").data()["lead"].(map[string]any)["first_name"]; name != "L8" {
		t.Fatalf("resume message replay: %v", name)
	}
	if r := c3.next(); r.Type != "resumed" || r.Replayed != 1 {
		t.Fatalf("got %s", r.Raw)
	}
}

func TestResyncForUnservablePositions(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.History.Retention = time.Millisecond })
	tok := userToken(t, "2", 1)
	c := e.connect(tok)
	e.exec("insert into leads (team_id, first_name) values (1, 'a')")
	c.event("lead:created")
	old := c.last
	e.exec("insert into leads (team_id, first_name) values (1, 'b')")
	c.event("lead:created")
	c.drop()

	// Prune everything older than the retention (1ms).
	if _, err := e.db.Exec(context.Background(), "select pg_sleep(0.01)"); err != nil {
		t.Fatal(err)
	}
	pruned := pruneNow(t, e)
	if pruned == 0 {
		t.Fatal("nothing pruned")
	}
	foreign := strings.Replace(old, old[3:8], "AAAAA", 1)
	cases := map[string]string{
		"pruned":  old,
		"garbage": "not-a-position",
		"foreign": foreign,
		"empty":   "p1.",
	}
	for name, since := range cases {
		t.Run(name, func(t *testing.T) {
			e := e.forT(t)
			c, err := e.dial(tok, "since="+since, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.next() // welcome
			if f := c.next(); string(f.Raw) != `{"type":"resync","reason":"history_expired"}` {
				t.Fatalf("got %s", f.Raw)
			}
			e.exec("insert into leads (team_id, first_name) values (1, 'live')")
			c.event("lead:created")
		})
	}
}

func TestAuthFailuresClose4401(t *testing.T) {
	e := startRelay(t, nil)
	expired := token(t, map[string]any{"sub": "2", "teamId": 1, "exp": time.Now().Add(-time.Minute).Unix()})
	noUser := token(t, map[string]any{"teamId": 1})
	other, _ := signWith("another-secret-another-secret-0123456", map[string]any{"sub": "2", "teamId": 1})
	cases := map[string]struct{ tok, msg string }{
		"missing":       {"", "token missing"},
		"bad signature": {other, "token signature invalid"},
		"expired":       {expired, "token expired"},
		"no user claim": {noUser, `token has no user claim "sub"`},
		"malformed":     {"abc.def", "token malformed"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := e.forT(t)
			c, err := e.dial(tc.tok, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			// A write arrives meanwhile; it must never reach this session.
			e.exec("insert into leads (team_id, first_name) values (1, 'x')")
			f := c.next()
			if f.Type != "error" || f.Code != "unauthorized" || f.Message != tc.msg {
				t.Fatalf("got %s, want unauthorized %q", f.Raw, tc.msg)
			}
			start := time.Now()
			if code := c.closed(); code != 4401 {
				t.Fatalf("close code %d, want 4401", code)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("closed after %v, want within 1s", d)
			}
		})
	}
}

func TestOriginAllowList(t *testing.T) {
	e := startRelay(t, nil)
	tok := userToken(t, "2", 1)
	_, err := e.dial(tok, "", http.Header{"Origin": {"https://evil.example"}})
	var refused *rowclient.HandshakeError
	if !errors.As(err, &refused) || refused.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v, want HTTP 403", err)
	}
	c, err := e.dial(tok, "", http.Header{"Origin": {"http://localhost:5173"}})
	if err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	if w := c.next(); w.Type != "welcome" {
		t.Fatalf("got %s", w.Raw)
	}
}

func TestClientMessages(t *testing.T) {
	e := startRelay(t, nil)
	tok := userToken(t, "2", 1)
	c := e.connect(tok)
	c.send(`{"type":"ping","id":7}`)
	if f := c.next(); string(f.Raw) != `{"type":"pong","id":7}` {
		t.Errorf("pong: %s", f.Raw)
	}
	c.send(`{"type":"nope"}`)
	if f := c.next(); f.Type != "error" || f.Code != "bad_request" {
		t.Errorf("unknown type: %s", f.Raw)
	}
	c.send(`[1,2]`)
	if f := c.next(); f.Type != "error" || f.Code != "bad_request" {
		t.Errorf("non-object: %s", f.Raw)
	}
	c.send(`{"type":"subscribe","entities":["lead"]}`)
	if f := c.next(); string(f.Raw) != `{"type":"subscribed","entities":["lead"]}` {
		t.Errorf("subscribed: %s", f.Raw)
	}
	e.exec("insert into escrows (team_id, property_address, city, state, zip_code, purchase_price) values (1, 'a', 'b', 'TX', '1', 1)")
	e.exec("insert into leads (team_id, first_name) values (1, 'only leads')")
	c.event("lead:created")
	fresh := userToken(t, "2", 1)
	c.send(`{"type":"auth","token":"` + fresh + `"}`)
	if f := c.next(); f.Type != "auth_ok" {
		t.Errorf("auth: %s", f.Raw)
	}
	c.send(`{"type":"auth","token":"` + userToken(t, "3", 1) + `"}`)
	c.next() // error unauthorized
	if code := c.closed(); code != 4401 {
		t.Errorf("auth as another user: close %d, want 4401", code)
	}

	bad, err := e.dial(tok, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad.next() // welcome
	bad.send("hello")
	if code := bad.closed(); code != 4400 {
		t.Errorf("malformed first message: close %d, want 4400", code)
	}
}

// A token refresh that changes the team list moves the session's scope from
// then on: the new team's events come, the dropped team's stop.
func TestTokenRefreshChangesTeams(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "2", 1))
	insertLead := func(team int, name string) {
		e.exec("insert into leads (team_id, first_name) values ($1, $2)", team, name)
	}
	leadName := func(f frame) string {
		var d struct {
			Lead struct {
				FirstName string `json:"first_name"`
			} `json:"lead"`
		}
		if err := json.Unmarshal(f.Data, &d); err != nil {
			t.Fatalf("lead:created data %s: %v", f.Data, err)
		}
		return d.Lead.FirstName
	}
	// reauth refreshes the token of user 2 with these teams.
	reauth := func(teams ...int) {
		t.Helper()
		c.send(`{"type":"auth","token":"` + userToken(t, "2", teams...) + `"}`)
		if f := c.next(); f.Type != "auth_ok" {
			t.Fatalf("auth with teams %v: %s", teams, f.Raw)
		}
	}
	insertLead(2, "before, team 2")
	insertLead(1, "before, team 1")
	if got := leadName(c.event("lead:created")); got != "before, team 1" {
		t.Fatalf("before the refresh got %q, want only team 1's lead", got)
	}

	reauth(2)
	insertLead(1, "after, team 1")
	insertLead(2, "after, team 2")
	if got := leadName(c.event("lead:created")); got != "after, team 2" {
		t.Fatalf("after moving to team 2 got %q, want team 2's lead and not team 1's", got)
	}

	reauth(1, 2)
	insertLead(1, "both, team 1")
	insertLead(2, "both, team 2")
	got := []string{leadName(c.event("lead:created")), leadName(c.event("lead:created"))}
	if got[0] != "both, team 1" || got[1] != "both, team 2" {
		t.Fatalf("with both teams got %q, want both leads in commit order", got)
	}
	// Nothing else is pending: a ping is answered next.
	c.send(`{"type":"ping","id":1}`)
	if f := c.next(); f.Type != "pong" {
		t.Fatalf("after the events: %s, want pong", f.Raw)
	}
}

func TestTokenExpiryCloses(t *testing.T) {
	e := startRelay(t, nil)
	tok := token(t, map[string]any{"sub": "2", "teamId": 1, "exp": time.Now().Add(1500 * time.Millisecond).Unix()})
	c := e.connect(tok)
	f := c.next()
	if f.Type != "error" || f.Code != "token_expired" {
		t.Fatalf("got %s", f.Raw)
	}
	if code := c.closed(); code != 4401 {
		t.Fatalf("close %d", code)
	}
}

func TestRateLimitAndFrameSize(t *testing.T) {
	// A limit that refills no token within the test: the strikes are
	// consecutive however slowly the machine answers (at the default 20/s a
	// round trip slower than 50 ms lets a message through, which resets
	// the strikes).
	e := startRelay(t, func(c *config.Config) { c.Sessions.RateLimit = 0.001 })
	c := e.connect(userToken(t, "2", 1))
	// One message at a time, each answered before the next goes out, so
	// nothing is left unread when the relay closes (which would reset the
	// connection and lose the close frame).
	pongs, limited := 0, 0
	for {
		if pongs+limited > 200 {
			t.Fatal("not closed after 200 messages")
		}
		c.send(`{"type":"ping","id":1}`)
		f, err := c.read(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d pongs and %d rate_limited: %v, want an answer", pongs, limited, err)
		}
		if f.Type == "pong" {
			if limited > 0 {
				t.Fatalf("pong after %d rate_limited", limited)
			}
			pongs++
			continue
		}
		if f.Code != "rate_limited" {
			t.Fatalf("unexpected frame %s", f.Raw)
		}
		limited++
		// The 20 strikes are answered rate_limited; so is the 21st,
		// and then the relay closes.
		if limited == 21 {
			break
		}
	}
	if _, err := c.read(10 * time.Second); err != nil {
		var ce *rowclient.CloseError
		if !asClose(err, &ce) || ce.Code != 4429 {
			t.Fatalf("want close 4429, got %v", err)
		}
	} else {
		t.Fatal("a frame after the 21st rate_limited, want close 4429")
	}
	// The burst of 50, one token spent by the connect.
	if pongs != 49 {
		t.Errorf("%d pongs before the first rate_limited, want 49", pongs)
	}

	c2 := e.connect(userToken(t, "2", 1))
	c2.send(`{"type":"ping","id":"` + strings.Repeat("x", 5000) + `"}`)
	if code := c2.closed(); code != websocket.CloseMessageTooBig {
		t.Fatalf("oversized frame: close %d, want 1009", code)
	}
}

// TestTickAtEachRing: with capture.tick_interval 0 the ticker keeps the
// writers' doorbell armed however fast changes come, and ticks at each
// ring. Its polls are an hour apart here, so each change reaches the client
// only through the doorbell; with the default the ticker disarms it after a
// few ticks closer together than its poll interval (here, all of them), and
// the sixth change never comes.
func TestTickAtEachRing(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Capture.TickInterval = 0 })
	e.shutdown()
	e.tickerPoll = time.Hour
	e.start()
	c := e.connect(userToken(t, "2", 1))
	for i := 1; i <= 9; i++ {
		name := fmt.Sprint("lead ", i)
		e.exec("insert into leads (team_id, first_name) values (1, $1)", name)
		if got := c.event("lead:created").data()["lead"].(map[string]any)["first_name"]; got != name {
			t.Fatalf("got lead %v, want %s", got, name)
		}
		if i < 8 {
			continue
		}
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
			var armed bool
			err := e.db.QueryRow(t.Context(), "select pg_sequence_last_value('rowcast.bell') is distinct from 0").Scan(&armed)
			if err != nil {
				t.Fatal(err)
			}
			if !armed {
				t.Fatalf("the doorbell was disarmed after %d changes", i)
			}
		}
	}
}

func TestHTTPEndpoints(t *testing.T) {
	e := startRelay(t, nil)
	base := "http://" + e.relay.Addr()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/version": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/metrics" {
			// The endpoint serves the registry, in the text format.
			parser := expfmt.NewTextParser(model.UTF8Validation)
			families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("/metrics: %v", err)
			}
			if f := families["rowcast_capture_connected"]; f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != 1 {
				t.Errorf("/metrics rowcast_capture_connected: %v, want 1", f)
			}
			if v := metric(t, e, "rowcast_capture_connected"); v != 1 {
				t.Errorf("registry rowcast_capture_connected %v, want 1", v)
			}
		}
		if path == "/version" {
			var v map[string]any
			if json.Unmarshal(body, &v) != nil || v["protocol"] != 1.0 {
				t.Errorf("/version: %s", body)
			}
		}
	}
}

func TestDrainClosesWith1001(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "2", 1))
	e.shutdown()
	if code := c.closed(); code != websocket.CloseGoingAway {
		t.Fatalf("close %d, want 1001", code)
	}
}

func TestLegacyDataUpdate(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Events.Legacy = true })
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name, updated_by) values (1, 'L', 2)")
	main := c.event("lead:created")
	legacy := c.event("data:update")
	d := legacy.data()
	if d["entityType"] != "lead" || d["action"] != "create" || d["teamId"] != "1" || d["userId"] != "2" {
		t.Errorf("data:update: %s", legacy.Raw)
	}
	if legacy.Position != main.Position {
		t.Errorf("both events of one change carry its position: %q vs %q", main.Position, legacy.Position)
	}
	// Resuming from before the change replays both, once.
	c2, err := e.dial(userToken(t, "2", 1), "since="+startPosition(t, e), nil)
	if err != nil {
		t.Fatal(err)
	}
	c2.next() // welcome
	c2.event("lead:created")
	c2.event("data:update")
	if r := c2.next(); r.Type != "resumed" || r.Replayed != 2 {
		t.Fatalf("got %s", r.Raw)
	}
}

// A client that floods the relay and reads nothing is cut off; it never
// stalls delivery to anyone else.
func TestFloodingClientDoesNotStallOthers(t *testing.T) {
	e := startRelay(t, nil)
	flooder := e.connect(userToken(t, "4", 2))
	other := e.connect(userToken(t, "2", 1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 300000; i++ {
			if err := flooder.conn.WebSocket().WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		e.exec("insert into leads (team_id, first_name) values (1, $1)", fmt.Sprint(i))
		e.exec("insert into leads (team_id, first_name) values (2, $1)", fmt.Sprint(i))
		other.event("lead:created")
	}
	<-done
	// The flooder itself is cut off: rate limited (4429), or closed as a
	// slow consumer (4008) when it reads none of the answers.
	for {
		_, err := flooder.read(10 * time.Second)
		if err == nil {
			continue
		}
		var ce *rowclient.CloseError
		if !asClose(err, &ce) || (ce.Code != 4429 && ce.Code != 4008) {
			t.Fatalf("flooder: %v, want close 4429 or 4008", err)
		}
		break
	}
}

// TestRateLimitBurst: a burst of pings sent at once, of any size, is
// answered pong for the first messages, then rate_limited, then closed with
// 4429, and the close frame reaches the client (issue 8: 200 at once ended
// in 1006 with nothing received).
func TestRateLimitBurst(t *testing.T) {
	e := startRelay(t, nil)
	for _, n := range []int{200, 1000, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := e.forT(t)
			c := e.connect(userToken(t, "2", 1))
			for i := 1; i <= n; i++ {
				c.send(fmt.Sprintf(`{"type":"ping","id":%d}`, i))
			}
			pongs, limited := 0, 0
			lastID := 0
			for {
				f, err := c.read(10 * time.Second)
				if err != nil {
					var ce *rowclient.CloseError
					if !asClose(err, &ce) || ce.Code != 4429 {
						t.Fatalf("after %d pongs and %d rate_limited: %v, want close 4429", pongs, limited, err)
					}
					break
				}
				switch {
				case f.Type == "pong":
					var id int
					if err := json.Unmarshal(f.Raw, &struct {
						ID *int `json:"id"`
					}{&id}); err != nil || id <= lastID {
						t.Fatalf("pong %s after id %d", f.Raw, lastID)
					}
					lastID = id
					pongs++
				case f.Code == "rate_limited":
					if pongs == 0 {
						t.Fatalf("rate_limited before any pong")
					}
					limited++
				default:
					t.Fatalf("unexpected frame %s", f.Raw)
				}
			}
			// Burst 50 (one token spent by connect) answered; 20 strikes
			// answered rate_limited, and the 21st too, before the close.
			if pongs < 49 || limited < 21 {
				t.Fatalf("%d pongs, %d rate_limited; want >= 49 and >= 21", pongs, limited)
			}
		})
	}
}

// TestAnswersPastTheQueueClose4008: a client that sends more than its queue
// and headroom can hold in answers, reading nothing meanwhile, gets them
// and then close 4008 with its close frame, never a silent abort.
func TestAnswersPastTheQueueClose4008(t *testing.T) {
	// Each answer echoes a 3,000-byte id: the relay writes frames that
	// wait back to back in one system call, so what fills the socket's
	// buffers (4 MiB at most here) is bytes, not the count of writes.
	const n = 4000
	e := startRelay(t, func(c *config.Config) {
		c.Sessions.QueueSize = 8
		c.Sessions.RateBurst = n
	})
	c := e.connect(userToken(t, "2", 1))
	id := strings.Repeat("i", 3000)
	for i := 1; i <= n; i++ {
		c.send(fmt.Sprintf(`{"type":"ping","id":"%s%d"}`, id, i))
	}
	pongs := 0
	for {
		f, err := c.read(10 * time.Second)
		if err != nil {
			var ce *rowclient.CloseError
			if !asClose(err, &ce) || ce.Code != 4008 {
				t.Fatalf("after %d pongs: %v, want close 4008", pongs, err)
			}
			break
		}
		if f.Type != "pong" {
			t.Fatalf("unexpected frame %s", f.Raw)
		}
		pongs++
	}
	if pongs == 0 || pongs >= n {
		t.Fatalf("%d pongs before the close", pongs)
	}
}
