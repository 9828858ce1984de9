package sio

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay/transport/session"
)

// Engine.IO's HTTP long-polling transport, and its upgrade to WebSocket.
//
// A session starts with a GET handshake whose response is the open packet.
// The client then keeps one GET poll pending: it is answered when there is
// something to send (packets joined by the record separator 0x1e) or, with
// a noop "6", after a ping interval with nothing. Client packets come in
// POST bodies, joined the same way. A second GET (or POST) while one is
// pending is an error that ends the session, as with the reference server.
//
// The upgrade is the client's WebSocket request with the session's sid:
// "2probe" is answered "3probe" and the pending poll is released with what
// is queued or a noop, so the client can pause polling; the client's "5"
// then moves what is still queued to the WebSocket, which carries the
// session from then on. The Socket.IO session (and the session.Session under
// it, with its positions and queue) is the same before and after.
//
// A close over polling (slow consumer, rate limit, token expiry, draining,
// heartbeat timeout) sends what is queued followed by the close packet "1"
// in the next poll, so the client reconnects and recovers.

// recordSeparator joins the packets of a polling payload.
const recordSeparator = 0x1e

// upgradeTimeout is how long a WebSocket may stay probing before the
// upgrade is given up (the reference server's default).
const upgradeTimeout = 10 * time.Second

// pollSocket is one Engine.IO session that started on polling: the
// session.Conn its Socket.IO session writes to. Until the upgrade it holds the
// session's frames for the next poll; after it, frames go to the WebSocket.
type pollSocket struct {
	srv *Server
	sid string
	req *http.Request    // the handshake's slim copy (session.SlimRequest)
	s   *session.Session // set before the socket is registered, then fixed

	wake chan struct{} // capacity 1: a pending poll has something to do
	// deliver hands one client packet to the session (the session's
	// Receive); a test may wrap it, before the first POST, to hold a
	// delivery.
	deliver func(packet []byte)

	mu         sync.Mutex
	buf        [][]byte // frames waiting for a poll
	polling    bool     // a GET is pending
	posting    bool     // a POST is being read or its packets delivered
	closing    bool     // Close was called: flush buf, then "1"
	gone       bool     // the session ended; nothing more is sent
	byClient   bool     // the client sent Engine.IO's close packet
	upgrading  bool     // "3probe" sent; polls are answered at once
	probe      *session.WSConn
	ws         *session.WSConn // after the upgrade
	closeTimer *time.Timer
	probeTimer *time.Timer
}

// EndCode returns how the session's connection ended when the relay did
// not close it (the session's disconnect metric): 1000 after the client's
// Engine.IO close packet, the upgraded WebSocket's code once upgraded, else
// 1006 (the client went away without a word: no poll came in time).
func (so *pollSocket) EndCode() int {
	so.mu.Lock()
	defer so.mu.Unlock()
	switch {
	case so.byClient:
		return websocket.CloseNormalClosure
	case so.ws != nil:
		return so.ws.EndCode()
	}
	return websocket.CloseAbnormalClosure
}

// handshakePolling opens a session on polling and answers the
// handshake GET with its open packet; the session runs on tk, a ticket
// from Admit.
func (srv *Server) handshakePolling(w http.ResponseWriter, r *http.Request, tk *session.Ticket) {
	so := &pollSocket{srv: srv, sid: randomID(), req: session.SlimRequest(r), wake: make(chan struct{}, 1)}
	s := srv.t.Attach(so, tk, func(s *session.Session) session.Handler {
		return &conn{srv: srv, s: s, sid: so.sid, polling: true}
	})
	if s == nil {
		handshakeError(w, http.StatusServiceUnavailable, errBadRequest, "relay draining")
		return
	}
	so.s, so.deliver = s, s.Receive
	srv.mu.Lock()
	srv.sockets[so.sid] = so
	srv.mu.Unlock()
	so.poll(w, r)
}

// lookup returns the polling session sid, or nil.
func (srv *Server) lookup(sid string) *pollSocket {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.sockets[sid]
}

func (srv *Server) forget(so *pollSocket) {
	srv.mu.Lock()
	if srv.sockets[so.sid] == so {
		delete(srv.sockets, so.sid)
	}
	srv.mu.Unlock()
}

func (so *pollSocket) signal() {
	select {
	case so.wake <- struct{}{}:
	default:
	}
}

// Write queues frame for the next poll, or writes it to the WebSocket
// after the upgrade. The session.Session calls it with its lock held.
func (so *pollSocket) Write(frame []byte) error {
	so.mu.Lock()
	if so.gone || so.closing {
		so.mu.Unlock()
		return session.ErrConnClosed
	}
	if ws := so.ws; ws != nil {
		so.mu.Unlock()
		return ws.Write(frame)
	}
	so.buf = append(so.buf, frame)
	so.mu.Unlock()
	so.signal()
	return nil
}

