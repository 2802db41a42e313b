package link

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// HTTPLink is the link to a servant that is a JSON-RPC 2.0 server over
// HTTP, reached by URL: any language's standard library can write one. Each
// call is one POST, or, with Config.HTTPConns set and that many requests
// in flight, calls go together as JSON-RPC batches. It implements
// engine.Transport.
type HTTPLink struct {
	cfg     Config // Addr is the URL
	log     *zap.Logger
	client  *httpClient // nil when the URL is unusable (every request fails saying why)
	urlErr  error
	servant *engine.Servant
	kick    chan struct{}
	life    context.Context // ends when Run ends: every request is under it
	endLife context.CancelFunc
	noBatch atomic.Bool // the servant refused a batch: one call per request

	mu      sync.Mutex
	up      bool
	cancels map[*engine.Call]context.CancelFunc // calls sent alone, to abandon
	running int                                 // requests in flight
	waiting []outCall                           // calls waiting for a request to end (HTTPConns > 0)
	nextID  atomic.Uint64
	errRun  atomic.Int32 // transport errors in a row
}

// NewHTTP returns a link to the HTTP servant at cfg.Addr (a URL).
func NewHTTP(cfg Config) *HTTPLink {
	l := New(cfg) // for its defaults
	client, err := newHTTPClient(l.cfg.Addr, l.cfg.MaxFrame, l.cfg.DialTimeout)
	life, endLife := context.WithCancel(context.Background())
	return &HTTPLink{
		cfg: l.cfg, log: l.log, kick: make(chan struct{}, 1),
		client: client, urlErr: err, life: life, endLife: endLife,
		cancels: map[*engine.Call]context.CancelFunc{},
	}
}

// Attach tells the link which engine servant it reports to.
func (l *HTTPLink) Attach(s *engine.Servant) { l.servant = s }

// Kick makes a waiting link try again at once.
func (l *HTTPLink) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// post sends one JSON-RPC request body and returns the response body.
// idempotent says whether it may go twice (see httpClient.post).
func (l *HTTPLink) post(ctx context.Context, body []byte, idempotent bool) ([]byte, error) {
	if l.client == nil {
		return nil, l.urlErr
	}
	status, out, err := l.client.post(ctx, body, idempotent)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 && status != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d %s with no JSON-RPC body", status, http.StatusText(status))
	}
	return out, nil
}

// Run greets the servant (rpc.hello; a server that does not know it is
// taken with defaults) until it answers, reports it up, then runs health
// checks until ctx ends.
func (l *HTTPLink) Run(ctx context.Context) {
	defer l.client.close()
	backoff := l.cfg.MinBackoff
	failures := 0
	for {
		hello, err := l.greet(ctx)
		if err == nil {
			l.mu.Lock()
			l.up = true
			l.mu.Unlock()
			if l.cfg.OnHello != nil {
				l.cfg.OnHello(hello.Functions)
			}
			l.servant.Up(engine.Announce{Slots: hello.Slots, Tags: hello.Tags, Functions: functionNames(hello.Functions), Balancer: hello.Balancer})
			l.log.Info("servant up", zap.Int("slots", hello.Slots), zap.Int("functions", len(hello.Functions)))
			break
		}
		failures++
		if failures == 10 || failures%100 == 0 {
			l.log.Warn("servant unreachable; still retrying", zap.Int("attempts", failures), zap.Error(err))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-l.kick:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
	if l.cfg.HealthInterval > 0 {
		l.check(ctx)
	} else {
		<-ctx.Done()
	}
	stopping := errors.New("mserve is stopping")
	l.mu.Lock()
	l.up = false
	waiting := l.waiting
	l.waiting = nil
	l.mu.Unlock()
	l.endLife() // requests in flight end, and report their calls lost
	for _, oc := range waiting {
		l.servant.Lost(oc.c, stopping)
	}
	l.servant.Down(nil, stopping)
}

func (l *HTTPLink) greet(ctx context.Context) (*wire.HelloResult, error) {
	params, _ := json.Marshal(wire.HelloParams{Protocol: wire.ProtocolVersion, Balancer: "mserve", Servant: l.cfg.Name, Secret: l.cfg.Secret})
	cctx, cancel := context.WithTimeout(ctx, l.cfg.HelloWait)
	defer cancel()
	out, err := l.post(cctx, jsonrpc.AppendRequest(nil, []byte("0"), wire.MethodHello, params), true)
	if err != nil {
		return nil, err
	}
	var resp jsonrpc.Response
	if err := jsonrpc.ParseResponse(out, &resp); err != nil {
		return nil, fmt.Errorf("hello: %w", err)
	}
	hello := &wire.HelloResult{}
	if resp.Error != nil {
		e, err := jsonrpc.DecodeError(resp.Error)
		if err == nil && e.Code == jsonrpc.MethodNotFound {
			return hello, nil // a plain JSON-RPC server
		}
		if err == nil {
			return nil, e
		}
		return nil, err
	}
	if err := json.Unmarshal(resp.Result, hello); err != nil {
		return nil, fmt.Errorf("malformed hello result: %w", err)
	}
	return hello, nil
}

// check runs health checks (rpc.ping over HTTP; any JSON-RPC answer
// counts) until ctx ends.
func (l *HTTPLink) check(ctx context.Context) {
	runChecks(ctx, l.cfg, l.log, l.servant, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, l.cfg.HealthTimeout)
		defer cancel()
		out, err := l.post(cctx, []byte(`{"jsonrpc":"2.0","id":0,"method":"`+wire.MethodPing+`"}`), true)
		if err == nil {
			var resp jsonrpc.Response
			err = jsonrpc.ParseResponse(out, &resp)
		}
		if err == nil {
			l.errRun.Store(0)
		}
		return err
	})
}

