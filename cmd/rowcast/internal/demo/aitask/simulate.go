package aitask

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// script is one task the simulated assistant runs.
type script struct {
	user, team, typ string
	params          func(rnd *rand.Rand) any
}

// demoScripts is the round of tasks Simulate plays: mostly for users 1
// (team 1) and 4 (team 2), whose tokens `rowcast demo` prints, some for
// their teammates 2 and 5 (whose task events users 1 and 4 do not see,
// though they see the escrows and leads those tasks create), and one in
// three failing on its input.
func demoScripts() []script {
	streets := []string{"Oak St", "Maple Ave", "Cedar Ln", "Harbor Blvd", "Sunset Dr", "Pine Ct", "Lake Rd"}
	escrow := func(city, stateZip string, number bool) func(*rand.Rand) any {
		return func(rnd *rand.Rand) any {
			street := streets[rnd.IntN(len(streets))]
			if number {
				street = fmt.Sprint(10+rnd.IntN(990), " ", street)
			}
			addr := street + ", " + city
			if stateZip != "" {
				addr += ", " + stateZip
			}
			return map[string]any{"address": addr, "price": 250_000 + 5_000*rnd.IntN(150)}
		}
	}
	leads := func(bad bool) func(*rand.Rand) any {
		first := []string{"Maya", "Noah", "Liam", "Zoe", "Ivy", "Omar", "Lena", "Theo"}
		last := []string{"Garcia", "Chen", "Müller", "Okafor", "Silva", "Novak", "Kim"}
		return func(rnd *rand.Rand) any {
			var b strings.Builder
			b.WriteString("first_name,last_name,email,phone\n")
			n := 4 + rnd.IntN(5)
			for i := range n {
				f, l := first[rnd.IntN(len(first))], last[rnd.IntN(len(last))]
				email := strings.ToLower(f) + fmt.Sprint(rnd.IntN(1000)) + "@example.com"
				if bad && i == n-2 {
					email = strings.ToLower(f) + " at example.com"
				}
				fmt.Fprintf(&b, "%s,%s,%s,555-01%02d\n", f, l, email, rnd.IntN(100))
			}
			return map[string]any{"csv": b.String()}
		}
	}
	return []script{
		{"1", "1", CreateEscrow, escrow("Austin", "TX 78701", true)},
		{"4", "2", ImportLeads, leads(false)},
		{"1", "1", ImportLeads, leads(true)},
		{"4", "2", CreateEscrow, escrow("San Diego", "CA 92101", false)},
		{"2", "1", CreateEscrow, escrow("Austin", "TX 78704", true)},
		{"1", "1", CreateEscrow, escrow("Denver", "", true)},
		{"5", "2", ImportLeads, leads(false)},
		{"4", "2", CreateEscrow, escrow("Portland", "OR 97201", true)},
		{"1", "1", ImportLeads, leads(false)},
	}
}

// Simulate plays the demo CRM's AI assistant until ctx ends: about every
// interval (jittered between half and one and a half times it; zero or less
// means 8s) it starts the next task of a fixed round for users of both demo
// teams, some of which fail on their input (an address without a street
// number or without a state and zip code, a CSV row with a bad email).
// Tasks run concurrently with each other. When ctx ends it waits for the
// tasks in flight, which record that they were cancelled, and returns nil.
// A task that fails for another reason is logged and the round goes on.
func (r *Runner) Simulate(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 8 * time.Second
	}
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	scripts := demoScripts()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		timer := time.NewTimer(time.Duration(float64(interval) * (0.5 + rnd.Float64())))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		s := scripts[i%len(scripts)]
		params, err := json.Marshal(s.params(rnd))
		if err != nil {
			return fmt.Errorf("aitask simulate: %w", err)
		}
		_, done, err := r.Start(ctx, s.user, s.team, s.typ, params)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.logger().Warn("ai task not started", "type", s.typ, "err", err)
			continue
		}
		wg.Go(func() { <-done }) // Execute logs how the task ended
	}
}
