// Package logical captures changes through a logical replication slot
// (pgoutput, protocol 2, streaming off, so only committed transactions
// arrive, in commit order) and writes each decoded transaction into the same
// changelog that the row triggers fill in trigger mode, so both modes share
// one history, one sequencing and one resume path; relays then read the
// changelog (package changelog) exactly as in trigger mode.
//
// One relay replica at a time holds the slot, elected by a session-level
// advisory lock; the others keep serving their sessions from the changelog
// and take over when the holder's lock session ends. The holder applies each
// source transaction in one database transaction that also records the
// transaction's commit LSN, and only after that commit acknowledges the
// transaction's end LSN, so a crash replays at most what was not written and
// the replay is skipped by LSN.
//
// Values reach the changelog rendered by PostgreSQL itself: each change's
// text-format columns are cast to their types as named by the relation
// message that precedes the change (so as the table was when the change
// was committed, whatever migrations ran since) and rendered to JSON, which
// a generated per-table apply function, sharing its body with the trigger
// function, uses where the trigger uses to_jsonb(NEW); so the event data is
// byte-identical in both modes.
//
// The Holder opens its connections through Options.Connect and
// Options.ConnectReplication and closes them itself. Files: logical.go
// (Holder, options, attempt accounting), slot.go (election, slot and
// publication management, session settings), decode.go (pgoutput messages
// and tuples into row JSON, the relation cache), apply.go (the receive
// loop, group commits, acknowledgements).
package logical

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// Options configures a Holder. Zero values select the defaults.
type Options struct {
	// Slot and Publication name the replication slot and publication
	// (defaults "rowcast" and "rowcast").
	Slot, Publication string
	// StandbyInterval is how often status is reported to the server while
	// idle (default 10s; keep it well inside wal_sender_timeout).
	StandbyInterval time.Duration
	// IdleTimeout is the election connection's idle_session_timeout and
	// idle_in_transaction_session_timeout (default 30s, at least three
	// StandbyIntervals; the holder uses the connection at every status
	// report): a holder that stops (its process paused, its network cut)
	// has its session, and the election lock with it, ended by the server,
	// so another replica takes the slot over. PostgreSQL 13 lacks
	// idle_session_timeout: there only TCP keepalives apply, which the
	// kernel of a paused process still answers.
	IdleTimeout time.Duration
	// Retry is the pause between attempts to take the slot (default 2s).
	Retry time.Duration
	// Batch is how many changes of one run (consecutive changes of one
	// relation) are queued before what is queued is sent (default 500).
	Batch int
	// GroupRows and GroupDelay bound a group commit: consecutive source
	// transactions are written in one database transaction until it holds
	// GroupRows changes (default 5000) or is GroupDelay old (default 5ms),
	// or the stream pauses for GroupPause (default 500µs).
	GroupRows  int
	GroupDelay time.Duration
	GroupPause time.Duration
	// Doorbell, when not empty, is the channel each group commit that
	// does not record its own tick (Ticker) notifies (changelog.Channel;
	// payload "logical"), so that the changelog's ticker, wherever it
	// runs, ticks at once instead of at its next look: without it the
	// ticker finds the holder's writes only when it polls, and it backs
	// off between the holder's group commits.
	Doorbell string
	// LocalTicker, when not nil, reports whether this process's changelog
	// ticker holds the ticker lock (changelog.Ticker.Holding), and
	// WakeTicker wakes it (changelog.Ticker.Ring). While it does, a group
	// commit wakes it in process once committed, instead of notifying the
	// Doorbell: a notification wakes every listening backend of the
	// database, whatever its channel. When the ticker lost the lock while
	// the group committed, the group notifies the Doorbell after all.
	LocalTicker func() bool
	WakeTicker  func()
	// Ticker, when not nil, is this process's changelog ticker: each
	// group commit records the tick that shows it, and reads its changes
	// for the ticker's reader, in the COMMIT's own round trip
	// (changelog.Ticker.QueueTick), so that it neither rings nor wakes
	// the ticker, nor waits for its look. When the server refuses a group
	// tick (a schema this relay does not know, the tick's lock held past
	// a second), group ticks pause for a minute and the groups ring as
	// above.
	Ticker *changelog.Ticker
	Logger *slog.Logger
	// OnHolder is called with true when this replica takes the slot and
	// false when it lets it go.
	OnHolder func(bool)
	// OnProgress is called after each acknowledgement with the last commit
	// LSN applied and the slot's lag in bytes behind the server's WAL end.
	OnProgress func(applied uint64, lagBytes uint64)
	// Failures is how many consecutive failed attempts make Failing report
	// true (default 3). An attempt fails when this replica holds the slot
	// and its replication ends in an error before it made progress, or when
	// another replica holds the election lock but no connection has been
	// streaming from the slot for Retry.
	Failures int
	// OnFailing is called with true and the reason when Failing turns
	// true, and with false and "" when it turns false again.
	OnFailing func(failing bool, reason string)
	// OnFailure, when not nil, is called with the last attempt's error
	// when Failing turns true (the error, not its text, so that a
	// reporter can leave out what a PostgreSQL message quotes).
	OnFailure func(err error)
	// OnSlotLost, when not nil, is called when the holder found the slot
	// missing, invalidated or without the publication in its history, and
	// recreates it under a new history epoch (every session resyncs).
	OnSlotLost func(why string)
	// ApplyName returns the unquoted name, in schema rowcast, of the apply
	// function the installer generated for a source table (the wiring passes
	// triggers.ApplyName). Required: New panics without it.
	ApplyName func(schema, table string) string
	// InstallLock is the key of the advisory lock an install holds
	// exclusively while it replaces the apply functions (the wiring passes
	// triggers.InstallLockKey; hashed with hashtext). Each group takes it
	// shared first, so that no install commits while a group is open, and
	// then locks rowcast.holder_nulls, which makes its backend read what
	// an install committed before (a function replaced while a group
	// waited would otherwise run as it was). Required: New panics without
	// it.
	InstallLock string
	// CheckSlot reports why the replication slot named slot cannot serve
	// logical capture of the connected database, one problem a string (the
	// wiring passes triggers.CheckSlot, which install uses too); each attempt
	// to take the slot runs it first. Required: New panics without it.
	CheckSlot func(ctx context.Context, conn *pgx.Conn, slot string) ([]string, error)
	// Connect opens a connection to the database the slot decodes; each
	// attempt opens one, which takes the election lock, manages the slot
	// and writes the changelog (with synchronous_commit = local, so a
	// synchronous standby that is down cannot stall capture). The Holder
	// closes every connection Connect returns, when the attempt ends.
	// Required: New panics without it.
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// ConnectReplication opens a replication connection (runtime parameter
	// replication=database) to the same database; each attempt that holds
	// the election lock opens one to stream from the slot. The Holder
	// closes every connection ConnectReplication returns, when the attempt
	// ends or sooner to let the slot go. Required: New panics without it.
	// ReplicationConfig builds both from one parsed configuration.
	ConnectReplication func(ctx context.Context) (*pgconn.PgConn, error)
}

