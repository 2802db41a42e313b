package logging

import (
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var l Limiter
	t0 := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	steps := []struct {
		key        string
		at         time.Duration
		ok         bool
		suppressed int
	}{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"b", time.Second, true, 0},
		{"a", 9 * time.Second, false, 0},
		{"a", LimitPeriod, true, 2},
		{"a", LimitPeriod + time.Second, false, 0},
		{"a", 3 * LimitPeriod, true, 1},
		{"b", 3 * LimitPeriod, true, 0},
	}
	for i, s := range steps {
		n, ok := l.Allow(s.key, t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("step %d: Allow(%s, +%v) = %d, %v; want %d, %v", i, s.key, s.at, n, ok, s.suppressed, s.ok)
		}
	}
	// Many sources do not grow it without bound.
	for i := range 5000 {
		l.Allow(strings.Repeat("x", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), t0)
	}
	if len(l.last) > 4097 {
		t.Errorf("limiter holds %d sources", len(l.last))
	}
}
