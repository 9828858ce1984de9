package logical

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rowcast/rowcast/relay/capture/changelog"
)

// applier replicates one connected period. Source transactions are applied
// in group commits: consecutive source transactions share one database
// transaction until it holds GroupRows changes, GroupDelay has passed, or
// the stream pauses for GroupPause. Every row records its own
// source commit time (rowcast.commit_time, the changelog's origin_at
// default), and the database transaction also records the last source
// commit LSN it covers; only after it commits is that source transaction's
// end LSN acknowledged.
//
// A group's BEGIN and COMMIT travel in its batches (pgx pipelines a batch
// with one Sync), so a group that fits one batch costs one round trip once
// its statements are prepared (pgx prepares a statement new to the
// connection in a round trip of its own).
type applier struct {
	h       *Holder
	db      *pgx.Conn
	rels    map[uint32]*relation
	applied pglogrepl.LSN // last source commit LSN written to the changelog
	// prepared says whether the group tick's statements are prepared on
	// db (Options.Ticker).
	prepared bool

	// progressed is set once this attempt counts as a success: it
	// committed into the changelog, or streamed for Retry without error.
	progressed bool
	started    time.Time

	inTxn bool // between a source Begin and Commit
	skip  bool // the source transaction was written before a crash
	begin pglogrepl.BeginMessage

	// The open database transaction and what it covers. txOpen is set from
	// the first queued statement of a group (its BEGIN) until the group's
	// COMMIT has succeeded; begun once a batch holding that BEGIN has been
	// sent (a failed attempt leaves the transaction to roll back).
	txOpen    bool
	begun     bool
	txStart   time.Time
	batch     *pgx.Batch
	rows      int // changes queued in this database transaction
	lastLSN   pglogrepl.LSN
	lastEnd   pglogrepl.LSN
	committed bool          // the transaction covers at least one whole source transaction
	beganAt   pglogrepl.LSN // FinalLSN of the last source transaction that queued something

	// What the next change must set before its capture runs (applySQL).
	pending settings

	// A run of changes of one relation version, sent as one statement; it
	// spans source transactions.
	run struct {
		rel                  *relation
		ops                  []string
		news, olds           []*string
		newAbsent, oldAbsent []*string
		cts, acs, rqs        []*string
	}
}

