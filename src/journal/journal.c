/*
 * The live journal: appends packed into batches (group commit), batch writes
 * through the I/O engine, the durable prefix, checkpoints and consumers that
 * release space, and recovery at open. Format: include/jrbd/journal_format.h;
 * contract: journal.h.
 *
 * Batches. A fixed pool of JOURNAL_NBATCHES buffers of JOURNAL_BATCH_CAP
 * bytes, allocated at open. Each buffer is
 *
 *   FREE -> OPEN (appends memcpy records in) -> READY (sealed: full, or
 *   committed while it could go) -> INFLIGHT (one O_DIRECT write)
 *   -> DONE (completed, waiting for its predecessors) -> FREE
 *
 * Only the open batch takes records; READY batches go out in order. The open
 * batch is submitted at journal_commit() only when fewer than
 * JOURNAL_MAX_INFLIGHT batches are outstanding: otherwise it keeps filling,
 * so the batch size adapts to the device's latency (adaptive group commit).
 * A batch's position is chosen at submit time: the first `align`-aligned
 * lpos at or after the head, moved to the next lap when the batch would
 * cross the end of the area, and only if it then fits in front of the
 * *persisted* tail: overwriting space whose release isn't on disk yet would
 * let a crash recover from a tail that no longer holds its record.
 *
 * Durability. Completions may come out of order; written_seq advances only
 * over the oldest outstanding batches that have completed, so it is always a
 * prefix of the sequence. Batch writes don't carry RWF_DSYNC: on a device
 * without FUA every DSYNC write costs a cache flush, and batches in flight
 * would each pay one. Instead one fdatasync of the journal at a time makes
 * everything written before it durable (group flush): durable_seq jumps to
 * the written_seq it captured, and batches keep going out while it runs, so
 * the next flush covers more of them.
 *
 * Index. For every retained record there is an entry (seq, lpos, len) at
 * or before it: one at each batch start and one every JOURNAL_IDX_GRANULE
 * record bytes inside a batch (after recovery: each run of contiguous
 * records, cut likewise). Within an entry records stand back to back, so an
 * entry spans less than a granule plus one maximal record, and never
 * crosses the end of the area.
 *
 * Space. Released up to tail = min(checkpoint, consumers' released + 1,
 * durable + 1), at index granularity: the tail moves to the start of the
 * entry holding the first record still needed. The superblock carrying the
 * new tail is written asynchronously (one write in flight, coalescing the
 * rest, alternating copies A/B); the space is reused only once that write
 * completed.
 *
 * Reading back. journal_reader.c reads retained durable records by seq for
 * the replication sender (journal_read_records): the index finds the entry
 * holding a seq and gives the exact byte extent of the entries after it, so
 * the range a read returns is decided before the read is issued. The reader
 * shares this file's state through journal_internal.h; journal_close() waits
 * for its reads. While the journal has a consumer, batches are packed in the
 * read cache (journal_cache.c) and stay there after they are written, so
 * that a reader that keeps up is served from memory.
 *
 * Not here: deciding when to checkpoint (the group does).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/checked.h"
#include "common/compiler.h"
#include "common/log.h"
#include "common/util.h"
#include "io/io.h"
#include "journal/journal_internal.h"

static void journal_pump(struct journal *j);
static void journal_sb_kick(struct journal *j);
static void cache_reconcile(struct journal *j);

/* --- index of retained records --- */

