package core

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/metrics"
	"github.com/mserve/mserve/core/querylog"
)

// Status is a snapshot of a running balancer, for the status page, its
// JSON twin and mserve status.
type Status struct {
	Version   string           `json:"version"`
	Started   time.Time        `json:"started"`
	Uptime    string           `json:"uptime"`
	Native    string           `json:"native,omitempty"`
	HTTP      string           `json:"http,omitempty"`
	Algorithm string           `json:"algorithm"`
	Routing   string           `json:"routing"`
	Allowlist string           `json:"allowlist"`
	Queued    int              `json:"queued"`
	Running   int              `json:"running"`
	Calls     CallCounts       `json:"calls"`
	Conns     ConnCounts       `json:"connections"`
	Servants  []ServantStatus  `json:"servants"`
	Scripts   []ScriptStatus   `json:"scripts,omitempty"`
	Plugins   []PluginStatus   `json:"plugins,omitempty"`
	Errors    []querylog.Entry `json:"recent_errors"`
}

// CallCounts are totals since start.
type CallCounts struct {
	Answered     uint64 `json:"answered"`
	OK           uint64 `json:"ok"`
	ServantError uint64 `json:"servant_error"`
	Timeout      uint64 `json:"timeout"`
	ServantLost  uint64 `json:"servant_lost"`
	Overloaded   uint64 `json:"overloaded"`
	Cancelled    uint64 `json:"cancelled"`
	Other        uint64 `json:"other_error"`
	Redispatched uint64 `json:"redispatched"`
	Ejections    uint64 `json:"ejections"`
	Rejected     uint64 `json:"algorithm_rejected"`
	RouteErrors  uint64 `json:"route_errors"`
}

// ConnCounts describe client connections.
type ConnCounts struct {
	Open    int    `json:"open"`
	Limit   int    `json:"limit"`
	Refused uint64 `json:"refused"`
}

// ServantStatus is one servant.
type ServantStatus struct {
	Name      string   `json:"name"`
	Addr      string   `json:"addr"`
	Tags      []string `json:"tags"`
	Slots     int      `json:"slots"`
	InFlight  int      `json:"in_flight"`
	Backlog   int      `json:"backlog"`
	LastRoute string   `json:"last_route"`
	Healthy   bool     `json:"healthy"`
	Draining  bool     `json:"draining"`
	Ejected   bool     `json:"ejected"`
	Served    uint64   `json:"served"`
	LatencyMs float64  `json:"latency_ms"` // moving average of execution time
	P50Ms     float64  `json:"p50_ms"`     // median execution time over its recent calls
	P99Ms     float64  `json:"p99_ms"`
	Pid       int      `json:"pid,omitempty"`
	Restarts  int      `json:"restarts,omitempty"`
}

// ScriptStatus is one loaded Lua script.
type ScriptStatus struct {
	Path     string   `json:"path"`
	Provides []string `json:"provides"`
}

// PluginStatus is one compiled plugin.
type PluginStatus struct {
	Name      string `json:"name"`
	Healthy   bool   `json:"healthy"`
	Decisions uint64 `json:"decisions"`
	Calls     uint64 `json:"calls"`
	Fallbacks uint64 `json:"fallbacks"`
	Failures  uint64 `json:"failures"`
	Restarts  uint64 `json:"restarts"`
}

