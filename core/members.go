package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/link"
	"github.com/mserve/mserve/core/register"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// member is one servant's link as the balancer runs it.
type member struct {
	servant *engine.Servant
	stop    context.CancelFunc // ends the link
	done    chan struct{}      // closed when the link has returned
	dynamic bool               // joined after start (registered or discovered): it may leave
}

// servantLink is what the balancer needs of a link, native or HTTP.
type servantLink interface {
	Attach(*engine.Servant)
	Run(context.Context)
	Kick()
	engine.Transport
}

// linkConfig is the link configuration for the servant called name.
func (b *Balancer) linkConfig(name, addr, secret string) link.Config {
	return link.Config{Name: name, Addr: addr, Secret: secret, MaxFrame: b.cfg.MaxFrame, Log: b.log,
		HealthInterval: b.cfg.HealthInterval, HealthTimeout: b.cfg.HealthTimeout,
		OnHello: func(functions []string) { b.gate.Announce(name, functions) }}
}

// addLink adds a servant mserve dials and starts its link. local servants
// are redialled quickly while their process starts.
func (b *Balancer) addLink(spec engine.ServantSpec, secret string, local bool, conns int) servantLink {
	l := b.dialLink(spec.Name, spec.Addr, secret, local, conns)
	b.startMember(spec, l, false)
	return l
}

// dialLink returns a link that dials the servant at addr: over HTTP for an
// http(s):// URL (with at most conns requests in flight; see
// ServantSpec.Conns), else over the native protocol.
func (b *Balancer) dialLink(name, addr, secret string, local bool, conns int) servantLink {
	cfg := b.linkConfig(name, addr, secret)
	cfg.HTTPConns = conns
	if local {
		cfg.MaxBackoff = 50 * time.Millisecond // a local process starting: dialling often is cheap and finds it sooner
		cfg.SameName = true                    // mserve named it (MSERVE_SERVANT_NAME)
	}
	if isHTTP(addr) {
		return link.NewHTTP(cfg)
	}
	return link.New(cfg)
}

// startMember adds the servant to the engine with l as its transport and
// runs l until the balancer stops or the servant is removed. Caller does
// not hold b.mu.
func (b *Balancer) startMember(spec engine.ServantSpec, l servantLink, dynamic bool) *member {
	ctx, stop := context.WithCancel(b.ctx)
	m := &member{stop: stop, done: make(chan struct{}), dynamic: dynamic}
	m.servant = b.eng.AddServant(spec, l)
	l.Attach(m.servant)
	b.mu.Lock()
	b.members[spec.Name] = m
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(m.done)
		l.Run(ctx)
	}()
	return m
}

// AddServant adds a servant that is already running, as -servants does,
// while mserve runs (for discovery): mserve dials it with the servant
// secret and sends it calls once it answers. The name must be new.
func (b *Balancer) AddServant(spec ServantSpec) error {
	if b.ctx == nil || b.ctx.Err() != nil {
		return errors.New("mserve is not running")
	}
	if spec.Name == "" {
		spec.Name = spec.Addr
	}
	if _, err := parseServant(spec.Addr); err != nil {
		return fmt.Errorf("servant %q: %w", spec.Name, err)
	}
	b.joinMu.Lock() // no registration or other addition under the same name meanwhile
	defer b.joinMu.Unlock()
	b.mu.Lock()
	_, taken := b.members[spec.Name]
	b.mu.Unlock()
	if taken || b.joining[spec.Name] {
		return fmt.Errorf("a servant named %q is already in the balancer", spec.Name)
	}
	b.gate.Expect(spec.Name)
	l := b.dialLink(spec.Name, spec.Addr, b.cfg.ServantSecret, false, spec.Conns)
	b.startMember(engine.ServantSpec{Name: spec.Name, Addr: spec.Addr, Slots: spec.Slots, Tags: spec.Tags}, l, true)
	b.log.Info("servant added", zap.String("servant", spec.Name), zap.String("addr", spec.Addr))
	return nil
}

