package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay"
)

// The leak test's world: teams 1 to leakTeams, users 1 to leakUsers (user u
// never leaves its home team u, so no session closes with 4403), and an
// observer user, leakGod, member of every team for the whole run, whose
// sessions see every team event in commit order.
const (
	leakTeams = 10
	leakUsers = 6
	leakGod   = "99"
	// leakPerUser sessions per user and transport.
	leakPerUser = 5
	// leakReadTimeout bounds the wait for any one frame.
	leakReadTimeout = 60 * time.Second
	// leakFinalTimeout bounds the wait, once the writers stopped, for every
	// session to receive the final markers of its teams.
	leakFinalTimeout = 2 * time.Minute
	// leakLagTimeout bounds the wait for the other sessions' final markers
	// once the observer's /ws session has every team's.
	leakLagTimeout = time.Minute
)

// TestLeakOracle: 60 sessions (6 users, 10 teams, both transports, all
// live before the first write) and two observer sessions of a user in
// every team, while concurrent writers make random transactions of
// inserts, updates, deletes and team moves over every captured table (some
// rolled back) and the membership table (auth.membership, database mode)
// changes under them. Each membership change is followed, in its
// transaction, by a marker lead in the team, so the observer's ordered
// stream says where it sits. The observer's stream is checked against what
// the writers committed (every row's events, in order); then each session
// must receive exactly the observer's events its user's membership allowed
// at each event's position (as it evolves along the stream), with forbidden
// at each leave in its place, plus exactly its user's AI task events, in
// position order, and nothing else. The run ends with a final marker in
// every team, which each session waits for.
//
// 10,000 entity statements in trigger mode; ROWCAST_FAULT_LONG=1 also
// runs logical mode and 30,000 statements.
func TestLeakOracle(t *testing.T) {
	statements, modes := 10000, []string{config.ModeTrigger}
	if os.Getenv("ROWCAST_FAULT_LONG") != "" {
		statements, modes = 30000, []string{config.ModeTrigger, config.ModeLogical}
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { runLeakOracle(t, mode, statements) })
	}
}

// leakItem is one thing a session received (or should receive): an event
// (name, entityId or taskId, teamId) at its position, or a forbidden
// (name "forbidden", the team left; on Socket.IO with its offset).
type leakItem struct {
	pos  relay.Pos
	name string
	id   string
	team string
	lead string // a created lead's first_name (markers)
}

func (it leakItem) String() string {
	if it.name == "forbidden" {
		return fmt.Sprintf("forbidden team %s (%d.%d.%d)", it.team, it.pos.Tick, it.pos.Tx, it.pos.ID)
	}
	return fmt.Sprintf("%s id %s team %s at %d.%d.%d", it.name, it.id, it.team, it.pos.Tick, it.pos.Tx, it.pos.ID)
}

func (it leakItem) ai() bool { return strings.HasPrefix(it.name, "ai:task:") }

// same compares two items of the team sequence: events by position, name,
// id and team; forbidden by team (its place is checked by the sequence, its
// Socket.IO offset by offsetOK).
func (it leakItem) same(w leakItem) bool {
	if it.name == "forbidden" || w.name == "forbidden" {
		return it.name == w.name && it.team == w.team
	}
	return it.pos == w.pos && it.name == w.name && it.id == w.id && it.team == w.team
}

// leakData is what the oracle reads of an event's data (or a Socket.IO
// error event's).
type leakData struct {
	EntityID string `json:"entityId"`
	TeamID   string `json:"teamId"`
	TaskID   string `json:"taskId"`
	Code     string `json:"code"`
	Lead     *struct {
		FirstName string `json:"first_name"`
	} `json:"lead"`
}

func leakEvent(name, position string, data []byte) (leakItem, error) {
	p, err := relay.ParsePosition(position)
	if err != nil {
		return leakItem{}, fmt.Errorf("event %s: %w", name, err)
	}
	var d leakData
	if err := json.Unmarshal(data, &d); err != nil {
		return leakItem{}, fmt.Errorf("event %s data %s: %w", name, data, err)
	}
	it := leakItem{pos: p.Pos, name: name, id: d.EntityID, team: d.TeamID}
	if it.ai() {
		it.id, it.team = d.TaskID, ""
	}
	if d.Lead != nil {
		it.lead = d.Lead.FirstName
	}
	return it, nil
}

// leakSession is one session and what its reader goroutine received.
type leakSession struct {
	user  string
	label string
	plain *client
	sio   *websocket.Conn
	// want is the number of final markers to wait for (the user's teams at
	// the end), 0 until the writers stopped.
	want   *atomic.Int64
	finals atomic.Int64

	items []leakItem // the reader's until done is closed
	err   error
	done  chan struct{}
}

