#!/usr/bin/env bash
# Consistency group: a group's volumes are restored as one sequence. cg_writer
# writes dependent data across the primary's two volumes (a record on rec,
# then, once it is acknowledged, its commit marker on mark). At random
# instants the secondary is killed with -9 and its state (config, restore
# journal, S-VOLs) copied; a separate daemon opens the copy (recovering by
# redo, with no --listen so no primary can reach it) and is stopped, and
# the copied volumes must be the image of one instant of the primary: no
# marker without its record, nothing torn, each writer thread an exact
# prefix (cg_writer check). The real secondary restarts and the primary
# reconnects by itself. At the end the pair drains and S-VOL == P-VOL.
. "$(dirname "$0")/lib.sh"
: "${CG_WRITER:?}"

SECS=${JRBD_CG_SECONDS:-30}
SNAPS=${JRBD_CG_SNAPSHOTS:-7}
THREADS=${JRBD_CG_THREADS:-8}
SLOTS=${JRBD_CG_SLOTS:-4096}
A=$T/a
B=$T/b

# pj DIR EXPR: EXPR evaluated on the group 'g1' object of DIR's pair display.
pj() {
	"$JRBD" pair display g1 --dir "$1" --json |
		python3 -c 'import json, sys; g = json.load(sys.stdin)["groups"][0]; print(eval(sys.argv[1]))' "$2"
}

head -c 48 /dev/urandom | base64 >"$T/secret"
chmod 600 "$T/secret"
start_daemon "$B" --listen 127.0.0.1:0 --secret-file "$T/secret"
BPID=$DPID
BADDR=$(cat "$B/repl.addr")
start_daemon "$A" --secret-file "$T/secret"
APID=$DPID
for site in "$B" "$A"; do
	"$JRBD" group create g1 --dir "$site" --journal "$site/j.img" --journal-size 64M \
		--volume rec="$site/rec.img":64M --volume mark="$site/mark.img":16M >/dev/null
done
"$JRBD" pair create g1 --dir "$A" --remote "$BADDR" --no-initial-copy >/dev/null
[ "$(pj "$A" 'g["pair"]["state"]')" = PAIR ] || fail "pair not in PAIR after create"

"$CG_WRITER" write "nbd+unix:///rec?socket=$A/nbd.sock" "nbd+unix:///mark?socket=$A/nbd.sock" \
	"$SECS" "$THREADS" "$SLOTS" >"$T/writer.out" 2>&1 &
WPID=$!
PIDS+=("$WPID")
start_s=$SECONDS

snaps=0
for n in $(seq 1 "$SNAPS"); do
	# A random instant: 0.2 to 3.2 s after the previous snapshot's work.
	sleep "$((RANDOM % 3)).$((RANDOM % 10))$((RANDOM % 10))"
	sleep 0.2
	kill -0 "$WPID" 2>/dev/null || break # a slow machine: the run is over
	# Durable in the restore journal just before the crash: redo must keep it.
	received=$(pj "$B" 'g["pair"]["seq"]["received"]')
	kill9 "$BPID"
	S=$T/snap$n
	mkdir -p "$S/groups"
	cp --sparse=always "$B/groups/g1.json" "$S/groups/"
	cp --sparse=always "$B/j.img" "$B/rec.img" "$B/mark.img" "$S/"
	# The real secondary comes back at once (its address unchanged); the
	# primary redials it by itself.
	start_daemon "$B" --listen "$BADDR" --secret-file "$T/secret"
	BPID=$DPID
	python3 - "$S/groups/g1.json" "$B" "$S" <<'PY'
import json, sys
path, old, new = sys.argv[1:]
c = json.load(open(path))
def move(p):
    assert p.startswith(old + "/"), p
    return new + p[len(old):]
c["journal"] = move(c["journal"])
for v in c["volumes"]:
    v["path"] = move(v["path"])
