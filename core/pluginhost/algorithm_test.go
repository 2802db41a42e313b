package pluginhost

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/sdk/dispatch"
)

var symbols = []string{"IBM", "MSFT", "AAPL", "GOOG", "KX", "ORCL", "SAP", "INTC", "AMD", "NVDA"}

// TestAlgorithmWithEngine routes calls through each plugin algorithm in a
// real engine: every call is answered, exactly once, and the plugin (not
// the fallback) decided them.
func TestAlgorithmWithEngine(t *testing.T) {
	for _, tc := range []struct {
		bin, algorithm string
		backlog        int
	}{
		{testPluginBin, "least", 0},
		{resumeBin, "resume", 16},
		{boundedHashBin, "boundedhash", 8},
	} {
		t.Run(tc.algorithm, func(t *testing.T) {
			h := startHost(t, Config{Path: tc.bin, Deadline: time.Second})
			r := newRig(t, h, rigOpts{algorithm: tc.algorithm, backlog: tc.backlog, servants: 4, slots: 2})
			r.submit(300, symbols...)
			r.waitAnswered(20 * time.Second)
			r.checkExactlyOnce()
			if h.Stats.Decisions.Load() == 0 {
				t.Errorf("the plugin decided nothing: %s", statsString(h))
			}
			if n := r.fb.assigned.Load(); n != 0 {
				t.Errorf("the fallback decided %d calls: %s", n, statsString(h))
			}
			if f := h.Stats.Failures.Load(); f != 0 {
				t.Errorf("%d failures: %s", f, statsString(h))
			}
			used := 0
			for _, f := range r.servants {
				if f.sent.Load() > 0 {
					used++
				}
			}
			if used < 2 {
				t.Errorf("only %d of 4 servants used", used)
			}
			if st := r.e.Stats(); st.Rejected != 0 {
				t.Errorf("the plan refused %d of the plugin's decisions", st.Rejected)
			}
			t.Logf("%s; %d calls answered", statsString(h), r.rec.answered.Load())
		})
	}
}

// TestBatching checks that under load the plugin decides many calls per
// round trip: with slots freeing one at a time and many calls waiting, the
// calls waiting while a batch is decided go together in the next one.
func TestBatching(t *testing.T) {
	h := startHost(t, Config{Path: testPluginBin, Deadline: time.Second})
	r := newRig(t, h, rigOpts{servants: 4, slots: 4})
	const n = 2000
	start := time.Now()
	r.submit(n, symbols...)
	r.waitAnswered(30 * time.Second)
	took := time.Since(start)
	r.checkExactlyOnce()
	decisions, calls := h.Stats.Decisions.Load(), h.Stats.Calls.Load()
	t.Logf("%d calls in %v: %d Assign RPCs carrying %d calls (%.1f calls per batch, %.1f answered calls per RPC); fallback decided %d",
		n, took.Round(time.Millisecond), decisions, calls, float64(calls)/float64(decisions), float64(n)/float64(decisions), r.fb.assigned.Load())
	if decisions == 0 {
		t.Fatal("no decisions")
	}
	if ratio := float64(calls) / float64(decisions); ratio <= 5 {
		t.Errorf("Stats.Calls/Stats.Decisions = %.2f, want > 5", ratio)
	}
	if ratio := float64(n) / float64(decisions); ratio <= 5 {
		t.Errorf("answered calls per Assign RPC = %.2f, want > 5", ratio)
	}
	if fb := r.fb.assigned.Load(); fb != 0 {
		t.Errorf("the fallback decided %d calls", fb)
	}
}

// TestIdleCallDecidedPromptly measures how long one call on an idle
// engine waits for the plugin's decision (submit to sent to its servant).
func TestIdleCallDecidedPromptly(t *testing.T) {
	h := startHost(t, Config{Path: testPluginBin, Deadline: time.Second})
	r := newRig(t, h, rigOpts{servants: 4, slots: 1})
	var lat []time.Duration
	for i := range 50 {
		start := time.Now()
		c := r.submit(1, symbols[i%len(symbols)])[0]
		r.waitAnswered(5 * time.Second)
		at, ok := r.sentAt(c)
		if !ok {
			t.Fatalf("call %d answered but never sent", i)
		}
		lat = append(lat, at.Sub(start))
	}
	r.checkExactlyOnce()
	if fb := r.fb.assigned.Load(); fb != 0 {
		t.Errorf("the fallback decided %d calls", fb)
	}
	if d := h.Stats.Decisions.Load(); d != 50 {
		t.Errorf("%d decisions for 50 calls one at a time, want 50", d)
	}
	slices.Sort(lat)
	t.Logf("idle call, submit to sent through the plugin: min %v, median %v, p90 %v, max %v (race detector: %v)",
		lat[0], lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)-1], raceEnabled)
}

