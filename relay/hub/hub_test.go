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
	events []string // "stream/seq"
	resets []string // epochs
}

func (r *recorder) Deliver(ev *relay.Event) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf("%s/%d", ev.Stream, ev.Seq))
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

func ev(stream string, seq int64) relay.Event {
	return relay.Event{Name: "escrow:updated", Entity: "escrow", Stream: stream, Seq: seq, Data: []byte(`{}`)}
}

func TestSubscribeReturnsHeads(t *testing.T) {
	h := New()
	h.Publish([]relay.Event{ev("team:7", 1), ev("team:7", 2), ev("team:7", 3)})
	h.Advance("team:8", 5)
	s := &recorder{}
	epoch, heads := h.Subscribe(s, []string{"team:7", "team:8", "team:9"})
	if epoch != "" {
		t.Errorf("epoch before any Reset = %q, want empty", epoch)
	}
	if want := []int64{3, 5, 0}; !slices.Equal(heads, want) {
		t.Errorf("heads = %v, want %v", heads, want)
	}
	if got := s.got(); len(got) != 0 {
		t.Errorf("a new subscriber was handed earlier events: %q", got)
	}

	h.Reset("e1", map[string]int64{"team:7": 9})
	epoch, heads = h.Subscribe(&recorder{}, []string{"team:7", "team:8"})
	if epoch != "e1" || !slices.Equal(heads, []int64{9, 0}) {
		t.Errorf("after Reset: epoch %q heads %v, want e1 [9 0]", epoch, heads)
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
		heads     map[string]int64
		delivered uint64
	}{
		{
			name: "only the event's stream, in order",
			subs: []sub{{"a", []string{"team:7"}}, {"b", []string{"team:8"}}, {"c", []string{"team:9"}}},
			txns: [][]relay.Event{
				{ev("team:7", 1), ev("team:8", 1), ev("team:7", 2)},
				{ev("team:7", 3)},
			},
			want: map[string][]string{
				"a": {"team:7/1", "team:7/2", "team:7/3"},
				"b": {"team:8/1"},
				"c": nil,
			},
			heads:     map[string]int64{"team:7": 3, "team:8": 1, "team:9": 0},
			delivered: 4,
		},
		{
			name: "subscriber of two streams receives each event once, in publish order",
			subs: []sub{{"a", []string{"team:7", "user:3"}}, {"b", []string{"user:3"}}},
			txns: [][]relay.Event{
				{ev("user:3", 1), ev("team:7", 1), ev("user:3", 2)},
				{ev("team:7", 2), ev("all", 1)},
			},
			want: map[string][]string{
				"a": {"user:3/1", "team:7/1", "user:3/2", "team:7/2"},
				"b": {"user:3/1", "user:3/2"},
			},
			heads:     map[string]int64{"team:7": 2, "user:3": 2, "all": 1},
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
			txns: [][]relay.Event{{ev("all", 1)}, {ev("all", 2)}, {ev("team:1", 1)}},
			want: map[string][]string{
				"a": {"all/1", "all/2"},
				"b": {"all/1", "all/2"},
				"c": {"all/1", "all/2", "team:1/1"},
			},
			heads:     map[string]int64{"all": 2, "team:1": 1},
			delivered: 7,
		},
		{
			name:      "heads never go back",
			txns:      [][]relay.Event{{ev("team:7", 5)}, {ev("team:7", 4)}},
			heads:     map[string]int64{"team:7": 5},
			delivered: 0,
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
				h.Publish(txn)
				published += len(txn)
			}
			for name, want := range tt.want {
				if got := recs[name].got(); !slices.Equal(got, want) {
					t.Errorf("subscriber %s got %q, want %q", name, got, want)
				}
			}
			for st, want := range tt.heads {
				if got := h.Heads([]string{st})[0]; got != want {
					t.Errorf("head of %s = %d, want %d", st, got, want)
				}
			}
			if tt.heads != nil {
				if st := h.Stats(); st.Published != uint64(published) || st.Delivered != tt.delivered {
					t.Errorf("stats = %+v, want published %d delivered %d", st, published, tt.delivered)
				}
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
	h.Publish(events)
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
	h.Publish([]relay.Event{ev("team:7", 1), ev("user:3", 1)})

	h.Unsubscribe(a, []string{"team:7"}) // a keeps user:3
	h.Publish([]relay.Event{ev("team:7", 2), ev("user:3", 2)})
	h.Unsubscribe(a, []string{"user:3", "team:404"}) // a stream it never followed is fine
	h.Publish([]relay.Event{ev("team:7", 3), ev("user:3", 3)})

	if want := []string{"team:7/1", "user:3/1", "user:3/2"}; !slices.Equal(a.got(), want) {
		t.Errorf("a got %q, want %q", a.got(), want)
	}
	if want := []string{"team:7/1", "team:7/2", "team:7/3"}; !slices.Equal(b.got(), want) {
		t.Errorf("b got %q, want %q", b.got(), want)
	}
	h.Unsubscribe(b, []string{"team:7"})
	h.Unsubscribe(b, []string{"team:7"}) // twice is harmless
	if n := h.Stats().Subscribers; n != 0 {
		t.Errorf("subscribers after unsubscribing all = %d, want 0", n)
	}
	h.Publish([]relay.Event{ev("team:7", 4)})
	if got := b.got(); len(got) != 3 {
		t.Errorf("b got %q after unsubscribing", got)
	}
	// Heads outlive subscribers.
	if heads := h.Heads([]string{"team:7", "user:3"}); !slices.Equal(heads, []int64{4, 3}) {
		t.Errorf("heads = %v, want [4 3]", heads)
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

func TestAdvance(t *testing.T) {
	h := New()
	s := &recorder{}
	h.Subscribe(s, []string{"team:7"})
	h.Advance("team:7", 4)
	h.Advance("team:7", 2) // never back
	h.Advance("team:8", 1)
	if got := s.got(); len(got) != 0 {
		t.Errorf("Advance delivered %q", got)
	}
	if heads := h.Heads([]string{"team:7", "team:8", "team:9"}); !slices.Equal(heads, []int64{4, 1, 0}) {
		t.Errorf("heads = %v, want [4 1 0]", heads)
	}
	if _, heads := h.Subscribe(&recorder{}, []string{"team:7"}); heads[0] != 4 {
		t.Errorf("Subscribe head = %d, want 4", heads[0])
	}
	if st := h.Stats(); st.Published != 0 || st.Delivered != 0 {
		t.Errorf("stats after Advance = %+v, want nothing published", st)
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
	h.Publish([]relay.Event{ev("team:7", 3), ev("team:9", 4)})

	// The first epoch is not a change: nobody resyncs.
	h.Reset("e1", map[string]int64{"team:7": 3, "team:9": 4})
	if h.Epoch() != "e1" {
		t.Fatalf("Epoch() = %q, want e1", h.Epoch())
	}
	for name, r := range map[string]*recorder{"a": a, "b": b} {
		if got := r.gotResets(); len(got) != 0 {
			t.Errorf("%s reset on the first epoch: %q", name, got)
		}
	}

	// The same epoch again (a reconnect to the same database): no resync,
	// heads replaced.
	h.Reset("e1", map[string]int64{"team:7": 5})
	if got := a.gotResets(); len(got) != 0 {
		t.Errorf("a reset on an unchanged epoch: %q", got)
	}

	h.Reset("e2", map[string]int64{"team:7": 10, "team:8": 2})
	for name, r := range map[string]*recorder{"a": a, "b": b} {
		if got := r.gotResets(); !slices.Equal(got, []string{"e2"}) {
			t.Errorf("%s resets = %q, want exactly one to e2", name, got)
		}
	}
	if got := gone.gotResets(); len(got) != 0 {
		t.Errorf("an unsubscribed session was reset: %q", got)
	}
	if heads := h.Heads([]string{"team:7", "team:8", "team:9"}); !slices.Equal(heads, []int64{10, 2, 0}) {
		t.Errorf("heads after Reset = %v, want [10 2 0]: the old heads must be replaced", heads)
	}
	epoch, heads := h.Subscribe(&recorder{}, []string{"team:7", "team:9"})
	if epoch != "e2" || !slices.Equal(heads, []int64{10, 0}) {
		t.Errorf("Subscribe after Reset = %q %v, want e2 [10 0]", epoch, heads)
	}

	// Subscribers stay registered across a Reset.
	h.Publish([]relay.Event{ev("team:7", 11)})
	if got := a.got(); !slices.Equal(got, []string{"team:7/3", "team:7/11"}) {
		t.Errorf("a got %q, want team:7/3 then team:7/11", got)
	}
}

// seqChecker is a session as the hub sees it under concurrency: it records
// seqs per stream so the test can check that, from the heads Subscribe
// returned, each stream's events arrive contiguous and in order.
type seqChecker struct {
	mu   sync.Mutex
	seqs map[string][]int64
}

func (s *seqChecker) Deliver(ev *relay.Event) {
	s.mu.Lock()
	s.seqs[ev.Stream] = append(s.seqs[ev.Stream], ev.Seq)
	s.mu.Unlock()
}

func (s *seqChecker) Reset(string) {}

func TestConcurrentSubscribePublish(t *testing.T) {
	const (
		publishers = 1 // Publish is called by one goroutine at a time
		sessions   = 8
		rounds     = 150
		txns       = 2000
	)
	streams := []string{"team:1", "team:2", "user:1", relay.AllStream}
	h := New()
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, sessions)

	wg.Add(publishers)
	go func() {
		defer wg.Done()
		defer close(done)
		seq := map[string]int64{}
		for i := range txns {
			// Transactions of one to three events over the streams.
			txn := make([]relay.Event, 0, 3)
			for j := range i%3 + 1 {
				st := streams[(i+j)%len(streams)]
				seq[st]++
				txn = append(txn, ev(st, seq[st]))
			}
			h.Publish(txn)
			if i%7 == 0 {
				h.Advance("team:3", int64(i)) // a stream nobody follows
			}
		}
	}()

	for g := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := streams[g%2 : g%2+3] // overlapping subsets
			for r := range rounds {
				s := &seqChecker{seqs: map[string][]int64{}}
				_, heads := h.Subscribe(s, mine)
				if r%5 == 0 {
					_ = h.Heads(mine)
					_ = h.Stats()
				}
				h.Unsubscribe(s, mine)
				s.mu.Lock()
				for i, st := range mine {
					for k, seq := range s.seqs[st] {
						if want := heads[i] + int64(k) + 1; seq != want {
							errs <- fmt.Errorf("session %d round %d: stream %s after head %d got %v", g, r, st, heads[i], s.seqs[st])
							s.mu.Unlock()
							return
						}
					}
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
	want := map[string]int64{}
	for i := range txns {
		for j := range i%3 + 1 {
			want[streams[(i+j)%len(streams)]]++
		}
	}
	for st, n := range want {
		if got := h.Heads([]string{st})[0]; got != n {
			t.Errorf("head of %s = %d, want %d", st, got, n)
		}
	}
}

// bufferSub frames each event into a buffer the way a session does (event
// name, position, data) and skips what it already has; the buffer is
// reused, as a writer that flushed it would.
type bufferSub struct {
	mu      sync.Mutex
	streams []string
	last    []int64
	buf     []byte
	frames  int
}

func newBufferSub(streams ...string) *bufferSub {
	return &bufferSub{streams: streams, last: make([]int64, len(streams)), buf: make([]byte, 0, 4096)}
}

func (s *bufferSub) frame(ev *relay.Event) bool {
	i := slices.Index(s.streams, ev.Stream)
	if i < 0 || ev.Seq <= s.last[i] {
		return false
	}
	s.last[i] = ev.Seq
	if len(s.buf) > 3000 {
		s.buf = s.buf[:0]
	}
	s.buf = append(s.buf, `{"type":"event","event":"`...)
	s.buf = append(s.buf, ev.Name...)
	s.buf = append(s.buf, `","position":"`...)
	s.buf = append(s.buf, relay.EncodePosition("e1", s.streams, func(i int) int64 { return s.last[i] })...)
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
	last    int64
	queue   chan []byte
	dropped int
	written int // owned by the writer
	bytes   int
}

func (s *writerSub) Deliver(ev *relay.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Seq <= s.last {
		return
	}
	s.last = ev.Seq
	frame := make([]byte, 0, 64+len(ev.Name)+len(ev.Data))
	frame = append(frame, `{"type":"event","event":"`...)
	frame = append(frame, ev.Name...)
	frame = append(frame, `","position":"`...)
	frame = strconv.AppendInt(frame, ev.Seq, 10)
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
				events[0].Seq = int64(i + 1)
				h.Publish(events)
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
				events[0].Seq = int64(i + 1)
				h.Publish(events)
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
	seqs := make([]int64, streams)
	events := []relay.Event{{Name: "escrow:updated", Entity: "escrow", Data: benchData}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := (i * 7919) % streams // spread over the streams and shards
		seqs[k]++
		events[0].Stream, events[0].Seq = keys[k], seqs[k]
		h.Publish(events)
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
