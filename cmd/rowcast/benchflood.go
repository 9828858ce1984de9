package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// floodSpec is abuse run beside a latency measurement: one authenticated
// client sending messages as fast as rate says on its session (redialling
// after each close), and a storm of WebSocket upgrades from another
// loopback address (127.0.0.2), so that per-address limits tell it apart
// from the measured sessions.
type floodSpec struct {
	addr     string // the relay's host:port
	token    string // a valid token for the message flooder
	messages int    // client messages per second
	upgrades int    // upgrade attempts per second
}

// floodStats counts what the relay answered the flood.
type floodStats struct {
	sent, rateLimited, closed4429, otherCloses atomic.Int64
	upgraded, refused, failed                  atomic.Int64
	refusedBy                                  sync.Map // HTTP status -> *atomic.Int64
}

func (s *floodStats) print(w io.Writer) {
	fmt.Fprintf(w, "  flood: %d messages sent, %d answered rate_limited, %d closes 4429, %d other closes\n",
		s.sent.Load(), s.rateLimited.Load(), s.closed4429.Load(), s.otherCloses.Load())
	var statuses []string
	s.refusedBy.Range(func(k, v any) bool {
		statuses = append(statuses, fmt.Sprintf("%d×%d", v.(*atomic.Int64).Load(), k))
		return true
	})
	fmt.Fprintf(w, "  flood: %d upgrades accepted, %d refused (HTTP %s), %d failed\n",
		s.upgraded.Load(), s.refused.Load(), strings.Join(statuses, ", "), s.failed.Load())
}

// flood runs spec until ctx ends and returns when both floods stopped.
func flood(ctx context.Context, spec floodSpec, st *floodStats) {
	var wg sync.WaitGroup
	wg.Go(func() { floodMessages(ctx, spec, st) })
	wg.Go(func() { floodUpgrades(ctx, spec, st) })
	wg.Wait()
}

// floodMessages keeps one session open and sends spec.messages pings a
// second on it, counting the answers; after a close it dials again.
func floodMessages(ctx context.Context, spec floodSpec, st *floodStats) {
	tick := time.NewTicker(time.Second / time.Duration(max(spec.messages, 1)))
	defer tick.Stop()
	for ctx.Err() == nil {
		hdr := http.Header{"Authorization": {"Bearer " + spec.token}}
		c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+spec.addr+"/ws", hdr)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				_, b, err := c.ReadMessage()
				var ce *websocket.CloseError
				switch {
				case errors.As(err, &ce) && ce.Code == 4429:
					st.closed4429.Add(1)
					return
				case err != nil:
					st.otherCloses.Add(1)
					return
				case strings.Contains(string(b), `"rate_limited"`):
					st.rateLimited.Add(1)
				}
			}
		}()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				c.Close()
				<-done
				return
			case <-done:
				c.Close()
			case <-tick.C:
				if c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ping","id":%d}`, n)) == nil {
					st.sent.Add(1)
				}
				continue
			}
			break
		}
	}
}

// floodUpgrades attempts spec.upgrades WebSocket upgrades a second from
// 127.0.0.2 without a token, closing each accepted one at once.
func floodUpgrades(ctx context.Context, spec floodSpec, st *floodStats) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	wd := &websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 5 * time.Second}
	tick := time.NewTicker(time.Second / time.Duration(max(spec.upgrades, 1)))
	defer tick.Stop()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			st.failed.Add(1) // 64 attempts already in flight: the relay is not answering
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			c, resp, err := wd.DialContext(ctx, "ws://"+spec.addr+"/ws", nil)
			switch {
			case err == nil:
				st.upgraded.Add(1)
				c.Close()
			case resp != nil:
				st.refused.Add(1)
				v, _ := st.refusedBy.LoadOrStore(resp.StatusCode, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			default:
				st.failed.Add(1)
			}
		})
	}
}
