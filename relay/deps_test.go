package relay_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// module is this module's import path.
const module = "github.com/rowcast/rowcast"

// driverPrefixes are the import paths the core must not depend on
// (DESIGN.md, "Packages": seams carry no driver types).
var driverPrefixes = []string{"github.com/jackc/", "github.com/olahol/", "github.com/gorilla/"}

// configPrefixes are the configuration packages: only config reads
// configuration, and only the wiring in cmd passes it on.
var configPrefixes = []string{module + "/config", "github.com/spf13/viper"}

// capturePrefix is every capture package.
const capturePrefix = module + "/relay/capture"

// goCommand returns the go command that built this test, or one on PATH.
func goCommand(t *testing.T) string {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if runtime.GOOS == "windows" {
		gobin += ".exe"
	}
	if _, err := os.Stat(gobin); err == nil {
		return gobin
	}
	path, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found (GOROOT %s, PATH): %v", runtime.GOROOT(), err)
	}
	return path
}

// listDeps returns the packages pkg depends on, itself included.
func listDeps(t *testing.T, gobin, pkg string) []string {
	t.Helper()
	cmd := exec.Command(gobin, "list", "-deps", pkg)
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, exit.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// driverDeps returns the dependencies that are driver packages.
func driverDeps(deps []string) []string { return matching(deps, driverPrefixes) }

// matching returns the packages in deps that are one of prefixes or below
// one ("github.com/jackc/" and "github.com/jackc" both match
// github.com/jackc/pgx/v5; module+"/config" does not match a sibling
// module+"/configx").
func matching(deps, prefixes []string) []string {
	var bad []string
	for _, d := range deps {
		for _, p := range prefixes {
			p = strings.TrimSuffix(p, "/")
			if d == p || strings.HasPrefix(d, p+"/") {
				bad = append(bad, d)
				break
			}
		}
	}
	return bad
}

// listPackages returns the packages a go list pattern names.
func listPackages(t *testing.T, gobin, pattern string) []string {
	t.Helper()
	out, err := exec.Command(gobin, "list", pattern).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list %s: %v\n%s", pattern, err, exit.Stderr)
		}
		t.Fatalf("go list %s: %v", pattern, err)
	}
	return strings.Fields(string(out))
}

// corePackages are the core: domain types and seams, mapping, fan-out.
var corePackages = []string{module + "/relay", module + "/relay/mapping", module + "/relay/hub"}

// The core imports no driver and takes no configuration.
func TestCoreImportsNoDriver(t *testing.T) {
	gobin := goCommand(t)
	for _, pkg := range corePackages {
		t.Run(pkg, func(t *testing.T) {
			deps := listDeps(t, gobin, pkg)
			// An empty or wrong listing must not pass for a clean one.
			if !slices.Contains(deps, pkg) || !slices.Contains(deps, "encoding/json") {
				t.Fatalf("go list -deps %s does not list the package and encoding/json: %q", pkg, deps)
			}
			if bad := driverDeps(deps); len(bad) > 0 {
				t.Errorf("%s depends on driver packages: %q", pkg, bad)
			}
			if bad := matching(deps, configPrefixes); len(bad) > 0 {
				t.Errorf("%s depends on configuration packages: %q (the core takes no configuration)", pkg, bad)
			}
		})
	}
}

// layerRules are the dependencies the layout forbids beyond the core's
// (README, "Packages"). Each binds every package a go list pattern names,
// so a package added under it is bound too.
var layerRules = []struct {
	name    string
	pattern string   // the packages bound
	forbid  []string // what none of them may depend on, directly or not
}{
	{"capture takes options, not configuration, and needs no installer",
		module + "/relay/capture/...", append(slices.Clone(configPrefixes), module+"/triggers")},
	{"history reads the changelog through its one owner (relay.ChangeHistory), never through a capture, a driver or configuration",
		module + "/relay/history/...", slices.Concat([]string{capturePrefix}, driverPrefixes, configPrefixes)},
	{"transports know no capture",
		module + "/relay/transport/...", []string{capturePrefix}},
}

func TestLayerRules(t *testing.T) {
	gobin := goCommand(t)
	for _, r := range layerRules {
		t.Run(r.name, func(t *testing.T) {
			pkgs := listPackages(t, gobin, r.pattern)
			if len(pkgs) == 0 {
				t.Fatalf("go list %s names no package", r.pattern)
			}
			for _, pkg := range pkgs {
				deps := listDeps(t, gobin, pkg)
				if !slices.Contains(deps, pkg) {
					t.Fatalf("go list -deps %s does not list the package: %q", pkg, deps)
				}
				if bad := matching(deps, r.forbid); len(bad) > 0 {
					t.Errorf("%s depends on %q: %s", pkg, bad, r.name)
				}
			}
		})
	}
}

// mappingPrefix is the mapper: events reach transports already mapped,
// live from the hub and replayed from relay.History.
const mappingPrefix = module + "/relay/mapping"

// A transport needs only the hub, history and auth: it imports neither the
// mapper nor a capture.
func TestTransportsImportNoMapping(t *testing.T) {
	gobin := goCommand(t)
	pkgs := listPackages(t, gobin, module+"/relay/transport/...")
	if len(pkgs) == 0 {
		t.Fatalf("go list %s/relay/transport/... names no package", module)
	}
	for _, pkg := range pkgs {
		deps := listDeps(t, gobin, pkg)
		if !slices.Contains(deps, pkg) {
			t.Fatalf("go list -deps %s does not list the package: %q", pkg, deps)
		}
		if bad := matching(deps, []string{mappingPrefix, capturePrefix}); len(bad) > 0 {
			t.Errorf("%s depends on %q: events reach transports already mapped, and transports know no capture", pkg, bad)
		}
	}
}

// The check finds a driver where there is one: package changelog reads the
// changelog with pgx.
func TestDriverDepsDetectsDriver(t *testing.T) {
	gobin := goCommand(t)
	const pkg = "github.com/rowcast/rowcast/relay/capture/changelog"
	deps := listDeps(t, gobin, pkg)
	if bad := driverDeps(deps); !slices.Contains(bad, "github.com/jackc/pgx/v5") {
		t.Fatalf("driverDeps of %s = %q, want github.com/jackc/pgx/v5 among them", pkg, bad)
	}
}

// The checks find what they forbid where it is: the server assembles
// everything, so it depends on config, viper, triggers and a capture.
func TestMatchingDetectsForbidden(t *testing.T) {
	gobin := goCommand(t)
	const pkg = module + "/cmd/rowcast/internal/server"
	deps := listDeps(t, gobin, pkg)
	forbid := append(slices.Clone(configPrefixes), module+"/triggers", capturePrefix)
	bad := matching(deps, forbid)
	for _, want := range []string{module + "/config", "github.com/spf13/viper", module + "/triggers", capturePrefix + "/logical"} {
		if !slices.Contains(bad, want) {
			t.Errorf("matching of %s = %q, want %s among them", pkg, bad, want)
		}
	}
	if bad := matching(deps, []string{mappingPrefix}); !slices.Contains(bad, mappingPrefix) {
		t.Errorf("matching of %s = %q, want %s among them", pkg, bad, mappingPrefix)
	}
	if bad := matching([]string{module + "/configx", module + "/relay/captured"}, forbid); len(bad) > 0 {
		t.Errorf("matching took siblings for the forbidden packages: %q", bad)
	}
}
