package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
	"github.com/rowcast/rowcast/sql/crm"
)

// writePathScript is a CRM-like write: a status and price change on one
// escrow, as the API's update endpoint does it.
const writePathScript = `\set id random(1, 1000)
UPDATE escrows SET status = (ARRAY['open','pending','closed'])[1 + :id % 3], purchase_price = purchase_price + 1, updated_by = 2, updated_at = now() WHERE id = :id;
`

// outboxSQL is the outbox baseline: what Centrifugo's PostgreSQL consumer
// asks users to write by hand, an AFTER ROW trigger inserting the row as
// JSON into a bigserial table (nothing consumes it here).
const outboxSQL = `create table bench_outbox (
	id bigserial primary key,
	method text not null default 'publish',
	payload jsonb not null,
	created_at timestamptz not null default now()
);
create function bench_outbox_capture() returns trigger language plpgsql as $f$
begin
	insert into bench_outbox (payload) values (to_jsonb(coalesce(NEW, OLD)));
	return null;
end $f$;
create trigger bench_outbox_capture after insert or update or delete on escrows
	for each row execute function bench_outbox_capture();`

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// writeVariant is one capture setup measured by bench writepath, in its own
// database of the one server.
type writeVariant struct {
	name string
	mode string // capture mode; "" installs none
	// alone: the capture is installed but no relay runs: the write path's
	// own cost, without the consumer's. In trigger mode the doorbell is
	// disarmed as a ticker disarms it while changes flow; in logical mode
	// the slot is dropped, leaving the tables' REPLICA IDENTITY FULL and
	// nothing decoding.
	alone bool
	// decode: logical mode's install, its slot streamed by a consumer
	// that discards what it receives (decodeConsumer) instead of a relay:
	// PostgreSQL's decoding alone.
	decode bool
	db     string
	cfg    *config.Config // nil without a relay
	slot   string         // with decode, the slot and its publication
	pub    string
	runs   map[int][]float64
	cpu    map[int][]map[string]time.Duration // PostgreSQL CPU by process, per run
}

