package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// failsafe bounds waits that only run out when the code under test is
// broken. Nothing in these tests sleeps to let something happen.
const failsafe = 10 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), failsafe)
	t.Cleanup(cancel)
	return ctx
}

// noDeadline is a context without a deadline, so that no "mserve" member
// is sent; it ends with the test.
func noDeadline(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
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

// fakeServer is the far end of a client connection, scripted by the test.
type fakeServer struct {
	t  *testing.T
	nc net.Conn
	r  *wire.Reader
}

// newFake returns a client connected to a fake server over loopback TCP.
func newFake(t *testing.T, opts ...client.Option) (*client.Client, *fakeServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
	}()
	c, err := client.Dial(testCtx(t), ln.Addr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	nc := recv(t, accepted, "the client to connect")
	if nc == nil {
		t.Fatal("accept failed")
	}
	nc.SetDeadline(time.Now().Add(failsafe))
	t.Cleanup(func() { c.Close(); nc.Close() })
	return c, &fakeServer{t: t, nc: nc, r: wire.NewReader(nc, 0)}
}

// read returns the next request the client sent.
func (s *fakeServer) read() (jsonrpc.Request, string) {
	s.t.Helper()
	f, err := s.r.ReadFrame(nil)
	if err != nil {
		s.t.Fatalf("fake server: reading a request: %v", err)
	}
	var req jsonrpc.Request
	if e := jsonrpc.ParseRequest(f, &req); e != nil {
		s.t.Fatalf("client sent an invalid request %s: %v", f, e)
	}
	return req, string(f)
}

func (s *fakeServer) send(body string) {
	s.t.Helper()
	if _, err := s.nc.Write(wire.AppendFrame(nil, []byte(body))); err != nil {
		s.t.Fatalf("fake server: %v", err)
	}
}

type callResult struct {
	resp *client.Response
	err  error
}

func goCall(ctx context.Context, c *client.Client, method string, params any) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		resp, err := c.Call(ctx, method, params)
		ch <- callResult{resp, err}
	}()
	return ch
}

func TestCallEncodesRequests(t *testing.T) {
	type named struct {
		Sym   string `json:"sym"`
		Limit int    `json:"limit,omitempty"`
	}
	tests := []struct {
		name   string
		method string
		params any
		want   string // raw params on the wire; "" means absent
	}{
		{"no params", "now", nil, ""},
		{"raw message sent byte for byte", "proc1", json.RawMessage(`[ "IBM",  1.50 ]`), `[ "IBM",  1.50 ]`},
		{"byte slice sent byte for byte", "proc1", []byte(`{"sym" : "IBM"}`), `{"sym" : "IBM"}`},
		{"slice marshalled as positional", "proc1", []any{"IBM", 2}, `["IBM",2]`},
		{"map marshalled as named", "proc1", map[string]int{"a": 1}, `{"a":1}`},
		{"struct marshalled as named", "proc1", named{Sym: "IBM"}, `{"sym":"IBM"}`},
		{"method name escaped", "we\"ird\n", []any{}, `[]`},
		{"unicode method", "größe", nil, ""},
	}
	c, srv := newFake(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := goCall(noDeadline(t), c, tc.method, tc.params)
			req, frame := srv.read()
			if req.Method != tc.method {
				t.Errorf("method on the wire %q, want %q", req.Method, tc.method)
			}
			if (req.Params == nil) != (tc.want == "") || string(req.Params) != tc.want {
				t.Errorf("params on the wire %q, want %q (frame %s)", req.Params, tc.want, frame)
			}
			if want := strconv.Itoa(i + 1); string(req.ID) != want {
				t.Errorf("id %s, want %s: ids count up from 1", req.ID, want)
			}
			if req.Mserve != nil {
				t.Errorf("mserve member %s sent without a deadline", req.Mserve)
			}
			srv.send(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":{ "ok" : [1, 2] }}`)
			r := recv(t, done, "the call to return")
			if r.err != nil {
				t.Fatalf("Call: %v", r.err)
			}
			if string(r.resp.Result) != `{ "ok" : [1, 2] }` {
				t.Errorf("result %s, want the server's bytes unchanged", r.resp.Result)
			}
			if r.resp.InfoRaw != nil {
				t.Errorf("InfoRaw = %s, want nil when the server sent none", r.resp.InfoRaw)
			}
		})
	}
}