static int
idx_push(struct journal *j, uint64_t seq, uint64_t lpos, uint32_t len)
{
	if (j->idx_len == j->idx_cap) {
		/* Grows rarely: the ring is bounded by the retained entries, at
		 * most area_size / min(align, granule) of them. */
		size_t cap = j->idx_cap * 2;
		struct journal_idx *n = calloc(cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		for (size_t i = 0; i < j->idx_len; i++)
			n[i] = *journal_idx_at(j, i);
		free(j->idx);
		j->idx = n;
		j->idx_cap = cap;
		j->idx_head = 0;
	}
	*journal_idx_at(j, j->idx_len) = (struct journal_idx){.seq = seq, .lpos = lpos, .len = len};
	j->idx_len++;
	return 0;
}

size_t
journal_idx_find(const struct journal *j, uint64_t seq)
{
	size_t lo = 0, hi = j->idx_len;

	/* Largest entry with entry.seq <= seq. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (journal_idx_at(j, mid)->seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == 0 ? j->idx_len : lo - 1;
}

/* The retained position to keep from so that every record >= seq is kept:
 * the start of the entry holding seq, or the head when seq is past every
 * submitted record. Never before the persisted tail. */
static struct journal_idx
idx_locate(const struct journal *j, uint64_t seq)
{
	struct journal_idx cur = {.seq = j->sb.tail_seq, .lpos = j->sb.tail_lpos};
	size_t i;

	if (seq <= cur.seq)
		return cur;
	if (seq >= j->submitted_seq) {
		/* Callers cap seq at durable_seq + 1, so everything submitted is
		 * durable when this is reached. */
		return (struct journal_idx){.seq = j->submitted_seq, .lpos = j->head_lpos};
	}
	i = journal_idx_find(j, seq);
	if (i == j->idx_len || journal_idx_at(j, i)->seq <= cur.seq)
		return cur;
	return *journal_idx_at(j, i);
}

/* Forgets the batches wholly before the persisted tail. */
static void
idx_trim(struct journal *j)
{
	uint64_t tail = j->sb.tail_seq;

	while (j->idx_len) {
		bool released =
		    j->idx_len > 1 ? journal_idx_at(j, 1)->seq <= tail : tail >= j->submitted_seq;

		if (!released)
			break;
		j->idx_head = (j->idx_head + 1) % j->idx_cap;
		j->idx_len--;
	}
}

/* --- failure and callbacks --- */

static void
journal_fail(struct journal *j, int err)
{
	if (j->failed)
		return;
	j->failed = true;
	j->error = err < 0 ? err : -EIO;
	log_debug("journal: FAILED: %s", strerrordesc_np(-j->error));
}

/* Runs the callbacks that became due, once the state is consistent: they may
 * call back into the journal. */
static void
journal_notify(struct journal *j, bool durable_advanced, bool space_freed)
{
	/* Durable records first: a failure right behind them doesn't undo them. */
	if (durable_advanced && j->ops->on_durable)
		j->ops->on_durable(j->arg, j->durable_seq);
	if (j->failed && !j->error_reported) {
		j->error_reported = true;
		if (j->ops->on_error)
			j->ops->on_error(j->arg, j->error);
		return;
	}
	if (space_freed && j->want_space && !j->closing) {
		j->want_space = false;
		if (j->ops->on_space)
			j->ops->on_space(j->arg);
	}
}

/* --- superblock writes --- */

/* The superblock the current state calls for (tail, checkpoint, consumers). */
static void
journal_sb_wanted(const struct journal *j, struct journal_sb *ret)
{
	uint64_t limit = j->durable_seq + 1, ckpt = MIN(j->ckpt_req, limit), keep = ckpt;
	struct journal_idx t, c;

	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		if (j->cons[i].id)
			keep = MIN(keep, j->cons[i].released_seq + 1);
	}
	t = idx_locate(j, keep);
	c = idx_locate(j, ckpt);
	*ret = j->sb;
	ret->tail_seq = t.seq;
	ret->tail_lpos = t.lpos;
	/* The persisted checkpoint never moves back (a consumer can hold the
	 * tail, not the checkpoint), and never before the tail. */
	if (c.seq > ret->ckpt_seq) {
		ret->ckpt_seq = c.seq;
		ret->ckpt_lpos = c.lpos;
	}
	if (ret->ckpt_seq < ret->tail_seq) {
		ret->ckpt_seq = ret->tail_seq;
		ret->ckpt_lpos = ret->tail_lpos;
	}
	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		ret->consumers[i].id = j->cons[i].id;
		ret->consumers[i].released_seq = j->cons[i].released_seq;
		ret->consumers[i].received_seq = j->cons[i].received_seq;
	}
}

/* Whether a superblock write would change anything that matters. A
 * consumer's progress alone does not: a secondary that keeps up releases
 * records all the time, and a DSYNC superblock write for each release would
 * cost the host writes a device write and cache flush apiece. Progress is
 * persisted with the next write made for another reason (the tail or the
 * checkpoint moving, a consumer added or removed, close), so after a crash
 * a consumer's persisted release may be behind what it reported: the
 * journal then keeps records that were already released, never drops ones
 * that were not. */
static bool
sb_same_state(const struct journal_sb *a, const struct journal_sb *b)
{
	if (a->tail_lpos != b->tail_lpos || a->tail_seq != b->tail_seq ||
	    a->ckpt_lpos != b->ckpt_lpos || a->ckpt_seq != b->ckpt_seq)
		return false;
	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		if (a->consumers[i].id != b->consumers[i].id)
			return false;
	}
	return true;
}

