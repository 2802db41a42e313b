// Package metrics exports mserve's Prometheus metrics: calls by function,
// servant and outcome, latency histograms, and, read at scrape time so that
// they cost nothing per call, queue length, per-servant state, scripts,
// plugins and connections.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// maxFunctions bounds the function label: beyond it, calls are counted
// under "other", so that clients calling made-up names cannot blow up the
// number of series.
const maxFunctions = 256

// Snapshot is the state read at each scrape.
type Snapshot struct {
	Queued, Running         int
	Redispatched, Ejections uint64
	Rejected, RouteErrors   uint64
	ConnsOpen               int
	ConnsRefused            uint64
	Servants                []Servant
	Scripts                 []Counters
	Plugins                 []Plugin
}

// Servant is one servant's state.
type Servant struct {
	Name                       string
	InFlight, Backlog, Slots   int
	Healthy, Draining, Ejected bool
	Served                     uint64
}

// Counters are a scripted function's totals.
type Counters struct {
	Name                         string
	Decisions, Fallbacks, Errors uint64
}

// Plugin is a compiled plugin's totals.
type Plugin struct {
	Name                                            string
	Healthy                                         bool
	Decisions, Calls, Fallbacks, Failures, Restarts uint64
}

// Metrics holds the registry and the per-call instruments.
type Metrics struct {
	reg       *prometheus.Registry
	calls     *prometheus.CounterVec
	elapsed   *prometheus.HistogramVec
	execution *prometheus.HistogramVec

	mu        sync.Mutex
	functions map[string]bool
}

var buckets = []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10, 30, 60}

