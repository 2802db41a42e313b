#!/bin/sh
# Measures mserve against a direct call and its variants against each other,
# in one run each, so that the ratios hold on a noisy machine:
#   1. overhead: mserve (built-in match) vs a direct call, c=1 and c=64,
#      beside the cheapest extra hop there is (relay: bytes copied, nothing
#      parsed), and at c=64 once more with a servant of 64 slots
#   2. allowlist on vs off
#   3. built-in match vs the Lua lua.match
#   4. built-in least vs the compiled plugin boundedhash
# Usage: examples/benchmarks/compare.sh [BIN_DIR] [SECONDS_PER_TARGET]
set -eu
bin=${1:-bin}
secs=${2:-4}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
base=${MSERVE_BENCH_PORT:-6800}
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

servant() { # port [flags]
	port=$1; shift
	"$bin/quickstart-servant" -addr "127.0.0.1:$port" "$@" & pids="$pids $!"
}
relay() { # port upstream-port
	"$bin/relay" -listen "127.0.0.1:$1" -to "127.0.0.1:$2" & pids="$pids $!"
}
mserve() { # port extra-flags...
	port=$1; shift
	MSERVE_SERVANT_SECRET= "$bin/mserve" -listen "127.0.0.1:$port" -http "" -admin "" -log warn \
		-servants "${servants:-127.0.0.1:$((base+1)),127.0.0.1:$((base+2))}" "$@" & pids="$pids $!"
}
[ -x "$bin/relay" ] || go build -o "$bin/relay" "$root/examples/benchmarks/relay"
servant $((base+1)); servant $((base+2)); servant $((base+3)) -slots 64
relay $((base+20)) $((base+1)); relay $((base+21)) $((base+3))
servants=127.0.0.1:$((base+3)); mserve $((base+15)) -algo least; servants=
mserve $((base+10)) -algo match -route-expire 12s
mserve $((base+11)) -algo match -route-expire 12s -allow "$here/echo.allow"
mserve $((base+12)) -algo lua.match -route-expire 12s -plugins "$root/scripts/match.lua"
mserve $((base+13)) -algo least
mserve $((base+14)) -algo boundedhash -plugins "$bin/boundedhash"
"$bin/mserve" call -addr "127.0.0.1:$((base+14))" -wait 20s echo warm >/dev/null
for p in 10 11 12 13 15; do "$bin/mserve" call -addr "127.0.0.1:$((base+p))" -wait 20s echo warm >/dev/null; done

b() { "$bin/mserve" bench -q -rounds 3 -d "${secs}s" "$@"; echo; }
echo "## 1. overhead over a direct call (echo, one servant: match keeps route x on it)"
b -c 1 -addr 127.0.0.1:$((base+10)) -direct 127.0.0.1:$((base+1)) -vs relay=127.0.0.1:$((base+20)) echo x
b -c 64 -addr 127.0.0.1:$((base+10)) -direct 127.0.0.1:$((base+1)) echo x
echo "## 1b. c=64 with a servant of 64 slots (mserve least), and the relay to it"
b -c 64 -addr 127.0.0.1:$((base+15)) -direct 127.0.0.1:$((base+3)) -vs relay=127.0.0.1:$((base+21)) echo x
echo "## 2. allowlist off (mserve) vs on"
b -c 1 -addr 127.0.0.1:$((base+10)) -vs allowlist=127.0.0.1:$((base+11)) echo x
b -c 64 -addr 127.0.0.1:$((base+10)) -vs allowlist=127.0.0.1:$((base+11)) echo x
echo "## 3. built-in match (mserve) vs Lua lua.match"
b -c 1 -addr 127.0.0.1:$((base+10)) -vs lua.match=127.0.0.1:$((base+12)) echo x
b -c 64 -addr 127.0.0.1:$((base+10)) -vs lua.match=127.0.0.1:$((base+12)) echo x
echo "## 4. built-in least (mserve) vs plugin boundedhash"
b -c 1 -addr 127.0.0.1:$((base+13)) -vs boundedhash=127.0.0.1:$((base+14)) echo x
b -c 64 -addr 127.0.0.1:$((base+13)) -vs boundedhash=127.0.0.1:$((base+14)) echo x
