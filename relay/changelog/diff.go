package changelog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// diffRows appends to dst the members of the JSON object row whose value
// differs from the same key's in old (or that old lacks), as one compact
// JSON object, and returns nil when none differs. Both are compact JSON
// objects as PostgreSQL renders jsonb (keys in jsonb order), so the result
// is byte for byte what jsonb_object_agg over jsonb_each(row) would render,
// with values compared as jsonb compares them: numbers by value (1.0 equals
// 1.00), containers member by member.
func diffRows(dst, row, old []byte) ([]byte, error) {
	// Room for the members of rows of up to 32 columns on the stack: the
	// slices grown from nil took 10 allocations and 3 KiB per change.
	var oldBuf, newBuf [32]member
	oldMembers, err := members(oldBuf[:0], old)
	if err != nil {
		return nil, fmt.Errorf("diff old row: %w", err)
	}
	newMembers, err := members(newBuf[:0], row)
	if err != nil {
		return nil, fmt.Errorf("diff row: %w", err)
	}
	start := len(dst)
	j := 0 // both rows list their columns in one order, mostly the same
	for _, m := range newMembers {
		v, ok := []byte(nil), false
		if j < len(oldMembers) && bytes.Equal(oldMembers[j].key, m.key) {
			v, ok = oldMembers[j].value, true
			j++
		} else {
			for k := range oldMembers {
				if bytes.Equal(oldMembers[k].key, m.key) {
					v, ok, j = oldMembers[k].value, true, k+1
					break
				}
			}
		}
		if ok && sameJSON(v, m.value) {
			continue
		}
		if len(dst) == start {
			dst = append(dst, '{')
		} else {
			dst = append(dst, ',')
		}
		dst = append(dst, m.key...)
		dst = append(dst, ':')
		dst = append(dst, m.value...)
	}
	if len(dst) == start {
		return nil, nil
	}
	return append(dst, '}'), nil
}

// member is one member of a JSON object: its key, quoted as written, and
// its raw value.
type member struct {
	key, value []byte
}

var errNotObject = errors.New("not a compact JSON object")

// members appends to out the members of a compact JSON object (no
// whitespace between tokens), without decoding them.
func members(out []member, obj []byte) ([]member, error) {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, errNotObject
	}
	i := 1
	if obj[i] == '}' {
		if i != len(obj)-1 {
			return nil, errNotObject
		}
		return out, nil
	}
	for {
		kEnd, err := skipValue(obj, i)
		if err != nil || obj[i] != '"' || kEnd >= len(obj) || obj[kEnd] != ':' {
			return nil, errNotObject
		}
		vEnd, err := skipValue(obj, kEnd+1)
		if err != nil || vEnd >= len(obj) {
			return nil, errNotObject
		}
		out = append(out, member{key: obj[i:kEnd], value: obj[kEnd+1 : vEnd]})
		switch obj[vEnd] {
		case ',':
			i = vEnd + 1
		case '}':
			if vEnd != len(obj)-1 {
				return nil, errNotObject
			}
			return out, nil
		default:
			return nil, errNotObject
		}
	}
}

// skipValue returns the index just past the JSON value that starts at i
// in compact JSON. It checks strings and bracket depth, not the value's
// grammar: callers compare or copy values, they do not interpret them.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errNotObject
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				j, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errNotObject
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ':' {
		j++
	}
	if j == i {
		return 0, errNotObject
	}
	return j, nil
}

// skipString returns the index just past the JSON string that starts at i.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errNotObject
}

// sameJSON reports whether two JSON values are equal as jsonb values are:
// the same text, or numbers of equal value, or containers whose members
// are (jsonb normalises objects: keys are unique and ordered).
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	switch {
	case isNumber(a[0]) && isNumber(b[0]):
		return sameNumber(a, b)
	case a[0] == '{' && b[0] == '{', a[0] == '[' && b[0] == '[':
		return sameDecoded(a, b)
	}
	return false
}

func isNumber(c byte) bool { return c == '-' || c >= '0' && c <= '9' }

// sameNumber compares two JSON numbers by value. Plain decimals (what
// numeric and integer columns render) are compared without their
// insignificant zeros; anything with an exponent as exact rationals.
func sameNumber(a, b []byte) bool {
	if bytes.ContainsAny(a, "eE") || bytes.ContainsAny(b, "eE") {
		x, okx := new(big.Rat).SetString(string(a))
		y, oky := new(big.Rat).SetString(string(b))
		return okx && oky && x.Cmp(y) == 0
	}
	return bytes.Equal(trimNumber(a), trimNumber(b)) && negative(a) == negative(b) || isZero(a) && isZero(b)
}

// trimNumber drops a decimal's sign, leading zeros of its integer part and
// trailing zeros of its fraction (and a bare point).
func trimNumber(n []byte) []byte {
	n = bytes.TrimPrefix(n, []byte("-"))
	if bytes.IndexByte(n, '.') >= 0 {
		n = bytes.TrimRight(n, "0")
		n = bytes.TrimSuffix(n, []byte("."))
	}
	return bytes.TrimLeft(n, "0")
}

func negative(n []byte) bool { return len(n) > 0 && n[0] == '-' }

func isZero(n []byte) bool { return len(trimNumber(n)) == 0 }

// sameDecoded compares two JSON containers value by value.
func sameDecoded(a, b []byte) bool {
	var x, y any
	if decodeNumbers(a, &x) != nil || decodeNumbers(b, &y) != nil {
		return false
	}
	return sameValue(x, y)
}

func decodeNumbers(b []byte, v *any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

func sameValue(x, y any) bool {
	switch x := x.(type) {
	case json.Number:
		y, ok := y.(json.Number)
		return ok && sameJSON([]byte(x), []byte(y))
	case map[string]any:
		y, ok := y.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := y.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return x == y
}
