# Shared helpers for integration tests (sourced). Every test gets its own temp
# dir under /var/tmp (O_DIRECT-capable), starts its own daemons, stops only
# the PIDs it started, and bounds every wait.
set -euo pipefail

: "${JRBD:?JRBD must point at the jrbd binary}"
ENGINE=${JRBD_TEST_IO_ENGINE:-auto}
T=$(mktemp -d /var/tmp/jrbd-it-XXXXXX)
PIDS=()

cleanup() { # [RC]: the exit status to keep (default: the last command's)
	local rc=${1:-$?}
	for p in "${PIDS[@]}"; do
		kill -9 "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ $rc -ne 0 ]; then
		echo "--- test failed (rc=$rc); daemon logs:" >&2
		for f in "$T"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -50 "$f" >&2; }; done
	fi
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

# skip_unless_cmd CMD...: exit 77 (meson SKIP) when a tool is missing.
skip_unless_cmd() {
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || { echo "SKIP: $c not installed"; exit 77; }
	done
}

# start_daemon DIR [extra args]: starts a daemon with NBD on a unix socket and
# on 127.0.0.1 port 0; sets DPID and NBD_TCP (host:port) and NBD_SOCK.
start_daemon() {
	local dir=$1; shift
	mkdir -p "$dir"
	rm -f "$dir/nbd.addr"
	"$JRBD" daemon --dir "$dir" --io-engine "$ENGINE" --nbd "unix:$dir/nbd.sock" \
		--nbd 127.0.0.1:0 "$@" >>"$dir.log" 2>&1 &
	DPID=$!
	PIDS+=("$DPID")
	wait_ready "$dir" "$DPID"
	NBD_SOCK="$dir/nbd.sock"
	NBD_TCP=$(grep -v '^unix:' "$dir/nbd.addr" | head -1)
}

# wait_ready DIR PID: until the control socket answers (at most ~20 s).
wait_ready() {
	local dir=$1 pid=$2
	for _ in $(seq 1 200); do
		if "$JRBD" status --dir "$dir" >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || fail "daemon for $dir exited during start-up"
		sleep 0.1
	done
	fail "daemon for $dir not ready after 20 s"
}

# stop_daemon PID: SIGTERM and wait (bounded), then make sure it's gone.
stop_daemon() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid"
		fail "daemon $pid did not stop within 30 s of SIGTERM"
	fi
	local rc=0
	wait "$pid" || rc=$?
	return $rc
}

# kill9 PID: crash the daemon and reap it.
kill9() {
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# expect_fail CODE CMD...: runs CMD, which must exit with CODE and print to stderr.
expect_fail() {
	local want=$1; shift
	local rc=0
	"$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" -eq "$want" ] || { cat "$T/err" >&2; fail "'$*' exited $rc, expected $want"; }
	[ -s "$T/err" ] || fail "'$*' failed without a message"
}
