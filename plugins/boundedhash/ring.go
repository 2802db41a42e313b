package main

import (
	"hash/fnv"
	"math"
	"slices"
	"strconv"

	"github.com/mserve/mserve/sdk/dispatch"
)

// Replicas is how many points each servant has on the ring.
const Replicas = 128

// BoundedHash is consistent hashing with bounded loads (Mirrokni, Thorup,
// Zadimoghaddam, 2016): a routing string hashes to a point on a ring of
// servants and goes to the first servant clockwise whose load (calls in
// flight and waiting for it) stays within ⌈(1+ε)·average⌉ with this call
// added; servants over the bound are passed over. The same routing string
// keeps its servant while that servant is not overloaded, so caches stay
// warm, and a hot routing string spills over to the next servants instead
// of flooding one.
type BoundedHash struct {
	Epsilon float64 // ε: how far above the average load a servant may go
	Backlog int     // calls a busy servant may hold waiting for a slot

	names  []string // servant names the ring was built for
	points []point  // sorted by hash
}

type point struct {
	hash    uint64
	servant int
}

// New returns a BoundedHash with the given ε and backlog limit.
func New(epsilon float64, backlog int) *BoundedHash {
	return &BoundedHash{Epsilon: epsilon, Backlog: backlog}
}

// BacklogLimit implements dispatch.BacklogUser.
func (b *BoundedHash) BacklogLimit() int { return b.Backlog }

func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	// fnv's high bits are poorly mixed for short keys: finish with a mixer.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// rebuild places every servant on the ring, by name, so that a servant
// keeps its points whatever the order or the other servants.
func (b *BoundedHash) rebuild(servants []*dispatch.Servant) {
	b.names = b.names[:0]
	b.points = b.points[:0]
	for i, s := range servants {
		b.names = append(b.names, s.Name)
		for r := range Replicas {
			b.points = append(b.points, point{hash: hash(s.Name + "#" + strconv.Itoa(r)), servant: i})
		}
	}
	slices.SortFunc(b.points, func(x, y point) int {
		switch {
		case x.hash < y.hash:
			return -1
		case x.hash > y.hash:
			return 1
		}
		return x.servant - y.servant
	})
}

func (b *BoundedHash) stale(servants []*dispatch.Servant) bool {
	if len(servants) != len(b.names) {
		return true
	}
	for i, s := range servants {
		if s.Name != b.names[i] {
			return true
		}
	}
	return false
}

// Assign implements dispatch.Algorithm.
func (b *BoundedHash) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	if b.stale(servants) {
		b.rebuild(servants)
	}
	for ci, c := range calls {
		if p.Assigned(ci) {
			continue
		}
		if si := b.pick(c, servants, p); si >= 0 {
			p.Assign(ci, si)
		}
	}
}

// Bound returns the most calls one servant may hold when total calls are
// spread over n available servants: ⌈(1+ε)·total/n⌉.
func (b *BoundedHash) Bound(total, n int) int {
	if n == 0 {
		return 0
	}
	return int(math.Ceil((1 + b.Epsilon) * float64(total) / float64(n)))
}

// pick walks the ring clockwise from the call's point to the first servant
// that can take it within the load bound; -1 when none can.
func (b *BoundedHash) pick(c *dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) int {
	total, n := 1, 0 // the call being placed counts
	for _, s := range servants {
		if s.Available() {
			total += s.InFlight + s.Backlog
			n++
		}
	}
	bound := b.Bound(total, n)
	h := hash(c.Route)
	start, _ := slices.BinarySearchFunc(b.points, h, func(pt point, t uint64) int {
		switch {
		case pt.hash < t:
			return -1
		case pt.hash > t:
			return 1
		}
		return 0
	})
	seen := make([]bool, len(servants))
	for k := range b.points {
		pt := b.points[(start+k)%len(b.points)]
		if seen[pt.servant] {
			continue
		}
		seen[pt.servant] = true
		s := servants[pt.servant]
		if s.InFlight+s.Backlog+1 <= bound && p.CanTake(s, c) {
			return pt.servant
		}
	}
	return -1
}

var (
	_ dispatch.Algorithm   = (*BoundedHash)(nil)
	_ dispatch.BacklogUser = (*BoundedHash)(nil)
)
