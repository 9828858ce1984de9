package session

import (
	"net/http"
	"net/url"
)

// requestInfo is what a connection keeps of the HTTP request that opened
// it, for Conn.Request: the request itself would keep its headers, its
// context and the HTTP server's state of the connection in memory for as
// long as the connection lives.
type requestInfo struct {
	method     string
	url        *url.URL
	host       string
	remoteAddr string
	// authorization is the first Authorization header ("" when none): the
	// only header read after the upgrade (auth.TokenFromRequest, when a
	// Socket.IO CONNECT carries no token).
	authorization string
}

func newRequestInfo(r *http.Request) requestInfo {
	return requestInfo{method: r.Method, url: r.URL, host: r.Host, remoteAddr: r.RemoteAddr,
		authorization: r.Header.Get("Authorization")}
}

// request returns a new slim copy of the request (see SlimRequest).
func (i *requestInfo) request() *http.Request {
	r := &http.Request{Method: i.method, URL: i.url, Host: i.host, RemoteAddr: i.remoteAddr,
		Header: http.Header{}, Body: http.NoBody}
	if i.authorization != "" {
		r.Header["Authorization"] = []string{i.authorization}
	}
	return r
}

// SlimRequest returns what a connection keeps of r, the HTTP request that
// opened it (Conn.Request): a new request with r's Method, URL (shared with
// r: do not modify it), Host and RemoteAddr, and of its headers only the
// first Authorization, the only one read after a connection opens; its
// body is empty and its context is context.Background. It keeps no other
// part of r alive.
func SlimRequest(r *http.Request) *http.Request {
	i := newRequestInfo(r)
	return i.request()
}
