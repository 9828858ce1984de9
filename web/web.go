// Package web holds rowcast's browser half: the client library
// (client.js), its TanStack Query sync (tanstack.js) and React bindings
// (react.js), each with TypeScript declarations, embedded so the relay
// serves them at /client.js, /tanstack.js and /react.js (and the .d.ts
// beside each). The same files form an npm package (package.json beside
// them) for a frontend that bundles. Its tests run under `node --test`
// (web_test.go runs them with the Go tests).
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

//go:embed client.js client.d.ts tanstack.js tanstack.d.ts react.js react.d.ts
var files embed.FS

// names are the embedded files, served at "/" + name.
var names = []string{"client.js", "client.d.ts", "tanstack.js", "tanstack.d.ts", "react.js", "react.d.ts"}

// Handler serves the embedded files at "/<name>" (an unknown path is 404)
// with an ETag of their content, so a browser revalidates instead of
// downloading them again, and CORS open to every origin, so a frontend on
// another origin can import them (they hold no secret).
func Handler() http.Handler {
	type asset struct {
		body  []byte
		etag  string
		ctype string
	}
	assets := make(map[string]asset, len(names))
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			panic("web: embedded file missing: " + name) // a build error, caught by the tests
		}
		sum := sha256.Sum256(b)
		ctype := "text/javascript; charset=utf-8"
		if strings.HasSuffix(name, ".d.ts") {
			ctype = "application/typescript; charset=utf-8"
		}
		assets["/"+name] = asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: ctype}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}

// Paths returns the paths Handler serves ("/client.js", …), for a mux.
func Paths() []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "/" + n
	}
	return out
}
