package script

// Benchmarks of scripted decisions and routing against the built-ins.
//
//	go test -run '^$' -bench . -benchmem ./core/script
//
// The aim is a Lua match decision within 3µs at 8 servants.

import (
	"fmt"
	"testing"
	"time"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/route"
	"github.com/mserve/mserve/sdk/dispatch"
)

// decisionFixture is one waiting call and n servants: the first is free
// and last ran the call's routing string, the others are busy with their
// own routing strings. This is the common round: a slot freed and the
// algorithm picks a call for it.
func decisionFixture(n int) ([]*dispatch.Call, []*dispatch.Servant) {
	ss := make([]srv, n)
	for i := range ss {
		ss[i] = srv{used: true, route: fmt.Sprintf("SYM%d", i), idle: time.Second, busy: 1}
	}
	ss[0].busy = 0
	return queue("SYM0"), views(t0, ss...)
}

// benchDecision measures one round per iteration. Between rounds the free
// servant's slot is freed again, as the call's completion would.
func benchDecision(b *testing.B, a dispatch.Algorithm, n int) {
	calls, servants := decisionFixture(n)
	var p dispatch.Plan
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		servants[0].InFlight = 0
		p.Reset(calls, servants, t0)
		a.Assign(calls, servants, &p)
		if len(p.Assignments()) != 1 {
			b.Fatalf("assigned %v", p.Assignments())
		}
	}
}

