#!/usr/bin/env bash
# Daemon and control plane: group create/delete/display, persistence across a
# restart, and the clear errors of PRODUCT.md (second daemon, no daemon, bad
# paths, sizes that don't fit).
. "$(dirname "$0")/lib.sh"

A=$T/site-a
# No daemon yet: exit code 3 and a message naming the directory.
expect_fail 3 "$JRBD" pair display --dir "$A"
grep -q "no daemon is running" "$T/err" || fail "missing 'no daemon' message"
ok "no daemon: clear error"

start_daemon "$A"
PID1=$DPID
# A second daemon on the same directory refuses to start.
rc=0
"$JRBD" daemon --dir "$A" --io-engine "$ENGINE" >"$T/second.log" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "second daemon on the same dir started"
grep -q "already owned by a running jrbd daemon (pid $PID1)" "$T/second.log" ||
	{ cat "$T/second.log"; fail "second daemon: unclear error"; }
ok "second daemon refused"

# Bad daemon options: usage error (2) naming the option, nothing started.
for bad in "--read-cache 1M" "--read-cache 8M" "--read-cache lots" "--window 0" "--compress-level 20"; do
	rc=0
	# shellcheck disable=SC2086
	"$JRBD" daemon --dir "$T/never" $bad >"$T/bad.log" 2>&1 || rc=$?
	[ $rc -eq 2 ] || fail "daemon $bad: exit $rc, expected 2"
	grep -q -- "${bad%% *}" "$T/bad.log" || { cat "$T/bad.log"; fail "daemon $bad: message does not name the option"; }
	[ ! -e "$T/never" ] || fail "daemon $bad created its directory"
done
ok "bad daemon options refused with a usage error naming the option"

export JRBD_DIR=$A
"$JRBD" group create g1 --journal "$A/j.img" --journal-size 32M \
	--volume data="$A/data.img":64M --volume logs="$A/logs.img":16M >/dev/null
[ "$(stat -c %s "$A/data.img")" -eq $((64 << 20)) ] || fail "data.img not 64M"
[ "$(stat -c %b "$A/data.img")" -lt 1024 ] || fail "data.img is not sparse"
ok "group create makes sparse volumes"

# Errors: each changes nothing.
expect_fail 1 "$JRBD" group create g1 --journal "$A/j2.img" --volume x="$A/x.img":1M
grep -q "already exists" "$T/err" || fail "duplicate group: $(cat "$T/err")"
expect_fail 1 "$JRBD" group create g2 --journal "$A/j2.img" --journal-size 32M --volume data="$A/d2.img":1M
grep -q "already exported" "$T/err" || fail "duplicate volume name: $(cat "$T/err")"
expect_fail 1 "$JRBD" group create g2 --journal "$A/nodir/j.img" --volume v="$A/v.img":1M
grep -q "does not exist" "$T/err" || fail "bad journal dir: $(cat "$T/err")"
expect_fail 1 "$JRBD" group create g2 --journal "$A/j2.img" --journal-size 32M --volume v="$A/missing.img"
grep -q "give a size" "$T/err" || fail "missing size: $(cat "$T/err")"
truncate -s 1M "$A/small.img"
expect_fail 1 "$JRBD" group create g2 --journal "$A/j2.img" --journal-size 32M --volume v="$A/small.img":2M
grep -q "smaller than" "$T/err" || fail "too small: $(cat "$T/err")"
expect_fail 1 "$JRBD" group create g2 --journal "$A/j2.img" --journal-size 1M --volume v="$A/v.img":1M
grep -q "minimum" "$T/err" || fail "tiny journal: $(cat "$T/err")"
expect_fail 2 "$JRBD" group create g2 --journal "$A/j2.img" --volume "v=$A/v.img:12Q"
expect_fail 1 "$JRBD" group create "bad/name" --journal "$A/j2.img" --volume v="$A/v.img":1M
echo "not a journal" >"$A/notj.img"
expect_fail 1 "$JRBD" group create g2 --journal "$A/notj.img" --volume v="$A/v.img":1M
grep -q "not a jrbd journal" "$T/err" || fail "overwrite guard: $(cat "$T/err")"
expect_fail 1 "$JRBD" group create g2 --journal "$A/j.img" --volume v="$A/v.img":1M
grep -q "already used by group 'g1'" "$T/err" || fail "journal in use: $(cat "$T/err")"
expect_fail 1 "$JRBD" group create g2 --journal "$A/j2.img" --journal-size 32M --volume v="$A/logs.img"
grep -q "already used by group 'g1'" "$T/err" || fail "volume in use: $(cat "$T/err")"
[ ! -e "$A/v.img" ] || fail "a failed create left a volume file behind"
[ ! -e "$A/missing.img" ] || fail "a failed create left a volume file behind"
ok "group create errors are clear and change nothing"

