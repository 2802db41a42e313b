package script

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"
	"go.uber.org/zap"
)

// Limits a script runs under.
const (
	callStackSize   = 200     // nested Lua calls: deep recursion fails with "stack overflow"
	registrySize    = 1024    // Lua value stack, grown on demand up to…
	registryMaxSize = 1 << 17 // …this many slots…
	registryGrow    = 1024    // …this many at a time
	maxString       = 1 << 20 // largest string string.rep or table.concat may build
	maxUnpack       = 4096    // most values unpack may push
	maxSubject      = 4096    // longest string a pattern function may search
	// maxMatchSteps bounds a pattern search's worst case: the subject's
	// length to the power of its unbounded repetitions (*, +, -), plus one
	// for trying every start position of an unanchored pattern. Lua
	// patterns backtrack, and the budget cannot stop one library call.
	maxMatchSteps = 2e6
)

// unsafeGlobals are removed from the base library: they load code from
// files or strings, reach outside the sandbox, or change other functions'
// environments.
var unsafeGlobals = []string{"dofile", "loadfile", "load", "loadstring", "require", "module",
	"getfenv", "setfenv", "collectgarbage", "newproxy", "_printregs"}

// newSandbox returns a Lua state with only the base (minus unsafeGlobals),
// table, string and math libraries, bounded stacks, string.rep and
// string.format that cannot allocate without bound, and print sent to log
// at debug level.
func newSandbox(log *zap.Logger, script string) *lua.LState {
	L := lua.NewState(lua.Options{
		SkipOpenLibs:     true,
		CallStackSize:    callStackSize,
		RegistrySize:     registrySize,
		RegistryMaxSize:  registryMaxSize,
		RegistryGrowStep: registryGrow,
	})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	for _, g := range unsafeGlobals {
		L.SetGlobal(g, lua.LNil)
	}
	str := L.GetGlobal("string").(*lua.LTable)
	rep := str.RawGetString("rep")
	str.RawSetString("rep", L.NewFunction(func(L *lua.LState) int {
		s, n := L.CheckString(1), L.CheckInt(2)
		if n > 0 && len(s)*n > maxString {
			L.RaiseError("string.rep: result of %d bytes exceeds the sandbox limit of %d", len(s)*n, maxString)
		}
		L.Push(rep)
		L.Push(lua.LString(s))
		L.Push(lua.LNumber(n))
		L.Call(2, 1)
		return 1
	}))
	format := str.RawGetString("format")
	str.RawSetString("format", L.NewFunction(func(L *lua.LState) int {
		if err := checkFormat(L.CheckString(1)); err != nil {
			L.RaiseError("string.format: %v", err)
		}
		top := L.GetTop()
		L.Push(format)
		for i := 1; i <= top; i++ {
			L.Push(L.Get(i))
		}
		L.Call(top, 1)
		return 1
	}))
	for _, name := range []string{"find", "match", "gmatch", "gsub"} {
		guardPattern(L, str, name)
	}
	guardConcat(L)
	guardUnpack(L)
	L.SetGlobal("print", L.NewFunction(func(L *lua.LState) int {
		parts := make([]string, L.GetTop())
		for i := range parts {
			parts[i] = L.ToStringMeta(L.Get(i + 1)).String()
		}
		log.Debug("script print", zap.String("script", script), zap.String("text", strings.Join(parts, "\t")))
		return 0
	}))
	return L
}

// wrap replaces tbl[name] with a function that runs check on the
// arguments, then calls the original with them.
func wrap(L *lua.LState, tbl *lua.LTable, name string, check func(L *lua.LState)) {
	orig := tbl.RawGetString(name)
	tbl.RawSetString(name, L.NewFunction(func(L *lua.LState) int {
		check(L)
		top := L.GetTop()
		L.Push(orig)
		for i := 1; i <= top; i++ {
			L.Push(L.Get(i))
		}
		L.Call(top, lua.MultRet)
		return L.GetTop() - top
	}))
}

// guardPattern bounds string.find, match, gmatch and gsub: a subject of at
// most maxSubject bytes, and no more than maxMatchSteps of backtracking in
// the worst case. (A plain find, the fourth argument true, is linear.)
func guardPattern(L *lua.LState, str *lua.LTable, name string) {
	wrap(L, str, name, func(L *lua.LState) {
		subject, pattern := L.CheckString(1), L.CheckString(2)
		if name == "find" && lua.LVAsBool(L.Get(4)) {
			return
		}
		if len(subject) > maxSubject {
			L.RaiseError("string.%s: subject of %d bytes exceeds the sandbox limit of %d", name, len(subject), maxSubject)
		}
		reps := repetitions(pattern)
		if !strings.HasPrefix(pattern, "^") {
			reps++
		}
		if reps > 1 && math.Pow(float64(len(subject)), float64(reps)) > maxMatchSteps {
			L.RaiseError("string.%s: pattern %q could take about %d^%d steps on this subject: too costly for the sandbox (limit %g)",
				name, pattern, len(subject), reps, float64(maxMatchSteps))
		}
		if name == "gsub" {
			if r, ok := L.Get(3).(lua.LString); ok && len(subject)*max(len(r), 1) > maxString {
				L.RaiseError("string.gsub: the result could exceed the sandbox limit of %d bytes", maxString)
			}
		}
	})
}

