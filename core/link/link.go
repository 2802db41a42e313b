// Package link keeps mserve's persistent connection to one servant that
// speaks the native protocol: it dials and redials with backoff, greets the
// servant with rpc.hello, writes calls with ids of its own, and reports
// results and losses to the engine.
package link

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/decl"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Config sets up a Link.
type Config struct {
	Name   string // the servant's name, for logs and the hello
	Addr   string // host:port to dial
	Secret string // sent in the hello when set
	// SameName refuses a servant whose hello gives a name other than
	// Name: for servants mserve started (and named), another process on
	// the address is not the one it started.
	SameName    bool
	MaxFrame    int           // largest frame accepted from the servant; 0 means wire.DefaultMaxFrame
	DialTimeout time.Duration // per attempt; 0 means 2s
	HelloWait   time.Duration // how long the servant may take to answer the hello; 0 means 5s
	MinBackoff  time.Duration // first wait between dial attempts; 0 means 10ms
	MaxBackoff  time.Duration // longest wait; 0 means 2s
	Log         *zap.Logger
	// Health checks: every HealthInterval the link sends rpc.ping; a
	// servant that does not answer within HealthTimeout HealthFall times
	// in a row is taken out of dispatch until it answers HealthRise times
	// in a row. A zero HealthInterval turns checks off.
	HealthInterval time.Duration
	HealthTimeout  time.Duration // default HealthInterval/2
	HealthFall     int           // default 3
	HealthRise     int           // default 2
	// OnHello, when set, receives the declarations the servant announced
	// on each connection (nil when it declared nothing), before the servant
	// takes calls.
	OnHello func(functions []string)
	// HTTPConns, for a servant over HTTP, caps the requests in flight to
	// it: while that many are, the calls sent meanwhile wait in the link
	// and go together as one JSON-RPC batch when a request ends. 0 sends
	// each call as a request of its own at once.
	HTTPConns int
}

// ErrDown is returned by Send while the link has no connection.
var ErrDown = errors.New("servant link is down")

// Link is the connection to one servant. It implements engine.Transport.
type Link struct {
	cfg     Config
	log     *zap.Logger
	servant *engine.Servant
	kick    chan struct{}
	adopted *adopted // a connection the servant opened (registration); nil for links that dial

	mu        sync.Mutex
	conn      net.Conn
	w         *wire.Writer
	up        bool
	nextID    uint64
	pending   map[uint64]*engine.Call
	functions []string
	pingID    uint64        // id of the health check awaiting its answer
	pong      chan struct{} // signalled when it comes
}

// New returns a link that is not yet running. Attach it to its engine
// servant, then call Run.
func New(cfg Config) *Link {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.HelloWait <= 0 {
		cfg.HelloWait = 5 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 10 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Second
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = cfg.HealthInterval / 2
	}
	if cfg.HealthFall <= 0 {
		cfg.HealthFall = 3
	}
	if cfg.HealthRise <= 0 {
		cfg.HealthRise = 2
	}
	return &Link{
		pong:    make(chan struct{}, 1),
		cfg:     cfg,
		log:     log.With(zap.String("servant", cfg.Name), zap.String("addr", cfg.Addr)),
		kick:    make(chan struct{}, 1),
		pending: map[uint64]*engine.Call{},
	}
}

// adopted is a connection a servant opened and registered on.
type adopted struct {
	conn  net.Conn
	r     *wire.Reader
	hello *wire.HelloResult
}

// Adopt returns a link over a connection the servant opened to mserve and
// registered on (rpc.register), with what it announced there. Run serves
// that one connection until it drops or ctx ends, reports the loss, and
// returns: the link never dials, since reconnecting is the servant's part.
// cfg.Addr is used only in logs.
func Adopt(cfg Config, conn net.Conn, r *wire.Reader, announced *wire.HelloResult) *Link {
	l := New(cfg)
	l.adopted = &adopted{conn: conn, r: r, hello: announced}
	return l
}

// Attach tells the link which engine servant it reports to.
func (l *Link) Attach(s *engine.Servant) { l.servant = s }

