//go:build unix

package supervise

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/internal/testkit"
)

const failsafe = 10 * time.Second

// start supervises cfg with an observed logger and stops it when the test
// ends.
func start(t *testing.T, cfg Config) (*Process, *observer.ObservedLogs) {
	t.Helper()
	var logs *observer.ObservedLogs
	cfg.Log, logs = testkit.Observed(zapcore.DebugLevel)
	if cfg.Name == "" {
		cfg.Name = "s1"
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:7001"
	}
	p := Start(cfg)
	t.Cleanup(func() { stopWithin(t, p, failsafe) })
	return p, logs
}

// stopWithin stops p and fails the test if Stop does not return in time;
// it then kills the process so that nothing is left behind.
func stopWithin(t *testing.T, p *Process, d time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	done := make(chan struct{})
	go func() { p.Stop(time.Second); close(done) }()
	select {
	case <-done:
		return time.Since(t0)
	case <-time.After(d):
		t.Errorf("Stop did not return within %v", d)
		p.Kill() // the supervisor sees its stop once the process is gone
		select {
		case <-done:
		case <-time.After(failsafe):
			t.Error("Stop did not return even after the servant was killed")
		}
		return time.Since(t0)
	}
}

// waitLogs waits until at least n entries with message msg were logged
// and returns them all.
func waitLogs(t *testing.T, logs *observer.ObservedLogs, msg string, n int) []observer.LoggedEntry {
	t.Helper()
	deadline := time.After(failsafe)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if es := logs.FilterMessage(msg).All(); len(es) >= n {
			return es
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %d %q log entries; have %v", n, msg, logs.All())
		}
	}
}

// outputLines returns the servant output lines logged so far.
func outputLines(logs *observer.ObservedLogs, stream string) []string {
	var out []string
	for _, e := range logs.FilterMessage("servant output").All() {
		m := e.ContextMap()
		if stream == "" || m["stream"] == stream {
			out = append(out, m["line"].(string))
		}
	}
	return out
}

func waitLine(t *testing.T, logs *observer.ObservedLogs, want string) {
	t.Helper()
	deadline := time.After(failsafe)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		for _, l := range outputLines(logs, "") {
			if l == want {
				return
			}
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("line %q never logged; have %q", want, outputLines(logs, ""))
		}
	}
}

// alive reports whether a process with pid exists (and is not a zombie
// we would have reaped).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// pidOf waits for p's process to be known and returns its pid: the
// servant's first output can come before the supervisor has recorded it,
// and alive(0) is true (kill 0 addresses the test's own process group).
func pidOf(t *testing.T, p *Process) int {
	t.Helper()
	var pid int
	testkit.WaitFor(t, func() bool { pid = p.Pid(); return pid != 0 }, "the servant's pid")
	return pid
}

// sh runs script with /bin/sh, forever unless it exits.
func sh(script string, args ...string) (string, []string) {
	return "/bin/sh", append([]string{"-c", script, "sh"}, args...)
}

func TestParseCount(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"1", 1, true},
		{"3", 3, true},
		{"64", 64, true},
		{"0", 0, false},
		{"-2", 0, false},
		{"x", 0, false},
		{"", 0, false},
		{" 3", 0, false},
		{"2.5", 0, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			n, err := ParseCount(tt.in)
			if tt.ok {
				if err != nil || n != tt.want {
					t.Errorf("ParseCount = %d, %v; want %d", n, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "positive number") || !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
				t.Errorf("ParseCount = %d, %v; want an error quoting the input", n, err)
			}
		})
	}
}

