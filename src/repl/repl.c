/*
 * Pairs: the primary's sender and copier, the secondary's puller and
 * replayer, and the connections between them (see repl.h for the story).
 *
 * A `struct conn` wraps every link, dialed or accepted; an accepted one is
 * bound to a pair when its first message (PAIR_CREATE/PAIR_ATTACH) names
 * one. A `struct pair` outlives its links and is freed only when nothing it
 * started (journal reads, BASE and REPLAY requests) is still in flight:
 * detaching marks it a zombie and the last completion frees it.
 *
 * Generations: a journal read started for one link must not answer on the
 * next one (its request ids mean nothing there), so replies carry the link
 * generation they were read for.
 */
#include "repl/repl.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include "common/checked.h"
#include "common/compiler.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "journal/journal.h"
#include "repl/auth.h"
#include "repl/link.h"
#include "repl/reorder.h"
#include "repl/wire_codec.h"

#define MiB (1u << 20)
#define REPL_MAX_WINDOW 6u           /* READ_JOURNAL in flight: replies fit the link queue */
#define REPL_MAX_QUEUED 16u          /* requests the primary holds per link */
#define REPL_MAX_READS 4u            /* journal reads in flight per pair */
#define REPL_LONG_POLL_MS 500u       /* an empty answer after this long without records */
#define REPL_COPY_DEPTH 4u           /* BASE chunks in flight */
#define REPL_COPY_JOURNAL_PCT 40u    /* the copy waits while the journal is fuller */
#define REPL_CREATE_TIMEOUT_MS 60000u
#define REPL_BACKOFF_MIN_MS 200u
#define REPL_BACKOFF_MAX_MS 5000u
#define REPL_TICK_MS 100u
#define REPL_SECONDARY_BUDGET (96u * MiB) /* bytes received but not yet restored, plus requests */
#define REPL_REPLAY_MAX_BYTES (32u * MiB)
#define REPL_REPLAY_MAX_COUNT 4096u
#define REPL_TS_RING 64u
/* zstd's fast mode: compression runs on the loop thread, and at level 1 a
 * 4 MiB batch costs ~10 ms there; -3 is several times faster and still
 * halves data that compresses 2:1. */
#define REPL_ZSTD_DEFAULT_LEVEL (-3)

struct pair;
struct repl;

struct conn {
	struct repl *r;
	struct link *link;
	struct pair *p; /* bound pair, or NULL */
	bool dialed;
	bool dead;      /* closed: freed from the hook */
	struct conn *next;
};

struct jread {
	struct journal_read_req jr;
	struct pair *p;
	uint64_t req_id;
	uint64_t gen;
	uint8_t *buf; /* WIRE_MAX_DATA */
	bool busy;
};

struct copy_io {
	struct group_io io;
	struct pair *p;
	uint8_t *buf; /* JOURNAL_MAX_PAYLOAD, aligned */
	unsigned vol;
	uint64_t off;
	bool busy;
};

struct replay {
	struct group_io io;
	struct pair *p;
	uint32_t bytes;
};

struct rbatch {
	struct reorder_batch rb; /* first */
	uint8_t *data;
	uint32_t len;
	uint64_t newest_ts;
	size_t pos;      /* delivery cursor */
	uint64_t expect; /* seq at pos */
};

struct pair {
	struct repl *r;
	struct group *g;
	struct group_pair_config pc;
	struct pair *next;
	struct conn *conn; /* current link, or NULL */
	uint64_t gen;      /* bumped per bound link */
	bool ready;        /* named and accepted: records may flow */
	bool zombie;
	unsigned busy;     /* reads, copies, replays in flight */
	char error[256];   /* last problem, shown by display */

	/* Primary: connection and create. */
	uint64_t next_dial_ms;
	unsigned backoff_ms;
	repl_create_cb *create_cb;
	void *create_arg;
	uint64_t create_deadline_ms;

	/* Primary: serving read-journal. */
	uint64_t cursor;
	struct wire_read_journal reqs[REPL_MAX_QUEUED];
	uint64_t req_deadline_ms[REPL_MAX_QUEUED];
	unsigned nreqs;
	struct jread reads[REPL_MAX_READS];
	uint64_t remote_received, remote_restored, remote_restored_ts;
	ZSTD_CCtx *cctx;
	uint8_t *cbuf;
	size_t cbuf_cap;
	unsigned comp_misses, comp_skip;
	uint64_t raw_bytes, sent_data_bytes, batches_sent;
	uint64_t last_status_ms;

	/* Primary: initial copy. */
	struct copy_io copies[REPL_COPY_DEPTH];
	unsigned copy_vol;
	uint64_t copy_off;
	uint64_t copy_max_seq;
	uint64_t copy_total;
	uint64_t copy_rate; /* bytes/s */
	uint64_t copy_rate_done, copy_rate_ms;
	bool copy_failed;
	struct group_pair_config saved; /* what is on disk */

	/* Secondary. */
	struct reorder ro;
	struct rbatch *cur;
	uint64_t next_req_id;
	uint64_t out_ids[REPL_MAX_WINDOW];
	unsigned nout;
	uint64_t replay_bytes;
	unsigned nreplay;
	uint64_t sent_received, sent_restored;
	struct {
		uint64_t seq, ts;
	} ts_ring[REPL_TS_RING];
	unsigned ts_n;
	uint64_t restored_ts;
	ZSTD_DCtx *dctx;
	uint64_t batches_received, batches_early, bytes_received_raw;
	struct wire_primary_status pstat;
	bool have_pstat;
};

struct repl {
	struct loop *loop;
	struct io_engine *io;
	const struct repl_ops *ops;
	void *arg;
	struct repl_opts opts;
	char site[WIRE_SITE_LEN];
	struct auth_key key;
	bool have_key;
	int listen_fd;
	struct loop_handle listen_h;
	struct loop_timer tick;
	struct loop_hook hook;
	struct conn *conns;
	struct pair *pairs;
	struct pair *zombies;
};

static uint64_t
now_ms(void)
{
	return util_mono_ns() / 1000000u;
}

static void pair_free(struct pair *p);

static void
pair_error(struct pair *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
pair_error(struct pair *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->error, sizeof(p->error), fmt, ap);
	va_end(ap);
	log_warn("group '%s': pair: %s", group_name(p->g), p->error);
}

static void
pair_save(struct pair *p)
{
	int r;

	if (memcmp(&p->saved, &p->pc, sizeof(p->pc)) == 0)
		return;
	r = p->r->ops->save(p->r->arg, p->g, &p->pc);
	if (r < 0) {
		log_errno(r, "group '%s': cannot persist the pair's state", group_name(p->g));
		return;
	}
	p->saved = p->pc;
}

/* A pair is freed once detached and idle. */
static void
pair_put(struct pair *p)
{
	if (p->zombie && p->busy == 0)
		pair_free(p);
}

static struct pair *
pair_find(struct repl *r, const struct group *g)
{
	for (struct pair *p = r->pairs; p; p = p->next) {
		if (p->g == g)
			return p;
	}
	return NULL;
}

static void
conn_drop(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	if (c->p) {
		if (c->p->conn == c) {
			c->p->conn = NULL;
			c->p->ready = false;
		}
		c->p = NULL;
	}
	loop_wakeup(c->r->loop);
}

static int
send_msg(struct pair *p, const struct wire_msg *m)
{
	if (!p->conn || p->conn->dead)
		return -ENOTCONN;
	return link_send(p->conn->link, m);
}