/* Prepares the next superblock write (other copy, gen + 1) into sb_buf. */
static void
journal_sb_prepare(struct journal *j, const struct journal_sb *want)
{
	j->sb_next = *want;
	j->sb_next.sb_gen = j->sb.sb_gen + 1;
	j->sb_next.updated_ns = util_now_ns();
	j->sb_next_slot = 1 - j->sb_slot;
	journal_sb_encode(&j->sb_next, j->sb_buf);
	memset(&j->sb_req, 0, sizeof(j->sb_req));
	j->sb_req.op = IO_OP_WRITE;
	j->sb_req.fd = j->fd;
	j->sb_req.buf = j->sb_buf;
	j->sb_req.len = JOURNAL_SB_SIZE;
	j->sb_req.offset = (uint64_t)j->sb_next_slot * JOURNAL_SB_SIZE;
	j->sb_req.rw_flags = RWF_DSYNC;
	j->sb_req.arg = j;
}

/* The write completed: the new state is on disk. */
static bool
journal_sb_written(struct journal *j)
{
	bool freed = j->sb_next.tail_lpos > j->sb.tail_lpos;

	j->sb = j->sb_next;
	j->sb_slot = j->sb_next_slot;
	idx_trim(j);
	return freed;
}

static void
journal_sb_done(struct io_req *req, int res)
{
	struct journal *j = req->arg;
	bool freed = false;

	j->sb_inflight = false;
	if (res < 0) {
		log_debug("journal: superblock write: %s", strerrordesc_np(-res));
		journal_fail(j, res);
	} else {
		freed = journal_sb_written(j);
		if (freed)
			journal_pump(j);
		if (j->sb_dirty) {
			j->sb_dirty = false;
			journal_sb_kick(j);
		}
	}
	journal_notify(j, false, freed);
}

/* Persists the tail/checkpoint/consumers if they changed; asynchronous. */
static void
journal_sb_kick(struct journal *j)
{
	struct journal_sb want;

	if (j->failed)
		return;
	if (j->sb_inflight) {
		j->sb_dirty = true;
		return;
	}
	journal_sb_wanted(j, &want);
	if (sb_same_state(&want, &j->sb))
		return;
	journal_sb_prepare(j, &want);
	j->sb_req.done = journal_sb_done;
	j->sb_inflight = true;
	io_engine_queue(j->io, &j->sb_req);
}

/* Writes the superblock now and waits (open and close only). */
static int
journal_sb_write_sync(struct journal *j)
{
	struct journal_sb want;
	int r;

	journal_sb_wanted(j, &want);
	journal_sb_prepare(j, &want);
	j->sb_req.done = NULL;
	r = io_engine_run_one(j->io, &j->sb_req);
	if (r < 0)
		return r;
	journal_sb_written(j);
	return 0;
}

/* --- batches --- */

/* In the read cache when there is one (no copy to keep it), else its own
 * buffer. */
static void
batch_set_buffer(struct journal *j, struct journal_batch *b)
{
	b->in_cache = j->cache.buf && !j->cache_moving;
	if (!b->in_cache) {
		b->buf = b->own;
		return;
	}
	b->buf = journal_cache_reserve(&j->cache, &b->cache_v);
	/* The region must not reach a batch still packed in the cache. */
	for (unsigned i = 0; i < JOURNAL_NBATCHES; i++) {
		const struct journal_batch *o = &j->batches[i];

		if (o != b && o->state != BATCH_FREE && o->in_cache)
			JRBD_VERIFY(journal_cache_holds(&j->cache, o->cache_v));
	}
}

/* The open batch takes no more records. */
static void
batch_stop_filling(struct journal *j, struct journal_batch *b)
{
	if (b->in_cache)
		journal_cache_fill_end(&j->cache, b->cache_v, b->len);
}

static struct journal_batch *
batch_get_free(struct journal *j)
{
	for (unsigned i = 0; i < JOURNAL_NBATCHES; i++) {
		struct journal_batch *b = &j->batches[i];

		if (b->state == BATCH_FREE) {
			batch_set_buffer(j, b);
			b->state = BATCH_OPEN;
			b->len = 0;
			b->nrecords = 0;
			b->first_seq = b->last_seq = 0;
			b->nmarks = 0;
			return b;
		}
	}
	return NULL;
}

static void
batch_seal(struct journal *j)
{
	struct journal_batch *b = j->open;

	j->open = NULL;
	batch_stop_filling(j, b);
	b->state = BATCH_READY;
	j->ready[j->nready++] = b;
}

/* Where a batch of padded bytes would go now; false when it doesn't fit in
 * front of the persisted tail yet. */
static bool
batch_place(const struct journal *j, uint32_t padded, uint64_t *ret_lpos)
{
	const uint64_t area = j->sb.area_size;
	uint64_t lpos = ALIGN_UP(j->head_lpos, (uint64_t)j->sb.align);
	uint64_t in_area = lpos % area;

	if (in_area + padded > area)
		lpos += area - in_area; /* wrap: never straddle the end */
	if (lpos + padded - j->sb.tail_lpos > area)
		return false;
	*ret_lpos = lpos;
	return true;
}

