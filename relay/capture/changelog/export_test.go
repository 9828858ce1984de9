package changelog

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
)

// SetPaging sets h's page size and first window, so that a test crosses
// page and window boundaries with a few changes.
func SetPaging(h *History, page int, span int64) { h.page, h.span = page, span }

// BatchSQL is the reader's query of a poll's batches; OfferSQL the
// ticker's of the tick it records.
const BatchSQL = batchSQL

var OfferSQL = offerSQL

// Announced reports whether the last poll of tl's reader counted on every
// tick being announced to it: it then polls only every PollMax.
func Announced(tl *Tail) bool { return tl.announced.Load() }

// Offer hands tl's reader a tick as this process's ticker does after it
// read it (TickerOptions.Reader) on the reader's connection number session
// (Session): tick, its snapshot, the snapshot of the tick before, and its
// transactions. Unlike the ticker, it waits until the reader has taken the
// offer before, rather than poke the reader instead: offers are taken in
// the order they are made.
// It fails t when the reader takes none for 10 seconds.
func Offer(t testing.TB, tl *Tail, session int64, epoch string, tick int64, snap, prev string, txns []relay.Txn) {
	t.Helper()
	raise(&tl.poked, tick)
	select {
	case tl.offers <- &offer{session: session, epoch: epoch, tick: tick, snap: snap, prev: prev, txns: txns}:
	case <-time.After(10 * time.Second):
		t.Fatalf("the reader took no offer for 10s (offering tick %d)", tick)
	}
}

// Session is the number of tl's reader's current connection.
func Session(tl *Tail) int64 { return tl.conns.Load() }

// Poked is the highest tick tl's reader was poked for, as far as it knows
// (a poll that found no such tick lowers it).
func Poked(tl *Tail) int64 { return tl.poked.Load() }

// Polls is how many times tl's reader has polled.
func Polls(tl *Tail) int64 { return tl.polls.Load() }

// OfferMax is the most changes of a tick the ticker reads for the reader.
const OfferMax = offerMax

// EmptyLook is the ticker's step after an empty look; ArmingDelay how long
// after its last tick it arms the doorbell.
var EmptyLook, ArmingDelay = emptyLook, armingDelay

// Quiet reports whether tk's ticks, and its group ticks, would go without
// a notification now: tk found no reader listening but its own, less than
// listenersCheck ago.
func Quiet(tk *Ticker) bool { return time.Now().UnixNano() < tk.quietUntil.Load() }

// SetQuiet sets until when tk's group ticks go without a notification.
func SetQuiet(tk *Ticker, until time.Time) { tk.quietUntil.Store(until.UnixNano()) }

// LapseQuiet makes g, queued without a notification, find the ticker's
// answer lapsed when it is done.
func LapseQuiet(g *GroupTick) { g.quiet = 1 }

// EndGroupPause ends tk's pause of group ticks after a refusal.
func EndGroupPause(tk *Ticker) { tk.groupPause.Store(0) }

// ListenOnce connects and sets up a LISTEN connection to url as the
// ticker's doorbell does (or, with announce, as a reader's listener, which
// also takes the listeners' lock shared), with timeout, and closes it.
func ListenOnce(ctx context.Context, url string, timeout time.Duration, announce bool) error {
	var pid *atomic.Uint32
	if announce {
		pid = new(atomic.Uint32)
	}
	stop, err := listen(ctx, url, "test", Channel, timeout, pid, make(chan struct{}, 1), make(chan error, 1), nil)
	if err == nil {
		stop()
	}
	return err
}
