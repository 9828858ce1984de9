package session

import (
	"context"
	"errors"
	"slices"

	"github.com/rowcast/rowcast/relay"
)

// ResumeLocked replays, in its own goroutine, every event after since that
// the session's scope allows, in order, then calls the handler's
// ResumedLocked and goes live. A since that cannot be served (malformed,
// another epoch, pruned, or more than ReplayLimit events behind) calls
// ResyncLocked instead and goes live from the head. It reports false, doing
// nothing, unless the session is started and awaiting.
func (s *Session) ResumeLocked(since string) bool {
	if s.mode != modeAwait {
		return false
	}
	s.mode = modeReplay
	// The replay's context ends with Stop, the connection or Drain; its
	// space signal lives as long as the replay.
	ctx, cancel := context.WithCancel(s.t.ctx)
	run := &replayRun{cancel: cancel, space: make(chan struct{}, 1)}
	s.run.Store(run)
	go s.resume(ctx, s.gen, since, run)
	return true
}

// stopReplayLocked cancels the running replay's context, if any.
func (s *Session) stopReplayLocked() {
	if run := s.run.Load(); run != nil {
		run.cancel()
	}
}

// replayEnded releases what run, a replay that ended, used: its context
// and its place in the session (unless a later replay took it).
func (s *Session) replayEnded(run *replayRun) {
	s.run.CompareAndSwap(run, nil)
	run.cancel()
}

// replayingLocked reports whether the replay of Start generation gen may
// go on.
func (s *Session) replayingLocked(gen uint32) bool {
	return s.gen == gen && s.mode == modeReplay
}

func (s *Session) resume(ctx context.Context, gen uint32, since string, run *replayRun) {
	defer s.replayEnded(run)
	s.mu.Lock()
	if !s.replayingLocked(gen) {
		s.mu.Unlock()
		return
	}
	epoch := s.epoch
	streams := s.replayStreamsLocked()
	s.mu.Unlock()

	pos, err := relay.ParsePosition(since)
	if err != nil || pos.Epoch != epoch {
		s.resyncAndGoLive(gen, false)
		return
	}
	s.mu.Lock()
	if !s.replayingLocked(gen) {
		s.mu.Unlock()
		return
	}
	// The position moves to since at once, so that the live events held
	// meanwhile are sent only past it, also when the client is ahead of
	// this relay's head (another replica was ahead).
	from := pos.Pos
	s.setLastLocked(from)
	membership := s.shown != nil
	s.mu.Unlock()

	if membership {
		// The teams the user had at since: the session's (read at start)
		// with the user's membership changes from since on undone. The
		// replay then applies those changes at their positions, so that
		// it shows each team's events only while the user belonged to it.
		if err := s.teamsAt(ctx, gen, relay.Position{Epoch: epoch, Pos: from}); err != nil {
			if errors.Is(err, relay.ErrHistoryExpired) {
				s.resyncAndGoLive(gen, false)
			} else if !errors.Is(err, errClosed) && ctx.Err() == nil {
				s.t.o.Logger.Warn("resume failed", "err", err)
				s.mu.Lock()
				s.CloseLocked(CloseGoingAway, "resume failed, reconnect with since")
				s.mu.Unlock()
			}
			return
		}
		s.mu.Lock()
		streams = s.replayStreamsLocked()
		s.mu.Unlock()
	}

	replayed := 0
	limit := s.t.o.ReplayLimit
	for {
		err = s.t.o.History.Replay(ctx, streams, relay.Position{Epoch: epoch, Pos: from}, func(events []relay.Event) error {
			for j := range events {
				if err := s.waitSpace(ctx, gen, run.space); err != nil {
					return err
				}
				ev := events[j]
				s.mu.Lock()
				if !s.replayingLocked(gen) {
					s.mu.Unlock()
					return errClosed
				}
				before := s.queued
				s.sendEventLocked(&ev)
				if s.queued > before && ev.Kind != relay.KindMembership { // a forbidden frame is not an event
					replayed++
				}
				// A join of a team the replay does not read: read again
				// from the join, with the team's stream.
				joined := ev.Kind == relay.KindMembership && ev.Join && s.shown[relay.TeamStream(ev.Team)] &&
					!slices.Contains(streams, relay.TeamStream(ev.Team))
				s.mu.Unlock()
				if replayed > limit {
					return relay.ErrHistoryExpired
				}
				if joined {
					return errReplayAgain
				}
			}
			return nil
		})
		if !errors.Is(err, errReplayAgain) {
			break
		}
		s.mu.Lock()
		from, streams = s.last, s.replayStreamsLocked()
		s.mu.Unlock()
	}
	cancelled := ctx.Err() != nil
	// Released before the outcome is told (the deferred call then does
	// nothing): once the client has its resumed or resync, the session
	// holds no replay state.
	s.replayEnded(run)
	switch {
	case err == nil:
		s.mu.Lock()
		if s.replayingLocked(gen) {
			s.h.ResumedLocked(replayed)
			s.GoLiveLocked()
		}
		s.mu.Unlock()
		s.t.o.Metrics.Resumed(replayed)
	case errors.Is(err, relay.ErrHistoryExpired):
		s.resyncAndGoLive(gen, replayed > 0)
	case errors.Is(err, errClosed) || cancelled:
	default:
		// PROTOCOL.md section 7 has one code for "this relay cannot serve
		// you now; reconnect with jitter, with since": 1001. A client that
		// does so resumes where it was, here or on another replica.
		s.t.o.Logger.Warn("resume failed", "err", err)
		s.mu.Lock()
		s.CloseLocked(CloseGoingAway, "resume failed, reconnect with since")
		s.mu.Unlock()
	}
}

