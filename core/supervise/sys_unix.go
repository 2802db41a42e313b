//go:build unix && !linux

package supervise

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts the servant in its own process group, so that a
// terminal's Ctrl-C reaches mserve, which then stops servants in order.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func terminate(cmd *exec.Cmd) { syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }

func kill(cmd *exec.Cmd) { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
