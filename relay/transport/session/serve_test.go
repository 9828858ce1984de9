package session

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
)

// echoHandler writes "hello" when the session opens and echoes each text
// message.
type echoHandler struct{ s *Session }

func (h *echoHandler) Transport() string { return "ws" }
func (h *echoHandler) Open()             { h.Message([]byte("hello")) }
func (h *echoHandler) Message(msg []byte) {
	h.s.Lock()
	defer h.s.Unlock()
	h.s.WriteLocked(msg)
}
func (h *echoHandler) Binary([]byte)                   {}
func (h *echoHandler) Closed()                         {}
func (h *echoHandler) EventLocked(*relay.Event) []byte { return nil }
func (h *echoHandler) ResyncLocked()                   {}
func (h *echoHandler) ResumedLocked(int)               {}
func (h *echoHandler) ExpiredLocked()                  {}
func (h *echoHandler) ForbiddenLocked(string)          {}

// Serve returns once the connection is open, freeing the HTTP server's
// goroutine and buffers, and the session runs on: it writes and it reads.
func TestServeReturnsOnceOpen(t *testing.T) {
	e := newEnv(t, Options{})
	returned := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		returned <- e.tr.Serve(w, r, nil, func(s *Session) Handler { return &echoHandler{s: s} })
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still runs while the connection is open")
	}
	if _, msg, err := client.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Fatalf("first frame %q, %v; want hello", msg, err)
	}
	if err := client.WriteMessage(websocket.TextMessage, []byte("echo")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := client.ReadMessage(); err != nil || string(msg) != "echo" {
		t.Fatalf("echoed frame %q, %v; want echo", msg, err)
	}
	if n := e.tr.Sessions(); n != 1 {
		t.Fatalf("%d sessions open, want 1", n)
	}
}

// requestHandler reports the session's Request once it is open.
type requestHandler struct {
	echoHandler
	got chan *http.Request
}

func (h *requestHandler) Open() { h.got <- h.s.Request() }

