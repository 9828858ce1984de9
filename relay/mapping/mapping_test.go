package mapping

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/internal/jsonstr"
)

// testRules are the tables the tests map.
var testRules = []Rule{
	{Table: "public.escrows", Entity: "escrow"},
	{Table: "crm.ai_task_notes", Entity: "ai_task"},
	{Table: "public.open_house_visits", Entity: "open_house_visit"},
	{
		Table: "public.ai_tasks", Entity: "ai_task", Kind: AITask,
		StatusColumn: "status", ProgressColumn: "progress", MessageColumn: "message",
		TypeColumn: "task_type", ResultColumn: "result", ErrorColumn: "error",
	},
}

// committed renders as "2026-11-25T18:05:15.123456Z": the layout truncates
// to microseconds.
var committed = time.Date(2026, 11, 25, 18, 5, 15, 123456789, time.UTC)

const committedJSON = `"committedAt":"2026-11-25T18:05:15.123456Z"`

func newMapper(t testing.TB, o Options) *Mapper {
	t.Helper()
	m, err := New(testRules, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// wantEvent is what a test expects of one event; Stream, Pos and
// CommittedAt must always be the change's.
type wantEvent struct {
	kind   relay.EventKind
	name   string
	entity string
	data   string
}

// checkEvents compares got against want exactly, byte for byte in Data.
func checkEvents(t *testing.T, c *relay.Change, got []relay.Event, want []wantEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d events, want %d:", len(got), len(want))
		for _, ev := range got {
			t.Errorf("  %s %s", ev.Name, ev.Data)
		}
		return
	}
	for i, ev := range got {
		w := want[i]
		if ev.Kind != w.kind || ev.Name != w.name || ev.Entity != w.entity {
			t.Errorf("event %d: kind %d name %q entity %q, want kind %d name %q entity %q",
				i, ev.Kind, ev.Name, ev.Entity, w.kind, w.name, w.entity)
		}
		if string(ev.Data) != w.data {
			t.Errorf("event %d %s data:\n got %s\nwant %s", i, ev.Name, ev.Data, w.data)
		}
		if !json.Valid(ev.Data) {
			t.Errorf("event %d %s: data is not valid JSON: %s", i, ev.Name, ev.Data)
		}
		if ev.Stream != c.Stream || ev.Pos != c.Pos || !ev.CommittedAt.Equal(c.CommittedAt) {
			t.Errorf("event %d %s: stream %q pos %v at %v, want the change's %q %v %v",
				i, ev.Name, ev.Stream, ev.Pos, ev.CommittedAt, c.Stream, c.Pos, c.CommittedAt)
		}
	}
}

func escrowEvent(name, data string) wantEvent {
	return wantEvent{kind: relay.KindEvent, name: name, entity: "escrow", data: data}
}

func TestMapEntity(t *testing.T) {
	const row = `{"id":42,"team_id":7,"status":"open","price":1.50,"tags":["a","b"],"meta":{"k":null}}`
	base := relay.Change{
		Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 12, ID: 12}, XID: 900, Table: "public.escrows",
		EntityID: "42", TeamID: "7", CommittedAt: committed,
	}
	with := func(f func(c *relay.Change)) relay.Change {
		c := base
		f(&c)
		return c
	}
	tests := []struct {
		name   string
		legacy bool
		change relay.Change
		want   []wantEvent
	}{
		{
			name: "created carries the whole row under the entity",
			change: with(func(c *relay.Change) {
				c.Op, c.Actor, c.Row = relay.OpInsert, "3", json.RawMessage(row)
			}),
			want: []wantEvent{escrowEvent("escrow:created",
				`{"entityType":"escrow","entityId":"42","action":"created","teamId":"7","userId":"3","escrowId":"42","escrow":`+row+`,`+committedJSON+`}`)},
		},
		{
			name: "updated carries only changes",
			change: with(func(c *relay.Change) {
				c.Op, c.Actor, c.Row, c.Changes = relay.OpUpdate, "3", json.RawMessage(row), json.RawMessage(`{"status":"closed"}`)
			}),
			want: []wantEvent{escrowEvent("escrow:updated",
				`{"entityType":"escrow","entityId":"42","action":"updated","teamId":"7","userId":"3","escrowId":"42","changes":{"status":"closed"},`+committedJSON+`}`)},
		},
		{
			name: "deleted carries ids only",
			change: with(func(c *relay.Change) {
				c.Op, c.Actor, c.Row = relay.OpDelete, "3", json.RawMessage(row)
			}),
			want: []wantEvent{escrowEvent("escrow:deleted",
				`{"entityType":"escrow","entityId":"42","action":"deleted","teamId":"7","userId":"3","escrowId":"42",`+committedJSON+`}`)},
		},
		{
			name: "no actor: userId absent",
			change: with(func(c *relay.Change) {
				c.Op, c.Changes = relay.OpUpdate, json.RawMessage(`{"status":"closed"}`)
			}),
			want: []wantEvent{escrowEvent("escrow:updated",
				`{"entityType":"escrow","entityId":"42","action":"updated","teamId":"7","escrowId":"42","changes":{"status":"closed"},`+committedJSON+`}`)},
		},
		{
			name: "requestId after userId",
			change: with(func(c *relay.Change) {
				c.Op, c.Actor, c.RequestID, c.Changes = relay.OpUpdate, "3", "req-81f2", json.RawMessage(`{"status":"closed","price":2}`)
			}),
			want: []wantEvent{escrowEvent("escrow:updated",
				`{"entityType":"escrow","entityId":"42","action":"updated","teamId":"7","userId":"3","requestId":"req-81f2","escrowId":"42","changes":{"status":"closed","price":2},`+committedJSON+`}`)},
		},
		{
			name: "requestId without actor",
			change: with(func(c *relay.Change) {
				c.Op, c.RequestID = relay.OpDelete, "r1"
			}),
			want: []wantEvent{escrowEvent("escrow:deleted",
				`{"entityType":"escrow","entityId":"42","action":"deleted","teamId":"7","requestId":"r1","escrowId":"42",`+committedJSON+`}`)},
		},
		{
			name: "multiword entity: camelCase id key, entity name kept",
			change: relay.Change{
				Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 3, ID: 3}, Table: "crm.ai_task_notes", Op: relay.OpDelete,
				EntityID: "9", TeamID: "7", CommittedAt: committed,
			},
			want: []wantEvent{{kind: relay.KindEvent, name: "ai_task:deleted", entity: "ai_task",
				data: `{"entityType":"ai_task","entityId":"9","action":"deleted","teamId":"7","aiTaskId":"9",` + committedJSON + `}`}},
		},
		{
			name: "three-word entity",
			change: relay.Change{
				Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 3, ID: 3}, Table: "public.open_house_visits", Op: relay.OpUpdate,
				EntityID: "5", TeamID: "7", Changes: json.RawMessage(`{"n":1}`), CommittedAt: committed,
			},
			want: []wantEvent{{kind: relay.KindEvent, name: "open_house_visit:updated", entity: "open_house_visit",
				data: `{"entityType":"open_house_visit","entityId":"5","action":"updated","teamId":"7","openHouseVisitId":"5","changes":{"n":1},` + committedJSON + `}`}},
		},
		{
			name: "team move, old team's stream: deleted with the old team",
			change: with(func(c *relay.Change) {
				c.Op, c.Stream, c.TeamID, c.OldTeamID, c.Actor = relay.OpUpdate, "team:7", "8", "7", "3"
				c.Row, c.Changes = json.RawMessage(row), json.RawMessage(`{"team_id":8}`)
			}),
			want: []wantEvent{escrowEvent("escrow:deleted",
				`{"entityType":"escrow","entityId":"42","action":"deleted","teamId":"7","userId":"3","escrowId":"42",`+committedJSON+`}`)},
		},
		{
			name: "team move, new team's stream: created with the whole row",
			change: with(func(c *relay.Change) {
				c.Op, c.Stream, c.TeamID, c.OldTeamID, c.Actor = relay.OpUpdate, "team:8", "8", "7", "3"
				c.Row, c.Changes = json.RawMessage(row), json.RawMessage(`{"team_id":8}`)
			}),
			want: []wantEvent{escrowEvent("escrow:created",
				`{"entityType":"escrow","entityId":"42","action":"created","teamId":"8","userId":"3","escrowId":"42","escrow":`+row+`,`+committedJSON+`}`)},
		},
		{
			name: "OldTeamID equal to TeamID is a plain update",
			change: with(func(c *relay.Change) {
				c.Op, c.OldTeamID, c.Changes = relay.OpUpdate, "7", json.RawMessage(`{"status":"closed"}`)
			}),
			want: []wantEvent{escrowEvent("escrow:updated",
				`{"entityType":"escrow","entityId":"42","action":"updated","teamId":"7","escrowId":"42","changes":{"status":"closed"},`+committedJSON+`}`)},
		},
		{
			name: "update with empty changes object: no event",
			change: with(func(c *relay.Change) {
				c.Op, c.Row, c.Changes = relay.OpUpdate, json.RawMessage(row), json.RawMessage(`{}`)
			}),
		},
		{
			name:   "update with nil changes: no event",
			change: with(func(c *relay.Change) { c.Op, c.Row = relay.OpUpdate, json.RawMessage(row) }),
		},
		{
			name:   "update with empty changes, legacy: no event either",
			legacy: true,
			change: with(func(c *relay.Change) { c.Op, c.Changes = relay.OpUpdate, json.RawMessage(`{}`) }),
		},
		{
			name: "truncate: resync frame",
			change: with(func(c *relay.Change) {
				c.Op, c.Stream, c.EntityID, c.TeamID = relay.OpTruncate, relay.AllStream, "", ""
			}),
			want: []wantEvent{{kind: relay.KindResync, name: "resync",
				data: `{"type":"resync","reason":"truncate","entityType":"escrow"}`}},
		},
		{
			name:   "truncate, legacy: the resync frame only",
			legacy: true,
			change: with(func(c *relay.Change) {
				c.Op, c.Stream, c.EntityID, c.TeamID = relay.OpTruncate, relay.AllStream, "", ""
			}),
			want: []wantEvent{{kind: relay.KindResync, name: "resync",
				data: `{"type":"resync","reason":"truncate","entityType":"escrow"}`}},
		},
		{
			name:   "unknown table: no event",
			legacy: true,
			change: with(func(c *relay.Change) {
				c.Table, c.Op, c.Row = "public.escrow_audit", relay.OpInsert, json.RawMessage(row)
			}),
		},
		{
			name:   "unknown op: no event",
			change: with(func(c *relay.Change) { c.Op, c.Row = relay.Op('X'), json.RawMessage(row) }),
		},
		{
			name:   "legacy create",
			legacy: true,
			change: with(func(c *relay.Change) {
				c.Op, c.Actor, c.RequestID, c.Row = relay.OpInsert, "3", "r1", json.RawMessage(row)
			}),
			want: []wantEvent{
				escrowEvent("escrow:created",
					`{"entityType":"escrow","entityId":"42","action":"created","teamId":"7","userId":"3","requestId":"r1","escrowId":"42","escrow":`+row+`,`+committedJSON+`}`),
				escrowEvent("data:update",
					`{"entityType":"escrow","entityId":"42","action":"create","userId":"3","teamId":"7","data":`+row+`}`),
			},
		},
		{
			name:   "legacy update",
			legacy: true,
			change: with(func(c *relay.Change) {
				c.Op, c.Actor, c.Changes = relay.OpUpdate, "3", json.RawMessage(`{"status":"closed"}`)
			}),
			want: []wantEvent{
				escrowEvent("escrow:updated",
					`{"entityType":"escrow","entityId":"42","action":"updated","teamId":"7","userId":"3","escrowId":"42","changes":{"status":"closed"},`+committedJSON+`}`),
				escrowEvent("data:update",
					`{"entityType":"escrow","entityId":"42","action":"update","userId":"3","teamId":"7","data":{"status":"closed"}}`),
			},
		},
		{
			name:   "legacy delete without actor",
			legacy: true,
			change: with(func(c *relay.Change) { c.Op = relay.OpDelete }),
			want: []wantEvent{
				escrowEvent("escrow:deleted",
					`{"entityType":"escrow","entityId":"42","action":"deleted","teamId":"7","escrowId":"42",`+committedJSON+`}`),
				escrowEvent("data:update",
					`{"entityType":"escrow","entityId":"42","action":"delete","teamId":"7","data":null}`),
			},
		},
		{
			name:   "legacy team move out",
			legacy: true,
			change: with(func(c *relay.Change) {
				c.Op, c.Stream, c.TeamID, c.OldTeamID = relay.OpUpdate, "team:7", "8", "7"
				c.Row, c.Changes = json.RawMessage(row), json.RawMessage(`{"team_id":8}`)
			}),
			want: []wantEvent{
				escrowEvent("escrow:deleted",
					`{"entityType":"escrow","entityId":"42","action":"deleted","teamId":"7","escrowId":"42",`+committedJSON+`}`),
				escrowEvent("data:update",
					`{"entityType":"escrow","entityId":"42","action":"delete","teamId":"7","data":null}`),
			},
		},
		{
			name:   "legacy team move in",
			legacy: true,
			change: with(func(c *relay.Change) {
				c.Op, c.Stream, c.TeamID, c.OldTeamID = relay.OpUpdate, "team:8", "8", "7"
				c.Row, c.Changes = json.RawMessage(row), json.RawMessage(`{"team_id":8}`)
			}),
			want: []wantEvent{
				escrowEvent("escrow:created",
					`{"entityType":"escrow","entityId":"42","action":"created","teamId":"8","escrowId":"42","escrow":`+row+`,`+committedJSON+`}`),
				escrowEvent("data:update",
					`{"entityType":"escrow","entityId":"42","action":"create","teamId":"8","data":`+row+`}`),
			},
		},
	}
	plain, legacy := newMapper(t, Options{}), newMapper(t, Options{Legacy: true})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := plain
			if tt.legacy {
				m = legacy
			}
			c := tt.change
			got := m.Map(nil, &c)
			checkEvents(t, &c, got, tt.want)
		})
	}
}

