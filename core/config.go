package core

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mserve/mserve/core/algo"
)

// Config is everything a Balancer is built from. The zero value of each
// field means its documented default.
type Config struct {
	HTTPAddr   string // JSON-RPC over HTTP listen address; "" disables it
	NativeAddr string // native framed protocol listen address; "" disables it

	Algorithm   string        // dispatch algorithm name (default "match")
	Routing     string        // routing function name, or an expr expression over the call (default "first")
	RouteExpire time.Duration // match's routeExpireMs (default 12s)
	WarmKeys    int           // warm: routing strings remembered per servant (default algo.DefaultWarmKeys)
	WarmHot     float64       // warm: share of recent calls that makes a routing string hot (default algo.DefaultWarmHot)

	Plugins        []string      // Lua files, folders of them, and plugin binaries providing algorithms and routing functions
	ScriptBudget   time.Duration // time one scripted decision may take (default 5ms)
	PluginDeadline time.Duration // time a compiled plugin may take to decide one batch (default 100ms)
	Fallback       string        // built-in algorithm deciding when a script or plugin cannot (default "least")

	Spawn      int      // local servants to start
	Command    []string // the program (and arguments) each one runs
	SpawnSlots int      // slots for spawned servants; 0 lets each servant say (default 1)
	SpawnTags  []string // tags for spawned servants

	Launchers      []string // `mserve launcher` agents (host:port) that start the Spawn servants on their hosts, round-robin, instead of this host
	LauncherSecret string   // the secret the launchers require (proved by challenge-response, never sent)

	Servants []ServantSpec // servants already running, here or on other hosts

	RegisterAddr   string // address servants dial to register themselves (rpc.register); "" turns registration off
	RegisterSecret string // secret a registering servant must present (required with RegisterAddr)

	Etcd       []string // etcd endpoints where servants and live settings are discovered (see core/discover); nil turns discovery off
	EtcdPrefix string   // the etcd tree's root (default "/mserve")

	Allow         string // allowlist file; "" means the servants' own declarations are the allowlist
	ServantSecret string // secret servants require in mserve's hello; "" gives local servants a fresh random one per launch and remote ones none
	Version       string // mserve's version, reported by rpc.hello and rpc.discover

	Timeout     time.Duration // default per-call deadline (default 60s; negative: none)
	MaxQueue    int           // calls waiting before new ones are refused as overloaded
	MaxFrame    int           // largest native frame, both directions
	MaxBody     int           // largest HTTP request body
	MaxInFlight int           // unanswered calls per native connection before mserve stops reading it
	Grace       time.Duration // how long shutdown waits for calls inside to finish (default 10s)

	MaxConns     int           // client connections open at once, both front ends (default 10000); more are refused
	IdleTimeout  time.Duration // a native connection with nothing in flight and no frame for this long is closed (default 5m; negative: never)
	FrameTimeout time.Duration // a frame (native) or body (HTTP) that has begun must arrive within this (default 30s)

	HealthInterval time.Duration // rpc.ping every this often (default 2s; negative: no health checks)
	HealthTimeout  time.Duration // a ping unanswered this long is missed (default 1s)
	MaxAttempts    int           // servants an idempotent call may be sent to when they are lost under it (default 3)
	EjectAfter     int           // failed calls in a row that eject a servant (default 5; negative: never)
	EjectSlower    float64       // latency over this many times its peers' average ejects a servant (default 0: never)
	EjectFor       time.Duration // first ejection's length, longer each time (default 30s)

	RestartMin time.Duration // first wait before restarting a local servant that exited (default 100ms)
	RestartMax time.Duration // longest wait, reached when it keeps exiting soon after starting (default 10s)

	Admin string // admin HTTP address (status page, /status, /metrics, /queries, drain); "" disables it

	QueryLog  string // file to append every call's query log entry to (JSON lines); "" for none
	QueryRing int    // query log entries kept in memory for /queries and the status page (default 10000)
}

// DefaultTimeout is the per-call deadline when Config.Timeout is 0.
const DefaultTimeout = 60 * time.Second

// DefaultGrace is the shutdown grace period when Config.Grace is 0.
const DefaultGrace = 10 * time.Second

