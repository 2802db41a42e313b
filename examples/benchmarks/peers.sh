#!/usr/bin/env bash
# The peer benchmark: the same JSON-RPC echo backends straight, behind
# HAProxy, behind nginx and behind mserve's HTTP front end, driven by wrk at
# c=1 and c=64, targets interleaved round by round; then mserve's native
# front end with SDK servants (mserve bench); then profiles of mserve under
# the c=64 HTTP load.
#
#   examples/benchmarks/peers.sh          (make bench-peers)
#
# Environment: SECS per wrk run (3), ROUNDS (3), KEYS distinct first
# arguments (64), BACKENDS (4), PORT base (7100), BIN (bin), OUT (results
# folder), PROFILE=0 to skip profiling.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init
secs=${SECS:-3}
rounds=${ROUNDS:-3}
keys=${KEYS:-64}
nb=${BACKENDS:-4}
base=${PORT:-7100}
slots=$((64 / nb)) # mserve's slots per HTTP backend: 64 in all, as many as wrk's connections

need haproxy haproxy
need nginx nginx
need wrk wrk
need curl curl
build_tool httpecho
lua=$here/wrk/post.lua

# --- backends ---------------------------------------------------------------
# http_batched: the same servants with conns=2, so that calls sent while a
# servant has two requests in flight go together as JSON-RPC batches.
backends=() backend_pids=() http_servants="" http_batched=""
declare -A balancer_pid # target name → the balancer's process, for its CPU time
for i in $(seq "$nb"); do
	port=$((base + i))
	start "echo$i" "$tmp/httpecho" -addr "127.0.0.1:$port"
	backend_pids+=("$last_pid")
	backends+=("127.0.0.1:$port")
	http_servants="$http_servants${http_servants:+,}b$i@http://127.0.0.1:$port/?slots=$slots"
	http_batched="$http_batched${http_batched:+,}b$i@http://127.0.0.1:$port/?slots=$slots&conns=2"
done
for b in "${backends[@]}"; do wait_port "$b"; done

# --- HAProxy ------------------------------------------------------------------
hap=127.0.0.1:$((base + 20))
{
	cat <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind $hap
    default_backend be
backend be
    balance leastconn
EOF
	for i in $(seq "$nb"); do echo "    server b$i ${backends[$((i - 1))]}"; done
} >"$tmp/haproxy.cfg"
haproxy -c -q -f "$tmp/haproxy.cfg" || die "bad HAProxy configuration"
start haproxy haproxy -db -f "$tmp/haproxy.cfg"
balancer_pid[haproxy]=$last_pid

