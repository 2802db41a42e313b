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
	shadow      []shown
	servantMeta *lua.LTable // computes idle_for when a script reads it

	// plan.held: routing string → how many available servants hold it
	// (their last call had it), kept in step with the servant tables.
	heldTab   *lua.LTable
	heldCount map[string]int
	heldKeys  int // keys ever added to heldTab, which never forgets one

	// The free servants holding each routing string, built in a round when
	// a script first asks (plan.free_holder, plan.first_free_holder) and
	// kept in step with its assignments.
	holdings      dispatch.Holdings
	holdingsBuilt bool

	// Tables of waiting calls, reused while a call waits.
	callTabs map[*dispatch.Call]*callTab
	callsTab *lua.LTable
	round    uint64
	callMeta *lua.LTable

	// The round in progress, for the plan functions. now stays after the
	// round for tables a script kept.
	now      time.Time
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
		callTabs: map[*dispatch.Call]*callTab{},
		heldTab:  L.NewTable(), heldCount: map[string]int{},
	}
	L.SetContext(st.budget)
	st.callMeta = L.NewTable()
	st.callMeta.RawSetString("__index", L.NewFunction(st.callIndex))
	st.servantMeta = L.NewTable()
	st.servantMeta.RawSetString("__index", L.NewFunction(st.servantIndex))
	st.planTab = L.NewTable()
	planMeta := L.NewTable()
	planMeta.RawSetString("__index", L.NewFunction(st.planIndex))
	L.SetMetatable(st.planTab, planMeta)
	st.planTab.RawSetString("assign", L.NewFunction(st.planAssign))
	st.planTab.RawSetString("can_take", L.NewFunction(st.planCanTake))
	st.planTab.RawSetString("wake_at", L.NewFunction(st.planWakeAt))
	st.planTab.RawSetString("wake_in", L.NewFunction(st.planWakeIn))
	st.planTab.RawSetString("any_free", L.NewFunction(st.planAnyFree))
	st.planTab.RawSetString("held", st.heldTab)
	st.planTab.RawSetString("first_free_holder", L.NewFunction(st.planFirstFreeHolder))
	st.planTab.RawSetString("free_holder", L.NewFunction(st.planFreeHolder))
	st.planTab.RawSetString("next_unheld", L.NewFunction(st.planNextUnheld))
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
		L.SetMetatable(t, st.servantMeta)
		st.servantTabs = append(st.servantTabs, t)
		st.shadow = append(st.shadow, shown{}) // index 0: the first sync sets every field
		st.servantsTab.RawSetInt(len(st.servantTabs), t)
	}
	for len(st.servantTabs) > len(views) {
		sh := &st.shadow[len(st.shadow)-1]
		st.hold(sh.holds, sh.lastRoute, -1)
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

// shown is what a servant's table shows, to compare with the view.
type shown struct {
	index             int // 0 until the table is first filled
	name, addr, host  string
	tags              []string
	slots, inFlight   int
	backlog           int
	used              bool
	lastRoute         string
	lastUsed          time.Time
	healthy, draining bool
	ejected           bool
	holds             bool // used and available: it counts in plan.held
	latency           time.Duration
	served            uint64
}

// syncServant updates the fields of t that differ between sh (what t
// shows) and v.
func (st *state) syncServant(t *lua.LTable, sh *shown, v *dispatch.Servant, index int) {
	full := sh.index == 0
	if full {
		t.RawSetString("index", count(index))
		sh.index = index
	}
	if full || sh.name != v.Name || sh.addr != v.Addr || sh.host != v.Host {
		t.RawSetString("name", lua.LString(v.Name))
		t.RawSetString("addr", lua.LString(v.Addr))
		t.RawSetString("host", lua.LString(v.Host))
		sh.name, sh.addr, sh.host = v.Name, v.Addr, v.Host
	}
	if full || !slices.Equal(sh.tags, v.Tags) {
		tags := st.L.CreateTable(len(v.Tags), len(v.Tags))
		for i, tag := range v.Tags {
			tags.RawSetInt(i+1, lua.LString(tag))
			tags.RawSetString(tag, lua.LTrue)
		}
		t.RawSetString("tags", tags)
		sh.tags = slices.Clone(v.Tags)
	}
	if full || sh.slots != v.Slots {
		t.RawSetString("slots", count(v.Slots))
	}
	if full || sh.slots != v.Slots || sh.inFlight != v.InFlight {
		t.RawSetString("in_flight", count(v.InFlight))
		t.RawSetString("free", count(v.Free()))
		sh.slots, sh.inFlight = v.Slots, v.InFlight
	}
	if full || sh.backlog != v.Backlog {
		t.RawSetString("backlog", count(v.Backlog))
		sh.backlog = v.Backlog
	}
	// A table never filled holds nothing, so the first sync only adds.
	if holds := v.Used && v.Available(); sh.holds != holds || (holds && sh.lastRoute != v.LastRoute) {
		st.hold(sh.holds, sh.lastRoute, -1)
		st.hold(holds, v.LastRoute, +1)
		sh.holds = holds
	}
	if full || sh.used != v.Used || sh.lastRoute != v.LastRoute {
		t.RawSetString("used", lua.LBool(v.Used))
		if v.Used {
			t.RawSetString("last_route", lua.LString(v.LastRoute))
		} else {
			t.RawSetString("last_route", lua.LNil)
		}
		sh.used, sh.lastRoute = v.Used, v.LastRoute
	}
	if full || !sh.lastUsed.Equal(v.LastUsed) {
		t.RawSetString("last_used", seconds(v.LastUsed))
		sh.lastUsed = v.LastUsed
	}
	if full || sh.healthy != v.Healthy || sh.draining != v.Draining || sh.ejected != v.Ejected {
		t.RawSetString("healthy", lua.LBool(v.Healthy))
		t.RawSetString("draining", lua.LBool(v.Draining))
		t.RawSetString("ejected", lua.LBool(v.Ejected))
		t.RawSetString("available", lua.LBool(v.Available()))
		sh.healthy, sh.draining, sh.ejected = v.Healthy, v.Draining, v.Ejected
	}
	if full || sh.latency != v.Latency {
		t.RawSetString("latency", lua.LNumber(v.Latency.Seconds()))
		sh.latency = v.Latency
	}
	if full || sh.served != v.Served {
		t.RawSetString("served", lua.LNumber(float64(v.Served)))
		sh.served = v.Served
	}
}

// hold adds delta to the count in plan.held of route, when holds: an
// available servant that has been used holds its last routing string.
func (st *state) hold(holds bool, route string, delta int) {
	if !holds {
		return
	}
	was := st.heldCount[route]
	n := was + delta
	if n <= 0 {
		delete(st.heldCount, route)
		st.heldTab.RawSetString(route, lua.LNil)
		return
	}
	if was == 0 {
		st.heldKeys++
	}
	st.heldCount[route] = n
	st.heldTab.RawSetString(route, count(n))
}

// renewHeld replaces plan.held with a new table once the old one has seen
// many more routing strings than servants hold now: a gopher-lua table
// keeps every string key it was ever given in its iteration order, so with
// routing strings that keep changing it would grow without bound.
func (st *state) renewHeld() {
	if st.heldKeys <= 2*len(st.heldCount)+1024 {
		return
	}
	st.heldTab = st.L.CreateTable(0, len(st.heldCount))
	for route, n := range st.heldCount {
		st.heldTab.RawSetString(route, count(n))
	}
	st.heldKeys = len(st.heldCount)
	st.planTab.RawSetString("held", st.heldTab)
}

// callTab is the table showing one waiting call, with what its route and
// index fields show, so that a round sets only what changed.
type callTab struct {
	t     *lua.LTable
	route string
	index int
	round uint64 // the last round that showed it
}

// callTable returns the table showing c, the index-th waiting call,
// reusing it while c waits. Its "args" field is decoded from the params on
// first use.
func (st *state) callTable(c *dispatch.Call, index int) *lua.LTable {
	ct := st.callTabs[c]
	if ct == nil {
		L := st.L
		t := L.CreateTable(0, 7)
		t.RawSetString("method", lua.LString(c.Method))
		t.RawSetString("user", lua.LString(c.User))
		t.RawSetString("params", lua.LString(c.Params))
		t.RawSetString("arrived", seconds(c.Arrived))
		t.RawSetString("route", lua.LString(c.Route))
		t.RawSetString("index", count(index))
		L.SetMetatable(t, st.callMeta)
		ct = &callTab{t: t, route: c.Route, index: index}
		st.callTabs[c] = ct
	}
	if ct.route != c.Route {
		ct.t.RawSetString("route", lua.LString(c.Route))
		ct.route = c.Route
	}
	if ct.index != index {
		ct.t.RawSetString("index", count(index))
		ct.index = index
	}
	ct.round = st.round
	return ct.t
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
		for c, ct := range st.callTabs {
			if ct.round != st.round {
				delete(st.callTabs, c)
			}
		}
	}
	return st.callsTab
}

