// Package bench holds what the benchmark programs under examples/benchmarks
// share: replaying a sequence of calls, an LRU set, CSV output and input.
// Percentiles are core/querylog.Percentile's.
package bench

import (
	"container/list"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Replay makes calls 0 to n-1 with conc callers, each taking the next index
// in turn, until all are made, ctx ends or a call fails. A call that fails
// once ctx has ended is the run's end, not a failure. It returns the time
// call from was taken (the start of the measured part; zero if it never
// was) and the first failure, which stops the other callers.
func Replay(ctx context.Context, conc, n, from int, call func(ctx context.Context, i int) error) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		fromNs   atomic.Int64
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if i == from {
					fromNs.Store(time.Now().UnixNano())
				}
				if err := call(ctx, i); err != nil && ctx.Err() == nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	var start time.Time
	if ns := fromNs.Load(); ns != 0 {
		start = time.Unix(0, ns)
	}
	return start, firstErr
}

// LRU is a set of at most a fixed number of keys that forgets the least
// recently used key first. It is not safe for concurrent use.
type LRU struct {
	size  int
	items map[string]*list.Element // key → element of order holding the key
	order *list.List               // most recently used first
}

// NewLRU returns an empty LRU holding at most size keys.
func NewLRU(size int) *LRU {
	return &LRU{size: max(size, 0), items: map[string]*list.Element{}, order: list.New()}
}

// Touch reports whether key is held, marking it most recently used.
func (c *LRU) Touch(key string) bool {
	e, ok := c.items[key]
	if ok {
		c.order.MoveToFront(e)
	}
	return ok
}

// Add holds key as the most recently used, forgetting the least recently
// used keys beyond the size.
func (c *LRU) Add(key string) {
	if c.Touch(key) {
		return
	}
	c.items[key] = c.order.PushFront(key)
	for c.order.Len() > c.size {
		delete(c.items, c.order.Remove(c.order.Back()).(string))
	}
}

// Get reports whether key is held (a hit), and holds it from now on.
func (c *LRU) Get(key string) bool {
	if c.Touch(key) {
		return true
	}
	c.Add(key)
	return false
}

// Us formats d in whole microseconds, as the CSV files hold times.
func Us(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }

// F formats a float with the given decimals.
func F(v float64, decimals int) string { return strconv.FormatFloat(v, 'f', decimals, 64) }

var stdoutHeader bool // the header went to standard output already

// AppendCSV appends row to the CSV file at path, writing header first when
// the file is new or empty. An empty path writes to standard output.
func AppendCSV(path string, header, row []string) error {
	if len(header) != len(row) {
		return fmt.Errorf("CSV row has %d fields, header %d", len(row), len(header))
	}
	if path == "" {
		w := csv.NewWriter(os.Stdout)
		if !stdoutHeader {
			w.Write(header)
			stdoutHeader = true
		}
		w.Write(row)
		w.Flush()
		return w.Error()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if st.Size() == 0 {
		w.Write(header)
	}
	w.Write(row)
	w.Flush()
	return w.Error()
}

// ReadCSV reads a CSV file with a header into rows of named fields.
func ReadCSV(path string) ([]map[string]string, error) {
	_, rows, err := ReadTable(path)
	return rows, err
}

// ReadTable is ReadCSV that also returns the header: the column names in
// the file's order.
func ReadTable(path string) (header []string, rows []map[string]string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, nil, nil
	}
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, h := range recs[0] {
			if i < len(rec) {
				m[h] = rec[i]
			}
		}
		rows = append(rows, m)
	}
	return recs[0], rows, nil
}
