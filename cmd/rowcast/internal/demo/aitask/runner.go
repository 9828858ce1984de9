// Package aitask is the demo CRM's AI task runner, the reference for a
// runner in any language that shows its user live progress through rowcast.
//
// A task is a row of the ai_tasks table, and the runner changes that row
// only through the SQL helpers `rowcast install` creates:
// rowcast.task_start, rowcast.task_progress and rowcast.task_fail each run
// as one statement in its own short transaction, so every step is committed,
// and so sent to the task's user as an ai:task:* event, the moment it is
// written. The task's business writes (the escrow, the leads) go into the
// CRM's own tables in one transaction at the end, which names the user as the
// actor and the task as the request (rowcast.set_request_id("ai-task:<id>")),
// and which also calls rowcast.task_complete: the escrow exists exactly when
// the task is completed, and the team receives escrow:created or
// lead:created at the same commit as the user receives ai:task:completed.
//
// The runner never holds one connection while it waits for another, so any
// pool size works, however many tasks run at once.
package aitask

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The task types of the demo CRM.
const (
	// CreateEscrow opens an escrow from a street address and a price:
	// params {"address": "12 Oak St, Austin, TX 78701", "price": 450000};
	// result {"escrowId": "42"}. See ParseEscrowParams.
	CreateEscrow = "create_escrow_from_address"
	// ImportLeads imports leads from a CSV document: params {"csv":
	// "first_name,last_name,email\n…"}; result {"imported": 10}. See
	// ParseLeads.
	ImportLeads = "import_leads_csv"
)

// failTimeout bounds recording a failure after the task's context ended.
const failTimeout = 5 * time.Second

// Runner executes the demo CRM's AI tasks against its database. Its fields
// are read-only once it is in use; it is safe for concurrent use.
type Runner struct {
	// Pool is the CRM database, with the demo schema and `rowcast install`
	// (which creates the task helpers) applied.
	Pool *pgxpool.Pool
	// StepDelay is how long each step of a task takes, standing in for the
	// work a real runner does there (a model call, a geocoder). Zero means
	// no pause, which is what tests use.
	StepDelay time.Duration
	// Logger receives one record per task that ends: debug when it
	// completed, failed on its input or was cancelled, warn when the
	// database failed it. Nil logs nothing.
	Logger *slog.Logger
}

// Failure is the reason a task failed on its own input (a bad address, a
// malformed CSV row), as recorded in the task's error column and sent in
// ai:task:failed.
type Failure struct {
	Reason string
}

// Error returns the reason as recorded.
func (f *Failure) Error() string { return f.Reason }

// fail returns a *Failure with a formatted reason.
func fail(format string, args ...any) error {
	return &Failure{Reason: fmt.Sprintf(format, args...)}
}

// task is one task being executed.
type task struct {
	id, user, team, typ string
	params              []byte
}

// Create records a new running task of taskType for userID in teamID with
// rowcast.task_start and returns its id; the user receives ai:task:started
// at once. params must be a JSON object (nil means {}). Create checks only
// the type and the shape of params, recording nothing when they are wrong;
// the content of params is checked by Execute, which fails the task then.
func (r *Runner) Create(ctx context.Context, userID, teamID, taskType string, params json.RawMessage) (string, error) {
	if taskType != CreateEscrow && taskType != ImportLeads {
		return "", fmt.Errorf("aitask create: unknown task type %q", taskType)
	}
	if len(bytes.TrimSpace(params)) == 0 {
		params = json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(params, &obj); err != nil || obj == nil {
		return "", errors.New("aitask create: params are not a JSON object")
	}
	var id string
	err := r.Pool.QueryRow(ctx, "select rowcast.task_start($1, $2, $3, $4::jsonb, $5)::text",
		userID, teamID, taskType, string(params), startMessage(taskType, obj)).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("aitask create: %w", err)
	}
	return id, nil
}

// startMessage is the message of ai:task:started.
func startMessage(taskType string, params map[string]json.RawMessage) string {
	switch taskType {
	case CreateEscrow:
		var addr string
		if json.Unmarshal(params["address"], &addr) == nil && addr != "" {
			if utf8.RuneCountInString(addr) > 80 {
				addr = string([]rune(addr)[:79]) + "…"
			}
			return "Creating an escrow for " + addr
		}
		return "Creating an escrow"
	default:
		return "Importing leads from a CSV file"
	}
}

