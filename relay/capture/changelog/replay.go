package changelog

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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
	page int   // rows per page
	span int64 // ticks of the first window (see Replay)
}

// NewHistory returns a History on pool; the caller closes the pool.
func NewHistory(pool *pgxpool.Pool) *History { return &History{pool: pool, page: 2000, span: 64} }

// replaySQL reads a page ($6 rows) of the changes of streams $1 after
// position ($2, $3, $4), in ticks up to $5: the rows of tick $2 after the
// position ($2 below $7, the oldest tick kept, has none left), and those of
// the transactions not visible in tick $7's snapshot (or $2's, the later)
// and visible in tick $5's, each placed in the first tick whose snapshot
// shows it. $8 is the transaction id of the change at the position when
// known (0 when not): its rows up to the position are left out before
// anything else, so the pages of one large transaction read only what is
// left of it. Each transaction is placed (its tick and number) once, and
// the placing is materialized: inlined, it ran once per row, and a page
// of a 10,000-row transaction took 40 s instead of 0.4.
const replaySQL = `with
lo as (select snap from rowcast.ticks where tick = greatest($2::bigint, $7::bigint)),
hi as (select snap, snap_xmax from rowcast.ticks where tick = $5::bigint),
cur as (select t.snap, p.snap as prev, t.at from rowcast.ticks t join rowcast.ticks p on p.tick = t.tick - 1
    where t.tick = $2 and $2 > $7 and $3::bigint < 9223372036854775807),
later as (
    select c.* from rowcast.changelog c, lo, hi
    where c.stream = any($1::text[]) and c.xid >= pg_snapshot_xmin(lo.snap) and c.xid < hi.snap_xmax
      and not pg_visible_in_snapshot(c.xid, lo.snap) and pg_visible_in_snapshot(c.xid, hi.snap)
      and (c.xid <> $8::text::xid8 or c.id > $4)
),
within as (
    select c.* from rowcast.changelog c, cur
    where c.stream = any($1) and c.xid >= pg_snapshot_xmin(cur.prev) and c.xid < pg_snapshot_xmax(cur.snap)
      and not pg_visible_in_snapshot(c.xid, cur.prev) and pg_visible_in_snapshot(c.xid, cur.snap)
      and (c.xid <> $8::text::xid8 or c.id > $4)
),
-- Each transaction is placed once, not once per row: its tick (the first
-- whose snapshot shows it; tick $2 for those of within) and its number in
-- the order, the highest id it wrote in any stream.
txns as (
    select w.xid, $2::bigint as tick from (select distinct xid from within) w
    union all
    select l.xid, (select t.tick from rowcast.ticks t where t.snap_xmax > l.xid and pg_visible_in_snapshot(l.xid, t.snap)
                   order by t.snap_xmax, t.tick limit 1)
    from (select distinct xid from later) l
),
placed as materialized (
    select x.tick, (select max(m.id) from rowcast.changelog m where m.xid = x.xid) as tx, x.xid
    from txns x
)
select p.tick, p.tx, coalesce(c.origin_at, (select t.at from rowcast.ticks t where t.tick = p.tick)), ` + Columns + `
from placed p
join (select * from later union all select * from within) c on c.xid = p.xid
where (p.tick, p.tx, c.id) > ($2, $3, $4::bigint)
order by p.tick, p.tx, c.id
limit $6::int`

// restSQL reads a page ($6 rows) of the rest of transaction $5 after its
// change $4, in streams $1, by id: a page ended inside the transaction,
// placed in tick $2 as number $3. The (xid, id) index makes it cost a page,
// however large the transaction.
const restSQL = `select $2::bigint, $3::bigint, coalesce(c.origin_at, (select t.at from rowcast.ticks t where t.tick = $2)), ` + Columns + `
from rowcast.changelog c
where c.xid = $5::text::xid8 and c.id > $4 and c.stream = any($1::text[])
order by c.id
limit $6::int`

