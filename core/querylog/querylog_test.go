package querylog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

const failsafe = 10 * time.Second

// clock is a settable time source for the engine.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// rig is an engine recording into a Log, with one servant "s1" (not up
// until the test says so) and a settable clock.
type rig struct {
	log   *Log
	eng   *engine.Engine
	s     *engine.Servant
	tr    *testkit.Transport // hands sent calls to the test
	clock *clock
}

func newRig(t *testing.T, size int, path string, timeout time.Duration) *rig {
	t.Helper()
	l, err := New(size, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r := &rig{log: l, tr: &testkit.Transport{Sent: make(chan *engine.Call, 64)}, clock: &clock{}}
	r.clock.set(time.Unix(1_700_000_000, 0))
	r.eng = engine.New(engine.Config{Algorithm: testkit.FirstFree, Record: l.Record, Now: r.clock.now, Timeout: timeout})
	r.s = r.eng.AddServant(engine.ServantSpec{Name: "s1", Addr: "127.0.0.1:7001"}, r.tr)
	return r
}

func newCall(method, user, route string) *engine.Call {
	c := &engine.Call{ID: []byte("1")}
	c.Method, c.User, c.Route, c.Params = method, user, route, []byte(`[1]`)
	return c
}

// answered waits for an engine answer delivered to the recorder.
type waiter chan *engine.Answer

func (w waiter) Answer(_ *engine.Call, a *engine.Answer) { w <- a }

func (w waiter) wait(t *testing.T) {
	t.Helper()
	testkit.Recv(t, w, "no answer")
}

func TestRecordFillsTheEntry(t *testing.T) {
	tests := []struct {
		name    string
		finish  func(r *rig, c *engine.Call)
		outcome string
		code    int
		msg     string
		servant string
		sent    bool
	}{
		{
			name: "a successful call",
			finish: func(r *rig, c *engine.Call) {
				r.s.Done(c, &jsonrpc.Response{Result: []byte(`42`)}, nil)
			},
			outcome: "ok", servant: "s1", sent: true,
		},
		{
			name: "the servant's own error",
			finish: func(r *rig, c *engine.Call) {
				r.s.Done(c, &jsonrpc.Response{Error: []byte(`{"code":-32603,"message":"boom"}`)}, nil)
			},
			outcome: "error", servant: "s1", sent: true,
		},
		{
			name: "mserve's error for a lost servant",
			finish: func(r *rig, c *engine.Call) {
				r.s.Down([]*engine.Call{c}, fmt.Errorf("EOF"))
			},
			outcome: "servant_lost", code: jsonrpc.ServantLost, msg: "servant lost", servant: "s1", sent: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 10, "", 0)
			w := make(waiter, 1)
			c := newCall("proc1", "alice", "IBM")
			c.Reply = w
			t0 := r.clock.now()
			r.eng.Submit(c) // waits: the servant is not up
			r.clock.add(3 * time.Millisecond)
			r.s.Up(engine.Announce{})
			sent := r.tr.Next(t)
			r.clock.add(5 * time.Millisecond)
			tt.finish(r, sent)
			w.wait(t)
			es := r.log.Recent(10, Filter{})
			if len(es) != 1 {
				t.Fatalf("Recent = %+v, want one entry", es)
			}
			e := es[0]
			if e.ID != 1 || e.User != "alice" || e.Method != "proc1" || e.Route != "IBM" || e.Servant != tt.servant {
				t.Errorf("entry = %+v", e)
			}
			if e.Received != t0.UnixNano() {
				t.Errorf("Received = %d, want %d", e.Received, t0.UnixNano())
			}
			if tt.sent && e.Sent != t0.Add(3*time.Millisecond).UnixNano() {
				t.Errorf("Sent = %d, want %d", e.Sent, t0.Add(3*time.Millisecond).UnixNano())
			}
			if e.Returned != t0.Add(8*time.Millisecond).UnixNano() {
				t.Errorf("Returned = %d, want %d", e.Returned, t0.Add(8*time.Millisecond).UnixNano())
			}
			if e.Outcome != tt.outcome || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) || (tt.msg == "" && e.Message != "") {
				t.Errorf("outcome %q code %d message %q; want %q %d %q", e.Outcome, e.Code, e.Message, tt.outcome, tt.code, tt.msg)
			}
		})
	}
}

func TestRecordOfACallNeverSent(t *testing.T) {
	r := newRig(t, 10, "", 0)
	w := make(waiter, 1)
	c := newCall("f", "", "")
	c.Reply = w
	r.eng.Submit(c)
	r.eng.Cancel(c, "gone")
	w.wait(t)
	e := r.log.Recent(1, Filter{})[0]
	if e.Servant != "" || e.Sent != 0 || e.Outcome != "cancelled" || e.Code != jsonrpc.Cancelled {
		t.Errorf("entry = %+v, want no servant, no sent time, outcome cancelled", e)
	}
}

