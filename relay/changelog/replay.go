package changelog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/relay"
)

// History serves resume: it replays the changelog after a position through
// a pool it does not own, and answers relay.ErrHistoryExpired where the
// changes after it were pruned (Pruner records per stream what it pruned),
// never with a gap.
type History struct {
	pool *pgxpool.Pool
	page int
}

// NewHistory returns a History on pool; the caller closes the pool.
func NewHistory(pool *pgxpool.Pool) *History { return &History{pool: pool, page: 2000} }

// replaySQL reads a page of the changes after each stream's position, of
// the transactions visible in snapshot $4.
const replaySQL = `select ` + Columns + `
from unnest($1::text[], $2::bigint[]) f (f_stream, f_after)
cross join lateral (
    select * from rowcast.changelog c
    where c.stream = f.f_stream and c.seq > f.f_after and c.seq is not null
      and pg_visible_in_snapshot(c.xid, $4::pg_snapshot)
    order by c.seq limit $3
) c
order by committed_at, xid, id
limit $3`

// Replay implements relay.ChangeHistory (relay.MappedHistory maps what it
// replays for the transports). It reads in pages of whole-or-partial
// transactions; fn sees each change once, in commit order, per stream in
// seq order.
//
// It replays the transactions committed when it starts, once the WAL holds
// them durably (a commit made with synchronous_commit off is visible before
// a crash could still forget it); later ones reach the session live.
func (s *History) Replay(ctx context.Context, from map[string]int64, fn func([]relay.Change) error) error {
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
		if err := WaitFlushed(ctx, s.pool, lsn); err != nil {
			return fmt.Errorf("history replay: %w", err)
		}
	}
	idx := make(map[string]int, len(streams))
	for i, st := range streams {
		idx[st] = i
	}
	var sc Scanner
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
func (s *History) check(ctx context.Context, streams []string, after []int64) error {
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
