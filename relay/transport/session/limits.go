package session

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Refusal reasons: the reason label of rowcast_sessions_refused_total, each
// named after the setting (limits.<reason>, sessions.<reason>) to raise.
const (
	ReasonUpgradeRate        = "upgrade_rate"
	ReasonSessionsPerAddress = "sessions_per_address"
	ReasonSessionsTotal      = "sessions_total"
	ReasonSessionsPerUser    = "sessions_per_user"
	ReasonConnectTimeout     = "connect_timeout"
)

// Defaults of the connection limits (Options).
const (
	DefaultMaxSessionsPerUser    = 50
	DefaultMaxSessionsPerAddress = 1000
	DefaultMaxSessions           = 20000
	DefaultUpgradeRate           = 50
	DefaultUpgradeBurst          = 200
)

// sessionsRetryAfter is the Retry-After of a refusal for a count limit:
// nothing says when a session will close, so a client should not come back
// at once.
const sessionsRetryAfter = 10 * time.Second

// Refusal is a connection refused before its upgrade (or, for Socket.IO
// polling, before its handshake) by a limit.
type Refusal struct {
	Status     int           // 429, or 503 for the total
	RetryAfter time.Duration // whole seconds, at least one
	Reason     string        // the metric's reason label (Reason* constants)
	Message    string        // for a person
}

// Header sets the Retry-After header of w's response.
func (rf *Refusal) Header(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(int(rf.RetryAfter/time.Second)))
}

// WriteHTTP answers the request with the refusal: its status, Retry-After
// and the message as plain text.
func (rf *Refusal) WriteHTTP(w http.ResponseWriter) {
	rf.Header(w)
	http.Error(w, rf.Message, rf.Status)
}

// Ticket is one admitted session's place among the open sessions: its
// client address's and, once its user is known, its user's. The session
// that runs on it gives it back when it closes; a ticket that no session
// took is given back with Release.
type Ticket struct {
	t    *Transport
	addr string // the client address key (clientKey)
	mu   sync.Mutex
	user string // the user counted, "" when none
	done bool
}

// Admit decides whether r, a request that would open a session (a
// WebSocket upgrade or a Socket.IO polling handshake), may: its client
// address's upgrade rate, the open sessions in total and those of its
// client address. It returns a ticket holding the session's place, or the
// refusal (already counted in the metrics) to answer with.
func (t *Transport) Admit(r *http.Request) (*Ticket, *Refusal) {
	addr := clientKey(ClientAddr(r, t.o.TrustedProxies))
	a := &t.adm
	now := time.Now()
	a.mu.Lock()
	wait, ok := a.allowLocked(t, addr, now)
	if !ok {
		a.mu.Unlock()
		return nil, t.refuse(ReasonUpgradeRate, http.StatusTooManyRequests, wait,
			"too many connections from this address; retry later")
	}
	if a.total >= t.o.MaxSessions {
		a.mu.Unlock()
		return nil, t.refuse(ReasonSessionsTotal, http.StatusServiceUnavailable, sessionsRetryAfter,
			"the relay has as many sessions as it takes; retry later")
	}
	if a.byAddr[addr] >= t.o.MaxSessionsPerAddress {
		a.mu.Unlock()
		return nil, t.refuse(ReasonSessionsPerAddress, http.StatusTooManyRequests, sessionsRetryAfter,
			"too many sessions from this address; retry later")
	}
	a.total++
	a.byAddr[addr]++
	a.mu.Unlock()
	return &Ticket{t: t, addr: addr}, nil
}

func (t *Transport) refuse(reason string, status int, after time.Duration, msg string) *Refusal {
	t.o.Metrics.Refused(reason)
	after = time.Duration(max(1, math.Ceil(after.Seconds()))) * time.Second
	return &Refusal{Status: status, RetryAfter: after, Reason: reason, Message: msg}
}

// ForUser counts the ticket's session as one of user's, unless user has
// as many open sessions as Options.MaxSessionsPerUser allows: then it
// returns the refusal (already counted), and the ticket stays as it was.
// A ticket counts for one user at a time; ForUser of another user moves it.
func (tk *Ticket) ForUser(user string) *Refusal {
	if tk == nil {
		return nil
	}
	t := tk.t
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.done || tk.user == user {
		return nil
	}
	a := &t.adm
	a.mu.Lock()
	if a.byUser[user] >= t.o.MaxSessionsPerUser {
		a.mu.Unlock()
		return t.refuse(ReasonSessionsPerUser, http.StatusTooManyRequests, sessionsRetryAfter,
			"too many sessions for this user; close some first")
	}
	a.byUser[user]++
	if tk.user != "" {
		a.decUser(tk.user)
	}
	a.mu.Unlock()
	tk.user = user
	return nil
}

