package algo

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// TestWarm plays rounds against one Warm, changing the servants between
// rounds as completions, failures and restarts would.
func TestWarm(t *testing.T) {
	type step struct {
		name   string
		change func(ss []*dispatchServant)
		calls  []string
		want   []string
	}
	tests := []struct {
		name     string
		keys     int
		servants []srv
		steps    []step
	}{
		{
			name: "a routing string stays where it is warm; cold ones go to the least loaded", keys: 4,
			servants: []srv{{}, {}, {}},
			steps: []step{
				{"cold strings spread", nil, []string{"A", "B", "C"}, []string{"A→s1", "B→s2", "C→s3"}},
				{"each comes back to its servant", freeAll, []string{"C", "A", "B"}, []string{"C→s3", "A→s1", "B→s2"}},
				{"a warm string waits for its busy servant while a cold one takes a free servant",
					func(ss []*dispatchServant) { ss[0].InFlight = 0; ss[1].InFlight = 0 }, // s3 still busy with C
					[]string{"C", "D"}, []string{"D→s1"}},
				{"the waiting call gets its servant when it frees", freeAll, []string{"C"}, []string{"C→s3"}},
			},
		},
		{
			name: "a hot string spreads over as many servants as it keeps busy", keys: 4,
			servants: []srv{{}, {}, {}},
			steps: []step{
				{"first call", nil, []string{"H"}, []string{"H→s1"}},
				// s1 busy: one H waits for it, the next takes a free servant
				// and holds H too, the next waits for that one, the last
				// takes the third servant.
				{"more calls than one servant", nil, []string{"H", "H", "H", "H"}, []string{"H→s2", "H→s3"}},
				{"two calls, three holders free", freeAll, []string{"H", "H"}, []string{"H→s1", "H→s2"}},
			},
		},
		{
			name: "nothing waits for a servant that is down or does not serve the function", keys: 4,
			servants: []srv{{}, {serves: []string{"f"}}},
			steps: []step{
				{"warm up", nil, []string{"A", "B"}, []string{"A→s1", "B→s2"}},
				{"s1 down", func(ss []*dispatchServant) { freeAll(ss); ss[0].Healthy = false }, []string{"A"}, []string{"A→s2"}},
				{"s1 back and busy; s2 holds A but not g", func(ss []*dispatchServant) {
					freeAll(ss)
					ss[0].Healthy, ss[0].InFlight = true, 1
				}, []string{"g:B"}, []string{}},
			},
		},
		{
			name: "a servant remembers only Keys strings, least recently used out", keys: 2,
			servants: []srv{{}, {busy: 1}},
			steps: []step{
				{"A", nil, []string{"A"}, []string{"A→s1"}},
				{"B", freeFirst, []string{"B"}, []string{"B→s1"}},
				{"A again", freeFirst, []string{"A"}, []string{"A→s1"}},
				{"C evicts B", freeFirst, []string{"C"}, []string{"C→s1"}},
				// s1 busy: A is still warm there, so A waits; B is cold
				// everywhere and takes the now free s2.
				{"A waits, B goes cold", func(ss []*dispatchServant) { ss[1].InFlight = 0 }, []string{"A", "B"}, []string{"B→s2"}},
			},
		},
		{
			name: "a free servant takes a later call it is warm for before an older cold one", keys: 4,
			servants: []srv{{}, {}},
			steps: []step{
				{"warm up", nil, []string{"A", "B"}, []string{"A→s1", "B→s2"}},
				{"s2 frees: B, though newer, goes first", func(ss []*dispatchServant) { ss[1].InFlight = 0 },
					[]string{"X", "B"}, []string{"B→s2"}},
			},
		},
		{
			name: "a rejoined servant starts cold", keys: 4,
			servants: []srv{{}, {}},
			steps: []step{
				{"A on s1", nil, []string{"A"}, []string{"A→s1"}},
				{"s1 restarts (Used false) and is busy; s2 free", func(ss []*dispatchServant) {
					ss[0].Used, ss[0].LastRoute, ss[0].InFlight = false, "", 1
				}, []string{"A"}, []string{"A→s2"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWarm(tt.keys, 0)
			ss := views(tt.servants)
			for _, st := range tt.steps {
				if st.change != nil {
					st.change(ss)
				}
				got, p := assign(w, calls(st.calls...), ss)
				if !slices.Equal(got, st.want) {
					t.Fatalf("%s: assigned %v, want %v", st.name, got, st.want)
				}
				if p.Rejected() != 0 {
					t.Fatalf("%s: %d assignments refused", st.name, p.Rejected())
				}
			}
		})
	}
}

// dispatchServant shortens the step functions' signatures.
type dispatchServant = dispatch.Servant

func freeAll(ss []*dispatchServant) {
	for _, s := range ss {
		s.InFlight = 0
	}
}

func freeFirst(ss []*dispatchServant) { ss[0].InFlight = 0 }

// TestWarmForgetsServantsThatLeft checks that caches of servants no longer
// in the list are dropped, with their routing strings.
func TestWarmForgetsServantsThatLeft(t *testing.T) {
	w := NewWarm(4, 0)
	for i := range 100 {
		ss := views([]srv{{}})
		ss[0].Name = "gone" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		assign(w, calls("K"+ss[0].Name), ss)
	}
	if len(w.caches) > 2+16 || len(w.holders) > 2+16 {
		t.Errorf("%d caches and %d routing strings kept for 1 servant", len(w.caches), len(w.holders))
	}
}

// TestWarmPatience checks that a call waiting for its busy warm servant
// stops waiting after Patience and takes a free servant.
func TestWarmPatience(t *testing.T) {
	w := NewWarm(4, 0)
	ss := views([]srv{{}, {}})
	assign(w, calls("A"), ss) // s1 holds A and is busy
	late := calls("A")
	if got, _ := assign(w, late, ss); len(got) != 0 {
		t.Fatalf("a fresh call for A: %v, want it to wait for s1", got)
	}
	late[0].Arrived = t0.Add(-DefaultWarmPatience)
	if got, _ := assign(w, late, ss); !slices.Equal(got, []string{"A→s2"}) {
		t.Fatalf("a call for A that waited %v: %v, want A→s2", DefaultWarmPatience, got)
	}
}

// TestWarmOnlyHotStringsSpread checks that a routing string below the hot
// share waits for its busy servant however many of its calls wait, while a
// hot one takes a free servant once a slot's worth waits.
func TestWarmOnlyHotStringsSpread(t *testing.T) {
	w := NewWarm(100, 0.05)
	ss := views([]srv{{}, {}})
	// 200 calls over 100 strings (each 0.5 % of the recent calls), then
	// K once more and H often enough to be hot.
	for i := range 200 {
		freeAll(ss)
		assign(w, calls(fmt.Sprint("k", i%100)), ss)
	}
	for range 20 {
		freeAll(ss)
		assign(w, calls("H"), ss)
	}
	freeAll(ss)
	if got, _ := assign(w, calls("k7"), ss); len(got) != 1 {
		t.Fatalf("k7: %v", got)
	}
	k7 := ss[0]
	if ss[1].InFlight == 1 {
		k7 = ss[1]
	}
	freeAll(ss)
	k7.InFlight = 1 // k7's servant is busy, the other free
	if got, _ := assign(w, calls("k7", "k7", "k7"), ss); len(got) != 0 {
		t.Errorf("a string that is not hot spread: %v", got)
	}
	// H is held by one servant; with that one busy, one H waits for it
	// and the next takes the other servant.
	freeAll(ss)
	got, _ := assign(w, calls("H"), ss)
	other := "H→s1"
	if slices.Equal(got, []string{"H→s1"}) {
		other = "H→s2"
	}
	if got, _ := assign(w, calls("H", "H"), ss); !slices.Equal(got, []string{other}) {
		t.Errorf("hot H with its servant busy: %v, want %v", got, other)
	}
}

// TestWarmRandomRounds plays random rounds (servants going down and up,
// restarting, finishing calls; calls of two functions over a skewed key
// space) and checks what must hold in every round: warm never makes the
// plan refuse an assignment, never leaves a free servant idle while a call
// it serves has waited its patience out, and keeps its model within Keys
// strings per servant.
func TestWarmRandomRounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Few strings are hot at 20 %: most calls wait for their warm servant,
	// so only the patience rule can move them off the slow one.
	w := NewWarm(8, 0.2)
	ss := views([]srv{{slots: 2}, {}, {serves: []string{"f"}}, {slots: 3}})
	var waiting []*dispatch.Call
	now := t0
	for round := range 5000 {
		now = now.Add(time.Duration(rng.IntN(5)) * time.Millisecond)
		for si, s := range ss {
			// s4 is slow: calls for the strings it holds wait for it
			// until their patience runs out.
			if s.InFlight > 0 && rng.IntN(map[bool]int{true: 100, false: 2}[si == 3]) == 0 {
				s.InFlight--
			}
			switch rng.IntN(500) {
			case 0:
				s.Healthy = !s.Healthy
			case 1:
				s.Used, s.LastRoute = false, "" // restarted
			}
		}
		for range rng.IntN(2) {
			method := "f"
			if rng.IntN(4) == 0 {
				method = "g"
			}
			key := fmt.Sprint("k", int(rng.ExpFloat64()*10))
			waiting = append(waiting, &dispatch.Call{Method: method, Route: key, Arrived: now})
		}
		var p dispatch.Plan
		p.Reset(waiting, ss, now)
		w.Assign(waiting, ss, &p)
		if p.Rejected() != 0 {
			t.Fatalf("round %d: %d assignments refused", round, p.Rejected())
		}
		var left []*dispatch.Call
		for ci, c := range waiting {
			if p.Assigned(ci) {
				continue
			}
			if now.Sub(c.Arrived) >= w.Patience {
				for si, s := range ss {
					if s.Available() && s.Free() > 0 && s.Serves(c.Method) {
						t.Fatalf("round %d: call %s (%s) waited %v while s%d was free", round, c.Route, c.Method, now.Sub(c.Arrived), si+1)
					}
				}
			}
			left = append(left, c)
		}
		waiting = left
		for _, wc := range w.caches {
			if len(wc.last) > w.Keys {
				t.Fatalf("round %d: %s remembers %d strings, more than %d", round, wc.name, len(wc.last), w.Keys)
			}
		}
	}
}
