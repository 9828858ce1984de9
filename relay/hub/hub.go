// Package hub fans events out to the sessions that follow their streams.
//
// The hub indexes subscribers by stream key (team, user, all) in shards, so
// a broadcast locks only the shard of the event's stream and subscribing
// does not stop the world. It also keeps each stream's head (the last seq
// published), which is what a new session's position starts from. It knows
// nothing of SQL or wire formats: subscribers frame and queue events
// themselves, and must never block in Deliver.
package hub

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/rowcast/rowcast/relay"
)

// Subscriber is one session as the hub sees it.
type Subscriber interface {
	// Deliver hands over one event of a followed stream. Events of one
	// stream arrive in seq order, and the events of one transaction in the
	// order they were made. Deliver must not block; a subscriber that cannot
	// keep up closes itself.
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
	// resetMu makes Reset atomic: Reset holds it exclusively, everything
	// that reads or moves heads holds it shared.
	resetMu sync.RWMutex
	epoch   atomic.Pointer[string]

	published atomic.Uint64 // events published
	delivered atomic.Uint64 // event deliveries to subscribers

	// follows counts the streams each subscriber follows, so that subs
	// counts subscribers, not Subscribe calls: a session that changes
	// streams (a refreshed token) subscribes again without leaving.
	mu      sync.Mutex
	follows map[Subscriber]int
	subs    atomic.Int64
}

type shard struct {
	mu    sync.Mutex
	subs  map[string]map[Subscriber]struct{}
	heads map[string]int64
}

// New returns an empty hub.
func New() *Hub {
	h := &Hub{seed: maphash.MakeSeed(), follows: make(map[Subscriber]int)}
	for i := range h.shards {
		h.shards[i].subs = make(map[string]map[Subscriber]struct{})
		h.shards[i].heads = make(map[string]int64)
	}
	empty := ""
	h.epoch.Store(&empty)
	return h
}

func (h *Hub) shard(stream string) *shard {
	return &h.shards[maphash.String(h.seed, stream)%shardCount]
}

// Epoch returns the current history epoch ("" before the first Reset).
func (h *Hub) Epoch() string { return *h.epoch.Load() }

// Subscribe registers s for the given streams and returns the epoch and,
// per stream, the head at the moment s was registered: every event after
// those heads is delivered to s. The caller must not hold a lock that
// Deliver takes, since events may be delivered before Subscribe returns.
func (h *Hub) Subscribe(s Subscriber, streams []string) (epoch string, heads []int64) {
	h.resetMu.RLock()
	defer h.resetMu.RUnlock()
	heads = make([]int64, len(streams))
	added := 0
	for i, st := range streams {
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
		heads[i] = sh.heads[st]
		sh.mu.Unlock()
	}
	h.follow(s, added)
	return h.Epoch(), heads
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
	h.mu.Lock()
	defer h.mu.Unlock()
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

// Heads returns the current head of each stream.
func (h *Hub) Heads(streams []string) []int64 {
	h.resetMu.RLock()
	defer h.resetMu.RUnlock()
	out := make([]int64, len(streams))
	for i, st := range streams {
		sh := h.shard(st)
		sh.mu.Lock()
		out[i] = sh.heads[st]
		sh.mu.Unlock()
	}
	return out
}

// Publish delivers the events of one transaction, in order, to every
// subscriber of each event's stream, and advances the streams' heads. It is
// called by one goroutine at a time (the capture's).
func (h *Hub) Publish(events []relay.Event) {
	h.resetMu.RLock()
	defer h.resetMu.RUnlock()
	for i := range events {
		ev := &events[i]
		sh := h.shard(ev.Stream)
		sh.mu.Lock()
		if ev.Seq > sh.heads[ev.Stream] {
			sh.heads[ev.Stream] = ev.Seq
		}
		n := 0
		for s := range sh.subs[ev.Stream] {
			s.Deliver(ev)
			n++
		}
		sh.mu.Unlock()
		h.delivered.Add(uint64(n))
	}
	h.published.Add(uint64(len(events)))
}

// Advance records a stream head without an event (a change that mapped to
// nothing still moves its stream forward).
func (h *Hub) Advance(stream string, seq int64) {
	h.resetMu.RLock()
	defer h.resetMu.RUnlock()
	h.advance(stream, seq)
}

func (h *Hub) advance(stream string, seq int64) {
	sh := h.shard(stream)
	sh.mu.Lock()
	if seq > sh.heads[stream] {
		sh.heads[stream] = seq
	}
	sh.mu.Unlock()
}

// Reset replaces the epoch and every head in one step: no Subscribe sees a
// new epoch with old or missing heads. When the epoch changes from a
// previous one, every subscriber is then told to resync.
func (h *Hub) Reset(epoch string, heads map[string]int64) {
	h.resetMu.Lock()
	old := h.Epoch()
	h.epoch.Store(&epoch)
	var all []Subscriber
	seen := make(map[Subscriber]bool)
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		sh.heads = make(map[string]int64, len(heads)/shardCount+1)
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
	for st, seq := range heads {
		h.advance(st, seq)
	}
	h.resetMu.Unlock()
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
