package server_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/rowcast/rowcast/config"
)

// testIDP serves a JSON Web Key Set, as an identity provider does; a test
// rotates its keys or takes it down.
type testIDP struct {
	mu   sync.Mutex
	set  []byte
	down bool
	srv  *httptest.Server
}

func newTestIDP(t *testing.T) *testIDP {
	p := &testIDP{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(p.set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// serve makes the set hold keys by kid, and the IdP answer.
func (p *testIDP) serve(t *testing.T, keys map[string]crypto.PublicKey) {
	t.Helper()
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for kid, k := range keys {
		j, err := jwkset.NewJWKFromKey(k, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgRS256, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.set, p.down = b, false
	p.mu.Unlock()
}

func (p *testIDP) setDown() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
}

const (
	idpIssuer   = "https://idp.test/"
	idpAudience = "crm-api"
)

// idpToken signs claims (sub 2 of team 1 from the IdP, for an hour,
// unless claims say otherwise) with alg and key, naming kid.
func idpToken(t *testing.T, alg string, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "2", "teamId": []any{1}, "iss": idpIssuer, "aud": idpAudience,
		"exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// idpRelay runs a relay that verifies tokens of p (and, as every test
// relay, HS256 tokens of the test secret), fetching its keys as often as
// tokens ask.
func idpRelay(t *testing.T, p *testIDP) *env {
	e := startRelay(t, func(c *config.Config) {
		c.Auth.JWKSURL = p.srv.URL + "/.well-known/jwks.json"
		c.Auth.Issuer, c.Auth.Audience = idpIssuer, idpAudience
	})
	e.shutdown()
	e.jwksMin = time.Nanosecond
	e.start()
	return e
}

// sioConnect opens a raw Socket.IO connection and sends a CONNECT with
// tok; it returns the connection and the reply.
func sioConnect(t *testing.T, e *env, tok string) (*websocket.Conn, string) {
	t.Helper()
	c := sioConnectWith(t, e, map[string]string{"token": tok})
	return c, sioRead(t, c)
}

// labelled returns the value of the counter name whose label has value,
// or 0 when there is none yet.
func labelled(t *testing.T, e *env, name, label, value string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// sioRefusedFrame sends a CONNECT with tok that is over the frame limit
// and checks that the relay closes the connection with 1009, sending no
// frame first; it returns nil.
func sioRefusedFrame(t *testing.T, e *env, tok string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+e.relay.Addr()+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if f := sioRead(t, c); !strings.HasPrefix(f, "0{") {
		t.Fatalf("open packet: %q", f)
	}
	a, _ := json.Marshal(map[string]string{"token": tok})
	// The relay may close before the whole frame is written, and the
	// write then fails: the read says how it closed.
	_ = c.WriteMessage(websocket.TextMessage, append([]byte("40"), a...))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if websocket.IsCloseError(err, websocket.CloseMessageTooBig) || errors.Is(err, syscall.ECONNRESET) {
			return nil
		}
		if err != nil {
			t.Fatalf("socket.io: %v, want close 1009", err)
		}
		if string(b) != "2" {
			t.Fatalf("socket.io: got %q, want close 1009", b)
		}
	}
}

// refusedEverywhere checks that tok is refused with msg on /ws (error
// frame, close 4401) and on Socket.IO (CONNECT_ERROR unauthorized), and
// that neither connection receives the events a good session of the same
// team receives meanwhile.
func refusedEverywhere(t *testing.T, e *env, tok, msg, reason string) {
	t.Helper()
	before := labelled(t, e, "rowcast_auth_failures_total", "reason", reason)
	want := before + 2
	good := e.connect(token(t, map[string]any{"sub": "9", "teamId": 1, "iss": idpIssuer, "aud": idpAudience}))
	ws, err := e.dial(tok, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var sio *websocket.Conn
	if int64(len(tok)) > e.cfg.Sessions.MaxMessageSize-64 {
		// The CONNECT frame carrying it is over the client frame limit.
		sio, want = sioRefusedFrame(t, e, tok), before+1
	} else {
		var reply string
		if sio, reply = sioConnect(t, e, tok); reply != `44{"message":"unauthorized"}` {
			t.Fatalf("socket.io CONNECT reply %q, want unauthorized", reply)
		}
	}
	e.exec("insert into leads (team_id, first_name) values (1, 'secret')")
	good.event("lead:created")
	f := ws.next()
	if f.Type != "error" || f.Code != "unauthorized" || f.Message != msg {
		t.Fatalf("/ws got %s, want unauthorized %q", f.Raw, msg)
	}
	if code := ws.closed(); code != 4401 {
		t.Fatalf("/ws close code %d, want 4401", code)
	}
	if n := labelled(t, e, "rowcast_auth_failures_total", "reason", reason); n != want {
		t.Errorf("rowcast_auth_failures_total{reason=%q} = %v, want %v", reason, n, want)
	}
	if sio == nil {
		return
	}
	// A probe the relay answers at once: any event sent to the refused
	// Socket.IO connection would arrive before its answer.
	if err := sio.WriteMessage(websocket.TextMessage, []byte("40/probe,")); err != nil {
		t.Fatal(err)
	}
	if f := sioRead(t, sio); !strings.HasPrefix(f, "44/probe,") {
		t.Fatalf("socket.io: got %q before the probe's answer, want nothing", f)
	}
}

// TestIdentityProviderTokens: tokens verified with the keys of an IdP's
// JWKS, on both transports; every bad token is refused and receives
// nothing; a key rotation is picked up without a restart.
func TestIdentityProviderTokens(t *testing.T) {
	k1, k2 := rsaKey(t), rsaKey(t)
	p := newTestIDP(t)
	p.serve(t, map[string]crypto.PublicKey{"k1": k1.Public()})
	e := idpRelay(t, p)

	pubPEM, err := x509.MarshalPKIXPublicKey(k1.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubPEM})
	enc := base64.RawURLEncoding
	none := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(`{"sub":"2","teamId":[1],"iss":"`+idpIssuer+`","aud":"`+idpAudience+`"}`)) + "."
	cases := []struct{ name, tok, msg, reason string }{
		{"missing", "", "token missing", "missing"},
		{"malformed", "abc.def", "token malformed", "malformed"},
		{"bad signature", idpToken(t, "RS256", k2, "k1", nil), "token signature invalid", "signature"},
		{"alg none", none, `token algorithm "none" not accepted`, "algorithm"},
		{"HMAC with the RSA public key as secret", idpToken(t, "HS256", pubPEM, "k1", nil), "token signature invalid", "signature"},
		{"expired", idpToken(t, "RS256", k1, "k1", jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}), "token expired", "expired"},
		{"not yet valid", idpToken(t, "RS256", k1, "k1", jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix()}), "token not valid yet", "not_yet"},
		{"wrong issuer", idpToken(t, "RS256", k1, "k1", jwt.MapClaims{"iss": "https://evil.test/"}), "token issuer mismatch", "issuer"},
		{"wrong audience", idpToken(t, "RS256", k1, "k1", jwt.MapClaims{"aud": "other-api"}), "token audience mismatch", "audience"},
		{"unknown kid", idpToken(t, "RS256", k2, "k9", nil), "token key unknown", "key"},
		{"oversized", idpToken(t, "RS256", k1, "k1", jwt.MapClaims{"pad": strings.Repeat("x", 9000)}), "token too large", "too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { refusedEverywhere(t, e.forT(t), tc.tok, tc.msg, tc.reason) })
	}

	t.Run("good token and rotation", func(t *testing.T) {
		e := e.forT(t)
		c := e.connect(idpToken(t, "RS256", k1, "k1", nil))
		_, reply := sioConnect(t, e, idpToken(t, "RS256", k1, "k1", nil))
		if !strings.HasPrefix(reply, `40{"sid":`) {
			t.Fatalf("socket.io CONNECT reply %q", reply)
		}
		e.exec("insert into leads (team_id, first_name) values (1, 'for k1')")
		c.event("lead:created")

		p.serve(t, map[string]crypto.PublicKey{"k1": k1.Public(), "k2": k2.Public()})
		c2 := e.connect(idpToken(t, "RS256", k2, "k2", nil))
		if _, reply := sioConnect(t, e, idpToken(t, "RS256", k2, "k2", nil)); !strings.HasPrefix(reply, `40{"sid":`) {
			t.Fatalf("socket.io CONNECT reply after rotation %q", reply)
		}
		e.exec("insert into leads (team_id, first_name) values (1, 'for k2')")
		c2.event("lead:created")
	})
}

// TestIdentityProviderDownAtStart: a relay whose JWKS cannot be fetched
// starts, refuses the IdP's tokens (counting the failed fetches) and
// accepts them once the IdP answers.
func TestIdentityProviderDownAtStart(t *testing.T) {
	k1 := rsaKey(t)
	p := newTestIDP(t)
	p.serve(t, map[string]crypto.PublicKey{"k1": k1.Public()})
	p.setDown()
	e := idpRelay(t, p)
	tok := idpToken(t, "RS256", k1, "k1", nil)
	refusedEverywhere(t, e, tok, "token key unknown", "key")
	if n := metric(t, e, "rowcast_auth_jwks_fetch_failures_total"); n < 1 {
		t.Fatalf("rowcast_auth_jwks_fetch_failures_total = %v, want at least 1", n)
	}
	p.serve(t, map[string]crypto.PublicKey{"k1": k1.Public()})
	c := e.connect(tok)
	e.exec("insert into leads (team_id, first_name) values (1, 'up')")
	c.event("lead:created")
	if n := metric(t, e, "rowcast_auth_jwks_keys"); n != 1 {
		t.Fatalf("rowcast_auth_jwks_keys = %v, want 1", n)
	}
}
