package script

// Sandbox escapes and script failures: each must fail cleanly, the
// fallback must decide, the error must be counted and logged once, and the
// host must keep working.

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/dispatch"
)

// failuresLogged returns the "fallback decided" warnings logged for the
// scripted function name.
func failuresLogged(logs *observer.ObservedLogs, name string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.FilterMessageSnippet("fallback decided").All() {
		if fieldString(e, "function") == name {
			out = append(out, e)
		}
	}
	return out
}

func TestSandboxEscapesInAlgorithms(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "escaped")
	tests := []struct {
		name   string
		kind   string // "algorithm" or "picker"
		body   string // the function's body; it sees calls/call, servants, plan
		errHas string // in the logged error
	}{
		{"io.open", "algorithm", `local f = io.open("/etc/passwd"); plan.assign(1, 1)`, "bad.lua:2: attempt to index a non-table object(nil) with key 'open'"},
		{"os.execute", "algorithm", `os.execute("touch ` + marker + `")`, "bad.lua:2: attempt to index a non-table object(nil) with key 'execute'"},
		{"os.exit", "algorithm", `os.exit(3)`, "with key 'exit'"},
		{"require", "algorithm", `local os = require("os"); os.execute("touch ` + marker + `")`, "bad.lua:2: attempt to call a non-function object"},
		{"load", "algorithm", `load("return 1")()`, "bad.lua:2: attempt to call a non-function object"},
		{"loadstring", "algorithm", `loadstring("return 1")()`, "bad.lua:2: attempt to call a non-function object"},
		{"dofile", "algorithm", `dofile("/etc/passwd")`, "bad.lua:2: attempt to call a non-function object"},
		{"loadfile", "algorithm", `loadfile("/etc/passwd")`, "bad.lua:2: attempt to call a non-function object"},
		{"getfenv", "algorithm", `local env = getfenv(1); env.x = 1`, "bad.lua:2: attempt to call a non-function object"},
		{"setfenv", "algorithm", `setfenv(1, {})`, "bad.lua:2: attempt to call a non-function object"},
		{"debug", "algorithm", `debug.getregistry()`, "with key 'getregistry'"},
		{"collectgarbage", "algorithm", `collectgarbage("stop")`, "bad.lua:2: attempt to call a non-function object"},
		{"string.rep over the limit", "algorithm", `local s = string.rep("x", 1e9)`, "exceeds the sandbox limit"},
		{"string.rep method form over the limit", "algorithm", `local s = ("xy"):rep(1e8)`, "exceeds the sandbox limit"},
		{"string.rep overflowing the size check", "algorithm", `local s = string.rep(string.rep("x", 1048576), 17592186044416)`, "overflow"},
		{"string.format with a huge width", "algorithm", `local s = string.format("%999999999d", 1)`, "width or precision too long"},
		{"string.format method form with a huge precision", "algorithm", `local s = ("%.123456f"):format(1)`, "width or precision too long"},
		{"endless loop", "algorithm", `while true do end`, "time budget exceeded"},
		{"endless loop in a metamethod", "algorithm", `local t = setmetatable({}, {__index = function() while true do end end}); local x = t.y`, "time budget exceeded"},
		{"deep recursion", "algorithm", `local function f(n) return f(n + 1) + 1 end; f(1)`, "stack overflow"},
		{"script error", "algorithm", `error("boom")`, "bad.lua:2: boom"},
		{"error after assigning", "algorithm", `plan.assign(1, 1); error("late boom")`, "late boom"},
		{"plan.assign with a bad argument", "algorithm", `plan.assign("one", {})`, "bad argument"},
		{"picker returning a string", "picker", `return "s1"`, "returned a string"},
		{"picker returning a table", "picker", `return {1}`, "returned a table"},
		{"picker error", "picker", `error("boom")`, "boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			params := "calls, servants, plan"
			if tc.kind == "picker" {
				params = "call, servants, plan"
			}
			src := "mserve." + tc.kind + `("bad", function(` + params + ")\n" + tc.body + "\nend)\n" +
				`mserve.route("alive", function(call) return "alive" end)` + "\n"
			log, logs := testkit.Observed(zapcore.WarnLevel)
			h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "bad.lua", src)}, Budget: 20 * time.Millisecond, Log: log})
			fb := &countingFallback{}
			a := NewAlgorithm(h, "bad", fb)
			cnt := h.Counters("bad")
			for i := 1; i <= 2; i++ { // the breaker pauses after 3 failures in a row
				calls := queue("a", "b")
				vs := views(t0, srv{}, srv{}, srv{})
				start := time.Now()
				o := round(a, calls, vs, t0)
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("round %d took %v with a 20ms budget", i, d)
				}
				if fb.rounds.Load() != int64(i) {
					t.Fatalf("round %d: the fallback decided %d rounds, want %d", i, fb.rounds.Load(), i)
				}
				// The fallback (orig) assigns whatever the script left.
				if len(o.assigned) != 2 {
					t.Errorf("round %d: assigned %s, want both calls (by the fallback)", i, describe(o.assigned, calls))
				}
				if cnt.Errors.Load() != uint64(i) || cnt.Fallbacks.Load() != uint64(i) {
					t.Errorf("round %d: counted %d errors, %d fallbacks; want %d each", i, cnt.Errors.Load(), cnt.Fallbacks.Load(), i)
				}
			}
			logged := failuresLogged(logs, "bad")
			if len(logged) != 1 {
				t.Fatalf("logged %d times, want once for two identical failures: %v", len(logged), logged)
			}
			msg := fieldString(logged[0], "error")
			t.Logf("logged: %s", msg)
			if !strings.Contains(msg, tc.errHas) {
				t.Errorf("logged error %q, want it to mention %q", msg, tc.errHas)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("the script created %s", marker)
			}
			// The host is unharmed: the script's other function still works.
			r := NewRouter(h, "alive", &fixedRouter{route: "fallback"})
			if got, err := r.Route(&dispatch.Call{Method: "f"}); got != "alive" || err != nil {
				t.Errorf("after the failures, another function of the script routes %q, %v", got, err)
			}
		})
	}
}

