// Package sio serves rowcast's events to socket.io-client v4 apps
// (docs/protocol.md section 9): Engine.IO 4 and Socket.IO 5 over the WebSocket
// transport and, with Options.Polling, over HTTP long-polling with its
// upgrade to WebSocket (polling.go), default namespace only, on the relay's
// shared session layer (relay/transport/session), so it uses the same melody
// instance, hub, limits and drain as the plain protocol.
//
// What it does, matching socket.io's reference server (engine.io 6.6,
// socket.io 4.8) where the reference defines a behaviour:
//
//   - A request that is neither a WebSocket upgrade of transport=websocket
//     nor (with Options.Polling) a polling request, with EIO=4, gets HTTP
//     400 with the reference's JSON error body, e.g.
//     {"code":0,"message":"Transport unknown"} for transport=polling when
//     polling is off and {"code":5,"message":"Unsupported protocol
//     version"} for EIO=3; an unknown sid gets
//     {"code":1,"message":"Session ID unknown"}.
//   - After the upgrade (or in the polling handshake's response) the server
//     sends the open packet
//     0{"sid","upgrades","pingInterval","pingTimeout","maxPayload"}, upgrades
//     being ["websocket"] on polling and [] on WebSocket, and
//     drives the heartbeat: "2" every pingInterval, closing when no "3"
//     came back within pingTimeout. A client "2" closes the connection
//     (EIO 4 heartbeats go server to client), as does a malformed packet.
//   - A new Engine.IO session (a WebSocket upgrade or a polling
//     handshake) is subject to the connection limits
//     (session.Transport.Admit): past them it gets HTTP 429 (503 for the
//     total) with Retry-After and an Engine.IO JSON error body.
//   - The token comes from the CONNECT packet's auth object ({token}) or,
//     failing that, the upgrade request (access_token query parameter or
//     Authorization header). A bad one is answered
//     44{"message":"unauthorized"}; the upgrade is never refused for auth.
//     A user with as many sessions as the limit allows is answered
//     44{"message":"too many sessions"} and the transport closed. A
//     connection with no accepted CONNECT within the connect timeout is
//     closed (and counted). Other namespaces get
//     44/<nsp>,{"message":"Invalid namespace"}.
//   - Every event is 42["<event>",<data>,"<offset>"], the offset being the
//     event's position (docs/protocol.md section 3); resync is an event too.
//     Names Socket.IO reserves are never sent.
//   - Client events are discarded, answered 43<id>[{"message":…}] when they
//     ask for an ack; binary packets and their attachments are discarded.
//   - Connection state recovery: the CONNECT reply carries a pid bound to
//     the user; a reconnect with {pid, offset} replays every event after
//     the offset before the CONNECT reply, which repeats the pid (so
//     socket.recovered is true). An unusable history gives a fresh pid and a
//     resync event; a pid of another user, or none, gives a fresh session.
//   - An expired token, a slow consumer, rate limit abuse and draining close
//     the transport (never with a DISCONNECT packet; over polling, with the
//     Engine.IO close packet after what was queued), so the client
//     reconnects, fetches a fresh token through its auth callback, and
//     recovers.
package sio

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/metrics"
	"github.com/rowcast/rowcast/relay/transport/session"
)

// DefaultConnectTimeout is socket.io's connectTimeout: how long a
// connection may stay without an accepted CONNECT.
const DefaultConnectTimeout = 45 * time.Second

// Options configures a Server. The heartbeat interval, queue, rate limits
// and frame size limit are the session.Transport's.
type Options struct {
	// ConnectTimeout closes a connection that has no accepted CONNECT this
	// long after the upgrade. Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// PingTimeout is how long the server waits for the client's "3" after
	// each "2". Default: four fifths of the heartbeat (20s for socket.io's
	// 25s pingInterval, its defaults).
	PingTimeout time.Duration
	// Polling serves Engine.IO's HTTP long-polling transport and its
	// upgrade to WebSocket, so clients with socket.io-client's default
	// options connect. When false, only transport=websocket is served and
	// polling requests get 400 "Transport unknown".
	Polling bool
	Logger  *slog.Logger
}

// Server is the /socket.io/ endpoint. It implements http.Handler.
type Server struct {
	t              *session.Transport
	frames         session.FrameCache // frames must not be modified once written
	pingInterval   time.Duration
	pingTimeout    time.Duration
	connectTimeout time.Duration
	polling        bool
	log            *slog.Logger

	mu      sync.Mutex
	sockets map[string]*pollSocket // polling sessions by sid
}

