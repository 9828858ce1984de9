package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Problem is one finding in a configuration.
type Problem struct {
	// Key is the path of the key it is about ("tables[2].kind"), or ""
	// for a problem of the configuration as a whole.
	Key string
	// Msg says what is wrong, for a person.
	Msg string
}

// String renders the problem as one line, "key.path: what is wrong".
func (p Problem) String() string {
	if p.Key == "" {
		return p.Msg
	}
	return p.Key + ": " + p.Msg
}

// Problems is every problem found in a configuration, e.g.
//
//	tables[2].kind: "task" is not one of entity, ai_task
//
// Load and Validate return it as a *Problems; use errors.As to get the list.
type Problems struct {
	List []Problem
}

// Error returns the problems one per line.
func (p *Problems) Error() string {
	return strings.Join(p.Lines(), "\n")
}

// Lines returns the problems rendered one per line.
func (p *Problems) Lines() []string {
	lines := make([]string, len(p.List))
	for i, q := range p.List {
		lines[i] = q.String()
	}
	return lines
}

// About reports whether a problem concerns key or a key under it
// ("tables[1]" covers "tables[1].kind" and "tables[1].exclude_columns[0]").
func (p *Problems) About(key string) bool {
	for _, q := range p.List {
		if within(q.Key, key) {
			return true
		}
	}
	return false
}

func newProblems(ps []Problem) *Problems { return &Problems{List: ps} }

// minSecretLen is the shortest accepted HS256 key: RFC 7518 section 3.2
// requires a key at least as long as the hash output.
const minSecretLen = 32

// Validate checks c as Load leaves it (table defaults applied) and returns
// a *Problems naming every problem, or nil when there is none. It reports
// an empty database.url or JWT secret, a JWT secret shorter than 32 bytes,
// addresses that are not host:port, origins that are not
// scheme://host[:port] or a pattern such as https://*.example.com (not
// "*", not "https://*", not a wildcard under one label such as
// https://*.com), trusted proxies that are not CIDRs, sizes, limits and
// durations that are not positive, poll_min above poll_max, unknown enumeration values, and table entries
// that are missing, malformed, duplicated or whose exclusions would drop a
// key column. Messages never contain a secret.
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return newProblems(ps)
	}
	return nil
}

