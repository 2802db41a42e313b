package servant

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/decl"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

func newCall(declaration, params string) *Call {
	c := &Call{fn: decl.MustParse(declaration)}
	if params != "" {
		c.Params = json.RawMessage(params)
	}
	c.Method = c.fn.Name
	return c
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name   string
		decl   string
		params string // "" means absent
		want   []string
		errMsg string // non-empty: an InvalidParams error containing this
	}{
		{"positional", "f(a int, b string)", `[1, "x"]`, []string{`1`, `"x"`}, ""},
		{"positional raw bytes kept", "f(a any)", `[ {"b" : 1, "a":[1, 2]} ]`, []string{`{"b" : 1, "a":[1, 2]}`}, ""},
		{"named", "f(a int, b string)", `{"b":"x","a":1}`, []string{`1`, `"x"`}, ""},
		{"named with an escaped key", "f(a int, b string)", `{"\u0061":1,"b":"x"}`, []string{`1`, `"x"`}, ""},
		{"positional default filled", `f(a int, b string = "d")`, `[1]`, []string{`1`, `"d"`}, ""},
		{"named default filled", `f(a int, b string = "d")`, `{"a":1}`, []string{`1`, `"d"`}, ""},
		{"explicit null is not replaced by the default", `f(a int = 5)`, `[null]`, []string{`null`}, ""},
		{"absent params take all defaults", `f(a int = 1, b list<int> = [2, 3])`, "", []string{`1`, `[2, 3]`}, ""},
		{"null params take all defaults", `f(a int = 1)`, `null`, []string{`1`}, ""},
		{"empty array takes all defaults", `f(a int = 1)`, `[]`, []string{`1`}, ""},
		{"empty object takes all defaults", `f(a int = 1)`, `{}`, []string{`1`}, ""},
		{"no parameters, no params", "f()", "", []string{}, ""},
		{"missing required positional", "f(a int)", `[]`, nil, `f: missing required parameter "a" (int)`},
		{"missing required when params absent", "f(a int, b list<int>)", "", nil, `missing required parameter "a" (int)`},
		{"missing second required", "f(a int, b list<int>)", `[1]`, nil, `missing required parameter "b" (list<int>)`},
		{"missing required named", "f(a int, b string)", `{"b":"x"}`, nil, `missing required parameter "a"`},
		{"too many positional", "f(a int, b int)", `[1, 2, 3]`, nil, `f takes 2 argument(s), got 3`},
		{"any positional to a function without parameters", "f()", `[1]`, nil, `f takes 0 argument(s), got 1`},
		{"unknown named parameter", "f(a int)", `{"a":1,"zz":2,"c":3}`, nil, `f has no parameter "c"`},
		{"named parameters are case-sensitive", "f(a int)", `{"A":1}`, nil, `f has no parameter "A"`},
		{"params neither array nor object", "f(a int)", `"x"`, nil, `params must be an array or an object`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCall(tc.decl, tc.params)
			args, err := c.Args()
			if tc.errMsg != "" {
				var e *jsonrpc.Error
				if !errors.As(err, &e) || e.Code != jsonrpc.InvalidParams {
					t.Fatalf("Args() error = %v, want InvalidParams", err)
				}
				if !strings.Contains(e.Message, tc.errMsg) || !strings.HasPrefix(e.Message, "invalid params: ") {
					t.Errorf("message %q does not contain %q", e.Message, tc.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Args(): %v", err)
			}
			got := make([]string, len(args))
			for i, a := range args {
				got[i] = string(a)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Args() = %q, want %q", got, tc.want)
			}
			again, _ := c.Args()
			if len(args) > 0 && &again[0] != &args[0] {
				t.Error("Args() is not cached")
			}
		})
	}
}

// badTime fails to decode on purpose.
type badTime struct{}

func (*badTime) UnmarshalJSON([]byte) error { return errors.New("not a time I know") }

