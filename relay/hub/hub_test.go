package hub

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/rowcast/rowcast/relay"
)

// recorder is a subscriber that records what it is handed. It is safe for
// concurrent use.
type recorder struct {
	mu     sync.Mutex
	events []string // "stream/id"
	resets []string // epochs
}

func (r *recorder) Deliver(ev *relay.Event) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf("%s/%d", ev.Stream, ev.Pos.ID))
	r.mu.Unlock()
}

func (r *recorder) Reset(epoch string) {
	r.mu.Lock()
	r.resets = append(r.resets, epoch)
	r.mu.Unlock()
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) gotResets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.resets)
}

// ev returns an event of tick 1 whose transaction and id are both id.
func ev(stream string, id int64) relay.Event {
	return relay.Event{Name: "escrow:updated", Entity: "escrow", Stream: stream, Pos: at(id), Data: []byte(`{}`)}
}

func at(id int64) relay.Pos { return relay.Pos{Tick: 1, Tx: id, ID: id} }

// publish publishes a transaction with its last event's position as head.
func publish(h *Hub, events ...relay.Event) {
	h.Publish(events, events[len(events)-1].Pos)
}

func TestSubscribeReturnsHead(t *testing.T) {
	h := New()
	publish(h, ev("team:7", 1), ev("team:7", 2), ev("team:7", 3))
	h.Publish(nil, at(5)) // a transaction that mapped to nothing
	s := &recorder{}
	epoch, head := h.Subscribe(s, []string{"team:7", "team:8", "team:9"})
	if epoch != "" {
		t.Errorf("epoch before any Reset = %q, want empty", epoch)
	}
	if head != at(5) {
		t.Errorf("head = %+v, want %+v", head, at(5))
	}
	if got := s.got(); len(got) != 0 {
		t.Errorf("a new subscriber was handed earlier events: %q", got)
	}
	h.Publish(nil, at(4)) // never back
	if _, head := h.Head(); head != at(5) {
		t.Errorf("head after an older one = %+v, want %+v", head, at(5))
	}

	h.Reset("e1", relay.TickEnd(9))
	epoch, head = h.Subscribe(&recorder{}, []string{"team:7", "team:8"})
	if epoch != "e1" || head != relay.TickEnd(9) {
		t.Errorf("after Reset: epoch %q head %+v, want e1 end of tick 9", epoch, head)
	}
}

func TestPublish(t *testing.T) {
	type sub struct {
		name    string
		streams []string
	}
	tests := []struct {
		name      string
		subs      []sub
		txns      [][]relay.Event
		want      map[string][]string // per subscriber, in order
		delivered uint64
	}{
		{
			name: "only the event's stream, in order",
			subs: []sub{{"a", []string{"team:7"}}, {"b", []string{"team:8"}}, {"c", []string{"team:9"}}},
			txns: [][]relay.Event{
				{ev("team:7", 1), ev("team:8", 2), ev("team:7", 3)},
				{ev("team:7", 4)},
			},
			want: map[string][]string{
				"a": {"team:7/1", "team:7/3", "team:7/4"},
				"b": {"team:8/2"},
				"c": nil,
			},
			delivered: 4,
		},
		{
			name: "subscriber of two streams receives each event once, in publish order",
			subs: []sub{{"a", []string{"team:7", "user:3"}}, {"b", []string{"user:3"}}},
			txns: [][]relay.Event{
				{ev("user:3", 1), ev("team:7", 2), ev("user:3", 3)},
				{ev("team:7", 4), ev("all", 5)},
			},
			want: map[string][]string{
				"a": {"user:3/1", "team:7/2", "user:3/3", "team:7/4"},
				"b": {"user:3/1", "user:3/3"},
			},
			delivered: 6,
		},
		{
			name: "stream listed twice: still once",
			subs: []sub{{"a", []string{"team:7", "team:7"}}},
			txns: [][]relay.Event{{ev("team:7", 1), ev("team:7", 2)}},
			want: map[string][]string{"a": {"team:7/1", "team:7/2"}},
		},
		{
			name: "many subscribers of one stream each get every event",
			subs: []sub{{"a", []string{"all"}}, {"b", []string{"all"}}, {"c", []string{"all", "team:1"}}},
			txns: [][]relay.Event{{ev("all", 1)}, {ev("all", 2)}, {ev("team:1", 3)}},
			want: map[string][]string{
				"a": {"all/1", "all/2"},
				"b": {"all/1", "all/2"},
				"c": {"all/1", "all/2", "team:1/3"},
			},
			delivered: 7,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New()
			recs := map[string]*recorder{}
			for _, s := range tt.subs {
				recs[s.name] = &recorder{}
				h.Subscribe(recs[s.name], s.streams)
			}
			published := 0
			for _, txn := range tt.txns {
				publish(h, txn...)
				published += len(txn)
			}
			for name, want := range tt.want {
				if got := recs[name].got(); !slices.Equal(got, want) {
					t.Errorf("subscriber %s got %q, want %q", name, got, want)
				}
			}
			if st := h.Stats(); tt.delivered != 0 && (st.Published != uint64(published) || st.Delivered != tt.delivered) {
				t.Errorf("stats = %+v, want published %d delivered %d", st, published, tt.delivered)
			}
			if _, head := h.Head(); head != tt.txns[len(tt.txns)-1][len(tt.txns[len(tt.txns)-1])-1].Pos {
				t.Errorf("head = %+v, want the last transaction's", head)
			}
		})
	}
}

