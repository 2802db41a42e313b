package main

// End-to-end tests: the real mserve binary with real servant processes
// (the quickstart servant, or this test binary as a fault servant) over
// TCP, driven through sdk/client, net/http, raw frames and the mserve CLI.
// Helpers are in e2e_helpers_test.go, the fault servant in
// faultservant_test.go.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// ---------------------------------------------------------------------------
// Fixtures

// startQuickstartMserve starts mserve with n local quickstart servants and
// waits until every one is up.
func startQuickstartMserve(t *testing.T, n int, flags ...string) *mserveProc {
	t.Helper()
	p := startMserve(t, mserveOpts{flags: flags, servants: []string{fmt.Sprint(n), quickstartBin}})
	p.waitServantsUp(servantNames(n)...)
	return p
}

// startFaultMserve starts mserve with n local fault servants (this test
// binary) and waits until every one is up.
func startFaultMserve(t *testing.T, n int, flags ...string) *mserveProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := startMserve(t, mserveOpts{
		flags: flags, servants: []string{fmt.Sprint(n), self}, env: []string{envFaultServant + "=1"},
	})
	p.waitServantsUp(servantNames(n)...)
	return p
}

func servantNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("s%d", i+1)
	}
	return names
}

func dialClient(t testing.TB, addr string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// call makes one call with a generous deadline.
func call(c *client.Client, method string, params any) (*client.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Call(ctx, method, params)
}

// mustCall makes one call that must succeed.
func mustCall(t testing.TB, c *client.Client, method string, params any) *client.Response {
	t.Helper()
	resp, err := call(c, method, params)
	if err != nil {
		t.Fatalf("%s %v: %v", method, params, err)
	}
	return resp
}

// rpcCode returns err's JSON-RPC code, failing when it is not a JSON-RPC
// error.
func rpcCode(t testing.TB, err error) *jsonrpc.Error {
	t.Helper()
	var e *jsonrpc.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v (%T), want a JSON-RPC error", err, err)
	}
	return e
}

// countResult is what the fault servant's count returns.
type countResult struct {
	Pid   int    `json:"pid"`
	Count int    `json:"count"`
	Name  string `json:"name"`
}

// learnPids calls count until every servant named has answered, records
// their pids with p (so that the final check knows them) and returns them.
func learnPids(t testing.TB, p *mserveProc, c *client.Client, names ...string) map[string]int {
	t.Helper()
	pids := map[string]int{}
	for i := 0; len(pids) < len(names); i++ {
		if i == 50 {
			t.Fatalf("count reached only %v of servants %v in 50 calls", pids, names)
		}
		resp := mustCall(t, c, "count", []any{i})
		var r countResult
		if err := json.Unmarshal(resp.Result, &r); err != nil {
			t.Fatalf("count result %s: %v", resp.Result, err)
		}
		if s := resp.Info().Servant; s != r.Name {
			t.Errorf("info says servant %q, the servant says it is %q", s, r.Name)
		}
		pids[r.Name] = r.Pid
		p.notePid(r.Pid)
	}
	return pids
}

// background runs echo calls one after another on its own connection until
// stopped, counting successes and keeping every failure.
type background struct {
	ok     atomic.Int64
	mu     sync.Mutex
	errs   []error
	stop   chan struct{}
	done   chan struct{}
	change chan struct{} // receives (without blocking) after each success
}

func startBackground(t testing.TB, addr string) *background {
	t.Helper()
	c := dialClient(t, addr)
	b := &background{stop: make(chan struct{}), done: make(chan struct{}), change: make(chan struct{}, 1)}
	go func() {
		defer close(b.done)
		for i := 0; ; i++ {
			select {
			case <-b.stop:
				return
			default:
			}
			arg := fmt.Sprintf("bg-%d", i)
			resp, err := call(c, "echo", []any{arg})
			if err == nil && string(resp.Result) != `"`+arg+`"` {
				err = fmt.Errorf("echo %q returned %s", arg, resp.Result)
			}
			if err != nil {
				b.mu.Lock()
				b.errs = append(b.errs, err)
				b.mu.Unlock()
				return
			}
			b.ok.Add(1)
			select {
			case b.change <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(b.finish)
	return b
}

// waitOK waits until at least n calls have succeeded in all.
func (b *background) waitOK(t testing.TB, n int64) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for b.ok.Load() < n {
		select {
		case <-b.change:
		case <-b.done:
			t.Fatalf("the background client stopped after %d calls: %v", b.ok.Load(), b.errors())
		case <-deadline.C:
			t.Fatalf("the background client made %d calls in 20s, want %d", b.ok.Load(), n)
		}
	}
}

func (b *background) finish() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
}

func (b *background) errors() []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.errs)
}

// checkInfo checks an info record from a successful call on a quickstart
// servant.
func checkInfo(t *testing.T, info map[string]json.RawMessage, route string, servants []string) {
	t.Helper()
	if got := infoStr(t, info, "route"); got != route {
		t.Errorf("info route = %q, want %q", got, route)
	}
	if s := infoStr(t, info, "servant"); !slices.Contains(servants, s) {
		t.Errorf("info servant = %q, want one of %v", s, servants)
	}
	elapsed, exec := infoInt(t, info, "elapsed_ns"), infoInt(t, info, "execution_ns")
	if exec <= 0 || elapsed < exec {
		t.Errorf("info elapsed_ns = %d, execution_ns = %d: want elapsed >= execution > 0", elapsed, exec)
	}
	if h := infoInt(t, info, "handler_ns"); h <= 0 {
		t.Errorf("info handler_ns = %d, want > 0", h)
	}
	if b := infoInt(t, info, "backlog"); b < 0 {
		t.Errorf("info backlog = %d", b)
	}
	if r := infoInt(t, info, "remaining"); r < 0 {
		t.Errorf("info remaining = %d", r)
	}
}

