package session

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// writeLog is a net.Conn that records each Write call; its writes never
// block.
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	closed bool
}

func (l *writeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, net.ErrClosed
	}
	l.writes = append(l.writes, bytes.Clone(p))
	return len(p), nil
}

func (l *writeLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return nil
}

func (l *writeLog) log() (calls int, all string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, w := range l.writes {
		b.Write(w)
	}
	return len(l.writes), b.String()
}

// corked returns a corkConn over a writeLog for a WSConn with queued frames
// accepted and sent written.
func corked(queued, sent int64) (*corkConn, *writeLog, *WSConn) {
	w := newWSConn(&Transport{})
	w.queued.Store(queued)
	w.sent.Store(sent)
	l := &writeLog{}
	w.net.Conn = l
	w.net.own(w)
	return &w.net, l, w
}

func TestCorkConn(t *testing.T) {
	t.Run("nothing held before the session owns it", func(t *testing.T) {
		w := newWSConn(&Transport{})
		w.queued.Store(10)
		l := &writeLog{}
		w.net.Conn = l
		for _, s := range []string{"a", "b"} {
			if n, err := w.net.Write([]byte(s)); n != 1 || err != nil {
				t.Fatalf("Write: %d, %v", n, err)
			}
		}
		if calls, _ := l.log(); calls != 2 {
			t.Fatalf("%d writes, want 2", calls)
		}
	})
	t.Run("held while frames follow, written with the last in one call", func(t *testing.T) {
		c, l, w := corked(3, 0)
		for i, s := range []string{"one,", "two,", "three"} {
			if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("Write %q: %d, %v", s, n, err)
			}
			if calls, _ := l.log(); i < 2 && calls != 0 {
				t.Fatalf("after frame %d of 3: %d writes, want none", i+1, calls)
			}
			w.sent.Add(1)
		}
		if calls, all := l.log(); calls != 1 || all != "one,two,three" {
			t.Fatalf("%d writes of %q, want 1 of one,two,three", calls, all)
		}
		if c.held != nil {
			t.Fatal("hold buffer kept after the write")
		}
	})
	t.Run("a frame that would pass the limit writes what is held with it", func(t *testing.T) {
		c, l, _ := corked(10, 0)
		small := strings.Repeat("s", 100)
		big := strings.Repeat("b", corkMax)
		if _, err := c.Write([]byte(small)); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Write([]byte(big)); n != len(big) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
		if calls, all := l.log(); calls == 0 || all != small+big {
			t.Fatalf("%d writes of %d bytes, want the two frames in order", calls, len(all))
		}
	})
	t.Run("a close frame is never held", func(t *testing.T) {
		c, l, _ := corked(5, 0)
		if _, err := c.Write([]byte("held,")); err != nil {
			t.Fatal(err)
		}
		closeFrame := []byte{0x88, 2, 0x03, 0xe8}
		if _, err := c.Write(closeFrame); err != nil {
			t.Fatal(err)
		}
		if calls, all := l.log(); calls != 1 || all != "held,"+string(closeFrame) {
			t.Fatalf("%d writes of %q, want the held frame and the close in 1", calls, all)
		}
	})
	t.Run("close drops what is held", func(t *testing.T) {
		c, l, _ := corked(5, 0)
		if _, err := c.Write([]byte("held")); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if calls, _ := l.log(); calls != 0 || !l.closed || c.held != nil {
			t.Fatalf("%d writes, closed %v, held %v: want none, closed, none", calls, l.closed, c.held)
		}
	})
	t.Run("a write after close fails, held or not", func(t *testing.T) {
		c, l, w := corked(5, 0)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		for _, queued := range []int64{5, 1} { // another frame follows; none does
			w.queued.Store(queued)
			if n, err := c.Write([]byte("late")); n != 0 || !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Write with %d queued after Close: %d, %v; want 0, net.ErrClosed", queued, n, err)
			}
		}
		if calls, _ := l.log(); calls != 0 || c.held != nil {
			t.Fatalf("%d writes, held %v after Close: want none", calls, c.held)
		}
	})
	t.Run("a failed write reports nothing of the frame written", func(t *testing.T) {
		c, l, w := corked(2, 0)
		if _, err := c.Write([]byte("held")); err != nil {
			t.Fatal(err)
		}
		w.sent.Add(1)
		l.closed = true
		if n, err := c.Write([]byte("last")); n != 0 || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write: %d, %v; want 0 and the connection's error", n, err)
		}
	})
}

// countingWriter counts the writes to the network connection it hijacks.
type countingWriter struct {
	http.ResponseWriter
	writes *atomic.Int64
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func (w countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	return countingConn{Conn: c, writes: w.writes}, brw, err
}

// burstHandler writes n frames when the session opens, then closes it.
type burstHandler struct {
	echoHandler
	n int
}

func (h *burstHandler) Open() {
	h.s.Lock()
	defer h.s.Unlock()
	for i := range h.n {
		h.s.WriteLocked([]byte(fmt.Sprintf("frame %04d %s", i, strings.Repeat(".", 90))))
	}
	h.s.CloseLocked(4000, "done")
}

// A session behind by many frames writes them in few system calls, every
// frame in order and the close after them.
func TestSessionBehindWritesInBatches(t *testing.T) {
	const frames = 300
	e := newEnv(t, Options{QueueSize: 1024})
	var writes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = e.tr.Serve(countingWriter{ResponseWriter: w, writes: &writes}, r, nil, func(s *Session) Handler {
			return &burstHandler{echoHandler: echoHandler{s: s}, n: frames}
		})
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range frames {
		_, msg, err := client.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := fmt.Sprintf("frame %04d ", i); !strings.HasPrefix(string(msg), want) {
			t.Fatalf("frame %d is %.12q", i, msg)
		}
	}
	_, _, err = client.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4000 {
		t.Fatalf("after the frames: %v, want close 4000", err)
	}
	// The upgrade's response, the frames, the close: 302 writes unbatched.
	if n := writes.Load(); n > frames/4 {
		t.Fatalf("%d writes for %d frames, want at most %d", n, frames, frames/4)
	}
	t.Logf("%d frames and the close in %d writes", frames, writes.Load())
}
