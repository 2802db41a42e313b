package launch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/core/supervise"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// helperArg makes this test binary run as a servant (testServant) instead
// of the tests: agents in these tests start it.
const helperArg = "launch-test-servant"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		testServant()
		return
	}
	os.Exit(m.Run())
}

// testServant listens where it is told (MSERVE_SERVANT_ADDR) and tells
// each connection what it was given: "name secret addr pid args...".
func testServant() {
	ln, err := net.Listen("tcp", os.Getenv(supervise.EnvAddr))
	if err != nil {
		fmt.Fprintln(os.Stderr, "test servant:", err)
		os.Exit(3)
	}
	signal.Ignore(syscall.SIGINT)
	line := fmt.Sprintf("%s %s %s %d %s\n", os.Getenv(supervise.EnvName), os.Getenv(supervise.EnvSecret),
		os.Getenv(supervise.EnvAddr), os.Getpid(), strings.Join(os.Args[2:], " "))
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(0)
		}
		c.Write([]byte(line))
		c.Close()
	}
}

// helperArgv is the command line that runs testServant, with extra args.
func helperArgv(t testing.TB, extra ...string) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{self, helperArg}, extra...)
}

var testSecret = []byte("launcher-test-secret")

// testAgent is an agent serving on a loopback port for one test.
type testAgent struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
	logs   *observer.ObservedLogs
}

// startAgent serves an agent on addr ("" for any free loopback port) until
// stopped or the test ends. Unset fields of cfg get test values.
func startAgent(t *testing.T, addr string, cfg AgentConfig) *testAgent {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = testSecret
	}
	if cfg.Allow == nil {
		cfg.Allow = Allowlist{helperArgv(t), helperArgv(t, "{name}", "{port}")}
	}
	if cfg.Grace == 0 {
		cfg.Grace = 2 * time.Second
	}
	var logs *observer.ObservedLogs
	cfg.Log, logs = testkit.Observed(zapcore.DebugLevel)
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { ta.done <- a.Serve(ctx, ln) }()
	t.Cleanup(ta.stop)
	return ta
}

// stop stops the agent and waits until Serve has returned.
func (ta *testAgent) stop() {
	ta.cancel()
	select {
	case err := <-ta.done:
		if err != nil {
			panic(fmt.Sprintf("Serve: %v", err))
		}
		ta.done <- nil // later stops return at once
	case <-time.After(30 * time.Second):
		panic("the agent did not stop within 30s")
	}
}

func clientConfig(t testing.TB, addr string, names ...string) ClientConfig {
	return ClientConfig{Addr: addr, Secret: testSecret, Argv: helperArgv(t), Names: names, ServantSecret: "servant-secret",
		CallTimeout: 10 * time.Second, StopTimeout: 10 * time.Second}
}

func dial(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial %s: %v", cfg.Addr, err)
	}
	return c
}

// servantInfo is what a test servant says about itself.
type servantInfo struct {
	name, secret, addr string
	pid                int
	args               string
}

// askServant dials addr until the test servant there answers (bounded),
// and returns what it says.
func askServant(t *testing.T, addr string) servantInfo {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 5)
			if rerr == nil && len(f) == 5 {
				pid, _ := strconv.Atoi(f[3])
				return servantInfo{name: f[0], secret: f[1], addr: f[2], pid: pid, args: f[4]}
			}
			err = fmt.Errorf("answer %q: %v", line, rerr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no test servant answers at %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond) // retry interval of a bounded dial loop: the process is starting
	}
}

// waitGone polls until no process has pid (reaped by its supervisor), or
// fails the test after within.
func waitGone(t *testing.T, within time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("servant process %d still runs %v later", pid, within)
			}
			time.Sleep(10 * time.Millisecond) // poll interval: a process's end has no event here
		}
	}
}

// rawConn is a hand-driven connection to an agent.
type rawConn struct {
	t  *testing.T
	fc *frameConn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, fc: newFrameConn(nc)}
}

