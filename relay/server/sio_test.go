package server_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// sioDial opens a raw Socket.IO connection (no client library) to the
// relay, reads the open packet, CONNECTs with tok and reads the reply.
func sioDial(t *testing.T, e *env, tok string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+e.relay.Addr()+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if f := sioRead(t, c); !strings.HasPrefix(f, "0{") {
		t.Fatalf("open packet: %q", f)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(`40{"token":"`+tok+`"}`)); err != nil {
		t.Fatal(err)
	}
	if f := sioRead(t, c); !strings.HasPrefix(f, `40{"sid":`) {
		t.Fatalf("CONNECT reply: %q", f)
	}
	return c
}

// sioRead returns the next frame that is not a heartbeat ping, answering
// pings.
func sioRead(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("socket.io read: %v", err)
		}
		if string(b) != "2" {
			return string(b)
		}
		_ = c.WriteMessage(websocket.TextMessage, []byte("3"))
	}
}

// TestSocketIOSharesHubAndDrain: /socket.io/ runs beside /ws on the same
// hub, so one change reaches both protocols with the same data and the same
// position, and draining closes both with 1001.
func TestSocketIOSharesHubAndDrain(t *testing.T) {
	e := startRelay(t, nil)
	tok := userToken(t, "2", 1)
	plain := e.connect(tok)
	sio := sioDial(t, e, tok)

	e.exec("insert into leads (team_id, first_name) values (1, 'both')")
	f := plain.event("lead:created")
	var args []json.RawMessage
	got := sioRead(t, sio)
	if !strings.HasPrefix(got, "42") || json.Unmarshal([]byte(got[2:]), &args) != nil || len(args) != 3 {
		t.Fatalf("socket.io event: %q", got)
	}
	var name, offset string
	_ = json.Unmarshal(args[0], &name)
	_ = json.Unmarshal(args[2], &offset)
	if name != "lead:created" || string(args[1]) != string(f.Data) || offset != f.Position {
		t.Fatalf("socket.io got %s %s %s; /ws got %s %s %s", name, args[1], offset, f.Event, f.Data, f.Position)
	}

	e.shutdown()
	if code := plain.closed(); code != websocket.CloseGoingAway {
		t.Errorf("/ws close %d, want 1001", code)
	}
	for {
		_ = sio.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := sio.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("socket.io: %v, want close 1001", err)
		}
		break
	}
}
