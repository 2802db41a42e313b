package pluginhost

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

func TestStartManifestListsWhatThePluginProvides(t *testing.T) {
	for _, tc := range []struct {
		bin        string
		algorithms []plugin.AlgorithmInfo
		routes     []plugin.RouteInfo
	}{
		{testPluginBin,
			[]plugin.AlgorithmInfo{{Name: "least", Summary: "core/algo's least, with faults on demand"}},
			[]plugin.RouteInfo{{Name: "testroute", Summary: `"tp:" + method + ":" + params`}}},
		{resumeBin,
			[]plugin.AlgorithmInfo{{Name: "resume", Backlog: 16,
				Summary: "zc.resumelb: skilled servant with the best score per backlog, else least recently used"}},
			nil},
		{boundedHashBin,
			[]plugin.AlgorithmInfo{{Name: "boundedhash", Backlog: 8,
				Summary: "consistent hashing of the routing string with loads bounded to (1+ε)×average"}},
			nil},
	} {
		name := filepath.Base(tc.bin)
		t.Run(name, func(t *testing.T) {
			h, err := Start(Config{Path: tc.bin})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if h.Name != name {
				t.Errorf("Name = %q, want %q", h.Name, name)
			}
			m := h.Manifest()
			if m.Protocol != plugin.ProtocolVersion {
				t.Errorf("protocol %d, want %d", m.Protocol, plugin.ProtocolVersion)
			}
			if fmt.Sprint(m.Algorithms) != fmt.Sprint(tc.algorithms) {
				t.Errorf("algorithms = %+v\nwant %+v", m.Algorithms, tc.algorithms)
			}
			if fmt.Sprint(m.Routes) != fmt.Sprint(tc.routes) {
				t.Errorf("routes = %+v\nwant %+v", m.Routes, tc.routes)
			}
			if !h.Healthy() {
				t.Error("not healthy after Start")
			}
			if h.Deadline() != DefaultDeadline {
				t.Errorf("Deadline() = %v, want the default %v", h.Deadline(), DefaultDeadline)
			}
			pid := h.pid()
			if pid == 0 || !alive(pid) {
				t.Fatalf("plugin process %d not running", pid)
			}
			h.Close()
			waitGone(t, pid)
		})
	}
}

func TestStartRefusesAnotherProtocolVersion(t *testing.T) {
	_, err := Start(Config{Path: oldPluginBin})
	if err == nil {
		t.Fatal("Start accepted a plugin built for protocol version 1")
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`\b1\b`),                                       // the plugin's version
		regexp.MustCompile(fmt.Sprintf(`\b%d\b`, plugin.ProtocolVersion)), // mserve's
		regexp.MustCompile(`rebuild`),
		regexp.MustCompile(regexp.QuoteMeta(oldPluginBin)),
	} {
		if !want.MatchString(msg) {
			t.Errorf("error %q does not match %s", msg, want)
		}
	}
	if left := waitNoChildren(5 * time.Second); len(left) > 0 {
		t.Errorf("refused plugin left running: %v", left)
	}
}

func TestStartRefusesAPluginThatProvidesNothing(t *testing.T) {
	path := wrap(t, testPluginBin, "emptyplugin", "TESTPLUGIN_MODE=empty")
	_, err := Start(Config{Path: path})
	if err == nil {
		t.Fatal("Start accepted a plugin that provides nothing")
	}
	if !strings.Contains(err.Error(), "provides no algorithm and no routing function") || !strings.Contains(err.Error(), path) {
		t.Errorf("error = %q", err)
	}
	if left := waitNoChildren(5 * time.Second); len(left) > 0 {
		t.Errorf("refused plugin left running: %v", left)
	}
}

