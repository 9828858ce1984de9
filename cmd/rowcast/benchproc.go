package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay/pgtest/pgembed"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux this runs on).
const clockTicks = 100

// postgresPIDs returns the postmaster's pid (from postmaster.pid in the
// server's data directory) followed by the pids of all its children.
func postgresPIDs(pg *pgembed.Server) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(pg.Dir(), "data", "postmaster.pid"))
	if err != nil {
		return nil, fmt.Errorf("postgres pids: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	master, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return nil, fmt.Errorf("postgres pids: postmaster.pid: %w", err)
	}
	pids := []int{master}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("postgres pids: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := procStat(pid); err == nil && st.ppid == master {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

type procStatFields struct {
	ppid  int
	ticks int64 // utime + stime
}

// procStat reads the parent pid and the user and system CPU ticks of pid.
func procStat(pid int) (procStatFields, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStatFields{}, err
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start with field 3, the state.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStatFields{}, fmt.Errorf("proc stat %d: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStatFields{}, fmt.Errorf("proc stat %d: %d fields", pid, len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return procStatFields{ppid: ppid, ticks: utime + stime}, nil
}

// cpuSplit parses a --relay-cpus list such as "1" or "2,3" and returns it
// with its complement among the CPUs 0..NumCPU-1, as taskset lists. The
// complement must not be empty.
func cpuSplit(relay string) (relayCPUs, others string, err error) {
	in := map[int]bool{}
	for _, s := range strings.Split(relay, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n >= runtime.NumCPU() {
			return "", "", fmt.Errorf("relay cpus %q: %q is not a CPU of 0..%d", relay, s, runtime.NumCPU()-1)
		}
		in[n] = true
	}
	var a, b []string
	for n := range runtime.NumCPU() {
		if in[n] {
			a = append(a, strconv.Itoa(n))
		} else {
			b = append(b, strconv.Itoa(n))
		}
	}
	if len(b) == 0 {
		return "", "", fmt.Errorf("relay cpus %q: no CPU left for PostgreSQL", relay)
	}
	return strings.Join(a, ","), strings.Join(b, ","), nil
}

// pinProcess sets the CPU affinity of every thread of pid with taskset.
// Threads and processes started later by a pinned one inherit it.
func pinProcess(ctx context.Context, pid int, cpus string) error {
	out, err := exec.CommandContext(ctx, "taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset %d to %s: %w: %s", pid, cpus, err, bytes.TrimSpace(out))
	}
	return nil
}

// pinPostgres pins the postmaster and its children to cpus; backends forked
// later inherit the postmaster's affinity.
func pinPostgres(ctx context.Context, pg *pgembed.Server, cpus string) error {
	pids, err := postgresPIDs(pg)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := pinProcess(ctx, pid, cpus); err != nil {
			return fmt.Errorf("pin postgres: %w", err)
		}
	}
	return nil
}

// loadAverage returns the 1-minute load average from /proc/loadavg, for
// benchmarks to print beside their figures: on a shared machine a load above
// the CPU count means other work ran during the measurement.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

// pgProc is one PostgreSQL process: what it is and its CPU ticks so far.
type pgProc struct {
	label string
	ticks int64
}

// querier is what postgresProcs asks pg_stat_activity with (a *pgx.Conn or
// a *pgxpool.Pool).
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// postgresProcs reads the CPU ticks of each of the server's processes,
// labelled by application_name ("rowcast reader", "pgbench", …), or by
// backend_type where that is empty ("client backend", "walwriter", …);
// processes pg_stat_activity does not list (the postmaster, its logger)
// are "other".
func postgresProcs(ctx context.Context, q querier, pg *pgembed.Server) (map[int]pgProc, error) {
	rows, err := q.Query(ctx, "select pid, coalesce(nullif(application_name, ''), backend_type, '') from pg_stat_activity")
	if err != nil {
		return nil, fmt.Errorf("postgres processes: %w", err)
	}
	labels := map[int]string{}
	var pid int
	var label string
	if _, err := pgx.ForEachRow(rows, []any{&pid, &label}, func() error { labels[pid] = label; return nil }); err != nil {
		return nil, fmt.Errorf("postgres processes: %w", err)
	}
	pids, err := postgresPIDs(pg)
	if err != nil {
		return nil, err
	}
	out := make(map[int]pgProc, len(pids))
	for _, pid := range pids {
		st, err := procStat(pid)
		if err != nil {
			continue // gone
		}
		l, ok := labels[pid]
		if !ok {
			l = "other"
		}
		out[pid] = pgProc{label: l, ticks: st.ticks}
	}
	return out, nil
}

// procCPU returns, per label, the CPU time the processes used from before
// to after. A process only in after started in between and counts from
// zero; one only in before ended in between and is not counted (sample
// more often than processes come and go: procSampler).
func procCPU(before, after map[int]pgProc) map[string]time.Duration {
	out := map[string]time.Duration{}
	for pid, a := range after {
		out[a.label] += time.Duration(a.ticks-before[pid].ticks) * time.Second / clockTicks
	}
	return out
}

// procSampler reads the server's processes every interval until stop, so
// that processes that end before stop (pgbench's connections) count up to
// their last reading. Its own connection is labelled "rowcast bench".
type procSampler struct {
	first, last map[int]pgProc
	quit, done  chan struct{}
	err         error
}

// startProcSampler takes the first reading and starts sampling; stop ends
// it, takes a last reading and returns the CPU time per label in between.
// Readings are never cancelled half-way (pgx closes a connection whose
// query is cancelled): stop waits for the one under way.
func startProcSampler(ctx context.Context, pg *pgembed.Server, url string, interval time.Duration) (*procSampler, error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cc.RuntimeParams["application_name"] = "rowcast bench"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("process sampler: %w", err)
	}
	first, err := postgresProcs(ctx, conn, pg)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	s := &procSampler{first: first, last: maps.Clone(first), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer conn.Close(context.WithoutCancel(ctx))
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				s.read(ctx, conn, pg) // the last reading, after the measured work
				return
			case <-ctx.Done():
				return
			case <-t.C:
				s.read(ctx, conn, pg)
			}
		}
	}()
	return s, nil
}

func (s *procSampler) read(ctx context.Context, conn *pgx.Conn, pg *pgembed.Server) {
	now, err := postgresProcs(ctx, conn, pg)
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	mergeProcs(s.last, now)
}

// mergeProcs records the reading now in last. A backend that is ending has
// left pg_stat_activity already ("other" now): it keeps the label it had.
func mergeProcs(last, now map[int]pgProc) {
	for pid, p := range now {
		if old, ok := last[pid]; ok && p.label == "other" {
			p.label = old.label
		}
		last[pid] = p
	}
}

// stop ends the sampling and returns the CPU time per label since start.
func (s *procSampler) stop() (map[string]time.Duration, error) {
	close(s.quit)
	<-s.done
	return procCPU(s.first, s.last), s.err
}

// formatProcCPU prints per-label CPU time divided by n (transactions or
// changes) in µs, largest first, leaving out labels under 1 µs.
func formatProcCPU(split map[string]time.Duration, n float64) string {
	labels := slices.Collect(maps.Keys(split))
	slices.SortFunc(labels, func(a, b string) int { return cmp.Or(cmp.Compare(split[b], split[a]), strings.Compare(a, b)) })
	var parts []string
	for _, l := range labels {
		if us := float64(split[l].Microseconds()) / n; us >= 1 {
			parts = append(parts, fmt.Sprintf("%s %.0f", l, us))
		}
	}
	return strings.Join(parts, ", ")
}
