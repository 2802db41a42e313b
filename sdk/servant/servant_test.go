package servant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
	"github.com/mserve/mserve/sdk/wire"
)

// failsafe bounds waits that only run out when the code under test is
// broken. Nothing in these tests sleeps to let something happen.
const failsafe = 10 * time.Second

func newServant(opts ...servant.Option) *servant.Servant {
	return servant.New(append([]servant.Option{servant.Name("test-servant"), servant.Logger(zap.NewNop())}, opts...)...)
}

// serve starts s on a loopback port and shuts it down when the test ends.
func serve(t testing.TB, s *servant.Servant) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ln.Addr().String()
}

func dial(t testing.TB, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), failsafe)
	t.Cleanup(cancel)
	return ctx
}

func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(failsafe):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func echo(_ context.Context, c *servant.Call) (any, error) {
	var x json.RawMessage
	if err := c.Bind(&x); err != nil {
		return nil, err
	}
	return x, nil
}

// rpcErr asserts that err is a *jsonrpc.Error with code and a message
// containing each of parts.
func rpcErr(t *testing.T, err error, code int, parts ...string) *jsonrpc.Error {
	t.Helper()
	var e *jsonrpc.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want a *jsonrpc.Error with code %d", err, err, code)
	}
	if e.Code != code {
		t.Errorf("code = %d (%s), want %d (%s); message %q", e.Code, jsonrpc.CodeName(e.Code), code, jsonrpc.CodeName(code), e.Message)
	}
	for _, p := range parts {
		if !strings.Contains(e.Message, p) {
			t.Errorf("message %q does not contain %q", e.Message, p)
		}
	}
	return e
}

func TestEchoForwardsBytesUnchanged(t *testing.T) {
	s := newServant()
	s.MustHandle("echo(x any)", echo)
	c := dial(t, serve(t, s))
	tests := []struct {
		name string
		arg  string
	}{
		{"number", `42`},
		{"big number keeps its digits", `123456789012345678901234567890.000`},
		{"string with escapes", `"caf\u00e9 \"q\" \/"`},
		{"HTML characters are not escaped", `"<b>&amp;</b>"`},
		{"object with spaces and key order", `{"b" : 1, "a":[1, 2.50]}`},
		{"null", `null`},
		{"unicode", `"héllo 世界 😀"`},
		{"deeply nested", strings.Repeat("[", 40) + strings.Repeat("]", 40)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.CallRaw(testCtx(t), "echo", []byte("[ "+tc.arg+" ]"))
			if err != nil {
				t.Fatalf("echo: %v", err)
			}
			if string(resp.Result) != tc.arg {
				t.Errorf("result = %s, want the argument byte for byte: %s", resp.Result, tc.arg)
			}
			var info map[string]json.RawMessage
			if err := json.Unmarshal(resp.InfoRaw, &info); err != nil {
				t.Fatalf("info %s: %v", resp.InfoRaw, err)
			}
			if ns, err := strconv.ParseInt(string(info["handler_ns"]), 10, 64); err != nil || ns < 0 {
				t.Errorf("handler_ns = %s, want a non-negative integer", info["handler_ns"])
			}
		})
	}
}

