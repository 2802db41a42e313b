package script

import (
	"fmt"
	"slices"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mserve/mserve/sdk/dispatch"
)

// maxWindow is how many of the oldest waiting calls a script sees in one
// round; the rest wait for later rounds.
const maxWindow = 256

// state is one Lua state with every script of a Set loaded, and the tables
// it shows scripts, kept between decisions and updated only where
// something changed.
type state struct {
	set    *Set
	L      *lua.LState
	budget *budget
	fns    map[string]registered

	// The view of servants: one table per servant, refreshed field by
	// field from a shadow copy of what the table last showed.
	servantsTab *lua.LTable
	servantTabs []*lua.LTable
	shadow      []dispatch.Servant

	// Tables of waiting calls, reused while a call waits.
	callTabs  map[*dispatch.Call]*lua.LTable
	callsTab  *lua.LTable
	round     uint64
	callRound map[*dispatch.Call]uint64
	callMeta  *lua.LTable

	// The round in progress, for the plan functions.
	plan     *dispatch.Plan
	calls    []*dispatch.Call
	servants []*dispatch.Servant
	planTab  *lua.LTable
}

// newState builds a Lua state for set: a sandbox, the mserve table, every
// script's top level run once so that its functions are registered.
func newState(set *Set, h *Host) (*state, error) {
	L := newSandbox(h.log, "scripts")
	reg := newRegistrar(L)
	L.GetGlobal("mserve").(*lua.LTable).RawSetString("route_expire", lua.LNumber(h.cfg.RouteExpire.Seconds()))
	for _, sc := range set.Scripts {
		if err := runChunk(L, sc.proto); err != nil {
			L.Close()
			return nil, err
		}
	}
	st := &state{
		set: set, L: L, budget: newBudget(), fns: reg.fns,
		servantsTab: L.NewTable(), callsTab: L.NewTable(),
		callTabs: map[*dispatch.Call]*lua.LTable{}, callRound: map[*dispatch.Call]uint64{},
	}
	L.SetContext(st.budget)
	st.callMeta = L.NewTable()
	st.callMeta.RawSetString("__index", L.NewFunction(st.callIndex))
	st.planTab = L.NewTable()
	st.planTab.RawSetString("assign", L.NewFunction(st.planAssign))
	st.planTab.RawSetString("can_take", L.NewFunction(st.planCanTake))
	st.planTab.RawSetString("wake_at", L.NewFunction(st.planWakeAt))
	st.planTab.RawSetString("wake_in", L.NewFunction(st.planWakeIn))
	st.planTab.RawSetString("any_free", L.NewFunction(st.planAnyFree))
	return st, nil
}

func (st *state) close() {
	st.budget.stop()
	st.L.Close()
}

// call runs fn with args under the time budget and returns its first
// result. A state whose budget expired must not be used again.
func (st *state) call(fn *lua.LFunction, d time.Duration, args ...lua.LValue) (lua.LValue, error) {
	if !st.budget.arm(d) {
		return lua.LNil, errBudget
	}
	L := st.L
	L.Push(fn)
	for _, a := range args {
		L.Push(a)
	}
	err := L.PCall(len(args), 1, nil)
	st.budget.disarm()
	if err != nil {
		if st.budget.Err() != nil {
			return lua.LNil, fmt.Errorf("%w (%v per decision)", errBudget, d)
		}
		return lua.LNil, err
	}
	ret := L.Get(-1)
	L.Pop(1)
	return ret, nil
}

func (st *state) expired() bool { return st.budget.Err() != nil }

// syncServants brings the servant tables up to date with the views.
func (st *state) syncServants(views []*dispatch.Servant) {
	L := st.L
	for len(st.servantTabs) < len(views) {
		t := L.CreateTable(0, 20)
		st.servantTabs = append(st.servantTabs, t)
		st.shadow = append(st.shadow, dispatch.Servant{Slots: -1}) // forces a full first sync
		st.servantsTab.RawSetInt(len(st.servantTabs), t)
	}
	for len(st.servantTabs) > len(views) {
		st.servantsTab.RawSetInt(len(st.servantTabs), lua.LNil)
		st.servantTabs = st.servantTabs[:len(st.servantTabs)-1]
		st.shadow = st.shadow[:len(st.shadow)-1]
	}
	for i, v := range views {
		st.syncServant(st.servantTabs[i], &st.shadow[i], v, i+1)
	}
}

