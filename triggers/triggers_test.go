package triggers_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

// --- helpers ---------------------------------------------------------------

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// demoDB returns a connection to a fresh database holding the demo CRM.
func demoDB(t *testing.T) *pgx.Conn {
	t.Helper()
	url := pg.NewDatabase(t)
	if err := crm.Setup(t.Context(), url); err != nil {
		t.Fatal(err)
	}
	return connect(t, url)
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func txExec(t *testing.T, tx pgx.Tx, sql string, args ...any) {
	t.Helper()
	if _, err := tx.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func begin(t *testing.T, conn *pgx.Conn) pgx.Tx {
	t.Helper()
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func commit(t *testing.T, tx pgx.Tx) {
	t.Helper()
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func queryBool(t *testing.T, conn *pgx.Conn, sql string, args ...any) bool {
	t.Helper()
	var b bool
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&b); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return b
}

func render(t *testing.T, tables []config.Table, notify bool) *triggers.Plan {
	t.Helper()
	p, err := triggers.Render(tables, triggers.Options{Notify: notify})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return p
}

func install(t *testing.T, conn *pgx.Conn, p *triggers.Plan) []string {
	t.Helper()
	lines, err := triggers.Install(t.Context(), conn, p)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	return lines
}

func verify(t *testing.T, conn *pgx.Conn, p *triggers.Plan) []string {
	t.Helper()
	drift, err := triggers.Verify(t.Context(), conn, p)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return drift
}

// demoTables picks demo tables by name, in the order given.
func demoTables(t *testing.T, names ...string) []config.Table {
	t.Helper()
	all := crm.Tables()
	var out []config.Table
	for _, n := range names {
		i := slices.IndexFunc(all, func(tb config.Table) bool { return tb.Table == n })
		if i < 0 {
			t.Fatalf("no demo table %s", n)
		}
		out = append(out, all[i])
	}
	return out
}

// logRow is one rowcast.changelog row, placed in the global order: its tick
// and its transaction's place in it (the highest id the transaction wrote).
type logRow struct {
	ID        int64
	XID       string
	Tick, Tx  *int64
	Stream    string
	Tbl       string
	Op        string
	EntityID  *string
	TeamID    *string
	OldTeamID *string
	Actor     *string
	RowData   map[string]any
	Changes   map[string]any
	OldRow    map[string]any
}

// changelog ticks (as the ticker would), then returns every changelog row
// in the global order; a row no tick shows yet (its transaction is still
// open) comes last, with no tick.
func changelog(t *testing.T, conn *pgx.Conn) []logRow {
	t.Helper()
	exec(t, conn, "select rowcast.tick()")
	rows, err := conn.Query(t.Context(), `
select id, xid::text,
  (select t.tick from rowcast.ticks t where t.snap_xmax > c.xid and pg_visible_in_snapshot(c.xid, t.snap)
   order by t.snap_xmax, t.tick limit 1) as tick,
  (select max(x.id) from rowcast.changelog x where x.xid = c.xid) as tx,
  stream, tbl, op::text, entity_id, team_id, old_team_id, actor, row_data, changes, old_row
from rowcast.changelog c order by tick nulls last, tx, id`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (logRow, error) {
		var l logRow
		err := r.Scan(&l.ID, &l.XID, &l.Tick, &l.Tx, &l.Stream, &l.Tbl, &l.Op, &l.EntityID, &l.TeamID,
			&l.OldTeamID, &l.Actor, &l.RowData, &l.Changes, &l.OldRow)
		return l, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// checkTicked returns the changelog in the global order, and fails unless a
// tick shows every row (every writing transaction committed).
func checkTicked(t *testing.T, conn *pgx.Conn) []logRow {
	t.Helper()
	rows := changelog(t, conn)
	for _, r := range rows {
		if r.Tick == nil {
			t.Fatalf("changelog row %d (%s %s) is in no tick after commit", r.ID, r.Stream, r.Op)
		}
	}
	return rows
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// --- Render ------------------------------------------------------------------

// A table whose schema, name and columns all need quoting installs and
// captures correctly.
func TestRenderQuotesOddIdentifiers(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	exec(t, conn, `create schema "Odd Schema";
create table "Odd Schema"."we""ird" (
    id bigint generated always as identity primary key,
    team_id bigint not null,
    "a""b" text,
    "it's" text,
    payload text)`)
	tbl := config.Table{Table: `Odd Schema.we"ird`, Entity: "weird", Kind: config.KindEntity, IDColumn: "id",
		TeamColumn: "team_id", ActorColumn: `a"b`, ExcludeColumns: []string{"it's"}}
	plan := render(t, []config.Table{tbl}, true)
	sql := plan.Tables[0].SQL
	for _, want := range []string{
		`ON "Odd Schema"."we""ird"`,
		`."a""b"::text`,
		`jsonb_populate_record(NEW, '{"it''s":null}'::jsonb)`,
		`rowcast."capture__Odd Schema__we""ird"()`,
		`'Odd Schema.we"ird'`,
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("rendered SQL lacks %s:\n%s", want, sql)
		}
	}

	install(t, conn, plan)
	if drift := verify(t, conn, plan); len(drift) > 0 {
		t.Errorf("drift right after install: %q", drift)
	}
	if problems, err := triggers.CheckTables(t.Context(), conn, []config.Table{tbl}); err != nil || len(problems) > 0 {
		t.Errorf("CheckTables = %q, %v; want none", problems, err)
	}

	const q = `"Odd Schema"."we""ird"`
	exec(t, conn, `insert into `+q+` (team_id, "a""b", "it's", payload) values (7, '42', 'secret one', 'hello')`)
	exec(t, conn, `update `+q+` set "it's" = 'secret two'`) // only an excluded column: nothing to tell
	exec(t, conn, `update `+q+` set payload = 'bye', "it's" = 'secret three'`)
	exec(t, conn, `delete from `+q)
	exec(t, conn, `insert into `+q+` (team_id, payload) values (7, 'again')`)
	exec(t, conn, `truncate `+q)

	rows := checkTicked(t, conn)
	var ops []string
	for _, r := range rows {
		ops = append(ops, r.Op)
		if r.Tbl != `Odd Schema.we"ird` {
			t.Errorf("row %d: tbl %q", r.ID, r.Tbl)
		}
	}
	// The update of an excluded column only is recorded with a row and an
	// old row that do not differ: the relay finds no changed column and
	// sends nothing.
	if !slices.Equal(ops, []string{"I", "U", "U", "D", "I", "T"}) {
		t.Fatalf("ops %q, want I U U D I T", ops)
	}
	if noop := rows[1]; !reflect.DeepEqual(noop.RowData, noop.OldRow) || noop.RowData == nil {
		t.Errorf("an update of an excluded column only: row %v old row %v, want equal", noop.RowData, noop.OldRow)
	}
	ins, upd, del := rows[0], rows[2], rows[3]
	if ins.Stream != "team:7" || str(ins.Actor) != "42" || ins.RowData["payload"] != "hello" {
		t.Errorf("insert row: stream %s actor %s row %v", ins.Stream, str(ins.Actor), ins.RowData)
	}
	// An excluded column is captured null, never its value (the mapper
	// leaves it out of events).
	if v, ok := ins.RowData["it's"]; !ok || v != nil {
		t.Errorf("excluded column captured: %v", ins.RowData)
	}
	if upd.RowData["payload"] != "bye" || upd.OldRow["payload"] != "hello" || upd.Changes != nil {
		t.Errorf("update: row %v old row %v changes %v, want payload hello → bye, changes left to the relay", upd.RowData, upd.OldRow, upd.Changes)
	}
	for _, r := range []map[string]any{upd.RowData, upd.OldRow} {
		if v, ok := r["it's"]; !ok || v != nil {
			t.Errorf("excluded column captured in an update: %v", r)
		}
	}
	if str(del.Actor) != "42" || str(del.EntityID) != str(ins.EntityID) {
		t.Errorf("delete row: actor %s entity %s", str(del.Actor), str(del.EntityID))
	}
	if rows[5].Stream != "all" {
		t.Errorf("truncate row stream %q, want all", rows[5].Stream)
	}
	b, _ := json.Marshal(rows)
	if strings.Contains(string(b), "secret") {
		t.Errorf("an excluded value reached the changelog: %s", b)
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	a := render(t, crm.Tables(), true)
	b := render(t, crm.Tables(), true)
	if a.SQL() != b.SQL() || a.SchemaHash != b.SchemaHash {
		t.Fatal("two renders of the same input differ")
	}
	if len(a.Tables) != len(crm.Tables()) {
		t.Fatalf("%d table plans for %d tables", len(a.Tables), len(crm.Tables()))
	}
	for i := range a.Tables {
		if a.Tables[i].Hash != b.Tables[i].Hash || a.Tables[i].Function != b.Tables[i].Function {
			t.Errorf("table %d: hash or function name differs between renders", i)
		}
		if !strings.Contains(a.Tables[i].SQL, "'rowcast sha256:"+a.Tables[i].Hash+"'") {
			t.Errorf("table %d: the SQL does not record its hash", i)
		}
	}
	if !strings.Contains(a.Schema, "'rowcast sha256:"+a.SchemaHash+"'") {
		t.Error("the schema SQL does not record its hash")
	}

	quiet := render(t, crm.Tables(), false)
	if quiet.SchemaHash == a.SchemaHash {
		t.Error("notify on and off render the same schema hash")
	}
	if !strings.Contains(a.Schema, "pg_notify('rowcast', '')") || strings.Contains(quiet.Schema, "pg_notify('rowcast', '')") {
		t.Error("the writers' doorbell should be rendered exactly when notify is on")
	}
	for i := range a.Tables {
		if a.Tables[i].Hash == quiet.Tables[i].Hash || strings.Contains(quiet.Tables[i].SQL, "pg_notify") {
			t.Errorf("table %d: the capture function rings the doorbell with notify off, or not with it on", i)
		}
	}

	changed := crm.Tables()
	changed[0].ExcludeColumns = []string{"internal_notes", "notes"}
	c := render(t, changed, true)
	if c.Tables[0].Hash == a.Tables[0].Hash {
		t.Error("an extra excluded column did not change the table hash")
	}
	for i := 1; i < len(c.Tables); i++ {
		if c.Tables[i].Hash != a.Tables[i].Hash {
			t.Errorf("table %d: hash changed although its configuration did not", i)
		}
	}
}

func TestFunctionName(t *testing.T) {
	name := func(qualified string) string { return triggers.FunctionName(config.Table{Table: qualified}) }
	long := strings.Repeat("s", 63) + "." + strings.Repeat("t", 62)
	umlauts := "public." + strings.Repeat("ü", 31) + "x" // a 63-byte table name
	distinct := [][2]string{
		{"a_b.c", "a.b_c"},
		{"a__b.c", "a.b__c"},
		{"a_.b", "a._b"},
		{"a_._b", "a__.b"},
		{long + "1", long + "2"},
		{umlauts, "public." + strings.Repeat("ü", 31) + "y"},
	}
	for _, pair := range distinct {
		n1, n2 := name(pair[0]), name(pair[1])
		if n1 == n2 {
			t.Errorf("%q and %q share the function name %q", pair[0], pair[1], n1)
		}
		for _, n := range []string{n1, n2} {
			if len(n) > 63 {
				t.Errorf("function name %q is %d bytes, more than 63", n, len(n))
			}
			if !utf8.ValidString(n) {
				t.Errorf("function name %q is not valid UTF-8", n)
			}
		}
	}
	if n := name("escrows"); !strings.Contains(n, "public") || !strings.Contains(n, "escrows") {
		t.Errorf("FunctionName(escrows) = %q, want it readable", n)
	}
	if name(long+"1") != name(long+"1") {
		t.Error("FunctionName is not deterministic")
	}
}

// Tables whose function names are hashed or could be confused with each
// other each get their own working capture function.
func TestInstallLongAndLookalikeNames(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	names := []string{
		"a__b.c", "a.b__c", // "capture__a__b__c" both, if the separator is ambiguous
		"public." + strings.Repeat("ü", 31) + "x", // hashed name cut inside a 2-byte character
		"public." + strings.Repeat("l", 63),
	}
	exec(t, conn, `create schema a; create schema a__b`)
	var tables []config.Table
	for _, n := range names {
		tb := config.Table{Table: n, Kind: config.KindEntity, IDColumn: "id", TeamColumn: "team_id"}.WithDefaults()
		exec(t, conn, "create table "+pgx.Identifier{tb.Schema(), tb.Name()}.Sanitize()+
			" (id bigint generated always as identity primary key, team_id bigint)")
		tables = append(tables, tb)
	}
	plan := render(t, tables, true)
	install(t, conn, plan)
	if drift := verify(t, conn, plan); len(drift) > 0 {
		t.Errorf("drift right after install: %q", drift)
	}
	for _, tb := range tables {
		exec(t, conn, "insert into "+pgx.Identifier{tb.Schema(), tb.Name()}.Sanitize()+" (team_id) values (1)")
	}
	var got []string
	for _, r := range checkTicked(t, conn) {
		got = append(got, r.Tbl)
	}
	want := make([]string, len(tables))
	for i, tb := range tables {
		want[i] = tb.Qualified()
	}
	sameLines(t, "captured tables", got, want)
}

// --- Install and Verify --------------------------------------------------------

func TestInstallIsIdempotent(t *testing.T) {
	conn := demoDB(t)
	plan := render(t, crm.Tables(), true)
	first := install(t, conn, plan)
	for _, want := range []string{
		"rowcast schema: changelog, ticks",
		"capture trigger on public.escrows",
		"capture trigger on public.ai_tasks",
	} {
		if !slices.Contains(first, want) {
			t.Errorf("install lines %q lack %q", first, want)
		}
	}
	exec(t, conn, "insert into leads (team_id, first_name) values (1, 'Ada')")

	second := install(t, conn, plan)
	sameLines(t, "second install", second, first)
	if drift := verify(t, conn, plan); len(drift) > 0 {
		t.Errorf("drift after two installs: %q", drift)
	}
	n := queryInt(t, conn, "select count(*) from pg_trigger where tgname in ('rowcast_capture', 'rowcast_truncate')")
	if n != int64(2*len(plan.Tables)) {
		t.Errorf("%d rowcast triggers, want %d", n, 2*len(plan.Tables))
	}
	if rows := checkTicked(t, conn); len(rows) != 1 || rows[0].Tbl != "public.leads" {
		t.Errorf("changelog after a second install: %+v, want the one lead insert", rows)
	}
}

func TestVerifyReportsDrift(t *testing.T) {
	all := crm.Tables()
	tests := []struct {
		name    string
		install []config.Table // nil: do not install
		change  string         // SQL run after install
		verify  []config.Table
		notify  bool
		want    []string
	}{
		{
			name: "schema missing", verify: all, notify: true,
			want: []string{"the rowcast schema is not installed"},
		},
		{
			name: "capture trigger dropped", install: all, change: "drop trigger rowcast_capture on escrows",
			verify: all, notify: true,
			want: []string{"public.escrows: capture trigger missing or disabled"},
		},
		{
			name: "capture trigger disabled", install: all, change: "alter table escrows disable trigger rowcast_capture",
			verify: all, notify: true,
			want: []string{"public.escrows: capture trigger missing or disabled"},
		},
		{
			name: "truncate trigger dropped", install: all, change: "drop trigger rowcast_truncate on leads",
			verify: all, notify: true,
			want: []string{"public.leads: capture trigger missing or disabled"},
		},
		{
			name: "extra excluded column", install: all, verify: func() []config.Table {
				ts := crm.Tables()
				ts[0].ExcludeColumns = []string{"internal_notes", "notes"}
				return ts
			}(), notify: true,
			want: []string{"public.escrows: capture trigger differs from the configuration"},
		},
		{
			name: "notify changed", install: all, verify: all, notify: false,
			want: append([]string{"the rowcast schema differs from this version's (or capture.notify changed)"},
				capturesDiffer(crm.Tables())...),
		},
		{
			name: "configured table not installed", install: demoTables(t, "escrows", "ai_tasks"),
			verify: demoTables(t, "escrows", "leads", "ai_tasks"), notify: true,
			want: []string{"public.leads: capture trigger missing or disabled"},
		},
		{
			name: "installed table no longer configured", install: demoTables(t, "escrows", "leads"),
			verify: demoTables(t, "escrows"), notify: true,
			want: []string{`"public"."leads": has a capture trigger but is not configured`},
		},
		{
			name: "configured table does not exist", install: all,
			verify: append(crm.Tables(), config.Table{Table: "ghosts"}.WithDefaults()), notify: true,
			want: []string{"public.ghosts: table does not exist"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn := demoDB(t)
			if tt.install != nil {
				install(t, conn, render(t, tt.install, true))
				if drift := verify(t, conn, render(t, tt.install, true)); len(drift) > 0 {
					t.Fatalf("drift right after install: %q", drift)
				}
			}
			if tt.change != "" {
				exec(t, conn, tt.change)
			}
			sameLines(t, "drift", verify(t, conn, render(t, tt.verify, tt.notify)), tt.want)
		})
	}
}

// capturesDiffer returns the drift lines of tables whose capture functions
// differ from the configuration.
func capturesDiffer(tables []config.Table) []string {
	var out []string
	for _, t := range tables {
		out = append(out, t.Qualified()+": capture trigger differs from the configuration")
	}
	return out
}

func TestInstallRemovesUnconfiguredTable(t *testing.T) {
	conn := demoDB(t)
	install(t, conn, render(t, demoTables(t, "escrows", "leads"), true))
	one := render(t, demoTables(t, "escrows"), true)
	lines := install(t, conn, one)
	if !slices.Contains(lines, `removed capture trigger from "public"."leads" (not configured)`) {
		t.Errorf("install lines %q do not say the leads trigger was removed", lines)
	}
	if n := queryInt(t, conn, "select count(*) from pg_trigger where tgrelid = 'leads'::regclass and tgname like 'rowcast%'"); n != 0 {
		t.Errorf("leads still has %d rowcast triggers", n)
	}
	if drift := verify(t, conn, one); len(drift) > 0 {
		t.Errorf("drift: %q", drift)
	}
	exec(t, conn, "insert into leads (team_id, first_name) values (1, 'Ada')")
	exec(t, conn, "truncate leads cascade")
	if rows := changelog(t, conn); len(rows) != 0 {
		t.Errorf("leads is still captured: %+v", rows)
	}
}

func TestRemove(t *testing.T) {
	conn := demoDB(t)
	plan := render(t, crm.Tables(), true)
	install(t, conn, plan)
	exec(t, conn, "insert into leads (team_id, first_name) values (1, 'Ada')")

	lines, err := triggers.Remove(t.Context(), conn, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`removed capture trigger from "public"."escrows"`,
		`removed capture trigger from "public"."ai_tasks"`,
		"dropped schema rowcast (changelog and history)",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("remove lines %q lack %q", lines, want)
		}
	}
	if queryBool(t, conn, "select to_regnamespace('rowcast') is not null") {
		t.Error("schema rowcast still exists")
	}
	if n := queryInt(t, conn, "select count(*) from pg_trigger where tgname like 'rowcast%'"); n != 0 {
		t.Errorf("%d rowcast triggers left", n)
	}

	// The application keeps writing, and nothing is captured.
	exec(t, conn, "insert into leads (team_id, first_name) values (1, 'Bo')")
	exec(t, conn, "update leads set score = score + 1")
	exec(t, conn, "delete from leads where first_name = 'Ada'")
	exec(t, conn, `insert into escrows (team_id, property_address, city, state, zip_code, purchase_price, internal_notes)
		values (2, '1 Elm St', 'Austin', 'TX', '78701', 300000, 'private')`)
	exec(t, conn, "update escrows set status = 'pending'")
	exec(t, conn, "insert into ai_tasks (user_id, team_id, task_type) values (1, 1, 'summarize')")
	exec(t, conn, "update ai_tasks set progress = 50")
	exec(t, conn, "truncate notes")
	if queryBool(t, conn, "select to_regnamespace('rowcast') is not null") {
		t.Error("schema rowcast is back after writes")
	}
	sameLines(t, "verify after remove", verify(t, conn, plan), []string{"the rowcast schema is not installed"})

	if _, err := triggers.Remove(t.Context(), conn, "", ""); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

// --- the write path ------------------------------------------------------------

// dealsDB returns a database with a captured table deals whose team column
// is nullable, and its URL.
func dealsDB(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	url := pg.NewDatabase(t)
	conn := connect(t, url)
	exec(t, conn, `create table deals (
    id bigint generated always as identity primary key,
    team_id bigint,
    name text not null,
    updated_by text)`)
	deals := config.Table{Table: "deals", Kind: config.KindEntity, ActorColumn: "updated_by"}.WithDefaults()
	install(t, conn, render(t, []config.Table{deals}, true))
	return conn, url
}

func TestNullTeamIsNotCaptured(t *testing.T) {
	conn, _ := dealsDB(t)
	exec(t, conn, "insert into deals (team_id, name) values (null, 'orphan')")
	exec(t, conn, "update deals set name = 'still orphan'")
	exec(t, conn, "update deals set team_id = null")
	exec(t, conn, "delete from deals")
	if rows := changelog(t, conn); len(rows) != 0 {
		t.Errorf("changes of a team-less row were captured: %+v", rows)
	}

	// Moving a row into a team, across teams and out of a team.
	exec(t, conn, "insert into deals (team_id, name) values (null, 'mover')")
	exec(t, conn, "update deals set team_id = 5")
	exec(t, conn, "update deals set team_id = 6")
	exec(t, conn, "update deals set team_id = null")
	type got struct{ stream, op, team, oldTeam string }
	var have []got
	for _, r := range checkTicked(t, conn) {
		have = append(have, got{r.Stream, r.Op, str(r.TeamID), str(r.OldTeamID)})
	}
	want := []got{
		{"team:5", "I", "5", "<nil>"},
		{"team:5", "U", "6", "5"},
		{"team:6", "U", "6", "5"},
		{"team:6", "D", "6", "<nil>"},
	}
	if !slices.Equal(have, want) {
		t.Errorf("team moves:\n got %v\nwant %v", have, want)
	}
}

func TestRollbackWritesNothing(t *testing.T) {
	conn, _ := dealsDB(t)
	exec(t, conn, "insert into deals (team_id, name) values (1, 'first')")

	tx := begin(t, conn)
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'gone'), (1, 'gone too'), (2, 'gone three')")
	txExec(t, tx, "update deals set name = 'renamed'")
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}

	exec(t, conn, "insert into deals (team_id, name) values (1, 'second')")
	rows := checkTicked(t, conn)
	if len(rows) != 2 || rows[0].RowData["name"] != "first" || rows[1].RowData["name"] != "second" {
		t.Fatalf("changelog has %+v, want the two committed inserts", rows)
	}
}

func TestSavepointRollback(t *testing.T) {
	conn, _ := dealsDB(t)
	names := func() []string {
		var out []string
		for _, r := range checkTicked(t, conn) {
			if r.Op == "I" {
				out = append(out, r.RowData["name"].(string))
			}
		}
		return out
	}

	// The transaction's first change is inside a savepoint that is rolled back.
	tx := begin(t, conn)
	txExec(t, tx, "savepoint s")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'x1')")
	txExec(t, tx, "rollback to savepoint s")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'a1')")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'a2')")
	commit(t, tx)
	sameLines(t, "after a rolled-back first savepoint", names(), []string{"a1", "a2"})

	// Its only change is inside a savepoint that is rolled back.
	tx = begin(t, conn)
	txExec(t, tx, "savepoint s")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'x2')")
	txExec(t, tx, "rollback to savepoint s")
	commit(t, tx)

	// A change before, a rolled-back nested savepoint, a released one.
	tx = begin(t, conn)
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'b1')")
	txExec(t, tx, "savepoint outer_sp")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'b2')")
	txExec(t, tx, "savepoint inner_sp")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'x3')")
	txExec(t, tx, "rollback to savepoint inner_sp")
	txExec(t, tx, "release savepoint outer_sp")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'b3')")
	commit(t, tx)

	// The first change inside a released savepoint.
	tx = begin(t, conn)
	txExec(t, tx, "savepoint s")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'c1')")
	txExec(t, tx, "release savepoint s")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'c2')")
	commit(t, tx)

	sameLines(t, "captured inserts", names(), []string{"a1", "a2", "b1", "b2", "b3", "c1", "c2"})
}

