package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux for -pprof
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core"
	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/route"
	"github.com/mserve/mserve/core/supervise"
)

const daemonUsage = `mserve balances function calls across servants.

Usage:
  mserve [flags] N COMMAND [ARGS...]   start N local servants running COMMAND and balance over them
  mserve [flags] -servants LIST         balance over servants already running (may be combined with N COMMAND)
  mserve [flags] -etcd ENDPOINTS        balance over the servants listed in etcd, following changes
  mserve announce [flags]               list a servant in etcd while it answers; see mserve announce -h
  mserve [flags] -launchers LIST N COMMAND [ARGS...]
                                        start the N servants on other hosts, round-robin over
                                        launchers there (see mserve launcher -h)
  mserve launcher [flags]               the agent that starts servants on its host for mserve
  mserve call [flags] METHOD [ARGS...]  make one call; see mserve call -h
  mserve bench [flags] METHOD [ARGS...] load generator; see mserve bench -h
  mserve version

Each local servant gets its own loopback port in $MSERVE_SERVANT_ADDR (host:port) and
$MSERVE_SERVANT_PORT; {addr}, {port} and {name} in ARGS are replaced too. It is restarted
with backoff when it exits and stopped when mserve stops.

LIST entries are separated by commas: [name@]host:port[?slots=N&tag=T&tag=U] for -servants,
host:port for -launchers (given as a flag because words after COMMAND are its ARGS).

Flags (each also settable by the environment variable shown):
`

// daemonFlags holds the daemon's settings.
type daemonFlags struct {
	cfg         core.Config
	servants    string
	logs        logFlags
	printConfig bool
	pprofAddr   string

	launcherSecretFile string
}

func newDaemonFlags() (*flag.FlagSet, *daemonFlags) {
	d := &daemonFlags{}
	fs := flag.NewFlagSet("mserve", flag.ContinueOnError)
	c := &d.cfg
	fs.StringVar(&c.HTTPAddr, "http", "127.0.0.1:5000", "JSON-RPC over HTTP listen address; empty disables it")
	fs.StringVar(&c.NativeAddr, "listen", "127.0.0.1:5001", "native (framed TCP) listen address; empty disables it")
	fs.StringVar(&d.servants, "servants", "", "servants already running: [name@]host:port[?slots=N&tag=T],... or [name@]http://host:port/path[?slots=N&conns=K],...")
	fs.Var((*stringList)(&c.Launchers), "launchers", "start the N servants on these launchers (mserve launcher agents, host:port,...), round-robin, instead of on this host")
	fs.StringVar(&d.launcherSecretFile, "launcher-secret-file", "", "file holding the secret the launchers require (with -launchers)")
	fs.StringVar(&c.RegisterAddr, "register", "", "address servants dial to register themselves (SDK servants: MSERVE_BALANCER=this address); empty: registration off")
	fs.StringVar(&c.RegisterSecret, "register-secret", "", "secret a registering servant must present (required with -register; SDK servants read it from the same variable)")
	fs.Var((*stringList)(&c.Etcd), "etcd", "etcd endpoints (host:port,...) to discover servants and live settings in (see docs/operating.md); servants announce themselves with mserve announce or sdk/announce")
	fs.StringVar(&c.EtcdPrefix, "etcd-prefix", "/mserve", "root of mserve's keys in etcd: <prefix>/servants/<name>, <prefix>/config/algo, <prefix>/config/routing")
	fs.StringVar(&c.Allow, "allow", "", "allowlist file: the functions that may be called, their arguments, users (see docs/allowlist.md); re-read on SIGHUP and on change")
	fs.StringVar(&c.ServantSecret, "servant-secret", "", "secret servants require in mserve's hello; empty gives local servants a fresh one per launch and remote servants none")
	fs.Var((*pathList)(&c.Plugins), "plugins", "Lua scripts, folders of them, and compiled plugin binaries providing algorithms and routing functions, separated by '"+string(os.PathListSeparator)+"'; scripts are reloaded on change")
	fs.StringVar(&c.Algorithm, "algo", algo.Default, "dispatch algorithm: orig, even, match, least, warm, or one a script or plugin provides")
	fs.StringVar(&c.Routing, "routing", route.Default, "routing function (first = the first argument, method, none, or one a script provides), or an expr expression over the call such as 'args[0]'")
	fs.DurationVar(&c.ScriptBudget, "script-budget", 5*time.Millisecond, "time one scripted decision may take before the fallback decides instead")
	fs.DurationVar(&c.PluginDeadline, "plugin-deadline", 100*time.Millisecond, "time a compiled plugin may take to decide one batch before the fallback decides instead")
	fs.StringVar(&c.Fallback, "fallback", core.DefaultFallback, "built-in algorithm that decides when a script or plugin fails")
	fs.DurationVar(&c.RouteExpire, "route-expire", algo.DefaultRouteExpire, "match: how long an idle servant keeps its claim on its last routing string")
	fs.IntVar(&c.WarmKeys, "warm-keys", algo.DefaultWarmKeys, "warm: routing strings remembered per servant, the size of its model of each servant's cache")
	fs.Float64Var(&c.WarmHot, "warm-hot", algo.DefaultWarmHot, "warm: share of the recent calls that makes a routing string hot, free to spread to more servants")
	fs.IntVar(&c.SpawnSlots, "slots", 0, "calls each local servant runs at once; 0 lets the servant say (default 1)")
	fs.Var((*stringList)(&c.SpawnTags), "tags", "comma-separated tags for local servants")
	fs.DurationVar(&c.Timeout, "timeout", core.DefaultTimeout, "default per-call deadline, queue included; a client may ask for another; negative means none")
	fs.IntVar(&c.MaxQueue, "max-queue", 100_000, "calls waiting before new ones are answered \"overloaded\"")
	fs.IntVar(&c.MaxFrame, "max-frame", 4<<20, "largest native frame in bytes")
	fs.IntVar(&c.MaxBody, "max-body", 4<<20, "largest HTTP request body in bytes")
	fs.IntVar(&c.MaxInFlight, "max-inflight", 1024, "unanswered calls per native connection before mserve stops reading it")
	fs.DurationVar(&c.Grace, "grace", core.DefaultGrace, "on SIGTERM, how long to let calls inside finish")
	fs.IntVar(&c.MaxConns, "max-conns", 10_000, "client connections open at once over both front ends; more are refused")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 5*time.Minute, "close a native connection idle (nothing in flight, no frame) this long; negative: never")
	fs.DurationVar(&c.FrameTimeout, "frame-timeout", 30*time.Second, "a native frame or HTTP request that has begun must arrive within this")
	fs.DurationVar(&c.HealthInterval, "health-interval", 2*time.Second, "send each servant rpc.ping this often; negative: no health checks")
	fs.DurationVar(&c.HealthTimeout, "health-timeout", time.Second, "a ping unanswered this long counts as missed; 3 missed take a servant out of dispatch, 2 answered put it back")
	fs.IntVar(&c.MaxAttempts, "max-attempts", 3, "servants an idempotent call may be sent to when they are lost under it")
	fs.IntVar(&c.EjectAfter, "eject-after", 5, "failed calls in a row (internal errors, timeouts, lost) that eject a servant for a while; negative: never")
	fs.Float64Var(&c.EjectSlower, "eject-slower", 0, "eject a servant whose latency passes this many times its peers' average; 0: never")
	fs.DurationVar(&c.EjectFor, "eject-for", 30*time.Second, "how long a first ejection lasts (each next one longer); at most half the servants are ejected")
	fs.DurationVar(&c.RestartMin, "restart-min", 100*time.Millisecond, "first wait before restarting a local servant that exited")
	fs.DurationVar(&c.RestartMax, "restart-max", 10*time.Second, "longest wait before a restart, reached when a servant keeps exiting soon after it starts")
	fs.StringVar(&c.Admin, "admin", "127.0.0.1:5002", "admin HTTP address: status page (/), /status, /metrics, /queries, drain; empty disables it")
	fs.StringVar(&c.QueryLog, "querylog", "", "append every call's query log entry to this file, as JSON lines")
	fs.IntVar(&c.QueryRing, "query-ring", 10_000, "query log entries kept in memory for /queries and the status page")
	d.logs.register(fs)
	fs.StringVar(&d.pprofAddr, "pprof", "", "serve Go's profiler (/debug/pprof/) on this address; keep it private")
	fs.BoolVar(&d.printConfig, "print-config", false, "print the effective configuration and exit")
	fs.Usage = usageFor(fs, daemonUsage)
	return fs, d
}

