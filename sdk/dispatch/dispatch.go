// Package dispatch is the contract between mserve and a dispatch algorithm
// or routing function. The same contract serves algorithms built into
// mserve, written in Lua, and shipped as compiled plugins.
//
// mserve keeps calls waiting in its own queue, not in servants, so that the
// algorithm decides late, with the freshest view. Whenever calls are waiting
// and something changed (a call arrived, a slot freed, a servant came or
// went, a wake-up time passed), mserve hands the algorithm the waiting calls,
// oldest first, and the servants in list order. The algorithm records the
// calls it wants to send now with Plan.Assign; the rest keep waiting.
package dispatch

import (
	"encoding/json"
	"slices"
	"time"
)

// Call is what an algorithm or routing function sees of one call.
type Call struct {
	Method  string          // the function called
	Params  json.RawMessage // its arguments as raw JSON (an array or object), exactly as the client sent them
	Route   string          // the routing string; empty while the routing function has not run
	User    string          // the authenticated caller; empty for anonymous callers
	Arrived time.Time       // when mserve received the call
}

// Servant is what an algorithm sees of one servant. mserve owns these
// values and keeps them current; an algorithm reads them and must not
// change them except through Plan.
type Servant struct {
	Name      string          // unique name, e.g. "s1" or "gpu@10.0.0.5:7001"
	Addr      string          // host:port or URL mserve reaches it at
	Host      string          // host part of Addr
	Tags      []string        // labels from the launch configuration and the servant itself
	Slots     int             // calls it runs at once
	InFlight  int             // calls sent to it and not yet answered
	Backlog   int             // calls assigned to it that wait in mserve for one of its slots
	Used      bool            // it has been given a call since it (re)joined; LastRoute means nothing before
	LastRoute string          // routing string of the last call given to it
	LastUsed  time.Time       // when its last call finished; zero if none has
	Functions map[string]bool // the functions it serves; nil means all
	Healthy   bool            // connected and passing health checks
	Draining  bool            // taking no new calls (maintenance)
	Ejected   bool            // taken out for a while after failing or being much slower than its peers
	Latency   time.Duration   // moving average of execution time
	Served    uint64          // calls it has answered
}

// Free returns the number of free slots.
func (s *Servant) Free() int { return s.Slots - s.InFlight }

// Available reports whether the servant may be given new calls: healthy,
// not draining, not ejected.
func (s *Servant) Available() bool { return s.Healthy && !s.Draining && !s.Ejected }

// Serves reports whether the servant serves method.
func (s *Servant) Serves(method string) bool { return s.Functions == nil || s.Functions[method] }

// HasTag reports whether the servant carries tag t.
func (s *Servant) HasTag(t string) bool { return slices.Contains(s.Tags, t) }

// Assignment sends a waiting call to a servant.
type Assignment struct {
	Call    int  // index into the waiting calls
	Servant int  // index into the servants
	Backlog bool // the servant had no free slot: the call waits in its backlog
}

// Plan collects one round of decisions. It keeps the servants' view
// consistent within the round: a call assigned to a servant takes one of its
// free slots (or one place in its backlog) and becomes its LastRoute at once,
// so the next decision in the same round sees it.
type Plan struct {
	// Now is the time of this round; algorithms use it instead of the clock
	// so that decisions are reproducible.
	Now time.Time
	// MaxBacklog is how many calls a busy servant may hold waiting for its
	// slots; 0 means calls go only to free slots.
	MaxBacklog int

	calls       []*Call
	servants    []*Servant
	assigned    []bool
	assignments []Assignment
	wake        time.Time
	rejected    int
}

// Reset prepares p for a new round over calls and servants.
func (p *Plan) Reset(calls []*Call, servants []*Servant, now time.Time) {
	p.Now = now
	p.calls = calls
	p.servants = servants
	p.assignments = p.assignments[:0]
	p.wake = time.Time{}
	p.rejected = 0
	if cap(p.assigned) < len(calls) {
		p.assigned = make([]bool, len(calls), max(len(calls), 2*cap(p.assigned)))
	} else {
		p.assigned = p.assigned[:len(calls)]
		clear(p.assigned)
	}
}

