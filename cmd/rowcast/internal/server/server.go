// Package server is the command's wiring: it assembles a running relay from
// a configuration (the changelog tail, in logical mode the slot holder,
// mapping, hub, history and pruning, both WebSocket transports and the HTTP
// endpoints beside them: /healthz, /readyz, /metrics, /version) and owns
// their lifecycle: Run starts them as a group and drains them when its
// context ends. The components take options; only this package reads the
// configuration to build them.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/report"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/capture/changelog"
	"github.com/rowcast/rowcast/relay/capture/logical"
	"github.com/rowcast/rowcast/relay/history"
	"github.com/rowcast/rowcast/relay/hub"
	"github.com/rowcast/rowcast/relay/mapping"
	"github.com/rowcast/rowcast/relay/metrics"
	"github.com/rowcast/rowcast/relay/transport/session"
	"github.com/rowcast/rowcast/relay/transport/sio"
	"github.com/rowcast/rowcast/relay/transport/ws"
	"github.com/rowcast/rowcast/triggers"
	"github.com/rowcast/rowcast/web"
)

// Options configures a Relay.
type Options struct {
	Config *config.Config
	Logger *slog.Logger // nil: discard
	// Registry receives the relay's metrics; nil creates a fresh one.
	Registry *prometheus.Registry
	Version  string
	// SkipDriftCheck starts even when the installed triggers differ from the
	// configuration (tests that install their own).
	SkipDriftCheck bool
	// LogicalRetry is the logical slot holder's pause between attempts,
	// LogicalStandby its status interval and LogicalIdleTimeout its
	// election connection's idle timeouts (zero: their defaults; tests
	// shorten them).
	LogicalRetry, LogicalStandby, LogicalIdleTimeout time.Duration
	// JWKSMinInterval is the least time between two fetches of
	// auth.jwks_url (zero: 30 s; tests shorten it).
	JWKSMinInterval time.Duration
	// DatabaseLostAfter is how long the capture may be away from
	// PostgreSQL before it is reported to Sentry (zero: 30 s, longer than
	// a restart or a failover; tests shorten it).
	DatabaseLostAfter time.Duration
	// CaptureStallTimeout is how long the changelog reader waits for an
	// answer from PostgreSQL before it reconnects, readiness answering
	// 503 meanwhile (zero: 10 s; tests shorten it).
	CaptureStallTimeout time.Duration
	// TickerPoll, when not zero, is the ticker's look interval, busy or
	// idle (zero: every capture.tick_interval while changes flow, backing
	// off to 250 ms, or every 250 ms with tick_interval 0; tests set an
	// hour so that only a doorbell makes it tick).
	TickerPoll time.Duration
	// Pages are extra handlers on the main listener, by http.ServeMux
	// pattern ("/", "/api/"): the demo's page and REST API. They answer as
	// soon as the listener is bound, ready or not. When there are any, the
	// listener's own origin (http://<listen address>, and localhost for a
	// loopback address) may open sessions too, since its pages are the
	// relay's.
	Pages map[string]http.Handler
}

// Relay is one relay process's worth of components. Create it with New,
// then call Run once.
type Relay struct {
	o       Options
	cfg     *config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	hub     *hub.Hub
	mapper  *mapping.Mapper
	report  *report.Reporter // nil without sentry.dsn
	// lost fires when the capture stayed away from PostgreSQL for
	// lostAfter; nil while connected.
	lostMu    sync.Mutex
	lost      *time.Timer
	lostAfter time.Duration
	stopped   bool            // Run returned: no loss is reported any more
	tables    map[string]bool // the captured tables, schema-qualified: the metrics' table label
	verifier  *auth.Verifier
	jwks      *auth.JWKS // nil without auth.jwks_url
	capture   *changelog.Tail
	ticker    *changelog.Ticker
	holder    *logical.Holder // logical mode only
	ws        *ws.Server
	sio       *sio.Server // on ws's transport: same melody instance, hub and drain

	draining  atomic.Bool
	addr      atomic.Pointer[string]
	listening chan struct{}
	ready     chan struct{}
	// waiting says why the relay is not capturing yet while its start-up
	// checks wait for the database; nil once they passed.
	waiting atomic.Pointer[string]
}

