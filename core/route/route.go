// Package route derives a call's routing string and names the routing
// functions MSERVE_ROUTING can select.
package route

import (
	"github.com/mserve/mserve/core/registry"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// FirstArg returns the call's first argument as its routing string, as the
// kdb+ mserve does: the first element of positional params, or the first
// member of named params in the order the client wrote them. A string
// argument gives its value; any other JSON value gives its JSON text
// (42, true, {"a":1}). A call without arguments gets the empty string.
func FirstArg(c *dispatch.Call) (string, error) {
	raw := FirstParam(c.Params)
	if raw == nil {
		return "", nil
	}
	if raw[0] == '"' {
		return jsonrpc.Unquote(raw)
	}
	return string(raw), nil
}

// FirstParam returns the raw first argument of params (an array or object),
// or nil when there is none.
func FirstParam(params []byte) []byte {
	var first []byte
	take := func(v []byte) bool { first = v; return false }
	switch {
	case len(params) == 0:
	case params[0] == '[':
		jsonrpc.Elements(params, take)
	case params[0] == '{':
		jsonrpc.Members(params, func(_, v []byte) bool { return take(v) })
	}
	return first
}

// Method uses the function name as the routing string, so that all calls to
// one function prefer the same servant.
func Method(c *dispatch.Call) (string, error) { return c.Method, nil }

// None gives every call the empty routing string.
func None(*dispatch.Call) (string, error) { return "", nil }

// Registry names routing functions.
type Registry = registry.Registry[dispatch.Router]

// Default is the routing function used when none is named.
const Default = "first"

// Builtins returns a registry holding the built-in routing functions.
func Builtins() *Registry {
	r := registry.New[dispatch.Router]("routing function")
	for _, e := range []registry.Entry[dispatch.Router]{
		{Name: "first", Summary: "the first argument (kdb+ mserve's default)", Value: dispatch.RouterFunc(FirstArg)},
		{Name: "method", Summary: "the function name", Value: dispatch.RouterFunc(Method)},
		{Name: "none", Summary: "the empty string for every call", Value: dispatch.RouterFunc(None)},
	} {
		e.Source = "builtin"
		r.MustRegister(e)
	}
	return r
}
