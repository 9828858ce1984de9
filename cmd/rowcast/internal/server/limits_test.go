package server_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/config"
)

// The connection limits (limits.*), origin patterns and trusted proxies,
// on both transports: each refusal is shown on the wire and in
// rowcast_sessions_refused_total{reason}.

// refusedCount returns rowcast_sessions_refused_total{reason}.
func refusedCount(t *testing.T, e *env, reason string) float64 {
	t.Helper()
	return labelled(t, e, "rowcast_sessions_refused_total", "reason", reason)
}

// attempt is one connection attempt's outcome: upgraded (Conn set), or
// refused with an HTTP answer.
type attempt struct {
	Conn       *websocket.Conn
	Status     int
	RetryAfter string
	Body       string
}

// upgrade tries a WebSocket upgrade of path ("/ws?access_token=…",
// "/socket.io/?EIO=4&transport=websocket") with header.
func upgrade(t *testing.T, e *env, path string, header http.Header) attempt {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+e.relay.Addr()+path, header)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		return attempt{Conn: c}
	}
	if resp == nil {
		t.Fatalf("upgrade %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return attempt{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Body: strings.TrimSpace(string(b))}
}

// pollingHandshake opens a Socket.IO session on long-polling.
func pollingHandshake(t *testing.T, e *env, header http.Header) attempt {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+e.relay.Addr()+"/socket.io/?EIO=4&transport=polling", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return attempt{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Body: string(b)}
}

// wsPath is /ws with tok as access_token.
func wsPath(tok string) string { return "/ws?access_token=" + tok }

const sioWS = "/socket.io/?EIO=4&transport=websocket"

// refusedWith checks that a was refused with status and a Retry-After.
func refusedWith(t *testing.T, what string, a attempt, status int) {
	t.Helper()
	if a.Conn != nil {
		t.Fatalf("%s: upgraded, want HTTP %d", what, status)
	}
	if a.Status != status || a.RetryAfter == "" {
		t.Fatalf("%s: HTTP %d, Retry-After %q (%s); want %d with Retry-After", what, a.Status, a.RetryAfter, a.Body, status)
	}
}

// TestLimitSessionsPerUser: a user at limits.sessions_per_user is refused
// with 429 before the /ws upgrade when the token is valid, and answered
// CONNECT_ERROR "too many sessions" on Socket.IO (WebSocket and polling);
// a bad token is still upgraded and closed 4401; other users are not
// affected; a closed session frees its place.
func TestLimitSessionsPerUser(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Limits.SessionsPerUser = 2 })
	tok := userToken(t, "2", 1)
	first := e.connect(tok)
	e.connect(tok)

	a := upgrade(t, e, wsPath(tok), nil)
	refusedWith(t, "/ws, third session of user 2", a, http.StatusTooManyRequests)
	if n := refusedCount(t, e, "sessions_per_user"); n != 1 {
		t.Fatalf("sessions_per_user refusals = %v, want 1", n)
	}

	// A bad token is no user's: upgraded, told, closed 4401 as ever.
	bad, err := e.dial("abc.def", "", nil)
	if err != nil {
		t.Fatalf("bad token: %v, want the upgrade", err)
	}
	if f := bad.next(); f.Code != "unauthorized" {
		t.Fatalf("bad token: %s", f.Raw)
	}
	if code := bad.closed(); code != 4401 {
		t.Fatalf("bad token: close %d, want 4401", code)
	}
	// Another user is not affected.
	e.connect(userToken(t, "3", 1))

	// Socket.IO: the CONNECT of user 2 is answered with a CONNECT_ERROR
	// (socket.io-client does not retry it) and the transport closed.
	sio := upgrade(t, e, sioWS, nil).Conn
	if f := sioRead(t, sio); !strings.HasPrefix(f, "0{") {
		t.Fatalf("open packet: %q", f)
	}
	if err := sio.WriteMessage(websocket.TextMessage, []byte(`40{"token":"`+tok+`"}`)); err != nil {
		t.Fatal(err)
	}
	if f := sioRead(t, sio); f != `44{"message":"too many sessions"}` {
		t.Fatalf("socket.io CONNECT of a user at the limit: %q", f)
	}
	sioClosed(t, sio)
	if n := refusedCount(t, e, "sessions_per_user"); n != 2 {
		t.Fatalf("sessions_per_user refusals = %v, want 2", n)
	}
	// Over polling too.
	if frames := pollingConnect(t, e, tok); !slicesContain(frames, `44{"message":"too many sessions"}`) {
		t.Fatalf("socket.io polling CONNECT of a user at the limit: %q", frames)
	}
	if n := refusedCount(t, e, "sessions_per_user"); n != 3 {
		t.Fatalf("sessions_per_user refusals = %v, want 3", n)
	}

	// A closed session gives its place back.
	sessions := func() float64 { return metric(t, e, "rowcast_sessions") }
	before := sessions()
	first.drop()
	waitFor(t, func() string { return fmt.Sprintf("rowcast_sessions %v below %v", sessions(), before) },
		func() bool { return sessions() < before })
	if a := upgrade(t, e, wsPath(tok), nil); a.Conn == nil {
		t.Fatalf("after a session closed: HTTP %d %s, want the upgrade", a.Status, a.Body)
	}
}

