package script

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
	"go.uber.org/zap"
)

// Kind is what a script registers.
type Kind string

// The kinds of functions a script can provide.
const (
	KindAlgorithm Kind = "algorithm" // mserve.algorithm(name, function(calls, servants, plan) … end)
	KindPicker    Kind = "picker"    // mserve.picker(name, function(call, servants, plan) return index end)
	KindRoute     Kind = "route"     // mserve.route(name, function(call) return "routing string" end)
)

// Script is one compiled Lua file and what it registers.
type Script struct {
	Path     string
	Provides map[string]Kind // name → kind
	proto    *lua.FunctionProto
	modTime  time.Time
	size     int64
}

// loadBudget bounds a script's top-level code, run once per Lua state.
const loadBudget = 500 * time.Millisecond

// compileFile parses and compiles a Lua file, then runs it once in a
// sandbox to learn what it registers. Errors carry the file and line.
func compileFile(path string, log *zap.Logger) (*Script, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	chunk, err := parse.Parse(f, path)
	if err != nil {
		var pe *parse.Error
		if errors.As(err, &pe) {
			if pe.Pos.Line < 0 {
				return nil, fmt.Errorf("%s: %s at EOF (the end of the file: an unclosed function, if or do?)", path, strings.TrimSpace(pe.Message))
			}
			return nil, fmt.Errorf("%s:%d:%d: %s near %q", path, pe.Pos.Line, pe.Pos.Column, strings.TrimSpace(pe.Message), pe.Token)
		}
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	proto, err := lua.Compile(chunk, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	s := &Script{Path: path, proto: proto, Provides: map[string]Kind{}, modTime: fi.ModTime(), size: fi.Size()}
	L := newSandbox(log, path)
	defer L.Close()
	reg := newRegistrar(L)
	if err := runChunk(L, proto); err != nil {
		return nil, err
	}
	if len(reg.fns) == 0 {
		return nil, fmt.Errorf("%s: registers nothing: call mserve.algorithm, mserve.picker or mserve.route", path)
	}
	for name, r := range reg.fns {
		s.Provides[name] = r.kind
	}
	return s, nil
}

// registered is one function a script handed to mserve.
type registered struct {
	kind Kind
	fn   *lua.LFunction
}

// registrar collects what a script registers while its chunk runs.
type registrar struct {
	fns map[string]registered
	err error
}

// newRegistrar installs the global table mserve (algorithm, picker, route,
// now) in L, recording registrations in the returned registrar.
func newRegistrar(L *lua.LState) *registrar {
	r := &registrar{fns: map[string]registered{}}
	mod := L.NewTable()
	for _, k := range []Kind{KindAlgorithm, KindPicker, KindRoute} {
		kind := k
		mod.RawSetString(string(kind), L.NewFunction(func(L *lua.LState) int {
			name := L.CheckString(1)
			fn := L.CheckFunction(2)
			if !validName(name) {
				L.ArgError(1, fmt.Sprintf("%s name %q: use letters, digits, '_', '.' and '-'", kind, name))
			}
			if old, dup := r.fns[name]; dup {
				L.RaiseError("%q is registered twice in this script (as %s and %s)", name, old.kind, kind)
			}
			r.fns[name] = registered{kind: kind, fn: fn}
			return 0
		}))
	}
	mod.RawSetString("now", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LNumber(float64(time.Now().UnixNano()) / 1e9))
		return 1
	}))
	mod.RawSetString("date", L.NewFunction(luaDate))
	mod.RawSetString("route_expire", lua.LNumber(12)) // the Host sets the configured value
	L.SetGlobal("mserve", mod)
	return r
}

// luaDate is mserve.date(s): the Unix time in seconds of a date
// (YYYY-MM-DD, UTC midnight) or RFC 3339 timestamp, or nil when s is
// neither. Scripts have no os library, so this is how they read dates.
func luaDate(L *lua.LState) int {
	s, ok := L.Get(1).(lua.LString)
	if !ok {
		L.Push(lua.LNil)
		return 1
	}
	for _, layout := range []string{time.DateOnly, time.RFC3339Nano} {
		if t, err := time.Parse(layout, string(s)); err == nil {
			L.Push(lua.LNumber(float64(t.UnixNano()) / 1e9))
			return 1
		}
	}
	L.Push(lua.LNil)
	return 1
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// runChunk runs a script's top level in L under loadBudget.
func runChunk(L *lua.LState, proto *lua.FunctionProto) error {
	b := newBudget()
	defer b.stop()
	L.SetContext(b)
	defer L.RemoveContext()
	b.arm(loadBudget)
	defer b.disarm()
	L.Push(L.NewFunctionFromProto(proto))
	if err := L.PCall(0, 0, nil); err != nil {
		return fmt.Errorf("%s: %v", proto.SourceName, err)
	}
	return nil
}

// Set is a consistent generation of compiled scripts: every name in it is
// provided by exactly one script.
type Set struct {
	Scripts []*Script
	names   map[string]*Script
	version uint64
}

// Provider returns the script providing name and what kind it is.
func (s *Set) Provider(name string) (*Script, Kind, bool) {
	sc, ok := s.names[name]
	if !ok {
		return nil, "", false
	}
	return sc, sc.Provides[name], true
}

// Names returns every name the set provides of kind k, sorted.
func (s *Set) Names(k Kind) []string {
	var out []string
	for n, sc := range s.names {
		if sc.Provides[n] == k {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// LuaFiles expands paths (files and folders, as in MSERVE_PLUGINS) into the
// Lua files they hold: a folder contributes its *.lua files, sorted; other
// entries are returned in others (plugin binaries, for the plugin host). A
// path that does not exist is an error when mustExist is set, and skipped
// otherwise (a script removed since launch).
func LuaFiles(paths []string, mustExist bool) (files, others []string, err error) {
	for _, p := range paths {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			if !mustExist && os.IsNotExist(err) {
				continue
			}
			return nil, nil, err
		}
		if !fi.IsDir() {
			if strings.HasSuffix(p, ".lua") {
				files = append(files, p)
			} else {
				others = append(others, p)
			}
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries { // ReadDir sorts by name
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".lua") {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	return files, others, nil
}
