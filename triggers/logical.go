package triggers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/config"
)

// Generated is a stored generated column. Logical decoding does not carry
// generated columns, so the apply function computes them from the decoded
// row with the column's own expression, as the table would.
type Generated struct {
	Name, Expr string
}

// Inspect reads what rendering the logical plan needs from the catalog: the
// stored generated columns of each table, by Table.Qualified(). Their
// expressions are read with search_path = pg_catalog, so every other name
// in them is schema-qualified, as the apply function's pinned search_path
// needs.
func Inspect(ctx context.Context, conn *pgx.Conn, tables []config.Table) (map[string][]Generated, error) {
	out := make(map[string][]Generated)
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "set local search_path = pg_catalog"); err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		return inspectGenerated(ctx, tx, tables, out)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// inspectDomainExcluded returns, by Table.Qualified(), the tables with an
// excluded column whose type is a domain (Options.DomainExcluded).
func inspectDomainExcluded(ctx context.Context, conn *pgx.Conn, tables []config.Table) (map[string]bool, error) {
	out := map[string]bool{}
	for _, t := range tables {
		if len(t.ExcludeColumns) == 0 {
			continue
		}
		var n int
		err := conn.QueryRow(ctx, `
select count(*) from pg_catalog.pg_attribute a join pg_catalog.pg_type ty on ty.oid = a.atttypid
where a.attrelid = to_regclass($1) and a.attname = any($2) and not a.attisdropped and ty.typtype = 'd'`,
			ident(t.Schema())+"."+ident(t.Name()), t.ExcludeColumns).Scan(&n)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", t.Qualified(), err)
		}
		out[t.Qualified()] = n > 0
	}
	return out, nil
}

func inspectGenerated(ctx context.Context, conn pgx.Tx, tables []config.Table, out map[string][]Generated) error {
	for _, t := range tables {
		rows, err := conn.Query(ctx, `
select a.attname, pg_get_expr(d.adbin, d.adrelid)
from pg_attribute a join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where a.attrelid = to_regclass($1) and a.attgenerated = 's' and not a.attisdropped
order by a.attnum`, ident(t.Schema())+"."+ident(t.Name()))
		if err != nil {
			return fmt.Errorf("inspect %s: %w", t.Qualified(), err)
		}
		var g Generated
		_, err = pgx.ForEachRow(rows, []any{&g.Name, &g.Expr}, func() error {
			out[t.Qualified()] = append(out[t.Qualified()], g)
			return nil
		})
		if err != nil {
			return fmt.Errorf("inspect %s: %w", t.Qualified(), err)
		}
	}
	return nil
}

// Prepare renders the plan for the configuration's capture mode, reading
// the catalog first for what rendering needs (team_from parent keys; in
// logical mode stored generated columns, in trigger mode excluded columns
// of a domain type).
func Prepare(ctx context.Context, conn *pgx.Conn, cfg *config.Config) (*Plan, error) {
	o := OptionsFor(cfg)
	tables, err := resolveParents(ctx, conn, cfg.CapturedTables())
	if err != nil {
		return nil, err
	}
	if o.Logical {
		gen, err := Inspect(ctx, conn, tables)
		if err != nil {
			return nil, err
		}
		o.Generated = gen
	} else if o.DomainExcluded, err = inspectDomainExcluded(ctx, conn, tables); err != nil {
		return nil, err
	}
	return Render(tables, o)
}

// OptionsFor returns the render options of a configuration (without the
// catalog facts Prepare adds).
func OptionsFor(cfg *config.Config) Options {
	return Options{
		Notify:      cfg.Capture.NotifyEnabled(),
		Logical:     cfg.Capture.Mode == config.ModeLogical,
		Slot:        cfg.Capture.Slot,
		Publication: cfg.Capture.Publication,
	}
}

