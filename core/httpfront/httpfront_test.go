package httpfront

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap/zapcore"

	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/core/connlimit"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/frontend"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

const failsafe = 10 * time.Second

// servant is a fake transport that answers every call with its params as
// the result (or an error for method "fail"), unless hold is set, in which
// case calls are kept for the test.
type servant struct {
	testkit.Transport // holds the calls; Cancel drops them
	s                 *engine.Servant
	hold              bool
}

func (f *servant) Send(c *engine.Call, fl *wire.Flusher) error {
	if f.hold {
		return f.Transport.Send(c, fl)
	}
	go func() {
		if c.Method == "fail" {
			f.s.Done(c, &jsonrpc.Response{Error: []byte(`{"code":-32603,"message":"it failed"}`)}, nil)
			return
		}
		f.s.Done(c, &jsonrpc.Response{Result: append([]byte(nil), c.Params...)}, nil)
	}()
	return nil
}

type rig struct {
	eng *engine.Engine
	sv  *servant
	url string
}

// newRig serves a Handler over a real engine with one fake servant (up
// unless down is set), a gate when withGate, and the given body limit.
func newRig(t *testing.T, withGate, down bool, maxBody int) *rig {
	t.Helper()
	return newRigLimits(t, withGate, down, maxBody, Limits{ReadTimeout: failsafe}, nil)
}

// newRigLimits is newRig with the server's limits given, and its listener
// wrapped by wrap unless nil.
func newRigLimits(t *testing.T, withGate, down bool, maxBody int, lim Limits, wrap func(net.Listener) net.Listener) *rig {
	t.Helper()
	// A servant that is not up holds the calls it gets once it is.
	r := &rig{sv: &servant{hold: down, Transport: testkit.Transport{Sent: make(chan *engine.Call, 64)}}}
	r.eng = engine.New(engine.Config{Algorithm: testkit.FirstFree})
	r.sv.s = r.eng.AddServant(engine.ServantSpec{Name: "s1"}, r.sv)
	if !down {
		r.sv.s.Up(engine.Announce{Slots: 4})
	}
	fr := &frontend.Front{Engine: r.eng, Version: "test"}
	if withGate {
		fr.Gate = gate(t)
	}
	r.url = "http://" + serve(t, New(fr, maxBody).Server(lim), wrap)
	return r
}

// serve runs srv on a loopback listener (wrapped by wrap unless nil)
// until the test ends and returns its address.
func serve(t *testing.T, srv *fasthttp.Server, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		if err := srv.ShutdownWithContext(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	return addr
}

const aliceSecret = "alice-secret"

func gate(t *testing.T) *allow.Gate {
	t.Helper()
	return testkit.Gate(t, "f(x any)\ng(x any)\nuser alice "+allow.HashSecret(aliceSecret)+": f g\nanonymous: f\n")
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r *rig) post(t *testing.T, body string, header ...string) reply {
	t.Helper()
	return do(t, http.MethodPost, r.url, body, header...)
}

func do(t *testing.T, method, url, body string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), failsafe)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func obj(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%q is not a JSON object: %v", b, err)
	}
	return m
}

