package frontend

import (
	"sync"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/wire"
)

// Tracker keeps one client's unanswered calls, so that they can be
// cancelled by id (rpc.cancel) or all at once when the client goes away.
// It implements Session.
type Tracker struct {
	eng   *engine.Engine
	owner engine.Replier // the client's own replier for single calls

	mu    sync.Mutex
	calls map[*engine.Call]struct{}
}

// NewTracker returns a tracker submitting to eng. owner is the replier the
// client uses for single calls; calls answered elsewhere (batch elements)
// are wrapped so that they are forgotten when answered.
func NewTracker(eng *engine.Engine, owner engine.Replier) *Tracker {
	return &Tracker{eng: eng, owner: owner, calls: map[*engine.Call]struct{}{}}
}

// Submit tracks c and hands it to the engine.
func (t *Tracker) Submit(c *engine.Call) { t.SubmitLater(c, nil) }

// SubmitLater is Submit with the engine's deferred writes (see
// engine.SubmitLater).
func (t *Tracker) SubmitLater(c *engine.Call, f *wire.Flusher) {
	if c.Reply != t.owner {
		c.Reply = &forgetting{t: t, inner: c.Reply}
	}
	t.mu.Lock()
	t.calls[c] = struct{}{}
	t.mu.Unlock()
	t.eng.SubmitLater(c, f)
}

// Forget stops tracking c; the owner's Answer calls it.
func (t *Tracker) Forget(c *engine.Call) {
	t.mu.Lock()
	delete(t.calls, c)
	t.mu.Unlock()
}

// Cancel cancels the unanswered call with the given raw id.
func (t *Tracker) Cancel(id []byte) bool {
	var target *engine.Call
	t.mu.Lock()
	for c := range t.calls {
		if SameID(c.ID, id) {
			target = c
			break
		}
	}
	t.mu.Unlock()
	if target == nil {
		return false
	}
	t.eng.Cancel(target, "the client cancelled the call")
	return true
}

// CancelAll cancels every unanswered call: queued ones leave the queue,
// running ones finish on their servants with nobody to answer.
func (t *Tracker) CancelAll(reason string) {
	t.mu.Lock()
	calls := make([]*engine.Call, 0, len(t.calls))
	for c := range t.calls {
		calls = append(calls, c)
	}
	t.mu.Unlock()
	for _, c := range calls {
		t.eng.Cancel(c, reason)
	}
}

// forgetting wraps a batch element's replier.
type forgetting struct {
	t     *Tracker
	inner engine.Replier
}

func (f *forgetting) Answer(c *engine.Call, a *engine.Answer) {
	f.t.Forget(c)
	f.inner.Answer(c, a)
}
