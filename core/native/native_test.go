package native

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/frontend"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

const failsafe = 10 * time.Second

// quiet is how long a test watches for something that must not happen.
const quiet = 100 * time.Millisecond

// servant is a fake transport: it answers every call with its params as
// the result, unless hold is set, in which case calls go to Sent for the
// test to answer.
type servant struct {
	testkit.Transport // holds the calls; records cancellations
	s                 *engine.Servant
	hold              bool
}

func (f *servant) Send(c *engine.Call, fl *wire.Flusher) error {
	if f.hold {
		return f.Transport.Send(c, fl)
	}
	go f.s.Done(c, &jsonrpc.Response{Result: append([]byte(nil), c.Params...)}, nil)
	return nil
}

func (f *servant) answer(c *engine.Call, result string) {
	f.s.Done(c, &jsonrpc.Response{Result: []byte(result)}, nil)
}

type options struct {
	cfg   Config
	hold  bool // the servant holds calls for the test
	down  bool // the servant is not up: calls wait in the queue
	slots int
	gate  bool
}

type rig struct {
	eng  *engine.Engine
	sv   *servant
	srv  *Server
	addr string
}

func newRig(t *testing.T, o options) *rig {
	t.Helper()
	r := &rig{sv: &servant{hold: o.hold, Transport: testkit.Transport{Sent: make(chan *engine.Call, 256), Cancelled: make(chan *engine.Call, 256)}}}
	r.eng = engine.New(engine.Config{Algorithm: testkit.FirstFree})
	r.sv.s = r.eng.AddServant(engine.ServantSpec{Name: "s1"}, r.sv)
	if !o.down {
		r.sv.s.Up(engine.Announce{Slots: max(o.slots, 16)})
	}
	fr := &frontend.Front{Engine: r.eng, Version: "test"}
	if o.gate {
		fr.Gate = gate(t)
	}
	r.srv = New(o.cfg, fr)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- r.srv.Serve(ln) }()
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { r.srv.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(failsafe):
			t.Error("Server.Close did not return")
		}
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return r
}

const aliceSecret = "alice-secret"

func gate(t *testing.T) *allow.Gate {
	t.Helper()
	return testkit.Gate(t, "f(x any)\ng(x any)\nuser alice "+allow.HashSecret(aliceSecret)+": f g\nanonymous: f\n")
}

// client is a raw native-protocol client.
type client struct {
	c net.Conn
	r *wire.Reader
}

func (r *rig) dial(t *testing.T) *client {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: wire.NewReader(c, 0)}
}

func (c *client) send(t *testing.T, body string) {
	t.Helper()
	if _, err := c.c.Write(wire.AppendFrame(nil, []byte(body))); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// recv reads one frame and decodes it (an object or, for a batch, an
// array).
func (c *client) recv(t *testing.T) any {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(failsafe))
	b, err := c.r.ReadFrame(nil)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("frame %q is not JSON: %v", b, err)
	}
	return v
}

func (c *client) recvObj(t *testing.T) map[string]any {
	t.Helper()
	v := c.recv(t)
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("frame %v is not an object", v)
	}
	return m
}

// eof expects the server to close the connection within wait, after
// whatever frames are still to come have been read and returned.
func (c *client) eof(t *testing.T, wait time.Duration) {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(wait))
	for {
		b, err := c.r.ReadFrame(nil)
		switch {
		case err == nil:
			t.Errorf("unexpected frame before the close: %s", b)
			continue
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), isReset(err):
			return
		default:
			t.Fatalf("the connection was not closed within %v: %v", wait, err)
		}
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

// silent expects no frame for a while.
func (c *client) silent(t *testing.T) {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(quiet))
	b, err := c.r.ReadFrame(nil)
	if err == nil {
		t.Fatalf("unexpected frame %s", b)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connection failed: %v", err)
	}
	c.c.SetReadDeadline(time.Time{})
}

func message(m map[string]any) string {
	if e, ok := m["error"].(map[string]any); ok {
		return e["message"].(string)
	}
	return ""
}

