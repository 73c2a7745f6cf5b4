# Helpers for two-site tests (sourced after lib.sh): sites A (primary) and B
# (secondary), $T/secret, PY.

# pj DIR GROUP EXPR: evaluates EXPR on that group's `pair display --json`
# (g: the group, p: its "pair" object or {}).
pj() {
	"$JRBD" pair display "$2" --dir "$1" --json | "$PY" -c '
import json, sys
g = json.load(sys.stdin)["groups"][0]
p = g.get("pair", {})
print(eval(sys.argv[1]))' "$3"
}

# forget PID: a process that is gone leaves PIDS, so the cleanup never
# signals a recycled PID.
forget() {
	local q keep=()
	for q in "${PIDS[@]}"; do
		[ "$q" = "$1" ] || keep+=("$q")
	done
	PIDS=("${keep[@]}")
}
crash() { kill9 "$1"; forget "$1"; }  # kill -9 and reap
stop() { stop_daemon "$1"; forget "$1"; } # SIGTERM, bounded wait

show() { "$JRBD" pair display "$2" --dir "$1" >&2 || true; }

A_ARGS=()
GROUP_ARGS=()
B_ARGS=()
start_a() {
	start_daemon "$A" --secret-file "$T/secret" --site a ${A_ARGS[@]+"${A_ARGS[@]}"}
	APID=$DPID
}
# The secondary comes back on the port the primary has on record.
start_b() {
	start_daemon "$B" --listen "${B_ADDR:-127.0.0.1:0}" --secret-file "$T/secret" --site b \
		${B_ARGS[@]+"${B_ARGS[@]}"}
	BPID=$DPID
	B_ADDR=$(cat "$B/repl.addr")
}

create_group() { # DIR GROUP VOLSPEC... (NAME:SIZE)
	local dir=$1 g=$2 v args=()
	shift 2
	for v in "$@"; do
		args+=(--volume "${v%%:*}=$dir/$g-${v%%:*}.img:${v##*:}")
	done
	"$JRBD" group create "$g" --dir "$dir" --journal "$dir/$g-j.img" \
		--journal-size "${JOURNAL_SIZE:-128M}" "${args[@]}" ${GROUP_ARGS[@]+"${GROUP_ARGS[@]}"} \
		>/dev/null
}

# wait_drain GROUP SECS: until the primary is PAIR and the secondary has
# restored every record written so far (call it once writes stopped).
wait_drain() {
	local g=$1 secs=$2 w i
	w=$(pj "$A" "$g" 'p["seq"]["written"]')
	for i in $(seq 1 $((secs * 5))); do
		if [ "$(pj "$A" "$g" 'p["state"] == "PAIR" and p["connected"] and p["seq"]["restored"] >= '"$w")" = True ]; then
			return 0
		fi
		sleep 0.2
	done
	show "$A" "$g"
	show "$B" "$g"
	fail "group $g not drained after $secs s (written $w)"
}

# cmp_vols GROUP VOL...: S-VOL files equal P-VOL files.
cmp_vols() {
	local g=$1 v
	shift
	for v in "$@"; do
		cmp "$A/$g-$v.img" "$B/$g-$v.img" || fail "S-VOL $g/$v differs from its P-VOL"
	done
}

uri() { echo "nbd+unix:///$2?socket=$1/nbd.sock"; } # DIR EXPORT

# fio_bg NAME ARGS...: fio in the background (FIO_PID), bounded by timeout.
fio_bg() {
	local name=$1
	shift
	timeout -k 5 90 fio --name="$name" --ioengine=nbd --output-format=json \
		--output="$T/fio-$name.json" "$@" >"$T/fio-$name.err" 2>&1 &
	FIO_PID=$!
	PIDS+=("$FIO_PID")
}
# fio_ok NAME: the fio run exited 0 without I/O errors; FIO_N: writes done.
fio_ok() {
	local rc=0
	wait "$FIO_PID" || rc=$?
	forget "$FIO_PID"
	[ $rc -eq 0 ] || { cat "$T/fio-$1.err" "$T/fio-$1.json" >&2; fail "fio $1 exited $rc"; }
	FIO_N=$("$PY" -c '
import json, sys
t = open(sys.argv[1]).read()
d = json.loads(t[t.index("{"):])
j = d["jobs"][0]
assert j["error"] == 0, j["error"]
print(j["write"]["total_ios"])' "$T/fio-$1.json") || { cat "$T/fio-$1.err" >&2; fail "fio $1 errors"; }
}

# Random 4k writes over the whole data volume, zipf so they overlap.
LOAD=(--rw=randwrite --bs=4k --iodepth=16 --random_distribution=zipf:1.2 --norandommap
	--randrepeat=0 --time_based)
