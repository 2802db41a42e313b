// Command report turns the benchmark scripts' CSV files into Markdown
// tables, checks them against the benchmark issue's goals, and rewrites the
// generated parts of docs/BENCHMARKS.md (between <!-- BEGIN bench-report:NAME -->
// and <!-- END bench-report:NAME --> markers).
//
//	report peers DIR                 # aggregate DIR/peers-raw.csv into DIR/peers.csv, print the table
//	report locality|uneven|scale|memory|goals DIR
//	report doc DIR docs/BENCHMARKS.md
package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/mserve/mserve/examples/benchmarks/internal/bench"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: report peers|locality|uneven|scale|memory|goals DIR | report doc DIR DOC")
		os.Exit(2)
	}
	cmd, dir := os.Args[1], os.Args[2]
	r := &reporter{dir: dir}
	var out string
	switch cmd {
	case "peers":
		r.aggregatePeers()
		out = r.peers()
	case "locality":
		out = r.locality()
	case "uneven":
		out = r.uneven()
	case "scale":
		out = r.scale()
	case "memory":
		out = r.memory()
	case "goals":
		out = r.goals()
	case "doc":
		if len(os.Args) < 4 {
			log.Fatal("report doc DIR DOC")
		}
		r.aggregatePeers()
		if err := r.doc(os.Args[3]); err != nil {
			log.Fatal("report: ", err)
		}
		return
	default:
		log.Fatalf("report: unknown command %q", cmd)
	}
	fmt.Print(out)
}

type reporter struct{ dir string }

func (r *reporter) read(name string) []map[string]string {
	_, rows := r.table(name)
	return rows
}

// table reads the CSV file name of r.dir: its header and rows; none when
// the file is not there.
func (r *reporter) table(name string) ([]string, []map[string]string) {
	header, rows, err := bench.ReadTable(filepath.Join(r.dir, name))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		log.Fatal("report: ", err)
	}
	return header, rows
}

func num(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// rate formats calls or requests per second.
func rate(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return thousands(int64(math.Round(v)))
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString(" ")
		}
		b.WriteRune(c)
	}
	return b.String()
}

