package core

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/announce"
	"github.com/mserve/mserve/sdk/announce/etcdtest"
	"github.com/mserve/mserve/sdk/servant"
)

// whoServant serves an SDK servant with who() (answering id) and echo on
// a free loopback port, and returns its address.
func whoServant(t *testing.T, id string) string {
	t.Helper()
	s := servant.New(servant.Secret(""))
	s.MustHandle("who()", func(context.Context, *servant.Call) (any, error) { return id, nil })
	s.MustHandle("echo(x any)", func(_ context.Context, c *servant.Call) (any, error) {
		var x any
		return x, c.Bind(&x)
	})
	return serveSDK(t, s)
}

// announced runs announce.Run for a servant until the returned function
// is called (which revokes its lease and waits for Run) or the test ends.
func announced(t *testing.T, cli *clientv3.Client, prefix, name, addr string) (withdraw func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- announce.Run(ctx, cli, prefix, name, announce.Servant{Addr: addr}, time.Second) }()
	var once bool
	withdraw = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("announce.Run for %s: %v", name, err)
		}
	}
	t.Cleanup(withdraw)
	return withdraw
}

// servantNames returns the names of the balancer's servants.
func servantNames(b *Balancer) []string {
	var out []string
	for _, s := range b.Status().Servants {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// A balancer started with -etcd and no servant of its own serves the
// servants announced in etcd; a servant whose lease is revoked stops
// getting calls.
func TestDiscoveredServantsServeAndLeave(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	withdrawW1 := announced(t, cli, "/d", "w1", whoServant(t, "one"))
	b := startBalancer(t, 0, Config{Etcd: []string{srv.Endpoint}, EtcdPrefix: "/d"})
	announced(t, cli, "/d", "w2", whoServant(t, "two")) // after the start: found by the watch
	eventually(t, "w1 and w2 discovered and healthy", func() bool { h := healthy(b); return h["w1"] && h["w2"] })
	c := dial(t, b)
	seen := map[string]bool{}
	for range 20 {
		id, name := who(t, c)
		if !(id == "one" && name == "w1" || id == "two" && name == "w2") {
			t.Fatalf("who() answered %q from %q", id, name)
		}
		seen[name] = true
	}
	t.Logf("servants that answered: %v", seen)

	withdrawW1()
	eventually(t, "w1 removed", func() bool { return slices.Equal(servantNames(b), []string{"w2"}) })
	for range 10 {
		if id, name := who(t, c); id != "two" || name != "w2" {
			t.Fatalf("after w1 was withdrawn, who() answered %q from %q", id, name)
		}
	}
}

// Two balancers on the same etcd see the same servants, and a setting
// written there reaches both; a bad one is refused by both.
func TestTwoBalancersShareServantsAndSettings(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	cfg := Config{Etcd: []string{srv.Endpoint}, EtcdPrefix: "/two"}
	b1, b2 := startBalancer(t, 0, cfg), startBalancer(t, 0, cfg)
	announced(t, cli, "/two", "w1", whoServant(t, "one"))
	announced(t, cli, "/two", "w2", whoServant(t, "two"))
	for _, b := range []*Balancer{b1, b2} {
		eventually(t, "w1 and w2 in both balancers", func() bool { return slices.Equal(servantNames(b), []string{"w1", "w2"}) })
	}
	put := func(key, value string) {
		if _, err := cli.Put(context.Background(), "/two/config/"+key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("algo", "orig")
	put("routing", "method")
	for _, b := range []*Balancer{b1, b2} {
		eventually(t, "algo orig and routing method in both", func() bool { return b.Algorithm() == "orig" && b.Routing() == "method" })
	}
	put("algo", "nosuch")
	put("algo", "even") // applied after the bad one, so the bad one was seen first
	for _, b := range []*Balancer{b1, b2} {
		eventually(t, "algo even in both", func() bool { return b.Algorithm() == "even" })
	}
	c := dial(t, b2)
	if id, _ := who(t, c); id != "one" && id != "two" {
		t.Errorf("who() through the second balancer: %q", id)
	}
}

// etcd unreachable at start: Start fails with a DiscoveryError naming the
// endpoints.
func TestEtcdUnreachableAtStart(t *testing.T) {
	defer func(d time.Duration) { etcdStartTimeout = d }(etcdStartTimeout)
	etcdStartTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	b, err := New(Config{Etcd: []string{dead}, NativeAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatalf("New with only -etcd: %v; want it accepted", err)
	}
	err = b.Start()
	var de *DiscoveryError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), dead) {
		t.Fatalf("Start: %v; want a DiscoveryError naming %s", err, dead)
	}
	if b.Shutdown(context.Background()) != nil {
		t.Error("Shutdown after a failed Start")
	}
}

// etcd going away later leaves the servants in place; when it is back,
// new servants are found again.
func TestEtcdDownLaterKeepsServing(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	announced(t, cli, "/down", "w1", whoServant(t, "one"))
	log, logs := testkit.Observed(zapcore.InfoLevel)
	b := started(t, Config{Etcd: []string{srv.Endpoint}, EtcdPrefix: "/down", NativeAddr: "127.0.0.1:0", Algorithm: "least"}, log)
	eventually(t, "w1 discovered", func() bool { return healthy(b)["w1"] })
	c := dial(t, b)
	srv.Stop()
	eventually(t, "etcd unreachable logged", func() bool {
		return logs.FilterMessageSnippet("etcd unreachable").FilterField(zap.Int("servants", 1)).Len() == 1
	})
	for range 5 {
		if id, _ := who(t, c); id != "one" {
			t.Fatalf("with etcd down who() answered %q", id)
		}
	}
	srv.Restart()
	announced(t, cli, "/down", "w2", whoServant(t, "two"))
	eventually(t, "w2 discovered after etcd came back", func() bool { h := healthy(b); return h["w1"] && h["w2"] })
	if n := logs.FilterMessage("etcd reachable again").Len(); n != 1 {
		t.Errorf("%d logs of etcd reachable again; want 1", n)
	}
}

// Plugins are told where etcd is.
func TestPluginEnvNamesEtcd(t *testing.T) {
	b := &Balancer{cfg: Config{Etcd: []string{"h1:2379", "h2:2379"}}}
	if got := fmt.Sprint(b.pluginEnv()); got != "[MSERVE_ETCD=h1:2379,h2:2379 MSERVE_ETCD_PREFIX=/mserve]" {
		t.Errorf("plugin environment %s", got)
	}
	if env := (&Balancer{}).pluginEnv(); env != nil {
		t.Errorf("plugin environment without etcd: %v", env)
	}
}

// TestDiscoveryTimings measures, in mserve, the time from a servant's
// death to its removal (lease revoked; lease expired without a revoke,
// TTL 2s, etcd's default minimum) and from a config write to the setting
// in force; medians of 5 runs are logged. Run with -v to see them:
//
//	go test -race -run TestDiscoveryTimings -v ./core/
func TestDiscoveryTimings(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 15s")
	}
	srv := etcdtest.Start(t)
	cli := srv.Client()
	b := startBalancer(t, 0, Config{Etcd: []string{srv.Endpoint}, EtcdPrefix: "/tm"})
	addr := whoServant(t, "x")
	const runs = 5
	// gone polls the balancer's status until name has left it.
	gone := func(name string) time.Time {
		deadline := time.Now().Add(10 * time.Second)
		for slices.Contains(servantNames(b), name) {
			if time.Now().After(deadline) {
				t.Fatalf("%s still in the balancer after 10s", name)
			}
			time.Sleep(time.Millisecond)
		}
		return time.Now()
	}
	var revoked, expired, config []time.Duration
	for i := range runs {
		for _, revoke := range []bool{true, false} {
			name := fmt.Sprintf("t%d-%v", i, revoke)
			g, err := cli.Grant(context.Background(), 2)
			if err != nil {
				t.Fatal(err)
			}
			kctx, stopKeeping := context.WithCancel(context.Background())
			ka, err := cli.KeepAlive(kctx, g.ID)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for range ka {
				}
			}()
			if _, err := cli.Put(context.Background(), "/tm/servants/"+name, `{"addr":"`+addr+`"}`, clientv3.WithLease(g.ID)); err != nil {
				t.Fatal(err)
			}
			eventually(t, name+" added", func() bool { return slices.Contains(servantNames(b), name) })
			died := time.Now()
			if revoke {
				cli.Revoke(context.Background(), g.ID)
				revoked = append(revoked, gone(name).Sub(died))
			} else {
				stopKeeping()
				expired = append(expired, gone(name).Sub(died))
			}
			stopKeeping()
		}
		algo := []string{"orig", "even"}[i%2]
		wrote := time.Now()
		if _, err := cli.Put(context.Background(), "/tm/config/algo", algo); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for b.Algorithm() != algo {
			if time.Now().After(deadline) {
				t.Fatalf("algo %s not in force after 10s", algo)
			}
			time.Sleep(100 * time.Microsecond)
		}
		config = append(config, time.Since(wrote))
	}
	median := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2].Round(100 * time.Microsecond)
	}
	t.Logf("death to removal, lease revoked: median %v of %v", median(revoked), revoked)
	t.Logf("death to removal, lease expired (TTL 2s): median %v of %v", median(expired), expired)
	t.Logf("config write to in force: median %v of %v", median(config), config)
	if m := median(revoked); m > time.Second {
		t.Errorf("a revoked servant took %v to leave; want well under a second", m)
	}
	if m := median(expired); m > 2*time.Second+1500*time.Millisecond {
		t.Errorf("an expired servant took %v to leave; want within TTL 2s + 1.5s", m)
	}
}