// checkTable checks the quickstart proc1 result for sym.
func checkTable(t *testing.T, raw []byte, sym string) {
	t.Helper()
	var tab struct {
		Sym   []string  `json:"sym"`
		Time  []string  `json:"time"`
		Price []float64 `json:"price"`
		Size  []int     `json:"size"`
	}
	if err := json.Unmarshal(raw, &tab); err != nil {
		t.Fatalf("proc1 result %s: %v", raw, err)
	}
	wantTime := []string{"09:30:00", "09:31:00", "09:32:00", "09:33:00", "09:34:00"}
	if !slices.Equal(tab.Sym, slices.Repeat([]string{sym}, 5)) || !slices.Equal(tab.Time, wantTime) ||
		len(tab.Price) != 5 || len(tab.Size) != 5 {
		t.Errorf("proc1 %s result is not the quickstart table: %s", sym, raw)
	}
	for _, s := range tab.Size {
		if s <= 0 || s%100 != 0 {
			t.Errorf("proc1 %s: size %d is not a positive multiple of 100", sym, s)
		}
	}
}

// ---------------------------------------------------------------------------
// 1. Happy path

func TestE2EHappyPath(t *testing.T) {
	t.Parallel()
	// The default algorithm (match), with a short route expiry so that the
	// many distinct routing strings below need not wait 12s for a servant.
	p := startQuickstartMserve(t, 3, "-route-expire", "1ms")
	servants := servantNames(3)
	c := dialClient(t, p.native)

	var nativeTable, httpTable []byte
	t.Run("native/proc1", func(t *testing.T) {
		resp := mustCall(t, c, "proc1", []any{"IBM"})
		checkTable(t, resp.Result, "IBM")
		var info map[string]json.RawMessage
		if err := json.Unmarshal(resp.InfoRaw, &info); err != nil {
			t.Fatalf("info %s: %v", resp.InfoRaw, err)
		}
		checkInfo(t, info, "IBM", servants)
		if got := infoInt(t, info, "rows"); got != 5 {
			t.Errorf(`info "rows" = %d, want 5 (merged from the servant's info)`, got)
		}
		nativeTable = resp.Result
	})
	t.Run("http/proc1", func(t *testing.T) {
		status, hdr, body := httpPost(t, p.http, `{"jsonrpc":"2.0","id":1,"method":"proc1","params":["IBM"]}`)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		r := decodeResp(t, body)
		if string(r.ID) != "1" {
			t.Errorf("id = %s, want 1", r.ID)
		}
		if r.Error != nil {
			t.Fatalf("error %+v", r.Error)
		}
		checkTable(t, r.Result, "IBM")
		checkInfo(t, r.Info, "IBM", servants)
		if got := infoInt(t, r.Info, "rows"); got != 5 {
			t.Errorf(`info "rows" = %d, want 5 (merged from the servant's info)`, got)
		}
		httpTable = r.Result
	})
	if nativeTable != nil && httpTable != nil && !bytes.Equal(nativeTable, httpTable) {
		t.Errorf("proc1 IBM differs between front ends:\nnative %s\nhttp   %s", nativeTable, httpTable)
	}

	// Unusual but valid JSON, compact (so that it does not matter whether
	// the servant re-encodes what it echoes): mserve must hand the bytes
	// through unchanged, both ways.
	args := []string{
		`["x",1.50,{"b":[true,null]},"\u00e9"]`,
		`1.0e+2`,
		`-0`,
		`"\ud83d\ude00 tab\tand \"quotes\" \/"`,
		`{"z":1,"a":{"z":[],"a":{}},"z2":-1E-7}`,
		`[[[[[[[[[[1]]]]]]]]]]`,
	}
	for i, arg := range args {
		params := "[" + arg + "]"
		t.Run(fmt.Sprintf("native/echo-bytes-%d", i), func(t *testing.T) {
			resp := mustCall(t, c, "echo", json.RawMessage(params))
			if !bytes.Equal(resp.Result, []byte(arg)) {
				t.Errorf("echo result\n got %s\nwant %s", resp.Result, arg)
			}
		})
		t.Run(fmt.Sprintf("http/echo-bytes-%d", i), func(t *testing.T) {
			_, _, body := httpPost(t, p.http, `{"jsonrpc":"2.0","id":"e","method":"echo","params":`+params+`}`)
			r := decodeResp(t, body)
			if !bytes.Equal(r.Result, []byte(arg)) {
				t.Errorf("echo result\n got %s\nwant %s\nbody %s", r.Result, arg, body)
			}
		})
	}
}

// Calls that arrive before any servant is up wait in the queue for one
// (core.Balancer.Start: "calls that arrive before wait in the queue").
func TestE2ECallBeforeServantsUp(t *testing.T) {
	t.Parallel()
	servantAddr := freeAddr(t) // the servant starts only after the call is in
	p := startMserve(t, mserveOpts{flags: []string{"-servants", servantAddr}})
	c := dialRaw(t, p.native)
	c.send(`{"jsonrpc":"2.0","id":1,"method":"proc1","params":["IBM"]}`)
	// Frames on a connection are read in order and rpc.ping is answered by
	// mserve at once: the pong means the call has been taken in (or refused,
	// whose answer would come first).
	c.send(`{"jsonrpc":"2.0","id":"ping","method":"rpc.ping"}`)
	first := decodeResp(t, c.recv())
	if string(first.ID) != `"ping"` {
		t.Fatalf("before any servant was up the call was answered: %+v %s (want it to wait for a servant)", first.Error, first.Result)
	}
	startQuickstartAt(t, servantAddr)
	r := decodeResp(t, c.recv())
	if r.Error != nil || string(r.ID) != "1" {
		t.Fatalf("the call that waited for a servant: id %s error %+v", r.ID, r.Error)
	}
	checkTable(t, r.Result, "IBM")
	if s := infoStr(t, r.Info, "servant"); s != servantAddr {
		t.Errorf("info servant %q, want %q", s, servantAddr)
	}
}

