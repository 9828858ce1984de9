// Package auth verifies the JWTs that subscribers present and turns their
// claims into a Principal: the user id and the teams whose events the
// session may receive. Only HS256 is accepted. Failures are *Error values
// whose message is safe to send to the client.
package auth

import (
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

// MaxTokenLen is the longest token Verify examines; a longer one is
// "token malformed".
const MaxTokenLen = 16 << 10

// Options configures a Verifier.
type Options struct {
	// Secret is the HS256 key. It must not be empty; the configuration
	// requires at least 32 bytes.
	Secret []byte
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
	ReasonSignature Reason = "signature"  // bad signature
	ReasonAlgorithm Reason = "algorithm"  // an algorithm other than HS256 ("none" included)
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

// IsExpired reports whether err is a verification failure because the
// token expired: the client should fetch a new token and reconnect.
func IsExpired(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == ReasonExpired
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	secret    []byte
	userClaim string
	teamClaim string
	issuer    string
	audience  string
	now       func() time.Time
	parser    *jwt.Parser
}

// NewVerifier returns a Verifier for o. It copies o.Secret.
func NewVerifier(o Options) (*Verifier, error) {
	if len(o.Secret) == 0 {
		return nil, errors.New("new verifier: empty secret")
	}
	v := &Verifier{
		secret:    slices.Clone(o.Secret),
		userClaim: o.UserClaim,
		teamClaim: o.TeamClaim,
		issuer:    o.Issuer,
		audience:  o.Audience,
		now:       o.Now,
		// Claims are checked by Verify itself, so that each failure maps to
		// exactly one Reason with a fixed precedence.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithJSONNumber(),
			jwt.WithoutClaimsValidation(),
		),
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

// Verify checks token and returns its principal, or an *Error. Checks, in
// order (the first failure is reported): well-formed, HS256 signature,
// iss, aud, exp, nbf, then the user and team claims. exp and nbf are
// optional and have no leeway. The user claim may be a string or a number
// (integers render without exponent: 3 -> "3"); the team claim may be
// absent (no teams), a string, a number, or a list of strings and numbers.
func (v *Verifier) Verify(token string) (Principal, error) {
	if token == "" {
		return Principal{}, &Error{Reason: ReasonMissing}
	}
	if len(token) > MaxTokenLen {
		return Principal{}, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("verify: token is %d bytes, over %d", len(token), MaxTokenLen)}
	}
	claims := jwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) {
		return v.secret, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return Principal{}, &Error{Reason: ReasonMalformed, Err: err}
	case tok != nil && tok.Method != jwt.SigningMethodHS256:
		alg, _ := tok.Header["alg"].(string)
		if len(alg) > 16 {
			alg = alg[:16] + "…"
		}
		return Principal{}, &Error{Reason: ReasonAlgorithm, Claim: alg, Err: err}
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
	if exp != nil && !now.Before(exp.Time) {
		return Principal{}, &Error{Reason: ReasonExpired}
	}
	if nbf != nil && now.Before(nbf.Time) {
		return Principal{}, &Error{Reason: ReasonNotYet}
	}

	var p Principal
	if exp != nil {
		p.ExpiresAt = exp.UTC()
	}
	switch u := claims[v.userClaim].(type) {
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

	claim, present := claims[v.teamClaim]
	teams, ok := teamIDs(claim)
	if !ok {
		return Principal{}, &Error{Reason: ReasonTeamClaim, Claim: v.teamClaim}
	}
	p.TeamIDs, p.NoTeamClaim = teams, !present
	return p, nil
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
	if isDigits(strings.TrimPrefix(s, "-")) {
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
