// Package session is what rowcast's two WebSocket protocols share, around a
// Session per connection: one melody instance, the hub subscription,
// per-stream positions and the dedupe they give, resume replay from the
// history, the bounded outbound queue with its slow-consumer close, the
// client message rate limit and the token expiry timer.
//
// A wire protocol (relay/transport/ws, relay/transport/sio) plugs in as a
// Handler per connection: the session decides what to send and when; the
// handler frames it and interprets what the client sends. Both protocols run
// on the same Transport, so they share the hub, the limits and draining.
//
// A session writes to a Conn: a WSConn on the melody instance, or another
// transport's connection (Engine.IO long-polling) attached with Attach.
package session

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olahol/melody"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/hub"
	"github.com/rowcast/rowcast/relay/metrics"
)

// Close codes of docs/protocol.md section 7, used by both protocols.
const (
	CloseGoingAway    = 1001
	CloseBadRequest   = 4400
	CloseUnauthorized = 4401
	CloseSlowConsumer = 4008
	CloseRateLimited  = 4429
	CloseForbidden    = 4403
)

// Options configures a Transport. Hub, History and Verifier are required;
// zero limits select the docs/protocol.md defaults.
type Options struct {
	Hub *hub.Hub
	// History replays the events a resume asks for, mapped as the live
	// events the hub delivers are (history.Mapped).
	History  relay.History
	Verifier *auth.Verifier
	// Origins lists the browser origins allowed to connect
	// ("https://crm.example.com") and origin patterns
	// ("https://*.example.com": one or more labels in place of the
	// wildcard, the same scheme and port); requests without Origin are
	// allowed.
	Origins   []string
	Heartbeat time.Duration // default 25s
	// WriteDelay, when positive, is how long a WebSocket session may keep
	// what it writes before the system call, to write what follows within
	// it in the same call (corkConn): fewer system calls under fan-out,
	// for that much latency. 0 (the default): a frame that nothing follows
	// is written at once.
	WriteDelay     time.Duration
	QueueSize      int     // outbound frames per session; default 256
	QueueBytes     int64   // outbound event bytes per session (one frame always passes); default 16 MiB
	MaxMessageSize int64   // client frame limit; default 4096
	RateLimit      float64 // client messages per second; default 20
	RateBurst      int     // default 50
	RateStrikes    int     // messages past the limit before the close; default 20
	ReplayLimit    int     // events one resume replays before resync; default 100000
	// Membership, when not nil, reads a user's teams from the
	// auth.membership table (team ids as text); sessions then follow it
	// instead of their token's teams, or in MembershipIntersect mode the
	// teams both name.
	Membership          func(ctx context.Context, userID string) ([]string, error)
	MembershipIntersect bool
	Logger              *slog.Logger
	Metrics             *metrics.Metrics // nil: not measured
	// OnPanic, when set, hears of a protocol handler that panicked (the
	// error names the panic's value; the log has its stack). The
	// transport closes that session with 1001 and runs on.
	OnPanic func(err error)

	// Connection limits (Admit, Ticket.ForUser); zero selects the
	// Default* constants.
	MaxSessionsPerUser    int     // open sessions of one user
	MaxSessionsPerAddress int     // open sessions of one client address (ClientAddr, an IPv6 /64)
	MaxSessions           int     // open sessions in total
	UpgradeRate           float64 // sessions opened per second per client address
	UpgradeBurst          int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed (ClientAddr); none by default.
	TrustedProxies []netip.Prefix
}

// Transport owns the melody instance every WebSocket session of the relay
// runs on, whatever its protocol. It is safe for concurrent use.
type Transport struct {
	o       Options
	m       *melody.Melody
	origins originPolicy
	adm     admission       // open sessions and upgrade rates, for Admit
	ctx     context.Context // ends when draining starts
	stop    context.CancelFunc
	gone    chan struct{} // signalled on every disconnect
	open    atomic.Int64  // connected sessions, authenticated or not
	// warnedTeams is set once a session without a team claim was logged
	// at warning level; later ones are logged at debug level.
	warnedTeams atomic.Bool

	conns *connTable // the WSConn of each open melody session
	// corkPool holds the corkConns' hold buffers, taken only while a
	// session is behind.
	corkPool sync.Pool

	mu       sync.Mutex
	sessions map[*Session]struct{} // open sessions, for Drain
}