// Functions returns the declarations the servant announced in its last
// hello, or nil.
func (l *Link) Functions() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.functions
}

// Kick makes a waiting link dial again at once, for example because the
// servant's process has just been restarted.
func (l *Link) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run dials, serves and redials until ctx ends. Each lost connection is
// reported to the engine once. An adopted link serves its connection once.
func (l *Link) Run(ctx context.Context) {
	if a := l.adopted; a != nil {
		l.serve(ctx, a.conn, a.r, a.hello)
		return
	}
	backoff := l.cfg.MinBackoff
	failures := 0
	for ctx.Err() == nil {
		conn, r, hello, err := l.connect(ctx)
		if err == nil {
			failures = 0
			began := time.Now()
			l.serve(ctx, conn, r, hello)
			if time.Since(began) >= stableConn {
				backoff = l.cfg.MinBackoff
				continue
			}
			// It dropped soon after the hello (a servant that takes the
			// connection and fails): back off rather than hammer it.
		} else {
			failures++
			if failures == 10 || failures%100 == 0 {
				l.log.Warn("servant unreachable; still retrying", zap.Int("attempts", failures), zap.Error(err))
			} else if ce := l.log.Check(zap.DebugLevel, "dial failed"); ce != nil {
				ce.Write(zap.Error(err))
			}
		}
		if !l.wait(ctx, backoff) {
			break
		}
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
}

// stableConn is how long a connection must last for the next redial to
// start again from the shortest backoff.
const stableConn = time.Second

// wait sleeps for d, or until kicked, or until ctx ends (false).
func (l *Link) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-l.kick:
	case <-t.C:
	}
	return true
}

// connect dials the servant and exchanges hellos.
func (l *Link) connect(ctx context.Context) (net.Conn, *wire.Reader, *wire.HelloResult, error) {
	d := net.Dialer{Timeout: l.cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", l.cfg.Addr)
	if err != nil {
		return nil, nil, nil, err
	}
	r := wire.NewReader(conn, l.cfg.MaxFrame)
	hello, err := l.greet(conn, r)
	if err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("hello: %w", err)
	}
	return conn, r, hello, nil
}

// greet sends rpc.hello and reads the answer. A servant that does not know
// rpc.hello (a plain JSON-RPC server) is taken with default settings.
func (l *Link) greet(conn net.Conn, r *wire.Reader) (*wire.HelloResult, error) {
	params, _ := json.Marshal(wire.HelloParams{
		Protocol: wire.ProtocolVersion, Balancer: "mserve", Servant: l.cfg.Name, Secret: l.cfg.Secret,
	})
	conn.SetDeadline(time.Now().Add(l.cfg.HelloWait))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(wire.AppendFrame(nil, jsonrpc.AppendRequest(nil, []byte("0"), wire.MethodHello, params))); err != nil {
		return nil, err
	}
	frame, err := r.ReadFrame(nil)
	if err != nil {
		return nil, err
	}
	var resp jsonrpc.Response
	if err := jsonrpc.ParseResponse(frame, &resp); err != nil {
		return nil, err
	}
	hello := &wire.HelloResult{}
	if resp.Error != nil {
		e, err := jsonrpc.DecodeError(resp.Error)
		if err != nil {
			return nil, err
		}
		if e.Code == jsonrpc.MethodNotFound {
			return hello, nil
		}
		return nil, e
	}
	if err := json.Unmarshal(resp.Result, hello); err != nil {
		return nil, fmt.Errorf("malformed hello result: %w", err)
	}
	if hello.Protocol != 0 && hello.Protocol != wire.ProtocolVersion {
		return nil, fmt.Errorf("servant speaks protocol %d, mserve speaks %d", hello.Protocol, wire.ProtocolVersion)
	}
	if l.cfg.SameName && hello.Name != "" && hello.Name != l.cfg.Name {
		return nil, fmt.Errorf("the servant at %s says it is %q, not %q: another process holds the port mserve gave %s", l.cfg.Addr, hello.Name, l.cfg.Name, l.cfg.Name)
	}
	return hello, nil
}