func benchHost(b *testing.B, files ...string) *Host {
	b.Helper()
	h, err := NewHost(Config{Files: files, Budget: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

func noFallback(b *testing.B) dispatch.Algorithm {
	return dispatch.AlgorithmFunc(func([]*dispatch.Call, []*dispatch.Servant, *dispatch.Plan) {
		b.Fatal("the fallback decided")
	})
}

func BenchmarkDecision(b *testing.B) {
	h := benchHost(b, shippedScript("match.lua"), shippedScript("orig.lua"), shippedScript("canary.lua"))
	pickerPath := writeScript(b, b.TempDir(), "least.lua", `
mserve.picker("lua.least", function(call, servants, plan)
  local best, load = nil, nil
  for j = 1, #servants do
    local s = servants[j]
    if plan.can_take(j, call.index) then
      local l = s.in_flight + s.backlog
      if best == nil or l < load then best, load = j, l end
    end
  end
  return best
end)`)
	hp := benchHost(b, pickerPath)
	for _, n := range []int{8, 64} {
		b.Run(fmt.Sprintf("match/%d", n), func(b *testing.B) { benchDecision(b, algo.NewMatch(12*time.Second), n) })
		b.Run(fmt.Sprintf("lua.match/%d", n), func(b *testing.B) { benchDecision(b, NewAlgorithm(h, "lua.match", noFallback(b)), n) })
		b.Run(fmt.Sprintf("orig/%d", n), func(b *testing.B) { benchDecision(b, algo.Orig{}, n) })
		b.Run(fmt.Sprintf("lua.orig/%d", n), func(b *testing.B) { benchDecision(b, NewAlgorithm(h, "lua.orig", noFallback(b)), n) })
		b.Run(fmt.Sprintf("picker.lua.least/%d", n), func(b *testing.B) { benchDecision(b, NewAlgorithm(hp, "lua.least", noFallback(b)), n) })
		b.Run(fmt.Sprintf("picker.canary/%d", n), func(b *testing.B) { benchDecision(b, NewAlgorithm(h, "canary", noFallback(b)), n) })
	}
}

// BenchmarkDecisionFloor is what a scripted decision costs besides the
// script: an algorithm that does nothing, one that assigns without
// looking, and one that scans the servants for a free one.
func BenchmarkDecisionFloor(b *testing.B) {
	h := benchHost(b, writeScript(b, b.TempDir(), "floor.lua", `
mserve.algorithm("nothing", function(calls, servants, plan) end)
mserve.algorithm("blind", function(calls, servants, plan) plan.assign(1, 1) end)
mserve.algorithm("scan", function(calls, servants, plan)
  for j = 1, #servants do
    local s = servants[j]
    if s.available and s.free > 0 then plan.assign(1, j) return end
  end
end)`))
	for _, name := range []string{"nothing", "blind", "scan"} {
		b.Run(name, func(b *testing.B) {
			calls, servants := decisionFixture(8)
			a := NewAlgorithm(h, name, noFallback(b))
			var p dispatch.Plan
			b.ReportAllocs()
			for range b.N {
				servants[0].InFlight = 0
				p.Reset(calls, servants, t0)
				a.Assign(calls, servants, &p)
			}
		})
	}
}

// BenchmarkDeepQueue is a round with 256 calls waiting (the script
// window) and one free servant: the cost of showing the queue to a script.
func BenchmarkDeepQueue(b *testing.B) {
	h := benchHost(b, shippedScript("match.lua"), shippedScript("orig.lua"), shippedScript("even.lua"))
	routes := make([]string, 256)
	for i := range routes {
		routes[i] = fmt.Sprintf("SYM%d", i%32)
	}
	for _, tc := range []struct {
		name string
		a    func(b *testing.B) dispatch.Algorithm
	}{
		{"orig", func(*testing.B) dispatch.Algorithm { return algo.Orig{} }},
		{"lua.orig", func(b *testing.B) dispatch.Algorithm { return NewAlgorithm(h, "lua.orig", noFallback(b)) }},
		{"match", func(*testing.B) dispatch.Algorithm { return algo.NewMatch(12 * time.Second) }},
		{"lua.match", func(b *testing.B) dispatch.Algorithm { return NewAlgorithm(h, "lua.match", noFallback(b)) }},
		{"even", func(*testing.B) dispatch.Algorithm { return &algo.Even{} }},
		{"lua.even", func(b *testing.B) dispatch.Algorithm { return NewAlgorithm(h, "lua.even", noFallback(b)) }},
	} {
		for _, n := range []int{8, 64} {
			b.Run(fmt.Sprintf("%s/%d", tc.name, n), func(b *testing.B) {
				_, servants := decisionFixture(n)
				calls := queue(routes...)
				a := tc.a(b)
				var p dispatch.Plan
				b.ReportAllocs()
				for range b.N {
					servants[0].InFlight, servants[0].LastRoute = 0, "SYM0"
					p.Reset(calls, servants, t0)
					a.Assign(calls, servants, &p)
					if len(p.Assignments()) != 1 {
						b.Fatalf("assigned %v", p.Assignments())
					}
				}
			})
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	h := benchHost(b, writeScript(b, b.TempDir(), "r.lua", `
mserve.route("trivial", function(call) return "x" end)
mserve.route("arg1", function(call) return call.args[1] end)
mserve.route("method", function(call) return call.method end)
`))
	call := &dispatch.Call{Method: "proc1", Params: []byte(`["IBM","2026-01-02",42]`), Arrived: t0}
	run := func(b *testing.B, r dispatch.Router, want string) {
		b.ReportAllocs()
		for range b.N {
			got, err := r.Route(call)
			if err != nil || got != want {
				b.Fatalf("routed %q, %v", got, err)
			}
		}
	}
	fb := &fixedRouter{route: "fallback"}
	b.Run("lua/trivial", func(b *testing.B) { run(b, NewRouter(h, "trivial", fb), "x") })
	b.Run("lua/method", func(b *testing.B) { run(b, NewRouter(h, "method", fb), "proc1") })
	b.Run("lua/args[1]", func(b *testing.B) { run(b, NewRouter(h, "arg1", fb), "IBM") })
	b.Run("lua/args[1]/parallel", func(b *testing.B) {
		r := NewRouter(h, "arg1", fb)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if got, err := r.Route(call); err != nil || got != "IBM" {
					b.Errorf("routed %q, %v", got, err)
					return
				}
			}
		})
	})
	e, err := route.NewExpr(`args[0]`)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("expr/args[0]", func(b *testing.B) { run(b, e, "IBM") })
	b.Run("builtin/first", func(b *testing.B) { run(b, dispatch.RouterFunc(route.FirstArg), "IBM") })
}

// TestDecisionReusesTheView checks that a common round (a slot freed, a
// call for it) builds no tables and boxes no numbers: the servant and call
// tables are updated in place, so lua.match allocates nothing per round.
func TestDecisionReusesTheView(t *testing.T) {
	h, err := NewHost(Config{Files: []string{shippedScript("match.lua")}, Budget: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a := NewAlgorithm(h, "lua.match", failFallback(t, "lua.match"))
	calls, servants := decisionFixture(8)
	var p dispatch.Plan
	round := func() {
		servants[0].InFlight = 0
		p.Reset(calls, servants, t0)
		a.Assign(calls, servants, &p)
		if len(p.Assignments()) != 1 {
			t.Fatalf("assigned %v", p.Assignments())
		}
	}
	round() // the first round builds the tables
	if n := testing.AllocsPerRun(200, round); n >= 1 {
		t.Errorf("a round allocates %.1f times; the view should be reused", n)
	}
}
