// Package crm is the demo CRM as a fixture: the capture configuration of its
// tables (Tables) and Setup, which creates its schema and seed rows (the SQL
// embedded by package sql). `rowcast demo`, `rowcast bench` and the tests of
// triggers, of the server and of the AI task runner use it; it lives outside
// cmd/rowcast/internal so that the tests of package triggers can import it.
package crm

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/config"
	rowcastsql "github.com/rowcast/rowcast/sql"
)

// Tables returns the capture configuration of the demo CRM's tables, with
// the defaults that config.Load would fill in.
func Tables() []config.Table {
	entity := func(table, entity string, exclude ...string) config.Table {
		return config.Table{Table: table, Entity: entity, Kind: config.KindEntity, IDColumn: "id", TeamColumn: "team_id",
			ActorColumn: "updated_by", ExcludeColumns: exclude}
	}
	return []config.Table{
		entity("escrows", "escrow", "internal_notes"),
		entity("listings", "listing"),
		entity("clients", "client", "internal_notes"),
		entity("appointments", "appointment"),
		entity("leads", "lead"),
		entity("notes", "note"),
		{Table: "ai_tasks", Entity: "ai_task", Kind: config.KindAITask, IDColumn: "id", TeamColumn: "team_id",
			UserColumn: "user_id", StatusColumn: "status", ProgressColumn: "progress", MessageColumn: "message",
			TypeColumn: "task_type", ResultColumn: "result", ErrorColumn: "error", ParamsColumn: "params"},
	}
}

// Setup creates the demo CRM's tables and seed rows in the database at url.
func Setup(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("demo setup: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, rowcastsql.DemoSchema); err != nil {
		return fmt.Errorf("demo setup schema: %w", err)
	}
	if _, err := conn.Exec(ctx, rowcastsql.DemoSeed); err != nil {
		return fmt.Errorf("demo setup seed: %w", err)
	}
	return nil
}
