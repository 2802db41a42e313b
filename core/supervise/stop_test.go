package supervise

import (
	"os/exec"
	"testing"
	"time"
)

// TestStopRightAfterStart: a Stop that comes while the process is still
// being started stops it too (SIGTERM, well within the grace period),
// rather than waiting for the process to end by itself.
func TestStopRightAfterStart(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep command")
	}
	for i := range 20 {
		p := Start(Config{Name: "s1", Command: sleep, Args: []string{"60"}, Addr: "127.0.0.1:1"})
		stopped := make(chan struct{})
		go func() { p.Stop(time.Minute); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
			t.Fatalf("round %d: Stop right after Start has not returned in 15s (grace 1m): the process was not told to stop", i)
		}
	}
}
