// Package servant is the Go library for writing an mserve servant: declare
// functions with typed parameters, serve them on a port, and mserve (or any
// client speaking the native protocol) can call them.
//
//	s := servant.New(servant.Slots(1))
//	s.Handle("echo(x any)", func(ctx context.Context, c *servant.Call) (any, error) {
//		var x json.RawMessage
//		if err := c.Bind(&x); err != nil {
//			return nil, err
//		}
//		return x, nil
//	})
//	servant.Main(s) // listens where mserve says (MSERVE_SERVANT_ADDR)
//
// A servant runs at most Slots calls at once, in arrival order; calls beyond
// that wait inside the servant. Each response carries an info record with
// the time spent in the handler ("handler_ns") plus whatever the handler
// added with Call.SetInfo; mserve merges it into the info it returns.
package servant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/decl"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Handler runs one call. It returns the result (any value encoding/json can
// marshal, or a json.RawMessage sent as is) or an error; a *jsonrpc.Error
// chooses the code the client sees, any other error becomes an internal
// error with the error's text. ctx is cancelled when the caller gives up.
type Handler func(ctx context.Context, c *Call) (any, error)

// Servant serves declared functions. Create it with New, declare functions
// with Handle, then Serve.
type Servant struct {
	name     string
	hostName bool // name is only the host name (not set by option or environment)
	slots    int
	tags     []string
	maxFrame int
	secret   string
	log      *zap.Logger

	funcs map[string]*entry
	order []string
	jobs  chan *job

	mu         sync.Mutex
	lns        []net.Listener
	conns      map[*conn]struct{}
	started    bool
	stopping   bool
	jobsClosed bool
	running    sync.WaitGroup // jobs accepted and not yet answered
	workers    sync.WaitGroup
}

type entry struct {
	fn    *decl.Func
	check *decl.Checker
	h     Handler
}

// Option configures a Servant.
type Option func(*Servant)

// Name sets the name the servant reports to mserve (default: the
// MSERVE_SERVANT_NAME environment variable, else the host name).
func Name(n string) Option { return func(s *Servant) { s.name, s.hostName = n, false } }

// Slots sets how many calls the servant runs at once (default 1, like a q
// process). mserve sends it no more than that unless told otherwise.
func Slots(n int) Option { return func(s *Servant) { s.slots = max(n, 1) } }

// Tags sets labels mserve's algorithms may route by, such as "gpu" or "hdb".
func Tags(tags ...string) Option { return func(s *Servant) { s.tags = tags } }

// Secret makes the servant take calls only on connections whose rpc.hello
// presents this secret, so that only its balancer can call it (default: the
// MSERVE_SERVANT_SECRET environment variable, which mserve sets for the
// servants it starts; "" accepts any caller).
func Secret(secret string) Option { return func(s *Servant) { s.secret = secret } }

// MaxFrame sets the largest frame accepted (default wire.DefaultMaxFrame).
func MaxFrame(n int) Option { return func(s *Servant) { s.maxFrame = n } }

// Logger sets the logger for the servant's own events (default: warnings
// and errors to stderr).
func Logger(l *zap.Logger) Option { return func(s *Servant) { s.log = l } }

// New returns a servant with no functions.
func New(opts ...Option) *Servant {
	s := &Servant{slots: 1, maxFrame: wire.DefaultMaxFrame, funcs: map[string]*entry{}, conns: map[*conn]struct{}{}}
	s.name = os.Getenv("MSERVE_SERVANT_NAME")
	s.secret = os.Getenv("MSERVE_SERVANT_SECRET")
	if s.name == "" {
		s.name, _ = os.Hostname()
		s.hostName = true
	}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		cfg := zap.NewProductionConfig()
		cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
		s.log, _ = cfg.Build()
	}
	return s
}

// Handle declares a function and its handler. declaration is a signature
// such as "proc1(sym symbol)" (see package decl). It fails on a malformed
// declaration, a duplicate name, or after Serve has started.
func (s *Servant) Handle(declaration string, h Handler) error {
	fn, err := decl.Parse(declaration)
	if err != nil {
		return fmt.Errorf("declaration %q: %w", declaration, err)
	}
	check, err := decl.Compile(fn)
	if err != nil {
		return fmt.Errorf("declaration %q: %w", declaration, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("functions must be declared before Serve")
	}
	if _, dup := s.funcs[fn.Name]; dup {
		return fmt.Errorf("function %q declared twice", fn.Name)
	}
	s.funcs[fn.Name] = &entry{fn: fn, check: check, h: h}
	s.order = append(s.order, fn.Name)
	return nil
}

// MustHandle is Handle for declarations fixed in code; it panics on error.
func (s *Servant) MustHandle(declaration string, h Handler) {
	if err := s.Handle(declaration, h); err != nil {
		panic(err)
	}
}

// Declarations returns the declarations of the servant's functions, in the
// order they were declared.
func (s *Servant) Declarations() []string {
	out := make([]string, len(s.order))
	for i, n := range s.order {
		out[i] = s.funcs[n].fn.String()
	}
	return out
}

func (s *Servant) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	s.jobs = make(chan *job, 4096)
	for range s.slots {
		s.workers.Add(1)
		go s.work()
	}
}