/* The batch journal_pump writes next, if any. */
static struct journal_batch *
batch_next(const struct journal *j)
{
	if (j->nready)
		return j->ready[0];
	if (j->commit_wanted && j->open && j->open->nrecords)
		return j->open;
	return NULL;
}

/* Space, not the in-flight limit, holds the next batch back. */
static bool
journal_waits_for_space(const struct journal *j)
{
	const struct journal_batch *b = batch_next(j);
	uint64_t lpos;

	return b && !batch_place(j, ALIGN_UP(b->len, j->sb.align), &lpos);
}

static void journal_batch_done(struct io_req *req, int res);
static void journal_flush_kick(struct journal *j);

static void
batch_submit(struct journal *j, struct journal_batch *b, uint64_t lpos, uint32_t padded)
{
	/* Zero padding: it reads as "no record" to the scanner. */
	memset(b->buf + b->len, 0, padded - b->len);
	b->lpos = lpos;
	b->order = j->next_order++;
	b->res = 0;
	b->state = BATCH_INFLIGHT;
	j->noutstanding++;
	j->head_lpos = lpos + padded;
	j->submitted_seq = b->last_seq + 1;
	if (b->in_cache)
		journal_cache_add(&j->cache, lpos, b->cache_v, b->len);
	j->bytes_written += padded;
	j->nbatches++;
	for (unsigned m = 0; m < b->nmarks; m++) {
		uint32_t end = m + 1 < b->nmarks ? b->mark_off[m + 1] : b->len;

		if (idx_push(j, b->mark_seq[m], lpos + b->mark_off[m], end - b->mark_off[m]) < 0) {
			/* Without its index entries the tail could skip this batch. */
			journal_fail(j, -ENOMEM);
			break;
		}
	}
	/* Alone on an idle journal (QD1, FUA-heavy hosts), one DSYNC write is one
	 * round trip instead of a write and then an fdatasync. Under load the
	 * group flush covers many batches with one flush. */
	b->dsync = j->noutstanding == 1 && !j->flush_inflight && j->written_seq == j->durable_seq;
	memset(&b->req, 0, sizeof(b->req));
	b->req.op = IO_OP_WRITE;
	b->req.fd = j->fd;
	b->req.buf = b->buf;
	b->req.len = padded;
	b->req.offset = journal_phys(&j->sb, lpos);
	b->req.rw_flags = b->dsync ? RWF_DSYNC : 0; /* else made durable by the group flush */
	b->req.done = journal_batch_done;
	b->req.arg = b;
	io_engine_queue(j->io, &b->req);
}

/* Submits what may go: READY batches in order, then the open batch if a
 * commit asked for it. Stops at the in-flight limit or when the next batch
 * doesn't fit; completions call it again. */
static void
journal_pump(struct journal *j)
{
	if (j->in_pump) {
		j->pump_again = true;
		return;
	}
	j->in_pump = true;
	do {
		j->pump_again = false;
		while (!j->failed && j->noutstanding < JOURNAL_MAX_INFLIGHT) {
			struct journal_batch *b = batch_next(j);
			uint32_t padded;
			uint64_t lpos;

			if (!b) {
				j->commit_wanted = false;
				break;
			}
			padded = ALIGN_UP(b->len, j->sb.align);
			if (!batch_place(j, padded, &lpos))
				break;
			if (b == j->open) {
				j->open = NULL;
				j->commit_wanted = false;
				batch_stop_filling(j, b);
			} else {
				j->nready--;
				for (unsigned i = 0; i < j->nready; i++)
					j->ready[i] = j->ready[i + 1];
			}
			batch_submit(j, b, lpos, padded);
		}
	} while (j->pump_again);
	j->in_pump = false;
}

static struct journal_batch *
batch_by_order(struct journal *j, uint64_t order)
{
	for (unsigned i = 0; i < JOURNAL_NBATCHES; i++) {
		struct journal_batch *b = &j->batches[i];

		if ((b->state == BATCH_INFLIGHT || b->state == BATCH_DONE) && b->order == order)
			return b;
	}
	return NULL;
}

