package session

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
)

// Handler is one connection's wire protocol. The Session calls Open, Message,
// Binary and Closed without holding the session's lock, one at a time from
// the connection's reader (a WebSocket's read goroutine, or one polling
// request at a time; Closed last, once); the *Locked methods
// are called with the lock held, from any goroutine, and may only call the
// session's *Locked methods.
type Handler interface {
	// Transport names the protocol in metrics: metrics.TransportWS or
	// metrics.TransportSocketIO.
	Transport() string
	// Open runs once the connection is upgraded, before any client frame
	// is read.
	Open()
	// Message handles one text frame from the client.
	Message(msg []byte)
	// Binary handles one binary frame from the client.
	Binary(msg []byte)
	// Closed runs once after the connection closed and the session left
	// the hub.
	Closed()

	// EventLocked returns the frame that carries ev (an entity event or a
	// KindResync), or nil to send nothing. PositionLocked already includes
	// ev when it is called.
	EventLocked(ev *relay.Event) []byte
	// ResyncLocked tells the client to refetch: a resume could not be
	// served, or the history epoch changed. PositionLocked is the head.
	ResyncLocked()
	// ResumedLocked runs when a resume replayed everything after its
	// position, before the live events held meanwhile are sent.
	ResumedLocked(replayed int)
	// ExpiredLocked runs when the session's token expired; it must close
	// the session.
	ExpiredLocked()
	// ForbiddenLocked tells the client that the session no longer follows
	// team (auth.membership: the user left it), at the position of that
	// change. When no team remains the session closes with 4403 after it.
	ForbiddenLocked(team string)
}

// Session modes.
type mode uint8

const (
	// modeIdle: not subscribed (before Start, after Stop).
	modeIdle mode = iota
	// modeAwait holds live events until GoLiveLocked or ResumeLocked.
	modeAwait
	// modeReplay holds live events while history is replayed.
	modeReplay
	// modeLive sends events as they are delivered.
	modeLive
	// modeClosed drops everything.
	modeClosed
)

// startPhase is where Start is between subscribing and taking the hub's
// head, which it does in two locked sections.
type startPhase uint8

const (
	notStarting startPhase = iota
	// startSubscribing: Start is subscribing.
	startSubscribing
	// startReset: the hub was reset to a new epoch meanwhile (Reset
	// recorded its epoch and head): Start keeps them, not Subscribe's.
	startReset
)

// Session is one client connection as this package sees it (a WebSocket, or
// another transport's Conn): a hub subscriber with positions, a bounded
// queue and a rate limiter. Its lock guards the
// Session's state and, by convention, the state of its Handler; it is taken by
// the hub's Deliver (with a hub shard lock held, so the session never calls
// the hub while holding it), by the handler and by replay.
type Session struct {
	t         *Transport
	c         Conn
	h         Handler
	ticket    *Ticket      // its place among the open sessions; nil: not counted
	sent      atomic.Int64 // text frames written to the socket
	sentBytes atomic.Int64 // their bytes
	// run is the running replay's; Sent signals its space (nil when none
	// runs).
	run atomic.Pointer[replayRun]
	// timed is the number (queued's count) of the event frame whose
	// socket write is being timed, 0 when none is; timedAt is its change's
	// commit (unix ns). Sent observes the latency when the frame count
	// reaches it (see timeWriteLocked).
	timed, timedAt atomic.Int64

	mu sync.Mutex
	// The small fields first, packed: an idle session should cost little
	// (bench idle), and the struct stays in the 384-byte size class.
	mode       mode
	subscribed bool  // following streams in the hub
	lastPart   uint8 // the part of last
	// orphan is set when a leave took the session's last team: it closes
	// with 4403 unless the same transaction joins another (moving a user
	// deletes one row and inserts another).
	orphan bool
	// replayScope: the running replay applies membership changes from
	// before the head too (resume set the teams of its position).
	replayScope bool
	starting    startPhase
	// closeCode is the code of the relay's close (CloseLocked, a
	// WebSocket close code: 1000-4999, 0 for none); -1 before it.
	closeCode int16
	gen       uint32 // counts Starts; a replay of an earlier one stops
	strikes   int32
	lim       *rate.Limiter // made at the first client message (AllowLocked)
	principal auth.Principal
	streams   []string // sorted stream keys
	// last is the position of the last event processed (sent, or
	// skipped by the filter), lastPart its part; head is the hub's head
	// when the session subscribed.
	last  relay.Pos
	head  relay.Pos
	epoch string
	// queued counts the text frames handed to the Conn; queuedBytes is
	// their length, sentBytes of those it wrote (queued - sent frames,
	// queuedBytes - sentBytes bytes are in flight).
	queued      int64
	queuedBytes int64
	// pending holds the live events that arrive while the session awaits
	// a resume or replays, in order; nil when none wait (a pointer: an
	// idle session pays 8 bytes for it, not a slice's 24).
	pending *[]*relay.Event
	// shown, with auth.membership, holds the team streams whose events
	// the session shows at its current turn: membership events change it
	// at their turn, so that events held in pending keep the scope of
	// their position, while streams (the hub's subscription) follows
	// them at once.
	shown map[string]bool
	// touched holds the team streams membership events moved since the
	// session started: moveTo leaves them as the events set them.
	touched map[string]bool
	claimed []string        // the token's teams (auth.membership intersect mode)
	filter  map[string]bool // nil: every entity
	expiry  *time.Timer
}

