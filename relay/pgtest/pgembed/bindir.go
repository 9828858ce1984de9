package pgembed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// EnvBinDir names the environment variable that, when set, is the only place
// BinDir looks for the PostgreSQL server binaries.
const EnvBinDir = "ROWCAST_PG_BINDIR"

// NotFoundError is returned (possibly wrapped) by BinDir and Start when no
// PostgreSQL server binaries are installed. Callers tell "not installed" from
// "installed but broken" with errors.As.
type NotFoundError struct {
	// Searched lists the places that were looked at, in order.
	Searched []string
}

// Error says where BinDir looked and how to install PostgreSQL.
func (e *NotFoundError) Error() string {
	return "pgembed: no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in " +
		strings.Join(e.Searched, ", ") +
		"; install them with `apt-get install postgresql` (Debian/Ubuntu) or set " +
		EnvBinDir + " to the directory that holds initdb"
}

// BinDir returns the directory holding initdb, pg_ctl and postgres. It looks,
// in order, at $ROWCAST_PG_BINDIR (and only there when it is set), the
// directory of initdb found on PATH (symlinks resolved), `pg_config --bindir`,
// and the newest /usr/lib/postgresql/*/bin. When nothing is found the error is
// a *NotFoundError; a set but unusable $ROWCAST_PG_BINDIR is a plain error.
func BinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		if err := checkBinDir(d); err != nil {
			return "", fmt.Errorf("pgembed: %s=%s: %w", EnvBinDir, d, err)
		}
		return d, nil
	}

	var searched []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		d := filepath.Dir(p)
		if checkBinDir(d) == nil {
			return d, nil
		}
		searched = append(searched, d)
	} else {
		searched = append(searched, "$PATH")
	}

	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if d != "" && checkBinDir(d) == nil {
			return d, nil
		}
		searched = append(searched, d+" (pg_config --bindir)")
	} else {
		searched = append(searched, "pg_config --bindir")
	}

	const pattern = "/usr/lib/postgresql/*/bin"
	if d := newestLibDir(pattern); d != "" {
		return d, nil
	}
	searched = append(searched, pattern)
	return "", &NotFoundError{Searched: searched}
}

// checkBinDir reports whether dir holds executable initdb, pg_ctl and
// postgres files.
func checkBinDir(dir string) error {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("check binaries: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("check binaries: %s is not an executable file", filepath.Join(dir, name))
		}
	}
	return nil
}

// newestLibDir returns the directory matching pattern (whose parent is a
// version number such as "15" or "9.6") with the highest version that holds
// the binaries, or "" when none does.
func newestLibDir(pattern string) string {
	dirs, _ := filepath.Glob(pattern)
	best, bestVer := "", []int(nil)
	for _, d := range dirs {
		ver, ok := parseVersion(filepath.Base(filepath.Dir(d)))
		if !ok || checkBinDir(d) != nil {
			continue
		}
		if best == "" || versionLess(bestVer, ver) {
			best, bestVer = d, ver
		}
	}
	return best
}

// parseVersion parses a dotted number such as "15" or "9.6".
func parseVersion(s string) ([]int, bool) {
	var v []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, len(v) > 0
}

// versionLess reports whether version a sorts before version b.
func versionLess(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}
