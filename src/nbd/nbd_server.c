/*
 * The NBD server: listeners, connections, the fixed-newstyle handshake and
 * the transmission phase, all on one event loop thread. Bytes are decoded by
 * nbd_proto.c; storage is the group layer (group_io_submit()).
 *
 * A connection (struct nbd_conn) moves through these input states:
 *
 *   CLIENT_FLAGS -> OPT_HDR <-> OPT_DATA | OPT_DRAIN        (handshake)
 *                      |  NBD_OPT_GO / NBD_OPT_EXPORT_NAME
 *                      v
 *                   REQ_HDR <-> REQ_PAYLOAD | REQ_DRAIN      (transmission)
 *                      |  NBD_CMD_DISC, NBD_OPT_ABORT, nbd_server_drop_volume()
 *                      v
 *                   FINISH: read nothing more; close once every reply is sent
 *   any state -> CLOSED: socket closed (hard disconnect, EOF, error)
 *
 * Read side: one receive buffer per connection (16 KiB in the handshake,
 * 256 KiB after), filled by recv() and parsed in one go, so a batch of
 * requests costs one syscall. A WRITE payload is copied into the request's
 * own 4096-aligned buffer, or received straight into it when a large part is
 * still to come. Requests go to the group as they are parsed; the group may
 * complete them in any order and NBD lets us reply in that order.
 *
 * Write side: completions only queue replies and mark the connection dirty.
 * The before-sleep hook then sends everything queued with one sendmsg() per
 * connection (header and READ data as separate iovecs: no copy), and waits
 * for EPOLLOUT when the socket is full.
 *
 * Bounds: per connection, at most NBD_CONN_MAX_INFLIGHT requests and
 * NBD_CONN_MAX_INFLIGHT_BYTES of buffers between header and reply sent; over
 * either, parsing stops and EPOLLIN is dropped until replies drain. Options
 * per handshake, option length, handshake time and connections are bounded
 * too.
 *
 * Lifetime: a struct nbd_req handed to the group belongs to it until its done
 * callback runs, and so does the connection it points to. Closing a socket
 * therefore never frees the connection: the hook frees it once nothing is in
 * the group, outside epoll dispatch, so no event is dispatched to a freed
 * struct loop_handle.
 *
 * Not done here: TLS, metadata contexts/block status, extended headers.
 */
#include "nbd/nbd_server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/compiler.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "group/group.h"
#include "nbd/nbd_proto.h"

#define NBD_SERVER_MAX_CONNS 1024u
#define NBD_MAX_LISTENERS 16u
#define NBD_LISTEN_BACKLOG 128
#define NBD_ACCEPT_BATCH 64
/* Receive buffer: small while only options can arrive, large for batching. */
#define NBD_RBUF_HANDSHAKE (16u << 10)
#define NBD_RBUF_TRANSMISSION (256u << 10)
#define NBD_MAX_OPTIONS 128u
/* An oversized option is skipped (then answered NBD_REP_ERR_TOO_BIG) up to
 * this size; beyond it the client is not worth reading: disconnect. */
#define NBD_OPT_DRAIN_MAX (1u << 20)
/* Handshake output queued at once (option replies the client doesn't read). */
#define NBD_WBUF_MAX (1u << 20)
#define NBD_CONN_MAX_INFLIGHT 128u
#define NBD_CONN_MAX_INFLIGHT_BYTES (128ull << 20)
/* A rejected WRITE's payload is skipped to keep the stream in sync up to this
 * size (twice the advertised maximum); a longer one means disconnect. */
#define NBD_WRITE_DRAIN_MAX (2u * NBD_MAX_BLOCK_SIZE)
/* Payload remainder received with recv() straight into the request buffer. */
#define NBD_DIRECT_RECV_MIN (64u << 10)
#define NBD_BUF_ALIGN 4096u
/* Idle requests kept per connection, and the largest buffer one keeps, so the
 * hot path rarely allocates while idle memory stays bounded. */
#define NBD_REQ_CACHE 32u
#define NBD_REQ_CACHE_BUF (1u << 20)
#define NBD_IOV_BATCH 128
#define NBD_READ_BUDGET 16 /* recv() calls per EPOLLIN before yielding */
#define NBD_SEND_ROUNDS 8  /* sendmsg() calls per flush, at most */
#define NBD_TIMER_MS 1000u
#define NBD_HANDSHAKE_TIMEOUT_NS (30ull * 1000000000ull)
#define NBD_FINISH_TIMEOUT_NS (60ull * 1000000000ull)
#define NBD_FREE_WAIT_NS (30ull * 1000000000ull)
#define NBD_WARN_PER_CONN 5u
#define NBD_GFLAGS ((uint16_t)(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))

enum conn_state {
	CS_CLIENT_FLAGS = 0,
	CS_OPT_HDR,
	CS_OPT_DATA,
	CS_OPT_DRAIN,
	CS_REQ_HDR,
	CS_REQ_PAYLOAD,
	CS_REQ_DRAIN,
	CS_FINISH,
	CS_CLOSED,
};

struct nbd_conn;

/* One transmission request, from its header to its reply being sent. */
struct nbd_req {
	struct group_io io;    /* owned by the group while in_group */
	struct nbd_conn *conn; /* never NULL */
	struct nbd_req *next;  /* reply queue or free list */
	uint64_t cookie;       /* echoed as-is */
	uint64_t offset;       /* bytes */
	uint32_t len;          /* bytes */
	uint16_t type;         /* NBD_CMD_* */
	uint16_t cmd_flags;    /* NBD_CMD_FLAG_* */
	uint32_t got;          /* WRITE payload bytes received so far */
	uint32_t error;        /* NBD_E* to answer, 0 = success */
	void *buf;             /* READ/WRITE data, NBD_BUF_ALIGN-aligned, buf_cap bytes */
	size_t buf_cap;
	uint64_t charged;  /* bytes counted in conn->inflight_bytes */
	bool in_group;     /* submitted, done not yet run */
	bool held;         /* answered, but the group still uses buf until release */
	bool put_pending;  /* finished while held: req_put() once released */
	uint32_t hdr_len;  /* reply header bytes in hdr */
	uint32_t data_len; /* reply payload bytes (READ data from buf) */
	uint8_t hdr[32];   /* encoded reply header */
};

