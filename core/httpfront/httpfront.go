// Package httpfront is mserve's JSON-RPC 2.0 over HTTP front end: a POST
// carries one request or a batch; the response body carries the response
// (or array of responses) with mserve's info record in each. It serves
// HTTP/1.1 with fasthttp, which costs about half of net/http's CPU per
// request (docs/BENCHMARKS.md).
package httpfront

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/frontend"
	"github.com/mserve/mserve/core/internal/peer"
	"github.com/mserve/mserve/core/logging"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// DefaultMaxBody is the largest request body accepted when none is set.
const DefaultMaxBody = 4 << 20

// MaxHeaderBytes bounds a request's line and headers together (as
// nginx's default large_client_header_buffers does). It is also the read
// buffer each open connection holds.
const MaxHeaderBytes = 8 << 10

// watchEvery is how often a request waiting for its answer looks whether
// its client has gone, so that its calls are cancelled.
const watchEvery = 50 * time.Millisecond

// Handler serves JSON-RPC over HTTP.
type Handler struct {
	front   *frontend.Front
	maxBody int
}

// New returns a handler feeding front that refuses bodies over maxBody
// bytes (DefaultMaxBody when maxBody <= 0).
func New(front *frontend.Front, maxBody int) *Handler {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	return &Handler{front: front, maxBody: maxBody}
}

// Limits bound what a client may do to the HTTP front end.
type Limits struct {
	// ReadTimeout: a request, head and body, must arrive within it once
	// it has begun.
	ReadTimeout time.Duration
	// IdleTimeout: a keep-alive connection with no request for this long
	// is closed; negative: never; 0: ReadTimeout.
	IdleTimeout time.Duration
	// WriteTimeout: a response must be written within it, else its
	// connection is closed (a client that does not read its answers holds
	// nothing for long); 0: no limit.
	WriteTimeout time.Duration
	Log          *zap.Logger // for what the server cannot tell a client (nil: none)
}

// Server returns the HTTP/1.1 server for h: requests over MaxHeaderBytes
// of head or the body limit are refused with a JSON-RPC error and their
// connection closed; Serve it on a listener, stop it with
// ShutdownWithContext.
func (h *Handler) Server(lim Limits) *fasthttp.Server {
	idle := lim.IdleTimeout
	if idle < 0 {
		idle = 100 * 365 * 24 * time.Hour
	}
	log := lim.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &fasthttp.Server{
		Handler:                      h.Handle,
		ErrorHandler:                 h.refuse,
		Logger:                       &zapLogger{log: log},
		MaxRequestBodySize:           h.maxBody,
		ReadBufferSize:               MaxHeaderBytes,
		ReadTimeout:                  lim.ReadTimeout,
		WriteTimeout:                 lim.WriteTimeout,
		IdleTimeout:                  idle,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
	}
}

// zapLogger gives fasthttp's log lines to zap: what one client's
// connection did (a body over the limit, a timeout: the client was told)
// at debug level, anything else (failing to accept connections) at warn,
// at most one line per kind every logging.LimitPeriod, so that
// misbehaving clients cannot flood the log.
type zapLogger struct {
	log     *zap.Logger
	limiter logging.Limiter
}

func (l *zapLogger) Printf(format string, args ...any) {
	level := zap.WarnLevel
	if strings.HasPrefix(format, "error when serving connection") {
		level = zap.DebugLevel
	}
	if !l.log.Core().Enabled(level) {
		return
	}
	held, ok := l.limiter.Allow(format, time.Now())
	if !ok {
		return
	}
	l.log.Log(level, fmt.Sprintf(format, args...), zap.Int("suppressed_since_last_report", held))
}

