package logical

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// prepareSession pins the settings of the connection that writes the
// changelog: the rendering settings of the trigger functions, so values
// render as in trigger mode, and synchronous_commit = local, so that a
// commit into the changelog, after which its source transaction is
// acknowledged, never waits for a synchronous standby (one that is down
// would stall capture; the acknowledgement needs only the local flush,
// and the source transaction is in the slot's WAL until it is
// acknowledged). plan_cache_mode = force_generic_plan keeps the apply
// statement's plan: its unnest of parameter arrays looks cheaper planned
// for each call's arrays, so the plan cache would plan it anew at every
// call (a sixth of the holder's CPU in bench latency --mode logical). The
// setting holds for every statement of the session, the apply functions'
// included: key lookups and inserts, whose generic plans are the ones
// they would keep anyway. Read committed, whatever the database's or
// role's default: the group tick after each COMMIT (changelog.Ticker.
// QueueTick) takes its snapshot after rowcast.tick's lock. No statement
// timeout: a large source transaction's group may take longer to apply
// than one set for the database or the role, and would fail at the same
// position at every attempt, stalling capture.
//
// It also sets the session's idle timeouts (Options.IdleTimeout), skipping
// idle_session_timeout where PostgreSQL lacks it (13: undefined_object).
func prepareSession(ctx context.Context, db *pgx.Conn, idle time.Duration) error {
	_, err := db.Exec(ctx, "set timezone = 'UTC'; set intervalstyle = 'iso_8601'; set bytea_output = 'hex'; set datestyle = 'ISO'; set synchronous_commit = local; set plan_cache_mode = force_generic_plan; set default_transaction_isolation = 'read committed'; set statement_timeout = 0")
	if err != nil {
		return fmt.Errorf("logical session: %w", err)
	}
	ms := idle.Milliseconds()
	if _, err := db.Exec(ctx, fmt.Sprintf("set idle_in_transaction_session_timeout = %d", ms)); err != nil {
		return fmt.Errorf("logical session: %w", err)
	}
	_, err = db.Exec(ctx, fmt.Sprintf("set idle_session_timeout = %d", ms))
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedObject) {
		return fmt.Errorf("logical session: %w", err)
	}
	return nil
}

// endStaleStreams ends the walsender still streaming from the slot, if any:
// it serves a holder that lost the election lock (its session ended while
// it was paused or cut off), which would otherwise keep the slot busy until
// wal_sender_timeout. That holder can write nothing more: its election
// connection, which writes the changelog, is gone.
func (h *Holder) endStaleStreams(ctx context.Context, db *pgx.Conn) error {
	var ended int
	err := db.QueryRow(ctx, `select count(*) from pg_replication_slots s, pg_terminate_backend(s.active_pid) t
		where s.slot_name = $1 and s.active_pid is not null and t`, h.o.Slot).Scan(&ended)
	if err != nil {
		return fmt.Errorf("logical end stale stream: %w", err)
	}
	if ended > 0 {
		h.o.Logger.Warn("ended the stream of a slot holder that lost the election (paused or cut off)", "slot", h.o.Slot)
	}
	return nil
}

// lockKey is the advisory lock that elects the holder of a slot.
func lockKey(slot string) string { return "rowcast.slot:" + slot }

// campaign takes the lock if it is free and replicates while holding it. It
// returns nil when another replica holds the lock.
func (h *Holder) campaign(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	db, err := h.o.Connect(ctx)
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
	if err := prepareSession(ctx, db, h.o.IdleTimeout); err != nil {
		return err
	}
	if err := h.endStaleStreams(ctx, db); err != nil {
		return err
	}
	start, err := h.ensureSlot(ctx, db)
	if err != nil {
		return err
	}
	rconn, err := h.o.ConnectReplication(ctx)
	if err != nil {
		return fmt.Errorf("logical replication connect: %w", err)
	}
	defer rconn.Close(context.WithoutCancel(ctx))
	a := &applier{h: h, db: db, rels: map[uint32]*relation{}}
	if err := a.loadApplied(ctx); err != nil {
		return err
	}
	a.prepareTicks(ctx)
	err = pglogrepl.StartReplication(ctx, rconn, h.o.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '2'", "publication_names " + quoteLiteral(h.o.Publication),
			"messages 'true'", "streaming 'false'"},
	})
	if err != nil {
		err = fmt.Errorf("logical start replication: %w", &replicationError{err})
	} else {
		err = a.stream(ctx, rconn, start)
	}
	if ctx.Err() == nil && publicationMissing(err) {
		rconn.Close(context.WithoutCancel(ctx)) // let the slot go
		return h.missingPublication(ctx, db, err)
	}
	if a.progressed && err != nil {
		return fmt.Errorf("%w: %w", errProgress, err)
	}
	return err
}

// replicationError marks an error reported by the replication connection,
// as opposed to the connection that writes the changelog: the two report
// some of the same SQLSTATEs for different reasons.
type replicationError struct{ err error }

func (e *replicationError) Error() string { return e.err.Error() }
func (e *replicationError) Unwrap() error { return e.err }

// publicationMissing reports whether err is how pgoutput reports a
// publication missing at the position it decodes: undefined_object
// (42704) from the replication connection. The same SQLSTATE from the
// connection that writes the changelog (a type or object the apply
// statement names that does not exist) is an apply failure, retried as
// any other. (A slot dropped between ensureSlot and START_REPLICATION is
// also undefined_object there; missingPublication then recreates it, as
// ensureSlot would.)
func publicationMissing(err error) bool {
	var re *replicationError
	var pgErr *pgconn.PgError
	return errors.As(err, &re) && errors.As(re.err, &pgErr) && pgErr.Code == pgerrcode.UndefinedObject
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
	h.slotLost("the publication is missing from the slot's history")
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
		h.slotLost("the slot is missing")
		return h.recreateSlot(ctx, db, false)
	case err != nil:
		return 0, fmt.Errorf("logical slot: %w", err)
	case status != nil && *status == "lost":
		h.o.Logger.Warn("replication slot invalidated (max_slot_wal_keep_size); recreating it and starting a new history epoch",
			"slot", h.o.Slot)
		h.slotLost("the slot was invalidated (max_slot_wal_keep_size)")
		return h.recreateSlot(ctx, db, true)
	case lsn == nil:
		return 0, nil
	}
	return pglogrepl.ParseLSN(*lsn)
}

// slotLost tells OnSlotLost why the slot is recreated.
func (h *Holder) slotLost(why string) {
	if h.o.OnSlotLost != nil {
		h.o.OnSlotLost(fmt.Sprintf("slot %s: %s", h.o.Slot, why))
	}
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

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
