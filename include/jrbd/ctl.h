/*
 * The control socket: how `jrbd` commands talk to the local daemon.
 *
 * Transport: a unix stream socket at STATE_DIR/ctl.sock, mode 0600. The daemon
 * accepts commands only from its own uid or root (SO_PEERCRED).
 *
 * Framing: each message is a 4-byte big-endian length followed by that many
 * bytes of UTF-8 JSON (one object). Length 1..CTL_MAX_MSG; anything else closes
 * the connection. One request, one reply, then either side may close.
 *
 * Request:  {"v": 1, "cmd": "<command>", ...arguments}
 * Reply:    {"v": 1, "ok": true, ...results}
 *        or {"v": 1, "ok": false, "errno": <positive errno>, "error": "<message>"}
 *
 * Commands (arguments):
 *   group-create  name, journal (absolute path), journal_size (bytes, 0: default),
 *                 volumes: [{name, path (absolute), size (bytes, 0: existing size)}]
 *   group-delete  name
 *   display       name (optional): groups with volumes, journal use and sequence numbers
 *   status        daemon pid, state dir, NBD addresses, io engine
 *   shutdown      stop the daemon cleanly
 * Unknown commands and wrong argument types get ok:false, errno EINVAL.
 */
#ifndef JRBD_CTL_H
#define JRBD_CTL_H

#define CTL_VERSION 1
#define CTL_MAX_MSG (4u << 20)
#define CTL_SOCKET_NAME "ctl.sock"

#endif
