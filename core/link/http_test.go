package link

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// httpServant is a JSON-RPC over HTTP servant whose behaviour the test
// sets: how it answers rpc.hello, and per method: "echo" returns its
// params, "crash" cuts the connection, "empty500" answers 500 with no body,
// "block" waits for the request to be abandoned.
type httpServant struct {
	srv       *httptest.Server
	hello     atomic.Pointer[string] // the hello response's result or error member
	down      atomic.Bool            // answer everything 503 with no body
	pings     atomic.Int64
	abandoned chan struct{}
	blocked   chan struct{}
}

func startHTTP(t *testing.T, hello string) *httpServant {
	t.Helper()
	h := &httpServant{abandoned: make(chan struct{}, 8), blocked: make(chan struct{}, 8)}
	h.hello.Store(&hello)
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *httpServant) serve(w http.ResponseWriter, r *http.Request) {
	if h.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var req jsonrpc.Request
	if e := jsonrpc.ParseRequest(body, &req); e != nil {
		w.Write(jsonrpc.AppendErrorResponse(nil, nil, e, nil))
		return
	}
	switch req.Method {
	case wire.MethodHello:
		w.Write([]byte(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,` + *h.hello.Load() + `}`))
	case wire.MethodPing:
		h.pings.Add(1)
		// A plain server's "method not found" counts as an answer too.
		w.Write([]byte(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"error":{"code":-32601,"message":"no"}}`))
	case "echo": // its first argument
		var first []byte
		jsonrpc.Elements(req.Params, func(v []byte) bool { first = v; return false })
		w.Write(jsonrpc.AppendResponse(nil, req.ID, first, nil, nil))
	case "crash":
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	case "empty500":
		w.WriteHeader(http.StatusInternalServerError)
	case "block":
		h.blocked <- struct{}{}
		select {
		case <-r.Context().Done():
			h.abandoned <- struct{}{}
		case <-time.After(failsafe):
		}
	default:
		w.Write(jsonrpc.AppendErrorResponse(nil, req.ID, jsonrpc.Errorf(jsonrpc.MethodNotFound, "no %s", req.Method), nil))
	}
}

const plainHello = `"error":{"code":-32601,"message":"method not found"}`

// httpLinked is an engine with one HTTPLink.
type httpLinked struct {
	linkedEngine
	l *HTTPLink
}

func runHTTPLink(t *testing.T, cfg Config) *httpLinked {
	t.Helper()
	var logs *observer.ObservedLogs
	cfg.Log, logs = testkit.Observed(zapcore.DebugLevel)
	if cfg.Name == "" {
		cfg.Name = "h1"
	}
	l := NewHTTP(cfg)
	return &httpLinked{linkedEngine: runLinked(t, l, engine.ServantSpec{Name: cfg.Name, Addr: cfg.Addr}, logs), l: l}
}

func TestHTTPLinkHello(t *testing.T) {
	tests := []struct {
		name      string
		hello     string
		slots     int
		tags      []string
		functions []string // nil: sent anything
		decls     []string
	}{
		{"a plain server (hello is method not found) is taken with defaults", plainHello, 1, nil, nil, nil},
		{"an SDK-style hello result announces slots, tags and functions",
			`"result":{"protocol":1,"slots":4,"tags":["py"],"functions":["echo(x any)","crash()"]}`,
			4, []string{"py"}, []string{"crash", "echo"}, []string{"echo(x any)", "crash()"}},
		{"an empty hello result gives defaults", `"result":{}`, 1, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHTTP(t, tt.hello)
			var got atomic.Pointer[[]string]
			x := runHTTPLink(t, Config{Addr: h.srv.URL, OnHello: func(f []string) { got.Store(&f) }})
			x.waitHealthy(t, true)
			v := x.s.View()
			fns := sortedFunctions(v)
			if v.Slots != tt.slots || !slices.Equal(v.Tags, tt.tags) || !slices.Equal(fns, tt.functions) || (tt.functions == nil) != (v.Functions == nil) {
				t.Errorf("view: slots %d tags %v functions %v; want %d %v %v", v.Slots, v.Tags, v.Functions, tt.slots, tt.tags, tt.functions)
			}
			if g := got.Load(); g == nil || !slices.Equal(*g, tt.decls) {
				t.Errorf("OnHello got %v, want %v", g, tt.decls)
			}
		})
	}
}

