// Command testplugin is the dispatch plugin the core/pluginhost tests
// start. One binary covers every fault: its behaviour is chosen by
// environment variables read at start, and by a control file read on every
// call, so that a test can change it while the plugin runs.
//
//	TESTPLUGIN_MODE     ok (default): decide like the built-in "least"
//	                    sleep: every decision sleeps TESTPLUGIN_SLEEP (default 10s)
//	                    garbage (at start only): answer assignments with out-of-range indexes
//	                    crash-after-N: decide N batches, then exit in the middle of the next
//	                    panic-after-N: as crash-after-N, but panic
//	                    route-error: the routing function fails
//	                    empty: provide no algorithm and no routing function
//	                    log: the routing function writes marker lines to every output
//	TESTPLUGIN_CONTROL  a file; when it exists and is not empty, its content is the mode
//	TESTPLUGIN_BACKLOG  the backlog limit announced for "least" (default 0)
//	TESTPLUGIN_CPUPROFILE, TESTPLUGIN_PROFILE_FOR
//	                    write a CPU profile of the first PROFILE_FOR (default 5s) to this file
//
// It provides the algorithm "least" (core/algo's Least, so that its
// decisions can be compared with the same algorithm in-process) and the
// routing function "testroute" ("tp:" + method + ":" + raw params).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

// stderr is the process's real standard error: plugin.Serve replaces
// os.Stderr with a pipe whose lines travel to mserve over gRPC.
var stderr = os.Stderr

// batches counts the decisions this process has been asked for.
var batches atomic.Int64

func mode() string {
	if f := os.Getenv("TESTPLUGIN_CONTROL"); f != "" {
		if b, err := os.ReadFile(f); err == nil {
			if m := strings.TrimSpace(string(b)); m != "" {
				return m
			}
		}
	}
	if m := os.Getenv("TESTPLUGIN_MODE"); m != "" {
		return m
	}
	return "ok"
}

// after parses "crash-after-N" style modes.
func after(m, prefix string) (int64, bool) {
	rest, ok := strings.CutPrefix(m, prefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	return n, err == nil
}

func sleepFor() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TESTPLUGIN_SLEEP")); err == nil {
		return d
	}
	return 10 * time.Second
}

// faulty wraps an algorithm with the faults the mode asks for.
type faulty struct{ inner dispatch.Algorithm }

func (f *faulty) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	n := batches.Add(1)
	m := mode()
	if k, ok := after(m, "crash-after-"); ok && n > k {
		fmt.Fprintf(stderr, "testplugin: crashing in batch %d of %d calls\n", n, len(calls))
		os.Exit(7)
	}
	if k, ok := after(m, "panic-after-"); ok && n > k {
		panic(fmt.Sprintf("testplugin: panic in batch %d", n))
	}
	if m == "sleep" {
		time.Sleep(sleepFor())
	}
	f.inner.Assign(calls, servants, p)
}

type router struct{}

func (router) Route(c *dispatch.Call) (string, error) {
	switch mode() {
	case "route-error":
		return "", fmt.Errorf("testplugin: no routing string for %s", c.Method)
	case "sleep":
		time.Sleep(sleepFor())
	case "log":
		fmt.Fprintln(os.Stderr, "testplugin marker stderr-piped")
		fmt.Fprintln(os.Stdout, "testplugin marker stdout-piped")
		fmt.Fprintln(stderr, "testplugin marker stderr-raw")
		log.Println("testplugin marker std-log")
		hclog.New(&hclog.LoggerOptions{Output: stderr, JSONFormat: true, Level: hclog.Trace}).
			Warn("testplugin marker hclog-warn", "pid", os.Getpid())
		return "logged", nil
	}
	return "tp:" + c.Method + ":" + string(c.Params), nil
}

func main() {
	if f := os.Getenv("TESTPLUGIN_CPUPROFILE"); f != "" {
		profile(f)
	}
	backlog, _ := strconv.Atoi(os.Getenv("TESTPLUGIN_BACKLOG"))
	p := plugin.Plugin{
		Algorithms: map[string]plugin.AlgorithmSpec{
			"least": {
				Summary: "core/algo's least, with faults on demand",
				Backlog: backlog,
				New:     func() dispatch.Algorithm { return &faulty{inner: &algo.Least{}} },
			},
		},
		Routes: map[string]plugin.RouteSpec{
			"testroute": {Summary: `"tp:" + method + ":" + params`, Router: router{}},
		},
	}
	switch mode() {
	case "empty":
		plugin.Serve(plugin.Plugin{})
	case "garbage":
		serveGarbage(p)
	default:
		plugin.Serve(p)
	}
}

// serveGarbage serves the dispatch service by hand, as a buggy plugin
// would: it describes p truthfully, but every decision names calls and
// servants that do not exist. (sdk/plugin cannot send such an answer: Plan
// refuses out-of-range indexes.)
func serveGarbage(p plugin.Plugin) {
	m := &plugin.Manifest{Protocol: plugin.ProtocolVersion}
	for name, a := range p.Algorithms {
		m.Algorithms = append(m.Algorithms, plugin.AlgorithmInfo{Name: name, Summary: a.Summary, Backlog: a.Backlog})
	}
	for name, r := range p.Routes {
		m.Routes = append(m.Routes, plugin.RouteInfo{Name: name, Summary: r.Summary})
	}
	sort.Slice(m.Algorithms, func(i, j int) bool { return m.Algorithms[i].Name < m.Algorithms[j].Name })
	sort.Slice(m.Routes, func(i, j int) bool { return m.Routes[i].Name < m.Routes[j].Name })
	desc := grpc.ServiceDesc{
		ServiceName: "mserve.dispatch.v1.Dispatcher",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Describe", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(&plugin.DescribeRequest{}); err != nil {
					return nil, err
				}
				return m, nil
			}},
			{MethodName: "Assign", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				req := &plugin.AssignRequest{}
				if err := dec(req); err != nil {
					return nil, err
				}
				batches.Add(1)
				resp := &plugin.AssignResponse{}
				for i := range req.Calls {
					resp.Assignments = append(resp.Assignments, dispatch.Assignment{Call: len(req.Calls) + 7 + i, Servant: len(req.Servants) + 3})
				}
				return resp, nil
			}},
			{MethodName: "Route", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				req := &plugin.RouteRequest{}
				if err := dec(req); err != nil {
					return nil, err
				}
				return &plugin.RouteResponse{Route: "garbage"}, nil
			}},
		},
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  plugin.Handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{plugin.ProtocolVersion: {plugin.PluginName: &rawGRPC{desc: &desc}}},
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
}

// rawGRPC registers a hand-written service with go-plugin.
type rawGRPC struct {
	goplugin.NetRPCUnsupportedPlugin
	desc *grpc.ServiceDesc
}

func (r *rawGRPC) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(r.desc, struct{}{})
	return nil
}

func (r *rawGRPC) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("testplugin: server side only")
}

// profile writes a CPU profile of this process's next few seconds to path.
func profile(path string) {
	d, err := time.ParseDuration(os.Getenv("TESTPLUGIN_PROFILE_FOR"))
	if err != nil {
		d = 5 * time.Second
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "testplugin:", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(stderr, "testplugin:", err)
		return
	}
	time.AfterFunc(d, func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
