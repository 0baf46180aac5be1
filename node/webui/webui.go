// Package webui embeds the static web UI (HTML, CSS, JS modules; no build
// step) and serves it. Everything it shows comes from the local API; the
// screens are in static/js/screens, one module each.
package webui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// csp allows nothing but this origin: no inline scripts, no third-party
// resources, no framing. media-src covers blob: URLs; the camera and the
// partner's video are MediaStreams, which CSP does not govern.
const csp = "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the UI's files.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Small files, served from memory: always revalidate, so a new
		// binary's UI is never mixed with an old cached module.
		h.Set("Cache-Control", "no-cache")
		fsrv.ServeHTTP(w, r)
	})
}