// Close ends the session after what is queued: over polling the next poll
// carries the queued frames and the close packet; after the upgrade the
// WebSocket closes with code. A client that does not poll within a ping
// interval and timeout is dropped.
func (so *pollSocket) Close(code int, reason string) {
	so.mu.Lock()
	if so.gone || so.closing {
		so.mu.Unlock()
		return
	}
	if ws := so.ws; ws != nil {
		so.mu.Unlock()
		ws.Close(code, reason)
		return
	}
	so.closing = true
	probe := so.probe
	so.probe, so.upgrading = nil, false
	so.closeTimer = time.AfterFunc(so.srv.pingInterval+so.srv.pingTimeout, so.finish)
	so.mu.Unlock()
	if probe != nil {
		probe.Close(0, "")
	}
	so.signal()
}

// Request returns the slim copy of the handshake request
// (session.SlimRequest).
func (so *pollSocket) Request() *http.Request { return so.req }

// finish ends the session for good: it is forgotten, a pending poll gets
// the close packet, and the session.Session is told. It must be called
// without the session.Session's lock.
func (so *pollSocket) finish() {
	so.mu.Lock()
	if so.gone {
		so.mu.Unlock()
		return
	}
	so.gone = true
	so.buf = nil
	for _, t := range []*time.Timer{so.closeTimer, so.probeTimer} {
		if t != nil {
			t.Stop()
		}
	}
	probe := so.probe
	so.probe = nil
	so.mu.Unlock()
	if probe != nil {
		probe.Close(0, "")
	}
	so.signal()
	so.srv.forget(so)
	so.s.Gone()
}

// serve handles a request that names this session's sid.
func (so *pollSocket) serve(w http.ResponseWriter, r *http.Request, transport string) {
	switch {
	case transport == "websocket":
		so.upgrade(w, r)
	case r.Method == http.MethodGet:
		so.poll(w, r)
	case r.Method == http.MethodPost:
		so.post(w, r)
	default:
		handshakeError(w, http.StatusBadRequest, errBadRequest, "Bad request")
	}
}

// poll answers a GET: at once when frames are queued, the session is
// closing or upgrading, else when a frame is written or a ping interval
// passed (with a noop).
func (so *pollSocket) poll(w http.ResponseWriter, r *http.Request) {
	so.mu.Lock()
	switch {
	case so.gone:
		so.mu.Unlock()
		handshakeError(w, http.StatusBadRequest, errUnknownSID, "Session ID unknown")
		return
	case so.ws != nil:
		so.mu.Unlock()
		handshakeError(w, http.StatusBadRequest, errBadRequest, "Bad request")
		return
	case so.polling:
		// A second poll while one is pending: the reference server
		// answers 400 and closes the session.
		so.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		so.finish()
		return
	}
	so.polling = true
	timer := time.NewTimer(so.srv.pingInterval)
	defer timer.Stop()
wait:
	for len(so.buf) == 0 && !so.closing && !so.gone && !so.upgrading && so.ws == nil {
		so.mu.Unlock()
		select {
		case <-so.wake:
			so.mu.Lock()
		case <-timer.C:
			so.mu.Lock()
			break wait
		case <-r.Context().Done():
			// The client went away with its poll: the session ends, as
			// with the reference server; the client recovers.
			so.mu.Lock()
			so.polling = false
			so.mu.Unlock()
			so.finish()
			return
		}
	}
	frames := so.buf
	so.buf = nil
	closeNow := so.gone || so.closing
	if so.gone {
		frames = nil
	}
	so.polling = false
	so.mu.Unlock()

	payload := make([]byte, 0, 64)
	for i, f := range frames {
		if i > 0 {
			payload = append(payload, recordSeparator)
		}
		payload = append(payload, f...)
	}
	if closeNow {
		if len(frames) > 0 {
			payload = append(payload, recordSeparator)
		}
		payload = append(payload, engineClose)
	}
	if len(payload) == 0 {
		payload = append(payload, engineNoop)
	}
	so.srv.cors(w, r)
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
	_, err := w.Write(payload)
	if err == nil {
		err = http.NewResponseController(w).Flush()
	}
	if err != nil {
		so.finish()
		return
	}
	for _, f := range frames {
		so.s.Sent(len(f))
	}
	if closeNow {
		so.finish()
	}
}