// dur formats microseconds.
func dur(us float64) string {
	switch {
	case math.IsNaN(us):
		return "–"
	case us >= 10000:
		return fmt.Sprintf("%.0f ms", us/1000)
	case us >= 1000:
		return fmt.Sprintf("%.1f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

func ratio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f %%", 100*v)
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// medianRows reduces rows measured over several rounds to one per key (the
// values of keyCols): the round whose by column is the median, with the
// rounds' values of by, in round order, in "<by>_rounds".
func medianRows(rows []map[string]string, keyCols []string, by string) []map[string]string {
	groups := map[string][]map[string]string{}
	var order []string
	for _, row := range rows {
		var k []string
		for _, c := range keyCols {
			k = append(k, row[c])
		}
		key := strings.Join(k, "\x00")
		if groups[key] == nil {
			order = append(order, key)
		}
		groups[key] = append(groups[key], row)
	}
	var out []map[string]string
	for _, key := range order {
		g := groups[key]
		var vals []string
		for _, row := range g {
			vals = append(vals, rate(num(row[by])))
		}
		sorted := slices.Clone(g)
		sort.SliceStable(sorted, func(i, j int) bool { return num(sorted[i][by]) < num(sorted[j][by]) })
		med := map[string]string{}
		for k, v := range sorted[(len(sorted)-1)/2] {
			med[k] = v
		}
		med[by+"_rounds"] = strings.Join(vals, ", ")
		med["rounds"] = strconv.Itoa(len(g))
		out = append(out, med)
	}
	return out
}

// --- peers ----------------------------------------------------------------

type peerRow struct {
	conc            int
	target          string
	rps, p50, p99   float64
	errors, rounds  int
	native          bool
	requests, durUs float64
	// CPU time per request of the balancer and of the backends together
	// (µs); NaN when not measured (the native rows, older results).
	balancerCPU, backendsCPU float64
	balancerUs, backendsUs   float64 // sums over the rounds
}

var peerOrder = []string{"direct", "haproxy", "nginx", "mserve-http", "mserve-http-least", "mserve-http-batch", "mserve-http-warm", "native-direct", "mserve-native", "mserve-native-least"}

var peerLabel = map[string]string{
	"direct":              "direct (one backend, no balancer)",
	"haproxy":             "HAProxy (leastconn)",
	"nginx":               "nginx (least_conn)",
	"mserve-http":         "mserve HTTP (match, 1 ms expiry)",
	"mserve-http-least":   "mserve HTTP (least)",
	"mserve-http-batch":   "mserve HTTP (least, conns=2: JSON-RPC batches)",
	"mserve-http-warm":    "mserve HTTP (warm, conns=2)",
	"native-direct":       "native: direct to one SDK servant",
	"mserve-native":       "native: mserve (match, 1 ms expiry)",
	"mserve-native-least": "native: mserve (least)",
}

// aggregatePeers sums requests and durations over rounds and takes the
// median of the rounds' percentiles, writing peers.csv.
func (r *reporter) aggregatePeers() {
	raw := r.read("peers-raw.csv")
	if raw == nil {
		return
	}
	type key struct {
		c int
		t string
	}
	agg := map[key]*peerRow{}
	p50s, p99s := map[key][]float64{}, map[key][]float64{}
	var keys []key
	for _, row := range raw {
		k := key{int(num(row["conc"])), row["target"]}
		a := agg[k]
		if a == nil {
			a = &peerRow{conc: k.c, target: k.t}
			agg[k] = a
			keys = append(keys, k)
		}
		a.requests += num(row["requests"])
		a.durUs += num(row["duration_us"])
		a.balancerUs += cpuNum(row["balancer_cpu_us"])
		a.backendsUs += cpuNum(row["backends_cpu_us"])
		a.errors += int(num(row["errors"]))
		a.rounds++
		p50s[k] = append(p50s[k], num(row["p50_us"]))
		p99s[k] = append(p99s[k], num(row["p99_us"]))
	}
	var b bytes.Buffer
	b.WriteString("conc,target,rps,p50_us,p99_us,errors,rounds,balancer_cpu_us_per_req,backends_cpu_us_per_req\n")
	for _, k := range keys {
		a := agg[k]
		fmt.Fprintf(&b, "%d,%s,%.0f,%.0f,%.0f,%d,%d,%.1f,%.1f\n", k.c, k.t, a.requests/(a.durUs/1e6), median(p50s[k]), median(p99s[k]), a.errors, a.rounds,
			a.balancerUs/a.requests, a.backendsUs/a.requests)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "peers.csv"), b.Bytes(), 0o644); err != nil {
		log.Fatal("report: ", err)
	}
	// peers-all.csv: the wrk and the native rows together, for the plots.
	var all bytes.Buffer
	all.WriteString("conc,target,rps,p50_us,p99_us\n")
	for _, p := range r.peerRows() {
		fmt.Fprintf(&all, "%d,%s,%.0f,%.0f,%.0f\n", p.conc, p.target, p.rps, p.p50, p.p99)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "peers-all.csv"), all.Bytes(), 0o644); err != nil {
		log.Fatal("report: ", err)
	}
}

func (r *reporter) peerRows() []peerRow {
	var rows []peerRow
	for _, row := range r.read("peers.csv") {
		rows = append(rows, peerRow{conc: int(num(row["conc"])), target: row["target"], rps: num(row["rps"]),
			p50: num(row["p50_us"]), p99: num(row["p99_us"]), errors: int(num(row["errors"])), rounds: int(num(row["rounds"])),
			balancerCPU: cpuNum(row["balancer_cpu_us_per_req"]), backendsCPU: cpuNum(row["backends_cpu_us_per_req"])})
	}
	for _, row := range r.read("native.csv") {
		rows = append(rows, peerRow{conc: int(num(row["conc"])), target: row["target"], rps: num(row["rps"]),
			p50: num(row["p50_us"]), p99: num(row["p99_us"]), native: true, balancerCPU: math.NaN(), backendsCPU: math.NaN()})
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].conc != rows[j].conc {
			return rows[i].conc < rows[j].conc
		}
		return slices.Index(peerOrder, rows[i].target) < slices.Index(peerOrder, rows[j].target)
	})
	return rows
}