// ListenAndServe listens on addr and serves until Shutdown.
func (s *Servant) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln until Shutdown or until ln fails.
func (s *Servant) Serve(ln net.Listener) error {
	s.start()
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isStopping() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		c := &conn{s: s, nc: nc, w: wire.NewWriter(nc, 0), pending: map[string]*job{}}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting connections and calls, waits for the calls
// already accepted to be answered (or ctx to end), then closes every
// connection.
func (s *Servant) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	var err error
	select {
	case <-done:
		// Every accepted job has been answered and no new one can come
		// (stopping is set): the workers may end.
		s.mu.Lock()
		if s.jobs != nil && !s.jobsClosed {
			close(s.jobs)
			s.jobsClosed = true
		}
		s.mu.Unlock()
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.w.Close()
	}
	return err
}

// EnvAddr returns the address mserve asked a spawned servant to listen on
// (MSERVE_SERVANT_ADDR), or def when it is not set.
func EnvAddr(def string) string {
	if a := os.Getenv("MSERVE_SERVANT_ADDR"); a != "" {
		return a
	}
	return def
}

// Main serves s on addr until SIGTERM or SIGINT, then shuts down gracefully
// (up to 10 seconds) and exits. An address of "" means EnvAddr("127.0.0.1:7001").
// When MSERVE_BALANCER is set, s registers with the balancer there instead
// (with the secret in MSERVE_REGISTER_SECRET; see Register) and listens on
// no address. It never returns.
func Main(s *Servant, addr string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	if balancer := os.Getenv(EnvBalancer); balancer != "" {
		go func() { // Register ends with Shutdown, below
			if err := s.Register(context.Background(), balancer, os.Getenv(EnvRegisterSecret)); err != nil {
				served <- err
			}
		}()
	} else {
		if addr == "" {
			addr = EnvAddr("127.0.0.1:7001")
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "servant: %v\n", err)
			os.Exit(1)
		}
		go func() { served <- s.Serve(ln) }()
	}
	select {
	case err := <-served:
		fmt.Fprintf(os.Stderr, "servant: %v\n", err)
		os.Exit(1)
	case <-sig:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// job is one call accepted by the servant.
type job struct {
	c      *conn
	id     []byte // nil for a notification
	key    string // id as a map key
	method string
	params []byte
	e      *entry
	ctx    context.Context
	cancel context.CancelFunc
}

func (s *Servant) work() {
	defer s.workers.Done()
	for j := range s.jobs {
		s.run(j)
	}
}

func (s *Servant) run(j *job) {
	defer s.running.Done()
	defer j.cancel()
	defer j.c.forget(j)
	if err := j.ctx.Err(); err != nil {
		if j.id != nil {
			j.c.respondError(j.id, jsonrpc.Errorf(jsonrpc.Cancelled, "cancelled before it ran"))
		}
		return
	}
	// The servant checks its arguments against its own declaration too,
	// whoever sent the call: nothing that breaks it reaches the handler.
	params, perr := j.e.check.Check(j.params)
	if perr != nil {
		if j.id != nil {
			j.c.respondError(j.id, perr)
		}
		return
	}
	call := &Call{Method: j.method, Params: params, fn: j.e.fn}
	start := time.Now()
	res, err := s.invoke(j, call)
	took := time.Since(start)
	if j.id == nil {
		return
	}
	var e *jsonrpc.Error
	var raw []byte
	if err == nil {
		if rm, ok := res.(json.RawMessage); ok && len(rm) > 0 && jsonrpc.Valid(rm) {
			raw = rm // sent as is: json.Marshal would compact it and escape HTML characters
		} else if raw, err = json.Marshal(res); err != nil {
			err = fmt.Errorf("%s returned a value that cannot be encoded as JSON: %v", j.method, err)
		}
	}
	if err != nil {
		if !errors.As(err, &e) {
			e = &jsonrpc.Error{Code: jsonrpc.InternalError, Message: err.Error()}
		}
	}
	j.c.respond(j.id, raw, e, call.appendInfo(took))
}

// invoke runs the handler, turning a panic into an internal error.
func (s *Servant) invoke(j *job, call *Call) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("function panicked", zap.String("method", j.method), zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			res, err = nil, jsonrpc.Errorf(jsonrpc.InternalError, "%s failed inside the servant (panic); see the servant's log", j.method)
		}
	}()
	return j.e.h(j.ctx, call)
}

