package client_test

import (
	"context"
	"encoding/json"
	"net"
	"runtime"
	"testing"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/servant"
)

// benchServant serves echo on loopback and returns a client connected to it.
func benchServant(b *testing.B) *client.Client {
	b.Helper()
	s := servant.New(servant.Name("bench"), servant.Slots(runtime.GOMAXPROCS(0)), servant.Logger(zap.NewNop()))
	s.MustHandle("echo(x any)", func(_ context.Context, c *servant.Call) (any, error) {
		var x json.RawMessage
		if err := c.Bind(&x); err != nil {
			return nil, err
		}
		return x, nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	c, err := client.Dial(context.Background(), ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		s.Shutdown(context.Background())
		<-served
	})
	return c
}

func BenchmarkClientServantEcho(b *testing.B) {
	params := []byte(`["IBM"]`)
	b.Run("sequential", func(b *testing.B) {
		c := benchServant(b)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.CallRaw(ctx, "echo", params); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := benchServant(b)
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(8) // many calls in flight on one connection
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.CallRaw(ctx, "echo", params); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
