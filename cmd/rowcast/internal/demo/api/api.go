// Package api is the demo CRM's REST API: list, read, create, update and
// delete escrows, listings, clients, appointments and leads of the caller's
// team, the CRM's one-click actions (archive an escrow, complete an
// appointment, set a lead's status, add a note) and AI tasks. It writes the
// way the CRM's Express API does: each request is one transaction that names
// its actor with rowcast.set_actor and, when the request carries an
// X-Request-Id, the request with rowcast.set_request_id, so the browser that
// made an optimistic change recognises its echo. It never emits anything
// itself: rowcast sees the committed rows.
//
// Any write with ?fail=1 fails after Options.FailDelay and rolls back, so a
// demo (or a test) can watch an optimistic change being undone.
//
// Callers authenticate with the relay's own tokens (Authorization: Bearer);
// GET /api/demo/token?user=<id> hands out one for a demo user, which is what
// makes this a demo and nothing to deploy.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/relay/auth"
)

// Options configures the API. Pool, Verifier and Secret are required.
type Options struct {
	// Pool is the CRM database; the API does not close it.
	Pool *pgxpool.Pool
	// Verifier checks the Bearer token of every /api request but the token
	// endpoint.
	Verifier *auth.Verifier
	// Secret signs the tokens GET /api/demo/token hands out; it is the
	// relay's JWT secret, so the relay accepts them.
	Secret []byte
	// TokenTTL is the life of a handed-out token. Zero: one hour.
	TokenTTL time.Duration
	// FailDelay is how long a ?fail=1 write waits before it fails. Zero:
	// 800ms; negative: no wait.
	FailDelay time.Duration
	// StartTask starts an AI task for POST /api/ai-tasks and returns its id
	// at once; the task runs on after the request. Nil: the route answers 501.
	StartTask func(ctx context.Context, userID, teamID, taskType string, params json.RawMessage) (string, error)
	// Exclude names, per table, the columns never returned (the relay's
	// exclude_columns), so the API shows what the events show.
	Exclude map[string][]string
	// Logger receives request failures. Nil: discard.
	Logger *slog.Logger
}

// API serves the demo CRM's REST API. Create it with New.
type API struct {
	o        Options
	entities map[string]entity
	mux      *http.ServeMux
}

// entity is one resource: its table and what a client may write.
type entity struct {
	table    string
	writable []string // columns a POST or PATCH may set
	required []string // columns a POST must set
	order    string   // the list's ORDER BY
}

func entities() map[string]entity {
	return map[string]entity{
		"escrows": {table: "escrows", order: "id DESC",
			writable: []string{"property_address", "city", "state", "zip_code", "purchase_price", "earnest_money",
				"commission_rate", "status", "closing_date", "notes", "listing_id", "buyer_client_id", "seller_client_id"},
			required: []string{"property_address", "city", "state", "zip_code", "purchase_price"}},
		"listings": {table: "listings", order: "id DESC",
			writable: []string{"mls_number", "street_address", "city", "state", "zip_code", "list_price", "bedrooms",
				"bathrooms", "square_feet", "status", "listed_on"},
			required: []string{"street_address", "city", "state", "zip_code", "list_price"}},
		"clients": {table: "clients", order: "id DESC",
			writable: []string{"first_name", "last_name", "email", "phone", "client_type"},
			required: []string{"first_name", "last_name"}},
		"appointments": {table: "appointments", order: "starts_at, id",
			writable: []string{"title", "location", "starts_at", "status", "client_id", "listing_id"},
			required: []string{"title", "starts_at"}},
		"leads": {table: "leads", order: "id DESC",
			writable: []string{"first_name", "last_name", "email", "phone", "source", "status", "score", "budget_min", "budget_max"},
			required: []string{"first_name"}},
	}
}