// New returns a Transport with o's zero limits replaced by their defaults.
// Close it with Drain.
func New(o Options) *Transport {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 25 * time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
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
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxSessionsPerUser <= 0 {
		o.MaxSessionsPerUser = DefaultMaxSessionsPerUser
	}
	if o.MaxSessionsPerAddress <= 0 {
		o.MaxSessionsPerAddress = DefaultMaxSessionsPerAddress
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.UpgradeRate <= 0 {
		o.UpgradeRate = DefaultUpgradeRate
	}
	if o.UpgradeBurst <= 0 {
		o.UpgradeBurst = DefaultUpgradeBurst
	}
	t := &Transport{o: o, m: melody.New(), origins: newOriginPolicy(o.Origins), gone: make(chan struct{}, 1),
		conns: newConnTable(), sessions: make(map[*Session]struct{})}
	t.adm.init()
	t.ctx, t.stop = context.WithCancel(context.Background())
	t.m.Upgrader.CheckOrigin = t.checkOrigin
	// Idle sessions should cost little. The connection's read loop runs in
	// a goroutine of its own, not the HTTP server's (see serve), with a
	// small read buffer of its own (the server's 4 KiB reader and writer
	// are freed with its goroutine); write buffers are taken from a pool
	// only while a frame is written.
	t.m.Upgrader.ReadBufferSize = readBufferSize
	t.m.Upgrader.WriteBufferSize = 4096
	t.m.Upgrader.WriteBufferPool = &sync.Pool{}
	t.m.Config.MaxMessageSize = o.MaxMessageSize
	t.m.Config.WriteWait = writeWait
	t.m.Config.PingPeriod = o.Heartbeat
	t.m.Config.PongWait = 2 * o.Heartbeat
	// Melody preallocates each session's output channel: it is short, and
	// the frames beyond it wait in the WSConn's overflow list (see WSConn).
	t.m.Config.MessageBufferSize = outputChannelSize
	t.m.HandleConnect(t.onConnect)
	t.m.HandleMessage(func(ms *melody.Session, msg []byte) {
		t.receive(ms, func(r Receiver) { r.Receive(msg) })
	})
	t.m.HandleMessageBinary(func(ms *melody.Session, msg []byte) {
		t.receive(ms, func(r Receiver) { r.ReceiveBinary(msg) })
	})
	t.m.HandleSentMessage(func(ms *melody.Session, msg []byte) {
		if c := t.wsConnOf(ms); c != nil {
			c.frameSent(len(msg))
		}
	})
	t.m.HandleError(t.onError)
	t.m.HandleDisconnect(t.onDisconnect)
	return t
}

// Options returns the options in force, defaults filled in.
func (t *Transport) Options() Options { return t.o }

// Metrics returns the metrics sessions report to; nil is valid (not
// measured).
func (t *Transport) Metrics() *metrics.Metrics { return t.o.Metrics }

// Draining reports whether Drain was called: new connections are refused.
func (t *Transport) Draining() bool { return t.ctx.Err() != nil }

// AllowOrigin reports whether r's Origin may connect: it is absent or in
// the allow-list. The WebSocket upgrade checks it; other transports call it.
func (t *Transport) AllowOrigin(r *http.Request) bool { return t.checkOrigin(r) }

func (t *Transport) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	ok := t.origins.allows(origin)
	if !ok {
		t.o.Metrics.Refused("origin")
	}
	return ok
}

// NewHandler makes the protocol handler of a freshly opened session.
type NewHandler func(s *Session) Handler

// keys holds what onConnect needs to set up a melody session.
type keys struct {
	newHandler NewHandler               // a session with this handler
	open       func(c *WSConn) Receiver // or a raw connection for open
}

// keyOpening is the melody session key under which serve hands the
// opening to onConnect.
const keyOpening = "rowcast.opening"

// opening is what onConnect needs of a connection being upgraded, and
// what the upgrade's goroutine keeps while the connection lives (it reads
// taken once the connection closed): a few words, the rest let go of once
// connected.
type opening struct {
	k  keys
	tk *Ticket
	// conn is the connection's WSConn, made before the upgrade so that
	// the hijacked network connection is its corkConn; nil once connected.
	conn *WSConn
	// res takes the upgrade's outcome in a detached upgrade (nil
	// otherwise, and once hijacked).
	res chan<- error
	// taken is set by onConnect, which hands tk to the session: an
	// upgrade that never got there gives tk back.
	taken atomic.Bool
	// hijacked is set once the HTTP connection is melody's (upgradeWriter).
	hijacked atomic.Bool
}

// wsConnOf returns the WSConn of ms, nil before onConnect set it up or after
// onDisconnect.
func (t *Transport) wsConnOf(ms *melody.Session) *WSConn { return t.conns.get(ms) }

