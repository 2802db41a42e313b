package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const failsafe = 10 * time.Second

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentileMaxRate(t *testing.T) {
	ten := Result{Latencies: []time.Duration{ms(1), ms(2), ms(3), ms(4), ms(5), ms(6), ms(7), ms(8), ms(9), ms(10)}}
	tests := []struct {
		name string
		r    Result
		q    float64
		want time.Duration
	}{
		{"median of ten is the fifth", ten, 0.5, ms(5)},
		{"p90 of ten is the ninth", ten, 0.9, ms(9)},
		{"p99 of ten rounds to the tenth", ten, 0.99, ms(10)},
		{"p10 of ten is the first", ten, 0.1, ms(1)},
		{"q=1 is the largest", ten, 1, ms(10)},
		{"q=0 clamps to the smallest", ten, 0, ms(1)},
		{"q>1 clamps to the largest", ten, 2, ms(10)},
		{"single latency", Result{Latencies: []time.Duration{ms(7)}}, 0.5, ms(7)},
		{"no latencies gives zero", Result{}, 0.5, 0},
		{"p99 of a hundred is the 99th", Result{Latencies: hundred()}, 0.99, ms(99)},
		{"p50 of a hundred is the 50th", Result{Latencies: hundred()}, 0.5, ms(50)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Percentile(tt.q); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
	t.Run("Max is the largest latency", func(t *testing.T) {
		if got := ten.Max(); got != ms(10) {
			t.Errorf("Max() = %v", got)
		}
		if got := (&Result{}).Max(); got != 0 {
			t.Errorf("Max() of nothing = %v", got)
		}
	})
	rates := []struct {
		name string
		r    Result
		want float64
	}{
		{"ten calls in two seconds", Result{Calls: 10, Elapsed: 2 * time.Second}, 5},
		{"zero elapsed gives zero", Result{Calls: 10}, 0},
		{"negative elapsed gives zero", Result{Calls: 10, Elapsed: -time.Second}, 0},
		{"errors do not count", Result{Calls: 3, Errors: 100, Elapsed: time.Second}, 3},
	}
	for _, tt := range rates {
		t.Run("Rate: "+tt.name, func(t *testing.T) {
			if got := tt.r.Rate(); got != tt.want {
				t.Errorf("Rate() = %v, want %v", got, tt.want)
			}
		})
	}
}

func hundred() []time.Duration {
	out := make([]time.Duration, 100)
	for i := range out {
		out[i] = ms(i + 1)
	}
	return out
}

func TestRunWithCallsMakesExactlyThatMany(t *testing.T) {
	tests := []struct {
		name        string
		concurrency int
		calls       int
	}{
		{"one worker", 1, 25},
		{"default concurrency (0 means 1)", 0, 7},
		{"four workers share the count", 4, 101},
		{"more workers than calls", 16, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var made atomic.Int64
			// Duration is ignored when Calls is set.
			res := Run(context.Background(), Config{Concurrency: tt.concurrency, Calls: tt.calls, Duration: time.Nanosecond},
				func(context.Context) error { made.Add(1); return nil })
			if made.Load() != int64(tt.calls) {
				t.Errorf("call invoked %d times, want %d", made.Load(), tt.calls)
			}
			if res.Calls != tt.calls || res.Errors != 0 || res.FirstError != nil {
				t.Errorf("result: Calls %d Errors %d FirstError %v", res.Calls, res.Errors, res.FirstError)
			}
			if len(res.Latencies) != tt.calls || !slices.IsSorted(res.Latencies) {
				t.Errorf("Latencies: %d, sorted %v; want %d sorted", len(res.Latencies), slices.IsSorted(res.Latencies), tt.calls)
			}
			if res.Elapsed <= 0 {
				t.Errorf("Elapsed = %v", res.Elapsed)
			}
		})
	}
}

func TestRunConcurrency(t *testing.T) {
	// Every worker is inside call at once: the calls meet at a barrier that
	// opens only when all of them have arrived.
	const workers = 5
	var arrived atomic.Int64
	open := make(chan struct{})
	res := Run(context.Background(), Config{Concurrency: workers, Calls: workers}, func(context.Context) error {
		if arrived.Add(1) == workers {
			close(open)
		}
		select {
		case <-open:
			return nil
		case <-time.After(failsafe):
			return errors.New("not all workers ran at once")
		}
	})
	if res.Calls != workers || res.Errors != 0 {
		t.Errorf("Calls %d Errors %d (%v)", res.Calls, res.Errors, res.FirstError)
	}
}

func TestRunCountsErrors(t *testing.T) {
	tests := []struct {
		name        string
		concurrency int
		calls       int
		failEvery   int
		wantErrors  int
	}{
		{"every third call fails, one worker", 1, 30, 3, 10},
		{"every call fails", 1, 5, 1, 5},
		{"every other call fails, three workers", 3, 40, 2, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			res := Run(context.Background(), Config{Concurrency: tt.concurrency, Calls: tt.calls}, func(context.Context) error {
				i := n.Add(1)
				if i%int64(tt.failEvery) == 0 {
					return fmt.Errorf("failure %d", i)
				}
				return nil
			})
			if res.Errors != tt.wantErrors || res.Calls != tt.calls-tt.wantErrors {
				t.Errorf("Calls %d Errors %d; want %d and %d", res.Calls, res.Errors, tt.calls-tt.wantErrors, tt.wantErrors)
			}
			if len(res.Latencies) != res.Calls {
				t.Errorf("%d latencies for %d successful calls", len(res.Latencies), res.Calls)
			}
			if res.FirstError == nil {
				t.Fatal("FirstError is nil")
			}
			if tt.concurrency == 1 && res.FirstError.Error() != fmt.Sprintf("failure %d", tt.failEvery) {
				t.Errorf("FirstError = %v, want the first failure", res.FirstError)
			}
		})
	}
}

