// Package engine is mserve's dispatch core: the queue of waiting calls, the
// servants' slots and backlogs, the rounds in which the dispatch algorithm
// assigns calls to servants, and the guarantee that every call gets exactly
// one answer.
//
// Front ends hand calls to Submit; servant links report results with
// Servant.Done and failures with Servant.Down. The engine holds one mutex
// for its state and never holds it across I/O or while answering a call.
package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Transport carries calls to one servant.
type Transport interface {
	// Send writes c's request to the servant without blocking on I/O; with
	// a non-nil f the write may be deferred until f is flushed. It fails
	// only when the link is down, in which case nothing was written and
	// the link has already reported (or is about to report) Down. After a
	// successful Send the link reports c exactly once, through
	// Servant.Done or in the lost calls of Servant.Down.
	Send(c *Call, f *wire.Flusher) error
	// Cancel tells the servant, best effort, that nobody waits for c any
	// more. The call stays on the servant until it answers.
	Cancel(c *Call)
}

// Config sets up an Engine.
type Config struct {
	Algorithm dispatch.Algorithm // decides where calls go (required)
	Router    dispatch.Router    // derives routing strings; nil leaves them empty
	Timeout   time.Duration      // default deadline per call; 0 means none
	MaxQueue  int                // calls waiting (queue plus backlogs) before new ones are refused as overloaded; 0 means DefaultMaxQueue
	// MaxAttempts bounds how many servants an idempotent call is sent to
	// when they are lost under it; 0 means DefaultMaxAttempts.
	MaxAttempts int
	// Ejection of outliers: a servant whose last EjectAfter calls failed
	// (internal errors, timeouts on it, lost) or whose latency passes
	// EjectSlower times its peers' average is taken out of dispatch for
	// EjectFor (longer each time), but never more than half the servants.
	// Zero EjectAfter and EjectSlower turn each rule off.
	EjectAfter  int
	EjectSlower float64
	EjectFor    time.Duration
	// Record, when set, sees every call's answer after its caller did (for
	// metrics and the query log). It runs on the answering goroutine, with
	// no lock held, and must be quick; a's byte slices are valid only
	// during the call.
	Record func(c *Call, a *Answer, answeredAt time.Time)
	// Unserved makes the error for a call to a function no servant serves
	// (every servant has said what it serves, and none named it); nil
	// answers "method not found".
	Unserved func(method string) *jsonrpc.Error
	Log      *zap.Logger      // nil means no logging
	Now      func() time.Time // clock; nil means time.Now
}

// DefaultMaxQueue is the queue bound when Config.MaxQueue is 0.
const DefaultMaxQueue = 100_000

// DefaultMaxAttempts is Config.MaxAttempts when 0.
const DefaultMaxAttempts = 3

// DefaultEjectFor is Config.EjectFor when 0.
const DefaultEjectFor = 30 * time.Second

// Engine is the dispatch core. Create it with New.
type Engine struct {
	record      func(c *Call, a *Answer, at time.Time)
	unserved    func(method string) *jsonrpc.Error
	maxAttempts int
	ejectAfter  int
	ejectSlower float64
	ejectFor    time.Duration
	router      atomic.Pointer[routerBox]
	timeout     time.Duration
	maxQueue    int
	log         *zap.Logger
	now         func() time.Time

	mu         sync.Mutex
	algo       dispatch.Algorithm
	observer   dispatch.Observer
	maxBacklog int
	servants   []*Servant
	views      []*dispatch.Servant
	q          queue
	plan       dispatch.Plan
	queued     int // waiting in the queue or in a servant's backlog
	running    int // sent to a servant and not yet back
	seq        uint64
	closed     bool
	drained    chan struct{} // closed when closed and every call taken in has been answered
	closing    atomic.Bool   // closed, readable without the lock
	inside     atomic.Int64  // calls taken in and not yet answered
	ejected    int           // servants ejected now
	wakeTimer  *time.Timer
	wakeAt     time.Time

	stats counters
}

