package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/mserve/mserve/sdk/dispatch"
)

func servants(n, slots int) []*dispatch.Servant {
	out := make([]*dispatch.Servant, n)
	for i := range out {
		out[i] = &dispatch.Servant{Name: fmt.Sprintf("s%d", i+1), Slots: slots, Healthy: true}
	}
	return out
}

// assign runs one round for calls with the given routing strings and
// returns the servant chosen for each ("" when none).
func assign(b *BoundedHash, ss []*dispatch.Servant, routes ...string) []string {
	calls := make([]*dispatch.Call, len(routes))
	for i, r := range routes {
		calls[i] = &dispatch.Call{Method: "f", Route: r}
	}
	var p dispatch.Plan
	p.Reset(calls, ss, p.Now)
	p.MaxBacklog = b.BacklogLimit()
	b.Assign(calls, ss, &p)
	out := make([]string, len(routes))
	for _, a := range p.Assignments() {
		out[a.Call] = ss[a.Servant].Name
	}
	return out
}

// owner is the servant a routing string hashes to on an idle ring: the
// first servant clockwise from its point, computed here from the
// definition (Replicas points per servant at hash(name#r)).
func owner(names []string, route string) string {
	ring := rings[fmt.Sprint(names)]
	if ring == nil {
		ring = makeRing(names)
		rings[fmt.Sprint(names)] = ring
	}
	h := hash(route)
	for _, p := range ring {
		if p.h >= h {
			return p.name
		}
	}
	return ring[0].name
}

type pt struct {
	h    uint64
	name string
}

var rings = map[string][]pt{}

func makeRing(names []string) []pt {
	var ring []pt
	for _, n := range names {
		for r := range Replicas {
			ring = append(ring, pt{hash(n + "#" + strconv.Itoa(r)), n})
		}
	}
	slices.SortFunc(ring, func(a, b pt) int {
		if a.h < b.h {
			return -1
		}
		if a.h > b.h {
			return 1
		}
		return 0
	})
	return ring
}

