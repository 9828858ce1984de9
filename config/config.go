// Package config loads and validates rowcast's configuration: a YAML file,
// overridden by ROWCAST_<KEY> environment variables (dots become
// underscores; DATABASE_URL is also accepted), overridden by flags. It is the
// only package that imports viper.
package config

import (
	"net/url"
	"slices"
	"strings"
	"time"
)

// Config is the whole effective configuration. Load starts from Defaults and
// overlays what the file, the environment and the flags name; a key no
// source names keeps its default, and a value given explicitly is kept as
// given (an explicit 0 for a size is reported by Validate, not replaced).
// Table entries are the exception: Load fills their empty fields with
// Table.WithDefaults. Defaults returns the defaults alone.
//
// Config holds secrets (Auth.JWTSecret, the password in Database.URL): print
// it only with WriteYAML, which hides them.
type Config struct {
	Database    Database `mapstructure:"database" yaml:"database"`
	Capture     Capture  `mapstructure:"capture" yaml:"capture"`
	Listen      string   `mapstructure:"listen" yaml:"listen"`             // default 127.0.0.1:8080
	AdminListen string   `mapstructure:"admin_listen" yaml:"admin_listen"` // empty: /metrics on Listen
	Auth        Auth     `mapstructure:"auth" yaml:"auth"`
	Origins     []string `mapstructure:"origins" yaml:"origins"` // exact origins and https://*.example.com patterns (see Validate); empty: no browser origin allowed
	Events      Events   `mapstructure:"events" yaml:"events"`
	History     History  `mapstructure:"history" yaml:"history"`
	Sessions    Sessions `mapstructure:"sessions" yaml:"sessions"`
	Log         Log      `mapstructure:"log" yaml:"log"`
	Tables      []Table  `mapstructure:"tables" yaml:"tables"`
	Shutdown    Shutdown `mapstructure:"shutdown" yaml:"shutdown"`

	// TrustedProxies lists the CIDRs (or single addresses) of the reverse
	// proxies in front of the relay. Only a request whose TCP peer is in one
	// of them has its X-Forwarded-For believed: the client address is then
	// the rightmost address in it that is not itself a trusted proxy.
	// Otherwise the peer is the client. Empty (the default): X-Forwarded-For
	// is never believed. The client address is what the per-address limits
	// count.
	TrustedProxies []string `mapstructure:"trusted_proxies" yaml:"trusted_proxies"`
	// Limits bounds the sessions clients may open.
	Limits Limits `mapstructure:"limits" yaml:"limits"`
	Sentry Sentry `mapstructure:"sentry" yaml:"sentry"`
}

// Sentry configures error reporting (sentry-go). Without a DSN nothing is
// sent.
type Sentry struct {
	DSN         string `mapstructure:"dsn" yaml:"dsn"`                 // also SENTRY_DSN; hidden when printed
	Environment string `mapstructure:"environment" yaml:"environment"` // also SENTRY_ENVIRONMENT
}

// Database says where PostgreSQL is.
type Database struct {
	URL string `mapstructure:"url" yaml:"url"` // secret: the password is hidden when printed
	// ListenURL, when set, is the database the capture connects to (its
	// changelog reader with its LISTEN, the ticker's and the slot holder's
	// advisory locks, logical replication): connections that must stay
	// with one server session, which a transaction-mode pooler (PgBouncer,
	// Supavisor, Supabase's port 6543) does not give. URL then serves
	// replays, pruning and membership reads, which it may pool. Empty:
	// URL for everything. Secret like URL.
	ListenURL string `mapstructure:"listen_url" yaml:"listen_url"`
}

// CaptureURL returns the URL the capture's connections use: ListenURL, or
// URL when it is empty.
func (d Database) CaptureURL() string {
	if d.ListenURL != "" {
		return d.ListenURL
	}
	return d.URL
}

