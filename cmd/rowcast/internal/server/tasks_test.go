package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/aitask"
)

// taskData is the data of an ai:task:* event.
type taskData struct {
	TaskID    string          `json:"taskId"`
	TaskType  string          `json:"taskType"`
	Progress  *int            `json:"progress"`
	Message   *string         `json:"message"`
	Result    json.RawMessage `json:"result"`
	Error     string          `json:"error"`
	Timestamp string          `json:"timestamp"`
}

func (f frame) task(t testing.TB) taskData {
	t.Helper()
	var d taskData
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatalf("task event data: %v (%s)", err, f.Raw)
	}
	return d
}

func isTaskEvent(f frame) bool { return f.Type == "event" && strings.HasPrefix(f.Event, "ai:task:") }

func isTaskEnd(f frame) bool {
	return f.Type == "event" && (f.Event == "ai:task:completed" || f.Event == "ai:task:failed")
}

// untilTasksEnd reads frames until every task of ids has sent completed or
// failed, and returns all frames read.
func untilTasksEnd(c *client, ids ...string) []frame {
	c.t.Helper()
	open := map[string]bool{}
	for _, id := range ids {
		open[id] = true
	}
	var got []frame
	for len(open) > 0 {
		f := c.next()
		got = append(got, f)
		if isTaskEnd(f) {
			delete(open, f.task(c.t).TaskID)
		}
	}
	return got
}

// checkTrace checks the ai:task:* events of one task in the frames: started
// first, then progress events whose progress strictly increases, then one
// completed or failed (wantEnd) last. It returns the task's events.
func checkTrace(t testing.TB, frames []frame, id, wantEnd string, minProgress int) []frame {
	t.Helper()
	var evs []frame
	for _, f := range frames {
		if isTaskEvent(f) && f.task(t).TaskID == id {
			evs = append(evs, f)
		}
	}
	var names []string
	for _, f := range evs {
		names = append(names, f.Event)
	}
	if len(evs) < 2+minProgress || evs[0].Event != "ai:task:started" || evs[len(evs)-1].Event != wantEnd {
		t.Fatalf("task %s: events %v, want started, at least %d progress, %s", id, names, minProgress, wantEnd)
	}
	last := -1
	for _, f := range evs[1 : len(evs)-1] {
		d := f.task(t)
		if f.Event != "ai:task:progress" || d.Progress == nil {
			t.Fatalf("task %s: between started and the end: %s", id, f.Raw)
		}
		if *d.Progress <= last {
			t.Errorf("task %s: progress %d after %d: %v", id, *d.Progress, last, names)
		}
		last = *d.Progress
		if d.Message == nil || *d.Message == "" {
			t.Errorf("task %s: progress without a message: %s", id, f.Raw)
		}
	}
	return evs
}

const goodEscrow = `{"address":"12 Oak St, Austin, TX 78701","price":450000}`

func TestAITaskEndToEnd(t *testing.T) {
	e := startRelay(t, nil)
	ctx := context.Background()
	owner := []*client{e.connect(userToken(t, "1", 1)), e.connect(userToken(t, "1", 1))}
	mate := e.connect(userToken(t, "2", 1))

	r := &aitask.Runner{Pool: e.db}
	id, err := r.Create(ctx, "1", "1", aitask.CreateEscrow, json.RawMessage(goodEscrow))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Execute(ctx, id); err != nil {
		t.Fatalf("execute: %v", err)
	}
	var escrowID string
	if err := e.db.QueryRow(ctx, "select id::text from escrows where team_id = 1 and property_address = '12 Oak St'").Scan(&escrowID); err != nil {
		t.Fatal(err)
	}

	for i, c := range owner {
		frames := untilTasksEnd(c, id)
		evs := checkTrace(t, frames, id, "ai:task:completed", 3)
		if d := evs[0].task(t); d.TaskType != aitask.CreateEscrow || d.Message == nil ||
			*d.Message != "Creating an escrow for 12 Oak St, Austin, TX 78701" || d.Timestamp == "" {
			t.Errorf("session %d: started: %s", i, evs[0].Raw)
		}
		done := evs[len(evs)-1]
		if want := `{"taskId":"` + id + `","result":{"escrowId":"` + escrowID + `"},"message":"Escrow created","timestamp":`; !strings.HasPrefix(string(done.Data), want) {
			t.Errorf("session %d: completed\n got %s\nwant %s…", i, done.Data, want)
		}
		// The owner is on the team too, so it sees the escrow the task created.
		var created bool
		for _, f := range frames {
			created = created || f.Event == "escrow:created" && f.data()["entityId"] == escrowID
		}
		if !created {
			t.Errorf("session %d: no escrow:created among %d frames", i, len(frames))
		}
	}

	// The teammate gets the escrow, written as the task's user and request,
	// and none of the task's events.
	f := mate.next()
	if f.Event != "escrow:created" {
		t.Fatalf("teammate: want escrow:created first, got %s", f.Raw)
	}
	d := f.data()
	row, _ := d["escrow"].(map[string]any)
	if d["entityId"] != escrowID || d["userId"] != "1" || d["requestId"] != "ai-task:"+id ||
		row["purchase_price"] != 450000.0 || row["state"] != "TX" || row["zip_code"] != "78701" || row["updated_by"] != 1.0 {
		t.Errorf("teammate: escrow:created %s", f.Raw)
	}
	e.exec("insert into leads (team_id, first_name) values (1, 'marker')")
	if f := mate.next(); f.Event != "lead:created" {
		t.Errorf("teammate: want the marker lead next, got %s", f.Raw)
	}
}

