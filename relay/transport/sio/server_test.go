package sio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/history"
	"github.com/rowcast/rowcast/relay/hub"
	"github.com/rowcast/rowcast/relay/transport/session"
)

// These tests run the Socket.IO endpoint on a session.Transport with an
// in-memory hub and history, and speak the protocol with a raw WebSocket
// client, byte for byte. The end-to-end suite (node_test.go) runs the real
// socket.io-client against a relay on PostgreSQL.

const testSecret = "sio-test-secret-sio-test-secret-0123456"

// memHistory is an in-memory relay.ChangeHistory: the changes published so
// far. The transport replays them through history.Mapped.
type memHistory struct {
	mu      sync.Mutex
	changes []relay.Change
	pruned  relay.Pos // changes at or before it are gone
}

func (h *memHistory) Epoch(context.Context) (string, error) { return "e1", nil }

func (h *memHistory) Replay(_ context.Context, streams []string, from relay.Position, fn func([]relay.Change) error) error {
	if from.Epoch != "e1" {
		return relay.ErrHistoryExpired
	}
	after := from.Pos
	h.mu.Lock()
	var batch []relay.Change
	var last relay.Pos
	for _, c := range h.changes {
		last = c.Pos
		if slices.Contains(streams, c.Stream) && c.Pos.Compare(after) > 0 {
			batch = append(batch, c)
		}
	}
	if after.Compare(last) > 0 || after.Compare(h.pruned) < 0 {
		h.mu.Unlock()
		return relay.ErrHistoryExpired
	}
	h.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	return fn(batch)
}

// eventMapper maps a change to one event named by its table.
type eventMapper struct{}

func (eventMapper) Map(dst []relay.Event, c *relay.Change) []relay.Event {
	return append(dst, relay.Event{Name: c.Table, Entity: "lead", Stream: c.Stream, Pos: c.Pos, Data: c.Row})
}

type testEnv struct {
	t    *testing.T
	hub  *hub.Hub
	hist *memHistory
	ts   *httptest.Server
	id   int64 // the last change id published

	transport *session.Transport
}

func newEnv(t *testing.T, heartbeat time.Duration, o Options) *testEnv {
	t.Helper()
	h := hub.New()
	h.Reset("e1", relay.Pos{})
	v, err := auth.NewVerifier(auth.Options{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	hist := &memHistory{}
	tr := session.New(session.Options{Hub: h, History: history.Mapped{Changes: hist, Mapper: eventMapper{}}, Verifier: v, Heartbeat: heartbeat})
	ts := httptest.NewServer(New(tr, o))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr.Drain(ctx, 0)
		ts.Close()
	})
	return &testEnv{t: t, hub: h, hist: hist, ts: ts, transport: tr}
}

// publish commits one change named name on stream, in a transaction of its
// own, and hands its event to the hub, as the pipeline would.
func (e *testEnv) publish(stream, name, data string) {
	c := relay.Change{Stream: stream, Pos: e.next(), Table: name, Row: json.RawMessage(data)}
	e.hist.mu.Lock()
	e.hist.changes = append(e.hist.changes, c)
	e.hist.mu.Unlock()
	e.hub.Publish(eventMapper{}.Map(nil, &c), c.Pos)
}

// next returns the position of the next change.
func (e *testEnv) next() relay.Pos {
	e.id++
	return relay.Pos{Tick: 1, Tx: e.id, ID: e.id}
}

func (e *testEnv) token(user string, teams []string, ttl time.Duration) string {
	e.t.Helper()
	tok, err := auth.Sign([]byte(testSecret), map[string]any{"sub": user, "teamId": teams, "exp": time.Now().Add(ttl).Unix()})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type rawClient struct {
	t *testing.T
	c *websocket.Conn
}

func (e *testEnv) dial(query string) *rawClient {
	e.t.Helper()
	return e.dialHeader(query, nil)
}

// dialHeader dials as dial does, with header in the upgrade request.
func (e *testEnv) dialHeader(query string, header http.Header) *rawClient {
	e.t.Helper()
	url := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/socket.io/?EIO=4&transport=websocket" + query
	c, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		e.t.Fatalf("dial: %v (%v)", err, resp)
	}
	e.t.Cleanup(func() { c.Close() })
	return &rawClient{t: e.t, c: c}
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	if err := c.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) read(timeout time.Duration) (string, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := c.c.ReadMessage()
	return string(b), err
}

