package core

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mserve/mserve/core/discover"
	"github.com/mserve/mserve/sdk/announce"
)

// DiscoveryError is returned by Start when etcd (Config.Etcd) cannot be
// reached or read: mserve cannot run as configured.
type DiscoveryError struct {
	Endpoints []string // the etcd endpoints tried
	Err       error
}

// Error names the endpoints and the reason.
func (e *DiscoveryError) Error() string {
	return "etcd at " + strings.Join(e.Endpoints, ",") + ": cannot list servants and settings: " + e.Err.Error()
}

// Unwrap returns the reason.
func (e *DiscoveryError) Unwrap() error { return e.Err }

// etcdStartTimeout bounds connecting to etcd and the first listing.
var etcdStartTimeout = 5 * time.Second

// etcdPrefix is the tree's root: Config.EtcdPrefix or the default.
func (b *Balancer) etcdPrefix() string {
	if b.cfg.EtcdPrefix == "" {
		return announce.DefaultPrefix
	}
	return b.cfg.EtcdPrefix
}

// pluginEnv is what compiled plugins are told beyond mserve's environment:
// where etcd is, so that they can share state there (plugins/resume).
func (b *Balancer) pluginEnv() []string {
	if len(b.cfg.Etcd) == 0 {
		return nil
	}
	return []string{"MSERVE_ETCD=" + strings.Join(b.cfg.Etcd, ","), "MSERVE_ETCD_PREFIX=" + b.etcdPrefix()}
}

// startDiscovery, with Config.Etcd, lists the servants and settings in
// etcd, adds and applies them, and follows the tree until the balancer
// stops (see core/discover). etcd unreachable now is a *DiscoveryError;
// later, mserve keeps the servants it has while the client reconnects.
func (b *Balancer) startDiscovery() error {
	if len(b.cfg.Etcd) == 0 {
		return nil
	}
	cfg := announce.ClientConfig(b.cfg.Etcd, b.log) // redials at least every 3s while etcd is unreachable
	cfg.DialTimeout = etcdStartTimeout
	client, err := clientv3.New(cfg)
	if err != nil {
		return &DiscoveryError{Endpoints: b.cfg.Etcd, Err: err}
	}
	d := discover.New(discover.Config{Client: client, Prefix: b.etcdPrefix(), Target: discoverTarget{b},
		Algorithm: b.cfg.Algorithm, Routing: b.cfg.Routing, Log: b.log})
	ctx, cancel := context.WithTimeout(b.ctx, etcdStartTimeout)
	err = d.Sync(ctx)
	cancel()
	if err != nil {
		client.Close()
		return &DiscoveryError{Endpoints: b.cfg.Etcd, Err: err}
	}
	b.log.Info("discovering servants in etcd", zap.Strings("endpoints", b.cfg.Etcd), zap.String("prefix", b.etcdPrefix()),
		zap.Int("servants", len(d.Servants())))
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer client.Close()
		d.Run(b.ctx)
	}()
	return nil
}

// discoverTarget adapts the Balancer to what discovery drives.
type discoverTarget struct{ b *Balancer }

func (t discoverTarget) AddServant(s discover.Servant) error {
	return t.b.AddServant(ServantSpec{Name: s.Name, Addr: s.Addr, Slots: s.Slots, Tags: s.Tags})
}

func (t discoverTarget) RemoveServant(name string, cause error) error {
	return t.b.RemoveServant(name, cause)
}

func (t discoverTarget) SetAlgorithm(name string) error { return t.b.SetAlgorithm(name) }

func (t discoverTarget) SetRouting(spec string) error { return t.b.SetRouting(spec) }
