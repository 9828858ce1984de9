package ws

import (
	"net/http/httptest"
	"testing"
)

// The copy of the upgrade request a session keeps carries no token; the
// request itself is left as it was.
func TestWithoutToken(t *testing.T) {
	for _, tc := range []struct {
		name, target, auth string
		wantURI            string
		same               bool
	}{
		{name: "no token", target: "/ws?since=abc", wantURI: "/ws?since=abc", same: true},
		{name: "header", target: "/ws?since=abc", auth: "Bearer x.y.z", wantURI: "/ws?since=abc"},
		{name: "query", target: "/ws?access_token=x.y.z&since=abc", wantURI: "/ws?since=abc"},
		{name: "both", target: "/ws?access_token=x.y.z", auth: "Bearer x.y.z", wantURI: "/ws"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			got := withoutToken(r)
			if (got == r) != tc.same {
				t.Fatalf("returned the request itself: %v, want %v", got == r, tc.same)
			}
			if got.Header.Get("Authorization") != "" || got.URL.Query().Has("access_token") {
				t.Fatalf("token kept: %q, %q", got.Header.Get("Authorization"), got.URL.RawQuery)
			}
			if got.RequestURI != tc.wantURI || got.URL.RequestURI() != tc.wantURI {
				t.Fatalf("request URI %q (URL %q), want %q", got.RequestURI, got.URL.RequestURI(), tc.wantURI)
			}
			if r.Header.Get("Authorization") != tc.auth || r.RequestURI != tc.target {
				t.Fatal("the request itself was changed")
			}
		})
	}
}
