package script

import (
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/dispatch"
)

// Breaker settings: after this many failed rounds in a row, a script is
// skipped (the fallback decides) for pauseFor, so that a script that
// always overruns its budget does not slow every round by the budget.
const (
	failuresToPause = 3
	pauseFor        = time.Second
)

// Algorithm is a dispatch.Algorithm running the scripted algorithm or picker
// called name, with fallback deciding whenever the script cannot. An
// Algorithm is used by one engine, from one goroutine at a time.
type Algorithm struct {
	h        *Host
	name     string
	fallback dispatch.Algorithm
	cnt      *Counters

	st          *state
	streak      int
	pausedUntil time.Time
	pausedSet   *Set // scripts in force when paused: a reload ends the pause
	missing     bool
}

// NewAlgorithm returns the scripted algorithm called name. fallback decides
// rounds the script cannot (errors, budget overruns, name no longer
// provided after a reload).
func NewAlgorithm(h *Host, name string, fallback dispatch.Algorithm) *Algorithm {
	return &Algorithm{h: h, name: name, fallback: fallback, cnt: h.Counters(name)}
}

// Assign implements dispatch.Algorithm.
func (a *Algorithm) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	r, ok := a.prepare(p.Now)
	if !ok {
		a.cnt.Fallbacks.Add(1)
		a.fallback.Assign(calls, servants, p)
		return
	}
	a.cnt.Decisions.Add(1)
	st := a.st
	st.begin(calls, servants, p)
	var err error
	if r.kind == KindPicker {
		err = a.pick(r.fn, calls, servants, p)
	} else {
		_, err = st.call(r.fn, a.h.cfg.Budget, st.buildCalls(calls), st.servantsTab, st.planTab)
	}
	st.end()
	if err == nil {
		a.streak = 0
		return
	}
	a.failed(err, p.Now)
	a.fallback.Assign(calls, servants, p) // calls the script assigned before failing stay assigned
}

// prepare makes sure the state matches the scripts in force and returns
// the function to run, or false when the fallback must decide.
func (a *Algorithm) prepare(now time.Time) (registered, bool) {
	set := a.h.Set()
	if now.Before(a.pausedUntil) && a.pausedSet == set {
		return registered{}, false
	}
	if a.st == nil || a.st.set != set || a.st.expired() {
		if a.st != nil {
			a.st.close()
			a.st = nil
		}
		st, err := newState(set, a.h)
		if err != nil {
			a.failed(err, now)
			return registered{}, false
		}
		a.st = st
	}
	r, ok := a.st.fns[a.name]
	if !ok || (r.kind != KindAlgorithm && r.kind != KindPicker) {
		if !a.missing {
			a.missing = true
			a.h.log.Error("dispatch algorithm is no longer provided by any script; the fallback decides until it comes back",
				zap.String("algorithm", a.name))
		}
		return registered{}, false
	}
	if a.missing {
		a.missing = false
		a.h.log.Info("dispatch algorithm is provided again", zap.String("algorithm", a.name))
	}
	return r, true
}

func (a *Algorithm) failed(err error, now time.Time) {
	a.cnt.Errors.Add(1)
	a.cnt.Fallbacks.Add(1)
	a.h.errLog.note(a.h.log, a.name, err)
	if a.st != nil && a.st.expired() {
		a.st.close() // a state stopped mid-instruction is not reused
		a.st = nil
	}
	if a.streak++; a.streak >= failuresToPause {
		a.streak = 0
		a.pausedUntil, a.pausedSet = now.Add(pauseFor), a.h.Set()
	}
}

// pick runs a picker, picker(call, servants, plan), once per waiting call,
// oldest first, while some servant can take a call. The call's table has
// its index in the waiting calls, for plan.can_take(j, call.index).
func (a *Algorithm) pick(fn *lua.LFunction, calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) error {
	st := a.st
	for i, c := range calls[:min(len(calls), maxWindow)] {
		if p.Assigned(i) {
			continue
		}
		if !anyCanTake(servants, c, p) {
			if !anyCanTake(servants, nil, p) {
				return nil // nobody can take anything: the round is over
			}
			continue
		}
		ret, err := st.call(fn, a.h.cfg.Budget, st.callTable(c, i+1), st.servantsTab, st.planTab)
		if err != nil {
			return err
		}
		switch v := ret.(type) {
		case *lua.LNilType:
		case lua.LNumber:
			st.assign(i, int(v)-1)
		default:
			return fmt.Errorf("picker %q returned a %s; it must return a servant index or nil", a.name, ret.Type())
		}
	}
	return nil
}

// anyCanTake reports whether some servant can take c now (any call when c
// is nil).
func anyCanTake(servants []*dispatch.Servant, c *dispatch.Call, p *dispatch.Plan) bool {
	for _, s := range servants {
		if c == nil {
			if s.Available() && (s.Free() > 0 || s.Backlog < p.MaxBacklog) {
				return true
			}
		} else if p.CanTake(s, c) {
			return true
		}
	}
	return false
}

var _ dispatch.Algorithm = (*Algorithm)(nil)
