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
package logical

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Options configures a Holder. Zero values select the defaults.
type Options struct {
	// Slot and Publication name the replication slot and publication
	// (defaults "rowcast" and "rowcast").
	Slot, Publication string
	// StandbyInterval is how often status is reported to the server while
	// idle (default 10s; keep it well inside wal_sender_timeout).
	StandbyInterval time.Duration
	// Retry is the pause between attempts to take the slot (default 2s).
	Retry time.Duration
	// Batch is how many changes are sent to the database per round trip
	// (default 500).
	Batch int
	// GroupRows and GroupDelay bound a group commit: consecutive source
	// transactions are written in one database transaction until it holds
	// GroupRows changes (default 5000) or is GroupDelay old (default 20ms),
	// or the stream pauses for a millisecond.
	GroupRows  int
	GroupDelay time.Duration
	Logger     *slog.Logger
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
	// ApplyName returns the unquoted name, in schema rowcast, of the apply
	// function the installer generated for a source table (the wiring passes
	// triggers.ApplyName). Required: New panics without it.
	ApplyName func(schema, table string) string
	// CheckSlot reports why the replication slot named slot cannot serve
	// logical capture of the connected database, one problem a string (the
	// wiring passes triggers.CheckSlot, which install uses too); each attempt
	// to take the slot runs it first. Required: New panics without it.
	CheckSlot func(ctx context.Context, conn *pgx.Conn, slot string) ([]string, error)
}

// Holder campaigns for the slot and, while holding it, replicates into the
// changelog. Create it with New and call Run once.
type Holder struct {
	url     string
	o       Options
	holding atomic.Bool

	mu       sync.Mutex
	failures int    // consecutive failed attempts
	reason   string // why the last attempt failed
}

