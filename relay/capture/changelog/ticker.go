package changelog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TickerOptions tunes a Ticker. Zero values select the defaults.
type TickerOptions struct {
	// PollMin is how often the ticker looks for new commits while they
	// come closer together than that (default 2ms); PollMax how far it
	// backs off when idle (default 250ms). The doorbell wakes it at once
	// while commits come further apart (or not at all); PollMax bounds
	// the wait of a commit whose writer looked at the bell just before the
	// ticker armed it (and so did not ring).
	PollMin, PollMax time.Duration
	// Listen wakes the ticker on the writers' doorbell (the installed
	// capture must ring it: capture.notify).
	Listen bool
	// KeepBell keeps the doorbell armed however fast changes come (with
	// Listen): every writing commit rings it and the ticker ticks at once,
	// for a notification per commit. Polling then only backs the doorbell
	// up: the ticker looks every PollMax, and PollMin is not used. Without
	// it the ticker disarms the doorbell once commits come closer together
	// than PollMin, and looks every PollMin until it runs out of changes.
	KeepBell bool
	// Retry is how often a ticker that does not hold the ticker lock tries
	// to take it (default 1s): after the holder dies, ticks stop for at
	// most about this long.
	Retry time.Duration
	// IdleTimeout is the ticker connection's idle_session_timeout (default
	// 5s; at least four times Retry and PollMax): a ticker that stops
	// looking (its process paused, its network cut) has its session, and
	// the ticker lock with it, ended by the server after this long, so
	// another relay takes over. The kernel of a paused process still
	// answers TCP keepalives, which is why they do not suffice. PostgreSQL
	// 13 lacks the setting: there only the keepalives apply.
	IdleTimeout time.Duration
	// ConnectTimeout bounds connecting each of the ticker's connections
	// (default 10s; a connect_timeout above 0 in the URL takes its place
	// there) and setting up its doorbell's LISTEN: a connect that hangs
	// (a pooler queueing it) must not hold the ticker lock, and with it
	// every relay's ticks, for as long as it hangs. The attempt fails and
	// is retried.
	ConnectTimeout time.Duration
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
	// Reader is the reader in this process, if any. The ticker reads
	// the changes of each tick it records on its own connection, in the
	// tick's round trip, and hands them to the reader once the tick is
	// committed: the reader then has no query to make for it. A tick of
	// more than 256 changes it only pokes the reader to read, and every
	// tick for a minute after the server refused a read.
	Reader *Tail
	// OnTick is called with each tick this ticker recorded, once it is
	// committed (and handed to Reader); nil ignores it.
	OnTick func(tick int64)
	// LocalListener returns the backend process id of the LISTEN
	// connection of the reader this ticker tells of its ticks itself
	// (Reader, or a Tail.Poke in OnTick): Tail.ListenerPID, 0 when none.
	// When set, a tick notifies the tailers only while another reader
	// listens, which the ticker looks up every listenersCheck and whenever
	// that id changes: a notification wakes every listening backend of the
	// database, whatever its channel, so one relay alone spares two
	// wakeups per tick. nil notifies at every tick. Group ticks
	// (QueueTick) tell only Reader in process: without one they notify
	// at every tick (with Listen).
	LocalListener func() uint32
	// OnHolding is called with true when this ticker takes the ticker lock
	// and with false when it loses it; nil ignores it.
	OnHolding func(bool)
}

// Ticker records the ticks that cut the changelog into batches
// (rowcast.tick). Every relay runs one; the one that holds a session-level
// advisory lock ticks, the others wait to take over. Create it with
// NewTicker and call Run once.
type Ticker struct {
	url     string
	o       TickerOptions
	bell    chan struct{} // the doorbell, from LISTEN or Ring
	holding atomic.Bool
	// quietUntil is, in Unix nanoseconds, until when a tick need not
	// notify the tailers: listenersCheck after this ticker, holding the
	// lock, last found no other reader listening (0: notify).
	quietUntil atomic.Int64
	// groupPause is, in Unix nanoseconds, until when group ticks are not
	// recorded (GroupTicks), after the server refused one.
	groupPause atomic.Int64
}

