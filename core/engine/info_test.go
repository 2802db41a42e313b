package engine

import (
	"encoding/json"
	"testing"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// TestServantInfoMergedOrNested: a servant's info members join mserve's
// (its reserved keys win); a balancer's whole info record, reserved keys
// included, goes under "inner" as it was sent.
func TestServantInfoMergedOrNested(t *testing.T) {
	const servantInfo = `{"route":"theirs","servant":"deep","handler_ns":5}`
	for _, tt := range []struct {
		name     string
		balancer bool
		check    func(t *testing.T, info map[string]json.RawMessage)
	}{
		{"plain servant: merged, mserve's keys win", false, func(t *testing.T, info map[string]json.RawMessage) {
			if string(info["route"]) != `"x"` || string(info["servant"]) != `"s1"` || string(info["handler_ns"]) != "5" || info["inner"] != nil {
				t.Errorf("info %v: want route x, servant s1, handler_ns 5 and no inner", info)
			}
		}},
		{"balancer: nested whole under inner", true, func(t *testing.T, info map[string]json.RawMessage) {
			if string(info["route"]) != `"x"` || string(info["servant"]) != `"s1"` || info["handler_ns"] != nil || string(info["inner"]) != servantInfo {
				t.Errorf("info %v: want route x, servant s1, and inner %s unchanged", info, servantInfo)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, "least", Config{})
			l := newFakeLink()
			s := e.AddServant(ServantSpec{Name: "s1"}, l)
			s.Up(Announce{Balancer: tt.balancer})
			got := make(chan []byte, 1)
			e.Submit(call(replierFunc(func(c *Call, a *Answer) { got <- AppendInfo(nil, c, a) }), "f", `["x"]`))
			s.Done(sentCall(t, l), &jsonrpc.Response{Result: []byte("1"), Info: []byte(servantInfo)}, nil)
			raw := <-got
			var info map[string]json.RawMessage
			if err := json.Unmarshal(raw, &info); err != nil {
				t.Fatalf("info %s: %v", raw, err)
			}
			tt.check(t, info)
		})
	}
}

// TestSetRouter: calls arriving after SetRouter get its routing string;
// nil leaves them without one.
func TestSetRouter(t *testing.T) {
	e := newEngine(t, "least", Config{})
	l := newFakeLink()
	s := e.AddServant(ServantSpec{Name: "s1", Slots: 3}, l)
	s.Up(Announce{})
	rec := newRecorder()
	route := func(params string) string {
		t.Helper()
		e.Submit(call(rec, "f", params))
		return sentCall(t, l).Route
	}
	if got := route(`["a"]`); got != "a" {
		t.Errorf("route with the first router: %q, want a", got)
	}
	e.SetRouter(dispatch.RouterFunc(func(c *dispatch.Call) (string, error) { return "fixed", nil }))
	if got := route(`["b"]`); got != "fixed" {
		t.Errorf("route after SetRouter: %q, want fixed", got)
	}
	e.SetRouter(nil)
	if got := route(`["c"]`); got != "" {
		t.Errorf("route after SetRouter(nil): %q, want none", got)
	}
}

// TestShuttingDownAfterTheLastAttemptReachesTheCaller: a call that has
// used its attempts is not sent on again; the servant's "shutting down"
// is its answer. The servant still takes no more calls.
func TestShuttingDownAfterTheLastAttemptReachesTheCaller(t *testing.T) {
	e := newEngine(t, "orig", Config{MaxAttempts: 1})
	l1, l2 := newFakeLink(), newFakeLink()
	s1 := e.AddServant(ServantSpec{Name: "s1"}, l1)
	s1.Up(Announce{})
	rec := newRecorder()
	c := call(rec, "f", `[1]`)
	e.Submit(c)
	sentCall(t, l1)
	e.AddServant(ServantSpec{Name: "s2"}, l2).Up(Announce{})
	s1.Done(c, &jsonrpc.Response{Error: []byte(`{"code":-32006,"message":"the servant is shutting down"}`)}, nil)
	if got, resp := rec.wait(t); got != c || resp["error"].(map[string]any)["code"] != float64(jsonrpc.ShuttingDown) {
		t.Fatalf("answer %v, want the servant's shutting down", resp)
	}
	noSend(t, l2)
	for _, sv := range e.Stats().Servants {
		if sv.Name == "s1" && sv.Available() {
			t.Error("s1 answered shutting down and is still available for calls")
		}
	}
}
