// Package ws serves rowcast's plain WebSocket protocol (PROTOCOL.md sections
// 1-7) on melody: authentication, welcome, resume, client messages, rate
// limits, heartbeats and the per-session bounded queue.
//
// Each session owns its queue (melody's per-session output channel, sized
// here and never allowed to overflow silently) and its writer goroutine; the
// hub hands it events under a per-shard lock only, so no lock is shared
// between sessions on the write path.
package ws

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"golang.org/x/time/rate"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/hub"
	"github.com/rowcast/rowcast/relay/metrics"
)

// Close codes of PROTOCOL.md section 7.
const (
	CloseGoingAway    = 1001
	CloseInternal     = 1011
	CloseBadRequest   = 4400
	CloseUnauthorized = 4401
	CloseSlowConsumer = 4008
	CloseRateLimited  = 4429
)

const websocketCloseMessage = websocket.CloseMessage

// Protocol is the wire protocol version sent in welcome.
const Protocol = 1

// Options configures a Server. Hub, History, Mapper and Verifier are
// required; zero limits select the PROTOCOL.md defaults.
type Options struct {
	Hub      *hub.Hub
	History  relay.History
	Mapper   relay.Mapper
	Verifier *auth.Verifier
	// Origins lists the browser origins allowed to connect
	// ("https://crm.example.com"); requests without Origin are allowed.
	Origins        []string
	Heartbeat      time.Duration // default 25s
	QueueSize      int           // default 1024
	MaxMessageSize int64         // default 4096
	RateLimit      float64       // default 20/s
	RateBurst      int           // default 50
	RateStrikes    int           // default 20
	ReplayLimit    int           // default 100000
	// ResumeGrace is how long a new session without since holds live events
	// waiting for a resume message. Default 250ms.
	ResumeGrace time.Duration
	Logger      *slog.Logger
	Metrics     *metrics.Metrics // nil: not measured
}

// Server is the /ws endpoint. It implements http.Handler.
type Server struct {
	o       Options
	m       *melody.Melody
	origins map[string]bool
	metrics *metrics.Metrics
	ctx     context.Context
	stop    context.CancelFunc
	gone    chan struct{} // signalled on every disconnect
	open    atomic.Int64  // connected sessions, authenticated or not
}

// New returns a Server. Close it with Drain.
func New(o Options) *Server {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 25 * time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 4096
	}
	if o.RateLimit <= 0 {
		o.RateLimit = 20
	}
	if o.RateBurst <= 0 {
		o.RateBurst = 50
	}
	if o.RateStrikes <= 0 {
		o.RateStrikes = 20
	}
	if o.ReplayLimit <= 0 {
		o.ReplayLimit = 100000
	}
	if o.ResumeGrace <= 0 {
		o.ResumeGrace = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, m: melody.New(), origins: make(map[string]bool), metrics: o.Metrics, gone: make(chan struct{}, 1)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	for _, origin := range o.Origins {
		s.origins[strings.ToLower(strings.TrimRight(origin, "/"))] = true
	}
	s.m.Upgrader.CheckOrigin = s.checkOrigin
	s.m.Upgrader.ReadBufferSize = 1024
	s.m.Upgrader.WriteBufferSize = 4096
	s.m.Config.MaxMessageSize = o.MaxMessageSize
	s.m.Config.PingPeriod = o.Heartbeat
	s.m.Config.PongWait = 2 * o.Heartbeat
	// Room for every event frame the queue allows plus the control frames
	// (errors, pongs, close) that follow them: events never hit melody's
	// silent-drop path, the session closes with 4008 before.
	s.m.Config.MessageBufferSize = o.QueueSize + 64
	s.m.HandleConnect(s.onConnect)
	s.m.HandleMessage(s.onMessage)
	s.m.HandleMessageBinary(func(ms *melody.Session, _ []byte) {
		if ss := sessionOf(ms); ss != nil {
			ss.mu.Lock()
			ss.writeLocked(errorFrame("bad_request", "binary frames are not part of the protocol"))
			ss.mu.Unlock()
		}
	})
	s.m.HandleSentMessage(func(ms *melody.Session, _ []byte) {
		if ss := sessionOf(ms); ss != nil {
			ss.frameSent()
		}
	})
	s.m.HandleError(s.onError)
	s.m.HandleDisconnect(s.onDisconnect)
	return s
}

func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	ok := s.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
	if !ok {
		s.metrics.Refused("origin")
	}
	return ok
}

const (
	keySession = "rowcast.session"
	keyAuthErr = "rowcast.autherr"
	keyAuth    = "rowcast.principal"
	keySince   = "rowcast.since"
)

func sessionOf(ms *melody.Session) *session {
	v, ok := ms.Get(keySession)
	if !ok {
		return nil
	}
	return v.(*session)
}