func (s *leakSession) read() {
	defer close(s.done)
	for {
		it, err := s.next()
		if err != nil {
			s.err = err
			return
		}
		s.items = append(s.items, it)
		if it.name == "lead:created" && strings.HasPrefix(it.lead, "final ") {
			if n, w := s.finals.Add(1), s.want.Load(); w > 0 && n >= w {
				return
			}
		}
	}
}

func (s *leakSession) next() (leakItem, error) {
	if s.plain != nil {
		f, err := s.plain.conn.NextWithin(leakReadTimeout)
		if err != nil {
			return leakItem{}, err
		}
		switch {
		case f.Type == "event":
			return leakEvent(f.Event, f.Position, f.Data)
		case f.Type == "error" && f.Code == "forbidden":
			var d leakData
			_ = json.Unmarshal(f.Raw, &d)
			return leakItem{name: "forbidden", team: d.TeamID}, nil
		}
		return leakItem{name: "frame " + string(f.Raw)}, nil
	}
	for {
		_ = s.sio.SetReadDeadline(time.Now().Add(leakReadTimeout))
		_, b, err := s.sio.ReadMessage()
		if err != nil {
			return leakItem{}, err
		}
		if string(b) == "2" {
			if err := s.sio.WriteMessage(websocket.TextMessage, []byte("3")); err != nil {
				return leakItem{}, err
			}
			continue
		}
		var args []json.RawMessage
		var name, offset string
		if !strings.HasPrefix(string(b), "42") || json.Unmarshal(b[2:], &args) != nil || len(args) != 3 ||
			json.Unmarshal(args[0], &name) != nil || json.Unmarshal(args[2], &offset) != nil {
			return leakItem{name: "frame " + string(b)}, nil
		}
		if name != "error" {
			return leakEvent(name, offset, args[1])
		}
		var d leakData
		_ = json.Unmarshal(args[1], &d)
		p, err := relay.ParsePosition(offset)
		if d.Code != "forbidden" || err != nil {
			return leakItem{name: "frame " + string(b)}, nil
		}
		return leakItem{name: "forbidden", team: d.TeamID, pos: p.Pos}, nil
	}
}

// leakTable is a team-scoped table of the demo CRM as the writers use it:
// an insert taking ($1 team, $2 text, $3 actor) and returning the id, and
// a text column that updates set.
type leakTable struct {
	table, entity, insert, column string
}

var leakTables = []leakTable{
	{"escrows", "escrow", "insert into escrows (team_id, property_address, city, state, zip_code, purchase_price, updated_by) values ($1, $2, 'Austin', 'TX', '78701', 100000, $3) returning id::text", "notes"},
	{"listings", "listing", "insert into listings (team_id, street_address, city, state, zip_code, list_price, updated_by) values ($1, $2, 'Austin', 'TX', '78701', 250000, $3) returning id::text", "city"},
	{"clients", "client", "insert into clients (team_id, first_name, last_name, updated_by) values ($1, $2, 'Doe', $3) returning id::text", "phone"},
	{"appointments", "appointment", "insert into appointments (team_id, title, starts_at, updated_by) values ($1, $2, now(), $3) returning id::text", "location"},
	{"leads", "lead", "insert into leads (team_id, first_name, updated_by) values ($1, $2, $3) returning id::text", "last_name"},
	{"notes", "note", "insert into notes (team_id, entity_type, entity_id, body, updated_by) values ($1, 'lead', 0, $2, $3) returning id::text", "body"},
}

// leakRows is one writer's rows of one table and their teams.
type leakRows struct {
	team map[string]int
	ids  []string
}

func (r *leakRows) add(id string, team int) {
	r.team[id] = team
	r.ids = append(r.ids, id)
}

func (r *leakRows) remove(id string) {
	delete(r.team, id)
	i := slices.Index(r.ids, id)
	r.ids[i] = r.ids[len(r.ids)-1]
	r.ids = r.ids[:len(r.ids)-1]
}

// leakTask is an AI task as its writer left it.
type leakTask struct {
	user     int
	progress int
	done     bool
}

// leakExpect is one event a committed statement makes: on a team's stream
// (team set) or on a user's (an AI task's).
type leakExpect struct {
	name, id string
	team     int
	user     int
}

// leakWriter makes random transactions over its own rows (so writers never
// wait for each other); with members set it also changes the membership
// table, which it alone writes.
type leakWriter struct {
	n     int
	rng   *rand.Rand
	rows  []leakRows
	tasks map[string]*leakTask
	tids  []string
	seq   int
	// members[u][team], users 1..leakUsers; nil for entity-only writers.
	members []map[int]bool
	markers int

	undo []func()
	txn  []leakExpect
	log  []leakExpect // committed, in commit order
}

