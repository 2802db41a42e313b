package main

// End-to-end tests of servants on other hosts: real `mserve launcher`
// processes (on 127.0.0.1, distinct ports) starting quickstart servants for
// a real mserve.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// launcherProc is one running `mserve launcher`.
type launcherProc struct {
	t    testing.TB
	cmd  *exec.Cmd
	addr string
	log  *logBuf
	done chan struct{}
	err  error
}

// writeSecret writes a launcher secret file and returns its path.
func writeSecret(t testing.TB, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "launcher.secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startLauncher starts a launcher on a free loopback port allowing the
// given command lines, and waits until it listens. When the test ends it is
// sent SIGTERM and must exit 0 with none of its servants left.
func startLauncher(t testing.TB, secretFile string, allow ...string) *launcherProc {
	t.Helper()
	return startLauncherWith(t, false, secretFile, allow...)
}

// startLauncherWith is startLauncher, with the settings given as
// environment variables rather than flags when viaEnv is set.
func startLauncherWith(t testing.TB, viaEnv bool, secretFile string, allow ...string) *launcherProc {
	t.Helper()
	l := &launcherProc{t: t, addr: freeAddr(t), log: newLogBuf(), done: make(chan struct{})}
	args := []string{"launcher", "-log", "debug", "-log-format", "json", "-grace", "5s"}
	var env []string
	if viaEnv {
		env = []string{"MSERVE_LAUNCHER_LISTEN=" + l.addr, "MSERVE_LAUNCHER_SECRET_FILE=" + secretFile,
			"MSERVE_LAUNCHER_ALLOW=" + strings.Join(allow, "\n")}
	} else {
		args = append(args, "-listen", l.addr, "-secret-file", secretFile)
		for _, a := range allow {
			args = append(args, "-allow", a)
		}
	}
	l.cmd = exec.Command(mserveBin, args...)
	l.cmd.Env = testEnv(env...)
	l.cmd.Stderr, l.cmd.Stdout = l.log, l.log
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.err = l.cmd.Wait(); close(l.done) }()
	t.Cleanup(func() {
		pids := childPids(l.cmd.Process.Pid)
		l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.done:
			if l.err != nil {
				t.Errorf("launcher %s exited with %v after SIGTERM, want exit status 0", l.addr, l.err)
			}
		case <-time.After(30 * time.Second):
			l.cmd.Process.Kill()
			<-l.done
			t.Errorf("launcher %s did not exit within 30s of SIGTERM", l.addr)
		}
		waitGone(t, pids, 5*time.Second)
		if t.Failed() {
			t.Logf("launcher %s log:\n%s", l.addr, l.log.String())
		}
	})
	l.log.waitCount(t, "launcher listening", 1, 15*time.Second, msgIs("launcher listening"))
	return l
}

// started returns, by servant name, the pid and address of each servant
// the launcher logged as started.
func (l *launcherProc) started() map[string]startedServant {
	out := map[string]startedServant{}
	l.log.count(func(e logLine) bool {
		if e.str("msg") == "servant started" {
			pid, _ := e["pid"].(float64)
			out[e.str("servant")] = startedServant{pid: int(pid), addr: e.str("addr")}
		}
		return false
	})
	return out
}

type startedServant struct {
	pid  int
	addr string
}