// New returns a Server whose sessions run on t, beside t's other protocol.
func New(t *session.Transport, o Options) *Server {
	s := &Server{t: t, pingInterval: t.Options().Heartbeat, pingTimeout: o.PingTimeout,
		connectTimeout: o.ConnectTimeout, polling: o.Polling, log: o.Logger,
		sockets: make(map[string]*pollSocket)}
	if s.pingTimeout <= 0 {
		s.pingTimeout = s.pingInterval * 4 / 5
	}
	if s.connectTimeout <= 0 {
		s.connectTimeout = DefaultConnectTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Engine.IO's handshake error codes and messages.
const (
	errUnknownTransport   = 0
	errUnknownSID         = 1
	errBadHandshakeMethod = 2
	errBadRequest         = 3
	errUnsupportedVersion = 5
)

// ServeHTTP checks the request as the reference server does, in its
// order, and upgrades it, opens a polling session, or serves a polling
// session's poll, post or upgrade.
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	transport := q.Get("transport")
	switch {
	case transport != "websocket" && (transport != "polling" || !srv.polling):
		handshakeError(w, http.StatusBadRequest, errUnknownTransport, "Transport unknown")
	case transport == "polling" && !srv.t.AllowOrigin(r):
		// The WebSocket upgrade checks the origin the same way.
		http.Error(w, "origin not allowed", http.StatusForbidden)
	case r.Method == http.MethodOptions && transport == "polling":
		srv.cors(w, r)
		w.WriteHeader(http.StatusNoContent)
	case q.Has("sid"):
		so := srv.lookup(q.Get("sid"))
		switch {
		case so == nil:
			handshakeError(w, http.StatusBadRequest, errUnknownSID, "Session ID unknown")
		case transport == "websocket" && !websocket.IsWebSocketUpgrade(r):
			handshakeError(w, http.StatusBadRequest, errBadRequest, "Bad request")
		default:
			so.serve(w, r, transport)
		}
	case r.Method != http.MethodGet:
		handshakeError(w, http.StatusBadRequest, errBadHandshakeMethod, "Bad handshake method")
	case transport == "websocket" && !websocket.IsWebSocketUpgrade(r):
		handshakeError(w, http.StatusBadRequest, errBadRequest, "Bad request")
	case q.Get("EIO") != "4":
		handshakeError(w, http.StatusBadRequest, errUnsupportedVersion, "Unsupported protocol version")
	case srv.t.Draining():
		handshakeError(w, http.StatusServiceUnavailable, errBadRequest, "relay draining")
	case transport == "websocket" && !srv.t.AllowOrigin(r):
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
	default:
		// A new Engine.IO session, on either transport: the connection
		// limits apply before the upgrade or the handshake.
		tk, refused := srv.t.Admit(r)
		if refused != nil {
			refused.Header(w)
			if transport == "polling" {
				srv.cors(w, r)
			}
			handshakeError(w, refused.Status, errBadRequest, refused.Message)
			return
		}
		if transport == "polling" {
			srv.handshakePolling(w, r, tk)
			return
		}
		_ = srv.t.Serve(w, r, tk, func(s *session.Session) session.Handler {
			return &conn{srv: srv, s: s, sid: randomID()}
		})
	}
}

// cors lets a browser page of an allowed origin read polling responses.
func (srv *Server) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
			h.Set("Access-Control-Allow-Headers", rh)
		}
	}
}

// handshakeError writes Engine.IO's JSON error body.
func handshakeError(w http.ResponseWriter, status, code int, message string) {
	b, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, message})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// state is where a connection is in the Socket.IO handshake.
type state uint8

const (
	stateOpen       state = iota // Engine.IO open; the namespace is not connected
	stateConnecting              // CONNECT accepted; recovery replay running
	stateConnected               // CONNECT answered
	stateClosed
)

// conn is one Socket.IO client. The fields after the first group are
// guarded by the session.Session's lock.
type conn struct {
	srv     *Server
	s       *session.Session
	sid     string // the Engine.IO session id
	polling bool   // started on polling: the open packet offers the upgrade

	state        state
	pid          string // the Socket.IO private session id
	socketID     string
	attachments  int // binary frames still to discard
	awaitingPong bool
	pingTimer    *time.Timer
	pongTimer    *time.Timer
	connectTimer *time.Timer
}