// ServeHTTP upgrades /ws requests. The token is verified here, but a bad
// token is answered after the upgrade, with an error frame and close 4401,
// as the protocol requires.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.ctx.Err() != nil {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "this endpoint speaks WebSocket (rowcast protocol 1)", http.StatusBadRequest)
		return
	}
	keys := map[string]any{keySince: r.URL.Query().Get("since")}
	p, err := s.o.Verifier.Verify(auth.TokenFromRequest(r))
	if err != nil {
		keys[keyAuthErr] = err
	} else {
		keys[keyAuth] = p
	}
	_ = s.m.HandleRequestWithKeys(w, r, keys)
}

func (s *Server) onConnect(ms *melody.Session) {
	s.open.Add(1)
	if v, ok := ms.Get(keyAuthErr); ok {
		s.metrics.Refused("unauthorized")
		_ = ms.Write(errorFrame("unauthorized", v.(error).Error()))
		_ = ms.CloseWithMsg(melody.FormatCloseMessage(CloseUnauthorized, "unauthorized"))
		return
	}
	p := ms.MustGet(keyAuth).(auth.Principal)
	ctx, cancel := context.WithCancel(s.ctx)
	ss := &session{
		srv:       s,
		ms:        ms,
		id:        newSessionID(),
		lim:       rate.NewLimiter(rate.Limit(s.o.RateLimit), s.o.RateBurst),
		space:     make(chan struct{}, 1),
		principal: p,
		streams:   streamsFor(p),
		cancel:    cancel,
	}
	ms.Set(keySession, ss)
	// Subscribe before taking the session lock: events delivered meanwhile
	// are held (modeAwait) and deduplicated against the heads.
	epoch, heads := s.o.Hub.Subscribe(ss, ss.streams)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.epoch, ss.heads, ss.last = epoch, heads, slices.Clone(heads)
	ss.writeLocked(ss.welcomeLocked())
	ss.armExpiryLocked()
	if since, _ := ms.Get(keySince); since != "" {
		ss.gotFirst = true // resume came with the request; no resume message
		go ss.resume(ctx, since.(string))
		return
	}
	ss.grace = time.AfterFunc(s.o.ResumeGrace, func() {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.mode == modeAwait {
			ss.goLiveLocked()
		}
	})
}

