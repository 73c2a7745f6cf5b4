/* The recovery scanner over crafted in-memory journal images. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal/journal.h"
#include "journal/journal_internal.h"
#include "jrbd/journal_format.h"
#include "leak_check.h"

static void
fini(void)
{
	test_leak_check();
}

TestSuite(journal_scan, .fini = fini);

#define ALIGN 4096u

struct img {
	uint8_t *buf;
	size_t size;
	struct journal_sb sb;
	/* read accounting */
	unsigned nreads;
	size_t max_read;
	bool fail_reads;
};

static void
img_init(struct img *im, uint64_t area_size)
{
	memset(im, 0, sizeof(*im));
	im->size = JOURNAL_AREA_START + area_size;
	im->buf = calloc(1, im->size);
	cr_assert(not(eq(ptr, im->buf, NULL)));
	im->sb.seed = 0x1234abcd5678ef90ull;
	im->sb.journal_size = im->size;
	im->sb.area_start = JOURNAL_AREA_START;
	im->sb.area_size = area_size;
	im->sb.align = ALIGN;
	im->sb.epoch = 5;
	im->sb.tail_lpos = im->sb.ckpt_lpos = 0;
	im->sb.tail_seq = im->sb.ckpt_seq = 1;
}

static void
img_fini(struct img *im)
{
	free(im->buf);
}

static int
mem_read(void *arg, void *buf, size_t len, uint64_t offset)
{
	struct img *im = arg;

	im->nreads++;
	if (len > im->max_read)
		im->max_read = len;
	if (im->fail_reads)
		return -EIO;
	if (offset > im->size || len > im->size - offset)
		return -EIO;
	memcpy(buf, im->buf + offset, len);
	return 0;
}

/* Writes a WRITE record (or a MARKER when len == 0) at lpos; returns the
 * lpos after it. Never crosses the area end (the test asks for that). */
static uint64_t
put_rec(struct img *im, uint64_t lpos, uint64_t seq, uint32_t epoch, uint32_t len)
{
	struct journal_rec r = {
	    .kind = len ? JOURNAL_REC_WRITE : JOURNAL_REC_MARKER,
	    .payload_len = len,
	    .length = len,
	    .offset = seq * 4096,
	    .seq = seq,
	    .epoch = epoch,
	    .timestamp_ns = seq * 1000,
	};
	uint64_t phys = im->sb.area_start + lpos % im->sb.area_size;
	uint8_t *p = im->buf + phys;

	cr_assert(le(u64, lpos % im->sb.area_size + 64 + len, im->sb.area_size));
	for (uint32_t i = 0; i < len; i++)
		p[64 + i] = (uint8_t)(seq + i);
	journal_rec_encode(&r, p + 64, im->sb.seed, p);
	return lpos + 64 + len;
}

static uint64_t
align_up(uint64_t x)
{
	return (x + ALIGN - 1) / ALIGN * ALIGN;
}

struct result {
	uint64_t seqs[256];
	uint64_t lpos[256];
	unsigned n;
	int r;
};

static void
scan_all(struct img *im, struct journal_scan *s, struct result *res)
{
	memset(res, 0, sizeof(*res));
	cr_assert(eq(int, journal_scan_init(s, &im->sb, mem_read, im), 0));
	for (;;) {
		struct journal_rec rec;
		const void *payload;
		uint64_t lpos;
		int r = journal_scan_next(s, &rec, &payload, &lpos);

		if (r <= 0) {
			res->r = r;
			break;
		}
		cr_assert(lt(u32, res->n, 256));
		/* payload is what was written */
		for (uint32_t i = 0; i < rec.payload_len; i++)
			cr_assert(eq(u8, ((const uint8_t *)payload)[i], (uint8_t)(rec.seq + i)));
		res->seqs[res->n] = rec.seq;
		res->lpos[res->n] = lpos;
		res->n++;
	}
	/* the end is sticky */
	{
		struct journal_rec rec;

		cr_assert(eq(int, journal_scan_next(s, &rec, NULL, NULL), 0));
	}
}

static void
assert_seqs(const struct result *res, uint64_t first, unsigned n)
{
	cr_assert(eq(u32, res->n, n), "got %u records, want %u", res->n, n);
	for (unsigned i = 0; i < n; i++)
		cr_assert(eq(u64, res->seqs[i], first + i));
}