// Transactions are ordered by the tick that first shows them, not by the
// order they wrote in: a appends first, b commits first.
func TestOrderFollowsCommitOrder(t *testing.T) {
	connA, url := dealsDB(t)
	connB := connect(t, url)

	a := begin(t, connA)
	txExec(t, a, "insert into deals (team_id, name) values (1, 'a')")
	b := begin(t, connB)
	txExec(t, b, "insert into deals (team_id, name) values (1, 'b')")
	commit(t, b)
	exec(t, connB, "select rowcast.tick()")
	commit(t, a)
	exec(t, connA, "select rowcast.tick()")
	exec(t, connA, "insert into deals (team_id, name) values (1, 'c')")

	rows := checkTicked(t, connA)
	if len(rows) != 3 {
		t.Fatalf("%d changelog rows, want 3", len(rows))
	}
	var order []string
	for _, r := range rows {
		order = append(order, r.RowData["name"].(string))
	}
	sameLines(t, "names in order", order, []string{"b", "a", "c"})
	if rows[0].ID < rows[1].ID {
		t.Fatal("the test meant a to append before b")
	}
	if !(*rows[0].Tick < *rows[1].Tick && *rows[1].Tick < *rows[2].Tick) {
		t.Errorf("ticks %d %d %d, want rising", *rows[0].Tick, *rows[1].Tick, *rows[2].Tick)
	}
}

