package ws

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olahol/melody"
	"golang.org/x/time/rate"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/mapping"
)

// Session modes.
type mode uint8

const (
	// modeAwait holds live events until the client's first message (which
	// may be resume) or the resume grace period ends.
	modeAwait mode = iota
	// modeReplay holds live events while history is replayed.
	modeReplay
	// modeLive sends events as they are delivered.
	modeLive
	// modeClosed drops everything.
	modeClosed
)

// session is one plain-protocol WebSocket client. Its mutex guards the
// fields below it; it is taken by the hub's Deliver (with a hub shard lock
// held, so a session never calls the hub while holding it), by the message
// handler and by replay.
type session struct {
	srv  *Server
	ms   *melody.Session
	id   string
	lim  *rate.Limiter
	sent atomic.Int64 // text frames written to the socket
	// space is signalled when queued frames are written (replay waits on it).
	space chan struct{}

	mu        sync.Mutex
	mode      mode
	principal auth.Principal
	streams   []string // sorted stream keys
	last      []int64  // per stream: last seq sent (or skipped)
	heads     []int64  // per stream: head when subscribed
	epoch     string
	queued    int64 // text frames handed to melody
	pending   []*relay.Event
	filter    map[string]bool // nil: every entity
	gotFirst  bool
	strikes   int
	expiry    *time.Timer
	grace     *time.Timer
	cancel    context.CancelFunc
}

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

// Deliver implements hub.Subscriber.
func (s *session) Deliver(ev *relay.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.mode {
	case modeLive:
		s.sendEventLocked(ev)
	case modeAwait, modeReplay:
		if len(s.pending) >= s.srv.o.QueueSize {
			s.slowLocked()
			return
		}
		s.pending = append(s.pending, ev)
	}
}

// Reset implements hub.Subscriber: the epoch changed, positions are void.
func (s *session) Reset(epoch string) {
	heads := s.srv.o.Hub.Heads(s.currentStreams())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode == modeClosed {
		return
	}
	s.epoch = epoch
	copy(s.last, heads)
	s.pending = nil
	s.writeLocked([]byte(`{"type":"resync","reason":"history_expired"}`))
}

func (s *session) currentStreams() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.streams)
}

// sendEventLocked frames and queues one event unless it was already sent
// (positions make delivery idempotent) or the subscribe filter hides it.
func (s *session) sendEventLocked(ev *relay.Event) {
	i := slices.Index(s.streams, ev.Stream)
	if i < 0 || ev.Seq <= s.last[i] {
		return
	}
	s.last[i] = ev.Seq
	if ev.Entity != "" && s.filter != nil && !s.filter[ev.Entity] {
		return
	}
	if s.queued-s.sent.Load() >= int64(s.srv.o.QueueSize) {
		s.slowLocked()
		return
	}
	var frame []byte
	if ev.Kind == relay.KindResync {
		frame = ev.Data
	} else {
		pos := s.positionLocked()
		frame = make([]byte, 0, 48+len(ev.Name)+len(pos)+len(ev.Data))
		frame = append(frame, `{"type":"event","event":`...)
		frame = mapping.AppendString(frame, ev.Name)
		frame = append(frame, `,"position":"`...)
		frame = append(frame, pos...)
		frame = append(frame, `","data":`...)
		frame = append(frame, ev.Data...)
		frame = append(frame, '}')
	}
	s.writeLocked(frame)
	if s.mode == modeLive {
		s.srv.metrics.EventSent(ev.CommittedAt)
	}
}

// frameSent is called by melody after a text frame was written.
func (s *session) frameSent() {
	s.sent.Add(1)
	select {
	case s.space <- struct{}{}:
	default:
	}
}

func (s *session) positionLocked() string {
	return relay.EncodePosition(s.epoch, s.streams, func(i int) int64 { return s.last[i] })
}

// writeLocked queues a text frame; queued counts it until melody reports
// it written.
func (s *session) writeLocked(frame []byte) {
	if s.mode == modeClosed {
		return
	}
	s.queued++
	if err := s.ms.Write(frame); err != nil {
		s.mode = modeClosed
	}
}

// closeLocked sends a close frame after what is queued.
func (s *session) closeLocked(code int, reason string) {
	if s.mode == modeClosed {
		return
	}
	s.mode = modeClosed
	_ = s.ms.CloseWithMsg(melody.FormatCloseMessage(code, reason))
}

