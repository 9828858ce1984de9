package pgtest

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

var pg Server

func TestMain(m *testing.M) { os.Exit(Main(m, &pg)) }

func connect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func dbName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func exists(t *testing.T, conn *pgx.Conn, sql, name string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(t.Context(), "SELECT EXISTS ("+sql+")", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestNewDatabase(t *testing.T) {
	a := pg.NewDatabase(t)
	b := pg.NewDatabase(t)
	if a == b {
		t.Fatalf("two databases share the URL %s", a)
	}
	if !strings.HasPrefix(a, "postgres://") && !strings.HasPrefix(a, "postgresql://") {
		t.Errorf("URL %q is not a postgres:// URL", a)
	}
	conn := connect(t, a)
	var db string
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if db != dbName(t, a) || !strings.HasPrefix(db, "t_testnewdatabase_") {
		t.Errorf("current_database() = %q for URL %s", db, a)
	}
	var tables int
	if err := conn.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("fresh database has %d tables", tables)
	}
}

// TestDropped checks that a database is dropped when its test ends, even with
// a session still open and a logical replication slot on it.
func TestDropped(t *testing.T) {
	var name, admin string
	t.Run("sub/with spaces", func(t *testing.T) {
		dbURL := pg.NewDatabase(t)
		name = dbName(t, dbURL)
		admin = strings.Replace(dbURL, "/"+name, "/postgres", 1)
		conn := connect(t, dbURL)
		if _, err := conn.Exec(t.Context(), "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name); err != nil {
			t.Fatal(err)
		}
		// An open session, closed only after the drop (Cleanups run last first).
		connect(t, dbURL)
	})
	if name == "" {
		t.Skip("subtest skipped")
	}
	if strings.ContainsAny(name, " /") {
		t.Errorf("unsanitized name %q", name)
	}
	conn := connect(t, admin)
	if exists(t, conn, "SELECT FROM pg_database WHERE datname = $1", name) {
		t.Errorf("database %s not dropped", name)
	}
	if exists(t, conn, "SELECT FROM pg_replication_slots WHERE slot_name = $1", name) {
		t.Errorf("slot %s not dropped", name)
	}
}

func TestParallel(t *testing.T) {
	for i := range 8 {
		t.Run("p", func(t *testing.T) {
			t.Parallel()
			conn := connect(t, pg.NewDatabase(t))
			if _, err := conn.Exec(t.Context(), "CREATE TABLE x (i int)"); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(t.Context(), "INSERT INTO x VALUES ($1)", i); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRestart(t *testing.T) {
	dbURL := pg.NewDatabase(t)
	emb := pg.Embedded()
	if emb == nil {
		t.Skip("server is external; cannot restart it")
	}
	conn := connect(t, dbURL)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	if err := emb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(t.Context()); err == nil {
		t.Error("ping succeeded while the server was stopped")
	}
	if err := emb.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := connect(t, dbURL).QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v); err != nil || v != 7 {
		t.Errorf("after restart: v = %d, err = %v", v, err)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"TestX":                         "testx",
		"TestX/sub case#01":             "testx_sub_case_01",
		"Test__Many///Seps__":           "test_many_seps",
		"ÜnicodeTest":                   "nicodetest",
		strings.Repeat("a", 100):        strings.Repeat("a", maxNameRunes),
		strings.Repeat("a", 39) + "/bc": strings.Repeat("a", 39),
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