// Transport implements session.Handler.
func (c *conn) Transport() string { return metrics.TransportSocketIO }

// Open sends the open packet and starts the heartbeat and the connect
// timeout.
func (c *conn) Open() {
	srv := c.srv
	c.s.Lock()
	defer c.s.Unlock()
	var upgrades []string
	if c.polling {
		upgrades = []string{"websocket"}
	}
	c.s.WriteLocked(openFrame(c.sid, upgrades, srv.pingInterval.Milliseconds(), srv.pingTimeout.Milliseconds(),
		srv.t.Options().MaxMessageSize))
	c.pingTimer = time.AfterFunc(srv.pingInterval, c.ping)
	c.connectTimer = time.AfterFunc(srv.connectTimeout, c.connectTimedOut)
}

func (c *conn) liveLocked() bool { return c.state != stateClosed && !c.s.ClosedLocked() }

// ping sends "2" and waits pingTimeout for the "3"; the next ping is
// scheduled when the "3" arrives.
func (c *conn) ping() {
	c.s.Lock()
	defer c.s.Unlock()
	if !c.liveLocked() {
		return
	}
	c.s.WriteLocked([]byte{enginePing})
	c.awaitingPong = true
	if c.pongTimer == nil {
		c.pongTimer = time.AfterFunc(c.srv.pingTimeout, c.pongTimedOut)
	} else {
		c.pongTimer.Reset(c.srv.pingTimeout)
	}
}

func (c *conn) pongTimedOut() {
	c.s.Lock()
	defer c.s.Unlock()
	if c.liveLocked() && c.awaitingPong {
		c.s.CloseLocked(0, "")
	}
}

func (c *conn) connectTimedOut() {
	c.s.Lock()
	defer c.s.Unlock()
	if c.liveLocked() && c.state == stateOpen {
		c.srv.t.Metrics().Refused(session.ReasonConnectTimeout)
		c.s.CloseLocked(0, "")
	}
}

// Message handles one Engine.IO packet from the client.
func (c *conn) Message(msg []byte) {
	if len(msg) == 0 {
		c.protocolError()
		return
	}
	switch msg[0] {
	case enginePong:
		c.s.Lock()
		if c.awaitingPong {
			c.awaitingPong = false
			c.pongTimer.Stop()
			c.pingTimer.Reset(c.srv.pingInterval)
		}
		c.s.Unlock()
	case engineMessage:
		c.message(msg[1:])
	case engineBinary:
		c.Binary(nil)
	case engineOpen, engineClose, engineUpgrade, engineNoop:
		// The reference server ignores these from a WebSocket client.
	default:
		// A client "2" (heartbeats go server to client in EIO 4) or an
		// unknown packet type: the reference server closes.
		c.protocolError()
	}
}

// protocolError closes the connection the way the reference server does on
// a protocol violation: a close frame without a status.
func (c *conn) protocolError() {
	c.s.Lock()
	c.s.CloseLocked(0, "")
	c.s.Unlock()
}

// message handles one Socket.IO packet.
func (c *conn) message(data []byte) {
	s := c.s
	s.Lock()
	if !c.liveLocked() {
		s.Unlock()
		return
	}
	if c.attachments > 0 {
		// Text while a binary packet's attachments are due: the reference
		// parser throws and the server closes.
		s.CloseLocked(0, "")
		s.Unlock()
		return
	}
	p, err := DecodePacket(data)
	if err != nil {
		c.srv.log.Debug("socket.io packet refused", "err", err)
		s.CloseLocked(0, "")
		s.Unlock()
		return
	}
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		c.attachments = p.Attachments
	}
	if allowed, closeNow := s.AllowLocked(); !allowed {
		if closeNow {
			s.CloseLocked(session.CloseRateLimited, "rate limited")
		} else if (p.Type == Event || p.Type == BinaryEvent) && p.ID >= 0 {
			s.WriteLocked(ackErrorFrame(p.ID, "rate limited"))
		}
		s.Unlock()
		return
	}
	ours := p.Namespace == "/" && c.state != stateOpen
	switch {
	case !ours && p.Type == Connect:
		if p.Namespace != "/" {
			s.WriteLocked(connectErrorFrame(p.Namespace, "Invalid namespace"))
			s.Unlock()
			return
		}
		s.Unlock()
		c.connect(p.Data)
		return
	case ours && p.Type != Connect && p.Type != ConnectError:
		switch p.Type {
		case Event, BinaryEvent:
			if p.ID >= 0 {
				s.WriteLocked(ackErrorFrame(p.ID, "client events are not supported"))
			}
		case Disconnect:
			c.state = stateOpen
			s.Unlock()
			s.Stop()
			return
		}
		// Acks: the server never asks for one; ignored as the reference
		// ignores an unknown ack id.
	default:
		// A second CONNECT, a client CONNECT_ERROR, or a packet for a
		// namespace that is not connected: the reference closes.
		s.CloseLocked(0, "")
	}
	s.Unlock()
}