// New returns a Holder for the database at url. It panics when
// o.ApplyName or o.CheckSlot is nil.
func New(url string, o Options) *Holder {
	if o.ApplyName == nil || o.CheckSlot == nil {
		panic("logical.New: Options.ApplyName and Options.CheckSlot are required")
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
		o.GroupDelay = 20 * time.Millisecond
	}
	if o.Failures <= 0 {
		o.Failures = 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Holder{url: url, o: o}
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

// lockKey is the advisory lock that elects the holder of a slot.
func lockKey(slot string) string { return "rowcast.slot:" + slot }

// campaign takes the lock if it is free and replicates while holding it. It
// returns nil when another replica holds the lock.
func (h *Holder) campaign(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	db, err := pgx.Connect(ctx, h.url)
	if err != nil {
		return fmt.Errorf("logical connect: %w", err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	var got bool
	if err := db.QueryRow(ctx, "select pg_try_advisory_lock(hashtext($1))", lockKey(h.o.Slot)).Scan(&got); err != nil {
		return fmt.Errorf("logical campaign: %w", err)
	}
	if !got {
		// Another replica is elected: capture works if something has been
		// streaming from the slot for at least Retry (a holder failing
		// attempt after attempt streams for moments, each time anew).
		var streaming bool
		err := db.QueryRow(ctx, `select exists (
			select 1 from pg_replication_slots s join pg_stat_activity a on a.pid = s.active_pid
			where s.slot_name = $1 and a.backend_start <= now() - make_interval(secs => $2))`,
			h.o.Slot, h.o.Retry.Seconds()).Scan(&streaming)
		if err != nil {
			return fmt.Errorf("logical campaign: %w", err)
		}
		if !streaming {
			return fmt.Errorf("replication slot %s: %w", h.o.Slot, errNotStreaming)
		}
		return nil
	}
	h.setHolding(true)
	h.o.Logger.Info("holding the replication slot", "slot", h.o.Slot)
	if _, err := db.Exec(ctx, "set timezone = 'UTC'; set intervalstyle = 'iso_8601'; set bytea_output = 'hex'; set datestyle = 'ISO'"); err != nil {
		return fmt.Errorf("logical session: %w", err)
	}
	start, err := h.ensureSlot(ctx, db)
	if err != nil {
		return err
	}
	rconn, err := pgconn.Connect(ctx, replicationURL(h.url))
	if err != nil {
		return fmt.Errorf("logical replication connect: %w", err)
	}
	defer rconn.Close(context.WithoutCancel(ctx))
	a := &applier{h: h, db: db, rels: map[uint32]*relation{}}
	if err := a.loadApplied(ctx); err != nil {
		return err
	}
	err = pglogrepl.StartReplication(ctx, rconn, h.o.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '2'", "publication_names " + quoteLiteral(h.o.Publication),
			"messages 'true'", "streaming 'false'"},
	})
	if err != nil {
		err = fmt.Errorf("logical start replication: %w", err)
	} else {
		err = a.stream(ctx, rconn, start)
	}
	var pgErr *pgconn.PgError
	if ctx.Err() == nil && errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object
		rconn.Close(context.WithoutCancel(ctx)) // let the slot go
		return h.missingPublication(ctx, db, err)
	}
	if a.progressed && err != nil {
		return fmt.Errorf("%w: %w", errProgress, err)
	}
	return err
}

// missingPublication handles decoding that failed on an undefined object,
// which is how pgoutput reports a publication missing at the position it
// decodes. While the publication does not exist, that is the reason to
// report. Once it exists again, decoding still fails where it is missing
// in the slot's history (the publication was dropped and created anew, as
// by a failed install --remove and an install): the slot is recreated with
// a new history epoch, so every session resyncs, as for a lost slot.
func (h *Holder) missingPublication(ctx context.Context, db *pgx.Conn, cause error) error {
	var exists bool
	if err := db.QueryRow(ctx, "select exists (select 1 from pg_publication where pubname = $1)", h.o.Publication).Scan(&exists); err != nil {
		return fmt.Errorf("logical publication: %w", err)
	}
	if !exists {
		return fmt.Errorf("publication %s does not exist: run `rowcast install` (capture.publication): %w", h.o.Publication, cause)
	}
	h.o.Logger.Warn("publication missing from the replication slot's history; recreating the slot and starting a new history epoch",
		"slot", h.o.Slot, "publication", h.o.Publication, "err", cause)
	if _, err := h.recreateSlot(ctx, db, true); err != nil {
		return err
	}
	return fmt.Errorf("logical: slot %s recreated after %w", h.o.Slot, cause)
}

// ensureSlot returns where to start: the slot's confirmed position. A slot
// that is missing (after a failover) or invalidated (max_slot_wal_keep_size)
// is recreated and the history epoch changed, so every client resyncs.
func (h *Holder) ensureSlot(ctx context.Context, db *pgx.Conn) (pglogrepl.LSN, error) {
	problems, err := h.o.CheckSlot(ctx, db, h.o.Slot)
	if err != nil {
		return 0, fmt.Errorf("logical slot: %w", err)
	}
	if len(problems) > 0 {
		return 0, fmt.Errorf("logical slot: %s", strings.Join(problems, "; "))
	}
	var lsn *string
	var status *string
	err = db.QueryRow(ctx, `select confirmed_flush_lsn::text, wal_status from pg_replication_slots where slot_name = $1`,
		h.o.Slot).Scan(&lsn, &status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		h.o.Logger.Warn("replication slot missing; creating it and starting a new history epoch", "slot", h.o.Slot)
		return h.recreateSlot(ctx, db, false)
	case err != nil:
		return 0, fmt.Errorf("logical slot: %w", err)
	case status != nil && *status == "lost":
		h.o.Logger.Warn("replication slot invalidated (max_slot_wal_keep_size); recreating it and starting a new history epoch",
			"slot", h.o.Slot)
		return h.recreateSlot(ctx, db, true)
	case lsn == nil:
		return 0, nil
	}
	return pglogrepl.ParseLSN(*lsn)
}

func (h *Holder) recreateSlot(ctx context.Context, db *pgx.Conn, drop bool) (pglogrepl.LSN, error) {
	// The new epoch first: if creating the slot fails, the next attempt
	// finds it missing again and changes the epoch once more, which is
	// harmless; the other order could leave a new slot under the old epoch.
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "update rowcast.meta set epoch = gen_random_uuid()"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "delete from rowcast.logical_state where slot = $1", h.o.Slot)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("logical new epoch: %w", err)
	}
	if drop {
		if _, err := db.Exec(ctx, "select pg_drop_replication_slot($1)", h.o.Slot); err != nil {
			return 0, fmt.Errorf("logical drop slot: %w", err)
		}
	}
	var lsn string
	if err := db.QueryRow(ctx, "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')", h.o.Slot).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("logical create slot: %w", err)
	}
	return pglogrepl.ParseLSN(lsn)
}

