package link

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
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
// call is one POST. It implements engine.Transport.
type HTTPLink struct {
	cfg     Config // Addr is the URL
	log     *zap.Logger
	client  *httpClient // nil when the URL is unusable (every request fails saying why)
	urlErr  error
	servant *engine.Servant
	kick    chan struct{}

	mu      sync.Mutex
	up      bool
	cancels map[*engine.Call]context.CancelFunc
	nextID  atomic.Uint64
	errRun  atomic.Int32 // transport errors in a row
}

// NewHTTP returns a link to the HTTP servant at cfg.Addr (a URL).
func NewHTTP(cfg Config) *HTTPLink {
	l := New(cfg) // for its defaults
	client, err := newHTTPClient(l.cfg.Addr, l.cfg.MaxFrame, l.cfg.DialTimeout)
	return &HTTPLink{
		cfg: l.cfg, log: l.log, kick: make(chan struct{}, 1),
		client: client, urlErr: err,
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
	l.mu.Lock()
	l.up = false
	for _, cancel := range l.cancels {
		cancel()
	}
	l.mu.Unlock()
	l.servant.Down(nil, errors.New("mserve is stopping"))
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

// Send implements engine.Transport: the call is POSTed by a goroutine of
// its own.
func (l *HTTPLink) Send(c *engine.Call, _ *wire.Flusher) error {
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	if !l.up {
		l.mu.Unlock()
		cancel()
		return ErrDown
	}
	l.cancels[c] = cancel
	l.mu.Unlock()
	id := l.nextID.Add(1)
	body := make([]byte, 0, 64+len(c.Params))
	body = append(body, `{"jsonrpc":"2.0","id":`...)
	body = strconv.AppendUint(body, id, 10)
	body = append(body, `,"method":`...)
	body = jsonrpc.AppendString(body, c.Method)
	if c.Params != nil {
		body = append(body, `,"params":`...)
		body = append(body, c.Params...)
	}
	body = append(body, '}')
	go l.do(ctx, c, body)
	return nil
}

func (l *HTTPLink) do(ctx context.Context, c *engine.Call, body []byte) {
	out, err := l.post(ctx, body, c.Idempotent)
	abandoned := ctx.Err() != nil // Cancel: nobody waits; not the servant's fault
	l.mu.Lock()
	cancel := l.cancels[c]
	delete(l.cancels, c)
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	var resp jsonrpc.Response
	if err == nil {
		if perr := jsonrpc.ParseResponse(out, &resp); perr != nil {
			err = fmt.Errorf("servant broke the protocol: %w", perr)
		}
	}
	if err != nil {
		if !abandoned && l.errRun.Add(1) == 3 {
			l.log.Warn("servant requests failing; out of dispatch until it answers health checks", zap.Error(err))
			l.servant.SetHealth(false)
		}
		l.servant.Lost(c, describeHTTPErr(err))
		return
	}
	l.errRun.Store(0)
	l.servant.Done(c, &resp, nil)
}

func describeHTTPErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("HTTP request timed out: %w", err)
	}
	return err
}

// Cancel implements engine.Transport: the HTTP request is abandoned.
func (l *HTTPLink) Cancel(c *engine.Call) {
	l.mu.Lock()
	cancel := l.cancels[c]
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

var _ engine.Transport = (*HTTPLink)(nil)
