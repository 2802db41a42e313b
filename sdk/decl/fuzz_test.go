package decl

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mserve/mserve/sdk/fuzzseed"

	"github.com/mserve/mserve/sdk/jsonrpc"
)

func checkType(t *testing.T, ty Type) {
	t.Helper()
	if ty.Name == "list" {
		if ty.Elem == nil {
			t.Fatal("list without an element type")
		}
		checkType(t, *ty.Elem)
		return
	}
	if ty.Elem != nil || ty.Name == "list<T>" || !slices.Contains(Types, ty.Name) {
		t.Fatalf("type %+v is not one of Types", ty)
	}
}

func FuzzDeclParse(f *testing.F) {
	fuzzseed.Add(f, "FuzzDeclParse", func(b []byte) { f.Add(string(b)) })
	f.Fuzz(func(t *testing.T, src string) {
		fn, err := Parse(src)
		if err != nil {
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *decl.Error", err, err)
			}
			if de.Col < 1 || de.Col > len(src)+1 {
				t.Fatalf("Col %d outside 1..%d", de.Col, len(src)+1)
			}
			return
		}
		if fn.Name == "" || strings.HasPrefix(fn.Name, "rpc.") || !utf8.ValidString(fn.Name) {
			t.Fatalf("accepted function name %q", fn.Name)
		}
		if fn.Source != strings.TrimSpace(src) {
			t.Fatalf("Source = %q", fn.Source)
		}
		seen := map[string]bool{}
		for i, p := range fn.Params {
			if p.Name == "" || seen[p.Name] || !utf8.ValidString(p.Name) {
				t.Fatalf("accepted parameter name %q", p.Name)
			}
			seen[p.Name] = true
			checkType(t, p.Type)
			if p.Default != nil && !jsonrpc.Valid(p.Default) {
				t.Fatalf("default %q is not JSON", p.Default)
			}
			if i > 0 && fn.Params[i-1].Optional() && !p.Optional() {
				t.Fatalf("required %q after an optional parameter", p.Name)
			}
		}
		s := fn.String()
		again, err := Parse(s)
		if err != nil {
			t.Fatalf("String() = %q does not parse: %v", s, err)
		}
		if !sameFunc(fn, again) {
			t.Fatalf("round trip through %q: %+v became %+v", s, *fn, *again)
		}
		if s2 := again.String(); s2 != s {
			t.Fatalf("String() is not canonical: %q then %q", s, s2)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(`sleep(ms int, label string = "nap", tags list<symbol> = []) idempotent`); err != nil {
			b.Fatal(err)
		}
	}
}
