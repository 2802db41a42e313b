package dispatch

import "slices"

// Holdings indexes, for one round, which servants hold which routing
// strings: an available servant that has been used holds its LastRoute.
// Locality algorithms (the built-in match, scripts through plan.held and
// plan.free_holder) ask it whether a routing string is held and which free
// servant holds it without scanning the servants.
//
// Reset builds the index from the round's servants; the algorithm then
// assigns through Assign rather than Plan.Assign, so that the index follows
// the plan. The zero value is ready for Reset. Storage is kept from
// round to round, so a round allocates only for routing strings it has not
// seen before.
type Holdings struct {
	held map[string]int // routing string → available servants holding it

	// The free servants holding each routing string, in list order.
	freeHolders map[string]int // routing string → index into lists
	lists       [][]int
	used        int // lists in use this round
}

// Reset rebuilds the index for a round over servants.
func (h *Holdings) Reset(servants []*Servant) {
	if h.held == nil {
		h.held, h.freeHolders = map[string]int{}, map[string]int{}
	}
	clear(h.held)
	clear(h.freeHolders)
	h.used = 0
	for si, s := range servants {
		if s.Available() && s.Used {
			h.held[s.LastRoute]++
			if s.Free() > 0 {
				h.addFreeHolder(s.LastRoute, si)
			}
		}
	}
}

// Held reports whether some available servant holds route.
func (h *Holdings) Held(route string) bool { return h.held[route] > 0 }

// AnyFreeHolder reports whether some free, available servant holds a
// routing string at all; when none does, no call can go to a servant that
// last ran its routing string.
func (h *Holdings) AnyFreeHolder() bool {
	for li := range h.used {
		if len(h.lists[li]) > 0 {
			return true
		}
	}
	return false
}

// FreeHolder returns the index of the first servant, in list order, that
// holds c's routing string, has a free slot and serves c's method; -1 when
// there is none.
func (h *Holdings) FreeHolder(servants []*Servant, c *Call) int {
	li, ok := h.freeHolders[c.Route]
	if !ok {
		return -1
	}
	for _, si := range h.lists[li] {
		if s := servants[si]; s.Available() && s.Free() > 0 && s.Serves(c.Method) {
			return si
		}
	}
	return -1
}

// Assign is p.Assign(ci, si), and when it succeeds records that servant
// si now holds the call's routing string. p must be the round's plan over
// the servants given to Reset.
func (h *Holdings) Assign(p *Plan, ci, si int) bool {
	var old string
	wasUsed := false
	if si >= 0 && si < len(p.servants) {
		old, wasUsed = p.servants[si].LastRoute, p.servants[si].Used
	}
	if !p.Assign(ci, si) {
		return false
	}
	h.took(p.servants[si], si, old, wasUsed)
	return true
}

// took records that s, servant si, was just given a call: it now holds the
// call's routing string (its LastRoute), and held old before if wasUsed.
func (h *Holdings) took(s *Servant, si int, old string, wasUsed bool) {
	if wasUsed && old == s.LastRoute {
		if s.Free() == 0 {
			h.dropFreeHolder(old, si)
		}
		return
	}
	if wasUsed {
		if h.held[old]--; h.held[old] <= 0 {
			delete(h.held, old)
		}
		h.dropFreeHolder(old, si)
	}
	h.held[s.LastRoute]++
	if s.Free() > 0 {
		h.addFreeHolder(s.LastRoute, si)
	}
}

// addFreeHolder records servant si, free, as holding route (keeping the
// list in servant order).
func (h *Holdings) addFreeHolder(route string, si int) {
	li, ok := h.freeHolders[route]
	if !ok {
		if h.used == len(h.lists) {
			h.lists = append(h.lists, nil)
		}
		li = h.used
		h.used++
		h.lists[li] = h.lists[li][:0]
		h.freeHolders[route] = li
	}
	l := h.lists[li]
	i, found := slices.BinarySearch(l, si)
	if !found {
		h.lists[li] = slices.Insert(l, i, si)
	}
}

// dropFreeHolder forgets servant si as a free holder of route.
func (h *Holdings) dropFreeHolder(route string, si int) {
	li, ok := h.freeHolders[route]
	if !ok {
		return
	}
	if i, found := slices.BinarySearch(h.lists[li], si); found {
		h.lists[li] = slices.Delete(h.lists[li], i, i+1)
	}
}