func TestIDsAreTheEngineSequence(t *testing.T) {
	r := newRig(t, 10, "", 0)
	r.s.Up(engine.Announce{Slots: 10})
	w := make(waiter, 3)
	for range 3 {
		c := newCall("f", "", "")
		c.Reply = w
		r.eng.Submit(c)
		r.s.Done(r.tr.Next(t), &jsonrpc.Response{Result: []byte(`1`)}, nil)
		w.wait(t)
	}
	var ids []uint64
	for _, e := range r.log.Recent(10, Filter{}) {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []uint64{3, 2, 1}) {
		t.Errorf("ids newest first = %v, want [3 2 1]", ids)
	}
}

func TestRefused(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		user    string
		err     *jsonrpc.Error
		outcome string
	}{
		{"undeclared", "nope", "", jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found"), "method_not_found"},
		{"bad arguments", "f", "bob", jsonrpc.Errorf(jsonrpc.InvalidParams, "bad x"), "invalid_params"},
		{"unauthorized", "f", "eve", jsonrpc.Errorf(jsonrpc.Unauthorized, "no"), "unauthorized"},
		{"malformed, method unknown", "", "", jsonrpc.Errorf(jsonrpc.ParseError, "parse error"), "parse_error"},
		{"an unknown code is an error", "f", "", jsonrpc.Errorf(-1, "odd"), "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := New(10, "")
			before := time.Now().UnixNano()
			l.Refused(tt.method, tt.user, tt.err)
			after := time.Now().UnixNano()
			es := l.Recent(10, Filter{})
			if len(es) != 1 {
				t.Fatalf("Recent = %v", es)
			}
			e := es[0]
			if e.ID != 0 || e.Method != tt.method || e.User != tt.user || e.Servant != "" || e.Sent != 0 {
				t.Errorf("entry = %+v", e)
			}
			if e.Outcome != tt.outcome || e.Code != tt.err.Code || e.Message != tt.err.Message {
				t.Errorf("outcome %q code %d message %q; want %q %d %q", e.Outcome, e.Code, e.Message, tt.outcome, tt.err.Code, tt.err.Message)
			}
			if e.Received < before || e.Received > after || e.Returned != e.Received {
				t.Errorf("Received %d Returned %d, want equal and within [%d, %d]", e.Received, e.Returned, before, after)
			}
		})
	}
}

// fill refuses n calls named m0, m1, … into l.
func fill(l *Log, n int) {
	for i := range n {
		l.Refused(fmt.Sprintf("m%d", i), "", jsonrpc.Errorf(jsonrpc.InvalidParams, "x"))
	}
}

func methods(es []Entry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Method)
	}
	return out
}

func TestRingKeepsTheNewest(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		added int
		n     int
		want  []string
	}{
		{"empty log", 3, 0, 10, []string{}},
		{"fewer than the size", 3, 2, 10, []string{"m1", "m0"}},
		{"exactly the size", 3, 3, 10, []string{"m2", "m1", "m0"}},
		{"one past the size drops the oldest", 3, 4, 10, []string{"m3", "m2", "m1"}},
		{"wrapped around twice", 3, 7, 10, []string{"m6", "m5", "m4"}},
		{"n limits the count, newest first", 5, 5, 2, []string{"m4", "m3"}},
		{"n of zero gives none", 5, 5, 0, []string{}},
		{"size 1 keeps only the last", 1, 4, 10, []string{"m3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := New(tt.size, "")
			fill(l, tt.added)
			got := l.Recent(tt.n, Filter{})
			if got == nil {
				t.Fatal("Recent returned nil, want an empty slice (it is served as JSON)")
			}
			if !slices.Equal(methods(got), tt.want) {
				t.Errorf("Recent(%d) = %v, want %v", tt.n, methods(got), tt.want)
			}
		})
	}
	t.Run("size zero or less means DefaultSize", func(t *testing.T) {
		for _, size := range []int{0, -5} {
			l, _ := New(size, "")
			fill(l, DefaultSize+1)
			got := l.Recent(2*DefaultSize, Filter{})
			if len(got) != DefaultSize || got[0].Method != fmt.Sprintf("m%d", DefaultSize) {
				t.Errorf("New(%d): kept %d, newest %q; want %d ending with m%d", size, len(got), got[0].Method, DefaultSize, DefaultSize)
			}
		}
	})
}