// replicationURL adds replication=database to a connection URL or DSN.
func replicationURL(url string) string {
	if strings.Contains(url, "://") {
		if strings.Contains(url, "?") {
			return url + "&replication=database"
		}
		return url + "?replication=database"
	}
	return url + " replication=database"
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// relation is a cached Relation message: the table's columns as they were
// when the changes that follow it were committed.
type relation struct {
	table   string // schema.name as configured
	columns []string
	json    []bool // column is json or jsonb: embedded, not a string
	key     []bool // column is part of the replica identity
	// sql applies a run of this relation's changes: it renders each row's
	// JSON from its text values with the column types of this relation
	// message and passes it to the table's apply function.
	sql string
}

// maxBuildArgs is how many columns one jsonb_build_object call renders
// (PostgreSQL functions take at most 100 arguments: 50 pairs).
const maxBuildArgs = 50

// renderSQL returns the expression that renders a row's JSON from x, a
// jsonb object of the row's text values (json and jsonb embedded), and
// absent, the text form of a text[] of the columns the tuple lacks
// (unchanged TOAST values that could not be recovered) or NULL. Each value
// is cast to its column's type as format_type names it, so PostgreSQL
// renders it exactly as to_jsonb renders the row in trigger mode; absent
// columns are left out, never null.
func renderSQL(columns, types []string, json []bool, x, absent string) string {
	var chunks []string
	for start := 0; start < len(columns); start += maxBuildArgs {
		var args []string
		for i := start; i < min(start+maxBuildArgs, len(columns)); i++ {
			key := quoteLiteral(columns[i])
			if json[i] {
				args = append(args, key+", "+x+" -> "+key)
			} else {
				args = append(args, key+", ("+x+" ->> "+key+")::"+types[i])
			}
		}
		chunks = append(chunks, "jsonb_build_object("+strings.Join(args, ", ")+")")
	}
	if len(chunks) == 0 {
		chunks = []string{"'{}'::jsonb"}
	}
	return "CASE WHEN " + x + " IS NULL THEN NULL ELSE (" + strings.Join(chunks, " || ") +
		") - coalesce(" + absent + "::text[], '{}'::text[]) END"
}

// applier replicates one connected period. Source transactions are applied
// in group commits: consecutive source transactions share one database
// transaction until it holds GroupRows changes, GroupDelay has passed, or
// the stream has nothing more to deliver at once. Every row records its own
// source commit time (rowcast.commit_time, the changelog's origin_at
// default), and the database transaction also records the last source
// commit LSN it covers; only after it commits is that source transaction's
// end LSN acknowledged.
type applier struct {
	h       *Holder
	db      *pgx.Conn
	rels    map[uint32]*relation
	applied pglogrepl.LSN // last source commit LSN written to the changelog

	// progressed is set once this attempt counts as a success: it
	// committed into the changelog, or streamed for Retry without error.
	progressed bool
	started    time.Time

	inTxn bool // between a source Begin and Commit
	skip  bool // the source transaction was written before a crash
	begin pglogrepl.BeginMessage

	// The open database transaction and what it covers.
	tx        pgx.Tx
	txStart   time.Time
	batch     *pgx.Batch
	rows      int // changes queued in this database transaction
	lastLSN   pglogrepl.LSN
	lastEnd   pglogrepl.LSN
	committed bool          // the transaction covers at least one whole source transaction
	beganAt   pglogrepl.LSN // FinalLSN of the last source transaction that queued something

	// A run of changes of one relation version, sent as one statement.
	run struct {
		rel                  *relation
		ops                  []string
		news, olds           []*string
		newAbsent, oldAbsent []*string
	}
}

func (a *applier) loadApplied(ctx context.Context) error {
	var lsn *string
	err := a.db.QueryRow(ctx, "select commit_lsn::text from rowcast.logical_state where slot = $1", a.h.o.Slot).Scan(&lsn)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("logical state: %w", err)
	}
	if lsn != nil {
		l, err := pglogrepl.ParseLSN(*lsn)
		if err != nil {
			return fmt.Errorf("logical state: %w", err)
		}
		a.applied = l
	}
	return nil
}

