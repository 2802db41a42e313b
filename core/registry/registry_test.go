package registry

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestRegister(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry[int]
		wantErr []string // substrings of the error for the last entry; nil for success
	}{
		{name: "a fresh name is registered", entries: []Entry[int]{{Name: "least", Source: "builtin", Value: 1}}},
		{name: "empty name is refused", entries: []Entry[int]{{Name: ""}},
			wantErr: []string{`algo name ""`, "non-empty", "no spaces"}},
		{name: "a space in the name is refused", entries: []Entry[int]{{Name: "my algo"}},
			wantErr: []string{`"my algo"`, "no spaces"}},
		{name: "a tab in the name is refused", entries: []Entry[int]{{Name: "my\talgo"}},
			wantErr: []string{"no spaces"}},
		{name: "a newline in the name is refused", entries: []Entry[int]{{Name: "my\nalgo"}},
			wantErr: []string{"no spaces"}},
		{name: "a carriage return in the name is refused", entries: []Entry[int]{{Name: "algo\r"}},
			wantErr: []string{"no spaces"}},
		{name: "a duplicate name is an error naming both sources",
			entries: []Entry[int]{{Name: "even", Source: "builtin"}, {Name: "even", Source: "scripts/even.lua"}},
			wantErr: []string{`algo "even"`, "scripts/even.lua", "builtin", "already provided"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New[int]("algo")
			var err error
			for _, e := range tt.entries {
				err = r.Register(e)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				last := tt.entries[len(tt.entries)-1]
				got, err := r.Lookup(last.Name)
				if err != nil || got != last {
					t.Errorf("Lookup(%q) = %+v, %v; want %+v", last.Name, got, err, last)
				}
				return
			}
			if err == nil {
				t.Fatal("Register succeeded, want an error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestRegisterDuplicateKeepsTheFirst(t *testing.T) {
	r := New[string]("router")
	r.MustRegister(Entry[string]{Name: "first", Source: "builtin", Value: "old"})
	if err := r.Register(Entry[string]{Name: "first", Source: "plugin", Value: "new"}); err == nil {
		t.Fatal("duplicate accepted")
	}
	if e, _ := r.Lookup("first"); e.Value != "old" || e.Source != "builtin" {
		t.Errorf("entry after a refused duplicate = %+v, want the first one", e)
	}
}

func TestMustRegisterPanicsOnError(t *testing.T) {
	tests := []struct {
		name  string
		setup []string
		reg   string
	}{
		{"bad name", nil, "a b"},
		{"duplicate", []string{"x"}, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New[int]("algo")
			for _, n := range tt.setup {
				r.MustRegister(Entry[int]{Name: n})
			}
			defer func() {
				if recover() == nil {
					t.Error("MustRegister did not panic")
				}
			}()
			r.MustRegister(Entry[int]{Name: tt.reg})
		})
	}
}

func TestReplaceAndRemove(t *testing.T) {
	tests := []struct {
		name      string
		op        func(r *Registry[int])
		lookup    string
		wantValue int
		wantFound bool
		wantNames []string
	}{
		{name: "Replace adds a new entry", op: func(r *Registry[int]) { r.Replace(Entry[int]{Name: "new", Value: 7}) },
			lookup: "new", wantValue: 7, wantFound: true, wantNames: []string{"a", "b", "new"}},
		{name: "Replace overwrites an existing entry", op: func(r *Registry[int]) { r.Replace(Entry[int]{Name: "a", Value: 9}) },
			lookup: "a", wantValue: 9, wantFound: true, wantNames: []string{"a", "b"}},
		{name: "Remove deletes the entry", op: func(r *Registry[int]) { r.Remove("a") },
			lookup: "a", wantFound: false, wantNames: []string{"b"}},
		{name: "Remove of an unknown name is a no-op", op: func(r *Registry[int]) { r.Remove("zzz") },
			lookup: "b", wantValue: 2, wantFound: true, wantNames: []string{"a", "b"}},
		{name: "a removed name can be registered again", op: func(r *Registry[int]) {
			r.Remove("a")
			if err := r.Register(Entry[int]{Name: "a", Value: 3}); err != nil {
				panic(err)
			}
		}, lookup: "a", wantValue: 3, wantFound: true, wantNames: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New[int]("algo")
			r.MustRegister(Entry[int]{Name: "b", Value: 2})
			r.MustRegister(Entry[int]{Name: "a", Value: 1})
			tt.op(r)
			e, err := r.Lookup(tt.lookup)
			if tt.wantFound != (err == nil) {
				t.Fatalf("Lookup(%q) error = %v, want found %v", tt.lookup, err, tt.wantFound)
			}
			if tt.wantFound && e.Value != tt.wantValue {
				t.Errorf("Lookup(%q).Value = %d, want %d", tt.lookup, e.Value, tt.wantValue)
			}
			if got := r.Names(); !slices.Equal(got, tt.wantNames) {
				t.Errorf("Names() = %v, want %v", got, tt.wantNames)
			}
		})
	}
}

func TestLookupErrorListsKnownNamesSorted(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  string
	}{
		{"empty registry", nil, `unknown dispatch algorithm "nope" (known: )`},
		{"names sorted in the message", []string{"orig", "even", "match", "least"},
			`unknown dispatch algorithm "nope" (known: even, least, match, orig)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New[int]("dispatch algorithm")
			for _, n := range tt.names {
				r.MustRegister(Entry[int]{Name: n})
			}
			_, err := r.Lookup("nope")
			if err == nil || err.Error() != tt.want {
				t.Errorf("Lookup error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestEntriesAndNamesSorted(t *testing.T) {
	tests := []struct {
		name  string
		names []string
	}{
		{"empty", nil},
		{"one", []string{"x"}},
		{"several in reverse order", []string{"z", "y", "b", "a"}},
		{"mixed case sorts bytewise", []string{"b", "B", "a", "A", "lua.even"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New[string]("algo")
			for _, n := range tt.names {
				r.MustRegister(Entry[string]{Name: n, Value: "v-" + n, Summary: "s-" + n})
			}
			want := slices.Clone(tt.names)
			slices.Sort(want)
			if want == nil {
				want = []string{}
			}
			names := r.Names()
			if !slices.Equal(names, want) || names == nil {
				t.Errorf("Names() = %#v, want %#v", names, want)
			}
			es := r.Entries()
			if len(es) != len(want) || es == nil {
				t.Fatalf("Entries() = %#v, want %d entries", es, len(want))
			}
			for i, e := range es {
				if e.Name != want[i] || e.Value != "v-"+want[i] || e.Summary != "s-"+want[i] {
					t.Errorf("Entries()[%d] = %+v, want the entry %q", i, e, want[i])
				}
			}
		})
	}
}

// TestConcurrentUse exercises every method from many goroutines; run with
// -race.
func TestConcurrentUse(t *testing.T) {
	r := New[int]("algo")
	r.MustRegister(Entry[int]{Name: "fixed", Value: -1})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				name := fmt.Sprintf("g%d-%d", g, i%10)
				switch i % 6 {
				case 0:
					r.Register(Entry[int]{Name: name, Value: i})
				case 1:
					r.Replace(Entry[int]{Name: name, Value: i})
				case 2:
					r.Lookup(name)
					r.Lookup("missing") // builds the error from Names
				case 3:
					if !slices.IsSorted(r.Names()) {
						t.Error("Names not sorted under concurrent use")
					}
				case 4:
					r.Entries()
				case 5:
					r.Remove(name)
				}
			}
		}()
	}
	wg.Wait()
	if e, err := r.Lookup("fixed"); err != nil || e.Value != -1 {
		t.Errorf("an untouched entry changed: %+v, %v", e, err)
	}
}
