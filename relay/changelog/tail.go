// Package changelog owns rowcast.changelog, the table both capture modes
// fill (the row triggers in trigger mode, the slot holder of package
// capture/logical in logical mode): its row format (Columns, Scanner),
// tailing it in commit order (Tail), replaying it after a position (History)
// and pruning it (Pruner).
//
// Tailing is PgQ-style: each poll runs in one REPEATABLE READ transaction
// that takes pg_current_snapshot() and reads the rows of every transaction
// that was not visible in the previous poll's snapshot but is visible now, so
// a long transaction never holds back short ones and arrives once, when it
// commits. A LISTEN doorbell (an empty pg_notify at commit) wakes the reader
// at once; adaptive polling is the backstop when a notification is missed or
// the doorbell is switched off. Nothing is handed on, tailed or replayed,
// before the WAL holds it durably (WaitFlushed).
package changelog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rowcast/rowcast/relay"
)

// Channel is the LISTEN channel the commit-time sequencer notifies.
const Channel = "rowcast"

// TailOptions tunes a Tail. Zero values select the defaults.
type TailOptions struct {
	// PollMin is the poll interval while changes flow (default 5ms); PollMax
	// the interval the reader backs off to when idle (default 1s).
	PollMin, PollMax time.Duration
	// Listen enables the LISTEN doorbell (the installed sequencer must
	// notify for it to help).
	Listen bool
	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
	// OnConnected is called with true once the capture is reading and with
	// false when it lost the database; nil ignores it.
	OnConnected func(bool)
}

// Tail reads the changelog in commit order and hands each committed
// transaction to a relay.Sink. Create it with NewTail and call Run once.
type Tail struct {
	url       string
	o         TailOptions
	connected atomic.Bool
	ready     chan struct{}
	readyOnce atomic.Bool
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
	return &Tail{url: url, o: o, ready: make(chan struct{})}
}

// Ready is closed once the capture has read its starting snapshot and
// called relay.Sink.Reset: every transaction that commits after Ready is closed
// reaches the sink.
func (c *Tail) Ready() <-chan struct{} { return c.ready }

// Connected reports whether the capture is currently reading.
func (c *Tail) Connected() bool { return c.connected.Load() }