// Within one tick, transactions are ordered by the highest id each wrote,
// and a transaction's rows stay together: B updates a row A wrote after A
// committed, so B comes after A, whatever their first ids.
func TestOrderWithinATick(t *testing.T) {
	connA, url := dealsDB(t)
	connB := connect(t, url)
	exec(t, connA, "insert into deals (team_id, name) values (1, 'x'), (2, 'y')")
	exec(t, connA, "select rowcast.tick()")

	b := begin(t, connB)
	txExec(t, b, "update deals set name = 'y1' where name = 'y'") // b's first id
	a := begin(t, connA)
	txExec(t, a, "update deals set name = 'x1' where name = 'x'")
	txExec(t, a, "insert into deals (team_id, name) values (2, 'z')")
	commit(t, a)
	txExec(t, b, "update deals set name = 'x2' where name = 'x1'") // after a committed
	commit(t, b)

	rows := checkTicked(t, connA)[2:]
	var order []string
	for _, r := range rows {
		order = append(order, r.RowData["name"].(string))
	}
	sameLines(t, "changes in order", order, []string{"x1", "z", "y1", "x2"})
	if *rows[0].Tick != *rows[3].Tick {
		t.Fatalf("the test meant both transactions in one tick: ticks %d and %d", *rows[0].Tick, *rows[3].Tick)
	}
}