// replayRun is what a running replay uses besides its goroutine: its
// context's cancel and the signal that the socket wrote a frame.
type replayRun struct {
	cancel context.CancelFunc
	space  chan struct{} // capacity 1
}

func (t *Transport) newSession(c Conn, tk *Ticket) *Session {
	// What only some sessions use (a limiter, a replay's context and
	// space signal) is made when first needed: an idle session should cost
	// little.
	return &Session{t: t, c: c, ticket: tk, closeCode: -1}
}

// Ticket returns the session's place among the open sessions (Admit), nil
// when it is counted in no limit. Ticket.ForUser counts it as a user's.
func (s *Session) Ticket() *Ticket { return s.ticket }

// Lock takes the session's lock.
func (s *Session) Lock() { s.mu.Lock() }

// Unlock releases the session's lock.
func (s *Session) Unlock() { s.mu.Unlock() }

// Request returns the HTTP request that opened the session's connection.
func (s *Session) Request() *http.Request { return s.c.Request() }

// Receive handles one text message from the client; the session's Conn
// calls it, one message at a time, without holding the session's lock.
func (s *Session) Receive(msg []byte) { s.h.Message(msg) }

// ReceiveBinary handles one binary message from the client, as Receive.
func (s *Session) ReceiveBinary(msg []byte) { s.h.Binary(msg) }

// Gone tells the session that its connection closed: it leaves the hub
// and its handler's Closed runs. The Conn calls it once, last.
func (s *Session) Gone() {
	// The session's places go back first: once it has left the hub (the
	// rowcast_sessions gauge), a new session may take them.
	s.ticket.Release()
	s.disconnected()
	s.h.Closed()
	s.t.o.Metrics.Disconnected(s.endCode())
	s.t.closed(s)
}

// peerCloser is a Conn that knows how its connection ended when the
// relay did not close it (WSConn, Socket.IO's polling socket).
type peerCloser interface {
	// EndCode returns the close code the connection ended with: the
	// client's, or 1006 when it ended without a close frame.
	EndCode() int
}

// endCode returns the close code the session ended with: the relay's
// (1005 for a close without a status), else what the Conn reports, else
// 1006 (the connection ended without a close).
func (s *Session) endCode() int {
	s.mu.Lock()
	code := int(s.closeCode)
	s.mu.Unlock()
	switch {
	case code == 0:
		return 1005
	case code > 0:
		return code
	}
	if pc, ok := s.c.(peerCloser); ok {
		return pc.EndCode()
	}
	return 1006
}