// begin prepares a round: the plan functions act on p.
func (st *state) begin(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	st.plan, st.calls, st.servants, st.now = p, calls, servants, p.Now
	st.holdingsBuilt = false
	st.syncServants(servants)
	st.renewHeld()
}

// planIndex is the __index of the plan table: plan.now is made when a
// script reads it, since most rounds do not.
func (st *state) planIndex(L *lua.LState) int {
	if L.CheckString(2) != "now" {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(seconds(st.now))
	return 1
}

// servantIndex is the __index of servant tables: idle_for, the seconds
// since the servant's last call finished (0 for a servant never used), is
// computed when read, in nanoseconds, so that scripts compare durations
// exactly as the built-ins do.
func (st *state) servantIndex(L *lua.LState) int {
	t := L.CheckTable(1)
	if L.CheckString(2) != "idle_for" {
		L.Push(lua.LNil)
		return 1
	}
	idle := 0.0
	if i, ok := t.RawGetString("index").(lua.LNumber); ok && int(i) >= 1 && int(i) <= len(st.shadow) {
		if sh := &st.shadow[int(i)-1]; sh.used && !sh.lastUsed.IsZero() {
			idle = st.now.Sub(sh.lastUsed).Seconds()
		}
	}
	L.Push(lua.LNumber(idle))
	return 1
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
	if st.plan == nil {
		return false
	}
	var ok bool
	if st.holdingsBuilt {
		ok = st.holdings.Assign(st.plan, ci, si)
	} else {
		ok = st.plan.Assign(ci, si)
	}
	if ok {
		st.syncServant(st.servantTabs[si], &st.shadow[si], st.servants[si], si+1)
	}
	return ok
}

// roundHoldings returns the index of free holders for the round in
// progress, building it on first use.
func (st *state) roundHoldings() *dispatch.Holdings {
	if !st.holdingsBuilt {
		st.holdings.Reset(st.servants)
		st.holdingsBuilt = true
	}
	return &st.holdings
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

// planFreeHolder is plan.free_holder(i): the index of the first servant,
// in list order, that holds call i's routing string (its last call had
// it) and can take call i now; nil when there is none or call i is
// assigned already.
func (st *state) planFreeHolder(L *lua.LState) int {
	a := planArgs(L)
	ci := L.CheckInt(a) - 1
	if st.plan == nil || ci < 0 || ci >= len(st.calls) || st.plan.Assigned(ci) {
		L.Push(lua.LNil)
		return 1
	}
	if si := st.roundHoldings().FreeHolder(st.servants, st.calls[ci]); si >= 0 {
		L.Push(count(si + 1))
	} else {
		L.Push(lua.LNil)
	}
	return 1
}

// planFirstFreeHolder is plan.first_free_holder(): the oldest waiting
// call not yet assigned that a free servant holding its routing string can
// take, and that servant (the first such in list order), as i, j; nil when
// there is none. It is plan.free_holder over the whole queue, with an
// index instead of a walk through the servants for each call.
func (st *state) planFirstFreeHolder(L *lua.LState) int {
	if st.plan == nil {
		L.Push(lua.LNil)
		return 1
	}
	h := st.roundHoldings()
	if h.AnyFreeHolder() {
		for ci, c := range st.calls[:min(len(st.calls), maxWindow)] {
			if st.plan.Assigned(ci) {
				continue
			}
			if si := h.FreeHolder(st.servants, c); si >= 0 {
				L.Push(count(ci + 1))
				L.Push(count(si + 1))
				return 2
			}
		}
	}
	L.Push(lua.LNil)
	return 1
}

// planNextUnheld is plan.next_unheld(i): the index of the first waiting
// call after call i (from the first when i is 0 or nil), not yet assigned,
// whose routing string no available servant holds (plan.held has no
// entry); nil when there is none.
func (st *state) planNextUnheld(L *lua.LState) int {
	a := planArgs(L)
	from := L.OptInt(a, 0)
	if st.plan != nil {
		for ci := max(from, 0); ci < min(len(st.calls), maxWindow); ci++ {
			if !st.plan.Assigned(ci) && st.heldCount[st.calls[ci].Route] == 0 {
				L.Push(count(ci + 1))
				return 1
			}
		}
	}
	L.Push(lua.LNil)
	return 1
}

// smallCounts holds the Lua numbers 0 to 1023 boxed once: storing a number
// in a table or on the stack otherwise allocates, and counts (slots, in
// flight, indexes) are set every round.
var smallCounts = func() (v [1024]lua.LValue) {
	for i := range v {
		v[i] = lua.LNumber(i)
	}
	return
}()

// count returns n as a Lua number, without allocating for small n.
func count(n int) lua.LValue {
	if n >= 0 && n < len(smallCounts) {
		return smallCounts[n]
	}
	return lua.LNumber(n)
}