// clockwise returns the distinct servants met walking clockwise from
// route's point.
func clockwise(names []string, route string) []string {
	b := New(0.25, 0)
	ss := make([]*dispatch.Servant, len(names))
	for i, n := range names {
		ss[i] = &dispatch.Servant{Name: n}
	}
	b.rebuild(ss)
	h := hash(route)
	start, _ := slices.BinarySearchFunc(b.points, h, func(p point, t uint64) int {
		switch {
		case p.hash < t:
			return -1
		case p.hash > t:
			return 1
		}
		return 0
	})
	var out []string
	for k := range b.points {
		n := names[b.points[(start+k)%len(b.points)].servant]
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func TestSameRouteKeepsItsServantUnderTheBound(t *testing.T) {
	b := New(0.25, 8)
	ss := servants(5, 4)
	names := []string{"s1", "s2", "s3", "s4", "s5"}
	for _, route := range []string{"IBM", "MSFT", "AAPL", "KX"} {
		want := owner(names, route)
		for i := range 20 {
			// Other servants carry load, so the bound stays above the
			// owner's load with this call.
			for _, s := range ss {
				s.InFlight, s.Backlog = 1, 0
			}
			if got := assign(b, ss, route); got[0] != want {
				t.Fatalf("%s, round %d: went to %s, want its servant %s", route, i, got[0], want)
			}
		}
	}
}

// TestNoServantExceedsTheBound: over random loads and bursts, no servant
// given a call goes above ⌈(1+ε)·average⌉ of the load after the round.
func TestNoServantExceedsTheBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, eps := range []float64{0, 0.25, 1} {
		b := New(eps, 8)
		for round := range 1000 {
			n := 1 + rng.IntN(8)
			ss := make([]*dispatch.Servant, n)
			for i := range ss {
				slots := 1 + rng.IntN(8)
				ss[i] = &dispatch.Servant{Name: fmt.Sprintf("s%d", i+1), Slots: slots, InFlight: rng.IntN(slots + 1),
					Backlog: rng.IntN(3), Healthy: rng.IntN(8) != 0}
			}
			routes := make([]string, rng.IntN(40))
			for i := range routes {
				routes[i] = fmt.Sprintf("k%d", rng.IntN(1+rng.IntN(50)))
			}
			got := assign(b, ss, routes...)
			total, avail := 0, 0
			for _, s := range ss {
				if s.Available() {
					total += s.InFlight + s.Backlog
					avail++
				}
			}
			bound := int(math.Ceil((1 + eps) * float64(total) / float64(avail)))
			for _, s := range ss {
				if slices.Contains(got, s.Name) && s.InFlight+s.Backlog > bound {
					t.Fatalf("ε=%v round %d: %s holds %d calls, over the bound ⌈(1+ε)·%d/%d⌉ = %d",
						eps, round, s.Name, s.InFlight+s.Backlog, total, avail, bound)
				}
			}
		}
	}
}

// TestHotKeySpillsClockwise: many calls of one routing string fill its
// servant up to the bound, then the next servants clockwise, instead of
// flooding one.
func TestHotKeySpillsClockwise(t *testing.T) {
	b := New(0.25, 0)
	ss := servants(4, 100)
	routes := make([]string, 40)
	for i := range routes {
		routes[i] = "hot"
	}
	got := assign(b, ss, routes...)
	count := map[string]int{}
	var order []string
	for _, n := range got {
		if n == "" {
			t.Fatal("a call was not assigned")
		}
		if count[n] == 0 {
			order = append(order, n)
		}
		count[n]++
	}
	bound := b.Bound(40, 4) // ⌈1.25·40/4⌉ = 13
	for n, c := range count {
		if c > bound {
			t.Errorf("%s got %d of 40 hot calls, over the bound %d", n, c, bound)
		}
	}
	want := clockwise([]string{"s1", "s2", "s3", "s4"}, "hot")
	if !slices.Equal(order, want) {
		t.Errorf("servants used in order %v, want the ring's clockwise order from hot: %v", order, want)
	}
	if count[want[0]] != bound {
		t.Errorf("hot's own servant %s got %d calls, want the bound %d", want[0], count[want[0]], bound)
	}
	t.Logf("40 hot calls: %v in order %v", count, order)
}

// TestRemovingAServantMovesOnlyItsKeys: with the ring built by name,
// removing a servant moves only the keys it owned, about 1/n of them.
func TestRemovingAServantMovesOnlyItsKeys(t *testing.T) {
	const keys, n = 10000, 10
	place := func(ss []*dispatch.Servant) map[string]string {
		b := New(0.25, 0)
		out := make(map[string]string, keys)
		for k := range keys {
			for _, s := range ss {
				s.InFlight = 0 // an idle ring: pure consistent hashing
			}
			key := "key" + strconv.Itoa(k)
			out[key] = assign(b, ss, key)[0]
		}
		return out
	}
	all := servants(n, 1)
	before := place(all)
	gone := "s4"
	var rest []*dispatch.Servant
	for _, s := range servants(n, 1) {
		if s.Name != gone {
			rest = append(rest, s)
		}
	}
	after := place(rest)
	moved, owned := 0, 0
	for key, was := range before {
		if was == gone {
			owned++
		}
		if after[key] != was {
			moved++
			if was != gone {
				t.Fatalf("%s moved from %s to %s, though %s stayed", key, was, after[key], was)
			}
		}
	}
	if moved != owned {
		t.Errorf("%d keys moved, %d were owned by %s", moved, owned, gone)
	}
	frac := float64(moved) / keys
	t.Logf("removing 1 of %d servants moved %d of %d keys (%.3f; 1/n = %.3f)", n, moved, keys, frac, 1.0/n)
	if frac < 0.5/n || frac > 2.0/n {
		t.Errorf("moved %.3f of the keys, want about 1/%d", frac, n)
	}
	// Every servant owns a fair share on an idle ring.
	share := map[string]int{}
	for _, s := range before {
		share[s]++
	}
	for name, c := range share {
		if f := float64(c) / keys; f < 0.4/n || f > 2.0/n {
			t.Errorf("%s owns %.3f of the keys", name, f)
		}
	}
}

// TestDeterministicAcrossInstances: the ring is built by name, so two
// instances — with the servants in any order — place every key alike.
func TestDeterministicAcrossInstances(t *testing.T) {
	names := []string{"alpha", "beta", "gamma", "delta", "s1@10.0.0.5:7001"}
	place := func(order []string) map[string]string {
		b := New(0.25, 0)
		ss := make([]*dispatch.Servant, len(order))
		for i, n := range order {
			ss[i] = &dispatch.Servant{Name: n, Slots: 1, Healthy: true}
		}
		out := map[string]string{}
		for k := range 2000 {
			for _, s := range ss {
				s.InFlight = 0
			}
			key := fmt.Sprintf("k%d", k)
			out[key] = assign(b, ss, key)[0]
		}
		return out
	}
	a := place(names)
	rev := slices.Clone(names)
	slices.Reverse(rev)
	for _, order := range [][]string{names, rev, {"delta", "alpha", "s1@10.0.0.5:7001", "gamma", "beta"}} {
		b := place(order)
		for k, v := range a {
			if b[k] != v {
				t.Fatalf("order %v: %s went to %s, another instance sent it to %s", order, k, b[k], v)
			}
			if want := owner(names, k); v != want {
				t.Fatalf("%s went to %s, its owner on the ring is %s", k, v, want)
			}
		}
	}
}

func TestBound(t *testing.T) {
	b := New(0.25, 0)
	for _, tc := range []struct{ total, n, want int }{
		{0, 0, 0}, {1, 4, 1}, {4, 4, 2}, {40, 4, 13}, {100, 10, 13}, {8, 1, 10},
	} {
		if got := b.Bound(tc.total, tc.n); got != tc.want {
			t.Errorf("Bound(%d, %d) = %d, want %d", tc.total, tc.n, got, tc.want)
		}
	}
}

// TestKeepsTheContract: over random rounds, never a call to an unavailable
// servant, beyond free slots plus backlog room, or to a servant that does
// not serve its method.
func TestKeepsTheContract(t *testing.T) {
	b := New(0.25, 8)
	rng := rand.New(rand.NewPCG(5, 6))
	assigned := 0
	for round := range 3000 {
		n := 1 + rng.IntN(7)
		ss := make([]*dispatch.Servant, n)
		for i := range ss {
			slots := 1 + rng.IntN(3)
			ss[i] = &dispatch.Servant{Name: fmt.Sprintf("s%d", rng.IntN(20)) + "-" + strconv.Itoa(i), Slots: slots,
				InFlight: rng.IntN(slots + 1), Backlog: rng.IntN(9), Healthy: rng.IntN(6) != 0, Draining: rng.IntN(8) == 0}
			if rng.IntN(4) == 0 {
				ss[i].Functions = map[string]bool{"f": true}
			}
		}
		calls := make([]*dispatch.Call, rng.IntN(20))
		for i := range calls {
			calls[i] = &dispatch.Call{Method: []string{"f", "f", "g"}[rng.IntN(3)], Route: fmt.Sprintf("r%d", rng.IntN(30))}
		}
		before := make([]dispatch.Servant, n)
		for i, s := range ss {
			before[i] = *s
		}
		var p dispatch.Plan
		p.Reset(calls, ss, p.Now)
		p.MaxBacklog = b.BacklogLimit()
		b.Assign(calls, ss, &p)
		if r := p.Rejected(); r != 0 {
			t.Fatalf("round %d: the Plan refused %d assignments", round, r)
		}
		taken := make([]int, n)
		for _, a := range p.Assignments() {
			s, c := before[a.Servant], calls[a.Call]
			if !s.Available() || !s.Serves(c.Method) {
				t.Fatalf("round %d: call %d (%s) to %s: available=%v serves=%v", round, a.Call, c.Method, s.Name, s.Available(), s.Serves(c.Method))
			}
			if taken[a.Servant]++; taken[a.Servant] > s.Free()+p.MaxBacklog-s.Backlog {
				t.Fatalf("round %d: %s over its slots and backlog", round, s.Name)
			}
		}
		assigned += len(p.Assignments())
	}
	if assigned == 0 {
		t.Error("nothing assigned")
	}
}

func TestSettingsFromEnv(t *testing.T) {
	t.Setenv("MSERVE_BOUNDEDHASH_EPSILON", "0.5")
	t.Setenv("MSERVE_BOUNDEDHASH_BACKLOG", "3")
	eps, backlog, err := settingsFromEnv()
	if err != nil || eps != 0.5 || backlog != 3 {
		t.Errorf("settingsFromEnv = %v, %v, %v", eps, backlog, err)
	}
	t.Setenv("MSERVE_BOUNDEDHASH_EPSILON", "-1")
	if _, _, err := settingsFromEnv(); err == nil {
		t.Error("accepted ε = -1")
	}
}

func BenchmarkAssign(b *testing.B) {
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) {
			bh := New(0.25, 8)
			ss := servants(8, n)
			calls := make([]*dispatch.Call, n)
			for i := range calls {
				calls[i] = &dispatch.Call{Method: "f", Route: fmt.Sprintf("k%d", i)}
			}
			var p dispatch.Plan
			for range b.N {
				for _, s := range ss {
					s.InFlight, s.Backlog = 0, 0
				}
				p.Reset(calls, ss, p.Now)
				p.MaxBacklog = bh.BacklogLimit()
				bh.Assign(calls, ss, &p)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/call")
		})
	}
}
