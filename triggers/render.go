// Package triggers renders, installs, verifies and removes what trigger
// capture needs in the database: the rowcast schema (changelog, ticks) and
// one generated capture function
// and trigger pair per configured table.
//
// Every identifier is quoted and every value is a quoted literal; nothing
// from the configuration is spliced into SQL raw. Each rendered function
// carries a hash of its own text in its comment, which is how Verify detects
// drift between the database and the configuration.
package triggers

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"text/template"
	"unicode/utf8"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay"
	rowcastsql "github.com/rowcast/rowcast/sql"
)

// Trigger names on captured tables.
const (
	captureTrigger  = "rowcast_capture"
	truncateTrigger = "rowcast_truncate"
	// parentTrigger, with a suffix per team_from key and column, names
	// the trigger on a team_from parent that keeps the team of the rows it
	// deletes (rowcast.parent_deleting).
	parentTrigger = "rowcast_parent_"
	hashPrefix    = "rowcast sha256:"
)

// Options says how to render.
type Options struct {
	// Notify makes capture ring the pg_notify doorbell when the ticker
	// asks for it.
	Notify bool
	// Logical renders logical mode: per-table apply functions, replica
	// identity and the publication instead of capture triggers.
	Logical           bool
	Slot, Publication string
	// Generated lists each table's stored generated columns (from Inspect),
	// by Table.Qualified(); logical mode only.
	Generated map[string][]Generated
	// DomainExcluded names, by Table.Qualified(), the tables with an
	// excluded column of a domain type (from Inspect): a domain may refuse
	// null, so their capture removes excluded columns from jsonb instead of
	// setting them to null (entityRow).
	DomainExcluded map[string]bool
}

// AllStream is the rowcast.sql template's spelling of relay.AllStream, the
// stream a TRUNCATE is recorded in.
func (Options) AllStream() string { return literal(relay.AllStream) }

// Plan is everything one install does, in order.
type Plan struct {
	// Schema is the rowcast schema DDL.
	Schema string
	// SchemaHash is recorded in rowcast.tick()'s comment.
	SchemaHash string
	// Tables holds one rendered unit per configured table.
	Tables []TablePlan
	// Helpers holds the AI task SQL helpers, bound to the first ai_task
	// table; empty without one.
	Helpers string
	// Logical mode: the publication DDL, and the names it was rendered for.
	Logical           bool
	PublicationSQL    string
	Slot, Publication string
}

// TablePlan is the DDL of one captured table.
type TablePlan struct {
	Table    config.Table
	Function string // schema-qualified, quoted function name
	Hash     string // recorded in the function's comment
	SQL      string // CREATE FUNCTION, triggers and comment
	// Parent is the trigger this table's team_from rule needs on the
	// parent table, in trigger mode; zero otherwise.
	Parent ParentTrigger
	// HolderNulls are the excluded columns the slot holder renders null
	// (logical mode; install records them in rowcast.holder_nulls).
	HolderNulls []string
}

// ParentTrigger is a trigger on a team_from parent table: BEFORE a parent
// row is deleted it keeps the row's team for the statement, so the capture
// trigger of a child deleted (or detached) by ON DELETE CASCADE or SET NULL
// still finds its team.
type ParentTrigger struct {
	Table string // the parent, quoted and schema-qualified; "" for none
	Name  string // unquoted trigger name
}

// SQL returns the whole plan as one script.
func (p *Plan) SQL() string {
	var b strings.Builder
	b.WriteString(p.Schema)
	b.WriteString("\n")
	for _, t := range p.Tables {
		b.WriteString(t.SQL)
		b.WriteString("\n")
	}
	b.WriteString(p.Helpers)
	b.WriteString(p.PublicationSQL)
	return b.String()
}

