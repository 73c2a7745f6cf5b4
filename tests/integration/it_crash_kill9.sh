#!/usr/bin/env bash
# kill -9 the daemon repeatedly while a client writes and flushes; after each
# restart every flushed write must read back (nbd_stress verify), and the data
# volume must agree with every record the journal held at the crash
# (journal_agree on a copy of the journal taken before the restart).
. "$(dirname "$0")/lib.sh"
: "${NBD_STRESS:?}" "${JOURNAL_AGREE:?}"

ROUNDS=${JRBD_CRASH_ROUNDS:-8}
[ "${JRBD_SOAK:-0}" = 1 ] && ROUNDS=60
A=$T/site-a
start_daemon "$A"
"$JRBD" group create g1 --dir "$A" --journal "$A/j.img" --journal-size 16M \
	--volume data="$A/data.img":16M >/dev/null
uri="nbd+unix:///data?socket=$A/nbd.sock"
blocks=$(((16 << 20) / 4096))

for round in $(seq 1 "$ROUNDS"); do
	"$NBD_STRESS" write "$uri" "$T/state" "$blocks" 30 "$round" >"$T/stress.out" 2>&1 &
	spid=$!
	PIDS+=("$spid")
	# Let it run a varying, short while; then crash the daemon under it.
	sleep "0.$((RANDOM % 9 + 1))"
	kill9 "$DPID"
	wait "$spid" || { cat "$T/stress.out"; fail "round $round: writer failed"; }
	cp "$A/j.img" "$T/j-at-crash.img"
	start_daemon "$A"
	"$NBD_STRESS" verify "$uri" "$T/state" || fail "round $round: flushed data lost"
	# Quiesce (clean stop) so the volume file is what the daemon wrote.
	stop_daemon "$DPID"
	"$JOURNAL_AGREE" "$T/j-at-crash.img" "$A/data.img" || fail "round $round: journal and volume disagree"
	start_daemon "$A"
	ok "round $round: $(cat "$T/stress.out")"
done
stop_daemon "$DPID"
echo "$ROUNDS passed, 0 failed"