Test(journal_scan, phys_maps_lpos_into_the_area)
{
	struct journal_sb sb = {.area_start = 8192, .area_size = 1 << 20};

	cr_assert(eq(u64, journal_phys(&sb, 0), 8192));
	cr_assert(eq(u64, journal_phys(&sb, (1 << 20) - 1), 8192 + (1 << 20) - 1));
	cr_assert(eq(u64, journal_phys(&sb, 1 << 20), 8192));
	cr_assert(eq(u64, journal_phys(&sb, 5ull * (1 << 20) + 77), 8192 + 77));
}

Test(journal_scan, empty_log_ends_cleanly)
{
	struct img im;
	struct journal_scan s;
	struct result res;

	img_init(&im, 1 << 20);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 0);
	cr_assert(eq(int, res.r, 0));
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_END));
	cr_assert(eq(u64, s.stop_lpos, 0));
	cr_assert(eq(u64, s.next_seq, 1));
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, clean_log)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0;

	img_init(&im, 1 << 20);
	for (uint64_t seq = 1; seq <= 20; seq++)
		lpos = put_rec(&im, lpos, seq, 5, (uint32_t)(seq * 100));
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 20);
	cr_assert(eq(u64, res.lpos[0], 0));
	cr_assert(eq(u64, res.lpos[1], 64 + 100));
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_END));
	cr_assert(eq(u64, s.stop_lpos, lpos));
	cr_assert(eq(u64, s.next_seq, 21));
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, skips_batch_padding)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0;

	img_init(&im, 1 << 20);
	/* three batches, each padded to ALIGN with zeros */
	lpos = put_rec(&im, lpos, 1, 5, 1000);
	lpos = put_rec(&im, lpos, 2, 5, 10);
	lpos = put_rec(&im, align_up(lpos), 3, 5, 4096 - 64); /* exactly one block */
	lpos = put_rec(&im, lpos, 4, 5, 0);
	lpos = put_rec(&im, align_up(lpos), 5, 5, 1);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 5);
	cr_assert(eq(u64, res.lpos[2], 4096));
	cr_assert(eq(u64, res.lpos[3], 8192));
	cr_assert(eq(u64, res.lpos[4], 12288));
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_END));
	cr_assert(eq(u64, s.stop_lpos, lpos));
	journal_scan_fini(&s);
	img_fini(&im);
}

/* Starting at an unaligned tail (the head of a drained journal). */
Test(journal_scan, unaligned_tail)
{
	struct img im;
	struct journal_scan s;
	struct result res;

	img_init(&im, 1 << 20);
	im.sb.tail_lpos = im.sb.ckpt_lpos = 3000;
	im.sb.tail_seq = im.sb.ckpt_seq = 50;
	put_rec(&im, put_rec(&im, 4096, 50, 5, 10), 51, 5, 10);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 50, 2);
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, wraps_to_the_next_lap)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	const uint64_t area = 64 * 1024;
	uint64_t lpos;

	img_init(&im, area);
	/* lap 3: the tail sits near the end of the area */
	im.sb.tail_lpos = im.sb.ckpt_lpos = 3 * area + area - 3 * ALIGN;
	im.sb.tail_seq = im.sb.ckpt_seq = 900;
	lpos = put_rec(&im, im.sb.tail_lpos, 900, 5, 2000);
	lpos = put_rec(&im, lpos, 901, 5, 2000);
	/* the next batch went to the next lap */
	lpos = put_rec(&im, 4 * area, 902, 5, 3000);
	lpos = put_rec(&im, lpos, 903, 5, 3000);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 900, 4);
	cr_assert(eq(u64, res.lpos[2], 4 * area));
	cr_assert(eq(u64, s.stop_lpos, lpos));
	journal_scan_fini(&s);
	img_fini(&im);
}