func TestFreeAddr(t *testing.T) {
	seen := map[string]bool{}
	for i := range 3 {
		t.Run(fmt.Sprint("address ", i), func(t *testing.T) {
			addr, err := FreeAddr()
			if err != nil {
				t.Fatal(err)
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil || host != "127.0.0.1" || port == "0" {
				t.Fatalf("FreeAddr = %q, want a loopback address with a port", addr)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("the address is not bindable: %v", err)
			}
			ln.Close()
			seen[addr] = true
		})
	}
}

func TestServantGetsItsEnvironmentAndArguments(t *testing.T) {
	cmd, args := sh(`echo "env $MSERVE_SERVANT_ADDR|$MSERVE_SERVANT_PORT|$MSERVE_SERVANT_NAME|$MSERVE_SERVANT_SECRET|$EXTRA"
echo "args $1|$2|$3|{name}"
echo "balancer [$MSERVE_BALANCER]"
exec sleep 1000`, "--listen={addr}", "{port}", "{name}")
	t.Setenv("MSERVE_BALANCER", "10.0.0.1:5001") // mserve's own environment
	var started atomic.Int32
	p, logs := start(t, Config{
		Name: "gpu1", Command: cmd, Args: args, Addr: "127.0.0.1:7123",
		Env:     []string{EnvSecret + "=shh", "EXTRA=x"},
		OnStart: func() { started.Add(1) },
	})
	tests := []struct {
		name string
		line string
	}{
		{"MSERVE_SERVANT_ADDR, PORT, NAME and SECRET and extra variables are set", "env 127.0.0.1:7123|7123|gpu1|shh|x"},
		{"{addr}, {port} and {name} are replaced in the arguments", "args --listen=127.0.0.1:7123|7123|gpu1|gpu1"},
		{"MSERVE_BALANCER in mserve's environment is not passed on", "balancer []"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { waitLine(t, logs, tt.line) })
	}
	t.Run("the process is running and known", func(t *testing.T) {
		if started.Load() != 1 {
			t.Errorf("OnStart called %d times", started.Load())
		}
		pid := p.Pid()
		if pid == 0 || !alive(pid) {
			t.Errorf("Pid() = %d, alive %v", pid, alive(pid))
		}
		if p.Restarts() != 0 {
			t.Errorf("Restarts() = %d", p.Restarts())
		}
		e := waitLogs(t, logs, "servant started", 1)[0]
		if e.ContextMap()["servant"] != "gpu1" || e.ContextMap()["pid"] != int64(pid) || e.ContextMap()["addr"] != "127.0.0.1:7123" {
			t.Errorf("start log entry %v", e.ContextMap())
		}
	})
}

func TestOutputReachesTheLog(t *testing.T) {
	cmd, args := sh(`printf 'out one\nout two\r\n\n'; printf 'err one\n' >&2; printf 'partial '; printf 'line\n'; printf 'last without newline'; exit 0`)
	_, logs := start(t, Config{Command: cmd, Args: args, MinBackoff: time.Hour})
	waitLogs(t, logs, "servant exited; restarting", 1)
	tests := []struct {
		name   string
		stream string
		want   []string
	}{
		{"stdout lines, one entry each, CR trimmed, empty lines skipped, writes joined into lines", "stdout",
			[]string{"out one", "out two", "partial line", "last without newline"}},
		{"stderr lines are tagged stderr", "stderr", []string{"err one"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := outputLines(logs, tt.stream)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("%s lines %q, want %q", tt.stream, got, tt.want)
			}
		})
	}
}

func TestLineLog(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"one line", []string{"a\n"}, []string{"a"}},
		{"a line split over writes", []string{"he", "llo\nwor", "ld\n"}, []string{"hello", "world"}},
		{"several lines in one write", []string{"a\nb\nc\n"}, []string{"a", "b", "c"}},
		{"CRLF", []string{"a\r\nb\r\n"}, []string{"a", "b"}},
		{"empty lines are skipped", []string{"\n\n\r\na\n"}, []string{"a"}},
		{"a partial line waits for its end", []string{"abc"}, nil},
		{"a very long line without newline is emitted in pieces", []string{strings.Repeat("x", 64<<10+1)}, []string{strings.Repeat("x", 64<<10+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, logs := testkit.Observed(zapcore.InfoLevel)
			l := &lineLog{log: log, stream: "stdout"}
			for _, w := range tt.writes {
				if n, err := l.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			got := outputLines(logs, "stdout")
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("lines %q, want %q", trunc(got), trunc(tt.want))
			}
		})
	}
}

func trunc(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		if len(l) > 20 {
			l = l[:20] + fmt.Sprintf("…(%d bytes)", len(l))
		}
		out[i] = l
	}
	return out
}

func backoffs(logs *observer.ObservedLogs) []time.Duration {
	var out []time.Duration
	for _, e := range logs.FilterMessage("servant exited; restarting").All() {
		out = append(out, e.ContextMap()["backoff"].(time.Duration))
	}
	return out
}