// hello answers rpc.hello.
func (s *Servant) hello() []byte {
	b, _ := json.Marshal(wire.HelloResult{
		Protocol: wire.ProtocolVersion, Name: s.name, Slots: s.slots, Tags: s.tags, Functions: s.Declarations(),
	})
	return b
}

// Call is one call as a handler sees it.
type Call struct {
	Method string          // the function called
	Params json.RawMessage // the arguments as sent (array, object, or nil)

	fn   *decl.Func
	args []json.RawMessage
	info []infoField
}

type infoField struct {
	key   string
	value json.RawMessage
}

// SetInfo adds key to the info record returned with the result, which
// mserve merges into its own (mserve's keys win). value must be
// JSON-encodable.
func (c *Call) SetInfo(key string, value any) {
	raw, err := json.Marshal(value)
	if err != nil {
		raw, _ = json.Marshal(fmt.Sprint(value))
	}
	c.info = append(c.info, infoField{key, raw})
}

func (c *Call) appendInfo(took time.Duration) []byte {
	b := append([]byte(`{"handler_ns":`), strconv.FormatInt(int64(took), 10)...)
	for _, f := range c.info {
		b = append(b, ',')
		b = jsonrpc.AppendString(b, f.key)
		b = append(b, ':')
		b = append(b, f.value...)
	}
	return append(b, '}')
}

// Args returns the raw argument for each declared parameter, in declaration
// order, with defaults filled in. Positional arguments map by position,
// named arguments by name.
func (c *Call) Args() ([]json.RawMessage, error) {
	if c.args != nil {
		return c.args, nil
	}
	ps := c.fn.Params
	args := make([]json.RawMessage, len(ps))
	switch {
	case len(c.Params) == 0 || string(c.Params) == "null":
	case c.Params[0] == '[':
		n := 0
		jsonrpc.Elements(c.Params, func(v []byte) bool {
			if n < len(args) {
				args[n] = v
			}
			n++
			return true
		})
		if n > len(ps) {
			return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s takes %d argument(s), got %d", c.fn.Name, len(ps), n)
		}
	case c.Params[0] == '{':
		var unknown []string
		jsonrpc.Members(c.Params, func(k, v []byte) bool {
			name, _ := jsonrpc.Unquote(k)
			for i, p := range ps {
				if p.Name == name {
					args[i] = v
					return true
				}
			}
			unknown = append(unknown, name)
			return true
		})
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s has no parameter %q", c.fn.Name, unknown[0])
		}
	default:
		return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: params must be an array or an object")
	}
	for i, p := range ps {
		if args[i] == nil {
			if !p.Optional() {
				return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: missing required parameter %q (%s)", c.fn.Name, p.Name, p.Type)
			}
			args[i] = p.Default
		}
	}
	c.args = args
	return args, nil
}

// Bind decodes the arguments into ptrs, one pointer per declared parameter
// in declaration order (fewer pointers bind only the first parameters). A
// missing, surplus or undecodable argument is an invalid-params error that
// names the parameter.
func (c *Call) Bind(ptrs ...any) error {
	args, err := c.Args()
	if err != nil {
		return err
	}
	if len(ptrs) > len(args) {
		return fmt.Errorf("servant bug: Bind got %d pointers for %d parameters of %s", len(ptrs), len(args), c.fn.Name)
	}
	for i, ptr := range ptrs {
		if raw, ok := ptr.(*json.RawMessage); ok {
			*raw = args[i]
			continue
		}
		arg := args[i]
		if p := &c.fn.Params[i]; p.Type.Name == "int" {
			// 1e3 and 97.0 are ints in a declaration: give encoding/json
			// the digits it expects.
			if v, err := p.Check(arg); err == nil {
				arg = strconv.AppendInt(nil, v.(int64), 10)
			}
		}
		if err := json.Unmarshal(arg, ptr); err != nil {
			p := c.fn.Params[i]
			return jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s: parameter %q (%s): %v", c.fn.Name, p.Name, p.Type, unwrapJSON(err))
		}
	}
	return nil
}

func unwrapJSON(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("cannot use a JSON %s as %s", te.Value, te.Type)
	}
	return err.Error()
}