// settings is what the capture of a change reads besides the row: its
// source transaction's commit time, the actor and the request id that
// transaction named. Nil leaves a setting as the change before set it.
type settings struct{ commitTime, actor, request *string }

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
			return fmt.Errorf("logical standby status: %w", &replicationError{err})
		}
		// The election connection is idle while nothing is captured; its
		// idle timeout (Options.IdleTimeout) must end only a holder that
		// stopped.
		if _, err := a.db.Exec(ctx, "select"); err != nil {
			return fmt.Errorf("logical keepalive: %w", err)
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
		if a.begun {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_, _ = a.db.Exec(rctx, "rollback")
			cancel()
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
			// the stream pauses, or the group is GroupDelay old.
			for _, t := range []time.Time{now.Add(a.h.o.GroupPause), a.txStart.Add(a.h.o.GroupDelay)} {
				if t.Before(deadline) {
					deadline = t
				}
			}
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
			return fmt.Errorf("logical receive: %w", &replicationError{err})
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("logical receive: %w", &replicationError{pgconn.ErrorResponseToPgError(m)})
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
				if !a.inTxn && !a.txOpen && ka.ServerWALEnd > acked {
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
				if end > acked && !a.txOpen {
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
	msg, err := decodeMessage(data)
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
			old = a.rels[m.RelationID].keyOf(m.NewTuple)
		}
		return 0, a.change(ctx, m.RelationID, "UPDATE", m.NewTuple, old)
	case *pglogrepl.DeleteMessageV2:
		return 0, a.change(ctx, m.RelationID, "DELETE", nil, m.OldTuple)
	case *pglogrepl.TruncateMessageV2:
		for _, id := range m.RelationIDs {
			if rel := a.rels[id]; rel != nil && !a.skip {
				a.open()
				a.setPending()
				a.queueSQL("select rowcast.truncated_logical($1)", rel.table)
			}
		}
	case *pglogrepl.LogicalDecodingMessageV2:
		a.message(&m.LogicalDecodingMessage)
	}
	return 0, nil
}

// touched reports whether the current source transaction queued a change
// or a truncation, or named an actor or a request id.
func (a *applier) touched() bool { return a.txOpen && a.beganAt == a.begin.FinalLSN }

// message handles rowcast's transactional logical messages: the actor and
// the request id named by rowcast.set_actor / rowcast.set_request_id.
// They take effect from the transaction's next change or truncation.
func (a *applier) message(m *pglogrepl.LogicalDecodingMessage) {
	if !m.Transactional || !a.inTxn || a.skip {
		return
	}
	var setting **string
	switch m.Prefix {
	case "rowcast.actor":
		setting = &a.pending.actor
	case "rowcast.request_id":
		setting = &a.pending.request
	default:
		return
	}
	a.open() // first, since it sets the transaction's pending settings
	v := string(m.Content)
	*setting = &v
}

func (a *applier) change(ctx context.Context, relID uint32, op string, newT, oldT *pglogrepl.TupleData) error {
	if a.skip {
		return nil
	}
	rel := a.rels[relID]
	if rel == nil {
		return fmt.Errorf("logical decode: change for unknown relation %d", relID)
	}
	a.open()
	if a.run.rel != rel {
		a.endRun()
		a.run.rel = rel
	}
	a.run.ops = append(a.run.ops, op)
	n, na := tupleJSON(rel, newT, oldT)
	o, oa := tupleJSON(rel, oldT, nil)
	a.run.news, a.run.newAbsent = append(a.run.news, n), append(a.run.newAbsent, na)
	a.run.olds, a.run.oldAbsent = append(a.run.olds, o), append(a.run.oldAbsent, oa)
	p := a.pending
	a.run.cts, a.run.acs, a.run.rqs = append(a.run.cts, p.commitTime), append(a.run.acs, p.actor), append(a.run.rqs, p.request)
	a.pending = settings{}
	a.rows++
	if len(a.run.ops) >= a.h.o.Batch {
		_, _, err := a.send(ctx, nil)
		return err
	}
	return nil
}

// open queues the database transaction's BEGIN if none is open and marks
// the current source transaction as touched; at the transaction's first
// call the pending settings become its commit time, no actor and no
// request id.
func (a *applier) open() {
	if !a.txOpen {
		a.txOpen, a.batch, a.txStart, a.rows, a.committed = true, &pgx.Batch{}, time.Now(), 0, false
		a.beganAt = 0
		a.queueSQL("begin")
		// No install commits while the group is open, and the group
		// reads what one committed before (Options.InstallLock).
		a.queueSQL("select pg_advisory_xact_lock_shared(hashtext($1))", a.h.o.InstallLock)
		a.queueSQL("lock table rowcast.holder_nulls in access share mode")
	}
	if a.beganAt != a.begin.FinalLSN {
		a.beganAt = a.begin.FinalLSN
		ct, none := a.begin.CommitTime.UTC().Format(time.RFC3339Nano), ""
		a.pending = settings{&ct, &none, &none}
	}
}

// setPending queues a statement setting the pending settings, for a
// statement that is not a run.
func (a *applier) setPending() {
	if a.pending != (settings{}) {
		a.queueSQL(settingsSQL, a.pending.commitTime, a.pending.actor, a.pending.request)
		a.pending = settings{}
	}
}

// endRun queues the current run of one relation's changes as one statement.
func (a *applier) endRun() {
	if len(a.run.ops) == 0 {
		return
	}
	r := &a.run
	a.batch.Queue(r.rel.sql, r.ops, r.news, r.olds, r.newAbsent, r.oldAbsent, r.cts, r.acs, r.rqs)
	r.ops, r.news, r.olds, r.newAbsent, r.oldAbsent, r.cts, r.acs, r.rqs = nil, nil, nil, nil, nil, nil, nil, nil
}

func (a *applier) queueSQL(sql string, args ...any) {
	a.endRun()
	a.batch.Queue(sql, args...)
}

// send sends what is queued and returns the last statement's command tag:
// with a group tick g, queued last, that of the last statement before it.
// Once every statement before g succeeded, g reads its results and is
// told the batch's close error, which is not send's: ticked says whether
// g ticked the group.
func (a *applier) send(ctx context.Context, g *changelog.GroupTick) (tag pgconn.CommandTag, ticked bool, err error) {
	a.endRun()
	if a.batch == nil || a.batch.Len() == 0 {
		return tag, false, nil
	}
	a.begun = true
	n := a.batch.Len()
	if g != nil {
		n -= g.Queued()
	}
	br := a.db.SendBatch(ctx, a.batch)
	for range n {
		if tag, err = br.Exec(); err != nil {
			break
		}
	}
	read := err == nil && g != nil
	if read {
		g.Read(br)
	}
	cerr := br.Close()
	a.batch = &pgx.Batch{}
	if read {
		// Every statement before the tick succeeded: the close's error is
		// the tick's, or the connection's, which the next use finds.
		var refused bool
		ticked, refused = g.Done(ctx, a.db, cerr)
		a.prepared = a.prepared && !refused
	} else if err == nil {
		err = cerr
	}
	if err != nil {
		return pgconn.CommandTag{}, false, fmt.Errorf("logical apply: %w", err)
	}
	return tag, ticked, nil
}

// prepareTicks prepares the group tick's statements on db, when group
// ticks are wanted (Options.Ticker), not paused, and not prepared yet. It
// runs outside the group's transaction, which a refused statement would
// abort; a refusal leaves the groups to ring the ticker (and pauses group
// ticks), and another error is the connection's, which its next use finds.
func (a *applier) prepareTicks(ctx context.Context) {
	if a.h.o.Ticker != nil && !a.prepared && a.h.o.Ticker.GroupTicks() {
		a.prepared = a.h.o.Ticker.PrepareTick(ctx, a.db) == nil
	}
}

// commitGroup writes the open database transaction with the last source
// commit LSN it covers and returns that transaction's end LSN, which may
// now be acknowledged.
func (a *applier) commitGroup(ctx context.Context) (pglogrepl.LSN, error) {
	if !a.txOpen || !a.committed {
		return 0, nil
	}
	a.queueSQL(`insert into rowcast.logical_state (slot, commit_lsn) values ($1, $2::pg_lsn)
		on conflict (slot) do update set commit_lsn = excluded.commit_lsn`, a.h.o.Slot, a.lastLSN.String())
	tick := a.prepared && a.h.o.Ticker.GroupTicks()
	local := a.h.o.LocalTicker != nil && a.h.o.WakeTicker != nil && a.h.o.LocalTicker()
	if !tick && a.h.o.Doorbell != "" && !local {
		a.queueSQL("select pg_notify($1, 'logical')", a.h.o.Doorbell)
	}
	a.queueSQL("commit")
	var g *changelog.GroupTick
	if tick {
		g = a.h.o.Ticker.QueueTick(a.batch)
	}
	tag, ticked, err := a.send(ctx, g)
	if err != nil {
		return 0, err
	}
	if tag.String() != "COMMIT" {
		// A COMMIT of a transaction that failed rolls it back, without
		// an error of its own.
		return 0, fmt.Errorf("logical apply commit: %q: the group was rolled back", tag)
	}
	a.txOpen, a.begun = false, false
	a.applied, a.committed = a.lastLSN, false
	a.prepareTicks(ctx)
	switch {
	case ticked:
	case g != nil || local:
		// The group tick failed, or there was none and this process's
		// ticker ticks: wake it, or ring the one that does now.
		if a.h.o.LocalTicker != nil && a.h.o.WakeTicker != nil && a.h.o.LocalTicker() {
			a.h.o.WakeTicker()
		} else if a.h.o.Doorbell != "" {
			// An error here leaves the group committed and applied.
			if _, err := a.db.Exec(ctx, "select pg_notify($1, 'logical')", a.h.o.Doorbell); err != nil {
				return 0, fmt.Errorf("logical doorbell: %w", err)
			}
		}
	}
	return a.lastEnd, nil
}
