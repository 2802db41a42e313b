package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

// maxBatch is the most waiting calls sent to a plugin in one round.
const maxBatch = 512

// Algorithm is a dispatch.Algorithm whose decisions a plugin makes. It
// never blocks a round on the plugin: a round that finds no decision ready
// sends the waiting calls to the plugin in a batch and returns; when the
// plugin answers, the Algorithm wakes the engine and applies the decisions
// in the next round. Calls arriving meanwhile go in the next batch, so
// under load one round trip serves many calls. While the plugin is down or
// failing, the fallback decides.
type Algorithm struct {
	h        *Host
	name     string
	backlog  int
	session  uint64
	fallback dispatch.Algorithm

	mu       sync.Mutex
	wake     func()
	inFlight bool
	ready    *decision
	observed []plugin.Observation
}

// decision is a plugin's answer to one batch, with the calls it was about.
type decision struct {
	calls    []*dispatch.Call // the batch, by position
	servants []string         // the names of the servants it was sent, by position
	resp     *plugin.AssignResponse
	err      error
}

// NewAlgorithm returns the plugin algorithm called name (with the backlog
// limit the plugin announced); fallback decides while the plugin cannot.
func NewAlgorithm(h *Host, name string, backlog int, fallback dispatch.Algorithm) *Algorithm {
	return &Algorithm{h: h, name: name, backlog: backlog, session: rand.Uint64(), fallback: fallback}
}

// SetWaker implements dispatch.Waker.
func (a *Algorithm) SetWaker(wake func()) {
	a.mu.Lock()
	a.wake = wake
	a.mu.Unlock()
}

// BacklogLimit implements dispatch.BacklogUser.
func (a *Algorithm) BacklogLimit() int { return a.backlog }

// Done implements dispatch.Observer: the observation goes to the plugin
// with the next batch.
func (a *Algorithm) Done(c *dispatch.Call, servant *dispatch.Servant, execution time.Duration, ok bool) {
	a.mu.Lock()
	if len(a.observed) < 4*maxBatch {
		a.observed = append(a.observed, plugin.Observation{Call: *c, Servant: servant.Name, Execution: execution, OK: ok})
	}
	a.mu.Unlock()
}

// Assign implements dispatch.Algorithm.
func (a *Algorithm) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	a.mu.Lock()
	d := a.ready
	a.ready = nil
	busy := a.inFlight
	a.mu.Unlock()

	var failed error
	if d != nil {
		if failed = a.apply(d, calls, servants, p); failed != nil {
			a.h.failed(failed)
			a.h.log.Debug("plugin decision failed; the fallback decides", zap.String("algorithm", a.name), zap.Error(failed))
		} else {
			a.h.succeeded()
		}
	}
	if busy {
		return // the plugin is deciding; its answer wakes a new round
	}
	stub := a.h.current()
	if stub == nil {
		a.h.Stats.Fallbacks.Add(1)
		a.fallback.Assign(calls, servants, p)
		return
	}
	if failed != nil {
		// The plugin just failed this batch: the fallback decides it now
		// rather than the calls waiting another round trip.
		a.h.Stats.Fallbacks.Add(1)
		a.fallback.Assign(calls, servants, p)
	}
	a.send(stub, calls, servants, p)
}