// next returns the next frame that is not a heartbeat ping.
func (c *rawClient) next() string {
	c.t.Helper()
	for {
		s, err := c.read(5 * time.Second)
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if s != "2" {
			return s
		}
		c.send("3")
	}
}

// closed reads until the connection closes and returns the close code.
func (c *rawClient) closed() int {
	c.t.Helper()
	for {
		_, err := c.read(5 * time.Second)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		c.t.Fatalf("connection not closed with a close frame: %v", err)
	}
}

// open reads the open packet and returns its fields.
func (c *rawClient) open() map[string]any {
	c.t.Helper()
	s := c.next()
	if !strings.HasPrefix(s, "0{") {
		c.t.Fatalf("first frame %q, want the open packet", s)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s[1:]), &m); err != nil {
		c.t.Fatal(err)
	}
	return m
}

// connect sends CONNECT with auth and returns the reply's sid and pid.
func (c *rawClient) connect(auth string) (sid, pid string) {
	c.t.Helper()
	c.send("40" + auth)
	return c.connected()
}

func (c *rawClient) connected() (sid, pid string) {
	c.t.Helper()
	s := c.next()
	var r struct{ SID, PID string }
	if !strings.HasPrefix(s, "40{") || json.Unmarshal([]byte(s[2:]), &r) != nil || r.SID == "" || r.PID == "" {
		c.t.Fatalf("got %q, want 40{sid,pid}", s)
	}
	return r.SID, r.PID
}

// event reads one EVENT and returns its name, data and offset.
func (c *rawClient) event() (name, data, offset string) {
	c.t.Helper()
	s := c.next()
	var args []json.RawMessage
	if !strings.HasPrefix(s, "42[") || json.Unmarshal([]byte(s[2:]), &args) != nil || len(args) != 3 {
		c.t.Fatalf("got %q, want 42[name,data,offset]", s)
	}
	_ = json.Unmarshal(args[0], &name)
	_ = json.Unmarshal(args[2], &offset)
	return name, string(args[1]), offset
}

