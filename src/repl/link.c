/*
 * One replication connection on the event loop (see link.h for the life of
 * a link and wire.h for the messages).
 *
 * States:
 *
 *   OPEN ----------------------------> CLOSED (socket closed, on_close due)
 *     |  EOF, socket error, ERROR         ^
 *     |  received, link_free              |
 *     |                                   | ERROR written, send error, EOF,
 *     v  link_fail, protocol/auth error   | or LINK_FAIL_TIMEOUT_MS passed
 *   FAILING (ERROR queued) ---------------+
 *
 *   OPEN covers the handshake (HELLO sent at link_new; AUTH sent when the
 *   peer's HELLO arrives; is_ready once the peer's AUTH verified) and the
 *   authenticated phase (frames go to on_msg). FAILING sends nothing but
 *   the frame already half-written and the ERROR, and discards input.
 *
 * Read side: recv() into one receive buffer, as much as fits (the buffer
 * starts at LINK_RBUF_INIT and grows once to a whole maximal frame when a
 * large frame arrives), then every complete frame is decoded and handled in
 * place (on_msg gets pointers into the buffer), then the remainder moves to
 * the front only when room runs short. Before authentication a frame may
 * not exceed the largest HELLO/AUTH/ERROR, so an unauthenticated peer can't
 * make us buffer megabytes.
 *
 * Write side: link_send() encodes into a queue of frames (bounded by
 * LINK_MAX_QUEUED) and writes at once with one sendmsg() over the queue, or,
 * inside our own callbacks, once when the callback returns (so a batch of
 * replies to a batch of frames costs one syscall). A large JOURNAL_DATA is
 * the exception: only its head is encoded, the queue is written at once
 * with its data straight from the caller's buffer, and what the socket
 * doesn't take is copied before link_send returns. EPOLLOUT is on only
 * while the queue is not empty (or a connect is in progress).
 *
 * Callbacks never run inside link_new, link_send, link_fail or link_free:
 * on_close and a late on_writable are deferred through an eventfd, which the
 * loop dispatches like any socket (so freeing a link inside any callback is
 * safe: loop_del_fd drops the rest of the epoll batch). The owner may call
 * link_free() inside any callback; the memory is released when the
 * outermost handler of this link returns.
 *
 * Timeouts: the handshake (connect included) must finish within
 * LINK_HANDSHAKE_TIMEOUT_MS; a failing link closes at most
 * LINK_FAIL_TIMEOUT_MS after link_fail even when the peer doesn't read.
 *
 * Not here: what messages mean (the pair layer), reconnecting (the daemon),
 * compression (the sender and receiver of JOURNAL_DATA).
 */
#include "repl/link.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/compiler.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "repl/wire_codec.h"

/* Receive buffer: initial size, and the most it grows to (one whole frame). */
#define LINK_RBUF_INIT (256u << 10)
#define LINK_RBUF_MAX (WIRE_HDR_SIZE + WIRE_MAX_PAYLOAD)
/* Compact the receive buffer before a recv() with less room than this. */
#define LINK_READ_MIN (64u << 10)
#define LINK_READ_ROUNDS 16 /* recv() calls per event before yielding to the loop */
#define LINK_SEND_ROUNDS 16 /* sendmsg() calls per flush, at most */
#define LINK_IOV_BATCH 64
/* A JOURNAL_DATA with at least this much data is written from the caller's
 * buffer, and only what the socket doesn't take at once is copied. */
#define LINK_DIRECT_MIN (32u << 10)
/* Largest frame before authentication: HELLO, AUTH or an ERROR with text. */
#define LINK_PREAUTH_MAX_FRAME (WIRE_HDR_SIZE + 4u + WIRE_MAX_ERROR)
#define LINK_FAIL_TIMEOUT_MS 2000u
#define LINK_HANDSHAKE_TIMEOUT_MS 15000u
#define LINK_LISTEN_BACKLOG 16
#define LINK_PEER_LEN 128

_Static_assert(LINK_RBUF_INIT >= LINK_PREAUTH_MAX_FRAME, "handshake frames fit the first buffer");
_Static_assert(LINK_MAX_QUEUED >= 2 * LINK_RBUF_MAX, "the queue holds a few maximal frames");

enum link_state {
	LS_OPEN = 0,
	LS_FAILING,
	LS_CLOSED,
};

/* One encoded frame waiting in the send queue: its first ext_at bytes in
 * data[], the rest (a JOURNAL_DATA's data) at ext when ext_at < len. */
struct link_frame {
	struct link_frame *next;
	size_t len;         /* frame bytes */
	size_t off;         /* bytes already sent */
	size_t ext_at;      /* frame offset of ext[0] */
	const uint8_t *ext; /* the caller's bytes during link_send, then ext_own */
	uint8_t *ext_own;
	uint8_t data[];
};

