#!/usr/bin/python3
"""NBD protocol conformance and robustness against the real daemon.

Good clients go through libnbd; bad ones are raw sockets speaking broken
protocol. After every bad client, a good client must still be served.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

try:
    import nbd
except ImportError:
    print("SKIP: python3-libnbd not installed")
    sys.exit(77)

JRBD = os.environ["JRBD"]
ENGINE = os.environ.get("JRBD_TEST_IO_ENGINE", "auto")
T = tempfile.mkdtemp(prefix="jrbd-it-nbd-", dir="/var/tmp")
A = os.path.join(T, "site-a")
SOCK = os.path.join(A, "nbd.sock")
SIZE = 32 << 20
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513
daemon = None
passed = 0


def ok(msg):
    global passed
    passed += 1
    print("ok - " + msg, flush=True)


def jrbd(*args):
    return subprocess.run([JRBD, *args, "--dir", A], check=True, capture_output=True, text=True)


def start():
    global daemon
    log = open(A + ".log", "a")
    daemon = subprocess.Popen([JRBD, "daemon", "--dir", A, "--io-engine", ENGINE,
                               "--nbd", "unix:" + SOCK], stdout=log, stderr=log)
    for _ in range(200):
        if subprocess.run([JRBD, "status", "--dir", A], capture_output=True).returncode == 0:
            return
        assert daemon.poll() is None, "daemon exited during start-up"
        time.sleep(0.1)
    raise AssertionError("daemon not ready")


def alive_check(what):
    assert daemon.poll() is None, "daemon died after " + what
    h = nbd.NBD()
    h.connect_unix(SOCK) if False else h.connect_uri("nbd+unix:///data?socket=" + SOCK)
    h.pwrite(b"\x5a" * 4096, 4096)
    assert h.pread(4096, 4096) == b"\x5a" * 4096
    h.shutdown()


def raw():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(SOCK)
    hello = recv_exact(s, 18)
    magic, opt, flags = struct.unpack(">QQH", hello)
    assert magic == NBDMAGIC and opt == IHAVEOPT and flags & 1
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def closed_by_server(s):
    """True when the server closes the socket (bounded wait)."""
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def raw_go(s, name=b"data"):
    """Fixed-newstyle handshake up to transmission, with NO_ZEROES."""
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(struct.pack(">QII", IHAVEOPT, 1, len(name)) + name)  # EXPORT_NAME
    size, flags = struct.unpack(">QH", recv_exact(s, 10))
    assert size == SIZE
    return flags


def main():
    os.makedirs(A)
    start()
    jrbd("group", "create", "g1", "--journal", A + "/j.img", "--journal-size", "256M",
         "--volume", "data=%s/data.img:32M" % A, "--volume", "logs=%s/logs.img:32M" % A)

    # --- negotiation through libnbd ---
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri("nbd+unix://?socket=" + SOCK)
    names = []
    h.opt_list(lambda name, desc: names.append(name))
    assert sorted(names) == ["data", "logs"], names
    h.set_export_name("logs")
    h.opt_info()
    assert h.get_size() == SIZE
    assert h.get_block_size(nbd.SIZE_MINIMUM) == 1
    assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
    assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20
    h.set_export_name("nope")
    try:
        h.opt_info()
        raise AssertionError("opt_info on an unknown export succeeded")
    except nbd.Error:
        pass
    h.opt_abort()
    ok("OPT_LIST, OPT_INFO with block sizes, unknown export refused, OPT_ABORT")

    h = nbd.NBD()
    h.connect_uri("nbd+unix:///data?socket=" + SOCK)
    assert h.get_structured_replies_negotiated()
    for cap in (h.can_flush, h.can_fua, h.can_trim, h.can_zero, h.can_fast_zero,
                h.can_cache, h.can_multi_conn):
        assert cap(), cap.__name__
    assert not h.is_read_only()
    ok("transmission flags: flush fua trim zero fast_zero cache multi_conn")

    pat = bytes(range(256)) * 64  # 16 KiB
    h.pwrite(pat, 65536)
    assert h.pread(len(pat), 65536) == pat
    h.pwrite(b"\x11" * 4096, 1 << 20, nbd.CMD_FLAG_FUA)
    assert h.pread(4096, 1 << 20) == b"\x11" * 4096
    h.pwrite(b"odd", 12345)  # unaligned, tiny
    assert h.pread(5, 12344) == b"\x00odd\x00"
    h.flush()
    h.trim(8192, 65536)
    assert h.pread(8192, 65536) == b"\x00" * 8192
    h.pwrite(b"\x22" * 8192, 2 << 20)
    h.zero(8192, 2 << 20, nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(8192, 2 << 20) == b"\x00" * 8192
    h.pwrite(b"\x33" * 8192, 3 << 20)
    h.zero(8192, 3 << 20, nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(8192, 3 << 20) == b"\x00" * 8192
    h.cache(65536, 0)
    big = os.urandom(32 << 20)
    h.pwrite(big, 0)
    assert h.pread(32 << 20, 0) == big
    ok("READ, WRITE(+FUA), unaligned, FLUSH, TRIM, WRITE_ZEROES(NO_HOLE, FAST_ZERO), CACHE, 32 MiB")

    # Out-of-range requests: libnbd's own checks off, the server must refuse.
    h.set_strict_mode(0)
    for fn, args in ((h.pread, (4096, SIZE)), (h.pwrite, (b"x" * 4096, SIZE - 100)),
                     (h.trim, (4096, SIZE)), (h.zero, (4096, SIZE)),
                     (h.pread, (4096, (1 << 64) - 4096))):
        try:
            fn(*args)
            raise AssertionError("%s %r beyond the end succeeded" % (fn.__name__, args[1:]))
        except nbd.Error as e:
            assert e.errno in (22, 28, "EINVAL", "ENOSPC"), e
    assert h.pread(4096, 0) == big[:4096]  # the connection still works
    h.shutdown()
    ok("requests beyond the end get EINVAL/ENOSPC, connection stays usable")

    # Several connections, one export: what one writes and flushes, another reads.
    hs = [nbd.NBD() for _ in range(4)]
    for i, x in enumerate(hs):
        x.connect_uri("nbd+unix:///logs?socket=" + SOCK)
        x.pwrite(bytes([i + 1]) * 4096, i * 4096)
        x.flush()
    for i in range(4):
        assert hs[(i + 1) % 4].pread(4096, i * 4096) == bytes([i + 1]) * 4096
    for x in hs:
        x.shutdown()
    ok("multi-conn: writes visible across connections")

    # --- bad clients on raw sockets ---
    s = raw()
    s.sendall(b"\xff\xff\xff\xff")  # unknown client flags
    assert closed_by_server(s)
    s.close()
    alive_check("unknown client flags")

    s = raw()
    s.sendall(struct.pack(">I", 1) + b"garbage-garbage-garbage")
    assert closed_by_server(s)
    s.close()
    alive_check("bad option magic")

    s = raw()
    try:
        s.sendall(struct.pack(">I", 1) + struct.pack(">QII", IHAVEOPT, 7, 0xFFFFFFF0))
        s.sendall(b"x" * 100)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may hang up before we finish: that's the point
    assert closed_by_server(s)
    s.close()
    alive_check("huge option length")

    s = raw()
    s.sendall(struct.pack(">I", 1) + struct.pack(">QII", IHAVEOPT, 0x1234, 0))
    magic, opt, rtype, rlen = struct.unpack(">QIII", recv_exact(s, 20))
    assert opt == 0x1234 and rtype == (1 << 31) + 1, (opt, rtype)  # NBD_REP_ERR_UNSUP
    s.close()
    ok("unknown option gets NBD_REP_ERR_UNSUP")

    s = raw()
    s.sendall(struct.pack(">I", 1) + struct.pack(">QII", IHAVEOPT, 7, 8) + b"\x00")
    s.close()  # truncated mid-option, then gone
    alive_check("truncated option")

    s = raw()
    raw_go(s)
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 99, 1, 0, 4096))  # unknown command
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == 0x67446698 and err == 22 and cookie == 1, (magic, err, cookie)
    s.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 2, 0, 4096))  # bad magic
    assert closed_by_server(s)
    s.close()
    alive_check("unknown command / bad request magic")
    ok("unknown command gets EINVAL; bad request magic closes the connection")

    s = raw()
    raw_go(s)
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 1, 3, 0, 1 << 20) + b"y" * 1000)
    s.close()  # vanishes mid-payload
    s = raw()
    raw_go(s)
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, 4, 0, 0xFFFFFFFF))  # 4 GiB read
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    assert err == 22 and cookie == 4, (err, cookie)
    s.close()
    alive_check("vanishing writer / oversized read")
    ok("client vanishing mid-write and an oversized read are handled")

    # Garbage floods: random bytes as handshake and as requests.
    for seed in range(20):
        rnd = bytes((seed * 7 + i * 13) & 0xFF for i in range(4096))
        s = raw()
        try:
            if seed % 2:
                raw_go(s)
            s.sendall(rnd)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass
        s.close()
    alive_check("garbage")
    ok("garbage handshakes and requests: daemon alive, others served")

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    print("%d passed, 0 failed" % passed)


if __name__ == "__main__":
    rc = 1
    try:
        main()
        rc = 0
    finally:
        if daemon and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if rc:
            try:
                print(open(A + ".log").read()[-4000:], file=sys.stderr)
            except OSError:
                pass
        shutil.rmtree(T, ignore_errors=True)
    sys.exit(rc)
