package session

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay"
)

// echoHandler writes "hello" when the session opens and echoes each text
// message.
type echoHandler struct{ s *Session }

func (h *echoHandler) Open() { h.Message([]byte("hello")) }
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

// Serve returns once the connection is open, freeing the HTTP server's
// goroutine and buffers, and the session runs on: it writes and it reads.
func TestServeReturnsOnceOpen(t *testing.T) {
	e := newEnv(t, Options{})
	returned := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		returned <- e.tr.Serve(w, r, func(s *Session) Handler { return &echoHandler{s: s} })
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