func TestHello(t *testing.T) {
	s := newServant(servant.Slots(3), servant.Tags("gpu", "hdb"))
	s.MustHandle("proc1(sym symbol)", echo)
	s.MustHandle(`sleep( ms int,label string="nap" )   idempotent`, echo)
	s.MustHandle("grid(m list<list<int>>)", echo)
	wantFuncs := []string{"proc1(sym symbol)", `sleep(ms int, label string = "nap") idempotent`, "grid(m list<list<int>>)"}
	if got := s.Declarations(); !slices.Equal(got, wantFuncs) {
		t.Errorf("Declarations() = %q, want %q", got, wantFuncs)
	}
	c := dial(t, serve(t, s))
	resp, err := c.Call(testCtx(t), wire.MethodHello, wire.HelloParams{Protocol: wire.ProtocolVersion, Balancer: "test"})
	if err != nil {
		t.Fatalf("rpc.hello: %v", err)
	}
	var h wire.HelloResult
	if err := json.Unmarshal(resp.Result, &h); err != nil {
		t.Fatalf("hello result %s: %v", resp.Result, err)
	}
	want := wire.HelloResult{Protocol: wire.ProtocolVersion, Name: "test-servant", Slots: 3, Tags: []string{"gpu", "hdb"}, Functions: wantFuncs}
	if !slices.Equal(h.Functions, want.Functions) || !slices.Equal(h.Tags, want.Tags) || h.Protocol != want.Protocol || h.Name != want.Name || h.Slots != want.Slots {
		t.Errorf("hello = %+v, want %+v", h, want)
	}
}

func TestHelloDefaults(t *testing.T) {
	t.Setenv("MSERVE_SERVANT_NAME", "from-env")
	s := servant.New(servant.Logger(zap.NewNop()), servant.Slots(0))
	c := dial(t, serve(t, s))
	resp, err := c.Call(testCtx(t), wire.MethodHello, nil)
	if err != nil {
		t.Fatal(err)
	}
	var h wire.HelloResult
	json.Unmarshal(resp.Result, &h)
	if h.Name != "from-env" || h.Slots != 1 || h.Tags != nil || h.Functions != nil {
		t.Errorf("hello = %+v, want name from MSERVE_SERVANT_NAME, 1 slot (Slots(0) is raised to 1), no tags or functions", h)
	}
}

func TestPing(t *testing.T) {
	c := dial(t, serve(t, newServant()))
	resp, err := c.Call(testCtx(t), wire.MethodPing, nil)
	if err != nil || string(resp.Result) != `"pong"` {
		t.Fatalf("rpc.ping = %v, %v", resp, err)
	}
}

func TestBindOverTheWire(t *testing.T) {
	s := newServant()
	s.MustHandle("add(a int, b int = 10)", func(_ context.Context, c *servant.Call) (any, error) {
		var a, b int
		if err := c.Bind(&a, &b); err != nil {
			return nil, err
		}
		return a + b, nil
	})
	s.MustHandle(`label(n int, prefix string = "#", xs list<list<int>> = [[1],[2,3]])`, func(_ context.Context, c *servant.Call) (any, error) {
		var n int
		var prefix string
		var xs [][]int
		if err := c.Bind(&n, &prefix, &xs); err != nil {
			return nil, err
		}
		return fmt.Sprintf("%s%d%v", prefix, n, xs), nil
	})
	c := dial(t, serve(t, s))
	tests := []struct {
		name   string
		method string
		params string
		want   string
		code   int
		msg    []string
	}{
		{"positional", "add", `[1, 2]`, `3`, 0, nil},
		{"positional with default", "add", `[5]`, `15`, 0, nil},
		{"named", "add", `{"b": 2, "a": 1}`, `3`, 0, nil},
		{"named with default", "add", `{"a": 1}`, `11`, 0, nil},
		{"defaults of every kind", "label", `[7]`, `"#7[[1] [2 3]]"`, 0, nil},
		{"named overriding a list default", "label", `{"n":1,"xs":[[9]]}`, `"#1[[9]]"`, 0, nil},
		{"missing required", "add", `[]`, ``, jsonrpc.InvalidParams, []string{`missing required parameter "a" (int)`}},
		{"missing required named", "add", `{"b":1}`, ``, jsonrpc.InvalidParams, []string{`add: missing required parameter "a"`}},
		{"no params at all", "add", ``, ``, jsonrpc.InvalidParams, []string{`missing required parameter "a"`}},
		{"too many", "add", `[1, 2, 3]`, ``, jsonrpc.InvalidParams, []string{`add takes 2 argument(s), got 3`}},
		{"unknown name", "add", `{"a":1,"c":2}`, ``, jsonrpc.InvalidParams, []string{`add has no parameter "c"`}},
		{"wrong type", "add", `["one"]`, ``, jsonrpc.InvalidParams, []string{`parameter "a" expects int, got "one"`, `not a whole number`}},
		{"wrong type second", "add", `[1, true]`, ``, jsonrpc.InvalidParams, []string{`parameter "b" expects int, got true`}},
		{"wrong nested type", "label", `{"n":1,"xs":[["x"]]}`, ``, jsonrpc.InvalidParams, []string{`parameter "xs" expects list<list<int>>`, `element 0`}},
		{"int written as 1e1 binds as 10", "add", `[1e1, 1.0]`, `11`, 0, nil},
		{"fractional int refused before the handler", "add", `[1.5]`, ``, jsonrpc.InvalidParams, []string{`an int is never rounded`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var params []byte
			if tc.params != "" {
				params = []byte(tc.params)
			}
			resp, err := c.CallRaw(testCtx(t), tc.method, params)
			if tc.code != 0 {
				rpcErr(t, err, tc.code, append([]string{"invalid params: "}, tc.msg...)...)
				return
			}
			if err != nil {
				t.Fatalf("%s(%s): %v", tc.method, tc.params, err)
			}
			if string(resp.Result) != tc.want {
				t.Errorf("result = %s, want %s", resp.Result, tc.want)
			}
		})
	}
}