func TestSandboxEscapesInRoutingFunctions(t *testing.T) {
	tests := []struct {
		name, body, errHas string
	}{
		{"returns a table", `return {}`, "returned a table"},
		{"returns a function", `return print`, "returned a function"},
		{"returns a boolean", `return true`, "returned a boolean"},
		{"error", `error("boom")`, "bad.lua:1: boom"},
		{"io", `return io.read("*a")`, "with key 'read'"},
		{"endless loop", `while true do end`, "time budget exceeded"},
		{"deep recursion", `local function f(n) return f(n + 1) + 1 end; return f(1)`, "stack overflow"},
		{"string.rep over the limit", `return string.rep("ab", 1e9)`, "exceeds the sandbox limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := testkit.Observed(zapcore.WarnLevel)
			src := `mserve.route("bad", function(call) ` + tc.body + ` end)`
			h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "bad.lua", src)}, Budget: 20 * time.Millisecond, Log: log})
			fb := &fixedRouter{route: "fallback"}
			r := NewRouter(h, "bad", fb)
			for i := 1; i <= 3; i++ {
				got, err := r.Route(&dispatch.Call{Method: "f", Params: []byte(`["IBM"]`)})
				if got != "fallback" || err != nil {
					t.Fatalf("call %d routed %q, %v; want the fallback's \"fallback\"", i, got, err)
				}
			}
			cnt := h.Counters("bad")
			if fb.n.Load() != 3 || cnt.Errors.Load() != 3 || cnt.Fallbacks.Load() != 3 {
				t.Errorf("fallback asked %d times, %d errors, %d fallbacks counted; want 3 each", fb.n.Load(), cnt.Errors.Load(), cnt.Fallbacks.Load())
			}
			logged := failuresLogged(logs, "bad")
			if len(logged) != 1 {
				t.Fatalf("logged %d times, want once: %v", len(logged), logged)
			}
			msg := fieldString(logged[0], "error")
			t.Logf("logged: %s", msg)
			if !strings.Contains(msg, tc.errHas) {
				t.Errorf("logged error %q, want it to mention %q", msg, tc.errHas)
			}
		})
	}
}

