// Package client is the Go client for mserve's native protocol: one TCP
// connection carries many concurrent calls, each with a context for its
// deadline and cancellation.
//
//	c, err := client.Dial(ctx, "127.0.0.1:5001")
//	resp, err := c.Call(ctx, "proc1", []any{"IBM"})
//	fmt.Println(string(resp.Result), resp.Info().Servant)
//
// The same client can talk to an SDK servant directly, which is how
// `mserve bench -direct` measures the balancer's overhead.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// ErrClosed is returned for calls on a closed client, and for calls still
// waiting when the connection was lost.
var ErrClosed = errors.New("mserve client: connection closed")

// Client is a connection to mserve (or to a servant). It is safe for
// concurrent use.
type Client struct {
	nc       net.Conn
	w        *wire.Writer
	maxFrame int

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan result
	err     error
	done    chan struct{}
}

type result struct {
	frame []byte
	resp  jsonrpc.Response
	err   error
}

// Option configures Dial.
type Option func(*options)

type options struct {
	maxFrame     int
	user, secret string
}

// MaxFrame sets the largest frame accepted from the server.
func MaxFrame(n int) Option { return func(o *options) { o.maxFrame = n } }

// Credentials makes Dial authenticate the connection with rpc.hello: as a
// user of mserve's allowlist (user and secret), or, talking to a servant
// directly, with the servant's secret alone (user "").
func Credentials(user, secret string) Option {
	return func(o *options) { o.user, o.secret = user, secret }
}

