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
	if len(l.last) > 4096 {
		t.Errorf("limiter holds %d sources", len(l.last))
	}
}

// AllowSource counts the ports of one host as one source.
func TestLimiterAllowSource(t *testing.T) {
	var l Limiter
	t0 := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	steps := []struct {
		source     string
		ok         bool
		suppressed int
	}{
		{"10.0.0.1:4000", true, 0},
		{"10.0.0.1:4001", false, 0},
		{"10.0.0.2:4000", true, 0},
		{"[::1]:4000", true, 0},
		{"[::1]:4001", false, 0},
		{"pipe", true, 0}, // no port: the whole address is the source
		{"pipe", false, 0},
	}
	for i, s := range steps {
		if n, ok := l.AllowSource(s.source, t0); ok != s.ok || n != s.suppressed {
			t.Errorf("step %d: AllowSource(%s) = %d, %v; want %d, %v", i, s.source, n, ok, s.suppressed, s.ok)
		}
	}
	if n, ok := l.Allow("10.0.0.1", t0.Add(LimitPeriod)); !ok || n != 1 {
		t.Errorf("Allow(10.0.0.1) a period later = %d, %v; want 1 held back from the other port", n, ok)
	}
}
