package script

import (
	"context"
	"fmt"
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
	registryMaxSize = 1 << 17 // …this many slots
	maxStringRep    = 1 << 20 // largest string string.rep may build
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
		SkipOpenLibs:    true,
		CallStackSize:   callStackSize,
		RegistrySize:    registrySize,
		RegistryMaxSize: registryMaxSize,
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
		if n > 0 && len(s)*n > maxStringRep {
			L.RaiseError("string.rep: result of %d bytes exceeds the sandbox limit of %d", len(s)*n, maxStringRep)
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
type budget struct {
	mu       sync.Mutex
	done     chan struct{}
	timer    *time.Timer
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
	b.timer.Reset(d)
	return true
}

// disarm ends the decision.
func (b *budget) disarm() {
	b.mu.Lock()
	b.running = false
	b.timer.Stop()
	b.mu.Unlock()
}

// fire runs when the timer goes off. A timer that went off just as one
// decision ended and the next began finds the new deadline in the future
// and waits for it instead.
func (b *budget) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.expired || !b.running {
		return
	}
	if left := time.Until(b.deadline); left > 0 {
		b.timer.Reset(left)
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
