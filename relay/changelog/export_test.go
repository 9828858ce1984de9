package changelog

// SetPaging sets h's page size and first window, so that a test crosses
// page and window boundaries with a few changes.
func SetPaging(h *History, page int, span int64) { h.page, h.span = page, span }

// BatchSQL is the reader's query of a poll's batches.
const BatchSQL = batchSQL

// Announced reports whether the last poll of tl's reader counted on every
// tick being announced to it: it then polls only every PollMax.
func Announced(tl *Tail) bool { return tl.announced.Load() }