// TestSandboxLibraries checks what scripts can reach: only the base
// library without its code-loading functions, string, table and math, and
// mserve.
func TestSandboxLibraries(t *testing.T) {
	src := `
mserve.route("globals", function(call)
  local names = {}
  for k, v in pairs(_G) do names[#names + 1] = k end
  table.sort(names)
  return table.concat(names, " ")
end)`
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "g.lua", src)}})
	got, err := NewRouter(h, "globals", &fixedRouter{route: "fallback"}).Route(&dispatch.Call{Method: "f"})
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(got)
	for _, must := range []string{"string", "table", "math", "mserve", "pairs", "ipairs", "pcall", "error", "tostring", "tonumber", "type", "select", "unpack", "setmetatable", "print"} {
		if !slices.Contains(names, must) {
			t.Errorf("%s is missing from the sandbox (globals: %s)", must, got)
		}
	}
	for _, banned := range []string{"io", "os", "debug", "require", "module", "load", "loadstring", "loadfile", "dofile",
		"getfenv", "setfenv", "collectgarbage", "newproxy", "package", "coroutine", "channel", "_printregs"} {
		if slices.Contains(names, banned) {
			t.Errorf("%s is reachable from scripts", banned)
		}
	}
	t.Logf("globals: %s", got)
}

// TestSandboxPrint checks that print goes to the log at debug level.
func TestSandboxPrint(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	p := writeScript(t, t.TempDir(), "p.lua", `mserve.route("p", function(call) print("hello", call.method, 42) return "x" end)`)
	h := newHost(t, Config{Files: []string{p}, Log: log})
	if _, err := NewRouter(h, "p", &fixedRouter{}).Route(&dispatch.Call{Method: "f"}); err != nil {
		t.Fatal(err)
	}
	e := logs.FilterMessage("script print").All()
	if len(e) != 1 || fieldString(e[0], "text") != "hello\tf\t42" || e[0].Level != zapcore.DebugLevel {
		t.Fatalf("print logged %v", e)
	}
}

