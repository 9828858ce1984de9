package triggers_test

import (
	"slices"
	"testing"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/triggers"
)

// TestTeamFromParentTrigger: a team_from table gets a trigger on its parent
// (it keeps the team of deleted parents for their children's capture);
// Verify reports it missing, and Install removes it once no configured table
// needs it.
func TestTeamFromParentTrigger(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	exec(t, conn, `create table "Deals" (id bigint primary key, org bigint not null);
		create table notes (id bigint primary key, deal_id bigint references "Deals" (id) on delete cascade)`)
	notes := config.Table{Table: "notes", TeamFrom: &config.TeamFrom{Table: "Deals", Key: "deal_id", Column: "org"}}.WithDefaults()
	cfg := &config.Config{Tables: []config.Table{notes}}
	p, err := triggers.Prepare(t.Context(), conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	install(t, conn, p)
	if drift := verify(t, conn, p); len(drift) > 0 {
		t.Fatalf("drift after install: %v", drift)
	}
	name := p.Tables[0].Parent.Name
	if n := queryInt(t, conn, `select count(*) from pg_trigger where tgrelid = '"Deals"'::regclass and tgname = $1`, name); n != 1 {
		t.Fatalf("%d parent triggers %s on Deals, want 1", n, name)
	}

	exec(t, conn, `drop trigger `+`"`+name+`"`+` on "Deals"`)
	want := []string{`public.notes: team_from parent trigger on "public"."Deals" missing or disabled`}
	if drift := verify(t, conn, p); !slices.Equal(drift, want) {
		t.Fatalf("drift %q, want %q", drift, want)
	}
	install(t, conn, p)
	if drift := verify(t, conn, p); len(drift) > 0 {
		t.Fatalf("drift after a second install: %v", drift)
	}

	// notes is no longer configured: its parent trigger goes with it.
	exec(t, conn, `create table other (id bigint primary key, team_id bigint)`)
	q, err := triggers.Prepare(t.Context(), conn, &config.Config{Tables: []config.Table{config.Table{Table: "other"}.WithDefaults()}})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		`public.other: capture trigger missing or disabled`,
		`"public"."notes": has a capture trigger but is not configured`,
		`"public"."Deals": has team_from parent trigger ` + name + ` but no configured table needs it`,
	}
	if drift := verify(t, conn, q); !slices.Equal(drift, want) {
		t.Fatalf("drift %q, want %q", drift, want)
	}
	install(t, conn, q)
	if drift := verify(t, conn, q); len(drift) > 0 {
		t.Fatalf("drift after installing without notes: %v", drift)
	}
	if n := queryInt(t, conn, `select count(*) from pg_trigger where tgrelid = '"Deals"'::regclass and not tgisinternal`); n != 0 {
		t.Fatalf("%d triggers left on Deals", n)
	}
}
