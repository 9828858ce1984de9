package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	testSecret = "0123456789abcdef0123456789abcdef"
	testURL    = "postgres://rowcast@localhost:5432/crm"
)

// writeConfig writes a YAML file into a temporary directory.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rowcast.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// validYAML is a complete configuration that passes Validate, followed by
// extra top-level keys.
func validYAML(extra string) string {
	return "database:\n  url: " + testURL + "\nauth:\n  jwt_secret: " + testSecret + "\ntables:\n  - escrows\n" + extra
}

// problemsOf returns the list of a *Problems error, failing otherwise.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	var p *Problems
	if !errors.As(err, &p) {
		t.Fatalf("error = %v (%T), want *Problems", err, err)
	}
	return p.Lines()
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	tests := []struct {
		key  string
		got  any
		want any
	}{
		{"listen", d.Listen, "127.0.0.1:8080"},
		{"admin_listen", d.AdminListen, ""},
		{"capture.mode", d.Capture.Mode, "trigger"},
		{"capture.notify", d.Capture.Notify != nil && *d.Capture.Notify, true},
		{"capture.poll_min", d.Capture.PollMin, 5 * time.Millisecond},
		{"capture.poll_max", d.Capture.PollMax, time.Second},
		{"capture.group_pause", d.Capture.GroupPause, 500 * time.Microsecond},
		{"capture.tick_interval", d.Capture.TickInterval, 2 * time.Millisecond},
		{"auth.user_claim", d.Auth.UserClaim, "sub"},
		{"auth.team_claim", d.Auth.TeamClaim, "teamId"},
		{"history.retention", d.History.Retention, 24 * time.Hour},
		{"history.prune_interval", d.History.PruneInterval, time.Minute},
		{"sessions.heartbeat", d.Sessions.Heartbeat, 25 * time.Second},
		{"sessions.write_delay", d.Sessions.WriteDelay, time.Duration(0)},
		{"sessions.queue_size", d.Sessions.QueueSize, 256},
		{"sessions.max_message_size", d.Sessions.MaxMessageSize, int64(4096)},
		{"sessions.rate_limit", d.Sessions.RateLimit, 20.0},
		{"sessions.rate_burst", d.Sessions.RateBurst, 50},
		{"sessions.rate_strikes", d.Sessions.RateStrikes, 20},
		{"sessions.replay_limit", d.Sessions.ReplayLimit, 100000},
		{"sessions.sio_polling", d.Sessions.SIOPolling != nil && *d.Sessions.SIOPolling, true},
		{"sessions.max_subscribe_entities", d.Sessions.MaxSubscribeEntities, 64},
		{"limits.sessions_per_user", d.Limits.SessionsPerUser, 50},
		{"limits.sessions_per_address", d.Limits.SessionsPerAddress, 1000},
		{"limits.sessions_total", d.Limits.SessionsTotal, 20000},
		{"limits.upgrade_rate", d.Limits.UpgradeRate, 50.0},
		{"limits.upgrade_burst", d.Limits.UpgradeBurst, 200},
		{"trusted_proxies", len(d.TrustedProxies), 0},
		{"log.level", d.Log.Level, "info"},
		{"log.format", d.Log.Format, "text"},
		{"shutdown.grace", d.Shutdown.Grace, 10 * time.Second},
		{"shutdown.drain", d.Shutdown.Drain, 5 * time.Second},
		{"events.legacy", d.Events.Legacy, false},
		{"tables", len(d.Tables), 0},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.key, tt.got, tt.want)
		}
	}
	// Each call returns its own Notify.
	*Defaults().Capture.Notify = false
	if !*Defaults().Capture.Notify {
		t.Error("Defaults shares Capture.Notify between calls")
	}
}