// Serve upgrades r (the origin allow-list is checked first: a foreign
// origin gets 403) and runs the connection as a session on tk, a ticket
// from Admit, with the handler newHandler returns once the connection is
// upgraded, until it closes. The session gives tk back when it closes;
// Serve does when the upgrade fails. A nil tk counts the session in no
// limit. It returns once the connection is upgraded (the session runs on
// in goroutines of its own, and r must not be reused), or with an error,
// having written an HTTP error, when the request could not be upgraded or
// the transport is draining (503). Nothing keeps r once the connection is
// open: the session's Request is a slim copy (WSConn.Request).
func (t *Transport) Serve(w http.ResponseWriter, r *http.Request, tk *Ticket, newHandler NewHandler) error {
	return t.serve(w, r, keys{newHandler: newHandler}, tk, true)
}

// ServeConn upgrades r as Serve does, but runs the connection without a
// session of its own: open receives it once upgraded and returns what
// takes its frames (another transport's session switching to this
// WebSocket, for one). It returns when the connection closed, after the
// receiver's Gone.
func (t *Transport) ServeConn(w http.ResponseWriter, r *http.Request, open func(c *WSConn) Receiver) error {
	return t.serve(w, r, keys{open: open}, nil, false)
}

// serve upgrades r and runs the connection. With detach, the connection
// runs in a goroutine of its own and serve returns as soon as the HTTP
// connection was hijacked (or the upgrade failed), so the HTTP server's
// goroutine, with its stack and its buffered reader and writer, is freed
// while the session lives on; without, serve returns when the connection
// closed.
//
// An idle connection should keep nothing of its HTTP request but what
// later readers need (requestInfo): onConnect takes k and that from the
// melody session's keys and drops them and the request from it.
func (t *Transport) serve(w http.ResponseWriter, r *http.Request, k keys, tk *Ticket, detach bool) error {
	op := &opening{k: k, tk: tk, conn: newWSConn(t)}
	op.conn.req = newRequestInfo(r)
	o := map[string]any{keyOpening: op}
	if !detach {
		err := t.m.HandleRequestWithKeys(&upgradeWriter{ResponseWriter: w, op: op}, r, o)
		if !op.taken.Load() {
			tk.Release()
		}
		return t.upgraded(w, err)
	}
	res := make(chan error, 1)
	op.res = res
	go t.runDetached(&upgradeWriter{ResponseWriter: w, op: op}, r, op, o)
	return t.upgraded(w, <-res)
}

// runDetached runs melody's connection on dw; its result goes to the
// opening's channel unless the connection was hijacked, which dw reported
// already. Once hijacked, this goroutine keeps neither the HTTP request
// nor its response, nor dw: only op.
func (t *Transport) runDetached(dw *upgradeWriter, r *http.Request, op *opening, o map[string]any) {
	err := t.m.HandleRequestWithKeys(dw, r, o)
	if !op.taken.Load() {
		op.tk.Release()
	}
	if !op.hijacked.Load() {
		op.res <- err
	}
}

// upgraded answers a refused upgrade: 503 when draining (the upgrader
// answered the other refusals itself).
func (t *Transport) upgraded(w http.ResponseWriter, err error) error {
	if errors.Is(err, melody.ErrClosed) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	return nil
}

// upgradeWriter is the http.ResponseWriter an upgrade runs on. Its Hijack
// hands melody the WSConn's corkConn over the network connection. In a
// detached upgrade (the opening's res set), a successful Hijack also sends
// nil on res (serve returns) and lets go of the HTTP response (the
// connection is melody's now); a failed one leaves the error to
// runDetached.
type upgradeWriter struct {
	http.ResponseWriter
	op *opening
}

