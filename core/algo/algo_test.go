package algo

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mserve/mserve/core/registry"
	"github.com/mserve/mserve/sdk/dispatch"
)

var t0 = time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)

// srv describes one servant's state for a scenario.
type srv struct {
	busy     int    // calls in flight
	slots    int    // 0 means 1
	route    string // last routing string; "" with used=false means never used
	used     bool
	idle     time.Duration // how long ago its last call finished
	down     bool
	draining bool
	serves   []string // functions it serves; nil means all
}

func views(ss []srv) []*dispatch.Servant {
	out := make([]*dispatch.Servant, len(ss))
	for i, s := range ss {
		v := &dispatch.Servant{
			Name: fmt.Sprintf("s%d", i+1), Slots: max(s.slots, 1), InFlight: s.busy,
			Used: s.used, LastRoute: s.route, Healthy: !s.down, Draining: s.draining,
		}
		if s.used {
			v.LastUsed = t0.Add(-s.idle)
		}
		if s.serves != nil {
			v.Functions = map[string]bool{}
			for _, f := range s.serves {
				v.Functions[f] = true
			}
		}
		out[i] = v
	}
	return out
}

// calls makes waiting calls from routing strings; "g:x" calls function g
// with route x, a bare "x" calls f.
func calls(routes ...string) []*dispatch.Call {
	out := make([]*dispatch.Call, len(routes))
	for i, r := range routes {
		method := "f"
		if m, rest, ok := strings.Cut(r, ":"); ok {
			method, r = m, rest
		}
		out[i] = &dispatch.Call{Method: method, Route: r, Arrived: t0}
	}
	return out
}

// assign runs one round and returns "call→servant" pairs, 1-based servant
// numbers, in decision order.
func assign(a dispatch.Algorithm, cs []*dispatch.Call, ss []*dispatch.Servant) ([]string, *dispatch.Plan) {
	var p dispatch.Plan
	p.Reset(cs, ss, t0)
	a.Assign(cs, ss, &p)
	var out []string
	for _, x := range p.Assignments() {
		out = append(out, fmt.Sprintf("%s→s%d", cs[x.Call].Route, x.Servant+1))
	}
	return out, &p
}

func TestBuiltins(t *testing.T) {
	expire := 12 * time.Second
	long := expire + time.Second
	tests := []struct {
		name     string
		algo     string
		servants []srv
		queue    []string
		want     []string
		wake     time.Duration // expected wake-up after t0; 0 means none
	}{
		{name: "orig/first free in list order", algo: "orig",
			servants: []srv{{busy: 1}, {}, {}}, queue: []string{"a", "b"}, want: []string{"a→s2", "b→s3"}},
		{name: "orig/more calls than free servants", algo: "orig",
			servants: []srv{{}, {busy: 1}}, queue: []string{"a", "b", "c"}, want: []string{"a→s1"}},
		{name: "orig/skips down and draining", algo: "orig",
			servants: []srv{{down: true}, {draining: true}, {}}, queue: []string{"a"}, want: []string{"a→s3"}},
		{name: "orig/fills every slot of a multi-slot servant first", algo: "orig",
			servants: []srv{{slots: 2}, {}}, queue: []string{"a", "b", "c"}, want: []string{"a→s1", "b→s1", "c→s2"}},
		{name: "orig/nobody free", algo: "orig",
			servants: []srv{{busy: 1}, {down: true}}, queue: []string{"a"}, want: nil},
		{name: "even/round robin from the start", algo: "even",
			servants: []srv{{}, {}, {}}, queue: []string{"a", "b", "c", "d"}, want: []string{"a→s1", "b→s2", "c→s3"}},
		{name: "even/skips busy", algo: "even",
			servants: []srv{{}, {busy: 1}, {}}, queue: []string{"a", "b"}, want: []string{"a→s1", "b→s3"}},
		{name: "least/fewest pending among free", algo: "least",
			servants: []srv{{slots: 4, busy: 3}, {slots: 4, busy: 1}, {slots: 4, busy: 2}}, queue: []string{"a", "b"},
			want: []string{"a→s2", "b→s3"}}, // after a, s2 and s3 tie at 2: the tie goes past the last used
		{name: "least/ties rotate", algo: "least",
			servants: []srv{{}, {}, {}}, queue: []string{"a", "b", "c"}, want: []string{"a→s1", "b→s2", "c→s3"}},
		{name: "match/same route to its free servant", algo: "match",
			servants: []srv{{used: true, route: "x", idle: time.Second}, {used: true, route: "y", idle: time.Second}},
			queue:    []string{"y", "x"}, want: []string{"y→s2", "x→s1"}},
		{name: "match/rule 1 beats an older call with a new route", algo: "match",
			servants: []srv{{}, {used: true, route: "y", idle: time.Second}},
			queue:    []string{"new", "y"}, want: []string{"y→s2", "new→s1"}},
		{name: "match/route held by a busy servant waits for it", algo: "match",
			servants: []srv{{busy: 1, used: true, route: "x"}, {}},
			queue:    []string{"x", "z"}, want: []string{"z→s2"}},
		{name: "match/new route goes to a never-used servant", algo: "match",
			servants: []srv{{used: true, route: "x", idle: time.Second}, {}},
			queue:    []string{"z"}, want: []string{"z→s2"}},
		{name: "match/new route goes to a servant idle past expiry", algo: "match",
			servants: []srv{{used: true, route: "x", idle: time.Second}, {used: true, route: "y", idle: long}},
			queue:    []string{"z"}, want: []string{"z→s2"}},
		{name: "match/new route waits while claims are fresh", algo: "match",
			servants: []srv{{used: true, route: "x", idle: 2 * time.Second}, {used: true, route: "y", idle: 5 * time.Second}},
			queue:    []string{"z"}, want: nil, wake: expire - 5*time.Second},
		{name: "match/second call of a new route waits for the first's servant", algo: "match",
			servants: []srv{{}, {}},
			queue:    []string{"z", "z", "w"}, want: []string{"z→s1", "w→s2"}},
		{name: "match/down servant releases its route", algo: "match",
			servants: []srv{{down: true, used: true, route: "x"}, {}},
			queue:    []string{"x"}, want: []string{"x→s2"}},
		{name: "match/draining servant releases its route", algo: "match",
			servants: []srv{{draining: true, used: true, route: "x", idle: time.Second}, {}},
			queue:    []string{"x"}, want: []string{"x→s2"}},
		{name: "orig/only servants that serve the function", algo: "orig",
			servants: []srv{{serves: []string{"g"}}, {}}, queue: []string{"a"}, want: []string{"a→s2"}},
		{name: "even/only servants that serve the function", algo: "even",
			servants: []srv{{serves: []string{"g"}}, {serves: []string{"f"}}}, queue: []string{"g:a", "b"}, want: []string{"a→s1", "b→s2"}},
		{name: "least/a call nobody free serves waits, the next goes", algo: "least",
			servants: []srv{{serves: []string{"f"}}}, queue: []string{"g:a", "b"}, want: []string{"b→s1"}},
		{name: "match/new route skips a call the eligible servant does not serve", algo: "match",
			servants: []srv{{serves: []string{"f"}}}, queue: []string{"g:a", "b"}, want: []string{"b→s1"}},
		{name: "match/first free servant in list order for rule 1", algo: "match",
			servants: []srv{{used: true, route: "x", idle: time.Second}, {used: true, route: "x", idle: time.Second}},
			queue:    []string{"x", "x", "x"}, want: []string{"x→s1", "x→s2"}},
	}
	reg := Builtins()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(reg, tt.algo, Config{RouteExpire: expire})
			if err != nil {
				t.Fatal(err)
			}
			got, p := assign(a, calls(tt.queue...), views(tt.servants))
			if !slices.Equal(got, tt.want) {
				t.Errorf("assignments = %v, want %v", got, tt.want)
			}
			if p.Rejected() != 0 {
				t.Errorf("the algorithm made %d assignments the plan refused", p.Rejected())
			}
			var wantWake time.Time
			if tt.wake > 0 {
				wantWake = t0.Add(tt.wake)
			}
			if !p.Wake().Equal(wantWake) {
				t.Errorf("wake = %v, want %v", p.Wake(), wantWake)
			}
		})
	}
}