func TestCallSendsDeadlineAsTimeout(t *testing.T) {
	c, srv := newFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	done := goCall(ctx, c, "f", nil)
	req, _ := srv.read()
	var opts struct {
		TimeoutMs *int64 `json:"timeout_ms"`
	}
	if err := json.Unmarshal(req.Mserve, &opts); err != nil || opts.TimeoutMs == nil {
		t.Fatalf("mserve member %s: %v", req.Mserve, err)
	}
	if ms := *opts.TimeoutMs; ms <= 0 || ms > time.Hour.Milliseconds() || ms < time.Hour.Milliseconds()-failsafe.Milliseconds() {
		t.Errorf("timeout_ms = %d, want just under %d", ms, time.Hour.Milliseconds())
	}
	srv.send(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":1}`)
	if r := recv(t, done, "the call"); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestResponseInfo(t *testing.T) {
	c, srv := newFake(t)
	done := goCall(testCtx(t), c, "proc1", []any{"IBM"})
	req, _ := srv.read()
	info := `{"route":"IBM","servant":"s1","elapsed_ns":412000,"execution_ns":398000,"backlog":2,"remaining":1,"handler_ns":25285,"rows":5}`
	srv.send(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":[1],"info":` + info + `}`)
	r := recv(t, done, "the call")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if string(r.resp.InfoRaw) != info {
		t.Errorf("InfoRaw = %s, want %s", r.resp.InfoRaw, info)
	}
	want := client.Info{Route: "IBM", Servant: "s1", ElapsedNs: 412000, ExecutionNs: 398000, HandlerNs: 25285, Backlog: 2, Remaining: 1}
	got := r.resp.Info()
	if got != want {
		t.Errorf("Info() = %+v, want %+v", got, want)
	}
	if got.Elapsed() != 412*time.Microsecond || got.Execution() != 398*time.Microsecond {
		t.Errorf("Elapsed %v Execution %v", got.Elapsed(), got.Execution())
	}
}

func TestInfoWithoutRecord(t *testing.T) {
	var nilResp *client.Response
	tests := []struct {
		name string
		resp *client.Response
	}{
		{"nil response", nilResp},
		{"no info", &client.Response{Result: json.RawMessage(`1`)}},
		{"malformed info", &client.Response{InfoRaw: json.RawMessage(`[`)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.resp.Info(); got != (client.Info{}) {
				t.Errorf("Info() = %+v, want zero", got)
			}
		})
	}
}

func TestErrorResponses(t *testing.T) {
	tests := []struct {
		name    string
		errObj  string
		info    string
		code    int
		msg     string
		data    string
		wantErr string // non-empty: not a *jsonrpc.Error, an error containing this
	}{
		{"error with data and info", `{"code":-32003,"message":"timeout after 200ms","data":{"ms":200}}`, `{"servant":"s2"}`, jsonrpc.Timeout, "timeout after 200ms", `{"ms":200}`, ""},
		{"error without info", `{"code":-32601,"message":"method not found"}`, "", jsonrpc.MethodNotFound, "method not found", "", ""},
		{"malformed error object", `{"code":"x","message":1}`, "", 0, "", "", "malformed error from server"},
	}
	c, srv := newFake(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := goCall(testCtx(t), c, "f", nil)
			req, _ := srv.read()
			body := `{"jsonrpc":"2.0","id":` + string(req.ID) + `,"error":` + tc.errObj
			if tc.info != "" {
				body += `,"info":` + tc.info
			}
			srv.send(body + "}")
			r := recv(t, done, "the call")
			if r.resp == nil {
				t.Fatalf("no Response with the error %v", r.err)
			}
			if string(r.resp.InfoRaw) != tc.info {
				t.Errorf("InfoRaw = %s, want %s", r.resp.InfoRaw, tc.info)
			}
			if r.resp.Result != nil {
				t.Errorf("Result = %s on an error", r.resp.Result)
			}
			if tc.wantErr != "" {
				if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one containing %q", r.err, tc.wantErr)
				}
				return
			}
			var e *jsonrpc.Error
			if !errors.As(r.err, &e) {
				t.Fatalf("error %v (%T), want *jsonrpc.Error", r.err, r.err)
			}
			if e.Code != tc.code || e.Message != tc.msg || string(e.Data) != tc.data {
				t.Errorf("error %+v, want code %d message %q data %s", e, tc.code, tc.msg, tc.data)
			}
		})
	}
}