// repetitions counts a Lua pattern's unbounded repetition operators (*, +
// and -), skipping escaped characters and sets.
func repetitions(p string) int {
	n := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%':
			i++
		case '[':
			for i++; i < len(p) && p[i] != ']'; i++ {
				if p[i] == '%' {
					i++
				}
			}
		case '*', '+', '-':
			if i > 0 {
				n++
			}
		}
	}
	return n
}

// guardConcat bounds table.concat's result to maxString bytes.
func guardConcat(L *lua.LState) {
	wrap(L, L.GetGlobal("table").(*lua.LTable), "concat", func(L *lua.LState) {
		t := L.CheckTable(1)
		sep := len(L.OptString(2, ""))
		total := 0
		for i := 1; ; i++ {
			v := t.RawGetInt(i)
			if v == lua.LNil {
				break
			}
			if s, ok := v.(lua.LString); ok {
				total += len(s)
			} else {
				total += 24 // a number's text
			}
			total += sep
			if total > maxString {
				L.RaiseError("table.concat: result exceeds the sandbox limit of %d bytes", maxString)
			}
		}
	})
}

// guardUnpack bounds unpack to maxUnpack values.
func guardUnpack(L *lua.LState) {
	for _, tbl := range []*lua.LTable{L.G.Global, L.GetGlobal("table").(*lua.LTable)} {
		if tbl.RawGetString("unpack") == lua.LNil {
			continue
		}
		wrap(L, tbl, "unpack", func(L *lua.LState) {
			t := L.CheckTable(1)
			i := L.OptInt(2, 1)
			j := L.OptInt(3, t.Len())
			if j-i+1 > maxUnpack {
				L.RaiseError("unpack: %d values exceed the sandbox limit of %d", j-i+1, maxUnpack)
			}
		})
	}
}

// checkFormat refuses widths and precisions over two digits, as C Lua does:
// "%999999999d" would otherwise allocate a gigabyte in one call.
func checkFormat(f string) error {
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		i++
		if i < len(f) && f[i] == '%' {
			continue
		}
		for i < len(f) && strings.IndexByte("-+ #0", f[i]) >= 0 {
			i++
		}
		for _, part := range []bool{true, false} {
			if !part {
				if i >= len(f) || f[i] != '.' {
					break
				}
				i++
			}
			n := 0
			for i < len(f) && f[i] >= '0' && f[i] <= '9' {
				i++
				n++
			}
			if n > 2 {
				return fmt.Errorf("invalid format %q (width or precision too long)", f)
			}
		}
	}
	return nil
}

// budget is a context whose Done channel closes when a decision overruns
// its time budget. gopher-lua checks it before every instruction, so an
// endless loop stops there. One budget serves one Lua state; arming it does
// not allocate.
//
// Decisions come thousands of times a second and almost all end long before
// their budget, so the timer is not reset and stopped for each: it stays
// pending across decisions, and when it goes off it looks at the decision
// running then, re-arming itself for that decision's deadline. Under steady
// load it goes off about once per budget; when decisions stop, it goes off
// once more and stays quiet.
type budget struct {
	mu       sync.Mutex
	done     chan struct{}
	timer    *time.Timer
	timerAt  time.Time // when the pending timer goes off; zero when none is pending
	running  bool      // a decision is under way
	deadline time.Time // when it overruns
	expired  bool
}

var _ context.Context = (*budget)(nil)

func newBudget() *budget {
	b := &budget{done: make(chan struct{})}
	b.timer = time.AfterFunc(time.Hour, b.fire)
	b.timer.Stop()
	return b
}

// arm starts a decision with d to run. It returns false when the budget has
// expired before and the state must be replaced.
func (b *budget) arm(d time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.expired {
		return false
	}
	b.running = true
	b.deadline = time.Now().Add(d)
	if b.timerAt.IsZero() || b.deadline.Before(b.timerAt) {
		b.timer.Reset(d)
		b.timerAt = b.deadline
	}
	return true
}

// disarm ends the decision. The timer stays pending (see budget).
func (b *budget) disarm() {
	b.mu.Lock()
	b.running = false
	b.mu.Unlock()
}

// fire runs when the timer goes off. A decision still running past its
// deadline has overrun; one with time left re-arms the timer for its
// deadline.
func (b *budget) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timerAt = time.Time{}
	if b.expired || !b.running {
		return
	}
	if left := time.Until(b.deadline); left > 0 {
		b.timer.Reset(left)
		b.timerAt = b.deadline
		return
	}
	b.expired = true
	close(b.done)
}

func (b *budget) stop() { b.timer.Stop() }

// Deadline implements context.Context.
func (b *budget) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done implements context.Context.
func (b *budget) Done() <-chan struct{} { return b.done }

// Err implements context.Context.
func (b *budget) Err() error {
	select {
	case <-b.done:
		return errBudget
	default:
		return nil
	}
}

// Value implements context.Context.
func (b *budget) Value(any) any { return nil }

var errBudget = fmt.Errorf("time budget exceeded")
