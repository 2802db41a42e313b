package link

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/freeport"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
	"github.com/mserve/mserve/sdk/wire"
)

const failsafe = 10 * time.Second

// recorder collects engine answers.
type recorder struct{ got chan result }

type result struct {
	c *engine.Call
	a engine.Answer
	m map[string]any
}

func newRecorder() *recorder { return &recorder{got: make(chan result, 64)} }

func (r *recorder) Answer(c *engine.Call, a *engine.Answer) {
	var m map[string]any
	json.Unmarshal(engine.AppendResponse(nil, c, a), &m)
	r.got <- result{c, *a, m}
}

func (r *recorder) wait(t *testing.T) result {
	t.Helper()
	return testkit.Recv(t, r.got, "no answer")
}

func newCall(r engine.Replier, method, params string) *engine.Call {
	c := &engine.Call{ID: []byte("1"), Reply: r}
	c.Method, c.Params = method, []byte(params)
	return c
}

// freeAddr returns a loopback address whose port was free a moment ago
// and that this process has not handed out before.
func freeAddr(t *testing.T) string { return freeport.Test(t) }

// listen listens on addr (a fixed address, for a servant coming back).
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	deadline := time.After(failsafe)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln
		}
		select {
		case <-deadline:
			t.Fatalf("listen %s: %v", addr, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sdkServant serves a real sdk/servant on ln until the test ends (or
// stop is called). block, when set, makes "slow" wait until it is closed.
type sdkServant struct {
	s       *servant.Servant
	addr    string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	stopped sync.Once
	served  chan error
}

func startServant(t *testing.T, ln net.Listener, opts ...servant.Option) *sdkServant {
	t.Helper()
	sv := &sdkServant{
		s:       servant.New(append([]servant.Option{servant.Name("test"), servant.Logger(zap.NewNop()), servant.Secret("")}, opts...)...),
		addr:    ln.Addr().String(),
		entered: make(chan struct{}, 16),
		release: make(chan struct{}),
		served:  make(chan error, 1),
	}
	sv.s.MustHandle("echo(x any)", func(_ context.Context, c *servant.Call) (any, error) {
		var x json.RawMessage
		return x, c.Bind(&x)
	})
	sv.s.MustHandle("slow(x any)", func(ctx context.Context, c *servant.Call) (any, error) {
		sv.entered <- struct{}{}
		select {
		case <-sv.release:
		case <-time.After(failsafe):
		}
		return "done", nil
	})
	go func() { sv.served <- sv.s.Serve(ln) }()
	t.Cleanup(func() { sv.stop(t, false) })
	return sv
}

// stop shuts the servant down; abrupt closes its connections at once,
// with calls still running.
func (sv *sdkServant) stop(t *testing.T, abrupt bool) {
	t.Helper()
	sv.stopped.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		if abrupt {
			cancel()
		}
		defer cancel()
		sv.s.Shutdown(ctx)
		sv.once.Do(func() { close(sv.release) })
		<-sv.served
	})
}

// runner is what Link and HTTPLink have in common: an engine transport
// that is attached to its servant and runs until its context ends.
type runner interface {
	engine.Transport
	Attach(s *engine.Servant)
	Run(ctx context.Context)
}

// attach adds a servant with spec over l to a new engine and attaches l
// to it.
func attach(l runner, spec engine.ServantSpec) (*engine.Engine, *engine.Servant) {
	eng := engine.New(engine.Config{Algorithm: testkit.FirstFree})
	s := eng.AddServant(spec, l)
	l.Attach(s)
	return eng, s
}

// goRun runs l until stop is called; stop ends Run's context and reports
// whether Run returned within failsafe.
func goRun(l runner) (stop func() bool) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	return func() bool {
		cancel()
		select {
		case <-done:
			return true
		case <-time.After(failsafe):
			return false
		}
	}
}

// linkedEngine is an engine whose one servant is reached through a link,
// and what that link logged.
type linkedEngine struct {
	eng  *engine.Engine
	s    *engine.Servant
	logs *observer.ObservedLogs
}