// post reads a POST's packets and hands them to the session in order. A
// POST that arrives while another is read or delivered is answered 400 and
// ends the session, as with the reference server, so the packets of two
// POSTs are never delivered concurrently or out of order. A body over the
// message size limit is answered 413 and closes the session like an
// oversized WebSocket frame (1009): the next poll gets what is queued and
// the close packet.
func (so *pollSocket) post(w http.ResponseWriter, r *http.Request) {
	so.mu.Lock()
	switch {
	case so.gone:
		so.mu.Unlock()
		handshakeError(w, http.StatusBadRequest, errUnknownSID, "Session ID unknown")
		return
	case so.ws != nil:
		so.mu.Unlock()
		handshakeError(w, http.StatusBadRequest, errBadRequest, "Bad request")
		return
	case so.posting:
		so.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		so.finish()
		return
	}
	so.posting = true
	deliver := so.deliver
	so.mu.Unlock()
	defer func() {
		so.mu.Lock()
		so.posting = false
		so.mu.Unlock()
	}()
	limit := so.srv.t.Options().MaxMessageSize
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	switch {
	case err != nil:
		w.WriteHeader(http.StatusBadRequest)
		so.finish()
		return
	case int64(len(body)) > limit:
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		so.s.Lock()
		so.s.CloseLocked(websocket.CloseMessageTooBig, "message too big")
		so.s.Unlock()
		return
	}
	for p := range bytes.SplitSeq(body, []byte{recordSeparator}) {
		if len(p) == 1 && p[0] == engineClose {
			// The client closes the session.
			so.mu.Lock()
			so.byClient = true
			so.mu.Unlock()
			so.finish()
			break
		}
		deliver(p)
	}
	so.srv.cors(w, r)
	w.Header().Set("Content-Type", "text/html")
	_, _ = w.Write([]byte("ok"))
}

// upgrade runs the client's WebSocket for this session: a probe until the
// client's "5", the session's transport after it.
func (so *pollSocket) upgrade(w http.ResponseWriter, r *http.Request) {
	so.mu.Lock()
	busy := so.gone || so.closing || so.probe != nil || so.ws != nil
	so.mu.Unlock()
	if busy {
		handshakeError(w, http.StatusBadRequest, errBadRequest, "Bad request")
		return
	}
	_ = so.srv.t.ServeConn(w, r, func(c *session.WSConn) session.Receiver {
		so.mu.Lock()
		defer so.mu.Unlock()
		if so.gone || so.closing || so.probe != nil || so.ws != nil {
			c.Close(0, "")
			return ignore{}
		}
		so.probe = c
		so.probeTimer = time.AfterFunc(upgradeTimeout, func() {
			so.mu.Lock()
			timedOut := so.probe == c
			if timedOut {
				so.probe, so.upgrading = nil, false
			}
			so.mu.Unlock()
			if timedOut {
				c.Close(0, "")
			}
		})
		return &upgradeConn{so: so, c: c}
	})
}

// upgradeConn is the WebSocket a polling session upgrades to.
type upgradeConn struct {
	so *pollSocket
	c  *session.WSConn
	// uncounted is the number of this WebSocket's probe answers ("3probe")
	// not yet reported written: they are not the session's frames. It is
	// per WebSocket, so an answer a failed probe never wrote cannot swallow
	// the count of a session frame on a later one.
	uncounted atomic.Int32
}

func (u *upgradeConn) upgraded() bool {
	u.so.mu.Lock()
	defer u.so.mu.Unlock()
	return u.so.ws == u.c
}

// Receive handles the probe and the upgrade packet, then, once upgraded,
// hands every packet to the session.
func (u *upgradeConn) Receive(msg []byte) {
	so := u.so
	if u.upgraded() {
		so.s.Receive(msg)
		return
	}
	so.mu.Lock()
	if so.probe != u.c {
		so.mu.Unlock()
		return
	}
	switch {
	case string(msg) == "2probe":
		so.upgrading = true
		u.uncounted.Add(1)
		_ = u.c.Write([]byte("3probe"))
		so.mu.Unlock()
		// Release a pending poll so the client can pause polling.
		so.signal()
	case string(msg) == "5" && so.upgrading:
		// What is still queued goes first, in order; the session's later
		// frames follow on the WebSocket.
		for _, f := range so.buf {
			_ = u.c.Write(f)
		}
		so.buf = nil
		so.ws, so.probe, so.upgrading = u.c, nil, false
		if so.probeTimer != nil {
			so.probeTimer.Stop()
		}
		so.mu.Unlock()
		so.signal()
	default:
		// Anything else during the probe: the reference closes the probe.
		so.probe, so.upgrading = nil, false
		so.mu.Unlock()
		u.c.Close(0, "")
	}
}

// ReceiveBinary hands binary frames to the session once upgraded.
func (u *upgradeConn) ReceiveBinary(msg []byte) {
	if u.upgraded() {
		u.so.s.ReceiveBinary(msg)
	}
}

// Sent counts the session's frames, not the probe's answer.
func (u *upgradeConn) Sent(size int) {
	for {
		n := u.uncounted.Load()
		if n == 0 {
			u.so.s.Sent(size)
			return
		}
		if u.uncounted.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// Gone ends the session when it ran on this WebSocket; a failed probe
// leaves it on polling.
func (u *upgradeConn) Gone() {
	so := u.so
	so.mu.Lock()
	if so.ws == u.c {
		so.mu.Unlock()
		so.finish()
		return
	}
	if so.probe == u.c {
		so.probe, so.upgrading = nil, false
	}
	so.mu.Unlock()
}

// ignore is the receiver of a WebSocket refused after its upgrade.
type ignore struct{}

func (ignore) Receive([]byte)       {}
func (ignore) ReceiveBinary([]byte) {}
func (ignore) Sent(int)             {}
func (ignore) Gone()                {}