// Run reads until ctx ends, then returns ctx's error. Any database error
// closes the connections, waits with capped exponential backoff, reconnects
// and continues from the last snapshot read, so nothing committed meanwhile is
// lost. It returns early only for errors that retrying cannot fix (the
// rowcast schema is missing).
func (c *Tail) Run(ctx context.Context, sink relay.Sink) error {
	st := &state{}
	backoff := 100 * time.Millisecond
	for {
		err := c.session(ctx, sink, st)
		c.setConnected(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errNoSchema) {
			return err
		}
		c.o.Logger.Warn("capture lost the database; reconnecting", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if st.progressed {
			backoff = 100 * time.Millisecond
			st.progressed = false
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
	epoch      string
	snapshot   string // pg_snapshot text of the last poll; "" before the first
	progressed bool
	// server identifies the server run read from when last connected;
	// zero before the first connection.
	server run
	// sent is the last seq handed to the sink per stream. Changes at or
	// below it are not handed on again: after a server restart the reader
	// re-reads from safe (see restarted).
	sent map[string]int64
	// safe is the latest snapshot known to be durable: the WAL was flushed
	// through the insert position read after it was taken, so no
	// transaction it shows finished can be forgotten by a crash.
	safe string
	// cand is the last poll's snapshot and candLSN the insert position
	// read after it; the next poll makes it safe if the WAL was flushed
	// through candLSN by then.
	cand, candLSN string
}

func (c *Tail) setConnected(v bool) {
	if c.connected.Swap(v) != v && c.o.OnConnected != nil {
		c.o.OnConnected(v)
	}
}

// session runs one connected period: it returns on the first error.
func (c *Tail) session(ctx context.Context, sink relay.Sink, st *state) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc, err := pgx.ParseConfig(c.url)
	if err != nil {
		return fmt.Errorf("capture connect: %w", err)
	}
	// The changelog grows and shrinks by orders of magnitude; a generic plan
	// cached while it was small would scan it whole later.
	cc.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	// The reader's own writes (the doorbell's arming) commit locally: with
	// a synchronous standby down, a commit that waits for it would stop
	// the reader, and with it every relay's events.
	cc.RuntimeParams["synchronous_commit"] = "local"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("capture connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	bell := make(chan struct{}, 1)
	listenErr := make(chan error, 1)
	if c.o.Listen {
		lconn, err := pgx.Connect(ctx, c.url)
		if err != nil {
			return fmt.Errorf("capture listen connect: %w", err)
		}
		if _, err := lconn.Exec(ctx, "listen "+Channel); err != nil {
			lconn.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("capture listen: %w", err)
		}
		// The listener goroutine owns lconn and closes it; session waits for
		// it before returning.
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() {
			defer close(done)
			defer lconn.Close(context.WithoutCancel(ctx))
			for {
				if _, err := lconn.WaitForNotification(ctx); err != nil {
					listenErr <- fmt.Errorf("capture listen: %w", err)
					return
				}
				select {
				case bell <- struct{}{}:
				default:
				}
			}
		}()
	}

	epoch, server, err := readEpoch(ctx, conn)
	if err != nil {
		return err
	}
	if epoch != st.epoch {
		if st.epoch != "" {
			c.o.Logger.Warn("history epoch changed: the database was restored or replaced; clients will resync",
				"old", st.epoch, "new", epoch)
		}
		snap, heads, err := start(ctx, conn)
		if err != nil {
			return err
		}
		st.epoch, st.snapshot, st.sent = epoch, snap, maps.Clone(heads)
		st.safe, st.cand, st.candLSN = snap, "", "" // start waited for the flush
		sink.Reset(epoch, heads)
	} else if server.restartedSince(st.server) {
		if err := c.restarted(ctx, conn, st); err != nil {
			return err
		}
	}
	st.server = server
	c.setConnected(true)
	if c.readyOnce.CompareAndSwap(false, true) {
		close(c.ready)
	}
	c.o.Logger.Info("capture reading the changelog", "epoch", epoch, "doorbell", c.o.Listen)

	interval := c.o.PollMin
	idle, armed := 0, false
	if err := c.setBell(ctx, conn, &armed, true); err != nil { // until changes flow
		return err
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-listenErr:
			return err
		case <-bell:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
		n, err := c.poll(ctx, conn, sink, st)
		if err != nil {
			return err
		}
		if n > 0 {
			st.progressed = true
			interval = c.o.PollMin
			idle = 0
			// Changes flow: polling finds them; writers need not ring.
			if err := c.setBell(ctx, conn, &armed, false); err != nil {
				return err
			}
			timer.Reset(0)
			continue
		}
		if idle++; idle == idleBeforeArming {
			if err := c.setBell(ctx, conn, &armed, true); err != nil {
				return err
			}
		}
		interval = min(interval*2, c.o.PollMax)
		timer.Reset(interval)
	}
}

// idleBeforeArming is how many empty polls in a row make the relay ask for
// the doorbell again (about 75ms at the default poll interval).
const idleBeforeArming = 4

// setBell arms or disarms the doorbell when the doorbell is in use and the
// state differs from what this relay last set.
func (c *Tail) setBell(ctx context.Context, conn *pgx.Conn, armed *bool, v bool) error {
	if !c.o.Listen || *armed == v {
		return nil
	}
	if _, err := conn.Exec(ctx, "update rowcast.meta set bell = $1 where bell <> $1", v); err != nil {
		return fmt.Errorf("capture doorbell: %w", err)
	}
	*armed = v
	return nil
}

// run identifies one run of the database server: what may have forgotten
// asynchronous commits (and reused their transaction ids) changes it.
type run struct {
	// started is pg_postmaster_start_time(): a restart of the whole server
	// (or a failover to another one) changes it.
	started string
	// boot is the token in the unlogged table rowcast.boot. Crash recovery
	// empties unlogged tables, and so does promoting a standby (they are
	// never replicated); the next relay to connect writes a new token. It
	// catches what started misses: a backend that crashed (killed by the
	// OOM killer, say) makes the postmaster recover from the WAL and lose
	// unflushed commits without restarting.
	boot string
}

// restartedSince reports whether r is another server run than prev, which
// is the zero run before the first connection (then it reports false).
func (r run) restartedSince(prev run) bool {
	if prev == (run{}) {
		return false
	}
	return r.started != prev.started || r.boot != prev.boot
}

// bootSQL writes a boot token unless there is one, and reads the epoch, the
// server's start time and the token that this statement wrote (one that
// another relay wrote concurrently is not visible to it: NULL then).
const bootSQL = `with b as (insert into rowcast.boot default values on conflict do nothing returning token)
select ` + epochExpr + `, pg_postmaster_start_time()::text,
  coalesce((select token::text from b), (select token::text from rowcast.boot))
from rowcast.meta`

// readEpoch returns the history epoch and the server run.
func readEpoch(ctx context.Context, conn *pgx.Conn) (epoch string, r run, err error) {
	var boot *string
	err = conn.QueryRow(ctx, bootSQL).Scan(&epoch, &r.started, &boot)
	if err == nil && boot == nil {
		err = conn.QueryRow(ctx, "select token::text from rowcast.boot").Scan(&r.boot)
	} else if err == nil {
		r.boot = *boot
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
			return "", run{}, fmt.Errorf("capture: %w", errNoSchema)
		}
		return "", run{}, fmt.Errorf("capture read epoch: %w", err)
	}
	return epoch, r, nil
}

// restarted prepares reading after the server restarted (see run). A crash
// restart forgets what its WAL had not made durable: a transaction id that
// wrote nothing durable is handed out again, so a transaction the last
// snapshot counted as finished may be a new one, and its id may be below
// that snapshot's xmin. Reading resumes from the last snapshot known to be
// durable (st.safe), whose finished transactions no crash forgets, and what
// was sent already is skipped by seq.
//
// Nothing sent can have been forgotten, since poll hands on only what the
// WAL has flushed; should a stream's counter still be below what was sent
// (a server whose storage lost acknowledged writes), the positions clients
// hold no longer name the same changes, and a new epoch starts.
func (c *Tail) restarted(ctx context.Context, conn *pgx.Conn, st *state) error {
	rows, err := conn.Query(ctx, "select stream, last_seq from rowcast.streams")
	if err != nil {
		return fmt.Errorf("capture after restart: %w", err)
	}
	var stream string
	var last int64
	heads := make(map[string]int64)
	if _, err := pgx.ForEachRow(rows, []any{&stream, &last}, func() error { heads[stream] = last; return nil }); err != nil {
		return fmt.Errorf("capture after restart: %w", err)
	}
	var behind []string
	for s, seq := range st.sent {
		if heads[s] < seq {
			behind = append(behind, s)
		}
	}
	if len(behind) > 0 {
		c.o.Logger.Error("the database lost committed changes that were already sent; starting a new history epoch",
			"streams", behind)
		return newEpoch(ctx, conn, st.epoch)
	}
	c.o.Logger.Info("the database restarted; re-reading from the last snapshot known to be durable")
	st.snapshot, st.cand, st.candLSN = st.safe, "", ""
	return nil
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

// start takes the starting snapshot and every stream's head in it, and
// returns once the WAL holds every commit the snapshot shows: the heads go
// to the sink (and on to clients as positions), and a crash that forgot a
// commit made with synchronous_commit off would hand its seq to another
// change. The flush position is compared with the insert position read after
// the snapshot was taken, which every commit it shows precedes.
func start(ctx context.Context, conn *pgx.Conn) (string, map[string]int64, error) {
	var snap, lsn string
	var durable bool
	heads := make(map[string]int64)
	err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `select pg_current_snapshot()::text,
			pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn(), pg_current_wal_insert_lsn()::text`).Scan(&snap, &durable, &lsn); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "select stream, last_seq from rowcast.streams")
		if err != nil {
			return err
		}
		var s string
		var n int64
		_, err = pgx.ForEachRow(rows, []any{&s, &n}, func() error { heads[s] = n; return nil })
		return err
	})
	if err != nil {
		return "", nil, fmt.Errorf("capture start: %w", err)
	}
	if !durable {
		if err := WaitFlushed(ctx, conn, lsn); err != nil {
			return "", nil, fmt.Errorf("capture start: %w", err)
		}
	}
	return snap, heads, nil
}