// runBenchWritePath measures what capture costs the application: pgbench
// tps of writePathScript with no capture, the outbox baseline, trigger mode
// and logical mode (each with a relay consuming the changes), on one
// server, each variant in its own database. Variants run back to back, in
// alternating order over --rounds rounds, so each ratio compares runs minutes
// apart; the best run of each variant is reported.
func runBenchWritePath(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("bench writepath", stderr)
	seconds := fs.Int("seconds", 10, "pgbench duration per run")
	clientList := fs.String("clients", "1,8,32", "pgbench client counts, comma-separated")
	rounds := fs.Int("rounds", 2, "runs of each variant per client count, in alternating order")
	variantList := fs.String("variants", "none,outbox,trigger,logical", "variants to run, comma-separated (also trigger-alone and logical-alone: the mode's capture installed with no relay running; logical-decode: logical mode's slot streamed by a consumer that discards what it receives)")
	durable := fs.Bool("durable", false, "fsync on (default off: the database is throwaway)")
	relayCPUs := fs.String("relay-cpus", "", "pin this process (the relay) to these CPUs and PostgreSQL and pgbench to the others (taskset lists, e.g. 1)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (the relays) to `file`")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "rowcast bench writepath: %v\n", err)
			return exitFailed
		}
		defer stop()
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "rowcast bench writepath: %v\n", err)
		return exitFailed
	}
	clients, err := intList(*clientList)
	if err != nil {
		return fail(fmt.Errorf("--clients: %w", err))
	}
	if *rounds < 1 {
		return fail(errors.New("--rounds must be at least 1"))
	}
	bin, err := pgembed.BinDir()
	if err != nil {
		return fail(err)
	}
	pg, err := benchServer(ctx, *durable)
	if err != nil {
		return fail(err)
	}
	defer pg.Close()
	pgCPUs := ""
	if *relayCPUs != "" {
		var mine string
		if mine, pgCPUs, err = cpuSplit(*relayCPUs); err != nil {
			return fail(err)
		}
		if err := pinProcess(ctx, os.Getpid(), mine); err != nil {
			return fail(err)
		}
		if err := pinPostgres(ctx, pg, pgCPUs); err != nil {
			return fail(err)
		}
	}
	script := filepath.Join(os.TempDir(), fmt.Sprintf("rowcast-bench-%d.sql", os.Getpid()))
	if err := os.WriteFile(script, []byte(writePathScript), 0o644); err != nil {
		return fail(err)
	}
	defer os.Remove(script)

	var variants []*writeVariant
	for _, name := range strings.Split(*variantList, ",") {
		v := &writeVariant{name: strings.TrimSpace(name), db: "writepath_" + strings.TrimSpace(name), runs: map[int][]float64{},
			cpu: map[int][]map[string]time.Duration{}}
		switch v.name {
		case "none", "outbox":
		case config.ModeTrigger, config.ModeLogical:
			v.mode = v.name
		case "trigger-alone":
			v.mode, v.alone, v.db = config.ModeTrigger, true, "writepath_trigger_alone"
		case "logical-alone":
			v.mode, v.alone, v.db = config.ModeLogical, true, "writepath_logical_alone"
		case "logical-decode":
			v.mode, v.decode, v.db = config.ModeLogical, true, "writepath_logical_decode"
		default:
			return fail(fmt.Errorf("--variants: unknown variant %q (none, outbox, trigger, trigger-alone, logical, logical-alone, logical-decode)", v.name))
		}
		url, err := pg.CreateDatabase(ctx, v.db)
		if err != nil {
			return fail(err)
		}
		if err := setupWriteVariant(ctx, v, url, benchOverrides(fs, cf)); err != nil {
			return fail(fmt.Errorf("%s: %w", v.name, err))
		}
		variants = append(variants, v)
	}
	load0 := loadAverage()
	placement := "everything on all CPUs"
	if pgCPUs != "" {
		placement = fmt.Sprintf("relay on CPU %s, PostgreSQL and pgbench on CPU %s", *relayCPUs, pgCPUs)
	}
	fmt.Fprintf(stdout, "bench writepath: pgbench -T %d, one-row escrow UPDATE per transaction, 1000 escrows over 20 teams, fsync=%v, %d rounds, %s\n",
		*seconds, *durable, *rounds, placement)
	for _, c := range clients {
		for round := range *rounds {
			order := slices.Clone(variants)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, v := range order {
				tps, cpu, err := runWriteVariant(ctx, bin, pg, v, script, c, *seconds, pgCPUs)
				if err != nil {
					return fail(fmt.Errorf("%s, %d clients: %w", v.name, c, err))
				}
				v.runs[c] = append(v.runs[c], tps)
				v.cpu[c] = append(v.cpu[c], cpu)
			}
		}
	}
	printWritePath(stdout, variants, clients, *seconds)
	fmt.Fprintf(stdout, "load average %s at the start, %s at the end (%d CPUs)\n", load0, loadAverage(), runtime.NumCPU())
	return exitOK
}

