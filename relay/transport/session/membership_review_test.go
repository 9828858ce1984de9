package session

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
)

// Review of issue 13: failing tests for the membership findings.

// collect returns the frames written within d.
func (c *client) collect(d time.Duration) []string {
	var got []string
	deadline := time.After(d)
	for {
		select {
		case f := <-c.c.frames:
			got = append(got, f)
		case <-deadline:
			return got
		}
	}
}

// expectSoon checks the frames written within a second, in order.
func (c *client) expectSoon(want ...string) {
	c.t.Helper()
	var got []string
	deadline := time.After(time.Second)
loop:
	for len(got) < len(want)+1 {
		select {
		case f := <-c.c.frames:
			got = append(got, f)
		case <-deadline:
			break loop
		}
	}
	if !slices.Equal(got, want) {
		c.t.Fatalf("frames %q, want %q", got, want)
	}
}

// R1 (scope leak). A leave committed after the token refresh's read of the
// table, and published before SetPrincipal clears touched, is undone by
// moveTo: the session shows the team it left again, for its whole life.
func TestMembershipLeaveDuringRefreshReadHolds(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1", "2"}}}
	var e *env
	m.onRead = func(n int) {
		if n == 3 { // the refresh's read: it saw 1 and 2; the leave commits after it
			m.set("u", "2")
			e.publish(leave("1", 2))
		}
	}
	e = newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs()
	c.goLive()
	c.s.SetPrincipal(auth.Principal{UserID: "u", TeamIDs: []string{}})
	c.expect("forbidden 1")
	e.publish(ev("team:1", 3, 0), ev("team:2", 4, 0))
	c.expect("team:2@4.0") // fails: team:1@3.0 arrives, after the user left team 1
	if got := c.teams(); got != "2" {
		t.Fatalf("teams %q, want 2", got)
	}
}

// R2 (wrong close / loss). An UPDATE of the membership row that moves the
// user from team 1 to team 2 is, in one change, a leave of 1 and a join of
// 2 (membershipBody writes 'D' then 'I'). A user whose only team was 1 is
// closed 4403 ("do not reconnect with the same token") though the
// transaction leaves them a member of team 2.
func TestMembershipMoveInOneTransaction(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs()
	c.goLive()
	tx := relay.Pos{Tick: 1, Tx: 3}
	l, j := leave("1", 0), join("2", 0)
	l.Pos, j.Pos = tx, tx
	l.Pos.ID, j.Pos.ID = 2, 3
	e.publish(l, j)
	e.publish(ev("team:2", 4, 0))
	c.expect("forbidden 1", "team:2@4.0")
}

// R3 (loss). A resume replays the history up to the database's tick, past
// the hub head. A join in that history (after the head) shows the team at
// once, but the replay does not read the team's stream (its streams were
// copied when it started) and moves the position past the team's events,
// which then arrive from the hub and are dropped as already sent.
func TestMembershipJoinDuringReplayKeepsTeamEvents(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	// Committed after the session read the table and subscribed, before
	// the replay's tick; the relay publishes them later (capture lag).
	later := []relay.Event{join("2", 2), ev("team:2", 3, 0), ev("team:1", 4, 0)}
	e.hist.mu.Lock()
	e.hist.events = append(e.hist.events, later...)
	e.hist.mu.Unlock()
	e.hist.entered, e.hist.gate = make(chan struct{}, 1), make(chan struct{})
	c := &recConn{frames: make(chan string, 1024)}
	e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: []string{}}, since: pos("e1", 1)}
	})
	cl := &client{t: t, s: c.s, c: c}
	<-e.hist.entered
	e.hub.Publish(later, later[len(later)-1].Pos) // the relay catches up during the replay
	close(e.hist.gate)
	// The user joined 2 at 2: team:2@3 is theirs.
	var events []string
	for _, f := range cl.collect(time.Second) {
		if !strings.HasPrefix(f, "resumed") {
			events = append(events, f)
		}
	}
	if want := []string{"team:2@3.0", "team:1@4.0"}; !slices.Equal(events, want) {
		t.Fatalf("events %q, want %q", events, want) // fails: team:2@3.0 never arrives
	}
}

// R4 (loss). A join held in pending (the session not live yet) is dropped
// by an epoch change (Reset clears pending) after Rescope already joined
// the hub stream: the team stays hidden (shown) for the session's life.
func TestMembershipEpochChangeReconnects(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs()
	e.publish(join("2", 2))
	e.hub.Reset("e2", relay.Pos{Tick: 5, Tx: 5, ID: 5})
	c.expect("resync")
	c.goLive()
	e.publish(relay.Event{Name: "lead:updated", Entity: "lead", Stream: "team:2", Pos: relay.Pos{Tick: 6, Tx: 6, ID: 6}, Data: []byte(`{}`)})
	// Either the session shows team 2 (its user joined it) or it closes
	// for the client to reconnect and read the table again.
	got := c.collect(time.Second)
	if !slices.Contains(got, "team:2@6.0") && !slices.ContainsFunc(got, func(f string) bool { return strings.HasPrefix(f, "close ") }) {
		t.Fatalf("frames %q: team 2's event lost, the session open", got) // fails
	}
}

// R9 (scope). In intersect mode a refreshed token that no longer claims a
// team must drop it; when the table read fails on the refresh, the
// session keeps its old teams, unclaimed ones included.
func TestMembershipIntersectRefreshReadFailsDropsUnclaimedTeam(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1", "2"}}}
	e := newEnv(t, Options{Membership: m.read, MembershipIntersect: true}, ev("all", 1, 0))
	c := e.attachAs("1", "2")
	c.goLive()
	m.mu.Lock()
	m.err = errTest
	m.mu.Unlock()
	c.s.SetPrincipal(auth.Principal{UserID: "u", TeamIDs: []string{"2"}})
	e.publish(ev("team:1", 2, 0), ev("team:2", 3, 0))
	c.expect("team:2@3.0") // fails: team:1@2.0, a team the token no longer claims
}

var errTest = relay.Error("database down")

// R5 (leak). A session that leaves the hub (its connection closes, or
// Stop) between Rescope and the hub's add of the joined team's stream stays
// subscribed to it for ever: the hub keeps the closed session and counts
// it in rowcast_sessions. Many sessions of the user widen the window
// (Publish Rescopes them all before it adds any).
func TestMembershipJoinWhileClosingLeavesNoHubSubscription(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	for round := int64(0); round < 20; round++ {
		var cs []*client
		for range 200 {
			c := e.attachAs()
			c.goLive()
			cs = append(cs, c)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.publish(join("2", 2+round))
		}()
		for _, c := range cs {
			c.s.Gone()
		}
		<-done
		if n := e.hub.Stats().Subscribers; n != 0 {
			t.Fatalf("round %d: %d closed sessions still subscribed in the hub", round, n)
		}
	}
}

// A resume must replay a team only from the user's join on. R7 (scope, documented in the README but against PROTOCOL.md section 6
// and the leak test). A user who joined team 2 at position 3 and
// resumes (or forges a since) from position 1 is replayed team 2's event
// at 2, from before the join.
func TestMembershipResumeReplaysNothingFromBeforeTheJoin(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1", "2"}}}
	e := newEnv(t, Options{Membership: m.read}, ev("all", 1, 0), ev("team:2", 2, 0), join("2", 3), ev("team:2", 4, 0))
	c := &recConn{frames: make(chan string, 1024)}
	e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: []string{}}, since: pos("e1", 1)}
	})
	cl := &client{t: t, s: c.s, c: c}
	cl.expectSoon("team:2@4.0", "resumed 1") // fails: team:2@2.0 first
}