// pollSQL reads the changes of the transactions that became visible since
// snapshot $1, in the reading transaction's own snapshot; it reads nothing
// unless the rowcast.durable setting of that transaction is true.
const pollSQL = `select ` + Columns + ` from rowcast.changelog
where xid >= pg_snapshot_xmin($1::pg_snapshot) and not pg_visible_in_snapshot(xid, $1::pg_snapshot)
  and seq is not null and current_setting('rowcast.durable')::bool
order by committed_at, xid, id`

// laterSQL reads what pollSQL would have read in snapshot $2, from a later
// snapshot.
const laterSQL = `select ` + Columns + ` from rowcast.changelog
where xid >= pg_snapshot_xmin($1::pg_snapshot) and not pg_visible_in_snapshot(xid, $1::pg_snapshot)
  and pg_visible_in_snapshot(xid, $2::pg_snapshot) and seq is not null
order by committed_at, xid, id`

// headSQL takes the poll's snapshot and says whether every transaction
// that became visible in it is durable. One committed with synchronous_commit
// on is (PostgreSQL flushed its commit before making it visible); one
// committed with it off (the sequencer marks its rows async_commit) is once
// the WAL is flushed up to the insert position read after the snapshot was
// taken, which its commit record precedes. It also records the answer as
// rowcast.durable for pollSQL. The flush position is read first, so the
// answer errs on the side of waiting. Last, it says whether the WAL is
// flushed through $2, the insert position read after the previous poll's
// snapshot.
const headSQL = `select pg_current_snapshot()::text, (select ` + epochExpr + ` from rowcast.meta),
  pg_snapshot_xmin(pg_current_snapshot()) < pg_snapshot_xmin($1::pg_snapshot),
  set_config('rowcast.durable', (pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()
    or not exists (select from rowcast.changelog
      where xid >= pg_snapshot_xmin($1::pg_snapshot) and not pg_visible_in_snapshot(xid, $1::pg_snapshot)
        and async_commit))::text, true)::bool,
  pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn() >= $2::pg_lsn`