// setupWriteVariant creates the CRM, its 1000 escrows and the variant's
// capture in the database at url; over (--set, --config) adjusts the
// configuration of a variant with a relay, but not its capture mode.
func setupWriteVariant(ctx context.Context, v *writeVariant, url string, over *configFlags) error {
	if err := crm.Setup(ctx, url); err != nil {
		return err
	}
	if err := seedEscrows(ctx, url); err != nil {
		return err
	}
	switch {
	case v.name == "outbox":
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if _, err := conn.Exec(ctx, outboxSQL); err != nil {
			return fmt.Errorf("outbox trigger: %w", err)
		}
	case v.mode != "":
		cfg, err := over.overlay(benchConfig(url, v.mode, true))
		if err != nil {
			return err
		}
		cfg.Capture.Mode = v.mode
		if v.alone || v.decode {
			// Slot names are cluster-wide: the logical variants share the
			// server.
			cfg.Capture.Slot = v.db
		}
		v.cfg = cfg
		if err := installDemo(ctx, v.cfg); err != nil {
			return err
		}
		if v.decode {
			v.slot, v.pub, v.cfg = cfg.Capture.Slot, cfg.Capture.Publication, nil
		}
		if v.alone {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if v.mode == config.ModeTrigger {
				if _, err := conn.Exec(ctx, "select setval('rowcast.bell', 0)"); err != nil {
					return fmt.Errorf("disarm the doorbell: %w", err)
				}
			} else {
				_, err := conn.Exec(ctx, "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1", cfg.Capture.Slot)
				if err != nil {
					return fmt.Errorf("drop the slot: %w", err)
				}
			}
			v.cfg = nil
		}
	}
	return nil
}

// runWriteVariant runs pgbench once against v, with v's relay running (and
// caught up with the changes of earlier runs) for the whole run, and
// returns its tps and PostgreSQL's CPU time during it by process (read
// every 200 ms, a query of pg_stat_activity each).
func runWriteVariant(ctx context.Context, bin string, pg *pgembed.Server, v *writeVariant, script string, clients, seconds int, cpus string) (_ float64, _ map[string]time.Duration, err error) {
	if v.cfg != nil {
		r, stop, err := startBenchRelay(ctx, v.cfg)
		if err != nil {
			return 0, nil, err
		}
		defer stop()
		if err := relayCaughtUp(ctx, r, v.cfg.Database.URL); err != nil {
			return 0, nil, err
		}
	}
	url := pg.URLFor(v.db)
	if v.decode {
		d, derr := startDecodeConsumer(ctx, url, v.slot, v.pub)
		if derr != nil {
			return 0, nil, derr
		}
		defer func() {
			// A consumer that stopped during the run left the slot
			// undecoded: the run measured nothing.
			if serr := d.stop(); serr != nil && err == nil {
				err = serr
			}
		}()
		if err := d.caughtUp(ctx, url); err != nil {
			return 0, nil, err
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, nil, err
	}
	_, err = conn.Exec(ctx, "checkpoint")
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return 0, nil, fmt.Errorf("checkpoint: %w", err)
	}
	sampler, err := startProcSampler(ctx, pg, url, 200*time.Millisecond)
	if err != nil {
		return 0, nil, err
	}
	tps, err := pgbench(ctx, bin, pg, v.db, script, clients, seconds, cpus)
	cpu, serr := sampler.stop()
	if err != nil {
		return 0, nil, err
	}
	return tps, cpu, serr
}

