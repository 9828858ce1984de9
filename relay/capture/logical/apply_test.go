package logical

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// TestApplyStatementPlannedOnce: on the holder's session the statement that
// applies a run of changes keeps one generic plan, whatever the run's
// length; planned for each call's arrays it looks cheaper, so the plan
// cache would otherwise plan it anew at every call.
func TestApplyStatementPlannedOnce(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	if err := prepareSession(ctx, conn, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `create function apply_t(op text, new_j json, old_j json, nulled text[], new_v jsonb, old_v jsonb) returns void language plpgsql cost 10000 as 'begin end'`); err != nil {
		t.Fatal(err)
	}
	m := &pglogrepl.RelationMessage{Namespace: "public", RelationName: "t", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", DataType: pgtype.Int8OID, TypeModifier: -1, Flags: keyColumnFlag},
		{Name: "team", DataType: pgtype.TextOID, TypeModifier: -1},
	}}
	rel := newRelation(m, nil)
	types, _, err := columnTypes(ctx, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	sql := applySQL(rel, "public.apply_t", types)
	// The generic plan's estimate of an unnest of a parameter is 10 rows;
	// a costly row (a wide table's rendering, here the function's cost)
	// makes every shorter run look cheaper planned for its arrays.
	for n := 1; n <= 12; n++ {
		var ops []string
		var news, olds, absent []*string
		for i := range n {
			row := `{"id": "` + string(rune('0'+i%10)) + `", "team": "a"}`
			ops, news, olds, absent = append(ops, "INSERT"), append(news, &row), append(olds, nil), append(absent, nil)
		}
		if _, err := conn.Exec(ctx, sql, ops, news, olds, absent, absent, absent, absent, absent); err != nil {
			t.Fatalf("apply a run of %d: %v", n, err)
		}
	}
	var generic, custom int64
	err = conn.QueryRow(ctx, "select generic_plans, custom_plans from pg_prepared_statements where statement = $1", sql).Scan(&generic, &custom)
	if err != nil {
		t.Fatal(err)
	}
	if custom != 0 || generic != 12 {
		t.Errorf("12 runs applied with %d generic and %d custom plans, want 12 generic and no custom plan", generic, custom)
	}
}

// TestGroupCommitRingsTheTicker: a group commit wakes the ticker in its own
// process while that ticker holds the ticker lock, and otherwise notifies
// the doorbell, also when the lock went to another relay while the group
// committed.
func TestGroupCommitRingsTheTicker(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	if _, err := conn.Exec(ctx, `create schema rowcast; create table rowcast.logical_state (slot text primary key, commit_lsn pg_lsn not null)`); err != nil {
		t.Fatal(err)
	}
	listener, err := pgx.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "listen bell"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		holding []bool // LocalTicker's answers, the last repeated
		wake    bool
		notify  bool
	}{
		{"held throughout", []bool{true}, true, false},
		{"lost while committing", []bool{true, false}, false, true},
		{"held by another relay", []bool{false}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, woken := 0, false
			h := &Holder{o: Options{Slot: "s", Doorbell: "bell",
				LocalTicker: func() bool {
					v := tc.holding[min(calls, len(tc.holding)-1)]
					calls++
					return v
				},
				WakeTicker: func() { woken = true },
			}}
			a := &applier{h: h, db: conn}
			a.open()
			a.committed, a.lastLSN, a.lastEnd = true, 100, 101
			end, err := a.commitGroup(ctx)
			if err != nil || end != 101 {
				t.Fatalf("commitGroup: %v, %v; want 0/65 and no error", end, err)
			}
			if woken != tc.wake {
				t.Errorf("woke the local ticker: %v, want %v", woken, tc.wake)
			}
			// Notifications arrive in commit order: the group's first.
			if _, err := conn.Exec(ctx, "select pg_notify('bell', 'marker')"); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			n, err := listener.WaitForNotification(wctx)
			if err != nil {
				t.Fatal(err)
			}
			if notified := n.Payload == "logical"; notified != tc.notify {
				t.Errorf("first notification %q; want the group's: %v", n.Payload, tc.notify)
			}
			if n.Payload == "logical" {
				if n, err = listener.WaitForNotification(wctx); err != nil || n.Payload != "marker" {
					t.Fatalf("after the group's notification: %v, %v", n, err)
				}
			}
		})
	}
}