func TestRunWithDuration(t *testing.T) {
	tests := []struct {
		name       string
		call       func(ctx context.Context) error
		wantCalls  bool // some calls succeed
		wantErrors int
	}{
		{
			name:      "quick calls succeed until the duration passes",
			call:      func(context.Context) error { return nil },
			wantCalls: true,
		},
		{
			name: "calls interrupted by the run's end are not errors",
			call: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			},
		},
		{
			name: "an interrupted call failing with its own error is not an error either",
			call: func(ctx context.Context) error {
				<-ctx.Done()
				return fmt.Errorf("call failed: %w", errors.New("connection reset"))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const d = 30 * time.Millisecond
			res := Run(context.Background(), Config{Concurrency: 2, Duration: d}, tt.call)
			if res.Errors != tt.wantErrors || res.FirstError != nil {
				t.Errorf("Errors %d FirstError %v; want none", res.Errors, res.FirstError)
			}
			if (res.Calls > 0) != tt.wantCalls {
				t.Errorf("Calls = %d", res.Calls)
			}
			if res.Elapsed < d/2 {
				t.Errorf("Elapsed %v is much shorter than the duration %v", res.Elapsed, d)
			}
		})
	}
}

func TestRunEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	done := make(chan Result, 1)
	go func() {
		done <- Run(ctx, Config{Concurrency: 2, Duration: time.Hour}, func(c context.Context) error {
			if n.Add(1) == 10 {
				cancel()
			}
			return nil
		})
	}()
	select {
	case res := <-done:
		if res.Calls < 10 || res.Errors != 0 {
			t.Errorf("Calls %d Errors %d", res.Calls, res.Errors)
		}
	case <-time.After(failsafe):
		t.Fatal("Run did not end when its context was cancelled")
	}
}

