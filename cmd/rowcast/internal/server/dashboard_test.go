package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/relay"
)

// dashboardFile is the Grafana dashboard the chart ships, from this
// package's directory.
const dashboardFile = "../../../../charts/rowcast/dashboards/rowcast.json"

// dashboard is what the test reads of the Grafana dashboard.
type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Inputs []struct {
		Name     string `json:"name"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title       string `json:"title"`
		FieldConfig struct {
			Defaults struct {
				Unit string `json:"unit"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

var (
	metricName = regexp.MustCompile(`\browcast_[a-z_]+`)
	secondsFam = regexp.MustCompile(`_seconds(_bucket|_sum|_count)?$`)
	rateCall   = regexp.MustCompile(`\b(i?rate|increase)\(`)
)

// unitFits reports why expr cannot return what a panel of unit shows: "s"
// queries *_seconds families, "bytes" *_bytes ones, "ops" (per second)
// takes the rate of counters (*_total), "short" (a count) reads gauges
// that are neither seconds nor bytes, without a rate.
func unitFits(unit, expr string) error {
	names := metricName.FindAllString(expr, -1)
	if len(names) == 0 {
		return fmt.Errorf("no rowcast metric in %q", expr)
	}
	for _, n := range names {
		var ok bool
		switch unit {
		case "s":
			ok = secondsFam.MatchString(n)
		case "bytes":
			ok = strings.HasSuffix(n, "_bytes")
		case "ops":
			ok = strings.HasSuffix(n, "_total") && rateCall.MatchString(expr)
		case "short":
			ok = !secondsFam.MatchString(n) && !strings.HasSuffix(n, "_bytes") &&
				!strings.HasSuffix(n, "_total") && !rateCall.MatchString(expr)
		default:
			return fmt.Errorf("unit %q is none the test knows (s, bytes, ops, short)", unit)
		}
		if !ok {
			return fmt.Errorf("unit %q does not fit %s in %q", unit, n, expr)
		}
	}
	return nil
}

// TestDashboardImportable: the dashboard can be imported by hand (a
// Prometheus data source input and variable) and every panel claims a unit
// its queries return.
func TestDashboardImportable(t *testing.T) {
	d := readDashboard(t)
	if d.UID != "rowcast" || d.Title != "rowcast" {
		t.Errorf("uid %q title %q, want rowcast", d.UID, d.Title)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v, want one Prometheus data source DS_PROMETHEUS", d.Inputs)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" {
		t.Errorf("template variables %v, want datasource, job and instance", vars)
	}
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if err := unitFits(p.FieldConfig.Defaults.Unit, tg.Expr); err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
		}
	}
}

// TestUnitFitsCatchesMismatches: the unit check refuses a panel whose
// unit its query cannot return.
func TestUnitFitsCatchesMismatches(t *testing.T) {
	wrong := map[string]string{
		"s":     `sum(rowcast_sessions)`,
		"bytes": `max(rowcast_capture_behind_seconds)`,
		"ops":   `sum(rowcast_events_sent_total)`,
		"short": `sum(rate(rowcast_events_sent_total[1m]))`,
	}
	for unit, expr := range wrong {
		if unitFits(unit, expr) == nil {
			t.Errorf("unit %q accepted for %q", unit, expr)
		}
	}
	if unitFits("percent", `rowcast_sessions`) == nil {
		t.Error("an unknown unit accepted")
	}
}

