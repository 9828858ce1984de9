package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/rowcast/rowcast/relay/pgtest"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rowcast/rowcast/sql/crm"
)

const (
	cliSecret     = "cli-test-jwt-secret-0123456789-abcdefghijklmnop"
	cliDBPassword = "cli-test-db-password-7f3a9c"
)

// cliEnv clears the environment variables that configuration loading
// reads, so that only the test's file and flags count.
func cliEnv(t *testing.T) {
	t.Helper()
	t.Setenv("DATABASE_URL", "")
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ROWCAST_") && k != pgtest.EnvURL && k != "ROWCAST_PG_BINDIR" {
			t.Setenv(k, "")
		}
	}
}

// cliDatabase returns the URL, with a password in it, of a fresh database
// holding the demo CRM, and that password.
func cliDatabase(t *testing.T) (dbURL, password string) {
	t.Helper()
	raw := pg.NewDatabase(t)
	if err := crm.Setup(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	password, ok := u.User.Password()
	if !ok {
		// The test server trusts local connections, so any password works.
		password = cliDBPassword
		u.User = url.UserPassword(u.User.Username(), password)
	}
	return u.String(), password
}

// cliConfig renders a configuration file for the demo tables; escrows
// excludes the given columns.
func cliConfig(dbURL string, escrowExcludes ...string) string {
	return fmt.Sprintf(`database:
  url: %q
auth:
  jwt_secret: %q
listen: 127.0.0.1:0
tables:
  - table: escrows
    exclude_columns: [%s]
    actor_column: updated_by
  - table: leads
  - table: ai_tasks
    kind: ai_task
`, dbURL, cliSecret, strings.Join(escrowExcludes, ", "))
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rowcast.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rowcast runs the CLI in-process.
func rowcast(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // a hang fails instead of blocking
	defer cancel()
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func dbConnect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func dbBool(t *testing.T, conn *pgx.Conn, sql string) bool {
	t.Helper()
	var b bool
	if err := conn.QueryRow(t.Context(), sql).Scan(&b); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return b
}

func schemaInstalled(t *testing.T, conn *pgx.Conn) bool {
	t.Helper()
	return dbBool(t, conn, "select to_regprocedure('rowcast.tick()') is not null")
}

func noSecrets(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			t.Errorf("%s reveals a secret %q:\n%s", what, sec, s)
		}
	}
}

const notInstalledNote = "note: the installed capture triggers differ from this configuration"

func TestCLIConfigCheckInstallRemove(t *testing.T) {
	cliEnv(t)
	dbURL, password := cliDatabase(t)
	conn := dbConnect(t, dbURL)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes"))

	code, out, errOut := rowcast(t, "config", "check", "--config", cfg)
	if code != exitOK || !strings.HasSuffix(out, "configuration ok\n") {
		t.Fatalf("config check: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, notInstalledNote) || !strings.Contains(out, "the rowcast schema is not installed") {
		t.Errorf("config check before install does not note the missing schema:\n%s", out)
	}

	code, out, errOut = rowcast(t, "install", "--config", cfg, "--dry-run")
	if code != exitOK {
		t.Fatalf("install --dry-run: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"BEGIN;\n",
		`CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."escrows"`,
		`CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."ai_tasks"`,
		"COMMIT;\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("install --dry-run output lacks %q", want)
		}
	}
	if strings.Contains(out, `ON "public"."listings"`) {
		t.Error("install --dry-run renders a table that is not configured")
	}
	noSecrets(t, "install --dry-run", out+errOut, password, cliSecret)
	if schemaInstalled(t, conn) {
		t.Fatal("install --dry-run installed the schema")
	}
	if dbBool(t, conn, "select exists (select 1 from pg_trigger where tgname like 'rowcast%')") {
		t.Fatal("install --dry-run created triggers")
	}

	code, out, errOut = rowcast(t, "install", "--config", cfg)
	if code != exitOK {
		t.Fatalf("install: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"capture trigger on public.escrows", "capture trigger on public.leads", "capture trigger on public.ai_tasks"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("install output lacks %q:\n%s", want, out)
		}
	}
	if !schemaInstalled(t, conn) {
		t.Fatal("install did not install the schema")
	}

	code, out, errOut = rowcast(t, "config", "check", "--config", cfg)
	if code != exitOK || out != "configuration ok\n" {
		t.Errorf("config check after install: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if code, _, errOut = rowcast(t, "install", "--config", cfg); code != exitOK {
		t.Errorf("second install: exit %d: %s", code, errOut)
	}

	code, out, errOut = rowcast(t, "install", "--config", cfg, "--remove", "--dry-run")
	if code != exitOK || !strings.Contains(out, "DROP SCHEMA IF EXISTS rowcast CASCADE;") {
		t.Errorf("install --remove --dry-run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !schemaInstalled(t, conn) {
		t.Fatal("install --remove --dry-run removed the schema")
	}

	code, out, errOut = rowcast(t, "install", "--config", cfg, "--remove")
	if code != exitOK || !strings.Contains(out, "dropped schema rowcast") ||
		!strings.Contains(out, `removed capture trigger from "public"."escrows"`) {
		t.Errorf("install --remove: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if dbBool(t, conn, "select to_regnamespace('rowcast') is not null") {
		t.Error("install --remove left schema rowcast")
	}
	if dbBool(t, conn, "select exists (select 1 from pg_trigger where tgname like 'rowcast%')") {
		t.Error("install --remove left triggers")
	}
	if _, err := conn.Exec(t.Context(), "insert into leads (team_id, first_name) values (1, 'Ada')"); err != nil {
		t.Errorf("writing after install --remove: %v", err)
	}
	code, out, _ = rowcast(t, "config", "check", "--config", cfg)
	if code != exitOK || !strings.Contains(out, notInstalledNote) {
		t.Errorf("config check after remove: exit %d, stdout:\n%s", code, out)
	}
}

// The script install --dry-run prints is what install does.
func TestCLIInstallDryRunScriptInstalls(t *testing.T) {
	cliEnv(t)
	dbURL, _ := cliDatabase(t)
	conn := dbConnect(t, dbURL)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes"))
	code, script, errOut := rowcast(t, "install", "--config", cfg, "--dry-run")
	if code != exitOK {
		t.Fatalf("install --dry-run: exit %d: %s", code, errOut)
	}
	if _, err := conn.Exec(t.Context(), script); err != nil {
		t.Fatalf("running the dry-run script: %v", err)
	}
	code, out, errOut := rowcast(t, "config", "check", "--config", cfg)
	if code != exitOK || out != "configuration ok\n" {
		t.Errorf("config check after running the dry-run script: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestCLIConfigCheckReportsEveryProblem(t *testing.T) {
	cliEnv(t)
	dbURL, password := cliDatabase(t)
	cfg := writeFile(t, fmt.Sprintf(`database:
  url: %q
auth:
  jwt_secret: %q
listn: 127.0.0.1:0
history:
  retention: 3 days
tables:
  - table: escrows
    exclude_columns: [internal_notes]
    actor_column: updated_by
  - table: phantoms
    kind: task
  - table: ghosts
  - table: leads
    team_column: squad_id
`, dbURL, cliSecret))

	code, out, errOut := rowcast(t, "config", "check", "--config", cfg)
	if code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	if strings.Contains(out, "configuration ok") {
		t.Errorf("stdout says ok:\n%s", out)
	}
	wants := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^rowcast: configuration has 5 problem\(s\):$`),
		regexp.MustCompile(`(?m)^  - listn: unknown key`),
		regexp.MustCompile(`(?m)^  - history\.retention: .*not a duration`),
		// An entry with a problem of its own is not looked up as well.
		regexp.MustCompile(`(?m)^  - tables\[1\]\.kind: "task" is not one of`),
		regexp.MustCompile(`(?m)^  - tables\[2\]\.table: public\.ghosts does not exist in the database$`),
		regexp.MustCompile(`(?m)^  - tables\[3\]\.team_column: public\.leads has no column "squad_id": set team_column to the column that holds the row's team, or, when the team comes through a parent row, team_from: \{table: .*\} \(its foreign keys: assigned_to → users, team_id → teams, updated_by → users\)$`),
	}
	for _, re := range wants {
		if !re.MatchString(errOut) {
			t.Errorf("stderr does not match %s:\n%s", re, errOut)
		}
	}
	noSecrets(t, "config check", out+errOut, password, cliSecret)
}

func TestCLIInstallRefusesMissingTable(t *testing.T) {
	cliEnv(t)
	dbURL, _ := cliDatabase(t)
	conn := dbConnect(t, dbURL)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes", "no_such_column"))
	code, _, errOut := rowcast(t, "install", "--config", cfg)
	if code != exitUsage || !strings.Contains(errOut, `tables[0].exclude_columns`) || !strings.Contains(errOut, `"no_such_column"`) {
		t.Errorf("install: exit %d, stderr:\n%s", code, errOut)
	}
	if schemaInstalled(t, conn) {
		t.Error("install went ahead although a column is missing")
	}
}

func TestCLIConfigPrintHidesSecrets(t *testing.T) {
	cliEnv(t)
	dbURL, password := cliDatabase(t)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes"))

	code, out, errOut := rowcast(t, "config", "print", "--config", cfg)
	if code != exitOK {
		t.Fatalf("config print: exit %d: %s", code, errOut)
	}
	noSecrets(t, "config print", out+errOut, password, cliSecret)
	u, _ := url.Parse(dbURL)
	for _, want := range []string{"jwt_secret: '*****'", ":*****@" + u.Host, "table: escrows", "- internal_notes", "kind: ai_task", "listen: 127.0.0.1:0"} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}

	const other = "another-secret-given-as-a-flag-0123456789"
	code, out, errOut = rowcast(t, "config", "print", "--config", cfg, "--set", "auth.jwt_secret="+other)
	if code != exitOK {
		t.Fatalf("config print --set: exit %d: %s", code, errOut)
	}
	noSecrets(t, "config print --set", out+errOut, password, cliSecret, other)
}

func TestCLIServeRefusesDrift(t *testing.T) {
	cliEnv(t)
	dbURL, password := cliDatabase(t)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes"))

	// Not installed at all.
	code, _, errOut := rowcast(t, "serve", "--config", cfg, "--set", "listen=127.0.0.1:0")
	if code != exitUsage || !strings.Contains(errOut, "run `rowcast install") || !strings.Contains(errOut, "the rowcast schema is not installed") {
		t.Errorf("serve before install: exit %d, stderr:\n%s", code, errOut)
	}

	if code, _, errOut := rowcast(t, "install", "--config", cfg); code != exitOK {
		t.Fatalf("install: exit %d: %s", code, errOut)
	}
	drifted := writeFile(t, cliConfig(dbURL, "internal_notes", "notes"))
	code, out, errOut := rowcast(t, "serve", "--config", drifted, "--set", "listen=127.0.0.1:0")
	if code != exitUsage {
		t.Errorf("serve on drifted triggers: exit %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errOut, "run `rowcast install") ||
		!strings.Contains(errOut, "public.escrows: capture trigger differs from the configuration") {
		t.Errorf("serve on drifted triggers does not say to run install:\n%s", errOut)
	}
	noSecrets(t, "serve", out+errOut, password, cliSecret)
}

// syncBuffer is a bytes.Buffer for concurrent writers that reports when a
// line containing want has been written.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if strings.Contains(b.buf.String(), b.want) {
		b.once.Do(func() { close(b.seen) })
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// With triggers that match, serve starts, and returns 0 once its context
// ends.
func TestCLIServeStartsWhenInstalled(t *testing.T) {
	cliEnv(t)
	dbURL, _ := cliDatabase(t)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes"))
	if code, _, errOut := rowcast(t, "install", "--config", cfg); code != exitOK {
		t.Fatalf("install: exit %d: %s", code, errOut)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	stderr := &syncBuffer{want: "relay ready", seen: make(chan struct{})}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--set", "listen=127.0.0.1:0"}, &bytes.Buffer{}, stderr)
	}()
	select {
	case <-stderr.seen:
		cancel()
	case code := <-done:
		t.Fatalf("serve returned %d before it was ready:\n%s", code, stderr.String())
	}
	if code := <-done; code != exitOK {
		t.Errorf("serve: exit %d after its context ended:\n%s", code, stderr.String())
	}
}

func TestCLIVersionAndUsage(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, _ := rowcast(t, arg)
		if code != exitOK || !regexp.MustCompile(`^rowcast \S+\n$`).MatchString(out) {
			t.Errorf("%s: exit %d, stdout %q", arg, code, out)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{nil, "Usage:"},
		{[]string{"config"}, "usage: rowcast config check|print"},
		{[]string{"config", "validate"}, "usage: rowcast config check|print"},
		{[]string{"install", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	}
	for _, tt := range tests {
		code, out, errOut := rowcast(t, tt.args...)
		if code != exitUsage || !strings.Contains(errOut, tt.want) || out != "" {
			t.Errorf("rowcast %q: exit %d, stdout %q, stderr:\n%s\nwant exit %d and %q", tt.args, code, out, errOut, exitUsage, tt.want)
		}
	}
}

func TestBenchHelpListsEveryBenchmark(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"bench", "--help"}, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d; stderr %s", code, errOut.String())
	}
	for _, b := range []string{"latency", "capture", "writepath", "fanout", "idle"} {
		if !strings.Contains(out.String(), "\n  "+b+" ") {
			t.Errorf("bench --help does not list %s:\n%s", b, out.String())
		}
	}
}

// With the default sslmode (prefer), a server without TLS is tried twice;
// the refusal of TLS is not what a user needs to read first.
func TestCLIConnectErrorSaysTheCause(t *testing.T) {
	cliEnv(t)
	dbURL, _ := cliDatabase(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_database"
	q := u.Query()
	q.Del("sslmode")
	u.RawQuery = q.Encode()
	code, _, errOut := rowcast(t, "config", "check", "--config", writeFile(t, cliConfig(u.String())))
	if code != exitUsage || !strings.Contains(errOut, `database "no_such_database" does not exist`) || strings.Contains(errOut, "TLS") {
		t.Errorf("config check: exit %d, stderr:\n%s", code, errOut)
	}
}

// An id column that is not a key of its own would give two rows' events the
// same entityId: config check and install refuse it and say which key to
// name; the composite key itself passes.
func TestCLIRefusesIDColumnThatIsNotAKey(t *testing.T) {
	cliEnv(t)
	dbURL, _ := cliDatabase(t)
	conn := dbConnect(t, dbURL)
	withMembers := func(key string) string {
		return cliConfig(dbURL, "internal_notes") + "  - table: team_members\n    entity: membership\n    " + key + "\n"
	}
	bad := writeFile(t, withMembers("id_column: user_id"))
	want := regexp.MustCompile(`(?m)^  - tables\[3\]\.id_column: "user_id" does not identify a row of public\.team_members: .*; the primary key is \(team_id, user_id\): set id_columns: \[team_id, user_id\]$`)
	for _, cmd := range [][]string{{"config", "check"}, {"install"}} {
		code, _, errOut := rowcast(t, append(cmd, "--config", bad)...)
		if code != exitUsage || !want.MatchString(errOut) {
			t.Errorf("%s: exit %d, stderr:\n%s", cmd, code, errOut)
		}
	}
	if schemaInstalled(t, conn) {
		t.Error("install went ahead with an id column that is not a key")
	}
	good := writeFile(t, withMembers("id_columns: [team_id, user_id]"))
	if code, out, errOut := rowcast(t, "config", "check", "--config", good); code != exitOK {
		t.Errorf("composite key: exit %d\n%s%s", code, out, errOut)
	}
}

// TestCLIInstallDryRunRunsTheChecks: --dry-run makes the database checks
// install makes, reading only, and fails on a problem instead of printing a
// script that cannot run.
func TestCLIInstallDryRunRunsTheChecks(t *testing.T) {
	cliEnv(t)
	dbURL, _ := cliDatabase(t)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes", "no_such_column"))
	code, out, errOut := rowcast(t, "install", "--config", cfg, "--dry-run")
	if code != exitUsage || !strings.Contains(errOut, `"no_such_column"`) || strings.Contains(out, "CREATE") {
		t.Errorf("install --dry-run with a missing column: exit %d\nstdout:\n%.300s\nstderr:\n%s", code, out, errOut)
	}
}

// TestCLILogicalChecks: config check, install (--dry-run too) and serve
// report what logical capture lacks: a slot name that another database of
// the cluster owns, and a role that may not replicate.
func TestCLILogicalChecks(t *testing.T) {
	cliEnv(t)
	logical := "capture:\n  mode: logical\n"
	firstURL, _ := cliDatabase(t)
	first := writeFile(t, cliConfig(firstURL, "internal_notes")+logical)
	if code, out, errOut := rowcast(t, "install", "--config", first); code != exitOK {
		t.Fatalf("install on the first database: exit %d\n%s%s", code, out, errOut)
	}
	owner := dbName(t, firstURL)

	secondURL, _ := cliDatabase(t)
	second := writeFile(t, cliConfig(secondURL, "internal_notes")+logical)
	wantSlot := `replication slot "rowcast" belongs to database "` + owner + `"`
	for _, args := range [][]string{{"config", "check"}, {"install"}, {"install", "--dry-run"}, {"serve"}} {
		code, out, errOut := rowcast(t, append(args, "--config", second)...)
		if code == exitOK || !strings.Contains(errOut, wantSlot) || !strings.Contains(errOut, "capture.slot") {
			t.Errorf("%v on a second database: exit %d\nstdout:\n%.300s\nstderr:\n%s", args, code, out, errOut)
		}
	}
	if schemaInstalled(t, dbConnect(t, secondURL)) {
		t.Error("install went ahead on the second database")
	}

	// A role that may not replicate.
	conn := dbConnect(t, firstURL)
	role := strings.ToLower("rowcast_norep_" + owner[len(owner)-6:])
	if _, err := conn.Exec(t.Context(), "create role "+role+" login nosuperuser noreplication"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "drop role if exists "+role) })
	u, err := url.Parse(firstURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "x")
	norep := writeFile(t, cliConfig(u.String(), "internal_notes")+logical)
	code, out, errOut := rowcast(t, "config", "check", "--config", norep)
	if code == exitOK || !strings.Contains(errOut, "may not replicate") {
		t.Errorf("config check as a role without REPLICATION: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func dbName(t *testing.T, dbURL string) string {
	t.Helper()
	var name string
	if err := dbConnect(t, dbURL).QueryRow(t.Context(), "select current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestCLIRemoveRefusesSlotInUse: while something streams from the slot,
// install --remove (and its --dry-run) refuses before dropping anything and
// names what uses the slot.
func TestCLIRemoveRefusesSlotInUse(t *testing.T) {
	cliEnv(t)
	dbURL, _ := cliDatabase(t)
	cfg := writeFile(t, cliConfig(dbURL, "internal_notes")+"capture:\n  mode: logical\n")
	if code, out, errOut := rowcast(t, "install", "--config", cfg); code != exitOK {
		t.Fatalf("install: exit %d\n%s%s", code, out, errOut)
	}
	sep := "?"
	if strings.Contains(dbURL, "?") {
		sep = "&"
	}
	rconn, err := pgconn.Connect(t.Context(), dbURL+sep+"replication=database&application_name=relay-7")
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close(context.Background())
	if err := pglogrepl.StartReplication(t.Context(), rconn, "rowcast", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '2'", "publication_names 'rowcast'"}}); err != nil {
		t.Fatal(err)
	}
	conn := dbConnect(t, dbURL)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !dbBool(t, conn, "select coalesce((select active from pg_replication_slots where slot_name = 'rowcast'), false)") {
		<-tick.C
	}
	for _, args := range [][]string{{"install", "--remove", "--dry-run"}, {"install", "--remove"}} {
		code, out, errOut := rowcast(t, append(args, "--config", cfg)...)
		if code == exitOK || !strings.Contains(errOut, "in use") || !strings.Contains(errOut, "relay-7") {
			t.Errorf("%v while the slot is in use: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
		}
	}
	if !schemaInstalled(t, conn) || !dbBool(t, conn, "select exists (select 1 from pg_publication where pubname = 'rowcast')") {
		t.Error("remove dropped something although the slot is in use")
	}
}

// TestCLIServeWaitsForAnUnreachableDatabase: serve started while the
// database is down keeps running (and says it waits) instead of exiting 2;
// stopped, it drains and exits 0.
func TestCLIServeWaitsForAnUnreachableDatabase(t *testing.T) {
	cliEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := writeFile(t, cliConfig("postgres://rowcast@"+addr+"/crm?sslmode=disable&connect_timeout=1"))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"serve", "--config", cfg}, &out, &errOut)
	if code != exitOK || !strings.Contains(errOut.String(), "waits for it") {
		t.Fatalf("serve with the database down: exit %d (want 0 after the deadline), stderr:\n%s", code, errOut.String())
	}
}