func TestWarmupIsNotRecorded(t *testing.T) {
	tests := []struct {
		name        string
		concurrency int
	}{
		{"one worker", 1},
		{"three workers", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// During the warmup every call blocks until the warmup ends and
			// then fails; the measured calls succeed. Nothing of the warmup
			// may show in the result.
			var warm, measured atomic.Int64
			res := Run(context.Background(), Config{Concurrency: tt.concurrency, Calls: 6, Warmup: 20 * time.Millisecond},
				func(ctx context.Context) error {
					if _, ok := ctx.Deadline(); ok { // only the warmup's context has a deadline in a Calls run
						warm.Add(1)
						<-ctx.Done()
						return errors.New("failed during the warmup")
					}
					measured.Add(1)
					return nil
				})
			if warm.Load() != int64(tt.concurrency) {
				t.Errorf("%d warmup calls, want one per worker (%d)", warm.Load(), tt.concurrency)
			}
			if res.Calls != 6 || measured.Load() != 6 || res.Errors != 0 || res.FirstError != nil || len(res.Latencies) != 6 {
				t.Errorf("result after warmup: Calls %d (measured %d) Errors %d FirstError %v Latencies %d; want 6 and no error",
					res.Calls, measured.Load(), res.Errors, res.FirstError, len(res.Latencies))
			}
		})
	}
}

func TestLatenciesAreMeasured(t *testing.T) {
	// A call that takes at least 2ms is recorded as taking at least 2ms.
	const least = 2 * time.Millisecond
	res := Run(context.Background(), Config{Calls: 3}, func(context.Context) error {
		t := time.NewTimer(least)
		<-t.C
		return nil
	})
	for _, l := range res.Latencies {
		if l < least {
			t.Errorf("latency %v shorter than the call (%v)", l, least)
		}
	}
	if res.Percentile(0.5) < least || res.Max() < least {
		t.Errorf("p50 %v max %v", res.Percentile(0.5), res.Max())
	}
}

func TestProgress(t *testing.T) {
	t.Run("reports calls done so far, never more than made", func(t *testing.T) {
		var mu sync.Mutex
		var reports []int
		got := make(chan struct{}, 1)
		var made atomic.Int64
		const calls = 4
		res := Run(context.Background(), Config{
			Calls:         calls,
			ProgressEvery: time.Millisecond,
			Progress: func(done int, elapsed time.Duration) {
				mu.Lock()
				reports = append(reports, done)
				mu.Unlock()
				if elapsed <= 0 {
					t.Errorf("progress elapsed = %v", elapsed)
				}
				select {
				case got <- struct{}{}:
				default:
				}
			},
		}, func(context.Context) error {
			made.Add(1)
			// Each call waits for a progress report, so reports interleave
			// with the calls.
			select {
			case <-got:
			case <-time.After(failsafe):
				return errors.New("no progress report")
			}
			return nil
		})
		if res.Calls != calls {
			t.Fatalf("Calls %d (%v)", res.Calls, res.FirstError)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(reports) < calls {
			t.Errorf("%d progress reports, want at least %d", len(reports), calls)
		}
		if !slices.IsSorted(reports) || reports[len(reports)-1] > calls {
			t.Errorf("reports %v: want nondecreasing and at most %d", reports, calls)
		}
	})
	t.Run("not called without ProgressEvery", func(t *testing.T) {
		called := false
		Run(context.Background(), Config{Calls: 3, Progress: func(int, time.Duration) { called = true }},
			func(context.Context) error { return nil })
		if called {
			t.Error("Progress called with ProgressEvery 0")
		}
	})
	t.Run("no progress report runs after Run returned", func(t *testing.T) {
		// The bench command clears its progress line right after Run
		// returns; a report still running (or starting) then would
		// print over the result.
		inReport := make(chan struct{})
		release := make(chan struct{})
		var once sync.Once
		var running atomic.Bool
		res := Run(context.Background(), Config{
			Calls:         1,
			ProgressEvery: time.Millisecond,
			Progress: func(int, time.Duration) {
				running.Store(true)
				defer running.Store(false)
				once.Do(func() { close(inReport) })
				select {
				case <-release:
				case <-time.After(failsafe):
				}
			},
		}, func(context.Context) error {
			// The call ends while a progress report is running.
			select {
			case <-inReport:
			case <-time.After(failsafe):
			}
			return nil
		})
		stillRunning := running.Load()
		close(release)
		if res.Calls != 1 {
			t.Fatalf("Calls = %d", res.Calls)
		}
		if stillRunning {
			t.Error("Run returned while a Progress call was still running")
		}
	})
}