// TestLaunchersE2E: mserve with two launchers gets 4 servants, 2 from each
// (round-robin), balances over them, and leaves none behind when it is
// killed outright.
func TestLaunchersE2E(t *testing.T) {
	secret := writeSecret(t, "e2e-launcher-secret")
	l1 := startLauncher(t, secret, quickstartBin)
	l2 := startLauncherWith(t, true, secret, "/opt/app/servant --mode fast", quickstartBin) // MSERVE_LAUNCHER_* variables
	p := startMserve(t, mserveOpts{
		flags:    []string{"-launchers", l1.addr + "," + l2.addr, "-launcher-secret-file", secret, "-algo", "even"},
		servants: []string{"4", quickstartBin},
	})
	p.waitServing(servantNames(4)...)

	c := dialClient(t, p.native)
	seen := map[string]bool{}
	for i := range 8 {
		resp := mustCall(t, c, "echo", []any{fmt.Sprint("hello-", i)})
		if want := fmt.Sprintf(`"hello-%d"`, i); string(resp.Result) != want {
			t.Fatalf("echo returned %s, want %s", resp.Result, want)
		}
		seen[resp.Info().Servant] = true
	}
	if len(seen) != 4 {
		t.Errorf("8 calls with -algo even reached servants %v, want all 4", seen)
	}

	st := adminStatus(t, p)
	statusAddr := map[string]string{}
	for _, s := range st.Servants {
		statusAddr[s.Name] = s.Addr
		if !s.Healthy {
			t.Errorf("/status: servant %s is not healthy", s.Name)
		}
	}
	if len(st.Servants) != 4 {
		t.Fatalf("/status lists %d servants, want 4: %+v", len(st.Servants), st.Servants)
	}

	// Round-robin: s1, s3 from the first launcher, s2, s4 from the second;
	// each is that launcher's child, at the address mserve dials.
	var pids []int
	for _, x := range []struct {
		l     *launcherProc
		names []string
	}{{l1, []string{"s1", "s3"}}, {l2, []string{"s2", "s4"}}} {
		started := x.l.started()
		children := childPids(x.l.cmd.Process.Pid)
		for _, name := range x.names {
			s, ok := started[name]
			if !ok {
				t.Fatalf("launcher %s did not start %s (it started %v)", x.l.addr, name, started)
			}
			if !slices.Contains(children, s.pid) {
				t.Errorf("servant %s (pid %d) is not a child of launcher %s (children %v)", name, s.pid, x.l.addr, children)
			}
			if statusAddr[name] != s.addr {
				t.Errorf("/status has %s at %q, the launcher started it at %q", name, statusAddr[name], s.addr)
			}
			pids = append(pids, s.pid)
		}
		if len(started) != len(x.names) {
			t.Errorf("launcher %s started %v, want only %v", x.l.addr, started, x.names)
		}
	}

	// mserve dies without a word: the launchers stop its servants.
	p.mu.Lock()
	p.stopped = true // no SIGTERM and exit 0 check at the end
	p.mu.Unlock()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	waitGone(t, pids, 15*time.Second)
	for _, l := range []*launcherProc{l1, l2} {
		l.log.waitCount(t, "mserve connection ended; stopping its servants", 1, 5*time.Second, msgIs("mserve connection ended; stopping its servants"))
		// The servants are gone; the launcher reaps them a moment later.
		deadline := time.Now().Add(5 * time.Second)
		for n := len(childPids(l.cmd.Process.Pid)); n != 0; n = len(childPids(l.cmd.Process.Pid)) {
			if time.Now().After(deadline) {
				t.Errorf("launcher %s still has %d children 5s after its servants were gone", l.addr, n)
				break
			}
			time.Sleep(20 * time.Millisecond) // poll interval: reaping has no event we can wait on
		}
	}
}

// TestLaunchersRefuse: mserve does not start when a launcher refuses, with
// the reason; bad launcher settings are usage errors.
func TestLaunchersRefuse(t *testing.T) {
	secret := writeSecret(t, "e2e-launcher-secret")
	l := startLauncher(t, secret, quickstartBin)
	wrong := writeSecret(t, "not-the-secret")
	base := []string{"-http", freeAddr(t), "-listen", freeAddr(t), "-admin", "", "-log-format", "json"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"command not allowed", []string{"-launchers", l.addr, "-launcher-secret-file", secret, "2", quickstartBin, "-slots", "2"},
			[]string{"launcher " + l.addr, "command not allowed", fmt.Sprintf("%q", quickstartBin+" -slots 2")}},
		{"wrong secret", []string{"-launchers", l.addr, "-launcher-secret-file", wrong, "2", quickstartBin},
			[]string{"launcher " + l.addr, "wrong launcher secret"}},
		{"launcher unreachable", []string{"-launchers", freeAddr(t), "-launcher-secret-file", secret, "2", quickstartBin},
			[]string{"launcher 127.0.0.1:", "connection refused"}},
		{"no servants", []string{"-launchers", l.addr, "-launcher-secret-file", secret},
			[]string{"-launchers needs servants to start"}},
		{"no secret file", []string{"-launchers", l.addr, "2", quickstartBin},
			[]string{"set -launcher-secret-file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCmd(t, nil, mserveBin, append(slices.Clone(base), tc.args...)...)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
	if n := len(childPids(l.cmd.Process.Pid)); n != 0 {
		t.Errorf("the launcher has %d servants left after refusals", n)
	}
}