// Writers at REPEATABLE READ and SERIALIZABLE commit side by side on one
// team (schema version 1 made them fail at commit: its commit-time counter
// update was a concurrent update under their snapshot).
func TestSnapshotIsolationWriters(t *testing.T) {
	for _, level := range []string{"repeatable read", "serializable"} {
		t.Run(level, func(t *testing.T) {
			connA, url := dealsDB(t)
			connB := connect(t, url)
			exec(t, connA, "insert into deals (team_id, name) values (1, 'before')")
			a, err := connA.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			b, err := connB.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			txExec(t, a, "set transaction isolation level "+level)
			txExec(t, b, "set transaction isolation level "+level)
			txExec(t, a, "insert into deals (team_id, name) values (1, 'a')")
			txExec(t, b, "insert into deals (team_id, name) values (1, 'b')")
			commit(t, b)
			commit(t, a)
			if rows := checkTicked(t, connA); len(rows) != 3 {
				t.Fatalf("%d changelog rows, want 3", len(rows))
			}
		})
	}
}

func TestTransactionTouchingTwoTeams(t *testing.T) {
	conn, _ := dealsDB(t)
	exec(t, conn, "insert into deals (team_id, name) values (1, 'one'), (1, 'two')")
	exec(t, conn, "insert into deals (team_id, name) values (2, 'three')")

	tx := begin(t, conn)
	txExec(t, tx, "insert into deals (team_id, name) values (2, 'team two')")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'team one')")
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'team one again')")
	commit(t, tx)

	rows := checkTicked(t, conn)
	if len(rows) != 6 {
		t.Fatalf("%d changelog rows, want 6", len(rows))
	}
	last := rows[3:]
	var have []string
	for _, r := range last {
		have = append(have, r.Stream)
		if r.XID != last[0].XID || *r.Tick != *last[0].Tick || *r.Tx != *last[0].Tx {
			t.Errorf("rows of one transaction are apart: %+v and %+v", r, last[0])
		}
	}
	sameLines(t, "streams", have, []string{"team:2", "team:1", "team:1"})
}