func (c *Config) problems() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Key: path, Msg: fmt.Sprintf(format, args...)})
	}
	positive := func(path string, d time.Duration) {
		if d <= 0 {
			add(path, "must be a positive duration, got %s", d)
		}
	}
	positiveInt := func(path string, n int64) {
		if n <= 0 {
			add(path, "must be positive, got %d", n)
		}
	}
	hostPort := func(path, addr string) {
		if reason := checkHostPort(addr); reason != "" {
			add(path, "%q %s", addr, reason)
		}
	}
	oneOf := func(path, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		add(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}

	if strings.TrimSpace(c.Database.URL) == "" {
		add("database.url", "is empty; set it in the file, in ROWCAST_DATABASE_URL or in DATABASE_URL")
	}

	oneOf("capture.mode", c.Capture.Mode, ModeTrigger, ModeLogical)
	for _, kv := range [][2]string{{"capture.slot", c.Capture.Slot}, {"capture.publication", c.Capture.Publication}} {
		if c.Capture.Mode == ModeLogical && !validSlotName(kv[1]) {
			add(kv[0], "%q is not a valid name: use lowercase letters, digits and _, at most 63 bytes", kv[1])
		}
	}
	positive("capture.poll_min", c.Capture.PollMin)
	positive("capture.poll_max", c.Capture.PollMax)
	positive("capture.group_pause", c.Capture.GroupPause)
	switch t := c.Capture.TickInterval; {
	case t < 0 || t > 0 && t < 100*time.Microsecond || t > time.Second:
		add("capture.tick_interval", "must be 0 (a tick at each ring of the doorbell) or between 100µs and 1s, got %s", t)
	case t == 0 && !c.Capture.NotifyEnabled():
		add("capture.tick_interval", "0 ticks at each ring of the doorbell, which capture.notify: false turns off; set a positive interval, or capture.notify: true")
	}
	if c.Capture.PollMin > 0 && c.Capture.PollMax > 0 && c.Capture.PollMin > c.Capture.PollMax {
		add("capture.poll_min", "%s is greater than capture.poll_max (%s)", c.Capture.PollMin, c.Capture.PollMax)
	}

	hostPort("listen", c.Listen)
	if c.AdminListen != "" {
		hostPort("admin_listen", c.AdminListen)
	}

	switch n := len(c.Auth.JWTSecret); {
	case n == 0 && c.Auth.PublicKeyFile == "" && c.Auth.JWKSURL == "":
		add("auth.jwt_secret", "is empty, and so are auth.public_key_file and auth.jwks_url; set one: the secret (preferably with ROWCAST_AUTH_JWT_SECRET) to a random string of at least %d bytes, or your identity provider's keys", minSecretLen)
	case n > 0 && n < minSecretLen:
		add("auth.jwt_secret", "is too short (%d bytes); HMAC needs at least %d bytes", n, minSecretLen)
	}
	if f := c.Auth.PublicKeyFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			add("auth.public_key_file", "cannot be read: %v", err)
		}
	}
	if u := c.Auth.JWKSURL; u != "" {
		pu, err := url.Parse(u)
		switch {
		case err != nil || pu.Host == "" || (pu.Scheme != "https" && pu.Scheme != "http"):
			add("auth.jwks_url", "%q is not an https URL (e.g. https://idp.example.com/.well-known/jwks.json)", u)
		case pu.Scheme == "http" && !isLoopback(pu.Hostname()):
			add("auth.jwks_url", "%q is plain http: anyone on the path could hand the relay their own keys; use https (http is accepted for loopback addresses only)", u)
		}
	}
	for i, a := range c.Auth.Algorithms {
		if a == "" || strings.EqualFold(a, "none") {
			add(fmt.Sprintf("auth.algorithms[%d]", i), "%q is not an algorithm: unsigned tokens are never accepted", a)
		}
	}
	if c.Auth.Leeway < 0 || c.Auth.Leeway > 5*time.Minute {
		add("auth.leeway", "%s is out of range: 0 to 5m (a few seconds covers clock skew)", c.Auth.Leeway)
	}
	if n := c.Auth.MaxToken; n < 1024 || n > 64<<10 {
		add("auth.max_token_bytes", "%d is out of range: 1024 to 65536", n)
	}
	if d := c.Sentry.DSN; d != "" {
		if u, err := url.Parse(d); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.User == nil || u.Host == "" || strings.Trim(u.Path, "/") == "" {
			add("sentry.dsn", "is not a Sentry DSN (https://<key>@<host>/<project id>, as Sentry's project settings show it)")
		}
	}
	if m := c.Auth.Membership; m != nil {
		d := m.WithDefaults()
		switch {
		case m.Table == "":
			add("auth.membership.table", "is empty; name the table of (user, team) rows, e.g. team_members")
		case !validTableName(m.Table):
			add("auth.membership.table", "%q is not a table name: write an identifier, optionally schema-qualified as schema.table", m.Table)
		default:
			mt := Table{Table: m.Table}
			for i, t := range c.Tables {
				if t.Qualified() == mt.Qualified() {
					add("auth.membership.table", "%s is also tables[%d]: the membership table is captured for scope only and cannot be an entity table too", mt.Qualified(), i)
				}
			}
		}
		if !validIdent(d.UserColumn) {
			add("auth.membership.user_column", "%q is not a column name", d.UserColumn)
		}
		if !validIdent(d.TeamColumn) {
			add("auth.membership.team_column", "%q is not a column name", d.TeamColumn)
		}
		if d.Mode != MembershipDatabase && d.Mode != MembershipIntersect {
			add("auth.membership.mode", "%q is not one of %s, %s", d.Mode, MembershipDatabase, MembershipIntersect)
		}
	}
	if c.Auth.UserClaim == "" {
		add("auth.user_claim", "is empty; name the claim that holds the user id (default sub)")
	}
	if c.Auth.TeamClaim == "" {
		add("auth.team_claim", "is empty; name the claim that holds the team ids (default teamId)")
	}

	for i, o := range c.Origins {
		if reason := checkOrigin(o); reason != "" {
			add(fmt.Sprintf("origins[%d]", i), "%s", reason)
		}
	}

	for i, p := range c.TrustedProxies {
		if _, err := ParseTrustedProxy(p); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), "%s", err)
		}
	}

	positive("history.retention", c.History.Retention)
	positive("history.prune_interval", c.History.PruneInterval)

	positive("sessions.heartbeat", c.Sessions.Heartbeat)
	if d := c.Sessions.WriteDelay; d < 0 || d > time.Second {
		add("sessions.write_delay", "must be between 0 (write at once) and 1s, got %s", d)
	}
	positive("sessions.connect_timeout", c.Sessions.ConnectTimeout)
	positiveInt("sessions.queue_size", int64(c.Sessions.QueueSize))
	positiveInt("sessions.queue_bytes", c.Sessions.QueueBytes)
	positiveInt("sessions.max_message_size", c.Sessions.MaxMessageSize)
	if !(c.Sessions.RateLimit > 0) {
		add("sessions.rate_limit", "must be positive, got %v", c.Sessions.RateLimit)
	}
	positiveInt("sessions.rate_burst", int64(c.Sessions.RateBurst))
	if c.Sessions.RateStrikes < 0 {
		add("sessions.rate_strikes", "must not be negative, got %d", c.Sessions.RateStrikes)
	}
	positiveInt("sessions.replay_limit", int64(c.Sessions.ReplayLimit))
	positiveInt("sessions.max_subscribe_entities", int64(c.Sessions.MaxSubscribeEntities))

	positiveInt("limits.sessions_per_user", int64(c.Limits.SessionsPerUser))
	positiveInt("limits.sessions_per_address", int64(c.Limits.SessionsPerAddress))
	positiveInt("limits.sessions_total", int64(c.Limits.SessionsTotal))
	if !(c.Limits.UpgradeRate > 0) {
		add("limits.upgrade_rate", "must be positive, got %v", c.Limits.UpgradeRate)
	}
	positiveInt("limits.upgrade_burst", int64(c.Limits.UpgradeBurst))

	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "text", "json")

	positive("shutdown.grace", c.Shutdown.Grace)
	if c.Shutdown.Drain < 0 || c.Shutdown.Grace > 0 && c.Shutdown.Drain >= c.Shutdown.Grace {
		add("shutdown.drain", "must be at least 0 and less than shutdown.grace (%s), got %s", c.Shutdown.Grace, c.Shutdown.Drain)
	}

	ps = append(ps, c.tableProblems()...)
	return ps
}

