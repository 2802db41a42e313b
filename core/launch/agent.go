package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/logging"
	"github.com/mserve/mserve/core/supervise"
	"github.com/mserve/mserve/sdk/freeport"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// AgentConfig configures an Agent. Zero durations mean their defaults.
type AgentConfig struct {
	Secret      []byte        // the launcher secret a client must prove it knows; required
	Allow       Allowlist     // the command lines the agent may start; at least one
	ServantHost string        // host servants listen on and are reached at; "" means the agent's own address on each mserve connection
	Grace       time.Duration // stopping a servant: SIGTERM, then SIGKILL after this (default 10s)
	AuthTimeout time.Duration // time a client has to answer the challenge (default 5s)
	IdleTimeout time.Duration // a connection with no frame for this long is closed and its servants stopped (default 15s; clients ping every 2s)
	RestartMin  time.Duration // first wait before restarting a servant that exited (default 100ms)
	RestartMax  time.Duration // longest wait between restarts (default 10s)
	Log         *zap.Logger
}

// Defaults of AgentConfig.
const (
	DefaultGrace       = 10 * time.Second
	DefaultAuthTimeout = 5 * time.Second
	DefaultIdleTimeout = 15 * time.Second
)

// Agent is the launcher on a servant host: it authenticates mserve
// connections and starts, for each, the servants it asks for among the
// allowed command lines, until that connection ends. Build it with
// NewAgent and run it with Serve.
type Agent struct {
	cfg     AgentConfig
	log     *zap.Logger
	host    string
	authLog logging.Limiter

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	sessions map[string]*session
	closing  bool
	wg       sync.WaitGroup
}

// session is one authenticated mserve connection and the servants it had
// started.
type session struct {
	id    string // the client's session, once it started servants
	nc    net.Conn
	log   *zap.Logger
	procs []*supervise.Process
	done  chan struct{} // closed when the connection has ended and its servants are stopped
}

// NewAgent checks cfg and returns an agent that is not yet serving. It
// fails without a secret or without an allowed command line.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("launcher: no secret: set -secret-file")
	}
	if len(cfg.Allow) == 0 {
		return nil, errors.New("launcher: no allowed command: give at least one -allow 'COMMAND ARGS...'")
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	host, _ := os.Hostname()
	return &Agent{cfg: cfg, log: log, host: host, conns: map[net.Conn]struct{}{}, sessions: map[string]*session{}}, nil
}

