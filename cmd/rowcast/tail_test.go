package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Frames as docs/protocol.md shows them.
const (
	welcomeFrame = `{"type":"welcome","protocol":1,"sessionId":"s_9f2c","userId":"3",` +
		`"teamIds":["7"],"position":"p0","heartbeatMs":25000,"expiresAt":"2026-11-25T20:05:15Z"}`
	updatedFrame = `{"type":"event","event":"escrow:updated","position":"p2",` +
		`"data":{"entityType":"escrow","entityId":"42","action":"updated","teamId":"7","userId":"3","escrowId":"42",` +
		`"changes":{"status":"closed","purchase_price":450000.00},"committedAt":"2026-11-25T18:05:15.123456Z"}}`
	createdFrame = `{"type":"event","event":"escrow:created","position":"p1",` +
		`"data":{"entityType":"escrow","entityId":"43","action":"created","teamId":"7","userId":"3","escrowId":"43",` +
		`"escrow":{"id":43,"team_id":"7","property_address":"12 Oak St","city":"Austin","status":"open",` +
		`"purchase_price":525000.00,"notes":null,"created_at":"2026-11-25T18:05:15.2Z",` +
		`"description":"Four-bedroom colonial, detached garage, pool","closing_date":"2026-12-20",` +
		`"listing_agent":"Dana"},"committedAt":"2026-11-25T18:05:15.200Z"}}`
	deletedFrame = `{"type":"event","event":"escrow:deleted","position":"p3",` +
		`"data":{"entityType":"escrow","entityId":"42","action":"deleted","teamId":"7","escrowId":"42",` +
		`"committedAt":"2026-11-25T18:05:16Z"}}`
)