func TestPost(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		header []string
		status int
		check  func(t *testing.T, r reply)
	}{
		{name: "a single call is answered with result and info", status: 200,
			body: `{"jsonrpc":"2.0","id":1,"method":"f","params":["IBM"]}`,
			check: func(t *testing.T, r reply) {
				m := obj(t, r.body)
				if m["id"] != 1.0 || m["result"].([]any)[0] != "IBM" {
					t.Errorf("response %s", r.body)
				}
				info := m["info"].(map[string]any)
				if info["servant"] != "s1" {
					t.Errorf("info %v", info)
				}
				if r.header.Get("Content-Type") != "application/json" {
					t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
				}
			}},
		{name: "the body is JSON whatever the Content-Type", status: 200, header: []string{"Content-Type", "text/plain"},
			body: `{"jsonrpc":"2.0","id":"x","method":"f","params":[1]}`,
			check: func(t *testing.T, r reply) {
				if obj(t, r.body)["id"] != "x" {
					t.Errorf("response %s", r.body)
				}
			}},
		{name: "a servant's error is 200 with the error object", status: 200,
			body: `{"jsonrpc":"2.0","id":2,"method":"fail","params":[1]}`,
			check: func(t *testing.T, r reply) {
				if m := obj(t, r.body); testkit.ErrCode(m) != jsonrpc.InternalError || m["id"] != 2.0 {
					t.Errorf("response %s", r.body)
				}
			}},
		{name: "a parse error is 200 with the JSON-RPC error", status: 200, body: `{"jsonrpc":`,
			check: func(t *testing.T, r reply) {
				if m := obj(t, r.body); testkit.ErrCode(m) != jsonrpc.ParseError || m["id"] != nil {
					t.Errorf("response %s", r.body)
				}
			}},
		{name: "a batch is answered in request order", status: 200,
			body: `[{"jsonrpc":"2.0","id":1,"method":"f","params":[1]},{"jsonrpc":"2.0","method":"f","params":[2]},{"jsonrpc":"2.0","id":3,"method":"rpc.ping"},{"jsonrpc":"2.0","id":4,"method":"f","params":[4]}]`,
			check: func(t *testing.T, r reply) {
				var arr []map[string]any
				if err := json.Unmarshal(r.body, &arr); err != nil || len(arr) != 3 {
					t.Fatalf("response %s", r.body)
				}
				for i, id := range []float64{1, 3, 4} {
					if arr[i]["id"] != id {
						t.Errorf("response %d has id %v, want %v", i, arr[i]["id"], id)
					}
				}
				if arr[1]["result"] != "pong" || arr[2]["result"].([]any)[0] != 4.0 {
					t.Errorf("response %s", r.body)
				}
			}},
		{name: "a single notification is 204 with no body", status: 204,
			body: `{"jsonrpc":"2.0","method":"f","params":[1]}`,
			check: func(t *testing.T, r reply) {
				if len(r.body) != 0 {
					t.Errorf("body %q", r.body)
				}
			}},
		{name: "a batch of notifications only is 204", status: 204,
			body: `[{"jsonrpc":"2.0","method":"f","params":[1]},{"jsonrpc":"2.0","method":"rpc.ping"}]`},
		{name: "an empty batch is 200 with one error", status: 200, body: `[]`,
			check: func(t *testing.T, r reply) {
				if testkit.ErrCode(obj(t, r.body)) != jsonrpc.InvalidRequest {
					t.Errorf("response %s", r.body)
				}
			}},
		{name: "rpc.hello with credentials in the body is refused over HTTP", status: 200,
			body: `{"jsonrpc":"2.0","id":1,"method":"rpc.hello","params":{"user":"u","secret":"s"}}`,
			check: func(t *testing.T, r reply) {
				if testkit.ErrCode(obj(t, r.body)) != jsonrpc.InvalidRequest {
					t.Errorf("response %s", r.body)
				}
			}},
		{name: "a per-call timeout option is honoured", status: 200,
			body: `{"jsonrpc":"2.0","id":1,"method":"f","params":[1],"mserve":{"timeout_ms":5000}}`,
			check: func(t *testing.T, r reply) {
				if testkit.ErrCode(obj(t, r.body)) != 0 {
					t.Errorf("response %s", r.body)
				}
			}},
	}
	r := newRig(t, false, false, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.post(t, tt.body, tt.header...)
			if got.status != tt.status {
				t.Fatalf("status %d, want %d: %s", got.status, tt.status, got.body)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestOnlyPostIsAllowed(t *testing.T) {
	r := newRig(t, false, false, 0)
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			got := do(t, method, r.url, "")
			if got.status != http.StatusMethodNotAllowed || got.header.Get("Allow") != http.MethodPost {
				t.Fatalf("status %d Allow %q, want 405 and POST", got.status, got.header.Get("Allow"))
			}
			if method == http.MethodHead {
				return
			}
			if m := obj(t, got.body); testkit.ErrCode(m) != jsonrpc.InvalidRequest || !strings.Contains(m["error"].(map[string]any)["message"].(string), method) {
				t.Errorf("body %s", got.body)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	const limit = 200
	mk := func(n int) string { // a valid request of exactly n bytes
		head, tail := `{"jsonrpc":"2.0","id":1,"method":"f","params":["`, `"]}`
		return head + strings.Repeat("a", n-len(head)-len(tail)) + tail
	}
	tests := []struct {
		name   string
		body   string
		status int
	}{
		{"a body at the limit is served", mk(limit), 200},
		{"a body one byte over the limit is 413", mk(limit + 1), 413},
		{"a much larger body is 413", mk(10 * limit), 413},
	}
	r := newRig(t, false, false, limit)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.post(t, tt.body)
			if got.status != tt.status {
				t.Fatalf("status %d, want %d: %s", got.status, tt.status, got.body)
			}
			m := obj(t, got.body)
			if tt.status == 413 {
				if testkit.ErrCode(m) != jsonrpc.TooLarge || !strings.Contains(m["error"].(map[string]any)["message"].(string), strconv.Itoa(limit)) {
					t.Errorf("body %s, want code -32008 naming the limit", got.body)
				}
			} else if testkit.ErrCode(m) != 0 {
				t.Errorf("body %s", got.body)
			}
		})
	}
	t.Run("the default limit applies when none is given", func(t *testing.T) {
		h := New(&frontend.Front{Engine: engine.New(engine.Config{Algorithm: testkit.FirstFree})}, 0)
		if h.maxBody != DefaultMaxBody {
			t.Errorf("maxBody = %d, want %d", h.maxBody, DefaultMaxBody)
		}
	})
}