// pollingConnect opens a Socket.IO session on polling, CONNECTs with tok
// and returns the packets of the polls that follow until the session ends
// (the close packet "1") or a CONNECT answer and three polls came.
func pollingConnect(t *testing.T, e *env, tok string) []string {
	t.Helper()
	h := pollingHandshake(t, e, nil)
	if h.Status != 200 || !strings.HasPrefix(h.Body, `0{"sid":"`) {
		t.Fatalf("polling handshake: %d %s", h.Status, h.Body)
	}
	sid, _, _ := strings.Cut(strings.TrimPrefix(h.Body, `0{"sid":"`), `"`)
	base := "http://" + e.relay.Addr() + "/socket.io/?EIO=4&transport=polling&sid=" + sid
	resp, err := http.Post(base, "text/plain", strings.NewReader(`40{"token":"`+tok+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var frames []string
	for range 3 {
		resp, err := http.Get(base)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			break
		}
		frames = append(frames, strings.Split(string(b), "\x1e")...)
		if slicesContain(frames, "1") {
			break
		}
	}
	return frames
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// sioClosed reads a raw Socket.IO connection until it closes.
func sioClosed(t *testing.T, c *websocket.Conn) {
	t.Helper()
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		if err == nil {
			if string(b) == "2" {
				continue
			}
			t.Fatalf("frame %q, want the close", b)
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection not closed")
		}
		return
	}
}

// TestLimitSessionsPerAddress: past limits.sessions_per_address open
// sessions (authenticated or not, either protocol) from one address, new
// ones get 429 with Retry-After before the upgrade, on /ws, Socket.IO's
// WebSocket and its polling handshake.
func TestLimitSessionsPerAddress(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Limits.SessionsPerAddress = 3 })
	e.connect(userToken(t, "2", 1))
	sioDial(t, e, userToken(t, "3", 1))
	// A Socket.IO connection that has not CONNECTed yet holds a place too.
	if a := upgrade(t, e, sioWS, nil); a.Conn == nil {
		t.Fatalf("third session: HTTP %d %s", a.Status, a.Body)
	}
	refusedWith(t, "/ws", upgrade(t, e, wsPath(userToken(t, "4", 2)), nil), http.StatusTooManyRequests)
	refusedWith(t, "socket.io websocket", upgrade(t, e, sioWS, nil), http.StatusTooManyRequests)
	p := pollingHandshake(t, e, nil)
	refusedWith(t, "socket.io polling", p, http.StatusTooManyRequests)
	if !strings.HasPrefix(p.Body, `{"code":3,"message":"too many sessions from this address`) {
		t.Errorf("socket.io polling refusal body %s, want Engine.IO's error JSON", p.Body)
	}
	if n := refusedCount(t, e, "sessions_per_address"); n != 3 {
		t.Fatalf("sessions_per_address refusals = %v, want 3", n)
	}
}

// TestLimitSessionsTotal: past limits.sessions_total open sessions, new
// ones get 503 with Retry-After, on both transports.
func TestLimitSessionsTotal(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Limits.SessionsTotal = 2 })
	e.connect(userToken(t, "2", 1))
	sioDial(t, e, userToken(t, "3", 1))
	refusedWith(t, "/ws", upgrade(t, e, wsPath(userToken(t, "4", 2)), nil), http.StatusServiceUnavailable)
	refusedWith(t, "socket.io websocket", upgrade(t, e, sioWS, nil), http.StatusServiceUnavailable)
	refusedWith(t, "socket.io polling", pollingHandshake(t, e, nil), http.StatusServiceUnavailable)
	if n := refusedCount(t, e, "sessions_total"); n != 3 {
		t.Fatalf("sessions_total refusals = %v, want 3", n)
	}
}