func newLeakWriter(n int, seed uint64, members []map[int]bool) *leakWriter {
	w := &leakWriter{n: n, rng: rand.New(rand.NewPCG(seed, uint64(n))), tasks: map[string]*leakTask{}, members: members}
	for range leakTables {
		w.rows = append(w.rows, leakRows{team: map[string]int{}})
	}
	return w
}

func (w *leakWriter) value() string {
	w.seq++
	return fmt.Sprintf("w%d-%d", w.n, w.seq)
}

// actor is the updated_by of a write: any user, or none.
func (w *leakWriter) actor() any {
	if i := w.rng.IntN(leakUsers + 2); i < leakUsers {
		return int64(i + 1)
	} else if i == leakUsers {
		return int64(99)
	}
	return nil
}

func (w *leakWriter) otherTeam(team int) int {
	t := 1 + w.rng.IntN(leakTeams-1)
	if t >= team {
		t++
	}
	return t
}

func (w *leakWriter) expect(name, id string, team, user int) {
	w.txn = append(w.txn, leakExpect{name: name, id: id, team: team, user: user})
}

// run makes transactions until left (entity statements committed, shared
// by all writers) runs out.
func (w *leakWriter) run(ctx context.Context, db *pgxpool.Pool, left *atomic.Int64) error {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for left.Load() > 0 {
		k := 1 + w.rng.IntN(8)
		rollback := w.rng.IntN(10) == 0
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		w.undo, w.txn = w.undo[:0], w.txn[:0]
		var memberAt []int
		if w.members != nil {
			memberAt = append(memberAt, w.rng.IntN(k+1))
			if w.rng.IntN(3) == 0 {
				memberAt = append(memberAt, w.rng.IntN(k+1))
			}
		}
		for i := 0; i <= k; i++ {
			for _, at := range memberAt {
				if at == i {
					if err := w.membership(ctx, tx); err != nil {
						_ = tx.Rollback(ctx)
						return err
					}
				}
			}
			if i == k {
				break
			}
			if err := w.statement(ctx, tx); err != nil {
				_ = tx.Rollback(ctx)
				return err
			}
		}
		if rollback {
			if err := tx.Rollback(ctx); err != nil {
				return err
			}
			for i := len(w.undo) - 1; i >= 0; i-- {
				w.undo[i]()
			}
			continue
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		w.log = append(w.log, w.txn...)
		left.Add(-int64(k))
	}
	return nil
}

func exec1(ctx context.Context, tx pgx.Tx, sql string, args ...any) error {
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%s %v: %d rows, want 1", sql, args, tag.RowsAffected())
	}
	return nil
}

// statement makes one random entity statement.
func (w *leakWriter) statement(ctx context.Context, tx pgx.Tx) error {
	ti := w.rng.IntN(len(leakTables) + 1)
	if ti == len(leakTables) {
		return w.task(ctx, tx)
	}
	tb, rows := leakTables[ti], &w.rows[ti]
	op := w.rng.IntN(100)
	if len(rows.ids) == 0 || op < 25 {
		team := 1 + w.rng.IntN(leakTeams)
		var id string
		if err := tx.QueryRow(ctx, tb.insert, team, w.value(), w.actor()).Scan(&id); err != nil {
			return fmt.Errorf("%s: %w", tb.insert, err)
		}
		rows.add(id, team)
		w.undo = append(w.undo, func() { rows.remove(id) })
		w.expect(tb.entity+":created", id, team, 0)
		return nil
	}
	id := rows.ids[w.rng.IntN(len(rows.ids))]
	team := rows.team[id]
	switch {
	case op < 65:
		sql := fmt.Sprintf("update %s set %s = $2, updated_by = $3, updated_at = clock_timestamp() where id = $1", tb.table, tb.column)
		if err := exec1(ctx, tx, sql, id, w.value(), w.actor()); err != nil {
			return err
		}
		w.expect(tb.entity+":updated", id, team, 0)
	case op < 85:
		to := w.otherTeam(team)
		sql := fmt.Sprintf("update %s set team_id = $2, %s = $3 where id = $1", tb.table, tb.column)
		if err := exec1(ctx, tx, sql, id, to, w.value()); err != nil {
			return err
		}
		rows.team[id] = to
		w.undo = append(w.undo, func() { rows.team[id] = team })
		w.expect(tb.entity+":deleted", id, team, 0)
		w.expect(tb.entity+":created", id, to, 0)
	default:
		if err := exec1(ctx, tx, fmt.Sprintf("delete from %s where id = $1", tb.table), id); err != nil {
			return err
		}
		rows.remove(id)
		w.undo = append(w.undo, func() { rows.add(id, team) })
		w.expect(tb.entity+":deleted", id, team, 0)
	}
	return nil
}