// poll reads every transaction that committed since the last snapshot and
// hands them to the sink; it returns how many changes it read.
//
// A commit is handed on only once the WAL holds it durably: with
// synchronous_commit off PostgreSQL acknowledges commits before their WAL
// is flushed, and a crash forgets them (and reuses their positions). When
// the snapshot's commits are not all flushed yet, poll waits for the WAL
// flush (the WAL writer's rhythm, wal_writer_delay) before reading them.
func (c *Tail) poll(ctx context.Context, conn *pgx.Conn, sink relay.Sink, st *state) (int, error) {
	b := &pgx.Batch{}
	b.Queue("begin isolation level repeatable read read only")
	candLSN := st.candLSN
	if candLSN == "" {
		candLSN = "FFFFFFFF/FFFFFFFF" // no candidate: never flushed through
	}
	b.Queue(headSQL, st.snapshot, candLSN)
	b.Queue(pollSQL, st.snapshot)
	b.Queue("commit")
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	var next, epoch, lsn string
	var backwards, durable, candFlushed bool
	if err := br.QueryRow().Scan(&next, &epoch, &backwards, &durable, &lsn, &candFlushed); err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	if candFlushed {
		st.safe = st.cand
	}
	if backwards && epoch == st.epoch {
		// Transaction ids went back: this is another database than the one
		// read so far (restored from a backup, or a replica promoted before
		// it had everything). Positions do not carry over; start a new
		// epoch, once, whichever replica notices first.
		c.o.Logger.Warn("transaction ids went backwards: the database was restored or failed over; starting a new history epoch")
		if err := br.Close(); err != nil {
			return 0, fmt.Errorf("capture poll: %w", err)
		}
		return 0, newEpoch(ctx, conn, epoch)
	}
	if epoch != st.epoch {
		// The history was restarted (a logical slot was recreated): what
		// follows does not continue the positions clients hold.
		return 0, errEpochChanged
	}
	rows, err := br.Query()
	if err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	n, err := st.read(rows, sink)
	if err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	if err := br.Close(); err != nil {
		return 0, fmt.Errorf("capture poll: %w", err)
	}
	if !durable {
		if err := WaitFlushed(ctx, conn, lsn); err != nil {
			return 0, err
		}
		st.cand, st.candLSN = "", ""
		rows, err := conn.Query(ctx, laterSQL, st.snapshot, next)
		if err != nil {
			return 0, fmt.Errorf("capture poll: %w", err)
		}
		if n, err = st.read(rows, sink); err != nil {
			return 0, fmt.Errorf("capture poll: %w", err)
		}
	}
	if durable {
		st.cand, st.candLSN = next, lsn
	} else {
		st.safe = next // the WAL was flushed through lsn above
	}
	st.snapshot = next
	return n, nil
}

// read hands the changes in rows to the sink one transaction at a time,
// skipping what was sent already, and returns how many changes it read. It
// closes rows.
func (st *state) read(rows pgx.Rows, sink relay.Sink) (int, error) {
	defer rows.Close()
	n := 0
	var txn relay.Txn
	flush := func() {
		if len(txn.Changes) > 0 {
			sink.Txn(&txn)
			txn = relay.Txn{}
		}
	}
	var sc Scanner
	for rows.Next() {
		ch, err := sc.Scan(rows)
		if err != nil {
			return 0, err
		}
		n++
		if ch.Seq <= st.sent[ch.Stream] {
			continue
		}
		st.sent[ch.Stream] = ch.Seq
		if ch.XID != txn.XID {
			flush()
			txn.XID, txn.CommittedAt = ch.XID, ch.CommittedAt
		}
		txn.Changes = append(txn.Changes, ch)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	flush()
	return n, nil
}
