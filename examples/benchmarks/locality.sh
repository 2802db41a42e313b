#!/usr/bin/env bash
# The locality benchmark, after zc.resumelb's log playback: 4 LRU servants
# (examples/benchmarks/lruservant, 100 keys each, a hit ~0.1 ms of CPU, a
# miss 2 ms of waiting) and one Zipf sequence of get(key) calls over 1000
# keys (fixed seed), replayed at a fixed concurrency through mserve once per
# algorithm; then the same with one hot key taking 30 % of the calls.
#
#   examples/benchmarks/locality.sh          (make bench-locality)
#
# Each algorithm runs ROUNDS times, the algorithms taking turns, so that
# machine noise falls on all of them; the report keeps the round with the
# median calls/s. bench.hash (hash.lua, written for this benchmark) shows
# the same idea as boundedhash decided inside mserve, without a plugin's
# round trip.
#
# Environment: CALLS measured (10000), WARMUP calls (4000), CONC (8),
# ROUNDS (3), SERVANTS (4), CACHE keys per servant (100), KEYS (1000),
# HISTORY for resume (100), PORT base (7400), BIN, OUT, ALGOS (the
# algorithms to run, space-separated; all when empty).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init
calls=${CALLS:-10000}
warm=${WARMUP:-4000}
rounds=${ROUNDS:-3}
conc=${CONC:-8}
ns=${SERVANTS:-4}
cache=${CACHE:-100}
keys=${KEYS:-1000}
history=${HISTORY:-100}
port=${PORT:-7400}
need curl curl
build_tool lruservant
build_tool locality
csv=$out/locality.csv
pcsv=$out/locality-plugin.csv
rm -f "$csv"
echo "workload,algo,decisions,calls" >"$pcsv"

addr=127.0.0.1:$port
admin=127.0.0.1:$((port + 2))
common=(-keys "$keys" -n "$calls" -warmup "$warm" -c "$conc" -servants "$ns" -cache "$cache")

# run WORKLOAD NAME MAX [VAR=VALUE...] -- MSERVE FLAGS...: one replay through
# a fresh mserve (fresh servants, cold caches) with one algorithm.
run() {
	local workload=$1 name=$2 max=$3 envs=() # and $r, the round
	if [ -n "${ALGOS:-}" ] && [[ " $ALGOS " != *" $name "* ]]; then return; fi
	shift 3
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	start "mserve-$workload-$name" env "${envs[@]}" MSERVE_SERVANT_SECRET= "$bin/mserve" -listen "$addr" -http "" \
		-admin "$admin" -log warn "$@" "$ns" "$tmp/lruservant" -cache "$cache"
	local pid=$last_pid
	"$bin/mserve" call -addr "$addr" -wait 30s get warm-up-check >/dev/null || die "mserve ($name) did not come up; see $tmp"
	"$tmp/locality" -addr "$addr" -algo "$name" -workload "$workload" -max "$max" -csv "$csv" -round "$r" "${common[@]}"
	curl -s "http://$admin/metrics" | awk -v w="$workload" -v n="$name" '
		/^mserve_plugin_decisions_total/ { d += $NF } /^mserve_plugin_calls_total/ { c += $NF }
		END { if (d > 0) printf "%s,%s,%d,%d\n", w, n, d, c }' >>"$pcsv"
	stop "$pid"
}

for w in zipf hot; do
	log "locality: workload $w, $calls calls (+$warm warm-up) at c=$conc, $ns servants x $cache keys, $keys keys, $rounds rounds"
	"$tmp/locality" -sim -workload "$w" -csv "$csv" "${common[@]}"
	for r in $(seq "$rounds"); do
		run "$w" even 120s -- -algo even
		run "$w" least 120s -- -algo least
		run "$w" match 120s -- -algo match -route-expire 1ms
		if [ "$w" = zipf ] && [ "$r" = 1 ]; then run "$w" match-12s 15s -- -algo match -route-expire 12s; fi
		run "$w" lua.match 120s -- -algo lua.match -route-expire 1ms -plugins "$root/scripts/match.lua"
		run "$w" resume 120s MSERVE_RESUME_FILE=none MSERVE_RESUME_HISTORY="$history" -- -algo resume -plugins "$bin/resume"
		run "$w" boundedhash 120s -- -algo boundedhash -plugins "$bin/boundedhash"
		run "$w" warm 120s -- -algo warm -warm-keys "$cache"
		run "$w" bench.hash 120s -- -algo bench.hash -route-expire 5ms -plugins "$here/hash.lua"
	done
done

(cd "$root" && go run ./examples/benchmarks/report locality "$out")
