package sio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay/transport/session"
)

// pollClient speaks Engine.IO's polling transport byte for byte.
type pollClient struct {
	t   *testing.T
	url string // .../socket.io/?EIO=4&transport=polling
	sid string
}

// newPollEnv runs the endpoint with polling on.
func newPollEnv(t *testing.T, heartbeat time.Duration, o Options) *testEnv {
	o.Polling = true
	return newEnv(t, heartbeat, o)
}

// handshake opens a polling session and returns its open packet's fields.
func (e *testEnv) handshake() (*pollClient, map[string]json.RawMessage) {
	e.t.Helper()
	c := &pollClient{t: e.t, url: e.ts.URL + "/socket.io/?EIO=4&transport=polling"}
	status, body := c.do("GET", c.url, "")
	var open map[string]json.RawMessage
	if status != 200 || !strings.HasPrefix(body, "0{") || json.Unmarshal([]byte(body[1:]), &open) != nil {
		e.t.Fatalf("handshake: %d %q", status, body)
	}
	_ = json.Unmarshal(open["sid"], &c.sid)
	return c, open
}

func (c *pollClient) do(method, url, body string) (int, string) {
	c.t.Helper()
	status, b, err := doRequest(method, url, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return status, b
}

func doRequest(method, url, body string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (c *pollClient) sidURL() string { return c.url + "&sid=" + c.sid }

// get polls once and returns the payload's packets.
func (c *pollClient) get() []string {
	c.t.Helper()
	status, body := c.do("GET", c.sidURL(), "")
	if status != 200 {
		c.t.Fatalf("poll: %d %q", status, body)
	}
	return strings.Split(body, "\x1e")
}

// next polls until it gets a packet that is not a ping or a noop,
// answering pings, and returns the packets from there on.
func (c *pollClient) next() []string {
	c.t.Helper()
	for {
		var rest []string
		for _, p := range c.get() {
			switch {
			case len(rest) > 0:
				rest = append(rest, p)
			case p == "2":
				c.post("3")
			case p != "6":
				rest = append(rest, p)
			}
		}
		if len(rest) > 0 {
			return rest
		}
	}
}

func (c *pollClient) post(packets ...string) {
	c.t.Helper()
	status, body := c.do("POST", c.sidURL(), strings.Join(packets, "\x1e"))
	if status != 200 || body != "ok" {
		c.t.Fatalf("post: %d %q", status, body)
	}
}

// connect CONNECTs with a token and returns the reply.
func (c *pollClient) connect(e *testEnv, user string) string {
	c.t.Helper()
	c.post("40" + authJSON("token", e.token(user, []string{"7"}, time.Hour)))
	got := c.next()
	if len(got) != 1 || !strings.HasPrefix(got[0], `40{"sid":`) {
		c.t.Fatalf("CONNECT reply %q", got)
	}
	return got[0]
}

// TestPollingPayloads: the handshake offers the upgrade; packets of a GET
// payload and of a POST body are joined by the record separator; events
// flow over polling.
func TestPollingPayloads(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	c, open := e.handshake()
	if string(open["upgrades"]) != `["websocket"]` || string(open["pingInterval"]) != "60000" || len(c.sid) != 20 {
		t.Fatalf("open packet %v", open)
	}
	c.connect(e, "1")
	e.publish("team:7", "lead:created", `{"n":1}`)
	e.publish("team:7", "lead:updated", `{"n":2}`)
	var got []string
	for len(got) < 2 {
		got = append(got, c.next()...)
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], `42["lead:created",{"n":1},"`) || !strings.HasPrefix(got[1], `42["lead:updated",{"n":2},"`) {
		t.Fatalf("events %q", got)
	}
	// Two packets in one POST, each answered in order in one payload.
	c.post(`421["a"]`, `422["b"]`)
	got = c.next()
	want := []string{`431[{"message":"client events are not supported"}]`, `432[{"message":"client events are not supported"}]`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("acks %q, want %q", got, want)
	}
	// The client's close packet ends the session.
	c.post("1")
	if status, body, _ := doRequest("GET", c.sidURL(), ""); status != 400 || body != `{"code":1,"message":"Session ID unknown"}` {
		t.Fatalf("after the client's close: %d %s", status, body)
	}
}

// TestPollingUnknownSID: a poll, a post or an upgrade for a sid the server
// does not know is answered 400 "Session ID unknown".
func TestPollingUnknownSID(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	base := e.ts.URL + "/socket.io/?EIO=4&sid=nope&transport="
	for _, tc := range []struct{ method, transport string }{{"GET", "polling"}, {"POST", "polling"}, {"GET", "websocket"}} {
		status, body, err := doRequest(tc.method, base+tc.transport, "40")
		if err != nil {
			t.Fatal(err)
		}
		if status != 400 || body != `{"code":1,"message":"Session ID unknown"}` {
			t.Errorf("%s %s: %d %s", tc.method, tc.transport, status, body)
		}
	}
}

// TestPollingConcurrentGETCloses: a second GET while one is pending is an
// error that ends the session: one poll gets 400, the other the close
// packet, and the sid is unknown after.
func TestPollingConcurrentGETCloses(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	c, _ := e.handshake()
	c.connect(e, "1")
	type result struct {
		status int
		body   string
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			status, body, err := doRequest("GET", c.sidURL(), "")
			if err != nil {
				body = err.Error()
			}
			results <- result{status, body}
		}()
	}
	a, b := <-results, <-results
	if a.status != 200 {
		a, b = b, a
	}
	if a.status != 200 || a.body != "1" || b.status != 400 {
		t.Fatalf("two concurrent polls: %v and %v, want 200 \"1\" and 400", a, b)
	}
	if status, body, _ := doRequest("GET", c.sidURL(), ""); status != 400 || !strings.Contains(body, "Session ID unknown") {
		t.Fatalf("after the overlap: %d %s", status, body)
	}
}

