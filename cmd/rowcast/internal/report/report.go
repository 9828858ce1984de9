// Package report sends the relay's failures to Sentry (sentry-go) when a
// DSN is configured: capture failures, a database lost for long, logical
// slot trouble and panics, each tagged with its kind, the relay's version
// and its replica name.
//
// An event never carries a token or a row's data. Events are built here
// from a kind and an error, not from requests or logs: no request, user or
// breadcrumb is attached, and a PostgreSQL error is reported by its
// SQLSTATE, severity and the names it carries (table, constraint), never by
// its message or detail, which may quote values.
package report

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/jackc/pgx/v5/pgconn"
)

// Failure kinds, the "kind" tag of each event.
const (
	KindCapture      = "capture_failing"  // capture failed several times in a row (the relay is not ready)
	KindDatabaseLost = "database_lost"    // the capture lost PostgreSQL for longer than LostAfter
	KindSlot         = "slot_invalidated" // logical mode: the slot is gone or invalidated
	KindPanic        = "panic"            // a goroutine of the relay panicked
)

// Options configures a Reporter.
type Options struct {
	DSN         string
	Environment string
	Release     string // the relay's version
	Replica     string // the replica's name (server_name), e.g. the pod name
	// Every is the least time between two events of the same kind.
	// Default 1 minute.
	Every time.Duration
	// HTTPClient sends the events. Nil: sentry-go's default.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// Reporter sends failures to Sentry. A nil *Reporter (no DSN) does
// nothing. It is safe for concurrent use.
type Reporter struct {
	o   Options
	hub *sentry.Hub

	mu   sync.Mutex
	last map[string]time.Time // when each kind was last sent
}

// New returns a Reporter for o, or nil when o.DSN is empty. A DSN that does
// not parse is an error.
func New(o Options) (*Reporter, error) {
	if o.DSN == "" {
		return nil, nil
	}
	if o.Every <= 0 {
		o.Every = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c, err := sentry.NewClient(sentry.ClientOptions{
		Dsn: o.DSN, Environment: o.Environment, Release: o.Release, ServerName: o.Replica,
		HTTPClient: o.HTTPClient, SendDefaultPII: false, MaxBreadcrumbs: -1,
		BeforeSend: scrub,
		// The default integrations add the environment's modules and
		// would read request bodies; events here carry only what Failure
		// puts in them.
		Integrations: func([]sentry.Integration) []sentry.Integration { return nil },
	})
	if err != nil {
		return nil, fmt.Errorf("sentry: %w", err)
	}
	return &Reporter{o: o, hub: sentry.NewHub(c, sentry.NewScope()), last: make(map[string]time.Time)}, nil
}

// scrub removes from an event whatever could hold a token or data.
func scrub(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event {
	ev.Request = nil
	ev.User = sentry.User{}
	ev.Breadcrumbs = nil
	return ev
}

// Failure reports err as a failure of kind, unless one of that kind was
// sent within Every. It returns at once; Flush waits for delivery.
func (r *Reporter) Failure(kind string, err error) {
	if r == nil || !r.due(kind) {
		return
	}
	ev := sentry.NewEvent()
	ev.Level = sentry.LevelError
	ev.Message = kind + ": " + Describe(err)
	ev.Tags = map[string]string{"kind": kind}
	ev.Fingerprint = []string{"rowcast", kind}
	r.hub.CaptureEvent(ev)
}

// due reports whether an event of kind may be sent now, and records it.
func (r *Reporter) due(kind string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	if t, ok := r.last[kind]; ok && now.Sub(t) < r.o.Every {
		return false
	}
	r.last[kind] = now
	return true
}

// Recover reports a panic of the calling goroutine, waits up to two seconds
// for the event to leave, and panics again with the same value. Call it
// deferred: defer r.Recover().
func (r *Reporter) Recover() {
	if r == nil {
		return
	}
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler { //nolint:errorlint // net/http compares it so
		panic(v) // an aborted response, not a failure
	}
	ev := sentry.NewEvent()
	ev.Level = sentry.LevelFatal
	ev.Message = fmt.Sprintf("%s: %T", KindPanic, v)
	if err, ok := v.(error); ok {
		ev.Message = KindPanic + ": " + Describe(err)
	}
	ev.Tags = map[string]string{"kind": KindPanic}
	// The stack says where, never what: frames without their variables.
	ev.Threads = []sentry.Thread{{Stacktrace: sentry.NewStacktrace(), Crashed: true, Current: true}}
	r.hub.CaptureEvent(ev)
	r.Flush(2 * time.Second)
	panic(v)
}

// Flush waits up to d for the events sent so far to leave, and reports
// whether they did.
func (r *Reporter) Flush(d time.Duration) bool {
	if r == nil {
		return true
	}
	return r.hub.Flush(d)
}

// Describe renders err for a report: as err.Error(), except that a
// PostgreSQL error anywhere in its chain is replaced by its SQLSTATE,
// severity and the object names it carries (its message and detail may
// quote a row's values).
func Describe(err error) string {
	if err == nil {
		return "unknown"
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err.Error()
	}
	s := fmt.Sprintf("PostgreSQL error SQLSTATE %s (%s)", pgErr.Code, pgErr.Severity)
	if pgErr.SchemaName != "" || pgErr.TableName != "" {
		s += fmt.Sprintf(" on %s.%s", pgErr.SchemaName, pgErr.TableName)
	}
	if pgErr.ConstraintName != "" {
		s += " constraint " + pgErr.ConstraintName
	}
	return s
}