func TestHandlerErrors(t *testing.T) {
	s := newServant()
	s.MustHandle("custom()", func(context.Context, *servant.Call) (any, error) {
		return nil, &jsonrpc.Error{Code: -32050, Message: "no data for that date", Data: json.RawMessage(`{"date":"2020-01-01"}`)}
	})
	s.MustHandle("wrapped()", func(context.Context, *servant.Call) (any, error) {
		return nil, fmt.Errorf("loading: %w", jsonrpc.Errorf(jsonrpc.InvalidParams, "bad symbol %q", "XYZ"))
	})
	s.MustHandle("plain()", func(context.Context, *servant.Call) (any, error) {
		return nil, errors.New("disk on fire")
	})
	s.MustHandle("unencodable()", func(context.Context, *servant.Call) (any, error) {
		return make(chan int), nil
	})
	s.MustHandle("badraw()", func(context.Context, *servant.Call) (any, error) {
		return json.RawMessage(`{"a":`), nil
	})
	s.MustHandle("nothing()", func(context.Context, *servant.Call) (any, error) {
		return nil, nil
	})
	s.MustHandle("panics(x any)", func(context.Context, *servant.Call) (any, error) {
		panic("index out of range")
	})
	s.MustHandle("info()", func(_ context.Context, c *servant.Call) (any, error) {
		c.SetInfo("rows", 5)
		return nil, errors.New("failed after 5 rows")
	})
	c := dial(t, serve(t, s))
	tests := []struct {
		name   string
		method string
		code   int
		msg    []string
		data   string
	}{
		{"*jsonrpc.Error keeps its code, message and data", "custom", -32050, []string{"no data for that date"}, `{"date":"2020-01-01"}`},
		{"wrapped *jsonrpc.Error keeps its code", "wrapped", jsonrpc.InvalidParams, []string{`bad symbol "XYZ"`}, ""},
		{"plain error becomes internal error with its text", "plain", jsonrpc.InternalError, []string{"disk on fire"}, ""},
		{"unencodable result", "unencodable", jsonrpc.InternalError, []string{"unencodable returned a value that cannot be encoded as JSON"}, ""},
		{"invalid raw JSON result", "badraw", jsonrpc.InternalError, []string{"badraw returned a value that cannot be encoded as JSON"}, ""},
		{"panic becomes internal error", "panics", jsonrpc.InternalError, []string{"panics failed inside the servant (panic)"}, ""},
		{"unknown method", "nope", jsonrpc.MethodNotFound, []string{`no function "nope"`}, ""},
		{"unknown rpc. method", "rpc.nope", jsonrpc.MethodNotFound, []string{`"rpc.nope"`}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var params any
			if tc.method == "panics" {
				params = []any{1}
			}
			_, err := c.Call(testCtx(t), tc.method, params)
			e := rpcErr(t, err, tc.code, tc.msg...)
			if string(e.Data) != tc.data {
				t.Errorf("data = %s, want %s", e.Data, tc.data)
			}
		})
	}
	t.Run("null result", func(t *testing.T) {
		resp, err := c.Call(testCtx(t), "nothing", nil)
		if err != nil || string(resp.Result) != "null" {
			t.Errorf("nothing() = %v, %v; want null", resp, err)
		}
	})
	t.Run("the servant keeps serving after a panic", func(t *testing.T) {
		for range 3 {
			if _, err := c.Call(testCtx(t), "panics", []any{1}); err == nil {
				t.Fatal("panic not reported")
			}
			if resp, err := c.Call(testCtx(t), wire.MethodPing, nil); err != nil || string(resp.Result) != `"pong"` {
				t.Fatalf("after a panic: %v, %v", resp, err)
			}
		}
	})
	t.Run("info travels with an error", func(t *testing.T) {
		resp, err := c.Call(testCtx(t), "info", nil)
		rpcErr(t, err, jsonrpc.InternalError, "failed after 5 rows")
		var info map[string]json.RawMessage
		if resp == nil || json.Unmarshal(resp.InfoRaw, &info) != nil || string(info["rows"]) != "5" || info["handler_ns"] == nil {
			t.Errorf("info with the error = %v", resp)
		}
	})
}