// Handle serves one request. The body is read as JSON whatever its
// Content-Type (so that curl -d works). JSON-RPC errors are answered with
// status 200 and an error object, as JSON-RPC over HTTP servers commonly
// do; status codes report only HTTP-level problems (401, 405, 413). A
// request holding only notifications is answered 204 No Content. A client
// that closes its connection before the answer has its calls cancelled.
func (h *Handler) Handle(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", http.MethodPost)
		writeError(ctx, http.StatusMethodNotAllowed, jsonrpc.Errorf(jsonrpc.InvalidRequest,
			"invalid request: JSON-RPC calls are POSTed; got %s", ctx.Method()))
		return
	}
	user, source, authErr := h.authenticate(ctx)
	if authErr != nil {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="mserve", Basic realm="mserve"`)
		writeError(ctx, http.StatusUnauthorized, authErr)
		return
	}
	// The calls keep slices of the body after this handler returns (a
	// client gone before its answer); fasthttp reuses its buffer.
	body := bytes.Clone(ctx.PostBody())
	x := &exchange{done: make(chan []byte, 1)}
	x.client = &frontend.Client{Tracker: frontend.NewTracker(h.front.Engine, x), User: user, Source: source}
	if jsonrpc.IsBatch(body) {
		h.front.ServeBatch(body, x.client, func(resp []byte) { x.done <- resp })
	} else {
		call, resp := h.front.Prepare(body, x.client)
		switch {
		case call != nil:
			call.Reply = x
			x.client.Submit(call)
		default:
			x.done <- resp
		}
	}
	resp, ok := x.wait(ctx.Conn())
	if !ok {
		return
	}
	if resp == nil {
		ctx.SetStatusCode(http.StatusNoContent)
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(resp)
}

// refuse answers a request fasthttp could not read whole.
func (h *Handler) refuse(ctx *fasthttp.RequestCtx, err error) {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, http.StatusRequestEntityTooLarge, jsonrpc.Errorf(jsonrpc.TooLarge,
			"request body exceeds the limit of %d bytes", h.maxBody))
	case errors.As(err, &ne) && ne.Timeout():
		writeError(ctx, http.StatusRequestTimeout, jsonrpc.Errorf(jsonrpc.InvalidRequest,
			"invalid request: the request did not arrive in time"))
	case errors.As(err, new(*fasthttp.ErrSmallBuffer)) || errors.As(err, new(fasthttp.ErrSmallBuffer)):
		writeError(ctx, http.StatusRequestHeaderFieldsTooLarge, jsonrpc.Errorf(jsonrpc.InvalidRequest,
			"invalid request: request line and headers exceed %d bytes", MaxHeaderBytes))
	default:
		writeError(ctx, http.StatusBadRequest, jsonrpc.Errorf(jsonrpc.InvalidRequest,
			"invalid request: malformed HTTP request: %v", err))
	}
	ctx.SetConnectionClose()
}

func writeError(ctx *fasthttp.RequestCtx, status int, e *jsonrpc.Error) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(jsonrpc.AppendErrorResponse(nil, nil, e, nil))
}

// authenticate reads the Authorization header: none means anonymous;
// "Bearer TOKEN" or "Basic base64(user:secret)" must name a user of the
// allowlist. source, the client's address, is made only for requests
// with credentials (the only ones whose logs name it): formatting it is a
// tenth of a request's allocations.
func (h *Handler) authenticate(ctx *fasthttp.RequestCtx) (user, source string, e *jsonrpc.Error) {
	auth := ctx.Request.Header.Peek("Authorization")
	if len(auth) == 0 {
		return "", "", nil
	}
	if h.front.Gate == nil {
		return "", "", jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: this mserve has no users; call without credentials")
	}
	source = ctx.RemoteAddr().String()
	if token, ok := bytes.CutPrefix(auth, []byte("Bearer ")); ok {
		user, e = h.front.Gate.Authenticate("", string(bytes.TrimSpace(token)), source)
		return user, source, e
	}
	if u, secret, ok := basicAuth(auth); ok {
		user, e = h.front.Gate.Authenticate(u, secret, source)
		return user, source, e
	}
	return "", source, jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: the Authorization header must be Bearer TOKEN or Basic user:secret")
}

// basicAuth decodes "Basic base64(user:secret)" (the scheme's name in any
// case, as net/http accepts it).
func basicAuth(auth []byte) (user, secret string, ok bool) {
	const prefix = "basic "
	if len(auth) < len(prefix) || !bytes.EqualFold(auth[:len(prefix)], []byte(prefix)) {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(string(auth[len(prefix):]))
	if err != nil {
		return "", "", false
	}
	u, s, ok := bytes.Cut(raw, []byte(":"))
	if !ok {
		return "", "", false
	}
	return string(u), string(s), true
}

// exchange is one HTTP request: its calls and where their answer goes.
type exchange struct {
	client *frontend.Client
	done   chan []byte
}

// wait returns the answer, or false when the client closed its connection
// first (its calls are then cancelled). It looks at the connection every
// watchEvery, not reading from it.
func (x *exchange) wait(nc net.Conn) ([]byte, bool) {
	select {
	case resp := <-x.done:
		return resp, true
	default:
	}
	t := timers.Get().(*time.Timer)
	t.Reset(watchEvery)
	defer func() { t.Stop(); timers.Put(t) }()
	for {
		select {
		case resp := <-x.done:
			return resp, true
		case <-t.C:
			if peer.Closed(nc) {
				x.client.CancelAll("the client disconnected")
				return nil, false
			}
			t.Reset(watchEvery)
		}
	}
}

// timers recycles the timers of waiting requests (since Go 1.23 a
// stopped timer delivers nothing stale, so a timer can be reused).
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// Answer implements engine.Replier for a single (non-batch) call.
func (x *exchange) Answer(c *engine.Call, a *engine.Answer) {
	x.client.Forget(c)
	if c.ID == nil {
		x.done <- nil
		return
	}
	x.done <- engine.AppendResponse(make([]byte, 0, 256), c, a)
}

// RefuseTooMany returns what the HTTP front end tells a connection beyond
// the connection limit: it reads the request (and up to 64 KiB of its
// body, so that closing does not reset the connection under the answer),
// answers 503 with a JSON-RPC error, and ends its side of the connection.
// An HTTP client sees the answer to its request, never an unsolicited one.
func RefuseTooMany(limit int) func(net.Conn) {
	body := jsonrpc.AppendErrorResponse(nil, nil, jsonrpc.Errorf(jsonrpc.Overloaded,
		"overloaded: mserve has its maximum of %d client connections open; retry later", limit), nil)
	resp := fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s", len(body), body)
	return func(c net.Conn) {
		if req, err := http.ReadRequest(bufio.NewReaderSize(c, 4096)); err == nil {
			io.Copy(io.Discard, io.LimitReader(req.Body, 64<<10))
		}
		c.Write(resp)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
}
