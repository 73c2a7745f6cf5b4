/*
 * Reading retained, durable records back by seq: the replication sender at
 * the primary. Contract: journal_read_records() in journal.h.
 *
 * The range is decided at the call, from the index alone (journal.c: an
 * entry (seq, lpos, len) at each batch start and every JOURNAL_IDX_GRANULE
 * record bytes, records back to back inside it): the entry holding from_seq
 * is always taken, then the entries after it while their record bytes fit
 * in max_bytes and out_cap, they stay on the same lap of the area, and
 * their records are <= min(max_seq, durable_seq). Since only the part of
 * the first entry from from_seq on is not known exactly, it is bounded by
 * the entry's len less one header per record skipped; when even that is
 * more than the budget, the read returns the one record at from_seq. So
 * first_seq..last_seq are known when the call returns and the caller can
 * issue the next read at last_seq + 1 before this one completes.
 *
 * One O_DIRECT read through the engine covers [first entry's start aligned
 * down, last entry's end aligned up) on one lap (so one contiguous physical
 * extent), at most about the budget + JOURNAL_BATCH_CAP bytes. Its
 * completion walks the entries captured at the call (the live index may
 * have moved on), decodes and verifies every record (header and payload
 * checksums with the journal's seed, seq continuity, kind and length, that
 * it stays inside its entry, epoch no newer than the journal's), and copies
 * those >= from_seq into the caller's buffer exactly as stored.
 *
 * The read cache (journal_cache.c) comes first: when every entry of the
 * range is still in memory, the same walk runs during the call over the
 * cached bytes, without a device read and without re-checking payload
 * checksums (they are the bytes this process checksummed and submitted),
 * and the request completes on return (JOURNAL_READ_CACHED). With
 * may_borrow, records are not even copied: data points at them in the
 * cache, and the range stops where they stop standing back to back there
 * (at a batch's end), unless that run is shorter than JOURNAL_BORROW_MIN:
 * then the range goes on and is copied. Otherwise, the device:
 *
 * Records read are only valid while retained: the caller's consumer must
 * hold them until the read completes. If the tail passed a record while the
 * read was in flight and its space was reused, the damage it finds is
 * reported as -ENOENT (released), not -EBADMSG.
 *
 * XXX: each read allocates its buffer (up to the budget + 2 MiB) and its
 * state; a pool sized from the sender's window would keep malloc off this
 * path.
 *
 * Not here: retention (consumers, journal.c), the wire format of what is
 * sent (src/repl), compression.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/compiler.h"
#include "common/log.h"
#include "common/util.h"
#include "io/io.h"
#include "journal/journal_internal.h"

/* Record bytes one read returns at most, whatever out_cap and max_bytes
 * say: keeps the read buffer and the io request length (an int) bounded.
 * The next call continues. */
#define JOURNAL_READ_MAX (64u << 20)
/* Index entries one read covers at most: with one small record per batch
 * (a lone synchronous writer) this is still thousands of records. */
#define JOURNAL_READ_MAX_ENTRIES 4096u

/* One read in flight; owned by the journal from the call to done. */
struct journal_read_state {
	struct io_req req; /* first: the engine completes it */
	struct journal_read_req *r;
	size_t nent;
	/* Entries covered, as captured at the call: ent[k] holds seqs
	 * ent[k].seq .. ent[k + 1].seq - 1, the last one up to r->last_seq. */
	struct journal_idx ent[];
};

static void journal_read_done(struct io_req *req, int res);

/* Cached records standing back to back: fewer are copied rather than sent
 * alone (a reply per tiny batch would cost a round trip each). */
#define JOURNAL_BORROW_MIN (64u << 10)

/* Where read_walk finds the entries and their bytes: entries captured at
 * the call and the device read's buffer, or (from the read cache, during
 * the call) the live index and the cache. */
struct walk_src {
	const struct journal_idx *ent; /* captured, or NULL: the live index from i0 */
	size_t i0, nent;
	bool cached;
	/* cached, no copy: *borrow gets where the records start in the cache;
	 * -EXDEV if they don't stand back to back there (the range decided
	 * at the call stops before that) */
	const uint8_t **borrow;
};

static const struct journal_idx *
walk_ent(const struct journal *j, const struct walk_src *s, size_t k)
{
	return s->ent ? &s->ent[k] : journal_idx_at(j, s->i0 + k);
}

/* Copies the records of the entries into r->out. 0, or -EPROTO / -EBADMSG
 * with *ret_bad_seq the seq that was expected where it failed, or -ENODATA:
 * an entry is not in the read cache. Records from the cache are the bytes
 * this process checksummed and submitted: their headers are decoded (to
 * find the records), their payload checksums not checked again. */