// A composite key: entityId is the joined form the capture function wrote,
// and every action carries the key columns under "key".
func TestMapCompositeKey(t *testing.T) {
	m := newMapper(t, Options{})
	const key = `{"deal_id":5,"user_id":9}`
	base := relay.Change{
		Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 3, ID: 3}, Table: "public.escrows", EntityID: relay.JoinKey("5", "9"),
		TeamID: "7", Key: json.RawMessage(key), CommittedAt: committed,
	}
	const ids = `{"entityType":"escrow","entityId":"5:9","action":"%s","teamId":"7","escrowId":"5:9","key":` + key
	for _, tc := range []struct {
		op      relay.Op
		row     string
		changes string
		want    wantEvent
	}{
		{relay.OpInsert, `{"deal_id":5,"user_id":9,"role":"buyer"}`, "",
			escrowEvent("escrow:created", fmt.Sprintf(ids, "created")+`,"escrow":{"deal_id":5,"user_id":9,"role":"buyer"},`+committedJSON+`}`)},
		{relay.OpUpdate, "", `{"role":"seller"}`,
			escrowEvent("escrow:updated", fmt.Sprintf(ids, "updated")+`,"changes":{"role":"seller"},`+committedJSON+`}`)},
		{relay.OpDelete, "", "",
			escrowEvent("escrow:deleted", fmt.Sprintf(ids, "deleted")+`,`+committedJSON+`}`)},
	} {
		c := base
		c.Op = tc.op
		if tc.row != "" {
			c.Row = json.RawMessage(tc.row)
		}
		if tc.changes != "" {
			c.Changes = json.RawMessage(tc.changes)
		}
		checkEvents(t, &c, m.Map(nil, &c), []wantEvent{tc.want})
	}
}

