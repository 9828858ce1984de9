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
			Name: fmt.Sprintf("%s:%d", c.Table, i), Stream: c.Stream, Pos: c.Pos, Part: uint8(i),
			Data: []byte(c.EntityID), CommittedAt: c.CommittedAt,
		})
	}
	return dst
}

// recordingFanout records every call in order.
type recordingFanout struct {
	calls []string
}

func (f *recordingFanout) Publish(events []Event, head Pos) {
	names := make([]string, len(events))
	for i, ev := range events {
		names[i] = fmt.Sprintf("%s@%s/%d", ev.Name, ev.Stream, ev.Pos.ID)
	}
	f.calls = append(f.calls, fmt.Sprintf("publish [%s] head %d.%d", strings.Join(names, " "), head.Tick, head.ID))
}

func (f *recordingFanout) Reset(epoch string, head Pos) {
	f.calls = append(f.calls, fmt.Sprintf("reset %s %d", epoch, head.Tick))
}

func TestPipelineTxn(t *testing.T) {
	mapper := tableMapper{"one": 1, "two": 2, "none": 0}
	ch := func(table, stream string, id int64) Change {
		return Change{Table: table, Stream: stream, Pos: Pos{Tick: 3, Tx: 20, ID: id}, EntityID: table}
	}
	tests := []struct {
		name    string
		changes []Change
		head    Pos
		want    string
		events  int
	}{
		{
			name:    "one change one event",
			changes: []Change{ch("one", "team:7", 1)},
			head:    Pos{3, 20, 1},
			want:    "publish [one:0@team:7/1] head 3.1",
			events:  1,
		},
		{
			name:    "a transaction's events in one publish, in order",
			changes: []Change{ch("one", "team:7", 1), ch("two", "team:8", 4), ch("one", "team:7", 5)},
			head:    Pos{3, 20, 5},
			want:    "publish [one:0@team:7/1 two:0@team:8/4 two:1@team:8/4 one:0@team:7/5] head 3.5",
			events:  4,
		},
		{
			name:    "a change that maps to nothing still moves the head",
			changes: []Change{ch("none", "team:7", 5)},
			head:    Pos{3, 20, 5},
			want:    "publish [] head 3.5",
		},
		{
			name:    "unmapped changes among mapped ones, the tick's last transaction",
			changes: []Change{ch("none", "team:9", 2), ch("one", "team:7", 3), ch("none", "team:7", 4), ch("two", "user:3", 6)},
			head:    TickEnd(3),
			want:    "publish [one:0@team:7/3 two:0@user:3/6 two:1@user:3/6] head 3.9223372036854775807",
			events:  3,
		},
		{
			name: "a tick's end without a transaction",
			head: TickEnd(4),
			want: "publish [] head 4.9223372036854775807",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fan := &recordingFanout{}
			var observed []string
			at := time.Date(2026, 11, 25, 18, 5, 15, 0, time.UTC)
			p := &Pipeline{Mapper: mapper, Fanout: fan, Observe: func(o Observed) {
				observed = append(observed, fmt.Sprintf("%d %d %s", o.Changes, o.Events, o.CommittedAt.Format(time.RFC3339)))
			}}
			p.Txn(&Txn{XID: 9, CommittedAt: at, Changes: tt.changes, Head: tt.head})
			if want := []string{tt.want}; !slices.Equal(fan.calls, want) {
				t.Errorf("fan-out calls:\n got %q\nwant %q", fan.calls, want)
			}
			wantObserved := []string{fmt.Sprintf("%d %d 2026-11-25T18:05:15Z", len(tt.changes), tt.events)}
			if !slices.Equal(observed, wantObserved) {
				t.Errorf("Observe calls = %q, want %q", observed, wantObserved)
			}
		})
	}
}

