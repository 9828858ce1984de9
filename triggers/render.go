// Package triggers renders, installs, verifies and removes what trigger
// capture needs in the database: the rowcast schema (changelog, stream
// counters, the commit-time sequencer) and one generated capture function
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
	"fmt"
	"strings"
	"text/template"
	"unicode/utf8"

	"github.com/rowcast/rowcast/config"
	rowcastsql "github.com/rowcast/rowcast/sql"
)

// Trigger names on captured tables.
const (
	captureTrigger  = "rowcast_capture"
	truncateTrigger = "rowcast_truncate"
	hashPrefix      = "rowcast sha256:"
)

// Options says how to render.
type Options struct {
	// Notify makes the commit-time sequencer ring the pg_notify doorbell.
	Notify bool
}

// Plan is everything one install does, in order.
type Plan struct {
	// Schema is the rowcast schema DDL.
	Schema string
	// SchemaHash is recorded in rowcast.sequence()'s comment.
	SchemaHash string
	// Tables holds one rendered unit per configured table.
	Tables []TablePlan
}

// TablePlan is the DDL of one captured table.
type TablePlan struct {
	Table    config.Table
	Function string // schema-qualified, quoted function name
	Hash     string // recorded in the function's comment
	SQL      string // CREATE FUNCTION, triggers and comment
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
		Schema:     schema.String() + "COMMENT ON FUNCTION rowcast.sequence() IS " + literal(hashPrefix+h) + ";\n",
		SchemaHash: h,
	}
	for _, t := range tables {
		tp, err := renderTable(t)
		if err != nil {
			return nil, err
		}
		p.Tables = append(p.Tables, tp)
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
func FunctionName(t config.Table) string {
	schema, table := t.Schema(), t.Name()
	name := "capture__" + schema + "__" + table
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

func renderTable(t config.Table) (TablePlan, error) {
	if t.Name() == "" {
		return TablePlan{}, fmt.Errorf("render table: empty table name")
	}
	fn := "rowcast." + ident(FunctionName(t))
	tbl := ident(t.Schema()) + "." + ident(t.Name())
	var body string
	switch t.Kind {
	case "", "entity":
		body = entityBody(t)
	case "ai_task":
		body = taskBody(t)
	default:
		return TablePlan{}, fmt.Errorf("render table %s: unknown kind %q", t.Qualified(), t.Kind)
	}
	fnSQL := "CREATE OR REPLACE FUNCTION " + fn + "() RETURNS trigger\n" +
		"LANGUAGE plpgsql\n" +
		"SET search_path = pg_catalog, pg_temp\n" +
		"SET timezone = 'UTC'\nSET intervalstyle = 'iso_8601'\nSET bytea_output = 'hex'\n" +
		"AS $fn$\n" + body + "$fn$;\n"
	hash := hashOf(fnSQL)
	var b strings.Builder
	b.WriteString(fnSQL)
	fmt.Fprintf(&b, "COMMENT ON FUNCTION %s() IS %s;\n", fn, literal(hashPrefix+hash))
	fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", captureTrigger, tbl)
	fmt.Fprintf(&b, "CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s();\n", captureTrigger, tbl, fn)
	fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", truncateTrigger, tbl)
	fmt.Fprintf(&b, "CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();\n", truncateTrigger, tbl)
	return TablePlan{Table: t, Function: fn, Hash: hash, SQL: b.String()}, nil
}

// rowJSON renders the expression for a row's JSON with exclusions removed.
func rowJSON(rec string, t config.Table) string {
	if len(t.ExcludeColumns) == 0 {
		return "to_jsonb(" + rec + ")"
	}
	return "(to_jsonb(" + rec + ") - " + textArray(t.ExcludeColumns) + ")"
}

const declare = `DECLARE
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
`

// diff sets ch to the changed columns of n against o, or NULL.
const diff = `        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
`

func entityBody(t config.Table) string {
	id, team := ident(t.IDColumn), ident(t.TeamColumn)
	tbl := literal(t.Qualified())
	actorOf := func(rec string) string {
		if t.ActorColumn == "" {
			return "actor"
		}
		return "coalesce(actor, " + rec + "." + ident(t.ActorColumn) + "::text)"
	}
	ins := func(stream, op, teamExpr, oldTeam, rec, rowData, changes string) string {
		return fmt.Sprintf(`INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES (%s, %s, %s, %s.%s::text, %s, %s, %s, req, %s, %s);
`, stream, tbl, literal(op), rec, id, teamExpr, oldTeam, actorOf(rec), rowData, changes)
	}
	newStream := "'team:' || NEW." + team + "::text"
	oldStream := "'team:' || OLD." + team + "::text"
	newTeam, oldTeam := "NEW."+team+"::text", "OLD."+team+"::text"
	var b strings.Builder
	b.WriteString(declare)
	b.WriteString("    IF TG_OP = 'INSERT' THEN\n")
	fmt.Fprintf(&b, "        IF NEW.%s IS NULL THEN RETURN NULL; END IF;\n", team)
	b.WriteString("        PERFORM rowcast.mark();\n        ")
	b.WriteString(ins(newStream, "I", newTeam, "NULL", "NEW", rowJSON("NEW", t), "NULL"))
	b.WriteString("    ELSIF TG_OP = 'UPDATE' THEN\n")
	fmt.Fprintf(&b, "        n := %s;\n        o := to_jsonb(OLD);\n", rowJSON("NEW", t))
	b.WriteString(diff)
	b.WriteString("        IF ch IS NULL THEN RETURN NULL; END IF;\n")
	fmt.Fprintf(&b, "        IF NEW.%s IS NOT DISTINCT FROM OLD.%s THEN\n", team, team)
	fmt.Fprintf(&b, "            IF NEW.%s IS NULL THEN RETURN NULL; END IF;\n", team)
	b.WriteString("            PERFORM rowcast.mark();\n            ")
	b.WriteString(ins(newStream, "U", newTeam, "NULL", "NEW", "NULL", "ch"))
	b.WriteString("        ELSE\n")
	b.WriteString("            -- A team move is recorded in both teams' streams.\n")
	b.WriteString("            PERFORM rowcast.mark();\n")
	fmt.Fprintf(&b, "            IF OLD.%s IS NOT NULL THEN\n                ", team)
	fmt.Fprintf(&b, "IF NEW.%s IS NULL THEN\n                    ", team)
	b.WriteString(ins(oldStream, "D", oldTeam, "NULL", "NEW", "NULL", "NULL"))
	b.WriteString("                ELSE\n                    ")
	b.WriteString(ins(oldStream, "U", newTeam, oldTeam, "NEW", "n", "ch"))
	b.WriteString("                END IF;\n            END IF;\n")
	fmt.Fprintf(&b, "            IF NEW.%s IS NOT NULL THEN\n                ", team)
	fmt.Fprintf(&b, "IF OLD.%s IS NULL THEN\n                    ", team)
	b.WriteString(ins(newStream, "I", newTeam, "NULL", "NEW", "n", "NULL"))
	b.WriteString("                ELSE\n                    ")
	b.WriteString(ins(newStream, "U", newTeam, oldTeam, "NEW", "n", "ch"))
	b.WriteString("                END IF;\n            END IF;\n")
	b.WriteString("        END IF;\n")
	b.WriteString("    ELSE\n")
	fmt.Fprintf(&b, "        IF OLD.%s IS NULL THEN RETURN NULL; END IF;\n", team)
	b.WriteString("        PERFORM rowcast.mark();\n        ")
	b.WriteString(ins(oldStream, "D", oldTeam, "NULL", "OLD", "NULL", "NULL"))
	b.WriteString("    END IF;\n    RETURN NULL;\nEND\n")
	return b.String()
}

// taskBody captures a user-scoped AI task table: every change goes to the
// task's user's stream with the whole row, and updates also carry the old
// status and progress so mapping can tell progress from completion.
func taskBody(t config.Table) string {
	id, team, user := ident(t.IDColumn), ident(t.TeamColumn), ident(t.UserColumn)
	status, progress := ident(t.StatusColumn), ident(t.ProgressColumn)
	tbl := literal(t.Qualified())
	ins := func(op, changes, old string) string {
		return fmt.Sprintf(`INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, user_id, actor, request_id, row_data, changes, old_data)
        VALUES ('user:' || NEW.%s::text, %s, %s, NEW.%s::text, NEW.%s::text, NEW.%s::text, coalesce(actor, NEW.%s::text), req, n, %s, %s);
`, user, tbl, literal(op), id, team, user, user, changes, old)
	}
	var b strings.Builder
	b.WriteString(declare)
	fmt.Fprintf(&b, "    IF TG_OP = 'DELETE' OR NEW.%s IS NULL THEN RETURN NULL; END IF;\n", user)
	fmt.Fprintf(&b, "    n := %s;\n", rowJSON("NEW", t))
	b.WriteString("    IF TG_OP = 'INSERT' THEN\n        PERFORM rowcast.mark();\n        ")
	b.WriteString(ins("I", "NULL", "NULL"))
	b.WriteString("    ELSE\n        o := to_jsonb(OLD);\n")
	b.WriteString(diff)
	b.WriteString("        IF ch IS NULL THEN RETURN NULL; END IF;\n        PERFORM rowcast.mark();\n        ")
	b.WriteString(ins("U", "ch", fmt.Sprintf("jsonb_build_object('status', OLD.%s, 'progress', OLD.%s)", status, progress)))
	b.WriteString("    END IF;\n    RETURN NULL;\nEND\n")
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