// next reads one frame within 10s; nil at the end of the connection.
func (c *rawConn) next() []byte {
	c.t.Helper()
	c.fc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := c.fc.read()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("no frame within 10s")
		}
		return nil
	}
	return f
}

// challenge reads the agent's challenge and returns its nonce.
func (c *rawConn) challenge() string {
	c.t.Helper()
	var r jsonrpc.Request
	f := c.next()
	if e := jsonrpc.ParseRequest(f, &r); e != nil || r.Method != MethodChallenge || r.ID != nil {
		c.t.Fatalf("first frame %s is not a %s notification", f, MethodChallenge)
	}
	var p challengeParams
	if err := json.Unmarshal(r.Params, &p); err != nil || len(p.Nonce) != 64 || p.Protocol != ProtocolVersion {
		c.t.Fatalf("challenge params %s", r.Params)
	}
	return p.Nonce
}

func (c *rawConn) send(body string) {
	c.t.Helper()
	if err := c.fc.write([]byte(body)); err != nil {
		c.t.Fatal(err)
	}
}

// response reads one response frame.
func (c *rawConn) response() (result json.RawMessage, e *jsonrpc.Error, id string) {
	c.t.Helper()
	f := c.next()
	if f == nil {
		c.t.Fatal("connection closed where a response was expected")
	}
	var resp jsonrpc.Response
	if err := jsonrpc.ParseResponse(f, &resp); err != nil {
		c.t.Fatalf("%s: %v", f, err)
	}
	if resp.Error != nil {
		var err error
		if e, err = jsonrpc.DecodeError(resp.Error); err != nil {
			c.t.Fatal(err)
		}
	}
	return json.RawMessage(resp.Result), e, string(resp.ID)
}

// expectClosed checks that the agent closes the connection next.
func (c *rawConn) expectClosed() {
	c.t.Helper()
	if f := c.next(); f != nil {
		c.t.Fatalf("got %s, want the connection closed", f)
	}
}

func authRequest(mac, nonce string) string {
	b, _ := json.Marshal(authParams{Protocol: ProtocolVersion, MAC: mac, Nonce: nonce})
	return string(jsonrpc.AppendRequest(nil, []byte("1"), MethodAuth, b))
}

func TestLaunchAuth(t *testing.T) {
	ta := startAgent(t, "", AgentConfig{AuthTimeout: 300 * time.Millisecond})
	ours := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name     string
		answer   func(nonce string) string // "" sends nothing
		raw      []byte                    // sent as is instead of a frame
		wantCode int                       // 0: authenticated
		wantMsg  string
	}{
		{name: "good secret", answer: func(n string) string { return authRequest(clientMAC(testSecret, n), ours) }},
		{name: "wrong secret", answer: func(n string) string { return authRequest(clientMAC([]byte("guess"), n), ours) },
			wantCode: jsonrpc.Unauthorized, wantMsg: "wrong launcher secret"},
		{name: "answer to another nonce", answer: func(string) string { return authRequest(clientMAC(testSecret, ours), ours) },
			wantCode: jsonrpc.Unauthorized, wantMsg: "wrong launcher secret"},
		{name: "no answer within the deadline", answer: func(string) string { return "" },
			wantCode: jsonrpc.Unauthorized, wantMsg: "no answer to the launcher's challenge within 300ms"},
		{name: "garbage frame", answer: func(string) string { return "\x00garbage{" },
			wantCode: jsonrpc.ParseError, wantMsg: "parse error"},
		{name: "start before auth", answer: func(string) string {
			return `{"jsonrpc":"2.0","id":1,"method":"launch.start","params":{"session":"x","argv":["x"],"secret":"s","servants":[{"name":"s1"}]}}`
		}, wantCode: jsonrpc.Unauthorized, wantMsg: "authenticate first"},
		{name: "bad mac format", answer: func(string) string { return authRequest("zz", ours) },
			wantCode: jsonrpc.InvalidParams, wantMsg: "mac must be 64 hex digits"},
		{name: "HTTP instead of frames", raw: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			wantCode: jsonrpc.ParseError, wantMsg: "not length-prefixed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ta.addr)
			nonce := c.challenge()
			if tc.raw != nil {
				c.fc.nc.Write(tc.raw)
			} else if a := tc.answer(nonce); a != "" {
				c.send(a)
			}
			result, e, _ := c.response()
			if tc.wantCode == 0 {
				if e != nil {
					t.Fatalf("refused: %v", e)
				}
				var ar authResult
				if err := json.Unmarshal(result, &ar); err != nil || !macEqual(agentMAC(testSecret, ours), ar.MAC) {
					t.Fatalf("the agent's proof %s does not match", result)
				}
				c.send(string(jsonrpc.AppendRequest(nil, []byte("2"), wire.MethodPing, nil)))
				if result, e, id := c.response(); e != nil || string(result) != `"pong"` || id != "2" {
					t.Fatalf("ping after auth: %s %v id %s", result, e, id)
				}
				return
			}
			if e == nil || e.Code != tc.wantCode || !strings.Contains(e.Message, tc.wantMsg) {
				t.Fatalf("got error %v, want code %d with %q", e, tc.wantCode, tc.wantMsg)
			}
			c.expectClosed()
		})
	}
}