func TestBind(t *testing.T) {
	tests := []struct {
		name   string
		decl   string
		params string
		ptrs   func() []any
		want   []any  // values behind ptrs after Bind
		errMsg string // substring of the error
		code   int    // code of a *jsonrpc.Error, 0 for a plain error
	}{
		{"ints and strings", "f(a int, b string)", `[1, "x"]`,
			func() []any { return []any{new(int), new(string)} }, []any{1, "x"}, "", 0},
		{"nested lists", "f(m list<list<int>>)", `[[[1,2],[3]]]`,
			func() []any { return []any{new([][]int)} }, []any{[][]int{{1, 2}, {3}}}, "", 0},
		{"default decoded", `f(a int, label string = "nap")`, `{"a":2}`,
			func() []any { return []any{new(int), new(string)} }, []any{2, "nap"}, "", 0},
		{"fewer pointers bind the first parameters", "f(a int, b string)", `[7, "x"]`,
			func() []any { return []any{new(int)} }, []any{7}, "", 0},
		{"raw message gets the exact bytes", "f(x any)", `[ {"b" : 1} ]`,
			func() []any { return []any{new(json.RawMessage)} }, []any{json.RawMessage(`{"b" : 1}`)}, "", 0},
		{"string for an int", "f(a int)", `["x"]`,
			func() []any { return []any{new(int)} }, nil, `invalid params: f: parameter "a" (int): cannot use a JSON string as int`, jsonrpc.InvalidParams},
		{"fraction for an int", "f(n int)", `[1.5]`,
			func() []any { return []any{new(int)} }, nil, `parameter "n" (int): cannot use a JSON number 1.5 as int`, jsonrpc.InvalidParams},
		{"object for a list", "f(a int, xs list<int>)", `[1, {"a":1}]`,
			func() []any { return []any{new(int), new([]int)} }, nil, `parameter "xs" (list<int>): cannot use a JSON object as []int`, jsonrpc.InvalidParams},
		{"custom decoder error is named", "f(t timestamp)", `["2020"]`,
			func() []any { return []any{new(badTime)} }, nil, `parameter "t" (timestamp): not a time I know`, jsonrpc.InvalidParams},
		{"missing required", "f(a int)", `[]`,
			func() []any { return []any{new(int)} }, nil, `missing required parameter "a"`, jsonrpc.InvalidParams},
		{"too many arguments", "f(a int)", `[1, 2]`,
			func() []any { return []any{new(int)} }, nil, `f takes 1 argument(s), got 2`, jsonrpc.InvalidParams},
		{"more pointers than parameters is a servant bug", "f(a int)", `[1]`,
			func() []any { return []any{new(int), new(int)} }, nil, `servant bug: Bind got 2 pointers for 1 parameters of f`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCall(tc.decl, tc.params)
			ptrs := tc.ptrs()
			err := c.Bind(ptrs...)
			if tc.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
					t.Fatalf("Bind error = %v, want one containing %q", err, tc.errMsg)
				}
				var e *jsonrpc.Error
				isRPC := errors.As(err, &e)
				if tc.code != 0 && (!isRPC || e.Code != tc.code) {
					t.Errorf("error %v: want a *jsonrpc.Error with code %d", err, tc.code)
				}
				if tc.code == 0 && isRPC {
					t.Errorf("error %v: want a plain error (it becomes an internal error)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Bind: %v", err)
			}
			for i, p := range ptrs {
				got := reflect.ValueOf(p).Elem().Interface()
				if !reflect.DeepEqual(got, tc.want[i]) {
					t.Errorf("argument %d = %#v, want %#v", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestAppendInfo(t *testing.T) {
	tests := []struct {
		name string
		set  func(c *Call)
		want string
	}{
		{"only handler_ns", func(*Call) {}, `{"handler_ns":1500}`},
		{"fields in order", func(c *Call) { c.SetInfo("rows", 5); c.SetInfo("src", "hdb") }, `{"handler_ns":1500,"rows":5,"src":"hdb"}`},
		{"key escaped", func(c *Call) { c.SetInfo("a\"b", true) }, `{"handler_ns":1500,"a\"b":true}`},
		{"structured value", func(c *Call) { c.SetInfo("x", map[string]int{"n": 1}) }, `{"handler_ns":1500,"x":{"n":1}}`},
		{"unencodable value falls back to its text", func(c *Call) { c.SetInfo("d", func() {}) }, ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Call{}
			tc.set(c)
			got := c.appendInfo(1500 * time.Nanosecond)
			if !json.Valid(got) {
				t.Fatalf("info %s is not valid JSON", got)
			}
			if tc.want != "" && string(got) != tc.want {
				t.Errorf("info = %s, want %s", got, tc.want)
			}
		})
	}
}