// TestPollingUpgrade: 2probe is answered 3probe on the WebSocket and the
// pending poll is released with a noop; what is queued before the client's
// 5 arrives on the WebSocket, in order, then the events after it; polling
// that sid is refused after the upgrade. The Socket.IO session is the same.
func TestPollingUpgrade(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	c, _ := e.handshake()
	reply := c.connect(e, "1")
	e.publish("team:7", "before", `{"n":1}`)
	if got := c.next(); len(got) != 1 || !strings.HasPrefix(got[0], `42["before"`) {
		t.Fatalf("event over polling %q", got)
	}

	pending := make(chan string, 1)
	go func() {
		_, body, err := doRequest("GET", c.sidURL(), "")
		if err != nil {
			body = err.Error()
		}
		pending <- body
	}()
	ws := e.dial("&sid=" + c.sid)
	ws.send("2probe")
	if s, err := ws.read(5 * time.Second); err != nil || s != "3probe" {
		t.Fatalf("probe answer %q %v", s, err)
	}
	// The pending poll is released (the poll may also have come after the
	// probe, which answers it at once).
	if body := <-pending; body != "6" {
		t.Fatalf("pending poll during the upgrade: %q, want a noop", body)
	}
	// Queued for polling (publish delivers synchronously), then moved to
	// the WebSocket by the upgrade.
	e.publish("team:7", "queued", `{"n":2}`)
	ws.send("5")
	e.publish("team:7", "after", `{"n":3}`)
	for _, want := range []string{`42["queued",{"n":2},"`, `42["after",{"n":3},"`} {
		if s := ws.next(); !strings.HasPrefix(s, want) {
			t.Fatalf("over the WebSocket: %q, want %s…", s, want)
		}
	}
	if status, body, _ := doRequest("GET", c.sidURL(), ""); status != 400 || body != `{"code":3,"message":"Bad request"}` {
		t.Fatalf("poll after the upgrade: %d %s", status, body)
	}
	// Same Socket.IO session: a client event is answered on the WebSocket.
	ws.send(`423["x"]`)
	if s := ws.next(); s != `433[{"message":"client events are not supported"}]` {
		t.Fatalf("after the upgrade: %q (CONNECT reply was %s)", s, reply)
	}
}