// New builds the components; it opens no connection.
func New(o Options) (*Relay, error) {
	cfg := o.Config
	if cfg == nil {
		return nil, errors.New("server: no configuration")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	mapper, err := mapping.New(Rules(cfg.CapturedTables()), mapping.Options{Legacy: cfg.Events.Legacy})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	r := &Relay{o: o, cfg: cfg, log: o.Logger, reg: o.Registry, hub: hub.New(), mapper: mapper,
		listening: make(chan struct{}), ready: make(chan struct{}), lostAfter: o.DatabaseLostAfter}
	if r.lostAfter <= 0 {
		r.lostAfter = 30 * time.Second
	}
	starting := "starting"
	r.waiting.Store(&starting)
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.metrics = metrics.New(r.reg, o.Version)
	tables := make([]string, 0, len(cfg.CapturedTables()))
	r.tables = make(map[string]bool, len(cfg.CapturedTables()))
	for _, t := range cfg.CapturedTables() {
		tables = append(tables, t.Qualified())
		r.tables[t.Qualified()] = true
	}
	r.metrics.CaptureTables(tables)
	r.report, err = report.New(report.Options{DSN: cfg.Sentry.DSN, Environment: cfg.Sentry.Environment,
		Release: o.Version, Replica: replicaName(), Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	r.verifier, r.jwks, err = Verifier(cfg.Auth, auth.JWKSOptions{Logger: o.Logger.With("component", "auth"),
		OnFetch: r.metrics.JWKSFetched, MinInterval: o.JWKSMinInterval})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	notify := cfg.Capture.NotifyEnabled()
	r.capture = changelog.NewTail(cfg.Database.CaptureURL(), changelog.TailOptions{
		PollMin: cfg.Capture.PollMin, PollMax: cfg.Capture.PollMax, Listen: notify,
		Logger: o.Logger.With("component", "capture"), OnConnected: r.connected,
		OnBehind: r.metrics.Behind, StallTimeout: o.CaptureStallTimeout,
	})
	tickMin, tickMax := cfg.Capture.TickInterval, time.Duration(0)
	if o.TickerPoll != 0 {
		tickMin, tickMax = o.TickerPoll, o.TickerPoll
	}
	r.ticker = changelog.NewTicker(cfg.Database.CaptureURL(), changelog.TickerOptions{
		Listen: notify, KeepBell: cfg.Capture.TickInterval == 0, Logger: o.Logger.With("component", "ticker"),
		Reader: r.capture, LocalListener: r.capture.ListenerPID, PollMin: tickMin, PollMax: tickMax,
	})
	if cfg.Capture.Mode == config.ModeLogical {
		dbcfg, err := pgx.ParseConfig(cfg.Database.CaptureURL())
		if err != nil {
			return nil, fmt.Errorf("server: database url: %w", err)
		}
		changelog.AppName(dbcfg, "holder")
		rcfg := logical.ReplicationConfig(&dbcfg.Config)
		if dbcfg.RuntimeParams["application_name"] == "rowcast holder" {
			rcfg.RuntimeParams["application_name"] = "rowcast walsender" // the decoding's backend
		}
		doorbell := ""
		if notify {
			doorbell = changelog.Channel
		}
		r.holder = logical.New(logical.Options{
			Slot: cfg.Capture.Slot, Publication: cfg.Capture.Publication,
			Logger: o.Logger.With("component", "logical"), OnHolder: r.metrics.SlotHolder,
			OnProgress: r.metrics.SlotProgress, OnFailing: r.metrics.CaptureFailing,
			OnFailure:  func(err error) { r.report.Failure(report.KindCapture, err) },
			OnSlotLost: func(why string) { r.report.Failure(report.KindSlot, errors.New(why)) },
			Retry:      o.LogicalRetry, StandbyInterval: o.LogicalStandby, IdleTimeout: o.LogicalIdleTimeout,
			ApplyName: triggers.ApplyName, CheckSlot: triggers.CheckSlot, InstallLock: triggers.InstallLockKey,
			Doorbell: doorbell, LocalTicker: r.ticker.Holding, WakeTicker: r.ticker.Ring, Ticker: r.ticker, GroupPause: cfg.Capture.GroupPause,
			Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, dbcfg) },
			ConnectReplication: func(ctx context.Context) (*pgconn.PgConn, error) {
				return pgconn.ConnectConfig(ctx, rcfg)
			},
		})
	}
	return r, nil
}

// Verifier builds the token verifier of a: the HMAC secret, the public
// keys of auth.public_key_file and the key set of auth.jwks_url, made with
// jo (its URL set from a), which it returns for the caller to run (nil
// without one). Errors name the configuration key.
func Verifier(a config.Auth, jo auth.JWKSOptions) (*auth.Verifier, *auth.JWKS, error) {
	o := auth.Options{Secret: []byte(a.JWTSecret), Algorithms: a.Algorithms, Leeway: a.Leeway,
		MaxTokenLen: a.MaxToken, UserClaim: a.UserClaim, TeamClaim: a.TeamClaim, Issuer: a.Issuer, Audience: a.Audience}
	if a.PublicKeyFile != "" {
		data, err := os.ReadFile(a.PublicKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("auth.public_key_file: %w", err)
		}
		if o.PublicKeys, err = auth.ParsePublicKeys(data); err != nil {
			return nil, nil, fmt.Errorf("auth.public_key_file %s: %w", a.PublicKeyFile, err)
		}
	}
	if a.JWKSURL != "" {
		var err error
		jo.URL = a.JWKSURL
		if o.JWKS, err = auth.NewJWKS(jo); err != nil {
			return nil, nil, fmt.Errorf("auth.jwks_url: %w", err)
		}
	}
	v, err := auth.NewVerifier(o)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: %w", err)
	}
	return v, o.JWKS, nil
}

