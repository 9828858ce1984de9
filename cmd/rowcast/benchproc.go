package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

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

// postgresCPU returns the CPU time used so far by the server's processes
// alive now. A backend that exits between two readings takes its time with
// it: keep the connections of a measurement open until its second reading.
func postgresCPU(pg *pgembed.Server) (time.Duration, error) {
	pids, err := postgresPIDs(pg)
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, pid := range pids {
		if st, err := procStat(pid); err == nil {
			ticks += st.ticks
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
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
