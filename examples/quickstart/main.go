// Command quickstart-servant is the demo servant: mserve starts several of
// it and balances calls across them.
//
//	echo(x any)          returns x
//	proc1(sym symbol)    returns a small table of trades for sym
//	sleep(ms int)        sleeps ms milliseconds, returns ms
//	is_prime(n int)      trial division: work of very uneven length
//
// It listens where mserve tells it (MSERVE_SERVANT_ADDR) or on -addr, or,
// with MSERVE_BALANCER set, registers with the mserve there (see
// docs/deployment.md).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
)

func main() {
	addr := flag.String("addr", servant.EnvAddr("127.0.0.1:7001"), "address to listen on")
	slots := flag.Int("slots", 1, "calls run at once")
	flag.Parse()

	s := servant.New(servant.Slots(*slots))
	s.MustHandle("echo(x any)", echo)
	s.MustHandle("proc1(sym symbol)", proc1)
	s.MustHandle("sleep(ms int)", sleep)
	s.MustHandle("is_prime(n int)", isPrime)
	servant.Main(s, *addr)
}

func echo(_ context.Context, c *servant.Call) (any, error) {
	var x json.RawMessage
	if err := c.Bind(&x); err != nil {
		return nil, err
	}
	return x, nil
}

// table is a q-style table: one column per field.
type table struct {
	Sym   []string  `json:"sym"`
	Time  []string  `json:"time"`
	Price []float64 `json:"price"`
	Size  []int     `json:"size"`
}

func proc1(_ context.Context, c *servant.Call) (any, error) {
	var sym string
	if err := c.Bind(&sym); err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write([]byte(sym))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	base := 20 + rng.Float64()*180
	t := time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)
	var out table
	for i := range 5 {
		out.Sym = append(out.Sym, sym)
		out.Time = append(out.Time, t.Add(time.Duration(i)*time.Minute).Format("15:04:05"))
		out.Price = append(out.Price, float64(int((base+rng.NormFloat64())*100))/100)
		out.Size = append(out.Size, 100*(1+rng.IntN(20)))
	}
	c.SetInfo("rows", len(out.Sym))
	return out, nil
}

func sleep(ctx context.Context, c *servant.Call) (any, error) {
	var ms int
	if err := c.Bind(&ms); err != nil {
		return nil, err
	}
	if ms < 0 || ms > 600_000 {
		return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: ms must be from 0 to 600000, got %d", ms)
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return ms, nil
	case <-ctx.Done():
		return nil, jsonrpc.Errorf(jsonrpc.Cancelled, "sleep cancelled after the caller gave up")
	}
}

func isPrime(ctx context.Context, c *servant.Call) (any, error) {
	var n int64
	if err := c.Bind(&n); err != nil {
		return nil, err
	}
	if n < 2 {
		return false, nil
	}
	for d := int64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false, nil
		}
		if d&0xffff == 0 && ctx.Err() != nil {
			return nil, jsonrpc.Errorf(jsonrpc.Cancelled, "is_prime cancelled after the caller gave up")
		}
	}
	return true, nil
}