// relayCaughtUp writes one change and waits until the relay publishes it:
// by then it has read everything committed before (a logical relay decodes
// the WAL written by the other variants' runs too).
func relayCaughtUp(ctx context.Context, r *server.Relay, url string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	base := r.Hub().Stats().Published
	if _, err := pool.Exec(ctx, "update escrows set version = version + 1 where id = 1"); err != nil {
		return fmt.Errorf("catch-up write: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Minute)
	for r.Hub().Stats().Published == base {
		select {
		case <-tick.C:
		case <-deadline:
			return errors.New("relay did not catch up within 5 minutes")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// printWritePath prints, per client count, each variant's runs, its best run
// and the best run's ratio to the outbox baseline's and to no capture's;
// then where PostgreSQL's CPU went in each best run, per transaction.
func printWritePath(w io.Writer, variants []*writeVariant, clients []int, seconds int) {
	best := func(v *writeVariant, c int) float64 { return slices.Max(v.runs[c]) }
	find := func(name string) *writeVariant {
		for _, v := range variants {
			if v.name == name {
				return v
			}
		}
		return nil
	}
	outbox, none := find("outbox"), find("none")
	fmt.Fprintf(w, "\n%7s  %-14s %-24s %8s %9s %8s\n", "clients", "variant", "runs (tps)", "best", "×outbox", "×none")
	for _, c := range clients {
		for _, v := range variants {
			runs := make([]string, len(v.runs[c]))
			for i, t := range v.runs[c] {
				runs[i] = strconv.FormatFloat(t, 'f', 0, 64)
			}
			ratio := func(base *writeVariant) string {
				if base == nil {
					return "-"
				}
				return fmt.Sprintf("%.2f", best(v, c)/best(base, c))
			}
			fmt.Fprintf(w, "%7d  %-14s %-24s %8.0f %9s %8s\n", c, v.name, strings.Join(runs, ", "), best(v, c), ratio(outbox), ratio(none))
		}
	}
	if tr := find(config.ModeTrigger); tr != nil && outbox != nil {
		fmt.Fprint(w, "\ntrigger mode / outbox (goal ≥ 0.85):")
		for _, c := range clients {
			fmt.Fprintf(w, "  %d clients %.2f×", c, best(tr, c)/best(outbox, c))
		}
		fmt.Fprintln(w)
	}
	if lg := find(config.ModeLogical); lg != nil && none != nil {
		fmt.Fprint(w, "logical mode loss vs no capture (goal ≤ 10 %):")
		for _, c := range clients {
			fmt.Fprintf(w, "  %d clients %+.1f%%", c, (best(lg, c)/best(none, c)-1)*100)
		}
		fmt.Fprintln(w)
	}
	if dec := find("logical-decode"); dec != nil && none != nil {
		fmt.Fprint(w, "PostgreSQL's decoding alone (logical-decode), loss vs no capture:")
		for _, c := range clients {
			fmt.Fprintf(w, "  %d clients %+.1f%%", c, (best(dec, c)/best(none, c)-1)*100)
		}
		fmt.Fprintln(w)
		if lg := find(config.ModeLogical); lg != nil {
			fmt.Fprint(w, "logical mode / decoding alone:")
			for _, c := range clients {
				fmt.Fprintf(w, "  %d clients %.2f×", c, best(lg, c)/best(dec, c))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w, "\nPostgreSQL CPU by process in each best run, µs per transaction (pgbench: the writers' backends):")
	for _, c := range clients {
		for _, v := range variants {
			i := slices.Index(v.runs[c], best(v, c))
			var total time.Duration
			for _, d := range v.cpu[c][i] {
				total += d
			}
			n := best(v, c) * float64(seconds)
			fmt.Fprintf(w, "%7d  %-14s %4.0f: %s\n", c, v.name, float64(total.Microseconds())/n, formatProcCPU(v.cpu[c][i], n))
		}
	}
}

func seedEscrows(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// 1000 escrows over 20 teams, as a CRM spreads its rows; the writers of
	// one escrow wait for each other's row locks, as they would without
	// capture.
	_, err = conn.Exec(ctx, `insert into teams (id, name) select g, 'Team ' || g from generate_series(3, 20) g;
		insert into escrows (id, team_id, property_address, city, state, zip_code, purchase_price, notes)
		select g, 1 + g % 20, g || ' Bench St', 'Austin', 'TX', '78701', 300000, repeat('n', 200)
		from generate_series(1, 1000) g`)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "vacuum analyze escrows")
	return err
}

// pgbench runs script for seconds with clients connections and returns its
// tps; a non-empty cpus runs it under taskset -c cpus.
func pgbench(ctx context.Context, bin string, pg *pgembed.Server, db, script string, clients, seconds int, cpus string) (float64, error) {
	args := []string{"-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(2, clients)),
		"-T", strconv.Itoa(seconds), "-f", script, "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port()), "-U", "postgres", db}
	name := filepath.Join(bin, "pgbench")
	if cpus != "" {
		args = append([]string{"-c", cpus, name}, args...)
		name = "taskset"
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, errors.New("pgbench printed no tps line:\n" + string(out))
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// intList parses a comma-separated list of positive integers.
func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}