// renderApply renders a table's logical-mode apply function: it runs the
// same body as the capture trigger on the rows the slot holder decoded, so
// that both modes send byte-identical events (the changelog rows may
// differ in key order and spacing, which the relay's rendering as jsonb
// removes). new_j and old_j are the rows' json as the holder rendered them
// with the column types of the relation message that preceded the change,
// that is as the table was when the change was committed, not as it is
// when the holder applies it (a later migration may have added, dropped,
// renamed or retyped columns); they are used where the trigger uses
// to_json(NEW) and to_json(OLD). new_v and old_v are the same rows' text
// values, from which the fields the body needs (id, team, actor, task
// columns) are read into rows of the table's type. A table with stored
// generated columns (which pgoutput does not send) then reads its rows
// from new_j and old_j (their non-null members), to compute those columns
// with their own expressions on the table as it is, merged into the json
// (the relay puts the keys in order). Excluded columns are null, as the capture trigger
// sets them: see nulled below. It also drops the table's capture triggers
// (both modes at once would capture twice) and sets the replica identity.
//
// A team_from table's team is looked up in the parent table when the holder
// applies the change, not as the source transaction saw the parent:
// pgoutput carries only the child's tuple, and the database keeps no
// version of the parent that a query could read as of the source commit
// (the historic snapshot exists only inside the decoding plugin). So when
// the parent changes between the child's commit and its apply (the
// holder's lag: milliseconds while it keeps up, longer while it is down or
// catching up), the child's change goes to the parent's team at apply
// time, or, if the parent was deleted meanwhile, has no team and is not
// sent. The apply order cannot repair this, since the parent's later
// change may not have been decoded yet. Where that window matters, give
// the child a team column of its own (team_column), which travels in its
// tuple; the README's "Team through a parent row" says the same.
//
// The body does not ring the writers' doorbell: the holder wakes the
// ticker itself after each group commit (logical.Options.Doorbell,
// WakeTicker), once for all the changes it holds.
func renderApply(t config.Table, gen []Generated) (TablePlan, error) {
	fn := "rowcast." + ident(ApplyName(t.Schema(), t.Name()))
	tbl := ident(t.Schema()) + "." + ident(t.Name())
	body, err := bodyFor(t, applyRecs, false)
	if err != nil {
		return TablePlan{}, err
	}
	// The fields the body reads, each from its text value (one lookup in
	// new_v or old_v, where json's -> would parse the whole row again for
	// each). In a table without stored generated columns the others stay
	// unset: a column retyped since the change could not take its old
	// value and need not; and so does a field the row lacks or holds null
	// (with a replica identity index an old row holds the index's columns
	// only: the others are absent from an update's and null in a delete's
	// or a key change's), which a NOT NULL domain would refuse.
	decl := fmt.Sprintf("    r_new %[1]s;\n    r_old %[1]s;\n", tbl)
	var fields string
	for _, r := range [][3]string{{"r_new", "new_v", "new_j"}, {"r_old", "old_v", "old_j"}} {
		fields += "    IF " + r[1] + " IS NOT NULL THEN"
		for _, c := range fieldColumns(t) {
			v := r[1] + " ->> " + literal(c)
			fields += "\n        IF " + v + " IS NOT NULL THEN " + r[0] + "." + ident(c) + " := " + v + "; END IF;"
		}
		if len(gen) > 0 {
			// The whole row, its non-null members: the generated columns'
			// expressions read it. Over the fields (a row, not NULL, once
			// one is set: the id always is, unless its column was renamed
			// since the change), so that the columns the row lacks or
			// holds null are left unset, not checked against a domain.
			fields += "\n        " + r[0] + " := json_populate_record(" + r[0] + ", (SELECT json_object_agg(e.key, e.value) FROM json_each(" +
				r[2] + ") AS e WHERE json_typeof(e.value) <> 'null'));"
		}
		fields += "\n    END IF;\n"
	}
	body = strings.Replace(body, "DECLARE\n", "DECLARE\n"+decl, 1)
	// Stored generated columns are computed on the whole row and merged
	// into the holder's rendering (the relay orders the keys). Excluded
	// columns are null in the rows this function writes. The holder
	// renders null those the body does not read (splitExcluded; none for a
	// table with stored generated columns, which are computed from the
	// real values), as rowcast.holder_nulls lists them, and passes that
	// list as nulled. This function refuses a list other than its own, so
	// an install that changed the exclusions after the holder read them
	// rolls the holder's group back; its next attempt reads them again.
	// The function sets the other excluded columns to null itself, after
	// the body's fields and the generated columns were read from them.
	holderNulls, nulls := splitExcluded(t)
	if len(gen) > 0 {
		holderNulls, nulls = nil, t.ExcludeColumns
	}
	var g strings.Builder
	fmt.Fprintf(&g, "    IF nulled IS DISTINCT FROM %[1]s THEN\n"+
		"        RAISE EXCEPTION 'rowcast: the slot holder rendered null %%, the apply function of %% nulls %%', nulled, %[2]s, %[1]s\n"+
		"            USING ERRCODE = %[3]s, HINT = 'an install changed the excluded columns; the holder reads them again on its next attempt';\n"+
		"    END IF;\n", textArray(holderNulls), literal(t.Qualified()), literal(nullsMismatch))
	g.WriteString(fields)
	var pairsNew, pairsOld []string
	for _, c := range gen {
		fmt.Fprintf(&g, "    IF new_j IS NOT NULL THEN r_new.%[1]s := (SELECT %[2]s FROM (SELECT (r_new).*) AS t); END IF;\n", ident(c.Name), c.Expr)
		fmt.Fprintf(&g, "    IF old_j IS NOT NULL THEN r_old.%[1]s := (SELECT %[2]s FROM (SELECT (r_old).*) AS t); END IF;\n", ident(c.Name), c.Expr)
		pairsNew = append(pairsNew, "("+literal(c.Name)+", to_json(r_new."+ident(c.Name)+"))")
		pairsOld = append(pairsOld, "("+literal(c.Name)+", to_json(r_old."+ident(c.Name)+"))")
	}
	if len(pairsNew) > 0 || len(nulls) > 0 {
		fmt.Fprintf(&g, "    IF new_j IS NOT NULL THEN new_j := %s; END IF;\n    IF old_j IS NOT NULL THEN old_j := %s; END IF;\n",
			mergeJSON("new_j", pairsNew, nulls), mergeJSON("old_j", pairsOld, nulls))
	}
	body = strings.Replace(body, "BEGIN\n", "BEGIN\n"+g.String(), 1)
	fnSQL := functionSQL(fn+"(op text, new_j json, old_j json, nulled text[], new_v jsonb, old_v jsonb)", "void", "#variable_conflict use_column\n"+body)
	hash := hashOf(fnSQL)
	var b strings.Builder
	b.WriteString(fnSQL)
	fmt.Fprintf(&b, "COMMENT ON FUNCTION %s(text, json, json, text[], jsonb, jsonb) IS %s;\n", fn, literal(hashPrefix+hash))
	b.WriteString(holderNullsSQL(t, holderNulls))
	// Apply functions of earlier versions took (text, jsonb, jsonb), then
	// (text, json, json); a slot holder of such a version
	// fails on its next group without one and retries until a holder of
	// this version takes the slot (nothing is lost: the slot keeps what no
	// group committed).
	fmt.Fprintf(&b, "DROP FUNCTION IF EXISTS %s(text, jsonb, jsonb);\n", fn)
	fmt.Fprintf(&b, "DROP FUNCTION IF EXISTS %s(text, json, json);\n", fn)
	b.WriteString(dropTriggersSQL(tbl) + "\n")
	if t.ReplicaIdentityIndex != "" {
		fmt.Fprintf(&b, "ALTER TABLE %s REPLICA IDENTITY USING INDEX %s;\n", tbl, ident(t.ReplicaIdentityIndex))
	} else {
		fmt.Fprintf(&b, "ALTER TABLE %s REPLICA IDENTITY FULL;\n", tbl)
	}
	return TablePlan{Table: t, Function: fn, Hash: hash, SQL: b.String(), HolderNulls: holderNulls}, nil
}