// apply takes the decisions of a finished batch for the calls still
// waiting. A failed batch, or one with decisions about calls or servants it
// was not sent, is an error: garbage from the plugin. (Decisions the plan
// refuses because things changed during the round trip are not: the calls
// go in the next batch. Nor are decisions for servants that left meanwhile;
// servants are matched by name, since joins and leaves shift positions.)
func (a *Algorithm) apply(d *decision, calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) error {
	if d.err != nil {
		return d.err
	}
	index := make(map[*dispatch.Call]int, len(calls))
	for i, c := range calls {
		index[c] = i
	}
	for _, as := range d.resp.Assignments {
		if as.Call < 0 || as.Call >= len(d.calls) || as.Servant < 0 || as.Servant >= len(d.servants) {
			return fmt.Errorf("plugin algorithm %q answered a decision about call %d and servant %d; it was sent %d calls and %d servants",
				a.name, as.Call, as.Servant, len(d.calls), len(d.servants))
		}
	}
	position := samePositions(d.servants, servants)
	for _, as := range d.resp.Assignments {
		ci, still := index[d.calls[as.Call]] // else answered meanwhile (timeout, cancel)
		if si := position(as.Servant); still && si >= 0 {
			p.Assign(ci, si)
		}
	}
	if !d.resp.Wake.IsZero() {
		p.WakeAt(d.resp.Wake)
	}
	return nil
}

// samePositions maps a servant's position in sent (the names a batch was
// sent) to its position in now, or -1 when it has left.
func samePositions(sent []string, now []*dispatch.Servant) func(int) int {
	same := len(sent) == len(now)
	for i := 0; same && i < len(sent); i++ {
		same = sent[i] == now[i].Name
	}
	if same {
		return func(i int) int { return i }
	}
	byName := make(map[string]int, len(now))
	for i, s := range now {
		byName[s.Name] = i
	}
	return func(i int) int {
		if si, ok := byName[sent[i]]; ok {
			return si
		}
		return -1
	}
}

// send starts a batch with the calls still unassigned, as many as the
// servants could take now (free slots and backlog room), if any.
func (a *Algorithm) send(stub *plugin.Client, calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	room := capacity(servants, p)
	var batch []*dispatch.Call
	for i, c := range calls {
		if len(batch) >= min(room, maxBatch) {
			break
		}
		if !p.Assigned(i) {
			batch = append(batch, c)
		}
	}
	if len(batch) == 0 {
		return
	}
	req := &plugin.AssignRequest{
		Algorithm: a.name, Session: a.session, Now: p.Now, MaxBacklog: p.MaxBacklog,
		Calls: make([]dispatch.Call, len(batch)), Servants: make([]dispatch.Servant, len(servants)),
	}
	for i, c := range batch {
		req.Calls[i] = *c
	}
	names := make([]string, len(servants))
	for i, s := range servants {
		req.Servants[i] = *s
		req.Servants[i].Tags = slices.Clone(s.Tags)
		names[i] = s.Name
	}
	a.mu.Lock()
	req.Observed, a.observed = a.observed, nil
	a.inFlight = true
	a.mu.Unlock()
	a.h.Stats.Decisions.Add(1)
	a.h.Stats.Calls.Add(uint64(len(batch)))
	go a.decide(stub, req, batch, names)
}

// decide runs one batch in the plugin, within the deadline, then wakes the
// engine to apply the answer.
func (a *Algorithm) decide(stub *plugin.Client, req *plugin.AssignRequest, batch []*dispatch.Call, servants []string) {
	ctx, cancel := context.WithTimeout(context.Background(), a.h.cfg.Deadline)
	resp, err := stub.Assign(ctx, req)
	cancel()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("plugin algorithm %q did not decide within %v", a.name, a.h.cfg.Deadline)
	}
	a.mu.Lock()
	a.ready = &decision{calls: batch, servants: servants, resp: resp, err: err}
	a.inFlight = false
	wake := a.wake
	a.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// capacity is how many calls the servants could take now.
func capacity(servants []*dispatch.Servant, p *dispatch.Plan) int {
	n := 0
	for _, s := range servants {
		if s.Available() {
			n += max(s.Free(), 0) + max(p.MaxBacklog-s.Backlog, 0)
		}
	}
	return n
}

var (
	_ dispatch.Algorithm   = (*Algorithm)(nil)
	_ dispatch.Waker       = (*Algorithm)(nil)
	_ dispatch.Observer    = (*Algorithm)(nil)
	_ dispatch.BacklogUser = (*Algorithm)(nil)
)
