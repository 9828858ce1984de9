package logical

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// relation is a cached Relation message: the table's columns as they were
// when the changes that follow it were committed.
type relation struct {
	table    string // schema.name as configured
	columns  []string
	excluded []bool   // rendered null: excluded, and not read by the apply function
	nulled   []string // the list excluded was read from, passed to the apply function
	key      []bool   // column is part of the replica identity
	// sql applies a run of this relation's changes: it renders each row's
	// JSON from its text values with the column types of this relation
	// message and passes it to the table's apply function.
	sql string
}

// maxBuildArgs is how many columns one jsonb_build_object call renders
// (PostgreSQL functions take at most 100 arguments: 50 pairs).
const maxBuildArgs = 50

// renderSQL returns the expression that renders a row's json from x, a
// jsonb object of the row's text values, and absent, the text form of a
// text[] of the columns the tuple lacks (unchanged TOAST values that could
// not be recovered) or NULL. Each value is cast to its column's type as
// format_type names it, so PostgreSQL renders it exactly as to_json renders
// the row in trigger mode, in the same order (json_build_object and
// to_json render values alike; the spaces json_build_object puts between
// tokens are not part of the value, and the relay drops them); excluded
// columns are null and absent columns are left out, never null.
func renderSQL(columns, types []string, excluded []bool, x, absent string) string {
	var chunks []string
	for start := 0; start < len(columns); start += maxBuildArgs {
		var args []string
		for i := start; i < min(start+maxBuildArgs, len(columns)); i++ {
			key := quoteLiteral(columns[i])
			if excluded[i] {
				args = append(args, key+", NULL")
			} else {
				args = append(args, key+", ("+x+" ->> "+key+")::"+types[i])
			}
		}
		chunks = append(chunks, "json_build_object("+strings.Join(args, ", ")+")")
	}
	var row string
	switch len(chunks) {
	case 0:
		row = "'{}'::json"
	case 1:
		row = chunks[0]
	default:
		// json has no ||: the objects' members are joined as text.
		for i, c := range chunks {
			chunks[i] = "substr(left(" + c + "::text, -1), 2)"
		}
		row = "('{' || concat_ws(', ', " + strings.Join(chunks, ", ") + ") || '}')::json"
	}
	return "CASE WHEN " + x + " IS NULL THEN NULL WHEN " + absent + " IS NULL THEN " + row +
		" ELSE (SELECT coalesce(json_object_agg(e.key, e.value), '{}') FROM json_each(" + row +
		") AS e WHERE e.key <> ALL (" + absent + "::text[])) END"
}

// decodeMessage parses one pgoutput message (protocol 2, streaming off).
// pglogrepl's parsers index the bytes without checking their length, so a
// truncated message panics inside them (the fuzz corpus in testdata holds
// such messages); decodeMessage returns that as an error instead, which
// ends the attempt rather than the process.
func decodeMessage(data []byte) (m pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("malformed pgoutput message (%d bytes): %v", len(data), r)
		}
	}()
	return pglogrepl.ParseV2(data, false)
}

// keyColumnFlag marks a column of a Relation message as part of the
// replica identity (pgoutput's only column flag).
const keyColumnFlag = 1

// newRelation decodes a Relation message into its cache entry, without the
// statement (see applySQL), which needs the column types named by the
// database. excluded names the columns to render null (some may not be
// columns of m).
func newRelation(m *pglogrepl.RelationMessage, excluded []string) *relation {
	rel := &relation{table: m.Namespace + "." + m.RelationName, nulled: excluded}
	for _, c := range m.Columns {
		rel.columns = append(rel.columns, c.Name)
		rel.excluded = append(rel.excluded, slices.Contains(excluded, c.Name))
		rel.key = append(rel.key, c.Flags&keyColumnFlag != 0)
	}
	return rel
}

// columnTypesSQL names the types of columns (the oids $1 and modifiers $2)
// as format_type does, a domain by the type it is over (at any depth, with
// the domain's modifier), or NULL for a type that no longer exists.
const columnTypesSQL = `with recursive t (n, oid, mod, depth) as (
    select u.n, u.oid, u.mod, 0 from unnest($1::oid[], $2::int4[]) with ordinality as u (oid, mod, n)
    union all
    select t.n, ty.typbasetype, ty.typtypmod, t.depth + 1 from t join pg_type ty on ty.oid = t.oid and ty.typtype = 'd'
)
select coalesce(array_agg(format_type(ty.oid, b.mod) order by b.n), '{}')
from (select distinct on (n) n, oid, mod from t order by n, depth desc) b left join pg_type ty on ty.oid = b.oid`

// columnTypes names the type of each column of m as format_type does, for
// the casts of applySQL. A domain is named by the type it is over: to_json
// renders a domain's value as its base type's, and a cast to a domain
// refusing null would fail on the null of a column the tuple lacks (with
// a replica identity index, an update's old row holds the index's columns
// only, and a delete's or a key change's the others as null). A type the
// database no longer has (an enum or a domain dropped since the change was
// committed; format_type would name it "???") is named text, so the value
// is rendered as the JSON string of its text form, as to_jsonb renders an
// enum, instead of failing every attempt at this position and stalling the
// slot; unknown lists those columns.
func columnTypes(ctx context.Context, db *pgx.Conn, m *pglogrepl.RelationMessage) (types, unknown []string, err error) {
	oids := make([]uint32, len(m.Columns))
	mods := make([]int32, len(m.Columns))
	for i, c := range m.Columns {
		oids[i], mods[i] = c.DataType, c.TypeModifier
	}
	var named []*string
	err = db.QueryRow(ctx, columnTypesSQL, oids, mods).Scan(&named)
	if err != nil {
		return nil, nil, fmt.Errorf("column types: %w", err)
	}
	if len(named) != len(m.Columns) {
		return nil, nil, fmt.Errorf("column types: %d types for %d columns", len(named), len(m.Columns))
	}
	types = make([]string, len(named))
	for i, n := range named {
		if n == nil {
			types[i] = "text"
			unknown = append(unknown, fmt.Sprintf("%s (type oid %d)", m.Columns[i].Name, m.Columns[i].DataType))
			continue
		}
		types[i] = *n
	}
	return types, unknown, nil
}

