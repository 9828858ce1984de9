package relay

import "context"

// MappedHistory is the History of a ChangeHistory: it maps each replayed
// change with Mapper, which should be the Pipeline's, so a resumed session
// receives the same events as a live one. It keeps the ChangeHistory's
// order and batches; the changes of a batch that map to nothing are
// dropped, and a batch left empty is not passed on.
type MappedHistory struct {
	Changes ChangeHistory
	Mapper  Mapper
}

// Replay implements History.
func (h MappedHistory) Replay(ctx context.Context, streams []string, after Pos, fn func([]Event) error) error {
	var events []Event
	return h.Changes.Replay(ctx, streams, after, func(changes []Change) error {
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