// Render builds the install plan for the given tables. It touches no
// database.
func Render(tables []config.Table, o Options) (*Plan, error) {
	tmpl, err := template.New("rowcast.sql").Parse(rowcastsql.Rowcast)
	if err != nil {
		return nil, fmt.Errorf("render schema: %w", err)
	}
	var schema bytes.Buffer
	if err := tmpl.Execute(&schema, o); err != nil {
		return nil, fmt.Errorf("render schema: %w", err)
	}
	h := hashOf(schema.String())
	p := &Plan{
		Schema:     schema.String() + "COMMENT ON FUNCTION rowcast.tick() IS " + literal(hashPrefix+h) + ";\n",
		SchemaHash: h,
		Logical:    o.Logical, Slot: o.Slot, Publication: o.Publication,
	}
	if o.Logical {
		if o.Slot == "" || o.Publication == "" {
			return nil, fmt.Errorf("render: logical mode needs a slot and a publication name")
		}
		p.PublicationSQL = renderPublication(o.Publication, tables)
	}
	for _, t := range tables {
		render := func(t config.Table) (TablePlan, error) {
			return renderTable(t, o.Notify, o.DomainExcluded[t.Qualified()])
		}
		if o.Logical {
			render = func(t config.Table) (TablePlan, error) { return renderApply(t, o.Generated[t.Qualified()]) }
		}
		tp, err := render(t)
		if err != nil {
			return nil, err
		}
		p.Tables = append(p.Tables, tp)
		if t.Kind == config.KindAITask && p.Helpers == "" {
			p.Helpers = renderTaskHelpers(t)
		}
	}
	return p, nil
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}

// FunctionName returns the unquoted name of a table's capture function in
// schema rowcast: capture__<schema>__<table>, distinct for distinct tables.
// When that would be longer than 63 bytes, or ambiguous (the schema contains
// "__" or ends in "_", so that a__b.c and a.b__c would meet), it is cut at
// a character boundary and ends in a hash of the schema and table.
func FunctionName(t config.Table) string { return functionName("capture__", t.Schema(), t.Name()) }

// ApplyName returns the unquoted name of a table's logical-mode apply
// function in schema rowcast, named like FunctionName.
func ApplyName(schema, table string) string { return functionName("apply__", schema, table) }

func functionName(prefix, schema, table string) string {
	name := prefix + schema + "__" + table
	if len(name) <= 63 && !strings.Contains(schema, "__") && !strings.HasSuffix(schema, "_") {
		return name
	}
	sum := sha256.Sum256([]byte(schema + "\x00" + table))
	cut := name[:min(len(name), 50)]
	for len(cut) > 0 && !utf8.ValidString(cut) {
		cut = cut[:len(cut)-1]
	}
	return cut + "_" + hex.EncodeToString(sum[:6])
}

func renderTable(t config.Table, notify, domainExcluded bool) (TablePlan, error) {
	if t.Name() == "" {
		return TablePlan{}, fmt.Errorf("render table: empty table name")
	}
	fn := "rowcast." + ident(FunctionName(t))
	tbl := ident(t.Schema()) + "." + ident(t.Name())
	r := triggerRecs
	r.jsonbExclusion = domainExcluded
	body, err := bodyFor(t, r, notify)
	if err != nil {
		return TablePlan{}, err
	}
	fnSQL := functionSQL(fn+"()", "trigger", body)
	hash := hashOf(fnSQL)
	var b strings.Builder
	b.WriteString(fnSQL)
	fmt.Fprintf(&b, "COMMENT ON FUNCTION %s() IS %s;\n", fn, literal(hashPrefix+hash))
	fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", captureTrigger, tbl)
	fmt.Fprintf(&b, "CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s();\n", captureTrigger, tbl, fn)
	fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", truncateTrigger, tbl)
	fmt.Fprintf(&b, "CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();\n", truncateTrigger, tbl)
	var parent ParentTrigger
	if f := t.TeamFrom; f != nil {
		parent = ParentTrigger{Table: ident(f.Parent().Schema()) + "." + ident(f.Parent().Name()), Name: parentTriggerName(f)}
		fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", ident(parent.Name), parent.Table)
		fmt.Fprintf(&b, "CREATE TRIGGER %s BEFORE DELETE ON %s FOR EACH ROW EXECUTE FUNCTION rowcast.parent_deleting(%s, %s);\n",
			ident(parent.Name), parent.Table, literal(f.ParentKey), literal(f.Column))
	}
	return TablePlan{Table: t, Function: fn, Hash: hash, SQL: b.String(), Parent: parent}, nil
}

