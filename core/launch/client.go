package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// ClientConfig says which launcher to ask for which servants. Zero
// durations mean their defaults.
type ClientConfig struct {
	Addr          string   // the launcher's host:port
	Secret        []byte   // the launcher secret; required
	Argv          []string // the servants' command line: exactly one of the launcher's -allow entries
	Names         []string // the servants to start there, e.g. s1, s3, s5
	ServantSecret string   // what the servants require in mserve's hello (MSERVE_SERVANT_SECRET); required

	DialTimeout  time.Duration // per dial attempt (default 5s)
	CallTimeout  time.Duration // time the launcher may take to authenticate and to answer a start (default 30s)
	PingInterval time.Duration // rpc.ping this often to keep the connection checked (default 2s)
	PingTimeout  time.Duration // a ping unanswered this long drops the connection (default 5s)
	StopTimeout  time.Duration // at the end of Run, time the launcher may take to confirm its servants stopped (default 15s)
	MinBackoff   time.Duration // first wait before redialling a lost launcher (default 100ms)
	MaxBackoff   time.Duration // longest wait between redials (default 5s)
	Log          *zap.Logger

	// OnRestart, when set, is called from Run each time a lost launcher
	// was redialled and has started the servants again, with their
	// addresses (mserve kicks its links to them).
	OnRestart func([]Servant)
}

// Client is mserve's side of one launcher: Dial asks it for servants, Run
// keeps the connection (and so the servants) alive and restores both after
// a failure.
type Client struct {
	cfg      ClientConfig
	log      *zap.Logger
	session  string
	servants []Servant
	cn       *clientConn
	closed   sync.Once
}

// Dial connects to the launcher, authenticates (both ways) and asks it to
// start the servants. It returns once the launcher has answered their
// addresses (the processes may still be starting); its error says what
// went wrong, with the launcher's own message when it refused. On success
// the caller must call Run or Close, or the servants live until the
// launcher notices the connection is idle.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("no launcher secret")
	}
	if cfg.ServantSecret == "" {
		return nil, errors.New("no servant secret")
	}
	if len(cfg.Argv) == 0 || len(cfg.Names) == 0 {
		return nil, errors.New("no command or no servants to start")
	}
	cfg.DialTimeout = orDefault(cfg.DialTimeout, 5*time.Second)
	cfg.CallTimeout = orDefault(cfg.CallTimeout, 30*time.Second)
	cfg.PingInterval = orDefault(cfg.PingInterval, 2*time.Second)
	cfg.PingTimeout = orDefault(cfg.PingTimeout, 5*time.Second)
	cfg.StopTimeout = orDefault(cfg.StopTimeout, 15*time.Second)
	cfg.MinBackoff = orDefault(cfg.MinBackoff, 100*time.Millisecond)
	cfg.MaxBackoff = orDefault(cfg.MaxBackoff, 5*time.Second)
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	c := &Client{cfg: cfg, log: log.With(zap.String("launcher", cfg.Addr)), session: newNonce()}
	cn, servants, err := c.connect(ctx, nil)
	if err != nil {
		return nil, err
	}
	c.cn, c.servants = cn, servants
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Servants returns the servants the launcher started, in the order of
// ClientConfig.Names, with the addresses they listen on.
func (c *Client) Servants() []Servant { return slices.Clone(c.servants) }

