package changelog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A group tick is a tick recorded by another writer of the changelog in
// this process (logical mode's slot holder), in the round trip of its own
// COMMIT: the statements that record the tick and read its changes for
// the reader follow the COMMIT in one pipelined batch, and run in a
// transaction of their own that commits at the batch's end. The writer's
// changes then need no ring, no wakeup of the ticker and no round trip of
// their own before they are ticked, and the ticker, finding nothing left,
// backs off. Ticks are taken in turns (rowcast.tick's lock), so a group
// tick and the ticker's own are recorded alike: a tick recorded after the
// commit shows it, whoever records it.

// groupLockTimeout bounds a group tick's wait for rowcast.tick's lock,
// which stops the writer's stream meanwhile: past it the writer rings the
// ticker instead (GroupTick.Done).
const groupLockTimeout = "1s"

// groupLockSQL bounds the lock wait of the group tick's transaction.
const groupLockSQL = "select set_config('lock_timeout', '" + groupLockTimeout + "', true)"

// PrepareTick prepares on conn, a connection that writes the changelog,
// the statements QueueTick queues, so that a batch holding them is never
// refused before it runs (pgx prepares a statement new to the connection
// before it sends any of the batch): a schema this relay does not know
// refuses them here instead, as a *pgconn.PgError; then it pauses group
// ticks (GroupTicks) and QueueTick must not be used on conn. Prepare conn
// again after a GroupTick's Done reports a refusal.
func (t *Ticker) PrepareTick(ctx context.Context, conn *pgx.Conn) error {
	for _, sql := range t.groupSQLs() {
		if _, err := conn.Prepare(ctx, sql, sql); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				t.pauseGroupTicks()
				t.o.Logger.Warn("cannot record group ticks; the ticker ticks for a while", "err", err)
			}
			return fmt.Errorf("prepare group tick: %w", err)
		}
	}
	return nil
}

// groupSQLs are the statements QueueTick queues.
func (t *Ticker) groupSQLs() []string {
	if t.o.Reader == nil {
		return []string{groupLockSQL, tickSQL}
	}
	return []string{groupLockSQL, tickSQL, offerSQL}
}

// GroupTicks reports whether group ticks are recorded: not for a minute
// after the server refused one.
func (t *Ticker) GroupTicks() bool { return time.Now().UnixNano() >= t.groupPause.Load() }

func (t *Ticker) pauseGroupTicks() { t.groupPause.Store(time.Now().Add(offerPause).UnixNano()) }

// GroupTick is a tick queued after another connection's COMMIT
// (Ticker.QueueTick). Its methods are called in turn: Read, once the
// results of every statement queued before it were read; then, once the
// batch is closed, Done.
type GroupTick struct {
	t       *Ticker
	session int64 // the reader's connection when queued
	offers  bool
	queued  int // statements queued
	// quiet, when not zero, is when the ticker's answer that no other
	// reader listens lapses (in Unix nanoseconds): the tick does not
	// notify, and Done notifies it after all when it ends later.
	quiet int64
	tick  *int64
	offer *offer
	err   error
}

// QueueTick queues at the end of b, whose last statement must end a
// transaction that wrote the changelog (a COMMIT), the recording of the
// tick that shows it (rowcast.tick, waiting at most groupLockTimeout for
// its lock) and, when the ticker has a reader, the read of the tick's
// changes for it. With TickerOptions.Listen (capture.notify) the tick
// notifies the tailers unless this ticker found, within listenersCheck,
// that no reader listens but its own (a ticker with no Reader always
// notifies); without it, never. The connection must have been prepared
// with PrepareTick.
func (t *Ticker) QueueTick(b *pgx.Batch) *GroupTick {
	g := &GroupTick{t: t, offers: t.o.Reader != nil}
	if q := t.quietUntil.Load(); g.offers && time.Now().UnixNano() < q {
		g.quiet = q
	}
	n := b.Len()
	b.Queue(groupLockSQL)
	b.Queue(tickSQL, t.o.Listen && g.quiet == 0)
	if g.offers {
		g.session = t.o.Reader.conns.Load()
		b.Queue(offerSQL)
	}
	g.queued = b.Len() - n
	return g
}

// Queued is how many statements QueueTick queued for g.
func (g *GroupTick) Queued() int { return g.queued }

// Read reads the results of what QueueTick queued.
func (g *GroupTick) Read(br pgx.BatchResults) {
	if _, err := br.Exec(); err != nil {
		g.err = fmt.Errorf("group tick: %w", err)
		return
	}
	if err := br.QueryRow().Scan(&g.tick); err != nil {
		g.err = fmt.Errorf("group tick: %w", err)
		return
	}
	if g.offers && g.tick != nil {
		g.offer, g.err = readOffer(br, *g.tick, g.session)
	}
}

// Done takes the batch's close error (nil when its transactions
// committed) and, when the tick committed, hands it to the reader (or
// pokes it), and notifies it on conn if it was recorded without a
// notification after the ticker's answer lapsed. ticked reports whether
// the writer's commit is ticked for certain: by this tick, or by one
// recorded before it (a tick that found nothing to record); otherwise the
// caller rings the ticker, as when no group tick was queued, and Done has
// logged why. refused reports that the server refused the tick or its
// read: group ticks are paused (GroupTicks), and conn must be prepared
// again (PrepareTick) before its next group tick.
func (g *GroupTick) Done(ctx context.Context, conn *pgx.Conn, closeErr error) (ticked, refused bool) {
	r := g.t.o.Reader
	var pgErr *pgconn.PgError
	switch {
	case g.err == nil && closeErr == nil:
		if g.tick == nil {
			return true, false
		}
		if g.offer != nil {
			r.offer(g.offer)
		} else if r != nil {
			r.Poke(*g.tick)
		}
		g.notifyLate(ctx, conn)
		return true, false
	case conn.IsClosed():
		// The tick may have committed: the reader looks for it.
		if g.tick != nil && r != nil {
			r.Poke(*g.tick)
		}
		return false, false
	case errors.As(g.err, &pgErr) || errors.As(closeErr, &pgErr):
		// The tick, if any, is undone with its transaction. The
		// statements may no longer fit the schema: they are prepared
		// again.
		g.t.pauseGroupTicks()
		g.t.o.Logger.Warn("cannot record group ticks; the ticker ticks for a while", "err", errors.Join(g.err, closeErr))
		for _, sql := range g.t.groupSQLs() {
			if err := conn.Deallocate(ctx, sql); err != nil {
				break // the connection's, which its next use finds
			}
		}
		return false, true
	default:
		// This process could not decode the read: the tick may have
		// committed, and the reader looks for it.
		if g.tick != nil && r != nil {
			r.Poke(*g.tick)
			g.notifyLate(ctx, conn)
		}
		g.t.pauseGroupTicks()
		g.t.o.Logger.Warn("cannot read group ticks; the ticker ticks for a while", "err", errors.Join(g.err, closeErr))
		return false, false
	}
}

// notifyLate notifies the tailers of g's tick (with TickerOptions.Listen)
// when it was recorded without a notification after the ticker's answer
// that no other reader listens lapsed: a relay that began to listen since
// may have been told no tick.
// An error is the connection's, which its next use finds.
func (g *GroupTick) notifyLate(ctx context.Context, conn *pgx.Conn) {
	if g.t.o.Listen && g.tick != nil && g.quiet != 0 && time.Now().UnixNano() >= g.quiet {
		_, _ = conn.Exec(ctx, "select pg_notify($1, $2)", TickChannel, strconv.FormatInt(*g.tick, 10))
	}
}
