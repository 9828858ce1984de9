package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/triggers"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs, cf := newFlagSet("serve", stderr)
	if fs.Parse(args) != nil {
		return exitUsage
	}
	cfg, code := cf.load(stderr)
	if cfg == nil {
		return code
	}
	log := newLogger(cfg, stderr)
	for _, w := range cfg.Database.PoolerWarnings() {
		log.Warn(w)
	}
	problems, err := checkDatabase(ctx, cfg)
	var unreachable *pgconn.ConnectError
	switch {
	case errors.As(err, &unreachable):
		// Start anyway and wait for it, as a running relay does when it
		// loses the database: readiness says why meanwhile.
		log.Warn("the database is unreachable; the relay waits for it", "err", err)
	case err != nil || len(problems) > 0:
		if err != nil {
			problems = append(problems, config.Problem{Msg: err.Error()})
		}
		printProblems(stderr, &config.Problems{List: problems})
		return exitUsage
	}
	r, err := server.New(server.Options{Config: cfg, Logger: log, Version: version()})
	if err != nil {
		fmt.Fprintf(stderr, "rowcast: %v\n", err)
		return exitFailed
	}
	if err := r.Run(ctx); err != nil {
		var drift *server.DriftError
		var setup *server.SetupError
		if errors.As(err, &drift) || errors.As(err, &setup) {
			fmt.Fprintf(stderr, "rowcast: %v\n", err)
			return exitUsage
		}
		log.Error("relay stopped", "err", err)
		return exitFailed
	}
	log.Info("relay drained and stopped")
	return exitOK
}

// connectError returns a failed connection's error without the attempts
// that failed only because the server does not speak TLS: with the default
// sslmode=prefer, pgx tries TLS first and lists that refusal before the
// real cause. pgconn gives the refusal no type, so it is recognised by its
// text.
func connectError(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err
	}
	joined, ok := errors.Unwrap(ce).(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	var kept []string
	attempts := joined.Unwrap()
	for _, a := range attempts {
		if !strings.HasSuffix(a.Error(), "tls error: server refused TLS connection") {
			kept = append(kept, a.Error())
		}
	}
	if len(kept) == 0 || len(kept) == len(attempts) {
		return err
	}
	return &cleanError{msg: fmt.Sprintf("user=%s database=%s: %s", ce.Config.User, ce.Config.Database, strings.Join(kept, "; ")), err: err}
}

// cleanError is an error with a message of its own in front of the
// original, which errors.As still finds.
type cleanError struct {
	msg string
	err error
}

func (e *cleanError) Error() string { return e.msg }
func (e *cleanError) Unwrap() error { return e.err }

// captureKey names the configuration key of the URL the checks and
// install connect with (config.Database.CaptureURL).
func captureKey(cfg *config.Config) string {
	if cfg.Database.ListenURL != "" {
		return "database.listen_url"
	}
	return "database.url"
}

