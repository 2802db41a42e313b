// Package discover keeps a balancer's servants and settings in line with
// an etcd tree, as zc.resumelb kept its workers and settings in ZooKeeper:
//
//	<prefix>/servants/<name>   {"addr":"host:port","slots":N,"tags":["gpu"]}, under the servant's lease
//	<prefix>/config/algo       the dispatch algorithm, applied live
//	<prefix>/config/routing    the routing function or expression, applied live
//
// A servant key that appears adds the servant, one that is deleted (or
// whose lease expires) removes it, and one whose value changes replaces it.
// The tree is listed once (Sync), then watched from the next revision
// (Run), so that no change is missed; after a watch fails (etcd compacted
// the history it needed, or lost its leader) the tree is listed again and
// the balancer reconciled with it. What the tree says always wins: a key
// whose value is invalid counts as absent, and is logged.
//
// The package does not import the balancer: it drives a Target.
package discover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/mserve/mserve/core/logging"
	"github.com/mserve/mserve/sdk/announce"
)

// Servant is a servant as its etcd key describes it.
type Servant struct {
	Name  string   // the key's last segment
	Addr  string   // host:port (native protocol) or http(s):// URL (JSON-RPC over HTTP)
	Slots int      // calls it runs at once; 0 lets the servant say
	Tags  []string // labels algorithms may route by
}

// equal reports whether a and b describe the same servant.
func (a Servant) equal(b Servant) bool {
	return a.Name == b.Name && a.Addr == b.Addr && a.Slots == b.Slots && slices.Equal(a.Tags, b.Tags)
}

// Target is what discovery keeps in line with the tree: a balancer.
// Discovery calls it from one goroutine at a time.
type Target interface {
	// AddServant adds a servant mserve dials; an error if the name is in use.
	AddServant(Servant) error
	// RemoveServant takes out, for good, a servant AddServant added.
	RemoveServant(name string, cause error) error
	// SetAlgorithm switches the dispatch algorithm; an invalid name changes nothing.
	SetAlgorithm(name string) error
	// SetRouting switches the routing function; an invalid one changes nothing.
	SetRouting(spec string) error
}

// Config sets up a Discovery.
type Config struct {
	Client *clientv3.Client // connected to the etcd cluster; not closed by Discovery
	Prefix string           // the tree's root; default announce.DefaultPrefix ("/mserve")
	Target Target

	// Algorithm and Routing are the settings in force before etcd has a
	// say (mserve's flags): a config key overrides them while it exists,
	// and deleting it restores them.
	Algorithm, Routing string

	Log *zap.Logger
}

// Setting keys under <prefix>/config/.
const (
	KeyAlgorithm = "algo"
	KeyRouting   = "routing"
)

// Discovery follows one etcd tree for one Target. Create it with New,
// call Sync once, then Run.
type Discovery struct {
	cfg         Config
	log         *zap.Logger
	servantsDir string
	configDir   string

	known    map[string]Servant // servants added to the target, by name
	settings map[string]string  // the value last seen for each setting key present
	inForce  map[string]string  // each setting's value as last applied (at first, the flags')
	rev      int64              // the revision the last listing saw
	limit    logging.Limiter    // repeated warnings, once per key every logging.LimitPeriod

	mu    sync.Mutex // guards stats
	stats Stats
}

// Stats counts what discovery did, for tests and status.
type Stats struct {
	Added   int // servants added to the target
	Removed int // servants removed from it
	Invalid int // servant keys refused (bad name or value)
	Relists int // times the tree was listed again after a watch failed
}

