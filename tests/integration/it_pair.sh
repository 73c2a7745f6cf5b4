#!/usr/bin/env bash
# Pair lifecycle between two real daemons on 127.0.0.1: suspend (immediate
# and --drain) with writes tracked in the difference bitmaps, resync copying
# only changed regions, a daemon restart keeping the state, link loss ->
# PSUE -> automatic resync, journal full -> PFUS, takeover without the
# primary (SSWS), the split-brain guard, resync --swap back, a second swap
# with no copy, the event hook, `pair check` exit codes, and delete. Every
# phase ends with the S-VOL files equal to the P-VOL files (cmp).
. "$(dirname "$0")/lib.sh"
skip_unless_cmd fio
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "SKIP: python3 nbd module missing"; exit 77; }
PY=/usr/bin/python3

A=$T/a
B=$T/b
head -c 48 /dev/urandom | base64 >"$T/secret"
chmod 600 "$T/secret"
. "$(dirname "$0")/repl_lib.sh"

# The hooks record every state change: site group old new reason.
for site in a b; do
	cat >"$T/hook-$site" <<HOOK
#!/bin/sh
echo $site "\$@" >>"$T/events"
HOOK
	chmod 755 "$T/hook-$site"
done
: >"$T/events"

A_ADDR=127.0.0.1:0
start_a_l() { # the primary listens too: after a swap it is dialed
	A_ARGS=(--listen "$A_ADDR" --on-event "$T/hook-a")
	start_a
	A_ADDR=$(cat "$A/repl.addr")
}
B_ARGS=(--on-event "$T/hook-b")
start_b
start_a_l
GROUP_ARGS=(--link-timeout 2)
create_group "$A" g1 data:64M log:16M
create_group "$B" g1 data:64M log:16M

# check DIR GROUP CODE: `pair check` exits CODE.
check() {
	local rc=0
	"$JRBD" pair check "$2" --dir "$1" >/dev/null || rc=$?
	[ $rc -eq "$3" ] || { show "$1" "$2"; fail "pair check $2 at $1 exited $rc, expected $3"; }
}
# wait_state DIR GROUP STATE SECS
wait_state() {
	local i
	for i in $(seq 1 $(($4 * 10))); do
		[ "$(pj "$1" "$2" 'p.get("state", g["state"])')" = "$3" ] && return 0
		sleep 0.1
	done
	show "$1" "$2"
	fail "group $2 at $1 not $3 after $4 s"
}
# wait_connected DIR GROUP: until that site's pair shows its link up (~10 s;
# what follows fails on its own if it never comes).
wait_connected() {
	for _ in $(seq 1 100); do
		[ "$(pj "$1" "$2" 'p["connected"]')" = True ] && return 0
		sleep 0.1
	done
}
# wait_swapped GROUP: after a swap, until b is the primary and a the
# secondary, both PAIR (60 s at most).
wait_swapped() {
	for _ in $(seq 1 600); do
		[ "$(pj "$B" "$1" 'p["role"] + p["state"]')" = primaryPAIR ] &&
			[ "$(pj "$A" "$1" 'p["role"] + p["state"]')" = secondaryPAIR ] && return 0
		sleep 0.1
	done
	show "$B" "$1"
	show "$A" "$1"
	fail "group $1: the swap did not reach PAIR with b primary"
}
# wait_b_drained GROUP: until a restored every record b (the primary after a
# swap) has written so far (30 s at most).
wait_b_drained() {
	local w
	w=$(pj "$B" "$1" 'p["seq"]["written"]')
	for _ in $(seq 1 300); do
		[ "$(pj "$B" "$1" 'p["seq"]["restored"] >= '"$w")" = True ] && return 0
		sleep 0.1
	done
	fail "group $1: a did not restore b's records"
}
# write_at DIR EXPORT OFFSET LEN BYTE: one NBD write of LEN bytes of BYTE.
write_at() {
	"$PY" - "$1/nbd.sock" "$2" "$3" "$4" "$5" <<'PY'
import nbd, sys
h = nbd.NBD()
h.set_export_name(sys.argv[2])
h.connect_unix(sys.argv[1])
h.pwrite(bytes([int(sys.argv[5])]) * int(sys.argv[4]), int(sys.argv[3]))
h.flush()
h.shutdown()
PY
}
# write_refused DIR EXPORT: a write is refused (read-only export or EPERM).
write_refused() {
	"$PY" - "$1/nbd.sock" "$2" <<'PY' || fail "a write to $2 at $1 was accepted"
import nbd, sys
h = nbd.NBD()
h.set_export_name(sys.argv[2])
h.connect_unix(sys.argv[1])
try:
    h.pwrite(b"x" * 4096, 0)
    h.flush()
except nbd.Error:
    sys.exit(0)
sys.exit(1)
PY
}

