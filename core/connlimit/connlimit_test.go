package connlimit

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

const failsafe = 10 * time.Second

// server is a limited loopback listener whose accepted connections are
// handed to the test.
type server struct {
	l        *Limiter
	addr     string
	accepted chan net.Conn
}

func newServer(t *testing.T, limit int, refuse func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{l: New(limit), addr: ln.Addr().String(), accepted: make(chan net.Conn, 16)}
	wrapped := s.l.Wrap(ln, refuse)
	done := make(chan struct{})
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := wrapped.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		wrapped.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return s
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *server) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.accepted:
		return c
	case <-time.After(failsafe):
		t.Fatal("no connection accepted")
		return nil
	}
}

// readAll reads what the server sends until EOF.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(failsafe))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the refused connection: %v (got %q)", err, b)
	}
	return string(b)
}

func refuseWith(msg string) func(net.Conn) {
	return func(c net.Conn) { c.Write([]byte(msg)) }
}

func TestConnectionsBeyondTheLimitAreRefused(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		refuse func(net.Conn)
		want   string
	}{
		{"refuse function's bytes then EOF", 1, refuseWith("too many connections\n"), "too many connections\n"},
		{"nil refuse function closes at once", 1, nil, ""},
		{"a limit of two refuses the third", 2, refuseWith("busy"), "busy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.limit, tt.refuse)
			for i := range tt.limit {
				dial(t, s.addr)
				s.accept(t)
				if got := s.l.Open(); got != i+1 {
					t.Errorf("Open() = %d after %d connections, want %d", got, i+1, i+1)
				}
			}
			extra := dial(t, s.addr)
			if got := readAll(t, extra); got != tt.want {
				t.Errorf("refused connection read %q, want %q", got, tt.want)
			}
			if got := s.l.Refused(); got != 1 {
				t.Errorf("Refused() = %d, want 1", got)
			}
			if got := s.l.Open(); got != tt.limit {
				t.Errorf("Open() = %d, want %d (the refused one is not counted)", got, tt.limit)
			}
			select {
			case c := <-s.accepted:
				t.Errorf("a connection beyond the limit was handed out: %v", c.RemoteAddr())
			default:
			}
		})
	}
}

func TestClosingFreesAPlace(t *testing.T) {
	tests := []struct {
		name   string
		closes int // times the accepted connection is closed
	}{
		{"closed once", 1},
		{"closed twice frees one place only", 2},
		{"closed three times frees one place only", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, 2, refuseWith("full"))
			dial(t, s.addr)
			first := s.accept(t)
			dial(t, s.addr)
			s.accept(t)
			if s.l.Open() != 2 {
				t.Fatalf("Open() = %d, want 2", s.l.Open())
			}
			for range tt.closes {
				first.Close()
			}
			if got := s.l.Open(); got != 1 {
				t.Fatalf("Open() = %d after closing one connection %d time(s), want 1", got, tt.closes)
			}
			// The freed place is taken by a new connection…
			dial(t, s.addr)
			s.accept(t)
			// …and the next one is refused: only one place was freed.
			extra := dial(t, s.addr)
			if got := readAll(t, extra); got != "full" {
				t.Errorf("a connection over the limit read %q, want it refused", got)
			}
			if s.l.Refused() != 1 || s.l.Open() != 2 {
				t.Errorf("Refused() = %d, Open() = %d; want 1 and 2", s.l.Refused(), s.l.Open())
			}
		})
	}
}

func TestLimitAndCounters(t *testing.T) {
	tests := []struct {
		name  string
		limit int
	}{
		{"limit 1", 1},
		{"limit 100", 100},
		{"limit 0 refuses everything", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.limit)
			if l.Limit() != tt.limit || l.Open() != 0 || l.Refused() != 0 {
				t.Errorf("new limiter: Limit %d Open %d Refused %d", l.Limit(), l.Open(), l.Refused())
			}
		})
	}
	t.Run("limit 0 refuses the first connection", func(t *testing.T) {
		s := newServer(t, 0, refuseWith("no"))
		if got := readAll(t, dial(t, s.addr)); got != "no" {
			t.Errorf("read %q, want the refusal", got)
		}
	})
}