// checkDatabase reports, reading only, what the database lacks for the
// configuration: configured tables and columns, and in logical mode what
// triggers.Check reports (wal_level, the role's REPLICATION right, replica
// identity indexes, a slot name taken by another database); err is set
// when the database cannot be reached.
func checkDatabase(ctx context.Context, cfg *config.Config) ([]config.Problem, error) {
	conn, err := pgx.Connect(ctx, cfg.Database.CaptureURL())
	if err != nil {
		return nil, fmt.Errorf("%s: cannot connect: %w", captureKey(cfg), connectError(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	problems, err := triggers.CheckTables(ctx, conn, cfg.CapturedTables())
	// The entry after the configured tables is auth.membership's.
	member := fmt.Sprintf("tables[%d]", len(cfg.Tables))
	for i, p := range problems {
		if rest, ok := strings.CutPrefix(p.Key, member); ok {
			problems[i].Key = "auth.membership" + strings.Replace(rest, ".id_columns", "", 1)
		}
	}
	if err != nil || cfg.Capture.Mode != config.ModeLogical {
		return problems, err
	}
	plan, err := triggers.Prepare(ctx, conn, cfg)
	if err != nil {
		return problems, err
	}
	more, err := triggers.Check(ctx, conn, plan)
	for _, m := range more {
		problems = append(problems, config.Problem{Msg: m})
	}
	return problems, err
}

func runInstall(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("install", stderr)
	dry := fs.Bool("dry-run", false, "print the SQL instead of running it")
	remove := fs.Bool("remove", false, "remove the capture triggers and the rowcast schema (its history too)")
	if fs.Parse(args) != nil {
		return exitUsage
	}
	cfg, code := cf.load(stderr)
	if cfg == nil {
		return code
	}
	if !*remove {
		// The same read-only checks with --dry-run: a script printed for a
		// database that cannot take it would only fail later.
		if problems, err := checkDatabase(ctx, cfg); err != nil || len(problems) > 0 {
			if err != nil {
				problems = append(problems, config.Problem{Msg: err.Error()})
			}
			printProblems(stderr, &config.Problems{List: problems})
			return exitUsage
		}
	}
	conn, err := pgx.Connect(ctx, cfg.Database.CaptureURL())
	if err != nil {
		fmt.Fprintf(stderr, "rowcast: %s: cannot connect: %v\n", captureKey(cfg), connectError(err))
		return exitFailed
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var done []string
	if *remove {
		if *dry {
			// The check remove makes before it drops anything.
			who, err := triggers.SlotInUse(ctx, conn, cfg.Capture.Slot)
			if err != nil {
				fmt.Fprintf(stderr, "rowcast: %v\n", err)
				return exitFailed
			}
			if who != "" {
				fmt.Fprintf(stderr, "rowcast: replication slot %s is in use: %s; stop every relay first: install --remove would remove nothing\n",
					cfg.Capture.Slot, who)
				return exitFailed
			}
			fmt.Fprintf(stdout, "-- would drop the rowcast_capture and rowcast_truncate triggers from every table,\n"+
				"-- replication slot %[2]s (refusing, before anything, while a relay or another process uses it) and\n"+
				"-- publication %[1]s if they exist, setting the published tables' replica identity back to DEFAULT, then:\n"+
				"DROP SCHEMA IF EXISTS rowcast CASCADE;\n",
				cfg.Capture.Publication, cfg.Capture.Slot)
			return exitOK
		}
		done, err = triggers.Remove(ctx, conn, cfg.Capture.Slot, cfg.Capture.Publication)
	} else {
		var plan *triggers.Plan
		plan, err = triggers.Prepare(ctx, conn, cfg)
		if err == nil && *dry {
			fmt.Fprint(stdout, "BEGIN;\n"+plan.SQL()+"COMMIT;\n")
			if plan.Logical {
				fmt.Fprint(stdout, "-- then: select pg_create_logical_replication_slot('"+cfg.Capture.Slot+"', 'pgoutput');\n")
			}
			return exitOK
		}
		if err == nil {
			done, err = triggers.Install(ctx, conn, plan)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "rowcast: %v\n", err)
		return exitFailed
	}
	for _, line := range done {
		fmt.Fprintln(stdout, line)
	}
	return exitOK
}

func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "check" && args[0] != "print") {
		fmt.Fprintln(stderr, "usage: rowcast config check|print [--config FILE] [--set key=value]")
		return exitUsage
	}
	fs, cf := newFlagSet("config "+args[0], stderr)
	if fs.Parse(args[1:]) != nil {
		return exitUsage
	}
	if args[0] == "print" {
		cfg, code := cf.load(stderr)
		if cfg == nil {
			return code
		}
		if err := cfg.WriteYAML(stdout); err != nil {
			fmt.Fprintf(stderr, "rowcast: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	// check reports the configuration's problems and the database's at once.
	cfg, err := config.Load(config.LoadOptions{File: cf.file, Env: os.Environ(), Set: cf.set})
	var found *config.Problems
	if err != nil && !errors.As(err, &found) {
		printProblems(stderr, err)
		return exitUsage
	}
	if found == nil {
		found = &config.Problems{}
	}
	found.List = append(found.List, authProblems(ctx, cfg, found)...)
	found.List = append(found.List, databaseProblems(ctx, cfg, found)...)
	if len(found.List) > 0 {
		printProblems(stderr, found)
		return exitUsage
	}
	for _, w := range cfg.Database.PoolerWarnings() {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if drift := installedDrift(ctx, cfg); len(drift) > 0 {
		fmt.Fprintln(stdout, "note: the installed capture triggers differ from this configuration; `rowcast install` will update them:")
		for _, d := range drift {
			fmt.Fprintln(stdout, "  -", d)
		}
	}
	fmt.Fprintln(stdout, "configuration ok")
	return exitOK
}

// authProblems reports what keeps the auth keys of a configuration in
// which Load found the problems known from verifying tokens: a key file
// that does not parse, algorithms without keys, a key set that cannot be
// fetched or holds no key. It checks nothing when an auth key has a
// problem already.
func authProblems(ctx context.Context, cfg *config.Config, known *config.Problems) []config.Problem {
	if known.About("auth") {
		return nil
	}
	_, jwks, err := server.Verifier(cfg.Auth, auth.JWKSOptions{})
	if err != nil {
		return []config.Problem{{Msg: err.Error()}}
	}
	if jwks == nil {
		return nil
	}
	fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := jwks.Fetch(fctx); err != nil {
		return []config.Problem{{Key: "auth.jwks_url", Msg: err.Error()}}
	}
	if jwks.Keys() == 0 {
		return []config.Problem{{Key: "auth.jwks_url", Msg: "holds no signing key the relay accepts (RSA of 2048 bits or more, ECDSA P-256/384/521, Ed25519)"}}
	}
	return nil
}

// databaseProblems reports what the database lacks for a configuration in
// which Load found the problems known: it checks nothing when database.url
// has a problem, and skips the table entries that have one.
func databaseProblems(ctx context.Context, cfg *config.Config, known *config.Problems) []config.Problem {
	if known.About("database.url") {
		return nil
	}
	sub := *cfg
	sub.Tables = nil
	var index []int // index in cfg.Tables of each entry of sub.Tables
	for i, t := range cfg.Tables {
		if !known.About(fmt.Sprintf("tables[%d]", i)) {
			sub.Tables = append(sub.Tables, t)
			index = append(index, i)
		}
	}
	problems, err := checkDatabase(ctx, &sub)
	for n, p := range problems {
		// Keys name entries of sub.Tables; name those of cfg.Tables.
		var j int
		if _, scanErr := fmt.Sscanf(p.Key, "tables[%d]", &j); scanErr == nil && j < len(index) {
			problems[n].Key = fmt.Sprintf("tables[%d]", index[j]) + p.Key[strings.Index(p.Key, "]")+1:]
		}
	}
	if err != nil {
		problems = append(problems, config.Problem{Msg: err.Error()})
	}
	return problems
}

func installedDrift(ctx context.Context, cfg *config.Config) []string {
	conn, err := pgx.Connect(ctx, cfg.Database.CaptureURL())
	if err != nil {
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	plan, err := triggers.Prepare(ctx, conn, cfg)
	if err != nil {
		return []string{err.Error()}
	}
	drift, err := triggers.Verify(ctx, conn, plan)
	if err != nil {
		return []string{err.Error()}
	}
	return drift
}
