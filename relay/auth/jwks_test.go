package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// idp serves a JSON Web Key Set that a test changes at will, counting
// requests; while down it answers 503.
type idp struct {
	mu       sync.Mutex
	set      []byte
	down     bool
	requests atomic.Int64
	srv      *httptest.Server
}

type idpKey struct {
	kid, alg string
	use      jwkset.USE
	key      crypto.PublicKey
}

func newIDP(t *testing.T, keys ...idpKey) *idp {
	p := &idp{}
	p.serve(t, keys...)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
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

// serve replaces the set served.
func (p *idp) serve(t *testing.T, keys ...idpKey) {
	t.Helper()
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, k := range keys {
		j, err := jwkset.NewJWKFromKey(k.key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			KID: k.kid, ALG: jwkset.ALG(k.alg), USE: k.use}})
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

func (p *idp) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// clock is a settable time for JWKS.MinInterval.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type fetchLog struct {
	mu     sync.Mutex
	errors int
	oks    int
}

func (l *fetchLog) record(err error, _ int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errors++
	} else {
		l.oks++
	}
}

func (l *fetchLog) counts() (oks, errs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.oks, l.errors
}

func newJWKSVerifier(t *testing.T, p *idp, c *clock, log *fetchLog) *Verifier {
	t.Helper()
	j, err := NewJWKS(JWKSOptions{URL: p.srv.URL, Now: c.now, OnFetch: log.record})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(Options{JWKS: j})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestJWKSKeysAndRotation(t *testing.T) {
	k := testKeys()
	p := newIDP(t, idpKey{kid: "k1", alg: "RS256", key: k["rsa"].Public()})
	c := &clock{}
	c.advance(time.Hour)
	log := &fetchLog{}
	v := newJWKSVerifier(t, p, c, log)
	claims := jwt.MapClaims{"sub": "u"}

	if _, err := v.Verify(signWith(t, "RS256", k["rsa"], "k1", claims)); err != nil {
		t.Fatalf("k1: %v", err)
	}
	if n := p.requests.Load(); n != 1 {
		t.Fatalf("%d fetches for the first token, want 1", n)
	}
	// The IdP rotates to k2. Within MinInterval of the last fetch an
	// unknown kid is refused without a fetch (a stream of made-up kids
	// cannot hammer the IdP) ...
	p.serve(t, idpKey{kid: "k1", alg: "RS256", key: k["rsa"].Public()}, idpKey{kid: "k2", alg: "RS256", key: k["rsa2"].Public()})
	c.advance(29 * time.Second)
	if _, err := v.Verify(signWith(t, "RS256", k["rsa2"], "k2", claims)); reasonOf(err) != ReasonKey {
		t.Fatalf("k2 within 30 s: %v, want key unknown", err)
	}
	if n := p.requests.Load(); n != 1 {
		t.Fatalf("%d fetches, want still 1", n)
	}
	// ... and after it the unknown kid refetches: the new key works
	// without a restart.
	c.advance(time.Second)
	if _, err := v.Verify(signWith(t, "RS256", k["rsa2"], "k2", claims)); err != nil {
		t.Fatalf("k2 after 30 s: %v", err)
	}
	if n := p.requests.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// Known kids never fetch.
	c.advance(time.Hour)
	for range 3 {
		if _, err := v.Verify(signWith(t, "RS256", k["rsa"], "k1", claims)); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.requests.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// A key dropped from the set is gone after the next fetch.
	p.serve(t, idpKey{kid: "k2", alg: "RS256", key: k["rsa2"].Public()})
	if _, err := v.Verify(signWith(t, "RS256", k["rsa"], "k3", claims)); reasonOf(err) != ReasonKey {
		t.Fatalf("unknown k3: %v", err)
	}
	if _, err := v.Verify(signWith(t, "RS256", k["rsa"], "k1", claims)); reasonOf(err) != ReasonKey {
		t.Fatalf("revoked k1: %v, want key unknown", err)
	}
	if oks, errs := log.counts(); oks != 3 || errs != 0 {
		t.Fatalf("OnFetch: %d ok, %d failed; want 3, 0", oks, errs)
	}
}

func TestJWKSKeyChecks(t *testing.T) {
	k := testKeys()
	p := newIDP(t,
		idpKey{kid: "rsa", alg: "RS256", key: k["rsa"].Public()},
		idpKey{kid: "ec", alg: "ES256", key: k["p256"].Public()},
		idpKey{kid: "noalg", key: k["rsa2"].Public()},
		idpKey{kid: "enc", use: jwkset.UseEnc, key: k["p384"].Public()},
		idpKey{kid: "ed", key: k["ed"].Public()},
	)
	c := &clock{}
	v := newJWKSVerifier(t, p, c, &fetchLog{})
	claims := jwt.MapClaims{"sub": "u"}
	tests := []struct {
		name, alg, key, kid string
		reason              Reason
	}{
		{"RS256 by kid", "RS256", "rsa", "rsa", ""},
		{"key without alg takes its family", "PS256", "rsa2", "noalg", ""},
		{"EdDSA", "EdDSA", "ed", "ed", ""},
		{"no kid tries every key that fits", "ES256", "p256", "", ""},
		{"key's alg differs from the token's", "RS384", "rsa", "rsa", ReasonKey},
		{"kid of a key of another family", "RS256", "rsa", "ec", ReasonKey},
		{"encryption key never verifies", "ES384", "p384", "enc", ReasonKey},
		{"HMAC signed with the JWKS public key", "HS256", "", "rsa", ReasonAlgorithm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var key any = k[tt.key]
			if tt.alg == "HS256" {
				key = pkixPEM(t, k["rsa"].Public())
			}
			_, err := v.Verify(signWith(t, tt.alg, key, tt.kid, claims))
			if reasonOf(err) != tt.reason || (tt.reason == "" && err != nil) {
				t.Fatalf("Verify error = %v, want reason %q", err, tt.reason)
			}
		})
	}
}

// TestJWKSDownAtStartAndStale: a set that cannot be fetched refuses every
// token until it can; a set fetched once keeps serving while the IdP is
// down, and each failure is reported.
func TestJWKSDownAtStartAndStale(t *testing.T) {
	k := testKeys()
	p := newIDP(t, idpKey{kid: "k1", alg: "ES256", key: k["p256"].Public()})
	p.setDown(true)
	c := &clock{}
	log := &fetchLog{}
	j, err := NewJWKS(JWKSOptions{URL: p.srv.URL, Now: c.now, OnFetch: log.record, Refresh: time.Hour, MinInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(Options{JWKS: j})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- j.Run(ctx) }()
	<-j.Fetched()
	tok := signWith(t, "ES256", k["p256"], "k1", jwt.MapClaims{"sub": "u"})
	if _, err := v.Verify(tok); reasonOf(err) != ReasonKey {
		t.Fatalf("while down: %v, want key unknown", err)
	}
	if oks, errs := log.counts(); oks != 0 || errs != 1 {
		t.Fatalf("OnFetch: %d ok, %d failed; want 0, 1", oks, errs)
	}
	p.setDown(false)
	c.advance(time.Hour)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("once up: %v", err)
	}
	p.setDown(true)
	c.advance(time.Hour)
	if _, err := v.Verify(signWith(t, "ES256", k["p256"], "k9", jwt.MapClaims{"sub": "u"})); reasonOf(err) != ReasonKey {
		t.Fatalf("unknown kid while down: %v", err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("stale set while down: %v", err)
	}
	if oks, errs := log.counts(); oks != 1 || errs != 2 {
		t.Fatalf("OnFetch: %d ok, %d failed; want 1, 2", oks, errs)
	}
	cancel()
	if err := <-ran; err != context.Canceled {
		t.Fatalf("Run = %v", err)
	}
}

// TestJWKSConcurrentUnknownKid: many sessions presenting a new kid at once
// cause one fetch, and all are accepted.
func TestJWKSConcurrentUnknownKid(t *testing.T) {
	k := testKeys()
	p := newIDP(t, idpKey{kid: "k1", alg: "EdDSA", key: k["ed"].Public()})
	v := newJWKSVerifier(t, p, &clock{}, &fetchLog{})
	tok := signWith(t, "EdDSA", k["ed"], "k1", jwt.MapClaims{"sub": "u"})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := v.Verify(tok)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := p.requests.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

func TestNewJWKSBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://idp/jwks", "/jwks.json", "https://"} {
		if _, err := NewJWKS(JWKSOptions{URL: u}); err == nil {
			t.Errorf("NewJWKS(%q) accepted", u)
		}
	}
}

// TestIdentityProviderShapes verifies tokens shaped as Supabase Auth,
// Auth0, Clerk and Keycloak issue them (their algorithms, key ids and
// claims) with the configuration the README gives for each: the JWKS URL
// and the issuer, plus the claim that names the teams.
func TestIdentityProviderShapes(t *testing.T) {
	k := testKeys()
	p := newIDP(t,
		idpKey{kid: "supabase-es256", alg: "ES256", use: jwkset.UseSig, key: k["p256"].Public()},
		idpKey{kid: "auth0-rs256", alg: "RS256", use: jwkset.UseSig, key: k["rsa"].Public()},
		idpKey{kid: "ins_clerk", alg: "RS256", use: jwkset.UseSig, key: k["rsa2"].Public()},
		idpKey{kid: "kc-sig", alg: "RS256", use: jwkset.UseSig, key: k["rsa"].Public()},
		idpKey{kid: "kc-enc", alg: "RSA-OAEP", use: jwkset.UseEnc, key: k["rsa2"].Public()},
	)
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name      string
		issuer    string
		teamClaim string
		alg, kid  string
		key       crypto.Signer
		claims    jwt.MapClaims
		user      string
		teams     string
	}{
		{"Supabase Auth (asymmetric keys, teams from a custom access token hook)", "https://abcd.supabase.co/auth/v1", "app_metadata.teams", "ES256", "supabase-es256", k["p256"],
			jwt.MapClaims{"iss": "https://abcd.supabase.co/auth/v1", "sub": "7f8e2c1a-0b4d-4e2f-9a6b-3c5d7e9f1a2b", "aud": "authenticated", "role": "authenticated",
				"exp": exp, "app_metadata": map[string]any{"provider": "email", "teams": []any{7, 9}}},
			"7f8e2c1a-0b4d-4e2f-9a6b-3c5d7e9f1a2b", "7,9"},
		{"Auth0 (a namespaced claim set by an Action)", "https://crm.eu.auth0.com/", "https://crm.example.com/teams", "RS256", "auth0-rs256", k["rsa"],
			jwt.MapClaims{"iss": "https://crm.eu.auth0.com/", "sub": "auth0|64f1c2", "aud": []any{"https://api.crm.example.com", "https://crm.eu.auth0.com/userinfo"},
				"exp": exp, "scope": "openid profile", "https://crm.example.com/teams": []any{"7"}},
			"auth0|64f1c2", "7"},
		{"Clerk (session token v2, the active organization)", "https://clerk.crm.example.com", "o.id", "RS256", "ins_clerk", k["rsa2"],
			jwt.MapClaims{"iss": "https://clerk.crm.example.com", "sub": "user_2abc", "azp": "https://crm.example.com", "sid": "sess_1", "v": 2,
				"exp": exp, "nbf": time.Now().Add(-5 * time.Second).Unix(), "o": map[string]any{"id": "org_2xyz", "rol": "admin", "slg": "acme"}},
			"user_2abc", "org_2xyz"},
		{"Keycloak (a group membership mapper)", "https://sso.crm.example.com/realms/crm", "groups", "RS256", "kc-sig", k["rsa"],
			jwt.MapClaims{"iss": "https://sso.crm.example.com/realms/crm", "sub": "f2b1c3d4-5e6f-4a1b-8c9d-0e1f2a3b4c5d", "aud": "account", "typ": "Bearer",
				"azp": "crm-web", "exp": exp, "groups": []any{"team-7", "team-9"}},
			"f2b1c3d4-5e6f-4a1b-8c9d-0e1f2a3b4c5d", "team-7,team-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := NewJWKS(JWKSOptions{URL: p.srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier(Options{JWKS: j, Issuer: tt.issuer, TeamClaim: tt.teamClaim})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(signWith(t, tt.alg, tt.key, tt.kid, tt.claims))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.UserID != tt.user || strings.Join(got.TeamIDs, ",") != tt.teams {
				t.Fatalf("principal %+v, want user %s, teams %s", got, tt.user, tt.teams)
			}
		})
	}
}