// runLinked attaches l to a new engine's servant with spec and runs it
// until the test ends, failing the test if Run does not return then.
func runLinked(t *testing.T, l runner, spec engine.ServantSpec, logs *observer.ObservedLogs) linkedEngine {
	t.Helper()
	x := linkedEngine{logs: logs}
	x.eng, x.s = attach(l, spec)
	stop := goRun(l)
	t.Cleanup(func() {
		if !stop() {
			t.Error("Run did not return after its context ended")
		}
	})
	return x
}

// waitHealthy waits until the engine's Stats show the servant's Healthy
// as want.
func (x *linkedEngine) waitHealthy(t *testing.T, want bool) {
	t.Helper()
	testkit.WaitFor(t, func() bool { return x.eng.Stats().Servants[0].Healthy == want }, "Healthy = "+map[bool]string{true: "true", false: "false"}[want])
}

// linked is an engine with one native Link.
type linked struct {
	linkedEngine
	l *Link
}

func runLink(t *testing.T, cfg Config, spec engine.ServantSpec) *linked {
	t.Helper()
	var logs *observer.ObservedLogs
	cfg.Log, logs = testkit.Observed(zapcore.DebugLevel)
	l := New(cfg)
	return &linked{linkedEngine: runLinked(t, l, spec, logs), l: l}
}

func (x *linked) view() dispatch.Servant { return x.s.View() }

// dialError waits until the link has logged n failed dials and returns
// the error of the first.
func (x *linked) dialError(t *testing.T, n int, what string) string {
	t.Helper()
	testkit.WaitFor(t, func() bool { return x.logs.FilterMessage("dial failed").Len() >= n }, what)
	return x.logs.FilterMessage("dial failed").All()[0].ContextMap()["error"].(string)
}

// sortedFunctions returns the names of the functions v serves, sorted.
func sortedFunctions(v dispatch.Servant) []string {
	var fns []string
	for f := range v.Functions {
		fns = append(fns, f)
	}
	slices.Sort(fns)
	return fns
}

func TestLinkHelloAnnouncesTheServant(t *testing.T) {
	tests := []struct {
		name      string
		opts      []servant.Option
		spec      engine.ServantSpec
		slots     int
		tags      []string
		functions []string
	}{
		{"announced slots, tags and functions", []servant.Option{servant.Slots(3), servant.Tags("gpu", "hdb")},
			engine.ServantSpec{Name: "s1"}, 3, []string{"gpu", "hdb"}, []string{"echo", "slow"}},
		{"slots fixed at launch win; launch tags stay first", []servant.Option{servant.Slots(3), servant.Tags("gpu")},
			engine.ServantSpec{Name: "s1", Slots: 2, Tags: []string{"rack1"}}, 2, []string{"rack1", "gpu"}, []string{"echo", "slow"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sv := startServant(t, listen(t, "127.0.0.1:0"), tt.opts...)
			var hello atomic.Pointer[[]string]
			tt.spec.Addr = sv.addr
			x := runLink(t, Config{Name: "s1", Addr: sv.addr, OnHello: func(f []string) { hello.Store(&f) }}, tt.spec)
			x.waitHealthy(t, true)
			v := x.view()
			if v.Slots != tt.slots || !slices.Equal(v.Tags, tt.tags) {
				t.Errorf("view: slots %d tags %v; want %d %v", v.Slots, v.Tags, tt.slots, tt.tags)
			}
			if fns := sortedFunctions(v); !slices.Equal(fns, tt.functions) {
				t.Errorf("functions %v, want %v", fns, tt.functions)
			}
			decls := sv.s.Declarations()
			if got := hello.Load(); got == nil || !slices.Equal(*got, decls) {
				t.Errorf("OnHello got %v, want %v", got, decls)
			}
			if !slices.Equal(x.l.Functions(), decls) {
				t.Errorf("Functions() = %v, want %v", x.l.Functions(), decls)
			}
		})
	}
}