func TestJoinKey(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"5", "9"}, "5:9"},
		{[]string{"a:b", `c\d`}, `a\:b:c\\d`},
		{[]string{"", ""}, ":"},
		{[]string{"x"}, "x"},
	} {
		if got := relay.JoinKey(tc.in...); got != tc.want {
			t.Errorf("JoinKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMapAppendsToDst(t *testing.T) {
	m := newMapper(t, Options{})
	prev := relay.Event{Name: "earlier"}
	c := relay.Change{Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 1, ID: 1}, Table: "public.escrows", Op: relay.OpDelete, EntityID: "1", TeamID: "7"}
	got := m.Map([]relay.Event{prev}, &c)
	if len(got) != 2 || got[0].Name != "earlier" || got[1].Name != "escrow:deleted" {
		t.Fatalf("Map(dst) = %+v, want the earlier event then escrow:deleted", got)
	}
	c.Op, c.Changes = relay.OpUpdate, json.RawMessage(`{}`)
	if got := m.Map([]relay.Event{prev}, &c); len(got) != 1 || got[0].Name != "earlier" {
		t.Fatalf("Map(dst) of an empty update = %+v, want dst unchanged", got)
	}
}

func TestCommittedAt(t *testing.T) {
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"microseconds, truncated", committed, "2026-11-25T18:05:15.123456Z"},
		{"whole second keeps six digits", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000000Z"},
		{"one microsecond", time.Date(2026, 1, 2, 3, 4, 5, 1000, time.UTC), "2026-01-02T03:04:05.000001Z"},
		{"other zone rendered in UTC", time.Date(2026, 11, 25, 20, 5, 15, 500000000, time.FixedZone("EET", 2*3600)), "2026-11-25T18:05:15.500000Z"},
		{"local offset crossing midnight", time.Date(2026, 1, 1, 1, 0, 0, 0, time.FixedZone("X", 3*3600)), "2025-12-31T22:00:00.000000Z"},
	}
	m := newMapper(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := relay.Change{Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 1, ID: 1}, Table: "public.escrows", Op: relay.OpDelete,
				EntityID: "1", TeamID: "7", CommittedAt: tt.at}
			got := m.Map(nil, &c)
			if len(got) != 1 {
				t.Fatalf("got %d events", len(got))
			}
			want := `{"entityType":"escrow","entityId":"1","action":"deleted","teamId":"7","escrowId":"1","committedAt":"` + tt.want + `"}`
			if string(got[0].Data) != want {
				t.Errorf("data:\n got %s\nwant %s", got[0].Data, want)
			}
		})
	}
}

