package changelog

// SetPaging sets h's page size and first window, so that a test crosses
// page and window boundaries with a few changes.
func SetPaging(h *History, page int, span int64) { h.page, h.span = page, span }

// BatchSQL is the reader's query of a poll's batches.
const BatchSQL = batchSQL
