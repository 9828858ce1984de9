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
	// Observe, when set, is called after each transaction is published
	// with what it brought: once, after the last part of one handed on in
	// parts, with the parts' totals; never again for a transaction the
	// reader hands on a second time (it lost the database mid-read and
	// read again). It must not keep o.Tables.
	Observe func(o Observed)

	// observed is the head of the last transaction observed.
	observed Pos

	// The totals of the parts published so far of transaction partXID,
	// whose last part ended at partHead.
	partXID    uint64
	partHead   Pos
	partEvents int
	partTables []TableCount
}

// Observed is what one published transaction brought.
type Observed struct {
	Changes, Events int
	// Tables counts the changes by table and operation, in the order
	// first seen.
	Tables      []TableCount
	CommittedAt time.Time
}

// TableCount is how many changes of one operation a transaction made to
// one table.
type TableCount struct {
	Table string
	Op    Op
	N     int
}

// countTables adds changes to counts.
func countTables(counts []TableCount, changes []Change) []TableCount {
next:
	for i := range changes {
		c := &changes[i]
		for j := range counts {
			if counts[j].Table == c.Table && counts[j].Op == c.Op {
				counts[j].N++
				continue next
			}
		}
		counts = append(counts, TableCount{Table: c.Table, Op: c.Op, N: 1})
	}
	return counts
}

// Reset forwards a new epoch and head to the fan-out.
func (p *Pipeline) Reset(epoch string, head Pos) {
	p.partXID, p.partHead, p.partEvents, p.partTables = 0, Pos{}, 0, p.partTables[:0]
	p.observed = Pos{}
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
	if p.Observe == nil || txn.Head.Compare(p.observed) <= 0 {
		return // not observed, or observed when it was read before
	}
	if p.partXID != txn.XID || len(txn.Changes) > 0 && txn.Changes[0].Pos.Compare(p.partHead) <= 0 {
		// Not the next part of the transaction counted so far: the reader
		// lost the database after handing parts on, and reads from the
		// start again.
		p.partEvents, p.partTables = 0, p.partTables[:0]
	}
	tables := countTables(p.partTables, txn.Changes)
	published := p.partEvents + len(events)
	if txn.More {
		p.partXID, p.partHead, p.partEvents, p.partTables = txn.XID, txn.Head, published, tables
		return
	}
	changes := 0
	for _, t := range tables {
		changes += t.N
	}
	p.partXID, p.partHead, p.partEvents, p.partTables = 0, Pos{}, 0, tables[:0]
	p.observed = txn.Head
	p.Observe(Observed{Changes: changes, Events: published, Tables: tables, CommittedAt: txn.CommittedAt})
}
