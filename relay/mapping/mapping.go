// Package mapping turns captured changes into wire events: table to entity,
// action naming, team or user scope, changed columns only, team moves, AI
// task progress and the legacy data:update form (docs/protocol.md section 3).
//
// Mapping is pure: no I/O, no clock, no driver types. The same change always
// maps to the same bytes, which is what lets both capture modes and every
// replica send identical events.
package mapping

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/internal/jsonobj"
	"github.com/rowcast/rowcast/relay/internal/jsonstr"
)

// Kind is how a table maps.
type Kind uint8

const (
	// Entity tables are team-scoped: <entity>:created|updated|deleted.
	Entity Kind = iota
	// AITask tables are user-scoped: ai:task:started|progress|completed|failed.
	AITask
	// Membership is the auth.membership table: each change moves a user into
	// or out of a team (relay.KindMembership); a TRUNCATE maps to nothing.
	Membership
)

// Rule maps one table.
type Rule struct {
	// Table is the schema-qualified table name as the changelog records it.
	Table string
	// Entity names the events ("escrow" → "escrow:updated").
	Entity string
	Kind   Kind
	// AI task column names (Kind AITask).
	StatusColumn, ProgressColumn, MessageColumn, TypeColumn, ResultColumn, ErrorColumn string
	// Exclude names the columns no event carries (exclude_columns). An
	// entity table's capture writes them as null, never their values
	// (to_json renders every column); the mapper leaves them out.
	Exclude []string
}

// Options selects optional event forms.
type Options struct {
	// Legacy also emits each entity change as data:update.
	Legacy bool
}

// Mapper maps changes by table. It is safe for concurrent use.
type Mapper struct {
	rules  map[string]*rule
	legacy bool
}

type rule struct {
	Rule
	created, updated, deleted string // event names
	idKey                     string // `"escrowId":`
	rowKey                    string // `"escrow":`
	typePrefix                string // `{"entityType":"escrow","entityId":`
	resync                    []byte
	exclude                   [][]byte // Exclude's names as the rows' JSON keys
}

// New checks the rules and returns a Mapper.
func New(rules []Rule, o Options) (*Mapper, error) {
	m := &Mapper{rules: make(map[string]*rule, len(rules)), legacy: o.Legacy}
	for _, r := range rules {
		if r.Table == "" || r.Entity == "" {
			return nil, fmt.Errorf("mapping: rule needs a table and an entity: %+v", r)
		}
		if _, dup := m.rules[r.Table]; dup {
			return nil, fmt.Errorf("mapping: table %s has two rules", r.Table)
		}
		camel := camelCase(r.Entity)
		m.rules[r.Table] = &rule{
			Rule:       r,
			created:    r.Entity + ":created",
			updated:    r.Entity + ":updated",
			deleted:    r.Entity + ":deleted",
			idKey:      string(jsonstr.Append(nil, camel+"Id")),
			rowKey:     string(jsonstr.Append(nil, camel)),
			typePrefix: `{"entityType":` + string(jsonstr.Append(nil, r.Entity)) + `,"entityId":`,
			resync:     append(append([]byte(`{"type":"resync","reason":"truncate","entityType":`), jsonstr.Append(nil, r.Entity)...), '}'),
		}
		for _, c := range r.Exclude {
			// Quoted as the rows' keys are (PostgreSQL's escapes).
			m.rules[r.Table].exclude = append(m.rules[r.Table].exclude, jsonobj.AppendQuoted(nil, c))
		}
	}
	return m, nil
}