// TestEvenRemembersAcrossRounds checks that round robin continues where
// the previous round stopped.
func TestEvenRemembersAcrossRounds(t *testing.T) {
	a := &Even{}
	var got []string
	for range 4 {
		ss := views([]srv{{}, {}, {}})
		r, _ := assign(a, calls("a"), ss)
		got = append(got, r...)
	}
	if want := []string{"a→s1", "a→s2", "a→s3", "a→s1"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestRegistry(t *testing.T) {
	reg := Builtins()
	if got, want := reg.Names(), []string{"even", "least", "match", "orig", "warm"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	if _, err := New(reg, "bogus", Config{}); err == nil || err.Error() != `unknown dispatch algorithm "bogus" (known: even, least, match, orig, warm)` {
		t.Errorf("unknown name: err = %v", err)
	}
	f := func(Config) (dispatch.Algorithm, error) { return Orig{}, nil }
	if err := reg.Register(registry.Entry[Factory]{Name: "orig", Source: "test", Value: f}); err == nil {
		t.Error("registering a duplicate name succeeded")
	}
	if err := reg.Register(registry.Entry[Factory]{Name: "two words", Source: "test", Value: f}); err == nil {
		t.Error("registering a name with a space succeeded")
	}
}

// BenchmarkDecision measures one dispatch decision (one call waiting, one
// servant free) with 8 and 64 servants.
func BenchmarkDecision(b *testing.B) {
	for _, name := range []string{"orig", "even", "least", "match"} {
		for _, n := range []int{8, 64} {
			b.Run(fmt.Sprintf("%s/servants=%d", name, n), func(b *testing.B) {
				a, _ := New(Builtins(), name, Config{})
				ss := make([]srv, n)
				for i := range ss {
					ss[i] = srv{busy: 1, used: true, route: fmt.Sprintf("r%d", i)}
				}
				ss[n-1].busy = 0
				vs := views(ss)
				cs := calls(fmt.Sprintf("r%d", n-1))
				var p dispatch.Plan
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					p.Reset(cs, vs, t0)
					a.Assign(cs, vs, &p)
					vs[n-1].InFlight = 0 // undo, as the result coming back would
				}
			})
		}
	}
}
