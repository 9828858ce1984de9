package changelog_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rowcast/rowcast/relay/internal/jsonobj"
)

// TestJSONBAsPostgreSQLRendersIt holds jsonobj.AppendJSONB to PostgreSQL:
// for json texts as to_json and json columns write them, the result is
// jsonb's rendering of the same text, compacted (what events carried when
// capture rendered rows with to_jsonb).
func TestJSONBAsPostgreSQLRendersIt(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	texts := []string{
		`{}`, `[]`, `{"a":1}`, `{"b":1,"a":[1,2.50],"a":"dup"}`, `{"bb":1,"a":2,"ccc":{"z":null,"y":{"x":1e3}}}`,
		`[1e+20,1.5e-07,1.50e1,-0,-0.0,0e5,0.0e-2,-1.2e-2,123.456e1,1E2,1e-0,12345678901234567890]`,
		`{"\u00e9":"\u00e9\/\"\\\b\f\n\r\t\u0001\u001f","e":"plain ü"}`, `{"a\"b":1,"a\\b":2,"é":3,"z":4}`,
		`[true,false,null,"x",[],{}]`, `{"k":[{"b":2,"a":1},{"a":[{"d":1,"c":2}]}]}`,
		`{"x":9007199254740993,"y":-9007199254740993.000}`, `{"":1," ":2}`, `"\ud83d\ude00"`,
		`[1e1001,-0e1001,1e-1001,1e-16383,1.5e131070,12.5e-16382,0e131073,1e131071]`,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		texts = append(texts, randomJSON(rng, 3))
	}
	rows, err := conn.Query(t.Context(), `select x::jsonb::text from unnest($1::text[]) with ordinality as u (x, n) order by n`, texts)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		want = append(want, s)
	}
	if rows.Err() != nil || len(want) != len(texts) {
		t.Fatalf("%d of %d rendered: %v", len(want), len(texts), rows.Err())
	}
	for i, in := range texts {
		got, err := jsonobj.AppendJSONB(nil, compact(t, in))
		if w := compact(t, want[i]); err != nil || !bytes.Equal(got, w) {
			t.Errorf("AppendJSONB(%s)\n = %s, %v\nwant %s", in, got, err, w)
		}
	}
}

// TestJSONBOfToJSON: to_json of rows of many types, normalised, is
// to_jsonb of the same rows (floats with exponents, composites in
// attribute order, json columns as stored).
func TestJSONBOfToJSON(t *testing.T) {
	conn := connect(t, pg.NewDatabase(t))
	if _, err := conn.Exec(t.Context(), `create type pair as (zz int, a float8);
		create table r (id int, f8 float8, f4 float4, num numeric, p pair, fs float8[], j json, jb jsonb, t text,
			ts timestamptz, iv interval, b bytea, big numeric)`); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		f := math.Float64frombits(rng.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			f = 0
		}
		f4 := float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(60)-30)))
		num := fmt.Sprintf("%d.%0*d", rng.Int64N(1e12)-5e11, rng.IntN(6), rng.IntN(1000))
		if _, err := conn.Exec(t.Context(), `insert into r values ($1, $2, $3, $4::numeric, row($5, $2)::pair, array[$2, -$2, 1e-9]::float8[],
			$6::json, $6::jsonb, $7, now(), '1 day 2 hours'::interval, '\xdead'::bytea, $8::numeric)`,
			i, f, f4, num, rng.IntN(100), randomJSON(rng, 2), randomString(rng), "1e"+fmt.Sprint(rng.IntN(30))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(t.Context(), `insert into r (id, f8, f4, num) values (-1, 'NaN', '-Infinity', 'NaN'), (-2, '-0', '-0', '-0')`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(t.Context(), `select to_json(r)::text, to_jsonb(r)::text from r order by id`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var j, jb string
		if err := rows.Scan(&j, &jb); err != nil {
			t.Fatal(err)
		}
		n++
		got, err := jsonobj.AppendJSONB(nil, compact(t, j))
		if w := compact(t, jb); err != nil || !bytes.Equal(got, w) {
			t.Errorf("to_json %s\nnormalised %s, %v\nto_jsonb   %s", j, got, err, w)
		}
	}
	if rows.Err() != nil || n != 502 {
		t.Fatalf("%d rows: %v", n, rows.Err())
	}
}

func compact(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("compact %s: %v", s, err)
	}
	return b.Bytes()
}

// randomJSON returns a JSON text jsonb accepts: objects with repeated and
// escaped keys, numbers in every form, strings with escapes.
func randomJSON(rng *rand.Rand, depth int) string {
	switch k := rng.IntN(8); {
	case depth > 0 && k < 2:
		n := rng.IntN(5)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = randomString(rng) + ":" + randomJSON(rng, depth-1)
		}
		return "{" + strings.Join(parts, ",") + "}"
	case depth > 0 && k < 3:
		n := rng.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = randomJSON(rng, depth-1)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case k < 6:
		return randomNumber(rng)
	case k < 7:
		return randomString(rng)
	}
	return []string{"true", "false", "null"}[rng.IntN(3)]
}

func randomNumber(rng *rand.Rand) string {
	var b strings.Builder
	if rng.IntN(3) == 0 {
		b.WriteByte('-')
	}
	if rng.IntN(4) == 0 {
		b.WriteByte('0')
	} else {
		fmt.Fprint(&b, 1+rng.IntN(9))
		for range rng.IntN(12) {
			fmt.Fprint(&b, rng.IntN(10))
		}
	}
	if rng.IntN(2) == 0 {
		b.WriteByte('.')
		for range 1 + rng.IntN(6) {
			fmt.Fprint(&b, rng.IntN(10))
		}
	}
	if rng.IntN(2) == 0 {
		b.WriteString([]string{"e", "E", "e+", "e-", "E-"}[rng.IntN(5)])
		fmt.Fprint(&b, rng.IntN(40))
	}
	return b.String()
}

func randomString(rng *rand.Rand) string {
	pieces := []string{"a", "b", "ab", "é", `\u00e9`, `\/`, `\"`, `\\`, `\n`, `\t`, `\u0001`, `\u001F`, " ", "zz", `\ud83d\ude00`, "😀", "A"}
	var b strings.Builder
	b.WriteByte('"')
	for range rng.IntN(4) {
		b.WriteString(pieces[rng.IntN(len(pieces))])
	}
	b.WriteByte('"')
	return b.String()
}
