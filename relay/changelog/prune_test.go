package changelog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/changelog"
)

// TestPrune: Prune deletes what committed before the retention, records per
// stream the highest seq it deleted, and a replay from below it is answered
// with ErrHistoryExpired, from it with what is left.
func TestPrune(t *testing.T) {
	d := newDB(t)
	d.exec("insert into items (id, team_id) values (1, 7), (2, 7), (3, 8)")
	d.exec("update rowcast.changelog set committed_at = now() - interval '2 hours'")
	d.exec("insert into items (id, team_id) values (4, 7)")

	p := &changelog.Pruner{Pool: d.pool, Retention: time.Hour}
	n, err := p.Prune(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("pruned %d rows, want 3", n)
	}
	if left := d.queryInt("select count(*) from rowcast.changelog"); left != 1 {
		t.Errorf("%d rows left, want 1", left)
	}
	if got := d.queryInt("select through from rowcast.pruned where stream = 'team:7'"); got != 2 {
		t.Errorf("team:7 pruned through %d, want 2", got)
	}
	if got := d.queryInt("select through from rowcast.pruned where stream = 'team:8'"); got != 1 {
		t.Errorf("team:8 pruned through %d, want 1", got)
	}

	h := changelog.NewHistory(d.pool)
	noop := func([]relay.Change) error { return nil }
	if err := h.Replay(t.Context(), map[string]int64{"team:7": 1}, noop); !errors.Is(err, relay.ErrHistoryExpired) {
		t.Errorf("replay after a pruned seq: %v, want ErrHistoryExpired", err)
	}
	var got []relay.Change
	err = h.Replay(t.Context(), map[string]int64{"team:7": 2, "team:8": 1}, func(chs []relay.Change) error {
		got = append(got, chs...)
		return nil
	})
	if err != nil {
		t.Fatalf("replay from what was pruned: %v", err)
	}
	if len(got) != 1 || got[0].Stream != "team:7" || got[0].Seq != 3 {
		t.Fatalf("replayed\n%swant team:7 #3", describe(got))
	}

	// A second Prune finds nothing more and keeps the record.
	if n, err := p.Prune(t.Context()); err != nil || n != 0 {
		t.Errorf("second prune: %d, %v; want 0, nil", n, err)
	}
	if got := d.queryInt("select through from rowcast.pruned where stream = 'team:7'"); got != 2 {
		t.Errorf("team:7 pruned through %d after a second prune, want 2", got)
	}
}

// TestPrunerDefaults: a Pruner with no Interval and no Logger runs (on the
// documented one-minute default) and stops when its context ends; with an
// Interval and no Logger it prunes and logs nowhere.
func TestPrunerDefaults(t *testing.T) {
	d := newDB(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := (&changelog.Pruner{Pool: d.pool}).Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}

	d.exec("insert into items (id, team_id) values (1, 7)")
	ctx, cancel = context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- (&changelog.Pruner{Pool: d.pool, Interval: time.Millisecond}).Run(ctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for d.queryInt("select count(*) from rowcast.pruned") == 0 {
		select {
		case <-tick.C:
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		case <-deadline:
			t.Fatal("nothing pruned after 10s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
