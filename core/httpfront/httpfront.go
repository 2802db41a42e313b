// Package httpfront is mserve's JSON-RPC 2.0 over HTTP front end: a POST
// carries one request or a batch; the response body carries the response
// (or array of responses) with mserve's info record in each.
package httpfront

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/frontend"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// DefaultMaxBody is the largest request body accepted when none is set.
const DefaultMaxBody = 4 << 20

// Handler serves JSON-RPC over HTTP.
type Handler struct {
	front   *frontend.Front
	maxBody int64
}

// New returns a handler feeding front that refuses bodies over maxBody
// bytes (DefaultMaxBody when maxBody <= 0).
func New(front *frontend.Front, maxBody int) *Handler {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	return &Handler{front: front, maxBody: int64(maxBody)}
}

// ServeHTTP implements http.Handler. The body is read as JSON whatever its
// Content-Type (so that curl -d works). JSON-RPC errors are answered with
// status 200 and an error object, as JSON-RPC over HTTP servers commonly
// do; status codes report only HTTP-level problems (405, 413).
// A request holding only notifications is answered 204 No Content.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, jsonrpc.Errorf(jsonrpc.InvalidRequest,
			"invalid request: JSON-RPC calls are POSTed; got %s", r.Method))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, jsonrpc.Errorf(jsonrpc.TooLarge,
				"request body exceeds the limit of %d bytes", h.maxBody))
			return
		}
		return // the client went away mid-body
	}
	user, authErr := h.authenticate(r)
	if authErr != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mserve", Basic realm="mserve"`)
		writeError(w, http.StatusUnauthorized, authErr)
		return
	}
	x := &exchange{done: make(chan []byte, 1)}
	x.client = &frontend.Client{Tracker: frontend.NewTracker(h.front.Engine, x), User: user, Source: r.RemoteAddr}
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
	var resp []byte
	select {
	case resp = <-x.done:
	case <-r.Context().Done(): // the client went away: drop what it waits for
		x.client.CancelAll("the client disconnected")
		return
	}
	if resp == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(resp)
}

func writeError(w http.ResponseWriter, status int, e *jsonrpc.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(jsonrpc.AppendErrorResponse(nil, nil, e, nil))
}

// authenticate reads the Authorization header: none means anonymous;
// "Bearer TOKEN" or "Basic user:secret" must name a user of the allowlist.
func (h *Handler) authenticate(r *http.Request) (string, *jsonrpc.Error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "", nil
	}
	if h.front.Gate == nil {
		return "", jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: this mserve has no users; call without credentials")
	}
	if token, ok := strings.CutPrefix(auth, "Bearer "); ok {
		return h.front.Gate.Authenticate("", strings.TrimSpace(token), r.RemoteAddr)
	}
	if user, secret, ok := r.BasicAuth(); ok {
		return h.front.Gate.Authenticate(user, secret, r.RemoteAddr)
	}
	return "", jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: the Authorization header must be Bearer TOKEN or Basic user:secret")
}

// exchange is one HTTP request: its calls and where their answer goes.
type exchange struct {
	client *frontend.Client
	done   chan []byte
}

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
