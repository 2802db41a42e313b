// Package native is mserve's native front end: persistent TCP connections
// carrying length-prefixed JSON-RPC 2.0 frames, many calls in flight per
// connection, answered in completion order.
package native

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/frontend"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Config sets up a Server.
type Config struct {
	MaxFrame     int           // largest frame accepted; 0 means wire.DefaultMaxFrame
	MaxInFlight  int           // calls one connection may have unanswered before mserve stops reading from it; 0 means 1024
	IdleTimeout  time.Duration // close a connection with nothing in flight that sends no frame for this long; 0 means never
	FrameTimeout time.Duration // a frame that has begun must arrive within this; 0 means no limit
	Log          *zap.Logger
}

// Server accepts native connections and feeds their calls to an engine.
type Server struct {
	cfg   Config
	front *frontend.Front
	log   *zap.Logger

	mu    sync.Mutex
	lns   []net.Listener
	conns map[*conn]struct{}
	wg    sync.WaitGroup

	listenersClosed bool // CloseListeners ran; under mu
}

// New returns a server feeding front.
func New(cfg Config, front *frontend.Front) *Server {
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{cfg: cfg, front: front, log: log, conns: map[*conn]struct{}{}}
}

// Serve accepts connections on ln until it is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	closed := s.listenersClosed
	s.mu.Unlock()
	if closed { // CloseListeners ran before Serve got ln
		ln.Close()
	}
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		c := &conn{s: s, nc: nc, w: wire.NewWriter(nc, 0), tokens: make(chan struct{}, s.cfg.MaxInFlight)}
		c.client = &frontend.Client{Tracker: frontend.NewTracker(s.front.Engine, c), Source: nc.RemoteAddr().String(), Stateful: true}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// CloseListeners stops accepting new connections, on the listeners Serve
// has now and on any it is given later.
func (s *Server) CloseListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listenersClosed = true
	for _, ln := range s.lns {
		ln.Close()
	}
}

// Close stops accepting, flushes what each connection has pending, closes
// them all and waits for their goroutines.
func (s *Server) Close() {
	s.CloseListeners()
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if cr, ok := c.nc.(interface{ CloseRead() error }); ok {
			cr.CloseRead()
		} else {
			c.nc.Close()
		}
	}
	s.wg.Wait()
}

// conn is one client connection.
type conn struct {
	client  *frontend.Client
	inFrame atomic.Bool // a frame's header has been read and its body not yet
	s       *Server
	nc      net.Conn
	w       *wire.Writer
	tokens  chan struct{} // one per unanswered request: bounds in-flight calls

	// deadlineMu orders the read-deadline changes of the reader (frame
	// begun, waiting for a frame) and of Answer (last call answered), so
	// that a decision taken on a stale count does not overwrite a newer one.
	deadlineMu sync.Mutex
}

func (c *conn) serve() {
	defer c.s.wg.Done()
	r := wire.NewReader(c.nc, c.s.cfg.MaxFrame)
	r.OnHeader = func() {
		c.deadlineMu.Lock()
		c.inFrame.Store(true)
		if ft := c.s.cfg.FrameTimeout; ft > 0 {
			c.nc.SetReadDeadline(time.Now().Add(ft))
		}
		c.deadlineMu.Unlock()
	}
	err := c.read(r)
	c.shutdown(err)
}

// waitDeadline sets the deadline for the next frame to begin: the idle
// timeout when nothing is in flight, none otherwise (a client may wait
// long for a slow call).
func (c *conn) waitDeadline() {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	var d time.Time
	if it := c.s.cfg.IdleTimeout; it > 0 && len(c.tokens) == 0 {
		d = time.Now().Add(it)
	}
	c.nc.SetReadDeadline(d)
}

// read handles requests until the connection fails. The writes a burst of
// requests causes (calls to servants, immediate answers) go out together
// when the burst is done.
func (c *conn) read(r *wire.Reader) error {
	var f wire.Flusher
	defer f.Flush()
	for {
		if !r.HasFrame() {
			f.Flush()
			c.waitDeadline()
		}
		frame, err := r.ReadFrame(nil)
		if err != nil {
			return err
		}
		c.inFrame.Store(false)
		c.tokens <- struct{}{} // blocks while the connection has its maximum of calls unanswered
		if jsonrpc.IsBatch(frame) {
			c.s.front.ServeBatch(frame, c.client, func(resp []byte) {
				if resp != nil {
					c.w.WriteFrame(resp)
				}
				<-c.tokens
			})
			if c.client.Close {
				return errAuthFailed
			}
			continue
		}
		call, resp := c.s.front.Prepare(frame, c.client)
		switch {
		case call != nil:
			call.Reply = c
			c.client.SubmitLater(call, &f)
			continue
		case resp != nil:
			c.w.EndLater(wire.AppendFrame(c.w.Begin(), resp), &f)
		}
		<-c.tokens
		if c.client.Close {
			return errAuthFailed
		}
	}
}

