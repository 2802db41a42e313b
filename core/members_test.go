package core

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mserve/mserve/core/register"
	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
	"github.com/mserve/mserve/sdk/wire"
)

const testRegisterSecret = "let-me-in"

// startRegistering runs a Balancer that takes registrations, with
// static servants as given.
func startRegistering(t *testing.T, static int) *Balancer {
	t.Helper()
	return startBalancer(t, static, Config{RegisterAddr: "127.0.0.1:0", RegisterSecret: testRegisterSecret})
}

// registered is an SDK servant registered with a balancer.
type registered struct {
	stop    context.CancelFunc
	done    chan error // Register's result
	release chan struct{}
}

// registerServant starts an in-process servant that registers at addr under
// name. Its functions: who() answers its tag "id=..." value; hold(x) waits
// until released (or the call is cancelled), declared idempotent when
// idem is set.
func registerServant(t *testing.T, addr, secret, name, id string, idem bool, opts ...servant.Option) *registered {
	t.Helper()
	r := &registered{done: make(chan error, 1), release: make(chan struct{})}
	s := servant.New(append([]servant.Option{servant.Name(name), servant.Secret("")}, opts...)...)
	s.MustHandle("who()", func(context.Context, *servant.Call) (any, error) { return id, nil })
	hold := "hold(x any)"
	if idem {
		hold += " idempotent"
	}
	s.MustHandle(hold, func(ctx context.Context, c *servant.Call) (any, error) {
		select {
		case <-r.release:
			return id, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go func() { r.done <- s.Register(ctx, addr, secret) }()
	t.Cleanup(func() {
		stop()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(sctx)
	})
	return r
}

// eventually polls cond until it holds, failing the test after 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// healthy returns the names of the healthy servants.
func healthy(b *Balancer) map[string]bool {
	out := map[string]bool{}
	for _, s := range b.Status().Servants {
		if s.Healthy {
			out[s.Name] = true
		}
	}
	return out
}

func who(t *testing.T, c *client.Client) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Call(ctx, "who", []any{})
	if err != nil {
		t.Fatal(err)
	}
	var id string
	if err := json.Unmarshal(r.Result, &id); err != nil {
		t.Fatal(err)
	}
	return id, r.Info().Servant
}

func TestRegisteredServantsJoinServeAndLeave(t *testing.T) {
	b := startRegistering(t, 0)
	w1 := registerServant(t, b.RegisterAddr(), testRegisterSecret, "w1", "one", false)
	registerServant(t, b.RegisterAddr(), testRegisterSecret, "w2", "two", false, servant.Slots(3), servant.Tags("gpu"))
	eventually(t, "w1 and w2 registered and healthy", func() bool { h := healthy(b); return h["w1"] && h["w2"] })

	for _, s := range b.Status().Servants {
		if s.Name == "w2" && (s.Slots != 3 || len(s.Tags) != 1 || s.Tags[0] != "gpu") {
			t.Errorf("w2 as registered: slots %d, tags %v; want 3 and [gpu]", s.Slots, s.Tags)
		}
	}
	c := dial(t, b)
	if id, name := who(t, c); !(id == "one" && name == "w1" || id == "two" && name == "w2") {
		t.Errorf("who() answered %q from servant %q", id, name)
	}

	w1.stop() // the servant hangs up: it leaves
	eventually(t, "w1 removed", func() bool { return len(b.Status().Servants) == 1 })
	if err := <-w1.done; err != nil {
		t.Errorf("Register returned %v after its context ended; want nil", err)
	}
	for range 5 {
		if id, name := who(t, c); id != "two" || name != "w2" {
			t.Fatalf("after w1 left, who() answered %q from %q", id, name)
		}
	}
}

func TestRegistrationRefused(t *testing.T) {
	b := startRegistering(t, 1) // one static servant, named r1
	tests := []struct {
		name, secret, as string
		want             []string
	}{
		{"wrong secret", "guess", "w1", []string{"unauthorized", "wrong registration secret"}},
		{"no secret", "", "w1", []string{"unauthorized"}},
		{"the name of a servant configured at launch", testRegisterSecret, "r1", []string{`"r1"`, "configured at launch"}},
		{"a name with a blank", testRegisterSecret, "w 1", []string{"blank or control character"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := registerServant(t, b.RegisterAddr(), tc.secret, tc.as, "x", false)
			var err error
			select {
			case err = <-r.done:
			case <-time.After(10 * time.Second):
				t.Fatal("Register still trying after 10s; want a refusal")
			}
			if err == nil {
				t.Fatal("Register returned nil; want the refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if n := len(b.Status().Servants); n != 1 {
		t.Errorf("%d servants after refusals, want the 1 static one", n)
	}
}

func TestRegistrationUnderAHeldNameWaitsForTheNameToFree(t *testing.T) {
	b := startRegistering(t, 0)
	first := registerServant(t, b.RegisterAddr(), testRegisterSecret, "w", "first", false)
	eventually(t, "the first w registered", func() bool { return healthy(b)["w"] })
	second := registerServant(t, b.RegisterAddr(), testRegisterSecret, "w", "second", false)
	c := dial(t, b)
	if id, _ := who(t, c); id != "first" {
		t.Fatalf("who() = %q while the first w is connected", id)
	}
	select {
	case err := <-second.done:
		t.Fatalf("the second w gave up: %v; want it to keep trying", err)
	default:
	}
	first.stop()
	// Between the first leaving and the second joining no servant
	// declares who(), so calls may be refused meanwhile.
	eventually(t, "the second w took the name", func() bool {
		r, err := c.Call(context.Background(), "who", []any{})
		return err == nil && string(r.Result) == `"second"`
	})
}

func TestRegisteredServantLeavingUnderCalls(t *testing.T) {
	tests := []struct {
		name     string
		idem     bool
		wantCode int    // 0: a result
		wantID   string // the servant that answers
	}{
		{"a non-idempotent call is answered servant lost", false, jsonrpc.ServantLost, ""},
		{"an idempotent call moves to the other servant", true, 0, "two"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startRegistering(t, 0)
			w1 := registerServant(t, b.RegisterAddr(), testRegisterSecret, "w1", "one", tc.idem)
			eventually(t, "w1 registered", func() bool { return healthy(b)["w1"] })
			c := dial(t, b)
			got := make(chan *client.Response, 1)
			fail := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				r, err := c.Call(ctx, "hold", []any{1})
				if err != nil {
					fail <- err
					return
				}
				got <- r
			}()
			eventually(t, "the call running on w1", func() bool { return b.Status().Running == 1 })
			w2 := registerServant(t, b.RegisterAddr(), testRegisterSecret, "w2", "two", tc.idem)
			eventually(t, "w2 registered", func() bool { return healthy(b)["w2"] })
			close(w2.release)
			w1.stop()
			select {
			case r := <-got:
				var id string
				json.Unmarshal(r.Result, &id)
				if tc.wantCode != 0 || id != tc.wantID {
					t.Errorf("answered %q; want code %d / %q", id, tc.wantCode, tc.wantID)
				}
			case err := <-fail:
				var e *jsonrpc.Error
				if !errors.As(err, &e) || e.Code != tc.wantCode {
					t.Errorf("error %v; want code %d", err, tc.wantCode)
				} else if !strings.Contains(e.Message, "w1") {
					t.Errorf("error %q does not name w1", e.Message)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no answer")
			}
			eventually(t, "w1 removed", func() bool { return !healthy(b)["w1"] && len(b.Status().Servants) == 1 })
		})
	}
}

// TestNestedBalancers: an mserve is a servant of another; the outer one
// learns the inner one's functions and slots from its hello and nests the
// inner info record in its own.
func TestNestedBalancers(t *testing.T) {
	inner := startBalancer(t, 2, Config{})
	waitServing(t, dial(t, inner))
	outer := startBalancer(t, 0, Config{Servants: []ServantSpec{{Name: "inner", Addr: inner.NativeAddr()}}})
	eventually(t, "the inner mserve up in the outer one", func() bool { return healthy(outer)["inner"] })
	st := outer.Status().Servants[0]
	if st.Slots != 2 {
		t.Errorf("inner's slots as the outer sees them: %d, want 2 (its two servants')", st.Slots)
	}
	c := dial(t, outer)
	r, err := c.Call(context.Background(), "echo", []any{"nested"})
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Result) != `"nested"` {
		t.Errorf("result %s", r.Result)
	}
	var info struct {
		Servant string `json:"servant"`
		Inner   struct {
			Servant   string `json:"servant"`
			Route     string `json:"route"`
			ElapsedNs int64  `json:"elapsed_ns"`
		} `json:"inner"`
	}
	if err := json.Unmarshal(r.InfoRaw, &info); err != nil {
		t.Fatal(err)
	}
	if info.Servant != "inner" || (info.Inner.Servant != "r1" && info.Inner.Servant != "r2") || info.Inner.Route != "nested" || info.Inner.ElapsedNs <= 0 {
		t.Errorf("info %s: want servant inner with the inner record (servant r1 or r2, route nested) nested", r.InfoRaw)
	}
	// The outer gate knows the inner one's functions: an unknown one is
	// refused at the outer mserve.
	_, err = c.Call(context.Background(), "nosuch", []any{})
	var e *jsonrpc.Error
	if !errors.As(err, &e) || e.Code != jsonrpc.MethodNotFound {
		t.Errorf("call to an undeclared function: %v; want method not found", err)
	}
}

func TestSetAlgorithmAndRoutingLive(t *testing.T) {
	b := startBalancer(t, 2, Config{})
	c := dial(t, b)
	waitServing(t, c)
	tests := []struct {
		name      string
		set       func() error
		wantErr   string
		wantAlgo  string
		wantRoute string // the route of echo("x") afterwards
	}{
		{"an unknown algorithm changes nothing", func() error { return b.SetAlgorithm("nosuch") }, "nosuch", "least", "x"},
		{"a built-in algorithm", func() error { return b.SetAlgorithm("orig") }, "", "orig", "x"},
		{"a routing function by name", func() error { return b.SetRouting("method") }, "", "orig", "echo"},
		{"an expression that does not compile changes nothing", func() error { return b.SetRouting("args[") }, "neither a routing function", "orig", "echo"},
		{"an expression", func() error { return b.SetRouting(`"k-" + string(args[0])`) }, "", "orig", "k-x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.set()
			if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if got := b.Status().Algorithm; got != tc.wantAlgo {
				t.Errorf("algorithm %q, want %q", got, tc.wantAlgo)
			}
			r, err := c.Call(context.Background(), "echo", []any{"x"})
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Info().Route; got != tc.wantRoute {
				t.Errorf("route %q, want %q", got, tc.wantRoute)
			}
		})
	}
}

// TestJoinHoldsTheNameUntilTheServantIsTold: between admitting a
// registration and telling the servant it joined, the name is taken: a
// second registration under it is refused as a conflict, and when telling
// the first failed the name is free again and no servant was added.
func TestJoinHoldsTheNameUntilTheServantIsTold(t *testing.T) {
	b := startRegistering(t, 0)
	reg := func() *register.Registration {
		c1, c2 := net.Pipe()
		t.Cleanup(func() { c1.Close(); c2.Close() })
		return &register.Registration{Name: "w1", Params: &wire.RegisterParams{Name: "w1", Slots: 1}, Conn: c1, Reader: wire.NewReader(c1, 0)}
	}
	start, err := b.join(reg())
	if err != nil {
		t.Fatal(err)
	}
	var je *jsonrpc.Error
	if _, err := b.join(reg()); !errors.As(err, &je) || je.Code != jsonrpc.Conflict {
		t.Fatalf("a second registration while the first is being told: %v, want a conflict", err)
	}
	if err := b.AddServant(ServantSpec{Name: "w1", Addr: "127.0.0.1:1"}); err == nil {
		t.Fatal("AddServant took a name a registration holds")
	}
	start(false) // telling the servant failed
	if n := len(b.Status().Servants); n != 0 {
		t.Errorf("%d servants after a registration that was never told, want 0", n)
	}
	start2, err := b.join(reg())
	if err != nil {
		t.Fatalf("the name was not freed: %v", err)
	}
	start2(false)
}