func TestPublishSharesTheEvent(t *testing.T) {
	h := New()
	var got []*relay.Event
	a, b := deliverFunc(func(ev *relay.Event) { got = append(got, ev) }), deliverFunc(func(ev *relay.Event) { got = append(got, ev) })
	h.Subscribe(&a, []string{"team:7"})
	h.Subscribe(&b, []string{"team:7"})
	events := []relay.Event{ev("team:7", 1)}
	h.Publish(events, at(1))
	if len(got) != 2 || got[0] != &events[0] || got[1] != &events[0] {
		t.Fatalf("subscribers were handed %p, want the published event %p to both", got, &events[0])
	}
}

type deliverFunc func(*relay.Event)

func (f *deliverFunc) Deliver(ev *relay.Event) { (*f)(ev) }
func (f *deliverFunc) Reset(string)            {}

func TestUnsubscribe(t *testing.T) {
	h := New()
	a, b := &recorder{}, &recorder{}
	h.Subscribe(a, []string{"team:7", "user:3"})
	h.Subscribe(b, []string{"team:7"})
	if n := h.Stats().Subscribers; n != 2 {
		t.Fatalf("subscribers = %d, want 2", n)
	}
	publish(h, ev("team:7", 1), ev("user:3", 2))

	h.Unsubscribe(a, []string{"team:7"}) // a keeps user:3
	publish(h, ev("team:7", 3), ev("user:3", 4))
	h.Unsubscribe(a, []string{"user:3", "team:404"}) // a stream it never followed is fine
	publish(h, ev("team:7", 5), ev("user:3", 6))

	if want := []string{"team:7/1", "user:3/2", "user:3/4"}; !slices.Equal(a.got(), want) {
		t.Errorf("a got %q, want %q", a.got(), want)
	}
	if want := []string{"team:7/1", "team:7/3", "team:7/5"}; !slices.Equal(b.got(), want) {
		t.Errorf("b got %q, want %q", b.got(), want)
	}
	h.Unsubscribe(b, []string{"team:7"})
	h.Unsubscribe(b, []string{"team:7"}) // twice is harmless
	if n := h.Stats().Subscribers; n != 0 {
		t.Errorf("subscribers after unsubscribing all = %d, want 0", n)
	}
	publish(h, ev("team:7", 7))
	if got := b.got(); len(got) != 3 {
		t.Errorf("b got %q after unsubscribing", got)
	}
}