/* Every field is touched only by the loop thread. */
struct nbd_conn {
	struct nbd_server *srv; /* NULL once orphaned by nbd_server_free() */
	struct nbd_conn *next, *prev;
	struct nbd_conn *dirty_next;
	bool is_dirty;
	unsigned id;
	int fd; /* -1 once closed */
	struct loop_handle h;
	char peer[INET6_ADDRSTRLEN + 8];
	enum conn_state state;
	uint64_t state_ns;     /* util_mono_ns() at accept / at entering FINISH */
	unsigned nopts;        /* options received */
	bool no_zeroes;        /* client agreed NBD_FLAG_C_NO_ZEROES */
	bool structured;       /* NBD_OPT_STRUCTURED_REPLY acknowledged */
	bool paused;           /* over the in-flight bounds: not parsing */
	bool write_blocked;    /* socket full: waiting for EPOLLOUT */
	struct volume *vol;    /* bound export (transmission), NULL after drop */
	uint16_t tflags;       /* transmission flags sent */
	struct nbd_option opt; /* option being received */
	uint64_t skip;         /* bytes still to discard (OPT_DRAIN, REQ_DRAIN) */
	struct nbd_req *cur;   /* request whose payload is being received or skipped */

	uint8_t *rbuf; /* input: rbuf[rpos, rlen) is received but not parsed */
	size_t rcap, rpos, rlen;
	uint8_t *wbuf; /* handshake output: wbuf[wpos, wlen) not sent yet */
	size_t wcap, wpos, wlen;
	struct nbd_req *rq_head, *rq_tail; /* replies to send, in completion order */
	size_t rq_sent;                    /* bytes of rq_head already sent */
	struct nbd_req *free_reqs;
	unsigned nfree;

	unsigned inflight;       /* requests between header and reply sent */
	uint64_t inflight_bytes; /* their buffers */
	unsigned in_group;       /* requests the group still owns */
	unsigned warnings;       /* rejected requests logged at warning level */
};

