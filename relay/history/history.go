// Package history serves resume: it replays the changelog after a position,
// and prunes what is older than the retention, recording per stream what
// was pruned so an older position is answered with resync, never with a gap.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/capture/trigger"
)

// Store reads and prunes the changelog through a pool it does not own.
type Store struct {
	pool *pgxpool.Pool
	page int
}

// New returns a Store on pool; the caller closes the pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool, page: 2000} }

// replaySQL reads a page of the changes after each stream's position, of
// the transactions visible in snapshot $4.
const replaySQL = `select ` + trigger.Columns + `
from unnest($1::text[], $2::bigint[]) f (f_stream, f_after)
cross join lateral (
    select * from rowcast.changelog c
    where c.stream = f.f_stream and c.seq > f.f_after and c.seq is not null
      and pg_visible_in_snapshot(c.xid, $4::pg_snapshot)
    order by c.seq limit $3
) c
order by committed_at, xid, id
limit $3`

// Replay implements relay.History. It reads in pages of whole-or-partial
// transactions; fn sees each change once, in commit order, per stream in
// seq order.
//
// It replays the transactions committed when it starts, once the WAL holds
// them durably (a commit made with synchronous_commit off is visible before
// a crash could still forget it); later ones reach the session live.
func (s *Store) Replay(ctx context.Context, from map[string]int64, fn func([]relay.Change) error) error {
	streams := make([]string, 0, len(from))
	after := make([]int64, 0, len(from))
	for st, seq := range from {
		streams = append(streams, st)
		after = append(after, seq)
	}
	if err := s.check(ctx, streams, after); err != nil {
		return err
	}
	var snap, lsn string
	var durable bool
	if err := s.pool.QueryRow(ctx, `select pg_current_snapshot()::text,
		pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn(), pg_current_wal_insert_lsn()::text`).Scan(&snap, &durable, &lsn); err != nil {
		return fmt.Errorf("history replay: %w", err)
	}
	if !durable {
		if err := trigger.WaitFlushed(ctx, s.pool, lsn); err != nil {
			return fmt.Errorf("history replay: %w", err)
		}
	}
	idx := make(map[string]int, len(streams))
	for i, st := range streams {
		idx[st] = i
	}
	var sc trigger.Scanner
	for {
		rows, err := s.pool.Query(ctx, replaySQL, streams, after, s.page, snap)
		if err != nil {
			return fmt.Errorf("history replay: %w", err)
		}
		var batch []relay.Change
		for rows.Next() {
			ch, err := sc.Scan(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("history replay: %w", err)
			}
			batch = append(batch, ch)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("history replay: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		// A prune between the check and this page could have deleted rows
		// right after a stream's position: the page would then start past a
		// gap. Check again, now that the page is read.
		if err := s.check(ctx, streams, after); err != nil {
			return err
		}
		for _, ch := range batch {
			if i, ok := idx[ch.Stream]; ok && ch.Seq > after[i] {
				after[i] = ch.Seq
			}
		}
		if err := fn(batch); err != nil {
			return err
		}
		if len(batch) < s.page {
			return nil
		}
	}
}

// check answers ErrHistoryExpired when a stream's history after from was
// pruned, or from is ahead of what the database has.
func (s *Store) check(ctx context.Context, streams []string, after []int64) error {
	rows, err := s.pool.Query(ctx, `
select f.stream, f.after, coalesce(s.last_seq, 0), coalesce(p.through, 0)
from unnest($1::text[], $2::bigint[]) f (stream, after)
left join rowcast.streams s on s.stream = f.stream
left join rowcast.pruned p on p.stream = f.stream`, streams, after)
	if err != nil {
		return fmt.Errorf("history check: %w", err)
	}
	var st string
	var from, last, pruned int64
	_, err = pgx.ForEachRow(rows, []any{&st, &from, &last, &pruned}, func() error {
		if from < pruned || from > last {
			return fmt.Errorf("history replay %s after %d (have %d..%d): %w", st, from, pruned, last, relay.ErrHistoryExpired)
		}
		return nil
	})
	return err
}

// Pruner deletes changelog rows older than the retention.
type Pruner struct {
	Pool      *pgxpool.Pool
	Retention time.Duration
	Interval  time.Duration
	Logger    *slog.Logger
}

// Run prunes every Interval until ctx ends, then returns nil. Only one
// replica prunes at a time (a transaction-level advisory lock); errors are
// logged and retried at the next interval.
func (p *Pruner) Run(ctx context.Context) error {
	t := time.NewTicker(p.Interval)
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
			p.Logger.Warn("history prune failed", "err", err)
		case n > 0:
			p.Logger.Debug("history pruned", "rows", n)
		}
	}
}

// Prune deletes the rows committed before now - Retention and records, per
// stream, the highest seq deleted. It returns how many rows it deleted.
func (p *Pruner) Prune(ctx context.Context) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, p.Pool, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, "select pg_try_advisory_xact_lock(hashtext('rowcast.prune'))").Scan(&got); err != nil || !got {
			return err
		}
		return tx.QueryRow(ctx, `
with gone as (
    delete from rowcast.changelog
    where committed_at < now() - $1::interval and seq is not null
    returning stream, seq
), upd as (
    insert into rowcast.pruned as p (stream, through)
    select stream, max(seq) from gone group by stream
    on conflict (stream) do update set through = greatest(p.through, excluded.through)
)
select count(*) from gone`, p.Retention).Scan(&n)
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return 0, fmt.Errorf("history prune: %w", err)
	}
	return n, err
}