func TestRefusalHasADeadline(t *testing.T) {
	// The refuse function runs with a deadline on the connection (within
	// a second): one that blocks on a client that sends nothing ends, and
	// the connection is closed.
	errc := make(chan error, 1)
	s := newServer(t, 0, func(c net.Conn) {
		_, err := c.Read(make([]byte, 1)) // the client sends nothing
		errc <- err
	})
	c := dial(t, s.addr)
	if got := readAll(t, c); got != "" {
		t.Errorf("read %q, want EOF", got)
	}
	err := <-errc
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read in refuse = %v, want a deadline error", err)
	}
}

// fakeConn is a net.Conn with optional CloseRead and SyscallConn.
type fakeConn struct {
	net.Conn
	closed, closedRead int
}

func (f *fakeConn) Close() error     { f.closed++; return nil }
func (f *fakeConn) CloseRead() error { f.closedRead++; return nil }

type plainConn struct {
	net.Conn
	closed int
}

func (p *plainConn) Close() error { p.closed++; return nil }

// oneListener hands out one connection, then fails.
type oneListener struct {
	c    net.Conn
	done bool
}

func (l *oneListener) Accept() (net.Conn, error) {
	if l.done {
		return nil, errors.New("no more")
	}
	l.done = true
	return l.c, nil
}
func (l *oneListener) Close() error   { return nil }
func (l *oneListener) Addr() net.Addr { return &net.TCPAddr{} }

func wrapOne(t *testing.T, c net.Conn) (*Limiter, net.Conn) {
	t.Helper()
	l := New(1)
	got, err := l.Wrap(&oneListener{c: c}, nil).Accept()
	if err != nil {
		t.Fatal(err)
	}
	return l, got
}

func TestCloseReadPassesThrough(t *testing.T) {
	t.Run("underlying CloseRead is used and keeps the place", func(t *testing.T) {
		f := &fakeConn{}
		l, c := wrapOne(t, f)
		if err := c.(interface{ CloseRead() error }).CloseRead(); err != nil {
			t.Fatal(err)
		}
		if f.closedRead != 1 || f.closed != 0 || l.Open() != 1 {
			t.Errorf("closedRead %d closed %d Open %d; want 1, 0, 1", f.closedRead, f.closed, l.Open())
		}
	})
	t.Run("without CloseRead the connection is closed and its place freed", func(t *testing.T) {
		p := &plainConn{}
		l, c := wrapOne(t, p)
		if err := c.(interface{ CloseRead() error }).CloseRead(); err != nil {
			t.Fatal(err)
		}
		if p.closed != 1 || l.Open() != 0 {
			t.Errorf("closed %d Open %d; want 1 and 0", p.closed, l.Open())
		}
	})
	t.Run("a real TCP connection half-closes: the peer reads EOF", func(t *testing.T) {
		s := newServer(t, 1, nil)
		client := dial(t, s.addr)
		sc := s.accept(t)
		if err := sc.(interface{ CloseRead() error }).CloseRead(); err != nil {
			t.Fatal(err)
		}
		// The server can still write after closing its reading side.
		if _, err := sc.Write([]byte("bye")); err != nil {
			t.Fatalf("write after CloseRead: %v", err)
		}
		buf := make([]byte, 3)
		client.SetReadDeadline(time.Now().Add(failsafe))
		if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "bye" {
			t.Errorf("client read %q, %v", buf, err)
		}
		if s.l.Open() != 1 {
			t.Errorf("Open() = %d after CloseRead, want 1", s.l.Open())
		}
	})
}

func TestSyscallConnPassesThrough(t *testing.T) {
	t.Run("a TCP connection exposes its descriptor", func(t *testing.T) {
		s := newServer(t, 1, nil)
		dial(t, s.addr)
		sc := s.accept(t)
		raw, err := sc.(syscall.Conn).SyscallConn()
		if err != nil || raw == nil {
			t.Fatalf("SyscallConn = %v, %v", raw, err)
		}
		var fd uintptr
		if err := raw.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
			t.Errorf("Control: fd %d, %v", fd, err)
		}
	})
	t.Run("a connection without a descriptor is an error", func(t *testing.T) {
		_, c := wrapOne(t, &plainConn{})
		raw, err := c.(syscall.Conn).SyscallConn()
		if err == nil || raw != nil {
			t.Errorf("SyscallConn = %v, %v; want an error", raw, err)
		}
	})
}

func TestAcceptErrorIsReturned(t *testing.T) {
	l := New(1)
	ln := l.Wrap(&oneListener{done: true}, nil)
	if _, err := ln.Accept(); err == nil {
		t.Error("Accept did not return the listener's error")
	}
}