// Transport returns the transport the session runs on.
func (s *Session) Transport() *Transport { return s.t }

// streamsFor returns the sorted stream keys a principal follows.
func streamsFor(p auth.Principal) []string {
	s := make([]string, 0, len(p.TeamIDs)+2)
	s = append(s, relay.AllStream, relay.UserStream(p.UserID))
	for _, t := range p.TeamIDs {
		s = append(s, relay.TeamStream(t))
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// Start subscribes an idle session to the streams of p and holds live
// events (they are delivered by GoLiveLocked or after ResumeLocked's
// replay). The position starts at the hub's head. then, if not nil, runs
// with the lock held once the subscription is in place. Start arms the
// token expiry. Call it without the lock from Open or Message; it does
// nothing unless the session is idle (never started, or stopped).
//
// With auth.membership, p's teams are replaced by the user's teams in the
// membership table (intersected with p's in intersect mode), read before
// the subscription and again after it, so that a change committed
// meanwhile is not missed; Start returns the read's error, and the session
// stays idle.
func (s *Session) Start(p auth.Principal, then func()) error {
	claimed := p.TeamIDs
	if s.t.o.Membership != nil {
		teams, err := s.memberTeams(p.UserID, claimed)
		if err != nil {
			return err
		}
		p.TeamIDs = teams
	}
	streams := streamsFor(p)
	s.mu.Lock()
	if s.mode != modeIdle || s.subscribed {
		s.mu.Unlock()
		return nil
	}
	s.claimed, s.shown, s.touched = claimed, nil, nil
	if s.t.o.Membership != nil {
		s.shown = make(map[string]bool)
		for _, st := range streams {
			if strings.HasPrefix(st, relay.TeamPrefix) {
				s.shown[st] = true
			}
		}
	}
	// Events delivered while Subscribe runs are held (modeAwait) and
	// deduplicated against the head when they are flushed.
	s.mode = modeAwait
	s.subscribed = true
	s.starting = startSubscribing
	s.t.o.Metrics.Subscribed(s.h.Transport(), 1)
	s.gen++
	s.principal, s.streams, s.pending, s.filter = p, streams, nil, nil
	s.mu.Unlock()

	if p.NoTeamClaim {
		s.t.noTeamClaim(p)
	}
	epoch, head := s.t.o.Hub.Subscribe(s, streams)
	if s.t.o.Membership != nil {
		// Membership changes committed before the head were not
		// delivered: read again, and follow what it says from now on.
		teams, err := s.memberTeams(p.UserID, claimed)
		if err != nil {
			s.Stop()
			return err
		}
		p.TeamIDs = teams
		s.moveTo(streamsFor(p))
	}
	s.started(p, epoch, head, then)
	return nil
}

// started ends Start, to which the hub gave epoch and head as it
// subscribed the session: it takes them as the session's position
// (unless the hub was reset meanwhile: Reset gave it the new epoch's), arms
// the token expiry and runs then, all with the lock held. A session stopped
// or closed meanwhile (the end of a Socket.IO polling connection runs on a
// goroutine of its own) does none of it: it left the hub, or the hub took
// it off the streams it joined after it left (Subscribed). Call it without
// the lock.
func (s *Session) started(p auth.Principal, epoch string, head relay.Pos, then func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.subscribed || s.mode == modeClosed {
		return
	}
	phase := s.starting
	s.starting = notStarting
	s.principal = p
	if phase != startReset {
		s.epoch, s.head = epoch, head
	}
	s.setLastLocked(s.head)
	s.armExpiryLocked()
	if then != nil {
		then()
	}
}

// memberTeams reads user's teams from the membership table: all of them,
// or in intersect mode those that claimed names too.
func (s *Session) memberTeams(user string, claimed []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(s.t.ctx, 10*time.Second)
	defer cancel()
	teams, err := s.t.o.Membership(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("read membership: %w", err)
	}
	if s.t.o.MembershipIntersect {
		teams = slices.DeleteFunc(teams, func(t string) bool { return !slices.Contains(claimed, t) })
	}
	if teams == nil {
		teams = []string{}
	}
	return teams, nil
}

// Stop leaves the hub and makes the session idle again without closing the
// connection; Start may follow. Call it without the lock.
func (s *Session) Stop() {
	s.mu.Lock()
	if !s.subscribed || s.mode == modeClosed {
		s.mu.Unlock()
		return
	}
	s.mode = modeIdle
	s.subscribed = false
	s.starting = notStarting
	s.t.o.Metrics.Subscribed(s.h.Transport(), -1)
	s.pending = nil
	s.stopExpiryLocked()
	s.stopReplayLocked()
	streams := s.streams
	s.mu.Unlock()
	s.t.o.Hub.Unsubscribe(s, streams)
	// The connection stays; the user's session does not.
	s.ticket.LeaveUser()
}

// disconnected runs once the connection is gone: the session leaves the hub
// for good.
func (s *Session) disconnected() {
	s.mu.Lock()
	s.mode = modeClosed
	s.pending = nil
	s.stopExpiryLocked()
	s.stopReplayLocked()
	var streams []string
	if s.subscribed {
		streams = s.streams
		s.subscribed = false
		s.t.o.Metrics.Subscribed(s.h.Transport(), -1)
	}
	s.mu.Unlock()
	if streams != nil {
		s.t.o.Hub.Unsubscribe(s, streams)
	}
}

// SetPrincipal replaces a started session's principal (a refreshed token of
// the same user): when the token lists other teams the session follows them
// from now on, and the expiry is re-armed. Call it without the lock.
func (s *Session) SetPrincipal(p auth.Principal) {
	s.mu.Lock()
	if !s.subscribed || s.mode == modeClosed {
		s.mu.Unlock()
		return
	}
	if s.t.o.Membership != nil {
		// Cleared before the read: an event Rescoped from here on may be
		// newer than what the read sees, and must win over it (moveTo);
		// one Rescoped before was committed before the read began.
		s.claimed, s.touched = p.TeamIDs, nil
	}
	s.mu.Unlock()
	if s.t.o.Membership != nil {
		// The teams come from the membership table, not the token (in
		// intersect mode, from both): read them again.
		teams, err := s.memberTeams(p.UserID, p.TeamIDs)
		if err != nil {
			s.t.o.Logger.Warn("membership not read on token refresh; the session keeps its teams", "err", err)
			claims := p.TeamIDs
			s.mu.Lock()
			p.TeamIDs = slices.Clone(s.principal.TeamIDs)
			s.mu.Unlock()
			if s.t.o.MembershipIntersect {
				// Never a team the new token does not claim.
				p.TeamIDs = slices.DeleteFunc(p.TeamIDs, func(t string) bool { return !slices.Contains(claims, t) })
			}
		} else {
			p.TeamIDs = teams
		}
	}
	s.moveTo(streamsFor(p))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shown != nil {
		// The teams shown now: moveTo kept the touched ones as their
		// events set them, whatever the read said.
		p.TeamIDs = p.TeamIDs[:0:0]
		for st := range s.shown {
			p.TeamIDs = append(p.TeamIDs, strings.TrimPrefix(st, relay.TeamPrefix))
		}
		slices.Sort(p.TeamIDs)
	}
	s.principal = p
	s.armExpiryLocked()
}

// moveTo makes a started session follow want instead of its streams,
// except the team streams a membership event moved since the session
// started (touched): the event is newer than any read of the table. The
// added streams' events flow from the hub's head at their subscription
// on: the position the session has is one point in the global order, so
// it stays valid. Call it without the lock.
func (s *Session) moveTo(want []string) {
	// Under the hub's read lock no transaction is published while the
	// session works out its change and the hub applies it, so a membership
	// event cannot fall between the two.
	s.t.o.Hub.Move(s, func() (gone, added []string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.subscribed {
			return nil, nil // stopped or closed: it left what it followed
		}
		cur := s.streams
		var next []string
		for _, st := range cur {
			if s.touched[st] || slices.Contains(want, st) {
				next = append(next, st)
			} else {
				gone = append(gone, st)
			}
		}
		for _, st := range want {
			if !s.touched[st] && !slices.Contains(cur, st) {
				next = append(next, st)
				added = append(added, st)
			}
		}
		if len(gone) == 0 && len(added) == 0 {
			return nil, nil
		}
		slices.Sort(next)
		s.streams = next
		if s.shown != nil {
			for _, st := range gone {
				delete(s.shown, st)
			}
			for _, st := range added {
				if strings.HasPrefix(st, relay.TeamPrefix) {
					s.shown[st] = true
				}
			}
		}
		return gone, added
	})
}

// PrincipalLocked returns whom the session was started for.
func (s *Session) PrincipalLocked() auth.Principal { return s.principal }

// AwaitingLocked reports whether a started session still holds live events
// waiting for GoLiveLocked or ResumeLocked.
func (s *Session) AwaitingLocked() bool { return s.mode == modeAwait }

// ClosedLocked reports whether the session is closing or closed.
func (s *Session) ClosedLocked() bool { return s.mode == modeClosed }

// SetFilterLocked limits entity events to the given entity types (events
// without an entity, such as AI tasks and resyncs, always pass); nil lifts
// the filter.
func (s *Session) SetFilterLocked(entities []string) {
	if entities == nil {
		s.filter = nil
		return
	}
	s.filter = make(map[string]bool, len(entities))
	for _, e := range entities {
		s.filter[e] = true
	}
}

// AllowLocked takes one client message from the rate limiter. allowed is
// false past the limit; closeNow is true once the client kept sending past
// it for more than RateStrikes messages in a row.
func (s *Session) AllowLocked() (allowed, closeNow bool) {
	if s.lim == nil {
		// A new limiter's bucket is full, as it would be had it been made
		// when the session opened.
		s.lim = rate.NewLimiter(rate.Limit(s.t.o.RateLimit), s.t.o.RateBurst)
	}
	if s.lim.Allow() {
		s.strikes = 0
		return true, false
	}
	s.strikes++
	s.t.o.Metrics.RateLimited()
	return false, int(s.strikes) > s.t.o.RateStrikes
}

// armExpiryLocked calls the handler's ExpiredLocked when the token
// expires (its exp plus the leeway), unless a fresh principal arrived first.
func (s *Session) armExpiryLocked() {
	s.stopExpiryLocked()
	if s.principal.ValidUntil.IsZero() {
		return
	}
	exp, gen := s.principal.ValidUntil, s.gen
	s.expiry = time.AfterFunc(time.Until(exp), func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.gen != gen || !s.subscribed || s.mode == modeClosed || !s.principal.ValidUntil.Equal(exp) {
			return
		}
		s.h.ExpiredLocked()
	})
}

func (s *Session) stopExpiryLocked() {
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
}

// Deliver implements hub.Subscriber.
func (s *Session) Deliver(ev *relay.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deliverLocked(ev)
}

func (s *Session) deliverLocked(ev *relay.Event) {
	switch s.mode {
	case modeLive:
		s.sendEventLocked(ev)
	case modeAwait, modeReplay:
		if s.pending == nil {
			s.pending = new([]*relay.Event)
		} else if len(*s.pending) >= s.t.o.QueueSize {
			s.slowLocked()
			return
		}
		*s.pending = append(*s.pending, ev)
	}
}

// Reset implements hub.Subscriber: the epoch changed, positions are void.
// The handler's ResyncLocked tells the client; a replay in flight ends
// there (it replays the old epoch, and must not say resumed after the
// resync), and the session goes live from the new head.
func (s *Session) Reset(epoch string) {
	hubEpoch, head := s.t.o.Hub.Head()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.subscribed || s.mode == modeClosed || hubEpoch != epoch {
		return
	}
	s.epoch, s.head = epoch, head
	s.setLastLocked(head)
	s.pending = nil
	if s.starting != notStarting {
		// Start has subscribed but not yet taken the hub's head: it
		// takes this one, and the client, told nothing yet, needs no
		// resync. The membership table is read again all the same.
		s.starting = startReset
		if s.shown != nil {
			s.CloseLocked(CloseGoingAway, "history epoch changed, reconnect")
		}
		return
	}
	s.h.ResyncLocked()
	if s.shown != nil {
		// Membership events held in pending are gone with it (their
		// Rescope already moved the hub subscription), and the restored
		// database's table may say otherwise than the session: reconnect
		// and read it again.
		s.CloseLocked(CloseGoingAway, "history epoch changed, reconnect")
		return
	}
	if s.mode == modeReplay {
		// replayingLocked is false from now on: the replay stops before
		// its next event.
		s.mode = modeLive
	}
}

// Rescope implements hub.Rescoper: a membership event of the session's
// user joins it to the team's stream (unless it follows it already, or in
// intersect mode the token does not name the team) or removes it from it.
// The change shows at the event's turn (membershipLocked).
func (s *Session) Rescope(ev *relay.Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t.o.Membership == nil || !s.subscribed || s.mode == modeClosed {
		return false
	}
	st := relay.TeamStream(ev.Team)
	s.touched = setAdd(s.touched, st)
	i, in := slices.BinarySearch(s.streams, st)
	switch {
	case ev.Join && !in && s.acceptsLocked(ev.Team):
		s.streams = slices.Insert(s.streams, i, st)
		return true
	case !ev.Join && in:
		s.streams = slices.Delete(s.streams, i, i+1)
		return true
	}
	return false
}

// orphanedLocked closes a session whose last team was left by a
// transaction that joined no other, with 4403.
func (s *Session) orphanedLocked() {
	s.orphan = false
	s.CloseLocked(CloseForbidden, "no team left")
}

// Settle implements hub.Rescoper: the transaction (or part) that moved the
// session's teams is published. A live session it left without a team
// closes now.
func (s *Session) Settle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.orphan && s.mode == modeLive {
		s.orphanedLocked()
	}
}

