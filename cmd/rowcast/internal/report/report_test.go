package report

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// sentryServer stands in for Sentry: it records the events of every
// envelope posted to it, and their raw bytes.
type sentryServer struct {
	mu     sync.Mutex
	events []map[string]any
	raw    [][]byte
	srv    *httptest.Server
}

func newSentryServer(t *testing.T) *sentryServer {
	s := &sentryServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			z, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Errorf("gzip: %v", err)
				return
			}
			body = z
		}
		b, _ := io.ReadAll(body)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.raw = append(s.raw, b)
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sc.Scan() // envelope header
		for sc.Scan() {
			var item struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(sc.Bytes(), &item)
			if !sc.Scan() {
				break
			}
			if item.Type == "event" {
				var ev map[string]any
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					t.Errorf("event: %v", err)
				}
				s.events = append(s.events, ev)
			}
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sentryServer) dsn() string {
	return strings.Replace(s.srv.URL, "http://", "http://publickey@", 1) + "/1"
}

func (s *sentryServer) got() ([]map[string]any, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.events...), string(bytes.Join(s.raw, nil))
}

func newReporter(t *testing.T, s *sentryServer, now func() time.Time) *Reporter {
	t.Helper()
	r, err := New(Options{DSN: s.dsn(), Environment: "test", Release: "v1.2.3", Replica: "relay-0", Now: now})
	if err != nil || r == nil {
		t.Fatalf("New: %v, %v", r, err)
	}
	return r
}

const (
	secretToken = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyIn0.c2VjcmV0LXNpZ25hdHVyZQ"
	secretRow   = "1234 Secret Lane"
)

// TestFailureKinds: one event per failure kind, tagged with the kind,
// carrying the release and replica name, and nothing of a token or a row,
// even when the error's text holds them.
func TestFailureKinds(t *testing.T) {
	s := newSentryServer(t)
	r := newReporter(t, s, nil)
	pgErr := &pgconn.PgError{Severity: "ERROR", Code: "23505", Message: "duplicate key value violates unique constraint",
		Detail: "Key (property_address)=(" + secretRow + ") already exists.", SchemaName: "public", TableName: "escrows", ConstraintName: "escrows_address_key"}
	r.Failure(KindCapture, fmt.Errorf("read changelog: %w", pgErr))
	r.Failure(KindDatabaseLost, errors.New("dial tcp 10.0.0.5:5432: connect: connection refused"))
	r.Failure(KindSlot, fmt.Errorf("slot %q is invalidated", "rowcast"))
	func() {
		defer func() { _ = recover() }()
		defer r.Recover()
		panic(fmt.Errorf("handling token %s", "redacted"))
	}()
	if !r.Flush(5 * time.Second) {
		t.Fatal("events not flushed")
	}
	events, raw := s.got()
	kinds := map[string]int{}
	for _, ev := range events {
		tags, _ := ev["tags"].(map[string]any)
		kind, _ := tags["kind"].(string)
		kinds[kind]++
		if ev["release"] != "v1.2.3" || ev["server_name"] != "relay-0" || ev["environment"] != "test" {
			t.Errorf("%s event: release %v, server_name %v, environment %v", kind, ev["release"], ev["server_name"], ev["environment"])
		}
		if _, ok := ev["request"]; ok {
			t.Errorf("%s event carries a request", kind)
		}
	}
	for _, k := range []string{KindCapture, KindDatabaseLost, KindSlot, KindPanic} {
		if kinds[k] != 1 {
			t.Errorf("%d events of kind %s, want 1 (all: %v)", kinds[k], k, kinds)
		}
	}
	if strings.Contains(raw, secretRow) || strings.Contains(raw, "duplicate key") {
		t.Errorf("a payload holds the PostgreSQL error's message or detail:\n%s", raw)
	}
	if !strings.Contains(raw, "SQLSTATE 23505") || !strings.Contains(raw, "escrows_address_key") {
		t.Errorf("the capture event lacks the SQLSTATE or constraint:\n%s", raw)
	}
}

// The same kind is sent at most once per Every.
func TestFailureRateLimited(t *testing.T) {
	s := newSentryServer(t)
	now := time.Unix(1_800_000_000, 0)
	r := newReporter(t, s, func() time.Time { return now })
	for range 5 {
		r.Failure(KindDatabaseLost, errors.New("connection refused"))
	}
	now = now.Add(time.Minute)
	r.Failure(KindDatabaseLost, errors.New("connection refused"))
	r.Flush(5 * time.Second)
	if events, _ := s.got(); len(events) != 2 {
		t.Fatalf("%d events, want 2", len(events))
	}
}

func TestNoDSN(t *testing.T) {
	r, err := New(Options{})
	if r != nil || err != nil {
		t.Fatalf("New without a DSN = %v, %v; want nil, nil", r, err)
	}
	r.Failure(KindPanic, errors.New("x")) // a nil Reporter does nothing
	if _, err := New(Options{DSN: "not a dsn"}); err == nil {
		t.Fatal("a bad DSN was accepted")
	}
}