// task makes one random AI task statement: a task is started, makes
// progress, completes or fails; team moves and deletes send nothing.
func (w *leakWriter) task(ctx context.Context, tx pgx.Tx) error {
	op := w.rng.IntN(100)
	if len(w.tids) == 0 || op < 30 {
		user := 1 + w.rng.IntN(leakUsers+1)
		if user > leakUsers {
			user = 99
		}
		var id string
		if err := tx.QueryRow(ctx, "insert into ai_tasks (user_id, team_id, task_type, message) values ($1, $2, 'summarize', $3) returning id::text",
			user, 1+w.rng.IntN(leakTeams), w.value()).Scan(&id); err != nil {
			return err
		}
		w.tasks[id] = &leakTask{user: user}
		w.tids = append(w.tids, id)
		w.undo = append(w.undo, func() {
			delete(w.tasks, id)
			w.tids = slices.DeleteFunc(w.tids, func(s string) bool { return s == id })
		})
		w.expect("ai:task:started", id, 0, user)
		return nil
	}
	id := w.tids[w.rng.IntN(len(w.tids))]
	tk := w.tasks[id]
	old := *tk
	w.undo = append(w.undo, func() { *tk = old })
	switch {
	case op < 40:
		return exec1(ctx, tx, "update ai_tasks set team_id = $2 where id = $1", id, 1+w.rng.IntN(leakTeams))
	case op < 50:
		if err := exec1(ctx, tx, "delete from ai_tasks where id = $1", id); err != nil {
			return err
		}
		i := slices.Index(w.tids, id)
		w.tids = slices.Delete(w.tids, i, i+1)
		delete(w.tasks, id)
		w.undo = append(w.undo, func() { w.tasks[id], w.tids = tk, append(w.tids, id) })
		return nil
	case tk.done:
		return exec1(ctx, tx, "update ai_tasks set message = $2 where id = $1", id, w.value())
	case op < 80 && tk.progress < 90:
		tk.progress += 1 + w.rng.IntN(10)
		if err := exec1(ctx, tx, "update ai_tasks set status = 'running', progress = $2, message = $3 where id = $1", id, tk.progress, w.value()); err != nil {
			return err
		}
		w.expect("ai:task:progress", id, 0, tk.user)
	case op < 90:
		tk.done = true
		if err := exec1(ctx, tx, `update ai_tasks set status = 'completed', result = '{"ok":true}' where id = $1`, id); err != nil {
			return err
		}
		w.expect("ai:task:completed", id, 0, tk.user)
	default:
		tk.done = true
		if err := exec1(ctx, tx, "update ai_tasks set status = 'failed', error = 'boom' where id = $1", id); err != nil {
			return err
		}
		w.expect("ai:task:failed", id, 0, tk.user)
	}
	return nil
}

// membership makes one membership change of a user 1..leakUsers in a team
// other than its home: a join, a leave, or (one in five) an update that
// moves it from one team to another; each followed at once by a marker
// lead in the team, 'marker <user> <team> join|leave <n>'.
func (w *leakWriter) membership(ctx context.Context, tx pgx.Tx) error {
	u := 1 + w.rng.IntN(leakUsers)
	m := w.members[u]
	var in, out []int
	for team := 1; team <= leakTeams; team++ {
		switch {
		case team == u:
		case m[team]:
			in = append(in, team)
		default:
			out = append(out, team)
		}
	}
	set := func(team int, v bool) {
		m[team] = v
		w.undo = append(w.undo, func() { m[team] = !v })
	}
	var changes [][2]any // team, "join" or "leave"
	switch {
	case len(in) > 0 && len(out) > 0 && w.rng.IntN(5) == 0:
		from, to := in[w.rng.IntN(len(in))], out[w.rng.IntN(len(out))]
		if err := exec1(ctx, tx, "update team_members set team_id = $3 where user_id = $1 and team_id = $2", u, from, to); err != nil {
			return err
		}
		set(from, false)
		set(to, true)
		changes = append(changes, [2]any{from, "leave"}, [2]any{to, "join"})
	default:
		team := w.otherTeam(u)
		if m[team] {
			if err := exec1(ctx, tx, "delete from team_members where user_id = $1 and team_id = $2", u, team); err != nil {
				return err
			}
			set(team, false)
			changes = append(changes, [2]any{team, "leave"})
		} else {
			if err := exec1(ctx, tx, "insert into team_members (user_id, team_id) values ($1, $2)", u, team); err != nil {
				return err
			}
			set(team, true)
			changes = append(changes, [2]any{team, "join"})
		}
	}
	for _, c := range changes {
		w.markers++
		name := fmt.Sprintf("marker %d %d %s %d", u, c[0], c[1], w.markers)
		var id string
		if err := tx.QueryRow(ctx, "insert into leads (team_id, first_name) values ($1, $2) returning id::text", c[0], name).Scan(&id); err != nil {
			return err
		}
		w.expect("lead:created", id, c[0].(int), 0)
	}
	return nil
}

