package dispatch

import (
	"fmt"
	"testing"
	"time"
)

// avail returns an available servant with the given slots.
func avail(name string, slots int) *Servant {
	return &Servant{Name: name, Slots: slots, Healthy: true}
}

func calls(methods ...string) []*Call {
	out := make([]*Call, len(methods))
	for i, m := range methods {
		out[i] = &Call{Method: m, Route: "r-" + m}
	}
	return out
}

func TestServantHelpers(t *testing.T) {
	tests := []struct {
		name      string
		s         Servant
		free      int
		available bool
	}{
		{"healthy idle servant has all its slots free and is available", Servant{Slots: 3, Healthy: true}, 3, true},
		{"in-flight calls take slots", Servant{Slots: 3, InFlight: 2, Healthy: true}, 1, true},
		{"over-full servant has negative free slots", Servant{Slots: 1, InFlight: 2, Healthy: true}, -1, true},
		{"unhealthy servant is not available", Servant{Slots: 1}, 1, false},
		{"draining servant is not available", Servant{Slots: 1, Healthy: true, Draining: true}, 1, false},
		{"ejected servant is not available", Servant{Slots: 1, Healthy: true, Ejected: true}, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Free(); got != tt.free {
				t.Errorf("Free() = %d, want %d", got, tt.free)
			}
			if got := tt.s.Available(); got != tt.available {
				t.Errorf("Available() = %v, want %v", got, tt.available)
			}
		})
	}
}

func TestServantServesAndHasTag(t *testing.T) {
	tests := []struct {
		name   string
		s      Servant
		method string
		serves bool
		tag    string
		hasTag bool
	}{
		{"nil Functions serves every method", Servant{}, "anything", true, "gpu", false},
		{"listed function is served", Servant{Functions: map[string]bool{"f": true}}, "f", true, "", false},
		{"unlisted function is not served", Servant{Functions: map[string]bool{"f": true}}, "g", false, "", false},
		{"empty non-nil Functions serves nothing", Servant{Functions: map[string]bool{}}, "f", false, "", false},
		{"carried tag is found", Servant{Tags: []string{"hdb", "gpu"}}, "f", true, "gpu", true},
		{"tag match is exact", Servant{Tags: []string{"gpu"}}, "f", true, "GPU", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Serves(tt.method); got != tt.serves {
				t.Errorf("Serves(%q) = %v, want %v", tt.method, got, tt.serves)
			}
			if got := tt.s.HasTag(tt.tag); got != tt.hasTag {
				t.Errorf("HasTag(%q) = %v, want %v", tt.tag, got, tt.hasTag)
			}
		})
	}
}

func TestPlanAssignRefusals(t *testing.T) {
	tests := []struct {
		name       string
		servant    *Servant
		maxBacklog int
		before     func(p *Plan) // assignments made first in the round
		call       int
		servantIdx int
	}{
		{name: "negative call index", servant: avail("s", 1), call: -1},
		{name: "call index past the end", servant: avail("s", 1), call: 2},
		{name: "negative servant index", servant: avail("s", 1), servantIdx: -1},
		{name: "servant index past the end", servant: avail("s", 1), servantIdx: 1},
		{name: "call already assigned in this round", servant: avail("s", 2),
			before: func(p *Plan) { p.Assign(0, 0) }},
		{name: "unhealthy servant", servant: &Servant{Name: "s", Slots: 1}},
		{name: "draining servant", servant: &Servant{Name: "s", Slots: 1, Healthy: true, Draining: true}},
		{name: "ejected servant", servant: &Servant{Name: "s", Slots: 1, Healthy: true, Ejected: true}},
		{name: "servant not serving the method", servant: &Servant{Name: "s", Slots: 1, Healthy: true, Functions: map[string]bool{"other": true}}},
		{name: "no free slot and no backlog allowed", servant: &Servant{Name: "s", Slots: 1, InFlight: 1, Healthy: true}},
		{name: "no free slot and backlog full", servant: &Servant{Name: "s", Slots: 1, InFlight: 1, Backlog: 2, Healthy: true}, maxBacklog: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := calls("f", "g")
			var p Plan
			p.Reset(cs, []*Servant{tt.servant}, time.Unix(100, 0))
			p.MaxBacklog = tt.maxBacklog
			if tt.before != nil {
				tt.before(&p)
			}
			before := *tt.servant
			nAssign := len(p.Assignments())
			if p.Assign(tt.call, tt.servantIdx) {
				t.Fatalf("Assign(%d, %d) = true, want refused", tt.call, tt.servantIdx)
			}
			if p.Rejected() != 1 {
				t.Errorf("Rejected() = %d, want 1", p.Rejected())
			}
			if len(p.Assignments()) != nAssign {
				t.Errorf("a refused Assign added an assignment: %v", p.Assignments())
			}
			after := *tt.servant
			if after.InFlight != before.InFlight || after.Backlog != before.Backlog ||
				after.Used != before.Used || after.LastRoute != before.LastRoute {
				t.Errorf("a refused Assign changed the servant: before %+v, after %+v", before, after)
			}
			if tt.before == nil && p.Assigned(0) {
				t.Error("a refused call is reported assigned")
			}
		})
	}
}

