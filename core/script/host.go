// Package script runs dispatch algorithms and routing functions written in
// Lua. Scripts are compiled once, run in a sandbox (no io, os, loading of
// code or debug; bounded stacks and strings; a time budget per decision),
// and reloaded when their files change. A script that fails or overruns its
// budget never drops a call: the decision falls back to a built-in
// algorithm, is counted, and the error is logged once.
//
// A script registers what it provides with the global table mserve:
//
//	mserve.algorithm(name, function(calls, servants, plan) ... end)
//	mserve.picker(name, function(call, servants) return servant_index end)
//	mserve.route(name, function(call) return "routing string" end)
//
// See docs/scripting.md for the tables scripts see.
package script

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultBudget is the time one decision may take when Config.Budget is 0.
const DefaultBudget = 5 * time.Millisecond

// Config sets up a Host.
type Config struct {
	Files  []string      // Lua files to load (see LuaFiles for expanding folders)
	Watch  []string      // files and folders whose changes trigger a reload
	Budget time.Duration // time one decision or routing call may take
	// RouteExpire is shown to scripts as mserve.route_expire (seconds),
	// for scripts that implement match's rule (default 12s).
	RouteExpire time.Duration
	Log         *zap.Logger
}

// Host owns the loaded scripts and reloads them.
type Host struct {
	cfg Config
	log *zap.Logger

	set     atomic.Pointer[Set]
	mu      sync.Mutex // serialises reloads
	version uint64

	stats   sync.Map // name → *Counters
	errLog  errorLog
	reloads atomic.Uint64
}

// Counters count one scripted function's work.
type Counters struct {
	Decisions atomic.Uint64 // rounds or routing calls run by the script
	Fallbacks atomic.Uint64 // rounds or calls handled by the fallback because the script failed
	Errors    atomic.Uint64 // script errors and budget overruns
}

// NewHost compiles cfg.Files. At launch every file must compile: a broken
// script is an error, with its file and line.
func NewHost(cfg Config) (*Host, error) {
	if cfg.Budget <= 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.RouteExpire <= 0 {
		cfg.RouteExpire = 12 * time.Second
	}
	h := &Host{cfg: cfg, log: cfg.Log}
	set, errs := h.build(cfg.Files, nil)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	h.publish(set)
	return h, nil
}

// Set returns the scripts in force.
func (h *Host) Set() *Set { return h.set.Load() }

// Budget returns the time budget per decision.
func (h *Host) Budget() time.Duration { return h.cfg.Budget }

// Log returns the host's logger.
func (h *Host) Log() *zap.Logger { return h.log }

// Counters returns the counters of the scripted function name.
func (h *Host) Counters(name string) *Counters {
	c, _ := h.stats.LoadOrStore(name, &Counters{})
	return c.(*Counters)
}

// Reloads returns how many reloads changed the scripts in force.
func (h *Host) Reloads() uint64 { return h.reloads.Load() }

func (h *Host) publish(set *Set) {
	h.version++
	set.version = h.version
	h.set.Store(set)
}

// build compiles files into a set. A file that fails to compile keeps its
// previous version from old, if any; names provided twice keep the first
// provider. The errors say what was kept.
func (h *Host) build(files []string, old *Set) (*Set, []error) {
	set := &Set{names: map[string]*Script{}}
	var errs []error
	prev := map[string]*Script{}
	if old != nil {
		for _, s := range old.Scripts {
			prev[s.Path] = s
		}
	}
	// Scripts loaded before claim their names first: a new file cannot
	// take a name from one already in force.
	files = slices.Clone(files)
	slices.SortStableFunc(files, func(a, b string) int {
		_, pa := prev[a]
		_, pb := prev[b]
		switch {
		case pa && !pb:
			return -1
		case pb && !pa:
			return 1
		}
		return 0
	})
	for _, path := range files {
		var sc *Script
		if p := prev[path]; p != nil && unchanged(p) {
			sc = p
		} else {
			var err error
			sc, err = compileFile(path, h.log)
			if err != nil {
				if p != nil {
					err = fmt.Errorf("%w (keeping the last version that compiled)", err)
					sc = p
				}
				errs = append(errs, err)
				if sc == nil {
					continue
				}
			}
		}
		clash := false
		for name := range sc.Provides {
			if other, dup := set.names[name]; dup {
				errs = append(errs, fmt.Errorf("%s: %q is already provided by %s; ignoring this script", sc.Path, name, other.Path))
				clash = true
				break
			}
		}
		if clash {
			continue
		}
		for name := range sc.Provides {
			set.names[name] = sc
		}
		set.Scripts = append(set.Scripts, sc)
	}
	return set, errs
}

// unchanged reports whether the file of s is as it was compiled.
func unchanged(s *Script) bool {
	fi, err := os.Stat(s.Path)
	return err == nil && fi.Size() == s.size && fi.ModTime().Equal(s.modTime)
}

// Reload recompiles the scripts under the watched paths. Calls in flight are
// not touched; the next decision of each algorithm and routing function
// uses the new scripts. A file that fails to compile keeps its last good
// version; its error, with the line, is logged.
func (h *Host) Reload(files []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.set.Load()
	set, errs := h.build(files, old)
	for _, err := range errs {
		h.log.Error("script not reloaded", zap.Error(err))
	}
	if sameScripts(old, set) {
		return
	}
	h.publish(set)
	h.reloads.Add(1)
	names := make([]string, 0, len(set.names))
	for n := range set.names {
		names = append(names, n)
	}
	sort.Strings(names)
	h.log.Info("scripts reloaded", zap.Int("scripts", len(set.Scripts)), zap.Strings("provides", names))
}

func sameScripts(a, b *Set) bool {
	if a == nil || len(a.Scripts) != len(b.Scripts) {
		return false
	}
	for i := range a.Scripts {
		if a.Scripts[i] != b.Scripts[i] {
			return false
		}
	}
	return true
}

// errorLog logs each distinct script error once, then at most once a
// minute with a count.
type errorLog struct {
	mu   sync.Mutex
	seen map[string]*errorSeen
}

type errorSeen struct {
	last  time.Time
	count int
}

func (l *errorLog) note(log *zap.Logger, name string, err error) {
	key := name + ": " + err.Error()
	now := time.Now()
	l.mu.Lock()
	if l.seen == nil || len(l.seen) > 1024 {
		l.seen = map[string]*errorSeen{}
	}
	s := l.seen[key]
	if s == nil {
		s = &errorSeen{}
		l.seen[key] = s
	}
	s.count++
	if !s.last.IsZero() && now.Sub(s.last) < time.Minute {
		l.mu.Unlock()
		return
	}
	n := s.count
	s.last, s.count = now, 0
	l.mu.Unlock()
	log.Warn("script failed; the built-in fallback decided instead", zap.String("function", name), zap.Error(err), zap.Int("times", n))
}
