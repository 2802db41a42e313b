package plugin

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mserve/mserve/sdk/dispatch"
)

const failsafe = 10 * time.Second

// connect serves p in-process over go-plugin's gRPC test connection and
// returns mserve's side of it.
func connect(t *testing.T, p Plugin) *Client {
	t.Helper()
	client, _ := goplugin.TestPluginGRPCConn(t, false, map[string]goplugin.Plugin{PluginName: &GRPCPlugin{Impl: newServer(p)}})
	// Closing the client asks the server to stop (go-plugin's controller
	// Shutdown); stopping it here as well would race with that.
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := raw.(*Client)
	if !ok {
		t.Fatalf("Dispense returned %T, want *Client", raw)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), failsafe)
	t.Cleanup(cancel)
	return c
}

// firstFree assigns each call to the first servant that can take it.
type firstFree struct{}

func (firstFree) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	for i, c := range calls {
		for j, s := range servants {
			if p.CanTake(s, c) && p.Assign(i, j) {
				break
			}
		}
	}
}

// counting counts the rounds an instance ran and reports the count as the
// wake-up time (Unix seconds).
type counting struct{ rounds int64 }

func (c *counting) Assign(_ []*dispatch.Call, _ []*dispatch.Servant, p *dispatch.Plan) {
	c.rounds++
	p.WakeAt(time.Unix(c.rounds, 0))
}

// observing records what Done reports.
type observing struct {
	mu   sync.Mutex
	seen []observed
}

type observed struct {
	method  string
	servant dispatch.Servant
	exec    time.Duration
	ok      bool
}

func (o *observing) Assign([]*dispatch.Call, []*dispatch.Servant, *dispatch.Plan) {}

func (o *observing) Done(c *dispatch.Call, s *dispatch.Servant, exec time.Duration, ok bool) {
	o.mu.Lock()
	o.seen = append(o.seen, observed{c.Method, *s, exec, ok})
	o.mu.Unlock()
}

// testPlugin provides the algorithms and routers these tests use.
func testPlugin(news *sync.Map, obs *observing) Plugin {
	count := func(name string) {
		n, _ := news.LoadOrStore(name, new(int64))
		*(n.(*int64))++
	}
	return Plugin{
		Algorithms: map[string]AlgorithmSpec{
			"zeta":  {Summary: "last by name", New: func() dispatch.Algorithm { return firstFree{} }},
			"first": {Summary: "first free servant", Backlog: 2, New: func() dispatch.Algorithm { count("first"); return firstFree{} }},
			"count": {New: func() dispatch.Algorithm { count("count"); return &counting{} }},
			"observe": {New: func() dispatch.Algorithm {
				if obs == nil {
					return &observing{}
				}
				return obs
			}},
			"wild": {New: func() dispatch.Algorithm {
				return dispatch.AlgorithmFunc(func(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
					p.Assign(5, 0) // out of range: refused
					p.Assign(0, 1) // servant 1 is draining: refused
					p.Assign(0, 0)
					p.Assign(0, 0) // already assigned: refused
					p.WakeAt(time.Unix(300, 0))
					p.WakeAt(time.Unix(200, 0))
				})
			}},
		},
		Routes: map[string]RouteSpec{
			"sym": {Summary: "the first argument", Router: dispatch.RouterFunc(func(c *dispatch.Call) (string, error) {
				return strings.Trim(string(c.Params), `[]"`) + "@" + c.Method + "/" + c.User, nil
			})},
			"broken": {Router: dispatch.RouterFunc(func(*dispatch.Call) (string, error) {
				return "", errors.New("no routing string for you")
			})},
		},
	}
}

