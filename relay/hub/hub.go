// Package hub fans events out to the sessions that follow their streams.
//
// The hub indexes subscribers by stream key (team, user, all) in shards, so
// a broadcast locks only the shard of the event's stream and subscribers do
// not wait for each other. It also keeps the head (the position of the last
// transaction, or part of one, published), which is what a new session's
// position starts from. It knows
// nothing of SQL or wire formats: subscribers frame and queue events
// themselves, and must never block in Deliver.
package hub

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/rowcast/rowcast/relay"
)

// Rescoper is a Subscriber whose streams follow membership events
// (relay.KindMembership, published to a user's stream): before the event is
// delivered, Publish asks Rescope whether the subscriber's team streams
// change, and if it answers true, joins it to the team's stream (ev.Join)
// or removes it from it, at once: the next event is delivered by the new
// subscription. Rescope runs with a hub shard lock held and must not call
// the hub or block.
type Rescoper interface {
	Rescope(ev *relay.Event) bool
	// Subscribed reports whether the subscriber still follows streams:
	// one that left meanwhile (with the streams it had before a join:
	// Subscribe, Move or a membership join) is taken off the joined
	// streams again. It may take the subscriber's lock, never the hub's.
	Subscribed() bool
	// Settle is called once Publish delivered the whole transaction (or
	// part) that moved the subscriber's streams.
	Settle()
}

// Subscriber is one session as the hub sees it.
type Subscriber interface {
	// Deliver hands over one event of a followed stream. Events arrive in
	// position order, and the events of one transaction in the order they
	// were made. Deliver must not block; a subscriber that cannot keep up
	// closes itself.
	Deliver(ev *relay.Event)
	// Reset tells the subscriber the history epoch changed: its positions
	// are void and it should tell its client to resync.
	Reset(epoch string)
}

const shardCount = 32

// Hub is the in-memory fan-out. The zero value is not usable; call New.
type Hub struct {
	seed   maphash.Seed
	shards [shardCount]shard
	// mu orders publishing against subscribing: Publish and Reset hold it
	// exclusively, Subscribe and Head shared, so a subscriber registers
	// between two publishes (transactions, or parts of a large one) and the
	// head it is given is exactly where its deliveries start.
	mu    sync.RWMutex
	epoch string
	head  relay.Pos

	published atomic.Uint64 // events published
	delivered atomic.Uint64 // event deliveries to subscribers

	// follows counts the streams each subscriber follows, so that subs
	// counts subscribers, not Subscribe calls: a session that changes
	// streams (a refreshed token) subscribes again without leaving.
	followMu sync.Mutex
	follows  map[Subscriber]int
	subs     atomic.Int64
}

type shard struct {
	mu   sync.Mutex
	subs map[string]map[Subscriber]struct{}
}

// New returns an empty hub.
func New() *Hub {
	h := &Hub{seed: maphash.MakeSeed(), follows: make(map[Subscriber]int)}
	for i := range h.shards {
		h.shards[i].subs = make(map[string]map[Subscriber]struct{})
	}
	return h
}

func (h *Hub) shard(stream string) *shard {
	return &h.shards[maphash.String(h.seed, stream)%shardCount]
}

// Epoch returns the current history epoch ("" before the first Reset).
func (h *Hub) Epoch() string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.epoch
}

// Head returns the epoch and the head: the position after the last
// transaction published.
func (h *Hub) Head() (epoch string, head relay.Pos) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.epoch, h.head
}

// Subscribe registers s for the given streams and returns the epoch and the
// head at the moment s was registered: every event after the head is
// delivered to s, and none before it. It waits while a transaction is
// being published. The caller must not hold a lock that Deliver takes.
func (h *Hub) Subscribe(s Subscriber, streams []string) (epoch string, head relay.Pos) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.add(s, streams)
	return h.epoch, h.head
}

// add registers s for streams; the caller holds mu (either way). A
// Rescoper that no longer follows streams is taken off them again: it left
// on another goroutine, and its own Unsubscribe may have run before the
// join (a session that closed while it subscribed, changed its streams or
// joined a team).
func (h *Hub) add(s Subscriber, streams []string) {
	added := 0
	for _, st := range streams {
		sh := h.shard(st)
		sh.mu.Lock()
		set := sh.subs[st]
		if set == nil {
			set = make(map[Subscriber]struct{})
			sh.subs[st] = set
		}
		if _, ok := set[s]; !ok {
			set[s] = struct{}{}
			added++
		}
		sh.mu.Unlock()
	}
	h.follow(s, added)
	if r, ok := s.(Rescoper); ok && !r.Subscribed() {
		h.Unsubscribe(s, streams)
	}
}

