package route

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// Env is what a routing expression sees of a call.
type Env struct {
	Method string         `expr:"method"` // the function called
	Args   []any          `expr:"args"`   // positional arguments (args[0] is the first); named ones in the order written
	Named  map[string]any `expr:"named"`  // named arguments; empty for positional calls
	User   string         `expr:"user"`   // the authenticated caller; "" for anonymous
}

// Expr is a routing function written as an expr-lang expression over Env,
// such as `args[0]` or
//
//	method == "hdb" && date(args[1]) < now() - duration("48h") ? "HDB" : "RDB"
//
// compiled once. A string result is the routing string; nil gives ""; any
// other value its JSON text.
type Expr struct {
	Source string
	prog   *vm.Program
}

// NewExpr compiles source.
func NewExpr(source string) (*Expr, error) {
	prog, err := expr.Compile(source, expr.Env(Env{}), expr.MaxNodes(1000))
	if err != nil {
		return nil, fmt.Errorf("routing expression %q: %v", source, err)
	}
	return &Expr{Source: source, prog: prog}, nil
}

// Route implements dispatch.Router.
func (e *Expr) Route(c *dispatch.Call) (string, error) {
	env := Env{Method: c.Method, User: c.User}
	switch {
	case len(c.Params) == 0:
	case c.Params[0] == '[':
		if err := json.Unmarshal(c.Params, &env.Args); err != nil {
			return "", err
		}
	case c.Params[0] == '{':
		if err := json.Unmarshal(c.Params, &env.Named); err != nil {
			return "", err
		}
		jsonrpc.Members(c.Params, func(k, _ []byte) bool {
			name, _ := jsonrpc.Unquote(k)
			env.Args = append(env.Args, env.Named[name])
			return true
		})
	}
	out, err := expr.Run(e.prog, env)
	if err != nil {
		return "", fmt.Errorf("routing expression %q: %v", e.Source, err)
	}
	switch v := out.(type) {
	case string:
		return v, nil
	case nil:
		return "", nil
	case int:
		return strconv.Itoa(v), nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return fmt.Sprint(out), nil
	}
	return string(b), nil
}

var _ dispatch.Router = (*Expr)(nil)
