// Package register is mserve's registration address: servants dial it and
// offer themselves (rpc.register) instead of waiting to be dialled, the
// way auto-scaled workers join a dispatcher. A registration must present
// the registration secret; the connection then becomes the servant's link,
// and when it drops the servant leaves.
package register

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/logging"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Registration is one servant asking to join.
type Registration struct {
	Name   string               // the name it asked for, or its remote address when it gave none
	Params *wire.RegisterParams // what it said about itself (the secret already checked)
	Conn   net.Conn             // its connection, to become its link
	Reader *wire.Reader         // the connection's reader, holding any bytes read past the registration
}

// Joiner admits a registered servant. It returns an error (sent to the
// servant: a *jsonrpc.Error as it is, any other as invalid params) to
// refuse it, or a function called exactly once when the servant has been
// told it joined (told true: start serving the connection) or telling it
// failed (told false: the connection is closed; undo the admission).
type Joiner func(r *Registration) (start func(told bool), err error)

// Config sets up a Server.
type Config struct {
	Secret    string        // the registration secret (required)
	MaxFrame  int           // largest frame accepted; 0 means wire.DefaultMaxFrame
	HelloWait time.Duration // how long a new connection may take to register; 0 means 5s
	Join      Joiner        // admits servants (required)
	Log       *zap.Logger
}

// Server accepts registrations. Create it with New.
type Server struct {
	cfg     Config
	log     *zap.Logger
	refused logging.Limiter

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections still registering
}

// New returns a server; Serve runs it.
func New(cfg Config) *Server {
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	if cfg.HelloWait <= 0 {
		cfg.HelloWait = 5 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{cfg: cfg, log: log.With(zap.String("front", "register")), pending: map[net.Conn]struct{}{}}
}

// Serve accepts connections on ln until ctx ends or ln fails, and handles
// each registration on its own goroutine. Connections that joined belong
// to their links; Serve closes only those still registering when it
// returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer func() {
		s.mu.Lock()
		for c := range s.pending {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		s.pending[conn] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(conn)
		}()
	}
}

// handle reads one registration, answers it and hands the connection over
// or closes it.
func (s *Server) handle(conn net.Conn) {
	start, err := s.register(conn)
	s.mu.Lock()
	delete(s.pending, conn)
	s.mu.Unlock()
	if err != nil {
		conn.Close()
		return
	}
	start(true)
}

// register runs the handshake. On success the servant has been answered
// and the returned function starts its link.
func (s *Server) register(conn net.Conn) (func(bool), error) {
	conn.SetDeadline(time.Now().Add(s.cfg.HelloWait))
	r := wire.NewReader(conn, s.cfg.MaxFrame)
	frame, err := r.ReadFrame(nil)
	if err != nil {
		s.refuse(conn, nil, jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: no registration within %v: %v", s.cfg.HelloWait, err), "")
		return nil, err
	}
	var req jsonrpc.Request
	if e := jsonrpc.ParseRequest(frame, &req); e != nil {
		s.refuse(conn, req.ID, e, "")
		return nil, e
	}
	if req.Method != wire.MethodRegister || req.ID == nil {
		e := jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: this is mserve's registration address; the first request must be %s with an id, not %q", wire.MethodRegister, req.Method)
		s.refuse(conn, req.ID, e, "")
		return nil, e
	}
	p, e := decodeParams(req.Params)
	if e != nil {
		s.refuse(conn, req.ID, e, "")
		return nil, e
	}
	if subtle.ConstantTimeCompare([]byte(p.Secret), []byte(s.cfg.Secret)) != 1 {
		e := jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: wrong registration secret")
		s.refuse(conn, req.ID, e, p.Name)
		return nil, e
	}
	p.Secret = ""
	name := p.Name
	if name == "" {
		name = conn.RemoteAddr().String()
	}
	start, err := s.cfg.Join(&Registration{Name: name, Params: p, Conn: conn, Reader: r})
	if err != nil {
		e, ok := err.(*jsonrpc.Error)
		if !ok {
			e = jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: %v", wire.MethodRegister, err)
		}
		s.refuse(conn, req.ID, e, name)
		return nil, e
	}
	res, _ := json.Marshal(wire.RegisterResult{Protocol: wire.ProtocolVersion, Balancer: "mserve", Servant: name})
	out := wire.AppendFrame(nil, jsonrpc.AppendResponse(nil, req.ID, res, nil, nil))
	if _, err := conn.Write(out); err != nil {
		start(false)
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	s.log.Info("servant registered", zap.String("servant", name), zap.Stringer("remote", conn.RemoteAddr()),
		zap.Int("slots", p.Slots), zap.Strings("tags", p.Tags), zap.Int("functions", len(p.Functions)))
	return start, nil
}

// decodeParams checks the registration's params.
func decodeParams(raw []byte) (*wire.RegisterParams, *jsonrpc.Error) {
	p := &wire.RegisterParams{}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s takes an object {protocol, secret, name, slots, tags, functions}", wire.MethodRegister)
	}
	if err := json.Unmarshal(raw, p); err != nil {
		return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: %v", wire.MethodRegister, err)
	}
	switch {
	case p.Protocol != wire.ProtocolVersion:
		return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: servant speaks protocol %d, mserve speaks %d", wire.MethodRegister, p.Protocol, wire.ProtocolVersion)
	case p.Slots < 0:
		return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: slots %d is negative", wire.MethodRegister, p.Slots)
	case len(p.Name) > 255:
		return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: name is %d bytes long; at most 255", wire.MethodRegister, len(p.Name))
	}
	for _, r := range p.Name {
		if r <= ' ' || r == 0x7f {
			return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: name %s holds a blank or control character", wire.MethodRegister, strconv.Quote(p.Name))
		}
	}
	return p, nil
}

// refuse answers a refused registration and logs it, at most once per
// source host every logging.LimitPeriod.
func (s *Server) refuse(conn net.Conn, id []byte, e *jsonrpc.Error, name string) {
	conn.SetWriteDeadline(time.Now().Add(time.Second)) // the registration's own deadline may have passed
	conn.Write(wire.AppendFrame(nil, jsonrpc.AppendErrorResponse(nil, id, e, nil)))
	source := conn.RemoteAddr().String()
	if n, ok := s.refused.AllowSource(source, time.Now()); ok {
		s.log.Warn("registration refused", zap.String("source", source), zap.String("name", name),
			zap.String("error", e.Message), zap.Int("refusals_since_last_report", n))
	}
}