// authPayload is what the CONNECT packet's auth object may carry.
type authPayload struct {
	Token  json.RawMessage `json:"token"`
	PID    json.RawMessage `json:"pid"`
	Offset json.RawMessage `json:"offset"`
}

// jsonString returns v when raw is a JSON string.
func jsonString(raw json.RawMessage) (v string, ok bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	return v, json.Unmarshal(raw, &v) == nil
}

// connect answers a CONNECT to the default namespace.
func (c *conn) connect(data json.RawMessage) {
	var a authPayload
	if len(data) > 0 {
		_ = json.Unmarshal(data, &a) // DecodePacket checked it is an object
	}
	token, ok := jsonString(a.Token)
	if !ok {
		token = auth.TokenFromRequest(c.s.Request())
	}
	p, err := c.srv.t.Options().Verifier.Verify(token)
	if err != nil {
		c.srv.log.Debug("socket.io connect refused", "err", err)
		c.srv.t.Metrics().Refused("unauthorized")
		c.srv.t.Metrics().AuthFailed(string(auth.ReasonOf(err)))
		c.s.Lock()
		c.s.WriteLocked(connectErrorFrame("/", "unauthorized"))
		c.s.Unlock()
		return
	}
	if refused := c.s.Ticket().ForUser(p.UserID); refused != nil {
		// A CONNECT_ERROR, so socket.io-client gives up instead of
		// retrying; the transport closes after it.
		c.srv.log.Debug("socket.io connect refused", "reason", refused.Reason, "user", p.UserID)
		c.s.Lock()
		c.s.WriteLocked(connectErrorFrame("/", "too many sessions"))
		c.s.CloseLocked(0, "")
		c.s.Unlock()
		return
	}
	pid, _ := jsonString(a.PID)
	since := ""
	if pid != "" {
		if start, ok := checkPID(pid, p.UserID); ok {
			offset, hasOffset := jsonString(a.Offset)
			since = resumeFrom(start, offset, hasOffset)
		}
	}
	err = c.s.Start(p, func() {
		if !c.liveLocked() {
			return
		}
		c.connectTimer.Stop()
		if since != "" {
			c.state = stateConnecting
			c.pid, c.socketID = pid, socketIDFor(pid)
			c.s.ResumeLocked(since)
			return
		}
		c.acceptFreshLocked()
		c.s.GoLiveLocked()
	})
	if err != nil {
		// The membership table could not be read: the client reconnects
		// with jitter, as when a relay drains.
		c.srv.log.Warn("socket.io connect refused", "err", err)
		c.s.Lock()
		c.s.CloseLocked(session.CloseGoingAway, "membership unavailable")
		c.s.Unlock()
	}
}

// ForbiddenLocked tells the client it left team (auth.membership): an
// "error" event {code: "forbidden", teamId} at the change's position.
func (c *conn) ForbiddenLocked(team string) {
	data := append(append([]byte(`{"code":"forbidden","teamId":`), appendJSONString(nil, team)...), '}')
	c.s.WriteLocked(eventFrame("error", data, c.s.PositionLocked()))
}

// acceptFreshLocked answers CONNECT for a session that starts at the
// current position: a new pid (which remembers that position, for a
// reconnect that has no offset yet) and socket id.
func (c *conn) acceptFreshLocked() {
	c.pid = newPID(c.s.PrincipalLocked().UserID, c.s.PositionLocked())
	c.socketID = socketIDFor(c.pid)
	c.state = stateConnected
	c.s.WriteLocked(connectFrame(c.socketID, c.pid))
}

// Binary discards a binary frame (an attachment or a stray one).
func (c *conn) Binary([]byte) {
	c.s.Lock()
	if c.attachments > 0 {
		c.attachments--
	}
	c.s.Unlock()
}

