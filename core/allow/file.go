// Package allow is mserve's secure invocation: the allowlist of callable
// functions with typed, constrained arguments; users with hashed secrets
// and the functions each may call; and the gate every call passes before it
// reaches the queue. Nothing undeclared, and nothing that breaks its
// declaration, ever reaches a servant.
package allow

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/mserve/mserve/sdk/decl"
)

// File is a parsed allowlist file. See docs/allowlist.md for the format.
type File struct {
	Name          string      // file name, for messages
	Funcs         []FuncEntry // declarations, in file order
	Roles         map[string]RoleEntry
	Users         []UserEntry
	Anonymous     *Grants // what callers without credentials may call; nil when the file says nothing
	AnonymousLine int     // where the anonymous line is
}

// FuncEntry is one declaration and where it was written.
type FuncEntry struct {
	Decl *decl.Func
	Line int
}

// RoleEntry is a named set of grants.
type RoleEntry struct {
	Grants Grants
	Line   int
}

// UserEntry is one user with the SHA-256 of its secret.
type UserEntry struct {
	Name   string
	Hash   [sha256.Size]byte
	Grants Grants
	Line   int
}

// Grants lists function patterns (path.Match globs such as hdb* or *) and
// roles (@name).
type Grants struct {
	Patterns []string
	Roles    []string
}

// LineError is an error at a line of an allowlist file.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }

// HashPrefix marks a secret's hash in the file.
const HashPrefix = "sha256:"

// HashSecret returns the form a secret takes in the file: sha256:HEX.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return HashPrefix + hex.EncodeToString(sum[:])
}

// entry is one logical line: a line plus its indented continuations.
type entry struct {
	text string
	line int
}

// maxLine is the longest line an allowlist may have.
const maxLine = 1 << 20

func entries(src []byte) ([]entry, int, error) {
	var out []entry
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		raw := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimSpace(raw)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
		case raw[0] == ' ' || raw[0] == '\t':
			if len(out) > 0 {
				out[len(out)-1].text += " " + trimmed
			} else {
				out = append(out, entry{trimmed, n})
			}
		default:
			out = append(out, entry{trimmed, n})
		}
	}
	if err := sc.Err(); err != nil {
		// A line too long must not silently end the file: what follows
		// could be the users whose absence opens every function.
		return nil, n + 1, fmt.Errorf("line longer than %d bytes (%v)", maxLine, err)
	}
	return out, 0, nil
}

// ParseFile parses an allowlist. name is used in error messages, which
// carry the line number of the problem.
func ParseFile(name string, src []byte) (*File, error) {
	f := &File{Name: name, Roles: map[string]RoleEntry{}}
	seenFunc := map[string]int{}
	seenUser := map[string]int{}
	lines, badLine, err := entries(src)
	if err != nil {
		return nil, &LineError{File: name, Line: badLine, Err: err}
	}
	for _, e := range lines {
		lineErr := func(format string, args ...any) error {
			return &LineError{File: name, Line: e.line, Err: fmt.Errorf(format, args...)}
		}
		word, rest, _ := strings.Cut(e.text, " ")
		switch {
		case word == "role" && !strings.HasPrefix(rest, "("):
			head, grants, ok := strings.Cut(rest, ":")
			roleName := strings.TrimSpace(head)
			if !ok || !validName(roleName) {
				return nil, lineErr("want: role NAME: PATTERN_OR_@ROLE ...")
			}
			if old, dup := f.Roles[roleName]; dup {
				return nil, lineErr("role %q is already defined at line %d", roleName, old.Line)
			}
			g, err := parseGrants(grants)
			if err != nil {
				return nil, lineErr("role %q: %v", roleName, err)
			}
			f.Roles[roleName] = RoleEntry{Grants: g, Line: e.line}
		case word == "user" && !strings.HasPrefix(rest, "("):
			head, grants, ok := strings.Cut(rest, ": ")
			if !ok {
				head, grants, ok = strings.Cut(rest, ":\t")
			}
			if !ok && strings.HasSuffix(rest, ":") {
				head, grants, ok = strings.TrimSuffix(rest, ":"), "", true
			}
			fields := strings.Fields(head)
			if !ok || len(fields) != 2 {
				return nil, lineErr("want: user NAME sha256:HEX: PATTERN_OR_@ROLE ... (mserve hash-secret prints the sha256: form)")
			}
			u := UserEntry{Name: fields[0], Line: e.line}
			if !validName(u.Name) {
				return nil, lineErr("user name %q: use letters, digits, '_', '.', '-' and '@'", u.Name)
			}
			if old, dup := seenUser[u.Name]; dup {
				return nil, lineErr("user %q is already defined at line %d", u.Name, old)
			}
			hash, ok := strings.CutPrefix(fields[1], HashPrefix)
			b, err := hex.DecodeString(hash)
			if !ok || err != nil || len(b) != sha256.Size {
				return nil, lineErr("user %q: the secret must be stored hashed, as sha256:<64 hex digits> (mserve hash-secret makes it), never in clear", u.Name)
			}
			copy(u.Hash[:], b)
			if u.Grants, err = parseGrants(grants); err != nil {
				return nil, lineErr("user %q: %v", u.Name, err)
			}
			seenUser[u.Name] = e.line
			f.Users = append(f.Users, u)
		case word == "anonymous:" || (word == "anonymous" && strings.HasPrefix(strings.TrimSpace(rest), ":")):
			if f.Anonymous != nil {
				return nil, lineErr("anonymous is already defined at line %d", f.AnonymousLine)
			}
			f.AnonymousLine = e.line
			grants := strings.TrimPrefix(strings.TrimSpace(strings.TrimPrefix(e.text, "anonymous")), ":")
			g, err := parseGrants(grants)
			if err != nil {
				return nil, lineErr("anonymous: %v", err)
			}
			f.Anonymous = &g
		default:
			fn, err := decl.Parse(e.text)
			if err != nil {
				return nil, lineErr("%v", err)
			}
			if old, dup := seenFunc[fn.Name]; dup {
				return nil, lineErr("function %q is already declared at line %d", fn.Name, old)
			}
			seenFunc[fn.Name] = e.line
			f.Funcs = append(f.Funcs, FuncEntry{Decl: fn, Line: e.line})
		}
	}
	return f, f.checkGrants()
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_.-@", c)) {
			return false
		}
	}
	return true
}