// cpuNum reads a CPU time column: NaN when absent (results from before it
// was measured).
func cpuNum(s string) float64 {
	if s == "" {
		return math.NaN()
	}
	return num(s)
}

func find(rows []peerRow, c int, target string) *peerRow {
	for i := range rows {
		if rows[i].conc == c && rows[i].target == target {
			return &rows[i]
		}
	}
	return nil
}

func (r *reporter) peers() string {
	rows := r.peerRows()
	if rows == nil {
		return "_no peer results yet: run `make bench-peers`_\n"
	}
	var b strings.Builder
	b.WriteString("| c | target | req/s | p50 | p99 | req/s ÷ HAProxy | p50 ÷ HAProxy | CPU per request: balancer / backends |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range rows {
		hap := find(rows, p.conc, "haproxy")
		rr, pr := math.NaN(), math.NaN()
		if hap != nil {
			rr, pr = p.rps/hap.rps, p.p50/hap.p50
		}
		name := peerLabel[p.target]
		if name == "" {
			name = p.target
		}
		if strings.HasPrefix(p.target, "mserve") {
			name = "**" + name + "**"
		}
		errs := ""
		if p.errors > 0 {
			errs = fmt.Sprintf(" (%d errors)", p.errors)
		}
		cpu := "–"
		if !math.IsNaN(p.balancerCPU) && !math.IsNaN(p.backendsCPU) && (p.balancerCPU > 0 || p.backendsCPU > 0) {
			cpu = fmt.Sprintf("%.1f µs / %.1f µs", p.balancerCPU, p.backendsCPU)
		}
		fmt.Fprintf(&b, "| %d | %s%s | %s | %s | %s | %s | %s | %s |\n", p.conc, name, errs, rate(p.rps), dur(p.p50), dur(p.p99), ratio(rr), ratio(pr), cpu)
	}
	return b.String()
}

// --- locality ---------------------------------------------------------------

var locOrder = []string{"sim-round-robin", "sim-hash-partition", "sim-bound", "even", "least", "match", "match-12s", "lua.match", "resume", "boundedhash", "warm", "bench.hash"}

func (r *reporter) locRows(workload string) []map[string]string {
	var rows []map[string]string
	for _, row := range medianRows(r.read("locality.csv"), []string{"workload", "algo"}, "calls_per_s") {
		if row["workload"] == workload {
			rows = append(rows, row)
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		return slices.Index(locOrder, rows[i]["algo"]) < slices.Index(locOrder, rows[j]["algo"])
	})
	return rows
}

func locRate(row map[string]string) float64 {
	if strings.HasPrefix(row["algo"], "sim-") {
		return math.NaN()
	}
	return num(row["calls_per_s"])
}

// evenRate returns the calls/s of even's row, NaN when there is none.
func evenRate(rows []map[string]string) float64 {
	for _, row := range rows {
		if row["algo"] == "even" {
			return num(row["calls_per_s"])
		}
	}
	return math.NaN()
}

