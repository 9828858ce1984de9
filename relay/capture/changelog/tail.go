// Package changelog owns rowcast.changelog, the table both capture modes
// fill (the row triggers in trigger mode, the slot holder of package
// capture/logical in logical mode): its row format (Columns, Scanner),
// tailing it in commit order (Tail), replaying it after a position (History)
// and pruning it (Pruner).
//
// Tailing is PgQ-style. One relay at a time runs the Ticker, which records
// snapshots in rowcast.ticks; every relay's Tail reads tick after tick the
// rows of the transactions that became visible between a tick's snapshot
// and the previous one's, so a long transaction never holds back short
// ones and arrives once, when it commits, and every replica reads the same
// batches in the same order (relay.Pos). The Ticker reads each tick it
// records for its own process's Tail, in the tick's round trip, and hands
// it over once committed (or pokes the Tail to read a large one), rings
// the other relays' (a notification per tick, while any listens) and is
// woken by the writers' doorbell (when it asks for it) or by Ring. A Tail
// told of every tick polls only as the backstop, every PollMax; with the
// doorbells switched off it polls adaptively. A tick is durable before it
// is read, and so is every commit it covers.
package changelog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rowcast/rowcast/relay"
)

// Channel is the LISTEN channel the writers' doorbell rings (rowcast.ring),
// for the Ticker; TickChannel the one every tick rings, for Tails.
const (
	Channel     = "rowcast"
	TickChannel = "rowcast_tick"
)

// TailOptions tunes a Tail. Zero values select the defaults.
type TailOptions struct {
	// PollMin is the poll interval while ticks come (default 5ms); PollMax
	// the interval the reader backs off to when idle (default 1s). A
	// listening reader polls every PollMin for the first two seconds
	// (until the ticker has looked for its listener), then every PollMax
	// whatever comes: every tick is announced to it by then.
	PollMin, PollMax time.Duration
	// Listen wakes the reader on every tick's notification (and on Poke,
	// which wakes it either way).
	Listen bool
	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
	// OnConnected is called with true once the capture is reading and with
	// false when it lost the database; nil ignores it.
	OnConnected func(bool)
	// OnBehind is called at every poll with what it found recorded and not
	// yet read: the ticks, and how long ago the first of them was recorded
	// (by the database's clock); 0 and 0 when caught up, as when the reader
	// takes a tick its own process's ticker read for it (the latest). A
	// poll reads at most 256 ticks, so a relay catching up reports falling
	// numbers poll after poll. nil ignores it.
	OnBehind func(ticks int64, age time.Duration)
	// StallTimeout is how long the reader waits for the database (to
	// connect, or for a poll to hand on its next transaction or end)
	// before it probes the database on a fresh connection, and how long
	// the probe may take (default 10s). When the probe fails, the reader
	// drops its connection and reconnects, and Connected turns false: a
	// connection gone silent (a network cut, a hung proxy) is noticed in
	// about twice StallTimeout, where TCP alone takes minutes. When the
	// probe succeeds the reader waits on: a slow poll (a tick of millions
	// of rows, a lock) is never cut.
	StallTimeout time.Duration
}

// Tail reads the changelog in commit order and hands each committed
// transaction to a relay.Sink. Create it with NewTail and call Run once.
type Tail struct {
	url       string
	o         TailOptions
	connected atomic.Bool
	ready     chan struct{}
	readyOnce atomic.Bool
	poke      chan struct{}
	read      atomic.Int64  // the last tick read
	poked     atomic.Int64  // the highest tick Poke was given
	listener  atomic.Uint32 // ListenerPID
	// waiting is when the reader last heard from the database while it
	// waits for it (unix ns), 0 while it waits for nothing.
	waiting atomic.Int64
	// announced is whether the reader's last poll counted on every tick
	// being announced to it (it then polls only every PollMax).
	announced atomic.Bool
	told      atomic.Int64 // the highest tick a notification named this session
	// offers holds a tick this process's ticker read for the reader
	// (offer); one at most. conns counts the reader's connections: an
	// offer read before the current one began is not taken.
	offers chan *offer
	conns  atomic.Int64
	polls  atomic.Int64 // for tests
}

// raise sets v to n if n is higher.
func raise(v *atomic.Int64, n int64) {
	for {
		p := v.Load()
		if n <= p || v.CompareAndSwap(p, n) {
			return
		}
	}
}