// TestLaunchAuthFailuresRateLimited: many failures from one host make one
// warning within 10s.
func TestLaunchAuthFailuresRateLimited(t *testing.T) {
	ta := startAgent(t, "", AgentConfig{})
	for range 3 {
		c := dialRaw(t, ta.addr)
		c.challenge()
		c.send(authRequest(strings.Repeat("00", 32), strings.Repeat("ab", 32)))
		if _, e, _ := c.response(); e == nil || e.Code != jsonrpc.Unauthorized {
			t.Fatalf("got %v, want unauthorized", e)
		}
		c.expectClosed()
	}
	warned := ta.logs.FilterMessage("launcher authentication failed; connection closed")
	if n := warned.Len(); n != 1 {
		t.Fatalf("%d warnings for 3 failures from one host within 10s, want 1", n)
	}
	if got := warned.All()[0].ContextMap()["source"]; !strings.HasPrefix(fmt.Sprint(got), "127.0.0.1:") {
		t.Errorf("warning names source %v", got)
	}
}

// TestLaunchClientRefusesFakeAgent: an agent that does not know the secret
// is not sent the start (with the servants' secret).
func TestLaunchClientRefusesFakeAgent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 4)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		fc := newFrameConn(nc)
		fc.request(nil, MethodChallenge, challengeParams{Protocol: ProtocolVersion, Nonce: newNonce()})
		for {
			f, err := fc.read()
			if err != nil {
				close(got)
				return
			}
			var r jsonrpc.Request
			jsonrpc.ParseRequest(f, &r)
			got <- r.Method
			fc.result(r.ID, authResult{MAC: strings.Repeat("00", 32)}) // accepts anything, proves nothing
		}
	}()
	_, err = Dial(context.Background(), clientConfig(t, ln.Addr().String(), "s1"))
	if err == nil || !strings.Contains(err.Error(), "did not prove it knows the launcher secret") {
		t.Fatalf("Dial: %v, want a refusal of the agent", err)
	}
	var methods []string
	for m := range got {
		methods = append(methods, m)
	}
	if strings.Join(methods, ",") != MethodAuth {
		t.Fatalf("the fake agent received %v, want only %s", methods, MethodAuth)
	}
}

