#!/bin/sh
# Start mserve with 3 quickstart servants, make real calls over both front
# ends, print results and info records, stop mserve. Usage: demo.sh [BIN_DIR]
set -eu
bin=${1:-bin}
http=${MSERVE_DEMO_HTTP:-127.0.0.1:5000}
native=${MSERVE_DEMO_LISTEN:-127.0.0.1:5001}

"$bin/mserve" -http "$http" -listen "$native" -log warn 3 "$bin/quickstart-servant" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT INT TERM

run() {
	echo "\$ mserve call $*"
	"$bin/mserve" call "$@"
	echo
}
run -addr "$native" -wait 10s proc1 IBM
run -addr "$native" proc1 MSFT
echo "# match sends IBM back to the servant that ran IBM last:"
run -addr "$native" proc1 IBM
echo "# the same call as JSON-RPC over HTTP:"
run -url "http://$http" -json proc1 IBM
