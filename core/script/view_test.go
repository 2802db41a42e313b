package script

// What scripts see: the call, servant and plan tables, and the mserve
// table. A script prints what it sees (print goes to the debug log) and the
// test reads it back.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/dispatch"
)

// showLua defines show(key, value), which prints "key<TAB>type<TAB>value".
const showLua = `
local function show(k, v) print(k, type(v), tostring(v)) end
`

// seen collects what a script printed with show: key → "type:value".
func seen(logs *observer.ObservedLogs) map[string]string {
	out := map[string]string{}
	for _, e := range logs.TakeAll() {
		if e.Message != "script print" {
			continue
		}
		parts := strings.SplitN(fieldString(e, "text"), "\t", 3)
		if len(parts) == 3 {
			out[parts[0]] = parts[1] + ":" + parts[2]
		}
	}
	return out
}

// expectSeen checks exact values; a want of "number~X" compares numbers
// within 1µs.
func expectSeen(t *testing.T, got map[string]string, want map[string]string) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: not shown", k)
			continue
		}
		if x, ok := strings.CutPrefix(w, "number~"); ok {
			wf, _ := strconv.ParseFloat(x, 64)
			gs, isNum := strings.CutPrefix(g, "number:")
			gf, err := strconv.ParseFloat(gs, 64)
			if !isNum || err != nil || math.Abs(gf-wf) > 1e-6 {
				t.Errorf("%s = %s, want the number %s", k, g, x)
			}
			continue
		}
		if g != w {
			t.Errorf("%s = %s, want %s", k, g, w)
		}
	}
}

func secs(t time.Time) string { return "number~" + formatSeconds(t) }

const viewLua = showLua + `
local call_fields = {"method", "route", "user", "params", "arrived", "index"}
local servant_fields = {"index", "name", "addr", "host", "slots", "in_flight", "free", "backlog", "used",
  "last_route", "last_used", "idle_for", "healthy", "draining", "available", "latency", "served"}

local function show_call(p, c)
  show(p .. "args_before", rawget(c, "args")) -- decoded on first use only
  for _, k in ipairs(call_fields) do show(p .. k, c[k]) end
  local args = c.args
  show(p .. "args", type(args) == "table" and "table" or args)
  show(p .. "args_after", type(rawget(c, "args")))
  if type(args) == "table" then
    show(p .. "#args", #args)
    for j = 1, #args do
      local a = args[j]
      if type(a) == "table" then
        show(p .. "args[" .. j .. "]", "table")
        for k, v in pairs(a) do show(p .. "args[" .. j .. "]." .. tostring(k), type(v) == "table" and #v or v) end
      else
        show(p .. "args[" .. j .. "]", a)
      end
    end
    local keys = {}
    for k in pairs(args) do if type(k) == "string" then keys[#keys + 1] = k end end
    table.sort(keys)
    show(p .. "named", table.concat(keys, ","))
    for _, k in ipairs(keys) do show(p .. "args." .. k, args[k]) end
  end
end

local function show_servant(p, s)
  for _, k in ipairs(servant_fields) do show(p .. k, s[k]) end
  local tags = {}
  for i = 1, #s.tags do tags[i] = s.tags[i] end
  show(p .. "tags", table.concat(tags, ","))
  show(p .. "tags.gpu", s.tags.gpu)
  show(p .. "tags.none", s.tags.none)
end

mserve.algorithm("view", function(calls, servants, plan)
  show("#calls", #calls)
  show("#servants", #servants)
  show("plan.now", plan.now)
  show("route_expire", mserve.route_expire)
  show("type(mserve.now())", type(mserve.now()))
  show("mserve.date(2026-01-02)", mserve.date("2026-01-02"))
  show("mserve.date(rfc3339)", mserve.date("2026-01-02T09:30:00.5Z"))
  show("mserve.date(bad)", mserve.date("yesterday"))
  show("mserve.date(number)", mserve.date(20260102))
  for i = 1, math.min(#calls, 3) do show_call("call" .. i .. ".", calls[i]) end
  for j = 1, #servants do show_servant("servant" .. j .. ".", servants[j]) end
  -- Consistency within a round: an assignment shows at once.
  local s = servants[1]
  show("before.in_flight", s.in_flight)
  show("assign", plan.assign(1, 1))
  show("after.in_flight", s.in_flight)
  show("after.free", s.free)
  show("after.used", s.used)
  show("after.last_route", s.last_route)
  show("can_take(1, 1)", plan.can_take(1, 1)) -- already assigned
  show("assign again", plan.assign(1, 1))
  show("can_take(2, 2)", plan.can_take(2, 2)) -- s2 is down
  show("assign out of range", plan.assign(99, 1))
  show("method form", plan:can_take(1, 2))
  plan.wake_at(plan.now + 1.5)
end)

mserve.picker("pick_view", function(call, servants, plan)
  show("picker.index", call.index)
  show("picker.route", call.route)
  show("picker.args[1]", call.args[1])
  show("picker.#servants", #servants)
  show("picker.plan.now", plan.now)
  return nil
end)

mserve.route("route_view", function(call)
  show_call("route.", call)
  return "ok"
end)
`

