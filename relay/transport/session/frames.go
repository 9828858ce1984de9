package session

import (
	"sync"

	"github.com/rowcast/rowcast/relay"
)

// FrameCache holds a transport's frame of the event delivered last. A
// position is the event's own place in the global order, the same for every
// session of an epoch, so an event's frame is too: the hub hands one event
// to its sessions one after another, and all but the first reuse the frame.
// Holding the event keeps it alive, so its address cannot stand for another
// event. The zero value is ready; it is safe for concurrent use.
type FrameCache struct {
	mu    sync.Mutex
	ev    *relay.Event
	epoch string
	frame []byte
}

// Get returns the frame of ev in epoch, building it with build when the
// cache holds another. Callers must never modify a frame it returns.
func (c *FrameCache) Get(ev *relay.Event, epoch string, build func() []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ev != ev || c.epoch != epoch {
		c.ev, c.epoch, c.frame = ev, epoch, build()
	}
	return c.frame
}