// Serve accepts mserve connections on ln until ctx ends or ln fails. Before
// it returns it closes ln and every connection and stops every servant it
// started (each within the grace period). It returns nil when ctx ended,
// else the listener's error.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		nc, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil && !errors.Is(aerr, net.ErrClosed) {
				var ne net.Error
				if errors.As(aerr, &ne) && ne.Timeout() {
					continue
				}
				if isTemporary(aerr) { // out of file descriptors and the like: wait for some to close
					a.log.Warn("accept failed; retrying", zap.Error(aerr))
					t := time.NewTimer(100 * time.Millisecond)
					select {
					case <-ctx.Done():
					case <-t.C:
					}
					t.Stop()
					continue
				}
				err = aerr
			}
			break
		}
		a.mu.Lock()
		if a.closing {
			a.mu.Unlock()
			nc.Close()
			continue
		}
		a.conns[nc] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go a.handle(nc)
	}
	ln.Close()
	a.mu.Lock()
	a.closing = true
	for nc := range a.conns {
		nc.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
	return err
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// handle serves one connection: authentication, then requests until it
// ends, then stops its servants.
func (a *Agent) handle(nc net.Conn) {
	defer a.wg.Done()
	defer func() {
		nc.Close()
		a.mu.Lock()
		delete(a.conns, nc)
		a.mu.Unlock()
	}()
	peer := nc.RemoteAddr().String()
	c := newFrameConn(nc)
	if !a.authenticate(c, peer) {
		return
	}
	s := &session{nc: nc, log: a.log.With(zap.String("mserve", peer)), done: make(chan struct{})}
	s.log.Info("mserve connected")
	reason := a.serve(c, s)
	a.end(s, reason)
}

// authenticate sends the challenge and checks the answer. On failure it
// answers with an error frame, logs (rate-limited) and returns false.
func (a *Agent) authenticate(c *frameConn, peer string) bool {
	nonce := newNonce()
	c.nc.SetDeadline(time.Now().Add(a.cfg.AuthTimeout))
	defer c.nc.SetDeadline(time.Time{})
	if err := c.request(nil, MethodChallenge, challengeParams{Protocol: ProtocolVersion, Nonce: nonce}); err != nil {
		a.authFailed(peer, "could not send the challenge: "+err.Error())
		return false
	}
	frame, err := c.read()
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			c.fail(nil, jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: no answer to the launcher's challenge within %v", a.cfg.AuthTimeout))
			a.authFailed(peer, fmt.Sprintf("no answer to the challenge within %v", a.cfg.AuthTimeout))
		case errors.Is(err, io.EOF):
			a.authFailed(peer, "connection closed before answering the challenge")
		default:
			if isFramingError(err) {
				c.fail(nil, jsonrpc.Errorf(jsonrpc.ParseError, "parse error: %v", err))
			}
			a.authFailed(peer, "reading the answer to the challenge: "+err.Error())
		}
		return false
	}
	req, e := decodeRequest(frame)
	if e == nil && req.method != MethodAuth {
		e = jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: authenticate first: the answer to the challenge must be %s, not %s", MethodAuth, req.method)
	}
	if e == nil && !macEqual(clientMAC(a.cfg.Secret, nonce), req.auth.MAC) {
		e = jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: wrong launcher secret: the answer to the challenge does not match (compare mserve's -launcher-secret-file with the launcher's -secret-file)")
	}
	if e != nil {
		c.fail(req.id, e)
		a.authFailed(peer, e.Message)
		return false
	}
	if err := c.result(req.id, authResult{MAC: agentMAC(a.cfg.Secret, req.auth.Nonce), Host: a.host}); err != nil {
		return false
	}
	return true
}

// isFramingError reports whether err means the peer does not send frames
// this side can read (rather than a broken connection).
func isFramingError(err error) bool {
	var tl *wire.FrameTooLargeError
	return errors.Is(err, wire.ErrNotFramed) || errors.As(err, &tl)
}

func (a *Agent) authFailed(peer, reason string) {
	if n, ok := a.authLog.AllowSource(peer, time.Now()); ok {
		a.log.Warn("launcher authentication failed; connection closed", zap.String("source", peer),
			zap.String("reason", reason), zap.Int("failures_since_last_report", n))
	}
}

// serve answers requests until the connection ends; it returns why.
func (a *Agent) serve(c *frameConn, s *session) string {
	for {
		c.nc.SetReadDeadline(time.Now().Add(a.cfg.IdleTimeout))
		frame, err := c.read()
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				return fmt.Sprintf("nothing received for %v (mserve's host down or the network broken?)", a.cfg.IdleTimeout)
			case errors.Is(err, io.EOF):
				return "mserve closed the connection"
			case isFramingError(err):
				c.fail(nil, jsonrpc.Errorf(jsonrpc.ParseError, "parse error: %v", err))
			}
			return err.Error()
		}
		req, e := decodeRequest(frame)
		if e != nil {
			if req.id != nil || e.Code == jsonrpc.ParseError || e.Code == jsonrpc.InvalidRequest {
				if err := c.fail(req.id, e); err != nil {
					return "writing: " + err.Error()
				}
			}
			continue
		}
		if req.id == nil {
			continue // a notification: nothing to answer
		}
		var werr error
		switch req.method {
		case wire.MethodPing:
			werr = c.result(req.id, "pong")
		case MethodAuth:
			werr = c.fail(req.id, jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: already authenticated"))
		case MethodStart:
			res, e := a.start(s, req.start)
			if e != nil {
				s.log.Warn("start refused", zap.Strings("argv", req.start.Argv), zap.String("reason", e.Message))
				werr = c.fail(req.id, e)
			} else {
				werr = c.result(req.id, res)
			}
		case MethodStop:
			n := len(s.procs)
			if n > 0 {
				s.log.Info("stopping servants, as mserve asks", zap.Int("servants", n))
				supervise.StopAll(s.procs, a.cfg.Grace)
				s.procs = nil
			}
			werr = c.result(req.id, map[string]int{"stopped": n})
		}
		if werr != nil {
			return "writing: " + werr.Error()
		}
	}
}

