// Package decl parses function declarations, the readable signatures a
// servant announces and an allowlist file lists, and checks arguments
// against them:
//
//	proc1(sym symbol)
//	sleep(ms int 0..60000, label string len ..20 = "nap") idempotent
//	order(side string in ["buy","sell"], qty int 1.., ref string /[A-Z]{3}[0-9]+/)
//	hdb(sym symbol, start date, end date) where start <= end && end - start <= duration("720h")
//
// A declaration names the function, then each parameter with its type,
// optional constraints (a value range lo..hi, a length range len lo..hi, a
// /regexp/ the whole value must match, a set of allowed values in [...]) and
// an optional JSON default that makes it optional; then flags
// (idempotent); then an optional where clause, an expr-lang condition over
// the parameters that mserve compiles and checks.
package decl

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

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
	Range   *Bounds        // allowed values (int, float, date, timestamp, duration); nil for any
	Len     *Bounds        // allowed lengths (string, symbol, bytes, list, dict); nil for any
	Pattern *regexp.Regexp // the whole value must match (string, symbol); nil for any
	Enum    []Enum         // allowed values; nil for any
	Default []byte         // raw JSON default; nil when the parameter is required
}

// Bounds is an inclusive range lo..hi; either end may be open.
type Bounds struct {
	Lo, Hi string // as written; "" when open
	lo, hi any    // parsed for the parameter's type (int64, float64, time.Time, time.Duration); nil when open
}

func (b *Bounds) String() string { return b.Lo + ".." + b.Hi }

// Enum is one allowed value.
type Enum struct {
	Raw   []byte // as written
	value any    // parsed for the parameter's type
}

// Optional reports whether the parameter may be omitted.
func (p Param) Optional() bool { return p.Default != nil }

// Func is one parsed declaration.
type Func struct {
	Name       string
	Params     []Param
	Idempotent bool   // safe to run twice: mserve may re-dispatch it after a servant is lost
	Where      string // condition over the parameters (expr-lang); "" for none
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
		b.WriteString(p.Expects())
		if p.Default != nil {
			b.WriteString(" = ")
			b.Write(p.Default)
		}
	}
	b.WriteByte(')')
	if f.Idempotent {
		b.WriteString(" idempotent")
	}
	if f.Where != "" {
		b.WriteString(" where ")
		b.WriteString(f.Where)
	}
	return b.String()
}