/* A header that would cross the end of the area isn't one: the scanner wraps. */
Test(journal_scan, no_room_for_a_header_before_the_end)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	const uint64_t area = 64 * 1024;
	uint64_t lpos;

	img_init(&im, area);
	im.sb.tail_lpos = im.sb.ckpt_lpos = area - ALIGN;
	im.sb.tail_seq = im.sb.ckpt_seq = 10;
	lpos = put_rec(&im, area - ALIGN, 10, 5, ALIGN - 64 - 32); /* ends 32 bytes short */
	cr_assert(eq(u64, lpos, area - 32));
	put_rec(&im, area, 11, 5, 100);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 10, 2);
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, record_crossing_the_area_end_is_invalid)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	const uint64_t area = 64 * 1024;
	struct journal_rec r = {
	    .kind = JOURNAL_REC_WRITE, .payload_len = 5000, .length = 5000, .seq = 2, .epoch = 5};
	static uint8_t payload[5000];
	uint64_t lpos;

	img_init(&im, area);
	im.sb.tail_lpos = im.sb.ckpt_lpos = area - 2 * ALIGN;
	lpos = put_rec(&im, im.sb.tail_lpos, 1, 5, 100);
	/* a batch at the last block whose record runs past the end */
	lpos = align_up(lpos);
	journal_rec_encode(&r, payload, im.sb.seed, im.buf + 8192 + lpos % area);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 1);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_TORN_HDR));
	cr_assert(not(eq(ptr, strstr(s.stop_detail, "crosses the area end"), NULL)), "%s",
	          s.stop_detail);
	cr_assert(eq(u64, s.bad_lpos, lpos));
	/* never read past the header of the bad record */
	cr_assert(le(sz, im.max_read, 100));
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, torn_header_ends_the_log)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0, at5 = 0;

	img_init(&im, 1 << 20);
	for (uint64_t seq = 1; seq <= 8; seq++) {
		if (seq == 5)
			at5 = lpos;
		lpos = put_rec(&im, lpos, seq, 5, 700);
	}
	im.buf[8192 + at5 + 20] ^= 0x10; /* inside record 5's header */
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 4);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_TORN_HDR));
	cr_assert(eq(u64, s.stop_lpos, at5));
	cr_assert(eq(u64, s.next_seq, 5));
	cr_assert(not(eq(ptr, strstr(s.stop_detail, "header checksum mismatch"), NULL)), "%s",
	          s.stop_detail);
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, torn_payload_ends_the_log)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0, at5 = 0;
	char want[128];

	img_init(&im, 1 << 20);
	for (uint64_t seq = 1; seq <= 8; seq++) {
		if (seq == 5)
			at5 = lpos;
		lpos = put_rec(&im, lpos, seq, 5, 700);
	}
	im.buf[8192 + at5 + 64 + 600] ^= 0x01;
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 4);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_TORN_PAYLOAD));
	cr_assert(eq(u64, s.stop_lpos, at5));
	snprintf(want, sizeof(want), "payload checksum mismatch at lpos %llu (seq 5)",
	         (unsigned long long)at5);
	cr_assert_str_eq(s.stop_detail, want);
	journal_scan_fini(&s);
	img_fini(&im);
}

/* Batch 2 was torn, batch 3 completed out of order: nothing of batch 3 is
 * replayed, since it was never acknowledged. */
Test(journal_scan, nothing_after_a_torn_batch_is_replayed)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0, b2, torn;

	img_init(&im, 1 << 20);
	for (uint64_t seq = 1; seq <= 3; seq++)
		lpos = put_rec(&im, lpos, seq, 5, 500);
	b2 = lpos = align_up(lpos);
	lpos = put_rec(&im, lpos, 4, 5, 500);
	torn = lpos;
	lpos = put_rec(&im, lpos, 5, 5, 500);
	lpos = put_rec(&im, lpos, 6, 5, 500);
	lpos = align_up(lpos);
	for (uint64_t seq = 7; seq <= 9; seq++)
		lpos = put_rec(&im, lpos, seq, 5, 500);
	/* the tail of batch 2 never reached the disk */
	memset(im.buf + 8192 + torn + 100, 0, align_up(torn) - torn - 100);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 4);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_TORN_PAYLOAD));
	cr_assert(eq(u64, s.stop_lpos, torn));
	cr_assert(gt(u64, torn, b2));
	journal_scan_fini(&s);
	img_fini(&im);
}

