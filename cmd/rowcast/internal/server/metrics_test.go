package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay"
)

// series returns the sum of the series of the family name in the /metrics
// of the relay at addr whose labels include labels (name, value pairs): a
// counter's or gauge's value, a histogram's sample count; -1 when the
// family or no such series is there.
func series(addr, name string, labels ...string) float64 {
	f := scrape(addr)[name]
	if f == nil {
		return -1
	}
	sum, found := 0.0, false
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, l := range m.GetLabel() {
				ok = ok || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !ok {
				continue next
			}
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	if !found {
		return -1
	}
	return sum
}

// metricKey names one series: its family and label pairs.
type metricKey struct {
	name   string
	labels []string
}

func (k metricKey) String() string { return k.name + fmt.Sprint(k.labels) }

// m names a series: m("rowcast_sessions", "transport", "ws").
func m(name string, labels ...string) metricKey { return metricKey{name, labels} }

// TestMetricFamilies: each family the metrics table of the README lists
// moves on /metrics when the thing it counts happens, on both transports
// where it matters.
func TestMetricFamilies(t *testing.T) {
	e := startRelay(t, nil)
	addr := e.relay.Addr()
	tok := userToken(t, "2", 1)
	// A session of team 1 that stays open: the writes' events are
	// delivered to it.
	reader := e.connect(tok)

	var resumeFrom string
	cases := []struct {
		name  string
		do    func(t *testing.T, e *env)
		moves []metricKey
	}{
		{"ws session", func(t *testing.T, e *env) { e.connect(tok) },
			[]metricKey{m("rowcast_sessions", "transport", "ws"), m("rowcast_sessions_accepted_total", "transport", "ws")}},
		{"socketio session", func(t *testing.T, e *env) { sioDial(t, e, tok) },
			[]metricKey{m("rowcast_sessions", "transport", "socketio"), m("rowcast_sessions_accepted_total", "transport", "socketio")}},
		{"refused upgrade", func(t *testing.T, e *env) {
			if a := upgrade(t, e, wsPath(tok), http.Header{"Origin": {"https://evil.example"}}); a.Status != http.StatusForbidden {
				t.Fatalf("foreign origin: HTTP %d, want 403", a.Status)
			}
		}, []metricKey{m("rowcast_sessions_refused_total", "reason", "origin")}},
		{"bad token", func(t *testing.T, e *env) {
			bad, _ := signWith("another-secret-another-secret-0123456", map[string]any{"sub": "2", "teamId": 1})
			c, err := e.dial(bad, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if code := c.closed(); code != 4401 {
				t.Fatalf("close code %d, want 4401", code)
			}
		}, []metricKey{m("rowcast_auth_failures_total", "reason", "signature"),
			m("rowcast_sessions_refused_total", "reason", "unauthorized"), m("rowcast_disconnects_total", "code", "4401")}},
		{"client closes 1000", func(t *testing.T, e *env) {
			closeWith(t, e.connect(tok).conn.WebSocket(), websocket.CloseNormalClosure)
		}, []metricKey{m("rowcast_disconnects_total", "code", "1000")}},
		{"client closes 1001", func(t *testing.T, e *env) {
			closeWith(t, e.connect(tok).conn.WebSocket(), websocket.CloseGoingAway)
		}, []metricKey{m("rowcast_disconnects_total", "code", "1001")}},
		{"socketio client closes 1000", func(t *testing.T, e *env) {
			closeWith(t, sioDial(t, e, tok), websocket.CloseNormalClosure)
		}, []metricKey{m("rowcast_disconnects_total", "code", "1000")}},
		{"peer gone", func(t *testing.T, e *env) { e.connect(tok).drop() },
			[]metricKey{m("rowcast_disconnects_total", "code", "1006")}},
		{"insert", func(t *testing.T, e *env) {
			e.exec("insert into leads (team_id, first_name) values (1, 'm1')")
			reader.event("lead:created")
			resumeFrom = reader.last
		}, []metricKey{m("rowcast_capture_changes_total", "table", "public.leads", "action", "insert"),
			m("rowcast_capture_transactions_total"), m("rowcast_capture_lag_seconds"),
			m("rowcast_events_sent_total"), m("rowcast_event_latency_seconds")}},
		{"update", func(t *testing.T, e *env) {
			e.exec("update leads set first_name = 'm2' where first_name = 'm1'")
			reader.event("lead:updated")
		}, []metricKey{m("rowcast_capture_changes_total", "table", "public.leads", "action", "update"),
			m("rowcast_events_sent_total"), m("rowcast_event_latency_seconds")}},
		{"delete", func(t *testing.T, e *env) {
			e.exec("delete from leads where first_name = 'm2'")
			reader.event("lead:deleted")
		}, []metricKey{m("rowcast_capture_changes_total", "table", "public.leads", "action", "delete"),
			m("rowcast_events_sent_total"), m("rowcast_event_latency_seconds")}},
		{"resume", func(t *testing.T, e *env) {
			c, err := e.dial(tok, "since="+resumeFrom, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.next() // welcome
			c.event("lead:updated")
			c.event("lead:deleted")
			if r := c.next(); r.Type != "resumed" || r.Replayed != 2 {
				t.Fatalf("want resumed replayed=2, got %s", r.Raw)
			}
		}, []metricKey{m("rowcast_resumes_total"), m("rowcast_replayed_events_total")}},
		{"resync", func(t *testing.T, e *env) {
			// A position of another history (a restored database's, say)
			// cannot be served.
			since := relay.Position{Epoch: strings.Repeat("ab", 16), Pos: relay.TickEnd(0)}.Encode()
			c, err := e.dial(tok, "since="+since, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.next() // welcome
			if f := c.next(); f.Type != "resync" {
				t.Fatalf("want resync, got %s", f.Raw)
			}
		}, []metricKey{m("rowcast_resyncs_total")}},
		{"truncate", func(t *testing.T, e *env) { e.exec("truncate leads cascade") },
			[]metricKey{m("rowcast_capture_changes_total", "table", "public.leads", "action", "truncate")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.forT(t)
			before := make([]float64, len(tc.moves))
			for i, k := range tc.moves {
				before[i] = series(addr, k.name, k.labels...)
			}
			tc.do(t, e)
			for i, k := range tc.moves {
				waitWithin(t, 15*time.Second, func() string {
					return fmt.Sprintf("%s to move from %v (it is %v)", k, before[i], series(addr, k.name, k.labels...))
				}, func() bool { return series(addr, k.name, k.labels...) > max(before[i], 0) })
			}
		})
	}

	// Sessions by transport add up to the hub's subscribers once the
	// closed ones are gone.
	waitWithin(t, 15*time.Second, func() string {
		return fmt.Sprintf("rowcast_sessions %v, hub subscribers %d", series(addr, "rowcast_sessions"), e.relay.Hub().Stats().Subscribers)
	}, func() bool { return series(addr, "rowcast_sessions") == float64(e.relay.Hub().Stats().Subscribers) })

	// Gauges: present with their value.
	for _, k := range []metricKey{m("rowcast_capture_behind_ticks"), m("rowcast_capture_behind_seconds"),
		m("rowcast_capture_connected")} {
		if v := series(addr, k.name, k.labels...); v < 0 {
			t.Errorf("%s missing", k)
		}
	}
	if v := series(addr, "rowcast_capture_connected"); v != 1 {
		t.Errorf("rowcast_capture_connected = %v, want 1", v)
	}
	if v := series(addr, "rowcast_build_info", "version", "test"); v != 1 {
		t.Errorf(`rowcast_build_info{version="test"} = %v, want 1`, v)
	}
}

// closeWith sends a close frame with code and waits for the relay's
// answer.
func closeWith(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}

// TestMetricFamiliesLogical: in logical mode the relay holding the slot
// says so, and reports the slot's lag in bytes.
func TestMetricFamiliesLogical(t *testing.T) {
	e := startRelay(t, logicalMode)
	addr := e.relay.Addr()
	e.exec("insert into leads (team_id, first_name) values (1, 'logical')")
	waitFor(t, func() string {
		return fmt.Sprintf("rowcast_logical_slot_holder %v, want 1", series(addr, "rowcast_logical_slot_holder"))
	},
		func() bool { return series(addr, "rowcast_logical_slot_holder") == 1 })
	if v := series(addr, "rowcast_logical_slot_lag_bytes"); v < 0 {
		t.Errorf("rowcast_logical_slot_lag_bytes missing")
	}
	waitFor(t, func() string { return "a captured insert into public.leads" },
		func() bool {
			return series(addr, "rowcast_capture_changes_total", "table", "public.leads", "action", "insert") > 0
		})
}
