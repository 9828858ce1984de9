package changelog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pruner deletes changelog rows older than the retention. Set its fields
// before Run or Prune and do not change them after.
type Pruner struct {
	// Pool is the database; the caller closes it. Required.
	Pool *pgxpool.Pool
	// Retention is how long a committed change is kept. Zero or negative
	// keeps none: every tick recorded so far is pruned, and a relay that
	// had not read one yet starts a new history epoch (every session
	// resyncs); use it in tests only.
	Retention time.Duration
	// Interval is how often Run prunes. If set to 0 (or less), the default
	// of 1 minute is used.
	Interval time.Duration
	// Logger receives prune failures (Warn) and counts (Debug). If nil,
	// nothing is logged.
	Logger *slog.Logger
}

// DefaultPruneInterval is the Interval a Pruner uses when it has none.
const DefaultPruneInterval = time.Minute

// Run prunes every Interval until ctx ends, then returns nil. Only one
// replica prunes at a time (a transaction-level advisory lock); errors are
// logged and retried at the next interval.
func (p *Pruner) Run(ctx context.Context) error {
	interval, log := p.Interval, p.Logger
	if interval <= 0 {
		interval = DefaultPruneInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := p.Prune(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("history prune failed", "err", err)
		case n > 0:
			log.Debug("history pruned", "rows", n)
		}
	}
}

// Prune deletes the rows of the transactions committed before now -
// Retention: the batches of every tick up to the last one recorded before
// then, and the ticks before that one (its snapshot still bounds the next
// tick's batch). It records, per stream, the last tick that held a deleted
// row, and returns how many rows it deleted. It also deletes what finished
// transactions left in rowcast.gone (the teams of deleted team_from
// parents, which a transaction reads only while it runs).
func (p *Pruner) Prune(ctx context.Context) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, p.Pool, func(tx pgx.Tx) error {
		// Committed locally, as the replay's tick (see History.Replay).
		if _, err := tx.Exec(ctx, "set local synchronous_commit = local"); err != nil {
			return err
		}
		// A prune may delete many rows: a statement timeout set for the
		// database or the role would fail it at every interval, and the
		// history would grow without end.
		if _, err := tx.Exec(ctx, "set local statement_timeout = 0"); err != nil {
			return err
		}
		var got bool
		if err := tx.QueryRow(ctx, "select pg_try_advisory_xact_lock(hashtext('rowcast.prune'))").Scan(&got); err != nil || !got {
			return err
		}
		if _, err := tx.Exec(ctx, "delete from rowcast.gone where xid < pg_snapshot_xmin(pg_current_snapshot())"); err != nil {
			return err
		}
		return tx.QueryRow(ctx, pruneSQL, p.Retention).Scan(&n)
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return 0, fmt.Errorf("history prune: %w", err)
	}
	return n, err
}

// pruneSQL deletes up to the cut: the last tick recorded before now - $1.
// A deleted row's tick is the first whose snapshot shows its transaction.
const pruneSQL = `
with cut as (
    select tick, snap from rowcast.ticks where at < now() - $1::interval order by at desc, tick desc limit 1
), gone as (
    delete from rowcast.changelog c using cut
    where c.xid < pg_snapshot_xmax(cut.snap) and pg_visible_in_snapshot(c.xid, cut.snap)
    returning c.stream, c.xid
), per as (
    select g.stream, max(coalesce(
        (select t.tick from rowcast.ticks t where t.snap_xmax > g.xid and pg_visible_in_snapshot(g.xid, t.snap)
         order by t.snap_xmax, t.tick limit 1),
        (select tick from cut))) as through
    from (select distinct stream, xid from gone) g group by g.stream
), upd as (
    insert into rowcast.pruned as p (stream, through) select stream, through from per
    on conflict (stream) do update set through = greatest(p.through, excluded.through)
), old as (
    delete from rowcast.ticks t using cut where t.tick < cut.tick
)
select count(*) from gone`