static void
journal_batch_done(struct io_req *req, int res)
{
	struct journal_batch *b = container_of(req, struct journal_batch, req);
	struct journal *j = b->j;
	bool advanced = false, freed = false;

	b->state = BATCH_DONE;
	b->res = res;
	if (res < 0) {
		log_debug("journal: batch write at lpos %" PRIu64 " (seq %" PRIu64 "..%" PRIu64
		          "): %s",
		          b->lpos, b->first_seq, b->last_seq, strerrordesc_np(-res));
		journal_fail(j, res);
	}
	/* Retire the completed prefix, oldest first. */
	while ((b = batch_by_order(j, j->retire_order)) && b->state == BATCH_DONE) {
		if (!j->failed) {
			/* A DSYNC batch right behind the durable prefix extends it. */
			if (b->dsync && j->durable_seq == j->written_seq) {
				j->durable_seq = b->last_seq;
				advanced = true;
			}
			j->written_seq = b->last_seq;
		}
		b->state = BATCH_FREE;
		j->retire_order++;
		j->noutstanding--;
		freed = true;
	}
	if (advanced)
		journal_sb_kick(j); /* durable_seq may hold the tail */
	if (j->cache_moving)
		cache_reconcile(j);
	journal_flush_kick(j);
	journal_pump(j);
	journal_notify(j, advanced, freed);
}

static void
journal_flush_done(struct io_req *req, int res)
{
	struct journal *j = container_of(req, struct journal, flush_req);
	bool advanced = false;

	j->flush_inflight = false;
	if (res < 0) {
		/* Never retry an fsync and call it success: what it covered is lost. */
		log_debug("journal: fdatasync: %s", strerrordesc_np(-res));
		journal_fail(j, res);
	} else if (!j->failed && j->flush_target > j->durable_seq) {
		j->durable_seq = j->flush_target;
		advanced = true;
		journal_sb_kick(j); /* durable_seq may hold the tail */
	}
	journal_flush_kick(j);
	journal_notify(j, advanced, false);
}

/* Starts an fdatasync covering every written record, unless one runs. */
static void
journal_flush_kick(struct journal *j)
{
	if (j->failed || j->flush_inflight || j->written_seq <= j->durable_seq)
		return;
	j->flush_inflight = true;
	j->flush_target = j->written_seq;
	memset(&j->flush_req, 0, sizeof(j->flush_req));
	j->flush_req.op = IO_OP_FSYNC;
	j->flush_req.fd = j->fd;
	j->flush_req.done = journal_flush_done;
	io_engine_queue(j->io, &j->flush_req);
}

/* --- open --- */

/* Follows the log from the tail: rebuilds the index, redoes the records at
 * or after the checkpoint, and finds the head. */
static int
journal_recover(struct journal *j, const char *path)
{
	struct journal_file_reader fr;
	struct journal_scan scan;
	uint64_t run_lpos = 0, run_end = 0;
	bool have_run = false;
	const uint64_t area = j->sb.area_size;
	int fd, r;

	/* Recovery reads through the page cache with its own read-ahead
	 * window: the scanner reads unaligned headers, which O_DIRECT can't.
	 * Batches were written with O_DIRECT, which keeps the cache coherent. */
	memset(&scan, 0, sizeof(scan));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = journal_file_reader_init(&fr, fd, j->sb.area_start + j->sb.area_size);
	if (r < 0)
		goto out;
	r = journal_scan_init(&scan, &j->sb, journal_file_read, &fr);
	if (r < 0)
		goto out;
	for (;;) {
		struct journal_rec rec;
		const void *payload;
		uint64_t lpos;

		r = journal_scan_next(&scan, &rec, &payload, &lpos);
		if (r <= 0)
			break;
		/* One index entry per run of contiguous records, cut every
		 * granule as the writer does, and at the end of the area: two
		 * batches can touch there, but an entry never crosses it. */
		if (!have_run || lpos != run_end || lpos - run_lpos >= JOURNAL_IDX_GRANULE ||
		    lpos % area == 0) {
			r = idx_push(j, rec.seq, lpos, 0);
			if (r < 0)
				break;
			run_lpos = lpos;
			have_run = true;
		}
		run_end = lpos + JOURNAL_REC_HDR_SIZE + rec.payload_len;
		/* < granule + one record: fits */
		journal_idx_at(j, j->idx_len - 1)->len = (uint32_t)(run_end - run_lpos);
		j->last_timestamp_ns = rec.timestamp_ns;
		if (rec.seq >= j->sb.ckpt_seq && j->ops->redo) {
			r = j->ops->redo(j->arg, &rec, payload);
			if (r < 0) {
				log_debug("journal '%s': redo of seq %" PRIu64 " failed", path,
				          rec.seq);
				break;
			}
		}
	}
	if (r < 0)
		goto out;
	log_debug("journal '%s': recovered seq %" PRIu64 "..%" PRIu64 ", ends at lpos %" PRIu64
	          ": %s",
	          path, j->sb.tail_seq, scan.next_seq, scan.stop_lpos, scan.stop_detail);
	/* Records below the checkpoint are in the data volumes, but if the log
	 * doesn't even reach the checkpoint, new records would get numbers that
	 * redo skips: refuse rather than lose them later. */
	if (scan.next_seq < j->sb.ckpt_seq) {
		log_debug("journal '%s': log ends at seq %" PRIu64
		          " before the checkpoint %" PRIu64,
		          path, scan.next_seq, j->sb.ckpt_seq);
		r = -EUCLEAN;
		goto out;
	}
	j->head_lpos = scan.stop_lpos;
	j->next_seq = j->submitted_seq = scan.next_seq;
	j->durable_seq = scan.next_seq - 1;
	j->written_seq = j->durable_seq;
	r = 0;
out:
	journal_scan_fini(&scan);
	journal_file_reader_fini(&fr);
	close(fd);
	return r;
}