struct nbd_listener {
	struct nbd_server *srv;
	int fd;
	struct loop_handle h;
	bool is_unix;
	bool paused; /* EPOLLIN off after EMFILE; the timer turns it back on */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct nbd_server {
	struct loop *loop;
	struct nbd_server_ops ops;
	void *arg;
	struct nbd_listener *listeners[NBD_MAX_LISTENERS];
	unsigned nlisteners;
	struct nbd_conn *conns; /* every connection not yet freed */
	struct nbd_conn *dirty; /* connections the hook must look at */
	struct loop_hook hook;
	struct loop_timer timer;
	unsigned next_id;
	uint64_t refuse_log_ns; /* rate limit for "too many connections" */
	struct nbd_server_stats stats;
	struct nbd_opt_go go; /* scratch for option parsing (one thread) */
};

#define conn_log(lvl, c, fmt, ...)                                                                 \
	log_##lvl("nbd conn %u (%s): " fmt, (c)->id, (c)->peer, ##__VA_ARGS__)

static void conn_close(struct nbd_conn *c, const char *why);
static void conn_free(struct nbd_conn *c);
static void conn_parse(struct nbd_conn *c);
static void conn_flush(struct nbd_conn *c);

/* strerror() for -errno values; strerrordesc_np() is thread-safe. */
static const char *
err_str(int err)
{
	const char *d = strerrordesc_np(err < 0 ? -err : err);

	return d ? d : "unknown error";
}

/* Maximum block size of v: the group's limit on one READ/WRITE (it depends
 * on the journal size), at most NBD_MAX_BLOCK_SIZE. Advertised and enforced. */
static uint32_t
vol_max_block(const struct volume *v)
{
	if (v->max_request && v->max_request < NBD_MAX_BLOCK_SIZE)
		return v->max_request;
	return NBD_MAX_BLOCK_SIZE;
}

/* Length of a volume name (NUL-padded, at most sizeof(name) bytes). */
static int
vol_name_len(const struct volume *v)
{
	return (int)strnlen(v->name, sizeof(v->name));
}

/* A client-supplied name made safe for a log line. */
static const char *
printable(const char *in, char *out, size_t outlen)
{
	size_t i = 0;

	for (; *in && i + 4 < outlen; in++) {
		char ch = *in;

		if (ch < 0x20 || ch >= 0x7f)
			ch = '?';
		out[i++] = ch;
	}
	if (*in)
		for (int k = 0; k < 3; k++)
			out[i++] = '.';
	out[i] = '\0';
	return out;
}

/* ---- Connection bookkeeping --------------------------------------------- */

static void
conn_mark_dirty(struct nbd_conn *c)
{
	if (c->is_dirty || !c->srv)
		return;
	c->is_dirty = true;
	c->dirty_next = c->srv->dirty;
	c->srv->dirty = c;
	/* Completions may run from another before-sleep hook: run ours again. */
	loop_wakeup(c->srv->loop);
}

static bool
conn_over_bounds(const struct nbd_conn *c)
{
	return c->inflight >= NBD_CONN_MAX_INFLIGHT ||
	       c->inflight_bytes >= NBD_CONN_MAX_INFLIGHT_BYTES;
}

static bool
conn_can_read(const struct nbd_conn *c)
{
	return c->fd >= 0 && c->state < CS_FINISH && !c->paused;
}

static bool
conn_has_output(const struct nbd_conn *c)
{
	return c->wpos < c->wlen || c->rq_head;
}

static void
proto_error(struct nbd_conn *c, const char *what)
{
	if (c->srv)
		c->srv->stats.protocol_errors++;
	conn_log(warn, c, "%s, disconnecting", what);
	/* Best effort: what was answered before the fault still goes out. */
	conn_flush(c);
	conn_close(c, NULL);
}

static void
conn_unbind(struct nbd_conn *c)
{
	if (!c->vol)
		return;
	if (c->vol->nbd_conns)
		c->vol->nbd_conns--;
	c->vol = NULL;
}

/* ---- Requests ------------------------------------------------------------ */

static struct nbd_req *
req_get(struct nbd_conn *c)
{
	struct nbd_req *q = c->free_reqs;

	if (q) {
		c->free_reqs = q->next;
		c->nfree--;
	} else {
		q = calloc(1, sizeof(*q));
		if (!q)
			return NULL;
	}
	q->conn = c;
	q->next = NULL;
	q->got = 0;
	q->error = 0;
	q->charged = 0;
	q->in_group = false;
	q->held = false;
	q->put_pending = false;
	q->hdr_len = 0;
	q->data_len = 0;
	c->inflight++;
	return q;
}

/* Gives q a buffer of at least len bytes and charges it to the connection. */
static int
req_buf(struct nbd_conn *c, struct nbd_req *q, uint32_t len)
{
	size_t need = ALIGN_UP((size_t)len, (size_t)NBD_BUF_ALIGN);

	if (q->buf_cap < need) {
		free(q->buf);
		q->buf_cap = 0;
		q->buf = util_aligned_alloc(NBD_BUF_ALIGN, need);
		if (!q->buf)
			return -ENOMEM;
		q->buf_cap = need;
	}
	q->charged = need;
	c->inflight_bytes += need;
	return 0;
}

/* The request is finished (reply sent or dropped); the group no longer has it. */
static void
req_put(struct nbd_conn *c, struct nbd_req *q)
{
	if (q->held) {
		/* Answered early; its buffer is still on its way to the volume. */
		q->put_pending = true;
		return;
	}
	c->inflight--;
	c->inflight_bytes -= q->charged;
	q->charged = 0;
	if (c->nfree < NBD_REQ_CACHE && q->buf_cap <= NBD_REQ_CACHE_BUF) {
		q->next = c->free_reqs;
		c->free_reqs = q;
		c->nfree++;
	} else {
		free(q->buf);
		free(q);
	}
	if (c->paused && !conn_over_bounds(c))
		conn_mark_dirty(c);
}

/* Encodes the reply of a finished request and queues it. */
static void
req_reply(struct nbd_conn *c, struct nbd_req *q)
{
	if (c->structured && (q->error || q->type == NBD_CMD_READ)) {
		/* Structured: errors carry a chunk; READ must not use a simple reply. */
		if (q->error) {
			nbd_encode_structured_error((void *)q->hdr, q->cookie, q->error);
			q->hdr_len = sizeof(struct nbd_structured_error_hdr);
		} else if (q->len == 0) {
			/* OFFSET_DATA must hold at least one byte. */
			nbd_encode_structured_reply((void *)q->hdr, NBD_REPLY_FLAG_DONE,
			                            NBD_REPLY_TYPE_NONE, q->cookie, 0);
			q->hdr_len = sizeof(struct nbd_structured_reply_hdr);
		} else {
			nbd_encode_structured_read((void *)q->hdr, q->cookie, q->offset, q->len);
			q->hdr_len = sizeof(struct nbd_structured_read_hdr);
			q->data_len = q->len;
		}
	} else {
		nbd_encode_simple_reply((void *)q->hdr, q->error, q->cookie);
		q->hdr_len = sizeof(struct nbd_simple_reply_hdr);
		/* A failed READ sends no payload (simple replies can't say how long). */
		if (q->type == NBD_CMD_READ && !q->error)
			q->data_len = q->len;
	}
	_Static_assert(sizeof(struct nbd_structured_read_hdr) <= sizeof(q->hdr), "hdr room");
	_Static_assert(sizeof(struct nbd_structured_error_hdr) <= sizeof(q->hdr), "hdr room");
	q->next = NULL;
	if (c->rq_tail)
		c->rq_tail->next = q;
	else
		c->rq_head = q;
	c->rq_tail = q;
	conn_mark_dirty(c);
}

/* Group completion. Runs on the loop thread, never inside group_io_submit(). */
/* The group gave a request back to a connection that may be closed. */
static void
conn_group_returned(struct nbd_conn *c)
{
	if (!c->srv) {
		/* Orphaned by nbd_server_free(): the last completion frees it. */
		if (!c->in_group)
			conn_free(c);
		return;
	}
	conn_mark_dirty(c);
}

static void
req_done(struct group_io *io, int res)
{
	struct nbd_req *q = container_of(io, struct nbd_req, io);
	struct nbd_conn *c = q->conn;

	q->in_group = false;
	/* With release set, the group keeps the request (and its count in
	 * in_group) until req_release. */
	q->held = io->release != NULL;
	if (!q->held)
		c->in_group--;
	if (c->fd < 0) {
		/* Nobody to answer: the buffer is ours again (or once released). */
		req_put(c, q);
		conn_group_returned(c);
		return;
	}
	if (res < 0) {
		q->error = nbd_errno_to_wire(res);
		conn_log(debug, c, "%s offset %llu length %u failed: %s", nbd_cmd_name(q->type),
		         (unsigned long long)q->offset, q->len, err_str(res));
	}
	req_reply(c, q);
}

/* The group is done with a request it answered early (writes). */
static void
req_release(struct group_io *io, int res)
{
	struct nbd_req *q = container_of(io, struct nbd_req, io);
	struct nbd_conn *c = q->conn;

	(void)res;
	q->held = false;
	c->in_group--;
	if (q->put_pending) {
		q->put_pending = false;
		req_put(c, q);
	}
	conn_group_returned(c);
}

static void
req_submit(struct nbd_conn *c, struct nbd_req *q)
{
	struct group_io *io = &q->io;
	unsigned flags = 0;

	/* The group's private fields must start clean for every request. */
	memset(io, 0, sizeof(*io));
	if (q->cmd_flags & NBD_CMD_FLAG_FUA)
		flags |= GROUP_IO_FUA;
	switch (q->type) {
	case NBD_CMD_READ:
		io->op = GROUP_IO_READ;
		flags = 0; /* FUA means nothing to a read */
		break;
	case NBD_CMD_WRITE:
		io->op = GROUP_IO_WRITE;
		break;
	case NBD_CMD_TRIM:
		io->op = GROUP_IO_TRIM;
		break;
	case NBD_CMD_WRITE_ZEROES:
		io->op = GROUP_IO_ZERO;
		if (q->cmd_flags & NBD_CMD_FLAG_NO_HOLE)
			flags |= GROUP_IO_NO_HOLE;
		if (q->cmd_flags & NBD_CMD_FLAG_FAST_ZERO)
			flags |= GROUP_IO_FAST_ZERO;
		break;
	case NBD_CMD_FLUSH:
		io->op = GROUP_IO_FLUSH;
		flags = 0;
		break;
	default: /* NBD_CMD_CACHE: nbd_request_check() let nothing else through */
		io->op = GROUP_IO_CACHE;
		flags = 0;
		break;
	}
	io->flags = flags;
	io->vol = c->vol;
	io->offset = q->offset;
	io->len = q->len;
	io->buf = (q->type == NBD_CMD_READ || q->type == NBD_CMD_WRITE) ? q->buf : NULL;
	io->done = req_done;
	/* Writes are answered once durable in the journal, before the volume
	 * write lands (req_release frees them). */
	io->release = (q->type == NBD_CMD_WRITE || q->type == NBD_CMD_TRIM ||
	               q->type == NBD_CMD_WRITE_ZEROES)
	                  ? req_release
	                  : NULL;
	io->arg = q;
	q->in_group = true;
	c->in_group++;
	group_io_submit(c->vol->group, io);
}

static void
req_rejected(struct nbd_conn *c, const struct nbd_request *rq, int err)
{
	char name[24];

	if (rq->type <= NBD_CMD_RESIZE)
		snprintf(name, sizeof(name), "%s", nbd_cmd_name(rq->type));
	else
		snprintf(name, sizeof(name), "command %u", rq->type);
	c->srv->stats.protocol_errors++;
	if (c->warnings < NBD_WARN_PER_CONN) {
		c->warnings++;
		conn_log(warn, c, "%s offset %llu length %u flags 0x%x rejected: %s%s", name,
		         (unsigned long long)rq->offset, rq->len, rq->flags, err_str(err),
		         c->warnings == NBD_WARN_PER_CONN ? " (no more such warnings)" : "");
	} else {
		conn_log(debug, c, "%s offset %llu length %u flags 0x%x rejected: %s", name,
		         (unsigned long long)rq->offset, rq->len, rq->flags, err_str(err));
	}
}

/* A request header was parsed: reject, answer at once, or start it. */
static void
req_begin(struct nbd_conn *c, const struct nbd_request *rq)
{
	uint32_t payload = nbd_request_payload_len(rq);
	uint16_t tflags = c->tflags;
	struct nbd_req *q;
	int err;

	if (rq->type == NBD_CMD_DISC) {
		/* Answer what is in flight, then close (no reply to DISC itself). */
		conn_log(debug, c, "client sent NBD_CMD_DISC");
		c->state = CS_FINISH;
		c->state_ns = util_mono_ns();
		conn_mark_dirty(c); /* closes from the hook when nothing is left */
		return;
	}
	/* The volume may have turned read-only (role change) since the handshake. */
	if (c->vol->read_only)
		tflags |= NBD_FLAG_READ_ONLY;
	err = nbd_request_check(rq, c->vol->size, tflags, vol_max_block(c->vol));
	if (err < 0 && payload > NBD_WRITE_DRAIN_MAX) {
		/* Too much to skip: nothing valid is this long anyway. */
		proto_error(c, "WRITE payload too large to skip");
		return;
	}
	if (err < 0)
		req_rejected(c, rq, err);
	q = req_get(c);
	if (!q) {
		proto_error(c, "out of memory for a request");
		return;
	}
	q->cookie = rq->cookie;
	q->offset = rq->offset;
	q->len = rq->len;
	q->type = rq->type;
	q->cmd_flags = rq->flags;
	if (!err && rq->len && (rq->type == NBD_CMD_READ || rq->type == NBD_CMD_WRITE))
		err = req_buf(c, q, rq->len);
	if (err < 0) {
		q->error = nbd_errno_to_wire(err);
		/* The answer waits for the payload so the stream stays in sync. */
		if (payload) {
			c->cur = q;
			c->skip = payload;
			c->state = CS_REQ_DRAIN;
			return;
		}
		req_reply(c, q);
		return;
	}
	/* Zero length: valid but nothing to do (the spec leaves it open). */
	if (rq->len == 0 && rq->type != NBD_CMD_FLUSH) {
		req_reply(c, q);
		return;
	}
	if (rq->type == NBD_CMD_WRITE) {
		c->cur = q;
		c->state = CS_REQ_PAYLOAD;
		return;
	}
	req_submit(c, q);
}

static void
req_payload_done(struct nbd_conn *c)
{
	struct nbd_req *q = c->cur;

	c->cur = NULL;
	c->state = CS_REQ_HDR;
	req_submit(c, q);
}

/* ---- Handshake ----------------------------------------------------------- */

/* Room for need more bytes of handshake output, or NULL (connection closed). */
static uint8_t *
out_room(struct nbd_conn *c, size_t need)
{
	if (c->wpos == c->wlen)
		c->wpos = c->wlen = 0;
	if (c->wcap - c->wlen < need) {
		size_t cap = MAX(c->wcap * 2, (size_t)4096);
		uint8_t *p;

		while (cap - c->wlen < need)
			cap *= 2;
		if (cap > NBD_WBUF_MAX) {
			proto_error(c, "client does not read its option replies");
			return NULL;
		}
		p = realloc(c->wbuf, cap);
		if (!p) {
			proto_error(c, "out of memory for option replies");
			return NULL;
		}
		c->wbuf = p;
		c->wcap = cap;
	}
	return c->wbuf + c->wlen;
}

/* Accounts n bytes an encoder wrote at out_room(); false if it failed. */
static bool
out_commit(struct nbd_conn *c, int n)
{
	if (n < 0) {
		/* out_room() sized it: an encoder failing here is a bug of ours. */
		conn_log(err, c, "encoding an option reply failed: %s", err_str(n));
		conn_close(c, NULL);
		return false;
	}
	c->wlen += (size_t)n;
	conn_mark_dirty(c);
	return true;
}

static bool
opt_reply(struct nbd_conn *c, uint32_t option, uint32_t reply)
{
	const size_t need = sizeof(struct nbd_option_reply_hdr);
	uint8_t *p = out_room(c, need);

	return p && out_commit(c, nbd_encode_opt_reply(p, need, option, reply, NULL, 0));
}

static bool
opt_reply_info_string(struct nbd_conn *c, uint32_t option, uint16_t type, const char *s, size_t len)
{
	size_t need = sizeof(struct nbd_option_reply_hdr) + sizeof(uint16_t) + len;
	uint8_t *p = out_room(c, need);

	return p && out_commit(c, nbd_encode_rep_info_string(p, need, option, type, s, len));
}

struct list_ctx {
	struct nbd_conn *c;
	unsigned count;
	struct volume *only;
};

static int
list_one(void *arg, struct volume *v)
{
	struct list_ctx *ctx = arg;
	struct nbd_conn *c = ctx->c;
	size_t len = (size_t)vol_name_len(v);
	size_t need = sizeof(struct nbd_option_reply_hdr) + sizeof(uint32_t) + len;
	uint8_t *p = out_room(c, need);

	if (!p || !out_commit(c, nbd_encode_rep_server(p, need, NBD_OPT_LIST, v->name, len)))
		return -ENOBUFS;
	return 0;
}

static int
count_one(void *arg, struct volume *v)
{
	struct list_ctx *ctx = arg;

	ctx->count++;
	ctx->only = v;
	return 0;
}

/* The export named name; "" is the default export: the only volume, if one. */
static struct volume *
export_lookup(struct nbd_server *s, const char *name)
{
	struct volume *v = s->ops.lookup(s->arg, name);
	struct list_ctx ctx = {0};

	if (v || *name || !s->ops.list)
		return v;
	s->ops.list(s->arg, count_one, &ctx);
	return ctx.count == 1 ? ctx.only : NULL;
}

/* Enters transmission on v. */
static void
conn_bind(struct nbd_conn *c, struct volume *v, uint16_t tflags)
{
	c->vol = v;
	v->nbd_conns++;
	c->tflags = tflags;
	c->state = CS_REQ_HDR;
	conn_log(info, c, "export '%.*s' (%s, %s replies)", vol_name_len(v), v->name,
	         (tflags & NBD_FLAG_READ_ONLY) ? "read-only" : "read-write",
	         c->structured ? "structured" : "simple");
}

static void
opt_info_go(struct nbd_conn *c, uint32_t option, const uint8_t *data, uint32_t len)
{
	struct nbd_opt_go *go = &c->srv->go;
	struct volume *v;
	uint16_t tflags;
	size_t need;
	uint8_t *p;
	int r;

	r = nbd_parse_opt_go(data, len, go);
	if (r < 0) {
		c->srv->stats.protocol_errors++;
		conn_log(debug, c, "malformed %s", nbd_opt_name(option));
		opt_reply(c, option, r == -E2BIG ? NBD_REP_ERR_TOO_BIG : NBD_REP_ERR_INVALID);
		return;
	}
	v = export_lookup(c->srv, go->name);
	if (!v) {
		char safe[80];

		conn_log(info, c, "%s: no export '%s'", nbd_opt_name(option),
		         printable(go->name, safe, sizeof(safe)));
		opt_reply(c, option, NBD_REP_ERR_UNKNOWN);
		return;
	}
	tflags = nbd_export_flags(v->read_only);
	need = sizeof(struct nbd_option_reply_hdr) + sizeof(struct nbd_info_export_wire);
	p = out_room(c, need);
	if (!p || !out_commit(c, nbd_encode_rep_info_export(p, need, option, v->size, tflags)))
		return;
	if ((go->info_req & (1u << NBD_INFO_NAME)) &&
	    !opt_reply_info_string(c, option, NBD_INFO_NAME, v->name, (size_t)vol_name_len(v)))
		return;
	if (go->info_req & (1u << NBD_INFO_DESCRIPTION)) {
		char desc[128];

		snprintf(desc, sizeof(desc), "jrbd volume '%.*s'%s", vol_name_len(v), v->name,
		         v->read_only ? " (read-only)" : "");
		if (!opt_reply_info_string(c, option, NBD_INFO_DESCRIPTION, desc, strlen(desc)))
			return;
	}
	/* Always sent: clients that didn't ask may still use it, and it is the
	 * spec's default anyway except for the maximum. */
	need = sizeof(struct nbd_option_reply_hdr) + sizeof(struct nbd_info_block_size_wire);
	p = out_room(c, need);
	if (!p ||
	    !out_commit(c, nbd_encode_rep_info_block_size(p, need, option, NBD_MIN_BLOCK_SIZE,
	                                                  NBD_PREF_BLOCK_SIZE, vol_max_block(v))))
		return;
	if (!opt_reply(c, option, NBD_REP_ACK))
		return;
	if (option == NBD_OPT_GO)
		conn_bind(c, v, tflags);
}

static void
opt_export_name(struct nbd_conn *c, const uint8_t *data, uint32_t len)
{
	struct nbd_opt_go *go = &c->srv->go;
	struct nbd_export_name_reply_wire w;
	struct volume *v;
	size_t n;
	uint8_t *p;

	if (nbd_parse_opt_export_name(data, len, go->name) < 0) {
		/* This option can't be answered with an error: the spec says close. */
		proto_error(c, "malformed NBD_OPT_EXPORT_NAME");
		return;
	}
	v = export_lookup(c->srv, go->name);
	if (!v) {
		char safe[80];

		conn_log(info, c, "NBD_OPT_EXPORT_NAME: no export '%s', disconnecting",
		         printable(go->name, safe, sizeof(safe)));
		conn_close(c, NULL);
		return;
	}
	nbd_encode_export_name_reply(&w, v->size, nbd_export_flags(v->read_only));
	n = c->no_zeroes ? NBD_EXPORT_NAME_REPLY_SHORT : sizeof(w);
	p = out_room(c, n);
	if (!p)
		return;
	memcpy(p, &w, n);
	if (!out_commit(c, (int)n))
		return;
	conn_bind(c, v, nbd_export_flags(v->read_only));
}

/* A whole option (header and len bytes of data) has arrived. */
static void
opt_handle(struct nbd_conn *c, const uint8_t *data, uint32_t len)
{
	uint32_t option = c->opt.option;
	struct list_ctx ctx = {.c = c};

	c->state = CS_OPT_HDR;
	switch (option) {
	case NBD_OPT_EXPORT_NAME:
		opt_export_name(c, data, len);
		break;
	case NBD_OPT_ABORT:
		/* Data is ignored, as the spec asks. ACK, then close once sent. */
		conn_log(debug, c, "client sent NBD_OPT_ABORT");
		if (opt_reply(c, option, NBD_REP_ACK)) {
			c->state = CS_FINISH;
			c->state_ns = util_mono_ns();
		}
		break;
	case NBD_OPT_LIST:
		if (len) {
			opt_reply(c, option, NBD_REP_ERR_INVALID);
			break;
		}
		if (c->srv->ops.list && c->srv->ops.list(c->srv->arg, list_one, &ctx) < 0)
			break; /* out_room() closed the connection */
		if (c->fd >= 0)
			opt_reply(c, option, NBD_REP_ACK);
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		opt_info_go(c, option, data, len);
		break;
	case NBD_OPT_STRUCTURED_REPLY:
		if (len) {
			opt_reply(c, option, NBD_REP_ERR_INVALID);
			break;
		}
		c->structured = true;
		opt_reply(c, option, NBD_REP_ACK);
		break;
	default:
		/* STARTTLS (NOTLS mode), metadata contexts, extended headers,
		 * and anything unknown. */
		conn_log(debug, c, "%s (%u) not supported", nbd_opt_name(option), option);
		opt_reply(c, option, NBD_REP_ERR_UNSUP);
		break;
	}
}

/* An option header has arrived: decide how to read its data. */
static void
opt_begin(struct nbd_conn *c)
{
	if (++c->nopts > NBD_MAX_OPTIONS) {
		/* The spec lets a server hang up on a client it deems abusive. */
		proto_error(c, "too many options in the handshake");
		return;
	}
	if (c->opt.option == NBD_OPT_EXPORT_NAME && c->opt.len > NBD_MAX_STRING) {
		proto_error(c, "NBD_OPT_EXPORT_NAME name too long");
		return;
	}
	if (c->opt.len > NBD_MAX_OPTION_LEN) {
		if (c->opt.len > NBD_OPT_DRAIN_MAX) {
			proto_error(c, "option data too long");
			return;
		}
		conn_log(debug, c, "%s with %u bytes of data, skipping",
		         nbd_opt_name(c->opt.option), c->opt.len);
		c->skip = c->opt.len;
		c->state = CS_OPT_DRAIN;
		return;
	}
	c->state = CS_OPT_DATA;
}

/* ---- Input --------------------------------------------------------------- */

static void
rbuf_consume(struct nbd_conn *c, size_t n)
{
	c->rpos += n;
	if (c->rpos == c->rlen)
		c->rpos = c->rlen = 0;
}

/* Parses everything buffered, as far as the state allows. */
static void
conn_parse(struct nbd_conn *c)
{
	while (c->fd >= 0 && !c->paused) {
		const uint8_t *p = c->rbuf + c->rpos;
		size_t avail = c->rlen - c->rpos;
		struct nbd_request rq;
		uint32_t flags;
		size_t n;
		int r;

		switch (c->state) {
		case CS_CLIENT_FLAGS:
			r = nbd_parse_client_flags(p, avail, NBD_GFLAGS, &flags);
			if (r == -EAGAIN)
				return;
			if (r < 0) {
				proto_error(c, "bad client flags");
				return;
			}
			rbuf_consume(c, (size_t)r);
			c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
			c->state = CS_OPT_HDR;
			break;
		case CS_OPT_HDR:
			r = nbd_parse_option_hdr(p, avail, &c->opt);
			if (r == -EAGAIN)
				return;
			if (r < 0) {
				proto_error(c, "bad option magic");
				return;
			}
			rbuf_consume(c, (size_t)r);
			opt_begin(c);
			break;
		case CS_OPT_DATA:
			if (avail < c->opt.len)
				return;
			/* Consume first: the data stays in place until the next recv(). */
			rbuf_consume(c, c->opt.len);
			opt_handle(c, p, c->opt.len);
			if (c->fd >= 0 && c->state == CS_REQ_HDR &&
			    c->rcap < NBD_RBUF_TRANSMISSION) {
				uint8_t *nb = realloc(c->rbuf, NBD_RBUF_TRANSMISSION);

				if (!nb) {
					proto_error(c, "out of memory for the receive buffer");
					return;
				}
				c->rbuf = nb;
				c->rcap = NBD_RBUF_TRANSMISSION;
			}
			break;
		case CS_OPT_DRAIN:
			n = (size_t)MIN((uint64_t)avail, c->skip);
			rbuf_consume(c, n);
			c->skip -= n;
			if (c->skip)
				return;
			c->state = CS_OPT_HDR;
			opt_reply(c, c->opt.option, NBD_REP_ERR_TOO_BIG);
			break;
		case CS_REQ_HDR:
			if (conn_over_bounds(c)) {
				/* Resumed by req_put() through the hook. */
				c->paused = true;
				return;
			}
			r = nbd_parse_request(p, avail, &rq);
			if (r == -EAGAIN)
				return;
			if (r < 0) {
				proto_error(c, "bad request magic");
				return;
			}
			rbuf_consume(c, (size_t)r);
			req_begin(c, &rq);
			break;
		case CS_REQ_PAYLOAD:
			assert(c->cur); /* set with the state by req_begin() */
			n = MIN(avail, (size_t)(c->cur->len - c->cur->got));
			memcpy((uint8_t *)c->cur->buf + c->cur->got, p, n);
			c->cur->got += (uint32_t)n;
			rbuf_consume(c, n);
			if (c->cur->got < c->cur->len)
				return;
			req_payload_done(c);
			break;
		case CS_REQ_DRAIN:
			assert(c->cur);
			n = (size_t)MIN((uint64_t)avail, c->skip);
			rbuf_consume(c, n);
			c->skip -= n;
			if (c->skip)
				return;
			c->state = CS_REQ_HDR;
			req_reply(c, c->cur);
			c->cur = NULL;
			break;
		default:
			return;
		}
	}
}

static void
conn_read(struct nbd_conn *c)
{
	for (int i = 0; i < NBD_READ_BUDGET && conn_can_read(c); i++) {
		struct nbd_req *q = c->cur;
		size_t want;
		ssize_t n;

		if (c->state == CS_REQ_PAYLOAD && c->rpos == c->rlen &&
		    q->len - q->got >= NBD_DIRECT_RECV_MIN) {
			/* Large payload: straight into the request buffer, no copy. */
			want = q->len - q->got;
			n = recv(c->fd, (uint8_t *)q->buf + q->got, want, 0);
			if (n > 0) {
				q->got += (uint32_t)n;
				if (q->got == q->len)
					req_payload_done(c);
			}
		} else {
			if (c->rpos) {
				/* At most a partial header or option: cheap to move. */
				memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
				c->rlen -= c->rpos;
				c->rpos = 0;
			}
			want = c->rcap - c->rlen;
			if (!want)
				return;
			n = recv(c->fd, c->rbuf + c->rlen, want, 0);
			if (n > 0) {
				c->rlen += (size_t)n;
				conn_parse(c);
			}
		}
		if (n == 0) {
			conn_close(c, c->state == CS_REQ_HDR && !c->inflight
			                  ? "client closed the connection"
			                  : "client closed the connection mid-request");
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			if (errno == ECONNRESET)
				conn_close(c, "connection reset by the client");
			else
				conn_log(info, c, "recv: %m");
			conn_close(c, NULL);
			return;
		}
		if ((size_t)n < want)
			return; /* the socket is most likely empty: skip the EAGAIN call */
	}
}

/* ---- Output -------------------------------------------------------------- */

/* n bytes were sent: release what they completed. */
static void
out_advance(struct nbd_conn *c, size_t n)
{
	size_t k = MIN(n, c->wlen - c->wpos);

	c->wpos += k;
	n -= k;
	if (c->wpos == c->wlen)
		c->wpos = c->wlen = 0;
	/* sendmsg() never reports more than the iovecs held: rq_head exists. */
	while (n && c->rq_head) {
		struct nbd_req *q = c->rq_head;
		size_t left = q->hdr_len + q->data_len - c->rq_sent;

		if (n < left) {
			c->rq_sent += n;
			return;
		}
		n -= left;
		c->rq_sent = 0;
		c->rq_head = q->next;
		if (!c->rq_head)
			c->rq_tail = NULL;
		req_put(c, q);
	}
}

/* Sends queued output, one sendmsg() per batch of up to NBD_IOV_BATCH iovecs. */
static void
conn_flush(struct nbd_conn *c)
{
	for (int round = 0; round < NBD_SEND_ROUNDS; round++) {
		struct iovec iov[NBD_IOV_BATCH];
		struct msghdr msg = {.msg_iov = iov};
		size_t off = c->rq_sent, total = 0;
		int n = 0;
		ssize_t w;

		if (c->fd < 0 || c->write_blocked || !conn_has_output(c))
			return;
		if (c->wpos < c->wlen)
			iov[n++] = (struct iovec){c->wbuf + c->wpos, c->wlen - c->wpos};
		for (struct nbd_req *q = c->rq_head; q && n + 2 <= NBD_IOV_BATCH; q = q->next) {
			if (off < q->hdr_len)
				iov[n++] = (struct iovec){q->hdr + off, q->hdr_len - off};
			off = off > q->hdr_len ? off - q->hdr_len : 0;
			if (off < q->data_len)
				iov[n++] =
				    (struct iovec){(uint8_t *)q->buf + off, q->data_len - off};
			off = 0;
		}
		for (int i = 0; i < n; i++)
			total += iov[i].iov_len;
		msg.msg_iovlen = (size_t)n;
		/* MSG_NOSIGNAL: a vanished client is an error return, not SIGPIPE. */
		w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				c->write_blocked = true;
				return;
			}
			if (errno == EPIPE || errno == ECONNRESET)
				conn_close(c, "client closed the connection");
			else
				conn_log(info, c, "send: %m");
			conn_close(c, NULL);
			return;
		}
		out_advance(c, (size_t)w);
		if ((size_t)w < total) {
			/* Socket buffer full: EPOLLOUT says when to go on. */
			c->write_blocked = true;
			return;
		}
	}
}

