package discover

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/announce/etcdtest"
)

// fakeTarget records what discovery does to it. Algorithms it knows:
// orig, even, match, least; routing functions: first, method, none.
type fakeTarget struct {
	mu       sync.Mutex
	servants map[string]Servant
	added    map[string]int // AddServant calls by name
	removed  map[string]time.Time
	algo     string
	routing  string
	applied  map[string]time.Time // "algo=x" → when applied
	changed  chan struct{}        // closed and replaced at every change
}

func newFakeTarget() *fakeTarget {
	return &fakeTarget{servants: map[string]Servant{}, added: map[string]int{}, removed: map[string]time.Time{},
		algo: "least", routing: "first", applied: map[string]time.Time{}, changed: make(chan struct{})}
}

func (f *fakeTarget) notify() { close(f.changed); f.changed = make(chan struct{}) }

func (f *fakeTarget) AddServant(s Servant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.servants[s.Name]; ok {
		return fmt.Errorf("a servant named %q is already in the balancer", s.Name)
	}
	f.servants[s.Name] = s
	f.added[s.Name]++
	f.notify()
	return nil
}

func (f *fakeTarget) RemoveServant(name string, cause error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.servants[name]; !ok {
		return fmt.Errorf("no servant named %q", name)
	}
	delete(f.servants, name)
	f.removed[name] = time.Now()
	f.notify()
	return nil
}

func (f *fakeTarget) SetAlgorithm(name string) error {
	if !slices.Contains([]string{"orig", "even", "match", "least"}, name) {
		return fmt.Errorf("unknown algorithm %q", name)
	}
	f.apply(&f.algo, "algo", name)
	return nil
}

func (f *fakeTarget) SetRouting(spec string) error {
	if !slices.Contains([]string{"first", "method", "none"}, spec) {
		return fmt.Errorf("%q is neither a routing function nor an expression", spec)
	}
	f.apply(&f.routing, "routing", spec)
	return nil
}

// apply sets *setting to value, notes when key=value was applied and
// notifies the waiters.
func (f *fakeTarget) apply(setting *string, key, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*setting = value
	f.applied[key+"="+value] = time.Now()
	f.notify()
}

// state describes the target: its servants (name=addr/slots/tags, sorted),
// algorithm and routing.
func (f *fakeTarget) state() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ss []string
	for _, s := range f.servants {
		ss = append(ss, fmt.Sprintf("%s=%s/%d/%s", s.Name, s.Addr, s.Slots, strings.Join(s.Tags, "+")))
	}
	sort.Strings(ss)
	return fmt.Sprintf("servants [%s] algo %s routing %s", strings.Join(ss, " "), f.algo, f.routing)
}

// waitFor waits, without polling, until cond holds for the target, failing
// the test after 10s.
func (f *fakeTarget) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ch := f.changed
		f.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("after 10s: %s; target: %s", what, f.state())
		}
	}
}

func (f *fakeTarget) addCount(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.added[name]
}

func (f *fakeTarget) has(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.servants[name]
	return ok
}

// running is a Discovery following an embedded etcd.
type running struct {
	d      *Discovery
	target *fakeTarget
	logs   *observer.ObservedLogs
	cli    *clientv3.Client // a separate client, to write with
	prefix string
}

// startDiscovery runs a Discovery over client (through which it reads),
// under prefix, with initial settings least/first.
func startDiscovery(t *testing.T, srv *etcdtest.Server, client *clientv3.Client, prefix string) *running {
	t.Helper()
	log, logs := testkit.Observed(zapcore.DebugLevel)
	r := &running{target: newFakeTarget(), logs: logs, cli: srv.Client(), prefix: prefix}
	r.d = New(Config{Client: client, Prefix: prefix, Target: r.target, Algorithm: "least", Routing: "first", Log: log})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.d.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	return r
}

func (r *running) put(t *testing.T, key, value string, opts ...clientv3.OpOption) {
	t.Helper()
	if _, err := r.cli.Put(context.Background(), r.prefix+key, value, opts...); err != nil {
		t.Fatal(err)
	}
}

