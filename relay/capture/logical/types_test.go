package logical

import (
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(t.Context()) })
	return conn
}

// TestColumnTypesOfDroppedType: a Relation message naming a type that no
// longer exists (an enum dropped since the change was committed, for which
// format_type says "???") names it text, so decoding goes on, and says
// which column it was.
func TestColumnTypesOfDroppedType(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	var mood uint32
	if _, err := conn.Exec(ctx, "create type mood as enum ('ok')"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "select 'mood'::regtype::oid").Scan(&mood); err != nil {
		t.Fatal(err)
	}
	m := &pglogrepl.RelationMessage{Namespace: "public", RelationName: "t", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", DataType: pgtype.Int8OID, TypeModifier: -1},
		{Name: "mood", DataType: mood, TypeModifier: -1},
		{Name: "code", DataType: pgtype.VarcharOID, TypeModifier: 4 + 12},
	}}
	types, unknown, err := columnTypes(ctx, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bigint", "mood", "character varying(12)"}; !slices.Equal(types, want) || unknown != nil {
		t.Fatalf("before the drop: types %q unknown %q, want %q and none", types, unknown, want)
	}
	if _, err := conn.Exec(ctx, "drop type mood"); err != nil {
		t.Fatal(err)
	}
	types, unknown, err = columnTypes(ctx, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bigint", "text", "character varying(12)"}; !slices.Equal(types, want) {
		t.Errorf("after the drop: types %q, want %q", types, want)
	}
	if len(unknown) != 1 || unknown[0] != "mood (type oid "+fmt.Sprint(mood)+")" {
		t.Errorf("after the drop: unknown %q, want the mood column", unknown)
	}
	// The statement built from those types runs.
	var got string
	if err := conn.QueryRow(ctx, "select ($1::jsonb ->> 'mood')::"+types[1], `{"mood":"ok"}`).Scan(&got); err != nil || got != "ok" {
		t.Errorf("cast to %s: %q, %v", types[1], got, err)
	}
}

// TestColumnTypesOfDomains: a domain is named by the type it is over, with
// the modifier the domain gives it, through domains over domains.
func TestColumnTypesOfDomains(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	_, err := conn.Exec(ctx, `create domain price as numeric(10, 2) not null;
		create domain positive_price as price check (value > 0);
		create domain code as varchar(5)`)
	if err != nil {
		t.Fatal(err)
	}
	var oids [3]uint32
	if err := conn.QueryRow(ctx, "select 'price'::regtype::oid, 'positive_price'::regtype::oid, 'code'::regtype::oid").Scan(&oids[0], &oids[1], &oids[2]); err != nil {
		t.Fatal(err)
	}
	m := &pglogrepl.RelationMessage{Namespace: "public", RelationName: "t", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "a", DataType: oids[0], TypeModifier: -1},
		{Name: "b", DataType: oids[1], TypeModifier: -1},
		{Name: "c", DataType: oids[2], TypeModifier: -1},
		{Name: "d", DataType: pgtype.Int4OID, TypeModifier: -1},
	}}
	types, unknown, err := columnTypes(ctx, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"numeric(10,2)", "numeric(10,2)", "character varying(5)", "integer"}; !slices.Equal(types, want) || unknown != nil {
		t.Errorf("types %q unknown %q, want %q and none", types, unknown, want)
	}
}