// A transaction handed on in parts is published part by part, and observed
// once, after its last part, with the parts' totals.
func TestPipelineTxnInParts(t *testing.T) {
	fan := &recordingFanout{}
	var observed []string
	p := &Pipeline{Mapper: tableMapper{"one": 1}, Fanout: fan, Observe: func(o Observed) {
		observed = append(observed, fmt.Sprintf("%d %d %v", o.Changes, o.Events, o.Tables))
	}}
	ch := func(id int64) Change {
		return Change{Table: "one", Op: OpInsert, Stream: "s", Pos: Pos{1, 3, id}, EntityID: "a"}
	}
	update := ch(3)
	update.Op = OpUpdate
	p.Txn(&Txn{XID: 9, Changes: []Change{ch(1), ch(2)}, Head: Pos{1, 3, 2}, More: true})
	p.Txn(&Txn{XID: 9, Changes: []Change{update}, Head: TickEnd(1)})
	p.Txn(&Txn{XID: 10, Changes: []Change{ch(4)}, Head: TickEnd(2)})
	if len(fan.calls) != 3 {
		t.Errorf("fan-out calls %q, want one per part", fan.calls)
	}
	if want := []string{"3 3 [{one INSERT 2} {one UPDATE 1}]", "1 1 [{one INSERT 1}]"}; !slices.Equal(observed, want) {
		t.Errorf("Observe calls = %q, want %q", observed, want)
	}

	// A reader that lost the database after a part reads the transaction
	// again from its start: what it counted of it before is dropped.
	observed = nil
	at3 := func(id int64) Change { c := ch(id); c.Pos = Pos{3, 5, id}; return c }
	p.Txn(&Txn{XID: 11, Changes: []Change{at3(5), at3(6)}, Head: Pos{3, 5, 6}, More: true})
	p.Txn(&Txn{XID: 11, Changes: []Change{at3(5), at3(6)}, Head: Pos{3, 5, 6}, More: true})
	p.Txn(&Txn{XID: 11, Changes: []Change{at3(7)}, Head: TickEnd(3)})
	if want := []string{"3 3 [{one INSERT 3}]"}; !slices.Equal(observed, want) {
		t.Errorf("after a reread, Observe calls = %q, want %q", observed, want)
	}

	// A reader that lost the database after handing on whole transactions
	// of a tick reads them again: they are published again (sessions drop
	// what they have) but not observed again.
	observed = nil
	at4 := func(id int64) Change { c := ch(id); c.Pos = Pos{4, 6, id}; return c }
	p.Txn(&Txn{XID: 12, Changes: []Change{at4(8)}, Head: Pos{4, 6, 8}})
	p.Txn(&Txn{XID: 12, Changes: []Change{at4(8)}, Head: Pos{4, 6, 8}})
	p.Txn(&Txn{XID: 13, Changes: []Change{at4(9)}, Head: TickEnd(4)})
	if want := []string{"1 1 [{one INSERT 1}]", "1 1 [{one INSERT 1}]"}; !slices.Equal(observed, want) {
		t.Errorf("after whole transactions were read again, Observe calls = %q, want %q", observed, want)
	}
	if len(fan.calls) != 9 {
		t.Errorf("%d fan-out calls, want every transaction published, the repeat too", len(fan.calls))
	}
}

// Subscribers may keep events, so each transaction gets its own slice.
func TestPipelineTxnFreshEventSlice(t *testing.T) {
	var got [][]Event
	fan := &keepingFanout{keep: &got}
	p := &Pipeline{Mapper: tableMapper{"one": 1}, Fanout: fan}
	p.Txn(&Txn{Changes: []Change{{Table: "one", Stream: "s", Pos: Pos{1, 1, 1}, EntityID: "a"}}})
	p.Txn(&Txn{Changes: []Change{{Table: "one", Stream: "s", Pos: Pos{1, 2, 2}, EntityID: "b"}}})
	if len(got) != 2 || got[0][0].Pos.ID != 1 || got[1][0].Pos.ID != 2 {
		t.Fatalf("kept events = %+v, want id 1 then id 2", got)
	}
}

type keepingFanout struct{ keep *[][]Event }

func (f *keepingFanout) Publish(events []Event, _ Pos) { *f.keep = append(*f.keep, events) }
func (f *keepingFanout) Reset(string, Pos)             {}

func TestPipelineReset(t *testing.T) {
	fan := &recordingFanout{}
	p := &Pipeline{Mapper: tableMapper{}, Fanout: fan}
	p.Reset("e2", TickEnd(3))
	if want := []string{"reset e2 3"}; !slices.Equal(fan.calls, want) {
		t.Fatalf("calls = %q, want %q", fan.calls, want)
	}
}