// decodedLike returns s as a JSON round trip through encoding/json yields it.
func decodedLike(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// Strings the mapper writes itself (ids, actor, request id) are escaped;
// every event stays valid JSON and decodes to the original text.
func TestMapEscapesStrings(t *testing.T) {
	nasty := "4\"2\\\n\t\x00\x1f\xff\xc3é\u2028</script>"
	m := newMapper(t, Options{Legacy: true})
	c := relay.Change{
		Stream: "team:" + nasty, Pos: relay.Pos{Tick: 1, Tx: 1, ID: 1}, Table: "public.escrows", Op: relay.OpUpdate,
		EntityID: nasty, TeamID: nasty, Actor: nasty, RequestID: nasty,
		Changes: json.RawMessage(`{"note":"a\"b"}`), CommittedAt: committed,
	}
	enc := string(jsonstr.Append(nil, nasty))
	wantMain := `{"entityType":"escrow","entityId":` + enc + `,"action":"updated","teamId":` + enc +
		`,"userId":` + enc + `,"requestId":` + enc + `,"escrowId":` + enc + `,"changes":{"note":"a\"b"},` + committedJSON + `}`
	wantLegacy := `{"entityType":"escrow","entityId":` + enc + `,"action":"update","userId":` + enc +
		`,"teamId":` + enc + `,"data":{"note":"a\"b"}}`
	got := m.Map(nil, &c)
	checkEvents(t, &c, got, []wantEvent{escrowEvent("escrow:updated", wantMain), escrowEvent("data:update", wantLegacy)})
	for _, ev := range got {
		var fields map[string]any
		if err := json.Unmarshal(ev.Data, &fields); err != nil {
			t.Fatalf("%s: %v", ev.Data, err)
		}
		for _, k := range []string{"entityId", "teamId", "userId"} {
			if fields[k] != decodedLike(nasty) {
				t.Errorf("%s: %s decodes to %q, want %q", ev.Name, k, fields[k], decodedLike(nasty))
			}
		}
	}
}

func TestNewRejectsBadRules(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
	}{
		{"no table", []Rule{{Entity: "escrow"}}},
		{"no entity", []Rule{{Table: "public.escrows"}}},
		{"table twice", []Rule{{Table: "public.escrows", Entity: "escrow"}, {Table: "public.escrows", Entity: "deal"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := New(tt.rules, Options{}); err == nil {
				t.Fatalf("New(%+v) = %v, want error", tt.rules, m)
			}
		})
	}
}

func TestMapTask(t *testing.T) {
	base := relay.Change{
		Stream: "user:3", Pos: relay.Pos{Tick: 1, Tx: 7, ID: 7}, Table: "public.ai_tasks", EntityID: "t-1",
		TeamID: "7", UserID: "3", Actor: "3", CommittedAt: committed,
	}
	const ts = `"timestamp":"2026-11-25T18:05:15.123456Z"`
	task := func(op relay.Op, row, changes, old string) relay.Change {
		c := base
		c.Op = op
		if row != "" {
			c.Row = json.RawMessage(row)
		}
		if changes != "" {
			c.Changes = json.RawMessage(changes)
		}
		if old != "" {
			c.OldRow = json.RawMessage(old)
		}
		return c
	}
	ev := func(name, data string) []wantEvent {
		return []wantEvent{{kind: relay.KindEvent, name: name, data: data}}
	}
	tests := []struct {
		name   string
		change relay.Change
		want   []wantEvent
	}{
		{
			name: "insert: started",
			change: task(relay.OpInsert,
				`{"id":"t-1","user_id":3,"status":"pending","progress":0,"task_type":"summarize","message":"queued","result":null,"error":null}`, "", ""),
			want: ev("ai:task:started", `{"taskId":"t-1","taskType":"summarize","message":"queued",`+ts+`}`),
		},
		{
			name: "status set to completed",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"completed","progress":100,"task_type":"summarize","message":"done","result":{"summary":"ok","n":[1,2]},"error":null}`,
				`{"status":"completed","progress":100,"result":{"summary":"ok","n":[1,2]}}`,
				`{"status":"running","progress":80}`),
			want: ev("ai:task:completed", `{"taskId":"t-1","result":{"summary":"ok","n":[1,2]},"message":"done",`+ts+`}`),
		},
		{
			name: "status set to failed",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"failed","progress":40,"task_type":"summarize","message":"working","result":null,"error":"model \"x\" timed out"}`,
				`{"status":"failed","error":"model \"x\" timed out"}`,
				`{"status":"running","progress":40}`),
			want: ev("ai:task:failed", `{"taskId":"t-1","error":"model \"x\" timed out",`+ts+`}`),
		},
		{
			name: "progress while running",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"running","progress":40,"message":"reading","task_type":"summarize"}`,
				`{"progress":40}`,
				`{"status":"running","progress":30}`),
			want: ev("ai:task:progress", `{"taskId":"t-1","progress":40,"message":"reading",`+ts+`}`),
		},
		{
			name: "lower progress write is sent with the old value",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"running","progress":20,"message":"retrying","task_type":"summarize"}`,
				`{"progress":20,"message":"retrying"}`,
				`{"status":"running","progress":30}`),
			want: ev("ai:task:progress", `{"taskId":"t-1","progress":30,"message":"retrying",`+ts+`}`),
		},
		{
			name: "message change while running",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"running","progress":55,"message":"almost","task_type":"summarize"}`,
				`{"message":"almost"}`,
				`{"status":"running","progress":55}`),
			want: ev("ai:task:progress", `{"taskId":"t-1","progress":55,"message":"almost",`+ts+`}`),
		},
		{
			name: "fractional progress rendered whole",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"running","progress":42.7,"message":"m"}`,
				`{"progress":42.7}`,
				`{"status":"running","progress":10}`),
			want: ev("ai:task:progress", `{"taskId":"t-1","progress":42,"message":"m",`+ts+`}`),
		},
		{
			name: "progress above 100 clamped",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"running","progress":250,"message":"m"}`,
				`{"progress":250}`,
				`{"status":"running","progress":10}`),
			want: ev("ai:task:progress", `{"taskId":"t-1","progress":100,"message":"m",`+ts+`}`),
		},
		{
			name: "negative progress clamped",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"running","progress":-5,"message":"m"}`,
				`{"progress":-5}`,
				`{"status":"running","progress":-9}`),
			want: ev("ai:task:progress", `{"taskId":"t-1","progress":0,"message":"m",`+ts+`}`),
		},
		{
			name: "pending, irrelevant column: no event",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"pending","progress":0,"message":"queued","updated_at":"2026-11-25T18:05:15Z"}`,
				`{"updated_at":"2026-11-25T18:05:15Z"}`,
				`{"status":"pending","progress":0}`),
		},
		{
			name: "running, irrelevant column: no event",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"running","progress":10,"message":"m","updated_at":"2026-11-25T18:05:15Z"}`,
				`{"updated_at":"2026-11-25T18:05:15Z"}`,
				`{"status":"running","progress":10}`),
		},
		{
			name: "completed task edited again: no event",
			change: task(relay.OpUpdate,
				`{"id":"t-1","status":"completed","progress":100,"message":"edited","result":{}}`,
				`{"message":"edited"}`,
				`{"status":"completed","progress":100}`),
		},
		{
			name:   "delete: no event",
			change: task(relay.OpDelete, `{"id":"t-1","status":"running"}`, "", ""),
		},
		{
			name:   "row that is not JSON: no event",
			change: task(relay.OpInsert, `{"id":`, "", ""),
		},
		{
			name:   "truncate: resync",
			change: task(relay.OpTruncate, "", "", ""),
			want: []wantEvent{{kind: relay.KindResync, name: "resync",
				data: `{"type":"resync","reason":"truncate","entityType":"ai_task"}`}},
		},
	}
	// Task events have no legacy form: the option changes nothing.
	for _, legacy := range []bool{false, true} {
		m := newMapper(t, Options{Legacy: legacy})
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/legacy=%v", tt.name, legacy), func(t *testing.T) {
				c := tt.change
				checkEvents(t, &c, m.Map(nil, &c), tt.want)
			})
		}
	}
}

