// Package registry names the pluggable parts of mserve (dispatch algorithms,
// routing functions) so that built-ins, Lua scripts and compiled plugins are
// selected the same way: by name, at launch, from MSERVE_ALGO and
// MSERVE_ROUTING.
package registry

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Entry is one named part.
type Entry[T any] struct {
	Name    string // the name it is selected by
	Summary string // one line for -h and the status page
	Source  string // "builtin", a script path or a plugin binary
	Value   T      // the part itself
}

// Registry maps names to entries. It is safe for concurrent use.
type Registry[T any] struct {
	kind    string // what the entries are, for error messages
	mu      sync.RWMutex
	entries map[string]Entry[T]
}

// New returns an empty registry of kind (e.g. "dispatch algorithm").
func New[T any](kind string) *Registry[T] {
	return &Registry[T]{kind: kind, entries: map[string]Entry[T]{}}
}

// Register adds e. It fails when the name is empty, has spaces, or is
// already taken.
func (r *Registry[T]) Register(e Entry[T]) error {
	if e.Name == "" || strings.ContainsAny(e.Name, " \t\r\n") {
		return fmt.Errorf("%s name %q: must be non-empty and have no spaces", r.kind, e.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.entries[e.Name]; ok {
		return fmt.Errorf("%s %q from %s is already provided by %s", r.kind, e.Name, e.Source, old.Source)
	}
	r.entries[e.Name] = e
	return nil
}

// MustRegister is Register for built-ins; it panics on error.
func (r *Registry[T]) MustRegister(e Entry[T]) {
	if err := r.Register(e); err != nil {
		panic(err)
	}
}

// Replace adds or replaces e, for reloaded scripts.
func (r *Registry[T]) Replace(e Entry[T]) {
	r.mu.Lock()
	r.entries[e.Name] = e
	r.mu.Unlock()
}

// Remove deletes the entry called name.
func (r *Registry[T]) Remove(name string) {
	r.mu.Lock()
	delete(r.entries, name)
	r.mu.Unlock()
}

// Lookup returns the entry called name, or an error that lists the known
// names.
func (r *Registry[T]) Lookup(name string) (Entry[T], error) {
	r.mu.RLock()
	e, ok := r.entries[name]
	r.mu.RUnlock()
	if !ok {
		return e, fmt.Errorf("unknown %s %q (known: %s)", r.kind, name, strings.Join(r.Names(), ", "))
	}
	return e, nil
}

// Entries returns all entries sorted by name.
func (r *Registry[T]) Entries() []Entry[T] {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Entry[T], 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry[T]) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Names returns the registered names, sorted.
func (r *Registry[T]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
