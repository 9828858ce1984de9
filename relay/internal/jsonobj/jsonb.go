package jsonobj

import (
	"bytes"
	"encoding/json"
	"slices"
)

// AppendJSONB appends to dst the compact JSON value src as PostgreSQL's
// jsonb would render it (compacted), and returns the extended buffer:
// object keys unique (the last of equal keys wins) and ordered by length,
// then bytes; numbers as numeric renders them (no exponent: 1e+20 is
// 100000000000000000000 and 1.50e1 is 15.0, keeping the scale numeric_in
// gives them; -0 is 0); strings unescaped and escaped again as
// PostgreSQL escapes them. Capture renders rows with to_json, which writes
// a row's columns in the table's order, floats with exponents and json
// columns as they were stored; AppendJSONB turns that into the text
// to_jsonb would have given, which is what events carry. Text that is not
// JSON is an error.
//
// It takes time linear in src (and in its output), however wide or deep
// the value: it reads src once into a tree of spans, then writes each
// object's members in order.
func AppendJSONB(dst, src []byte) ([]byte, error) {
	var r Renderer
	return r.AppendJSONB(dst, src)
}

// Renderer is AppendJSONB with buffers kept from one call to the next: a
// reader of many rows keeps one. Its zero value is ready; it is not safe
// for concurrent use.
type Renderer struct {
	t tree
}

// AppendJSONB is AppendJSONB, reusing r's buffers.
func (r *Renderer) AppendJSONB(dst, src []byte) ([]byte, error) {
	t := &r.t
	t.src, t.nodes, t.members, t.stack = src, t.nodes[:0], t.members[:0], t.stack[:0]
	defer func() { t.src = nil }()
	root, end, err := t.parse(0)
	if err != nil {
		return nil, err
	}
	if end != len(src) {
		return nil, ErrNotObject
	}
	return t.emit(dst, root), nil
}

// node is a JSON value of src: a scalar's span, or a container's members
// (an array's elements are members without keys), members[first:first+n].
type node struct {
	kind       byte // '{', '[', '"', '0' (a number) or 'l' (true, false, null)
	start, end int
	first, n   int
}

// member is an object member or an array element: its key unescaped (nil
// for an element), the key as written when PostgreSQL writes it so (nil
// when it must be escaped again), and its value.
type member struct {
	key, quoted []byte
	value       int
}

// tree parses src into nodes and members; a container's members gather on
// stack while it is read and move to members when it ends, so that each
// container's are contiguous.
type tree struct {
	src            []byte
	nodes          []node
	members, stack []member
}

// parse reads the value at src[i:] and returns its node and the index past
// it.
func (t *tree) parse(i int) (int, int, error) {
	src := t.src
	if i >= len(src) {
		return 0, 0, ErrNotObject
	}
	c := src[i]
	switch {
	case c == '{' || c == '[':
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		base := len(t.stack)
		i++
		if i < len(src) && src[i] == close {
			i++
		} else {
			for {
				var m member
				if c == '{' {
					if i >= len(src) || src[i] != '"' {
						return 0, 0, ErrNotObject
					}
					kEnd, err := skipString(src, i)
					if err != nil || kEnd >= len(src) || src[kEnd] != ':' {
						return 0, 0, ErrNotObject
					}
					m.key, m.quoted = src[i+1:kEnd-1], src[i:kEnd]
					if bytes.IndexByte(m.key, '\\') >= 0 {
						var s string
						if json.Unmarshal(m.quoted, &s) != nil {
							return 0, 0, ErrNotObject
						}
						m.key, m.quoted = []byte(s), nil
					}
					i = kEnd + 1
				}
				var err error
				if m.value, i, err = t.parse(i); err != nil {
					return 0, 0, err
				}
				t.stack = append(t.stack, m)
				if i >= len(src) {
					return 0, 0, ErrNotObject
				}
				if src[i] == close {
					i++
					break
				}
				if src[i] != ',' {
					return 0, 0, ErrNotObject
				}
				i++
			}
		}
		n := node{kind: c, first: len(t.members), n: len(t.stack) - base}
		t.members = append(t.members, t.stack[base:]...)
		t.stack = t.stack[:base]
		t.nodes = append(t.nodes, n)
		return len(t.nodes) - 1, i, nil
	case c == '"':
		end, err := skipString(src, i)
		if err != nil {
			return 0, 0, err
		}
		t.nodes = append(t.nodes, node{kind: '"', start: i, end: end})
		return len(t.nodes) - 1, end, nil
	}
	end, err := skipValue(src, i)
	if err != nil {
		return 0, 0, err
	}
	kind := byte('l')
	if c == '-' || c >= '0' && c <= '9' {
		kind = '0'
	}
	t.nodes = append(t.nodes, node{kind: kind, start: i, end: end})
	return len(t.nodes) - 1, end, nil
}

// jsonbBefore reports whether key a sorts before key b in a jsonb object:
// the shorter first, then bytewise.
func jsonbBefore(a, b []byte) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return bytes.Compare(a, b) < 0
}

// emit appends node v as jsonb renders it.
func (t *tree) emit(dst []byte, v int) []byte {
	n := t.nodes[v]
	switch n.kind {
	case '[':
		dst = append(dst, '[')
		for j, m := range t.members[n.first : n.first+n.n] {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = t.emit(dst, m.value)
		}
		return append(dst, ']')
	case '{':
		return t.emitObject(dst, t.members[n.first:n.first+n.n])
	case '"':
		return appendString(dst, t.src[n.start:n.end])
	case '0':
		return appendNumber(dst, t.src[n.start:n.end])
	}
	return append(dst, t.src[n.start:n.end]...)
}

