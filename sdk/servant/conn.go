package servant

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// conn is one connection to the servant, usually from mserve.
type conn struct {
	s      *Servant
	nc     net.Conn
	r      *wire.Reader // nil: made by serve
	w      *wire.Writer
	authed bool // the peer presented the servant's secret (or none is required), or the servant dialled it (registration)

	mu      sync.Mutex
	pending map[string]*job // accepted calls with ids, for rpc.cancel
}

func (c *conn) serve() {
	c.authed = c.authed || c.s.secret == ""
	r := c.r
	if r == nil {
		r = wire.NewReader(c.nc, c.s.maxFrame)
	}
	err := c.read(r)
	var tooLarge *wire.FrameTooLargeError
	if errors.As(err, &tooLarge) {
		c.respondError(nil, jsonrpc.Errorf(jsonrpc.TooLarge, "%v; closing the connection", err))
	} else if err != nil && err != errRefused && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("connection ended", zap.Error(err))
	}
	// Nobody will read the answers of calls still pending: cancel them.
	c.mu.Lock()
	for _, j := range c.pending {
		j.cancel()
	}
	c.mu.Unlock()
	c.w.Close()
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
}

func (c *conn) read(r *wire.Reader) error {
	for {
		frame, err := r.ReadFrame(nil)
		if err != nil {
			return err
		}
		if jsonrpc.IsBatch(frame) {
			c.respondError(nil, jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: this servant takes single requests, not batches"))
			continue
		}
		var req jsonrpc.Request
		if e := jsonrpc.ParseRequest(frame, &req); e != nil {
			c.respondError(req.ID, e)
			continue
		}
		if !c.authed && !c.admit(&req) {
			return errRefused
		}
		c.dispatch(&req)
	}
}

// errRefused ends a connection that did not present the servant's secret.
var errRefused = errors.New("caller refused: no valid secret in rpc.hello")

// admit checks the first request of a connection when the servant
// requires a secret: it must be rpc.hello presenting it.
func (c *conn) admit(req *jsonrpc.Request) bool {
	var hp wire.HelloParams
	if req.Method == wire.MethodHello && req.Params != nil {
		json.Unmarshal(req.Params, &hp)
	}
	if subtle.ConstantTimeCompare([]byte(hp.Secret), []byte(c.s.secret)) == 1 {
		c.authed = true
		return true
	}
	c.s.log.Warn("refused a caller without the servant's secret", zap.Stringer("remote", c.nc.RemoteAddr()), zap.String("method", req.Method))
	c.respondError(req.ID, jsonrpc.Errorf(jsonrpc.Unauthorized,
		"unauthorized: this servant takes calls only from its balancer (rpc.hello with the launch secret)"))
	return false
}

func (c *conn) dispatch(req *jsonrpc.Request) {
	s := c.s
	switch req.Method {
	case wire.MethodHello:
		c.respond(req.ID, s.hello(), nil, nil)
		return
	case wire.MethodPing:
		c.respond(req.ID, []byte(`"pong"`), nil, nil)
		return
	case wire.MethodCancel:
		c.cancel(req.Params)
		return
	}
	e := s.funcs[req.Method]
	if e == nil {
		if req.ID != nil {
			c.respondError(req.ID, jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found: this servant has no function %q", req.Method))
		}
		return
	}
	s.mu.Lock()
	stopping := s.stopping
	if !stopping {
		s.running.Add(1)
	}
	s.mu.Unlock()
	if stopping {
		if req.ID != nil {
			c.respondError(req.ID, jsonrpc.Errorf(jsonrpc.ShuttingDown, "the servant is shutting down"))
		}
		return
	}
	j := &job{c: c, id: req.ID, method: req.Method, params: req.Params, e: e}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	if j.id != nil {
		j.key = string(j.id)
		c.mu.Lock()
		c.pending[j.key] = j
		c.mu.Unlock()
	}
	s.jobs <- j
}

// cancel serves rpc.cancel: params [id].
func (c *conn) cancel(params []byte) {
	var id []byte
	if params != nil && params[0] == '[' {
		jsonrpc.Elements(params, func(v []byte) bool { id = v; return false })
	}
	c.mu.Lock()
	j := c.pending[string(id)]
	c.mu.Unlock()
	if j != nil {
		j.cancel()
	}
}

func (c *conn) forget(j *job) {
	if j.id == nil {
		return
	}
	c.mu.Lock()
	delete(c.pending, j.key)
	c.mu.Unlock()
}

func (c *conn) respond(id, result []byte, e *jsonrpc.Error, info []byte) {
	if id == nil && e == nil {
		return // a notification
	}
	buf, start := wire.BeginFrame(c.w.Begin())
	if e != nil {
		buf = jsonrpc.AppendErrorResponse(buf, id, e, info)
	} else {
		buf = jsonrpc.AppendResponse(buf, id, result, nil, info)
	}
	buf, err := wire.EndFrame(buf, start, c.s.maxFrame)
	if err != nil {
		buf, start = wire.BeginFrame(buf)
		buf = jsonrpc.AppendErrorResponse(buf, id, jsonrpc.Errorf(jsonrpc.TooLarge, "result too large: %v", err), info)
		buf, _ = wire.EndFrame(buf, start, 0)
	}
	c.w.End(buf)
}

func (c *conn) respondError(id []byte, e *jsonrpc.Error) { c.respond(id, nil, e, nil) }
