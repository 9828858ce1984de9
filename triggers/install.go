package triggers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rowcast/rowcast/config"
)

// InstallLockKey names the advisory lock (hashtext of it) an install or a
// remove holds exclusively in its transaction: it serialises them across
// processes, and the logical slot holder takes it shared in each group, so
// that no install replaces an apply function while a group runs it.
const InstallLockKey = "rowcast.install"

// installLock takes the install lock.
const installLock = "select pg_advisory_xact_lock(hashtext('" + InstallLockKey + "'))"

// Check reports, without changing anything, what the database lacks for
// the plan beyond its tables and columns (see CheckTables): for logical
// capture the server settings and the role's right to replicate
// (CheckLogical), the configured replica identity indexes, and a slot name
// taken elsewhere in the cluster (CheckSlot). Install refuses to start
// while there is any.
func Check(ctx context.Context, conn *pgx.Conn, p *Plan) ([]string, error) {
	if !p.Logical {
		return nil, nil
	}
	problems, err := CheckLogical(ctx, conn)
	if err != nil {
		return nil, err
	}
	tables := make([]config.Table, len(p.Tables))
	for i, t := range p.Tables {
		tables[i] = t.Table
	}
	more, err := checkIdentityIndexes(ctx, conn, tables)
	if err != nil {
		return nil, err
	}
	problems = append(problems, more...)
	more, err = CheckSlot(ctx, conn, p.Slot)
	if err != nil {
		return nil, err
	}
	return append(problems, more...), nil
}

