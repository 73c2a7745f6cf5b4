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
#include "common/event_hook.h"
#include "bitmap/diffmap.h"
#include "journal/journal.h"
#include "pair/pair_fsm.h"
#include "repl/batch_compress.h"
#include "repl/auth.h"
#include "repl/link.h"
#include "repl/reorder.h"
#include "repl/wire_codec.h"

#define MiB (1u << 20)
#define REPL_MAX_WINDOW 6u           /* READ_JOURNAL in flight: replies fit the link queue */
#define REPL_MAX_QUEUED 16u          /* requests the primary holds per link */
#define REPL_MAX_READS 4u            /* journal reads in flight per pair */
#define REPL_LONG_POLL_MS 500u       /* an empty answer after this long without records */
#define REPL_COPY_DEPTH 32u          /* BASE chunks in flight */
#define REPL_COPY_JOURNAL_PCT 40u    /* the copy waits while the journal is fuller */
#define REPL_COPY_CKPT_MS 50u        /* ...asking for a checkpoint at most this often */
#define REPL_CREATE_TIMEOUT_MS 60000u
#define REPL_BACKOFF_MIN_MS 200u
#define REPL_BACKOFF_MAX_MS 5000u
#define REPL_TICK_MS 100u
#define REPL_SECONDARY_BUDGET (96u * MiB) /* bytes received but not yet restored, plus requests */
#define REPL_REPLAY_MAX_BYTES (32u * MiB)
#define REPL_REPLAY_MAX_COUNT 4096u
#define REPL_TS_RING 64u
#define REPL_CMD_TIMEOUT_MS 60000u
#define REPL_AUTO_BACKOFF_MIN_MS 1000u
#define REPL_AUTO_BACKOFF_MAX_MS 60000u
#define REPL_PFUL_HYSTERESIS_PCT 5u
/* zstd's fast mode: compression runs on the loop thread, and at level 1 a
 * 4 MiB batch costs ~10 ms there; -3 is several times faster and still
 * halves data that compresses 2:1. */
#define REPL_ZSTD_DEFAULT_LEVEL (-3)
/* The master journal's read cache while a secondary reads it (see
 * journal_set_read_cache): at 1.5 GB/s of host writes, 40 ms of them. */
#define REPL_READ_CACHE_DEFAULT (64u << 20)
/* Async: fewer than REPL_COALESCE_RECORDS new records wait up to
 * REPL_COALESCE_US to travel together (see primary_serve). */
#define REPL_COALESCE_RECORDS 128u
#define REPL_COALESCE_US 1000u

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
	uint64_t gen;   /* p->copy_gen when submitted */
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
	struct batch_compressor *bc; /* primary; NULL: compression off */
	uint64_t coalesce_until_ns;  /* primary, async: new records wait until then */
	uint64_t raw_bytes, sent_data_bytes, batches_sent;
	uint64_t last_status_ms;

	/* Primary: initial copy. */
	struct copy_io copies[REPL_COPY_DEPTH];
	uint64_t copy_gen; /* bumped when a copy stops or starts: late chunks clear no bits */
	uint64_t copy_ckpt_ms; /* last checkpoint asked for by a throttled copy */
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

	/* Lifecycle. */
	uint64_t last_contact_ms;  /* last message from the peer (or link up) */
	uint64_t down_since_ms;    /* no usable link since (0: up) */
	repl_create_cb *cmd_cb;    /* a control command waiting for the peer or a drain */
	void *cmd_arg;
	uint64_t cmd_deadline_ms;
	enum pair_cmd cmd_kind;
	uint64_t drain_target;     /* suspend --drain: serve and wait up to this seq */
	struct jread fold;         /* folding unrestored records into the bitmaps */
	uint64_t fold_next;
	bool resync_pending;       /* RESYNC sent, waiting for the bitmap and the answer */
	bool swap_pending;         /* secondary: SWAP sent; primary: draining for a SWAP */
	uint64_t resync_start, resync_gen;
	bool resync_force;
	bool takeover_pending;     /* secondary: restoring what arrived before SSWS */
	uint64_t auto_next_ms;     /* automatic resync: next attempt */
	unsigned auto_backoff_ms;
	uint64_t held_since_ms;    /* inflow control: host writes held since */
	uint64_t stuck_since_ms;   /* appended records not becoming durable since */
	uint64_t last_durable;
	struct wire_pair_cmd swap_cmd; /* primary: the SWAP being drained for */
	bool swap_recover;             /* secondary: a handed-over primary re-sends its answer */
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
	struct loop_timer nudge; /* one-shot: ends a reply's coalescing delay */
	uint64_t nudge_at_ns;    /* when it fires; 0: disarmed */
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

static bool state_flowing(enum pair_state st);
static bool state_suspended(enum pair_state st);
static enum pair_state state_from_wire(uint8_t w);
static bool consumer_released(struct group *g, uint64_t id, uint64_t *ret);

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
	group_set_pair_config(p->g, &p->pc);
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

/* One of p's reads, copies or replays finished. False when p is a zombie
 * (then freed with its last one): the caller must not touch it. */
