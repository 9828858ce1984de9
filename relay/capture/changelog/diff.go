package changelog

import (
	"bytes"
	"encoding/json"
	"fmt"

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

// sameNumber compares two JSON numbers by value, in time linear in their
// text whatever their exponents: each as its sign, its significant digits
// and the place of its decimal point.
func sameNumber(a, b []byte) bool {
	var bufA, bufB [64]byte
	x, okx := canonNumber(bufA[:0], a)
	y, oky := canonNumber(bufB[:0], b)
	if !okx || !oky {
		return bytes.Equal(a, b)
	}
	return x.neg == y.neg && x.point == y.point && bytes.Equal(x.digits, y.digits)
}

// canonical is a number as its sign, its digits without leading or
// trailing zeros (none for zero, which has no sign) and the power of ten
// of the place after its first digit.
type canonical struct {
	neg    bool
	digits []byte
	point  int64
}

// canonNumber reads the JSON number n into its canonical form, the digits
// appended to buf; false when n is not a number or its exponent is beyond
// any value (more than 18 digits).
func canonNumber(buf, n []byte) (canonical, bool) {
	var c canonical
	if len(n) > 0 && n[0] == '-' {
		c.neg, n = true, n[1:]
	}
	mant, exp := n, int64(0)
	if e := bytes.IndexAny(n, "eE"); e >= 0 {
		mant = n[:e]
		x := n[e+1:]
		sign := int64(1)
		if len(x) > 0 && (x[0] == '+' || x[0] == '-') {
			if x[0] == '-' {
				sign = -1
			}
			x = x[1:]
		}
		if len(x) == 0 {
			return c, false
		}
		if x = bytes.TrimLeft(x, "0"); len(x) > 18 {
			if len(bytes.Trim(mant, "0.")) == 0 {
				return canonical{}, true // zero, whatever the exponent
			}
			return c, false
		}
		for _, d := range x {
			if d < '0' || d > '9' {
				return c, false
			}
			exp = exp*10 + int64(d-'0')
		}
		exp *= sign
	}
	intPart, frac := mant, []byte(nil)
	if p := bytes.IndexByte(mant, '.'); p >= 0 {
		intPart, frac = mant[:p], mant[p+1:]
	}
	if len(intPart) == 0 {
		return c, false
	}
	buf = append(append(buf, intPart...), frac...)
	for _, d := range buf {
		if d < '0' || d > '9' {
			return c, false
		}
	}
	c.point = int64(len(intPart)) + exp
	lead := len(buf) - len(bytes.TrimLeft(buf, "0"))
	c.digits, c.point = bytes.TrimRight(buf[lead:], "0"), c.point-int64(lead)
	if len(c.digits) == 0 {
		return canonical{}, true
	}
	return c, true
}

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