static void
journal_free_mem(struct journal *j)
{
	for (unsigned i = 0; i < JOURNAL_NBATCHES; i++)
		free(j->batches[i].own);
	free(j->sb_buf);
	free(j->idx);
	journal_cache_fini(&j->cache);
	free(j);
}

int
journal_open(const char *path, struct io_engine *io, const struct journal_ops *ops, void *arg,
             struct journal **ret)
{
	struct journal *j;
	uint64_t size, area_end;
	struct io_req fsync_req;
	int r;

	if (!path || !io || !ops || !ret)
		return -EINVAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fd = -1;
	j->io = io;
	j->ops = ops;
	j->arg = arg;
	j->idx_cap = JOURNAL_INDEX_INIT;
	j->idx = calloc(j->idx_cap, sizeof(*j->idx));
	j->sb_buf = util_aligned_alloc(4096, JOURNAL_SB_SIZE);
	if (!j->idx || !j->sb_buf) {
		r = -ENOMEM;
		goto err;
	}
	for (unsigned i = 0; i < JOURNAL_NBATCHES; i++) {
		j->batches[i].j = j;
		j->batches[i].own = util_aligned_alloc(4096, JOURNAL_BATCH_CAP);
		j->batches[i].buf = j->batches[i].own;
		if (!j->batches[i].own) {
			r = -ENOMEM;
			goto err;
		}
	}
	j->fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (j->fd < 0) {
		r = -errno;
		goto err;
	}
	r = journal_sb_read(j->fd, &j->sb, &j->sb_slot, NULL, 0);
	if (r < 0)
		goto err;
	r = util_fd_size(j->fd, &size);
	if (r < 0)
		goto err;
	area_end = j->sb.area_start + j->sb.area_size; /* decode checked it */
	if (size < area_end) {
		log_debug("journal '%s': file is %" PRIu64 " bytes, the area ends at %" PRIu64,
		          path, size, area_end);
		r = -EPROTO;
		goto err;
	}
	/* Two batches must always fit, or a wrap could leave no room at all. */
	if (j->sb.area_size < 2ull * JOURNAL_BATCH_CAP || util_dio_align(j->fd) > j->sb.align) {
		log_debug("journal '%s': area %" PRIu64 " bytes, align %u: unusable here", path,
		          j->sb.area_size, j->sb.align);
		r = -EINVAL;
		goto err;
	}
	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		j->cons[i].id = j->sb.consumers[i].id;
		j->cons[i].released_seq = j->sb.consumers[i].released_seq;
		j->cons[i].received_seq = j->sb.consumers[i].received_seq;
	}
	j->ckpt_req = j->sb.ckpt_seq;

	/* What recovery is about to read may sit in a volatile device cache if
	 * the last writer died mid-batch; make it durable before redo copies
	 * it into the volumes, or a power loss could leave a volume holding a
	 * write the journal lost. */
	memset(&fsync_req, 0, sizeof(fsync_req));
	fsync_req.op = IO_OP_FSYNC;
	fsync_req.fd = j->fd;
	r = io_engine_run_one(io, &fsync_req);
	if (r < 0)
		goto err;

	r = journal_recover(j, path);
	if (r < 0)
		goto err;
	/* The new epoch is on disk before any record carries it, so records
	 * left by a batch that never completed lose to the ones we write. */
	/* XXX: a u32 wraps after 4 billion opens; not reachable in practice. */
	j->sb.epoch++;
	r = journal_sb_write_sync(j);
	if (r < 0)
		goto err;
	log_debug("journal '%s': open, epoch %u, seq %" PRIu64 "..%" PRIu64 ", head lpos %" PRIu64,
	          path, j->sb.epoch, j->sb.tail_seq, j->next_seq, j->head_lpos);
	*ret = j;
	return 0;
