package relay

import (
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Position stands for everything a session has been sent: the history epoch
// and, per stream the session follows, the last seq sent. Positions are
// computed from the changelog alone, so they are the same on every replica.
type Position struct {
	Epoch string
	Seqs  map[string]int64
}

const positionPrefix = "p1."

// Encode renders the position as an opaque, URL-safe string. Streams are
// written in sorted order so that equal positions encode equally.
func (p Position) Encode() string {
	keys := make([]string, 0, len(p.Seqs))
	for k := range p.Seqs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return EncodePosition(p.Epoch, keys, func(i int) int64 { return p.Seqs[keys[i]] })
}

// EncodePosition encodes a position from sorted stream keys and a seq lookup,
// without building a map; it is the hot-path form of Position.Encode.
func EncodePosition(epoch string, sortedStreams []string, seq func(i int) int64) string {
	buf := make([]byte, 0, 64)
	buf = append(buf, epoch...)
	for i, s := range sortedStreams {
		buf = append(buf, '\n')
		buf = append(buf, s...)
		buf = append(buf, '=')
		buf = strconv.AppendInt(buf, seq(i), 10)
	}
	out := make([]byte, len(positionPrefix)+base64.RawURLEncoding.EncodedLen(len(buf)))
	copy(out, positionPrefix)
	base64.RawURLEncoding.Encode(out[len(positionPrefix):], buf)
	return string(out)
}

// errPosition is wrapped by every ParsePosition failure.
var errPosition = errors.New("malformed position")

// ParsePosition decodes a string made by Encode.
func ParsePosition(s string) (Position, error) {
	rest, ok := strings.CutPrefix(s, positionPrefix)
	if !ok || len(s) > 4096 {
		return Position{}, fmt.Errorf("parse position: %w", errPosition)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Position{}, fmt.Errorf("parse position: %w: %v", errPosition, err)
	}
	parts := strings.Split(string(raw), "\n")
	if parts[0] == "" {
		return Position{}, fmt.Errorf("parse position: %w: no epoch", errPosition)
	}
	p := Position{Epoch: parts[0], Seqs: make(map[string]int64, len(parts)-1)}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return Position{}, fmt.Errorf("parse position: %w: bad stream %q", errPosition, kv)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return Position{}, fmt.Errorf("parse position: %w: bad seq %q", errPosition, v)
		}
		if _, dup := p.Seqs[k]; dup {
			return Position{}, fmt.Errorf("parse position: %w: stream %q twice", errPosition, k)
		}
		p.Seqs[k] = n
	}
	return p, nil
}