// --- CheckTables ---------------------------------------------------------------

func TestCheckTables(t *testing.T) {
	conn := demoDB(t)
	if problems, err := triggers.CheckTables(t.Context(), conn, crm.Tables()); err != nil || len(problems) > 0 {
		t.Fatalf("demo tables: %q, %v; want no problem", problems, err)
	}

	tables := demoTables(t, "escrows", "leads", "clients", "ai_tasks")
	tables = slices.Insert(tables, 1, config.Table{Table: "ghosts"}.WithDefaults())
	tables[2].TeamColumn = "squad_id"
	tables[3].ExcludeColumns = []string{"internal_notes", "nope"}
	tables[4].ProgressColumn = "pct"
	tables = append(tables, config.Table{Table: "nowhere.things"}.WithDefaults())

	found, err := triggers.CheckTables(t.Context(), conn, tables)
	problems := (&config.Problems{List: found}).Lines()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ prefix, contains string }{
		{"tables[1].table: ", "public.ghosts does not exist"},
		{"tables[2].team_column: ", `public.leads has no column "squad_id"`},
		{"tables[3].exclude_columns", `public.clients has no column "nope"`},
		{"tables[4].progress_column: ", `public.ai_tasks has no column "pct"`},
		{"tables[5].table: ", "nowhere.things does not exist"},
	}
	if len(problems) != len(want) {
		t.Fatalf("problems:\n%s\nwant %d", strings.Join(problems, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(problems[i], w.prefix) || !strings.Contains(problems[i], w.contains) {
			t.Errorf("problem %d = %q, want %q…%q", i, problems[i], w.prefix, w.contains)
		}
	}
}

// An id column must identify a row: exactly the primary key or a unique
// NOT NULL constraint or index; Install refuses what CheckTables reports.
func TestCheckTablesKey(t *testing.T) {
	conn := demoDB(t)
	exec(t, conn, `create table tagged (id bigint primary key, team_id bigint, code text unique, slug text not null,
		ref text not null, n int not null);
		create unique index tagged_slug on tagged (slug) where n > 0;
		create unique index tagged_ref_n on tagged (ref, n)`)
	table := func(name string, ids ...string) config.Table {
		t := config.Table{Table: name}
		if len(ids) == 1 {
			t.IDColumn = ids[0]
		} else {
			t.IDColumns = ids
		}
		return t.WithDefaults()
	}
	tables := []config.Table{
		table("team_members", "team_id", "user_id"),
		table("team_members", "user_id", "team_id"),
		table("tagged", "ref", "n"),
		table("tagged", "id"),
		table("team_members", "user_id"),
		table("tagged", "code"),
		table("tagged", "slug"),
		table("tagged", "ref"),
		table("tagged", "id", "ref"),
	}
	found, err := triggers.CheckTables(t.Context(), conn, tables)
	problems := (&config.Problems{List: found}).Lines()
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "problems", problems, []string{
		`tables[4].id_column: "user_id" does not identify a row of public.team_members: it is neither its primary key nor a unique constraint or index of its own, so two rows' events would carry the same entityId; the primary key is (team_id, user_id): set id_columns: [team_id, user_id]`,
		`tables[5].id_column: "code" is unique in public.tagged but code may be NULL: make it NOT NULL, or use the primary key`,
		`tables[6].id_column: "slug" does not identify a row of public.tagged: it is neither its primary key nor a unique constraint or index of its own, so two rows' events would carry the same entityId; the primary key is "id": set id_column: id`,
		`tables[7].id_column: "ref" does not identify a row of public.tagged: it is neither its primary key nor a unique constraint or index of its own, so two rows' events would carry the same entityId; the primary key is "id": set id_column: id`,
		`tables[8].id_columns: (id, ref) does not identify a row of public.tagged: it is neither its primary key nor a unique constraint or index of its own, so two rows' events would carry the same entityId; the primary key is "id": set id_column: id`,
	})
	_, err = triggers.Install(t.Context(), conn, render(t, []config.Table{table("team_members", "user_id")}, true))
	if !errors.Is(err, triggers.ErrMismatch) || !strings.Contains(err.Error(), `"user_id" does not identify a row`) {
		t.Fatalf("install with an id column that is not a key: %v", err)
	}
}