func (r *running) del(t *testing.T, key string) {
	t.Helper()
	if _, err := r.cli.Delete(context.Background(), r.prefix+key); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until a log entry whose message contains msg, and whose
// fields' text contains each of fields, has been written.
func (r *running) waitLog(t *testing.T, msg string, fields ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r.countLogs(msg, fields...) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, no log %q with %q; logs: %v", msg, fields, r.logs.All())
		}
		time.Sleep(2 * time.Millisecond) // polling the observer, bounded by the deadline
	}
}

func (r *running) countLogs(msg string, fields ...string) int {
	n := 0
	for _, e := range r.logs.All() {
		if !strings.Contains(e.Message, msg) {
			continue
		}
		text := fmt.Sprint(e.ContextMap())
		ok := true
		for _, f := range fields {
			ok = ok && strings.Contains(text, f)
		}
		if ok {
			n++
		}
	}
	return n
}

// marker writes a servant key and waits until it is added: every change
// written before it has then been applied (one watch, in revision order).
func (r *running) marker(t *testing.T, name string) {
	t.Helper()
	r.put(t, "/servants/"+name, `{"addr":"127.0.0.1:9"}`)
	r.target.waitFor(t, name+" added", func() bool { return r.target.has(name) })
	r.del(t, "/servants/"+name)
	r.target.waitFor(t, name+" removed", func() bool { return !r.target.has(name) })
}

// Each step writes to the tree; the target then looks as want says, and
// a log says why when a value was refused.
func TestServantKeys(t *testing.T) {
	srv := etcdtest.Start(t)
	r := startDiscovery(t, srv, srv.Client(), "/t")
	steps := []struct {
		name    string
		do      func(t *testing.T)
		want    string // the target's servants afterwards
		wantLog string // a warning that must have been logged
	}{
		{"a put adds a servant",
			func(t *testing.T) { r.put(t, "/servants/a", `{"addr":"127.0.0.1:7001"}`) },
			"servants [a=127.0.0.1:7001/0/]", ""},
		{"slots, tags and an HTTP address",
			func(t *testing.T) {
				r.put(t, "/servants/b", `{"addr":"http://127.0.0.1:8000/rpc","slots":4,"tags":["gpu","py"],"pid":123}`)
			},
			"servants [a=127.0.0.1:7001/0/ b=http://127.0.0.1:8000/rpc/4/gpu+py]", ""},
		{"a changed value replaces the servant",
			func(t *testing.T) { r.put(t, "/servants/a", `{"addr":"127.0.0.1:7002","slots":2}`) },
			"servants [a=127.0.0.1:7002/2/ b=http://127.0.0.1:8000/rpc/4/gpu+py]", ""},
		{"a delete removes it",
			func(t *testing.T) { r.del(t, "/servants/b") },
			"servants [a=127.0.0.1:7002/2/]", ""},
		{"bad JSON is skipped and logged",
			func(t *testing.T) { r.put(t, "/servants/c", `{"addr":`) },
			"servants [a=127.0.0.1:7002/2/]", "servants/c"},
		{"a bad address is skipped and logged",
			func(t *testing.T) { r.put(t, "/servants/d", `{"addr":"nohost"}`) },
			"servants [a=127.0.0.1:7002/2/]", "servants/d"},
		{"a nested key names no servant",
			func(t *testing.T) { r.put(t, "/servants/e/f", `{"addr":"127.0.0.1:7003"}`) },
			"servants [a=127.0.0.1:7002/2/]", "servants/e/f"},
		{"a known servant whose value turns invalid is removed",
			func(t *testing.T) { r.put(t, "/servants/a", `[]`) },
			"servants []", "servants/a"},
		{"the key valid again adds it back",
			func(t *testing.T) { r.put(t, "/servants/a", `{"addr":"127.0.0.1:7002"}`) },
			"servants [a=127.0.0.1:7002/0/]", ""},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do(t)
			r.marker(t, fmt.Sprintf("marker%d", i))
			if got := r.target.state(); !strings.HasPrefix(got, st.want+" ") {
				t.Errorf("target: %s; want %s", got, st.want)
			}
			if st.wantLog != "" && r.countLogs("invalid servant key", st.wantLog) == 0 {
				t.Errorf("no warning about %s; logs: %v", st.wantLog, r.logs.All())
			}
		})
	}
	// Rewriting the same value changes nothing.
	before := r.target.addCount("a")
	r.put(t, "/servants/a", `{"addr":"127.0.0.1:7002"}`)
	r.marker(t, "last")
	if after := r.target.addCount("a"); after != before {
		t.Errorf("an unchanged value re-added the servant (%d adds, was %d)", after, before)
	}
	// Invalid values are logged at most once per key per period.
	for range 3 {
		r.put(t, "/servants/c", `nope`)
	}
	r.marker(t, "limit")
	if n := r.countLogs("invalid servant key", "servants/c"); n != 1 {
		t.Errorf("%d warnings about servants/c; want 1 (rate-limited)", n)
	}
}

