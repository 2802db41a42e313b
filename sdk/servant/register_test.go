package servant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
	"github.com/mserve/mserve/sdk/wire"
)

// fakeBalancer is a registration address the test plays the balancer on.
func fakeBalancer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// acceptRegister accepts the servant's next connection and reads its
// rpc.register.
func acceptRegister(t *testing.T, ln net.Listener) (*rawConn, []byte, wire.RegisterParams) {
	t.Helper()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(failsafe))
	nc, err := ln.Accept()
	if err != nil {
		t.Fatalf("the servant did not dial the balancer: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(failsafe))
	c := &rawConn{t: t, nc: nc, r: wire.NewReader(nc, 0)}
	f, err := c.r.ReadFrame(nil)
	if err != nil {
		t.Fatalf("reading the registration: %v", err)
	}
	var req jsonrpc.Request
	if e := jsonrpc.ParseRequest(f, &req); e != nil || req.Method != wire.MethodRegister {
		t.Fatalf("first frame %s: want %s (%v)", f, wire.MethodRegister, e)
	}
	var p wire.RegisterParams
	if err := json.Unmarshal(req.Params, &p); err != nil {
		t.Fatalf("registration params %s: %v", req.Params, err)
	}
	return c, req.ID, p
}

// registerAsync runs s.Register and returns where its result goes.
func registerAsync(ctx context.Context, s *servant.Servant, addr, secret string) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Register(ctx, addr, secret) }()
	return done
}

// TestRegisterRetriesAConflictThenServes: a conflict (the name is held by a
// servant still connected) is retried; once accepted, the connection
// carries calls the servant answers, and ending ctx ends Register.
func TestRegisterRetriesAConflictThenServes(t *testing.T) {
	s := newServant(servant.Slots(2), servant.Tags("gpu"))
	s.MustHandle("echo(x any)", echo)
	t.Cleanup(func() { s.Shutdown(testCtx(t)) })
	ln := fakeBalancer(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	done := registerAsync(ctx, s, ln.Addr().String(), "sesame")

	c, id, p := acceptRegister(t, ln)
	want := wire.RegisterParams{Protocol: wire.ProtocolVersion, Secret: "sesame", Name: "test-servant", Slots: 2}
	if p.Protocol != want.Protocol || p.Secret != want.Secret || p.Name != want.Name || p.Slots != want.Slots ||
		!slices.Equal(p.Tags, []string{"gpu"}) || !slices.Equal(p.Functions, []string{"echo(x any)"}) {
		t.Errorf("registration %+v, want %+v with tags [gpu] and functions [echo(x any)]", p, want)
	}
	c.send(string(jsonrpc.AppendErrorResponse(nil, id, jsonrpc.Errorf(jsonrpc.Conflict, "conflict: busy"), nil)))

	c, id, _ = acceptRegister(t, ln)
	c.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"protocol":%d,"balancer":"fake","servant":"test-servant"}}`, id, wire.ProtocolVersion))
	c.send(req(7, "echo", "[42]"))
	if resp := c.recv(); string(resp.ID) != "7" || string(resp.Result) != "42" {
		t.Errorf("answer to a call on the registered connection: id %s result %s error %s, want id 7 result 42", resp.ID, resp.Result, resp.Error)
	}

	cancel()
	if err := recv(t, done, "Register to return after ctx ended"); err != nil {
		t.Errorf("Register returned %v after ctx ended, want nil", err)
	}
}

// TestRegisterReturnsARefusalItCannotFix: a refusal other than a conflict
// (here a wrong secret) is returned at once, as the balancer's error.
func TestRegisterReturnsARefusalItCannotFix(t *testing.T) {
	s := newServant()
	t.Cleanup(func() { s.Shutdown(testCtx(t)) })
	ln := fakeBalancer(t)
	done := registerAsync(testCtx(t), s, ln.Addr().String(), "wrong")
	c, id, _ := acceptRegister(t, ln)
	c.send(string(jsonrpc.AppendErrorResponse(nil, id, jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: bad secret"), nil)))
	err := recv(t, done, "Register to return the refusal")
	rpcErr(t, err, jsonrpc.Unauthorized, "bad secret")
	if err != nil && !strings.Contains(err.Error(), "registering at "+ln.Addr().String()) {
		t.Errorf("error %q does not say where the servant registered", err)
	}
}

// TestRegisterEndsWithShutdown: Shutdown ends a registered servant's
// Register (Main relies on it), without ctx ending.
func TestRegisterEndsWithShutdown(t *testing.T) {
	s := newServant()
	ln := fakeBalancer(t)
	done := registerAsync(context.Background(), s, ln.Addr().String(), "")
	c, id, _ := acceptRegister(t, ln)
	c.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"protocol":%d}}`, id, wire.ProtocolVersion))
	c.send(req(1, wire.MethodPing, "")) // answered once the servant serves the connection
	c.recv()
	if err := s.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := recv(t, done, "Register to return after Shutdown"); err != nil {
		t.Errorf("Register returned %v after Shutdown, want nil", err)
	}
}

func TestRegisterName(t *testing.T) {
	if got := newServant().RegisterName(); got != "test-servant" {
		t.Errorf("RegisterName() with Name set = %q, want the name", got)
	}
	t.Setenv("MSERVE_SERVANT_NAME", "from-env")
	if got := servant.New(servant.Logger(zap.NewNop())).RegisterName(); got != "from-env" {
		t.Errorf("RegisterName() with MSERVE_SERVANT_NAME set = %q, want it", got)
	}
	t.Setenv("MSERVE_SERVANT_NAME", "")
	host, _ := os.Hostname()
	if got, want := servant.New(servant.Logger(zap.NewNop())).RegisterName(), fmt.Sprintf("%s-%d", host, os.Getpid()); got != want {
		t.Errorf("RegisterName() with only the host name = %q, want %q (host name and process id)", got, want)
	}
}
