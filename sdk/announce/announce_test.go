package announce_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/announce"
	"github.com/mserve/mserve/sdk/announce/etcdtest"
)

// events collects Run's events.
type events chan announce.Event

func (e events) next(t *testing.T) announce.Event {
	t.Helper()
	select {
	case ev := <-e:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event from Run within 10s")
		return announce.Event{}
	}
}

// get returns the key's value and lease, or "" when it is absent.
func get(t *testing.T, cli *clientv3.Client, key string) (string, clientv3.LeaseID) {
	t.Helper()
	r, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) == 0 {
		return "", 0
	}
	return string(r.Kvs[0].Value), clientv3.LeaseID(r.Kvs[0].Lease)
}

// Run writes the key under a lease, re-creates it when the lease is lost,
// and deletes it when its context ends.
func TestRunAnnouncesRecoversAndWithdraws(t *testing.T) {
	srv := etcdtest.Start(t)
	cli, other := srv.Client(), srv.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := make(events, 16)
	done := make(chan error, 1)
	s := announce.Servant{Addr: "10.0.0.5:7001", Slots: 4, Tags: []string{"gpu"}}
	go func() {
		done <- announce.Run(ctx, cli, "/p/", "gpu1", s, time.Second, announce.OnEvent(func(e announce.Event) { ev <- e }))
	}()
	first := ev.next(t)
	if !first.Announced {
		t.Fatalf("first event %+v; want announced", first)
	}
	key := "/p/servants/gpu1"
	value, lease := get(t, cli, key)
	if value != `{"addr":"10.0.0.5:7001","slots":4,"tags":["gpu"]}` || lease != first.Lease {
		t.Fatalf("%s = %s under lease %x; want the servant's JSON under %x", key, value, lease, first.Lease)
	}
	ttl, err := other.TimeToLive(context.Background(), lease)
	if err != nil || ttl.GrantedTTL != 1 {
		t.Fatalf("lease TTL %+v (%v); want 1s", ttl, err)
	}

	// Someone revokes the lease: the key goes, and Run puts it back under
	// a new one.
	if _, err := other.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	if lost := ev.next(t); lost.Announced || lost.Err == nil || !strings.Contains(lost.Err.Error(), "lost") {
		t.Fatalf("after the revoke: %+v; want the lease lost", lost)
	}
	again := ev.next(t)
	if !again.Announced || again.Lease == lease {
		t.Fatalf("after the loss: %+v; want announced under a new lease", again)
	}
	if v, l := get(t, cli, key); v != value || l != again.Lease {
		t.Fatalf("re-announced as %s under %x", v, l)
	}

	// The context ends: the key is gone when Run returns.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context ending")
	}
	if v, _ := get(t, other, key); v != "" {
		t.Errorf("%s = %s after Run returned; want it deleted", key, v)
	}
}

// Arguments that cannot make a key are refused at once.
func TestRunRefusesBadArguments(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	for _, tc := range []struct {
		name, servant string
		s             announce.Servant
		want          string
	}{
		{"empty name", "", announce.Servant{Addr: "h:1"}, "empty servant name"},
		{"a slash", "a/b", announce.Servant{Addr: "h:1"}, "'/'"},
		{"a blank", "a b", announce.Servant{Addr: "h:1"}, "blank"},
		{"no address", "a", announce.Servant{}, "no address"},
		{"negative slots", "a", announce.Servant{Addr: "h:1", Slots: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := announce.Run(ctx, cli, "/p", tc.servant, tc.s, time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v; want an error saying %q", err, tc.want)
			}
		})
	}
	if r, err := cli.Get(context.Background(), "/p", clientv3.WithPrefix()); err != nil || len(r.Kvs) != 0 {
		t.Errorf("keys written: %v (%v)", r.Kvs, err)
	}
}

// The value is the documented JSON: slots and tags left out when unset.
func TestServantJSON(t *testing.T) {
	b, _ := json.Marshal(announce.Servant{Addr: "h:1"})
	if string(b) != `{"addr":"h:1"}` {
		t.Errorf("minimal servant: %s", b)
	}
	if k := announce.Key("/mserve/", "s1"); k != "/mserve/servants/s1" {
		t.Errorf("Key = %s", k)
	}
}

// ClientConfig fills what mserve's etcd clients share; a nil logger
// discards the client's logs rather than leaving etcd to make its own.
func TestClientConfig(t *testing.T) {
	eps := []string{"10.0.0.2:2379", "10.0.0.3:2379"}
	for _, log := range []*zap.Logger{nil, zap.NewExample()} {
		c := announce.ClientConfig(eps, log)
		if !slices.Equal(c.Endpoints, eps) || c.DialTimeout != 5*time.Second ||
			c.DialKeepAliveTime != 10*time.Second || c.DialKeepAliveTimeout != 3*time.Second {
			t.Errorf("ClientConfig(%v) = endpoints %v, dial timeout %v, keep-alive %v/%v", eps, c.Endpoints, c.DialTimeout,
				c.DialKeepAliveTime, c.DialKeepAliveTimeout)
		}
		if len(c.DialOptions) != 1 {
			t.Errorf("%d dial options; want the redial backoff", len(c.DialOptions))
		}
		if c.Logger == nil {
			t.Error("no logger: the etcd client would make its own and log at info")
		} else if c.Logger.Core().Enabled(zap.WarnLevel) {
			t.Error("the client's logger passes warnings; want errors only")
		}
	}
}