// teamsAt sets the session's shown teams to those its user had at from:
// it reads the user's membership changes after from up to the session's
// head and undoes them, newest first, and has membershipLocked apply
// changes at or before the head during this replay.
func (s *Session) teamsAt(ctx context.Context, gen uint32, from relay.Position) error {
	s.mu.Lock()
	user, head := s.principal.UserID, s.head
	s.mu.Unlock()
	var changes []relay.Event
	err := s.t.o.History.Replay(ctx, []string{relay.UserStream(user)}, from, func(events []relay.Event) error {
		for _, ev := range events {
			if ev.Kind == relay.KindMembership && ev.Pos.Compare(head) <= 0 {
				changes = append(changes, ev)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.replayingLocked(gen) {
		return errClosed
	}
	for i := len(changes) - 1; i >= 0; i-- {
		st := relay.TeamStream(changes[i].Team)
		switch {
		case changes[i].Join:
			delete(s.shown, st)
		case s.acceptsLocked(changes[i].Team):
			s.shown[st] = true
		}
	}
	s.replayScope = true
	return nil
}

// errReplayAgain ends a replay that must go on with more streams.
const errReplayAgain = relay.Error("replay again")

// replayStreamsLocked returns the streams a replay reads: those the session
// follows, and with auth.membership the team streams it shows at its
// current turn (a leave Rescoped already is not at its turn yet).
func (s *Session) replayStreamsLocked() []string {
	streams := slices.Clone(s.streams)
	for st := range s.shown {
		if !slices.Contains(streams, st) {
			streams = append(streams, st)
		}
	}
	return streams
}

// errClosed ends a replay whose session closed or restarted.
const errClosed = relay.Error("session closed")

// waitSpace blocks while the session's socket queue is more than half full,
// so a long replay is paced by the client instead of overflowing.
func (s *Session) waitSpace(ctx context.Context, gen uint32, space <-chan struct{}) error {
	half, halfBytes := int64(s.t.o.QueueSize/2), s.t.o.QueueBytes/2
	for {
		s.mu.Lock()
		inflight := s.queued - s.sent.Load()
		inflightBytes := s.queuedBytes - s.sentBytes.Load()
		ok := s.replayingLocked(gen)
		s.mu.Unlock()
		if !ok {
			return errClosed
		}
		if inflight < half && (inflight == 0 || inflightBytes < halfBytes) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-space:
		}
	}
}

// resyncAndGoLive gives up a replay: the session's position jumps to the
// head (never back below what the replay sent, when sent is true), the
// handler tells the client to resync, and live events flow.
func (s *Session) resyncAndGoLive(gen uint32, sent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.replayingLocked(gen) {
		return
	}
	if !sent || s.head.Compare(s.last) > 0 {
		s.setLastLocked(s.head)
	}
	s.h.ResyncLocked()
	s.GoLiveLocked()
	s.t.o.Metrics.Resync()
}