func TestLaunchAllowlist(t *testing.T) {
	allow, err := ParseAllowlist([]string{"./quickstart-servant", "  /opt/app/servant   --mode  fast "})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv []string
		ok   bool
	}{
		{[]string{"./quickstart-servant"}, true},
		{[]string{"/opt/app/servant", "--mode", "fast"}, true},
		{[]string{"./quickstart-servant", "-x"}, false},               // extra arg
		{[]string{"/opt/app/servant", "--mode", "fast", "-v"}, false}, // extra arg
		{[]string{"/opt/app/servant", "--mode"}, false},               // missing arg
		{[]string{"quickstart-servant"}, false},                       // different path
		{[]string{"/usr/bin/quickstart-servant"}, false},              // different path
		{[]string{"/opt/app/servant --mode fast"}, false},             // one word is not three
		{[]string{"/bin/sh", "-c", "./quickstart-servant"}, false},
	} {
		if got := allow.Allows(tc.argv); got != tc.ok {
			t.Errorf("Allows(%q) = %v, want %v", tc.argv, got, tc.ok)
		}
	}
	if _, err := ParseAllowlist([]string{"ok", "   "}); err == nil {
		t.Error("an empty entry was accepted")
	}

	// Through the agent: a refusal names the command and what is allowed.
	ta := startAgent(t, "", AgentConfig{})
	for _, tc := range []struct {
		name string
		argv []string
		ok   bool
	}{
		{"exact", helperArgv(t), true},
		{"exact with placeholders", helperArgv(t, "{name}", "{port}"), true},
		{"extra arg", helperArgv(t, "-x"), false},
		{"different path", append([]string{"/tmp/other"}, helperArgv(t)[1:]...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clientConfig(t, ta.addr, "s1")
			cfg.Argv = tc.argv
			c, err := Dial(context.Background(), cfg)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("%q was started", tc.argv)
			}
			var e *jsonrpc.Error
			if !errors.As(err, &e) || e.Code != jsonrpc.Unauthorized {
				t.Fatalf("error %v, want unauthorized", err)
			}
			for _, want := range []string{"command not allowed", strconv.Quote(strings.Join(tc.argv, " ")), strconv.Quote(strings.Join(helperArgv(t), " "))} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %s", err, want)
				}
			}
		})
	}
}

// TestLaunchStart: the servants run where the answer says, with the
// servant environment and placeholders replaced.
func TestLaunchStart(t *testing.T) {
	ta := startAgent(t, "", AgentConfig{})
	cfg := clientConfig(t, ta.addr, "s1", "s3")
	cfg.Argv = helperArgv(t, "{name}", "{port}")
	c := dial(t, cfg)
	defer c.Close()
	ss := c.Servants()
	if len(ss) != 2 || ss[0].Name != "s1" || ss[1].Name != "s3" || ss[0].Addr == ss[1].Addr {
		t.Fatalf("servants %v", ss)
	}
	var pids []int
	for _, s := range ss {
		host, port, err := net.SplitHostPort(s.Addr)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("servant %s at %q: want the agent's address on the connection, 127.0.0.1", s.Name, s.Addr)
		}
		info := askServant(t, s.Addr)
		want := servantInfo{name: s.Name, secret: cfg.ServantSecret, addr: s.Addr, pid: info.pid, args: s.Name + " " + port}
		if info != want {
			t.Errorf("servant says %+v, want %+v", info, want)
		}
		pids = append(pids, info.pid)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, 10*time.Second, pids...)
}

// TestLaunchServantsStop: whatever ends a connection, its servants are
// stopped.
func TestLaunchServantsStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  AgentConfig
		end  func(*testing.T, *testAgent, *Client)
	}{
		{"connection dropped", AgentConfig{}, func(_ *testing.T, _ *testAgent, c *Client) { c.cn.close() }},
		{"stop asked", AgentConfig{}, func(t *testing.T, _ *testAgent, c *Client) {
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		}},
		{"connection silent (keepalive)", AgentConfig{IdleTimeout: 300 * time.Millisecond}, func(*testing.T, *testAgent, *Client) {}},
		{"agent stopped", AgentConfig{}, func(_ *testing.T, ta *testAgent, _ *Client) { ta.stop() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ta := startAgent(t, "", tc.cfg)
			c := dial(t, clientConfig(t, ta.addr, "s1", "s2"))
			defer c.cn.close()
			var pids []int
			for _, s := range c.Servants() {
				pids = append(pids, askServant(t, s.Addr).pid)
			}
			tc.end(t, ta, c)
			waitGone(t, 10*time.Second, pids...)
		})
	}
}