func TestPlanAssignUpdatesTheViewWithinARound(t *testing.T) {
	tests := []struct {
		name        string
		slots       int
		maxBacklog  int
		assign      []int // call indexes, all to servant 0
		wantOK      []bool
		wantBacklog []bool // per successful assignment
		inFlight    int
		backlog     int
		lastRoute   string
	}{
		{name: "free slot takes the call", slots: 1, assign: []int{0},
			wantOK: []bool{true}, wantBacklog: []bool{false}, inFlight: 1, lastRoute: "r-c0"},
		{name: "second call sees the first took the only slot", slots: 1, assign: []int{0, 1},
			wantOK: []bool{true, false}, wantBacklog: []bool{false}, inFlight: 1, lastRoute: "r-c0"},
		{name: "calls beyond the slots go to the backlog up to MaxBacklog", slots: 1, maxBacklog: 2, assign: []int{0, 1, 2, 3},
			wantOK: []bool{true, true, true, false}, wantBacklog: []bool{false, true, true}, inFlight: 1, backlog: 2, lastRoute: "r-c2"},
		{name: "two slots then backlog", slots: 2, maxBacklog: 1, assign: []int{0, 1, 2},
			wantOK: []bool{true, true, true}, wantBacklog: []bool{false, false, true}, inFlight: 2, backlog: 1, lastRoute: "r-c2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := calls("c0", "c1", "c2", "c3")
			s := avail("s", tt.slots)
			var p Plan
			p.Reset(cs, []*Servant{s}, time.Unix(1, 0))
			p.MaxBacklog = tt.maxBacklog
			for i, c := range tt.assign {
				if got := p.Assign(c, 0); got != tt.wantOK[i] {
					t.Fatalf("Assign(%d, 0) = %v, want %v (servant %+v)", c, got, tt.wantOK[i], *s)
				}
			}
			as := p.Assignments()
			if len(as) != len(tt.wantBacklog) {
				t.Fatalf("Assignments() = %v, want %d", as, len(tt.wantBacklog))
			}
			for i, a := range as {
				if a.Call != tt.assign[i] || a.Servant != 0 || a.Backlog != tt.wantBacklog[i] {
					t.Errorf("assignment %d = %+v, want call %d backlog %v", i, a, tt.assign[i], tt.wantBacklog[i])
				}
				if !p.Assigned(a.Call) {
					t.Errorf("Assigned(%d) = false after its assignment", a.Call)
				}
			}
			if s.InFlight != tt.inFlight || s.Backlog != tt.backlog || !s.Used || s.LastRoute != tt.lastRoute {
				t.Errorf("servant after the round = %+v, want InFlight %d Backlog %d Used LastRoute %q",
					*s, tt.inFlight, tt.backlog, tt.lastRoute)
			}
			wantRejected := 0
			for _, ok := range tt.wantOK {
				if !ok {
					wantRejected++
				}
			}
			if p.Rejected() != wantRejected {
				t.Errorf("Rejected() = %d, want %d", p.Rejected(), wantRejected)
			}
		})
	}
}

func TestPlanAssignedOutOfRange(t *testing.T) {
	var p Plan
	p.Reset(calls("f"), []*Servant{avail("s", 1)}, time.Time{})
	for _, i := range []int{-1, 1, 100} {
		t.Run(fmt.Sprintf("index %d", i), func(t *testing.T) {
			if p.Assigned(i) {
				t.Errorf("Assigned(%d) = true for an index out of range", i)
			}
		})
	}
}

func TestPlanResetStartsAFreshRound(t *testing.T) {
	s := avail("s", 4)
	var p Plan
	p.Reset(calls("a", "b"), []*Servant{s}, time.Unix(1, 0))
	p.Assign(0, 0)
	p.Assign(5, 0) // rejected
	p.WakeAt(time.Unix(50, 0))

	now := time.Unix(2, 0)
	p.Reset(calls("c", "d", "e"), []*Servant{s}, now)
	tests := []struct {
		name string
		ok   bool
	}{
		{"Now is the new round's time", p.Now.Equal(now)},
		{"no assignments carried over", len(p.Assignments()) == 0},
		{"no call is assigned", !p.Assigned(0) && !p.Assigned(1) && !p.Assigned(2)},
		{"rejections are reset", p.Rejected() == 0},
		{"wake-up is reset", p.Wake().IsZero()},
		{"the previously assigned index can be assigned again", p.Assign(0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				t.Error("failed")
			}
		})
	}
}