static int
read_walk(const struct journal *j, struct journal_read_req *r, const struct walk_src *s,
          uint64_t *ret_bad_seq)
{
	uint64_t seq = walk_ent(j, s, 0)->seq;
	int ret = 0;

	for (size_t k = 0; k < s->nent && ret == 0; k++) {
		const struct journal_idx *e = walk_ent(j, s, k);
		uint64_t stop = k + 1 < s->nent ? walk_ent(j, s, k + 1)->seq - 1 : r->last_seq;
		const uint8_t *base;
		size_t off, end;

		if (s->cached) {
			base = journal_cache_get(&j->cache, e->lpos, e->len);
			if (!base)
				return -ENODATA;
			off = 0;
		} else {
			/* Captured entries lie inside the read (checked at the call). */
			base = r->rbuf;
			off = (size_t)(e->lpos - r->rlpos);
		}
		end = off + e->len;
		if (e->seq != seq) {
			ret = -EPROTO; /* our bug: the index skipped records */
			break;
		}
		for (; seq <= stop; seq++) {
			const uint8_t *p = base + off;
			struct journal_rec rec;
			uint32_t size;

			if (end - off < JOURNAL_REC_HDR_SIZE) {
				ret = -EPROTO;
				break;
			}
			ret = journal_rec_decode(p, end - off, j->sb.seed, &rec);
			if (ret < 0)
				break;
			/* payload_len <= JOURNAL_MAX_PAYLOAD (decode checked) */
			size = JOURNAL_REC_HDR_SIZE + rec.payload_len;
			if (rec.seq != seq || rec.epoch > j->sb.epoch || size > end - off ||
			    journal_rec_validate(&rec) < 0) {
				ret = -EPROTO;
				break;
			}
			if (!s->cached) {
				ret = journal_rec_check_payload(&rec, p + JOURNAL_REC_HDR_SIZE,
				                                j->sb.seed);
				if (ret < 0)
					break;
			}
			if (seq >= r->first_seq) {
				/* The call bounded the range's bytes by out_cap. */
				if (size > r->out_cap - r->out_len) {
					assert(false); /* the range is larger than decided */
					ret = -EPROTO;
					break;
				}
				if (!s->borrow)
					memcpy(r->out + r->out_len, p, size);
				else if (!*s->borrow)
					*s->borrow = p;
				else if (p != *s->borrow + r->out_len)
					return -EXDEV;
				r->out_len += size;
				r->newest_ts_ns = rec.timestamp_ns;
			}
			off += size;
		}
		/* An entry taken whole ends exactly at its last record. */
		if (ret == 0 && k + 1 < s->nent && off != end)
			ret = -EPROTO;
	}
	if (ret < 0)
		*ret_bad_seq = seq;
	return ret;
}

static void
journal_read_done(struct io_req *req, int res)
{
	struct journal_read_state *st = container_of(req, struct journal_read_state, req);
	struct journal_read_req *r = st->r;
	struct journal *j = r->j;
	uint64_t bad_seq = 0;

	if (res < 0) {
		log_debug("journal: read of seq %" PRIu64 "..%" PRIu64 " at lpos %" PRIu64 ": %s",
		          r->first_seq, r->last_seq, r->rlpos, strerrordesc_np(-res));
		res = -EIO;
	} else {
		struct walk_src src = {.ent = st->ent, .nent = st->nent};

		res = read_walk(j, r, &src, &bad_seq);
		if (res < 0 && bad_seq < j->sb.tail_seq) {
			/* Released and overwritten while the read was in flight. */
			res = -ENOENT;
		} else if (res < 0) {
			log_debug("journal: read: record %" PRIu64 " is damaged (%s)", bad_seq,
			          strerrordesc_np(-res));
		}
	}
	r->data = r->out;
	if (res < 0) {
		r->out_len = 0;
		r->newest_ts_ns = 0;
	}
	/* done may reuse or free r: nothing of ours may point into it after. */
	free(r->rbuf);
	r->rbuf = NULL;
	r->rbuf_len = 0;
	r->ioreq = NULL;
	r->j = NULL;
	free(st);
	j->nreads--;
	r->done(r, res);
}

/* Bytes of records at and after from_seq in entry e (from_seq inside it):
 * at most its len less one header per record before from_seq. */
static uint64_t
first_entry_bound(const struct journal_idx *e, uint64_t from_seq)
{
	uint64_t skipped = (from_seq - e->seq) * JOURNAL_REC_HDR_SIZE;

	return skipped < e->len ? e->len - skipped : 0;
}