func TestMapTaskEscapesTaskID(t *testing.T) {
	m := newMapper(t, Options{})
	id := "t\"1\\\n\xff"
	c := relay.Change{Stream: "user:3", Pos: relay.Pos{Tick: 1, Tx: 1, ID: 1}, Table: "public.ai_tasks", Op: relay.OpInsert, EntityID: id,
		Row: json.RawMessage(`{"status":"pending","task_type":"x","message":"m"}`), CommittedAt: committed}
	got := m.Map(nil, &c)
	want := `{"taskId":"t\"1\\\n\ufffd","taskType":"x","message":"m","timestamp":"2026-11-25T18:05:15.123456Z"}`
	checkEvents(t, &c, got, []wantEvent{{kind: relay.KindEvent, name: "ai:task:started", data: want}})
}

// eventNames lists every name a rule can produce.
func eventNames(r Rule) []string {
	if r.Kind == AITask {
		return []string{"ai:task:started", "ai:task:progress", "ai:task:completed", "ai:task:failed", "resync"}
	}
	return []string{r.Entity + ":created", r.Entity + ":updated", r.Entity + ":deleted", "data:update", "resync"}
}

func FuzzMap(f *testing.F) {
	f.Add(byte('I'), uint8(0), false, uint8(0), int64(1), "42", "7", "", "3", "", "status", "open", "price", 1.5, 0.0, uint8(1), uint8(0xff), int64(0))
	f.Add(byte('U'), uint8(0), true, uint8(1), int64(9), "4\"2", "8", "7", "", "req", "team_id", "x\xff", "n", 8.0, 0.0, uint8(0), uint8(0x03), int64(1e18))
	f.Add(byte('U'), uint8(0), true, uint8(0), int64(9), "42", "8", "7", "a\nb", "", "team_id", "", "n", 8.0, 0.0, uint8(0), uint8(0x03), int64(-5))
	f.Add(byte('D'), uint8(1), true, uint8(0), int64(2), "9", "7", "", "", "", "k", "v", "k2", -1.0, 0.0, uint8(0), uint8(0), int64(0))
	f.Add(byte('T'), uint8(0), false, uint8(2), int64(3), "", "", "", "", "", "", "", "", 0.0, 0.0, uint8(0), uint8(0), int64(0))
	f.Add(byte('U'), uint8(3), false, uint8(3), int64(5), "t1", "7", "", "3", "", "message", "half way", "progress", 40.0, 60.0, uint8(1), uint8(0x1c), int64(0))
	f.Add(byte('U'), uint8(3), true, uint8(3), int64(5), "t1", "7", "", "3", "", "result", "{\"a\":1}", "error", 1e300, -3.0, uint8(2), uint8(0x0f), int64(0))
	f.Add(byte('I'), uint8(3), false, uint8(3), int64(5), "t1", "7", "", "3", "", "task_type", "sum", "x", 0.0, 0.0, uint8(0), uint8(0), int64(0))
	f.Add(byte('X'), uint8(4), false, uint8(0), int64(5), "", "", "", "", "", "", "", "", 0.0, 0.0, uint8(0), uint8(0), int64(0))

	statuses := []string{"pending", "running", "completed", "failed"}
	plain, legacy := newMapper(f, Options{}), newMapper(f, Options{Legacy: true})
	f.Fuzz(func(t *testing.T, op byte, table uint8, withLegacy bool, streamSel uint8, seq int64,
		entityID, teamID, oldTeamID, actor, requestID, k1, v1, k2 string, n, oldProgress float64,
		status, changeBits uint8, nanos int64) {
		if math.IsNaN(n) || math.IsInf(n, 0) || math.IsNaN(oldProgress) || math.IsInf(oldProgress, 0) {
			return // not JSON numbers; to_jsonb renders them as strings
		}
		// The row has fixed columns plus two fuzzed ones, which may shadow them.
		row := map[string]any{
			"id": entityID, "status": statuses[int(status)%len(statuses)], "progress": n,
			"message": v1, "task_type": v1, "result": map[string]any{k1: v1}, "error": v1,
		}
		row[k1] = v1
		row[k2] = n
		// Changes holds the columns changeBits picks, with their new values.
		changes := map[string]any{}
		for i, k := range []string{k1, k2, "status", "progress", "message", "result"} {
			if changeBits&(1<<i) != 0 {
				changes[k] = row[k]
			}
		}
		rowJSON, err := json.Marshal(row)
		if err != nil {
			t.Fatalf("marshal row: %v", err)
		}
		c := relay.Change{
			Pos: relay.Pos{Tick: 1, Tx: seq, ID: seq}, Table: "public." + k1, Op: relay.Op(op), // most likely a table without a rule
			EntityID: entityID, TeamID: teamID, OldTeamID: oldTeamID, Actor: actor, RequestID: requestID,
			Row: rowJSON, CommittedAt: time.Unix(0, nanos),
		}
		if i := int(table) % (len(testRules) + 1); i < len(testRules) {
			c.Table = testRules[i].Table
		}
		if changeBits&(1<<6) == 0 {
			if c.Changes, err = json.Marshal(changes); err != nil {
				t.Fatalf("marshal changes: %v", err)
			}
		}
		if changeBits&(1<<7) != 0 {
			if c.OldRow, err = json.Marshal(map[string]any{"status": statuses[int(status/4)%len(statuses)], "progress": oldProgress}); err != nil {
				t.Fatalf("marshal old row: %v", err)
			}
		}
		switch streamSel % 4 {
		case 0:
			c.Stream = relay.TeamStream(teamID)
		case 1:
			c.Stream = relay.TeamStream(oldTeamID)
		case 2:
			c.Stream = relay.AllStream
		default:
			c.Stream = relay.UserStream(actor)
		}

		m := plain
		if withLegacy {
			m = legacy
		}
		events := m.Map(nil, &c)

		var rule *Rule
		for i := range testRules {
			if testRules[i].Table == c.Table {
				rule = &testRules[i]
			}
		}
		if rule == nil && len(events) > 0 {
			t.Fatalf("table %q has no rule but mapped to %d events", c.Table, len(events))
		}
		for _, ev := range events {
			if !json.Valid(ev.Data) {
				t.Fatalf("%s: data is not valid JSON: %q", ev.Name, ev.Data)
			}
			if ev.Stream != c.Stream || ev.Pos != c.Pos || !ev.CommittedAt.Equal(c.CommittedAt) {
				t.Fatalf("%s: stream %q pos %v at %v, want the change's %q %v %v",
					ev.Name, ev.Stream, ev.Pos, ev.CommittedAt, c.Stream, c.Pos, c.CommittedAt)
			}
			if entity, action, ok := strings.Cut(ev.Name, ":"); (ev.Kind == relay.KindResync) != (ev.Name == "resync") ||
				ev.Kind != relay.KindResync && (!ok || entity == "" || action == "") {
				t.Fatalf("event kind %d name %q is neither entity:action nor resync", ev.Kind, ev.Name)
			}
			known := false
			for _, name := range eventNames(*rule) {
				known = known || name == ev.Name
			}
			if !known {
				t.Fatalf("table %s produced event %q", c.Table, ev.Name)
			}
			var fields map[string]any
			if err := json.Unmarshal(ev.Data, &fields); err != nil {
				t.Fatalf("%s: data is not a JSON object: %v: %q", ev.Name, err, ev.Data)
			}
			switch {
			case ev.Kind == relay.KindResync:
				if fields["type"] != "resync" || fields["entityType"] != rule.Entity {
					t.Fatalf("resync frame %s", ev.Data)
				}
			case rule.Kind == AITask:
				if ev.Entity != "" {
					t.Fatalf("%s: user-scoped task event has entity %q", ev.Name, ev.Entity)
				}
				if fields["taskId"] != decodedLike(c.EntityID) {
					t.Fatalf("%s: taskId %q, want %q", ev.Name, fields["taskId"], decodedLike(c.EntityID))
				}
				if p, ok := fields["progress"]; ok && (p.(float64) < 0 || p.(float64) > 100) {
					t.Fatalf("%s: progress %v out of 0..100", ev.Name, p)
				}
			default:
				if ev.Entity != rule.Entity || fields["entityType"] != rule.Entity {
					t.Fatalf("%s: entity %q, entityType %v, want %q", ev.Name, ev.Entity, fields["entityType"], rule.Entity)
				}
				if fields["entityId"] != decodedLike(c.EntityID) {
					t.Fatalf("%s: entityId %q, want %q", ev.Name, fields["entityId"], decodedLike(c.EntityID))
				}
				if _, has := fields["userId"]; has != (c.Actor != "") {
					t.Fatalf("%s: userId present %v with actor %q", ev.Name, has, c.Actor)
				}
			}
		}
	})
}

