package register

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/fuzzseed"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

const secret = "s3cret"

// serve runs a Server with join on a loopback port and returns its
// address.
func serve(t *testing.T, join Joiner) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		New(Config{Secret: secret, Join: join, HelloWait: 2 * time.Second}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// exchange sends frame (nil: nothing) and returns the one response frame.
func exchange(t *testing.T, addr string, frame []byte) (*jsonrpc.Response, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if frame != nil {
		if _, err := c.Write(wire.AppendFrame(nil, frame)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := wire.NewReader(c, 1<<20).ReadFrame(nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	var resp jsonrpc.Response
	if err := jsonrpc.ParseResponse(got, &resp); err != nil {
		t.Fatal(err)
	}
	return &resp, c
}

func request(method string, params any) []byte {
	p, _ := json.Marshal(params)
	return jsonrpc.AppendRequest(nil, []byte("1"), method, p)
}

func good(name string) wire.RegisterParams {
	return wire.RegisterParams{Protocol: wire.ProtocolVersion, Secret: secret, Name: name, Slots: 2, Tags: []string{"gpu"}, Functions: []string{"f(x int)"}}
}

func TestRegistration(t *testing.T) {
	badProtocol := good("w")
	badProtocol.Protocol = 99
	noSecret := good("w")
	noSecret.Secret = ""
	negative := good("w")
	negative.Slots = -1
	tests := []struct {
		name     string
		frame    []byte
		joinErr  error
		wantCode int      // 0: accepted
		want     []string // in the error message
	}{
		{"accepted", request(wire.MethodRegister, good("w1")), nil, 0, nil},
		{"wrong secret", request(wire.MethodRegister, func() wire.RegisterParams { p := good("w"); p.Secret = "guess"; return p }()), nil,
			jsonrpc.Unauthorized, []string{"wrong registration secret"}},
		{"no secret", request(wire.MethodRegister, noSecret), nil, jsonrpc.Unauthorized, nil},
		{"another method first", request("rpc.hello", good("w")), nil, jsonrpc.InvalidRequest, []string{"registration address", "rpc.register", "rpc.hello"}},
		{"a notification", jsonrpc.AppendRequest(nil, nil, wire.MethodRegister, []byte(`{}`)), nil, jsonrpc.InvalidRequest, []string{"with an id"}},
		{"params not an object", request(wire.MethodRegister, []int{1}), nil, jsonrpc.InvalidParams, []string{"takes an object"}},
		{"another protocol", request(wire.MethodRegister, badProtocol), nil, jsonrpc.InvalidParams, []string{"protocol 99", "speaks 1"}},
		{"negative slots", request(wire.MethodRegister, negative), nil, jsonrpc.InvalidParams, []string{"slots -1"}},
		{"a name too long", request(wire.MethodRegister, good(strings.Repeat("x", 256))), nil, jsonrpc.InvalidParams, []string{"256 bytes", "at most 255"}},
		{"a name with a newline", request(wire.MethodRegister, good("a\nb")), nil, jsonrpc.InvalidParams, []string{"control character"}},
		{"not JSON", []byte(`{"jsonrpc":`), nil, jsonrpc.ParseError, nil},
		{"the balancer refuses", request(wire.MethodRegister, good("w")), errors.New("the name is taken"), jsonrpc.InvalidParams, []string{"the name is taken"}},
		{"the balancer refuses with its own code", request(wire.MethodRegister, good("w")), jsonrpc.Errorf(jsonrpc.Conflict, "conflict: busy"), jsonrpc.Conflict, []string{"busy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			joined := make(chan *Registration, 1)
			started := make(chan struct{})
			addr := serve(t, func(r *Registration) (func(bool), error) {
				if tc.joinErr != nil {
					return nil, tc.joinErr
				}
				joined <- r
				return func(told bool) {
					if told {
						close(started)
					}
				}, nil
			})
			resp, conn := exchange(t, addr, tc.frame)
			if tc.wantCode == 0 {
				if resp.Error != nil {
					t.Fatalf("refused: %s", resp.Error)
				}
				var res wire.RegisterResult
				json.Unmarshal(resp.Result, &res)
				if res.Servant != "w1" || res.Protocol != wire.ProtocolVersion {
					t.Errorf("result %s", resp.Result)
				}
				r := <-joined
				<-started
				if r.Params.Secret != "" {
					t.Error("the joiner was handed the secret")
				}
				if r.Params.Slots != 2 || r.Params.Tags[0] != "gpu" || r.Params.Functions[0] != "f(x int)" {
					t.Errorf("params %+v", r.Params)
				}
				// The connection now belongs to the joiner: still open.
				r.Conn.Write(wire.AppendFrame(nil, []byte(`{"jsonrpc":"2.0","id":5,"method":"f","params":[1]}`)))
				if f, err := wire.NewReader(conn, 1<<20).ReadFrame(nil); err != nil || !strings.Contains(string(f), `"method":"f"`) {
					t.Errorf("after joining, the connection carried %q, %v", f, err)
				}
				return
			}
			if resp.Error == nil {
				t.Fatalf("accepted: %s", resp.Result)
			}
			e, err := jsonrpc.DecodeError(resp.Error)
			if err != nil {
				t.Fatal(err)
			}
			if e.Code != tc.wantCode {
				t.Errorf("code %d (%s), want %d", e.Code, e.Message, tc.wantCode)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q does not say %q", e.Message, w)
				}
			}
			// A refused connection is closed.
			if _, err := wire.NewReader(conn, 1<<20).ReadFrame(nil); err == nil {
				t.Error("the connection stayed open after a refusal")
			}
		})
	}
}

func TestSilentConnectionIsDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go New(Config{Secret: secret, HelloWait: 50 * time.Millisecond, Join: func(*Registration) (func(bool), error) {
		return nil, errors.New("unreachable")
	}}).Serve(ctx, ln)
	resp, _ := exchange(t, ln.Addr().String(), nil)
	e, _ := jsonrpc.DecodeError(resp.Error)
	if e == nil || e.Code != jsonrpc.InvalidRequest || !strings.Contains(e.Message, "no registration within 50ms") {
		t.Errorf("answer %+v", e)
	}
}

// FuzzDecodeParams: any bytes give params or a precise invalid-params
// error, never a panic, and accepted params obey the rules.
func FuzzDecodeParams(f *testing.F) {
	fuzzseed.Add(f, "FuzzDecodeParams", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, e := decodeParams(raw)
		if e != nil {
			if p != nil || e.Code != jsonrpc.InvalidParams || !strings.Contains(e.Message, wire.MethodRegister) {
				t.Fatalf("error %+v with params %+v", e, p)
			}
			return
		}
		if p.Protocol != wire.ProtocolVersion || p.Slots < 0 || len(p.Name) > 255 || strings.ContainsAny(p.Name, " \t\r\n\x00") {
			t.Fatalf("accepted %+v", p)
		}
	})
}

// TestUndeliveredAnswerUndoesTheJoin: when the servant hangs up before it
// can be told it joined, the admission is undone (start(false)), once, and
// the connection is not served.
func TestUndeliveredAnswerUndoesTheJoin(t *testing.T) {
	told := make(chan bool, 2)
	s := New(Config{Secret: secret, Join: func(*Registration) (func(bool), error) {
		return func(ok bool) { told <- ok }, nil
	}})
	srv, cli := net.Pipe()
	go func() {
		cli.Write(wire.AppendFrame(nil, request(wire.MethodRegister, good("w1"))))
		cli.Close() // hangs up without reading the answer
	}()
	s.handle(srv) // returns once the registration is over
	if n := len(told); n != 1 {
		t.Fatalf("start called %d times, want once", n)
	}
	if <-told {
		t.Error("start(true) for a servant that was never told it joined")
	}
}