func TestHTTPLinkRetriesTheHelloUntilTheServerAnswers(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *httpServant)
		fix   func(h *httpServant)
	}{
		{"a server answering 503 with no body", func(h *httpServant) { h.down.Store(true) }, func(h *httpServant) { h.down.Store(false) }},
		{"a hello answered with another error", func(h *httpServant) {
			s := `"error":{"code":-32001,"message":"unauthorized"}`
			h.hello.Store(&s)
		}, func(h *httpServant) {
			s := plainHello
			h.hello.Store(&s)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHTTP(t, plainHello)
			tt.setup(h)
			// Backoff so long that only Kick can make it try again.
			x := runHTTPLink(t, Config{Addr: h.srv.URL, MinBackoff: time.Hour, MaxBackoff: time.Hour})
			// Not up: a call waits.
			rec := newRecorder()
			x.eng.Submit(newCall(rec, "echo", `[1]`))
			select {
			case r := <-rec.got:
				t.Fatalf("answered before the servant was up: %v", r.m)
			case <-time.After(50 * time.Millisecond):
			}
			if x.s.View().Healthy {
				t.Fatal("up before the hello succeeded")
			}
			tt.fix(h)
			x.l.Kick()
			x.waitHealthy(t, true)
			if r := rec.wait(t); r.m["result"] != 1.0 {
				t.Errorf("answer %v", r.m)
			}
		})
	}
}

func TestHTTPLinkCalls(t *testing.T) {
	h := startHTTP(t, plainHello)
	x := runHTTPLink(t, Config{Addr: h.srv.URL})
	x.waitHealthy(t, true)
	tests := []struct {
		name   string
		method string
		params string
		code   float64
		result any
		cause  string
	}{
		{name: "a result", method: "echo", params: `["IBM"]`, result: "IBM"},
		{name: "the servant's error", method: "nope", params: `[1]`, code: jsonrpc.MethodNotFound},
		{name: "a cut connection is servant lost", method: "crash", params: `[1]`, code: jsonrpc.ServantLost, cause: "servant lost"},
		{name: "HTTP 500 with no body is servant lost", method: "empty500", params: `[1]`, code: jsonrpc.ServantLost, cause: "500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			x.eng.Submit(newCall(rec, tt.method, tt.params))
			r := rec.wait(t)
			if testkit.ErrCode(r.m) != tt.code || (tt.result != nil && r.m["result"] != tt.result) {
				t.Errorf("answer %v", r.m)
			}
			if tt.cause != "" && !strings.Contains(r.m["error"].(map[string]any)["message"].(string), tt.cause) {
				t.Errorf("message lacks %q: %v", tt.cause, r.m)
			}
			if r.a.Servant != "h1" {
				t.Errorf("servant %q", r.a.Servant)
			}
			// One failure does not take the servant out of dispatch.
			if !x.s.View().Healthy {
				t.Error("out of dispatch after one call")
			}
			// Make the next case start from no failures in a row.
			x.eng.Submit(newCall(rec, "echo", `[0]`))
			rec.wait(t)
		})
	}
}

