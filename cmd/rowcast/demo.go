package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/aitask"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/api"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/app"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
	"github.com/rowcast/rowcast/sql/crm"
	"github.com/rowcast/rowcast/triggers"
)

// runDemo starts a throwaway PostgreSQL with the demo CRM, installs the
// triggers, runs a relay on it, a simulated CRM writing to it and a
// simulated AI assistant running tasks, and prints tokens and the tail
// command to watch. Ctrl-C stops and removes it all.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := newFlagSet("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "relay `address`")
	interval := fs.Duration("interval", 700*time.Millisecond, "mean time between simulated CRM requests (0 disables them)")
	tasks := fs.Duration("tasks", 8*time.Second, "mean time between simulated AI tasks (0 disables them)")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	if err := noOverrides(fs, "rowcast demo"); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	cfg := config.Defaults()
	cfg.Listen = *listen
	cfg.Shutdown.Drain = 0 // one replica on one machine: Ctrl-C closes the demo's sessions at once
	log := newLogger(&cfg, stderr)
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast demo: %v\n", err)
		return exitFailed
	}

	fmt.Fprintln(stderr, "starting a throwaway PostgreSQL …")
	pg, err := pgembed.Start(ctx, pgembed.Options{})
	if err != nil {
		return fail(err)
	}
	defer func() {
		pg.Close()
		fmt.Fprintln(stderr, "demo stopped; its database is removed")
	}()
	url, err := pg.CreateDatabase(ctx, "crm")
	if err != nil {
		return fail(err)
	}
	if err := crm.Setup(ctx, url); err != nil {
		return fail(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	cfg.Database.URL = url
	cfg.Auth.JWTSecret = hex.EncodeToString(secret)
	cfg.Origins = []string{"http://localhost:5173", "http://127.0.0.1:5173"}
	cfg.Tables = crm.Tables()
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	if err := installDemo(ctx, &cfg); err != nil {
		return fail(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	g, gctx := errgroup.WithContext(ctx)
	runner := &aitask.Runner{Pool: pool, StepDelay: 900 * time.Millisecond, Logger: log.With("component", "ai-tasks")}
	crmAPI, err := demoAPI(gctx, &cfg, pool, runner, log)
	if err != nil {
		return fail(err)
	}
	relay, err := server.New(server.Options{Config: &cfg, Logger: log, Version: version(),
		Pages: map[string]http.Handler{"/": app.Handler(), "/api/": crmAPI}})
	if err != nil {
		return fail(err)
	}

	g.Go(func() error { return relay.Run(gctx) })
	g.Go(func() error {
		select {
		case <-relay.Ready():
		case <-gctx.Done():
			return nil
		}
		printDemoBanner(stdout, &cfg, relay.Addr(), url)
		if *interval <= 0 {
			<-gctx.Done()
			return nil
		}
		sim := &demo.Simulator{Pool: pool, Interval: *interval, Logger: log.With("component", "demo")}
		return sim.Run(gctx)
	})
	g.Go(func() error {
		select {
		case <-relay.Ready():
		case <-gctx.Done():
			return nil
		}
		if *tasks <= 0 {
			return nil
		}
		return runner.Simulate(gctx, *tasks)
	})
	if err := g.Wait(); err != nil {
		return fail(err)
	}
	return exitOK
}

// demoAPI returns the demo CRM's REST API on pool, with tokens signed by the
// relay's secret and AI tasks run by runner until ctx ends.
func demoAPI(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool, runner *aitask.Runner, log *slog.Logger) (*api.API, error) {
	verifier, err := auth.NewVerifier(auth.Options{Secret: []byte(cfg.Auth.JWTSecret),
		UserClaim: cfg.Auth.UserClaim, TeamClaim: cfg.Auth.TeamClaim})
	if err != nil {
		return nil, err
	}
	exclude := map[string][]string{}
	for _, t := range cfg.Tables {
		exclude[t.Table] = t.ExcludeColumns
	}
	return api.New(api.Options{
		Pool: pool, Verifier: verifier, Secret: []byte(cfg.Auth.JWTSecret), Exclude: exclude,
		Logger: log.With("component", "demo-api"),
		StartTask: func(_ context.Context, user, team, taskType string, params json.RawMessage) (string, error) {
			// The task outlives the request that started it.
			id, _, err := runner.Start(ctx, user, team, taskType, params)
			return id, err
		},
	})
}

func installDemo(ctx context.Context, cfg *config.Config) error {
	conn, err := pgx.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	plan, err := triggers.Prepare(ctx, conn, cfg)
	if err != nil {
		return err
	}
	_, err = triggers.Install(ctx, conn, plan)
	return err
}

func printDemoBanner(w io.Writer, cfg *config.Config, addr, dbURL string) {
	token := func(user string, teams ...int) string {
		t, err := auth.Sign([]byte(cfg.Auth.JWTSecret), map[string]any{
			"sub": user, "teamId": teams, "exp": time.Now().Add(24 * time.Hour).Unix(),
		})
		if err != nil {
			return "(token: " + err.Error() + ")"
		}
		return t
	}
	ana, dev := token("1", 1), token("4", 2)
	fmt.Fprintf(w, `
rowcast demo is running.

  app        http://%[1]s/   (as another teammate: http://%[1]s/?user=2; team 2: ?user=4)
  relay      ws://%[1]s/ws   (metrics: http://%[1]s/metrics)
  database   %[2]s
  CRM        team 1 "Pacific Realty" (users 1-3), team 2 "Summit Homes" (users 4-5);
             a simulated REST API creates, updates and deletes escrows, leads and
             appointments every moment; an AI assistant runs a task for a user
             every few seconds (ai:task:* events, to that user only).

Watch team 1 as user 1 (Ana), in another terminal:

  go run ./cmd/rowcast tail --url ws://%[1]s/ws --token %[3]s

Watch team 2 as user 4 (Dev):

  go run ./cmd/rowcast tail --url ws://%[1]s/ws --token %[4]s

Write yourself and watch it arrive:

  psql '%[2]s' -c "select rowcast.set_actor('2'); update escrows set status = 'closed' where id = (select min(id) from escrows where team_id = 1)"

Ctrl-C stops the relay and removes the database.
`, addr, dbURL, ana, dev)
}
