package core

import (
	"testing"

	"github.com/mserve/mserve/core/supervise"
)

// procIndex finds a spawned servant's process by its name alone (s1 is
// procs[0]), whatever the engine's order; other names have none.
func TestProcIndex(t *testing.T) {
	b := &Balancer{procs: make([]*supervise.Process, 3)}
	for name, want := range map[string]int{
		"s1": 0, "s2": 1, "s3": 2,
		"s0": -1, "s4": -1, "s01": -1, "s+1": -1, "s-1": -1, "s": -1, "": -1, "x1": -1, "1": -1, "s1 ": -1,
	} {
		if got := b.procIndex(name); got != want {
			t.Errorf("procIndex(%q) = %d, want %d", name, got, want)
		}
	}
	if got := (&Balancer{}).procIndex("s1"); got != -1 {
		t.Errorf("procIndex(s1) with no processes (launched or remote servants) = %d, want -1", got)
	}
}