func parseGrants(s string) (Grants, error) {
	var g Grants
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
		if role, ok := strings.CutPrefix(w, "@"); ok {
			if !validName(role) {
				return g, fmt.Errorf("bad role reference %q", w)
			}
			g.Roles = append(g.Roles, role)
			continue
		}
		if _, err := path.Match(w, ""); err != nil {
			return g, fmt.Errorf("bad pattern %q: %v", w, err)
		}
		g.Patterns = append(g.Patterns, w)
	}
	return g, nil
}

// checkGrants refuses references to undefined roles, role cycles, and
// patterns that match no declared function (almost always a typo).
func (f *File) checkGrants() error {
	check := func(line int, who string, g Grants) error {
		for _, r := range g.Roles {
			if _, ok := f.Roles[r]; !ok {
				return &LineError{File: f.Name, Line: line, Err: fmt.Errorf("%s: role @%s is not defined", who, r)}
			}
		}
		for _, p := range g.Patterns {
			if !f.matchesAny(p) {
				return &LineError{File: f.Name, Line: line, Err: fmt.Errorf("%s: %q matches no declared function", who, p)}
			}
		}
		return nil
	}
	names := make([]string, 0, len(f.Roles))
	for name := range f.Roles {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return f.Roles[a].Line - f.Roles[b].Line }) // report the first line in the file
	for _, name := range names {
		r := f.Roles[name]
		if err := check(r.Line, "role "+name, r.Grants); err != nil {
			return err
		}
		if cyc := f.roleCycle(name, nil); cyc != nil {
			return &LineError{File: f.Name, Line: r.Line, Err: fmt.Errorf("roles refer to each other in a cycle: %s", strings.Join(cyc, " → "))}
		}
	}
	for _, u := range f.Users {
		if err := check(u.Line, "user "+u.Name, u.Grants); err != nil {
			return err
		}
	}
	if f.Anonymous != nil {
		if err := check(f.AnonymousLine, "anonymous", *f.Anonymous); err != nil {
			return err
		}
	}
	return nil
}

func (f *File) matchesAny(pattern string) bool {
	if pattern == "rpc.discover" {
		return true
	}
	for _, fn := range f.Funcs {
		if ok, _ := path.Match(pattern, fn.Decl.Name); ok {
			return true
		}
	}
	return false
}

func (f *File) roleCycle(name string, stack []string) []string {
	for i, s := range stack {
		if s == name {
			return append(stack[i:], name)
		}
	}
	stack = append(stack, name)
	for _, r := range f.Roles[name].Grants.Roles {
		if c := f.roleCycle(r, stack); c != nil {
			return c
		}
	}
	return nil
}

// expand returns the set of declared functions g grants, following roles.
func (f *File) expand(g Grants, into map[string]bool, seen map[string]bool) {
	for _, p := range g.Patterns {
		for _, fn := range f.Funcs {
			if ok, _ := path.Match(p, fn.Decl.Name); ok {
				into[fn.Decl.Name] = true
			}
		}
	}
	for _, r := range g.Roles {
		if !seen[r] {
			seen[r] = true
			f.expand(f.Roles[r].Grants, into, seen)
		}
	}
}