// Stats counts subscribers, however many Subscribe and Unsubscribe calls
// each makes: a session whose refreshed token changes its teams unsubscribes
// from the teams it lost and subscribes to the new ones.
func TestStatsCountsSubscribers(t *testing.T) {
	type call struct {
		sub       int
		subscribe bool
		streams   []string
	}
	tests := []struct {
		name  string
		calls []call
		want  []int64 // Stats().Subscribers after each call
	}{
		{
			name: "subscribe and leave",
			calls: []call{
				{0, true, []string{"all", "team:7"}},
				{1, true, []string{"all"}},
				{0, false, []string{"all", "team:7"}},
				{1, false, []string{"all"}},
			},
			want: []int64{1, 2, 1, 0},
		},
		{
			name: "token refresh: lose a team, gain a team, then leave",
			calls: []call{
				{0, true, []string{"all", "user:3", "team:7"}},
				{0, false, []string{"team:7"}},
				{0, true, []string{"team:8"}},
				{0, true, nil},
				{0, false, []string{"all", "user:3", "team:8"}},
			},
			want: []int64{1, 1, 1, 1, 0},
		},
		{
			name: "token refresh that only adds a team",
			calls: []call{
				{0, true, []string{"all"}},
				{0, false, nil},
				{0, true, []string{"team:9"}},
				{0, false, []string{"all", "team:9"}},
			},
			want: []int64{1, 1, 1, 0},
		},
		{
			name: "subscribing to a followed stream again",
			calls: []call{
				{0, true, []string{"all"}},
				{0, true, []string{"all"}},
				{0, false, []string{"all"}},
			},
			want: []int64{1, 1, 0},
		},
		{
			name: "unsubscribing twice or from unknown streams",
			calls: []call{
				{0, true, []string{"all"}},
				{1, true, []string{"all"}},
				{0, false, []string{"all"}},
				{0, false, []string{"all", "team:404"}},
				{1, false, []string{"team:404"}},
			},
			want: []int64{1, 2, 1, 1, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New()
			subs := []*recorder{{}, {}}
			for i, c := range tt.calls {
				if c.subscribe {
					h.Subscribe(subs[c.sub], c.streams)
				} else {
					h.Unsubscribe(subs[c.sub], c.streams)
				}
				if got := h.Stats().Subscribers; got != tt.want[i] {
					t.Fatalf("after call %d %+v: subscribers = %d, want %d", i, c, got, tt.want[i])
				}
			}
		})
	}
}

