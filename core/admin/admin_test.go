package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// balancer is a fake Balancer over a real engine: "local" was started by
// mserve (index 0), "remote" was not (index -1).
type balancer struct {
	eng       *engine.Engine
	local     *engine.Servant
	remote    *engine.Servant
	tr        *testkit.Transport // holds the calls sent to a servant
	reloadErr error

	mu         sync.Mutex
	restarted  []int
	restartErr error
	// drainingAtRestart records whether the servant was draining when
	// RestartServant ran.
	drainingAtRestart bool
}

func newBalancer(t *testing.T) *balancer {
	t.Helper()
	b := &balancer{tr: &testkit.Transport{Sent: make(chan *engine.Call, 16)}}
	b.eng = engine.New(engine.Config{Algorithm: testkit.FirstFree})
	b.local = b.eng.AddServant(engine.ServantSpec{Name: "local"}, b.tr)
	b.remote = b.eng.AddServant(engine.ServantSpec{Name: "remote"}, b.tr)
	b.local.Up(engine.Announce{})
	return b
}

func (b *balancer) Status() any {
	return map[string]any{"algorithm": "least", "servants": []string{"local", "remote"}}
}

func (b *balancer) Servant(name string) (*engine.Servant, int) {
	switch name {
	case "local":
		return b.local, 0
	case "remote":
		return b.remote, -1
	}
	return nil, 0
}

func (b *balancer) RestartServant(index int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.restarted = append(b.restarted, index)
	b.drainingAtRestart = b.local.View().Draining
	return b.restartErr
}

func (b *balancer) Reload() error { return b.reloadErr }

func (b *balancer) restarts() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.restarted...)
}

// busy submits a call that runs on "local" until the returned function
// answers it.
func (b *balancer) busy(t *testing.T) func() {
	t.Helper()
	c := &engine.Call{ID: []byte("1")}
	c.Method = "f"
	b.eng.Submit(c)
	sent := testkit.Recv(t, b.tr.Sent, "the call was not sent")
	var once sync.Once
	finish := func() {
		once.Do(func() { b.local.Done(sent, &jsonrpc.Response{Result: []byte(`1`)}, nil) })
	}
	t.Cleanup(finish)
	return finish
}

type reply struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

func do(t *testing.T, h http.Handler, method, path string) reply {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
	json.Unmarshal(b, &r.json)
	return r
}

func TestStatusAndHealth(t *testing.T) {
	b := newBalancer(t)
	h := New(b)
	t.Run("GET /status is the balancer's status as JSON", func(t *testing.T) {
		r := do(t, h, "GET", "/status")
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, Content-Type %q", r.status, r.header.Get("Content-Type"))
		}
		if r.json["algorithm"] != "least" || len(r.json["servants"].([]any)) != 2 {
			t.Errorf("body = %s", r.body)
		}
	})
	t.Run("GET /healthz says ok", func(t *testing.T) {
		r := do(t, h, "GET", "/healthz")
		if r.status != 200 || r.body != "ok\n" {
			t.Errorf("status %d body %q", r.status, r.body)
		}
	})
	t.Run("POST /status is not allowed", func(t *testing.T) {
		if r := do(t, h, "POST", "/status"); r.status != http.StatusMethodNotAllowed {
			t.Errorf("status %d, want 405", r.status)
		}
	})
	t.Run("GET on a maintenance route is not allowed", func(t *testing.T) {
		if r := do(t, h, "GET", "/servants/local/drain"); r.status != http.StatusMethodNotAllowed {
			t.Errorf("status %d, want 405", r.status)
		}
	})
	t.Run("an unknown path is 404", func(t *testing.T) {
		if r := do(t, h, "GET", "/nope"); r.status != http.StatusNotFound {
			t.Errorf("status %d, want 404", r.status)
		}
	})
}

