// Package ws serves rowcast's plain WebSocket protocol (docs/protocol.md sections
// 1-7): authentication from the upgrade request, welcome, resume, client
// messages and their errors. Subscription, positions, replay, the bounded
// queue, rate limits, heartbeats and token expiry are the shared session's
// (relay/transport/session), which this package frames as JSON text frames.
//
// A Server owns the relay's session.Transport; the Socket.IO endpoint
// (relay/transport/sio) mounts on the same one, so both protocols share one
// melody instance, one hub and one drain.
package ws

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/internal/jsonstr"
	"github.com/rowcast/rowcast/relay/metrics"
	"github.com/rowcast/rowcast/relay/transport/session"
)

// Protocol is the wire protocol version sent in welcome.
const Protocol = 1

// Options configures a Server: the session.Options of its Transport (Hub,
// History and Verifier required; zero limits select the docs/protocol.md
// defaults) and the plain protocol's own settings.
type Options struct {
	session.Options
	// ResumeGrace is how long a new session without since holds live events
	// waiting for a resume message. Default 250ms.
	ResumeGrace time.Duration
	// MaxSubscribeEntities is the longest entity list a subscribe message
	// may carry; a longer one is answered bad_request, and the session
	// keeps its filter. Default DefaultMaxSubscribeEntities.
	MaxSubscribeEntities int
}

// DefaultMaxSubscribeEntities is Options.MaxSubscribeEntities when unset.
const DefaultMaxSubscribeEntities = 64

// Server is the /ws endpoint. It implements http.Handler.
type Server struct {
	t           *session.Transport
	grace       time.Duration
	maxEntities int
	frames      session.FrameCache
}

// New returns a Server on a new session.Transport. Close it with Drain.
func New(o Options) *Server {
	if o.ResumeGrace <= 0 {
		o.ResumeGrace = 250 * time.Millisecond
	}
	if o.MaxSubscribeEntities <= 0 {
		o.MaxSubscribeEntities = DefaultMaxSubscribeEntities
	}
	t := session.New(o.Options)
	return &Server{t: t, grace: o.ResumeGrace, maxEntities: o.MaxSubscribeEntities}
}

// Transport returns the session.Transport the server's sessions run on, for
// other protocols to mount on the same melody instance and hub.
func (s *Server) Transport() *session.Transport { return s.t }

// ServeHTTP upgrades /ws requests, in this order: a foreign origin gets
// 403; the connection limits (session.Transport.Admit: the client
// address's upgrade rate, the sessions in total and the address's) 429 or
// 503 with Retry-After; the token is verified, and a valid token of a
// user with as many sessions as the limit allows gets 429. A bad token is
// answered after the upgrade, with an error frame and close 4401, as the
// protocol requires.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.t.Draining() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "this endpoint speaks WebSocket (rowcast protocol 1)", http.StatusBadRequest)
		return
	}
	if !s.t.AllowOrigin(r) {
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
		return
	}
	tk, refused := s.t.Admit(r)
	if refused != nil {
		refused.WriteHTTP(w)
		return
	}
	since := r.URL.Query().Get("since")
	p, err := s.t.Options().Verifier.Verify(auth.TokenFromRequest(r))
	if err == nil {
		if refused := tk.ForUser(p.UserID); refused != nil {
			tk.Release()
			refused.WriteHTTP(w)
			return
		}
	}
	_ = s.t.Serve(w, withoutToken(r), tk, func(cs *session.Session) session.Handler {
		return &conn{srv: s, s: cs, start: &connStart{since: since, principal: p, authErr: err}}
	})
}

// withoutToken returns r, or a copy of it without the token when r carries
// one (the Authorization header, the access_token parameter): the token was
// read, and the copy of the request an idle session keeps (the largest part
// of which would be the token) is never read by this protocol.
func withoutToken(r *http.Request) *http.Request {
	q := r.URL.Query()
	if r.Header.Get("Authorization") == "" && !q.Has("access_token") {
		return r
	}
	r = r.Clone(r.Context())
	r.Header.Del("Authorization")
	if q.Has("access_token") {
		q.Del("access_token")
		r.URL.RawQuery = q.Encode()
		r.RequestURI = r.URL.RequestURI()
	}
	return r
}

