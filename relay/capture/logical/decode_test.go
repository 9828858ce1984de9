package logical

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// wire builds pgoutput messages byte by byte, as the server sends them
// (protocol 2, outside a streamed transaction).
type wire []byte

func (w wire) byte(b byte) wire { return append(w, b) }
func (w wire) int16(v int) wire { return binary.BigEndian.AppendUint16(w, uint16(v)) }
func (w wire) int32(v uint32) wire {
	return binary.BigEndian.AppendUint32(w, v)
}
func (w wire) str(s string) wire { return append(append(w, s...), 0) }

// col is a column of a hand-built tuple: kind 'n', 'u' or 't' (the bytes
// pglogrepl names TupleDataTypeNull, TupleDataTypeToast, TupleDataTypeText).
type col struct {
	kind byte
	data string
}

func (w wire) tuple(cols ...col) wire {
	w = w.int16(len(cols))
	for _, c := range cols {
		w = w.byte(c.kind)
		if c.kind == 't' {
			w = w.int32(uint32(len(c.data)))
			w = append(w, c.data...)
		}
	}
	return w
}

func text(s string) col { return col{'t', s} }

var (
	null  = col{kind: 'n'}
	toast = col{kind: 'u'}
)

// relCol is a column of a hand-built Relation message.
type relCol struct {
	name string
	oid  uint32
	key  bool
}

func relationBytes(id uint32, schema, table string, cols ...relCol) []byte {
	w := wire{}.byte('R').int32(id).str(schema).str(table).byte('f').int16(len(cols))
	for _, c := range cols {
		flags := byte(0)
		if c.key {
			flags = 1
		}
		w = w.byte(flags).str(c.name).int32(c.oid).int32(0xffffffff) // typmod -1
	}
	return w
}

func parse(t *testing.T, b []byte) pglogrepl.Message {
	t.Helper()
	m, err := pglogrepl.ParseV2(b, false)
	if err != nil {
		t.Fatalf("parse %q: %v", b, err)
	}
	return m
}

// testRelation is public.items (id int8 key, team_id int8 key, title text,
// meta jsonb, doc json, body text).
func testRelation(t *testing.T) *relation {
	t.Helper()
	m := parse(t, relationBytes(16384, "public", "items",
		relCol{"id", pgtype.Int8OID, true}, relCol{"team_id", pgtype.Int8OID, true},
		relCol{"title", pgtype.TextOID, false}, relCol{"meta", pgtype.JSONBOID, false},
		relCol{"doc", pgtype.JSONOID, false}, relCol{"body", pgtype.TextOID, false}))
	rm, ok := m.(*pglogrepl.RelationMessageV2)
	if !ok {
		t.Fatalf("parsed %T, want *pglogrepl.RelationMessageV2", m)
	}
	return newRelation(&rm.RelationMessage, nil)
}