// Install applies the plan in one transaction and removes the capture
// triggers of tables that are no longer configured. It is idempotent. It
// returns one line per action taken, for the operator.
func Install(ctx context.Context, conn *pgx.Conn, p *Plan) ([]string, error) {
	var done []string
	configured := make([]config.Table, len(p.Tables))
	for i, t := range p.Tables {
		configured[i] = t.Table
	}
	mismatch, err := CheckTables(ctx, conn, configured)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if len(mismatch) > 0 {
		return nil, fmt.Errorf("install: %w:\n  - %s", ErrMismatch,
			strings.Join((&config.Problems{List: mismatch}).Lines(), "\n  - "))
	}
	problems, err := Check(ctx, conn, p)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("install: %w:\n  - %s", ErrNotReady, strings.Join(problems, "\n  - "))
	}
	// Switching modes replaces one capture with the other; say so.
	var triggered map[string]bool
	if p.Logical {
		if triggered, err = capturedByTriggers(ctx, conn, p); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	var wasLogical bool
	if !p.Logical && p.Slot != "" && p.Publication != "" {
		if wasLogical, err = logicalInstalled(ctx, conn, p.Slot, p.Publication); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		if wasLogical {
			// Check before changing anything: a relay still reading the
			// slot would capture every change a second time.
			who, err := slotInUse(ctx, conn, p.Slot)
			if err != nil {
				return nil, fmt.Errorf("install: %w", err)
			}
			if who != "" {
				return nil, fmt.Errorf("install: switching to trigger capture: replication slot %s is in use: %s; stop the relays in logical mode first; nothing was changed",
					p.Slot, who)
			}
		}
	}
	err = retryLocks(ctx, func() error {
		done = nil
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			return install(ctx, tx, p, triggered, &done)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if p.Logical {
		// A new slot starts a new history: a slot that was dropped (as a
		// restore of the database requires) must not be read on under the
		// positions clients hold, which would name other changes once tick
		// numbers are reused. The epoch first, as the slot holder does.
		var exists bool
		if err := conn.QueryRow(ctx, "select exists (select 1 from pg_replication_slots where slot_name = $1)", p.Slot).Scan(&exists); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		if !exists {
			if _, err := conn.Exec(ctx, "update rowcast.meta set epoch = gen_random_uuid()"); err != nil {
				return nil, fmt.Errorf("install: new history epoch: %w", err)
			}
		}
		created, err := createSlot(ctx, conn, p.Slot)
		if err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		if created {
			done = append(done, "replication slot "+p.Slot+" (pgoutput); it holds WAL until a relay reads it")
		}
	}
	if wasLogical {
		d, err := removeLogical(ctx, conn, p.Slot, p.Publication)
		if err != nil {
			return nil, fmt.Errorf("install: switching to trigger capture: %w", err)
		}
		for _, line := range d {
			done = append(done, line+" (switching to trigger capture)")
		}
	}
	return done, nil
}

// install runs the plan's DDL in tx, appending what it did to done.
//
// It first waits, without a bound, for the install lock (InstallLockKey),
// which another install or remove holds, or the logical slot holder's
// current group (shared; a group can last as long as the apply of one
// large source transaction). Every other lock it needs waits at most half
// of deadlock_timeout
// (lock_timeout), so that a writer that waits for this install while the
// install waits for it (a writer of schema version 1 numbering its rows at
// commit, or one that holds a captured table and waits for the changelog)
// is never the one the deadlock detector aborts: the install gives up
// instead, and Install tries again.
func install(ctx context.Context, tx pgx.Tx, p *Plan, triggered map[string]bool, done *[]string) error {
	if _, err := tx.Exec(ctx, "set local standard_conforming_strings = on; set local client_min_messages = warning; "+installLock); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `select set_config('lock_timeout',
		greatest(1, (extract(epoch from current_setting('deadlock_timeout')::interval) * 500)::int)::text, true)`); err != nil {
		return err
	}

	if _, err := tx.Exec(ctx, p.Schema); err != nil {
		return describe("rowcast schema", err)
	}
	*done = append(*done, "rowcast schema: changelog, ticks")
	for _, t := range p.Tables {
		if _, err := tx.Exec(ctx, t.SQL); err != nil {
			return describe(t.Table.Qualified(), err)
		}
		if p.Logical {
			ri := "REPLICA IDENTITY FULL"
			if t.Table.ReplicaIdentityIndex != "" {
				ri = "REPLICA IDENTITY USING INDEX " + t.Table.ReplicaIdentityIndex
			}
			*done = append(*done, "logical apply function for "+t.Table.Qualified()+"; set "+ri)
			if triggered[t.Table.Qualified()] {
				*done = append(*done, "removed capture trigger from "+t.Table.Qualified()+
					" (switching to logical capture: the slot holder captures it from now on)")
			}
		} else {
			*done = append(*done, "capture trigger on "+t.Table.Qualified())
		}
	}
	if p.Logical {
		if _, err := tx.Exec(ctx, p.PublicationSQL); err != nil {
			return describe("publication "+p.Publication, err)
		}
		*done = append(*done, "publication "+p.Publication+" for the configured tables")
	}
	if p.Helpers != "" {
		if _, err := tx.Exec(ctx, p.Helpers); err != nil {
			return describe("AI task helpers", err)
		}
		*done = append(*done, "AI task helpers rowcast.task_start/_progress/_complete/_fail")
	}
	stale, err := staleTriggers(ctx, tx, p)
	if err != nil {
		return err
	}
	for _, s := range stale {
		if _, err := tx.Exec(ctx, dropTriggersSQL(s.table)); err != nil {
			return describe(s.table, err)
		}
		*done = append(*done, "removed capture trigger from "+s.table+" (not configured)")
	}
	parents, err := staleParentTriggers(ctx, tx, p)
	if err != nil {
		return err
	}
	for _, s := range parents {
		if _, err := tx.Exec(ctx, "drop trigger if exists "+ident(s.Name)+" on "+s.Table); err != nil {
			return describe(s.Table, err)
		}
		*done = append(*done, "removed team_from parent trigger "+s.Name+" from "+s.Table+" (not configured)")
	}
	return nil
}

// retryLocks runs attempt until it succeeds, fails for another reason than
// a lock it could not get in time (or a deadlock it was chosen to break),
// or ctx ends; it waits a little longer before each new attempt.
func retryLocks(ctx context.Context, attempt func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := attempt()
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) ||
			(pgErr.Code != pgerrcode.LockNotAvailable && pgErr.Code != pgerrcode.DeadlockDetected) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up waiting for locks: %v)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// ErrMismatch is returned by Install when the configured tables do not fit
// the database (the problems CheckTables reports); the error lists each.
var ErrMismatch = errors.New("the configured tables do not fit the database")

// capturedByTriggers returns the plan's tables that have a capture
// trigger, by Table.Qualified().
func capturedByTriggers(ctx context.Context, conn *pgx.Conn, p *Plan) (map[string]bool, error) {
	out := map[string]bool{}
	for _, t := range p.Tables {
		var has bool
		err := conn.QueryRow(ctx, "select exists (select 1 from pg_trigger where tgrelid = to_regclass($1) and tgname = $2)",
			ident(t.Table.Schema())+"."+ident(t.Table.Name()), captureTrigger).Scan(&has)
		if err != nil {
			return nil, fmt.Errorf("list capture triggers: %w", err)
		}
		out[t.Table.Qualified()] = has
	}
	return out, nil
}