func TestScriptView(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "view.lua", viewLua)}, RouteExpire: 7500 * time.Millisecond, Log: log, Budget: time.Second})
	lastUsed := t0.Add(-3 * time.Second)
	servants := []*dispatch.Servant{
		{Name: "gpu1", Addr: "10.0.0.6:7001", Host: "10.0.0.6", Tags: []string{"gpu", "rdb"}, Slots: 4, InFlight: 1, Backlog: 2,
			Used: true, LastRoute: "MSFT", LastUsed: lastUsed, Healthy: true, Latency: 2500 * time.Microsecond, Served: 17},
		{Name: "s2", Addr: "127.0.0.1:7002", Host: "127.0.0.1", Slots: 1, Healthy: false, Draining: true},
	}
	calls := []*dispatch.Call{
		{Method: "proc1", Params: []byte(`["IBM",42,{"a":[1,2]},null,true]`), Route: "IBM", User: "alice", Arrived: t0.Add(-1500 * time.Millisecond)},
		{Method: "hdb", Params: []byte(`{"sym":"IBM","date":"2025-01-02","n":null,"px":1.5}`), Route: "IBM", Arrived: t0.Add(-time.Second)},
		{Method: "ping", Arrived: t0},
	}
	a := NewAlgorithm(h, "view", failFallback(t, "view"))
	var p dispatch.Plan
	p.Reset(calls, servants, t0)
	a.Assign(calls, servants, &p)
	got := seen(logs)

	expectSeen(t, got, map[string]string{
		"#calls": "number:3", "#servants": "number:2",
		"plan.now": secs(t0), "route_expire": "number:7.5", "type(mserve.now())": "string:number",
		"mserve.date(2026-01-02)": secs(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)),
		"mserve.date(rfc3339)":    secs(time.Date(2026, 1, 2, 9, 30, 0, 5e8, time.UTC)),
		"mserve.date(bad)":        "nil:nil", "mserve.date(number)": "nil:nil",

		// A positional call.
		"call1.args_before": "nil:nil", "call1.method": "string:proc1", "call1.route": "string:IBM", "call1.user": "string:alice",
		"call1.params": `string:["IBM",42,{"a":[1,2]},null,true]`, "call1.arrived": secs(t0.Add(-1500 * time.Millisecond)),
		"call1.index": "number:1", "call1.args": "string:table", "call1.args_after": "string:table",
		"call1.args[1]": "string:IBM", "call1.args[2]": "number:42", "call1.args[3]": "string:table", "call1.args[3].a": "number:2",
		"call1.args[4]": "nil:nil", "call1.args[5]": "boolean:true", "call1.named": "string:",
		// A call with named params: args by name; null is nil.
		"call2.method": "string:hdb", "call2.user": "string:", "call2.index": "number:2", "call2.#args": "number:0",
		"call2.named": "string:date,px,sym", "call2.args.sym": "string:IBM", "call2.args.date": "string:2025-01-02", "call2.args.px": "number:1.5",
		"call2.params": `string:{"sym":"IBM","date":"2025-01-02","n":null,"px":1.5}`,
		// No params at all.
		"call3.params": "string:", "call3.args": "nil:nil", "call3.route": "string:", "call3.arrived": secs(t0),

		"servant1.index": "number:1", "servant1.name": "string:gpu1", "servant1.addr": "string:10.0.0.6:7001", "servant1.host": "string:10.0.0.6",
		"servant1.tags": "string:gpu,rdb", "servant1.tags.gpu": "boolean:true", "servant1.tags.none": "nil:nil",
		"servant1.slots": "number:4", "servant1.in_flight": "number:1", "servant1.free": "number:3", "servant1.backlog": "number:2",
		"servant1.used": "boolean:true", "servant1.last_route": "string:MSFT", "servant1.last_used": secs(lastUsed), "servant1.idle_for": "number:3",
		"servant1.healthy": "boolean:true", "servant1.draining": "boolean:false", "servant1.available": "boolean:true",
		"servant1.latency": "number:0.0025", "servant1.served": "number:17",
		"servant2.index": "number:2", "servant2.name": "string:s2", "servant2.tags": "string:", "servant2.tags.gpu": "nil:nil",
		"servant2.used": "boolean:false", "servant2.last_route": "nil:nil", "servant2.last_used": "number:0", "servant2.idle_for": "number:0",
		"servant2.healthy": "boolean:false", "servant2.draining": "boolean:true", "servant2.available": "boolean:false",
		"servant2.latency": "number:0", "servant2.served": "number:0", "servant2.free": "number:1",

		"before.in_flight": "number:1", "assign": "boolean:true",
		"after.in_flight": "number:2", "after.free": "number:2", "after.used": "boolean:true", "after.last_route": "string:IBM",
		"can_take(1, 1)": "boolean:false", "assign again": "boolean:false", "can_take(2, 2)": "boolean:false",
		"assign out of range": "boolean:false", "method form": "boolean:true",
	})
	if as := p.Assignments(); len(as) != 1 || as[0] != (dispatch.Assignment{Call: 0, Servant: 0}) {
		t.Errorf("assignments %v, want call 1 to servant 1", as)
	}
	if p.Rejected() != 2 {
		t.Errorf("Rejected() = %d, want 2 (assign again, out of range)", p.Rejected())
	}
	if want := t0.Add(1500 * time.Millisecond); !sameWake(p.Wake(), want) {
		t.Errorf("wake %v, want %v", p.Wake(), want)
	}
	if servants[0].InFlight != 2 || servants[0].LastRoute != "IBM" {
		t.Errorf("the view after the round: %+v", *servants[0])
	}

	t.Run("next round sees the changes and keeps decoded args", func(t *testing.T) {
		servants[0].InFlight, servants[0].Served, servants[0].LastUsed = 0, 18, t0
		servants[1].Healthy, servants[1].Draining = true, false
		servants[1].Tags = []string{"gpu"}
		next := t0.Add(time.Second)
		var p dispatch.Plan
		p.Reset(calls[1:], servants, next)
		a.Assign(calls[1:], servants, &p)
		got := seen(logs)
		expectSeen(t, got, map[string]string{
			"#calls": "number:2", "plan.now": secs(next),
			"call1.method": "string:hdb", "call1.index": "number:1",
			"servant1.in_flight": "number:0", "servant1.free": "number:4", "servant1.served": "number:18", "servant1.last_used": secs(t0), "servant1.idle_for": "number:1",
			"servant1.last_route": "string:IBM",
			"servant2.available":  "boolean:true", "servant2.tags": "string:gpu", "servant2.tags.gpu": "boolean:true",
		})
		// args was decoded in the previous round and is kept while the
		// call waits.
		if g := got["call1.args_before"]; !strings.HasPrefix(g, "table:") {
			t.Errorf("call1.args_before = %s, want the table decoded last round", g)
		}
	})

	t.Run("picker", func(t *testing.T) {
		pa := NewAlgorithm(h, "pick_view", failFallback(t, "pick_view"))
		vs := views(t0, srv{}, srv{})
		round(pa, calls[:1], vs, t0)
		expectSeen(t, seen(logs), map[string]string{
			"picker.index": "number:1", "picker.route": "string:IBM", "picker.args[1]": "string:IBM",
			"picker.#servants": "number:2", "picker.plan.now": secs(t0),
		})
	})

	t.Run("routing function", func(t *testing.T) {
		r := NewRouter(h, "route_view", &fixedRouter{route: "fallback"})
		if got, err := r.Route(calls[0]); got != "ok" || err != nil {
			t.Fatalf("routed %q, %v", got, err)
		}
		expectSeen(t, seen(logs), map[string]string{
			"route.method": "string:proc1", "route.user": "string:alice", "route.arrived": secs(calls[0].Arrived),
			"route.params": `string:["IBM",42,{"a":[1,2]},null,true]`, "route.args[1]": "string:IBM", "route.args[2]": "number:42",
			"route.route": "nil:nil", "route.index": "nil:nil", // not known yet when routing
		})
	})
}