// NewTail returns a Tail of the changelog in the database at url.
func NewTail(url string, o TailOptions) *Tail {
	if o.PollMin <= 0 {
		o.PollMin = 5 * time.Millisecond
	}
	if o.PollMax <= 0 {
		o.PollMax = time.Second
	}
	if o.PollMax < o.PollMin {
		o.PollMax = o.PollMin
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 10 * time.Second
	}
	return &Tail{url: url, o: o, ready: make(chan struct{}), poke: make(chan struct{}, 1), offers: make(chan *offer, 1)}
}

// offer is a tick and its changes, read by this process's Ticker on its own
// connection once the tick was committed (TickerOptions.Reader), so that
// the reader need not poll for it.
type offer struct {
	session int64 // Tail.conns when the ticker began to read it
	epoch   string
	tick    int64
	snap    string
	prev    string      // the snapshot of the tick before
	txns    []relay.Txn // as read hands them on: the tick's end on the last
}

// offer hands the reader a tick it has not read, which it takes when the
// last tick it read is the one before, the same (epoch, number and
// snapshot), and it read both on the connection it had when the ticker
// began to read the tick (o.session); otherwise (or while an earlier offer
// waits) it polls for it, as after Poke. It never blocks.
func (c *Tail) offer(o *offer) {
	raise(&c.poked, o.tick)
	select {
	case c.offers <- o:
	default:
		c.Poke(o.tick)
	}
}