func BenchmarkMapUpdate(b *testing.B) {
	m := newMapper(b, Options{})
	c := relay.Change{
		Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 1042, ID: 1042}, XID: 77812, Table: "public.escrows", Op: relay.OpUpdate,
		EntityID: "4211", TeamID: "7", Actor: "3", RequestID: "req-5f1c2a",
		Changes:     json.RawMessage(`{"status":"closed","closing_date":"2026-12-01"}`),
		CommittedAt: committed,
	}
	var dst []relay.Event
	b.ReportAllocs()
	for b.Loop() {
		dst = m.Map(dst[:0], &c)
	}
	if len(dst) != 1 {
		b.Fatalf("got %d events", len(dst))
	}
}

func BenchmarkMapCreate(b *testing.B) {
	m := newMapper(b, Options{})
	row := `{"id":4211,"team_id":7,"status":"open","escrow_number":"ESC-2026-004211",` +
		`"property_address":"1428 Elm Street, Springfield","city":"Springfield","state":"IL","zip":"62704",` +
		`"purchase_price":485000.00,"earnest_money":15000.00,"commission_rate":0.0300,` +
		`"buyer_name":"Dana Whitfield","seller_name":"Morgan Reyes","buyer_agent_id":31,"seller_agent_id":44,` +
		`"lender":"First Prairie Bank","title_company":"Land of Lincoln Title","opened_at":"2026-11-25T18:05:15.123456+00:00",` +
		`"closing_date":"2026-12-20","contingencies":["inspection","financing"],"notes":"Buyer requests walkthrough",` +
		`"is_cash":false,"created_by":3,"updated_at":"2026-11-25T18:05:15.123456+00:00","metadata":{"source":"web","v":2}}`
	c := relay.Change{
		Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 1042, ID: 1042}, XID: 77812, Table: "public.escrows", Op: relay.OpInsert,
		EntityID: "4211", TeamID: "7", Actor: "3", Row: json.RawMessage(row), CommittedAt: committed,
	}
	var dst []relay.Event
	b.ReportAllocs()
	for b.Loop() {
		dst = m.Map(dst[:0], &c)
	}
	if len(dst) != 1 {
		b.Fatalf("got %d events", len(dst))
	}
}

