// Package pluginhost runs compiled dispatch plugins (binaries built with
// sdk/plugin) for mserve: it starts each one with hashicorp/go-plugin over
// gRPC, learns what it provides, sends its output to mserve's log, and
// restarts it with backoff when it crashes, hangs or answers garbage.
// Meanwhile decisions fall back to a built-in algorithm: no call waits on a
// dead plugin, none is lost or answered twice.
package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/plugin"
)

// Defaults.
const (
	DefaultDeadline   = 100 * time.Millisecond // one decision
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
	failuresToRestart = 3 // failed decisions in a row that restart the plugin
)

// Config sets up a Host.
type Config struct {
	Path       string        // the plugin binary
	Deadline   time.Duration // time one decision (a batch) may take
	MinBackoff time.Duration // first wait before a restart
	MaxBackoff time.Duration // longest wait
	Log        *zap.Logger
	Env        []string // KEY=value pairs added to the plugin's environment, after mserve's own
}

// Stats count a plugin's life.
type Stats struct {
	Decisions atomic.Uint64 // batches decided by the plugin
	Calls     atomic.Uint64 // calls in those batches
	Fallbacks atomic.Uint64 // rounds decided by the fallback instead
	Failures  atomic.Uint64 // failed decisions: errors, deadline overruns, garbage
	Restarts  atomic.Uint64 // times the plugin process was replaced
}

// Host runs one plugin binary.
type Host struct {
	cfg      Config
	Name     string // the binary's base name
	log      *zap.Logger
	manifest *plugin.Manifest
	Stats    Stats

	mu      sync.Mutex
	client  *goplugin.Client
	stub    *plugin.Client
	healthy atomic.Bool
	streak  atomic.Int32

	restart chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

// Start starts the plugin and asks what it provides. A plugin that does not
// start, speaks another protocol version, or provides nothing is an error.
func Start(cfg Config) (*Host, error) {
	if cfg.Deadline <= 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	name := filepath.Base(cfg.Path)
	h := &Host{cfg: cfg, Name: name, log: cfg.Log.With(zap.String("plugin", name)), restart: make(chan struct{}, 1), done: make(chan struct{})}
	client, stub, m, err := h.launch()
	if err != nil {
		return nil, err
	}
	if len(m.Algorithms) == 0 && len(m.Routes) == 0 {
		client.Kill()
		return nil, fmt.Errorf("plugin %s provides no algorithm and no routing function", cfg.Path)
	}
	h.client, h.stub, h.manifest = client, stub, m
	h.healthy.Store(true)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	go h.supervise()
	h.log.Info("plugin started", zap.Int("algorithms", len(m.Algorithms)), zap.Int("routes", len(m.Routes)))
	return h, nil
}

// command is the plugin's process: mserve's environment plus Config.Env.
func (h *Host) command() *exec.Cmd {
	cmd := exec.Command(h.cfg.Path)
	if len(h.cfg.Env) > 0 {
		cmd.Env = append(os.Environ(), h.cfg.Env...)
	}
	return cmd
}

// launch starts the process and describes it.
func (h *Host) launch() (*goplugin.Client, *plugin.Client, *plugin.Manifest, error) {
	out := &lineLog{log: h.log, own: "plugin." + h.Name + ":"}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{plugin.ProtocolVersion: {plugin.PluginName: &plugin.GRPCPlugin{}}},
		Cmd:              h.command(),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		StartTimeout:     10 * time.Second,
		// Debug, because go-plugin relays the plugin's plain stderr lines
		// (its log package, its start-up errors) at debug level; lineLog
		// raises those to info.
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "plugin", Output: out, Level: hclog.Debug, DisableTime: true,
		}),
		SyncStdout: out,
		SyncStderr: out,
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		if strings.Contains(strings.ToLower(err.Error()), "incompatible api version") {
			return nil, nil, nil, fmt.Errorf("plugin %s: %v; this mserve speaks dispatch plugin protocol %d: rebuild the plugin against its sdk/plugin",
				h.cfg.Path, err, plugin.ProtocolVersion)
		}
		return nil, nil, nil, fmt.Errorf("plugin %s: %w", h.cfg.Path, err)
	}
	raw, err := rpc.Dispense(plugin.PluginName)
	if err != nil {
		client.Kill()
		return nil, nil, nil, fmt.Errorf("plugin %s: %w", h.cfg.Path, err)
	}
	stub := raw.(*plugin.Client)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := stub.Describe(ctx)
	if err != nil {
		client.Kill()
		return nil, nil, nil, fmt.Errorf("plugin %s: describe: %w", h.cfg.Path, err)
	}
	if m.Protocol != plugin.ProtocolVersion {
		client.Kill()
		return nil, nil, nil, fmt.Errorf("plugin %s speaks dispatch plugin protocol %d, this mserve %d", h.cfg.Path, m.Protocol, plugin.ProtocolVersion)
	}
	return client, stub, m, nil
}