func basic(user, secret string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(user, secret)
	return req.Header.Get("Authorization")
}

func TestAuthorization(t *testing.T) {
	callG := `{"jsonrpc":"2.0","id":1,"method":"g","params":[1]}`
	tests := []struct {
		name     string
		withGate bool
		auth     string
		status   int
		code     float64
	}{
		{"no credentials: anonymous may not call g", true, "", 200, jsonrpc.MethodNotFound},
		{"good bearer token", true, "Bearer " + aliceSecret, 200, 0},
		{"good bearer token with extra spaces", true, "Bearer   " + aliceSecret + "  ", 200, 0},
		{"good basic credentials", true, basic("alice", aliceSecret), 200, 0},
		{"bad bearer token", true, "Bearer wrong", 401, jsonrpc.Unauthorized},
		{"bad basic secret", true, basic("alice", "wrong"), 401, jsonrpc.Unauthorized},
		{"unknown basic user", true, basic("mallory", aliceSecret), 401, jsonrpc.Unauthorized},
		{"unsupported scheme", true, "Token " + aliceSecret, 401, jsonrpc.Unauthorized},
		{"credentials to an mserve without users", false, "Bearer " + aliceSecret, 401, jsonrpc.Unauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.withGate, false, 0)
			var h []string
			if tt.auth != "" {
				h = []string{"Authorization", tt.auth}
			}
			got := r.post(t, callG, h...)
			if got.status != tt.status {
				t.Fatalf("status %d, want %d: %s", got.status, tt.status, got.body)
			}
			m := obj(t, got.body)
			if testkit.ErrCode(m) != tt.code {
				t.Errorf("body %s, want code %v", got.body, tt.code)
			}
			www := got.header.Get("WWW-Authenticate")
			if tt.status == 401 {
				if !strings.Contains(www, "Bearer") || !strings.Contains(www, "Basic") {
					t.Errorf("WWW-Authenticate = %q", www)
				}
				if st := r.eng.Stats(); st.Answered != 0 {
					t.Errorf("an unauthorized request reached the engine: %+v", st)
				}
			} else if www != "" {
				t.Errorf("WWW-Authenticate on a %d: %q", tt.status, www)
			}
		})
	}
}