func seconds(t time.Time) lua.LValue {
	if t.IsZero() {
		return lua.LNumber(0)
	}
	return lua.LNumber(float64(t.UnixNano()) / 1e9)
}

// syncServant updates the fields of t that differ between the shadow (what
// t shows) and v.
func (st *state) syncServant(t *lua.LTable, sh, v *dispatch.Servant, index int) {
	full := sh.Slots == -1
	if full {
		t.RawSetString("index", lua.LNumber(index))
	}
	if full || sh.Name != v.Name {
		t.RawSetString("name", lua.LString(v.Name))
		t.RawSetString("addr", lua.LString(v.Addr))
		t.RawSetString("host", lua.LString(v.Host))
	}
	if full || !slices.Equal(sh.Tags, v.Tags) {
		tags := st.L.CreateTable(len(v.Tags), len(v.Tags))
		for i, tag := range v.Tags {
			tags.RawSetInt(i+1, lua.LString(tag))
			tags.RawSetString(tag, lua.LTrue)
		}
		t.RawSetString("tags", tags)
		sh.Tags = slices.Clone(v.Tags)
	}
	if full || sh.Slots != v.Slots || sh.InFlight != v.InFlight {
		t.RawSetString("slots", lua.LNumber(v.Slots))
		t.RawSetString("in_flight", lua.LNumber(v.InFlight))
		t.RawSetString("free", lua.LNumber(v.Free()))
	}
	if full || sh.Backlog != v.Backlog {
		t.RawSetString("backlog", lua.LNumber(v.Backlog))
	}
	if full || sh.Used != v.Used || sh.LastRoute != v.LastRoute {
		t.RawSetString("used", lua.LBool(v.Used))
		if v.Used {
			t.RawSetString("last_route", lua.LString(v.LastRoute))
		} else {
			t.RawSetString("last_route", lua.LNil)
		}
	}
	if full || !sh.LastUsed.Equal(v.LastUsed) {
		t.RawSetString("last_used", seconds(v.LastUsed))
	}
	if full || sh.Healthy != v.Healthy || sh.Draining != v.Draining || sh.Ejected != v.Ejected {
		t.RawSetString("healthy", lua.LBool(v.Healthy))
		t.RawSetString("draining", lua.LBool(v.Draining))
		t.RawSetString("ejected", lua.LBool(v.Ejected))
		t.RawSetString("available", lua.LBool(v.Available()))
	}
	if full || sh.Latency != v.Latency {
		t.RawSetString("latency", lua.LNumber(v.Latency.Seconds()))
	}
	if full || sh.Served != v.Served {
		t.RawSetString("served", lua.LNumber(v.Served))
	}
	tags := sh.Tags
	*sh = *v
	sh.Tags = tags
}

// callTable returns the table showing c, the index-th waiting call,
// reusing it while c waits. Its "args" field is decoded from the params on
// first use.
func (st *state) callTable(c *dispatch.Call, index int) *lua.LTable {
	t := st.callTabs[c]
	if t == nil {
		L := st.L
		t = L.CreateTable(0, 6)
		t.RawSetString("method", lua.LString(c.Method))
		t.RawSetString("user", lua.LString(c.User))
		t.RawSetString("params", lua.LString(c.Params))
		t.RawSetString("arrived", seconds(c.Arrived))
		L.SetMetatable(t, st.callMeta)
		st.callTabs[c] = t
	}
	t.RawSetString("route", lua.LString(c.Route))
	t.RawSetString("index", lua.LNumber(index))
	st.callRound[c] = st.round
	return t
}

// routeTable returns a fresh table showing c to a routing function.
func (st *state) routeTable(c *dispatch.Call) *lua.LTable {
	L := st.L
	t := L.CreateTable(0, 6)
	t.RawSetString("method", lua.LString(c.Method))
	t.RawSetString("user", lua.LString(c.User))
	t.RawSetString("params", lua.LString(c.Params))
	t.RawSetString("arrived", seconds(c.Arrived))
	L.SetMetatable(t, st.callMeta)
	return t
}

