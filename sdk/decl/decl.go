// Package decl parses function declarations: the readable signatures a
// servant announces and an allowlist file lists, such as
//
//	proc1(sym symbol)
//	sleep(ms int, label string = "nap") idempotent
//	total(values list<float>)
//
// A declaration names the function, each parameter with its type, an
// optional JSON default that makes the parameter optional, and flags after
// the closing parenthesis.
package decl

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/mserve/mserve/sdk/jsonrpc"
)

// Type is a parameter type.
type Type struct {
	Name string // one of Types, or "list"
	Elem *Type  // element type of a list
}

// Types are the scalar and container type names a declaration may use.
var Types = []string{"any", "bool", "int", "float", "string", "symbol", "date", "timestamp", "duration", "bytes", "dict", "list<T>"}

func (t Type) String() string {
	if t.Name == "list" {
		return "list<" + t.Elem.String() + ">"
	}
	return t.Name
}

// Param is one declared parameter.
type Param struct {
	Name    string
	Type    Type
	Default []byte // raw JSON default; nil when the parameter is required
}

// Optional reports whether the parameter may be omitted.
func (p Param) Optional() bool { return p.Default != nil }

// Func is one parsed declaration.
type Func struct {
	Name       string
	Params     []Param
	Idempotent bool   // safe to run twice: mserve may re-dispatch it after a servant is lost
	Source     string // the declaration as written
}

// Param returns the parameter called name, or nil.
func (f *Func) Param(name string) *Param {
	for i := range f.Params {
		if f.Params[i].Name == name {
			return &f.Params[i]
		}
	}
	return nil
}

// String formats the declaration in canonical form.
func (f *Func) String() string {
	var b strings.Builder
	b.WriteString(f.Name)
	b.WriteByte('(')
	for i, p := range f.Params {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.Name)
		b.WriteByte(' ')
		b.WriteString(p.Type.String())
		if p.Default != nil {
			b.WriteString(" = ")
			b.Write(p.Default)
		}
	}
	b.WriteByte(')')
	if f.Idempotent {
		b.WriteString(" idempotent")
	}
	return b.String()
}

// Parse parses one declaration.
func Parse(src string) (*Func, error) {
	p := &parser{src: src}
	f, err := p.fn()
	if err != nil {
		return nil, err
	}
	f.Source = strings.TrimSpace(src)
	return f, nil
}

// MustParse is Parse for declarations fixed in code; it panics on error.
func MustParse(src string) *Func {
	f, err := Parse(src)
	if err != nil {
		panic(err)
	}
	return f
}

// Error is a parse error with the column it was found at (1-based).
type Error struct {
	Col int
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("column %d: %s", e.Col, e.Msg) }

type parser struct {
	src string
	pos int
}

func (p *parser) errf(format string, args ...any) error {
	return &Error{Col: p.pos + 1, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) space() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t') {
		p.pos++
	}
}

func (p *parser) peek() byte {
	p.space()
	if p.pos < len(p.src) {
		return p.src[p.pos]
	}
	return 0
}

func (p *parser) expect(c byte) error {
	if p.peek() != c {
		return p.errf("expected %q, found %s", c, p.found())
	}
	p.pos++
	return nil
}

func (p *parser) found() string {
	if p.pos >= len(p.src) {
		return "end of declaration"
	}
	return fmt.Sprintf("%q", p.src[p.pos:min(len(p.src), p.pos+12)])
}

// ident reads a name: a letter or '_' followed by letters, digits, '_' or
// '.', the dots allowing namespaced functions such as ".api.get".
func (p *parser) ident(what string) (string, error) {
	p.space()
	start := p.pos
	for p.pos < len(p.src) {
		r := rune(p.src[p.pos])
		if r == '_' || r == '.' || unicode.IsLetter(r) || (p.pos > start && unicode.IsDigit(r)) {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		return "", p.errf("expected %s, found %s", what, p.found())
	}
	return p.src[start:p.pos], nil
}

func (p *parser) fn() (*Func, error) {
	name, err := p.ident("a function name")
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(name, "rpc.") {
		return nil, &Error{Col: 1, Msg: fmt.Sprintf("function name %q: the rpc. prefix is reserved for JSON-RPC extensions", name)}
	}
	f := &Func{Name: name}
	if err := p.expect('('); err != nil {
		return nil, err
	}
	if p.peek() != ')' {
		for {
			prm, err := p.param(f)
			if err != nil {
				return nil, err
			}
			f.Params = append(f.Params, prm)
			if p.peek() == ',' {
				p.pos++
				continue
			}
			break
		}
	}
	if err := p.expect(')'); err != nil {
		return nil, err
	}
	for p.peek() != 0 {
		flag, err := p.ident("a flag")
		if err != nil {
			return nil, err
		}
		switch flag {
		case "idempotent":
			f.Idempotent = true
		default:
			return nil, p.errf("unknown flag %q (known: idempotent)", flag)
		}
	}
	return f, nil
}

func (p *parser) param(f *Func) (Param, error) {
	name, err := p.ident("a parameter name")
	if err != nil {
		return Param{}, err
	}
	if f.Param(name) != nil {
		return Param{}, p.errf("parameter %q declared twice", name)
	}
	t, err := p.typ()
	if err != nil {
		return Param{}, fmt.Errorf("parameter %q: %w", name, err)
	}
	prm := Param{Name: name, Type: t}
	if p.peek() == '=' {
		p.pos++
		p.space()
		end, err := jsonrpc.ValueEnd([]byte(p.src), p.pos)
		if err != nil {
			return Param{}, p.errf("parameter %q: default must be a JSON value: %v", name, err)
		}
		prm.Default = []byte(p.src[p.pos:end])
		p.pos = end
	} else if len(f.Params) > 0 && f.Params[len(f.Params)-1].Optional() {
		return Param{}, p.errf("parameter %q: a required parameter cannot follow an optional one", name)
	}
	return prm, nil
}

func (p *parser) typ() (Type, error) {
	start := p.pos
	name, err := p.ident("a type")
	if err != nil {
		return Type{}, err
	}
	if name == "list" {
		if err := p.expect('<'); err != nil {
			return Type{}, err
		}
		elem, err := p.typ()
		if err != nil {
			return Type{}, err
		}
		if err := p.expect('>'); err != nil {
			return Type{}, err
		}
		return Type{Name: "list", Elem: &elem}, nil
	}
	for _, t := range Types {
		if t == name {
			return Type{Name: name}, nil
		}
	}
	p.pos = start
	p.space()
	return Type{}, p.errf("unknown type %q (known: %s)", name, strings.Join(Types, ", "))
}
