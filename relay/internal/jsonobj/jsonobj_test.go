package jsonobj

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestWithout(t *testing.T) {
	keys := [][]byte{[]byte(`"secret"`), []byte(`"b\\c"`)}
	tests := []struct{ in, want string }{
		{`{}`, `{}`},
		{`{"a":1}`, `{"a":1}`},
		{`{"secret":null}`, `{}`},
		{`{"secret":null,"a":1}`, `{"a":1}`},
		{`{"a":1,"secret":"x","b":[1,{"secret":2}]}`, `{"a":1,"b":[1,{"secret":2}]}`},
		{`{"a":"secret","b\\c":{"x":"}"},"z":true}`, `{"a":"secret","z":true}`},
	}
	for _, tt := range tests {
		got, err := Without(nil, []byte(tt.in), keys)
		if err != nil || string(got) != tt.want {
			t.Errorf("Without(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{``, `[]`, `{"a":1`, `{"a" :1}`, `{"a":1,}`} {
		if _, err := Without(nil, []byte(bad), keys); err == nil {
			t.Errorf("Without(%q): no error", bad)
		}
	}
}

// FuzzWithout holds Without to decoding: the result is the object's
// members less the keys, each value as it was.
func FuzzWithout(f *testing.F) {
	f.Add(`{"a":1,"secret":"x","b":[1,{"secret":2}]}`)
	f.Add(`{"secret":null}`)
	keys := [][]byte{[]byte(`"secret"`)}
	f.Fuzz(func(t *testing.T, in string) {
		var want map[string]json.RawMessage
		if json.Unmarshal([]byte(in), &want) != nil {
			return
		}
		if ms, err := Members(nil, []byte(in)); err != nil || len(ms) != len(want) {
			return // not compact, or a key twice: not what capture writes
		}
		got, err := Without(nil, []byte(in), keys)
		if err != nil {
			t.Fatalf("Without(%s): %v", in, err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatalf("Without(%s) = %s: %v", in, got, err)
		}
		delete(want, "secret")
		if len(m) != len(want) {
			t.Fatalf("Without(%s) = %s: %d members, want %d", in, got, len(m), len(want))
		}
		for k, v := range want {
			if string(m[k]) != string(v) {
				t.Fatalf("Without(%s) = %s: %s is %s, want %s", in, got, k, m[k], v)
			}
		}
	})
}

// FuzzAppendJSONB holds AppendJSONB to its own output (rendering jsonb's
// text again changes nothing, as PostgreSQL's does not) and to JSON: the
// result is valid and decodes to the input's keys. The test against
// PostgreSQL itself is in package changelog.
func FuzzAppendJSONB(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1,2.50],"a":"dup"}`, `[1e+20,-0,1.5e-07]`, `{"\u00e9":"\/"}`, `"x"`, `{}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var b bytes.Buffer
		if json.Compact(&b, []byte(in)) != nil || b.Len() != len(in) {
			return // not compact JSON
		}
		got, err := AppendJSONB(nil, []byte(in))
		if err != nil {
			t.Fatalf("AppendJSONB(%s): %v", in, err)
		}
		if !json.Valid(got) {
			t.Fatalf("AppendJSONB(%s) = %s: not JSON", in, got)
		}
		again, err := AppendJSONB(nil, got)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("AppendJSONB(%s) = %s, then %s, %v", in, got, again, err)
		}
		var x, y any
		if json.Unmarshal([]byte(in), &x) == nil && json.Unmarshal(got, &y) == nil {
			if mx, ok := x.(map[string]any); ok {
				my, _ := y.(map[string]any)
				if len(mx) != len(my) {
					t.Fatalf("AppendJSONB(%s) = %s: %d keys, want %d", in, got, len(my), len(mx))
				}
			}
		}
	})
}

// TestAppendJSONBBeyondNumeric: a number numeric cannot hold (no jsonb
// holds it; a json column may) is kept as written.
func TestAppendJSONBBeyondNumeric(t *testing.T) {
	for _, n := range []string{"1e131072", "-0.0e-16383", "1e-16384", "1e99999999", "1e-000000016384"} {
		got, err := AppendJSONB(nil, []byte("["+n+"]"))
		if err != nil || string(got) != "["+n+"]" {
			t.Errorf("AppendJSONB([%s]) = %s, %v", n, got, err)
		}
	}
}

// TestAppendJSONBExponentZeros: an exponent's leading zeros do not count,
// and a zero is 0 whatever its exponent, as numeric_in reads them.
func TestAppendJSONBExponentZeros(t *testing.T) {
	for in, want := range map[string]string{"[1e00000005]": "[100000]", "[0e12345678]": "[0]", "[-0.00e99999999999]": "[0]"} {
		if got, err := AppendJSONB(nil, []byte(in)); err != nil || string(got) != want {
			t.Errorf("AppendJSONB(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
}
