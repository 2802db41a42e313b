// Command conns opens many idle client connections to mserve's native
// front end and holds them, for the memory benchmark: each connection makes
// one rpc.ping (so mserve has fully taken it in) and then stays idle until
// conns is stopped (SIGTERM or SIGINT).
//
//	conns -addr 127.0.0.1:7601 -n 10000
//
// It prints "ready N" on standard output once N connections have answered.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mserve/mserve/sdk/client"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5001", "mserve's native address")
	n := flag.Int("n", 10000, "connections to open")
	par := flag.Int("p", 64, "connections opened at once")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	clients := make([]*client.Client, *n)
	var failed atomic.Int64
	var firstErrOnce sync.Once
	var firstErr error // atomic.Value would panic on a second error of another type
	sem := make(chan struct{}, *par)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := client.Dial(cctx, *addr, client.MaxFrame(1<<20))
			if err == nil {
				if _, err = c.CallRaw(cctx, "rpc.ping", nil); err == nil {
					clients[i] = c
					return
				}
				c.Close()
			}
			failed.Add(1)
			firstErrOnce.Do(func() { firstErr = err })
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		log.Fatalf("conns: %d of %d connections failed; first: %v", f, *n, firstErr)
	}
	fmt.Printf("ready %d\n", *n)
	os.Stdout.Sync()
	<-ctx.Done()
	for _, c := range clients {
		c.Close()
	}
}