func TestHTTPLinkTransportErrors(t *testing.T) {
	t.Run("three failures in a row take the servant out of dispatch", func(t *testing.T) {
		h := startHTTP(t, plainHello)
		x := runHTTPLink(t, Config{Addr: h.srv.URL})
		x.waitHealthy(t, true)
		rec := newRecorder()
		for i := range 3 {
			if !x.s.View().Healthy {
				t.Fatalf("out of dispatch after %d failures", i)
			}
			x.eng.Submit(newCall(rec, "crash", `[1]`))
			if r := rec.wait(t); testkit.ErrCode(r.m) != jsonrpc.ServantLost {
				t.Fatalf("answer %v", r.m)
			}
		}
		// The link takes the servant out before it reports the third
		// loss, so this holds as soon as that call is answered.
		if x.s.View().Healthy {
			t.Error("still in dispatch after three transport failures in a row")
		}
		if x.logs.FilterMessage("servant requests failing; out of dispatch until it answers health checks").Len() != 1 {
			t.Error("no log entry for taking it out")
		}
	})
	t.Run("a success in between resets the count", func(t *testing.T) {
		h := startHTTP(t, plainHello)
		x := runHTTPLink(t, Config{Addr: h.srv.URL})
		x.waitHealthy(t, true)
		rec := newRecorder()
		for _, m := range []string{"crash", "crash", "echo", "crash", "crash"} {
			x.eng.Submit(newCall(rec, m, `[1]`))
			rec.wait(t)
		}
		if !x.s.View().Healthy {
			t.Error("out of dispatch without three failures in a row")
		}
	})
	t.Run("health checks bring back a servant its failing requests took out", func(t *testing.T) {
		h := startHTTP(t, plainHello)
		x := runHTTPLink(t, Config{Addr: h.srv.URL, HealthInterval: 20 * time.Millisecond, HealthTimeout: time.Second})
		x.waitHealthy(t, true)
		rec := newRecorder()
		// Take it out as three failed requests in a row do (HTTPLink.do
		// calls exactly this), independently of how the failures are
		// counted.
		x.s.SetHealth(false)
		x.waitHealthy(t, false)
		// The server answers its pings: after HealthRise of them it is
		// back in dispatch, and a waiting call goes to it.
		waiting := newCall(rec, "echo", `["back"]`)
		x.eng.Submit(waiting)
		start := h.pings.Load()
		testkit.WaitFor(t, func() bool { return h.pings.Load() >= start+5 }, "five more answered pings")
		if !x.s.View().Healthy {
			t.Fatalf("still out of dispatch after %d answered pings", h.pings.Load()-start)
		}
		if r := rec.wait(t); r.c != waiting || r.m["result"] != "back" {
			t.Errorf("answer %v", r.m)
		}
	})
}

func TestHTTPLinkCancelAbandonsTheRequest(t *testing.T) {
	tests := []struct {
		name    string
		abandon func(x *httpLinked, c *engine.Call)
		code    float64
	}{
		{"the caller cancels", func(x *httpLinked, c *engine.Call) { x.eng.Cancel(c, "client gone") }, jsonrpc.Cancelled},
		{"the call times out", nil, jsonrpc.Timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHTTP(t, plainHello)
			x := runHTTPLink(t, Config{Addr: h.srv.URL})
			x.waitHealthy(t, true)
			rec := newRecorder()
			c := newCall(rec, "block", `[1]`)
			if tt.abandon == nil {
				c.Timeout = 30 * time.Millisecond
			}
			x.eng.Submit(c)
			select {
			case <-h.blocked:
			case <-time.After(failsafe):
				t.Fatal("the request did not reach the server")
			}
			if tt.abandon != nil {
				tt.abandon(x, c)
			}
			if r := rec.wait(t); testkit.ErrCode(r.m) != tt.code {
				t.Errorf("answer %v", r.m)
			}
			select {
			case <-h.abandoned:
			case <-time.After(failsafe):
				t.Fatal("the HTTP request was not abandoned")
			}
			// The slot is freed, the abandoned request is not a failure,
			// and the call is not answered twice.
			testkit.WaitFor(t, func() bool { return x.s.View().InFlight == 0 }, "the slot to be freed")
			if !x.s.View().Healthy {
				t.Error("out of dispatch after an abandoned request")
			}
			select {
			case r := <-rec.got:
				t.Errorf("answered twice: %v", r.m)
			default:
			}
		})
	}
}

func TestHTTPLinkStopsWithItsContext(t *testing.T) {
	h := startHTTP(t, plainHello)
	log, _ := testkit.Observed(zapcore.DebugLevel)
	l := NewHTTP(Config{Name: "h1", Addr: h.srv.URL, Log: log})
	eng, s := attach(l, engine.ServantSpec{Name: "h1"})
	stop := goRun(l)
	testkit.WaitFor(t, func() bool { return s.View().Healthy }, "up")
	rec := newRecorder()
	c := newCall(rec, "block", `[1]`)
	eng.Submit(c)
	<-h.blocked
	if !stop() {
		t.Fatal("Run did not return")
	}
	if s.View().Healthy {
		t.Error("still healthy after Run ended")
	}
	if r := rec.wait(t); testkit.ErrCode(r.m) != jsonrpc.ServantLost {
		t.Errorf("the running call got %v", r.m)
	}
	if err := l.Send(newCall(rec, "echo", "[1]"), nil); !errors.Is(err, ErrDown) {
		t.Errorf("Send after the end = %v, want ErrDown", err)
	}
}
