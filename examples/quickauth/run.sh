#!/bin/sh
# Start mserve with the quickauth allowlist and 2 quickstart servants, make
# the calls README.md shows (some pass, most are refused), stop mserve and
# print its log.
#
# Usage: examples/quickauth/run.sh [BIN_DIR]   (from the repository root,
# after make build; BIN_DIR defaults to bin)
#
# Ports: MSERVE_QUICKAUTH_HTTP (default 127.0.0.1:5100) and
# MSERVE_QUICKAUTH_LISTEN (default 127.0.0.1:5101).
set -u
bin=$(cd "${1:-bin}" && pwd) || exit 2
here=$(dirname "$0")
http=${MSERVE_QUICKAUTH_HTTP:-127.0.0.1:5100}
native=${MSERVE_QUICKAUTH_LISTEN:-127.0.0.1:5101}
log=$(mktemp)

# What README.md sets up before its calls.
PATH=$bin:$PATH
export MSERVE_CALL_ADDR="$native" # mserve call's -addr
URL=http://$http
ALICE=lcW0t_jiamai5Z2RJCh8fY3j5GBSm7ki # demo secrets: allow.txt keeps only their hashes
BOB=smL5sB-yyWnb9T5yd8aGvV_ksXunf1LA
# Open no admin listener unless one is asked for: a fixed default port would
# clash with another mserve on this host.
export MSERVE_ADMIN="${MSERVE_ADMIN-}"

# -algo least: the default algorithm (match) would keep each new routing
# string waiting up to 12 s for a servant, and these calls use many.
mserve -http "$http" -listen "$native" -algo least -allow "$here/allow.txt" \
	2 quickstart-servant 2>"$log" &
pid=$!
stop() {
	kill -TERM $pid 2>/dev/null
	wait $pid 2>/dev/null
	echo "# mserve's log:"
	cat "$log"
	rm -f "$log"
}
trap stop EXIT
trap 'exit 1' INT TERM

# Each line is one command of README.md, run as written there; lines
# starting with # are printed as they are.
while IFS= read -r line; do
	case $line in
	'#'*) echo "$line" ;;
	'') ;;
	*)
		echo "\$ $line"
		out=$(eval "$line" 2>&1)
		status=$?
		printf '%s\n(exit status %d)\n\n' "$out" $status
		;;
	esac
done <<'EOF'
# anonymous: echo is granted (the first call waits for mserve to start)
mserve call -wait 10s echo hello
# anonymous: proc1 is not granted
mserve call proc1 IBM
# alice (role trader: proc1 and is_prime)
mserve call -user alice -secret $ALICE is_prime 97
mserve call -user alice -secret $ALICE proc1 'IBM; system "rm -rf /"'
mserve call -user alice -secret $ALICE proc1 ibm
mserve call -user alice -secret $ALICE is_prime 1
mserve call -user alice -secret $ALICE is_prime 7.5
mserve call -user alice -secret $ALICE echo hello
# bob (echo and sleep)
mserve call -user bob -secret $BOB sleep 250
mserve call -user bob -secret $BOB sleep 60000
mserve call -user bob -secret $BOB proc1 IBM
# a wrong secret
mserve call -user bob -secret guess sleep 250
# what each caller may call
mserve call -user alice -secret $ALICE rpc.discover
mserve call rpc.discover
# over HTTP: Basic user:secret, or the secret alone as a Bearer token
curl -s $URL -u alice:$ALICE -d '{"jsonrpc":"2.0","id":1,"method":"proc1","params":["IBM"]}'
curl -s $URL -H "Authorization: Bearer $ALICE" -d '{"jsonrpc":"2.0","id":2,"method":"proc1","params":{"sym":"IBM; system \"rm -rf /\""}}'
curl -s $URL -d '{"jsonrpc":"2.0","id":3,"method":"proc1","params":["IBM"]}'
curl -s $URL -u bob:$BOB -d '{"jsonrpc":"2.0","id":4,"method":"sleep","params":[1.5]}'
curl -s $URL -u bob:guess -d '{"jsonrpc":"2.0","id":5,"method":"sleep","params":[250]}'
EOF