/* Everything is touched by the loop thread only. */
struct link {
	struct loop *loop;
	struct link_ops ops;
	void *arg;
	enum link_state state;
	enum wire_role role;      /* ours */
	enum wire_role peer_role; /* from its HELLO */
	const char *dir;          /* "to" (we dialed) or "from" (we accepted), for logs */

	int fd; /* the socket, -1 once closed */
	struct loop_handle h;
	int efd; /* eventfd for deferred callbacks, -1 once freed */
	struct loop_handle eh;
	struct loop_timer timer; /* handshake timeout, then the failing bound; fd -1 when off */

	struct auth_key key;
	uint8_t nonce[WIRE_NONCE_LEN];      /* ours, in our HELLO */
	uint8_t peer_nonce[WIRE_NONCE_LEN]; /* from its HELLO */
	char site[WIRE_SITE_LEN + 1];
	char peer_site[WIRE_SITE_LEN + 1];
	char peer[LINK_PEER_LEN];
	char reason[WIRE_MAX_ERROR + 96]; /* why it closed: the peer's ERROR or our abort */

	bool is_connecting; /* connect result not checked yet */
	bool has_hello;     /* peer's HELLO received, our AUTH queued */
	bool is_ready;      /* peer's AUTH verified */
	bool is_notified;   /* the eventfd holds an unread wakeup */
	bool is_freed;      /* link_free called; memory released when busy drops to 0 */
	bool close_reported;
	bool flush_deferred;   /* frames queued inside a handler: flush when it returns */
	bool is_above_half;    /* the queue went over half of LINK_MAX_QUEUED */
	bool writable_pending; /* ... and drained below it since: on_writable due */
	unsigned busy;         /* nesting depth of our handlers */
	int close_err;         /* for on_close: 0 or -errno */
	int fail_code;         /* FAILING: positive errno sent in the ERROR */

	/* Input: rbuf[rpos, rlen) received, not yet handled. */
	uint8_t *rbuf;
	size_t rcap, rpos, rlen;

	/* Output queue; queued = bytes not yet sent. */
	struct link_frame *qhead, *qtail;
	size_t queued;

	uint64_t bytes_sent, bytes_received;
};

static const char *
err_str(int err)
{
	const char *d = strerrordesc_np(err < 0 ? -err : err);

	return d ? d : "unknown error";
}

static const char *
role_name(uint32_t role)
{
	return role == WIRE_ROLE_PRIMARY ? "primary" : "secondary";
}

/* ---- Deferred callbacks, lifetime ---------------------------------------- */

static void
notify(struct link *l)
{
	uint64_t one = 1;

	if (l->is_notified || l->efd < 0)
		return;
	/* Can only fail when the counter would overflow: then it is set. */
	if (write(l->efd, &one, sizeof(one)) == (ssize_t)sizeof(one) || errno == EAGAIN)
		l->is_notified = true;
}

static void
timer_off(struct link *l)
{
	if (l->timer.fd >= 0)
		loop_timer_stop(l->loop, &l->timer);
}

static void
frame_free(struct link_frame *f)
{
	free(f->ext_own);
	free(f);
}

static void
queue_free(struct link *l)
{
	struct link_frame *f, *next;

	for (f = l->qhead; f; f = next) {
		next = f->next;
		frame_free(f);
	}
	l->qhead = l->qtail = NULL;
	l->queued = 0;
}

/* Closes the socket and schedules on_close(err). Idempotent. */
static void
do_close(struct link *l, int err)
{
	if (l->state == LS_CLOSED)
		return;
	if (l->fd >= 0) {
		loop_del_fd(l->loop, &l->h);
		close(l->fd);
		l->fd = -1;
	}
	timer_off(l);
	queue_free(l);
	l->state = LS_CLOSED;
	l->is_ready = false;
	l->close_err = err;
	notify(l);
}

static void
destroy(struct link *l)
{
	auth_key_wipe(&l->key);
	free(l->rbuf);
	free(l);
}

static void
enter(struct link *l)
{
	l->busy++;
}

static void flush(struct link *l);
static void teardown(struct link *l);

/* Ends a handler: sends what callbacks queued, then releases the memory if
 * the owner freed the link meanwhile. */
static void
leave(struct link *l)
{
	if (l->busy == 1 && !l->is_freed && l->flush_deferred)
		flush(l);
	if (--l->busy == 0 && l->is_freed)
		destroy(l);
}

