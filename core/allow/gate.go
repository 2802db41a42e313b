package allow

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/logging"
	"github.com/mserve/mserve/sdk/decl"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// Gate is the check every call passes before the queue. It holds the
// allowlist file's policy (reloadable) and what each servant declared.
//
// With a file, the callable functions are the file's; each call must match
// its declaration, the caller must be granted it, and some servant must
// serve it (a servant that declares nothing is taken to serve everything;
// a servant can never add to the file). Without a file, the callable
// functions are those the servants declared, checked against their
// declarations; while some servant declares nothing (a plain JSON-RPC
// server) or has not connected yet, calls to other functions are passed to
// it to judge.
type Gate struct {
	path   string // allowlist file; "" when none
	log    *zap.Logger
	policy atomic.Pointer[Policy]

	mu       sync.Mutex
	servants map[string]*servantDecls // by servant name
	derived  atomic.Pointer[derived]

	authLog logging.Limiter
}

type servantDecls struct {
	announced bool
	funcs     map[string]*decl.Func // nil: declared nothing
}

// derived is what the servants' declarations add up to, recomputed on
// every announcement.
type derived struct {
	served   map[string]bool  // functions some servant declares
	funcs    map[string]*Func // compiled declarations (first servant to declare wins)
	order    []string
	wildcard bool // some servant may serve anything (declared nothing or not yet connected)
}

// NewGate returns a gate for the named servants. path is the allowlist
// file, or "" for none; a file that fails to load is an error.
func NewGate(path string, servants []string, log *zap.Logger) (*Gate, error) {
	if log == nil {
		log = zap.NewNop()
	}
	g := &Gate{path: path, log: log, servants: map[string]*servantDecls{}}
	for _, s := range servants {
		g.servants[s] = &servantDecls{}
	}
	if path != "" {
		p, err := LoadPath(path)
		if err != nil {
			return nil, err
		}
		g.policy.Store(p)
	}
	g.recompute()
	return g, nil
}

// LoadPath reads and compiles an allowlist file.
func LoadPath(path string) (*Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Load(path, src)
}

// Policy returns the file's policy, or nil without a file.
func (g *Gate) Policy() *Policy { return g.policy.Load() }

// Path returns the allowlist file's path, or "".
func (g *Gate) Path() string { return g.path }

// Reload re-reads the file. On error the policy in force stays and the
// error (with its line number) is returned.
func (g *Gate) Reload() error {
	if g.path == "" {
		return nil
	}
	p, err := LoadPath(g.path)
	if err != nil {
		return err
	}
	g.policy.Store(p)
	return nil
}

// Announce records the declarations servant announced when it connected;
// nil means it declared nothing. A declaration that does not parse or
// compile is logged and left out.
func (g *Gate) Announce(servant string, declarations []string) {
	var funcs map[string]*decl.Func
	if declarations != nil {
		funcs = map[string]*decl.Func{}
		for _, src := range declarations {
			d, err := decl.Parse(src)
			if err != nil {
				g.log.Warn("servant declared a function mserve cannot read; ignoring it",
					zap.String("servant", servant), zap.String("declaration", src), zap.Error(err))
				continue
			}
			funcs[d.Name] = d
		}
	}
	g.mu.Lock()
	g.servants[servant] = &servantDecls{announced: true, funcs: funcs}
	g.mu.Unlock()
	g.recompute()
}

// Forget drops what servant declared, when it leaves for good: the
// functions only it served are served no more.
func (g *Gate) Forget(servant string) {
	g.mu.Lock()
	delete(g.servants, servant)
	g.mu.Unlock()
	g.recompute()
}

// Expect adds a servant that has not said what it serves yet (one that
// joined after start): until it does, calls it might serve are passed on.
func (g *Gate) Expect(servant string) {
	g.mu.Lock()
	if g.servants[servant] == nil {
		g.servants[servant] = &servantDecls{}
	}
	g.mu.Unlock()
	g.recompute()
}

func (g *Gate) recompute() {
	g.mu.Lock()
	defer g.mu.Unlock()
	d := &derived{served: map[string]bool{}, funcs: map[string]*Func{}}
	old := g.derived.Load()
	names := make([]string, 0, len(g.servants))
	for n := range g.servants {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := g.servants[n]
		if !s.announced || s.funcs == nil {
			d.wildcard = true
			continue
		}
		for _, fname := range sortedKeys(s.funcs) {
			fd := s.funcs[fname]
			d.served[fname] = true
			if _, seen := d.funcs[fname]; seen {
				if d.funcs[fname].Decl.String() != fd.String() {
					g.log.Warn("servants declare a function differently; the first declaration is used",
						zap.String("function", fname), zap.String("used", d.funcs[fname].Decl.String()),
						zap.String("servant", n), zap.String("ignored", fd.String()))
				}
				continue
			}
			if old != nil && old.funcs[fname] != nil && old.funcs[fname].Decl.String() == fd.String() {
				d.funcs[fname] = old.funcs[fname] // keep the compiled form
			} else if cf, err := CompileFunc(fd); err == nil {
				d.funcs[fname] = cf
			} else {
				g.log.Warn("servant's declaration does not compile; calls to it are refused",
					zap.String("servant", n), zap.String("function", fname), zap.Error(err))
				delete(d.served, fname)
				continue
			}
			d.order = append(d.order, fname)
		}
	}
	g.derived.Store(d)
}