func TestRecentFilters(t *testing.T) {
	l, _ := New(100, "")
	for _, e := range []Entry{
		{ID: 1, Method: "hdb", Servant: "s1", User: "alice", Outcome: "ok"},
		{ID: 2, Method: "rdb", Servant: "s2", User: "bob", Outcome: "error"},
		{ID: 3, Method: "hdb", Servant: "s2", User: "alice", Outcome: "timeout"},
		{ID: 4, Method: "hdb", Servant: "", User: "", Outcome: "method_not_found"},
		{ID: 5, Method: "rdb", Servant: "s1", User: "alice", Outcome: "ok"},
	} {
		l.add(e)
	}
	tests := []struct {
		name string
		f    Filter
		n    int
		want []uint64
	}{
		{"no filter, newest first", Filter{}, 10, []uint64{5, 4, 3, 2, 1}},
		{"by method", Filter{Method: "hdb"}, 10, []uint64{4, 3, 1}},
		{"by servant", Filter{Servant: "s2"}, 10, []uint64{3, 2}},
		{"by outcome", Filter{Outcome: "ok"}, 10, []uint64{5, 1}},
		{"by user", Filter{User: "alice"}, 10, []uint64{5, 3, 1}},
		{"not ok", Filter{NotOK: true}, 10, []uint64{4, 3, 2}},
		{"combined method and user", Filter{Method: "hdb", User: "alice"}, 10, []uint64{3, 1}},
		{"combined not ok and servant", Filter{NotOK: true, Servant: "s2"}, 10, []uint64{3, 2}},
		{"no match", Filter{Method: "nope"}, 10, []uint64{}},
		{"n counts matches, not entries scanned", Filter{Method: "hdb"}, 2, []uint64{4, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := []uint64{}
			for _, e := range l.Recent(tt.n, tt.f) {
				got = append(got, e.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Recent(%d, %+v) ids = %v, want %v", tt.n, tt.f, got, tt.want)
			}
		})
	}
}

func TestLatencies(t *testing.T) {
	l, _ := New(100, "")
	for _, e := range []Entry{
		{Servant: "s1", Sent: 100, Returned: 110}, // oldest
		{Servant: "s2", Sent: 100, Returned: 200},
		{Servant: "", Sent: 0, Returned: 5},         // refused: no servant
		{Servant: "s1", Sent: 0, Returned: 50},      // answered by s1 but never sent (timed out in its backlog)
		{Servant: "s1", Sent: 1000, Returned: 1030}, // newest
	} {
		l.add(e)
	}
	got := l.Latencies()
	want := map[string][]time.Duration{"s1": {10, 30}, "s2": {100}}
	if len(got) != len(want) {
		t.Fatalf("Latencies = %v, want servants %v", got, want)
	}
	for s, ds := range want {
		t.Run("servant "+s+" oldest first", func(t *testing.T) {
			if !slices.Equal(got[s], ds) {
				t.Errorf("Latencies[%s] = %v, want %v (oldest first)", s, got[s], ds)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		name string
		ds   []time.Duration
		q    float64
		want time.Duration
	}{
		{"none gives zero", nil, 0.5, 0},
		{"unsorted input is sorted first", []time.Duration{5, 1, 4, 2, 3}, 0.5, 3},
		{"p99 of five is the largest", []time.Duration{5, 1, 4, 2, 3}, 0.99, 5},
		{"q=0 is the smallest", []time.Duration{5, 1, 4}, 0, 1},
		{"q=1 is the largest", []time.Duration{5, 1, 4}, 1, 5},
		{"one value", []time.Duration{7}, 0.5, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.ds, tt.q); got != tt.want {
				t.Errorf("Percentile = %v, want %v", got, tt.want)
			}
			if !slices.IsSorted(tt.ds) {
				t.Error("Percentile did not sort its input")
			}
		})
	}
}

func TestServeHTTP(t *testing.T) {
	l, _ := New(1000, "")
	for i := range 150 {
		e := Entry{ID: uint64(i + 1), Method: "f", Servant: "s1", User: "alice", Outcome: "ok"}
		if i%10 == 0 {
			e.Method, e.Servant, e.User, e.Outcome = "g", "s2", "bob", "timeout"
		}
		l.add(e)
	}
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	tests := []struct {
		name   string
		query  string
		status int
		count  int
		check  func(t *testing.T, es []Entry)
	}{
		{name: "default limit is 100, newest first", status: 200, count: 100, check: func(t *testing.T, es []Entry) {
			if es[0].ID != 150 || es[99].ID != 51 {
				t.Errorf("first %d last %d, want 150 and 51", es[0].ID, es[99].ID)
			}
		}},
		{name: "limit", query: "limit=3", status: 200, count: 3},
		{name: "limit above the entries gives them all", query: "limit=100000", status: 200, count: 150},
		{name: "method", query: "method=g&limit=1000", status: 200, count: 15},
		{name: "servant", query: "servant=s1&limit=1000", status: 200, count: 135},
		{name: "outcome", query: "outcome=timeout&limit=1000", status: 200, count: 15},
		{name: "user", query: "user=bob&limit=1000", status: 200, count: 15},
		{name: "errors=1 keeps calls that did not succeed", query: "errors=1&limit=1000", status: 200, count: 15, check: func(t *testing.T, es []Entry) {
			for _, e := range es {
				if e.Outcome == "ok" {
					t.Errorf("ok entry with errors=1: %+v", e)
				}
			}
		}},
		{name: "errors=0 filters nothing", query: "errors=0&limit=1000", status: 200, count: 150},
		{name: "no match is an empty array", query: "method=nope", status: 200, count: 0},
		{name: "non-numeric limit", query: "limit=abc", status: 400},
		{name: "zero limit", query: "limit=0", status: 400},
		{name: "negative limit", query: "limit=-1", status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + "/queries?" + tt.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status != 200 {
				var b strings.Builder
				bufio.NewReader(resp.Body).WriteTo(&b)
				if !strings.Contains(b.String(), "limit must be a positive number") {
					t.Errorf("body %q does not explain the limit", b.String())
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var es []Entry
			if err := json.NewDecoder(resp.Body).Decode(&es); err != nil {
				t.Fatal(err)
			}
			if es == nil || len(es) != tt.count {
				t.Fatalf("%d entries (nil: %v), want %d", len(es), es == nil, tt.count)
			}
			if tt.check != nil {
				tt.check(t, es)
			}
		})
	}
}

func readLines(t *testing.T, path string) []Entry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []Entry
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		var e Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

func TestFile(t *testing.T) {
	t.Run("Close flushes every entry as a JSON line, oldest first", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "queries.jsonl")
		l, err := New(2, path) // the file keeps what the ring drops
		if err != nil {
			t.Fatal(err)
		}
		fill(l, 5)
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		es := readLines(t, path)
		if got := methods(es); !slices.Equal(got, []string{"m0", "m1", "m2", "m3", "m4"}) {
			t.Errorf("file entries = %v", got)
		}
		if es[0].Outcome != "invalid_params" || es[0].Code != jsonrpc.InvalidParams {
			t.Errorf("entry = %+v", es[0])
		}
	})
	t.Run("the file is appended to, not truncated", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "queries.jsonl")
		os.WriteFile(path, []byte(`{"id":99,"method":"old"}`+"\n"), 0o600)
		l, err := New(10, path)
		if err != nil {
			t.Fatal(err)
		}
		fill(l, 1)
		l.Close()
		if got := methods(readLines(t, path)); !slices.Equal(got, []string{"old", "m0"}) {
			t.Errorf("file entries = %v, want the old line kept", got)
		}
	})
	t.Run("omitted fields stay out of the line", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "q.jsonl")
		l, _ := New(10, path)
		l.add(Entry{ID: 1, Method: "f", Outcome: "ok", Received: 1, Returned: 2})
		l.Close()
		b, _ := os.ReadFile(path)
		line := strings.TrimSpace(string(b))
		for _, absent := range []string{`"servant"`, `"sent"`, `"code"`, `"message"`} {
			if strings.Contains(line, absent) {
				t.Errorf("line %s has %s", line, absent)
			}
		}
		for _, present := range []string{`"id":1`, `"user":""`, `"route":""`, `"received":1`, `"returned":2`, `"outcome":"ok"`} {
			if !strings.Contains(line, present) {
				t.Errorf("line %s lacks %s", line, present)
			}
		}
	})
	t.Run("entries reach the file without Close (flushed every second)", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "q.jsonl")
		l, _ := New(10, path)
		t.Cleanup(func() { l.Close() })
		fill(l, 2)
		deadline := time.After(failsafe)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if b, _ := os.ReadFile(path); strings.Count(string(b), "\n") == 2 {
				return
			}
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatal("the entries never reached the file")
			}
		}
	})
	t.Run("a file that cannot be opened is an error", func(t *testing.T) {
		if _, err := New(10, filepath.Join(t.TempDir(), "missing-dir", "q.jsonl")); err == nil {
			t.Error("New succeeded")
		}
	})
	t.Run("Close without a file is a no-op", func(t *testing.T) {
		l, _ := New(10, "")
		if err := l.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
}

// TestConcurrentRecording records, reads and serves at once; run with -race.
func TestConcurrentRecording(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.jsonl")
	l, _ := New(50, path)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				switch i % 4 {
				case 0, 1:
					l.Refused(fmt.Sprintf("g%d", g), "", jsonrpc.Errorf(jsonrpc.Overloaded, "x"))
				case 2:
					l.Recent(10, Filter{NotOK: true})
				case 3:
					l.Latencies()
				}
			}
		}()
	}
	wg.Wait()
	l.Close()
	if n := len(readLines(t, path)); n != 400 {
		t.Errorf("%d lines in the file, want 400", n)
	}
}