// recovering reports a panic of h (net/http then logs it and drops the
// connection, as without it).
func (r *Relay) recovering(h http.Handler) http.Handler {
	if r.report == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer r.report.Recover()
		h.ServeHTTP(w, req)
	})
}

// connected records whether the capture is reading, and reports a loss of
// PostgreSQL that lasts lostAfter (Options.DatabaseLostAfter).
func (r *Relay) connected(v bool) {
	r.metrics.Connected(v)
	r.lostMu.Lock()
	defer r.lostMu.Unlock()
	switch {
	case v && r.lost != nil:
		r.lost.Stop()
		r.lost = nil
	case !v && r.lost == nil && r.report != nil && !r.stopped:
		r.lost = time.AfterFunc(r.lostAfter, func() {
			r.report.Failure(report.KindDatabaseLost, fmt.Errorf("the capture has not reached PostgreSQL for %s", r.lostAfter))
		})
	}
}

// replicaName names this replica in reports: Railway's replica id, or the
// host name (a Kubernetes pod's name).
func replicaName() string {
	if id := os.Getenv("RAILWAY_REPLICA_ID"); id != "" {
		return id
	}
	h, _ := os.Hostname()
	return h
}

// Rules turns table configuration into mapping rules.
func Rules(tables []config.Table) []mapping.Rule {
	rules := make([]mapping.Rule, 0, len(tables))
	for _, t := range tables {
		kind := mapping.Entity
		switch t.Kind {
		case config.KindAITask:
			kind = mapping.AITask
		case config.KindMembership:
			kind = mapping.Membership
		}
		rules = append(rules, mapping.Rule{
			Table: t.Qualified(), Entity: t.Entity, Kind: kind,
			StatusColumn: t.StatusColumn, ProgressColumn: t.ProgressColumn, MessageColumn: t.MessageColumn,
			TypeColumn: t.TypeColumn, ResultColumn: t.ResultColumn, ErrorColumn: t.ErrorColumn,
			Exclude: t.ExcludeColumns,
		})
	}
	return rules
}

// Ready is closed once the relay listens and its capture has started.
func (r *Relay) Ready() <-chan struct{} { return r.ready }

// Listening is closed once the relay's listener is bound: /healthz and
// /readyz answer from then on, sessions only once Ready is closed.
func (r *Relay) Listening() <-chan struct{} { return r.listening }

