package pluginhost

// Helpers for the plugin host tests: TestMain builds real plugin binaries
// (the fault-injecting testdata/testplugin, testdata/oldplugin built for
// another protocol version, and the shipped plugins/resume and
// plugins/boundedhash); an engine rig with fake servants; process checks
// through /proc.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Paths of the binaries TestMain builds.
var (
	testPluginBin  string
	oldPluginBin   string
	resumeBin      string
	boundedHashBin string
)

func TestMain(m *testing.M) { os.Exit(buildAndRun(m)) }

func buildAndRun(m *testing.M) int {
	// Plugins inherit this process's environment: start them from a clean
	// one, and keep the resume plugin from writing to the user's cache.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "TESTPLUGIN_CPUPROFILE" || k == "TESTPLUGIN_PROFILE_FOR" {
			continue // see bench_test.go
		}
		if strings.HasPrefix(k, "MSERVE_") || strings.HasPrefix(k, "TESTPLUGIN_") {
			os.Unsetenv(k)
		}
	}
	os.Setenv("MSERVE_RESUME_FILE", "none")
	if raceEnabled {
		// Race-enabled binaries linger a second at exit by default, which
		// would slow every plugin stop and restart.
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	dir, err := os.MkdirTemp("", "mserve-pluginhost-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pluginhost tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	testPluginBin = filepath.Join(dir, "testplugin")
	oldPluginBin = filepath.Join(dir, "oldplugin")
	resumeBin = filepath.Join(dir, "resume")
	boundedHashBin = filepath.Join(dir, "boundedhash")
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled { // a test run with -race also checks the plugins it starts
		args = append(args, "-race")
	}
	args = append(args, "./testdata/testplugin", "./testdata/oldplugin", "../../plugins/resume", "../../plugins/boundedhash")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "pluginhost tests: go %s: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	code := m.Run()
	// Every plugin process a test started must be gone by now.
	if left := waitNoChildren(5 * time.Second); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "pluginhost tests: plugin processes left running: %v\n", left)
		return 1
	}
	return code
}

// raceEnabled reports whether this test binary was built with -race.
var raceEnabled = func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}()

// wrap returns the path of a script that runs bin with env added to its
// environment, so that each test chooses its plugin's behaviour without
// touching this process's environment. The script execs bin: the plugin
// process is the script's process.
func wrap(t testing.TB, bin, name string, env ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "%s='%s'\nexport %s\n", k, v, k)
	}
	fmt.Fprintf(&b, "exec '%s' \"$@\"\n", bin)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// control is a file the test plugin reads on every call: its content, when
// not empty, is the plugin's mode.
type control string

func newControl(t testing.TB, mode string) control {
	t.Helper()
	c := control(filepath.Join(t.TempDir(), "control"))
	c.set(t, mode)
	return c
}

func (c control) set(t testing.TB, mode string) {
	t.Helper()
	// Write and rename, so the plugin never reads half a mode.
	tmp := string(c) + ".tmp"
	if err := os.WriteFile(tmp, []byte(mode), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, string(c)); err != nil {
		t.Fatal(err)
	}
}

func (c control) env() string { return "TESTPLUGIN_CONTROL=" + string(c) }

// startHost starts the plugin at path and closes it when the test ends.
func startHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	h, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Path, err)
	}
	t.Cleanup(h.Close)
	return h
}

// pid returns the process id of the plugin process running now, or 0.
func (h *Host) pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client == nil {
		return 0
	}
	if rc := h.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// children returns the live processes whose parent is this process.
func children() []int {
	me := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == me {
			out = append(out, pid)
		}
	}
	return out
}