// New returns a Discovery for cfg.
func New(cfg Config) *Discovery {
	if cfg.Prefix == "" {
		cfg.Prefix = announce.DefaultPrefix
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	root := strings.TrimRight(cfg.Prefix, "/")
	return &Discovery{
		cfg: cfg, log: cfg.Log.With(zap.String("etcd_prefix", root)),
		servantsDir: announce.ServantsDir(root), configDir: root + "/config/",
		known: map[string]Servant{}, settings: map[string]string{},
		inForce: map[string]string{KeyAlgorithm: cfg.Algorithm, KeyRouting: cfg.Routing},
	}
}

// Stats returns what discovery has done so far.
func (d *Discovery) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

func (d *Discovery) count(f func(*Stats)) {
	d.mu.Lock()
	f(&d.stats)
	d.mu.Unlock()
}

// Servants returns the names of the servants discovery has added and not
// removed. Call it from the goroutine that runs Sync and Run, or after
// Run has returned.
func (d *Discovery) Servants() []string {
	var out []string
	for n := range d.known {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Sync lists the tree at one revision and brings the target in line with
// it: adds the servants listed and not known, replaces those whose value
// changed, removes those known and no longer listed, and applies the
// settings. It returns an error only when etcd cannot be read.
func (d *Discovery) Sync(ctx context.Context) error {
	resp, err := d.cfg.Client.Txn(ctx).Then(
		clientv3.OpGet(d.servantsDir, clientv3.WithPrefix()),
		clientv3.OpGet(d.configDir, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return err
	}
	d.rev = resp.Header.Revision
	servants, config := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	listed := map[string]bool{}
	for _, kv := range servants {
		name := strings.TrimPrefix(string(kv.Key), d.servantsDir)
		listed[name] = true
		d.put(name, kv.Value)
	}
	for _, name := range d.Servants() {
		if !listed[name] {
			d.remove(name, errors.New("no longer listed in etcd"))
		}
	}
	present := map[string]bool{}
	for _, kv := range config {
		key := strings.TrimPrefix(string(kv.Key), d.configDir)
		present[key] = true
		d.setting(key, string(kv.Value), true)
	}
	for key := range d.settings {
		if !present[key] {
			d.setting(key, "", false)
		}
	}
	return nil
}

// Run follows the tree from the revision Sync saw until ctx ends. When a
// watch fails it logs once, lists the tree again (retrying with backoff
// while etcd cannot be read) and goes on from there. It also logs when
// the connection to etcd is lost and when it is back; meanwhile the
// servants known stay.
func (d *Discovery) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.monitor(ctx) }()
	defer wg.Wait()
	const minWait, maxWait = 100 * time.Millisecond, 5 * time.Second
	for {
		err := d.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("etcd watch ended; listing the tree again to catch up", zap.Error(err), zap.Int64("revision", d.rev))
		wait := minWait
		for {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := d.Sync(sctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				break
			}
			d.logLimited("relist", "etcd listing failed; retrying", zap.Error(err), zap.Duration("retry_in", wait))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, maxWait)
		}
		d.count(func(s *Stats) { s.Relists++ })
		d.log.Info("etcd discovery caught up", zap.Int64("revision", d.rev), zap.Int("servants", len(d.known)))
	}
}

// follow watches both folders from the revision after d.rev and applies
// each change, until a watch fails (the error) or ctx ends.
func (d *Discovery) follow(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	servants := d.cfg.Client.Watch(wctx, d.servantsDir, clientv3.WithPrefix(), clientv3.WithRev(d.rev+1))
	config := d.cfg.Client.Watch(wctx, d.configDir, clientv3.WithPrefix(), clientv3.WithRev(d.rev+1))
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-servants:
		case resp, ok = <-config:
		}
		if !ok {
			return errors.New("watch closed")
		}
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			d.apply(ev)
		}
	}
}

// apply applies one change.
func (d *Discovery) apply(ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	put := ev.Type == clientv3.EventTypePut
	if name, ok := strings.CutPrefix(key, d.servantsDir); ok {
		if put {
			d.put(name, ev.Kv.Value)
		} else if _, known := d.known[name]; known {
			d.remove(name, errors.New("its etcd key was deleted or its lease expired"))
		}
		return
	}
	if setting, ok := strings.CutPrefix(key, d.configDir); ok {
		d.setting(setting, string(ev.Kv.Value), put)
	}
}