static void
conn_update_events(struct nbd_conn *c)
{
	uint32_t ev = 0;
	int r;

	if (c->fd < 0 || !c->srv)
		return;
	if (conn_can_read(c))
		ev |= EPOLLIN;
	if (c->write_blocked && conn_has_output(c))
		ev |= EPOLLOUT;
	r = loop_mod_fd(c->srv->loop, &c->h, ev);
	if (r < 0) {
		conn_log(warn, c, "epoll: %s", err_str(r));
		conn_close(c, NULL);
	}
}

/* ---- Connection lifecycle ------------------------------------------------ */

/*
 * Hard close of the socket (why: logged at info level, or NULL when already
 * logged). Queued replies are dropped; requests the group still owns stay
 * until their completion, and so does the connection, which the hook frees.
 */
static void
conn_close(struct nbd_conn *c, const char *why)
{
	struct nbd_req *q;

	if (c->fd < 0)
		return;
	if (why)
		conn_log(info, c, "%s", why);
	if (c->srv) {
		loop_del_fd(c->srv->loop, &c->h);
		c->srv->stats.connections--;
	}
	close(c->fd);
	c->fd = -1;
	c->state = CS_CLOSED;
	conn_unbind(c);
	if (c->cur) {
		/* Its payload was still arriving: the group never saw it. */
		req_put(c, c->cur);
		c->cur = NULL;
	}
	while ((q = c->rq_head)) {
		c->rq_head = q->next;
		req_put(c, q);
	}
	c->rq_tail = NULL;
	c->rq_sent = 0;
	c->wpos = c->wlen = 0;
	c->paused = false;
	conn_mark_dirty(c);
}

