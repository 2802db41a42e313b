// Package bench holds what the benchmark programs under examples/benchmarks
// share: latency statistics, CSV output and the machine's description.
package bench

import (
	"encoding/csv"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

// Percentile returns the value at quantile q (0 < q <= 1) of sorted, using
// the nearest-rank rule; 0 for an empty slice.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Sorted returns a sorted copy of d.
func Sorted(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
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
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	var out []map[string]string
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, h := range recs[0] {
			if i < len(rec) {
				m[h] = rec[i]
			}
		}
		out = append(out, m)
	}
	return out, nil
}
