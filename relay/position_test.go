package relay

import (
	"encoding/base64"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
)

// rawPosition builds a position string from its decoded form, so tests can
// present payloads Encode would never produce.
func rawPosition(raw string) string {
	return positionPrefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// samePosition compares positions treating a nil and an empty Seqs alike.
func samePosition(a, b Position) bool {
	return a.Epoch == b.Epoch && maps.Equal(a.Seqs, b.Seqs)
}

func TestPositionEncode(t *testing.T) {
	tests := []struct {
		name string
		pos  Position
		want string // the exact encoding: sorted streams, prefix, raw URL base64
	}{
		{
			name: "epoch only",
			pos:  Position{Epoch: "e1"},
			want: "p1.ZTE",
		},
		{
			name: "streams written in sorted order",
			pos:  Position{Epoch: "e1", Seqs: map[string]int64{"user:3": 5, "team:7": 3, "all": 10}},
			want: rawPosition("e1\nall=10\nteam:7=3\nuser:3=5"),
		},
		{
			name: "zero and max seq",
			pos:  Position{Epoch: "e", Seqs: map[string]int64{"b": math.MaxInt64, "a": 0}},
			want: rawPosition("e\na=0\nb=9223372036854775807"),
		},
		{
			name: "keys with unicode and punctuation",
			pos:  Position{Epoch: "9f2c-epoch", Seqs: map[string]int64{"team:é/7": 1, "team:7 8": 2}},
			want: rawPosition("9f2c-epoch\nteam:7 8=2\nteam:é/7=1"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Map iteration order is random: encode several times.
			for range 20 {
				if got := tt.pos.Encode(); got != tt.want {
					t.Fatalf("Encode() = %q, want %q", got, tt.want)
				}
			}
			got := tt.pos.Encode()
			if strings.ContainsAny(got, "+/=\n") {
				t.Errorf("Encode() = %q is not URL-safe", got)
			}
			keys := slices.Sorted(maps.Keys(tt.pos.Seqs))
			if hot := EncodePosition(tt.pos.Epoch, keys, func(i int) int64 { return tt.pos.Seqs[keys[i]] }); hot != got {
				t.Errorf("EncodePosition = %q, Encode = %q", hot, got)
			}
			back, err := ParsePosition(got)
			if err != nil {
				t.Fatalf("ParsePosition(%q): %v", got, err)
			}
			if !samePosition(back, tt.pos) {
				t.Errorf("round trip = %+v, want %+v", back, tt.pos)
			}
		})
	}
}

func TestEncodePositionUsesSeqByIndex(t *testing.T) {
	streams := []string{"all", "team:7", "user:3"}
	seqs := []int64{4, 0, 17}
	got := EncodePosition("ep", streams, func(i int) int64 { return seqs[i] })
	want := rawPosition("ep\nall=4\nteam:7=0\nuser:3=17")
	if got != want {
		t.Fatalf("EncodePosition = %q, want %q", got, want)
	}
}

// longPosition returns a valid position string of exactly n characters, or
// fails when no such encoding exists.
func longPosition(t *testing.T, n int) string {
	t.Helper()
	for k := 1; k < n; k++ {
		s := rawPosition("e\n" + strings.Repeat("s", k) + "=1")
		if len(s) == n {
			return s
		}
		if len(s) > n {
			break
		}
	}
	t.Fatalf("no position encodes to %d characters", n)
	return ""
}

func TestParsePositionLengthLimit(t *testing.T) {
	// 4096 itself is not a length raw base64 of this prefix can have.
	ok := longPosition(t, 4095)
	if _, err := ParsePosition(ok); err != nil {
		t.Fatalf("ParsePosition of %d chars: %v", len(ok), err)
	}
	long := longPosition(t, 4097)
	if _, err := ParsePosition(long); !errors.Is(err, errPosition) {
		t.Fatalf("ParsePosition of %d chars: err = %v, want %v", len(long), err, errPosition)
	}
}

func TestParsePositionRejects(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"empty string", ""},
		{"no prefix", base64.RawURLEncoding.EncodeToString([]byte("e\na=1"))},
		{"other version prefix", "p2." + base64.RawURLEncoding.EncodeToString([]byte("e\na=1"))},
		{"prefix without dot", "p1" + base64.RawURLEncoding.EncodeToString([]byte("e\na=1"))},
		{"bad base64 characters", "p1.!!!!"},
		{"standard alphabet", "p1." + base64.StdEncoding.EncodeToString([]byte("ee\n~~~=12"))}, // "ZWUKfn5+PTEy"
		{"padded base64", "p1." + base64.URLEncoding.EncodeToString([]byte("e\na=1"))},
		{"truncated base64", "p1.Z"},
		{"prefix only: empty epoch", "p1."},
		{"empty epoch with stream", rawPosition("\na=1")},
		{"stream without seq", rawPosition("e\na")},
		{"empty stream name", rawPosition("e\n=1")},
		{"trailing newline", rawPosition("e\na=1\n")},
		{"empty seq", rawPosition("e\na=")},
		{"seq not a number", rawPosition("e\na=x")},
		{"seq with fraction", rawPosition("e\na=1.5")},
		{"seq with space", rawPosition("e\na= 1")},
		{"negative seq", rawPosition("e\na=-1")},
		{"seq overflows int64", rawPosition("e\na=9223372036854775808")},
		{"duplicate stream", rawPosition("e\na=1\nb=2\na=3")},
		{"duplicate stream same seq", rawPosition("e\na=1\na=1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePosition(tt.in)
			if err == nil {
				t.Fatalf("ParsePosition(%q) = %+v, want error", tt.in, p)
			}
			if !errors.Is(err, errPosition) {
				t.Errorf("ParsePosition(%q) error %v does not wrap errPosition", tt.in, err)
			}
			if p.Epoch != "" || p.Seqs != nil {
				t.Errorf("ParsePosition(%q) returned %+v with its error", tt.in, p)
			}
		})
	}
}

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{
		"p1.ZTE",
		rawPosition("e1\nall=10\nteam:7=3\nuser:3=5"),
		rawPosition("e\na=+7\nb=007"),
		rawPosition("e\na=-0"),
		rawPosition("e=x\na=1"),
		rawPosition("e\na=1\na=2"),
		rawPosition("e\na=b=1"),
		rawPosition(""),
		"p1.",
		"p1.!!",
		"",
		"p1.ZT\nE",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			if !errors.Is(err, errPosition) {
				t.Fatalf("ParsePosition(%q) error %v does not wrap errPosition", s, err)
			}
			return
		}
		if p.Epoch == "" {
			t.Fatalf("ParsePosition(%q) accepted an empty epoch", s)
		}
		for k, v := range p.Seqs {
			if k == "" || v < 0 {
				t.Fatalf("ParsePosition(%q) accepted stream %q seq %d", s, k, v)
			}
		}
		enc := p.Encode()
		back, err := ParsePosition(enc)
		if err != nil {
			t.Fatalf("ParsePosition(%q) = %+v, but its encoding %q does not parse: %v", s, p, enc, err)
		}
		if !samePosition(back, p) {
			t.Fatalf("ParsePosition(%q) = %+v, re-encoded %q parses to %+v", s, p, enc, back)
		}
		if again := back.Encode(); again != enc {
			t.Fatalf("encoding is not stable: %q then %q", enc, again)
		}
	})
}