// Subscribed implements hub.Rescoper.
func (s *Session) Subscribed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribed
}

// acceptsLocked reports whether the session follows team once its user
// joins it: always, or in intersect mode when the token names it.
func setAdd(m map[string]bool, k string) map[string]bool {
	if m == nil {
		m = make(map[string]bool)
	}
	m[k] = true
	return m
}

func (s *Session) acceptsLocked(team string) bool {
	return !s.t.o.MembershipIntersect || slices.Contains(s.claimed, team)
}

// visibleLocked reports whether the session shows events of stream now.
func (s *Session) visibleLocked(stream string) bool {
	if s.shown != nil && strings.HasPrefix(stream, relay.TeamPrefix) {
		return s.shown[stream]
	}
	_, ok := slices.BinarySearch(s.streams, stream)
	return ok
}

// membershipLocked applies a membership event at its turn: a join shows
// the team's events from here on; a leave hides them and tells the client,
// closing the session with 4403 when no team remains. An event from before
// the session subscribed (replayed history) changes nothing: the teams
// were read when it started.
func (s *Session) membershipLocked(ev *relay.Event) {
	if s.shown == nil || (ev.Pos.Compare(s.head) <= 0 && !s.replayScope) {
		return
	}
	st := relay.TeamStream(ev.Team)
	switch {
	case ev.Join && !s.shown[st] && s.acceptsLocked(ev.Team):
		s.shown[st] = true
		s.orphan = false
		s.principal.TeamIDs = append(slices.Clip(s.principal.TeamIDs), ev.Team)
	case !ev.Join && s.shown[st]:
		delete(s.shown, st)
		s.principal.TeamIDs = slices.DeleteFunc(slices.Clone(s.principal.TeamIDs), func(t string) bool { return t == ev.Team })
		s.h.ForbiddenLocked(ev.Team)
		s.orphan = len(s.shown) == 0
	}
}