// A fetch that brings no key the relay accepts keeps the last set (and is
// reported as failed): it would otherwise refuse every token.
func TestJWKSEmptySetKeepsTheLastOne(t *testing.T) {
	k := testKeys()
	p := newIDP(t, idpKey{kid: "k1", alg: "RS256", key: k["rsa"].Public()})
	c := &clock{}
	log := &fetchLog{}
	v := newJWKSVerifier(t, p, c, log)
	tok := signWith(t, "RS256", k["rsa"], "k1", jwt.MapClaims{"sub": "u"})
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	p.serve(t)
	c.advance(time.Hour)
	if _, err := v.Verify(signWith(t, "RS256", k["rsa"], "k2", jwt.MapClaims{"sub": "u"})); reasonOf(err) != ReasonKey {
		t.Fatalf("unknown kid: %v", err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("k1 after an empty set: %v", err)
	}
	if oks, errs := log.counts(); oks != 1 || errs != 1 {
		t.Fatalf("OnFetch: %d ok, %d failed; want 1, 1", oks, errs)
	}
}

// A token without a key id signed with a key the provider rotated in is
// accepted once the set is fetched again (at most once every MinInterval).
func TestJWKSRotationWithoutKid(t *testing.T) {
	k := testKeys()
	p := newIDP(t, idpKey{kid: "a", alg: "ES256", key: k["p256"].Public()})
	c := &clock{}
	v := newJWKSVerifier(t, p, c, &fetchLog{})
	if _, err := v.Verify(signWith(t, "ES256", k["p256"], "", jwt.MapClaims{"sub": "u"})); err != nil {
		t.Fatal(err)
	}
	p.serve(t, idpKey{kid: "b", alg: "RS256", key: k["rsa"].Public()})
	tok := signWith(t, "RS256", k["rsa"], "", jwt.MapClaims{"sub": "u"})
	if _, err := v.Verify(tok); reasonOf(err) != ReasonKey {
		t.Fatalf("within MinInterval: %v, want key unknown", err)
	}
	c.advance(time.Minute)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("after MinInterval: %v", err)
	}
}
