package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/rowcast/rowcast/config"
	rowclient "github.com/rowcast/rowcast/relay/client"
)

// noteIDs reads event frames until the connection closes and returns the
// note ids of note:created events in arrival order, and the close code.
func readNotes(t *testing.T, c *client) ([]int, int) {
	t.Helper()
	var ids []int
	for {
		f, err := c.read(20 * time.Second)
		if err != nil {
			var ce *rowclient.CloseError
			if errors.As(err, &ce) {
				return ids, ce.Code
			}
			t.Fatalf("read: %v", err)
		}
		switch f.Type {
		case "event":
			var d struct {
				EntityID string `json:"entityId"`
			}
			_ = json.Unmarshal(f.Data, &d)
			var id int
			fmt.Sscan(d.EntityID, &id)
			ids = append(ids, id)
		case "resumed":
			return ids, 0
		}
	}
}

func TestSlowConsumerClosed4008ThenResumesWithoutLoss(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Sessions.QueueSize = 16 })
	tok := userToken(t, "2", 1)
	c := e.connect(tok)
	const n = 300
	// 300 notes of 100 kB in one transaction: far more than the socket
	// buffers hold while the client reads nothing.
	e.exec(`insert into notes (id, team_id, entity_type, entity_id, body)
		select g, 1, 'lead', g, repeat('x', 100000) from generate_series(1, $1) g`, n)
	first, code := readNotes(t, c)
	if code != 4008 {
		t.Fatalf("close code %d, want 4008 (slow consumer)", code)
	}
	if len(first) >= n {
		t.Fatalf("received all %d events before the close; the queue never overflowed", len(first))
	}
	c2, err := e.dial(tok, "since="+c.last, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := c2.next(); w.Type != "welcome" {
		t.Fatalf("got %s", w.Raw)
	}
	rest, _ := readNotes(t, c2)
	all := append(first, rest...)
	if len(all) != n {
		t.Fatalf("got %d events in all (%d before the close), want %d exactly once", len(all), len(first), n)
	}
	for i, id := range all {
		if id != i+1 {
			t.Fatalf("event %d is note %d: lost, duplicated or reordered", i, id)
		}
	}
}

func TestDatabaseRestartKeepsSessions(t *testing.T) {
	e := startRelay(t, nil)
	emb := pg.Embedded()
	if emb == nil {
		t.Skip("outside PostgreSQL server: cannot restart it")
	}
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name) values (1, 'before')")
	c.event("lead:created")

	ctx := context.Background()
	if err := emb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t, e, http.StatusServiceUnavailable)
	if err := emb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.db.Reset() // the test's own pool holds dead connections
	// Written before the relay has reconnected: it must still arrive.
	e.exec("insert into leads (team_id, first_name) values (1, 'after')")
	f := c.event("lead:created")
	if name := f.data()["lead"].(map[string]any)["first_name"]; name != "after" {
		t.Fatalf("got %v", name)
	}
	waitReady(t, e, http.StatusOK)
}

// waitReady polls /readyz until it answers want.
func waitReady(t *testing.T, e *env, want int) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		resp, err := http.Get("http://" + e.relay.Addr() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("/readyz never answered %d", want)
		}
	}
}

// versionWatcher records, per escrow, the versions a session saw.
type versionWatcher struct {
	mu   sync.Mutex
	seen map[string][]int
}

func (w *versionWatcher) record(f frame) {
	if f.Event != "escrow:updated" {
		return
	}
	var d struct {
		EntityID string `json:"entityId"`
		Changes  struct {
			Version *int `json:"version"`
		} `json:"changes"`
	}
	if json.Unmarshal(f.Data, &d) != nil || d.Changes.Version == nil {
		return
	}
	w.mu.Lock()
	w.seen[d.EntityID] = append(w.seen[d.EntityID], *d.Changes.Version)
	w.mu.Unlock()
}

// TestOrderingOracle: 16 concurrent writers bump versions of hot rows in
// two teams, some transactions touching both teams, some rolling back, some
// sleeping while holding locks. Every session must see, per row, versions
// 2, 3, …, N exactly; one session disconnects in the middle and resumes.
func TestOrderingOracle(t *testing.T) { orderingOracle(t, nil) }