static void
fail_link(struct pair *p, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
fail_link(struct pair *p, int err, const char *fmt, ...)
{
	va_list ap;
	struct conn *c = p->conn;

	va_start(ap, fmt);
	vsnprintf(p->error, sizeof(p->error), fmt, ap);
	va_end(ap);
	log_warn("group '%s': pair: %s", group_name(p->g), p->error);
	if (c && !c->dead) {
		link_fail(c->link, err, "%s", p->error);
		conn_drop(c);
	}
}

/* ------------------------------------------------------------------ */
/* Primary: serving read-journal                                       */
/* ------------------------------------------------------------------ */

static void
remote_progress(struct pair *p, uint64_t received, uint64_t restored, uint64_t restored_ts)
{
	struct journal *j = group_journal(p->g);
	struct journal_stats js;

	journal_get_stats(j, &js);
	if (restored > received || received >= js.next_seq) {
		fail_link(p, EPROTO, "secondary reports received %" PRIu64 " / restored %" PRIu64
			  ", but the primary has written only up to %" PRIu64,
			  received, restored, js.next_seq - 1);
		return;
	}
	if (received > p->remote_received)
		p->remote_received = received;
	if (restored > p->remote_restored) {
		p->remote_restored = restored;
		if (restored_ts)
			p->remote_restored_ts = restored_ts;
	}
	group_set_remote_durable(p->g, p->remote_received);
	if (p->remote_restored + 1 >= p->pc.start_seq)
		journal_consumer_release(j, p->pc.id, p->remote_restored);
}

static void
send_data(struct pair *p, struct jread *rd)
{
	struct wire_msg m = {.hdr.type = WIRE_JOURNAL_DATA};
	struct wire_journal_data *d = &m.u.journal_data;
	int level = p->r->opts.compress_level;
	int r;

	d->req_id = rd->req_id;
	d->first_seq = rd->jr.first_seq;
	d->last_seq = rd->jr.last_seq;
	d->nrecords = rd->jr.nrecords;
	d->raw_len = rd->jr.out_len;
	d->compression = WIRE_COMP_NONE;
	d->data = rd->buf;
	d->data_len = rd->jr.out_len;
	/* zstd where it pays: incompressible data (already compressed or
	 * encrypted by the host) is sent raw, and after a run of misses the
	 * next batches skip the attempt. */
	if (level >= 0 && p->cctx && rd->jr.out_len >= 4096) {
		if (p->comp_skip) {
			p->comp_skip--;
		} else {
			size_t n = ZSTD_compressCCtx(p->cctx, p->cbuf, p->cbuf_cap, rd->buf,
						     rd->jr.out_len, level ? level : REPL_ZSTD_DEFAULT_LEVEL);

			if (!ZSTD_isError(n) && n < (size_t)rd->jr.out_len * 9 / 10) {
				d->compression = WIRE_COMP_ZSTD;
				d->data = p->cbuf;
				d->data_len = (uint32_t)n;
				p->comp_misses = 0;
			} else if (++p->comp_misses >= 4) {
				p->comp_misses = 0;
				p->comp_skip = 32;
			}
		}
	}
	r = send_msg(p, &m);
	if (r < 0) {
		if (r != -ENOTCONN)
			fail_link(p, -r, "cannot queue journal data seq %" PRIu64 "..%" PRIu64 ": %s",
				  d->first_seq, d->last_seq, strerror(-r));
		return;
	}
	p->raw_bytes += d->raw_len;
	p->sent_data_bytes += d->data_len;
	p->batches_sent++;
}

static void
jread_done(struct journal_read_req *jr, int res)
{
	struct jread *rd = jr->arg;
	struct pair *p = rd->p;

	rd->busy = false;
	p->busy--;
	if (p->zombie) {
		pair_put(p);
		return;
	}
	if (rd->gen != p->gen || !p->ready)
		return; /* that link is gone; the next one resends from its numbers */
	if (res < 0) {
		fail_link(p, EIO, "cannot read master journal records from seq %" PRIu64 ": %s",
			  rd->jr.from_seq, strerror(-res));
		return;
	}
	send_data(p, rd);
	loop_wakeup(p->r->loop);
}

static void
send_empty(struct pair *p, uint64_t req_id)
{
	struct wire_msg m = {.hdr.type = WIRE_JOURNAL_DATA};

	m.u.journal_data.req_id = req_id;
	m.u.journal_data.first_seq = p->cursor;
	m.u.journal_data.last_seq = p->cursor - 1;
	send_msg(p, &m);
}

static void
pop_req(struct pair *p, unsigned i)
{
	p->nreqs--;
	memmove(&p->reqs[i], &p->reqs[i + 1], (p->nreqs - i) * sizeof(p->reqs[0]));
	memmove(&p->req_deadline_ms[i], &p->req_deadline_ms[i + 1],
		(p->nreqs - i) * sizeof(p->req_deadline_ms[0]));
}

static void
primary_serve(struct pair *p)
{
	struct journal *j = group_journal(p->g);
	struct journal_stats js;
	uint64_t now;

	if (!p->ready)
		return;
	journal_get_stats(j, &js);
	while (p->nreqs && p->cursor <= js.durable_seq) {
		struct jread *rd = NULL;
		int r;

		for (unsigned i = 0; i < REPL_MAX_READS; i++) {
			if (!p->reads[i].busy) {
				rd = &p->reads[i];
				break;
			}
		}
		if (!rd)
			break;
		memset(&rd->jr, 0, sizeof(rd->jr));
		rd->jr.from_seq = p->cursor;
		rd->jr.max_seq = UINT64_MAX;
		rd->jr.max_bytes = MIN(p->reqs[0].max_bytes, WIRE_MAX_DATA);
		rd->jr.out = rd->buf;
		rd->jr.out_cap = WIRE_MAX_DATA;
		rd->jr.done = jread_done;
		rd->jr.arg = rd;
		r = journal_read_records(j, &rd->jr);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			fail_link(p, EIO, "the secondary needs seq %" PRIu64 ", but %s (journal tail "
				  "is seq %" PRIu64 ")", p->cursor,
				  r == -ENOENT ? "it was released from the master journal"
					       : strerror(-r),
				  js.tail_seq);
			return;
		}
		rd->req_id = p->reqs[0].req_id;
		rd->gen = p->gen;
		rd->busy = true;
		p->busy++;
		p->cursor = rd->jr.last_seq + 1;
		pop_req(p, 0);
	}
	/* Long polls that found nothing. */
	now = now_ms();
	for (unsigned i = 0; i < p->nreqs;) {
		if (now >= p->req_deadline_ms[i] && p->cursor > js.durable_seq) {
			send_empty(p, p->reqs[i].req_id);
			pop_req(p, i);
		} else {
			i++;
		}
	}
}

static void
on_read_journal(struct pair *p, const struct wire_read_journal *m)
{
	if (m->max_bytes < JOURNAL_MAX_PAYLOAD + JOURNAL_REC_HDR_SIZE) {
		fail_link(p, EPROTO, "read-journal request for %u bytes: less than one record",
			  m->max_bytes);
		return;
	}
	if (p->nreqs == REPL_MAX_QUEUED) {
		fail_link(p, EPROTO, "more than %u read-journal requests in flight",
			  REPL_MAX_QUEUED);
		return;
	}
	remote_progress(p, m->received_seq, m->restored_seq, 0);
	if (!p->conn)
		return;
	p->reqs[p->nreqs] = *m;
	p->req_deadline_ms[p->nreqs] = now_ms() + REPL_LONG_POLL_MS;
	p->nreqs++;
	primary_serve(p);
}

/* ------------------------------------------------------------------ */
/* Primary: initial copy                                               */
/* ------------------------------------------------------------------ */

static uint64_t
copy_done_bytes(const struct pair *p)
{
	uint64_t done = 0;

	for (unsigned i = 0; i < p->pc.copy_volume && i < group_nvolumes(p->g); i++)
		done += group_volume(p->g, i)->size;
	return done + p->pc.copy_offset;
}

/* The persisted copy position: the oldest chunk still in flight, or where
 * the next chunk will be read. */
static void
copy_note_progress(struct pair *p)
{
	unsigned vol = p->copy_vol;
	uint64_t off = p->copy_off;

	for (unsigned i = 0; i < REPL_COPY_DEPTH; i++) {
		const struct copy_io *c = &p->copies[i];

		if (c->busy && (c->vol < vol || (c->vol == vol && c->off < off))) {
			vol = c->vol;
			off = c->off;
		}
	}
	p->pc.copy_volume = vol;
	p->pc.copy_offset = off;
}

