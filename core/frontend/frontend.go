// Package frontend holds what mserve's front ends (native framed TCP and
// JSON-RPC over HTTP) share: turning a JSON-RPC request into an engine call,
// per-call options, the allowlist gate, control methods, and collecting a
// batch's answers.
package frontend

import (
	"bytes"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// MaxTimeout bounds the per-call timeout a client may ask for.
const MaxTimeout = 24 * time.Hour

// NewCall makes an engine call from a parsed request, applying the
// request's "mserve" options. Its byte slices keep aliasing the request's
// buffer, which must stay untouched until the call is answered.
func NewCall(req *jsonrpc.Request) (*engine.Call, *jsonrpc.Error) {
	c := &engine.Call{ID: req.ID}
	c.Method = req.Method
	c.Params = req.Params
	if req.Mserve != nil {
		if e := applyOptions(c, req.Mserve); e != nil {
			return nil, e
		}
	}
	return c, nil
}

// applyOptions reads the per-call options object: {"timeout_ms": N}.
// Unknown options are refused, so that a client cannot believe it set
// something mserve ignores (or claim a user or role).
func applyOptions(c *engine.Call, raw []byte) *jsonrpc.Error {
	var bad *jsonrpc.Error
	err := jsonrpc.Members(raw, func(key, value []byte) bool {
		name, _ := jsonrpc.Unquote(key)
		switch name {
		case "timeout_ms":
			ms, err := strconv.ParseFloat(string(value), 64)
			if err != nil || !(ms >= 1e-6) || ms > float64(MaxTimeout)/float64(time.Millisecond) {
				bad = jsonrpc.Errorf(jsonrpc.InvalidRequest,
					`invalid request: option "timeout_ms" must be a positive number of milliseconds, from 0.000001 (one nanosecond) up to %d, got %s`,
					MaxTimeout.Milliseconds(), value)
				return false
			}
			c.Timeout = time.Duration(math.Ceil(ms * float64(time.Millisecond))) // never 0, which would mean the default
		default:
			bad = jsonrpc.Errorf(jsonrpc.InvalidRequest,
				`invalid request: unknown option %s in "mserve" (known: "timeout_ms")`, key)
			return false
		}
		return true
	})
	if err != nil {
		return jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: options: %v", err)
	}
	return bad
}

// SameID reports whether two raw ids are the same JSON value as written.
func SameID(a, b []byte) bool { return bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b)) }

// Batch collects the answers to one batch request and hands the complete
// response array to its done function once, when the last answer is in.
// Responses keep the order of the requests; notifications have none.
type Batch struct {
	mu      sync.Mutex
	slots   []slot
	pending int
	done    func(body []byte)
}

type slot struct {
	b     *Batch
	i     int
	resp  []byte
	reply bool
}

// NewBatch returns a collector for n requests. done receives the response
// array, or nil when every request was a notification.
func NewBatch(n int, done func(body []byte)) *Batch {
	b := &Batch{slots: make([]slot, n), pending: n, done: done}
	for i := range b.slots {
		b.slots[i].b, b.slots[i].i = b, i
	}
	return b
}

// Replier returns the engine.Replier for request i.
func (b *Batch) Replier(i int) engine.Replier { return &b.slots[i] }

// Respond records a response for request i that mserve produced itself
// (an error, or a control method's result).
func (b *Batch) Respond(i int, resp []byte) {
	b.settle(i, resp, true)
}

// Skip records that request i needs no response (a notification).
func (b *Batch) Skip(i int) { b.settle(i, nil, false) }

// Answer implements engine.Replier.
func (s *slot) Answer(c *engine.Call, a *engine.Answer) {
	if c.ID == nil {
		s.b.settle(s.i, nil, false)
		return
	}
	s.b.settle(s.i, engine.AppendResponse(nil, c, a), true)
}

func (b *Batch) settle(i int, resp []byte, reply bool) {
	b.mu.Lock()
	b.slots[i].resp, b.slots[i].reply = resp, reply
	b.pending--
	last := b.pending == 0
	b.mu.Unlock()
	if !last {
		return
	}
	var out []byte
	for _, s := range b.slots {
		if !s.reply {
			continue
		}
		if out == nil {
			out = append(out, '[')
		} else {
			out = append(out, ',')
		}
		out = append(out, s.resp...)
	}
	if out != nil {
		out = append(out, ']')
	}
	b.done(out)
}
