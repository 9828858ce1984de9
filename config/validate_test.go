package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validConfig is a configuration that passes Validate.
func validConfig() Config {
	c := Defaults()
	c.Database.URL = testURL
	c.Auth.JWTSecret = testSecret
	c.Tables = []Table{
		Table{Table: "escrows"}.WithDefaults(),
		Table{Table: "ai_tasks", Kind: KindAITask}.WithDefaults(),
	}
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"valid", func(*Config) {}, nil},
		{"admin listen and origins", func(c *Config) {
			c.AdminListen = "127.0.0.1:9090"
			c.Listen = ":0"
			c.Origins = []string{"https://app.example.com", "http://localhost:3000", "chrome-extension://abcdef"}
		}, nil},
		{"empty database url", func(c *Config) { c.Database.URL = " " }, []string{
			"database.url: is empty; set it in the file, in ROWCAST_DATABASE_URL or in DATABASE_URL",
		}},
		{"capture mode", func(c *Config) { c.Capture.Mode = "wal" }, []string{
			`capture.mode: "wal" is not one of trigger, logical`,
		}},
		{"empty secret", func(c *Config) { c.Auth.JWTSecret = "" }, []string{
			"auth.jwt_secret: is empty, and so are auth.public_key_file and auth.jwks_url; set one: the secret (preferably with ROWCAST_AUTH_JWT_SECRET) to a random string of at least 32 bytes, or your identity provider's keys",
		}},
		{"short secret", func(c *Config) { c.Auth.JWTSecret = testSecret[:31] }, []string{
			"auth.jwt_secret: is too short (31 bytes); HMAC needs at least 32 bytes",
		}},
		{"empty claims", func(c *Config) { c.Auth.UserClaim, c.Auth.TeamClaim = "", "" }, []string{
			"auth.user_claim: is empty; name the claim that holds the user id (default sub)",
			"auth.team_claim: is empty; name the claim that holds the team ids (default teamId)",
		}},
		{"keys without a secret", func(c *Config) {
			c.Auth.JWTSecret = ""
			c.Auth.JWKSURL = "https://idp.example.com/.well-known/jwks.json"
			c.Auth.Algorithms = []string{"RS256", "ES256"}
			c.Auth.Leeway = 30 * time.Second
		}, nil},
		{"key sources and limits", func(c *Config) {
			c.Auth.PublicKeyFile = "/nonexistent/keys.pem"
			c.Auth.JWKSURL = "http://idp.example.com/jwks"
			c.Auth.Algorithms = []string{"RS256", "none"}
			c.Auth.Leeway = -time.Second
			c.Auth.MaxToken = 100
		}, []string{
			"auth.public_key_file: cannot be read: stat /nonexistent/keys.pem: no such file or directory",
			`auth.jwks_url: "http://idp.example.com/jwks" is plain http: anyone on the path could hand the relay their own keys; use https (http is accepted for loopback addresses only)`,
			`auth.algorithms[1]: "none" is not an algorithm: unsigned tokens are never accepted`,
			"auth.leeway: -1s is out of range: 0 to 5m (a few seconds covers clock skew)",
			"auth.max_token_bytes: 100 is out of range: 1024 to 65536",
		}},
		{"loopback jwks over http", func(c *Config) { c.Auth.JWKSURL = "http://127.0.0.1:9999/jwks" }, nil},
		{"membership", func(c *Config) { c.Auth.Membership = &Membership{Table: "team_members", Mode: MembershipIntersect} }, nil},
		{"membership problems", func(c *Config) {
			c.Auth.Membership = &Membership{Table: "escrows", UserColumn: "user id", Mode: "token"}
		}, []string{
			"auth.membership.table: public.escrows is also tables[0]: the membership table is captured for scope only and cannot be an entity table too",
			`auth.membership.user_column: "user id" is not a column name`,
			`auth.membership.mode: "token" is not one of database, intersect`,
		}},
		{"membership without table", func(c *Config) { c.Auth.Membership = &Membership{} }, []string{
			"auth.membership.table: is empty; name the table of (user, team) rows, e.g. team_members",
		}},
		{"listen addresses", func(c *Config) { c.Listen, c.AdminListen = "", "host:http" }, []string{
			`listen: "" is not host:port (e.g. 127.0.0.1:8080, or :8080 for every interface)`,
			`admin_listen: "host:http" has port "http", which is not a number from 0 to 65535`,
		}},
		{"origins", func(c *Config) {
			c.Origins = []string{"https://*", "https://user@app.example.com", "https://app.example.com:0", "https://app.example.com?x", "/relative"}
		}, []string{
			`origins[0]: "https://*" is not allowed: wildcards would let any web page open sessions with its visitors' tokens (cross-site WebSocket hijacking); list each browser origin as scheme://host[:port], e.g. https://app.example.com, or the subdomains of one domain as https://*.example.com (clients that send no Origin are always allowed)`,
			`origins[1]: "https://user@app.example.com" is not an origin of the form scheme://host[:port]: it has user info`,
			`origins[2]: "https://app.example.com:0" has port "0", which is not a number from 1 to 65535`,
			`origins[3]: "https://app.example.com?x" is not an origin of the form scheme://host[:port]: it has a path, query or fragment`,
			`origins[4]: "/relative" is not an origin of the form scheme://host[:port]`,
		}},
		{"zero and negative sizes and durations", func(c *Config) {
			c.Capture.PollMin, c.Capture.PollMax, c.Capture.GroupPause = 0, -time.Second, 0
			c.History.Retention, c.History.PruneInterval = 0, 0
			c.Sessions = Sessions{RateStrikes: -1}
			c.Limits = Limits{SessionsPerAddress: -1}
			c.Shutdown.Grace = -1
		}, []string{
			"capture.poll_min: must be a positive duration, got 0s",
			"capture.poll_max: must be a positive duration, got -1s",
			"capture.group_pause: must be a positive duration, got 0s",
			"history.retention: must be a positive duration, got 0s",
			"history.prune_interval: must be a positive duration, got 0s",
			"sessions.heartbeat: must be a positive duration, got 0s",
			"sessions.connect_timeout: must be a positive duration, got 0s",
			"sessions.queue_size: must be positive, got 0",
			"sessions.queue_bytes: must be positive, got 0",
			"sessions.max_message_size: must be positive, got 0",
			"sessions.rate_limit: must be positive, got 0",
			"sessions.rate_burst: must be positive, got 0",
			"sessions.rate_strikes: must not be negative, got -1",
			"sessions.replay_limit: must be positive, got 0",
			"sessions.max_subscribe_entities: must be positive, got 0",
			"limits.sessions_per_user: must be positive, got 0",
			"limits.sessions_per_address: must be positive, got -1",
			"limits.sessions_total: must be positive, got 0",
			"limits.upgrade_rate: must be positive, got 0",
			"limits.upgrade_burst: must be positive, got 0",
			"shutdown.grace: must be a positive duration, got -1ns",
		}},
		{"zero rate strikes allowed", func(c *Config) { c.Sessions.RateStrikes = 0 }, nil},
		{"write delay", func(c *Config) { c.Sessions.WriteDelay = 50 * time.Millisecond }, nil},
		{"negative write delay", func(c *Config) { c.Sessions.WriteDelay = -time.Millisecond }, []string{
			"sessions.write_delay: must be between 0 (write at once) and 1s, got -1ms",
		}},
		{"write delay past a second", func(c *Config) { c.Sessions.WriteDelay = 2 * time.Second }, []string{
			"sessions.write_delay: must be between 0 (write at once) and 1s, got 2s",
		}},
		{"drain at once allowed", func(c *Config) { c.Shutdown.Drain = 0 }, nil},
		{"drain as long as grace", func(c *Config) { c.Shutdown.Drain = c.Shutdown.Grace }, []string{
			"shutdown.drain: must be at least 0 and less than shutdown.grace (10s), got 10s",
		}},
		{"negative drain", func(c *Config) { c.Shutdown.Drain = -time.Second }, []string{
			"shutdown.drain: must be at least 0 and less than shutdown.grace (10s), got -1s",
		}},
		{"poll_min above poll_max", func(c *Config) { c.Capture.PollMin = 2 * time.Second }, []string{
			"capture.poll_min: 2s is greater than capture.poll_max (1s)",
		}},
		{"tick interval negative", func(c *Config) { c.Capture.TickInterval = -time.Millisecond }, []string{
			"capture.tick_interval: must be 0 (a tick at each ring of the doorbell) or between 100µs and 1s, got -1ms",
		}},
		{"tick interval too short", func(c *Config) { c.Capture.TickInterval = 99 * time.Microsecond }, []string{
			"capture.tick_interval: must be 0 (a tick at each ring of the doorbell) or between 100µs and 1s, got 99µs",
		}},
		{"tick interval shortest", func(c *Config) { c.Capture.TickInterval = 100 * time.Microsecond }, nil},
		{"tick interval above 1s", func(c *Config) { c.Capture.TickInterval = 2 * time.Second }, []string{
			"capture.tick_interval: must be 0 (a tick at each ring of the doorbell) or between 100µs and 1s, got 2s",
		}},
		{"tick at each ring", func(c *Config) { c.Capture.TickInterval = 0 }, nil},
		{"tick at each ring without the doorbell", func(c *Config) {
			c.Capture.TickInterval, c.Capture.Notify = 0, new(false)
		}, []string{
			"capture.tick_interval: 0 ticks at each ring of the doorbell, which capture.notify: false turns off; set a positive interval, or capture.notify: true",
		}},
		{"log", func(c *Config) { c.Log = Log{Level: "INFO", Format: ""} }, []string{
			`log.level: "INFO" is not one of debug, info, warn, error`,
			`log.format: "" is not one of text, json`,
		}},
		{"no tables", func(c *Config) { c.Tables = nil }, []string{
			"tables: no tables configured; list at least one table to capture",
		}},
		{"table without defaults", func(c *Config) { c.Tables = []Table{{Table: "escrows"}} }, []string{
			"tables[0].entity: is empty",
			`tables[0].kind: "" is not one of entity, ai_task`,
			"tables[0].id_column: is empty",
			"tables[0].team_column: is empty",
		}},
		{"table names", func(c *Config) {
			c.Tables = []Table{
				Table{Table: "a.b.c", Entity: "x"}.WithDefaults(),
				Table{Table: "9lives", Entity: "y"}.WithDefaults(),
				Table{Table: strings.Repeat("t", 64), Entity: "z"}.WithDefaults(),
				Table{Table: "", Entity: "w"}.WithDefaults(),
				Table{Table: "Crm.Escrow$s", Entity: "v"}.WithDefaults(),
			}
		}, []string{
			`tables[0].table: "a.b.c" is not a table name: write an identifier (letters, digits, _ and $, not starting with a digit, at most 63 bytes), optionally schema-qualified as schema.table`,
			`tables[1].table: "9lives" is not a table name: write an identifier (letters, digits, _ and $, not starting with a digit, at most 63 bytes), optionally schema-qualified as schema.table`,
			`tables[2].table: "` + strings.Repeat("t", 64) + `" is not a table name: write an identifier (letters, digits, _ and $, not starting with a digit, at most 63 bytes), optionally schema-qualified as schema.table`,
			"tables[3].table: is empty; name the table to capture, e.g. escrows or crm.escrows",
		}},
		{"duplicates", func(c *Config) {
			c.Tables = append(c.Tables,
				Table{Table: "public.escrows", Entity: "deal"}.WithDefaults(),
				Table{Table: "deals"}.WithDefaults(),
			)
		}, []string{
			"tables[2].table: public.escrows is already configured as tables[0]",
			`tables[3].entity: "deal" is already the entity of tables[2]; set entity on one of them`,
		}},
		{"ai task columns", func(c *Config) {
			c.Tables[1].UserColumn, c.Tables[1].StatusColumn, c.Tables[1].ErrorColumn = "", "", "err or"
		}, []string{
			"tables[1].user_column: is empty",
			"tables[1].status_column: is empty",
			`tables[1].error_column: "err or" is not a column name`,
		}},
		{"exclusions", func(c *Config) {
			c.Tables[0].ExcludeColumns = []string{"notes", "team_id", "bad-col"}
			c.Tables[0].ActorColumn = "updated-by"
		}, []string{
			`tables[0].actor_column: "updated-by" is not a column name`,
			`tables[0].exclude_columns[1]: "team_id" is the team column; events need it, so it cannot be excluded`,
			`tables[0].exclude_columns[2]: "bad-col" is not a column name`,
		}},
		{"task exclusions", func(c *Config) {
			// What tells progress from completion.
			c.Tables[1].ExcludeColumns = []string{"status", "progress", "message"}
		}, []string{
			`tables[1].exclude_columns[0]: "status" is the status column; events need it, so it cannot be excluded`,
			`tables[1].exclude_columns[1]: "progress" is the progress column; events need it, so it cannot be excluded`,
		}},
		{"composite key", func(c *Config) {
			c.Tables = append(c.Tables, Table{Table: "deal_participants", IDColumns: []string{"deal_id", "user_id"}}.WithDefaults())
		}, nil},
		{"team from a parent row", func(c *Config) {
			c.Tables = append(c.Tables, Table{Table: "deal_notes", TeamFrom: &TeamFrom{Table: "crm.deals", Key: "deal_id", Column: "organization_id"}}.WithDefaults())
		}, nil},
		{"team from problems", func(c *Config) {
			c.Tables[0].TeamFrom = &TeamFrom{Table: "a.b.c", Column: "org id"}
			c.Tables[1].TeamFrom = &TeamFrom{Table: "deals", Key: "deal_id", Column: "org"}
			c.Tables[1].TeamColumn = ""
		}, []string{
			"tables[0].team_from: set either team_column (the table's own team column) or team_from (the team of a parent row), not both",
			`tables[0].team_from.table: "a.b.c" is not a table name: name the parent table, e.g. deals or crm.deals`,
			"tables[0].team_from.key: is empty",
			`tables[0].team_from.column: "org id" is not a column name`,
			"tables[1].team_from: is not supported for ai_task tables; use team_column",
		}},
		{"composite key problems", func(c *Config) {
			c.Tables[0].IDColumns = []string{"deal_id", "bad col", "deal_id"}
			c.Tables[0].ExcludeColumns = []string{"deal_id"}
			c.Tables[1].IDColumns = []string{"id", "user_id"}
		}, []string{
			"tables[0].id_columns: set either id_column (a one-column key) or id_columns (a composite key), not both",
			`tables[0].id_columns[1]: "bad col" is not a column name`,
			`tables[0].id_columns[2]: "deal_id" is listed twice`,
			`tables[0].exclude_columns[0]: "deal_id" is a column of id_columns; events need it, so it cannot be excluded`,
			"tables[1].id_columns: set either id_column (a one-column key) or id_columns (a composite key), not both",
			"tables[1].id_columns: an ai_task table is identified by one column; use id_column",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var p *Problems
			if !errors.As(err, &p) {
				t.Fatalf("Validate = %v (%T), want *Problems", err, err)
			}
			if !reflect.DeepEqual(p.Lines(), tt.want) {
				t.Errorf("problems =\n%s\nwant\n%s", strings.Join(p.Lines(), "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestWithDefaultsKeepsSetFields(t *testing.T) {
	in := Table{Table: "x.jobs", Entity: "task", Kind: KindAITask, IDColumn: "job_id", ResultColumn: "output"}
	want := Table{
		Table: "x.jobs", Entity: "task", Kind: KindAITask, IDColumn: "job_id", TeamColumn: "team_id", UserColumn: "user_id",
		StatusColumn: "status", ProgressColumn: "progress", MessageColumn: "message", TypeColumn: "task_type", ResultColumn: "output", ErrorColumn: "error", ParamsColumn: "params",
	}
	if got := in.WithDefaults(); !reflect.DeepEqual(got, want) {
		t.Errorf("WithDefaults =\n%+v\nwant\n%+v", got, want)
	}
}

func TestNotifyEnabled(t *testing.T) {
	f, tr := false, true
	tests := []struct {
		notify *bool
		want   bool
	}{{nil, true}, {&tr, true}, {&f, false}}
	for _, tt := range tests {
		if got := (Capture{Notify: tt.notify}).NotifyEnabled(); got != tt.want {
			t.Errorf("NotifyEnabled(%v) = %v, want %v", tt.notify, got, tt.want)
		}
	}
}

// TestOriginPatterns: exact origins and https://*.example.com patterns
// pass; a wildcard anywhere else, one that covers a whole scheme, or one
// under a single label (a top-level domain) does not, each with its reason.
func TestOriginPatterns(t *testing.T) {
	const anyPage = `is not allowed: wildcards would let any web page open sessions with its visitors' tokens (cross-site WebSocket hijacking); list each browser origin as scheme://host[:port], e.g. https://app.example.com, or the subdomains of one domain as https://*.example.com (clients that send no Origin are always allowed)`
	tests := []struct {
		origin string
		want   string // "" when valid
	}{
		{"https://app.example.com", ""},
		{"https://*.example.com", ""},
		{"https://*.crm.example.co.uk", ""},
		{"https://*.example.com:8443", ""},
		{"http://*.localhost.test", ""},
		{"*", `"*" ` + anyPage},
		{"https://*", `"https://*" ` + anyPage},
		{"https://*:8443", `"https://*:8443" ` + anyPage},
		{"*://app.example.com", `"*://app.example.com" ` + anyPage},
		{"https://*.com", `"https://*.com" is not allowed: it would match every site under "com"; name a domain of at least two labels, as in https://*.example.com`},
		{"https://*.localhost", `"https://*.localhost" is not allowed: it would match every site under "localhost"; name a domain of at least two labels, as in https://*.example.com`},
		{"https://*example.com", `"https://*example.com" is not allowed: a wildcard may only stand for the leftmost labels of the host, as in https://*.example.com`},
		{"https://app.*.example.com", `"https://app.*.example.com" is not allowed: a wildcard may only stand for the leftmost labels of the host, as in https://*.example.com`},
		{"https://*.*.example.com", `"https://*.*.example.com" is not allowed: a wildcard may only stand for the leftmost labels of the host, as in https://*.example.com`},
		{"https://*..example.com", `"https://*..example.com" is not an origin pattern: its host has an empty label`},
		{"https://*.0.0.1", `"https://*.0.0.1" is not allowed: a wildcard stands for labels of a domain name, not parts of an IP address`},
		{"https://*.Example.com", `"https://*.Example.com" must be lowercase, as browsers send it: write "https://*.example.com"`},
		{"https://*.example.com/", `"https://*.example.com/" has a trailing slash; browsers send origins without one: write "https://*.example.com"`},
		{"https://*.example.com/app", `"https://*.example.com/app" is not an origin of the form scheme://host[:port]: it has a path, query or fragment`},
	}
	for _, tt := range tests {
		if got := checkOrigin(tt.origin); got != tt.want {
			t.Errorf("checkOrigin(%q) = %q, want %q", tt.origin, got, tt.want)
		}
	}
}

// TestTrustedProxies: CIDRs and single addresses pass; anything else, a
// CIDR with host bits set and one that covers every address are reported.
func TestTrustedProxies(t *testing.T) {
	tests := []struct {
		in   string
		want string // the prefix, or the problem
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"192.168.1.7", "192.168.1.7/32"},
		{"fd00::/8", "fd00::/8"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"10.0.0.1/8", `"10.0.0.1/8" has bits set past its /8; write 10.0.0.0/8`},
		{"0.0.0.0/0", `"0.0.0.0/0" covers every address: X-Forwarded-For would be believed from any client, which could then pose as any address; name the proxies' own networks`},
		{"::/0", `"::/0" covers every address: X-Forwarded-For would be believed from any client, which could then pose as any address; name the proxies' own networks`},
		{"10.0.0.0/33", `"10.0.0.0/33" is not a CIDR such as 10.0.0.0/8 or fd00::/8, or an address`},
		{"proxy.internal", `"proxy.internal" is not a CIDR such as 10.0.0.0/8 or fd00::/8, or an address`},
		{"", `"" is not a CIDR such as 10.0.0.0/8 or fd00::/8, or an address`},
		{"fe80::1%eth0", `"fe80::1%eth0" is not a CIDR such as 10.0.0.0/8 or fd00::/8, or an address`},
	}
	for _, tt := range tests {
		p, err := ParseTrustedProxy(tt.in)
		got := p.String()
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("ParseTrustedProxy(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	c := validConfig()
	c.TrustedProxies = []string{"10.0.0.0/8", "nope"}
	var ps *Problems
	if err := c.Validate(); !errors.As(err, &ps) || len(ps.List) != 1 || ps.List[0].String() != `trusted_proxies[1]: "nope" is not a CIDR such as 10.0.0.0/8 or fd00::/8, or an address` {
		t.Fatalf("Validate: %v", err)
	}
}

// PoolerWarnings names a URL that looks like a transaction pooler's, and
// is quiet once database.listen_url is set to a direct one.
func TestPoolerWarnings(t *testing.T) {
	for _, tc := range []struct {
		name        string
		url, listen string
		want        []string // substrings, one per warning
	}{
		{"direct", "postgres://u:p@db.example.com:5432/crm", "", nil},
		{"supabase transaction pooler", "postgres://u:p@aws-0-eu-west-1.pooler.supabase.com:6543/postgres", "",
			[]string{"database.url looks like a transaction-mode pooler (port 6543"}},
		{"pgbouncer port", "postgres://u:p@db:6432/crm", "", []string{"port 6432"}},
		{"pooler host", "postgres://u:p@pgbouncer.internal:5432/crm", "", []string{"host pgbouncer.internal"}},
		{"prisma flag", "postgres://u:p@db:5432/crm?pgbouncer=true", "", []string{"pgbouncer=true"}},
		{"pooled with a direct listen_url", "postgres://u:p@db:6543/crm", "postgres://u:p@db:5432/crm", nil},
		{"listen_url pooled too", "postgres://u:p@db:6543/crm", "postgres://u:p@db:6432/crm",
			[]string{"database.listen_url looks like a transaction-mode pooler (port 6432"}},
		{"keyword form", "host=db port=6543 dbname=crm", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Database{URL: tc.url, ListenURL: tc.listen}.PoolerWarnings()
			if len(got) != len(tc.want) {
				t.Fatalf("warnings %q, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %q, want it to contain %q", got[i], w)
				}
			}
		})
	}
}
