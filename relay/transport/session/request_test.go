package session

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// SlimRequest keeps the method, the URL, Host, RemoteAddr and the first
// Authorization header of a request, and nothing else; a URL a handler
// rewrote (as http.StripPrefix does) is kept as rewritten.
func TestSlimRequest(t *testing.T) {
	type key struct{}
	r := httptest.NewRequest(http.MethodGet, "http://relay.example/ws?access_token=q&since=p", nil)
	r = r.WithContext(context.WithValue(r.Context(), key{}, "server state"))
	r.RequestURI = "/ws?access_token=q&since=p" // as a server reads it
	r.URL.Scheme, r.URL.Host = "", ""
	r.RemoteAddr = "192.0.2.1:1234"
	r.Header.Add("Authorization", "Bearer one")
	r.Header.Add("Authorization", "Bearer two")
	r.Header.Set("Cookie", "c=1")
	slim := SlimRequest(r)
	if slim.Method != http.MethodGet || slim.Host != "relay.example" || slim.RemoteAddr != "192.0.2.1:1234" ||
		*slim.URL != *r.URL {
		t.Errorf("slim %s host %q remote %q URL %#v; want GET relay.example 192.0.2.1:1234 %#v",
			slim.Method, slim.Host, slim.RemoteAddr, slim.URL, r.URL)
	}
	if len(slim.Header) != 1 || len(slim.Header["Authorization"]) != 1 || slim.Header.Get("Authorization") != "Bearer one" {
		t.Errorf("headers %v; want the first Authorization alone", slim.Header)
	}
	if slim.Body != http.NoBody || slim.Context().Value(key{}) != nil {
		t.Error("the slim request shares the body or the context")
	}

	stripped := r.Clone(r.Context())
	stripped.URL.Path = "/stripped"
	if got := SlimRequest(stripped).URL.Path; got != "/stripped" {
		t.Errorf("rewritten URL path %q, want /stripped", got)
	}

	post := httptest.NewRequest(http.MethodPost, "/socket.io/?EIO=4", nil)
	if got := SlimRequest(post); got.Method != http.MethodPost || len(got.Header) != 0 {
		t.Errorf("POST without Authorization: %s %v", got.Method, got.Header)
	}
}
