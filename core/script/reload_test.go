package script

// Reload under load: routing calls from many goroutines and dispatch
// rounds from one, while the script is rewritten and reloaded again and
// again. Run with -race.

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// version returns the source of version v (1 or 2) of a script whose
// routing function answers "v1" or "v2" and whose algorithm sends every
// call to servant v. The two differ in size, so that a reload notices the
// change even where file times are coarse.
func version(v int) string {
	src := fmt.Sprintf(`-- version %d
mserve.route("r", function(call)
  local args = call.args -- decode the params: more work while a reload happens
  return "v%d"
end)
mserve.algorithm("a", function(calls, servants, plan)
  for i = 1, #calls do
    if plan.can_take(%d, i) then plan.assign(i, %d) end
  end
end)
`, v, v, v, v)
	if v == 2 {
		src += "-- the second version is longer\n"
	}
	return src
}

func TestReloadUnderLoad(t *testing.T) {
	const reloads = 40
	p := writeScript(t, t.TempDir(), "v.lua", version(1))
	h := newHost(t, Config{Files: []string{p}, Budget: 2 * time.Second})
	fb := &fixedRouter{route: "fallback"}
	router := NewRouter(h, "r", fb)
	var algoFallbacks atomic.Int64
	alg := NewAlgorithm(h, "a", dispatch.AlgorithmFunc(func([]*dispatch.Call, []*dispatch.Servant, *dispatch.Plan) {
		algoFallbacks.Add(1)
	}))

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		routed   [3]atomic.Int64 // routing results seen, by version
		decided  [3]atomic.Int64 // rounds decided, by version (the servant chosen)
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dispatch.Call{Method: "f", Params: []byte(fmt.Sprintf(`["IBM",%d,{"a":[1,2,3]}]`, g))}
			for !stop.Load() {
				got, err := router.Route(c)
				switch {
				case err != nil:
					fail("Route: %v", err)
				case got == "v1":
					routed[1].Add(1)
				case got == "v2":
					routed[2].Add(1)
				default:
					fail("Route returned %q", got)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		now := t0
		for !stop.Load() {
			now = now.Add(time.Millisecond)
			calls := queue("a", "b")
			o := round(alg, calls, views(now, srv{slots: 2}, srv{slots: 2}), now)
			if len(o.assigned) != 2 || o.assigned[0].Servant != o.assigned[1].Servant {
				fail("round assigned %v: want both calls to the servant of one version", o.assigned)
				continue
			}
			decided[o.assigned[0].Servant+1].Add(1)
		}
	}()

	// Rewrite and reload, alternating the versions; after each reload,
	// wait (bounded) until the routers and the algorithm have used the
	// new version, so that every reload is exercised under load.
	deadline := time.Now().Add(30 * time.Second)
	for i := range reloads {
		v := 2 - i%2 // 2, 1, 2, 1, …
		r0, d0 := routed[v].Load(), decided[v].Load()
		rewrite(t, p, version(v))
		h.Reload([]string{p})
		for routed[v].Load() < r0+50 || decided[v].Load() < d0+5 {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("reload %d: version %d not observed (routed %d, decided %d)", i, v, routed[v].Load()-r0, decided[v].Load()-d0)
			}
			runtime.Gosched()
		}
	}
	stop.Store(true)
	wg.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("routed v1 %d, v2 %d; rounds v1 %d, v2 %d; reloads %d", routed[1].Load(), routed[2].Load(), decided[1].Load(), decided[2].Load(), h.Reloads())
	if h.Reloads() != reloads {
		t.Errorf("Reloads() = %d, want %d", h.Reloads(), reloads)
	}
	if n := fb.n.Load(); n != 0 {
		t.Errorf("the routing fallback was used %d times", n)
	}
	if n := algoFallbacks.Load(); n != 0 {
		t.Errorf("the algorithm fallback decided %d rounds", n)
	}
	for _, name := range []string{"r", "a"} {
		if c := h.Counters(name); c.Errors.Load() != 0 || c.Fallbacks.Load() != 0 {
			t.Errorf("%s: %d errors, %d fallbacks", name, c.Errors.Load(), c.Fallbacks.Load())
		}
	}
}