// Dial connects to addr.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	o := options{maxFrame: wire.DefaultMaxFrame}
	for _, opt := range opts {
		opt(&o)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := New(nc, o.maxFrame)
	if o.secret != "" {
		if _, err := c.Hello(ctx, o.user, o.secret); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Hello sends rpc.hello with credentials and returns the server's answer.
// A wrong secret is a *jsonrpc.Error with code jsonrpc.Unauthorized, and
// the server closes the connection.
func (c *Client) Hello(ctx context.Context, user, secret string) (json.RawMessage, error) {
	params, _ := json.Marshal(map[string]string{"user": user, "secret": secret})
	resp, err := c.CallRaw(ctx, wire.MethodHello, params)
	if err != nil {
		return nil, err
	}
	return resp.Result, nil
}

// New wraps an established connection.
func New(nc net.Conn, maxFrame int) *Client {
	c := &Client{nc: nc, w: wire.NewWriter(nc, 0), maxFrame: maxFrame, pending: map[uint64]chan result{}, done: make(chan struct{})}
	go c.read()
	return c
}

// Close closes the connection; calls still waiting fail with ErrClosed.
func (c *Client) Close() error {
	c.w.Abort()
	<-c.done
	return nil
}

// Response is a successful call's result with mserve's info record.
type Response struct {
	Result  json.RawMessage // the result exactly as the servant sent it
	InfoRaw json.RawMessage // the info record; nil when talking to a servant directly without one
}

// Info decodes the info record.
func (r *Response) Info() Info {
	var i Info
	if r != nil && len(r.InfoRaw) > 0 {
		json.Unmarshal(r.InfoRaw, &i)
	}
	return i
}

// Info is mserve's info record about one call.
type Info struct {
	Route       string `json:"route"`        // routing string
	Servant     string `json:"servant"`      // servant that ran the call
	ElapsedNs   int64  `json:"elapsed_ns"`   // arrival to answer, queue included
	ExecutionNs int64  `json:"execution_ns"` // sent to the servant to its answer
	HandlerNs   int64  `json:"handler_ns"`   // time in the servant's handler (SDK servants)
	Backlog     int    `json:"backlog"`      // calls queued or running when it arrived
	Remaining   int    `json:"remaining"`    // calls queued or running when it was answered
}

// Elapsed returns ElapsedNs as a duration.
func (i Info) Elapsed() time.Duration { return time.Duration(i.ElapsedNs) }

// Execution returns ExecutionNs as a duration.
func (i Info) Execution() time.Duration { return time.Duration(i.ExecutionNs) }

// Call calls method with params: nil for none, a json.RawMessage sent as
// is, or any value encoding/json can marshal (a slice for positional
// arguments, a map or struct for named ones). A JSON-RPC error from the
// server is returned as a *jsonrpc.Error, together with the Response
// carrying its info record. ctx's deadline is also sent to mserve as the
// call's timeout.
func (c *Client) Call(ctx context.Context, method string, params any) (*Response, error) {
	var raw []byte
	switch p := params.(type) {
	case nil:
	case json.RawMessage:
		raw = p
	case []byte:
		raw = p
	default:
		var err error
		if raw, err = json.Marshal(p); err != nil {
			return nil, fmt.Errorf("encoding params: %w", err)
		}
	}
	return c.CallRaw(ctx, method, raw)
}

// CallRaw is Call with params already encoded as a JSON array or object
// (or nil).
func (c *Client) CallRaw(ctx context.Context, method string, params []byte) (*Response, error) {
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()

	buf, start := wire.BeginFrame(c.w.Begin())
	buf = append(buf, `{"jsonrpc":"2.0","id":`...)
	buf = strconv.AppendUint(buf, id, 10)
	buf = append(buf, `,"method":`...)
	buf = jsonrpc.AppendString(buf, method)
	if params != nil {
		buf = append(buf, `,"params":`...)
		buf = append(buf, params...)
	}
	if dl, ok := ctx.Deadline(); ok {
		ms := max(time.Until(dl).Milliseconds(), 1)
		buf = append(buf, `,"mserve":{"timeout_ms":`...)
		buf = strconv.AppendInt(buf, ms, 10)
		buf = append(buf, '}')
	}
	buf = append(buf, '}')
	buf, err := wire.EndFrame(buf, start, c.maxFrame)
	if err != nil {
		c.w.End(buf)
		c.forget(id)
		return nil, err
	}
	if err := c.w.End(buf); err != nil {
		c.forget(id)
		return nil, c.closedErr(err)
	}

	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		resp := &Response{Result: r.resp.Result, InfoRaw: r.resp.Info}
		if r.resp.Error != nil {
			e, err := jsonrpc.DecodeError(r.resp.Error)
			if err != nil {
				return resp, fmt.Errorf("malformed error from server: %w", err)
			}
			return resp, e
		}
		return resp, nil
	case <-ctx.Done():
		if c.forget(id) {
			c.cancel(id)
		}
		return nil, ctx.Err()
	}
}

// forget removes a pending call and reports whether it was still pending.
func (c *Client) forget(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	return ok
}

func (c *Client) cancel(id uint64) {
	buf, start := wire.BeginFrame(c.w.Begin())
	buf = append(buf, `{"jsonrpc":"2.0","method":"`+wire.MethodCancel+`","params":[`...)
	buf = strconv.AppendUint(buf, id, 10)
	buf = append(buf, "]}"...)
	buf, _ = wire.EndFrame(buf, start, 0)
	c.w.End(buf)
}

func (c *Client) closedErr(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return fmt.Errorf("%w: %v", ErrClosed, err)
}

func (c *Client) read() {
	defer close(c.done)
	r := wire.NewReader(c.nc, c.maxFrame)
	var err error
	for {
		var frame []byte
		if frame, err = r.ReadFrame(nil); err != nil {
			break
		}
		var res result
		res.frame = frame
		if err = jsonrpc.ParseResponse(frame, &res.resp); err != nil {
			err = fmt.Errorf("server sent an invalid response: %w", err)
			break
		}
		id, perr := strconv.ParseUint(string(res.resp.ID), 10, 64)
		if perr != nil {
			// An error without a usable id (the server could not read a
			// request, or refused the connection): it ends the session.
			if e, derr := jsonrpc.DecodeError(res.resp.Error); derr == nil {
				err = e
			} else {
				err = fmt.Errorf("server sent a response with id %s", res.resp.ID)
			}
			break
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- res
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	pending := c.pending
	c.pending = map[uint64]chan result{}
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: c.err}
	}
	c.w.Abort()
}