// A name in use by a servant not discovered (one given with -servants) is
// refused, logged, and never removed by discovery.
func TestNameTakenElsewhere(t *testing.T) {
	srv := etcdtest.Start(t)
	r := startDiscovery(t, srv, srv.Client(), "/t")
	r.target.AddServant(Servant{Name: "static", Addr: "127.0.0.1:7000"})
	r.put(t, "/servants/static", `{"addr":"127.0.0.1:7001"}`)
	r.waitLog(t, "servant in etcd not added", "already in the balancer")
	r.del(t, "/servants/static")
	r.marker(t, "m")
	if !r.target.has("static") {
		t.Error("discovery removed a servant it had not added")
	}
}

// Servants listed before discovery starts are added by Sync, settings
// applied.
func TestSyncListsWhatIsThere(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	for k, v := range map[string]string{
		"/t/servants/a": `{"addr":"127.0.0.1:7001"}`, "/t/servants/b": `{"addr":"127.0.0.1:7002","tags":["x"]}`,
		"/t/config/algo": "orig", "/t/config/routing": " method\n", "/other/servants/c": `{"addr":"127.0.0.1:7003"}`,
	} {
		if _, err := cli.Put(context.Background(), k, v); err != nil {
			t.Fatal(err)
		}
	}
	r := startDiscovery(t, srv, srv.Client(), "/t/") // a trailing '/' is the same prefix
	want := "servants [a=127.0.0.1:7001/0/ b=127.0.0.1:7002/0/x] algo orig routing method"
	if got := r.target.state(); got != want {
		t.Errorf("after Sync: %s; want %s", got, want)
	}
}

// Config keys are applied live; a bad value is logged and the setting in
// force stays; deleting the key restores the flags' value.
func TestConfigKeys(t *testing.T) {
	srv := etcdtest.Start(t)
	r := startDiscovery(t, srv, srv.Client(), "/t")
	steps := []struct {
		name                  string
		key, value            string // value "" deletes the key
		wantAlgo, wantRouting string
		wantErrLog            string
	}{
		{"an algorithm", "algo", "orig", "orig", "first", ""},
		{"an unknown algorithm is refused", "algo", "nosuch", "orig", "first", "nosuch"},
		{"a routing function", "routing", "method", "orig", "method", ""},
		{"a bad routing is refused", "routing", "args[", "orig", "method", "args["},
		{"the algorithm key deleted: the flag's value", "algo", "", "least", "method", ""},
		{"another component's key is ignored", "resume/variance", "2", "least", "method", ""},
		{"the routing key deleted", "routing", "", "least", "first", ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.value == "" {
				r.del(t, "/config/"+st.key)
			} else {
				r.put(t, "/config/"+st.key, st.value)
			}
			if st.wantErrLog != "" {
				r.waitLog(t, "setting in etcd not applied", st.wantErrLog)
			}
			want := fmt.Sprintf("algo %s routing %s", st.wantAlgo, st.wantRouting)
			r.target.waitFor(t, want, func() bool { return strings.HasSuffix(r.target.state(), want) })
		})
	}
}

