package route

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

func TestExpr(t *testing.T) {
	now := time.Now().UTC()
	yearAgo := now.AddDate(-1, 0, 0).Format(time.DateOnly)
	today := now.Format(time.DateOnly)
	const tiered = `method == "hdb" && date(args[1]) < now() - duration("48h") ? "HDB" : "RDB"`
	tests := []struct {
		name   string
		expr   string
		method string
		params string
		user   string
		want   string
	}{
		{"first positional argument", `args[0]`, "proc1", `["IBM",42]`, "", "IBM"},
		{"second positional argument", `args[1]`, "proc1", `["IBM","MSFT"]`, "", "MSFT"},
		{"named argument", `named.sym`, "proc1", `{"sym":"IBM","n":3}`, "", "IBM"},
		{"named arguments in written order", `args[0] + "/" + args[1]`, "proc1", `{"sym":"IBM","venue":"X"}`, "", "IBM/X"},
		{"named arguments in written order, not sorted", `args[0]`, "proc1", `{"zeta":"Z","alpha":"A"}`, "", "Z"},
		{"method", `method`, "proc1", `["IBM"]`, "", "proc1"},
		{"user", `user`, "proc1", `[]`, "alice", "alice"},
		{"anonymous user", `user == "" ? "anon" : user`, "proc1", `[]`, "", "anon"},
		{"method and argument", `method + ":" + args[0]`, "proc1", `["IBM"]`, "", "proc1:IBM"},
		{"no params: empty args", `len(args) == 0 ? "none" : "some"`, "ping", ``, "", "none"},
		{"positional call: named is empty", `len(named) == 0 ? "positional" : "named"`, "proc1", `["IBM"]`, "", "positional"},
		{"conditional", `args[0] in ["IBM", "MSFT"] ? "big" : "small"`, "proc1", `["KX"]`, "", "small"},
		{"string functions", `upper(args[0]) + "-" + string(len(args))`, "proc1", `["ibm", 1]`, "", "IBM-2"},

		{"the issue's example: old date to HDB", tiered, "hdb", fmt.Sprintf(`["IBM",%q]`, yearAgo), "", "HDB"},
		{"the issue's example: today to RDB", tiered, "hdb", fmt.Sprintf(`["IBM",%q]`, today), "", "RDB"},
		{"the issue's example: other method to RDB", tiered, "rdb", fmt.Sprintf(`["IBM",%q]`, yearAgo), "", "RDB"},

		{"number argument", `args[0]`, "f", `[42]`, "", "42"},
		{"fractional number", `args[0]`, "f", `[1.5]`, "", "1.5"},
		{"large number", `args[0]`, "f", `[1234567]`, "", "1234567"},
		{"integer arithmetic", `len(args) * 10`, "f", `[1,2,3]`, "", "30"},
		{"float arithmetic", `args[0] * 2`, "f", `[21]`, "", "42"},
		{"boolean", `args[0] > 1`, "f", `[2]`, "", "true"},
		{"null", `args[0]`, "f", `[null]`, "", ""},
		{"nil result", `nil`, "f", `[]`, "", ""},
		{"object argument", `args[0]`, "f", `[{"b":1,"a":[1,2]}]`, "", `{"a":[1,2],"b":1}`},
		{"array argument", `args[0]`, "f", `[["x",1]]`, "", `["x",1]`},
		{"unicode string", `args[0]`, "f", `["é\u00e9"]`, "", "éé"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewExpr(tc.expr)
			if err != nil {
				t.Fatalf("NewExpr(%q): %v", tc.expr, err)
			}
			got, err := e.Route(&dispatch.Call{Method: tc.method, Params: []byte(tc.params), User: tc.user})
			if err != nil {
				t.Fatalf("Route: %v", err)
			}
			if got != tc.want {
				t.Errorf("%s over %s(%s) = %q, want %q", tc.expr, tc.method, tc.params, got, tc.want)
			}
		})
	}
}

func TestExprCompileErrors(t *testing.T) {
	for _, src := range []string{
		`args[`,              // syntax
		`foo`,                // unknown name
		`args[0] +`,          // incomplete
		`method(1)`,          // not a function
		`unknownfn(args[0])`, // unknown function
		`method == 1 +`,
		strings.Repeat("1 + ", 2000) + "1", // over the node limit
	} {
		t.Run(src[:min(len(src), 20)], func(t *testing.T) {
			e, err := NewExpr(src)
			if err == nil {
				t.Fatalf("NewExpr(%q) compiled", src)
			}
			if e != nil {
				t.Errorf("NewExpr returned an Expr with the error")
			}
			if !strings.Contains(err.Error(), "routing expression") {
				t.Errorf("error %q does not say it is about the routing expression", err)
			}
		})
	}
}

func TestExprRuntimeErrors(t *testing.T) {
	for _, tc := range []struct{ expr, params string }{
		{`args[0]`, `[]`},                   // out of range
		{`date(args[0])`, `["not a date"]`}, // bad date
		{`args[0] + 1`, `["x"]`},            // string + int
		{`args[0]`, `[1,`},                  // params that are not JSON (the front end never lets them through)
		{`named.sym`, `{"sym":`},
	} {
		t.Run(tc.expr+" "+tc.params, func(t *testing.T) {
			e, err := NewExpr(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Route(&dispatch.Call{Method: "f", Params: []byte(tc.params)})
			if err == nil {
				t.Errorf("routed %q, want an error", got)
			}
		})
	}
}

// TestExprConcurrent routes from many goroutines with one compiled
// expression (run with -race).
func TestExprConcurrent(t *testing.T) {
	e, err := NewExpr(`method + ":" + args[0]`)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for g := range 8 {
		go func() {
			for i := range 200 {
				want := fmt.Sprintf("f:%d-%d", g, i)
				got, err := e.Route(&dispatch.Call{Method: "f", Params: []byte(fmt.Sprintf(`["%d-%d"]`, g, i))})
				if err != nil || got != want {
					done <- fmt.Errorf("routed %q, %v; want %q", got, err, want)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestDocsExpressions compiles every expression in the ```expr blocks of
// docs/scripting.md and routes a call with each.
func TestDocsExpressions(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "scripting.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range regexp.MustCompile("(?s)```expr\n(.*?)```").FindAllSubmatch(b, -1) {
		for _, line := range strings.Split(string(m[1]), "\n") {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			n++
			e, err := NewExpr(line)
			if err != nil {
				t.Errorf("%s: %v", line, err)
				continue
			}
			params := `["IBM","2020-01-02"]`
			if strings.Contains(line, "named") {
				params = `{"sym":"IBM","date":"2020-01-02"}`
			}
			if _, err := e.Route(&dispatch.Call{Method: "hdb", Params: []byte(params), User: "alice"}); err != nil {
				t.Errorf("%s: %v", line, err)
			}
		}
	}
	if n < 5 {
		t.Errorf("found %d expressions in docs/scripting.md", n)
	}
}
