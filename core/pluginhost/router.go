package pluginhost

import (
	"context"
	"fmt"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

// Router is a dispatch.Router whose routing strings a plugin computes, one
// round trip per call (a routing string is needed before the call can
// wait): prefer an expression or a Lua routing function where speed
// matters. fallback routes calls while the plugin cannot.
type Router struct {
	h        *Host
	name     string
	fallback dispatch.Router
}

// NewRouter returns the plugin routing function called name.
func NewRouter(h *Host, name string, fallback dispatch.Router) *Router {
	return &Router{h: h, name: name, fallback: fallback}
}

// Route implements dispatch.Router.
func (r *Router) Route(c *dispatch.Call) (string, error) {
	stub := r.h.current()
	if stub == nil {
		r.h.Stats.Fallbacks.Add(1)
		return r.fallback.Route(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.h.cfg.Deadline)
	defer cancel()
	resp, err := stub.Route(ctx, &plugin.RouteRequest{Router: r.name, Call: *c})
	if err != nil {
		r.h.failed(fmt.Errorf("plugin routing function %q: %w", r.name, err))
		r.h.Stats.Fallbacks.Add(1)
		return r.fallback.Route(c)
	}
	r.h.succeeded()
	return resp.Route, nil
}

var _ dispatch.Router = (*Router)(nil)
