package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/floor"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/client"
	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
	"github.com/rowcast/rowcast/sql/crm"
)

// escrowsPerTeam is how many escrows each team of a load database holds.
const escrowsPerTeam = 10

// loadMarker prefixes the number each load write puts in the escrow's notes,
// so a client finds the change in a frame without decoding it.
const loadMarker = "~rcb"

// setupLoadDB creates database name on pg and seeds it with seedLoadDB.
func setupLoadDB(ctx context.Context, pg *pgembed.Server, name string, teams int) (string, error) {
	url, err := pg.CreateDatabase(ctx, name)
	if err != nil {
		return "", err
	}
	return url, seedLoadDB(ctx, url, teams)
}

// seedLoadDB creates the demo CRM in the empty database at url, with teams
// 1..teams and escrowsPerTeam escrows per team: escrow id g is in team
// 1 + (g-1) % teams.
func seedLoadDB(ctx context.Context, url string, teams int) error {
	if err := crm.Setup(ctx, url); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `insert into teams (id, name) select g, 'Team ' || g from generate_series(1, $1::int) g
		on conflict (id) do nothing`, teams); err != nil {
		return fmt.Errorf("load teams: %w", err)
	}
	if _, err := conn.Exec(ctx, `insert into escrows (id, team_id, property_address, city, state, zip_code, purchase_price)
		select g, 1 + (g - 1) % $1::int, g || ' Bench St', 'Austin', 'TX', '78701', 300000
		from generate_series(1, $1::int * $2::int) g`, teams, escrowsPerTeam); err != nil {
		return fmt.Errorf("load escrows: %w", err)
	}
	return nil
}

// loadTarget is a relay under load: how sessions connect to it live, and
// how far it has read.
type loadTarget struct {
	name string
	// dial connects a session of team, returning once events committed
	// from now on will reach it.
	dial func(ctx context.Context, team int) (*websocket.Conn, error)
	// seen counts the changes the relay has read from PostgreSQL.
	seen func() int64
	// sessions counts the sessions the relay holds now.
	sessions func() int64
}

// rowcastTarget is the in-process relay r, its sessions authenticated by
// tokens signed with secret, all of user 1 from 127.0.0.1.
func rowcastTarget(r *server.Relay, secret string) loadTarget {
	return rowcastTargetFrom(r, secret, false)
}

// rowcastTargetFrom is rowcastTarget; with spread, session n is user n and
// comes from 127.0.1.(n%250+1), so that a relay with the default
// connection limits takes them all, as it would real users.
func rowcastTargetFrom(r *server.Relay, secret string, spread bool) loadTarget {
	var n atomic.Int64
	return loadTarget{
		name: "rowcast",
		dial: func(ctx context.Context, team int) (*websocket.Conn, error) {
			i := n.Add(1)
			user := "1"
			o := client.Options{URL: "ws://" + r.Addr() + "/ws"}
			if spread {
				user = strconv.FormatInt(i, 10)
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i%250+1))}}
				o.NetDialContext = d.DialContext
			}
			token, err := auth.Sign([]byte(secret), map[string]any{"sub": user, "teamId": team})
			if err != nil {
				return nil, err
			}
			o.Token = token
			c, err := client.Dial(ctx, o)
			if err != nil {
				return nil, err
			}
			// The welcome, then a ping answered: a session that sends
			// nothing holds its events for the resume grace period.
			if _, err := c.Next(); err != nil {
				c.Close()
				return nil, fmt.Errorf("welcome: %w", err)
			}
			if err := c.Send(`{"type":"ping","id":0}`); err != nil {
				c.Close()
				return nil, err
			}
			if _, err := c.Next(); err != nil {
				c.Close()
				return nil, fmt.Errorf("pong: %w", err)
			}
			// The client's read deadline (two heartbeats) is moved by what
			// it reads, and nothing is read until every session is
			// connected: dialing thousands can take longer (with a write
			// delay, each waits for its welcome and its pong). The
			// benchmark's reader has no deadline.
			ws := c.WebSocket()
			if err := ws.SetReadDeadline(time.Time{}); err != nil {
				c.Close()
				return nil, err
			}
			return ws, nil
		},
		seen:     func() int64 { return int64(r.Hub().Stats().Published) },
		sessions: func() int64 { return r.Hub().Stats().Subscribers },
	}
}