func (r *reporter) locality() string {
	var b strings.Builder
	for _, w := range []string{"zipf", "hot"} {
		rows := r.locRows(w)
		if rows == nil {
			continue
		}
		even := evenRate(rows)
		if w == "zipf" {
			b.WriteString("Workload **zipf**: Zipf keys only.\n\n")
			b.WriteString("| algorithm | hits | calls/s | ÷ even | calls/s in each round | p50 | p99 | mean wait in mserve | mean execution | calls per servant |\n|---|---|---|---|---|---|---|---|---|---|\n")
		} else {
			b.WriteString("\nWorkload **hot**: the same, with 30 % of the calls on one key.\n\n")
			b.WriteString("| algorithm | hits | hot key's hits | calls/s | ÷ even | p99 | calls per servant | most / fewest | hot key's calls per servant |\n|---|---|---|---|---|---|---|---|---|\n")
		}
		for _, row := range rows {
			name := row["algo"]
			if strings.HasPrefix(name, "sim-") {
				name = "_" + name + "_ (simulated)"
			}
			if row["finished"] == "false" {
				name += " (unfinished: stopped at the time limit)"
			}
			rt := locRate(row)
			if w == "zipf" {
				rounds := row["calls_per_s_rounds"]
				if math.IsNaN(rt) {
					rounds = "–"
				}
				p50, p99 := dur(num(row["p50_us"])), dur(num(row["p99_us"]))
				if math.IsNaN(rt) {
					p50, p99 = "–", "–"
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, pct(num(row["hit_rate"])), rate(rt), ratio(rt/even),
					rounds, p50, p99, dur(num(row["mean_wait_us"])), dur(num(row["mean_exec_us"])), row["per_servant"])
			} else {
				p99 := dur(num(row["p99_us"]))
				if math.IsNaN(rt) {
					p99 = "–"
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |\n", name, pct(num(row["hit_rate"])), pct(num(row["hot_hit_rate"])),
					rate(rt), ratio(rt/even), p99, row["per_servant"],
					pct(num(row["max_share"])), pct(num(row["min_share"])), row["hot_spread"])
			}
		}
	}
	if b.Len() == 0 {
		return "_no locality results yet: run `make bench-locality`_\n"
	}
	return b.String()
}

// --- uneven -----------------------------------------------------------------

func (r *reporter) uneven() string {
	rows := medianRows(r.read("uneven.csv"), []string{"c", "mode", "algo"}, "tiny_p99_us")
	if rows == nil {
		return "_no uneven-work results yet: run `make bench-uneven`_\n"
	}
	var b strings.Builder
	b.WriteString("| c | where calls wait | algorithm | calls/s | p50 | p99 | tiny calls p50 | tiny calls p99 | tiny p99 in each round (µs) | huge calls p50 | huge: time in is_prime (p50) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range rows {
		mode := row["mode"]
		switch mode {
		case "queue":
			mode = "in mserve (1 slot each)"
		case "push":
			mode = "in the servants (16 slots each)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row["c"], mode, row["algo"], rate(num(row["calls_per_s"])),
			dur(num(row["p50_us"])), dur(num(row["p99_us"])), dur(num(row["tiny_p50_us"])), dur(num(row["tiny_p99_us"])), row["tiny_p99_us_rounds"],
			dur(num(row["huge_p50_us"])), dur(num(row["huge_handler_p50_us"])))
	}
	return b.String()
}

// --- scale ------------------------------------------------------------------

func (r *reporter) scale() string {
	rows := r.read("scale.csv")
	if rows == nil {
		return "_no scale results yet: run `make bench-scale`_\n"
	}
	var sizes []string
	byAlgo := map[string]map[string]map[string]string{}
	var algos []string
	for _, row := range rows {
		if !slices.Contains(sizes, row["servants"]) {
			sizes = append(sizes, row["servants"])
		}
		if byAlgo[row["algo"]] == nil {
			byAlgo[row["algo"]] = map[string]map[string]string{}
			algos = append(algos, row["algo"])
		}
		byAlgo[row["algo"]][row["servants"]] = row
	}
	var b strings.Builder
	b.WriteString("| algorithm |")
	for _, s := range sizes {
		fmt.Fprintf(&b, " %s servants |", s)
	}
	b.WriteString(" growth, first → last | allocs/op |\n|---|")
	for range sizes {
		b.WriteString("---|")
	}
	b.WriteString("---|---|\n")
	for _, a := range algos {
		fmt.Fprintf(&b, "| %s |", a)
		for _, s := range sizes {
			row := byAlgo[a][s]
			if row == nil {
				b.WriteString(" – |")
				continue
			}
			busy := ""
			if num(row["busy"]) < num(s)-0.5 {
				busy = fmt.Sprintf(" (%.0f busy)", num(row["busy"]))
			}
			fmt.Fprintf(&b, " %s ns%s |", thousands(int64(num(row["ns_op"]))), busy)
		}
		first, last := byAlgo[a][sizes[0]], byAlgo[a][sizes[len(sizes)-1]]
		g := math.NaN()
		allocs := "–"
		if first != nil && last != nil {
			g = num(last["ns_op"]) / num(first["ns_op"])
			allocs = last["allocs_op"]
		}
		fmt.Fprintf(&b, " %s for %s× the servants | %s |\n", ratio(g), strconv.FormatFloat(num(sizes[len(sizes)-1])/num(sizes[0]), 'f', 0, 64), allocs)
	}
	return b.String()
}

