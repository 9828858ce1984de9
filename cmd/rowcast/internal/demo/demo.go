// Package demo simulates the demo CRM (package sql/crm): a simulator that
// writes to it the way the CRM's REST API would, one short transaction per
// request, naming the actor and the request id. `rowcast demo` uses it.
package demo

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Simulator writes CRM activity.
type Simulator struct {
	Pool *pgxpool.Pool
	// Interval is the mean time between two requests. Default 700ms.
	Interval time.Duration
	Logger   *slog.Logger
	rnd      *rand.Rand
	req      int
}

// Run simulates requests until ctx ends, then returns nil. A failed request
// is logged and the simulation goes on.
func (s *Simulator) Run(ctx context.Context) error {
	if s.Interval <= 0 {
		s.Interval = 700 * time.Millisecond
	}
	s.rnd = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for {
		wait := time.Duration(float64(s.Interval) * (0.5 + s.rnd.Float64()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := s.Step(ctx); err != nil && ctx.Err() == nil {
			s.Logger.Warn("demo request failed", "err", err)
		}
	}
}

// Demo vocabulary: the seed's team members, and names to pick from.
var (
	streets  = [...]string{"Oak St", "Maple Ave", "Cedar Ln", "Harbor Blvd", "Sunset Dr", "Pine Ct", "Lake Rd"}
	cities   = [...]string{"Austin", "Portland", "Denver", "San Diego", "Raleigh"}
	first    = [...]string{"Maya", "Noah", "Liam", "Zoe", "Ivy", "Omar", "Lena", "Theo"}
	last     = [...]string{"Garcia", "Chen", "Müller", "Okafor", "Silva", "Novak", "Kim"}
	statuses = [...]string{"open", "pending", "closed"}
	members  = [...][]int{1: {1, 2, 3}, 2: {4, 5}}
)

// Step performs one simulated API request in its own transaction.
func (s *Simulator) Step(ctx context.Context) error {
	if s.rnd == nil {
		s.rnd = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	}
	team := 1 + s.rnd.IntN(2)
	users := members[team]
	actor := users[s.rnd.IntN(len(users))]
	s.req++
	reqID := "req-" + strconv.Itoa(s.req)
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "select rowcast.set_actor($1), rowcast.set_request_id($2)", strconv.Itoa(actor), reqID); err != nil {
			return err
		}
		switch n := s.rnd.IntN(10); {
		case n < 3:
			return s.createEscrow(ctx, tx, team, actor)
		case n < 6:
			_, err := tx.Exec(ctx, `update escrows set status = $2, purchase_price = purchase_price + $3, updated_by = $4, updated_at = now()
				where id = (select id from escrows where team_id = $1 order by random() limit 1)`,
				team, statuses[s.rnd.IntN(len(statuses))], s.rnd.IntN(20)*1000, actor)
			return err
		case n < 7:
			_, err := tx.Exec(ctx, `insert into leads (team_id, first_name, last_name, email, source, score, updated_by)
				values ($1, $2, $3, lower($2) || '@example.com', 'website', $4, $5)`,
				team, first[s.rnd.IntN(len(first))], last[s.rnd.IntN(len(last))], s.rnd.IntN(100), actor)
			return err
		case n < 8:
			_, err := tx.Exec(ctx, `update leads set status = 'contacted', score = score + 5, updated_by = $2
				where id = (select id from leads where team_id = $1 and status = 'new' order by random() limit 1)`, team, actor)
			return err
		case n < 9:
			_, err := tx.Exec(ctx, `insert into appointments (team_id, title, location, starts_at, updated_by)
				values ($1, 'Showing', $2, now() + interval '2 days', $3)`, team, streets[s.rnd.IntN(len(streets))], actor)
			return err
		default:
			_, err := tx.Exec(ctx, `delete from leads where id = (select id from leads where team_id = $1 order by random() limit 1)`, team)
			return err
		}
	})
}

func (s *Simulator) createEscrow(ctx context.Context, tx pgx.Tx, team, actor int) error {
	_, err := tx.Exec(ctx, `insert into escrows (team_id, property_address, city, state, zip_code, purchase_price,
		earnest_money, commission_rate, details, notes, internal_notes, updated_by)
		values ($1, $2, $3, 'TX', '78701', $4, $5, 2.5, '{"financing":"conventional"}', 'Buyer wants a quick close',
		'commission split 60/40', $6)`,
		team, fmt.Sprintf("%d %s", 100+s.rnd.IntN(900), streets[s.rnd.IntN(len(streets))]),
		cities[s.rnd.IntN(len(cities))], 250000+s.rnd.IntN(500)*1000, 5000+s.rnd.IntN(20)*500, actor)
	return err
}