// Send implements engine.Transport. Without a cap on requests (HTTPConns
// 0) the call is POSTed at once by a goroutine of its own. With one, it is
// POSTed at once while fewer than HTTPConns requests are in flight;
// otherwise it waits in the link, and when a request ends the calls
// waiting go together as one JSON-RPC batch.
func (l *HTTPLink) Send(c *engine.Call, _ *wire.Flusher) error {
	oc := outCall{c: c, id: l.nextID.Add(1)}
	l.mu.Lock()
	if !l.up {
		l.mu.Unlock()
		return ErrDown
	}
	if l.cfg.HTTPConns > 0 && l.running >= l.cfg.HTTPConns {
		l.waiting = append(l.waiting, oc)
		l.mu.Unlock()
		return nil
	}
	l.running++
	req := []outCall{oc}
	ctx := l.startLocked(req)
	l.mu.Unlock()
	go l.carry(ctx, req)
	return nil
}

// outCall is a call on its way to the servant and the id it has there.
type outCall struct {
	c  *engine.Call
	id uint64
}

// maxBatchCalls is the most calls one batch request carries (what
// mserve's own HTTP front end accepts, for a balancer below this one).
const maxBatchCalls = 1000

// startLocked returns the context of the request carrying req: a call
// alone can be abandoned (Cancel closes its connection); calls in a batch
// cannot be abandoned one by one, so the batch ends only with the link.
// Caller holds l.mu.
func (l *HTTPLink) startLocked(req []outCall) context.Context {
	if len(req) > 1 {
		return l.life
	}
	ctx, cancel := context.WithCancel(l.life)
	l.cancels[req[0].c] = cancel
	return ctx
}

// carry posts req, then, while calls wait, the next batch of them, on the
// same goroutine, until none waits.
func (l *HTTPLink) carry(ctx context.Context, req []outCall) {
	for {
		l.post1(ctx, req)
		l.mu.Lock()
		n := len(l.waiting)
		if n == 0 {
			l.running--
			l.mu.Unlock()
			return
		}
		if n > maxBatchCalls {
			n = maxBatchCalls
		}
		if l.noBatch.Load() {
			n = 1
		}
		req = append(req[:0], l.waiting[:n]...)
		left := copy(l.waiting, l.waiting[n:])
		clear(l.waiting[left:]) // keep no calls alive from the tail
		l.waiting = l.waiting[:left]
		ctx = l.startLocked(req)
		l.mu.Unlock()
	}
}

// post1 sends one request, a call alone or a batch, and reports each of
// its calls to the servant.
func (l *HTTPLink) post1(ctx context.Context, req []outCall) {
	bp := bodies.Get().(*[]byte)
	body, idempotent := appendRequest((*bp)[:0], req)
	out, err := l.post(ctx, body, idempotent)
	if cap(body) <= maxPooledBody {
		*bp = body
		bodies.Put(bp)
	}
	abandoned := ctx.Err() != nil // Cancel, or mserve stopping: not the servant's fault
	if len(req) == 1 {
		l.mu.Lock()
		cancel := l.cancels[req[0].c]
		delete(l.cancels, req[0].c)
		l.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	}
	if err == nil && len(req) > 1 && !jsonrpc.IsBatch(out) {
		if l.refusedBatch(out) {
			// JSON-RPC: a batch answered by one error with a null id was
			// not run. Send its calls one by one, and no batch again.
			if !l.noBatch.Swap(true) {
				l.log.Warn("servant refused a JSON-RPC batch; sending it one call per request from now on", zap.ByteString("answer", out))
			}
			for i := range req {
				one := req[i : i+1]
				l.mu.Lock()
				ctx := l.startLocked(one)
				l.mu.Unlock()
				l.post1(ctx, one)
			}
			return
		}
		err = fmt.Errorf("servant broke the protocol: a batch of %d calls was answered with a single response", len(req))
	}
	if err != nil {
		if !abandoned && l.errRun.Add(1) == 3 {
			l.log.Warn("servant requests failing; out of dispatch until it answers health checks", zap.Error(err))
			l.servant.SetHealth(false)
		}
		err = describeHTTPErr(err)
		for _, oc := range req {
			l.servant.Lost(oc.c, err)
		}
		return
	}
	if len(req) == 1 {
		var resp jsonrpc.Response
		if perr := jsonrpc.ParseResponse(out, &resp); perr != nil {
			l.servant.Lost(req[0].c, fmt.Errorf("servant broke the protocol: %w", perr))
			return
		}
		l.errRun.Store(0)
		l.servant.Done(req[0].c, &resp, nil)
		return
	}
	l.errRun.Store(0)
	l.answerBatch(req, out)
}