// stream receives and applies until an error or ctx ends.
func (a *applier) stream(ctx context.Context, conn *pgconn.PgConn, start pglogrepl.LSN) error {
	acked := max(start, a.applied)
	var serverEnd pglogrepl.LSN
	nextStatus := time.Now().Add(a.h.o.StandbyInterval)
	var lastReport time.Time
	soon := func(d time.Duration) {
		if t := lastReport.Add(d); t.Before(nextStatus) {
			nextStatus = t
		}
	}
	report := func() error {
		err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: acked})
		if err != nil {
			return fmt.Errorf("logical standby status: %w", err)
		}
		lastReport = time.Now()
		nextStatus = lastReport.Add(a.h.o.StandbyInterval)
		if a.h.o.OnProgress != nil {
			lag := uint64(0)
			if serverEnd > acked {
				lag = uint64(serverEnd - acked)
			}
			a.h.o.OnProgress(uint64(a.applied), lag)
		}
		return nil
	}
	a.started = time.Now()
	progress := func() {
		if !a.progressed {
			a.progressed = true
			a.h.attempt(nil)
		}
	}
	groupCommit := func() error {
		end, err := a.commitGroup(ctx)
		if err != nil {
			return err
		}
		progress()
		if end > acked {
			acked = end
			soon(200 * time.Millisecond)
		}
		return nil
	}
	defer func() {
		if a.tx != nil {
			_ = a.tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	for {
		now := time.Now()
		if now.Sub(a.started) >= a.h.o.Retry {
			progress()
		}
		if a.committed && !a.inTxn && (a.rows >= a.h.o.GroupRows || now.Sub(a.txStart) >= a.h.o.GroupDelay) {
			if err := groupCommit(); err != nil {
				return err
			}
		}
		if now.After(nextStatus) {
			if err := report(); err != nil {
				return err
			}
		}
		deadline := nextStatus
		if t := a.started.Add(a.h.o.Retry); !a.progressed && t.Before(deadline) {
			deadline = t // wake to record the attempt's success
		}
		if a.committed && !a.inTxn {
			// Whole source transactions are waiting: commit them as soon as
			// the stream pauses.
			deadline = now.Add(time.Millisecond)
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				if a.committed && !a.inTxn {
					if err := groupCommit(); err != nil {
						return err
					}
				}
				continue
			}
			return fmt.Errorf("logical receive: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("logical receive: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("logical keepalive: %w", err)
				}
				serverEnd = max(serverEnd, ka.ServerWALEnd)
				// With nothing received but unwritten, everything up to
				// the server's position is handled: move the slot forward
				// so an idle slot holds no WAL, and say so within a second.
				if !a.inTxn && a.tx == nil && ka.ServerWALEnd > acked {
					acked = ka.ServerWALEnd
					soon(time.Second)
				}
				if ka.ReplyRequested {
					if err := report(); err != nil {
						return err
					}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("logical xlogdata: %w", err)
				}
				serverEnd = max(serverEnd, xld.ServerWALEnd)
				end, err := a.handle(ctx, xld.WALData)
				if err != nil {
					return err
				}
				if end > acked && a.tx == nil {
					// A source transaction with nothing to write, or one
					// already written before a restart.
					acked = end
					soon(200 * time.Millisecond)
				}
			}
		}
	}
}

