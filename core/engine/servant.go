package engine

import (
	"net"
	"slices"
	"time"

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
}

// Up marks the servant ready for calls with what it announced: announced
// slots apply unless slots were fixed at launch; announced tags are added to
// the launch tags.
func (s *Servant) Up(a Announce) {
	e := s.e
	e.mu.Lock()
	v := &s.view
	v.Healthy = true
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
	v.Healthy = false
	v.Used, v.LastRoute = false, "" // release its routing string at once
	var answer []*Call
	for _, c := range lost {
		switch c.where {
		case running:
			answer = append(answer, c)
		case answered:
		default:
			continue // not ours any more
		}
		c.where = nowhere
		s.unrun(c)
		v.InFlight--
		e.running--
	}
	if len(s.backlog) > 0 {
		for _, c := range s.backlog {
			c.where = waiting
			c.servant = nil
		}
		e.q.pushFront(s.backlog)
		s.backlog = nil
		v.Backlog = 0
	}
	sends := e.round(nil, now)
	remaining := e.queued + e.running
	e.mu.Unlock()
	e.send(sends, nil)
	for _, c := range answer {
		c.answer(&Answer{
			Err: jsonrpc.Errorf(jsonrpc.ServantLost,
				"servant lost: %s went away while running the call (%v); it may or may not have run", v.Name, cause),
			Servant: v.Name, Elapsed: now.Sub(c.Arrived), Execution: now.Sub(c.sentAt), Remaining: remaining,
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
	exec := now.Sub(c.sentAt)
	v.Served++
	v.LastUsed = now
	if v.Latency == 0 {
		v.Latency = exec
	} else {
		v.Latency += (exec - v.Latency) / 8
	}
	ok := resp.Error == nil
	if e.observer != nil {
		e.observer.Done(&c.Call, s.index, exec, ok)
	}
	var buf [4]*Call
	sends := s.fromBacklog(buf[:0], now)
	sends = e.round(sends, now)
	remaining := e.queued + e.running
	e.mu.Unlock()
	e.send(sends, f)
	if !wasAnswered {
		c.answer(&Answer{
			Result: resp.Result, ServantErr: resp.Error, ServantInfo: resp.Info,
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