func runLeakOracle(t *testing.T, mode string, statements int) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d statements, %s mode", seed, statements, mode)
	rng := rand.New(rand.NewPCG(seed, 0))

	// Membership before the writes: user u in its home team u and two
	// others; the observer in every team.
	members := make([]map[int]bool, leakUsers+1)
	var pairs []string
	for u := 1; u <= leakUsers; u++ {
		members[u] = map[int]bool{u: true}
		for len(members[u]) < 3 {
			members[u][1+rng.IntN(leakTeams)] = true
		}
		for team := range members[u] {
			pairs = append(pairs, fmt.Sprintf("(%d, %d)", u, team))
		}
	}
	for team := 1; team <= leakTeams; team++ {
		pairs = append(pairs, fmt.Sprintf("(%s, %d)", leakGod, team))
	}
	initial := make([]map[int]bool, len(members))
	for u := 1; u <= leakUsers; u++ {
		initial[u] = teamSet(members[u])
	}
	e := startRelay(t, func(c *config.Config) {
		c.Capture.Mode = mode
		withMembership(config.MembershipDatabase)(c)
		// The readers parse every frame under the race detector while the
		// writers run flat out: a slow consumer close (4008) is not what
		// this test looks for.
		c.Sessions.QueueSize = 1 << 20
		c.Sessions.QueueBytes = 1 << 30
	},
		fmt.Sprintf("insert into teams (id, name) select g, 'team ' || g from generate_series(3, %d) g", leakTeams),
		"insert into users (id, email, full_name) values (6, 'fay@summit.example', 'Fay Ito'), (99, 'observer@example', 'Observer')",
		"delete from team_members",
		"insert into team_members (user_id, team_id) values "+strings.Join(pairs, ", "))

	// Every session connects and goes live before the first write.
	wants := map[string]*atomic.Int64{}
	var sessions []*leakSession
	users := []string{leakGod}
	for u := 1; u <= leakUsers; u++ {
		users = append(users, strconv.Itoa(u))
	}
	for _, user := range users {
		wants[user] = &atomic.Int64{}
		n := leakPerUser
		if user == leakGod {
			n = 1
		}
		// The token claims team 1 only: the table's teams count.
		tok := userToken(t, user, 1)
		for i := range n {
			s := &leakSession{user: user, label: fmt.Sprintf("user %s /ws #%d", user, i), want: wants[user], done: make(chan struct{})}
			s.plain = e.connect(tok)
			sessions = append(sessions, s)
			s = &leakSession{user: user, label: fmt.Sprintf("user %s socket.io #%d", user, i), want: wants[user], done: make(chan struct{})}
			s.sio = sioDial(t, e, tok)
			sessions = append(sessions, s)
		}
	}
	for _, s := range sessions {
		go s.read()
	}
	t.Cleanup(func() {
		for _, s := range sessions {
			if s.plain != nil {
				s.plain.drop()
			} else {
				s.sio.Close()
			}
			<-s.done
		}
	})

	// Four writers, the first of which also changes the membership table.
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var left atomic.Int64
	left.Store(int64(statements))
	writers := []*leakWriter{newLeakWriter(0, seed, members)}
	for n := 1; n < 4; n++ {
		writers = append(writers, newLeakWriter(n, seed, nil))
	}
	errs := make(chan error, len(writers))
	for _, w := range writers {
		go func() { errs <- w.run(ctx, e.db, &left) }()
	}
	var werr error
	for range writers {
		if err := <-errs; err != nil && werr == nil {
			werr = err
			cancel() // the others stop too
		}
	}
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	wrote := time.Since(start)

	// The final markers: one in every team, which every session waits for
	// in the teams its user ends with.
	final := &leakWriter{}
	for u := 1; u <= leakUsers; u++ {
		n := 0
		for _, in := range members[u] {
			if in {
				n++
			}
		}
		wants[strconv.Itoa(u)].Store(int64(n))
	}
	wants[leakGod].Store(leakTeams)
	e.tx(func(tx pgx.Tx) error {
		for team := 1; team <= leakTeams; team++ {
			var id string
			if err := tx.QueryRow(ctx, "insert into leads (team_id, first_name) values ($1, $2) returning id::text", team, fmt.Sprintf("final %d", team)).Scan(&id); err != nil {
				return err
			}
			final.expect("lead:created", id, team, 0)
		}
		return nil
	})
	final.log = final.txn
	// The observer has every team: once it has the final markers, every
	// event was published, and the others have theirs within
	// leakLagTimeout.
	var deadline <-chan time.Time
	select {
	case <-sessions[0].done:
		deadline = time.After(leakLagTimeout)
	case <-time.After(leakFinalTimeout):
		deadline = time.After(0)
	}
	for _, s := range sessions {
		select {
		case <-s.done:
			continue
		case <-deadline:
		}
		// Say which sessions wait for what, end them, and compare what
		// they received, which says where their streams went wrong.
		for _, s := range sessions {
			select {
			case <-s.done:
			default:
				t.Errorf("%s: %d of %d final markers in time", s.label, s.finals.Load(), s.want.Load())
				if s.plain != nil {
					s.plain.drop()
				} else {
					s.sio.Close()
				}
				<-s.done
				s.err = nil
			}
		}
		break
	}
	received := 0
	for _, s := range sessions {
		received += len(s.items)
		if s.err != nil {
			t.Errorf("%s: %v after %d items", s.label, s.err, len(s.items))
		}
	}
	t.Logf("%d writers done in %v, every session done after %v; %d frames received",
		len(writers), wrote.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), received)

	checkLeakOracle(t, append(writers, final), initial, sessions)
}