// handle applies one pgoutput message. It returns the end LSN of a source
// transaction that needed no writing (nothing captured, or written before a
// crash), and 0 otherwise.
func (a *applier) handle(ctx context.Context, data []byte) (pglogrepl.LSN, error) {
	msg, err := pglogrepl.ParseV2(data, false)
	if err != nil {
		return 0, fmt.Errorf("logical decode: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessageV2:
		return 0, a.relation(ctx, &m.RelationMessage)
	case *pglogrepl.BeginMessage:
		a.inTxn, a.begin = true, *m
		a.skip = m.FinalLSN <= a.applied
	case *pglogrepl.CommitMessage:
		a.inTxn = false
		if a.skip || !a.touched() {
			return m.TransactionEndLSN, nil
		}
		a.lastLSN, a.lastEnd, a.committed = m.CommitLSN, m.TransactionEndLSN, true
	case *pglogrepl.InsertMessageV2:
		return 0, a.change(ctx, m.RelationID, "INSERT", m.Tuple, nil)
	case *pglogrepl.UpdateMessageV2:
		old := m.OldTuple
		if old == nil {
			old = a.keyOf(m.RelationID, m.NewTuple)
		}
		return 0, a.change(ctx, m.RelationID, "UPDATE", m.NewTuple, old)
	case *pglogrepl.DeleteMessageV2:
		return 0, a.change(ctx, m.RelationID, "DELETE", nil, m.OldTuple)
	case *pglogrepl.TruncateMessageV2:
		for _, id := range m.RelationIDs {
			if rel := a.rels[id]; rel != nil && !a.skip {
				if err := a.open(ctx); err != nil {
					return 0, err
				}
				a.queueSQL("select rowcast.truncated_logical($1)", rel.table)
			}
		}
	case *pglogrepl.LogicalDecodingMessageV2:
		return 0, a.message(ctx, &m.LogicalDecodingMessage)
	}
	return 0, nil
}

// touched reports whether the current source transaction queued anything.
func (a *applier) touched() bool { return a.tx != nil && a.beganAt == a.begin.FinalLSN }

// relation caches a Relation message with the statement that applies its
// changes; the column types are named by the database once per message.
func (a *applier) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := &relation{table: m.Namespace + "." + m.RelationName}
	oids := make([]uint32, len(m.Columns))
	mods := make([]int32, len(m.Columns))
	for i, c := range m.Columns {
		rel.columns = append(rel.columns, c.Name)
		rel.json = append(rel.json, c.DataType == 114 || c.DataType == 3802) // json, jsonb
		rel.key = append(rel.key, c.Flags&1 != 0)
		oids[i], mods[i] = c.DataType, c.TypeModifier
	}
	var types []string
	err := a.db.QueryRow(ctx, `select coalesce(array_agg(format_type(t.oid, t.mod) order by t.n), '{}')
		from unnest($1::oid[], $2::int4[]) with ordinality as t (oid, mod, n)`, oids, mods).Scan(&types)
	if err != nil {
		return fmt.Errorf("logical relation %s: %w", rel.table, err)
	}
	if len(types) != len(rel.columns) {
		return fmt.Errorf("logical relation %s: %d types for %d columns", rel.table, len(types), len(rel.columns))
	}
	fn := `rowcast."` + strings.ReplaceAll(a.h.o.ApplyName(m.Namespace, m.RelationName), `"`, `""`) + `"`
	rel.sql = "select count(" + fn + "(u.op, " + renderSQL(rel.columns, types, rel.json, "u.n", "u.na") + ", " +
		renderSQL(rel.columns, types, rel.json, "u.o", "u.oa") + "))" +
		" from unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::text[], $5::text[]) as u (op, n, o, na, oa)"
	a.rels[m.RelationID] = rel
	return nil
}

// keyOf returns the replica identity columns of a new tuple, standing in for
// the old tuple that pgoutput leaves out when the key did not change (a
// USING INDEX identity): the team is then unchanged too.
func (a *applier) keyOf(relID uint32, t *pglogrepl.TupleData) *pglogrepl.TupleData {
	rel := a.rels[relID]
	if rel == nil || t == nil {
		return nil
	}
	k := &pglogrepl.TupleData{ColumnNum: t.ColumnNum}
	for i, c := range t.Columns {
		if i < len(rel.key) && rel.key[i] {
			k.Columns = append(k.Columns, c)
		} else {
			k.Columns = append(k.Columns, &pglogrepl.TupleDataColumn{DataType: 'u'})
		}
	}
	return k
}

// message handles rowcast's transactional logical messages: the actor and
// the request id named by rowcast.set_actor / rowcast.set_request_id.
func (a *applier) message(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	if !m.Transactional || !a.inTxn || a.skip {
		return nil
	}
	var setting string
	switch m.Prefix {
	case "rowcast.actor":
		setting = "rowcast.actor_id"
	case "rowcast.request_id":
		setting = "rowcast.request_id"
	default:
		return nil
	}
	if err := a.open(ctx); err != nil {
		return err
	}
	a.queueSQL("select set_config($1, $2, true)", setting, string(m.Content))
	return nil
}

func (a *applier) change(ctx context.Context, relID uint32, op string, newT, oldT *pglogrepl.TupleData) error {
	if a.skip {
		return nil
	}
	rel := a.rels[relID]
	if rel == nil {
		return fmt.Errorf("logical decode: change for unknown relation %d", relID)
	}
	if err := a.open(ctx); err != nil {
		return err
	}
	if a.run.rel != rel {
		a.endRun()
		a.run.rel = rel
	}
	a.run.ops = append(a.run.ops, op)
	n, na := tupleJSON(rel, newT, oldT)
	o, oa := tupleJSON(rel, oldT, nil)
	a.run.news, a.run.newAbsent = append(a.run.news, n), append(a.run.newAbsent, na)
	a.run.olds, a.run.oldAbsent = append(a.run.olds, o), append(a.run.oldAbsent, oa)
	a.rows++
	if len(a.run.ops) >= a.h.o.Batch {
		return a.send(ctx)
	}
	return nil
}