// TestDeadlineFallbackAndRestart: a plugin that does not answer within the
// deadline leaves its calls to the fallback, and after failuresToRestart
// failures in a row it is replaced; once it behaves again it decides again.
func TestDeadlineFallbackAndRestart(t *testing.T) {
	ctl := newControl(t, "sleep")
	path := wrap(t, testPluginBin, "sleepy", ctl.env(), "TESTPLUGIN_SLEEP=20s")
	h := startHost(t, Config{Path: path, Deadline: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	first := h.pid()
	r := newRig(t, h, rigOpts{servants: 4, slots: 4})
	start := time.Now()
	r.submit(60, symbols...)
	r.waitAnswered(20 * time.Second)
	t.Logf("60 calls answered in %v with a sleeping plugin: %s", time.Since(start).Round(time.Millisecond), statsString(h))
	r.checkExactlyOnce()
	if h.Stats.Failures.Load() == 0 || h.Stats.Fallbacks.Load() == 0 {
		t.Errorf("missed deadlines not counted: %s", statsString(h))
	}
	if r.fb.assigned.Load() != 60 {
		t.Errorf("fallback decided %d of 60 calls", r.fb.assigned.Load())
	}
	eventually(t, 20*time.Second, func() bool { return h.Stats.Restarts.Load() >= 1 && h.Healthy() },
		func() string { return "no restart: " + statsString(h) })
	if pid := h.pid(); pid == first {
		t.Errorf("still plugin process %d after a restart", pid)
	}
	waitGone(t, first)

	// Behaving again, it decides again.
	ctl.set(t, "ok")
	eventually(t, 20*time.Second, func() bool { return h.Healthy() }, func() string { return statsString(h) })
	fb := r.fb.assigned.Load()
	sent := r.sent()
	r.submit(40, symbols...)
	r.waitAnswered(20 * time.Second)
	r.checkExactlyOnce()
	byPlugin := r.sent() - sent - (r.fb.assigned.Load() - fb)
	if byPlugin == 0 {
		t.Errorf("the restarted plugin decided none of 40 calls: %s", statsString(h))
	}
	t.Logf("after the restart the plugin decided %d of 40 calls", byPlugin)
}

// TestCrashMidBatch: the plugin exits in the middle of a batch while calls
// wait; every call is still answered exactly once, the plugin is restarted
// and decides again.
func TestCrashMidBatch(t *testing.T) {
	ctl := newControl(t, "")
	path := wrap(t, testPluginBin, "crashy", ctl.env(), "TESTPLUGIN_MODE=crash-after-5")
	h := startHost(t, Config{Path: path, Deadline: time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	first := h.pid()
	r := newRig(t, h, rigOpts{servants: 4, slots: 4})
	r.submit(1000, symbols...)
	r.waitAnswered(30 * time.Second)
	r.checkExactlyOnce()
	eventually(t, 20*time.Second, func() bool { return h.Stats.Restarts.Load() >= 1 },
		func() string { return "no restart: " + statsString(h) })
	waitGone(t, first)
	if h.Stats.Failures.Load() == 0 {
		t.Errorf("the crash was not counted as a failure: %s", statsString(h))
	}
	t.Logf("1000 calls: %s; fallback decided %d", statsString(h), r.fb.assigned.Load())

	ctl.set(t, "ok")
	r.pluginDecidesAgain(h)
}

// pluginDecidesAgain submits calls in small waves until the plugin (not
// the fallback) decides some of them.
func (r *rig) pluginDecidesAgain(h *Host) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fb, sent := r.fb.assigned.Load(), r.sent()
		r.submit(10, symbols...)
		r.waitAnswered(20 * time.Second)
		if r.sent()-sent-(r.fb.assigned.Load()-fb) > 0 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the plugin does not decide again: %s", statsString(h))
		}
	}
	r.checkExactlyOnce()
}

// TestKilledWithCallsWaiting kills the plugin process while calls wait for
// busy servants; once they free, every call is answered exactly once, the
// plugin is restarted in a new process and decides again.
func TestKilledWithCallsWaiting(t *testing.T) {
	h := startHost(t, Config{Path: testPluginBin, Deadline: time.Second, MinBackoff: 10 * time.Millisecond})
	r := newRig(t, h, rigOpts{servants: 2, slots: 1, held: true})
	r.submit(30, symbols...)
	eventually(t, 5*time.Second, func() bool { return r.sent() == 2 }, func() string { return "the first two calls were not sent" })
	pid := h.pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	for _, f := range r.servants {
		f.release()
	}
	r.waitAnswered(20 * time.Second)
	r.checkExactlyOnce()
	eventually(t, 20*time.Second, func() bool { return h.Stats.Restarts.Load() >= 1 && h.Healthy() },
		func() string { return "no restart: " + statsString(h) })
	if h.pid() == pid {
		t.Error("same pid after restart")
	}
	t.Logf("%s; fallback decided %d", statsString(h), r.fb.assigned.Load())
	r.pluginDecidesAgain(h)
}

// TestGarbageDecisions: decisions naming calls and servants that do not
// exist are failures; the calls are answered through the fallback.
func TestGarbageDecisions(t *testing.T) {
	path := wrap(t, testPluginBin, "garbled", "TESTPLUGIN_MODE=garbage")
	h := startHost(t, Config{Path: path, Deadline: time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	r := newRig(t, h, rigOpts{servants: 4, slots: 2})
	r.submit(100, symbols...)
	r.waitAnswered(20 * time.Second)
	r.checkExactlyOnce()
	if h.Stats.Failures.Load() == 0 {
		t.Errorf("garbage not counted as failure: %s", statsString(h))
	}
	if r.fb.assigned.Load() != 100 {
		t.Errorf("the fallback decided %d of 100 calls", r.fb.assigned.Load())
	}
	eventually(t, 20*time.Second, func() bool { return h.Stats.Restarts.Load() >= 1 },
		func() string { return "not restarted: " + statsString(h) })
	t.Logf("%s", statsString(h))
}

// TestGarbageFallsBackInTheSameRound: after a garbage answer the calls of
// that batch are decided by the fallback in the round that finds it, as
// after an error or a missed deadline; they do not wait for another round
// trip to the plugin.
func TestGarbageFallsBackInTheSameRound(t *testing.T) {
	for _, mode := range []string{"garbage", "crash-after-0"} {
		t.Run(mode, func(t *testing.T) {
			path := wrap(t, testPluginBin, mode, "TESTPLUGIN_MODE="+mode)
			h := startHost(t, Config{Path: path, Deadline: time.Second})
			fb := &countingFallback{inner: &algo.Least{}}
			a := NewAlgorithm(h, "least", 0, fb)
			woken := make(chan struct{}, 1)
			a.SetWaker(func() {
				select {
				case woken <- struct{}{}:
				default:
				}
			})
			servants := []*dispatch.Servant{{Name: "s1", Slots: 1, Healthy: true}, {Name: "s2", Slots: 1, Healthy: true}}
			calls := []*dispatch.Call{{Method: "f", Route: "a"}, {Method: "f", Route: "b"}}
			var p dispatch.Plan
			p.Reset(calls, servants, time.Now())
			a.Assign(calls, servants, &p)
			if len(p.Assignments()) != 0 {
				t.Fatalf("decided before the plugin answered: %v", p.Assignments())
			}
			select {
			case <-woken:
			case <-time.After(10 * time.Second):
				t.Fatal("the plugin's answer never woke the engine")
			}
			p.Reset(calls, servants, time.Now())
			a.Assign(calls, servants, &p)
			if h.Stats.Failures.Load() != 1 {
				t.Errorf("failures = %d, want 1", h.Stats.Failures.Load())
			}
			if len(p.Assignments()) != 2 {
				t.Errorf("the round that found the failed batch assigned %d of 2 calls (fallback rounds %d): the calls wait for another round trip",
					len(p.Assignments()), fb.rounds.Load())
			}
		})
	}
}

// TestShippedPluginsKeepTheContract runs the shipped plugins, through the
// Algorithm adapter, over random rounds and checks every applied decision:
// never to an unavailable servant, never beyond free slots plus backlog
// room, never to a servant that does not serve the call's method.
func TestShippedPluginsKeepTheContract(t *testing.T) {
	for _, tc := range []struct {
		bin, algorithm string
		backlog        int
	}{
		{resumeBin, "resume", 16},
		{boundedHashBin, "boundedhash", 8},
		{testPluginBin, "least", 0},
	} {
		t.Run(tc.algorithm, func(t *testing.T) {
			h := startHost(t, Config{Path: tc.bin, Deadline: 5 * time.Second})
			fb := &countingFallback{inner: &algo.Least{}}
			a := NewAlgorithm(h, tc.algorithm, tc.backlog, fb)
			woken := make(chan struct{}, 1)
			a.SetWaker(func() {
				select {
				case woken <- struct{}{}:
				default:
				}
			})
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.algorithm))))
			now := time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)
			total := 0
			for round := range 150 {
				now = now.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
				servants := randomViews(rng, 1+rng.IntN(6))
				for _, s := range servants {
					if rng.IntN(3) == 0 {
						s.Backlog = rng.IntN(tc.backlog + 1)
					}
				}
				calls := randomCalls(rng, rng.IntN(12))
				before := cloneViews(servants)
				var p dispatch.Plan
				p.Reset(calls, servants, now)
				p.MaxBacklog = a.BacklogLimit()
				a.Assign(calls, servants, &p) // sends a batch
				a.mu.Lock()
				sent := a.inFlight
				a.mu.Unlock()
				if !sent {
					continue // nothing could move
				}
				select {
				case <-woken:
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: no answer from the plugin", round)
				}
				p.Reset(calls, servants, now)
				p.MaxBacklog = a.BacklogLimit()
				a.Assign(calls, servants, &p) // applies it, sends the rest
				if err := checkPlan(calls, before, &p); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				total += len(p.Assignments())
				for _, as := range p.Assignments() {
					a.Done(calls[as.Call], servants[as.Servant], time.Duration(1+rng.IntN(5))*time.Millisecond, true)
				}
				// Let a batch sent with the rest come back before the next round.
				a.mu.Lock()
				sent = a.inFlight
				a.mu.Unlock()
				if sent {
					<-woken
					p.Reset(nil, servants, now)
					a.Assign(nil, servants, &p)
				}
			}
			if total == 0 {
				t.Error("no call assigned in 150 random rounds")
			}
			if fb.assigned.Load() != 0 || h.Stats.Failures.Load() != 0 {
				t.Errorf("fallback decided %d; %s", fb.assigned.Load(), statsString(h))
			}
			t.Logf("%d calls assigned; %s", total, statsString(h))
		})
	}
}