// mergeJSON renders the expression for the json object j with the members
// of pairs ((key, json value) rows) added and the keys in nulls set to
// null; its keys come out in no particular order (the relay orders them).
func mergeJSON(j string, pairs, nulls []string) string {
	value := "x.v"
	if len(nulls) > 0 {
		value = "CASE WHEN x.k = ANY (" + textArray(nulls) + ") THEN 'null'::json ELSE x.v END"
	}
	rows := "SELECT e.key, e.value FROM json_each(" + j + ") AS e"
	if len(pairs) > 0 {
		rows += " UNION ALL VALUES " + strings.Join(pairs, ", ")
	}
	return "coalesce((SELECT json_object_agg(x.k, " + value + ") FROM (" + rows + ") AS x (k, v)), '{}'::json)"
}

// holderNullsSQL records the columns the slot holder renders null in t's
// rows (verifyLogical checks them).
func holderNullsSQL(t config.Table, cols []string) string {
	return fmt.Sprintf("INSERT INTO rowcast.holder_nulls (tbl, columns) VALUES (%s, %s)"+
		" ON CONFLICT (tbl) DO UPDATE SET columns = excluded.columns;\n", literal(t.Qualified()), textArray(cols))
}

// nullsMismatch is the SQLSTATE with which an apply function refuses rows
// whose excluded columns the slot holder rendered from another list than
// the function's own.
const nullsMismatch = "RC001"