// applySQL returns the statement that applies a run of rel's changes with
// the apply function fn (quoted, schema-qualified), casting each text value
// to the column type named in types. A run may span source transactions:
// each row carries the settings its capture reads (the source commit time,
// the actor, the request id), or NULL where they are unchanged since the row
// before it; the WHERE clause sets them as each row is scanned, before the
// aggregate calls fn for it (the plan is an aggregate over the function
// scan, and set_config is parallel-unsafe). The clause filters nothing:
// set_config returns the value it set, never NULL for a value. fn also
// takes the list of columns rendered null, which it checks against its
// own, and the rows' text values, from which it reads the fields its
// capture needs.
func applySQL(rel *relation, fn string, types []string) string {
	nulled := make([]string, len(rel.nulled))
	for i, c := range rel.nulled {
		nulled[i] = quoteLiteral(c)
	}
	return "select count(" + fn + "(u.op, " + renderSQL(rel.columns, types, rel.excluded, "u.n", "u.na") + ", " +
		renderSQL(rel.columns, types, rel.excluded, "u.o", "u.oa") + ", ARRAY[" + strings.Join(nulled, ", ") + "]::text[], u.n, u.o))" +
		" from unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])" +
		" as u (op, n, o, na, oa, ct, ac, rq) where " + settingsWhere
}

// settingsWhere sets a row's settings (u.ct, u.ac, u.rq; NULL leaves one
// as it is) in the database transaction, and is true.
const settingsWhere = "(u.ct is null or set_config('rowcast.commit_time', u.ct, true) is not null)" +
	" and (u.ac is null or set_config('rowcast.actor_id', u.ac, true) is not null)" +
	" and (u.rq is null or set_config('rowcast.request_id', u.rq, true) is not null)"

// settingsSQL sets the settings on their own, before a statement that is
// not a run (a truncation).
const settingsSQL = "select count(*) from (values ($1::text, $2::text, $3::text)) as u (ct, ac, rq) where " + settingsWhere

// relation caches a Relation message with the statement that applies its
// changes; the column types are named by the database once per message.
func (a *applier) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	// The excluded columns to render null, as the last install recorded
	// them with the table's apply function. The function refuses rows
	// rendered from another list (an install changed the exclusions since
	// this read), which ends the attempt: the next one's walsender sends
	// the Relation message again, and the list is read again.
	table := m.Namespace + "." + m.RelationName
	var excluded []string
	err := a.db.QueryRow(ctx, "select coalesce((select e.columns from rowcast.holder_nulls e where e.tbl = $1), '{}')",
		table).Scan(&excluded)
	if err != nil {
		return fmt.Errorf("logical relation %s: excluded columns: %w", table, err)
	}
	rel := newRelation(m, excluded)
	types, unknown, err := columnTypes(ctx, a.db, m)
	if err != nil {
		return fmt.Errorf("logical relation %s: %w", rel.table, err)
	}
	if len(unknown) > 0 {
		a.h.o.Logger.Warn("column types no longer exist; rendering their values as text",
			"table", rel.table, "columns", strings.Join(unknown, ", "))
	}
	fn := `rowcast."` + strings.ReplaceAll(a.h.o.ApplyName(m.Namespace, m.RelationName), `"`, `""`) + `"`
	rel.sql = applySQL(rel, fn, types)
	a.rels[m.RelationID] = rel
	return nil
}

// keyOf returns the replica identity columns of a new tuple, the others
// marked unchanged TOAST, standing in for the old tuple that pgoutput leaves
// out when the key did not change (a USING INDEX identity): the team is
// then unchanged too. It returns nil when rel or t is nil.
func (rel *relation) keyOf(t *pglogrepl.TupleData) *pglogrepl.TupleData {
	if rel == nil || t == nil {
		return nil
	}
	k := &pglogrepl.TupleData{ColumnNum: t.ColumnNum}
	for i, c := range t.Columns {
		if i < len(rel.key) && rel.key[i] {
			k.Columns = append(k.Columns, c)
		} else {
			k.Columns = append(k.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeToast})
		}
	}
	return k
}

// tupleJSON renders a tuple as a JSON object of its columns' text values,
// or nil, and lists the columns it lacks as a text[] literal, or nil when
// it lacks none. The values of the columns it renders null (excluded) are
// left out. A column sent as unchanged TOAST ('u') takes its value from
// fallback (the old tuple, complete with REPLICA IDENTITY FULL) and is
// absent when fallback lacks it, so it reads as unchanged, never as null.
func tupleJSON(rel *relation, t, fallback *pglogrepl.TupleData) (*string, *string) {
	if t == nil {
		return nil, nil
	}
	b := make([]byte, 0, 256)
	b = append(b, '{')
	var absent []byte
	first := true
	for i := range rel.columns {
		if rel.excluded[i] {
			continue
		}
		if i >= len(t.Columns) {
			absent = appendArrayElem(absent, rel.columns[i])
			continue
		}
		col := t.Columns[i]
		val, kind := col.Data, col.DataType
		if kind == pglogrepl.TupleDataTypeToast {
			if fallback == nil || i >= len(fallback.Columns) || fallback.Columns[i].DataType == pglogrepl.TupleDataTypeToast {
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
		case kind == pglogrepl.TupleDataTypeNull:
			b = append(b, "null"...)
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