// functionNames returns the names of the declared functions, or nil when
// the servant declared none (a plain JSON-RPC server, sent anything).
func functionNames(decls []string) []string {
	if len(decls) == 0 {
		return nil
	}
	names := make([]string, 0, len(decls))
	for _, d := range decls {
		if f, err := decl.Parse(d); err == nil {
			names = append(names, f.Name)
		}
	}
	return names
}

// serve runs one connection until it fails, then reports the loss.
func (l *Link) serve(ctx context.Context, conn net.Conn, r *wire.Reader, hello *wire.HelloResult) {
	l.mu.Lock()
	l.conn, l.w, l.up = conn, wire.NewWriter(conn, 0), true
	l.functions = hello.Functions
	l.mu.Unlock()
	if l.cfg.OnHello != nil {
		l.cfg.OnHello(hello.Functions)
	}
	l.servant.Up(engine.Announce{Slots: hello.Slots, Tags: hello.Tags, Functions: functionNames(hello.Functions), Balancer: hello.Balancer})
	l.log.Info("servant up", zap.Int("slots", hello.Slots), zap.Strings("tags", hello.Tags), zap.Int("functions", len(hello.Functions)))

	connCtx, endConn := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	if l.cfg.HealthInterval > 0 {
		go l.check(connCtx)
	}
	err := l.read(r)
	stop()
	endConn()

	l.mu.Lock()
	l.up = false
	w := l.w
	lost := make([]*engine.Call, 0, len(l.pending))
	for id, c := range l.pending {
		lost = append(lost, c)
		delete(l.pending, id)
	}
	l.mu.Unlock()
	w.Abort()
	if ctx.Err() != nil {
		err = errors.New("mserve is stopping")
		l.log.Info("servant link closed", zap.Int("lost_calls", len(lost)))
	} else {
		l.log.Warn("servant down", zap.Error(err), zap.Int("lost_calls", len(lost)))
	}
	l.servant.Down(lost, err)
}

// read handles responses until the connection fails. The writes a burst
// of responses causes (answers to clients, next calls to this servant) go
// out together when the burst is done.
func (l *Link) read(r *wire.Reader) error {
	var buf []byte
	var resp jsonrpc.Response
	var f wire.Flusher
	defer f.Flush()
	for {
		if !r.HasFrame() {
			f.Flush()
		}
		frame, err := r.ReadFrame(buf)
		if err != nil {
			return err
		}
		buf = frame
		if err := jsonrpc.ParseResponse(frame, &resp); err != nil {
			return fmt.Errorf("servant broke the protocol: %w", err)
		}
		id, err := strconv.ParseUint(string(resp.ID), 10, 64)
		if err != nil {
			return fmt.Errorf("servant broke the protocol: response id %s is not one mserve sent", resp.ID)
		}
		l.mu.Lock()
		c := l.pending[id]
		delete(l.pending, id)
		isPong := c == nil && id == l.pingID
		l.mu.Unlock()
		if isPong {
			select {
			case l.pong <- struct{}{}:
			default:
			}
		}
		if c == nil {
			continue // the answer to a hello or health check, or a duplicate
		}
		l.servant.Done(c, &resp, &f)
	}
}

// check runs health checks on one connection until ctx ends. Any answer
// to rpc.ping counts (a plain JSON-RPC server's "method not found" too):
// it shows the servant is alive and reading.
func (l *Link) check(ctx context.Context) {
	runChecks(ctx, l.cfg, l.log, l.servant, func(ctx context.Context) error {
		if !l.ping(ctx) {
			return fmt.Errorf("no answer to rpc.ping within %v", l.cfg.HealthTimeout)
		}
		return nil
	})
}