// New returns an engine with no servants.
func New(cfg Config) *Engine {
	e := &Engine{
		record:      cfg.Record,
		unserved:    cfg.Unserved,
		maxAttempts: cfg.MaxAttempts,
		ejectAfter:  cfg.EjectAfter,
		ejectSlower: cfg.EjectSlower,
		ejectFor:    cfg.EjectFor,
		timeout:     cfg.Timeout,
		maxQueue:    cfg.MaxQueue,
		log:         cfg.Log,
		now:         cfg.Now,
	}
	if e.maxQueue <= 0 {
		e.maxQueue = DefaultMaxQueue
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.maxAttempts <= 0 {
		e.maxAttempts = DefaultMaxAttempts
	}
	if e.ejectFor <= 0 {
		e.ejectFor = DefaultEjectFor
	}
	if e.unserved == nil {
		e.unserved = func(method string) *jsonrpc.Error {
			return jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found: no servant serves %q", method)
		}
	}
	e.setAlgorithm(cfg.Algorithm)
	e.router.Store(&routerBox{cfg.Router})
	return e
}

// routerBox holds the routing function (nil: none) for atomic swaps.
type routerBox struct{ dispatch.Router }

// SetRouter switches the routing function for calls arriving from now on;
// nil leaves routing strings empty.
func (e *Engine) SetRouter(r dispatch.Router) { e.router.Store(&routerBox{r}) }

func (e *Engine) setAlgorithm(a dispatch.Algorithm) {
	e.algo = a
	if w, ok := a.(dispatch.Waker); ok {
		w.SetWaker(e.wake)
	}
	e.observer, _ = a.(dispatch.Observer)
	e.maxBacklog = 0
	if b, ok := a.(dispatch.BacklogUser); ok {
		e.maxBacklog = b.BacklogLimit()
	}
}

// SetAlgorithm switches to algorithm a for the next round. Calls already
// assigned stay where they are.
func (e *Engine) SetAlgorithm(a dispatch.Algorithm) {
	e.mu.Lock()
	e.setAlgorithm(a)
	sends := e.round(nil, e.now())
	e.mu.Unlock()
	e.send(sends, nil)
}

// Submit takes c into the engine. The engine answers it exactly once through
// c.Reply: with the servant's result, or with a precise error (overloaded,
// timeout, servant lost, shutting down, cancelled).
func (e *Engine) Submit(c *Call) { e.SubmitLater(c, nil) }

// SubmitLater is Submit for a front end working through a burst of
// requests: the writes it causes (the call sent to a servant, or an
// immediate answer) may be deferred until f is flushed. f is used only
// during the call.
func (e *Engine) SubmitLater(c *Call, f *wire.Flusher) {
	c.engine = e
	now := e.now()
	c.Arrived = now
	if router := e.router.Load().Router; c.Route == "" && router != nil {
		if r, err := router.Route(&c.Call); err == nil {
			c.Route = r
		} else {
			e.stats.routeErrors.Add(1)
			if ce := e.log.Check(zap.DebugLevel, "routing function failed; using the empty routing string"); ce != nil {
				ce.Write(zap.String("method", c.Method), zap.Error(err))
			}
		}
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = e.timeout
	}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		c.answer(&Answer{Err: errShuttingDown, Flusher: f})
		return
	}
	if e.queued >= e.maxQueue {
		n := e.queued
		e.mu.Unlock()
		c.answer(&Answer{Err: jsonrpc.Errorf(jsonrpc.Overloaded,
			"overloaded: %d calls are already waiting (the limit); retry later", n), Flusher: f})
		return
	}
	if !e.servable(c.Method) {
		e.mu.Unlock()
		c.answer(&Answer{Err: e.unserved(c.Method), Flusher: f})
		return
	}
	e.seq++
	c.seq = e.seq
	c.counted = true
	e.inside.Add(1)
	c.backlog = e.queued + e.running
	c.where = waiting
	c.Timeout = timeout
	e.q.push(c)
	e.queued++
	if timeout > 0 {
		c.timer = time.AfterFunc(timeout, c.expire)
	}
	var buf [4]*Call
	sends := e.round(buf[:0], now)
	e.mu.Unlock()
	e.send(sends, f)
}

