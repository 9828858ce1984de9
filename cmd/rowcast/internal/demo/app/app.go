// Package app is the demo CRM's page, served by `rowcast demo` at "/": a
// build-free React page (static/app.js) on the relay's browser client, its
// TanStack Query sync and React bindings (package web), with React and
// TanStack's query-core vendored under static/vendor (vendor.sh copies them
// from the packages package-lock.json pins; TestVendoredMatchesPackages
// checks the copies).
package app

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Handler serves the page at "/" (also for "/?user=2") and its files;
// unknown paths are 404. Files are revalidated on every load (no-cache) so
// a new binary's page is never mixed with an old one's modules.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("app: " + err.Error()) // the embed pattern guarantees the folder
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != "/" {
			http.NotFound(w, r) // no directory listings
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		if strings.HasSuffix(r.URL.Path, ".js") {
			h.Set("Content-Type", "text/javascript; charset=utf-8")
		}
		files.ServeHTTP(w, r)
	})
}
