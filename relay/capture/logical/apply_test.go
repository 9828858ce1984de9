package logical

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/rowcast/rowcast/relay/capture/changelog"
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

// TestSessionReadCommittedNoTimeout: the holder's session runs read committed
// whatever the database's default isolation, so the group tick after each
// COMMIT takes its snapshot after rowcast.tick's lock; and with no
// statement timeout, whatever the database's.
func TestSessionReadCommittedNoTimeout(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	if _, err := conn.Exec(ctx, "do $$ begin execute format('alter database %I set default_transaction_isolation = ''repeatable read''', current_database()); "+
		"execute format('alter database %I set statement_timeout = 1', current_database()); end $$"); err != nil {
		t.Fatal(err)
	}
	holder, err := pgx.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if err := prepareSession(ctx, holder, time.Minute); err != nil {
		t.Fatal(err)
	}
	var iso string
	if err := holder.QueryRow(ctx, "show transaction_isolation").Scan(&iso); err != nil || iso != "read committed" {
		t.Errorf("the holder's session runs %q (%v), want read committed", iso, err)
	}
	// A group of a large source transaction takes as long as it takes.
	var timeout string
	if err := holder.QueryRow(ctx, "show statement_timeout").Scan(&timeout); err != nil || timeout != "0" {
		t.Errorf("the holder's statement_timeout is %q (%v), want 0", timeout, err)
	}
}

// TestGroupCommitRingsTheTicker: a group commit wakes the ticker in its own
// process while that ticker holds the ticker lock, and otherwise notifies
// the doorbell, also when the lock went to another relay while the group
// committed.
func TestGroupCommitRingsTheTicker(t *testing.T) {
	conn, listener := groupDB(t)
	ctx := t.Context()
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
			h := &Holder{o: Options{Slot: "s", Doorbell: "bell", InstallLock: "rowcast.install",
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
			if rang := rangFirst(t, conn, listener); rang != tc.notify {
				t.Errorf("the group rang the doorbell: %v, want %v", rang, tc.notify)
			}
		})
	}
}

// TestGroupCommitRecordsItsTick: with a Ticker, a group commit records its
// tick after its COMMIT, in the same round trip, and rings no ticker; when
// the server refuses the tick, the group is committed all the same (its
// end returned for acknowledgement) and rings the ticker instead (here the
// doorbell, another relay's ticker ticking), and group ticks pause.
func TestGroupCommitRecordsItsTick(t *testing.T) {
	conn, listener := groupDB(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name, body string
		ticked     bool
	}{
		{"recorded", "select 7::bigint", true},
		{"refused", "select 1 / 0::bigint", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Exec(ctx, "delete from rowcast.logical_state; create or replace function rowcast.tick(boolean) returns bigint language sql as '"+tc.body+"'"); err != nil {
				t.Fatal(err)
			}
			woken := false
			tk := changelog.NewTicker(conn.Config().ConnString(), changelog.TickerOptions{})
			h := &Holder{o: Options{Slot: "s", InstallLock: "rowcast.install", Ticker: tk, Doorbell: "bell",
				LocalTicker: func() bool { return false }, WakeTicker: func() { woken = true }}}
			a := &applier{h: h, db: conn}
			a.prepareTicks(ctx)
			if !a.prepared {
				t.Fatal("group tick statements not prepared")
			}
			a.open()
			a.committed, a.lastLSN, a.lastEnd = true, 100, 101
			end, err := a.commitGroup(ctx)
			if err != nil || end != 101 {
				t.Fatalf("commitGroup: %v, %v; want 101 and no error", end, err)
			}
			var lsn string
			if err := conn.QueryRow(ctx, "select commit_lsn::text from rowcast.logical_state where slot = 's'").Scan(&lsn); err != nil || lsn != "0/64" {
				t.Fatalf("logical_state %q, %v: the group did not commit", lsn, err)
			}
			if woken {
				t.Error("woke the local ticker, which does not tick")
			}
			if rang := rangFirst(t, conn, listener); rang == tc.ticked {
				t.Errorf("the group rang the doorbell: %v, want %v", rang, !tc.ticked)
			}
			if tk.GroupTicks() != tc.ticked || a.prepared != tc.ticked {
				t.Errorf("group ticks on: %v, prepared: %v; want %v", tk.GroupTicks(), a.prepared, tc.ticked)
			}
		})
	}
}

// groupDB connects to a new database holding groupSchema, and a second
// connection there that listens on the doorbell "bell".
func groupDB(t *testing.T) (conn, listener *pgx.Conn) {
	t.Helper()
	conn = connect(t)
	ctx := t.Context()
	if _, err := conn.Exec(ctx, groupSchema); err != nil {
		t.Fatal(err)
	}
	listener, err := pgx.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close(context.WithoutCancel(ctx)) })
	if _, err := listener.Exec(ctx, "listen bell"); err != nil {
		t.Fatal(err)
	}
	return conn, listener
}

// rangFirst reports whether the group just committed rang the doorbell:
// notifications arrive in commit order, so its ring comes before a marker
// sent now. It reads up to the marker.
func rangFirst(t *testing.T, conn, listener *pgx.Conn) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "select pg_notify('bell', 'marker')"); err != nil {
		t.Fatal(err)
	}
	rang := false
	for {
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Payload == "marker" {
			return rang
		}
		rang = rang || n.Payload == "logical"
	}
}

// groupSchema is what a group touches of the rowcast schema.
const groupSchema = `create schema rowcast;
create table rowcast.logical_state (slot text primary key, commit_lsn pg_lsn not null);
create table rowcast.holder_nulls (tbl text primary key, columns text[] not null)`

// TestGroupWaitsForInstall: a group takes the install lock shared, so no
// install (which holds it exclusively) commits while the group is open;
// and a group that waited for an install runs the functions as that
// install replaced them, not as its backend had cached them.
func TestGroupWaitsForInstall(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	_, err := conn.Exec(ctx, groupSchema+`; create table seen (v text);
		create function f() returns void language plpgsql as $$ begin insert into seen values ('v1'); end $$;
		select f()`) // cached by the holder's backend
	if err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	install, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = install.Exec(ctx, `select pg_advisory_xact_lock(hashtext('rowcast.install'));
		create or replace function f() returns void language plpgsql as $$ begin insert into seen values ('v2'); end $$`)
	if err != nil {
		t.Fatal(err)
	}

	a := &applier{h: &Holder{o: Options{Slot: "s", InstallLock: "rowcast.install"}}, db: conn}
	a.open()
	a.queueSQL("select f()")
	sent := make(chan error, 1)
	go func() { _, _, err := a.send(ctx, nil); sent <- err }()
	// Ready: the group waits for the install's lock.
	for waiting := false; !waiting; {
		err := install.QueryRow(ctx, "select exists (select 1 from pg_locks where locktype = 'advisory' and not granted)").Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-sent:
			t.Fatalf("the group ran while an install held the lock (%v)", err)
		default:
		}
	}
	if err := install.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// The group is open: an install cannot take the lock.
	var free bool
	if err := other.QueryRow(ctx, "select pg_try_advisory_lock(hashtext('rowcast.install'))").Scan(&free); err != nil {
		t.Fatal(err)
	}
	if free {
		t.Error("an install took the lock while a group was open")
	}
	if _, err := conn.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	var seen []string
	if err := other.QueryRow(ctx, "select array_agg(v order by ctid) from seen").Scan(&seen); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "v1,v2" {
		t.Errorf("the group ran %v; want the function the install committed while the group waited (v2)", seen[1:])
	}
}
