package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testKey = "0123456789abcdef0123456789abcdef"

// signRaw signs a hand-written header and payload with HS256, so tests can
// present JSON that encoding/json would never produce (3.0, 3e2).
func signRaw(secret []byte, header, payload string) string {
	enc := base64.RawURLEncoding
	msg := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

func rawToken(payload string) string {
	return signRaw([]byte(testKey), `{"alg":"HS256","typ":"JWT"}`, payload)
}

func mustSign(t testing.TB, secret []byte, claims map[string]any) string {
	t.Helper()
	tok, err := Sign(secret, claims)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return tok
}

func TestVerify(t *testing.T) {
	now := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	later := now.Add(time.Hour)
	enc := base64.RawURLEncoding

	tests := []struct {
		name   string
		opts   Options // Secret and Now are filled in
		token  func(t *testing.T) string
		want   Principal
		reason Reason
		msg    string
	}{
		{
			name: "string user and team",
			token: func(t *testing.T) string {
				return mustSign(t, []byte(testKey), map[string]any{"sub": "3", "teamId": "7", "exp": later})
			},
			want: Principal{UserID: "3", TeamIDs: []string{"7"}, ExpiresAt: later, ValidUntil: later},
		},
		{
			name:  "numeric user and team",
			token: func(t *testing.T) string { return mustSign(t, []byte(testKey), map[string]any{"sub": 3, "teamId": 7}) },
			want:  Principal{UserID: "3", TeamIDs: []string{"7"}},
		},
		{
			name:  "user 3.0 renders as 3",
			token: func(*testing.T) string { return rawToken(`{"sub":3.0}`) },
			want:  Principal{UserID: "3", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:  "user 3e2 renders without exponent",
			token: func(*testing.T) string { return rawToken(`{"sub":3e2}`) },
			want:  Principal{UserID: "300", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:  "user beyond int64 kept digit for digit",
			token: func(*testing.T) string { return rawToken(`{"sub":123456789012345678901234567890}`) },
			want:  Principal{UserID: "123456789012345678901234567890", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:  "user -0 renders as 0", // found by FuzzVerifyClaims
			token: func(*testing.T) string { return rawToken(`{"sub":-0}`) },
			want:  Principal{UserID: "0", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:  "teams -0 and 0 are one team", // found by FuzzVerifyClaims
			token: func(*testing.T) string { return rawToken(`{"sub":"u","teamId":[-0,0,-0.0]}`) },
			want:  Principal{UserID: "u", TeamIDs: []string{"0"}},
		},
		{
			name:  "fractional user",
			token: func(*testing.T) string { return rawToken(`{"sub":1.5}`) },
			want:  Principal{UserID: "1.5", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:  "team list of strings and numbers, duplicates removed, order kept",
			token: func(*testing.T) string { return rawToken(`{"sub":"u","teamId":[9,"7",9,"9",7.0,"",8]}`) },
			want:  Principal{UserID: "u", TeamIDs: []string{"9", "7", "8"}},
		},
		{
			name:  "no team claim means no teams",
			token: func(*testing.T) string { return rawToken(`{"sub":"u"}`) },
			want:  Principal{UserID: "u", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name: "UUID teams in lower case, as PostgreSQL renders uuid",
			token: func(*testing.T) string {
				return rawToken(`{"sub":"u","teamId":["3F2504E0-4F89-11D3-9A0C-0305E82C3301","ABC"]}`)
			},
			want: Principal{UserID: "u", TeamIDs: []string{"3f2504e0-4f89-11d3-9a0c-0305e82c3301", "ABC"}},
		},
		{
			name:  "null team claim means no teams",
			token: func(*testing.T) string { return rawToken(`{"sub":"u","teamId":null}`) },
			want:  Principal{UserID: "u", TeamIDs: []string{}},
		},
		{
			name:  "custom claim names",
			opts:  Options{UserClaim: "uid", TeamClaim: "teams"},
			token: func(*testing.T) string { return rawToken(`{"sub":"ignored","uid":42,"teams":["a","b"],"teamId":"x"}`) },
			want:  Principal{UserID: "42", TeamIDs: []string{"a", "b"}},
		},
		{
			name:  "issuer and audience string match",
			opts:  Options{Issuer: "crm", Audience: "rowcast"},
			token: func(*testing.T) string { return rawToken(`{"sub":"u","iss":"crm","aud":"rowcast"}`) },
			want:  Principal{UserID: "u", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:  "audience list match",
			opts:  Options{Audience: "rowcast"},
			token: func(*testing.T) string { return rawToken(`{"sub":"u","aud":["api","rowcast"]}`) },
			want:  Principal{UserID: "u", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:  "nbf now is valid",
			token: func(t *testing.T) string { return mustSign(t, []byte(testKey), map[string]any{"sub": "u", "nbf": now}) },
			want:  Principal{UserID: "u", TeamIDs: []string{}, NoTeamClaim: true},
		},
		{
			name:   "missing",
			token:  func(*testing.T) string { return "" },
			reason: ReasonMissing, msg: "token missing",
		},
		{
			name:   "not a jwt",
			token:  func(*testing.T) string { return "hello" },
			reason: ReasonMalformed, msg: "token malformed",
		},
		{
			name:   "bad base64",
			token:  func(*testing.T) string { return "a!.b!.c!" },
			reason: ReasonMalformed, msg: "token malformed",
		},
		{
			name:   "payload not an object",
			token:  func(*testing.T) string { return rawToken(`[1,2]`) },
			reason: ReasonMalformed, msg: "token malformed",
		},
		{
			name:   "exp of the wrong type",
			token:  func(*testing.T) string { return rawToken(`{"sub":"u","exp":"tomorrow"}`) },
			reason: ReasonMalformed, msg: "token malformed",
		},
		{
			name:   "too long",
			token:  func(*testing.T) string { return rawToken(`{"sub":"` + strings.Repeat("x", MaxTokenLen) + `"}`) },
			reason: ReasonTooLarge, msg: "token too large",
		},
		{
			name: "wrong secret",
			token: func(t *testing.T) string {
				return mustSign(t, []byte("another secret that is long enough"), map[string]any{"sub": "u"})
			},
			reason: ReasonSignature, msg: "token signature invalid",
		},
		{
			name: "tampered payload",
			token: func(t *testing.T) string {
				parts := strings.Split(mustSign(t, []byte(testKey), map[string]any{"sub": "u"}), ".")
				parts[1] = enc.EncodeToString([]byte(`{"sub":"admin"}`))
				return strings.Join(parts, ".")
			},
			reason: ReasonSignature, msg: "token signature invalid",
		},
		{
			name: "alg none refused",
			token: func(*testing.T) string {
				return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(`{"sub":"u"}`)) + "."
			},
			reason: ReasonAlgorithm, msg: `token algorithm "none" not accepted`,
		},
		{
			name:   "HS512 refused when not allowed",
			opts:   Options{Algorithms: []string{"HS256"}},
			token:  func(*testing.T) string { return signRaw([]byte(testKey), `{"alg":"HS512","typ":"JWT"}`, `{"sub":"u"}`) },
			reason: ReasonAlgorithm, msg: `token algorithm "HS512" not accepted`,
		},
		{
			name:   "RS256 header refused",
			token:  func(*testing.T) string { return signRaw([]byte(testKey), `{"alg":"RS256","typ":"JWT"}`, `{"sub":"u"}`) },
			reason: ReasonAlgorithm, msg: `token algorithm "RS256" not accepted`,
		},
		{
			name:   "unknown alg refused",
			token:  func(*testing.T) string { return signRaw([]byte(testKey), `{"alg":"XX1","typ":"JWT"}`, `{"sub":"u"}`) },
			reason: ReasonAlgorithm, msg: `token algorithm "XX1" not accepted`,
		},
		{
			name: "expired",
			token: func(t *testing.T) string {
				return mustSign(t, []byte(testKey), map[string]any{"sub": "u", "exp": now.Add(-time.Second)})
			},
			reason: ReasonExpired, msg: "token expired",
		},
		{
			name:   "expires exactly now",
			token:  func(t *testing.T) string { return mustSign(t, []byte(testKey), map[string]any{"sub": "u", "exp": now}) },
			reason: ReasonExpired, msg: "token expired",
		},
		{
			name: "not valid yet",
			token: func(t *testing.T) string {
				return mustSign(t, []byte(testKey), map[string]any{"sub": "u", "nbf": now.Add(time.Second)})
			},
			reason: ReasonNotYet, msg: "token not valid yet",
		},
		{
			name:   "issuer mismatch",
			opts:   Options{Issuer: "crm"},
			token:  func(*testing.T) string { return rawToken(`{"sub":"u","iss":"other"}`) },
			reason: ReasonIssuer, msg: "token issuer mismatch",
		},
		{
			name:   "issuer missing",
			opts:   Options{Issuer: "crm"},
			token:  func(*testing.T) string { return rawToken(`{"sub":"u"}`) },
			reason: ReasonIssuer, msg: "token issuer mismatch",
		},
		{
			name:   "issuer checked before expiry",
			opts:   Options{Issuer: "crm"},
			token:  func(*testing.T) string { return rawToken(`{"sub":"u","iss":"other","exp":1}`) },
			reason: ReasonIssuer, msg: "token issuer mismatch",
		},
		{
			name:   "audience mismatch",
			opts:   Options{Audience: "rowcast"},
			token:  func(*testing.T) string { return rawToken(`{"sub":"u","aud":["api"]}`) },
			reason: ReasonAudience, msg: "token audience mismatch",
		},
		{
			name:   "audience missing",
			opts:   Options{Audience: "rowcast"},
			token:  func(*testing.T) string { return rawToken(`{"sub":"u"}`) },
			reason: ReasonAudience, msg: "token audience mismatch",
		},
		{
			name:   "no user claim",
			token:  func(*testing.T) string { return rawToken(`{"teamId":"7"}`) },
			reason: ReasonNoUser, msg: `token has no user claim "sub"`,
		},
		{
			name:   "empty user claim",
			token:  func(*testing.T) string { return rawToken(`{"sub":""}`) },
			reason: ReasonNoUser, msg: `token has no user claim "sub"`,
		},
		{
			name:   "no custom user claim",
			opts:   Options{UserClaim: "uid"},
			token:  func(*testing.T) string { return rawToken(`{"sub":"u"}`) },
			reason: ReasonNoUser, msg: `token has no user claim "uid"`,
		},
		{
			name:   "user claim of the wrong type",
			token:  func(*testing.T) string { return rawToken(`{"sub":true}`) },
			reason: ReasonUserClaim, msg: `token user claim "sub" is not a string or number`,
		},
		{
			name:   "team claim of the wrong type",
			token:  func(*testing.T) string { return rawToken(`{"sub":"u","teamId":{"id":7}}`) },
			reason: ReasonTeamClaim, msg: `token team claim "teamId" is not a string, number or list of them`,
		},
		{
			name:   "team list item of the wrong type",
			token:  func(*testing.T) string { return rawToken(`{"sub":"u","teamId":["7",true]}`) },
			reason: ReasonTeamClaim, msg: `token team claim "teamId" is not a string, number or list of them`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Secret = []byte(testKey)
			o.Now = func() time.Time { return now }
			v, err := NewVerifier(o)
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			token := tt.token(t)
			got, err := v.Verify(token)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("Verify = %#v, want %#v", got, tt.want)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Verify error = %v (%T), want *Error", err, err)
			}
			if e.Reason != tt.reason {
				t.Errorf("reason = %q, want %q (cause %v)", e.Reason, tt.reason, e.Err)
			}
			if err.Error() != tt.msg {
				t.Errorf("message = %q, want %q", err.Error(), tt.msg)
			}
			if token != "" && strings.Contains(err.Error(), token) {
				t.Errorf("message contains the token")
			}
			if !reflect.DeepEqual(got, Principal{}) {
				t.Errorf("principal = %#v on error, want zero", got)
			}
			if IsExpired(err) != (tt.reason == ReasonExpired) {
				t.Errorf("IsExpired = %v", IsExpired(err))
			}
		})
	}
}

func TestVerifyDefaultClock(t *testing.T) {
	v, err := NewVerifier(Options{Secret: []byte(testKey)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(mustSign(t, []byte(testKey), map[string]any{"sub": "u", "exp": time.Now().Add(time.Hour)})); err != nil {
		t.Errorf("fresh token: %v", err)
	}
	if _, err := v.Verify(mustSign(t, []byte(testKey), map[string]any{"sub": "u", "exp": time.Now().Add(-time.Hour)})); !IsExpired(err) {
		t.Errorf("old token: %v, want expired", err)
	}
}

func TestNewVerifierCopiesSecret(t *testing.T) {
	secret := []byte(testKey)
	v, err := NewVerifier(Options{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	token := mustSign(t, []byte(testKey), map[string]any{"sub": "u"})
	secret[0] ^= 0xff
	if _, err := v.Verify(token); err != nil {
		t.Errorf("Verify after caller changed its slice: %v", err)
	}
}

func TestEmptySecret(t *testing.T) {
	if _, err := NewVerifier(Options{}); err == nil {
		t.Error("NewVerifier with no secret: no error")
	}
	if _, err := Sign(nil, map[string]any{"sub": "u"}); err == nil {
		t.Error("Sign with no secret: no error")
	}
}

func TestIsExpired(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("token expired"), false},
		{&Error{Reason: ReasonExpired}, true},
		{&Error{Reason: ReasonNotYet}, false},
		{errorWrap{&Error{Reason: ReasonExpired}}, true},
	}
	for _, tt := range tests {
		if got := IsExpired(tt.err); got != tt.want {
			t.Errorf("IsExpired(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

type errorWrap struct{ err error }

func (e errorWrap) Error() string { return "session: " + e.err.Error() }
func (e errorWrap) Unwrap() error { return e.err }

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		header string
		want   string
	}{
		{"bearer header", "/ws", "Bearer abc.def.ghi", "abc.def.ghi"},
		{"lowercase scheme", "/ws", "bearer abc", "abc"},
		{"uppercase scheme", "/ws", "BEARER abc", "abc"},
		{"extra spaces", "/ws", "  Bearer   abc  ", "abc"},
		{"header wins over query", "/ws?access_token=q", "Bearer h", "h"},
		{"query", "/ws?access_token=q.r.s", "", "q.r.s"},
		{"other scheme falls back to query", "/ws?access_token=q", "Basic dXNlcjpwdw==", "q"},
		{"empty bearer falls back to query", "/ws?access_token=q", "Bearer ", "q"},
		{"none", "/ws?since=x", "", ""},
		{"scheme alone", "/ws", "Bearer", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.url, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if got := TokenFromRequest(r); got != tt.want {
				t.Errorf("TokenFromRequest = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSignTimes(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	v, err := NewVerifier(Options{Secret: []byte(testKey), Now: func() time.Time { return exp.Add(-time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(mustSign(t, []byte(testKey), map[string]any{"sub": "u", "exp": exp.In(time.FixedZone("x", 3600))}))
	if err != nil {
		t.Fatal(err)
	}
	if !p.ExpiresAt.Equal(exp) || p.ExpiresAt.Location() != time.UTC {
		t.Errorf("ExpiresAt = %v, want %v in UTC", p.ExpiresAt, exp)
	}
}

func BenchmarkVerify(b *testing.B) {
	v, err := NewVerifier(Options{Secret: []byte(testKey)})
	if err != nil {
		b.Fatal(err)
	}
	token := mustSign(b, []byte(testKey), map[string]any{
		"sub": 3, "teamId": []any{7, 8}, "exp": time.Now().Add(time.Hour),
		"iat": time.Now(), "name": "Ada Lovelace", "email": "ada@example.com",
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}