// sendEventLocked frames and queues one event unless it was already sent
// (positions make delivery idempotent) or the subscribe filter hides it.
func (s *Session) sendEventLocked(ev *relay.Event) {
	if s.orphan && !s.replayScope && (ev.Pos.Tick != s.last.Tick || ev.Pos.Tx != s.last.Tx) {
		s.orphanedLocked()
		return
	}
	if !s.visibleLocked(ev.Stream) {
		return
	}
	if ev.Kind == relay.KindMembership {
		if c := ev.Pos.Compare(s.last); c > 0 {
			s.last, s.lastPart = ev.Pos, ev.Part
			s.membershipLocked(ev)
		}
		return
	}
	// An event is new when it is past the last one processed: a later
	// position, or the next part of the same change (the legacy
	// data:update that follows its event).
	if c := ev.Pos.Compare(s.last); c < 0 || c == 0 && ev.Part <= s.lastPart {
		return
	}
	s.last, s.lastPart = ev.Pos, ev.Part
	if ev.Entity != "" && s.filter != nil && !s.filter[ev.Entity] {
		return
	}
	if s.queued-s.sent.Load() >= int64(s.t.o.QueueSize) {
		s.slowLocked()
		return
	}
	frame := s.h.EventLocked(ev)
	if frame == nil {
		return
	}
	// Bounded in bytes as well: a session that does not read large rows
	// would otherwise hold QueueSize of them. One frame in flight is always
	// allowed, however large.
	if inflight := s.queuedBytes - s.sentBytes.Load(); s.queued > s.sent.Load() && inflight+int64(len(frame)) > s.t.o.QueueBytes {
		s.slowLocked()
		return
	}
	timing := s.timeWriteLocked(ev.CommittedAt)
	s.WriteLocked(frame)
	switch {
	case s.queued != timing && timing != 0:
		s.timed.CompareAndSwap(timing, 0) // not queued after all
	case s.mode == modeLive:
		s.t.o.Metrics.EventSent()
	}
}

