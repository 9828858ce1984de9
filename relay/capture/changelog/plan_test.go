package changelog_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// unanalyzedChangelog fills d's changelog with 50,000 rows that autovacuum
// never analyzes: a table without statistics, as after a fresh install.
func unanalyzedChangelog(d *db) {
	d.t.Helper()
	d.exec("alter table rowcast.changelog set (autovacuum_enabled = false)")
	d.exec(`insert into rowcast.changelog (stream, tbl, op, entity_id, row_data)
		select 'team:' || g % 20, 'public.items', 'U', g::text, jsonb_build_object('id', g, 'pad', repeat('x', 300))
		from generate_series(1, 50000) g`)
}

// TestBatchLooksTransactionsUp: the reader's batch query (and the ticker's
// read of the tick it records) looks the changelog and the ticks up by
// their indexes, never reading a table whole, planned for its parameters
// or generic (as the reader runs it), while the tables have no statistics
// yet (a fresh install before
// autovacuum's first analyze): written as "xid in (select
// pg_snapshot_xip(…))", PostgreSQL planned a sequential scan of the
// changelog per tick, 1.3 s a poll at 100,000 rows.
func TestBatchLooksTransactionsUp(t *testing.T) {
	d := newDB(t)
	unanalyzedChangelog(d)
	d.exec("alter table rowcast.ticks set (autovacuum_enabled = false)")
	d.exec(`insert into rowcast.ticks (tick, snap, snap_xmax)
		select g, pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot()) from generate_series(2, 100000) g`)
	d.exec("prepare batch(bigint, bigint) as " + changelog.BatchSQL)
	d.exec("prepare offer as " + changelog.OfferSQL)
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		d.exec("set plan_cache_mode = " + mode)
		for _, q := range []string{"batch(0, 256)", "offer"} {
			rows, err := d.conn.Query(t.Context(), "explain execute "+q, pgx.QueryExecModeSimpleProtocol)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			plan := strings.Join(lines, "\n")
			// rowcast.meta is one row.
			if strings.Contains(strings.ReplaceAll(plan, "Seq Scan on meta", ""), "Seq Scan") {
				t.Errorf("%s: %s reads a whole table:\n%s", mode, q, plan)
			}
		}
	}
}

// TestTickLooksTransactionsUp: rowcast.tick() too looks up the
// transactions in progress at the last tick by the index, on a changelog
// without statistics (the counter of sequential scans of the table, as
// the ticking transaction sees it, stays at zero).
func TestTickLooksTransactionsUp(t *testing.T) {
	d := newDB(t)
	ctx := t.Context()
	unanalyzedChangelog(d)
	d.exec("select rowcast.tick()")
	open := tickAroundOpen(d, 1)
	var xip int
	if err := d.conn.QueryRow(ctx, "select cardinality(array(select pg_snapshot_xip(snap))) from rowcast.ticks order by tick desc limit 1").Scan(&xip); err != nil {
		t.Fatal(err)
	}
	if xip == 0 {
		t.Fatal("the last tick shows no transaction in progress")
	}
	if err := open.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// A connection of its own: a backend's table counters include its
	// earlier transactions' until they are flushed (every second at most).
	// Its plans are generic, as the ticker's are after its first calls.
	conn := connect(t, d.url)
	if _, err := conn.Exec(ctx, "set plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	tx, tick := tickIn(t, conn, pgx.TxOptions{})
	if tick == nil {
		t.Fatal("no tick for the transaction committed since the last one")
	}
	var scans int64
	if err := tx.QueryRow(ctx, "select seq_scan from pg_stat_xact_all_tables where relid = 'rowcast.changelog'::regclass").Scan(&scans); err != nil {
		t.Fatal(err)
	}
	if scans != 0 {
		t.Errorf("rowcast.tick() read the whole changelog %d times", scans)
	}
}

// TestTickSkipsTransactionsInProgress: rowcast.tick() looks up, of the
// transactions in progress at the last tick, only those that have become
// visible since: one still in progress has its rows' index entries visited
// at every tick otherwise (a 100,000-row import made each tick take
// 100 ms). Counted as the index scans of the changelog in the ticking
// transaction: one for the transactions that began since the last tick,
// one per transaction of the last tick's xip that has become visible.
func TestTickSkipsTransactionsInProgress(t *testing.T) {
	d := newDB(t)
	ctx := t.Context()
	d.exec("select rowcast.tick()")
	tickAroundOpen(d, 100)

	conn := connect(t, d.url) // table counters of its own (TestTickLooksTransactionsUp)
	// Repeatable read: the tick's snapshot is the transaction's, which the
	// count below sees too.
	tx, tick := tickIn(t, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if tick != nil {
		t.Fatalf("tick %d recorded with nothing new committed", *tick)
	}
	var scans, visible int64
	err := tx.QueryRow(ctx, `select (select idx_scan from pg_stat_xact_all_tables where relid = 'rowcast.changelog'::regclass),
		(select count(*) from pg_snapshot_xip((select snap from rowcast.ticks order by tick desc limit 1)) x
		 where pg_visible_in_snapshot(x, pg_current_snapshot()))`).Scan(&scans, &visible)
	if err != nil {
		t.Fatal(err)
	}
	if scans != 1+visible {
		t.Errorf("rowcast.tick() scanned the changelog's indexes %d times, want %d: once, and once per transaction of the last tick's xip that became visible (%d), not for the one still in progress",
			scans, 1+visible, visible)
	}
}

// tickAroundOpen records a tick while a transaction that inserted rows
// items is in progress (in the tick's xip), and returns that transaction,
// rolled back when the test ends unless it is committed.
func tickAroundOpen(d *db, rows int) pgx.Tx {
	d.t.Helper()
	ctx := d.t.Context()
	open, err := d.pool.Begin(ctx)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { open.Rollback(context.Background()) })
	if _, err := open.Exec(ctx, "insert into items (id, team_id) select g, 1 from generate_series(1, $1::int) g", rows); err != nil {
		d.t.Fatal(err)
	}
	d.exec("insert into items (id, team_id) values (0, 1)") // so that the tick is recorded
	d.exec("select rowcast.tick()")
	return open
}

// tickIn calls rowcast.tick() in a transaction on conn, begun with o and
// rolled back when the test ends, and returns the transaction and the tick.
func tickIn(t *testing.T, conn *pgx.Conn, o pgx.TxOptions) (pgx.Tx, *int64) {
	t.Helper()
	tx, err := conn.BeginTx(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) })
	var tick *int64
	if err := tx.QueryRow(t.Context(), "select rowcast.tick()").Scan(&tick); err != nil {
		t.Fatal(err)
	}
	return tx, tick
}