// Capture selects and tunes the capture mode.
type Capture struct {
	Mode string `mapstructure:"mode" yaml:"mode"` // "trigger" (default) or "logical"
	// Notify makes the commit-time trigger ring a pg_notify doorbell so the
	// relay polls at once; without it the relay only polls. Default true.
	Notify *bool `mapstructure:"notify" yaml:"notify"`
	// PollMin and PollMax bound the readers' poll interval for new ticks.
	// With Notify every tick is announced to every reader and it polls
	// every PollMax as the backstop (every PollMin in the first seconds of
	// a connection); without, every PollMin while ticks come, backing off
	// to PollMax when idle. Defaults 5ms and 1s.
	PollMin time.Duration `mapstructure:"poll_min" yaml:"poll_min"`
	PollMax time.Duration `mapstructure:"poll_max" yaml:"poll_max"`
	// TickInterval is how often the ticker looks for new commits once
	// they come closer together than this (it disarms the doorbell then;
	// further apart, each rings it and is ticked at once): under load a
	// change waits about this long for its tick. 0 keeps the writers' doorbell
	// armed under load too, so that the ticker ticks at each ring (trigger
	// mode; needs Notify), and looks by itself only every 250 ms: the
	// lowest latency, for a notification per writing commit. Otherwise
	// 100µs to 1s; default 2ms. In logical mode the slot holder rings the
	// ticker at each group commit whatever this says.
	TickInterval time.Duration `mapstructure:"tick_interval" yaml:"tick_interval"`
	// Slot and Publication name the replication slot and publication of
	// logical mode. Default "rowcast" for both.
	Slot        string `mapstructure:"slot" yaml:"slot"`
	Publication string `mapstructure:"publication" yaml:"publication"`
	// GroupPause is how long logical mode's slot holder waits for the next
	// source transaction before it commits the ones it holds (or the group
	// is 5 ms old). Lower trades PostgreSQL CPU for latency. Default 500us.
	GroupPause time.Duration `mapstructure:"group_pause" yaml:"group_pause"`
}

// Auth configures JWT verification. At least one key source is needed:
// JWTSecret (HMAC), PublicKeyFile or JWKSURL (asymmetric); they may be
// combined (a token's alg picks the source of its kind).
type Auth struct {
	JWTSecret string `mapstructure:"jwt_secret" yaml:"jwt_secret"` // HMAC key (HS256/384/512), raw UTF-8 bytes, at least 32; secret
	// PublicKeyFile is a PEM file of one or more public keys (PUBLIC KEY,
	// RSA PUBLIC KEY or CERTIFICATE blocks: RSA of 2048 bits or more,
	// ECDSA P-256/384/521, Ed25519), tried whatever key id a token names.
	PublicKeyFile string `mapstructure:"public_key_file" yaml:"public_key_file"`
	// JWKSURL is the identity provider's JSON Web Key Set, fetched at
	// start, every 15 minutes, and when a token names an unknown key id
	// (at most once every 30 s); the last set fetched serves while the
	// provider is down.
	JWKSURL string `mapstructure:"jwks_url" yaml:"jwks_url"`
	// Algorithms allow-lists the token's alg (HS256, HS384, HS512, RS256,
	// RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA).
	// Empty: every algorithm of the keys configured. A key only ever
	// verifies the algorithms of its own kind.
	Algorithms []string      `mapstructure:"algorithms" yaml:"algorithms"`
	Leeway     time.Duration `mapstructure:"leeway" yaml:"leeway"`                   // clock skew allowed on exp and nbf; default 0
	MaxToken   int           `mapstructure:"max_token_bytes" yaml:"max_token_bytes"` // longest token accepted; default 8192
	UserClaim  string        `mapstructure:"user_claim" yaml:"user_claim"`           // default "sub"; a dotted path reaches into objects
	TeamClaim  string        `mapstructure:"team_claim" yaml:"team_claim"`           // default "teamId"; a dotted path reaches into objects
	Issuer     string        `mapstructure:"issuer" yaml:"issuer"`                   // checked when set
	Audience   string        `mapstructure:"audience" yaml:"audience"`               // checked when set
	// Membership, when set, takes a user's teams from a table of the
	// database and follows its changes (captured like a table's).
	Membership *Membership `mapstructure:"membership" yaml:"membership"`
}

