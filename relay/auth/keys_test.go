package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKeys are generated once: RSA generation is slow.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	must := func(k crypto.Signer, err error) crypto.Signer {
		if err != nil {
			panic(err)
		}
		return k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return map[string]crypto.Signer{
		"rsa":   must(rsa.GenerateKey(rand.Reader, 2048)),
		"rsa2":  must(rsa.GenerateKey(rand.Reader, 2048)),
		"p256":  must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)),
		"p384":  must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)),
		"p521":  must(ecdsa.GenerateKey(elliptic.P521(), rand.Reader)),
		"ed":    ed,
		"rsa1k": must(rsa.GenerateKey(rand.Reader, 1024)),
		"p224":  must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader)),
	}
})

// signWith signs claims with alg and key, naming kid when not empty.
func signWith(t testing.TB, alg string, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	return s
}

func pemOf(t testing.TB, blockType string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
}

func pkixPEM(t testing.TB, key crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "PUBLIC KEY", der)
}

func reasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func TestParsePublicKeys(t *testing.T) {
	k := testKeys()
	pub := func(name string) crypto.PublicKey { return k[name].Public() }
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub("p256"), k["p256"])
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k["rsa"])
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pem  []byte
		n    int
		err  string
	}{
		{name: "one RSA PKIX key", pem: pkixPEM(t, pub("rsa")), n: 1},
		{name: "PKCS1, EC, Ed25519 and a certificate", n: 4, pem: []byte(string(pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(pub("rsa").(*rsa.PublicKey)))) +
			"comment between blocks\n" + string(pkixPEM(t, pub("p384"))) + string(pkixPEM(t, pub("ed"))) + string(pemOf(t, "CERTIFICATE", cert)))},
		{name: "private key refused", pem: pemOf(t, "PRIVATE KEY", privDER), err: "give the public key only"},
		{name: "weak RSA refused", pem: pkixPEM(t, pub("rsa1k")), err: "1024 bits is too weak"},
		{name: "P-224 refused", pem: pkixPEM(t, pub("p224")), err: "P-224 is not accepted"},
		{name: "other block refused", pem: pemOf(t, "DH PARAMETERS", []byte{1}), err: "not a PUBLIC KEY"},
		{name: "not PEM", pem: []byte("-----BEGIN nonsense"), err: "no PEM block"},
		{name: "empty", pem: nil, err: "no key"},
		{name: "bad DER", pem: pemOf(t, "PUBLIC KEY", []byte{1, 2, 3}), err: "block 1 (PUBLIC KEY)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParsePublicKeys(tt.pem)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParsePublicKeys error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil || len(keys) != tt.n {
				t.Fatalf("ParsePublicKeys = %d keys, %v; want %d", len(keys), err, tt.n)
			}
		})
	}
}

func TestVerifyAsymmetric(t *testing.T) {
	k := testKeys()
	static := []crypto.PublicKey{k["rsa"].Public(), k["p256"].Public(), k["p384"].Public(), k["p521"].Public(), k["ed"].Public()}
	v, err := NewVerifier(Options{PublicKeys: static})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(v.Algorithms(), ","), "RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512,EdDSA"; got != want {
		t.Errorf("default algorithms = %s, want %s (no HMAC without a secret)", got, want)
	}
	claims := jwt.MapClaims{"sub": "u", "teamId": "7"}
	for _, c := range []struct{ alg, key string }{
		{"RS256", "rsa"}, {"RS384", "rsa"}, {"RS512", "rsa"}, {"PS256", "rsa"}, {"PS384", "rsa"}, {"PS512", "rsa"},
		{"ES256", "p256"}, {"ES384", "p384"}, {"ES512", "p521"}, {"EdDSA", "ed"},
	} {
		t.Run(c.alg, func(t *testing.T) {
			// A key id the static keys cannot match is ignored: every
			// static key of the family is tried.
			p, err := v.Verify(signWith(t, c.alg, k[c.key], "any-kid", claims))
			if err != nil || p.UserID != "u" {
				t.Fatalf("Verify = %+v, %v", p, err)
			}
		})
	}
	t.Run("key not configured", func(t *testing.T) {
		_, err := v.Verify(signWith(t, "RS256", k["rsa2"], "", claims))
		if reasonOf(err) != ReasonSignature {
			t.Fatalf("Verify error = %v, want a bad signature", err)
		}
	})
	t.Run("ES256 signature presented as ES384", func(t *testing.T) {
		tok := signWith(t, "ES256", k["p256"], "", claims)
		parts := strings.Split(tok, ".")
		parts[0] = encodeSeg(`{"alg":"ES384","typ":"JWT"}`)
		if _, err := v.Verify(strings.Join(parts, ".")); reasonOf(err) != ReasonSignature {
			t.Fatalf("Verify error = %v, want a bad signature", err)
		}
	})
}