func TestRestartBackoffGrowsThenResets(t *testing.T) {
	// The command does not exist yet: every start fails at once and the
	// backoff doubles up to MaxBackoff. Then it appears, runs longer than
	// ResetAfter, and the next restart waits MinBackoff again.
	dir := t.TempDir()
	path := filepath.Join(dir, "servant.sh")
	const min, max, reset = 5 * time.Millisecond, 20 * time.Millisecond, 500 * time.Millisecond
	p, logs := start(t, Config{Command: path, MinBackoff: min, MaxBackoff: max, ResetAfter: reset})
	waitLogs(t, logs, "servant exited; restarting", 5)
	t.Run("the backoff doubles up to the maximum", func(t *testing.T) {
		got := backoffs(logs)[:5]
		want := []time.Duration{min, 2 * min, max, max, max}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("backoffs %v, want %v", got, want)
		}
		if p.Restarts() < 4 {
			t.Errorf("Restarts() = %d after 5 exits", p.Restarts())
		}
	})
	// Install a servant that runs for longer than ResetAfter, then exits.
	tmp := filepath.Join(dir, "tmp.sh")
	os.WriteFile(tmp, []byte("#!/bin/sh\necho up\nexec sleep 0.6\n"), 0o755)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitLine(t, logs, "up")
	before := len(backoffs(logs))
	waitLogs(t, logs, "servant exited; restarting", before+1)
	t.Run("a run longer than ResetAfter resets the backoff", func(t *testing.T) {
		bs := backoffs(logs)
		if got := bs[before]; got != min {
			t.Errorf("backoff after a long run = %v, want %v (backoffs %v)", got, min, bs)
		}
	})
}

func TestKillAndRestart(t *testing.T) {
	cmd, args := sh(`exec sleep 1000`)
	const min = 5 * time.Millisecond
	p, logs := start(t, Config{Command: cmd, Args: args, MinBackoff: min, MaxBackoff: time.Second, ResetAfter: time.Hour})
	started := 0
	nextPid := func(old int) int {
		t.Helper()
		started++
		waitLogs(t, logs, "servant started", started)
		pid := 0
		testkit.WaitFor(t, func() bool { pid = p.Pid(); return pid != 0 && pid != old }, "a new pid")
		return pid
	}
	pid := nextPid(0)
	steps := []struct {
		name    string
		act     func() error
		backoff time.Duration // the backoff logged for this exit; 0 for an asked restart
	}{
		{"Kill: restarted after MinBackoff", p.Kill, min},
		{"Kill again: the backoff doubled", p.Kill, 2 * min},
		{"Restart: SIGTERM, started again, backoff reset", p.Restart, 0},
		{"Kill after the restart: the backoff grew from MinBackoff again", p.Kill, 2 * min},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			exits := len(backoffs(logs))
			asked := logs.FilterMessage("servant stopped for a restart; starting it again").Len()
			if err := st.act(); err != nil {
				t.Fatal(err)
			}
			old := pid
			pid = nextPid(old)
			if alive(old) {
				t.Errorf("the old process %d is still alive", old)
			}
			if p.Restarts() != i+1 {
				t.Errorf("Restarts() = %d, want %d", p.Restarts(), i+1)
			}
			if st.backoff == 0 {
				if logs.FilterMessage("servant stopped for a restart; starting it again").Len() != asked+1 || len(backoffs(logs)) != exits {
					t.Error("an asked restart was not logged as one")
				}
				return
			}
			bs := backoffs(logs)
			if len(bs) != exits+1 || bs[exits] != st.backoff {
				t.Errorf("backoffs %v, want the new one %v", bs, st.backoff)
			}
		})
	}
}

