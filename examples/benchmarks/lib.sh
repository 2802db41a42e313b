# Shared by the benchmark scripts (bash): sourced, not run.
#
#   . "$(dirname "$0")/lib.sh"
#   bench_init              # sets here, root, bin, out, tmp; cleans up on exit
#   bench_paths             # only sets here, root, bin and out (report.sh)
#   start NAME CMD ARGS...  # runs CMD in the background, logs to $tmp/NAME.log
#   wait_port 127.0.0.1:7101
#
# Every process started with start is stopped (by its id, SIGTERM, then
# SIGKILL after a grace period) when the script exits for any reason, and
# the temporary folder is removed: nothing keeps running after a script.

bench_paths() {
	here=$(cd "$(dirname "$0")" && pwd)
	root=$(cd "$here/../.." && pwd)
	bin=${BIN:-$root/bin}
	case $bin in /*) ;; *) bin=$root/$bin ;; esac
	out=${OUT:-$here/results}
	mkdir -p "$out"
}

bench_init() {
	bench_paths
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/mserve-bench.XXXXXX")
	pids=()
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	for b in mserve quickstart-servant resume boundedhash; do
		[ -x "$bin/$b" ] || die "$bin/$b is missing: run make build first"
	done
}

bench_cleanup() {
	local rc=$? p i
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for i in $(seq 50); do
		local alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
	exit $rc
}

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# start NAME CMD ARGS...: run CMD in the background, remember its pid.
start() {
	local name=$1; shift
	"$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	last_pid=$!
}

# stop PID: stop one process this script started, and wait for it.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# wait_port HOST:PORT [SECONDS]: wait until something accepts connections.
wait_port() {
	local host=${1%:*} port=${1##*:} i
	for i in $(seq $((${2:-10} * 20))); do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	die "nothing listens on $1 after ${2:-10}s (logs in $tmp)"
}

# need TOOL DEBIAN_PACKAGE: make sure TOOL is on the PATH, installing the
# package with apt-get when running as root. Services the package would start
# are kept from starting (policy-rc.d), so that nothing is left running.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	[ "$(id -u)" = 0 ] || die "$1 is missing and this is not root: install the Debian package $2"
	command -v apt-get >/dev/null 2>&1 || die "$1 is missing and there is no apt-get: install $2"
	log "installing $2 with apt-get"
	local policy=/usr/sbin/policy-rc.d made=
	if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made=1; fi
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >"$tmp/apt.log" 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$tmp/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >>"$tmp/apt.log" 2>&1 || true
	fi
	[ -n "$made" ] && rm -f $policy
	command -v "$1" >/dev/null 2>&1 || { cat "$tmp/apt.log" >&2; die "$1 is missing and apt-get could not install $2"; }
}

# build_tool NAME: build examples/benchmarks/NAME into $tmp/NAME.
build_tool() {
	(cd "$root" && go build -o "$tmp/$1" "./examples/benchmarks/$1") || die "building $1 failed"
}

# machine: the machine and the software measured, for the results.
machine() {
	echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') MHz, cache$(grep -m1 'cache size' /proc/cpuinfo | cut -d: -f2-)"
	echo "nproc:   $(nproc)"
	free -m | sed 's/^/free:    /'
	echo "kernel:  $(uname -sr)"
	echo "go:      $(go version | cut -d' ' -f3-)"
	echo "haproxy: $(haproxy -v 2>/dev/null | sed -n 1p | cut -d' ' -f3 || echo -)"
	echo "nginx:   $(nginx -v 2>&1 | cut -d/ -f2 || echo -)"
	echo "wrk:     $( { wrk -v 2>&1 || true; } | sed -n 1p | cut -d' ' -f2)"
	echo "mserve:  commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo ?), $(git -C "$root" status --porcelain 2>/dev/null | grep -vc '^?? examples/benchmarks' || true) other files changed in the work tree at the time of the run"
}
