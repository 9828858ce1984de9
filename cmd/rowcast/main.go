// Command rowcast relays committed PostgreSQL row changes to authenticated
// WebSocket sessions as team-scoped events.
//
//	rowcast serve   --config rowcast.yaml    run the relay
//	rowcast install --config rowcast.yaml    install (or --remove) the capture triggers
//	rowcast config check|print               validate or show the configuration
//	rowcast demo                             a throwaway PostgreSQL with a demo CRM, and a relay on it
//	rowcast tail --token …                   watch events as a subscriber
//	rowcast bench                            measure commit → client latency
//	rowcast version
//
// main parses flags, loads the configuration, builds the logger and wires
// components; the logic lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/rowcast/rowcast/config"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `rowcast relays committed PostgreSQL row changes to WebSocket sessions.

Usage:
  rowcast serve   [--config FILE] [flags]   run the relay
  rowcast install [--config FILE] [--dry-run] [--remove]
  rowcast config check [--config FILE]      validate configuration and database; exit 2 on problems
  rowcast config print [--config FILE]      show the effective configuration, secrets hidden
  rowcast demo    [--listen ADDR]           throwaway PostgreSQL + demo CRM + relay; Ctrl-C removes it all
  rowcast tail    [--url URL] [--token JWT] watch events as a subscriber
  rowcast bench   [flags]                   measure commit → client latency on a throwaway database
  rowcast version

Every command that reads configuration takes --config FILE, and --set key=value
to override any key. Environment variables ROWCAST_<KEY> (dots as underscores),
DATABASE_URL, SENTRY_DSN, PORT (listen on :PORT) and ROWCAST_TABLES (table
names, comma-separated) override the file; flags override both.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "install":
		return runInstall(ctx, rest, stdout, stderr)
	case "config":
		return runConfig(ctx, rest, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "tail":
		return runTail(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "rowcast", version())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "rowcast: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "0.1.0-dev"
}

// configFlags are the flags every configuration-reading command shares.
type configFlags struct {
	file string
	set  setFlag
}

type setFlag map[string]string

func (s setFlag) String() string { return "" }
func (s setFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	s[k] = val
	return nil
}

func newFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *configFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := &configFlags{set: setFlag{}}
	fs.StringVar(&cf.file, "config", os.Getenv("ROWCAST_CONFIG"), "configuration `file` (YAML)")
	fs.Var(cf.set, "set", "override a configuration key: `key=value` (repeatable)")
	return fs, cf
}

// load reads the configuration; problems are printed and turned into exit 2.
func (cf *configFlags) load(stderr io.Writer) (*config.Config, int) {
	cfg, err := config.Load(config.LoadOptions{File: cf.file, Env: os.Environ(), Set: cf.set})
	if err != nil {
		printProblems(stderr, err)
		return nil, exitUsage
	}
	return cfg, exitOK
}

// benchOverrides returns what a benchmark takes of cf: --set, and --config
// only when given on the command line (a benchmark does not read
// ROWCAST_CONFIG, which names the configuration of a real relay).
func benchOverrides(fs *flag.FlagSet, cf *configFlags) *configFlags {
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	if !explicit {
		return &configFlags{set: cf.set}
	}
	return cf
}

// noOverrides refuses --config and --set given to a benchmark whose relay
// they would not configure.
func noOverrides(fs *flag.FlagSet, name string) error {
	var given []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == "set" {
			given = append(given, "--"+f.Name)
		}
	})
	if len(given) > 0 {
		return fmt.Errorf("%s does not take %s: it runs a configuration of its own", name, strings.Join(given, " or "))
	}
	return nil
}

// overlay applies --config and --set to cfg, the relay configuration a
// benchmark built (the environment is not read). The benchmark's own
// database and listen address stay: a benchmark never runs on another
// database than the throwaway one it made.
func (cf *configFlags) overlay(cfg *config.Config) (*config.Config, error) {
	if cf == nil || cf.file == "" && len(cf.set) == 0 {
		return cfg, nil
	}
	out, err := config.Overlay(*cfg, config.LoadOptions{File: cf.file, Set: cf.set})
	if err != nil {
		return nil, err
	}
	out.Database.URL, out.Listen = cfg.Database.URL, cfg.Listen
	return out, nil
}

func printProblems(w io.Writer, err error) {
	var p *config.Problems
	if errors.As(err, &p) {
		fmt.Fprintf(w, "rowcast: configuration has %d problem(s):\n", len(p.List))
		for _, line := range p.List {
			fmt.Fprintf(w, "  - %s\n", line)
		}
		return
	}
	fmt.Fprintf(w, "rowcast: %v\n", err)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