// Drain refuses new sessions and closes every open one, of either protocol,
// with 1001 (going away), after what is queued for it, in batches spread
// over window (see session.Transport.Drain). It returns when every session
// has closed or ctx ends, whichever is first.
func (s *Server) Drain(ctx context.Context, window time.Duration) { s.t.Drain(ctx, window) }

// Sessions returns how many sessions are open, of either protocol.
func (s *Server) Sessions() int { return s.t.Sessions() }

// conn is one plain-protocol client. Its fields after the first group are
// guarded by the session.Session's lock.
type conn struct {
	srv   *Server
	s     *session.Session
	start *connStart // what Open needs; nil after it

	gotFirst bool
	grace    *time.Timer // the resume grace period's; nil once it ended
}

// connStart is what the upgrade request said, for Open: an idle session
// does not keep it.
type connStart struct {
	since     string
	principal auth.Principal
	authErr   error
}

func (c *conn) metrics() *metrics.Metrics { return c.s.Transport().Metrics() }

// Transport implements session.Handler.
func (c *conn) Transport() string { return metrics.TransportWS }

// Open answers a bad token with an error frame and 4401, or starts the
// session: welcome, then either the resume the request asked for or a grace
// period waiting for a resume message.
func (c *conn) Open() {
	st := c.start
	c.start = nil
	if st.authErr != nil {
		c.metrics().Refused("unauthorized")
		c.metrics().AuthFailed(string(auth.ReasonOf(st.authErr)))
		c.s.Lock()
		c.s.WriteLocked(errorFrame("unauthorized", st.authErr.Error()))
		c.s.CloseLocked(session.CloseUnauthorized, "unauthorized")
		c.s.Unlock()
		return
	}
	err := c.s.Start(st.principal, func() {
		c.s.WriteLocked(c.welcomeLocked())
		if st.since != "" {
			c.gotFirst = true // resume came with the request; no resume message
			c.s.ResumeLocked(st.since)
			return
		}
		c.grace = time.AfterFunc(c.srv.grace, func() {
			c.s.Lock()
			defer c.s.Unlock()
			c.grace = nil // ended: an idle session does not keep the timer
			if c.s.AwaitingLocked() {
				c.s.GoLiveLocked()
			}
		})
	})
	if err != nil {
		// The membership table could not be read: the client reconnects
		// with jitter, as when a relay drains.
		c.s.Transport().Options().Logger.Warn("session refused", "err", err)
		c.s.Lock()
		c.s.CloseLocked(session.CloseGoingAway, "membership unavailable")
		c.s.Unlock()
	}
}

// ForbiddenLocked tells the client it left team (auth.membership).
func (c *conn) ForbiddenLocked(team string) {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Code   string `json:"code"`
		TeamID string `json:"teamId"`
	}{"error", "forbidden", team})
	c.s.WriteLocked(b)
}

func (c *conn) welcomeLocked() []byte {
	p := c.s.PrincipalLocked()
	w := struct {
		Type        string   `json:"type"`
		Protocol    int      `json:"protocol"`
		SessionID   string   `json:"sessionId"`
		UserID      string   `json:"userId"`
		TeamIDs     []string `json:"teamIds"`
		Position    string   `json:"position"`
		HeartbeatMs int64    `json:"heartbeatMs"`
		ExpiresAt   *string  `json:"expiresAt"`
		Warning     string   `json:"warning,omitempty"`
	}{"welcome", Protocol, newSessionID(), p.UserID, p.TeamIDs, c.s.PositionLocked(),
		c.s.Transport().Options().Heartbeat.Milliseconds(), expiresAt(p), ""}
	if p.NoTeamClaim {
		w.Warning = "the token has no team claim: this session receives no team's events"
	}
	if w.TeamIDs == nil {
		w.TeamIDs = []string{}
	}
	b, _ := json.Marshal(w)
	return b
}