// parentTriggerName names the parent trigger of a team_from rule, by its
// parent key and team column, so that children sharing both share it.
func parentTriggerName(f *config.TeamFrom) string {
	return parentTrigger + hashOf(f.ParentKey + "\x00" + f.Column)[:12]
}

// rowJSON renders the expression for a row's jsonb (j, e.g. to_jsonb(NEW))
// with exclusions removed: AI task bodies diff their rows as jsonb.
func rowJSON(j string, t config.Table) string {
	if len(t.ExcludeColumns) == 0 {
		return j
	}
	return "(" + j + " - " + textArray(t.ExcludeColumns) + ")"
}

// entityRow renders the expression for an entity row's json: to_json of the
// trigger's row, whose excluded columns it sets to null first (the mapper
// leaves them out of events), or the apply function's argument, in which
// the slot holder or the function set them to null (renderApply). to_json
// writes the columns in the
// table's order and, unlike to_jsonb, neither sorts the keys nor builds a
// jsonb value: 48k instructions against 74k for the bench's escrow row.
// jsonb_populate_record ignores a key the row lacks, so a column dropped
// from the table while still excluded breaks no write; but it checks a
// domain's constraints, which may refuse null, so a table with an excluded
// column of a domain type removes it from the row's jsonb instead (the
// dearer way, and the same events: the relay renders rows as jsonb).
func entityRow(t config.Table, r recs, rec, j string) string {
	if !r.trigger || len(t.ExcludeColumns) == 0 {
		return j
	}
	if r.jsonbExclusion {
		return rowJSON("to_jsonb("+rec+")", t) + "::json"
	}
	pairs := make([]string, len(t.ExcludeColumns))
	for i, c := range t.ExcludeColumns {
		q, _ := json.Marshal(c)
		pairs[i] = string(q) + ":null"
	}
	return "to_json(jsonb_populate_record(" + rec + ", " + literal("{"+strings.Join(pairs, ",")+"}") + "::jsonb))"
}

// declare declares a body's variables; n and o, its rows, are of type rows.
func declare(rows string) string {
	return `DECLARE
    hw    integer;
    n     ` + rows + `;
    o     ` + rows + `;
    ch    jsonb;
    ign   text; -- results not needed (see ringSQL)
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
`
}

// ringSQL rings the writers' doorbell (a notification sent at commit) when
// the ticker asked for it (rowcast.bell not 0), at every change: PostgreSQL
// sends a transaction's identical notifications once, and the look at the
// sequence costs less than remembering, in a transaction-local setting,
// that the transaction looked already (measured under callgrind on a
// one-row UPDATE: 6k instructions against 30k; a transaction of more than
// five changes pays more than before, a few percent of its capture).
// pg_notify's result is assigned, not PERFORMed: PERFORM runs a query
// through the executor, an assignment evaluates the call directly. Empty
// when the doorbell is off.
func ringSQL(notify bool) string {
	if !notify {
		return ""
	}
	return `IF pg_sequence_last_value('rowcast.bell'::regclass) IS DISTINCT FROM 0 THEN ign := pg_notify('rowcast', ''); END IF;`
}

// diff sets ch to the changed columns of n against o, or NULL.
const diff = `        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
`

