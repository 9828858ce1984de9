package session

import (
	"net"
	"sync"

	"github.com/gorilla/websocket"
)

// corkMax is the most a corkConn holds before it writes: enough for a few
// dozen events, little enough that a burst costs no session much memory.
const corkMax = 16 << 10

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
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	w      *WSConn // set once the session is set up; nil: nothing is held
	held   *[]byte // bytes written and not yet sent, from the transport's pool; nil when none
	closed bool    // Close was called: every later Write fails
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
	if c.closed {
		// Holding would report bytes written that never will be.
		return 0, net.ErrClosed
	}
	heldLen := 0
	if c.held != nil {
		heldLen = len(*c.held)
	}
	if c.w != nil && heldLen+len(p) <= corkMax && !closeFrame(p) && c.w.more() {
		if c.held == nil {
			c.held = c.w.t.corkBuffer()
		}
		*c.held = append(*c.held, p...)
		return len(p), nil
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

// release gives the held buffer back; mu is held.
func (c *corkConn) release() {
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
// later Write fails with net.ErrClosed.
func (c *corkConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	c.closed = true
	c.release()
	c.mu.Unlock()
	return err
}

// corkBuffer takes an empty hold buffer from the pool.
func (t *Transport) corkBuffer() *[]byte {
	if b, ok := t.corkPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, corkMax)
	return &b
}
