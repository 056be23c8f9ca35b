// Package console is chatq's web console: a single-page application built
// from the sources in web/ (Vite, Preact, uPlot) into dist/, which is
// committed and embedded, so that the chatq binary serves it with nothing
// else installed. It talks to chatq only through the public HTTP API.
package console

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is where the console is served.
const Prefix = "/console/"

//go:embed dist
var dist embed.FS

// contentType is the type of a file a build holds, by its extension; a
// type is never left to sniffing (and nosniff forbids it). Other files are
// not served.
func contentType(ext string) (string, bool) {
	switch ext {
	case ".html":
		return "text/html; charset=utf-8", true
	case ".js":
		return "text/javascript; charset=utf-8", true
	case ".css":
		return "text/css; charset=utf-8", true
	case ".svg":
		return "image/svg+xml", true
	case ".png":
		return "image/png", true
	case ".ico":
		return "image/x-icon", true
	case ".json":
		return "application/json", true
	case ".woff2":
		return "font/woff2", true
	}
	return "", false
}

// CSP is the console's Content-Security-Policy: everything from chatq
// itself, nothing inline, no frames. uPlot and Preact set styles through
// the DOM, which style-src does not govern.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console under Prefix: the built files, with the
// app's index for any other path without an extension (the app's own
// routes, such as /console/messages/01J...).
func Handler() (http.Handler, error) {
	files, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, fmt.Errorf("console: open the build: %w", err)
	}
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		return nil, fmt.Errorf("console: read the build's index.html: %w", err)
	}
	return &handler{files: files, index: index}, nil
}

type handler struct {
	files fs.FS
	index []byte
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean(r.URL.Path), strings.TrimSuffix(Prefix, "/"))
	name = strings.TrimPrefix(name, "/")
	ext := path.Ext(name)
	if name == "" || name == "index.html" || ext == "" {
		h.serveIndex(w, r)
		return
	}
	b, err := fs.ReadFile(h.files, name)
	ct, known := contentType(ext)
	if err != nil || !known {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	hd.Set("Content-Type", ct)
	if strings.HasPrefix(name, "assets/") {
		// Vite names every asset by the hash of its content.
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// serveIndex answers with the app's page, which must be asked for again
// each time: it names the current build's assets.
func (h *handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	ct, _ := contentType(".html")
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(h.index))
}