# --- 1. paired ----------------------------------------------------------
"$JRBD" pair states >"$T/states"
"$PY" - "$T/states" "$(dirname "$0")/../../README.md" <<'PY' || fail "README's state table differs from 'jrbd pair states'"
import sys
table = open(sys.argv[1]).read()
assert table.count("\n") >= 15, table
sys.exit(0 if table in open(sys.argv[2]).read() else 1)
PY
check "$A" g1 10
expect_fail 1 "$JRBD" pair check nosuch --dir "$A"

"$JRBD" pair create g1 --dir "$A" --remote "$B_ADDR" >/dev/null
wait_drain g1 60
cmp_vols g1 data log
check "$A" g1 23
check "$B" g1 33
ok "1. paired: pair check exits 23 at the primary, 33 at the secondary"

# --- 2. suspend under writes: hosts go on, bitmaps track ------------------
fio_bg susp --uri="$(uri "$A" data)" "${LOAD[@]}" --runtime=4 --size=8M
sleep 1
"$JRBD" pair suspend g1 --dir "$A" >"$T/out"
grep -q "PSUS" "$T/out" || fail "suspend output: $(cat "$T/out")"
check "$A" g1 24
fio_ok susp
[ "$FIO_N" -gt 0 ] || fail "no writes completed while suspended"
wait_state "$B" g1 PSUS 10
check "$B" g1 34
dirty=$(pj "$A" g1 'p["bitmap"]["dirty_bytes"]')
[ "$dirty" -gt 0 ] && [ "$dirty" -le $((8 << 20)) ] || fail "dirty bytes $dirty after writes to 8M"
[ "$(pj "$A" g1 'p["reason"]')" = "suspended by the operator" ] || fail "reason: $(pj "$A" g1 'p["reason"]')"
"$JRBD" pair suspend g1 --dir "$A" >"$T/out"
grep -q "nothing to do" "$T/out" || fail "second suspend is not a no-op: $(cat "$T/out")"
expect_fail 1 "$JRBD" pair takeover g1 --dir "$A"
grep -q "takeover runs at the secondary" "$T/err" || fail "takeover at the primary: $(cat "$T/err")"
ok "2. suspend under fio: $FIO_N writes went on, $dirty bytes marked; refusals name the state"

# --- 3. resync copies only the marked regions -----------------------------
base0=$(pj "$A" g1 'p["link"]["base_bytes"]')
"$JRBD" pair resync g1 --dir "$A" >"$T/out"
grep -q "bytes of changed regions" "$T/out" || fail "resync output: $(cat "$T/out")"
wait_drain g1 60
cmp_vols g1 data log
base1=$(pj "$A" g1 'p["link"]["base_bytes"]')
sent=$((base1 - base0))
[ "$sent" -le "$dirty" ] || fail "resync sent $sent bytes of base copy, more than the $dirty marked"
[ "$(pj "$A" g1 'p["bitmap"]["dirty_bytes"]')" -eq 0 ] || fail "bitmap not clear after resync"
ok "3. resync: copied $sent bytes (marked: $dirty of $((80 << 20))), PAIR, cmp equal"

