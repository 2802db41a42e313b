#!/usr/bin/env bash
# Runs every benchmark of the benchmark issue — peers, locality, uneven
# work, scale — then draws the plots and rewrites the generated tables of
# docs/BENCHMARKS.md (between its bench-report markers).
#
#   examples/benchmarks/report.sh            (make bench-report)
#   ONLY_DOC=1 examples/benchmarks/report.sh # plots and doc from the results already there
#
# Each script stops everything it started; together they take about 10
# minutes on the 2-vCPU machine of docs/BENCHMARKS.md.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_paths
export OUT=$out
if [ -z "${ONLY_DOC:-}" ]; then
	"$here/peers.sh"
	"$here/locality.sh"
	"$here/uneven.sh"
	"$here/scale.sh"
	machine >"$out/machine.txt"
fi
cd "$root"
go run ./examples/benchmarks/report doc "$out" "$root/docs/BENCHMARKS.md" # also writes the *-all and *-summary CSVs
go build -o "$out/.plot" ./examples/benchmarks/plot
plot() { # -csv FILE ...: skipped when FILE is not there (that part was not run)
	if [ -f "$2" ]; then "$out/.plot" "$@"; else echo "report.sh: no $2; its plot is not redrawn" >&2; fi
}
plot -csv "$out/peers-all.csv" -x target -series conc -y rps -title "Echo calls per second (higher is better)" \
	-ylabel "requests/s" -out "$out/peers-rps.svg"
plot -csv "$out/peers-all.csv" -x target -series conc -y p50_us -log -title "Median latency (lower is better)" \
	-ylabel "p50, µs (log scale)" -out "$out/peers-p50.svg"
plot -csv "$out/locality-summary.csv" -x algo -series workload -y hit_rate -scale 100 -title "Cache hits (higher is better)" \
	-ylabel "hits, %" -out "$out/locality-hits.svg"
plot -csv "$out/locality-summary.csv" -x algo -series workload -y calls_per_s -title "Locality workload: calls per second" \
	-ylabel "calls/s" -out "$out/locality-rate.svg"
plot -csv "$out/uneven-summary.csv" -x mode+algo -series c -y tiny_p99_us -title "Uneven work: p99 of the tiny calls (lower is better)" \
	-ylabel "µs" -out "$out/uneven-tiny-p99.svg"
plot -csv "$out/scale.csv" -x servants -series algo -y ns_op -log -title "Dispatch cost per call (core/engine, fake links)" \
	-ylabel "ns per call (log scale)" -out "$out/scale.svg"
rm -f "$out/.plot"
go run ./examples/benchmarks/report goals "$out"
