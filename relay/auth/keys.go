package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// minRSABits is the smallest RSA modulus accepted (NIST SP 800-57: 2048
// bits through 2030).
const minRSABits = 2048

// family is what kind of key verifies an algorithm. A key is only ever
// used with the algorithms of its own family, so an RSA public key can
// never be taken for an HMAC secret, nor a P-256 key for ES384.
type family int

const (
	famHMAC family = iota + 1
	famRSA
	famP256
	famP384
	famP521
	famEd25519
)

// algFamilies lists every algorithm Verify accepts, with its key family.
var algFamilies = map[string]family{
	"HS256": famHMAC, "HS384": famHMAC, "HS512": famHMAC,
	"RS256": famRSA, "RS384": famRSA, "RS512": famRSA,
	"PS256": famRSA, "PS384": famRSA, "PS512": famRSA,
	"ES256": famP256, "ES384": famP384, "ES512": famP521,
	"EdDSA": famEd25519,
}

// Algorithms returns the names of every algorithm a Verifier can accept, in
// a stable order.
func Algorithms() []string {
	return []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
		"ES256", "ES384", "ES512", "EdDSA"}
}

// familyOf returns the family of a public key, or 0 for a key of no
// accepted kind.
func familyOf(key crypto.PublicKey) family {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return famRSA
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return famP256
		case elliptic.P384():
			return famP384
		case elliptic.P521():
			return famP521
		}
	case ed25519.PublicKey:
		return famEd25519
	}
	return 0
}

// algorithmsOf returns the algorithms of family f, in Algorithms order.
func algorithmsOf(f family) []string {
	var algs []string
	for _, a := range Algorithms() {
		if algFamilies[a] == f {
			algs = append(algs, a)
		}
	}
	return algs
}

// checkPublicKey says why key cannot verify tokens, or nil.
func checkPublicKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return fmt.Errorf("an RSA key of %d bits is too weak (at least %d)", n, minRSABits)
		}
		return nil
	case *ecdsa.PublicKey:
		if familyOf(k) == 0 {
			return fmt.Errorf("an ECDSA key on curve %s is not accepted (P-256, P-384 or P-521)", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("a %T key is not accepted (RSA, ECDSA or Ed25519)", key)
}

// ParsePublicKeys reads the public keys of PEM data: PUBLIC KEY (PKIX: RSA,
// ECDSA or Ed25519), RSA PUBLIC KEY (PKCS #1) or CERTIFICATE blocks, one
// or more. A private key, a weak or unknown key, text that is not PEM, or
// no key at all is an error: the relay only ever needs the public half.
func ParsePublicKeys(data []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var key crypto.PublicKey
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				key = c.PublicKey
			}
		default:
			if strings.Contains(b.Type, "PRIVATE") {
				return nil, fmt.Errorf("parse public keys: block %d is a %s: give the public key only (openssl pkey -pubout)", n, b.Type)
			}
			return nil, fmt.Errorf("parse public keys: block %d is a %s, not a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", n, b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("parse public keys: block %d (%s): %w", n, b.Type, err)
		}
		if err := checkPublicKey(key); err != nil {
			return nil, fmt.Errorf("parse public keys: block %d: %w", n, err)
		}
		keys = append(keys, key)
	}
	if len(strings.TrimSpace(string(data))) > 0 && len(keys) == 0 {
		return nil, errors.New("parse public keys: no PEM block found")
	}
	if len(keys) == 0 {
		return nil, errors.New("parse public keys: no key")
	}
	return keys, nil
}

// keySet is what a Verifier verifies with: the HMAC secret, the static
// public keys, the remote key set, and the algorithms allowed.
type keySet struct {
	secret  []byte
	static  []crypto.PublicKey
	jwks    *JWKS
	allowed []string
}

// newKeySet checks that every allowed algorithm has a key source of its
// family; an empty allow-list allows every algorithm of the families the
// sources provide (a JWKS provides every asymmetric family).
func newKeySet(secret []byte, static []crypto.PublicKey, jwks *JWKS, allowed []string) (keySet, error) {
	ks := keySet{secret: slices.Clone(secret), static: slices.Clone(static), jwks: jwks}
	for i, k := range static {
		if err := checkPublicKey(k); err != nil {
			return keySet{}, fmt.Errorf("public key %d: %w", i+1, err)
		}
	}
	if len(secret) == 0 && len(static) == 0 && jwks == nil {
		return keySet{}, errors.New("no key: set a secret, public keys or a JWKS")
	}
	if len(allowed) == 0 {
		for _, a := range Algorithms() {
			if ks.provides(algFamilies[a]) {
				ks.allowed = append(ks.allowed, a)
			}
		}
		return ks, nil
	}
	for _, a := range allowed {
		f, ok := algFamilies[a]
		switch {
		case !ok:
			return keySet{}, fmt.Errorf("algorithm %q is not one of %s", a, strings.Join(Algorithms(), ", "))
		case !ks.provides(f):
			return keySet{}, fmt.Errorf("algorithm %s has no key: %s", a, needs(f))
		}
		if !slices.Contains(ks.allowed, a) {
			ks.allowed = append(ks.allowed, a)
		}
	}
	return ks, nil
}

// provides reports whether some source can hold a key of family f.
func (ks keySet) provides(f family) bool {
	if f == famHMAC {
		return len(ks.secret) > 0
	}
	if ks.jwks != nil {
		return true
	}
	return slices.ContainsFunc(ks.static, func(k crypto.PublicKey) bool { return familyOf(k) == f })
}

// needs says what key an algorithm family needs, for an error message.
func needs(f family) string {
	switch f {
	case famHMAC:
		return "it needs a secret"
	case famRSA:
		return "it needs an RSA public key or a JWKS"
	case famEd25519:
		return "it needs an Ed25519 public key or a JWKS"
	}
	return "it needs an ECDSA public key on its curve or a JWKS"
}

// errNoKey is the cause of a ReasonKey failure.
var errNoKey = errors.New("no key for the token's algorithm and key id")

// keys returns the keys that may verify a token of algorithm alg (already
// allowed) and key id kid (may be empty): the secret for HMAC; otherwise
// the JWKS key of that id when it has one and it fits alg, else every
// static key of alg's family, and every JWKS key that fits alg when the
// token names no key id. A kid the JWKS does not know makes it refetch
// (see JWKS.lookup). It fails with errNoKey when no key fits.
func (ks keySet) keys(alg, kid string) ([]any, error) {
	f := algFamilies[alg]
	if f == famHMAC {
		if len(ks.secret) == 0 {
			return nil, errNoKey
		}
		return []any{ks.secret}, nil
	}
	var keys []any
	if ks.jwks != nil {
		for _, k := range ks.jwks.lookup(kid) {
			if familyOf(k.key) == f && (k.alg == "" || k.alg == alg) {
				keys = append(keys, k.key)
			}
		}
	}
	for _, k := range ks.static {
		if familyOf(k) == f {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errNoKey
	}
	return keys, nil
}
