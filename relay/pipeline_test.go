package relay

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// tableMapper maps a change to as many events as its table's entry says
// (zero for tables it does not list), naming them "<table>:<n>".
type tableMapper map[string]int

func (m tableMapper) Map(dst []Event, c *Change) []Event {
	for i := range m[c.Table] {
		dst = append(dst, Event{
			Name: fmt.Sprintf("%s:%d", c.Table, i), Stream: c.Stream, Seq: c.Seq,
			Data: []byte(c.EntityID), CommittedAt: c.CommittedAt,
		})
	}
	return dst
}

// recordingFanout records every call in order, and the heads a hub would
// hold, so tests can check what a subscriber arriving at any moment sees.
type recordingFanout struct {
	calls []string
	heads map[string]int64
	// lost lists events published at or below their stream's head: a
	// session that subscribed just before would drop them as already seen.
	lost []string
}

func (f *recordingFanout) advance(stream string, seq int64) {
	if f.heads == nil {
		f.heads = make(map[string]int64)
	}
	f.heads[stream] = max(f.heads[stream], seq)
}

func (f *recordingFanout) Publish(events []Event) {
	names := make([]string, len(events))
	for i, ev := range events {
		names[i] = fmt.Sprintf("%s@%s/%d", ev.Name, ev.Stream, ev.Seq)
		if ev.Seq <= f.heads[ev.Stream] {
			f.lost = append(f.lost, names[i])
		}
		f.advance(ev.Stream, ev.Seq)
	}
	f.calls = append(f.calls, "publish "+strings.Join(names, " "))
}

func (f *recordingFanout) Advance(stream string, seq int64) {
	f.calls = append(f.calls, fmt.Sprintf("advance %s/%d", stream, seq))
	f.advance(stream, seq)
}

func (f *recordingFanout) Reset(epoch string, heads map[string]int64) {
	f.calls = append(f.calls, "reset "+epoch)
}

func TestPipelineTxn(t *testing.T) {
	mapper := tableMapper{"one": 1, "two": 2, "none": 0}
	ch := func(table, stream string, seq int64) Change {
		return Change{Table: table, Stream: stream, Seq: seq, EntityID: table}
	}
	tests := []struct {
		name    string
		changes []Change
		want    []string
		events  int
	}{
		{
			name:    "one change one event",
			changes: []Change{ch("one", "team:7", 1)},
			want:    []string{"publish one:0@team:7/1"},
			events:  1,
		},
		{
			name:    "a transaction's events in one publish, in order",
			changes: []Change{ch("one", "team:7", 1), ch("two", "team:8", 4), ch("one", "team:7", 2)},
			want:    []string{"publish one:0@team:7/1 two:0@team:8/4 two:1@team:8/4 one:0@team:7/2"},
			events:  4,
		},
		{
			name:    "a change that maps to nothing advances its stream",
			changes: []Change{ch("none", "team:7", 5)},
			want:    []string{"advance team:7/5"},
		},
		{
			name:    "unmapped changes among mapped ones",
			changes: []Change{ch("none", "team:9", 2), ch("one", "team:7", 3), ch("none", "team:7", 4), ch("two", "user:3", 1)},
			want: []string{
				"publish one:0@team:7/3 two:0@user:3/1 two:1@user:3/1",
				"advance team:9/2",
				"advance team:7/4",
			},
			events: 3,
		},
		{
			name: "empty transaction",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fan := &recordingFanout{}
			var observed []string
			at := time.Date(2026, 11, 25, 18, 5, 15, 0, time.UTC)
			p := &Pipeline{Mapper: mapper, Fanout: fan, Observe: func(changes, events int, committedAt time.Time) {
				observed = append(observed, fmt.Sprintf("%d %d %s", changes, events, committedAt.Format(time.RFC3339)))
			}}
			p.Txn(&Txn{XID: 9, CommittedAt: at, Changes: tt.changes})
			// Order between calls is TestPipelineTxnNeverAdvancesPastUnpublishedEvent's
			// concern; here each call's content counts.
			slices.Sort(fan.calls)
			slices.Sort(tt.want)
			if !slices.Equal(fan.calls, tt.want) {
				t.Errorf("fan-out calls:\n got %q\nwant %q", fan.calls, tt.want)
			}
			wantObserved := []string{fmt.Sprintf("%d %d 2026-11-25T18:05:15Z", len(tt.changes), tt.events)}
			if !slices.Equal(observed, wantObserved) {
				t.Errorf("Observe calls = %q, want %q", observed, wantObserved)
			}
		})
	}
}

// A change that maps to nothing must not move its stream's head past an
// event of the same transaction that is not yet published: a session
// subscribing in between would take the head as its position and drop the
// event as already sent.
func TestPipelineTxnNeverAdvancesPastUnpublishedEvent(t *testing.T) {
	fan := &recordingFanout{}
	p := &Pipeline{Mapper: tableMapper{"one": 1}, Fanout: fan}
	p.Txn(&Txn{Changes: []Change{
		{Table: "one", Stream: "team:7", Seq: 4},
		{Table: "none", Stream: "team:7", Seq: 5},
		{Table: "one", Stream: "team:8", Seq: 1},
	}})
	if len(fan.lost) > 0 {
		t.Fatalf("published at or below the stream head (calls %q): %q", fan.calls, fan.lost)
	}
	if fan.heads["team:7"] != 5 || fan.heads["team:8"] != 1 {
		t.Errorf("heads after the transaction = %v, want team:7=5 team:8=1", fan.heads)
	}
}

// Subscribers may keep events, so each transaction gets its own slice.
func TestPipelineTxnFreshEventSlice(t *testing.T) {
	var got [][]Event
	fan := &keepingFanout{keep: &got}
	p := &Pipeline{Mapper: tableMapper{"one": 1}, Fanout: fan}
	p.Txn(&Txn{Changes: []Change{{Table: "one", Stream: "s", Seq: 1, EntityID: "a"}}})
	p.Txn(&Txn{Changes: []Change{{Table: "one", Stream: "s", Seq: 2, EntityID: "b"}}})
	if len(got) != 2 || got[0][0].Seq != 1 || got[1][0].Seq != 2 {
		t.Fatalf("kept events = %+v, want seq 1 then seq 2", got)
	}
}

type keepingFanout struct{ keep *[][]Event }

func (f *keepingFanout) Publish(events []Event)         { *f.keep = append(*f.keep, events) }
func (f *keepingFanout) Advance(string, int64)          {}
func (f *keepingFanout) Reset(string, map[string]int64) {}

func TestPipelineReset(t *testing.T) {
	fan := &recordingFanout{}
	p := &Pipeline{Mapper: tableMapper{}, Fanout: fan}
	p.Reset("e2", map[string]int64{"team:7": 3})
	if want := []string{"reset e2"}; !slices.Equal(fan.calls, want) {
		t.Fatalf("calls = %q, want %q", fan.calls, want)
	}
}