// TestRouterWithEngine: the engine derives routing strings through the
// plugin's routing function.
func TestRouterWithEngine(t *testing.T) {
	h := startHost(t, Config{Path: testPluginBin, Deadline: time.Second})
	r := newRig(t, h, rigOpts{router: NewRouter(h, "testroute", fixedRouter("fallback"))})
	c := r.newCall(`["IBM",1]`)
	r.e.Submit(c)
	r.waitAnswered(5 * time.Second)
	r.checkExactlyOnce()
	if c.Route != `tp:f:["IBM",1]` {
		t.Errorf("route = %q, want the plugin's", c.Route)
	}
}

// TestFrozenPlugin: a plugin process that stops responding altogether
// (SIGSTOP: its gRPC server cannot even take go-plugin's shutdown request)
// still has its calls answered through the fallback, is replaced by a new
// process, and Close returns. The test runs the scenario on another
// goroutine and, should it hang, kills the frozen process to unwind it.
func TestFrozenPlugin(t *testing.T) {
	// With backlog room some servant can always take a call, so a new
	// batch goes to the plugin in the very round that finds the last one
	// failed.
	path := wrap(t, testPluginBin, "freezing", "TESTPLUGIN_BACKLOG=100")
	h, err := Start(Config{Path: path, Deadline: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	frozen := h.pid()
	t.Cleanup(func() { syscall.Kill(frozen, syscall.SIGKILL) })
	r := newRig(t, h, rigOpts{servants: 2, slots: 2, backlog: 100})
	if err := syscall.Kill(frozen, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	steps := make(chan string, 8)
	go func() {
		r.submit(20, symbols...)
		steps <- "submitted"
		for r.rec.answered.Load() < 20 {
			time.Sleep(2 * time.Millisecond)
		}
		steps <- "answered"
		for h.Stats.Restarts.Load() < 1 {
			time.Sleep(2 * time.Millisecond)
		}
		steps <- "restarted"
		h.Close()
		steps <- "closed"
	}()
	var done []string
	timeout := time.After(8 * time.Second)
	for len(done) < 4 {
		select {
		case s := <-steps:
			done = append(done, s)
		case <-timeout:
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("stuck after %v with the plugin process frozen (%s; fallback decided %d): killing it; goroutines:\n%s",
				done, statsString(h), r.fb.assigned.Load(), stacksOf(buf, "pluginhost"))
			syscall.Kill(frozen, syscall.SIGKILL)
			timeout = time.After(15 * time.Second)
			for len(done) < 4 {
				select {
				case s := <-steps:
					done = append(done, s)
				case <-timeout:
					t.Fatalf("still stuck after %v once the frozen process was killed", done)
				}
			}
		}
	}
	r.checkExactlyOnce()
	waitGone(t, frozen)
	t.Logf("%s; fallback decided %d", statsString(h), r.fb.assigned.Load())
}

// stacksOf returns the goroutine stacks in a runtime.Stack dump that
// mention pkg.
func stacksOf(dump []byte, pkg string) string {
	var out []string
	for _, g := range strings.Split(string(dump), "\n\n") {
		if strings.Contains(g, pkg+".") && !strings.Contains(g, "TestFrozenPlugin") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
