// Package etcdtest runs a real etcd server inside a test process, on free
// loopback ports with its data in the test's temporary folder, so that
// tests of etcd discovery and shared résumés need nothing outside Go. It
// is for tests only: nothing that mserve ships imports it.
package etcdtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/mserve/mserve/sdk/freeport"
)

// Server is an embedded single-member etcd cluster. Clients reach it
// through a Proxy, so that Stop can drop their connections at once (etcd
// itself waits seconds for open watches to end).
type Server struct {
	// Endpoint is the client address, host:port.
	Endpoint string
	proxy    *Proxy

	t                  testing.TB
	dir                string
	clientURL, peerURL url.URL
	mu                 sync.Mutex
	etcd               *embed.Etcd
}

// Timing of the test server: a fast heartbeat makes its minimum lease TTL
// 1s (etcd's default configuration, heartbeat 100ms and election 1s,
// grants nothing under 2s).
const (
	TickMs     = 20
	ElectionMs = 200
)

// Start starts a server for the test; it is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir()}
	var err error
	for attempt := 0; ; attempt++ { // free ports can be taken between finding and using them
		s.clientURL = url.URL{Scheme: "http", Host: freeport.Test(t)}
		s.peerURL = url.URL{Scheme: "http", Host: freeport.Test(t)}
		if err = s.start(); err == nil || attempt == 2 {
			break
		}
	}
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(s.Stop)
	s.proxy = NewProxy(t, s.clientURL.Host)
	s.Endpoint = s.proxy.Addr
	return s
}

func (s *Server) start() error {
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = s.dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{s.clientURL}, []url.URL{s.clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{s.peerURL}, []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.TickMs, cfg.ElectionMs = TickMs, ElectionMs
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("etcd not ready after 30s")
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	return nil
}

// Stop stops the server (clients see it unreachable); Restart brings it
// back on the same address with the same data.
func (s *Server) Stop() {
	if s.proxy != nil {
		s.proxy.Cut()
	}
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts the server again after Stop, on the same address and
// data.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("etcdtest: restart: %v", err)
	}
	s.proxy.Restore()
}

// Client returns a client of the server (or of endpoint, when given: a
// Proxy's address), closed when the test ends. It redials quickly after a
// connection is lost, so that tests need not wait for gRPC's backoff.
func (s *Server) Client(endpoint ...string) *clientv3.Client {
	s.t.Helper()
	return NewClient(s.t, append(endpoint, s.Endpoint)[0])
}

// NewClient returns a client of endpoint, closed when the test ends, that
// redials quickly after a connection is lost.
func NewClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond},
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Compact compacts the server's history up to its current revision, so
// that a watch resuming from an older revision fails as compacted.
func (s *Server) Compact(ctx context.Context) (int64, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.clientURL.Host}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	r, err := c.Get(ctx, "compact-probe")
	if err != nil {
		return 0, err
	}
	_, err = c.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical())
	return r.Header.Revision, err
}

// Proxy forwards TCP connections to a target address until cut, so that a
// test can make etcd unreachable for one client only.
type Proxy struct {
	// Addr is where the proxy listens: give it to the client under test.
	Addr   string
	target string
	t      testing.TB

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to target; it is closed when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{target: target, t: t, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.Cut(); p.wg.Wait() })
	return p
}

// Cut closes the listener and every connection through the proxy: the
// target is unreachable through it until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Restore listens again on the same address.
func (p *Proxy) Restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("etcdtest: proxy: %v", err)
	}
	p.serve(ln)
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			if p.ln != ln { // cut meanwhile
				p.mu.Unlock()
				in.Close()
				out.Close()
				return
			}
			p.conns[in], p.conns[out] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(in, out)
			go pipe(out, in)
		}
	}()
}