func TestSetInfo(t *testing.T) {
	s := newServant()
	s.MustHandle("q(sym symbol)", func(_ context.Context, c *servant.Call) (any, error) {
		c.SetInfo("rows", 5)
		c.SetInfo("source", "hdb")
		c.SetInfo("ratio", 0.5)
		c.SetInfo("odd \"key\"", []int{1, 2})
		return []string{"IBM"}, nil
	})
	c := dial(t, serve(t, s))
	resp, err := c.Call(testCtx(t), "q", []string{"IBM"})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Result) != `["IBM"]` {
		t.Errorf("result = %s", resp.Result)
	}
	var info map[string]json.RawMessage
	if err := json.Unmarshal(resp.InfoRaw, &info); err != nil {
		t.Fatalf("info %s: %v", resp.InfoRaw, err)
	}
	want := map[string]string{"rows": `5`, "source": `"hdb"`, "ratio": `0.5`, `odd "key"`: `[1,2]`}
	for k, v := range want {
		if string(info[k]) != v {
			t.Errorf("info[%q] = %s, want %s (info %s)", k, info[k], v, resp.InfoRaw)
		}
	}
	if _, ok := info["handler_ns"]; !ok || len(info) != len(want)+1 {
		t.Errorf("info = %s, want handler_ns next to the handler's fields", resp.InfoRaw)
	}
	if got := resp.Info().HandlerNs; got < 0 {
		t.Errorf("Info().HandlerNs = %d", got)
	}
}

