#!/usr/bin/env bash
# With io_uring refused (seccomp, as in containers), '--io-engine auto' must
# pick libaio by itself and serve verified I/O; '--io-engine uring' must fail
# with a clear error instead.
. "$(dirname "$0")/lib.sh"
: "${NO_URING:?}"
skip_unless_cmd fio

"$NO_URING" true || { rc=$?; [ $rc -eq 77 ] && { echo "SKIP: no seccomp"; exit 77; }; fail "no_uring: $rc"; }

A=$T/site-a
mkdir -p "$A"
rc=0
"$NO_URING" "$JRBD" daemon --dir "$A" --io-engine uring >"$T/uring.log" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "daemon started on io_uring although it is refused"
grep -q "io engine 'uring'" "$T/uring.log" || { cat "$T/uring.log"; fail "unclear error"; }
ok "--io-engine uring with io_uring refused: clear error"

"$NO_URING" "$JRBD" daemon --dir "$A" --io-engine auto --nbd "unix:$A/nbd.sock" >>"$A.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
wait_ready "$A" "$DPID"
engine=$("$JRBD" status --dir "$A" | python3 -c 'import json,sys; print(json.load(sys.stdin)["io_engine"])')
[ "$engine" = aio ] || fail "auto picked '$engine' with io_uring refused"
"$JRBD" group create g1 --dir "$A" --journal "$A/j.img" --journal-size 32M \
	--volume data="$A/data.img":32M >/dev/null
fio --name=fallback --ioengine=nbd --uri="nbd+unix:///data?socket=$A/nbd.sock" \
	--rw=randwrite --bs=4k --iodepth=16 --size=16M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --output="$T/fio.txt" || { cat "$T/fio.txt"; fail "fio on aio"; }
ok "--io-engine auto falls back to libaio and serves verified I/O"
stop_daemon "$DPID"
echo "2 passed, 0 failed"