func TestNewRelation(t *testing.T) {
	rel := testRelation(t)
	if rel.table != "public.items" {
		t.Errorf("table %q, want public.items", rel.table)
	}
	if got := strings.Join(rel.columns, ","); got != "id,team_id,title,meta,doc,body" {
		t.Errorf("columns %s", got)
	}
	wantKey := []bool{true, true, false, false, false, false}
	for i := range rel.columns {
		if rel.key[i] != wantKey[i] {
			t.Errorf("column %s: key %v, want %v", rel.columns[i], rel.key[i], wantKey[i])
		}
	}
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// TestTupleJSON decodes hand-built Insert, Update and Delete messages into
// the row JSON and absent-column lists that the apply statement receives.
func TestTupleJSON(t *testing.T) {
	rel := testRelation(t)
	full := wire{}.tuple(text("1"), text("7"), text(`say "hi"`), text(`{"a": [1, 2]}`), text(`{"b":1}`), text("long"))
	for _, tc := range []struct {
		name             string
		msg              []byte
		newJSON, newAbs  string
		oldJSON, oldAbsn string
	}{{
		name:    "insert: values are strings, json and jsonb too (the apply statement casts them)",
		msg:     append(wire{}.byte('I').int32(16384).byte('N'), full...),
		newJSON: `{"id":"1","team_id":"7","title":"say \"hi\"","meta":"{\"a\": [1, 2]}","doc":"{\"b\":1}","body":"long"}`,
		newAbs:  "<nil>", oldJSON: "<nil>", oldAbsn: "<nil>",
	}, {
		name:    "insert: SQL null is JSON null, also in a jsonb column; a json null is a string",
		msg:     wire{}.byte('I').int32(16384).byte('N').tuple(text("1"), text("7"), null, null, text("null"), text("")),
		newJSON: `{"id":"1","team_id":"7","title":null,"meta":null,"doc":"null","body":""}`,
		newAbs:  "<nil>", oldJSON: "<nil>", oldAbsn: "<nil>",
	}, {
		name:    "insert: a json column's text as it came",
		msg:     wire{}.byte('I').int32(16384).byte('N').tuple(text("1"), text("7"), text("t"), text("{oops"), text("[1,"), text("b")),
		newJSON: `{"id":"1","team_id":"7","title":"t","meta":"{oops","doc":"[1,","body":"b"}`,
		newAbs:  "<nil>", oldJSON: "<nil>", oldAbsn: "<nil>",
	}, {
		name: "update with the old row: unchanged TOAST takes the old value",
		msg: append(wire{}.byte('U').int32(16384).byte('O').tuple(text("1"), text("7"), text("old"), text("{}"), text("[]"), text("long")).
			byte('N'), wire{}.tuple(text("1"), text("8"), text("new"), toast, toast, toast)...),
		newJSON: `{"id":"1","team_id":"8","title":"new","meta":"{}","doc":"[]","body":"long"}`,
		newAbs:  "<nil>",
		oldJSON: `{"id":"1","team_id":"7","title":"old","meta":"{}","doc":"[]","body":"long"}`,
		oldAbsn: "<nil>",
	}, {
		name: "update with the old row also TOASTed: the column is absent, never null",
		msg: append(wire{}.byte('U').int32(16384).byte('O').tuple(text("1"), text("7"), text("old"), null, null, toast).
			byte('N'), wire{}.tuple(text("1"), text("7"), text("new"), null, null, toast)...),
		newJSON: `{"id":"1","team_id":"7","title":"new","meta":null,"doc":null}`,
		newAbs:  `{"body"}`,
		oldJSON: `{"id":"1","team_id":"7","title":"old","meta":null,"doc":null}`,
		oldAbsn: `{"body"}`,
	}, {
		name:    "update without the old row (key unchanged): the key stands in, the rest absent",
		msg:     wire{}.byte('U').int32(16384).byte('N').tuple(text("1"), text("7"), text("new"), null, null, toast),
		newJSON: `{"id":"1","team_id":"7","title":"new","meta":null,"doc":null}`,
		newAbs:  `{"body"}`,
		oldJSON: `{"id":"1","team_id":"7"}`,
		oldAbsn: `{"title","meta","doc","body"}`,
	}, {
		name:    "delete with the key only",
		msg:     wire{}.byte('D').int32(16384).byte('K').tuple(text("1"), text("7"), null, null, null, null),
		newJSON: "<nil>", newAbs: "<nil>",
		oldJSON: `{"id":"1","team_id":"7","title":null,"meta":null,"doc":null,"body":null}`,
		oldAbsn: "<nil>",
	}, {
		name:    "a tuple shorter than the relation: the missing columns are absent",
		msg:     wire{}.byte('D').int32(16384).byte('O').tuple(text("1"), text("7")),
		newJSON: "<nil>", newAbs: "<nil>",
		oldJSON: `{"id":"1","team_id":"7"}`,
		oldAbsn: `{"title","meta","doc","body"}`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var newT, oldT *pglogrepl.TupleData
			switch m := parse(t, tc.msg).(type) {
			case *pglogrepl.InsertMessageV2:
				newT = m.Tuple
			case *pglogrepl.UpdateMessageV2:
				newT, oldT = m.NewTuple, m.OldTuple
				if oldT == nil {
					oldT = rel.keyOf(newT)
				}
			case *pglogrepl.DeleteMessageV2:
				oldT = m.OldTuple
			default:
				t.Fatalf("parsed %T", m)
			}
			n, na := tupleJSON(rel, newT, oldT)
			o, oa := tupleJSON(rel, oldT, nil)
			if str(n) != tc.newJSON || str(na) != tc.newAbs {
				t.Errorf("new row %s absent %s,\nwant %s absent %s", str(n), str(na), tc.newJSON, tc.newAbs)
			}
			if str(o) != tc.oldJSON || str(oa) != tc.oldAbsn {
				t.Errorf("old row %s absent %s,\nwant %s absent %s", str(o), str(oa), tc.oldJSON, tc.oldAbsn)
			}

		})
	}
}

