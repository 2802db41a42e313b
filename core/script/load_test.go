package script

// Loading and reloading scripts: errors at launch name the file and line;
// a broken edit keeps the last good version; removing, adding and
// duplicating files.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/dispatch"
)

// routeSrc is a script providing the routing function name that answers
// value.
func routeSrc(name, value string) string {
	return `mserve.route("` + name + `", function(call) return "` + value + `" end)` + "\n"
}

// routeOf routes one call with a new Router for name, whose fallback
// answers "fallback".
func routeOf(t *testing.T, h *Host, name string) string {
	t.Helper()
	got, err := NewRouter(h, name, &fixedRouter{route: "fallback"}).Route(&dispatch.Call{Method: "f", Params: []byte(`["IBM"]`)})
	if err != nil {
		t.Fatalf("route %s: %v", name, err)
	}
	return got
}

// reload reloads h from the Lua files in dir, as mserve does when a file
// under MSERVE_PLUGINS changes.
func reload(t *testing.T, h *Host, dir string) {
	t.Helper()
	files, _, err := LuaFiles([]string{dir}, false)
	if err != nil {
		t.Fatal(err)
	}
	h.Reload(files)
}

// rewrite replaces a file's content and makes sure its modification time
// moves, as an editor's save does (file systems with coarse timestamps
// could otherwise hide an edit of the same size).
func rewrite(t *testing.T, path, src string) {
	t.Helper()
	old, _ := os.Stat(path)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if old != nil {
		if fi, err := os.Stat(path); err == nil && fi.ModTime().Equal(old.ModTime()) {
			mt := old.ModTime().Add(time.Second)
			if err := os.Chtimes(path, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestLoadErrorsAtLaunch(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // in the error, besides the file's path
	}{
		{"syntax error", "-- a comment\nmserve.route(\"r\", function(call)\n  return call.method +* 1\nend)\n", []string{":3:"}},
		{"unclosed function", "mserve.route(\"r\", function(call)\n  return 'x'\n", []string{"at EOF"}},
		{"runtime error at top level", "local x = 1\nlocal y = nil + x\n", []string{"bad.lua:2:"}},
		{"registers nothing", "local x = 1\n", []string{"registers nothing"}},
		{"registers a name twice", routeSrc("r", "a") + routeSrc("r", "b"), []string{"registered twice", "bad.lua:2:"}},
		{"invalid name", `mserve.route("has space", function(call) return "" end)`, []string{"has space"}},
		{"not a function", `mserve.algorithm("a", 42)`, []string{"function expected"}},
		{"endless loop at top level", "while true do end\n", []string{"time budget exceeded"}},
		{"escape at top level", "os.execute('true')\n", []string{"bad.lua:1:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeScript(t, t.TempDir(), "bad.lua", tc.src)
			good := writeScript(t, t.TempDir(), "good.lua", routeSrc("g", "g"))
			h, err := NewHost(Config{Files: []string{good, p}})
			if err == nil {
				t.Fatalf("NewHost loaded %s; want an error (provides %v)", tc.name, h.Set().Names(KindRoute))
			}
			msg := err.Error()
			t.Logf("error: %s", strings.SplitN(msg, "\n", 2)[0])
			if !strings.Contains(msg, p) {
				t.Errorf("error %q does not name the file %s", msg, p)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope.lua")
		if _, err := NewHost(Config{Files: []string{p}}); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("NewHost of a missing file: %v", err)
		}
	})
}

// TestLoadErrorLine checks the form of a compile error: "file:line", as
// Lua itself, runtime errors of scripts, and compilers write it, so that
// editors and people find the place.
func TestLoadErrorLine(t *testing.T) {
	p := writeScript(t, t.TempDir(), "broken.lua", "-- one\n-- two\nmserve.route(\"r\", function(call) return ) end)\n")
	_, err := NewHost(Config{Files: []string{p}})
	if err == nil {
		t.Fatal("no error")
	}
	if !strings.Contains(err.Error(), p+":3") {
		t.Errorf("error %q does not say %s:3", err, p)
	}
}

func TestReloadKeepsLastGoodVersion(t *testing.T) {
	dir := t.TempDir()
	p := writeScript(t, dir, "r.lua", routeSrc("r", "v1"))
	log, logs := testkit.Observed(zapcore.InfoLevel)
	h := newHost(t, Config{Files: []string{p}, Log: log})
	router := NewRouter(h, "r", &fixedRouter{route: "fallback"})
	route := func() string {
		got, err := router.Route(&dispatch.Call{Method: "f"})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := route(); got != "v1" {
		t.Fatalf("route %q, want v1", got)
	}
	// A broken edit: the last good version stays, the error (with its
	// line) is logged.
	rewrite(t, p, "mserve.route(\"r\", function(call)\n  return \"v2\" +\nend)\n")
	h.Reload([]string{p})
	if got := route(); got != "v1" {
		t.Errorf("after a broken edit, route %q; want the last good version's v1", got)
	}
	if h.Reloads() != 0 {
		t.Errorf("Reloads() = %d after a broken edit, want 0", h.Reloads())
	}
	errs := logs.FilterMessage("script not reloaded").All()
	if len(errs) != 1 {
		t.Fatalf("logged %d \"script not reloaded\" errors, want 1", len(errs))
	}
	msg := fieldString(errs[0], "error")
	if !strings.Contains(msg, p) || !strings.Contains(msg, ":3:") || !strings.Contains(msg, "keeping the last version") {
		t.Errorf("logged %q; want the file, the line (3) and that the last version is kept", msg)
	}
	if errs[0].Level != zapcore.ErrorLevel {
		t.Errorf("logged at %v, want error", errs[0].Level)
	}
	// Its functions still work for new users too.
	if got := routeOf(t, h, "r"); got != "v1" {
		t.Errorf("a new router routes %q, want v1", got)
	}
	// Fixed: the new version takes over.
	rewrite(t, p, routeSrc("r", "v3"))
	h.Reload([]string{p})
	if got := route(); got != "v3" {
		t.Errorf("after the fix, route %q; want v3", got)
	}
	if h.Reloads() != 1 {
		t.Errorf("Reloads() = %d, want 1", h.Reloads())
	}
	if n := logs.FilterMessage("scripts reloaded").Len(); n != 1 {
		t.Errorf("logged \"scripts reloaded\" %d times, want 1", n)
	}
	if c := h.Counters("r"); c.Errors.Load() != 0 || c.Fallbacks.Load() != 0 {
		t.Errorf("%d errors, %d fallbacks", c.Errors.Load(), c.Fallbacks.Load())
	}
	// A reload with nothing changed changes nothing.
	h.Reload([]string{p})
	if h.Reloads() != 1 {
		t.Errorf("Reloads() = %d after a reload with no change, want 1", h.Reloads())
	}
}

func TestReloadRemovesAndAddsFiles(t *testing.T) {
	dir := t.TempDir()
	a := writeScript(t, dir, "a.lua", routeSrc("ra", "A")+
		`mserve.algorithm("algo.a", function(calls, servants, plan) for i = 1, #calls do if plan.can_take(2, i) then plan.assign(i, 2) end end end)`+"\n")
	writeScript(t, dir, "b.lua", routeSrc("rb", "B"))
	log, logs := testkit.Observed(zapcore.InfoLevel)
	files, _, err := LuaFiles([]string{dir}, true)
	if err != nil {
		t.Fatal(err)
	}
	h := newHost(t, Config{Files: files, Log: log})
	fb := &countingFallback{}
	alg := NewAlgorithm(h, "algo.a", fb)
	ra := NewRouter(h, "ra", &fixedRouter{route: "fallback"})
	assignTo := func() int {
		o := round(alg, queue("x"), views(t0, srv{}, srv{}), t0)
		if len(o.assigned) != 1 {
			t.Fatalf("assigned %v", o.assigned)
		}
		return o.assigned[0].Servant + 1
	}
	if got := assignTo(); got != 2 || fb.rounds.Load() != 0 {
		t.Fatalf("algo.a assigned to s%d (fallback rounds %d), want s2 by the script", got, fb.rounds.Load())
	}

	// Removing a.lua removes its functions: the algorithm falls back
	// (orig: s1), the router too, each logging once.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	reload(t, h, dir)
	if _, _, ok := h.Set().Provider("ra"); ok {
		t.Errorf("ra is still provided after a.lua was removed")
	}
	if got := routeOf(t, h, "rb"); got != "B" {
		t.Errorf("rb routes %q, want B: the other script is untouched", got)
	}
	for range 3 {
		if got := assignTo(); got != 1 {
			t.Errorf("algo.a assigned to s%d after its script was removed, want the fallback's s1", got)
		}
		if got, _ := ra.Route(&dispatch.Call{Method: "f"}); got != "fallback" {
			t.Errorf("ra routes %q after its script was removed, want the fallback's", got)
		}
	}
	if fb.rounds.Load() != 3 {
		t.Errorf("fallback decided %d rounds, want 3", fb.rounds.Load())
	}
	if n := logs.FilterMessageSnippet("no longer provided").Len(); n != 1 {
		t.Errorf("the missing algorithm was logged %d times, want once", n)
	}
	if n := len(failuresLogged(logs, "ra")); n != 1 {
		t.Errorf("the missing routing function was logged %d times, want once", n)
	}

	// Adding a file adds its functions; putting a.lua back brings the
	// algorithm back.
	writeScript(t, dir, "c.lua", routeSrc("rc", "C"))
	writeScript(t, dir, "a.lua", routeSrc("ra", "A2")+
		`mserve.algorithm("algo.a", function(calls, servants, plan) for i = 1, #calls do if plan.can_take(2, i) then plan.assign(i, 2) end end end)`+"\n")
	reload(t, h, dir)
	if got := routeOf(t, h, "rc"); got != "C" {
		t.Errorf("rc routes %q, want C", got)
	}
	if got, _ := ra.Route(&dispatch.Call{Method: "f"}); got != "A2" {
		t.Errorf("ra routes %q once a.lua is back, want A2", got)
	}
	if got := assignTo(); got != 2 {
		t.Errorf("algo.a assigned to s%d once a.lua is back, want s2", got)
	}
	if n := logs.FilterMessageSnippet("provided again").Len(); n != 1 {
		t.Errorf("the algorithm's return was logged %d times, want once", n)
	}
	if got, want := h.Set().Names(KindRoute), []string{"ra", "rb", "rc"}; !slices.Equal(got, want) {
		t.Errorf("routing functions %v, want %v", got, want)
	}
	if got, want := h.Set().Names(KindAlgorithm), []string{"algo.a"}; !slices.Equal(got, want) {
		t.Errorf("algorithms %v, want %v", got, want)
	}
}

func TestDuplicateNames(t *testing.T) {
	t.Run("at launch", func(t *testing.T) {
		dir := t.TempDir()
		a := writeScript(t, dir, "a.lua", routeSrc("r", "A"))
		b := writeScript(t, dir, "b.lua", routeSrc("r", "B"))
		_, err := NewHost(Config{Files: []string{a, b}})
		if err == nil || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) || !strings.Contains(err.Error(), `"r"`) {
			t.Errorf("NewHost with two scripts providing r: %v; want an error naming both files and r", err)
		}
	})
	t.Run("at reload, the new script is ignored", func(t *testing.T) {
		dir := t.TempDir()
		writeScript(t, dir, "a.lua", routeSrc("r", "A"))
		log, logs := testkit.Observed(zapcore.InfoLevel)
		files, _, _ := LuaFiles([]string{dir}, true)
		h := newHost(t, Config{Files: files, Log: log})
		b := writeScript(t, dir, "b.lua", routeSrc("r", "B")+routeSrc("other", "O"))
		reload(t, h, dir)
		if got := routeOf(t, h, "r"); got != "A" {
			t.Errorf("r routes %q, want a.lua's A", got)
		}
		errs := logs.FilterMessage("script not reloaded").All()
		if len(errs) != 1 {
			t.Fatalf("logged %d errors, want 1", len(errs))
		}
		msg := fieldString(errs[0], "error")
		if !strings.Contains(msg, filepath.Join(dir, "a.lua")) || !strings.Contains(msg, b) {
			t.Errorf("logged %q, want both files named", msg)
		}
		// The whole script is ignored, not only the clashing name.
		if _, _, ok := h.Set().Provider("other"); ok {
			t.Errorf("other, from the ignored script, is provided")
		}
	})
	t.Run("at reload, a new script sorting first does not take over", func(t *testing.T) {
		dir := t.TempDir()
		writeScript(t, dir, "b.lua", routeSrc("r", "B")+routeSrc("other", "O"))
		files, _, _ := LuaFiles([]string{dir}, true)
		h := newHost(t, Config{Files: files})
		writeScript(t, dir, "a.lua", routeSrc("r", "A"))
		reload(t, h, dir)
		// The script in force keeps its names: dropping a file into the
		// folder must not silently replace a function in use, nor remove
		// the other functions of the script that provided it.
		if got := routeOf(t, h, "r"); got != "B" {
			t.Errorf("r routes %q after a.lua (also providing r) was added; want b.lua's B, the version in force", got)
		}
		if _, _, ok := h.Set().Provider("other"); !ok {
			t.Errorf("other (from b.lua, in force) disappeared when a.lua was added")
		}
	})
}

func TestReloadOfAFileRegisteringNothing(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "a.lua", routeSrc("r", "A"))
	log, logs := testkit.Observed(zapcore.InfoLevel)
	files, _, _ := LuaFiles([]string{dir}, true)
	h := newHost(t, Config{Files: files, Log: log})
	p := writeScript(t, dir, "empty.lua", "-- nothing yet\n")
	reload(t, h, dir)
	errs := logs.FilterMessage("script not reloaded").All()
	if len(errs) != 1 || !strings.Contains(fieldString(errs[0], "error"), p) || !strings.Contains(fieldString(errs[0], "error"), "registers nothing") {
		t.Errorf("logged %v; want one error naming %s", errs, p)
	}
	if got := routeOf(t, h, "r"); got != "A" {
		t.Errorf("r routes %q", got)
	}
}

func TestLuaFiles(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "b.lua", "")
	writeScript(t, dir, "a.lua", "")
	writeScript(t, dir, "notes.txt", "")
	if err := os.Mkdir(filepath.Join(dir, "sub.lua"), 0o755); err != nil {
		t.Fatal(err)
	}
	plugin := writeScript(t, t.TempDir(), "plugin-bin", "")
	single := writeScript(t, t.TempDir(), "one.lua", "")
	missing := filepath.Join(dir, "missing.lua")
	files, others, err := LuaFiles([]string{dir, "", plugin, single, missing}, false)
	if err != nil {
		t.Fatal(err)
	}
	// A folder named *.lua is not a script (the file watcher skips it
	// too); loading it fails with "is a directory".
	want := []string{filepath.Join(dir, "a.lua"), filepath.Join(dir, "b.lua"), single}
	if !slices.Equal(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}
	if !slices.Equal(others, []string{plugin}) {
		t.Errorf("others %v, want %v", others, []string{plugin})
	}
	if _, _, err := LuaFiles([]string{missing}, true); err == nil {
		t.Errorf("a missing path must be an error at launch")
	}
}
