package link

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// batchServant is a JSON-RPC over HTTP servant of 8 slots that answers
// batches. "echo" returns its first argument; "hold" does too, once the
// test releases it; "dropme" gets no response in a batch answer. It
// records how many calls each request carried.
type batchServant struct {
	srv     *httptest.Server
	refuse  bool // answer every batch with one "invalid request" error, as a server without batches does
	reverse bool // answer a batch's calls in reverse order
	held    chan struct{}
	release chan struct{}

	mu    sync.Mutex
	sizes []int // calls per request, in arrival order (rpc.* excluded)
}

func startBatchServant(t *testing.T, refuse, reverse bool) *batchServant {
	t.Helper()
	b := &batchServant{refuse: refuse, reverse: reverse, held: make(chan struct{}, 8), release: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	t.Cleanup(b.releaseAll)
	return b
}

func (b *batchServant) releaseAll() {
	select {
	case <-b.release:
	default:
		close(b.release)
	}
}

func (b *batchServant) requestSizes() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sizes)
}

func (b *batchServant) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if !jsonrpc.IsBatch(body) {
		var req jsonrpc.Request
		jsonrpc.ParseRequest(body, &req)
		switch req.Method {
		case wire.MethodHello:
			w.Write([]byte(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":{"slots":8}}`))
			return
		case wire.MethodPing:
			w.Write([]byte(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":"pong"}`))
			return
		}
		b.record(1)
		w.Write(b.answer(&req))
		return
	}
	if b.refuse {
		w.Write(jsonrpc.AppendErrorResponse(nil, nil, jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: batches are not supported"), nil))
		return
	}
	var reqs []jsonrpc.Request
	jsonrpc.SplitBatch(body, func(el []byte) {
		var req jsonrpc.Request
		jsonrpc.ParseRequest(el, &req)
		reqs = append(reqs, req)
	})
	b.record(len(reqs))
	if b.reverse {
		slices.Reverse(reqs)
	}
	var answers [][]byte
	for i := range reqs {
		if reqs[i].Method != "dropme" {
			answers = append(answers, b.answer(&reqs[i]))
		}
	}
	w.Write([]byte("[" + string(slices.Concat(joinComma(answers)...)) + "]"))
}

func joinComma(parts [][]byte) [][]byte {
	var out [][]byte
	for i, p := range parts {
		if i > 0 {
			out = append(out, []byte(","))
		}
		out = append(out, p)
	}
	return out
}

func (b *batchServant) record(n int) {
	b.mu.Lock()
	b.sizes = append(b.sizes, n)
	b.mu.Unlock()
}

func (b *batchServant) answer(req *jsonrpc.Request) []byte {
	if req.Method == "hold" {
		b.held <- struct{}{}
		<-b.release
	}
	var first []byte
	jsonrpc.Elements(req.Params, func(v []byte) bool { first = v; return false })
	return jsonrpc.AppendResponse(nil, req.ID, first, nil, nil)
}

// holdThenQueue runs a "hold" call (the one request HTTPConns=1 allows)
// and, once the servant holds it, submits calls for methods; they wait in
// the link. It returns the recorder the calls answer to, the held call
// first.
func holdThenQueue(t *testing.T, x *httpLinked, b *batchServant, methods ...string) *recorder {
	t.Helper()
	rec := newRecorder()
	x.eng.Submit(newCall(rec, "hold", `["held"]`))
	testkit.Recv(t, b.held, "the held call to reach the servant")
	for i, m := range methods {
		c := newCall(rec, m, `["`+string(rune('a'+i))+`"]`)
		c.ID = []byte{byte('2' + i)}
		x.eng.Submit(c)
	}
	testkit.WaitFor(t, func() bool {
		x.l.mu.Lock()
		defer x.l.mu.Unlock()
		return len(x.l.waiting) == len(methods)
	}, "the calls to wait in the link")
	return rec
}

// answers collects n answers by result (or error message) per call id.
func answers(t *testing.T, rec *recorder, n int) map[string]string {
	t.Helper()
	got := map[string]string{}
	for range n {
		r := rec.wait(t)
		if res, ok := r.m["result"].(string); ok {
			got[string(r.c.ID)] = res
		} else {
			got[string(r.c.ID)] = "error: " + r.m["error"].(map[string]any)["message"].(string)
		}
	}
	return got
}

func TestHTTPLinkBatches(t *testing.T) {
	tests := []struct {
		name    string
		refuse  bool
		reverse bool
		methods []string
		sizes   []int             // calls per request the servant saw
		want    map[string]string // answer per call id ("1" is the held call)
		warned  bool              // the link logged that the servant refused a batch
	}{
		{name: "calls sent while the request is in flight go as one batch when it ends",
			methods: []string{"echo", "echo", "echo"}, sizes: []int{1, 3},
			want: map[string]string{"1": "held", "2": "a", "3": "b", "4": "c"}},
		{name: "responses are matched by id, not by position", reverse: true,
			methods: []string{"echo", "echo", "echo"}, sizes: []int{1, 3},
			want: map[string]string{"1": "held", "2": "a", "3": "b", "4": "c"}},
		{name: "a call the batch answer leaves out is lost, saying so; the others are answered",
			methods: []string{"echo", "dropme", "echo"}, sizes: []int{1, 3},
			want: map[string]string{"1": "held", "2": "a", "3": "servant broke the protocol: its batch answer has no response for this call (id 3)", "4": "c"}},
		{name: "a refused batch is sent again one call per request, and batches stop",
			refuse: true, methods: []string{"echo", "echo"}, sizes: []int{1, 1, 1},
			want: map[string]string{"1": "held", "2": "a", "3": "b"}, warned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBatchServant(t, tt.refuse, tt.reverse)
			x := runHTTPLink(t, Config{Addr: b.srv.URL, HTTPConns: 1})
			x.waitHealthy(t, true)
			rec := holdThenQueue(t, x, b, tt.methods...)
			b.releaseAll()
			got := answers(t, rec, len(tt.want))
			for id, want := range tt.want {
				if !strings.Contains(got[id], want) {
					t.Errorf("call %s answered %q, want %q", id, got[id], want)
				}
			}
			if sizes := b.requestSizes(); !slices.Equal(sizes, tt.sizes) {
				t.Errorf("calls per request %v, want %v", sizes, tt.sizes)
			}
			if n := x.logs.FilterMessage("servant refused a JSON-RPC batch; sending it one call per request from now on").Len(); (n == 1) != tt.warned {
				t.Errorf("%d refusal warnings", n)
			}
			if tt.refuse { // no batch again: two more calls queued go one by one
				rec := holdAgain(t, x, b)
				answers(t, rec, 3)
				if sizes := b.requestSizes(); !slices.Equal(sizes[len(sizes)-3:], []int{1, 1, 1}) {
					t.Errorf("after the refusal, calls per request %v", sizes)
				}
			}
			testkit.WaitFor(t, func() bool { return x.s.View().InFlight == 0 }, "every slot to be freed")
		})
	}
}

// holdAgain holds one call, queues two more and releases them.
func holdAgain(t *testing.T, x *httpLinked, b *batchServant) *recorder {
	t.Helper()
	b.release = make(chan struct{})
	rec := holdThenQueue(t, x, b, "echo", "echo")
	b.releaseAll()
	return rec
}

func TestHTTPLinkWithoutConnsCapSendsEachCallAtOnce(t *testing.T) {
	b := startBatchServant(t, false, false)
	x := runHTTPLink(t, Config{Addr: b.srv.URL})
	x.waitHealthy(t, true)
	rec := newRecorder()
	x.eng.Submit(newCall(rec, "hold", `["held"]`))
	testkit.Recv(t, b.held, "the held call to reach the servant")
	x.eng.Submit(newCall(rec, "echo", `["free"]`))
	if r := rec.wait(t); r.m["result"] != "free" {
		t.Fatalf("the second call waited for the first: %v", r.m)
	}
	b.releaseAll()
	rec.wait(t)
}

func TestHTTPLinkWaitingCalls(t *testing.T) {
	t.Run("a cancelled waiting call is answered at once and never sent", func(t *testing.T) {
		b := startBatchServant(t, false, false)
		x := runHTTPLink(t, Config{Addr: b.srv.URL, HTTPConns: 1})
		x.waitHealthy(t, true)
		rec := newRecorder()
		x.eng.Submit(newCall(rec, "hold", `["held"]`))
		testkit.Recv(t, b.held, "the held call to reach the servant")
		c := newCall(rec, "echo", `["late"]`)
		x.eng.Submit(c)
		testkit.WaitFor(t, func() bool { x.l.mu.Lock(); defer x.l.mu.Unlock(); return len(x.l.waiting) == 1 }, "the call to wait")
		x.eng.Cancel(c, "client gone")
		if r := rec.wait(t); r.c != c || testkit.ErrCode(r.m) != jsonrpc.Cancelled {
			t.Fatalf("answer %v", r.m)
		}
		b.releaseAll()
		if r := rec.wait(t); r.m["result"] != "held" {
			t.Errorf("held call answered %v", r.m)
		}
		if sizes := b.requestSizes(); !slices.Equal(sizes, []int{1}) {
			t.Errorf("calls per request %v; the cancelled call was sent", sizes)
		}
		if !x.s.View().Healthy {
			t.Error("out of dispatch after a cancelled call")
		}
		testkit.WaitFor(t, func() bool { return x.s.View().InFlight == 0 }, "every slot to be freed")
		select {
		case r := <-rec.got:
			t.Errorf("answered twice: %v", r.m)
		default:
		}
	})
	t.Run("calls waiting when the link stops are answered", func(t *testing.T) {
		b := startBatchServant(t, false, false)
		l := NewHTTP(Config{Name: "h1", Addr: b.srv.URL, HTTPConns: 1, Log: zap.NewNop()})
		eng, s := attach(l, engine.ServantSpec{Name: "h1"})
		stop := goRun(l)
		testkit.WaitFor(t, func() bool { return s.View().Healthy }, "up")
		rec := newRecorder()
		eng.Submit(newCall(rec, "hold", `["held"]`))
		testkit.Recv(t, b.held, "the held call to reach the servant")
		for range 3 {
			eng.Submit(newCall(rec, "echo", `[1]`))
		}
		testkit.WaitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return len(l.waiting) == 3 }, "the calls to wait")
		if !stop() {
			t.Fatal("Run did not return")
		}
		for range 4 {
			if r := rec.wait(t); testkit.ErrCode(r.m) != jsonrpc.ServantLost {
				t.Errorf("answer %v", r.m)
			}
		}
	})
}

func TestAppendRequest(t *testing.T) {
	call := func(method, params string, idem bool) outCall {
		c := &engine.Call{Idempotent: idem}
		c.Method, c.Params = method, []byte(params)
		if params == "" {
			c.Params = nil
		}
		return outCall{c: c, id: 7}
	}
	tests := []struct {
		name string
		req  []outCall
		want string
		idem bool
	}{
		{"a call alone is one request object", []outCall{call("f", `[1]`, true)},
			`{"jsonrpc":"2.0","id":7,"method":"f","params":[1]}`, true},
		{"no params, no member", []outCall{call("f", "", false)}, `{"jsonrpc":"2.0","id":7,"method":"f"}`, false},
		{"a batch is an array; idempotent only if every call is",
			[]outCall{call("f", `[1]`, true), call("g", `{"a":2}`, false)},
			`[{"jsonrpc":"2.0","id":7,"method":"f","params":[1]},{"jsonrpc":"2.0","id":7,"method":"g","params":{"a":2}}]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, idem := appendRequest(nil, tt.req)
			if string(got) != tt.want || idem != tt.idem {
				t.Errorf("got %s idempotent %v, want %s %v", got, idem, tt.want, tt.idem)
			}
		})
	}
}
