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
	// Request returns what the connection kept of the HTTP request that
	// opened it: its slim copy (SlimRequest).
	Request() *http.Request
}

// Receiver takes what a WSConn reads and reports. The WSConn calls Receive
// and ReceiveBinary from its read goroutine, one at a time; Sent after each
// text frame written, with the frame's length, from its write goroutine;
// Gone once, last, after the connection closed.
type Receiver interface {
	Receive(msg []byte)
	ReceiveBinary(msg []byte)
	Sent(n int)
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
//
// Melody's output channel is short (an idle session should not pay for a
// preallocated queue); frames beyond it wait in the WSConn's overflow
// list, allocated only while frames wait and released when it empties, and
// move to the channel, in order, as melody's writer writes. The channel plus
// the list hold at most the WSConn's limit of frames: past it the
// connection is aborted with 4008 (Abort), as a full melody channel was.
type WSConn struct {
	ms   *melody.Session
	recv Receiver
	t    *Transport  // a Write that finds limit frames waiting aborts (full)
	req  requestInfo // for Request
	// net is the network connection melody's WebSocket writes to: it
	// batches the frames of a session that fell behind (corkConn).
	net corkConn

	qmu    sync.Mutex
	inChan int // frames handed to melody's channel, not yet written; guarded by qmu
	// overflow holds the frames waiting for room in the channel, oldest
	// first; nil while none wait (a pointer: an idle connection pays 8
	// bytes for it, not a slice's 24). Guarded by qmu.
	overflow *[][]byte

	queued  atomic.Int64 // text frames accepted by Write
	sent    atomic.Int64 // text frames written
	closing atomic.Bool  // Close or Abort was called
	aborted atomic.Bool
	closeMu sync.Mutex
	close   *pendingClose // set by Close; nil before
	done    bool          // close written or abort started
	// end is the close code the connection ended with when the relay did
	// not close it: 4008 (Abort), the client's close code, or 1009 (a
	// frame over the size limit); 0 until known.
	end atomic.Int32
}

// readEnded records why the connection's read loop ended (melody's error
// handler): a close frame from the client, or a frame over the limit.
func (c *WSConn) readEnded(err error) {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		c.end.CompareAndSwap(0, int32(ce.Code))
	case errors.Is(err, websocket.ErrReadLimit):
		c.end.CompareAndSwap(0, websocket.CloseMessageTooBig)
	}
}

// EndCode returns the close code the connection ended with when the relay
// did not close it (see end): 1006 when it ended without a close frame.
func (c *WSConn) EndCode() int {
	if code := c.end.Load(); code != 0 {
		return int(code)
	}
	return websocket.CloseAbnormalClosure
}

// newWSConn makes the WSConn of a connection t is upgrading; onConnect
// gives it its melody session.
func newWSConn(t *Transport) *WSConn {
	return &WSConn{t: t}
}

// pendingClose is a close the WSConn writes once the frames queued before
// it were written.
type pendingClose struct {
	at  int64  // the queued count the close waits for
	msg []byte // the close frame's payload
}

// overflowLen is how many frames wait in the overflow list; qmu is held.
func (c *WSConn) overflowLen() int {
	if c.overflow == nil {
		return 0
	}
	return len(*c.overflow)
}

// more reports whether another text frame waits after the one melody's
// writer is writing now: the writer then writes again at once.
func (c *WSConn) more() bool {
	return c.queued.Load()-c.sent.Load() > 1
}

// wsRoom is how many of melody's channel slots a WSConn fills, one short of
// its capacity so melody's own close (Melody.CloseWithMsg) finds room.
const wsRoom = outputChannelSize - 1

// limit is how many frames may wait (channel and overflow): the queue plus
// its headroom, as when melody's channel held them all. Sessions close
// with 4008 through the queue before (Session.WriteLocked); a raw
// connection is aborted at the limit (full).
func (c *WSConn) limit() int { return c.t.o.QueueSize + queueHeadroom }

// full aborts a connection whose limit of waiting frames was reached; it
// runs without the WSConn's locks.
func (c *WSConn) full() {
	c.t.o.Metrics.SlowClose()
	c.Abort()
}

// Write queues a text frame. It does not block. A frame past the limit is
// not queued: the connection is aborted with 4008 instead (the error is
// nil: the abort reports it).
func (c *WSConn) Write(frame []byte) error {
	if c.closing.Load() {
		return ErrConnClosed
	}
	c.qmu.Lock()
	if c.inChan+c.overflowLen() >= c.limit() {
		c.qmu.Unlock()
		c.full()
		return nil
	}
	c.queued.Add(1)
	if c.overflow != nil || c.inChan >= wsRoom {
		if c.overflow == nil {
			c.overflow = new([][]byte)
		}
		*c.overflow = append(*c.overflow, frame)
		c.qmu.Unlock()
		return nil
	}
	c.inChan++
	err := c.ms.Write(frame)
	c.qmu.Unlock()
	if err != nil {
		return ErrConnClosed
	}
	return nil
}

// waiting returns how many frames wait to be written: in melody's channel
// and in the overflow list.
func (c *WSConn) waiting() (inChannel, overflow int) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.inChan, c.overflowLen()
}

// refill moves waiting frames into melody's channel now that its writer
// wrote one; the overflow list is released once empty.
func (c *WSConn) refill() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.inChan--
	if c.overflow == nil {
		return
	}
	list := *c.overflow
	for len(list) > 0 && c.inChan < wsRoom {
		f := list[0]
		list[0] = nil
		list = list[1:]
		c.inChan++
		if c.ms.Write(f) != nil {
			// The connection is closing: nothing more will be written.
			c.overflow = nil
			return
		}
	}
	*c.overflow = list
	if len(list) == 0 {
		c.overflow = nil
	}
}

// Close writes a close frame with code and reason after every queued frame
// and nothing after it. It does not block.
func (c *WSConn) Close(code int, reason string) {
	msg := []byte{}
	if code != 0 {
		msg = melody.FormatCloseMessage(code, reason)
	}
	c.closeMu.Lock()
	if c.close != nil || c.done {
		c.closeMu.Unlock()
		return
	}
	c.close = &pendingClose{at: c.queued.Load(), msg: msg}
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
	if c.done || c.close == nil || c.sent.Load() < c.close.at {
		c.closeMu.Unlock()
		return
	}
	c.done = true
	msg := c.close.msg
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
	c.end.CompareAndSwap(0, CloseSlowConsumer)
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

// Request returns a slim copy of the upgraded HTTP request (SlimRequest),
// new at each call. melody's Session.Request is nil once the connection
// is open.
func (c *WSConn) Request() *http.Request { return c.req.request() }

// frameSent runs after melody wrote a text frame of n bytes.
func (c *WSConn) frameSent(n int) {
	c.refill()
	c.sent.Add(1)
	if c.closing.Load() {
		c.maybeWriteClose()
	}
	c.recv.Sent(n)
}
