package app

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	for path, want := range map[string]string{
		"/":                               "<div id=\"root\">",
		"/?user=4":                        "importmap",
		"/app.js":                         "syncQueries",
		"/app.css":                        ".badge-connected",
		"/vendor/react.js":                "window.React",
		"/vendor/query-core/index.js":     "QueryClient",
		"/vendor/react.production.min.js": "react.production.min.js",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s: %d, body has %q: %v", path, rec.Code, want, strings.Contains(rec.Body.String(), want))
		}
		if strings.HasSuffix(path, ".js") && !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript") {
			t.Errorf("GET %s: Content-Type %q; browsers refuse a module that is not JavaScript", path, rec.Header().Get("Content-Type"))
		}
	}
	for _, path := range []string{"/vendor/", "/nope.js", "/app.go"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 404 {
			t.Errorf("GET %s: %d, want 404", path, rec.Code)
		}
	}
}

// The vendored libraries are byte for byte the packages package-lock.json
// pins (vendor.sh copies them). Without node_modules it skips, unless CI is
// set: .ci/run installs them.
func TestVendoredMatchesPackages(t *testing.T) {
	if _, err := os.Stat("node_modules"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node_modules missing (npm ci in %s): %v", "cmd/rowcast/internal/demo/app", err)
		}
		t.Skip("node_modules missing; run npm ci here")
	}
	pairs := map[string]string{
		"static/vendor/react.production.min.js":     "node_modules/react/umd/react.production.min.js",
		"static/vendor/react-dom.production.min.js": "node_modules/react-dom/umd/react-dom.production.min.js",
	}
	mods, err := filepath.Glob("node_modules/@tanstack/query-core/build/modern/*.js")
	if err != nil || len(mods) < 10 {
		t.Fatalf("query-core modules: %d, %v", len(mods), err)
	}
	for _, m := range mods {
		pairs["static/vendor/query-core/"+filepath.Base(m)] = m
	}
	vendored, _ := filepath.Glob("static/vendor/query-core/*.js")
	if len(vendored) != len(mods) {
		t.Errorf("%d vendored query-core modules, the package has %d: run vendor.sh", len(vendored), len(mods))
	}
	for got, want := range pairs {
		a, err1 := os.ReadFile(got)
		b, err2 := os.ReadFile(want)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s (%v, %v): run vendor.sh", got, want, err1, err2)
		}
	}
}