// put brings the servant called name in line with value.
func (d *Discovery) put(name string, value []byte) {
	s, err := Decode(name, value)
	old, known := d.known[name]
	if err != nil {
		d.count(func(s *Stats) { s.Invalid++ })
		d.logLimited("servant "+name, "invalid servant key in etcd; ignored", zap.String("key", d.servantsDir+name),
			zap.ByteString("value", truncate(value)), zap.Error(err))
		if known {
			d.remove(name, fmt.Errorf("its etcd key has an invalid value: %v", err))
		}
		return
	}
	if known && old.equal(s) {
		return
	}
	if known {
		d.remove(name, errors.New("its etcd key changed"))
	}
	if err := d.cfg.Target.AddServant(s); err != nil {
		d.logLimited("servant "+name, "servant in etcd not added", zap.String("key", d.servantsDir+name), zap.Error(err))
		return
	}
	d.known[name] = s
	d.count(func(s *Stats) { s.Added++ })
}

// remove takes out a servant discovery added.
func (d *Discovery) remove(name string, cause error) {
	delete(d.known, name)
	if err := d.cfg.Target.RemoveServant(name, cause); err != nil {
		d.log.Warn("servant not removed", zap.String("servant", name), zap.Error(err))
		return
	}
	d.count(func(s *Stats) { s.Removed++ })
}

// setting applies the setting key's value (present) or restores the one
// in force before etcd had a say (deleted). Unknown keys are ignored; a
// value already seen, or already in force, is not applied again (which
// would reset the algorithm's state).
func (d *Discovery) setting(key, value string, present bool) {
	var set func(string) error
	var initial string
	switch key {
	case KeyAlgorithm:
		set, initial = d.cfg.Target.SetAlgorithm, d.cfg.Algorithm
	case KeyRouting:
		set, initial = d.cfg.Target.SetRouting, d.cfg.Routing
	default:
		return // another component's setting (config/resume/...)
	}
	value = strings.TrimSpace(value)
	last, had := d.settings[key]
	if present {
		if had && last == value {
			return
		}
		d.settings[key] = value
	} else {
		if !had {
			return
		}
		delete(d.settings, key)
		value = initial
	}
	if value == d.inForce[key] {
		return
	}
	if value == "" {
		d.log.Error("empty setting in etcd; the one in force stays", zap.String("key", d.configDir+key))
		return
	}
	if err := set(value); err != nil {
		d.log.Error("setting in etcd not applied; the one in force stays", zap.String("key", d.configDir+key),
			zap.String("value", value), zap.Error(err))
		return
	}
	d.inForce[key] = value
	d.log.Info("setting from etcd applied", zap.String("key", d.configDir+key), zap.String("value", value), zap.Bool("from_flags", !present))
}

// monitor logs when the client loses its connection to etcd and when it
// has it back.
func (d *Discovery) monitor(ctx context.Context) {
	conn := d.cfg.Client.ActiveConnection()
	if conn == nil {
		return
	}
	state, down := conn.GetState(), false
	for conn.WaitForStateChange(ctx, state) {
		state = conn.GetState()
		switch {
		case state == connectivity.TransientFailure && !down:
			down = true
			d.log.Warn("etcd unreachable; serving with the servants known, reconnecting",
				zap.Strings("endpoints", d.cfg.Client.Endpoints()), zap.Int("servants", d.knownCount()))
		case state == connectivity.Ready && down:
			down = false
			d.log.Info("etcd reachable again", zap.Strings("endpoints", d.cfg.Client.Endpoints()))
		}
	}
}

// knownCount is len(d.known) for the monitor, which runs on its own
// goroutine: an estimate, read without the owner's help.
func (d *Discovery) knownCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats.Added - d.stats.Removed
}

// logLimited logs a warning under key at most once per
// logging.LimitPeriod.
func (d *Discovery) logLimited(key, msg string, fields ...zap.Field) {
	if n, ok := d.limit.Allow(key, time.Now()); ok {
		d.log.Warn(msg, append(fields, zap.Int("suppressed_since_last_report", n))...)
	}
}

// truncate shortens a value for a log line.
func truncate(b []byte) []byte {
	if len(b) > 200 {
		return append(b[:200:200], "…"...)
	}
	return b
}