// start starts the servants a launch.start asks for.
func (a *Agent) start(s *session, p *startParams) (*startResult, *jsonrpc.Error) {
	if len(s.procs) > 0 {
		return nil, jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: this connection's servants are running; send %s first", MethodStop)
	}
	if !a.cfg.Allow.Allows(p.Argv) {
		return nil, jsonrpc.Errorf(jsonrpc.Unauthorized, "command not allowed: %q is not one of this launcher's -allow entries, which are: %s",
			strings.Join(p.Argv, " "), a.cfg.Allow)
	}
	if _, err := exec.LookPath(p.Argv[0]); err != nil {
		return nil, jsonrpc.Errorf(jsonrpc.InternalError, "cannot run %q on launcher host %s: %v", p.Argv[0], a.host, err)
	}
	host := a.servantHost(s.nc)
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return nil, jsonrpc.Errorf(jsonrpc.ShuttingDown, "shutting down: the launcher is stopping")
	}
	if s.id != "" && s.id != p.Session && a.sessions[s.id] == s {
		delete(a.sessions, s.id)
	}
	old := a.sessions[p.Session]
	a.sessions[p.Session] = s
	s.id = p.Session
	a.mu.Unlock()
	if old != nil && old != s {
		// mserve redialled before this agent noticed its old connection
		// was gone: end that one, and let its servants free their ports.
		s.log.Warn("session taken over by a new connection; stopping the old connection's servants",
			zap.String("old", old.nc.RemoteAddr().String()))
		old.nc.Close()
		t := time.NewTimer(a.cfg.Grace + 5*time.Second)
		select {
		case <-old.done:
		case <-t.C:
		}
		t.Stop()
	}
	addrs := make([]string, len(p.Servants))
	taken := map[int]bool{}
	for i, sr := range p.Servants {
		port := sr.Port
		for port == 0 || taken[port] {
			var err error
			if port, err = freeport.Port(host); err != nil {
				return nil, jsonrpc.Errorf(jsonrpc.InternalError, "no free port on servant host %s of launcher %s: %v", host, a.host, err)
			}
		}
		taken[port] = true
		addrs[i] = net.JoinHostPort(host, strconv.Itoa(port))
	}
	res := &startResult{}
	for i, sr := range p.Servants {
		s.procs = append(s.procs, supervise.Start(supervise.Config{
			Name: sr.Name, Command: p.Argv[0], Args: p.Argv[1:], Addr: addrs[i],
			Env:        []string{supervise.EnvSecret + "=" + p.Secret},
			MinBackoff: a.cfg.RestartMin, MaxBackoff: a.cfg.RestartMax,
			Log: s.log,
		}))
		res.Servants = append(res.Servants, Servant{Name: sr.Name, Addr: addrs[i]})
	}
	s.log.Info("servants started", zap.Strings("argv", p.Argv), zap.Int("servants", len(res.Servants)), zap.Strings("addrs", addrs))
	return res, nil
}

// servantHost is the host servants listen on: the configured one, or the
// agent's address on the mserve connection, which mserve can reach.
func (a *Agent) servantHost(nc net.Conn) string {
	if a.cfg.ServantHost != "" {
		return a.cfg.ServantHost
	}
	if ta, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		if ta.Zone != "" {
			return ta.IP.String() + "%" + ta.Zone
		}
		return ta.IP.String()
	}
	host, _, _ := net.SplitHostPort(nc.LocalAddr().String())
	return host
}

// end stops what a connection started once it is over.
func (a *Agent) end(s *session, reason string) {
	a.mu.Lock()
	if s.id != "" && a.sessions[s.id] == s {
		delete(a.sessions, s.id)
	}
	a.mu.Unlock()
	if n := len(s.procs); n > 0 {
		s.log.Info("mserve connection ended; stopping its servants", zap.String("reason", reason), zap.Int("servants", n))
		supervise.StopAll(s.procs, a.cfg.Grace)
		s.procs = nil
		s.log.Info("servants stopped", zap.Int("servants", n))
	} else {
		s.log.Info("mserve connection ended", zap.String("reason", reason))
	}
	close(s.done)
}