// Manifest returns what the plugin provides.
func (h *Host) Manifest() *plugin.Manifest { return h.manifest }

// Healthy reports whether the plugin is up and deciding.
func (h *Host) Healthy() bool { return h.healthy.Load() }

// Deadline returns the time one decision may take.
func (h *Host) Deadline() time.Duration { return h.cfg.Deadline }

// current returns the stub to call, or nil while the plugin is down.
func (h *Host) current() *plugin.Client {
	if !h.healthy.Load() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stub
}

// succeeded notes a good decision.
func (h *Host) succeeded() { h.streak.Store(0) }

// failed notes a failed decision; a few in a row, or a dead process,
// restart the plugin.
func (h *Host) failed(err error) {
	h.Stats.Failures.Add(1)
	if !h.healthy.Load() {
		return // already being restarted
	}
	if h.streak.Add(1) >= failuresToRestart || h.exited() {
		h.streak.Store(0)
		h.log.Warn("plugin failing; restarting it", zap.Error(err))
		select {
		case h.restart <- struct{}{}:
		default:
		}
	}
}

func (h *Host) exited() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.client == nil || h.client.Exited()
}

// supervise watches the process and restarts it when it dies or is
// declared faulty, with exponential backoff.
func (h *Host) supervise() {
	defer close(h.done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	backoff := h.cfg.MinBackoff
	for {
		select {
		case <-h.ctx.Done():
			h.healthy.Store(false)
			killClient(h.takeClient())
			return
		case <-h.restart:
		case <-tick.C:
			if !h.exited() {
				continue
			}
			h.log.Warn("plugin process exited")
		}
		h.healthy.Store(false)
		killClient(h.takeClient())
		for {
			select {
			case <-h.ctx.Done():
				return
			case <-time.After(backoff):
			}
			client, stub, m, err := h.launch()
			if err == nil && !sameManifest(m, h.manifest) {
				client.Kill()
				err = errors.New("the restarted plugin provides other functions than at launch")
			}
			if err != nil {
				backoff = min(2*backoff, h.cfg.MaxBackoff)
				h.log.Error("plugin restart failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
				continue
			}
			h.mu.Lock()
			h.client, h.stub = client, stub
			h.mu.Unlock()
			h.Stats.Restarts.Add(1)
			h.healthy.Store(true)
			h.log.Info("plugin restarted", zap.Uint64("restarts", h.Stats.Restarts.Load()))
			backoff = h.cfg.MinBackoff
			break
		}
	}
}

// takeClient removes the current client, to be killed outside the lock.
func (h *Host) takeClient() *goplugin.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.client
	h.client, h.stub = nil, nil
	return c
}

// killClient stops a plugin process: go-plugin's orderly Kill, and SIGKILL
// when that has not finished within two seconds (a frozen process never
// answers the request to shut down).
func killClient(c *goplugin.Client) {
	if c == nil {
		return
	}
	done := make(chan struct{})
	go func() { c.Kill(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		if rc := c.ReattachConfig(); rc != nil && rc.Pid > 0 {
			if p, err := os.FindProcess(rc.Pid); err == nil {
				p.Kill()
			}
		}
		<-done
	}
}

func sameManifest(a, b *plugin.Manifest) bool {
	if len(a.Algorithms) != len(b.Algorithms) || len(a.Routes) != len(b.Routes) {
		return false
	}
	for i := range a.Algorithms {
		if a.Algorithms[i] != b.Algorithms[i] {
			return false
		}
	}
	for i := range a.Routes {
		if a.Routes[i] != b.Routes[i] {
			return false
		}
	}
	return true
}

// Close stops the plugin.
func (h *Host) Close() {
	h.cancel()
	<-h.done
}

// lineLog writes the plugin's output (hclog lines and raw stdout/stderr) to
// mserve's log, one entry per line, at the level the line names.
type lineLog struct {
	log *zap.Logger
	own string // hclog's prefix for lines the plugin itself wrote
	mu  sync.Mutex
	buf []byte
}

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(string(bytes.TrimRight(l.buf[:i], "\r")))
		l.buf = l.buf[i+1:]
	}
	return len(b), nil
}

func (l *lineLog) emit(line string) {
	if strings.TrimSpace(line) == "" {
		return
	}
	switch {
	case strings.Contains(line, "[ERROR]"):
		l.log.Error("plugin output", zap.String("line", line))
	case strings.Contains(line, "[WARN]"):
		l.log.Warn("plugin output", zap.String("line", line))
	case strings.Contains(line, "[DEBUG]") && strings.Contains(line, l.own):
		l.log.Info("plugin output", zap.String("line", line)) // a plain line from the plugin's stderr
	case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
		l.log.Debug("plugin output", zap.String("line", line))
	default:
		l.log.Info("plugin output", zap.String("line", line))
	}
}