static bool
pair_io_done(struct pair *p)
{
	p->busy--;
	if (!p->zombie)
		return true;
	pair_put(p);
	return false;
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
	int r;

	d->req_id = rd->req_id;
	d->first_seq = rd->jr.first_seq;
	d->last_seq = rd->jr.last_seq;
	d->nrecords = rd->jr.nrecords;
	d->raw_len = rd->jr.out_len;
	d->compression = WIRE_COMP_NONE;
	d->data = rd->jr.data; /* rd->buf, or borrowed from the journal's read cache */
	d->data_len = rd->jr.out_len;
	if (p->bc && rd->jr.out_len >= 4096) {
		const void *z;
		size_t n = batch_compress(p->bc, rd->jr.data, rd->jr.out_len, &z);

		if (n) {
			d->compression = WIRE_COMP_ZSTD;
			d->data = z;
			d->data_len = (uint32_t)n;
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
	if (!pair_io_done(p))
		return;
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

/* The nudge fired: the loop's hook serves what waited. */
static void
repl_nudged(struct loop *loop, void *arg)
{
	struct repl *r = arg;

	(void)loop;
	r->nudge_at_ns = 0;
}

/* Makes the loop run its hook at `at` (monotonic ns) or earlier. */
static void
nudge_at(struct repl *r, uint64_t at)
{
	uint64_t now = util_mono_ns();

	if (r->nudge_at_ns && r->nudge_at_ns <= at && r->nudge_at_ns > now)
		return; /* an earlier nudge is due */
	/* Rounded up: fired before `at`, it would find the records still held. */
	if (loop_timer_arm(&r->nudge, at > now ? (at - now + 999) / 1000 : 0) == 0)
		r->nudge_at_ns = at;
}

static size_t
read_cache_bytes(const struct repl *r)
{
	if (r->opts.read_cache < 0)
		return 0;
	return r->opts.read_cache ? (size_t)r->opts.read_cache : REPL_READ_CACHE_DEFAULT;
}

static void
primary_serve(struct pair *p)
{
	struct journal *j = group_journal(p->g);
	struct journal_stats js;
	uint64_t now, limit, avail;

	if (!p->ready)
		return;
	journal_set_read_cache(j, read_cache_bytes(p->r));
	journal_get_stats(j, &js);
	/* Suspended: nothing is served (long polls come back empty); draining
	 * for a suspend: nothing past the suspend point. */
	limit = state_flowing(p->pc.state) && !p->resync_pending ? js.durable_seq : 0;
	if (p->drain_target)
		limit = MIN(limit, p->drain_target);
	avail = limit;
	/* Async: a few new records wait up to REPL_COALESCE_US for more, so
	 * they travel together. At a low queue depth a reply per record costs
	 * the primary a send (and on loopback the secondary's wakeup) and the
	 * secondary a request back, per host write; the lag grows by at most
	 * the delay. Sync mode (hosts wait for the secondary) and drains
	 * (a command waits) go at once. */
	if (p->nreqs && p->cursor <= limit && limit - p->cursor + 1 < REPL_COALESCE_RECORDS &&
	    p->pc.mode == PAIR_MODE_ASYNC && !p->drain_target) {
		uint64_t now_ns = util_mono_ns();

		if (!p->coalesce_until_ns)
			p->coalesce_until_ns = now_ns + REPL_COALESCE_US * 1000ull;
		if (now_ns < p->coalesce_until_ns) {
			limit = p->cursor - 1;
			/* Every time: the nudge armed may be for an earlier
			 * deadline (another pair's, or a wait already over). */
			nudge_at(p->r, p->coalesce_until_ns);
		}
	}
	while (p->nreqs && p->cursor <= limit) {
		struct jread *rd = NULL;
		unsigned reading = 0;
		int r;

		for (unsigned i = 0; i < REPL_MAX_READS; i++) {
			if (p->reads[i].busy)
				reading++;
			else if (!rd)
				rd = &p->reads[i];
		}
		/* Room on the link for this reply and those of the reads in
		 * flight; on_writable wakes us when it drains. */
		if (!rd || !link_can_send(p->conn->link,
		                          (reading + 1u) * (WIRE_HDR_SIZE + WIRE_MAX_PAYLOAD)))
			break;
		memset(&rd->jr, 0, sizeof(rd->jr));
		rd->jr.from_seq = p->cursor;
		rd->jr.max_seq = UINT64_MAX;
		rd->jr.max_bytes = MIN(p->reqs[0].max_bytes, WIRE_MAX_DATA);
		rd->jr.out = rd->buf;
		rd->jr.out_cap = WIRE_MAX_DATA;
		rd->jr.done = jread_done;
		rd->jr.arg = rd;
		rd->jr.may_borrow = true; /* send_data encodes it before we return */
		r = journal_read_records(j, &rd->jr);
		if (r == -EAGAIN)
			break;
		if (r == JOURNAL_READ_CACHED) {
			/* Complete already: sent now, and rd is free again. */
			rd->req_id = p->reqs[0].req_id;
			p->cursor = rd->jr.last_seq + 1;
			pop_req(p, 0);
			send_data(p, rd);
			if (!p->ready)
				return; /* the send failed the link */
			continue;
		}
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
	if (p->cursor > avail)
		p->coalesce_until_ns = 0; /* all sent: the next record starts a new wait */
	/* Long polls that found nothing. */
	now = now_ms();
	for (unsigned i = 0; i < p->nreqs;) {
		if (now >= p->req_deadline_ms[i] && p->cursor > avail) {
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

static uint64_t dirty_bytes(struct group *g);

static uint64_t
copy_done_bytes(const struct pair *p)
{
	uint64_t done = 0;

	if (p->pc.resync) {
		uint64_t left = dirty_bytes(p->g);

		return p->pc.copy_total > left ? p->pc.copy_total - left : 0;
	}

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
	if (!pair_io_done(p))
		return;
	if (res < 0) {
		p->copy_failed = true;
		pair_error(p, "initial copy of volume '%s' at offset %" PRIu64 " failed: %s; copy "
			   "stopped", c->io.vol->name, c->off, strerror(-res));
	} else {
		if (io->last_seq > p->copy_max_seq)
			p->copy_max_seq = io->last_seq;
		if (p->pc.resync && c->gen == p->copy_gen && p->pc.state == PAIR_STATE_COPY &&
		    group_diffmap(p->g, c->vol)) {
			/* In the stream now: an interrupted resync re-marks it by the
			 * fold if the secondary never restores it. */
			struct diffmap *m = group_diffmap(p->g, c->vol);
			uint64_t rs = diffmap_region_size(m);

			diffmap_clear_regions(m, c->off / rs, (io->len + rs - 1) / rs);
		}
	}
	copy_note_progress(p);
	loop_wakeup(p->r->loop);
}

/* Resync: moves the cursor to the next changed region (of copy_vol or a
 * later volume); -1 when there is none. */
static int
resync_next_chunk(struct pair *p)
{
	while (p->copy_vol < group_nvolumes(p->g)) {
		struct diffmap *m = group_diffmap(p->g, p->copy_vol);
		uint64_t rs = m ? diffmap_region_size(m) : 0;
		uint64_t next = m ? diffmap_next_set(m, p->copy_off / rs) : UINT64_MAX;

		if (next != UINT64_MAX) {
			if (next * rs > p->copy_off)
				p->copy_off = next * rs;
			return 0;
		}
		p->copy_vol++;
		p->copy_off = 0;
	}
	return -1;
}

/* Resync: consecutive changed regions from copy_off, up to one record. */
static uint32_t
resync_chunk_len(struct pair *p, const struct volume *v)
{
	struct diffmap *m = group_diffmap(p->g, p->copy_vol);
	uint64_t rs = diffmap_region_size(m), off = p->copy_off, end = off;

	while (end < v->size && end - off < JOURNAL_MAX_PAYLOAD && diffmap_test(m, end / rs))
		end = MIN((end / rs + 1) * rs, v->size);
	if (end == off)
		end = MIN(off + rs, v->size);
	return (uint32_t)MIN(end - off, (uint64_t)JOURNAL_MAX_PAYLOAD);
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
		 * as the secondary drains it. Space only the checkpoint holds (writes
		 * journaled before the copy began, say) is freed now rather than at
		 * the next timer tick. */
		if (js.used_bytes * 100 > js.area_size * REPL_COPY_JOURNAL_PCT) {
			uint64_t now = now_ms();

			if (now - p->copy_ckpt_ms >= REPL_COPY_CKPT_MS) {
				p->copy_ckpt_ms = now;
				group_request_checkpoint(p->g);
			}
			return;
		}
		if (p->pc.resync && resync_next_chunk(p) < 0) {
			p->copy_vol = group_nvolumes(p->g);
		}
		while (p->copy_vol < group_nvolumes(p->g) &&
		       p->copy_off >= group_volume(p->g, p->copy_vol)->size) {
			p->copy_vol++;
			p->copy_off = 0;
			if (p->pc.resync && p->copy_vol < group_nvolumes(p->g))
				resync_next_chunk(p);
		}
		if (p->copy_vol >= group_nvolumes(p->g))
			break;
		v = group_volume(p->g, p->copy_vol);
		len = (uint32_t)MIN((uint64_t)JOURNAL_MAX_PAYLOAD, v->size - p->copy_off);
		if (p->pc.resync)
			len = resync_chunk_len(p, v);
		memset(&c->io, 0, sizeof(c->io));
		c->io.op = GROUP_IO_BASE;
		c->io.vol = v;
		c->io.offset = p->copy_off;
		c->io.len = len;
		c->io.buf = c->buf;
		c->io.done = copy_io_done;
		c->vol = p->copy_vol;
		c->off = p->copy_off;
		c->gen = p->copy_gen;
		c->busy = true;
		p->busy++;
		idle = false;
		p->copy_off += len;
		group_io_submit(p->g, &c->io);
		js.used_bytes += len; /* roughly: keeps one pass from overshooting */
	}
	/* The loop may stop early (nothing left to start): chunks in later
	 * slots can still be in flight, and the copy ends only after them. */
	for (unsigned i = 0; i < REPL_COPY_DEPTH; i++)
		idle = idle && !p->copies[i].busy;
	copy_note_progress(p);
	if (idle && p->copy_vol >= group_nvolumes(p->g)) {
		/* Every chunk is journaled: the copy ends with the newest BASE record. */
		p->pc.copy_end_seq = MAX(p->copy_max_seq, p->pc.start_seq);
		log_info("group '%s': %s journaled (%" PRIu64 " bytes, last seq %" PRIu64
			 "); waiting for the secondary to restore it", group_name(p->g),
			 p->pc.resync ? "resync copy" : "initial copy",
			 p->pc.resync ? p->pc.copy_total : p->copy_total, p->pc.copy_end_seq);
		pair_save(p);
	}
}

static uint8_t state_to_wire(enum pair_state st);

static void
send_primary_status(struct pair *p)
{
	struct wire_msg m = {.hdr.type = WIRE_PRIMARY_STATUS};
	struct group_stats st;
	struct journal_stats js;

	group_get_stats(p->g, &st);
	journal_get_stats(group_journal(p->g), &js);
	m.u.primary_status.state = state_to_wire(p->pc.state);
	m.u.primary_status.gen = p->pc.gen;
	m.u.primary_status.synced_gen = p->pc.synced_gen;
	m.u.primary_status.start_seq = p->pc.start_seq;
	snprintf(m.u.primary_status.reason, sizeof(m.u.primary_status.reason), "%s", p->pc.reason);
	if (p->r->opts.advertise)
		snprintf(m.u.primary_status.primary_addr, sizeof(m.u.primary_status.primary_addr),
			 "%s", p->r->opts.advertise);
	else
		repl_bound_addr(p->r, m.u.primary_status.primary_addr,
				sizeof(m.u.primary_status.primary_addr));
	m.u.primary_status.written_seq = st.last_seq;
	m.u.primary_status.copy_done_bytes = copy_done_bytes(p);
	m.u.primary_status.copy_total_bytes = p->copy_total;
	m.u.primary_status.newest_ts_ns = js.last_timestamp_ns;
	if (send_msg(p, &m) == 0)
		p->last_status_ms = now_ms();
}

static void primary_suspend(struct pair *p, enum pair_state st, enum pair_cause cause,
			    const char *reason);
static void clear_bitmaps(struct group *g);
static void pair_set_state(struct pair *p, enum pair_state st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void cmd_finish(struct pair *p, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
primary_check_state(struct pair *p)
{
	if (p->pc.state == PAIR_STATE_COPY && p->pc.copy_end_seq &&
	    p->remote_restored >= p->pc.copy_end_seq) {
		bool resync = p->pc.resync;

		if (resync) {
			/* Every changed region was copied and is restored. */
			clear_bitmaps(p->g);
			p->pc.resync = false;
		}
		pair_set_state(p, PAIR_STATE_PAIR, "%s restored at the secondary",
			       resync ? "resync" : "initial copy");
	}
	if (p->drain_target && p->remote_restored >= p->drain_target) {
		uint64_t at = p->drain_target;

		p->drain_target = 0;
		primary_suspend(p, PAIR_STATE_PSUS, PAIR_CAUSE_OPERATOR, "suspended by the "
				"operator after draining");
		cmd_finish(p, 0, "suspended (PSUS) after the secondary restored everything up to "
			   "seq %" PRIu64 ": the S-VOLs equal the P-VOLs at that point", at);
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
	free(rp->io.buf);
	free(rp);
	if (!pair_io_done(p))
		return;
	if (res < 0 && state_flowing(p->pc.state)) {
		struct wire_msg m = {.hdr.type = WIRE_PAIR_CMD};

		m.u.pair_cmd.cmd = WIRE_CMD_SUSPEND;
		m.u.pair_cmd.pair_id = p->pc.id;
		m.u.pair_cmd.seq = seq;
		snprintf(m.u.pair_cmd.text, sizeof(m.u.pair_cmd.text),
			 "I/O error at site '%s' restoring seq %" PRIu64 ": %s", p->r->site, seq,
			 strerror(-res));
		send_msg(p, &m);
		pair_set_state(p, PAIR_STATE_PSUE, "%s", m.u.pair_cmd.text);
	}
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
	if (!state_flowing(p->pc.state) || p->takeover_pending)
		window = 0; /* suspended: the primary serves nothing (a swap drains on) */
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
	/* Progress the primary is waiting for (sync mode acks, journal release);
	 * suspended or taken over, our numbers are not the primary's stream. */
	if (window && (st.durable_seq != p->sent_received || applied != p->sent_restored)) {
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
	enum pair_state st = state_from_wire(m->state);

	p->pstat = *m;
	p->have_pstat = true;
	if (m->primary_addr[0] && strcmp(m->primary_addr, p->pc.peer_addr)) {
		snprintf(p->pc.peer_addr, sizeof(p->pc.peer_addr), "%s", m->primary_addr);
		pair_save(p);
	}
	if (p->pc.state == PAIR_STATE_SSWS || p->takeover_pending)
		return; /* this site took over: the primary learns it at its next attach */
	if (p->pc.bitmap_clear_pending && state_flowing(st) && m->start_seq == p->pc.start_seq) {
		/* The primary holds our bits durably (merged before it said COPY). */
		clear_bitmaps(p->g);
		p->pc.bitmap_clear_pending = false;
		pair_save(p);
	}
	if (st == PAIR_STATE_PAIR && p->pc.resync)
		p->pc.resync = false;
	if (st != p->pc.state)
		pair_set_state(p, st, "%s", m->reason[0] ? m->reason : "from the primary");
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
	p->auto_backoff_ms = REPL_AUTO_BACKOFF_MIN_MS;
	p->last_contact_ms = now_ms();
	for (unsigned i = 0; i < group_nvolumes(g); i++)
		p->copy_total += group_volume(g, i)->size;
	if (pc->role == PAIR_ROLE_PRIMARY) {
		int level = r->opts.compress_level;

		if (level >= 0) {
			p->bc = batch_compressor_new(level ? level : REPL_ZSTD_DEFAULT_LEVEL,
						     WIRE_MAX_DATA);
			if (!p->bc)
				goto err;
		}
		for (unsigned i = 0; i < REPL_MAX_READS; i++) {
			p->reads[i].p = p;
			p->reads[i].buf = util_aligned_alloc(4096, WIRE_MAX_DATA);
			if (!p->reads[i].buf)
				goto err;
		}
		p->fold.p = p;
		p->fold.buf = util_aligned_alloc(4096, WIRE_MAX_DATA);
		if (!p->fold.buf)
			goto err;
		p->fold_next = pc->start_seq;
		if (pc->fold_to) {
			uint64_t rel;

			if (consumer_released(g, pc->id, &rel))
				p->fold_next = rel + 1;
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
	batch_compressor_free(p->bc);
	ZSTD_freeDCtx(p->dctx);
	for (unsigned i = 0; i < REPL_MAX_READS; i++)
		free(p->reads[i].buf);
	for (unsigned i = 0; i < REPL_COPY_DEPTH; i++)
		free(p->copies[i].buf);
	free(p->fold.buf);
	free(p);
}

static void pair_retire(struct pair *p);

/* Unlinks p from its group; freed now or by its last completion. */
static void
pair_detach(struct pair *p)
{
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
	cmd_finish(p, -ECANCELED, "the pair went away before the command finished");
	pair_retire(p);
}

/* Takes p off the active list; freed now, or by its last completion. */
static void
pair_retire(struct pair *p)
{
	struct repl *r = p->r;

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
		struct group_pair_config none = {0};

		journal_consumer_remove(group_journal(p->g), p->pc.id);
		/* Nothing of the attempt stays, on disk or in the group. */
		if (memcmp(&p->saved, &none, sizeof(none)))
			p->r->ops->save(p->r->arg, p->g, &none);
		group_set_pair_config(p->g, &none);
		log_warn("group '%s': pair create with %s failed: %s", group_name(p->g),
			 p->pc.remote, msg);
		cb(p->create_arg, err, msg);
		pair_detach(p);
		return;
	}
	cb(p->create_arg, 0, NULL);
}

static struct pair *pair_new(struct repl *r, struct group *g, const struct group_pair_config *pc);
static void pair_detach(struct pair *p);
static void pair_forget(struct pair *p);

/* ------------------------------------------------------------------ */
/* Lifecycle: states, suspend and fold, resync, swap, takeover, delete */
/* ------------------------------------------------------------------ */

static void primary_dial(struct pair *p);
static void send_primary_status(struct pair *p);

static bool
state_flowing(enum pair_state st)
{
	return st == PAIR_STATE_COPY || st == PAIR_STATE_PAIR || st == PAIR_STATE_PFUL;
}

static bool
state_suspended(enum pair_state st)
{
	return st == PAIR_STATE_PSUS || st == PAIR_STATE_PSUE || st == PAIR_STATE_PFUS;
}

static uint64_t
new_gen(void)
{
	uint64_t g;

	do
		randombytes_buf(&g, sizeof(g));
	while (!g);
	return g;
}

/* Writes tracked while suspended make this site's data its own: a new
 * generation, so a copy from the other site can't silently drop them. */
static void
note_local_writes(struct pair *p)
{
	if (!group_tracking(p->g) || !group_first_tracked_seq(p->g) ||
	    p->pc.gen != p->pc.synced_gen || state_flowing(p->pc.state))
		return; /* (tracking while flowing: a drain, whose writes do flow) */
	p->pc.gen = new_gen();
	pair_save(p);
	log_info("group '%s': writes while the pair is %s (from seq %" PRIu64 "): generation now "
		 "%016" PRIx64, group_name(p->g), pair_state_name(p->pc.state),
		 group_first_tracked_seq(p->g), p->pc.gen);
}

static enum pair_state
state_from_wire(uint8_t w)
{
	static const enum pair_state map[] = {
		[WIRE_STATE_COPY] = PAIR_STATE_COPY, [WIRE_STATE_PAIR] = PAIR_STATE_PAIR,
		[WIRE_STATE_PFUL] = PAIR_STATE_PFUL, [WIRE_STATE_PFUS] = PAIR_STATE_PFUS,
		[WIRE_STATE_PSUS] = PAIR_STATE_PSUS, [WIRE_STATE_PSUE] = PAIR_STATE_PSUE,
		[WIRE_STATE_SSWS] = PAIR_STATE_SSWS,
	};

	return w < ARRAY_SIZE(map) ? map[w] : PAIR_STATE_PSUE;
}

static uint8_t
state_to_wire(enum pair_state st)
{
	switch (st) {
	case PAIR_STATE_COPY:
		return WIRE_STATE_COPY;
	case PAIR_STATE_PFUL:
		return WIRE_STATE_PFUL;
	case PAIR_STATE_PFUS:
		return WIRE_STATE_PFUS;
	case PAIR_STATE_PSUS:
		return WIRE_STATE_PSUS;
	case PAIR_STATE_PSUE:
		return WIRE_STATE_PSUE;
	case PAIR_STATE_SSWS:
		return WIRE_STATE_SSWS;
	default:
		return WIRE_STATE_PAIR;
	}
}

/* Every transition is persisted before anything reports it. */
static void
pair_set_state(struct pair *p, enum pair_state st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
pair_set_state(struct pair *p, enum pair_state st, const char *fmt, ...)
{
	enum pair_state old = p->pc.state;
	char reason[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	p->pc.state = st;
	snprintf(p->pc.reason, sizeof(p->pc.reason), "%s", reason);
	pair_save(p);
	if (old != st) {
		log_info("group '%s': pair state %s -> %s: %s", group_name(p->g),
			 pair_state_name(old), pair_state_name(st), reason);
		if (p->r->opts.on_event)
			event_hook_run(p->r->opts.on_event, group_name(p->g), pair_state_name(old),
				       pair_state_name(st), reason);
	}
	if (p->pc.role == PAIR_ROLE_PRIMARY && p->ready)
		send_primary_status(p);
}

static void
cmd_finish(struct pair *p, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
cmd_finish(struct pair *p, int err, const char *fmt, ...)
{
	repl_create_cb *cb = p->cmd_cb;
	char msg[512];
	va_list ap;

	if (!cb)
		return;
	p->cmd_cb = NULL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cb(p->cmd_arg, err, msg);
}

static void
cmd_begin(struct pair *p, enum pair_cmd kind, repl_create_cb *cb, void *arg)
{
	p->cmd_cb = cb;
	p->cmd_arg = arg;
	p->cmd_kind = kind;
	p->cmd_deadline_ms = now_ms() + REPL_CMD_TIMEOUT_MS;
}

/* The live release (not the superblock's copy, which may lag). */
static bool
consumer_released(struct group *g, uint64_t id, uint64_t *ret)
{
	return journal_consumer_released(group_journal(g), id, ret) == 0;
}

static uint64_t
dirty_bytes(struct group *g)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < group_nvolumes(g); i++) {
		if (group_diffmap(g, i))
			n += diffmap_dirty_bytes(group_diffmap(g, i));
	}
	return n;
}

static void
mark_everything(struct pair *p, const char *why)
{
	log_warn("group '%s': %s: marking every region of every volume as changed",
		 group_name(p->g), why);
	for (unsigned i = 0; i < group_nvolumes(p->g); i++) {
		if (group_diffmap(p->g, i))
			diffmap_mark(group_diffmap(p->g, i), 0, group_volume(p->g, i)->size);
	}
}

static void
clear_bitmaps(struct group *g)
{
	for (unsigned i = 0; i < group_nvolumes(g); i++) {
		if (group_diffmap(g, i))
			diffmap_clear_all(group_diffmap(g, i));
	}
	group_sync_bitmaps(g);
}

/* --- fold: records the secondary has not restored become bitmap bits --- */

static void
fold_finish(struct pair *p)
{
	int r = group_sync_bitmaps(p->g);

	if (r < 0) {
		pair_error(p, "cannot sync the difference bitmaps: %s; journal space is kept",
			   strerror(-r));
		return;
	}
	p->pc.fold_to = 0;
	pair_save(p);
	r = journal_consumer_remove(group_journal(p->g), p->pc.id);
	if (r < 0 && r != -ENOENT)
		log_errno(r, "group '%s': cannot drop the pair's journal consumer", group_name(p->g));
	log_info("group '%s': records not restored at the secondary are in the difference "
		 "bitmaps (%" PRIu64 " bytes marked); master journal space released",
		 group_name(p->g), dirty_bytes(p->g));
	loop_wakeup(p->r->loop);
}

/* The records of one read folded into the bitmaps. */
static void
fold_apply(struct pair *p, struct journal_read_req *jr, int res)
{
	struct journal_rec rec;
	const void *payload;
	size_t pos = 0;
	uint64_t expect = jr->first_seq;

	if (res < 0) {
		mark_everything(p, "cannot read back unrestored records");
		p->fold_next = p->pc.fold_to + 1;
	} else {
		uint64_t seed = journal_get_sb(group_journal(p->g))->seed;

		while (wire_records_next(jr->data, jr->out_len, seed, &pos, &expect, &rec, &payload) > 0) {
			struct diffmap *m = rec.volume < group_nvolumes(p->g)
						    ? group_diffmap(p->g, rec.volume)
						    : NULL;

			if (rec.kind != JOURNAL_REC_MARKER && m)
				diffmap_mark(m, rec.offset, rec.length);
		}
		if (expect != jr->last_seq + 1)
			mark_everything(p, "unrestored records failed their checks");
		p->fold_next = jr->last_seq + 1;
	}
	loop_wakeup(p->r->loop);
}

static void
fold_read_done(struct journal_read_req *jr, int res)
{
	struct jread *rd = jr->arg;
	struct pair *p = rd->p;

	rd->busy = false;
	if (pair_io_done(p))
		fold_apply(p, jr, res);
}

static void
fold_pump(struct pair *p)
{
	struct jread *rd = &p->fold;
	int r;

	if (!p->pc.fold_to || rd->busy)
		return;
	if (p->fold_next > p->pc.fold_to) {
		fold_finish(p);
		return;
	}
	memset(&rd->jr, 0, sizeof(rd->jr));
	rd->jr.from_seq = p->fold_next;
	rd->jr.max_seq = p->pc.fold_to;
	rd->jr.max_bytes = WIRE_MAX_DATA;
	rd->jr.out = rd->buf;
	rd->jr.out_cap = WIRE_MAX_DATA;
	rd->jr.done = fold_read_done;
	rd->jr.arg = rd;
	r = journal_read_records(group_journal(p->g), &rd->jr);
	if (r == -EAGAIN)
		return;
	if (r == JOURNAL_READ_CACHED) {
		fold_apply(p, &rd->jr, 0); /* and the wakeup pumps the next read */
		return;
	}
	if (r < 0) {
		mark_everything(p, "unrestored records are gone from the journal");
		p->fold_next = p->pc.fold_to + 1;
		fold_finish(p);
		return;
	}
	rd->busy = true;
	p->busy++;
}

/* Primary: COPY/PAIR/PFUL -> st. Host writes go on, tracked by the bitmaps;
 * the records the secondary has not restored are folded into them, then
 * the journal forgets them. */
static void
primary_suspend(struct pair *p, enum pair_state st, enum pair_cause cause, const char *reason)
{
	struct journal_stats js;
	uint64_t rel = 0;
	bool held;

	if (state_suspended(p->pc.state) || p->pc.role != PAIR_ROLE_PRIMARY)
		return;
	if (group_set_tracking(p->g, true) < 0) {
		pair_error(p, "cannot suspend: this daemon keeps no difference bitmaps");
		return;
	}
	journal_get_stats(group_journal(p->g), &js);
	held = consumer_released(p->g, p->pc.id, &rel);
	/* The release may lag what the secondary reported (nothing before
	 * start_seq is released). */
	if (held && p->remote_restored > rel && p->remote_restored < js.next_seq)
		rel = p->remote_restored;
	p->drain_target = 0;
	p->held_since_ms = 0;
	p->resync_pending = false;
	group_set_inflow_limit(p->g, 0);
	group_set_sync(p->g, false); /* errors suspend, they never block hosts */
	/* Records not yet durable may never be (a full journal waits for the
	 * very space this suspend frees): they are marked from memory, and only
	 * durable ones are read back. */
	group_mark_undurable(p->g);
	p->pc.fold_to = held && rel < js.durable_seq ? js.durable_seq : 0;
	p->fold_next = held ? rel + 1 : js.next_seq;
	p->pc.cause = cause;
	p->copy_gen++;
	if (p->pc.state == PAIR_STATE_COPY && !p->pc.resync) {
		/* An initial copy stops here: what it has not journaled yet (from
		 * its oldest chunk in flight on) is a difference too. */
		copy_note_progress(p);
		for (unsigned v = p->pc.copy_volume; v < group_nvolumes(p->g); v++) {
			uint64_t from = v == p->pc.copy_volume ? p->pc.copy_offset : 0;
			struct volume *vol = group_volume(p->g, v);

			if (group_diffmap(p->g, v) && from < vol->size)
				diffmap_mark(group_diffmap(p->g, v), from, vol->size - from);
		}
	}
	p->auto_backoff_ms = REPL_AUTO_BACKOFF_MIN_MS;
	p->auto_next_ms = now_ms() + REPL_AUTO_BACKOFF_MIN_MS;
	pair_set_state(p, st, "%s", reason);
	if (p->pc.fold_to)
		fold_pump(p);
	else if (held)
		fold_finish(p);
	if (p->swap_pending) {
		p->swap_pending = false;
		group_set_secondary(p->g, false);
	}
}

/* --- bitmaps over the link --- */

static int
send_bitmaps(struct pair *p, const uint16_t *wire_ids)
{
	const uint32_t chunk_bits = WIRE_MAX_DATA * 8u;
	uint8_t *buf = malloc(WIRE_MAX_DATA);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (unsigned i = 0; i < group_nvolumes(p->g) && r == 0; i++) {
		struct diffmap *m = group_diffmap(p->g, i);
		uint64_t n = m ? diffmap_nregions(m) : 0;

		for (uint64_t first = m ? diffmap_next_set(m, 0) : UINT64_MAX; first < n && r == 0;) {
			struct wire_msg msg = {.hdr.type = WIRE_BITMAP};
			uint32_t nbits = (uint32_t)MIN((uint64_t)chunk_bits, n - first);

			diffmap_get_bits(m, first, nbits, buf);
			msg.u.bitmap.volume = wire_ids[i];
			msg.u.bitmap.region_size = diffmap_region_size(m);
			msg.u.bitmap.first_region = first;
			msg.u.bitmap.nbits = nbits;
			msg.u.bitmap.bits = buf;
			r = send_msg(p, &msg);
			first = diffmap_next_set(m, first + nbits);
		}
	}
	if (r == 0) {
		struct wire_msg msg = {.hdr.type = WIRE_BITMAP};

		msg.u.bitmap.flags = WIRE_BITMAP_LAST;
		msg.u.bitmap.region_size = GROUP_DEFAULT_REGION_SIZE;
		r = send_msg(p, &msg);
	}
	free(buf);
	return r;
}

static void
on_bitmap(struct pair *p, const struct wire_bitmap *b, unsigned local_vol)
{
	struct diffmap *m = group_diffmap(p->g, local_vol);
	int64_t n;

	if (b->nbits == 0)
		return;
	if (!m) {
		fail_link(p, EPROTO, "bitmap for volume %u, which has no difference bitmap here",
			  b->volume);
		return;
	}
	n = diffmap_merge(m, b->region_size, b->first_region, b->bits, b->nbits);
	if (n < 0)
		fail_link(p, EPROTO, "bitmap chunk for volume %u refused: %s", b->volume,
			  strerror((int)-n));
}

/* --- resync (primary) --- */

static int
primary_start_resync(struct pair *p, bool force, char *err, size_t errlen)
{
	struct journal *j = group_journal(p->g);
	struct journal_stats js;
	struct wire_msg m = {.hdr.type = WIRE_PAIR_CMD};
	int r;

	if (!p->ready) {
		snprintf(err, errlen, "the secondary (%s) is not connected%s%s", p->pc.remote,
			 p->error[0] ? ": " : "", p->error);
		return -ENOTCONN;
	}
	if (p->pc.fold_to) {
		snprintf(err, errlen, "still folding unrestored records into the bitmaps; retry "
			 "in a moment");
		return -EAGAIN;
	}
	if (p->resync_pending || p->swap_pending) {
		snprintf(err, errlen, "a resync or swap is already starting");
		return -EBUSY;
	}
	journal_get_stats(j, &js);
	journal_consumer_remove(j, p->pc.id);
	r = journal_consumer_add(j, p->pc.id);
	if (r == 0 && js.next_seq > js.tail_seq)
		r = journal_consumer_release(j, p->pc.id, js.next_seq - 1);
	if (r < 0) {
		journal_consumer_remove(j, p->pc.id);
		snprintf(err, errlen, "cannot register the pair in the master journal: %s",
			 strerror(-r));
		return r;
	}
	p->resync_start = js.next_seq;
	p->resync_gen = new_gen();
	p->resync_force = force;
	p->resync_pending = true;
	m.u.pair_cmd.cmd = WIRE_CMD_RESYNC;
	m.u.pair_cmd.flags = force ? WIRE_CMD_FORCE : 0;
	m.u.pair_cmd.pair_id = p->pc.id;
	m.u.pair_cmd.seq = p->resync_start;
	m.u.pair_cmd.gen = p->resync_gen;
	m.u.pair_cmd.synced_gen = p->pc.synced_gen;
	r = send_msg(p, &m);
	if (r < 0) {
		p->resync_pending = false;
		journal_consumer_remove(j, p->pc.id);
		snprintf(err, errlen, "cannot send the resync request: %s", strerror(-r));
		return r;
	}
	log_info("group '%s': resync requested from seq %" PRIu64 "%s", group_name(p->g),
		 p->resync_start, force ? " (--force)" : "");
	return 0;
}

static void
primary_on_resync_reply(struct pair *p, const struct wire_pair_cmd *m)
{
	uint64_t total;

	if (!p->resync_pending || m->seq != p->resync_start) {
		fail_link(p, EPROTO, "resync answer that was not asked for");
		return;
	}
	p->resync_pending = false;
	if (m->flags & WIRE_CMD_REFUSED) {
		journal_consumer_remove(group_journal(p->g), p->pc.id);
		pair_error(p, "resync refused by the secondary: %s", m->text);
		cmd_finish(p, -EPERM, "resync refused by site '%s': %s", p->pc.peer_site, m->text);
		p->auto_next_ms = now_ms() + p->auto_backoff_ms;
		return;
	}
	if (group_sync_bitmaps(p->g) < 0) {
		journal_consumer_remove(group_journal(p->g), p->pc.id);
		cmd_finish(p, -EIO, "cannot write the merged difference bitmaps");
		return;
	}
	group_set_tracking(p->g, false);
	total = dirty_bytes(p->g);
	p->pc.start_seq = p->resync_start;
	p->pc.resync = true;
	p->pc.copy_volume = 0;
	p->pc.copy_offset = 0;
	p->pc.copy_end_seq = 0;
	p->pc.copy_total = total;
	p->pc.gen = p->pc.synced_gen = p->resync_gen;
	p->pc.cause = PAIR_CAUSE_NONE;
	p->copy_vol = 0;
	p->copy_off = 0;
	p->copy_gen++;
	p->copy_failed = false;
	p->copy_max_seq = p->resync_start - 1;
	p->copy_rate = p->copy_rate_ms = p->copy_rate_done = 0;
	/* Requests already queued are served from the new stream: the
	 * secondary still counts them as in flight. */
	p->cursor = p->resync_start;
	p->remote_received = p->remote_restored = p->resync_start - 1;
	p->error[0] = 0;
	group_set_sync(p->g, p->pc.mode == PAIR_MODE_SYNC);
	pair_set_state(p, PAIR_STATE_COPY, "resync: %" PRIu64 " bytes of changed regions to copy",
		       total);
	p->auto_backoff_ms = REPL_AUTO_BACKOFF_MIN_MS;
	cmd_finish(p, 0, "resync started: %" PRIu64 " bytes of changed regions to copy", total);
	loop_wakeup(p->r->loop);
}

/* --- resync (secondary) --- */

static void
reply_cmd(struct pair *p, const struct wire_pair_cmd *req, bool refused, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
reply_cmd(struct pair *p, const struct wire_pair_cmd *req, bool refused, const char *fmt, ...)
{
	struct wire_msg m = {.hdr.type = WIRE_PAIR_CMD};
	va_list ap;

	m.u.pair_cmd.cmd = (uint8_t)(req->cmd | WIRE_CMD_REPLY);
	m.u.pair_cmd.flags = refused ? WIRE_CMD_REFUSED : 0;
	m.u.pair_cmd.pair_id = p->pc.id;
	m.u.pair_cmd.seq = req->seq;
	m.u.pair_cmd.gen = p->pc.gen;
	m.u.pair_cmd.synced_gen = p->pc.synced_gen;
	va_start(ap, fmt);
	vsnprintf(m.u.pair_cmd.text, sizeof(m.u.pair_cmd.text), fmt, ap);
	va_end(ap);
	if (refused)
		log_warn("group '%s': refused the peer's %s: %s", group_name(p->g),
			 req->cmd == WIRE_CMD_RESYNC ? "resync" : "swap", m.u.pair_cmd.text);
	send_msg(p, &m);
}

/* Would a copy from the other site silently discard writes made here? */
static bool
split_brain_refuses(struct pair *p, const struct wire_pair_cmd *m, const char *other_cmd)
{
	if (m->flags & WIRE_CMD_FORCE)
		return false;
	if (p->pc.gen != p->pc.synced_gen) {
		reply_cmd(p, m, true,
			  "site '%s' has writes the other site lacks (made %s; generation %016" PRIx64
			  ", last synced %016" PRIx64 "); this copy would overwrite them. %s, or "
			  "repeat with --force to discard them",
			  p->r->site,
			  p->pc.state == PAIR_STATE_SSWS ? "after its takeover" : "while suspended",
			  p->pc.gen, p->pc.synced_gen, other_cmd);
		return true;
	}
	/* Without writes of its own, this site loses nothing to the copy, even
	 * when the last sync's answer never reached the other site (its
	 * synced generation then lags ours). */
	return false;
}

/* At a primary the wire's volume ids are its own volume indexes. */
static uint16_t *
wire_ids_of_primary(uint16_t *ids)
{
	for (unsigned i = 0; i < JOURNAL_MAX_VOLUMES; i++)
		ids[i] = (uint16_t)i;
	return ids;
}

static uint16_t *
wire_ids_of_secondary(struct pair *p, uint16_t *ids)
{
	/* Our volume i is the primary's volume k where volmap[k] == i. */
	wire_ids_of_primary(ids);
	for (unsigned k = 0; k < p->pc.nvolmap; k++)
		ids[p->pc.volmap[k]] = (uint16_t)k;
	return ids;
}

static void
secondary_on_resync(struct pair *p, const struct wire_pair_cmd *m)
{
	struct repl *r = p->r;
	struct group *ng = NULL;
	uint16_t ids[JOURNAL_MAX_VOLUMES];
	char err[512];
	int ret;

	if (p->takeover_pending) {
		reply_cmd(p, m, true, "a takeover is running at site '%s'", r->site);
		return;
	}
	if (split_brain_refuses(p, m, "Run 'jrbd pair resync GROUP --swap' at this site to "
				      "keep them"))
		return;
	group_set_tracking(p->g, false);
	group_set_secondary(p->g, true);
	if (send_bitmaps(p, wire_ids_of_secondary(p, ids)) < 0) {
		fail_link(p, EIO, "cannot send the difference bitmaps");
		return;
	}
	if (p->cur) {
		rbatch_free(&p->cur->rb);
		p->cur = NULL;
	}
	reorder_reset(&p->ro, rbatch_free);
	ret = r->ops->reformat(r->arg, p->g, m->seq, &ng, err, sizeof(err));
	if (ret < 0) {
		reply_cmd(p, m, true, "cannot restart the restore journal at seq %" PRIu64 ": %s",
			  m->seq, err);
		/* The group was closed for the format and is gone: so is the pair
		 * (the daemon shows the group failed). */
		pair_forget(p);
		return;
	}
	p->g = ng;
	group_set_secondary(ng, true);
	group_set_tracking(ng, false);
	reorder_init(&p->ro, m->seq);
	p->pc.start_seq = m->seq;
	p->pc.resync = true;
	p->pc.gen = p->pc.synced_gen = m->gen;
	p->pc.bitmap_clear_pending = true;
	p->pc.cause = PAIR_CAUSE_NONE;
	/* out_ids stay: the primary answers requests sent before the resync
	 * (empty, or from the new stream). */
	p->sent_received = p->sent_restored = 0;
	pair_set_state(p, PAIR_STATE_COPY, "resync from the primary, stream from seq %" PRIu64,
		       m->seq);
	reply_cmd(p, m, false, "ok");
	loop_wakeup(r->loop);
}

/* Drops a pair whose group no longer exists (nothing here touches p->g). */
static void
pair_forget(struct pair *p)
{
	struct conn *c = p->conn;

	if (c) {
		if (!c->dead)
			link_fail(c->link, EIO, "the pair's group failed at this site");
		c->p = NULL;
		p->conn = NULL;
		conn_drop(c);
	}
	cmd_finish(p, -ECANCELED, "the pair's group failed");
	pair_retire(p);
}

/* --- swap: the secondary becomes the primary --- */

static int
secondary_start_swap(struct pair *p, bool force, bool takeover, char *err, size_t errlen)
{
	struct wire_msg m = {.hdr.type = WIRE_PAIR_CMD};
	int r;

	if (!p->ready || !p->have_pstat) {
		snprintf(err, errlen, "the primary (site '%s') is not connected; a swap needs "
			 "both sites%s", p->pc.peer_site,
			 takeover ? "" : " ('jrbd pair takeover' works without it)");
		return -ENOTCONN;
	}
	if (!p->pc.peer_addr[0]) {
		snprintf(err, errlen, "the primary (site '%s') has no replication address "
			 "(--listen) to be dialed as a secondary", p->pc.peer_site);
		return -EINVAL;
	}
	if (p->swap_pending || p->takeover_pending) {
		snprintf(err, errlen, "a swap or takeover is already running");
		return -EBUSY;
	}
	p->resync_gen = new_gen();
	p->swap_pending = true;
	m.u.pair_cmd.cmd = WIRE_CMD_SWAP;
	m.u.pair_cmd.flags = (uint8_t)((force ? WIRE_CMD_FORCE : 0) | (takeover ? WIRE_CMD_DRAIN : 0));
	m.u.pair_cmd.pair_id = p->pc.id;
	m.u.pair_cmd.gen = p->resync_gen;
	m.u.pair_cmd.synced_gen = p->pc.synced_gen;
	r = send_msg(p, &m);
	if (r < 0) {
		p->swap_pending = false;
		snprintf(err, errlen, "cannot send the swap request: %s", strerror(-r));
		return r;
	}
	log_info("group '%s': swap requested (%s)", group_name(p->g),
		 takeover ? "takeover with the primary reachable" : "resync --swap");
	return 0;
}

/* Primary: the drain for a SWAP is over (or not needed): hand over. */
static void
primary_swap_finish(struct pair *p)
{
	struct repl *r = p->r;
	struct group *g = p->g;
	struct group_pair_config pc = p->pc;
	struct wire_pair_cmd req = p->swap_cmd;
	struct conn *c = p->conn;
	struct pair *np;
	enum pair_state old = p->pc.state;
	uint16_t ids[JOURNAL_MAX_VOLUMES];

	p->swap_pending = false;
	group_set_secondary(g, true);
	group_set_tracking(g, false);
	group_set_sync(g, false);
	if (send_bitmaps(p, wire_ids_of_primary(ids)) < 0) {
		fail_link(p, EIO, "cannot send the difference bitmaps");
		return;
	}
	journal_consumer_remove(group_journal(g), p->pc.id);
	memset(&pc.volmap, 0, sizeof(pc.volmap));
	pc.nvolmap = 0;
	pc.role = PAIR_ROLE_SECONDARY;
	pc.state = PAIR_STATE_COPY;
	snprintf(pc.peer_addr, sizeof(pc.peer_addr), "%s", p->pc.remote);
	pc.remote[0] = 0;
	pc.primary_seed = 0;
	pc.gen = pc.synced_gen = req.gen;
	pc.fold_to = 0;
	pc.resync = true;
	pc.cause = PAIR_CAUSE_NONE;
	/* Until the new primary names the pair, this site tells it the swap is
	 * done here (dialing it, if this answer is lost). */
	pc.announce = true;
	snprintf(pc.reason, sizeof(pc.reason), "swapped: site '%s' is the primary now",
		 pc.peer_site);
	/* Persisted before the peer hears of it. */
	if (p->r->ops->save(p->r->arg, g, &pc) < 0) {
		reply_cmd(p, &req, true, "site '%s' cannot persist its new role", p->r->site);
		group_set_secondary(g, false);
		return;
	}
	group_set_pair_config(g, &pc);
	if (getenv("JRBD_TEST_EXIT_AFTER_SWAP_COMMIT")) {
		/* Test hook: the crash between the commit and its answer. */
		log_warn("JRBD_TEST_EXIT_AFTER_SWAP_COMMIT: exiting before the answer");
		_exit(99);
	}
	reply_cmd(p, &req, false, "ok");
	/* The link stays with the peer (it closes it); this pair object turns
	 * into a secondary's. */
	if (c) {
		c->p = NULL;
		p->conn = NULL;
	}
	pair_detach(p);
	np = pair_new(r, g, &pc);
	if (!np) {
		log_err("group '%s': out of memory after a swap", group_name(g));
		return;
	}
	np->saved = pc;
	/* The new primary normally names the pair at once; only if it does not
	 * is the answer re-sent from here. */
	np->next_dial_ms = now_ms() + 3000;
	log_info("group '%s': pair state %s -> COPY: swapped; this site is now the secondary of "
		 "site '%s'", group_name(g), pair_state_name(old), pc.peer_site);
	if (r->opts.on_event)
		event_hook_run(r->opts.on_event, group_name(g), pair_state_name(old), "COPY",
			       "swapped: this site is now the secondary");
}

static void
primary_on_swap(struct pair *p, const struct wire_pair_cmd *m)
{
	if (p->pc.state == PAIR_STATE_COPY && !p->pc.resync) {
		reply_cmd(p, m, true, "the initial copy has not finished; the secondary is not a "
			  "complete image yet");
		return;
	}
	if (p->resync_pending || p->swap_pending) {
		reply_cmd(p, m, true, "a resync or swap is already running at site '%s'", p->r->site);
		return;
	}
	note_local_writes(p);
	if (split_brain_refuses(p, m, "Resync from this site instead ('jrbd pair resync GROUP "
				      "--force' here)"))
		return;
	p->swap_cmd = *m;
	p->swap_pending = true;
	/* Nothing more from the hosts here: the other site takes over. */
	group_set_inflow_limit(p->g, 0);
	group_set_secondary(p->g, true);
	log_info("group '%s': swap asked by site '%s'; host writes refused from now on, %s",
		 group_name(p->g), p->pc.peer_site,
		 state_flowing(p->pc.state) ? "draining to the secondary" : "sending the bitmaps");
	loop_wakeup(p->r->loop);
}

/* In the tick and hook: a swap waits for the drain (or fold) to end. */
static void
primary_swap_pump(struct pair *p)
{
	struct group_stats st;

	if (!p->swap_pending || p->pc.role != PAIR_ROLE_PRIMARY)
		return;
	if (!p->ready) {
		/* The asking site is gone: stay primary. */
		p->swap_pending = false;
		group_set_secondary(p->g, false);
		pair_error(p, "swap abandoned: the link to site '%s' closed", p->pc.peer_site);
		return;
	}
	if (p->pc.fold_to)
		return;
	group_get_stats(p->g, &st);
	if (group_host_writes_queued(p->g))
		return; /* a request half journaled finishes first */
	if (state_flowing(p->pc.state) && p->remote_restored < st.last_seq)
		return;
	primary_swap_finish(p);
}

/* Secondary: the primary handed over; become the primary and dial it. */
static void
secondary_on_swap_reply(struct pair *p, const struct wire_pair_cmd *m)
{
	struct repl *r = p->r;
	struct group *g = p->g;
	struct group_pair_config pc = p->pc;
	struct journal *j = group_journal(g);
	struct journal_stats js;
	struct pair *np;
	bool takeover = p->cmd_kind == PAIR_CMD_TAKEOVER;
	enum pair_state old = p->pc.state;
	uint64_t total;
	int ret;

	if (!p->swap_pending) {
		fail_link(p, EPROTO, "swap answer that was not asked for");
		return;
	}
	p->swap_pending = false;
	if (m->flags & WIRE_CMD_REFUSED) {
		cmd_finish(p, -EPERM, "swap refused by site '%s': %s", p->pc.peer_site, m->text);
		return;
	}
	ret = group_sync_bitmaps(g);
	if (ret < 0) {
		cmd_finish(p, ret, "cannot write the merged difference bitmaps");
		return;
	}
	journal_get_stats(j, &js);
	ret = journal_consumer_add(j, pc.id);
	if (ret == 0 && js.next_seq > js.tail_seq)
		ret = journal_consumer_release(j, pc.id, js.next_seq - 1);
	if (ret < 0 && ret != -EEXIST) {
		cmd_finish(p, ret, "cannot register the pair in the journal: %s", strerror(-ret));
		return;
	}
	total = dirty_bytes(g);
	pc.role = PAIR_ROLE_PRIMARY;
	pc.state = PAIR_STATE_COPY;
	pc.resync = true;
	pc.initial_copy = false;
	pc.confirmed = true;
	pc.announce = true;
	snprintf(pc.remote, sizeof(pc.remote), "%s", p->pc.peer_addr);
	pc.start_seq = js.next_seq;
	pc.copy_volume = 0;
	pc.copy_offset = 0;
	pc.copy_end_seq = 0;
	pc.copy_total = total;
	pc.gen = pc.synced_gen = p->resync_gen;
	pc.cause = PAIR_CAUSE_NONE;
	pc.bitmap_clear_pending = false;
	snprintf(pc.reason, sizeof(pc.reason), "swap: this site is the primary; %" PRIu64
		 " bytes of differences to copy back", total);
	if (r->ops->save(r->arg, g, &pc) < 0) {
		cmd_finish(p, -EIO, "cannot persist the new role; the other site is now a "
			   "secondary: retry 'jrbd pair resync GROUP --swap'");
		return;
	}
	group_set_pair_config(g, &pc);
	cmd_finish(p, 0, "%s: site '%s' is now the primary; %" PRIu64 " bytes of differences "
		   "to copy to site '%s'", takeover ? "swap" : "resync --swap", r->site, total,
		   p->pc.peer_site);
	if (p->conn && !p->conn->dead)
		link_fail(p->conn->link, ESHUTDOWN, "swapped roles");
	pair_detach(p);
	group_set_tracking(g, false);
	group_set_secondary(g, false);
	np = pair_new(r, g, &pc);
	if (!np) {
		log_err("group '%s': out of memory after a swap", group_name(g));
		return;
	}
	np->saved = pc;
	log_info("group '%s': pair state %s -> COPY: %s", group_name(g), pair_state_name(old),
		 pc.reason);
	if (r->opts.on_event)
		event_hook_run(r->opts.on_event, group_name(g), pair_state_name(old), "COPY",
			       pc.reason);
	group_set_sync(g, pc.mode == PAIR_MODE_SYNC);
	primary_dial(np);
}

/* --- takeover without the primary --- */

static void
secondary_takeover_pump(struct pair *p)
{
	struct group_stats st;

	if (!p->takeover_pending)
		return;
	group_get_stats(p->g, &st);
	if (p->nreplay || st.applied_seq < st.durable_seq)
		return;
	p->takeover_pending = false;
	p->pc.gen = new_gen();
	p->pc.cause = PAIR_CAUSE_NONE;
	group_set_secondary(p->g, false);
	group_set_tracking(p->g, true);
	pair_set_state(p, PAIR_STATE_SSWS, "taken over at site '%s' (the primary was not "
		       "reachable); S-VOLs writable, changes tracked", p->r->site);
	cmd_finish(p, 0, "secondary takeover: site '%s' restored everything it received (seq %"
		   PRIu64 ") and its volumes are writable (SSWS)", p->r->site, st.applied_seq);
}

/* --- delete --- */

static void
pair_delete_local(struct pair *p, const char *why)
{
	struct group *g = p->g;
	struct group_pair_config none = {0};
	enum pair_state old = p->pc.state;
	struct repl *r = p->r;
	char name[JOURNAL_GROUPNAME_LEN + 1];

	snprintf(name, sizeof(name), "%s", group_name(g));
	if (p->pc.role == PAIR_ROLE_PRIMARY) {
		journal_consumer_remove(group_journal(g), p->pc.id);
		group_set_sync(g, false);
		group_set_inflow_limit(g, 0);
	} else {
		group_set_secondary(g, false);
	}
	group_set_tracking(g, false);
	clear_bitmaps(g);
	p->pc = none;
	pair_save(p);
	log_info("group '%s': pair state %s -> SMPL: %s", name, pair_state_name(old), why);
	if (r->opts.on_event)
		event_hook_run(r->opts.on_event, name, pair_state_name(old), "SMPL", why);
	if (p->conn) {
		/* The peer closes the link once it has our answer. */
		p->conn->p = NULL;
		p->conn = NULL;
	}
	pair_detach(p);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

static void conn_on_ready(struct link *l, void *arg);
static void conn_on_msg(struct link *l, const struct wire_msg *m, void *arg);
static void conn_on_close(struct link *l, int err, void *arg);

static void
conn_on_writable(struct link *l, void *arg)
{
	struct conn *c = arg;

	(void)l;
	loop_wakeup(c->r->loop); /* the hook serves what waited for room */
}

static const struct link_ops conn_ops = {
	.on_ready = conn_on_ready,
	.on_msg = conn_on_msg,
	.on_close = conn_on_close,
	.on_writable = conn_on_writable,
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
	/* A primary dials its secondary; a handed-over primary (announce)
	 * dials the site that took its place. */
	const char *addr = p->pc.role == PAIR_ROLE_PRIMARY ? p->pc.remote : p->pc.peer_addr;
	char err[256];
	int fd, r;
	struct conn *c;

	r = link_dial(addr, &fd, err, sizeof(err));
	if (r < 0) {
		if (p->create_cb) {
			create_finish(p, r, err);
			return;
		}
		pair_error(p, "%s", err);
		goto backoff;
	}
	c = conn_new(p->r, fd, true, addr, err, sizeof(err));
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

	if (!p->pc.confirmed || p->pc.announce) {
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
	if (ok->state == WIRE_STATE_SSWS) {
		if (p->conn)
			snprintf(p->pc.peer_site, sizeof(p->pc.peer_site), "%s",
				 link_peer_site(p->conn->link));
		p->last_contact_ms = now_ms();
		/* The secondary took over while we were apart: its volumes have
		 * their own writes now. Stay linked (for a swap), serve nothing. */
		p->backoff_ms = REPL_BACKOFF_MIN_MS;
		p->ready = true;
		p->remote_received = p->remote_restored = 0;
		primary_suspend(p, PAIR_STATE_PSUE, PAIR_CAUSE_TAKEOVER,
				"the secondary took over (SSWS): run 'jrbd pair resync GROUP --swap' "
				"there to make it the primary, or resync here with --force");
		if (p->pc.cause != PAIR_CAUSE_TAKEOVER && state_suspended(p->pc.state)) {
			p->pc.cause = PAIR_CAUSE_TAKEOVER;
			pair_set_state(p, PAIR_STATE_PSUE, "the secondary took over (SSWS): run 'jrbd "
				       "pair resync GROUP --swap' there to make it the primary, or "
				       "resync here with --force");
		}
		send_primary_status(p);
		return;
	}
	if (state_suspended(p->pc.state)) {
		/* Suspended: the journal owes the secondary nothing; the link only
		 * carries status and lifecycle commands until a resync. */
		if (p->conn)
			snprintf(p->pc.peer_site, sizeof(p->pc.peer_site), "%s",
				 link_peer_site(p->conn->link));
		p->last_contact_ms = now_ms();
		p->backoff_ms = REPL_BACKOFF_MIN_MS;
		p->remote_received = ok->received_seq;
		p->remote_restored = ok->restored_seq;
		p->error[0] = 0;
		p->ready = true;
		if (p->pc.announce) {
			p->pc.announce = false; /* named now; a later PAIR_CREATE would wipe the peer */
			pair_save(p);
		}
		log_info("group '%s': replication link to %s up (pair %s: no records flow until a "
			 "resync)", group_name(p->g), p->pc.remote, pair_state_name(p->pc.state));
		send_primary_status(p);
		loop_wakeup(p->r->loop);
		return;
	}
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
	p->last_contact_ms = now_ms();
	p->down_since_ms = 0;
	if (p->pc.announce) {
		p->pc.announce = false;
		pair_save(p);
	}
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
	m.u.pair_ok.state = state_to_wire(p->pc.state == PAIR_STATE_SMPL ? PAIR_STATE_PAIR
									 : p->pc.state);
	m.u.pair_ok.gen = p->pc.gen;
	m.u.pair_ok.synced_gen = p->pc.synced_gen;
	p->last_contact_ms = now_ms();
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
	bool swap;
	int ret;

	if (!g) {
		reply_error(c, ENOENT, "no group '%s' at site '%s' (create it there first with "
			    "'jrbd group create')", m->group, r->site);
		return;
	}
	swap = group_get_config(g)->pair.role == PAIR_ROLE_SECONDARY &&
	       group_get_config(g)->pair.id == m->pair_id;
	if (swap && (group_get_config(g)->pair.state == PAIR_STATE_SSWS ||
		     group_get_config(g)->pair.gen != group_get_config(g)->pair.synced_gen)) {
		reply_error(c, EBUSY, "group '%s' at site '%s' has writes of its own since the last "
			    "sync (%s); it will not be overwritten by a new pair: resync with the "
			    "other site, or 'jrbd pair delete' it first", m->group, r->site,
			    pair_state_name(group_get_config(g)->pair.state));
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
		if (v->nbd_conns && !swap) {
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
	/* Whatever differences there were, the primary now holds them (a swap
	 * merged ours) or copies everything. */
	clear_bitmaps(ng);
	pc.role = PAIR_ROLE_SECONDARY;
	pc.state = m->initial_copy || swap ? PAIR_STATE_COPY : PAIR_STATE_PAIR;
	if (swap) {
		const struct group_pair_config *old = &group_get_config(ng)->pair;

		pc.gen = old->gen;
		pc.synced_gen = old->synced_gen;
		snprintf(pc.peer_addr, sizeof(pc.peer_addr), "%s", old->peer_addr);
		pc.resync = true;
	} else {
		pc.gen = pc.synced_gen = m->pair_id; /* both sites start from the same one */
	}
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
	if (p->pc.primary_seed && p->pc.primary_seed != m->primary_seed) {
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

/* A handed-over primary whose swap answer may have been lost: it tells the
 * new primary again (answer first, then its bitmaps, which it still keeps). */
static void
secondary_announce(struct pair *p)
{
	struct wire_msg m = {.hdr.type = WIRE_PAIR_CMD};
	uint16_t ids[JOURNAL_MAX_VOLUMES];

	m.u.pair_cmd.cmd = WIRE_CMD_SWAP | WIRE_CMD_REPLY;
	m.u.pair_cmd.pair_id = p->pc.id;
	m.u.pair_cmd.gen = p->pc.gen;
	m.u.pair_cmd.synced_gen = p->pc.synced_gen;
	snprintf(m.u.pair_cmd.text, sizeof(m.u.pair_cmd.text), "swap committed at site '%s'",
		 p->r->site);
	if (send_msg(p, &m) < 0 || send_bitmaps(p, wire_ids_of_primary(ids)) < 0)
		fail_link(p, EIO, "cannot send the swap answer");
}

/* The new primary's side of it: finish the swap that this site asked for. */
static void
on_swap_recover(struct conn *c, const struct wire_pair_cmd *m)
{
	struct pair *p;

	for (p = c->r->pairs; p && p->pc.id != m->pair_id; p = p->next)
		;
	if (!p || (m->flags & WIRE_CMD_REFUSED)) {
		reply_error(c, ENOENT, "no pair %016" PRIx64 " at site '%s'", m->pair_id, c->r->site);
		return;
	}
	if (p->pc.role == PAIR_ROLE_PRIMARY) {
		/* Done here already: the PAIR_CREATE this site sends names the pair. */
		reply_error(c, EALREADY, "site '%s' is already the primary of pair %016" PRIx64,
			    c->r->site, m->pair_id);
		return;
	}
	log_info("group '%s': site '%s' committed the swap this site asked for; completing it",
		 group_name(p->g), link_peer_site(c->link));
	bind_conn(p, c);
	p->ready = true;
	p->swap_pending = true;
	p->swap_recover = true;
	p->swap_cmd = *m;
	p->resync_gen = m->gen;
}

static void
conn_on_ready(struct link *l, void *arg)
{
	struct conn *c = arg;

	(void)l;
	if (c->dialed && c->p && c->p->pc.role == PAIR_ROLE_PRIMARY)
		primary_on_ready(c->p);
	else if (c->dialed && c->p)
		secondary_announce(c->p);
}

static void
on_pair_cmd(struct pair *p, const struct wire_pair_cmd *m)
{
	bool primary = p->pc.role == PAIR_ROLE_PRIMARY;

	switch (m->cmd) {
	case WIRE_CMD_RESYNC:
		if (!primary) {
			secondary_on_resync(p, m);
			return;
		}
		break;
	case WIRE_CMD_RESYNC | WIRE_CMD_REPLY:
		if (primary) {
			primary_on_resync_reply(p, m);
			return;
		}
		break;
	case WIRE_CMD_SWAP:
		if (primary) {
			primary_on_swap(p, m);
			return;
		}
		break;
	case WIRE_CMD_SWAP | WIRE_CMD_REPLY:
		if (!primary) {
			secondary_on_swap_reply(p, m);
			return;
		}
		break;
	case WIRE_CMD_SUSPEND:
		if (primary) {
			primary_suspend(p, PAIR_STATE_PSUE, PAIR_CAUSE_IO, m->text);
			return;
		}
		break;
	case WIRE_CMD_DELETE:
		reply_cmd(p, m, false, "deleted");
		pair_delete_local(p, "deleted by the other site");
		return;
	case WIRE_CMD_DELETE | WIRE_CMD_REPLY:
		if (p->cmd_kind == PAIR_CMD_DELETE && p->cmd_cb) {
			char who[96];

			snprintf(who, sizeof(who), "%s", p->pc.peer_site);
			cmd_finish(p, 0, "pair deleted at both sites (this one and '%s'); volumes "
				   "keep their data", who);
			if (p->conn && !p->conn->dead)
				link_fail(p->conn->link, ESHUTDOWN, "pair deleted");
			pair_delete_local(p, "deleted by the operator");
			return;
		}
		break;
	default:
		break;
	}
	fail_link(p, EPROTO, "unexpected pair command 0x%x", m->cmd);
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
		else if (m->hdr.type == WIRE_PAIR_CMD &&
			 m->u.pair_cmd.cmd == (WIRE_CMD_SWAP | WIRE_CMD_REPLY))
			on_swap_recover(c, &m->u.pair_cmd);
		else
			reply_error(c, EPROTO, "%s before the pair was named",
				    wire_type_name(m->hdr.type));
		return;
	}
	if (!p)
		return;
	p->last_contact_ms = now_ms();
	switch (m->hdr.type) {
	case WIRE_PAIR_CMD:
		if (p->ready && m->u.pair_cmd.pair_id == p->pc.id) {
			on_pair_cmd(p, &m->u.pair_cmd);
			return;
		}
		break;
	case WIRE_BITMAP:
		if (p->ready && c->dialed && p->resync_pending) {
			const struct wire_bitmap *b = &m->u.bitmap;

			/* From the secondary: its volume ids are ours (it maps them). */
			if (b->nbits && b->volume >= group_nvolumes(p->g))
				break;
			on_bitmap(p, b, b->volume);
			return;
		}
		if (p->ready && !c->dialed && p->swap_pending) {
			const struct wire_bitmap *b = &m->u.bitmap;

			/* From the primary: its volume ids, mapped to ours. */
			if (b->nbits && b->volume >= p->pc.nvolmap)
				break;
			on_bitmap(p, b, b->nbits ? p->pc.volmap[b->volume] : 0);
			if ((b->flags & WIRE_BITMAP_LAST) && p->swap_recover && !c->dead) {
				struct wire_pair_cmd done = p->swap_cmd;

				p->swap_recover = false;
				secondary_on_swap_reply(p, &done);
			}
			return;
		}
		break;
	case WIRE_PAIR_OK:
		if (c->dialed && !p->ready) {
			primary_on_pair_ok(p, &m->u.pair_ok);
			return;
		}
		break;
	case WIRE_READ_JOURNAL:
		if (c->dialed && p->ready && !state_flowing(p->pc.state)) {
			/* In flight when we suspended: answered empty by the long poll. */
			if (p->nreqs < REPL_MAX_QUEUED) {
				p->reqs[p->nreqs] = m->u.read_journal;
				p->req_deadline_ms[p->nreqs++] = now_ms() + REPL_LONG_POLL_MS;
			}
			return;
		}
		if (c->dialed && p->ready) {
			on_read_journal(p, &m->u.read_journal);
			return;
		}
		break;
	case WIRE_STATUS:
		if (c->dialed && p->ready && !state_flowing(p->pc.state))
			return; /* late, from before the suspension */
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
		if (p->resync_pending) {
			/* The answer will never come on this link: start over later. */
			p->resync_pending = false;
			journal_consumer_remove(group_journal(p->g), p->pc.id);
			cmd_finish(p, -ECONNRESET, "the link closed before site '%s' answered the "
				   "resync: %s", p->pc.peer_site, cause);
		}
		if (p->swap_pending && p->pc.role == PAIR_ROLE_SECONDARY) {
			p->swap_pending = false;
			cmd_finish(p, -ECONNRESET, "the link closed before site '%s' answered the "
				   "swap: %s", p->pc.peer_site, cause);
		}
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
	for (struct pair *p = r->pairs, *next; p; p = next) {
		next = p->next;
		if (p->pc.role == PAIR_ROLE_PRIMARY) {
			fold_pump(p);
			primary_serve(p);
			copy_pump(p);
			primary_swap_pump(p);
		} else {
			secondary_pump(p);
			secondary_takeover_pump(p);
		}
	}
}

/* Secondary: no word from the primary for the link timeout -> PSUE. */
static void
secondary_tick(struct pair *p, uint64_t now)
{
	uint64_t timeout = group_get_config(p->g)->ropts.link_timeout_ms;

	if (p->pc.announce && p->pc.peer_addr[0] && !p->conn && now >= p->next_dial_ms &&
	    p->r->have_key)
		primary_dial(p);
	if (timeout && state_flowing(p->pc.state) && now - p->last_contact_ms >= timeout)
		pair_set_state(p, PAIR_STATE_PSUE, "no contact with the primary for %" PRIu64
			       " s%s%s", timeout / 1000, p->error[0] ? ": " : "", p->error);
}

/* Primary: link watch, journal high-water mark, inflow control, journal
 * full, automatic resync. */
static void
primary_health(struct pair *p, uint64_t now)
{
	const struct group_repl_options *o = &group_get_config(p->g)->ropts;
	struct journal_stats js;
	unsigned hw = o->high_water_pct ? o->high_water_pct : 80, pct;
	uint64_t blocked;

	if (!p->pc.confirmed || p->create_cb)
		return;
	note_local_writes(p);
	journal_get_stats(group_journal(p->g), &js);
	pct = js.area_size ? (unsigned)(js.used_bytes * 100 / js.area_size) : 0;
	if (state_flowing(p->pc.state)) {
		if (o->link_timeout_ms && now - p->last_contact_ms >= o->link_timeout_ms) {
			char why[384];

			snprintf(why, sizeof(why), "%s for %" PRIu64 " s%s%.200s",
				 p->ready ? "no read-journal from the secondary"
					  : "no link to the secondary",
				 o->link_timeout_ms / 1000, p->error[0] ? ": " : "", p->error);
			primary_suspend(p, PAIR_STATE_PSUE, PAIR_CAUSE_LINK, why);
			return;
		}
		/* Full: appends wait for space (or appended records wait for a
		 * batch that has no room) while the secondary holds the tail.
		 * Appends also block while every batch buffer is in flight on
		 * a slow disk (always, behind an initial copy); only a batch
		 * that has no room in front of the tail is a full journal. */
		blocked = group_blocked_since_ms(p->g);
		if (js.durable_seq + 1 < js.next_seq && js.durable_seq == p->last_durable &&
		    js.waiting_for_space) {
			if (!p->stuck_since_ms)
				p->stuck_since_ms = now;
			if (!blocked || p->stuck_since_ms < blocked)
				blocked = p->stuck_since_ms;
		} else {
			p->stuck_since_ms = 0;
		}
		p->last_durable = js.durable_seq;
		if (blocked && now - blocked >= 2 * REPL_TICK_MS && js.waiting_for_space) {
			uint64_t rel = 0;

			/* Full because the secondary holds the tail, not the checkpoint. */
			if (consumer_released(p->g, p->pc.id, &rel) &&
			    MAX(rel, p->remote_restored) + 1 < js.ckpt_seq) {
				char why[256];

				snprintf(why, sizeof(why), "the master journal is full: the secondary "
					 "restored only up to seq %" PRIu64 " of %" PRIu64, rel,
					 js.next_seq - 1);
				primary_suspend(p, PAIR_STATE_PFUS, PAIR_CAUSE_FULL, why);
				return;
			}
		}
		if (o->inflow_control) {
			uint64_t held;

			group_set_inflow_limit(p->g, js.area_size / 100 * hw);
			held = group_held_since_ms(p->g);
			if (held && !p->held_since_ms) {
				p->held_since_ms = held;
				log_info("group '%s': journal %u%% full: holding host writes (inflow "
					 "control, at most %" PRIu64 " s)", group_name(p->g), pct,
					 o->overflow_watch_ms / 1000);
			} else if (!held) {
				p->held_since_ms = 0;
			}
			if (held && now - held >= o->overflow_watch_ms) {
				char why[256];

				snprintf(why, sizeof(why), "the journal stayed above %u%% for the "
					 "overflow watch time (%" PRIu64 " s)", hw,
					 o->overflow_watch_ms / 1000);
				primary_suspend(p, PAIR_STATE_PFUS, PAIR_CAUSE_FULL, why);
				return;
			}
		}
		if (p->pc.state == PAIR_STATE_PAIR && pct >= hw)
			pair_set_state(p, PAIR_STATE_PFUL, "the master journal is %u%% full (high-water "
				       "mark %u%%)", pct, hw);
		else if (p->pc.state == PAIR_STATE_PFUL && pct + REPL_PFUL_HYSTERESIS_PCT < hw)
			pair_set_state(p, PAIR_STATE_PAIR, "the master journal is back at %u%%", pct);
		return;
	}
	p->stuck_since_ms = 0; /* a new grace period once flowing again */
	/* Suspended: resync by itself once the link is back, if the group says so. */
	if (state_suspended(p->pc.state) && p->ready && !p->pc.fold_to && !p->resync_pending &&
	    !p->swap_pending && !p->cmd_cb && now >= p->auto_next_ms &&
	    (((p->pc.cause == PAIR_CAUSE_LINK || p->pc.cause == PAIR_CAUSE_FULL) &&
	      o->auto_resync_link) ||
	     (p->pc.cause == PAIR_CAUSE_IO && o->auto_resync_error))) {
		char err[256];

		p->auto_next_ms = now + p->auto_backoff_ms;
		p->auto_backoff_ms = MIN(p->auto_backoff_ms * 2, REPL_AUTO_BACKOFF_MAX_MS);
		if (primary_start_resync(p, false, err, sizeof(err)) < 0)
			pair_error(p, "automatic resync: %s", err);
		else
			log_info("group '%s': automatic resync after %s", group_name(p->g),
				 p->pc.reason);
	}
}

static void
repl_tick(struct loop *loop, void *arg)
{
	struct repl *r = arg;
	uint64_t now = now_ms();
	struct pair *next;

	(void)loop;
	event_hook_reap();
	for (struct pair *p = r->pairs; p; p = next) {
		next = p->next;
		if (p->cmd_cb && now >= p->cmd_deadline_ms) {
			p->swap_pending = false;
			if (p->resync_pending) {
				p->resync_pending = false;
				journal_consumer_remove(group_journal(p->g), p->pc.id);
			}
			if (p->cmd_kind == PAIR_CMD_DELETE) {
				cmd_finish(p, 0, "pair deleted here; site '%s' did not answer: run 'jrbd "
					   "pair delete' there too", p->pc.peer_site);
				pair_delete_local(p, "deleted by the operator");
				continue;
			}
			if (p->cmd_kind == PAIR_CMD_SUSPEND && p->drain_target) {
				p->drain_target = 0;
				if (state_flowing(p->pc.state))
					group_set_tracking(p->g, false);
				cmd_finish(p, -ETIMEDOUT, "the secondary did not restore up to the "
					   "suspend point in time; the pair stays %s",
					   pair_state_name(p->pc.state));
			} else {
				cmd_finish(p, -ETIMEDOUT, "no answer from site '%s' in time",
					   p->pc.peer_site);
			}
			if (p->pc.role == PAIR_ROLE_PRIMARY && p->swap_pending) {
				p->swap_pending = false;
				group_set_secondary(p->g, false);
			}
		}
		if (p->pc.role != PAIR_ROLE_PRIMARY) {
			secondary_tick(p, now);
			continue;
		}
		primary_health(p, now);
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
		if (p->ready && state_flowing(p->pc.state) && p->pc.state != PAIR_STATE_COPY &&
		    p->copy_rate)
			p->copy_rate = 0;
		if (p->pc.state == PAIR_STATE_COPY && now - p->copy_rate_ms >= 1000) {
			uint64_t done = copy_done_bytes(p);

			if (p->copy_rate_ms)
				p->copy_rate = (done - MIN(done, p->copy_rate_done)) * 1000 /
					       (now - p->copy_rate_ms);
			p->copy_rate_done = done;
			p->copy_rate_ms = now;
			if (p->pc.confirmed && !p->create_cb)
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
	r->nudge.fd = -1;
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
	ret_code = loop_timer_start_oneshot(loop, &r->nudge, repl_nudged, r);
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
	if (r->nudge.fd >= 0)
		loop_timer_stop(r->loop, &r->nudge);
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
		/* Suspended and folded: the journal owes the secondary nothing. */
		drop_stale_consumers(g, state_suspended(pc->state) && !pc->fold_to ? 0 : pc->id);
	else
		group_set_secondary(g, pc->state != PAIR_STATE_SSWS);
	p = pair_new(r, g, pc);
	if (!p)
		return -ENOMEM;
	if (pc->role == PAIR_ROLE_PRIMARY) {
		group_set_sync(g, pc->mode == PAIR_MODE_SYNC && state_flowing(pc->state));
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
	pc.gen = pc.synced_gen = pc.id;
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

static int
verdict(struct repl *r, struct group *g, enum pair_cmd cmd, struct pair **ret, char *err,
	size_t errlen)
{
	const struct group_pair_config *pc = &group_get_config(g)->pair;
	struct pair *p = pair_find(r, g);
	enum pair_role role = pc->role;
	enum pair_state state = pc->state;
	char why[256];

	if (p) {
		role = p->pc.role;
		state = p->pc.state;
	}
	if (role == PAIR_ROLE_PRIMARY && p && !p->pc.confirmed)
		role = PAIR_ROLE_NONE;
	switch (pair_fsm_check(role, state, cmd, why, sizeof(why))) {
	case PAIR_VERDICT_ACCEPT:
		break;
	case PAIR_VERDICT_NOOP:
		snprintf(err, errlen, "nothing to do: %s", why);
		return 1;
	default:
		snprintf(err, errlen, "%s", why);
		return -EPERM;
	}
	if (!p) {
		snprintf(err, errlen, "group '%s' has no pair running", group_name(g));
		return -ENOENT;
	}
	if (p->cmd_cb || p->create_cb) {
		snprintf(err, errlen, "another pair command is still running on group '%s'",
			 group_name(g));
		return -EBUSY;
	}
	*ret = p;
	return 0;
}

int
repl_pair_suspend(struct repl *r, struct group *g, bool drain, repl_create_cb *cb, void *cb_arg,
		  char *err, size_t errlen)
{
	struct pair *p;
	struct group_stats st;
	int ret = verdict(r, g, PAIR_CMD_SUSPEND, &p, err, errlen);

	if (ret)
		return ret;
	if (!drain) {
		primary_suspend(p, PAIR_STATE_PSUS, PAIR_CAUSE_OPERATOR, "suspended by the operator");
		snprintf(err, errlen, "suspended (PSUS); records the secondary had not restored are "
			 "folded into the difference bitmaps");
		return 1;
	}
	if (!p->ready) {
		snprintf(err, errlen, "cannot drain: the secondary is not connected%s%s (suspend "
			 "without --drain tracks everything in the bitmaps)", p->error[0] ? ": " : "",
			 p->error);
		return -ENOTCONN;
	}
	group_get_stats(g, &st);
	/* Writes after this point are tracked; the ones before it drain. */
	if (group_set_tracking(g, true) < 0) {
		snprintf(err, errlen, "this daemon keeps no difference bitmaps");
		return -ENOTSUP;
	}
	p->drain_target = MAX(st.last_seq, p->pc.start_seq);
	cmd_begin(p, PAIR_CMD_SUSPEND, cb, cb_arg);
	log_info("group '%s': suspend --drain: the secondary restores up to seq %" PRIu64 " first",
		 group_name(g), p->drain_target);
	loop_wakeup(r->loop); /* cb never runs inside this call */
	return 0;
}

int
repl_pair_resync(struct repl *r, struct group *g, bool swap, bool force, repl_create_cb *cb,
		 void *cb_arg, char *err, size_t errlen)
{
	struct pair *p;
	int ret = verdict(r, g, swap ? PAIR_CMD_RESYNC_SWAP : PAIR_CMD_RESYNC, &p, err, errlen);

	if (ret)
		return ret;
	ret = swap ? secondary_start_swap(p, force, false, err, errlen)
		   : primary_start_resync(p, force, err, errlen);
	if (ret < 0)
		return ret;
	cmd_begin(p, swap ? PAIR_CMD_RESYNC_SWAP : PAIR_CMD_RESYNC, cb, cb_arg);
	return 0;
}

int
repl_pair_takeover(struct repl *r, struct group *g, repl_create_cb *cb, void *cb_arg, char *err,
		   size_t errlen)
{
	struct pair *p;
	int ret = verdict(r, g, PAIR_CMD_TAKEOVER, &p, err, errlen);

	if (ret)
		return ret;
	if (p->ready && p->have_pstat && p->pc.peer_addr[0]) {
		/* The primary is there: swap roles instead (drain, no copy). */
		ret = secondary_start_swap(p, false, true, err, errlen);
		if (ret < 0)
			return ret;
		cmd_begin(p, PAIR_CMD_TAKEOVER, cb, cb_arg);
		return 0;
	}
	if (p->conn) {
		if (!p->conn->dead)
			link_fail(p->conn->link, ESHUTDOWN, "takeover at site '%s'", r->site);
		conn_drop(p->conn);
	}
	if (p->cur) {
		rbatch_free(&p->cur->rb);
		p->cur = NULL;
	}
	reorder_reset(&p->ro, rbatch_free); /* not durable here: never received */
	p->takeover_pending = true;
	cmd_begin(p, PAIR_CMD_TAKEOVER, cb, cb_arg);
	loop_wakeup(r->loop); /* cb never runs inside this call */
	return 0;
}

int
repl_pair_delete(struct repl *r, struct group *g, repl_create_cb *cb, void *cb_arg, char *err,
		 size_t errlen)
{
	struct pair *p;
	int ret = verdict(r, g, PAIR_CMD_DELETE, &p, err, errlen);
	struct wire_msg m = {.hdr.type = WIRE_PAIR_CMD};

	if (ret == 1 || (ret < 0 && ret != -ENOENT))
		return ret;
	if (ret == -ENOENT) {
		/* Persisted but not running (e.g. a create that never finished). */
		struct group_pair_config none = {0};

		r->ops->save(r->arg, g, &none);
		group_set_pair_config(g, &none);
		snprintf(err, errlen, "pair configuration removed");
		return 1;
	}
	if (p->ready) {
		m.u.pair_cmd.cmd = WIRE_CMD_DELETE;
		m.u.pair_cmd.pair_id = p->pc.id;
		if (send_msg(p, &m) == 0) {
			cmd_begin(p, PAIR_CMD_DELETE, cb, cb_arg);
			p->cmd_deadline_ms = now_ms() + 10000;
			return 0;
		}
	}
	snprintf(err, errlen, "pair deleted at this site; site '%s' was not reachable: run 'jrbd "
		 "pair delete %s' there too. Volumes keep their data", p->pc.peer_site,
		 group_name(g));
	pair_delete_local(p, "deleted by the operator (the other site was not reachable)");
	return 1;
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
		uint64_t total = pc->resync ? pc->copy_total : p->copy_total;
		/* Not copying: whatever copy there was is complete. */
		uint64_t done = pc->state == PAIR_STATE_COPY ? copy_done_bytes(p) : total;

		json_object_set_new(
			pj, "copy",
			json_pack("{s:I, s:I, s:f, s:I, s:b}", "done_bytes", (json_int_t)done,
				  "total_bytes", (json_int_t)total, "percent",
				  total ? 100.0 * (double)done / (double)total : 100.0,
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
	json_object_set_new(pj, "reason", json_string(pc->reason));
	{
		char gen[24], sgen[24];
		uint64_t dirty = 0;
		json_t *bm = json_array();

		snprintf(gen, sizeof(gen), "%016" PRIx64, pc->gen);
		snprintf(sgen, sizeof(sgen), "%016" PRIx64, pc->synced_gen);
		json_object_set_new(pj, "generation", json_string(gen));
		json_object_set_new(pj, "synced_generation", json_string(sgen));
		json_object_set_new(pj, "changed_since_sync", json_boolean(pc->gen != pc->synced_gen));
		for (unsigned i = 0; i < group_nvolumes(g); i++) {
			struct diffmap *m = group_diffmap(g, i);

			if (!m)
				continue;
			dirty += diffmap_dirty_bytes(m);
			json_array_append_new(
				bm, json_pack("{s:s, s:I, s:I, s:I}", "volume", group_volume(g, i)->name,
					      "region_size", (json_int_t)diffmap_region_size(m),
					      "dirty_regions", (json_int_t)diffmap_count(m),
					      "dirty_bytes", (json_int_t)diffmap_dirty_bytes(m)));
		}
		json_object_set_new(pj, "bitmap", json_pack("{s:I, s:b, s:o}", "dirty_bytes",
							    (json_int_t)dirty, "tracking",
							    group_tracking(g), "volumes", bm));
		if (pc->role == PAIR_ROLE_PRIMARY && p) {
			json_t *cp = json_object_get(pj, "copy");

			if (cp) {
				json_object_set_new(cp, "kind", json_string(pc->resync ? "resync"
										    : "initial"));
				json_object_set_new(cp, "folding", json_boolean(pc->fold_to != 0));
			}
		}
	}
	if (p && (p->cmd_cb || p->drain_target || p->takeover_pending || p->swap_pending ||
		  p->resync_pending))
		json_object_set_new(pj, "pending",
				    json_string(p->takeover_pending ? "takeover"
						: p->swap_pending  ? "swap"
						: p->resync_pending ? "resync"
						: p->drain_target  ? "drain"
								   : pair_cmd_name(p->cmd_kind)));
	json_object_set_new(o, "pair", pj);
}