// TestScriptWindow checks that a round shows scripts at most the 256
// oldest waiting calls.
func TestScriptWindow(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	src := showLua + `mserve.algorithm("w", function(calls, servants, plan)
  show("#calls", #calls)
  show("last", calls[#calls].route)
  for i = 1, #calls do plan.assign(i, 1) end
end)`
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "w.lua", src)}, Log: log, Budget: time.Second})
	a := NewAlgorithm(h, "w", failFallback(t, "w"))
	routes := make([]string, 300)
	for i := range routes {
		routes[i] = fmt.Sprint(i + 1)
	}
	calls := queue(routes...)
	o := round(a, calls, views(t0, srv{slots: 1000}), t0)
	expectSeen(t, seen(logs), map[string]string{"#calls": "number:256", "last": "string:256"})
	if len(o.assigned) != 256 {
		t.Errorf("assigned %d calls, want the 256 of the window", len(o.assigned))
	}
	// The next round (fewer calls) shows no stale entries past the end.
	round(a, calls[:10], views(t0, srv{slots: 1000}), t0)
	expectSeen(t, seen(logs), map[string]string{"#calls": "number:10", "last": "string:10"})
}

// TestScriptWritesToViewsCannotOverbook checks that a script writing into
// the tables it is shown (against the rules) cannot make mserve overbook a
// servant: the plan checks the real servant, not the table.
func TestScriptWritesToViewsCannotOverbook(t *testing.T) {
	src := `
mserve.algorithm("scribble", function(calls, servants, plan)
  servants[1].free = 99
  servants[1].available = true
  servants[2].tags = {gpu = true}
  for i = 1, #calls do plan.assign(i, 1) end
end)`
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "s.lua", src)}, Budget: time.Second})
	a := NewAlgorithm(h, "scribble", failFallback(t, "scribble"))
	for range 3 {
		calls := queue("a", "b", "c")
		vs := views(t0, srv{slots: 2}, srv{})
		o := round(a, calls, vs, t0)
		if len(o.assigned) != 2 || o.rejected != 1 || vs[0].InFlight != 2 {
			t.Fatalf("assigned %s (%d refused) to a servant with 2 slots", describe(o.assigned, calls), o.rejected)
		}
		vs[0].Healthy = false
		o = round(a, queue("d"), vs, t0)
		if len(o.assigned) != 0 {
			t.Fatalf("assigned %v to a servant that is down", o.assigned)
		}
	}
}

