package session

import (
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// corkMax is the most a corkConn holds before it writes: enough for a few
// dozen events, little enough that a burst costs no session much memory.
// A hold buffer starts at corkStart and grows to corkMax when a batch
// needs it (with a write delay most sessions hold a few frames at a time).
const (
	corkMax   = 16 << 10
	corkStart = 4 << 10
)

// writeWait bounds a write to a WebSocket: melody's WriteWait (set by New),
// and a write of the write delay's timer.
const writeWait = 10 * time.Second

// corkConn is the network connection under a WebSocket. While its WSConn has
// another text frame waiting after the one being written (the writer will
// write again at once), what the writer writes is held, up to corkMax, and
// written with the next write that is not held: a session behind by n
// frames costs one write system call instead of n. Under load the batches
// grow by themselves; a session that keeps up writes each frame at once, as
// before.
//
// Ordering is the connection's: everything written, held or not, reaches
// the network in the order written (gorilla/websocket serializes its writes
// to the connection). A close frame is never held, nor anything before it:
// nothing may follow it. Close closes the network connection first (a
// write blocked on a client that reads nothing returns at once, as with the
// bare connection), then drops what is held: a connection closed while
// frames waited would not have delivered them either.
//
// With a write delay (Options.WriteDelay), everything but a close frame is
// held, up to corkMax, and the first byte held arms a timer that writes
// what is held by then, unless a write that is not held (a close frame,
// or one past corkMax) wrote it first: a session that receives a frame
// every few milliseconds writes them a few at a time. The timer writes
// outside gorilla's write lock, so corkConn keeps the write deadline
// gorilla asked for last: the timer's write has a deadline of its own
// (melody's WriteWait from then: what it holds may be a pong whose
// one-second deadline passed meanwhile), a deadline set during it waits
// for it, and the one asked for is set again after it.
type corkConn struct {
	net.Conn
	mu sync.Mutex
	// w is set once the session is set up, and cleared by Close; nil:
	// nothing is held, and a write goes to the network connection at once
	// (after Close, to fail there).
	w *WSConn
	h *corkHold // what is held, from the transport's pool; nil when nothing is
	// deadline is the write deadline asked for last (SetWriteDeadline),
	// unix nanoseconds, 0 for none.
	deadline int64
}

// corkHold is what a corkConn holds: the bytes written and not yet sent,
// and the write delay's timer that will send them (nil when none is
// armed).
type corkHold struct {
	buf   []byte
	delay *time.Timer
}

// own starts holding for w, whose frames this connection carries.
func (c *corkConn) own(w *WSConn) {
	c.mu.Lock()
	c.w = w
	c.mu.Unlock()
}

// Write holds p when another frame follows (or with a write delay) and p
// fits, else writes what is held and p, with one system call where the
// two fit corkMax.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	heldLen := 0
	if c.h != nil {
		heldLen = len(c.h.buf)
	}
	if c.w != nil && heldLen+len(p) <= corkMax && !closeFrame(p) {
		d := c.w.t.o.WriteDelay
		if d > 0 || c.w.more() {
			if c.h == nil {
				c.h = c.w.t.corkHold()
			}
			c.h.buf = append(c.h.buf, p...)
			if d > 0 && c.h.delay == nil {
				c.armDelay(d)
			}
			return len(p), nil
		}
	}
	if c.h == nil {
		return c.Conn.Write(p)
	}
	defer c.release()
	if heldLen+len(p) <= corkMax {
		c.h.buf = append(c.h.buf, p...)
		n, err := c.Conn.Write(c.h.buf)
		return max(0, n-heldLen), err
	}
	bufs := net.Buffers{c.h.buf, p}
	n, err := bufs.WriteTo(c.Conn)
	return max(0, int(n)-heldLen), err
}

// armDelay arms the timer that writes what is held in d; mu is held. A
// timer that fires after what it was armed for was written (a write came
// first, or the connection closed) does nothing.
func (c *corkConn) armDelay(d time.Duration) {
	h := c.h
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.h != h || h.delay != t {
			return
		}
		h.delay = nil
		err := c.Conn.SetWriteDeadline(time.Now().Add(writeWait))
		if err == nil {
			_, err = c.Conn.Write(h.buf)
		}
		c.release()
		if err == nil {
			err = c.Conn.SetWriteDeadline(unixTime(c.deadline))
		}
		if err != nil {
			// The frames are lost, and nobody waits on this write to
			// hear it: closing the network connection ends the read loop,
			// and the session with it, as a failed write of melody's
			// writer would.
			_ = c.Conn.Close()
		}
	})
	h.delay = t
}

// SetWriteDeadline sets the deadline of the writes that follow; during a
// write of the delay's timer it waits for it (see corkConn).
func (c *corkConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = 0
	if !t.IsZero() {
		c.deadline = t.UnixNano()
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets the read deadline, and the write deadline as
// SetWriteDeadline does.
func (c *corkConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// unixTime is the time of unix nanoseconds ns, the zero time for 0.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// closeFrame reports whether p may be a close frame: a final frame with the
// close opcode. Gorilla writes a control frame whole, in one call; a part of
// a frame's payload that starts with the same byte is written at once too,
// which is harmless.
func closeFrame(p []byte) bool {
	return len(p) > 0 && p[0] == 0x80|websocket.CloseMessage
}

// release disarms the write delay's timer and gives what was held back to
// the pool; mu is held.
func (c *corkConn) release() {
	h := c.h
	if h == nil {
		return
	}
	c.h = nil
	if h.delay != nil {
		h.delay.Stop()
		h.delay = nil
	}
	h.buf = h.buf[:0]
	if c.w != nil {
		c.w.t.corkPool.Put(h)
	}
}

// Close closes the network connection and drops what is held; every
// later Write goes to the closed connection and fails (holding it would
// report bytes written that never will be).
func (c *corkConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	c.release()
	c.w = nil
	c.mu.Unlock()
	return err
}

// corkHold takes an empty hold from the pool.
func (t *Transport) corkHold() *corkHold {
	if h, ok := t.corkPool.Get().(*corkHold); ok {
		return h
	}
	return &corkHold{buf: make([]byte, 0, corkStart)}
}
