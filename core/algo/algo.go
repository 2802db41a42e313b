package algo

import (
	"slices"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// free reports whether s can start c now.
func free(s *dispatch.Servant, c *dispatch.Call) bool {
	return s.Available() && s.Free() > 0 && s.Serves(c.Method)
}

// anyFree reports whether some servant has a free slot at all: when none
// has, no call can move and the algorithms stop early.
func anyFree(servants []*dispatch.Servant) bool {
	for _, s := range servants {
		if s.Available() && s.Free() > 0 {
			return true
		}
	}
	return false
}

// Orig sends the oldest waiting call to the first free servant in list
// order, as the kdb+ mserve's "orig".
type Orig struct{}

// Assign implements dispatch.Algorithm.
func (Orig) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	for ci, c := range calls {
		if !anyFree(servants) {
			return
		}
		if p.Assigned(ci) {
			continue
		}
		for si, s := range servants {
			if free(s, c) {
				p.Assign(ci, si)
				break
			}
		}
	}
}

// Even sends the oldest waiting call to the next free servant after the one
// used last, wrapping around: round robin over the free servants, as the
// kdb+ mserve's "even".
type Even struct {
	next int // where the next search starts: one past the servant used last
}

// Assign implements dispatch.Algorithm.
func (e *Even) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	n := len(servants)
	for ci, c := range calls {
		if !anyFree(servants) {
			return
		}
		if p.Assigned(ci) {
			continue
		}
		for k := range n {
			if si := (e.next + k) % n; free(servants[si], c) {
				p.Assign(ci, si)
				e.next = si + 1
				break
			}
		}
	}
}

// Least sends the oldest waiting call to the free servant with the fewest
// pending calls (in flight plus backlog). Ties go to the first such servant
// after the one used last, so equal servants share the work.
type Least struct {
	next int // where the search for ties starts: one past the servant used last
}

// Assign implements dispatch.Algorithm.
func (l *Least) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	n := len(servants)
	for ci, c := range calls {
		if !anyFree(servants) {
			return
		}
		if p.Assigned(ci) {
			continue
		}
		best, bestLoad := -1, 0
		for k := range n {
			si := (l.next + k) % n
			s := servants[si]
			if !free(s, c) {
				continue
			}
			if load := s.InFlight + s.Backlog; best < 0 || load < bestLoad {
				best, bestLoad = si, load
			}
		}
		if best >= 0 {
			p.Assign(ci, best)
			l.next = best + 1
		}
	}
}

// Match keeps calls with the same routing string on the same servant, so
// that the data they touch stays warm, with exactly the rules of the kdb+
// mserve's "match":
//
//  1. If some waiting call's routing string equals the last routing string
//     of a free servant, the first such call goes to that servant (the first
//     such servant in list order).
//  2. Otherwise the first waiting call whose routing string no servant
//     holds goes to the first free servant that was never used or has been
//     idle longer than RouteExpire.
//  3. Otherwise nothing moves until the soonest idle servant passes
//     RouteExpire (a wake-up is requested for then) or something changes.
//
// A call whose routing string is held by a busy servant waits for that
// servant, so the queue is not first in, first out. Unlike the original, a
// servant that goes away or is draining releases its routing string at once.
type Match struct {
	RouteExpire time.Duration
	held        map[string]int // routing string → available servants holding it

	// Within a round: the free servants holding each routing string, in
	// list order, so that rule 1 finds one without scanning the servants.
	// The lists' storage is kept from round to round.
	freeHolders map[string]int // routing string → index into lists
	lists       [][]int
	used        int // lists in use this round
}

// NewMatch returns a Match with the given route expiry (DefaultRouteExpire
// when expire <= 0).
func NewMatch(expire time.Duration) *Match {
	if expire <= 0 {
		expire = DefaultRouteExpire
	}
	return &Match{RouteExpire: expire, held: map[string]int{}, freeHolders: map[string]int{}}
}

// Assign implements dispatch.Algorithm.
func (m *Match) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	clear(m.held)
	clear(m.freeHolders)
	m.used = 0
	for si, s := range servants {
		if s.Available() && s.Used {
			m.held[s.LastRoute]++
			if s.Free() > 0 {
				m.addFreeHolder(s.LastRoute, si)
			}
		}
	}
	for m.sameRoute(calls, servants, p) || m.newRoute(calls, servants, p) {
	}
}

