package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/announce"
	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

const announceUsage = `mserve announce lists a servant in etcd while it answers, for every mserve
started with -etcd to find it: a sidecar for servants not written in Go (Go servants
can use sdk/announce).

Usage:
  mserve announce -etcd HOST:PORT,... -name NAME -addr HOST:PORT|http://HOST:PORT/PATH
                  [-prefix /mserve] [-slots N] [-tags a,b] [-ttl 2s]

It checks the servant every -interval (rpc.ping over the native protocol, or over
HTTP for an http:// address; any JSON-RPC answer counts). While the servant answers,
<prefix>/servants/NAME holds {"addr":…,"slots":…,"tags":[…]} under a lease kept
alive; after 3 checks in a row fail the lease is revoked (the key goes at once), and
the servant is announced again when it answers again. SIGTERM or SIGINT revokes the
lease and exits 0. If this process is killed, the key expires after -ttl.

Flags (each also settable by the environment variable shown):
`

// announceOptions are mserve announce's settings.
type announceOptions struct {
	etcd               stringList
	prefix, name, addr string
	slots              int
	tags               stringList
	ttl                time.Duration
	interval, timeout  time.Duration
	servantSecret      string
	logs               logFlags
}

// missesToWithdraw is how many failed checks in a row revoke the key.
const missesToWithdraw = 3

func announceFlags() (*flag.FlagSet, *announceOptions) {
	o := &announceOptions{}
	fs := flag.NewFlagSet("mserve announce", flag.ContinueOnError)
	fs.Var(&o.etcd, "etcd", "etcd endpoints, host:port,... (required)")
	fs.StringVar(&o.prefix, "prefix", announce.DefaultPrefix, "root of mserve's keys in etcd (mserve's -etcd-prefix)")
	fs.StringVar(&o.name, "name", "", "the servant's name, unique among servants (required)")
	fs.StringVar(&o.addr, "addr", "", "where mserve reaches the servant: host:port (native protocol) or an http:// URL (required)")
	fs.IntVar(&o.slots, "slots", 0, "calls the servant runs at once; 0 lets the servant say (default 1)")
	fs.Var(&o.tags, "tags", "comma-separated tags algorithms may route by")
	fs.DurationVar(&o.ttl, "ttl", announce.DefaultTTL, "lease time to live: how long the key outlives this process if it is killed (whole seconds; etcd's default minimum is 2s)")
	fs.DurationVar(&o.interval, "interval", time.Second, "check the servant this often")
	fs.DurationVar(&o.timeout, "timeout", time.Second, "a check unanswered this long fails")
	fs.StringVar(&o.servantSecret, "servant-secret", "", "secret to present in rpc.hello to a native servant that requires one (mserve's -servant-secret)")
	o.logs.register(fs)
	fs.Usage = usageFor(fs, announceUsage)
	return fs, o
}

func announceMain(args []string) int {
	fs, o := announceFlags()
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "mserve announce: "+format+"\n", a...)
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		return usage("unexpected arguments %q", fs.Args())
	case len(o.etcd) == 0:
		return usage("-etcd is required")
	case o.addr == "":
		return usage("-addr is required")
	case o.slots < 0:
		return usage("-slots must not be negative")
	case o.interval <= 0 || o.timeout <= 0:
		return usage("-interval and -timeout must be positive")
	}
	if err := announce.CheckName(o.name); err != nil {
		return usage("-name: %v", err)
	}
	log, err := o.logs.logger()
	if err != nil {
		return usage("%v", err)
	}
	defer log.Sync()
	log = log.With(zap.String("servant", o.name), zap.String("key", announce.Key(o.prefix, o.name)))

	cli, err := clientv3.New(announce.ClientConfig(o.etcd, log)) // redials at least every 3s, not gRPC's 2 minutes
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Get(ctx, announce.Key(o.prefix, o.name))
		cancel()
	}
	if err != nil {
		if cli != nil {
			cli.Close()
		}
		fmt.Fprintf(os.Stderr, "mserve announce: etcd at %s: %v\n", strings.Join(o.etcd, ","), err)
		return exitUsage
	}
	defer cli.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	check := pinger(o)
	s := announce.Servant{Addr: o.addr, Slots: o.slots, Tags: o.tags}
	var withdraw context.CancelFunc // ends the announcement
	var done chan error             // its result
	end := func() {
		withdraw()
		if err := <-done; err != nil {
			log.Warn("lease not revoked; the key expires with it", zap.Error(err))
		}
		withdraw, done = nil, nil
	}
	misses := 0
	log.Info("announcer started", zap.String("addr", o.addr), zap.Strings("etcd", o.etcd), zap.Duration("ttl", o.ttl))
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		err := check(ctx)
		if ctx.Err() != nil {
			break
		}
		switch {
		case err == nil:
			misses = 0
			if withdraw == nil {
				log.Info("servant answers; announcing it")
				var actx context.Context
				actx, withdraw = context.WithCancel(ctx)
				done = make(chan error, 1)
				go func() {
					done <- announce.Run(actx, cli, o.prefix, o.name, s, o.ttl, announce.OnEvent(func(e announce.Event) {
						if e.Announced {
							log.Info("announced", zap.String("lease", fmt.Sprintf("%x", int64(e.Lease))))
						} else {
							log.Warn("announcement lost; retrying", zap.Error(e.Err), zap.Duration("retry_in", e.Retry))
						}
					}))
				}()
			}
		default:
			misses++
			if withdraw != nil && misses >= missesToWithdraw {
				log.Warn("servant stopped answering; withdrawing it", zap.Error(err), zap.Int("checks_failed", misses))
				end()
			} else if withdraw == nil && misses == 1 {
				log.Info("waiting for the servant to answer", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	if withdraw != nil {
		end()
	}
	log.Info("announcer stopped; the servant is no longer listed")
	return exitOK
}

// pinger returns the check of the servant at o.addr: nil when it answers
// rpc.ping (any JSON-RPC answer, an error included) within o.timeout.
func pinger(o *announceOptions) func(context.Context) error {
	if strings.HasPrefix(o.addr, "http://") || strings.HasPrefix(o.addr, "https://") {
		hc := &http.Client{Timeout: o.timeout}
		body := []byte(`{"jsonrpc":"2.0","id":0,"method":"` + wire.MethodPing + `"}`)
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.addr, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if err != nil {
				return err
			}
			var r jsonrpc.Response
			if err := jsonrpc.ParseResponse(out, &r); err != nil {
				return fmt.Errorf("HTTP %s, not a JSON-RPC answer: %v", resp.Status, err)
			}
			return nil
		}
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		var opts []client.Option
		if o.servantSecret != "" {
			opts = append(opts, client.Credentials("", o.servantSecret))
		}
		c, err := client.Dial(ctx, o.addr, opts...)
		if err == nil {
			defer c.Close()
			_, err = c.CallRaw(ctx, wire.MethodPing, nil)
		}
		if e := (*jsonrpc.Error)(nil); errors.As(err, &e) {
			return nil // it answered
		}
		return err
	}
}