func TestClientGoingAwayCancelsItsCalls(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		calls int
	}{
		{"a single call", `{"jsonrpc":"2.0","id":1,"method":"f","params":[1]}`, 1},
		{"a batch", `[{"jsonrpc":"2.0","id":1,"method":"f","params":[1]},{"jsonrpc":"2.0","id":2,"method":"f","params":[2]}]`, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, false, true, 0) // the servant is not up: calls wait in the queue
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.url, strings.NewReader(tt.body))
			errc := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			testkit.WaitFor(t, func() bool { return r.eng.Stats().Queued == tt.calls }, "the calls to be queued")
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("client: %v", err)
			}
			testkit.WaitFor(t, func() bool {
				st := r.eng.Stats()
				return st.Queued == 0 && st.Cancelled == uint64(tt.calls)
			}, "the calls to be cancelled")
			// The servant never receives them.
			r.sv.s.Up(engine.Announce{})
			select {
			case c := <-r.sv.Sent:
				t.Errorf("a call of the departed client was sent: %s", c.Params)
			default:
			}
		})
	}
}

func TestRefuseTooMany(t *testing.T) {
	t.Run("the refusal is a complete 503 response", func(t *testing.T) {
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			RefuseTooMany(64)(server)
			server.Close()
		}()
		go client.Write([]byte("POST / HTTP/1.1\r\nHost: mserve\r\nContent-Length: 2\r\n\r\n{}"))
		resp, err := http.ReadResponse(bufio.NewReader(client), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !resp.Close ||
			resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength != int64(len(body)) {
			t.Errorf("status %d headers %v length %d/%d", resp.StatusCode, resp.Header, resp.ContentLength, len(body))
		}
		m := obj(t, body)
		if testkit.ErrCode(m) != jsonrpc.Overloaded || !strings.Contains(m["error"].(map[string]any)["message"].(string), "64") || m["id"] != nil {
			t.Errorf("body %s", body)
		}
	})
	// limited serves HTTP behind a connection limit of 0 with
	// RefuseTooMany: every connection is refused.
	limited := func(t *testing.T) string {
		lim := connlimit.New(0)
		srv := &fasthttp.Server{Handler: func(*fasthttp.RequestCtx) { t.Error("served beyond the limit") }}
		return serve(t, srv, func(ln net.Listener) net.Listener { return lim.Wrap(ln, RefuseTooMany(0)) })
	}
	t.Run("a client that sent its request reads the 503", func(t *testing.T) {
		c, err := net.Dial("tcp", limited(t))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(failsafe))
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("reading the refusal: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the refusal's body: %v", err)
		}
		if resp.StatusCode != 503 || testkit.ErrCode(obj(t, body)) != jsonrpc.Overloaded {
			t.Errorf("status %d body %s", resp.StatusCode, body)
		}
	})
	t.Run("the refusal answers the request rather than arriving before it", func(t *testing.T) {
		// A response written before the client's request is an
		// unsolicited response: Go's http.Transport, for one, then fails
		// the request ("Unsolicited response received on idle HTTP
		// channel", readLoopPeekFailLocked) instead of reporting the 503,
		// in about one run in five. The refusal must wait (within its
		// deadline) for the request before answering it.
		c, err := net.Dial("tcp", limited(t))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		b := make([]byte, 64)
		if n, err := c.Read(b); n > 0 {
			t.Errorf("the server wrote %q before any request was sent", b[:n])
		} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("read before the request: %v", err)
		}
	})
}

// TestConcurrentRequests runs many requests at once; run with -race.
func TestConcurrentRequests(t *testing.T) {
	r := newRig(t, false, false, 0)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := r.post(t, `{"jsonrpc":"2.0","id":`+strconv.Itoa(i)+`,"method":"f","params":[`+strconv.Itoa(i)+`]}`)
			m := obj(t, got.body)
			if m["id"] != float64(i) || m["result"].([]any)[0] != float64(i) {
				t.Errorf("request %d got %s", i, got.body)
			}
		}()
	}
	wg.Wait()
}

func TestHeadersOverTheLimitAre431(t *testing.T) {
	r := newRig(t, false, false, 0)
	got := r.post(t, `{"jsonrpc":"2.0","id":1,"method":"f","params":[1]}`, "X-Big", strings.Repeat("a", MaxHeaderBytes))
	if got.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431: %s", got.status, got.body)
	}
	if m := obj(t, got.body); testkit.ErrCode(m) != jsonrpc.InvalidRequest || !strings.Contains(m["error"].(map[string]any)["message"].(string), strconv.Itoa(MaxHeaderBytes)) {
		t.Errorf("body %s, want an invalid request naming the limit", got.body)
	}
	// Headers under the limit are served.
	if got := r.post(t, `{"jsonrpc":"2.0","id":1,"method":"f","params":[1]}`, "X-Big", strings.Repeat("a", MaxHeaderBytes/2)); got.status != 200 {
		t.Errorf("status %d for headers under the limit", got.status)
	}
}