// functionSQL renders a capture or apply function: PL/pgSQL whose rendering
// settings (those to_jsonb output depends on) are pinned by SET clauses, so
// events do not depend on the writer's session, and the writer's values
// are back when it returns, or fails. The clauses cost less than any check
// in the body: measured under callgrind on the bench's one-row UPDATE, a
// body that looked at the three settings and set, by assignment, only
// those that differed cost 513k instructions per transaction with the
// server's defaults (IntervalStyle 'postgres' differs), 500k with all three
// already pinned and 527k with another TimeZone; the clauses 481k, 481k and
// 482k (the SECURITY DEFINER function's search_path clause already makes
// the call save and restore settings). It runs with its owner's rights
// (SECURITY DEFINER: the installing role), so a role that may write the
// table needs no right on the rowcast schema; search_path is pinned to
// pg_catalog and every other name is schema-qualified, so the writer
// cannot substitute objects. EXECUTE is revoked from PUBLIC: a trigger
// fires without it, and without it no other role can attach the function
// to a table of its own or call an apply function to forge changelog rows.
func functionSQL(signature, returns, body string) string {
	return "CREATE OR REPLACE FUNCTION " + signature + " RETURNS " + returns + "\n" +
		"LANGUAGE plpgsql SECURITY DEFINER\n" +
		"SET search_path = pg_catalog, pg_temp\n" +
		"SET timezone = 'UTC'\nSET intervalstyle = 'iso_8601'\nSET bytea_output = 'hex'\n" +
		"AS $fn$\n" + body + "$fn$;\n" +
		"REVOKE ALL ON FUNCTION " + signature + " FROM PUBLIC;\n"
}

// bodyFor renders the capture body of a table's kind; notify rings the
// doorbell.
func bodyFor(t config.Table, r recs, notify bool) (string, error) {
	r.ring = ringSQL(notify)
	switch t.Kind {
	case "", config.KindEntity:
		if t.TeamFrom != nil && t.TeamFrom.ParentKey == "" {
			return "", fmt.Errorf("render table %s: team_from.parent_key is unknown: set it, or render with Prepare, which reads the parent's primary key", t.Qualified())
		}
		return entityBody(t, r), nil
	case config.KindAITask:
		return taskBody(t, r), nil
	case config.KindMembership:
		return membershipBody(t, r), nil
	}
	return "", fmt.Errorf("render table %s: unknown kind %q", t.Qualified(), t.Kind)
}

// recs names what a body works on: the trigger's NEW, OLD and TG_OP, or the
// apply function's decoded rows and operation. newJ and oldJ are the rows'
// json: to_json of the trigger's rows, or the apply function's rows as the
// holder rendered them from the table as it was at the change; newJB and
// oldJB the same as jsonb. ret is how the body returns. trigger says the
// body is a capture trigger's (it sets excluded columns to null itself, or,
// with jsonbExclusion, removes them: see entityRow).
// gone says whether a team_from lookup may fall back on rowcast.gone (the
// parent's trigger fills it in trigger mode only).
//
// ring is what a body runs last when it wrote (ringSQL).
//
// originCol and originVal, when set, name the changelog's origin_at and
// its value in every insert: a trigger has no source commit time, and
// NULL given spares each row the column default's evaluation (about 1 % of
// the bench's one-row UPDATE, measured under callgrind).
type recs struct {
	new, old, newJ, oldJ, op, ret string
	newJB, oldJB                  string
	trigger, jsonbExclusion       bool
	originCol, originVal          string
	gone                          bool
	ring                          string
}

var (
	triggerRecs = recs{new: "NEW", old: "OLD", newJ: "to_json(NEW)", oldJ: "to_json(OLD)", newJB: "to_jsonb(NEW)", oldJB: "to_jsonb(OLD)",
		op: "TG_OP", ret: "RETURN NULL", gone: true, trigger: true, originCol: ", origin_at", originVal: ", NULL"}
	applyRecs = recs{new: "r_new", old: "r_old", newJ: "new_j", oldJ: "old_j", newJB: "new_j::jsonb", oldJB: "old_j::jsonb",
		op: "op", ret: "RETURN"}
)

