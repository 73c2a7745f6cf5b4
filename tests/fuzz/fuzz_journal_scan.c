/*
 * libFuzzer target for the journal recovery scanner (and the superblock
 * decoder in front of it).
 *
 * The input is a journal image. When its first 8192 bytes hold a valid
 * superblock pair, the scan runs with that superblock over the image (reads
 * past the input fail, like a truncated device). Otherwise a superblock is
 * synthesized with the whole input as the record area: seed 0, align 512,
 * tail at lpos 0 expecting seq 1, and the highest epoch so any record epoch
 * can pass. Records are checksummed, so mutations mostly land in headers and
 * lengths; the seeds in corpus/journal_scan/ hold valid records to start
 * from. The scan always runs to its end: it must terminate with bounded
 * memory whatever the image says.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "journal/journal.h"
#include "jrbd/journal_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_img {
	const uint8_t *data;
	size_t size;
	uint64_t base; /* physical offset of data[0] */
};

static int
fuzz_read(void *arg, void *buf, size_t len, uint64_t offset)
{
	const struct fuzz_img *im = arg;
	uint64_t off;

	if (offset < im->base)
		return -EIO;
	off = offset - im->base;
	if (off > im->size || len > im->size - off)
		return -EIO;
	memcpy(buf, im->data + off, len);
	return 0;
}

static void
scan_to_end(const struct journal_sb *sb, struct fuzz_img *im)
{
	struct journal_scan s;
	struct journal_rec rec;
	const void *payload;
	uint64_t lpos, n = 0;

	if (journal_scan_init(&s, sb, fuzz_read, im) < 0)
		return;
	while (journal_scan_next(&s, &rec, &payload, &lpos) == 1) {
		/* Touch what a consumer would: the payload must be readable. */
		if (rec.payload_len && ((const uint8_t *)payload)[rec.payload_len - 1] == 0xff)
			n++;
		n++;
	}
	(void)n;
	journal_scan_fini(&s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_img im = {.data = data, .size = size};
	struct journal_sb sb;
	struct journal_rec rec;

	if (size >= (size_t)2 * JOURNAL_SB_SIZE && journal_sb_pick(data, &sb, NULL) == 0) {
		scan_to_end(&sb, &im);
		return 0;
	}
	if (size >= JOURNAL_REC_HDR_SIZE)
		(void)journal_rec_decode(data, size, 0, &rec);
	memset(&sb, 0, sizeof(sb));
	sb.area_start = JOURNAL_AREA_START;
	sb.area_size = size & ~(uint64_t)511;
	if (sb.area_size == 0)
		return 0;
	sb.journal_size = sb.area_start + sb.area_size;
	sb.align = 512;
	sb.epoch = UINT32_MAX;
	sb.tail_seq = sb.ckpt_seq = 1;
	im.base = JOURNAL_AREA_START;
	scan_to_end(&sb, &im);
	return 0;
}