// manyStreams returns n stream keys; 200 keys land in more than one of the
// 32 shards with overwhelming probability.
func manyStreams(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func TestReset(t *testing.T) {
	h := New()
	a, b, gone := &recorder{}, &recorder{}, &recorder{}
	h.Subscribe(a, []string{"team:7"})
	h.Subscribe(b, manyStreams("team:", 200)) // in many shards: still one Reset
	h.Subscribe(gone, []string{"team:7"})
	h.Unsubscribe(gone, []string{"team:7"})
	publish(h, ev("team:7", 3), ev("team:9", 4))

	// The first epoch is not a change: nobody resyncs.
	h.Reset("e1", relay.TickEnd(1))
	if h.Epoch() != "e1" {
		t.Fatalf("Epoch() = %q, want e1", h.Epoch())
	}
	for name, r := range map[string]*recorder{"a": a, "b": b} {
		if got := r.gotResets(); len(got) != 0 {
			t.Errorf("%s reset on the first epoch: %q", name, got)
		}
	}

	// The same epoch again (a reconnect to the same database): no resync,
	// head replaced.
	h.Reset("e1", relay.TickEnd(2))
	if got := a.gotResets(); len(got) != 0 {
		t.Errorf("a reset on an unchanged epoch: %q", got)
	}

	h.Reset("e2", relay.TickEnd(1)) // a new history may start lower
	for name, r := range map[string]*recorder{"a": a, "b": b} {
		if got := r.gotResets(); !slices.Equal(got, []string{"e2"}) {
			t.Errorf("%s resets = %q, want exactly one to e2", name, got)
		}
	}
	if got := gone.gotResets(); len(got) != 0 {
		t.Errorf("an unsubscribed session was reset: %q", got)
	}
	epoch, head := h.Subscribe(&recorder{}, []string{"team:7", "team:9"})
	if epoch != "e2" || head != relay.TickEnd(1) {
		t.Errorf("Subscribe after Reset = %q %+v, want e2 end of tick 1: the old head must be replaced", epoch, head)
	}

	// Subscribers stay registered across a Reset.
	publish(h, relay.Event{Stream: "team:7", Pos: relay.Pos{Tick: 2, Tx: 11, ID: 11}})
	if got := a.got(); !slices.Equal(got, []string{"team:7/3", "team:7/11"}) {
		t.Errorf("a got %q, want team:7/3 then team:7/11", got)
	}
}

// posChecker is a session as the hub sees it under concurrency: it records
// what it is handed so the test can check that, from the head Subscribe
// returned, events arrive contiguous and in order.
type posChecker struct {
	mu  sync.Mutex
	ids []int64
}

func (s *posChecker) Deliver(ev *relay.Event) {
	s.mu.Lock()
	s.ids = append(s.ids, ev.Pos.ID)
	s.mu.Unlock()
}

func (s *posChecker) Reset(string) {}

// Every subscriber gets exactly the events after the head Subscribe
// returned, whatever Publish is doing meanwhile: no event at or before it,
// none after it missing.
func TestConcurrentSubscribePublish(t *testing.T) {
	const (
		sessions = 8
		rounds   = 150
		txns     = 2000
	)
	streams := []string{"team:1", "team:2", "user:1", relay.AllStream}
	// stream of each event id, as published
	var mu sync.Mutex
	streamOf := map[int64]string{}
	h := New()
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, sessions)

	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		id := int64(0)
		for i := range txns {
			// Transactions of one to three events over the streams, and
			// some that map to nothing.
			txn := make([]relay.Event, 0, 3)
			for j := range i%3 + 1 {
				st := streams[(i+j)%len(streams)]
				id++
				mu.Lock()
				streamOf[id] = st
				mu.Unlock()
				txn = append(txn, ev(st, id))
			}
			publish(h, txn...)
			if i%7 == 0 {
				id++
				h.Publish(nil, at(id))
			}
		}
	}()

	for g := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := streams[g%2 : g%2+3] // overlapping subsets
			for r := range rounds {
				s := &posChecker{}
				_, head := h.Subscribe(s, mine)
				if r%5 == 0 {
					_, _ = h.Head()
					_ = h.Stats()
				}
				h.Unsubscribe(s, mine)
				_, end := h.Head()
				s.mu.Lock()
				// Per stream, every event published after head, in order,
				// up to the moment the session left that stream (it leaves
				// stream by stream); across streams, in publish order.
				mu.Lock()
				var bad error
				for i := 1; i < len(s.ids) && bad == nil; i++ {
					if s.ids[i] <= s.ids[i-1] {
						bad = fmt.Errorf("out of order: %v", s.ids)
					}
				}
				for _, st := range mine {
					var want, got []int64
					for id := head.ID + 1; id <= end.ID; id++ {
						if streamOf[id] == st {
							want = append(want, id)
						}
					}
					for _, id := range s.ids {
						if streamOf[id] == st {
							got = append(got, id)
						}
					}
					if bad == nil && (len(got) > len(want) || !slices.Equal(got, want[:len(got)])) {
						bad = fmt.Errorf("stream %s: got %v, want a prefix of %v", st, got, want)
					}
				}
				mu.Unlock()
				if bad != nil {
					errs <- fmt.Errorf("session %d round %d after head %d: %w", g, r, head.ID, bad)
					s.mu.Unlock()
					return
				}
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	<-done
	if n := h.Stats().Subscribers; n != 0 {
		t.Errorf("subscribers after every session left = %d, want 0", n)
	}
}

// bufferSub frames each event into a buffer the way a session does (event
// name, position, data) and skips what it already has; the buffer is
// reused, as a writer that flushed it would.
type bufferSub struct {
	mu      sync.Mutex
	streams []string
	last    relay.Pos
	buf     []byte
	frames  int
}