func authJSON(fields ...string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(fields); i += 2 {
		m[fields[i]] = fields[i+1]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestHandshakeErrors(t *testing.T) {
	e := newEnv(t, time.Minute, Options{})
	wsHeaders := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	cases := []struct {
		name, method, query string
		upgrade             bool
		status              int
		body                string
	}{
		{"polling", "GET", "EIO=4&transport=polling", false, 400, `{"code":0,"message":"Transport unknown"}`},
		{"polling EIO=3", "GET", "EIO=3&transport=polling", false, 400, `{"code":0,"message":"Transport unknown"}`},
		{"no transport", "GET", "EIO=4", true, 400, `{"code":0,"message":"Transport unknown"}`},
		{"webtransport", "GET", "EIO=4&transport=webtransport", true, 400, `{"code":0,"message":"Transport unknown"}`},
		{"sid", "GET", "EIO=4&transport=websocket&sid=abc", true, 400, `{"code":1,"message":"Session ID unknown"}`},
		{"post", "POST", "EIO=4&transport=websocket", false, 400, `{"code":2,"message":"Bad handshake method"}`},
		{"no upgrade", "GET", "EIO=4&transport=websocket", false, 400, `{"code":3,"message":"Bad request"}`},
		{"EIO=3", "GET", "EIO=3&transport=websocket", true, 400, `{"code":5,"message":"Unsupported protocol version"}`},
		{"no EIO", "GET", "transport=websocket", true, 400, `{"code":5,"message":"Unsupported protocol version"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, e.ts.URL+"/socket.io/?"+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.upgrade {
				req.Header = wsHeaders.Clone()
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || string(body) != tc.body || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("got %d %s %q, want %d %s application/json", resp.StatusCode, body, resp.Header.Get("Content-Type"), tc.status, tc.body)
			}
		})
	}
}

func TestOpenPacketAndHeartbeat(t *testing.T) {
	const interval = 150 * time.Millisecond
	e := newEnv(t, interval, Options{PingTimeout: 100 * time.Millisecond})
	c := e.dial("")
	s, err := c.read(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var open map[string]json.RawMessage
	if !strings.HasPrefix(s, "0") || json.Unmarshal([]byte(s[1:]), &open) != nil {
		t.Fatalf("open packet %q", s)
	}
	keys := make([]string, 0, len(open))
	for k := range open {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"}) {
		t.Fatalf("open packet fields %v", keys)
	}
	if string(open["upgrades"]) != "[]" || string(open["pingInterval"]) != "150" || string(open["pingTimeout"]) != "100" ||
		string(open["maxPayload"]) != "4096" || len(open["sid"]) != 22 {
		t.Fatalf("open packet %s", s)
	}
	// Answer five pings: the connection outlives several interval+timeout.
	start := time.Now()
	for i := 0; i < 5; i++ {
		s, err := c.read(time.Second)
		if err != nil || s != "2" {
			t.Fatalf("ping %d: %q %v", i, s, err)
		}
		c.send("3")
	}
	if since := time.Since(start); since < 3*(interval) {
		t.Fatalf("five pings in %v: the interval is not kept", since)
	}
	// Stop answering: the server closes after pingTimeout.
	if s, err := c.read(time.Second); err != nil || s != "2" {
		t.Fatalf("ping: %q %v", s, err)
	}
	if code := c.closed(); code != websocket.CloseNoStatusReceived {
		t.Fatalf("close %d after a missed pong, want a close without status", code)
	}
}

func TestProtocolViolationsClose(t *testing.T) {
	e := newEnv(t, time.Minute, Options{})
	tok := e.token("1", []string{"7"}, time.Hour)
	for name, frames := range map[string][]string{
		"client ping":            {"2"},
		"client ping probe":      {"2probe"},
		"unknown engine type":    {"9"},
		"empty":                  {""},
		"unknown socket.io type": {"49"},
		"event not an array":     {`40` + authJSON("token", tok), `42{"a":1}`},
		"reserved event name":    {`40` + authJSON("token", tok), `42["disconnect"]`},
		"event before connect":   {`42["hello"]`},
		"second connect":         {`40` + authJSON("token", tok), `40` + authJSON("token", tok)},
		"client connect_error":   {`40` + authJSON("token", tok), `44{"message":"x"}`},
		"text during binary":     {`40` + authJSON("token", tok), `451-["up",{"_placeholder":true,"num":0}]`, `42["x"]`},
	} {
		t.Run(name, func(t *testing.T) {
			c := e.dial("")
			c.open()
			for _, f := range frames {
				c.send(f)
			}
			for {
				s, err := c.read(5 * time.Second)
				if err != nil {
					var ce *websocket.CloseError
					if !errors.As(err, &ce) || ce.Code != websocket.CloseNoStatusReceived {
						t.Fatalf("want a close without status, got %v", err)
					}
					return
				}
				if !strings.HasPrefix(s, "40{") {
					t.Fatalf("unexpected frame %q before the close", s)
				}
			}
		})
	}
}

func TestConnectAuthAndNamespaces(t *testing.T) {
	e := newEnv(t, time.Minute, Options{})
	c := e.dial("")
	c.open()
	c.send(`40` + authJSON("token", "not-a-jwt"))
	if s := c.next(); s != `44{"message":"unauthorized"}` {
		t.Fatalf("bad token: %q", s)
	}
	expired := e.token("1", []string{"7"}, -time.Minute)
	c.send(`40` + authJSON("token", expired))
	if s := c.next(); s != `44{"message":"unauthorized"}` {
		t.Fatalf("expired token: %q", s)
	}
	c.send(`40/admin,` + authJSON("token", e.token("1", []string{"7"}, time.Hour)))
	if s := c.next(); s != `44/admin,{"message":"Invalid namespace"}` {
		t.Fatalf("other namespace: %q", s)
	}
	// The connection survived all three and connects with a good token.
	sid, pid := c.connect(authJSON("token", e.token("1", []string{"7"}, time.Hour)))
	if sid == pid || len(sid) != 20 {
		t.Fatalf("sid %q pid %q", sid, pid)
	}

	// The token may come from the access_token query parameter instead.
	q := e.dial("&access_token=" + e.token("2", []string{"7"}, time.Hour))
	q.open()
	q.connect("")
	// No token anywhere: unauthorized.
	n := e.dial("")
	n.open()
	n.send("40")
	if s := n.next(); s != `44{"message":"unauthorized"}` {
		t.Fatalf("no token: %q", s)
	}
}

// A CONNECT without a token takes the one of the upgrade request's
// Authorization header, read when the CONNECT comes, after the connection
// opened: the connection keeps it (and the query) from the request.
func TestConnectTokenFromUpgradeHeader(t *testing.T) {
	e := newEnv(t, time.Minute, Options{})
	bearer := http.Header{"Authorization": {"Bearer " + e.token("3", []string{"7"}, time.Hour)}}
	c := e.dialHeader("", bearer)
	c.open() // the connection is open: the CONNECT comes after
	c.connect("")
	e.publish(relay.UserStream("3"), "lead:created", `{"n":1}`)
	if name, _, _ := c.event(); name != "lead:created" {
		t.Fatalf("event %q, want lead:created for user 3", name)
	}
	// A bad one there is refused as any bad token.
	b := e.dialHeader("", http.Header{"Authorization": {"Bearer not-a-jwt"}})
	b.open()
	b.send("40")
	if s := b.next(); s != `44{"message":"unauthorized"}` {
		t.Fatalf("bad header token: %q", s)
	}
}

func TestConnectTimeout(t *testing.T) {
	e := newEnv(t, time.Minute, Options{ConnectTimeout: 200 * time.Millisecond})
	c := e.dial("")
	c.open()
	c.send(`40` + authJSON("token", "bad"))
	if s := c.next(); s != `44{"message":"unauthorized"}` {
		t.Fatalf("got %q", s)
	}
	if code := c.closed(); code != websocket.CloseNoStatusReceived {
		t.Fatalf("close %d, want a close without status", code)
	}
	// A connected client is not timed out.
	ok := e.dial("")
	ok.open()
	ok.connect(authJSON("token", e.token("1", []string{"7"}, time.Hour)))
	e.publish("team:7", "lead:created", `{"n":1}`)
	if s, err := ok.read(time.Second); err != nil || !strings.HasPrefix(s, `42["lead:created"`) {
		t.Fatalf("connected client: %q %v", s, err)
	}
}

func TestEventsAcksAndBinary(t *testing.T) {
	e := newEnv(t, time.Minute, Options{})
	c := e.dial("")
	c.open()
	c.connect(authJSON("token", e.token("1", []string{"7"}, time.Hour)))
	other := e.dial("")
	other.open()
	other.connect(authJSON("token", e.token("9", []string{"8"}, time.Hour)))

	e.publish("team:8", "lead:created", `{"team":8}`)
	e.publish("team:7", "escrow:updated", `{"entityId":"4"}`)
	name, data, offset := c.event()
	if name != "escrow:updated" || data != `{"entityId":"4"}` || !strings.HasPrefix(offset, "p2.") {
		t.Fatalf("event %s %s %s", name, data, offset)
	}
	pos, err := relay.ParsePosition(offset)
	if err != nil || pos.Pos != (relay.Pos{Tick: 1, Tx: 2, ID: 2}) || pos.Epoch != "e1" {
		t.Fatalf("offset %q is not the event's position: %+v %v", offset, pos, err)
	}
	if name, data, _ := other.event(); name != "lead:created" || data != `{"team":8}` {
		t.Fatalf("other team got %s %s", name, data)
	}

	// Reserved names are never sent; a resync is an event.
	p := e.next()
	e.hub.Publish([]relay.Event{{Name: "disconnect", Stream: "team:7", Pos: p, Data: []byte(`{}`)}}, p)
	p = e.next()
	e.hub.Publish([]relay.Event{{Kind: relay.KindResync, Name: "resync", Stream: "team:7", Pos: p,
		Data: []byte(`{"type":"resync","reason":"truncate","entityType":"note"}`)}}, p)
	if name, data, offset := c.event(); name != "resync" || data != `{"reason":"truncate","entityType":"note"}` || offset == "" {
		t.Fatalf("resync: %s %s %s", name, data, offset)
	}

	// Client events: an ack error when asked for, nothing otherwise.
	c.send(`42["hello",{"x":1}]`)
	c.send(`4212["hello"]`)
	if s := c.next(); s != `4312[{"message":"client events are not supported"}]` {
		t.Fatalf("ack: %q", s)
	}
	// Binary packets and their attachments are discarded, and asked acks
	// answered; the session goes on.
	c.send(`452-7["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
	for i := 0; i < 2; i++ {
		if err := c.c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.next(); s != `437[{"message":"client events are not supported"}]` {
		t.Fatalf("binary ack: %q", s)
	}
	if err := c.c.WriteMessage(websocket.BinaryMessage, []byte{9}); err != nil {
		t.Fatal(err)
	}
	c.send(`bAQID`) // an Engine.IO base64 binary message: discarded too
	e.publish("team:7", "lead:deleted", `{"n":2}`)
	if name, _, _ := c.event(); name != "lead:deleted" {
		t.Fatalf("after binary frames: %s", name)
	}

	// DISCONNECT leaves the namespace; the connection stays and may CONNECT again.
	c.send("41")
	c.send("40/admin,{}") // answered once the DISCONNECT was handled
	if s := c.next(); s != `44/admin,{"message":"Invalid namespace"}` {
		t.Fatalf("after DISCONNECT: %q", s)
	}
	e.publish("team:7", "lead:created", `{"n":3}`)
	c.connect(authJSON("token", e.token("1", []string{"7"}, time.Hour)))
	e.publish("team:7", "lead:created", `{"n":4}`)
	if _, data, _ := c.event(); data != `{"n":4}` {
		t.Fatalf("after reconnecting the namespace: %s (an event of the disconnected time leaked)", data)
	}
}

func TestRecovery(t *testing.T) {
	e := newEnv(t, time.Minute, Options{})
	tok := e.token("1", []string{"7"}, time.Hour)
	c := e.dial("")
	c.open()
	_, pid := c.connect(authJSON("token", tok))

	// A reconnect before any event, so without offset, replays from where
	// the pid's session started.
	c.c.Close()
	e.publish("team:7", "lead:created", `{"n":1}`)
	c = e.dial("")
	c.open()
	c.send(`40` + authJSON("token", tok, "pid", pid))
	if _, data, _ := c.event(); data != `{"n":1}` {
		t.Fatalf("no-offset recovery replayed %s", data)
	}
	if _, again := c.connected(); again != pid {
		t.Fatalf("recovered CONNECT reply pid %q, want %q", again, pid)
	}
	e.publish("team:7", "lead:created", `{"n":2}`)
	_, _, offset := c.event()

	// Missed events arrive once each, in order, with their own offsets, then
	// the CONNECT reply with the same pid; then live events.
	c.c.Close()
	for i := 3; i <= 5; i++ {
		e.publish("team:7", "lead:created", fmt.Sprintf(`{"n":%d}`, i))
	}
	e.publish("team:8", "lead:created", `{"other":true}`)
	c = e.dial("")
	c.open()
	c.send(`40` + authJSON("token", e.token("1", []string{"7"}, time.Hour), "pid", pid, "offset", offset))
	prev := offset
	for i := 3; i <= 5; i++ {
		_, data, off := c.event()
		if data != fmt.Sprintf(`{"n":%d}`, i) || off == prev {
			t.Fatalf("replay %d: %s at %s", i, data, off)
		}
		prev = off
	}
	if _, again := c.connected(); again != pid {
		t.Fatalf("pid %q after recovery, want %q", again, pid)
	}
	e.publish("team:7", "lead:created", `{"n":6}`)
	if _, data, _ := c.event(); data != `{"n":6}` {
		t.Fatalf("live after recovery: %s", data)
	}

	// Another user's token with this pid: a fresh session, nothing replayed.
	thief := e.dial("")
	thief.open()
	thief.send(`40` + authJSON("token", e.token("2", []string{"7"}, time.Hour), "pid", pid, "offset", offset))
	if _, got := thief.connected(); got == pid {
		t.Fatal("another user's pid was honoured")
	}
	e.publish("team:7", "lead:created", `{"n":7}`)
	if _, data, _ := thief.event(); data != `{"n":7}` {
		t.Fatalf("thief's first event %s, want only live ones", data)
	}
	// An unknown pid: a fresh session too.
	u := e.dial("")
	u.open()
	u.send(`40` + authJSON("token", tok, "pid", "nope", "offset", offset))
	if _, got := u.connected(); got == "nope" {
		t.Fatal("unknown pid honoured")
	}

	// History gone: a fresh pid, then the resync event at the head.
	e.hist.mu.Lock()
	e.hist.pruned = relay.TickEnd(100)
	e.hist.mu.Unlock()
	r := e.dial("")
	r.open()
	r.send(`40` + authJSON("token", tok, "pid", pid, "offset", offset))
	if _, got := r.connected(); got == pid {
		t.Fatal("pid repeated although the history is gone")
	}
	if name, data, off := r.event(); name != "resync" || data != `{"reason":"history_expired"}` || off == "" {
		t.Fatalf("got %s %s %s, want the resync event", name, data, off)
	}
}

func TestTokenExpiryClosesTransport(t *testing.T) {
	e := newEnv(t, time.Minute, Options{})
	c := e.dial("")
	c.open()
	tok, err := auth.Sign([]byte(testSecret), map[string]any{"sub": "1", "teamId": "7", "exp": time.Now().Add(1200 * time.Millisecond).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	c.connect(authJSON("token", tok))
	for {
		s, err := c.read(5 * time.Second)
		if err == nil {
			if s == "41" {
				t.Fatal("DISCONNECT sent: the client would not reconnect")
			}
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != session.CloseUnauthorized {
			t.Fatalf("want close 4401, got %v", err)
		}
		return
	}
}

func TestPIDBinding(t *testing.T) {
	start := relay.Position{Epoch: "e1", Pos: relay.Pos{Tick: 4, Tx: 10, ID: 8}}.Encode()
	pid := newPID("1", start)
	if got, ok := checkPID(pid, "1"); !ok || got != start {
		t.Fatalf("checkPID(own) = %q %v", got, ok)
	}
	if _, ok := checkPID(pid, "2"); ok {
		t.Fatal("pid honoured for another user")
	}
	flipped := "A" + pid[1:]
	if pid[0] == 'A' {
		flipped = "B" + pid[1:]
	}
	for _, bad := range []string{"", "x", "a.b", pid + "x", flipped, strings.Replace(pid, ".p2.", ".p2.A", 1)} {
		if _, ok := checkPID(bad, "1"); ok {
			t.Errorf("checkPID(%q) honoured", bad)
		}
	}
	if newPID("1", start) == pid {
		t.Fatal("two sessions got the same pid")
	}
	// The offset is honoured from the pid's start on.
	later := relay.Position{Epoch: "e1", Pos: relay.Pos{Tick: 4, Tx: 10, ID: 9}}.Encode()
	earlier := relay.Position{Epoch: "e1", Pos: relay.Pos{Tick: 3, Tx: 11, ID: 11}}.Encode()
	if got := resumeFrom(start, later, true); got != later {
		t.Fatalf("resumeFrom(start, later) = %q, want the offset %q", got, later)
	}
	if got := resumeFrom(start, earlier, true); got != start {
		t.Fatalf("resumeFrom(start, earlier) = %q, want the start %q", got, start)
	}
	if resumeFrom(start, "", false) != start {
		t.Fatal("no offset: the start position")
	}
	other := relay.Position{Epoch: "e2", Pos: relay.TickEnd(1)}.Encode()
	if resumeFrom(start, other, true) != other || resumeFrom(start, "junk", true) != "junk" {
		t.Fatal("an offset of another epoch or a malformed one is passed on for resync")
	}
}
