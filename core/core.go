// Package core is mserve as a library: New builds a Balancer from a Config
// (front ends, engine, servant links, supervised local servants), Start
// runs it, Shutdown stops it without losing a call.
package core

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mserve/mserve/core/admin"
	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/core/connlimit"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/frontend"
	"github.com/mserve/mserve/core/httpfront"
	"github.com/mserve/mserve/core/metrics"
	"github.com/mserve/mserve/core/native"
	"github.com/mserve/mserve/core/pluginhost"
	"github.com/mserve/mserve/core/querylog"
	"github.com/mserve/mserve/core/register"
	"github.com/mserve/mserve/core/registry"
	"github.com/mserve/mserve/core/route"
	"github.com/mserve/mserve/core/script"
	"github.com/mserve/mserve/core/supervise"
	"github.com/mserve/mserve/core/watch"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// Balancer is a running (or ready to run) mserve.
type Balancer struct {
	cfg     Config
	log     *zap.Logger
	eng     *engine.Engine
	gate    *allow.Gate
	front   *frontend.Front
	scripts *script.Host
	plugins []*pluginhost.Host
	conns   *connlimit.Limiter
	started time.Time
	metrics *metrics.Metrics
	qlog    *querylog.Log

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	algos  *algo.Registry
	routes *route.Registry

	mu       sync.Mutex
	members  map[string]*member // by servant name
	algoName string             // the algorithm in force
	routing  string             // the routing function or expression in force
	joinMu   sync.Mutex         // one servant joins at a time (registration, discovery): names stay unique
	joining  map[string]bool    // names of registrations admitted and not yet told so; under joinMu
	register net.Listener       // registration address; nil when off

	procs  []*supervise.Process
	native *native.Server
	http   *fasthttp.Server

	nativeLn, httpLn, adminLn net.Listener
	admin                     *admin.Handler
	adminSrv                  *http.Server
	shutdownOnce              sync.Once
}

// New checks cfg and builds a Balancer. Nothing listens or runs until Start.
func New(cfg Config, log *zap.Logger) (_ *Balancer, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = algo.Default
	}
	if cfg.Routing == "" {
		cfg.Routing = route.Default
	}
	switch {
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	case cfg.Timeout < 0:
		cfg.Timeout = 0
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	cfg.HealthInterval = orDefault(cfg.HealthInterval, 2*time.Second)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, 5*time.Minute)
	cfg.FrameTimeout = orDefault(cfg.FrameTimeout, 30*time.Second)
	switch {
	case cfg.EjectAfter == 0:
		cfg.EjectAfter = 5
	case cfg.EjectAfter < 0:
		cfg.EjectAfter = 0
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 10_000
	}
	if cfg.Spawn < 0 {
		return nil, fmt.Errorf("servant count must not be negative, got %d", cfg.Spawn)
	}
	if cfg.Spawn > 0 && len(cfg.Command) == 0 {
		return nil, errors.New("no servant command: give it after the count, as in: mserve 3 ./servant")
	}
	if err := checkLaunchers(cfg); err != nil {
		return nil, err
	}
	if cfg.Spawn == 0 && len(cfg.Servants) == 0 && cfg.RegisterAddr == "" && len(cfg.Etcd) == 0 {
		return nil, errors.New("no servants: start some (mserve N COMMAND ARGS...), name running ones (-servants host:port,...), let them register (-register host:port) or discover them in etcd (-etcd host:port)")
	}
	if cfg.RegisterAddr != "" && cfg.RegisterSecret == "" {
		return nil, errors.New("-register needs -register-secret: servants must present it to join")
	}
	if cfg.HTTPAddr == "" && cfg.NativeAddr == "" {
		return nil, errors.New("no front end: set -http, -listen or both")
	}
	names := map[string]bool{}
	for i := range cfg.Spawn {
		names[spawnName(i)] = true
	}
	for _, s := range cfg.Servants {
		if names[s.Name] {
			return nil, fmt.Errorf("two servants are named %q: give one another name with name@host:port", s.Name)
		}
		names[s.Name] = true
	}
	b := &Balancer{cfg: cfg, log: log, members: map[string]*member{}, algoName: cfg.Algorithm, routing: cfg.Routing}
	defer func() {
		if err != nil {
			b.closePlugins() // no plugin process outlives a failed start
		}
	}()
	algos, routes, err := b.registries()
	if err != nil {
		return nil, err
	}
	b.algos, b.routes = algos, routes
	a, err := algo.New(algos, cfg.Algorithm, cfg.algoConfig())
	if err != nil {
		return nil, err
	}
	router, err := chooseRouter(routes, cfg.Routing)
	if err != nil {
		return nil, err
	}
	servantNames := make([]string, 0, len(names))
	for n := range names {
		servantNames = append(servantNames, n)
	}
	gate, err := allow.NewGate(cfg.Allow, servantNames, log)
	if err != nil {
		return nil, fmt.Errorf("allowlist: %w", err)
	}
	if b.qlog, err = querylog.New(cfg.QueryRing, cfg.QueryLog); err != nil {
		return nil, fmt.Errorf("query log: %w", err)
	}
	b.metrics = metrics.New(b.snapshot)
	eng := engine.New(engine.Config{
		Algorithm: a, Router: router, Timeout: cfg.Timeout, MaxQueue: cfg.MaxQueue, Log: log,
		Record: func(c *engine.Call, a *engine.Answer, at time.Time) {
			b.metrics.Record(c, a, at)
			b.qlog.Record(c, a, at)
		},
		Unserved: gate.Unserved, MaxAttempts: cfg.MaxAttempts,
		EjectAfter: cfg.EjectAfter, EjectSlower: cfg.EjectSlower, EjectFor: cfg.EjectFor,
	})
	b.eng, b.gate = eng, gate
	b.front = &frontend.Front{Engine: eng, Gate: gate, Version: cfg.Version,
		Refused: func(method, user string, e *jsonrpc.Error) {
			b.metrics.Refused(method, e)
			b.qlog.Refused(method, user, e)
		}}
	return b, nil
}

