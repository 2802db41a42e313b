#!/usr/bin/env bash
# Scale: (1) dispatch cost with 8, 64 and 512 servants (core/engine with
# fake transports, match and least; examples/benchmarks/scale); (2) mserve's
# memory with 10 000 idle client connections on the native front end: RSS
# from /proc/PID/status before and after, with -max-conns raised.
#
#   examples/benchmarks/scale.sh             (make bench-scale)
#
# Environment: CONNS (10000), PORT base (7600), BIN, OUT.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init
conns=${CONNS:-10000}
port=${PORT:-7600}
need curl curl

log "scale: dispatch cost (go run ./examples/benchmarks/scale)"
rm -f "$out/scale.csv"
(cd "$root" && go run ./examples/benchmarks/scale -csv "$out/scale.csv")

# Each side of a connection is a file descriptor in its process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((conns + 200)) ] ||
	die "ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn)); $conns connections need more: raise the hard limit"
build_tool conns
addr=127.0.0.1:$port
admin=127.0.0.1:$((port + 2))
pprof=127.0.0.1:$((port + 9))
start mserve env MSERVE_SERVANT_SECRET= "$bin/mserve" -listen "$addr" -http "" -admin "$admin" -log warn \
	-max-conns $((conns + 100)) -pprof "$pprof" 2 "$bin/quickstart-servant"
mpid=$last_pid
"$bin/mserve" call -addr "$addr" -wait 30s echo warm >/dev/null || die "mserve did not come up"
sleep 1
rss() { awk -v k="$1:" '$1==k {print $2}' "/proc/$mpid/status"; }
goroutines() { curl -s "http://$admin/metrics" | awk '/^go_goroutines / {print $2}'; }
before=$(rss VmRSS) gbefore=$(goroutines)
log "memory: mserve RSS ${before} kB; opening $conns idle connections"
start conns "$tmp/conns" -addr "$addr" -n "$conns"
cpid=$last_pid
for i in $(seq 600); do
	grep -q '^ready' "$tmp/conns.log" && break
	kill -0 "$cpid" 2>/dev/null || { cat "$tmp/conns.log" >&2; die "the connection helper failed"; }
	sleep 0.1
done
grep -q '^ready' "$tmp/conns.log" || die "the connection helper did not finish opening $conns connections"
sleep 2
after=$(rss VmRSS) hwm=$(rss VmHWM) gafter=$(goroutines)
log "memory: mserve RSS ${after} kB with $conns connections (peak ${hwm} kB), goroutines $gbefore -> $gafter"
mkdir -p "$out/profiles"
curl -s -o "$tmp/heap.pb.gz" "http://$pprof/debug/pprof/heap"
(cd "$root" && go tool pprof -top -nodecount=15 -sample_index=inuse_space "$bin/mserve" "$tmp/heap.pb.gz") \
	>"$out/profiles/heap-10k-conns.txt" 2>&1 || true
stop "$cpid"
echo "conns,rss_before_kb,rss_after_kb,hwm_kb,goroutines_before,goroutines_after" >"$out/memory.csv"
echo "$conns,$before,$after,$hwm,$gbefore,$gafter" >>"$out/memory.csv"
(cd "$root" && go run ./examples/benchmarks/report scale "$out" && go run ./examples/benchmarks/report memory "$out")