// Run keeps the connection until ctx ends: it pings the launcher, and when
// the connection is lost (the launcher's servants are then stopped there)
// it logs it, redials with backoff and asks for the same servants on the
// same ports again. When ctx ends it asks the launcher to stop the
// servants, waits for its answer (up to StopTimeout) and returns.
func (c *Client) Run(ctx context.Context) {
	for {
		err := c.keep(ctx, c.cn)
		if ctx.Err() != nil {
			c.Close()
			return
		}
		c.cn.close()
		c.log.Warn("launcher connection lost; its servants are stopped there; redialling", zap.Error(err))
		ports := map[string]int{}
		for _, s := range c.servants {
			if _, p, err := net.SplitHostPort(s.Addr); err == nil {
				ports[s.Name], _ = strconv.Atoi(p)
			}
		}
		backoff := c.cfg.MinBackoff
		for attempt := 1; ; attempt++ {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			cn, servants, err := c.connect(ctx, ports)
			if err == nil {
				c.cn = cn
				if !slices.Equal(servants, c.servants) {
					c.log.Error("the launcher started the servants at other addresses than before; mserve keeps dialling the old ones",
						zap.Any("before", c.servants), zap.Any("now", servants))
				}
				c.log.Info("launcher reconnected; servants started again", zap.Int("attempts", attempt), zap.Any("servants", servants))
				if c.cfg.OnRestart != nil {
					c.cfg.OnRestart(servants)
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			if attempt == 1 || attempt%10 == 0 {
				c.log.Warn("launcher unreachable; still retrying", zap.Int("attempts", attempt), zap.Error(err))
			} else if ce := c.log.Check(zap.DebugLevel, "launcher redial failed"); ce != nil {
				ce.Write(zap.Error(err))
			}
			backoff = min(2*backoff, c.cfg.MaxBackoff)
		}
	}
}

// Close asks the launcher to stop the servants, waits for its answer (up
// to StopTimeout) and closes the connection. Run calls it when its context
// ends; call it directly only when Run was never started.
func (c *Client) Close() error {
	var err error
	c.closed.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StopTimeout)
		defer cancel()
		_, err = c.cn.call(ctx, MethodStop, struct{}{})
		c.cn.close()
		if err != nil {
			err = fmt.Errorf("launcher %s: stopping its servants: %w", c.cfg.Addr, err)
		}
	})
	return err
}

// keep pings the launcher until the connection fails (its error) or ctx
// ends (nil).
func (c *Client) keep(ctx context.Context, cn *clientConn) error {
	t := time.NewTicker(c.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-cn.done:
			return cn.err
		case <-cn.frames: // nothing unsolicited is expected after the hello
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, c.cfg.PingTimeout)
			_, err := cn.call(pctx, wire.MethodPing, nil)
			cancel()
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("ping: %w", err)
			}
		}
	}
}

// connect dials, authenticates both ways and starts the servants, asking
// for the given ports (by name) if any.
func (c *Client) connect(ctx context.Context, ports map[string]int) (*clientConn, []Servant, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	d := net.Dialer{Timeout: c.cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, nil, err
	}
	cn := newClientConn(nc)
	fail := func(err error) (*clientConn, []Servant, error) {
		cn.close()
		return nil, nil, err
	}
	// The challenge.
	var frame []byte
	select {
	case frame = <-cn.frames:
	case <-cn.done:
		return fail(fmt.Errorf("connection closed before the challenge: %w", cn.err))
	case <-ctx.Done():
		return fail(fmt.Errorf("no challenge from the launcher within %v: is %s a launcher?", c.cfg.CallTimeout, c.cfg.Addr))
	}
	var ch jsonrpc.Request
	var chp challengeParams
	if jsonrpc.ParseRequest(frame, &ch) != nil || ch.Method != MethodChallenge || json.Unmarshal(ch.Params, &chp) != nil || chp.Nonce == "" {
		if e := errorFrame(frame); e != nil {
			return fail(e)
		}
		return fail(fmt.Errorf("the launcher's first frame is not a %s: is %s a launcher?", MethodChallenge, c.cfg.Addr))
	}
	if chp.Protocol != ProtocolVersion {
		return fail(fmt.Errorf("the launcher speaks launcher protocol %d, this mserve %d: run the same mserve version on both", chp.Protocol, ProtocolVersion))
	}
	// Both ways: we answer its nonce, it answers ours.
	ours := newNonce()
	raw, err := cn.call(ctx, MethodAuth, authParams{Protocol: ProtocolVersion, MAC: clientMAC(c.cfg.Secret, chp.Nonce), Nonce: ours})
	if err != nil {
		return fail(stageError("authenticating", err))
	}
	var ar authResult
	if err := json.Unmarshal(raw, &ar); err != nil || !macEqual(agentMAC(c.cfg.Secret, ours), ar.MAC) {
		return fail(errors.New("the launcher did not prove it knows the launcher secret; not sending it anything"))
	}
	p := startParams{Session: c.session, Argv: c.cfg.Argv, Secret: c.cfg.ServantSecret}
	for _, n := range c.cfg.Names {
		p.Servants = append(p.Servants, servantRequest{Name: n, Port: ports[n]})
	}
	if raw, err = cn.call(ctx, MethodStart, p); err != nil {
		return fail(stageError("starting the servants", err))
	}
	var res startResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return fail(fmt.Errorf("bad answer to %s: %v", MethodStart, err))
	}
	got := map[string]string{}
	for _, s := range res.Servants {
		got[s.Name] = s.Addr
	}
	servants := make([]Servant, len(c.cfg.Names))
	for i, n := range c.cfg.Names {
		addr := got[n]
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fail(fmt.Errorf("the launcher's answer has no usable address for servant %s (%q)", n, addr))
		}
		servants[i] = Servant{Name: n, Addr: addr}
	}
	return cn, servants, nil
}