// A table whose team comes through a parent row: config check says how to
// configure it, and checks the team_from rule against the database.
func TestCheckTablesTeamFrom(t *testing.T) {
	conn := demoDB(t)
	exec(t, conn, `create table deals (id bigint primary key, organization_id bigint not null);
		create table deal_notes (id bigint primary key, deal_id bigint references deals (id), body text);
		create table nokey (ref bigint, org bigint);
		create table listing_notes (id bigint primary key, listing_id bigint references listings (id))`)
	from := func(table, parent, key, column string) config.Table {
		return config.Table{Table: table, TeamFrom: &config.TeamFrom{Table: parent, Key: key, Column: column}}.WithDefaults()
	}
	tables := []config.Table{
		from("deal_notes", "deals", "deal_id", "organization_id"),
		config.Table{Table: "deal_notes"}.WithDefaults(),
		config.Table{Table: "listing_notes"}.WithDefaults(),
		from("deal_notes", "nodeals", "deal_id", "organization_id"),
		from("deal_notes", "deals", "dealid", "org_id"),
		from("deal_notes", "nokey", "deal_id", "org"),
	}
	found, err := triggers.CheckTables(t.Context(), conn, tables)
	problems := (&config.Problems{List: found}).Lines()
	if err != nil {
		t.Fatal(err)
	}
	const how = `set team_column to the column that holds the row's team, or, when the team comes through a parent row, team_from: {table: <parent table>, key: <this table's column referencing it>, column: <the parent's team column>}`
	sameLines(t, "problems", problems, []string{
		`tables[1].team_column: public.deal_notes has no column "team_id": ` + how + ` (its foreign keys: deal_id → deals)`,
		`tables[2].team_column: public.listing_notes has no column "team_id": ` + how + `; here: team_from: {table: listings, key: listing_id, column: team_id}`,
		`tables[3].team_from.table: public.nodeals does not exist in the database`,
		`tables[4].team_from.key: public.deal_notes has no column "dealid"`,
		`tables[4].team_from.column: public.deals has no column "org_id"`,
		`tables[5].team_from.table: public.nokey has no one-column primary key; name the column deal_id references with team_from.parent_key`,
	})
}

