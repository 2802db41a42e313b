// Package announce keeps a servant listed in etcd, where every mserve
// started with -etcd finds it, adds it, and removes it when it leaves.
//
// # The key
//
// A servant is one key, <prefix>/servants/<name> (prefix /mserve unless
// mserve's -etcd-prefix says otherwise), whose value is JSON:
//
//	{"addr":"10.0.0.5:7001","slots":4,"tags":["gpu"]}
//
// addr is host:port for the native protocol or an http(s):// URL for a
// JSON-RPC server over HTTP; slots (calls it runs at once; 0 or absent
// lets the servant say) and tags are optional. The key is written under a
// lease that the announcer keeps alive: when the servant stops, the lease
// is revoked (or, if the servant was killed, expires after its TTL) and
// etcd deletes the key, so every mserve removes the servant.
//
// # From Go
//
//	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"10.0.0.2:2379"}})
//	if err != nil { ... }
//	defer cli.Close()
//	go s.Serve(ln) // an sdk/servant Servant
//	err = announce.Run(ctx, cli, announce.DefaultPrefix, "gpu1",
//		announce.Servant{Addr: "10.0.0.5:7001", Slots: 4, Tags: []string{"gpu"}}, 2*time.Second)
//
// Run returns when ctx ends, having deleted the key: cancel ctx before the
// servant stops serving, so that mserve stops sending it calls first.
//
// # Without Go
//
// `mserve announce -etcd E -name N -addr HOST:PORT` is a sidecar that does
// the same for any servant, keeping the key while the servant answers, and
// a one-off listing needs only etcdctl:
//
//	etcdctl lease grant 10      # prints the lease ID
//	etcdctl put --lease=ID /mserve/servants/py1 '{"addr":"http://10.0.0.7:8000/"}'
//	etcdctl lease keep-alive ID # as long as the servant runs
package announce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DefaultPrefix is the etcd prefix mserve uses unless told otherwise.
const DefaultPrefix = "/mserve"

// DefaultTTL is the lease time to live used when Run is given 0: how long
// after a servant is killed (without revoking its lease) etcd deletes its
// key. etcd's default configuration grants no lease shorter than 2s.
const DefaultTTL = 2 * time.Second

// ClientConfig is the etcd client configuration mserve's own etcd clients
// use (discovery, mserve announce, the resume plugin): 5s to dial,
// keep-alive probes every 10s, and, while etcd is unreachable, a redial at
// least every 3s (gRPC's default backoff grows to 2 minutes, which would
// leave the client that long behind etcd's return). The client logs its
// errors, only, to log, named "etcd"; a nil log discards them.
func ClientConfig(endpoints []string, log *zap.Logger) clientv3.Config {
	if log == nil {
		log = zap.NewNop()
	} else {
		log = log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.ErrorLevel))
	}
	return clientv3.Config{
		Endpoints: endpoints, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 3 * time.Second,
		})},
		Logger: log,
	}
}

// Servant is what a servant key says: where mserve reaches the servant and
// how it may use it. It is the key's JSON value.
type Servant struct {
	Addr  string   `json:"addr"`            // host:port (native protocol) or http(s):// URL (JSON-RPC over HTTP)
	Slots int      `json:"slots,omitempty"` // calls it runs at once; 0 lets the servant say
	Tags  []string `json:"tags,omitempty"`  // labels algorithms may route by
}

// ServantsDir returns the folder of servant keys under prefix:
// <prefix>/servants/.
func ServantsDir(prefix string) string { return strings.TrimRight(prefix, "/") + "/servants/" }

// Key returns the key of the servant called name under prefix.
func Key(prefix, name string) string { return ServantsDir(prefix) + name }

// CheckName returns an error unless name can name a servant key: 1 to 255
// bytes, no '/', blank or control character.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty servant name")
	case len(name) > 255:
		return fmt.Errorf("servant name of %d bytes; at most 255", len(name))
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("servant name %q contains '/'", name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("servant name %q contains a blank or control character", name)
		}
	}
	return nil
}

// Event tells an OnEvent function what Run did.
type Event struct {
	Announced bool             // true: the key was written under Lease; false: the lease was lost or writing failed (Err)
	Lease     clientv3.LeaseID // the lease, when Announced
	Err       error            // why the announcement is down, when not Announced; Run retries
	Retry     time.Duration    // when not Announced, how long Run waits before retrying
}