func TestAITaskFails(t *testing.T) {
	e := startRelay(t, nil)
	ctx := context.Background()
	c := e.connect(userToken(t, "4", 2))
	r := &aitask.Runner{Pool: e.db}
	cases := []struct {
		name, typ, params string
		progress          int // progress events before the failure
		err               string
	}{
		{"address without a street number", aitask.CreateEscrow,
			`{"address":"Oak St, Austin, TX 78701","price":450000}`, 1,
			`address "Oak St, Austin, TX 78701": no street number`},
		{"address without state and zip", aitask.CreateEscrow,
			`{"address":"12 Oak St, Austin","price":450000}`, 1,
			`address "12 Oak St, Austin": no state and zip code`},
		{"csv row with a bad email", aitask.ImportLeads,
			`{"csv":"first_name,last_name,email\nMaya,Chen,maya@example.com\nNoah,Kim,noah@example.com\nIvy,,ivy@example.com\nZoe,Silva,x\nTheo,Novak,theo@example.com\n"}`,
			4, `row 4: invalid email "x"; no leads were imported`},
		{"csv row with a missing field", aitask.ImportLeads,
			`{"csv":"first_name,last_name,email\nMaya,Chen,maya@example.com\nNoah,noah@example.com\n"}`,
			2, `row 2: 2 fields, want 3; no leads were imported`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			id, err := r.Create(ctx, "4", "2", tc.typ, json.RawMessage(tc.params))
			if err != nil {
				t.Fatal(err)
			}
			err = r.Execute(ctx, id)
			var f *aitask.Failure
			if !errors.As(err, &f) || f.Reason != tc.err {
				t.Fatalf("execute: %v, want the failure %q", err, tc.err)
			}
			frames := untilTasksEnd(c, id)
			evs := checkTrace(t, frames, id, "ai:task:failed", tc.progress)
			if len(evs) != 2+tc.progress {
				t.Errorf("%d events, want started, %d progress, failed", len(evs), tc.progress)
			}
			if got, want := string(evs[len(evs)-1].Data), `{"taskId":"`+id+`","error":`+jsonString(tc.err)+`,"timestamp":`; !strings.HasPrefix(got, want) {
				t.Errorf("failed\n got %s\nwant %s…", got, want)
			}
			if len(frames) != len(evs) {
				t.Errorf("a failed task wrote to the team: %d frames, %d of them the task's", len(frames), len(evs))
			}
		})
	}
	var n int
	if err := e.db.QueryRow(ctx, "select (select count(*) from escrows) + (select count(*) from leads where source = 'csv_import')").Scan(&n); err != nil || n != 0 {
		t.Errorf("failed tasks left %d rows (%v)", n, err)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestAITasksOfThreeUsersAtOnce(t *testing.T) {
	e := startRelay(t, nil)
	ctx := context.Background()
	type user struct {
		id   string
		team int
	}
	users := []user{{"1", 1}, {"2", 1}, {"4", 2}}
	sessions := map[string]*client{}
	for _, u := range users {
		sessions[u.id] = e.connect(userToken(t, u.id, u.team))
	}
	jobs := []struct{ typ, params, end string }{
		{aitask.CreateEscrow, goodEscrow, "ai:task:completed"},
		{aitask.ImportLeads, `{"csv":"first_name,email\nA,a@example.com\nB,b@example.com\nC,c@example.com"}`, "ai:task:completed"},
		{aitask.CreateEscrow, `{"address":"Oak St, Austin, TX 78701","price":1}`, "ai:task:failed"},
		{aitask.ImportLeads, `{"csv":"first_name,email\nA,a@example.com\nB,nope"}`, "ai:task:failed"},
	}

	r := &aitask.Runner{Pool: e.db}
	owner := map[string]string{} // task id → user id
	wantEnd := map[string]string{}
	var dones []<-chan error
	for i := range 10 {
		u, job := users[i%len(users)], jobs[i%len(jobs)]
		id, done, err := r.Start(ctx, u.id, fmt.Sprint(u.team), job.typ, json.RawMessage(job.params))
		if err != nil {
			t.Fatal(err)
		}
		owner[id], wantEnd[id] = u.id, job.end
		dones = append(dones, done)
	}
	for _, done := range dones {
		if err := <-done; err != nil && !errors.As(err, new(*aitask.Failure)) {
			t.Errorf("execute: %v", err)
		}
	}

	// Each session is read in turn: what the others receive meanwhile waits
	// in their queues.
	for _, u := range users {
		var mine []string
		for id, o := range owner {
			if o == u.id {
				mine = append(mine, id)
			}
		}
		c := sessions[u.id]
		frames := untilTasksEnd(c, mine...)
		// A marker written after every task ended: whatever arrives before
		// it is checked too.
		e.exec("insert into notes (team_id, entity_type, entity_id, body) values ($1, 'marker', 0, $2)", u.team, u.id)
		for {
			f := c.next()
			frames = append(frames, f)
			if f.Event == "note:created" && f.data()["note"].(map[string]any)["body"] == u.id {
				break
			}
		}
		for _, f := range frames {
			if isTaskEvent(f) && owner[f.task(t).TaskID] != u.id {
				t.Errorf("user %s received an event of a task of user %q: %s", u.id, owner[f.task(t).TaskID], f.Raw)
			}
		}
		for _, id := range mine {
			checkTrace(t, frames, id, wantEnd[id], 1)
		}
	}
}

func TestAITaskResumeInTheMiddle(t *testing.T) {
	e := startRelay(t, nil)
	ctx := context.Background()
	tok := userToken(t, "1", 1)
	c := e.connect(tok)

	// Hold the task at its last step: its escrow insert waits for this lock.
	lock, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, "lock table escrows in share mode"); err != nil {
		t.Fatal(err)
	}
	r := &aitask.Runner{Pool: e.db}
	id, done, err := r.Start(ctx, "1", "1", aitask.CreateEscrow, json.RawMessage(goodEscrow))
	if err != nil {
		t.Fatal(err)
	}
	c.event("ai:task:started")
	if p := c.event("ai:task:progress").task(t); *p.Progress != 10 {
		t.Fatalf("first progress %d", *p.Progress)
	}
	if p := c.event("ai:task:progress").task(t); *p.Progress != 30 {
		t.Fatalf("second progress %d", *p.Progress)
	}
	pos := c.last
	c.drop()

	if err := lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("execute: %v", err)
	}
	c2, err := e.dial(tok, "since="+pos, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := c2.next(); w.Type != "welcome" {
		t.Fatalf("want welcome, got %s", w.Raw)
	}
	for _, want := range []int{60, 85} {
		if p := c2.event("ai:task:progress").task(t); p.TaskID != id || *p.Progress != want {
			t.Fatalf("replayed progress %d of %s, want %d of %s", *p.Progress, p.TaskID, want, id)
		}
	}
	// The escrow and the completion commit together; both are replayed.
	got := map[string]bool{}
	for range 2 {
		got[c2.next().Event] = true
	}
	if !got["escrow:created"] || !got["ai:task:completed"] {
		t.Fatalf("after the progress: %v, want escrow:created and ai:task:completed", got)
	}
	if f := c2.next(); f.Type != "resumed" || f.Replayed != 4 || f.Position != c2.last {
		t.Fatalf("want resumed after 4 replayed events, got %s", f.Raw)
	}
}