// registries returns the algorithms and routing functions to choose from:
// the built-ins, plus what the Lua scripts in cfg.Plugins provide.
func (b *Balancer) registries() (*algo.Registry, *route.Registry, error) {
	algos, routes := algo.Builtins(), route.Builtins()
	files, binaries, err := script.LuaFiles(b.cfg.Plugins, true)
	if err != nil {
		return nil, nil, fmt.Errorf("MSERVE_PLUGINS: %w", err)
	}
	if len(b.cfg.Plugins) == 0 {
		return algos, routes, nil
	}
	fallbackName := b.cfg.Fallback
	if fallbackName == "" {
		fallbackName = DefaultFallback
	}
	if _, err := algo.New(algos, fallbackName, algo.Config{}); err != nil {
		return nil, nil, fmt.Errorf("fallback algorithm: %w", err)
	}
	first, _ := routes.Lookup(route.Default)
	for _, path := range binaries {
		if err := b.startPlugin(path, algos, routes, fallbackName, first.Value); err != nil {
			b.closePlugins()
			return nil, nil, err
		}
	}
	if len(files) == 0 {
		return algos, routes, nil
	}
	b.scripts, err = script.NewHost(script.Config{Files: files, Budget: b.cfg.ScriptBudget, RouteExpire: b.cfg.RouteExpire, Log: b.log})
	if err != nil {
		b.closePlugins()
		return nil, nil, err
	}
	set := b.scripts.Set()
	for _, kind := range []script.Kind{script.KindAlgorithm, script.KindPicker} {
		for _, name := range set.Names(kind) {
			sc, _, _ := set.Provider(name)
			host := b.scripts
			err := algos.Register(registry.Entry[algo.Factory]{Name: name, Summary: "Lua " + string(kind), Source: sc.Path,
				Value: func(c algo.Config) (dispatch.Algorithm, error) {
					fb, err := algo.New(algos, fallbackName, c)
					if err != nil {
						return nil, err
					}
					return script.NewAlgorithm(host, name, fb), nil
				}})
			if err != nil {
				return nil, nil, err
			}
		}
	}
	for _, name := range set.Names(script.KindRoute) {
		sc, _, _ := set.Provider(name)
		if err := routes.Register(registry.Entry[dispatch.Router]{Name: name, Summary: "Lua route", Source: sc.Path,
			Value: script.NewRouter(b.scripts, name, first.Value)}); err != nil {
			return nil, nil, err
		}
	}
	return algos, routes, nil
}

