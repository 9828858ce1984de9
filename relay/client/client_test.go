package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// script is a relay that answers connection n with frames[n] and then the
// close code codes[n]; it records each connection's since.
type script struct {
	mu     sync.Mutex
	frames [][]string
	codes  []int
	since  []string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.since)
	s.since = append(s.since, r.URL.Query().Get("since"))
	s.mu.Unlock()
	c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	if n >= len(s.frames) {
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4401, "enough"))
		return
	}
	for _, f := range s.frames[n] {
		c.WriteMessage(websocket.TextMessage, []byte(f))
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(s.codes[n], ""))
	c.ReadMessage() // until the client closes
}

func TestSessionPositions(t *testing.T) {
	welcome := func(pos string) string {
		return `{"type":"welcome","position":"` + pos + `","heartbeatMs":25000}`
	}
	event := func(pos string) string { return `{"type":"event","event":"lead:created","position":"` + pos + `"}` }
	s := &script{
		frames: [][]string{
			{welcome("h1"), event("e1"), event("e2")},                          // fresh: events advance the position
			{welcome("h2"), event("e3"), `{"type":"resumed","position":"r3"}`}, // resuming: the welcome's head is not ours
			{welcome("h3"), `{"type":"resync","reason":"history_expired"}`},    // resync: live from this welcome's head
			{welcome("h4")}, // resuming from h3: h4 is the relay's head, not ours
		},
		codes: []int{4008, 1001, 1006, 1001},
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	sess := &Session{Options: Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http")},
		MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	var seen []string
	err := sess.Run(context.Background(), func(f Frame) error {
		seen = append(seen, f.Type)
		return nil
	})
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 4401 || IsDrop(err) {
		t.Fatalf("Run = %v, want the final close 4401", err)
	}
	want := []string{"", "e2", "r3", "h3", "h3"} // a resuming connection keeps its own position
	if strings.Join(s.since, ",") != strings.Join(want, ",") {
		t.Fatalf("since per connection = %q, want %q", s.since, want)
	}
	if len(seen) != 9 {
		t.Fatalf("handled %d frames (%v), want 9", len(seen), seen)
	}
}

func TestSessionStops(t *testing.T) {
	s := &script{frames: [][]string{{`{"type":"welcome","position":"h1"}`, `{"type":"event","position":"e1"}`, `{"type":"event","position":"e2"}`}}, codes: []int{1001}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	sess := &Session{Options: Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http")}}
	err := sess.Run(context.Background(), func(f Frame) error {
		if f.Position == "e1" {
			return ErrStop
		}
		return nil
	})
	if err != nil || sess.Position() != "h1" {
		t.Fatalf("Run = %v, position %q; want nil at h1 (e1 was not processed)", err, sess.Position())
	}
}

func TestDialRefusalIsFinalOr503Drops(t *testing.T) {
	for code, drop := range map[int]bool{403: false, 401: false, 503: true, 429: true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no thanks", code)
		}))
		_, err := Dial(context.Background(), Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http")})
		srv.Close()
		if err == nil || IsDrop(err) != drop || !strings.Contains(err.Error(), "no thanks") {
			t.Errorf("HTTP %d: %v (drop %v), want drop %v and the body", code, err, IsDrop(err), drop)
		}
		var he *HandshakeError
		if !errors.As(err, &he) || he.StatusCode != code || he.Body != "no thanks" {
			t.Errorf("HTTP %d: %v does not wrap a HandshakeError with the status and body (%+v)", code, err, he)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	lo, hi := 10*time.Millisecond, time.Second
	for attempt := range 40 {
		d := min(lo<<min(attempt, 20), hi)
		for range 20 {
			if got := Backoff(attempt, lo, hi); got < d/2 || got > d {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, got, d/2, d)
			}
		}
	}
}

// TestNextWithinBeforeWelcome: before the welcome there is no heartbeat to
// follow, so the relay's pings leave NextWithin's deadline as it is: a
// relay that pings and sends nothing else times out.
func TestNextWithinBeforeWelcome(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if c.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)) != nil {
					return
				}
			}
		}
	}))
	defer srv.Close()
	defer close(stop)
	c, err := Dial(context.Background(), Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { _, err := c.NextWithin(100 * time.Millisecond); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("NextWithin returned a frame from a relay that only pings")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("NextWithin(100ms) still waiting after 10s: the pings moved its deadline")
	}
}