// NewTicker returns a Ticker of the changelog in the database at url.
func NewTicker(url string, o TickerOptions) *Ticker {
	if o.PollMin <= 0 {
		o.PollMin = 2 * time.Millisecond
	}
	if o.PollMax <= 0 {
		o.PollMax = 250 * time.Millisecond
	}
	o.PollMax = max(o.PollMax, o.PollMin)
	if o.KeepBell && o.Listen {
		o.PollMin = o.PollMax
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Second
	}
	o.IdleTimeout = max(o.IdleTimeout, 4*o.Retry, 4*o.PollMax)
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Ticker{url: url, o: o, bell: make(chan struct{}, 1)}
}

// Holding reports whether this ticker holds the ticker lock: it is the one
// that ticks.
func (t *Ticker) Holding() bool { return t.holding.Load() }

// Ring wakes the ticker at once, as the writers' doorbell does, for a
// writer in this process (the logical slot holder after a group commit
// that could not record its own tick: QueueTick):
// the database's doorbell would wake every listening backend of the
// database. A ticker that does not hold the lock takes one look as soon
// as it takes it. It never blocks.
func (t *Ticker) Ring() {
	select {
	case t.bell <- struct{}{}:
	default:
	}
}

// tickerLock is the advisory lock key the ticking relay holds.
const tickerLock = "select pg_try_advisory_lock(hashtext('rowcast.ticker'))"

// Run ticks while it holds the ticker lock, and waits to take it while it
// does not, until ctx ends; then it returns ctx's error. Database errors
// close the connections and are retried with capped exponential backoff
// (the lock goes with the connection, so another relay may take over).
func (t *Ticker) Run(ctx context.Context) error {
	return reconnecting(ctx, t.o.Logger, "ticker", nil, func() (bool, error) { return t.hold(ctx) })
}