func TestManyConcurrentCallsOnOneConnection(t *testing.T) {
	s := newServant(servant.Slots(8))
	s.MustHandle("echo(x any)", echo)
	c := dial(t, serve(t, s))
	const n = 200
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf(`{"i":%d,"s":"%s"}`, i, strings.Repeat("x", i))
			resp, err := c.CallRaw(ctx, "echo", []byte("["+want+"]"))
			switch {
			case err != nil:
				errs <- fmt.Errorf("call %d: %v", i, err)
			case string(resp.Result) != want:
				errs <- fmt.Errorf("call %d got %s", i, resp.Result)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCancelReachesTheHandler(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	s := newServant()
	s.MustHandle("wait()", func(ctx context.Context, _ *servant.Call) (any, error) {
		close(started)
		<-ctx.Done()
		cancelled <- ctx.Err()
		return nil, ctx.Err()
	})
	c := dial(t, serve(t, s))
	ctx, cancel := context.WithCancel(testCtx(t))
	returned := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, "wait", nil)
		returned <- err
	}()
	recv(t, started, "the handler to start")
	cancel()
	if err := recv(t, returned, "Call to return after cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("Call = %v, want context.Canceled", err)
	}
	if err := recv(t, cancelled, "the handler's ctx to be cancelled by rpc.cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("handler ctx error = %v", err)
	}
	// The connection is still good.
	if _, err := c.Call(testCtx(t), wire.MethodPing, nil); err != nil {
		t.Errorf("ping after cancel: %v", err)
	}
}

// expiring is a context with a deadline that the test makes pass by hand
// (expire), so that it passes exactly when the handler is running.
type expiring struct {
	context.Context // cancelled by expire
	deadline        time.Time
}

func (e expiring) Deadline() (time.Time, bool) { return e.deadline, true }

func (e expiring) Err() error {
	if e.Context.Err() != nil {
		return context.DeadlineExceeded
	}
	return nil
}

func TestDeadlineReachesTheHandler(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	s := newServant()
	s.MustHandle("wait()", func(ctx context.Context, _ *servant.Call) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, nil
	})
	c := dial(t, serve(t, s))
	parent, expire := context.WithCancel(context.Background())
	defer expire()
	ctx := expiring{parent, time.Now().Add(time.Hour)}
	returned := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, "wait", nil)
		returned <- err
	}()
	recv(t, started, "the handler to start")
	expire()
	if err := recv(t, returned, "Call to return at its deadline"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call = %v, want context.DeadlineExceeded", err)
	}
	recv(t, cancelled, "the handler's ctx to be cancelled")
}

// rawConn speaks frames directly, for what the client cannot express.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	r  *wire.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(failsafe))
	return &rawConn{t: t, nc: nc, r: wire.NewReader(nc, 0)}
}

// send writes all frames in one write, so the servant reads them in order.
func (c *rawConn) send(bodies ...string) {
	c.t.Helper()
	var b []byte
	for _, body := range bodies {
		b = wire.AppendFrame(b, []byte(body))
	}
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) recv() jsonrpc.Response {
	c.t.Helper()
	f, err := c.r.ReadFrame(nil)
	if err != nil {
		c.t.Fatalf("reading a response: %v", err)
	}
	var resp jsonrpc.Response
	if err := jsonrpc.ParseResponse(f, &resp); err != nil {
		c.t.Fatalf("invalid response %s: %v", f, err)
	}
	return resp
}

func (c *rawConn) recvError(id string, code int, msg string) {
	c.t.Helper()
	resp := c.recv()
	if string(resp.ID) != id {
		c.t.Errorf("response id %s, want %s", resp.ID, id)
	}
	e, err := jsonrpc.DecodeError(resp.Error)
	if err != nil {
		c.t.Fatalf("want an error response, got result %s (%v)", resp.Result, err)
	}
	if e.Code != code || !strings.Contains(e.Message, msg) {
		c.t.Errorf("error %d %q, want %d containing %q", e.Code, e.Message, code, msg)
	}
}

func req(id int, method, params string) string {
	if params == "" {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q}`, id, method)
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`, id, method, params)
}

