package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/launch"
)

const launcherUsage = `mserve launcher starts servants on this host when an mserve asks for them
(mserve -launchers THIS_HOST:PORT -launcher-secret-file FILE N COMMAND [ARGS...]).

Usage:
  mserve launcher -listen ADDR -secret-file FILE -allow 'COMMAND ARGS...' [-allow ...]

An mserve must prove it knows the secret (challenge-response; the secret is
never sent), and may only start command lines exactly equal to an -allow
entry (split into words at spaces; no shell runs, no quoting). Servants
listen on -servant-host (default: this host's address on the mserve
connection) at free ports, restarted with backoff when they exit, and are
stopped when that mserve's connection ends or this launcher stops.
Traffic is not encrypted: use a private network or a tunnel.

Flags (each also settable by the environment variable shown;
MSERVE_LAUNCHER_ALLOW takes one command line per line):
`

// launcherOptions are mserve launcher's settings.
type launcherOptions struct {
	listen, secretFile, servantHost string
	allow                           allowEntries
	cfg                             launch.AgentConfig
	logs                            logFlags
}

// launcherFlags defines mserve launcher's flags.
func launcherFlags() (*flag.FlagSet, *launcherOptions) {
	o := &launcherOptions{}
	fs := flag.NewFlagSet("mserve launcher", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:5010", "address to accept mserve connections on (0.0.0.0:5010 for other hosts)")
	fs.StringVar(&o.secretFile, "secret-file", "", "file holding the secret an mserve must prove it knows (the same as its -launcher-secret-file)")
	fs.Var(&o.allow, "allow", "a command line mserve may start here, exactly, e.g. './servant -mode fast'; repeat for more")
	fs.StringVar(&o.servantHost, "servant-host", "", "host servants listen on and mserve reaches them at; empty: this host's address on each mserve connection")
	fs.DurationVar(&o.cfg.Grace, "grace", launch.DefaultGrace, "stopping a servant: SIGTERM, then SIGKILL after this")
	o.logs.register(fs)
	fs.Usage = usageFor(fs, launcherUsage)
	return fs, o
}

func launcherMain(args []string) int {
	fs, o := launcherFlags()
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mserve launcher: unexpected arguments %q: quote each allowed command line in one -allow '...'\n", fs.Args())
		return exitUsage
	}
	if o.secretFile == "" {
		fmt.Fprintln(os.Stderr, "mserve launcher: -secret-file is required")
		return exitUsage
	}
	secret, err := readSecretFile(o.secretFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve launcher: -secret-file:", err)
		return exitUsage
	}
	if o.cfg.Allow, err = launch.ParseAllowlist(o.allow); err != nil {
		fmt.Fprintln(os.Stderr, "mserve launcher: -allow:", err)
		return exitUsage
	}
	log, err := o.logs.logger()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve launcher:", err)
		return exitUsage
	}
	defer log.Sync()
	o.cfg.Secret, o.cfg.ServantHost, o.cfg.Log = []byte(secret), o.servantHost, log
	agent, err := launch.NewAgent(o.cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve", err)
		return exitUsage
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		log.Error("cannot listen", zap.Error(err))
		return exitError
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("launcher listening", zap.String("addr", ln.Addr().String()), zap.Stringer("allow", o.cfg.Allow),
		zap.String("servant_host", o.servantHost), zap.Int("pid", os.Getpid()))
	if err := agent.Serve(ctx, ln); err != nil {
		log.Error("launcher stopped", zap.Error(err))
		return exitError
	}
	log.Info("launcher stopped; its servants are stopped")
	return exitOK
}

// allowEntries is the repeatable -allow flag: each use adds one command
// line; a value with several lines (MSERVE_LAUNCHER_ALLOW) adds each.
type allowEntries []string

func (a *allowEntries) String() string { return strings.Join(*a, "\n") }

func (a *allowEntries) Set(v string) error {
	for line := range strings.SplitSeq(v, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			*a = append(*a, line)
		}
	}
	return nil
}

// readSecretFile reads a secret from a file (so that it is not in ps
// output), without surrounding white space.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