// The capture function renders rows with TimeZone UTC, IntervalStyle
// iso_8601 and bytea_output hex whatever the writer's session says, and
// leaves the writer's settings as they were, in the transaction and after
// it, also when it captures nothing.
func TestRenderingIgnoresTheWritersSettings(t *testing.T) {
	url := pg.NewDatabase(t)
	conn := connect(t, url)
	exec(t, conn, `create table shots (
    id bigint primary key,
    team_id bigint,
    taken timestamptz not null,
    exposure interval not null,
    raw bytea not null)`)
	install(t, conn, render(t, []config.Table{config.Table{Table: "shots", Kind: config.KindEntity}.WithDefaults()}, true))
	w := connect(t, url)
	exec(t, w, "set timezone = 'America/New_York'; set intervalstyle = 'postgres_verbose'; set bytea_output = 'escape'")
	settings := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		var s string
		if err := q.QueryRow(t.Context(), "select concat_ws(' ', current_setting('TimeZone'), current_setting('IntervalStyle'), current_setting('bytea_output'))").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	const writers = "America/New_York postgres_verbose escape"
	tx := begin(t, w)
	txExec(t, tx, `insert into shots values (1, 7, '2026-12-04 12:00:00+00', '1 hour 30 minutes', '\x0102')`)
	txExec(t, tx, `insert into shots values (2, null, '2026-12-04 12:00:00+00', '1 hour', '\x03')`) // no team: nothing
	if got := settings(tx); got != writers {
		t.Errorf("settings inside the writer's transaction after capture: %q, want %q", got, writers)
	}
	commit(t, tx)
	if got := settings(w); got != writers {
		t.Errorf("settings after the transaction: %q, want %q", got, writers)
	}
	exec(t, w, "update shots set exposure = '2 days' where id = 1")
	rows := checkTicked(t, conn)
	if len(rows) != 2 {
		t.Fatalf("%d changelog rows, want 2", len(rows))
	}
	ins, upd := rows[0].RowData, rows[1].RowData
	if ins["taken"] != "2026-12-04T12:00:00+00:00" || ins["exposure"] != "PT1H30M" || ins["raw"] != `\x0102` {
		t.Errorf("insert rendered %v, want UTC, ISO 8601 and hex", ins)
	}
	if upd["exposure"] != "P2D" || rows[1].OldRow["exposure"] != "PT1H30M" {
		t.Errorf("update rendered %v (old %v), want ISO 8601", upd, rows[1].OldRow)
	}
	// A writer already on the pinned values keeps them as well.
	exec(t, w, "set timezone = 'UTC'; set intervalstyle = 'iso_8601'; set bytea_output = 'hex'")
	exec(t, w, "update shots set exposure = '3 days' where id = 1")
	if got := settings(w); got != "UTC iso_8601 hex" {
		t.Errorf("settings after a capture on the pinned values: %q", got)
	}
	if rows := checkTicked(t, conn); rows[2].RowData["exposure"] != "P3D" {
		t.Errorf("update on the pinned values rendered %v", rows[2].RowData)
	}
	// PostgreSQL's defaults differ in IntervalStyle only ('postgres').
	exec(t, w, "set intervalstyle = 'postgres'")
	exec(t, w, "update shots set exposure = '4 days' where id = 1")
	if got := settings(w); got != "UTC postgres hex" {
		t.Errorf("settings after a capture with only IntervalStyle differing: %q", got)
	}
	if rows := checkTicked(t, conn); rows[3].RowData["exposure"] != "P4D" {
		t.Errorf("update with only IntervalStyle differing rendered %v", rows[3].RowData)
	}
}

// Installing over schema version 1 (testdata/schema-v1-crm.sql: what
// install rendered for the demo CRM before ticks) upgrades it in place:
// the commit-time sequencer and its tables are gone, the history starts
// over under a new epoch (positions of version 1 do not carry over: clients
// resync once). A writer whose transaction is open when the upgrade starts
// commits normally (version 1 numbers it at commit, under locks the upgrade
// needs: the upgrade gives way and tries again instead of deadlocking), and
// its change belongs to version 1's history.
func TestInstallUpgradesVersion1(t *testing.T) {
	conn := demoDB(t)
	v1, err := os.ReadFile("testdata/schema-v1-crm.sql")
	if err != nil {
		t.Fatal(err)
	}
	exec(t, conn, string(v1))
	exec(t, conn, "insert into leads (team_id, first_name) values (1, 'before')")
	var epoch string
	if err := conn.QueryRow(t.Context(), "select epoch::text from rowcast.meta").Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	// A writer in the middle of a transaction: its row is in, its
	// commit (and, under version 1, its numbering) comes after the upgrade.
	w := connect(t, conn.Config().ConnString())
	tx := begin(t, w)
	txExec(t, tx, "insert into leads (team_id, first_name) values (1, 'across')")
	done := make(chan []string, 1)
	go func() {
		ic := connect(t, conn.Config().ConnString())
		lines, err := triggers.Install(context.Background(), ic, render(t, crm.Tables(), true))
		if err != nil {
			t.Error(err)
		}
		done <- lines
	}()
	// The upgrade waits for the writer (it replaces tables the writer's
	// transaction holds); let the writer commit.
	deadline := time.After(30 * time.Second)
	for queryInt(t, conn, "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()") == 0 {
		select {
		case <-deadline:
			t.Fatal("the upgrade did not wait for the open writer")
		case <-time.After(10 * time.Millisecond):
		}
	}
	commit(t, tx)
	if lines := <-done; !slices.Contains(lines, "rowcast schema: changelog, ticks") {
		t.Fatalf("install lines %q", lines)
	}
	if drift := verify(t, conn, render(t, crm.Tables(), true)); len(drift) > 0 {
		t.Errorf("drift after the upgrade: %q", drift)
	}
	var now string
	if err := conn.QueryRow(t.Context(), "select epoch::text from rowcast.meta").Scan(&now); err != nil {
		t.Fatal(err)
	}
	if now == epoch {
		t.Error("the epoch did not change: clients would resume version 1 positions")
	}
	if n := queryInt(t, conn, "select schema_version from rowcast.meta"); n != 2 {
		t.Errorf("schema_version %d, want 2", n)
	}
	for _, gone := range []string{"rowcast.sequence()", "rowcast.mark()"} {
		if queryInt(t, conn, "select count(*) from pg_proc where oid = to_regprocedure($1)", gone) != 0 {
			t.Errorf("%s is still there", gone)
		}
	}
	for _, gone := range []string{"rowcast.streams", "rowcast.pending", "rowcast.boot"} {
		if queryInt(t, conn, "select count(*) from pg_class where oid = to_regclass($1)", gone) != 0 {
			t.Errorf("%s is still there", gone)
		}
	}
	exec(t, conn, "insert into leads (team_id, first_name) values (1, 'after')")
	var names []string
	for _, r := range checkTicked(t, conn) {
		names = append(names, r.RowData["first_name"].(string))
	}
	sameLines(t, "changes after the upgrade", names, []string{"after"})
}

