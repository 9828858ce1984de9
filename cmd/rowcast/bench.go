package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/relay/client"
	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
	"github.com/rowcast/rowcast/sql/crm"
)

// runBenchLatency measures commit → client latency end to end: a throwaway
// PostgreSQL with the demo CRM, a relay in this process, N WebSocket
// sessions of one team, and writers updating escrows at a fixed rate. Each
// session records, per event, the time from the change's committedAt to the
// frame's arrival.
func runBenchLatency(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := newFlagSet("bench latency", stderr)
	sessions := fs.Int("sessions", 100, "WebSocket sessions, all in the written team")
	writes := fs.Int("writes", 3000, "update transactions to commit")
	perSec := fs.Float64("rate", 500, "transactions per second (all writers together)")
	writers := fs.Int("writers", 4, "concurrent writer connections")
	notify := fs.Bool("notify", true, "ring the LISTEN doorbell at commit (false: adaptive polling only)")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench: %v\n", err)
		return exitFailed
	}
	pg, err := pgembed.Start(ctx, pgembed.Options{})
	if err != nil {
		return fail(err)
	}
	defer pg.Close()
	url, err := pg.CreateDatabase(ctx, "bench")
	if err != nil {
		return fail(err)
	}
	if err := crm.Setup(ctx, url); err != nil {
		return fail(err)
	}
	cfg := config.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Database.URL = url
	cfg.Auth.JWTSecret = "bench-secret-bench-secret-bench-secret"
	cfg.Tables = crm.Tables()
	cfg.Capture.Notify = notify
	cfg.Sessions.QueueSize = 4096
	if err := installDemo(ctx, &cfg); err != nil {
		return fail(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `insert into escrows (team_id, property_address, city, state, zip_code, purchase_price)
		select 1, g || ' Bench St', 'Austin', 'TX', '78701', 300000 from generate_series(1, 100) g`); err != nil {
		return fail(err)
	}
	r, err := server.New(server.Options{Config: &cfg})
	if err != nil {
		return fail(err)
	}
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- r.Run(rctx) }()
	defer func() { stopRelay(); <-relayDone }()
	select {
	case <-r.Ready():
	case err := <-relayDone:
		return fail(err)
	}
	token, err := auth.Sign([]byte(cfg.Auth.JWTSecret), map[string]any{"sub": "1", "teamId": 1})
	if err != nil {
		return fail(err)
	}

	var mu sync.Mutex
	var lat []time.Duration
	conns := make([]*client.Conn, *sessions)
	for i := range conns {
		c, err := client.Dial(ctx, client.Options{URL: "ws://" + r.Addr() + "/ws", Token: token})
		if err != nil {
			return fail(fmt.Errorf("dial session %d: %w", i, err))
		}
		defer c.Close()
		conns[i] = c
		// Read the welcome and go live at once: a session that sends nothing
		// holds events for the resume grace period first.
		if _, err := c.Next(); err != nil {
			return fail(fmt.Errorf("session %d welcome: %w", i, err))
		}
		if err := c.Send(`{"type":"ping","id":0}`); err != nil {
			return fail(err)
		}
		if _, err := c.Next(); err != nil {
			return fail(fmt.Errorf("session %d pong: %w", i, err))
		}
	}
	var readers sync.WaitGroup
	for _, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var local []time.Duration
			got := 0
			for got < *writes {
				f, err := c.Next()
				if err != nil {
					break
				}
				now := time.Now()
				var d struct {
					CommittedAt time.Time `json:"committedAt"`
				}
				if f.Type != "event" || json.Unmarshal(f.Data, &d) != nil {
					continue
				}
				local = append(local, now.Sub(d.CommittedAt))
				got++
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}

	fmt.Fprintf(stdout, "bench: %d sessions, %d update transactions at %.0f/s from %d writers, doorbell=%v\n",
		*sessions, *writes, *perSec, *writers, *notify)
	lim := rate.NewLimiter(rate.Limit(*perSec), 1)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	per := *writes / *writers
	for w := 0; w < *writers; w++ {
		n := per
		if w == 0 {
			n += *writes % *writers
		}
		g.Go(func() error {
			for i := 0; i < n; i++ {
				if err := lim.Wait(gctx); err != nil {
					return err
				}
				if _, err := pool.Exec(gctx, `update escrows set purchase_price = purchase_price + 1, version = version + 1
					where id = $1`, 1+(i*7+w)%100); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}
	wrote := time.Since(start)
	deadline := time.AfterFunc(30*time.Second, func() {
		for _, c := range conns {
			c.Close()
		}
	})
	readers.Wait()
	deadline.Stop()
	total := time.Since(start)
	if len(lat) == 0 {
		return fail(fmt.Errorf("no event arrived"))
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Fprintf(stdout, "wrote %d transactions in %v (%.0f tx/s)\n", *writes, wrote.Round(time.Millisecond), float64(*writes)/wrote.Seconds())
	fmt.Fprintf(stdout, "delivered %d of %d events in %v (%.0f events/s to clients)\n",
		len(lat), *writes**sessions, total.Round(time.Millisecond), float64(len(lat))/total.Seconds())
	fmt.Fprintf(stdout, "commit → client latency: p50 %v  p90 %v  p99 %v  max %v\n",
		q(0.50).Round(10*time.Microsecond), q(0.90).Round(10*time.Microsecond),
		q(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	if len(lat) < *writes**sessions {
		return exitFailed
	}
	return exitOK
}
