package allow

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

func call(method, params string) *engine.Call {
	return &engine.Call{Call: dispatch.Call{Method: method, Params: []byte(params)}}
}

// writeFile writes src to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, src string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newGate returns a gate over the file src (none when src is "") for the
// servants named.
func newGate(t *testing.T, src string, servants ...string) *Gate {
	t.Helper()
	path := ""
	if src != "" {
		path = writeFile(t, t.TempDir(), "mserve.allow", src)
	}
	g, err := NewGate(path, servants, nil)
	if err != nil {
		t.Fatalf("NewGate: %v", err)
	}
	return g
}

// wantCode checks the outcome of a gate check: code 0 means let through.
func wantCode(t *testing.T, g *Gate, user string, c *engine.Call, code int) *jsonrpc.Error {
	t.Helper()
	err := g.Check(user, c)
	switch {
	case code == 0 && err != nil:
		t.Errorf("Check(%q, %s %s) = %v, want it let through", user, c.Method, c.Params, err)
	case code != 0 && err == nil:
		t.Errorf("Check(%q, %s %s) let it through, want code %d", user, c.Method, c.Params, code)
	case code != 0 && err.Code != code:
		t.Errorf("Check(%q, %s %s) = %v, want code %d", user, c.Method, c.Params, err, code)
	}
	return err
}

var gateFile = lines(
	"hdb(sym symbol, start date, end date = \"2026-12-31\") where start <= end",
	"rdb(sym symbol)",
	"admin.reset()",
	"user alice "+hashAlice+": hdb rdb",
	"user bob "+hashBob+": rdb",
	"anonymous: rdb",
)

func TestGateWithFile(t *testing.T) {
	g := newGate(t, gateFile, "s1", "s2")
	if g.Policy() == nil || g.Path() == "" || !strings.Contains(g.String(), "3 functions, 2 users") {
		t.Errorf("Policy %v, Path %q, String %q", g.Policy(), g.Path(), g.String())
	}

	// Before the servants announce, they may serve anything.
	c := call("hdb", `["IBM","2026-01-02"]`)
	wantCode(t, g, "alice", c, 0)
	if string(c.Params) != `["IBM","2026-01-02","2026-12-31"]` || c.User != "alice" {
		t.Errorf("after Check: params %s, user %q", c.Params, c.User)
	}

	undeclared := wantCode(t, g, "alice", call("nope", `[]`), jsonrpc.MethodNotFound)
	notGranted := wantCode(t, g, "bob", call("hdb", `["IBM","2026-01-02"]`), jsonrpc.MethodNotFound)
	wantCode(t, g, "alice", call("admin.reset", `[]`), jsonrpc.MethodNotFound)
	wantCode(t, g, Anonymous, call("hdb", `["IBM","2026-01-02"]`), jsonrpc.MethodNotFound)
	wantCode(t, g, Anonymous, call("rdb", `["IBM"]`), 0)
	if undeclared != nil && notGranted != nil {
		// The message must not reveal whether the function exists.
		if strings.Replace(undeclared.Message, "nope", "hdb", 1) != notGranted.Message {
			t.Errorf("undeclared %q and not granted %q differ beyond the name", undeclared.Message, notGranted.Message)
		}
		if undeclared.Data != nil || notGranted.Data != nil {
			t.Errorf("method-not-found carries data: %s, %s", undeclared.Data, notGranted.Data)
		}
	}
	// Arguments are checked against the file's declaration.
	if e := wantCode(t, g, "alice", call("hdb", `["IBM","2026-01-05","2026-01-02"]`), jsonrpc.InvalidParams); e != nil &&
		!strings.Contains(e.Message, "break the condition") {
		t.Errorf("message %q", e.Message)
	}
	if e := wantCode(t, g, "alice", call("hdb", `["IBM X","2026-01-05"]`), jsonrpc.InvalidParams); e != nil &&
		!strings.Contains(string(e.Data), `"param":"sym"`) {
		t.Errorf("data %s", e.Data)
	}
	// An unknown user (removed by a reload) is told to connect again.
	wantCode(t, g, "mallory", call("rdb", `["IBM"]`), jsonrpc.Unauthorized)

	// s1 serves rdb only; s2 declares nothing (a plain server): all served.
	g.Announce("s1", []string{"rdb(sym symbol)"})
	g.Announce("s2", nil)
	wantCode(t, g, "alice", call("hdb", `["IBM","2026-01-02"]`), 0)

	// Now s2 declares too, and nobody serves hdb.
	g.Announce("s2", []string{"rdb(sym symbol)", "extra(x int)"})
	if e := wantCode(t, g, "alice", call("hdb", `["IBM","2026-01-02"]`), jsonrpc.Unavailable); e != nil &&
		!strings.Contains(e.Message, "hdb is declared in") {
		t.Errorf("message %q", e.Message)
	}
	// Not granted still looks like not found, not unavailable.
	wantCode(t, g, "bob", call("hdb", `["IBM","2026-01-02"]`), jsonrpc.MethodNotFound)
	wantCode(t, g, "bob", call("rdb", `["IBM"]`), 0)
	// A servant can never widen the file.
	wantCode(t, g, "alice", call("extra", `[1]`), jsonrpc.MethodNotFound)
	wantCode(t, g, Anonymous, call("extra", `[1]`), jsonrpc.MethodNotFound)

	// The servant's own declaration of rdb does not replace the file's.
	g.Announce("s1", []string{"rdb(sym any)", "hdb(sym any, start any, end any)"})
	wantCode(t, g, "bob", call("rdb", `[1]`), jsonrpc.InvalidParams)
	wantCode(t, g, "alice", call("hdb", `["IBM","2026-01-05","2026-01-02"]`), jsonrpc.InvalidParams)
	wantCode(t, g, "alice", call("hdb", `["IBM","2026-01-02"]`), 0)

	// Discovery lists only what the caller may call.
	names := func(fs []*Func) (out []string) {
		for _, f := range fs {
			out = append(out, f.Decl.Name)
		}
		return out
	}
	if got := strings.Join(names(g.Functions("alice")), " "); got != "hdb rdb" {
		t.Errorf("Functions(alice) = %s", got)
	}
	if got := strings.Join(names(g.Functions(Anonymous)), " "); got != "rdb" {
		t.Errorf("Functions(anonymous) = %s", got)
	}
	if got := g.Functions("mallory"); got != nil {
		t.Errorf("Functions(mallory) = %v", got)
	}
}