// Addr returns the address the WebSocket and HTTP listener is bound to, once
// Listening is closed.
func (r *Relay) Addr() string {
	if p := r.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Hub returns the relay's hub (for benchmarks and tests).
func (r *Relay) Hub() *hub.Hub { return r.hub }

// Run listens, waits for the database and checks that what is installed
// matches the configuration, then captures and serves until ctx ends; then
// it drains and returns nil: readiness answers 503 at once, new sessions
// are refused, the open ones are closed with 1001 in batches spread over
// Shutdown.Drain while capture goes on for those not yet closed, and the
// whole shutdown ends within Shutdown.Grace. While the database cannot be
// reached at start, Run keeps trying, as capture does once running, and
// /readyz answers 503 with the reason. It returns an error when it cannot
// listen, when the database does not match the configuration (a
// *DriftError or *SetupError), or when a component fails for good.
func (r *Relay) Run(ctx context.Context) error {
	cfg := r.cfg
	pc, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("serve: database: %w", err)
	}
	if cfg.Database.ListenURL == "" {
		// Replay and pruning query a changelog whose size swings widely:
		// plan each query for the table as it is.
		pc.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
		// Nor compiled: JIT costs a replay's query hundreds of
		// milliseconds when the changelog's statistics lag (Tail.session).
		pc.ConnConfig.RuntimeParams["jit"] = "off"
		// The relay's own writes (pruning, bookkeeping) commit locally:
		// with a synchronous standby down, commits waiting for it would
		// pile up and hold every pooled connection, and resumes would
		// wait for ever.
		pc.ConnConfig.RuntimeParams["synchronous_commit"] = "local"
		changelog.AppName(pc.ConnConfig, "pool") // replay, pruning, checks
	} else if !strings.Contains(cfg.Database.URL, "default_query_exec_mode") {
		// database.url goes through a transaction-mode pooler: no startup
		// parameters (PgBouncer refuses those it does not know) and no
		// named prepared statements, which a pooler's next transaction
		// may not find. Unnamed statements are planned for their
		// parameters each time, as force_custom_plan would.
		pc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc) // connects lazily
	if err != nil {
		return fmt.Errorf("serve: database: %w", err)
	}
	defer pool.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen: %w", err)
	}
	addr := ln.Addr().String()
	r.addr.Store(&addr)
	origins := cfg.Origins
	if len(r.o.Pages) > 0 {
		origins = append(slices.Clip(origins), ownOrigins(ln.Addr())...)
	}
	// Replayed changes are mapped by the pipeline's mapper, so a resumed
	// session gets the events a live one got.
	hist := history.Mapped{Changes: changelog.NewHistory(pool), Mapper: r.mapper}
	proxies, err := trustedProxies(cfg.TrustedProxies)
	if err != nil {
		ln.Close()
		return err
	}
	so := session.Options{
		Hub: r.hub, History: hist, Verifier: r.verifier, Origins: origins,
		Heartbeat: cfg.Sessions.Heartbeat, WriteDelay: cfg.Sessions.WriteDelay, QueueSize: cfg.Sessions.QueueSize, QueueBytes: cfg.Sessions.QueueBytes,
		MaxMessageSize: cfg.Sessions.MaxMessageSize, RateLimit: cfg.Sessions.RateLimit,
		RateBurst: cfg.Sessions.RateBurst, RateStrikes: cfg.Sessions.RateStrikes,
		ReplayLimit: cfg.Sessions.ReplayLimit, Logger: r.log.With("component", "ws"), Metrics: r.metrics,
		OnPanic:            func(err error) { r.report.Failure(report.KindPanic, err) },
		MaxSessionsPerUser: cfg.Limits.SessionsPerUser, MaxSessionsPerAddress: cfg.Limits.SessionsPerAddress,
		MaxSessions: cfg.Limits.SessionsTotal, UpgradeRate: cfg.Limits.UpgradeRate,
		UpgradeBurst: cfg.Limits.UpgradeBurst, TrustedProxies: proxies,
	}
	if m := cfg.Auth.Membership; m != nil {
		so.Membership = newMembershipReader(pool, *m).Teams
		so.MembershipIntersect = m.WithDefaults().Mode == config.MembershipIntersect
	}
	r.ws = ws.New(ws.Options{Options: so, MaxSubscribeEntities: cfg.Sessions.MaxSubscribeEntities})
	r.sio = sio.New(r.ws.Transport(), sio.Options{ConnectTimeout: cfg.Sessions.ConnectTimeout,
		Polling: cfg.Sessions.SIOPollingEnabled(), Logger: r.log.With("component", "sio")})

	var adminLn net.Listener
	if cfg.AdminListen != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			ln.Close()
			return fmt.Errorf("serve: admin listen: %w", err)
		}
	}
	main := &http.Server{Handler: r.recovering(r.mux(adminLn == nil)), ReadHeaderTimeout: 10 * time.Second}
	var admin *http.Server
	if adminLn != nil {
		admin = &http.Server{Handler: r.adminMux(), ReadHeaderTimeout: 10 * time.Second}
	}
	close(r.listening)

	pipeline := &relay.Pipeline{Mapper: r.mapper, Fanout: r.hub,
		Observe: r.captured}
	// The components run until the drain is over (ctx ending starts it), or
	// one fails: sessions still open while the drain spreads their closes
	// keep receiving events.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return serveHTTP(main, ln) })
	if r.jwks != nil {
		g.Go(func() error {
			r.jwks.Run(gctx) // returns when gctx ends
			return nil
		})
	}
	if admin != nil {
		g.Go(func() error { return serveHTTP(admin, adminLn) })
	}
	g.Go(func() error {
		if err := r.startChecks(gctx); err != nil {
			return err
		}
		r.waiting.Store(nil)
		g.Go(func() error { defer r.report.Recover(); return r.capture.Run(gctx, pipeline) })
		g.Go(func() error { defer r.report.Recover(); return r.ticker.Run(gctx) })
		if r.holder != nil {
			g.Go(func() error { defer r.report.Recover(); return r.holder.Run(gctx) })
		}
		g.Go(func() error {
			p := &changelog.Pruner{Pool: pool, Retention: cfg.History.Retention, Interval: cfg.History.PruneInterval,
				Logger: r.log.With("component", "history")}
			return p.Run(gctx)
		})
		return nil
	})
	g.Go(func() error {
		select {
		case <-r.capture.Ready():
			r.log.Info("relay ready", "listen", addr, "sessions_endpoint", "ws://"+addr+"/ws")
			close(r.ready)
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error {
		window := cfg.Shutdown.Drain
		select {
		case <-ctx.Done():
		case <-gctx.Done(): // a component failed: nothing to spread the closes for
			window = 0
		}
		r.draining.Store(true) // readiness 503 at once
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Shutdown.Grace)
		defer scancel()
		r.ws.Drain(sctx, window)
		cancel() // the components stop once the sessions are gone
		err := main.Shutdown(sctx)
		if admin != nil {
			err = errors.Join(err, admin.Shutdown(sctx))
		}
		return err
	})
	err = g.Wait()
	r.lostMu.Lock()
	r.stopped = true
	if r.lost != nil {
		r.lost.Stop() // a relay stopping is not PostgreSQL lost
	}
	r.lostMu.Unlock()
	r.report.Flush(2 * time.Second)
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return nil
	}
	return err
}