// splitExcluded returns t's excluded columns in two: those the capture
// body does not read, which the slot holder renders null in the rows it
// hands to t's apply function (install keeps them in rowcast.holder_nulls),
// and those it reads, which the apply function sets to null itself after
// reading them.
func splitExcluded(t config.Table) (holder, apply []string) {
	fields := fieldColumns(t)
	for _, c := range t.ExcludeColumns {
		if slices.Contains(fields, c) {
			apply = append(apply, c)
		} else {
			holder = append(holder, c)
		}
	}
	return holder, apply
}

// fieldColumns lists the columns the capture body reads from a row, as
// opposed to rendering it whole.
func fieldColumns(t config.Table) []string {
	cols := append(slices.Clone(t.KeyColumns()), t.TeamColumn)
	if t.TeamFrom != nil {
		cols = append(cols, t.TeamFrom.Key)
	}
	if t.ActorColumn != "" {
		cols = append(cols, t.ActorColumn)
	}
	if t.Kind == config.KindAITask {
		cols = append(cols, t.UserColumn, t.StatusColumn, t.ProgressColumn)
	}
	var out []string
	seen := map[string]bool{}
	for _, c := range cols {
		if c != "" && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// renderPublication creates the publication, or sets its tables.
func renderPublication(name string, tables []config.Table) string {
	list := make([]string, len(tables))
	for i, t := range tables {
		list[i] = ident(t.Schema()) + "." + ident(t.Name())
	}
	tl := strings.Join(list, ", ")
	return fmt.Sprintf(`DO $pub$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %[1]s) THEN
        ALTER PUBLICATION %[2]s SET TABLE %[3]s;
    ELSE
        CREATE PUBLICATION %[2]s FOR TABLE %[3]s;
    END IF;
END
$pub$;
`, literal(name), ident(name), tl)
}

// CheckLogical reports what the database lacks for logical capture, each
// with the change that fixes it.
func CheckLogical(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	var walLevel string
	var slots, senders int
	var canReplicate bool
	var user string
	err := conn.QueryRow(ctx, `
select current_setting('wal_level'), current_setting('max_replication_slots')::int,
       current_setting('max_wal_senders')::int, current_user,
       coalesce((select rolsuper or rolreplication from pg_roles where rolname = current_user), false)`).
		Scan(&walLevel, &slots, &senders, &user, &canReplicate)
	if err != nil {
		return nil, fmt.Errorf("check logical: %w", err)
	}
	var problems []string
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("wal_level is %q; logical capture needs logical: run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL (on a managed service set the provider's parameter, e.g. rds.logical_replication = 1 or cloudsql.logical_decoding = on)", walLevel))
	}
	if slots < 1 {
		problems = append(problems, fmt.Sprintf("max_replication_slots is %d; run ALTER SYSTEM SET max_replication_slots = 10; and restart PostgreSQL", slots))
	}
	if senders < 1 {
		problems = append(problems, fmt.Sprintf("max_wal_senders is %d; run ALTER SYSTEM SET max_wal_senders = 10; and restart PostgreSQL", senders))
	}
	if !canReplicate {
		problems = append(problems, fmt.Sprintf("role %s may not replicate; run ALTER ROLE %s REPLICATION; as a superuser", ident(user), ident(user)))
	}
	return problems, nil
}