// New returns the API for o.
func New(o Options) (*API, error) {
	if o.Pool == nil || o.Verifier == nil || len(o.Secret) == 0 {
		return nil, errors.New("demo api: Pool, Verifier and Secret are required")
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = time.Hour
	}
	if o.FailDelay == 0 {
		o.FailDelay = 800 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &API{o: o, entities: entities(), mux: http.NewServeMux()}
	a.mux.HandleFunc("GET /api/demo/users", a.users)
	a.mux.HandleFunc("GET /api/demo/token", a.token)
	a.mux.HandleFunc("GET /api/ai-tasks", a.authed(a.listTasks))
	a.mux.HandleFunc("POST /api/ai-tasks", a.authed(a.startTask))
	a.mux.HandleFunc("POST /api/escrows/{id}/archive", a.authed(a.action("escrows", `archived_at = now()`)))
	a.mux.HandleFunc("POST /api/appointments/{id}/complete", a.authed(a.action("appointments", `status = 'completed'`)))
	a.mux.HandleFunc("POST /api/leads/{id}/status", a.authed(a.leadStatus))
	a.mux.HandleFunc("POST /api/{entity}/{id}/notes", a.authed(a.addNote))
	a.mux.HandleFunc("GET /api/{entity}", a.authed(a.list))
	a.mux.HandleFunc("POST /api/{entity}", a.authed(a.create))
	a.mux.HandleFunc("GET /api/{entity}/{id}", a.authed(a.get))
	a.mux.HandleFunc("PATCH /api/{entity}/{id}", a.authed(a.update))
	a.mux.HandleFunc("DELETE /api/{entity}/{id}", a.authed(a.remove))
	a.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
	})
	return a, nil
}

// ServeHTTP serves the routes under /api/.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// caller is who a request speaks for.
type caller struct {
	user, team string
}

type handler func(w http.ResponseWriter, r *http.Request, c caller)

// authed verifies the Bearer token and picks the caller's team (the
// token's first).
func (a *API) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.o.Verifier.Verify(auth.TokenFromRequest(r))
		if err != nil {
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if len(p.TeamIDs) == 0 {
			writeError(w, http.StatusForbidden, "the token names no team")
			return
		}
		h(w, r, caller{user: p.UserID, team: p.TeamIDs[0]})
	}
}

// resource returns the entity the path names, or answers 404.
func (a *API) resource(w http.ResponseWriter, r *http.Request) (entity, bool) {
	e, ok := a.entities[r.PathValue("entity")]
	if !ok {
		writeError(w, http.StatusNotFound, "no such resource: "+r.PathValue("entity"))
	}
	return e, ok
}

// row returns the entity and the row id the path names, or answers 404 or
// 400.
func (a *API) row(w http.ResponseWriter, r *http.Request) (entity, int64, bool) {
	e, ok := a.resource(w, r)
	if !ok {
		return entity{}, 0, false
	}
	id, ok := pathID(w, r)
	return e, id, ok
}

// rowJSON is the SELECT list of one row as the relay renders it: to_jsonb
// without the excluded columns.
func (a *API) rowJSON(table string) string {
	expr := "to_jsonb(t)"
	for _, c := range a.o.Exclude[table] {
		expr += " - " + quoteLiteral(c)
	}
	return expr
}

