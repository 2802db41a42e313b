package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/client"
)

// testNet is a private network the test builds: a bridge in this network
// namespace and one namespace per host, each with a veth pair onto the
// bridge and an address in a /24 of its own. Everything is removed when the
// test ends.
type testNet struct {
	t      *testing.T
	tag    string // short, unique: names must fit in 15 characters
	subnet string // "10.231.N"
	bridge string
	hosts  []string // namespaces made
}

// newTestNet builds the bridge, or skips the test when this process may
// not (it needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, and iproute2).
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: needs iproute2's ip command (Debian package iproute2) to make network namespaces")
	}
	pid := os.Getpid()
	n := &testNet{t: t, tag: fmt.Sprintf("%x", pid%0xffff), subnet: fmt.Sprintf("10.231.%d", 1+pid%250)}
	n.bridge = "msbr" + n.tag
	if out, err := exec.Command("ip", "netns", "add", "ms"+n.tag+"-probe").CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot make network namespaces here (needs root or CAP_NET_ADMIN+CAP_SYS_ADMIN): ip netns add: %v: %s", err, bytes.TrimSpace(out))
	}
	exec.Command("ip", "netns", "del", "ms"+n.tag+"-probe").Run()
	t.Cleanup(n.remove)
	n.ip("link", "add", n.bridge, "type", "bridge")
	n.ip("addr", "add", n.subnet+".1/24", "dev", n.bridge)
	n.ip("link", "set", n.bridge, "up")
	return n
}

func (n *testNet) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// host makes a namespace reachable at subnet.last and returns its name and
// address.
func (n *testNet) host(name string, last int) (ns, addr string) {
	n.t.Helper()
	ns = "ms" + n.tag + "-" + name
	veth := "v" + n.tag + name
	n.ip("netns", "add", ns)
	n.hosts = append(n.hosts, ns)
	n.ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	n.ip("link", "set", veth, "master", n.bridge, "up")
	addr = fmt.Sprintf("%s.%d", n.subnet, last)
	n.ip("-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	n.ip("-n", ns, "link", "set", "eth0", "up")
	n.ip("-n", ns, "link", "set", "lo", "up")
	return ns, addr
}

func (n *testNet) remove() {
	for _, ns := range n.hosts {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	exec.Command("ip", "link", "del", n.bridge).Run()
}

// nsProc is a process running in a namespace, its output parsed as a log.
type nsProc struct {
	cmd  *exec.Cmd
	log  *logBuf
	done chan struct{}
}

// startIn runs bin with args inside namespace ns (ip netns exec setns and
// execs, so the process is bin itself). It is killed when the test ends.
func startIn(t *testing.T, ns string, env []string, bin string, args ...string) *nsProc {
	t.Helper()
	p := &nsProc{cmd: exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...), log: newLogBuf(), done: make(chan struct{})}
	p.cmd.Env = testEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s in %s:\n%s", bin, ns, p.log.String())
		}
	})
	return p
}

// TestTwoBalancersAcrossHosts puts four servants on two "hosts" (network
// namespaces with their own addresses) and two mserve instances on two
// more, each balancing over all four servants. Clients load both; one
// mserve is killed with SIGKILL under load. The clients of the other see
// no error and keep being served.
func TestTwoBalancersAcrossHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("network namespace test skipped in -short mode")
	}
	n := newTestNet(t)
	var servants []string
	for h, last := range []int{11, 12} {
		ns, addr := n.host(fmt.Sprintf("h%d", h+1), last)
		for _, port := range []int{7001, 7002} {
			a := fmt.Sprintf("%s:%d", addr, port)
			startIn(t, ns, []string{"MSERVE_SERVANT_SECRET="}, quickstartBin, "-addr", a)
			servants = append(servants, fmt.Sprintf("h%d-%d@%s", h+1, port, a))
		}
	}
	type balancer struct {
		p      *nsProc
		native string
	}
	var lbs []balancer
	for i, last := range []int{21, 22} {
		ns, addr := n.host(fmt.Sprintf("lb%d", i+1), last)
		b := balancer{native: addr + ":5001"}
		b.p = startIn(t, ns, nil, mserveBin, "-listen", b.native, "-http", "", "-admin", "",
			"-log", "debug", "-log-format", "json", "-algo", "least", "-servants", strings.Join(servants, ","))
		for _, s := range []string{"h1-7001", "h1-7002", "h2-7001", "h2-7002"} {
			b.p.log.waitCount(t, fmt.Sprintf("servant up %s at lb%d", s, i+1), 1, 20*time.Second, msgIs("servant up", "servant", s))
		}
		lbs = append(lbs, b)
	}

	// Load: 8 clients on each balancer, calling echo until told to stop.
	type counts struct{ ok, failed atomic.Int64 }
	var perLB [2]counts
	seen := [2]sync.Map{} // servants that answered, per balancer
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, b := range lbs {
		for range 8 {
			c, err := client.Dial(context.Background(), b.native)
			if err != nil {
				t.Fatalf("client to lb%d: %v", i+1, err)
			}
			defer c.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					r, err := c.Call(ctx, "echo", []any{"x"})
					cancel()
					if err != nil {
						perLB[i].failed.Add(1)
						if i == 0 {
							return // its balancer is gone
						}
						continue
					}
					perLB[i].ok.Add(1)
					seen[i].Store(r.Info().Servant, true)
				}
			}()
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("after 20s: %s", what)
			}
			time.Sleep(5 * time.Millisecond) // poll interval for counters the clients move
		}
	}
	waitFor("both balancers serving 200 calls", func() bool { return perLB[0].ok.Load() >= 200 && perLB[1].ok.Load() >= 200 })

	if err := lbs[0].p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-lbs[0].p.done
	atKill := perLB[1].ok.Load()
	waitFor("lb2 serving 500 more calls after lb1 died", func() bool { return perLB[1].ok.Load() >= atKill+500 })
	close(stop)
	wg.Wait()

	if f := perLB[1].failed.Load(); f != 0 {
		t.Errorf("lb2's clients saw %d failed calls; want none", f)
	}
	if f := perLB[0].failed.Load(); f == 0 {
		t.Error("lb1's clients saw no failure after lb1 was killed: the test did not kill what it meant to")
	}
	var names []string
	seen[1].Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	if len(names) != 4 {
		t.Errorf("lb2's calls ran on %v; want all four servants on both hosts", names)
	}
	t.Logf("lb1: %d ok before it was killed; lb2: %d ok (%d after the kill), %d failed",
		perLB[0].ok.Load(), perLB[1].ok.Load(), perLB[1].ok.Load()-atKill, perLB[1].failed.Load())
}
