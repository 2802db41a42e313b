package main

// Helpers for the end-to-end tests in e2e_test.go: building the binaries,
// starting the real mserve with real servants on free loopback ports,
// watching its JSON log, talking to it over raw TCP and HTTP, stopping it
// and checking that no servant process is left behind.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/freeport"
)

// Paths of the binaries TestMain builds.
var (
	mserveBin     string
	quickstartBin string
)

// envFaultServant makes the test binary run the fault servant instead of
// the tests (see faultservant_test.go).
const envFaultServant = "MSERVE_TEST_SERVANT"

func TestMain(m *testing.M) {
	if os.Getenv(envFaultServant) == "1" {
		runFaultServant() // never returns
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mserve-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	mserveBin = filepath.Join(dir, "mserve")
	quickstartBin = filepath.Join(dir, "quickstart-servant")
	for _, b := range []struct{ out, pkg string }{
		{mserveBin, "."},
		{quickstartBin, "../../examples/quickstart"},
	} {
		args := []string{"build", "-o", b.out}
		if raceEnabled { // a test run with -race also checks the binaries it starts
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

// raceEnabled reports whether this test binary was built with -race.
var raceEnabled = func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}()

// testEnv is the environment for processes the tests start: this process's
// minus any MSERVE_* variable (which would change mserve's settings), plus
// extra. Race-enabled binaries are told not to linger a second at exit
// (the race runtime's default), which would slow every stop.
func testEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MSERVE_") && !strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	if raceEnabled {
		env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	return append(env, extra...)
}

// freeAddr returns a loopback address whose port was free a moment ago
// and that this process has not handed out before.
func freeAddr(t testing.TB) string { return freeport.Test(t) }

// ---------------------------------------------------------------------------
// The log

// logLine is one line of mserve's JSON log.
type logLine map[string]any

func (l logLine) str(key string) string { s, _ := l[key].(string); return s }

// logBuf collects a process's output and parses each line as a JSON log
// entry, so that tests can wait for an entry instead of sleeping.
type logBuf struct {
	mu      sync.Mutex
	raw     bytes.Buffer
	partial []byte
	lines   []logLine
	changed chan struct{} // closed and replaced whenever a line arrives
}

func newLogBuf() *logBuf { return &logBuf{changed: make(chan struct{})} }

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.raw.Write(p)
	b.partial = append(b.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		var l logLine
		if json.Unmarshal(b.partial[:i], &l) == nil {
			b.lines = append(b.lines, l)
			added = true
		}
		b.partial = b.partial[i+1:]
	}
	if added {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	return len(p), nil
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.String()
}

// count returns how many entries match.
func (b *logBuf) count(match func(logLine) bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lines {
		if match(l) {
			n++
		}
	}
	return n
}

// waitCount waits until at least n entries match, or fails the test after
// within.
func (b *logBuf) waitCount(t testing.TB, what string, n int, within time.Duration, match func(logLine) bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		got := 0
		for _, l := range b.lines {
			if match(l) {
				got++
			}
		}
		ch := b.changed
		b.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("waited %v for %d log entries %s; saw %d", within, n, what, got)
		}
	}
}

// msgIs matches entries with the given message and, in pairs, fields.
func msgIs(msg string, kv ...string) func(logLine) bool {
	return func(l logLine) bool {
		if l.str("msg") != msg {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if l.str(kv[i]) != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// ---------------------------------------------------------------------------
// mserve

// mserveProc is one running mserve daemon.
type mserveProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	native string // host:port of the native front end
	http   string // host:port of the HTTP front end
	admin  string // host:port of the admin endpoint
	log    *logBuf
	stdout *logBuf

	done    chan struct{} // closed when the process has exited
	waitErr error

	mu      sync.Mutex
	pids    map[int]bool // servant pids learned during the test
	stopped bool
}

// mserveOpts configures startMserve.
type mserveOpts struct {
	flags    []string // extra daemon flags
	servants []string // N COMMAND ARGS..., or nil for -servants only
	env      []string // extra environment
}

// startMserve starts mserve on free loopback ports with debug JSON logs
// and waits until both front ends accept connections. The process is
// stopped (SIGTERM, exit 0 expected, servants gone) when the test ends, and
// its log is printed if the test failed.
func startMserve(t testing.TB, o mserveOpts) *mserveProc {
	t.Helper()
	p := &mserveProc{
		t: t, native: freeAddr(t), http: freeAddr(t), admin: freeAddr(t),
		log: newLogBuf(), stdout: newLogBuf(),
		done: make(chan struct{}), pids: map[int]bool{},
	}
	args := []string{"-http", p.http, "-listen", p.native, "-admin", p.admin, "-log", "debug", "-log-format", "json"}
	args = append(args, o.flags...)
	args = append(args, o.servants...)
	p.cmd = exec.Command(mserveBin, args...)
	p.cmd.Env = testEnv(o.env...)
	p.cmd.Stderr = p.log
	p.cmd.Stdout = p.stdout
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mserve %s\n--- stderr ---\n%s--- stdout ---\n%s", strings.Join(args, " "), p.log.String(), p.stdout.String())
		}
	})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	p.waitListening(p.native)
	p.waitListening(p.http)
	return p
}