func (ss *session) welcomeLocked() []byte {
	w := struct {
		Type        string   `json:"type"`
		Protocol    int      `json:"protocol"`
		SessionID   string   `json:"sessionId"`
		UserID      string   `json:"userId"`
		TeamIDs     []string `json:"teamIds"`
		Position    string   `json:"position"`
		HeartbeatMs int64    `json:"heartbeatMs"`
		ExpiresAt   *string  `json:"expiresAt"`
	}{"welcome", Protocol, ss.id, ss.principal.UserID, ss.principal.TeamIDs, ss.positionLocked(),
		ss.srv.o.Heartbeat.Milliseconds(), expiresAt(ss.principal)}
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

// armExpiryLocked closes the session with token_expired when its token
// expires, unless a fresh token arrives by auth first.
func (ss *session) armExpiryLocked() {
	if ss.expiry != nil {
		ss.expiry.Stop()
		ss.expiry = nil
	}
	if ss.principal.ExpiresAt.IsZero() {
		return
	}
	exp := ss.principal.ExpiresAt
	ss.expiry = time.AfterFunc(time.Until(exp), func() {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if !ss.principal.ExpiresAt.Equal(exp) {
			return
		}
		ss.writeLocked(errorFrame("token_expired", "token expired"))
		ss.closeLocked(CloseUnauthorized, "token expired")
	})
}

func (s *Server) onMessage(ms *melody.Session, msg []byte) {
	ss := sessionOf(ms)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	first := !ss.gotFirst
	ss.gotFirst = true
	if ss.mode == modeClosed {
		ss.mu.Unlock()
		return
	}
	if !ss.lim.Allow() {
		ss.strikes++
		s.metrics.RateLimited()
		if ss.strikes > s.o.RateStrikes {
			ss.writeLocked(errorFrame("rate_limited", "too many messages"))
			ss.closeLocked(CloseRateLimited, "rate limited")
		} else {
			ss.writeLocked(errorFrame("rate_limited", "message rate limit exceeded"))
		}
		ss.mu.Unlock()
		return
	}
	ss.strikes = 0
	var m clientMessage
	if !isJSONObject(msg) || json.Unmarshal(msg, &m) != nil {
		if first {
			ss.closeLocked(CloseBadRequest, "first message must be a JSON object")
		} else {
			ss.writeLocked(errorFrame("bad_request", "message is not a JSON object"))
		}
		ss.mu.Unlock()
		return
	}
	if first && m.Type != "resume" && ss.mode == modeAwait {
		ss.goLiveLocked()
	}
	switch m.Type {
	case "ping":
		id := m.ID
		if len(id) == 0 {
			id = json.RawMessage("null")
		}
		ss.writeLocked(append(append([]byte(`{"type":"pong","id":`), id...), '}'))
	case "subscribe":
		ss.subscribeLocked(m.Entities)
	case "resume":
		if !first {
			ss.writeLocked(errorFrame("bad_request", "resume must be the first message"))
			break
		}
		if ss.mode != modeAwait {
			// It came after the resume grace period, when live events had
			// already gone out: replaying now would reorder them.
			ss.writeLocked([]byte(`{"type":"resync","reason":"history_expired"}`))
			s.metrics.Resync()
			break
		}
		if m.Since == "" {
			ss.writeLocked(errorFrame("bad_request", "resume needs since"))
			ss.goLiveLocked()
			break
		}
		ctx, cancel := context.WithCancel(s.ctx)
		ss.cancel = joinCancel(ss.cancel, cancel)
		ss.mu.Unlock()
		go ss.resume(ctx, m.Since)
		return
	case "auth":
		ss.mu.Unlock()
		ss.reauth(m.Token)
		return
	case "":
		ss.writeLocked(errorFrame("bad_request", "message has no type"))
	default:
		ss.writeLocked(errorFrame("bad_request", "unknown message type "+strconvQuote(m.Type)))
	}
	ss.mu.Unlock()
}

func joinCancel(a, b context.CancelFunc) context.CancelFunc {
	return func() { a(); b() }
}

func (ss *session) subscribeLocked(entities []string) {
	if entities == nil {
		ss.writeLocked(errorFrame("bad_request", "subscribe needs entities, an array of entity types"))
		return
	}
	ss.filter = make(map[string]bool, len(entities))
	for _, e := range entities {
		ss.filter[e] = true
	}
	b, _ := json.Marshal(struct {
		Type     string   `json:"type"`
		Entities []string `json:"entities"`
	}{"subscribed", entities})
	ss.writeLocked(b)
}

// reauth verifies a fresh token. The same user may refresh; a token for
// another user, or an invalid one, closes the session with 4401. When the
// token lists other teams the session follows them from now on.
func (ss *session) reauth(token string) {
	s := ss.srv
	p, err := s.o.Verifier.Verify(token)
	ss.mu.Lock()
	if err != nil || p.UserID != ss.principal.UserID {
		msg := "token for another user"
		if err != nil {
			msg = err.Error()
		}
		ss.writeLocked(errorFrame("unauthorized", msg))
		ss.closeLocked(CloseUnauthorized, "unauthorized")
		ss.mu.Unlock()
		return
	}
	oldStreams := ss.streams
	newStreams := streamsFor(p)
	ss.mu.Unlock()

	if !slices.Equal(oldStreams, newStreams) {
		var gone, added []string
		for _, st := range oldStreams {
			if !slices.Contains(newStreams, st) {
				gone = append(gone, st)
			}
		}
		for _, st := range newStreams {
			if !slices.Contains(oldStreams, st) {
				added = append(added, st)
			}
		}
		s.o.Hub.Unsubscribe(ss, gone)
		_, heads := s.o.Hub.Subscribe(ss, added)
		ss.mu.Lock()
		last := make([]int64, len(newStreams))
		hd := make([]int64, len(newStreams))
		for i, st := range newStreams {
			if j := slices.Index(oldStreams, st); j >= 0 {
				last[i], hd[i] = ss.last[j], ss.heads[j]
			} else {
				j := slices.Index(added, st)
				last[i], hd[i] = heads[j], heads[j]
			}
		}
		ss.streams, ss.last, ss.heads = newStreams, last, hd
		ss.mu.Unlock()
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.principal = p
	ss.armExpiryLocked()
	exp := expiresAt(p)
	b, _ := json.Marshal(struct {
		Type      string  `json:"type"`
		ExpiresAt *string `json:"expiresAt"`
	}{"auth_ok", exp})
	ss.writeLocked(b)
}

func (s *Server) onError(ms *melody.Session, err error) {
	if errors.Is(err, melody.ErrMessageBufferFull) {
		if ss := sessionOf(ms); ss != nil {
			ss.mu.Lock()
			ss.abortLocked()
			ss.mu.Unlock()
		}
	}
}

func (s *Server) onDisconnect(ms *melody.Session) {
	s.open.Add(-1)
	select {
	case s.gone <- struct{}{}:
	default:
	}
	ss := sessionOf(ms)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	ss.mode = modeClosed
	ss.pending = nil
	if ss.expiry != nil {
		ss.expiry.Stop()
	}
	if ss.grace != nil {
		ss.grace.Stop()
	}
	streams := ss.streams
	ss.cancel()
	ss.mu.Unlock()
	s.o.Hub.Unsubscribe(ss, streams)
}

// Drain refuses new sessions and closes every open one with 1001 (going
// away), after what is queued for it. It returns when every session has
// closed or ctx ends, whichever is first.
func (s *Server) Drain(ctx context.Context) {
	s.stop()
	_ = s.m.CloseWithMsg(melody.FormatCloseMessage(CloseGoingAway, "relay draining"))
	for s.open.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-s.gone:
		}
	}
}

// Sessions returns how many sessions are open.
func (s *Server) Sessions() int { return int(s.open.Load()) }

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
