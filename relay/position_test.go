package relay

import (
	"encoding/base64"
	"errors"
	"math"
	"strings"
	"testing"
)

// rawPosition builds a position string from its decoded form, so tests can
// present payloads Encode would never produce.
func rawPosition(raw string) string {
	return positionPrefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func TestPositionEncode(t *testing.T) {
	tests := []struct {
		name string
		pos  Position
		want string // the exact encoding: prefix, raw URL base64
	}{
		{"end of a tick", Position{Epoch: "e1", Pos: TickEnd(7)}, rawPosition("e1\n7")},
		{"inside a tick", Position{Epoch: "e1", Pos: Pos{Tick: 7, Tx: 12, ID: 10}}, rawPosition("e1\n7.12.10")},
		{"zero", Position{Epoch: "e", Pos: Pos{}}, rawPosition("e\n0.0.0")},
		{"tick zero end", Position{Epoch: "e", Pos: TickEnd(0)}, rawPosition("e\n0")},
		{"max tick", Position{Epoch: "9f2c-epoch", Pos: TickEnd(math.MaxInt64)}, rawPosition("9f2c-epoch\n9223372036854775807")},
		{"max tx, not max id", Position{Epoch: "e", Pos: Pos{Tick: 1, Tx: math.MaxInt64, ID: 3}}, rawPosition("e\n1.9223372036854775807.3")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.pos.Encode()
			if got != tt.want {
				t.Fatalf("Encode() = %q, want %q", got, tt.want)
			}
			if strings.ContainsAny(got, "+/=\n") {
				t.Errorf("Encode() = %q is not URL-safe", got)
			}
			if hot := EncodePosition(tt.pos.Epoch, tt.pos.Pos); hot != got {
				t.Errorf("EncodePosition = %q, Encode = %q", hot, got)
			}
			back, err := ParsePosition(got)
			if err != nil {
				t.Fatalf("ParsePosition(%q): %v", got, err)
			}
			if back != tt.pos {
				t.Errorf("round trip = %+v, want %+v", back, tt.pos)
			}
		})
	}
}

func TestPosCompare(t *testing.T) {
	tests := []struct {
		a, b Pos
		want int
	}{
		{Pos{1, 5, 5}, Pos{2, 0, 0}, -1},
		{Pos{2, 5, 1}, Pos{2, 6, 0}, -1},
		{Pos{2, 6, 1}, Pos{2, 6, 2}, -1},
		{Pos{2, 6, 2}, Pos{2, 6, 2}, 0},
		{TickEnd(2), Pos{2, 1 << 40, 1 << 40}, 1},
		{TickEnd(2), Pos{3, 0, 0}, -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%+v.Compare(%+v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%+v.Compare(%+v) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
	if MaxPos(Pos{1, 2, 3}, Pos{1, 2, 4}) != (Pos{1, 2, 4}) || MaxPos(TickEnd(3), Pos{1, 2, 4}) != TickEnd(3) {
		t.Error("MaxPos does not return the later position")
	}
}

func TestParsePositionLengthLimit(t *testing.T) {
	ok := rawPosition(strings.Repeat("e", 300) + "\n1")
	if _, err := ParsePosition(ok); err != nil {
		t.Fatalf("ParsePosition of %d chars: %v", len(ok), err)
	}
	long := rawPosition(strings.Repeat("e", 400) + "\n1")
	if _, err := ParsePosition(long); !errors.Is(err, errPosition) {
		t.Fatalf("ParsePosition of %d chars: err = %v, want %v", len(long), err, errPosition)
	}
}

func TestParsePositionRejects(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"empty string", ""},
		{"no prefix", base64.RawURLEncoding.EncodeToString([]byte("e\n1"))},
		{"earlier per-stream version", "p1." + base64.RawURLEncoding.EncodeToString([]byte("e\nall=1"))},
		{"prefix without dot", "p2" + base64.RawURLEncoding.EncodeToString([]byte("e\n1"))},
		{"bad base64 characters", "p2.!!!!"},
		{"standard alphabet", "p2." + base64.StdEncoding.EncodeToString([]byte("ee\n~~~.12"))},
		{"padded base64", "p2." + base64.URLEncoding.EncodeToString([]byte("e\n12"))},
		{"truncated base64", "p2.Z"},
		{"prefix only", "p2."},
		{"empty epoch", rawPosition("\n1")},
		{"no place", rawPosition("e")},
		{"empty place", rawPosition("e\n")},
		{"two numbers", rawPosition("e\n1.2")},
		{"four numbers", rawPosition("e\n1.2.3.4")},
		{"empty number", rawPosition("e\n1..3")},
		{"not a number", rawPosition("e\nx")},
		{"space", rawPosition("e\n 1")},
		{"plus sign", rawPosition("e\n+1")},
		{"leading zero", rawPosition("e\n01")},
		{"negative", rawPosition("e\n1.-2.3")},
		{"overflow", rawPosition("e\n9223372036854775808")},
		{"trailing newline", rawPosition("e\n1\n")},
		{"end of tick spelled long", rawPosition("e\n1.9223372036854775807.9223372036854775807")},
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
			if p != (Position{}) {
				t.Errorf("ParsePosition(%q) returned %+v with its error", tt.in, p)
			}
		})
	}
}

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{
		rawPosition("e1\n7"),
		rawPosition("e1\n7.12.10"),
		rawPosition("e\n+7"),
		rawPosition("e\n-0"),
		rawPosition("e.x\n1.2.3"),
		rawPosition("e\n1.2.3\n4"),
		rawPosition(""),
		"p2.",
		"p2.!!",
		"",
		"p2.ZT\nE",
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
		if p.Epoch == "" || p.Pos.Tick < 0 || p.Pos.Tx < 0 || p.Pos.ID < 0 {
			t.Fatalf("ParsePosition(%q) accepted %+v", s, p)
		}
		enc := p.Encode()
		if enc != s {
			t.Fatalf("ParsePosition(%q) = %+v, which encodes as %q: one position, two spellings", s, p, enc)
		}
		back, err := ParsePosition(enc)
		if err != nil || back != p {
			t.Fatalf("ParsePosition(%q) = %+v, re-encoded %q parses to %+v, %v", s, p, enc, back, err)
		}
	})
}
