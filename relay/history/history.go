// Package history replays the events of committed changes after a position,
// which is what a transport resumes a session from. It reads the changelog
// only through its one owner, behind the relay.ChangeHistory seam (package
// changelog implements it), never through a capture, and it imports nothing
// but the core.
package history

import (
	"context"

	"github.com/rowcast/rowcast/relay"
)

// Mapped is the relay.History of a relay.ChangeHistory: it maps each
// replayed change with Mapper, which should be the Pipeline's, so a resumed
// session receives the same events as a live one. It keeps the
// ChangeHistory's order and batches; the changes of a batch that map to
// nothing are dropped, and a batch left empty is not passed on.
type Mapped struct {
	Changes relay.ChangeHistory
	Mapper  relay.Mapper
}

// Replay implements relay.History.
func (h Mapped) Replay(ctx context.Context, streams []string, after relay.Position, fn func([]relay.Event) error) error {
	var events []relay.Event
	return h.Changes.Replay(ctx, streams, after, func(changes []relay.Change) error {
		events = events[:0]
		for i := range changes {
			events = h.Mapper.Map(events, &changes[i])
		}
		if len(events) == 0 {
			return nil
		}
		return fn(events)
	})
}