func TestResponsesInCompletionOrder(t *testing.T) {
	c, srv := newFake(t)
	first := goCall(testCtx(t), c, "slow", nil)
	reqA, _ := srv.read()
	second := goCall(testCtx(t), c, "fast", nil)
	reqB, _ := srv.read()
	// A response to an id nobody waits for is ignored.
	srv.send(`{"jsonrpc":"2.0","id":999,"result":"stray"}`)
	srv.send(`{"jsonrpc":"2.0","id":` + string(reqB.ID) + `,"result":"B"}`)
	if r := recv(t, second, "the second call"); r.err != nil || string(r.resp.Result) != `"B"` {
		t.Errorf("second call = %v, %v", r.resp, r.err)
	}
	srv.send(`{"jsonrpc":"2.0","id":` + string(reqA.ID) + `,"result":"A"}`)
	if r := recv(t, first, "the first call"); r.err != nil || string(r.resp.Result) != `"A"` {
		t.Errorf("first call = %v, %v", r.resp, r.err)
	}
}

func TestConnectionFailuresEndTheSession(t *testing.T) {
	tests := []struct {
		name  string
		opts  []client.Option
		serve func(s *fakeServer)
		msg   string
	}{
		{"server closes the connection", nil, func(s *fakeServer) { s.nc.Close() }, "EOF"},
		{"server sends a frame that is not JSON", nil, func(s *fakeServer) { s.send(`{"jsonrpc":`) }, "server sent an invalid response"},
		{"server sends a request instead of a response", nil, func(s *fakeServer) { s.send(`{"jsonrpc":"2.0","id":1,"method":"f"}`) }, `exactly one of "result" and "error"`},
		{"server refuses with an error without an id", nil, func(s *fakeServer) {
			s.send(`{"jsonrpc":"2.0","id":null,"error":{"code":-32008,"message":"frame too large; closing the connection"}}`)
		}, "frame too large; closing the connection"},
		{"server answers with an id the client never uses", nil, func(s *fakeServer) { s.send(`{"jsonrpc":"2.0","id":"abc","result":1}`) }, `server sent a response with id "abc"`},
		{"response larger than the client's limit", []client.Option{client.MaxFrame(128)}, func(s *fakeServer) {
			s.send(`{"jsonrpc":"2.0","id":1,"result":"` + strings.Repeat("x", 200) + `"}`)
		}, "exceeds the limit of 128 bytes"},
		{"server speaks HTTP", nil, func(s *fakeServer) { s.nc.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) }, "not length-prefixed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newFake(t, tc.opts...)
			var waiting []<-chan callResult
			for range 3 {
				waiting = append(waiting, goCall(testCtx(t), c, "f", nil))
				srv.read()
			}
			tc.serve(srv)
			for i, ch := range waiting {
				r := recv(t, ch, "a waiting call to fail")
				if !errors.Is(r.err, client.ErrClosed) {
					t.Errorf("waiting call %d: %v, want client.ErrClosed", i, r.err)
				} else if !strings.Contains(r.err.Error(), tc.msg) {
					t.Errorf("waiting call %d: %q does not say %q", i, r.err, tc.msg)
				}
			}
			if _, err := c.Call(testCtx(t), "g", nil); !errors.Is(err, client.ErrClosed) {
				t.Errorf("call after the session ended = %v, want client.ErrClosed", err)
			}
		})
	}
}