// CheckSlot reports why the replication slot named slot cannot serve
// logical capture of the connected database: slot names are cluster-wide,
// so a slot of that name may belong to another database of the same
// server, or be a physical slot, or decode with another plugin than
// pgoutput. Each problem names the setting to change (capture.slot). A
// missing slot is no problem: install creates it.
func CheckSlot(ctx context.Context, conn *pgx.Conn, slot string) ([]string, error) {
	var kind, here string
	var plugin, db *string
	err := conn.QueryRow(ctx, `
select s.slot_type, s.plugin, s.database, current_database()
from pg_replication_slots s where s.slot_name = $1`, slot).Scan(&kind, &plugin, &db, &here)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("check slot: %w", err)
	}
	other := "set capture.slot to a name no other database or tool on this server uses"
	switch {
	case kind != "logical":
		return []string{fmt.Sprintf("capture.slot: replication slot %q is a %s slot, not rowcast's: %s", slot, kind, other)}, nil
	case db == nil || *db != here:
		owner := "another database"
		if db != nil {
			owner = fmt.Sprintf("database %q", *db)
		}
		return []string{fmt.Sprintf("capture.slot: replication slot %q belongs to %s, not %q (slot names are cluster-wide): %s",
			slot, owner, here, other)}, nil
	case plugin == nil || *plugin != "pgoutput":
		p := ""
		if plugin != nil {
			p = *plugin
		}
		return []string{fmt.Sprintf("capture.slot: replication slot %q decodes with plugin %q, not pgoutput: %s", slot, p, other)}, nil
	}
	return nil, nil
}

// SlotInUse describes what uses the replication slot, or returns "" when
// nothing does: a relay holding rowcast's election lock for it, or any
// process streaming from it. Remove refuses to start while something does.
func SlotInUse(ctx context.Context, conn *pgx.Conn, slot string) (string, error) {
	return slotInUse(ctx, conn, slot)
}

// slotInUse returns a description of what holds the slot, or "" when
// nothing does: a relay holding rowcast's election lock for it, or any
// process streaming from it.
func slotInUse(ctx context.Context, conn *pgx.Conn, slot string) (string, error) {
	var who *string
	err := conn.QueryRow(ctx, `
with h as (
    select s.active_pid as pid, 'streams from it' as what
    from pg_replication_slots s where s.slot_name = $1 and s.active_pid is not null
    union all
    select l.pid, 'holds the relays'' election lock for it'
    from pg_locks l
    where l.locktype = 'advisory' and l.granted and l.objsubid = 1 and l.pid <> pg_backend_pid()
      and ((l.classid::bigint << 32) | l.objid::bigint) = hashtext($2)::bigint
)
select string_agg(format('pid %s (application %L, client %s) %s', h.pid, coalesce(a.application_name, ''),
                         coalesce(a.client_addr::text, 'local'), h.what), '; ' order by h.pid)
from h left join pg_stat_activity a on a.pid = h.pid`, slot, slotLockKey(slot)).Scan(&who)
	if err != nil {
		return "", fmt.Errorf("check slot in use: %w", err)
	}
	if who == nil {
		return "", nil
	}
	return *who, nil
}

// slotLockKey is the advisory lock key (hashtext of it) that elects the
// relay holding a slot; relay/capture/logical takes the same lock.
func slotLockKey(slot string) string { return "rowcast.slot:" + slot }

// checkIdentityIndexes reports tables whose configured replica identity
// index is missing, not unique, or lacks the team column or an id column:
// without the team in the old key an update could not tell a team move, and
// a delete would not know its team or which row it was.
func checkIdentityIndexes(ctx context.Context, conn *pgx.Conn, tables []config.Table) ([]string, error) {
	var problems []string
	for i, t := range tables {
		if t.ReplicaIdentityIndex == "" {
			continue
		}
		teamCol := t.TeamColumn
		if t.TeamFrom != nil {
			teamCol = t.TeamFrom.Key // the parent's key: the team is looked up from it
		}
		var found, unique, hasTeam, hasKey bool
		err := conn.QueryRow(ctx, `
select true, i.indisunique,
       exists (select 1 from pg_attribute a where a.attrelid = i.indrelid and a.attname = $3
               and a.attnum = any (i.indkey)),
       (select count(*) from pg_attribute a where a.attrelid = i.indrelid and a.attname = any ($4::text[])
               and a.attnum = any (i.indkey)) = cardinality($4::text[])
from pg_index i join pg_class c on c.oid = i.indexrelid
where i.indrelid = to_regclass($1) and c.relname = $2`,
			ident(t.Schema())+"."+ident(t.Name()), t.ReplicaIdentityIndex, teamCol, t.KeyColumns()).Scan(&found, &unique, &hasTeam, &hasKey)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("check replica identity index: %w", err)
		}
		switch {
		case !found:
			problems = append(problems, fmt.Sprintf("tables[%d].replica_identity_index: %s has no index %q", i, t.Qualified(), t.ReplicaIdentityIndex))
		case !unique:
			problems = append(problems, fmt.Sprintf("tables[%d].replica_identity_index: index %q is not unique", i, t.ReplicaIdentityIndex))
		case !hasTeam:
			problems = append(problems, fmt.Sprintf("tables[%d].replica_identity_index: index %q does not include the team column %q", i, t.ReplicaIdentityIndex, teamCol))
		case !hasKey:
			problems = append(problems, fmt.Sprintf("tables[%d].replica_identity_index: index %q does not include every id column (%s)", i, t.ReplicaIdentityIndex, strings.Join(t.KeyColumns(), ", ")))
		}
	}
	return problems, nil
}