/* Runs on_writable when the queue drained below half since it went over. */
static void
maybe_writable(struct link *l)
{
	if (!l->writable_pending || l->is_freed)
		return;
	l->writable_pending = false;
	if (l->state == LS_OPEN && l->is_ready && l->ops.on_writable)
		l->ops.on_writable(l, l->arg);
}

static void
deferred_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct link *l = arg;
	uint64_t n;

	(void)loop;
	(void)events;
	enter(l);
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_debug("replication link %s %s: eventfd read: %s", l->dir, l->peer,
		          err_str(-errno));
	l->is_notified = false;
	if (l->state == LS_CLOSED && !l->close_reported) {
		l->close_reported = true;
		l->ops.on_close(l, l->close_err, l->arg);
	} else {
		maybe_writable(l);
	}
	leave(l);
}

/* ---- Send side ----------------------------------------------------------- */

static void
update_events(struct link *l)
{
	uint32_t want = EPOLLIN;
	int r;

	if (l->fd < 0)
		return;
	if (l->qhead || l->is_connecting)
		want |= EPOLLOUT;
	r = loop_mod_fd(l->loop, &l->h, want);
	if (r < 0) {
		log_warn("replication link %s %s: epoll: %s, closing", l->dir, l->peer, err_str(r));
		do_close(l, r);
	}
}

static void
consume(struct link *l, size_t n)
{
	while (n) {
		struct link_frame *f = l->qhead;
		size_t take;

		assert(f); /* the socket took no more than we gave it */
		take = MIN(n, f->len - f->off);

		f->off += take;
		n -= take;
		l->queued -= take;
		if (f->off == f->len) {
			l->qhead = f->next;
			if (!l->qhead)
				l->qtail = NULL;
			frame_free(f);
		}
	}
}

/* Writes as much of the queue as the socket takes. Never calls back. */
static void
flush(struct link *l)
{
	l->flush_deferred = false;
	if (l->fd < 0 || l->is_connecting)
		return;
	for (int round = 0; round < LINK_SEND_ROUNDS && l->qhead; round++) {
		struct iovec iov[LINK_IOV_BATCH];
		struct msghdr mh = {.msg_iov = iov};
		size_t niov = 0;
		ssize_t n;

		for (struct link_frame *f = l->qhead; f && niov + 2 <= LINK_IOV_BATCH;
		     f = f->next) {
			size_t at = MAX(f->off, f->ext_at);

			if (f->off < f->ext_at) {
				iov[niov].iov_base = f->data + f->off;
				iov[niov].iov_len = f->ext_at - f->off;
				niov++;
			}
			if (at < f->len) {
				iov[niov].iov_base = (void *)(f->ext + (at - f->ext_at));
				iov[niov].iov_len = f->len - at;
				niov++;
			}
		}
		mh.msg_iovlen = niov;
		n = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			int err = -errno;

			if (err == -EINTR)
				continue;
			if (err == -EAGAIN)
				break;
			if (l->state == LS_FAILING) {
				/* The ERROR can't be delivered: close now. */
				do_close(l, -l->fail_code);
			} else {
				log_warn("replication link %s %s: send: %s, closing", l->dir,
				         l->peer, err_str(err));
				do_close(l, err);
			}
			return;
		}
		l->bytes_sent += (uint64_t)n;
		consume(l, (size_t)n);
	}
	if (l->is_above_half && l->queued < LINK_MAX_QUEUED / 2) {
		l->is_above_half = false;
		l->writable_pending = true;
		if (!l->busy)
			notify(l);
	}
	if (l->state == LS_FAILING && !l->qhead) {
		/* The ERROR is out; the FIN follows it. */
		shutdown(l->fd, SHUT_WR);
		do_close(l, -l->fail_code);
		return;
	}
	update_events(l);
}

/* Sends soon: now, or when our handler returns, or once connected. */
static void
kick(struct link *l)
{
	if (l->is_connecting)
		return;
	if (l->busy) {
		l->flush_deferred = true;
		return;
	}
	flush(l);
}

/* Encodes msg at the end of the queue. force: ignore LINK_MAX_QUEUED (the
 * handshake and ERROR frames, which are small and few). direct: only the
 * head is encoded, the rest stays at the caller's bytes (ext) until
 * keep_rest() copies what the socket has not taken. */