// TestPollingCloses: over polling, a rate limit abuse ends the session with
// the close packet after what was queued, and a client that stops answering
// pings is closed after pingTimeout; the sid is unknown after.
func TestPollingCloses(t *testing.T) {
	t.Run("rate limit", func(t *testing.T) {
		e := newPollEnv(t, time.Minute, Options{})
		c, _ := e.handshake()
		c.connect(e, "1")
		burst := make([]string, 0, 200)
		for i := range 200 {
			burst = append(burst, fmt.Sprintf(`42%d["x"]`, i+1))
		}
		c.post(burst...)
		var got []string
		for len(got) == 0 || got[len(got)-1] != "1" {
			got = append(got, c.get()...)
		}
		acks := 0
		for _, p := range got[:len(got)-1] {
			if strings.HasPrefix(p, "43") {
				acks++
			}
		}
		if acks < 49+20 {
			t.Fatalf("%d acks before the close packet, want every message before it answered", acks)
		}
		if status, _, _ := doRequest("GET", c.sidURL(), ""); status != 400 {
			t.Fatalf("after the close: %d", status)
		}
	})
	t.Run("slow consumer", func(t *testing.T) {
		e := newPollEnv(t, time.Minute, Options{})
		c, _ := e.handshake()
		c.connect(e, "1")
		// Nobody polls while 300 events are written: the queue (256)
		// overflows and the session closes after what it queued.
		for i := range 300 {
			e.publish("team:7", "lead:updated", fmt.Sprintf(`{"n":%d}`, i+1))
		}
		var got []string
		for len(got) == 0 || got[len(got)-1] != "1" {
			got = append(got, c.get()...)
		}
		n := 0
		for _, p := range got[:len(got)-1] {
			if p == "2" || p == "6" {
				continue
			}
			n++
			if want := fmt.Sprintf(`42["lead:updated",{"n":%d},"`, n); !strings.HasPrefix(p, want) {
				t.Fatalf("packet %q, want %s…", p, want)
			}
		}
		if n == 0 || n >= 300 {
			t.Fatalf("%d events before the close packet", n)
		}
	})
	t.Run("token expiry", func(t *testing.T) {
		e := newPollEnv(t, time.Minute, Options{})
		c, _ := e.handshake()
		c.post("40" + authJSON("token", e.token("1", []string{"7"}, 1200*time.Millisecond)))
		if got := c.next(); !strings.HasPrefix(got[0], `40{"sid":`) {
			t.Fatalf("CONNECT reply %q", got)
		}
		var got []string
		for len(got) == 0 || got[len(got)-1] != "1" {
			got = c.get()
			if slices.Contains(got, "41") {
				t.Fatal("DISCONNECT sent: the client would not reconnect")
			}
		}
	})
	t.Run("heartbeat", func(t *testing.T) {
		e := newPollEnv(t, 150*time.Millisecond, Options{PingTimeout: 100 * time.Millisecond})
		c, _ := e.handshake()
		got := c.get()
		for len(got) == 1 && got[0] == "6" {
			got = c.get() // a poll may end with a noop after the interval
		}
		if len(got) != 1 || got[0] != "2" {
			t.Fatalf("want a ping, got %q", got)
		}
		// No "3": the next poll gets the close packet.
		if got := c.get(); got[len(got)-1] != "1" && (len(got) != 1 || got[0] != "6" || c.get()[0] != "1") {
			t.Fatalf("want the close packet after a missed pong, got %q", got)
		}
	})
}

// TestPollingDrain: draining releases a pending poll with the close packet.
func TestPollingDrain(t *testing.T) {
	h := newPollEnv(t, time.Minute, Options{})
	c, _ := h.handshake()
	c.connect(h, "1")
	pending := make(chan []string, 1)
	go func() {
		_, body, _ := doRequest("GET", c.sidURL(), "")
		pending <- strings.Split(body, "\x1e")
	}()
	tr := h.transport
	// Drain closes the session whether or not its poll arrived yet.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr.Drain(ctx, 0)
	if got := <-pending; got[len(got)-1] != "1" {
		t.Fatalf("pending poll on drain: %q", got)
	}
	if n := tr.Sessions(); n != 0 {
		t.Fatalf("%d sessions after drain", n)
	}
}

var _ session.Conn = (*pollSocket)(nil)

// pollSocketOf returns the server side of the polling session sid.
func (e *testEnv) pollSocketOf(sid string) *pollSocket {
	e.t.Helper()
	so := e.ts.Config.Handler.(*Server).lookup(sid)
	if so == nil {
		e.t.Fatalf("no polling session %s", sid)
	}
	return so
}

// TestPollingOverlappingPOSTCloses: a POST that arrives while the packets
// of the previous one are still being delivered is answered 400 and ends
// the session, as with the reference server: the packets of two POSTs are
// never delivered concurrently, out of order.
func TestPollingOverlappingPOSTCloses(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	c, _ := e.handshake()
	c.connect(e, "1")
	so := e.pollSocketOf(c.sid)
	entered, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	so.mu.Lock()
	deliver := so.deliver
	so.deliver = func(p []byte) {
		if held.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
		deliver(p)
	}
	so.mu.Unlock()
	type result struct {
		status int
		body   string
	}
	first := make(chan result, 1)
	go func() {
		status, body, err := doRequest("POST", c.sidURL(), `421["a"]`)
		if err != nil {
			body = err.Error()
		}
		first <- result{status, body}
	}()
	<-entered
	status, body, err := doRequest("POST", c.sidURL(), `422["b"]`)
	close(release)
	if err != nil {
		t.Fatal(err)
	}
	if status != 400 {
		t.Fatalf("a POST while the previous one is delivered: %d %q, want 400", status, body)
	}
	if r := <-first; r.status != 200 || r.body != "ok" {
		t.Fatalf("the first POST: %v, want 200 ok", r)
	}
	if status, body, _ := doRequest("GET", c.sidURL(), ""); status != 400 || body != `{"code":1,"message":"Session ID unknown"}` {
		t.Fatalf("after the overlap: %d %s", status, body)
	}
}

