package session

// Sent tells the session that its Conn wrote one more of its text frames,
// of n bytes, to the client. It takes no lock.
func (s *Session) Sent(n int) {
	s.sentBytes.Add(int64(n))
	written := s.sent.Add(1)
	// timedAt is read before timed is given back: the next frame timed
	// sets it again only after that.
	if timed := s.timed.Load(); timed != 0 && written >= timed {
		if at := s.timedAt.Load(); s.timed.CompareAndSwap(timed, 0) {
			s.t.o.Metrics.EventWritten(at)
		}
	}
	if run := s.run.Load(); run != nil {
		select {
		case run.space <- struct{}{}:
		default:
		}
	}
}

// WriteLocked queues a text frame after those already queued; it counts
// against the queue until the Conn reports it written. It does nothing once
// the session is closing.
func (s *Session) WriteLocked(frame []byte) {
	if s.mode == modeClosed {
		return
	}
	// Every text frame counts, not only events: a client that keeps
	// sending (pings, binary frames) and reads nothing fills the queue with
	// answers. When they reach the headroom the session closes with 4008
	// through the queue, whose last slot stays free for the close, so an
	// answer never overflows melody's channel into the abort.
	if s.queued-s.sent.Load() >= int64(s.t.o.QueueSize+queueHeadroom-1) {
		s.slowLocked()
		return
	}
	s.queued++
	s.queuedBytes += int64(len(frame))
	if err := s.c.Write(frame); err != nil {
		s.mode = modeClosed
		s.pending = nil
	}
}

// CloseLocked sends a close with code and reason after what is queued, and
// nothing after it; client messages are ignored from then on. Code 0 sends
// a close frame without a status (what socket.io's server does on a
// protocol error).
func (s *Session) CloseLocked(code int, reason string) {
	if s.mode == modeClosed {
		return
	}
	s.mode = modeClosed
	s.pending = nil
	s.closeCode = int16(code)
	s.c.Close(code, reason)
}

// slowLocked closes a session whose queue overflowed with 4008. The close
// frame goes through the session's queue (which keeps room for it), so the
// client first receives every frame it was sent, each with its position, and
// then resumes from the last one without loss. A client that reads nothing
// at all is cut off by the write timeout.
func (s *Session) slowLocked() {
	if s.mode == modeClosed {
		return
	}
	s.t.o.Metrics.SlowClose()
	s.CloseLocked(CloseSlowConsumer, "slow consumer")
}