// --- memory -----------------------------------------------------------------

func (r *reporter) memory() string {
	rows := r.read("memory.csv")
	if rows == nil {
		return "_no memory results yet: run `make bench-scale`_\n"
	}
	var b strings.Builder
	b.WriteString("| idle connections | mserve RSS before | RSS with them open | per connection | peak RSS (VmHWM) | goroutines before → after |\n|---|---|---|---|---|---|\n")
	for _, row := range rows {
		before, after := num(row["rss_before_kb"]), num(row["rss_after_kb"])
		n := num(row["conns"])
		fmt.Fprintf(&b, "| %s | %.1f MiB | %.1f MiB | %.1f KiB | %.1f MiB | %s → %s |\n", thousands(int64(n)), before/1024, after/1024,
			(after-before)/n, num(row["hwm_kb"])/1024, row["goroutines_before"], row["goroutines_after"])
	}
	return b.String()
}

// --- goals ------------------------------------------------------------------

func (r *reporter) goals() string {
	var b strings.Builder
	b.WriteString("| goal | measured | verdict |\n|---|---|---|\n")
	rows := r.peerRows()
	if ms, hap := find(rows, 64, "mserve-http"), find(rows, 64, "haproxy"); ms != nil && hap != nil {
		v := ms.rps / hap.rps
		fmt.Fprintf(&b, "| mserve HTTP ≥ 1.2× HAProxy's req/s at c=64 | %s (%s vs %s req/s) | %s |\n", ratio(v), rate(ms.rps), rate(hap.rps), verdict(v >= 1.2))
		if l := find(rows, 64, "mserve-http-least"); l != nil {
			fmt.Fprintf(&b, "| … the same with `least` instead of match (for reference) | %s | %s |\n", ratio(l.rps/hap.rps), verdict(l.rps/hap.rps >= 1.2))
		}
		if l := find(rows, 64, "mserve-http-batch"); l != nil {
			fmt.Fprintf(&b, "| … `least`, calls batched to the servants (conns=2) | %s | %s |\n", ratio(l.rps/hap.rps), verdict(l.rps/hap.rps >= 1.2))
		}
		if l := find(rows, 64, "mserve-http-warm"); l != nil {
			fmt.Fprintf(&b, "| … `warm` (locality that uses slots), batched | %s | %s |\n", ratio(l.rps/hap.rps), verdict(l.rps/hap.rps >= 1.2))
		}
	}
	if ms, hap := find(rows, 1, "mserve-http"), find(rows, 1, "haproxy"); ms != nil && hap != nil {
		fmt.Fprintf(&b, "| mserve HTTP p50 at c=1 no worse than HAProxy's | %s vs %s | %s |\n", dur(ms.p50), dur(hap.p50), verdict(ms.p50 <= hap.p50))
		for _, t := range []string{"mserve-http-least", "mserve-http-batch"} {
			if l := find(rows, 1, t); l != nil {
				fmt.Fprintf(&b, "| … %s | %s vs %s | %s |\n", peerLabel[t], dur(l.p50), dur(hap.p50), verdict(l.p50 <= hap.p50))
			}
		}
	}
	if ms, d := find(rows, 1, "mserve-native"), find(rows, 1, "native-direct"); ms != nil && d != nil {
		fmt.Fprintf(&b, "| native: added p50 over direct ≤ 25 µs (c=1) | +%s | %s |\n", dur(ms.p50-d.p50), verdict(ms.p50-d.p50 <= 25))
	}
	if hap := find(rows, 64, "haproxy"); hap != nil {
		for _, t := range []string{"mserve-native", "mserve-native-least"} {
			if ms := find(rows, 64, t); ms != nil {
				v := ms.rps / hap.rps
				fmt.Fprintf(&b, "| native (%s) ≥ 3× HAProxy's req/s at c=64 | %s (%s vs %s) | %s |\n", peerLabel[t], ratio(v), rate(ms.rps), rate(hap.rps), verdict(v >= 3))
			}
		}
	}
	if rows := r.locRows("zipf"); rows != nil {
		even := evenRate(rows)
		var bestHits, bestRate map[string]string
		for _, row := range rows {
			if strings.HasPrefix(row["algo"], "sim-") || row["algo"] == "bench.hash" {
				continue // reference points, not mserve's algorithms
			}
			if bestHits == nil || num(row["hit_rate"]) > num(bestHits["hit_rate"]) {
				bestHits = row
			}
			if bestRate == nil || num(row["calls_per_s"]) > num(bestRate["calls_per_s"]) {
				bestRate = row
			}
		}
		if bestHits != nil && even > 0 {
			// The goal wants both of one algorithm: show the best at each,
			// with its other figure.
			bests := []map[string]string{bestHits}
			if bestRate["algo"] != bestHits["algo"] {
				bests = append(bests, bestRate)
			}
			for _, best := range bests {
				h, v := num(best["hit_rate"]), num(best["calls_per_s"])/even
				fmt.Fprintf(&b, "| best locality algorithm: ≥ 90 %% hits and ≥ 1.5× even's throughput | %s: %s hits, %s | %s |\n",
					best["algo"], pct(h), ratio(v), verdict(h >= 0.9 && v >= 1.5))
			}
		}
	}
	if rows := r.locRows("hot"); rows != nil {
		for _, row := range rows {
			if !slices.Contains([]string{"resume", "boundedhash", "warm", "match", "bench.hash"}, row["algo"]) {
				continue
			}
			hi, lo := num(row["max_share"]), num(row["min_share"])
			ok := hi <= 0.4 && lo >= 0.1
			fmt.Fprintf(&b, "| hot key: no servant starved or flooded (each servant 10–40 %% of calls; 25 %% is fair) — %s | most %s, fewest %s | %s |\n",
				row["algo"], pct(hi), pct(lo), verdict(ok))
		}
	}
	return b.String()
}

