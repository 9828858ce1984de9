package server_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/pgtest"
)

// TestReadinessFollowsDatabase: a relay whose database connection is cut
// silently (a proxy between them stops forwarding, closing nothing)
// notices within its stall timeout and answers /readyz 503 while it lasts, reports database_lost to Sentry once
// the loss lasts past Options.DatabaseLostAfter, and answers 200 again when
// the database is back, delivering what was committed meanwhile; in both
// capture modes.
func TestReadinessFollowsDatabase(t *testing.T) {
	for _, mode := range restartModes {
		t.Run(mode.name, func(t *testing.T) {
			sink := newSentrySink(t)
			var proxy *pgtest.Proxy
			var direct string
			e := startRelay(t, func(c *config.Config) {
				if mode.tweak != nil {
					mode.tweak(c)
				}
				direct = c.Database.URL
				proxy = throughProxy(t, c)
				c.Sentry.DSN = sink.dsn()
			})
			e.shutdown()
			e.lostAfter, e.stall, e.logicalRetry = time.Second, time.Second, 100*time.Millisecond
			e.start()
			db, err := pgxpool.New(context.Background(), direct)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			c := e.connect(userToken(t, "2", 1))
			if code, body := e.readyz(); code != http.StatusOK {
				t.Fatalf("/readyz %d %q before the cut", code, body)
			}

			proxy.Cut()
			var body string
			waitFor(t, func() string { return "/readyz 503 during the cut; last body: " + body }, func() bool {
				var code int
				code, body = e.readyz()
				return code == http.StatusServiceUnavailable
			})
			if !strings.Contains(body, "not capturing") {
				t.Errorf("/readyz body during the cut %q, want it to say it is not capturing", body)
			}
			waitFor(t, func() string { k, _ := sink.seen(); return "a database_lost event; have " + strings.Join(k, ",") },
				func() bool { k, _ := sink.seen(); return slices.Contains(k, "database_lost") })
			if _, err := db.Exec(context.Background(), "insert into leads (team_id, first_name) values (1, 'During the cut')"); err != nil {
				t.Fatal(err)
			}

			proxy.Restore()
			waitFor(t, func() string { return "/readyz 200 after the cut" }, func() bool {
				code, _ := e.readyz()
				return code == http.StatusOK
			})
			if f := c.event("lead:created"); !strings.Contains(string(f.Raw), "During the cut") {
				t.Errorf("after the cut the session got %s", f.Raw)
			}
			e.shutdown() // flushes
			kinds, _ := sink.seen()
			if n := strings.Count(strings.Join(kinds, ","), "database_lost"); n != 1 {
				t.Errorf("Sentry events %v, want one database_lost", kinds)
			}
		})
	}
}

// TestListenURLCarriesTheCapture: with database.listen_url set, the
// capture's connections use it and database.url serves the rest (replays):
// with database.url's way cut, live events still flow; once it is back, a
// resume replays through it (unnamed statements, as through a transaction
// pooler); in both capture modes.
func TestListenURLCarriesTheCapture(t *testing.T) {
	for _, mode := range restartModes {
		t.Run(mode.name, func(t *testing.T) {
			var proxy *pgtest.Proxy
			e := startRelay(t, func(c *config.Config) {
				if mode.tweak != nil {
					mode.tweak(c)
				}
				c.Database.ListenURL = c.Database.URL
				proxy = throughProxy(t, c)
			})
			tok := userToken(t, "2", 1)
			c := e.connect(tok)
			proxy.Cut()
			e.exec("insert into leads (team_id, first_name) values (1, 'Live Lucy')")
			live := c.event("lead:created")
			if !strings.Contains(string(live.Raw), "Live Lucy") {
				t.Fatalf("got %s", live.Raw)
			}
			proxy.Restore()
			r, err := e.dial(tok, "since="+startPosition(t, e), nil)
			if err != nil {
				t.Fatal(err)
			}
			if w := r.next(); w.Type != "welcome" {
				t.Fatalf("resume: got %s, want welcome", w.Raw)
			}
			if f := r.event("lead:created"); f.Position != live.Position {
				t.Errorf("replayed at %s, live at %s", f.Position, live.Position)
			}
		})
	}
}