func waitNoChildren(within time.Duration) []int {
	deadline := time.Now().Add(within)
	for {
		left := children()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually polls cond every few milliseconds until it holds, failing
// the test with what() after within.
func eventually(t testing.TB, within time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitGone(t testing.TB, pid int) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool { return !alive(pid) },
		func() string { return fmt.Sprintf("plugin process %d still running", pid) })
}

func statsString(h *Host) string {
	s := &h.Stats
	return fmt.Sprintf("decisions=%d calls=%d fallbacks=%d failures=%d restarts=%d healthy=%v",
		s.Decisions.Load(), s.Calls.Load(), s.Fallbacks.Load(), s.Failures.Load(), s.Restarts.Load(), h.Healthy())
}

// ---------------------------------------------------------------------------
// An engine with fake servants

// fakeServant is a servant link that answers each call it is sent on its
// own goroutine, at once (auto) or when the test says (held).
type fakeServant struct {
	name string
	s    *engine.Servant
	in   chan *engine.Call
	hold atomic.Bool
	kick chan struct{}
	sent atomic.Int64
	// sentAt is when each call was handed to this link.
	mu     sync.Mutex
	sentAt map[*engine.Call]time.Time
}

func (f *fakeServant) Send(c *engine.Call, _ *wire.Flusher) error {
	f.mu.Lock()
	f.sentAt[c] = time.Now()
	f.mu.Unlock()
	f.sent.Add(1)
	f.in <- c
	return nil
}

func (f *fakeServant) Cancel(*engine.Call) {}

func (f *fakeServant) run(stop <-chan struct{}) {
	var held []*engine.Call
	for {
		select {
		case <-stop:
			return
		case c := <-f.in:
			held = append(held, c)
		case <-f.kick:
		}
		if f.hold.Load() {
			continue
		}
		for _, c := range held {
			f.s.Done(c, &jsonrpc.Response{Result: []byte(strconv.Quote(f.name))}, nil)
		}
		held = held[:0]
	}
}

// release lets a held servant answer what it holds and what comes.
func (f *fakeServant) release() {
	f.hold.Store(false)
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// recorder counts each call's answers.
type recorder struct {
	mu       sync.Mutex
	answers  map[*engine.Call]int
	errs     map[*engine.Call]string
	answered atomic.Int64
	at       map[*engine.Call]time.Time
}

func newRecorder() *recorder {
	return &recorder{answers: map[*engine.Call]int{}, errs: map[*engine.Call]string{}, at: map[*engine.Call]time.Time{}}
}

func (r *recorder) Answer(c *engine.Call, a *engine.Answer) {
	now := time.Now()
	r.mu.Lock()
	r.answers[c]++
	r.at[c] = now
	if a.Err != nil {
		r.errs[c] = a.Err.Message
	} else if a.ServantErr != nil {
		r.errs[c] = string(a.ServantErr)
	}
	r.mu.Unlock()
	r.answered.Add(1)
}

// countingFallback is the fallback algorithm, counting what it decides.
type countingFallback struct {
	inner    dispatch.Algorithm
	rounds   atomic.Int64
	assigned atomic.Int64
}

func (f *countingFallback) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	before := len(p.Assignments())
	f.inner.Assign(calls, servants, p)
	f.rounds.Add(1)
	f.assigned.Add(int64(len(p.Assignments()) - before))
}

// rig is an engine whose algorithm is a plugin's, with fake servants.
type rig struct {
	t        testing.TB
	h        *Host
	a        *Algorithm
	fb       *countingFallback
	e        *engine.Engine
	servants []*fakeServant
	rec      *recorder
	calls    []*engine.Call
	stop     chan struct{}
}

type rigOpts struct {
	algorithm string // default "least"
	backlog   int    // the plugin's announced backlog
	servants  int    // default 4
	slots     int    // default 1
	held      bool   // servants hold calls until released
	router    dispatch.Router
}

func newRig(t testing.TB, h *Host, o rigOpts) *rig {
	t.Helper()
	if o.algorithm == "" {
		o.algorithm = "least"
	}
	if o.servants == 0 {
		o.servants = 4
	}
	if o.slots == 0 {
		o.slots = 1
	}
	r := &rig{t: t, h: h, rec: newRecorder(), stop: make(chan struct{}), fb: &countingFallback{inner: &algo.Least{}}}
	r.a = NewAlgorithm(h, o.algorithm, o.backlog, r.fb)
	r.e = engine.New(engine.Config{Algorithm: r.a, Router: o.router, Log: zap.NewNop()})
	for i := range o.servants {
		f := &fakeServant{name: fmt.Sprintf("s%d", i+1), in: make(chan *engine.Call, 4096), kick: make(chan struct{}, 1), sentAt: map[*engine.Call]time.Time{}}
		f.hold.Store(o.held)
		f.s = r.e.AddServant(engine.ServantSpec{Name: f.name, Addr: fmt.Sprintf("127.0.0.1:%d", 7001+i), Slots: o.slots}, f)
		r.servants = append(r.servants, f)
	}
	for _, f := range r.servants {
		go f.run(r.stop)
		f.s.Up(engine.Announce{})
	}
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	for _, f := range r.servants {
		f.release()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.e.Drain(ctx); err != nil {
		r.t.Errorf("engine did not drain: %v (%s)", err, statsString(r.h))
	}
	close(r.stop)
}

// submit makes n calls with the given routing strings (cycled) and submits
// them; it returns them.
func (r *rig) submit(n int, routes ...string) []*engine.Call {
	if len(routes) == 0 {
		routes = []string{""}
	}
	out := make([]*engine.Call, n)
	for i := range out {
		route := routes[i%len(routes)]
		out[i] = r.newCall(fmt.Sprintf("[%q]", route))
		out[i].Route = route
	}
	for _, c := range out {
		r.e.Submit(c)
	}
	return out
}

// newCall makes a call to f with params, counted among the rig's calls;
// the caller submits it.
func (r *rig) newCall(params string) *engine.Call {
	c := &engine.Call{ID: []byte(strconv.Itoa(len(r.calls) + 1)), Reply: r.rec}
	c.Method = "f"
	c.Params = []byte(params)
	r.calls = append(r.calls, c)
	return c
}

// fixedRouter routes every call to itself.
type fixedRouter string

func (f fixedRouter) Route(*dispatch.Call) (string, error) { return string(f), nil }

// waitAnswered waits until every call submitted so far has an answer.
func (r *rig) waitAnswered(within time.Duration) {
	r.t.Helper()
	want := int64(len(r.calls))
	eventually(r.t, within, func() bool { return r.rec.answered.Load() >= want }, func() string {
		st := r.e.Stats()
		return fmt.Sprintf("%d of %d calls answered; engine queued=%d running=%d; plugin %s; fallback assigned %d",
			r.rec.answered.Load(), want, st.Queued, st.Running, statsString(r.h), r.fb.assigned.Load())
	})
}

// checkExactlyOnce checks that every call was answered exactly once, with
// the servant's result.
func (r *rig) checkExactlyOnce() {
	r.t.Helper()
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	bad := 0
	for _, c := range r.calls {
		if n := r.rec.answers[c]; n != 1 {
			bad++
			if bad <= 5 {
				r.t.Errorf("call %s answered %d times", c.ID, n)
			}
		} else if e, ok := r.rec.errs[c]; ok {
			bad++
			if bad <= 5 {
				r.t.Errorf("call %s answered with an error: %s", c.ID, e)
			}
		}
	}
	if bad > 5 {
		r.t.Errorf("… %d calls in all not answered exactly once with a result", bad)
	}
}

// sent returns the calls handed to the fake servants.
func (r *rig) sent() int64 {
	n := int64(0)
	for _, f := range r.servants {
		n += f.sent.Load()
	}
	return n
}

// sentAt returns when c was handed to a servant.
func (r *rig) sentAt(c *engine.Call) (time.Time, bool) {
	for _, f := range r.servants {
		f.mu.Lock()
		at, ok := f.sentAt[c]
		f.mu.Unlock()
		if ok {
			return at, true
		}
	}
	return time.Time{}, false
}

// ---------------------------------------------------------------------------
// Random rounds, for invariant checks

// randomViews makes n servants in random states.
func randomViews(rng interface{ IntN(int) int }, n int) []*dispatch.Servant {
	out := make([]*dispatch.Servant, n)
	for i := range out {
		slots := 1 + rng.IntN(3)
		s := &dispatch.Servant{
			Name: fmt.Sprintf("s%d", i+1), Addr: fmt.Sprintf("127.0.0.1:%d", 7001+i), Host: "127.0.0.1",
			Slots: slots, InFlight: rng.IntN(slots + 1), Healthy: rng.IntN(6) != 0, Draining: rng.IntN(8) == 0,
		}
		if rng.IntN(4) == 0 {
			s.Functions = map[string]bool{"f": true}
		}
		out[i] = s
	}
	return out
}

func randomCalls(rng interface{ IntN(int) int }, n int) []*dispatch.Call {
	out := make([]*dispatch.Call, n)
	routes := []string{"IBM", "MSFT", "AAPL", "GOOG", "KX", ""}
	for i := range out {
		r := routes[rng.IntN(len(routes))]
		out[i] = &dispatch.Call{Method: []string{"f", "f", "g"}[rng.IntN(3)], Route: r, Params: []byte(fmt.Sprintf("[%q]", r))}
	}
	return out
}

func cloneViews(vs []*dispatch.Servant) []*dispatch.Servant {
	out := make([]*dispatch.Servant, len(vs))
	for i, v := range vs {
		c := *v
		c.Tags = slices.Clone(v.Tags)
		out[i] = &c
	}
	return out
}

// checkPlan checks a round's decisions against the servants as they were
// before it: never to an unavailable servant, never beyond its free slots
// plus backlog room, never a call to a servant that does not serve its
// method, never a call twice, never one the Plan refused.
func checkPlan(calls []*dispatch.Call, before []*dispatch.Servant, p *dispatch.Plan) error {
	if r := p.Rejected(); r != 0 {
		return fmt.Errorf("the Plan refused %d assignments", r)
	}
	taken := make([]int, len(before))
	seen := map[int]bool{}
	for _, a := range p.Assignments() {
		if a.Call < 0 || a.Call >= len(calls) || a.Servant < 0 || a.Servant >= len(before) {
			return fmt.Errorf("assignment %+v out of range", a)
		}
		if seen[a.Call] {
			return fmt.Errorf("call %d assigned twice", a.Call)
		}
		seen[a.Call] = true
		s, c := before[a.Servant], calls[a.Call]
		if !s.Available() {
			return fmt.Errorf("call %d assigned to %s, which is unavailable (healthy=%v draining=%v)", a.Call, s.Name, s.Healthy, s.Draining)
		}
		if !s.Serves(c.Method) {
			return fmt.Errorf("call %d (%s) assigned to %s, which does not serve it", a.Call, c.Method, s.Name)
		}
		taken[a.Servant]++
		if taken[a.Servant] > s.Free()+(p.MaxBacklog-s.Backlog) {
			return fmt.Errorf("%s given %d calls with %d free slots and %d of %d backlog places used",
				s.Name, taken[a.Servant], s.Free(), s.Backlog, p.MaxBacklog)
		}
	}
	return nil
}