// emitObject appends an object's members in jsonb's order, the last of
// equal keys kept. A row's members are sorted by an insertion sort of
// their indices on the stack; a larger object's on the heap.
func (t *tree) emitObject(dst []byte, ms []member) []byte {
	var orderBuf [32]int
	order := orderBuf[:0]
	sorted := true
	for j := range ms {
		order = append(order, j)
		if j > 0 && !jsonbBefore(ms[j-1].key, ms[j].key) {
			sorted = false
		}
	}
	switch {
	case sorted:
	case len(order) <= len(orderBuf):
		for j := 1; j < len(order); j++ {
			for k := j; k > 0 && jsonbBefore(ms[order[k]].key, ms[order[k-1]].key); k-- {
				order[k], order[k-1] = order[k-1], order[k]
			}
		}
	default:
		slices.SortStableFunc(order, func(a, b int) int {
			switch {
			case jsonbBefore(ms[a].key, ms[b].key):
				return -1
			case jsonbBefore(ms[b].key, ms[a].key):
				return 1
			}
			return 0
		})
	}
	dst = append(dst, '{')
	first := true
	for j, o := range order {
		m := ms[o]
		if j+1 < len(order) && bytes.Equal(ms[order[j+1]].key, m.key) {
			continue // a later value of the same key wins
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if m.quoted != nil {
			dst = append(dst, m.quoted...)
		} else {
			dst = appendEscaped(dst, m.key)
		}
		dst = append(dst, ':')
		dst = t.emit(dst, m.value)
	}
	return append(dst, '}')
}

// appendString appends the JSON string q (quoted, as written) as
// PostgreSQL escapes it. skipString found q's end; a string Go cannot
// unquote (a lone escape PostgreSQL's json type accepts) is kept as
// written.
func appendString(dst, q []byte) []byte {
	if bytes.IndexByte(q, '\\') < 0 {
		return append(dst, q...)
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return append(dst, q...)
	}
	return appendEscaped(dst, []byte(s))
}

// AppendQuoted appends s quoted as PostgreSQL quotes it in json and jsonb
// values (and as AppendJSONB renders every string and key).
func AppendQuoted(dst []byte, s string) []byte { return appendEscaped(dst, []byte(s)) }

// appendEscaped appends s quoted as PostgreSQL's escape_json quotes text:
// '"' and '\' and the control characters escaped (\b, \f, \n, \r, \t, the
// others as \u00xx), everything else as it is.
func appendEscaped(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// numeric's limits: digits before the point and after it. A number beyond
// them cannot be in a jsonb value (numeric_in refuses it), so a json
// column's is kept as written.
const (
	maxWhole = 131072
	maxScale = 16383
)

// appendNumber appends the JSON number n as numeric renders it: without
// an exponent, with the scale numeric_in gives it (its fraction's digits
// less the exponent, at least 0), and without the sign of a zero.
func appendNumber(dst, n []byte) []byte {
	neg := n[0] == '-'
	body := n
	if neg {
		body = n[1:]
	}
	e := bytes.IndexAny(body, "eE")
	if e < 0 && (!neg || bytes.IndexAny(body, "123456789") >= 0) {
		return append(dst, n...) // numeric prints a plain decimal as it reads it
	}
	mant, exp := body, 0
	if e >= 0 {
		mant = body[:e]
		x := body[e+1:]
		sign := 1
		if len(x) > 0 && (x[0] == '+' || x[0] == '-') {
			if x[0] == '-' {
				sign = -1
			}
			x = x[1:]
		}
		if len(x) == 0 {
			return append(dst, n...)
		}
		if x = bytes.TrimLeft(x, "0"); len(x) > 7 {
			if sign > 0 && len(bytes.Trim(mant, "0.")) == 0 {
				return append(dst, '0') // zero, whatever the exponent
			}
			return append(dst, n...)
		}
		for _, c := range x {
			if c < '0' || c > '9' {
				return append(dst, n...)
			}
			exp = exp*10 + int(c-'0')
		}
		exp *= sign
	}
	intPart, frac := mant, []byte(nil)
	if p := bytes.IndexByte(mant, '.'); p >= 0 {
		intPart, frac = mant[:p], mant[p+1:]
	}
	scale := len(frac) - exp // digits after the point
	if scale > maxScale {
		return append(dst, n...)
	}
	lead := 0 // leading zeros of the digits
	for _, d := range intPart {
		if d != '0' {
			break
		}
		lead++
	}
	if lead == len(intPart) {
		for _, d := range frac {
			if d != '0' {
				break
			}
			lead++
		}
	}
	if lead == len(intPart)+len(frac) && scale <= 0 {
		return append(dst, '0') // a zero with no fraction left
	}
	if len(intPart)+exp-lead > maxWhole {
		return append(dst, n...)
	}
	digits := make([]byte, 0, len(intPart)+len(frac)+max(exp, 0))
	digits = append(append(digits, intPart...), frac...)
	if scale < 0 {
		digits = append(digits, bytes.Repeat([]byte{'0'}, -scale)...)
		scale = 0
	}
	if pad := scale + 1 - len(digits); pad > 0 {
		digits = append(bytes.Repeat([]byte{'0'}, pad), digits...)
	}
	whole, fraction := digits[:len(digits)-scale], digits[len(digits)-scale:]
	whole = bytes.TrimLeft(whole, "0")
	if len(whole) == 0 {
		whole = []byte{'0'}
	}
	zero := len(bytes.Trim(whole, "0")) == 0 && len(bytes.Trim(fraction, "0")) == 0
	if neg && !zero {
		dst = append(dst, '-')
	}
	dst = append(dst, whole...)
	if scale > 0 {
		dst = append(append(dst, '.'), fraction...)
	}
	return dst
}
