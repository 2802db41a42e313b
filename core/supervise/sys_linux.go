//go:build linux

package supervise

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts the servant in its own process group (so a terminal's
// Ctrl-C reaches mserve, which then stops servants in order) and has the
// kernel kill it if mserve dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func terminate(cmd *exec.Cmd) { syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }

func kill(cmd *exec.Cmd) { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