// waitListening dials addr until it accepts a connection, bounded by a
// deadline; it fails at once if mserve exits meanwhile.
func (p *mserveProc) waitListening(addr string) {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("mserve exited before listening on %s: %v", addr, p.waitErr)
		default:
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			p.t.Fatalf("mserve does not listen on %s: %v", addr, err)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Millisecond): // retry interval of a bounded dial loop
		}
	}
}

// waitServantsUp waits until the servants named have each logged "servant
// up" at least once.
func (p *mserveProc) waitServantsUp(names ...string) {
	p.t.Helper()
	for _, n := range names {
		p.log.waitCount(p.t, fmt.Sprintf("%q (servant %s)", "servant up", n), 1, 20*time.Second, msgIs("servant up", "servant", n))
	}
}

// waitServing makes echo calls until each servant named has answered one.
// A servant that answered has been taken in by mserve's engine (its "servant
// up" log line comes a moment before that) and its declarations are known
// to mserve. With an algorithm that spreads sequential calls (least, even)
// this takes one call per servant.
func (p *mserveProc) waitServing(names ...string) {
	p.t.Helper()
	p.waitServantsUp(names...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, p.native)
	if err != nil {
		p.t.Fatal(err)
	}
	defer c.Close()
	seen := map[string]bool{}
	for i := 0; ; i++ {
		missing := false
		for _, n := range names {
			missing = missing || !seen[n]
		}
		if !missing {
			return
		}
		if i == 100 {
			p.t.Fatalf("after 100 echo calls only servants %v answered; want %v", seen, names)
		}
		resp, err := c.Call(ctx, "echo", []any{"ready?"})
		if err != nil {
			p.t.Fatalf("echo while waiting for servants %v: %v", names, err)
		}
		seen[resp.Info().Servant] = true
	}
}

// notePid records a servant pid that must be gone once mserve has stopped.
func (p *mserveProc) notePid(pid int) {
	p.mu.Lock()
	p.pids[pid] = true
	p.mu.Unlock()
}

// stop sends SIGTERM, waits for mserve to exit, checks it exited 0 and
// that no servant process it ran is left.
func (p *mserveProc) stop() {
	p.t.Helper()
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.mu.Unlock()
	for _, pid := range childPids(p.cmd.Process.Pid) {
		p.notePid(pid)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("SIGTERM to mserve: %v", err)
	}
	p.checkExit()
}

// checkExit waits for mserve to exit after it was told to stop.
func (p *mserveProc) checkExit() {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("mserve did not exit within 30s of SIGTERM; killed it")
	}
	if p.waitErr != nil {
		p.t.Errorf("mserve exited with %v, want exit status 0", p.waitErr)
	}
	if strings.Contains(p.log.String(), "WARNING: DATA RACE") {
		p.t.Errorf("mserve reported a data race")
	}
	p.mu.Lock()
	pids := make([]int, 0, len(p.pids))
	for pid := range p.pids {
		pids = append(pids, pid)
	}
	p.mu.Unlock()
	waitGone(p.t, pids, 5*time.Second)
}

func (p *mserveProc) cleanup() {
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if !stopped {
		p.stop()
	}
}

