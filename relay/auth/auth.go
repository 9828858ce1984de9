// Package auth verifies the JWTs that subscribers present and turns their
// claims into a Principal: the user id and the teams whose events the
// session may receive. Tokens are signed with an HMAC secret (HS256, HS384,
// HS512) or an asymmetric key (RS*, PS*, ES*, EdDSA) from PEM or a JWKS;
// a key only ever verifies the algorithms of its own kind. Failures are
// *Error values whose message is safe to send to the client.
package auth

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenLen is the default longest token Verify examines; a longer one
// is "token too large".
const MaxTokenLen = 8 << 10

// Options configures a Verifier. At least one of Secret, PublicKeys and
// JWKS must be set.
type Options struct {
	// Secret is the HMAC key of HS256, HS384 and HS512, or empty. The
	// configuration requires at least 32 bytes.
	Secret []byte
	// PublicKeys verify RS*, PS*, ES* and EdDSA tokens whatever key id
	// they name (ParsePublicKeys reads them from PEM).
	PublicKeys []crypto.PublicKey
	// JWKS, when not nil, supplies asymmetric keys by key id. The caller
	// runs it (JWKS.Run) for periodic refreshes.
	JWKS *JWKS
	// Algorithms is the allow-list of the token's alg header (names as in
	// Algorithms). Empty: every algorithm of the keys given (a JWKS gives
	// every asymmetric one). Listing one with no key of its kind is an
	// error.
	Algorithms []string
	// Leeway is the clock skew allowed when checking exp and nbf.
	Leeway time.Duration
	// MaxTokenLen is the longest token examined. Zero: MaxTokenLen.
	MaxTokenLen int
	// UserClaim names the claim holding the user id. Empty: "sub".
	UserClaim string
	// TeamClaim names the claim holding the team ids. Empty: "teamId".
	TeamClaim string
	// Issuer, when not empty, must equal the iss claim.
	Issuer string
	// Audience, when not empty, must be the aud claim or one of its items.
	Audience string
	// Now returns the current time for exp and nbf. Nil: time.Now.
	Now func() time.Time
}

// Principal is who a verified token speaks for.
type Principal struct {
	// UserID is the user claim as a string; never empty.
	UserID string
	// TeamIDs are the team claim's values as strings, duplicates and empty
	// strings removed, in token order; an empty, non-nil slice when the
	// token names no team.
	TeamIDs []string
	// ExpiresAt is the exp claim in UTC, or zero when the token has none.
	ExpiresAt time.Time
	// ValidUntil is when the token stops being accepted: ExpiresAt plus
	// the leeway, or zero when the token has no exp.
	ValidUntil time.Time
	// NoTeamClaim is true when the token lacks the team claim altogether
	// (most likely a misconfigured auth.team_claim): the session follows
	// no team.
	NoTeamClaim bool
}

// Reason classifies a verification failure. Its values are stable and fit
// for metric labels.
type Reason string

// Reasons of verification failure.
const (
	ReasonMissing   Reason = "missing"    // no token
	ReasonMalformed Reason = "malformed"  // not a JWT, or a registered claim of the wrong type
	ReasonTooLarge  Reason = "too_large"  // longer than Options.MaxTokenLen
	ReasonSignature Reason = "signature"  // bad signature
	ReasonAlgorithm Reason = "algorithm"  // an algorithm not allowed ("none" included)
	ReasonKey       Reason = "key"        // no key of the token's algorithm (and key id, if it names one)
	ReasonExpired   Reason = "expired"    // now is at or after exp
	ReasonNotYet    Reason = "not_yet"    // now is before nbf
	ReasonIssuer    Reason = "issuer"     // iss differs from Options.Issuer
	ReasonAudience  Reason = "audience"   // aud does not name Options.Audience
	ReasonNoUser    Reason = "no_user"    // user claim missing or empty
	ReasonUserClaim Reason = "user_claim" // user claim neither a string nor a number
	ReasonTeamClaim Reason = "team_claim" // team claim neither a string, a number nor a list of them
)

