package algo

import (
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// DefaultWarmKeys is how many routing strings warm remembers per servant
// when Config.WarmKeys is 0.
const DefaultWarmKeys = 64

// DefaultWarmHot is the share of recent calls above which a routing string
// counts as hot in warm when Config.WarmHot is 0.
const DefaultWarmHot = 0.02

// DefaultWarmPatience is how long a call waits for a warm servant before
// warm places it first.
const DefaultWarmPatience = 50 * time.Millisecond

// Warm keeps each routing string on servants whose caches are likely to
// hold its data. It models each servant's cache as the last Keys distinct
// routing strings it was given (least recently used first out, as servants'
// own caches commonly are; match is the case of one string per servant). A
// servant holds the strings in its model. A routing string is hot when it
// took at least the share Hot of the last Keys × servants calls. Each
// round:
//
//  1. A call that has waited Patience or longer is placed first, oldest
//     first: on a free servant that holds its routing string, else on the
//     free servant with the fewest pending calls.
//  2. Each free servant that holds some waiting call's routing string
//     takes the oldest such call (the one with the fewest pending calls,
//     if several free servants hold it), before any call that would be
//     cold there.
//  3. Each call left, oldest first, waits for a busy servant that holds
//     its routing string (the one with the fewest calls waiting for it),
//     unless its string is hot and every holder already has as many
//     calls waiting as slots; a call that does not wait goes to the free
//     servant with the fewest pending calls (counting the calls waiting
//     for it), which from now on holds its routing string, forgetting its
//     least recently used one.
//
// So a hot string spreads over as many servants as it keeps busy, while
// the rest stay where they are warm and never take a second servant's
// cache space (patience bounds their wait): a hot key does not flood its
// servant, and nothing waits for a servant that is down. A servant that
// rejoins (Used false again) starts cold.
type Warm struct {
	Keys     int           // routing strings remembered per servant
	Hot      float64       // share of recent calls that makes a routing string hot
	Patience time.Duration // a call waiting this long is placed first, warm or not

	caches  map[string]*warmCache   // by servant name
	holders map[string][]*warmCache // routing string → the caches holding it
	tick    uint64

	// Within a round, reused from round to round.
	round   uint64       // rounds so far; a cache with seen == round is in this one
	bySlot  []*warmCache // the cache of each servant, by position
	waiting []int        // calls waiting for each servant (step 3)
	next    int          // where the search for the least loaded starts: one past the last chosen
	free    int          // available servants with a free slot

	// The routing strings of the last Keys × servants calls assigned, and
	// how many calls each has among them.
	recent []string
	head   int
	counts map[string]int
}

// warmCache is what warm believes one servant's cache holds.
type warmCache struct {
	name string
	last map[string]uint64 // routing string → tick of its last call there
	pos  int               // its servant's position in the round it was last seen
	seen uint64            // that round
}

// NewWarm returns a Warm remembering keys routing strings per servant
// (DefaultWarmKeys when keys <= 0) for which a share hot of the recent
// calls is hot (DefaultWarmHot when hot <= 0).
func NewWarm(keys int, hot float64) *Warm {
	if keys <= 0 {
		keys = DefaultWarmKeys
	}
	if hot <= 0 {
		hot = DefaultWarmHot
	}
	return &Warm{Keys: keys, Hot: hot, Patience: DefaultWarmPatience, counts: map[string]int{}, caches: map[string]*warmCache{}, holders: map[string][]*warmCache{}}
}

// Assign implements dispatch.Algorithm.
func (w *Warm) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	w.begin(servants)
	if w.free == 0 {
		return
	}
	// 1. Calls that have waited their patience out go first, warm or not.
	for ci, c := range calls {
		if !p.Assigned(ci) && p.Now.Sub(c.Arrived) >= w.Patience {
			if w.free == 0 {
				return
			}
			if si := w.freeHolder(c, servants); si >= 0 {
				w.take(ci, si, c, servants, p)
			} else if si := w.leastLoaded(c, servants); si >= 0 {
				w.take(ci, si, c, servants, p)
			}
		}
	}
	// 2. Every free servant takes the oldest call it is warm for, before
	// any call that would be cold there.
	for ci, c := range calls {
		if p.Assigned(ci) {
			continue
		}
		if w.free == 0 {
			return
		}
		if si := w.freeHolder(c, servants); si >= 0 {
			w.take(ci, si, c, servants, p)
		}
	}
	// 3. The rest wait for a busy holder or go cold.
	for ci, c := range calls {
		if p.Assigned(ci) {
			continue
		}
		if w.free == 0 {
			return
		}
		if si := w.busyHolder(c, servants); si >= 0 {
			w.waiting[si]++
			continue
		}
		if si := w.leastLoaded(c, servants); si >= 0 {
			w.take(ci, si, c, servants, p)
		}
	}
}

// freeHolder is the free servant holding c's routing string with the
// fewest pending calls, or -1.
func (w *Warm) freeHolder(c *dispatch.Call, servants []*dispatch.Servant) int {
	best := -1
	for _, h := range w.holders[c.Route] {
		if si, ok := w.position(h); ok && free(servants[si], c) && (best < 0 || w.load(servants, si) < w.load(servants, best)) {
			best = si
		}
	}
	return best
}