// runChecks probes a servant every HealthInterval until ctx ends, taking it
// out of dispatch after HealthFall failed probes in a row and putting it
// back after HealthRise good ones, whoever took it out (these checks, or
// failing requests).
func runChecks(ctx context.Context, cfg Config, log *zap.Logger, s *engine.Servant, probe func(context.Context) error) {
	t := time.NewTicker(cfg.HealthInterval)
	defer t.Stop()
	fails, oks := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := probe(ctx)
		healthy := !s.FailingChecks()
		if err == nil {
			fails, oks = 0, oks+1
			if !healthy && oks >= cfg.HealthRise {
				log.Info("servant passes health checks again; back in dispatch")
				s.SetHealth(true)
			}
			continue
		}
		oks, fails = 0, fails+1
		if healthy && fails >= cfg.HealthFall {
			log.Warn("servant fails health checks; out of dispatch until it answers", zap.Int("missed", fails), zap.Error(err))
			s.SetHealth(false)
		}
	}
}

// ping sends one rpc.ping and reports whether it was answered in time.
func (l *Link) ping(ctx context.Context) bool {
	select { // drop a late answer to an earlier ping
	case <-l.pong:
	default:
	}
	l.mu.Lock()
	if !l.up {
		l.mu.Unlock()
		return false
	}
	l.nextID++
	id := l.nextID
	l.pingID = id
	w := l.w
	l.mu.Unlock()
	writeControl(w, `{"jsonrpc":"2.0","id":`, id, `,"method":"`+wire.MethodPing+`"}`)
	t := time.NewTimer(l.cfg.HealthTimeout)
	defer t.Stop()
	select {
	case <-l.pong:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Send implements engine.Transport.
func (l *Link) Send(c *engine.Call, f *wire.Flusher) error {
	l.mu.Lock()
	if !l.up {
		l.mu.Unlock()
		return ErrDown
	}
	l.nextID++
	id := l.nextID
	c.LinkID = id
	l.pending[id] = c
	w := l.w
	l.mu.Unlock()

	// From here on the call is pending: it is reported through Done or Down
	// whatever happens to the write.
	buf, start := wire.BeginFrame(w.Begin())
	buf = append(buf, `{"jsonrpc":"2.0","id":`...)
	buf = strconv.AppendUint(buf, id, 10)
	buf = append(buf, `,"method":`...)
	buf = jsonrpc.AppendString(buf, c.Method)
	if c.Params != nil {
		buf = append(buf, `,"params":`...)
		buf = append(buf, c.Params...)
	}
	buf = append(buf, '}')
	buf, err := wire.EndFrame(buf, start, 2*l.cfg.MaxFrame)
	w.EndLater(buf, f)
	if err != nil {
		l.fail(id, &jsonrpc.Error{Code: jsonrpc.TooLarge, Message: "call too large for the servant link: " + err.Error()})
	}
	return nil
}

// fail answers the pending call id with e without involving the servant.
func (l *Link) fail(id uint64, e *jsonrpc.Error) {
	l.mu.Lock()
	c := l.pending[id]
	delete(l.pending, id)
	l.mu.Unlock()
	if c != nil {
		l.servant.Done(c, &jsonrpc.Response{Error: jsonrpc.AppendError(nil, e)}, nil)
	}
}

// Cancel implements engine.Transport: it sends rpc.cancel for c.
func (l *Link) Cancel(c *engine.Call) {
	l.mu.Lock()
	w, ok := l.w, l.up && l.pending[c.LinkID] == c
	l.mu.Unlock()
	if !ok {
		return
	}
	writeControl(w, `{"jsonrpc":"2.0","method":"`+wire.MethodCancel+`","params":[`, c.LinkID, "]}")
}

// writeControl writes the frame head + id + tail, for mserve's own small
// messages (rpc.ping, rpc.cancel).
func writeControl(w *wire.Writer, head string, id uint64, tail string) {
	buf, start := wire.BeginFrame(w.Begin())
	buf = append(buf, head...)
	buf = strconv.AppendUint(buf, id, 10)
	buf = append(buf, tail...)
	buf, _ = wire.EndFrame(buf, start, 0)
	w.End(buf)
}

var _ engine.Transport = (*Link)(nil)
