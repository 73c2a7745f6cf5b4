/*
 * The recovery scanner: follows the log from the superblock's tail through
 * a read callback and returns its valid records in order, applying exactly
 * the validity and retry rules of include/jrbd/journal_format.h.
 *
 * Memory is bounded: one buffer of JOURNAL_MAX_PAYLOAD + a header, whatever
 * the image says. Reads are exact: the 64-byte header first, then the
 * payload only once the header is known good and the record is the one
 * expected, so a stale or torn region costs one small read.
 *
 * Every on-disk length is bounded before it sizes a read, and every lpos
 * step is overflow-checked. The scan never goes past one area beyond the
 * tail (the writer never laps its own tail), and each valid record has a
 * higher seq than the last, so the scan always terminates.
 *
 * Not here: what to do with the records (journal.c redoes them, journal_dump.c
 * prints them).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/checked.h"
#include "common/compiler.h"
#include "common/log.h"
#include "common/util.h"
#include "journal/journal_internal.h"

#define SCAN_BUF_LEN ((size_t)JOURNAL_MAX_PAYLOAD + JOURNAL_REC_HDR_SIZE)

/* Outcome of looking for the expected record at one lpos. */
struct scan_try {
	enum journal_scan_stop why; /* JOURNAL_SCAN_END: no record stands there */
	int err;                    /* -errno for JOURNAL_SCAN_IO_ERROR */
	uint64_t lpos;
	char detail[128];
};

uint64_t
journal_phys(const struct journal_sb *sb, uint64_t lpos)
{
	return sb->area_start + lpos % sb->area_size;
}

int
journal_scan_init(struct journal_scan *s, const struct journal_sb *sb, journal_read_fn *read,
                  void *read_arg)
{
	memset(s, 0, sizeof(*s));
	if (sb->area_size == 0 || sb->align == 0 || (sb->align & (sb->align - 1)) != 0)
		return -EINVAL;
	/* Page-aligned so a read callback may hand it to O_DIRECT reads. */
	s->buf = util_aligned_alloc(4096, SCAN_BUF_LEN);
	if (!s->buf)
		return -ENOMEM;
	s->sb = sb;
	s->read = read;
	s->read_arg = read_arg;
	s->lpos = sb->tail_lpos;
	s->next_seq = sb->tail_seq;
	s->stop = JOURNAL_SCAN_END;
	s->stop_lpos = sb->tail_lpos;
	s->bad_lpos = sb->tail_lpos;
	return 0;
}

void
journal_scan_fini(struct journal_scan *s)
{
	if (!s)
		return;
	free(s->buf);
	s->buf = NULL;
	s->is_done = true;
}

static int try_fail(struct scan_try *t, enum journal_scan_stop why, uint64_t lpos, const char *fmt,
                    ...) PRINTF_FMT(4, 5);

static int
try_fail(struct scan_try *t, enum journal_scan_stop why, uint64_t lpos, const char *fmt, ...)
{
	va_list ap;

	t->why = why;
	t->lpos = lpos;
	va_start(ap, fmt);
	vsnprintf(t->detail, sizeof(t->detail), fmt, ap);
	va_end(ap);
	return 0;
}

/*
 * Looks for the record numbered s->next_seq at lpos. Returns 1 with *rec and
 * the payload in s->buf + header when it is valid, else 0 with *t saying why
 * (JOURNAL_SCAN_END: nothing that looks like a record stands there).
 */