func expiresAt(p auth.Principal) *string {
	if p.ExpiresAt.IsZero() {
		return nil
	}
	s := p.ExpiresAt.UTC().Format(time.RFC3339)
	return &s
}

// Message handles one client message (docs/protocol.md section 6).
func (c *conn) Message(msg []byte) {
	s := c.s
	s.Lock()
	first := !c.gotFirst
	c.gotFirst = true
	if s.ClosedLocked() {
		s.Unlock()
		return
	}
	if allowed, closeNow := s.AllowLocked(); !allowed {
		if closeNow {
			s.WriteLocked(errorFrame("rate_limited", "too many messages"))
			s.CloseLocked(session.CloseRateLimited, "rate limited")
		} else {
			s.WriteLocked(errorFrame("rate_limited", "message rate limit exceeded"))
		}
		s.Unlock()
		return
	}
	m, err := decodeMessage(msg)
	if errors.Is(err, errNotObject) {
		if first {
			s.CloseLocked(session.CloseBadRequest, "first message must be a JSON object")
		} else {
			s.WriteLocked(errorFrame("bad_request", err.Error()))
		}
		s.Unlock()
		return
	}
	if err != nil {
		// A JSON object, but a field of the wrong type: a bad request, not
		// a malformed first message.
		if s.AwaitingLocked() {
			s.GoLiveLocked()
		}
		s.WriteLocked(errorFrame("bad_request", err.Error()))
		s.Unlock()
		return
	}
	if first && m.Type != "resume" && s.AwaitingLocked() {
		s.GoLiveLocked()
	}
	switch m.Type {
	case "ping":
		s.WriteLocked(pongFrame(m.ID))
	case "subscribe":
		c.subscribeLocked(m.Entities)
	case "resume":
		switch {
		case !first:
			s.WriteLocked(errorFrame("bad_request", "resume must be the first message"))
		case !s.AwaitingLocked():
			// It came after the resume grace period, when live events had
			// already gone out: replaying now would reorder them.
			s.WriteLocked([]byte(`{"type":"resync","reason":"history_expired"}`))
			c.metrics().Resync()
		default:
			// An empty or malformed since is answered with resync.
			s.ResumeLocked(m.Since)
		}
	case "auth":
		s.Unlock()
		c.reauth(m.Token)
		return
	case "":
		s.WriteLocked(errorFrame("bad_request", "message has no type"))
	default:
		s.WriteLocked(errorFrame("bad_request", "unknown message type "+strconvQuote(m.Type)))
	}
	s.Unlock()
}

func (c *conn) subscribeLocked(entities []string) {
	if entities == nil {
		c.s.WriteLocked(errorFrame("bad_request", "subscribe needs entities, an array of entity types"))
		return
	}
	if n, limit := len(entities), c.srv.maxEntities; n > limit {
		c.metrics().MessageRefused("subscribe_entities")
		c.s.WriteLocked(errorFrame("bad_request", fmt.Sprintf("subscribe lists %d entities; at most %d are allowed", n, limit)))
		return
	}
	c.s.SetFilterLocked(entities)
	b, _ := json.Marshal(struct {
		Type     string   `json:"type"`
		Entities []string `json:"entities"`
	}{"subscribed", entities})
	c.s.WriteLocked(b)
}

// reauth verifies a fresh token. The same user may refresh; a token for
// another user, or an invalid one, closes the session with 4401. When the
// token lists other teams the session follows them from now on.
func (c *conn) reauth(token string) {
	s := c.s
	p, err := s.Transport().Options().Verifier.Verify(token)
	s.Lock()
	if err != nil || p.UserID != s.PrincipalLocked().UserID {
		msg, reason := "token for another user", "other_user"
		if err != nil {
			msg, reason = err.Error(), string(auth.ReasonOf(err))
		}
		c.metrics().AuthFailed(reason)
		s.WriteLocked(errorFrame("unauthorized", msg))
		s.CloseLocked(session.CloseUnauthorized, "unauthorized")
		s.Unlock()
		return
	}
	s.Unlock()
	s.SetPrincipal(p)
	s.Lock()
	defer s.Unlock()
	b, _ := json.Marshal(struct {
		Type      string  `json:"type"`
		ExpiresAt *string `json:"expiresAt"`
	}{"auth_ok", expiresAt(p)})
	s.WriteLocked(b)
}

