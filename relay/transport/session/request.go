package session

import (
	"net/http"
	"net/url"
)

// requestInfo is what a connection keeps of the HTTP request that opened
// it, for Conn.Request: the request itself would keep its headers, its
// context and the HTTP server's state of the connection in memory for as
// long as the connection lives. The method is not kept: a WebSocket
// upgrade is a GET.
type requestInfo struct {
	// requestURI is the request's RequestURI when parsing it gives the
	// request's URL, as it does for a request an HTTP/1 server read (the
	// URL is parsed again on demand, and its struct is not kept); url is
	// the request's URL otherwise.
	requestURI string
	url        *url.URL
	host       string
	remoteAddr string
	// authorization is the first Authorization header ("" when none): the
	// only header read after the upgrade (auth.TokenFromRequest, when a
	// Socket.IO CONNECT carries no token).
	authorization string
}

func newRequestInfo(r *http.Request) requestInfo {
	i := requestInfo{url: r.URL, host: r.Host, remoteAddr: r.RemoteAddr,
		authorization: r.Header.Get("Authorization")}
	if r.URL != nil && r.RequestURI != "" {
		if u, err := url.ParseRequestURI(r.RequestURI); err == nil && *u == *r.URL {
			i.requestURI, i.url = r.RequestURI, nil
		}
	}
	return i
}

// request returns a new slim copy of the request (see SlimRequest), a GET.
func (i *requestInfo) request() *http.Request {
	u := i.url
	if u == nil && i.requestURI != "" {
		// It parsed to the request's URL when the connection opened.
		u, _ = url.ParseRequestURI(i.requestURI)
	}
	r := &http.Request{Method: http.MethodGet, URL: u, Host: i.host, RemoteAddr: i.remoteAddr,
		Header: http.Header{}, Body: http.NoBody}
	if i.authorization != "" {
		r.Header["Authorization"] = []string{i.authorization}
	}
	return r
}

// SlimRequest returns what a connection keeps of r, the HTTP request that
// opened it (Conn.Request): a new request with r's Method, URL (equal to
// r's, and possibly r's own: do not modify it), Host and RemoteAddr, and of
// its headers only the first Authorization, the only one read after a
// connection opens; its body is empty and its context is
// context.Background. It keeps no other part of r alive.
func SlimRequest(r *http.Request) *http.Request {
	i := newRequestInfo(r)
	slim := i.request()
	slim.Method = r.Method
	return slim
}