func TestDescribe(t *testing.T) {
	c := connect(t, testPlugin(&sync.Map{}, nil))
	m, err := c.Describe(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("protocol version", func(t *testing.T) {
		if m.Protocol != ProtocolVersion {
			t.Errorf("Protocol = %d, want %d", m.Protocol, ProtocolVersion)
		}
	})
	t.Run("algorithms sorted by name with summary and backlog", func(t *testing.T) {
		var names []string
		for _, a := range m.Algorithms {
			names = append(names, a.Name)
		}
		if !slices.Equal(names, []string{"count", "first", "observe", "wild", "zeta"}) {
			t.Errorf("algorithms %v", names)
		}
		for _, a := range m.Algorithms {
			if a.Name == "first" && (a.Summary != "first free servant" || a.Backlog != 2) {
				t.Errorf("first = %+v", a)
			}
		}
	})
	t.Run("routes sorted by name with summary", func(t *testing.T) {
		if len(m.Routes) != 2 || m.Routes[0].Name != "broken" || m.Routes[1].Name != "sym" || m.Routes[1].Summary != "the first argument" {
			t.Errorf("routes %+v", m.Routes)
		}
	})
	t.Run("an empty plugin describes nothing", func(t *testing.T) {
		m, err := connect(t, Plugin{}).Describe(ctx(t))
		if err != nil || len(m.Algorithms) != 0 || len(m.Routes) != 0 || m.Protocol != ProtocolVersion {
			t.Errorf("manifest %+v, %v", m, err)
		}
	})
}

var now = time.Unix(1_700_000_000, 123)

func servant(name string, slots, inFlight int) dispatch.Servant {
	return dispatch.Servant{Name: name, Addr: "127.0.0.1:7001", Host: "127.0.0.1", Slots: slots, InFlight: inFlight, Healthy: true}
}

func TestAssignReturnsThePlanThePluginBuilt(t *testing.T) {
	c := connect(t, testPlugin(&sync.Map{}, nil))
	tests := []struct {
		name       string
		req        AssignRequest
		want       []dispatch.Assignment
		wantWake   time.Time
		wantErrNot bool
	}{
		{
			name: "calls to free slots, in order",
			req: AssignRequest{Algorithm: "first", Now: now,
				Calls:    []dispatch.Call{{Method: "f"}, {Method: "f"}, {Method: "f"}},
				Servants: []dispatch.Servant{servant("s1", 1, 0), servant("s2", 1, 0)}},
			want: []dispatch.Assignment{{Call: 0, Servant: 0}, {Call: 1, Servant: 1}},
		},
		{
			name: "MaxBacklog lets calls wait on busy servants",
			req: AssignRequest{Algorithm: "first", Now: now, MaxBacklog: 1,
				Calls:    []dispatch.Call{{Method: "f"}, {Method: "f"}},
				Servants: []dispatch.Servant{servant("s1", 1, 1), servant("s2", 1, 1)}},
			want: []dispatch.Assignment{{Call: 0, Servant: 0, Backlog: true}, {Call: 1, Servant: 1, Backlog: true}},
		},
		{
			name: "the plugin's refused assignments are left out; the earliest wake-up is kept",
			req: AssignRequest{Algorithm: "wild", Now: now,
				Calls:    []dispatch.Call{{Method: "f"}},
				Servants: []dispatch.Servant{servant("s1", 1, 0), {Name: "s2", Addr: "x", Slots: 1, Healthy: true, Draining: true}}},
			want:     []dispatch.Assignment{{Call: 0, Servant: 0}},
			wantWake: time.Unix(200, 0),
		},
		{
			name: "servants serving only some functions",
			req: AssignRequest{Algorithm: "first", Now: now,
				Calls: []dispatch.Call{{Method: "g"}},
				Servants: []dispatch.Servant{
					{Name: "s1", Addr: "a:1", Slots: 1, Healthy: true, Functions: map[string]bool{"f": true}},
					{Name: "s2", Addr: "a:2", Slots: 1, Healthy: true, Functions: map[string]bool{"g": true}},
				}},
			want: []dispatch.Assignment{{Call: 0, Servant: 1}},
		},
		{
			name: "no calls, no assignments",
			req:  AssignRequest{Algorithm: "first", Now: now, Servants: []dispatch.Servant{servant("s1", 1, 0)}},
		},
		{
			// Servants with short names and no address are valid too.
			name: "minimal servants",
			req: AssignRequest{Algorithm: "first", Now: now,
				Calls:    []dispatch.Call{{Method: "f"}, {Method: "f"}},
				Servants: []dispatch.Servant{{Name: "a", Slots: 1, Healthy: true}, {Name: "b", Slots: 1, Healthy: true}}},
			want: []dispatch.Assignment{{Call: 0, Servant: 0}, {Call: 1, Servant: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Assign(ctx(t), &tt.req)
			if err != nil {
				t.Fatalf("Assign: %v", err)
			}
			if len(resp.Assignments) != len(tt.want) || (len(tt.want) > 0 && !slices.Equal(resp.Assignments, tt.want)) {
				t.Errorf("assignments %+v, want %+v", resp.Assignments, tt.want)
			}
			if !resp.Wake.Equal(tt.wantWake) {
				t.Errorf("wake %v, want %v", resp.Wake, tt.wantWake)
			}
		})
	}
}

func TestAssignSeesTheRequest(t *testing.T) {
	var got struct {
		sync.Mutex
		calls    []dispatch.Call
		servants []dispatch.Servant
		now      time.Time
		backlog  int
	}
	p := Plugin{Algorithms: map[string]AlgorithmSpec{"look": {New: func() dispatch.Algorithm {
		return dispatch.AlgorithmFunc(func(calls []*dispatch.Call, servants []*dispatch.Servant, pl *dispatch.Plan) {
			got.Lock()
			defer got.Unlock()
			for _, c := range calls {
				got.calls = append(got.calls, *c)
			}
			for _, s := range servants {
				got.servants = append(got.servants, *s)
			}
			got.now, got.backlog = pl.Now, pl.MaxBacklog
		})
	}}}}
	c := connect(t, p)
	req := &AssignRequest{Algorithm: "look", Session: 7, Now: now, MaxBacklog: 3,
		Calls: []dispatch.Call{{Method: "proc1", Params: []byte(`["IBM",1]`), Route: "IBM", User: "alice", Arrived: now.Add(-time.Second)}},
		Servants: []dispatch.Servant{{Name: "s1", Addr: "10.0.0.5:7001", Host: "10.0.0.5", Tags: []string{"gpu"}, Slots: 4, InFlight: 1, Backlog: 2,
			Used: true, LastRoute: "MSFT", LastUsed: now.Add(-time.Minute), Functions: map[string]bool{"proc1": true},
			Healthy: true, Latency: 3 * time.Millisecond, Served: 42}},
	}
	if _, err := c.Assign(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	got.Lock()
	defer got.Unlock()
	tests := []struct {
		name string
		ok   bool
	}{
		{"the round's time", got.now.Equal(now)},
		{"MaxBacklog", got.backlog == 3},
		{"one call and one servant", len(got.calls) == 1 && len(got.servants) == 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				t.Errorf("plugin saw now %v backlog %d calls %+v servants %+v", got.now, got.backlog, got.calls, got.servants)
			}
		})
	}
	if len(got.calls) != 1 || len(got.servants) != 1 {
		return
	}
	t.Run("the call's fields", func(t *testing.T) {
		cl := got.calls[0]
		if cl.Method != "proc1" || string(cl.Params) != `["IBM",1]` || cl.Route != "IBM" || cl.User != "alice" || !cl.Arrived.Equal(now.Add(-time.Second)) {
			t.Errorf("call %+v", cl)
		}
	})
	t.Run("the servant's fields", func(t *testing.T) {
		s := got.servants[0]
		if s.Name != "s1" || s.Addr != "10.0.0.5:7001" || s.Host != "10.0.0.5" || !slices.Equal(s.Tags, []string{"gpu"}) ||
			s.Slots != 4 || s.InFlight != 1 || s.Backlog != 2 || !s.Used || s.LastRoute != "MSFT" ||
			!s.LastUsed.Equal(now.Add(-time.Minute)) || len(s.Functions) != 1 || !s.Functions["proc1"] ||
			!s.Healthy || s.Draining || s.Ejected || s.Latency != 3*time.Millisecond || s.Served != 42 {
			t.Errorf("servant %+v", s)
		}
	})
}

func TestAssignKeepsOneInstancePerSession(t *testing.T) {
	news := &sync.Map{}
	c := connect(t, testPlugin(news, nil))
	rounds := []struct {
		name    string
		session uint64
		want    int64 // rounds the instance has run, including this one
	}{
		{"session 1, first round", 1, 1},
		{"session 1, second round uses the same instance", 1, 2},
		{"session 2 gets an instance of its own", 2, 1},
		{"session 1 again", 1, 3},
		{"session 2 again", 2, 2},
	}
	for _, r := range rounds {
		t.Run(r.name, func(t *testing.T) {
			resp, err := c.Assign(ctx(t), &AssignRequest{Algorithm: "count", Session: r.session, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Wake.Unix(); got != r.want {
				t.Errorf("instance has run %d rounds, want %d", got, r.want)
			}
		})
	}
	t.Run("New was called once per session", func(t *testing.T) {
		n, _ := news.Load("count")
		if n == nil || *(n.(*int64)) != 2 {
			t.Errorf("New called %v times, want 2", n)
		}
	})
	t.Run("concurrent rounds of many sessions", func(t *testing.T) {
		var wg sync.WaitGroup
		for s := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					if _, err := c.Assign(context.Background(), &AssignRequest{Algorithm: "count", Session: uint64(100 + s), Now: now}); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		n, _ := news.Load("count")
		if got := *(n.(*int64)); got != 2+8 {
			t.Errorf("New called %d times, want 10", got)
		}
	})
}

func TestAssignDeliversObservations(t *testing.T) {
	obs := &observing{}
	c := connect(t, testPlugin(&sync.Map{}, obs))
	req := &AssignRequest{Algorithm: "observe", Now: now,
		Servants: []dispatch.Servant{servant("s1", 4, 0), servant("s2", 2, 1)},
		Observed: []Observation{
			{Call: dispatch.Call{Method: "f", Route: "IBM"}, Servant: "s2", Execution: 3 * time.Millisecond, OK: true},
			{Call: dispatch.Call{Method: "g"}, Servant: "gone", Execution: time.Second, OK: false},
		},
	}
	if _, err := c.Assign(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.seen) != 2 {
		t.Fatalf("Done called %d times, want 2: %+v", len(obs.seen), obs.seen)
	}
	tests := []struct {
		name string
		o    observed
		want func(o observed) bool
	}{
		{"a known servant is passed with its current view", obs.seen[0], func(o observed) bool {
			return o.method == "f" && o.servant.Name == "s2" && o.servant.Slots == 2 && o.servant.InFlight == 1 && o.exec == 3*time.Millisecond && o.ok
		}},
		{"a servant that left is passed by name", obs.seen[1], func(o observed) bool {
			return o.method == "g" && o.servant.Name == "gone" && o.exec == time.Second && !o.ok
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.want(tt.o) {
				t.Errorf("Done saw %+v", tt.o)
			}
		})
	}
}

func TestAssignUnknownAlgorithm(t *testing.T) {
	c := connect(t, testPlugin(&sync.Map{}, nil))
	_, err := c.Assign(ctx(t), &AssignRequest{Algorithm: "nope", Now: now})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Assign = %v, want NotFound naming the algorithm", err)
	}
}

func TestRoute(t *testing.T) {
	c := connect(t, testPlugin(&sync.Map{}, nil))
	tests := []struct {
		name   string
		router string
		call   dispatch.Call
		want   string
		code   codes.Code
		errHas string
	}{
		{name: "the router's routing string", router: "sym", call: dispatch.Call{Method: "proc1", Params: []byte(`["IBM"]`), User: "alice"},
			want: "IBM@proc1/alice", code: codes.OK},
		{name: "an unknown router is NotFound", router: "nope", code: codes.NotFound, errHas: `"nope"`},
		{name: "a router's error is Unknown with its message", router: "broken", call: dispatch.Call{Method: "f"},
			code: codes.Unknown, errHas: "no routing string for you"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Route(ctx(t), &RouteRequest{Router: tt.router, Call: tt.call})
			if status.Code(err) != tt.code {
				t.Fatalf("Route = %v, want code %v", err, tt.code)
			}
			if tt.code != codes.OK {
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("error %v lacks %q", err, tt.errHas)
				}
				return
			}
			if resp.Route != tt.want {
				t.Errorf("route %q, want %q", resp.Route, tt.want)
			}
		})
	}
}