// timeWriteLocked starts timing the socket write of the live event frame
// about to be queued, whose change committed at committedAt, unless a
// replayed one (its commit is history), a frame is being
// timed already (one at a time: a per-frame record would cost the fan-out
// an allocation) or the commit time is unknown; it returns the frame's
// number, or 0 when it is not timed. The number is set before the frame is
// queued, so that the writer cannot write it first.
func (s *Session) timeWriteLocked(committedAt time.Time) int64 {
	if s.mode != modeLive || s.t.o.Metrics == nil || committedAt.IsZero() || s.timed.Load() != 0 {
		return 0
	}
	n := s.queued + 1
	s.timedAt.Store(committedAt.UnixNano())
	s.timed.Store(n)
	return n
}

// EpochLocked returns the history epoch of the session's position.
func (s *Session) EpochLocked() string { return s.epoch }

// PositionLocked returns the session's position: everything it was sent.
// Inside the handler's EventLocked it is the event's own position, the
// same for every session of the epoch.
func (s *Session) PositionLocked() string {
	return relay.EncodePosition(s.epoch, s.last)
}

// setLastLocked moves the session's position to pos, which stands for
// everything up to it (every part of its change).
func (s *Session) setLastLocked(pos relay.Pos) {
	s.last, s.lastPart = pos, ^uint8(0)
}

// GoLiveLocked sends the live events held so far and every later one as it
// is delivered. It does nothing unless the session is started and holding.
func (s *Session) GoLiveLocked() {
	if s.mode != modeAwait && s.mode != modeReplay {
		return
	}
	s.mode = modeLive
	s.replayScope = false
	var pending []*relay.Event
	if s.pending != nil {
		pending = *s.pending
	}
	s.pending = nil
	for _, ev := range pending {
		s.sendEventLocked(ev)
		if s.mode == modeClosed {
			return
		}
	}
	if s.orphan {
		s.orphanedLocked()
	}
}
