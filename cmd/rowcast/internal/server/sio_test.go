package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/config"
)

// sioDial opens a raw Socket.IO connection (no client library) to the
// relay, reads the open packet, CONNECTs with tok and checks the reply
// accepts it.
func sioDial(t *testing.T, e *env, tok string) *websocket.Conn {
	t.Helper()
	c, reply := sioConnect(t, e, tok)
	if !strings.HasPrefix(reply, `40{"sid":`) {
		t.Fatalf("CONNECT reply: %q", reply)
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

// TestSocketIORateLimitBurst: a burst of client events sent at once, of any
// size, ends in close 4429 whose close frame reaches the client; the events
// that asked for an ack past the limit are answered with an error first.
func TestSocketIORateLimitBurst(t *testing.T) {
	e := startRelay(t, nil)
	for _, n := range []int{200, 1000, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := sioDial(t, e, userToken(t, "2", 1))
			for i := 1; i <= n; i++ {
				if err := c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`42%d["hello"]`, i))); err != nil {
					t.Fatal(err)
				}
			}
			acks := 0
			for {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, b, err := c.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					if !errors.As(err, &ce) || ce.Code != 4429 {
						t.Fatalf("after %d acks: %v, want close 4429", acks, err)
					}
					break
				}
				if strings.HasPrefix(string(b), "43") {
					acks++
				}
			}
			if acks < 49+20 {
				t.Fatalf("%d acks before the close, want every message before it answered", acks)
			}
		})
	}
}

// TestSocketIOPollingSetting: with the default sessions.sio_polling a
// polling handshake opens a session that offers the upgrade; with it off,
// polling is refused as before, with "Transport unknown".
func TestSocketIOPollingSetting(t *testing.T) {
	get := func(e *env) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + e.relay.Addr() + "/socket.io/?EIO=4&transport=polling")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	on := startRelay(t, nil)
	if status, body := get(on); status != 200 || !strings.HasPrefix(body, `0{"sid":`) || !strings.Contains(body, `"upgrades":["websocket"]`) {
		t.Fatalf("polling handshake by default: %d %s", status, body)
	}
	off := startRelay(t, func(c *config.Config) { c.Sessions.SIOPolling = new(false) })
	if status, body := get(off); status != 400 || body != `{"code":0,"message":"Transport unknown"}` {
		t.Fatalf("polling with sessions.sio_polling false: %d %s", status, body)
	}
}