func TestDrain(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		busy     bool
		status   int
		idle     bool
		inFlight float64
	}{
		{name: "without wait on an idle servant answers at once, idle", path: "/servants/local/drain", status: 200, idle: true},
		{name: "without wait on a busy servant answers at once, still draining", path: "/servants/local/drain", busy: true, status: 202, idle: false, inFlight: 1},
		{name: "with wait on an idle servant answers 200", path: "/servants/local/drain?wait=5s", status: 200, idle: true},
		{name: "with wait on a busy servant answers 202 after the wait", path: "/servants/local/drain?wait=20ms", busy: true, status: 202, idle: false, inFlight: 1},
		{name: "wait=0s is the same as no wait", path: "/servants/local/drain?wait=0s", busy: true, status: 202, idle: false, inFlight: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(t)
			if tt.busy {
				b.busy(t)
			}
			r := do(t, New(b), "POST", tt.path)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if r.json["servant"] != "local" || r.json["draining"] != true || r.json["idle"] != tt.idle || r.json["in_flight"] != tt.inFlight {
				t.Errorf("body = %s", r.body)
			}
			if !b.local.View().Draining {
				t.Error("the servant is not draining")
			}
		})
	}
}

func TestDrainWaitsForRunningCalls(t *testing.T) {
	b := newBalancer(t)
	finish := b.busy(t)
	got := make(chan reply, 1)
	go func() { got <- do(t, New(b), "POST", "/servants/local/drain?wait=30s") }()
	// Once the servant is draining the handler is waiting: finish the call.
	testkit.WaitFor(t, func() bool { return b.local.View().Draining }, "the servant to drain")
	finish()
	r := testkit.Recv(t, got, "drain did not answer once the servant was idle")
	if r.status != 200 || r.json["idle"] != true || r.json["in_flight"] != 0.0 {
		t.Errorf("status %d body %s; want 200 idle", r.status, r.body)
	}
}

func TestDrainMovesWaitingCallsElsewhere(t *testing.T) {
	b := newBalancer(t)
	b.busy(t) // local's only slot is taken
	c := &engine.Call{ID: []byte("2")}
	c.Method = "f"
	b.eng.Submit(c) // waits in the queue
	do(t, New(b), "POST", "/servants/local/drain")
	b.remote.Up(engine.Announce{})
	if testkit.Recv(t, b.tr.Sent, "the waiting call did not go to the other servant") != c {
		t.Error("another call was sent")
	}
}

func TestUndrain(t *testing.T) {
	b := newBalancer(t)
	h := New(b)
	do(t, h, "POST", "/servants/local/drain")
	r := do(t, h, "POST", "/servants/local/undrain")
	if r.status != 200 || r.json["servant"] != "local" || r.json["draining"] != false {
		t.Errorf("status %d body %s", r.status, r.body)
	}
	if b.local.View().Draining {
		t.Error("the servant is still draining")
	}
}

func TestUnknownServantIs404(t *testing.T) {
	b := newBalancer(t)
	for _, action := range []string{"drain", "undrain", "restart"} {
		t.Run(action, func(t *testing.T) {
			r := do(t, New(b), "POST", "/servants/ghost/"+action)
			if r.status != 404 || !strings.Contains(r.json["error"].(string), `"ghost"`) {
				t.Errorf("status %d body %s; want 404 naming the servant", r.status, r.body)
			}
			if r.header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", r.header.Get("Content-Type"))
			}
		})
	}
}

