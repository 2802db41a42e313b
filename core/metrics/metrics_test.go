package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// scrape GETs the handler's /metrics and parses the text format into
// samples keyed by `name{k="v",…}` with labels sorted by name.
func scrape(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			t.Fatalf("malformed sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("sample line %q: %v", line, err)
		}
		out[canonical(t, line[:sp])] = v
	}
	return out
}

// canonical sorts a sample's labels: name{b="2",a="1"} → name{a="1",b="2"}.
func canonical(t *testing.T, s string) string {
	t.Helper()
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return s
	}
	inner := strings.TrimSuffix(s[i+1:], "}")
	var pairs []string
	for inner != "" {
		eq := strings.IndexByte(inner, '=')
		if eq < 0 || len(inner) < eq+2 || inner[eq+1] != '"' {
			t.Fatalf("malformed labels in %q", s)
		}
		j := eq + 2
		for ; j < len(inner) && inner[j] != '"'; j++ {
			if inner[j] == '\\' {
				j++
			}
		}
		pairs = append(pairs, inner[:j+1])
		inner = strings.TrimPrefix(inner[j+1:], ",")
	}
	sort.Strings(pairs)
	return s[:i] + "{" + strings.Join(pairs, ",") + "}"
}

// key builds a sample key from a name and label pairs k, v, k, v…
func key(name string, kv ...string) string {
	if len(kv) == 0 {
		return name
	}
	var pairs []string
	for i := 0; i < len(kv); i += 2 {
		pairs = append(pairs, kv[i]+`="`+kv[i+1]+`"`)
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

func call(method string) *engine.Call {
	c := &engine.Call{ID: []byte("1")}
	c.Method = method
	return c
}

func empty() Snapshot { return Snapshot{} }

func TestRecordCountsCallsByFunctionServantAndOutcome(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		answer  engine.Answer
		servant string
		outcome string
	}{
		{"success", "proc1", engine.Answer{Result: []byte(`1`), Servant: "s1"}, "s1", "ok"},
		{"servant's own error", "proc1", engine.Answer{ServantErr: []byte(`{"code":1,"message":"x"}`), Servant: "s2"}, "s2", "error"},
		{"timeout on a servant", "proc2", engine.Answer{Err: jsonrpc.Errorf(jsonrpc.Timeout, "t"), Servant: "s1"}, "s1", "timeout"},
		{"overloaded, no servant", "proc2", engine.Answer{Err: jsonrpc.Errorf(jsonrpc.Overloaded, "o")}, "", "overloaded"},
		{"servant lost", "proc3", engine.Answer{Err: jsonrpc.Errorf(jsonrpc.ServantLost, "l"), Servant: "s3"}, "s3", "servant_lost"},
		{"cancelled in the queue", "proc3", engine.Answer{Err: jsonrpc.Errorf(jsonrpc.Cancelled, "c")}, "", "cancelled"},
		{"shutting down", "proc3", engine.Answer{Err: jsonrpc.Errorf(jsonrpc.ShuttingDown, "s")}, "", "shutting_down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(empty)
			a := tt.answer
			m.Record(call(tt.method), &a, time.Now())
			m.Record(call(tt.method), &a, time.Now())
			s := scrape(t, m)
			k := key("mserve_calls_total", "function", tt.method, "servant", tt.servant, "outcome", tt.outcome)
			if s[k] != 2 {
				t.Errorf("%s = %v, want 2", k, s[k])
			}
		})
	}
}

func TestRecordObservesHistograms(t *testing.T) {
	tests := []struct {
		name          string
		answer        engine.Answer
		wantExecution bool
	}{
		{"a call run by a servant observes both", engine.Answer{Servant: "s1", Elapsed: 3 * time.Millisecond, Execution: 2 * time.Millisecond}, true},
		{"a call no servant ran observes elapsed only", engine.Answer{Err: jsonrpc.Errorf(jsonrpc.Overloaded, "o"), Elapsed: 3 * time.Millisecond}, false},
		{"zero execution is not observed", engine.Answer{Servant: "s1", Elapsed: 3 * time.Millisecond}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(empty)
			a := tt.answer
			m.Record(call("f"), &a, time.Now())
			s := scrape(t, m)
			if got := s[key("mserve_call_elapsed_seconds_count", "function", "f")]; got != 1 {
				t.Errorf("elapsed count = %v, want 1", got)
			}
			if got := s[key("mserve_call_elapsed_seconds_sum", "function", "f")]; got != a.Elapsed.Seconds() {
				t.Errorf("elapsed sum = %v, want %v", got, a.Elapsed.Seconds())
			}
			// 3ms falls in the 5ms bucket, not the 2.5ms one.
			if s[key("mserve_call_elapsed_seconds_bucket", "function", "f", "le", "0.0025")] != 0 ||
				s[key("mserve_call_elapsed_seconds_bucket", "function", "f", "le", "0.005")] != 1 {
				t.Errorf("elapsed buckets wrong: %v", s)
			}
			k := key("mserve_call_execution_seconds_count", "servant", "s1")
			_, present := s[k]
			if present != tt.wantExecution {
				t.Errorf("execution histogram present = %v, want %v", present, tt.wantExecution)
			}
			if tt.wantExecution {
				if s[k] != 1 || s[key("mserve_call_execution_seconds_sum", "servant", "s1")] != a.Execution.Seconds() {
					t.Errorf("execution count %v sum %v", s[k], s[key("mserve_call_execution_seconds_sum", "servant", "s1")])
				}
			}
		})
	}
}