func TestSlotsOneRunsCallsInArrivalOrder(t *testing.T) {
	var active, most atomic.Int32
	var mu sync.Mutex
	var order []int
	s := newServant(servant.Slots(1))
	s.MustHandle("rec(i int)", func(_ context.Context, c *servant.Call) (any, error) {
		n := active.Add(1)
		defer active.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		var i int
		if err := c.Bind(&i); err != nil {
			return nil, err
		}
		mu.Lock()
		order = append(order, i)
		mu.Unlock()
		return i, nil
	})
	rc := dialRaw(t, serve(t, s))
	const n = 30
	var frames []string
	for i := range n {
		frames = append(frames, req(i, "rec", fmt.Sprintf("[%d]", i)))
	}
	rc.send(frames...)
	for i := range n {
		resp := rc.recv()
		if string(resp.ID) != strconv.Itoa(i) || string(resp.Result) != strconv.Itoa(i) {
			t.Fatalf("response %d: id %s result %s error %s", i, resp.ID, resp.Result, resp.Error)
		}
	}
	if m := most.Load(); m != 1 {
		t.Errorf("%d calls ran at once with Slots(1)", m)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range order {
		if v != i {
			t.Fatalf("run order %v, want arrival order", order)
		}
	}
}

func TestSlotsRunCallsConcurrently(t *testing.T) {
	const slots = 4
	var active, most atomic.Int32
	started := make(chan struct{}, 2*slots)
	release := make(chan struct{})
	s := newServant(servant.Slots(slots))
	s.MustHandle("block()", func(context.Context, *servant.Call) (any, error) {
		n := active.Add(1)
		defer active.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		started <- struct{}{}
		<-release
		return nil, nil
	})
	c := dial(t, serve(t, s))
	done := make(chan error, 2*slots)
	for range 2 * slots {
		go func() {
			_, err := c.Call(testCtx(t), "block", nil)
			done <- err
		}()
	}
	// All slots must be busy at once, or this waits forever.
	for range slots {
		recv(t, started, "a slot to start a call")
	}
	close(release)
	for range 2 * slots {
		if err := recv(t, done, "calls to finish"); err != nil {
			t.Error(err)
		}
	}
	if m := most.Load(); m != slots {
		t.Errorf("at most %d calls ran at once, want %d", m, slots)
	}
}

func TestCancelBeforeItRuns(t *testing.T) {
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	var ran atomic.Int32
	s := newServant(servant.Slots(1))
	s.MustHandle("block(i int)", func(context.Context, *servant.Call) (any, error) {
		ran.Add(1)
		started <- struct{}{}
		<-release
		return "done", nil
	})
	rc := dialRaw(t, serve(t, s))
	rc.send(req(1, "block", "[1]"), req(2, "block", "[2]"), `{"jsonrpc":"2.0","method":"rpc.cancel","params":[2]}`, req(3, wire.MethodPing, ""))
	recv(t, started, "the first call to start")
	// The servant reads frames in order: once rpc.ping is answered, the
	// cancel has been handled while call 2 was still queued.
	if resp := rc.recv(); string(resp.ID) != "3" || string(resp.Result) != `"pong"` {
		t.Fatalf("first response %s %s, want the pong", resp.ID, resp.Result)
	}
	close(release)
	if resp := rc.recv(); string(resp.ID) != "1" || string(resp.Result) != `"done"` {
		t.Fatalf("response %s %s %s, want call 1 done", resp.ID, resp.Result, resp.Error)
	}
	rc.recvError("2", jsonrpc.Cancelled, "cancelled before it ran")
	if n := ran.Load(); n != 1 {
		t.Errorf("handler ran %d times, want once (call 2 was cancelled)", n)
	}
}

func TestRawProtocolErrors(t *testing.T) {
	ran := make(chan string, 10)
	s := newServant()
	s.MustHandle("note(x any)", func(_ context.Context, c *servant.Call) (any, error) {
		ran <- string(c.Params)
		return nil, nil
	})
	rc := dialRaw(t, serve(t, s))
	t.Run("notification runs and is not answered", func(t *testing.T) {
		rc.send(`{"jsonrpc":"2.0","method":"note","params":["n1"]}`, req(1, wire.MethodPing, ""))
		if got := recv(t, ran, "the notification to run"); got != `["n1"]` {
			t.Errorf("handler params %s", got)
		}
		if resp := rc.recv(); string(resp.ID) != "1" {
			t.Errorf("next response has id %s, want the ping's", resp.ID)
		}
	})
	t.Run("notification to an unknown method is not answered", func(t *testing.T) {
		rc.send(`{"jsonrpc":"2.0","method":"nope"}`, `{"jsonrpc":"2.0","method":"rpc.hello"}`, req(2, wire.MethodPing, ""))
		if resp := rc.recv(); string(resp.ID) != "2" {
			t.Errorf("next response has id %s, want the ping's", resp.ID)
		}
	})
	t.Run("body that is not JSON", func(t *testing.T) {
		rc.send(`{"jsonrpc":"2.0","id":5,`)
		rc.recvError("null", jsonrpc.ParseError, "parse error: invalid JSON")
	})
	t.Run("invalid request is answered to its id", func(t *testing.T) {
		rc.send(`{"jsonrpc":"1.0","id":6,"method":"note"}`)
		rc.recvError("6", jsonrpc.InvalidRequest, `"jsonrpc" must be "2.0"`)
	})
	t.Run("batch is refused", func(t *testing.T) {
		rc.send(`[` + req(7, wire.MethodPing, "") + `]`)
		rc.recvError("null", jsonrpc.InvalidRequest, "not batches")
	})
	t.Run("string ids are echoed", func(t *testing.T) {
		rc.send(`{"jsonrpc":"2.0","id":"abc","method":"rpc.ping"}`)
		if resp := rc.recv(); string(resp.ID) != `"abc"` || string(resp.Result) != `"pong"` {
			t.Errorf("response %s %s", resp.ID, resp.Result)
		}
	})
}

func TestFrameTooLargeClosesTheConnection(t *testing.T) {
	s := newServant(servant.MaxFrame(64))
	s.MustHandle("echo(x any)", echo)
	rc := dialRaw(t, serve(t, s))
	rc.send(req(1, "echo", `["`+strings.Repeat("x", 100)+`"]`))
	rc.recvError("null", jsonrpc.TooLarge, "exceeds the limit of 64 bytes")
	if _, err := rc.r.ReadFrame(nil); err != io.EOF {
		t.Errorf("after a too-large frame: %v, want the connection closed", err)
	}
}

func TestResultTooLarge(t *testing.T) {
	s := newServant(servant.MaxFrame(256))
	s.MustHandle("big()", func(context.Context, *servant.Call) (any, error) { return strings.Repeat("x", 1000), nil })
	c := dial(t, serve(t, s))
	_, err := c.Call(testCtx(t), "big", nil)
	rpcErr(t, err, jsonrpc.TooLarge, "result too large", "exceeds the limit of 256 bytes")
	if _, err := c.Call(testCtx(t), wire.MethodPing, nil); err != nil {
		t.Errorf("the connection should survive: %v", err)
	}
}

func TestShutdownWaitsForRunningCalls(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	// Two slots: the probe below runs while block() holds the other one.
	s := newServant(servant.Slots(2))
	s.MustHandle("block()", func(context.Context, *servant.Call) (any, error) {
		close(started)
		<-release
		return "finished", nil
	})
	s.MustHandle("probe()", func(context.Context, *servant.Call) (any, error) { return nil, nil })
	addr := serve(t, s)
	c := dial(t, addr)
	result := make(chan string, 1)
	go func() {
		resp, err := c.Call(testCtx(t), "block", nil)
		if err != nil {
			result <- err.Error()
			return
		}
		result <- string(resp.Result)
	}()
	recv(t, started, "the call to start")
	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(testCtx(t)) }()
	// Once new calls are refused, Shutdown is waiting for the running one.
	// Until then probes succeed; each is a round trip, not a sleep.
	for {
		_, err := c.Call(testCtx(t), "probe", nil)
		if err == nil {
			continue
		}
		rpcErr(t, err, jsonrpc.ShuttingDown, "shutting down")
		break
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while a call was running", err)
	default:
	}
	close(release)
	if got := recv(t, result, "the running call's result"); got != `"finished"` {
		t.Errorf("running call got %s, want its result", got)
	}
	if err := recv(t, shutdown, "Shutdown"); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
}