func TestFormatEvent(t *testing.T) {
	long := strings.Repeat("x", 60)
	var many strings.Builder
	for i := range 30 {
		fmt.Fprintf(&many, `"column_%02d":"value %02d",`, i, i)
	}
	tests := []struct {
		name     string
		frame    string
		want     string
		toStderr bool
	}{
		{
			name:  "updated",
			frame: updatedFrame,
			want:  "18:05:15.123 escrow:updated   team 7  escrow 42  by user 3  status=closed purchase_price=450000.00",
		},
		{
			name:  "created shows a handful of fields",
			frame: createdFrame,
			want: `18:05:15.200 escrow:created   team 7  escrow 43  by user 3  property_address="12 Oak St" city=Austin ` +
				`status=open purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
		},
		{
			name:  "deleted",
			frame: deletedFrame,
			want:  "18:05:16.000 escrow:deleted   team 7  escrow 42",
		},
		{
			name: "request id and numeric ids",
			frame: `{"type":"event","event":"lead:updated","position":"p4","data":{"entityType":"lead","entityId":9,` +
				`"action":"updated","teamId":7,"userId":3,"requestId":"req-1","leadId":"9","changes":{"score":null,` +
				`"tags":["hot", "new"],"meta":{"a": 1}},"committedAt":"2026-11-25T18:05:15.123456Z"}}`,
			want: `18:05:15.123 lead:updated     team 7  lead 9  by user 3  req req-1  score=null tags=["hot","new"] meta={"a":1}`,
		},
		{
			name: "values are cut and escaped",
			frame: `{"type":"event","event":"escrow:updated","position":"p5","data":{"entityType":"escrow","entityId":"42",` +
				`"action":"updated","teamId":"7","changes":{"notes":"` + long + `","memo":"a\nb\u001b[31m","eq":"a=b"},` +
				`"committedAt":"2026-11-25T18:05:15.123456Z"}}`,
			want: `18:05:15.123 escrow:updated   team 7  escrow 42  notes=` + long[:39] + `… memo="a\nb\x1b[31m" eq="a=b"`,
		},
		{
			name: "legacy data:update",
			frame: `{"type":"event","event":"data:update","position":"p6","data":{"entityType":"escrow","entityId":"42",` +
				`"action":"update","userId":"3","teamId":"7","data":{"status":"closed"}}}`,
			want: `--:--:--.--- data:update      team 7  escrow 42  by user 3  update  status=closed`,
		},
		{
			name: "ai task started",
			frame: `{"type":"event","event":"ai:task:started","position":"p7","data":{"taskId":"5f0c9e7a-3b1d-4c2e-9f00-1234567890ab",` +
				`"taskType":"csv_import","message":"Queued","timestamp":"2026-11-25T18:05:17Z"}}`,
			want: `18:05:17.000 ai:task:started  task 5f0c9e7a…  [--------------------] 0%  csv_import: Queued`,
		},
		{
			name: "ai task progress",
			frame: `{"type":"event","event":"ai:task:progress","position":"p8","data":{"taskId":"5f0c9e7a-3b1d-4c2e-9f00-1234567890ab",` +
				`"progress":45,"message":"Parsing CSV row 45/100","timestamp":"2026-11-25T18:05:17.5Z"}}`,
			want: `18:05:17.500 ai:task:progress  task 5f0c9e7a…  [#########-----------] 45%  Parsing CSV row 45/100`,
		},
		{
			name: "ai task completed",
			frame: `{"type":"event","event":"ai:task:completed","position":"p9","data":{"taskId":"5f0c9e7a-3b1d-4c2e-9f00-1234567890ab",` +
				`"result":{"rows":100,"skipped":0},"message":"Imported 100 rows","timestamp":"2026-11-25T18:05:18Z"}}`,
			want: `18:05:18.000 ai:task:completed  task 5f0c9e7a…  [####################] done  Imported 100 rows  result={"rows":100,"skipped":0}`,
		},
		{
			name: "ai task failed",
			frame: `{"type":"event","event":"ai:task:failed","position":"p10","data":{"taskId":"12",` +
				`"error":"CSV header lacks column \"email\"","timestamp":"2026-11-25T18:05:19.25Z"}}`,
			want: `18:05:19.250 ai:task:failed   task 12  failed: CSV header lacks column "email"`,
		},
		{name: "welcome", frame: welcomeFrame, want: "connected as user 3, teams 7, session s_9f2c", toStderr: true},
		{
			name:     "resumed",
			frame:    `{"type":"resumed","position":"p12","replayed":12}`,
			want:     "resumed: replayed 12 events",
			toStderr: true,
		},
		{
			name:     "resync",
			frame:    `{"type":"resync","reason":"history_expired"}`,
			want:     "resync (history_expired): refetch over the REST API",
			toStderr: true,
		},
		{
			name:     "resync after truncate",
			frame:    `{"type":"resync","reason":"truncate","entityType":"escrow"}`,
			want:     "resync (truncate of escrow): refetch over the REST API",
			toStderr: true,
		},
		{
			name:     "error",
			frame:    `{"type":"error","code":"unauthorized","message":"token expired"}`,
			want:     "error unauthorized: token expired",
			toStderr: true,
		},
		{name: "error without message", frame: `{"type":"error","code":"rate_limited"}`, want: "error rate_limited", toStderr: true},
		{name: "forbidden", frame: `{"type":"error","code":"forbidden","teamId":"7"}`, want: "error forbidden team 7", toStderr: true},
		{
			name:     "subscribed",
			frame:    `{"type":"subscribed","entities":["escrow","lead"]}`,
			want:     "subscribed to escrow, lead",
			toStderr: true,
		},
		{name: "pong", frame: `{"type":"pong","id":7}`, want: "pong 7", toStderr: true},
		{name: "not json", frame: "hello\nthere", want: "unreadable frame: hello there", toStderr: true},
		{
			name: "line cut at 200 runes",
			frame: `{"type":"event","event":"escrow:updated","position":"p5","data":{"entityType":"escrow","entityId":"42",` +
				`"action":"updated","teamId":"7","changes":{` + strings.TrimSuffix(many.String(), ",") + `},` +
				`"committedAt":"2026-11-25T18:05:15.123456Z"}}`,
			want: "18:05:15.123 escrow:updated   team 7  escrow 42  " +
				`column_00="value 00" column_01="value 01" column_02="value 02" column_03="value 03" ` +
				`column_04="value 04" column_05="value 05" column_06="value 06" col…`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, toStderr := formatEvent([]byte(tt.frame), tailStyle{loc: time.UTC})
			if got != tt.want {
				t.Errorf("line\n got %q\nwant %q", got, tt.want)
			}
			if toStderr != tt.toStderr {
				t.Errorf("toStderr = %v, want %v", toStderr, tt.toStderr)
			}
			if n := utf8.RuneCountInString(got); n > tailMaxLineRunes {
				t.Errorf("line has %d runes, want at most %d", n, tailMaxLineRunes)
			}
		})
	}
}

