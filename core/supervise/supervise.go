// Package supervise runs servant processes that mserve starts itself: each
// gets its own loopback port, is restarted with backoff when it exits, and
// is stopped (SIGTERM, then SIGKILL after a grace period) when mserve stops.
// On Linux a servant also dies with mserve if mserve is killed outright.
package supervise

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/freeport"
)

// Environment variables a spawned servant receives.
const (
	EnvAddr   = "MSERVE_SERVANT_ADDR"   // host:port to listen on
	EnvPort   = "MSERVE_SERVANT_PORT"   // the port alone
	EnvName   = "MSERVE_SERVANT_NAME"   // the name mserve knows it by
	EnvSecret = "MSERVE_SERVANT_SECRET" // the secret mserve presents in its hello; the servant refuses anyone else
)

// Config describes one supervised servant.
type Config struct {
	Name       string        // e.g. "s1"
	Command    string        // program to run
	Args       []string      // its arguments; {port}, {addr} and {name} are replaced
	Env        []string      // extra environment, KEY=VALUE
	Addr       string        // loopback host:port the servant must listen on
	MinBackoff time.Duration // first wait before a restart; 0 means 100ms
	MaxBackoff time.Duration // longest wait; 0 means 10s
	ResetAfter time.Duration // a run this long resets the backoff; 0 means 10s
	Log        *zap.Logger
	OnStart    func() // called after each successful start (e.g. to make the link dial at once)
}

// FreeAddr returns a loopback address whose port was free a moment ago
// and that this process has not handed out before (freeport.Loopback). A
// servant that loses a race for its port with another process exits and
// is restarted by its supervisor.
func FreeAddr() (string, error) { return freeport.Loopback() }

// Process supervises one servant process.
type Process struct {
	cfg  Config
	log  *zap.Logger
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	cmd      *exec.Cmd
	restarts int
	pid      int
	asked    bool // the current exit was asked for (Restart)
}

// Start begins supervising: the servant is started at once and restarted
// whenever it exits, until Stop.
func Start(cfg Config) *Process {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.ResetAfter <= 0 {
		cfg.ResetAfter = 10 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	p := &Process{cfg: cfg, log: log.With(zap.String("servant", cfg.Name)), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// Pid returns the process id of the running servant, or 0.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// Restarts returns how many times the servant has been restarted.
func (p *Process) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

func (p *Process) args() []string {
	_, port, _ := net.SplitHostPort(p.cfg.Addr)
	r := strings.NewReplacer("{port}", port, "{addr}", p.cfg.Addr, "{name}", p.cfg.Name)
	out := make([]string, len(p.cfg.Args))
	for i, a := range p.cfg.Args {
		out[i] = r.Replace(a)
	}
	return out
}

func (p *Process) loop() {
	defer close(p.done)
	// Pdeathsig is delivered when the thread that started the child exits:
	// keep this goroutine on one thread for as long as it supervises.
	runtime.LockOSThread()
	_, port, _ := net.SplitHostPort(p.cfg.Addr)
	// A spawned servant is dialled: it must not register elsewhere
	// because mserve's own environment names a balancer.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MSERVE_BALANCER=") })
	env = append(env, p.cfg.Env...)
	env = append(env, EnvAddr+"="+p.cfg.Addr, EnvPort+"="+port, EnvName+"="+p.cfg.Name)
	backoff := p.cfg.MinBackoff
	for {
		cmd := exec.Command(p.cfg.Command, p.args()...)
		cmd.Env = env
		stdout, stderr := &lineLog{log: p.log, stream: "stdout"}, &lineLog{log: p.log, stream: "stderr"}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.SysProcAttr = sysProcAttr()
		cmd.WaitDelay = time.Second
		started := time.Now()
		err := cmd.Start()
		if err == nil {
			p.mu.Lock()
			p.cmd, p.pid = cmd, cmd.Process.Pid
			p.mu.Unlock()
			select {
			case <-p.stop: // Stop came while the process was being started, and did not see it
				terminate(cmd)
			default:
			}
			p.log.Info("servant started", zap.Int("pid", cmd.Process.Pid), zap.String("addr", p.cfg.Addr))
			if p.cfg.OnStart != nil {
				p.cfg.OnStart()
			}
			err = cmd.Wait()
			stdout.flush() // a last line without a newline
			stderr.flush()
			p.mu.Lock()
			p.cmd, p.pid = nil, 0
			p.mu.Unlock()
		}
		select {
		case <-p.stop:
			return
		default:
		}
		ran := time.Since(started)
		if ran >= p.cfg.ResetAfter {
			backoff = p.cfg.MinBackoff
		}
		p.mu.Lock()
		asked := p.asked
		p.asked = false
		p.mu.Unlock()
		if asked {
			backoff = p.cfg.MinBackoff
			p.log.Info("servant stopped for a restart; starting it again", zap.Duration("ran", ran))
		} else {
			p.log.Warn("servant exited; restarting", zap.Error(describeExit(err)), zap.Duration("ran", ran), zap.Duration("backoff", backoff))
		}
		t := time.NewTimer(backoff)
		select {
		case <-p.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, p.cfg.MaxBackoff)
		p.mu.Lock()
		p.restarts++
		p.mu.Unlock()
	}
}

func describeExit(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// Stop ends supervision: the servant gets SIGTERM, and SIGKILL if it has not
// exited after grace. Stop returns when it is gone.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.stop:
		<-p.done
		return
	default:
		close(p.stop)
	}
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil {
		terminate(cmd)
	}
	t := time.NewTimer(grace)
	select {
	case <-p.done:
		t.Stop()
		return
	case <-t.C:
	}
	// Still running: the process seen above, or one that was being started
	// when Stop came (the loop terminates that one itself).
	p.mu.Lock()
	cmd = p.cmd
	p.mu.Unlock()
	if cmd != nil {
		p.log.Warn("servant did not stop in time; killing it", zap.Duration("grace", grace))
		kill(cmd)
	}
	<-p.done
}

// Restart stops the servant's process gracefully (SIGTERM); the supervisor
// starts it again as after any exit.
func (p *Process) Restart() error {
	p.mu.Lock()
	cmd := p.cmd
	p.asked = cmd != nil
	p.mu.Unlock()
	if cmd == nil {
		return errors.New("servant is not running")
	}
	terminate(cmd)
	return nil
}

// Kill kills the servant's process now (for tests and maintenance); the
// supervisor restarts it as after any other exit.
func (p *Process) Kill() error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return errors.New("servant is not running")
	}
	return cmd.Process.Kill()
}

// lineLog writes a servant's output to the log, one entry per line.
type lineLog struct {
	log    *zap.Logger
	stream string
	buf    []byte
}

func (l *lineLog) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line without newline
		l.emit(l.buf)
		l.buf = nil
	}
	return len(b), nil
}

// flush emits what is left after the last newline. Call it once the
// process has exited (no Write runs concurrently then).
func (l *lineLog) flush() {
	l.emit(l.buf)
	l.buf = nil
}

func (l *lineLog) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) > 0 {
		l.log.Info("servant output", zap.String("stream", l.stream), zap.ByteString("line", line))
	}
}

// ParseCount parses the N of "mserve N COMMAND": a positive number.
func ParseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("servant count must be a positive number, got %q", s)
	}
	return n, nil
}

// StopAll stops every process, in parallel, each within grace.
func StopAll(ps []*Process, grace time.Duration) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(grace) }()
	}
	wg.Wait()
}
