// Command locality is the replay client of the locality benchmark, after
// the log playback of zc.resumelb's talk: it makes a skewed sequence of
// get(key) calls (Zipf, fixed seed), replays it through mserve at a fixed
// concurrency, and counts cache hits from the "hit" member of the info
// records (set by examples/benchmarks/lruservant), calls per servant,
// calls/s and latency.
//
//	locality -addr 127.0.0.1:7401 -algo even -workload zipf -csv results/locality.csv
//	locality -sim -servants 4 -cache 100 -workload zipf -csv results/locality.csv
//
// The first -warmup calls of the sequence fill the caches (and let learning
// algorithms learn); the next -n are measured. -sim replays the same
// sequence through simulated LRU caches instead: once with calls dealt round
// robin (roughly what even and least do) and once partitioned by a hash of
// the key (an ideal locality algorithm), as reference points.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mserve/mserve/core/querylog"
	"github.com/mserve/mserve/examples/benchmarks/internal/bench"
	"github.com/mserve/mserve/sdk/client"
)

type options struct {
	addr, algo, workload, csv string
	round                     int
	keys, n, warmup, conc     int
	servants, cache           int
	zipfS, zipfV, hot         float64
	seed                      uint64
	max                       time.Duration
	sim                       bool
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:5001", "mserve's native address")
	flag.StringVar(&o.algo, "algo", "", "label of the algorithm being measured, for the output")
	flag.StringVar(&o.workload, "workload", "zipf", "zipf: keys drawn from a Zipf law; hot: the same, with -hot of the calls on one key")
	flag.StringVar(&o.csv, "csv", "", "append the result to this CSV file (default: print it)")
	flag.IntVar(&o.round, "round", 1, "round number, for the output")
	flag.IntVar(&o.keys, "keys", 1000, "distinct keys")
	flag.IntVar(&o.n, "n", 20000, "measured calls")
	flag.IntVar(&o.warmup, "warmup", 5000, "calls replayed before the measured ones, not counted")
	flag.IntVar(&o.conc, "c", 8, "concurrent callers")
	flag.IntVar(&o.servants, "servants", 4, "servants, for -sim")
	flag.IntVar(&o.cache, "cache", 100, "keys each servant caches, for -sim")
	flag.Float64Var(&o.zipfS, "zipf-s", 1.1, "Zipf exponent s (> 1)")
	flag.Float64Var(&o.zipfV, "zipf-v", 1, "Zipf offset v (>= 1): P(k) ∝ (v+k)^-s")
	flag.Float64Var(&o.hot, "hot", 0.3, "with -workload hot, the share of calls on the hot key")
	flag.Uint64Var(&o.seed, "seed", 1, "random seed of the sequence")
	flag.DurationVar(&o.max, "max", 60*time.Second, "give up replaying after this long (reported as unfinished)")
	flag.BoolVar(&o.sim, "sim", false, "simulate round-robin and hash-partitioned LRU caches instead of calling mserve")
	flag.Parse()

	seq := sequence(&o)
	if o.sim {
		simulate(&o, seq)
		return
	}
	if err := replay(&o, seq); err != nil {
		log.Fatal("locality: ", err)
	}
}

const hotKey = "hot"

// sequence returns the calls' keys: warm-up first, then the measured ones.
func sequence(o *options) []string {
	rng := rand.New(rand.NewPCG(o.seed, 0x10ca1))
	z := rand.NewZipf(rng, o.zipfS, o.zipfV, uint64(o.keys-1))
	// Keys are named by a permutation of their rank, so that popular keys
	// are not also neighbours in name (hashing would not care, people do).
	names := make([]string, o.keys)
	for i, p := range rng.Perm(o.keys) {
		names[i] = "k" + strconv.Itoa(p)
	}
	seq := make([]string, o.warmup+o.n)
	for i := range seq {
		if o.workload == "hot" && rng.Float64() < o.hot {
			seq[i] = hotKey
			continue
		}
		seq[i] = names[z.Uint64()]
	}
	return seq
}

var header = []string{"round", "workload", "algo", "calls", "finished", "hit_rate", "calls_per_s", "p50_us", "p99_us",
	"per_servant", "max_share", "min_share", "hot_hit_rate", "hot_spread", "mean_wait_us", "mean_exec_us"}

type outcome struct {
	servant   string
	hit       bool
	lat       time.Duration
	wait      time.Duration // in mserve: elapsed - execution, from the info record
	execution time.Duration // sent to the servant to answered, from the info record
	ok        bool
}

// replay sends seq through mserve with o.conc callers taking the next call
// of the sequence in turn.
func replay(o *options, seq []string) error {
	// The time limit cancels the calls rather than being their deadline: a
	// deadline would be sent to mserve, which would answer "timeout" itself.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limit := time.AfterFunc(o.max, cancel)
	defer limit.Stop()
	cl, err := client.Dial(ctx, o.addr)
	if err != nil {
		return err
	}
	defer cl.Close()
	res := make([]outcome, len(seq))
	runStart := time.Now()
	measuredStart, err := bench.Replay(ctx, o.conc, len(seq), o.warmup, func(ctx context.Context, i int) error {
		t0 := time.Now()
		resp, err := cl.CallRaw(ctx, "get", []byte(`["`+seq[i]+`"]`))
		lat := time.Since(t0)
		if err != nil {
			return err
		}
		var info struct {
			client.Info
			Hit bool `json:"hit"` // set by lruservant
		}
		json.Unmarshal(resp.InfoRaw, &info)
		res[i] = outcome{servant: info.Servant, hit: info.Hit, lat: lat, ok: true,
			wait: info.Elapsed() - info.Execution(), execution: info.Execution()}
		return nil
	})
	end := time.Now()
	if err != nil {
		return fmt.Errorf("a call failed: %v", err)
	}
	if ctx.Err() != nil {
		// Stopped at the time limit: report every call that was answered,
		// warm-up included, over the whole run.
		return report(o, seq, res, end.Sub(runStart), false)
	}
	return report(o, seq[o.warmup:], res[o.warmup:], end.Sub(measuredStart), true)
}

