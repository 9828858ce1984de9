package relay

import "time"

// Fanout is what the pipeline publishes to (package hub implements it).
type Fanout interface {
	// Publish delivers one transaction's events and moves the head to
	// head, which is at or after the last event's position.
	Publish(events []Event, head Pos)
	Reset(epoch string, head Pos)
}

// Pipeline connects capture to fan-out: it maps each captured transaction's
// changes and publishes the events as one unit. It implements Sink; its
// methods are called from one goroutine.
type Pipeline struct {
	Mapper Mapper
	Fanout Fanout
	// Observe, when set, is called after each transaction is published with
	// the number of changes and events and the commit time: once, after
	// the last part of one handed on in parts, with the parts' totals.
	Observe func(changes, events int, committedAt time.Time)

	// The totals of the parts published so far of transaction partXID,
	// whose last part ended at partHead.
	partXID                 uint64
	partHead                Pos
	partChanges, partEvents int
}

// Reset forwards a new epoch and head to the fan-out.
func (p *Pipeline) Reset(epoch string, head Pos) {
	p.partXID, p.partHead, p.partChanges, p.partEvents = 0, Pos{}, 0, 0
	p.Fanout.Reset(epoch, head)
}

// Txn maps and publishes one transaction, with the transaction's head: a
// transaction whose changes map to nothing still moves the head. Each call
// allocates a fresh event slice, since subscribers may keep the events.
func (p *Pipeline) Txn(txn *Txn) {
	var events []Event
	if len(txn.Changes) > 0 {
		events = make([]Event, 0, len(txn.Changes)+1)
	}
	for i := range txn.Changes {
		events = p.Mapper.Map(events, &txn.Changes[i])
	}
	p.Fanout.Publish(events, txn.Head)
	if p.Observe == nil {
		return
	}
	if p.partXID != txn.XID || len(txn.Changes) > 0 && txn.Changes[0].Pos.Compare(p.partHead) <= 0 {
		// Not the next part of the transaction counted so far: the reader
		// lost the database after handing parts on, and reads from the
		// start again.
		p.partChanges, p.partEvents = 0, 0
	}
	changes, published := p.partChanges+len(txn.Changes), p.partEvents+len(events)
	if txn.More {
		p.partXID, p.partHead, p.partChanges, p.partEvents = txn.XID, txn.Head, changes, published
		return
	}
	p.partXID, p.partHead, p.partChanges, p.partEvents = 0, Pos{}, 0, 0
	p.Observe(changes, published, txn.CommittedAt)
}