// keySQL returns the SQL expressions of a row's entity id (text) and, for a
// composite key, its key object (jsonb), for rec. A composite id is the
// key values joined by ':', each with '\' and ':' escaped by a '\'
// (relay.JoinKey); escape-string (E-prefixed) literals read the same
// whatever standard_conforming_strings is.
func keySQL(t config.Table, rec string) (id, key string) {
	if !t.CompositeKey() {
		return rec + "." + ident(t.KeyColumns()[0]) + "::text", ""
	}
	parts := make([]string, len(t.IDColumns))
	pairs := make([]string, len(t.IDColumns))
	for i, c := range t.IDColumns {
		parts[i] = fmt.Sprintf(`replace(replace(%s.%s::text, E'\\', E'\\\\'), ':', E'\\:')`, rec, ident(c))
		pairs[i] = literal(c) + ", " + rec + "." + ident(c)
	}
	return "concat_ws(':', " + strings.Join(parts, ", ") + ")", "jsonb_build_object(" + strings.Join(pairs, ", ") + ")"
}

// teamSQL returns the expressions of a row's team after and before the
// change. With team_from they are variables that the returned declarations
// and lookup fill from the parent rows (by their key; NULL when the parent
// is not there), each looked up once and only when the operation has that
// row. In trigger mode the old row's parent, when the current statement
// deleted it (ON DELETE CASCADE or SET NULL), is found in rowcast.gone.
func teamSQL(t config.Table, r recs) (nw, od, decl, lookup string) {
	f := t.TeamFrom
	if f == nil {
		team := ident(t.TeamColumn)
		return r.new + "." + team, r.old + "." + team, "", ""
	}
	parent := ident(f.Parent().Schema()) + "." + ident(f.Parent().Name())
	q := func(rec string) string {
		return fmt.Sprintf("(SELECT p.%s::text FROM %s p WHERE p.%s = %s.%s)", ident(f.Column), parent, ident(f.ParentKey), rec, ident(f.Key))
	}
	decl = "    team_new text;\n    team_old text;\n"
	old := q(r.old)
	if r.gone {
		old = fmt.Sprintf("coalesce(%s, (SELECT g.team FROM rowcast.gone g WHERE g.xid = pg_current_xact_id() AND g.tbl = %s AND g.col = %s AND g.key = to_jsonb(%s.%s)))",
			old, literal(f.Parent().Qualified()), literal(f.Column), r.old, ident(f.Key))
	}
	lookup = fmt.Sprintf("    IF %[1]s <> 'DELETE' THEN team_new := %[2]s; END IF;\n    IF %[1]s <> 'INSERT' THEN team_old := %[3]s; END IF;\n",
		r.op, q(r.new), old)
	return "team_new", "team_old", decl, lookup
}