// An open session keeps a slim copy of its upgrade request, with what later
// readers need (auth.TokenFromRequest: the Authorization header and the
// query), and nothing keeps the request itself: an idle connection should
// not hold its headers and the HTTP server's state.
func TestServeKeepsASlimRequest(t *testing.T) {
	e := newEnv(t, Options{})
	got := make(chan *http.Request, 1)
	collected := make(chan struct{})
	type seen struct{ host, remoteAddr string }
	saw := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runtime.AddCleanup(r, func(ch chan struct{}) { close(ch) }, collected)
		saw <- seen{r.Host, r.RemoteAddr}
		_ = e.tr.Serve(w, r, nil, func(s *Session) Handler {
			return &requestHandler{echoHandler: echoHandler{s: s}, got: got}
		})
	}))
	t.Cleanup(srv.Close)
	h := http.Header{"Authorization": {"Bearer tok"}, "X-Large": {strings.Repeat("x", 4096)}}
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?access_token=q&since=p", h)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var r *http.Request
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not open")
	}
	want := <-saw
	if r.Method != http.MethodGet || r.Host != want.host || r.RemoteAddr != want.remoteAddr ||
		r.URL.Path != "/ws" || r.URL.Query().Get("access_token") != "q" || r.URL.Query().Get("since") != "p" {
		t.Errorf("Request: %s host %q remote %q URL %v; want GET host %q remote %q /ws?access_token=q&since=p",
			r.Method, r.Host, r.RemoteAddr, r.URL, want.host, want.remoteAddr)
	}
	if a := r.Header.Get("Authorization"); a != "Bearer tok" {
		t.Errorf("Authorization %q, want Bearer tok", a)
	}
	if len(r.Header) != 1 {
		t.Errorf("headers kept: %v; want Authorization alone", slices.Sorted(maps.Keys(r.Header)))
	}
	if tok := auth.TokenFromRequest(r); tok != "tok" {
		t.Errorf("token %q, want tok", tok)
	}
	// The session is open (it echoes); the upgrade request is collected.
	if err := client.WriteMessage(websocket.TextMessage, []byte("echo")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := client.ReadMessage(); err != nil || string(msg) != "echo" {
		t.Fatalf("echoed frame %q, %v; want echo", msg, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		select {
		case <-collected:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the upgrade request is still referenced while the session is open")
		}
	}
}

// A connection reads frames larger than its read buffer whole, up to the
// message size limit, and control frames with the largest payload.
func TestServeReadsLargeFrames(t *testing.T) {
	e := newEnv(t, Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = e.tr.Serve(w, r, nil, func(s *Session) Handler { return &echoHandler{s: s} })
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, msg, err := client.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Fatalf("first frame %q, %v; want hello", msg, err)
	}
	pong := make(chan string, 1)
	client.SetPongHandler(func(data string) error { pong <- data; return nil })
	ping := strings.Repeat("p", 125)
	if err := client.WriteControl(websocket.PingMessage, []byte(ping), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{readBufferSize - 10, readBufferSize + 1, 4096} {
		want := strings.Repeat("x", n)
		if err := client.WriteMessage(websocket.TextMessage, []byte(want)); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := client.ReadMessage(); err != nil || string(msg) != want {
			t.Fatalf("echo of %d bytes: %d bytes, %v", n, len(msg), err)
		}
	}
	select {
	case got := <-pong:
		if got != ping {
			t.Fatalf("pong %q, want the ping's 125 bytes", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

// connCount returns how many connections t's table holds.
func connCount(t *Transport) int {
	n := 0
	for i := range t.conns.shards {
		sh := &t.conns.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// A connection's entry in the Transport's table lives as long as the
// connection.
func TestServeForgetsClosedConnections(t *testing.T) {
	e := newEnv(t, Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = e.tr.Serve(w, r, nil, func(s *Session) Handler { return &echoHandler{s: s} })
	}))
	t.Cleanup(srv.Close)
	var clients []*websocket.Conn
	for range 3 {
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "hello" {
			t.Fatalf("first frame %q, %v; want hello", msg, err)
		}
		clients = append(clients, c)
	}
	if n := connCount(e.tr); n != 3 {
		t.Fatalf("%d connections in the table, want 3", n)
	}
	for _, c := range clients {
		c.Close()
	}
	timeout := time.After(5 * time.Second)
	for connCount(e.tr) != 0 || e.tr.Sessions() != 0 {
		select {
		case <-e.tr.gone: // signalled after each connection left
		case <-timeout:
			t.Fatalf("%d connections in the table, %d sessions, after the clients closed", connCount(e.tr), e.tr.Sessions())
		}
	}
}

// goroutineID returns the running goroutine's number, from its stack
// trace's first line ("goroutine 42 [running]:").
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// stackHandler reports the goroutine its Open and each Message run on.
type stackHandler struct {
	echoHandler
	ran chan string
}

func (h *stackHandler) Open()              { h.ran <- goroutineID(); h.echoHandler.Open() }
func (h *stackHandler) Message(msg []byte) { h.ran <- goroutineID(); h.echoHandler.Message(msg) }

// Opening a session and handling what the client sends run on goroutines
// that end, not on the connection's read goroutine, which lives as long as
// the connection: its stack would keep what their deeper calls grew it to
// (4 KiB more for every idle session).
func TestClientWorkRunsOnFreshStacks(t *testing.T) {
	e := newEnv(t, Options{})
	ran := make(chan string, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = e.tr.Serve(w, r, nil, func(s *Session) Handler {
			return &stackHandler{echoHandler: echoHandler{s: s}, ran: ran}
		})
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	seen := map[string]string{}
	note := func(what string) {
		t.Helper()
		select {
		case id := <-ran:
			if prev, ok := seen[id]; ok {
				t.Fatalf("%s ran on goroutine %s, as %s did", what, id, prev)
			}
			seen[id] = what
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not run", what)
		}
	}
	note("Open")
	for _, m := range []string{"first message", "second message"} {
		if err := client.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		note(m)
	}
}

// A panic in work run on a fresh stack is returned with the value and the
// stack it was raised on.
func TestFreshStackReturnsThePanic(t *testing.T) {
	p := onFreshStack(func() { panic("handler failed") })
	if p == nil || p.value != "handler failed" || !strings.Contains(string(p.stack), "TestFreshStackReturnsThePanic") {
		t.Fatalf("panic %+v, want the value and the stack it was raised on", p)
	}
	ran := false
	if p := onFreshStack(func() { ran = true }); p != nil || !ran {
		t.Fatalf("fn ran %v, panic %v; want it run, no panic", ran, p)
	}
}

// panicReceiver panics on the first message.
type panicReceiver struct{ gone chan struct{} }

func (r *panicReceiver) Receive([]byte)       { panic("handler bug") }
func (r *panicReceiver) ReceiveBinary([]byte) {}
func (r *panicReceiver) Sent(int)             {}
func (r *panicReceiver) Gone()                { close(r.gone) }

// A connection whose handler panicked on a client's message is closed with
// 1001 (the client reconnects with since), the panic is reported, and the
// connection is let go of: its receiver hears Gone.
func TestHandlerPanicClosesTheConnection(t *testing.T) {
	reported := make(chan error, 1)
	e := newEnv(t, Options{OnPanic: func(err error) { reported <- err }})
	r := &panicReceiver{gone: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_ = e.tr.ServeConn(w, req, func(*WSConn) Receiver { return r })
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.WriteMessage(websocket.TextMessage, []byte("boom")); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = client.ReadMessage()
	if !websocket.IsCloseError(err, CloseGoingAway) {
		t.Fatalf("after the panic: %v, want close 1001", err)
	}
	select {
	case err := <-reported:
		if !strings.Contains(err.Error(), "handler bug") {
			t.Fatalf("reported %v, want the panic's value", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the panic was not reported")
	}
	select {
	case <-r.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("Gone never called: the connection leaks")
	}
}