# --- nginx --------------------------------------------------------------------
ngx=127.0.0.1:$((base + 21))
mkdir -p "$tmp/nginx/logs"
{
	cat <<EOF
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    upstream be {
        least_conn;
EOF
	for b in "${backends[@]}"; do echo "        server $b;"; done
	cat <<EOF
        keepalive 64;
    }
    server {
        listen $ngx;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$tmp/nginx.conf"
nginx -t -q -p "$tmp/nginx" -c "$tmp/nginx.conf" -e "$tmp/nginx/logs/error.log" || die "bad nginx configuration"
start nginx nginx -p "$tmp/nginx" -c "$tmp/nginx.conf" -e "$tmp/nginx/logs/error.log"
balancer_pid[nginx]=$last_pid # the master; its workers are counted as its children

# --- mserve, HTTP front end ---------------------------------------------------
# match (the default) with a 1ms route expiry: with the default 12s, a call
# whose routing string no servant holds waits until some servant has been
# idle for 12s, and with 64 routing strings in play that is nearly every call.
# least is measured too, to separate the front end's cost from match's.
msm=127.0.0.1:$((base + 30))
msl=127.0.0.1:$((base + 31))
msb=127.0.0.1:$((base + 32))
msw=127.0.0.1:$((base + 33))
mserve_http() { # NAME ADDR SERVANTS FLAGS...
	local name=$1 addr=$2 servants=$3; shift 3
	start "$name" env MSERVE_SERVANT_SECRET= "$bin/mserve" -http "$addr" -listen "" -admin "" -log warn \
		-allow "$here/echo.allow" -servants "$servants" "$@"
	balancer_pid[$name]=$last_pid
}
# cpu_ticks PID...: CPU time (user + system, in clock ticks) the processes
# and their children have used so far; 0 for none.
cpu_ticks() {
	local all=() p
	for p in "$@"; do all+=("$p") && all+=($(pgrep -P "$p" || true)); done
	[ ${#all[@]} -gt 0 ] || { echo 0; return; }
	(cd /proc && cat $(printf '%s/stat ' "${all[@]}") 2>/dev/null) | awk '{ s += $14 + $15 } END { print s + 0 }'
}
hz=$(getconf CLK_TCK)

mserve_http mserve-http "$msm" "$http_servants" -algo match -route-expire 1ms
# (No -pprof on the measured instances: it turns on mutex and block
# profiling, which costs CPU; the profiles below come from instances of
# their own.)
mserve_http mserve-http-least "$msl" "$http_servants" -algo least
mserve_http mserve-http-batch "$msb" "$http_batched" -algo least
# warm: the locality algorithm that uses slots (match's rule is the kdb+
# one-slot one), with batches too.
mserve_http mserve-http-warm "$msw" "$http_batched" -algo warm

for t in "$hap" "$ngx" "$msm" "$msl" "$msb" "$msw" "${backends[0]}"; do
	wait_port "$t"
	for i in $(seq 100); do
		r=$(curl -s "http://$t/" -H 'Content-Type: application/json' \
			-d '{"jsonrpc":"2.0","id":1,"method":"echo","params":["k1"]}' || true)
		case $r in *'"result":"k1"'*) break ;; esac
		sleep 0.1
	done
	case $r in *'"result":"k1"'*) ;; *) die "$t does not answer the echo call: $r" ;; esac
done

# --- wrk, interleaved ---------------------------------------------------------
targets=("direct=${backends[0]}" "haproxy=$hap" "nginx=$ngx" "mserve-http=$msm" "mserve-http-least=$msl" "mserve-http-batch=$msb" "mserve-http-warm=$msw")
raw=$out/peers-raw.csv
echo "round,conc,target,requests,duration_us,errors,p50_us,p90_us,p99_us,max_us,balancer_cpu_us,backends_cpu_us" >"$raw"
log "peers: ${#targets[@]} targets x c=1,64 x $rounds rounds x ${secs}s (keys=$keys, backends=$nb)"
for r in $(seq "$rounds"); do
	for c in 1 64; do
		th=1
		[ "$c" -gt 1 ] && th=2
		for t in "${targets[@]}"; do
			name=${t%%=*} addr=${t#*=}
			bal=${balancer_pid[$name]:-}
			b0=$(cpu_ticks $bal) e0=$(cpu_ticks "${backend_pids[@]}")
			line=$(wrk -t"$th" -c"$c" -d"${secs}s" -s "$lua" "http://$addr/" -- "$keys" | grep '^WRKRESULT') ||
				die "wrk against $name failed"
			b1=$(cpu_ticks $bal) e1=$(cpu_ticks "${backend_pids[@]}")
			eval "$(echo "${line#WRKRESULT }" | tr ' ' '\n' | sed 's/^/w_/')"
			echo "$r,$c,$name,$w_requests,$w_duration_us,$w_errors,$w_p50_us,$w_p90_us,$w_p99_us,$w_max_us,$(((b1 - b0) * 1000000 / hz)),$(((e1 - e0) * 1000000 / hz))" >>"$raw"
			log "  round $r c=$c $name: $((w_requests * 1000000 / w_duration_us)) req/s p50 ${w_p50_us}us p99 ${w_p99_us}us errors $w_errors"
		done
	done
done

# --- the native front end: SDK servants, mserve bench -------------------------
native=()
list=""
for i in $(seq "$nb"); do
	port=$((base + 40 + i))
	start "qs$i" "$bin/quickstart-servant" -addr "127.0.0.1:$port" -slots 4
	native+=("127.0.0.1:$port")
	list="$list${list:+,}s$i@127.0.0.1:$port"
done
nm=127.0.0.1:$((base + 50))
nl=127.0.0.1:$((base + 51))
for s in "${native[@]}"; do wait_port "$s"; done
start mserve-native-match env MSERVE_SERVANT_SECRET= "$bin/mserve" -listen "$nm" -http "" -admin "" -log warn \
	-allow "$here/echo.allow" -servants "$list" -algo match -route-expire 1ms
start mserve-native-least env MSERVE_SERVANT_SECRET= "$bin/mserve" -listen "$nl" -http "" -admin "" -log warn \
	-allow "$here/echo.allow" -servants "$list" -algo least
for a in "$nm" "$nl"; do "$bin/mserve" call -addr "$a" -wait 20s echo warm >/dev/null; done
ncsv=$out/native.csv
echo "conc,target,rps,p50_us,p99_us" >"$ncsv"
for spec in "1 1" "64 4"; do
	set -- $spec
	log "native: mserve bench -c $1 -conns $2, $rounds rounds"
	"$bin/mserve" bench -q -rounds "$rounds" -d "$((secs * rounds))s" -c "$1" -conns "$2" \
		-direct "${native[0]}" -addr "$nm" -vs "least=$nl" echo x | tee "$tmp/native-$1.txt" >&2
	awk -v c="$1" 'NF == 8 && $2 ~ /^[0-9]+$/ && ($1=="direct"||$1=="mserve"||$1=="least") {
		n = ($1=="direct") ? "native-direct" : ($1=="mserve") ? "mserve-native" : "mserve-native-least"
		gsub("µs", "", $4); gsub("µs", "", $6); printf "%s,%s,%s,%s,%s\n", c, n, $3, $4, $6 }' \
		"$tmp/native-$1.txt" >>"$ncsv"
done

# --- profiles of mserve (HTTP) under the c=64 load -----------------------------
# Each from a new mserve with -pprof (which turns on mutex and block
# profiling too), on ports of its own, one at a time.
profile() { # NAME SERVANTS FLAGS...
	local name=$1 servants=$2 p addr=127.0.0.1:$((base + 35)) pp=127.0.0.1:$((base + 38))
	shift 2
	mserve_http "profiled-$name" "$addr" "$servants" -pprof "$pp" "$@"
	local mpid=$last_pid
	wait_port "$addr"
	log "profiling mserve ($name) under wrk -c64"
	start "wrk-load-$name" wrk -t2 -c64 -d40s -s "$lua" "http://$addr/" -- "$keys"
	local wpid=$last_pid
	sleep 2
	for p in profile allocs mutex block; do
		curl -s -o "$tmp/$name-$p.pb.gz" "http://$pp/debug/pprof/$p?seconds=5"
	done
	curl -s -o "$tmp/$name-goroutines.txt" "http://$pp/debug/pprof/goroutine?debug=1"
	head -1 "$tmp/$name-goroutines.txt" >"$out/profiles/$name-goroutines.txt"
	kill -INT "$wpid" 2>/dev/null || true # wrk prints its results when interrupted
	wait "$wpid" 2>/dev/null || true
	grep '^WRKRESULT' "$tmp/wrk-load-$name.log" >"$out/profiles/$name-load.txt" || true
	top() { # PROFILE OUT [pprof flags]
		local f=$1 o=$2
		shift 2
		(cd "$root" && go tool pprof -top -nodecount=30 "$@" "$bin/mserve" "$f") >"$o" 2>&1 || true
	}
	top "$tmp/$name-profile.pb.gz" "$out/profiles/$name-cpu.txt"
	top "$tmp/$name-profile.pb.gz" "$out/profiles/$name-cpu-cum.txt" -cum
	top "$tmp/$name-allocs.pb.gz" "$out/profiles/$name-allocs.txt" -sample_index=alloc_space
	top "$tmp/$name-allocs.pb.gz" "$out/profiles/$name-allocs-count.txt" -sample_index=alloc_objects
	top "$tmp/$name-mutex.pb.gz" "$out/profiles/$name-mutex.txt"
	top "$tmp/$name-block.pb.gz" "$out/profiles/$name-block.txt"
	stop "$mpid"
}
if [ "${PROFILE:-1}" != 0 ]; then
	rm -rf "$out/profiles"/http-*
	mkdir -p "$out/profiles"
	profile http-least "$http_servants" -algo least
	profile http-batch "$http_batched" -algo least
fi

machine >"$out/machine.txt"
(cd "$root" && go run ./examples/benchmarks/report peers "$out")