// Map implements relay.Mapper. A change of an unknown table maps to nothing.
func (m *Mapper) Map(dst []relay.Event, c *relay.Change) []relay.Event {
	r := m.rules[c.Table]
	if r == nil {
		return dst
	}
	if r.Kind == Membership {
		if c.TeamID == "" || (c.Op != relay.OpInsert && c.Op != relay.OpDelete) {
			return dst
		}
		return append(dst, relay.Event{Kind: relay.KindMembership, Name: "membership", Stream: c.Stream, Pos: c.Pos,
			CommittedAt: c.CommittedAt, Team: c.TeamID, Join: c.Op == relay.OpInsert})
	}
	if c.Op == relay.OpTruncate {
		return append(dst, relay.Event{Kind: relay.KindResync, Name: "resync", Stream: c.Stream,
			Pos: c.Pos, Data: r.resync, CommittedAt: c.CommittedAt})
	}
	if r.Kind == AITask {
		return mapTask(dst, r, c)
	}
	action, teamID := "", c.TeamID
	var payloadKey string
	var payload json.RawMessage
	switch c.Op {
	case relay.OpInsert:
		action, payloadKey, payload = "created", r.rowKey, c.Row
	case relay.OpDelete:
		action = "deleted"
	case relay.OpUpdate:
		switch {
		case c.OldTeamID != "" && c.OldTeamID != c.TeamID && c.Stream == relay.TeamStream(c.OldTeamID):
			action, teamID = "deleted", c.OldTeamID // moved out of this team
		case c.OldTeamID != "" && c.OldTeamID != c.TeamID:
			action, payloadKey, payload = "created", r.rowKey, c.Row // moved in
		default:
			if len(c.Changes) == 0 || string(c.Changes) == "{}" {
				return dst
			}
			action, payloadKey, payload = "updated", `"changes"`, c.Changes
		}
	default:
		return dst
	}
	if len(r.exclude) > 0 && len(payload) > 0 {
		var err error
		if payload, err = jsonobj.Without(make([]byte, 0, len(payload)), payload, r.exclude); err != nil {
			return dst // not a JSON object: no capture writes that
		}
		if action == "updated" && string(payload) == "{}" {
			return dst // only excluded columns changed
		}
	}
	name := r.updated
	switch action {
	case "created":
		name = r.created
	case "deleted":
		name = r.deleted
	}
	b := make([]byte, 0, 160+len(payload)+len(c.Key)+len(c.Actor)+len(c.RequestID))
	b = append(b, r.typePrefix...)
	b = jsonstr.Append(b, c.EntityID)
	b = append(b, `,"action":"`...)
	b = append(b, action...)
	b = append(b, `","teamId":`...)
	b = jsonstr.Append(b, teamID)
	b = appendActor(b, c)
	b = append(b, ',')
	b = append(b, r.idKey...)
	b = append(b, ':')
	b = jsonstr.Append(b, c.EntityID)
	if len(c.Key) > 0 {
		// A composite key: every key column under its own name, so that a
		// client can find the row whichever the action.
		b = append(b, `,"key":`...)
		b = append(b, c.Key...)
	}
	if payloadKey != "" {
		b = append(b, ',')
		b = append(b, payloadKey...)
		b = append(b, ':')
		b = append(b, payload...)
	}
	b = appendCommitted(b, c.CommittedAt)
	b = append(b, '}')
	dst = append(dst, relay.Event{Name: name, Entity: r.Entity, Stream: c.Stream, Pos: c.Pos, Data: b, CommittedAt: c.CommittedAt})
	if m.legacy {
		dst = append(dst, legacyEvent(r, c, action, teamID, payload))
	}
	return dst
}

// legacyEvent builds data:update {entityType, entityId, action, userId,
// teamId, data}: data is the row on create, the changes on update, null on
// delete.
func legacyEvent(r *rule, c *relay.Change, action, teamID string, payload json.RawMessage) relay.Event {
	b := make([]byte, 0, 128+len(payload))
	b = append(b, r.typePrefix...)
	b = jsonstr.Append(b, c.EntityID)
	b = append(b, `,"action":"`...)
	b = append(b, strings.TrimSuffix(action, "d")...)
	b = append(b, '"')
	if c.Actor != "" {
		b = append(b, `,"userId":`...)
		b = jsonstr.Append(b, c.Actor)
	}
	b = append(b, `,"teamId":`...)
	b = jsonstr.Append(b, teamID)
	b = append(b, `,"data":`...)
	if payload == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, payload...)
	}
	b = append(b, '}')
	return relay.Event{Name: "data:update", Entity: r.Entity, Stream: c.Stream, Pos: c.Pos, Part: 1, Data: b, CommittedAt: c.CommittedAt}
}

func appendActor(b []byte, c *relay.Change) []byte {
	if c.Actor != "" {
		b = append(b, `,"userId":`...)
		b = jsonstr.Append(b, c.Actor)
	}
	if c.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = jsonstr.Append(b, c.RequestID)
	}
	return b
}

// CommittedAtLayout renders commit times: UTC, microseconds, always six
// digits.
const CommittedAtLayout = "2006-01-02T15:04:05.000000Z07:00"

func appendCommitted(b []byte, t time.Time) []byte {
	b = append(b, `,"committedAt":"`...)
	b = t.UTC().AppendFormat(b, CommittedAtLayout)
	return append(b, '"')
}

// camelCase turns snake_case into camelCase ("ai_task" → "aiTask").
func camelCase(s string) string {
	parts := strings.Split(s, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