// addFreeHolder records servant si, free, as holding route (keeping the
// list in servant order).
func (m *Match) addFreeHolder(route string, si int) {
	li, ok := m.freeHolders[route]
	if !ok {
		if m.used == len(m.lists) {
			m.lists = append(m.lists, nil)
		}
		li = m.used
		m.used++
		m.lists[li] = m.lists[li][:0]
		m.freeHolders[route] = li
	}
	l := m.lists[li]
	i, _ := slices.BinarySearch(l, si)
	m.lists[li] = slices.Insert(l, i, si)
}

// dropFreeHolder forgets servant si as a free holder of route.
func (m *Match) dropFreeHolder(route string, si int) {
	li, ok := m.freeHolders[route]
	if !ok {
		return
	}
	if i, found := slices.BinarySearch(m.lists[li], si); found {
		m.lists[li] = slices.Delete(m.lists[li], i, i+1)
	}
}

// sameRoute is rule 1.
func (m *Match) sameRoute(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) bool {
	usedFree := false
	for li := range m.used {
		if len(m.lists[li]) > 0 {
			usedFree = true
			break
		}
	}
	if !usedFree {
		return false
	}
	for ci, c := range calls {
		if p.Assigned(ci) || m.held[c.Route] == 0 {
			continue
		}
		li, ok := m.freeHolders[c.Route]
		if !ok {
			continue
		}
		for _, si := range m.lists[li] {
			if s := servants[si]; free(s, c) {
				if !p.Assign(ci, si) {
					return false
				}
				if s.Free() == 0 {
					m.dropFreeHolder(c.Route, si)
				}
				return true
			}
		}
	}
	return false
}

// newRoute is rules 2 and 3. (With servants that serve different
// functions, a call no eligible servant serves is passed over for the next
// one; with identical servants this is the original's rule.)
func (m *Match) newRoute(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) bool {
	now := p.Now
	var wake time.Time
	eligible := false // some free servant is unused or past its expiry
	for _, s := range servants {
		if !s.Available() || s.Free() == 0 {
			continue
		}
		if !s.Used {
			eligible = true
			continue
		}
		if s.InFlight == 0 && s.Backlog == 0 {
			expires := s.LastUsed.Add(m.RouteExpire)
			if now.After(expires) {
				eligible = true
			} else if wake.IsZero() || expires.Before(wake) {
				wake = expires
			}
		}
	}
	if !eligible {
		if !wake.IsZero() && m.anyNewRoute(calls, p) {
			p.WakeAt(wake)
		}
		return false
	}
	for ci, c := range calls {
		if p.Assigned(ci) || m.held[c.Route] != 0 {
			continue
		}
		for si, s := range servants {
			if !free(s, c) {
				continue
			}
			if !s.Used || (s.InFlight == 0 && s.Backlog == 0 && now.After(s.LastUsed.Add(m.RouteExpire))) {
				return m.take(ci, si, servants, p)
			}
		}
	}
	return false
}

// anyNewRoute reports whether some waiting call has a routing string no
// servant holds.
func (m *Match) anyNewRoute(calls []*dispatch.Call, p *dispatch.Plan) bool {
	for ci, c := range calls {
		if !p.Assigned(ci) && m.held[c.Route] == 0 {
			return true
		}
	}
	return false
}

// take assigns call ci to servant si, moving si's claim from its old
// routing string to the call's.
func (m *Match) take(ci, si int, servants []*dispatch.Servant, p *dispatch.Plan) bool {
	s := servants[si]
	old, wasUsed := s.LastRoute, s.Used
	if !p.Assign(ci, si) {
		return false
	}
	if wasUsed {
		if m.held[old]--; m.held[old] <= 0 {
			delete(m.held, old)
		}
		m.dropFreeHolder(old, si)
	}
	m.held[s.LastRoute]++
	if s.Free() > 0 {
		m.addFreeHolder(s.LastRoute, si)
	}
	return true
}

var (
	_ dispatch.Algorithm = Orig{}
	_ dispatch.Algorithm = (*Even)(nil)
	_ dispatch.Algorithm = (*Least)(nil)
	_ dispatch.Algorithm = (*Match)(nil)
)
