package changelog

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what WaitFlushed needs of a connection or a pool.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// WaitFlushed returns once the server has flushed its WAL through lsn.
//
// PostgreSQL flushes what a commit wrote when it commits synchronously, and
// otherwise within wal_writer_delay; WAL that no commit covers (an aborted
// transaction's, a page pruned by a reader) may wait for the next commit.
// After nudgeAfter without the flush, WaitFlushed commits a one-row write
// synchronously, which flushes everything before it.
func WaitFlushed(ctx context.Context, conn Querier, lsn string) error {
	wait, waited, nudged := time.Millisecond, time.Duration(0), false
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "select pg_current_wal_flush_lsn() >= $1::pg_lsn", lsn).Scan(&ok); err != nil {
			return fmt.Errorf("capture wait for wal flush: %w", err)
		}
		if ok {
			return nil
		}
		if waited >= nudgeAfter && !nudged {
			if _, err := conn.Exec(ctx, nudgeSQL); err != nil {
				return fmt.Errorf("capture flush wal: %w", err)
			}
			nudged = true
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		waited += wait
		wait = min(2*wait, 10*time.Millisecond)
	}
}

// nudgeAfter is how long WaitFlushed waits for PostgreSQL to flush by
// itself.
const nudgeAfter = 10 * time.Millisecond

// nudgeSQL writes and commits synchronously on this server (local: never
// waiting for a synchronous standby, which may be down): the commit
// flushes the WAL through its own record.
const nudgeSQL = `begin; set local synchronous_commit = local; update rowcast.meta set bell = bell; commit`