// Expects describes what the parameter accepts: its type and constraints
// as a declaration writes them, e.g. "int 1..100" or `string in ["a","b"]`.
func (p *Param) Expects() string {
	var b strings.Builder
	b.WriteString(p.Type.String())
	if p.Range != nil {
		b.WriteString(" " + p.Range.String())
	}
	if p.Len != nil {
		b.WriteString(" len " + p.Len.String())
	}
	if p.Pattern != nil {
		src := p.Pattern.String()
		src = strings.TrimSuffix(strings.TrimPrefix(src, "^(?:"), ")$")
		b.WriteString(" /" + strings.ReplaceAll(src, "/", `\/`) + "/")
	}
	if p.Enum != nil {
		b.WriteString(" in [")
		for i, e := range p.Enum {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(e.Raw)
		}
		b.WriteByte(']')
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
		r, size := utf8.DecodeRuneInString(p.src[p.pos:]) // invalid UTF-8 gives U+FFFD, not a letter
		if r == '_' || r == '.' || unicode.IsLetter(r) || (p.pos > start && unicode.IsDigit(r)) {
			p.pos += size
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
	p.space()
	start := p.pos
	name, err := p.ident("a function name")
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(name, "rpc.") {
		p.pos = start
		return nil, p.errf("function name %q: the rpc. prefix is reserved for JSON-RPC extensions", name)
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
	for p.space(); p.pos < len(p.src); p.space() { // not peek: a NUL byte is not the end
		start := p.pos
		flag, err := p.ident("a flag or where")
		if err != nil {
			return nil, err
		}
		switch flag {
		case "idempotent":
			f.Idempotent = true
		case "where":
			f.Where = strings.TrimSpace(p.src[p.pos:])
			if f.Where == "" {
				return nil, p.errf("where needs a condition, e.g. where start <= end")
			}
			p.pos = len(p.src)
		default:
			p.pos = start
			return nil, p.errf("unknown flag %q (known: idempotent, where CONDITION)", flag)
		}
	}
	return f, nil
}

func (p *parser) param(f *Func) (Param, error) {
	p.space()
	start := p.pos // errors about the parameter itself point at its name
	name, err := p.ident("a parameter name")
	if err != nil {
		return Param{}, err
	}
	if f.Param(name) != nil {
		p.pos = start
		return Param{}, p.errf("parameter %q declared twice", name)
	}
	t, err := p.typ()
	if err != nil {
		return Param{}, fmt.Errorf("parameter %q: %w", name, err)
	}
	prm := Param{Name: name, Type: t}
	if err := p.constraints(&prm); err != nil {
		return Param{}, err
	}
	if p.peek() == '=' {
		p.pos++
		p.space()
		dstart := p.pos
		end, err := jsonrpc.ValueEnd([]byte(p.src), p.pos)
		if err != nil {
			return Param{}, p.errf("parameter %q: default must be a JSON value: %v", name, err)
		}
		prm.Default = []byte(p.src[p.pos:end])
		if _, err := prm.Check(prm.Default); err != nil {
			p.pos = dstart
			return Param{}, p.errf("parameter %q: default %s does not fit: expects %s", name, prm.Default, prm.Expects())
		}
		p.pos = end
	} else if len(f.Params) > 0 && f.Params[len(f.Params)-1].Optional() {
		p.pos = start
		return Param{}, p.errf("parameter %q: a required parameter cannot follow an optional one", name)
	}
	return prm, nil
}

// constraints reads what follows a parameter's type up to its default, the
// next parameter or the closing parenthesis.
func (p *parser) constraints(prm *Param) error {
	for {
		switch c := p.peek(); {
		case c == 0 || c == ',' || c == ')' || c == '=':
			return nil
		case c == '/':
			if err := p.pattern(prm); err != nil {
				return err
			}
		case p.word("len"):
			if !prm.Type.hasLen() {
				return p.errf("parameter %q: len applies to string, symbol, bytes, list and dict, not %s", prm.Name, prm.Type)
			}
			start := p.pos
			b, err := p.bounds(prm.Name, Type{Name: "int"})
			if err != nil {
				return err
			}
			if b.lo != nil && b.lo.(int64) < 0 {
				p.pos = start
				return p.errf("parameter %q: a length cannot be negative", prm.Name)
			}
			prm.Len = b
		case p.word("in"):
			if err := p.enum(prm); err != nil {
				return err
			}
		case c == '.' || c == '-' || c == '+' || isDigit(c):
			if !prm.Type.hasRange() {
				return p.errf("parameter %q: a value range applies to int, float, date, timestamp and duration, not %s", prm.Name, prm.Type)
			}
			b, err := p.bounds(prm.Name, prm.Type)
			if err != nil {
				return err
			}
			prm.Range = b
		default:
			return p.errf("parameter %q: expected a constraint (lo..hi, len lo..hi, /regexp/, in [...]), a default (= value), ',' or ')', found %s", prm.Name, p.found())
		}
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// word consumes the keyword w when it stands alone at the current position.
func (p *parser) word(w string) bool {
	p.space()
	if !strings.HasPrefix(p.src[p.pos:], w) {
		return false
	}
	if end := p.pos + len(w); end < len(p.src) && (isDigit(p.src[end]) || unicode.IsLetter(rune(p.src[end])) || p.src[end] == '_') {
		return false
	}
	p.pos += len(w)
	return true
}

// bounds reads lo..hi, either end optional, parsed as type t.
func (p *parser) bounds(name string, t Type) (*Bounds, error) {
	p.space()
	start := p.pos
	end := start
	for end < len(p.src) && !strings.ContainsRune(" \t,)=", rune(p.src[end])) {
		end++
	}
	tok := p.src[start:end]
	lo, hi, ok := strings.Cut(tok, "..")
	if !ok || (lo == "" && hi == "") {
		return nil, p.errf("parameter %q: expected a range lo..hi (either end may be left out), found %q", name, tok)
	}
	b := &Bounds{Lo: lo, Hi: hi}
	var err error
	if lo != "" {
		if b.lo, err = parseBound(t, lo); err != nil {
			return nil, p.errf("parameter %q: range start %q: %v", name, lo, err)
		}
	}
	if hi != "" {
		if b.hi, err = parseBound(t, hi); err != nil {
			p.pos = start + len(lo) + 2
			return nil, p.errf("parameter %q: range end %q: %v", name, hi, err)
		}
	}
	if b.lo != nil && b.hi != nil && compare(b.lo, b.hi) > 0 {
		return nil, p.errf("parameter %q: empty range %s", name, tok)
	}
	p.pos = end
	return b, nil
}

// pattern reads /regexp/; a '/' inside is written \/.
func (p *parser) pattern(prm *Param) error {
	if !prm.Type.hasPattern() {
		return p.errf("parameter %q: a /regexp/ applies to string and symbol, not %s", prm.Name, prm.Type)
	}
	start := p.pos
	var src strings.Builder
	i := p.pos + 1
	for ; i < len(p.src) && p.src[i] != '/'; i++ {
		if p.src[i] == '\\' && i+1 < len(p.src) && p.src[i+1] == '/' {
			i++
		}
		src.WriteByte(p.src[i])
	}
	if i >= len(p.src) {
		return p.errf("parameter %q: unterminated /regexp/", prm.Name)
	}
	re, err := regexp.Compile("^(?:" + src.String() + ")$")
	if err != nil {
		p.pos = start
		return p.errf("parameter %q: bad regexp: %v", prm.Name, err)
	}
	prm.Pattern = re
	p.pos = i + 1
	return nil
}

// enum reads in [v, ...], a JSON array of allowed values.
func (p *parser) enum(prm *Param) error {
	p.space()
	start := p.pos
	switch prm.Type.Name {
	case "list", "dict", "any", "bytes":
		return p.errf("parameter %q: in applies to bool, int, float, string, symbol, date, timestamp and duration, not %s", prm.Name, prm.Type)
	}
	if p.peek() != '[' {
		return p.errf("parameter %q: in needs a JSON array of allowed values, e.g. in [\"buy\",\"sell\"]", prm.Name)
	}
	end, err := jsonrpc.ValueEnd([]byte(p.src), p.pos)
	if err != nil {
		return p.errf("parameter %q: in: %v", prm.Name, err)
	}
	arr := []byte(p.src[p.pos:end])
	var bad error
	jsonrpc.Elements(arr, func(v []byte) bool {
		value, err := prm.convertValue(v, true)
		if err != nil {
			bad = fmt.Errorf("%s is not a %s", v, prm.Type)
			return false
		}
		prm.Enum = append(prm.Enum, Enum{Raw: append([]byte(nil), v...), value: value})
		return true
	})
	if bad != nil {
		p.pos = start
		return p.errf("parameter %q: in: %v", prm.Name, bad)
	}
	if len(prm.Enum) == 0 {
		return p.errf("parameter %q: in [] allows nothing", prm.Name)
	}
	p.pos = end
	return nil
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