// hold runs one connected period: it waits for the lock, then ticks. It
// reports whether it recorded a tick, and returns on the first error.
func (t *Ticker) hold(ctx context.Context) (ticked bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc, err := pgx.ParseConfig(t.url)
	if err != nil {
		return false, fmt.Errorf("ticker connect: %w", err)
	}
	// A tick commits durably on this server before anyone reads it, and
	// never waits for a synchronous standby (which may be down).
	cc.RuntimeParams["synchronous_commit"] = "local"
	cc.RuntimeParams["jit"] = "off" // as the reader's (Tail.session)
	// rowcast.tick() takes its snapshot after its lock: each statement's
	// own, whatever the database's or role's default isolation.
	cc.RuntimeParams["default_transaction_isolation"] = "read committed"
	// Each tick is bounded by tickTimeout instead of a statement timeout
	// set for the database or the role, which a large tick's read could
	// pass at every look. (A lock_timeout set there stays: a tick that
	// waits past it is refused and undone, and looked for again.)
	cc.RuntimeParams["statement_timeout"] = "0"
	// The ticker lock goes with this connection's backend: a connection
	// that went silent (a half-open TCP connection) must not keep it, and
	// with it every relay's ticks, for the hours the kernels' defaults
	// would take to notice. The server drops it after about 20 s without
	// an answer from this side.
	cc.RuntimeParams["tcp_keepalives_idle"] = "5"
	cc.RuntimeParams["tcp_keepalives_interval"] = "5"
	cc.RuntimeParams["tcp_keepalives_count"] = "3"
	cc.RuntimeParams["tcp_user_timeout"] = "20000"
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = t.o.ConnectTimeout
	}
	AppName(cc, "ticker")
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return false, fmt.Errorf("ticker connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	setIdle := fmt.Sprintf("set idle_session_timeout = %d", t.o.IdleTimeout.Milliseconds())
	if _, err := conn.Exec(ctx, setIdle); err != nil && !isUndefinedObject(err) {
		return false, fmt.Errorf("ticker idle timeout: %w", err)
	}
	for {
		var got bool
		if err := conn.QueryRow(ctx, tickerLock).Scan(&got); err != nil {
			return false, fmt.Errorf("ticker lock: %w", err)
		}
		if got {
			break
		}
		timer := time.NewTimer(t.o.Retry)
		select {
		case <-ctx.Done():
			timer.Stop()
			return false, ctx.Err()
		case <-timer.C:
		}
	}
	t.holding.Store(true)
	defer t.holding.Store(false)
	defer t.quietUntil.Store(0)
	if t.o.OnHolding != nil {
		t.o.OnHolding(true)
		defer t.o.OnHolding(false)
	}
	t.o.Logger.Info("ticker holds the ticker lock", "doorbell", t.o.Listen)

	listenErr := make(chan error, 1)
	if t.o.Listen {
		stop, err := listen(ctx, t.url, "doorbell", Channel, t.o.ConnectTimeout, nil, t.bell, listenErr, nil)
		if err != nil {
			return false, fmt.Errorf("ticker %w", err)
		}
		defer stop()
	}
	b := bellState{listen: t.o.Listen}
	if err := b.set(ctx, conn, true); err != nil { // until changes flow
		return false, err
	}
	// idle counts empty looks in a row, and idleArmed says whether the
	// ticker took its arming step since the last tick (a no-op for the
	// bell when it was armed already or there is none); busy, ticks in a
	// row each looked for less than PollMin after the tick before (while
	// the bell rings); sparse, ticks in a row each after an empty look
	// (while it does not).
	interval, idle, busy, sparse := t.o.PollMin, 0, 0, 0
	idleArmed, armAfter := false, armingDelay(t.o.PollMin, t.o.PollMax)
	var last time.Time // when the last tick was recorded
	// idleFrom is when the empty looks began: the last tick, or an
	// interval before the first look, which comes at once.
	idleFrom := time.Now().Add(-t.o.PollMin)
	notify, checked, local := true, time.Time{}, uint32(0)
	refused := false            // the listeners lookup was refused (warned once)
	var readRefusedAt time.Time // when a read for the reader was last refused
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		rang := false // this look answers a ring
		select {
		case <-ctx.Done():
			return ticked, ctx.Err()
		case err := <-listenErr:
			return ticked, err
		case <-t.bell:
			rang = true
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		select { // a ring that came with the timer: this look answers it
		case <-t.bell:
			rang = true
		default:
		}
		woke := time.Now()
		if t.o.LocalListener != nil {
			if own := t.o.LocalListener(); own != local || time.Since(checked) >= listenersCheck-t.o.PollMax {
				asked := time.Now() // the answer holds from before the query
				lctx, cancel := context.WithTimeout(ctx, tickTimeout)
				err := conn.QueryRow(lctx, listenersSQL, int64(own)).Scan(&notify)
				cancel()
				var pgErr *pgconn.PgError
				switch {
				case errors.As(err, &pgErr):
					// The server refused the lookup (pg_locks unreadable):
					// notify at every tick rather than stop ticking.
					if !refused {
						t.o.Logger.Warn("ticker cannot look for listening relays; notifying every tick", "err", err)
					}
					notify, refused = true, true
				case err != nil:
					return ticked, fmt.Errorf("ticker listeners: %w", err)
				}
				local, checked = own, asked
				if notify {
					t.quietUntil.Store(0)
				} else {
					t.quietUntil.Store(checked.Add(listenersCheck).UnixNano())
				}
			}
		}
		// A tick that does not answer in time is a connection gone silent:
		// give it up (and the lock with it) rather than wait.
		tctx, cancel := context.WithTimeout(ctx, tickTimeout)
		offering := t.o.Reader != nil && time.Since(readRefusedAt) >= offerPause
		tick, readRefused, err := t.look(tctx, conn, notify, offering)
		cancel()
		if err != nil {
			return ticked, err
		}
		if readRefused {
			readRefusedAt = time.Now()
		}
		if tick != nil {
			ticked = true
			if t.o.OnTick != nil {
				t.o.OnTick(*tick)
			}
			now := time.Now()
			switch {
			case !b.ringing():
				// Polling: ticks each after an empty look mean commits
				// further apart than PollMin; ring for them again.
				interval = t.o.PollMin
				if idle > 0 {
					sparse++
				} else {
					sparse = 0
				}
				if sparse >= busyBeforeDisarming {
					if err := b.set(ctx, conn, true); err != nil {
						return ticked, err
					}
					sparse, busy = 0, 0
				}
			case !rang && len(t.bell) == 0:
				// A commit the bell did not announce (its writer looked
				// just before the ticker armed it, or the bell is not what
				// this ticker last set): set it for certain and poll; the
				// rule above arms it again. A ring waiting in t.bell may
				// be this commit's, late: it counts as announced.
				interval, busy, sparse, b.known = t.o.PollMin, 0, 0, false
				if err := b.set(ctx, conn, t.o.KeepBell); err != nil {
					return ticked, err
				}
			default:
				// Each writing commit rings and is ticked at once, while
				// the commits come further apart than PollMin; closer,
				// looking every PollMin waits no longer and costs less
				// than a notification, a wakeup and a tick per commit.
				// While the bell rings, the looks only back it up.
				if woke.Sub(last) < t.o.PollMin {
					busy++
				} else {
					busy = 0
				}
				if busy >= busyBeforeDisarming && !t.o.KeepBell {
					if err := b.set(ctx, conn, false); err != nil {
						return ticked, err
					}
					interval, busy, sparse = t.o.PollMin, 0, 0
				}
			}
			idle, idleArmed = 0, false
			last, idleFrom = now, now
			timer.Reset(interval)
			continue
		}
		idle++
		next, arm := emptyLook(interval, woke.Sub(idleFrom), armAfter, idleArmed, b.ringing(), t.o.PollMin, t.o.PollMax)
		if arm {
			if err := b.set(ctx, conn, true); err != nil {
				return ticked, err
			}
			idleArmed = true
		}
		interval = next
		timer.Reset(interval)
	}
}