err:
	if (j->fd >= 0)
		close(j->fd);
	journal_free_mem(j);
	return r;
}

/* --- close --- */

void
journal_close(struct journal *j)
{
	int r = 0;

	if (!j)
		return;
	j->closing = true;
	journal_commit(j);
	/* Drain: completions submit what the in-flight limit held back. What
	 * still can't go (no space) was never durable, so never acknowledged.
	 * Reads in flight complete too (their done runs from here); new ones
	 * are refused while closing. */
	while (io_engine_pending(j->io) || j->noutstanding || j->sb_inflight || j->nreads) {
		r = io_engine_drain(j->io);
		if (r < 0)
			break;
	}
	if (r < 0 && (j->noutstanding || j->sb_inflight || j->nreads)) {
		/* XXX: the engine is broken and may still own our buffers;
		 * leaking them is the only safe choice. */
		log_debug("journal: close: drain failed (%s), leaking the journal",
		          strerrordesc_np(-r));
		return;
	}
	if (!j->failed) {
		r = journal_sb_write_sync(j);
		if (r < 0)
			log_debug("journal: close: final superblock: %s", strerrordesc_np(-r));
	}
	close(j->fd);
	journal_free_mem(j);
}

/* --- appends --- */

int
journal_append(struct journal *j, struct journal_rec *rec, const void *payload)
{
	struct journal_batch *b;
	uint32_t need;

	if (j->failed)
		return -EIO;
	if (!rec || journal_rec_validate(rec) < 0 || (rec->payload_len && !payload))
		return -EINVAL;
	need = JOURNAL_REC_HDR_SIZE + rec->payload_len;
	b = j->open;
	if (b && b->len + need > JOURNAL_BATCH_CAP) {
		/* Full: it goes as soon as the in-flight limit and space allow. */
		batch_seal(j);
		journal_pump(j);
		b = NULL;
	}
	if (!b) {
		b = batch_get_free(j);
		if (!b) {
			j->want_space = true;
			return -EAGAIN;
		}
		j->open = b;
	}
	/* A new index entry at the batch start, then every granule. */
	if (!b->nmarks || b->len - b->mark_off[b->nmarks - 1] >= JOURNAL_IDX_GRANULE) {
		JRBD_VERIFY(b->nmarks < JOURNAL_BATCH_MARKS);
		b->mark_seq[b->nmarks] = j->next_seq;
		b->mark_off[b->nmarks] = b->len;
		b->nmarks++;
	}
	rec->seq = j->next_seq++;
	rec->epoch = j->sb.epoch;
	rec->timestamp_ns = util_now_ns();
	/* The one copy of the payload; the checksum then reads it hot. */
	if (rec->payload_len)
		memcpy(b->buf + b->len + JOURNAL_REC_HDR_SIZE, payload, rec->payload_len);
	journal_rec_encode(rec, b->buf + b->len + JOURNAL_REC_HDR_SIZE, j->sb.seed,
	                   b->buf + b->len);
	if (!b->nrecords)
		b->first_seq = rec->seq;
	b->last_seq = rec->seq;
	b->len += need;
	b->nrecords++;
	j->records++;
	j->payload_bytes += rec->payload_len;
	j->last_timestamp_ns = rec->timestamp_ns;
	return 0;
}

void
journal_commit(struct journal *j)
{
	if (j->failed || !j->open || !j->open->nrecords)
		return;
	j->commit_wanted = true;
	journal_pump(j);
}

/* --- checkpoint and consumers --- */

void
journal_set_checkpoint(struct journal *j, uint64_t ckpt_seq)
{
	ckpt_seq = MIN(ckpt_seq, j->next_seq);
	if (ckpt_seq > j->ckpt_req)
		j->ckpt_req = ckpt_seq;
	journal_sb_kick(j);
}

static int
consumer_find(const struct journal *j, uint64_t id)
{
	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		if (j->cons[i].id == id)
			return (int)i;
	}
	return -ENOENT;
}

/* Batches packed in the cache move to their own buffers before it goes or
 * is resized; one the kernel is writing from can't, so the change waits for
 * its completion (new batches use their own buffers meanwhile). False
 * while one is still in flight. */
static bool
cache_vacate(struct journal *j)
{
	bool busy = false;

	for (unsigned i = 0; i < JOURNAL_NBATCHES; i++) {
		struct journal_batch *b = &j->batches[i];

		if (!b->in_cache)
			continue;
		if (b->state == BATCH_INFLIGHT) {
			busy = true;
			continue;
		}
		if (b->state == BATCH_OPEN || b->state == BATCH_READY)
			memcpy(b->own, b->buf, b->len);
		b->buf = b->own;
		b->in_cache = false;
	}
	return !busy;
}

