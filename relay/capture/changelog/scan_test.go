package changelog

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestCompactJSONB(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"object as PostgreSQL prints it", `{"a": 1, "b": [1, 2, {"c": null}]}`, `{"a":1,"b":[1,2,{"c":null}]}`},
		{"spaces inside strings stay", `{"a b": "c, d: e"}`, `{"a b":"c, d: e"}`},
		{"escaped quote does not end the string", `{"q": "say \"a, b\" "}`, `{"q":"say \"a, b\" "}`},
		{"escaped backslash before the closing quote", `{"p": "C:\\ ", "n": 1}`, `{"p":"C:\\ ","n":1}`},
		{"other whitespace", "[1,\t2,\n3,\r4]", `[1,2,3,4]`},
		{"scalar", `"x y"`, `"x y"`},
		{"unicode", `{"é": "ü ñ"}`, `{"é":"ü ñ"}`},
		{"empty object", `{}`, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(compactJSONB(nil, []byte(tt.in))); got != tt.want {
				t.Errorf("compactJSONB(%s) = %s, want %s", tt.in, got, tt.want)
			}
			if got := string(compactJSON([]byte(tt.in))); got != tt.want {
				t.Errorf("compactJSON(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
	if compactJSON(nil) != nil {
		t.Error("compactJSON(nil) is not nil (SQL NULL)")
	}
	// It appends: the buffer's earlier bytes stay.
	if got := string(compactJSONB([]byte("x"), []byte(`[1, 2]`))); got != `x[1,2]` {
		t.Errorf("compactJSONB appended %q", got)
	}
}

// FuzzCompactJSONB holds compactJSONB to json.Compact on every valid JSON
// text (PostgreSQL prints only valid JSON for a jsonb value).
func FuzzCompactJSONB(f *testing.F) {
	for _, s := range []string{`{"a": 1, "b": [true, false, null]}`, `"a\"b"`, `{"k": "\\"}`, `[1.5e3, -2, "x\ty"]`, " { } "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return
		}
		var want bytes.Buffer
		if err := json.Compact(&want, []byte(s)); err != nil {
			t.Fatal(err)
		}
		if got := compactJSONB(nil, []byte(s)); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("compactJSONB(%q) = %q, json.Compact gives %q", s, got, want.Bytes())
		}
	})
}

// BenchmarkCompactJSONB compares the trusting compactor with json.Compact,
// the one it replaced, on a CRM row as PostgreSQL prints it.
func BenchmarkCompactJSONB(b *testing.B) {
	row := []byte(`{"id": 42, "notes": "call back, after 5: the buyer's agent", "status": "pending", "team_id": 7, "version": 12, ` +
		`"updated_at": "2026-12-04T08:15:00.123456+00:00", "updated_by": 2, "property_address": "12 Elm St, Springfield", ` +
		`"purchase_price": 525000.00, "escrow_number": "ESC-2026-0042", "closing_date": "2027-01-15"}`)
	b.Run("compactJSONB", func(b *testing.B) {
		buf := make([]byte, 0, len(row))
		b.SetBytes(int64(len(row)))
		for b.Loop() {
			buf = compactJSONB(buf[:0], row)
		}
	})
	b.Run("json.Compact", func(b *testing.B) {
		var buf bytes.Buffer
		b.SetBytes(int64(len(row)))
		for b.Loop() {
			buf.Reset()
			if err := json.Compact(&buf, row); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAsJSONB is the reader's cost per row of taking capture's to_json
// text to jsonb's rendering (keys sorted), against compacting alone, on the
// bench's escrow row as to_json writes it.
func BenchmarkAsJSONB(b *testing.B) {
	row := []byte(`{"id":42,"team_id":7,"listing_id":null,"property_address":"42 Bench St","city":"Austin","state":"TX",` +
		`"zip_code":"78701","purchase_price":300001.00,"earnest_money":null,"commission_rate":null,"status":"pending",` +
		`"opened_on":"2026-12-05","closing_date":null,"buyer_client_id":null,"seller_client_id":null,"details":{},` +
		`"notes":"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn","internal_notes":null,"version":1,"archived_at":null,` +
		`"updated_by":2,"created_at":"2026-12-05T18:05:15.123456+00:00","updated_at":"2026-12-05T18:05:16.123456+00:00"}`)
	b.Run("compactJSONB", func(b *testing.B) {
		buf := make([]byte, 0, len(row))
		b.SetBytes(int64(len(row)))
		for b.Loop() {
			buf = compactJSONB(buf[:0], row)
		}
	})
	b.Run("asJSONB", func(b *testing.B) {
		buf, out := make([]byte, 0, len(row)), make([]byte, 0, len(row))
		var s Scanner
		b.SetBytes(int64(len(row)))
		b.ReportAllocs()
		for b.Loop() {
			buf = compactJSONB(buf[:0], row)
			out = s.asJSONB(out[:0], buf)
		}
	})
}
