// Package relay holds rowcast's domain types and the seams between its
// stages: capture produces Txns of Changes in commit order, mapping turns each
// Change into Events, the hub fans Events out to sessions, and history replays
// the Events of the Changes after a Position, mapped by the same Mapper.
//
// This package imports the standard library only. Driver types (pgx, pglogrepl,
// melody) stop at the packages that use them; everything that crosses a seam is
// one of the types below.
package relay

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Op is the kind of a captured row change.
type Op byte

// The operations a changelog row records. The byte values are the ones stored
// in rowcast.changelog.op.
const (
	OpInsert   Op = 'I'
	OpUpdate   Op = 'U'
	OpDelete   Op = 'D'
	OpTruncate Op = 'T'
)

// String returns the SQL keyword of the operation.
func (o Op) String() string {
	switch o {
	case OpInsert:
		return "INSERT"
	case OpUpdate:
		return "UPDATE"
	case OpDelete:
		return "DELETE"
	case OpTruncate:
		return "TRUNCATE"
	}
	return "UNKNOWN"
}

// Change is one committed row change, as read from the changelog. Row and
// Changes hold compact JSON objects as PostgreSQL's to_jsonb renders rows
// (TimeZone=UTC, IntervalStyle=iso_8601, bytea_output=hex; keys in jsonb's
// order): capture writes to_json's text and the changelog's reader renders
// it so. An entity row's excluded columns are null in it (absent in rows
// written before 2026-12-06), and the mapper leaves them out; they are
// never modified after capture and may be shared.
type Change struct {
	// Stream is the delivery key: TeamStream, UserStream or AllStream.
	Stream string
	// Pos is the change's place in the global order (see Pos).
	Pos Pos
	// XID is the writing transaction's id; changes of one transaction share it.
	XID uint64
	// Table is the captured table, schema-qualified ("public.escrows").
	Table string
	Op    Op
	// EntityID is the row's id column rendered as text; empty for OpTruncate.
	// For a composite key it is JoinKey of the key columns' text values.
	EntityID string
	// Key holds every key column under its own name, as to_jsonb renders it
	// ({"deal_id":5,"user_id":9}), for tables with a composite key; nil
	// otherwise.
	Key json.RawMessage
	// TeamID is the row's team after the change (before it, for OpDelete).
	// OldTeamID is set on an OpUpdate that moved the row to another team; such
	// an update is recorded once in each of the two teams' streams.
	TeamID    string
	OldTeamID string
	// UserID is the owner of a user-scoped row (AI tasks).
	UserID string
	// Actor and RequestID are what the writing transaction named with
	// rowcast.set_actor / rowcast.set_request_id, or the table's actor column.
	Actor     string
	RequestID string
	// Row is the whole row (OpInsert, team moves, and user-scoped tables);
	// Changes holds only the changed columns with their new values (OpUpdate).
	Row     json.RawMessage
	Changes json.RawMessage
	// OldRow holds what a mapping rule needs beyond the row, under fixed
	// keys; nil otherwise. For AI tasks: {"status": the previous status,
	// "progress": the highest progress sent for the task so far, the
	// high-water mark that keeps progress from going backwards}.
	OldRow      json.RawMessage
	CommittedAt time.Time
}

// Txn is a run of captured changes in commit order, handed on as one unit:
// one committed transaction's changes in trigger mode, in the order they
// were made. In logical mode the slot holder writes several source
// transactions in one changelog transaction, so a Txn may hold the changes
// of several (each keeps its own CommittedAt).
type Txn struct {
	XID         uint64
	CommittedAt time.Time
	Changes     []Change
	// Head is the position a session reaches once it has this
	// transaction: its last change's, or the end of its tick when it is
	// the tick's last.
	Head Pos
	// More is true on every part of a transaction handed on in parts but
	// its last. The changelog reader hands a transaction of more than a
	// thousand changes on in parts of that many, so that its memory stays
	// bounded however large a transaction is; a part's Head is its last
	// change's position, from which a session resumes as from any other.
	More bool
}

// Sink receives what is read from the changelog (changelog.Tail calls it;
// Pipeline implements it). Its methods are called from the reader's
// goroutine, one at a time, and must not block on subscribers.
type Sink interface {
	// Reset is called before the first transaction, and again whenever the
	// history epoch changes (the database was restored or replaced), with the
	// position everything before which is history.
	Reset(epoch string, head Pos)
	// Txn is called once per committed transaction, in commit order, or
	// once per part of one handed on in parts (Txn.More).
	Txn(txn *Txn)
}