/* After a wrap, what follows the head is the previous lap: lower seqs. */
Test(journal_scan, stale_lower_seq_ends_the_log)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	const uint64_t area = 64 * 1024;
	uint64_t lpos;

	img_init(&im, area);
	/* lap 0: seqs 1..  filling the area */
	lpos = 0;
	for (uint64_t seq = 1; lpos + 64 + 960 <= area; seq++)
		lpos = put_rec(&im, lpos, seq, 5, 960);
	/* lap 1 overwrote the first blocks with seqs 100.. */
	im.sb.tail_lpos = im.sb.ckpt_lpos = area;
	im.sb.tail_seq = im.sb.ckpt_seq = 100;
	lpos = area;
	for (uint64_t seq = 100; seq < 104; seq++)
		lpos = put_rec(&im, lpos, seq, 5, 960);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 100, 4);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_STALE));
	cr_assert(eq(u64, s.stop_lpos, lpos));
	cr_assert(not(eq(ptr, strstr(s.stop_detail, "expected 104"), NULL)), "%s", s.stop_detail);
	/* stale records cost one header read each, never a payload read */
	cr_assert(le(sz, im.max_read, 960));
	journal_scan_fini(&s);
	img_fini(&im);
}

/* Epoch 4 wrote seqs 4..6 but only 4 was acknowledged... after the restart
 * (epoch 5) seq 5 was written again elsewhere, and the old seq 6 (epoch 4)
 * sits right where the new seq 6 would go. */
Test(journal_scan, stale_same_seq_with_older_epoch_after_restart)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0, at6;

	img_init(&im, 1 << 20);
	for (uint64_t seq = 1; seq <= 4; seq++)
		lpos = put_rec(&im, lpos, seq, 4, 200);
	lpos = put_rec(&im, lpos, 5, 5, 200); /* the restarted writer */
	at6 = lpos;
	put_rec(&im, lpos, 6, 4, 200); /* left over from before the crash */
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 5);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_STALE));
	cr_assert(eq(u64, s.stop_lpos, at6));
	cr_assert(not(eq(ptr, strstr(s.stop_detail, "epoch 4, older than 5"), NULL)), "%s",
	          s.stop_detail);
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, epoch_newer_than_the_superblock_is_rejected)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0;

	img_init(&im, 1 << 20);
	lpos = put_rec(&im, lpos, 1, 5, 10);
	put_rec(&im, lpos, 2, 6, 10);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 1);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_TORN_HDR));
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, oversized_payload_len_is_rejected_without_reading_it)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos = 0, bad;
	uint8_t *p;

	img_init(&im, 8 << 20);
	lpos = put_rec(&im, lpos, 1, 5, 10);
	bad = lpos;
	put_rec(&im, lpos, 2, 5, 10);
	/* claim 4 GiB - 1 and JOURNAL_MAX_PAYLOAD + 1, with good checksums */
	for (int round = 0; round < 2; round++) {
		uint32_t len = round ? JOURNAL_MAX_PAYLOAD + 1 : UINT32_MAX;

		p = im.buf + 8192 + bad;
		for (int i = 0; i < 4; i++)
			p[8 + i] = (uint8_t)(len >> (8 * i));
		for (int i = 0; i < 8; i++)
			p[32 + i] = (uint8_t)((uint64_t)len >> (8 * i));
		{
			uint64_t c = journal_checksum(p, 56, im.sb.seed);

			for (int i = 0; i < 8; i++)
				p[56 + i] = (uint8_t)(c >> (8 * i));
		}
		im.max_read = 0;
		scan_all(&im, &s, &res);
		assert_seqs(&res, 1, 1);
		cr_assert(eq(int, s.stop, JOURNAL_SCAN_TORN_HDR));
		cr_assert(not(eq(ptr, strstr(s.stop_detail, "invalid header"), NULL)), "%s",
		          s.stop_detail);
		cr_assert(le(sz, im.max_read, 64));
		journal_scan_fini(&s);
	}
	img_fini(&im);
}