# --- 4. suspend --drain, writes while suspended, restart keeps PSUS --------
write_at "$A" data 0 65536 7
"$JRBD" pair suspend g1 --dir "$A" --drain >"$T/out"
grep -q "after the secondary restored everything" "$T/out" || fail "drain output: $(cat "$T/out")"
cmp_vols g1 data log
write_at "$A" data $((1 << 20)) 131072 9
write_at "$A" log 4096 4096 5
[ "$(pj "$A" g1 'p["bitmap"]["dirty_bytes"]')" -eq $((3 * 65536)) ] ||
	fail "expected 3 regions marked: $(pj "$A" g1 'p["bitmap"]')"
[ "$(pj "$A" g1 'p["changed_since_sync"]')" = True ] || true
stop "$APID"
start_a_l
check "$A" g1 24
[ "$(pj "$A" g1 'p["bitmap"]["dirty_bytes"]')" -eq $((3 * 65536)) ] ||
	fail "bitmap lost across a restart: $(pj "$A" g1 'p["bitmap"]')"
# A crash right after a write while suspended: the bit is not forgotten.
write_at "$A" data $((40 << 20)) 4096 3
crash "$APID"
start_a_l
[ "$(pj "$A" g1 'p["bitmap"]["dirty_bytes"]')" -eq $((4 * 65536)) ] ||
	fail "bit of a write before kill -9 forgotten: $(pj "$A" g1 'p["bitmap"]')"
wait_state "$A" g1 PSUS 5
wait_connected "$A" g1
"$JRBD" pair resync g1 --dir "$A" >/dev/null
wait_drain g1 60
cmp_vols g1 data log
ok "4. suspend --drain equal at once; PSUS and 4 marked regions survive SIGTERM and kill -9; resync equal"

# --- 5. link loss: PSUE, writes go on, automatic resync --------------------
crash "$BPID"
fio_bg linkloss --uri="$(uri "$A" data)" "${LOAD[@]}" --runtime=4 --size=16M --rate_iops=2000
wait_state "$A" g1 PSUE 15
fio_ok linkloss
grep -q "no link to the secondary\|no read-journal" <<<"$(pj "$A" g1 'p["reason"]')" ||
	fail "PSUE reason: $(pj "$A" g1 'p["reason"]')"
check "$A" g1 25
start_b
wait_state "$A" g1 PAIR 60
wait_drain g1 60
cmp_vols g1 data log
ok "5. link loss -> PSUE ($FIO_N writes not blocked) -> automatic resync -> PAIR, cmp equal"

# --- 6. journal full -> PFUS ----------------------------------------------
GROUP_ARGS=(--link-timeout 600 --no-auto-resync)
JOURNAL_SIZE=16M create_group "$A" g2 vol:64M
JOURNAL_SIZE=16M create_group "$B" g2 vol:64M
"$JRBD" pair create g2 --dir "$A" --remote "$B_ADDR" >/dev/null
wait_drain g2 60
crash "$BPID"
timeout 60 fio --name=fill --ioengine=nbd --uri="$(uri "$A" vol)" --rw=write --bs=256k \
	--iodepth=4 --size=48M --output="$T/fio-fill.txt" || fail "writes blocked by a full journal"
wait_state "$A" g2 PFUS 10
check "$A" g2 27
grep -q "journal is full" <<<"$(pj "$A" g2 'p["reason"]')" || fail "PFUS reason: $(pj "$A" g2 'p["reason"]')"
start_b
wait_connected "$A" g2
sleep 2
[ "$(pj "$A" g2 'p["state"]')" = PFUS ] || fail "resynced although auto-resync is off"
"$JRBD" pair resync g2 --dir "$A" >/dev/null
wait_drain g2 60
cmp_vols g2 vol
ok "6. 48M written into a 16M journal with the secondary down: PFUS, not blocked; manual resync, cmp equal"