func (a *API) list(w http.ResponseWriter, r *http.Request, c caller) {
	e, ok := a.resource(w, r)
	if !ok {
		return
	}
	where := "t.team_id = $1"
	if e.table == "escrows" {
		where += " AND t.archived_at IS NULL"
	}
	q := fmt.Sprintf(`SELECT coalesce(jsonb_agg(%s ORDER BY %s), '[]') FROM (SELECT * FROM %s t WHERE %s ORDER BY %s LIMIT 500) t`,
		a.rowJSON(e.table), e.order, ident(e.table), where, e.order)
	var out json.RawMessage
	if err := a.o.Pool.QueryRow(r.Context(), q, c.team).Scan(&out); err != nil {
		a.fail(w, r, "list "+e.table, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) get(w http.ResponseWriter, r *http.Request, c caller) {
	e, id, ok := a.row(w, r)
	if !ok {
		return
	}
	q := fmt.Sprintf(`SELECT %s FROM %s t WHERE t.id = $1 AND t.team_id = $2`, a.rowJSON(e.table), ident(e.table))
	var out json.RawMessage
	err := a.o.Pool.QueryRow(r.Context(), q, id, c.team).Scan(&out)
	if errors.Is(err, pgx.ErrNoRows) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s %d not found", e.table, id))
		return
	}
	if err != nil {
		a.fail(w, r, "get "+e.table, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) create(w http.ResponseWriter, r *http.Request, c caller) {
	e, ok := a.resource(w, r)
	if !ok {
		return
	}
	body, cols, ok := readBody(w, r, e.writable)
	if !ok {
		return
	}
	for _, req := range e.required {
		if !slices.Contains(cols, req) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: %s is required", e.table, req))
			return
		}
	}
	list := identList(cols)
	q := fmt.Sprintf(`INSERT INTO %[1]s AS t (team_id, updated_by%[2]s)
		SELECT $2, $3%[3]s FROM jsonb_populate_record(null::%[1]s, $1) p
		RETURNING %[4]s`, ident(e.table), prefixed(", ", list), prefixed(", p.", list), a.rowJSON(e.table))
	a.write(w, r, c, http.StatusCreated, "create "+e.table, q, body, c.team, c.user)
}

func (a *API) update(w http.ResponseWriter, r *http.Request, c caller) {
	e, id, ok := a.row(w, r)
	if !ok {
		return
	}
	body, cols, ok := readBody(w, r, e.writable)
	if !ok {
		return
	}
	if len(cols) == 0 {
		writeError(w, http.StatusBadRequest, "nothing to update: send one of "+strings.Join(e.writable, ", "))
		return
	}
	sets := make([]string, len(cols))
	for i, col := range cols {
		sets[i] = fmt.Sprintf("%s = p.%s", ident(col), ident(col))
	}
	q := fmt.Sprintf(`UPDATE %[1]s AS t SET %[2]s, updated_by = $4, updated_at = now()
		FROM jsonb_populate_record(null::%[1]s, $1) p
		WHERE t.id = $2 AND t.team_id = $3
		RETURNING %[3]s`, ident(e.table), strings.Join(sets, ", "), a.rowJSON(e.table))
	a.write(w, r, c, http.StatusOK, "update "+e.table, q, body, id, c.team, c.user)
}

func (a *API) remove(w http.ResponseWriter, r *http.Request, c caller) {
	e, id, ok := a.row(w, r)
	if !ok {
		return
	}
	q := fmt.Sprintf(`DELETE FROM %s t WHERE t.id = $1 AND t.team_id = $2 RETURNING jsonb_build_object('id', t.id)`, ident(e.table))
	a.write(w, r, c, http.StatusOK, "delete "+e.table, q, id, c.team)
}

// action returns a handler that applies one fixed SET to a row of table.
func (a *API) action(table, set string) handler {
	return func(w http.ResponseWriter, r *http.Request, c caller) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		q := fmt.Sprintf(`UPDATE %s AS t SET %s, updated_by = $3, updated_at = now()
			WHERE t.id = $1 AND t.team_id = $2 RETURNING %s`, ident(table), set, a.rowJSON(table))
		a.write(w, r, c, http.StatusOK, "update "+table, q, id, c.team, c.user)
	}
}

var leadStatuses = []string{"new", "contacted", "qualified", "converted", "lost"}

func (a *API) leadStatus(w http.ResponseWriter, r *http.Request, c caller) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var in struct {
		Status string `json:"status"`
	}
	if !decode(w, r, &in) {
		return
	}
	if !slices.Contains(leadStatuses, in.Status) {
		writeError(w, http.StatusBadRequest, "status must be one of "+strings.Join(leadStatuses, ", "))
		return
	}
	q := fmt.Sprintf(`UPDATE leads AS t SET status = $4, updated_by = $3, updated_at = now()
		WHERE t.id = $1 AND t.team_id = $2 RETURNING %s`, a.rowJSON("leads"))
	a.write(w, r, c, http.StatusOK, "update leads", q, id, c.team, c.user, in.Status)
}