static void
conn_free(struct nbd_conn *c)
{
	struct nbd_req *q;

	if (c->prev)
		c->prev->next = c->next;
	else if (c->srv)
		c->srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	while ((q = c->free_reqs)) {
		c->free_reqs = q->next;
		free(q->buf);
		free(q);
	}
	free(c->rbuf);
	free(c->wbuf);
	free(c);
}

/* Hook work for one connection: resume, send, finish. */
static void
conn_work(struct nbd_conn *c)
{
	conn_flush(c);
	if (c->paused && c->fd >= 0 && !conn_over_bounds(c)) {
		c->paused = false;
		conn_parse(c);
		conn_flush(c);
	}
	if (c->fd >= 0 && c->state == CS_FINISH && !c->inflight && !conn_has_output(c)) {
		conn_log(debug, c, "disconnect complete");
		conn_close(c, "client disconnected");
		return;
	}
	conn_update_events(c);
}

/* Before-sleep hook: replies go out once per loop iteration, and closed
 * connections are freed here, where no epoll event can refer to them. */
static void
server_hook(struct loop *loop, void *arg)
{
	struct nbd_server *s = arg;
	struct nbd_conn *c;

	(void)loop;
	while ((c = s->dirty)) {
		s->dirty = c->dirty_next;
		c->is_dirty = false;
		conn_work(c);
		/* Marked dirty again while working: it comes round once more. */
		if (c->fd < 0 && !c->in_group && !c->is_dirty)
			conn_free(c);
	}
}

