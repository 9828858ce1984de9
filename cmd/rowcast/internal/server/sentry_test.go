package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/pgtest"
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

// TestReadinessFollowsDatabase: a relay whose database connection is cut
// (a proxy between them stops forwarding and drops every connection)
// answers /readyz 503 while it lasts, reports database_lost to Sentry once
// the loss lasts past Options.DatabaseLostAfter, and answers 200 again when
// the database is back, delivering what was committed meanwhile; in both
// capture modes.
func TestReadinessFollowsDatabase(t *testing.T) {
	for _, mode := range restartModes {
		t.Run(mode.name, func(t *testing.T) {
			sink := newSentrySink(t)
			var proxy *pgtest.Proxy
			var direct string
			e := startRelay(t, func(c *config.Config) {
				if mode.tweak != nil {
					mode.tweak(c)
				}
				direct = c.Database.URL
				proxy = throughProxy(t, c)
				c.Sentry.DSN = sink.dsn()
			})
			e.shutdown()
			e.lostAfter, e.logicalRetry = time.Second, 100*time.Millisecond
			e.start()
			db, err := pgxpool.New(context.Background(), direct)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			c := e.connect(userToken(t, "2", 1))
			if code, body := e.readyz(); code != http.StatusOK {
				t.Fatalf("/readyz %d %q before the cut", code, body)
			}

			proxy.Cut()
			var body string
			waitFor(t, func() string { return "/readyz 503 during the cut; last body: " + body }, func() bool {
				var code int
				code, body = e.readyz()
				return code == http.StatusServiceUnavailable
			})
			if !strings.Contains(body, "not capturing") {
				t.Errorf("/readyz body during the cut %q, want it to say it is not capturing", body)
			}
			waitFor(t, func() string { k, _ := sink.seen(); return "a database_lost event; have " + strings.Join(k, ",") },
				func() bool { k, _ := sink.seen(); return slices.Contains(k, "database_lost") })
			if _, err := db.Exec(context.Background(), "insert into leads (team_id, first_name) values (1, 'During the cut')"); err != nil {
				t.Fatal(err)
			}

			proxy.Restore()
			waitFor(t, func() string { return "/readyz 200 after the cut" }, func() bool {
				code, _ := e.readyz()
				return code == http.StatusOK
			})
			if f := c.event("lead:created"); !strings.Contains(string(f.Raw), "During the cut") {
				t.Errorf("after the cut the session got %s", f.Raw)
			}
			e.shutdown() // flushes
			kinds, _ := sink.seen()
			if n := strings.Count(strings.Join(kinds, ","), "database_lost"); n != 1 {
				t.Errorf("Sentry events %v, want one database_lost", kinds)
			}
		})
	}
}
