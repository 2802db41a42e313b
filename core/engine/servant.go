package engine

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Servant is the engine's handle on one servant. Its link reports through
// it: Up when it can take calls, Done for each result, Down when the
// connection is lost.
type Servant struct {
	e          *Engine
	index      int
	view       dispatch.Servant
	t          Transport
	fixedSlots bool    // slots set at launch win over the servant's own
	backlog    []*Call // assigned, waiting for a slot
	run        []*Call // sent and not yet answered or lost

	removed      bool      // taken out for good (RemoveServant)
	connected    bool      // its link is up
	leaving      bool      // answered "shutting down": it takes no more calls on this connection
	balancer     bool      // a balancer itself (its info record is nested)
	unhealthy    bool      // failing health checks
	failures     int       // calls failed in a row
	ejections    int       // times ejected
	ejectedUntil time.Time // while ejected
	idleWaiters  []chan struct{}
}

// ServantSpec describes a servant being added.
type ServantSpec struct {
	Name  string   // unique name
	Addr  string   // where it is reached
	Tags  []string // labels from the launch configuration
	Slots int      // calls it runs at once; 0 lets the servant say (default 1)
}

// AddServant adds a servant reached through t. It takes no calls until its
// link reports Up.
func (e *Engine) AddServant(spec ServantSpec, t Transport) *Servant {
	s := &Servant{e: e, t: t, fixedSlots: spec.Slots > 0}
	s.view = dispatch.Servant{
		Name:  spec.Name,
		Addr:  spec.Addr,
		Host:  hostOf(spec.Addr),
		Tags:  slices.Clone(spec.Tags),
		Slots: max(spec.Slots, 1),
	}
	e.mu.Lock()
	s.index = len(e.servants)
	e.servants = append(e.servants, s)
	e.views = append(e.views, &s.view)
	e.mu.Unlock()
	return s
}

