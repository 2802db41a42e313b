package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/client"
)

// startRegistering runs a quickstart servant that registers with the
// mserve at balancer (MSERVE_BALANCER) under name, with secret. It returns
// the process and a function reporting its output so far; the process is
// killed when the test ends.
func startRegistering(t *testing.T, balancer, secret, name string) (*exec.Cmd, <-chan struct{}, func() string) {
	t.Helper()
	cmd := exec.Command(quickstartBin)
	cmd.Env = testEnv("MSERVE_BALANCER="+balancer, "MSERVE_REGISTER_SECRET="+secret, "MSERVE_SERVANT_NAME="+name)
	var out bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return cmd, done, func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
}

// TestRegisteredServantsEndToEnd: servant processes register themselves
// with an mserve that starts with none; one killed leaves at once and the
// others keep serving; a servant with the wrong secret is refused and
// exits saying why.
func TestRegisteredServantsEndToEnd(t *testing.T) {
	reg := freeAddr(t)
	const secret = "e2e-register-secret"
	m := startMserve(t, mserveOpts{flags: []string{"-register", reg, "-register-secret", secret, "-algo", "least"}})
	q1, _, _ := startRegistering(t, reg, secret, "q1")
	startRegistering(t, reg, secret, "q2")
	m.waitServing("q1", "q2")
	m.log.waitCount(t, "servant registered q1", 1, 10*time.Second, msgIs("servant registered", "servant", "q1"))

	killed := time.Now()
	if err := q1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m.log.waitCount(t, "q1 removed", 1, 10*time.Second, msgIs("servant removed", "servant", "q1"))
	t.Logf("from SIGKILL of a registered servant to its removal: %v", time.Since(killed).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, m.native)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		r, err := c.Call(ctx, "echo", []any{i})
		if err != nil {
			t.Fatalf("call %d after q1 left: %v", i, err)
		}
		if s := r.Info().Servant; s != "q2" {
			t.Fatalf("call %d ran on %q after q1 left", i, s)
		}
	}

	_, done, output := startRegistering(t, reg, "wrong", "q3")
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a servant with the wrong secret is still running after 20s")
	}
	if out := output(); !strings.Contains(out, "unauthorized") || !strings.Contains(out, "wrong registration secret") {
		t.Errorf("the refused servant said %q; want it to name the wrong secret", out)
	}
	m.log.waitCount(t, "registration refused", 1, 10*time.Second, msgIs("registration refused", "name", "q3"))
}
