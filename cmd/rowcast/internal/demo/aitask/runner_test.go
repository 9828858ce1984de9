package aitask_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/aitask"
	"github.com/rowcast/rowcast/relay/pgtest"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

var pg pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }

// crmPool returns a pool on a fresh demo CRM database with rowcast installed.
func crmPool(t *testing.T) *pgxpool.Pool {
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
	plan, err := triggers.Render(crm.Tables(), triggers.Options{Notify: true})
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
	return pool
}

// taskRow is what the runner left in ai_tasks.
type taskRow struct {
	Status, Message, Error string
	Progress               int
	Result                 string
	Started, Completed     bool
}

func loadTask(t *testing.T, pool *pgxpool.Pool, id string) taskRow {
	t.Helper()
	var r taskRow
	err := pool.QueryRow(t.Context(), `select status, coalesce(message, ''), coalesce(error, ''), progress,
		coalesce(result::text, ''), started_at is not null, completed_at is not null from ai_tasks where id = $1::uuid`, id).
		Scan(&r.Status, &r.Message, &r.Error, &r.Progress, &r.Result, &r.Started, &r.Completed)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCreateEscrow(t *testing.T) {
	pool := crmPool(t)
	ctx := t.Context()
	var listing int64
	if err := pool.QueryRow(ctx, `insert into listings (team_id, mls_number, street_address, city, state, zip_code, list_price)
		values (1, 'MLS-7', '12 Oak St', 'Austin', 'TX', '78701', 455000) returning id`).Scan(&listing); err != nil {
		t.Fatal(err)
	}
	r := &aitask.Runner{Pool: pool}
	id, err := r.Create(ctx, "2", "1", aitask.CreateEscrow, json.RawMessage(`{"address":"12 oak st, austin, tx 78701","price":450000}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Execute(ctx, id); err != nil {
		t.Fatal(err)
	}
	var e struct {
		id, team, listing, updatedBy                     int64
		street, city, state, zip, price, earnest, taskID string
	}
	err = pool.QueryRow(ctx, `select id, team_id, listing_id, updated_by, property_address, city, state, zip_code,
		purchase_price::text, earnest_money::text, details->>'taskId' from escrows`).
		Scan(&e.id, &e.team, &e.listing, &e.updatedBy, &e.street, &e.city, &e.state, &e.zip, &e.price, &e.earnest, &e.taskID)
	if err != nil {
		t.Fatal(err)
	}
	if e.team != 1 || e.listing != listing || e.updatedBy != 2 || e.street != "12 oak st" || e.city != "austin" ||
		e.state != "TX" || e.zip != "78701" || e.price != "450000.00" || e.earnest != "4500.00" || e.taskID != id {
		t.Errorf("escrow %+v", e)
	}
	got := loadTask(t, pool, id)
	want := taskRow{Status: "completed", Message: "Escrow created", Progress: 100, Result: `{"escrowId": "` + itoa(e.id) + `"}`,
		Started: true, Completed: true}
	if got != want {
		t.Errorf("task %+v, want %+v", got, want)
	}
	// A finished task is not run again.
	if err := r.Execute(ctx, id); err == nil {
		t.Error("a completed task ran again")
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestImportLeads(t *testing.T) {
	pool := crmPool(t)
	ctx := t.Context()
	r := &aitask.Runner{Pool: pool}
	id, err := r.Create(ctx, "5", "2", aitask.ImportLeads,
		json.RawMessage(`{"csv":"first_name,last_name,email,phone\nMaya,Chen,maya@example.com,555-0100\nNoah,,noah@example.com,\n"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Execute(ctx, id); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `select team_id, first_name, coalesce(last_name, '-'), email, coalesce(phone, '-'), source, updated_by
		from leads order by id`)
	if err != nil {
		t.Fatal(err)
	}
	type lead struct {
		team                              int64
		first, last, email, phone, source string
		by                                int64
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (lead, error) {
		var l lead
		err := row.Scan(&l.team, &l.first, &l.last, &l.email, &l.phone, &l.source, &l.by)
		return l, err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []lead{{2, "Maya", "Chen", "maya@example.com", "555-0100", "csv_import", 5}, {2, "Noah", "-", "noah@example.com", "-", "csv_import", 5}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("leads %+v, want %+v", got, want)
	}
	if task := loadTask(t, pool, id); task.Status != "completed" || task.Result != `{"imported": 2}` || task.Message != "Imported 2 leads" {
		t.Errorf("task %+v", task)
	}
}

func TestBadInputFailsTheTask(t *testing.T) {
	pool := crmPool(t)
	ctx := t.Context()
	r := &aitask.Runner{Pool: pool}
	tests := []struct{ typ, params, reason string }{
		{aitask.ImportLeads, `{"csv":"first_name,email\nA,a@example.com\nB,b@example.com\nC,c@example.com\nD,x\n"}`,
			`row 4: invalid email "x"; no leads were imported`},
		{aitask.ImportLeads, `{"file":"leads.csv"}`, "params: no csv"},
		{aitask.CreateEscrow, `{"address":"Oak St, Austin, TX 78701","price":1}`, `address "Oak St, Austin, TX 78701": no street number`},
	}
	for _, tt := range tests {
		id, err := r.Create(ctx, "1", "1", tt.typ, json.RawMessage(tt.params))
		if err != nil {
			t.Fatal(err)
		}
		err = r.Execute(ctx, id)
		var f *aitask.Failure
		if !errors.As(err, &f) || f.Reason != tt.reason {
			t.Errorf("%s: %v, want the failure %q", tt.params, err, tt.reason)
		}
		if got := loadTask(t, pool, id); got.Status != "failed" || got.Error != tt.reason || !got.Completed {
			t.Errorf("%s: task %+v", tt.params, got)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "select (select count(*) from leads) + (select count(*) from escrows)").Scan(&n); err != nil || n != 0 {
		t.Errorf("failed tasks wrote %d rows (%v)", n, err)
	}
}

func TestCreateRefuses(t *testing.T) {
	pool := crmPool(t)
	r := &aitask.Runner{Pool: pool}
	for _, c := range []struct{ typ, params string }{
		{"summarize", `{}`}, {aitask.ImportLeads, `[]`}, {aitask.ImportLeads, `null`}, {aitask.ImportLeads, `{`},
	} {
		if id, err := r.Create(t.Context(), "1", "1", c.typ, json.RawMessage(c.params)); err == nil {
			t.Errorf("Create(%s, %s) = %s", c.typ, c.params, id)
		}
	}
	var n int
	if err := pool.QueryRow(t.Context(), "select count(*) from ai_tasks").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d tasks recorded (%v)", n, err)
	}
}

// A runner that stops in the middle of a step records that the task was
// cancelled, even though its context has ended.
func TestCancelledTaskIsFailed(t *testing.T) {
	pool := crmPool(t)
	ctx := t.Context()
	// Each commit that touches a captured table rings the doorbell: it tells
	// when the first step is committed, and the runner in its hour-long work.
	listener, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Release()
	if _, err := listener.Exec(ctx, "listen rowcast"); err != nil {
		t.Fatal(err)
	}
	r := &aitask.Runner{Pool: pool, StepDelay: time.Hour}
	id, err := r.Create(ctx, "1", "1", aitask.CreateEscrow, json.RawMessage(`{"address":"12 Oak St, Austin, TX 78701","price":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listener.Conn().WaitForNotification(ctx); err != nil { // task_start
		t.Fatal(err)
	}
	run, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Execute(run, id) }()
	if _, err := listener.Conn().WaitForNotification(ctx); err != nil { // progress 10
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("execute: %v, want context.Canceled", err)
	}
	if got := loadTask(t, pool, id); got.Status != "failed" || got.Error != "cancelled: the runner stopped" || got.Progress != 10 {
		t.Errorf("task %+v", got)
	}
}