func hostOf(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// Name returns the servant's name.
func (s *Servant) Name() string { return s.view.Name }

// Announce is what a servant said about itself when its link connected.
type Announce struct {
	Slots     int      // calls it runs at once; 0 when it did not say
	Tags      []string // labels it carries, added to those from the launch
	Functions []string // names of the functions it serves; nil when it did not say (it is then sent anything)
	Balancer  bool     // it is a balancer itself: its info record is nested under "inner"
}

// Up marks the servant ready for calls with what it announced: announced
// slots apply unless slots were fixed at launch; announced tags are added to
// the launch tags.
func (s *Servant) Up(a Announce) {
	e := s.e
	e.mu.Lock()
	if s.removed {
		e.mu.Unlock()
		return
	}
	v := &s.view
	s.connected, s.unhealthy, s.leaving = true, false, false // a fresh connection is healthy until checks say otherwise
	s.balancer = a.Balancer
	s.setHealthy()
	v.Used, v.LastRoute, v.LastUsed = false, "", time.Time{}
	if a.Slots > 0 && !s.fixedSlots {
		v.Slots = a.Slots
	}
	for _, t := range a.Tags {
		if !slices.Contains(v.Tags, t) {
			v.Tags = append(v.Tags, t)
		}
	}
	v.Functions = nil
	if a.Functions != nil {
		v.Functions = make(map[string]bool, len(a.Functions))
		for _, f := range a.Functions {
			v.Functions[f] = true
		}
	}
	now := e.now()
	sends := s.fromBacklog(nil, now)
	sends = e.round(sends, now)
	unservable := e.dropUnservable()
	e.mu.Unlock()
	e.send(sends, nil)
	for _, c := range unservable {
		c.answer(&Answer{Err: e.unserved(c.Method), Elapsed: now.Sub(c.Arrived)})
	}
}

// Down marks the servant unavailable after its connection was lost or it
// stopped. lost are the calls the link had sent on the dead connection:
// they are answered "servant lost" (unless already answered), because they
// may or may not have run. Calls in its backlog were never sent: they go
// back to the queue for another servant.
func (s *Servant) Down(lost []*Call, cause error) {
	e := s.e
	now := e.now()
	e.mu.Lock()
	v := &s.view
	s.connected = false
	s.setHealthy()
	v.Used, v.LastRoute = false, "" // release its routing string at once
	answer := s.lose(lost, now)
	s.requeueBacklog()
	s.afterLoss(answer, cause, now)
}

// Lost reports that the exchange of one call with the servant failed
// without an answer (an HTTP request cut off): the call is handled as if
// the servant had been lost under it, but the servant stays in dispatch.
func (s *Servant) Lost(c *Call, cause error) {
	e := s.e
	now := e.now()
	e.mu.Lock()
	s.afterLoss(s.lose([]*Call{c}, now), cause, now)
}

// afterLoss runs a round for the calls a loss freed or sent back, unlocks
// the engine and answers the lost calls. Caller holds e.mu.
func (s *Servant) afterLoss(answer []*Call, cause error, now time.Time) {
	e := s.e
	sends := e.round(nil, now)
	remaining := e.queued + e.running
	s.notifyIdle()
	e.mu.Unlock()
	e.send(sends, nil)
	s.answerLost(answer, cause, now, remaining)
}

// lose takes lost calls off the servant: idempotent ones go back to the
// queue for another servant, the others are returned to be answered
// "servant lost". Caller holds e.mu.
func (s *Servant) lose(lost []*Call, now time.Time) []*Call {
	e := s.e
	var answer, again []*Call
	for _, c := range lost {
		switch c.where {
		case running:
			if c.Idempotent && c.attempts < e.maxAttempts {
				again = append(again, c) // safe to run elsewhere
			} else {
				answer = append(answer, c)
			}
		case answered:
		default:
			continue // not ours any more
		}
		c.where = nowhere
		s.unrun(c)
		s.view.InFlight--
		e.running--
	}
	if len(answer)+len(again) > 0 { // lost while running, not after being given up on
		s.failure(now)
	}
	if len(again) > 0 {
		e.requeue(again)
		e.stats.redispatched.Add(uint64(len(again)))
	}
	return answer
}

// requeue puts calls taken back from their servants at the head of the
// queue, for another servant. Caller holds e.mu.
func (e *Engine) requeue(calls []*Call) {
	for _, c := range calls {
		c.where = waiting
		c.servant = nil
	}
	e.q.pushFront(calls)
	e.queued += len(calls)
}

func (s *Servant) answerLost(calls []*Call, cause error, now time.Time, remaining int) {
	name := s.view.Name
	for _, c := range calls {
		c.answer(&Answer{
			Err: jsonrpc.Errorf(jsonrpc.ServantLost,
				"servant lost: %s went away while running the call (%v); it may or may not have run", name, cause),
			Servant: name, Elapsed: now.Sub(c.Arrived), Execution: now.Sub(c.sentAt), Remaining: remaining,
		})
	}
}

// Done reports the servant's response to c. The response's byte slices are
// used only during the call. With a non-nil f, the writes it causes (the
// answer to the client, the next call to the servant) may be deferred
// until f is flushed.
func (s *Servant) Done(c *Call, resp *jsonrpc.Response, f *wire.Flusher) {
	e := s.e
	now := e.now()
	e.mu.Lock()
	v := &s.view
	wasAnswered := c.where == answered
	if c.where != running && !wasAnswered {
		e.mu.Unlock()
		return // not ours any more (a bug in the link if it happens)
	}
	c.where = nowhere
	s.unrun(c)
	v.InFlight--
	e.running--
	ok, code := resp.Error == nil, 0
	if !ok {
		code = errorCode(resp.Error)
	}
	if code == jsonrpc.ShuttingDown {
		// The servant is stopping: it takes no more calls on this
		// connection, whatever becomes of this one.
		s.leaving = true
		s.setHealthy()
		s.requeueBacklog()
	}
	if code == jsonrpc.ShuttingDown && !wasAnswered && c.attempts < e.maxAttempts {
		// It did not run the call: the call goes to another servant.
		e.requeue([]*Call{c})
		e.stats.redispatched.Add(1)
		sends := e.round(nil, now)
		s.notifyIdle()
		e.mu.Unlock()
		e.send(sends, f)
		return
	}
	exec := now.Sub(c.sentAt)
	v.Served++
	v.LastUsed = now
	if v.Latency == 0 {
		v.Latency = exec
	} else {
		v.Latency += (exec - v.Latency) / 8
	}
	if e.observer != nil {
		e.observer.Done(&c.Call, v, exec, ok)
	}
	if code != jsonrpc.InternalError { // a result, or a refusal: not the servant itself failing (-32603)
		s.failures = 0
		s.checkSlow(now)
	} else {
		s.failure(now)
	}
	var buf [4]*Call
	sends := s.fromBacklog(buf[:0], now)
	sends = e.round(sends, now)
	remaining := e.queued + e.running
	s.notifyIdle()
	e.mu.Unlock()
	e.send(sends, f)
	if !wasAnswered {
		c.answer(&Answer{
			Result: resp.Result, ServantErr: resp.Error, ServantInfo: resp.Info, NestedInfo: s.balancer,
			Servant: v.Name, Elapsed: now.Sub(c.Arrived), Execution: exec, Remaining: remaining,
			Flusher: f,
		})
	}
}

// fromBacklog moves calls from the servant's backlog into its free slots.
// Caller holds e.mu.
func (s *Servant) fromBacklog(sends []*Call, now time.Time) []*Call {
	v := &s.view
	for len(s.backlog) > 0 && v.Available() && v.Free() > 0 {
		c := s.backlog[0]
		s.backlog[0] = nil
		s.backlog = s.backlog[1:]
		v.Backlog--
		v.InFlight++
		s.e.queued--
		s.e.running++
		c.where = running
		c.sentAt = now
		s.addRun(c)
		sends = append(sends, c)
	}
	return sends
}

func (s *Servant) removeBacklog(c *Call) {
	if i := slices.Index(s.backlog, c); i >= 0 {
		s.backlog = slices.Delete(s.backlog, i, i+1)
		s.view.Backlog--
	}
}

// addRun records c as running on s. Caller holds e.mu.
func (s *Servant) addRun(c *Call) {
	c.runIdx = len(s.run)
	s.run = append(s.run, c)
}

// unrun forgets c as running on s. Caller holds e.mu.
func (s *Servant) unrun(c *Call) {
	i := c.runIdx
	if i < 0 || i >= len(s.run) || s.run[i] != c {
		return
	}
	last := len(s.run) - 1
	s.run[i] = s.run[last]
	s.run[i].runIdx = i
	s.run[last] = nil
	s.run = s.run[:last]
	c.runIdx = -1
}

// running returns the calls running on s. Caller holds e.mu.
func (s *Servant) running() []*Call { return s.run }

// setHealthy recomputes the view's Healthy: connected, passing health
// checks and not shutting down. Caller holds e.mu.
func (s *Servant) setHealthy() { s.view.Healthy = s.connected && !s.unhealthy && !s.leaving }

// FailingChecks reports whether the servant is out of dispatch for failing
// health checks (SetHealth(false)).
func (s *Servant) FailingChecks() bool {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.unhealthy
}

// SetHealth records the result of the link's health checks: a servant
// failing them is taken out of dispatch (its running calls go on) and put
// back when it passes again.
func (s *Servant) SetHealth(ok bool) {
	e := s.e
	e.mu.Lock()
	if s.unhealthy == !ok {
		e.mu.Unlock()
		return
	}
	s.unhealthy = !ok
	s.setHealthy()
	var sends []*Call
	if ok {
		now := e.now()
		sends = s.fromBacklog(nil, now)
		sends = e.round(sends, now)
	} else {
		s.requeueBacklog()
	}
	e.mu.Unlock()
	e.send(sends, nil)
	if !ok {
		e.kick()
	}
}

// requeueBacklog sends the calls waiting for this servant's slots back to
// the queue: they were never sent. Caller holds e.mu.
func (s *Servant) requeueBacklog() {
	if len(s.backlog) == 0 {
		return
	}
	for _, c := range s.backlog {
		c.where = waiting
		c.servant = nil
	}
	s.e.q.pushFront(s.backlog)
	s.backlog = nil
	s.view.Backlog = 0
}

// errorCode returns the code of a raw error object, or 0 when it has none.
func errorCode(raw []byte) int {
	e, err := jsonrpc.DecodeError(raw)
	if err != nil {
		return 0
	}
	return e.Code
}

// failure counts a failed call (internal error, timeout on the servant,
// lost) and ejects the servant after EjectAfter in a row. Caller holds
// e.mu.
func (s *Servant) failure(now time.Time) {
	s.failures++
	if s.e.ejectAfter > 0 && s.failures >= s.e.ejectAfter {
		s.eject(now, fmt.Sprintf("%d calls failed in a row", s.failures))
	}
}

// checkSlow ejects the servant when its latency passes EjectSlower times
// the average of its available peers (after enough calls to judge). Caller
// holds e.mu.
func (s *Servant) checkSlow(now time.Time) {
	e := s.e
	if e.ejectSlower <= 0 || s.view.Served < 20 {
		return
	}
	var sum time.Duration
	n := 0
	for _, v := range e.views {
		if v != &s.view && v.Available() && v.Served >= 20 {
			sum += v.Latency
			n++
		}
	}
	if n < 2 {
		return
	}
	if avg := sum / time.Duration(n); float64(s.view.Latency) > e.ejectSlower*float64(avg) {
		s.eject(now, fmt.Sprintf("latency %v is over %.1f× its peers' %v", s.view.Latency, e.ejectSlower, avg))
	}
}

// eject takes the servant out of dispatch for EjectFor times the number of
// its ejections, unless half the servants are out already. Caller holds
// e.mu.
func (s *Servant) eject(now time.Time, why string) {
	e := s.e
	if s.view.Ejected || 2*(e.ejected+1) > len(e.servants) {
		return
	}
	s.ejections++
	s.failures = 0
	s.view.Ejected = true
	s.ejectedUntil = now.Add(e.ejectFor * time.Duration(s.ejections))
	e.ejected++
	e.stats.ejections.Add(1)
	s.requeueBacklog()
	e.scheduleWake(s.ejectedUntil, now)
	e.log.Warn("servant ejected", zap.String("servant", s.view.Name), zap.String("why", why),
		zap.Duration("for", s.ejectedUntil.Sub(now)))
}

// readmit ends ejections whose time is up. Caller holds e.mu.
func (e *Engine) readmit(now time.Time) {
	for _, s := range e.servants {
		if s.view.Ejected && !now.Before(s.ejectedUntil) {
			s.view.Ejected = false
			e.ejected--
			e.log.Info("servant readmitted after ejection", zap.String("servant", s.view.Name))
		}
	}
}

// notifyIdle wakes whoever waits for the servant to have nothing in
// flight or waiting. Caller holds e.mu.
func (s *Servant) notifyIdle() {
	if len(s.idleWaiters) == 0 || s.view.InFlight > 0 || len(s.backlog) > 0 {
		return
	}
	for _, ch := range s.idleWaiters {
		close(ch)
	}
	s.idleWaiters = nil
}

// RemoveServant takes s out of the engine for good (a registered servant
// that left, one discovery no longer lists): it gets no more calls, calls
// waiting for its slots go back to the queue, and calls still running on it
// are handled as if it had been lost under them with cause: idempotent ones
// go to another servant, the others are answered "servant lost". Stop its
// link too; whatever the link reports afterwards is ignored. The positions
// of the servants after it in the list algorithms see move down by one.
// Removing a servant twice does nothing.
func (e *Engine) RemoveServant(s *Servant, cause error) {
	now := e.now()
	e.mu.Lock()
	if s.removed {
		e.mu.Unlock()
		return
	}
	s.removed, s.connected = true, false
	s.setHealthy()
	answer := s.lose(slices.Clone(s.run), now)
	s.requeueBacklog()
	if s.view.Ejected {
		s.view.Ejected = false
		e.ejected--
	}
	i := s.index
	e.servants = slices.Delete(e.servants, i, i+1)
	e.views = slices.Delete(e.views, i, i+1)
	for j := i; j < len(e.servants); j++ {
		e.servants[j].index = j
	}
	for _, ch := range s.idleWaiters {
		close(ch)
	}
	s.idleWaiters = nil
	unservable := e.dropUnservable()
	sends := e.round(nil, now)
	remaining := e.queued + e.running
	e.mu.Unlock()
	e.send(sends, nil)
	s.answerLost(answer, cause, now, remaining)
	for _, c := range unservable {
		c.answer(&Answer{Err: e.unserved(c.Method), Elapsed: now.Sub(c.Arrived)})
	}
}

// Removed reports whether s was taken out with RemoveServant.
func (s *Servant) Removed() bool {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.removed
}

// Lookup returns the servant called name, or nil.
func (e *Engine) Lookup(name string) *Servant {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.servants {
		if s.view.Name == name {
			return s
		}
	}
	return nil
}

// SetDraining starts or ends draining the servant: while draining it gets
// no new calls (those waiting for its slots go back to the queue) and its
// running calls finish. Idle reports when they have.
func (s *Servant) SetDraining(on bool) {
	e := s.e
	e.mu.Lock()
	s.view.Draining = on
	var sends []*Call
	if on {
		s.requeueBacklog()
	} else {
		now := e.now()
		sends = e.round(nil, now)
	}
	e.mu.Unlock()
	e.send(sends, nil)
	if on {
		e.kick()
	}
}

// Idle returns a channel closed once the servant has no call running or
// waiting for its slots.
func (s *Servant) Idle() <-chan struct{} {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	ch := make(chan struct{})
	s.idleWaiters = append(s.idleWaiters, ch)
	s.notifyIdle()
	return ch
}

// View returns a copy of what algorithms see of the servant.
func (s *Servant) View() dispatch.Servant {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	v := s.view
	v.Tags = slices.Clone(v.Tags)
	return v
}