func TestLoadPrecedence(t *testing.T) {
	file := validYAML(`
listen: 0.0.0.0:9000
capture:
  mode: logical
  poll_max: 2s
  notify: true
origins: [https://file.example]
`)
	tests := []struct {
		name string
		env  []string
		set  map[string]string
		get  func(*Config) any
		want any
	}{
		{"default", nil, nil, func(c *Config) any { return c.Log.Level }, "info"},
		{"file over default", nil, nil, func(c *Config) any { return c.Listen }, "0.0.0.0:9000"},
		{"env over file", []string{"ROWCAST_LISTEN=:9001"}, nil, func(c *Config) any { return c.Listen }, ":9001"},
		{"set over env", []string{"ROWCAST_LISTEN=:9001"}, map[string]string{"listen": ":9002"}, func(c *Config) any { return c.Listen }, ":9002"},
		{"nested env over file", []string{"ROWCAST_CAPTURE_MODE=trigger"}, nil, func(c *Config) any { return c.Capture.Mode }, "trigger"},
		{"nested set over env", []string{"ROWCAST_CAPTURE_MODE=trigger"}, map[string]string{"capture.mode": "logical"}, func(c *Config) any { return c.Capture.Mode }, "logical"},
		{"env duration", []string{"ROWCAST_CAPTURE_POLL_MAX=3s"}, nil, func(c *Config) any { return c.Capture.PollMax }, 3 * time.Second},
		{"set duration", []string{"ROWCAST_CAPTURE_POLL_MAX=3s"}, map[string]string{"capture.poll_max": "500ms"}, func(c *Config) any { return c.Capture.PollMax }, 500 * time.Millisecond},
		{"env bool", []string{"ROWCAST_CAPTURE_NOTIFY=false"}, nil, func(c *Config) any { return *c.Capture.Notify }, false},
		{"env sio_polling", []string{"ROWCAST_SESSIONS_SIO_POLLING=false"}, nil, func(c *Config) any { return c.Sessions.SIOPollingEnabled() }, false},
		{"env int", []string{"ROWCAST_SESSIONS_QUEUE_SIZE=64"}, nil, func(c *Config) any { return c.Sessions.QueueSize }, 64},
		{"env float", []string{"ROWCAST_SESSIONS_RATE_LIMIT=2.5"}, nil, func(c *Config) any { return c.Sessions.RateLimit }, 2.5},
		{"env list", []string{"ROWCAST_ORIGINS=https://a.example, https://b.example:8443"}, nil, func(c *Config) any { return c.Origins }, []string{"https://a.example", "https://b.example:8443"}},
		{"set list", nil, map[string]string{"origins": "https://c.example"}, func(c *Config) any { return c.Origins }, []string{"https://c.example"}},
		{"empty env ignored", []string{"ROWCAST_LISTEN="}, nil, func(c *Config) any { return c.Listen }, "0.0.0.0:9000"},
		{"later env entry wins", []string{"ROWCAST_LISTEN=:1", "ROWCAST_LISTEN=:2"}, nil, func(c *Config) any { return c.Listen }, ":2"},
		{"set key case-insensitive", nil, map[string]string{"Log.Level": "debug"}, func(c *Config) any { return c.Log.Level }, "debug"},
		{"env secret", []string{"ROWCAST_AUTH_JWT_SECRET=" + strings.Repeat("k", 40)}, nil, func(c *Config) any { return c.Auth.JWTSecret }, strings.Repeat("k", 40)},
		{"set a table key", nil, map[string]string{"tables[0].team_column": "org_id"}, func(c *Config) any { return c.Tables[0].TeamColumn }, "org_id"},
		{"set a table list key", nil, map[string]string{"tables[0].exclude_columns": "a, b"}, func(c *Config) any { return c.Tables[0].ExcludeColumns }, []string{"a", "b"}},
		{"unrelated ROWCAST_ variables ignored", []string{"ROWCAST_TEST_DATABASE_URL=x", "ROWCAST_TABLES=x"}, nil, func(c *Config) any { return len(c.Tables) }, 1},
	}
	path := writeConfig(t, file)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(LoadOptions{File: path, Env: tt.env, Set: tt.set})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestLoadWithoutFile(t *testing.T) {
	// Everything but tables can come from the environment, but tables
	// cannot, so a configuration without a file has exactly one problem.
	_, err := Load(LoadOptions{Env: []string{"DATABASE_URL=" + testURL, "ROWCAST_AUTH_JWT_SECRET=" + testSecret}})
	want := []string{"tables: no tables configured; list at least one table to capture"}
	if got := problemsOf(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
}

func TestLoadDatabaseURLAlias(t *testing.T) {
	const (
		fileURL    = "postgres://file@db/crm"
		aliasURL   = "postgres://alias@db/crm"
		rowcastURL = "postgres://rowcast@db/crm"
	)
	tests := []struct {
		name string
		env  []string
		set  map[string]string
		want string
	}{
		{"file", nil, nil, fileURL},
		{"DATABASE_URL over file", []string{"DATABASE_URL=" + aliasURL}, nil, aliasURL},
		{"ROWCAST_DATABASE_URL over DATABASE_URL", []string{"ROWCAST_DATABASE_URL=" + rowcastURL, "DATABASE_URL=" + aliasURL}, nil, rowcastURL},
		{"ROWCAST_DATABASE_URL over DATABASE_URL in either order", []string{"DATABASE_URL=" + aliasURL, "ROWCAST_DATABASE_URL=" + rowcastURL}, nil, rowcastURL},
		{"empty ROWCAST_DATABASE_URL ignored", []string{"ROWCAST_DATABASE_URL=", "DATABASE_URL=" + aliasURL}, nil, aliasURL},
		{"flag over both", []string{"ROWCAST_DATABASE_URL=" + rowcastURL, "DATABASE_URL=" + aliasURL}, map[string]string{"database.url": "postgres://flag@db/crm"}, "postgres://flag@db/crm"},
	}
	path := writeConfig(t, "database:\n  url: "+fileURL+"\nauth:\n  jwt_secret: "+testSecret+"\ntables: [escrows]\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(LoadOptions{File: path, Env: tt.env, Set: tt.set})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Database.URL != tt.want {
				t.Errorf("database.url = %q, want %q", c.Database.URL, tt.want)
			}
		})
	}
}