func TestShutdownDeadlineClosesConnections(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	s := newServant()
	s.MustHandle("block()", func(context.Context, *servant.Call) (any, error) {
		close(started)
		<-release
		return nil, nil
	})
	c := dial(t, serve(t, s))
	returned := make(chan error, 1)
	go func() {
		_, err := c.Call(testCtx(t), "block", nil)
		returned <- err
	}()
	recv(t, started, "the call to start")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown with an ended ctx = %v, want context.Canceled", err)
	}
	if err := recv(t, returned, "the waiting call to fail"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("waiting call = %v, want client.ErrClosed", err)
	}
	if _, err := c.Call(testCtx(t), wire.MethodPing, nil); !errors.Is(err, client.ErrClosed) {
		t.Errorf("call after the connection closed = %v, want client.ErrClosed", err)
	}
}

func TestServeAfterShutdown(t *testing.T) {
	s := newServant()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != nil {
		t.Errorf("Serve after Shutdown = %v, want nil", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("Serve after Shutdown left the listener open")
	}
}

func TestHandle(t *testing.T) {
	nop := func(context.Context, *servant.Call) (any, error) { return nil, nil }
	s := newServant()
	if err := s.Handle("f(a int)", nop); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		decl string
		msg  []string
	}{
		{"malformed declaration names it and the column", "g(a integer)", []string{`declaration "g(a integer)"`, "column 5", `unknown type "integer"`}},
		{"duplicate name", "f(b string)", []string{`function "f" declared twice`}},
		{"reserved prefix", "rpc.x()", []string{"rpc. prefix is reserved"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Handle(tc.decl, nop)
			if err == nil {
				t.Fatalf("Handle(%q) accepted it", tc.decl)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
		})
	}
	t.Run("MustHandle panics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("no panic")
			}
		}()
		s.MustHandle("f()", nop)
	})
	t.Run("after Serve", func(t *testing.T) {
		c := dial(t, serve(t, s))
		// An answered call proves Serve has started.
		if _, err := c.Call(testCtx(t), wire.MethodPing, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Handle("late()", nop); err == nil || !strings.Contains(err.Error(), "before Serve") {
			t.Errorf("Handle after Serve = %v, want it refused", err)
		}
	})
}

