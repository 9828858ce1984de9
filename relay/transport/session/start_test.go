package session

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
)

// onLog is a slog.Handler that calls fn for each record whose message
// contains match, in the logging goroutine.
type onLog struct {
	match string
	fn    func()
}

func (h onLog) Enabled(context.Context, slog.Level) bool { return true }
func (h onLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.fn()
	}
	return nil
}
func (h onLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h onLog) WithGroup(string) slog.Handler      { return h }

// A session whose connection ends while Start subscribes it (the end of a
// Socket.IO polling connection runs on a goroutine of its own), before
// Start's Subscribe, leaves the hub all the same: the stop found nothing to
// leave yet, and the hub would deliver to the closed session for ever.
func TestStartClosedWhileSubscribingLeavesTheHub(t *testing.T) {
	var c *recConn
	e := newEnv(t, Options{Logger: slog.New(onLog{match: "no team claim", fn: func() { c.s.Gone() }})}, ev("all", 1, 0))
	c = &recConn{frames: make(chan string, 1024)}
	s := e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: []string{}, NoTeamClaim: true}}
	})
	if s == nil {
		t.Fatal("Attach refused the session")
	}
	if n := e.hub.Stats().Subscribers; n != 0 {
		t.Fatalf("%d closed sessions still subscribed in the hub", n)
	}
}

// A hub reset to a new epoch while Start subscribes (after the hub gave
// it the old epoch and head, before Start took them) leaves the session at
// the new epoch's head, without a resync before its welcome: the old
// epoch's head would drop the new history's events up to it, and label
// the others with the old epoch.
func TestResetWhileStartingKeepsTheNewEpoch(t *testing.T) {
	e := newEnv(t, Options{}, ev("all", 1, 0), ev("all", 2, 0))
	c := e.attach("")
	// A Start that has subscribed, given e1 at id 2, when the hub resets.
	c.s.mu.Lock()
	c.s.starting = startSubscribing
	p := c.s.principal
	c.s.mu.Unlock()
	e.hub.Reset("e2", relay.Pos{})
	c.s.started(p, "e1", at(2), nil)
	c.s.mu.Lock()
	epoch, last := c.s.epoch, c.s.last
	c.s.mu.Unlock()
	if epoch != "e2" || last != (relay.Pos{}) {
		t.Fatalf("started at %s %+v, want e2 at the start of its history", epoch, last)
	}
	e.publish(ev("all", 1, 0)) // the new history's first change
	c.s.Lock()
	c.s.GoLiveLocked()
	c.s.Unlock()
	c.expect("all@1.0") // and no resync before it
}

// With auth.membership, the same reset closes the session (the restored
// membership table is read again on reconnecting), without a resync
// frame before the close, and the session leaves the hub.
func TestResetWhileStartingWithMembershipCloses(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	var e *env
	m.onRead = func(n int) {
		if n == 2 { // Start's read after its Subscribe
			e.hub.Reset("e2", relay.Pos{})
		}
	}
	e = newEnv(t, Options{Membership: m.read}, ev("all", 1, 0))
	c := e.attachAs()
	c.expect("close 1001 history epoch changed, reconnect")
	select {
	case <-c.c.gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the session is not gone 5s after its close")
	}
	if n := e.hub.Stats().Subscribers; n != 0 {
		t.Fatalf("%d closed sessions still subscribed in the hub", n)
	}
}

// The same with auth.membership when Start's second read of the table
// fails: Start stops the session, which, closed meanwhile, leaves the hub
// all the same.
func TestStartClosedThenReadFailsLeavesTheHub(t *testing.T) {
	m := &members{teams: map[string][]string{"u": {"1"}}}
	m.onRead = func(n int) {
		if n == 1 {
			m.mu.Lock()
			m.err = errors.New("the database is gone") // Start's second read
			m.mu.Unlock()
		}
	}
	var c *recConn
	e := newEnv(t, Options{Membership: m.read, Logger: slog.New(onLog{match: "no team claim", fn: func() { c.s.Gone() }})}, ev("all", 1, 0))
	c = &recConn{frames: make(chan string, 1024)}
	if s := e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: []string{}, NoTeamClaim: true}}
	}); s == nil {
		t.Fatal("Attach refused the session")
	}
	if n := e.hub.Stats().Subscribers; n != 0 {
		t.Fatalf("%d closed sessions still subscribed in the hub", n)
	}
}
