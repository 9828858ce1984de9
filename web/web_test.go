package web

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestHandlerServesEveryFile(t *testing.T) {
	h := Handler()
	for _, name := range names {
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+name, nil))
		if rec.Code != http.StatusOK || rec.Body.String() != string(want) {
			t.Fatalf("GET /%s: %d, %d bytes; want 200 and the file's %d bytes", name, rec.Code, rec.Body.Len(), len(want))
		}
		ctype := rec.Header().Get("Content-Type")
		if strings.HasSuffix(name, ".js") && !strings.HasPrefix(ctype, "text/javascript") {
			t.Errorf("GET /%s: Content-Type %q, want text/javascript (browsers refuse modules otherwise)", name, ctype)
		}
		etag := rec.Header().Get("ETag")
		req := httptest.NewRequest(http.MethodGet, "/"+name, nil)
		req.Header.Set("If-None-Match", etag)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if etag == "" || rec.Code != http.StatusNotModified {
			t.Errorf("GET /%s with If-None-Match %q: %d, want 304", name, etag, rec.Code)
		}
	}
	for _, path := range []string{"/", "/web.go", "/package.json", "/test/client.test.js"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/client.js", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /client.js: %d, want 405", rec.Code)
	}
}

// TestNode runs the browser code's unit tests (node --test), installing
// their pinned packages with npm ci when node_modules is missing. Without
// Node.js it skips, unless CI is set.
func TestNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node not found and CI is set: %v", err)
		}
		t.Skipf("node not found: %v", err)
	}
	if _, err := os.Stat("node_modules/@tanstack/query-core"); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatalf("node_modules missing and npm not found: %v", err)
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	cmd := exec.Command(node, "--test", "--test-reporter=spec", "test/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