func TestBadWaitIs400(t *testing.T) {
	for _, action := range []string{"drain", "restart"} {
		for _, wait := range []string{"abc", "-1s", "5"} {
			t.Run(action+" wait="+wait, func(t *testing.T) {
				b := newBalancer(t)
				r := do(t, New(b), "POST", "/servants/local/"+action+"?wait="+wait)
				if r.status != 400 || !strings.Contains(r.json["error"].(string), "want a duration") {
					t.Errorf("status %d body %s; want 400", r.status, r.body)
				}
				if b.local.View().Draining {
					t.Error("a refused request drained the servant")
				}
				if len(b.restarts()) != 0 {
					t.Error("a refused request restarted the servant")
				}
			})
		}
	}
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		busy       bool
		restartErr error
		status     int
		restarted  []int
		errText    string
	}{
		{name: "a remote servant cannot be restarted (409)", path: "/servants/remote/restart", status: 409,
			errText: "was not started by mserve"},
		{name: "an idle local servant is restarted", path: "/servants/local/restart", status: 200, restarted: []int{0}},
		{name: "a restart that fails is 500", path: "/servants/local/restart", restartErr: errors.New("exec: no such file"),
			status: 500, restarted: []int{0}, errText: "exec: no such file"},
		{name: "a servant still busy after the wait is not restarted (504)", path: "/servants/local/restart?wait=20ms", busy: true,
			status: 504, errText: "still has calls running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(t)
			b.restartErr = tt.restartErr
			if tt.busy {
				b.busy(t)
			}
			r := do(t, New(b), "POST", tt.path)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if got := b.restarts(); len(got) != len(tt.restarted) || (len(got) > 0 && got[0] != tt.restarted[0]) {
				t.Errorf("RestartServant calls = %v, want %v", got, tt.restarted)
			}
			if tt.errText != "" && !strings.Contains(r.body, tt.errText) {
				t.Errorf("body %s lacks %q", r.body, tt.errText)
			}
			if tt.status == 200 && (r.json["servant"] != "local" || r.json["restarted"] != true) {
				t.Errorf("body = %s", r.body)
			}
			if b.local.View().Draining || b.remote.View().Draining {
				t.Error("a servant is left draining after the restart request")
			}
			if len(tt.restarted) > 0 && !b.drainingAtRestart {
				t.Error("the servant was not drained while it was restarted")
			}
		})
	}
}

func TestRestartWaitsForRunningCalls(t *testing.T) {
	b := newBalancer(t)
	finish := b.busy(t)
	got := make(chan reply, 1)
	go func() { got <- do(t, New(b), "POST", "/servants/local/restart") }() // default wait 30s
	testkit.WaitFor(t, func() bool { return b.local.View().Draining }, "the servant to drain")
	if len(b.restarts()) != 0 {
		t.Fatal("restarted while a call was running")
	}
	finish()
	r := testkit.Recv(t, got, "restart did not proceed once the servant was idle")
	if r.status != 200 || len(b.restarts()) != 1 {
		t.Errorf("status %d body %s, restarts %v", r.status, r.body, b.restarts())
	}
}

func TestReload(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		body   map[string]any
	}{
		{"success", nil, 200, map[string]any{"reloaded": true}},
		{"error is 422 with the message trimmed", errors.New("mserve.allow:3: bad declaration\n"), 422,
			map[string]any{"error": "mserve.allow:3: bad declaration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(t)
			b.reloadErr = tt.err
			r := do(t, New(b), "POST", "/reload")
			if r.status != tt.status {
				t.Fatalf("status %d, want %d", r.status, tt.status)
			}
			for k, v := range tt.body {
				if r.json[k] != v {
					t.Errorf("%s = %v, want %v (body %s)", k, r.json[k], v, r.body)
				}
			}
		})
	}
}

func TestHandleAddsRoutes(t *testing.T) {
	b := newBalancer(t)
	h := New(b)
	h.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics here") }))
	h.Handle("GET /{$}", http.HandlerFunc(Page))
	t.Run("the added route is served", func(t *testing.T) {
		if r := do(t, h, "GET", "/metrics"); r.status != 200 || r.body != "metrics here" {
			t.Errorf("status %d body %q", r.status, r.body)
		}
	})
	t.Run("the built-in routes still work", func(t *testing.T) {
		if r := do(t, h, "GET", "/healthz"); r.status != 200 {
			t.Errorf("status %d", r.status)
		}
	})
	t.Run("the status page is HTML, never cached", func(t *testing.T) {
		r := do(t, h, "GET", "/")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") ||
			r.header.Get("Cache-Control") != "no-store" || !strings.Contains(r.body, `fetch("status"`) {
			t.Errorf("status %d headers %v", r.status, r.header)
		}
	})
}