// tickSQL records a tick (rowcast.tick).
const tickSQL = "select rowcast.tick($1)"

// look records a tick (rowcast.tick) when transactions that wrote the
// changelog became visible since the last one, and returns it (nil when
// there was none); the reader, if any, is handed it or poked. With
// offering, the ticker reads the tick's changes in the same round trip and
// transaction (readOffer) and hands them to the reader once the tick is
// committed. When the server fails that read (a schema this relay does not
// know, in a rolling upgrade: pgx prepares every statement of the round
// trip before it runs any, so nothing runs; or a lock it waited for past
// lock_timeout: then the tick is undone with it), look logs it, records
// the tick alone and reports refused; so too after a read this process
// fails to decode (the tick may have committed: the reader is poked too).
// Any other error is returned: the tick's own, or the connection's.
func (t *Ticker) look(ctx context.Context, conn *pgx.Conn, notify, offering bool) (tick *int64, refused bool, err error) {
	if !offering {
		if err := conn.QueryRow(ctx, tickSQL, notify).Scan(&tick); err != nil {
			return nil, false, fmt.Errorf("ticker tick: %w", err)
		}
		if tick != nil && t.o.Reader != nil {
			t.o.Reader.Poke(*tick)
		}
		return tick, false, nil
	}
	refuse := func(err error) (*int64, bool, error) {
		t.o.Logger.Warn("ticker cannot read its ticks for the reader; the reader reads them itself for a while", "err", err)
		tick, _, err := t.look(ctx, conn, notify, false)
		return tick, true, err
	}
	session := t.o.Reader.conns.Load()
	b := &pgx.Batch{}
	b.Queue(tickSQL, notify)
	b.Queue(offerSQL)
	br := conn.SendBatch(ctx, b)
	var pgErr *pgconn.PgError
	var pre pgx.ErrPreprocessingBatch
	if err := br.QueryRow().Scan(&tick); err != nil {
		br.Close()
		if errors.As(err, &pre) && pre.SQL() != tickSQL && errors.As(err, &pgErr) {
			return refuse(err)
		}
		return nil, false, fmt.Errorf("ticker tick: %w", err)
	}
	var o *offer
	var readErr error
	if tick != nil {
		o, readErr = readOffer(br, *tick, session)
	}
	err = br.Close() // the tick commits
	switch {
	case readErr == nil && err == nil && o != nil:
		t.o.Reader.offer(o)
		return tick, false, nil
	case readErr == nil && err == nil:
		if tick != nil {
			t.o.Reader.Poke(*tick)
		}
		return tick, false, nil
	case conn.IsClosed():
		// The tick may have committed before the connection went: the
		// reader looks for it.
		if tick != nil {
			t.o.Reader.Poke(*tick)
		}
		return nil, false, fmt.Errorf("ticker tick: %w", errors.Join(readErr, err)) // the connection
	case errors.As(readErr, &pgErr) || errors.As(err, &pgErr):
		// The server failed the read (or the commit): the tick is undone.
		return refuse(errors.Join(readErr, err))
	default:
		// This process could not decode its read, and then cannot tell
		// whether the tick committed: the reader polls for it, and the
		// ticker records it (again, or what follows it) alone.
		if tick != nil {
			t.o.Reader.Poke(*tick)
		}
		return refuse(errors.Join(readErr, err))
	}
}

// offerPause is how long the ticker leaves the reading of its ticks to the
// reader after a read was refused.
const offerPause = time.Minute

// tickTimeout bounds one call of rowcast.tick().
const tickTimeout = 30 * time.Second

