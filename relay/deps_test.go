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

// driverPrefixes are the import paths the core must not depend on
// (DESIGN.md, "Packages": seams carry no driver types).
var driverPrefixes = []string{"github.com/jackc/", "github.com/olahol/", "github.com/gorilla/"}

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
func driverDeps(deps []string) []string {
	var bad []string
	for _, d := range deps {
		for _, p := range driverPrefixes {
			if strings.HasPrefix(d, p) {
				bad = append(bad, d)
			}
		}
	}
	return bad
}

func TestCoreImportsNoDriver(t *testing.T) {
	gobin := goCommand(t)
	for _, pkg := range []string{
		"github.com/rowcast/rowcast/relay",
		"github.com/rowcast/rowcast/relay/mapping",
	} {
		t.Run(pkg, func(t *testing.T) {
			deps := listDeps(t, gobin, pkg)
			// An empty or wrong listing must not pass for a clean one.
			if !slices.Contains(deps, pkg) || !slices.Contains(deps, "encoding/json") {
				t.Fatalf("go list -deps %s does not list the package and encoding/json: %q", pkg, deps)
			}
			if bad := driverDeps(deps); len(bad) > 0 {
				t.Errorf("%s depends on driver packages: %q", pkg, bad)
			}
		})
	}
}

// The check finds a driver where there is one: package changelog reads the
// changelog with pgx.
func TestDriverDepsDetectsDriver(t *testing.T) {
	gobin := goCommand(t)
	const pkg = "github.com/rowcast/rowcast/relay/changelog"
	deps := listDeps(t, gobin, pkg)
	if bad := driverDeps(deps); !slices.Contains(bad, "github.com/jackc/pgx/v5") {
		t.Fatalf("driverDeps of %s = %q, want github.com/jackc/pgx/v5 among them", pkg, bad)
	}
}