// captured counts a published transaction's changes by table and action.
func (r *Relay) captured(o relay.Observed) {
	changes := make([]metrics.TableChanges, len(o.Tables))
	for i, t := range o.Tables {
		table := t.Table
		if !r.tables[table] {
			// Not this relay's configuration (a leftover trigger, another
			// deployment's table): one series for all of them.
			table = "other"
		}
		changes[i] = metrics.TableChanges{Table: table, Action: actionOf(t.Op), N: t.N}
	}
	r.metrics.Captured(changes, o.CommittedAt)
}

// actionOf is the action label of op: its name in lower case, without
// building the string for every transaction.
func actionOf(op relay.Op) string {
	switch op {
	case relay.OpInsert:
		return "insert"
	case relay.OpUpdate:
		return "update"
	case relay.OpDelete:
		return "delete"
	case relay.OpTruncate:
		return "truncate"
	}
	return "unknown"
}

func serveHTTP(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// startChecks runs the start-up checks (drift, the logical slot) until
// they pass or fail for a reason a retry cannot fix. While the database
// cannot be reached it retries with capped exponential backoff, saying so
// in the log and on /readyz; it returns ctx's error when ctx ends first.
func (r *Relay) startChecks(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := r.checkDrift(ctx)
		if err == nil && r.holder != nil {
			err = r.checkSlot(ctx)
		}
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		reason := "waiting for the database: " + err.Error()
		r.waiting.Store(&reason)
		level := slog.LevelDebug
		if attempt == 1 || attempt%20 == 0 {
			level = slog.LevelWarn
		}
		r.log.Log(ctx, level, "cannot reach the database; sessions are refused until it answers",
			"err", err, "attempt", attempt, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// retryable reports whether a start-up check failed because the database
// could not be reached or went away (a connection that failed, SQLSTATE
// classes 08 connection exception and 57 operator intervention, such as a
// server starting up or shutting down), as opposed to answering that
// something is wrong.
func retryable(err error) bool {
	var drift *DriftError
	var setup *SetupError
	if errors.As(err, &drift) || errors.As(err, &setup) {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57")
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)
}

func (r *Relay) checkDrift(ctx context.Context) error {
	if r.o.SkipDriftCheck {
		return nil
	}
	conn, err := pgx.Connect(ctx, r.cfg.Database.CaptureURL())
	if err != nil {
		return fmt.Errorf("serve: database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	plan, err := triggers.Prepare(ctx, conn, r.cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	drift, err := triggers.Verify(ctx, conn, plan)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if len(drift) > 0 {
		return &DriftError{Drift: drift}
	}
	return nil
}

// checkSlot refuses to start logical capture on a replication slot that
// cannot serve it (one of the same name in another database: slot names
// are cluster-wide), which no retry would fix.
func (r *Relay) checkSlot(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, r.cfg.Database.CaptureURL())
	if err != nil {
		return fmt.Errorf("serve: database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	problems, err := triggers.CheckSlot(ctx, conn, r.cfg.Capture.Slot)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if len(problems) > 0 {
		return &SetupError{Problems: problems}
	}
	return nil
}

// SetupError says the database cannot serve the configuration as it is,
// and install would not change that: the configuration must change.
type SetupError struct{ Problems []string }

func (e *SetupError) Error() string {
	return "the database cannot serve this configuration:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// DriftError says the database's capture triggers do not match the
// configuration.
type DriftError struct{ Drift []string }

func (e *DriftError) Error() string {
	return "the database does not match the configuration; run `rowcast install --config …` first:\n  - " +
		strings.Join(e.Drift, "\n  - ")
}

func (r *Relay) mux(withMetrics bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/ws", r.whenReady(r.ws))
	mux.Handle("/socket.io/", r.whenReady(r.sio))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", r.readyz)
	mux.HandleFunc("/version", r.version)
	assets := web.Handler()
	for _, p := range web.Paths() {
		mux.Handle(p, assets)
	}
	for pattern, h := range r.o.Pages {
		mux.Handle(pattern, h)
	}
	if withMetrics {
		mux.Handle("/metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	}
	return mux
}

// whenReady answers 503 until the capture has read its starting point:
// before that a session would get no epoch and no heads.
func (r *Relay) whenReady(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-r.ready:
			h.ServeHTTP(w, req)
		default:
			reason := "relay starting"
			if waiting := r.waiting.Load(); waiting != nil {
				reason += ": " + *waiting
			}
			http.Error(w, reason, http.StatusServiceUnavailable)
		}
	})
}

func (r *Relay) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", r.readyz)
	return mux
}

// readyz answers 200 only while the relay is capturing: its changelog
// reader is connected and, in logical mode, the slot holder's attempts are
// not failing persistently (this relay's, when it holds the slot; when
// another relay holds it, something must be streaming from the slot).
func (r *Relay) readyz(w http.ResponseWriter, _ *http.Request) {
	var failing bool
	var reason string
	if r.holder != nil {
		failing, reason = r.holder.Failing()
	}
	switch waiting := r.waiting.Load(); {
	case r.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case waiting != nil:
		http.Error(w, "not capturing: "+*waiting, http.StatusServiceUnavailable)
	case !r.capture.Connected():
		http.Error(w, "not capturing: database unreachable", http.StatusServiceUnavailable)
	case failing:
		http.Error(w, "not capturing: logical capture is failing: "+reason, http.StatusServiceUnavailable)
	default:
		w.Write([]byte("ready\n"))
	}
}

func (r *Relay) version(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"version": r.o.Version, "protocol": ws.Protocol, "go": runtime.Version(), "capture": r.cfg.Capture.Mode,
	})
}

// trustedProxies parses trusted_proxies (config.ParseTrustedProxy).
func trustedProxies(entries []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(entries))
	for i, e := range entries {
		p, err := config.ParseTrustedProxy(e)
		if err != nil {
			return nil, fmt.Errorf("serve: trusted_proxies[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ownOrigins returns the origins of pages served on the listener at addr:
// http://<addr>, and http://localhost:<port> when addr is a loopback one.
func ownOrigins(addr net.Addr) []string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return []string{"http://" + addr.String()}
	}
	port := strconv.Itoa(tcp.Port)
	out := []string{"http://" + net.JoinHostPort(tcp.IP.String(), port)}
	if tcp.IP.IsLoopback() {
		out = append(out, "http://localhost:"+port, "http://127.0.0.1:"+port)
	}
	return out
}
