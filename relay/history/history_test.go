package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/rowcast/rowcast/relay"
)

// batchHistory is a ChangeHistory that replays fixed batches, ignoring from.
type batchHistory [][]relay.Change

func (h batchHistory) Replay(_ context.Context, _ []string, _ relay.Position, fn func([]relay.Change) error) error {
	for _, b := range h {
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}

// Mapped maps every change with its Mapper, in order, keeps the
// batches, and skips a batch that maps to nothing.
func TestMappedMapsInOrder(t *testing.T) {
	h := Mapped{Mapper: tableMapper{"a": 1, "b": 2}, Changes: batchHistory{
		{{Stream: "s", Pos: relay.Pos{Tick: 1, Tx: 9, ID: 1}, Table: "a"}, {Stream: "s", Pos: relay.Pos{Tick: 1, Tx: 9, ID: 2}, Table: "b"}},
		{{Stream: "s", Pos: relay.Pos{Tick: 1, Tx: 9, ID: 3}, Table: "none"}},
		{{Stream: "s", Pos: relay.Pos{Tick: 1, Tx: 9, ID: 4}, Table: "none"}, {Stream: "s", Pos: relay.Pos{Tick: 1, Tx: 9, ID: 5}, Table: "a"}},
	}}
	var got [][]string
	err := h.Replay(context.Background(), []string{"s"}, relay.Position{}, func(events []relay.Event) error {
		var names []string
		for _, ev := range events {
			names = append(names, fmt.Sprintf("%s@%d", ev.Name, ev.Pos.ID))
		}
		got = append(got, names)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"a:0@1", "b:0@2", "b:1@2"}, {"a:0@5"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches %q, want %q", got, want)
	}
}

// An error from fn ends the replay and is returned as it is.
func TestMappedReturnsFnError(t *testing.T) {
	h := Mapped{Mapper: tableMapper{"a": 1}, Changes: batchHistory{
		{{Stream: "s", Pos: relay.Pos{Tick: 1, Tx: 9, ID: 1}, Table: "a"}}, {{Stream: "s", Pos: relay.Pos{Tick: 1, Tx: 9, ID: 2}, Table: "a"}},
	}}
	stop := errors.New("stop")
	calls := 0
	err := h.Replay(context.Background(), nil, relay.Position{}, func([]relay.Event) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Replay = %v after %d calls, want %v after 1", err, calls, stop)
	}
}

// tableMapper maps a change to as many events as its table's entry says
// (zero for tables it does not list), naming them "<table>:<n>".
type tableMapper map[string]int

func (m tableMapper) Map(dst []relay.Event, c *relay.Change) []relay.Event {
	for i := range m[c.Table] {
		dst = append(dst, relay.Event{Name: fmt.Sprintf("%s:%d", c.Table, i), Stream: c.Stream, Pos: c.Pos, Part: uint8(i)})
	}
	return dst
}
