package auth

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// canonicalNumber is how numberString renders a number: plain decimal, no
// exponent, no leading zeros, no trailing fractional zeros, no "-0".
var canonicalNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$`)

// FuzzVerifyClaims signs fuzzed JSON payloads with HS256 and verifies them
// with fuzzed user and team claim names (dotted paths included), so that
// every token reaches the claims mapping. It checks that Verify never
// panics and gives the same answer twice; that a principal has a user, and
// team ids with no duplicates and no empty strings (none at all when it
// says the team claim is missing), its numbers rendered canonically and its
// expiry in UTC with the leeway added; that a failure is an *Error with a
// known reason (never the signature or the key: the token is signed right)
// whose message does not contain the token, with a zero principal.
func FuzzVerifyClaims(f *testing.F) {
	for _, s := range []struct{ payload, user, team string }{
		{`{"sub":"3","teamId":"7","exp":1900000000}`, "", ""},
		{`{"sub":3.0,"teamId":[9,"7",9,"9",7.0,"",8]}`, "", ""},
		{`{"sub":3e2,"teamId":-0}`, "", ""},
		{`{"sub":-0,"teamId":[-0.0,0,-0e5]}`, "", ""},
		{`{"sub":123456789012345678901234567890,"teamId":1.50}`, "", ""},
		{`{"sub":1e400}`, "", ""},
		{`{"sub":"u","teamId":["3F2504E0-4F89-11D3-9A0C-0305E82C3301","ABC"]}`, "", ""},
		{`{"sub":"u","teamId":null}`, "", ""},
		{`{"sub":"u","teamId":{"id":7}}`, "", ""},
		{`{"sub":true}`, "", ""},
		{`{"sub":""}`, "", ""},
		{`{"sub":"u","exp":"tomorrow"}`, "", ""},
		{`{"sub":"u","exp":1,"nbf":2e10,"iss":5,"aud":[1]}`, "", ""},
		{`[1,2]`, "", ""},
		{`{"sub":"u"} {"sub":"v"}`, "", ""},
		{"{\"sub\":\"\xff\"}", "", ""},
		{`{"uid":42,"teams":["a","b"],"teamId":"x"}`, "uid", "teams"},
		{`{"user":{"id":"u"},"app_metadata":{"teams":["7",8,null]}}`, "user.id", "app_metadata.teams"},
		{`{"a.b":"flat","a":{"b":"nested"},"x":{"y":null}}`, "a.b", "x.y"},
		{`{"https://crm.example.com/teams":["9"],"sub":"u"}`, "sub", "https://crm.example.com/teams"},
		{`{"":{"":"u"}}`, ".", ".."},
	} {
		f.Add([]byte(s.payload), s.user, s.team)
	}
	now := time.Date(2026, 11, 25, 18, 0, 0, 0, time.FixedZone("CET", 3600))
	const leeway = 30 * time.Second
	f.Fuzz(func(t *testing.T, payload []byte, userClaim, teamClaim string) {
		v, err := NewVerifier(Options{Secret: []byte(testKey), Leeway: leeway, UserClaim: userClaim, TeamClaim: teamClaim,
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatalf("NewVerifier: %v", err)
		}
		token := signRaw([]byte(testKey), `{"alg":"HS256","typ":"JWT"}`, string(payload))
		p, err := v.Verify(token)
		p2, err2 := v.Verify(token)
		if !reflect.DeepEqual(p, p2) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Verify(%q) twice: %+v, %v then %+v, %v", payload, p, err, p2, err2)
		}

		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Verify(%q): error %v (%T) is not an *Error", payload, err, err)
			}
			switch e.Reason {
			case ReasonMalformed, ReasonExpired, ReasonNotYet, ReasonNoUser, ReasonUserClaim, ReasonTeamClaim:
			case ReasonTooLarge:
				if len(token) <= MaxTokenLen {
					t.Fatalf("Verify(%q): %d bytes refused as too large", payload, len(token))
				}
			default:
				t.Fatalf("Verify(%q) of a token signed right: %v (reason %s, cause %v)", payload, err, e.Reason, e.Err)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatalf("Verify(%q): message %q contains the token", payload, err.Error())
			}
			if !reflect.DeepEqual(p, Principal{}) {
				t.Fatalf("Verify(%q): principal %+v with error %v", payload, p, err)
			}
			return
		}

		if p.UserID == "" {
			t.Fatalf("Verify(%q): empty user id", payload)
		}
		if p.TeamIDs == nil {
			t.Fatalf("Verify(%q): nil team ids", payload)
		}
		for i, id := range p.TeamIDs {
			if id == "" || slices.Contains(p.TeamIDs[:i], id) {
				t.Fatalf("Verify(%q): team ids %q: empty or duplicate %q", payload, p.TeamIDs, id)
			}
			if isUUID(id) && id != strings.ToLower(id) {
				t.Fatalf("Verify(%q): team id %q is a UUID not in lower case", payload, id)
			}
		}
		if p.NoTeamClaim && len(p.TeamIDs) != 0 {
			t.Fatalf("Verify(%q): teams %q from a missing team claim", payload, p.TeamIDs)
		}
		if p.ExpiresAt.IsZero() != p.ValidUntil.IsZero() || (!p.ExpiresAt.IsZero() &&
			(p.ExpiresAt.Location() != time.UTC || !p.ValidUntil.Equal(p.ExpiresAt.Add(leeway)) || !now.Before(p.ValidUntil))) {
			t.Fatalf("Verify(%q): expires %v, valid until %v", payload, p.ExpiresAt, p.ValidUntil)
		}

		// Numbers, where the payload decodes on its own and names the claims
		// at its top level, are rendered canonically.
		claims, ok := decodeClaims(payload)
		if !ok {
			return
		}
		name := cmp.Or(userClaim, "sub")
		if n, ok := claims[name].(json.Number); ok && (!canonicalNumber.MatchString(p.UserID) || p.UserID == "-0") {
			t.Fatalf("Verify(%q): user %v rendered %q", payload, n, p.UserID)
		}
		name = cmp.Or(teamClaim, "teamId")
		items, ok := claims[name].([]any)
		if !ok {
			items = []any{claims[name]}
		}
		for _, item := range items {
			if n, ok := item.(json.Number); ok {
				s, _ := numberString(n)
				if !canonicalNumber.MatchString(s) || s == "-0" || !slices.Contains(p.TeamIDs, s) {
					t.Fatalf("Verify(%q): team %v rendered %q, teams %q", payload, n, s, p.TeamIDs)
				}
			}
		}
	})
}

// decodeClaims decodes a payload that is one JSON object and nothing more,
// numbers as json.Number.
func decodeClaims(payload []byte) (map[string]any, bool) {
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var claims map[string]any
	if d.Decode(&claims) != nil || claims == nil || d.More() {
		return nil, false
	}
	if _, err := d.Token(); err == nil {
		return nil, false
	}
	return claims, true
}