// tupleJSON renders a tuple as a JSON object of text values (json and
// jsonb columns embedded as JSON), or nil, and lists the columns it lacks as
// a text[] literal, or nil when it lacks none. A column sent as unchanged
// TOAST ('u') takes its value from fallback (the old tuple, complete with
// REPLICA IDENTITY FULL) and is absent when fallback lacks it, so it reads
// as unchanged, never as null.
func tupleJSON(rel *relation, t, fallback *pglogrepl.TupleData) (*string, *string) {
	if t == nil {
		return nil, nil
	}
	b := make([]byte, 0, 256)
	b = append(b, '{')
	var absent []byte
	first := true
	for i := range rel.columns {
		if i >= len(t.Columns) {
			absent = appendArrayElem(absent, rel.columns[i])
			continue
		}
		col := t.Columns[i]
		val, kind := col.Data, col.DataType
		if kind == 'u' {
			if fallback == nil || i >= len(fallback.Columns) || fallback.Columns[i].DataType == 'u' {
				absent = appendArrayElem(absent, rel.columns[i])
				continue
			}
			val, kind = fallback.Columns[i].Data, fallback.Columns[i].DataType
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, rel.columns[i])
		b = append(b, ':')
		switch {
		case kind == 'n':
			b = append(b, "null"...)
		case rel.json[i] && json.Valid(val):
			b = append(b, val...)
		default:
			b = appendJSONString(b, string(val))
		}
	}
	b = append(b, '}')
	out := string(b)
	if absent == nil {
		return &out, nil
	}
	list := "{" + string(absent) + "}"
	return &out, &list
}

// appendArrayElem appends s as a quoted element of a text[] literal.
func appendArrayElem(b []byte, s string) []byte {
	if len(b) > 0 {
		b = append(b, ',')
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// open starts the database transaction if none is open and marks the
// current source transaction as touched.
func (a *applier) open(ctx context.Context) error {
	if a.tx == nil {
		tx, err := a.db.Begin(ctx)
		if err != nil {
			return fmt.Errorf("logical apply: %w", err)
		}
		a.tx, a.batch, a.txStart, a.rows, a.committed = tx, &pgx.Batch{}, time.Now(), 0, false
		a.beganAt = 0
	}
	if a.beganAt != a.begin.FinalLSN {
		a.beganAt = a.begin.FinalLSN
		a.endRun()
		a.queueSQL("select set_config('rowcast.commit_time', $1, true), set_config('rowcast.actor_id', '', true), set_config('rowcast.request_id', '', true)",
			a.begin.CommitTime.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// endRun queues the current run of one relation's changes as one statement.
func (a *applier) endRun() {
	if len(a.run.ops) == 0 {
		return
	}
	a.batch.Queue(a.run.rel.sql, a.run.ops, a.run.news, a.run.olds, a.run.newAbsent, a.run.oldAbsent)
	a.run.ops, a.run.news, a.run.olds, a.run.newAbsent, a.run.oldAbsent = nil, nil, nil, nil, nil
}

func (a *applier) queueSQL(sql string, args ...any) {
	a.endRun()
	a.batch.Queue(sql, args...)
}

// send sends what is queued.
func (a *applier) send(ctx context.Context) error {
	a.endRun()
	if a.batch == nil || a.batch.Len() == 0 {
		return nil
	}
	err := a.tx.SendBatch(ctx, a.batch).Close()
	a.batch = &pgx.Batch{}
	if err != nil {
		return fmt.Errorf("logical apply: %w", err)
	}
	return nil
}

// commitGroup writes the open database transaction with the last source
// commit LSN it covers and returns that transaction's end LSN, which may
// now be acknowledged.
func (a *applier) commitGroup(ctx context.Context) (pglogrepl.LSN, error) {
	if a.tx == nil || !a.committed {
		return 0, nil
	}
	a.queueSQL(`insert into rowcast.logical_state (slot, commit_lsn) values ($1, $2::pg_lsn)
		on conflict (slot) do update set commit_lsn = excluded.commit_lsn`, a.h.o.Slot, a.lastLSN.String())
	if err := a.send(ctx); err != nil {
		return 0, err
	}
	err := a.tx.Commit(ctx)
	a.tx = nil
	if err != nil {
		return 0, fmt.Errorf("logical apply commit: %w", err)
	}
	a.applied, a.committed = a.lastLSN, false
	return a.lastEnd, nil
}