// TestScriptViewFollowsEjection checks that a servant's "available" follows
// dispatch.Servant.Available() from round to round when the engine ejects
// a servant and readmits it (Ejected changes, Healthy and Draining do not).
func TestScriptViewFollowsEjection(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	src := showLua + `
local n = 0
mserve.algorithm("avail", function(calls, servants, plan)
  n = n + 1
  show("round" .. n .. ".available", servants[1].available)
end)`
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "a.lua", src)}, Log: log, Budget: time.Second})
	a := NewAlgorithm(h, "avail", failFallback(t, "avail"))
	vs := views(t0, srv{used: true, route: "x", idle: time.Minute})
	for _, ejected := range []bool{false, true, false} {
		vs[0].Ejected = ejected
		round(a, queue("y"), vs, t0)
	}
	expectSeen(t, seen(logs), map[string]string{
		"round1.available": "boolean:true",
		"round2.available": "boolean:false", // ejected
		"round3.available": "boolean:true",  // readmitted
	})
}

// TestPlanHeldAndFreeHolder checks plan.held and plan.free_holder against
// the servants' state, within a round (after assignments) and from round
// to round (servants going down, coming back, changing routing strings).
func TestPlanHeldAndFreeHolder(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	src := showLua + `
mserve.algorithm("held", function(calls, servants, plan)
  for _, r in ipairs({"A", "B", "C", "D"}) do show("held." .. r, plan.held[r]) end
  for i = 1, #calls do show("free_holder." .. i, plan.free_holder(i)) end
  local i, j = plan.first_free_holder()
  show("first_free_holder", tostring(i) .. "," .. tostring(j))
  local unheld = {}
  local k = plan.next_unheld()
  while k do unheld[#unheld + 1] = k; k = plan.next_unheld(k) end
  show("unheld", "[" .. table.concat(unheld, ",") .. "]")
  if calls[1].route == "assign" then
    show("assign", plan.assign(1, 3)) -- s3 held C; now it holds "assign"
    show("after.held.C", plan.held["C"])
    show("after.held.assign", plan.held["assign"])
    show("after.free_holder.1", plan.free_holder(1)) -- assigned: nil
    show("after.first_free_holder", plan.first_free_holder())
    show("after.next_unheld", plan.next_unheld())
  end
end)`
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "h.lua", src)}, Log: log, Budget: time.Second})
	a := NewAlgorithm(h, "held", failFallback(t, "held"))
	vs := views(t0,
		srv{used: true, route: "A", busy: 1},                   // s1 holds A, busy
		srv{used: true, route: "A", slots: 2},                  // s2 holds A, free
		srv{used: true, route: "C"},                            // s3 holds C, free
		srv{used: true, route: "B", down: true},                // s4 is down: holds nothing
		srv{used: true, route: "D", serves: []string{"other"}}, // s5 holds D but serves only "other"
		srv{}, // s6 never used
	)
	steps := []struct {
		name   string
		change func()
		calls  []*dispatch.Call
		want   map[string]string
	}{
		{"first round", func() {}, queue("A", "B", "C", "D", "E"), map[string]string{
			"held.A": "number:2", "held.B": "nil:nil", "held.C": "number:1", "held.D": "number:1",
			"free_holder.1": "number:2", "free_holder.2": "nil:nil", "free_holder.3": "number:3",
			"free_holder.4":     "nil:nil", // s5 does not serve the call's function
			"free_holder.5":     "nil:nil",
			"first_free_holder": "string:1,2", "unheld": "string:[2,5]",
		}},
		{"a servant comes back, another goes down", func() { vs[3].Healthy, vs[1].Healthy = true, false }, queue("A", "B"), map[string]string{
			"held.A": "number:1", "held.B": "number:1",
			"free_holder.1":     "nil:nil", // s1 holds A but is busy; s2 is down
			"free_holder.2":     "number:4",
			"first_free_holder": "string:2,4", "unheld": "string:[]",
		}},
		{"assignments show at once", func() {}, queue("assign"), map[string]string{
			"held.C": "number:1", "assign": "boolean:true", "after.held.C": "nil:nil", "after.held.assign": "number:1",
			"after.free_holder.1": "nil:nil", "after.first_free_holder": "nil:nil", "after.next_unheld": "nil:nil",
			"unheld": "string:[1]",
		}},
		{"the next round keeps the assignment's holding", func() {}, queue("C"), map[string]string{
			"held.C": "nil:nil", "held.A": "number:1", "free_holder.1": "nil:nil",
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.change()
			round(a, st.calls, vs, t0)
			expectSeen(t, seen(logs), st.want)
		})
	}
}

