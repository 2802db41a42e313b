package algo

import (
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
	holdings    dispatch.Holdings
}

// NewMatch returns a Match with the given route expiry (DefaultRouteExpire
// when expire <= 0).
func NewMatch(expire time.Duration) *Match {
	if expire <= 0 {
		expire = DefaultRouteExpire
	}
	return &Match{RouteExpire: expire}
}

// Assign implements dispatch.Algorithm.
func (m *Match) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	m.holdings.Reset(servants)
	for m.sameRoute(calls, servants, p) || m.newRoute(calls, servants, p) {
	}
}

// sameRoute is rule 1.
func (m *Match) sameRoute(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) bool {
	if !m.holdings.AnyFreeHolder() {
		return false
	}
	for ci, c := range calls {
		if p.Assigned(ci) {
			continue
		}
		if si := m.holdings.FreeHolder(servants, c); si >= 0 {
			return m.holdings.Assign(p, ci, si)
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
		if p.Assigned(ci) || m.holdings.Held(c.Route) {
			continue
		}
		for si, s := range servants {
			if !free(s, c) {
				continue
			}
			if !s.Used || (s.InFlight == 0 && s.Backlog == 0 && now.After(s.LastUsed.Add(m.RouteExpire))) {
				return m.holdings.Assign(p, ci, si)
			}
		}
	}
	return false
}

// anyNewRoute reports whether some waiting call has a routing string no
// servant holds.
func (m *Match) anyNewRoute(calls []*dispatch.Call, p *dispatch.Plan) bool {
	for ci, c := range calls {
		if !p.Assigned(ci) && !m.holdings.Held(c.Route) {
			return true
		}
	}
	return false
}

var (
	_ dispatch.Algorithm = Orig{}
	_ dispatch.Algorithm = (*Even)(nil)
	_ dispatch.Algorithm = (*Least)(nil)
	_ dispatch.Algorithm = (*Match)(nil)
)
