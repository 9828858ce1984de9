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
// every few milliseconds writes them a few at a time.
type corkConn struct {
	net.Conn
	mu sync.Mutex
	// w is set once the session is set up, and cleared by Close; nil:
	// nothing is held, and a write goes to the network connection at once
	// (after Close, to fail there).
	w    *WSConn
	held *[]byte // bytes written and not yet sent, from the transport's pool; nil when none
	// delay is the timer that writes what is held (write delay), nil when
	// none is armed.
	delay *time.Timer
}

// own starts holding for w, whose frames this connection carries.
func (c *corkConn) own(w *WSConn) {
	c.mu.Lock()
	c.w = w
	c.mu.Unlock()
}

// Write holds p when another frame follows and p fits, else writes what is
// held and p, with one system call where the two fit corkMax.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	heldLen := 0
	if c.held != nil {
		heldLen = len(*c.held)
	}
	if c.w != nil && heldLen+len(p) <= corkMax && !closeFrame(p) {
		d := c.w.t.o.WriteDelay
		if d > 0 || c.w.more() {
			if c.held == nil {
				c.held = c.w.t.corkBuffer()
			}
			*c.held = append(*c.held, p...)
			if d > 0 && c.delay == nil {
				c.armDelay(d)
			}
			return len(p), nil
		}
	}
	if c.held == nil {
		return c.Conn.Write(p)
	}
	defer c.release()
	if heldLen+len(p) <= corkMax {
		*c.held = append(*c.held, p...)
		n, err := c.Conn.Write(*c.held)
		return max(0, n-heldLen), err
	}
	bufs := net.Buffers{*c.held, p}
	n, err := bufs.WriteTo(c.Conn)
	return max(0, int(n)-heldLen), err
}

// closeFrame reports whether p may be a close frame: a final frame with the
// close opcode. Gorilla writes a control frame whole, in one call; a part of
// a frame's payload that starts with the same byte is written at once too,
// which is harmless.
func closeFrame(p []byte) bool {
	return len(p) > 0 && p[0] == 0x80|websocket.CloseMessage
}

// armDelay arms the timer that writes what is held in d; mu is held. A
// timer that fires after what it was armed for was written (its write
// came first, or the connection closed) does nothing.
func (c *corkConn) armDelay(d time.Duration) {
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.delay != t {
			return
		}
		c.delay = nil
		if c.held == nil {
			return
		}
		_, err := c.Conn.Write(*c.held)
		c.release()
		if err != nil {
			// The frames are lost, and nobody waits on this write to
			// hear it: closing the network connection ends the read loop,
			// and the session with it, as a failed write of melody's
			// writer would.
			_ = c.Conn.Close()
		}
	})
	c.delay = t
}

// release gives the held buffer back and disarms the write delay's timer;
// mu is held.
func (c *corkConn) release() {
	if c.delay != nil {
		c.delay.Stop()
		c.delay = nil
	}
	if c.held == nil {
		return
	}
	*c.held = (*c.held)[:0]
	if c.w != nil {
		c.w.t.corkPool.Put(c.held)
	}
	c.held = nil
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

// corkBuffer takes an empty hold buffer from the pool.
func (t *Transport) corkBuffer() *[]byte {
	if b, ok := t.corkPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, corkStart)
	return &b
}