func TestStartRefusesWhatIsNotAPlugin(t *testing.T) {
	dir := t.TempDir()
	notPlugin := filepath.Join(dir, "notplugin")
	if err := os.WriteFile(notPlugin, []byte("#!/bin/sh\necho 'I am not a plugin'\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{notPlugin, filepath.Join(dir, "missing")} {
		start := time.Now()
		_, err := Start(Config{Path: path})
		if err == nil {
			t.Fatalf("Start(%s) succeeded", path)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the plugin", err)
		}
		t.Logf("%s: %v (after %v)", filepath.Base(path), err, time.Since(start).Round(time.Millisecond))
	}
}

// TestPluginOutputReachesTheLog checks that what a plugin writes — its
// standard output and error (which go-plugin relays), lines written to the
// process's real stderr, the standard log package and hclog — ends up in
// mserve's log, tagged with the plugin's name.
func TestPluginOutputReachesTheLog(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	path := wrap(t, testPluginBin, "chatty", "TESTPLUGIN_MODE=log")
	h := startHost(t, Config{Path: path, Log: log})
	r := NewRouter(h, "testroute", dispatch.RouterFunc(func(*dispatch.Call) (string, error) { return "fallback", nil }))
	if got, err := r.Route(&dispatch.Call{Method: "f"}); err != nil || got != "logged" {
		t.Fatalf("Route = %q, %v", got, err)
	}
	lineOf := func(e observer.LoggedEntry) string {
		if s, ok := e.ContextMap()["line"].(string); ok {
			return s
		}
		return e.Message
	}
	markers := []struct {
		marker string
		level  zapcore.Level // the least level it must be logged at
	}{
		{"stderr-piped", zapcore.InfoLevel}, // os.Stderr inside Serve: relayed over gRPC
		{"stdout-piped", zapcore.InfoLevel}, // os.Stdout inside Serve: relayed over gRPC
		{"hclog-warn", zapcore.WarnLevel},   // an hclog JSON line on the real stderr
		{"stderr-raw", zapcore.InfoLevel},   // a plain line on the real stderr
		{"std-log", zapcore.InfoLevel},      // the standard log package (real stderr)
	}
	deadline := time.Now().Add(5 * time.Second)
	missing := markers
	for len(missing) > 0 && time.Now().Before(deadline) {
		missing = missing[:0:0]
		for _, m := range markers {
			ok := false
			for _, e := range logs.All() {
				if strings.Contains(lineOf(e), "testplugin marker "+m.marker) {
					ok = true
				}
			}
			if !ok {
				missing = append(missing, m)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, m := range markers {
		var got []observer.LoggedEntry
		for _, e := range logs.All() {
			if strings.Contains(lineOf(e), "testplugin marker "+m.marker) {
				got = append(got, e)
			}
		}
		if len(got) == 0 {
			t.Errorf("%s: the plugin's line never reached mserve's log", m.marker)
			continue
		}
		if len(got) > 1 {
			t.Errorf("%s: logged %d times", m.marker, len(got))
		}
		e := got[0]
		if p := e.ContextMap()["plugin"]; p != "chatty" {
			t.Errorf("%s: logged with plugin=%v, want chatty", m.marker, p)
		}
		if e.Level < m.level {
			t.Errorf("%s: logged at %v, want at least %v: %q", m.marker, e.Level, m.level, lineOf(e))
		}
	}
	if t.Failed() {
		for _, e := range logs.All() {
			t.Logf("log: %v %s %v", e.Level, e.Message, e.ContextMap())
		}
	}
}

// TestCloseWhileDeciding: Close stops a plugin that is in the middle of a
// decision, promptly, and leaves no process behind.
func TestCloseWhileDeciding(t *testing.T) {
	path := wrap(t, testPluginBin, "stuck", "TESTPLUGIN_MODE=sleep", "TESTPLUGIN_SLEEP=60s")
	h, err := Start(Config{Path: path, Deadline: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pid := h.pid()
	a := NewAlgorithm(h, "least", 0, fixedAlgorithm{})
	servants := []*dispatch.Servant{{Name: "s1", Slots: 1, Healthy: true}}
	calls := []*dispatch.Call{{Method: "f"}}
	var p dispatch.Plan
	p.Reset(calls, servants, time.Now())
	a.Assign(calls, servants, &p)
	if h.Stats.Decisions.Load() != 1 {
		t.Fatalf("no batch sent: %s", statsString(h))
	}
	start := time.Now()
	h.Close()
	took := time.Since(start)
	t.Logf("Close took %v", took)
	if took > 5*time.Second {
		t.Errorf("Close took %v", took)
	}
	waitGone(t, pid)
}

// fixedAlgorithm decides nothing.
type fixedAlgorithm struct{}

func (fixedAlgorithm) Assign([]*dispatch.Call, []*dispatch.Servant, *dispatch.Plan) {}

// TestPluginPanicIsLogged: a plugin that panics has its panic message and
// stack in mserve's log as errors, tagged with its name.
func TestPluginPanicIsLogged(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	path := wrap(t, testPluginBin, "panicky", "TESTPLUGIN_MODE=panic-after-0")
	h := startHost(t, Config{Path: path, Log: log, Deadline: 5 * time.Second})
	pid := h.pid()
	a := NewAlgorithm(h, "least", 0, fixedAlgorithm{})
	servants := []*dispatch.Servant{{Name: "s1", Slots: 1, Healthy: true}}
	calls := []*dispatch.Call{{Method: "f"}}
	var p dispatch.Plan
	p.Reset(calls, servants, time.Now())
	a.Assign(calls, servants, &p)
	waitGone(t, pid)
	eventually(t, 5*time.Second, func() bool {
		for _, e := range logs.All() {
			line, _ := e.ContextMap()["line"].(string)
			if strings.Contains(line, "panic: testplugin: panic in batch 1") && e.Level >= zapcore.ErrorLevel &&
				e.ContextMap()["plugin"] == "panicky" {
				return true
			}
		}
		return false
	}, func() string {
		var b strings.Builder
		for _, e := range logs.All() {
			fmt.Fprintf(&b, "\n%v %s %v", e.Level, e.Message, e.ContextMap())
		}
		return "the panic is not in the log as an error:" + b.String()
	})
	eventually(t, 10*time.Second, func() bool { return h.Stats.Restarts.Load() >= 1 }, func() string { return statsString(h) })
}

// TestRestartBackoff: while the replacement process cannot start (here it
// provides nothing, unlike the plugin at launch), restarts are retried
// with exponential backoff up to MaxBackoff; once it can, the plugin is
// back.
func TestRestartBackoff(t *testing.T) {
	log, logs := testkit.Observed(zapcore.DebugLevel)
	ctl := newControl(t, "")
	path := wrap(t, testPluginBin, "flaky", ctl.env())
	h := startHost(t, Config{Path: path, Log: log, MinBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	ctl.set(t, "empty")
	pid := h.pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	failedRestarts := func() []observer.LoggedEntry {
		return logs.FilterMessage("plugin restart failed; retrying").All()
	}
	eventually(t, 20*time.Second, func() bool { return len(failedRestarts()) >= 5 },
		func() string { return fmt.Sprintf("%d failed restarts logged", len(failedRestarts())) })
	if h.Healthy() {
		t.Error("healthy while no restart succeeded")
	}
	var backoffs []time.Duration
	for _, e := range failedRestarts()[:5] {
		d, _ := e.ContextMap()["backoff"].(time.Duration)
		backoffs = append(backoffs, d)
		if err, _ := e.ContextMap()["error"].(string); !strings.Contains(err, "provides") {
			t.Errorf("restart error %q does not say why", err)
		}
	}
	want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 80 * time.Millisecond, 80 * time.Millisecond}
	if fmt.Sprint(backoffs) != fmt.Sprint(want) {
		t.Errorf("backoffs logged %v, want %v", backoffs, want)
	}
	ctl.set(t, "ok")
	eventually(t, 20*time.Second, func() bool { return h.Healthy() && h.Stats.Restarts.Load() == 1 },
		func() string { return statsString(h) })
	if left := children(); len(left) != 1 {
		t.Errorf("plugin processes running: %v, want just the one", left)
	}
}
