package changelog

import (
	"context"
	"errors"
	"fmt"
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
// its own before they are ticked, and the ticker, finding nothing left,
// backs off. Ticks are taken in turns (rowcast.tick's lock), so a group
// tick and the ticker's own are recorded alike; whichever comes second
// finds nothing and records nothing.

// PrepareTick prepares on conn, a connection that writes the changelog
// (its session's settings are its own), the statements QueueTick queues,
// so that a batch holding them is never refused before it runs (pgx
// prepares a statement new to the connection before it sends any of the
// batch): a schema this relay does not know refuses them here instead.
// A server's refusal is returned as a *pgconn.PgError, and then QueueTick
// must not be used on conn.
func (t *Ticker) PrepareTick(ctx context.Context, conn *pgx.Conn) error {
	sqls := []string{tickSQL}
	if t.o.Reader != nil {
		sqls = append(sqls, offerSQL)
	}
	for _, sql := range sqls {
		if _, err := conn.Prepare(ctx, sql, sql); err != nil {
			return fmt.Errorf("prepare group tick: %w", err)
		}
	}
	return nil
}

// GroupTick is a tick queued after another connection's COMMIT
// (Ticker.QueueTick). Its methods are called in turn: Read, once the
// results of every statement queued before it were read; then, once the
// batch is closed, Done.
type GroupTick struct {
	t       *Ticker
	session int64 // the reader's connection when queued
	offers  bool
	tick    *int64
	offer   *offer
	err     error
}

// GroupTicks reports whether group ticks are recorded: not for a minute
// after the server refused one (GroupTick.Done).
func (t *Ticker) GroupTicks() bool { return time.Now().UnixNano() >= t.groupPause.Load() }

// QueueTick queues at the end of b, whose last statement must end a
// transaction that wrote the changelog (a COMMIT), the recording of the
// tick that shows it (rowcast.tick, which notifies the tailers unless this
// ticker found, within listenersCheck, that no other reader listens) and,
// when the ticker has a reader, the read of the tick's changes for it.
// The connection must have been prepared with PrepareTick.
func (t *Ticker) QueueTick(b *pgx.Batch) *GroupTick {
	g := &GroupTick{t: t, offers: t.o.Reader != nil}
	b.Queue(tickSQL, time.Now().UnixNano() >= t.quietUntil.Load())
	if g.offers {
		g.session = t.o.Reader.conns.Load()
		b.Queue(offerSQL)
	}
	return g
}

// Read reads the results of what QueueTick queued.
func (g *GroupTick) Read(br pgx.BatchResults) {
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
// pokes it). It reports whether the writer's commit is ticked for
// certain: by this tick, or by one recorded before it (a tick that found
// nothing to record). Otherwise the caller rings the ticker, as when no
// group tick was queued; Done has logged why and, unless the connection
// failed, paused group ticks (GroupTicks).
func (g *GroupTick) Done(closeErr error) bool {
	r := g.t.o.Reader
	var pgErr *pgconn.PgError
	switch {
	case g.err == nil && closeErr == nil:
		if g.tick != nil && g.offer != nil {
			r.offer(g.offer)
		} else if g.tick != nil && r != nil {
			r.Poke(*g.tick)
		}
		return true
	case errors.As(g.err, &pgErr) || errors.As(closeErr, &pgErr):
		// The tick, if any, is undone with its transaction.
		g.t.groupPause.Store(time.Now().Add(offerPause).UnixNano())
		g.t.o.Logger.Warn("cannot record group ticks; the ticker ticks for a while", "err", errors.Join(g.err, closeErr))
		return false
	default:
		// The connection failed, or this process could not decode the
		// read: the tick may have committed, and the reader looks for it.
		if g.tick != nil && r != nil {
			r.Poke(*g.tick)
		}
		if closeErr == nil {
			g.t.groupPause.Store(time.Now().Add(offerPause).UnixNano())
			g.t.o.Logger.Warn("cannot read group ticks; the ticker ticks for a while", "err", g.err)
		}
		return false
	}
}