// childPids returns the pids of pid's children (Linux /proc; nil elsewhere).
func childPids(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// alive reports whether a process with this pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// waitGone waits up to within for every pid to be gone.
func waitGone(t testing.TB, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []int
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("servant processes still running %v after mserve exited: %v", within, left)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(20 * time.Millisecond) // poll interval: process exit has no event we can wait on
	}
}

// ---------------------------------------------------------------------------
// Other processes

// runCmd runs a command to completion (bounded) and returns its stdout,
// stderr and exit code.
func runCmd(t testing.TB, env []string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = testEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: did not finish within 60s", name, strings.Join(args, " "))
	}
	return out.String(), errb.String(), code
}

// startQuickstart runs a quickstart servant of our own on a free port and
// returns its address once it accepts connections.
func startQuickstart(t testing.TB) string {
	t.Helper()
	addr := freeAddr(t)
	startQuickstartAt(t, addr)
	return addr
}

// startQuickstartAt runs a quickstart servant of our own on addr and
// returns once it accepts connections. It is stopped when the test ends.
func startQuickstartAt(t testing.TB, addr string) {
	t.Helper()
	cmd := exec.Command(quickstartBin, "-addr", addr)
	cmd.Env = testEnv()
	var out bytes.Buffer
	var outMu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { outMu.Lock(); defer outMu.Unlock(); return out.Write(p) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("quickstart servant did not exit on SIGTERM")
		}
		if t.Failed() {
			outMu.Lock()
			t.Logf("quickstart servant %s output:\n%s", addr, out.String())
			outMu.Unlock()
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("quickstart servant exited before listening on %s", addr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("quickstart servant does not listen on %s: %v", addr, err)
		}
		select {
		case <-done:
		case <-time.After(10 * time.Millisecond): // retry interval of a bounded dial loop
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// ---------------------------------------------------------------------------
// JSON-RPC

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// rpcResp is one JSON-RPC response as a client receives it from mserve.
type rpcResp struct {
	JSONRPC string                     `json:"jsonrpc"`
	ID      json.RawMessage            `json:"id"`
	Result  json.RawMessage            `json:"result"`
	Error   *rpcError                  `json:"error"`
	Info    map[string]json.RawMessage `json:"info"`
}

func decodeResp(t testing.TB, b []byte) rpcResp {
	t.Helper()
	var r rpcResp
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("response is not a JSON-RPC response object: %v: %s", err, b)
	}
	if r.JSONRPC != "2.0" {
		t.Errorf(`response has "jsonrpc" %q, want "2.0": %s`, r.JSONRPC, b)
	}
	if (r.Result == nil) == (r.Error == nil) {
		t.Errorf("response must have exactly one of result and error: %s", b)
	}
	return r
}

// infoInt returns an integer member of an info record, failing when absent.
func infoInt(t testing.TB, info map[string]json.RawMessage, key string) int64 {
	t.Helper()
	raw, ok := info[key]
	if !ok {
		t.Errorf("info has no %q: %v", key, info)
		return 0
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		t.Errorf("info %q = %s, want an integer", key, raw)
	}
	return n
}

func infoStr(t testing.TB, info map[string]json.RawMessage, key string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(info[key], &s); err != nil {
		t.Errorf("info %q = %s, want a string", key, info[key])
	}
	return s
}

// httpPost POSTs body to mserve's HTTP front end on a fresh connection.
func httpPost(t testing.TB, addr, body string) (int, http.Header, []byte) {
	t.Helper()
	return httpDo(t, http.MethodPost, addr, body)
}

func httpDo(t testing.TB, method, addr, body string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, addr, err)
	}
	return resp.StatusCode, resp.Header, b
}

// rawConn is a hand-driven native connection: frames are a 4-byte
// big-endian length and a JSON body.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *rawConn) write(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawConn) send(body string) {
	c.t.Helper()
	c.write(binary.BigEndian.AppendUint32(nil, uint32(len(body))))
	c.write([]byte(body))
}

// recv reads one frame; it fails the test on error or after 10s.
func (c *rawConn) recv() []byte {
	c.t.Helper()
	b, err := c.tryRecv()
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return b
}

func (c *rawConn) tryRecv() ([]byte, error) {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 1<<24 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// call sends one request and reads one response frame.
func (c *rawConn) call(body string) rpcResp {
	c.t.Helper()
	c.send(body)
	return decodeResp(c.t, c.recv())
}