// Membership names the table that says which user belongs to which team.
type Membership struct {
	Table      string `mapstructure:"table" yaml:"table"`             // may be schema-qualified; required
	UserColumn string `mapstructure:"user_column" yaml:"user_column"` // default user_id
	TeamColumn string `mapstructure:"team_column" yaml:"team_column"` // default team_id
	// Mode is "database" (default: the table's teams, whatever the token
	// claims) or "intersect" (the teams both the token and the table name).
	Mode string `mapstructure:"mode" yaml:"mode"`
}

// Membership modes.
const (
	MembershipDatabase  = "database"
	MembershipIntersect = "intersect"
)

// WithDefaults returns m with its empty fields filled in.
func (m Membership) WithDefaults() Membership {
	if m.UserColumn == "" {
		m.UserColumn = "user_id"
	}
	if m.TeamColumn == "" {
		m.TeamColumn = "team_id"
	}
	if m.Mode == "" {
		m.Mode = MembershipDatabase
	}
	return m
}

// CapturedTables returns the tables whose changes are captured: Tables,
// then the membership table (kind membership) when auth.membership is set.
func (c *Config) CapturedTables() []Table {
	if c.Auth.Membership == nil {
		return c.Tables
	}
	m := c.Auth.Membership.WithDefaults()
	// Its key is the (user, team) pair: one row per membership, so that a
	// row deleted is a team left.
	t := Table{Table: m.Table, Entity: "membership", Kind: KindMembership, UserColumn: m.UserColumn, TeamColumn: m.TeamColumn,
		IDColumns: []string{m.UserColumn, m.TeamColumn}}
	return append(slices.Clip(c.Tables), t)
}

// Events selects optional event forms.
type Events struct {
	Legacy bool `mapstructure:"legacy" yaml:"legacy"` // also send data:update
}

// History configures the changelog retention used for resume.
type History struct {
	Retention     time.Duration `mapstructure:"retention" yaml:"retention"`           // default 24h
	PruneInterval time.Duration `mapstructure:"prune_interval" yaml:"prune_interval"` // default 1m
}

// Sessions configures per-session limits of the WebSocket transports.
type Sessions struct {
	Heartbeat time.Duration `mapstructure:"heartbeat" yaml:"heartbeat"` // default 25s
	// WriteDelay is how long a WebSocket session may keep frames before it
	// writes them, to write those that follow within it in one system
	// call: fewer system calls when many sessions receive many events, for
	// up to that much latency. Default 0: a frame is written at once
	// (frames that queue up behind a slow write are batched either way).
	WriteDelay time.Duration `mapstructure:"write_delay" yaml:"write_delay"`
	// ConnectTimeout closes a Socket.IO connection that sent no accepted
	// CONNECT this long after the upgrade. Default 45s (socket.io's).
	ConnectTimeout time.Duration `mapstructure:"connect_timeout" yaml:"connect_timeout"`
	QueueSize      int           `mapstructure:"queue_size" yaml:"queue_size"`             // outbound frames; default 256
	QueueBytes     int64         `mapstructure:"queue_bytes" yaml:"queue_bytes"`           // outbound event bytes; default 16 MiB
	MaxMessageSize int64         `mapstructure:"max_message_size" yaml:"max_message_size"` // client frame limit; default 4096
	RateLimit      float64       `mapstructure:"rate_limit" yaml:"rate_limit"`             // client messages/s; default 20
	RateBurst      int           `mapstructure:"rate_burst" yaml:"rate_burst"`             // default 50
	// RateStrikes is how many messages past the limit a client may send
	// (each answered rate_limited) before it is closed with 4429. Default 20.
	RateStrikes int `mapstructure:"rate_strikes" yaml:"rate_strikes"`
	// ReplayLimit caps the events one resume replays before it answers
	// resync instead. Default 100000.
	ReplayLimit int `mapstructure:"replay_limit" yaml:"replay_limit"`
	// MaxSubscribeEntities is the longest entity list a subscribe message
	// may carry; a longer one is answered bad_request and changes nothing
	// (the session stays open). Default 64, far more than the tables a CRM
	// captures.
	MaxSubscribeEntities int `mapstructure:"max_subscribe_entities" yaml:"max_subscribe_entities"`
	// SIOPolling serves Socket.IO's HTTP long-polling transport (and its
	// upgrade to WebSocket), so socket.io-client with default options
	// connects. false: WebSocket only, polling answered 400 "Transport
	// unknown". nil (not set) means true; see SIOPollingEnabled.
	SIOPolling *bool `mapstructure:"sio_polling" yaml:"sio_polling"`
}