// createSlot creates the replication slot unless it exists; it must run
// outside a transaction that wrote anything.
func createSlot(ctx context.Context, conn *pgx.Conn, slot string) (bool, error) {
	var created bool
	err := conn.QueryRow(ctx, `
select count(*) > 0 from (
    select pg_create_logical_replication_slot($1, 'pgoutput')
    where not exists (select 1 from pg_replication_slots where slot_name = $1)
) s`, slot).Scan(&created)
	if err != nil {
		return false, describe("replication slot "+slot, err)
	}
	return created, nil
}

// removeLogical drops the publication and the slot if they exist, and sets
// the replica identity of the published tables back to DEFAULT. It checks
// first, before dropping anything, that no relay or other process uses the
// slot; and it leaves alone a slot of that name that belongs to another
// database.
func removeLogical(ctx context.Context, conn *pgx.Conn, slot, publication string) ([]string, error) {
	// Hold the relays' election lock meanwhile, so none starts reading.
	var got bool
	if err := conn.QueryRow(ctx, "select pg_try_advisory_lock(hashtext($1))", slotLockKey(slot)).Scan(&got); err != nil {
		return nil, fmt.Errorf("check slot in use: %w", err)
	}
	if got {
		defer conn.Exec(context.WithoutCancel(ctx), "select pg_advisory_unlock(hashtext($1))", slotLockKey(slot))
	}
	who, err := slotInUse(ctx, conn, slot)
	if err != nil {
		return nil, err
	}
	if who == "" && !got {
		who = "another session holds the relays' election lock"
	}
	if who != "" {
		return nil, fmt.Errorf("replication slot %s is in use: %s; stop every relay (and whatever else reads the slot) first; nothing was removed",
			slot, who)
	}
	var done []string
	var dropped bool
	err = conn.QueryRow(ctx, `
select count(*) > 0 from (
    select pg_drop_replication_slot(slot_name) from pg_replication_slots
    where slot_name = $1 and database = current_database()
) s`, slot).Scan(&dropped)
	if err != nil {
		return nil, fmt.Errorf("drop replication slot %s: %w", slot, err)
	}
	if dropped {
		done = append(done, "dropped replication slot "+slot)
	}
	// Each name quoted once, where it needs quotes (regnamespace::text is
	// quoted already: quoting it again broke schemas that need quotes).
	rows, err := conn.Query(ctx, `
select format('%I.%I', n.nspname, c.relname)
from pg_publication_rel pr join pg_publication p on p.oid = pr.prpubid join pg_class c on c.oid = pr.prrelid
join pg_namespace n on n.oid = c.relnamespace
where p.pubname = $1 and c.relreplident in ('f', 'i') order by 1`, publication)
	if err != nil {
		return nil, fmt.Errorf("list published tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list published tables: %w", err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, t := range tables {
			if _, err := tx.Exec(ctx, "alter table "+t+" replica identity default"); err != nil {
				return describe(t, err)
			}
			done = append(done, "set REPLICA IDENTITY DEFAULT on "+t+" (logical capture had changed it)")
		}
		if _, err := tx.Exec(ctx, "drop publication if exists "+ident(publication)); err != nil {
			return fmt.Errorf("drop publication: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append(done, "dropped publication "+publication+" (if it existed)"), nil
}

// verifyLogical adds the logical-mode differences to drift.
func verifyLogical(ctx context.Context, conn *pgx.Conn, p *Plan) ([]string, error) {
	var drift []string
	// The columns the holder renders null, per table (none before a
	// schema that has the table: Verify reports that schema's drift).
	held := map[string][]string{}
	var hasNulls bool
	if err := conn.QueryRow(ctx, "select to_regclass('rowcast.holder_nulls') is not null").Scan(&hasNulls); err != nil {
		return nil, fmt.Errorf("verify holder nulls: %w", err)
	}
	if hasNulls {
		rows, err := conn.Query(ctx, "select tbl, columns from rowcast.holder_nulls")
		if err != nil {
			return nil, fmt.Errorf("verify holder nulls: %w", err)
		}
		var tbl string
		var cols []string
		if _, err := pgx.ForEachRow(rows, []any{&tbl, &cols}, func() error { held[tbl] = slices.Clone(cols); return nil }); err != nil {
			return nil, fmt.Errorf("verify holder nulls: %w", err)
		}
	}
	for _, t := range p.Tables {
		tbl := ident(t.Table.Schema()) + "." + ident(t.Table.Name())
		var exists, triggered bool
		var comment *string
		var replident, index string
		err := conn.QueryRow(ctx, `
select c.oid is not null,
       obj_description(to_regprocedure($2), 'pg_proc'),
       coalesce(c.relreplident::text, ''),
       coalesce((select ic.relname::text from pg_index i join pg_class ic on ic.oid = i.indexrelid
                 where i.indrelid = c.oid and i.indisreplident), ''),
       exists (select 1 from pg_trigger where tgrelid = c.oid and tgname = $3)
from (select to_regclass($1) as oid) r left join pg_class c on c.oid = r.oid`,
			tbl, t.Function+"(text, json, json, text[], jsonb, jsonb)", captureTrigger).Scan(&exists, &comment, &replident, &index, &triggered)
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", t.Table.Qualified(), err)
		}
		switch {
		case !exists:
			drift = append(drift, t.Table.Qualified()+": table does not exist")
			continue
		case comment == nil:
			drift = append(drift, t.Table.Qualified()+": apply function missing")
		case *comment != hashPrefix+t.Hash:
			drift = append(drift, t.Table.Qualified()+": apply function differs from the configuration")
		}
		if nulled, ok := held[t.Table.Qualified()]; !ok || !slices.Equal(nulled, t.HolderNulls) && len(nulled)+len(t.HolderNulls) > 0 {
			// The apply function would refuse every change the holder
			// renders with this list.
			drift = append(drift, t.Table.Qualified()+": rowcast.holder_nulls differs from the configuration's excluded columns")
		}
		if triggered {
			drift = append(drift, t.Table.Qualified()+": has a trigger-mode capture trigger (it would capture twice)")
		}
		want := "f"
		if t.Table.ReplicaIdentityIndex != "" {
			want = "i"
		}
		if replident != want || (want == "i" && index != t.Table.ReplicaIdentityIndex) {
			drift = append(drift, t.Table.Qualified()+": replica identity is not what the configuration asks")
		}
	}
	rows, err := conn.Query(ctx, "select schemaname || '.' || tablename from pg_publication_tables where pubname = $1", p.Publication)
	if err != nil {
		return nil, fmt.Errorf("verify publication: %w", err)
	}
	published, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("verify publication: %w", err)
	}
	want := make([]string, 0, len(p.Tables))
	for _, t := range p.Tables {
		want = append(want, t.Table.Qualified())
	}
	sort.Strings(want)
	sort.Strings(published)
	if strings.Join(want, ",") != strings.Join(published, ",") {
		drift = append(drift, fmt.Sprintf("publication %s has tables [%s], want [%s]", p.Publication,
			strings.Join(published, ", "), strings.Join(want, ", ")))
	}
	var slotExists bool
	if err := conn.QueryRow(ctx, "select exists (select 1 from pg_replication_slots where slot_name = $1)", p.Slot).Scan(&slotExists); err != nil {
		return nil, fmt.Errorf("verify slot: %w", err)
	}
	if !slotExists {
		drift = append(drift, "replication slot "+p.Slot+" does not exist")
	}
	return drift, nil
}

// ErrNotReady is returned by Install when the database lacks what logical
// capture needs; the error lists each problem with its fix.
var ErrNotReady = errors.New("the database is not ready for logical capture")