// TestPlanHeldForgetsOldRoutingStrings checks that plan.held does not grow
// with every routing string ever seen: gopher-lua tables keep their keys,
// so mserve replaces the table once it holds mostly dead ones.
func TestPlanHeldForgetsOldRoutingStrings(t *testing.T) {
	src := `
mserve.algorithm("churn", function(calls, servants, plan)
  for i = 1, #calls do
    local j = plan.free_holder(i)
    if not j then
      for k = 1, #servants do if plan.can_take(k, i) then j = k break end end
    end
    if j then plan.assign(i, j) end
  end
end)`
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "c.lua", src)}, Budget: time.Second})
	a := NewAlgorithm(h, "churn", failFallback(t, "churn"))
	vs := views(t0, srv{}, srv{})
	for i := range 10000 {
		round(a, queue(fmt.Sprint("a", i), fmt.Sprint("b", i)), vs, t0)
		vs[0].InFlight, vs[1].InFlight = 0, 0
	}
	st := a.st
	if st.heldKeys > 2*len(st.heldCount)+1024 {
		t.Errorf("plan.held has seen %d keys for %d held routing strings", st.heldKeys, len(st.heldCount))
	}
	if len(st.heldCount) != 2 {
		t.Errorf("held %v, want the two servants' last routing strings", st.heldCount)
	}
	for route, n := range st.heldCount {
		if got := st.heldTab.RawGetString(route); got != lua.LNumber(n) {
			t.Errorf("plan.held[%q] = %v, want %d", route, got, n)
		}
	}
}
