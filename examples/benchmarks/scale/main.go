// Command scale measures mserve's dispatch cost as servants are added: it
// drives core/engine with fake transports (no network, no servants), one
// call in and one result out per operation, for the built-in match, least
// and warm, with 8, 64 and 512 servants, and prints ns/op as CSV.
//
//	go run ./examples/benchmarks/scale -csv results/scale.csv
//	go test -bench . ./examples/benchmarks/scale      # the same as Go benchmarks
//
// The engine is kept in a loaded steady state: every servant (one slot
// each) runs a call and 64 more calls wait in the queue, as under the c=64
// load of the peer benchmark. Each operation answers the oldest running call
// (Servant.Done: its servant frees, a round assigns a waiting call to it)
// and submits a new one (Engine.Submit: a round finds no free servant, or
// the one just freed). Routing strings are drawn uniformly from 1024. Calls
// carry mserve's default 60 s deadline, so each arms and stops a timer as in
// mserve. match runs with a 1 ns route expiry, so that a freed servant may
// take a new routing string on the next round: with the default 12 s nothing
// would move, and the benchmark measures decisions, not waiting.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/examples/benchmarks/internal/bench"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Sizes and Algos are what main and the Go benchmarks measure.
var (
	Sizes = []int{8, 64, 512}
	Algos = []string{"least", "match", "warm"}
)

const (
	waiting = 64   // calls waiting in the queue in the steady state
	routes  = 1024 // distinct routing strings
)

func main() {
	csvPath := flag.String("csv", "", "append the results to this CSV file (default: print them)")
	benchtime := flag.Duration("benchtime", time.Second, "time per measurement")
	count := flag.Int("count", 3, "measurements per point; the fastest is kept (the machine is shared)")
	flag.Parse()
	testing.Init()
	flag.Set("test.benchtime", benchtime.String())
	header := []string{"algo", "servants", "ns_op", "allocs_op", "bytes_op", "busy"}
	for _, a := range Algos {
		for _, n := range Sizes {
			var best testing.BenchmarkResult
			var busy float64
			for range *count {
				var h *harness
				r := testing.Benchmark(func(b *testing.B) { h = Run(b, a, n) })
				if best.N == 0 || r.NsPerOp() < best.NsPerOp() {
					best, busy = r, h.busyMean()
				}
			}
			row := []string{a, strconv.Itoa(n), strconv.FormatInt(best.NsPerOp(), 10),
				strconv.FormatInt(best.AllocsPerOp(), 10), strconv.FormatInt(best.AllocedBytesPerOp(), 10), bench.F(busy, 1)}
			fmt.Fprintf(os.Stderr, "  %-6s %4d servants  %7d ns/op  %3d allocs/op  busy servants %.1f\n",
				a, n, best.NsPerOp(), best.AllocsPerOp(), busy)
			if err := bench.AppendCSV(*csvPath, header, row); err != nil {
				log.Fatal(err)
			}
		}
	}
}

// harness holds the engine and what its fake links were sent.
type harness struct {
	e        *engine.Engine
	servants []*engine.Servant

	mu   sync.Mutex
	sent []sentCall // FIFO of calls sent and not yet answered
	head int

	busySum, busyN int
}

type sentCall struct {
	s *engine.Servant
	c *engine.Call
}

// link is a fake engine.Transport: Send records the call.
type link struct {
	h *harness
	s *engine.Servant
}

func (l *link) Send(c *engine.Call, _ *wire.Flusher) error {
	l.h.mu.Lock()
	l.h.sent = append(l.h.sent, sentCall{l.s, c})
	l.h.mu.Unlock()
	return nil
}

func (l *link) Cancel(*engine.Call) {}

// oldest takes the oldest call sent and not answered, waiting for one if a
// wake-up round (match's route expiry timer) is about to send it.
func (h *harness) oldest() sentCall {
	for {
		h.mu.Lock()
		if h.head < len(h.sent) {
			sc := h.sent[h.head]
			h.sent[h.head] = sentCall{}
			h.head++
			if h.head > 4096 && h.head*2 > len(h.sent) {
				h.sent = append(h.sent[:0], h.sent[h.head:]...)
				h.head = 0
			}
			busy := len(h.sent) - h.head + 1
			h.mu.Unlock()
			h.busySum += busy
			h.busyN++
			return sc
		}
		h.mu.Unlock()
		time.Sleep(time.Microsecond)
	}
}

func (h *harness) busyMean() float64 {
	if h == nil || h.busyN == 0 {
		return 0
	}
	return float64(h.busySum) / float64(h.busyN)
}

// newHarness returns an engine running algoName over n servants that are up.
func newHarness(tb testing.TB, algoName string, n int) *harness {
	a, err := algo.New(algo.Builtins(), algoName, algo.Config{RouteExpire: time.Nanosecond})
	if err != nil {
		tb.Fatal(err)
	}
	h := &harness{e: engine.New(engine.Config{Algorithm: a, Timeout: time.Minute})}
	for i := range n {
		l := &link{h: h}
		s := h.e.AddServant(engine.ServantSpec{Name: "s" + strconv.Itoa(i+1), Addr: "127.0.0.1:" + strconv.Itoa(7000+i), Slots: 1}, l)
		l.s = s
		h.servants = append(h.servants, s)
		s.Up(engine.Announce{})
	}
	return h
}

var okResp = jsonrpc.Response{Result: []byte(`"ok"`)}

// Run is the benchmark: b.N operations of one answer and one new call, with
// n servants under algoName. It returns the harness for its statistics.
func Run(b *testing.B, algoName string, n int) *harness {
	h := newHarness(b, algoName, n)
	rng := rand.New(rand.NewPCG(1, 2))
	names := make([]string, routes)
	for i := range names {
		names[i] = "r" + strconv.Itoa(i)
	}
	params := []byte(`["x"]`)
	submit := func() {
		c := &engine.Call{ID: []byte("1")}
		c.Method = "get"
		c.Params = params
		c.Route = names[rng.IntN(routes)]
		h.e.Submit(c)
	}
	for range n + waiting {
		submit()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		sc := h.oldest()
		sc.s.Done(sc.c, &okResp, nil)
		submit()
	}
	b.StopTimer()
	h.e.Close()
	return h
}