// logicalInstalled reports whether the publication, or the slot in this
// database, exists.
func logicalInstalled(ctx context.Context, conn *pgx.Conn, slot, publication string) (bool, error) {
	var found bool
	err := conn.QueryRow(ctx, `select exists (select 1 from pg_publication where pubname = $2)
		or exists (select 1 from pg_replication_slots where slot_name = $1 and database = current_database())`,
		slot, publication).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("check logical capture: %w", err)
	}
	return found, nil
}

// Remove drops the capture triggers from every table that has them, the
// logical publication and slot when slot and publication are named
// (setting the published tables' replica identity back to DEFAULT), and
// the rowcast schema with its history. Sessions resuming afterwards get
// resync. It removes nothing while a relay or another process uses the
// slot, and says which: stop the relays first.
func Remove(ctx context.Context, conn *pgx.Conn, slot, publication string) ([]string, error) {
	var done []string
	if slot != "" && publication != "" {
		d, err := removeLogical(ctx, conn, slot, publication)
		if err != nil {
			return nil, fmt.Errorf("remove: %w", err)
		}
		done = append(done, d...)
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "set local client_min_messages = warning; "+installLock); err != nil {
			return err
		}
		all, err := staleTriggers(ctx, tx, &Plan{})
		if err != nil {
			return err
		}
		for _, s := range all {
			if _, err := tx.Exec(ctx, dropTriggersSQL(s.table)); err != nil {
				return describe(s.table, err)
			}
			done = append(done, "removed capture trigger from "+s.table)
		}
		if _, err := tx.Exec(ctx, "drop schema if exists rowcast cascade"); err != nil {
			return err
		}
		done = append(done, "dropped schema rowcast (changelog and history)")
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("remove: %w", err)
	}
	return done, nil
}

// Verify compares what is installed with the plan and returns one line per
// difference; none means the database matches the configuration.
func Verify(ctx context.Context, conn *pgx.Conn, p *Plan) ([]string, error) {
	var drift []string
	var comment *string
	err := conn.QueryRow(ctx, "select obj_description(to_regprocedure('rowcast.tick()'), 'pg_proc')").Scan(&comment)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	switch {
	case comment == nil:
		return []string{"the rowcast schema is not installed"}, nil
	case *comment != hashPrefix+p.SchemaHash:
		drift = append(drift, "the rowcast schema differs from this version's (or capture.notify changed)")
	}
	if p.Logical {
		more, err := verifyLogical(ctx, conn, p)
		if err != nil {
			return nil, err
		}
		drift = append(drift, more...)
	}
	for _, t := range p.Tables {
		if p.Logical {
			break
		}
		var exists bool
		var fnComment *string
		var captures, truncates bool
		err := conn.QueryRow(ctx, `
select to_regclass($1) is not null,
       obj_description(to_regprocedure($2), 'pg_proc'),
       exists (select 1 from pg_trigger where tgrelid = to_regclass($1) and tgname = $3
               and tgfoid = to_regprocedure($2) and tgenabled <> 'D'),
       exists (select 1 from pg_trigger where tgrelid = to_regclass($1) and tgname = $4 and tgenabled <> 'D')`,
			ident(t.Table.Schema())+"."+ident(t.Table.Name()), t.Function+"()", captureTrigger, truncateTrigger,
		).Scan(&exists, &fnComment, &captures, &truncates)
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", t.Table.Qualified(), err)
		}
		switch {
		case !exists:
			drift = append(drift, t.Table.Qualified()+": table does not exist")
		case fnComment == nil || !captures || !truncates:
			drift = append(drift, t.Table.Qualified()+": capture trigger missing or disabled")
		case *fnComment != hashPrefix+t.Hash:
			drift = append(drift, t.Table.Qualified()+": capture trigger differs from the configuration")
		}
		if t.Parent.Table == "" {
			continue
		}
		var parent bool
		err = conn.QueryRow(ctx, `select exists (select 1 from pg_trigger where tgrelid = to_regclass($1) and tgname = $2
			and tgfoid = to_regprocedure('rowcast.parent_deleting()') and tgenabled <> 'D')`, t.Parent.Table, t.Parent.Name).Scan(&parent)
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", t.Table.Qualified(), err)
		}
		if !parent {
			drift = append(drift, t.Table.Qualified()+": team_from parent trigger on "+t.Parent.Table+" missing or disabled")
		}
	}
	stale, err := staleTriggers(ctx, conn, p)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, s := range stale {
		drift = append(drift, s.table+": has a capture trigger but is not configured")
	}
	parents, err := staleParentTriggers(ctx, conn, p)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, s := range parents {
		drift = append(drift, s.Table+": has team_from parent trigger "+s.Name+" but no configured table needs it")
	}
	return drift, nil
}

