package relay

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Pos is a change's place in the one order every replica reads alike. The
// ticker cuts the changelog into ticks (the transactions that became
// visible between two recorded snapshots); within a tick, transactions are
// ordered by Tx, the highest changelog id each wrote, and a transaction's
// changes by their own ID. Positions compare field by field.
//
// A Pos whose Tx and ID are math.MaxInt64 stands for the end of its tick:
// everything in it (TickEnd).
type Pos struct {
	Tick, Tx, ID int64
}

// TickEnd returns the position after every change of tick.
func TickEnd(tick int64) Pos { return Pos{Tick: tick, Tx: math.MaxInt64, ID: math.MaxInt64} }

// Compare returns -1, 0 or +1 as p is before, equal to or after q.
func (p Pos) Compare(q Pos) int {
	switch {
	case p.Tick != q.Tick:
		return cmp.Compare(p.Tick, q.Tick)
	case p.Tx != q.Tx:
		return cmp.Compare(p.Tx, q.Tx)
	}
	return cmp.Compare(p.ID, q.ID)
}

// Complete reports whether p stands for the end of its tick.
func (p Pos) Complete() bool { return p.Tx == math.MaxInt64 && p.ID == math.MaxInt64 }

// MaxPos returns the later of p and q.
func MaxPos(p, q Pos) Pos {
	if p.Compare(q) >= 0 {
		return p
	}
	return q
}

// Position stands for everything a session has been sent: the history
// epoch and the place in the global order up to which it has everything its
// scope allows. Positions are computed from the changelog and its ticks
// alone, so they are the same on every replica.
type Position struct {
	Epoch string
	Pos   Pos
}

const positionPrefix = "p2."

// Encode renders the position as an opaque, URL-safe string.
func (p Position) Encode() string { return EncodePosition(p.Epoch, p.Pos) }

// EncodePosition encodes a position without building a Position.
func EncodePosition(epoch string, pos Pos) string {
	var raw [96]byte
	buf := append(raw[:0], epoch...)
	buf = append(buf, '\n')
	buf = strconv.AppendInt(buf, pos.Tick, 10)
	if !pos.Complete() {
		buf = append(buf, '.')
		buf = strconv.AppendInt(buf, pos.Tx, 10)
		buf = append(buf, '.')
		buf = strconv.AppendInt(buf, pos.ID, 10)
	}
	out := make([]byte, len(positionPrefix)+base64.RawURLEncoding.EncodedLen(len(buf)))
	copy(out, positionPrefix)
	base64.RawURLEncoding.Encode(out[len(positionPrefix):], buf)
	return string(out)
}

// errPosition is wrapped by every ParsePosition failure.
var errPosition = errors.New("malformed position")

// ParsePosition decodes a string made by Encode. Positions of the earlier
// per-stream form ("p1.") are malformed now: a client holding one resyncs.
func ParsePosition(s string) (Position, error) {
	rest, ok := strings.CutPrefix(s, positionPrefix)
	if !ok || len(s) > 512 {
		return Position{}, fmt.Errorf("parse position: %w", errPosition)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil {
		return Position{}, fmt.Errorf("parse position: %w: %v", errPosition, err)
	}
	if base64.RawURLEncoding.EncodeToString(raw) != rest {
		// Line breaks inside, which the decoder skips.
		return Position{}, fmt.Errorf("parse position: %w: not canonical base64", errPosition)
	}
	epoch, at, ok := strings.Cut(string(raw), "\n")
	if !ok || epoch == "" {
		return Position{}, fmt.Errorf("parse position: %w: no epoch", errPosition)
	}
	parts := strings.Split(at, ".")
	if len(parts) != 1 && len(parts) != 3 {
		return Position{}, fmt.Errorf("parse position: %w: bad place %q", errPosition, at)
	}
	var n [3]int64
	for i, part := range parts {
		v, err := strconv.ParseInt(part, 10, 64)
		if err != nil || part[0] < '0' || part[0] > '9' || (part != "0" && part[0] == '0') {
			return Position{}, fmt.Errorf("parse position: %w: bad number %q", errPosition, part)
		}
		n[i] = v
	}
	pos := TickEnd(n[0])
	if len(parts) == 3 {
		pos = Pos{Tick: n[0], Tx: n[1], ID: n[2]}
		if pos.Complete() {
			// Encode never writes the end of a tick this way: one position,
			// one spelling.
			return Position{}, fmt.Errorf("parse position: %w: bad place %q", errPosition, at)
		}
	}
	return Position{Epoch: epoch, Pos: pos}, nil
}
