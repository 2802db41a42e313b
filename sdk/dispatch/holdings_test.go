package dispatch

import (
	"testing"
	"time"
)

// holder makes a used, available servant that last ran route.
func holder(name, route string, slots, inFlight int) *Servant {
	return &Servant{Name: name, Slots: slots, InFlight: inFlight, Healthy: true, Used: true, LastRoute: route}
}

func TestHoldingsIndex(t *testing.T) {
	servants := []*Servant{
		holder("s1", "A", 1, 1), // busy
		holder("s2", "A", 2, 0),
		holder("s3", "B", 1, 0),
		{Name: "s4", Slots: 1, Used: true, LastRoute: "C"}, // down: holds nothing
		{Name: "s5", Slots: 1, Healthy: true, Used: true, LastRoute: "D", Functions: map[string]bool{"g": true}}, // serves only g
		avail("s6", 1), // never used
	}
	var h Holdings
	h.Reset(servants)
	tests := []struct {
		route      string
		method     string
		held       bool
		freeHolder int
	}{
		{"A", "f", true, 1},   // s1 is busy, s2 is free
		{"B", "f", true, 2},   // s3
		{"C", "f", false, -1}, // its only holder is down
		{"D", "f", true, -1},  // held, but by a servant that does not serve f
		{"D", "g", true, 4},
		{"E", "f", false, -1},
		{"", "f", false, -1}, // s6 never ran anything
	}
	for _, tt := range tests {
		t.Run(tt.route+"/"+tt.method, func(t *testing.T) {
			if got := h.Held(tt.route); got != tt.held {
				t.Errorf("Held(%q) = %v, want %v", tt.route, got, tt.held)
			}
			if got := h.FreeHolder(servants, &Call{Method: tt.method, Route: tt.route}); got != tt.freeHolder {
				t.Errorf("FreeHolder(%q) = %d, want %d", tt.route, got, tt.freeHolder)
			}
		})
	}
	if !h.AnyFreeHolder() {
		t.Error("AnyFreeHolder() = false with s2, s3 and s5 free")
	}
}

// TestHoldingsFollowAssignments checks that Assign keeps the index in step
// with the plan: moving a servant to a new routing string, and filling its
// last slot on the one it holds.
func TestHoldingsFollowAssignments(t *testing.T) {
	servants := []*Servant{holder("s1", "A", 2, 0), holder("s2", "B", 1, 0)}
	calls := []*Call{{Method: "f", Route: "A"}, {Method: "f", Route: "C"}, {Method: "f", Route: "A"}}
	var h Holdings
	var p Plan
	p.Reset(calls, servants, time.Unix(0, 0))
	h.Reset(servants)
	take := func(ci, si int) {
		t.Helper()
		if !h.Assign(&p, ci, si) {
			t.Fatalf("Assign(%d, %d) refused", ci, si)
		}
	}

	take(1, 1) // s2: B → C
	if h.Held("B") || !h.Held("C") {
		t.Errorf("after s2 took C: Held(B) = %v, Held(C) = %v; want false, true", h.Held("B"), h.Held("C"))
	}
	if got := h.FreeHolder(servants, calls[1]); got != -1 {
		t.Errorf("FreeHolder(C) = %d with s2 full, want -1", got)
	}

	take(0, 0) // s1 keeps A, one slot left
	if got := h.FreeHolder(servants, calls[2]); got != 0 {
		t.Errorf("FreeHolder(A) = %d with s1's second slot free, want 0", got)
	}
	take(2, 0) // s1 full
	if got := h.FreeHolder(servants, calls[2]); got != -1 || !h.Held("A") {
		t.Errorf("with s1 full: FreeHolder(A) = %d, Held(A) = %v; want -1, true", got, h.Held("A"))
	}
	if h.AnyFreeHolder() {
		t.Error("AnyFreeHolder() = true with every servant full")
	}

	// The next round starts afresh from the servants.
	servants[0].InFlight, servants[1].InFlight = 0, 0
	h.Reset(servants)
	if got := h.FreeHolder(servants, calls[1]); got != 1 {
		t.Errorf("next round: FreeHolder(C) = %d, want 1", got)
	}
}
