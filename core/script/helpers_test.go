package script

// Helpers shared by the tests of this package: servant and call fixtures,
// hosts over temporary or shipped scripts, one-round runners, and loggers
// whose output the tests read.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/sdk/dispatch"
)

// t0 is the time of every scenario's round unless a test moves its clock.
var t0 = time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)

// shipped is the folder of the scripts shipped with mserve.
var shipped = filepath.Join("..", "..", "scripts")

// shippedScript returns the path of one shipped script.
func shippedScript(name string) string { return filepath.Join(shipped, name) }

// srv describes one servant's state for a scenario.
type srv struct {
	slots    int           // 0 means 1
	busy     int           // calls in flight
	backlog  int           // calls waiting in its backlog
	used     bool          // it has had a call since it joined
	route    string        // its last routing string (used servants)
	idle     time.Duration // how long before t0 its last call finished (used servants)
	down     bool          // not healthy
	draining bool
	ejected  bool     // taken out for a while by the engine
	serves   []string // functions it serves; nil means all
	tags     []string
}

// views makes the servant views of a scenario, as of now.
func views(now time.Time, ss ...srv) []*dispatch.Servant {
	out := make([]*dispatch.Servant, len(ss))
	for i, s := range ss {
		v := &dispatch.Servant{
			Name: fmt.Sprintf("s%d", i+1), Addr: fmt.Sprintf("127.0.0.1:%d", 7001+i), Host: "127.0.0.1",
			Tags: slices.Clone(s.tags), Slots: max(s.slots, 1), InFlight: s.busy, Backlog: s.backlog,
			Used: s.used, LastRoute: s.route, Healthy: !s.down, Draining: s.draining, Ejected: s.ejected,
		}
		if s.used {
			v.LastUsed = now.Add(-s.idle)
		}
		if s.serves != nil {
			v.Functions = map[string]bool{}
			for _, f := range s.serves {
				v.Functions[f] = true
			}
		}
		out[i] = v
	}
	return out
}

// cloneViews deep-copies servant views, so that two algorithms can each be
// handed their own.
func cloneViews(vs []*dispatch.Servant) []*dispatch.Servant {
	out := make([]*dispatch.Servant, len(vs))
	for i, v := range vs {
		c := *v
		c.Tags = slices.Clone(v.Tags)
		out[i] = &c
	}
	return out
}

// queue makes waiting calls from routing strings: "g:x" is a call to
// function g with routing string x, a bare "x" a call to f.
func queue(routes ...string) []*dispatch.Call {
	out := make([]*dispatch.Call, len(routes))
	for i, r := range routes {
		method := "f"
		if m, rest, ok := strings.Cut(r, ":"); ok {
			method, r = m, rest
		}
		params := fmt.Sprintf("[%q]", r)
		out[i] = &dispatch.Call{Method: method, Route: r, Params: []byte(params), Arrived: t0.Add(time.Duration(i-len(routes)) * time.Millisecond)}
	}
	return out
}

// outcome is what one round decided.
type outcome struct {
	assigned []dispatch.Assignment
	wake     time.Time
	rejected int
}

// round runs one round of a over calls and servants at now.
func round(a dispatch.Algorithm, calls []*dispatch.Call, servants []*dispatch.Servant, now time.Time) outcome {
	var p dispatch.Plan
	p.Reset(calls, servants, now)
	a.Assign(calls, servants, &p)
	return outcome{assigned: slices.Clone(p.Assignments()), wake: p.Wake(), rejected: p.Rejected()}
}

// describe renders assignments as "route→servant" pairs for messages.
func describe(as []dispatch.Assignment, calls []*dispatch.Call) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = fmt.Sprintf("#%d(%s)→s%d", a.Call+1, calls[a.Call].Route, a.Servant+1)
		if a.Backlog {
			parts[i] += "(backlog)"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// sameWake reports whether two wake-up times agree within 1µs (scripts see
// times as float seconds).
func sameWake(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	d := a.Sub(b)
	return d >= -time.Microsecond && d <= time.Microsecond
}

// writeScript writes src to dir/name and returns its path.
func writeScript(t testing.TB, dir, name, src string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newHost loads files into a host, failing the test on error.
func newHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	return h
}

// fieldString returns the string form of a logged entry's field, or "".
func fieldString(e observer.LoggedEntry, key string) string {
	for k, v := range e.ContextMap() {
		if k == key {
			return fmt.Sprint(v)
		}
	}
	return ""
}

// countingFallback is a fallback algorithm that counts the rounds it
// decides and decides them as orig does.
type countingFallback struct {
	rounds atomic.Int64
}

func (f *countingFallback) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	f.rounds.Add(1)
	algo.Orig{}.Assign(calls, servants, p)
}

// failFallback is a fallback that fails the test if it ever decides: used
// where the script must decide every round itself.
func failFallback(t testing.TB, name string) dispatch.Algorithm {
	return dispatch.AlgorithmFunc(func([]*dispatch.Call, []*dispatch.Servant, *dispatch.Plan) {
		t.Errorf("%s: the fallback decided a round: the script failed", name)
	})
}

// fixedRouter is a fallback router that answers route for every call and
// counts how often it was asked.
type fixedRouter struct {
	route string
	n     atomic.Int64
}

func (r *fixedRouter) Route(*dispatch.Call) (string, error) {
	r.n.Add(1)
	return r.route, nil
}