// Stream keys. Every session follows AllStream, its user's stream and one
// stream per team its token lists. The capture SQL that package triggers
// renders writes the same keys, from these constants.
const (
	AllStream  = "all"
	TeamPrefix = "team:"
	UserPrefix = "user:"
)

// TeamStream returns the stream key of a team.
func TeamStream(teamID string) string { return TeamPrefix + teamID }

// UserStream returns the stream key of a user.
func UserStream(userID string) string { return UserPrefix + userID }

// EventKind says how a transport frames an Event.
type EventKind uint8

const (
	// KindEvent is an entity event: {"type":"event","event":Name,...,"data":Data}.
	KindEvent EventKind = iota
	// KindResync tells the client to refetch; Data is the whole resync frame.
	KindResync
	// KindMembership moves the user of Stream (a user stream) into team
	// Team (Join) or out of it, from the event's position on. It is not
	// sent as it is: sessions change their scope (auth.membership).
	KindMembership
)

// Event is one message for the sessions that follow Stream. It is built once
// by mapping and shared, read-only, by every session that receives it.
type Event struct {
	Kind EventKind
	// Name is "<entity>:<action>" ("escrow:updated", "ai:task:progress",
	// "data:update"), or "resync".
	Name string
	// Entity is the entity type the subscribe filter matches; empty for events
	// every session gets whatever it subscribed to (AI tasks, resync).
	Entity string
	Stream string
	Pos    Pos
	// Part tells apart the events one change maps to (0, then 1 for the
	// legacy data:update that follows it): they share Stream and Pos.
	Part uint8
	// Data is the encoded JSON object: the event's data for KindEvent, the
	// whole frame for KindResync.
	Data []byte
	// CommittedAt is the commit time of the change the event came from.
	CommittedAt time.Time
	// Team and Join say, for KindMembership, which team the user joins or
	// leaves.
	Team string
	Join bool
}

// Mapper turns a change into the events it produces, appending them to dst.
// A change may produce none (an update of excluded columns only).
type Mapper interface {
	Map(dst []Event, c *Change) []Event
}

// ChangeHistory replays committed changes after a position (package
// changelog implements it on the changelog). history.Mapped turns it into
// the History transports replay from.
type ChangeHistory interface {
	// Replay calls fn with every change of the given streams after the
	// position after, in order, in batches (a batch may end in the middle
	// of a transaction; the next one continues it).
	// It returns ErrHistoryExpired when changes of those streams after it
	// have been pruned, it is ahead of the history, or the history is not
	// of after's epoch (it started again since), and fn's error when fn
	// fails, without calling it again.
	Replay(ctx context.Context, streams []string, after Position, fn func([]Change) error) error
}

// History replays the events of committed changes after a position,
// mapped as the Pipeline maps live ones: this is what a transport resumes
// a session from.
type History interface {
	// Replay calls fn with the events of every change of the given streams
	// after the position after, in order, in batches (a batch may end in
	// the middle of a transaction, never between the events of one change;
	// the next batch continues it). Changes that map to no event are
	// skipped; a batch is never empty. fn must not keep the slice after it
	// returns (the events themselves it may keep).
	// Replay returns ErrHistoryExpired when changes of those streams after
	// it have been pruned, it is ahead of the history, or the history is
	// not of after's epoch, and fn's error when fn fails, without calling
	// it again.
	Replay(ctx context.Context, streams []string, after Position, fn func([]Event) error) error
}

// Error is a relay error with a stable code.
type Error string

func (e Error) Error() string { return string(e) }

// ErrHistoryExpired means a resume position can no longer be served: it is
// older than the retained history, from another epoch, or unknown.
const ErrHistoryExpired Error = "history expired"

// JoinKey returns the entityId of a row with a composite key: the key
// columns' text values, in the configured order, joined by ':', with every
// backslash and ':' inside a value escaped by a preceding backslash:
// ("5", "9") is "5:9", and ("a:b", `c\d`) is `a\:b:c\\d`. The capture
// functions compute the same form in SQL.
func JoinKey(values ...string) string {
	var b strings.Builder
	for i, v := range values {
		if i > 0 {
			b.WriteByte(':')
		}
		for j := 0; j < len(v); j++ {
			if v[j] == '\\' || v[j] == ':' {
				b.WriteByte('\\')
			}
			b.WriteByte(v[j])
		}
	}
	return b.String()
}