// Start creates a task (Create) and executes it (Execute) in a new
// goroutine bound to ctx. done receives Execute's result and is then
// closed; a caller that does not care may ignore it (it is buffered).
func (r *Runner) Start(ctx context.Context, userID, teamID, taskType string, params json.RawMessage) (taskID string, done <-chan error, err error) {
	id, err := r.Create(ctx, userID, teamID, taskType, params)
	if err != nil {
		return "", nil, err
	}
	ch := make(chan error, 1)
	go func() {
		defer close(ch)
		ch <- r.Execute(ctx, id)
	}()
	return id, ch, nil
}

// Execute runs the running task taskID step by step to its end, writing
// each step with rowcast.task_progress, and returns when the task is
// completed or failed.
//
// It returns nil when the task completed. Otherwise it has recorded the
// failure with rowcast.task_fail and returns why: a *Failure (see
// errors.As) when the task's input was bad, ctx's error when ctx ended
// ("cancelled: the runner stopped" is recorded; the record is written even
// though ctx ended), or the database error ("internal error: …" is
// recorded). When even the failure cannot be recorded the error says so and
// the task is left running.
func (r *Runner) Execute(ctx context.Context, taskID string) error {
	t := &task{id: taskID}
	var status string
	err := r.Pool.QueryRow(ctx, "select user_id::text, team_id::text, task_type, params, status from ai_tasks where id = $1::uuid",
		taskID).Scan(&t.user, &t.team, &t.typ, &t.params, &status)
	if err != nil {
		return fmt.Errorf("aitask %s: load: %w", taskID, err)
	}
	if status != "pending" && status != "running" {
		return fmt.Errorf("aitask %s: the task is %s, not running", taskID, status)
	}
	switch t.typ {
	case CreateEscrow:
		err = r.createEscrow(ctx, t)
	case ImportLeads:
		err = r.importLeads(ctx, t)
	default:
		err = fail("unknown task type %q", t.typ)
	}
	log := r.logger().With("task", t.id, "type", t.typ, "user", t.user)
	if err == nil {
		log.Debug("ai task completed")
		return nil
	}
	var f *Failure
	var reason string
	switch {
	case errors.As(err, &f):
		reason = f.Reason
	case ctx.Err() != nil:
		reason = "cancelled: the runner stopped"
	default:
		reason = "internal error: " + err.Error()
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), failTimeout)
	defer cancel()
	if _, ferr := r.Pool.Exec(fctx, "select rowcast.task_fail($1::uuid, $2)", t.id, reason); ferr != nil {
		log.Warn("ai task failed and its failure could not be recorded", "err", err, "record_err", ferr)
		return fmt.Errorf("aitask %s: %w (recording the failure: %w)", t.id, err, ferr)
	}
	if f != nil || ctx.Err() != nil {
		log.Debug("ai task failed", "reason", reason)
	} else {
		log.Warn("ai task failed", "err", err)
	}
	return fmt.Errorf("aitask %s: %w", t.id, err)
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// progress commits one step: percent and message, in its own transaction.
func (r *Runner) progress(ctx context.Context, t *task, percent int, message string) error {
	if _, err := r.Pool.Exec(ctx, "select rowcast.task_progress($1::uuid, $2, $3)", t.id, percent, message); err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	return nil
}

// work waits out one step's StepDelay, or returns ctx's error.
func (r *Runner) work(ctx context.Context) error {
	if r.StepDelay <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(r.StepDelay)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// commit runs the task's business writes and its completion in one
// transaction that names the task's user as the actor and the task as the
// request. write returns the task's result and completion message. The
// transaction rolls back when the task is no longer running by then
// (another writer failed it), so nothing is created for a failed task.
func (r *Runner) commit(ctx context.Context, t *task, write func(tx pgx.Tx) (result any, message string, err error)) error {
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "select rowcast.set_actor($1), rowcast.set_request_id($2)", t.user, "ai-task:"+t.id); err != nil {
			return err
		}
		result, message, err := write(tx)
		if err != nil {
			return err
		}
		b, err := json.Marshal(result)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "select rowcast.task_complete($1::uuid, $2::jsonb, $3)", t.id, string(b), message); err != nil {
			return err
		}
		var status string
		if err := tx.QueryRow(ctx, "select status from ai_tasks where id = $1::uuid", t.id).Scan(&status); err != nil {
			return err
		}
		if status != "completed" {
			return fmt.Errorf("the task is %s, not running", status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("complete: %w", err)
	}
	return nil
}