// busyHolder is the busy servant holding c's routing string that c waits
// for (step 3: the one with the fewest calls waiting), or -1 when c does
// not wait.
func (w *Warm) busyHolder(c *dispatch.Call, servants []*dispatch.Servant) int {
	best, hot := -1, w.hot(c.Route)
	for _, h := range w.holders[c.Route] {
		si, ok := w.position(h)
		if !ok {
			continue
		}
		s := servants[si]
		if s.Available() && s.Serves(c.Method) && (!hot || w.waiting[si] < s.Slots) && (best < 0 || w.waiting[si] < w.waiting[best]) {
			best = si
		}
	}
	return best
}

// hot reports whether route took at least the share Hot of the recent
// calls.
func (w *Warm) hot(route string) bool {
	return float64(w.counts[route]) >= w.Hot*float64(len(w.recent))
}

// count records a call assigned for route among the recent calls.
func (w *Warm) count(route string) {
	if size := max(w.Keys*len(w.bySlot), 64); len(w.recent) < size {
		w.recent = append(w.recent, route)
	} else {
		w.head %= len(w.recent)
		old := w.recent[w.head]
		if w.counts[old]--; w.counts[old] <= 0 {
			delete(w.counts, old)
		}
		w.recent[w.head] = route
		w.head++
	}
	w.counts[route]++
}

// leastLoaded is the free servant with the fewest pending calls (ties to
// the first after the one chosen last), or -1.
func (w *Warm) leastLoaded(c *dispatch.Call, servants []*dispatch.Servant) int {
	best, n := -1, len(servants)
	for k := range n {
		si := (w.next + k) % n
		if free(servants[si], c) && (best < 0 || w.load(servants, si) < w.load(servants, best)) {
			best = si
		}
	}
	if best >= 0 {
		w.next = best + 1
	}
	return best
}

// begin matches the caches to this round's servants: a servant seen for
// the first time, or rejoined, starts with an empty cache.
func (w *Warm) begin(servants []*dispatch.Servant) {
	w.round++
	w.waiting = w.waiting[:0]
	w.free = 0
	for si, s := range servants {
		if s.Available() && s.Free() > 0 {
			w.free++
		}
		var wc *warmCache
		if si < len(w.bySlot) && w.bySlot[si].name == s.Name {
			wc = w.bySlot[si] // the same servant as last round, as usual
		} else if wc = w.caches[s.Name]; wc == nil {
			wc = &warmCache{name: s.Name, last: map[string]uint64{}}
			w.caches[s.Name] = wc
		}
		if !s.Used && len(wc.last) > 0 {
			w.forgetAll(wc)
		}
		wc.pos, wc.seen = si, w.round
		if si < len(w.bySlot) {
			w.bySlot[si] = wc
		} else {
			w.bySlot = append(w.bySlot, wc)
		}
		w.waiting = append(w.waiting, 0)
	}
	w.bySlot = w.bySlot[:len(servants)]
	if len(w.caches) > 2*len(servants)+16 { // servants that left
		for name, wc := range w.caches {
			if wc.seen != w.round {
				w.forgetAll(wc)
				delete(w.caches, name)
			}
		}
	}
}

// position returns h's servant's position in this round, or false when
// that servant is not in it.
func (w *Warm) position(h *warmCache) (int, bool) { return h.pos, h.seen == w.round }

// load is a servant's pending calls, counting those waiting for it.
func (w *Warm) load(servants []*dispatch.Servant, si int) int {
	s := servants[si]
	return s.InFlight + s.Backlog + w.waiting[si]
}

// take assigns call ci to servant si, which now holds c's routing string.
func (w *Warm) take(ci, si int, c *dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	if !p.Assign(ci, si) {
		return
	}
	if servants[si].Free() == 0 {
		w.free--
	}
	w.count(c.Route)
	wc := w.bySlot[si]
	w.tick++
	if _, ok := wc.last[c.Route]; !ok {
		if len(wc.last) >= w.Keys {
			w.evictOldest(wc)
		}
		w.holders[c.Route] = append(w.holders[c.Route], wc)
	}
	wc.last[c.Route] = w.tick
}

// evictOldest forgets wc's least recently used routing string.
func (w *Warm) evictOldest(wc *warmCache) {
	var oldest string
	var at uint64
	first := true
	for route, t := range wc.last {
		if first || t < at {
			oldest, at, first = route, t, false
		}
	}
	if !first {
		w.forget(wc, oldest)
	}
}

// forget removes route from wc and from the holders index.
func (w *Warm) forget(wc *warmCache, route string) {
	delete(wc.last, route)
	hs := w.holders[route]
	for i, h := range hs {
		if h == wc {
			hs[i] = hs[len(hs)-1]
			hs = hs[:len(hs)-1]
			break
		}
	}
	if len(hs) == 0 {
		delete(w.holders, route)
	} else {
		w.holders[route] = hs
	}
}

// forgetAll empties wc.
func (w *Warm) forgetAll(wc *warmCache) {
	for route := range wc.last {
		w.forget(wc, route)
	}
}

var _ dispatch.Algorithm = (*Warm)(nil)
