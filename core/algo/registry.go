// Package algo holds mserve's built-in dispatch algorithms and registers
// them by name. Lua scripts and compiled plugins register their algorithms
// in the same kind of registry.
package algo

import (
	"time"

	"github.com/mserve/mserve/core/registry"
	"github.com/mserve/mserve/sdk/dispatch"
)

// Config carries the settings built-in algorithms read.
type Config struct {
	// RouteExpire is match's routeExpireMs: how long an idle servant keeps
	// its claim on its last routing string before it may take a new one.
	RouteExpire time.Duration
	// WarmKeys is how many routing strings warm remembers per servant
	// (DefaultWarmKeys when 0).
	WarmKeys int
	// WarmHot is the share of recent calls that makes a routing string hot
	// for warm (DefaultWarmHot when 0).
	WarmHot float64
}

// DefaultRouteExpire is the kdb+ mserve_np.q value of routeExpireMs.
const DefaultRouteExpire = 12 * time.Second

// Default is the algorithm used when none is named.
const Default = "match"

// Factory makes a new instance of an algorithm. Each balancer gets its own
// instance, so algorithms may keep state without locking: mserve calls an
// instance from one goroutine at a time.
type Factory func(cfg Config) (dispatch.Algorithm, error)

// Registry names algorithm factories.
type Registry = registry.Registry[Factory]

// Builtins returns a new registry holding the built-in algorithms.
func Builtins() *Registry {
	r := registry.New[Factory]("dispatch algorithm")
	for _, e := range []registry.Entry[Factory]{
		{Name: "orig", Summary: "oldest call to the first free servant in list order (kdb+ mserve)",
			Value: func(Config) (dispatch.Algorithm, error) { return Orig{}, nil }},
		{Name: "even", Summary: "oldest call to the next free servant after the last one used (kdb+ mserve)",
			Value: func(Config) (dispatch.Algorithm, error) { return &Even{}, nil }},
		{Name: "match", Summary: "prefer the free servant whose last routing string matches (kdb+ mserve; default)",
			Value: func(c Config) (dispatch.Algorithm, error) { return NewMatch(c.RouteExpire), nil }},
		{Name: "least", Summary: "oldest call to the free servant with the fewest pending calls",
			Value: func(Config) (dispatch.Algorithm, error) { return &Least{}, nil }},
		{Name: "warm", Summary: "keep each routing string on servants whose caches (modelled as their last -warm-keys strings) hold it; only hot strings spread to more servants",
			Value: func(c Config) (dispatch.Algorithm, error) { return NewWarm(c.WarmKeys, c.WarmHot), nil }},
	} {
		e.Source = "builtin"
		r.MustRegister(e)
	}
	return r
}

// New makes an instance of the algorithm called name from r.
func New(r *Registry, name string, cfg Config) (dispatch.Algorithm, error) {
	e, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	return e.Value(cfg)
}
