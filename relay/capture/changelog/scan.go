package changelog

import (
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/internal/jsonobj"
)

// Columns are the changelog columns a Scanner reads, in its order, of a
// changelog row aliased c. Every query that reads changes selects, before
// them, the row's tick, its transaction's place in the tick (the highest id
// the transaction wrote) and its commit time (c.origin_at, or the tick's
// time).
const Columns = `c.xid::text::bigint, c.id, c.stream, c.tbl, c.op, coalesce(c.entity_id, ''),
coalesce(c.team_id, ''), coalesce(c.old_team_id, ''), coalesce(c.user_id, ''), coalesce(c.actor, ''),
coalesce(c.request_id, ''), c.row_data::text, c.changes::text, c.old_data::text, c.entity_key::text,
c.old_row::text`

// Scanner decodes changelog rows selected as Columns says. Its zero value
// is ready; it reuses a buffer between rows.
type Scanner struct {
	xid, id, tick, tx                  int64
	op                                 string
	row, changes, old, key, oldRow     []byte
	stream, tbl, entity, team, oldTeam string
	user, actor, request               string
	committed                          time.Time
	compact, old2                      []byte
	jsonb                              jsonobj.Renderer
}

// Scan reads the current row. Columns the query selects before the
// tick, if any, are scanned into before.
func (s *Scanner) Scan(rows pgx.Rows, before ...any) (relay.Change, error) {
	s.row, s.changes, s.old, s.key, s.oldRow = s.row[:0], s.changes[:0], s.old[:0], s.key[:0], s.oldRow[:0]
	if err := rows.Scan(append(before, &s.tick, &s.tx, &s.committed, &s.xid, &s.id, &s.stream, &s.tbl, &s.op, &s.entity, &s.team,
		&s.oldTeam, &s.user, &s.actor, &s.request, &s.row, &s.changes, &s.old, &s.key, &s.oldRow)...); err != nil {
		return relay.Change{}, err
	}
	ch := relay.Change{
		Stream: s.stream, Pos: relay.Pos{Tick: s.tick, Tx: s.tx, ID: s.id}, XID: uint64(s.xid), Table: s.tbl,
		EntityID: s.entity, TeamID: s.team, OldTeamID: s.oldTeam, UserID: s.user, Actor: s.actor,
		RequestID: s.request, CommittedAt: s.committed.UTC(),
	}
	if len(s.op) == 1 {
		ch.Op = relay.Op(s.op[0])
	}
	ch.Changes, ch.OldRow, ch.Key = compactJSON(s.changes), compactJSON(s.old), compactJSON(s.key)
	if s.row == nil {
		return ch, nil
	}
	s.compact = compactJSONB(s.compact[:0], s.row)
	if ch.Op == relay.OpUpdate && s.oldRow != nil && ch.Changes == nil {
		// Capture left the changed columns to us: the row against its
		// old row, both as capture wrote them (to_json: the columns in
		// one order), and only the changed ones rendered as jsonb. An
		// update within one team carries only them.
		s.old2 = compactJSONB(s.old2[:0], s.oldRow)
		changes, err := diffRows(nil, s.compact, s.old2)
		if err != nil {
			return relay.Change{}, err
		}
		if changes != nil {
			ch.Changes = s.asJSONB(make([]byte, 0, len(changes)), changes)
		}
		if ch.OldTeamID == "" {
			return ch, nil
		}
	}
	ch.Row = s.asJSONB(make([]byte, 0, len(s.compact)), s.compact)
	return ch, nil
}

// asJSONB appends a row as capture wrote it (compact json: to_json's text;
// jsonb's in rows written before 2026-12-06) to dst as jsonb renders it,
// which is what events carry in both capture modes (jsonobj.AppendJSONB:
// keys unique and in jsonb's order, numbers without exponents, strings
// escaped as PostgreSQL escapes them). A row it cannot read, which no
// capture writes, is appended as it is.
func (s *Scanner) asJSONB(dst, row []byte) []byte {
	out, err := s.jsonb.AppendJSONB(dst, row)
	if err != nil {
		return append(dst, row...)
	}
	return out
}

// compactJSON returns a fresh compact copy of json or jsonb text, or nil
// for SQL NULL.
func compactJSON(src []byte) json.RawMessage {
	if src == nil {
		return nil
	}
	return compactJSONB(make([]byte, 0, len(src)), src)
}

// compactJSONB appends src, the text of a json or jsonb value as PostgreSQL
// prints it (jsonb with a space after every ':' and ','; a json column
// embedded in a row as it was stored), to dst without the whitespace
// outside strings, and returns the extended buffer. For valid JSON the
// result is json.Compact's (a fuzz target holds it to that); unlike
// json.Compact it does not validate text PostgreSQL has validated, which
// made json.Compact the relay's largest cost per change (a quarter of its
// CPU time in a trigger-mode write benchmark).
func compactJSONB(dst, src []byte) []byte {
	start := 0
	for i := 0; i < len(src); i++ {
		switch src[i] {
		case '"':
			// Skip the string: to its closing quote, past escapes.
			for i++; i < len(src) && src[i] != '"'; i++ {
				if src[i] == '\\' {
					i++
				}
			}
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}
