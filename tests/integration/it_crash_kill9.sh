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

# start_writer SEED: nbd_stress write in the background, connected (a crash
# before it is in would only test "connection refused").
start_writer() {
	rm -f "$T/state.connected"
	"$NBD_STRESS" write "$uri" "$T/state" "$blocks" 30 "$1" >"$T/stress.out" 2>&1 &
	spid=$!
	PIDS+=("$spid")
	for _ in $(seq 1 200); do
		[ -e "$T/state.connected" ] && return 0
		kill -0 "$spid" 2>/dev/null || { cat "$T/stress.out"; fail "writer $1 exited before connecting"; }
		sleep 0.05
	done
	fail "writer $1 not connected after 10 s"
}

for round in $(seq 1 "$ROUNDS"); do
	start_writer "$round"
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
# A journal left with unapplied records after a crash must not be reformatted
# by a new 'group create' of the same name (say the config was lost).
start_writer 99
sleep 0.5
kill9 "$DPID"
wait "$spid" || true
mv "$A/groups/g1.json" "$T/g1.json"
start_daemon "$A"
expect_fail 1 "$JRBD" group create g1 --dir "$A" --journal "$A/j.img" --volume data="$A/data.img"
grep -q "records of group 'g1' that may not be in its volumes" "$T/err" || fail "reformat guard: $(cat "$T/err")"
stop_daemon "$DPID"
mv "$T/g1.json" "$A/groups/g1.json"
start_daemon "$A"
"$NBD_STRESS" verify "$uri" "$T/state" || fail "flushed data lost after the refused create"
ok "group create refuses a journal holding unapplied records"
stop_daemon "$DPID"

# journal dump on the journal a crash left: clean, then with one payload byte
# flipped it must exit 1 and name the record (seq and position) precisely.
"$JRBD" journal dump --json "$T/j-at-crash.img" >"$T/dump.json" || fail "dump of a crashed journal not clean"
read -r seq lpos off < <(python3 - "$T/dump.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
sb, recs = d["superblock"], [r for r in d["records"] if r["kind"] == "write"]
assert recs, "no write records retained at the crash"
r = recs[len(recs) // 2]
print(r["seq"], r["lpos"], sb["area_start"] + r["lpos"] % sb["area_size"] + 64 + 100)
PY
)
printf '\xff' | dd of="$T/j-at-crash.img" bs=1 seek="$off" conv=notrunc status=none
rc=0
"$JRBD" journal dump "$T/j-at-crash.img" >"$T/dump.txt" 2>&1 || rc=$?
[ $rc -eq 1 ] || { tail -3 "$T/dump.txt"; fail "dump of a corrupt journal exited $rc, expected 1"; }
tail -1 "$T/dump.txt" | grep -q "payload checksum mismatch.*lpos $lpos.*seq $seq" ||
	{ tail -2 "$T/dump.txt"; fail "dump does not name the corrupt record (seq $seq, lpos $lpos)"; }
ok "journal dump pinpoints a corrupt record: $(tail -1 "$T/dump.txt")"
echo "$((ROUNDS + 2)) passed, 0 failed"
