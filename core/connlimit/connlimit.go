// Package connlimit bounds how many client connections mserve holds open
// at once, over all its front ends: a flood of idle connections cannot
// exhaust memory or file descriptors. A connection beyond the limit is told
// why, in its front end's protocol, and closed.
package connlimit

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limiter is a shared bound on open connections.
type Limiter struct {
	sem     chan struct{}
	refused atomic.Uint64
}

// New returns a limiter allowing n connections at once.
func New(n int) *Limiter { return &Limiter{sem: make(chan struct{}, n)} }

// Open returns the number of connections open now.
func (l *Limiter) Open() int { return len(l.sem) }

// Refused returns how many connections were refused.
func (l *Limiter) Refused() uint64 { return l.refused.Load() }

// Limit returns the bound.
func (l *Limiter) Limit() int { return cap(l.sem) }

// Wrap returns a listener that hands out connections while the limit
// allows; beyond it, refuse writes a short explanation to the connection
// (within a second) before it is closed.
func (l *Limiter) Wrap(ln net.Listener, refuse func(net.Conn)) net.Listener {
	return &listener{Listener: ln, l: l, refuse: refuse}
}

type listener struct {
	net.Listener
	l      *Limiter
	refuse func(net.Conn)
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case ln.l.sem <- struct{}{}:
			return &conn{Conn: c, release: func() { <-ln.l.sem }}, nil
		default:
			ln.l.refused.Add(1)
			go func() {
				c.SetDeadline(time.Now().Add(time.Second))
				if ln.refuse != nil {
					ln.refuse(c)
				}
				c.Close()
			}()
		}
	}
}

// conn gives its place back when closed.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseRead closes the reading side when the underlying connection can.
func (c *conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return c.Close()
}

// SyscallConn exposes the underlying file descriptor, for non-blocking
// writes (sdk/wire.Writer).
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("connection has no file descriptor")
}
