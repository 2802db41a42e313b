package allow

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/mserve/mserve/sdk/decl"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

func compileFunc(t testing.TB, src string) *Func {
	t.Helper()
	d, err := decl.Parse(src)
	if err != nil {
		t.Fatalf("decl.Parse(%q): %v", src, err)
	}
	f, err := CompileFunc(d)
	if err != nil {
		t.Fatalf("CompileFunc(%q): %v", src, err)
	}
	return f
}

// errData decodes a -32602 error's data object.
func errData(t *testing.T, e *jsonrpc.Error) map[string]string {
	t.Helper()
	if e.Data == nil {
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(e.Data, &m); err != nil {
		t.Fatalf("error data %s is not an object of strings: %v", e.Data, err)
	}
	return m
}

const (
	declHDB   = `hdb(sym symbol, start date, end date) where start <= end && end - start <= duration("720h")`
	declQuote = `quote(sym symbol, end date = "2026-12-31")`
	declOpt   = `opt(sym symbol = "IBM", n int 1..10 = 5, tags list<symbol> = [ "a",  "b" ], o any = {"x": [1, 2]})`
)

func TestCheckAccepts(t *testing.T) {
	tests := []struct {
		name   string
		decl   string
		params string
		want   string // params forwarded; "" means the same bytes
	}{
		{"positional", declHDB, `["IBM","2026-01-02","2026-01-20"]`, ""},
		{"named in any order", declHDB, `{"end":"2026-01-20","sym":"IBM","start":"2026-01-02"}`, ""},
		{"unusual spacing and escapes survive", declHDB, "[ \"I\\u0042M\" ,\n\t\"2026-01-02\"  ,\"2026\\u002d01-20\"\r\n]", ""},
		{"escaped member names", declHDB, `{"\u0073ym":"IBM","start":"2026-01-02","e\u006ed":"2026-01-02"}`, ""},
		{"no parameters, no params", `now()`, ``, ""},
		{"no parameters, null", `now()`, `null`, ""},
		{"no parameters, empty array", `now()`, `[]`, ""},
		{"no parameters, empty object", `now()`, `{ }`, ""},
		{"every argument given, none filled", declQuote, `["IBM","2027-01-01"]`, ""},

		{"positional default filled", declQuote, `["IBM"]`, `["IBM","2026-12-31"]`},
		{"named default filled", declQuote, `{"sym":"IBM"}`, `{"sym":"IBM","end":"2026-12-31"}`},
		{"default after an escaped argument", declQuote, `[ "\u0049BM" ]`, `[ "\u0049BM" ,"2026-12-31"]`},
		{"named default after odd spacing", declQuote, "{ \"sym\" :\t\"IBM\" }", "{ \"sym\" :\t\"IBM\" ,\"end\":\"2026-12-31\"}"},
		{"all defaults from an empty array", declOpt, `[]`, `["IBM",5,[ "a",  "b" ],{"x": [1, 2]}]`},
		{"all defaults from an empty array with space", declOpt, `[ ]`, `[ "IBM",5,[ "a",  "b" ],{"x": [1, 2]}]`},
		{"all defaults from an empty object", declOpt, `{}`, `{"sym":"IBM","n":5,"tags":[ "a",  "b" ],"o":{"x": [1, 2]}}`},
		{"all defaults from an empty object with space", declOpt, `{ }`, `{ "sym":"IBM","n":5,"tags":[ "a",  "b" ],"o":{"x": [1, 2]}}`},
		{"all defaults from null", declOpt, `null`, `["IBM",5,[ "a",  "b" ],{"x": [1, 2]}]`},
		{"all defaults from nothing", declOpt, ``, `["IBM",5,[ "a",  "b" ],{"x": [1, 2]}]`},
		{"some positional defaults", declOpt, `["MSFT", 7]`, `["MSFT", 7,[ "a",  "b" ],{"x": [1, 2]}]`},
		{"named defaults around a given one", declOpt, `{"n":7}`, `{"n":7,"sym":"IBM","tags":[ "a",  "b" ],"o":{"x": [1, 2]}}`},
		{"named default with unusual member order", declOpt, `{"o":null,"sym":"A"}`, `{"o":null,"sym":"A","n":5,"tags":[ "a",  "b" ]}`},

		{"where true", `w(ms int, cap int = 100) where ms <= cap`, `[50]`, `[50,100]`},
		{"where true with an argument", `w(ms int, cap int = 100) where ms <= cap`, `[500, 1000]`, ""},
		{"where using a default", `r(sym symbol, start date, end date = "2026-12-31") where end - start <= duration("720h")`,
			`["IBM","2026-12-15"]`, `["IBM","2026-12-15","2026-12-31"]`},
		{"where at the edge of the time span", declHDB, `["IBM","2026-01-01","2026-01-31"]`, ""},
		{"where with now()", `past(d date) where d <= now()`, `["2000-01-01"]`, ""},
		{"where over a list", `l(xs list<int>) where len(xs) > 0 && xs[0] > 1`, `[[2,1]]`, ""},
		{"where over a float and a bool", `fb(x float, strict bool = false) where !strict || x > 0`, `[-1.5]`, `[-1.5,false]`},
		{"where over a duration", `sl(d duration) where d <= duration("1m")`, `["59s"]`, ""},
		{"where over a string", `s(side string in ["buy","sell"], qty int) where side == "buy" || qty < 100`, `{"side":"sell","qty":99}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := compileFunc(t, tc.decl)
			in := []byte(tc.params)
			keep := append([]byte(nil), in...)
			out, err := f.Check(in)
			if err != nil {
				t.Fatalf("Check(%s) = %v (data %s)", tc.params, err, err.Data)
			}
			want := tc.want
			if want == "" {
				want = tc.params
			}
			if string(out) != want {
				t.Errorf("Check(%s) forwards %s, want %s", tc.params, out, want)
			}
			if string(in) != string(keep) {
				t.Errorf("Check modified its input: %s", in)
			}
			if len(out) > 0 && !json.Valid(out) {
				t.Errorf("forwarded params %s are not JSON", out)
			}
		})
	}
}

func TestCheckRejects(t *testing.T) {
	tests := []struct {
		name   string
		decl   string
		params string
		msg    string            // substring of the message
		data   map[string]string // expected members of the data object (subset); nil: no data
	}{
		{"too many arguments", declHDB, `["IBM","2026-01-02","2026-01-03","x"]`, "hdb takes 3 argument(s), got 4", nil},
		{"argument to a function without parameters", `now()`, `[1]`, "now takes 0 argument(s), got 1", nil},
		{"unknown named parameter", declHDB, `{"sym":"IBM","stat":"2026-01-02"}`, `hdb has no parameter "stat" (it takes ["sym" "start" "end"])`, map[string]string{"param": "stat"}},
		{"named parameter of a function without parameters", `now()`, `{"a":1}`, `now has no parameter "a" (it takes no parameters)`, map[string]string{"param": "a"}},
		{"parameter given twice", declHDB, `{"sym":"IBM","sym":"MSFT"}`, `hdb: parameter "sym" given twice`, map[string]string{"param": "sym"}},
		{"parameter given twice, once escaped", declHDB, `{"sym":"IBM","s\u0079m":"MSFT"}`, `parameter "sym" given twice`, map[string]string{"param": "sym"}},
		{"missing required, positional", declHDB, `["IBM","2026-01-02"]`, `hdb: missing required parameter "end" (date)`, map[string]string{"param": "end"}},
		{"missing required, named", declHDB, `{"sym":"IBM","end":"2026-01-02"}`, `missing required parameter "start"`, map[string]string{"param": "start"}},
		{"missing required, null params", declHDB, `null`, `missing required parameter "sym" (symbol)`, map[string]string{"param": "sym"}},
		{"missing required, no params", declHDB, ``, `missing required parameter "sym"`, map[string]string{"param": "sym"}},
		{"params a string", declHDB, `"IBM"`, "params must be an array or an object", nil},
		{"params a number", declHDB, `42`, "params must be an array or an object", nil},
		{"wrong type", declHDB, `["IBM",20260102,"2026-01-03"]`, `hdb: parameter "start" expects date, got 20260102`,
			map[string]string{"param": "start", "expects": "date", "got": "20260102", "problem": "not a date string YYYY-MM-DD"}},
		{"symbol carrying code", declHDB, `["IBM; system \"rm -rf /\"","2026-01-02","2026-01-03"]`, `parameter "sym" expects symbol`,
			map[string]string{"param": "sym", "got": `"IBM; system \"rm -rf /\""`}},
		{"out of range", `s(ms int 0..60000)`, `[60001]`, `parameter "ms" expects int 0..60000, got 60001`,
			map[string]string{"param": "ms", "expects": "int 0..60000", "got": "60001", "problem": "out of range 0..60000"}},
		{"int with a fraction below float64 precision", `s(n int)`, `[1.0000000000000001]`, `parameter "n" expects int, got 1.0000000000000001`, map[string]string{"param": "n"}},
		{"int above its range by less than float64 precision", `s(ms int 0..60000)`, `[60000.000000000001]`, `parameter "ms" expects int 0..60000`, map[string]string{"param": "ms"}},
		{"null for an optional parameter", declQuote, `["IBM",null]`, `parameter "end" expects date, got null`, map[string]string{"param": "end", "got": "null"}},
		{"named wrong type", declQuote, `{"end":"31/12/2026","sym":"IBM"}`, `parameter "end"`, map[string]string{"param": "end", "got": `"31/12/2026"`}},
		{"not in the enum", `o(side string in ["buy","sell"])`, `{"side":"hold"}`, "not one of the allowed values", map[string]string{"param": "side", "expects": `string in ["buy","sell"]`}},
		{"bad list element", `l(xs list<int>)`, `[[1,"2"]]`, `parameter "xs"`, map[string]string{"param": "xs"}},

		{"where false: start after end", declHDB, `["IBM","2026-01-20","2026-01-02"]`, "hdb: arguments break the condition: start <= end", nil},
		{"where false: span too long", declHDB, `["IBM","2026-01-01","2026-02-01"]`, "arguments break the condition", nil},
		{"where false using a default", `r(sym symbol, start date, end date = "2026-12-31") where end - start <= duration("720h")`, `["IBM","2026-01-01"]`, "arguments break the condition", nil},
		{"where false with now()", `past(d date) where d <= now()`, `["2999-12-31"]`, "arguments break the condition: d <= now()", nil},
		{"where false on the default", `w(ms int, cap int = 100) where ms <= cap`, `{"ms":101}`, "arguments break the condition", nil},
		{"where cannot be evaluated", `l(xs list<int>) where xs[3] > 0`, `[[1]]`, `l: condition "xs[3] > 0" could not be evaluated`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := compileFunc(t, tc.decl)
			out, err := f.Check([]byte(tc.params))
			if err == nil {
				t.Fatalf("Check(%s) accepted it, forwarding %s", tc.params, out)
			}
			if out != nil {
				t.Errorf("Check returned params %s with an error", out)
			}
			if err.Code != jsonrpc.InvalidParams {
				t.Errorf("code %d, want %d", err.Code, jsonrpc.InvalidParams)
			}
			if !strings.HasPrefix(err.Message, "invalid params: ") || !strings.Contains(err.Message, tc.msg) {
				t.Errorf("message %q, want it to contain %q", err.Message, tc.msg)
			}
			data := errData(t, err)
			if tc.data == nil && data != nil {
				t.Errorf("data %s, want none", err.Data)
			}
			for k, v := range tc.data {
				if data[k] != v {
					t.Errorf("data %s: %s = %q, want %q", err.Data, k, data[k], v)
				}
			}
		})
	}
}

func TestCompileFuncRejects(t *testing.T) {
	tests := []struct {
		name string
		decl string
		msg  string
	}{
		{"syntax error", `bad(a int) where a >`, "bad: where:"},
		{"not boolean", `bad(a int) where a + 1`, "bad: where:"},
		{"string result", `bad(a string) where a`, "bad: where:"},
		{"unknown name", `bad(a int) where b > 1`, "bad: where:"},
		{"type mismatch", `bad(a string) where a > 1`, "bad: where:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := decl.Parse(tc.decl)
			if err != nil {
				t.Fatal(err)
			}
			f, err := CompileFunc(d)
			if err == nil {
				t.Fatalf("CompileFunc(%q) accepted it: %v", tc.decl, f)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q, want it to contain %q", err, tc.msg)
			}
			// In a file, the same error carries the line.
			_, err = Load("c.allow", []byte(lines("ok()", "", tc.decl)))
			var le *LineError
			if !errors.As(err, &le) || le.Line != 3 || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Load: %v, want a *LineError at line 3 naming the function", err)
			}
		})
	}
}

// TestCheckConcurrent checks one compiled function from many goroutines:
// pooled condition environments must not leak between calls.
func TestCheckConcurrent(t *testing.T) {
	f := compileFunc(t, declHDB)
	good, bad := []byte(`["IBM","2026-01-02","2026-01-20"]`), []byte(`["IBM","2026-01-20","2026-01-02"]`)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				p := good
				if (g+i)%2 == 1 {
					p = bad
				}
				_, err := f.Check(p)
				if (err == nil) != (&p[0] == &good[0]) {
					t.Errorf("Check(%s) = %v", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// usersFile has roles nested two deep, a user per kind of grant and an
// anonymous line.
var usersFile = lines(
	"hdb(sym symbol)",
	"hdb2(sym symbol)",
	"rdb(sym symbol)",
	"admin.reset()",
	"ping()",
	"role reader: hdb*",
	"role trader: @reader rdb",
	"role root: @trader admin.*",
	"user alice "+hashAlice+": @root",
	"user bob "+hashBob+": @trader",
	"user carol "+hashCarol+": hdb2 ping",
	"anonymous: ping",
)

func TestPolicyGrants(t *testing.T) {
	p, err := Load("users.allow", []byte(usersFile))
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"hdb", "hdb2", "rdb", "admin.reset", "ping"}
	if got := p.Functions(); !reflect.DeepEqual(got, all) {
		t.Errorf("Functions() = %v", got)
	}
	if got := p.Users(); !reflect.DeepEqual(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("Users() = %v", got)
	}
	if !p.HasUsers() || p.File != "users.allow" {
		t.Errorf("HasUsers %v, File %q", p.HasUsers(), p.File)
	}
	want := map[string][]string{
		"alice":   {"hdb", "hdb2", "rdb", "admin.reset"},
		"bob":     {"hdb", "hdb2", "rdb"},
		"carol":   {"hdb2", "ping"},
		Anonymous: {"ping"},
	}
	for user, fns := range want {
		u := p.User(user)
		if u == nil {
			t.Fatalf("User(%q) = nil", user)
		}
		var got []string
		for _, fn := range append(all, "undeclared", "rpc.discover") {
			if u.May(fn) {
				got = append(got, fn)
			}
		}
		if !reflect.DeepEqual(got, fns) {
			t.Errorf("%q may call %v, want %v", user, got, fns)
		}
	}
	if p.User("mallory") != nil {
		t.Error("User(mallory) is not nil")
	}
	if f := p.Func("hdb"); f == nil || f.Line != 1 || f.Decl.Name != "hdb" {
		t.Errorf("Func(hdb) = %+v", f)
	}
	if p.Func("nope") != nil {
		t.Error("Func(nope) is not nil")
	}
}

func TestPolicyAnonymous(t *testing.T) {
	tests := []struct {
		name string
		src  string
		may  []string // what anonymous callers may call, of f, g, h
	}{
		{"no users: everything", lines("f()", "g()", "h()"), []string{"f", "g", "h"}},
		{"users, no anonymous line: nothing", lines("f()", "g()", "h()", "user alice "+hashAlice+": *"), nil},
		{"anonymous line: exactly those", lines("f()", "g()", "h()", "user alice "+hashAlice+": *", "anonymous: f h"), []string{"f", "h"}},
		{"anonymous line without users", lines("f()", "g()", "h()", "anonymous: g"), []string{"g"}},
		{"empty anonymous line: nothing", lines("f()", "g()", "h()", "anonymous:"), nil},
		{"anonymous through a role", lines("f()", "g()", "h()", "role pub: g h", "anonymous: @pub"), []string{"g", "h"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Load("a.allow", []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			u := p.User(Anonymous)
			if u == nil {
				t.Fatal("no anonymous user")
			}
			var got []string
			for _, fn := range []string{"f", "g", "h"} {
				if u.May(fn) {
					got = append(got, fn)
				}
			}
			if !reflect.DeepEqual(got, tc.may) {
				t.Errorf("anonymous may call %v, want %v", got, tc.may)
			}
		})
	}
}

func TestPolicyAuthenticate(t *testing.T) {
	p, err := Load("users.allow", []byte(usersFile))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, secret string
		want               string // user name; "" for refused
	}{
		{"bearer", "", "alice-secret", "alice"},
		{"bearer, other user", "", "carol-secret", "carol"},
		{"user and secret", "bob", "bob-secret", "bob"},
		{"wrong secret", "bob", "bob-secret ", ""},
		{"another user's secret", "bob", "alice-secret", ""},
		{"unknown user", "mallory", "alice-secret", ""},
		{"bearer, unknown secret", "", "nobody-secret", ""},
		{"empty secret", "alice", "", ""},
		{"empty bearer", "", "", ""},
		{"the hash is not the secret", "", hashAlice, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := p.Authenticate(tc.user, tc.secret)
			if tc.want == "" {
				if err == nil || !errors.Is(err, ErrBadCredentials) || u != nil {
					t.Errorf("Authenticate(%q, %q) = %v, %v; want ErrBadCredentials", tc.user, tc.secret, u, err)
				}
				return
			}
			if err != nil || u == nil || u.Name != tc.want {
				t.Errorf("Authenticate(%q, %q) = %v, %v; want %s", tc.user, tc.secret, u, err, tc.want)
			}
		})
	}
}

func TestCompileRefusesSharedSecrets(t *testing.T) {
	_, err := Load("s.allow", []byte(lines(
		"f()",
		"user alice "+hashAlice+": f",
		"# bob copied alice's line",
		"user bob "+hashAlice+": f",
	)))
	var le *LineError
	if !errors.As(err, &le) || le.Line != 4 || !strings.Contains(err.Error(), `user "bob" has the same secret as "alice"`) {
		t.Errorf("Load: %v, want a *LineError at line 4 about the shared secret", err)
	}
}