// CheckTables reports configured tables and columns missing from the
// database, and id columns that do not identify a row (not exactly the
// primary key or a unique NOT NULL constraint or index), each with its key path (tables[i].…).
// Install runs it first.
func CheckTables(ctx context.Context, conn *pgx.Conn, tables []config.Table) ([]config.Problem, error) {
	var problems []config.Problem
	add := func(i int, key, format string, args ...any) {
		problems = append(problems, config.Problem{Key: fmt.Sprintf("tables[%d].%s", i, key), Msg: fmt.Sprintf(format, args...)})
	}
	for i, t := range tables {
		rows, err := conn.Query(ctx, `
select a.attname from pg_attribute a
where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped`,
			ident(t.Schema())+"."+ident(t.Name()))
		if err != nil {
			return nil, fmt.Errorf("check tables: %w", err)
		}
		cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("check tables: %w", err)
		}
		if len(cols) == 0 {
			add(i, "table", "%s does not exist in the database", t.Qualified())
			continue
		}
		have := make(map[string]bool, len(cols))
		for _, c := range cols {
			have[c] = true
		}
		need := func(key, col string) {
			if col != "" && !have[col] {
				add(i, key, "%s has no column %q", t.Qualified(), col)
			}
		}
		keyPath, keysExist := "id_column", true
		if len(t.IDColumns) > 0 {
			keyPath = "id_columns"
		}
		for _, c := range t.KeyColumns() {
			keysExist = keysExist && have[c]
			need(keyPath, c)
		}
		if keysExist {
			p, err := checkKey(ctx, conn, t)
			if err != nil {
				return nil, err
			}
			if p != "" {
				add(i, keyPath, "%s", p)
			}
		}
		switch {
		case t.TeamFrom != nil:
			more, err := checkTeamFrom(ctx, conn, t, have)
			if err != nil {
				return nil, err
			}
			for _, m := range more {
				add(i, m.Key, "%s", m.Msg)
			}
		case t.TeamColumn != "" && !have[t.TeamColumn]:
			hint, err := teamHint(ctx, conn, t)
			if err != nil {
				return nil, err
			}
			add(i, "team_column", "%s has no column %q: %s", t.Qualified(), t.TeamColumn, hint)
		}
		need("actor_column", t.ActorColumn)
		for _, c := range t.ExcludeColumns {
			need("exclude_columns", c)
		}
		if t.Kind == config.KindMembership {
			need("user_column", t.UserColumn)
		}
		if t.Kind == config.KindAITask {
			need("user_column", t.UserColumn)
			need("status_column", t.StatusColumn)
			need("progress_column", t.ProgressColumn)
			need("message_column", t.MessageColumn)
			need("type_column", t.TypeColumn)
			need("result_column", t.ResultColumn)
			need("error_column", t.ErrorColumn)
			need("params_column", t.ParamsColumn)
		}
	}
	return problems, nil
}

