package session

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

type quietHandler struct{ echoHandler }

func (h *quietHandler) Open() {}

func TestZZStackDepth(t *testing.T) {
	e := newEnv(t, Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.tr.Serve(w, r, nil, func(s *Session) Handler { return &quietHandler{echoHandler{s: s}} })
	}))
	t.Cleanup(srv.Close)
	for range 3 {
		client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		client.WriteMessage(websocket.TextMessage, []byte("echo"))
		client.ReadMessage()
	}
	os.Stderr.WriteString("DONE\n")
}