func teamSet(m map[int]bool) map[int]bool {
	c := make(map[int]bool, len(m))
	for k, v := range m {
		if v {
			c[k] = true
		}
	}
	return c
}

// checkLeakOracle compares what each session received with what its scope
// allowed.
func checkLeakOracle(t *testing.T, writers []*leakWriter, initial []map[int]bool, sessions []*leakSession) {
	t.Helper()
	// What the writers committed: each row's events in order (a row has
	// one writer), and each user's AI tasks' events.
	rowsWant := map[string][]string{}
	tasksWant := map[string]map[string][]string{}
	markers, stmts := 0, 0
	for _, w := range writers {
		markers += w.markers
		stmts += len(w.log)
		for _, x := range w.log {
			if x.user != 0 {
				u := strconv.Itoa(x.user)
				if tasksWant[u] == nil {
					tasksWant[u] = map[string][]string{}
				}
				tasksWant[u][x.id] = append(tasksWant[u][x.id], x.name)
				continue
			}
			key := strings.SplitN(x.name, ":", 2)[0] + " " + x.id
			rowsWant[key] = append(rowsWant[key], x.name+"@"+strconv.Itoa(x.team))
		}
	}

	var god *leakSession
	for _, s := range sessions {
		if s.user == leakGod && s.plain != nil {
			god = s
		}
	}
	// The observer's stream against the writers: every row's events, in
	// order, and nothing else.
	rowsGot := map[string][]string{}
	var teamEvents []leakItem
	for _, it := range god.items {
		if it.ai() {
			continue
		}
		if it.name == "forbidden" || strings.HasPrefix(it.name, "frame ") {
			t.Fatalf("observer: got %s", it)
		}
		key := strings.SplitN(it.name, ":", 2)[0] + " " + it.id
		rowsGot[key] = append(rowsGot[key], it.name+"@"+it.team)
		teamEvents = append(teamEvents, it)
	}
	bad := 0
	for key, want := range rowsWant {
		if got := rowsGot[key]; !slices.Equal(got, want) && bad < 10 {
			bad++
			t.Errorf("observer: %s got %v, want %v", key, got, want)
		}
	}
	for key, got := range rowsGot {
		if _, ok := rowsWant[key]; !ok && bad < 10 {
			bad++
			t.Errorf("observer: %s got %v, written by no one", key, got)
		}
	}
	if bad > 0 {
		t.FailNow()
	}
	t.Logf("observer: %d team events (%d membership markers); %d events committed", len(teamEvents), markers, stmts)

	// Each user's team sequence: the observer's team events filtered by
	// the user's membership as the markers change it, with forbidden at
	// each leave.
	expected := map[string][]leakItem{leakGod: teamEvents}
	for u := 1; u <= leakUsers; u++ {
		in := teamSet(initial[u])
		var seq []leakItem
		for _, it := range teamEvents {
			if f := strings.Fields(it.lead); it.name == "lead:created" && len(f) == 5 && f[0] == "marker" && f[1] == strconv.Itoa(u) {
				team, _ := strconv.Atoi(f[2])
				switch f[3] {
				case "join":
					in[team] = true
				case "leave":
					delete(in, team)
					seq = append(seq, leakItem{name: "forbidden", team: f[2], pos: it.pos})
				}
			}
			if team, _ := strconv.Atoi(it.team); in[team] {
				seq = append(seq, it)
			}
		}
		expected[strconv.Itoa(u)] = seq
	}

	for _, s := range sessions {
		checkLeakSession(t, s, expected[s.user], tasksWant[s.user])
	}
}