// TestAbsentListQuoting: column names with quotes and backslashes are
// quoted in the text[] literal of absent columns and in the JSON keys.
func TestAbsentListQuoting(t *testing.T) {
	rel := newRelation(&pglogrepl.RelationMessage{Namespace: "s", RelationName: "t", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: `a"b`, DataType: pgtype.TextOID}, {Name: `c\d`, DataType: pgtype.TextOID}, {Name: "e,f g", DataType: pgtype.TextOID},
	}}, nil)
	tup := &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("x")},
		{DataType: pglogrepl.TupleDataTypeToast}, {DataType: pglogrepl.TupleDataTypeToast},
	}}
	j, abs := tupleJSON(rel, tup, nil)
	if want := `{"a\"b":"x"}`; str(j) != want {
		t.Errorf("row %s, want %s", str(j), want)
	}
	if want := `{"c\\d","e,f g"}`; str(abs) != want {
		t.Errorf("absent %s, want %s", str(abs), want)
	}
}

// FuzzTupleJSON decodes arbitrary bytes as a pgoutput message (the seed
// corpus in testdata holds messages on which pglogrepl's parser panics)
// and, when
// they parse as a change of the test relation, checks that each tuple
// renders as a JSON object whose keys and absent columns together are the
// relation's columns, each once.
func FuzzTupleJSON(f *testing.F) {
	f.Add([]byte(wire{}.byte('I').int32(1).byte('N').tuple(text("1"), text("7"), null, text(`{"a":1}`), toast, text("x"))))
	f.Add([]byte(wire{}.byte('U').int32(1).byte('O').tuple(text("1"), text("7"), toast).byte('N').tuple(toast, null, text(`"`))))
	f.Add([]byte(wire{}.byte('D').int32(1).byte('K').tuple(text("1"))))
	rel := newRelation(&pglogrepl.RelationMessage{Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", Flags: keyColumnFlag}, {Name: "team_id", Flags: keyColumnFlag}, {Name: "t\"itle"},
		{Name: "meta", DataType: pgtype.JSONBOID}, {Name: "doc", DataType: pgtype.JSONOID}, {Name: "b\\ody"},
	}}, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		// Only changes (other kinds, such as Truncate's relation count,
		// also make pglogrepl allocate what they declare), minus the empty
		// message, on which pglogrepl panics: the corpus holds one.
		if len(b) > 0 && !strings.ContainsRune("IUD", rune(b[0])) || declaresLongColumn(b) {
			return
		}
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		var newT, oldT *pglogrepl.TupleData
		switch m := m.(type) {
		case *pglogrepl.InsertMessageV2:
			newT = m.Tuple
		case *pglogrepl.UpdateMessageV2:
			newT, oldT = m.NewTuple, m.OldTuple
			if oldT == nil {
				oldT = rel.keyOf(newT)
			}
		case *pglogrepl.DeleteMessageV2:
			oldT = m.OldTuple
		default:
			return
		}
		check := func(tup, fallback *pglogrepl.TupleData) {
			j, abs := tupleJSON(rel, tup, fallback)
			if tup == nil {
				if j != nil || abs != nil {
					t.Fatalf("nil tuple rendered %s %s", str(j), str(abs))
				}
				return
			}
			var row map[string]json.RawMessage
			if err := json.Unmarshal([]byte(*j), &row); err != nil {
				t.Fatalf("row %q is not a JSON object: %v", *j, err)
			}
			seen := map[string]int{}
			for k := range row {
				seen[k]++
			}
			if abs != nil {
				for _, c := range parseTextArray(t, *abs) {
					seen[c]++
				}
			}
			for _, c := range rel.columns {
				if seen[c] != 1 {
					t.Fatalf("column %q appears %d times in row %s absent %s", c, seen[c], *j, str(abs))
				}
			}
			if len(seen) != len(rel.columns) {
				t.Fatalf("row %s absent %s name columns the relation lacks", *j, str(abs))
			}
		}
		check(newT, oldT)
		check(oldT, nil)
	})
}

