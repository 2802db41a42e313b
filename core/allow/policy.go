package allow

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"

	"github.com/mserve/mserve/sdk/decl"
)

// Func is a declaration compiled for checking calls (decl.Checker), with
// where the allowlist declares it.
type Func struct {
	*decl.Checker
	Line int // where the allowlist declares it; 0 when a servant did
}

// CompileFunc compiles a declaration for checking calls (see decl.Compile).
func CompileFunc(d *decl.Func) (*Func, error) {
	c, err := decl.Compile(d)
	if err != nil {
		return nil, err
	}
	return &Func{Checker: c}, nil
}

// User is a caller known to the policy.
type User struct {
	Name    string
	hash    [sha256.Size]byte
	allowed map[string]bool // nil: every declared function
}

// May reports whether the user may call fn. (A user allowed everything
// declared may call fn "" too: May("") tells that case apart.)
func (u *User) May(fn string) bool { return u.allowed == nil || u.allowed[fn] }

// Anonymous is the name calls without credentials run as.
const Anonymous = ""

// Policy is a compiled allowlist file.
type Policy struct {
	File   string
	funcs  map[string]*Func
	order  []string
	users  map[string]*User
	byHash map[[sha256.Size]byte]*User
	anon   *User
}

// Compile turns a parsed file into a policy: conditions compiled, grants
// expanded into each user's set of functions.
func Compile(f *File) (*Policy, error) {
	p := &Policy{File: f.Name, funcs: map[string]*Func{}, users: map[string]*User{}, byHash: map[[sha256.Size]byte]*User{}}
	for _, e := range f.Funcs {
		cf, err := CompileFunc(e.Decl)
		if err != nil {
			return nil, &LineError{File: f.Name, Line: e.Line, Err: err}
		}
		cf.Line = e.Line
		p.funcs[e.Decl.Name] = cf
		p.order = append(p.order, e.Decl.Name)
	}
	for _, ue := range f.Users {
		u := &User{Name: ue.Name, hash: ue.Hash, allowed: map[string]bool{}}
		f.expand(ue.Grants, u.allowed, map[string]bool{})
		if other, dup := p.byHash[ue.Hash]; dup {
			return nil, &LineError{File: f.Name, Line: ue.Line, Err: fmt.Errorf("user %q has the same secret as %q: give each user its own", ue.Name, other.Name)}
		}
		p.users[u.Name] = u
		p.byHash[u.hash] = u
	}
	switch {
	case f.Anonymous != nil:
		p.anon = &User{Name: Anonymous, allowed: map[string]bool{}}
		f.expand(*f.Anonymous, p.anon.allowed, map[string]bool{})
	case len(f.Users) > 0:
		p.anon = &User{Name: Anonymous, allowed: map[string]bool{}} // users defined: anonymous callers get nothing
	default:
		p.anon = &User{Name: Anonymous} // no users: everybody may call every declared function
	}
	return p, nil
}

// Load parses and compiles an allowlist.
func Load(name string, src []byte) (*Policy, error) {
	f, err := ParseFile(name, src)
	if err != nil {
		return nil, err
	}
	return Compile(f)
}

// Func returns the compiled declaration of fn, or nil.
func (p *Policy) Func(fn string) *Func { return p.funcs[fn] }

// Functions returns the declared function names in file order.
func (p *Policy) Functions() []string { return p.order }

// Users returns the user names, sorted.
func (p *Policy) Users() []string {
	out := make([]string, 0, len(p.users))
	for n := range p.users {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// HasUsers reports whether the file defines users.
func (p *Policy) HasUsers() bool { return len(p.users) > 0 }

// User returns the user called name; Anonymous gives the anonymous caller.
func (p *Policy) User(name string) *User {
	if name == Anonymous {
		return p.anon
	}
	return p.users[name]
}

// ErrBadCredentials is returned when a secret matches no user.
var ErrBadCredentials = errors.New("unknown user or wrong secret")

// Authenticate finds the user a secret belongs to. With a user name, the
// secret must be that user's (compared in constant time); without one, the
// secret alone must identify the user (bearer tokens).
func (p *Policy) Authenticate(user, secret string) (*User, error) {
	sum := sha256.Sum256([]byte(secret))
	if user == "" {
		if u := p.byHash[sum]; u != nil {
			return u, nil
		}
		return nil, ErrBadCredentials
	}
	u := p.users[user]
	if u == nil || subtle.ConstantTimeCompare(u.hash[:], sum[:]) != 1 {
		return nil, ErrBadCredentials
	}
	return u, nil
}