// A servant whose lease is revoked is removed at once; one whose lease
// expires (its keeper killed) within the TTL and a margin.
func TestLeases(t *testing.T) {
	srv := etcdtest.Start(t)
	r := startDiscovery(t, srv, srv.Client(), "/t")
	const ttl = 1 // seconds: the test server's minimum (etcdtest)
	for _, revoke := range []bool{true, false} {
		name := map[bool]string{true: "revoked", false: "expired"}[revoke]
		t.Run(name, func(t *testing.T) {
			g, err := r.cli.Grant(context.Background(), ttl)
			if err != nil {
				t.Fatal(err)
			}
			kctx, stopKeeping := context.WithCancel(context.Background())
			defer stopKeeping()
			ka, err := r.cli.KeepAlive(kctx, g.ID)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for range ka {
				}
			}()
			r.put(t, "/servants/"+name, `{"addr":"127.0.0.1:7001"}`, clientv3.WithLease(g.ID))
			r.target.waitFor(t, name+" added", func() bool { return r.target.has(name) })
			died := time.Now()
			if revoke {
				if _, err := r.cli.Revoke(context.Background(), g.ID); err != nil {
					t.Fatal(err)
				}
			} else {
				stopKeeping()
			}
			r.target.waitFor(t, name+" removed", func() bool { return !r.target.has(name) })
			r.target.mu.Lock()
			took := r.target.removed[name].Sub(died)
			r.target.mu.Unlock()
			limit := time.Duration(ttl)*time.Second + 2*time.Second // TTL, etcd's 500ms expiry sweep, slack for -race
			if revoke {
				limit = time.Second
			}
			t.Logf("%s lease: removed %v after", name, took.Round(time.Millisecond))
			if took > limit {
				t.Errorf("%s lease: removed after %v; want within %v", name, took, limit)
			}
		})
	}
}

// After the watch is cut off and the history it needed compacted,
// discovery lists the tree again and reconciles: servants added, removed
// and changed meanwhile are caught up, and the interruption is logged
// once.
func TestReconcileAfterWatchRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint)
	r := startDiscovery(t, srv, etcdtest.NewClient(t, proxy.Addr), "/t")
	r.put(t, "/servants/a", `{"addr":"127.0.0.1:7001"}`)
	r.put(t, "/servants/b", `{"addr":"127.0.0.1:7002"}`)
	r.target.waitFor(t, "a and b added", func() bool { return r.target.has("a") && r.target.has("b") })

	proxy.Cut()
	r.waitLog(t, "etcd unreachable")
	r.del(t, "/servants/a")
	r.put(t, "/servants/b", `{"addr":"127.0.0.1:7012"}`)
	r.put(t, "/servants/c", `{"addr":"127.0.0.1:7003"}`)
	r.put(t, "/config/algo", "even")
	if _, err := srv.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.target.state(); got != "servants [a=127.0.0.1:7001/0/ b=127.0.0.1:7002/0/] algo least routing first" {
		t.Fatalf("while cut off the target changed: %s", got)
	}
	proxy.Restore()
	want := "servants [b=127.0.0.1:7012/0/ c=127.0.0.1:7003/0/] algo even routing first"
	r.target.waitFor(t, "caught up", func() bool { return r.target.state() == want })
	r.waitLog(t, "etcd discovery caught up")
	if n := r.countLogs("etcd watch ended"); n != 1 {
		t.Errorf("%d logs of the watch ending; want 1", n)
	}
	if n := r.countLogs("etcd unreachable"); n != 1 {
		t.Errorf("%d logs of etcd unreachable; want 1", n)
	}
	r.waitLog(t, "etcd reachable again")
	// And it follows changes again.
	r.del(t, "/servants/c")
	r.target.waitFor(t, "c removed", func() bool { return !r.target.has("c") })
}

// Sync fails when etcd cannot be reached.
func TestSyncFailsWithoutEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint)
	proxy.Cut()
	d := New(Config{Client: etcdtest.NewClient(t, proxy.Addr), Target: newFakeTarget()})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := d.Sync(ctx); err == nil {
		t.Error("Sync with etcd unreachable succeeded")
	}
}