// TestPollingOversizedPOSTCloses: a POST body over the message size limit
// is answered 413 and closes the session like an oversized WebSocket frame:
// the next poll gets the close packet, and the sid is unknown after.
func TestPollingOversizedPOSTCloses(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	c, _ := e.handshake()
	c.connect(e, "1")
	big := `42["x","` + strings.Repeat("a", int(e.transport.Options().MaxMessageSize)) + `"]`
	if status, body := c.do("POST", c.sidURL(), big); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized POST: %d %q, want 413", status, body)
	}
	if got := c.get(); got[len(got)-1] != "1" {
		t.Fatalf("the poll after an oversized POST: %q, want the close packet", got)
	}
	if status, body, _ := doRequest("GET", c.sidURL(), ""); status != 400 || body != `{"code":1,"message":"Session ID unknown"}` {
		t.Fatalf("after the close packet: %d %s", status, body)
	}
}

// TestPollingProbeAnswersCountedPerProbe: a probe answer that an earlier,
// failed probe never wrote does not swallow the count of a session frame
// written on a later WebSocket, so the session's queue keeps its full
// room. The room is measured as the frames the session takes before it
// closes as a slow consumer, against a session without the failed probe.
func TestPollingProbeAnswersCountedPerProbe(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	srv := e.ts.Config.Handler.(*Server)
	// room opens a session (synchronously, so every frame written so far
	// is counted), reports one frame written on a second probe after
	// failed probes, and returns how many frames the session then takes.
	room := func(failedProbe bool) int {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest("GET", "/socket.io/?EIO=4&transport=polling", nil))
		var open struct {
			SID string `json:"sid"`
		}
		if body := rec.Body.String(); rec.Code != 200 || !strings.HasPrefix(body, "0{") || json.Unmarshal([]byte(body[1:]), &open) != nil {
			t.Fatalf("handshake: %d %q", rec.Code, body)
		}
		so := e.pollSocketOf(open.SID)
		if failedProbe {
			// Its "3probe" was queued but never written.
			first := &upgradeConn{so: so}
			first.uncounted.Add(1)
		}
		second := &upgradeConn{so: so}
		second.Sent(1)
		so.s.Lock()
		defer so.s.Unlock()
		n := 0
		for ; !so.s.ClosedLocked(); n++ {
			if n > 1<<16 {
				t.Fatalf("the session took %d frames and is still open: its queue is not counted", n)
			}
			so.s.WriteLocked([]byte("4x"))
		}
		return n
	}
	if without, with := room(false), room(true); with != without {
		t.Fatalf("the session takes %d frames after a failed probe, %d without one", with, without)
	}
}

// Over polling, a CONNECT without a token takes the one of the handshake
// request's Authorization header, which the session keeps.
func TestPollingConnectTokenFromHandshakeHeader(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	c := &pollClient{t: t, url: e.ts.URL + "/socket.io/?EIO=4&transport=polling"}
	req, err := http.NewRequest("GET", c.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token("3", []string{"7"}, time.Hour))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	var open struct{ SID string }
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "0{") ||
		json.Unmarshal(body[1:], &open) != nil {
		t.Fatalf("handshake: %d %q %v", resp.StatusCode, body, err)
	}
	c.sid = open.SID
	c.post("40")
	if got := c.next(); len(got) != 1 || !strings.HasPrefix(got[0], `40{"sid":`) {
		t.Fatalf("CONNECT reply %q", got)
	}
	c.post("1") // the client's close ends the session
}

// A polling session tells the disconnect metric how it ended: 1006 while
// nothing was said (a client that stops polling), 1000 after the client's
// Engine.IO close packet.
func TestPollingEndCode(t *testing.T) {
	e := newPollEnv(t, time.Minute, Options{})
	c, _ := e.handshake()
	c.connect(e, "1")
	so := e.pollSocketOf(c.sid)
	if code := so.EndCode(); code != 1006 {
		t.Fatalf("EndCode before any close: %d, want 1006", code)
	}
	c.post("1")
	if code := so.EndCode(); code != 1000 {
		t.Fatalf("EndCode after the client's close packet: %d, want 1000", code)
	}
}