func (c *Config) tableProblems() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Key: path, Msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Tables) == 0 {
		add("tables", "no tables configured; list at least one table to capture")
		return ps
	}
	tables := make(map[string]int)
	entities := make(map[string]int)
	for i, t := range c.Tables {
		p := fmt.Sprintf("tables[%d].", i)
		switch {
		case t.Table == "":
			add(p+"table", "is empty; name the table to capture, e.g. escrows or crm.escrows")
		case !validTableName(t.Table):
			add(p+"table", "%q is not a table name: write an identifier (letters, digits, _ and $, not starting with a digit, at most 63 bytes), optionally schema-qualified as schema.table", t.Table)
		default:
			if j, dup := tables[t.Qualified()]; dup {
				add(p+"table", "%s is already configured as tables[%d]", t.Qualified(), j)
			} else {
				tables[t.Qualified()] = i
			}
		}

		switch {
		case t.Entity == "":
			add(p+"entity", "is empty")
		case !validEntity(t.Entity) && !validTableName(t.Table) && t.Entity == singular(t.Name()):
			// Derived from a bad table name, already reported.
		case !validEntity(t.Entity):
			add(p+"entity", "%q is not an entity name: use letters, digits and _, starting with a letter (it names the events, <entity>:created)", t.Entity)
		default:
			if j, dup := entities[t.Entity]; dup {
				add(p+"entity", "%q is already the entity of tables[%d]; set entity on one of them", t.Entity, j)
			} else {
				entities[t.Entity] = i
			}
		}

		task := t.Kind == KindAITask
		if t.Kind != KindEntity && !task {
			add(p+"kind", "%q is not one of %s, %s", t.Kind, KindEntity, KindAITask)
		}

		column := func(key, col string, required bool) {
			switch {
			case col == "" && required:
				add(p+key, "is empty")
			case col != "" && !validIdent(col):
				add(p+key, "%q is not a column name", col)
			}
		}
		if len(t.IDColumns) == 0 {
			column("id_column", t.IDColumn, true)
		} else {
			if t.IDColumn != "" {
				add(p+"id_columns", "set either id_column (a one-column key) or id_columns (a composite key), not both")
			}
			if task {
				add(p+"id_columns", "an ai_task table is identified by one column; use id_column")
			}
			seen := make(map[string]bool, len(t.IDColumns))
			for j, col := range t.IDColumns {
				path := fmt.Sprintf("%sid_columns[%d]", p, j)
				switch {
				case !validIdent(col):
					add(path, "%q is not a column name", col)
				case seen[col]:
					add(path, "%q is listed twice", col)
				}
				seen[col] = true
			}
		}
		if f := t.TeamFrom; f != nil {
			if t.TeamColumn != "" {
				add(p+"team_from", "set either team_column (the table's own team column) or team_from (the team of a parent row), not both")
			}
			if task {
				add(p+"team_from", "is not supported for ai_task tables; use team_column")
			}
			if !validTableName(f.Table) {
				add(p+"team_from.table", "%q is not a table name: name the parent table, e.g. deals or crm.deals", f.Table)
			}
			column("team_from.key", f.Key, true)
			column("team_from.column", f.Column, true)
			column("team_from.parent_key", f.ParentKey, false)
		} else {
			column("team_column", t.TeamColumn, true)
		}
		column("user_column", t.UserColumn, task)
		column("actor_column", t.ActorColumn, false)
		column("status_column", t.StatusColumn, task)
		column("progress_column", t.ProgressColumn, task)
		column("message_column", t.MessageColumn, task)
		column("type_column", t.TypeColumn, task)
		column("result_column", t.ResultColumn, task)
		column("error_column", t.ErrorColumn, task)

		keyColumn := func(col string) string {
			switch {
			case col == t.IDColumn && len(t.IDColumns) == 0:
				return "the id column"
			case slices.Contains(t.IDColumns, col):
				return "a column of id_columns"
			case col == t.TeamColumn:
				return "the team column"
			case col == t.UserColumn && t.UserColumn != "":
				return "the user column"
			case t.Kind == KindAITask && col == t.StatusColumn:
				return "the status column"
			case t.Kind == KindAITask && col == t.ProgressColumn:
				return "the progress column"
			}
			return ""
		}
		for j, col := range t.ExcludeColumns {
			path := fmt.Sprintf("%sexclude_columns[%d]", p, j)
			if !validIdent(col) {
				add(path, "%q is not a column name", col)
			} else if what := keyColumn(col); what != "" {
				add(path, "%q is %s; events need it, so it cannot be excluded", col, what)
			}
		}
	}
	return ps
}