// Error is a token verification failure. Error() is a short message meant
// for the client, e.g. "token expired"; it never contains the token. The
// underlying cause, if any, is available through errors.Unwrap for logs.
type Error struct {
	Reason Reason
	// Claim names the claim for ReasonNoUser, ReasonUserClaim and
	// ReasonTeamClaim, and the token's algorithm for ReasonAlgorithm.
	Claim string
	// Err is the underlying cause, or nil.
	Err error
}

// Error returns the client-facing message.
func (e *Error) Error() string {
	switch e.Reason {
	case ReasonMissing:
		return "token missing"
	case ReasonMalformed:
		return "token malformed"
	case ReasonTooLarge:
		return "token too large"
	case ReasonKey:
		return "token key unknown"
	case ReasonSignature:
		return "token signature invalid"
	case ReasonAlgorithm:
		return fmt.Sprintf("token algorithm %q not accepted", e.Claim)
	case ReasonExpired:
		return "token expired"
	case ReasonNotYet:
		return "token not valid yet"
	case ReasonIssuer:
		return "token issuer mismatch"
	case ReasonAudience:
		return "token audience mismatch"
	case ReasonNoUser:
		return fmt.Sprintf("token has no user claim %q", e.Claim)
	case ReasonUserClaim:
		return fmt.Sprintf("token user claim %q is not a string or number", e.Claim)
	case ReasonTeamClaim:
		return fmt.Sprintf("token team claim %q is not a string, number or list of them", e.Claim)
	}
	return "token invalid"
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of a verification failure, or "invalid" for
// an error that is not one.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "invalid"
}

// IsExpired reports whether err is a verification failure because the
// token expired: the client should fetch a new token and reconnect.
func IsExpired(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == ReasonExpired
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	keys      keySet
	leeway    time.Duration
	maxLen    int
	userClaim string
	teamClaim string
	issuer    string
	audience  string
	now       func() time.Time
	parser    *jwt.Parser
}