// Hijack hijacks the underlying connection (through http.ResponseController,
// so wrapped writers work) and reports it.
func (d *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(d.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	op := d.op
	op.hijacked.Store(true)
	if op.res != nil {
		op.res <- nil
		d.ResponseWriter, op.res = nil, nil
	}
	op.conn.net.Conn = c
	return &op.conn.net, brw, nil
}

// DefaultQueueBytes is Options.QueueBytes when unset: 16 MiB.
const DefaultQueueBytes = 16 << 20

// queueHeadroom is the room melody's output channel keeps beyond the event
// queue for the frames that are not events (errors, pongs, protocol
// frames). A session whose frames in flight reach it is closed with 4008
// through the queue (see Session.WriteLocked), so melody's channel never
// overflows.
const queueHeadroom = 64

// outputChannelSize is the capacity of melody's output channel per
// connection (its slots are preallocated, 40 bytes each): one for the
// frame melody's writer takes next and one kept for melody's own close
// (wsRoom); the frames beyond wait in the WSConn's overflow list. A longer
// channel would not write faster (the writer takes one frame at a time,
// and corkConn batches the frames that wait), and every idle session
// would pay for it: 176 bytes with 2 slots, 256 with 4.
const outputChannelSize = 2

// readBufferSize is each connection's read buffer, the smallest
// gorilla/websocket takes (a control frame's 125-byte payload must fit):
// client messages are small, and a frame larger than the buffer is still
// read whole (past the buffer, reads go to the message directly).
const readBufferSize = 128

func (t *Transport) onConnect(ms *melody.Session) {
	o := ms.MustGet(keyOpening).(*opening)
	// The request melody keeps holds the whole HTTP request, headers and
	// server state included, and its keys map is bigger than the WSConn's
	// entry in t.conns; the WSConn keeps what later readers need. No other
	// code reads either field (this package does not use melody's keys
	// otherwise).
	ms.Request, ms.Keys = nil, nil
	o.taken.Store(true)
	// The upgrade's goroutine keeps o for as long as the connection lives
	// (it reads taken once the connection closed): o lets go of the rest,
	// the handler's closure with what it captured first of all.
	c, k := o.conn, o.k
	c.ms = ms
	o.k, o.conn = keys{}, nil
	c.net.own(c)
	if k.open != nil {
		c.recv = k.open(c)
		t.conns.put(ms, c)
		return
	}
	s := t.newSession(c, o.tk)
	c.recv = s
	t.conns.put(ms, c)
	t.openSession(s, k.newHandler)
}

// Attach runs a session over c, a connection of another transport than
// melody's WebSocket, on tk, a ticket from Admit (nil: counted in no
// limit), with the handler newHandler returns; it calls the handler's Open
// before it returns. c reports to the session through its Receive,
// ReceiveBinary, Sent and Gone methods. The session gives tk back when it
// closes. It returns nil, attaching nothing and giving tk back, when the
// transport is draining.
func (t *Transport) Attach(c Conn, tk *Ticket, newHandler NewHandler) *Session {
	if t.Draining() {
		tk.Release()
		return nil
	}
	s := t.newSession(c, tk)
	t.openSession(s, newHandler)
	return s
}

func (t *Transport) openSession(s *Session, newHandler NewHandler) {
	t.open.Add(1)
	s.h = newHandler(s)
	t.o.Metrics.SessionAccepted(s.h.Transport())
	t.mu.Lock()
	t.sessions[s] = struct{}{}
	t.mu.Unlock()
	if p := onFreshStack(s.h.Open); p != nil {
		t.panicked(p)
		// A handler that panicked with the session's lock held leaves it
		// held: its connection is closed without it.
		if s.mu.TryLock() {
			s.CloseLocked(CloseGoingAway, "internal error")
			s.mu.Unlock()
		} else {
			s.c.Close(CloseGoingAway, "internal error")
		}
		return
	}
	if t.Draining() {
		// Drain may have listed the sessions before this one joined.
		s.Lock()
		s.CloseLocked(CloseGoingAway, "relay draining")
		s.Unlock()
	}
}

// onError may run inside a melody write, with the session's lock held: it
// must not take that lock.
func (t *Transport) onError(ms *melody.Session, err error) {
	if c := t.wsConnOf(ms); c != nil {
		c.readEnded(err)
	}
	if errors.Is(err, melody.ErrMessageBufferFull) {
		if c := t.wsConnOf(ms); c != nil {
			t.o.Metrics.SlowClose()
			c.Abort()
		}
	}
}

func (t *Transport) onDisconnect(ms *melody.Session) {
	if c := t.wsConnOf(ms); c != nil {
		// Out of the table first: once Gone has signalled the transport,
		// nothing of the connection is left.
		t.conns.remove(ms)
		c.recv.Gone()
	}
}

// onFreshStack runs fn on a goroutine of its own and returns once fn
// returned. A WebSocket's read goroutine lives as long as its connection,
// and a goroutine's stack, once grown, shrinks back only while less than a
// quarter of it is in use: handling what a client sends (verifying a token,
// subscribing, reading the membership table) runs deeper than the read loop
// parks, and on the read goroutine it would leave every idle session with an
// 8 KiB stack where 4 KiB do (bench idle: 12.1 against 8.1 KiB of stacks
// per session). A goroutine costs a fraction of a microsecond; clients send
// little.
//
// A panic of fn is recovered and returned, with fn's stack: the caller
// ends the session fn ran for (panicked), and the relay runs on. Raised
// again on the caller's goroutine, it would unwind melody's read loop,
// which has no deferred cleanup, and leak the connection.
func onFreshStack(fn func()) *freshStackPanic {
	done := make(chan *freshStackPanic, 1)
	go func() {
		var p *freshStackPanic
		defer func() { done <- p }()
		defer func() {
			if v := recover(); v != nil {
				p = &freshStackPanic{value: v, stack: debug.Stack()}
			}
		}()
		fn()
	}()
	return <-done
}

// receive hands a client message of ms to its receiver with fn, on a
// fresh stack; a receiver that panicked has its connection closed with
// 1001.
func (t *Transport) receive(ms *melody.Session, fn func(r Receiver)) {
	c := t.wsConnOf(ms)
	if c == nil {
		return
	}
	if p := onFreshStack(func() { fn(c.recv) }); p != nil {
		t.panicked(p)
		c.Close(CloseGoingAway, "internal error")
	}
}

// freshStackPanic is a panic of a function onFreshStack ran: its value
// and the stack it was raised on.
type freshStackPanic struct {
	value any
	stack []byte
}

// panicked logs and reports a protocol handler's panic.
func (t *Transport) panicked(p *freshStackPanic) {
	t.o.Logger.Error("a session's protocol handler panicked; the session is closed with 1001",
		"panic", fmt.Sprint(p.value), "stack", string(p.stack))
	if t.o.OnPanic != nil {
		t.o.OnPanic(fmt.Errorf("session handler: %v", p.value))
	}
}

// closed runs once a session's connection is gone.
func (t *Transport) closed(s *Session) {
	t.mu.Lock()
	delete(t.sessions, s)
	t.mu.Unlock()
	t.open.Add(-1)
	select {
	case t.gone <- struct{}{}:
	default:
	}
}

// drainStep is the least time between two batches of a spread drain.
const drainStep = 100 * time.Millisecond

// Drain refuses new sessions at once and closes every open one with 1001
// (going away), after what is queued for it, in batches spread evenly over
// window: the first batch at once, the last one window/batches before
// window ends, a batch every 100ms at most. Clients told to go away
// reconnect elsewhere with jitter; spreading the closes keeps one
// replica's sessions from landing on the others in the same instant.
// A window of 0 closes them all at once. When ctx ends before the last
// batch, the rest are closed at once. Drain returns when every session has
// closed or ctx ends, whichever is first.
func (t *Transport) Drain(ctx context.Context, window time.Duration) {
	t.stop()
	// Last, raw connections (a transport switching to WebSocket) and
	// whatever is still open when ctx ends.
	defer func() { _ = t.m.CloseWithMsg(melody.FormatCloseMessage(CloseGoingAway, "relay draining")) }()
	t.mu.Lock()
	open := make([]*Session, 0, len(t.sessions))
	for s := range t.sessions {
		open = append(open, s)
	}
	t.mu.Unlock()
	batches := min(len(open), int(window/drainStep))
	if batches < 1 {
		batches = 1
	}
	start := time.Now()
	for b := range batches {
		if t.open.Load() == 0 {
			break // all gone already: nothing to wait for
		}
		from := len(open) * b / batches
		if b > 0 && !sleepUntil(ctx, start.Add(window*time.Duration(b)/time.Duration(batches))) {
			closeAway(open[from:]) // out of time: the rest at once
			break
		}
		closeAway(open[from : len(open)*(b+1)/batches])
	}
	for t.open.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.gone:
		}
	}
}

// sleepUntil waits until t and reports true, or false when ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// closeAway closes each session with 1001; closing one already closed does
// nothing.
func closeAway(ss []*Session) {
	for _, s := range ss {
		s.Lock()
		s.CloseLocked(CloseGoingAway, "relay draining")
		s.Unlock()
	}
}

// noTeamClaim reports a session whose token lacked the team claim: it
// follows no team, which is almost always a misconfigured auth.team_claim.
func (t *Transport) noTeamClaim(p auth.Principal) {
	t.o.Metrics.NoTeamClaim()
	level := slog.LevelDebug
	if t.warnedTeams.CompareAndSwap(false, true) {
		level = slog.LevelWarn
	}
	t.o.Logger.Log(t.ctx, level, "token has no team claim: the session receives no team's events; check auth.team_claim",
		"user", p.UserID)
}

// Sessions returns how many sessions are open, of either protocol.
func (t *Transport) Sessions() int { return int(t.open.Load()) }