// New registers mserve's metrics; snap is called at each scrape.
func New(snap func() Snapshot) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mserve_calls_total",
			Help: "Calls answered, by function, servant (empty when none ran it) and outcome (ok, error, or mserve's error name)."},
			[]string{"function", "servant", "outcome"}),
		elapsed: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mserve_call_elapsed_seconds",
			Help: "Time from a call's arrival to its answer, queue included.", Buckets: buckets}, []string{"function"}),
		execution: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mserve_call_execution_seconds",
			Help: "Time from sending a call to its servant to the servant's answer.", Buckets: buckets}, []string{"servant"}),
		functions: map[string]bool{},
	}
	m.reg.MustRegister(m.calls, m.elapsed, m.execution, &collector{snap: snap},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// function returns the label for a function name.
func (m *Metrics) function(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.functions[name] {
		return name
	}
	if len(m.functions) >= maxFunctions {
		return "other"
	}
	m.functions[name] = true
	return name
}

// Record counts one answered call; it is an engine.Config.Record function.
func (m *Metrics) Record(c *engine.Call, a *engine.Answer, _ time.Time) {
	fn := m.function(c.Method)
	m.calls.WithLabelValues(fn, a.Servant, a.Outcome()).Inc()
	m.elapsed.WithLabelValues(fn).Observe(a.Elapsed.Seconds())
	if a.Servant != "" && a.Execution > 0 {
		m.execution.WithLabelValues(a.Servant).Observe(a.Execution.Seconds())
	}
}

// Refused counts a request refused before the queue.
func (m *Metrics) Refused(method string, e *jsonrpc.Error) {
	m.calls.WithLabelValues(m.function(method), "", jsonrpc.CodeName(e.Code)).Inc()
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// collector reads a Snapshot at scrape time.
type collector struct{ snap func() Snapshot }

var (
	descQueued       = prometheus.NewDesc("mserve_queue_calls", "Calls waiting in mserve (queue and servant backlogs).", nil, nil)
	descRunning      = prometheus.NewDesc("mserve_running_calls", "Calls sent to servants and not yet answered.", nil, nil)
	descRedispatched = prometheus.NewDesc("mserve_redispatched_total", "Idempotent calls sent to another servant after theirs was lost.", nil, nil)
	descEjections    = prometheus.NewDesc("mserve_ejections_total", "Times a servant was ejected as an outlier.", nil, nil)
	descRejected     = prometheus.NewDesc("mserve_algorithm_rejected_total", "Assignments an algorithm made that were refused (a faulty script or plugin).", nil, nil)
	descRouteErrors  = prometheus.NewDesc("mserve_route_errors_total", "Calls whose routing function failed.", nil, nil)
	descConns        = prometheus.NewDesc("mserve_connections_open", "Client connections open.", nil, nil)
	descRefused      = prometheus.NewDesc("mserve_connections_refused_total", "Client connections refused at the limit.", nil, nil)
	descInFlight     = prometheus.NewDesc("mserve_servant_in_flight", "Calls running on a servant.", []string{"servant"}, nil)
	descBacklog      = prometheus.NewDesc("mserve_servant_backlog", "Calls waiting for a servant's slots.", []string{"servant"}, nil)
	descSlots        = prometheus.NewDesc("mserve_servant_slots", "Calls a servant runs at once.", []string{"servant"}, nil)
	descHealthy      = prometheus.NewDesc("mserve_servant_healthy", "1 when the servant is connected and passing health checks.", []string{"servant"}, nil)
	descDraining     = prometheus.NewDesc("mserve_servant_draining", "1 while the servant is drained for maintenance.", []string{"servant"}, nil)
	descEjected      = prometheus.NewDesc("mserve_servant_ejected", "1 while the servant is ejected as an outlier.", []string{"servant"}, nil)
	descScript       = prometheus.NewDesc("mserve_script_decisions_total", "Decisions or routing calls run by a Lua function.", []string{"function"}, nil)
	descScriptFB     = prometheus.NewDesc("mserve_script_fallbacks_total", "Decisions a built-in made because a Lua function could not.", []string{"function"}, nil)
	descScriptErr    = prometheus.NewDesc("mserve_script_errors_total", "Lua errors and budget overruns.", []string{"function"}, nil)
	descPlugin       = prometheus.NewDesc("mserve_plugin_decisions_total", "Batches decided by a compiled plugin.", []string{"plugin"}, nil)
	descPluginCalls  = prometheus.NewDesc("mserve_plugin_calls_total", "Calls in the batches sent to a plugin.", []string{"plugin"}, nil)
	descPluginFB     = prometheus.NewDesc("mserve_plugin_fallbacks_total", "Rounds decided by the fallback because a plugin could not.", []string{"plugin"}, nil)
	descPluginFail   = prometheus.NewDesc("mserve_plugin_failures_total", "Failed plugin decisions: errors, deadline overruns, garbage.", []string{"plugin"}, nil)
	descPluginRst    = prometheus.NewDesc("mserve_plugin_restarts_total", "Times a plugin process was restarted.", []string{"plugin"}, nil)
	descPluginUp     = prometheus.NewDesc("mserve_plugin_healthy", "1 when the plugin is up and deciding.", []string{"plugin"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descRunning, descRedispatched, descEjections, descRejected, descRouteErrors,
		descConns, descRefused, descInFlight, descBacklog, descSlots, descHealthy, descDraining, descEjected,
		descScript, descScriptFB, descScriptErr, descPlugin, descPluginCalls, descPluginFB, descPluginFail, descPluginRst, descPluginUp} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descQueued, float64(s.Queued))
	gauge(descRunning, float64(s.Running))
	counter(descRedispatched, s.Redispatched)
	counter(descEjections, s.Ejections)
	counter(descRejected, s.Rejected)
	counter(descRouteErrors, s.RouteErrors)
	gauge(descConns, float64(s.ConnsOpen))
	counter(descRefused, s.ConnsRefused)
	for _, v := range s.Servants {
		gauge(descInFlight, float64(v.InFlight), v.Name)
		gauge(descBacklog, float64(v.Backlog), v.Name)
		gauge(descSlots, float64(v.Slots), v.Name)
		gauge(descHealthy, b2f(v.Healthy), v.Name)
		gauge(descDraining, b2f(v.Draining), v.Name)
		gauge(descEjected, b2f(v.Ejected), v.Name)
	}
	for _, sc := range s.Scripts {
		counter(descScript, sc.Decisions, sc.Name)
		counter(descScriptFB, sc.Fallbacks, sc.Name)
		counter(descScriptErr, sc.Errors, sc.Name)
	}
	for _, p := range s.Plugins {
		counter(descPlugin, p.Decisions, p.Name)
		counter(descPluginCalls, p.Calls, p.Name)
		counter(descPluginFB, p.Fallbacks, p.Name)
		counter(descPluginFail, p.Failures, p.Name)
		counter(descPluginRst, p.Restarts, p.Name)
		gauge(descPluginUp, b2f(p.Healthy), p.Name)
	}
}
