package dispatchplugin_test

// End to end: build mserve, the quickstart servant and myplugin; start
// mserve with the plugin's algorithm over one servant tagged "fast" and two
// local ones; make real calls and check their info records; stop mserve
// with SIGTERM and check that it exits 0 and leaves no plugin or servant
// process behind.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/freeport"
)

var mserveBin, quickstartBin, pluginBin string

func TestMain(m *testing.M) { os.Exit(buildAndRun(m)) }

func buildAndRun(m *testing.M) int {
	if runtime.GOOS != "linux" {
		fmt.Println("skipping: the end-to-end test reads /proc")
		return 0
	}
	dir, err := os.MkdirTemp("", "mserve-dispatch-plugin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	mserveBin = filepath.Join(dir, "mserve")
	quickstartBin = filepath.Join(dir, "quickstart")
	pluginBin = filepath.Join(dir, "myplugin")
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "../../cmd/mserve", "../quickstart", "./myplugin")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	return m.Run()
}

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

// env is this process's environment without MSERVE_* settings.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MSERVE_") && !strings.HasPrefix(kv, "MYPLUGIN_") && !strings.HasPrefix(kv, "GORACE=") {
			out = append(out, kv)
		}
	}
	if raceEnabled {
		out = append(out, "GORACE=atexit_sleep_ms=0")
	}
	return append(out, extra...)
}

// freeAddr returns a loopback address whose port was free a moment ago
// and that this process has not handed out before.
func freeAddr(t *testing.T) string { return freeport.Test(t) }

// logLines collects a process's JSON log lines.
type logLines struct {
	mu    sync.Mutex
	raw   bytes.Buffer
	lines []map[string]any
	part  []byte
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(p)
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		var m map[string]any
		if json.Unmarshal(l.part[:i], &m) == nil {
			l.lines = append(l.lines, m)
		}
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

func (l *logLines) count(msg string, kv ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, m := range l.lines {
		if m["msg"] != msg {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(m[kv[i]]) != kv[i+1] {
				continue next
			}
		}
		n++
	}
	return n
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// poll waits for cond, bounded.
func poll(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// children returns pid's child processes.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func exe(pid int) string {
	p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return strings.TrimSuffix(p, " (deleted)")
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// start runs a process, killed when the test ends if still running.
func start(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return done
}

func TestMserveWithMyPlugin(t *testing.T) {
	// One servant started by hand, named and tagged "fast" on mserve's
	// command line; two more started by mserve.
	fastAddr := freeAddr(t)
	fast := exec.Command(quickstartBin, "-addr", fastAddr)
	fast.Env = env()
	start(t, fast)

	native := freeAddr(t)
	logs := &logLines{}
	args := []string{"-http", "", "-listen", native, "-log-format", "json",
		"-plugins", pluginBin, "-algo", "fewest",
		"-servants", "fast@" + fastAddr + "?tag=fast", "2", quickstartBin}
	ms := exec.Command(mserveBin, args...)
	ms.Env = env()
	ms.Stderr = logs
	ms.Stdout = logs
	exited := start(t, ms)
	defer func() {
		if t.Failed() {
			t.Logf("mserve %s\n%s", strings.Join(args, " "), logs)
		}
	}()
	poll(t, "mserve starts with the plugin's algorithm", 30*time.Second, func() bool {
		return logs.count("mserve started", "algo", "fewest") == 1
	})
	if logs.count("plugin started", "plugin", "myplugin", "algorithms", "1") != 1 {
		t.Error(`no "plugin started" log entry for myplugin`)
	}
	poll(t, "three servants up", 30*time.Second, func() bool { return logs.count("servant up") >= 3 })

	var plugin []int
	for _, pid := range children(ms.Process.Pid) {
		if exe(pid) == pluginBin {
			plugin = append(plugin, pid)
		}
	}
	if len(plugin) != 1 {
		t.Fatalf("want one myplugin process under mserve, found %v", plugin)
	}
	servants := slices.DeleteFunc(children(ms.Process.Pid), func(pid int) bool { return pid == plugin[0] })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, native)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// One call at a time: the tagged servant is always free, so it takes
	// them all.
	for _, sym := range []string{"IBM", "MSFT", "AAPL", "KX"} {
		resp, err := c.Call(ctx, "echo", []any{sym})
		if err != nil {
			t.Fatalf("echo %s: %v", sym, err)
		}
		if string(resp.Result) != strconv.Quote(sym) {
			t.Errorf("echo %s = %s", sym, resp.Result)
		}
		info := resp.Info()
		if info.Servant != "fast" || info.Route != sym || info.ElapsedNs <= 0 || info.ExecutionNs <= 0 ||
			info.ElapsedNs < info.ExecutionNs || info.Backlog != 0 || info.Remaining != 0 {
			t.Errorf("echo %s: info %s", sym, resp.InfoRaw)
		}
	}

	// Three calls at once: the first takes the tagged servant, the others
	// go to the untagged ones with the fewest pending calls.
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Call(ctx, "sleep", []any{300})
			if err != nil {
				t.Errorf("sleep %d: %v", i, err)
				return
			}
			info := resp.Info()
			if info.ExecutionNs < int64(300*time.Millisecond) {
				t.Errorf("sleep: info %s", resp.InfoRaw)
			}
			mu.Lock()
			got[info.Servant]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(got) != 3 || got["fast"] != 1 {
		t.Errorf("three concurrent calls went to %v, want one each to fast and the two others", got)
	}
	c.Close()

	// SIGTERM: mserve exits 0 and stops its plugin and servants.
	if err := ms.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Errorf("mserve exited with %v, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mserve did not exit within 30s of SIGTERM")
	}
	if logs.count("mserve stopped") != 1 {
		t.Error(`no "mserve stopped" log entry`)
	}
	for _, pid := range append(plugin, servants...) {
		poll(t, fmt.Sprintf("process %d (%s) gone after mserve stopped", pid, exe(pid)), 10*time.Second, func() bool { return !alive(pid) })
	}
}
