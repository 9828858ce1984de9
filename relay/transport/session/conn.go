package session

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// Conn is the client connection a Session writes to: a WebSocket (WSConn)
// or another transport, such as Engine.IO's long-polling. The session calls
// Write and Close with its lock held, so they must not block and
// must not call back into the session; the Conn reports each text frame
// written to the client by calling the session's Sent, and its end by
// calling Gone, both without holding any lock the Conn's methods take.
type Conn interface {
	// Write queues a text frame after those already queued. It returns an
	// error, writing nothing, once the connection is closing.
	Write(frame []byte) error
	// Close sends a close with code and reason (code 0: a close without
	// status) after every queued frame, and writes nothing after it.
	Close(code int, reason string)
	// Request returns the HTTP request that opened the connection.
	Request() *http.Request
}

// Receiver takes what a WSConn reads and reports. The WSConn calls Receive
// and ReceiveBinary from its read goroutine, one at a time; Sent after each
// text frame written, from its write goroutine; Gone once, last, after the
// connection closed.
type Receiver interface {
	Receive(msg []byte)
	ReceiveBinary(msg []byte)
	Sent()
	Gone()
}

// ErrConnClosed is returned by Conn.Write once the connection is closing.
var ErrConnClosed = errors.New("connection closed")

// closeWait is how long a WSConn that sent its close frame keeps reading
// (and discarding) for the client's close frame before it drops the TCP
// connection. Closing a socket with unread client data makes the kernel
// send a reset, which destroys the close frame and everything before it
// that the client had not read yet.
const closeWait = 5 * time.Second

// WSConn is a WebSocket connection on the transport's melody instance.
// Frames are written in order by melody's writer; a close is written once
// every frame queued before it was written, and the connection then stays
// open, reading and discarding, until the client answers the close or
// closeWait passes, so the client receives the close frame.
type WSConn struct {
	ms   *melody.Session
	recv Receiver

	queued  atomic.Int64 // text frames handed to melody
	sent    atomic.Int64 // text frames written
	closing atomic.Bool  // Close or Abort was called
	closeMu sync.Mutex
	closeAt int64  // queued count the close waits for; -1: no close yet
	closeMs []byte // the close frame's payload, until written
	done    bool   // close written or abort started
	aborted atomic.Bool
}

func newWSConn(ms *melody.Session) *WSConn {
	return &WSConn{ms: ms, closeAt: -1}
}

// Write queues a text frame. It does not block.
func (c *WSConn) Write(frame []byte) error {
	if c.closing.Load() {
		return ErrConnClosed
	}
	c.queued.Add(1)
	if err := c.ms.Write(frame); err != nil {
		return ErrConnClosed
	}
	return nil
}

// Close writes a close frame with code and reason after every queued frame
// and nothing after it. It does not block.
func (c *WSConn) Close(code int, reason string) {
	msg := []byte{}
	if code != 0 {
		msg = melody.FormatCloseMessage(code, reason)
	}
	c.closeMu.Lock()
	if c.closeAt >= 0 || c.done {
		c.closeMu.Unlock()
		return
	}
	c.closeAt, c.closeMs = c.queued.Load(), msg
	c.closing.Store(true)
	c.closeMu.Unlock()
	c.maybeWriteClose()
}

// maybeWriteClose writes the pending close frame once every frame queued
// before it was written; the write happens in its own goroutine, since the
// writer may be stuck on a client that reads nothing (its write deadline
// then ends the connection).
func (c *WSConn) maybeWriteClose() {
	c.closeMu.Lock()
	if c.done || c.closeAt < 0 || c.sent.Load() < c.closeAt {
		c.closeMu.Unlock()
		return
	}
	c.done = true
	msg := c.closeMs
	c.closeMu.Unlock()
	conn := c.ms.WebsocketConnection()
	go func() {
		if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeWait)); err != nil {
			_ = conn.Close()
			return
		}
		// The read loop goes on, discarding, until the client's close
		// frame ends it, or the deadline does.
		_ = conn.SetReadDeadline(time.Now().Add(closeWait))
	}()
}

// Abort closes the connection with 4008 at once, ahead of what is queued,
// without blocking: the close frame is sent from its own goroutine and the
// connection closed after it.
func (c *WSConn) Abort() {
	if !c.aborted.CompareAndSwap(false, true) {
		return
	}
	c.closeMu.Lock()
	c.done = true
	c.closing.Store(true)
	c.closeMu.Unlock()
	conn := c.ms.WebsocketConnection()
	go func() {
		_ = conn.WriteControl(websocket.CloseMessage, melody.FormatCloseMessage(CloseSlowConsumer, "slow consumer"), time.Now().Add(time.Second))
		_ = conn.Close()
	}()
}

// Request returns the upgraded HTTP request.
func (c *WSConn) Request() *http.Request { return c.ms.Request }

// frameSent runs after melody wrote a text frame.
func (c *WSConn) frameSent() {
	c.sent.Add(1)
	if c.closing.Load() {
		c.maybeWriteClose()
	}
	c.recv.Sent()
}