// declaresLongColumn reports whether b may declare a text or binary column
// longer than b itself: pglogrepl allocates a column's declared length
// (up to 4 GiB) before it finds the bytes missing, which exhausts the
// fuzzer's memory; the server never sends such a message. Any 't' or 'b'
// byte counts as a column kind, so this skips more inputs than it must.
func declaresLongColumn(b []byte) bool {
	for i := 0; i+5 <= len(b); i++ {
		if (b[i] == 't' || b[i] == 'b') && binary.BigEndian.Uint32(b[i+1:]) > uint32(len(b)) {
			return true
		}
	}
	return false
}

// parseTextArray parses a one-dimensional text[] literal whose elements are
// all quoted, as appendArrayElem writes them.
func parseTextArray(t *testing.T, s string) []string {
	t.Helper()
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		t.Fatalf("array literal %q lacks braces", s)
	}
	var out []string
	in := s[1 : len(s)-1]
	for len(in) > 0 {
		if in[0] != '"' {
			t.Fatalf("array literal %q: unquoted element at %q", s, in)
		}
		var b strings.Builder
		i := 1
		for ; i < len(in) && in[i] != '"'; i++ {
			if in[i] == '\\' {
				i++
				if i == len(in) {
					t.Fatalf("array literal %q ends in a backslash", s)
				}
			}
			b.WriteByte(in[i])
		}
		if i == len(in) {
			t.Fatalf("array literal %q: unterminated element", s)
		}
		out = append(out, b.String())
		in = in[i+1:]
		if len(in) > 0 {
			if in[0] != ',' {
				t.Fatalf("array literal %q: want a comma at %q", s, in)
			}
			in = in[1:]
		}
	}
	return out
}

// TestTupleJSONLeavesOutExcluded: a column to render null never has its
// value in the row handed to PostgreSQL, nor in the absent list, and the
// apply statement renders it null.
func TestTupleJSONLeavesOutExcluded(t *testing.T) {
	rel := newRelation(&pglogrepl.RelationMessage{Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", Flags: keyColumnFlag}, {Name: "secret"}, {Name: "note"},
	}}, []string{"secret", "not a column"})
	tup := &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("1")},
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("hush")},
		{DataType: pglogrepl.TupleDataTypeToast},
	}}
	j, abs := tupleJSON(rel, tup, nil)
	if str(j) != `{"id":"1"}` || str(abs) != `{"note"}` {
		t.Errorf("row %s absent %s", str(j), str(abs))
	}
	if sql := applySQL(rel, "f", []string{"bigint", "text", "text"}); !strings.Contains(sql, `'secret', NULL`) || strings.Contains(sql, `'secret')::`) {
		t.Errorf("apply statement renders secret: %s", sql)
	}
}
