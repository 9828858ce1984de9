package relay

import "time"

// Fanout is what the pipeline publishes to (package hub implements it).
type Fanout interface {
	Publish(events []Event)
	Advance(stream string, seq int64)
	Reset(epoch string, heads map[string]int64)
}

// Pipeline connects capture to fan-out: it maps each captured transaction's
// changes and publishes the events as one unit. It implements Sink; its
// methods are called from one goroutine.
type Pipeline struct {
	Mapper Mapper
	Fanout Fanout
	// Observe, when set, is called after each transaction is published with
	// the number of changes and events and the commit time.
	Observe func(changes, events int, committedAt time.Time)
}

// Reset forwards a new epoch and heads to the fan-out.
func (p *Pipeline) Reset(epoch string, heads map[string]int64) { p.Fanout.Reset(epoch, heads) }

// Txn maps and publishes one transaction. Each call allocates a fresh event
// slice, since subscribers may keep the events.
//
// Changes that map to nothing advance their streams only after the events
// are published: advancing first could move a head past an event of the
// same transaction not yet published, and a session subscribing in between
// would take that head as its position and drop the event as already sent.
func (p *Pipeline) Txn(txn *Txn) {
	events := make([]Event, 0, len(txn.Changes)+1)
	var unmapped []int // indexes of changes that produced no event
	for i := range txn.Changes {
		n := len(events)
		events = p.Mapper.Map(events, &txn.Changes[i])
		if len(events) == n {
			unmapped = append(unmapped, i)
		}
	}
	if len(events) > 0 {
		p.Fanout.Publish(events)
	}
	for _, i := range unmapped {
		p.Fanout.Advance(txn.Changes[i].Stream, txn.Changes[i].Seq)
	}
	if p.Observe != nil {
		p.Observe(len(txn.Changes), len(events), txn.CommittedAt)
	}
}
