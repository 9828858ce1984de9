package session

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/hub"
	"github.com/rowcast/rowcast/relay/metrics"
)

// These tests run the Session's await/replay/live state machine on an
// in-memory hub and history and a Conn that records frames: no database,
// no socket. The end-to-end suites (cmd/rowcast/internal/server) run the
// same paths against PostgreSQL and real sockets.

// memHistory is an in-memory relay.History: the events published so far,
// replayed one change (all its parts) per batch.
type memHistory struct {
	mu     sync.Mutex
	events []relay.Event // in order
	pruned relay.Pos     // events at or before it are gone

	// entered, when set, receives once each Replay has read what it will
	// replay; gate, when set, then holds the Replay until it is closed.
	entered chan struct{}
	gate    chan struct{}
	// done, when set, receives what each Replay returns, as it returns.
	done chan error
}

// Replay implements relay.History.
func (h *memHistory) Replay(ctx context.Context, streams []string, from relay.Position, fn func([]relay.Event) error) (err error) {
	if h.done != nil {
		defer func() { h.done <- err }()
	}
	if from.Epoch != "e1" {
		return relay.ErrHistoryExpired // its events are all of e1
	}
	after := from.Pos
	h.mu.Lock()
	var last relay.Pos
	var replay []relay.Event
	for _, ev := range h.events {
		last = ev.Pos
		if slices.Contains(streams, ev.Stream) && ev.Pos.Compare(after) > 0 {
			replay = append(replay, ev)
		}
	}
	if after.Compare(last) > 0 || after.Compare(h.pruned) < 0 {
		h.mu.Unlock()
		return relay.ErrHistoryExpired
	}
	h.mu.Unlock()
	if h.entered != nil {
		h.entered <- struct{}{}
	}
	if h.gate != nil {
		select {
		case <-h.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for len(replay) > 0 {
		n := 1
		for n < len(replay) && replay[n].Pos == replay[0].Pos {
			n++
		}
		if err := fn(replay[:n]); err != nil {
			return err
		}
		replay = replay[n:]
	}
	return nil
}

// recConn is a Conn that records what the session writes, as text, and
// reports each frame written at once, or, when held, only when released.
type recConn struct {
	s      *Session
	frames chan string
	// gone, when set, is closed once the session's Gone, which Close
	// runs, has returned.
	gone chan struct{}

	mu      sync.Mutex
	held    bool
	waiting []int // lengths of the frames held back, oldest first
}

func (c *recConn) Write(frame []byte) error {
	c.frames <- string(frame)
	c.mu.Lock()
	if c.held {
		c.waiting = append(c.waiting, len(frame))
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.s.Sent(len(frame))
	return nil
}

// hold stops reporting frames written (a client that reads nothing).
func (c *recConn) hold() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// release reports the held frames written, and the next ones at once.
func (c *recConn) release() {
	c.mu.Lock()
	c.held = false
	waiting := c.waiting
	c.waiting = nil
	c.mu.Unlock()
	for _, n := range waiting {
		c.s.Sent(n)
	}
}

func (c *recConn) Close(code int, reason string) {
	c.frames <- fmt.Sprintf("close %d %s", code, reason)
	go func() {
		c.s.Gone()
		if c.gone != nil {
			close(c.gone)
		}
	}()
}

func (c *recConn) Request() *http.Request { return nil }

// recHandler renders what the session sends as short text frames:
// "<stream>@<id>.<part>" for an event, "resync", "resumed <n>".
type recHandler struct {
	s     *Session
	p     auth.Principal
	since string // resumed from at Open when not empty
}

func (h *recHandler) Transport() string { return "ws" }

func (h *recHandler) Open() {
	h.s.Start(h.p, func() {
		if h.since != "" {
			h.s.ResumeLocked(h.since)
		}
	})
}
func (h *recHandler) Message([]byte) {}
func (h *recHandler) Binary([]byte)  {}
func (h *recHandler) Closed()        {}
func (h *recHandler) EventLocked(ev *relay.Event) []byte {
	if len(ev.Data) > 2 { // more than {}: a large row, sent as its data
		return fmt.Appendf(nil, "%s@%d.%d %s", ev.Stream, ev.Pos.ID, ev.Part, ev.Data)
	}
	return fmt.Appendf(nil, "%s@%d.%d", ev.Stream, ev.Pos.ID, ev.Part)
}
func (h *recHandler) ResyncLocked() { h.s.WriteLocked([]byte("resync")) }
func (h *recHandler) ResumedLocked(n int) {
	h.s.WriteLocked(fmt.Appendf(nil, "resumed %d", n))
}
func (h *recHandler) ExpiredLocked()              { h.s.CloseLocked(CloseUnauthorized, "token expired") }
func (h *recHandler) ForbiddenLocked(team string) { h.s.WriteLocked([]byte("forbidden " + team)) }

type env struct {
	t    *testing.T
	hub  *hub.Hub
	hist *memHistory
	tr   *Transport
}

// newEnv runs a Transport on a hub at epoch e1 whose head is the last of
// events, which hist holds.
func newEnv(t *testing.T, o Options, events ...relay.Event) *env {
	t.Helper()
	h := hub.New()
	var head relay.Pos
	if len(events) > 0 {
		head = events[len(events)-1].Pos
	}
	h.Reset("e1", head)
	hist := &memHistory{events: events}
	o.Hub, o.History = h, hist
	tr := New(o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr.Drain(ctx, 0)
		if n := tr.Sessions(); n != 0 {
			t.Errorf("%d sessions still open after Drain", n)
		}
	})
	return &env{t: t, hub: h, hist: hist, tr: tr}
}

// publish records events in the history and delivers them, as the pipeline
// does with one transaction.
func (e *env) publish(events ...relay.Event) {
	e.hist.mu.Lock()
	e.hist.events = append(e.hist.events, events...)
	e.hist.mu.Unlock()
	e.hub.Publish(events, events[len(events)-1].Pos)
}

// ev returns part part of the change with id id (tick 1, its own
// transaction).
func ev(stream string, id int64, part uint8) relay.Event {
	return relay.Event{Name: "lead:updated", Entity: "lead", Stream: stream, Pos: at(id), Part: part, Data: []byte(`{}`)}
}

func at(id int64) relay.Pos { return relay.Pos{Tick: 1, Tx: id, ID: id} }

// pos encodes the position of epoch after the change with id id.
func pos(epoch string, id int64) string {
	return relay.Position{Epoch: epoch, Pos: at(id)}.Encode()
}

type client struct {
	t *testing.T
	s *Session
	c *recConn
}

// attach opens a session for user u (streams "all" and "user:u"), resuming
// from since when it is not empty.
func (e *env) attach(since string) *client {
	e.t.Helper()
	c := &recConn{frames: make(chan string, 1024)}
	s := e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: []string{}}, since: since}
	})
	if s == nil {
		e.t.Fatal("Attach refused the session")
	}
	return &client{t: e.t, s: s, c: c}
}