func TestStop(t *testing.T) {
	t.Run("a servant that exits on SIGTERM stops at once", func(t *testing.T) {
		cmd, args := sh(`echo ready; exec sleep 1000`)
		p, logs := start(t, Config{Command: cmd, Args: args})
		waitLine(t, logs, "ready")
		pid := pidOf(t, p)
		done := make(chan struct{})
		t0 := time.Now()
		go func() { p.Stop(time.Hour); close(done) }()
		select {
		case <-done:
		case <-time.After(failsafe):
			t.Fatal("Stop did not return")
		}
		if time.Since(t0) > failsafe {
			t.Error("Stop waited for the grace period")
		}
		if alive(pid) {
			t.Errorf("process %d still alive", pid)
		}
		if logs.FilterMessage("servant did not stop in time; killing it").Len() != 0 {
			t.Error("a servant that stopped on SIGTERM was killed")
		}
		if logs.FilterMessage("servant exited; restarting").Len() != 0 {
			t.Error("the stopped servant was restarted")
		}
	})
	t.Run("a servant ignoring SIGTERM is killed after the grace period", func(t *testing.T) {
		cmd, args := sh(`trap '' TERM; echo ready; exec sleep 1000`)
		p, logs := start(t, Config{Command: cmd, Args: args})
		waitLine(t, logs, "ready")
		pid := pidOf(t, p)
		const grace = 100 * time.Millisecond
		t0 := time.Now()
		done := make(chan struct{})
		go func() { p.Stop(grace); close(done) }()
		select {
		case <-done:
		case <-time.After(failsafe):
			t.Fatal("Stop did not return")
		}
		if took := time.Since(t0); took < grace {
			t.Errorf("Stop returned after %v, before the grace period", took)
		}
		if e := logs.FilterMessage("servant did not stop in time; killing it").All(); len(e) != 1 || e[0].ContextMap()["grace"] != grace {
			t.Errorf("kill log entries %v", e)
		}
		if alive(pid) {
			t.Errorf("process %d still alive", pid)
		}
	})
	t.Run("Stop while waiting to restart returns at once", func(t *testing.T) {
		p, logs := start(t, Config{Command: filepath.Join(t.TempDir(), "missing"), MinBackoff: time.Hour})
		waitLogs(t, logs, "servant exited; restarting", 1)
		stopWithin(t, p, failsafe)
	})
	t.Run("Stop right after Start stops the servant", func(t *testing.T) {
		// Stop may come before the supervisor has started the process
		// (mserve shutting down during its launch): the process it then
		// starts must not be left running with Stop waiting for it.
		cmd, args := sh(`exec sleep 1000`)
		p := Start(Config{Name: "s1", Command: cmd, Args: args, Addr: "127.0.0.1:7001"})
		hung := make(chan int, 1)
		watchdog := time.AfterFunc(5*time.Second, func() {
			hung <- p.Pid()
			p.Kill() // lets Stop return
		})
		p.Stop(time.Second)
		watchdog.Stop()
		select {
		case pid := <-hung:
			t.Errorf("Stop did not return within 5s: the servant (pid %d) was started after Stop and ran on until killed", pid)
		default:
		}
	})
	t.Run("Stop twice returns both times", func(t *testing.T) {
		cmd, args := sh(`echo ready; exec sleep 1000`)
		p, logs := start(t, Config{Command: cmd, Args: args})
		waitLine(t, logs, "ready")
		stopWithin(t, p, failsafe)
		stopWithin(t, p, failsafe)
	})
	t.Run("Restart and Kill of a stopped servant are errors", func(t *testing.T) {
		cmd, args := sh(`echo ready; exec sleep 1000`)
		p, logs := start(t, Config{Command: cmd, Args: args})
		waitLine(t, logs, "ready")
		stopWithin(t, p, failsafe)
		if err := p.Restart(); err == nil {
			t.Error("Restart of a stopped servant succeeded")
		}
		if err := p.Kill(); err == nil {
			t.Error("Kill of a stopped servant succeeded")
		}
		if p.Pid() != 0 {
			t.Errorf("Pid() = %d after Stop", p.Pid())
		}
	})
	t.Run("StopAll stops every servant", func(t *testing.T) {
		var ps []*Process
		var pids []int
		for i := range 3 {
			cmd, args := sh(`echo ready; exec sleep 1000`)
			p, logs := start(t, Config{Name: fmt.Sprint("s", i), Command: cmd, Args: args})
			waitLine(t, logs, "ready")
			ps = append(ps, p)
			pids = append(pids, pidOf(t, p))
		}
		done := make(chan struct{})
		go func() { StopAll(ps, time.Second); close(done) }()
		select {
		case <-done:
		case <-time.After(failsafe):
			t.Fatal("StopAll did not return")
		}
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("process %d still alive", pid)
			}
		}
	})
}

func TestStopKillsTheWholeProcessGroup(t *testing.T) {
	// The servant is a shell with a child: stopping it ends both.
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	cmd, args := sh(`sleep 1000 & echo $! > ` + pidFile + `; echo ready; wait`)
	p, logs := start(t, Config{Command: cmd, Args: args})
	waitLine(t, logs, "ready")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if child == 0 || !alive(child) {
		t.Fatalf("child %q not running", b)
	}
	stopWithin(t, p, failsafe)
	testkit.WaitFor(t, func() bool { return !alive(child) || zombie(child) }, "the child to die")
}

// zombie reports whether pid has exited and waits for its parent to reap
// it (the sleep's parent, the shell, is gone: init reaps it eventually).
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}