func TestEnvAddr(t *testing.T) {
	tests := []struct {
		name, env, def, want string
	}{
		{"unset gives the default", "", "127.0.0.1:7001", "127.0.0.1:7001"},
		{"set wins", "127.0.0.1:9999", "127.0.0.1:7001", "127.0.0.1:9999"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MSERVE_SERVANT_ADDR", tc.env)
			if got := servant.EnvAddr(tc.def); got != tc.want {
				t.Errorf("EnvAddr = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestListenAndServeBadAddress(t *testing.T) {
	s := newServant()
	if err := s.ListenAndServe("127.0.0.1:-1"); err == nil {
		t.Error("ListenAndServe on an invalid address succeeded")
	}
}

func TestNewDefaults(t *testing.T) {
	t.Setenv("MSERVE_SERVANT_NAME", "")
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	s := servant.New() // default logger and name
	c := dial(t, serve(t, s))
	resp, err := c.Call(testCtx(t), wire.MethodHello, nil)
	if err != nil {
		t.Fatal(err)
	}
	var h wire.HelloResult
	json.Unmarshal(resp.Result, &h)
	if h.Name != host || h.Slots != 1 || h.Protocol != wire.ProtocolVersion {
		t.Errorf("hello = %+v, want the host name %q, 1 slot", h, host)
	}
}