func report(o *options, keys []string, res []outcome, elapsed time.Duration, finished bool) error {
	var lats []time.Duration
	hits, hotCalls, hotHits := 0, 0, 0
	var wait, exec time.Duration
	perServant := map[string]int{}
	hotServant := map[string]int{}
	for i, r := range res {
		if !r.ok {
			continue
		}
		lats = append(lats, r.lat)
		wait += r.wait
		exec += r.execution
		perServant[r.servant]++
		if r.hit {
			hits++
		}
		if keys[i] == hotKey {
			hotCalls++
			hotServant[r.servant]++
			if r.hit {
				hotHits++
			}
		}
	}
	calls := len(lats)
	rate, rateS := 0.0, "" // no rate for a simulation
	if elapsed > 0 {
		rate = float64(calls) / elapsed.Seconds()
		rateS = bench.F(rate, 0)
	}
	maxShare, minShare := shares(perServant, calls, o.servants)
	row := []string{strconv.Itoa(o.round), o.workload, o.algo, strconv.Itoa(calls), strconv.FormatBool(finished),
		ratio(hits, calls), rateS, bench.Us(querylog.Percentile(lats, 0.5)), bench.Us(querylog.Percentile(lats, 0.99)),
		counts(perServant), ratio(maxShare, calls), ratio(minShare, calls), "", "", "", ""}
	if calls > 0 && elapsed > 0 {
		row[14], row[15] = bench.Us(wait/time.Duration(calls)), bench.Us(exec/time.Duration(calls))
	}
	if hotCalls > 0 {
		row[12] = ratio(hotHits, hotCalls)
		row[13] = counts(hotServant)
	}
	fmt.Fprintf(os.Stderr, "  %-22s %6d calls  hits %5s  %6.0f calls/s  p99 %6sµs  wait %5sµs exec %5sµs  %s\n",
		o.algo, calls, row[5], rate, row[8], row[14], row[15], row[9])
	return bench.AppendCSV(o.csv, header, row)
}

// shares returns the most and fewest calls any of n servants ran (a servant
// that ran none counts as 0).
func shares(per map[string]int, calls, n int) (hi, lo int) {
	lo = calls
	for _, c := range per {
		hi = max(hi, c)
		lo = min(lo, c)
	}
	if len(per) < n {
		lo = 0
	}
	return hi, lo
}

func ratio(a, b int) string {
	if b == 0 {
		return ""
	}
	return bench.F(float64(a)/float64(b), 3)
}

// counts formats per-servant counts as "s1:123 s2:456", by name.
func counts(m map[string]int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", k, m[k])
	}
	return b.String()
}

// simulate replays seq through o.servants simulated caches, dealing calls
// round robin and by key hash, and reports the measured part's hit rates;
// then the bound no placement of keys on servants can beat: every servant's
// cache pinned to its share of the servants × cache most frequent keys of
// the measured part.
func simulate(o *options, seq []string) {
	defer simulateBound(o, seq)
	for _, mode := range []string{"sim-round-robin", "sim-hash-partition"} {
		caches := make([]*bench.LRU, o.servants)
		for i := range caches {
			caches[i] = bench.NewLRU(o.cache)
		}
		res := make([]outcome, len(seq))
		for i, k := range seq {
			s := i % o.servants
			if mode == "sim-hash-partition" {
				h := fnv.New32a()
				h.Write([]byte(k))
				s = int(h.Sum32() % uint32(o.servants))
			}
			res[i] = outcome{servant: "s" + strconv.Itoa(s+1), hit: caches[s].Get(k), ok: true}
		}
		o.algo = mode
		if err := report(o, seq[o.warmup:], res[o.warmup:], 0, true); err != nil {
			log.Fatal(err)
		}
	}
}

func simulateBound(o *options, seq []string) {
	freq := map[string]int{}
	for _, k := range seq[o.warmup:] {
		freq[k]++
	}
	keys := make([]string, 0, len(freq))
	for k := range freq {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return freq[keys[i]] > freq[keys[j]] || freq[keys[i]] == freq[keys[j]] && keys[i] < keys[j]
	})
	pinned := map[string]int{}
	for i, k := range keys[:min(len(keys), o.servants*o.cache)] {
		pinned[k] = i % o.servants
	}
	res := make([]outcome, len(seq))
	for i, k := range seq {
		s, hit := pinned[k]
		res[i] = outcome{servant: "s" + strconv.Itoa(s+1), hit: hit, ok: true}
	}
	o.algo = "sim-bound"
	if err := report(o, seq[o.warmup:], res[o.warmup:], 0, true); err != nil {
		log.Fatal(err)
	}
}