static void
conn_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct nbd_conn *c = arg;

	(void)loop;
	(void)fd;
	if (events & EPOLLOUT) {
		c->write_blocked = false;
		conn_flush(c);
	}
	if (conn_can_read(c) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		conn_read(c);
	} else if (c->fd >= 0 && (events & (EPOLLHUP | EPOLLERR))) {
		/* Not reading (paused or finishing) and the peer is gone. */
		conn_close(c, "connection lost");
	}
	conn_update_events(c);
}

static int
conn_new(struct nbd_server *s, int fd, const char *peer)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));
	struct nbd_handshake_hdr hs;
	int r;

	if (!c)
		return -ENOMEM;
	c->srv = s;
	c->fd = fd;
	c->id = ++s->next_id;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->state = CS_CLIENT_FLAGS;
	c->state_ns = util_mono_ns();
	c->rbuf = malloc(NBD_RBUF_HANDSHAKE);
	c->wbuf = malloc(4096);
	if (!c->rbuf || !c->wbuf) {
		r = -ENOMEM;
		goto err;
	}
	c->rcap = NBD_RBUF_HANDSHAKE;
	c->wcap = 4096;
	nbd_encode_handshake(&hs, NBD_GFLAGS);
	memcpy(c->wbuf, &hs, sizeof(hs));
	c->wlen = sizeof(hs);
	r = loop_add_fd(s->loop, &c->h, fd, EPOLLIN, conn_event, c);
	if (r < 0)
		goto err;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->stats.connections++;
	s->stats.accepted++;
	conn_log(debug, c, "connected");
	conn_mark_dirty(c); /* sends the greeting from the hook */
	return 0;