// ServantSpec names a servant that mserve dials rather than starts.
type ServantSpec struct {
	Name  string   // unique name; defaults to Addr
	Addr  string   // host:port (native protocol) or http(s):// URL (JSON-RPC over HTTP)
	Slots int      // calls it runs at once; 0 lets the servant say (default 1)
	Tags  []string // labels algorithms may route by
	// Conns, for an http(s):// servant, caps the requests in flight to it;
	// calls sent while that many are go together as JSON-RPC batches. 0
	// sends every call as a request of its own.
	Conns int
}

// ParseServants parses a servant list: entries separated by commas or
// spaces, each
//
//	[name@]host:port[?slots=N&tag=T&tag=U]      a servant speaking the native protocol
//	[name@]http://host:port/path[?slots=N&conns=K&…]    a JSON-RPC 2.0 server over HTTP
//
// for example "10.0.0.5:7001,gpu1@10.0.0.6:7001?slots=4&tag=gpu,py@http://10.0.0.7:8000/".
// conns (HTTP servants only) caps the requests in flight to the servant:
// while K are, further calls wait in mserve and go together as one
// JSON-RPC batch when a request ends.
// (A URL's own query string cannot be given: '?' starts mserve's options.)
func ParseServants(list string) ([]ServantSpec, error) {
	var out []ServantSpec
	for _, entry := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		spec, err := parseServant(entry)
		if err != nil {
			return nil, fmt.Errorf("servant %q: %w", entry, err)
		}
		out = append(out, spec)
	}
	return out, nil
}

func parseServant(entry string) (ServantSpec, error) {
	var spec ServantSpec
	addr, query, _ := strings.Cut(entry, "?")
	if name, rest, ok := strings.Cut(addr, "@"); ok && !strings.Contains(name, "://") {
		if name == "" {
			return spec, fmt.Errorf("empty name before '@'")
		}
		spec.Name, addr = name, rest
	}
	if isHTTP(addr) {
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return spec, fmt.Errorf("bad URL %q: want http://host:port/path", addr)
		}
	} else {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return spec, fmt.Errorf("want host:port or an http:// URL: %v", err)
		}
		if host == "" {
			return spec, fmt.Errorf("missing host in %q", addr)
		}
		if i := strings.IndexFunc(host, notHostChar); i >= 0 {
			return spec, fmt.Errorf("host %q: %q cannot be in a host name or IP address", host, host[i:i+1])
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return spec, fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	}
	spec.Addr = addr
	if spec.Name == "" {
		spec.Name = addr
	}
	if query == "" {
		return spec, nil
	}
	opts, err := url.ParseQuery(query)
	if err != nil {
		return spec, fmt.Errorf("options: %v", err)
	}
	for key, values := range opts {
		switch key {
		case "slots":
			n, err := strconv.Atoi(values[len(values)-1])
			if err != nil || n <= 0 {
				return spec, fmt.Errorf("slots must be a positive number, got %q", values[len(values)-1])
			}
			spec.Slots = n
		case "tag":
			spec.Tags = append(spec.Tags, values...)
		case "conns":
			n, err := strconv.Atoi(values[len(values)-1])
			if err != nil || n <= 0 {
				return spec, fmt.Errorf("conns must be a positive number, got %q", values[len(values)-1])
			}
			if !isHTTP(addr) {
				return spec, fmt.Errorf("conns applies to http:// and https:// servants only (a native servant has one connection, which carries many calls)")
			}
			spec.Conns = n
		default:
			return spec, fmt.Errorf("unknown option %q (known: slots, tag, conns)", key)
		}
	}
	return spec, nil
}

// algoConfig is what the built-in algorithms read of c.
func (c Config) algoConfig() algo.Config {
	return algo.Config{RouteExpire: c.RouteExpire, WarmKeys: c.WarmKeys, WarmHot: c.WarmHot}
}

// isHTTP reports whether addr is a servant's http:// or https:// URL (else
// it is host:port, the native protocol).
func isHTTP(addr string) bool {
	return strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://")
}

// notHostChar reports whether r cannot appear in a host name or an IP
// address (with an IPv6 zone).
func notHostChar(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(".-_:%", r))
}