// next returns the next frame the session wrote, waiting for it.
func (c *client) next() string {
	c.t.Helper()
	select {
	case f := <-c.c.frames:
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatal("no frame within 5s")
		return ""
	}
}

// expect checks the next frames, in order.
func (c *client) expect(want ...string) {
	c.t.Helper()
	var got []string
	for range want {
		got = append(got, c.next())
	}
	if !slices.Equal(got, want) {
		c.t.Fatalf("frames %q, want %q", got, want)
	}
}

// expectNone checks that nothing was written so far.
func (c *client) expectNone() {
	c.t.Helper()
	select {
	case f := <-c.c.frames:
		c.t.Fatalf("unexpected frame %q", f)
	default:
	}
}

// A session that has not gone live holds live events (they are not lost),
// and sends them, past its position, once it goes live.
func TestAwaitHoldsLiveEventsUntilGoLive(t *testing.T) {
	e := newEnv(t, Options{}, ev("all", 1, 0))
	c := e.attach("")
	e.publish(ev("all", 1, 0)) // at the head: already covered by the position
	e.publish(ev("all", 2, 0), ev("user:u", 3, 0))
	e.publish(ev("team:9", 4, 0)) // a stream the session does not follow
	c.expectNone()
	c.s.Lock()
	if !c.s.AwaitingLocked() {
		t.Error("a started session that was not resumed is not awaiting")
	}
	c.s.GoLiveLocked()
	c.s.Unlock()
	c.expect("all@2.0", "user:u@3.0")
	e.publish(ev("all", 5, 0))
	c.expect("all@5.0")
	c.expectNone()
}

