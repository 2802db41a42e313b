package logging

import (
	"net"
	"sync"
	"time"
)

// LimitPeriod is how often a Limiter lets one event per key through.
const LimitPeriod = 10 * time.Second

// Limiter keeps repeated warnings (failed authentications, refused
// registrations) to one log line per key (say, the source host) every
// LimitPeriod, counting the events it held back. Its zero value is ready to
// use and it is safe for concurrent use. It remembers at most 4096 keys,
// forgetting them all when full.
type Limiter struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// Allow reports whether an event for key at now should be logged and, if
// so, how many events for key were held back since the last one logged.
func (l *Limiter) Allow(key string, now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil || len(l.last) >= 4096 {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if t, seen := l.last[key]; seen && now.Sub(t) < LimitPeriod {
		l.held[key]++
		return 0, false
	}
	n := l.held[key]
	l.last[key] = now
	delete(l.held, key)
	return n, true
}

// AllowSource is Allow keyed by the host of source, a host:port (or by
// source itself when it has no port): one client retrying from new ports
// is one source.
func (l *Limiter) AllowSource(source string, now time.Time) (suppressed int, ok bool) {
	if host, _, err := net.SplitHostPort(source); err == nil {
		source = host
	}
	return l.Allow(source, now)
}