// startPlugin starts a compiled plugin and registers what it provides.
func (b *Balancer) startPlugin(path string, algos *algo.Registry, routes *route.Registry, fallbackName string, fallbackRoute dispatch.Router) error {
	h, err := pluginhost.Start(pluginhost.Config{Path: path, Deadline: b.cfg.PluginDeadline, Log: b.log, Env: b.pluginEnv()})
	if err != nil {
		return err
	}
	b.plugins = append(b.plugins, h)
	m := h.Manifest()
	for _, ai := range m.Algorithms {
		err := algos.Register(registry.Entry[algo.Factory]{Name: ai.Name, Summary: ai.Summary, Source: path,
			Value: func(c algo.Config) (dispatch.Algorithm, error) {
				fb, err := algo.New(algos, fallbackName, c)
				if err != nil {
					return nil, err
				}
				return pluginhost.NewAlgorithm(h, ai.Name, ai.Backlog, fb), nil
			}})
		if err != nil {
			return err
		}
	}
	for _, ri := range m.Routes {
		if err := routes.Register(registry.Entry[dispatch.Router]{Name: ri.Name, Summary: ri.Summary, Source: path,
			Value: pluginhost.NewRouter(h, ri.Name, fallbackRoute)}); err != nil {
			return err
		}
	}
	return nil
}

func (b *Balancer) closePlugins() {
	for _, h := range b.plugins {
		h.Close()
	}
	b.plugins = nil
}

// Plugins returns the compiled plugins running.
func (b *Balancer) Plugins() []*pluginhost.Host { return b.plugins }

// DefaultFallback is the built-in algorithm that decides when a script or
// plugin cannot.
const DefaultFallback = "least"

// chooseRouter picks the routing function: a registered name, or else an
// expr expression over the call.
func chooseRouter(routes *route.Registry, spec string) (dispatch.Router, error) {
	e, lookupErr := routes.Lookup(spec)
	if lookupErr == nil {
		return e.Value, nil
	}
	x, err := route.NewExpr(spec)
	if err != nil {
		return nil, fmt.Errorf("MSERVE_ROUTING %q is neither a routing function (known: %s) nor an expression: %v",
			spec, strings.Join(routes.Names(), ", "), err)
	}
	return x, nil
}

// Scripts returns the Lua host, or nil when no scripts are loaded.
func (b *Balancer) Scripts() *script.Host { return b.scripts }

// reloadScripts recompiles the Lua scripts after a change under
// MSERVE_PLUGINS.
func (b *Balancer) reloadScripts() {
	files, _, err := script.LuaFiles(b.cfg.Plugins, false)
	if err != nil {
		b.log.Error("scripts not reloaded", zap.Error(err))
		return
	}
	b.scripts.Reload(files)
}

// RestartServant restarts the process of the servant mserve started at
// index (0 for s1).
func (b *Balancer) RestartServant(index int) error {
	if index < 0 || index >= len(b.procs) {
		return fmt.Errorf("no local servant %d", index+1)
	}
	return b.procs[index].Restart()
}

// adminView adapts the Balancer to the admin endpoint.
type adminView struct{ *Balancer }

func (a adminView) Status() any { return a.Balancer.Status() }

// Gate returns the balancer's allowlist gate.
func (b *Balancer) Gate() *allow.Gate { return b.gate }

// Reload re-reads the allowlist file and the Lua scripts (SIGHUP, POST
// /reload). On error what is in force stays, and the error (with its line
// number) is logged and returned.
func (b *Balancer) Reload() error {
	if b.scripts != nil {
		b.reloadScripts()
	}
	return b.reloadAllow()
}

// reloadAllow re-reads the allowlist file.
func (b *Balancer) reloadAllow() error {
	if b.gate.Path() == "" {
		return nil
	}
	if err := b.gate.Reload(); err != nil {
		b.log.Error("allowlist not reloaded; keeping the one in force", zap.Error(err))
		return err
	}
	b.log.Info("allowlist reloaded", zap.String("allowlist", b.gate.String()))
	return nil
}

func spawnName(i int) string { return "s" + strconv.Itoa(i+1) }

// orDefault returns def for 0, 0 for a negative d (turned off), else d.
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// Engine returns the balancer's dispatch engine.
func (b *Balancer) Engine() *engine.Engine { return b.eng }