static void
copy_io_done(struct group_io *io, int res)
{
	struct copy_io *c = container_of(io, struct copy_io, io);
	struct pair *p = c->p;

	c->busy = false;
	p->busy--;
	if (p->zombie) {
		pair_put(p);
		return;
	}
	if (res < 0) {
		p->copy_failed = true;
		pair_error(p, "initial copy of volume '%s' at offset %" PRIu64 " failed: %s; copy "
			   "stopped", c->io.vol->name, c->off, strerror(-res));
	} else if (io->last_seq > p->copy_max_seq) {
		p->copy_max_seq = io->last_seq;
	}
	copy_note_progress(p);
	loop_wakeup(p->r->loop);
}

static void
copy_pump(struct pair *p)
{
	struct journal_stats js;
	bool idle = true;

	if (p->pc.role != PAIR_ROLE_PRIMARY || p->pc.state != PAIR_STATE_COPY || !p->ready ||
	    p->copy_failed || p->pc.copy_end_seq)
		return;
	journal_get_stats(group_journal(p->g), &js);
	for (unsigned i = 0; i < REPL_COPY_DEPTH; i++) {
		struct copy_io *c = &p->copies[i];
		struct volume *v;
		uint32_t len;

		if (c->busy) {
			idle = false;
			continue;
		}
		/* Leave the journal to host writes: the copy fills it only as fast
		 * as the secondary drains it. */
		if (js.used_bytes * 100 > js.area_size * REPL_COPY_JOURNAL_PCT)
			return;
		while (p->copy_vol < group_nvolumes(p->g) &&
		       p->copy_off >= group_volume(p->g, p->copy_vol)->size) {
			p->copy_vol++;
			p->copy_off = 0;
		}
		if (p->copy_vol >= group_nvolumes(p->g))
			break;
		v = group_volume(p->g, p->copy_vol);
		len = (uint32_t)MIN((uint64_t)JOURNAL_MAX_PAYLOAD, v->size - p->copy_off);
		memset(&c->io, 0, sizeof(c->io));
		c->io.op = GROUP_IO_BASE;
		c->io.vol = v;
		c->io.offset = p->copy_off;
		c->io.len = len;
		c->io.buf = c->buf;
		c->io.done = copy_io_done;
		c->vol = p->copy_vol;
		c->off = p->copy_off;
		c->busy = true;
		p->busy++;
		idle = false;
		p->copy_off += len;
		group_io_submit(p->g, &c->io);
		js.used_bytes += len; /* roughly: keeps one pass from overshooting */
	}
	copy_note_progress(p);
	if (idle && p->copy_vol >= group_nvolumes(p->g)) {
		/* Every chunk is journaled: the copy ends with the newest BASE record. */
		p->pc.copy_end_seq = MAX(p->copy_max_seq, p->pc.start_seq);
		log_info("group '%s': initial copy journaled (%" PRIu64 " bytes, last seq %" PRIu64
			 "); waiting for the secondary to restore it",
			 group_name(p->g), p->copy_total, p->pc.copy_end_seq);
		pair_save(p);
	}
}

static void
send_primary_status(struct pair *p)
{
	struct wire_msg m = {.hdr.type = WIRE_PRIMARY_STATUS};
	struct group_stats st;
	struct journal_stats js;

	group_get_stats(p->g, &st);
	journal_get_stats(group_journal(p->g), &js);
	m.u.primary_status.state =
		p->pc.state == PAIR_STATE_COPY ? WIRE_STATE_COPY : WIRE_STATE_PAIR;
	m.u.primary_status.written_seq = st.last_seq;
	m.u.primary_status.copy_done_bytes = copy_done_bytes(p);
	m.u.primary_status.copy_total_bytes = p->copy_total;
	m.u.primary_status.newest_ts_ns = js.last_timestamp_ns;
	if (send_msg(p, &m) == 0)
		p->last_status_ms = now_ms();
}

static void
primary_check_state(struct pair *p)
{
	if (p->pc.state == PAIR_STATE_COPY && p->pc.copy_end_seq &&
	    p->remote_restored >= p->pc.copy_end_seq) {
		p->pc.state = PAIR_STATE_PAIR;
		pair_save(p);
		log_info("group '%s': pair state COPY -> PAIR (initial copy restored at the "
			 "secondary)", group_name(p->g));
		send_primary_status(p);
	}
}

/* ------------------------------------------------------------------ */
/* Secondary                                                           */
/* ------------------------------------------------------------------ */

static void
rbatch_free(struct reorder_batch *rb)
{
	struct rbatch *b = (struct rbatch *)rb;

	free(b->data);
	free(b);
}

static void
ts_note(struct pair *p, uint64_t seq, uint64_t ts)
{
	if (p->ts_n == REPL_TS_RING) {
		memmove(&p->ts_ring[0], &p->ts_ring[1], (REPL_TS_RING - 1) * sizeof(p->ts_ring[0]));
		p->ts_n--;
	}
	p->ts_ring[p->ts_n].seq = seq;
	p->ts_ring[p->ts_n].ts = ts;
	p->ts_n++;
}

/* Timestamp of the newest batch wholly restored. */
static void
ts_update(struct pair *p, uint64_t applied)
{
	unsigned k = 0;

	while (k < p->ts_n && p->ts_ring[k].seq <= applied) {
		p->restored_ts = p->ts_ring[k].ts;
		k++;
	}
	if (k) {
		memmove(&p->ts_ring[0], &p->ts_ring[k], (p->ts_n - k) * sizeof(p->ts_ring[0]));
		p->ts_n -= k;
	}
}

static void
replay_done(struct group_io *io, int res)
{
	struct replay *rp = container_of(io, struct replay, io);
	struct pair *p = rp->p;
	uint64_t seq = io->rec.seq;

	p->nreplay--;
	p->replay_bytes -= rp->bytes;
	p->busy--;
	free(rp->io.buf);
	free(rp);
	if (p->zombie) {
		pair_put(p);
		return;
	}
	if (res < 0 && p->conn)
		fail_link(p, EIO, "restore of seq %" PRIu64 " failed: %s", seq,
			  strerror(-res));
	loop_wakeup(p->r->loop);
}

/* 0, or -EPROTO for a record that doesn't fit the group (the link is failed). */
static int
replay_submit(struct pair *p, const struct journal_rec *rec, const void *payload)
{
	struct replay *rp;
	struct volume *v;

	if (rec->kind == JOURNAL_REC_MARKER) {
		v = group_volume(p->g, 0);
	} else if (rec->volume >= p->pc.nvolmap ||
		   !(v = group_volume(p->g, p->pc.volmap[rec->volume])) ||
		   !range_within(rec->offset, rec->length, v->size) || rec->length > UINT32_MAX) {
		fail_link(p, EPROTO, "record seq %" PRIu64 " (volume %u, %" PRIu64 "+%" PRIu64
			  ") does not fit this group's volumes", rec->seq, rec->volume,
			  rec->offset, rec->length);
		return -EPROTO;
	}
	rp = calloc(1, sizeof(*rp));
	if (!rp)
		return -ENOMEM;
	if (rec->payload_len) {
		rp->io.buf = util_aligned_alloc(4096, ALIGN_UP(rec->payload_len, 4096u));
		if (!rp->io.buf) {
			free(rp);
			return -ENOMEM;
		}
		memcpy(rp->io.buf, payload, rec->payload_len);
	}
	rp->p = p;
	rp->bytes = rec->payload_len + JOURNAL_REC_HDR_SIZE;
	rp->io.op = GROUP_IO_REPLAY;
	rp->io.rec = *rec;
	rp->io.vol = v;
	rp->io.done = replay_done;
	p->nreplay++;
	p->replay_bytes += rp->bytes;
	p->busy++;
	group_io_submit(p->g, &rp->io);
	return 0;
}

/* Hands records to the group in seq order, as far as arrived batches and
 * the replay budget allow. */