func TestGateServantsUnknownAtStart(t *testing.T) {
	// A servant that joins later (not in NewGate's list) counts once it
	// announces.
	g := newGate(t, gateFile)
	wantCode(t, g, "bob", call("rdb", `["IBM"]`), jsonrpc.Unavailable)
	g.Announce("late", []string{"rdb(sym symbol)"})
	wantCode(t, g, "bob", call("rdb", `["IBM"]`), 0)
}

func TestGateWithoutFile(t *testing.T) {
	g := newGate(t, "", "s1", "s2")
	if g.Policy() != nil || g.Path() != "" || g.Reload() != nil {
		t.Errorf("Policy %v, Path %q", g.Policy(), g.Path())
	}
	if !strings.Contains(g.String(), "no allowlist") {
		t.Errorf("String() = %q", g.String())
	}
	// Before any announcement, unknown calls pass through untouched.
	c := call("anything", `{"x": 1}`)
	wantCode(t, g, Anonymous, c, 0)
	if string(c.Params) != `{"x": 1}` {
		t.Errorf("params became %s", c.Params)
	}

	// One servant announces; the other has not connected: its declarations
	// are checked, the rest still pass to the silent one.
	g.Announce("s1", []string{`sleep(ms int 0..1000, label string = "nap")`})
	c = call("sleep", `[5]`)
	wantCode(t, g, Anonymous, c, 0)
	if string(c.Params) != `[5,"nap"]` {
		t.Errorf("params became %s", c.Params)
	}
	wantCode(t, g, Anonymous, call("sleep", `[5000]`), jsonrpc.InvalidParams)
	wantCode(t, g, Anonymous, call("anything", `[]`), 0)

	// Once every servant has announced declarations, only those pass.
	g.Announce("s2", []string{`proc1(sym symbol)`, `broken(a nope)`, `bad(a int) where a +`})
	wantCode(t, g, Anonymous, call("anything", `[]`), jsonrpc.MethodNotFound)
	wantCode(t, g, Anonymous, call("proc1", `["IBM"]`), 0)
	wantCode(t, g, Anonymous, call("proc1", `["I B M"]`), jsonrpc.InvalidParams)
	wantCode(t, g, Anonymous, call("sleep", `{"ms":10}`), 0)
	// A declaration that does not parse or compile is left out.
	wantCode(t, g, Anonymous, call("broken", `[1]`), jsonrpc.MethodNotFound)
	wantCode(t, g, Anonymous, call("bad", `[1]`), jsonrpc.MethodNotFound)

	if got := len(g.Functions(Anonymous)); got != 2 {
		t.Errorf("Functions() has %d functions, want sleep and proc1", got)
	}

	// A servant re-announcing as a plain server reopens the pass-through.
	g.Announce("s2", nil)
	wantCode(t, g, Anonymous, call("anything", `[]`), 0)
	wantCode(t, g, Anonymous, call("sleep", `[5000]`), jsonrpc.InvalidParams)
}