// TestDashboardOnPrometheus runs Debian's prometheus scraping a relay
// under load (sessions on both transports, writes, a refused upgrade, a
// bad token, a resume, a resync, disconnects) and evaluates every panel's
// query through its HTTP API: each returns data that is a number.
func TestDashboardOnPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus not on PATH (.ci/run installs Debian's prometheus package)")
		}
		t.Skip("prometheus not on PATH (apt-get install prometheus)")
	}
	d := readDashboard(t)
	e := startRelay(t, nil)
	prom := startPrometheus(t, bin, e.relay.Addr())
	prom.waitFor(t, `up{job="rowcast"} == 1`, 1)

	// Load.
	tok := userToken(t, "2", 1)
	reader := e.connect(tok)
	sio := sioDial(t, e, tok)
	for i := range 10 {
		e.exec("insert into leads (team_id, first_name) values (1, $1)", fmt.Sprint("p", i))
		reader.event("lead:created")
	}
	resumeFrom := reader.last
	e.exec("update leads set first_name = 'p-updated' where first_name = 'p0'")
	reader.event("lead:updated")
	e.exec("delete from leads where first_name = 'p1'")
	reader.event("lead:deleted")
	if a := upgrade(t, e, wsPath(tok), http.Header{"Origin": {"https://evil.example"}}); a.Status != http.StatusForbidden {
		t.Fatalf("foreign origin: HTTP %d, want 403", a.Status)
	}
	bad, _ := signWith("another-secret-another-secret-0123456", map[string]any{"sub": "2", "teamId": 1})
	if c, err := e.dial(bad, "", nil); err != nil {
		t.Fatal(err)
	} else if code := c.closed(); code != 4401 {
		t.Fatalf("bad token closed %d, want 4401", code)
	}
	resumed, err := e.dial(tok, "since="+resumeFrom, nil)
	if err != nil {
		t.Fatal(err)
	}
	resumed.next() // welcome
	resumed.event("lead:updated")
	resumed.event("lead:deleted")
	if r := resumed.next(); r.Type != "resumed" {
		t.Fatalf("want resumed, got %s", r.Raw)
	}
	resumed.drop()
	foreign := relay.Position{Epoch: strings.Repeat("ab", 16), Pos: relay.TickEnd(0)}.Encode()
	if c, err := e.dial(tok, "since="+foreign, nil); err != nil {
		t.Fatal(err)
	} else if c.next(); c.next().Type != "resync" {
		t.Fatal("no resync for a foreign position")
	}
	closeWith(t, sio, websocket.CloseNormalClosure)

	// Prometheus has scraped the whole load once it sees every resync.
	prom.waitFor(t, `sum(rowcast_resyncs_total)`, series(e.relay.Addr(), "rowcast_resyncs_total"))
	prom.waitFor(t, `sum(rowcast_disconnects_total{code="1000"})`, 1)

	vars := strings.NewReplacer("$__rate_interval", "1m", "${job}", ".*", "$job", ".*", "${instance}", ".*", "$instance", ".*")
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			expr := vars.Replace(tg.Expr)
			res, err := prom.query(expr)
			if err != nil {
				t.Errorf("panel %q: %s: %v", p.Title, expr, err)
				continue
			}
			if !res.hasNumber() {
				t.Errorf("panel %q: %s returned no number: %+v", p.Title, expr, res)
			}
			if err := unitFits(p.FieldConfig.Defaults.Unit, tg.Expr); err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
		}
	}
}

// promServer is a prometheus process scraping a relay.
type promServer struct {
	base string // http://127.0.0.1:port
	log  *lockedBuffer
	done chan struct{}
}

// startPrometheus runs bin scraping the /metrics of target every second,
// with its data in a temporary directory, and waits until it is ready.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rowcast
    static_configs:
      - targets: [%q]
`, target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// A free port: another process may take it before prometheus binds
	// it, which the readiness wait then reports with prometheus's log.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	p := &promServer{base: "http://" + addr, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("prometheus exited:\n%s", p.log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", p.log.String())
		}
	}
}

// queryResult is the data of an instant query's answer.
type queryResult struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	} `json:"result"`
}

// hasNumber reports whether a sample of the result is a number (not NaN:
// a quantile of a histogram that observed nothing).
func (r queryResult) hasNumber() bool {
	for _, s := range r.Result {
		v, ok := s.Value[1].(string)
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return true
		}
	}
	return false
}

// query evaluates expr at the current time through the HTTP API.
func (p *promServer) query(expr string) (queryResult, error) {
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return queryResult{}, fmt.Errorf("query: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string      `json:"status"`
		Error  string      `json:"error"`
		Data   queryResult `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return queryResult{}, fmt.Errorf("query: HTTP %d: %w", resp.StatusCode, err)
	}
	if body.Status != "success" {
		return queryResult{}, fmt.Errorf("query: %s: %s", body.Status, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return queryResult{}, fmt.Errorf("query: result type %s, want vector", body.Data.ResultType)
	}
	return body.Data, nil
}

// waitFor polls expr until one of its samples is at least want (30 s).
func (p *promServer) waitFor(t *testing.T, expr string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := p.query(expr)
		if err == nil {
			for _, s := range res.Result {
				if v, ok := s.Value[1].(string); ok {
					if f, err := strconv.ParseFloat(v, 64); err == nil && f >= want {
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus: %s did not reach %v in 30s (last %+v, %v):\n%s", expr, want, res, err, p.log.String())
		}
		select {
		case <-p.done:
			t.Fatalf("prometheus exited:\n%s", p.log.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
