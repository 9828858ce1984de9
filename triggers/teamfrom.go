package triggers

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/config"
)

// resolveParents returns a copy of tables in which every team_from rule
// without a parent_key names the parent's one-column primary key, read from
// the catalog. A parent that is missing or has no such key is left as it
// is: CheckTables reports it, and Render refuses it.
func resolveParents(ctx context.Context, conn *pgx.Conn, tables []config.Table) ([]config.Table, error) {
	out := make([]config.Table, len(tables))
	copy(out, tables)
	for i, t := range out {
		if t.TeamFrom == nil || t.TeamFrom.ParentKey != "" {
			continue
		}
		pk, err := primaryKey(ctx, conn, t.TeamFrom.Parent())
		if err != nil {
			return nil, err
		}
		if len(pk) == 1 {
			f := *t.TeamFrom
			f.ParentKey = pk[0]
			out[i].TeamFrom = &f
		}
	}
	return out, nil
}

// primaryKey returns the columns of t's primary key, in order; none when t
// does not exist or has no primary key.
func primaryKey(ctx context.Context, conn querier, t config.Table) ([]string, error) {
	rows, err := conn.Query(ctx, `
select a.attname::text
from pg_index i cross join unnest(i.indkey::int2[]) with ordinality k (attnum, ord)
join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
where i.indrelid = to_regclass($1) and i.indisprimary
order by k.ord`, ident(t.Schema())+"."+ident(t.Name()))
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", t.Qualified(), err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", t.Qualified(), err)
	}
	return cols, nil
}

// columnsOf returns t's columns; none when t does not exist.
func columnsOf(ctx context.Context, conn querier, t config.Table) (map[string]bool, error) {
	rows, err := conn.Query(ctx, `
select a.attname::text from pg_attribute a
where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped`,
		ident(t.Schema())+"."+ident(t.Name()))
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t.Qualified(), err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t.Qualified(), err)
	}
	have := make(map[string]bool, len(cols))
	for _, c := range cols {
		have[c] = true
	}
	return have, nil
}

// checkTeamFrom returns what is wrong with t's team_from rule, each with
// its key relative to the table entry ("team_from.key"): the parent table,
// its key and its team column must exist, and the key must identify a
// parent row.
func checkTeamFrom(ctx context.Context, conn querier, t config.Table, have map[string]bool) ([]config.Problem, error) {
	f := t.TeamFrom
	parent := f.Parent()
	var problems []config.Problem
	if !have[f.Key] {
		problems = append(problems, teamFromProblem("team_from.key", "%s has no column %q", t.Qualified(), f.Key))
	}
	pcols, err := columnsOf(ctx, conn, parent)
	if err != nil {
		return nil, err
	}
	if len(pcols) == 0 {
		return append(problems, teamFromProblem("team_from.table", "%s does not exist in the database", parent.Qualified())), nil
	}
	if !pcols[f.Column] {
		problems = append(problems, teamFromProblem("team_from.column", "%s has no column %q", parent.Qualified(), f.Column))
	}
	if f.ParentKey == "" {
		pk, err := primaryKey(ctx, conn, parent)
		if err != nil {
			return nil, err
		}
		if len(pk) != 1 {
			return append(problems, teamFromProblem("team_from.table", "%s has no one-column primary key; name the column %s references with team_from.parent_key", parent.Qualified(), f.Key)), nil
		}
		return problems, nil
	}
	if !pcols[f.ParentKey] {
		return append(problems, teamFromProblem("team_from.parent_key", "%s has no column %q", parent.Qualified(), f.ParentKey)), nil
	}
	p, err := checkKey(ctx, conn, config.Table{Table: f.Table, IDColumn: f.ParentKey})
	if err != nil {
		return nil, err
	}
	if p != "" {
		problems = append(problems, config.Problem{Key: "team_from.parent_key", Msg: p})
	}
	return problems, nil
}

// teamHint says what to do about a table without its team column: name the
// right column, or take the team from a parent through one of its foreign
// keys, concretely when a parent has the team column.
func teamHint(ctx context.Context, conn querier, t config.Table) (string, error) {
	rows, err := conn.Query(ctx, `
select a.attname::text, n.nspname::text, p.relname::text,
       exists (select 1 from pg_attribute b where b.attrelid = c.confrelid and b.attname = $2 and not b.attisdropped)
from pg_constraint c
join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
join pg_class p on p.oid = c.confrelid join pg_namespace n on n.oid = p.relnamespace
where c.conrelid = to_regclass($1) and c.contype = 'f' and cardinality(c.conkey) = 1
order by 1, 2, 3`, ident(t.Schema())+"."+ident(t.Name()), t.TeamColumn)
	if err != nil {
		return "", fmt.Errorf("foreign keys of %s: %w", t.Qualified(), err)
	}
	var key, schema, parent string
	var hasTeam bool
	var concrete, others []string
	_, err = pgx.ForEachRow(rows, []any{&key, &schema, &parent, &hasTeam}, func() error {
		name := parent
		if schema != "public" {
			name = schema + "." + parent
		}
		if hasTeam {
			concrete = append(concrete, fmt.Sprintf("team_from: {table: %s, key: %s, column: %s}", name, key, t.TeamColumn))
		} else {
			others = append(others, key+" → "+name)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("foreign keys of %s: %w", t.Qualified(), err)
	}
	hint := "set team_column to the column that holds the row's team, or, when the team comes through a parent row, " +
		"team_from: {table: <parent table>, key: <this table's column referencing it>, column: <the parent's team column>}"
	switch {
	case len(concrete) > 0:
		hint += "; here: " + strings.Join(concrete, " or ")
	case len(others) > 0:
		hint += " (its foreign keys: " + strings.Join(others, ", ") + ")"
	}
	return hint, nil
}

func teamFromProblem(key, format string, args ...any) config.Problem {
	return config.Problem{Key: key, Msg: fmt.Sprintf(format, args...)}
}
