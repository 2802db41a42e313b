package core

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/querylog"
	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
)

// startServant serves an SDK servant with echo and fail on a loopback port.
func startServant(t *testing.T) string {
	t.Helper()
	s := servant.New(servant.Secret(""))
	s.MustHandle("echo(x any)", func(_ context.Context, c *servant.Call) (any, error) {
		var x json.RawMessage
		return x, c.Bind(&x)
	})
	s.MustHandle("fail(x any)", func(context.Context, *servant.Call) (any, error) {
		return nil, jsonrpc.Errorf(jsonrpc.InternalError, "it failed")
	})
	return serveSDK(t, s)
}

// serveSDK serves s on a free loopback port until the test ends (then shuts
// it down) and returns its address.
func serveSDK(t *testing.T, s *servant.Servant) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// startBalancer runs a Balancer over n in-process servants, with every
// front end and the admin endpoint on free ports.
func startBalancer(t *testing.T, n int, cfg Config) *Balancer {
	t.Helper()
	for i := range n {
		cfg.Servants = append(cfg.Servants, ServantSpec{Name: "r" + string(rune('1'+i)), Addr: startServant(t)})
	}
	cfg.NativeAddr, cfg.HTTPAddr, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if cfg.Algorithm == "" {
		cfg.Algorithm = "least"
	}
	return started(t, cfg, nil)
}

// started makes a Balancer of cfg logging to log, starts it and shuts it
// down when the test ends.
func started(t *testing.T, cfg Config, log *zap.Logger) *Balancer {
	t.Helper()
	b, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, b)
}

// start starts b and shuts it down when the test ends.
func start(t *testing.T, b *Balancer) *Balancer {
	t.Helper()
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	return b
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// metricValue returns the value of the sample whose line starts with
// prefix (name and labels), or "" when absent.
func metricValue(text, prefix string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			return strings.TrimPrefix(line, prefix+" ")
		}
	}
	return ""
}

func dial(t *testing.T, b *Balancer) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), b.NativeAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitServing calls echo until a servant answers, so that tests start with
// every servant up.
func waitServing(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "echo", []any{"ready"}); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsMoveWithCalls(t *testing.T) {
	b := startBalancer(t, 2, Config{})
	c := dial(t, b)
	waitServing(t, c)
	url := "http://" + b.AdminAddr() + "/metrics"
	before := get(t, url)
	ctx := context.Background()
	for range 5 {
		if _, err := c.Call(ctx, "echo", []any{1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Call(ctx, "fail", []any{1}); err == nil {
		t.Fatal("fail succeeded")
	}
	if _, err := c.Call(ctx, "nope", []any{1}); err == nil {
		t.Fatal("an undeclared function was called")
	}
	after := get(t, url)
	count := func(text, fn, outcome string) int {
		n := 0
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, `mserve_calls_total{function="`+fn+`",outcome="`+outcome+`"`) {
				var v float64
				json.Unmarshal([]byte(line[strings.LastIndexByte(line, ' ')+1:]), &v)
				n += int(v)
			}
		}
		return n
	}
	if d := count(after, "echo", "ok") - count(before, "echo", "ok"); d != 5 {
		t.Errorf("echo ok moved by %d, want 5", d)
	}
	if d := count(after, "fail", "error") - count(before, "fail", "error"); d != 1 {
		t.Errorf("fail error moved by %d, want 1", d)
	}
	if d := count(after, "nope", "method_not_found"); d != 1 {
		t.Errorf("refused call counted %d times, want 1", d)
	}
	for _, want := range []string{
		`mserve_queue_calls 0`, `mserve_servant_healthy{servant="r1"} 1`, `mserve_servant_slots{servant="r2"} 1`,
		`mserve_call_elapsed_seconds_count{function="echo"}`, `mserve_call_execution_seconds_bucket{servant="r1",le="0.01"}`,
	} {
		if !strings.Contains(after, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	b := startBalancer(t, 2, Config{})
	c := dial(t, b)
	eventually(t, "both servants up", func() bool { h := healthy(b); return h["r1"] && h["r2"] })
	waitServing(t, c)
	c.Call(context.Background(), "fail", []any{"x"})
	var st Status
	if err := json.Unmarshal([]byte(get(t, "http://"+b.AdminAddr()+"/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Algorithm != "least" || st.Routing != "first" || st.Native != b.NativeAddr() || len(st.Servants) != 2 {
		t.Errorf("status = %+v", st)
	}
	for _, s := range st.Servants {
		if !s.Healthy || s.Slots != 1 || s.Addr == "" {
			t.Errorf("servant %+v", s)
		}
	}
	if st.Calls.Answered < 2 || st.Calls.ServantError != 1 {
		t.Errorf("calls = %+v", st.Calls)
	}
	if len(st.Errors) == 0 || st.Errors[0].Method != "fail" || st.Errors[0].Outcome != "error" {
		t.Errorf("recent errors = %+v", st.Errors)
	}
	page := get(t, "http://"+b.AdminAddr()+"/")
	if !strings.Contains(page, "<title>mserve status</title>") || !strings.Contains(page, `fetch("status"`) {
		t.Error("the status page is not the one that reads /status")
	}
}

func TestQueryLogTimestampsOrdered(t *testing.T) {
	b := startBalancer(t, 2, Config{})
	c := dial(t, b)
	waitServing(t, c)
	for i := range 20 {
		if _, err := c.Call(context.Background(), "echo", []any{i}); err != nil {
			t.Fatal(err)
		}
	}
	var entries []querylog.Entry
	if err := json.Unmarshal([]byte(get(t, "http://"+b.AdminAddr()+"/queries?limit=20&method=echo")), &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 20 {
		t.Fatalf("%d entries, want 20", len(entries))
	}
	for i, e := range entries {
		if !(e.Received <= e.Sent && e.Sent <= e.Returned) || e.Servant == "" || e.Outcome != "ok" {
			t.Errorf("entry %d = %+v: want received ≤ sent ≤ returned, a servant, ok", i, e)
		}
		if i > 0 && e.ID >= entries[i-1].ID {
			t.Errorf("entries not newest first: %d after %d", e.ID, entries[i-1].ID)
		}
	}
}

func TestDrainThroughAdmin(t *testing.T) {
	b := startBalancer(t, 2, Config{})
	c := dial(t, b)
	waitServing(t, c)
	resp, err := http.Post("http://"+b.AdminAddr()+"/servants/r1/drain?wait=5s", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("drain: %s", resp.Status)
	}
	for i := range 10 {
		r, err := c.Call(context.Background(), "echo", []any{i})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Info().Servant; got != "r2" {
			t.Fatalf("call %d ran on %s while r1 is drained", i, got)
		}
	}
	resp, err = http.Post("http://"+b.AdminAddr()+"/servants/nobody/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("drain of an unknown servant: %s, want 404", resp.Status)
	}
}
