package changelog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/rowcast/rowcast/relay/internal/jsonobj"
)

// diffRows appends to dst the members of the JSON object row whose value
// differs from the same key's in old (or that old lacks), as one compact
// JSON object in row's order, and returns nil when none differs. Both are
// compact JSON objects as capture renders rows (to_json: the table's
// columns in order; rows of earlier installs were jsonb, keys in jsonb
// order), with values compared as jsonb compares them: numbers by value
// (1.0 equals 1.00), containers member by member.
func diffRows(dst, row, old []byte) ([]byte, error) {
	// Room for the members of rows of up to 32 columns on the stack: the
	// slices grown from nil took 10 allocations and 3 KiB per change.
	var oldBuf, newBuf [32]jsonobj.Member
	oldMembers, err := jsonobj.Members(oldBuf[:0], old)
	if err != nil {
		return nil, fmt.Errorf("diff old row: %w", err)
	}
	newMembers, err := jsonobj.Members(newBuf[:0], row)
	if err != nil {
		return nil, fmt.Errorf("diff row: %w", err)
	}
	start := len(dst)
	j := 0 // both rows list their columns in one order, mostly the same
	for _, m := range newMembers {
		v, ok := []byte(nil), false
		if j < len(oldMembers) && bytes.Equal(oldMembers[j].Key, m.Key) {
			v, ok = oldMembers[j].Value, true
			j++
		} else {
			for k := range oldMembers {
				if bytes.Equal(oldMembers[k].Key, m.Key) {
					v, ok, j = oldMembers[k].Value, true, k+1
					break
				}
			}
		}
		if ok && sameJSON(v, m.Value) {
			continue
		}
		if len(dst) == start {
			dst = append(dst, '{')
		} else {
			dst = append(dst, ',')
		}
		dst = append(dst, m.Key...)
		dst = append(dst, ':')
		dst = append(dst, m.Value...)
	}
	if len(dst) == start {
		return nil, nil
	}
	return append(dst, '}'), nil
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
	case a[0] == '"' && b[0] == '"':
		// Unequal text, equal strings only when escaped differently (a
		// json column's value as its writer wrote it).
		return (bytes.IndexByte(a, '\\') >= 0 || bytes.IndexByte(b, '\\') >= 0) && sameDecoded(a, b)
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

// sameDecoded compares two JSON values decoded, containers value by value.
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