// callIndex is the __index of call tables: args is decoded on first use.
func (st *state) callIndex(L *lua.LState) int {
	t := L.CheckTable(1)
	if L.CheckString(2) != "args" {
		L.Push(lua.LNil)
		return 1
	}
	params, _ := t.RawGetString("params").(lua.LString)
	args := decodeJSON(L, []byte(params))
	t.RawSetString("args", args)
	L.Push(args)
	return 1
}

// buildCalls fills the calls array for this round (at most maxWindow
// calls) and forgets tables of calls no longer waiting.
func (st *state) buildCalls(calls []*dispatch.Call) *lua.LTable {
	st.round++
	n := min(len(calls), maxWindow)
	for i, c := range calls[:n] {
		st.callsTab.RawSetInt(i+1, st.callTable(c, i+1))
	}
	for i := n + 1; st.callsTab.RawGetInt(i) != lua.LNil; i++ {
		st.callsTab.RawSetInt(i, lua.LNil)
	}
	if len(st.callTabs) > 2*n+64 {
		for c, r := range st.callRound {
			if r != st.round {
				delete(st.callRound, c)
				delete(st.callTabs, c)
			}
		}
	}
	return st.callsTab
}

// begin prepares a round: the plan functions act on p.
func (st *state) begin(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	st.plan, st.calls, st.servants = p, calls, servants
	st.planTab.RawSetString("now", seconds(p.Now))
	st.syncServants(servants)
	for i, v := range servants {
		// idle_for is computed in Go, in nanoseconds, so that scripts
		// compare durations exactly as the built-ins do.
		idle := 0.0
		if v.Used && !v.LastUsed.IsZero() {
			idle = p.Now.Sub(v.LastUsed).Seconds()
		}
		st.servantTabs[i].RawSetString("idle_for", lua.LNumber(idle))
	}
}

func (st *state) end() { st.plan, st.calls, st.servants = nil, nil, nil }

// args skips the plan table when a plan function is called as a method
// (plan:assign(i, j)) rather than a function (plan.assign(i, j)).
func planArgs(L *lua.LState) int {
	if L.GetTop() > 0 && L.Get(1).Type() == lua.LTTable {
		return 2
	}
	return 1
}

// planAssign is plan.assign(call_index, servant_index): both 1-based.
func (st *state) planAssign(L *lua.LState) int {
	a := planArgs(L)
	L.Push(lua.LBool(st.assign(L.CheckInt(a)-1, L.CheckInt(a+1)-1)))
	return 1
}

// assign records a decision (0-based indexes) and shows its effect on the
// servant's table at once, so the script's view stays consistent.
func (st *state) assign(ci, si int) bool {
	if st.plan == nil || !st.plan.Assign(ci, si) {
		return false
	}
	st.syncServant(st.servantTabs[si], &st.shadow[si], st.servants[si], si+1)
	return true
}

// planCanTake is plan.can_take(servant_index, call_index).
func (st *state) planCanTake(L *lua.LState) int {
	a := planArgs(L)
	si, ci := L.CheckInt(a)-1, L.CheckInt(a+1)-1
	ok := st.plan != nil && si >= 0 && si < len(st.servants) && ci >= 0 && ci < len(st.calls) &&
		!st.plan.Assigned(ci) && st.plan.CanTake(st.servants[si], st.calls[ci])
	L.Push(lua.LBool(ok))
	return 1
}

// planWakeIn is plan.wake_in(seconds): run another round that long after
// this round's time.
func (st *state) planWakeIn(L *lua.LState) int {
	a := planArgs(L)
	d := float64(L.CheckNumber(a))
	if st.plan != nil {
		st.plan.WakeAt(st.plan.Now.Add(time.Duration(d * 1e9)))
	}
	return 0
}

// planAnyFree is plan.any_free(): whether any servant could take a call
// now; an algorithm stops when it turns false.
func (st *state) planAnyFree(L *lua.LState) int {
	ok := false
	if st.plan != nil {
		for _, s := range st.servants {
			if s.Available() && (s.Free() > 0 || s.Backlog < st.plan.MaxBacklog) {
				ok = true
				break
			}
		}
	}
	L.Push(lua.LBool(ok))
	return 1
}

// planWakeAt is plan.wake_at(seconds): run another round then.
func (st *state) planWakeAt(L *lua.LState) int {
	a := planArgs(L)
	t := float64(L.CheckNumber(a))
	if st.plan != nil {
		st.plan.WakeAt(time.Unix(0, int64(t*1e9)))
	}
	return 0
}
