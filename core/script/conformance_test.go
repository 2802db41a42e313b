package script

// Conformance of the Lua reference algorithms (scripts/orig.lua, even.lua,
// match.lua) with the built-in ones they copy, scenario by scenario and over
// a long recorded sequence of rounds; and the rules every dispatch
// algorithm must follow, as a suite any implementation can run.

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/dispatch"
)

// refPairs are the built-in algorithms and the Lua scripts that copy them.
var refPairs = []struct{ builtin, lua string }{
	{"orig", "lua.orig"},
	{"even", "lua.even"},
	{"match", "lua.match"},
}

// refHost loads the Lua reference algorithms with route expiry expire.
func refHost(t testing.TB, expire time.Duration) *Host {
	t.Helper()
	return newHost(t, Config{
		Files:       []string{shippedScript("orig.lua"), shippedScript("even.lua"), shippedScript("match.lua")},
		Budget:      time.Second, // generous: these tests are about decisions, not budgets (-race is slow)
		RouteExpire: expire,
	})
}

// builtin makes a fresh instance of a built-in algorithm.
func builtin(t testing.TB, name string, expire time.Duration) dispatch.Algorithm {
	t.Helper()
	a, err := algo.New(algo.Builtins(), name, algo.Config{RouteExpire: expire})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// conformanceScenarios are one-round situations for the reference pairs.
// Each runs on fresh instances at t0 with a route expiry of 12s.
var conformanceScenarios = []struct {
	name     string
	servants []srv
	calls    []string
}{
	{"idle never used", []srv{{}, {}, {}}, []string{"a", "b", "c"}},
	{"more calls than servants", []srv{{}, {}}, []string{"a", "b", "c", "d"}},
	{"same route twice", []srv{{}, {}, {}}, []string{"a", "a", "b"}},
	{"busy servants skipped", []srv{{busy: 1, used: true, route: "x"}, {}, {busy: 1, used: true, route: "y"}, {}}, []string{"a", "b", "c"}},
	{"down and draining skipped", []srv{{down: true}, {draining: true}, {}, {}}, []string{"a", "b", "c"}},
	{"down servant holds no route", []srv{{down: true, used: true, route: "x", idle: time.Second}, {used: true, route: "y", idle: time.Second}, {}}, []string{"x", "y"}},
	{"draining servant holds no route", []srv{{draining: true, used: true, route: "x", idle: time.Second}, {}}, []string{"x"}},
	{"ejected servant skipped and holds no route", []srv{{ejected: true, used: true, route: "x", idle: time.Second}, {}}, []string{"x", "y"}},
	{"nobody free", []srv{{busy: 1}, {down: true}, {draining: true}, {ejected: true}}, []string{"a", "b"}},
	{"no servants", nil, []string{"a"}},
	{"empty queue", []srv{{}, {}}, nil},
	{"matching route to its free servant", []srv{{used: true, route: "x", idle: time.Second}, {used: true, route: "y", idle: time.Second}}, []string{"y", "x"}},
	{"matching route beats an older new route", []srv{{}, {used: true, route: "y", idle: time.Second}}, []string{"new", "y"}},
	{"route held by a busy servant waits", []srv{{busy: 1, used: true, route: "x"}, {}}, []string{"x", "z", "x"}},
	{"new route to a never-used servant", []srv{{used: true, route: "x", idle: time.Second}, {}}, []string{"z"}},
	{"new route to a servant idle past expiry", []srv{{used: true, route: "x", idle: time.Second}, {used: true, route: "y", idle: 13 * time.Second}}, []string{"z"}},
	{"idle within expiry: wait and wake", []srv{{used: true, route: "x", idle: 2 * time.Second}, {used: true, route: "y", idle: 5 * time.Second}}, []string{"z", "w"}},
	{"idle within expiry, matching call goes, new one waits", []srv{{used: true, route: "x", idle: 2 * time.Second}, {used: true, route: "y", idle: 5 * time.Second}}, []string{"z", "y"}},
	{"busy servant past expiry keeps its claim", []srv{{busy: 1, slots: 2, used: true, route: "x", idle: time.Minute}}, []string{"z", "x"}},
	{"multi-slot servant fills with its route", []srv{{slots: 3, busy: 1, used: true, route: "x"}, {}}, []string{"x", "x", "x", "y"}},
	{"multi-slot idle servants", []srv{{slots: 2}, {slots: 2}}, []string{"a", "b", "c", "d", "e"}},
	{"multi-slot, one held route", []srv{{slots: 2, busy: 1, used: true, route: "x"}, {slots: 2}}, []string{"y", "x", "y", "z"}},
	{"servant serving some functions", []srv{{serves: []string{"g"}}, {serves: []string{"f"}}, {}}, []string{"f:a", "g:b", "h:c"}},
	{"function nobody serves is passed over", []srv{{serves: []string{"f"}}, {serves: []string{"f"}}}, []string{"h:a", "f:b", "h:c", "f:d"}},
	{"matching route on a servant that does not serve the function", []srv{{serves: []string{"f"}, used: true, route: "x", idle: time.Second}, {}}, []string{"g:x", "f:x"}},
	{"held route of a servant not serving the call", []srv{{serves: []string{"g"}, used: true, route: "x", idle: 20 * time.Second}, {used: true, route: "y", idle: 20 * time.Second}}, []string{"f:x", "f:z"}},
	{"empty routing strings", []srv{{used: true, route: "", idle: time.Second}, {}}, []string{"", "", "a"}},
	{"everything at once", []srv{
		{slots: 2, busy: 1, used: true, route: "IBM"},
		{down: true, used: true, route: "MSFT"},
		{used: true, route: "AAPL", idle: 3 * time.Second},
		{used: true, route: "GOOG", idle: 30 * time.Second, serves: []string{"g"}},
		{draining: true},
		{},
		{busy: 1, used: true, route: "ORCL"},
	}, []string{"ORCL", "IBM", "MSFT", "g:NEW", "AAPL", "NEW2", "IBM", "g:GOOG", "h:x"}},
}

// TestReferenceScriptsMatchBuiltins runs every scenario through each
// built-in algorithm and its Lua copy and expects the same assignments, in
// the same order, and the same wake-up time.
func TestReferenceScriptsMatchBuiltins(t *testing.T) {
	expire := 12 * time.Second
	h := refHost(t, expire)
	for _, pair := range refPairs {
		for _, sc := range conformanceScenarios {
			t.Run(pair.builtin+"/"+sc.name, func(t *testing.T) {
				calls := queue(sc.calls...)
				base := views(t0, sc.servants...)
				vb, vl := cloneViews(base), cloneViews(base)
				want := round(builtin(t, pair.builtin, expire), calls, vb, t0)
				lua := NewAlgorithm(h, pair.lua, failFallback(t, pair.lua))
				got := round(lua, calls, vl, t0)
				if !slices.Equal(got.assigned, want.assigned) {
					t.Errorf("%s assigned %s, %s assigned %s", pair.lua, describe(got.assigned, calls), pair.builtin, describe(want.assigned, calls))
				}
				if !sameWake(got.wake, want.wake) {
					t.Errorf("%s asks to wake at %v, %s at %v", pair.lua, got.wake, pair.builtin, want.wake)
				}
				if got.rejected != 0 || want.rejected != 0 {
					t.Errorf("refused assignments: %s %d, %s %d", pair.lua, got.rejected, pair.builtin, want.rejected)
				}
			})
		}
	}
	for _, pair := range refPairs {
		if c := h.Counters(pair.lua); c.Errors.Load() != 0 || c.Fallbacks.Load() != 0 {
			t.Errorf("%s: %d errors, %d fallbacks", pair.lua, c.Errors.Load(), c.Fallbacks.Load())
		}
	}
}

// TestReferenceScriptsWakeTimes checks the wake-up times where match waits
// for a claim to expire, for several expiries.
func TestReferenceScriptsWakeTimes(t *testing.T) {
	for _, expire := range []time.Duration{12 * time.Second, time.Second, 50 * time.Millisecond} {
		t.Run(expire.String(), func(t *testing.T) {
			h := refHost(t, expire)
			servants := []srv{
				{used: true, route: "x", idle: expire / 2},
				{used: true, route: "y", idle: expire / 4},
				{used: true, route: "z", idle: expire / 3, busy: 1, slots: 2}, // busy: no expiry
			}
			calls := queue("new")
			want := round(builtin(t, "match", expire), calls, views(t0, servants...), t0)
			got := round(NewAlgorithm(h, "lua.match", failFallback(t, "lua.match")), calls, views(t0, servants...), t0)
			if len(want.assigned) != 0 || len(got.assigned) != 0 {
				t.Fatalf("assigned: match %v, lua.match %v; want none", want.assigned, got.assigned)
			}
			if w := t0.Add(expire / 2); !want.wake.Equal(w) {
				t.Errorf("match wakes at %v, want %v", want.wake, w)
			}
			if !sameWake(got.wake, want.wake) {
				t.Errorf("lua.match wakes at %v, match at %v (off by %v)", got.wake, want.wake, got.wake.Sub(want.wake))
			}
		})
	}
}

// TestReferenceScriptsAtExpiryBoundary puts a servant's claim expiry
// exactly on the round's time. The built-in compares times in nanoseconds
// (now.After(expires) is false at equality); the script compares float
// seconds, and route expiries that are not a whole number of seconds are
// not exact in floating point.
func TestReferenceScriptsAtExpiryBoundary(t *testing.T) {
	for _, expire := range []time.Duration{12 * time.Second, time.Second, 50 * time.Millisecond, 300 * time.Millisecond, 100 * time.Millisecond} {
		t.Run(expire.String(), func(t *testing.T) {
			h := refHost(t, expire)
			// Several instants, so that the float rounding of each is tried.
			for i := range 20 {
				now := t0.Add(time.Duration(i) * 7 * time.Millisecond)
				servants := []srv{{used: true, route: "x", idle: expire}}
				calls := queue("new")
				want := round(builtin(t, "match", expire), calls, views(now, servants...), now)
				got := round(NewAlgorithm(h, "lua.match", failFallback(t, "lua.match")), calls, views(now, servants...), now)
				if !slices.Equal(got.assigned, want.assigned) || !sameWake(got.wake, want.wake) {
					t.Errorf("claim expiring exactly at %v (expire %v): match assigned %v wake %v; lua.match assigned %v wake %v",
						now.Format(time.RFC3339Nano), expire, want.assigned, want.wake, got.assigned, got.wake)
				}
			}
		})
	}
}

// TestReferenceScriptsRecordedSequence drives each built-in algorithm and
// its Lua copy through the same long, seeded sequence of rounds: calls
// arriving with routing strings from a small set and for two functions,
// completions freeing slots, servants going down, coming back and
// draining, and a fake clock advancing so that route expiry matters. Each
// implementation has its own servant views; completions and failures are
// applied to both alike. Every round's decisions must be the same.
func TestReferenceScriptsRecordedSequence(t *testing.T) {
	const rounds = 2000
	expire := time.Second
	h := refHost(t, expire)
	for _, ejections := range []bool{false, true} {
		for _, pair := range refPairs {
			name := pair.builtin
			if ejections {
				// The engine ejects failing or slow servants for a while
				// (Servant.Ejected): healthy, not draining, not available.
				name += "/with ejections"
			}
			t.Run(name, func(t *testing.T) {
				s := newSim(1, expire)
				s.ejections = ejections
				ref := builtin(t, pair.builtin, expire)
				lua := NewAlgorithm(h, pair.lua, failFallback(t, pair.lua))
				for r := range rounds {
					s.step()
					want := round(ref, s.waiting, s.a, s.now)
					got := round(lua, s.waiting, s.b, s.now)
					if !slices.Equal(got.assigned, want.assigned) || !sameWake(got.wake, want.wake) {
						t.Fatalf("round %d at %v: %s assigned %s wake %v; %s assigned %s wake %v\nservants before the round:\n%s",
							r, s.now.Sub(t0), pair.builtin, describe(want.assigned, s.waiting), want.wake.Sub(t0),
							pair.lua, describe(got.assigned, s.waiting), got.wake.Sub(t0), s.before)
					}
					if err := sameViews(s.a, s.b); err != nil {
						t.Fatalf("round %d: views differ after the round: %v", r, err)
					}
					s.apply(want)
				}
				t.Logf("%s: %d rounds, %d calls assigned, %d wake-ups, %d servant failures, %d ejections, queue up to %d, empty in %d rounds, %d left waiting",
					name, rounds, s.sent, s.wakes, s.failures, s.ejected, s.maxWaiting, s.emptyRounds, len(s.waiting))
				if s.sent < rounds/2 || (pair.builtin == "match" && s.wakes == 0) {
					t.Errorf("the sequence did not exercise the algorithm: %d sent, %d wake-ups", s.sent, s.wakes)
				}
				if c := h.Counters(pair.lua); c.Errors.Load() != 0 {
					t.Errorf("%s: %d script errors", pair.lua, c.Errors.Load())
				}
			})
		}
	}
}

// sim is a deterministic little world for recorded sequences: a queue of
// waiting calls, calls running on servants, and two copies of the servant
// views (a for the built-in, b for the script).
type sim struct {
	rng     *rand.Rand
	now     time.Time
	expire  time.Duration
	waiting []*dispatch.Call
	running []simRun
	a, b    []*dispatch.Servant
	wake    time.Time
	before  string // the servants as the last round saw them, for messages
	seq     int

	ejections bool // eject servants now and then

	sent, wakes, failures, ejected int
	maxWaiting, emptyRounds        int
}

type simRun struct {
	servant int
	done    time.Time
}

var simRoutes = []string{"IBM", "MSFT", "AAPL", "GOOG", "ORCL", "KX", ""}

func newSim(seed int64, expire time.Duration) *sim {
	base := views(t0,
		srv{},
		srv{slots: 2},
		srv{},
		srv{serves: []string{"f"}},
		srv{serves: []string{"g", "f"}, slots: 2},
	)
	return &sim{rng: rand.New(rand.NewSource(seed)), now: t0, expire: expire, a: base, b: cloneViews(base)}
}

// each applies fn to servant i in both copies of the views.
func (s *sim) each(i int, fn func(v *dispatch.Servant)) {
	fn(s.a[i])
	fn(s.b[i])
}

// step advances the world to the next round: time passes, calls finish,
// servants fail, come back or drain, and calls arrive.
func (s *sim) step() {
	r := s.rng
	// Time: to the requested wake-up (just past it, as the engine's timer
	// would), or a random step of whole milliseconds.
	if !s.wake.IsZero() && s.wake.After(s.now) && r.Intn(3) == 0 {
		s.now = s.wake.Add(time.Duration(r.Intn(3)) * time.Millisecond)
	} else {
		s.now = s.now.Add(time.Duration(r.Intn(400)) * time.Millisecond)
	}
	s.wake = time.Time{}
	// Completions, in order of their end.
	slices.SortStableFunc(s.running, func(x, y simRun) int { return x.done.Compare(y.done) })
	kept := s.running[:0]
	for _, run := range s.running {
		if run.done.After(s.now) {
			kept = append(kept, run)
			continue
		}
		s.each(run.servant, func(v *dispatch.Servant) {
			v.InFlight--
			v.LastUsed = run.done
			v.Served++
		})
	}
	s.running = kept
	// Servant events: now and then one fails (its running calls are lost
	// and it releases its routing string); a failed one comes back soon.
	for i := range s.a {
		if !s.a[i].Healthy && r.Intn(15) == 0 {
			s.each(i, func(v *dispatch.Servant) { v.Healthy, v.Used, v.LastRoute, v.LastUsed = true, false, "", time.Time{} })
		}
	}
	if r.Intn(60) == 0 {
		i := r.Intn(len(s.a))
		if s.a[i].Healthy {
			s.failures++
			s.each(i, func(v *dispatch.Servant) { v.Healthy, v.Used, v.LastRoute, v.InFlight = false, false, "", 0 })
			kept := s.running[:0]
			for _, run := range s.running {
				if run.servant != i {
					kept = append(kept, run)
				}
			}
			s.running = kept
		}
	}
	if r.Intn(80) == 0 {
		i := r.Intn(len(s.a))
		s.each(i, func(v *dispatch.Servant) { v.Draining = !v.Draining })
	}
	if s.ejections {
		// Ejection keeps a servant's calls running and its routing string;
		// it ends after a while.
		for i := range s.a {
			if s.a[i].Ejected && r.Intn(8) == 0 {
				s.each(i, func(v *dispatch.Servant) { v.Ejected = false })
			}
		}
		if r.Intn(30) == 0 {
			i := r.Intn(len(s.a))
			if s.a[i].Healthy && !s.a[i].Ejected {
				s.ejected++
				s.each(i, func(v *dispatch.Servant) { v.Ejected = true })
			}
		}
	}
	// Arrivals.
	for range r.Intn(3) {
		if len(s.waiting) >= 40 {
			break
		}
		method := "f"
		if r.Intn(5) == 0 {
			method = "g"
		}
		route := simRoutes[r.Intn(len(simRoutes))]
		s.seq++
		s.waiting = append(s.waiting, &dispatch.Call{
			Method: method, Route: route, Params: []byte(fmt.Sprintf("[%q,%d]", route, s.seq)), Arrived: s.now,
		})
	}
	s.maxWaiting = max(s.maxWaiting, len(s.waiting))
	if len(s.waiting) == 0 {
		s.emptyRounds++
	}
	s.before = dumpViews(s.a)
}

// apply carries out a round's decisions: the assigned calls leave the
// queue and run for a while.
func (s *sim) apply(o outcome) {
	if !o.wake.IsZero() {
		s.wake = o.wake
		s.wakes++
	}
	assigned := make([]bool, len(s.waiting))
	for _, a := range o.assigned {
		assigned[a.Call] = true
		s.running = append(s.running, simRun{servant: a.Servant, done: s.now.Add(time.Duration(20+s.rng.Intn(900)) * time.Millisecond)})
		s.sent++
	}
	kept := s.waiting[:0]
	for i, c := range s.waiting {
		if !assigned[i] {
			kept = append(kept, c)
		}
	}
	clear(s.waiting[len(kept):])
	s.waiting = kept
}

func dumpViews(vs []*dispatch.Servant) string {
	out := ""
	for _, v := range vs {
		out += fmt.Sprintf("  %s slots=%d in_flight=%d used=%v last_route=%q last_used=%v healthy=%v draining=%v ejected=%v functions=%v\n",
			v.Name, v.Slots, v.InFlight, v.Used, v.LastRoute, v.LastUsed.Sub(t0), v.Healthy, v.Draining, v.Ejected, v.Functions)
	}
	return out
}

// sameViews compares what the Plan changes in two copies of the views.
func sameViews(a, b []*dispatch.Servant) error {
	for i := range a {
		x, y := a[i], b[i]
		if x.InFlight != y.InFlight || x.Backlog != y.Backlog || x.Used != y.Used || x.LastRoute != y.LastRoute {
			return fmt.Errorf("%s: %+v vs %+v", x.Name, *x, *y)
		}
	}
	return nil
}

// Conformance checks the rules every dispatch algorithm must follow,
// whether built in, written in Lua or compiled as a plugin: it never
// assigns a call to a servant that is down or draining, never more calls to
// a servant than it has free slots (or backlog room, for BacklogUsers),
// never a call to a servant that does not serve its function, never the
// same call twice, never makes Plan refuse an assignment, changes the
// servant views only through Plan, and assigns nothing when no servant is
// free. newAlgo makes a fresh instance; the suite runs it over seeded
// random rounds (one instance across many rounds, as the engine does) and
// over edge cases.
func Conformance(t *testing.T, newAlgo func(t *testing.T) dispatch.Algorithm) {
	t.Run("random rounds", func(t *testing.T) {
		a := newAlgo(t)
		maxBacklog := 0
		if b, ok := a.(dispatch.BacklogUser); ok {
			maxBacklog = b.BacklogLimit()
		}
		rng := rand.New(rand.NewSource(7))
		now := t0
		total := 0
		for r := range 400 {
			now = now.Add(time.Duration(rng.Intn(3000)) * time.Millisecond)
			servants := randomServants(rng, now, 1+rng.Intn(8))
			calls := randomCalls(rng, rng.Intn(14))
			before := cloneViews(servants)
			var p dispatch.Plan
			p.Reset(calls, servants, now)
			p.MaxBacklog = maxBacklog
			a.Assign(calls, servants, &p)
			total += len(p.Assignments())
			if err := checkRound(calls, before, servants, &p); err != nil {
				t.Fatalf("round %d: %v\ncalls: %s\nservants before:\n%s", r, err, routesOf(calls), dumpViews(before))
			}
		}
		if total == 0 {
			t.Errorf("no call was assigned in 400 random rounds")
		}
	})
	t.Run("nobody free", func(t *testing.T) {
		a := newAlgo(t)
		for _, servants := range [][]srv{
			{{busy: 1}, {busy: 2, slots: 2}},
			{{down: true}, {draining: true}, {ejected: true}},
			{{busy: 1, used: true, route: "a"}, {down: true, used: true, route: "b"}, {draining: true, used: true, route: "c", idle: time.Hour}},
			nil,
		} {
			calls := queue("a", "b", "c", "g:d")
			vs := views(t0, servants...)
			before := cloneViews(vs)
			var p dispatch.Plan
			p.Reset(calls, vs, t0)
			a.Assign(calls, vs, &p)
			if len(p.Assignments()) != 0 {
				t.Errorf("servants %+v: assigned %s with no servant free", servants, describe(p.Assignments(), calls))
			}
			if err := checkRound(calls, before, vs, &p); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("empty queue", func(t *testing.T) {
		a := newAlgo(t)
		vs := views(t0, srv{}, srv{})
		var p dispatch.Plan
		p.Reset(nil, vs, t0)
		a.Assign(nil, vs, &p)
		if len(p.Assignments()) != 0 || p.Rejected() != 0 {
			t.Errorf("assigned %v, %d refused, with no call waiting", p.Assignments(), p.Rejected())
		}
	})
	t.Run("function nobody serves", func(t *testing.T) {
		a := newAlgo(t)
		vs := views(t0, srv{serves: []string{"f"}, tags: []string{"rdb", "hdb"}}, srv{serves: []string{"f"}, tags: []string{"canary"}})
		calls := queue("h:a", "h:b")
		before := cloneViews(vs)
		var p dispatch.Plan
		p.Reset(calls, vs, t0)
		a.Assign(calls, vs, &p)
		if err := checkRound(calls, before, vs, &p); err != nil {
			t.Error(err)
		}
		if len(p.Assignments()) != 0 {
			t.Errorf("assigned %s: no servant serves h", describe(p.Assignments(), calls))
		}
	})
}

// checkRound checks one round's plan against the servants as they were
// before it and as they are after.
func checkRound(calls []*dispatch.Call, before, after []*dispatch.Servant, p *dispatch.Plan) error {
	if r := p.Rejected(); r != 0 {
		return fmt.Errorf("the algorithm made Plan refuse %d assignments", r)
	}
	taken := make([]int, len(before))
	backlogged := make([]int, len(before))
	lastRoute := make([]*string, len(before))
	seen := map[int]bool{}
	for _, a := range p.Assignments() {
		if a.Call < 0 || a.Call >= len(calls) || a.Servant < 0 || a.Servant >= len(before) {
			return fmt.Errorf("assignment %+v out of range", a)
		}
		if seen[a.Call] {
			return fmt.Errorf("call %d assigned twice", a.Call+1)
		}
		seen[a.Call] = true
		s, c := before[a.Servant], calls[a.Call]
		switch {
		case !s.Healthy:
			return fmt.Errorf("call %d assigned to %s, which is down", a.Call+1, s.Name)
		case s.Draining:
			return fmt.Errorf("call %d assigned to %s, which is draining", a.Call+1, s.Name)
		case s.Ejected:
			return fmt.Errorf("call %d assigned to %s, which is ejected", a.Call+1, s.Name)
		case !s.Serves(c.Method):
			return fmt.Errorf("call %d (%s) assigned to %s, which does not serve it", a.Call+1, c.Method, s.Name)
		}
		if a.Backlog {
			backlogged[a.Servant]++
			if s.Backlog+backlogged[a.Servant] > p.MaxBacklog {
				return fmt.Errorf("%s given %d backlog calls with %d of %d backlog places used", s.Name, backlogged[a.Servant], s.Backlog, p.MaxBacklog)
			}
		} else {
			taken[a.Servant]++
			if taken[a.Servant] > s.Free() {
				return fmt.Errorf("%s given %d calls with %d free slots", s.Name, taken[a.Servant], s.Free())
			}
		}
		route := c.Route
		lastRoute[a.Servant] = &route
	}
	for i, b := range before {
		x := after[i]
		want := *b
		want.InFlight += taken[i]
		want.Backlog += backlogged[i]
		if lastRoute[i] != nil {
			want.Used, want.LastRoute = true, *lastRoute[i]
		}
		if x.Name != want.Name || x.Addr != want.Addr || x.Host != want.Host || !slices.Equal(x.Tags, want.Tags) ||
			x.Slots != want.Slots || x.InFlight != want.InFlight || x.Backlog != want.Backlog || x.Used != want.Used ||
			x.LastRoute != want.LastRoute || !x.LastUsed.Equal(want.LastUsed) || x.Healthy != want.Healthy ||
			x.Draining != want.Draining || x.Ejected != want.Ejected || x.Latency != want.Latency || x.Served != want.Served || len(x.Functions) != len(want.Functions) {
			return fmt.Errorf("servant %s changed other than through Plan:\n got  %+v\n want %+v", b.Name, *x, want)
		}
	}
	return nil
}

func routesOf(calls []*dispatch.Call) string {
	out := ""
	for i, c := range calls {
		out += fmt.Sprintf("#%d %s(%s) ", i+1, c.Method, c.Route)
	}
	return out
}

// randomServants makes n servants in random states as of now.
func randomServants(rng *rand.Rand, now time.Time, n int) []*dispatch.Servant {
	ss := make([]srv, n)
	tags := [][]string{nil, {"rdb"}, {"hdb"}, {"canary"}, {"gpu", "rdb"}}
	for i := range ss {
		s := srv{slots: 1 + rng.Intn(3)}
		s.busy = rng.Intn(s.slots + 1)
		s.down = rng.Intn(6) == 0
		s.draining = rng.Intn(8) == 0
		s.ejected = rng.Intn(10) == 0
		if rng.Intn(3) > 0 {
			s.used = true
			s.route = simRoutes[rng.Intn(len(simRoutes))]
			s.idle = time.Duration(rng.Intn(30)) * time.Second
		}
		if rng.Intn(4) == 0 {
			s.serves = []string{"f"}
		}
		s.tags = tags[rng.Intn(len(tags))]
		ss[i] = s
	}
	return views(now, ss...)
}

// randomCalls makes n waiting calls to f, g or h with random routing
// strings; some carry a date argument (for tiered).
func randomCalls(rng *rand.Rand, n int) []*dispatch.Call {
	out := make([]*dispatch.Call, n)
	for i := range out {
		method := []string{"f", "f", "f", "g", "h"}[rng.Intn(5)]
		route := simRoutes[rng.Intn(len(simRoutes))]
		date := time.Now().UTC().AddDate(0, 0, -rng.Intn(6)).Format(time.DateOnly)
		out[i] = &dispatch.Call{Method: method, Route: route, Params: []byte(fmt.Sprintf("[%q,%q]", route, date)), Arrived: t0}
	}
	return out
}

// TestConformance runs the conformance suite over the built-in algorithms,
// the shipped Lua scripts, and a failing script (whose fallback decides).
func TestConformance(t *testing.T) {
	expire := 12 * time.Second
	for _, name := range []string{"orig", "even", "match", "least"} {
		t.Run("builtin/"+name, func(t *testing.T) {
			Conformance(t, func(t *testing.T) dispatch.Algorithm { return builtin(t, name, expire) })
		})
	}
	log, logs := testkit.Observed(zapcore.WarnLevel)
	h := newHost(t, Config{
		Files: []string{shippedScript("orig.lua"), shippedScript("even.lua"), shippedScript("match.lua"),
			shippedScript("tiered.lua"), shippedScript("canary.lua")},
		Budget: time.Second, RouteExpire: expire, Log: log,
	})
	for _, name := range []string{"lua.orig", "lua.even", "lua.match", "tiered", "canary"} {
		t.Run("lua/"+name, func(t *testing.T) {
			Conformance(t, func(t *testing.T) dispatch.Algorithm { return NewAlgorithm(h, name, failFallback(t, name)) })
			for _, e := range failuresLogged(logs, name) {
				t.Errorf("%s failed: %s", name, strings.SplitN(fieldString(e, "error"), "\n", 2)[0])
			}
		})
	}
	t.Run("lua/failing script with least as fallback", func(t *testing.T) {
		dir := t.TempDir()
		hf := newHost(t, Config{Files: []string{writeScript(t, dir, "bad.lua",
			`mserve.algorithm("bad", function(calls, servants, plan) error("boom") end)`)}})
		Conformance(t, func(t *testing.T) dispatch.Algorithm { return NewAlgorithm(hf, "bad", &algo.Least{}) })
	})
}