static int
queue_msg(struct link *l, const struct wire_msg *msg, bool force, bool direct)
{
	size_t size = wire_encoded_size(msg);
	size_t head = direct ? wire_head_size(msg) : size;
	struct link_frame *f;
	ssize_t n;

	if (size > LINK_RBUF_MAX)
		return -EINVAL;
	if (!force && (l->queued > LINK_MAX_QUEUED || size > LINK_MAX_QUEUED - l->queued)) {
		l->is_above_half = true;
		return -ENOBUFS;
	}
	f = malloc(sizeof(*f) + head);
	if (!f)
		return -ENOMEM;
	n = direct ? wire_encode_head(msg, f->data, head) : wire_encode(msg, f->data, size);
	if (n < 0) {
		free(f);
		return (int)n;
	}
	f->len = size;
	f->off = 0;
	f->ext_at = (size_t)n;
	f->ext = direct ? msg->u.journal_data.data : NULL;
	f->ext_own = NULL;
	f->next = NULL;
	if (l->qtail)
		l->qtail->next = f;
	else
		l->qhead = f;
	l->qtail = f;
	l->queued += f->len;
	if (l->queued >= LINK_MAX_QUEUED / 2)
		l->is_above_half = true;
	return 0;
}

/* After a direct frame's first flush: copies the part of the caller's bytes
 * the socket has not taken, which the queue must own once link_send
 * returns. */
static int
keep_rest(struct link *l, struct link_frame *f)
{
	size_t at = MAX(f->off, f->ext_at);
	uint8_t *own;

	if (at == f->len)
		return 0;
	own = malloc(f->len - at);
	if (!own) {
		log_warn("replication link %s %s: out of memory for %zu bytes to send, closing",
		         l->dir, l->peer, f->len - at);
		do_close(l, -ENOMEM);
		return -ENOMEM;
	}
	memcpy(own, f->ext + (at - f->ext_at), f->len - at);
	f->ext = f->ext_own = own;
	f->ext_at = at;
	return 0;
}

int
link_send(struct link *l, const struct wire_msg *msg)
{
	bool direct;
	int r;

	if (l->state != LS_OPEN)
		return -ENOTCONN;
	if (!l->is_ready && msg->hdr.type != WIRE_ERROR)
		return -ENOTCONN;
	if (msg->hdr.type == WIRE_HELLO || msg->hdr.type == WIRE_AUTH)
		return -EINVAL; /* ours to send */
	/* A large JOURNAL_DATA goes to the socket now, straight from the
	 * caller's buffer (the read cache, say) instead of through a copy
	 * into the queue; the syscall that costs inside a handler is nothing
	 * beside the copy it saves. */
	direct = msg->hdr.type == WIRE_JOURNAL_DATA &&
	         msg->u.journal_data.data_len >= LINK_DIRECT_MIN && !l->is_connecting;
	r = queue_msg(l, msg, false, direct);
	if (r < 0)
		return r;
	if (!direct) {
		kick(l);
		return 0;
	}
	flush(l);
	/* Still queued (the socket is full) unless the flush closed the link,
	 * which freed the queue. */
	if (l->state != LS_CLOSED && l->qtail && l->qtail->ext && !l->qtail->ext_own)
		return keep_rest(l, l->qtail);
	return 0;
}

static void timer_fired(struct loop *loop, void *arg);

/* Enters FAILING: everything not yet started is dropped, the ERROR goes
 * next, and the link closes once it is written (or after the bound). */
static void
fail_start(struct link *l, int code, const char *text)
{
	struct wire_msg m;
	struct link_frame *keep;
	int r;

	if (l->state != LS_OPEN)
		return;
	/* A frame half on the wire must be finished, or the peer would read
	 * our ERROR as the rest of it. */
	keep = l->qhead && l->qhead->off ? l->qhead : NULL;
	if (keep) {
		struct link_frame *rest = keep->next;

		keep->next = NULL;
		l->qhead = l->qtail = keep;
		l->queued = keep->len - keep->off;
		while (rest) {
			struct link_frame *next = rest->next;

			frame_free(rest);
			rest = next;
		}
	} else {
		queue_free(l);
	}
	timer_off(l);
	l->state = LS_FAILING;
	l->fail_code = code;
	l->is_ready = false;
	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_ERROR;
	m.u.error.code = code;
	snprintf(m.u.error.message, sizeof(m.u.error.message), "%s", text);
	r = queue_msg(l, &m, true, false);
	if (r == 0)
		r = loop_timer_start(l->loop, &l->timer, LINK_FAIL_TIMEOUT_MS, timer_fired, l);
	if (r < 0) {
		/* Can't send it or can't bound the wait: close now. */
		do_close(l, -code);
		return;
	}
	kick(l);
}

/* Logs why we drop the peer, tells it (peer_text), and closes. */
static void __attribute__((format(printf, 4, 5)))
abort_link(struct link *l, int err, const char *peer_text, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_warn("replication link %s %s: %s, closing", l->dir, l->peer, why);
	if (!l->reason[0])
		snprintf(l->reason, sizeof(l->reason), "%s", why);
	fail_start(l, err < 0 ? -err : err, peer_text ? peer_text : why);
}

