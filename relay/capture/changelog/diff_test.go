package changelog

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rowcast/rowcast/relay/internal/jsonobj"
)

func TestDiffRows(t *testing.T) {
	tests := []struct {
		name, row, old, want string // want "" for no change
	}{
		{"one column", `{"id":1,"name":"b","team_id":7}`, `{"id":1,"name":"a","team_id":7}`, `{"name":"b"}`},
		{"several, in the row's order", `{"a":1,"bb":2,"ccc":3}`, `{"a":0,"bb":2,"ccc":0}`, `{"a":1,"ccc":3}`},
		{"nothing changed", `{"a":1,"b":"x"}`, `{"a":1,"b":"x"}`, ``},
		{"a string escaped otherwise", `{"a":"\u00e9\/","b":"x"}`, `{"a":"é/","b":"x"}`, ``},
		{"a string that changed, escaped", `{"a":"\u00e9"}`, `{"a":"e"}`, `{"a":"\u00e9"}`},
		{"empty rows", `{}`, `{}`, ``},
		{"a column the old row lacks (added)", `{"a":1,"new":null}`, `{"a":1}`, `{"new":null}`},
		{"a column the row lacks (dropped) is not a change", `{"a":1}`, `{"a":1,"gone":2}`, ``},
		{"null to value and back", `{"a":null,"b":2}`, `{"a":1,"b":null}`, `{"a":null,"b":2}`},
		{"numbers by value: scale", `{"p":1.50}`, `{"p":1.5}`, ``},
		{"numbers by value: exponent", `{"f":1e+100}`, `{"f":1E100}`, ``},
		{"numbers that differ", `{"p":1.51}`, `{"p":1.5}`, `{"p":1.51}`},
		{"a number and a string", `{"p":1}`, `{"p":"1"}`, `{"p":1}`},
		{"nested object by value", `{"j":{"a":[1.0,{"b":2}]}}`, `{"j":{"a":[1,{"b":2.00}]}}`, ``},
		{"nested object that differs", `{"j":{"a":[1,2]}}`, `{"j":{"a":[2,1]}}`, `{"j":{"a":[1,2]}}`},
		{"strings with escapes and brackets", `{"s":"a\"},{\\","t":"[x"}`, `{"s":"a\"},{\\","t":"[y"}`, `{"t":"[x"}`},
		{"keys with escapes", `{"a\"b":1,"c":2}`, `{"a\"b":0,"c":2}`, `{"a\"b":1}`},
		{"booleans", `{"x":true,"y":false}`, `{"x":false,"y":false}`, `{"x":true}`},
		{"unicode", `{"n":"é✓"}`, `{"n":"e"}`, `{"n":"é✓"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := diffRows(nil, []byte(tt.row), []byte(tt.old))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("diffRows(%s, %s) = %s, want %s", tt.row, tt.old, got, tt.want)
			}
			if got != nil && !json.Valid(got) {
				t.Fatalf("diffRows = %s: not JSON", got)
			}
		})
	}
}

func TestDiffRowsRejectsWhatIsNotACompactObject(t *testing.T) {
	for _, bad := range []string{``, `[]`, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1}x`, `{"a":"x}`, `{"a":{"b":1}`, `{a:1}`} {
		if got, err := diffRows(nil, []byte(bad), []byte(`{}`)); err == nil {
			t.Errorf("diffRows(%q) = %s, want an error", bad, got)
		}
		if got, err := diffRows(nil, []byte(`{}`), []byte(bad)); err == nil {
			t.Errorf("diffRows(old %q) = %s, want an error", bad, got)
		}
	}
}

// FuzzDiffRows: on any pair of JSON objects, diffRows does not fail, its
// result is a JSON object holding exactly the row's members whose values
// differ from the old row's, and applying it to the old row gives back the
// row's values.
func FuzzDiffRows(f *testing.F) {
	f.Add(`{"id":1,"name":"b"}`, `{"id":1,"name":"a"}`)
	f.Add(`{"p":1.50,"j":{"a":[1]}}`, `{"p":1.5,"j":{"a":[1.0]}}`)
	f.Add(`{"s":"a\"},{"}`, `{}`)
	f.Fuzz(func(t *testing.T, row, old string) {
		var r, o map[string]json.RawMessage
		if json.Unmarshal([]byte(row), &r) != nil || json.Unmarshal([]byte(old), &o) != nil || r == nil || o == nil {
			return
		}
		compact := func(s string) []byte {
			var b bytes.Buffer
			if err := json.Compact(&b, []byte(s)); err != nil {
				t.Skip()
			}
			return b.Bytes()
		}
		rc, oc := compact(row), compact(old)
		rm, err1 := jsonobj.Members(nil, rc)
		om, err2 := jsonobj.Members(nil, oc)
		if err1 != nil || err2 != nil || len(rm) != len(r) || len(om) != len(o) {
			return // duplicate keys and the like: not what jsonb renders
		}
		got, err := diffRows(nil, rc, oc)
		if err != nil {
			t.Fatalf("diffRows(%s, %s): %v", rc, oc, err)
		}
		var d map[string]json.RawMessage
		if got != nil {
			if err := json.Unmarshal(got, &d); err != nil {
				t.Fatalf("diffRows(%s, %s) = %s: %v", rc, oc, got, err)
			}
		}
		for k, v := range r {
			_, inDiff := d[k]
			ov, inOld := o[k]
			same := inOld && sameJSON(compact(string(v)), compact(string(ov)))
			if inDiff == same {
				t.Fatalf("diffRows(%s, %s) = %s: key %q in diff %v, same as old %v", rc, oc, got, k, inDiff, same)
			}
		}
		for k := range d {
			if _, ok := r[k]; !ok {
				t.Fatalf("diffRows(%s, %s) = %s: key %q is not the row's", rc, oc, got, k)
			}
		}
	})
}

func BenchmarkDiffRows(b *testing.B) {
	row := []byte(`{"id":4211,"city":"Austin","notes":"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn","state":"TX","status":"pending","team_id":7,"zip_code":"78701","created_at":"2026-11-25T18:05:15.123456+00:00","updated_at":"2026-11-25T18:05:16.123456+00:00","updated_by":2,"purchase_price":300001.00,"property_address":"4211 Bench St"}`)
	old := []byte(`{"id":4211,"city":"Austin","notes":"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn","state":"TX","status":"open","team_id":7,"zip_code":"78701","created_at":"2026-11-25T18:05:15.123456+00:00","updated_at":"2026-11-25T18:05:15.123456+00:00","updated_by":2,"purchase_price":300000.00,"property_address":"4211 Bench St"}`)
	b.ReportAllocs()
	var buf []byte
	for range b.N {
		var err error
		if buf, err = diffRows(buf[:0], row, old); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSameNumber(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"1", "1.0", true}, {"1.50", "1.5", true}, {"-0", "0", true}, {"-0.0", "0.00", true},
		{"0.5", "00.5", true}, {"10", "1", false}, {"100", "1.00", false}, {"-1", "1", false},
		{"0.10", "0.1", true}, {"0.01", "0.1", false}, {"1e2", "100", true}, {"1.5E-1", "0.15", true},
		{"1e2", "10", false}, {"-1.0", "-1", true}, {"300001.00", "300000.00", false},
		{"1e131071", "10e131070", true}, {"1e999999", "10e999998", true}, {"1e999999", "1e999998", false},
		{"-0e5", "0", true}, {"0.0e-2", "0", true}, {"123e-2", "1.23", true}, {"1E+2", "100.000", true},
		{"9.9e-1000", "99e-1001", true}, {"1e1234567890123456789", "1e1234567890123456789", true},
		{"1e0000000000000000001", "10", true}, {"0e1234567890123456789", "0", true}, {"0.0e-99999999999999999999", "-0", true},
	}
	for _, tt := range tests {
		if got := sameNumber([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("sameNumber(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