// A call to a function no servant declares, taken in while a servant had
// not yet said what it serves, is answered "method not found" once every
// servant has, not left to wait for its deadline.
func TestE2EUnknownMethodWhileServantsJoin(t *testing.T) {
	t.Parallel()
	const timeout = 5 * time.Second
	servantAddr := freeAddr(t) // the servant starts only after the call is in
	p := startMserve(t, mserveOpts{flags: []string{"-servants", servantAddr, "-timeout", timeout.String()}})
	c := dialRaw(t, p.native)
	c.send(`{"jsonrpc":"2.0","id":1,"method":"no_such_method","params":[]}`)
	c.send(`{"jsonrpc":"2.0","id":"ping","method":"rpc.ping"}`)
	first := decodeResp(t, c.recv())
	if string(first.ID) == "1" {
		// Refused at once, before any servant declared anything: also fine.
		if first.Error == nil || first.Error.Code != jsonrpc.MethodNotFound {
			t.Errorf("want code %d, got %+v %s", jsonrpc.MethodNotFound, first.Error, first.Result)
		}
		return
	}
	start := time.Now()
	startQuickstartAt(t, servantAddr)
	r := decodeResp(t, c.recv())
	took := time.Since(start)
	if string(r.ID) != "1" {
		t.Fatalf("unexpected response %s", r.ID)
	}
	if r.Error == nil || (r.Error.Code != jsonrpc.MethodNotFound && r.Error.Code != jsonrpc.Unavailable) {
		t.Errorf("want code %d (method not found) or %d (unavailable) once the servant declared its functions, got %+v %s after %v",
			jsonrpc.MethodNotFound, jsonrpc.Unavailable, r.Error, r.Result, took)
	} else if took > timeout/2 {
		t.Errorf("answered %v after the servant started; the call's timeout is %v: it waited for it", took, timeout)
	}
}

// ---------------------------------------------------------------------------
// 2. JSON-RPC over HTTP