func newBufferSub(streams ...string) *bufferSub {
	return &bufferSub{streams: streams, buf: make([]byte, 0, 4096)}
}

func (s *bufferSub) frame(ev *relay.Event) bool {
	if !slices.Contains(s.streams, ev.Stream) || ev.Pos.Compare(s.last) <= 0 {
		return false
	}
	s.last = ev.Pos
	if len(s.buf) > 3000 {
		s.buf = s.buf[:0]
	}
	s.buf = append(s.buf, `{"type":"event","event":"`...)
	s.buf = append(s.buf, ev.Name...)
	s.buf = append(s.buf, `","position":"`...)
	s.buf = append(s.buf, relay.EncodePosition("e1", s.last)...)
	s.buf = append(s.buf, `","data":`...)
	s.buf = append(s.buf, ev.Data...)
	s.buf = append(s.buf, '}')
	s.frames++
	return true
}

func (s *bufferSub) Deliver(ev *relay.Event) {
	s.mu.Lock()
	s.frame(ev)
	s.mu.Unlock()
}

func (s *bufferSub) Reset(string) {}

// writerSub frames each event into a fresh frame and hands it to its own
// writer goroutine through a bounded queue, dropping the frame when the
// queue is full (a session would then close itself as a slow consumer).
type writerSub struct {
	mu      sync.Mutex
	last    relay.Pos
	queue   chan []byte
	dropped int
	written int // owned by the writer
	bytes   int
}

func (s *writerSub) Deliver(ev *relay.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Pos.Compare(s.last) <= 0 {
		return
	}
	s.last = ev.Pos
	frame := make([]byte, 0, 64+len(ev.Name)+len(ev.Data))
	frame = append(frame, `{"type":"event","event":"`...)
	frame = append(frame, ev.Name...)
	frame = append(frame, `","position":"`...)
	frame = strconv.AppendInt(frame, ev.Pos.ID, 10)
	frame = append(frame, `","data":`...)
	frame = append(frame, ev.Data...)
	frame = append(frame, '}')
	select {
	case s.queue <- frame:
	default:
		s.dropped++
	}
}

func (s *writerSub) Reset(string) {}

func (s *writerSub) write(wg *sync.WaitGroup) {
	defer wg.Done()
	for frame := range s.queue {
		s.written++
		s.bytes += len(frame)
	}
}

var benchData = []byte(`{"entityType":"escrow","entityId":"4211","action":"updated","teamId":"7","userId":"3","escrowId":"4211","changes":{"status":"closed","closing_date":"2026-12-01"},"committedAt":"2026-11-25T18:05:15.123456Z"}`)

func BenchmarkPublishFanout(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("buffer/subs=%d", n), func(b *testing.B) {
			h := New()
			subs := make([]*bufferSub, n)
			for i := range subs {
				subs[i] = newBufferSub("all", "team:7", "user:"+strconv.Itoa(i))
				h.Subscribe(subs[i], subs[i].streams)
			}
			events := []relay.Event{{Name: "escrow:updated", Entity: "escrow", Stream: "team:7", Data: benchData}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				events[0].Pos = at(int64(i + 1))
				h.Publish(events, events[0].Pos)
			}
			b.StopTimer()
			for _, s := range subs {
				if s.frames != b.N {
					b.Fatalf("a subscriber framed %d events, want %d", s.frames, b.N)
				}
			}
		})
		b.Run(fmt.Sprintf("writer/subs=%d", n), func(b *testing.B) {
			h := New()
			subs := make([]*writerSub, n)
			var writers sync.WaitGroup
			for i := range subs {
				subs[i] = &writerSub{queue: make(chan []byte, 256)}
				writers.Add(1)
				go subs[i].write(&writers)
				h.Subscribe(subs[i], []string{"team:7"})
			}
			events := []relay.Event{{Name: "escrow:updated", Entity: "escrow", Stream: "team:7", Data: benchData}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				events[0].Pos = at(int64(i + 1))
				h.Publish(events, events[0].Pos)
			}
			// Drain the writers inside the timed region, so their work and
			// allocations are charged to this run.
			for _, s := range subs {
				close(s.queue)
			}
			writers.Wait()
			b.StopTimer()
			dropped := 0
			for _, s := range subs {
				if s.written+s.dropped != b.N {
					b.Fatalf("a subscriber wrote %d and dropped %d of %d events", s.written, s.dropped, b.N)
				}
				dropped += s.dropped
			}
			b.ReportMetric(float64(dropped)/float64(b.N), "drops/op")
		})
	}
}