func call(id, method, params string) string {
	s := `{"jsonrpc":"2.0","method":"` + method + `"`
	if id != "" {
		s += `,"id":` + id
	}
	if params != "" {
		s += `,"params":` + params
	}
	return s + "}"
}

func TestFramesInAnswersOut(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		check func(t *testing.T, v any)
	}{
		{"a call is answered with its result and info", call("1", "f", `["IBM"]`), func(t *testing.T, v any) {
			m := v.(map[string]any)
			if m["id"] != 1.0 || m["result"].([]any)[0] != "IBM" || m["info"].(map[string]any)["servant"] != "s1" {
				t.Errorf("response %v", m)
			}
		}},
		{"rpc.ping is answered by mserve", call(`"p"`, "rpc.ping", ""), func(t *testing.T, v any) {
			if m := v.(map[string]any); m["id"] != "p" || m["result"] != "pong" {
				t.Errorf("response %v", m)
			}
		}},
		{"a malformed frame gets a parse error and the connection goes on", `{"jsonrpc":`, func(t *testing.T, v any) {
			if m := v.(map[string]any); testkit.ErrCode(m) != jsonrpc.ParseError || m["id"] != nil {
				t.Errorf("response %v", m)
			}
		}},
		{"a batch frame gets one frame with the array", `[` + call("1", "f", "[1]") + `,` + call("", "f", "[2]") + `,` + call("3", "rpc.ping", "") + `]`,
			func(t *testing.T, v any) {
				arr, ok := v.([]any)
				if !ok || len(arr) != 2 {
					t.Fatalf("response %v", v)
				}
				if arr[0].(map[string]any)["id"] != 1.0 || arr[1].(map[string]any)["result"] != "pong" {
					t.Errorf("response %v", arr)
				}
			}},
		{"an empty batch frame gets a single error", `[]`, func(t *testing.T, v any) {
			if m, ok := v.(map[string]any); !ok || testkit.ErrCode(m) != jsonrpc.InvalidRequest {
				t.Errorf("response %v", v)
			}
		}},
	}
	r := newRig(t, options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := r.dial(t)
			c.send(t, tt.frame)
			tt.check(t, c.recv(t))
			// The connection is still usable.
			c.send(t, call("99", "rpc.ping", ""))
			if m := c.recvObj(t); m["id"] != 99.0 {
				t.Errorf("follow-up ping answered %v", m)
			}
		})
	}
}

func TestNotificationsGetNoAnswer(t *testing.T) {
	r := newRig(t, options{})
	c := r.dial(t)
	c.send(t, call("", "f", "[1]"))
	c.send(t, call("", "rpc.ping", ""))
	c.send(t, call("", "nope.undeclared", "[1]"))
	c.send(t, call("2", "rpc.ping", ""))
	if m := c.recvObj(t); m["id"] != 2.0 {
		t.Errorf("first frame %v, want the answer to id 2", m)
	}
}

func TestAnswersInCompletionOrder(t *testing.T) {
	r := newRig(t, options{hold: true})
	c := r.dial(t)
	c.send(t, call("1", "f", "[1]"))
	c.send(t, call("2", "f", "[2]"))
	c.send(t, call("3", "f", "[3]"))
	sent := map[string]*engine.Call{}
	for range 3 {
		x := r.sv.Next(t)
		sent[string(x.Params)] = x
	}
	for _, p := range []string{"[3]", "[1]", "[2]"} {
		r.sv.answer(sent[p], `"r`+p+`"`)
		m := c.recvObj(t)
		if m["result"] != "r"+p {
			t.Errorf("got %v, want the answer to %s", m, p)
		}
	}
}

