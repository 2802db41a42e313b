package pluginhost

import (
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

func TestRouterRoutesThroughThePlugin(t *testing.T) {
	h := startHost(t, Config{Path: testPluginBin, Deadline: time.Second})
	r := NewRouter(h, "testroute", fixedRouter("fallback"))
	for _, c := range []dispatch.Call{
		{Method: "proc1", Params: []byte(`["IBM"]`)},
		{Method: "echo", Params: []byte(`{"x":[1,2]}`), User: "alice"},
	} {
		got, err := r.Route(&c)
		if want := "tp:" + c.Method + ":" + string(c.Params); err != nil || got != want {
			t.Errorf("Route(%s%s) = %q, %v; want %q", c.Method, c.Params, got, err, want)
		}
	}
	if f := h.Stats.Fallbacks.Load(); f != 0 {
		t.Errorf("%d fallbacks", f)
	}
}

func TestRouterFallsBackWhileThePluginIsDown(t *testing.T) {
	h := startHost(t, Config{Path: testPluginBin, Deadline: time.Second, MinBackoff: 10 * time.Millisecond})
	r := NewRouter(h, "testroute", fixedRouter("fallback"))
	c := &dispatch.Call{Method: "f", Params: []byte(`[1]`)}
	pid := h.pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	got, err := r.Route(c)
	if err != nil || got != "fallback" {
		t.Errorf("Route with the plugin dead = %q, %v; want the fallback's", got, err)
	}
	if h.Stats.Fallbacks.Load() == 0 {
		t.Errorf("fallback not counted: %s", statsString(h))
	}
	eventually(t, 20*time.Second, func() bool { return h.Stats.Restarts.Load() >= 1 && h.Healthy() },
		func() string { return "no restart: " + statsString(h) })
	if got, err := r.Route(c); err != nil || got != "tp:f:[1]" {
		t.Errorf("Route after the restart = %q, %v; want the plugin's", got, err)
	}
}

func TestRouterFallsBackWhenTheRoutingFunctionFails(t *testing.T) {
	ctl := newControl(t, "route-error")
	path := wrap(t, testPluginBin, "badroute", ctl.env())
	h := startHost(t, Config{Path: path, Deadline: time.Second, MinBackoff: 10 * time.Millisecond})
	r := NewRouter(h, "testroute", fixedRouter("fallback"))
	c := &dispatch.Call{Method: "f", Params: []byte(`[1]`)}
	for range failuresToRestart {
		if got, err := r.Route(c); err != nil || got != "fallback" {
			t.Errorf("Route = %q, %v; want the fallback's", got, err)
		}
	}
	if f := h.Stats.Failures.Load(); f != failuresToRestart {
		t.Errorf("failures = %d, want %d", f, failuresToRestart)
	}
	// failuresToRestart failures in a row restart the plugin.
	eventually(t, 20*time.Second, func() bool { return h.Stats.Restarts.Load() >= 1 && h.Healthy() },
		func() string { return "no restart: " + statsString(h) })
	ctl.set(t, "ok")
	if got, err := r.Route(c); err != nil || got != "tp:f:[1]" {
		t.Errorf("Route = %q, %v; want the plugin's", got, err)
	}
}

func TestRouterDeadline(t *testing.T) {
	path := wrap(t, testPluginBin, "slowroute", "TESTPLUGIN_MODE=sleep", "TESTPLUGIN_SLEEP=20s")
	h := startHost(t, Config{Path: path, Deadline: 30 * time.Millisecond})
	r := NewRouter(h, "testroute", fixedRouter("fallback"))
	start := time.Now()
	got, err := r.Route(&dispatch.Call{Method: "f"})
	took := time.Since(start)
	if err != nil || got != "fallback" {
		t.Errorf("Route = %q, %v; want the fallback's", got, err)
	}
	if took > 2*time.Second {
		t.Errorf("Route took %v with a deadline of 30ms", took)
	}
	if h.Stats.Failures.Load() != 1 {
		t.Errorf("%s", statsString(h))
	}
}

func TestRouterUnknownName(t *testing.T) {
	h := startHost(t, Config{Path: testPluginBin, Deadline: time.Second})
	r := NewRouter(h, "nosuch", fixedRouter("fallback"))
	if got, err := r.Route(&dispatch.Call{Method: "f"}); err != nil || got != "fallback" {
		t.Errorf("Route = %q, %v; want the fallback's", got, err)
	}
}
