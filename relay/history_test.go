package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// batchHistory is a ChangeHistory that replays fixed batches, ignoring from.
type batchHistory [][]Change

func (h batchHistory) Replay(_ context.Context, _ []string, _ Pos, fn func([]Change) error) error {
	for _, b := range h {
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}

// MappedHistory maps every change with its Mapper, in order, keeps the
// batches, and skips a batch that maps to nothing.
func TestMappedHistoryMapsInOrder(t *testing.T) {
	h := MappedHistory{Mapper: tableMapper{"a": 1, "b": 2}, Changes: batchHistory{
		{{Stream: "s", Pos: Pos{Tick: 1, Tx: 9, ID: 1}, Table: "a"}, {Stream: "s", Pos: Pos{Tick: 1, Tx: 9, ID: 2}, Table: "b"}},
		{{Stream: "s", Pos: Pos{Tick: 1, Tx: 9, ID: 3}, Table: "none"}},
		{{Stream: "s", Pos: Pos{Tick: 1, Tx: 9, ID: 4}, Table: "none"}, {Stream: "s", Pos: Pos{Tick: 1, Tx: 9, ID: 5}, Table: "a"}},
	}}
	var got [][]string
	err := h.Replay(context.Background(), []string{"s"}, Pos{}, func(events []Event) error {
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
func TestMappedHistoryReturnsFnError(t *testing.T) {
	h := MappedHistory{Mapper: tableMapper{"a": 1}, Changes: batchHistory{
		{{Stream: "s", Pos: Pos{Tick: 1, Tx: 9, ID: 1}, Table: "a"}}, {{Stream: "s", Pos: Pos{Tick: 1, Tx: 9, ID: 2}, Table: "a"}},
	}}
	stop := errors.New("stop")
	calls := 0
	err := h.Replay(context.Background(), nil, Pos{}, func([]Event) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Replay = %v after %d calls, want %v after 1", err, calls, stop)
	}
}