// TestLimitUpgradeRate: one address opening sessions faster than
// limits.upgrade_rate past limits.upgrade_burst gets 429 with
// Retry-After (the seconds until its bucket holds one again) before the
// upgrade, on both transports; polls of an open polling session are not
// upgrades and pass.
func TestLimitUpgradeRate(t *testing.T) {
	e := startRelay(t, func(c *config.Config) {
		c.Limits.UpgradeRate = 0.01 // one per 100 s: none comes back during the test
		c.Limits.UpgradeBurst = 3
	})
	e.connect(userToken(t, "2", 1))
	sioDial(t, e, userToken(t, "3", 1))
	h := pollingHandshake(t, e, nil)
	if h.Status != 200 {
		t.Fatalf("third session: %d %s", h.Status, h.Body)
	}
	for _, a := range []struct {
		what string
		a    attempt
	}{
		{"/ws", upgrade(t, e, wsPath(userToken(t, "4", 2)), nil)},
		{"socket.io websocket", upgrade(t, e, sioWS, nil)},
		{"socket.io polling", pollingHandshake(t, e, nil)},
	} {
		refusedWith(t, a.what, a.a, http.StatusTooManyRequests)
		// 100 s per upgrade, less what refilled since the burst.
		if s, err := strconv.Atoi(a.a.RetryAfter); err != nil || s < 90 || s > 100 {
			t.Errorf("%s: Retry-After %q, want about 100", a.what, a.a.RetryAfter)
		}
	}
	if n := refusedCount(t, e, "upgrade_rate"); n != 3 {
		t.Fatalf("upgrade_rate refusals = %v, want 3", n)
	}
	// The open polling session still polls.
	sid, _, _ := strings.Cut(strings.TrimPrefix(h.Body, `0{"sid":"`), `"`)
	resp, err := http.Post("http://"+e.relay.Addr()+"/socket.io/?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("40"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a POST of an open polling session: %d", resp.StatusCode)
	}
}

// TestUpgradeFloodFromOneAddress: 500 upgrades fired at once from one
// address with the default limits: the burst (200) and what the rate (50/s)
// refills pass, the rest get 429, each counted; a session opened before
// the flood goes on receiving events.
func TestUpgradeFloodFromOneAddress(t *testing.T) {
	e := startRelay(t, nil)
	watcher := e.connect(userToken(t, "2", 1))
	const n = 500
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	sem := make(chan struct{}, 50)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Tokens of 50 users, so the per-user limit is not what refuses.
			c, resp, err := websocket.DefaultDialer.Dial("ws://"+e.relay.Addr()+wsPath(userToken(t, fmt.Sprint(100+i%50), 9)), nil)
			switch {
			case err == nil:
				ok.Add(1)
				c.Close()
			case resp != nil && resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "":
				refused.Add(1)
			default:
				t.Errorf("upgrade %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if max := 200 + int64(50*elapsed.Seconds()) + 1; ok.Load() > max || refused.Load() == 0 {
		t.Fatalf("%d upgraded and %d refused in %v; want at most %d upgraded", ok.Load(), refused.Load(), elapsed, max)
	}
	if got := refusedCount(t, e, "upgrade_rate"); got != float64(refused.Load()) {
		t.Fatalf("upgrade_rate refusals = %v, want %d", got, refused.Load())
	}
	t.Logf("%d upgraded, %d refused in %v", ok.Load(), refused.Load(), elapsed)
	e.exec("insert into leads (team_id, first_name) values (1, 'after the flood')")
	watcher.event("lead:created")
}

// TestSubscribeEntitiesLimit: a subscribe listing more entities than
// sessions.max_subscribe_entities is answered bad_request, counted, and
// changes nothing; the session stays open.
func TestSubscribeEntitiesLimit(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Sessions.MaxSubscribeEntities = 3 })
	c := e.connect(userToken(t, "2", 1))
	c.send(`{"type":"subscribe","entities":["lead"]}`)
	if f := c.next(); f.Type != "subscribed" {
		t.Fatalf("got %s", f.Raw)
	}
	c.send(`{"type":"subscribe","entities":["escrow","listing","client","appointment"]}`)
	f := c.next()
	if f.Type != "error" || f.Code != "bad_request" || f.Message != "subscribe lists 4 entities; at most 3 are allowed" {
		t.Fatalf("got %s, want bad_request", f.Raw)
	}
	if n := labelled(t, e, "rowcast_client_messages_refused_total", "reason", "subscribe_entities"); n != 1 {
		t.Fatalf("subscribe_entities refusals = %v, want 1", n)
	}
	// Still open, still filtered to leads.
	e.exec("insert into escrows (team_id, property_address, city, state, zip_code, purchase_price) values (1, 'a', 'b', 'TX', '1', 1)")
	e.exec("insert into leads (team_id, first_name) values (1, 'still here')")
	c.event("lead:created")
	c.send(`{"type":"subscribe","entities":["escrow","listing","lead"]}`)
	if f := c.next(); string(f.Raw) != `{"type":"subscribed","entities":["escrow","listing","lead"]}` {
		t.Fatalf("got %s", f.Raw)
	}
}

