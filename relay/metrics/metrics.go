// Package metrics defines rowcast's Prometheus collectors. They are
// registered on the registry passed to New, never on the global one, and
// every method is safe on a nil *Metrics (which measures nothing).
package metrics

import (
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the relay's collectors.
type Metrics struct {
	eventsSent  prometheus.Counter
	latency     prometheus.Histogram
	slowCloses  prometheus.Counter
	refused     *prometheus.CounterVec
	sessions    *prometheus.GaugeVec
	accepted    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	msgRefused  *prometheus.CounterVec
	rateLimited prometheus.Counter
	noTeams     prometheus.Counter
	resumes     prometheus.Counter
	replayed    prometheus.Counter
	resyncs     prometheus.Counter
	txns        prometheus.Counter
	changes     *prometheus.CounterVec
	captureLag  prometheus.Histogram
	connected   prometheus.Gauge
	behind      prometheus.Gauge
	behindAge   prometheus.Gauge
	holder      prometheus.Gauge
	slotLag     prometheus.Gauge
	appliedLSN  prometheus.Gauge
	failing     prometheus.Gauge
	authFails   *prometheus.CounterVec
	jwksFails   prometheus.Counter
	jwksKeys    prometheus.Gauge
}

// The values of the transport label: the plain protocol's WebSocket, and
// Socket.IO (over WebSocket or long-polling).
const (
	TransportWS       = "ws"
	TransportSocketIO = "socketio"
)

// closeCodes are the close codes the rowcast_disconnects_total code label
// names; any other is counted as "other". 1005 is a close without a status
// (Socket.IO's close on a protocol error), 1006 a connection that ended
// without a close frame (the peer gone, a write timeout).
var closeCodes = []int{1000, 1001, 1005, 1006, 1009, 1011, 4008, 4400, 4401, 4403, 4429}

// New creates the collectors and registers them on reg; version is the
// relay's, exported in rowcast_build_info.
func New(reg prometheus.Registerer, version string) *Metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m := &Metrics{
		eventsSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_events_sent_total",
			Help: "Event frames queued to live sessions."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rowcast_event_latency_seconds",
			Help: "Time from a change's commit to its event frame being written to a live session's socket; sampled: each session times one frame at a time (the next one queued once the last timed one is written).", Buckets: buckets}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rowcast_sessions",
			Help: "Sessions subscribed to the hub (authenticated), by transport (ws, socketio); a connection not authenticated yet does not count."},
			[]string{"transport"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rowcast_sessions_accepted_total",
			Help: "Connections accepted as sessions (upgraded, or opened on Socket.IO long-polling), by transport."},
			[]string{"transport"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rowcast_disconnects_total",
			Help: "Sessions ended, by close code: the relay's when it closed, else the client's; 1006 when the connection ended without a close frame, 1005 for a close without a status, other for a code outside the documented ones."},
			[]string{"code"}),
		slowCloses: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_slow_consumer_closes_total",
			Help: "Sessions closed with 4008 because their queue overflowed."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rowcast_sessions_refused_total",
			Help: "Connections refused or closed before they became a session, by reason: origin, unauthorized; a limit, named by its setting (upgrade_rate, sessions_per_address, sessions_total, sessions_per_user); connect_timeout (a Socket.IO connection that sent no accepted CONNECT in time)."},
			[]string{"reason"}),
		msgRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rowcast_client_messages_refused_total",
			Help: "Client messages answered bad_request because they exceeded a limit, by reason (subscribe_entities: a subscribe list longer than sessions.max_subscribe_entities)."},
			[]string{"reason"}),
		noTeams: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_sessions_without_team_claim_total",
			Help: "Sessions whose token lacked the team claim (auth.team_claim) and so follow no team."}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_client_messages_rate_limited_total",
			Help: "Client messages answered rate_limited."}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_resumes_total",
			Help: "Sessions resumed from a position."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_replayed_events_total",
			Help: "Events replayed from history on resume."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_resyncs_total",
			Help: "Sessions told to resync because their position could not be served."}),
		txns: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_capture_transactions_total",
			Help: "Committed transactions captured."}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rowcast_capture_changes_total",
			Help: "Row changes captured, by table (schema-qualified, one of the configured ones) and action (insert, update, delete, truncate)."},
			[]string{"table", "action"}),
		captureLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rowcast_capture_lag_seconds",
			Help: "Time from a transaction's commit to its capture.", Buckets: buckets}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_capture_connected",
			Help: "1 while the capture is connected to PostgreSQL and reading."}),
		behind: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_capture_behind_ticks",
			Help: "Ticks of the changelog recorded and not yet read by this relay, at its last poll: its backlog (a relay catching up reads 256 a poll)."}),
		behindAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_capture_behind_seconds",
			Help: "Age of the oldest changelog tick not yet read by this relay, at its last poll (0 when caught up)."}),
		holder: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_logical_slot_holder",
			Help: "1 while this replica holds the logical replication slot."}),
		slotLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_logical_slot_lag_bytes",
			Help: "Bytes of WAL between the server's end and the slot's acknowledged position, as last reported."}),
		appliedLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_logical_applied_lsn",
			Help: "Commit LSN of the last source transaction written to the changelog, as a number."}),
		failing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_logical_capture_failing",
			Help: "1 while logical capture has failed for several consecutive attempts (the relay is then not ready)."}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rowcast_auth_failures_total",
			Help: "Tokens refused, at connect or on the auth message, by reason (expired, signature, key, algorithm, ...)."}, []string{"reason"}),
		jwksFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "rowcast_auth_jwks_fetch_failures_total",
			Help: "Fetches of auth.jwks_url that failed (the keys fetched before stay in use)."}),
		jwksKeys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rowcast_auth_jwks_keys",
			Help: "Signing keys held from auth.jwks_url after its last fetch."}),
	}
	// Every reason is exported from the start, at 0, so that a rate of
	// refusals can be graphed and alerted on before the first one.
	for _, reason := range []string{"origin", "unauthorized", "upgrade_rate", "sessions_per_address",
		"sessions_total", "sessions_per_user", "connect_timeout"} {
		m.refused.WithLabelValues(reason)
	}
	m.msgRefused.WithLabelValues("subscribe_entities")
	// The auth.Reason values, and other_user (an auth message naming
	// another user).
	for _, reason := range []string{"missing", "malformed", "too_large", "signature", "algorithm", "key", "expired",
		"not_yet", "issuer", "audience", "no_user", "user_claim", "team_claim", "other_user"} {
		m.authFails.WithLabelValues(reason)
	}
	for _, tr := range []string{TransportWS, TransportSocketIO} {
		m.sessions.WithLabelValues(tr)
		m.accepted.WithLabelValues(tr)
	}
	for _, code := range closeCodes {
		m.disconnects.WithLabelValues(strconv.Itoa(code))
	}
	m.disconnects.WithLabelValues("other")
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rowcast_build_info",
		Help: "Always 1; its labels name the relay's version and the Go version that built it."},
		[]string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(build, m.sessions, m.accepted, m.disconnects, m.eventsSent, m.latency, m.slowCloses, m.refused, m.msgRefused, m.rateLimited, m.noTeams, m.resumes,
		m.replayed, m.resyncs, m.txns, m.changes, m.captureLag, m.connected, m.behind, m.behindAge, m.holder, m.slotLag, m.appliedLSN, m.failing,
		m.authFails, m.jwksFails, m.jwksKeys)
	return m
}

