package jsonstr

import (
	"encoding/json"
	"testing"
)

func TestAppend(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "abc", `"abc"`},
		{"empty", "", `""`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"named controls", "a\nb\rc\td", `"a\nb\rc\td"`},
		{"other controls", "\x00\x01\x08\x0c\x1f", `"\u0000\u0001\u0008\u000c\u001f"`},
		{"space and DEL pass", " \x7f", "\" \x7f\""},
		{"multibyte passes", "é中😀", `"é中😀"`},
		{"invalid byte", "a\xffb", `"a\ufffdb"`},
		{"each invalid byte replaced", "\xff\xfe", `"\ufffd\ufffd"`},
		{"truncated sequence", "a\xe4\xb8", `"a\ufffd\ufffd"`},
		{"surrogate half", "\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{"overlong encoding", "\xc0\xaf", `"\ufffd\ufffd"`},
		{"invalid then escape", "\xff\"", `"\ufffd\""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(Append([]byte("x"), tt.in))
			if got != "x"+tt.want {
				t.Fatalf("Append(%q) = %s, want %s", tt.in, got[1:], tt.want)
			}
			checkStringLike(t, tt.in, []byte(got[1:]))
		})
	}
}

// checkStringLike fails unless enc is a JSON string that decodes to what
// encoding/json's encoding of s decodes to (each invalid byte a U+FFFD).
func checkStringLike(t testing.TB, s string, enc []byte) {
	t.Helper()
	var got string
	if err := json.Unmarshal(enc, &got); err != nil {
		t.Fatalf("%s is not a JSON string: %v", enc, err)
	}
	if want := decodedLike(s); got != want {
		t.Fatalf("%s decodes to %q, want %q", enc, got, want)
	}
}

// decodedLike returns s as a JSON round trip through encoding/json yields it.
func decodedLike(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}
