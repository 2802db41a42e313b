package admin

import (
	_ "embed"
	"net/http"
)

//go:embed page.html
var page []byte

// Page serves the status page: one self-contained HTML file that reads
// /status every two seconds. No build step.
func Page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(page)
}