// CaptureTables exports the changes of each table at 0, for every action,
// so that their rates can be graphed before the first change.
func (m *Metrics) CaptureTables(tables []string) {
	if m == nil {
		return
	}
	for _, t := range tables {
		for _, a := range []string{"insert", "update", "delete", "truncate"} {
			m.changes.WithLabelValues(t, a)
		}
	}
}

// SessionAccepted counts a connection accepted as a session of transport.
func (m *Metrics) SessionAccepted(transport string) {
	if m != nil {
		m.accepted.WithLabelValues(transport).Inc()
	}
}

// Subscribed moves the sessions of transport subscribed to the hub by
// delta (1 when one subscribes, -1 when it leaves).
func (m *Metrics) Subscribed(transport string, delta int) {
	if m != nil {
		m.sessions.WithLabelValues(transport).Add(float64(delta))
	}
}

// Disconnected counts a session that ended with close code.
func (m *Metrics) Disconnected(code int) {
	if m == nil {
		return
	}
	label := "other"
	for _, c := range closeCodes {
		if c == code {
			label = strconv.Itoa(code)
			break
		}
	}
	m.disconnects.WithLabelValues(label).Inc()
}

// EventSent counts one live event frame queued on a session's socket.
func (m *Metrics) EventSent() {
	if m != nil {
		m.eventsSent.Inc()
	}
}