// Option changes how Run works.
type Option func(*options)

type options struct{ onEvent func(Event) }

// OnEvent makes Run call f (from Run's goroutine) each time the key is
// written and each time the announcement is lost, for logs and tests.
func OnEvent(f func(Event)) Option { return func(o *options) { o.onEvent = f } }

// Run lists the servant s under <prefix>/servants/<name> until ctx ends.
//
// It grants a lease of ttl (rounded up to whole seconds; 0 means
// DefaultTTL; etcd may raise it to its minimum), writes the key under it
// and keeps the lease alive. If the lease is lost (etcd unreachable for
// longer than ttl, or the lease revoked by someone else) or etcd refuses a
// request, Run waits (100ms, doubling up to ttl) and starts again with a
// new lease: it never gives up while ctx lasts. When ctx ends, Run revokes
// the lease, which deletes the key at once, and returns nil; if the revoke
// fails the key expires within ttl and Run returns the error.
//
// Run returns an error at once, writing nothing, when the arguments cannot
// make a valid key (see CheckName; s.Addr must be set, s.Slots not
// negative) or client is nil. The client is not closed. Two Runs under one
// name overwrite each other: give each servant its own name.
func Run(ctx context.Context, client *clientv3.Client, prefix, name string, s Servant, ttl time.Duration, opts ...Option) error {
	if client == nil {
		return errors.New("announce: no etcd client")
	}
	if err := CheckName(name); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	if s.Addr == "" {
		return fmt.Errorf("announce %s: no address", name)
	}
	if s.Slots < 0 {
		return fmt.Errorf("announce %s: slots must not be negative, got %d", name, s.Slots)
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	value, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("announce %s: %w", name, err)
	}
	key := Key(prefix, name)
	seconds := int64(math.Ceil(ttl.Seconds()))
	const minWait = 100 * time.Millisecond
	wait := minWait
	for {
		lease, err := put(ctx, client, key, string(value), seconds)
		if err == nil {
			wait = minWait
			if o.onEvent != nil {
				o.onEvent(Event{Announced: true, Lease: lease})
			}
			err = keepAlive(ctx, client, lease)
		}
		if ctx.Err() != nil {
			if lease == 0 {
				return nil
			}
			return revoke(ctx, client, lease)
		}
		if lease != 0 { // lost, or never kept: make sure it does not linger
			revoke(ctx, client, lease)
		}
		if o.onEvent != nil {
			o.onEvent(Event{Err: err, Retry: wait})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, max(ttl, minWait))
	}
}

// put grants a lease and writes the key under it. The lease is returned
// even when the write failed, so that it can be revoked.
func put(ctx context.Context, client *clientv3.Client, key, value string, seconds int64) (clientv3.LeaseID, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	g, err := client.Grant(rctx, seconds)
	if err != nil {
		return 0, fmt.Errorf("granting a lease: %w", err)
	}
	if _, err := client.Put(rctx, key, value, clientv3.WithLease(g.ID)); err != nil {
		return g.ID, fmt.Errorf("writing %s: %w", key, err)
	}
	return g.ID, nil
}

// requestTimeout bounds one etcd request.
const requestTimeout = 5 * time.Second

// keepAlive keeps the lease alive until ctx ends (nil) or the lease is
// lost (an error).
func keepAlive(ctx context.Context, client *clientv3.Client, lease clientv3.LeaseID) error {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := client.KeepAlive(kctx, lease)
	if err != nil {
		return fmt.Errorf("keeping lease %x alive: %w", int64(lease), err)
	}
	for range ch { // drained, or the client's queue fills and it logs
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("lease %x lost (expired or revoked, or etcd unreachable for longer than its TTL)", int64(lease))
}

// revoke revokes the lease, deleting the key, within requestTimeout even
// though ctx has ended.
func revoke(ctx context.Context, client *clientv3.Client, lease clientv3.LeaseID) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	if _, err := client.Revoke(rctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("announce: revoking lease %x (the key expires with it): %w", int64(lease), err)
	}
	return nil
}