// LeaveUser stops counting the ticket's session as its user's (a Socket.IO
// DISCONNECT: the connection stays, the session does not).
func (tk *Ticket) LeaveUser() {
	if tk == nil {
		return
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.user == "" {
		return
	}
	a := &tk.t.adm
	a.mu.Lock()
	a.decUser(tk.user)
	a.mu.Unlock()
	tk.user = ""
}

// Release gives the ticket's places back. It may be called more than once;
// only the first call counts.
func (tk *Ticket) Release() {
	if tk == nil {
		return
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.done {
		return
	}
	tk.done = true
	a := &tk.t.adm
	a.mu.Lock()
	a.total--
	if a.byAddr[tk.addr]--; a.byAddr[tk.addr] <= 0 {
		delete(a.byAddr, tk.addr)
	}
	if tk.user != "" {
		a.decUser(tk.user)
	}
	a.mu.Unlock()
}

// admission counts the open sessions (in total, by client address and by
// user) and holds the per-address upgrade rate limiters.
type admission struct {
	mu     sync.Mutex
	total  int
	byAddr map[string]int
	byUser map[string]int
	rates  map[string]*rate.Limiter
	// swept is when rates was last cleared of full buckets.
	swept time.Time
}

func (a *admission) init() {
	a.byAddr = make(map[string]int)
	a.byUser = make(map[string]int)
	a.rates = make(map[string]*rate.Limiter)
}

func (a *admission) decUser(user string) {
	if a.byUser[user]--; a.byUser[user] <= 0 {
		delete(a.byUser, user)
	}
}

// allowLocked takes one upgrade from addr's token bucket at now; when the
// bucket is empty it returns how long until it holds one again.
//
// An address's limiter is dropped once its bucket has filled up again
// (it is then the same as a new one), at a sweep run at most once per
// refill time: the map holds only the addresses that upgraded within about
// the last two refill times (8 s with the defaults), however many
// addresses come and go.
func (a *admission) allowLocked(t *Transport, addr string, now time.Time) (wait time.Duration, ok bool) {
	refill := time.Duration(float64(t.o.UpgradeBurst) / t.o.UpgradeRate * float64(time.Second))
	if now.Sub(a.swept) >= refill {
		for k, l := range a.rates {
			if l.TokensAt(now) >= float64(t.o.UpgradeBurst) {
				delete(a.rates, k)
			}
		}
		a.swept = now
	}
	l := a.rates[addr]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(t.o.UpgradeRate), t.o.UpgradeBurst)
		a.rates[addr] = l
	}
	if l.AllowN(now, 1) {
		return 0, true
	}
	missing := 1 - l.TokensAt(now)
	return time.Duration(math.Ceil(missing/t.o.UpgradeRate)) * time.Second, false
}

// ClientAddr returns the address of the client that sent r. It is the TCP
// peer (r.RemoteAddr) unless the peer is one of trusted, the reverse
// proxies in front of the relay: then it is the rightmost address of the
// X-Forwarded-For headers that is not itself a trusted proxy (each proxy
// appends the address it received the request from, so the entries left
// of the first untrusted one are whatever the client chose to send). When
// every entry is a trusted proxy it is the leftmost; an entry that is not
// an address ends the walk at the address right of it. IPv4-mapped IPv6
// addresses are returned as IPv4.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !isTrusted(peer, trusted) {
		return peer
	}
	client := peer
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a := parseAddr(strings.TrimSpace(entries[j]))
			if !a.IsValid() {
				return client
			}
			client = a
			if !isTrusted(a, trusted) {
				return client
			}
		}
	}
	return client
}

// parseAddr parses an address with or without a port ("10.0.0.1",
// "10.0.0.1:5000", "[2001:db8::1]:443", "2001:db8::1"); the zero Addr when
// it is neither.
func parseAddr(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("").Unmap()
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.WithZone("").Unmap()
		}
	}
	return netip.Addr{}
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientKey is what the per-address limits count a client address as: an
// IPv4 address itself, an IPv6 address by its /64 (one subscriber's
// network: a host picks addresses in it at will).
func clientKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