// TestBudgetBreaker runs an algorithm that loops forever until a time:
// each round stops at the budget and the fallback decides; after three
// failures in a row the script is skipped (the fallback decides at once)
// for a second of round time; then it runs again, and once it behaves it
// decides again.
func TestBudgetBreaker(t *testing.T) {
	src := `
mserve.algorithm("loop", function(calls, servants, plan)
  if plan.now < LIMIT then
    while true do end
  end
  -- behave: everything to the last servant that can take it
  for i = 1, #calls do
    for j = #servants, 1, -1 do
      if plan.can_take(j, i) then plan.assign(i, j) break end
    end
  end
end)
`
	recover := t0.Add(5 * time.Second)
	src = "LIMIT = " + formatSeconds(recover) + "\n" + src
	log, logs := testkit.Observed(zapcore.WarnLevel)
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "loop.lua", src)}, Budget: 20 * time.Millisecond, Log: log})
	fb := &countingFallback{}
	a := NewAlgorithm(h, "loop", fb)
	cnt := h.Counters("loop")
	type counts struct{ decisions, errors, fallbacks, fb uint64 }
	get := func() counts {
		return counts{cnt.Decisions.Load(), cnt.Errors.Load(), cnt.Fallbacks.Load(), uint64(fb.rounds.Load())}
	}
	step := func(now time.Time) (outcome, time.Duration) {
		calls := queue("a", "b")
		vs := views(now, srv{}, srv{}, srv{})
		start := time.Now()
		o := round(a, calls, vs, now)
		return o, time.Since(start)
	}
	// Three failing rounds: each runs the script, stops it at the budget,
	// and lets the fallback (orig: s1, s2) decide.
	for i := 1; i <= 3; i++ {
		o, d := step(t0)
		if got, want := get(), (counts{uint64(i), uint64(i), uint64(i), uint64(i)}); got != want {
			t.Fatalf("failing round %d: counters %+v, want %+v", i, got, want)
		}
		if len(o.assigned) != 2 || o.assigned[0].Servant != 0 || o.assigned[1].Servant != 1 {
			t.Errorf("failing round %d: assigned %v, want the fallback's s1, s2", i, o.assigned)
		}
		if d < 20*time.Millisecond || d > 2*time.Second {
			t.Errorf("failing round %d took %v; the budget is 20ms", i, d)
		}
	}
	// Paused: the script does not run; the fallback decides at once.
	for _, at := range []time.Duration{0, 500 * time.Millisecond, 999 * time.Millisecond} {
		o, _ := step(t0.Add(at))
		if got := get(); got.decisions != 3 || got.errors != 3 {
			t.Fatalf("paused round at +%v ran the script: %+v", at, got)
		}
		if len(o.assigned) != 2 {
			t.Errorf("paused round at +%v assigned %v, want the fallback's two", at, o.assigned)
		}
	}
	if got := get(); got.fallbacks != 6 || got.fb != 6 {
		t.Fatalf("after the pause: %+v, want 6 fallbacks", got)
	}
	// Past the pause the script runs again (and fails again: it still loops).
	step(t0.Add(time.Second + time.Millisecond))
	if got := get(); got.decisions != 4 || got.errors != 4 {
		t.Fatalf("the script did not run again after the pause: %+v", got)
	}
	// Once it behaves, it decides, and the fallback does not.
	o, _ := step(recover.Add(time.Millisecond))
	if got := get(); got.decisions != 5 || got.errors != 4 || got.fb != 7 {
		t.Fatalf("behaving round: %+v", got)
	}
	if len(o.assigned) != 2 || o.assigned[0].Servant != 2 || o.assigned[1].Servant != 1 {
		t.Errorf("behaving round assigned %v, want the script's s3, s2", o.assigned)
	}
	if n := len(failuresLogged(logs, "loop")); n != 1 {
		t.Errorf("the identical budget overrun was logged %d times, want once", n)
	}
}

// formatSeconds writes t as Lua sees times: Unix seconds.
func formatSeconds(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', -1, 64)
}

// TestSandboxBudgetCoversLibraryCalls runs library functions that take
// long inside one call. The budget is checked between Lua instructions, so
// a single long call into Go (pattern matching, gsub, unpack) is not
// stopped by it: the decision, which holds mserve's dispatch lock, runs far
// past its budget.
func TestSandboxBudgetCoversLibraryCalls(t *testing.T) {
	tests := []struct{ name, body string }{
		// Backtracking: about n^4 steps in one call to string.find.
		{"string.find backtracking", `return tostring(string.rep("a", 55):find(".-.-.-.-b"))`},
		// gopher-lua's gsub copies the whole string once per match.
		{"string.gsub quadratic", `return (string.rep("x", 15000):gsub("x", "y"))`},
		// The value stack grows 32 slots at a time: unpack copies it
		// again and again.
		{"unpack of a large range", `return select("#", unpack({}, 1, 30000))`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := `mserve.route("slow", function(call) ` + tc.body + ` end)`
			h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "slow.lua", src)}, Budget: 20 * time.Millisecond})
			r := NewRouter(h, "slow", &fixedRouter{route: "fallback"})
			start := time.Now()
			got, _ := r.Route(&dispatch.Call{Method: "f"})
			if d := time.Since(start); d > 150*time.Millisecond {
				t.Errorf("one routing call took %v with a budget of 20ms (routed %q)", d, got)
			}
		})
	}
}