// Closed stops the timers.
func (c *conn) Closed() {
	c.s.Lock()
	defer c.s.Unlock()
	c.state = stateClosed
	for _, t := range []*time.Timer{c.pingTimer, c.pongTimer, c.connectTimer} {
		if t != nil {
			t.Stop()
		}
	}
}

// EventLocked frames an event as 42["<name>",<data>,"<offset>"]; a
// KindResync event becomes the resync event.
func (c *conn) EventLocked(ev *relay.Event) []byte {
	if (c.state != stateConnected && c.state != stateConnecting) || reserved(ev.Name) {
		return nil
	}
	return c.srv.frames.Get(ev, c.s.EpochLocked(), func() []byte {
		data := ev.Data
		if ev.Kind == relay.KindResync {
			data = resyncData(data)
		}
		// The event's own position: the same for every session.
		return eventFrame(ev.Name, data, c.s.PositionLocked())
	})
}

// ResyncLocked sends the resync event; when it ends a recovery attempt the
// CONNECT is answered first, with a fresh pid, so socket.recovered is false.
func (c *conn) ResyncLocked() {
	switch c.state {
	case stateConnecting:
		c.acceptFreshLocked()
	case stateConnected:
	default:
		return
	}
	c.s.WriteLocked(eventFrame("resync", []byte(`{"reason":"history_expired"}`), c.s.PositionLocked()))
}

// ResumedLocked answers the CONNECT of a recovered session with its pid.
func (c *conn) ResumedLocked(int) {
	if c.state != stateConnecting {
		return
	}
	c.state = stateConnected
	c.s.WriteLocked(connectFrame(c.socketID, c.pid))
}

// ExpiredLocked closes the transport (not the Socket.IO session), so the
// client reconnects with a fresh token from its auth callback and recovers.
func (c *conn) ExpiredLocked() {
	c.s.CloseLocked(session.CloseUnauthorized, "token expired")
}

// randomID returns 15 random bytes in URL-safe base64 (20 characters), the
// shape of the reference server's ids.
func randomID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// A pid is "<random>.<sum>.<start position>": the start position is where
// its session began, which serves a reconnect that carries no offset (its
// client received no event yet), and sum, a hash of the user, the random
// part and the start, ties the pid to its user. The hash is not keyed, so
// it is a check, not a secret: a pid lets a client ask for nothing it could
// not ask for with a since position, and a resume never leaves the scope of
// the token that makes it. It needs no server state, so a client recovers
// on any replica.

// pidSum ties a pid's random part and start position to a user.
func pidSum(userID, random, start string) string {
	h := sha256.New()
	for _, s := range []string{"rowcast sio pid", userID, random, start} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// newPID returns a fresh pid for userID's session starting at start.
func newPID(userID, start string) string {
	r := randomID()
	return r + "." + pidSum(userID, r, start) + "." + start
}

// maxPIDLen bounds the pids checkPID examines.
const maxPIDLen = 4096

// checkPID returns the start position of pid when pid was made for userID.
func checkPID(pid, userID string) (start string, ok bool) {
	if len(pid) > maxPIDLen {
		return "", false
	}
	r, rest, ok1 := strings.Cut(pid, ".")
	sum, start, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || subtle.ConstantTimeCompare([]byte(sum), []byte(pidSum(userID, r, start))) != 1 {
		return "", false
	}
	return start, true
}

// socketIDFor derives the socket id from the pid, so a recovered session
// keeps its id, as with the reference server.
func socketIDFor(pid string) string {
	sum := sha256.Sum256([]byte("rowcast sio socket id\x00" + pid))
	return base64.RawURLEncoding.EncodeToString(sum[:15])
}

// resumeFrom returns the position a recovering session replays after: the
// offset, never before the pid's start position, or the start position when
// the client has no offset. An offset of another epoch
// or a malformed one is returned as is, for the session to answer with resync.
func resumeFrom(start, offset string, hasOffset bool) string {
	if !hasOffset {
		return start
	}
	sp, err := relay.ParsePosition(start)
	if err != nil {
		return offset
	}
	op, err := relay.ParsePosition(offset)
	if err != nil || op.Epoch != sp.Epoch {
		return offset
	}
	if sp.Pos.Compare(op.Pos) > 0 {
		return start
	}
	return offset
}