// floorTarget is the floor relay f.
func floorTarget(f *floor.Relay) loadTarget {
	return loadTarget{
		name: "floor",
		dial: func(ctx context.Context, team int) (*websocket.Conn, error) {
			ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+f.Addr()+"/ws?team="+strconv.Itoa(team), http.Header{})
			if err != nil {
				return nil, err
			}
			if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello" {
				ws.Close()
				return nil, fmt.Errorf("hello: %q %w", msg, err)
			}
			return ws, nil
		},
		seen:     func() int64 { return f.Stats().Received },
		sessions: func() int64 { return int64(f.Stats().Sessions) },
	}
}

// startFloor runs the floor relay on the database at url (its trigger must
// be installed) until the returned stop is called.
func startFloor(ctx context.Context, url string, queue int) (*floor.Relay, func(), error) {
	f, err := floor.New(floor.Options{DatabaseURL: url, QueueSize: queue})
	if err != nil {
		return nil, nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	select {
	case <-f.Ready():
	case err := <-done:
		cancel()
		return nil, nil, err
	}
	return f, func() { cancel(); <-done }, nil
}

// loadSpec is a write workload: writes update transactions at perSec from
// writers connections, change i updating escrow 1 + i % (teams *
// escrowsPerTeam), which is in team 1 + i % teams, and setting its notes to
// loadMarker followed by base + i.
type loadSpec struct {
	teams, writes, writers int
	perSec                 float64
	base                   int64
	// drain bounds the wait for the last deliveries after the last commit.
	drain time.Duration
}

// want is how many of the workload's changes are in team (1-based).
func (s loadSpec) want(team int) int {
	n := s.writes / s.teams
	if team-1 < s.writes%s.teams {
		n++
	}
	return n
}

// loadResult is what a workload measured.
type loadResult struct {
	lat                 []time.Duration // sorted; one per delivery
	writes              int
	delivered, expected int
	incomplete          int                      // sessions that missed events
	early               int                      // deliveries seen before the writer's commit returned (counted as 0)
	wrote, elapsed      time.Duration            // writing; first write to last delivery
	pgCPU               time.Duration            // PostgreSQL CPU from first write to last delivery
	pgSplit             map[string]time.Duration // pgCPU by process (postgresProcs' labels)
}

// q returns the p quantile of the latencies.
func (r loadResult) q(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

// loadSession is one connected client session and what it received.
type loadSession struct {
	ws    *websocket.Conn
	team  int
	want  int
	got   int
	early int
	lat   []int32 // microseconds
}

// dialSessions connects n sessions to t, session i in team 1 + i % teams,
// 64 at a time. Nothing reads a session until all are connected, so none
// answers the relay's pings meanwhile: the dialing must end well within
// the relay's pong wait (two heartbeats, 50 s), and a dial waits for two
// frames (longer with a write delay). On error the sessions connected so
// far are closed.
func dialSessions(ctx context.Context, t loadTarget, n, teams int) ([]*loadSession, error) {
	out := make([]*loadSession, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i := range out {
		g.Go(func() error {
			ws, err := t.dial(gctx, 1+i%teams)
			if err != nil {
				return fmt.Errorf("%s session %d: %w", t.name, i, err)
			}
			out[i] = &loadSession{ws: ws, team: 1 + i%teams}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		closeSessions(out)
		return nil, err
	}
	return out, nil
}

// closeSessions closes every connected session.
func closeSessions(ss []*loadSession) {
	for _, s := range ss {
		if s != nil {
			s.ws.Close()
		}
	}
}

// waitFor polls cond every 10 ms until it holds, failing after limit.
func waitFor(ctx context.Context, limit time.Duration, what string, cond func() bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return fmt.Errorf("%s: not within %v", what, limit)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// runLoad runs spec against t with sessions connected (and closes them):
// each session reads frames, finds the marker and records the time from
// the writer's commit returning (this process's clock) to the frame's
// arrival. It returns once every session got every change of its team, or
// spec.drain after the last commit. pg, when not nil, is measured for CPU.
func runLoad(ctx context.Context, pool *pgxpool.Pool, pg *pgembed.Server, t loadTarget, sessions []*loadSession, spec loadSpec) (loadResult, error) {
	defer closeSessions(sessions)
	res := loadResult{writes: spec.writes}
	done := make([]atomic.Int64, spec.writes) // commit returned, ns since start
	var lastRecv atomic.Int64
	start := time.Now()
	var readers sync.WaitGroup
	for _, s := range sessions {
		s.want = spec.want(s.team)
		res.expected += s.want
		readers.Add(1)
		go func() {
			defer readers.Done()
			var buf bytes.Buffer
			for s.got < s.want {
				_, rd, err := s.ws.NextReader()
				if err != nil {
					return
				}
				buf.Reset()
				if _, err := buf.ReadFrom(rd); err != nil {
					return
				}
				now := time.Since(start)
				seq, ok := findMarker(buf.Bytes())
				seq -= spec.base
				if !ok || seq < 0 || seq >= int64(len(done)) {
					continue
				}
				s.got++
				for {
					old := lastRecv.Load()
					if int64(now) <= old || lastRecv.CompareAndSwap(old, int64(now)) {
						break
					}
				}
				at := done[seq].Load()
				if at == 0 {
					s.early++
					s.lat = append(s.lat, 0)
					continue
				}
				s.lat = append(s.lat, int32(max(0, int64(now)-at)/1000))
			}
		}()
	}
	allRead := make(chan struct{})
	go func() { readers.Wait(); close(allRead) }()

	var procs0 map[int]pgProc
	if pg != nil {
		var err error
		if procs0, err = postgresProcs(ctx, pool, pg); err != nil {
			return res, err
		}
	}
	lim := rate.NewLimiter(rate.Limit(spec.perSec), 1)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	escrows := int64(spec.teams * escrowsPerTeam)
	for range spec.writers {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= int64(spec.writes) {
					return nil
				}
				if err := lim.Wait(gctx); err != nil {
					return err
				}
				if _, err := pool.Exec(gctx, `update escrows set notes = $2, purchase_price = purchase_price + 1,
					version = version + 1 where id = $1`, 1+i%escrows, loadMarker+strconv.FormatInt(spec.base+i, 10)); err != nil {
					return fmt.Errorf("write %d: %w", i, err)
				}
				done[i].Store(max(1, int64(time.Since(start))))
			}
		})
	}
	if err := g.Wait(); err != nil {
		closeSessions(sessions)
		<-allRead
		return res, err
	}
	res.wrote = time.Since(start)
	select {
	case <-allRead:
	case <-time.After(spec.drain):
	case <-ctx.Done():
	}
	if pg != nil {
		procs1, err := postgresProcs(ctx, pool, pg)
		if err != nil {
			return res, err
		}
		res.pgSplit = procCPU(procs0, procs1)
		for _, d := range res.pgSplit {
			res.pgCPU += d
		}
	}
	closeSessions(sessions)
	<-allRead
	res.elapsed = time.Duration(lastRecv.Load())
	for _, s := range sessions {
		res.delivered += s.got
		res.early += s.early
		if s.got < s.want {
			res.incomplete++
		}
		for _, l := range s.lat {
			res.lat = append(res.lat, time.Duration(l)*time.Microsecond)
		}
		s.lat = nil
	}
	slices.Sort(res.lat)
	return res, ctx.Err()
}

// findMarker returns the number after loadMarker in frame.
func findMarker(frame []byte) (int64, bool) {
	i := bytes.Index(frame, []byte(loadMarker))
	if i < 0 {
		return 0, false
	}
	var n int64
	j := i + len(loadMarker)
	for ; j < len(frame) && frame[j] >= '0' && frame[j] <= '9'; j++ {
		n = n*10 + int64(frame[j]-'0')
	}
	return n, j > i+len(loadMarker)
}

// benchRelayConfig is the relay configuration of the load benchmarks: the
// demo CRM at url in the given capture mode, with queue frames per session.
func benchRelayConfig(url, mode string, queue int) (*config.Config, error) {
	if mode != config.ModeTrigger && mode != config.ModeLogical {
		return nil, errors.New("--mode must be trigger or logical")
	}
	cfg := benchConfig(url, mode, true)
	cfg.Sessions.QueueSize = queue
	return cfg, nil
}