// checkLeakSession checks one session: positions only go forward; its AI
// task events are exactly its user's; its other items are exactly want.
func checkLeakSession(t *testing.T, s *leakSession, want []leakItem, tasks map[string][]string) {
	t.Helper()
	var prev relay.Pos
	var got []leakItem
	tasksGot := map[string][]string{}
	for i, it := range s.items {
		if it.name == "forbidden" && s.plain != nil {
			got = append(got, it)
			continue
		}
		if it.pos.Compare(prev) <= 0 {
			t.Errorf("%s: item %d %s does not come after %d.%d.%d", s.label, i, it, prev.Tick, prev.Tx, prev.ID)
			return
		}
		prev = it.pos
		if it.ai() {
			tasksGot[it.id] = append(tasksGot[it.id], it.name)
			continue
		}
		got = append(got, it)
	}
	for id, names := range tasksGot {
		if !slices.Equal(names, tasks[id]) {
			t.Errorf("%s: AI task %s got %v, want %v (another user's task, or a wrong sequence)", s.label, id, names, tasks[id])
			return
		}
	}
	for id, names := range tasks {
		if _, ok := tasksGot[id]; !ok {
			t.Errorf("%s: AI task %s: none of %v", s.label, id, names)
			return
		}
	}
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			t.Errorf("%s: %d items, want %d; the first missing: %s", s.label, len(got), len(want), want[i])
		case i >= len(want):
			t.Errorf("%s: %d items, want %d; the first extra: %s", s.label, len(got), len(want), got[i])
		case !got[i].same(want[i]):
			t.Errorf("%s: item %d is %s, want %s%s", s.label, i, got[i], want[i], leakContext(got, want, i))
		case got[i].name == "forbidden" && s.sio != nil && got[i].pos.Compare(want[i].pos) >= 0:
			t.Errorf("%s: %s at or after its marker %s", s.label, got[i], want[i])
		default:
			continue
		}
		return
	}
}

// leakContext shows the items before i on both sides, and whether got[i]
// is an event of a team the user was not in then.
func leakContext(got, want []leakItem, i int) string {
	var b strings.Builder
	if g := got[i]; g.name != "forbidden" {
		allowed := slices.ContainsFunc(want, func(w leakItem) bool { return w.same(g) })
		if !allowed {
			b.WriteString(" (a LEAK: the user's scope did not allow it)")
		} else {
			b.WriteString(" (allowed: the item wanted here is missing, or out of place)")
		}
	}
	b.WriteString("; before it:")
	for j := max(0, i-3); j < i; j++ {
		fmt.Fprintf(&b, " [%s]", got[j])
	}
	return b.String()
}

