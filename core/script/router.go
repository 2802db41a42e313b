package script

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mserve/mserve/sdk/dispatch"
)

// Router is a dispatch.Router running the scripted routing function called
// name. It is safe for concurrent use: it keeps a pool of Lua states.
type Router struct {
	h        *Host
	name     string
	fallback dispatch.Router
	cnt      *Counters
	pool     chan *state

	mu          sync.Mutex // guards the breaker
	streak      int
	pausedUntil time.Time
	pausedSet   *Set // scripts in force when paused: a reload ends the pause
}

// NewRouter returns the scripted routing function called name; fallback
// routes calls the script cannot.
func NewRouter(h *Host, name string, fallback dispatch.Router) *Router {
	return &Router{h: h, name: name, fallback: fallback, cnt: h.Counters(name), pool: make(chan *state, 2*runtime.GOMAXPROCS(0))}
}

// Route implements dispatch.Router.
func (r *Router) Route(c *dispatch.Call) (string, error) {
	r.mu.Lock()
	paused := time.Now().Before(r.pausedUntil) && r.pausedSet == r.h.Set()
	r.mu.Unlock()
	if paused { // failing repeatedly: skip the script for a while
		r.cnt.Fallbacks.Add(1)
		return r.fallback.Route(c)
	}
	st, err := r.get()
	if err != nil {
		return r.fail(c, err)
	}
	reg, ok := st.fns[r.name]
	if !ok || reg.kind != KindRoute {
		r.put(st)
		return r.fail(c, fmt.Errorf("routing function %q is no longer provided by any script", r.name))
	}
	r.cnt.Decisions.Add(1)
	ret, err := st.call(reg.fn, r.h.cfg.Budget, st.routeTable(c))
	r.put(st)
	if err != nil {
		return r.fail(c, err)
	}
	r.mu.Lock()
	r.streak = 0
	r.mu.Unlock()
	switch v := ret.(type) {
	case lua.LString:
		return string(v), nil
	case lua.LNumber:
		if f := float64(v); f == math.Trunc(f) && math.Abs(f) < 1e15 {
			return strconv.FormatInt(int64(f), 10), nil
		}
		return strconv.FormatFloat(float64(v), 'g', -1, 64), nil
	case *lua.LNilType:
		return "", nil
	}
	return r.fail(c, fmt.Errorf("routing function %q returned a %s; it must return a string", r.name, ret.Type()))
}

func (r *Router) fail(c *dispatch.Call, err error) (string, error) {
	r.mu.Lock()
	if r.streak++; r.streak >= failuresToPause {
		r.streak = 0
		r.pausedUntil, r.pausedSet = time.Now().Add(pauseFor), r.h.Set()
	}
	r.mu.Unlock()
	r.cnt.Errors.Add(1)
	r.cnt.Fallbacks.Add(1)
	r.h.errLog.note(r.h.log, r.name, err)
	return r.fallback.Route(c)
}

func (r *Router) get() (*state, error) {
	set := r.h.Set()
	for {
		select {
		case st := <-r.pool:
			if st.set == set && !st.expired() {
				return st, nil
			}
			st.close()
		default:
			return newState(set, r.h)
		}
	}
}

func (r *Router) put(st *state) {
	if st.expired() || st.set != r.h.Set() {
		st.close()
		return
	}
	select {
	case r.pool <- st:
	default:
		st.close()
	}
}

var _ dispatch.Router = (*Router)(nil)