func TestRefusedCountsWithoutServant(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		err     *jsonrpc.Error
		outcome string
	}{
		{"undeclared", "nope", jsonrpc.Errorf(jsonrpc.MethodNotFound, "x"), "method_not_found"},
		{"bad arguments", "f", jsonrpc.Errorf(jsonrpc.InvalidParams, "x"), "invalid_params"},
		{"unauthorized", "f", jsonrpc.Errorf(jsonrpc.Unauthorized, "x"), "unauthorized"},
		{"parse error without a method", "", jsonrpc.Errorf(jsonrpc.ParseError, "x"), "parse_error"},
		{"too large", "", jsonrpc.Errorf(jsonrpc.TooLarge, "x"), "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(empty)
			m.Refused(tt.method, tt.err)
			s := scrape(t, m)
			k := key("mserve_calls_total", "function", tt.method, "servant", "", "outcome", tt.outcome)
			if s[k] != 1 {
				t.Errorf("%s = %v, want 1", k, s[k])
			}
			if _, ok := s[key("mserve_call_elapsed_seconds_count", "function", tt.method)]; ok {
				t.Error("a refusal observed the elapsed histogram")
			}
		})
	}
}

func TestFunctionLabelIsCapped(t *testing.T) {
	m := New(empty)
	for i := range maxFunctions {
		m.Refused(fmt.Sprintf("f%d", i), jsonrpc.Errorf(jsonrpc.MethodNotFound, "x"))
	}
	tests := []struct {
		name   string
		method string
		label  string
	}{
		{"a new name beyond the cap counts as other", "brand-new", "other"},
		{"another new name also counts as other", "another", "other"},
		{"a name seen before the cap keeps its label", "f0", "f0"},
		{"the last name within the cap keeps its label", fmt.Sprintf("f%d", maxFunctions-1), fmt.Sprintf("f%d", maxFunctions-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := scrape(t, m)
			a := engine.Answer{Servant: "s1", Elapsed: time.Millisecond, Execution: time.Millisecond}
			m.Record(call(tt.method), &a, time.Now())
			after := scrape(t, m)
			k := key("mserve_calls_total", "function", tt.label, "servant", "s1", "outcome", "ok")
			if after[k]-before[k] != 1 {
				t.Errorf("%s moved by %v, want 1", k, after[k]-before[k])
			}
			if tt.label == "other" {
				if _, ok := after[key("mserve_calls_total", "function", tt.method, "servant", "s1", "outcome", "ok")]; ok {
					t.Errorf("a series labelled %q exists beyond the cap", tt.method)
				}
				if after[key("mserve_call_elapsed_seconds_count", "function", "other")]-before[key("mserve_call_elapsed_seconds_count", "function", "other")] != 1 {
					t.Error("the elapsed histogram is not labelled other")
				}
			}
		})
	}
	t.Run("the number of function labels stays bounded", func(t *testing.T) {
		s := scrape(t, m)
		fns := map[string]bool{}
		for k := range s {
			if strings.HasPrefix(k, "mserve_calls_total{") {
				i := strings.Index(k, `function="`)
				fns[k[i+10:i+10+strings.IndexByte(k[i+10:], '"')]] = true
			}
		}
		if len(fns) != maxFunctions+1 {
			t.Errorf("%d function labels, want %d plus other", len(fns), maxFunctions)
		}
	})
}