// Replay implements relay.ChangeHistory (history.Mapped maps what it
// replays for the transports). It reads in pages of whole-or-partial
// transactions; fn sees each change once, in order.
//
// Each page reads within a window of ticks after the position, not up to
// the head: a page's query costs what its window holds, so a replay far
// behind costs what it replays, not that times the number of pages (it
// did, reading everything after the position for every page). A window
// that yields less than half a page doubles the next one, so a quiet
// stream's replay over many ticks takes a few queries; a full page halves
// it again. A page that ends inside a transaction is followed by pages of
// the rest of it alone.
//
// It first records a tick (rowcast.tick), so that it replays every
// transaction committed before it started, once durable; later ones reach
// the session live. Each page is read in one snapshot with the check that
// nothing after the position was pruned, so a prune that commits meanwhile
// makes it answer ErrHistoryExpired, never a short replay.
func (s *History) Replay(ctx context.Context, streams []string, from relay.Position, fn func([]relay.Change) error) error {
	// The tick commits locally (a synchronous standby that is down must
	// not hold resumes), set in its own transaction: the pool may be a
	// transaction pooler's, which keeps no session setting. The
	// transaction is read committed whatever the database's default, so
	// that rowcast.tick() takes its snapshot after its lock. One round trip.
	b := &pgx.Batch{}
	b.Queue("begin isolation level read committed")
	b.Queue("select set_config('synchronous_commit', 'local', true)")
	b.Queue("select rowcast.tick()")
	b.Queue("commit")
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("history replay tick: %w", err)
	}
	after := from.Pos
	head := int64(-1)     // the latest tick when the first page was read
	afterXID := uint64(0) // the transaction of the change at after, once known
	span := s.span        // the window's ticks
	var sc Scanner
	for {
		var batch []relay.Change
		var hi int64 // the window's last tick
		// The last page ended inside a transaction: this one reads the
		// rest of it (the transaction's number is its highest id).
		rest := afterXID != 0 && after.ID < after.Tx
		err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var latest, oldest int64
			var epoch string
			err := tx.QueryRow(ctx, "select max(tick), min(tick), (select "+epochExpr+" from rowcast.meta) from rowcast.ticks").Scan(&latest, &oldest, &epoch)
			if err != nil {
				return err
			}
			if epoch != from.Epoch {
				// The history started again (rowcast.tick's reset) since
				// the position was given, before this relay's reader
				// noticed: its ticks name other changes.
				return fmt.Errorf("history replay of epoch %s, the history's is %s: %w", from.Epoch, epoch, relay.ErrHistoryExpired)
			}
			if head < 0 {
				head = latest
			}
			if err := check(ctx, tx, streams, after, head); err != nil {
				return err
			}
			hi = min(head, max(after.Tick, oldest)+span)
			xid := strconv.FormatUint(afterXID, 10)
			q, args := replaySQL, []any{streams, after.Tick, after.Tx, after.ID, hi, s.page, oldest, xid}
			if rest {
				q, args = restSQL, []any{streams, after.Tick, after.Tx, after.ID, xid, s.page}
			}
			rows, err := tx.Query(ctx, q, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				ch, err := sc.Scan(rows)
				if err != nil {
					return err
				}
				batch = append(batch, ch)
			}
			return rows.Err()
		})
		if errors.Is(err, relay.ErrHistoryExpired) {
			return err
		}
		if err != nil {
			return fmt.Errorf("history replay: %w", err)
		}
		if len(batch) > 0 {
			if err := fn(batch); err != nil {
				return err
			}
		}
		switch {
		case rest && len(batch) < s.page:
			// The transaction is done; what follows it is read as usual.
			after.ID = after.Tx
		case len(batch) == s.page:
			// The window may hold more after this page. A window that
			// fills pages halves, so one grown over a quiet stretch does
			// not make every page of a busy one read all of it.
			after, afterXID = batch[len(batch)-1].Pos, batch[len(batch)-1].XID
			span = max(s.span, span/2)
		case hi >= head:
			return nil
		default:
			// The window is done: the next one starts after its last tick.
			after, afterXID = relay.TickEnd(hi), 0
			if len(batch) < s.page/2 {
				span *= 2
			}
		}
	}
}

// check answers ErrHistoryExpired when changes of the streams after the
// position were pruned, or the position is ahead of the history (its tick
// is past head).
func check(ctx context.Context, q pgx.Tx, streams []string, after relay.Pos, head int64) error {
	if after.Tick > head {
		return fmt.Errorf("history replay after tick %d (have %d): %w", after.Tick, head, relay.ErrHistoryExpired)
	}
	var stream *string
	var through int64
	err := q.QueryRow(ctx, `select stream, through from rowcast.pruned
		where stream = any($1) and (through > $2 or through = $2 and not $3) order by through desc limit 1`,
		streams, after.Tick, after.Complete()).Scan(&stream, &through)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("history check: %w", err)
	}
	return fmt.Errorf("history replay %s after tick %d (pruned through %d): %w", *stream, after.Tick, through, relay.ErrHistoryExpired)
}