// Status returns a snapshot.
func (b *Balancer) Status() Status {
	st := b.eng.Stats()
	s := Status{
		Version: b.cfg.Version, Started: b.started, Uptime: time.Since(b.started).Round(time.Second).String(),
		Native: b.NativeAddr(), HTTP: b.HTTPAddr(),
		Algorithm: b.Algorithm(), Routing: b.Routing(), Allowlist: b.gate.String(),
		Queued: st.Queued, Running: st.Running,
		Calls: CallCounts{
			Answered: st.Answered, OK: st.OK, ServantError: st.ServantErrors, Timeout: st.Timeouts,
			ServantLost: st.Lost, Overloaded: st.Overloaded, Cancelled: st.Cancelled, Other: st.Other,
			Redispatched: st.Redispatched, Ejections: st.Ejections, Rejected: st.Rejected, RouteErrors: st.RouteErrors,
		},
	}
	if b.conns != nil {
		s.Conns = ConnCounts{Open: b.conns.Open(), Limit: b.conns.Limit(), Refused: b.conns.Refused()}
	}
	lat := b.qlog.Latencies()
	for _, v := range st.Servants {
		ss := ServantStatus{
			Name: v.Name, Addr: v.Addr, Tags: v.Tags, Slots: v.Slots, InFlight: v.InFlight, Backlog: v.Backlog,
			Healthy: v.Healthy, Draining: v.Draining, Ejected: v.Ejected, Served: v.Served,
			LatencyMs: float64(v.Latency) / float64(time.Millisecond),
		}
		if v.Used {
			ss.LastRoute = v.LastRoute
		}
		if ss.Tags == nil {
			ss.Tags = []string{}
		}
		if ds := lat[v.Name]; len(ds) > 0 {
			ss.P50Ms = float64(querylog.Percentile(ds, 0.5)) / float64(time.Millisecond)
			ss.P99Ms = float64(querylog.Percentile(ds, 0.99)) / float64(time.Millisecond)
		}
		if i := b.procIndex(v.Name); i >= 0 {
			ss.Pid, ss.Restarts = b.procs[i].Pid(), b.procs[i].Restarts()
		}
		s.Servants = append(s.Servants, ss)
	}
	if b.scripts != nil {
		for _, sc := range b.scripts.Set().Scripts {
			ps := ScriptStatus{Path: sc.Path}
			for name := range sc.Provides {
				ps.Provides = append(ps.Provides, name)
			}
			slices.Sort(ps.Provides)
			s.Scripts = append(s.Scripts, ps)
		}
	}
	s.Errors = b.qlog.Recent(20, querylog.Filter{NotOK: true})
	for _, h := range b.plugins {
		s.Plugins = append(s.Plugins, PluginStatus{
			Name: h.Name, Healthy: h.Healthy(), Decisions: h.Stats.Decisions.Load(), Calls: h.Stats.Calls.Load(),
			Fallbacks: h.Stats.Fallbacks.Load(), Failures: h.Stats.Failures.Load(), Restarts: h.Stats.Restarts.Load(),
		})
	}
	return s
}

// Servant returns the engine's handle on the servant called name and, for
// a servant mserve started, its process index; -1 for a remote servant.
func (b *Balancer) Servant(name string) (*engine.Servant, int) {
	s := b.eng.Lookup(name)
	if s == nil {
		return nil, -1
	}
	return s, b.procIndex(name)
}

// procIndex returns the index in b.procs of the process of the servant
// called name (spawnName), or -1 when mserve does not run it.
func (b *Balancer) procIndex(name string) int {
	n, ok := strings.CutPrefix(name, "s")
	i, err := strconv.Atoi(n)
	if !ok || err != nil || i < 1 || i > len(b.procs) || spawnName(i-1) != name {
		return -1
	}
	return i - 1
}

// snapshot is what the metrics read at each scrape.
func (b *Balancer) snapshot() metrics.Snapshot {
	st := b.eng.Stats()
	s := metrics.Snapshot{
		Queued: st.Queued, Running: st.Running, Redispatched: st.Redispatched, Ejections: st.Ejections,
		Rejected: st.Rejected, RouteErrors: st.RouteErrors,
	}
	if b.conns != nil {
		s.ConnsOpen, s.ConnsRefused = b.conns.Open(), b.conns.Refused()
	}
	for _, v := range st.Servants {
		s.Servants = append(s.Servants, metrics.Servant{Name: v.Name, InFlight: v.InFlight, Backlog: v.Backlog, Slots: v.Slots,
			Healthy: v.Healthy, Draining: v.Draining, Ejected: v.Ejected, Served: v.Served})
	}
	if b.scripts != nil {
		for _, sc := range b.scripts.Set().Scripts {
			for name := range sc.Provides {
				c := b.scripts.Counters(name)
				s.Scripts = append(s.Scripts, metrics.Counters{Name: name,
					Decisions: c.Decisions.Load(), Fallbacks: c.Fallbacks.Load(), Errors: c.Errors.Load()})
			}
		}
	}
	for _, h := range b.plugins {
		s.Plugins = append(s.Plugins, metrics.Plugin{Name: h.Name, Healthy: h.Healthy(), Decisions: h.Stats.Decisions.Load(),
			Calls: h.Stats.Calls.Load(), Fallbacks: h.Stats.Fallbacks.Load(), Failures: h.Stats.Failures.Load(), Restarts: h.Stats.Restarts.Load()})
	}
	return s
}