// listenersCheck is how often the ticker looks whether a reader other than
// its own process's listens for ticks, at its first look after this long
// less PollMax (before that look's tick), and how long an answer holds:
// a relay that starts listening is notified of the ticks the ticker
// records, and of the group ticks (QueueTick) queued, more than this long
// after (it polls meanwhile, and for as long again: Tail.session); a group
// tick recorded after the answer it was queued with lapsed is notified by
// its writer (GroupTick.Done). A ticker looks at least every PollMax, so
// while PollMax is shorter its answer is renewed before it lapses; with a
// longer PollMax it looks the listeners up at every look.
const listenersCheck = time.Second

// listenersSQL reports whether a backend other than $1 holds the
// listeners' lock (listenersKey) in this database: a reader that wants a
// notification per tick. pg_locks shows a bigint advisory key as its high
// half (classid) and its low half (objid), with objsubid 1.
const listenersSQL = `select exists (select from pg_locks l, (select ` + listenersKey + ` as k) k
  where l.locktype = 'advisory' and l.granted and l.pid <> $1 and l.objsubid = 1
    and l.database = (select oid from pg_database where datname = current_database())
    and l.classid = ((k.k >> 32) & 4294967295)::oid and l.objid = (k.k & 4294967295)::oid)`

// armingDelay is how long after its last tick a ticker that finds no
// commit asks for the doorbell again: the sum of four intervals doubling
// from pollMin, each at most pollMax (30ms at the default 2ms and 250ms).
func armingDelay(pollMin, pollMax time.Duration) time.Duration {
	var d time.Duration
	for i := range 4 {
		d += min(pollMin<<i, pollMax)
	}
	return d
}

// emptyLook is the ticker's step after an empty look, since the last tick
// (or the start) and at interval after the look before: the interval to
// the next look, at most pollMax, and whether to take the arming step now
// (once since armAfter, armingDelay, unless armed says it was taken since
// the last tick): arm the doorbell, and back off.
//
// While the ticker polls (the bell not ringing) and has not taken that
// step, empty looks keep the interval: under load they are gaps between
// commits more often than their end, and a doubled wait fell on the next
// commit (with random arrivals at 400 changes/s, a quarter of the 2ms
// looks were empty). The arming step sets the interval to 16 × pollMin,
// at most pollMax, where doubling from the first empty look used to leave
// it. Until then the looks come at every multiple of pollMin, which the
// looks of that doubling (pollMin, 3, 7 and 15 × pollMin) are among, so
// no commit waits for a later look than it did, apart from each look's
// own round trip (without a doorbell, only the looks find commits). That
// holds while 8 × pollMin is at most pollMax; with a longer pollMin the
// looks double from the first empty one, as they did. After the arming
// step, and at every empty look while the bell rings (the looks then only
// back it up, and each commit rings), the interval doubles, so that
// commits at an even rate, each rung, do not cost an empty look each.
func emptyLook(interval, since, armAfter time.Duration, armed, ringing bool, pollMin, pollMax time.Duration) (next time.Duration, arm bool) {
	arm = !armed && since >= armAfter
	switch {
	case arm:
		return min(max(pollMin<<4, interval*2), pollMax), true
	case !ringing && !armed && pollMin<<3 <= pollMax:
		return interval, false
	}
	return min(interval*2, pollMax), false
}

// busyBeforeDisarming is how many ticks in a row, each looked for less
// than PollMin after the tick before, make the ticker silence the doorbell
// and poll; and how many in a row, each after an empty look, make a polling
// ticker ring it again.
const busyBeforeDisarming = 4

// bellState is the doorbell as this ticker last set it.
type bellState struct {
	listen, armed, known bool
}

// ringing reports whether the doorbell is in use and armed.
func (b *bellState) ringing() bool { return b.listen && b.known && b.armed }

// set arms or disarms the doorbell when it is in use and differs from what
// this ticker last set.
func (b *bellState) set(ctx context.Context, conn *pgx.Conn, v bool) error {
	if !b.listen || b.known && b.armed == v {
		return nil
	}
	n := 0
	if v {
		n = 1
	}
	// setval takes effect at once, whatever transaction the writers are in.
	if _, err := conn.Exec(ctx, "select setval('rowcast.bell', $1)", n); err != nil {
		return fmt.Errorf("ticker doorbell: %w", err)
	}
	b.armed, b.known = v, true
	return nil
}

// isUndefinedObject reports whether err is PostgreSQL's undefined_object
// (42704), which an unknown setting raises (idle_session_timeout before
// PostgreSQL 14).
func isUndefinedObject(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedObject
}
