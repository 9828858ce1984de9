// Package sql embeds rowcast's SQL: the rowcast schema that capture needs
// (a text/template, rendered by package triggers) and the demo CRM schema
// with its seed data (package sql/crm sets it up).
package sql

import _ "embed"

// Rowcast is the rowcast schema template (see rowcast.sql).
//
//go:embed rowcast.sql
var Rowcast string

// DemoSchema creates the demo CRM's tables in the current schema.
//
//go:embed demo.sql
var DemoSchema string

// DemoSeed fills the demo CRM with two teams and five users.
//
//go:embed seed.sql
var DemoSeed string