// PORT, as hosting platforms set it, is the listener on every interface
// unless ROWCAST_LISTEN or a flag names one; it beats the file.
func TestLoadPort(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		set  map[string]string
		want string
	}{
		{"file", nil, nil, "127.0.0.1:9000"},
		{"PORT over file", []string{"PORT=3000"}, nil, ":3000"},
		{"ROWCAST_LISTEN over PORT", []string{"PORT=3000", "ROWCAST_LISTEN=127.0.0.1:4000"}, nil, "127.0.0.1:4000"},
		{"flag over PORT", []string{"PORT=3000"}, map[string]string{"listen": "127.0.0.1:5000"}, "127.0.0.1:5000"},
	}
	path := writeConfig(t, "database:\n  url: postgres://x@db/crm\nlisten: 127.0.0.1:9000\nauth:\n  jwt_secret: "+testSecret+"\ntables: [escrows]\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(LoadOptions{File: path, Env: tt.env, Set: tt.set})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Listen != tt.want {
				t.Errorf("listen = %q, want %q", c.Listen, tt.want)
			}
		})
	}
	_, err := Load(LoadOptions{File: path, Env: []string{"PORT=http"}})
	if err == nil || !strings.Contains(err.Error(), "PORT") {
		t.Errorf("a bad PORT: %v, want an error naming PORT", err)
	}
}

// ROWCAST_TABLES, for a platform without a file, lists tables by name and
// replaces the file's; a bad name is reported as coming from it.
func TestLoadTablesFromEnv(t *testing.T) {
	env := []string{"DATABASE_URL=postgres://x@db/crm", "ROWCAST_AUTH_JWT_SECRET=" + testSecret}
	c, err := Load(LoadOptions{Env: append(env, "ROWCAST_TABLES=escrows, crm.leads ,clients")})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var got []string
	for _, tb := range c.Tables {
		got = append(got, tb.Table+"/"+tb.Entity+"/"+tb.TeamColumn)
	}
	if want := []string{"escrows/escrow/team_id", "crm.leads/lead/team_id", "clients/client/team_id"}; !slices.Equal(got, want) {
		t.Errorf("tables %v, want %v", got, want)
	}
	path := writeConfig(t, "tables: [listings]\n")
	if c, err := Load(LoadOptions{File: path, Env: append(env, "ROWCAST_TABLES=escrows")}); err != nil || len(c.Tables) != 1 || c.Tables[0].Table != "escrows" {
		t.Errorf("ROWCAST_TABLES over the file: %v, %v", c, err)
	}
	_, err = Load(LoadOptions{Env: append(env, "ROWCAST_TABLES=escrows,bad name")})
	if err == nil || !strings.Contains(err.Error(), "ROWCAST_TABLES") {
		t.Errorf("a bad table name: %v, want an error naming ROWCAST_TABLES", err)
	}
}