// ReplicationConfig returns a copy of cfg with the runtime parameter that
// makes a connection a logical replication connection to cfg's database
// (replication=database), for Options.ConnectReplication:
//
//	rc := logical.ReplicationConfig(&cfg.Config)
//	o.ConnectReplication = func(ctx context.Context) (*pgconn.PgConn, error) {
//		return pgconn.ConnectConfig(ctx, rc)
//	}
func ReplicationConfig(cfg *pgconn.Config) *pgconn.Config {
	rc := cfg.Copy()
	if rc.RuntimeParams == nil {
		rc.RuntimeParams = map[string]string{}
	}
	rc.RuntimeParams["replication"] = "database"
	return rc
}

// Holder campaigns for the slot and, while holding it, replicates into the
// changelog. Create it with New and call Run once.
type Holder struct {
	o       Options
	holding atomic.Bool

	mu       sync.Mutex
	failures int    // consecutive failed attempts
	reason   string // why the last attempt failed
}

// New returns a Holder. It panics when o.ApplyName, o.CheckSlot,
// o.Connect or o.ConnectReplication is nil, or o.InstallLock empty.
func New(o Options) *Holder {
	if o.ApplyName == nil || o.CheckSlot == nil || o.Connect == nil || o.ConnectReplication == nil || o.InstallLock == "" {
		panic("logical.New: Options.ApplyName, CheckSlot, Connect, ConnectReplication and InstallLock are required")
	}
	if o.Slot == "" {
		o.Slot = "rowcast"
	}
	if o.Publication == "" {
		o.Publication = "rowcast"
	}
	if o.StandbyInterval <= 0 {
		o.StandbyInterval = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	o.IdleTimeout = max(o.IdleTimeout, 3*o.StandbyInterval)
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.GroupRows <= 0 {
		o.GroupRows = 5000
	}
	if o.GroupDelay <= 0 {
		o.GroupDelay = 5 * time.Millisecond
	}
	if o.GroupPause <= 0 {
		o.GroupPause = 500 * time.Microsecond
	}
	if o.Failures <= 0 {
		o.Failures = 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Holder{o: o}
}

// Holding reports whether this replica holds the slot.
func (h *Holder) Holding() bool { return h.holding.Load() }

// Failing reports whether logical capture has failed for Options.Failures
// consecutive attempts, and why, with what to do when it is known. It turns
// false again as soon as an attempt succeeds: this replica streams from the
// slot and makes progress, or sees another replica streaming from it.
func (h *Holder) Failing() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failures < h.o.Failures {
		return false, ""
	}
	return true, h.reason
}

// attempt records the outcome of one attempt: err nil is a success.
func (h *Holder) attempt(err error) {
	h.mu.Lock()
	was := h.failures >= h.o.Failures
	if err == nil {
		h.failures, h.reason = 0, ""
	} else {
		h.failures++
		h.reason = err.Error()
	}
	now, reason, n := h.failures >= h.o.Failures, h.reason, h.failures
	h.mu.Unlock()
	switch {
	case now && !was:
		h.o.Logger.Error("logical capture is failing; this relay reports not ready (/readyz 503) until it recovers by itself once the cause is fixed",
			"attempts", n, "reason", reason)
	case was && !now:
		h.o.Logger.Info("logical capture recovered")
	}
	if now != was && h.o.OnFailing != nil {
		h.o.OnFailing(now, reason)
	}
	if now && !was && h.o.OnFailure != nil {
		h.o.OnFailure(err)
	}
}

// errNotStreaming is an attempt's failure on a replica that does not hold
// the slot when nothing has been streaming from it for Retry.
var errNotStreaming = errors.New("another relay holds the slot's election lock but nothing has been streaming from the slot: see that relay's log")

// Run campaigns and replicates until ctx ends, then returns ctx's error.
// Every failure (lost connection, lost lock, invalidated slot) lets the slot
// go, waits Retry and campaigns again.
func (h *Holder) Run(ctx context.Context) error {
	for {
		err := h.campaign(ctx)
		h.setHolding(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, errNotStreaming) {
			h.o.Logger.Warn("logical capture stopped; will campaign again", "err", err)
		}
		if !errors.Is(err, errProgress) {
			h.attempt(err)
		}
		t := time.NewTimer(h.o.Retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// errProgress wraps an error that ended an attempt after it had made
// progress (already recorded as a success).
var errProgress = errors.New("after progress")

func (h *Holder) setHolding(v bool) {
	if h.holding.Swap(v) != v && h.o.OnHolder != nil {
		h.o.OnHolder(v)
	}
}