// A resume replays every event after its position in commit order, all
// parts of a change, then says resumed with the count, then sends the live
// events held during the replay; nothing twice.
func TestResumeReplaysThenGoesLive(t *testing.T) {
	e := newEnv(t, Options{},
		ev("all", 1, 0), ev("all", 2, 0), ev("user:u", 3, 0), ev("user:u", 3, 1), ev("team:9", 4, 0), ev("all", 5, 0))
	e.hist.entered, e.hist.gate, e.hist.done = make(chan struct{}, 1), make(chan struct{}), make(chan error, 1)
	c := e.attach(pos("e1", 1))
	<-e.hist.entered
	e.hub.Publish([]relay.Event{ev("all", 5, 0)}, at(5)) // delivered live too: sent once
	e.publish(ev("all", 6, 0))
	c.expectNone()
	close(e.hist.gate)
	c.expect("all@2.0", "user:u@3.0", "user:u@3.1", "all@5.0", "resumed 4", "all@6.0")
	if err := <-e.hist.done; err != nil {
		t.Fatalf("replay: %v", err)
	}
	e.publish(ev("all", 7, 0))
	c.expect("all@7.0")
	c.expectNone()
}

// A session keeps no replay state once its replay ended (its context and
// the space signal are released: an idle session should cost little), and
// makes its rate limiter only when a client message comes.
func TestReplayStateIsReleased(t *testing.T) {
	e := newEnv(t, Options{}, ev("all", 1, 0), ev("all", 2, 0))
	c := e.attach(pos("e1", 1))
	c.expect("all@2.0", "resumed 1")
	// Released before "resumed" is written: no wait.
	c.s.Lock()
	released := c.s.run.Load() == nil
	lim := c.s.lim
	c.s.Unlock()
	if lim != nil {
		t.Fatal("a session that received no message has a rate limiter")
	}
	if !released {
		t.Fatal("the replay's context or space signal outlives it")
	}
	c.s.Lock()
	if allowed, _ := c.s.AllowLocked(); !allowed || c.s.lim == nil {
		t.Error("the first client message is not allowed by a new limiter")
	}
	c.s.Unlock()
}

// A resume whose history is gone, or of another epoch, tells the client to
// resync and goes live from the head, replaying nothing.
func TestResumeUnservableResyncs(t *testing.T) {
	for _, tt := range []struct {
		name   string
		since  string
		pruned int64
	}{
		{"pruned", pos("e1", 1), 2},
		{"other epoch", pos("e0", 1), 0},
		{"ahead of the history", pos("e1", 9), 0},
		{"malformed", "p2.!!", 0},
		{"earlier per-stream form", "p1.ZTEKYWxsPTE", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{}, ev("all", 1, 0), ev("all", 2, 0), ev("all", 3, 0))
			e.hist.pruned = at(tt.pruned)
			c := e.attach(tt.since)
			c.expect("resync")
			e.publish(ev("all", 4, 0))
			c.expect("all@4.0")
			c.expectNone()
		})
	}
}