func TestFormatEventZoneAndColour(t *testing.T) {
	got, _ := formatEvent([]byte(deletedFrame), tailStyle{loc: time.FixedZone("UTC+1", 3600), color: true})
	want := "\x1b[2m19:05:16.000\x1b[0m \x1b[31mescrow:deleted\x1b[0m   team 7  escrow 42"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTailColorEnabled(t *testing.T) {
	if tailColorEnabled(&bytes.Buffer{}) {
		t.Error("colour enabled for a buffer")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if tailColorEnabled(f) {
		t.Error("colour enabled for a regular file")
	}
}

func TestNormalizeTailURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8080/ws"},
		{"http://relay.local:8080", "ws://relay.local:8080/ws"},
		{"https://relay.example.com/", "wss://relay.example.com/ws"},
		{"https://relay.example.com/rt/ws?x=1", "wss://relay.example.com/rt/ws?x=1"},
		{"WSS://relay.example.com#frag", "wss://relay.example.com/ws"},
	}
	for _, tt := range tests {
		u, err := normalizeTailURL(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if got := u.String(); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"ftp://relay/ws", "relay:8080", "ws://", "http://[::1"} {
		if _, err := normalizeTailURL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestTailUsage(t *testing.T) {
	t.Setenv(tailTokenEnv, "s3cret-env-token")
	for _, args := range [][]string{
		{"--bogus"},
		{"extra"},
		{"--count", "-1"},
		{"--count", "many"},
		{"--url", "ftp://relay/ws"},
	} {
		var out, errb bytes.Buffer
		if code := runTail(t.Context(), args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
		if out.Len() != 0 {
			t.Errorf("%q: stdout %q", args, out.String())
		}
	}
	var out, errb bytes.Buffer
	if code := runTail(t.Context(), []string{"-h"}, &out, &errb); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	if !strings.Contains(errb.String(), "-no-reconnect") {
		t.Errorf("-h: usage lacks the flags: %q", errb.String())
	}
	if strings.Contains(errb.String(), "s3cret") {
		t.Errorf("-h printed the token: %q", errb.String())
	}
}

// wsScript runs the n-th (from 1) connection of a test relay.
type wsScript func(n int, c *websocket.Conn, r *http.Request) error

// startRelay starts a test relay that runs script for each WebSocket
// connection. Each script's result arrives on the returned channel.
func startRelay(t *testing.T, script wsScript) (*httptest.Server, <-chan error, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	results := make(chan error, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			http.NotFound(w, r)
			return
		}
		n := int(conns.Add(1))
		up := websocket.Upgrader{}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			results <- fmt.Errorf("connection %d: upgrade: %w", n, err)
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := script(n, c, r); err != nil {
			results <- fmt.Errorf("connection %d: %w", n, err)
			return
		}
		results <- nil
	}))
	t.Cleanup(srv.Close)
	return srv, results, &conns
}

// waitScripts waits for n script results and fails the test on errors.
func waitScripts(t *testing.T, results <-chan error, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case err := <-results:
			if err != nil {
				t.Error(err)
			}
		case <-timeout:
			t.Fatal("test relay: a connection did not finish")
		}
	}
}

func send(c *websocket.Conn, frames ...string) error {
	for _, f := range frames {
		if err := c.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return nil
}

// expect reads one message and compares it.
func expect(c *websocket.Conn, want string) error {
	_, msg, err := c.ReadMessage()
	if err != nil {
		return fmt.Errorf("read %s: %w", want, err)
	}
	if string(msg) != want {
		return fmt.Errorf("got %s, want %s", msg, want)
	}
	return nil
}

// closeWith sends a close frame and waits for the client's reply.
func closeWith(c *websocket.Conn, code int, text string) error {
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second)); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return waitClientClose(c, code)
}

// waitClientClose reads until the client closes with the given code.
func waitClientClose(c *websocket.Conn, code int) error {
	for {
		_, msg, err := c.ReadMessage()
		if err == nil {
			return fmt.Errorf("unexpected message %s", msg)
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			return fmt.Errorf("client close: %w, want code %d", err, code)
		}
		return nil
	}
}

func checkAuth(r *http.Request, token string) error {
	if got, want := r.Header.Get("Authorization"), "Bearer "+token; got != want {
		return fmt.Errorf("Authorization %q, want %q", got, want)
	}
	return nil
}

// runTailTest runs tail against srv and fails the test when it outlives 10s.
func runTailTest(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = runTail(ctx, args, &out, &errb)
	if ctx.Err() != nil {
		t.Fatalf("tail did not finish; stdout %q stderr %q", out.String(), errb.String())
	}
	return code, out.String(), errb.String()
}