// Poke makes the reader look for new ticks now, through tick (this
// process's Ticker calls it after each tick it records and does not hand
// over; a notification of a tick this low no longer wakes the reader). It
// never blocks.
func (c *Tail) Poke(tick int64) {
	raise(&c.poked, tick)
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// ListenerPID returns the backend process id of the connection on which
// the reader listens for ticks (0 while it does not): this process's
// Ticker tells the reader of its ticks itself, so that listener needs no
// notification (TickerOptions.LocalListener).
func (c *Tail) ListenerPID() uint32 { return c.listener.Load() }

// Ready is closed once the capture has read its starting tick and called
// relay.Sink.Reset: every transaction that commits after Ready is closed
// reaches the sink.
func (c *Tail) Ready() <-chan struct{} { return c.ready }

// Connected reports whether the capture is currently reading.
func (c *Tail) Connected() bool { return c.connected.Load() }

// Run reads until ctx ends, then returns ctx's error. Any database error
// closes the connections, waits with capped exponential backoff, reconnects
// and continues from the last tick read, so nothing committed meanwhile is
// lost. It returns early only when the rowcast schema is missing before
// the first read (a database that was never installed); once reading, a
// missing schema is a database being restored or reinstalled, and is
// retried like any other loss.
func (c *Tail) Run(ctx context.Context, sink relay.Sink) error {
	st := &state{}
	fatal := func(err error) bool { return errors.Is(err, errNoSchema) && !c.readyOnce.Load() }
	return reconnecting(ctx, c.o.Logger, "capture", fatal, func() (bool, error) {
		err := c.session(ctx, sink, st)
		c.setConnected(false)
		progressed := st.progressed
		st.progressed = false
		return progressed, err
	})
}

// reconnecting runs attempt (one connected period) again and again until
// ctx ends or it fails with an error fatal (nil: none) says retrying cannot
// fix; it returns ctx's error or that one. After every other failure it
// logs it as what's and waits, with exponential backoff from 100ms capped
// at 5s, back to 100ms after an attempt that made progress.
func reconnecting(ctx context.Context, log *slog.Logger, what string, fatal func(error) bool,
	attempt func() (progressed bool, err error)) error {
	backoff := 100 * time.Millisecond
	for {
		progressed, err := attempt()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fatal != nil && fatal(err) {
			return err
		}
		log.Warn(what+" lost the database; reconnecting", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if progressed {
			backoff = 100 * time.Millisecond
		} else {
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

var errNoSchema = errors.New("the rowcast schema is not installed: run `rowcast install`")

// errEpochChanged makes the session reconnect, where the new epoch is read
// and the sink reset.
var errEpochChanged = errors.New("history epoch changed")

const epochExpr = "replace(epoch::text, '-', '')"

// state survives reconnects.
type state struct {
	epoch string
	// tick is the last tick read and snap its snapshot; tick is 0 before
	// the first connection.
	tick       int64
	snap       string
	progressed bool
}

// advance records t as the tick read last.
func (c *Tail) advance(st *state, t tickRef) {
	st.tick, st.snap = t.tick, t.snap
	c.read.Store(t.tick)
}

func (c *Tail) setConnected(v bool) {
	if c.connected.Swap(v) != v && c.o.OnConnected != nil {
		c.o.OnConnected(v)
	}
}

// session runs one connected period: it returns on the first error.
func (c *Tail) session(ctx context.Context, sink relay.Sink, st *state) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.waiting.Store(time.Now().UnixNano())
	defer c.waiting.Store(0)
	go c.watch(ctx, cancel)
	defer func() {
		switch cause := context.Cause(ctx); {
		case !errors.Is(cause, errStalled):
		case err == nil:
			err = cause
		default:
			err = fmt.Errorf("%w (%w)", cause, err)
		}
	}()
	sink = heard{sink, &c.waiting}
	cc, err := pgx.ParseConfig(c.url)
	if err != nil {
		return fmt.Errorf("capture connect: %w", err)
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = c.o.StallTimeout
	}
	// Generic plans, made once per connection (and again after an
	// analyze): planning the batch query for each poll took 40 % of
	// PostgreSQL's CPU at 1,000 changes/s (bench latency: 998 → 581 µs
	// per change). Its lookups are fenced (see batchSQL), so its plan has
	// one shape however the tables' sizes and statistics swing.
	cc.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	// No JIT: PostgreSQL compiles a plan whose estimated cost passes
	// jit_above_cost, as the batch query's does while the changelog's
	// statistics lag, and spent 300 ms compiling for each poll of a few
	// milliseconds. Nothing the relay runs gains from it.
	cc.RuntimeParams["jit"] = "off"
	// The reader's own writes (a new epoch) commit locally: with a
	// synchronous standby down, a commit that waits for it would stop the
	// reader, and with it every relay's events.
	cc.RuntimeParams["synchronous_commit"] = "local"
	// No statement timeout (one set for the database or the role would
	// fail every poll at a tick that takes longer to read, a bulk
	// import's, and stop every relay's events): a database that stopped
	// answering is the stall watch's (watch).
	cc.RuntimeParams["statement_timeout"] = "0"
	AppName(cc, "reader")
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("capture connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// A poll's two statements share a snapshot (see poll): set by a
	// statement, as a startup parameter a pooler could drop unsaid. The
	// reader's other statements stand alone, and its one write (a new
	// epoch) is retried after a serialization failure as after any error.
	if _, err := conn.Exec(ctx, "set session characteristics as transaction isolation level repeatable read"); err != nil {
		return fmt.Errorf("capture connect: %w", err)
	}

	bell := make(chan struct{}, 1)
	listenErr := make(chan error, 1)
	var unheard time.Time // until when the ticker may not know of this listener
	c.told.Store(0)
	if c.o.Listen {
		// A tick this relay has read already (its own ticker pokes it
		// before the notification arrives) does not wake it again.
		stop, err := listen(ctx, c.url, "listener", TickChannel, c.o.StallTimeout, &c.listener, bell, listenErr, func(payload string) bool {
			n, err := strconv.ParseInt(payload, 10, 64)
			if err != nil {
				return true
			}
			raise(&c.told, n)
			return n > c.read.Load() && n > c.poked.Load()
		})
		if err != nil {
			return fmt.Errorf("capture %w", err)
		}
		defer stop()
		// The ticker notifies this reader from its next look at the
		// listeners (every listenersCheck, before a tick) on: until then,
		// polling does not back off, so that a relay that just started
		// sees ticks as soon. Twice that: a look that began before the
		// listenersCheck was up may still be recording its tick.
		unheard = time.Now().Add(2 * listenersCheck)
		defer c.announced.Store(false)
	}

	c.conns.Add(1) // offers read before now are polled for
	epoch, last, err := readHead(ctx, conn)
	if err != nil {
		return err
	}
	switch {
	case epoch != st.epoch:
		if st.epoch != "" {
			c.o.Logger.Warn("history epoch changed: the database was restored or replaced; clients will resync",
				"old", st.epoch, "new", epoch)
		}
		st.epoch = epoch
		c.advance(st, last)
		sink.Reset(epoch, relay.TickEnd(last.tick))
	default:
		// The tick read last must still be there, with the same snapshot:
		// otherwise the database went back in time (restored from a
		// backup), and the positions clients hold name other changes.
		var snap *string
		if err := conn.QueryRow(ctx, "select (select snap::text from rowcast.ticks where tick = $1)", st.tick).Scan(&snap); err != nil {
			return fmt.Errorf("capture check tick: %w", err)
		}
		if snap == nil || *snap != st.snap {
			c.o.Logger.Error("the changelog's ticks changed under this relay (a restore, or it lagged past the retention); starting a new history epoch",
				"tick", st.tick)
			return newEpoch(ctx, conn, st.epoch)
		}
	}
	// Ticks poked before may not be this database's (a failover to a
	// standby behind, a restore): lowering the mark only allows a wakeup.
	c.poked.Store(st.tick)
	c.setConnected(true)
	if c.readyOnce.CompareAndSwap(false, true) {
		close(c.ready)
	}
	c.o.Logger.Info("capture reading the changelog", "epoch", epoch, "tick", st.tick, "doorbell", c.o.Listen)

	interval := c.o.PollMin
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		c.waiting.Store(0)
		asked := true // this poll was asked for by a poke or a notification
		var o *offer
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-listenErr:
			return err
		case <-bell:
		case <-c.poke:
		case o = <-c.offers:
		case <-timer.C:
			asked = false
		}
		current := o != nil && o.session == c.conns.Load() // read during this connection
		if current && o.tick <= st.tick {
			continue // read already (a poll got there first); the timer keeps its time
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if current && o.tick == st.tick+1 && o.epoch == st.epoch && o.prev == st.snap {
			// The next tick: nothing to ask the database. Any other offer
			// (a tick in between that this reader has not read, another
			// epoch or history, one read before this connection) is
			// polled for.
			for i := range o.txns {
				sink.Txn(&o.txns[i])
			}
			c.advance(st, tickRef{tick: o.tick, snap: o.snap})
			st.progressed = true
			if c.o.OnBehind != nil {
				c.o.OnBehind(0, 0) // it was the latest when its tick committed
			}
			timer.Reset(interval)
			continue
		}
		now := time.Now()
		announced := c.o.Listen && !now.Before(unheard)
		c.waiting.Store(now.UnixNano())
		poked := c.poked.Load()
		n, err := c.poll(ctx, conn, sink, st)
		if err != nil {
			return err
		}
		if n > 0 {
			st.progressed = true
			if announced && !asked && max(poked, c.poked.Load(), c.told.Load()) < st.tick {
				// A tick nobody told this reader of (its listener cut off
				// unnoticed, a tick whose ticker lost its reply): poll
				// often again for a while, as after connecting.
				c.o.Logger.Info("capture read a tick it was not told of; polling every poll_min for a while", "tick", st.tick)
				announced, unheard = false, time.Now().Add(2*listenersCheck)
			}
		}
		if poked > st.tick && n < maxTicks {
			// The poll, begun after the poke, found no such tick: it never
			// committed (its connection died before the commit's reply,
			// and the ticker or the slot holder, unable to tell, poked the
			// reader). Its mark must not hide the notification of the
			// tick that takes its number. Unless a poke came meanwhile:
			// lowering the mark only allows a wakeup.
			c.poked.CompareAndSwap(poked, st.tick)
		}
		c.announced.Store(announced)
		switch {
		case n == maxTicks:
			timer.Reset(0) // more may be waiting
			continue
		case announced:
			// Every tick is announced: this process's ticker pokes the
			// reader, another's notifies it. Polling only backs them up
			// (a listener cut off unnoticed), so it waits PollMax: at
			// tens of changes a second, backing off from PollMin after
			// each tick cost two or three empty polls per change.
			interval = c.o.PollMax
		case n > 0 || c.o.Listen:
			// Ticks come (or the ticker may not yet know of this
			// listener): look again soon.
			interval = c.o.PollMin
		default:
			interval = min(interval*2, c.o.PollMax)
		}
		timer.Reset(interval)
	}
}

// errStalled ends a session whose database stopped answering.
var errStalled = errors.New("capture: the database does not answer")

// watch looks after the session (ctx) while the reader waits for the
// database: each time it has waited StallTimeout without hearing from it,
// watch probes the database on a connection of its own. A database that
// answers is only slow (a large tick, a lock) and the reader waits on; one
// that does not answer within StallTimeout is gone silently (a network
// cut, a hung proxy), and watch cancels the session with errStalled. It
// returns when ctx ends or after cancelling it.
func (c *Tail) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(c.o.StallTimeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		since := c.waiting.Load()
		if since == 0 || time.Since(time.Unix(0, since)) < c.o.StallTimeout {
			continue
		}
		if err := c.probe(ctx); err != nil {
			if ctx.Err() == nil {
				cancel(fmt.Errorf("%w: waited %s, then a probe failed: %w", errStalled, c.o.StallTimeout, err))
			}
			return
		}
		// Alive: probe again only after another StallTimeout of silence.
		c.waiting.CompareAndSwap(since, time.Now().UnixNano())
	}
}

// probe connects to the database afresh and runs a trivial query, within
// StallTimeout.
func (c *Tail) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.StallTimeout)
	defer cancel()
	cc, err := pgx.ParseConfig(c.url)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	AppName(cc, "probe")
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	return nil
}

// heard is a sink that notes, in waiting, when a transaction was read and
// handed on (the time the sink takes is not the database's).
type heard struct {
	relay.Sink
	waiting *atomic.Int64
}

func (h heard) Txn(t *relay.Txn) {
	h.waiting.Store(time.Now().UnixNano())
	h.Sink.Txn(t)
	h.waiting.Store(time.Now().UnixNano())
}

// AppName names the connection cc opens after the relay's part that uses
// it ("rowcast ticker", "rowcast reader", …), so that pg_stat_activity, the
// server's log and the benchmarks can tell the relay's connections apart;
// an application_name the URL sets is kept.
func AppName(cc *pgx.ConnConfig, part string) {
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "rowcast " + part
	}
}