// Limits bounds what clients may open, so that one client (a leaked
// token, a runaway script, a flood from one address) cannot exhaust the
// process. A session is one connection of either protocol (a /ws
// WebSocket, or a Socket.IO connection on WebSocket or long-polling),
// counted from the upgrade (or polling handshake) until it closes,
// authenticated or not. Refusals before the upgrade answer HTTP 429 (503
// for SessionsTotal) with Retry-After, and every refusal is counted in
// rowcast_sessions_refused_total{reason="<key>"}. Defaults are far above
// what a CRM's users reach (several tabs each, whole offices behind one
// NAT address) and far below what would exhaust one relay.
type Limits struct {
	// SessionsPerUser caps the open sessions of one user (the verified
	// token's user id): a /ws upgrade with a valid token of a user at the
	// limit is refused with 429 before the upgrade; a Socket.IO CONNECT is
	// answered with a CONNECT_ERROR "too many sessions" and closed.
	// Default 50 (a user with a dozen tabs on three devices, plus
	// reconnects whose old connection is not noticed dead yet).
	SessionsPerUser int `mapstructure:"sessions_per_user" yaml:"sessions_per_user"`
	// SessionsPerAddress caps the open sessions from one client address
	// (see TrustedProxies; IPv6 addresses count by their /64). Default
	// 1000 (an office of a few hundred agents behind one NAT address).
	SessionsPerAddress int `mapstructure:"sessions_per_address" yaml:"sessions_per_address"`
	// SessionsTotal caps the relay's open sessions; past it new ones get
	// 503, so a load balancer can send them to another replica. Default
	// 20000 (an idle session costs about 14 KiB).
	SessionsTotal int `mapstructure:"sessions_total" yaml:"sessions_total"`
	// UpgradeRate and UpgradeBurst limit the sessions one client address
	// may open per second (WebSocket upgrades and Socket.IO polling
	// handshakes), as a token bucket. Defaults 50/s and a burst of 200, so
	// an office's tabs reconnecting at once after a deploy get in within
	// seconds.
	UpgradeRate  float64 `mapstructure:"upgrade_rate" yaml:"upgrade_rate"`
	UpgradeBurst int     `mapstructure:"upgrade_burst" yaml:"upgrade_burst"`
}

// Log configures the process logger.
type Log struct {
	Level  string `mapstructure:"level" yaml:"level"`   // debug, info (default), warn, error
	Format string `mapstructure:"format" yaml:"format"` // text (default) or json
}

// Shutdown configures draining: on SIGTERM readiness answers 503 at once
// and the open sessions are closed with 1001 in batches spread over Drain,
// while capture goes on for those still open; the whole shutdown, the
// drain included, ends within Grace.
type Shutdown struct {
	Grace time.Duration `mapstructure:"grace" yaml:"grace"` // default 10s
	Drain time.Duration `mapstructure:"drain" yaml:"drain"` // default 5s; 0 closes every session at once; less than Grace
}

