package script

// The Lua examples of docs/scripting.md and examples/dispatch-lua load and
// do what the text says.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

var fenceRE = regexp.MustCompile("(?s)```lua\n(.*?)```")

// luaBlocks returns the ```lua blocks of a Markdown file.
func luaBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range fenceRE.FindAllSubmatch(b, -1) {
		out = append(out, string(m[1]))
	}
	return out
}

func TestDocsLuaExamplesLoad(t *testing.T) {
	blocks := luaBlocks(t, filepath.Join("..", "..", "docs", "scripting.md"))
	if len(blocks) < 3 {
		t.Fatalf("found %d lua blocks in docs/scripting.md", len(blocks))
	}
	for i, src := range blocks {
		t.Run(fmt.Sprint(i+1), func(t *testing.T) {
			h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "doc.lua", src)}, Budget: time.Second})
			set := h.Set()
			// Every algorithm and picker decides a plain round without
			// failing; every routing function routes.
			for _, name := range append(set.Names(KindAlgorithm), set.Names(KindPicker)...) {
				a := NewAlgorithm(h, name, failFallback(t, name))
				round(a, queue("a", "g:b"), views(t0, srv{}, srv{tags: []string{"gpu"}}, srv{busy: 1}), t0)
			}
			for _, name := range set.Names(KindRoute) {
				fb := &fixedRouter{route: "fallback"}
				if _, err := NewRouter(h, name, fb).Route(&dispatch.Call{Method: "f", Params: []byte(`["IBM"]`), User: "alice"}); err != nil || fb.n.Load() != 0 {
					t.Errorf("route %s failed: %v", name, err)
				}
			}
		})
	}
}

// TestDocsRegisteringExample checks the first example's three functions.
func TestDocsRegisteringExample(t *testing.T) {
	src := luaBlocks(t, filepath.Join("..", "..", "docs", "scripting.md"))[0]
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "doc.lua", src)}})
	calls := queue("a", "b")
	vs := views(t0, srv{busy: 1}, srv{}, srv{})
	if o := round(NewAlgorithm(h, "first_free", failFallback(t, "first_free")), calls, cloneViews(vs), t0); describe(o.assigned, calls) != "[#1(a)→s2 #2(b)→s3]" {
		t.Errorf("first_free assigned %s", describe(o.assigned, calls))
	}
	if o := round(NewAlgorithm(h, "last_free", failFallback(t, "last_free")), calls, cloneViews(vs), t0); describe(o.assigned, calls) != "[#1(a)→s3 #2(b)→s2]" {
		t.Errorf("last_free assigned %s", describe(o.assigned, calls))
	}
	r := NewRouter(h, "user_sym", &fixedRouter{route: "fallback"})
	for _, tc := range []struct{ user, params, want string }{
		{"alice", `["IBM",2]`, "alice/IBM"},
		{"", `["IBM"]`, "/IBM"},
		{"bob", ``, "bob/"},
		{"bob", `{"sym":"IBM"}`, "bob/"},
	} {
		if got, _ := r.Route(&dispatch.Call{Method: "f", User: tc.user, Params: []byte(tc.params)}); got != tc.want {
			t.Errorf("user_sym(%q, %s) = %q, want %q", tc.user, tc.params, got, tc.want)
		}
	}
}

// TestDocsGPUWalkthrough checks the walkthrough's gpu picker does what the
// text says.
func TestDocsGPUWalkthrough(t *testing.T) {
	blocks := luaBlocks(t, filepath.Join("..", "..", "docs", "scripting.md"))
	var src string
	for _, b := range blocks {
		if regexp.MustCompile(`is_gpu_call`).MatchString(b) {
			src = b
		}
	}
	if src == "" {
		t.Fatal("no gpu picker in docs/scripting.md")
	}
	h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "gpu.lua", src)}})
	gpu := []string{"gpu"}
	tests := []struct {
		name     string
		servants []srv
		calls    []string
		want     []string // servant of each call, "" for waiting
	}{
		{"gpu calls to gpu servants, others elsewhere", []srv{{tags: gpu}, {}, {tags: gpu}}, []string{"gpu_train:x", "proc1:y", "gpu_infer:z"}, []string{"s1", "s2", "s3"}},
		{"a plain call takes a gpu servant when nothing else is free", []srv{{tags: gpu}, {busy: 1}}, []string{"proc1:y"}, []string{"s1"}},
		{"a gpu call waits for a gpu servant", []srv{{tags: gpu, busy: 1}, {}}, []string{"gpu_train:x", "proc1:y"}, []string{"", "s2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := queue(tc.calls...)
			o := round(NewAlgorithm(h, "gpu", failFallback(t, "gpu")), calls, views(t0, tc.servants...), t0)
			got := make([]string, len(calls))
			for _, a := range o.assigned {
				got[a.Call] = fmt.Sprintf("s%d", a.Servant+1)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("assigned %v, want %v", got, tc.want)
			}
		})
	}
}

// TestExamplePreferScript checks examples/dispatch-lua/prefer.lua: calls
// go to PREFERRED (s2) while it is free, else to the free servant with the
// fewest pending calls.
func TestExamplePreferScript(t *testing.T) {
	h := newHost(t, Config{Files: []string{filepath.Join("..", "..", "examples", "dispatch-lua", "prefer.lua")}})
	calls := queue("a", "b", "c")
	vs := views(t0, srv{slots: 2, busy: 1}, srv{}, srv{})
	o := round(NewAlgorithm(h, "prefer", failFallback(t, "prefer")), calls, vs, t0)
	if got := describe(o.assigned, calls); got != "[#1(a)→s2 #2(b)→s3 #3(c)→s1]" {
		t.Errorf("prefer assigned %s", got)
	}
}

// TestExampleReadmeShowsTheScript checks that the code shown in
// examples/dispatch-lua/README.md is the code of prefer.lua.
func TestExampleReadmeShowsTheScript(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "dispatch-lua")
	blocks := luaBlocks(t, filepath.Join(dir, "README.md"))
	script, err := os.ReadFile(filepath.Join(dir, "prefer.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 || !strings.HasSuffix(string(script), blocks[0]) {
		t.Errorf("README.md does not show the code of prefer.lua")
	}
}
