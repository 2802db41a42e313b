package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mserve/mserve/core/loadgen"
	"github.com/mserve/mserve/sdk/client"
)

const benchUsage = `mserve bench is a closed-loop load generator: -c callers each make
their next call as soon as the last one is answered, for -d or -n calls.

Usage:
  mserve bench [flags] METHOD [ARGS...]

With -direct it measures the same calls straight to one servant in the same
run (alternating rounds with the balancer) and prints the balancer's added
latency and the throughput ratio. With -vs it also measures other mserve
instances (say, one with an allowlist and one without, or two algorithms)
in the same run, against the first target. ARGS are parsed as in mserve call.

Flags (each also settable by the environment variable shown):
`

type benchTarget struct {
	name string
	addr string
	opts []client.Option
	res  loadgen.Result
}

// benchOptions are mserve bench's settings.
type benchOptions struct {
	addr, direct, user, secret, directSecret string
	conc, conns, n, rounds                   int
	dur, warmup, timeout                     time.Duration
	quiet                                    bool
	vs                                       stringList
}

// benchFlags defines mserve bench's flags.
func benchFlags() (*flag.FlagSet, *benchOptions) {
	o := &benchOptions{}
	fs := flag.NewFlagSet("mserve bench", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:5001", "mserve's native address")
	fs.StringVar(&o.direct, "direct", "", "also measure calls straight to this servant (host:port)")
	fs.IntVar(&o.conc, "c", 1, "concurrent callers")
	fs.IntVar(&o.conns, "conns", 1, "connections the callers share (calls are multiplexed on each)")
	fs.DurationVar(&o.dur, "d", 5*time.Second, "measured duration per target (split across rounds)")
	fs.IntVar(&o.n, "n", 0, "calls per target and round instead of a duration")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured warm-up before each round")
	fs.IntVar(&o.rounds, "rounds", 1, "rounds per target, alternating targets to even out machine noise")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-call deadline")
	fs.BoolVar(&o.quiet, "q", false, "no progress line")
	fs.StringVar(&o.user, "user", "", "allowlist user to call mserve as (with -secret)")
	fs.StringVar(&o.secret, "secret", "", "the user's secret for mserve")
	fs.StringVar(&o.directSecret, "direct-secret", "", "the servant's secret, for -direct to a servant that requires one")
	fs.Var(&o.vs, "vs", "more mserve instances to measure in the same run: NAME=host:port,...")
	fs.Usage = usageFor(fs, benchUsage)
	return fs, o
}

func benchMain(args []string) int {
	fs, o := benchFlags()
	addr, direct, conc, conns, dur, n := &o.addr, &o.direct, &o.conc, &o.conns, &o.dur, &o.n
	warmup, rounds, timeout, quiet := &o.warmup, &o.rounds, &o.timeout, &o.quiet
	user, secret, directSecret, vs := &o.user, &o.secret, &o.directSecret, &o.vs
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 || *conc <= 0 || *conns <= 0 || *rounds <= 0 {
		fs.Usage()
		return exitUsage
	}
	method, params := fs.Arg(0), argsToParams(fs.Args()[1:])
	var targets []*benchTarget
	if *direct != "" {
		targets = append(targets, &benchTarget{name: "direct", addr: *direct, opts: []client.Option{client.Credentials("", *directSecret)}})
	}
	targets = append(targets, &benchTarget{name: "mserve", addr: *addr, opts: []client.Option{client.Credentials(*user, *secret)}})
	for _, v := range *vs {
		name, a, ok := strings.Cut(v, "=")
		if !ok || name == "" || a == "" {
			fmt.Fprintf(os.Stderr, "mserve bench: -vs %q: want NAME=host:port\n", v)
			return exitUsage
		}
		targets = append(targets, &benchTarget{name: name, addr: a, opts: []client.Option{client.Credentials(*user, *secret)}})
	}

	cfg := loadgen.Config{Concurrency: *conc, Duration: *dur / time.Duration(*rounds), Calls: *n, Warmup: *warmup}
	fmt.Printf("bench %s%s: c=%d conns=%d rounds=%d %s per target\n", method, paramsNote(params), *conc, *conns, *rounds, amount(*n, *dur))
	for r := 0; r < *rounds; r++ {
		for _, t := range targets {
			res, err := benchOnce(t, cfg, *conns, *timeout, method, params, *quiet)
			if err != nil {
				fmt.Fprintf(os.Stderr, "mserve bench: %s (%s): %v\n", t.name, t.addr, err)
				return exitError
			}
			merge(&t.res, res)
		}
	}
	printBench(os.Stdout, targets)
	for _, t := range targets {
		if t.res.Errors > 0 {
			return exitError
		}
	}
	return exitOK
}

func paramsNote(params []byte) string {
	if params == nil {
		return ""
	}
	return " " + string(params)
}

func amount(n int, d time.Duration) string {
	if n > 0 {
		return fmt.Sprintf("%d calls", n)
	}
	return d.String()
}

func benchOnce(t *benchTarget, cfg loadgen.Config, conns int, timeout time.Duration, method string, params []byte, quiet bool) (loadgen.Result, error) {
	ctx := context.Background()
	clients := make([]*client.Client, conns)
	for i := range clients {
		c, err := client.Dial(ctx, t.addr, t.opts...)
		if err != nil {
			return loadgen.Result{}, err
		}
		defer c.Close()
		clients[i] = c
	}
	var next atomic.Uint64
	pick := func() *client.Client { return clients[next.Add(1)%uint64(len(clients))] }
	if !quiet {
		cfg.ProgressEvery = 500 * time.Millisecond
		cfg.Progress = func(done int, elapsed time.Duration) {
			fmt.Fprintf(os.Stderr, "\r  %-7s %9d calls  %10.0f calls/s", t.name, done, float64(done)/elapsed.Seconds())
		}
	}
	res := loadgen.Run(ctx, cfg, func(context.Context) error {
		// The call's deadline is its own: the run's end lets calls in
		// flight finish rather than cutting them short.
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := pick().CallRaw(cctx, method, params)
		return err
	})
	if !quiet {
		fmt.Fprintf(os.Stderr, "\r%60s\r", "")
	}
	return res, nil
}

// merge adds a round's result to the running total.
func merge(total *loadgen.Result, r loadgen.Result) {
	total.Calls += r.Calls
	total.Errors += r.Errors
	if total.FirstError == nil {
		total.FirstError = r.FirstError
	}
	total.Elapsed += r.Elapsed
	total.Latencies = append(total.Latencies, r.Latencies...)
	slices.Sort(total.Latencies)
}

func printBench(w io.Writer, targets []*benchTarget) {
	width := 8
	for _, t := range targets {
		width = max(width, len(t.name))
	}
	fmt.Fprintf(w, "%-*s %10s %12s %10s %10s %10s %10s %8s\n", width, "target", "calls", "calls/s", "p50", "p90", "p99", "max", "errors")
	for _, t := range targets {
		r := &t.res
		fmt.Fprintf(w, "%-*s %10d %12.0f %10s %10s %10s %10s %8d\n", width, t.name, r.Calls, r.Rate(),
			us(r.Percentile(0.5)), us(r.Percentile(0.9)), us(r.Percentile(0.99)), us(r.Max()), r.Errors)
		if r.FirstError != nil {
			fmt.Fprintf(w, "%*s first error: %v\n", width, "", r.FirstError)
		}
	}
	base := &targets[0].res
	for _, t := range targets[1:] {
		m := &t.res
		fmt.Fprintf(w, "%s vs %s: added p50 %s, added p99 %s, throughput ratio %.2f\n", t.name, targets[0].name,
			signedUs(m.Percentile(0.5)-base.Percentile(0.5)), signedUs(m.Percentile(0.99)-base.Percentile(0.99)), m.Rate()/base.Rate())
	}
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/1e3) }

func signedUs(d time.Duration) string { return fmt.Sprintf("%+.0fµs", float64(d)/1e3) }
