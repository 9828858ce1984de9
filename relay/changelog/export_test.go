package changelog

import "time"

// SetPaging sets h's page size and first window, so that a test crosses
// page and window boundaries with a few changes.
func SetPaging(h *History, page int, span int64) { h.page, h.span = page, span }

// BatchSQL is the reader's query of a poll's batches.
const BatchSQL = batchSQL

// Heard reports whether every tick is now announced to tl's reader: it
// listens, and the ticker has looked for its listener since it began.
func Heard(tl *Tail) bool {
	h := tl.heardFrom.Load()
	return h != 0 && time.Now().UnixNano() >= h
}