void
link_fail(struct link *l, int err, const char *fmt, ...)
{
	char text[WIRE_MAX_ERROR + 1];
	int code = err < 0 ? -err : err;
	va_list ap;

	if (l->state != LS_OPEN)
		return;
	if (code <= 0 || code > 4095)
		code = EPROTO;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	log_debug("replication link %s %s: failing: %s (%s)", l->dir, l->peer, text, err_str(code));
	fail_start(l, code, text);
}

/* ---- Timer --------------------------------------------------------------- */

static void
timer_fired(struct loop *loop, void *arg)
{
	struct link *l = arg;

	(void)loop;
	enter(l);
	if (l->state == LS_FAILING) {
		log_debug("replication link %s %s: peer did not take our ERROR in %u ms", l->dir,
		          l->peer, LINK_FAIL_TIMEOUT_MS);
		do_close(l, -l->fail_code);
	} else if (l->state == LS_OPEN && !l->is_ready) {
		abort_link(l, ETIMEDOUT, "handshake timed out", "handshake not done after %u s",
		           LINK_HANDSHAKE_TIMEOUT_MS / 1000);
	} else {
		timer_off(l);
	}
	leave(l);
}

/* ---- Receive side -------------------------------------------------------- */

static void
handle_hello(struct link *l, const struct wire_hello *h)
{
	struct wire_msg m;
	int r;

	if (l->has_hello) {
		abort_link(l, EPROTO, NULL, "peer sent a second HELLO");
		return;
	}
	if (h->version != WIRE_VERSION) {
		abort_link(l, EPROTONOSUPPORT, NULL,
		           "peer speaks replication protocol version %u, we speak %u", h->version,
		           WIRE_VERSION);
		return;
	}
	if (h->role == (uint32_t)l->role) {
		abort_link(l, EPROTO, NULL,
		           "peer is a %s like us (site '%s'); one side must be the primary and "
		           "the other the secondary",
		           role_name(h->role), h->site);
		return;
	}
	l->has_hello = true;
	l->peer_role = (enum wire_role)h->role;
	memcpy(l->peer_nonce, h->nonce, WIRE_NONCE_LEN);
	snprintf(l->peer_site, sizeof(l->peer_site), "%s", h->site);

	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_AUTH;
	auth_mac(&l->key, (uint32_t)l->role, l->nonce, l->peer_nonce, m.u.auth.mac);
	r = queue_msg(l, &m, true, false);
	if (r < 0) {
		abort_link(l, -r, NULL, "queueing AUTH: %s", err_str(r));
		return;
	}
	kick(l);
}

static void
handle_auth(struct link *l, const struct wire_auth *a)
{
	if (!l->has_hello) {
		abort_link(l, EPROTO, NULL, "peer sent AUTH before HELLO");
		return;
	}
	if (l->is_ready) {
		abort_link(l, EPROTO, NULL, "peer sent a second AUTH");
		return;
	}
	if (auth_verify(&l->key, (uint32_t)l->peer_role, l->peer_nonce, l->nonce, a->mac) < 0) {
		abort_link(l, EACCES, "authentication failed",
		           "peer failed authentication (wrong --secret-file?)");
		return;
	}
	/* Our AUTH was queued when its HELLO came, so both sides now hold
	 * proof; the handshake timeout is over. */
	l->is_ready = true;
	timer_off(l);
	log_debug("replication link %s %s: authenticated (site '%s')", l->dir, l->peer,
	          l->peer_site);
	if (l->ops.on_ready)
		l->ops.on_ready(l, l->arg);
}

static void
handle_msg(struct link *l, const struct wire_msg *m)
{
	switch (m->hdr.type) {
	case WIRE_ERROR:
		if (!l->is_ready && m->u.error.code == EACCES) {
			snprintf(l->reason, sizeof(l->reason),
			         "peer refused our authentication (wrong --secret-file?): %s",
			         m->u.error.message);
			log_warn("replication link %s %s: %s, closing", l->dir, l->peer, l->reason);
		} else {
			snprintf(l->reason, sizeof(l->reason), "%s", m->u.error.message);
			log_warn("replication link %s %s: peer reported an error: %s (%s), closing",
			         l->dir, l->peer, m->u.error.message, err_str(m->u.error.code));
		}
		do_close(l, -m->u.error.code);
		return;
	case WIRE_HELLO:
		if (l->is_ready) {
			abort_link(l, EPROTO, NULL, "peer sent HELLO after authenticating");
			return;
		}
		handle_hello(l, &m->u.hello);
		return;
	case WIRE_AUTH:
		handle_auth(l, &m->u.auth);
		return;
	default:
		if (!l->is_ready) {
			abort_link(l, EPROTO, NULL, "peer sent %s before authenticating",
			           wire_type_name(m->hdr.type));
			return;
		}
		if (l->ops.on_msg)
			l->ops.on_msg(l, m, l->arg);
		return;
	}
}

