package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/api"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/pgtest"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

var pg pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }

var secret = []byte("0123456789abcdef0123456789abcdef")

// server starts the API on a fresh demo CRM database with rowcast installed
// and returns its URL and the pool.
func server(t *testing.T, o api.Options) (string, *pgxpool.Pool) {
	t.Helper()
	url := pg.NewDatabase(t)
	ctx := t.Context()
	if err := crm.Setup(ctx, url); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	plan, err := triggers.Render(crm.Tables(), triggers.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := triggers.Install(ctx, conn, plan); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	v, err := auth.NewVerifier(auth.Options{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	o.Pool, o.Verifier, o.Secret = pool, v, secret
	o.Exclude = map[string][]string{"escrows": {"internal_notes"}, "clients": {"internal_notes"}}
	a, err := api.New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv.URL, pool
}

// call sends one request and decodes the JSON answer into a map or slice.
func call(t *testing.T, method, url, token, body string, header ...string) (int, any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %q", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

// tokenFor gets a demo token for user from the API itself.
func tokenFor(t *testing.T, base, user string) string {
	t.Helper()
	code, v := call(t, "GET", base+"/api/demo/token?user="+user, "", "")
	if code != 200 {
		t.Fatalf("token for %s: %d %v", user, code, v)
	}
	return v.(map[string]any)["token"].(string)
}

func TestCRUDInTheCallersTeamOnly(t *testing.T) {
	base, _ := server(t, api.Options{})
	ana, dev := tokenFor(t, base, "1"), tokenFor(t, base, "4") // teams 1 and 2

	code, v := call(t, "POST", base+"/api/escrows", ana,
		`{"property_address":"12 Oak St","city":"Austin","state":"TX","zip_code":"78701","purchase_price":450000.5}`)
	if code != 201 {
		t.Fatalf("create: %d %v", code, v)
	}
	row := v.(map[string]any)
	id := jsonID(t, row["id"])
	if row["team_id"] != float64(1) || row["updated_by"] != float64(1) || row["purchase_price"] != 450000.5 {
		t.Errorf("created row: %v", row)
	}
	if _, ok := row["internal_notes"]; ok {
		t.Errorf("created row shows an excluded column: %v", row)
	}

	code, v = call(t, "PATCH", base+"/api/escrows/"+id, ana, `{"status":"pending","notes":"inspection booked"}`)
	if code != 200 || v.(map[string]any)["status"] != "pending" || v.(map[string]any)["notes"] != "inspection booked" {
		t.Fatalf("update: %d %v", code, v)
	}
	code, v = call(t, "GET", base+"/api/escrows", ana, "")
	if code != 200 || len(v.([]any)) != 1 {
		t.Fatalf("list: %d %v", code, v)
	}

	// Another team sees nothing and can change nothing.
	if code, v = call(t, "GET", base+"/api/escrows", dev, ""); code != 200 || len(v.([]any)) != 0 {
		t.Errorf("team 2 lists team 1's escrows: %d %v", code, v)
	}
	for _, r := range [][3]string{{"GET", "/api/escrows/" + id, ""}, {"PATCH", "/api/escrows/" + id, `{"status":"closed"}`},
		{"DELETE", "/api/escrows/" + id, ""}, {"POST", "/api/escrows/" + id + "/archive", ""}, {"POST", "/api/escrows/" + id + "/notes", `{"body":"x"}`}} {
		if code, v = call(t, r[0], base+r[1], dev, r[2]); code != 404 {
			t.Errorf("team 2: %s %s: %d %v, want 404", r[0], r[1], code, v)
		}
	}

	// Archive hides the escrow from the list; delete removes it.
	if code, v = call(t, "POST", base+"/api/escrows/"+id+"/archive", ana, ""); code != 200 || v.(map[string]any)["archived_at"] == nil {
		t.Fatalf("archive: %d %v", code, v)
	}
	if code, v = call(t, "GET", base+"/api/escrows", ana, ""); len(v.([]any)) != 0 {
		t.Errorf("an archived escrow is still listed: %v", v)
	}
	if code, v = call(t, "DELETE", base+"/api/escrows/"+id, ana, ""); code != 200 {
		t.Fatalf("delete: %d %v", code, v)
	}
	if code, _ = call(t, "GET", base+"/api/escrows/"+id, ana, ""); code != 404 {
		t.Errorf("get after delete: %d, want 404", code)
	}
}

func TestActionsOnEveryEntity(t *testing.T) {
	base, _ := server(t, api.Options{})
	ben := tokenFor(t, base, "2")
	create := func(path, body string) string {
		code, v := call(t, "POST", base+path, ben, body)
		if code != 201 {
			t.Fatalf("POST %s: %d %v", path, code, v)
		}
		return jsonID(t, v.(map[string]any)["id"])
	}
	create("/api/listings", `{"street_address":"1 Elm","city":"Reno","state":"NV","zip_code":"89501","list_price":300000}`)
	create("/api/clients", `{"first_name":"Ida","last_name":"Moss"}`)
	appt := create("/api/appointments", `{"title":"Showing","starts_at":"2026-12-04T15:00:00Z"}`)
	lead := create("/api/leads", `{"first_name":"Joe","source":"referral"}`)

	if code, v := call(t, "POST", base+"/api/appointments/"+appt+"/complete", ben, ""); code != 200 || v.(map[string]any)["status"] != "completed" {
		t.Errorf("complete appointment: %d %v", code, v)
	}
	if code, v := call(t, "POST", base+"/api/leads/"+lead+"/status", ben, `{"status":"qualified"}`); code != 200 || v.(map[string]any)["status"] != "qualified" {
		t.Errorf("lead status: %d %v", code, v)
	}
	if code, v := call(t, "POST", base+"/api/leads/"+lead+"/status", ben, `{"status":"won"}`); code != 400 {
		t.Errorf("lead status won: %d %v, want 400", code, v)
	}
	code, v := call(t, "POST", base+"/api/leads/"+lead+"/notes", ben, `{"body":"called back"}`)
	if code != 201 || v.(map[string]any)["entity_type"] != "lead" || v.(map[string]any)["body"] != "called back" {
		t.Errorf("add note: %d %v", code, v)
	}
	for _, e := range []string{"listings", "clients", "appointments", "leads"} {
		if code, v := call(t, "GET", base+"/api/"+e, ben, ""); code != 200 || len(v.([]any)) != 1 {
			t.Errorf("list %s: %d %v", e, code, v)
		}
	}
}

func TestBadRequestsAreClear(t *testing.T) {
	base, _ := server(t, api.Options{})
	ana := tokenFor(t, base, "1")
	cases := []struct {
		method, path, token, body string
		code                      int
		says                      string
	}{
		{"GET", "/api/escrows", "", "", 401, "token"},
		{"GET", "/api/escrows", "garbage", "", 401, ""},
		{"GET", "/api/widgets", ana, "", 404, "no such resource"},
		{"GET", "/api/escrows/abc", ana, "", 400, "id must be"},
		{"POST", "/api/escrows", ana, `{"city":"Austin"}`, 400, "property_address is required"},
		{"POST", "/api/escrows", ana, `{"team_id":2}`, 400, "team_id cannot be written"},
		{"POST", "/api/escrows", ana, `not json`, 400, "body"},
		{"PATCH", "/api/escrows/1", ana, `{}`, 400, "nothing to update"},
		{"POST", "/api/leads", ana, `{"first_name":"A","score":"lots"}`, 400, "invalid input syntax"},
		{"GET", "/api/demo/token?user=x", "", "", 400, "user must be"},
		{"GET", "/api/demo/token?user=99", "", "", 404, "no user 99"},
		{"POST", "/api/ai-tasks", ana, `{"taskType":"x"}`, 501, "not enabled"},
		{"PUT", "/api/nothing/here/at/all", ana, "", 404, "no such route"},
	}
	for _, c := range cases {
		code, v := call(t, c.method, base+c.path, c.token, c.body)
		msg, _ := v.(map[string]any)["error"].(string)
		if code != c.code || !strings.Contains(msg, c.says) {
			t.Errorf("%s %s %s: %d %q, want %d and %q", c.method, c.path, c.body, code, msg, c.code, c.says)
		}
	}
	// A value PostgreSQL refuses is the client's error, by SQLSTATE.
	code, v := call(t, "POST", base+"/api/leads", ana, `{"first_name":"A","status":"won"}`)
	if code != 400 || !strings.Contains(v.(map[string]any)["error"].(string), "check constraint") {
		t.Errorf("check violation: %d %v, want 400", code, v)
	}
}

// The write names the actor and the request, as the CRM's API does: the
// changelog row carries both.
func TestWritesNameActorAndRequest(t *testing.T) {
	base, pool := server(t, api.Options{})
	cara := tokenFor(t, base, "3")
	code, v := call(t, "POST", base+"/api/leads", cara, `{"first_name":"Kim"}`, "X-Request-Id", "req-77")
	if code != 201 {
		t.Fatalf("create: %d %v", code, v)
	}
	var actor, request string
	err := pool.QueryRow(t.Context(), `select coalesce(actor, ''), coalesce(request_id, '') from rowcast.changelog order by id desc limit 1`).
		Scan(&actor, &request)
	if err != nil {
		t.Fatal(err)
	}
	if actor != "3" || request != "req-77" {
		t.Errorf("changelog actor %q request %q, want 3 and req-77", actor, request)
	}
}

// ?fail=1 waits, answers 500 and leaves nothing written.
func TestFailRollsBack(t *testing.T) {
	base, pool := server(t, api.Options{FailDelay: -1})
	ana := tokenFor(t, base, "1")
	code, v := call(t, "POST", base+"/api/leads?fail=1", ana, `{"first_name":"Ghost"}`)
	if code != 500 || !strings.Contains(v.(map[string]any)["error"].(string), "nothing was written") {
		t.Fatalf("fail=1: %d %v", code, v)
	}
	var n int
	if err := pool.QueryRow(t.Context(), `select count(*) from leads`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d leads after a failed create, want 0", n)
	}
}

func TestTokenAndUsers(t *testing.T) {
	base, _ := server(t, api.Options{TokenTTL: time.Minute})
	code, v := call(t, "GET", base+"/api/demo/token?user=4", "", "")
	if code != 200 {
		t.Fatalf("token: %d %v", code, v)
	}
	m := v.(map[string]any)
	v2, _ := auth.NewVerifier(auth.Options{Secret: secret})
	p, err := v2.Verify(m["token"].(string))
	if err != nil || p.UserID != "4" || len(p.TeamIDs) != 1 || p.TeamIDs[0] != "2" {
		t.Errorf("token principal %+v, %v; want user 4 of team 2", p, err)
	}
	exp, err := time.Parse(time.RFC3339, m["expiresAt"].(string))
	if err != nil || time.Until(exp) > time.Minute || time.Until(exp) < 50*time.Second {
		t.Errorf("expiresAt %v (%v), want about a minute from now", m["expiresAt"], err)
	}
	code, v = call(t, "GET", base+"/api/demo/users", "", "")
	if code != 200 || len(v.([]any)) != 5 {
		t.Fatalf("users: %d %v", code, v)
	}
	first := v.([]any)[0].(map[string]any)
	if first["id"] != "1" || first["teamId"] != "1" || first["name"] != "Ana Ruiz" {
		t.Errorf("first user %v", first)
	}
}

func TestStartTask(t *testing.T) {
	type started struct{ user, team, typ, params string }
	got := make(chan started, 1)
	base, _ := server(t, api.Options{StartTask: func(_ context.Context, user, team, typ string, params json.RawMessage) (string, error) {
		got <- started{user, team, typ, string(params)}
		return "task-1", nil
	}})
	ana := tokenFor(t, base, "1")
	code, v := call(t, "POST", base+"/api/ai-tasks", ana, `{"taskType":"import_leads_csv","params":{"csv":"a,b"}}`)
	if code != 202 || v.(map[string]any)["taskId"] != "task-1" {
		t.Fatalf("start: %d %v", code, v)
	}
	s := <-got
	if s.user != "1" || s.team != "1" || s.typ != "import_leads_csv" || !bytes.Contains([]byte(s.params), []byte(`"csv"`)) {
		t.Errorf("started %+v", s)
	}
}

func jsonID(t *testing.T, v any) string {
	t.Helper()
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("id %v is not a number", v)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