# --- 6b. inflow control: writes held above the mark, then PFUS -----------
GROUP_ARGS=(--link-timeout 600 --no-auto-resync --inflow-control --high-water 50 --overflow-watch 2)
JOURNAL_SIZE=16M create_group "$A" g4 v4:64M
JOURNAL_SIZE=16M create_group "$B" g4 v4:64M
"$JRBD" pair create g4 --dir "$A" --remote "$B_ADDR" >/dev/null
wait_drain g4 60
crash "$BPID"
timeout 60 fio --name=inflow --ioengine=nbd --uri="$(uri "$A" v4)" --rw=write --bs=256k \
	--iodepth=4 --size=40M --output="$T/fio-inflow.txt" || fail "writes blocked under inflow control"
wait_state "$A" g4 PFUS 10
grep -q "holding host writes (inflow control" "$A.log" || fail "inflow control never held writes"
grep -q "overflow watch time" <<<"$(pj "$A" g4 'p["reason"]')" || fail "PFUS reason: $(pj "$A" g4 'p["reason"]')"
start_b
wait_connected "$A" g4
"$JRBD" pair resync g4 --dir "$A" >/dev/null
wait_drain g4 60
cmp_vols g4 v4
ok "6b. inflow control: writes held above 50%, PFUS after the 2 s overflow watch, then not blocked; resync, cmp equal"

# --- 7. takeover without the primary: SSWS ---------------------------------
write_at "$A" data 0 4096 1
wait_drain g1 30
crash "$APID"
rc=0
"$JRBD" pair takeover g1 --dir "$B" >"$T/out" || rc=$?
[ $rc -eq 10 ] || fail "takeover exit $rc: $(cat "$T/out")"
grep -q "secondary takeover" "$T/out" || fail "takeover output: $(cat "$T/out")"
check "$B" g1 38
write_at "$B" data $((2 << 20)) 65536 42
rc=0
"$JRBD" pair takeover g1 --dir "$B" >"$T/out" || rc=$?
[ $rc -eq 0 ] && grep -q "nothing to do" "$T/out" || fail "second takeover: $rc $(cat "$T/out")"
ok "7. takeover with the primary down: exit 10, SSWS (38), S-VOL writable"

# --- 8. split-brain guard, then resync --swap -------------------------------
start_a_l
wait_state "$A" g1 PSUE 20
wait_connected "$B" g1
write_at "$A" data $((3 << 20)) 4096 99   # written at the old primary while suspended
expect_fail 1 "$JRBD" pair resync g1 --dir "$B" --swap
grep -q "site 'a' has writes the other site lacks" "$T/err" || fail "split-brain message: $(cat "$T/err")"
expect_fail 1 "$JRBD" pair resync g1 --dir "$A"
grep -q "site 'b' has writes the other site lacks" "$T/err" || fail "resync at a: $(cat "$T/err")"
"$JRBD" pair resync g1 --dir "$B" --swap --force >"$T/out"
grep -q "is now the primary" "$T/out" || fail "swap output: $(cat "$T/out")"
# b is the primary now: drain towards a.
wait_swapped g1
check "$B" g1 23
check "$A" g1 33
wait_b_drained g1
cmp_vols g1 data log
write_refused "$A" data
ok "8. split-brain refused at both sites naming them; resync --swap --force: b primary, a's divergent write overwritten, cmp equal"

# --- 9. a second swap returns the roles with no copy ------------------------
base0=$(pj "$B" g1 'p["link"]["base_bytes"]')
rc=0
"$JRBD" pair takeover g1 --dir "$A" >"$T/out" || rc=$?
[ $rc -eq 11 ] || fail "takeover with the primary reachable exited $rc: $(cat "$T/out")"
wait_state "$A" g1 PAIR 60
[ "$(pj "$A" g1 'p["role"]')" = primary ] || fail "a is not the primary again"
[ "$(pj "$A" g1 'p["link"]["base_bytes"]')" -eq 0 ] || fail "the swap back copied data"
wait_drain g1 60
cmp_vols g1 data log
ok "9. takeover with the primary reachable: exit 11 (swap), no bytes copied, cmp equal"