func daemonMain(args []string) int {
	fs, d := newDaemonFlags()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	src, err := applyEnv(fs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve:", err)
		return exitUsage
	}
	if rest := fs.Args(); len(rest) > 0 {
		n, err := supervise.ParseCount(rest[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "mserve: %v (usage: mserve [flags] N COMMAND [ARGS...]; mserve -h for help)\n", err)
			return exitUsage
		}
		d.cfg.Spawn, d.cfg.Command = n, rest[1:]
	}
	if d.cfg.Servants, err = core.ParseServants(d.servants); err != nil {
		fmt.Fprintln(os.Stderr, "mserve: -servants:", err)
		return exitUsage
	}
	if len(d.cfg.Launchers) > 0 && d.launcherSecretFile != "" {
		if d.cfg.LauncherSecret, err = readSecretFile(d.launcherSecretFile); err != nil {
			fmt.Fprintln(os.Stderr, "mserve: -launcher-secret-file:", err)
			return exitUsage
		}
	}
	if d.printConfig {
		printConfig(os.Stdout, fs, src)
		return exitOK
	}
	log, err := d.logs.logger()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve:", err)
		return exitUsage
	}
	defer log.Sync()

	d.cfg.Version = version
	b, err := core.New(d.cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve:", err)
		return exitUsage
	}
	if err := b.Start(); err != nil {
		log.Error("cannot start", zap.Error(err))
		// A launcher that refused or cannot be reached, or etcd unreachable
		// at start: the configuration is wrong.
		var le *core.LaunchError
		var de *core.DiscoveryError
		if errors.As(err, &le) || errors.As(err, &de) {
			fmt.Fprintln(os.Stderr, "mserve:", err)
			return exitUsage
		}
		return exitError
	}
	if d.pprofAddr != "" {
		// Sample lock contention and blocking too, so that the mutex and
		// block profiles show the engine lock (a small cost, paid only
		// with -pprof).
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(10_000)
		go func() {
			log.Info("profiler listening", zap.String("addr", d.pprofAddr))
			if err := http.ListenAndServe(d.pprofAddr, nil); err != nil {
				log.Error("profiler stopped", zap.Error(err))
			}
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			b.Reload()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	log.Info("signal received; shutting down", zap.String("signal", s.String()))
	go func() { // a second signal stops at once
		<-sig
		log.Warn("second signal; exiting without waiting")
		os.Exit(exitError)
	}()
	if err := b.Shutdown(context.Background()); err != nil {
		log.Error("shutdown", zap.Error(err))
		return exitError
	}
	return exitOK
}