func TestLoadUnknownKeys(t *testing.T) {
	const tables = "tables: [escrows]\n"
	tests := []struct {
		name  string
		extra string
		set   map[string]string
		want  string
	}{
		{"top level", tables + "lisen: x\n", nil, "lisen: unknown key; did you mean listen?"},
		{"nested", tables + "capture:\n  pol_min: 1s\n", nil, "capture.pol_min: unknown key; did you mean poll_min?"},
		{"no suggestion", tables + "frobnicate: 1\n", nil, "frobnicate: unknown key"},
		{"inside a table entry", "tables:\n  - escrows\n  - table: leads\n    exclude_colums: [notes]\n", nil, "tables[1].exclude_colums: unknown key; did you mean exclude_columns?"},
		{"flag", tables, map[string]string{"admin-listen": ":9090"}, "admin-listen: unknown key (from a flag); did you mean admin_listen?"},
		{"flag for tables", tables, map[string]string{"tables": "escrows"}, "tables: unknown key (from a flag)"},
		{"flag for a table key", tables, map[string]string{"tables[0].team_colum": "x"}, "tables[0].team_colum: unknown table key (from a flag); did you mean team_column?"},
		{"flag for a table the file lacks", tables, map[string]string{"tables[3].team_column": "x"}, "tables[3].team_column: the configuration lists 1 table(s); a flag can change an entry the file lists, not add one (from a flag)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := "database:\n  url: " + testURL + "\nauth:\n  jwt_secret: " + testSecret + "\n" + tt.extra
			_, err := Load(LoadOptions{File: writeConfig(t, file), Set: tt.set})
			if got := problemsOf(t, err); !reflect.DeepEqual(got, []string{tt.want}) {
				t.Errorf("problems = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadBadValues(t *testing.T) {
	const hint = "use Go syntax such as 500ms, 10s, 1m or 24h"
	tests := []struct {
		name  string
		extra string
		env   []string
		set   map[string]string
		want  string
	}{
		{"duration with space", "capture:\n  poll_min: 5 ms\n", nil, nil, `capture.poll_min: "5 ms" is not a duration; ` + hint},
		{"duration without unit", "capture:\n  poll_max: 5\n", nil, nil, "capture.poll_max: 5 has no unit; " + hint},
		{"duration as list", "history:\n  retention: [1h]\n", nil, nil, "history.retention: expected a duration, got a list; " + hint},
		{"zero duration", "shutdown:\n  grace: 0s\n", nil, nil, "shutdown.grace: must be a positive duration, got 0s"},
		{"negative duration", "history:\n  retention: -1h\n", nil, nil, "history.retention: must be a positive duration, got -1h0m0s"},
		{"integer word", "sessions:\n  queue_size: lots\n", nil, nil, `sessions.queue_size: "lots" is not an integer`},
		{"integer fraction", "sessions:\n  queue_size: 1.5\n", nil, nil, "sessions.queue_size: 1.5 is not an integer"},
		{"zero size", "sessions:\n  queue_size: 0\n", nil, nil, "sessions.queue_size: must be positive, got 0"},
		{"boolean", "capture:\n  notify: maybe\n", nil, nil, `capture.notify: "maybe" is not a boolean (true or false)`},
		{"sio_polling boolean", "sessions:\n  sio_polling: websocket\n", nil, nil, `sessions.sio_polling: "websocket" is not a boolean (true or false)`},
		{"number for string", "listen: 8080\n", nil, nil, "listen: expected a string, got 8080; quote the value"},
		{"scalar for mapping", "log: debug\n", nil, nil, `log: expected a mapping of keys, got "debug"`},
		{"mapping for list", "origins:\n  a: 1\n", nil, nil, "origins: expected a list, got a mapping"},
		{"list item", "origins: [https://a.example, 3]\n", nil, nil, "origins[1]: expected a string, got 3; quote the value"},
		{"env value names its variable", "", []string{"ROWCAST_SESSIONS_QUEUE_SIZE=big"}, nil, `sessions.queue_size: "big" is not an integer (from ROWCAST_SESSIONS_QUEUE_SIZE)`},
		{"env value checked by Validate names its variable", "", []string{"ROWCAST_LISTEN=8080"}, nil, `listen: "8080" is not host:port (e.g. 127.0.0.1:8080, or :8080 for every interface) (from ROWCAST_LISTEN)`},
		{"flag value", "", nil, map[string]string{"sessions.rate_limit": "fast"}, `sessions.rate_limit: "fast" is not a number (from a flag)`},
		{"flag list item", "", nil, map[string]string{"origins": "*"}, `origins[0]: "*" is not allowed: wildcards would let any web page open sessions with its visitors' tokens (cross-site WebSocket hijacking); list each browser origin as scheme://host[:port], e.g. https://app.example.com, or the subdomains of one domain as https://*.example.com (clients that send no Origin are always allowed) (from a flag)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(LoadOptions{File: writeConfig(t, validYAML(tt.extra)), Env: tt.env, Set: tt.set})
			if got := problemsOf(t, err); !reflect.DeepEqual(got, []string{tt.want}) {
				t.Errorf("problems =\n%s\nwant\n%s", strings.Join(got, "\n"), tt.want)
			}
		})
	}
}

func TestLoadTables(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		want  []Table
		probs []string
	}{
		{
			name: "defaults applied",
			yaml: `
  - escrows
  - table: leads
  - table: crm.activities
    exclude_columns: [notes]
  - table: ai_tasks
    kind: ai_task
  - table: addresses
    entity: place
    id_column: address_id
    actor_column: updated_by
  - table: deal_participants
    id_columns: [deal_id, user_id]
`,
			want: []Table{
				{Table: "escrows", Entity: "escrow", Kind: "entity", IDColumn: "id", TeamColumn: "team_id"},
				{Table: "leads", Entity: "lead", Kind: "entity", IDColumn: "id", TeamColumn: "team_id"},
				{Table: "crm.activities", Entity: "activity", Kind: "entity", IDColumn: "id", TeamColumn: "team_id", ExcludeColumns: []string{"notes"}},
				{
					Table: "ai_tasks", Entity: "ai_task", Kind: "ai_task", IDColumn: "id", TeamColumn: "team_id", UserColumn: "user_id",
					StatusColumn: "status", ProgressColumn: "progress", MessageColumn: "message", TypeColumn: "task_type", ResultColumn: "result", ErrorColumn: "error", ParamsColumn: "params",
				},
				{Table: "addresses", Entity: "place", Kind: "entity", IDColumn: "address_id", TeamColumn: "team_id", ActorColumn: "updated_by"},
				{Table: "deal_participants", Entity: "deal_participant", Kind: "entity", IDColumns: []string{"deal_id", "user_id"}, TeamColumn: "team_id"},
			},
		},
		{
			name: "ai task columns overridden",
			yaml: `
  - table: jobs
    kind: ai_task
    user_column: owner_id
    status_column: state
`,
			want: []Table{{
				Table: "jobs", Entity: "job", Kind: "ai_task", IDColumn: "id", TeamColumn: "team_id", UserColumn: "owner_id",
				StatusColumn: "state", ProgressColumn: "progress", MessageColumn: "message", TypeColumn: "task_type", ResultColumn: "result", ErrorColumn: "error", ParamsColumn: "params",
			}},
		},
		{
			name: "entry problems keep their index",
			yaml: `
  - 42
  -
  - table: leads
    kind: task
`,
			probs: []string{
				"tables[0]: expected a table entry (a mapping with at least table:, or a table name), got 42",
				"tables[1]: is empty",
				`tables[2].kind: "task" is not one of entity, ai_task`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := "database:\n  url: " + testURL + "\nauth:\n  jwt_secret: " + testSecret + "\ntables:" + tt.yaml
			c, err := Load(LoadOptions{File: writeConfig(t, file)})
			if tt.probs != nil {
				if got := problemsOf(t, err); !reflect.DeepEqual(got, tt.probs) {
					t.Errorf("problems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.probs, "\n"))
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(c.Tables, tt.want) {
				t.Errorf("tables =\n%+v\nwant\n%+v", c.Tables, tt.want)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	file := `
database:
  url: ""
capture:
  mode: triger
  poll_min: 2s
  poll_max: 1s
listen: localhost
admin_listen: ":99999"
auth:
  jwt_secret: too-short
origins: ["*", "https://App.example.com", "https://ok.example.com/", "example.com", "https://a.example/path"]
sessions:
  heartbeat: 25
  rate_limit: 0
log:
  level: verbose
  format: xml
tables:
  - table: escrows
    exclude_colums: [a]
  - table: ai_tasks
    kind: ai_task
    exclude_columns: [user_id, id]
  - table: crm.escrows
  - table: "bad name"
    kind: task
  - table: public.escrows
    entity: escrow2
  - table: listings
    entity: "listing:x"
    id_column: "1id"
`
	want := []string{
		"sessions.heartbeat: 25 has no unit; use Go syntax such as 500ms, 10s, 1m or 24h",
		"tables[0].exclude_colums: unknown key; did you mean exclude_columns?",
		"database.url: is empty; set it in the file, in ROWCAST_DATABASE_URL or in DATABASE_URL",
		`capture.mode: "triger" is not one of trigger, logical`,
		"capture.poll_min: 2s is greater than capture.poll_max (1s)",
		`listen: "localhost" is not host:port (e.g. 127.0.0.1:8080, or :8080 for every interface)`,
		`admin_listen: ":99999" has port "99999", which is not a number from 0 to 65535`,
		"auth.jwt_secret: is too short (9 bytes); HMAC needs at least 32 bytes",
		`origins[0]: "*" is not allowed: wildcards would let any web page open sessions with its visitors' tokens (cross-site WebSocket hijacking); list each browser origin as scheme://host[:port], e.g. https://app.example.com, or the subdomains of one domain as https://*.example.com (clients that send no Origin are always allowed)`,
		`origins[1]: "https://App.example.com" must be lowercase, as browsers send it: write "https://app.example.com"`,
		`origins[2]: "https://ok.example.com/" has a trailing slash; browsers send origins without one: write "https://ok.example.com"`,
		`origins[3]: "example.com" is not an origin of the form scheme://host[:port]`,
		`origins[4]: "https://a.example/path" is not an origin of the form scheme://host[:port]: it has a path, query or fragment`,
		"sessions.rate_limit: must be positive, got 0",
		`log.level: "verbose" is not one of debug, info, warn, error`,
		`log.format: "xml" is not one of text, json`,
		`tables[1].exclude_columns[0]: "user_id" is the user column; events need it, so it cannot be excluded`,
		`tables[1].exclude_columns[1]: "id" is the id column; events need it, so it cannot be excluded`,
		`tables[2].entity: "escrow" is already the entity of tables[0]; set entity on one of them`,
		`tables[3].table: "bad name" is not a table name: write an identifier (letters, digits, _ and $, not starting with a digit, at most 63 bytes), optionally schema-qualified as schema.table`,
		`tables[3].kind: "task" is not one of entity, ai_task`,
		"tables[4].table: public.escrows is already configured as tables[0]",
		`tables[5].entity: "listing:x" is not an entity name: use letters, digits and _, starting with a letter (it names the events, <entity>:created)`,
		`tables[5].id_column: "1id" is not a column name`,
	}
	_, err := Load(LoadOptions{File: writeConfig(t, file)})
	got := problemsOf(t, err)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err.Error() != strings.Join(want, "\n") {
		t.Errorf("Error() does not list the problems one per line:\n%s", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(LoadOptions{File: filepath.Join(t.TempDir(), "nope.yaml")})
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error = %v, want fs.ErrNotExist", err)
		}
		if !strings.HasPrefix(err.Error(), "load config: ") {
			t.Errorf("error = %q, want prefix %q", err, "load config: ")
		}
	})
	t.Run("not YAML", func(t *testing.T) {
		_, err := Load(LoadOptions{File: writeConfig(t, "listen: [\n")})
		if err == nil || !strings.HasPrefix(err.Error(), "load config: parse ") {
			t.Errorf("error = %v, want a parse error", err)
		}
	})
	t.Run("not a mapping", func(t *testing.T) {
		_, err := Load(LoadOptions{File: writeConfig(t, "- a\n- b\n")})
		if err == nil || !strings.HasPrefix(err.Error(), "load config: parse ") {
			t.Errorf("error = %v, want a parse error", err)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		_, err := Load(LoadOptions{File: writeConfig(t, "")})
		if got := problemsOf(t, err); len(got) != 3 {
			t.Errorf("problems = %q, want database.url, auth.jwt_secret and tables", got)
		}
	})
}

func TestLoadKeysAreCaseInsensitive(t *testing.T) {
	c, err := Load(LoadOptions{File: writeConfig(t, validYAML("Log:\n  Level: debug\n"))})
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "debug" {
		t.Errorf("log.level = %q, want debug", c.Log.Level)
	}
}

func TestSingular(t *testing.T) {
	tests := map[string]string{
		"escrows":      "escrow",
		"leads":        "lead",
		"ai_tasks":     "ai_task",
		"activities":   "activity",
		"addresses":    "address",
		"statuses":     "status",
		"listings":     "listing",
		"clients":      "client",
		"appointments": "appointment",
		"houses":       "house",
		"boxes":        "box",
		"matches":      "match",
		"status":       "status",
		"address":      "address",
		"analysis":     "analysis",
		"data":         "data",
		"s":            "s",
		"":             "",
	}
	for in, want := range tests {
		if got := singular(in); got != want {
			t.Errorf("singular(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTableNames(t *testing.T) {
	tests := []struct {
		table, schema, name, qualified string
	}{
		{"escrows", "public", "escrows", "public.escrows"},
		{"crm.escrows", "crm", "escrows", "crm.escrows"},
		{"public.escrows", "public", "escrows", "public.escrows"},
		{"", "public", "", "public."},
	}
	for _, tt := range tests {
		tb := Table{Table: tt.table}
		if tb.Schema() != tt.schema || tb.Name() != tt.name || tb.Qualified() != tt.qualified {
			t.Errorf("Table{%q}: Schema %q Name %q Qualified %q, want %q %q %q",
				tt.table, tb.Schema(), tb.Name(), tb.Qualified(), tt.schema, tt.name, tt.qualified)
		}
	}
}

// Overlay applies the file, the environment and the flags to a base that
// is not Defaults, keeping what they do not name.
func TestOverlayKeepsTheBase(t *testing.T) {
	base := Defaults()
	base.Database.URL = "postgres://bench@127.0.0.1/bench"
	base.Auth.JWTSecret = "bench-secret-bench-secret-bench-secret"
	base.Sessions.QueueSize = 1024
	base.Tables = []Table{Table{Table: "escrows"}.WithDefaults()}
	cfg, err := Overlay(base, LoadOptions{Set: map[string]string{"sessions.write_delay": "50ms"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sessions.WriteDelay != 50*time.Millisecond || cfg.Sessions.QueueSize != 1024 || cfg.Database.URL != base.Database.URL {
		t.Fatalf("write_delay %v, queue_size %d, database.url %q: want 50ms, the base's 1024 and URL",
			cfg.Sessions.WriteDelay, cfg.Sessions.QueueSize, cfg.Database.URL)
	}
	if _, err := Overlay(base, LoadOptions{Set: map[string]string{"sessions.write_dealy": "50ms"}}); err == nil {
		t.Fatal("an unknown key was accepted")
	}
}
