package decl

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/mserve/mserve/sdk/jsonrpc"
)

// maxParams is how many arguments are resolved without allocating.
const maxParams = 8

// Checker is a declaration compiled for checking calls: its condition is
// compiled once, its defaults decoded once. It is safe for concurrent use.
type Checker struct {
	Decl     *Func
	where    *vm.Program
	defaults []any // decoded default per parameter, for conditions
	envs     sync.Pool
	vms      sync.Pool
}

// Compile compiles a declaration for checking calls. A condition that does
// not parse, or does not type-check against the parameters, or is not
// boolean, is an error.
func Compile(d *Func) (*Checker, error) {
	f := &Checker{Decl: d, defaults: make([]any, len(d.Params))}
	for i, p := range d.Params {
		if p.Default != nil {
			v, err := p.Check(p.Default)
			if err != nil {
				return nil, err
			}
			f.defaults[i] = exprValue(v)
		}
	}
	if d.Where != "" {
		env := make(map[string]any, len(d.Params))
		for _, p := range d.Params {
			env[p.Name] = zeroOf(p.Type)
		}
		prog, err := expr.Compile(d.Where, expr.Env(env), expr.AsBool(), expr.MaxNodes(1000))
		if err != nil {
			return nil, fmt.Errorf("%s: where: %v", d.Name, err)
		}
		f.where = prog
		f.envs.New = func() any { return make(map[string]any, len(d.Params)) }
		f.vms.New = func() any { return &vm.VM{} }
	}
	return f, nil
}

// zeroOf is a value of the Go type a condition sees for t.
func zeroOf(t Type) any {
	switch t.Name {
	case "bool":
		return false
	case "int":
		return 0
	case "float":
		return 0.0
	case "string", "symbol":
		return ""
	case "date", "timestamp":
		return time.Time{}
	case "duration":
		return time.Duration(0)
	case "bytes":
		return []byte(nil)
	case "list":
		return []any(nil)
	case "dict":
		return map[string]any(nil)
	}
	return nil
}

// exprValue adapts a checked value for conditions: ints are int.
func exprValue(v any) any {
	if n, ok := v.(int64); ok {
		return int(n)
	}
	return v
}

// Check checks params (the raw JSON of a call's arguments) against the
// declaration: argument count and names, each argument's type and
// constraints, and the condition. It returns the params to forward: the
// same bytes, or, when optional arguments were left out, the same bytes
// with the defaults spliced in.
func (f *Checker) Check(params []byte) ([]byte, *jsonrpc.Error) {
	d := f.Decl
	var store [maxParams][]byte
	args := store[:0]
	if len(d.Params) > maxParams {
		args = make([][]byte, 0, len(d.Params))
	}
	args = args[:len(d.Params)]
	named := false
	switch {
	case len(params) == 0 || string(params) == "null":
	case params[0] == '[':
		n := 0
		jsonrpc.Elements(params, func(v []byte) bool {
			if n < len(args) {
				args[n] = v
			}
			n++
			return true
		})
		if n > len(args) {
			return nil, f.invalid("", "%s takes %d argument(s), got %d", d.Name, len(args), n)
		}
	case params[0] == '{':
		named = true
		var bad *jsonrpc.Error
		jsonrpc.Members(params, func(k, v []byte) bool {
			name, _ := jsonrpc.Unquote(k)
			for i := range d.Params {
				if d.Params[i].Name == name {
					if args[i] != nil {
						bad = f.invalid(name, "%s: parameter %q given twice", d.Name, name)
						return false
					}
					args[i] = v
					return true
				}
			}
			bad = f.invalid(name, "%s has no parameter %q (it takes %s)", d.Name, name, paramList(d))
			return false
		})
		if bad != nil {
			return nil, bad
		}
	default:
		return nil, f.invalid("", "params must be an array or an object")
	}

	var env map[string]any
	if f.where != nil {
		env = f.envs.Get().(map[string]any)
		defer func() { clear(env); f.envs.Put(env) }()
	}
	missing := false
	for i := range d.Params {
		p := &d.Params[i]
		if args[i] == nil {
			if !p.Optional() {
				return nil, f.invalid(p.Name, "%s: missing required parameter %q (%s)", d.Name, p.Name, p.Expects())
			}
			missing = true
			if env != nil {
				env[p.Name] = f.defaults[i]
			}
			continue
		}
		if env == nil {
			if err := p.Validate(args[i]); err != nil {
				return nil, f.argError(err)
			}
			continue
		}
		v, err := p.Check(args[i])
		if err != nil {
			return nil, f.argError(err)
		}
		env[p.Name] = exprValue(v)
	}
	if env != nil {
		m := f.vms.Get().(*vm.VM)
		out, err := m.Run(f.where, env)
		f.vms.Put(m)
		if err != nil {
			return nil, f.invalid("", "%s: condition %q could not be evaluated: %v", d.Name, d.Where, err)
		}
		if ok, _ := out.(bool); !ok {
			return nil, f.invalid("", "%s: arguments break the condition: %s", d.Name, d.Where)
		}
	}
	if missing {
		params = f.fillDefaults(params, args, named)
	}
	return params, nil
}

func paramList(d *Func) string {
	if len(d.Params) == 0 {
		return "no parameters"
	}
	names := make([]string, len(d.Params))
	for i, p := range d.Params {
		names[i] = p.Name
	}
	return fmt.Sprintf("%q", names)
}

// fillDefaults returns params with the defaults of left-out parameters
// added, without re-encoding anything the client sent.
func (f *Checker) fillDefaults(params []byte, args [][]byte, named bool) []byte {
	d := f.Decl
	if named {
		out := make([]byte, 0, len(params)+32)
		body := params[:len(params)-1] // without the closing brace
		out = append(out, body...)
		empty := true // no member written yet: the next needs no comma
		for _, a := range args {
			if a != nil {
				empty = false
				break
			}
		}
		for i, a := range args {
			if a != nil {
				continue
			}
			if !empty {
				out = append(out, ',')
			}
			empty = false
			out = jsonrpc.AppendString(out, d.Params[i].Name)
			out = append(out, ':')
			out = append(out, d.Params[i].Default...)
		}
		return append(out, '}')
	}
	out := make([]byte, 0, len(params)+32)
	first := true
	if len(params) > 0 && params[0] == '[' {
		out = append(out, params[:len(params)-1]...) // without the closing bracket
		for _, a := range args {
			if a != nil {
				first = false
				break
			}
		}
	} else {
		out = append(out, '[')
	}
	for i, a := range args {
		if a != nil {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, d.Params[i].Default...)
	}
	return append(out, ']')
}

func (f *Checker) invalid(param, format string, args ...any) *jsonrpc.Error {
	e := jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: "+format, args...)
	if param != "" {
		e.Data, _ = json.Marshal(map[string]string{"param": param})
	}
	return e
}

func (f *Checker) argError(err error) *jsonrpc.Error {
	var ae *ArgError
	if !errors.As(err, &ae) {
		return f.invalid("", "%s: %v", f.Decl.Name, err)
	}
	e := jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: %v", f.Decl.Name, ae)
	e.Data, _ = json.Marshal(map[string]string{"param": ae.Param, "expects": ae.Expects, "got": ae.Got, "problem": ae.Problem})
	return e
}