// The writers' doorbell: while rowcast.bell is not 0 (a fresh install
// arms it) a transaction that captured something notifies channel rowcast
// once at commit, however many changes it made, TRUNCATE included; while it
// is 0 nothing is sent.
func TestDoorbell(t *testing.T) {
	conn, url := dealsDB(t)
	l := connect(t, url)
	exec(t, l, "listen rowcast")
	// next returns the payload of the next notification on rowcast; a
	// marker sent after the writes shows that nothing came before it.
	next := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		n, err := l.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("waiting for a notification: %v", err)
		}
		return n.Payload
	}
	mark := func() { exec(t, conn, "select pg_notify('rowcast', 'marker')") }

	tx := begin(t, conn)
	txExec(t, tx, "insert into deals (team_id, name) values (1, 'a'), (1, 'b'), (2, 'c')")
	txExec(t, tx, "update deals set name = name || '!'")
	commit(t, tx)
	mark()
	if got := next(); got != "" {
		t.Fatalf("armed: first notification %q, want the doorbell's", got)
	}
	if got := next(); got != "marker" {
		t.Fatalf("armed: a transaction of four changes rang more than once (%q before the marker)", got)
	}

	exec(t, conn, "select setval('rowcast.bell', 0)")
	exec(t, conn, "insert into deals (team_id, name) values (1, 'd')")
	exec(t, conn, "truncate deals")
	mark()
	if got := next(); got != "marker" {
		t.Fatalf("disarmed: notification %q before the marker", got)
	}

	exec(t, conn, "select setval('rowcast.bell', 1)")
	exec(t, conn, "insert into deals (team_id, name) values (1, 'e')")
	if got := next(); got != "" {
		t.Fatalf("armed again: notification %q, want the doorbell's", got)
	}
	exec(t, conn, "truncate deals")
	if got := next(); got != "" {
		t.Fatalf("armed, TRUNCATE: notification %q, want the doorbell's", got)
	}
}

// Installing over a changelog whose rows are jsonb (installs before
// 2026-12-06) turns them into json in place: the rows written before the
// upgrade stay, with the same content.
func TestInstallTurnsJSONBRowsIntoJSON(t *testing.T) {
	conn := demoDB(t)
	install(t, conn, render(t, crm.Tables(), true))
	exec(t, conn, "alter table rowcast.changelog alter row_data type jsonb, alter old_row type jsonb")
	exec(t, conn, "insert into leads (team_id, first_name) values (1, 'before')")
	exec(t, conn, "update leads set first_name = 'renamed' where first_name = 'before'")
	before := changelog(t, conn)
	install(t, conn, render(t, crm.Tables(), true))
	for _, col := range []string{"row_data", "old_row"} {
		var typ string
		if err := conn.QueryRow(t.Context(), `select atttypid::regtype::text from pg_attribute
			where attrelid = 'rowcast.changelog'::regclass and attname = $1`, col).Scan(&typ); err != nil || typ != "json" {
			t.Errorf("%s is %s (%v), want json", col, typ, err)
		}
	}
	// A fresh connection: this one's prepared statement returned jsonb
	// (the relay's return text, which does not change).
	after := changelog(t, connect(t, conn.Config().ConnString()))
	if len(after) != len(before) || len(after) != 2 {
		t.Fatalf("%d rows before the upgrade, %d after, want 2", len(before), len(after))
	}
	for i := range after {
		if !reflect.DeepEqual(after[i].RowData, before[i].RowData) || !reflect.DeepEqual(after[i].OldRow, before[i].OldRow) {
			t.Errorf("row %d: %v / %v, was %v / %v", i, after[i].RowData, after[i].OldRow, before[i].RowData, before[i].OldRow)
		}
	}
	if after[1].OldRow["first_name"] != "before" || after[1].RowData["first_name"] != "renamed" {
		t.Errorf("update row %v old %v", after[1].RowData, after[1].OldRow)
	}
}

// An excluded column of a domain type that refuses null: the capture cannot
// set it to null in a row of the table's type, so Prepare renders its
// removal from jsonb instead, and writes go on.
func TestExcludedDomainColumn(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	exec(t, conn, `create domain secret as text not null check (value <> '');
create table vault (id bigint primary key, team_id bigint not null, s secret, note text)`)
	cfg := &config.Config{Tables: []config.Table{
		config.Table{Table: "vault", ExcludeColumns: []string{"s"}}.WithDefaults(),
	}}
	cfg.Capture.Mode = config.ModeTrigger
	p, err := triggers.Prepare(t.Context(), conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	install(t, conn, p)
	exec(t, conn, "insert into vault values (1, 7, 'hush', 'a')")
	exec(t, conn, "update vault set note = 'b', s = 'hush too'")
	rows := checkTicked(t, conn)
	if len(rows) != 2 {
		t.Fatalf("%d changelog rows, want 2", len(rows))
	}
	for _, r := range rows {
		for _, m := range []map[string]any{r.RowData, r.OldRow} {
			if _, ok := m["s"]; ok {
				t.Errorf("excluded domain column captured: %v", m)
			}
		}
	}
	if rows[1].RowData["note"] != "b" || rows[1].OldRow["note"] != "a" {
		t.Errorf("update: %v / %v", rows[1].RowData, rows[1].OldRow)
	}
	if drift := verify(t, conn, p); len(drift) > 0 {
		t.Errorf("drift: %q", drift)
	}
}