// A resume more than ReplayLimit events behind stops replaying once past
// the limit and resyncs instead of saying resumed.
func TestResumePastReplayLimitResyncs(t *testing.T) {
	e := newEnv(t, Options{ReplayLimit: 2},
		ev("all", 1, 0), ev("all", 2, 0), ev("all", 3, 0), ev("all", 4, 0), ev("all", 5, 0))
	c := e.attach(pos("e1", 0))
	c.expect("all@1.0", "all@2.0", "all@3.0", "resync")
	e.publish(ev("all", 6, 0))
	c.expect("all@6.0")
	c.expectNone()
}

// An epoch change during a replay ends the replay: the client gets resync,
// and after it neither the replayed events (of the old epoch) nor resumed,
// only live events of the new epoch.
func TestResetEndsReplay(t *testing.T) {
	e := newEnv(t, Options{}, ev("all", 1, 0), ev("all", 2, 0), ev("all", 3, 0))
	e.hist.entered, e.hist.gate, e.hist.done = make(chan struct{}, 1), make(chan struct{}), make(chan error, 1)
	c := e.attach(pos("e1", 0))
	<-e.hist.entered
	// The database was restored: a new epoch whose history starts over.
	e.hub.Reset("e2", relay.Pos{})
	c.expect("resync")
	close(e.hist.gate)
	<-e.hist.done
	// A live event of the new epoch: once it is out, anything the replay
	// would have sent is out too (a replay that went on would have held it
	// until after its resumed).
	e.publish(ev("user:u", 1, 0))
	c.expect("user:u@1.0")
	c.expectNone()
	c.s.Lock()
	defer c.s.Unlock()
	if got, want := c.s.PositionLocked(), pos("e2", 1); got != want {
		t.Errorf("position %q, want %q", got, want)
	}
}

// big returns the change with id id in stream all, its data n bytes.
func big(id int64, n int) relay.Event {
	e := ev("all", id, 0)
	e.Data = []byte(`"` + strings.Repeat("x", n-2) + `"`)
	return e
}

// A live session is bounded in bytes as well as frames: events pass while
// the bytes in flight stay within QueueBytes; the one that would take them
// past it closes the session with 4008, after what it was sent. One event
// alone in flight always passes, however large.
func TestQueueBoundInBytes(t *testing.T) {
	e := newEnv(t, Options{QueueBytes: 1000})
	c := e.attach("")
	c.s.Lock()
	c.s.GoLiveLocked()
	c.s.Unlock()
	c.c.hold()
	e.publish(big(1, 600))
	if f := c.next(); !strings.HasPrefix(f, "all@1.0 ") {
		t.Fatalf("got %.40q…", f)
	}
	e.publish(ev("all", 2, 0))
	c.expect("all@2.0")
	e.publish(big(3, 600)) // 1200 bytes in flight: 4008
	c.expect("close 4008 slow consumer")
	c.expectNone()

	d := e.attach("")
	d.s.Lock()
	d.s.GoLiveLocked()
	d.s.Unlock()
	d.c.hold()
	e.publish(big(4, 3000)) // larger than the bound, alone in flight: passes
	if f := d.next(); !strings.HasPrefix(f, "all@4.0 ") {
		t.Fatalf("got %.40q…", f)
	}
	d.expectNone()
}

// The bound counts bytes written as written: a client that reads keeps its
// session however many large events it gets.
func TestQueueBytesFreedAsWritten(t *testing.T) {
	e := newEnv(t, Options{QueueBytes: 1000})
	c := e.attach("")
	c.s.Lock()
	c.s.GoLiveLocked()
	c.s.Unlock()
	for id := int64(1); id <= 20; id++ {
		e.publish(big(id, 900))
		if f := c.next(); !strings.HasPrefix(f, fmt.Sprintf("all@%d.0 ", id)) {
			t.Fatalf("event %d: got %.40q…", id, f)
		}
	}
	c.expectNone()
}