# --- 10. events and delete ------------------------------------------------
grep -q "^a g1 PAIR PSUS suspended by the operator" "$T/events" || { cat "$T/events" >&2; fail "no PAIR->PSUS event at a"; }
grep -q "^b g1 .* SSWS" "$T/events" || { cat "$T/events" >&2; fail "no SSWS event at b"; }
"$JRBD" pair delete g1 --dir "$A" >"$T/out"
grep -q "both sites" "$T/out" || fail "delete output: $(cat "$T/out")"
check "$A" g1 10
check "$B" g1 10
cmp_vols g1 data log
write_at "$B" data 0 4096 11
grep -q "^b g1 .* SMPL" "$T/events" || { cat "$T/events" >&2; fail "no SMPL event at b"; }
ok "10. $(wc -l <"$T/events") events seen by the hooks; delete: both SMPL, data kept, b writable"

# --- 11. kill -9 during COPY, during resync and during takeover ------------
GROUP_ARGS=(--link-timeout 600)
create_group "$A" g3 d3:96M
create_group "$B" g3 d3:96M
timeout 60 fio --name=prefill3 --ioengine=nbd --uri="$(uri "$A" d3)" --rw=write --bs=1M \
	--iodepth=8 --size=96M --refill_buffers --output="$T/fio-prefill3.txt" || fail "fio prefill g3"
"$JRBD" pair create g3 --dir "$A" --remote "$B_ADDR" >/dev/null
crash "$BPID"
copy_state=$(pj "$A" g3 'p["state"]')
crash "$APID"
start_b
start_a_l
wait_drain g3 90
cmp_vols g3 d3
ok "11. kill -9 of the secondary and then the primary during the initial copy (state was $copy_state): resumed, cmp equal"

"$JRBD" pair suspend g3 --dir "$A" >/dev/null
timeout 60 fio --name=dirty3 --ioengine=nbd --uri="$(uri "$A" d3)" --rw=randwrite --bs=64k \
	--iodepth=8 --size=96M --number_ios=600 --refill_buffers --output="$T/fio-dirty3.txt" ||
	fail "fio dirty g3"
"$JRBD" pair resync g3 --dir "$A" >/dev/null
crash "$APID"
start_a_l
st=$(pj "$A" g3 'p["state"]')
[ "$st" = COPY ] || [ "$st" = PAIR ] || fail "after kill -9 during resync the primary is $st"
wait_drain g3 90
cmp_vols g3 d3
"$JRBD" pair suspend g3 --dir "$A" >/dev/null
timeout 60 fio --name=dirty3b --ioengine=nbd --uri="$(uri "$A" d3)" --rw=randwrite --bs=64k \
	--iodepth=8 --size=96M --number_ios=600 --refill_buffers --output="$T/fio-dirty3b.txt" ||
	fail "fio dirty g3 (2)"
"$JRBD" pair resync g3 --dir "$A" >/dev/null
crash "$BPID"
start_b
wait_drain g3 90
cmp_vols g3 d3
ok "11. kill -9 of the primary (came back $st) and of the secondary during resync: resumed, cmp equal"

write_at "$A" d3 0 65536 77
wait_drain g3 30
crash "$APID"
"$JRBD" pair takeover g3 --dir "$B" >/dev/null 2>&1 &
TK_PID=$!
PIDS+=("$TK_PID")
sleep 0.05
crash "$BPID"
wait "$TK_PID" 2>/dev/null || true
forget "$TK_PID"
start_b
st=$(pj "$B" g3 'p["state"]')
if [ "$st" != SSWS ]; then
	rc=0
	"$JRBD" pair takeover g3 --dir "$B" >/dev/null || rc=$?
	[ $rc -eq 10 ] || fail "takeover after a crash mid-takeover exited $rc"
fi
check "$B" g3 38
write_at "$B" d3 $((8 << 20)) 65536 78
start_a_l
wait_connected "$B" g3
"$JRBD" pair resync g3 --dir "$B" --swap >/dev/null
wait_swapped g3
wait_b_drained g3
cmp_vols g3 d3
ok "11. kill -9 of the secondary during takeover (came back $st): takeover finished, writes there, resync --swap, cmp equal"
# --- 11b. the link lost during the initial copy: PSUE, then resync copies the rest
GROUP_ARGS=(--link-timeout 1)
create_group "$A" g6 d6:96M
create_group "$B" g6 d6:96M
timeout 60 fio --name=prefill6 --ioengine=nbd --uri="$(uri "$A" d6)" --rw=write --bs=1M \
	--iodepth=8 --size=96M --refill_buffers --output="$T/fio-prefill6.txt" || fail "fio prefill g6"