func orderingOracle(t *testing.T, tweak func(*config.Config)) {
	e := startRelay(t, tweak)
	ctx := context.Background()
	type watched struct {
		c     *client
		w     *versionWatcher
		teams []int
	}
	mk := func(user string, teams ...int) *watched {
		return &watched{c: e.connect(userToken(t, user, teams...)), w: &versionWatcher{seen: map[string][]int{}}, teams: teams}
	}
	sessions := []*watched{mk("1", 1), mk("4", 2), mk("2", 1, 2), mk("3", 1, 2)}
	rows := hotRows(t, e) // team → escrow ids
	// Drain the created events.
	for _, s := range sessions {
		for range 4 * len(s.teams) {
			s.c.event("escrow:created")
		}
	}
	resumer := sessions[3]
	stopReading := make(chan struct{})
	// Live sessions read until the end marker of each of their teams (a
	// lead written after every writer finished); the resumer until its
	// connection is closed in the middle.
	var live, resumerDone sync.WaitGroup
	for i, s := range sessions {
		wg := &live
		if i == 3 {
			wg = &resumerDone
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			markers := 0
			for markers < len(s.teams) {
				f, err := s.c.read(60 * time.Second)
				if err != nil {
					if i != 3 {
						t.Errorf("session %d: %v", i, err)
					}
					return
				}
				if f.Event == "lead:created" {
					markers++
				}
				s.w.record(f)
			}
		}()
	}

	const writers, perWriter = 16, 80
	g, gctx := errgroup.WithContext(ctx)
	var done atomic.Int64
	for w := 0; w < writers; w++ {
		g.Go(func() error {
			rnd := rand.New(rand.NewPCG(uint64(w), 99))
			for i := 0; i < perWriter; i++ {
				a := rows[1+rnd.IntN(2)][rnd.IntN(4)]
				b := rows[1+rnd.IntN(2)][rnd.IntN(4)]
				if b < a {
					a, b = b, a
				}
				err := pgx.BeginFunc(gctx, e.db, func(tx pgx.Tx) error {
					if _, err := tx.Exec(gctx, "update escrows set version = version + 1 where id = $1", a); err != nil {
						return err
					}
					if rnd.IntN(4) == 0 {
						if _, err := tx.Exec(gctx, "select pg_sleep(0.005)"); err != nil {
							return err
						}
					}
					if rnd.IntN(3) == 0 && a != b {
						if _, err := tx.Exec(gctx, "update escrows set version = version + 1 where id = $1", b); err != nil {
							return err
						}
					}
					if rnd.IntN(8) == 0 {
						return errRollback
					}
					return nil
				})
				if err != nil && !errors.Is(err, errRollback) {
					return err
				}
				if done.Add(1) == writers*perWriter/2 {
					close(stopReading)
				}
			}
			return nil
		})
	}
	// Disconnect the resumer in the middle, then resume with its position.
	<-stopReading
	resumer.c.drop()
	resumerDone.Wait()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	e.exec("insert into leads (team_id, first_name) values (1, 'end'), (2, 'end')")
	live.Wait()
	final := map[string]int{}
	r, err := e.db.Query(ctx, "select id::text, version from escrows where property_address = 'hot'")
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var v int
	if _, err := pgx.ForEachRow(r, []any{&id, &v}, func() error { final[id] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	// Resume the resumer and read everything it missed.
	rc, err := e.dial(userToken(t, "3", 1, 2), "since="+resumer.c.last, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := rc.next(); f.Type != "welcome" {
		t.Fatalf("got %s", f.Raw)
	}
	for {
		f := rc.next()
		if f.Type == "resumed" {
			break
		}
		resumer.w.record(f)
	}
	for i, s := range sessions {
		for _, team := range s.teams {
			for _, id := range rows[team] {
				got := s.w.seen[id]
				for k, v := range got {
					if v != k+2 {
						t.Fatalf("session %d escrow %s: versions %v: want 2..%d in order, once each", i, id, got, final[id])
					}
				}
				if len(got) != final[id]-1 {
					t.Fatalf("session %d escrow %s: saw %d versions, want %d (final %d)", i, id, len(got), final[id]-1, final[id])
				}
			}
		}
	}
}

var errRollback = errors.New("rollback on purpose")

// hotRows creates the oracle tests' hot rows: four escrows (version 1) in
// each of teams 1 and 2; it returns their ids by team.
func hotRows(t *testing.T, e *env) map[int][]string {
	t.Helper()
	rows := map[int][]string{}
	for team := 1; team <= 2; team++ {
		for range 4 {
			var id int64
			if err := e.db.QueryRow(context.Background(), `insert into escrows (team_id, property_address, city, state, zip_code, purchase_price)
				values ($1, 'hot', 'Austin', 'TX', '1', 1) returning id`, team).Scan(&id); err != nil {
				t.Fatal(err)
			}
			rows[team] = append(rows[team], fmt.Sprint(id))
		}
	}
	return rows
}