// Binary handles a binary frame like a message that is not JSON: a first
// message closes with 4400, later ones are answered bad_request, within
// the same rate limit as text messages.
func (c *conn) Binary([]byte) {
	c.Message([]byte{0})
}

// Closed stops the resume grace timer.
func (c *conn) Closed() {
	c.s.Lock()
	defer c.s.Unlock()
	if c.grace != nil {
		c.grace.Stop()
	}
}

// EventLocked frames an event: {"type":"event","event":…,"position":…,
// "data":…}; a KindResync event's Data is its whole frame.
func (c *conn) EventLocked(ev *relay.Event) []byte {
	if ev.Kind == relay.KindResync {
		return ev.Data
	}
	return c.srv.frames.Get(ev, c.s.EpochLocked(), func() []byte {
		pos := c.s.PositionLocked() // the event's own: the same for every session
		frame := make([]byte, 0, 48+len(ev.Name)+len(pos)+len(ev.Data))
		frame = append(frame, `{"type":"event","event":`...)
		frame = jsonstr.Append(frame, ev.Name)
		frame = append(frame, `,"position":"`...)
		frame = append(frame, pos...)
		frame = append(frame, `","data":`...)
		frame = append(frame, ev.Data...)
		return append(frame, '}')
	})
}

// ResyncLocked sends {"type":"resync","reason":"history_expired"}.
func (c *conn) ResyncLocked() {
	c.s.WriteLocked([]byte(`{"type":"resync","reason":"history_expired"}`))
}

// ResumedLocked sends {"type":"resumed","position":…,"replayed":n}.
func (c *conn) ResumedLocked(replayed int) {
	b, _ := json.Marshal(struct {
		Type     string `json:"type"`
		Position string `json:"position"`
		Replayed int    `json:"replayed"`
	}{"resumed", c.s.PositionLocked(), replayed})
	c.s.WriteLocked(b)
}

// ExpiredLocked sends the token_expired error and closes with 4401.
func (c *conn) ExpiredLocked() {
	c.s.WriteLocked(errorFrame("token_expired", "token expired"))
	c.s.CloseLocked(session.CloseUnauthorized, "token expired")
}

// errNotObject is decodeMessage's error for a message that is not a JSON
// object; its text is the bad_request answer to one after the first.
var errNotObject = errors.New("message is not a JSON object")

// decodeMessage decodes one client message. It fails with errNotObject
// when msg is not a JSON object, or, for an object with a field of the
// wrong type, with an error whose text is the bad_request answer
// (fieldTypeMessage).
func decodeMessage(msg []byte) (clientMessage, error) {
	if !isJSONObject(msg) {
		return clientMessage{}, errNotObject
	}
	var m clientMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return clientMessage{}, errors.New(fieldTypeMessage(err))
	}
	return m, nil
}

// pongFrame answers a ping with its id, or null when it has none.
func pongFrame(id json.RawMessage) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	return append(append([]byte(`{"type":"pong","id":`), id...), '}')
}

// fieldTypeMessage describes a client message that failed to decode
// into clientMessage in the protocol's terms, never Go's.
func fieldTypeMessage(err error) string {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return "a field has the wrong type"
	}
	want := map[string]string{"type": "a string", "token": "a string", "since": "a string",
		"entities": "a list of strings"}[strings.SplitN(te.Field, ".", 2)[0]]
	if want == "" {
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	}
	return fmt.Sprintf("field %q must be %s, not %s", strings.SplitN(te.Field, ".", 2)[0], want, te.Value)
}

// clientMessage is every field a client message may carry.
type clientMessage struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	Token    string          `json:"token"`
	Entities []string        `json:"entities"`
	Since    string          `json:"since"`
}

func isJSONObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return json.Valid(b)
		}
		return false
	}
	return false
}

func errorFrame(code, message string) []byte {
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}{"error", code, message})
	return b
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "s_" + base64.RawURLEncoding.EncodeToString(b[:])
}