func TestLinkCallsAreAnswered(t *testing.T) {
	sv := startServant(t, listen(t, "127.0.0.1:0"), servant.Slots(4))
	x := runLink(t, Config{Name: "s1", Addr: sv.addr}, engine.ServantSpec{Name: "s1", Addr: sv.addr})
	x.waitHealthy(t, true)
	rec := newRecorder()
	tests := []struct {
		name   string
		method string
		params string
		check  func(t *testing.T, r result)
	}{
		{"a result", "echo", `["IBM"]`, func(t *testing.T, r result) {
			if r.m["result"] != "IBM" || r.a.Servant != "s1" {
				t.Errorf("answer %v", r.m)
			}
			if _, ok := r.m["info"].(map[string]any)["handler_ns"]; !ok {
				t.Errorf("the servant's info is not merged: %v", r.m["info"])
			}
		}},
		{"the servant's error", "echo", `[1,2]`, func(t *testing.T, r result) {
			if testkit.ErrCode(r.m) != jsonrpc.InvalidParams {
				t.Errorf("answer %v", r.m)
			}
		}},
		{"a function the servant does not serve is refused before sending", "nope", `[1]`, func(t *testing.T, r result) {
			if testkit.ErrCode(r.m) != jsonrpc.MethodNotFound || r.a.Servant != "" {
				t.Errorf("answer %v", r.m)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x.eng.Submit(newCall(rec, tt.method, tt.params))
			tt.check(t, rec.wait(t))
		})
	}
	t.Run("many calls at once", func(t *testing.T) {
		const n = 50
		for i := range n {
			x.eng.Submit(newCall(rec, "echo", `[`+strings.Repeat("1", i%5+1)+`]`))
		}
		for range n {
			if r := rec.wait(t); testkit.ErrCode(r.m) != 0 {
				t.Errorf("answer %v", r.m)
			}
		}
	})
}

func TestLinkServantGoingAwayAndComingBack(t *testing.T) {
	addr := freeAddr(t)
	sv := startServant(t, listen(t, addr))
	x := runLink(t, Config{Name: "s1", Addr: addr, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		engine.ServantSpec{Name: "s1", Addr: addr})
	x.waitHealthy(t, true)
	rec := newRecorder()
	running := newCall(rec, "slow", `[1]`)
	x.eng.Submit(running)
	select {
	case <-sv.entered:
	case <-time.After(failsafe):
		t.Fatal("the call did not reach the servant")
	}

	// The servant closes its connection with the call running.
	sv.stop(t, true)
	r := rec.wait(t)
	if r.c != running || testkit.ErrCode(r.m) != jsonrpc.ServantLost || !strings.Contains(r.m["error"].(map[string]any)["message"].(string), "servant lost") {
		t.Fatalf("the running call was answered %v", r.m)
	}
	x.waitHealthy(t, false)
	if v := x.view(); v.InFlight != 0 {
		t.Errorf("in flight after the loss: %d", v.InFlight)
	}
	if len(x.logs.FilterMessage("servant down").All()) == 0 {
		t.Error("no 'servant down' log entry")
	}

	// A call made meanwhile waits; the servant comes back on the same
	// address and the link redials by itself.
	waiting := newCall(rec, "echo", `["again"]`)
	x.eng.Submit(waiting)
	startServant(t, listen(t, addr))
	x.waitHealthy(t, true)
	if r := rec.wait(t); r.c != waiting || r.m["result"] != "again" {
		t.Errorf("the waiting call got %v", r.m)
	}
}

func TestLinkKickDialsAtOnce(t *testing.T) {
	addr := freeAddr(t)
	// Backoff so long that only Kick can make the link dial again.
	x := runLink(t, Config{Name: "s1", Addr: addr, MinBackoff: time.Hour, MaxBackoff: time.Hour},
		engine.ServantSpec{Name: "s1", Addr: addr})
	testkit.WaitFor(t, func() bool { return x.logs.FilterMessage("dial failed").Len() > 0 }, "a failed dial")
	startServant(t, listen(t, addr))
	x.l.Kick()
	x.waitHealthy(t, true)
	t.Run("Kick on a running link does nothing harmful", func(t *testing.T) {
		x.l.Kick()
		x.l.Kick() // a second kick while one is pending is dropped
		rec := newRecorder()
		x.eng.Submit(newCall(rec, "echo", `[1]`))
		if r := rec.wait(t); r.m["result"] != 1.0 {
			t.Errorf("answer %v", r.m)
		}
	})
}

func TestLinkSecret(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		up     bool
	}{
		{"the right secret is accepted", "s3cret", true},
		{"a wrong secret is refused", "wrong", false},
		{"no secret is refused", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sv := startServant(t, listen(t, "127.0.0.1:0"), servant.Secret("s3cret"))
			x := runLink(t, Config{Name: "s1", Addr: sv.addr, Secret: tt.secret, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
				engine.ServantSpec{Name: "s1", Addr: sv.addr})
			if tt.up {
				x.waitHealthy(t, true)
				return
			}
			if err := x.dialError(t, 3, "failed hellos"); !strings.Contains(err, "unauthorized") {
				t.Errorf("dial failed with %v, want the servant's refusal", err)
			}
			if x.view().Healthy {
				t.Error("a refused link is up")
			}
		})
	}
}

// fakeServant is a raw native-protocol servant the test controls: it
// answers rpc.hello, answers rpc.ping only while pings is set, and hands
// other calls to the test.
type fakeServant struct {
	ln      net.Listener
	hello   string
	pings   atomic.Bool
	drop    atomic.Bool  // close each connection right after answering its hello
	accepts atomic.Int64 // connections accepted
	calls   chan fakeCall
	cancels chan string // params of each rpc.cancel

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

type fakeCall struct {
	conn   net.Conn
	id     string
	method string
}

func startFake(t *testing.T, hello string) *fakeServant {
	t.Helper()
	f := &fakeServant{ln: listen(t, "127.0.0.1:0"), hello: hello, calls: make(chan fakeCall, 64), cancels: make(chan string, 64)}
	f.pings.Store(true)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			f.accepts.Add(1)
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		f.ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

var writeMu sync.Mutex

func writeFrame(c net.Conn, body string) {
	writeMu.Lock()
	defer writeMu.Unlock()
	c.Write(wire.AppendFrame(nil, []byte(body)))
}

func (f *fakeServant) serve(c net.Conn) {
	r := wire.NewReader(c, 0)
	for {
		frame, err := r.ReadFrame(nil)
		if err != nil {
			return
		}
		var req jsonrpc.Request
		if jsonrpc.ParseRequest(frame, &req) != nil {
			continue
		}
		switch req.Method {
		case wire.MethodHello:
			writeFrame(c, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":`+f.hello+`}`)
			if f.drop.Load() {
				c.Close()
				return
			}
		case wire.MethodPing:
			if f.pings.Load() {
				writeFrame(c, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":"pong"}`)
			}
		case wire.MethodCancel:
			f.cancels <- string(req.Params)
		default:
			f.calls <- fakeCall{c, string(req.ID), req.Method}
		}
	}
}

func (f *fakeServant) next(t *testing.T) fakeCall {
	t.Helper()
	return testkit.Recv(t, f.calls, "no call reached the fake servant")
}

const okHello = `{"protocol":1,"slots":2}`

func TestLinkHealthChecks(t *testing.T) {
	f := startFake(t, okHello)
	f.pings.Store(false) // it answers the hello but never a ping
	x := runLink(t, Config{Name: "s1", Addr: f.ln.Addr().String(),
		HealthInterval: 20 * time.Millisecond, HealthTimeout: 10 * time.Millisecond, HealthFall: 3, HealthRise: 2},
		engine.ServantSpec{Name: "s1", Addr: f.ln.Addr().String()})
	// Up at first: a fresh connection is healthy until checks say
	// otherwise…
	testkit.WaitFor(t, func() bool { return x.logs.FilterMessage("servant up").Len() > 0 }, "the link to be up")
	// …then out of dispatch after HealthFall missed pings.
	x.waitHealthy(t, false)
	if e := x.logs.FilterMessage("servant fails health checks; out of dispatch until it answers").All(); len(e) != 1 ||
		e[0].ContextMap()["missed"] != int64(3) {
		t.Errorf("log entries %v, want one naming 3 missed pings", e)
	}
	// A call made now waits: the servant is out of dispatch.
	rec := newRecorder()
	c := newCall(rec, "f", `[1]`)
	x.eng.Submit(c)
	select {
	case fc := <-f.calls:
		t.Fatalf("a call reached an unhealthy servant: %v", fc)
	case <-time.After(60 * time.Millisecond):
	}
	// It starts answering: back after HealthRise answered pings, and the
	// waiting call goes to it.
	f.pings.Store(true)
	x.waitHealthy(t, true)
	fc := f.next(t)
	writeFrame(fc.conn, `{"jsonrpc":"2.0","id":`+fc.id+`,"result":"ok"}`)
	if r := rec.wait(t); r.m["result"] != "ok" {
		t.Errorf("answer %v", r.m)
	}
}

func TestLinkProtocolViolationsTakeTheServantDown(t *testing.T) {
	tests := []struct {
		name  string
		reply func(fc fakeCall) string
		cause string
	}{
		{"a frame that is not JSON", func(fakeCall) string { return "garbage" }, "servant broke the protocol"},
		{"a response id mserve never sent", func(fakeCall) string { return `{"jsonrpc":"2.0","id":"x","result":1}` }, "not one mserve sent"},
		{"a request instead of a response", func(fc fakeCall) string { return `{"jsonrpc":"2.0","id":` + fc.id + `,"method":"f"}` }, "servant broke the protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, okHello)
			x := runLink(t, Config{Name: "s1", Addr: f.ln.Addr().String(), MinBackoff: time.Hour, MaxBackoff: time.Hour},
				engine.ServantSpec{Name: "s1", Addr: f.ln.Addr().String()})
			x.waitHealthy(t, true)
			rec := newRecorder()
			x.eng.Submit(newCall(rec, "f", `[1]`))
			fc := f.next(t)
			writeFrame(fc.conn, tt.reply(fc))
			r := rec.wait(t)
			if testkit.ErrCode(r.m) != jsonrpc.ServantLost || !strings.Contains(r.m["error"].(map[string]any)["message"].(string), tt.cause) {
				t.Errorf("the pending call was answered %v, want servant lost naming %q", r.m, tt.cause)
			}
			// The link reported the servant down (it redials at once, so
			// the servant may already be back up).
			down := x.logs.FilterMessage("servant down").All()
			if len(down) == 0 || !strings.Contains(down[0].ContextMap()["error"].(string), tt.cause) {
				t.Errorf("servant down log entries %v, want one naming %q", down, tt.cause)
			}
		})
	}
}

func TestLinkIgnoresDuplicateAndLateAnswers(t *testing.T) {
	f := startFake(t, okHello)
	x := runLink(t, Config{Name: "s1", Addr: f.ln.Addr().String()}, engine.ServantSpec{Name: "s1", Addr: f.ln.Addr().String()})
	x.waitHealthy(t, true)
	rec := newRecorder()
	x.eng.Submit(newCall(rec, "f", `[1]`))
	fc := f.next(t)
	writeFrame(fc.conn, `{"jsonrpc":"2.0","id":`+fc.id+`,"result":1}`)
	writeFrame(fc.conn, `{"jsonrpc":"2.0","id":`+fc.id+`,"result":2}`) // a duplicate
	writeFrame(fc.conn, `{"jsonrpc":"2.0","id":999,"result":3}`)       // an id no call has
	if r := rec.wait(t); r.m["result"] != 1.0 {
		t.Errorf("answer %v", r.m)
	}
	// The link is still up and working.
	x.eng.Submit(newCall(rec, "f", `[2]`))
	fc = f.next(t)
	writeFrame(fc.conn, `{"jsonrpc":"2.0","id":`+fc.id+`,"result":4}`)
	if r := rec.wait(t); r.m["result"] != 4.0 {
		t.Errorf("answer %v", r.m)
	}
	if !x.view().Healthy {
		t.Error("the link went down")
	}
}

func TestLinkRefusesAnotherProtocolVersion(t *testing.T) {
	f := startFake(t, `{"protocol":2}`)
	x := runLink(t, Config{Name: "s1", Addr: f.ln.Addr().String(), MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		engine.ServantSpec{Name: "s1", Addr: f.ln.Addr().String()})
	if err := x.dialError(t, 1, "a refused hello"); !strings.Contains(err, "protocol 2") {
		t.Errorf("error %q", err)
	}
	if x.view().Healthy {
		t.Error("the link is up")
	}
}

func TestLinkCancelSendsRPCCancel(t *testing.T) {
	f := startFake(t, okHello)
	x := runLink(t, Config{Name: "s1", Addr: f.ln.Addr().String()}, engine.ServantSpec{Name: "s1", Addr: f.ln.Addr().String()})
	x.waitHealthy(t, true)
	rec := newRecorder()
	c := newCall(rec, "f", `[1]`)
	c.Timeout = 20 * time.Millisecond
	x.eng.Submit(c)
	fc := f.next(t)
	if r := rec.wait(t); testkit.ErrCode(r.m) != jsonrpc.Timeout {
		t.Fatalf("answer %v", r.m)
	}
	// The servant is told, with the id the link gave the call.
	select {
	case p := <-f.cancels:
		if p != "["+fc.id+"]" {
			t.Errorf("rpc.cancel params %s, want [%s]", p, fc.id)
		}
	case <-time.After(failsafe):
		t.Fatal("no rpc.cancel reached the servant")
	}
	// The late answer frees the slot and is not answered twice.
	writeFrame(fc.conn, `{"jsonrpc":"2.0","id":`+fc.id+`,"result":"late"}`)
	testkit.WaitFor(t, func() bool { return x.view().InFlight == 0 }, "the slot to be freed")
	select {
	case r := <-rec.got:
		t.Errorf("answered twice: %v", r.m)
	default:
	}
}

func TestLinkStopsWithItsContext(t *testing.T) {
	f := startFake(t, okHello)
	log, logs := testkit.Observed(zapcore.DebugLevel)
	l := New(Config{Name: "s1", Addr: f.ln.Addr().String(), Log: log})
	eng, s := attach(l, engine.ServantSpec{Name: "s1"})
	stop := goRun(l)
	testkit.WaitFor(t, func() bool { return s.View().Healthy }, "up")
	rec := newRecorder()
	eng.Submit(newCall(rec, "f", `[1]`))
	f.next(t)
	if !stop() {
		t.Fatal("Run did not return")
	}
	r := rec.wait(t)
	if testkit.ErrCode(r.m) != jsonrpc.ServantLost || !strings.Contains(r.m["error"].(map[string]any)["message"].(string), "mserve is stopping") {
		t.Errorf("answer %v", r.m)
	}
	if logs.FilterMessage("servant link closed").Len() != 1 {
		t.Error("no 'servant link closed' log entry")
	}
	if err := l.Send(newCall(rec, "f", "[1]"), nil); !errors.Is(err, ErrDown) {
		t.Errorf("Send after the end = %v, want ErrDown", err)
	}
}

func TestLinkRedialsWithBackoffAfterAConnectionDrops(t *testing.T) {
	// A servant that accepts the hello and then drops the connection (it
	// crashes right after starting, say) must be redialled with backoff,
	// like one that cannot be reached: not in a tight loop logging
	// "servant down" each time.
	f := startFake(t, okHello)
	f.drop.Store(true)
	const backoff = 20 * time.Millisecond
	x := runLink(t, Config{Name: "s1", Addr: f.ln.Addr().String(), MinBackoff: backoff, MaxBackoff: backoff},
		engine.ServantSpec{Name: "s1", Addr: f.ln.Addr().String()})
	testkit.WaitFor(t, func() bool { return f.accepts.Load() >= 1 }, "a first connection")
	const window = 300 * time.Millisecond
	start := f.accepts.Load()
	t0 := time.Now()
	<-time.After(window)
	n := f.accepts.Load() - start
	limit := int64(time.Since(t0)/backoff) + 2
	if n > limit {
		t.Errorf("%d connections in %v with a backoff of %v (at most %d expected); %d 'servant down' log entries",
			n, time.Since(t0).Round(time.Millisecond), backoff, limit, x.logs.FilterMessage("servant down").Len())
	}
}

// TestLinkSameName: a link to a servant mserve started refuses another
// process that holds its port (the servant's hello names someone else).
func TestLinkSameName(t *testing.T) {
	tests := []struct {
		name     string
		servant  string // the name the servant gives itself
		sameName bool
		up       bool
	}{
		{"the servant mserve named", "s1", true, true},
		{"another servant on its port", "s2", true, false},
		{"a remote servant may call itself anything", "host-a", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sv := startServant(t, listen(t, "127.0.0.1:0"), servant.Name(tt.servant))
			x := runLink(t, Config{Name: "s1", Addr: sv.addr, SameName: tt.sameName, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
				engine.ServantSpec{Name: "s1", Addr: sv.addr})
			if tt.up {
				x.waitHealthy(t, true)
				return
			}
			if err := x.dialError(t, 2, "failed hellos"); !strings.Contains(err, `says it is "s2", not "s1"`) {
				t.Errorf("dial failed with %q, want it to name both", err)
			}
			if x.view().Healthy {
				t.Error("the link is up to the wrong servant")
			}
		})
	}
}
