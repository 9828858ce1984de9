package session

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand"
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
	wrote  chan struct{} // if not nil, signalled after each write
}

func (l *writeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, net.ErrClosed
	}
	l.writes = append(l.writes, bytes.Clone(p))
	if l.wrote != nil {
		l.wrote <- struct{}{}
	}
	return len(p), nil
}

func (l *writeLog) SetWriteDeadline(time.Time) error { return nil }

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

// delayed returns a corkConn over a writeLog for a WSConn with write delay
// d, nothing queued after the frame being written, and a channel that
// receives a value after each write.
func delayed(d time.Duration) (*corkConn, *writeLog) {
	w := newWSConn(&Transport{o: Options{WriteDelay: d}})
	w.queued.Store(1)
	l := &writeLog{wrote: make(chan struct{}, 16)}
	w.net.Conn = l
	w.net.own(w)
	return &w.net, l
}

// With a write delay, a frame nothing follows is held and written by the
// timer with those that came within the delay; a write that is not held
// writes them at once and disarms the timer; a close drops them.
func TestCorkConnWriteDelay(t *testing.T) {
	t.Run("the timer writes what came within the delay, in one call", func(t *testing.T) {
		c, l := delayed(20 * time.Millisecond)
		for _, s := range []string{"one,", "two,", "three"} {
			if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("Write %q: %d, %v", s, n, err)
			}
		}
		if calls, _ := l.log(); calls != 0 {
			t.Fatalf("%d writes before the delay passed, want none", calls)
		}
		select {
		case <-l.wrote:
		case <-time.After(5 * time.Second):
			t.Fatal("nothing written after the delay")
		}
		if calls, all := l.log(); calls != 1 || all != "one,two,three" {
			t.Fatalf("%d writes of %q, want 1 of one,two,three", calls, all)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.h != nil {
			t.Fatal("hold buffer or timer kept after the timer wrote")
		}
	})
	t.Run("a close frame writes what is held at once and disarms the timer", func(t *testing.T) {
		c, l := delayed(time.Hour)
		if _, err := c.Write([]byte("held,")); err != nil {
			t.Fatal(err)
		}
		timer := c.h.delay
		closeFrame := []byte{0x88, 2, 0x03, 0xe8}
		if _, err := c.Write(closeFrame); err != nil {
			t.Fatal(err)
		}
		if calls, all := l.log(); calls != 1 || all != "held,"+string(closeFrame) {
			t.Fatalf("%d writes of %q, want the held frame and the close in 1", calls, all)
		}
		if c.h != nil || timer.Stop() {
			t.Fatal("hold or timer kept after the write")
		}
	})
	t.Run("close drops what is held and disarms the timer", func(t *testing.T) {
		c, l := delayed(time.Hour)
		if _, err := c.Write([]byte("held")); err != nil {
			t.Fatal(err)
		}
		timer := c.h.delay
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		armed := timer.Stop()
		if calls, _ := l.log(); calls != 0 || armed {
			t.Fatalf("%d writes, timer armed %v after Close: want none, no", calls, armed)
		}
	})
	t.Run("a failed write of the timer closes the connection", func(t *testing.T) {
		c, l := delayed(time.Millisecond)
		closed := make(chan struct{})
		c.Conn = &failingConn{closed: closed}
		_ = l
		if _, err := c.Write([]byte("held")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the connection stays open after the timer's write failed")
		}
	})
}

// failingConn is a net.Conn whose writes fail; Close closes closed.
type failingConn struct {
	net.Conn
	closed chan struct{}
}

func (f *failingConn) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }
func (f *failingConn) Close() error              { close(f.closed); return nil }

