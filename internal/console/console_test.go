package console_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/console"
)

func serve(t *testing.T) *httptest.Server {
	t.Helper()
	h, err := console.Handler()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, h)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

type answer struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, ts *httptest.Server, method, path string) answer {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, string(b)}
}

func TestHandler(t *testing.T) {
	ts := serve(t)
	index := get(t, ts, http.MethodGet, "/console/")
	if index.status != http.StatusOK || !strings.Contains(index.body, `<div id="app">`) {
		t.Fatalf("GET /console/: %d %q", index.status, index.body)
	}
	// The page names its script and style sheet, under /console/assets/.
	var assets []string
	for _, m := range regexp.MustCompile(`(?:src|href)="(/console/assets/[^"]+)"`).FindAllStringSubmatch(index.body, -1) {
		assets = append(assets, m[1])
	}
	if len(assets) < 2 {
		t.Fatalf("the index names %d assets, want a script and a style sheet: %s", len(assets), index.body)
	}

	for _, path := range []string{"/console/", "/console/index.html", "/console/messages/01JD0000000000000000000000", "/console/dead-letters"} {
		a := get(t, ts, http.MethodGet, path)
		if a.status != http.StatusOK || a.body != index.body {
			t.Errorf("GET %s: %d, want the app's index", path, a.status)
		}
		if ct := a.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		if cc := a.header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache: the index names the current build", path, cc)
		}
	}
	for _, path := range assets {
		a := get(t, ts, http.MethodGet, path)
		want := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}[filepath.Ext(path)]
		if a.status != http.StatusOK || a.header.Get("Content-Type") != want || len(a.body) < 100 {
			t.Errorf("GET %s: %d, Content-Type %q (want %q), %d bytes", path, a.status, a.header.Get("Content-Type"), want, len(a.body))
		}
		if cc := a.header.Get("Cache-Control"); !strings.Contains(cc, "immutable") || !strings.Contains(cc, "max-age=31536000") {
			t.Errorf("GET %s: Cache-Control %q, want a year, immutable", path, cc)
		}
	}
	// Every answer, the index and the assets, carries a strict policy.
	for _, path := range append([]string{"/console/", "/console/campaigns"}, assets...) {
		h := get(t, ts, http.MethodGet, path).header
		csp := h.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, d)
			}
		}
		if strings.Contains(csp, "unsafe-") {
			t.Errorf("GET %s: Content-Security-Policy %q allows something unsafe", path, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", path)
		}
	}
	// A missing file is a 404, not the index: a stale page asking for an
	// old asset must not get HTML as JavaScript.
	for _, path := range []string{"/console/assets/index-0000.js", "/console/nothing.css", "/console/../go.mod"} {
		if a := get(t, ts, http.MethodGet, path); a.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, a.status)
		}
	}
	if a := get(t, ts, http.MethodPost, "/console/"); a.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /console/: %d, want 405", a.status)
	}
	if a := get(t, ts, http.MethodHead, "/console/messages"); a.status != http.StatusOK || a.body != "" {
		t.Errorf("HEAD /console/messages: %d, %d bytes", a.status, len(a.body))
	}
}

// TestBuildIsCurrent fails when the console's sources changed after the
// committed build was made: run `make console` and commit dist/. The hash
// is the one web/scripts/source-hash.mjs records in dist/build.json.
func TestBuildIsCurrent(t *testing.T) {
	var files []string
	for _, root := range []string{"index.html", "package.json", "package-lock.json", "vite.config.js", "src"} {
		err := filepath.WalkDir(filepath.Join("web", root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel("web", path)
			files = append(files, filepath.ToSlash(rel))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("web", filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(f + "\x00"))
		h.Write(b)
		h.Write([]byte("\x00"))
	}
	b, err := os.ReadFile(filepath.Join("dist", "build.json"))
	if err != nil {
		t.Fatalf("%v: run make console", err)
	}
	var build struct {
		Sources string `json:"sources_sha256"`
	}
	if err := json.Unmarshal(b, &build); err != nil {
		t.Fatalf("dist/build.json: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != build.Sources {
		t.Fatalf("the console's build is stale: its sources hash to %s, the build was made from %s; run make console and commit internal/console/dist", got, build.Sources)
	}
}