/* Makes rbuf[rpos..] able to hold need bytes. */
static int
make_room(struct link *l, size_t need)
{
	uint8_t *p;

	if (l->rcap - l->rpos >= need)
		return 0;
	if (l->rpos) {
		memmove(l->rbuf, l->rbuf + l->rpos, l->rlen - l->rpos);
		l->rlen -= l->rpos;
		l->rpos = 0;
	}
	if (l->rcap >= need)
		return 0;
	/* Straight to the largest frame: it only ever grows once. */
	p = realloc(l->rbuf, LINK_RBUF_MAX);
	if (!p)
		return -ENOMEM;
	l->rbuf = p;
	l->rcap = LINK_RBUF_MAX;
	return 0;
}

/* Handles every complete frame in the buffer. */
static void
process_frames(struct link *l)
{
	while (l->state == LS_OPEN && !l->is_freed) {
		size_t avail = l->rlen - l->rpos;
		const uint8_t *p = l->rbuf + l->rpos;
		struct wire_hdr h;
		struct wire_msg m;
		ssize_t n;
		int r;

		n = wire_frame_peek(p, avail, &h);
		if (n == 0)
			break;
		if (n < 0) {
			abort_link(l, (int)-n, NULL, "bad frame header (%s)",
			           n == -EBADMSG ? "checksum mismatch"
			                         : "bad magic, flags or length");
			return;
		}
		if (!l->is_ready && (size_t)n > LINK_PREAUTH_MAX_FRAME) {
			abort_link(l, EPROTO, NULL,
			           "peer sent a %zd-byte %s frame before authenticating", n,
			           wire_type_name(h.type));
			return;
		}
		if ((size_t)n > avail) {
			r = make_room(l, (size_t)n);
			if (r < 0) {
				log_warn("replication link %s %s: no memory for a %zd-byte frame, "
				         "closing",
				         l->dir, l->peer, n);
				do_close(l, r);
			}
			return;
		}
		r = wire_decode(p, (size_t)n, &m);
		/* Consumed before any callback: the buffer isn't moved while
		 * on_msg runs, so m's pointers into it stay valid. */
		l->rpos += (size_t)n;
		if (r < 0) {
			abort_link(l, -r, NULL, "bad %s frame (%s)", wire_type_name(h.type),
			           r == -EBADMSG ? "payload checksum mismatch"
			                         : "malformed payload");
			return;
		}
		handle_msg(l, &m);
	}
}

static void
handle_eof(struct link *l)
{
	if (l->state == LS_FAILING) {
		/* It may still read: push our ERROR out first (flush closes
		 * the link once it is written). */
		flush(l);
		do_close(l, -l->fail_code);
	} else if (!l->is_ready) {
		log_warn("replication link %s %s: peer closed the connection during the handshake",
		         l->dir, l->peer);
		do_close(l, -ECONNRESET);
	} else if (l->rpos != l->rlen) {
		log_warn("replication link %s %s: peer closed the connection in the middle of a "
		         "frame",
		         l->dir, l->peer);
		do_close(l, -ECONNRESET);
	} else {
		log_info("replication link %s %s: peer closed the connection", l->dir, l->peer);
		do_close(l, 0);
	}
}

static void
read_input(struct link *l)
{
	for (int round = 0; round < LINK_READ_ROUNDS; round++) {
		size_t space;
		ssize_t n;

		if (l->state == LS_CLOSED || l->is_freed)
			return;
		if (l->rpos == l->rlen) {
			l->rpos = l->rlen = 0;
		} else if (l->rpos && l->rcap - l->rlen < LINK_READ_MIN) {
			memmove(l->rbuf, l->rbuf + l->rpos, l->rlen - l->rpos);
			l->rlen -= l->rpos;
			l->rpos = 0;
		}
		space = l->rcap - l->rlen;
		if (space == 0)
			return; /* can't happen: process_frames made room for the frame */
		n = recv(l->fd, l->rbuf + l->rlen, space, MSG_DONTWAIT);
		if (n < 0) {
			int err = -errno;

			if (err == -EINTR)
				continue;
			if (err == -EAGAIN)
				return;
			if (l->state == LS_FAILING) {
				do_close(l, -l->fail_code);
			} else {
				log_warn("replication link %s %s: receive: %s, closing", l->dir,
				         l->peer, err_str(err));
				do_close(l, err);
			}
			return;
		}
		if (n == 0) {
			handle_eof(l);
			return;
		}
		l->bytes_received += (uint64_t)n;
		if (l->state == LS_FAILING) {
			/* Discarded: reading keeps the peer from stalling on a full
			 * socket while it should be reading our ERROR. */
			l->rpos = l->rlen = 0;
			continue;
		}
		l->rlen += (size_t)n;
		process_frames(l);
		if ((size_t)n < space)
			return; /* drained */
	}
}