// slowLocked closes a session whose queue overflowed with 4008. The close
// frame goes through the session's queue (which keeps room for it), so the
// client first receives every frame it was sent, each with its position, and
// then resumes from the last one without loss. A client that reads nothing
// at all is cut off by the write timeout.
func (s *session) slowLocked() {
	if s.mode == modeClosed {
		return
	}
	s.pending = nil
	s.srv.metrics.SlowClose()
	s.closeLocked(CloseSlowConsumer, "slow consumer")
}

// abortLocked closes the connection at once, ahead of what is queued, when
// even the close frame cannot be queued.
func (s *session) abortLocked() {
	s.mode = modeClosed
	s.pending = nil
	conn := s.ms.WebsocketConnection()
	_ = conn.WriteControl(websocketCloseMessage, melody.FormatCloseMessage(CloseSlowConsumer, "slow consumer"), time.Now().Add(100*time.Millisecond))
	_ = conn.Close()
}

// goLiveLocked flushes held events and switches to live delivery.
func (s *session) goLiveLocked() {
	if s.grace != nil {
		s.grace.Stop()
	}
	if s.mode == modeClosed {
		return
	}
	s.mode = modeLive
	pending := s.pending
	s.pending = nil
	for _, ev := range pending {
		s.sendEventLocked(ev)
		if s.mode == modeClosed {
			return
		}
	}
}

// resume replays history after since and then goes live. It runs in its own
// goroutine; the session's context ends it when the session closes.
func (s *session) resume(ctx context.Context, since string) {
	s.mu.Lock()
	if s.mode != modeAwait {
		s.mu.Unlock()
		return
	}
	if s.grace != nil {
		s.grace.Stop()
	}
	s.mode = modeReplay
	epoch := s.epoch
	streams := slices.Clone(s.streams)
	s.mu.Unlock()

	pos, err := relay.ParsePosition(since)
	if err != nil || pos.Epoch != epoch {
		s.resyncAndGoLive()
		return
	}
	from := make(map[string]int64, len(streams))
	s.mu.Lock()
	for i, st := range streams {
		seq, ok := pos.Seqs[st]
		if !ok {
			continue // a stream the position does not know starts live
		}
		if seq >= s.heads[i] {
			// The client is at or ahead of this relay's head (another replica
			// was ahead): send nothing up to its seq again.
			s.last[i] = max(s.last[i], seq)
			from[st] = seq
			continue
		}
		s.last[i] = seq
		from[st] = seq
	}
	s.mu.Unlock()

	replayed := 0
	limit := s.srv.o.ReplayLimit
	var events []relay.Event
	err = s.srv.o.History.Replay(ctx, from, func(changes []relay.Change) error {
		for i := range changes {
			events = s.srv.o.Mapper.Map(events[:0], &changes[i])
			for j := range events {
				if err := s.waitSpace(ctx); err != nil {
					return err
				}
				ev := events[j]
				s.mu.Lock()
				if s.mode == modeClosed {
					s.mu.Unlock()
					return errClosed
				}
				before := s.queued
				s.sendEventLocked(&ev)
				if s.queued > before {
					replayed++
				}
				s.mu.Unlock()
				if replayed > limit {
					return relay.ErrHistoryExpired
				}
			}
		}
		return nil
	})
	switch {
	case err == nil:
		s.mu.Lock()
		frame := []byte(`{"type":"resumed","position":"` + s.positionLocked() + `","replayed":` + strconv.Itoa(replayed) + `}`)
		s.writeLocked(frame)
		s.goLiveLocked()
		s.mu.Unlock()
		s.srv.metrics.Resumed(replayed)
	case errors.Is(err, relay.ErrHistoryExpired):
		s.resyncAndGoLive()
	case errors.Is(err, errClosed) || ctx.Err() != nil:
	default:
		s.srv.o.Logger.Warn("resume failed", "session", s.id, "err", err)
		s.mu.Lock()
		s.closeLocked(CloseInternal, "resume failed, reconnect with since")
		s.mu.Unlock()
	}
}

var errClosed = errors.New("session closed")

// waitSpace blocks while the session's socket queue is more than half full,
// so a long replay is paced by the client instead of overflowing.
func (s *session) waitSpace(ctx context.Context) error {
	half := int64(s.srv.o.QueueSize / 2)
	for {
		s.mu.Lock()
		inflight := s.queued - s.sent.Load()
		closed := s.mode == modeClosed
		s.mu.Unlock()
		if closed {
			return errClosed
		}
		if inflight < half {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.space:
		}
	}
}

func (s *session) resyncAndGoLive() {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.last, s.heads)
	s.writeLocked([]byte(`{"type":"resync","reason":"history_expired"}`))
	s.goLiveLocked()
	s.srv.metrics.Resync()
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