func entityBody(t config.Table, r recs) string {
	tbl := literal(t.Qualified())
	actorOf := func(rec string) string {
		if t.ActorColumn == "" {
			return "actor"
		}
		return "coalesce(actor, " + rec + "." + ident(t.ActorColumn) + "::text)"
	}
	// ins appends one change; an update's changed columns are left to the
	// relay, which compares its row with its old row (both without the
	// excluded columns).
	ins := func(stream, op, teamExpr, oldTeam, rec, rowData, oldRow string) string {
		id, key := keySQL(t, rec)
		keyCol := ""
		if key != "" {
			keyCol, key = ", entity_key", ", "+key
		}
		return fmt.Sprintf(`INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, old_row%s%s)
            VALUES (%s, %s, %s, %s, %s, %s, %s, req, %s, %s%s%s);
`, keyCol, r.originCol, stream, tbl, literal(op), id, teamExpr, oldTeam, actorOf(rec), rowData, oldRow, key, r.originVal)
	}
	nw, od, decl, lookup := teamSQL(t, r)
	teamKey := literal(relay.TeamPrefix) + " || "
	newStream, oldStream := teamKey+nw+"::text", teamKey+od+"::text"
	newTeam, oldTeam := nw+"::text", od+"::text"
	var b strings.Builder
	b.WriteString(strings.Replace(declare("json"), "BEGIN\n", decl+"BEGIN\n"+lookup, 1))
	fmt.Fprintf(&b, "    IF %s = 'INSERT' THEN\n", r.op)
	fmt.Fprintf(&b, "        IF %s IS NULL THEN %s; END IF;\n", nw, r.ret)
	b.WriteString("        ")
	b.WriteString(ins(newStream, "I", newTeam, "NULL", r.new, entityRow(t, r, r.new, r.newJ), "NULL"))
	fmt.Fprintf(&b, "    ELSIF %s = 'UPDATE' THEN\n", r.op)
	fmt.Fprintf(&b, "        n := %s;\n        o := %s;\n", entityRow(t, r, r.new, r.newJ), entityRow(t, r, r.old, r.oldJ))
	fmt.Fprintf(&b, "        IF %s IS NOT DISTINCT FROM %s THEN\n", nw, od)
	fmt.Fprintf(&b, "            IF %s IS NULL THEN %s; END IF;\n", nw, r.ret)
	b.WriteString("            ")
	b.WriteString(ins(newStream, "U", newTeam, "NULL", r.new, "n", "o"))
	b.WriteString("        ELSE\n")
	b.WriteString("            -- A team move is recorded in both teams' streams.\n")
	fmt.Fprintf(&b, "            IF %s IS NOT NULL THEN\n                ", od)
	fmt.Fprintf(&b, "IF %s IS NULL THEN\n                    ", nw)
	b.WriteString(ins(oldStream, "D", oldTeam, "NULL", r.new, "NULL", "NULL"))
	b.WriteString("                ELSE\n                    ")
	b.WriteString(ins(oldStream, "U", newTeam, oldTeam, r.new, "n", "o"))
	b.WriteString("                END IF;\n            END IF;\n")
	fmt.Fprintf(&b, "            IF %s IS NOT NULL THEN\n                ", nw)
	fmt.Fprintf(&b, "IF %s IS NULL THEN\n                    ", od)
	b.WriteString(ins(newStream, "I", newTeam, "NULL", r.new, "n", "NULL"))
	b.WriteString("                ELSE\n                    ")
	b.WriteString(ins(newStream, "U", newTeam, oldTeam, r.new, "n", "o"))
	b.WriteString("                END IF;\n            END IF;\n")
	b.WriteString("        END IF;\n")
	b.WriteString("    ELSE\n")
	fmt.Fprintf(&b, "        IF %s IS NULL THEN %s; END IF;\n", od, r.ret)
	b.WriteString("        ")
	b.WriteString(ins(oldStream, "D", oldTeam, "NULL", r.old, "NULL", "NULL"))
	fmt.Fprintf(&b, "    END IF;\n    %s\n    %s;\nEND\n", r.ring, r.ret)
	return b.String()
}

// taskBody captures a user-scoped AI task table: every change goes to the
// task's user's stream with the whole row, and updates also carry the old
// status and progress so mapping can tell progress from completion.
func taskBody(t config.Table, r recs) string {
	id, team, user := ident(t.IDColumn), ident(t.TeamColumn), ident(t.UserColumn)
	status, progress := ident(t.StatusColumn), ident(t.ProgressColumn)
	tbl := literal(t.Qualified())
	nw := func(col string) string { return r.new + "." + col }
	ins := func(op, changes, old string) string {
		return fmt.Sprintf(`INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, user_id, actor, request_id, row_data, changes, old_data%s)
        VALUES (%s || %s::text, %s, %s, %s::text, %s::text, %s::text, coalesce(actor, %s::text), req, n::json, %s, %s%s);
`, r.originCol, literal(relay.UserPrefix), nw(user), tbl, literal(op), nw(id), nw(team), nw(user), nw(user), changes, old, r.originVal)
	}
	var b strings.Builder
	b.WriteString(declare("jsonb"))
	fmt.Fprintf(&b, "    IF %s = 'DELETE' OR %s IS NULL THEN %s; END IF;\n", r.op, nw(user), r.ret)
	fmt.Fprintf(&b, "    n := %s;\n", rowJSON(r.newJB, t))
	fmt.Fprintf(&b, "    IF %s = 'INSERT' THEN\n        ", r.op)
	b.WriteString(ins("I", "NULL", "NULL"))
	fmt.Fprintf(&b, "    ELSE\n        o := %s;\n", r.oldJB)
	b.WriteString(diff)
	fmt.Fprintf(&b, "        IF ch IS NULL THEN %s; END IF;\n", r.ret)
	// The highest progress sent so far, so that a lower write is sent
	// with it: progress never goes backwards on the wire.
	fmt.Fprintf(&b, `        IF %[1]s::text IN ('completed', 'failed') THEN
            DELETE FROM rowcast.task_progress WHERE tbl = %[2]s AND id = %[3]s::text;
            hw := greatest(%[4]s, %[5]s);
        ELSE
            INSERT INTO rowcast.task_progress AS p (tbl, id, high)
            VALUES (%[2]s, %[3]s::text, greatest(%[4]s, %[5]s))
            ON CONFLICT (tbl, id) DO UPDATE SET high = greatest(p.high, excluded.high)
            RETURNING p.high INTO hw;
        END IF;
        `, nw(status), tbl, nw(id), nw(progress), r.old+"."+progress)
	b.WriteString(ins("U", "ch", fmt.Sprintf("jsonb_build_object('status', %s.%s, 'progress', hw)", r.old, status)))
	fmt.Fprintf(&b, "    END IF;\n    %s\n    %s;\nEND\n", r.ring, r.ret)
	return b.String()
}