// Answer implements engine.Replier: the response is composed straight into
// the connection's pending output.
func (c *conn) Answer(call *engine.Call, a *engine.Answer) {
	c.client.Forget(call)
	if call.ID != nil {
		buf, start := wire.BeginFrame(c.w.Begin())
		buf = engine.AppendResponse(buf, call, a)
		buf, err := wire.EndFrame(buf, start, 0)
		if err != nil { // a servant's result too large for any client frame
			buf, start = wire.BeginFrame(buf)
			buf = jsonrpc.AppendErrorResponse(buf, call.ID, jsonrpc.Errorf(jsonrpc.TooLarge, "result too large: %v", err), nil)
			buf, _ = wire.EndFrame(buf, start, 0)
		}
		c.w.EndLater(buf, a.Flusher)
	}
	<-c.tokens
	// The last call in flight is answered: the idle timeout runs again (the
	// reader, waiting for the next frame, set none). Checked first without
	// the lock, so that answers with calls still in flight take none: when
	// the connection becomes idle later, whoever makes it so (another
	// Answer, or the reader before it waits) sets the deadline.
	if it := c.s.cfg.IdleTimeout; it > 0 && c.idle() {
		c.deadlineMu.Lock()
		if c.idle() {
			c.nc.SetReadDeadline(time.Now().Add(it))
		}
		c.deadlineMu.Unlock()
	}
}

// idle reports whether the connection has no call in flight and no frame
// half read.
func (c *conn) idle() bool { return len(c.tokens) == 0 && !c.inFrame.Load() }

// shutdown ends the connection after its reader stopped: the reason is
// told to the client when it can still read it, queued calls are dropped,
// running calls finish on their servants with nobody to answer.
func (c *conn) shutdown(err error) {
	var tooLarge *wire.FrameTooLargeError
	switch {
	case errors.As(err, &tooLarge):
		c.w.WriteFrame(jsonrpc.AppendErrorResponse(nil, nil, jsonrpc.Errorf(jsonrpc.TooLarge, "%v; closing the connection", err), nil))
	case errors.Is(err, wire.ErrNotFramed): // the peer could not read a frame: answer in plain text
		c.w.End(append(c.w.Begin(), notFramedReply...))
	case isTimeout(err) && !c.inFrame.Load():
		// idle too long: close quietly
	case isTimeout(err):
		c.w.WriteFrame(jsonrpc.AppendErrorResponse(nil, nil, jsonrpc.Errorf(jsonrpc.InvalidRequest,
			"invalid request: a frame was not completed within %v; closing the connection", c.s.cfg.FrameTimeout), nil))
	case err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || err == errAuthFailed:
	default:
		if ce := c.s.log.Check(zap.DebugLevel, "client connection ended"); ce != nil {
			ce.Write(zap.Stringer("remote", c.nc.RemoteAddr()), zap.Error(err))
		}
	}
	c.client.CancelAll("the client disconnected")
	c.nc.SetWriteDeadline(time.Now().Add(closeFlushWait))
	c.w.Close()
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errAuthFailed ends a connection whose rpc.hello failed to authenticate.
var errAuthFailed = errors.New("authentication failed")

// closeFlushWait bounds how long a closing connection may take to flush
// what is pending to a client that does not read.
const closeFlushWait = 5 * time.Second

var notFramedReply = bytes.Join([][]byte{
	[]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"),
	[]byte("this is mserve's native port: it speaks length-prefixed JSON-RPC frames; send JSON-RPC over HTTP to the -http address\n"),
}, nil)

// RefuseTooMany returns what the native front end tells a connection
// beyond the connection limit: an error frame, before closing it.
func RefuseTooMany(limit int) func(net.Conn) {
	frame := wire.AppendFrame(nil, jsonrpc.AppendErrorResponse(nil, nil, jsonrpc.Errorf(jsonrpc.Overloaded,
		"overloaded: mserve has its maximum of %d client connections open; retry later", limit), nil))
	return func(c net.Conn) { c.Write(frame) }
}
