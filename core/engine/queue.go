package engine

import "github.com/mserve/mserve/sdk/dispatch"

// queue holds the waiting calls oldest first, with a parallel slice of the
// views algorithms see, so that a round passes them without copying.
type queue struct {
	calls []*Call
	views []*dispatch.Call
}

func (q *queue) len() int { return len(q.calls) }

func (q *queue) push(c *Call) {
	q.calls = append(q.calls, c)
	q.views = append(q.views, &c.Call)
}

// pushFront puts calls back at the head, keeping their order: calls taken
// back from a servant are older than anything that arrived since.
func (q *queue) pushFront(cs []*Call) {
	if len(cs) == 0 {
		return
	}
	calls := make([]*Call, 0, len(cs)+len(q.calls))
	views := make([]*dispatch.Call, 0, cap(calls))
	for _, c := range cs {
		calls = append(calls, c)
		views = append(views, &c.Call)
	}
	q.calls = append(calls, q.calls...)
	q.views = append(views, q.views...)
}

// removeAssigned drops the calls p assigned. The common case, a prefix, is
// O(assigned); anything else is one compaction pass.
func (q *queue) removeAssigned(p *dispatch.Plan) {
	n := 0
	for n < len(q.calls) && p.Assigned(n) {
		n++
	}
	if n == len(p.Assignments()) {
		q.dropPrefix(n)
		return
	}
	j := 0
	for i, c := range q.calls {
		if !p.Assigned(i) {
			q.calls[j], q.views[j] = c, q.views[i]
			j++
		}
	}
	q.truncate(j)
}

func (q *queue) dropPrefix(n int) {
	if n == len(q.calls) { // keep the array for reuse from its start
		q.truncate(0)
		return
	}
	clear(q.calls[:n])
	clear(q.views[:n])
	q.calls, q.views = q.calls[n:], q.views[n:]
}

func (q *queue) truncate(n int) {
	clear(q.calls[n:])
	clear(q.views[n:])
	q.calls, q.views = q.calls[:n], q.views[:n]
}

// remove takes c out of the queue and reports whether it was there. Calls
// leave mostly from the head (oldest first), so the search starts there.
func (q *queue) remove(c *Call) bool {
	for i, x := range q.calls {
		if x == c {
			copy(q.calls[i:], q.calls[i+1:])
			copy(q.views[i:], q.views[i+1:])
			q.truncate(len(q.calls) - 1)
			return true
		}
	}
	return false
}