// RemoveServant takes a servant that joined while mserve runs (registered
// or discovered) out for good: it gets no more calls, and calls still
// running on it are handled as if it were lost under them (idempotent ones
// go to another servant, the others are answered "servant lost" with
// cause). Servants configured at launch cannot be removed: drain them.
func (b *Balancer) RemoveServant(name string, cause error) error {
	b.mu.Lock()
	m := b.members[name]
	if m != nil && m.dynamic {
		delete(b.members, name)
	}
	b.mu.Unlock()
	switch {
	case m == nil:
		return fmt.Errorf("no servant named %q", name)
	case !m.dynamic:
		return fmt.Errorf("servant %q was configured at launch and cannot be removed; drain it instead", name)
	}
	b.eng.RemoveServant(m.servant, cause)
	m.stop()
	<-m.done
	b.gate.Forget(name)
	b.log.Info("servant removed", zap.String("servant", name), zap.NamedError("cause", cause))
	return nil
}

// join adds a servant that registered (see core/register): it is
// register.Config.Join. A servant already registered under the name is
// replaced if it is failing its health checks (most likely the same servant
// come back before its old connection was seen to die); while it is
// healthy, the newcomer is refused with a conflict it may retry. The
// returned function starts serving the connection; call it after answering
// the registration.
func (b *Balancer) join(reg *register.Registration) (func(bool), error) {
	name, conn, p := reg.Name, reg.Conn, reg.Params
	b.joinMu.Lock() // no other addition under the same name meanwhile
	defer b.joinMu.Unlock()
	b.mu.Lock()
	old := b.members[name]
	b.mu.Unlock()
	if old != nil && !old.dynamic {
		return nil, fmt.Errorf("the name %q belongs to a servant configured at launch; register under another name", name)
	}
	if b.joining[name] {
		return nil, jsonrpc.Errorf(jsonrpc.Conflict, "conflict: a servant is registering as %q right now; retry later, or register under another name", name)
	}
	if old != nil {
		if old.servant.View().Healthy {
			return nil, jsonrpc.Errorf(jsonrpc.Conflict, "conflict: a servant registered as %q is still connected and healthy; retry later, or register under another name", name)
		}
		b.RemoveServant(name, errors.New("replaced by a new registration under the same name"))
	}
	addr := conn.RemoteAddr().String()
	l := link.Adopt(b.linkConfig(name, addr, ""), conn, reg.Reader, &wire.HelloResult{
		Protocol: p.Protocol, Name: p.Name, Slots: p.Slots, Tags: p.Tags, Functions: p.Functions,
	})
	// The name is held from now until the servant has been told it joined
	// (or telling it failed), so that no other registration takes it
	// meanwhile.
	if b.joining == nil {
		b.joining = map[string]bool{}
	}
	b.joining[name] = true
	return func(told bool) {
		b.joinMu.Lock()
		defer b.joinMu.Unlock()
		delete(b.joining, name)
		if !told {
			return
		}
		m := b.startMember(engine.ServantSpec{Name: name, Addr: addr}, l, true)
		// When the servant hangs up, it leaves.
		go func() {
			select {
			case <-m.done:
			case <-b.ctx.Done():
				return
			}
			b.mu.Lock()
			current := b.members[name] == m
			b.mu.Unlock()
			if current {
				b.RemoveServant(name, errors.New("the registered servant disconnected"))
			}
		}()
	}, nil
}

// Algorithm returns the name of the dispatch algorithm in force.
func (b *Balancer) Algorithm() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.algoName
}

// Routing returns the routing function or expression in force.
func (b *Balancer) Routing() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.routing
}

// SetAlgorithm switches dispatch to the algorithm called name (built in,
// scripted or from a plugin) for the next round; calls already assigned
// stay where they are. An unknown name changes nothing.
func (b *Balancer) SetAlgorithm(name string) error {
	a, err := algo.New(b.algos, name, b.cfg.algoConfig())
	if err != nil {
		return err
	}
	b.mu.Lock()
	old := b.algoName
	b.algoName = name
	b.eng.SetAlgorithm(a)
	b.mu.Unlock()
	if old != name {
		b.log.Info("dispatch algorithm changed", zap.String("from", old), zap.String("to", name))
	}
	return nil
}

// SetRouting switches the routing function (a name, or an expr expression
// over the call) for calls arriving from now on. One that does not compile
// changes nothing.
func (b *Balancer) SetRouting(spec string) error {
	r, err := chooseRouter(b.routes, spec)
	if err != nil {
		return err
	}
	b.mu.Lock()
	old := b.routing
	b.routing = spec
	b.eng.SetRouter(r)
	b.mu.Unlock()
	if old != spec {
		b.log.Info("routing changed", zap.String("from", old), zap.String("to", spec))
	}
	return nil
}