"$JRBD" pair create g6 --dir "$A" --remote "$B_ADDR" >/dev/null
crash "$BPID"
wait_state "$A" g6 PSUE 20
marked=$(pj "$A" g6 'p["bitmap"]["dirty_bytes"]')
[ "$marked" -gt 0 ] || fail "nothing marked when the initial copy stopped"
start_b
wait_drain g6 90
cmp_vols g6 d6
ok "11b. link lost during the initial copy: PSUE with $marked bytes marked (the rest of the copy), automatic resync, cmp equal"

# --- 12. an I/O error at the secondary: PSUE, no automatic resync ----------
GROUP_ARGS=(--link-timeout 600)
create_group "$A" g5 v5:32M
create_group "$B" g5 v5:32M
"$JRBD" pair create g5 --dir "$A" --remote "$B_ADDR" >/dev/null
wait_drain g5 60
# An immutable file refuses writes even through open descriptors (EPERM).
# The cleanup must be able to delete it whatever happens.
trap 'rc=$?; chattr -i "$B/g5-v5.img" 2>/dev/null || true; cleanup "$rc"' EXIT
if chattr +i "$B/g5-v5.img" 2>/dev/null; then
	write_at "$A" v5 0 65536 5
	wait_state "$A" g5 PSUE 20
	chattr -i "$B/g5-v5.img"
	grep -q "I/O error at site 'b'" <<<"$(pj "$A" g5 'p["reason"]')" ||
		fail "PSUE reason: $(pj "$A" g5 'p["reason"]')"
	check "$A" g5 25
	write_at "$A" v5 65536 65536 6  # hosts go on
	sleep 2
	[ "$(pj "$A" g5 'p["state"]')" = PSUE ] || fail "resynced by itself after an I/O error"
	crash "$BPID"   # its group failed (sticky); a restart recovers it
	start_b
	wait_connected "$A" g5
	"$JRBD" pair resync g5 --dir "$A" >/dev/null
	wait_drain g5 60
	cmp_vols g5 v5
	ok "12. write error restoring at the secondary: PSUE with the reason, hosts not blocked, no automatic resync; manual resync, cmp equal"
else
	echo "ok - 12. SKIPPED: chattr +i is not supported on $T's filesystem (no way to make the S-VOL fail writes)"
fi
# --- 13. the old primary dies between committing a swap and answering ------
GROUP_ARGS=(--link-timeout 600)
create_group "$A" g7 d7:16M
create_group "$B" g7 d7:16M
"$JRBD" pair create g7 --dir "$A" --remote "$B_ADDR" >/dev/null
write_at "$A" d7 0 65536 31
wait_drain g7 60
stop "$APID"
export JRBD_TEST_EXIT_AFTER_SWAP_COMMIT=1
start_a_l
unset JRBD_TEST_EXIT_AFTER_SWAP_COMMIT
wait_connected "$B" g7
rc=0
"$JRBD" pair takeover g7 --dir "$B" >"$T/out" 2>&1 || rc=$?
[ $rc -ne 11 ] || fail "the swap reported success although site a died before answering"
for _ in $(seq 1 50); do kill -0 "$APID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$APID" 2>/dev/null && fail "the test hook did not stop site a"
forget "$APID"
start_a_l
wait_swapped g7
write_at "$B" d7 65536 65536 32
wait_b_drained g7
cmp "$A/g7-d7.img" "$B/g7-d7.img" || fail "g7 differs after the recovered swap"
ok "13. site a died between committing a swap and answering (takeover exit $rc): on its restart it re-sent the answer, b finished the swap, cmp equal"
echo "it_pair: all passed in ${SECONDS}s"