var errShuttingDown = jsonrpc.Errorf(jsonrpc.ShuttingDown, "mserve is shutting down and takes no new calls")

// expire answers c "timeout" if it is still unanswered.
func (c *Call) expire() {
	c.engine.abandon(c, func(where where, s *Servant) *jsonrpc.Error {
		switch where {
		case running:
			return jsonrpc.Errorf(jsonrpc.Timeout,
				"timeout: servant %s did not answer within %v; its late result will be discarded", s.view.Name, c.Timeout)
		case backlog:
			return jsonrpc.Errorf(jsonrpc.Timeout,
				"timeout: the call waited %v for a slot on servant %s", c.Timeout, s.view.Name)
		}
		return jsonrpc.Errorf(jsonrpc.Timeout,
			"timeout: the call waited %v in the queue and no servant took it (%s)", c.Timeout, c.engine.availability())
	})
}

// Cancel answers c "cancelled" if it is still unanswered: its caller went
// away or asked to stop. A call already running stays on its servant, which
// is told to abandon it.
func (e *Engine) Cancel(c *Call, reason string) {
	e.abandon(c, func(where, *Servant) *jsonrpc.Error {
		return jsonrpc.Errorf(jsonrpc.Cancelled, "cancelled: %s", reason)
	})
}

// abandon answers c with the error made by mkErr, wherever c is. A waiting
// call leaves the queue; a running one keeps its slot until the servant
// answers, and the servant is told to stop. mkErr runs under e.mu.
func (e *Engine) abandon(c *Call, mkErr func(where, *Servant) *jsonrpc.Error) {
	if c.engine == nil {
		return
	}
	now := e.now()
	e.mu.Lock()
	w, s := c.where, c.servant
	switch w {
	case waiting:
		e.q.remove(c)
		e.queued--
		c.where = nowhere
	case backlog:
		s.removeBacklog(c)
		e.queued--
		c.where = nowhere
	case running:
		c.where = answered
	default:
		e.mu.Unlock()
		return
	}
	err := mkErr(w, s)
	if w == running && err.Code == jsonrpc.Timeout {
		s.failure(now)
	}
	a := Answer{Err: err, Elapsed: now.Sub(c.Arrived), Remaining: e.queued + e.running}
	if w == running {
		a.Servant, a.Execution = s.view.Name, now.Sub(c.sentAt)
	}
	e.mu.Unlock()
	if w == running {
		s.t.Cancel(c)
	}
	c.answer(&a)
}

// servable reports whether some servant serves method, or may (it has not
// said what it serves, or there is no servant yet: one may join). Caller
// holds e.mu.
func (e *Engine) servable(method string) bool {
	if len(e.views) == 0 {
		return true
	}
	for _, v := range e.views {
		if v.Serves(method) {
			return true
		}
	}
	return false
}

// dropUnservable takes out of the queue the calls no servant serves, after
// servants said what they serve; the caller answers them. Caller holds
// e.mu.
func (e *Engine) dropUnservable() []*Call {
	var out []*Call
	for _, c := range e.q.calls {
		if !e.servable(c.Method) {
			out = append(out, c)
		}
	}
	for _, c := range out {
		e.q.remove(c)
		e.queued--
		c.where = nowhere
	}
	return out
}

// availability describes the servants for an error message. Caller holds
// e.mu.
func (e *Engine) availability() string {
	healthy := 0
	for _, v := range e.views {
		if v.Available() {
			healthy++
		}
	}
	if len(e.views) == 0 {
		return "no servants are configured"
	}
	return fmt.Sprintf("%d of %d servants available", healthy, len(e.views))
}