// stageError says at which stage err happened; a launcher's refusal is
// shown by its message alone.
func stageError(stage string, err error) error {
	var e *jsonrpc.Error
	if errors.As(err, &e) {
		return &refusedError{stage: stage, e: e}
	}
	return fmt.Errorf("%s: %w", stage, err)
}

// refusedError is a launcher's error answer.
type refusedError struct {
	stage string
	e     *jsonrpc.Error
}

func (r *refusedError) Error() string { return r.stage + ": the launcher refused: " + r.e.Message }
func (r *refusedError) Unwrap() error { return r.e }

// errorFrame returns the error a response frame carries, or nil.
func errorFrame(frame []byte) error {
	var resp jsonrpc.Response
	if jsonrpc.ParseResponse(frame, &resp) != nil || resp.Error == nil {
		return nil
	}
	e, err := jsonrpc.DecodeError(resp.Error)
	if err != nil {
		return nil
	}
	return e
}

// clientConn is one connection to a launcher: a goroutine reads frames into
// frames until the connection fails; calls are made one at a time.
type clientConn struct {
	fc     *frameConn
	frames chan []byte
	done   chan struct{} // closed when reading stopped; err says why
	err    error
	stop   chan struct{} // closed by close
	nextID uint64
	once   sync.Once
}

func newClientConn(nc net.Conn) *clientConn {
	cn := &clientConn{fc: newFrameConn(nc), frames: make(chan []byte, 4), done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(cn.done)
		for {
			f, err := cn.fc.read()
			if err != nil {
				cn.err = err
				return
			}
			select {
			case cn.frames <- f:
			case <-cn.stop:
				cn.err = net.ErrClosed
				return
			}
		}
	}()
	return cn
}

func (cn *clientConn) close() {
	cn.once.Do(func() {
		close(cn.stop)
		cn.fc.nc.Close()
	})
}

// call makes one request and waits for its answer, an error frame, the
// end of the connection or ctx.
func (cn *clientConn) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	cn.nextID++
	id := strconv.FormatUint(cn.nextID, 10)
	if err := cn.fc.request([]byte(id), method, params); err != nil {
		return nil, err
	}
	for {
		var frame []byte
		select {
		case frame = <-cn.frames:
		case <-cn.done:
			// Frames read before the end are still in the channel.
			select {
			case frame = <-cn.frames:
			default:
				return nil, fmt.Errorf("connection lost waiting for the answer to %s: %w", method, cn.err)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("no answer to %s in time: %w", method, ctx.Err())
		}
		var resp jsonrpc.Response
		if err := jsonrpc.ParseResponse(frame, &resp); err != nil {
			continue // not an answer
		}
		if string(resp.ID) != id && string(resp.ID) != "null" {
			continue // a late answer to an earlier call
		}
		if resp.Error != nil {
			e, err := jsonrpc.DecodeError(resp.Error)
			if err != nil {
				return nil, fmt.Errorf("bad error object in the answer to %s: %v", method, err)
			}
			return nil, e
		}
		return append(json.RawMessage(nil), resp.Result...), nil
	}
}