static int
connect_result(int fd)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -errno;
	return -soerr;
}

static void
socket_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct link *l = arg;

	(void)loop;
	(void)fd;
	enter(l);
	if (l->is_connecting) {
		int r;

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			goto out;
		r = connect_result(l->fd);
		if (r < 0) {
			if (l->state == LS_FAILING) {
				do_close(l, -l->fail_code);
			} else {
				log_warn("replication link %s %s: connect: %s", l->dir, l->peer,
				         err_str(r));
				do_close(l, r);
			}
			goto out;
		}
		l->is_connecting = false;
		events |= EPOLLOUT;
	}
	/* Write first: our HELLO goes out before anything the peer sent can
	 * make us fail, and the queue frees up before replies are added. What
	 * callbacks queue below is sent by leave(). */
	if (events & EPOLLOUT)
		flush(l);
	if (l->state != LS_CLOSED && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		read_input(l);
	maybe_writable(l);
out:
	leave(l);
}

/* ---- Life ---------------------------------------------------------------- */

int
link_new(struct loop *loop, int fd, enum wire_role role, const struct auth_key *key,
         const char *site, const char *peer_name, const struct link_ops *ops, void *arg,
         struct link **ret)
{
	struct link *l = NULL;
	struct wire_msg m;
	int r, one = 1, fl;

	if (!loop || fd < 0 || !key || !ops || !ops->on_close || !ret ||
	    (role != WIRE_ROLE_PRIMARY && role != WIRE_ROLE_SECONDARY) ||
	    (site && strnlen(site, WIRE_SITE_LEN + 1) > WIRE_SITE_LEN)) {
		r = -EINVAL;
		goto err;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		r = -ENOMEM;
		goto err;
	}
	l->loop = loop;
	l->ops = *ops;
	l->arg = arg;
	l->role = role;
	l->dir = role == WIRE_ROLE_PRIMARY ? "to" : "from";
	l->fd = fd;
	l->h.fd = -1;
	l->efd = -1;
	l->eh.fd = -1;
	l->timer.fd = -1;
	l->key = *key;
	l->is_connecting = true; /* until the socket is writable and SO_ERROR is 0 */
	snprintf(l->site, sizeof(l->site), "%s", site ? site : "");
	snprintf(l->peer, sizeof(l->peer), "%s", peer_name ? peer_name : "?");
	fd = -1; /* the link owns it now */

	fl = fcntl(l->fd, F_GETFL);
	if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(l->fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
		r = -errno;
		goto err;
	}
	/* Requests and acks are small and latency-bound. Not TCP: ignored. */
	(void)setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	l->rbuf = malloc(LINK_RBUF_INIT);
	if (!l->rbuf) {
		r = -ENOMEM;
		goto err;
	}
	l->rcap = LINK_RBUF_INIT;

	auth_nonce(l->nonce);
	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_HELLO;
	m.u.hello.version = WIRE_VERSION;
	m.u.hello.role = role;
	memcpy(m.u.hello.nonce, l->nonce, WIRE_NONCE_LEN);
	memcpy(m.u.hello.site, l->site, sizeof(l->site));
	r = queue_msg(l, &m, true, false);
	if (r < 0)
		goto err; /* -EINVAL: a site with control characters */

	l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->efd < 0) {
		r = -errno;
		goto err;
	}
	r = loop_add_fd(loop, &l->eh, l->efd, EPOLLIN, deferred_event, l);
	if (r < 0)
		goto err;
	/* EPOLLOUT: the connect result, then the HELLO. */
	r = loop_add_fd(loop, &l->h, l->fd, EPOLLIN | EPOLLOUT, socket_event, l);
	if (r < 0)
		goto err;
	r = loop_timer_start(loop, &l->timer, LINK_HANDSHAKE_TIMEOUT_MS, timer_fired, l);
	if (r < 0)
		goto err;
	*ret = l;
	return 0;
err:
	if (fd >= 0)
		close(fd);
	if (l) {
		teardown(l);
		destroy(l);
	}
	return r;
}

