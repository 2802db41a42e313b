#!/usr/bin/env bash
# Uneven work, after prime_server: is_prime through 4 quickstart servants
# over a seeded mix of tiny numbers (90 %) and a prime whose trial division
# takes ~20 ms on this machine (10 %), for orig, even, least and resume with
# one slot per servant (calls wait in mserve for the next free servant),
# then even and least with mserve told each servant has 16 slots while it
# runs one call at a time (mserve pushes calls on at once and they wait
# inside the servants, as behind a plain round-robin balancer).
#
#   examples/benchmarks/uneven.sh            (make bench-uneven)
#
# Each setup runs ROUNDS times, taking turns; the report keeps the round
# with the median p99 of the tiny calls.
#
# Environment: CALLS (2000), CONCS ("4 8"), ROUNDS (3), SERVANTS (4),
# HUGE_MS (20), PORT base (7500), BIN, OUT.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init
calls=${CALLS:-2000}
ns=${SERVANTS:-4}
port=${PORT:-7500}
build_tool uneven
huge=$("$tmp/uneven" -calibrate "${HUGE_MS:-20}ms")
log "uneven: huge prime $huge (~${HUGE_MS:-20} ms of trial division here), $ns servants, $calls calls"
csv=$out/uneven.csv
rm -f "$csv"
addr=127.0.0.1:$port

run() { # C MODE NAME [VAR=VALUE...] -- MSERVE FLAGS...
	local c=$1 mode=$2 name=$3 envs=()
	shift 3
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	start "mserve-$c-$mode-$name" env "${envs[@]}" MSERVE_SERVANT_SECRET= "$bin/mserve" -listen "$addr" -http "" \
		-admin "" -log warn "$@" "$ns" "$bin/quickstart-servant"
	local pid=$last_pid
	"$bin/mserve" call -addr "$addr" -wait 30s echo warm >/dev/null || die "mserve ($name) did not come up"
	"$tmp/uneven" -addr "$addr" -huge "$huge" -n "$calls" -c "$c" -algo "$name" -mode "$mode" -csv "$csv" -round "$r"
	stop "$pid"
}

for c in ${CONCS:-4 8}; do
	for r in $(seq "${ROUNDS:-3}"); do
		for a in orig even least; do run "$c" queue "$a" -- -algo "$a" -slots 1; done
		run "$c" queue resume MSERVE_RESUME_FILE=none MSERVE_RESUME_HISTORY=100 -- -algo resume -plugins "$bin/resume" -slots 1
		for a in even least; do run "$c" push "$a" -- -algo "$a" -slots 16; done
	done
done
(cd "$root" && go run ./examples/benchmarks/report uneven "$out")
