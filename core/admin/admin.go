// Package admin is mserve's admin HTTP endpoint: status (JSON), health,
// and maintenance of servants (drain, undrain, restart) and configuration
// (reload). It listens on its own address, which should stay private.
package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mserve/mserve/core/engine"
)

// Balancer is what the admin endpoint operates on.
type Balancer interface {
	Status() any
	Servant(name string) (*engine.Servant, int)
	RestartServant(index int) error
	Reload() error
}

// Handler serves the admin endpoint.
type Handler struct {
	b   Balancer
	mux *http.ServeMux
}

// New returns the admin handler for b.
func New(b Balancer) *Handler {
	h := &Handler{b: b, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /status", h.status)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	h.mux.HandleFunc("POST /servants/{name}/drain", h.drain)
	h.mux.HandleFunc("POST /servants/{name}/undrain", h.undrain)
	h.mux.HandleFunc("POST /servants/{name}/restart", h.restart)
	h.mux.HandleFunc("POST /reload", h.reload)
	return h
}

// Handle adds a route, for the pages other packages serve on the admin
// address (status page, metrics, query log).
func (h *Handler) Handle(pattern string, handler http.Handler) { h.mux.Handle(pattern, handler) }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func (h *Handler) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.b.Status())
}

// servant finds the servant named in the path, or answers 404.
func (h *Handler) servant(w http.ResponseWriter, r *http.Request) (*engine.Servant, int, bool) {
	name := r.PathValue("name")
	s, idx := h.b.Servant(name)
	if s == nil {
		writeError(w, http.StatusNotFound, "no servant called %q", name)
		return nil, 0, false
	}
	return s, idx, true
}

// waitParam reads ?wait=DURATION (default 0: do not wait).
func waitParam(w http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		writeError(w, http.StatusBadRequest, "wait=%q: want a duration such as 30s", v)
		return 0, false
	}
	return d, true
}

// waitIdle waits up to d for s to finish its calls and reports whether it
// did.
func waitIdle(ctx context.Context, s *engine.Servant, d time.Duration) bool {
	idle := s.Idle()
	if d == 0 { // no waiting: is it idle now?
		select {
		case <-idle:
			return true
		default:
			return false
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// drain stops new calls to a servant; with ?wait=D it answers once the
// servant's running calls have finished (200) or after D (202, still
// draining).
func (h *Handler) drain(w http.ResponseWriter, r *http.Request) {
	s, _, ok := h.servant(w, r)
	if !ok {
		return
	}
	d, ok := waitParam(w, r)
	if !ok {
		return
	}
	s.SetDraining(true)
	idle := waitIdle(r.Context(), s, d)
	v := s.View()
	status := http.StatusAccepted
	if idle {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{"servant": v.Name, "draining": true, "idle": idle, "in_flight": v.InFlight})
}

func (h *Handler) undrain(w http.ResponseWriter, r *http.Request) {
	s, _, ok := h.servant(w, r)
	if !ok {
		return
	}
	s.SetDraining(false)
	writeJSON(w, http.StatusOK, map[string]any{"servant": s.Name(), "draining": false})
}

// restart drains a servant mserve started, waits for its calls (up to
// ?wait=, default 30s), restarts its process, and puts it back in dispatch.
func (h *Handler) restart(w http.ResponseWriter, r *http.Request) {
	s, idx, ok := h.servant(w, r)
	if !ok {
		return
	}
	if idx < 0 {
		writeError(w, http.StatusConflict, "%s was not started by mserve: restart it where it runs (drain it first)", s.Name())
		return
	}
	d, ok := waitParam(w, r)
	if !ok {
		return
	}
	if d == 0 {
		d = 30 * time.Second
	}
	s.SetDraining(true)
	idle := waitIdle(r.Context(), s, d)
	if !idle {
		s.SetDraining(false)
		writeError(w, http.StatusGatewayTimeout, "%s still has calls running after %v; not restarted", s.Name(), d)
		return
	}
	err := h.b.RestartServant(idx)
	s.SetDraining(false) // back in dispatch as soon as its new process is up
	if err != nil {
		writeError(w, http.StatusInternalServerError, "restarting %s: %v", s.Name(), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"servant": s.Name(), "restarted": true})
}

func (h *Handler) reload(w http.ResponseWriter, _ *http.Request) {
	if err := h.b.Reload(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "%s", strings.TrimSpace(err.Error()))
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"reloaded": true})
}