/* Leaves the loop and closes everything; no callback runs after this. */
static void
teardown(struct link *l)
{
	if (l->h.fd >= 0)
		loop_del_fd(l->loop, &l->h);
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	if (l->eh.fd >= 0)
		loop_del_fd(l->loop, &l->eh);
	if (l->efd >= 0)
		close(l->efd);
	l->efd = -1;
	timer_off(l);
	queue_free(l);
	l->state = LS_CLOSED;
	l->close_reported = true;
}

void
link_free(struct link *l)
{
	if (!l || l->is_freed)
		return;
	teardown(l);
	l->is_freed = true;
	if (!l->busy)
		destroy(l);
}

bool
link_can_send(struct link *l, size_t bytes)
{
	if (l->state != LS_OPEN || !l->is_ready)
		return false;
	if (l->queued <= LINK_MAX_QUEUED && bytes <= LINK_MAX_QUEUED - l->queued)
		return true;
	/* The caller waits for room: on_writable once the queue drains below
	 * half, even if it never went above half (a request for more than
	 * half the queue is refused below it too). */
	if (l->queued)
		l->is_above_half = true;
	return false;
}

bool
link_is_ready(const struct link *l)
{
	return l->state == LS_OPEN && l->is_ready;
}

const char *
link_peer(const struct link *l)
{
	return l->peer;
}

const char *
link_peer_site(const struct link *l)
{
	return l->peer_site;
}

const char *
link_close_reason(const struct link *l)
{
	return l->reason;
}

uint64_t
link_bytes_sent(const struct link *l)
{
	return l->bytes_sent;
}

uint64_t
link_bytes_received(const struct link *l)
{
	return l->bytes_received;
}

/* ---- Sockets for the daemon ---------------------------------------------- */

/* Splits "HOST:PORT" / "[V6]:PORT" / ":PORT" into host ("" = any) and port. */
static int
split_host_port(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon, *h = addr;
	size_t hlen;

	if (*addr == '[') {
		const char *end = strchr(addr, ']');

		if (!end || end[1] != ':')
			return -EINVAL;
		h = addr + 1;
		hlen = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -EINVAL;
		hlen = (size_t)(colon - addr);
	}
	if (hlen >= hostlen || strlen(colon + 1) >= portlen || !colon[1])
		return -EINVAL;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
	}
	if (strtoul(colon + 1, NULL, 10) > 65535)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
	return 0;
}

static int
resolve(const char *addr, bool passive, struct addrinfo **ret, char *err, size_t errlen)
{
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	char host[256], port[8];
	int r;

	if (!addr || split_host_port(addr, host, sizeof(host), port, sizeof(port)) < 0) {
		util_set_err(err, errlen, "bad address '%s' (expected HOST:PORT)",
		             addr ? addr : "");
		return -EINVAL;
	}
	if (!passive && !*host) {
		util_set_err(err, errlen, "bad address '%s': no host to connect to", addr);
		return -EINVAL;
	}
	/* XXX: blocks on a DNS lookup when HOST is a name; numeric addresses
	 * don't. The daemon resolves at (re)connect time only. */
	r = getaddrinfo(*host ? host : NULL, port, &hints, ret);
	if (r) {
		int e = r == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;

		util_set_err(err, errlen, "address '%s': %s", addr,
		             r == EAI_SYSTEM ? err_str(e) : gai_strerror(r));
		return e;
	}
	return 0;
}

int
link_dial(const char *addr, int *ret_fd, char *err, size_t errlen)
{
	struct addrinfo *res = NULL;
	int r, fd = -1;

	r = resolve(addr, false, &res, err, errlen);
	if (r < 0)
		return r;
	r = -EADDRNOTAVAIL;
	/* The first address whose connect starts wins. XXX: a connect that
	 * fails later doesn't fall back to the next address. */
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int one = 1;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		            ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
			r = 0;
			break;
		}
		r = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (r < 0) {
		util_set_err(err, errlen, "connect to '%s': %s", addr, err_str(r));
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int
link_listen(const char *addr, int *ret_fd, char *err, size_t errlen)
{
	struct addrinfo *res = NULL;
	int r, fd = -1;

	r = resolve(addr, true, &res, err, errlen);
	if (r < 0)
		return r;
	r = -EADDRNOTAVAIL;
	/* The first address that binds wins. */
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int one = 1;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		            ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		/* Restarting must not wait for TIME_WAIT connections to expire. */
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, LINK_LISTEN_BACKLOG) < 0) {
			r = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		r = 0;
		break;
	}
	freeaddrinfo(res);
	if (r < 0) {
		util_set_err(err, errlen, "listen on '%s': %s", addr, err_str(r));
		return r;
	}
	*ret_fd = fd;
	return 0;
}
