// Command myplugin is a complete compiled dispatch plugin for mserve. Its
// algorithm "fewest" sends each waiting call to the servant with the
// fewest calls pending among those tagged $MYPLUGIN_TAG (default "fast");
// when no tagged servant can take the call, to the one with the fewest
// pending among the others. Ties go to the servant idle longest.
//
//	go build -o bin/myplugin ./examples/dispatch-plugin/myplugin
//	bin/mserve -plugins bin/myplugin -algo fewest 3 bin/quickstart-servant
package main

import (
	"os"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

// fewest is the algorithm: the same dispatch.Algorithm contract as
// mserve's built-in algorithms and Lua scripts.
type fewest struct{ tag string }

// Assign is given the waiting calls, oldest first, and every servant; it
// records its decisions in p. p.CanTake says whether a servant is up, serves
// the call's function and has a free slot (or backlog room); p.Assign
// updates the servant's view, so the next decision sees the call placed.
func (f *fewest) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	for ci, c := range calls {
		best := -1
		for si, s := range servants {
			if p.CanTake(s, c) && (best < 0 || f.better(s, servants[best])) {
				best = si
			}
		}
		if best >= 0 {
			p.Assign(ci, best)
		}
	}
}

// better reports whether a should get the call rather than b.
func (f *fewest) better(a, b *dispatch.Servant) bool {
	if at, bt := a.HasTag(f.tag), b.HasTag(f.tag); at != bt {
		return at // tagged servants first
	}
	if pa, pb := a.InFlight+a.Backlog, b.InFlight+b.Backlog; pa != pb {
		return pa < pb // then the fewest pending calls
	}
	return a.LastUsed.Before(b.LastUsed) // then the one idle longest
}

func main() {
	tag := os.Getenv("MYPLUGIN_TAG")
	if tag == "" {
		tag = "fast"
	}
	plugin.Serve(plugin.Plugin{
		Algorithms: map[string]plugin.AlgorithmSpec{
			"fewest": {
				Summary: "fewest pending calls among servants tagged " + tag + ", else among all",
				New:     func() dispatch.Algorithm { return &fewest{tag: tag} },
			},
		},
	})
}