/* The read cache is worth its memory only while a consumer reads records
 * back: allocated while there is one, freed when the last one goes. */
static void
cache_reconcile(struct journal *j)
{
	bool want = false;
	size_t cap = 0;
	int r;

	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS && j->cache_want; i++)
		want = want || j->cons[i].id;
	if (want) {
		/* More than the area would only hold records already released;
		 * below the minimum, a new batch's region could reach one in
		 * flight. */
		cap = (size_t)MIN((uint64_t)j->cache_want, j->sb.area_size);
		cap = ALIGN_DOWN(MAX(cap, JOURNAL_READ_CACHE_MIN), (size_t)4096);
	}
	if (j->cache.cap == cap) {
		j->cache_moving = false;
		return;
	}
	j->cache_moving = true;
	if (!cache_vacate(j))
		return; /* again when the batch in flight completes */
	j->cache_moving = false;
	journal_cache_fini(&j->cache);
	if (!cap)
		return;
	r = journal_cache_init(&j->cache, cap);
	if (r < 0)
		log_warn("journal: no %zu-byte read cache (%s): records are read back from the "
		         "device", cap, strerrordesc_np(-r));
}

void
journal_set_read_cache(struct journal *j, size_t bytes)
{
	if (bytes == j->cache_want)
		return;
	j->cache_want = bytes;
	cache_reconcile(j);
}

int
journal_consumer_add(struct journal *j, uint64_t id)
{
	int i;

	if (id == 0)
		return -EINVAL;
	if (consumer_find(j, id) >= 0)
		return -EEXIST;
	i = consumer_find(j, 0);
	if (i < 0)
		return -ENOSPC;
	/* It holds everything retained now; it releases from there. */
	j->cons[i].id = id;
	j->cons[i].released_seq = j->sb.tail_seq - 1;
	j->cons[i].received_seq = j->sb.tail_seq - 1;
	journal_sb_kick(j);
	cache_reconcile(j);
	return 0;
}

int
journal_consumer_remove(struct journal *j, uint64_t id)
{
	int i;

	if (id == 0)
		return -EINVAL;
	i = consumer_find(j, id);
	if (i < 0)
		return i;
	memset(&j->cons[i], 0, sizeof(j->cons[i]));
	journal_sb_kick(j);
	cache_reconcile(j);
	return 0;
}

int
journal_consumer_release(struct journal *j, uint64_t id, uint64_t released_seq)
{
	int i;

	if (id == 0)
		return -EINVAL;
	i = consumer_find(j, id);
	if (i < 0)
		return i;
	if (released_seq >= j->next_seq)
		return -EINVAL; /* can't release what wasn't written */
	if (released_seq <= j->cons[i].released_seq)
		return 0; /* a late or duplicate report */
	j->cons[i].released_seq = released_seq;
	if (released_seq > j->cons[i].received_seq)
		j->cons[i].received_seq = released_seq;
	journal_sb_kick(j);
	return 0;
}

int
journal_consumer_released(const struct journal *j, uint64_t id, uint64_t *ret)
{
	int i;

	if (id == 0)
		return -ENOENT;
	i = consumer_find(j, id);
	if (i < 0)
		return i;
	*ret = j->cons[i].released_seq;
	return 0;
}

/* --- introspection --- */

void
journal_get_stats(const struct journal *j, struct journal_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->size = j->sb.journal_size;
	ret->area_size = j->sb.area_size;
	ret->head_lpos = j->head_lpos;
	ret->tail_lpos = j->sb.tail_lpos;
	ret->used_bytes = j->head_lpos - j->sb.tail_lpos;
	ret->tail_seq = j->sb.tail_seq;
	ret->next_seq = j->next_seq;
	ret->durable_seq = j->durable_seq;
	ret->ckpt_seq = j->ckpt_req;
	ret->bytes_written = j->bytes_written;
	ret->payload_bytes = j->payload_bytes;
	ret->records = j->records;
	ret->batches = j->nbatches;
	ret->last_timestamp_ns = j->last_timestamp_ns;
	ret->read_cache_bytes = j->cache.cap;
	ret->read_cache_hits = j->cache_hits;
	ret->read_cache_misses = j->cache_misses;
	ret->epoch = j->sb.epoch;
	ret->failed = j->failed;
	ret->waiting_for_space = journal_waits_for_space(j);
}

const struct journal_sb *
journal_get_sb(const struct journal *j)
{
	return &j->sb;
}
