package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// readErrorFrame reads frames until the connection closes and returns the
// last error object received, or nil.
func readErrorFrame(t *testing.T, conn net.Conn) *jsonrpc.Error {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(conn, 0)
	var last *jsonrpc.Error
	for {
		frame, err := r.ReadFrame(nil)
		if err != nil {
			return last
		}
		var resp jsonrpc.Response
		if jsonrpc.ParseResponse(frame, &resp) == nil && resp.Error != nil {
			last, _ = jsonrpc.DecodeError(resp.Error)
		}
	}
}

// TestE2EHostileClients: each kind of hostile client is bounded by a limit
// with a clear error or close, and a well-behaved client keeps being
// served throughout.
func TestE2EHostileClients(t *testing.T) {
	m := startMserve(t, mserveOpts{
		flags:    []string{"-algo", "least", "-frame-timeout", "300ms", "-idle-timeout", "400ms", "-max-conns", "40"},
		servants: []string{"2", quickstartBin},
	})
	m.waitServing("s1", "s2")
	// A well-behaved client connects and calls while each hostile one is
	// at work. (It connects afresh each time: a connection left idle
	// longer than -idle-timeout is closed, as it should be.)
	stillServed := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		good, err := client.Dial(ctx, m.native)
		if err != nil {
			t.Errorf("a well-behaved client could not connect: %v", err)
			return
		}
		defer good.Close()
		if _, err := good.Call(ctx, "echo", []any{"still here"}); err != nil {
			t.Errorf("a well-behaved client was not served: %v", err)
		}
	}

	t.Run("slow frame", func(t *testing.T) {
		conn, err := net.Dial("tcp", m.native)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], 100)
		conn.Write(hdr[:])
		conn.Write([]byte(`{"jsonrpc":`)) // and nothing more: the frame never completes
		stillServed()
		e := readErrorFrame(t, conn)
		if e == nil || !strings.Contains(e.Message, "not completed within 300ms") {
			t.Errorf("a trickling frame got %v, want an error naming the frame timeout then a close", e)
		}
	})

	t.Run("idle connection", func(t *testing.T) {
		conn, err := net.Dial("tcp", m.native)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(make([]byte, 1))
		if err != io.EOF || n != 0 {
			t.Errorf("idle connection: read %d bytes, %v; want it closed", n, err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("closed after %v, before the idle timeout", d)
		}
		stillServed()
	})

	t.Run("too many connections", func(t *testing.T) {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		// The limit is 40 over both front ends; a good client holds one,
		// kept from idling out by a call in flight.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		good, err := client.Dial(ctx, m.native)
		if err != nil {
			t.Fatal(err)
		}
		defer good.Close()
		go good.Call(ctx, "sleep", []any{3000})
		refused := 0
		var msg string
		for range 60 {
			c, err := net.Dial("tcp", m.native)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns[39:] {
			if e := readErrorFrame(t, c); e != nil && e.Code == jsonrpc.Overloaded {
				refused++
				msg = e.Message
			}
		}
		if refused < 20 {
			t.Errorf("%d of 60 connections beyond a limit of 40 were refused; want at least 20", refused)
		}
		if !strings.Contains(msg, "maximum of 40 client connections") {
			t.Errorf("refusal message %q does not name the limit", msg)
		}
		if _, err := good.Call(ctx, "echo", []any{"still here"}); err != nil {
			t.Errorf("a well-behaved client holding a connection was not served: %v", err)
		}
		// Give the places back before the next test: mserve sees each
		// close a moment after it happens.
		for _, c := range conns {
			c.Close()
		}
		good.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + m.admin + "/status")
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				Connections struct{ Open int } `json:"connections"`
			}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st.Connections.Open == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d client connections still open 10s after closing them all", st.Connections.Open)
			}
			time.Sleep(5 * time.Millisecond) // poll interval: a close has no event the test can wait on
		}
	})

	t.Run("deep nesting", func(t *testing.T) {
		conn, err := net.Dial("tcp", m.native)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := `{"jsonrpc":"2.0","id":1,"method":"echo","params":[` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `]}`
		conn.Write(wire.AppendFrame(nil, []byte(body)))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		frame, err := wire.NewReader(conn, 0).ReadFrame(nil)
		if err != nil {
			t.Fatal(err)
		}
		var resp jsonrpc.Response
		jsonrpc.ParseResponse(frame, &resp)
		e, _ := jsonrpc.DecodeError(resp.Error)
		if e == nil || e.Code != jsonrpc.ParseError || !strings.Contains(e.Message, "nesting too deep") {
			t.Errorf("deeply nested JSON got %s, want a parse error naming the nesting limit", frame)
		}
		stillServed()
	})

	t.Run("client that does not read", func(t *testing.T) {
		conn, err := net.Dial("tcp", m.native)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Ask for large answers and never read them: mserve must not
		// buffer without bound nor stall the others.
		big := `"` + strings.Repeat("x", 60000) + `"`
		frame := wire.AppendFrame(nil, []byte(`{"jsonrpc":"2.0","id":1,"method":"echo","params":[`+big+`]}`))
		conn.(*net.TCPConn).SetReadBuffer(4096)
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		for range 400 {
			if _, err := conn.Write(frame); err != nil {
				break // mserve stopped reading from it, or closed it: both are bounds
			}
		}
		stillServed()
	})
}

// TestE2EPythonServant runs the standard-library Python servant of
// examples/servant-python behind mserve, registered by URL with 8 slots
// and one request at a time (conns=1), so that concurrent calls reach it
// as JSON-RPC batches.
func TestE2EPythonServant(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed: the Python servant example is not checked")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	py := exec.Command(python, "../../examples/servant-python/servant.py", port)
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { py.Process.Kill(); py.Wait() })
	m := startMserve(t, mserveOpts{flags: []string{"-algo", "least", "-servants", "py@http://" + addr + "/?slots=8&conns=1"}})
	c, err := client.Dial(context.Background(), m.native)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, "upper", []any{"hello"})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Result) != `"HELLO"` || resp.Info().Servant != "py" {
		t.Errorf("upper(hello) = %s on %q, want \"HELLO\" on py", resp.Result, resp.Info().Servant)
	}
	if resp, err := c.Call(ctx, "add", map[string]any{"a": 2, "b": 3}); err != nil || string(resp.Result) != "5" {
		t.Errorf("add with named params = %v, %v; want 5", resp, err)
	}
	var e *jsonrpc.Error
	if _, err := c.Call(ctx, "nope", []any{1}); err == nil || !asRPC(err, &e) || e.Code != jsonrpc.MethodNotFound {
		t.Errorf("unknown function on the Python servant: %v, want -32601", err)
	}
	// 64 calls at once: all but the first wait while one request is in
	// flight and go in batches; each gets its own answer.
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			resp, err := c.Call(ctx, "add", []any{i, 1000})
			if err != nil || string(resp.Result) != strconv.Itoa(i+1000) {
				t.Errorf("add(%d, 1000) = %v, %v", i, resp, err)
			}
		})
	}
	wg.Wait()
}

func asRPC(err error, e **jsonrpc.Error) bool {
	re, ok := err.(*jsonrpc.Error)
	if ok {
		*e = re
	}
	return ok
}