func TestE2EHTTPJSONRPC(t *testing.T) {
	t.Parallel()
	const maxBody = 2048
	// -timeout 5s: a call that is never dispatched fails in 5s, not 60s.
	p := startQuickstartMserve(t, 2, "-algo", "least", "-timeout", "5s", "-max-body", fmt.Sprint(maxBody))
	p.waitServing("s1", "s2")

	// expect is one expected response: its id (raw JSON) and its error
	// code, 0 for a result.
	type expect struct {
		id   string
		code int
	}
	tests := []struct {
		name   string
		method string
		body   string
		status int
		batch  bool     // the body is an array of responses
		want   []expect // nil with status 204: no body at all
	}{
		{
			name: "batch-mixed",
			body: `[
				{"jsonrpc":"2.0","id":1,"method":"echo","params":["a"]},
				{"jsonrpc":"2.0","method":"echo","params":["a notification"]},
				1,
				{"jsonrpc":"2.0","id":"x","method":"no_such_method","params":[]},
				{"jsonrpc":"2.0","id":3,"method":"proc1","params":["IBM"]},
				{"jsonrpc":"2.0","id":4,"method":"sleep","params":["not a number"]}
			]`,
			status: 200, batch: true,
			want: []expect{{"1", 0}, {"null", -32600}, {`"x"`, -32601}, {"3", 0}, {"4", -32602}},
		},
		{name: "empty-batch", body: `[]`, status: 200, want: []expect{{"null", -32600}}},
		{
			name:   "all-notifications",
			body:   `[{"jsonrpc":"2.0","method":"echo","params":[1]},{"jsonrpc":"2.0","method":"echo","params":[2]}]`,
			status: http.StatusNoContent,
		},
		{name: "single-notification", body: `{"jsonrpc":"2.0","method":"echo","params":[1]}`, status: http.StatusNoContent},
		{name: "malformed-json", body: `{"jsonrpc":"2.0","id":1,"method":"echo","params":[`, status: 200, want: []expect{{"null", -32700}}},
		{name: "malformed-batch", body: `[{"jsonrpc":"2.0","id":1,"method":"echo"},`, status: 200, want: []expect{{"null", -32700}}},
		{name: "wrong-version", body: `{"jsonrpc":"1.0","id":5,"method":"echo","params":[1]}`, status: 200, want: []expect{{"5", -32600}}},
		{name: "missing-version", body: `{"id":6,"method":"echo","params":[1]}`, status: 200, want: []expect{{"6", -32600}}},
		{name: "not-an-object", body: `"echo"`, status: 200, want: []expect{{"null", -32600}}},
		{name: "params-not-structured", body: `{"jsonrpc":"2.0","id":7,"method":"echo","params":"x"}`, status: 200, want: []expect{{"7", -32600}}},
		{name: "unknown-method", body: `{"jsonrpc":"2.0","id":8,"method":"no_such_method"}`, status: 200, want: []expect{{"8", -32601}}},
		{name: "invalid-params", body: `{"jsonrpc":"2.0","id":9,"method":"sleep","params":["x"]}`, status: 200, want: []expect{{"9", -32602}}},
		{name: "unknown-option", body: `{"jsonrpc":"2.0","id":10,"method":"echo","params":[1],"mserve":{"user":"root"}}`, status: 200, want: []expect{{"10", -32600}}},
		{name: "GET", method: http.MethodGet, status: http.StatusMethodNotAllowed, want: []expect{{"null", -32600}}},
		{
			name:   "body-too-large",
			body:   `{"jsonrpc":"2.0","id":1,"method":"echo","params":["` + strings.Repeat("x", maxBody) + `"]}`,
			status: http.StatusRequestEntityTooLarge, want: []expect{{"null", jsonrpc.TooLarge}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			status, hdr, body := httpDo(t, method, p.http, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d; body %s", status, tc.status, body)
			}
			if tc.want == nil {
				if len(body) != 0 {
					t.Errorf("want an empty body, got %q", body)
				}
				return
			}
			if method == http.MethodGet && hdr.Get("Allow") != http.MethodPost {
				t.Errorf("405 without Allow: POST (got %q)", hdr.Get("Allow"))
			}
			var raws []json.RawMessage
			if tc.batch {
				if err := json.Unmarshal(body, &raws); err != nil {
					t.Fatalf("want an array of responses, got %s", body)
				}
			} else {
				if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
					t.Fatalf("want a single response object, got %s", body)
				}
				raws = []json.RawMessage{body}
			}
			if len(raws) != len(tc.want) {
				t.Fatalf("got %d responses, want %d: %s", len(raws), len(tc.want), body)
			}
			for i, raw := range raws {
				r := decodeResp(t, raw)
				w := tc.want[i]
				if string(r.ID) != w.id {
					t.Errorf("response %d: id %s, want %s (%s)", i, r.ID, w.id, raw)
				}
				switch {
				case w.code == 0 && r.Error != nil:
					t.Errorf("response %d: error %+v, want a result", i, *r.Error)
				case w.code != 0 && (r.Error == nil || r.Error.Code != w.code):
					t.Errorf("response %d: want error code %d, got %s", i, w.code, raw)
				case w.code != 0 && r.Error.Message == "":
					t.Errorf("response %d: error without a message: %s", i, raw)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 3. Native protocol: malformed input on raw TCP

func TestE2ENativeMalformed(t *testing.T) {
	t.Parallel()
	const maxFrame = 1024
	p := startQuickstartMserve(t, 2, "-algo", "least", "-timeout", "5s", "-max-frame", fmt.Sprint(maxFrame))
	p.waitServing("s1", "s2")

	t.Run("malformed-json-then-valid", func(t *testing.T) {
		c := dialRaw(t, p.native)
		r := c.call(`{"jsonrpc":"2.0","id":1,"method":`)
		if r.Error == nil || r.Error.Code != jsonrpc.ParseError || string(r.ID) != "null" {
			t.Errorf("malformed frame: want error -32700 with id null, got %+v id %s", r.Error, r.ID)
		}
		r = c.call(`{"jsonrpc":"2.0","id":2,"method":"echo","params":["still here"]}`)
		if r.Error != nil || string(r.Result) != `"still here"` || string(r.ID) != "2" {
			t.Errorf("valid call after a malformed frame: got id %s result %s error %+v", r.ID, r.Result, r.Error)
		}
	})

	for _, tc := range []struct {
		name, body, id string
		code           int
	}{
		{"unknown-method", `{"jsonrpc":"2.0","id":3,"method":"no_such_method","params":[]}`, "3", jsonrpc.MethodNotFound},
		{"wrong-version", `{"jsonrpc":"1.0","id":4,"method":"echo","params":[1]}`, "4", jsonrpc.InvalidRequest},
		{"not-an-object", `42`, "null", jsonrpc.InvalidRequest},
		{"bad-timeout-option", `{"jsonrpc":"2.0","id":"t","method":"echo","params":[1],"mserve":{"timeout_ms":-5}}`, `"t"`, jsonrpc.InvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, p.native)
			r := c.call(tc.body)
			if r.Error == nil || r.Error.Code != tc.code || string(r.ID) != tc.id {
				t.Errorf("want error %d with id %s, got id %s error %+v result %s", tc.code, tc.id, r.ID, r.Error, r.Result)
			}
			// The connection keeps working.
			r = c.call(`{"jsonrpc":"2.0","id":99,"method":"echo","params":[99]}`)
			if r.Error != nil || string(r.Result) != "99" {
				t.Errorf("call after the error: got %s %+v", r.Result, r.Error)
			}
		})
	}

	t.Run("batch", func(t *testing.T) {
		c := dialRaw(t, p.native)
		c.send(`[{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]},{"jsonrpc":"2.0","method":"echo","params":[0]},{"jsonrpc":"2.0","id":2,"method":"echo","params":[2]}]`)
		var rs []rpcResp
		if b := c.recv(); json.Unmarshal(b, &rs) != nil || len(rs) != 2 ||
			string(rs[0].ID) != "1" || string(rs[0].Result) != "1" || string(rs[1].ID) != "2" || string(rs[1].Result) != "2" {
			t.Errorf("batch on the native port: got %s", b)
		}
	})

	t.Run("oversized-frame", func(t *testing.T) {
		c := dialRaw(t, p.native)
		// A header promising more than -max-frame; the body need not follow.
		c.write(binary.BigEndian.AppendUint32(nil, 2*maxFrame))
		r := decodeResp(t, c.recv())
		if r.Error == nil || r.Error.Code != jsonrpc.TooLarge {
			t.Errorf("want error %d, got %+v", jsonrpc.TooLarge, r.Error)
		}
		if b, err := c.tryRecv(); !errors.Is(err, io.EOF) {
			t.Errorf("after the too-large error the connection must be closed: read %q, %v", b, err)
		}
	})

	t.Run("oversized-frame-after-calls", func(t *testing.T) {
		c := dialRaw(t, p.native)
		if r := c.call(`{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}`); r.Error != nil {
			t.Fatalf("%+v", r.Error)
		}
		body := `{"jsonrpc":"2.0","id":2,"method":"echo","params":["` + strings.Repeat("y", maxFrame) + `"]}`
		c.write(binary.BigEndian.AppendUint32(nil, uint32(len(body))))
		r := decodeResp(t, c.recv())
		if r.Error == nil || r.Error.Code != jsonrpc.TooLarge {
			t.Errorf("want error %d, got %+v", jsonrpc.TooLarge, r.Error)
		}
		if b, err := c.tryRecv(); !errors.Is(err, io.EOF) {
			t.Errorf("after the too-large error the connection must be closed: read %q, %v", b, err)
		}
	})

	for _, tc := range []struct{ name, data string }{
		{"http-request", "GET / HTTP/1.1\r\nHost: mserve\r\n\r\n"},
		{"http-post", "POST / HTTP/1.1\r\nHost: mserve\r\nContent-Length: 2\r\n\r\n{}"},
		{"bare-json", `{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}` + "\n"},
	} {
		t.Run(tc.name+"-to-native-port", func(t *testing.T) {
			c := dialRaw(t, p.native)
			c.write([]byte(tc.data))
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			reply, err := io.ReadAll(c.nc)
			if err != nil {
				t.Errorf("reading the reply: %v (got %q)", err, reply)
			}
			if !bytes.HasPrefix(reply, []byte("HTTP/1.1 400")) {
				t.Errorf("want a plain-text HTTP/1.1 400 reply, got %q", reply)
			}
			if !bytes.Contains(reply, []byte("native port")) {
				t.Errorf("the reply should say this is the native port: %q", reply)
			}
		})
	}

	t.Run("dropped-mid-frame", func(t *testing.T) {
		bg := startBackground(t, p.native)
		bg.waitOK(t, 5)
		for i := range 20 {
			nc, err := net.DialTimeout("tcp", p.native, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// A header promising 100 bytes, 10 of them, then gone.
			nc.Write(binary.BigEndian.AppendUint32(nil, 100))
			nc.Write([]byte(`{"jsonrpc"`))
			nc.Close()
			if i == 10 {
				bg.waitOK(t, bg.ok.Load()+3) // during
			}
		}
		bg.waitOK(t, bg.ok.Load()+5) // after
		if errs := bg.errors(); len(errs) > 0 {
			t.Errorf("a concurrent client's calls failed: %v", errs)
		}
		c := dialClient(t, p.native)
		if resp := mustCall(t, c, "echo", []any{"new client"}); string(resp.Result) != `"new client"` {
			t.Errorf("new client: %s", resp.Result)
		}
	})
}

// ---------------------------------------------------------------------------
// 4. mserve call

func TestE2ECallCLI(t *testing.T) {
	t.Parallel()
	p := startQuickstartMserve(t, 2, "-algo", "least")
	p.waitServing("s1", "s2")
	native, url := p.native, "http://"+p.http
	dead := freeAddr(t)

	tests := []struct {
		name     string
		args     []string
		code     int
		contains []string // in stdout
		stderr   []string // in stderr
		result   string   // with -json: the result, compared as JSON
		errCode  int      // with -json: the error code
		route    string   // with -json: info.route
	}{
		{name: "proc1", args: []string{"-addr", native, "proc1", "IBM"}, contains: []string{"result: {", `"IBM"`, "info:   route=IBM servant=s", "elapsed=", "execution=", "rows=5"}},
		{name: "proc1-json", args: []string{"-addr", native, "-json", "proc1", "IBM"}, route: "IBM"},
		{name: "proc1-http", args: []string{"-url", url, "proc1", "IBM"}, contains: []string{"result: {", "info:   route=IBM servant=s"}},
		{name: "proc1-http-json", args: []string{"-url", url, "-json", "proc1", "IBM"}, route: "IBM"},
		{name: "unknown-method", args: []string{"-addr", native, "no_such_method"}, code: 1, contains: []string{"error:", "method not found", "code -32601 method_not_found"}},
		{name: "unknown-method-json", args: []string{"-addr", native, "-json", "no_such_method"}, code: 1, errCode: jsonrpc.MethodNotFound},
		{name: "unknown-method-http", args: []string{"-url", url, "no_such_method", "x"}, code: 1, contains: []string{"error:", "code -32601"}},
		{name: "number-arg", args: []string{"-addr", native, "-json", "sleep", "5"}, result: `5`},
		{name: "string-arg", args: []string{"-addr", native, "-json", "echo", "hello"}, result: `"hello"`},
		{name: "numeric-looking-string", args: []string{"-addr", native, "-json", "echo", "5x"}, result: `"5x"`},
		{name: "json-arg", args: []string{"-addr", native, "-json", "echo", `{"a":[1,2]}`}, result: `{"a":[1,2]}`},
		{name: "bool-arg", args: []string{"-addr", native, "-json", "echo", "true"}, result: `true`},
		{name: "no-server", args: []string{"-addr", dead, "echo", "x"}, code: 1, stderr: []string{"mserve call:", "refused"}},
		{name: "no-method", args: []string{"-addr", native}, code: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// -timeout 5s: a call that is never dispatched fails in 5s.
			stdout, stderr, code := runCmd(t, nil, mserveBin, append([]string{"call", "-timeout", "5s"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, s := range tc.contains {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if tc.result == "" && tc.errCode == 0 && tc.route == "" {
				return
			}
			var r struct {
				JSONRPC string          `json:"jsonrpc"`
				Result  json.RawMessage `json:"result"`
				Error   *rpcError       `json:"error"`
				Info    struct {
					Route string `json:"route"`
				} `json:"info"`
			}
			if err := json.Unmarshal([]byte(stdout), &r); err != nil {
				t.Fatalf("-json output is not JSON: %v\n%s", err, stdout)
			}
			if r.JSONRPC != "2.0" {
				t.Errorf("-json output: jsonrpc %q", r.JSONRPC)
			}
			if tc.result != "" {
				var got, want bytes.Buffer
				json.Compact(&got, r.Result)
				json.Compact(&want, []byte(tc.result))
				if got.String() != want.String() {
					t.Errorf("result %s, want %s", r.Result, tc.result)
				}
			}
			if tc.errCode != 0 && (r.Error == nil || r.Error.Code != tc.errCode) {
				t.Errorf("want error %d, got %+v", tc.errCode, r.Error)
			}
			if tc.route != "" && r.Info.Route != tc.route {
				t.Errorf("info.route %q, want %q\n%s", r.Info.Route, tc.route, stdout)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 5. A servant exits in the middle of a call

func TestE2EServantCrash(t *testing.T) {
	t.Parallel()
	const timeout = 20 * time.Second
	p := startFaultMserve(t, 2, "-algo", "least", "-timeout", timeout.String())
	c := dialClient(t, p.native)
	pids := learnPids(t, p, c, "s1", "s2")

	bg := startBackground(t, p.native)
	bg.waitOK(t, 5)

	start := time.Now()
	resp, err := call(c, "crash", []any{"boom"})
	took := time.Since(start)
	e := rpcCode(t, err)
	if e.Code != jsonrpc.ServantLost {
		t.Fatalf("crash: got %v, want code %d (servant lost)", e, jsonrpc.ServantLost)
	}
	crashed := resp.Info().Servant
	if crashed != "s1" && crashed != "s2" {
		t.Fatalf("the servant-lost answer names servant %q (info %s)", crashed, resp.InfoRaw)
	}
	if !strings.Contains(e.Message, crashed) {
		t.Errorf("the error message does not name servant %s: %q", crashed, e.Message)
	}
	if took > timeout/4 {
		t.Errorf("servant lost was answered after %v; the call's timeout is %v: it should be prompt", took, timeout)
	}
	okAtCrash := bg.ok.Load()

	// mserve notices and restarts the servant.
	p.log.waitCount(t, "servant exited; restarting "+crashed, 1, 10*time.Second, msgIs("servant exited; restarting", "servant", crashed))
	p.log.waitCount(t, "servant started "+crashed, 2, 10*time.Second, msgIs("servant started", "servant", crashed))

	// Calls keep succeeding; soon the restarted servant (a new process)
	// takes its share again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp := mustCall(t, c, "count", []any{"after"})
		var r countResult
		json.Unmarshal(resp.Result, &r)
		p.notePid(r.Pid)
		if r.Name == crashed {
			if r.Pid == pids[crashed] {
				t.Fatalf("servant %s answered from pid %d, the process that crashed", crashed, r.Pid)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted servant %s took no call within 15s", crashed)
		}
	}
	for i := range 20 {
		arg := fmt.Sprintf("after-%d", i)
		if resp := mustCall(t, c, "echo", []any{arg}); string(resp.Result) != `"`+arg+`"` {
			t.Errorf("echo %s: %s", arg, resp.Result)
		}
	}
	bg.waitOK(t, okAtCrash+5)
	bg.finish()
	if errs := bg.errors(); len(errs) > 0 {
		t.Errorf("another client's calls failed while the servant crashed: %v", errs)
	}
}

// ---------------------------------------------------------------------------
// 6. No servant available

func TestE2EAllServantsDown(t *testing.T) {
	t.Parallel()
	dead := freeAddr(t) // nothing listens there
	p := startMserve(t, mserveOpts{flags: []string{"-servants", dead, "-timeout", "300ms"}})

	check := func(t *testing.T, r rpcResp, waited time.Duration) {
		t.Helper()
		if r.Error == nil || r.Error.Code != jsonrpc.Timeout {
			t.Fatalf("want error %d (timeout), got %+v %s", jsonrpc.Timeout, r.Error, r.Result)
		}
		for _, s := range []string{"waited " + waited.String() + " in the queue", "0 of 1 servants available"} {
			if !strings.Contains(r.Error.Message, s) {
				t.Errorf("the message %q does not say %q", r.Error.Message, s)
			}
		}
		if el := time.Duration(infoInt(t, r.Info, "elapsed_ns")); el < waited {
			t.Errorf("info elapsed %v, want at least the timeout %v", el, waited)
		}
		if _, ok := r.Info["servant"]; ok {
			t.Errorf("info names a servant though none ran the call: %v", r.Info)
		}
	}
	t.Run("default-timeout-native", func(t *testing.T) {
		c := dialRaw(t, p.native)
		start := time.Now()
		check(t, c.call(`{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}`), 300*time.Millisecond)
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Errorf("answered after %v, before the timeout", took)
		}
	})
	t.Run("default-timeout-http", func(t *testing.T) {
		_, _, body := httpPost(t, p.http, `{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}`)
		check(t, decodeResp(t, body), 300*time.Millisecond)
	})
	t.Run("per-call-timeout-native", func(t *testing.T) {
		c := dialRaw(t, p.native)
		check(t, c.call(`{"jsonrpc":"2.0","id":1,"method":"echo","params":[1],"mserve":{"timeout_ms":100}}`), 100*time.Millisecond)
	})
	t.Run("per-call-timeout-http", func(t *testing.T) {
		_, _, body := httpPost(t, p.http, `{"jsonrpc":"2.0","id":1,"method":"echo","params":[1],"mserve":{"timeout_ms":100}}`)
		check(t, decodeResp(t, body), 100*time.Millisecond)
	})
	t.Run("per-call-timeout-longer", func(t *testing.T) {
		_, _, body := httpPost(t, p.http, `{"jsonrpc":"2.0","id":1,"method":"echo","params":[1],"mserve":{"timeout_ms":500}}`)
		check(t, decodeResp(t, body), 500*time.Millisecond)
	})
}

// ---------------------------------------------------------------------------
// 7. A servant that never answers

func TestE2EServantNeverAnswers(t *testing.T) {
	t.Parallel()
	// -grace 1s: the stuck call keeps its servant busy until mserve stops.
	p := startFaultMserve(t, 2, "-algo", "least", "-grace", "1s")
	c := dialClient(t, p.native)

	t.Run("hang-is-cancelled", func(t *testing.T) {
		_, _, body := httpPost(t, p.http, `{"jsonrpc":"2.0","id":1,"method":"hang","params":[1],"mserve":{"timeout_ms":200}}`)
		r := decodeResp(t, body)
		if r.Error == nil || r.Error.Code != jsonrpc.Timeout {
			t.Fatalf("want error %d, got %s", jsonrpc.Timeout, body)
		}
		hung := infoStr(t, r.Info, "servant")
		if !strings.Contains(r.Error.Message, "servant "+hung+" did not answer within 200ms") {
			t.Errorf("the message does not name servant %s and the timeout: %q", hung, r.Error.Message)
		}
		// mserve tells the servant to abandon the call (rpc.cancel); the
		// servant's slot frees and it takes calls again.
		p.log.waitCount(t, "hang cancelled on "+hung, 1, 10*time.Second, msgIs("servant output", "servant", hung, "line", "fault: hang: cancelled"))
		seen := map[string]bool{}
		for i := 0; len(seen) < 2; i++ {
			if i == 50 {
				t.Fatalf("after the cancelled hang, calls reached only %v", seen)
			}
			seen[mustCall(t, c, "echo", []any{i}).Info().Servant] = true
		}
	})

	t.Run("stuck-times-out", func(t *testing.T) {
		type answer struct {
			body []byte
			err  error
		}
		done := make(chan answer, 1)
		go func() {
			r, err := http.Post("http://"+p.http, "application/json",
				strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"stuck","params":[1],"mserve":{"timeout_ms":200}}`))
			if err != nil {
				done <- answer{err: err}
				return
			}
			defer r.Body.Close()
			body, err := io.ReadAll(r.Body)
			done <- answer{body, err}
		}()
		p.log.waitCount(t, "stuck started", 1, 10*time.Second, msgIs("servant output", "line", "fault: stuck: started"))
		// While it hangs (and after), the other servant serves everything.
		servedBy := map[string]int{}
		for i := range 10 {
			servedBy[mustCall(t, c, "echo", []any{i}).Info().Servant]++
		}
		var a answer
		select {
		case a = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("no answer to the stuck call within 20s; its timeout is 200ms")
		}
		if a.err != nil {
			t.Fatalf("the stuck call over HTTP: %v", a.err)
		}
		r := decodeResp(t, a.body)
		if r.Error == nil || r.Error.Code != jsonrpc.Timeout {
			t.Fatalf("want error %d, got %s", jsonrpc.Timeout, a.body)
		}
		stuck := infoStr(t, r.Info, "servant")
		if !strings.Contains(r.Error.Message, "servant "+stuck+" did not answer within 200ms") {
			t.Errorf("the message does not name servant %s and the timeout: %q", stuck, r.Error.Message)
		}
		for i := range 10 {
			servedBy[mustCall(t, c, "echo", []any{i}).Info().Servant]++
		}
		if servedBy[stuck] != 0 || len(servedBy) != 1 {
			t.Errorf("calls went to %v; want all on the servant that is not stuck (%s is)", servedBy, stuck)
		}
	})
}

// ---------------------------------------------------------------------------
// 8. Graceful shutdown

func TestE2EGracefulShutdown(t *testing.T) {
	t.Parallel()
	p := startFaultMserve(t, 2, "-algo", "least")
	c := dialClient(t, p.native)
	learnPids(t, p, c, "s1", "s2")
	idle := dialRaw(t, p.native) // a connection open before the shutdown
	if r := idle.call(`{"jsonrpc":"2.0","id":"warm","method":"echo","params":["warm"]}`); r.Error != nil {
		t.Fatalf("warm-up call: %+v", r.Error)
	}
	keepAlive := &http.Client{Transport: &http.Transport{}} // keeps its connection
	defer keepAlive.CloseIdleConnections()
	if r, err := keepAlive.Post("http://"+p.http, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}`)); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}

	type result struct {
		resp *client.Response
		err  error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			resp, err := call(c, "slow", []any{300})
			results <- result{resp, err}
		}()
	}
	p.log.waitCount(t, "slow started on both servants", 2, 10*time.Second, msgIs("servant output", "line", "fault: slow: started"))

	p.mu.Lock()
	p.stopped = true // this test stops it itself
	p.mu.Unlock()
	for _, pid := range childPids(p.cmd.Process.Pid) {
		p.notePid(pid)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.log.waitCount(t, "mserve stopping", 1, 10*time.Second, msgIs("mserve stopping"))

	// New connections are refused once the listeners close. Until the
	// listening socket is really closed (Go closes it once the goroutine
	// blocked in Accept has woken up, which under load takes a moment) the
	// kernel may still complete a handshake, and then resets it: such a
	// dial is let go and the loop waits for the refusal.
	for front, addr := range map[string]string{"native": p.native, "HTTP": p.http} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("dialing the %s front end during shutdown: %v, want connection refused", front, err)
				}
				break
			}
			nc.Close()
			t.Logf("a connection to the %s front end was accepted after shutdown began", front)
			if time.Now().After(deadline) {
				t.Fatalf("the %s front end still accepts connections 10s after SIGTERM", front)
			}
		}
	}
	// New calls on a connection opened before are answered "shutting
	// down" once the engine has closed, a moment after the listeners.
	// Each probe is followed by rpc.ping, which mserve answers at once
	// after the probe was taken in or refused: probes go until one is
	// refused. One taken in before the engine closed must still get its
	// result (it runs once a servant is free).
	accepted := map[string]bool{}
	for i, refused := 0, false; !refused; i++ {
		if i == 1000 {
			t.Fatalf("1000 new calls after SIGTERM were all taken in; want %d (shutting down)", jsonrpc.ShuttingDown)
		}
		probe, ping := fmt.Sprintf(`"probe-%d"`, i), fmt.Sprintf(`"ping-%d"`, i)
		idle.send(`{"jsonrpc":"2.0","id":` + probe + `,"method":"echo","params":[` + probe + `]}`)
		idle.send(`{"jsonrpc":"2.0","id":` + ping + `,"method":"rpc.ping"}`)
		accepted[probe] = true
		for {
			r := decodeResp(t, idle.recv())
			id := string(r.ID)
			if id == ping {
				break
			}
			if !accepted[id] {
				t.Fatalf("unexpected response %s on the probing connection: %+v %s", id, r.Error, r.Result)
			}
			delete(accepted, id)
			switch {
			case r.Error != nil && r.Error.Code == jsonrpc.ShuttingDown:
				refused = true
			case r.Error != nil:
				t.Errorf("probe %s: got %+v, want a result or code %d", id, *r.Error, jsonrpc.ShuttingDown)
			case string(r.Result) != id:
				t.Errorf("probe %s: result %s", id, r.Result)
			}
		}
	}
	if len(accepted) > 0 {
		t.Logf("%d new calls were taken in after SIGTERM, before the engine closed", len(accepted))
	}
	// The same over the kept-alive HTTP connection, if it is still there.
	if r, err := keepAlive.Post("http://"+p.http, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"echo","params":[2]}`)); err == nil {
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if rr := decodeResp(t, body); rr.Error == nil || rr.Error.Code != jsonrpc.ShuttingDown {
			t.Errorf("a new HTTP call during shutdown: got %s, want code %d", body, jsonrpc.ShuttingDown)
		}
	} else {
		t.Logf("kept-alive HTTP connection not reused during shutdown: %v", err)
	}

	// The calls in flight get their results. (At the time of writing this
	// fails now and then, mostly under CPU load: Servant.Done marks the
	// engine drained under its lock and only then, unlocked, answers the
	// call, so Drain can return and Shutdown close the client's connection
	// (native.Server.Close) before the answer is written; it is dropped.)
	ranOn := map[string]bool{}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("a call in flight at SIGTERM failed: %v", r.err)
			} else if string(r.resp.Result) != "300" {
				t.Errorf("a call in flight at SIGTERM returned %s, want 300", r.resp.Result)
			} else {
				ranOn[r.resp.Info().Servant] = true
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a call in flight at SIGTERM got no answer within 20s")
		}
	}
	for len(accepted) > 0 {
		b, err := idle.tryRecv()
		if err != nil {
			t.Errorf("calls taken in during shutdown got no answer: %v (%v)", accepted, err)
			break
		}
		r := decodeResp(t, b)
		if !accepted[string(r.ID)] || r.Error != nil || !bytes.Equal(r.Result, r.ID) {
			t.Errorf("a call taken in during shutdown: %s", b)
		}
		delete(accepted, string(r.ID))
	}
	if len(ranOn) != 2 && !t.Failed() {
		t.Errorf("the slow calls ran on %v, want one on each servant", ranOn)
	}
	p.checkExit()
	if p.log.count(msgIs("mserve stopped")) != 1 {
		t.Errorf(`no "mserve stopped" log entry`)
	}
}

// ---------------------------------------------------------------------------
// 9. Dispatch algorithms

func TestE2EAlgorithms(t *testing.T) {
	t.Parallel()
	// mserve logs "servant up" just before the engine takes the servant,
	// so a call right after the last such line may still miss it. Where
	// the expected order depends on every servant being in (even, least,
	// orig), warm-up calls run first until ready says the algorithm is at
	// a known position with all servants taking calls.
	lastIs := func(name string, all bool) func(seen map[string]bool, last string) bool {
		return func(seen map[string]bool, last string) bool { return last == name && (!all || len(seen) == 3) }
	}
	warmSyms := []string{"IBM", "MSFT", "GOOG", "IBM", "GOOG", "MSFT", "IBM"}
	tests := []struct {
		algo  string
		syms  []string
		ready func(seen map[string]bool, last string) bool // nil: no warm-up
		want  []string                                     // servants in order; nil: all the same
		check func(t *testing.T, got []string)
	}{
		{algo: "match", syms: slices.Repeat([]string{"IBM"}, 6)},
		{algo: "match", syms: []string{"IBM", "MSFT", "IBM", "MSFT", "IBM"}, check: func(t *testing.T, got []string) {
			if got[0] == got[1] || got[0] != got[2] || got[0] != got[4] || got[1] != got[3] {
				t.Errorf("match: IBM and MSFT should each keep their own servant: %v", got)
			}
		}},
		// warm keeps each routing string on the servant that ran it.
		{algo: "warm", syms: warmSyms, check: func(t *testing.T, got []string) {
			home := map[string]string{}
			for i, sym := range warmSyms {
				if h, ok := home[sym]; ok && h != got[i] {
					t.Errorf("warm: %s ran on %s, then on %s: %v", sym, h, got[i], got)
				}
				home[sym] = got[i]
			}
		}},
		// After a call on s3 with all three in, the next goes to s1.
		{algo: "even", syms: slices.Repeat([]string{"IBM"}, 4), ready: lastIs("s3", true), want: []string{"s1", "s2", "s3", "s1"}},
		{algo: "least", syms: slices.Repeat([]string{"IBM"}, 4), ready: lastIs("s3", true), want: []string{"s1", "s2", "s3", "s1"}},
		// Once s1 is in, orig sends everything there.
		{algo: "orig", syms: slices.Repeat([]string{"IBM"}, 4), ready: lastIs("s1", false), want: []string{"s1", "s1", "s1", "s1"}},
	}
	for _, tc := range tests {
		t.Run(tc.algo+"/"+strings.Join(slices.Compact(slices.Clone(tc.syms)), "-"), func(t *testing.T) {
			t.Parallel()
			p := startQuickstartMserve(t, 3, "-algo", tc.algo)
			c := dialClient(t, p.native)
			if tc.ready != nil {
				seen := map[string]bool{}
				for i := 0; ; i++ {
					if i == 100 {
						t.Fatalf("warm-up: after 100 calls servants %v answered", seen)
					}
					s := mustCall(t, c, "proc1", []any{"WARM"}).Info().Servant
					seen[s] = true
					if tc.ready(seen, s) {
						break
					}
				}
			}
			var got []string
			for _, sym := range tc.syms {
				resp := mustCall(t, c, "proc1", []any{sym})
				if info := resp.Info(); info.Route != sym {
					t.Errorf("route %q, want %q", info.Route, sym)
				}
				got = append(got, resp.Info().Servant)
			}
			switch {
			case tc.check != nil:
				tc.check(t, got)
			case tc.want != nil:
				if !slices.Equal(got, tc.want) {
					t.Errorf("servants %v, want %v", got, tc.want)
				}
			default:
				if len(slices.Compact(slices.Clone(got))) != 1 {
					t.Errorf("servants %v, want the same one for every call", got)
				}
			}
		})
	}

	for _, tc := range []struct {
		name, flag, value, want string
		known                   []string
	}{
		{"bogus-algo", "-algo", "bogus", `unknown dispatch algorithm "bogus"`, []string{"even", "least", "match", "orig", "warm"}},
		{"bogus-routing", "-routing", "bogus", `"bogus"`, []string{"first", "method", "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, stderr, code := runCmd(t, nil, mserveBin, "-http", freeAddr(t), "-listen", freeAddr(t), tc.flag, tc.value, "2", quickstartBin)
			if code != 2 {
				t.Errorf("exit status %d, want 2; stderr: %s", code, stderr)
			}
			for _, s := range append([]string{tc.want}, tc.known...) {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q: %s", s, stderr)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 10. mserve bench

func TestE2EBench(t *testing.T) {
	t.Parallel()
	servantAddr := startQuickstart(t)
	p := startMserve(t, mserveOpts{flags: []string{"-servants", servantAddr}})
	p.waitServantsUp(servantAddr)

	stdout, stderr, code := runCmd(t, nil, mserveBin, "bench", "-addr", p.native, "-direct", servantAddr,
		"-n", "200", "-c", "4", "-warmup", "100ms", "echo", "x")
	if code != 0 {
		t.Fatalf("exit status %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	rows := map[string][]string{} // the table's lines, by target: 8 columns
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); len(f) == 8 {
			rows[f[0]] = f
		}
	}
	header := rows["target"]
	if !slices.Equal(header, []string{"target", "calls", "calls/s", "p50", "p90", "p99", "max", "errors"}) {
		t.Errorf("no table header in:\n%s", stdout)
	}
	for _, target := range []string{"direct", "mserve"} {
		row := rows[target]
		if len(row) != 8 || row[1] != "200" || row[7] != "0" {
			t.Errorf("row %q: %v, want 200 calls and 0 errors\n%s", target, row, stdout)
		}
	}
	if !strings.Contains(stdout, "added p50") {
		t.Errorf(`no "added p50" line in:\n%s`, stdout)
	}
}

// TestE2EServantsDieWithMserve: local servants do not outlive an mserve
// killed with SIGKILL (no chance to stop them): each is started to die with
// its parent.
func TestE2EServantsDieWithMserve(t *testing.T) {
	p := startQuickstartMserve(t, 2)
	p.waitServantsUp("s1", "s2")
	pids := childPids(p.cmd.Process.Pid)
	if len(pids) != 2 {
		t.Fatalf("mserve has children %v, want its 2 servants", pids)
	}
	p.mu.Lock()
	p.stopped = true // killed here, not stopped by the cleanup
	p.mu.Unlock()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	waitGone(t, pids, 5*time.Second)
}