static void
secondary_deliver(struct pair *p)
{
	while (p->ready) {
		struct rbatch *b = p->cur;

		if (!b) {
			struct reorder_batch *rb = reorder_pop(&p->ro);

			if (!rb)
				return;
			b = p->cur = (struct rbatch *)rb;
			b->pos = 0;
			b->expect = rb->first;
		}
		while (p->replay_bytes < REPL_REPLAY_MAX_BYTES && p->nreplay < REPL_REPLAY_MAX_COUNT) {
			struct journal_rec rec;
			const void *payload;
			int r = wire_records_next(b->data, b->len, p->pc.primary_seed, &b->pos,
						  &b->expect, &rec, &payload);

			if (r == 0) {
				ts_note(p, b->rb.last, b->newest_ts);
				p->cur = NULL;
				rbatch_free(&b->rb);
				break;
			}
			if (r < 0) {
				fail_link(p, EPROTO, "batch seq %" PRIu64 "..%" PRIu64 " is damaged",
					  b->rb.first, b->rb.last);
				return;
			}
			if (rec.seq < p->ro.next)
				continue; /* already delivered (a resend) */
			if (replay_submit(p, &rec, payload) < 0)
				return;
			reorder_advance(&p->ro, rec.seq);
		}
		if (p->cur)
			return; /* budget: resumes on completions */
	}
}