// TestNoClientMessageWidensScope: nothing a client sends widens its scope,
// whether it comes from the token or from the membership table: a
// subscribe naming another team (its stream, its id, one of its rows) on
// /ws, or emitted on Socket.IO, brings none of that team's events; a since
// position (or a Socket.IO offset) taken from another team's session
// replays the session's own teams only; a Socket.IO pid issued to another
// user is not honoured (a fresh session, nothing replayed), whatever team
// that user is in.
func TestNoClientMessageWidensScope(t *testing.T) {
	for _, scope := range []string{"token", "membership"} {
		t.Run(scope, func(t *testing.T) {
			// The demo's team_members: users 2 and 3 in team 1, user 4 in
			// team 2, as their tokens say; with auth.membership user 2's
			// token claims team 2 as well, which the table overrides.
			var tweak func(*config.Config)
			tok2 := userToken(t, "2", 1)
			if scope == "membership" {
				tweak = withMembership(config.MembershipDatabase)
				tok2 = userToken(t, "2", 1, 2)
			}
			e := startRelay(t, tweak)
			tok3, tok4 := userToken(t, "3", 1), userToken(t, "4", 2)
			var ours []string // team 1's leads, in commit order
			lead := func(team int, name string) string {
				t.Helper()
				var id string
				if err := e.db.QueryRow(context.Background(), "insert into leads (team_id, first_name) values ($1, $2) returning id::text", team, name).Scan(&id); err != nil {
					t.Fatal(err)
				}
				if team == 1 {
					ours = append(ours, name)
				}
				return id
			}
			wantLead := func(c *client, name string) frame {
				t.Helper()
				f := c.event("lead:created")
				if d := f.data(); d["teamId"] != "1" || d["lead"].(map[string]any)["first_name"] != name {
					t.Fatalf("got %s, want team 1's lead %s", f.Raw, name)
				}
				return f
			}
			sioWantLead := func(c *websocket.Conn, name string) string {
				t.Helper()
				f := sioRead(t, c)
				var args []json.RawMessage
				var ev, offset string
				if !strings.HasPrefix(f, "42") || json.Unmarshal([]byte(f[2:]), &args) != nil || len(args) != 3 ||
					json.Unmarshal(args[0], &ev) != nil || json.Unmarshal(args[2], &offset) != nil ||
					ev != "lead:created" || !strings.Contains(string(args[1]), `"teamId":"1"`) ||
					!strings.Contains(string(args[1]), `"first_name":"`+name+`"`) {
					t.Fatalf("socket.io got %s, want team 1's lead %s", f, name)
				}
				return offset
			}
			// An earlier Socket.IO session of user 2, for its pid.
			_, reply := sioConnect(t, e, tok2)
			pid2 := sioPID(t, reply)

			// subscribe naming team 2, on both transports.
			theirs := lead(2, "theirs")
			c := e.connect(tok2)
			c.send(`{"type":"subscribe","entities":["lead","team:2","2","lead:` + theirs + `","` + theirs + `"],"teamId":"2","teamIds":["2"],"entityId":"` + theirs + `"}`)
			if f := c.next(); f.Type != "subscribed" {
				t.Fatalf("subscribe: %s", f.Raw)
			}
			s := sioDial(t, e, tok2)
			for _, m := range []string{`42["subscribe",{"entities":["lead"],"teamId":"2","room":"team:2"}]`, `42["join","team:2"]`} {
				if err := s.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			e.exec("update leads set last_name = 'changed' where id = $1", theirs)
			lead(2, "theirs too")
			lead(1, "ours")
			wantLead(c, "ours")
			sioWantLead(s, "ours")

			// since (and offset) from a session of team 2.
			c4 := e.connect(tok4)
			lead(2, "a2")
			forged := c4.event("lead:created").Position
			lead(1, "b1")
			lead(2, "c2")
			lead(1, "d1")
			c4.event("lead:created")
			r, err := e.dial(tok2, "since="+forged, nil)
			if err != nil {
				t.Fatal(err)
			}
			if f := r.next(); f.Type != "welcome" {
				t.Fatalf("first frame %s", f.Raw)
			}
			wantLead(r, "b1")
			wantLead(r, "d1")
			if f := r.next(); f.Type != "resumed" || f.Replayed != 2 {
				t.Fatalf("got %s, want resumed after 2 events", f.Raw)
			}
			rs := sioConnectWith(t, e, map[string]string{"token": tok2, "pid": pid2, "offset": forged})
			sioWantLead(rs, "b1")
			sioWantLead(rs, "d1")
			if pid := sioPID(t, sioRead(t, rs)); pid != pid2 {
				t.Fatalf("recovered with pid %q, want %q", pid, pid2)
			}
			// From the start: team 1's events only.
			all, err := e.dial(tok2, "since="+startPosition(t, e), nil)
			if err != nil {
				t.Fatal(err)
			}
			all.next() // welcome
			for _, name := range ours {
				wantLead(all, name)
			}
			if f := all.next(); f.Type != "resumed" || f.Replayed != len(ours) {
				t.Fatalf("got %s, want resumed after %d events", f.Raw, len(ours))
			}

			// A pid of user 2, with an offset before an event of team 1,
			// presented by user 3 (team 1 too) and by user 4 (team 2).
			victim, reply := sioConnect(t, e, tok2)
			pid := sioPID(t, reply)
			lead(1, "e1")
			offset := sioWantLead(victim, "e1")
			victim.Close()
			fence := e.connect(tok3)
			lead(1, "missed")
			// Published (so before the head any later session starts at).
			wantLead(fence, "missed")
			for _, thief := range []struct{ user, tok string }{{"3", tok3}, {"4", tok4}} {
				th := sioConnectWith(t, e, map[string]string{"token": thief.tok, "pid": pid, "offset": offset})
				reply := sioRead(t, th)
				if !strings.HasPrefix(reply, "40{") || sioPID(t, reply) == pid {
					t.Fatalf("user %s with user 2's pid: %s, want a fresh session (no replay, another pid)", thief.user, reply)
				}
				lead(2, "live 2 for "+thief.user)
				lead(1, "live 1 for "+thief.user)
				_, data, _ := sioNext(t, th)
				want := `"first_name":"live ` + map[string]string{"3": "1", "4": "2"}[thief.user] + ` for ` + thief.user + `"`
				if !strings.Contains(data, want) {
					t.Fatalf("user %s's first event %s, want its team's live lead", thief.user, data)
				}
			}
		})
	}
}

// sioConnectWith opens a raw Socket.IO connection and sends a CONNECT
// with auth; the reply is the caller's to read.
func sioConnectWith(t *testing.T, e *env, auth map[string]string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+e.relay.Addr()+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if f := sioRead(t, c); !strings.HasPrefix(f, "0{") {
		t.Fatalf("open packet: %q", f)
	}
	a, _ := json.Marshal(auth)
	if err := c.WriteMessage(websocket.TextMessage, append([]byte("40"), a...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// sioPID returns the pid of a CONNECT reply.
func sioPID(t *testing.T, reply string) string {
	t.Helper()
	var r struct{ PID string }
	if !strings.HasPrefix(reply, "40{") || json.Unmarshal([]byte(reply[2:]), &r) != nil || r.PID == "" {
		t.Fatalf("CONNECT reply %q, want one with a pid", reply)
	}
	return r.PID
}