func encodeSeg(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestKeyConfusion presents tokens that abuse a public key as an HMAC
// secret, and algorithms a key is not for.
func TestKeyConfusion(t *testing.T) {
	k := testKeys()
	rsaPEM := pkixPEM(t, k["rsa"].Public())
	claims := jwt.MapClaims{"sub": "u"}
	forged := signWith(t, "HS256", rsaPEM, "", claims)

	t.Run("HMAC with the public key, no secret configured", func(t *testing.T) {
		v, err := NewVerifier(Options{PublicKeys: []crypto.PublicKey{k["rsa"].Public()}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(forged); reasonOf(err) != ReasonAlgorithm {
			t.Fatalf("Verify error = %v, want algorithm refused", err)
		}
	})
	t.Run("HMAC with the public key, HS256 allowed by a secret", func(t *testing.T) {
		v, err := NewVerifier(Options{Secret: []byte(testKey), PublicKeys: []crypto.PublicKey{k["rsa"].Public()}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(forged); reasonOf(err) != ReasonSignature {
			t.Fatalf("Verify error = %v, want a bad signature", err)
		}
	})
	t.Run("HMAC with the public key as the configured secret", func(t *testing.T) {
		// Even a secret equal to the PEM text verifies only HMAC: the RSA
		// key never becomes an HMAC key, and no RS256 token passes it.
		v, err := NewVerifier(Options{Secret: rsaPEM})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(signWith(t, "RS256", k["rsa"], "", claims)); reasonOf(err) != ReasonAlgorithm {
			t.Fatalf("Verify error = %v, want algorithm refused", err)
		}
	})
	t.Run("allow-list narrower than the keys", func(t *testing.T) {
		v, err := NewVerifier(Options{PublicKeys: []crypto.PublicKey{k["rsa"].Public()}, Algorithms: []string{"RS256"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(signWith(t, "PS256", k["rsa"], "", claims)); reasonOf(err) != ReasonAlgorithm {
			t.Fatalf("PS256 error = %v, want algorithm refused", err)
		}
		if _, err := v.Verify(signWith(t, "RS256", k["rsa"], "", claims)); err != nil {
			t.Fatalf("RS256: %v", err)
		}
	})
}

func TestNewVerifierErrors(t *testing.T) {
	k := testKeys()
	tests := []struct {
		name string
		o    Options
		err  string
	}{
		{"no key", Options{}, "no key"},
		{"unknown algorithm", Options{Secret: []byte(testKey), Algorithms: []string{"HS257"}}, `"HS257" is not one of`},
		{"none", Options{Secret: []byte(testKey), Algorithms: []string{"none"}}, `"none" is not one of`},
		{"RSA without key", Options{Secret: []byte(testKey), Algorithms: []string{"RS256"}}, "RS256 has no key: it needs an RSA public key or a JWKS"},
		{"HMAC without secret", Options{PublicKeys: []crypto.PublicKey{k["ed"].Public()}, Algorithms: []string{"HS256"}}, "HS256 has no key: it needs a secret"},
		{"curve without key", Options{PublicKeys: []crypto.PublicKey{k["p384"].Public()}, Algorithms: []string{"ES256"}}, "ES256 has no key"},
		{"weak key", Options{PublicKeys: []crypto.PublicKey{k["rsa1k"].Public()}}, "too weak"},
		{"negative leeway", Options{Secret: []byte(testKey), Leeway: -time.Second}, "negative leeway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewVerifier(tt.o); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("NewVerifier error = %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	v, err := NewVerifier(Options{Secret: []byte(testKey), Leeway: 30 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		claims jwt.MapClaims
		reason Reason
	}{
		{"expired within the leeway", jwt.MapClaims{"sub": "u", "exp": now.Add(-29 * time.Second).Unix()}, ""},
		{"expired past the leeway", jwt.MapClaims{"sub": "u", "exp": now.Add(-30 * time.Second).Unix()}, ReasonExpired},
		{"not yet valid within the leeway", jwt.MapClaims{"sub": "u", "nbf": now.Add(30 * time.Second).Unix()}, ""},
		{"not yet valid past the leeway", jwt.MapClaims{"sub": "u", "nbf": now.Add(31 * time.Second).Unix()}, ReasonNotYet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Verify(signWith(t, "HS256", []byte(testKey), "", tt.claims))
			if reasonOf(err) != tt.reason || (tt.reason == "" && err != nil) {
				t.Fatalf("Verify error = %v, want reason %q", err, tt.reason)
			}
			if exp, ok := tt.claims["exp"]; ok && err == nil {
				if want := time.Unix(exp.(int64), 0).Add(30 * time.Second).UTC(); !p.ValidUntil.Equal(want) {
					t.Errorf("ValidUntil = %s, want exp + leeway = %s", p.ValidUntil, want)
				}
			}
		})
	}
}

func TestVerifyNestedClaims(t *testing.T) {
	v, err := NewVerifier(Options{Secret: []byte(testKey), UserClaim: "sub", TeamClaim: "app_metadata.teams"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(signWith(t, "HS256", []byte(testKey), "", jwt.MapClaims{"sub": "u",
		"app_metadata": map[string]any{"teams": []any{"7", 8}}}))
	if err != nil || strings.Join(p.TeamIDs, ",") != "7,8" || p.NoTeamClaim {
		t.Fatalf("nested path: %+v, %v", p, err)
	}
	// A claim named with the dots themselves (Auth0's namespaced claims
	// are URLs) is taken as it is.
	v, err = NewVerifier(Options{Secret: []byte(testKey), TeamClaim: "https://crm.example.com/teams"})
	if err != nil {
		t.Fatal(err)
	}
	p, err = v.Verify(signWith(t, "HS256", []byte(testKey), "", jwt.MapClaims{"sub": "u", "https://crm.example.com/teams": []any{"9"}}))
	if err != nil || strings.Join(p.TeamIDs, ",") != "9" {
		t.Fatalf("dotted name: %+v, %v", p, err)
	}
	p, err = v.Verify(signWith(t, "HS256", []byte(testKey), "", jwt.MapClaims{"sub": "u"}))
	if err != nil || !p.NoTeamClaim {
		t.Fatalf("absent: %+v, %v", p, err)
	}
}