/* The writer never laps its tail, so neither does the scan. */
Test(journal_scan, never_runs_past_the_tail)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	const uint64_t area = 64 * 1024;
	uint64_t lpos, seq = 1;

	img_init(&im, area);
	im.sb.tail_lpos = im.sb.ckpt_lpos = 2 * ALIGN;
	lpos = 2 * ALIGN;
	while (lpos + ALIGN <= area)
		lpos = put_rec(&im, lpos, seq++, 5, ALIGN - 64);
	cr_assert(eq(u64, lpos, area));
	/* Next lap: a record whose payload runs over the tail's spot. Its
	 * payload is the bytes already there, so the tail's records stay
	 * intact and only the overrun rule can reject it. */
	{
		struct journal_rec r = {.kind = JOURNAL_REC_WRITE,
		                        .payload_len = 3 * ALIGN,
		                        .length = 3 * ALIGN,
		                        .seq = seq++,
		                        .epoch = 5};

		journal_rec_encode(&r, im.buf + 8192 + 64, im.sb.seed, im.buf + 8192);
	}
	scan_all(&im, &s, &res);
	cr_assert(eq(u32, res.n, (unsigned)seq - 2), "%s", s.stop_detail);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_TORN_HDR));
	cr_assert(not(eq(ptr, strstr(s.stop_detail, "overruns the tail"), NULL)), "%s",
	          s.stop_detail);
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, read_error_stops_with_the_error)
{
	struct img im;
	struct journal_scan s;
	struct journal_rec rec;

	img_init(&im, 1 << 20);
	put_rec(&im, 0, 1, 5, 10);
	im.fail_reads = true;
	cr_assert(eq(int, journal_scan_init(&s, &im.sb, mem_read, &im), 0));
	cr_assert(eq(int, journal_scan_next(&s, &rec, NULL, NULL), -EIO));
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_IO_ERROR));
	cr_assert(eq(int, journal_scan_next(&s, &rec, NULL, NULL), 0));
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, garbage_is_a_clean_end)
{
	struct img im;
	struct journal_scan s;
	struct result res;
	uint64_t lpos;

	img_init(&im, 1 << 20);
	lpos = put_rec(&im, 0, 1, 5, 10);
	for (size_t i = 8192 + lpos; i < im.size; i++)
		im.buf[i] = (uint8_t)(i * 131 + 7);
	scan_all(&im, &s, &res);
	assert_seqs(&res, 1, 1);
	cr_assert(eq(int, s.stop, JOURNAL_SCAN_END));
	journal_scan_fini(&s);
	img_fini(&im);
}

Test(journal_scan, rejects_bad_geometry_at_init)
{
	struct journal_sb sb = {.area_start = 8192, .area_size = 0, .align = 4096};
	struct journal_scan s;

	cr_assert(eq(int, journal_scan_init(&s, &sb, mem_read, NULL), -EINVAL));
	sb.area_size = 1 << 20;
	sb.align = 3000;
	cr_assert(eq(int, journal_scan_init(&s, &sb, mem_read, NULL), -EINVAL));
	journal_scan_fini(&s);
}

/* The read-ahead reader: windows, big reads, and the limit. */
Test(journal_scan, file_reader_reads_exactly_what_is_asked)
{
	char *dir = test_tmpdir(), path[512];
	const size_t size = 3 * JOURNAL_READ_WINDOW + 1000;
	uint8_t *data = malloc(size), *buf = malloc(2 * JOURNAL_READ_WINDOW);
	struct journal_file_reader fr;
	const struct {
		uint64_t off;
		size_t len;
	} reads[] = {
	    {0, 64},
	    {64, 4000},
	    {JOURNAL_READ_WINDOW - 10, 20}, /* crosses the first window */
	    {5, 64},                        /* backwards */
	    {100, JOURNAL_READ_WINDOW + 5}, /* bigger than a window */
	    {size - 64, 64},                /* at the limit */
	    {size - 1000, 1000},
	    {size, 0},
	};
	int fd;

	cr_assert(dir && data && buf);
	snprintf(path, sizeof(path), "%s/f", dir);
	for (size_t i = 0; i < size; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 13);
	fd = open(path, O_CREAT | O_RDWR, 0600);
	cr_assert(eq(long, pwrite(fd, data, size, 0), (long)size));
	cr_assert(eq(int, journal_file_reader_init(&fr, fd, size), 0));
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		memset(buf, 0xee, reads[i].len + 1);
		cr_assert(eq(int, journal_file_read(&fr, buf, reads[i].len, reads[i].off), 0),
		          "read %zu", i);
		cr_assert(eq(int, memcmp(buf, data + reads[i].off, reads[i].len), 0), "read %zu",
		          i);
	}
	cr_assert(eq(int, journal_file_read(&fr, buf, 65, size - 64), -EIO));
	cr_assert(eq(int, journal_file_read(&fr, buf, 1, UINT64_MAX), -EIO));
	journal_file_reader_fini(&fr);
	close(fd);
	test_rm_rf(dir);
	free(dir);
	free(data);
	free(buf);
}