func TestCloseFailsWaitingCalls(t *testing.T) {
	c, srv := newFake(t)
	waiting := goCall(testCtx(t), c, "f", nil)
	srv.read()
	if err := c.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if r := recv(t, waiting, "the waiting call"); !errors.Is(r.err, client.ErrClosed) {
		t.Errorf("waiting call = %v, want client.ErrClosed", r.err)
	}
	if _, err := c.Call(testCtx(t), "f", nil); !errors.Is(err, client.ErrClosed) {
		t.Errorf("call after Close = %v, want client.ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestParamsTooLarge(t *testing.T) {
	// The client's limit also caps the requests it sends.
	c, srv := newFake(t, client.MaxFrame(128))
	_, err := c.CallRaw(testCtx(t), "f", []byte(`["`+strings.Repeat("x", 200)+`"]`))
	var tl *wire.FrameTooLargeError
	if !errors.As(err, &tl) || tl.Limit != 128 {
		t.Fatalf("CallRaw with big params = %v, want *wire.FrameTooLargeError with limit 128", err)
	}
	// Nothing of the refused call reached the wire; the client still works.
	done := goCall(testCtx(t), c, "small", nil)
	req, _ := srv.read()
	if req.Method != "small" {
		t.Fatalf("first request on the wire is %q, want the small call", req.Method)
	}
	srv.send(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":true}`)
	if r := recv(t, done, "the small call"); r.err != nil {
		t.Errorf("small call after a refused one: %v", r.err)
	}
}

func TestUnencodableParams(t *testing.T) {
	c, srv := newFake(t)
	if _, err := c.Call(testCtx(t), "f", make(chan int)); err == nil || !strings.Contains(err.Error(), "encoding params") {
		t.Fatalf("Call with a channel = %v, want an encoding error", err)
	}
	done := goCall(testCtx(t), c, "g", nil)
	if req, _ := srv.read(); req.Method != "g" {
		t.Errorf("first request on the wire is %q, want g", req.Method)
	} else {
		srv.send(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":null}`)
	}
	recv(t, done, "the call")
}

func TestCancelSendsRPCCancel(t *testing.T) {
	c, srv := newFake(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	done := goCall(ctx, c, "slow", nil)
	req, _ := srv.read()
	cancel()
	if r := recv(t, done, "Call to return after cancel"); !errors.Is(r.err, context.Canceled) {
		t.Errorf("Call = %v, want context.Canceled", r.err)
	}
	note, frame := srv.read()
	if note.Method != wire.MethodCancel || !note.IsNotification() || string(note.Params) != "["+string(req.ID)+"]" {
		t.Errorf("after cancel the client sent %s, want an rpc.cancel notification for id %s", frame, req.ID)
	}
	// A late answer to the cancelled call is dropped; the client goes on.
	srv.send(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"error":{"code":-32007,"message":"cancelled"}}`)
	next := goCall(testCtx(t), c, "next", nil)
	req2, _ := srv.read()
	srv.send(`{"jsonrpc":"2.0","id":` + string(req2.ID) + `,"result":2}`)
	if r := recv(t, next, "the next call"); r.err != nil || string(r.resp.Result) != "2" {
		t.Errorf("next call = %v, %v", r.resp, r.err)
	}
}

func TestCallWithEndedContext(t *testing.T) {
	c, _ := newFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Call(ctx, "f", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Call with a cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		addr string
	}{
		{"nothing listening", testCtx(t), closedAddr},
		{"cancelled context", cancelled, closedAddr},
		{"malformed address", testCtx(t), "not an address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := client.Dial(tc.ctx, tc.addr); err == nil {
				c.Close()
				t.Errorf("Dial(%q) succeeded", tc.addr)
			}
		})
	}
}

func TestNewOverPipe(t *testing.T) {
	a, b := net.Pipe()
	c := client.New(a, 0)
	defer c.Close()
	srv := &fakeServer{t: t, nc: b, r: wire.NewReader(b, 0)}
	done := goCall(testCtx(t), c, "f", []int{1})
	req, _ := srv.read()
	srv.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":"piped"}`, req.ID))
	if r := recv(t, done, "the call"); r.err != nil || string(r.resp.Result) != `"piped"` {
		t.Errorf("call over a pipe = %v, %v", r.resp, r.err)
	}
	b.Close()
}