// Unserved is the error for a call that passed the gate but that no servant
// turned out to serve once they had all said what they serve: unavailable
// for a function the allowlist file declares, method not found otherwise.
func (g *Gate) Unserved(method string) *jsonrpc.Error {
	if p := g.policy.Load(); p != nil && p.funcs[method] != nil {
		return jsonrpc.Errorf(jsonrpc.Unavailable, "unavailable: %s is declared in %s but no servant serves it", method, p.File)
	}
	return jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found: no servant serves %q", method)
}

// notFound is the error for a function the caller may not call. It does
// not say whether the function exists: a caller without the grant learns
// nothing about it.
func notFound(method string) *jsonrpc.Error {
	return jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found: %q is not a function you may call", method)
}

// Check lets c through or says why not. user is the authenticated caller
// (Anonymous for none). On success c.Params may have been extended with
// defaults and c.User is set.
func (g *Gate) Check(user string, c *engine.Call) *jsonrpc.Error {
	d := g.derived.Load()
	if p := g.policy.Load(); p != nil {
		u := p.User(user)
		if u == nil {
			return jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: user %q is no longer known; connect again", user)
		}
		f := p.funcs[c.Method]
		if f == nil || !u.May(c.Method) {
			return notFound(c.Method)
		}
		if !d.wildcard && !d.served[c.Method] {
			return jsonrpc.Errorf(jsonrpc.Unavailable,
				"unavailable: %s is declared in %s but no servant serves it", c.Method, p.File)
		}
		return g.pass(user, f, c)
	}
	if f := d.funcs[c.Method]; f != nil {
		return g.pass(user, f, c)
	}
	if d.wildcard {
		c.User = user
		return nil // a servant that declared nothing judges it
	}
	return notFound(c.Method)
}

func (g *Gate) pass(user string, f *Func, c *engine.Call) *jsonrpc.Error {
	params, err := f.Check(c.Params)
	if err != nil {
		return err
	}
	c.Params = params
	c.User = user
	c.Idempotent = f.Decl.Idempotent
	return nil
}

// Authenticate checks credentials: a user name (optional for bearer
// tokens) and a secret. It returns the user's name. Failures are logged,
// at most once per source every ten seconds.
func (g *Gate) Authenticate(user, secret, source string) (string, *jsonrpc.Error) {
	p := g.policy.Load()
	if p == nil || !p.HasUsers() {
		return "", jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: this mserve has no users; call without credentials")
	}
	u, err := p.Authenticate(user, secret)
	if err != nil {
		// One client retrying from new ports is one source.
		if n, ok := g.authLog.AllowSource(source, time.Now()); ok {
			g.log.Warn("authentication failed", zap.String("source", source), zap.String("user", user),
				zap.Int("failures_since_last_report", n))
		}
		return "", jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: unknown user or wrong secret")
	}
	return u.Name, nil
}

// Functions returns the declarations user may call, for discovery.
func (g *Gate) Functions(user string) []*Func {
	var out []*Func
	if p := g.policy.Load(); p != nil {
		u := p.User(user)
		if u == nil {
			return nil
		}
		for _, n := range p.order {
			if u.May(n) {
				out = append(out, p.funcs[n])
			}
		}
		return out
	}
	d := g.derived.Load()
	for _, n := range d.order {
		out = append(out, d.funcs[n])
	}
	return out
}

// Declarations returns the declarations user may call, as text, for a
// balancer above this one (rpc.hello). It returns nil when, without a
// file, some servant has not said what it serves: anything may be served.
func (g *Gate) Declarations(user string) []string {
	if g.policy.Load() == nil && g.derived.Load().wildcard {
		return nil
	}
	fs := g.Functions(user)
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Decl.String()
	}
	return out
}

// String describes the gate for logs.
func (g *Gate) String() string {
	if p := g.policy.Load(); p != nil {
		return fmt.Sprintf("allowlist %s: %d functions, %d users", p.File, len(p.order), len(p.users))
	}
	return "no allowlist: servants' declarations"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