// --- doc --------------------------------------------------------------------

var marker = regexp.MustCompile(`(?s)(<!-- BEGIN bench-report:([a-z]+) -->\n).*?(<!-- END bench-report:[a-z]+ -->)`)

func (r *reporter) section(name string) string {
	switch name {
	case "machine":
		m, _ := os.ReadFile(filepath.Join(r.dir, "machine.txt"))
		return "```\n" + strings.TrimSpace(string(m)) + "\n```\n"
	case "peers":
		return r.peers()
	case "goals":
		return r.goals()
	case "locality":
		return r.locality()
	case "uneven":
		return r.uneven()
	case "scale":
		return r.scale()
	case "memory":
		return r.memory()
	case "profile":
		return r.profile()
	}
	return fmt.Sprintf("_unknown section %q_\n", name)
}

// profile shows the top of the profiles the scripts saved.
func (r *reporter) profile() string {
	var b strings.Builder
	for _, p := range []struct{ file, title string }{
		{"http-least-cpu.txt", "HTTP front end, least, c=64: CPU (flat)"},
		{"http-batch-cpu-cum.txt", "HTTP front end, least with batches to the servants (conns=2), c=64: CPU (cumulative)"},
		{"http-least-cpu-cum.txt", "HTTP front end, least, c=64: CPU (cumulative)"},
		{"http-least-allocs-count.txt", "HTTP front end, least, c=64: allocations (objects)"},
		{"http-least-mutex.txt", "HTTP front end, least, c=64: mutex"},
		{"heap-10k-conns.txt", "native front end, 10 000 idle connections: heap in use"},
	} {
		data, err := os.ReadFile(filepath.Join(r.dir, "profiles", p.file))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		var keep []string
		body := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Time:") ||
				strings.HasPrefix(l, "Dropped") || strings.HasPrefix(l, "Showing top") {
				continue
			}
			if strings.Contains(l, "flat%") {
				body = 1
			} else if body > 0 {
				body++
			}
			if body > 14 {
				break
			}
			keep = append(keep, l)
		}
		fmt.Fprintf(&b, "%s — `results/profiles/%s`:\n\n```\n%s\n```\n\n", p.title, p.file, strings.Join(keep, "\n"))
	}
	for _, name := range []string{"http-least", "http-batch"} {
		if line := r.allocsPerRequest(name); line != "" {
			b.WriteString(line)
		}
	}
	if b.Len() == 0 {
		return "_no profiles yet: run `make bench-peers`_\n"
	}
	return b.String()
}