// TestLaunchRedial: a launcher that comes back is asked again for the same
// servants on the same ports; at the end Run stops them.
func TestLaunchRedial(t *testing.T) {
	ta := startAgent(t, "", AgentConfig{})
	restarted := make(chan []Servant, 1)
	cfg := clientConfig(t, ta.addr, "s1", "s2")
	cfg.PingInterval, cfg.PingTimeout, cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, time.Second, 10*time.Millisecond, 50*time.Millisecond
	cfg.OnRestart = func(ss []Servant) { restarted <- ss }
	c := dial(t, cfg)
	before := c.Servants()
	var pids []int
	for _, s := range before {
		pids = append(pids, askServant(t, s.Addr).pid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { c.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()

	ta.stop()
	waitGone(t, 10*time.Second, pids...)
	startAgent(t, ta.addr, AgentConfig{})
	select {
	case after := <-restarted:
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("servants came back at %v, were at %v", after, before)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the client did not restart the servants within 20s of the launcher coming back")
	}
	pids = pids[:0]
	for _, s := range before {
		info := askServant(t, s.Addr)
		if info.name != s.Name {
			t.Errorf("%s answers as %s", s.Addr, info.name)
		}
		pids = append(pids, info.pid)
	}
	cancel()
	select {
	case <-ran:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of its context ending")
	}
	waitGone(t, 10*time.Second, pids...) // Run asked for the stop and waited for it
}

// TestLaunchTakeover: a new connection of the same session (mserve
// redialling before the agent noticed the old connection was gone) ends the
// old connection and its servants before starting them again.
func TestLaunchTakeover(t *testing.T) {
	ta := startAgent(t, "", AgentConfig{})
	c1 := dial(t, clientConfig(t, ta.addr, "s1"))
	defer c1.cn.close()
	old := askServant(t, c1.Servants()[0].Addr)
	_, port, _ := net.SplitHostPort(old.addr)
	p, _ := strconv.Atoi(port)
	c2 := &Client{cfg: c1.cfg, log: zap.NewNop(), session: c1.session}
	cn, ss, err := c2.connect(context.Background(), map[string]int{"s1": p})
	if err != nil {
		t.Fatal(err)
	}
	defer cn.close()
	if syscall.Kill(old.pid, 0) == nil {
		t.Errorf("the old servant %d still runs after the new start was answered", old.pid)
	}
	if ss[0].Addr != old.addr {
		t.Errorf("new servant at %s, asked for %s", ss[0].Addr, old.addr)
	}
	if info := askServant(t, ss[0].Addr); info.pid == old.pid {
		t.Errorf("the old servant answers")
	}
	select {
	case <-c1.cn.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the old connection was not closed")
	}
}

func TestLaunchStartRefusals(t *testing.T) {
	ta := startAgent(t, "", AgentConfig{})
	for _, tc := range []struct {
		name string
		mod  func(*ClientConfig)
		want string
	}{
		{"missing program", func(c *ClientConfig) { c.Argv = []string{"/nonexistent/servant"} }, "command not allowed"},
		{"bad servant name", func(c *ClientConfig) { c.Names = []string{"s 1"} }, "servant name"},
		{"wrong secret", func(c *ClientConfig) { c.Secret = []byte("other") }, "wrong launcher secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clientConfig(t, ta.addr, "s1")
			tc.mod(&cfg)
			c, err := Dial(context.Background(), cfg)
			if err == nil {
				c.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
	// An allowed command that cannot run is refused at once.
	tb := startAgent(t, "", AgentConfig{Allow: Allowlist{{"/nonexistent/servant"}}})
	cfg := clientConfig(t, tb.addr, "s1")
	cfg.Argv = []string{"/nonexistent/servant"}
	if _, err := Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `cannot run "/nonexistent/servant"`) {
		t.Fatalf("Dial: %v", err)
	}
}