static int
try_at(struct journal_scan *s, uint64_t lpos, struct journal_rec *rec, struct scan_try *t)
{
	const struct journal_sb *sb = s->sb;
	uint64_t in_area = lpos % sb->area_size;
	uint64_t limit, end;
	int r;

	/* The writer never writes past tail + area_size: beyond it lies the tail
	 * itself, so anything there is older than the log. */
	if (!checked_add_u64(sb->tail_lpos, sb->area_size, &limit))
		limit = UINT64_MAX;
	if (in_area + JOURNAL_REC_HDR_SIZE > sb->area_size)
		return try_fail(t, JOURNAL_SCAN_END, lpos,
		                "no room for a record before the area end at lpos %" PRIu64, lpos);
	if (!checked_add_u64(lpos, JOURNAL_REC_HDR_SIZE, &end) || end > limit)
		return try_fail(t, JOURNAL_SCAN_END, lpos, "log reaches its tail at lpos %" PRIu64,
		                lpos);
	r = s->read(s->read_arg, s->buf, JOURNAL_REC_HDR_SIZE, journal_phys(sb, lpos));
	if (r < 0) {
		t->err = r;
		return try_fail(t, JOURNAL_SCAN_IO_ERROR, lpos, "read error %d at lpos %" PRIu64, r,
		                lpos);
	}
	if (le_get32(s->buf) != JOURNAL_REC_MAGIC)
		return try_fail(t, JOURNAL_SCAN_END, lpos, "no record at lpos %" PRIu64, lpos);
	r = journal_rec_decode(s->buf, JOURNAL_REC_HDR_SIZE, sb->seed, rec);
	if (r == -EBADMSG)
		return try_fail(t, JOURNAL_SCAN_TORN_HDR, lpos,
		                "header checksum mismatch at lpos %" PRIu64, lpos);
	if (r < 0)
		return try_fail(t, JOURNAL_SCAN_TORN_HDR, lpos,
		                "invalid header at lpos %" PRIu64 " (kind %u, payload_len %u)",
		                lpos, s->buf[4], le_get32(s->buf + 8));
	/* payload_len is bounded by decode (<= JOURNAL_MAX_PAYLOAD), so this
	 * can't overflow and the payload fits the buffer. */
	if (in_area + JOURNAL_REC_HDR_SIZE + rec->payload_len > sb->area_size)
		return try_fail(t, JOURNAL_SCAN_TORN_HDR, lpos,
		                "record at lpos %" PRIu64 " (seq %" PRIu64 ") crosses the area end",
		                lpos, rec->seq);
	if (end + rec->payload_len > limit)
		return try_fail(t, JOURNAL_SCAN_TORN_HDR, lpos,
		                "record at lpos %" PRIu64 " (seq %" PRIu64 ") overruns the tail",
		                lpos, rec->seq);
	if (rec->seq != s->next_seq)
		return try_fail(t, JOURNAL_SCAN_STALE, lpos,
		                "seq %" PRIu64 " at lpos %" PRIu64 ", expected %" PRIu64, rec->seq,
		                lpos, s->next_seq);
	/* Same seq, written before a crash by an earlier open whose batch never
	 * completed: the record before it (from a later open) has a newer epoch. */
	if (rec->epoch < s->last_epoch)
		return try_fail(t, JOURNAL_SCAN_STALE, lpos,
		                "seq %" PRIu64 " at lpos %" PRIu64 " has epoch %u, older than %u",
		                rec->seq, lpos, rec->epoch, s->last_epoch);
	if (rec->epoch > sb->epoch)
		return try_fail(t, JOURNAL_SCAN_TORN_HDR, lpos,
		                "seq %" PRIu64 " at lpos %" PRIu64
		                " has epoch %u, newer than the superblock's %u",
		                rec->seq, lpos, rec->epoch, sb->epoch);
	if (rec->payload_len > 0) {
		r = s->read(s->read_arg, s->buf + JOURNAL_REC_HDR_SIZE, rec->payload_len,
		            journal_phys(sb, end));
		if (r < 0) {
			t->err = r;
			return try_fail(t, JOURNAL_SCAN_IO_ERROR, lpos,
			                "read error %d at lpos %" PRIu64 " (seq %" PRIu64 ")", r,
			                lpos, rec->seq);
		}
	}
	if (journal_rec_check_payload(rec, s->buf + JOURNAL_REC_HDR_SIZE, sb->seed) < 0)
		return try_fail(t, JOURNAL_SCAN_TORN_PAYLOAD, lpos,
		                "payload checksum mismatch at lpos %" PRIu64 " (seq %" PRIu64 ")",
		                lpos, rec->seq);
	return 1;
}