// NewVerifier returns a Verifier for o. It copies o.Secret and
// o.PublicKeys.
func NewVerifier(o Options) (*Verifier, error) {
	ks, err := newKeySet(o.Secret, o.PublicKeys, o.JWKS, o.Algorithms)
	if err != nil {
		return nil, fmt.Errorf("new verifier: %w", err)
	}
	if o.Leeway < 0 {
		return nil, fmt.Errorf("new verifier: negative leeway %s", o.Leeway)
	}
	v := &Verifier{
		keys:      ks,
		leeway:    o.Leeway,
		maxLen:    o.MaxTokenLen,
		userClaim: o.UserClaim,
		teamClaim: o.TeamClaim,
		issuer:    o.Issuer,
		audience:  o.Audience,
		now:       o.Now,
		// Claims are checked by Verify itself, so that each failure maps to
		// exactly one Reason with a fixed precedence.
		parser: jwt.NewParser(
			jwt.WithValidMethods(ks.allowed),
			jwt.WithJSONNumber(),
			jwt.WithoutClaimsValidation(),
		),
	}
	if v.maxLen <= 0 {
		v.maxLen = MaxTokenLen
	}
	if v.userClaim == "" {
		v.userClaim = "sub"
	}
	if v.teamClaim == "" {
		v.teamClaim = "teamId"
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Algorithms returns the algorithms v accepts.
func (v *Verifier) Algorithms() []string { return slices.Clone(v.keys.allowed) }

// keyFor is the parser's key function: the keys that may verify tok (its
// algorithm is already allowed), one or a set to try in turn.
func (v *Verifier) keyFor(tok *jwt.Token) (any, error) {
	kid, _ := tok.Header["kid"].(string)
	keys, err := v.keys.keys(tok.Method.Alg(), kid)
	if err != nil {
		return nil, err
	}
	if len(keys) == 1 {
		return keys[0], nil
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k
	}
	return set, nil
}

// Verify checks token and returns its principal, or an *Error. Checks, in
// order (the first failure is reported): size, well-formed, algorithm
// allowed, a key for it, signature, iss, aud, exp, nbf (both with the
// leeway), then the user and team claims. exp and nbf are optional. The
// user claim may be a string or a number (integers render without
// exponent: 3 -> "3"); the team claim may be absent (no teams), a string,
// a number, or a list of strings and numbers. A claim name with dots
// ("app_metadata.teams") that no top-level claim has is looked up as a
// path through nested objects. A JWKS lookup of an unknown key id, or a
// token without a key id that no key verifies, may fetch the set again
// (JWKS), so Verify can take as long as that fetch.
func (v *Verifier) Verify(token string) (Principal, error) {
	if token == "" {
		return Principal{}, &Error{Reason: ReasonMissing}
	}
	if len(token) > v.maxLen {
		return Principal{}, &Error{Reason: ReasonTooLarge, Err: fmt.Errorf("verify: token is %d bytes, over %d", len(token), v.maxLen)}
	}
	claims := jwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(token, claims, v.keyFor)
	if err != nil && tok != nil && v.keys.jwks != nil && (errors.Is(err, jwt.ErrTokenSignatureInvalid) || errors.Is(err, errNoKey)) &&
		headerKid(tok) == "" && slices.Contains(v.keys.allowed, headerAlg(tok)) && algFamilies[headerAlg(tok)] != famHMAC &&
		v.keys.jwks.refetch() {
		// A token without a key id that no key held verifies may be
		// signed with a key the provider rotated in: look again once the
		// set was fetched anew (at most once every MinInterval).
		claims = jwt.MapClaims{}
		tok, err = v.parser.ParseWithClaims(token, claims, v.keyFor)
	}
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return Principal{}, &Error{Reason: ReasonMalformed, Err: err}
	case tok != nil && !slices.Contains(v.keys.allowed, headerAlg(tok)):
		alg := headerAlg(tok)
		if len(alg) > 16 {
			alg = alg[:16] + "…"
		}
		return Principal{}, &Error{Reason: ReasonAlgorithm, Claim: alg, Err: err}
	case errors.Is(err, errNoKey):
		return Principal{}, &Error{Reason: ReasonKey, Err: err}
	default:
		return Principal{}, &Error{Reason: ReasonSignature, Err: err}
	}

	exp, err := claims.GetExpirationTime()
	if err != nil {
		return Principal{}, &Error{Reason: ReasonMalformed, Err: err}
	}
	nbf, err := claims.GetNotBefore()
	if err != nil {
		return Principal{}, &Error{Reason: ReasonMalformed, Err: err}
	}
	iss, err := claims.GetIssuer()
	if err != nil {
		return Principal{}, &Error{Reason: ReasonMalformed, Err: err}
	}
	aud, err := claims.GetAudience()
	if err != nil {
		return Principal{}, &Error{Reason: ReasonMalformed, Err: err}
	}
	if v.issuer != "" && iss != v.issuer {
		return Principal{}, &Error{Reason: ReasonIssuer}
	}
	if v.audience != "" && !slices.Contains(aud, v.audience) {
		return Principal{}, &Error{Reason: ReasonAudience}
	}
	now := v.now()
	if exp != nil && !now.Before(exp.Add(v.leeway)) {
		return Principal{}, &Error{Reason: ReasonExpired}
	}
	if nbf != nil && now.Add(v.leeway).Before(nbf.Time) {
		return Principal{}, &Error{Reason: ReasonNotYet}
	}

	var p Principal
	if exp != nil {
		p.ExpiresAt = exp.UTC()
		p.ValidUntil = p.ExpiresAt.Add(v.leeway)
	}
	switch u := claimValue(claims, v.userClaim).(type) {
	case nil:
		return Principal{}, &Error{Reason: ReasonNoUser, Claim: v.userClaim}
	case string:
		p.UserID = u
	case json.Number:
		s, ok := numberString(u)
		if !ok {
			return Principal{}, &Error{Reason: ReasonUserClaim, Claim: v.userClaim}
		}
		p.UserID = s
	default:
		return Principal{}, &Error{Reason: ReasonUserClaim, Claim: v.userClaim}
	}
	if p.UserID == "" {
		return Principal{}, &Error{Reason: ReasonNoUser, Claim: v.userClaim}
	}

	claim := claimValue(claims, v.teamClaim)
	present := claim != nil
	if _, ok := claims[v.teamClaim]; ok {
		present = true // a null claim is present and names no team
	}
	teams, ok := teamIDs(claim)
	if !ok {
		return Principal{}, &Error{Reason: ReasonTeamClaim, Claim: v.teamClaim}
	}
	p.TeamIDs, p.NoTeamClaim = teams, !present
	return p, nil
}

// headerKid returns the kid header of tok, or "".
func headerKid(tok *jwt.Token) string {
	kid, _ := tok.Header["kid"].(string)
	return kid
}

// headerAlg returns the alg header of tok, or "".
func headerAlg(tok *jwt.Token) string {
	alg, _ := tok.Header["alg"].(string)
	return alg
}

// claimValue returns the claim named name, or, when there is none and the
// name has dots, the value at that path through nested objects
// ("app_metadata.teams"); nil when neither is there.
func claimValue(claims jwt.MapClaims, name string) any {
	if v, ok := claims[name]; ok || !strings.Contains(name, ".") {
		return v
	}
	var cur any = map[string]any(claims)
	for _, part := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}

// teamIDs renders a team claim; ok is false for a value of the wrong type.
// Empty strings are skipped; a UUID is written in lower case, as PostgreSQL
// renders a uuid column.
func teamIDs(claim any) ([]string, bool) {
	var items []any
	switch c := claim.(type) {
	case nil:
		return []string{}, true
	case []any:
		items = c
	default:
		items = []any{c}
	}
	ids := make([]string, 0, len(items))
	for _, item := range items {
		var id string
		switch x := item.(type) {
		case string:
			id = x
			if isUUID(x) {
				id = strings.ToLower(x)
			}
		case json.Number:
			s, ok := numberString(x)
			if !ok {
				return nil, false
			}
			id = s
		default:
			return nil, false
		}
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, true
}

// numberString renders a JSON number as an id: integers in plain decimal
// ("3", "3.0" and "3e0" all give "3"), other numbers in the shortest
// decimal form without exponent. ok is false for a number out of range.
func numberString(n json.Number) (string, bool) {
	s := n.String()
	if isDigits(strings.TrimPrefix(s, "-")) && s != "-0" {
		return s, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", false
	}
	if f == 0 {
		return "0", true // also for -0
	}
	return strconv.FormatFloat(f, 'f', -1, 64), true
}

// isUUID reports whether s is a UUID in its hyphenated form, in any case.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// TokenFromRequest returns the token an HTTP request presents: the
// credentials of an "Authorization: Bearer <jwt>" header (scheme matched
// case-insensitively), else the access_token query parameter, else "".
func TokenFromRequest(r *http.Request) string {
	if scheme, cred, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if cred = strings.TrimSpace(cred); cred != "" {
			return cred
		}
	}
	return r.URL.Query().Get("access_token")
}

// Sign returns an HS256 token for claims, for tests and the demo command.
// time.Time values are written as NumericDate seconds (use them for exp,
// nbf and iat).
func Sign(secret []byte, claims map[string]any) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("sign token: empty secret")
	}
	mc := make(jwt.MapClaims, len(claims))
	for k, val := range claims {
		if t, ok := val.(time.Time); ok {
			val = t.Unix()
		}
		mc[k] = val
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, mc).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