static void
on_journal_data(struct pair *p, const struct wire_journal_data *d)
{
	struct rbatch *b;
	uint8_t *raw;
	size_t pos = 0;
	uint64_t expect = d->first_seq, newest = 0;
	uint32_t n = 0;
	bool known = false;
	int r;

	for (unsigned i = 0; i < p->nout; i++) {
		if (p->out_ids[i] == d->req_id) {
			p->out_ids[i] = p->out_ids[--p->nout];
			known = true;
			break;
		}
	}
	if (!known) {
		fail_link(p, EPROTO, "journal data for request %" PRIu64 " that is not in flight",
			  d->req_id);
		return;
	}
	if (d->nrecords == 0)
		return;
	raw = malloc(d->raw_len ? d->raw_len : 1);
	if (!raw) {
		fail_link(p, ENOMEM, "out of memory for a batch of %u bytes", d->raw_len);
		return;
	}
	if (d->compression == WIRE_COMP_ZSTD) {
		size_t got = ZSTD_decompressDCtx(p->dctx, raw, d->raw_len, d->data, d->data_len);

		if (ZSTD_isError(got) || got != d->raw_len) {
			free(raw);
			fail_link(p, EBADMSG, "batch seq %" PRIu64 "..%" PRIu64 ": zstd: %s",
				  d->first_seq, d->last_seq,
				  ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong length");
			return;
		}
	} else {
		memcpy(raw, d->data, d->raw_len);
	}
	/* Check every record before any is journaled: a damaged batch is
	 * refused whole. */
	for (;;) {
		struct journal_rec rec;
		const void *payload;

		r = wire_records_next(raw, d->raw_len, p->pc.primary_seed, &pos, &expect, &rec,
				      &payload);
		if (r <= 0)
			break;
		n++;
		newest = rec.timestamp_ns;
	}
	if (r < 0 || n != d->nrecords || expect != d->last_seq + 1) {
		free(raw);
		fail_link(p, EBADMSG, "batch seq %" PRIu64 "..%" PRIu64 " failed its checks (%s)",
			  d->first_seq, d->last_seq,
			  r < 0 ? "damaged record" : "record count or seqs don't match");
		return;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		free(raw);
		fail_link(p, ENOMEM, "out of memory");
		return;
	}
	b->rb.first = d->first_seq;
	b->rb.last = d->last_seq;
	b->rb.bytes = d->raw_len;
	b->data = raw;
	b->len = d->raw_len;
	b->newest_ts = newest;
	r = reorder_insert(&p->ro, &b->rb);
	p->batches_received++;
	p->bytes_received_raw += d->raw_len;
	if (r == REORDER_QUEUED && b->rb.first > p->ro.next)
		p->batches_early++; /* arrived before a batch it follows */
	if (r == REORDER_DUPLICATE) {
		rbatch_free(&b->rb);
	} else if (r < 0) {
		rbatch_free(&b->rb);
		fail_link(p, EPROTO, "batch seq %" PRIu64 "..%" PRIu64 " overlaps one already here",
			  d->first_seq, d->last_seq);
		return;
	}
	secondary_deliver(p);
}

static void
secondary_pump(struct pair *p)
{
	struct group_stats st;
	uint64_t applied;
	unsigned window;

	if (!p->ready)
		return;
	secondary_deliver(p);
	if (!p->ready)
		return;
	group_get_stats(p->g, &st);
	applied = st.applied_seq;
	ts_update(p, applied);
	window = p->r->opts.window ? MIN(p->r->opts.window, REPL_MAX_WINDOW) : 4u;
	while (p->nout < window) {
		uint64_t held = p->ro.pending_bytes + (p->cur ? p->cur->len : 0) + p->replay_bytes +
				(uint64_t)(p->nout + 1) * WIRE_MAX_DATA;
		struct wire_msg m = {.hdr.type = WIRE_READ_JOURNAL};

		if (held > REPL_SECONDARY_BUDGET)
			break;
		m.u.read_journal.req_id = ++p->next_req_id;
		m.u.read_journal.received_seq = st.durable_seq;
		m.u.read_journal.restored_seq = applied;
		m.u.read_journal.max_bytes = WIRE_MAX_DATA;
		if (send_msg(p, &m) < 0)
			break;
		p->out_ids[p->nout++] = m.u.read_journal.req_id;
		p->sent_received = st.durable_seq;
		p->sent_restored = applied;
	}
	/* Progress the primary is waiting for (sync mode acks, journal release). */
	if (st.durable_seq != p->sent_received || applied != p->sent_restored) {
		struct wire_msg m = {.hdr.type = WIRE_STATUS};

		m.u.status.received_seq = st.durable_seq;
		m.u.status.restored_seq = applied;
		m.u.status.restored_ts_ns = p->restored_ts;
		if (send_msg(p, &m) == 0) {
			p->sent_received = st.durable_seq;
			p->sent_restored = applied;
		}
	}
}

static void
on_primary_status(struct pair *p, const struct wire_primary_status *m)
{
	enum pair_state st = m->state == WIRE_STATE_COPY ? PAIR_STATE_COPY : PAIR_STATE_PAIR;

	p->pstat = *m;
	p->have_pstat = true;
	if (st != p->pc.state) {
		log_info("group '%s': pair state %s -> %s (from the primary)", group_name(p->g),
			 pair_state_name(p->pc.state), pair_state_name(st));
		p->pc.state = st;
		pair_save(p);
	}
}

/* ------------------------------------------------------------------ */
/* Pairs                                                               */
/* ------------------------------------------------------------------ */

static struct pair *
pair_new(struct repl *r, struct group *g, const struct group_pair_config *pc)
{
	struct pair *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->r = r;
	p->g = g;
	p->pc = *pc;
	p->saved = *pc;
	p->backoff_ms = REPL_BACKOFF_MIN_MS;
	for (unsigned i = 0; i < group_nvolumes(g); i++)
		p->copy_total += group_volume(g, i)->size;
	if (pc->role == PAIR_ROLE_PRIMARY) {
		p->cctx = ZSTD_createCCtx();
		p->cbuf_cap = ZSTD_compressBound(WIRE_MAX_DATA);
		p->cbuf = malloc(p->cbuf_cap);
		if (!p->cctx || !p->cbuf)
			goto err;
		for (unsigned i = 0; i < REPL_MAX_READS; i++) {
			p->reads[i].p = p;
			p->reads[i].buf = util_aligned_alloc(4096, WIRE_MAX_DATA);
			if (!p->reads[i].buf)
				goto err;
		}
		for (unsigned i = 0; i < REPL_COPY_DEPTH; i++) {
			p->copies[i].p = p;
			p->copies[i].buf = util_aligned_alloc(4096, JOURNAL_MAX_PAYLOAD);
			if (!p->copies[i].buf)
				goto err;
		}
		p->copy_vol = pc->copy_volume;
		p->copy_off = pc->copy_offset;
		{
			/* After a restart, BASE records journaled before it may still be on
			 * their way: the copy is not restored before everything up to here is. */
			struct journal_stats js;

			journal_get_stats(group_journal(g), &js);
			p->copy_max_seq = js.next_seq - 1;
		}
	} else {
		struct journal_stats js;

		p->dctx = ZSTD_createDCtx();
		if (!p->dctx)
			goto err;
		journal_get_stats(group_journal(g), &js);
		reorder_init(&p->ro, js.next_seq);
	}
	p->next = r->pairs;
	r->pairs = p;
	return p;
err:
	p->zombie = true;
	pair_free(p);
	return NULL;
}

static void
pair_free(struct pair *p)
{
	struct repl *r = p->r;

	for (struct pair **pp = &r->zombies; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	for (struct pair **pp = &r->pairs; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	if (p->cur)
		rbatch_free(&p->cur->rb);
	reorder_reset(&p->ro, rbatch_free);
	ZSTD_freeCCtx(p->cctx);
	ZSTD_freeDCtx(p->dctx);
	free(p->cbuf);
	for (unsigned i = 0; i < REPL_MAX_READS; i++)
		free(p->reads[i].buf);
	for (unsigned i = 0; i < REPL_COPY_DEPTH; i++)
		free(p->copies[i].buf);
	free(p);
}

/* Unlinks p from its group; freed now or by its last completion. */
static void
pair_detach(struct pair *p)
{
	struct repl *r = p->r;

	if (p->conn) {
		struct conn *c = p->conn;

		if (!c->dead)
			link_fail(c->link, ESHUTDOWN, "group '%s' is going away", group_name(p->g));
		conn_drop(c);
	}
	if (p->create_cb) {
		repl_create_cb *cb = p->create_cb;

		p->create_cb = NULL;
		cb(p->create_arg, -ECANCELED, "the group went away while the pair was being created");
	}
	for (struct pair **pp = &r->pairs; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	p->zombie = true;
	p->ready = false;
	if (p->busy) {
		p->next = r->zombies;
		r->zombies = p;
		return;
	}
	pair_free(p);
}

static void
create_finish(struct pair *p, int err, const char *msg)
{
	repl_create_cb *cb = p->create_cb;

	if (!cb)
		return;
	p->create_cb = NULL;
	if (err) {
		journal_consumer_remove(group_journal(p->g), p->pc.id);
		log_warn("group '%s': pair create with %s failed: %s", group_name(p->g),
			 p->pc.remote, msg);
		cb(p->create_arg, err, msg);
		pair_detach(p);
		return;
	}
	cb(p->create_arg, 0, NULL);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

static void conn_on_ready(struct link *l, void *arg);
static void conn_on_msg(struct link *l, const struct wire_msg *m, void *arg);
static void conn_on_close(struct link *l, int err, void *arg);

static const struct link_ops conn_ops = {
	.on_ready = conn_on_ready,
	.on_msg = conn_on_msg,
	.on_close = conn_on_close,
};

static struct conn *
conn_new(struct repl *r, int fd, bool dialed, const char *peer, char *err, size_t errlen)
{
	struct conn *c = calloc(1, sizeof(*c));
	int ret;

	if (!c) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->r = r;
	c->dialed = dialed;
	ret = link_new(r->loop, fd, dialed ? WIRE_ROLE_PRIMARY : WIRE_ROLE_SECONDARY, &r->key,
		       r->site, peer, &conn_ops, c, &c->link);
	if (ret < 0) {
		snprintf(err, errlen, "%s", strerror(-ret));
		free(c);
		return NULL;
	}
	c->next = r->conns;
	r->conns = c;
	return c;
}

static void
bind_conn(struct pair *p, struct conn *c)
{
	if (p->conn && p->conn != c) {
		struct conn *old = p->conn;

		log_info("group '%s': new replication link from %s replaces the old one",
			 group_name(p->g), link_peer(c->link));
		if (!old->dead)
			link_fail(old->link, ECONNRESET, "replaced by a new link");
		conn_drop(old);
	}
	c->p = p;
	p->conn = c;
	p->gen++;
	p->nreqs = 0;
	p->nout = 0;
	p->error[0] = 0;
}

static void
primary_dial(struct pair *p)
{
	char err[256];
	int fd, r;
	struct conn *c;

	r = link_dial(p->pc.remote, &fd, err, sizeof(err));
	if (r < 0) {
		if (p->create_cb) {
			create_finish(p, r, err);
			return;
		}
		pair_error(p, "%s", err);
		goto backoff;
	}
	c = conn_new(p->r, fd, true, p->pc.remote, err, sizeof(err));
	if (!c) {
		pair_error(p, "%s", err);
		goto backoff;
	}
	bind_conn(p, c);
	return;
backoff:
	p->next_dial_ms = now_ms() + p->backoff_ms;
	p->backoff_ms = MIN(p->backoff_ms * 2, REPL_BACKOFF_MAX_MS);
}

static void
primary_on_ready(struct pair *p)
{
	struct wire_msg m = {0};
	struct journal *j = group_journal(p->g);
	uint64_t seed = journal_get_sb(j)->seed;

	if (!p->pc.confirmed) {
		struct wire_pair_create *pc = &m.u.pair_create;

		m.hdr.type = WIRE_PAIR_CREATE;
		snprintf(pc->group, sizeof(pc->group), "%s", group_name(p->g));
		pc->pair_id = p->pc.id;
		pc->start_seq = p->pc.start_seq;
		pc->primary_seed = seed;
		pc->mode = p->pc.mode == PAIR_MODE_SYNC ? WIRE_MODE_SYNC : WIRE_MODE_ASYNC;
		pc->initial_copy = p->pc.initial_copy;
		pc->nvolumes = (uint16_t)group_nvolumes(p->g);
		for (unsigned i = 0; i < group_nvolumes(p->g); i++) {
			struct volume *v = group_volume(p->g, i);

			snprintf(pc->volumes[i].name, sizeof(pc->volumes[i].name), "%s", v->name);
			pc->volumes[i].size = v->size;
		}
	} else {
		struct wire_pair_attach *pa = &m.u.pair_attach;

		m.hdr.type = WIRE_PAIR_ATTACH;
		snprintf(pa->group, sizeof(pa->group), "%s", group_name(p->g));
		pa->pair_id = p->pc.id;
		pa->primary_seed = seed;
		pa->mode = p->pc.mode == PAIR_MODE_SYNC ? WIRE_MODE_SYNC : WIRE_MODE_ASYNC;
	}
	if (send_msg(p, &m) < 0)
		fail_link(p, EIO, "cannot send the pair request");
}

static void
primary_on_pair_ok(struct pair *p, const struct wire_pair_ok *ok)
{
	struct journal_stats js;

	journal_get_stats(group_journal(p->g), &js);
	if (ok->received_seq + 1 < p->pc.start_seq || ok->received_seq >= js.next_seq ||
	    ok->restored_seq > ok->received_seq) {
		fail_link(p, EPROTO, "secondary reports received %" PRIu64 " / restored %" PRIu64
			  ", outside this pair's stream (seq %" PRIu64 "..%" PRIu64 ")",
			  ok->received_seq, ok->restored_seq, p->pc.start_seq, js.next_seq - 1);
		return;
	}
	if (ok->received_seq + 1 < js.tail_seq) {
		fail_link(p, ENOENT, "the secondary needs records from seq %" PRIu64 ", but the "
			  "master journal starts at seq %" PRIu64, ok->received_seq + 1, js.tail_seq);
		return;
	}
	if (p->conn)
		snprintf(p->pc.peer_site, sizeof(p->pc.peer_site), "%s", link_peer_site(p->conn->link));
	if (!p->pc.confirmed) {
		p->pc.confirmed = true;
		pair_save(p);
		log_info("group '%s': paired with %s (site '%s'), %s mode, %s, stream from seq %" PRIu64,
			 group_name(p->g), p->pc.remote, p->pc.peer_site, pair_mode_name(p->pc.mode),
			 p->pc.initial_copy ? "initial copy" : "no initial copy", p->pc.start_seq);
		create_finish(p, 0, NULL);
	} else {
		log_info("group '%s': replication link to %s up; secondary received %" PRIu64
			 ", restored %" PRIu64, group_name(p->g), p->pc.remote, ok->received_seq,
			 ok->restored_seq);
		pair_save(p);
	}
	p->cursor = ok->received_seq + 1;
	p->remote_received = 0;
	p->remote_restored = 0;
	remote_progress(p, ok->received_seq, ok->restored_seq, 0);
	p->backoff_ms = REPL_BACKOFF_MIN_MS;
	p->ready = true;
	send_primary_status(p);
	loop_wakeup(p->r->loop);
}

/* --- secondary: naming the pair --- */

static void
reply_error(struct conn *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
reply_error(struct conn *c, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("replication link from %s: refused: %s", link_peer(c->link), msg);
	link_fail(c->link, err, "%s", msg);
	conn_drop(c);
}

static void
secondary_accept(struct pair *p, struct conn *c)
{
	struct wire_msg m = {.hdr.type = WIRE_PAIR_OK};

	bind_conn(p, c);
	if (p->cur) {
		rbatch_free(&p->cur->rb);
		p->cur = NULL;
	}
	reorder_reset(&p->ro, rbatch_free);
	m.u.pair_ok.received_seq = p->ro.next - 1;
	m.u.pair_ok.restored_seq = group_applied_seq(p->g);
	p->sent_received = p->sent_restored = 0;
	if (link_send(c->link, &m) < 0) {
		conn_drop(c);
		return;
	}
	p->ready = true;
	loop_wakeup(p->r->loop);
}

static void
on_pair_create(struct conn *c, const struct wire_pair_create *m)
{
	struct repl *r = c->r;
	struct group *g = r->ops->find_group(r->arg, m->group), *ng = NULL;
	struct group_pair_config pc = {0};
	struct pair *p;
	char err[512];
	int ret;

	if (!g) {
		reply_error(c, ENOENT, "no group '%s' at site '%s' (create it there first with "
			    "'jrbd group create')", m->group, r->site);
		return;
	}
	if (group_get_config(g)->pair.role == PAIR_ROLE_PRIMARY) {
		reply_error(c, EBUSY, "group '%s' is the primary of a pair at site '%s'", m->group,
			    r->site);
		return;
	}
	if (m->nvolumes != group_nvolumes(g)) {
		reply_error(c, EINVAL, "group '%s' has %u volume(s) at site '%s', the primary has %u",
			    m->group, group_nvolumes(g), r->site, m->nvolumes);
		return;
	}
	for (unsigned i = 0; i < m->nvolumes; i++) {
		struct volume *v = group_find_volume(g, m->volumes[i].name);

		if (!v) {
			reply_error(c, EINVAL, "group '%s' at site '%s' has no volume '%s' (volume "
				    "names must match at both sites)", m->group, r->site,
				    m->volumes[i].name);
			return;
		}
		if (v->size < m->volumes[i].size) {
			reply_error(c, ENOSPC, "S-VOL '%s' at site '%s' holds %" PRIu64 " bytes, "
				    "smaller than its P-VOL (%" PRIu64 " bytes)", v->name, r->site,
				    v->size, m->volumes[i].size);
			return;
		}
		if (v->nbd_conns) {
			reply_error(c, EBUSY, "S-VOL '%s' at site '%s' has %u NBD connection(s); "
				    "disconnect them first (pairing overwrites it)", v->name,
				    r->site, v->nbd_conns);
			return;
		}
		pc.volmap[i] = v->id;
	}
	pc.nvolmap = m->nvolumes;
	if ((p = pair_find(r, g))) {
		log_warn("group '%s': replacing its pair %016" PRIx64 " with %016" PRIx64
			 " (a new pair create from %s)", m->group, p->pc.id, m->pair_id,
			 link_peer(c->link));
		pair_detach(p);
	}
	ret = r->ops->reformat(r->arg, g, m->start_seq, &ng, err, sizeof(err));
	if (ret < 0) {
		reply_error(c, -ret, "group '%s' at site '%s': %s", m->group, r->site, err);
		return;
	}
	pc.role = PAIR_ROLE_SECONDARY;
	pc.state = m->initial_copy ? PAIR_STATE_COPY : PAIR_STATE_PAIR;
	pc.mode = m->mode == WIRE_MODE_SYNC ? PAIR_MODE_SYNC : PAIR_MODE_ASYNC;
	pc.id = m->pair_id;
	pc.start_seq = m->start_seq;
	pc.primary_seed = m->primary_seed;
	pc.initial_copy = m->initial_copy;
	pc.confirmed = true;
	snprintf(pc.peer_site, sizeof(pc.peer_site), "%s", link_peer_site(c->link));
	group_set_secondary(ng, true);
	p = pair_new(r, ng, &pc);
	if (!p) {
		reply_error(c, ENOMEM, "out of memory");
		return;
	}
	memset(&p->saved, 0, sizeof(p->saved));
	pair_save(p);
	log_info("group '%s': now the secondary of pair %016" PRIx64 " with site '%s' (%s), "
		 "%s mode, stream from seq %" PRIu64, m->group, m->pair_id, pc.peer_site,
		 link_peer(c->link), pair_mode_name(pc.mode), m->start_seq);
	secondary_accept(p, c);
}

static void
on_pair_attach(struct conn *c, const struct wire_pair_attach *m)
{
	struct repl *r = c->r;
	struct group *g = r->ops->find_group(r->arg, m->group);
	struct pair *p = g ? pair_find(r, g) : NULL;

	if (!p || p->pc.role != PAIR_ROLE_SECONDARY || p->pc.id != m->pair_id) {
		reply_error(c, ENOENT, "group '%s' at site '%s' is not the secondary of pair %016" PRIx64,
			    m->group, r->site, m->pair_id);
		return;
	}
	if (p->pc.primary_seed != m->primary_seed) {
		reply_error(c, EINVAL, "group '%s': the primary's journal changed (different "
			    "checksum seed); the pair must be created again", m->group);
		return;
	}
	if ((m->mode == WIRE_MODE_SYNC) != (p->pc.mode == PAIR_MODE_SYNC)) {
		p->pc.mode = m->mode == WIRE_MODE_SYNC ? PAIR_MODE_SYNC : PAIR_MODE_ASYNC;
		pair_save(p);
	}
	log_info("group '%s': replication link from %s (site '%s') attached; received %" PRIu64
		 ", restored %" PRIu64, m->group, link_peer(c->link), link_peer_site(c->link),
		 p->ro.next - 1, group_applied_seq(p->g));
	secondary_accept(p, c);
}

/* --- link callbacks --- */

static void
conn_on_ready(struct link *l, void *arg)
{
	struct conn *c = arg;

	(void)l;
	if (c->dialed && c->p)
		primary_on_ready(c->p);
}

static void
conn_on_msg(struct link *l, const struct wire_msg *m, void *arg)
{
	struct conn *c = arg;
	struct pair *p = c->p;

	(void)l;
	if (c->dead)
		return;
	if (!c->dialed && !p) {
		if (m->hdr.type == WIRE_PAIR_CREATE)
			on_pair_create(c, &m->u.pair_create);
		else if (m->hdr.type == WIRE_PAIR_ATTACH)
			on_pair_attach(c, &m->u.pair_attach);
		else
			reply_error(c, EPROTO, "%s before the pair was named",
				    wire_type_name(m->hdr.type));
		return;
	}
	if (!p)
		return;
	switch (m->hdr.type) {
	case WIRE_PAIR_OK:
		if (c->dialed && !p->ready) {
			primary_on_pair_ok(p, &m->u.pair_ok);
			return;
		}
		break;
	case WIRE_READ_JOURNAL:
		if (c->dialed && p->ready) {
			on_read_journal(p, &m->u.read_journal);
			return;
		}
		break;
	case WIRE_STATUS:
		if (c->dialed && p->ready) {
			remote_progress(p, m->u.status.received_seq, m->u.status.restored_seq,
					m->u.status.restored_ts_ns);
			primary_check_state(p);
			return;
		}
		break;
	case WIRE_JOURNAL_DATA:
		if (!c->dialed && p->ready) {
			on_journal_data(p, &m->u.journal_data);
			return;
		}
		break;
	case WIRE_PRIMARY_STATUS:
		if (!c->dialed && p->ready) {
			on_primary_status(p, &m->u.primary_status);
			return;
		}
		break;
	default:
		break;
	}
	fail_link(p, EPROTO, "unexpected %s from %s", wire_type_name(m->hdr.type), link_peer(l));
}

static void
conn_on_close(struct link *l, int err, void *arg)
{
	struct conn *c = arg;
	struct pair *p = c->p;

	if (p && p->conn == c) {
		/* The peer's ERROR text (or our own abort reason) says more than
		 * its errno. */
		const char *why = link_close_reason(l);
		char cause[320];

		if (why[0])
			snprintf(cause, sizeof(cause), "%s", why);
		else
			snprintf(cause, sizeof(cause), "%s", err ? strerror(-err) : "closed by the peer");
		if (p->create_cb) {
			char msg[384];

			if (p->error[0])
				snprintf(msg, sizeof(msg), "%s", p->error);
			else
				snprintf(msg, sizeof(msg), "the link to %s closed: %s", link_peer(l), cause);
			conn_drop(c);
			create_finish(p, err ? err : -ECONNRESET, msg);
			return;
		}
		if (p->ready || err)
			log_warn("group '%s': replication link to %s lost: %s", group_name(p->g),
				 link_peer(l), cause);
		if (!p->error[0])
			snprintf(p->error, sizeof(p->error), "link to %s lost: %.200s", link_peer(l), cause);
		if (c->dialed) {
			p->next_dial_ms = now_ms() + p->backoff_ms;
			p->backoff_ms = MIN(p->backoff_ms * 2, REPL_BACKOFF_MAX_MS);
		}
	}
	conn_drop(c);
}

static void
accept_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct repl *r = arg;
	char err[256], peer[NI_MAXHOST + NI_MAXSERV + 2] = "?";
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int cfd;

	(void)loop;
	(void)events;
	cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0)
		return;
	{
		char host[NI_MAXHOST], port[NI_MAXSERV];

		if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
				NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			snprintf(peer, sizeof(peer), "%s:%s", host, port);
	}
	if (!conn_new(r, cfd, false, peer, err, sizeof(err)))
		log_warn("replication link from %s: %s", peer, err);
}

/* ------------------------------------------------------------------ */
/* The loop                                                            */
/* ------------------------------------------------------------------ */

static void
reap_conns(struct repl *r)
{
	for (struct conn **cp = &r->conns; *cp;) {
		struct conn *c = *cp;

		if (c->dead) {
			*cp = c->next;
			link_free(c->link);
			free(c);
		} else {
			cp = &c->next;
		}
	}
}

static void
repl_hook(struct loop *loop, void *arg)
{
	struct repl *r = arg;

	(void)loop;
	reap_conns(r);
	for (struct pair *p = r->pairs; p; p = p->next) {
		if (p->pc.role == PAIR_ROLE_PRIMARY) {
			primary_serve(p);
			copy_pump(p);
		} else {
			secondary_pump(p);
		}
	}
}

static void
repl_tick(struct loop *loop, void *arg)
{
	struct repl *r = arg;
	uint64_t now = now_ms();
	struct pair *next;

	(void)loop;
	for (struct pair *p = r->pairs; p; p = next) {
		next = p->next;
		if (p->pc.role != PAIR_ROLE_PRIMARY)
			continue;
		if (p->create_cb && now >= p->create_deadline_ms) {
			create_finish(p, -ETIMEDOUT, "no answer from the remote daemon");
			continue;
		}
		if (!p->conn && now >= p->next_dial_ms)
			primary_dial(p);
		if (p->ready) {
			primary_serve(p);
			primary_check_state(p);
			if (now - p->last_status_ms >= 1000)
				send_primary_status(p);
		}
		if (p->pc.state == PAIR_STATE_COPY && now - p->copy_rate_ms >= 1000) {
			uint64_t done = copy_done_bytes(p);

			if (p->copy_rate_ms)
				p->copy_rate = (done - MIN(done, p->copy_rate_done)) * 1000 /
					       (now - p->copy_rate_ms);
			p->copy_rate_done = done;
			p->copy_rate_ms = now;
			pair_save(p); /* copy progress */
		}
	}
	loop_wakeup(r->loop);
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

int
repl_new(struct loop *loop, struct io_engine *io, const struct repl_opts *opts,
	 const struct repl_ops *ops, void *arg, struct repl **ret, char *err, size_t errlen)
{
	struct repl *r = calloc(1, sizeof(*r));
	int ret_code;

	if (!r)
		return -ENOMEM;
	r->loop = loop;
	r->io = io;
	r->ops = ops;
	r->arg = arg;
	r->opts = *opts;
	r->listen_fd = -1;
	r->tick.fd = -1;
	snprintf(r->site, sizeof(r->site), "%s", opts->site ? opts->site : "jrbd");
	if (opts->secret_file) {
		ret_code = auth_init();
		if (ret_code == 0)
			ret_code = auth_key_from_file(opts->secret_file, &r->key, err, errlen);
		if (ret_code < 0)
			goto fail;
		r->have_key = true;
	} else if (opts->listen_addr) {
		snprintf(err, errlen, "--listen needs --secret-file: the replication link "
			 "authenticates both ends with a shared secret");
		ret_code = -EINVAL;
		goto fail;
	}
	if (opts->listen_addr) {
		ret_code = link_listen(opts->listen_addr, &r->listen_fd, err, errlen);
		if (ret_code < 0)
			goto fail;
		ret_code = loop_add_fd(loop, &r->listen_h, r->listen_fd, EPOLLIN, accept_event, r);
		if (ret_code < 0)
			goto fail;
	}
	ret_code = loop_timer_start(loop, &r->tick, REPL_TICK_MS, repl_tick, r);
	if (ret_code < 0)
		goto fail;
	loop_add_hook(loop, &r->hook, repl_hook, r);
	*ret = r;
	return 0;
fail:
	if (!err[0])
		snprintf(err, errlen, "%s", strerror(-ret_code));
	repl_free(r);
	return ret_code;
}

int
repl_bound_addr(const struct repl *r, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];

	if (r->listen_fd < 0)
		return -ENOENT;
	if (getsockname(r->listen_fd, (struct sockaddr *)&ss, &sl) < 0)
		return -errno;
	if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return -EINVAL;
	snprintf(buf, len, "%s:%s", host, port);
	return 0;
}

void
repl_free(struct repl *r)
{
	if (!r)
		return;
	while (r->pairs)
		pair_detach(r->pairs);
	for (struct conn *c = r->conns; c; c = c->next)
		c->dead = true;
	reap_conns(r);
	/* Zombies still in flight are freed by their completions (group_close). */
	if (r->tick.fd >= 0)
		loop_timer_stop(r->loop, &r->tick);
	if (r->hook.registered)
		loop_del_hook(r->loop, &r->hook);
	if (r->listen_fd >= 0) {
		loop_del_fd(r->loop, &r->listen_h);
		close(r->listen_fd);
	}
	if (r->have_key)
		auth_key_wipe(&r->key);
	free(r);
}

/* Consumers in the journal that no pair owns hold space forever: a pair
 * create that never completed, or a pair deleted while the daemon was down. */
static void
drop_stale_consumers(struct group *g, uint64_t keep_id)
{
	struct journal *j = group_journal(g);
	const struct journal_sb *sb = journal_get_sb(j);
	uint64_t ids[JOURNAL_MAX_CONSUMERS];
	unsigned n = 0;

	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		if (sb->consumers[i].id && sb->consumers[i].id != keep_id)
			ids[n++] = sb->consumers[i].id;
	}
	for (unsigned i = 0; i < n; i++) {
		log_warn("group '%s': dropping replication consumer %016" PRIx64 " that no pair "
			 "owns (an unfinished pair create)", group_name(g), ids[i]);
		journal_consumer_remove(j, ids[i]);
	}
}

int
repl_group_attach(struct repl *r, struct group *g)
{
	const struct group_pair_config *pc = &group_get_config(g)->pair;
	struct pair *p;

	if (pc->role == PAIR_ROLE_NONE || (pc->role == PAIR_ROLE_PRIMARY && !pc->confirmed)) {
		drop_stale_consumers(g, 0);
		return 0;
	}
	if (pc->role == PAIR_ROLE_PRIMARY)
		drop_stale_consumers(g, pc->id);
	else
		group_set_secondary(g, true);
	p = pair_new(r, g, pc);
	if (!p)
		return -ENOMEM;
	if (pc->role == PAIR_ROLE_PRIMARY) {
		group_set_sync(g, pc->mode == PAIR_MODE_SYNC);
		if (!r->have_key)
			pair_error(p, "this daemon has no --secret-file: the pair cannot connect");
		else
			primary_dial(p);
	}
	return 0;
}

void
repl_group_detach(struct repl *r, struct group *g)
{
	struct pair *p = pair_find(r, g);

	if (p)
		pair_detach(p);
}

int
repl_pair_create(struct repl *r, struct group *g, const char *remote, enum pair_mode mode,
		 bool initial_copy, repl_create_cb *cb, void *cb_arg, char *err, size_t errlen)
{
	struct group_pair_config pc = {0};
	struct journal *j = group_journal(g);
	struct journal_stats js;
	struct pair *p;
	int ret;

	if (!r->have_key) {
		snprintf(err, errlen, "this daemon was started without --secret-file: the "
			 "replication link needs the shared secret at both sites");
		return -EINVAL;
	}
	if (pair_find(r, g) || group_get_config(g)->pair.role != PAIR_ROLE_NONE) {
		snprintf(err, errlen, "group '%s' is already paired (role %s)", group_name(g),
			 pair_role_name(group_get_config(g)->pair.role));
		return -EEXIST;
	}
	if (strlen(remote) >= sizeof(pc.remote) || !strchr(remote, ':')) {
		snprintf(err, errlen, "remote '%s' is not HOST:PORT", remote);
		return -EINVAL;
	}
	journal_get_stats(j, &js);
	pc.role = PAIR_ROLE_PRIMARY;
	pc.state = initial_copy ? PAIR_STATE_COPY : PAIR_STATE_PAIR;
	pc.mode = mode;
	snprintf(pc.remote, sizeof(pc.remote), "%s", remote);
	do
		randombytes_buf(&pc.id, sizeof(pc.id));
	while (!pc.id);
	pc.start_seq = js.next_seq;
	pc.initial_copy = initial_copy;
	/* The stream starts at the next record: everything before it is in the
	 * P-VOLs (and the copy reads them) or, without a copy, assumed equal. */
	ret = journal_consumer_add(j, pc.id);
	if (ret == 0 && pc.start_seq > js.tail_seq)
		ret = journal_consumer_release(j, pc.id, pc.start_seq - 1);
	if (ret < 0) {
		snprintf(err, errlen, "cannot register the pair in the master journal: %s",
			 strerror(-ret));
		journal_consumer_remove(j, pc.id);
		return ret;
	}
	p = pair_new(r, g, &pc);
	if (!p) {
		journal_consumer_remove(j, pc.id);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memset(&p->saved, 0, sizeof(p->saved)); /* nothing persisted until confirmed */
	p->create_cb = cb;
	p->create_arg = cb_arg;
	p->create_deadline_ms = now_ms() + REPL_CREATE_TIMEOUT_MS;
	group_set_sync(g, mode == PAIR_MODE_SYNC);
	primary_dial(p);
	return 0;
}

void
repl_group_json(struct repl *r, struct group *g, json_t *o)
{
	struct pair *p = r ? pair_find(r, g) : NULL;
	const struct group_pair_config *pc = p ? &p->pc : &group_get_config(g)->pair;
	struct group_stats st;
	uint64_t written, received, restored, newest_ts, restored_ts;
	double lag_s = 0;
	json_t *pj;

	if (pc->role == PAIR_ROLE_NONE || (pc->role == PAIR_ROLE_PRIMARY && !pc->confirmed)) {
		json_object_set_new(o, "role", json_string(p ? "primary" : "simplex"));
		json_object_set_new(o, "state", json_string("SMPL"));
		return;
	}
	group_get_stats(g, &st);
	json_object_set_new(o, "role", json_string(pair_role_name(pc->role)));
	json_object_set_new(o, "state", json_string(pair_state_name(pc->state)));
	if (pc->role == PAIR_ROLE_PRIMARY) {
		struct journal_stats js;

		journal_get_stats(group_journal(g), &js);
		written = st.last_seq;
		received = p ? p->remote_received : 0;
		restored = p ? p->remote_restored : 0;
		newest_ts = js.last_timestamp_ns;
		restored_ts = p ? p->remote_restored_ts : 0;
	} else {
		written = p && p->have_pstat ? p->pstat.written_seq : st.durable_seq;
		received = st.durable_seq;
		restored = st.applied_seq;
		newest_ts = p && p->have_pstat ? p->pstat.newest_ts_ns : 0;
		restored_ts = p ? p->restored_ts : 0;
	}
	if (written < restored)
		written = restored;
	if (restored < written && newest_ts > restored_ts && restored_ts)
		lag_s = (double)(newest_ts - restored_ts) / 1e9;
	pj = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:s}", "role", pair_role_name(pc->role),
		       "state", pair_state_name(pc->state), "mode", pair_mode_name(pc->mode),
		       "peer_site", pc->peer_site, "connected", p && p->ready, "start_seq",
		       (json_int_t)pc->start_seq, "error", p ? p->error : "");
	{
		char id[24];

		snprintf(id, sizeof(id), "%016" PRIx64, pc->id);
		json_object_set_new(pj, "id", json_string(id));
	}
	if (pc->role == PAIR_ROLE_PRIMARY)
		json_object_set_new(pj, "remote", json_string(pc->remote));
	json_object_set_new(pj, "seq",
			    json_pack("{s:I, s:I, s:I}", "written", (json_int_t)written, "received",
				      (json_int_t)received, "restored", (json_int_t)restored));
	json_object_set_new(pj, "lag",
			    json_pack("{s:I, s:f}", "records", (json_int_t)(written - restored),
				      "seconds", lag_s));
	if (pc->role == PAIR_ROLE_PRIMARY && p) {
		uint64_t done = copy_done_bytes(p);

		json_object_set_new(
			pj, "copy",
			json_pack("{s:I, s:I, s:f, s:I, s:b}", "done_bytes", (json_int_t)done,
				  "total_bytes", (json_int_t)p->copy_total, "percent",
				  p->copy_total ? 100.0 * (double)done / (double)p->copy_total : 100.0,
				  "rate_bytes_per_s", (json_int_t)p->copy_rate, "journaled",
				  pc->copy_end_seq != 0 || pc->state == PAIR_STATE_PAIR));
		json_object_set_new(
			pj, "link",
			json_pack("{s:I, s:I, s:I, s:I, s:I}", "batches", (json_int_t)p->batches_sent,
				  "raw_bytes", (json_int_t)p->raw_bytes, "data_bytes",
				  (json_int_t)p->sent_data_bytes, "bytes_sent",
				  (json_int_t)(p->conn && !p->conn->dead ? link_bytes_sent(p->conn->link) : 0),
				  "base_bytes", (json_int_t)st.base_bytes));
	} else if (p) {
		json_object_set_new(pj, "link",
				    json_pack("{s:I, s:I, s:I, s:I}", "batches",
					      (json_int_t)p->batches_received, "out_of_order",
					      (json_int_t)p->batches_early, "raw_bytes",
					      (json_int_t)p->bytes_received_raw, "bytes_received",
					      (json_int_t)(p->conn && !p->conn->dead
								   ? link_bytes_received(p->conn->link)
								   : 0)));
	}
	if (pc->role == PAIR_ROLE_SECONDARY && p && p->have_pstat) {
		json_object_set_new(
			pj, "copy",
			json_pack("{s:I, s:I, s:f}", "done_bytes",
				  (json_int_t)p->pstat.copy_done_bytes, "total_bytes",
				  (json_int_t)p->pstat.copy_total_bytes, "percent",
				  p->pstat.copy_total_bytes
					  ? 100.0 * (double)p->pstat.copy_done_bytes /
						    (double)p->pstat.copy_total_bytes
					  : 100.0));
	}
	json_object_set_new(o, "pair", pj);
}
