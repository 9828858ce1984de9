// Package jsonobj walks the members of compact JSON objects without
// decoding them: the changelog's reader diffs a row against its old row
// with it and renders rows as jsonb would (AppendJSONB), and the mapper
// drops excluded columns from a row with it (Without).
package jsonobj

import (
	"bytes"
	"errors"
)

// Member is one member of a JSON object: its key, quoted as written, and
// its raw value.
type Member struct {
	Key, Value []byte
}

// ErrNotObject is Members' error for text that is not a compact JSON
// object.
var ErrNotObject = errors.New("not a compact JSON object")

// Members appends to out the members of a compact JSON object (no
// whitespace between tokens), without decoding them.
func Members(out []Member, obj []byte) ([]Member, error) {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, ErrNotObject
	}
	i := 1
	if obj[i] == '}' {
		if i != len(obj)-1 {
			return nil, ErrNotObject
		}
		return out, nil
	}
	for {
		kEnd, err := skipValue(obj, i)
		if err != nil || obj[i] != '"' || kEnd >= len(obj) || obj[kEnd] != ':' {
			return nil, ErrNotObject
		}
		vEnd, err := skipValue(obj, kEnd+1)
		if err != nil || vEnd >= len(obj) {
			return nil, ErrNotObject
		}
		out = append(out, Member{Key: obj[i:kEnd], Value: obj[kEnd+1 : vEnd]})
		switch obj[vEnd] {
		case ',':
			i = vEnd + 1
		case '}':
			if vEnd != len(obj)-1 {
				return nil, ErrNotObject
			}
			return out, nil
		default:
			return nil, ErrNotObject
		}
	}
}

// skipValue returns the index just past the JSON value that starts at i
// in compact JSON. It checks strings and bracket depth, not the value's
// grammar: callers compare or copy values, they do not interpret them.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, ErrNotObject
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
		return 0, ErrNotObject
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ':' {
		j++
	}
	if j == i {
		return 0, ErrNotObject
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
	return 0, ErrNotObject
}

// Without appends to dst the compact JSON object obj without its members
// whose key, quoted as written, is one of keys, and returns the extended
// buffer. An object with none of them is appended as it is; text that is
// not a compact object is an error.
func Without(dst, obj []byte, keys [][]byte) ([]byte, error) {
	var buf [32]Member
	ms, err := Members(buf[:0], obj)
	if err != nil {
		return nil, err
	}
	start := len(dst)
	dst = append(dst, '{')
	for _, m := range ms {
		if slicesContain(keys, m.Key) {
			continue
		}
		if len(dst) > start+1 {
			dst = append(dst, ',')
		}
		dst = append(dst, m.Key...)
		dst = append(dst, ':')
		dst = append(dst, m.Value...)
	}
	return append(dst, '}'), nil
}

func slicesContain(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}