func BenchmarkPublishManyStreams(b *testing.B) {
	const streams, perStream = 1000, 10
	h := New()
	keys := manyStreams("team:", streams)
	var subs []*bufferSub
	for _, st := range keys {
		for range perStream {
			s := newBufferSub("all", st)
			subs = append(subs, s)
			h.Subscribe(s, s.streams)
		}
	}
	events := []relay.Event{{Name: "escrow:updated", Entity: "escrow", Data: benchData}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := (i * 7919) % streams // spread over the streams and shards
		events[0].Stream, events[0].Pos = keys[k], at(int64(i+1))
		h.Publish(events, events[0].Pos)
	}
	b.StopTimer()
	frames := 0
	for _, s := range subs {
		frames += s.frames
	}
	if frames != b.N*perStream {
		b.Fatalf("subscribers framed %d events, want %d", frames, b.N*perStream)
	}
}

// Move leaves and joins streams in one step, and holds publishing off
// while the change is worked out.
func TestMove(t *testing.T) {
	h := New()
	a := &recorder{}
	h.Subscribe(a, []string{"team:1", "user:3"})
	published := make(chan struct{})
	h.Move(a, func() (gone, added []string) {
		// A publish started now waits for the move.
		go func() {
			publish(h, ev("team:1", 1), ev("team:2", 2))
			close(published)
		}()
		select {
		case <-published:
			t.Error("a transaction was published while Move worked out its change")
		default:
		}
		return []string{"team:1"}, []string{"team:2"}
	})
	<-published
	if want := []string{"team:2/2"}; !slices.Equal(a.got(), want) {
		t.Errorf("a got %q, want %q", a.got(), want)
	}
	if n := h.Stats().Subscribers; n != 1 {
		t.Errorf("subscribers = %d, want 1", n)
	}
}

// leaver is a Rescoper that leaves the hub while its Move's change runs,
// as a session whose connection ends on another goroutine does (its
// Unsubscribe may run between the change and the join).
type leaver struct {
	recorder
	left bool
}

func (l *leaver) Rescope(*relay.Event) bool { return false }
func (l *leaver) Subscribed() bool          { return !l.left }
func (l *leaver) Settle()                   {}

// A subscriber that left while Move changed its streams is not joined to
// the added streams for good: it would be delivered to, and held, for the
// hub's life.
func TestMoveOfASubscriberThatLeftMeanwhile(t *testing.T) {
	h := New()
	h.Reset("e1", relay.Pos{})
	l := &leaver{}
	h.Subscribe(l, []string{"team:1"})
	h.Move(l, func() (gone, added []string) {
		l.left = true
		h.Unsubscribe(l, []string{"team:1", "team:2"}) // the streams it follows after the change
		return nil, []string{"team:2"}
	})
	if n := h.Stats().Subscribers; n != 0 {
		t.Fatalf("%d subscribers, want none: the one that left is subscribed again", n)
	}
}

// A subscriber that left before its Subscribe reached the hub (its own
// Unsubscribe found nothing to remove) is not registered for good.
func TestSubscribeOfASubscriberThatLeftMeanwhile(t *testing.T) {
	h := New()
	h.Reset("e1", relay.Pos{})
	l := &leaver{left: true}
	h.Subscribe(l, []string{"team:1"})
	if n := h.Stats().Subscribers; n != 0 {
		t.Fatalf("%d subscribers, want none: the one that left is registered", n)
	}
}