// Processes returns the supervised local servants, in order s1, s2, ….
func (b *Balancer) Processes() []*supervise.Process { return b.procs }

// NativeAddr returns the address the native front end listens on, once
// started, or "".
func (b *Balancer) NativeAddr() string { return addrOf(b.nativeLn) }

// AdminAddr returns the address the admin endpoint listens on, once
// started, or "".
func (b *Balancer) AdminAddr() string { return addrOf(b.adminLn) }

// Admin returns the admin endpoint's handler, once started, so that other
// pages can be added to it; nil without an admin address.
func (b *Balancer) Admin() *admin.Handler { return b.admin }

// RegisterAddr returns the address servants register at, or "" when
// registration is off.
func (b *Balancer) RegisterAddr() string { return addrOf(b.register) }

// HTTPAddr returns the address the HTTP front end listens on, once
// started, or "".
func (b *Balancer) HTTPAddr() string { return addrOf(b.httpLn) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// Start opens the front ends, connects to remote servants and starts local
// ones. It returns once everything is listening; servants join as they come
// up, and calls that arrive before wait in the queue.
func (b *Balancer) Start() error {
	for _, l := range []struct {
		addr, what string
		ln         *net.Listener
	}{
		{b.cfg.NativeAddr, "native front end", &b.nativeLn},
		{b.cfg.HTTPAddr, "HTTP front end", &b.httpLn},
		{b.cfg.Admin, "admin endpoint", &b.adminLn},
		{b.cfg.RegisterAddr, "registration address", &b.register},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			b.closeListeners()
			return fmt.Errorf("%s: %w", l.what, err)
		}
		*l.ln = ln
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.started = time.Now()
	localSecret := b.cfg.ServantSecret
	if localSecret == "" {
		localSecret = randomSecret()
	}
	if b.gate.Path() != "" {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			watch.Paths(b.ctx, []string{b.gate.Path()}, "", 0, func() { b.reloadAllow() })
		}()
	}
	if b.scripts != nil {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			watch.Paths(b.ctx, b.cfg.Plugins, ".lua", 0, b.reloadScripts)
		}()
	}

	if len(b.cfg.Launchers) > 0 { // the N servants on other hosts (launched.go)
		if err := b.startLaunched(localSecret); err != nil {
			b.abort()
			return err
		}
	} else {
		for i := range b.cfg.Spawn {
			addr, err := supervise.FreeAddr()
			if err != nil {
				b.abort()
				return fmt.Errorf("finding a port for servant %s: %w", spawnName(i), err)
			}
			name := spawnName(i)
			l := b.addLink(engine.ServantSpec{Name: name, Addr: addr, Slots: b.cfg.SpawnSlots, Tags: b.cfg.SpawnTags}, localSecret, true, 0)
			b.procs = append(b.procs, supervise.Start(supervise.Config{
				Name: name, Command: b.cfg.Command[0], Args: b.cfg.Command[1:], Addr: addr,
				Env:        []string{supervise.EnvSecret + "=" + localSecret},
				MinBackoff: b.cfg.RestartMin, MaxBackoff: b.cfg.RestartMax,
				Log: b.log, OnStart: l.Kick,
			}))
		}
	}
	for _, s := range b.cfg.Servants {
		b.addLink(engine.ServantSpec{Name: s.Name, Addr: s.Addr, Slots: s.Slots, Tags: s.Tags}, b.cfg.ServantSecret, false, s.Conns)
	}
	if err := b.startDiscovery(); err != nil { // servants and settings in etcd (discovered.go)
		b.abort()
		return err
	}

	if b.register != nil {
		reg := register.New(register.Config{Secret: b.cfg.RegisterSecret, MaxFrame: b.cfg.MaxFrame, Log: b.log, Join: b.join})
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if err := reg.Serve(b.ctx, b.register); err != nil {
				b.log.Error("registration address stopped", zap.Error(err))
			}
		}()
	}

	b.conns = connlimit.New(b.cfg.MaxConns)
	if b.nativeLn != nil {
		b.native = native.New(native.Config{MaxFrame: b.cfg.MaxFrame, MaxInFlight: b.cfg.MaxInFlight,
			IdleTimeout: b.cfg.IdleTimeout, FrameTimeout: b.cfg.FrameTimeout, Log: b.log}, b.front)
		ln := b.conns.Wrap(b.nativeLn, native.RefuseTooMany(b.cfg.MaxConns))
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if err := b.native.Serve(ln); err != nil {
				b.log.Error("native front end stopped", zap.Error(err))
			}
		}()
	}
	if b.httpLn != nil {
		b.http = httpfront.New(b.front, b.cfg.MaxBody).Server(httpfront.Limits{
			ReadTimeout:  10*time.Second + b.cfg.FrameTimeout,
			WriteTimeout: 10*time.Second + b.cfg.FrameTimeout,
			IdleTimeout:  b.cfg.IdleTimeout,
			Log:          b.log.With(zap.String("front", "http")),
		})
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if err := b.http.Serve(b.conns.Wrap(b.httpLn, httpfront.RefuseTooMany(b.cfg.MaxConns))); err != nil && !errors.Is(err, net.ErrClosed) {
				b.log.Error("HTTP front end stopped", zap.Error(err))
			}
		}()
	}
	if b.adminLn != nil {
		b.admin = admin.New(adminView{b})
		b.admin.Handle("GET /{$}", http.HandlerFunc(admin.Page))
		b.admin.Handle("GET /metrics", b.metrics.Handler())
		b.admin.Handle("GET /queries", b.qlog)
		b.adminSrv = &http.Server{Handler: b.admin, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: zap.NewStdLog(b.log.With(zap.String("front", "admin")))}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if err := b.adminSrv.Serve(b.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.log.Error("admin endpoint stopped", zap.Error(err))
			}
		}()
	}
	b.log.Info("mserve started",
		zap.String("native", b.NativeAddr()), zap.String("http", b.HTTPAddr()), zap.String("admin", b.AdminAddr()),
		zap.String("register", b.RegisterAddr()), zap.Stringer("allowlist", b.gate),
		zap.String("algo", b.Algorithm()), zap.String("routing", b.Routing()),
		zap.Int("spawned", b.cfg.Spawn), zap.Int("remote", len(b.cfg.Servants)))
	return nil
}

