/*
 * One replication connection on the event loop: nonblocking socket, frame
 * reassembly, a bounded send queue, and the authentication handshake.
 *
 * Life: link_new() on a connected (or connecting) socket -> both sides send
 * HELLO, then AUTH; a wrong MAC, a peer without the key, a bad frame or a
 * protocol violation closes the link with on_close(err) and a logged reason
 * naming the peer address. Once both MACs verified, on_ready runs and every
 * later frame is decoded and handed to on_msg. link_send() queues a message
 * (copied); the queue holds at most LINK_MAX_QUEUED bytes, beyond that
 * link_send returns -ENOBUFS so callers apply flow control (link_can_send()).
 *
 * Messages before authentication other than HELLO/AUTH/ERROR are refused,
 * and so is any frame larger than the largest of those. The handshake
 * (connect included) must finish within 15 s. A received ERROR closes the
 * link with on_close(-code). A link that fails on its own (bad frame, bad
 * MAC, ...) tells the peer with an ERROR first, as link_fail() does.
 *
 * on_close runs exactly once (from the loop, never inside link_new,
 * link_send or link_fail), after which the owner must call link_free().
 * link_free() may be called at any time, inside any callback too (the
 * memory is released once the callback returns); on_close then never runs.
 */
#ifndef JRBD_LINK_H
#define JRBD_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jrbd/wire.h"
#include "repl/auth.h"

struct loop;
struct link;

#define LINK_MAX_QUEUED (32u << 20)

struct link_ops {
	void (*on_ready)(struct link *l, void *arg); /* authenticated */
	void (*on_msg)(struct link *l, const struct wire_msg *m, void *arg);
	/* err 0: the peer closed after authenticating; -ECONNRESET: it closed
	 * during the handshake or mid-frame; -code of its ERROR; else -errno. */
	void (*on_close)(struct link *l, int err, void *arg);
	void (*on_writable)(struct link *l, void *arg); /* queue drained below half; optional */
};

/*
 * fd: a connected or connecting (EINPROGRESS) stream socket; owned by the
 * link from here on (closed on failure too). role: ours (WIRE_ROLE_PRIMARY
 * when we dialed). site: our name for the peer's logs (at most
 * WIRE_SITE_LEN bytes, no control characters; NULL: ""). peer_name: for
 * logs ("127.0.0.1:7790"). on_close is required, the others optional.
 * -EINVAL bad arguments; -ENOMEM; -errno from the loop.
 */
int link_new(struct loop *loop, int fd, enum wire_role role, const struct auth_key *key,
             const char *site, const char *peer_name, const struct link_ops *ops, void *arg,
             struct link **ret);

/* Queues msg (copied) and sends what the socket takes (inside a link
 * callback: when the callback returns). -ENOBUFS: queue full (on_writable
 * follows once it drains below half); -ENOTCONN: not authenticated yet
 * (only ERROR is allowed then), failing or closed; -EINVAL: not encodable,
 * or HELLO/AUTH (the link's own). A send error never calls back here: the
 * link closes and on_close follows from the loop. */
int link_send(struct link *l, const struct wire_msg *msg);

/* Sends an ERROR (err: a positive or negative errno; the text from fmt,
 * cut at WIRE_MAX_ERROR bytes) then closes once it is written, with a FIN
 * after it. Frames queued but not started are dropped. Bounded: closes
 * anyway 2 s later when the peer doesn't read. on_close then reports -err.
 * No effect on a link already failing or closed. */
void link_fail(struct link *l, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Whether link_send of a frame of `bytes` would be queued now. When not
 * (and frames are waiting), on_writable follows once the queue drains
 * below half. */
bool link_can_send(struct link *l, size_t bytes);
bool link_is_ready(const struct link *l);
const char *link_peer(const struct link *l);
const char *link_peer_site(const struct link *l); /* from its HELLO; "" before */
/* Why the link closed, for the owner's messages: the text of the peer's
 * ERROR, or the reason this side aborted it; "" when neither. */
const char *link_close_reason(const struct link *l);
uint64_t link_bytes_sent(const struct link *l);   /* frame bytes, since link_new */
uint64_t link_bytes_received(const struct link *l);

/* Closes the socket now without calling on_close; frees. NULL is a no-op. */
void link_free(struct link *l);

/* Helpers for the daemon: a nonblocking connect to "HOST:PORT" (numeric or
 * name; TCP_NODELAY; the result comes through link_new's on_close or
 * on_ready) and a nonblocking, close-on-exec listening socket with
 * SO_REUSEADDR ("HOST:PORT", ":PORT" or "[V6]:PORT"). -errno with a
 * message in err. XXX: a HOST name is resolved with a blocking
 * getaddrinfo(). */
int link_dial(const char *addr, int *ret_fd, char *err, size_t errlen);
int link_listen(const char *addr, int *ret_fd, char *err, size_t errlen);

#endif