// round runs the algorithm over the waiting calls and applies its plan.
// Calls to send now are appended to sends. Caller holds e.mu.
func (e *Engine) round(sends []*Call, now time.Time) []*Call {
	if e.ejected > 0 {
		e.readmit(now)
	}
	if e.q.len() == 0 || !e.hasCapacity() {
		return sends
	}
	e.plan.Reset(e.q.views, e.views, now)
	e.plan.MaxBacklog = e.maxBacklog
	e.algo.Assign(e.q.views, e.views, &e.plan)
	if as := e.plan.Assignments(); len(as) > 0 {
		for _, a := range as {
			c, s := e.q.calls[a.Call], e.servants[a.Servant]
			c.servant = s
			if a.Backlog {
				c.where = backlog
				s.backlog = append(s.backlog, c)
				continue
			}
			c.where = running
			c.sentAt = now
			c.attempts++
			s.addRun(c)
			e.queued--
			e.running++
			sends = append(sends, c)
		}
		e.q.removeAssigned(&e.plan)
	}
	if r := e.plan.Rejected(); r > 0 {
		e.stats.rejected.Add(uint64(r))
	}
	if w := e.plan.Wake(); !w.IsZero() {
		e.scheduleWake(w, now)
	}
	return sends
}

// hasCapacity reports whether any servant could take a call now.
func (e *Engine) hasCapacity() bool {
	for _, v := range e.views {
		if v.Available() && (v.Free() > 0 || v.Backlog < e.maxBacklog) {
			return true
		}
	}
	return false
}

func (e *Engine) scheduleWake(at, now time.Time) {
	if !e.wakeAt.IsZero() && !at.Before(e.wakeAt) {
		return
	}
	e.wakeAt = at
	d := at.Sub(now)
	if e.wakeTimer == nil {
		e.wakeTimer = time.AfterFunc(d, e.wake)
	} else {
		e.wakeTimer.Reset(d)
	}
}

// kick runs a round now, for a change made outside a round (a servant
// taken out of dispatch moves its waiting calls to others).
func (e *Engine) kick() {
	e.mu.Lock()
	sends := e.round(nil, e.now())
	e.mu.Unlock()
	e.send(sends, nil)
}

func (e *Engine) wake() {
	e.mu.Lock()
	e.wakeAt = time.Time{}
	sends := e.round(nil, e.now())
	e.mu.Unlock()
	e.send(sends, nil)
}

// send hands calls to their servants' links, outside the lock. A call whose
// link turns out to be down goes back to the head of the queue.
func (e *Engine) send(sends []*Call, f *wire.Flusher) {
	for len(sends) > 0 {
		var retry []*Call
		for _, c := range sends {
			if err := c.servant.t.Send(c, f); err != nil {
				retry = e.sendFailed(c, retry)
			}
		}
		sends = retry
	}
}

// sendFailed undoes c's dispatch after its link refused it.
func (e *Engine) sendFailed(c *Call, sends []*Call) []*Call {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := c.servant
	s.view.InFlight--
	s.unrun(c)
	e.running--
	switch c.where {
	case running:
		e.requeue([]*Call{c})
	case answered: // timed out or cancelled meanwhile: nothing left to do
		c.where = nowhere
	}
	c.attempts--
	if s.connected {
		// The link has not reported Down yet; it will, and that runs a
		// round. Running one now would pick the same servant again.
		return sends
	}
	return e.round(sends, e.now())
}

// Close stops taking new calls: Submit answers "shutting down" from now on.
// Calls already inside keep going; use Drain to wait for them.
func (e *Engine) Close() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		e.drained = make(chan struct{})
		e.closing.Store(true)
	}
	e.mu.Unlock()
	if e.inside.Load() == 0 {
		e.signalDrained()
	}
}

// signalDrained closes e.drained: every call taken in has been answered.
func (e *Engine) signalDrained() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.drained == nil {
		return
	}
	select {
	case <-e.drained:
	default:
		close(e.drained)
	}
}

// answered notes that a call taken in has had its answer delivered.
func (e *Engine) answered() {
	if e.inside.Add(-1) == 0 && e.closing.Load() {
		e.signalDrained()
	}
}

