package dispatchlua_test

// The walkthrough of README.md, end to end: build mserve and the
// quickstart servant, start mserve with prefer.lua, make calls with
// "mserve call" and read the servant from the info records, edit the
// script while mserve runs and see the routing change, break it and see
// the last good version stay, stop mserve with SIGTERM.

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logs collects mserve's JSON log lines as they come.
type logs struct {
	mu      sync.Mutex
	entries []map[string]any
	changed chan struct{} // closed and replaced on each new entry
}

func (l *logs) add(e map[string]any) {
	l.mu.Lock()
	l.entries = append(l.entries, e)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// wait returns the first entry for which ok holds, waiting for new
// entries up to timeout.
func (l *logs) wait(t *testing.T, timeout time.Duration, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		l.mu.Lock()
		for ; seen < len(l.entries); seen++ {
			if ok(l.entries[seen]) {
				e := l.entries[seen]
				l.mu.Unlock()
				return e
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log entry %s within %v", what, timeout)
		}
	}
}

func (l *logs) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.entries {
		if e["msg"] == msg {
			n++
		}
	}
	return n
}

func build(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

var servantRE = regexp.MustCompile(`(?m)^info:.*\bservant=(\S+)`)

// call runs "mserve call -addr addr proc1 sym" and returns the servant
// named in the info record.
func call(t *testing.T, mserve, addr, sym string) string {
	t.Helper()
	out, err := exec.Command(mserve, "call", "-addr", addr, "-wait", "10s", "proc1", sym).Output()
	if err != nil {
		t.Fatalf("mserve call proc1 %s: %v\n%s", sym, err, out)
	}
	m := servantRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no servant in the info record:\n%s", out)
	}
	return string(m[1])
}

func TestWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs mserve")
	}
	bin := t.TempDir()
	mserve := build(t, bin, "mserve", "../../cmd/mserve")
	servant := build(t, bin, "quickstart-servant", "../quickstart")

	// The script, in a folder of its own that the test may edit.
	scripts := t.TempDir()
	src, err := os.ReadFile("prefer.lua")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(scripts, "prefer.lua")
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(mserve, "-listen", "127.0.0.1:0", "-http", "", "-admin", "", "-log-format", "json",
		"-plugins", scripts, "-algo", "prefer", "3", servant)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var l = &logs{changed: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e map[string]any
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				l.add(e)
			}
		}
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	})

	started := l.wait(t, 30*time.Second, `"mserve started"`, func(e map[string]any) bool { return e["msg"] == "mserve started" })
	addr, _ := started["native"].(string)
	if addr == "" {
		t.Fatalf("no native address in %v", started)
	}
	// Wait for the three servants, so that the script has all of them to
	// choose from (a call made earlier goes to whichever is up).
	for _, name := range []string{"s1", "s2", "s3"} {
		l.wait(t, 30*time.Second, "servant "+name+" up", func(e map[string]any) bool { return e["msg"] == "servant up" && e["servant"] == name })
	}

	// prefer.lua sends every call to s2 while it is free.
	for _, sym := range []string{"IBM", "MSFT", "KX"} {
		if got := call(t, mserve, addr, sym); got != "s2" {
			t.Fatalf("proc1 %s ran on %s, want s2 (PREFERRED)", sym, got)
		}
	}

	// Edit the script while mserve runs: s3 wins from now on. mserve
	// notices within about a second; call until it shows, bounded.
	edited := strings.Replace(string(src), `local PREFERRED = "s2"`, `local PREFERRED = "s3" -- edited`, 1)
	if edited == string(src) {
		t.Fatal(`prefer.lua has no line local PREFERRED = "s2"`)
	}
	if err := os.WriteFile(script, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	calls := 0
	for call(t, mserve, addr, "IBM") != "s3" {
		calls++
		if time.Now().After(deadline) {
			t.Fatalf("after %d calls over 30s, calls still do not go to s3", calls)
		}
	}
	for range 3 {
		if got := call(t, mserve, addr, "IBM"); got != "s3" {
			t.Fatalf("after the edit, a call ran on %s, want s3", got)
		}
	}
	if l.count("scripts reloaded") == 0 {
		t.Errorf(`no "scripts reloaded" in the log`)
	}

	// A broken edit: mserve logs the error with its line and keeps the
	// last good version.
	if err := os.WriteFile(script, []byte(edited+"\nmserve.picker(\"broken\", function(call)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := l.wait(t, 30*time.Second, `"script not reloaded"`, func(e map[string]any) bool { return e["msg"] == "script not reloaded" })
	if msg, _ := e["error"].(string); !strings.Contains(msg, "prefer.lua") || !strings.Contains(msg, "keeping the last version") {
		t.Errorf("logged %q", msg)
	}
	if got := call(t, mserve, addr, "IBM"); got != "s3" {
		t.Errorf("after a broken edit, a call ran on %s, want s3 (the last good version)", got)
	}

	// Stop: SIGTERM, exit status 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped = true
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Errorf("mserve exited with %v, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("mserve did not stop within 30s of SIGTERM")
	}
	if l.count("mserve stopped") != 1 {
		t.Errorf(`no "mserve stopped" in the log`)
	}
}