func TestGateConflictingDeclarations(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	g, err := NewGate("", []string{"s2", "s1"}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	// s2 announces first, but s1 comes first by name: s1's wins.
	g.Announce("s2", []string{"f(a int 0..10)"})
	g.Announce("s1", []string{"f(a int 100..200)"})
	wantCode(t, g, Anonymous, call("f", `[150]`), 0)
	wantCode(t, g, Anonymous, call("f", `[5]`), jsonrpc.InvalidParams)
	if n := logs.FilterMessageSnippet("declare a function differently").Len(); n == 0 {
		t.Error("the conflict was not logged")
	}
	// Identical declarations are no conflict.
	g.Announce("s2", []string{"f(a int 100..200)"})
	wantCode(t, g, Anonymous, call("f", `[150]`), 0)
}

func TestGateReload(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "mserve.allow", lines("f(a int)", "g()", "anonymous: f"))
	g, err := NewGate(path, []string{"s1"}, nil) // s1 has not announced: it may serve anything
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, g, Anonymous, call("f", `[1]`), 0)
	wantCode(t, g, Anonymous, call("g", `[]`), jsonrpc.MethodNotFound)

	// A change: g granted, f narrowed.
	writeFile(t, dir, "mserve.allow", lines("f(a int 0..9)", "g()", "anonymous: f g"))
	if err := g.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	wantCode(t, g, Anonymous, call("g", `[]`), 0)
	wantCode(t, g, Anonymous, call("f", `[10]`), jsonrpc.InvalidParams)
	before := g.Policy()

	// A broken file: the error names the line, the old policy stays.
	writeFile(t, dir, "mserve.allow", lines("f(a int 0..9)", "g()", "", "h(x nope)", "anonymous: f g h"))
	err = g.Reload()
	var le *LineError
	if !errors.As(err, &le) || le.Line != 4 || !strings.HasPrefix(err.Error(), path+":4:") {
		t.Fatalf("Reload of a broken file: %v, want a *LineError at line 4", err)
	}
	if g.Policy() != before {
		t.Error("a failed reload replaced the policy")
	}
	wantCode(t, g, Anonymous, call("g", `[]`), 0)
	wantCode(t, g, Anonymous, call("f", `[10]`), jsonrpc.InvalidParams)

	// A file that parses but does not compile is refused the same way.
	writeFile(t, dir, "mserve.allow", lines("f(a int) where a +", "anonymous: f"))
	if err := g.Reload(); !errors.As(err, &le) || le.Line != 1 {
		t.Errorf("Reload of a file that does not compile: %v", err)
	}
	// A vanished file too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(); err == nil {
		t.Error("Reload of a missing file succeeded")
	}
	wantCode(t, g, Anonymous, call("g", `[]`), 0)

	// Users removed by a reload are refused as unknown.
	writeFile(t, dir, "mserve.allow", lines("f(a int)", "user alice "+hashAlice+": f"))
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if u, e := g.Authenticate("", "alice-secret", "src"); e != nil || u != "alice" {
		t.Fatalf("Authenticate = %q, %v", u, e)
	}
	writeFile(t, dir, "mserve.allow", lines("f(a int)", "user bob "+hashBob+": f"))
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, g, "alice", call("f", `[1]`), jsonrpc.Unauthorized)
}

func TestNewGateRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewGate(filepath.Join(dir, "missing.allow"), nil, nil); err == nil {
		t.Error("NewGate with a missing file succeeded")
	}
	path := writeFile(t, dir, "bad.allow", lines("f()", "user alice hunter2: f"))
	_, err := NewGate(path, nil, nil)
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 {
		t.Errorf("NewGate with a clear-text secret: %v", err)
	}
}

