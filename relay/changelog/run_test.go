package changelog

import "testing"

// TestRunRestartedSince: a new start time (a restarted or another server)
// and a new boot token (crash recovery, a promoted standby) each mean the
// server may have forgotten commits; the first connection means nothing.
func TestRunRestartedSince(t *testing.T) {
	a := run{started: "2026-01-01 00:00:00+00", boot: "b1"}
	for _, tc := range []struct {
		name      string
		now, prev run
		want      bool
	}{
		{"first connection", a, run{}, false},
		{"same run", a, a, false},
		{"server restarted", run{started: "2026-01-02 00:00:00+00", boot: "b1"}, a, true},
		{"crash recovery, postmaster kept", run{started: a.started, boot: "b2"}, a, true},
		{"another server", run{started: "2026-01-02 00:00:00+00", boot: "b2"}, a, true},
	} {
		if got := tc.now.restartedSince(tc.prev); got != tc.want {
			t.Errorf("%s: restartedSince = %v, want %v", tc.name, got, tc.want)
		}
	}
}