// checkHostPort returns why addr is not a listen address, or "".
func checkHostPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "is not host:port (e.g. 127.0.0.1:8080, or :8080 for every interface)"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("has port %q, which is not a number from 0 to 65535", port)
	}
	return ""
}

// checkOrigin returns why o is not an allowed browser origin or origin
// pattern, or "". A pattern is an origin whose host starts with "*.": the
// wildcard stands for one or more labels at the left of a domain of at
// least two labels (https://*.example.com); the scheme and the port must
// match exactly.
func checkOrigin(o string) string {
	const form = "scheme://host[:port]"
	u, err := url.Parse(o)
	if strings.Contains(o, "*") && (err != nil || u.Host == "" || u.Hostname() == "*" || strings.Contains(u.Scheme+u.Port(), "*")) {
		return fmt.Sprintf("%q is not allowed: wildcards would let any web page open sessions with its visitors' tokens (cross-site WebSocket hijacking); list each browser origin as %s, e.g. https://app.example.com, or the subdomains of one domain as https://*.example.com (clients that send no Origin are always allowed)", o, form)
	}
	if err != nil || u.Scheme == "" || u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return fmt.Sprintf("%q is not an origin of the form %s", o, form)
	}
	if u.User != nil {
		return fmt.Sprintf("%q is not an origin of the form %s: it has user info", o, form)
	}
	if u.Path == "/" && u.RawQuery == "" && u.Fragment == "" && !u.ForceQuery {
		return fmt.Sprintf("%q has a trailing slash; browsers send origins without one: write %q", o, strings.TrimSuffix(o, "/"))
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return fmt.Sprintf("%q is not an origin of the form %s: it has a path, query or fragment", o, form)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Sprintf("%q has port %q, which is not a number from 1 to 65535", o, p)
		}
	}
	if lower := strings.ToLower(o); lower != o {
		return fmt.Sprintf("%q must be lowercase, as browsers send it: write %q", o, lower)
	}
	if host := u.Hostname(); strings.Contains(host, "*") {
		return checkOriginPattern(o, host)
	}
	return ""
}