// Move changes the streams s follows with no transaction published
// meanwhile: change runs with the hub's read lock held (it may take the
// subscriber's own lock, never the hub's) and returns the streams s leaves
// and those it joins, which Move then applies before it releases the lock.
func (h *Hub) Move(s Subscriber, change func() (gone, added []string)) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	gone, added := change()
	h.Unsubscribe(s, gone)
	h.add(s, added)
}

// Unsubscribe removes s from the given streams. It is safe to call for
// streams s does not follow; after it returns no further event for those
// streams is delivered to s.
func (h *Hub) Unsubscribe(s Subscriber, streams []string) {
	removed := 0
	for _, st := range streams {
		sh := h.shard(st)
		sh.mu.Lock()
		if set := sh.subs[st]; set != nil {
			if _, ok := set[s]; ok {
				removed++
				delete(set, s)
			}
			if len(set) == 0 {
				delete(sh.subs, st)
			}
		}
		sh.mu.Unlock()
	}
	h.follow(s, -removed)
}

// follow records that s follows n more streams (fewer when n < 0); a
// subscriber counts in Stats while it follows at least one.
func (h *Hub) follow(s Subscriber, n int) {
	if n == 0 {
		return
	}
	h.followMu.Lock()
	defer h.followMu.Unlock()
	prev := h.follows[s]
	now := prev + n
	if now == 0 {
		delete(h.follows, s)
	} else {
		h.follows[s] = now
	}
	switch {
	case prev <= 0 && now > 0:
		h.subs.Add(1)
	case prev > 0 && now <= 0:
		h.subs.Add(-1)
	}
}

// Publish delivers the events of one transaction, in order, to every
// subscriber of each event's stream, and moves the head to head. It is
// called by one goroutine at a time (the capture's).
func (h *Hub) Publish(events []relay.Event, head relay.Pos) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var moved []Subscriber
	var settle map[Subscriber]bool
	for i := range events {
		ev := &events[i]
		sh := h.shard(ev.Stream)
		sh.mu.Lock()
		n := 0
		for s := range sh.subs[ev.Stream] {
			if ev.Kind == relay.KindMembership {
				if r, ok := s.(Rescoper); ok && r.Rescope(ev) {
					moved = append(moved, s)
				}
			}
			s.Deliver(ev)
			n++
		}
		sh.mu.Unlock()
		h.delivered.Add(uint64(n))
		if len(moved) > 0 {
			team := []string{relay.TeamStream(ev.Team)}
			if settle == nil {
				settle = make(map[Subscriber]bool)
			}
			for _, s := range moved {
				settle[s] = true
				if ev.Join {
					h.add(s, team)
				} else {
					h.Unsubscribe(s, team)
				}
			}
			moved = moved[:0]
		}
	}
	h.head = relay.MaxPos(h.head, head)
	h.published.Add(uint64(len(events)))
	for s := range settle {
		s.(Rescoper).Settle()
	}
}

// Reset replaces the epoch and the head in one step. When the epoch changes
// from a previous one, every subscriber is then told to resync (its Reset,
// called without the hub's locks, may read Head). Call Reset and Publish
// from one goroutine: no transaction is then published until every
// subscriber's Reset has returned, and the head they read is the reset's.
func (h *Hub) Reset(epoch string, head relay.Pos) {
	h.mu.Lock()
	old := h.epoch
	h.epoch, h.head = epoch, head
	var all []Subscriber
	seen := make(map[Subscriber]bool)
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, set := range sh.subs {
			for s := range set {
				if !seen[s] {
					seen[s] = true
					all = append(all, s)
				}
			}
		}
		sh.mu.Unlock()
	}
	h.mu.Unlock()
	if old != "" && old != epoch {
		for _, s := range all {
			s.Reset(epoch)
		}
	}
}

// Stats is a snapshot of the hub's counters.
type Stats struct {
	Published, Delivered uint64
	Subscribers          int64
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{Published: h.published.Load(), Delivered: h.delivered.Load(), Subscribers: h.subs.Load()}
}