// randomSecret returns 32 random bytes in hex: the secret local servants
// of this launch require.
func randomSecret() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (b *Balancer) abort() {
	b.cancel()
	b.closeListeners()
	supervise.StopAll(b.procs, time.Second)
	b.wg.Wait()
}

// closeListeners closes the listeners Start opened.
func (b *Balancer) closeListeners() {
	for _, ln := range []net.Listener{b.nativeLn, b.httpLn, b.adminLn, b.register} {
		if ln != nil {
			ln.Close()
		}
	}
}

// Shutdown stops the balancer without losing a call: it stops accepting
// connections and calls, lets the calls inside finish within the grace
// period (answering any left after it "shutting down"), flushes every
// answer to its client, then stops links and local servants. It returns
// when all is stopped; ctx bounds the whole.
func (b *Balancer) Shutdown(ctx context.Context) error {
	if b.cancel == nil { // never started: only plugins run
		b.closePlugins()
		return nil
	}
	var err error
	b.shutdownOnce.Do(func() {
		b.log.Info("mserve stopping", zap.Duration("grace", b.cfg.Grace))
		if b.native != nil {
			b.native.CloseListeners()
		}
		if b.httpLn != nil {
			b.httpLn.Close()
		}
		if b.register != nil {
			b.register.Close() // no new servants; those registered serve the calls inside
		}
		grace, cancel := context.WithTimeout(ctx, b.cfg.Grace)
		defer cancel()
		if derr := b.eng.Drain(grace); derr != nil {
			b.log.Warn("grace period ended with calls unfinished; they were answered \"shutting down\"")
		}
		if b.http != nil {
			b.http.ShutdownWithContext(ctx)
		}
		if b.native != nil {
			b.native.Close()
		}
		if b.adminSrv != nil {
			b.adminSrv.Shutdown(ctx)
		}
		b.cancel()
		supervise.StopAll(b.procs, b.cfg.Grace)
		b.closePlugins()
		b.qlog.Close()
		b.wg.Wait()
		err = ctx.Err()
		st := b.eng.Stats()
		b.log.Info("mserve stopped", zap.Uint64("answered", st.Answered), zap.Uint64("ok", st.OK))
	})
	return err
}