// Table configures the capture and mapping of one table.
type Table struct {
	Table          string   `mapstructure:"table" yaml:"table"`                     // may be schema-qualified; default schema public
	Entity         string   `mapstructure:"entity" yaml:"entity"`                   // default: singular of the table name
	Kind           string   `mapstructure:"kind" yaml:"kind"`                       // "entity" (default) or "ai_task"
	IDColumn       string   `mapstructure:"id_column" yaml:"id_column"`             // identifies a row (primary key, or unique NOT NULL); default id unless IDColumns is set
	IDColumns      []string `mapstructure:"id_columns" yaml:"id_columns"`           // a composite key instead (primary key or unique, NOT NULL), e.g. [deal_id, user_id]
	TeamColumn     string   `mapstructure:"team_column" yaml:"team_column"`         // default team_id unless TeamFrom is set
	UserColumn     string   `mapstructure:"user_column" yaml:"user_column"`         // ai_task: default user_id
	ActorColumn    string   `mapstructure:"actor_column" yaml:"actor_column"`       // optional
	ExcludeColumns []string `mapstructure:"exclude_columns" yaml:"exclude_columns"` // never stored in the history nor sent
	// TeamFrom takes the team from a parent row instead of TeamColumn.
	TeamFrom *TeamFrom `mapstructure:"team_from" yaml:"team_from"`
	// ReplicaIdentityIndex, in logical mode, names a unique index that
	// includes the team column to use as the table's replica identity;
	// empty means REPLICA IDENTITY FULL (the default, and the only choice
	// that lets updates carry only the changed columns).
	ReplicaIdentityIndex string `mapstructure:"replica_identity_index" yaml:"replica_identity_index"`
	// AI task columns (kind ai_task); defaults are the names in the demo schema.
	StatusColumn   string `mapstructure:"status_column" yaml:"status_column"`     // default status
	ProgressColumn string `mapstructure:"progress_column" yaml:"progress_column"` // default progress
	MessageColumn  string `mapstructure:"message_column" yaml:"message_column"`   // default message
	TypeColumn     string `mapstructure:"type_column" yaml:"type_column"`         // default task_type
	ResultColumn   string `mapstructure:"result_column" yaml:"result_column"`     // default result
	ErrorColumn    string `mapstructure:"error_column" yaml:"error_column"`       // default error
	ParamsColumn   string `mapstructure:"params_column" yaml:"params_column"`     // default params (used by rowcast.task_start)
}

// TeamFrom takes a row's team from a parent row: the row's Key column
// references the parent Table's ParentKey (its one-column primary key by
// default), and the team is the parent's Column. The capture function looks
// the parent up when it records a change; in logical mode that is when the
// slot holder applies the change, so the team is the parent's at that time.
// A later change of the parent's team is not retroactive (rows already
// captured stay where they were, and no event moves the children). In
// trigger mode a trigger on the parent keeps the team of every parent row a
// transaction deletes, so a child deleted or detached with it (ON DELETE
// CASCADE or SET NULL) is still captured in the parent's team. Otherwise a
// change whose parent is not there (in logical mode, deleted before the
// change was applied) has no team and is not captured.
type TeamFrom struct {
	Table  string `mapstructure:"table" yaml:"table"`   // the parent table, optionally schema-qualified
	Key    string `mapstructure:"key" yaml:"key"`       // the column of this table that references the parent
	Column string `mapstructure:"column" yaml:"column"` // the parent's team column
	// ParentKey is the parent's column that Key references; empty means
	// its one-column primary key, read from the database.
	ParentKey string `mapstructure:"parent_key" yaml:"parent_key"`
}

// Parent returns the parent table as a Table, for its Schema and Name.
func (f TeamFrom) Parent() Table { return Table{Table: f.Table} }

// Schema returns the table's schema: the part before the dot of a
// schema-qualified name, else "public".
func (t Table) Schema() string {
	if s, _, ok := strings.Cut(t.Table, "."); ok {
		return s
	}
	return "public"
}

// Name returns the table's name without its schema.
func (t Table) Name() string {
	if _, n, ok := strings.Cut(t.Table, "."); ok {
		return n
	}
	return t.Table
}

// Qualified returns "schema.name", e.g. "public.escrows". Names are used as
// written: they are quoted in SQL, so they are case-sensitive.
func (t Table) Qualified() string {
	return t.Schema() + "." + t.Name()
}

// KeyColumns returns the columns that identify a row: IDColumns when set,
// else IDColumn alone.
func (t Table) KeyColumns() []string {
	if len(t.IDColumns) > 0 {
		return t.IDColumns
	}
	return []string{t.IDColumn}
}

// CompositeKey reports whether rows are identified by more than one column.
func (t Table) CompositeKey() bool { return len(t.IDColumns) > 1 }

