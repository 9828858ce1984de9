package session

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
)

// members is an in-memory membership table: user -> teams. reads counts
// the reads; onRead, when set, runs after each (a change committed while
// the session subscribes).
type members struct {
	mu     sync.Mutex
	teams  map[string][]string
	reads  int
	onRead func(n int)
	err    error
}

func (m *members) read(_ context.Context, user string) ([]string, error) {
	m.mu.Lock()
	m.reads++
	n, teams, err, on := m.reads, slices.Clone(m.teams[user]), m.err, m.onRead
	m.mu.Unlock()
	if on != nil {
		on(n)
	}
	return teams, err
}

func (m *members) set(user string, teams ...string) {
	m.mu.Lock()
	m.teams[user] = teams
	m.mu.Unlock()
}

// join and leave are the membership events of user u for team at id.
func join(team string, id int64) relay.Event {
	return relay.Event{Kind: relay.KindMembership, Name: "membership", Stream: "user:u", Pos: at(id), Team: team, Join: true}
}

func leave(team string, id int64) relay.Event {
	return relay.Event{Kind: relay.KindMembership, Name: "membership", Stream: "user:u", Pos: at(id), Team: team}
}

// attachAs opens a live session for user u whose token claims teams.
func (e *env) attachAs(claims ...string) *client {
	e.t.Helper()
	c := &recConn{frames: make(chan string, 1024), gone: make(chan struct{})}
	s := e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: claims}}
	})
	if s == nil {
		e.t.Fatal("Attach refused the session")
	}
	return &client{t: e.t, s: s, c: c}
}

func (c *client) goLive() {
	c.s.Lock()
	c.s.GoLiveLocked()
	c.s.Unlock()
}

func (c *client) teams() string {
	c.s.Lock()
	defer c.s.Unlock()
	return strings.Join(c.s.PrincipalLocked().TeamIDs, ",")
}

// With auth.membership the session follows the table's teams, not the
// token's; a team joined shows from the join's position on, in the same
// transaction too; a team left is told, hidden from its position on, and
// the last one left closes the session with 4403.
func TestMembershipFollowsTheTable(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs("9") // the token's claim is ignored
	c.goLive()
	if got := c.teams(); got != "1" {
		t.Fatalf("teams %q, want the table's: 1", got)
	}
	e.publish(ev("team:1", 2, 0), ev("team:9", 3, 0), ev("team:2", 4, 0))
	c.expect("team:1@2.0")
	e.publish(ev("team:2", 5, 0), join("2", 6), ev("team:2", 7, 0))
	e.publish(ev("team:2", 8, 0))
	c.expect("team:2@7.0", "team:2@8.0")
	if got := c.teams(); got != "1,2" {
		t.Fatalf("teams %q after the join, want 1,2", got)
	}
	e.publish(ev("team:1", 9, 0), leave("1", 10), ev("team:1", 11, 0), ev("team:2", 12, 0))
	c.expect("team:1@9.0", "forbidden 1", "team:2@12.0")
	e.publish(ev("team:1", 13, 0))
	e.publish(leave("2", 14), ev("team:2", 15, 0))
	c.expect("forbidden 2", "close 4403 no team left")
	c.expectNone()
}

// A session holding events (not live yet) applies membership events at
// their turn: what was published before a leave is sent, what came after
// it is not.
func TestMembershipHeldEventsKeepTheirScope(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1", "2"}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs()
	e.publish(ev("team:1", 2, 0), leave("1", 3), ev("team:1", 4, 0), join("3", 5), ev("team:3", 6, 0))
	e.publish(leave("3", 7), ev("team:3", 8, 0), join("3", 9), ev("team:3", 10, 0))
	c.expectNone()
	c.goLive()
	c.expect("team:1@2.0", "forbidden 1", "team:3@6.0", "forbidden 3", "team:3@10.0")
	c.expectNone()
}

// In intersect mode a team counts only when the token names it too.
func TestMembershipIntersect(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1", "2"}}}
	e := newEnv(t, Options{Membership: m.read, MembershipIntersect: true}, ev("all", 1, 0))
	c := e.attachAs("1", "3")
	c.goLive()
	if got := c.teams(); got != "1" {
		t.Fatalf("teams %q, want 1 (in the table and the token)", got)
	}
	e.publish(ev("team:2", 2, 0), join("2", 3), ev("team:2", 4, 0), join("3", 5), ev("team:3", 6, 0))
	c.expect("team:3@6.0")
	c.expectNone()
}

// A change committed between the first read of the table and the
// subscription is not lost: Start reads again once subscribed.
func TestMembershipReadAgainAfterSubscribing(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	m.onRead = func(n int) {
		if n == 1 {
			m.set("u", "2") // left 1, joined 2, before the head
		}
	}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs()
	c.goLive()
	if got := c.teams(); got != "2" {
		t.Fatalf("teams %q, want 2", got)
	}
	e.publish(ev("team:1", 2, 0), ev("team:2", 3, 0))
	c.expect("team:2@3.0")
}

// A resume replays a team the user has since left up to the leave, tells
// the leave at its position, and closes with 4403 once replayed when no
// team remains.
func TestMembershipReplayAppliesLeaves(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0), ev("team:1", 2, 0), leave("1", 3), ev("team:1", 4, 0))
	c := &recConn{frames: make(chan string, 1024)}
	e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: []string{}}, since: pos("e1", 1)}
	})
	cl := &client{t: t, s: c.s, c: c}
	cl.expect("team:1@2.0", "forbidden 1", "resumed 1", "close 4403 no team left")
}

func TestMembershipReadFails(t *testing.T) {
	m := &members{teams: map[string][]string{}, err: errors.New("database down")}
	e := newEnv(t, Options{Membership: m.read})
	var err error
	c := &recConn{frames: make(chan string, 1024)}
	e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &startErr{recHandler: recHandler{s: s, p: auth.Principal{UserID: "u"}}, err: &err}
	})
	(&client{t: t, s: c.s, c: c}).expect("close 1001 membership unavailable")
	if err == nil || !strings.Contains(err.Error(), "database down") {
		t.Fatalf("Start error %v", err)
	}
}

// startErr records Start's error and closes as the transports do.
type startErr struct {
	recHandler
	err *error
}

func (h *startErr) Open() {
	if *h.err = h.s.Start(h.p, nil); *h.err != nil {
		h.s.Lock()
		h.s.CloseLocked(CloseGoingAway, "membership unavailable")
		h.s.Unlock()
	}
}

// A membership event published while Start reads the table again, of a
// change that read did not see, wins over the read: it is newer.
func TestMembershipEventDuringTheSecondRead(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	var e *env
	m.onRead = func(n int) {
		if n == 2 {
			e.publish(join("2", 2))
		}
	}
	e = newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs()
	c.goLive()
	e.publish(ev("team:2", 3, 0), ev("team:1", 4, 0))
	c.expect("team:2@3.0", "team:1@4.0")
	if got := c.teams(); got != "1,2" {
		t.Fatalf("teams %q, want 1,2", got)
	}
}
