package main

// End-to-end tests of etcd discovery: the real mserve binary with -etcd,
// and mserve announce as a sidecar, against an etcd server embedded in
// this test process.

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/announce/etcdtest"
	"github.com/mserve/mserve/sdk/servant"
)

// serveAt runs an in-process SDK servant with echo on addr until the
// returned function (or the test's end) stops it.
func serveAt(t *testing.T, addr string) (stop func()) {
	t.Helper()
	s := servant.New(servant.Secret(""))
	s.MustHandle("echo(x any)", func(_ context.Context, c *servant.Call) (any, error) {
		var x any
		return x, c.Bind(&x)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}
	t.Cleanup(stop)
	return stop
}

// announcer is a running mserve announce.
type announcer struct {
	cmd  *exec.Cmd
	log  *logBuf
	done chan struct{}
	err  error
}

func startAnnouncer(t *testing.T, args ...string) *announcer {
	t.Helper()
	a := &announcer{log: newLogBuf(), done: make(chan struct{})}
	a.cmd = exec.Command(mserveBin, append([]string{"announce", "-log-format", "json", "-log", "debug"}, args...)...)
	a.cmd.Env = testEnv()
	a.cmd.Stderr = a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			t.Logf("mserve announce %s\n%s", strings.Join(args, " "), a.log.String())
		}
	})
	return a
}

// The sidecar lists a servant while it answers: mserve -etcd, started with
// no servant, serves it; when the servant stops answering the key is
// revoked and mserve removes it; when it answers again it is back; on
// SIGTERM the sidecar deletes the key and exits 0.
func TestE2EEtcdAnnounceSidecar(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	addr := freeAddr(t)
	stopServant := serveAt(t, addr)
	p := startMserve(t, mserveOpts{flags: []string{"-etcd", srv.Endpoint, "-etcd-prefix", "/e2e", "-algo", "least"}})
	a := startAnnouncer(t, "-etcd", srv.Endpoint, "-prefix", "/e2e", "-name", "py1", "-addr", addr,
		"-interval", "100ms", "-timeout", "500ms", "-ttl", "1s")
	p.waitServing("py1")
	key := "/e2e/servants/py1"
	if r, err := cli.Get(context.Background(), key); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != `{"addr":"`+addr+`"}` {
		t.Fatalf("%s: %v (%v)", key, r, err)
	}

	stopServant()
	a.log.waitCount(t, "withdrawn", 1, 10*time.Second, msgIs("servant stopped answering; withdrawing it"))
	p.log.waitCount(t, "py1 removed", 1, 10*time.Second, msgIs("servant removed", "servant", "py1"))
	if r, err := cli.Get(context.Background(), key); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("%s after the servant stopped: %v (%v)", key, r.Kvs, err)
	}

	serveAt(t, addr) // back on the same address
	p.log.waitCount(t, "py1 added again", 2, 10*time.Second, msgIs("servant added", "servant", "py1"))
	p.waitServing("py1")

	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatal("mserve announce did not exit within 10s of SIGTERM")
	}
	if a.err != nil {
		t.Errorf("mserve announce exited with %v; want 0", a.err)
	}
	p.log.waitCount(t, "py1 removed again", 2, 10*time.Second, msgIs("servant removed", "servant", "py1"))
	if r, err := cli.Get(context.Background(), key); err != nil || len(r.Kvs) != 0 {
		t.Errorf("%s after SIGTERM: %v (%v)", key, r.Kvs, err)
	}
}

// etcd unreachable at start: mserve and mserve announce exit 2 naming the
// endpoints.
func TestE2EEtcdUnreachableExits2(t *testing.T) {
	dead := freeAddr(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"mserve", []string{"-etcd", dead, "-http", freeAddr(t), "-listen", freeAddr(t), "-admin", ""}},
		{"announce", []string{"announce", "-etcd", dead, "-name", "a", "-addr", "127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			_, stderr, code := runCmd(t, nil, mserveBin, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, "etcd at "+dead) {
				t.Errorf("exit %d, stderr %q; want exit 2 naming etcd at %s", code, stderr, dead)
			}
			t.Logf("gave up after %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// Bad announce command lines are refused with exit 2.
func TestE2EAnnounceUsage(t *testing.T) {
	for _, args := range [][]string{
		{"announce", "-name", "a", "-addr", "h:1"},
		{"announce", "-etcd", "h:2379", "-addr", "h:1"},
		{"announce", "-etcd", "h:2379", "-name", "a/b", "-addr", "h:1"},
		{"announce", "-etcd", "h:2379", "-name", "a"},
	} {
		_, stderr, code := runCmd(t, nil, mserveBin, args...)
		if code != exitUsage || !strings.HasPrefix(stderr, "mserve announce:") {
			t.Errorf("%v: exit %d, %q; want exit 2 with a message", args, code, stderr)
		}
	}
}
