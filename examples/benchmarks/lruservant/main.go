// Command lruservant is the servant of the locality benchmark: an SDK
// servant holding an LRU cache of a fixed number of keys, after the
// per-process object caches of zc.resumelb's talk.
//
//	get(key string)   a hit costs -hit of CPU (decompressing and unpickling a
//	                  cached record in the talk: ~100 µs); a miss waits -miss
//	                  (a load from the storage server: milliseconds), then
//	                  caches the key, evicting the least recently used one.
//
// The answer's info record says "hit": true or false (Call.SetInfo), so a
// client counts hits from the info records mserve returns.
//
// A miss sleeps rather than spins: the load it stands for is a wait on
// another machine (the database server), which costs the servant's host no
// CPU; a spin would instead make the 2 ms misses of four servants compete
// with mserve and the client for two cores and measure the scheduler. A hit
// spins, because decompressing and unpickling is CPU work on the servant.
//
// It listens where mserve tells it (MSERVE_SERVANT_ADDR) or on -addr.
package main

import (
	"context"
	"flag"
	"sync"
	"time"

	"github.com/mserve/mserve/examples/benchmarks/internal/bench"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
)

func main() {
	addr := flag.String("addr", servant.EnvAddr("127.0.0.1:7301"), "address to listen on")
	slots := flag.Int("slots", 1, "calls run at once")
	size := flag.Int("cache", 100, "keys the cache holds")
	hit := flag.Duration("hit", 100*time.Microsecond, "CPU time a hit costs (spin)")
	miss := flag.Duration("miss", 2*time.Millisecond, "time a miss costs (sleep: a load from elsewhere)")
	flag.Parse()

	c := &cache{hit: *hit, miss: *miss, lru: bench.NewLRU(*size)}
	s := servant.New(servant.Slots(*slots))
	s.MustHandle("get(key string)", c.get)
	servant.Main(s, *addr)
}

type cache struct {
	hit, miss time.Duration

	mu  sync.Mutex
	lru *bench.LRU
}

// lookup reports whether key is cached, marking it most recently used.
func (c *cache) lookup(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Touch(key)
}

// insert caches key, evicting the least recently used key when full.
func (c *cache) insert(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Add(key)
}

func (c *cache) get(ctx context.Context, call *servant.Call) (any, error) {
	var key string
	if err := call.Bind(&key); err != nil {
		return nil, err
	}
	hit := c.lookup(key)
	if hit {
		spin(c.hit)
	} else {
		t := time.NewTimer(c.miss)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, jsonrpc.Errorf(jsonrpc.Cancelled, "get cancelled after the caller gave up")
		}
		c.insert(key)
	}
	call.SetInfo("hit", hit)
	return len(key), nil
}

// spin keeps the CPU busy for d.
func spin(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
	}
}