static void
scan_stop(struct journal_scan *s, uint64_t end_lpos, const struct scan_try *t)
{
	s->is_done = true;
	s->stop = t->why;
	s->stop_lpos = end_lpos;
	s->bad_lpos = t->lpos;
	memcpy(s->stop_detail, t->detail, sizeof(s->stop_detail));
	log_debug("journal scan: stops at lpos %" PRIu64 " before seq %" PRIu64 ": %s", end_lpos,
	          s->next_seq, s->stop_detail);
}

int
journal_scan_next(struct journal_scan *s, struct journal_rec *ret_rec, const void **ret_payload,
                  uint64_t *ret_lpos)
{
	const uint64_t align = s->sb->align, area = s->sb->area_size;
	struct scan_try first = {.why = JOURNAL_SCAN_END}, t;
	bool have_first = false;
	struct journal_rec rec;
	uint64_t pos;

	if (s->is_done || !s->buf)
		return 0;
	pos = s->lpos;
	s->wrapped_here = false;
	for (;;) {
		memset(&t, 0, sizeof(t));
		if (try_at(s, pos, &rec, &t) == 1) {
			/* Can't overflow: try_at checked pos + header + payload. */
			s->lpos = pos + JOURNAL_REC_HDR_SIZE + rec.payload_len;
			s->next_seq++;
			s->last_epoch = rec.epoch;
			s->wrapped_here = false;
			*ret_rec = rec;
			if (ret_payload)
				*ret_payload = s->buf + JOURNAL_REC_HDR_SIZE;
			if (ret_lpos)
				*ret_lpos = pos;
			return 1;
		}
		if (t.why == JOURNAL_SCAN_IO_ERROR) {
			scan_stop(s, s->lpos, &t);
			return t.err;
		}
		/* The reason the log ends is what stands right after its last
		 * record, except that an empty unaligned spot is just batch padding:
		 * then what stands at the next batch start tells. The speculative
		 * wrap attempt never overrides it. */
		if (!have_first && !(t.why == JOURNAL_SCAN_END && !IS_ALIGNED(pos, align))) {
			first = t;
			have_first = true;
		}
		if (!IS_ALIGNED(pos, align)) {
			uint64_t next;

			if (!checked_add_u64(pos, align - 1, &next))
				break;
			pos = ALIGN_DOWN(next, align);
			continue;
		}
		if (!s->wrapped_here && pos % area != 0) {
			uint64_t next;

			s->wrapped_here = true;
			if (!checked_add_u64(pos - pos % area, area, &next))
				break;
			pos = next;
			continue;
		}
		break;
	}
	if (!have_first)
		first = t;
	scan_stop(s, s->lpos, &first);
	return 0;
}

/* --- read-ahead over a file --- */

int
journal_file_reader_init(struct journal_file_reader *r, int fd, uint64_t limit)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->limit = limit;
	r->win = malloc(JOURNAL_READ_WINDOW);
	return r->win ? 0 : -ENOMEM;
}

void
journal_file_reader_fini(struct journal_file_reader *r)
{
	free(r->win);
	r->win = NULL;
	r->win_len = 0;
}

int
journal_file_read(void *arg, void *buf, size_t len, uint64_t offset)
{
	struct journal_file_reader *r = arg;
	size_t want;
	int ret;

	if (!range_within(offset, len, r->limit))
		return -EIO;
	if (offset >= r->win_off && offset - r->win_off <= r->win_len &&
	    len <= r->win_len - (offset - r->win_off)) {
		memcpy(buf, r->win + (offset - r->win_off), len);
		return 0;
	}
	if (len >= JOURNAL_READ_WINDOW)
		return util_pread_full(r->fd, buf, len, offset);
	want = (size_t)MIN((uint64_t)JOURNAL_READ_WINDOW, r->limit - offset);
	r->win_len = 0;
	ret = util_pread_full(r->fd, r->win, want, offset);
	if (ret < 0)
		return ret;
	r->win_off = offset;
	r->win_len = want;
	memcpy(buf, r->win, len);
	return 0;
}
