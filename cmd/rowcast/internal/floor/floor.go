// Package floor is the physical floor that `rowcast bench` measures rowcast
// against: a row trigger that pg_notify()s the row as JSON with its team,
// and one LISTEN connection forwarding each payload, unchanged, to the
// WebSocket sessions of that team. No order guarantee, no history, no
// resume: the least work any PostgreSQL → WebSocket relay can do.
package floor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/olahol/melody"
)

// Channel is the NOTIFY channel of the floor's trigger.
const Channel = "rowcast_floor"

// TriggerSQL creates the floor's trigger on table, whose team is the
// integer column teamColumn: each inserted or updated row is sent with
// pg_notify as {"team":<team>,"row":<to_jsonb(NEW)>}. Rows whose JSON
// exceeds NOTIFY's 8000-byte payload limit fail the write.
func TriggerSQL(table, teamColumn string) string {
	t, c := pgx.Identifier{table}.Sanitize(), pgx.Identifier{teamColumn}.Sanitize()
	return fmt.Sprintf(`create or replace function rowcast_floor_notify() returns trigger language plpgsql as $f$
begin
	perform pg_notify('%[3]s', '{"team":' || NEW.%[2]s || ',"row":' || to_jsonb(NEW)::text || '}');
	return null;
end $f$;
create trigger rowcast_floor_notify after insert or update on %[1]s
	for each row execute function rowcast_floor_notify();`, t, c, Channel)
}

// Options configures a Relay.
type Options struct {
	// DatabaseURL is where the floor LISTENs.
	DatabaseURL string
	// QueueSize bounds each session's outgoing queue; a payload for a full
	// queue is dropped and counted (melody's behaviour). Default 256.
	QueueSize int
}

// Relay is the floor relay. Sessions connect to /ws?team=<id>; the relay
// sends them the text frame "hello" once they are registered, then every
// payload of their team's rows as a text frame.
type Relay struct {
	o        Options
	m        *melody.Melody
	ln       net.Listener
	srv      *http.Server
	ready    chan struct{}
	dropped  atomic.Int64
	sent     atomic.Int64
	received atomic.Int64

	mu    sync.RWMutex
	teams map[int64]map[*melody.Session]struct{}
}

// New listens on a free loopback port; Run serves and forwards.
func New(o Options) (*Relay, error) {
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("floor: listen: %w", err)
	}
	r := &Relay{o: o, m: melody.New(), ln: ln, ready: make(chan struct{}),
		teams: map[int64]map[*melody.Session]struct{}{}}
	r.m.Config.MessageBufferSize = o.QueueSize
	r.m.HandleError(func(_ *melody.Session, err error) {
		if errors.Is(err, melody.ErrMessageBufferFull) {
			r.dropped.Add(1)
		}
	})
	r.m.HandleConnect(func(s *melody.Session) {
		team := s.MustGet("team").(int64)
		r.mu.Lock()
		set := r.teams[team]
		if set == nil {
			set = map[*melody.Session]struct{}{}
			r.teams[team] = set
		}
		set[s] = struct{}{}
		r.mu.Unlock()
		_ = s.Write([]byte("hello"))
	})
	r.m.HandleDisconnect(func(s *melody.Session) {
		team := s.MustGet("team").(int64)
		r.mu.Lock()
		delete(r.teams[team], s)
		r.mu.Unlock()
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, req *http.Request) {
		team, err := strconv.ParseInt(req.URL.Query().Get("team"), 10, 64)
		if err != nil {
			http.Error(w, "team: "+err.Error(), http.StatusBadRequest)
			return
		}
		_ = r.m.HandleRequestWithKeys(w, req, map[string]any{"team": team})
	})
	r.srv = &http.Server{Handler: mux}
	return r, nil
}

// Addr is the host:port sessions connect to.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Ready is closed once the LISTEN is in place: rows committed after that
// reach the sessions connected at the time.
func (r *Relay) Ready() <-chan struct{} { return r.ready }

// Stats is a snapshot of the relay's counters.
type Stats struct {
	// Received counts the notifications read from PostgreSQL.
	Received int64
	// Sent counts the frames handed to sessions, Dropped those of them
	// dropped on a full queue.
	Sent, Dropped int64
	// Sessions is the number of sessions connected now.
	Sessions int
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{Received: r.received.Load(), Sent: r.sent.Load(), Dropped: r.dropped.Load(), Sessions: r.m.Len()}
}

// Run serves sessions and forwards notifications until ctx ends (it then
// returns nil) or the LISTEN connection fails.
func (r *Relay) Run(ctx context.Context) error {
	cc, err := pgx.ParseConfig(r.o.DatabaseURL)
	if err != nil {
		return fmt.Errorf("floor: connect: %w", err)
	}
	cc.RuntimeParams["application_name"] = "floor listener" // told apart in bench latency's CPU split
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("floor: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "listen "+Channel); err != nil {
		return fmt.Errorf("floor: listen: %w", err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- r.srv.Serve(r.ln) }()
	defer func() {
		_ = r.m.Close()
		_ = r.srv.Close()
		<-serveDone
	}()
	close(r.ready)
	var targets []*melody.Session
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("floor: wait for notification: %w", err)
		}
		r.received.Add(1)
		team, ok := payloadTeam(n.Payload)
		if !ok {
			continue
		}
		msg := []byte(n.Payload)
		targets = targets[:0]
		r.mu.RLock()
		for s := range r.teams[team] {
			targets = append(targets, s)
		}
		r.mu.RUnlock()
		for _, s := range targets {
			if s.Write(msg) == nil {
				r.sent.Add(1)
			}
		}
	}
}

// payloadTeam reads the team from a payload that starts {"team":<digits>.
func payloadTeam(p string) (int64, bool) {
	const prefix = `{"team":`
	if len(p) < len(prefix) || p[:len(prefix)] != prefix {
		return 0, false
	}
	var team int64
	i := len(prefix)
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		team = team*10 + int64(p[i]-'0')
	}
	return team, i > len(prefix)
}
