#!/usr/bin/env bash
# Real clients against the real daemon: fio (nbd engine) with verification,
# several connections to one export, unaligned I/O, qemu-img and nbdcopy;
# then every byte the clients see equals the backing file, and the journal
# dump is clean after shutdown.
. "$(dirname "$0")/lib.sh"
skip_unless_cmd fio nbdcopy qemu-img

A=$T/site-a
start_daemon "$A"
export JRBD_DIR=$A
"$JRBD" group create g1 --journal "$A/j.img" --journal-size 64M \
	--volume data="$A/data.img":64M --volume logs="$A/logs.img":16M >/dev/null

uri_data="nbd+unix:///data?socket=$NBD_SOCK"
uri_logs="nbd+unix:///logs?socket=$NBD_SOCK"

fio_run() { # name, extra fio args...
	local name=$1; shift
	fio --name="$name" --ioengine=nbd --output="$T/fio-$name.txt" --verify_fatal=1 \
		--do_verify=1 "$@" || { cat "$T/fio-$name.txt" >&2; fail "fio $name"; }
	grep -q "err= 0" "$T/fio-$name.txt" || { cat "$T/fio-$name.txt" >&2; fail "fio $name errors"; }
}

# 4k random writes at QD32 over a journal smaller than the data written, so
# the journal wraps and checkpoints release space under load.
fio_run randwrite --uri="$uri_data" --rw=randwrite --bs=4k --iodepth=32 --size=48M \
	--verify=crc32c --io_size=96M --randrepeat=1
ok "fio 4k randwrite QD32 with verify (journal wraps)"

# Large sequential writes (split into several journal records each).
fio_run seqwrite --uri="$uri_data" --rw=write --bs=4M --iodepth=8 --size=32M --verify=md5
ok "fio 4M seqwrite QD8 with verify"

# Unaligned sizes and offsets take the buffered path.
fio_run unaligned --uri="$uri_logs" --rw=randwrite --bsrange=512-70000 --bs_unaligned=1 \
	--iodepth=16 --size=8M --verify=crc32c
ok "fio unaligned randwrite with verify"

# Several connections to one export at once (CAN_MULTI_CONN), TCP this time.
host=${NBD_TCP%:*}; port=${NBD_TCP##*:}
fio_run multiconn --uri="nbd://$host:$port/data" --rw=randwrite --bs=8k --iodepth=8 \
	--numjobs=4 --size=8M --offset_increment=8M --verify=crc32c
ok "fio 4 connections over TCP with verify"

# Overlapping writes from one client: last writer wins, and the export, the
# file and a read-back all agree.
fio_run overlap --uri="$uri_logs" --rw=randwrite --bs=4k --iodepth=32 --size=64k \
	--io_size=16M --norandommap --randrepeat=0 --do_verify=0
"$JRBD" pair display g1 --json >"$T/d.json"

# qemu-img writes an image into the export, then compares.
head -c $((16 << 20)) /dev/urandom >"$T/src.img"
qemu-img convert -n -f raw -O raw "$T/src.img" "$uri_logs" || fail "qemu-img convert into export"
qemu-img compare -f raw -F raw "$T/src.img" "$uri_logs" >/dev/null || fail "qemu-img compare"
ok "qemu-img convert + compare through NBD"

# What clients read equals the backing files.
nbdcopy "$uri_data" "$T/copy-data.img" || fail nbdcopy
nbdcopy "$uri_logs" "$T/copy-logs.img" || fail nbdcopy
cmp "$T/copy-data.img" "$A/data.img" || fail "data export differs from its file"
cmp "$T/copy-logs.img" "$A/logs.img" || fail "logs export differs from its file"
cmp "$T/src.img" "$A/logs.img" || fail "qemu-img's image not in the file"
ok "nbdcopy of each export equals its backing file"

written=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["groups"][0]["seq"]["written"])' "$T/d.json")
[ "$written" -gt 15000 ] || fail "only $written records journaled"
stop_daemon "$DPID"
"$JRBD" journal dump "$A/j.img" >"$T/dump.txt" || { tail "$T/dump.txt"; fail "journal dump not clean"; }
"$JRBD" journal dump --json "$A/j.img" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["end"]["reason"], d["end"]'
ok "journal dump clean after shutdown ($written records journaled)"