// Drain closes the engine and waits until every call inside it has been
// answered, or ctx ends; then it answers whatever is left "shutting down"
// and returns ctx's error.
func (e *Engine) Drain(ctx context.Context) error {
	e.Close()
	select {
	case <-e.drained:
		return nil
	case <-ctx.Done():
	}
	now := e.now()
	e.mu.Lock()
	var left []*Call
	left = append(left, e.q.calls...)
	e.q.truncate(0)
	for _, s := range e.servants {
		left = append(left, s.backlog...)
		s.view.Backlog = 0
		s.backlog = nil
		left = append(left, s.running()...)
	}
	for _, c := range left {
		switch c.where {
		case waiting, backlog:
			e.queued--
			c.where = nowhere
		case running:
			c.where = answered // its slot is freed when the servant answers or is lost
		}
	}
	e.mu.Unlock()
	for _, c := range left {
		c.answer(&Answer{Err: jsonrpc.Errorf(jsonrpc.ShuttingDown,
			"mserve is shutting down and the grace period ended before this call finished"),
			Elapsed: now.Sub(c.Arrived)})
	}
	return ctx.Err()
}

// counters are the engine's running totals.
type counters struct {
	submitted, ok, servantErrors, timeouts, lost, overloaded, cancelled, other atomic.Uint64
	rejected, routeErrors, redispatched, ejections                             atomic.Uint64
}

func (e *Engine) count(a *Answer) {
	e.stats.submitted.Add(1)
	switch {
	case a.Err == nil && a.ServantErr == nil:
		e.stats.ok.Add(1)
	case a.Err == nil:
		e.stats.servantErrors.Add(1)
	case a.Err.Code == jsonrpc.Timeout:
		e.stats.timeouts.Add(1)
	case a.Err.Code == jsonrpc.ServantLost:
		e.stats.lost.Add(1)
	case a.Err.Code == jsonrpc.Overloaded:
		e.stats.overloaded.Add(1)
	case a.Err.Code == jsonrpc.Cancelled:
		e.stats.cancelled.Add(1)
	default:
		e.stats.other.Add(1)
	}
}

// Stats is a snapshot of the engine's state and totals.
type Stats struct {
	Queued, Running int                // calls waiting (queue and backlogs) and running now
	Answered        uint64             // calls answered in total
	OK              uint64             // … with a result
	ServantErrors   uint64             // … with the servant's own error
	Timeouts        uint64             // … "timeout"
	Lost            uint64             // … "servant lost"
	Overloaded      uint64             // … "overloaded"
	Cancelled       uint64             // … "cancelled"
	Other           uint64             // … any other error from mserve
	Rejected        uint64             // assignments the algorithm made that the plan refused
	RouteErrors     uint64             // calls whose routing function failed
	Redispatched    uint64             // idempotent calls sent to another servant after theirs was lost
	Ejections       uint64             // times a servant was ejected as an outlier
	Servants        []dispatch.Servant // a copy of each servant's view
}

// Stats returns a snapshot.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	st := Stats{Queued: e.queued, Running: e.running, Servants: make([]dispatch.Servant, len(e.views))}
	for i, v := range e.views {
		st.Servants[i] = *v
		st.Servants[i].Tags = append([]string(nil), v.Tags...)
	}
	e.mu.Unlock()
	st.Answered = e.stats.submitted.Load()
	st.OK, st.ServantErrors = e.stats.ok.Load(), e.stats.servantErrors.Load()
	st.Timeouts, st.Lost = e.stats.timeouts.Load(), e.stats.lost.Load()
	st.Overloaded, st.Cancelled, st.Other = e.stats.overloaded.Load(), e.stats.cancelled.Load(), e.stats.other.Load()
	st.Rejected, st.RouteErrors = e.stats.rejected.Load(), e.stats.routeErrors.Load()
	st.Redispatched, st.Ejections = e.stats.redispatched.Load(), e.stats.ejections.Load()
	return st
}
