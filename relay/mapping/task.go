package mapping

import (
	"encoding/json"
	"strconv"

	"github.com/rowcast/rowcast/relay"
	"github.com/rowcast/rowcast/relay/internal/jsonstr"
)

// Task statuses that end a task.
const (
	statusRunning   = "running"
	statusCompleted = "completed"
	statusFailed    = "failed"
)

// mapTask maps a change of an AI task row (user-scoped, whole row captured):
//
//	INSERT                                   → ai:task:started
//	UPDATE setting status completed          → ai:task:completed
//	UPDATE setting status failed             → ai:task:failed
//	UPDATE of status, progress or message
//	  while the task is running              → ai:task:progress
//
// Progress never goes backwards on the wire: a lower write is sent with the
// highest value sent for the task so far, which the capture keeps per task
// (rowcast.task_progress) and hands over as OldRow's "progress".
func mapTask(dst []relay.Event, r *rule, c *relay.Change) []relay.Event {
	var row, changes, old map[string]json.RawMessage
	if json.Unmarshal(c.Row, &row) != nil {
		return dst
	}
	_ = json.Unmarshal(c.Changes, &changes)
	_ = json.Unmarshal(c.OldRow, &old)
	status := jsonText(row[r.StatusColumn])
	_, statusChanged := changes[r.StatusColumn]

	b := make([]byte, 0, 256)
	b = append(b, `{"taskId":`...)
	b = jsonstr.Append(b, c.EntityID)
	var name string
	switch {
	case c.Op == relay.OpInsert:
		name = "ai:task:started"
		b = appendField(b, "taskType", row[r.TypeColumn])
		b = appendField(b, "message", row[r.MessageColumn])
	case c.Op != relay.OpUpdate:
		return dst
	case statusChanged && status == statusCompleted:
		name = "ai:task:completed"
		b = appendField(b, "result", row[r.ResultColumn])
		b = appendField(b, "message", row[r.MessageColumn])
	case statusChanged && status == statusFailed:
		name = "ai:task:failed"
		b = appendField(b, "error", row[r.ErrorColumn])
	case status == statusRunning:
		_, p := changes[r.ProgressColumn]
		_, m := changes[r.MessageColumn]
		if !p && !m && !statusChanged {
			return dst
		}
		name = "ai:task:progress"
		progress := max(jsonInt(row[r.ProgressColumn]), jsonInt(old["progress"]))
		b = append(b, `,"progress":`...)
		b = strconv.AppendInt(b, min(max(progress, 0), 100), 10)
		b = appendField(b, "message", row[r.MessageColumn])
	default:
		return dst
	}
	b = append(b, `,"timestamp":"`...)
	b = c.CommittedAt.UTC().AppendFormat(b, CommittedAtLayout)
	b = append(b, `"}`...)
	return append(dst, relay.Event{Name: name, Stream: c.Stream, Pos: c.Pos, Data: b, CommittedAt: c.CommittedAt})
}

// appendField appends ,"key":value, with null for a missing value.
func appendField(b []byte, key string, v json.RawMessage) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	if len(v) == 0 {
		return append(b, "null"...)
	}
	return append(b, v...)
}

func jsonText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

func jsonInt(v json.RawMessage) int64 {
	var f float64
	if json.Unmarshal(v, &f) != nil {
		return 0
	}
	return int64(f)
}