func (f *failingConn) SetWriteDeadline(time.Time) error { return nil }

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
		if c.h != nil {
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
		if calls, _ := l.log(); calls != 0 || !l.closed || c.h != nil {
			t.Fatalf("%d writes, closed %v, held %v: want none, closed, none", calls, l.closed, c.h)
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
		if calls, _ := l.log(); calls != 0 || c.h != nil {
			t.Fatalf("%d writes, held %v after Close: want none", calls, c.h)
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

// trickleHandler writes n frames from a goroutine of its own, in random
// bursts with random pauses, of random sizes (some past gorilla's 4 KiB
// write buffer, written in two calls, some past corkMax), and never closes.
type trickleHandler struct {
	echoHandler
	n    int
	seed int64
}

func (h *trickleHandler) Open() {
	go func() {
		r := rand.New(rand.NewSource(h.seed))
		for i := 0; i < h.n; {
			h.s.Lock()
			for burst := 1 + r.Intn(40); burst > 0 && i < h.n; burst-- {
				size := 20 + r.Intn(200)
				switch r.Intn(20) {
				case 0:
					size = 5000 + r.Intn(3000)
				case 1:
					size = corkMax + 1000
				}
				// 0x88 bytes: a write of a frame's second part may look
				// like a close frame.
				h.s.WriteLocked(fmt.Appendf(nil, "frame %06d %s", i, strings.Repeat("\x88", size)))
				i++
			}
			h.s.Unlock()
			if r.Intn(3) > 0 {
				time.Sleep(time.Duration(r.Intn(3000)) * time.Microsecond) // the pace of a source, not a wait
			}
		}
	}()
}

// Every frame arrives, in order, while the connection stays open, with a
// write delay or without, while the client pings (the relay answers from
// its read goroutine, between the writer's frames) and sometimes reads
// slowly.
func TestCorkConnLosesNothing(t *testing.T) {
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		for round := range 3 {
			t.Run(fmt.Sprintf("delay %v round %d", delay, round), func(t *testing.T) {
				const frames = 2000
				e := newEnv(t, Options{QueueSize: 4096, WriteDelay: delay})
				client := serveAndDial(t, e, func(s *Session) Handler {
					return &trickleHandler{echoHandler: echoHandler{s: s}, n: frames, seed: int64(round)}
				})
				pinging := make(chan struct{})
				defer close(pinging)
				go func() {
					for {
						select {
						case <-pinging:
							return
						case <-time.After(time.Millisecond):
						}
						if client.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)) != nil {
							return
						}
					}
				}()
				r := rand.New(rand.NewSource(int64(round) + 100))
				for i := range frames {
					_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, msg, err := client.ReadMessage()
					if err != nil {
						t.Fatalf("frame %d: %v", i, err)
					}
					if want := fmt.Sprintf("frame %06d ", i); !strings.HasPrefix(string(msg), want) {
						t.Fatalf("frame %d is %.14q", i, msg)
					}
					if round == 1 && r.Intn(100) == 0 {
						time.Sleep(5 * time.Millisecond) // a client that reads slowly at times
					}
				}
			})
		}
	}
}

// With the longest write delay, a client's ping is answered: gorilla holds
// the pong's write to a one-second deadline, which has passed when the
// timer writes it, so the timer's write has a deadline of its own.
func TestCorkConnWriteDelayAnswersPings(t *testing.T) {
	e := newEnv(t, Options{WriteDelay: time.Second})
	client := serveAndDial(t, e, func(s *Session) Handler { return &echoHandler{s: s} })
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, msg, err := client.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Fatalf("hello: %q, %v", msg, err)
	}
	// The pong alone is held; once it came, an echo shows the connection
	// lives.
	client.SetPongHandler(func(string) error {
		go func() { _ = client.WriteMessage(websocket.TextMessage, []byte("echo")) }()
		return nil
	})
	if err := client.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := client.ReadMessage(); err != nil || string(msg) != "echo" {
		t.Fatalf("after a ping: %q, %v; want the pong, then the echo on a live connection", msg, err)
	}
}

// startedConn signals each Write as it starts.
type startedConn struct {
	net.Conn
	started chan struct{}
}

func (c *startedConn) Write(p []byte) (int, error) {
	select {
	case c.started <- struct{}{}:
	default:
	}
	return c.Conn.Write(p)
}

// A deadline gorilla sets while the write delay's timer writes to a client
// that reads nothing (a pong's, one second) waits for that write, which
// keeps its own: the client reads everything once it reads again two
// seconds later.
func TestCorkConnTimerWriteKeepsItsDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	srv := <-accepted
	defer srv.Close()
	// Fill the socket buffers, small ones (set, they do not grow): the
	// client reads nothing yet.
	_ = srv.(*net.TCPConn).SetWriteBuffer(4096)
	_ = client.(*net.TCPConn).SetReadBuffer(4096)
	for _, size := range []int{4 << 10, 256, 1} {
		junk := make([]byte, size)
		for {
			_ = srv.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := srv.Write(junk); err != nil {
				break
			}
		}
	}
	w := newWSConn(&Transport{o: Options{WriteDelay: 10 * time.Millisecond}})
	w.queued.Store(1)
	started := make(chan struct{}, 1)
	w.net.Conn = &startedConn{Conn: srv, started: started}
	c := &w.net
	c.own(w)
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second)) // melody's writer
	if _, err := c.Write([]byte("\x81\x04last")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started: // the timer's write, blocked on the full buffers
	case <-time.After(5 * time.Second):
		t.Fatal("the timer did not write")
	}
	go func() { // gorilla's pong, from the read goroutine
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte{0x8a, 0})
	}()
	time.Sleep(2 * time.Second) // a client that reads nothing for longer than the pong's deadline
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	var all []byte
	buf := make([]byte, 64<<10)
	for !bytes.Contains(all, []byte("\x81\x04last")) {
		n, err := client.Read(buf)
		all = append(all, buf[:n]...)
		if err != nil {
			t.Fatalf("read %d bytes (%v) without the held frame: its write timed out on the pong's deadline", len(all), err)
		}
	}
}

// serveAndDial serves e's transport with newHandler on a test server and
// dials it; both are closed when the test ends.
func serveAndDial(t *testing.T, e *env, newHandler NewHandler) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = e.tr.Serve(w, r, nil, newHandler)
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}