func TestPipelinedRequestsAreAnsweredInOrder(t *testing.T) {
	r := newRig(t, false, false, 0)
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(failsafe))
	var reqs string
	for i := range 3 {
		body := `{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"method":"f","params":[` + strconv.Itoa(i) + `]}`
		reqs += "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	io.WriteString(c, reqs) // all three in one write
	br := bufio.NewReader(c)
	for i := range 3 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := obj(t, body); m["id"] != float64(i) {
			t.Errorf("response %d is %s", i, body)
		}
	}
}

func TestBasicAuth(t *testing.T) {
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		header       string
		user, secret string
		ok           bool
	}{
		{"Basic " + enc("alice:s3cret"), "alice", "s3cret", true},
		{"basic " + enc("alice:s3cret"), "alice", "s3cret", true},
		{"Basic " + enc("alice:with:colons"), "alice", "with:colons", true},
		{"Basic " + enc("no-colon"), "", "", false},
		{"Basic not-base64!", "", "", false},
		{"Bearer x", "", "", false},
		{"Basic", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			u, s, ok := basicAuth([]byte(tt.header))
			if u != tt.user || s != tt.secret || ok != tt.ok {
				t.Errorf("got %q %q %v, want %q %q %v", u, s, ok, tt.user, tt.secret, tt.ok)
			}
		})
	}
}

func TestServerLog(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	l := &zapLogger{log: log}
	for range 5 {
		l.Printf("error when serving connection %q: %v", "1.2.3.4:5", "read timeout")
	}
	l.Printf("Temporary error when accepting new connections: %v", "too many open files")
	all := logs.All()
	if len(all) != 2 {
		t.Fatalf("%d lines for 5 alike and one other, want 2: %v", len(all), all)
	}
	if all[0].Level != zapcore.DebugLevel || all[1].Level != zapcore.WarnLevel {
		t.Errorf("levels %v, %v: want debug for a client's connection, warn for the server's own trouble", all[0].Level, all[1].Level)
	}
	// At info level a client's connection errors are not even counted.
	info, infoLogs := testkit.Observed(zapcore.InfoLevel)
	l = &zapLogger{log: info}
	l.Printf("error when serving connection %q: %v", "1.2.3.4:5", "read timeout")
	if infoLogs.Len() != 0 {
		t.Errorf("logged at info level: %v", infoLogs.All())
	}
}

func TestAClientThatDoesNotReadIsDisconnected(t *testing.T) {
	const size = 16 << 20 // an answer far larger than the sockets' buffers
	tests := []struct {
		name         string
		writeTimeout time.Duration
		closed       bool
	}{
		{"with a write timeout the connection is closed", 100 * time.Millisecond, true},
		{"without one it stays open (so the case above shows the limit)", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := connlimit.New(8)
			r := newRigLimits(t, false, false, 2*size, Limits{ReadTimeout: failsafe, WriteTimeout: tt.writeTimeout},
				func(ln net.Listener) net.Listener { return lim.Wrap(ln, RefuseTooMany(8)) })
			c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.(*net.TCPConn).SetReadBuffer(4096)
			body := `{"jsonrpc":"2.0","id":1,"method":"f","params":["` + strings.Repeat("a", size) + `"]}`
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
			testkit.WaitFor(t, func() bool { return r.eng.Stats().Answered == 1 }, "the call to be answered")
			if tt.closed {
				testkit.WaitFor(t, func() bool { return lim.Open() == 0 }, "the server to close the connection of a client that does not read")
				return
			}
			// Without the limit the write waits for the client as long as
			// it takes: the connection is still open well past 100 ms.
			<-time.After(500 * time.Millisecond)
			if lim.Open() != 1 {
				t.Fatalf("%d connections open, want the stalled one", lim.Open())
			}
		})
	}
}