"$JRBD" pair display --json >"$T/d.json"
python3 - "$T/d.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
g = d["groups"]
assert len(g) == 1 and g[0]["name"] == "g1", g
vols = {v["name"]: v for v in g[0]["volumes"]}
assert vols["data"]["size"] == 64 << 20 and vols["logs"]["size"] == 16 << 20, vols
assert g[0]["journal"]["size"] > 0 and g[0]["seq"]["written"] == 0, g[0]
PY
"$JRBD" pair display | grep -q "group g1" || fail "human display"
ok "display shows groups, volumes, journal"

# Persistence: restart, same groups and sizes.
stop_daemon "$PID1"
start_daemon "$A"
"$JRBD" pair display --json | python3 -c '
import json,sys; d=json.load(sys.stdin); g=d["groups"]
assert [x["name"] for x in g]==["g1"], g
assert sorted(v["name"] for v in g[0]["volumes"])==["data","logs"]'
ok "groups persist across restart"

# Existing files are used as they are (size from the file).
truncate -s 8M "$A/existing.img"
"$JRBD" group create g3 --journal "$A/j3.img" --journal-size 16M --volume ex="$A/existing.img" >/dev/null
"$JRBD" pair display g3 --json | python3 -c '
import json,sys; d=json.load(sys.stdin); assert d["groups"][0]["volumes"][0]["size"]==8<<20'
"$JRBD" group delete g3 >/dev/null
expect_fail 1 "$JRBD" pair display g3
# Its journal still names g3: another group may not take it over silently.
expect_fail 1 "$JRBD" group create g4 --journal "$A/j3.img" --volume ex4="$A/ex4.img":1M
grep -q "belongs to group 'g3'" "$T/err" || fail "foreign journal: $(cat "$T/err")"
[ -e "$A/existing.img" ] && [ -e "$A/j3.img" ] || fail "delete removed files"
ok "existing files used as they are; delete keeps files"

"$JRBD" journal dump "$A/j.img" >"$T/dump.txt" || fail "journal dump of a live journal"
grep -q "g1" "$T/dump.txt" || fail "journal dump lacks the group name"
stop_daemon "$DPID"
ok "clean shutdown on SIGTERM"

start_daemon "$A"
"$JRBD" shutdown || fail "jrbd shutdown did not get its answer"
for _ in $(seq 1 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$DPID" 2>/dev/null && fail "daemon still running after jrbd shutdown"
wait "$DPID" || fail "daemon exited non-zero after jrbd shutdown"
ok "jrbd shutdown stops the daemon and is answered"

# A group whose volume went missing: the daemon still starts, serves the other
# groups and shows why this one is down; it comes back once the file does.
mv "$A/logs.img" "$A/logs.moved"
start_daemon "$A"
"$JRBD" pair display g1 --json | python3 -c '
import json,sys; g=json.load(sys.stdin)["groups"][0]
assert g["failed"] and "logs" in g["error"], g'
"$JRBD" pair display g1 | grep -q "error: .*logs" || fail "human display lacks the error"
stop_daemon "$DPID"
mv "$A/logs.moved" "$A/logs.img"
start_daemon "$A"
"$JRBD" pair display g1 --json | python3 -c '
import json,sys; g=json.load(sys.stdin)["groups"][0]; assert not g["failed"], g'
ok "a group with a missing volume is reported, not fatal, and recovers"

# An NBD address another daemon holds: clear error, non-zero exit.
B=$T/site-b
mkdir -p "$B"
rc=0
"$JRBD" daemon --dir "$B" --io-engine "$ENGINE" --nbd "unix:$A/nbd.sock" >"$T/b.log" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "a daemon started on a socket already in use"
grep -q "cannot listen on 'unix:$A/nbd.sock'" "$T/b.log" || { cat "$T/b.log"; fail "unclear listen error"; }
stop_daemon "$DPID"
ok "NBD address in use: clear error"