// TestSocketIOConnectTimeoutCounted: a Socket.IO connection that sends no
// CONNECT within sessions.connect_timeout is closed, on WebSocket and on
// polling, and counted; a connected one is not.
func TestSocketIOConnectTimeoutCounted(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Sessions.ConnectTimeout = 300 * time.Millisecond })
	connected := sioDial(t, e, userToken(t, "2", 1))

	idle := upgrade(t, e, sioWS, nil).Conn
	if f := sioRead(t, idle); !strings.HasPrefix(f, "0{") {
		t.Fatalf("open packet: %q", f)
	}
	sioClosed(t, idle)
	if n := refusedCount(t, e, "connect_timeout"); n != 1 {
		t.Fatalf("connect_timeout = %v, want 1", n)
	}

	h := pollingHandshake(t, e, nil)
	sid, _, _ := strings.Cut(strings.TrimPrefix(h.Body, `0{"sid":"`), `"`)
	var got string
	for got != "1" && !strings.HasSuffix(got, "\x1e1") {
		resp, err := http.Get("http://" + e.relay.Addr() + "/socket.io/?EIO=4&transport=polling&sid=" + sid)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("poll: %d %s, want the close packet first", resp.StatusCode, b)
		}
		got = string(b)
	}
	if n := refusedCount(t, e, "connect_timeout"); n != 2 {
		t.Fatalf("connect_timeout = %v, want 2", n)
	}

	e.exec("insert into leads (team_id, first_name) values (1, 'connected')")
	if f := sioRead(t, connected); !strings.HasPrefix(f, `42["lead:created"`) {
		t.Fatalf("connected client: %q", f)
	}
	if n := refusedCount(t, e, "connect_timeout"); n != 2 {
		t.Fatalf("connect_timeout = %v after a connected session, want 2", n)
	}
}

// TestTrustedProxies: X-Forwarded-For decides the client address only
// when the peer is a trusted proxy; the per-address limit then counts the
// forwarded address, else the peer.
func TestTrustedProxies(t *testing.T) {
	xff := func(a string) http.Header { return http.Header{"X-Forwarded-For": {a}} }
	behind := startRelay(t, func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.1"}
		c.Limits.SessionsPerAddress = 1
	})
	if a := upgrade(t, behind, sioWS, xff("198.51.100.1")); a.Conn == nil {
		t.Fatalf("first client: HTTP %d", a.Status)
	}
	refusedWith(t, "same client again", upgrade(t, behind, sioWS, xff("203.0.113.9, 198.51.100.1")), http.StatusTooManyRequests)
	if a := upgrade(t, behind, sioWS, xff("198.51.100.2")); a.Conn == nil {
		t.Fatalf("another client behind the proxy: HTTP %d %s", a.Status, a.Body)
	}
	if p := pollingHandshake(t, behind, xff("198.51.100.3")); p.Status != 200 {
		t.Fatalf("a third client, polling: HTTP %d %s", p.Status, p.Body)
	}

	direct := startRelay(t, func(c *config.Config) { c.Limits.SessionsPerAddress = 1 })
	if a := upgrade(t, direct, sioWS, xff("198.51.100.1")); a.Conn == nil {
		t.Fatalf("first client: HTTP %d", a.Status)
	}
	// Not behind a trusted proxy: the header is the client's own claim.
	refusedWith(t, "a forged X-Forwarded-For", upgrade(t, direct, sioWS, xff("198.51.100.2")), http.StatusTooManyRequests)
}

// TestOriginPatternsOnBothTransports: an origin pattern admits the
// subdomains of its domain, with its scheme and port, on /ws and on
// Socket.IO (WebSocket and polling), and nothing else.
func TestOriginPatternsOnBothTransports(t *testing.T) {
	e := startRelay(t, func(c *config.Config) { c.Origins = []string{"https://*.example.com"} })
	tok := userToken(t, "2", 1)
	for origin, want := range map[string]bool{
		"https://app.example.com":      true,
		"https://eu.app.example.com":   true,
		"https://example.com":          false,
		"http://app.example.com":       false,
		"https://app.example.com:8443": false,
		"https://app.example.com.evil": false,
		"https://evilexample.com":      false,
	} {
		hdr := http.Header{"Origin": {origin}}
		for _, path := range []string{wsPath(tok), sioWS} {
			a := upgrade(t, e, path, hdr)
			if got := a.Conn != nil; got != want || !want && a.Status != http.StatusForbidden {
				t.Errorf("%s from %s: upgraded %v (HTTP %d), want %v", path, origin, got, a.Status, want)
			}
		}
		p := pollingHandshake(t, e, hdr)
		if got := p.Status == 200; got != want || !want && p.Status != http.StatusForbidden {
			t.Errorf("polling from %s: HTTP %d, want allowed %v", origin, p.Status, want)
		}
	}
}