// refusedBatch reports whether out, the answer to a batch, is a single
// error response with a null id: the servant refused the batch as a
// whole.
func (l *HTTPLink) refusedBatch(out []byte) bool {
	var resp jsonrpc.Response
	return jsonrpc.ParseResponse(out, &resp) == nil && resp.Error != nil && (resp.ID == nil || string(resp.ID) == "null")
}

// answerBatch matches the responses in out, the array answering the batch
// req, to their calls by id. A call with no response, or whose response is
// malformed, is lost saying so.
func (l *HTTPLink) answerBatch(req []outCall, out []byte) {
	answered := make([]bool, len(req))
	next := 0 // servants mostly answer in order: try there first
	var problem error
	perr := jsonrpc.SplitBatch(out, func(el []byte) {
		resp := &jsonrpc.Response{}
		if err := jsonrpc.ParseResponse(el, resp); err != nil {
			problem = fmt.Errorf("servant broke the protocol: a response in its batch answer: %w", err)
			return
		}
		id, err := strconv.ParseUint(string(resp.ID), 10, 64)
		if err != nil {
			problem = fmt.Errorf("servant broke the protocol: its batch answer has a response with id %s, which mserve did not send", clip(resp.ID))
			return
		}
		i := next
		if i >= len(req) || req[i].id != id {
			i = slices.IndexFunc(req, func(oc outCall) bool { return oc.id == id })
		}
		if i < 0 || answered[i] {
			problem = fmt.Errorf("servant broke the protocol: its batch answer has a response with id %d, which mserve did not send or that was already answered", id)
			return
		}
		answered[i] = true
		next = i + 1
		l.servant.Done(req[i].c, resp, nil)
	})
	if perr != nil {
		problem = fmt.Errorf("servant broke the protocol: its batch answer is not a JSON array: %s", perr.Message)
	}
	for i, oc := range req {
		if answered[i] {
			continue
		}
		err := problem
		if err == nil {
			err = fmt.Errorf("servant broke the protocol: its batch answer has no response for this call (id %d)", oc.id)
		}
		l.servant.Lost(oc.c, err)
	}
}

// bodies recycles request bodies; one grown past maxPooledBody (a large
// batch) is left to the garbage collector.
var bodies = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledBody = 64 << 10

// appendRequest appends the JSON-RPC request for req to b: one request
// object for a call alone, an array of them for a batch. idempotent
// reports whether every call in it is.
func appendRequest(b []byte, req []outCall) (_ []byte, idempotent bool) {
	idempotent = true
	if len(req) > 1 {
		b = append(b, '[')
	}
	for i, oc := range req {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"jsonrpc":"2.0","id":`...)
		b = strconv.AppendUint(b, oc.id, 10)
		b = append(b, `,"method":`...)
		b = jsonrpc.AppendString(b, oc.c.Method)
		if oc.c.Params != nil {
			b = append(b, `,"params":`...)
			b = append(b, oc.c.Params...)
		}
		b = append(b, '}')
		idempotent = idempotent && oc.c.Idempotent
	}
	if len(req) > 1 {
		b = append(b, ']')
	}
	return b, idempotent
}

func describeHTTPErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("HTTP request timed out: %w", err)
	}
	return err
}

// Cancel implements engine.Transport: a call sent alone has its HTTP
// request abandoned; a call still waiting in the link is dropped and
// reported lost; a call in a batch in flight runs to its end.
func (l *HTTPLink) Cancel(c *engine.Call) {
	l.mu.Lock()
	cancel := l.cancels[c]
	i := slices.IndexFunc(l.waiting, func(oc outCall) bool { return oc.c == c })
	if i >= 0 {
		l.waiting = slices.Delete(l.waiting, i, i+1)
	}
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if i >= 0 {
		l.servant.Lost(c, errCancelledWaiting)
	}
}

// errCancelledWaiting is the loss of a call cancelled while it waited in
// the link for a request to end.
var errCancelledWaiting = errors.New("cancelled before it was sent")

var _ engine.Transport = (*HTTPLink)(nil)