// Assign sends call (an index into the waiting calls) to servant (an index
// into the servants). It reports false, and changes nothing, when either
// index is out of range, the call was already assigned in this round, the
// servant is not available or does not serve the call's method, or it has
// neither a free slot nor room in its backlog.
func (p *Plan) Assign(call, servant int) bool {
	if call < 0 || call >= len(p.calls) || servant < 0 || servant >= len(p.servants) || p.assigned[call] {
		p.rejected++
		return false
	}
	s := p.servants[servant]
	backlog := false
	switch {
	case !s.Available() || !s.Serves(p.calls[call].Method):
		p.rejected++
		return false
	case s.Free() > 0:
		s.InFlight++
	case s.Backlog < p.MaxBacklog:
		s.Backlog++
		backlog = true
	default:
		p.rejected++
		return false
	}
	s.Used = true
	s.LastRoute = p.calls[call].Route
	p.assigned[call] = true
	p.assignments = append(p.assignments, Assignment{Call: call, Servant: servant, Backlog: backlog})
	return true
}

// Assigned reports whether call was assigned in this round.
func (p *Plan) Assigned(call int) bool {
	return call >= 0 && call < len(p.assigned) && p.assigned[call]
}

// Assignments returns the decisions of this round in the order they were
// made.
func (p *Plan) Assignments() []Assignment { return p.assignments }

// Rejected returns how many Assign calls were refused in this round. A
// well-behaved algorithm never causes one; mserve counts them to spot
// faulty scripts and plugins.
func (p *Plan) Rejected() int { return p.rejected }

// WakeAt asks mserve to run another round at t even if nothing else
// happens, for algorithms that hold calls back until a time passes. The
// earliest request of a round wins.
func (p *Plan) WakeAt(t time.Time) {
	if p.wake.IsZero() || t.Before(p.wake) {
		p.wake = t
	}
}

// Wake returns the earliest time requested with WakeAt, or zero.
func (p *Plan) Wake() time.Time { return p.wake }

// CanTake reports whether servant s could be given call c now.
func (p *Plan) CanTake(s *Servant, c *Call) bool {
	return s.Available() && s.Serves(c.Method) && (s.Free() > 0 || s.Backlog < p.MaxBacklog)
}

// Algorithm decides which waiting calls go to which servants.
//
// Assign is called with the waiting calls, oldest first, and all servants in
// list order (including unavailable ones, which Plan refuses). It records its
// decisions in p and returns; calls it does not assign keep waiting for the
// next round. It runs while mserve holds its dispatch lock, so it must be
// quick and must not block.
type Algorithm interface {
	Assign(calls []*Call, servants []*Servant, p *Plan)
}

// AlgorithmFunc adapts a function to Algorithm.
type AlgorithmFunc func(calls []*Call, servants []*Servant, p *Plan)

// Assign calls f.
func (f AlgorithmFunc) Assign(calls []*Call, servants []*Servant, p *Plan) { f(calls, servants, p) }

// BacklogUser is implemented by algorithms that assign calls to busy
// servants. BacklogLimit returns how many calls a servant may hold waiting
// for its slots; mserve uses it as Plan.MaxBacklog.
type BacklogUser interface {
	BacklogLimit() int
}

// Observer is implemented by algorithms that learn from results. mserve
// calls Done under its dispatch lock when servant answers call, with the
// execution time measured by mserve and whether the call succeeded.
// Identify the servant by its Name: servants join and leave, so its index
// in the next round's list may differ.
type Observer interface {
	Done(call *Call, servant *Servant, execution time.Duration, ok bool)
}

// Waker is implemented by algorithms that decide asynchronously, such as
// compiled plugins: a round may end with calls left waiting while the
// decision is worked out elsewhere. mserve gives the algorithm a function
// that starts a new round; the algorithm calls it when its decisions are
// ready, and applies them in that round. The function is safe to call from
// any goroutine.
type Waker interface {
	SetWaker(wake func())
}

// Router derives a call's routing string, the key locality-seeking
// algorithms group calls by.
type Router interface {
	Route(c *Call) (string, error)
}

// RouterFunc adapts a function to Router.
type RouterFunc func(c *Call) (string, error)

// Route calls f.
func (f RouterFunc) Route(c *Call) (string, error) { return f(c) }