// EventWritten observes the latency of an event frame written to its
// socket: from its change's commit (unix ns) to now.
func (m *Metrics) EventWritten(committedAt int64) {
	if m != nil {
		m.latency.Observe(time.Since(time.Unix(0, committedAt)).Seconds())
	}
}

// SlowClose counts a 4008 close.
func (m *Metrics) SlowClose() {
	if m != nil {
		m.slowCloses.Inc()
	}
}

// Refused counts a refused connection.
func (m *Metrics) Refused(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

// MessageRefused counts a client message refused by a limit.
func (m *Metrics) MessageRefused(reason string) {
	if m != nil {
		m.msgRefused.WithLabelValues(reason).Inc()
	}
}

// NoTeamClaim counts a session whose token lacked the team claim.
func (m *Metrics) NoTeamClaim() {
	if m != nil {
		m.noTeams.Inc()
	}
}

// RateLimited counts a message over the rate limit.
func (m *Metrics) RateLimited() {
	if m != nil {
		m.rateLimited.Inc()
	}
}

// Resumed counts a resume and the events it replayed.
func (m *Metrics) Resumed(replayed int) {
	if m != nil {
		m.resumes.Inc()
		m.replayed.Add(float64(replayed))
	}
}

// Resync counts a resync sent for an unservable position.
func (m *Metrics) Resync() {
	if m != nil {
		m.resyncs.Inc()
	}
}

// TableChanges is how many changes of one action (insert, update, delete,
// truncate) a transaction made to one table.
type TableChanges struct {
	Table, Action string
	N             int
}

// Captured counts a captured transaction and its changes.
func (m *Metrics) Captured(changes []TableChanges, committedAt time.Time) {
	if m == nil {
		return
	}
	m.txns.Inc()
	for _, c := range changes {
		m.changes.WithLabelValues(c.Table, c.Action).Add(float64(c.N))
	}
	if !committedAt.IsZero() {
		m.captureLag.Observe(time.Since(committedAt).Seconds())
	}
}

// Connected records whether the capture is connected.
func (m *Metrics) Connected(v bool) {
	if m == nil {
		return
	}
	if v {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

// Behind records what this relay found recorded and not yet read: the
// ticks, and the age of the oldest.
func (m *Metrics) Behind(ticks int64, age time.Duration) {
	if m != nil {
		m.behind.Set(float64(ticks))
		m.behindAge.Set(age.Seconds())
	}
}

// SlotHolder records whether this replica holds the replication slot.
func (m *Metrics) SlotHolder(v bool) {
	if m == nil {
		return
	}
	if v {
		m.holder.Set(1)
	} else {
		m.holder.Set(0)
	}
}

// SlotProgress records the last applied commit LSN and the slot's lag.
func (m *Metrics) SlotProgress(applied, lagBytes uint64) {
	if m == nil {
		return
	}
	m.appliedLSN.Set(float64(applied))
	m.slotLag.Set(float64(lagBytes))
}

// CaptureFailing records whether logical capture is failing persistently.
func (m *Metrics) CaptureFailing(v bool, _ string) {
	if m == nil {
		return
	}
	if v {
		m.failing.Set(1)
	} else {
		m.failing.Set(0)
	}
}

// AuthFailed counts a token refused for reason (an auth.Reason, or
// "other_user" for an auth message naming another user).
func (m *Metrics) AuthFailed(reason string) {
	if m != nil {
		m.authFails.WithLabelValues(reason).Inc()
	}
}

// JWKSFetched records a fetch of the identity provider's key set: its
// error, nil on success, and the keys held after it.
func (m *Metrics) JWKSFetched(err error, keys int) {
	if m == nil {
		return
	}
	if err != nil {
		m.jwksFails.Inc()
	}
	m.jwksKeys.Set(float64(keys))
}