func TestRPCCancel(t *testing.T) {
	tests := []struct {
		name    string
		target  string
		cancels bool
	}{
		{"cancels the connection's waiting call by id", `"job"`, true},
		{"an unknown id answers false", `"other"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, options{down: true})
			c := r.dial(t)
			c.send(t, call(`"job"`, "f", "[1]"))
			testkit.WaitFor(t, func() bool { return r.eng.Stats().Queued == 1 }, "the call to be queued")
			c.send(t, call("2", "rpc.cancel", "["+tt.target+"]"))
			n := 1
			if tt.cancels {
				n = 2
			}
			got := map[any]map[string]any{}
			for range n {
				m := c.recvObj(t)
				got[m["id"]] = m
			}
			if got[2.0]["result"] != tt.cancels {
				t.Errorf("rpc.cancel answered %v", got[2.0])
			}
			if tt.cancels {
				if testkit.ErrCode(got["job"]) != jsonrpc.Cancelled {
					t.Errorf("the call was answered %v", got["job"])
				}
				if r.eng.Stats().Queued != 0 {
					t.Error("the cancelled call is still queued")
				}
			} else {
				c.silent(t)
			}
		})
	}
}

func TestMaxInFlightStopsReading(t *testing.T) {
	const limit = 2
	r := newRig(t, options{hold: true, cfg: Config{MaxInFlight: limit}})
	c := r.dial(t)
	for i := range 5 {
		c.send(t, call(string(rune('1'+i)), "f", "["+string(rune('1'+i))+"]"))
	}
	held := []*engine.Call{r.sv.Next(t), r.sv.Next(t)}
	// The client could write all five frames, but mserve takes no more
	// than the limit.
	select {
	case x := <-r.sv.Sent:
		t.Fatalf("a call beyond MaxInFlight reached the servant: %s", x.Params)
	case <-time.After(quiet):
	}
	if st := r.eng.Stats(); st.Running+st.Queued != limit {
		t.Fatalf("engine holds %d calls, want %d", st.Running+st.Queued, limit)
	}
	// Each answer lets one more in.
	for i := 0; i < 5; i++ {
		r.sv.answer(held[0], "1")
		held = held[1:]
		c.recvObj(t)
		if i < 3 {
			held = append(held, r.sv.Next(t))
		}
		if st := r.eng.Stats(); st.Running+st.Queued > limit {
			t.Fatalf("engine holds %d calls, over the limit", st.Running+st.Queued)
		}
	}
	if st := r.eng.Stats(); st.OK != 5 {
		t.Errorf("answered %d, want 5", st.OK)
	}
}

func TestFrameOverTheLimit(t *testing.T) {
	tests := []struct {
		name string
		size uint32
	}{
		{"one byte over", 65},
		{"far over", 1 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, options{cfg: Config{MaxFrame: 64}})
			c := r.dial(t)
			c.c.Write(binary.BigEndian.AppendUint32(nil, tt.size))
			m := c.recvObj(t)
			if testkit.ErrCode(m) != jsonrpc.TooLarge || !strings.Contains(message(m), "closing the connection") || m["id"] != nil {
				t.Errorf("error frame %v", m)
			}
			c.eof(t, failsafe)
		})
	}
	t.Run("a frame at the limit is served", func(t *testing.T) {
		r := newRig(t, options{cfg: Config{MaxFrame: 64}})
		c := r.dial(t)
		body := call("1", "f", `["`+strings.Repeat("a", 64-len(call("1", "f", `[""]`)))+`"]`)
		if len(body) != 64 {
			t.Fatalf("body of %d bytes", len(body))
		}
		c.send(t, body)
		if m := c.recvObj(t); testkit.ErrCode(m) != 0 {
			t.Errorf("response %v", m)
		}
	})
}

func TestNotFramedGetsPlainText400(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"an HTTP request", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"},
		{"a GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"bare JSON", `{"jsonrpc":"2.0","id":1,"method":"f"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, options{})
			c := r.dial(t)
			io.WriteString(c.c, tt.data)
			c.c.SetReadDeadline(time.Now().Add(failsafe))
			b, err := io.ReadAll(c.c)
			if err != nil && !isReset(err) {
				t.Fatalf("read: %v", err)
			}
			got := string(b)
			if !strings.HasPrefix(got, "HTTP/1.1 400 Bad Request\r\n") || !strings.Contains(got, "Content-Type: text/plain") ||
				!strings.Contains(got, "length-prefixed JSON-RPC frames") {
				t.Errorf("reply %q", got)
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 50 * time.Millisecond
	t.Run("a connection that never sends is closed", func(t *testing.T) {
		r := newRig(t, options{cfg: Config{IdleTimeout: idle}})
		c := r.dial(t)
		c.eof(t, failsafe)
	})
	t.Run("a connection idle after an answered call is closed", func(t *testing.T) {
		r := newRig(t, options{cfg: Config{IdleTimeout: idle}})
		c := r.dial(t)
		c.send(t, call("1", "rpc.ping", ""))
		c.recvObj(t)
		c.eof(t, failsafe)
	})
	t.Run("a connection idle after a slow call was answered is closed", func(t *testing.T) {
		// The call is in flight while mserve waits for the next frame;
		// once it is answered the connection has nothing in flight and is
		// idle, so the idle timeout applies again.
		r := newRig(t, options{hold: true, cfg: Config{IdleTimeout: idle}})
		c := r.dial(t)
		c.send(t, call("1", "f", "[1]"))
		x := r.sv.Next(t)
		// A ping answered while the call is in flight shows the reader
		// went back to waiting for the next frame with the call in flight
		// (its answer is flushed just before that wait).
		c.send(t, call("2", "rpc.ping", ""))
		if m := c.recvObj(t); m["result"] != "pong" {
			t.Fatalf("ping: %v", m)
		}
		// The pong is flushed just before the reader sets its deadline
		// and waits: give it that instant. (Were it not there yet, this
		// test could only pass wrongly, never fail wrongly.)
		<-time.After(idle)
		r.sv.answer(x, "1")
		c.recvObj(t)
		c.eof(t, 20*idle)
	})
	t.Run("a connection with a call in flight is not closed", func(t *testing.T) {
		r := newRig(t, options{hold: true, cfg: Config{IdleTimeout: idle}})
		c := r.dial(t)
		c.send(t, call("1", "f", "[1]"))
		x := r.sv.Next(t)
		<-time.After(4 * idle) // several idle timeouts pass with the call in flight
		r.sv.answer(x, `"late"`)
		if m := c.recvObj(t); m["result"] != "late" {
			t.Errorf("response %v", m)
		}
	})
}

func TestFrameTimeout(t *testing.T) {
	r := newRig(t, options{cfg: Config{FrameTimeout: 50 * time.Millisecond}})
	c := r.dial(t)
	// A header announcing 100 bytes, then only 3 of them.
	c.c.Write(append(binary.BigEndian.AppendUint32(nil, 100), `{"j`...))
	m := c.recvObj(t)
	if testkit.ErrCode(m) != jsonrpc.InvalidRequest || !strings.Contains(message(m), "not completed within 50ms") {
		t.Errorf("error frame %v", m)
	}
	c.eof(t, failsafe)
	t.Run("a slow but complete frame within the timeout is served", func(t *testing.T) {
		c := r.dial(t)
		body := call("1", "rpc.ping", "")
		frame := wire.AppendFrame(nil, []byte(body))
		c.c.Write(frame[:6])
		c.c.Write(frame[6:])
		if m := c.recvObj(t); m["result"] != "pong" {
			t.Errorf("response %v", m)
		}
	})
}

func TestHelloAuthentication(t *testing.T) {
	hello := func(id, secret string) string {
		return call(id, "rpc.hello", `{"user":"alice","secret":"`+secret+`"}`)
	}
	t.Run("a good hello authenticates the connection", func(t *testing.T) {
		r := newRig(t, options{gate: true})
		c := r.dial(t)
		c.send(t, call("1", "g", "[1]")) // anonymous may not call g
		if m := c.recvObj(t); testkit.ErrCode(m) != jsonrpc.MethodNotFound {
			t.Fatalf("anonymous g: %v", m)
		}
		c.send(t, hello("2", aliceSecret))
		if m := c.recvObj(t); m["result"].(map[string]any)["user"] != "alice" {
			t.Fatalf("hello: %v", m)
		}
		c.send(t, call("3", "g", "[1]"))
		if m := c.recvObj(t); testkit.ErrCode(m) != 0 {
			t.Errorf("g as alice: %v", m)
		}
	})
	t.Run("a failed hello is answered, then the connection is closed", func(t *testing.T) {
		r := newRig(t, options{gate: true})
		c := r.dial(t)
		c.send(t, hello("1", "wrong"))
		if m := c.recvObj(t); testkit.ErrCode(m) != jsonrpc.Unauthorized || m["id"] != 1.0 {
			t.Errorf("hello: %v", m)
		}
		c.eof(t, failsafe)
	})
	t.Run("a failed hello inside a batch also closes the connection", func(t *testing.T) {
		// Otherwise a client could try a thousand secrets per batch,
		// forever, on one connection.
		r := newRig(t, options{gate: true})
		c := r.dial(t)
		c.send(t, "["+hello("1", "wrong")+","+hello("2", "wrong2")+"]")
		arr, ok := c.recv(t).([]any)
		if !ok || len(arr) != 2 || testkit.ErrCode(arr[0].(map[string]any)) != jsonrpc.Unauthorized {
			t.Fatalf("batch answer %v", arr)
		}
		c.eof(t, time.Second)
	})
}

func TestClientGoingAwayCancelsItsCalls(t *testing.T) {
	r := newRig(t, options{down: true})
	c := r.dial(t)
	c.send(t, call("1", "f", "[1]"))
	c.send(t, `[`+call("2", "f", "[2]")+`,`+call("3", "f", "[3]")+`]`)
	testkit.WaitFor(t, func() bool { return r.eng.Stats().Queued == 3 }, "the calls to be queued")
	c.c.Close()
	testkit.WaitFor(t, func() bool { st := r.eng.Stats(); return st.Queued == 0 && st.Cancelled == 3 }, "the calls to be cancelled")
}

func TestCloseFlushesAndCloses(t *testing.T) {
	r := newRig(t, options{hold: true})
	c := r.dial(t)
	c.send(t, call("1", "f", "[1]"))
	r.sv.Next(t) // running on the servant, never answered
	closed := make(chan struct{})
	go func() { r.srv.Close(); close(closed) }()
	// The client gets the answer mserve wrote while closing, then EOF.
	m := c.recvObj(t)
	if m["id"] != 1.0 || testkit.ErrCode(m) != jsonrpc.Cancelled {
		t.Errorf("answer while closing: %v", m)
	}
	c.eof(t, failsafe)
	select {
	case <-closed:
	case <-time.After(failsafe):
		t.Fatal("Close did not return")
	}
	if _, err := net.Dial("tcp", r.addr); err == nil {
		t.Error("the server still accepts after Close")
	}
}

func TestRefuseTooMany(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() { RefuseTooMany(10)(b); b.Close() }()
	rd := wire.NewReader(a, 0)
	frame, err := rd.ReadFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(frame, &m)
	if testkit.ErrCode(m) != jsonrpc.Overloaded || !strings.Contains(message(m), "10 client connections") || m["id"] != nil {
		t.Errorf("refusal %s", frame)
	}
	if _, err := rd.ReadFrame(nil); !errors.Is(err, io.EOF) {
		t.Errorf("after the refusal: %v, want EOF", err)
	}
}

func TestConcurrentConnections(t *testing.T) {
	r := newRig(t, options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.dial(t)
			for j := range 20 {
				id := string(rune('a'+i)) + string(rune('a'+j))
				c.send(t, call(`"`+id+`"`, "f", `["`+id+`"]`))
			}
			seen := map[string]bool{}
			for range 20 {
				m := c.recvObj(t)
				if m["result"].([]any)[0] != m["id"] {
					t.Errorf("answer %v does not match its id", m)
				}
				seen[m["id"].(string)] = true
			}
			if len(seen) != 20 {
				t.Errorf("connection %d got %d distinct answers", i, len(seen))
			}
		}()
	}
	wg.Wait()
}

// TestCloseListenersBeforeServe: a listener handed to Serve after
// CloseListeners (a shutdown right after start) is closed, so Serve
// returns instead of accepting forever.
func TestCloseListenersBeforeServe(t *testing.T) {
	s := New(Config{}, nil)
	s.CloseListeners()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	if err := testkit.Recv(t, done, "Serve still accepting on a listener given after CloseListeners"); err != nil {
		t.Errorf("Serve: %v", err)
	}
}
