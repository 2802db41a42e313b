package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestReplayMakesEveryCallOnce(t *testing.T) {
	var made [100]atomic.Int32
	start, err := Replay(context.Background(), 4, len(made), 10, func(_ context.Context, i int) error {
		made[i].Add(1)
		return nil
	})
	if err != nil || start.IsZero() {
		t.Fatalf("Replay = %v, %v; want a start time and no error", start, err)
	}
	for i := range made {
		if n := made[i].Load(); n != 1 {
			t.Errorf("call %d made %d times", i, n)
		}
	}
}

func TestReplayStopsAtTheFirstFailure(t *testing.T) {
	var made atomic.Int32
	_, err := Replay(context.Background(), 3, 1000, 0, func(ctx context.Context, i int) error {
		made.Add(1)
		if i == 5 {
			return fmt.Errorf("call %d", i)
		}
		if i > 5 {
			<-ctx.Done() // the failure ends the others' calls
			return ctx.Err()
		}
		return nil
	})
	if err == nil || err.Error() != "call 5" {
		t.Fatalf("err = %v, want call 5's", err)
	}
	if n := made.Load(); n > 10 {
		t.Errorf("%d calls made after a failure at the sixth", n)
	}
}

func TestReplayEndOfContextIsNoFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start, err := Replay(ctx, 2, 1000, 999, func(ctx context.Context, i int) error {
		<-ctx.Done()
		return errors.New("interrupted")
	})
	if err != nil || !start.IsZero() {
		t.Fatalf("Replay = %v, %v; want no start (call 999 never taken) and no error", start, err)
	}
}

func TestLRU(t *testing.T) {
	c := NewLRU(2)
	for _, step := range []struct {
		key string
		hit bool
	}{{"a", false}, {"b", false}, {"a", true}, {"c", false}, {"b", false}, {"a", false}, {"b", true}} {
		if got := c.Get(step.key); got != step.hit {
			t.Fatalf("Get(%q) = %v, want %v", step.key, got, step.hit)
		}
	}
	if c.order.Len() != 2 || len(c.items) != 2 {
		t.Errorf("holds %d keys (%d indexed), want 2", c.order.Len(), len(c.items))
	}
	z := NewLRU(0)
	if z.Get("a") || z.Get("a") {
		t.Error("an LRU of size 0 had a hit")
	}
}
