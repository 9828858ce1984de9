package session

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// TestOriginPolicy: exact origins match as they are; a pattern matches one
// or more labels in place of its wildcard, with the same scheme and port,
// and nothing else.
func TestOriginPolicy(t *testing.T) {
	p := newOriginPolicy([]string{"https://crm.example.com", "https://*.example.org", "http://*.dev.example.net:8080",
		"https://*.com", "https://*", "https://a.*.example.io"}) // the last three are refused by config validation and match nothing
	tests := []struct {
		origin string
		want   bool
	}{
		{"https://crm.example.com", true},
		{"https://CRM.example.com", true},
		{"http://crm.example.com", false},
		{"https://x.crm.example.com", false},
		{"https://app.example.org", true},
		{"https://a.b.example.org", true},
		{"https://example.org", false},          // the wildcard stands for at least one label
		{"https://.example.org", false},         // an empty label
		{"https://a..example.org", false},       // an empty label
		{"https://evilexample.org", false},      // not a label boundary
		{"https://app.example.org.evil", false}, // a suffix of the host, not of the origin
		{"http://app.example.org", false},       // scheme
		{"https://app.example.org:443", false},  // port: none in the pattern
		{"https://app.example.org:8443", false},
		{"http://x.dev.example.net:8080", true},
		{"http://x.dev.example.net", false},
		{"http://x.dev.example.net:8081", false},
		{"https://anything.com", false},
		{"https://anything", false},
		{"https://a.b.example.io", false},
		{"null", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := p.allows(tt.origin); got != tt.want {
			t.Errorf("allows(%q) = %v, want %v", tt.origin, got, tt.want)
		}
	}
}

// TestClientAddr: X-Forwarded-For is believed only from a trusted peer,
// and then only up to the first address that is not a trusted proxy.
func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"no proxy", "203.0.113.9:5000", nil, "203.0.113.9"},
		{"untrusted peer's header is ignored", "203.0.113.9:5000", []string{"198.51.100.1"}, "203.0.113.9"},
		{"trusted peer, one hop", "10.0.0.2:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"a client's forged entries left of the proxy's are ignored", "10.0.0.2:5000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"trusted hops are skipped", "10.0.0.2:5000", []string{"198.51.100.1, 10.1.1.1", "10.2.2.2"}, "198.51.100.1"},
		{"several header lines, rightmost last", "10.0.0.2:5000", []string{"1.2.3.4", "198.51.100.7"}, "198.51.100.7"},
		{"every entry trusted: the leftmost", "10.0.0.2:5000", []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9"},
		{"trusted peer without header", "10.0.0.2:5000", nil, "10.0.0.2"},
		{"garbage ends the walk", "10.0.0.2:5000", []string{"198.51.100.1, junk, 10.1.1.1"}, "10.1.1.1"},
		{"entries with ports", "10.0.0.2:5000", []string{"198.51.100.1:4444"}, "198.51.100.1"},
		{"IPv6 entries", "[fd00::1]:443", []string{"[2001:db8::5]:1234"}, "2001:db8::5"},
		{"IPv4-mapped peer", "[::ffff:10.0.0.2]:5000", []string{"198.51.100.1"}, "198.51.100.1"},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := ClientAddr(r, trusted).String(); got != tt.want {
			t.Errorf("%s: ClientAddr = %s, want %s", tt.name, got, tt.want)
		}
	}
	if got := clientKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1")); got != "2001:db8:1:2::/64" {
		t.Errorf("clientKey of an IPv6 address = %s, want its /64", got)
	}
}

// TestUpgradeRateLimitersExpire: the per-address limiters are dropped
// once their buckets are full again, so addresses that stop coming leave
// nothing behind; an address over its rate is refused with a wait.
func TestUpgradeRateLimitersExpire(t *testing.T) {
	tr := New(Options{UpgradeRate: 10, UpgradeBurst: 20}) // refills in 2 s
	a := &tr.adm
	now := time.Unix(1_000_000, 0)
	for i := range 1000 {
		if _, ok := a.allowLocked(tr, fmt.Sprint("198.51.100.", i), now); !ok {
			t.Fatalf("address %d refused on its first upgrade", i)
		}
	}
	for range 20 {
		a.allowLocked(tr, "203.0.113.1", now)
	}
	if wait, ok := a.allowLocked(tr, "203.0.113.1", now); ok || wait != time.Second {
		t.Fatalf("21st upgrade at once: ok %v, wait %v; want refused, 1s", ok, wait)
	}
	if n := len(a.rates); n != 1001 {
		t.Fatalf("%d limiters, want 1001", n)
	}
	// 2 s later every bucket is full again: the next upgrade sweeps them.
	now = now.Add(2 * time.Second)
	if _, ok := a.allowLocked(tr, "192.0.2.1", now); !ok {
		t.Fatal("refused after the sweep")
	}
	if n := len(a.rates); n != 1 {
		t.Fatalf("%d limiters after every address went idle, want 1 (the new one)", n)
	}
}

// TestTicketsCount: tickets count sessions in total, by address and by
// user, and give them back once however often released.
func TestTicketsCount(t *testing.T) {
	tr := New(Options{MaxSessions: 3, MaxSessionsPerAddress: 2, MaxSessionsPerUser: 1})
	req := func(addr string) *http.Request {
		return &http.Request{RemoteAddr: addr + ":1000", Header: http.Header{}}
	}
	a1, rf := tr.Admit(req("192.0.2.1"))
	if rf != nil {
		t.Fatal(rf.Message)
	}
	a2, _ := tr.Admit(req("192.0.2.1"))
	if _, rf := tr.Admit(req("192.0.2.1")); rf == nil || rf.Status != 429 || rf.Reason != ReasonSessionsPerAddress || rf.RetryAfter != 10*time.Second {
		t.Fatalf("third session of one address: %+v", rf)
	}
	b1, _ := tr.Admit(req("192.0.2.2"))
	if _, rf := tr.Admit(req("192.0.2.3")); rf == nil || rf.Status != 503 || rf.Reason != ReasonSessionsTotal {
		t.Fatalf("fourth session: %+v", rf)
	}
	if rf := a1.ForUser("u"); rf != nil {
		t.Fatal(rf.Message)
	}
	if rf := b1.ForUser("u"); rf == nil || rf.Reason != ReasonSessionsPerUser {
		t.Fatalf("second session of a user: %+v", rf)
	}
	a1.Release()
	a1.Release()
	if rf := b1.ForUser("u"); rf != nil {
		t.Fatalf("after release: %s", rf.Message)
	}
	if _, rf := tr.Admit(req("192.0.2.1")); rf != nil {
		t.Fatalf("after release: %s", rf.Message)
	}
	a2.Release()
	b1.LeaveUser()
	if n := len(tr.adm.byUser); n != 0 {
		t.Fatalf("%d users counted, want 0", n)
	}
}