// membershipBody captures the auth.membership table: a (user, team) pair
// that appears is a join ('I'), one that goes a leave ('D'); an update that
// changes the pair is a leave of the old and a join of the new. Each goes to
// the user's stream with the team and the user, nothing of the row.
func membershipBody(t config.Table, r recs) string {
	user, team := ident(t.UserColumn), ident(t.TeamColumn)
	tbl := literal(t.Qualified())
	ins := func(op, rec string) string {
		return fmt.Sprintf(`INSERT INTO rowcast.changelog (stream, tbl, op, team_id, user_id, actor, request_id%s)
            VALUES (%s || %s.%s::text, %s, %s, %s.%s::text, %s.%s::text, actor, req%s);
`, r.originCol, literal(relay.UserPrefix), rec, user, tbl, literal(op), rec, team, rec, user, r.originVal)
	}
	pair := func(rec string) string {
		return fmt.Sprintf("%[1]s.%[2]s IS NOT NULL AND %[1]s.%[3]s IS NOT NULL", rec, user, team)
	}
	var b strings.Builder
	b.WriteString(declare("json"))
	fmt.Fprintf(&b, "    IF %s = 'UPDATE' THEN\n", r.op)
	fmt.Fprintf(&b, "        IF %[1]s.%[3]s IS NOT DISTINCT FROM %[2]s.%[3]s AND %[1]s.%[4]s IS NOT DISTINCT FROM %[2]s.%[4]s THEN %[5]s; END IF;\n",
		r.new, r.old, user, team, r.ret)
	b.WriteString("    END IF;\n")
	// The join first: an update that moves a user to another team never
	// leaves them without a team in between (which closes with 4403).
	fmt.Fprintf(&b, "    IF %s <> 'DELETE' THEN\n", r.op)
	fmt.Fprintf(&b, "        IF %s THEN\n            ", pair(r.new))
	b.WriteString(ins("I", r.new))
	b.WriteString("        END IF;\n    END IF;\n")
	fmt.Fprintf(&b, "    IF %s <> 'INSERT' THEN\n", r.op)
	fmt.Fprintf(&b, "        IF %s THEN\n            ", pair(r.old))
	b.WriteString(ins("D", r.old))
	b.WriteString("        END IF;\n    END IF;\n")
	fmt.Fprintf(&b, "    %s\n    %s;\nEND\n", r.ring, r.ret)
	return b.String()
}

// ident quotes an SQL identifier.
func ident(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// literal quotes an SQL string literal (standard_conforming_strings on).
func literal(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func textArray(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = literal(s)
	}
	return "ARRAY[" + strings.Join(q, ", ") + "]::text[]"
}