// A replay is paced by the bytes in flight too: it waits while they are
// past half the bound, and goes on as the client reads, instead of
// closing the session.
func TestReplayPacedByBytes(t *testing.T) {
	events := []relay.Event{ev("all", 1, 0)}
	for id := int64(2); id <= 6; id++ {
		events = append(events, big(id, 400))
	}
	e := newEnv(t, Options{QueueBytes: 1000}, events...)
	c := &recConn{frames: make(chan string, 1024), held: true}
	s := e.tr.Attach(c, nil, func(s *Session) Handler {
		c.s = s
		return &recHandler{s: s, p: auth.Principal{UserID: "u", TeamIDs: []string{}}, since: pos("e1", 1)}
	})
	cl := &client{t: t, s: s, c: c}
	// 400 bytes in flight: under half the bound, the next one goes; then
	// 800: the replay waits for the client.
	for id := 2; id <= 3; id++ {
		if f := cl.next(); !strings.HasPrefix(f, fmt.Sprintf("all@%d.0 ", id)) {
			t.Fatalf("got %.40q…", f)
		}
	}
	cl.expectNone()
	c.release()
	for id := 4; id <= 6; id++ {
		if f := cl.next(); !strings.HasPrefix(f, fmt.Sprintf("all@%d.0 ", id)) {
			t.Fatalf("got %.40q…", f)
		}
	}
	cl.expect("resumed 5")
}

// Drain closes the first batch at once and the next ones spread over its
// window; when its context ends first, it closes the rest at once and
// returns.
func TestDrainSpreadsThenClosesTheRest(t *testing.T) {
	e := newEnv(t, Options{})
	var cs []*client
	for range 10 {
		cs = append(cs, e.attach(""))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.tr.Drain(ctx, 100*time.Second) // ten batches, ten seconds apart
		close(done)
	}()
	cases := make([]reflect.SelectCase, len(cs))
	for i, c := range cs {
		cases[i] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.c.frames)}
	}
	first, v, _ := reflect.Select(cases)
	if f := v.String(); f != "close 1001 relay draining" {
		t.Fatalf("first frame %q, want the first batch's close", f)
	}
	for i, c := range cs {
		if i != first {
			c.expectNone() // the next batch is ten seconds away
		}
	}
	cancel()
	for i, c := range cs {
		if i != first {
			c.expect("close 1001 relay draining")
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after its context ended")
	}
}

// The latency histogram times an event frame until the socket wrote it,
// not until it was queued: a frame the client does not read yet is not
// observed; once written it is, with the time since its commit; and one
// frame is timed at a time.
func TestLatencyTimedAtTheSocketWrite(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, Options{Metrics: metrics.New(reg, "test")})
	c := e.attach("")
	c.s.Lock()
	c.s.GoLiveLocked()
	c.s.Unlock()
	observed := func() (uint64, float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "rowcast_event_latency_seconds" {
				h := mf.GetMetric()[0].GetHistogram()
				return h.GetSampleCount(), h.GetSampleSum()
			}
		}
		t.Fatal("no rowcast_event_latency_seconds")
		return 0, 0
	}
	c.c.hold()
	first, second := ev("all", 1, 0), ev("all", 2, 0)
	first.CommittedAt = time.Now().Add(-time.Second)
	second.CommittedAt = time.Now()
	e.publish(first)
	e.publish(second)
	c.expect("all@1.0", "all@2.0")
	if n, _ := observed(); n != 0 {
		t.Fatalf("%d latencies observed before the socket wrote anything", n)
	}
	c.c.release()
	if n, sum := observed(); n != 1 || sum < 1 {
		t.Fatalf("after the writes: %d latencies observed, %.3fs in all; want the first frame's, over 1s", n, sum)
	}
	third := ev("all", 3, 0)
	third.CommittedAt = time.Now()
	e.publish(third)
	c.expect("all@3.0")
	if n, _ := observed(); n != 2 {
		t.Fatalf("%d latencies observed, want 2 once the next frame was written", n)
	}
}