json.dump(c, open(path, "w"), indent=2)
PY
	start_daemon "$S"
	SPID=$DPID
	read -r role failed restored sreceived redone < <(pj "$S" \
		'" ".join(str(x) for x in (g["pair"]["role"], g["failed"], g["pair"]["seq"]["restored"], g["pair"]["seq"]["received"], g["io"]["redone_records"]))')
	stop_daemon "$SPID"
	read -r state written < <(pj "$A" '" ".join(str(x) for x in (g["pair"]["state"], g["pair"]["seq"]["written"]))')
	[ "$role" = secondary ] && [ "$failed" = False ] || fail "snapshot $n: copy's group: role '$role', failed $failed"
	case $state in PAIR | PFUL) ;; *) fail "snapshot $n: pair state $state at the primary" ;; esac
	[ "$restored" -eq "$sreceived" ] ||
		fail "snapshot $n: copy restored up to seq $restored, but its restore journal holds up to $sreceived"
	[ "$restored" -ge "$received" ] ||
		fail "snapshot $n: copy restored up to seq $restored, but $received were durable before the crash"
	[ "$restored" -le "$written" ] ||
		fail "snapshot $n: copy restored up to seq $restored, primary has only written $written"
	"$CG_WRITER" check "$S/rec.img" "$S/mark.img" "$THREADS" "$SLOTS" >"$T/check.out" 2>&1 ||
		{ cat "$T/check.out"; fail "snapshot $n (restored seq $restored): volumes not the image of one instant"; }
	ok "snapshot $n at $((SECONDS - start_s)) s: restored seq $restored (>= $received received before the crash, <= $written written), $redone records redone: $(cat "$T/check.out")"
	rm -rf "$S"
	snaps=$n
done

wait "$WPID" || { cat "$T/writer.out"; fail "writer failed"; }
[ "$snaps" -ge 3 ] || fail "only $snaps of $SNAPS snapshots taken while the writer ran"
ok "writer: $(cat "$T/writer.out")"

# Drain: the primary appends a marker record each idle second, so wait for no lag.
drained=0
for i in $(seq 1 600); do
	if [ $((i % 10)) = 1 ] && [ "$(pj "$B" 'g["failed"]')" != False ]; then
		fail "secondary's group failed during the drain: $(pj "$A" 'g["pair"]["error"]')"
	fi
	read -r state conn lag restored written < <(pj "$A" \
		'" ".join(str(x) for x in (g["pair"]["state"], g["pair"]["connected"], g["pair"]["lag"]["records"], g["pair"]["seq"]["restored"], g["pair"]["seq"]["written"]))')
	case $state in PAIR | PFUL) ;; *) fail "pair state $state during the drain: $(pj "$A" 'g["pair"]["error"]')" ;; esac
	if [ "$conn" = True ] && [ "$lag" -eq 0 ] && [ "$restored" -eq "$written" ]; then
		drained=1
		break
	fi
	sleep 0.1
done
[ $drained = 1 ] || fail "not drained after 60 s: state $state, restored $restored of $written"
ok "drained: state $state, restored $restored = written $written"
stop_daemon "$APID"
stop_daemon "$BPID"
cmp "$A/rec.img" "$B/rec.img" || fail "rec: S-VOL differs from P-VOL after the drain"
cmp "$A/mark.img" "$B/mark.img" || fail "mark: S-VOL differs from P-VOL after the drain"
ok "S-VOLs byte-identical to the P-VOLs"
"$CG_WRITER" check "$A/rec.img" "$A/mark.img" "$THREADS" "$SLOTS" >"$T/check.out" 2>&1 ||
	{ cat "$T/check.out"; fail "primary's own volumes fail the check"; }
ok "primary: $(cat "$T/check.out")"
"$CG_WRITER" check "$B/rec.img" "$B/mark.img" "$THREADS" "$SLOTS" >"$T/check.out" 2>&1 ||
	{ cat "$T/check.out"; fail "secondary's volumes fail the check after the drain"; }
ok "secondary: $(cat "$T/check.out")"

# The checker itself must see a marker without its record: drop one record.
cp --sparse=always "$B/rec.img" "$T/rec-bad.img"
dd if=/dev/zero of="$T/rec-bad.img" bs=4096 seek=5 count=1 conv=notrunc status=none
rc=0
"$CG_WRITER" check "$T/rec-bad.img" "$B/mark.img" "$THREADS" "$SLOTS" >"$T/check.out" 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "slot 5: marker .* rec slot is empty" "$T/check.out" ||
	{ cat "$T/check.out"; fail "checker missed a marker without its record (exit $rc)"; }
ok "checker flags a marker without its record: $(head -1 "$T/check.out")"
echo "$((snaps + 6)) passed, 0 failed"