// checkKey returns why the table's key columns do not identify its rows,
// or "": they must be exactly the columns of its primary key or of a unique
// constraint or index (not partial, no expressions), and all NOT NULL.
// Otherwise two rows' events would carry the same entityId.
func checkKey(ctx context.Context, conn querier, t config.Table) (string, error) {
	var unique bool
	var nullable, pkey []string
	cols := t.KeyColumns()
	rows, err := conn.Query(ctx, `
select
    exists (select 1 from pg_index i
            where i.indrelid = to_regclass($1) and i.indisunique and i.indisvalid and i.indpred is null
              and i.indnkeyatts = cardinality($2::text[])
              and (select count(*) from pg_attribute a
                   where a.attrelid = i.indrelid and a.attname = any ($2::text[])
                     and a.attnum = any ((i.indkey::int2[])[0:i.indnkeyatts - 1])) = cardinality($2::text[])),
    coalesce((select array_agg(a.attname::text order by a.attnum) from pg_attribute a
              where a.attrelid = to_regclass($1) and a.attname = any ($2::text[]) and not a.attnotnull), '{}'),
    coalesce((select array_agg(a.attname::text order by k.ord)
              from pg_index i cross join unnest(i.indkey::int2[]) with ordinality k (attnum, ord)
              join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
              where i.indrelid = to_regclass($1) and i.indisprimary), '{}')`,
		ident(t.Schema())+"."+ident(t.Name()), cols)
	if err != nil {
		return "", fmt.Errorf("check key of %s: %w", t.Qualified(), err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&unique, &nullable, &pkey); err != nil {
			return "", fmt.Errorf("check key of %s: %w", t.Qualified(), err)
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("check key of %s: %w", t.Qualified(), err)
	}
	what := fmt.Sprintf("%q", cols[0])
	if len(cols) > 1 {
		what = "(" + strings.Join(cols, ", ") + ")"
	}
	switch {
	case !unique:
		hint := "add a primary key or a unique constraint, or name a unique NOT NULL column"
		switch {
		case len(pkey) == 1:
			hint = fmt.Sprintf("the primary key is %q: set id_column: %s", pkey[0], pkey[0])
		case len(pkey) > 1:
			hint = fmt.Sprintf("the primary key is (%[1]s): set id_columns: [%[1]s]", strings.Join(pkey, ", "))
		}
		return fmt.Sprintf("%s does not identify a row of %s: it is neither its primary key nor a unique constraint or index of its own, so two rows' events would carry the same entityId; %s",
			what, t.Qualified(), hint), nil
	case len(nullable) > 0:
		return fmt.Sprintf("%s is unique in %s but %s may be NULL: make it NOT NULL, or use the primary key", what, t.Qualified(), strings.Join(nullable, ", ")), nil
	}
	return "", nil
}

type staleTrigger struct{ table string }

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// staleTriggers lists tables with a rowcast capture trigger that the plan
// does not name.
func staleTriggers(ctx context.Context, q querier, p *Plan) ([]staleTrigger, error) {
	rows, err := q.Query(ctx, `
select n.nspname, c.relname from pg_trigger t
join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
where t.tgname = $1 order by 1, 2`, captureTrigger)
	if err != nil {
		return nil, fmt.Errorf("list capture triggers: %w", err)
	}
	configured := make(map[[2]string]bool, len(p.Tables))
	for _, t := range p.Tables {
		configured[[2]string{t.Table.Schema(), t.Table.Name()}] = true
	}
	var out []staleTrigger
	for rows.Next() {
		var schema, name string
		if err := rows.Scan(&schema, &name); err != nil {
			return nil, fmt.Errorf("list capture triggers: %w", err)
		}
		if !configured[[2]string{schema, name}] {
			out = append(out, staleTrigger{table: ident(schema) + "." + ident(name)})
		}
	}
	return out, rows.Err()
}

// staleParentTriggers lists the team_from parent triggers installed that
// the plan does not name (every one, in logical mode). Tables are quoted as
// ident quotes them, so that they compare equal to the plan's.
func staleParentTriggers(ctx context.Context, q querier, p *Plan) ([]ParentTrigger, error) {
	rows, err := q.Query(ctx, `
select '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"', t.tgname::text from pg_trigger t
join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
where starts_with(t.tgname, $1) and not t.tgisinternal order by 1, 2`, parentTrigger)
	if err != nil {
		return nil, fmt.Errorf("list team_from parent triggers: %w", err)
	}
	installed, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ParentTrigger])
	if err != nil {
		return nil, fmt.Errorf("list team_from parent triggers: %w", err)
	}
	planned := make(map[ParentTrigger]bool, len(p.Tables))
	for _, t := range p.Tables {
		planned[t.Parent] = true
	}
	var out []ParentTrigger
	for _, s := range installed {
		if !planned[s] {
			out = append(out, s)
		}
	}
	return out, nil
}

func dropTriggersSQL(table string) string {
	return fmt.Sprintf("drop trigger if exists %s on %s; drop trigger if exists %s on %s;",
		captureTrigger, table, truncateTrigger, table)
}

// describe turns a PostgreSQL error into a message an operator can act on.
func describe(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42501":
			return fmt.Errorf("%s: permission denied (%s): run install as the tables' owner or a superuser: %w", what, pgErr.Message, err)
		case "42P01":
			return fmt.Errorf("%s: table does not exist: %w", what, err)
		case "42703":
			return fmt.Errorf("%s: a configured column does not exist (%s): %w", what, pgErr.Message, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