func TestGateAuthenticate(t *testing.T) {
	g := newGate(t, gateFile)
	tests := []struct {
		user, secret string
		want         string
	}{
		{"", "alice-secret", "alice"},
		{"bob", "bob-secret", "bob"},
		{"bob", "alice-secret", ""},
		{"mallory", "bob-secret", ""},
		{"", "wrong", ""},
	}
	for _, tc := range tests {
		u, err := g.Authenticate(tc.user, tc.secret, "10.0.0.1:5000")
		if tc.want == "" {
			if err == nil || err.Code != jsonrpc.Unauthorized || u != "" {
				t.Errorf("Authenticate(%q, %q) = %q, %v; want unauthorized", tc.user, tc.secret, u, err)
			}
			if err != nil && strings.Contains(err.Message, tc.user) && tc.user != "" {
				t.Errorf("message %q reveals the user name", err.Message)
			}
			continue
		}
		if err != nil || u != tc.want {
			t.Errorf("Authenticate(%q, %q) = %q, %v; want %q", tc.user, tc.secret, u, err, tc.want)
		}
	}

	// Without users, credentials are refused.
	for _, g := range []*Gate{newGate(t, ""), newGate(t, lines("f()"))} {
		if u, err := g.Authenticate("", "alice-secret", "x"); err == nil || err.Code != jsonrpc.Unauthorized || u != "" {
			t.Errorf("%s: Authenticate = %q, %v; want unauthorized", g, u, err)
		}
	}
}

func TestGateAuthenticateLogIsRateLimited(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	path := writeFile(t, t.TempDir(), "a.allow", gateFile)
	g, err := NewGate(path, nil, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	failures := func() int { return logs.FilterMessage("authentication failed").Len() }

	for range 5 {
		if _, err := g.Authenticate("alice", "guess", "10.0.0.1:1111"); err == nil {
			t.Fatal("wrong secret accepted")
		}
	}
	if n := failures(); n != 1 {
		t.Errorf("5 quick failures from one source logged %d times, want 1", n)
	}
	for range 5 {
		g.Authenticate("", "guess", "10.0.0.2:2222")
	}
	if n := failures(); n != 2 {
		t.Errorf("5 more from a second source: %d entries, want 2", n)
	}
	// Successes are not logged as failures.
	g.Authenticate("", "alice-secret", "10.0.0.3:3333")
	if n := failures(); n != 2 {
		t.Errorf("a success was logged as a failure: %d entries", n)
	}
	e := logs.FilterMessage("authentication failed").All()[0]
	if e.ContextMap()["source"] != "10.0.0.1:1111" || e.ContextMap()["user"] != "alice" {
		t.Errorf("log entry %v", e.ContextMap())
	}
	for _, f := range e.Context {
		if strings.Contains(f.String, "guess") {
			t.Error("the log holds the secret")
		}
	}
}

// TestGateConcurrent runs checks while servants announce and the file is
// reloaded, for the race detector.
func TestGateConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "c.allow", gateFile)
	g, err := NewGate(path, []string{"s1", "s2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				c := call("rdb", `["IBM"]`)
				if e := g.Check("bob", c); e != nil && e.Code != jsonrpc.Unavailable {
					t.Errorf("Check: %v", e)
					return
				}
				g.Authenticate("", "bob-secret", "x")
				g.Discover("alice", "test")
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			g.Announce("s1", []string{"rdb(sym symbol)"})
			if i%2 == 0 {
				g.Announce("s2", nil)
			} else {
				g.Announce("s2", []string{"hdb(sym symbol)"})
			}
			if err := g.Reload(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}

func TestGateUnserved(t *testing.T) {
	withFile := newGate(t, gateFile, "s1")
	if e := withFile.Unserved("hdb"); e.Code != jsonrpc.Unavailable || !strings.Contains(e.Message, "hdb is declared in") {
		t.Errorf("Unserved(hdb) with the file declaring it = %v", e)
	}
	if e := withFile.Unserved("nope"); e.Code != jsonrpc.MethodNotFound {
		t.Errorf("Unserved(nope) = %v", e)
	}
	if e := newGate(t, "", "s1").Unserved("hdb"); e.Code != jsonrpc.MethodNotFound {
		t.Errorf("Unserved(hdb) without a file = %v", e)
	}
}