// startTask starts a task of user 1 in team 1 through the SQL helper.
func startTask(t *testing.T, e *env) string {
	t.Helper()
	var id string
	err := e.db.QueryRow(context.Background(),
		"select rowcast.task_start('1', '1', 'summarize', '{}', 'Queued')::text").Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAITaskProgressNeverGoesBackwards(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "1", 1))
	id := startTask(t, e)
	c.event("ai:task:started")
	for _, p := range []int{50, 30, 60} {
		e.exec("update ai_tasks set progress = $2 where id = $1", id, p)
	}
	for _, want := range []int{50, 50, 60} {
		if p := c.event("ai:task:progress").task(t); *p.Progress != want {
			t.Errorf("progress %d, want %d", *p.Progress, want)
		}
	}
	e.exec("update ai_tasks set status = 'completed', progress = 100, result = '{\"ok\":true}' where id = $1", id)
	if d := c.event("ai:task:completed").task(t); string(d.Result) != `{"ok":true}` {
		t.Errorf("completed result %s", d.Result)
	}
}

// Every step a runner writes inside one transaction reaches the user at that
// transaction's commit, together (the reason the helpers are called each in
// a transaction of its own).
func TestAITaskStepsInOneTransactionArriveAtCommit(t *testing.T) {
	e := startRelay(t, nil)
	ctx := context.Background()
	c := e.connect(userToken(t, "1", 1))
	id := startTask(t, e)
	c.event("ai:task:started")

	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, q := range []string{
		"select rowcast.task_progress($1::uuid, 40, 'Reading')",
		"select rowcast.task_progress($1::uuid, 80, 'Writing')",
		`select rowcast.task_complete($1::uuid, '{"n":2}', 'Done')`,
	} {
		if _, err := tx.Exec(ctx, q, id); err != nil {
			t.Fatal(err)
		}
	}
	// A change committed meanwhile arrives first: the steps wait for their commit.
	e.exec("insert into leads (team_id, first_name) values (1, 'meanwhile')")
	c.event("lead:created")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"40 Reading", "80 Writing"} {
		p := c.event("ai:task:progress").task(t)
		if got := fmt.Sprint(*p.Progress, " ", *p.Message); got != want {
			t.Errorf("progress %q, want %q", got, want)
		}
	}
	if d := c.event("ai:task:completed").task(t); string(d.Result) != `{"n":2}` || *d.Message != "Done" {
		t.Errorf("completed %+v", d)
	}
}
