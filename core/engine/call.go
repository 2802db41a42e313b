package engine

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Replier receives a call's single answer.
type Replier interface {
	// Answer is called exactly once per call, from any goroutine, never
	// while the engine holds a lock. The byte slices in a are valid only
	// during the call: compose the response (AppendResponse) before
	// returning.
	Answer(c *Call, a *Answer)
}

// Answer is the outcome of one call.
type Answer struct {
	Result      []byte         // raw result from the servant
	ServantErr  []byte         // raw error object from the servant
	Err         *jsonrpc.Error // an error mserve produced (timeout, overloaded…)
	ServantInfo []byte         // raw info object the servant sent, if any
	NestedInfo  bool           // the servant is a balancer: ServantInfo goes whole under "inner"
	Servant     string         // name of the servant that ran the call; empty if none did
	Elapsed     time.Duration  // from arrival to answer, queue included
	Execution   time.Duration  // from sending to the servant to its result; 0 if never sent
	Remaining   int            // calls queued or running when this one was answered
	// Flusher, when set, lets the replier defer its write
	// (wire.Writer.EndLater): the goroutine answering is working through
	// a burst and flushes when it is done.
	Flusher *wire.Flusher
}

// OK reports whether the call succeeded.
func (a *Answer) OK() bool { return a.Err == nil && a.ServantErr == nil }

// Outcome names the answer's kind for logs, metrics and the query log:
// "ok", "error" (the servant's own error) or the name of mserve's error code.
func (a *Answer) Outcome() string {
	switch {
	case a.Err != nil:
		return jsonrpc.CodeName(a.Err.Code)
	case a.ServantErr != nil:
		return "error"
	}
	return "ok"
}

// where a call is inside the engine; guarded by Engine.mu.
type where uint8

const (
	nowhere  where = iota // not yet submitted, or finished
	waiting               // in the engine's queue
	backlog               // assigned to a servant, waiting for its slot
	running               // sent to a servant
	answered              // answered early (timeout, cancel) but still running on its servant
)

// Call is one call inside mserve, from arrival to answer. A front end fills
// in the exported fields, hands the call to Engine.Submit, and receives its
// answer through Reply.
type Call struct {
	dispatch.Call // what routing functions and algorithms see

	ID         []byte        // the client's raw JSON-RPC id; nil for a notification
	Timeout    time.Duration // this call's deadline; 0 uses the engine's default
	Idempotent bool          // safe to run twice: re-dispatched if its servant is lost while running it
	Reply      Replier       // receives the answer; nil discards it
	Owner      any           // the front end's own reference (its connection), untouched by the engine

	// LinkID is the id the servant link gave the call on the servant's
	// connection. Only the link reads or writes it.
	LinkID uint64

	engine   *Engine
	seq      uint64
	where    where
	servant  *Servant
	runIdx   int // position in servant.run while running
	backlog  int // calls queued or running when it arrived
	sentAt   time.Time
	timer    *time.Timer
	counted  bool // taken in: counted in Engine.inside until answered
	attempts int  // times it was sent to a servant
	answered atomic.Bool
}

// Seq returns the engine's sequence number for the call (1, 2, …), for the
// query log.
func (c *Call) Seq() uint64 { return c.seq }

// Backlog returns how many calls were queued or running when c arrived.
func (c *Call) Backlog() int { return c.backlog }

// answer delivers a to the caller unless the call was answered already, and
// reports whether it did.
func (c *Call) answer(a *Answer) bool {
	if !c.answered.CompareAndSwap(false, true) {
		return false
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.engine != nil {
		c.engine.count(a)
	}
	if c.Reply != nil {
		c.Reply.Answer(c, a)
	}
	if e := c.engine; e != nil && e.record != nil {
		e.record(c, a, c.Arrived.Add(a.Elapsed))
	}
	if c.counted {
		c.engine.answered()
	}
	return true
}

// SentAt returns when the call was last sent to a servant; zero if never.
func (c *Call) SentAt() time.Time { return c.sentAt }

// Reserved info keys: mserve's own, which a servant's info cannot override.
var reservedInfo = [...]string{"route", "servant", "elapsed_ns", "execution_ns", "backlog", "remaining", "inner"}

// AppendInfo appends the info object for c's answer a: the routing string,
// servant, elapsed and execution times (ns), backlog at arrival and
// remaining at answer, followed by the members of the servant's own info
// whose keys do not collide with these, or, when the servant is a balancer
// itself, by its whole info record as "inner".
func AppendInfo(dst []byte, c *Call, a *Answer) []byte {
	dst = append(dst, `{"route":`...)
	dst = jsonrpc.AppendString(dst, c.Route)
	if a.Servant != "" {
		dst = append(dst, `,"servant":`...)
		dst = jsonrpc.AppendString(dst, a.Servant)
	}
	dst = append(dst, `,"elapsed_ns":`...)
	dst = strconv.AppendInt(dst, int64(a.Elapsed), 10)
	if a.Servant != "" {
		dst = append(dst, `,"execution_ns":`...)
		dst = strconv.AppendInt(dst, int64(a.Execution), 10)
	}
	dst = append(dst, `,"backlog":`...)
	dst = strconv.AppendInt(dst, int64(c.backlog), 10)
	dst = append(dst, `,"remaining":`...)
	dst = strconv.AppendInt(dst, int64(a.Remaining), 10)
	if a.NestedInfo && len(a.ServantInfo) > 0 {
		dst = append(dst, `,"inner":`...)
		dst = append(dst, a.ServantInfo...)
	} else if len(a.ServantInfo) > 2 {
		jsonrpc.Members(a.ServantInfo, func(key, value []byte) bool {
			for _, r := range reservedInfo {
				if len(key) == len(r)+2 && string(key[1:len(key)-1]) == r {
					return true
				}
			}
			dst = append(dst, ',')
			dst = append(dst, key...)
			dst = append(dst, ':')
			dst = append(dst, value...)
			return true
		})
	}
	return append(dst, '}')
}

// AppendResponse appends the complete JSON-RPC response for c's answer a,
// with its info record.
func AppendResponse(dst []byte, c *Call, a *Answer) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	if c.ID == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, c.ID...)
	}
	switch {
	case a.Err != nil:
		dst = append(dst, `,"error":`...)
		dst = jsonrpc.AppendError(dst, a.Err)
	case a.ServantErr != nil:
		dst = append(dst, `,"error":`...)
		dst = append(dst, a.ServantErr...)
	default:
		dst = append(dst, `,"result":`...)
		if a.Result == nil {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, a.Result...)
		}
	}
	dst = append(dst, `,"info":`...)
	dst = AppendInfo(dst, c, a)
	return append(dst, '}')
}