// lines returns the lines of s without their HH:MM:SS.mmm column, which
// depends on the local time zone.
func lines(s string) []string {
	var ls []string
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if len(l) > 13 {
			l = l[13:]
		}
		ls = append(ls, l)
	}
	return ls
}

func TestTailReconnectsWithSince(t *testing.T) {
	const subscribe = `{"type":"subscribe","entities":["escrow"]}`
	srv, results, conns := startRelay(t, func(n int, c *websocket.Conn, r *http.Request) error {
		if err := checkAuth(r, "tok-secret"); err != nil {
			return err
		}
		switch n {
		case 1:
			if r.URL.Query().Has("since") {
				return fmt.Errorf("first connection with since=%s", r.URL.Query().Get("since"))
			}
			if err := send(c, welcomeFrame); err != nil {
				return err
			}
			if err := expect(c, subscribe); err != nil {
				return err
			}
			if err := send(c, createdFrame, updatedFrame); err != nil {
				return err
			}
			return closeWith(c, 4008, "slow consumer")
		case 2:
			if got := r.URL.Query().Get("since"); got != "p2" {
				return fmt.Errorf("reconnected with since=%q, want p2", got)
			}
			if err := send(c, strings.Replace(welcomeFrame, `"p0"`, `"p-head"`, 1)); err != nil {
				return err
			}
			if err := expect(c, subscribe); err != nil {
				return err
			}
			if err := send(c, `{"type":"resumed","position":"p2","replayed":0}`, deletedFrame); err != nil {
				return err
			}
			return waitClientClose(c, websocket.CloseNormalClosure)
		}
		return errors.New("unexpected connection")
	})

	code, stdout, stderr := runTailTest(t, "--url", srv.URL, "--token", "tok-secret", "--entities", "escrow", "--count", "3")
	waitScripts(t, results, 2)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	want := []string{
		`escrow:created   team 7  escrow 43  by user 3  property_address="12 Oak St" city=Austin status=open ` +
			`purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
		"escrow:updated   team 7  escrow 42  by user 3  status=closed purchase_price=450000.00",
		"escrow:deleted   team 7  escrow 42",
	}
	if got := lines(stdout); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout\n got %q\nwant %q", got, want)
	}
	for _, s := range []string{
		"connected as user 3, teams 7, session s_9f2c",
		"connection closed: 4008 slow consumer; reconnecting in ",
		"resumed: replayed 0 events",
	} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q: %q", s, stderr)
		}
	}
	if strings.Contains(stdout+stderr, "tok-secret") {
		t.Error("the token was printed")
	}
}

func TestTailReconnectsAfterDrop(t *testing.T) {
	srv, results, _ := startRelay(t, func(n int, c *websocket.Conn, r *http.Request) error {
		switch n {
		case 1:
			if err := send(c, welcomeFrame); err != nil {
				return err
			}
			// Nothing processed yet: the welcome's head is the position.
			return c.NetConn().Close()
		case 2:
			if got := r.URL.Query().Get("since"); got != "p0" {
				return fmt.Errorf("reconnected with since=%q, want p0", got)
			}
			if err := send(c, welcomeFrame, createdFrame); err != nil {
				return err
			}
			return c.NetConn().Close()
		case 3:
			if got := r.URL.Query().Get("since"); got != "p1" {
				return fmt.Errorf("reconnected with since=%q, want p1", got)
			}
			if err := send(c, welcomeFrame, `{"type":"resync","reason":"history_expired"}`, updatedFrame); err != nil {
				return err
			}
			return waitClientClose(c, websocket.CloseNormalClosure)
		}
		return errors.New("unexpected connection")
	})
	code, stdout, stderr := runTailTest(t, "--url", srv.URL+"/ws", "--count", "2")
	waitScripts(t, results, 3)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if got := lines(stdout); len(got) != 2 {
		t.Errorf("stdout %q, want 2 events", got)
	}
	if !strings.Contains(stderr, "resync (history_expired)") || !strings.Contains(stderr, "1006") {
		t.Errorf("stderr %q", stderr)
	}
}

func TestTailJSONAndEntityFilter(t *testing.T) {
	welcome := `{"type":"welcome", "protocol":1,"sessionId":"s_1","userId":"3","teamIds":["7"],"position":"p0","heartbeatMs":25000,"expiresAt":null}`
	subscribed := `{"type":"subscribed","entities":["escrow"]}`
	lead := `{"type":"event","event":"lead:created","position":"p1","data":{"entityType":"lead","entityId":"5","action":"created","teamId":"7","leadId":"5","lead":{"name":"Ann"},"committedAt":"2026-11-25T18:05:15Z"}}`
	task := `{"type":"event","event":"ai:task:progress","position":"p2","data":{"taskId":"t1","progress":10,"message":"m","timestamp":"2026-11-25T18:05:15Z"}}`
	srv, results, _ := startRelay(t, func(n int, c *websocket.Conn, r *http.Request) error {
		if err := send(c, welcome); err != nil {
			return err
		}
		if err := expect(c, `{"type":"subscribe","entities":["escrow"]}`); err != nil {
			return err
		}
		if err := send(c, subscribed, lead, task, updatedFrame); err != nil {
			return err
		}
		return waitClientClose(c, websocket.CloseNormalClosure)
	})
	code, stdout, stderr := runTailTest(t, "--url", srv.URL, "--json", "--entities", " escrow, ", "--count", "2")
	waitScripts(t, results, 1)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if want := welcome + "\n" + subscribed + "\n" + task + "\n" + updatedFrame + "\n"; stdout != want {
		t.Errorf("stdout\n got %q\nwant %q", stdout, want)
	}
}

func TestTailFinalCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code int
		text string
		want string
	}{
		{4401, "", "closed by relay: 4401 unauthorized"},
		{4400, "bad first message", "closed by relay: 4400 bad first message"},
		{4429, "rate limited", "closed by relay: 4429 rate limited"},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			srv, results, conns := startRelay(t, func(n int, c *websocket.Conn, r *http.Request) error {
				if err := send(c, `{"type":"error","code":"unauthorized","message":"token expired"}`); err != nil {
					return err
				}
				return closeWith(c, tc.code, tc.text)
			})
			code, stdout, stderr := runTailTest(t, "--url", srv.URL, "--token", "tok-secret")
			waitScripts(t, results, 1)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if !strings.Contains(stderr, "error unauthorized: token expired\n") || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q, want %q", stderr, tc.want)
			}
			if strings.Contains(stderr, "tok-secret") {
				t.Error("the token was printed")
			}
		})
	}
}

func TestTailNoReconnect(t *testing.T) {
	srv, results, conns := startRelay(t, func(n int, c *websocket.Conn, r *http.Request) error {
		if err := send(c, welcomeFrame); err != nil {
			return err
		}
		return closeWith(c, websocket.CloseGoingAway, "relay draining")
	})
	code, _, stderr := runTailTest(t, "--url", srv.URL, "--no-reconnect")
	waitScripts(t, results, 1)
	if code != 1 || conns.Load() != 1 {
		t.Errorf("exit %d after %d connections, want 1 after 1", code, conns.Load())
	}
	if !strings.Contains(stderr, "1001 relay draining") {
		t.Errorf("stderr %q", stderr)
	}
}

func TestTailForbidden(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "origin not allowed", http.StatusForbidden)
	}))
	defer srv.Close()
	code, _, stderr := runTailTest(t, "--url", srv.URL)
	if code != 1 || hits.Load() != 1 {
		t.Errorf("exit %d after %d requests, want 1 after 1", code, hits.Load())
	}
	if !strings.Contains(stderr, "HTTP 403 Forbidden: origin not allowed") {
		t.Errorf("stderr %q", stderr)
	}
}

func TestTailStopsWithContext(t *testing.T) {
	t.Setenv(tailTokenEnv, "env-token")
	welcomed := make(chan struct{})
	srv, results, _ := startRelay(t, func(n int, c *websocket.Conn, r *http.Request) error {
		if err := checkAuth(r, "env-token"); err != nil {
			return err
		}
		if got := r.URL.Query().Get("since"); got != "p-start" {
			return fmt.Errorf("since=%q, want p-start", got)
		}
		if err := send(c, welcomeFrame); err != nil {
			return err
		}
		// The subscribe shows tail has read the welcome.
		if err := expect(c, `{"type":"subscribe","entities":["escrow","lead"]}`); err != nil {
			return err
		}
		close(welcomed)
		return waitClientClose(c, websocket.CloseNormalClosure)
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	var out, errb bytes.Buffer
	go func() {
		done <- runTail(ctx, []string{"--url", srv.URL, "--since", "p-start", "--entities", "escrow,lead"}, &out, &errb)
	}()
	select {
	case <-welcomed:
	case err := <-results:
		t.Fatalf("relay: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not connect")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d, want 0; stderr %q", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop")
	}
	waitScripts(t, results, 1)
}