func TestPlanWakeAtKeepsTheEarliest(t *testing.T) {
	base := time.Unix(1000, 0)
	tests := []struct {
		name     string
		requests []time.Duration
		want     time.Duration
		none     bool
	}{
		{name: "no request leaves Wake zero", none: true},
		{name: "a single request", requests: []time.Duration{5 * time.Second}, want: 5 * time.Second},
		{name: "an earlier request replaces a later one", requests: []time.Duration{5 * time.Second, 2 * time.Second}, want: 2 * time.Second},
		{name: "a later request does not replace an earlier one", requests: []time.Duration{2 * time.Second, 5 * time.Second}, want: 2 * time.Second},
		{name: "earliest of many", requests: []time.Duration{9, 3, 7, 1, 8}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Plan
			p.Reset(nil, nil, base)
			for _, d := range tt.requests {
				p.WakeAt(base.Add(d))
			}
			if tt.none {
				if !p.Wake().IsZero() {
					t.Errorf("Wake() = %v, want zero", p.Wake())
				}
				return
			}
			if got := p.Wake(); !got.Equal(base.Add(tt.want)) {
				t.Errorf("Wake() = %v, want %v", got, base.Add(tt.want))
			}
		})
	}
}

func TestPlanRejectedCountsEveryRefusal(t *testing.T) {
	var p Plan
	p.Reset(calls("a", "b"), []*Servant{avail("s", 1)}, time.Time{})
	p.Assign(0, 0)  // ok
	p.Assign(0, 0)  // already assigned
	p.Assign(1, 0)  // no slot
	p.Assign(9, 0)  // out of range
	p.Assign(1, -3) // out of range
	if got := p.Rejected(); got != 4 {
		t.Errorf("Rejected() = %d, want 4", got)
	}
}

func TestPlanCanTake(t *testing.T) {
	tests := []struct {
		name       string
		s          Servant
		method     string
		maxBacklog int
		want       bool
	}{
		{"free slot", Servant{Slots: 1, Healthy: true}, "f", 0, true},
		{"busy, no backlog", Servant{Slots: 1, InFlight: 1, Healthy: true}, "f", 0, false},
		{"busy, backlog room", Servant{Slots: 1, InFlight: 1, Backlog: 1, Healthy: true}, "f", 2, true},
		{"busy, backlog full", Servant{Slots: 1, InFlight: 1, Backlog: 2, Healthy: true}, "f", 2, false},
		{"unhealthy", Servant{Slots: 1}, "f", 0, false},
		{"draining", Servant{Slots: 1, Healthy: true, Draining: true}, "f", 0, false},
		{"ejected", Servant{Slots: 1, Healthy: true, Ejected: true}, "f", 0, false},
		{"method not served", Servant{Slots: 1, Healthy: true, Functions: map[string]bool{"g": true}}, "f", 0, false},
		{"method served", Servant{Slots: 1, Healthy: true, Functions: map[string]bool{"f": true}}, "f", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.s
			c := &Call{Method: tt.method}
			var p Plan
			p.Reset([]*Call{c}, []*Servant{&s}, time.Time{})
			p.MaxBacklog = tt.maxBacklog
			if got := p.CanTake(&s, c); got != tt.want {
				t.Errorf("CanTake = %v, want %v", got, tt.want)
			}
			// CanTake and Assign agree.
			if got := p.Assign(0, 0); got != tt.want {
				t.Errorf("Assign = %v, disagrees with CanTake %v", got, tt.want)
			}
		})
	}
}

func TestAdapters(t *testing.T) {
	t.Run("AlgorithmFunc calls the function with its arguments", func(t *testing.T) {
		cs := calls("f")
		ss := []*Servant{avail("s", 1)}
		var p Plan
		p.Reset(cs, ss, time.Time{})
		var got *Plan
		AlgorithmFunc(func(c []*Call, s []*Servant, pp *Plan) {
			got = pp
			pp.Assign(0, 0)
		}).Assign(cs, ss, &p)
		if got != &p || !p.Assigned(0) {
			t.Error("AlgorithmFunc did not run the function with the plan")
		}
	})
	t.Run("RouterFunc returns the function's routing string", func(t *testing.T) {
		r := RouterFunc(func(c *Call) (string, error) { return c.Method + "!", nil })
		if got, err := r.Route(&Call{Method: "f"}); got != "f!" || err != nil {
			t.Errorf("Route = %q, %v", got, err)
		}
	})
}