// checkOriginPattern returns why host, the host of the origin pattern o,
// is not a wildcard followed by a domain of at least two labels, or "".
func checkOriginPattern(o, host string) string {
	suffix, ok := strings.CutPrefix(host, "*.")
	if !ok || strings.Contains(suffix, "*") {
		return fmt.Sprintf("%q is not allowed: a wildcard may only stand for the leftmost labels of the host, as in https://*.example.com", o)
	}
	labels := strings.Split(suffix, ".")
	if slices.Contains(labels, "") {
		return fmt.Sprintf("%q is not an origin pattern: its host has an empty label", o)
	}
	if len(labels) < 2 {
		return fmt.Sprintf("%q is not allowed: it would match every site under %q; name a domain of at least two labels, as in https://*.example.com", o, suffix)
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return fmt.Sprintf("%q is not allowed: a wildcard stands for labels of a domain name, not parts of an IP address", o)
	}
	return ""
}

// ParseTrustedProxy parses an entry of trusted_proxies: a CIDR
// ("10.0.0.0/8", "fd00::/8") or a single address ("10.1.2.3", a /32 or
// /128). It refuses a prefix with host bits set (a likely typo) and one
// that covers every address, which would believe X-Forwarded-For from any
// client. The error says why, for a person.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or fd00::/8, or an address", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or fd00::/8, or an address", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set past its /%d; write %s", s, p.Bits(), m)
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("%q covers every address: X-Forwarded-For would be believed from any client, which could then pose as any address; name the proxies' own networks", s)
	}
	return p, nil
}

// validTableName reports whether s is an identifier, optionally qualified
// by a schema identifier.
func validTableName(s string) bool {
	schema, name, qualified := strings.Cut(s, ".")
	if qualified {
		return validIdent(schema) && validIdent(name)
	}
	return validIdent(s)
}

// validIdent reports whether s is a PostgreSQL identifier that needs no
// quoting apart from case: a letter or _ (or any non-ASCII byte), then
// letters, digits, _ or $, at most 63 bytes.
func validIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c >= 0x80:
		case i > 0 && (c >= '0' && c <= '9' || c == '$'):
		default:
			return false
		}
	}
	return true
}

// validEntity reports whether s can name events: an ASCII letter, then
// ASCII letters, digits or _.
func validEntity(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '_'):
		default:
			return false
		}
	}
	return s != ""
}

// validSlotName reports whether s is a valid replication slot name (which
// is also a valid unquoted publication name).
func validSlotName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