func (a *API) addNote(w http.ResponseWriter, r *http.Request, c caller) {
	e, id, ok := a.row(w, r)
	if !ok {
		return
	}
	var in struct {
		Body string `json:"body"`
	}
	if !decode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.Body) == "" {
		writeError(w, http.StatusBadRequest, "a note needs a body")
		return
	}
	// The note's entity must be the caller's team's.
	q := fmt.Sprintf(`INSERT INTO notes AS t (team_id, entity_type, entity_id, body, updated_by)
		SELECT $2, $5, e.id, $4, $3 FROM %s e WHERE e.id = $1 AND e.team_id = $2
		RETURNING %s`, ident(e.table), a.rowJSON("notes"))
	a.write(w, r, c, http.StatusCreated, "add note", q, id, c.team, c.user, in.Body, strings.TrimSuffix(e.table, "s"))
}

// write runs q in a transaction that names the caller as the actor and the
// request's X-Request-Id as the request, and answers with the row q
// returns (404 when none). With ?fail=1 it waits FailDelay, rolls back and
// answers 500.
func (a *API) write(w http.ResponseWriter, r *http.Request, c caller, status int, op, q string, args ...any) {
	ctx := r.Context()
	requestID := r.Header.Get("X-Request-Id")
	if len(requestID) > 200 {
		writeError(w, http.StatusBadRequest, "X-Request-Id is longer than 200 characters")
		return
	}
	var out json.RawMessage
	err := pgx.BeginFunc(ctx, a.o.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT rowcast.set_actor($1)`, c.user); err != nil {
			return fmt.Errorf("set actor: %w", err)
		}
		if requestID != "" {
			if _, err := tx.Exec(ctx, `SELECT rowcast.set_request_id($1)`, requestID); err != nil {
				return fmt.Errorf("set request id: %w", err)
			}
		}
		if err := tx.QueryRow(ctx, q, args...).Scan(&out); err != nil {
			return err
		}
		if r.URL.Query().Get("fail") == "1" {
			if a.o.FailDelay > 0 {
				select {
				case <-time.After(a.o.FailDelay):
				case <-ctx.Done():
				}
			}
			return errSimulated
		}
		return nil
	})
	switch {
	case err == nil:
		writeJSON(w, status, out)
	case errors.Is(err, pgx.ErrNoRows):
		writeError(w, http.StatusNotFound, "not found in your team")
	default:
		a.fail(w, r, op, err)
	}
}

var errSimulated = errors.New("simulated failure (?fail=1): nothing was written")

// fail answers a failed request: 400 for what the client sent wrong (by
// SQLSTATE), 500 otherwise.
func (a *API) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	if errors.Is(err, errSimulated) {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case pgerrcode.CheckViolation, pgerrcode.NotNullViolation, pgerrcode.ForeignKeyViolation,
			pgerrcode.InvalidTextRepresentation, pgerrcode.InvalidDatetimeFormat, pgerrcode.NumericValueOutOfRange,
			pgerrcode.DatetimeFieldOverflow, pgerrcode.StringDataRightTruncationDataException, pgerrcode.InvalidParameterValue:
			writeError(w, http.StatusBadRequest, op+": "+pg.Message)
			return
		}
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	a.o.Logger.Error("demo api", "op", op, "err", err)
	writeError(w, http.StatusInternalServerError, op+": internal error")
}

// users lists the demo's users and their teams, for the user switcher.
func (a *API) users(w http.ResponseWriter, r *http.Request) {
	var out json.RawMessage
	err := a.o.Pool.QueryRow(r.Context(), `
		SELECT coalesce(jsonb_agg(jsonb_build_object('id', u.id::text, 'name', u.full_name, 'role', u.role,
			'teamId', m.team_id::text, 'teamName', t.name) ORDER BY u.id), '[]')
		FROM users u JOIN team_members m ON m.user_id = u.id JOIN teams t ON t.id = m.team_id`).Scan(&out)
	if err != nil {
		a.fail(w, r, "list users", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// token hands out a relay token for a demo user: {token, expiresAt, user}.
func (a *API) token(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.URL.Query().Get("user"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "user must be a user id (?user=1)")
		return
	}
	var name string
	var teams []string
	err = a.o.Pool.QueryRow(r.Context(), `
		SELECT u.full_name, coalesce(array_agg(m.team_id::text ORDER BY m.team_id) FILTER (WHERE m.team_id IS NOT NULL), '{}')
		FROM users u LEFT JOIN team_members m ON m.user_id = u.id WHERE u.id = $1 GROUP BY u.id`, id).Scan(&name, &teams)
	if errors.Is(err, pgx.ErrNoRows) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user %d", id))
		return
	}
	if err != nil {
		a.fail(w, r, "token", err)
		return
	}
	exp := time.Now().Add(a.o.TokenTTL).Truncate(time.Second)
	tok, err := auth.Sign(a.o.Secret, map[string]any{"sub": strconv.FormatInt(id, 10), "teamId": teams, "name": name, "exp": exp.Unix()})
	if err != nil {
		a.fail(w, r, "token", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token": tok, "expiresAt": exp.UTC().Format(time.RFC3339),
		"user": map[string]any{"id": strconv.FormatInt(id, 10), "name": name, "teamIds": teams},
	})
}

// listTasks returns the caller's ten latest AI tasks, newest first.
func (a *API) listTasks(w http.ResponseWriter, r *http.Request, c caller) {
	var out json.RawMessage
	err := a.o.Pool.QueryRow(r.Context(), `
		SELECT coalesce(jsonb_agg(jsonb_build_object('taskId', id::text, 'taskType', task_type, 'status', status,
			'progress', progress, 'message', message, 'error', error, 'result', result, 'createdAt', created_at) ORDER BY created_at DESC), '[]')
		FROM (SELECT * FROM ai_tasks WHERE user_id = $1 ORDER BY created_at DESC LIMIT 10) t`, c.user).Scan(&out)
	if err != nil {
		a.fail(w, r, "list tasks", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// startTask starts an AI task: {"taskType": "...", "params": {...}} → 202
// {"taskId": "..."}; the task's progress reaches the caller as ai:task:*
// events.
func (a *API) startTask(w http.ResponseWriter, r *http.Request, c caller) {
	if a.o.StartTask == nil {
		writeError(w, http.StatusNotImplemented, "AI tasks are not enabled")
		return
	}
	var in struct {
		TaskType string          `json:"taskType"`
		Params   json.RawMessage `json:"params"`
	}
	if !decode(w, r, &in) {
		return
	}
	if in.TaskType == "" {
		writeError(w, http.StatusBadRequest, "taskType is required")
		return
	}
	if len(in.Params) == 0 {
		in.Params = json.RawMessage(`{}`)
	}
	id, err := a.o.StartTask(r.Context(), c.user, c.team, in.TaskType, in.Params)
	if err != nil {
		writeError(w, http.StatusBadRequest, "start task: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"taskId": id})
}

// readBody decodes a JSON object body and returns it with its keys, each
// of which must be writable.
func readBody(w http.ResponseWriter, r *http.Request, writable []string) ([]byte, []string, bool) {
	var m map[string]json.RawMessage
	if !decode(w, r, &m) {
		return nil, nil, false
	}
	cols := make([]string, 0, len(m))
	for k := range m {
		if !slices.Contains(writable, k) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s cannot be written; writable: %s", k, strings.Join(writable, ", ")))
			return nil, nil, false
		}
		cols = append(cols, k)
	}
	slices.Sort(cols)
	b, _ := json.Marshal(m)
	return b, cols, true
}

// decode reads a JSON body of at most 64 KiB into v, or answers 400.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "id must be a positive integer: "+r.PathValue("id"))
		return 0, false
	}
	return id, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b []byte
	if raw, ok := v.(json.RawMessage); ok {
		b = raw
	} else {
		b, _ = json.Marshal(v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// ident quotes a table or column name; every one comes from entities().
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func identList(cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = ident(c)
	}
	return out
}

func prefixed(prefix string, items []string) string {
	var b strings.Builder
	for _, it := range items {
		b.WriteString(prefix)
		b.WriteString(it)
	}
	return b.String()
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