// WithDefaults returns t with every empty field that has a default filled
// in: Entity (the singular of Name: "escrows" -> "escrow", "activities" ->
// "activity", "addresses" -> "address"), Kind "entity", IDColumn "id" (unless
// IDColumns is set), TeamColumn "team_id" (unless TeamFrom is set), and for
// kind ai_task UserColumn "user_id" and the task columns status, progress,
// message, task_type, result and error.
// Fields already set are kept. Load applies it to every table entry.
func (t Table) WithDefaults() Table {
	fill := func(f *string, v string) {
		if *f == "" {
			*f = v
		}
	}
	fill(&t.Entity, singular(t.Name()))
	fill(&t.Kind, KindEntity)
	if len(t.IDColumns) == 0 {
		fill(&t.IDColumn, "id")
	}
	if t.TeamFrom == nil {
		fill(&t.TeamColumn, "team_id")
	}
	if t.Kind == KindAITask {
		fill(&t.UserColumn, "user_id")
		fill(&t.StatusColumn, "status")
		fill(&t.ProgressColumn, "progress")
		fill(&t.MessageColumn, "message")
		fill(&t.TypeColumn, "task_type")
		fill(&t.ResultColumn, "result")
		fill(&t.ErrorColumn, "error")
		fill(&t.ParamsColumn, "params")
	}
	return t
}

// Table kinds.
const (
	KindEntity = "entity"  // team-scoped <entity>:created|updated|deleted events
	KindAITask = "ai_task" // user-scoped ai:task:* events
	// KindMembership is the auth.membership table: its changes move users
	// in and out of teams and are never sent as events. It is not written
	// in tables[]; Config.CapturedTables adds it.
	KindMembership = "membership"
)

// Capture modes.
const (
	ModeTrigger = "trigger"
	ModeLogical = "logical"
)

// singular returns an English singular of a plural table name, good enough
// for the usual table names; Entity overrides it when it is wrong.
func singular(name string) string {
	switch {
	case len(name) > 3 && strings.HasSuffix(name, "ies"):
		return name[:len(name)-3] + "y" // activities, companies
	case strings.HasSuffix(name, "sses"), strings.HasSuffix(name, "shes"),
		strings.HasSuffix(name, "ches"), strings.HasSuffix(name, "xes"):
		return name[:len(name)-2] // addresses, wishes, matches, boxes
	case strings.HasSuffix(name, "ouses"):
		return name[:len(name)-1] // houses
	case strings.HasSuffix(name, "uses"):
		return name[:len(name)-2] // statuses, bonuses
	case strings.HasSuffix(name, "ss"), strings.HasSuffix(name, "us"),
		strings.HasSuffix(name, "is"):
		return name // address, status, analysis
	case len(name) > 1 && strings.HasSuffix(name, "s"):
		return name[:len(name)-1]
	}
	return name
}

// PoolerWarnings says, for each database URL that looks like a
// transaction-mode connection pooler's, why it looks so and what to do:
// the capture's connections need a server session of their own (LISTEN,
// advisory locks, replication), which such a pooler does not keep. A URL
// looks pooled by its port (6543, Supabase's transaction pooler; 6432,
// PgBouncer's default), a host name naming a pooler ("pooler", "pgbouncer",
// "supavisor") or a pgbouncer=true parameter. A guess: it may warn of a
// session-mode pooler, which works, and miss a pooler on another port.
func (d Database) PoolerWarnings() []string {
	var out []string
	if why := looksPooled(d.URL); why != "" && d.ListenURL == "" {
		out = append(out, "database.url looks like a transaction-mode pooler ("+why+"), which drops LISTEN and "+
			"advisory locks between transactions: set database.listen_url to the database's direct address "+
			"(Supabase: the direct connection on port 5432) for the capture's connections")
	}
	if why := looksPooled(d.ListenURL); why != "" {
		out = append(out, "database.listen_url looks like a transaction-mode pooler ("+why+"): "+
			"it must reach PostgreSQL directly, or through a session-mode pooler")
	}
	return out
}

// looksPooled says why url looks like a pooler's, or "".
func looksPooled(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	host := strings.ToLower(u.Hostname())
	switch {
	case u.Port() == "6543":
		return "port 6543, Supabase's transaction pooler"
	case u.Port() == "6432":
		return "port 6432, PgBouncer's default"
	case strings.Contains(host, "pooler") || strings.Contains(host, "pgbouncer") || strings.Contains(host, "supavisor"):
		return "host " + host
	case u.Query().Get("pgbouncer") == "true":
		return "pgbouncer=true"
	}
	return ""
}
