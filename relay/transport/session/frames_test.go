package session

import (
	"testing"

	"github.com/rowcast/rowcast/relay"
)

// One event, many sessions: the frame is built once per event and epoch.
func TestFrameCacheBuildsOncePerEvent(t *testing.T) {
	var c FrameCache
	builds := 0
	build := func(s string) func() []byte {
		return func() []byte { builds++; return []byte(s) }
	}
	a, b := &relay.Event{Name: "a"}, &relay.Event{Name: "b"}
	first := c.Get(a, "e1", build("a1"))
	for range 3 {
		if got := c.Get(a, "e1", build("other")); &got[0] != &first[0] {
			t.Fatalf("a second session of the same event got another frame %q", got)
		}
	}
	if builds != 1 {
		t.Fatalf("built %d times for one event, want 1", builds)
	}
	if got := string(c.Get(a, "e2", build("a2"))); got != "a2" {
		t.Errorf("another epoch got %q, want a frame of its own", got)
	}
	if got := string(c.Get(b, "e2", build("b2"))); got != "b2" {
		t.Errorf("another event got %q, want its own frame", got)
	}
}