// listenersKey is the advisory lock (a bigint key) that every Tail's
// LISTEN connection holds shared: the ticker looks for it in pg_locks to
// learn whether a reader other than its own process's wants a notification
// per tick (TickerOptions.LocalListener).
const listenersKey = "hashtext('rowcast.listeners')::bigint"

// listen runs a goroutine that LISTENs on channel with a connection of its
// own, named after part (AppName), and signals bell (without blocking) on
// every notification that wake, when not nil, says is news; the first
// error goes to errs. With announce not nil the connection also holds the
// listeners' lock (listenersKey) shared, and announce its backend process
// id, stored before the lock is taken and set back to 0 once the
// connection is closed. Connecting (unless the URL sets connect_timeout)
// and the setup each fail after timeout. stop ends the goroutine and
// waits for it, which closes the connection.
func listen(ctx context.Context, url, part, channel string, timeout time.Duration, announce *atomic.Uint32, bell chan<- struct{}, errs chan<- error,
	wake func(payload string) bool) (stop func(), err error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("listen connect: %w", err)
	}
	AppName(cc, part)
	// A listener only reads: a connection cut off without a reset (a
	// NAT's or a proxy's timeout) is noticed by TCP keepalives alone, in
	// about 20 s with these rather than Go's default two and a half
	// minutes, during which its notifications would be lost.
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3}}
	cc.DialFunc = d.DialContext
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = timeout
	}
	lconn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("listen connect: %w", err)
	}
	closeConn := func() {
		lconn.Close(context.WithoutCancel(ctx))
		if announce != nil {
			announce.Store(0)
		}
	}
	setup := "listen " + channel
	if announce != nil {
		announce.Store(lconn.PgConn().PID())
		setup += "; select pg_advisory_lock_shared(" + listenersKey + ")"
	}
	sctx, cancelSetup := context.WithTimeout(ctx, timeout)
	_, err = lconn.Exec(sctx, setup)
	cancelSetup()
	if err != nil {
		closeConn()
		return nil, fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer closeConn()
		for {
			n, err := lconn.WaitForNotification(ctx)
			if err != nil {
				select {
				case errs <- fmt.Errorf("listen: %w", err):
				default:
				}
				return
			}
			if wake != nil && !wake(n.Payload) {
				continue
			}
			select {
			case bell <- struct{}{}:
			default:
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// tickRef names a tick and its snapshot's text.
type tickRef struct {
	tick int64
	snap string
}

// readHead returns the history epoch and the latest tick.
func readHead(ctx context.Context, conn *pgx.Conn) (string, tickRef, error) {
	var epoch string
	var t tickRef
	err := conn.QueryRow(ctx, `select `+epochExpr+`, t.tick, t.snap::text from rowcast.meta,
		(select tick, snap from rowcast.ticks order by tick desc limit 1) t`).Scan(&epoch, &t.tick, &t.snap)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
			return "", tickRef{}, fmt.Errorf("capture: %w", errNoSchema)
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return "", tickRef{}, fmt.Errorf("capture: no tick recorded: %w", errNoSchema)
		}
		return "", tickRef{}, fmt.Errorf("capture read head: %w", err)
	}
	return epoch, t, nil
}

// newEpoch replaces the history epoch, once, whichever relay gets there
// first, and returns errEpochChanged so that the session reconnects and
// resets its sink.
func newEpoch(ctx context.Context, conn *pgx.Conn, epoch string) error {
	if _, err := conn.Exec(ctx, "update rowcast.meta set epoch = gen_random_uuid() where "+epochExpr+" = $1", epoch); err != nil {
		return fmt.Errorf("capture new epoch: %w", err)
	}
	return errEpochChanged
}

// maxTicks is how many ticks one poll reads at most.
const maxTicks = 256

// headSQL reads the epoch, the latest tick, the snapshot of tick $1 (NULL
// when it is gone: pruning keeps the tick it cut at, so a reader at or
// past the cut finds its own; another than the reader read, when its
// history changed under it), the age in seconds of the tick after it, the
// first not read (NULL when none), and the snapshot of the last tick a
// poll from $1 reads (at most $2 ticks; NULL when none). Ticks are
// numbered without gaps, so the ticks a poll reads are the numbers from
// $1 + 1 to that one: a query listing them cost about a tenth of the
// reader's CPU time per poll (measured: 275-300 µs per poll without it,
// 305-322 with it).
const headSQL = `select ` + epochExpr + `, (select max(tick) from rowcast.ticks),
  (select snap::text from rowcast.ticks where tick = $1),
  (select extract(epoch from clock_timestamp() - at)::float8 from rowcast.ticks where tick = $1 + 1),
  (select snap::text from rowcast.ticks where tick = least((select max(tick) from rowcast.ticks), $1 + $2) and tick > $1)
from rowcast.meta`

// batchSQL reads the batches of the ticks after $1 (at most $2): per tick,
// the rows of the transactions visible in its snapshot and not in the
// previous tick's (at or past that one's xmax, or in progress then: its
// xip), transactions ordered by the highest id each wrote, a transaction's
// rows by id. The two parts are index lookups however far back an open
// transaction holds the snapshots' xmin, and they do not overlap. The xip
// part looks each transaction up in the index, whatever the statistics say
// (offset 0 keeps the planner from turning it into a join): written as
// "xid in (select pg_snapshot_xip(…))", and as a plain join too, it was
// planned as a scan of the whole changelog, for every tick with a
// transaction in progress, while the changelog had no statistics yet
// (before autovacuum's first analyze): 1.3 s per poll at 100,000 rows.
// The previous tick is looked up the same way, so that the plan's shape
// does not rest on estimates (the reader's plans are generic).
const batchSQL = `select t.tick, max(c.id) over (partition by t.tick, c.xid) as tx, coalesce(c.origin_at, t.at), ` + Columns + `
from rowcast.ticks t` + tickRowsSQL + `
where t.tick > $1 and t.tick <= $1 + $2
order by t.tick, tx, c.id`

// tickRowsSQL joins the changelog rows c of tick t, a row of rowcast.ticks
// (batchSQL says how).
const tickRowsSQL = `
cross join lateral (select p.snap from rowcast.ticks p where p.tick = t.tick - 1 offset 0) p
cross join lateral (
    select * from rowcast.changelog c
    where c.xid >= pg_snapshot_xmax(p.snap) and c.xid < t.snap_xmax and pg_visible_in_snapshot(c.xid, t.snap)
    union all
    select c.* from (select xid from pg_snapshot_xip(p.snap) x(xid) where pg_visible_in_snapshot(x.xid, t.snap) offset 0) x
    cross join lateral (select * from rowcast.changelog c where c.xid = x.xid offset 0) c
) c`

// offerMax is the most changes a tick may hold for this process's ticker
// to read it for the reader (readOffer); the reader reads a larger one
// itself, in parts.
const offerMax = 256

// offerSQL reads, in the transaction that called rowcast.tick() and before
// it commits, the changes of the tick it recorded (the latest, if this
// transaction wrote it: none after an empty look), as batchSQL does but in
// no order (readOffer orders them), or none when the tick holds more than
// offerMax: they are read up to one more and counted before any is sent,
// so that a large tick costs the ticker little. Before each change's
// columns come the count, the history epoch, the tick's snapshot and the
// snapshot of the tick before. Recording the next tick waits for this
// transaction (the tick's lock), so the latest is its own. xmin is the
// 32-bit transaction id, compared as text for PostgreSQL 13. One statement
// with no order, window or common table expression: the ticker's read
// cost the server about a quarter more as one that ordered the changes
// followed by one that read the snapshots (lab, server CPU per read of a
// three-change tick: 94 against 71 µs).
var offerSQL = `select * from (select count(*) over () as n, o.* from (
select (select ` + epochExpr + ` from rowcast.meta), t.snap::text, p.snap::text,
  t.tick, 0::bigint, coalesce(c.origin_at, t.at), ` + Columns + `
from (select * from rowcast.ticks where tick = (select max(tick) from rowcast.ticks)
    and xmin::text::bigint = pg_current_xact_id_if_assigned()::text::bigint % 4294967296) t` + tickRowsSQL + `
limit ` + strconv.Itoa(offerMax+1) + `) o) o
where n <= ` + strconv.Itoa(offerMax)

// readOffer reads the results of offerSQL, queued after a call of
// rowcast.tick() that recorded tick, for Tail.offer, as read on the
// reader's connection number session. It returns nil when the tick holds
// more than offerMax changes, or none: the reader polls for those. The
// reader takes the offer only when the snapshot of the tick before, as
// read here, is that of the tick it read last: then the two ticks follow
// each other in the history it reads (not a standby's that was behind,
// after a failover the reader has not noticed yet). No prune takes the
// tick before while this one is not committed (a prune keeps the latest
// tick it sees). The caller must hand the offer on only once the tick's
// transaction committed.
func readOffer(br pgx.BatchResults, tick, session int64) (*offer, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read tick: %w", err)
	}
	defer rows.Close()
	o := &offer{session: session, tick: tick}
	var changes []relay.Change
	var sc Scanner
	var count int64
	for rows.Next() {
		ch, err := sc.Scan(rows, &count, &o.epoch, &o.snap, &o.prev)
		if err != nil {
			return nil, fmt.Errorf("read tick: %w", err)
		}
		if ch.Pos.Tick != tick {
			return nil, fmt.Errorf("read tick: tick %d recorded, %d read", tick, ch.Pos.Tick)
		}
		changes = append(changes, ch)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tick: %w", err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	orderTick(changes)
	i := 0
	err = group([]tickRef{{tick: tick}}, (*collected)(&o.txns), func() (relay.Change, bool, error) {
		if i == len(changes) {
			return relay.Change{}, false, nil
		}
		i++
		return changes[i-1], true, nil
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// orderTick puts the changes of one tick in the order batchSQL reads them
// in: transactions by the highest id each wrote (which it sets as their
// Pos.Tx), a transaction's changes by id.
func orderTick(changes []relay.Change) {
	slices.SortFunc(changes, func(a, b relay.Change) int {
		return cmp.Or(cmp.Compare(a.XID, b.XID), cmp.Compare(a.Pos.ID, b.Pos.ID))
	})
	for i := 0; i < len(changes); {
		j := i + 1
		for j < len(changes) && changes[j].XID == changes[i].XID {
			j++
		}
		for k := i; k < j; k++ {
			changes[k].Pos.Tx = changes[j-1].Pos.ID
		}
		i = j
	}
	slices.SortFunc(changes, func(a, b relay.Change) int { return a.Pos.Compare(b.Pos) })
}

// collected is a relay.Sink that keeps what it is handed.
type collected []relay.Txn

func (c *collected) Reset(string, relay.Pos) {}
func (c *collected) Txn(t *relay.Txn)        { *c = append(*c, *t) }

// poll reads the ticks recorded since the last one read and hands their
// transactions to the sink; it returns how many ticks it read.
func (c *Tail) poll(ctx context.Context, conn *pgx.Conn, sink relay.Sink, st *state) (int, error) {
	// One snapshot for both reads: a prune that commits in between cannot
	// take a batch away after the check that it is there. A batch is one
	// implicit transaction (one Sync), repeatable read on this connection
	// (session): its first statement's snapshot serves both, without a
	// BEGIN and a COMMIT of their own (a tenth of the reader's CPU per
	// poll at 1,000 changes/s).
	c.polls.Add(1)
	b := &pgx.Batch{}
	b.Queue(headSQL, st.tick, maxTicks)
	b.Queue(batchSQL, st.tick, maxTicks)
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	var epoch string
	var latest *int64
	var readSnap, lastSnap *string // of the tick read last, of the last to read
	var age *float64
	if err := br.QueryRow().Scan(&epoch, &latest, &readSnap, &age, &lastSnap); err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	if epoch != st.epoch {
		// The history was restarted (a restore was noticed, or a logical
		// slot was recreated): what follows does not continue the positions
		// clients hold.
		return 0, errEpochChanged
	}
	if latest == nil || *latest < st.tick {
		c.o.Logger.Error("the changelog's ticks went back (a restore); starting a new history epoch", "tick", st.tick)
		if err := br.Close(); err != nil {
			return 0, fmt.Errorf("capture poll: %w", err)
		}
		return 0, newEpoch(ctx, conn, epoch)
	}
	if c.o.OnBehind != nil {
		behind := time.Duration(0)
		if age != nil {
			behind = time.Duration(*age * float64(time.Second))
		}
		c.o.OnBehind(*latest-st.tick, behind)
	}
	if readSnap == nil || *readSnap != st.snap {
		if readSnap == nil {
			// Pruning went past what this relay has read: the batches
			// after it are gone, and its sessions would miss them without
			// being told.
			c.o.Logger.Error("this relay fell behind the history's retention; starting a new history epoch", "tick", st.tick)
		} else {
			c.o.Logger.Error("the changelog's ticks changed under this relay (a failover to a standby that was behind); starting a new history epoch",
				"tick", st.tick)
		}
		if err := br.Close(); err != nil {
			return 0, fmt.Errorf("capture poll: %w", err)
		}
		return 0, newEpoch(ctx, conn, epoch)
	}
	var ticks []tickRef
	for n := st.tick + 1; n <= min(*latest, st.tick+maxTicks); n++ {
		ticks = append(ticks, tickRef{tick: n})
	}
	if len(ticks) > 0 {
		if lastSnap == nil {
			return 0, fmt.Errorf("capture poll: tick %d is missing", ticks[len(ticks)-1].tick)
		}
		ticks[len(ticks)-1].snap = *lastSnap
	}
	rows, err := br.Query()
	if err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	if len(ticks) == 0 {
		rows.Close()
		if err := br.Close(); err != nil {
			return 0, fmt.Errorf("capture poll: %w", err)
		}
		return 0, nil
	}
	if err := read(rows, ticks, sink); err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	if err := br.Close(); err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	last := ticks[len(ticks)-1]
	c.advance(st, last)
	return len(ticks), nil
}

// txnPart is the most changes read hands on at once: a larger transaction
// goes in parts of this many (relay.Txn.More), so that the reader holds
// about a megabyte of it at a time, not all of it (a 100,000-row
// transaction took 230 MiB).
const txnPart = 1000

// read hands the changes in rows, of the given ticks, to the sink one
// transaction at a time (in parts of txnPart changes), and a tick's end
// with its last transaction (an empty one when the tick has none). Rows of
// later ticks (recorded after the ticks were listed) are left for the next
// poll. It closes rows.
func read(rows pgx.Rows, ticks []tickRef, sink relay.Sink) error {
	defer rows.Close()
	var sc Scanner
	return group(ticks, sink, func() (relay.Change, bool, error) {
		if !rows.Next() {
			return relay.Change{}, false, rows.Err()
		}
		ch, err := sc.Scan(rows)
		return ch, err == nil, err
	})
}

// group hands the changes next returns, of the given ticks in their
// order, to the sink as read says; next reports false when there are no
// more. On an error from next it hands on no tick's end.
func group(ticks []tickRef, sink relay.Sink, next func() (relay.Change, bool, error)) error {
	var txn relay.Txn
	open := 0 // index in ticks of the first tick not yet ended
	endTicks := func(through int64) {
		for open < len(ticks) && ticks[open].tick <= through {
			end := relay.TickEnd(ticks[open].tick)
			if len(txn.Changes) > 0 && txn.Changes[0].Pos.Tick == ticks[open].tick {
				txn.Head = end
				sink.Txn(&txn)
				txn = relay.Txn{}
			} else {
				sink.Txn(&relay.Txn{Head: end})
			}
			open++
		}
	}
	last := ticks[len(ticks)-1].tick
	for {
		ch, ok, err := next()
		if err != nil {
			return err
		}
		if !ok || ch.Pos.Tick > last {
			break
		}
		if n := len(txn.Changes); n >= txnPart && ch.Pos.Tick == txn.Changes[0].Pos.Tick && ch.XID == txn.XID {
			// The transaction goes on: hand on what is held as a part.
			txn.Head, txn.More = txn.Changes[n-1].Pos, true
			sink.Txn(&txn)
			txn = relay.Txn{}
		}
		if len(txn.Changes) > 0 && (ch.Pos.Tick != txn.Changes[0].Pos.Tick || ch.XID != txn.XID) {
			if ch.Pos.Tick != txn.Changes[0].Pos.Tick {
				endTicks(ch.Pos.Tick - 1)
			} else {
				txn.Head = txn.Changes[len(txn.Changes)-1].Pos
				sink.Txn(&txn)
				txn = relay.Txn{}
			}
		}
		if len(txn.Changes) == 0 {
			endTicks(ch.Pos.Tick - 1) // ticks before this one with no rows
			txn.XID, txn.CommittedAt = ch.XID, ch.CommittedAt
		}
		txn.Changes = append(txn.Changes, ch)
	}
	endTicks(last)
	return nil
}
