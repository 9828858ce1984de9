package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrStop, returned by a Session's handler, ends Run without an error.
var ErrStop = errors.New("client: stop")

// Session keeps a subscription across connections: it dials, hands every
// frame to the handler, keeps the last position the handler processed, and
// after a drop reconnects with backoff and resumes from that position.
type Session struct {
	// Options says how to connect; its Since is where the first connection
	// resumes ("" starts at the relay's head).
	Options Options
	// Entities, when set, is sent as a subscribe after each welcome.
	Entities []string
	// MinBackoff and MaxBackoff bound the wait before a reconnect (defaults
	// 500ms and 30s; see Backoff). The attempt count starts again after a
	// connection that was welcomed.
	MinBackoff, MaxBackoff time.Duration
	// NoReconnect makes Run return the first drop instead.
	NoReconnect bool
	// OnDrop, when set, is told of each drop and the wait before the next
	// attempt, from Run's goroutine.
	OnDrop func(err error, wait time.Duration)

	pos string
}

// Position returns the last position processed: the one to resume from.
// Call it from the handler or after Run returned.
func (s *Session) Position() string { return s.pos }

// Run connects and hands every frame to handle, in order, until ctx ends or
// handle returns ErrStop (nil), handle returns another error (that error),
// or the connection ends in a way a reconnect cannot cure (a final error:
// see IsDrop). Positions follow docs/protocol.md section 5: an event's and
// resumed's position are taken once handle returned; the welcome's only on
// a connection that does not resume; after a resync, the welcome's.
func (s *Session) Run(ctx context.Context, handle func(Frame) error) error {
	if s.pos == "" {
		s.pos = s.Options.Since
	}
	lo, hi := s.MinBackoff, s.MaxBackoff
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi < lo {
		hi = max(30*time.Second, lo)
	}
	attempt := 0
	for {
		welcomed, err := s.connection(ctx, handle)
		switch {
		case ctx.Err() != nil || errors.Is(err, ErrStop):
			return nil
		case err == nil || !IsDrop(err):
			return err
		case s.NoReconnect:
			return fmt.Errorf("%w (not reconnecting)", err)
		}
		if welcomed {
			attempt = 0
		}
		wait := Backoff(attempt, lo, hi)
		attempt++
		if s.OnDrop != nil {
			s.OnDrop(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// connection runs one connection until it ends.
func (s *Session) connection(ctx context.Context, handle func(Frame) error) (welcomed bool, err error) {
	o := s.Options
	o.Since = s.pos
	resuming := s.pos != ""
	c, err := Dial(ctx, o)
	if err != nil {
		return false, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var welcomePos string
	for {
		f, err := c.Next()
		if err != nil {
			return welcomed, err
		}
		if err := handle(f); err != nil {
			return welcomed, err
		}
		switch f.Type {
		case "welcome":
			welcomed, welcomePos = true, f.Position
			if !resuming && s.pos == "" {
				s.pos = f.Position
			}
			if len(s.Entities) > 0 {
				if err := c.Subscribe(s.Entities); err != nil {
					return welcomed, &dropError{err: err}
				}
			}
		case "event", "resumed":
			if f.Position != "" {
				s.pos = f.Position
			}
		case "resync":
			// The position resumed from is gone; live events follow the
			// head this connection's welcome named.
			if f.Reason == "history_expired" {
				s.pos = welcomePos
			}
		}
	}
}
