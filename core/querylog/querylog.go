// Package querylog is mserve's record of calls, after the kdb+ mserve's
// queries table: one entry per answered call with who called what, the
// routing string, the servant, and when it was received, sent to its
// servant and returned (ns). The newest entries stay in a bounded ring
// served at /queries; every entry can also be appended to a file as JSON
// lines for offline analysis.
package querylog

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// Entry is one call.
type Entry struct {
	ID       uint64 `json:"id"`                // the engine's sequence number
	User     string `json:"user"`              // "" for anonymous
	Method   string `json:"method"`            // function called
	Route    string `json:"route"`             // routing string
	Servant  string `json:"servant,omitempty"` // who ran it; empty if none did
	Received int64  `json:"received"`          // Unix ns: arrival at mserve
	Sent     int64  `json:"sent,omitempty"`    // Unix ns: sent to the servant; 0 if never
	Returned int64  `json:"returned"`          // Unix ns: answered
	Outcome  string `json:"outcome"`           // ok, error (the servant's), or mserve's error name (timeout, servant_lost…)
	Code     int    `json:"code,omitempty"`    // JSON-RPC error code for errors mserve produced
	Message  string `json:"message,omitempty"` // their message
}

// Log keeps the ring and, optionally, the file.
type Log struct {
	mu   sync.Mutex
	ring []Entry
	next int
	full bool

	fmu  sync.Mutex
	file *os.File
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// DefaultSize is the ring size when none is given.
const DefaultSize = 10_000

// New returns a log keeping the newest size entries (DefaultSize when
// size <= 0) and, when path is not empty, appending every entry to it.
func New(size int, path string) (*Log, error) {
	if size <= 0 {
		size = DefaultSize
	}
	l := &Log{ring: make([]Entry, size)}
	if path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		l.file, l.w = f, bufio.NewWriterSize(f, 64<<10)
		l.stop, l.done = make(chan struct{}), make(chan struct{})
		go l.flushLoop()
	}
	return l, nil
}

// Record adds the call's entry; it is an engine.Config.Record function.
func (l *Log) Record(c *engine.Call, a *engine.Answer, at time.Time) {
	e := Entry{
		ID: c.Seq(), User: c.User, Method: c.Method, Route: c.Route, Servant: a.Servant,
		Received: c.Arrived.UnixNano(), Returned: at.UnixNano(), Outcome: a.Outcome(),
	}
	if a.Servant != "" {
		if sent := c.SentAt(); !sent.IsZero() {
			e.Sent = sent.UnixNano()
		}
	}
	if a.Err != nil {
		e.Code, e.Message = a.Err.Code, a.Err.Message
	}
	l.add(e)
}

func (l *Log) add(e Entry) {
	l.mu.Lock()
	l.ring[l.next] = e
	l.next++
	if l.next == len(l.ring) {
		l.next, l.full = 0, true
	}
	l.mu.Unlock()
	if l.w != nil {
		b, _ := json.Marshal(e)
		l.fmu.Lock()
		l.w.Write(b)
		l.w.WriteByte('\n')
		l.fmu.Unlock()
	}
}

// Refused records a request refused before the queue (it has no id).
func (l *Log) Refused(method, user string, e *jsonrpc.Error) {
	now := time.Now().UnixNano()
	l.add(Entry{User: user, Method: method, Received: now, Returned: now, Outcome: jsonrpc.CodeName(e.Code), Code: e.Code, Message: e.Message})
}

// Filter selects entries; empty fields match everything.
type Filter struct {
	Method, Servant, Outcome, User string
	NotOK                          bool // only calls that did not succeed
}

func (f Filter) match(e *Entry) bool {
	return (f.Method == "" || e.Method == f.Method) && (f.Servant == "" || e.Servant == f.Servant) &&
		(f.Outcome == "" || e.Outcome == f.Outcome) && (f.User == "" || e.User == f.User) &&
		(!f.NotOK || e.Outcome != "ok")
}

// Recent returns up to n entries matching f, newest first.
func (l *Log) Recent(n int, f Filter) []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []Entry{}
	size := l.next
	if l.full {
		size = len(l.ring)
	}
	for k := 1; k <= size && len(out) < n; k++ {
		e := &l.ring[(l.next-k+len(l.ring))%len(l.ring)]
		if f.match(e) {
			out = append(out, *e)
		}
	}
	return out
}

// Latencies returns the execution times (sent to returned) of the newest
// entries of each servant that ran a call, oldest first, for percentiles.
func (l *Log) Latencies() map[string][]time.Duration {
	out := map[string][]time.Duration{}
	recent := l.Recent(len(l.ring), Filter{}) // newest first
	for i := len(recent) - 1; i >= 0; i-- {
		if e := &recent[i]; e.Servant != "" && e.Sent != 0 {
			out[e.Servant] = append(out[e.Servant], time.Duration(e.Returned-e.Sent))
		}
	}
	return out
}

// Percentile returns quantile q of ds (which it sorts), or 0 for none.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// ServeHTTP serves /queries: the newest entries as a JSON array, newest
// first. Query parameters: limit (default 100), method, servant, outcome,
// user, and errors=1 for calls that did not succeed.
func (l *Log) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 100
	if v := q.Get("limit"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			http.Error(w, "limit must be a positive number", http.StatusBadRequest)
			return
		}
	}
	f := Filter{Method: q.Get("method"), Servant: q.Get("servant"), Outcome: q.Get("outcome"), User: q.Get("user"), NotOK: q.Get("errors") == "1"}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(l.Recent(n, f))
}

func (l *Log) flushLoop() {
	defer close(l.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.fmu.Lock()
			l.w.Flush()
			l.fmu.Unlock()
		}
	}
}

// Close flushes and closes the file, if any.
func (l *Log) Close() error {
	if l.file == nil {
		return nil
	}
	close(l.stop)
	<-l.done
	l.fmu.Lock()
	defer l.fmu.Unlock()
	l.w.Flush()
	return l.file.Close()
}
