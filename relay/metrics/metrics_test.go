package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value returns the value of counter c.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Close codes outside the documented ones share one label value, so the
// code label stays bounded whatever clients send.
func TestDisconnectCodesBounded(t *testing.T) {
	m := New(prometheus.NewRegistry(), "v1")
	m.Disconnected(1000)
	m.Disconnected(4999)
	m.Disconnected(3000)
	if v := value(t, m.disconnects.WithLabelValues("1000")); v != 1 {
		t.Errorf(`disconnects{code="1000"} = %v, want 1`, v)
	}
	if v := value(t, m.disconnects.WithLabelValues("other")); v != 2 {
		t.Errorf(`disconnects{code="other"} = %v, want 2`, v)
	}
	ch := make(chan prometheus.Metric, 100)
	m.disconnects.Collect(ch)
	if n := len(ch); n != len(closeCodes)+1 {
		t.Errorf("%d disconnect series, want %d", n, len(closeCodes)+1)
	}
}

// Captured counts each table's changes under its action.
func TestCapturedByTableAndAction(t *testing.T) {
	m := New(prometheus.NewRegistry(), "v1")
	m.CaptureTables([]string{"public.leads"})
	m.Captured([]TableChanges{{"public.leads", "insert", 3}, {"public.leads", "delete", 1}}, time.Now())
	for action, want := range map[string]float64{"insert": 3, "update": 0, "delete": 1, "truncate": 0} {
		if v := value(t, m.changes.WithLabelValues("public.leads", action)); v != want {
			t.Errorf("changes{action=%q} = %v, want %v", action, v, want)
		}
	}
	if v := value(t, m.txns); v != 1 {
		t.Errorf("transactions = %v, want 1", v)
	}
}

// A nil *Metrics measures nothing and does not panic.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Disconnected(1000)
	m.SessionAccepted("ws")
	m.Subscribed("ws", 1)
	m.CaptureTables([]string{"t"})
	m.Captured([]TableChanges{{"t", "insert", 1}}, time.Now())
}
