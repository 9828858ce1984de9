package server_test

import "testing"

// TestFaultOracle: the oracle (faultSession.check) accepts what a correct
// relay may send and rejects gaps, repeats and misorders, also in the
// window after a resync's refetch, where versions the refetch already
// covers may still arrive (once each, in order).
func TestFaultOracle(t *testing.T) {
	for _, c := range []struct {
		name  string
		seen  []int
		final int
		ok    bool
	}{
		{"contiguous", []int{2, 3, 4}, 4, true},
		{"gap", []int{2, 4}, 4, false},
		{"repeat", []int{2, 3, 3, 4}, 4, false},
		{"step back", []int{2, 3, 2, 4}, 4, false},
		{"short", []int{2, 3}, 4, false},
		{"resync then on", []int{2, 0, -5, 6, 7}, 7, true},
		{"resync, covered ones in order", []int{2, 0, -5, 4, 5, 6}, 6, true},
		{"resync, covered ones misordered", []int{2, 0, -5, 4, 3, 6}, 6, false},
		{"resync, covered one repeated", []int{2, 0, -5, 4, 4, 6}, 6, false},
		{"resync, then a gap", []int{2, 0, -5, 7}, 7, false},
		{"two resyncs", []int{2, 0, -5, 0, -8, 7, 9}, 9, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &faultSession{rows: []string{"1"}, seen: map[string][]int{"1": c.seen}}
			err := s.check(map[string]int{"1": c.final})
			if (err == nil) != c.ok {
				t.Fatalf("check(%v, final %d): %v, want ok %v", c.seen, c.final, err, c.ok)
			}
		})
	}
}