err:
	free(c->rbuf);
	free(c->wbuf);
	free(c);
	return r;
}

/* ---- Listeners ----------------------------------------------------------- */

static void
format_peer(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, len, "unix");
	}
}

static void
listener_pause(struct nbd_listener *l, bool paused)
{
	if (l->paused == paused || l->fd < 0)
		return;
	if (loop_mod_fd(l->srv->loop, &l->h, paused ? 0 : EPOLLIN) == 0)
		l->paused = paused;
}

static void
listener_event(struct loop *loop, int lfd, uint32_t events, void *arg)
{
	struct nbd_listener *l = arg;
	struct nbd_server *s = l->srv;

	(void)loop;
	(void)events;
	for (int i = 0; i < NBD_ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[INET6_ADDRSTRLEN + 8];
		int fd, r, one = 1;

		memset(&ss, 0, sizeof(ss));
		fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			/* Out of descriptors or memory: level-triggered epoll would
			 * spin, so stop listening until the next timer tick. */
			log_warn("nbd: accept: %m, pausing new connections for %u ms",
			         NBD_TIMER_MS);
			listener_pause(l, true);
			return;
		}
		format_peer(&ss, peer, sizeof(peer));
		if (s->stats.connections >= NBD_SERVER_MAX_CONNS) {
			uint64_t now = util_mono_ns();

			if (now - s->refuse_log_ns > 1000000000ull) {
				log_warn("nbd: %u connections open, refusing %s",
				         s->stats.connections, peer);
				s->refuse_log_ns = now;
			}
			close(fd);
			continue;
		}
		/* Replies are small and latency-bound: no Nagle delay. */
		if (!l->is_unix)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		r = conn_new(s, fd, peer);
		if (r < 0) {
			log_warn("nbd: connection from %s: %s, closing", peer, err_str(r));
			close(fd);
		}
	}
}

