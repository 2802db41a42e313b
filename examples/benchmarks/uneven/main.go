// Command uneven is the client of the uneven-work benchmark, after
// prime_server: is_prime over a seeded mix of tiny numbers and one huge
// prime (trial division to its square root: milliseconds), replayed through
// mserve at a fixed concurrency; it reports the latency of all calls and of
// the tiny ones alone (what a tiny call pays for sharing servants with huge
// ones), and calls/s.
//
//	uneven -calibrate 20ms                     # print a prime whose test takes about 20 ms here
//	uneven -addr 127.0.0.1:7501 -huge P -algo least -csv results/uneven.csv
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/big"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/mserve/mserve/core/querylog"
	"github.com/mserve/mserve/examples/benchmarks/internal/bench"
	"github.com/mserve/mserve/sdk/client"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5001", "mserve's native address")
	algo := flag.String("algo", "", "label of the algorithm being measured")
	mode := flag.String("mode", "", "label of the setup (queue in mserve, pushed to servants…)")
	round := flag.Int("round", 1, "round number, for the output")
	csvPath := flag.String("csv", "", "append the result to this CSV file (default: print it)")
	n := flag.Int("n", 2000, "measured calls")
	warmup := flag.Int("warmup", 200, "calls before the measured ones, not counted")
	conc := flag.Int("c", 8, "concurrent callers")
	huge := flag.Int64("huge", 0, "the huge prime (see -calibrate)")
	hugeShare := flag.Float64("huge-share", 0.1, "share of calls on the huge prime")
	seed := flag.Uint64("seed", 1, "random seed of the sequence")
	calibrate := flag.Duration("calibrate", 0, "print a prime whose test takes about this long on this machine, and exit")
	maxRun := flag.Duration("max", 120*time.Second, "give up after this long")
	flag.Parse()

	if *calibrate > 0 {
		fmt.Println(calibratePrime(*calibrate))
		return
	}
	if *huge < 2 {
		log.Fatal("uneven: -huge is required (see -calibrate)")
	}
	rng := rand.New(rand.NewPCG(*seed, 0x9e3779b9))
	seq := make([]int64, *warmup+*n)
	for i := range seq {
		if rng.Float64() < *hugeShare {
			seq[i] = *huge
		} else {
			seq[i] = 2 + rng.Int64N(10_000)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *maxRun)
	defer cancel()
	cl, err := client.Dial(ctx, *addr)
	if err != nil {
		log.Fatal("uneven: ", err)
	}
	defer cl.Close()
	lat := make([]time.Duration, len(seq))
	handler := make([]time.Duration, len(seq))
	start, err := bench.Replay(ctx, *conc, len(seq), *warmup, func(ctx context.Context, i int) error {
		t0 := time.Now()
		resp, err := cl.CallRaw(ctx, "is_prime", []byte("["+strconv.FormatInt(seq[i], 10)+"]"))
		if err != nil {
			return err
		}
		lat[i] = time.Since(t0)
		handler[i] = time.Duration(resp.Info().HandlerNs)
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		log.Fatalf("uneven: a call failed: %v", err)
	}
	if ctx.Err() != nil {
		log.Fatalf("uneven: not finished within %v", *maxRun)
	}
	var all, tiny, hugeLat, hugeHandler []time.Duration
	for i := *warmup; i < len(seq); i++ {
		all = append(all, lat[i])
		if seq[i] == *huge {
			hugeLat = append(hugeLat, lat[i])
			hugeHandler = append(hugeHandler, handler[i])
		} else {
			tiny = append(tiny, lat[i])
		}
	}
	p := querylog.Percentile // sorts its slice
	header := []string{"round", "c", "mode", "algo", "calls", "calls_per_s", "p50_us", "p99_us", "tiny_p50_us", "tiny_p99_us", "huge_p50_us", "huge_handler_p50_us"}
	row := []string{strconv.Itoa(*round), strconv.Itoa(*conc), *mode, *algo, strconv.Itoa(len(all)), bench.F(float64(len(all))/elapsed.Seconds(), 0),
		bench.Us(p(all, 0.5)), bench.Us(p(all, 0.99)), bench.Us(p(tiny, 0.5)), bench.Us(p(tiny, 0.99)),
		bench.Us(p(hugeLat, 0.5)), bench.Us(p(hugeHandler, 0.5))}
	fmt.Fprintf(os.Stderr, "  %-8s %-14s %5d calls %6s calls/s  p50 %6sµs p99 %6sµs  tiny p50 %6sµs p99 %6sµs  huge p50 %6sµs (handler %6sµs)\n",
		*algo, *mode, len(all), row[5], row[6], row[7], row[8], row[9], row[10], row[11])
	if err := bench.AppendCSV(*csvPath, header, row); err != nil {
		log.Fatal("uneven: ", err)
	}
}

// isPrime is the quickstart servant's test.
func isPrime(n int64) bool {
	if n < 2 {
		return false
	}
	for d := int64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// calibratePrime returns a prime whose trial division takes about target
// here: it times the test on a prime, then scales n (time grows as √n).
func calibratePrime(target time.Duration) int64 {
	n := nextPrime(1 << 30)
	for range 6 {
		best := time.Duration(1<<63 - 1)
		for range 3 {
			t0 := time.Now()
			isPrime(n)
			best = min(best, time.Since(t0))
		}
		f := float64(target) / float64(best)
		if f > 0.97 && f < 1.03 {
			return n
		}
		n = nextPrime(int64(float64(n) * f * f))
	}
	return n
}

func nextPrime(n int64) int64 {
	for !big.NewInt(n).ProbablyPrime(20) {
		n++
	}
	return n
}
