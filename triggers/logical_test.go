package triggers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

// logicalPlan prepares the logical-mode plan of the demo tables with the
// default slot and publication names.
func logicalPlan(t *testing.T, conn *pgx.Conn, logical bool) *triggers.Plan {
	t.Helper()
	cfg := config.Defaults()
	cfg.Tables = crm.Tables()
	if logical {
		cfg.Capture.Mode = config.ModeLogical
	}
	p, err := triggers.Prepare(t.Context(), conn, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func hasLine(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func replicaIdentity(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var ri string
	if err := conn.QueryRow(t.Context(), "select relreplident::text from pg_class where oid = to_regclass($1)", table).Scan(&ri); err != nil {
		t.Fatal(err)
	}
	return ri
}

// TestInstallSaysWhenItSwitchesModes: switching capture modes replaces one
// capture with the other, and install says so; switching back to trigger
// mode drops the slot (which would hold WAL forever) and the publication
// and restores the replica identity.
func TestInstallSaysWhenItSwitchesModes(t *testing.T) {
	conn := demoDB(t)
	install(t, conn, logicalPlan(t, conn, false))

	lines := install(t, conn, logicalPlan(t, conn, true))
	if !hasLine(lines, "removed capture trigger from public.leads (switching to logical capture") {
		t.Errorf("trigger → logical: lines do not say the triggers were removed:\n%s", strings.Join(lines, "\n"))
	}
	if hasLine(install(t, conn, logicalPlan(t, conn, true)), "switching") {
		t.Error("a second logical install says it switches modes")
	}

	lines = install(t, conn, logicalPlan(t, conn, false))
	for _, want := range []string{"dropped replication slot rowcast (switching to trigger capture)",
		"dropped publication rowcast", `set REPLICA IDENTITY DEFAULT on public.leads`} {
		if !hasLine(lines, want) {
			t.Errorf("logical → trigger: lines lack %q:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if queryBool(t, conn, "select exists (select 1 from pg_replication_slots where slot_name = 'rowcast')") {
		t.Error("the slot survived the switch to trigger mode")
	}
	if ri := replicaIdentity(t, conn, "leads"); ri != "d" {
		t.Errorf("leads' replica identity is %q after the switch to trigger mode, want d", ri)
	}
}

// TestRemoveRestoresReplicaIdentity: install set REPLICA IDENTITY FULL;
// remove sets it back.
func TestRemoveRestoresReplicaIdentity(t *testing.T) {
	conn := demoDB(t)
	install(t, conn, logicalPlan(t, conn, true))
	if ri := replicaIdentity(t, conn, "leads"); ri != "f" {
		t.Fatalf("after a logical install leads' replica identity is %q", ri)
	}
	lines, err := triggers.Remove(t.Context(), conn, "rowcast", "rowcast")
	if err != nil {
		t.Fatal(err)
	}
	if !hasLine(lines, "set REPLICA IDENTITY DEFAULT on public.leads") {
		t.Errorf("remove lines: %q", lines)
	}
	for _, tbl := range []string{"leads", "escrows", "ai_tasks"} {
		if ri := replicaIdentity(t, conn, tbl); ri != "d" {
			t.Errorf("%s: replica identity %q after remove, want d", tbl, ri)
		}
	}
}

// TestSlotOfAnotherDatabase: slot names are cluster-wide; a second
// database configured with the same slot name is refused, naming the
// database that owns the slot and the setting to change, before anything
// is installed.
func TestSlotOfAnotherDatabase(t *testing.T) {
	first := demoDB(t)
	install(t, first, logicalPlan(t, first, true))
	var owner string
	if err := first.QueryRow(t.Context(), "select current_database()").Scan(&owner); err != nil {
		t.Fatal(err)
	}

	second := demoDB(t)
	_, err := triggers.Install(t.Context(), second, logicalPlan(t, second, true))
	if err == nil || !strings.Contains(err.Error(), `replication slot "rowcast" belongs to database "`+owner+`"`) ||
		!strings.Contains(err.Error(), "capture.slot") {
		t.Fatalf("install on a second database: %v", err)
	}
	if queryBool(t, second, "select to_regnamespace('rowcast') is not null") {
		t.Error("install went ahead")
	}
	problems, err := triggers.CheckSlot(t.Context(), second, "rowcast")
	if err != nil || len(problems) != 1 {
		t.Errorf("CheckSlot: %q, %v", problems, err)
	}
	if problems, err := triggers.CheckSlot(t.Context(), first, "rowcast"); err != nil || len(problems) != 0 {
		t.Errorf("CheckSlot on the owner: %q, %v", problems, err)
	}
}

// TestRemoveRefusesSlotInUse: remove checks, before dropping anything, that
// nothing streams from the slot, and names what does.
func TestRemoveRefusesSlotInUse(t *testing.T) {
	url := pg.NewDatabase(t)
	if err := crm.Setup(t.Context(), url); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, url)
	install(t, conn, logicalPlan(t, conn, true))

	// A replication connection streaming from the slot, as a relay's.
	rcfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	rcfg.RuntimeParams["replication"] = "database"
	rcfg.RuntimeParams["application_name"] = "some-relay"
	rconn, err := pgconn.ConnectConfig(t.Context(), rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close(context.Background())
	err = pglogrepl.StartReplication(t.Context(), rconn, "rowcast", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '2'", "publication_names 'rowcast'"}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the slot to be active", func() bool {
		return queryBool(t, conn, "select active from pg_replication_slots where slot_name = 'rowcast'")
	})

	_, err = triggers.Remove(t.Context(), conn, "rowcast", "rowcast")
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "some-relay") {
		t.Fatalf("remove while the slot is in use: %v", err)
	}
	if !queryBool(t, conn, "select exists (select 1 from pg_publication where pubname = 'rowcast')") ||
		!queryBool(t, conn, "select to_regnamespace('rowcast') is not null") {
		t.Error("remove dropped something although it refused")
	}
}

// waitUntil polls cond every 20ms for up to 30s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestQuotedNames: verify compares the replica identity index by its
// exact name, and remove restores the replica identity of a published
// table whose schema and name need quoting (mixed case, a space), naming
// it as SQL would.
func TestQuotedNames(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	exec(t, conn, `create schema "Sales"; create table "Sales"."Big Deals" (id bigint primary key, team_id bigint not null);
		create unique index "Idx" on "Sales"."Big Deals" (team_id, id); create unique index "xIdx" on "Sales"."Big Deals" (team_id, id)`)
	tb := config.Table{Table: "Sales.Big Deals", Kind: config.KindEntity, IDColumn: "id", TeamColumn: "team_id",
		ReplicaIdentityIndex: "Idx"}.WithDefaults()
	plan, err := triggers.Render([]config.Table{tb}, triggers.Options{Logical: true, Slot: "rowcast", Publication: "rowcast"})
	if err != nil {
		t.Fatal(err)
	}
	install(t, conn, plan)
	if ri := replicaIdentity(t, conn, `"Sales"."Big Deals"`); ri != "i" {
		t.Fatalf("after a logical install the replica identity is %q, want i", ri)
	}
	if drift := verify(t, conn, plan); len(drift) > 0 {
		t.Errorf("drift right after install: %q", drift)
	}
	exec(t, conn, `alter table "Sales"."Big Deals" replica identity using index "xIdx"`)
	if drift := verify(t, conn, plan); !hasLine(drift, "replica identity is not what the configuration asks") {
		t.Errorf("identity index xIdx where Idx is configured: drift %q", drift)
	}
	lines, err := triggers.Remove(t.Context(), conn, "rowcast", "rowcast")
	if err != nil {
		t.Fatal(err)
	}
	if !hasLine(lines, `set REPLICA IDENTITY DEFAULT on "Sales"."Big Deals"`) {
		t.Errorf("remove lines: %q", lines)
	}
	if ri := replicaIdentity(t, conn, `"Sales"."Big Deals"`); ri != "d" {
		t.Errorf("replica identity %q after remove, want d", ri)
	}
}

// TestInstallNewSlotNewEpoch: install creating the replication slot (a
// first install, or again after the slot was dropped, as a restore of the
// database requires) starts a new history epoch; install with the slot in
// place keeps it.
func TestInstallNewSlotNewEpoch(t *testing.T) {
	conn := demoDB(t)
	p := logicalPlan(t, conn, true)
	install(t, conn, p)
	epoch := func() string {
		t.Helper()
		var e string
		if err := conn.QueryRow(t.Context(), "select epoch::text from rowcast.meta").Scan(&e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	first := epoch()
	install(t, conn, p)
	if got := epoch(); got != first {
		t.Fatalf("install with the slot in place changed the epoch %s to %s", first, got)
	}
	if _, err := conn.Exec(t.Context(), "select pg_drop_replication_slot('rowcast')"); err != nil {
		t.Fatal(err)
	}
	lines := install(t, conn, p)
	if !hasLine(lines, "replication slot rowcast") {
		t.Fatalf("install did not recreate the slot: %q", lines)
	}
	if got := epoch(); got == first {
		t.Fatal("install recreated the slot under the old epoch")
	}
}

// TestVerifyHolderNulls: verify reports a table whose recorded list of
// columns the slot holder renders null is not the one its apply function
// expects (the function would refuse every change), and a table that has
// none recorded.
func TestVerifyHolderNulls(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	exec(t, conn, `create table vault (id bigint primary key, team_id bigint not null, secret text, editor bigint)`)
	tb := config.Table{Table: "vault", Kind: config.KindEntity, IDColumn: "id", TeamColumn: "team_id",
		ActorColumn: "editor", ExcludeColumns: []string{"secret", "editor"}}.WithDefaults()
	plan, err := triggers.Render([]config.Table{tb}, triggers.Options{Logical: true, Slot: "rowcast", Publication: "rowcast"})
	if err != nil {
		t.Fatal(err)
	}
	install(t, conn, plan)
	if drift := verify(t, conn, plan); len(drift) > 0 {
		t.Errorf("drift right after install: %q", drift)
	}
	// editor is read by the capture: the apply function nulls it itself.
	if !queryBool(t, conn, "select columns = '{secret}' from rowcast.holder_nulls where tbl = 'public.vault'") {
		t.Error("holder nulls are not {secret}")
	}
	const line = "rowcast.holder_nulls differs from the configuration's excluded columns"
	exec(t, conn, "update rowcast.holder_nulls set columns = '{}'")
	if drift := verify(t, conn, plan); !hasLine(drift, line) {
		t.Errorf("holder nulls emptied: drift %q", drift)
	}
	exec(t, conn, "delete from rowcast.holder_nulls")
	if drift := verify(t, conn, plan); !hasLine(drift, line) {
		t.Errorf("holder nulls deleted: drift %q", drift)
	}
}