static void
server_timer(struct loop *loop, void *arg)
{
	struct nbd_server *s = arg;
	uint64_t now = util_mono_ns();

	(void)loop;
	for (unsigned i = 0; i < s->nlisteners; i++)
		listener_pause(s->listeners[i], false);
	for (struct nbd_conn *c = s->conns; c; c = c->next) {
		if (c->fd < 0)
			continue;
		/* A client that never finishes the handshake holds a slot forever. */
		if (c->state < CS_REQ_HDR && now - c->state_ns > NBD_HANDSHAKE_TIMEOUT_NS)
			conn_close(c, "handshake timed out");
		/* Finishing, but the client doesn't read its last replies. */
		else if (c->state == CS_FINISH && now - c->state_ns > NBD_FINISH_TIMEOUT_NS)
			conn_close(c, "timed out sending the last replies");
	}
}

/* Splits "HOST:PORT" / "[V6]:PORT" / ":PORT" into host (NULL: any) and port. */
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
	for (const char *p = colon + 1; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	if (strtoul(colon + 1, NULL, 10) > 65535)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
	return 0;
}

static int
listen_tcp(const char *addr, int *ret_fd)
{
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	};
	struct addrinfo *res = NULL;
	char host[256], port[8];
	int r, fd = -1;

	r = split_host_port(addr, host, sizeof(host), port, sizeof(port));
	if (r < 0)
		return r;
	r = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (r)
		return r == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
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
		    listen(fd, NBD_LISTEN_BACKLOG) < 0) {
			r = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		r = 0;
		break;
	}
	freeaddrinfo(res);
	if (r == 0)
		*ret_fd = fd;
	return r;
}

static int
listen_unix(const char *path, int *ret_fd)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (!*path)
		return -EINVAL;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		int probe;

		/* Only ever remove a socket, and only a dead one. */
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (probe < 0)
			return -errno;
		r = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
		if (r == 0 || errno == EAGAIN) {
			close(probe);
			return -EADDRINUSE;
		}
		close(probe);
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, NBD_LISTEN_BACKLOG) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int
nbd_server_listen(struct nbd_server *s, const char *addr)
{
	struct nbd_listener *l;
	bool is_unix = !strncmp(addr, "unix:", 5);
	int fd = -1, r;

	if (s->nlisteners == NBD_MAX_LISTENERS)
		return -EMFILE;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	r = is_unix ? listen_unix(addr + 5, &fd) : listen_tcp(addr, &fd);
	if (r < 0) {
		free(l);
		return r;
	}
	l->srv = s;
	l->fd = fd;
	l->is_unix = is_unix;
	if (is_unix)
		snprintf(l->path, sizeof(l->path), "%s", addr + 5);
	r = loop_add_fd(s->loop, &l->h, fd, EPOLLIN, listener_event, l);
	if (r < 0) {
		close(fd);
		if (is_unix)
			unlink(l->path);
		free(l);
		return r;
	}
	s->listeners[s->nlisteners++] = l;
	log_info("nbd: listening on %s", addr);
	return 0;
}

int
nbd_server_bound_addr(const struct nbd_server *s, unsigned i, char *buf, size_t len)
{
	const struct nbd_listener *l;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char tmp[sizeof(l->path) + 8];

	if (i >= s->nlisteners)
		return -ENOENT;
	l = s->listeners[i];
	if (l->is_unix) {
		snprintf(tmp, sizeof(tmp), "unix:%s", l->path);
	} else {
		memset(&ss, 0, sizeof(ss));
		if (getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0)
			return -errno;
		format_peer(&ss, tmp, sizeof(tmp));
	}
	if (strlen(tmp) >= len)
		return -ENAMETOOLONG;
	memcpy(buf, tmp, strlen(tmp) + 1);
	return 0;
}

/* ---- Server -------------------------------------------------------------- */

int
nbd_server_new(struct loop *loop, const struct nbd_server_ops *ops, void *arg,
               struct nbd_server **ret)
{
	struct nbd_server *s;
	int r;

	if (!loop || !ops || !ops->lookup)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->ops = *ops;
	s->arg = arg;
	s->timer.fd = -1;
	r = loop_timer_start(loop, &s->timer, NBD_TIMER_MS, server_timer, s);
	if (r < 0) {
		free(s);
		return r;
	}
	loop_add_hook(loop, &s->hook, server_hook, s);
	*ret = s;
	return 0;
}

void
nbd_server_free(struct nbd_server *s)
{
	uint64_t deadline = util_mono_ns() + NBD_FREE_WAIT_NS;
	struct nbd_conn *c;
	unsigned orphans = 0;

	if (!s)
		return;
	loop_timer_stop(s->loop, &s->timer);
	for (unsigned i = 0; i < s->nlisteners; i++) {
		struct nbd_listener *l = s->listeners[i];

		loop_del_fd(s->loop, &l->h);
		close(l->fd);
		if (l->is_unix)
			unlink(l->path);
		free(l);
	}
	s->nlisteners = 0;
	for (c = s->conns; c; c = c->next)
		conn_close(c, "server shutting down");
	/* The group owns buffers of requests in flight: let them complete
	 * (the hook frees each connection as it empties). Bounded. */
	while (s->conns && util_mono_ns() < deadline) {
		bool busy = false;

		server_hook(s->loop, s);
		for (c = s->conns; c; c = c->next)
			busy |= c->in_group > 0;
		if (!busy)
			break;
		if (loop_run_once(s->loop, 100) < 0)
			break;
	}
	server_hook(s->loop, s);
	/* Whatever is still in the group is left to free itself on completion. */
	while ((c = s->conns)) {
		s->conns = c->next;
		c->prev = c->next = NULL;
		c->srv = NULL;
		if (c->in_group) {
			orphans++;
		} else {
			conn_free(c);
		}
	}
	if (orphans)
		log_warn("nbd: %u connections still have I/O in flight after %llu s, leaving them",
		         orphans, (unsigned long long)(NBD_FREE_WAIT_NS / 1000000000ull));
	loop_del_hook(s->loop, &s->hook);
	free(s);
}

unsigned
nbd_server_drop_volume(struct nbd_server *s, struct volume *v)
{
	unsigned n = 0;

	for (struct nbd_conn *c = s->conns; c; c = c->next) {
		if (c->fd < 0 || c->vol != v)
			continue;
		n++;
		conn_log(info, c, "export '%.*s' removed, disconnecting", vol_name_len(v), v->name);
		/* From here on nothing may touch v: its group is going away. */
		conn_unbind(c);
		if (c->cur) {
			req_put(c, c->cur);
			c->cur = NULL;
		}
		/* Replies of requests in flight still go out, then the socket closes. */
		c->state = CS_FINISH;
		c->state_ns = util_mono_ns();
		conn_mark_dirty(c);
	}
	return n;
}

void
nbd_server_get_stats(const struct nbd_server *s, struct nbd_server_stats *ret)
{
	*ret = s->stats;
}
