// Command plot turns a CSV file of benchmark results into an SVG grouped bar
// chart, with nothing but the standard library.
//
//	plot -csv results/peers.csv -x target -series conc -y rps \
//	     -title "requests/s" -out results/peers-rps.svg
//
// Bars are grouped by the -x column (in order of first appearance), one bar
// per value of the -series column, with its value written above it. -where
// col=value (repeatable) keeps only matching rows; -log uses a logarithmic
// value axis.
package main

import (
	"flag"
	"fmt"
	"html"
	"log"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/mserve/mserve/examples/benchmarks/internal/bench"
)

type filters []string

func (f *filters) String() string     { return strings.Join(*f, ",") }
func (f *filters) Set(s string) error { *f = append(*f, s); return nil }

var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"}

func main() {
	in := flag.String("csv", "", "input CSV with a header row")
	out := flag.String("out", "", "output SVG file")
	xcol := flag.String("x", "", "column naming the bar groups (a+b joins two columns)")
	scol := flag.String("series", "", "column naming the bars within a group (optional)")
	ycol := flag.String("y", "", "column holding the values")
	title := flag.String("title", "", "chart title")
	ylabel := flag.String("ylabel", "", "value axis label")
	scale := flag.Float64("scale", 1, "multiply values by this (e.g. 100 for percentages)")
	logScale := flag.Bool("log", false, "logarithmic value axis")
	var where filters
	flag.Var(&where, "where", "col=value: keep only rows where col is value (repeatable)")
	flag.Parse()
	if *in == "" || *out == "" || *xcol == "" || *ycol == "" {
		flag.Usage()
		os.Exit(2)
	}
	rows, err := bench.ReadCSV(*in)
	if err != nil {
		log.Fatal("plot: ", err)
	}
	var groups, series []string
	values := map[[2]string]float64{}
	for _, r := range rows {
		if !matches(r, where) {
			continue
		}
		v, err := strconv.ParseFloat(r[*ycol], 64)
		if err != nil {
			continue
		}
		g, s := field(r, *xcol), field(r, *scol)
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
		if !slices.Contains(series, s) {
			series = append(series, s)
		}
		values[[2]string{g, s}] = v * *scale
	}
	if len(groups) == 0 {
		log.Fatalf("plot: no rows of %s with a number in %q", *in, *ycol)
	}
	svg := render(*title, *ylabel, *scol, groups, series, values, *logScale)
	if err := os.WriteFile(*out, []byte(svg), 0o644); err != nil {
		log.Fatal("plot: ", err)
	}
}

// field returns column col of r; "a+b" joins columns a and b with a space.
func field(r map[string]string, col string) string {
	var parts []string
	for _, c := range strings.Split(col, "+") {
		parts = append(parts, r[c])
	}
	return strings.Join(parts, " ")
}

func matches(r map[string]string, where filters) bool {
	for _, w := range where {
		k, v, _ := strings.Cut(w, "=")
		if r[k] != v {
			return false
		}
	}
	return true
}

func render(title, ylabel, seriesName string, groups, series []string, values map[[2]string]float64, logScale bool) string {
	const (
		left, right, top, bottom = 70.0, 20.0, 40.0, 90.0
		gap                      = 18.0
		plotH                    = 260.0
	)
	barW := 22.0
	width := left + right + float64(len(groups))*(float64(len(series))*barW+gap)
	width = math.Max(width, math.Max(420, left+right+8*float64(len([]rune(title)))))
	groupW := (width - left - right) / float64(len(groups))
	barW = math.Min(30, (groupW-gap)/float64(len(series)))
	height := top + plotH + bottom
	maxV, minV := 0.0, math.Inf(1)
	for _, v := range values {
		maxV = math.Max(maxV, v)
		if v > 0 {
			minV = math.Min(minV, v)
		}
	}
	if maxV <= 0 {
		maxV = 1
	}
	var lo, hi float64 // axis range (log10 values when logScale)
	var ticks []float64
	if logScale {
		lo = math.Floor(math.Log10(math.Min(minV, maxV)))
		hi = math.Ceil(math.Log10(maxV))
		if hi <= lo {
			hi = lo + 1
		}
		for e := lo; e <= hi; e++ {
			ticks = append(ticks, math.Pow(10, e))
		}
	} else {
		step := niceStep(maxV / 5)
		hi = math.Ceil(maxV/step) * step
		for t := 0.0; t <= hi+step/2; t += step {
			ticks = append(ticks, t)
		}
	}
	y := func(v float64) float64 {
		if logScale {
			if v <= 0 {
				return top + plotH
			}
			return top + plotH - (math.Log10(v)-lo)/(hi-lo)*plotH
		}
		return top + plotH - v/hi*plotH
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	for _, t := range ticks {
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, width-right, y(t), y(t))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", left-6, y(t)+4, human(t))
	}
	fmt.Fprintf(&b, `<text transform="translate(16 %.0f) rotate(-90)" text-anchor="middle" fill="#333">%s</text>`+"\n", top+plotH/2, html.EscapeString(ylabel))
	fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#333"/>`+"\n", left, width-right, top+plotH, top+plotH)
	for gi, g := range groups {
		x0 := left + float64(gi)*groupW + (groupW-float64(len(series))*barW)/2
		for si, s := range series {
			v, ok := values[[2]string{g, s}]
			if !ok {
				continue
			}
			x := x0 + float64(si)*barW
			yv := y(v)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				x, yv, barW-2, top+plotH-yv, palette[si%len(palette)], html.EscapeString(g), html.EscapeString(s), human(v))
			fmt.Fprintf(&b, `<text transform="translate(%.1f %.1f) rotate(-90)" font-size="9" fill="#222">%s</text>`+"\n", x+barW/2+3, yv-3, human(v))
		}
		cx := x0 + float64(len(series))*barW/2
		fmt.Fprintf(&b, `<text transform="translate(%.1f %.0f) rotate(-30)" text-anchor="end" fill="#333">%s</text>`+"\n", cx, top+plotH+14, html.EscapeString(g))
	}
	if len(series) > 1 || series[0] != "" {
		lx := left
		for si, s := range series {
			label := s
			if seriesName != "" {
				label = seriesName + "=" + s
			}
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/>`, lx, height-18, palette[si%len(palette)])
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#333">%s</text>`+"\n", lx+14, height-9, html.EscapeString(label))
			lx += 24 + 7*float64(len(label))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds s up to 1, 2 or 5 times a power of ten.
func niceStep(s float64) float64 {
	if s <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(s)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= s {
			return m * p
		}
	}
	return 10 * p
}

// human formats v compactly: 12.3k, 4.5M, 0.93.
func human(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return trim(v/1e6) + "M"
	case a >= 1e4:
		return trim(v/1e3) + "k"
	case a >= 100 || a == 0:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func trim(v float64) string {
	s := strconv.FormatFloat(v, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0")
}
