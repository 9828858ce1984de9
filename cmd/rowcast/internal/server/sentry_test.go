package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rowcast/rowcast/config"
)

// sentrySink stands in for Sentry's ingest endpoint: it keeps the raw
// envelopes and the kind tag of every event in them.
type sentrySink struct {
	mu    sync.Mutex
	raw   []byte
	kinds []string
	srv   *httptest.Server
}

func newSentrySink(t *testing.T) *sentrySink {
	s := &sentrySink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			z, err := gzip.NewReader(r.Body)
			if err != nil {
				return
			}
			body = z
		}
		b, _ := io.ReadAll(body)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.raw = append(s.raw, b...)
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev struct {
				Tags map[string]string `json:"tags"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Tags["kind"] != "" {
				s.kinds = append(s.kinds, ev.Tags["kind"])
			}
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sentrySink) dsn() string {
	return strings.Replace(s.srv.URL, "http://", "http://key@", 1) + "/7"
}

func (s *sentrySink) seen() ([]string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.kinds...), string(s.raw)
}

// TestSentryReportsLogicalFailures: with sentry.dsn set, logical capture
// that keeps failing (its publication dropped) is reported once, and so
// is the slot recreated when install brings the publication back; no
// payload holds a token or a row's data.
func TestSentryReportsLogicalFailures(t *testing.T) {
	sink := newSentrySink(t)
	e := startRelay(t, func(c *config.Config) {
		logicalMode(c)
		c.Sentry.DSN = sink.dsn()
		c.Sentry.Environment = "test"
	})
	e.shutdown()
	e.logicalRetry = 100 * time.Millisecond
	e.start()
	tok := userToken(t, "2", 1)
	c := e.connect(tok)
	e.exec("insert into leads (team_id, first_name) values (1, 'Secretive Sam')")
	c.event("lead:created")

	e.exec("drop publication rowcast")
	e.exec("insert into leads (team_id, first_name) values (1, 'Hidden Hannah')")
	has := func(kind string) bool {
		kinds, _ := sink.seen()
		for _, k := range kinds {
			if k == kind {
				return true
			}
		}
		return false
	}
	waitFor(t, func() string { k, _ := sink.seen(); return "a capture_failing event; have " + strings.Join(k, ",") },
		func() bool { return has("capture_failing") })
	install(t, e.cfg)
	if f := c.next(); f.Type != "resync" {
		t.Fatalf("want resync after the slot was recreated, got %s", f.Raw)
	}
	waitFor(t, func() string { k, _ := sink.seen(); return "a slot_invalidated event; have " + strings.Join(k, ",") },
		func() bool { return has("slot_invalidated") })
	e.shutdown() // flushes
	kinds, raw := sink.seen()
	counts := map[string]int{}
	for _, k := range kinds {
		counts[k]++
	}
	if counts["capture_failing"] != 1 || counts["slot_invalidated"] != 1 {
		t.Errorf("events by kind %v, want one capture_failing and one slot_invalidated", counts)
	}
	for _, secret := range []string{tok, "Secretive Sam", "Hidden Hannah", secret} {
		if strings.Contains(raw, secret) {
			t.Errorf("a Sentry payload holds %q", secret)
		}
	}
}
