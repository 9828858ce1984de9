package triggers

import (
	"fmt"
	"strings"

	"github.com/rowcast/rowcast/config"
)

// renderTaskHelpers renders the optional SQL helpers for AI task runners in
// any language, bound to the configured AI task table t:
//
//	rowcast.task_start(user, team, type, params, message) returns uuid
//	rowcast.task_progress(id, percent, message)
//	rowcast.task_complete(id, result, message)
//	rowcast.task_fail(id, error)
//
// Each is one statement; a runner calls it in its own short transaction so
// that the progress is committed, and so sent, at once. They run with the
// caller's rights (SECURITY INVOKER, granted to PUBLIC): a role that may
// write the task table may use them, and no other; the capture trigger that
// their writes fire does the privileged part. Values are passed
// as text and converted to the columns' types by jsonb_populate_record, so
// the helpers fit whatever key types the table uses.
func renderTaskHelpers(t config.Table) string {
	tbl := ident(t.Schema()) + "." + ident(t.Name())
	c := func(col string) string { return ident(col) }
	idType := tbl + "." + c(t.IDColumn) + "%TYPE"
	typed := func(pairs ...string) string {
		// (jsonb_populate_record(NULL::tbl, jsonb_build_object('col', value, …)))
		args := make([]string, 0, len(pairs))
		for i := 0; i < len(pairs); i += 2 {
			args = append(args, literal(pairs[i])+", "+pairs[i+1])
		}
		return "jsonb_populate_record(NULL::" + tbl + ", jsonb_build_object(" + strings.Join(args, ", ") + "))"
	}
	lookup := fmt.Sprintf("v_id %s := (%s).%s;", idType, typed(t.IDColumn, "p_id::text"), c(t.IDColumn))
	params := ""
	paramsValue := ""
	if t.ParamsColumn != "" {
		params = ", " + c(t.ParamsColumn)
		paramsValue = ", coalesce(p_params, '{}'::jsonb)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `
CREATE OR REPLACE FUNCTION rowcast.task_start(p_user text, p_team text, p_type text, p_params jsonb DEFAULT '{}', p_message text DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_id text;
BEGIN
    INSERT INTO %[1]s (%[2]s, %[3]s, %[4]s, %[5]s, %[6]s, %[7]s%[8]s)
    SELECT r.%[2]s, r.%[3]s, r.%[4]s, 'running', 0, p_message%[9]s
    FROM %[10]s r
    RETURNING %[11]s::text INTO v_id;
    RETURN v_id::uuid;
END
$fn$;
`, tbl, c(t.UserColumn), c(t.TeamColumn), c(t.TypeColumn), c(t.StatusColumn), c(t.ProgressColumn), c(t.MessageColumn),
		params, paramsValue, typed(t.UserColumn, "p_user", t.TeamColumn, "p_team", t.TypeColumn, "p_type"), c(t.IDColumn))
	fmt.Fprintf(&b, `
CREATE OR REPLACE FUNCTION rowcast.task_progress(p_id uuid, p_percent integer, p_message text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    %[1]s
BEGIN
    UPDATE %[2]s SET %[3]s = 'running', %[4]s = least(greatest(p_percent, 0), 100), %[5]s = coalesce(p_message, %[5]s)
    WHERE %[6]s = v_id AND %[3]s IN ('pending', 'running');
END
$fn$;
`, lookup, tbl, c(t.StatusColumn), c(t.ProgressColumn), c(t.MessageColumn), c(t.IDColumn))
	fmt.Fprintf(&b, `
CREATE OR REPLACE FUNCTION rowcast.task_complete(p_id uuid, p_result jsonb DEFAULT NULL, p_message text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    %[1]s
BEGIN
    UPDATE %[2]s SET %[3]s = 'completed', %[4]s = 100, %[5]s = (%[8]s).%[5]s, %[6]s = coalesce(p_message, %[6]s)
    WHERE %[7]s = v_id AND %[3]s IN ('pending', 'running');
END
$fn$;
`, lookup, tbl, c(t.StatusColumn), c(t.ProgressColumn), c(t.ResultColumn), c(t.MessageColumn), c(t.IDColumn),
		typed(t.ResultColumn, "p_result"))
	fmt.Fprintf(&b, `
CREATE OR REPLACE FUNCTION rowcast.task_fail(p_id uuid, p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    %[1]s
BEGIN
    UPDATE %[2]s SET %[3]s = 'failed', %[4]s = p_error
    WHERE %[5]s = v_id AND %[3]s IN ('pending', 'running');
END
$fn$;
`, lookup, tbl, c(t.StatusColumn), c(t.ErrorColumn), c(t.IDColumn))
	b.WriteString(`
GRANT EXECUTE ON FUNCTION rowcast.task_start(text, text, text, jsonb, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.task_progress(uuid, integer, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.task_complete(uuid, jsonb, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.task_fail(uuid, text) TO PUBLIC;
`)
	return b.String()
}