var (
	totalSamples = regexp.MustCompile(`Total samples = (\d+)`)
	wrkField     = regexp.MustCompile(`(\w+)=(\d+)`)
)

// allocsPerRequest divides the objects allocated during the 5 s allocation
// profile by the requests the profiling load made in that time.
func (r *reporter) allocsPerRequest(name string) string {
	prof, err1 := os.ReadFile(filepath.Join(r.dir, "profiles", name+"-allocs-count.txt"))
	load, err2 := os.ReadFile(filepath.Join(r.dir, "profiles", name+"-load.txt"))
	if err1 != nil || err2 != nil {
		return ""
	}
	m := totalSamples.FindSubmatch(prof)
	if m == nil {
		return ""
	}
	objects := num(string(m[1]))
	f := map[string]float64{}
	for _, kv := range wrkField.FindAllSubmatch(load, -1) {
		f[string(kv[1])] = num(string(kv[2]))
	}
	if f["requests"] == 0 || f["duration_us"] == 0 {
		return ""
	}
	rps := f["requests"] / (f["duration_us"] / 1e6)
	return fmt.Sprintf("%s: the profiling load ran at %s req/s (p50 %s); %s objects allocated in the 5 s allocation profile: **≈ %.0f heap objects per request**.\n\n",
		name, rate(rps), dur(f["p50_us"]), thousands(int64(objects)), objects/(rps*5))
}

// writeSummaries writes the rows the tables show (one per setup, the median
// round) as CSV files, for the plots.
func (r *reporter) writeSummaries() {
	for _, f := range []struct {
		in, out, by string
		keys        []string
	}{
		{"locality.csv", "locality-summary.csv", "calls_per_s", []string{"workload", "algo"}},
		{"uneven.csv", "uneven-summary.csv", "tiny_p99_us", []string{"c", "mode", "algo"}},
	} {
		header, rows := r.table(f.in)
		if rows == nil {
			continue
		}
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		w.Write(header)
		for _, row := range medianRows(rows, f.keys, f.by) {
			vals := make([]string, len(header))
			for i, c := range header {
				vals[i] = row[c]
			}
			w.Write(vals)
		}
		w.Flush()
		if err := os.WriteFile(filepath.Join(r.dir, f.out), b.Bytes(), 0o644); err != nil {
			log.Fatal("report: ", err)
		}
	}
}

func (r *reporter) doc(path string) error {
	r.writeSummaries()
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	n := 0
	out := marker.ReplaceAllFunc(data, func(m []byte) []byte {
		sub := marker.FindSubmatch(m)
		n++
		return []byte(string(sub[1]) + r.section(string(sub[2])) + string(sub[3]))
	})
	if n == 0 {
		return fmt.Errorf("%s has no <!-- BEGIN bench-report:NAME --> markers", path)
	}
	return os.WriteFile(path, out, 0o644)
}
