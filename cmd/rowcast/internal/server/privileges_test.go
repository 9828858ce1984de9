package server_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/config"
)

// separateRoles sets up the usual production roles on the configuration's
// (demo) database: every table owned by an owner role, which installs and
// runs the relay, and an application role that may only read and write the
// tables. It points the configuration at the owner and returns the
// application role's URL. Roles are per cluster, so their names carry the
// mode.
func separateRoles(t *testing.T, c *config.Config, logical bool) string {
	t.Helper()
	ctx := context.Background()
	owner, app := "rowcast_t_owner_trigger", "rowcast_t_app"
	if logical {
		owner = "rowcast_t_owner_logical"
	}
	conn, err := pgx.Connect(ctx, c.Database.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, role := range []string{owner, app} {
		_, err := conn.Exec(ctx, `do $$ begin create role `+role+` login; exception when duplicate_object then null; end $$`)
		if err != nil {
			t.Fatal(err)
		}
	}
	setup := `
do $$ declare r record; begin
    for r in select tablename from pg_tables where schemaname = 'public' loop
        execute format('alter table public.%I owner to ` + owner + `', r.tablename);
    end loop;
end $$;
grant create on database ` + pgx.Identifier{dbName(t, c.Database.URL)}.Sanitize() + ` to ` + owner + `;
grant usage on schema public to ` + app + `;
grant select, insert, update, delete, truncate on all tables in schema public to ` + app + `;`
	if logical {
		setup += "alter role " + owner + " replication;"
	}
	if _, err := conn.Exec(ctx, setup); err != nil {
		t.Fatal(err)
	}
	c.Database.URL = withUser(t, c.Database.URL, owner)
	return withUser(t, c.Database.URL, app)
}

func withUser(t *testing.T, raw, user string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

func dbName(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path[1:]
}

func TestAppRoleWritesTriggerMode(t *testing.T) { appRoleWrites(t, false) }
func TestAppRoleWritesLogicalMode(t *testing.T) { appRoleWrites(t, true) }

// appRoleWrites: installing capture must not break a write that worked
// before it. The application's role, which may only read and write the
// tables, writes every kind of change (and names its actor and request, and
// runs the AI task helpers) and every event arrives; it cannot forge a
// change through the rowcast schema.
func appRoleWrites(t *testing.T, logical bool) {
	var appURL string
	e := startRelay(t, func(c *config.Config) {
		if logical {
			logicalMode(c)
		}
		appURL = separateRoles(t, c, logical)
	})
	ctx := context.Background()
	app, err := pgxpool.New(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	c := e.connect(userToken(t, "1", 1))

	appExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := app.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("the application role: %s: %v", sql, err)
		}
	}
	cases := append(slices.Clip(entityCases), entityCase{"note", "notes",
		`insert into notes (team_id, entity_type, entity_id, body) values ($1, 'lead', 1, 'call back') returning id`,
		`update notes set body = 'called' where id = $1`, map[string]any{"body": "called"}})
	for _, tc := range cases {
		var id int64
		err := pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "select rowcast.set_actor('7'), rowcast.set_request_id('req-app')"); err != nil {
				return err
			}
			return tx.QueryRow(ctx, tc.insert, 1).Scan(&id)
		})
		if err != nil {
			t.Fatalf("the application role's insert into %s: %v", tc.table, err)
		}
		if d := c.event(tc.entity + ":created").data(); d["userId"] != "7" || d["requestId"] != "req-app" {
			t.Errorf("%s created: actor and request id: %v", tc.entity, d)
		}
		appExec(tc.update, id)
		if d := c.event(tc.entity + ":updated").data(); d["changes"] == nil {
			t.Errorf("%s updated: %v", tc.entity, d)
		}
		appExec("delete from "+tc.table+" where id = $1", id)
		c.event(tc.entity + ":deleted")
	}

	var task string
	if err := app.QueryRow(ctx, "select rowcast.task_start('1', '1', 'summarize', '{}', 'Queued')::text").Scan(&task); err != nil {
		t.Fatalf("the application role: task_start: %v", err)
	}
	c.event("ai:task:started")
	appExec("select rowcast.task_progress($1, 40, 'Reading')", task)
	c.event("ai:task:progress")
	appExec(`select rowcast.task_complete($1, '{"ok": true}', 'Done')`, task)
	c.event("ai:task:completed")
	if err := app.QueryRow(ctx, "select rowcast.task_start('1', '1', 'summarize')::text").Scan(&task); err != nil {
		t.Fatalf("the application role: task_start: %v", err)
	}
	c.event("ai:task:started")
	appExec("select rowcast.task_fail($1, 'no document')", task)
	c.event("ai:task:failed")

	appExec("truncate notes")
	if f := c.next(); string(f.Raw) != `{"type":"resync","reason":"truncate","entityType":"note"}` {
		t.Fatalf("truncate: got %s", f.Raw)
	}

	// Nothing the application role can reach writes the changelog.
	denied := func(sqls ...string) {
		t.Helper()
		err := pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
			for _, sql := range sqls {
				if _, err := tx.Exec(ctx, sql); err != nil {
					return err
				}
			}
			return nil
		})
		sql := sqls[len(sqls)-1]
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("the application role ran %q: want insufficient_privilege, got %v", sql, err)
		}
	}
	denied("insert into rowcast.changelog (stream, tbl, op, entity_id, team_id) values ('team:1', 'public.leads', 'D', '1', '1')")
	denied("select rowcast.ring()")
	denied("select rowcast.tick()")
	denied("select rowcast.tick(false)")
	denied("select rowcast.truncated_logical('public.leads')")
	if logical {
		denied(`select rowcast.apply__public__leads('INSERT', '{"id": 99, "team_id": 1, "first_name": "forged"}', null, '{}', '{"id": "99", "team_id": "1"}', null)`)
	} else {
		// A table of its own with the capture function attached would
		// record changes under the captured table's name and any team.
		denied("create temp table forged (like public.leads)",
			"create trigger forged after insert on forged for each row execute function rowcast.capture__public__leads()")
	}
	// The events above were the last: nothing was forged.
	appExec("insert into leads (team_id, first_name) values (1, 'last')")
	if d := c.event("lead:created").data(); d["lead"].(map[string]any)["first_name"] != "last" {
		t.Errorf("after the forging attempts: %v", d)
	}
}