// TestMapLeavesOutExcluded: capture writes an excluded column null (to_json
// renders every column); no event carries it, and an update of excluded
// columns only maps to nothing.
func TestMapLeavesOutExcluded(t *testing.T) {
	m, err := New([]Rule{{Table: "public.escrows", Entity: "escrow", Exclude: []string{"internal_notes", "gone", "a\bb"}}}, Options{Legacy: true})
	if err != nil {
		t.Fatal(err)
	}
	base := relay.Change{Stream: "team:7", Pos: relay.Pos{Tick: 1, Tx: 3, ID: 3}, Table: "public.escrows", EntityID: "5",
		TeamID: "7", CommittedAt: committed}
	ins := base
	// Keys quoted as PostgreSQL quotes them (a backspace as \b).
	ins.Op, ins.Row = relay.OpInsert, json.RawMessage(`{"id":5,"a\bb":null,"internal_notes":null,"team_id":7}`)
	evs := m.Map(nil, &ins)
	if len(evs) != 2 || !strings.Contains(string(evs[0].Data), `"escrow":{"id":5,"team_id":7}`) ||
		!strings.Contains(string(evs[1].Data), `"data":{"id":5,"team_id":7}`) {
		t.Errorf("created: %+v", evs)
	}
	if string(ins.Row) != `{"id":5,"a\bb":null,"internal_notes":null,"team_id":7}` {
		t.Errorf("the change's row was modified: %s", ins.Row)
	}
	upd := base
	upd.Op, upd.Changes = relay.OpUpdate, json.RawMessage(`{"internal_notes":null}`)
	if evs := m.Map(nil, &upd); len(evs) != 0 {
		t.Errorf("an update of an excluded column only: %+v", evs)
	}
	upd.Changes = json.RawMessage(`{"internal_notes":null,"status":"open"}`)
	if evs := m.Map(nil, &upd); len(evs) != 2 || !strings.Contains(string(evs[0].Data), `"changes":{"status":"open"}`) {
		t.Errorf("updated: %+v", evs)
	}
}
