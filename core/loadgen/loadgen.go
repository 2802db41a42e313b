// Package loadgen drives closed-loop load: a fixed number of callers, each
// making its next call as soon as the previous one is answered, for a
// duration or a number of calls, recording every latency.
package loadgen

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets up a run.
type Config struct {
	Concurrency int           // callers (default 1)
	Duration    time.Duration // how long to run; ignored when Calls > 0
	Calls       int           // total calls to make; 0 means run for Duration
	Warmup      time.Duration // run this long first without recording
	// Progress, when set, is called about every ProgressEvery with the
	// calls completed so far in the measured part of the run.
	Progress      func(done int, elapsed time.Duration)
	ProgressEvery time.Duration
}

// Result is what a run measured.
type Result struct {
	Calls      int             // calls answered without error
	Errors     int             // calls that failed
	FirstError error           // the first failure, for the report
	Elapsed    time.Duration   // wall time of the measured part
	Latencies  []time.Duration // one per successful call, sorted
}

// Rate returns successful calls per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// Percentile returns the latency at quantile q (0 < q <= 1), or 0 when no
// call succeeded.
func (r *Result) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q*float64(len(r.Latencies))+0.5) - 1
	return r.Latencies[min(max(i, 0), len(r.Latencies)-1)]
}

// Max returns the longest latency.
func (r *Result) Max() time.Duration { return r.Percentile(1) }

// Run drives call with cfg's load until the run ends or ctx does. call is
// invoked concurrently by cfg.Concurrency goroutines.
func Run(ctx context.Context, cfg Config, call func(ctx context.Context) error) Result {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Warmup > 0 {
		wctx, cancel := context.WithTimeout(ctx, cfg.Warmup)
		run(wctx, cfg.Concurrency, 0, nil, call)
		cancel()
	}
	if cfg.Calls <= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var done atomic.Int64
	stopProgress, progressDone := make(chan struct{}), make(chan struct{})
	start := time.Now()
	if cfg.Progress == nil || cfg.ProgressEvery <= 0 {
		close(progressDone)
	} else {
		go func() {
			defer close(progressDone)
			t := time.NewTicker(cfg.ProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					cfg.Progress(int(done.Load()), time.Since(start))
				}
			}
		}()
	}
	res := run(ctx, cfg.Concurrency, cfg.Calls, &done, call)
	res.Elapsed = time.Since(start)
	close(stopProgress)
	<-progressDone // no report runs after Run returns
	return res
}

func run(ctx context.Context, workers, calls int, done *atomic.Int64, call func(context.Context) error) Result {
	var (
		claimed atomic.Int64
		mu      sync.Mutex
		res     Result
		wg      sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			errs := 0
			var first error
			for ctx.Err() == nil {
				if calls > 0 && claimed.Add(1) > int64(calls) {
					break
				}
				t0 := time.Now()
				err := call(ctx)
				d := time.Since(t0)
				switch {
				case err == nil:
					lat = append(lat, d)
				case ctx.Err() != nil && calls == 0:
					// the run's end interrupted this call: not a failure
				default:
					errs++
					if first == nil {
						first = err
					}
				}
				if done != nil {
					done.Add(1)
				}
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, lat...)
			res.Errors += errs
			if res.FirstError == nil {
				res.FirstError = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Calls = len(res.Latencies)
	slices.Sort(res.Latencies)
	return res
}