// TestSandboxBoundedStrings checks that library functions other than
// string.rep cannot build strings past the sandbox limit in one call
// (the package promises bounded strings). table.concat with a 1 MiB
// separator over a table of 10000 empty strings would need 10 GB at once,
// which no budget can stop; here 2 MiB shows the limit is not applied.
func TestSandboxBoundedStrings(t *testing.T) {
	tests := []struct{ name, body string }{
		{"table.concat", `local t = {} for i = 1, 3 do t[i] = "" end return #table.concat(t, string.rep("y", 1048576))`},
		{"string.gsub", `return #(string.rep("x", 2):gsub("x", string.rep("y", 1048576)))`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := `mserve.route("big", function(call) ` + tc.body + ` end)`
			h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "big.lua", src)}, Budget: time.Second})
			got, _ := NewRouter(h, "big", &fixedRouter{route: "fallback"}).Route(&dispatch.Call{Method: "f"})
			if got != "fallback" {
				t.Errorf("built a string of %s bytes; want it refused (limit %d)", got, maxString)
			}
		})
	}
}

// TestScriptErrorsDoNotLeakBetweenAlgorithms checks that two Algorithms of
// the same host have their own Lua states: one failing does not disturb the
// other, and script globals are not shared.
func TestScriptErrorsDoNotLeakBetweenAlgorithms(t *testing.T) {
	src := `
count = 0
mserve.algorithm("counter", function(calls, servants, plan)
  count = count + 1
  if count == 2 then error("second round fails") end
  plan.wake_at(count)
end)`
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "c.lua", src)}})
	a1 := NewAlgorithm(h, "counter", &algo.Orig{})
	a2 := NewAlgorithm(h, "counter", &algo.Orig{})
	calls := queue("a")
	w := func(a dispatch.Algorithm) float64 {
		o := round(a, calls, views(t0, srv{busy: 1}), t0)
		if o.wake.IsZero() {
			return 0
		}
		return float64(o.wake.UnixNano()) / 1e9
	}
	// a1: 1, fails (its state is kept: an error is not a budget overrun), 3.
	// a2: 1, fails, 3 — independently.
	got := []float64{w(a1), w(a2), w(a1), w(a1), w(a2), w(a2)}
	want := []float64{1, 1, 0, 3, 0, 3}
	if !slices.Equal(got, want) {
		t.Errorf("wake times %v, want %v", got, want)
	}
}

// TestBudgetTimerSpansDecisions checks the budget's timer bookkeeping
// without waiting for it: the timer stays pending across short decisions,
// and when it goes off during a later decision with time left it re-arms
// for that decision instead of stopping it; a decision past its deadline
// when the timer goes off is stopped, and the budget stays expired.
func TestBudgetTimerSpansDecisions(t *testing.T) {
	b := newBudget()
	defer b.stop()
	if !b.arm(time.Hour) {
		t.Fatal("a new budget refused to arm")
	}
	first := b.timerAt
	b.disarm()
	b.arm(time.Hour)
	if !b.timerAt.Equal(first) {
		t.Errorf("the second decision moved the pending timer from %v to %v", first, b.timerAt)
	}
	second := b.deadline

	b.fire() // the timer set for the first decision goes off during the second
	if b.Err() != nil {
		t.Fatal("a decision with time left was stopped")
	}
	if !b.timerAt.Equal(second) {
		t.Errorf("the timer was re-armed for %v, want the running decision's deadline %v", b.timerAt, second)
	}

	b.disarm()
	b.fire() // goes off between decisions: nothing to stop, nothing pending
	if b.Err() != nil || !b.timerAt.IsZero() {
		t.Fatalf("a timer going off between decisions: err %v, timer pending until %v", b.Err(), b.timerAt)
	}

	b.arm(time.Hour)
	b.mu.Lock()
	b.deadline = time.Now().Add(-time.Millisecond) // the decision overran
	b.mu.Unlock()
	b.fire()
	select {
	case <-b.Done():
	default:
		t.Fatal("an overrun decision was not stopped")
	}
	if b.arm(time.Hour) {
		t.Error("an expired budget armed again; its state must be replaced")
	}
}