int
journal_read_records(struct journal *j, struct journal_read_req *r)
{
	struct journal_read_state *st;
	const struct journal_idx *e;
	uint64_t area, align, lap, start, end, cap_seq, last, budget, limit, total;
	size_t i, n;
	uint8_t *buf;
	const uint8_t *run, *run_start;
	uint32_t rlen;

	if (!j || !r || !r->out || !r->done ||
	    r->out_cap < JOURNAL_MAX_PAYLOAD + JOURNAL_REC_HDR_SIZE || r->max_seq < r->from_seq)
		return -EINVAL;
	if (j->failed)
		return -EIO;
	if (j->closing)
		return -ECANCELED;
	if (r->from_seq < j->sb.tail_seq)
		return -ENOENT;
	if (r->from_seq > j->durable_seq)
		return -EAGAIN;

	/* Every retained submitted record is indexed, and durable ones are
	 * submitted, so this can't fail. */
	i = journal_idx_find(j, r->from_seq);
	if (i == j->idx_len) {
		assert(false); /* a durable record not indexed */
		return -EIO;
	}
	area = j->sb.area_size;
	align = j->sb.align;
	cap_seq = MIN(r->max_seq, j->durable_seq);
	budget = MIN(MIN((uint64_t)r->max_bytes, (uint64_t)r->out_cap), (uint64_t)JOURNAL_READ_MAX);
	limit = budget + JOURNAL_BATCH_CAP;

	e = journal_idx_at(j, i);
	lap = e->lpos / area;
	start = ALIGN_DOWN(e->lpos, align);
	end = e->lpos + e->len;
	last = MIN(journal_idx_end_seq(j, i) - 1, cap_seq);
	total = first_entry_bound(e, r->from_seq);
	n = 1;
	/* Borrowing from the cache: the range ends where records stop standing
	 * back to back there (between batches: each has a region of its own),
	 * so the caller gets them without a copy and asks again for the rest.
	 * A shorter run than JOURNAL_BORROW_MIN is copied with what follows
	 * instead: lone writes, a batch each, travel together. */
	run = r->may_borrow && j->cache.buf ? journal_cache_get(&j->cache, e->lpos, e->len) : NULL;
	run_start = run;
	if (run)
		run += e->len;
	if (total > budget) {
		/* Not even the rest of this entry surely fits: the one record
		 * at from_seq does (out_cap holds a maximal one). */
		last = r->from_seq;
	} else {
		for (size_t k = i + 1; k < j->idx_len && last < cap_seq; k++) {
			e = journal_idx_at(j, k);
			if (n == JOURNAL_READ_MAX_ENTRIES || e->lpos / area != lap ||
			    total + e->len > budget ||
			    ALIGN_UP(e->lpos + e->len, align) - start > limit)
				break;
			if (run && journal_cache_get(&j->cache, e->lpos, e->len) != run) {
				if (run - run_start >= JOURNAL_BORROW_MIN)
					break;
				run = NULL;
			} else if (run) {
				run += e->len;
			}
			total += e->len;
			end = e->lpos + e->len;
			last = MIN(journal_idx_end_seq(j, k) - 1, cap_seq);
			n++;
		}
	}

	r->first_seq = r->from_seq;
	r->last_seq = last;
	r->nrecords = (uint32_t)(last - r->from_seq + 1); /* <= budget / 64 */
	r->out_len = 0;
	r->newest_ts_ns = 0;
	if (j->cache.buf) {
		struct walk_src src = {.i0 = i, .nent = n, .cached = true};
		const uint8_t *borrowed = NULL;
		uint64_t bad_seq;
		int res = -EXDEV;

		if (run) {
			src.borrow = &borrowed;
			res = read_walk(j, r, &src, &bad_seq);
			if (res == 0)
				r->data = borrowed;
		}
		if (res == -EXDEV) {
			r->out_len = 0;
			r->newest_ts_ns = 0;
			src.borrow = NULL;
			res = read_walk(j, r, &src, &bad_seq);
			r->data = r->out;
		}
		if (res == 0) {
			j->cache_hits++;
			return JOURNAL_READ_CACHED;
		}
		r->out_len = 0;
		r->newest_ts_ns = 0;
		r->data = NULL;
		if (res != -ENODATA) {
			/* Our own memory failed its header checks: a bug. The
			 * device copy is checked in full. */
			log_warn("journal: read cache: record %" PRIu64 " fails its checks (%s); "
			         "reading it from the device", bad_seq, strerrordesc_np(-res));
			assert(false);
		}
	}
	if (j->cache.buf)
		j->cache_misses++;

	/* An entry never crosses the area end, so neither does the read. */
	end = ALIGN_UP(end, align);
	JRBD_VERIFY(end - start <= limit && end <= (lap + 1) * area);
	rlen = (uint32_t)(end - start);

	st = malloc(sizeof(*st) + n * sizeof(st->ent[0]));
	/* O_DIRECT: memory aligned like the page cache (the fd needs <= align). */
	buf = util_aligned_alloc(4096, rlen);
	if (!st || !buf) {
		free(st);
		free(buf);
		return -ENOMEM;
	}
	memset(st, 0, sizeof(*st));
	st->r = r;
	st->nent = n;
	for (size_t k = 0; k < n; k++)
		st->ent[k] = *journal_idx_at(j, i + k);

	r->j = j;
	r->rbuf = buf;
	r->rbuf_len = rlen;
	r->rlpos = start;
	r->ioreq = &st->req;

	st->req.op = IO_OP_READ;
	st->req.fd = j->fd;
	st->req.buf = buf;
	st->req.len = rlen;
	st->req.offset = journal_phys(&j->sb, start);
	st->req.done = journal_read_done;
	st->req.arg = st;
	j->nreads++;
	io_engine_queue(j->io, &st->req);
	return 0;
}
