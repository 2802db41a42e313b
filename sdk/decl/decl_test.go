package decl

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func tScalar(name string) Type { return Type{Name: name} }
func tList(elem Type) Type     { return Type{Name: "list", Elem: &elem} }

func reqParam(name string, t Type) Param { return Param{Name: name, Type: t} }
func optParam(name string, t Type, def string) Param {
	return Param{Name: name, Type: t, Default: []byte(def)}
}
func mkFunc(name string, idem bool, ps ...Param) Func {
	return Func{Name: name, Params: ps, Idempotent: idem}
}

func sameFunc(a, b *Func) bool {
	return a.Name == b.Name && a.Idempotent == b.Idempotent && reflect.DeepEqual(a.Params, b.Params)
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		want      Func
		canonical string
	}{
		{"one symbol parameter", "proc1(sym symbol)",
			mkFunc("proc1", false, reqParam("sym", tScalar("symbol"))), "proc1(sym symbol)"},
		{"default and flag", `sleep(ms int, label string = "nap") idempotent`,
			mkFunc("sleep", true, reqParam("ms", tScalar("int")), optParam("label", tScalar("string"), `"nap"`)), `sleep(ms int, label string = "nap") idempotent`},
		{"list of float", "total(values list<float>)",
			mkFunc("total", false, reqParam("values", tList(tScalar("float")))), "total(values list<float>)"},
		{"list of list of int", "grid(m list<list<int>>)",
			mkFunc("grid", false, reqParam("m", tList(tList(tScalar("int"))))), "grid(m list<list<int>>)"},
		{"spaces inside a list type", "grid(m list < list <int > >)",
			mkFunc("grid", false, reqParam("m", tList(tList(tScalar("int"))))), "grid(m list<list<int>>)"},
		{"no parameters", "now()", mkFunc("now", false), "now()"},
		{"no parameters with inner space", "now( )", mkFunc("now", false), "now()"},
		{"namespaced name", ".api.get(key string)",
			mkFunc(".api.get", false, reqParam("key", tScalar("string"))), ".api.get(key string)"},
		{"underscores and digits", "_f2(a_1 int, _b dict)",
			mkFunc("_f2", false, reqParam("a_1", tScalar("int")), reqParam("_b", tScalar("dict"))), "_f2(a_1 int, _b dict)"},
		{"unicode letters in names", "café(crème string, 数 int)",
			mkFunc("café", false, reqParam("crème", tScalar("string")), reqParam("数", tScalar("int"))), "café(crème string, 数 int)"},
		{"every scalar type", "f(a any, b bool, c int, d float, e string, g symbol, h date, i timestamp, j duration, k bytes, l dict)",
			mkFunc("f", false, reqParam("a", tScalar("any")), reqParam("b", tScalar("bool")), reqParam("c", tScalar("int")), reqParam("d", tScalar("float")),
				reqParam("e", tScalar("string")), reqParam("g", tScalar("symbol")), reqParam("h", tScalar("date")), reqParam("i", tScalar("timestamp")),
				reqParam("j", tScalar("duration")), reqParam("k", tScalar("bytes")), reqParam("l", tScalar("dict"))),
			"f(a any, b bool, c int, d float, e string, g symbol, h date, i timestamp, j duration, k bytes, l dict)"},
		{"JSON defaults are kept raw", `f(a any = {"x": [1, 2]}, b list<int> = [1,2], c bool = true, d any = null, e float = -1.5e3, s string = "a\"b\u00e9")`,
			mkFunc("f", false, optParam("a", tScalar("any"), `{"x": [1, 2]}`), optParam("b", tList(tScalar("int")), `[1,2]`), optParam("c", tScalar("bool"), `true`),
				optParam("d", tScalar("any"), `null`), optParam("e", tScalar("float"), `-1.5e3`), optParam("s", tScalar("string"), `"a\"b\u00e9"`)),
			`f(a any = {"x": [1, 2]}, b list<int> = [1,2], c bool = true, d any = null, e float = -1.5e3, s string = "a\"b\u00e9")`},
		{"default without spaces", "f(a int=5)", mkFunc("f", false, optParam("a", tScalar("int"), "5")), "f(a int = 5)"},
		{"required before optional", "f(a int, b int = 2, c int = 3)",
			mkFunc("f", false, reqParam("a", tScalar("int")), optParam("b", tScalar("int"), "2"), optParam("c", tScalar("int"), "3")), "f(a int, b int = 2, c int = 3)"},
		{"spaces and tabs everywhere", "  f ( a\tint ,b   float = 1.5 )   idempotent  ",
			mkFunc("f", true, reqParam("a", tScalar("int")), optParam("b", tScalar("float"), "1.5")), "f(a int, b float = 1.5) idempotent"},
		{"flag without a space", "f()idempotent", mkFunc("f", true), "f() idempotent"},
		{"flag given twice", "f() idempotent idempotent", mkFunc("f", true), "f() idempotent"},
		{"rpc without the dot is an ordinary name", "rpcx()", mkFunc("rpcx", false), "rpcx()"},
		{"rpc. in the middle is an ordinary name", "my.rpc.x()", mkFunc("my.rpc.x", false), "my.rpc.x()"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(tc.src)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.src, err)
			}
			if !sameFunc(f, &tc.want) {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.src, *f, tc.want)
			}
			if f.Source != strings.TrimSpace(tc.src) {
				t.Errorf("Source = %q, want the trimmed declaration", f.Source)
			}
			s := f.String()
			if s != tc.canonical {
				t.Errorf("String() = %q, want %q", s, tc.canonical)
			}
			again, err := Parse(s)
			if err != nil {
				t.Fatalf("canonical form %q does not parse: %v", s, err)
			}
			if !sameFunc(again, f) || again.String() != s {
				t.Errorf("canonical form does not round-trip: %+v", *again)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	known := "known: any, bool, int, float, string, symbol, date, timestamp, duration, bytes, dict, list<T>"
	tests := []struct {
		name string
		src  string
		col  int
		msg  string
	}{
		{"empty", "", 1, "expected a function name, found end of declaration"},
		{"name starts with a digit", "1f()", 1, `expected a function name, found "1f()"`},
		{"missing parenthesis", "f", 2, `expected '(', found end of declaration`},
		{"missing closing parenthesis", "f(a int", 8, `expected ')', found end of declaration`},
		{"missing type", "f(a)", 4, `expected a type, found ")"`},
		{"unknown type lists the known ones", "f(a integer)", 5, `unknown type "integer" (` + known + ")"},
		{"unknown type after extra spaces", "f(a   integer)", 7, `unknown type "integer"`},
		{"list without element type", "f(a list)", 9, `expected '<', found ")"`},
		{"unclosed list", "f(a list<int)", 13, `expected '>', found ")"`},
		{"empty list", "f(a list<>)", 10, `expected a type, found ">)"`},
		{"unknown element type", "f(a list<foo>)", 10, `unknown type "foo"`},
		{"unknown nested element type", "f(a list<list<x>>)", 15, `unknown type "x"`},
		{"duplicate parameter", "f(a int, a int)", 10, `parameter "a" declared twice`},
		{"duplicate parameter with a different type", "f(x int, y int, x string)", 17, `parameter "x" declared twice`},
		{"required after optional", "f(a int = 1, b int)", 14, `parameter "b": a required parameter cannot follow an optional one`},
		{"default is not JSON", "f(a int = nope)", 11, `parameter "a": default must be a JSON value`},
		{"default missing", "f(a int = )", 11, `default must be a JSON value`},
		{"default is a bare word string", "f(s string = nap)", 14, `default must be a JSON value`},
		{"default with single quotes", "f(s string = 'nap')", 14, `default must be a JSON value`},
		{"trailing comma", "f(a int,)", 9, `expected a parameter name, found ")"`},
		{"lone comma", "f(,)", 3, `expected a parameter name, found ",)"`},
		{"two parameters without a comma", "f(a int b int)", 9, `expected a constraint (lo..hi, len lo..hi, /regexp/, in [...]), a default (= value), ',' or ')', found "b int)"`},
		{"unknown flag", "f() fast", 5, `unknown flag "fast" (known: idempotent, where CONDITION)`},
		{"unknown flag after a known one", "f() idempotent fast", 16, `unknown flag "fast"`},
		{"flag that is not a name", "f() 1", 5, `expected a flag or where, found "1"`},
		{"stray parenthesis after the flags", "f() idempotent)", 15, `expected a flag or where, found ")"`},
		{"NUL byte after the declaration", "f()\x00junk", 4, `expected a flag`},
		{"NUL byte before a flag", "f() \x00idempotent", 5, `expected a flag`},
		{"rpc. prefix is reserved", "rpc.hello()", 1, `function name "rpc.hello": the rpc. prefix is reserved`},
		{"rpc. prefix after leading spaces", "  rpc.cancel(id any)", 3, `the rpc. prefix is reserved`},
		{"invalid UTF-8 is not a letter", "f\xaa()", 2, `expected '('`},
		{"lone Latin-1 byte is not a name", "\xaa()", 1, `expected a function name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(tc.src)
			if err == nil {
				t.Fatalf("Parse(%q) accepted it: %s", tc.src, f)
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *decl.Error", err, err)
			}
			if de.Col != tc.col {
				t.Errorf("Col = %d, want %d (%q)\n  %s\n  %s^", de.Col, tc.col, err, tc.src, strings.Repeat(" ", max(de.Col-1, 0)))
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			if !strings.Contains(err.Error(), "column ") {
				t.Errorf("error %q does not name the column", err)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Col: 7, Msg: "boom"}
	if got := e.Error(); got != "column 7: boom" {
		t.Errorf("Error() = %q", got)
	}
}

func TestMustParse(t *testing.T) {
	t.Run("valid declaration", func(t *testing.T) {
		if f := MustParse("f(a int)"); f.Name != "f" {
			t.Errorf("MustParse = %+v", f)
		}
	})
	t.Run("invalid declaration panics with the parse error", func(t *testing.T) {
		defer func() {
			p := recover()
			err, ok := p.(error)
			var de *Error
			if !ok || !errors.As(err, &de) {
				t.Errorf("panic value %v, want a *decl.Error", p)
			}
		}()
		MustParse("f(")
		t.Error("MustParse did not panic")
	})
}

func TestFuncParam(t *testing.T) {
	f := MustParse(`f(a int, b string = "x")`)
	tests := []struct {
		name     string
		param    string
		found    bool
		optional bool
	}{
		{"required parameter", "a", true, false},
		{"optional parameter", "b", true, true},
		{"missing parameter", "c", false, false},
		{"names are case-sensitive", "A", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := f.Param(tc.param)
			if (p != nil) != tc.found {
				t.Fatalf("Param(%q) = %v, want found %v", tc.param, p, tc.found)
			}
			if p != nil && p.Optional() != tc.optional {
				t.Errorf("Optional() = %v, want %v", p.Optional(), tc.optional)
			}
		})
	}
	if p := f.Param("a"); p != &f.Params[0] {
		t.Error("Param does not point into Params")
	}
}

func TestTypeString(t *testing.T) {
	tests := []struct {
		name string
		t    Type
		want string
	}{
		{"scalar", tScalar("int"), "int"},
		{"list", tList(tScalar("symbol")), "list<symbol>"},
		{"list of lists", tList(tList(tList(tScalar("any")))), "list<list<list<any>>>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTypesListsEveryAcceptedType(t *testing.T) {
	for _, name := range Types {
		src := "f(a " + name + ")"
		if name == "list<T>" {
			src = "f(a list<int>)"
		}
		if _, err := Parse(src); err != nil {
			t.Errorf("Types lists %q but Parse(%q) fails: %v", name, src, err)
		}
	}
}