func TestCollectorExportsTheSnapshot(t *testing.T) {
	snap := Snapshot{
		Queued: 7, Running: 3,
		Redispatched: 11, Ejections: 2,
		Rejected: 5, RouteErrors: 13,
		ConnsOpen: 17, ConnsRefused: 19,
		Servants: []Servant{
			{Name: "s1", InFlight: 1, Backlog: 2, Slots: 4, Healthy: true, Draining: false, Ejected: false, Served: 100},
			{Name: "s2", InFlight: 0, Backlog: 0, Slots: 1, Healthy: false, Draining: true, Ejected: true},
		},
		Scripts: []Counters{{Name: "lua.even", Decisions: 23, Fallbacks: 29, Errors: 31}},
		Plugins: []Plugin{
			{Name: "resume", Healthy: true, Decisions: 37, Calls: 41, Fallbacks: 43, Failures: 47, Restarts: 53},
			{Name: "dead", Healthy: false},
		},
	}
	var mu sync.Mutex
	scrapes := 0
	m := New(func() Snapshot {
		mu.Lock()
		scrapes++
		mu.Unlock()
		return snap
	})
	s := scrape(t, m)
	tests := []struct {
		key  string
		want float64
	}{
		{key("mserve_queue_calls"), 7},
		{key("mserve_running_calls"), 3},
		{key("mserve_redispatched_total"), 11},
		{key("mserve_ejections_total"), 2},
		{key("mserve_algorithm_rejected_total"), 5},
		{key("mserve_route_errors_total"), 13},
		{key("mserve_connections_open"), 17},
		{key("mserve_connections_refused_total"), 19},
		{key("mserve_servant_in_flight", "servant", "s1"), 1},
		{key("mserve_servant_backlog", "servant", "s1"), 2},
		{key("mserve_servant_slots", "servant", "s1"), 4},
		{key("mserve_servant_healthy", "servant", "s1"), 1},
		{key("mserve_servant_draining", "servant", "s1"), 0},
		{key("mserve_servant_ejected", "servant", "s1"), 0},
		{key("mserve_servant_in_flight", "servant", "s2"), 0},
		{key("mserve_servant_slots", "servant", "s2"), 1},
		{key("mserve_servant_healthy", "servant", "s2"), 0},
		{key("mserve_servant_draining", "servant", "s2"), 1},
		{key("mserve_servant_ejected", "servant", "s2"), 1},
		{key("mserve_script_decisions_total", "function", "lua.even"), 23},
		{key("mserve_script_fallbacks_total", "function", "lua.even"), 29},
		{key("mserve_script_errors_total", "function", "lua.even"), 31},
		{key("mserve_plugin_decisions_total", "plugin", "resume"), 37},
		{key("mserve_plugin_calls_total", "plugin", "resume"), 41},
		{key("mserve_plugin_fallbacks_total", "plugin", "resume"), 43},
		{key("mserve_plugin_failures_total", "plugin", "resume"), 47},
		{key("mserve_plugin_restarts_total", "plugin", "resume"), 53},
		{key("mserve_plugin_healthy", "plugin", "resume"), 1},
		{key("mserve_plugin_healthy", "plugin", "dead"), 0},
		{key("mserve_plugin_decisions_total", "plugin", "dead"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, ok := s[tt.key]
			if !ok {
				t.Fatalf("%s missing from the scrape", tt.key)
			}
			if got != tt.want {
				t.Errorf("%s = %v, want %v", tt.key, got, tt.want)
			}
		})
	}
	t.Run("runtime and process metrics are exported", func(t *testing.T) {
		for _, k := range []string{"go_goroutines", "process_open_fds"} {
			if _, ok := s[k]; !ok {
				t.Errorf("%s missing", k)
			}
		}
	})
	t.Run("the snapshot is read at each scrape", func(t *testing.T) {
		mu.Lock()
		before := scrapes
		mu.Unlock()
		scrape(t, m)
		mu.Lock()
		defer mu.Unlock()
		if scrapes != before+1 {
			t.Errorf("snapshot read %d times for one scrape", scrapes-before)
		}
	})
	t.Run("an empty snapshot exports zeros and no per-servant series", func(t *testing.T) {
		s := scrape(t, New(empty))
		if v, ok := s["mserve_queue_calls"]; !ok || v != 0 {
			t.Errorf("mserve_queue_calls = %v, %v", v, ok)
		}
		for k := range s {
			if strings.HasPrefix(k, "mserve_servant_") || strings.HasPrefix(k, "mserve_plugin_") || strings.HasPrefix(k, "mserve_script_") {
				t.Errorf("unexpected series %s", k)
			}
		}
	})
}

// TestConcurrentRecordAndScrape runs with -race.
func TestConcurrentRecordAndScrape(t *testing.T) {
	m := New(empty)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				a := engine.Answer{Servant: "s1", Elapsed: time.Millisecond, Execution: time.Microsecond}
				m.Record(call(fmt.Sprintf("g%d-%d", g, i)), &a, time.Now())
			}
		}()
	}
	wg.Wait()
	s := scrape(t, m)
	total := 0.0
	for k, v := range s {
		if strings.HasPrefix(k, "mserve_calls_total{") {
			total += v
		}
	}
	if total != 1200 {
		t.Errorf("calls counted %v, want 1200", total)
	}
	if s[key("mserve_calls_total", "function", "other", "servant", "s1", "outcome", "ok")] != 1200-maxFunctions {
		t.Errorf("other = %v, want %d", s[key("mserve_calls_total", "function", "other", "servant", "s1", "outcome", "ok")], 1200-maxFunctions)
	}
}
