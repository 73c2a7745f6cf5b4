/*
 * Formatting a journal volume, and reading its superblock pair.
 *
 * journal_format() is destructive and not crash-atomic: it first invalidates
 * both superblock copies, so a format interrupted half-way leaves a volume
 * with no valid superblock (refused by open and dump) rather than an old
 * journal whose area was partly zeroed. The record area is written with
 * zeros, not just sized: on a filesystem that allocates the extents and
 * marks them written, so the O_DIRECT + RWF_DSYNC batch writes later don't
 * have to convert unwritten extents (a metadata journal commit per write,
 * which would multiply the cost of every fdatasync).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/compiler.h"
#include "common/log.h"
#include "common/util.h"
#include "journal/journal_internal.h"

#define ZERO_CHUNK (1u << 20)

static int
fill_random(uint8_t *buf, size_t len)
{
	while (len) {
		ssize_t n = getrandom(buf, len, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
write_zeros(int fd, uint64_t offset, uint64_t len)
{
	uint8_t *zeros = calloc(1, ZERO_CHUNK);
	int r = 0;

	if (!zeros)
		return -ENOMEM;
	while (len) {
		size_t n = (size_t)MIN(len, (uint64_t)ZERO_CHUNK);

		r = util_pwrite_full(fd, zeros, n, offset);
		if (r < 0)
			break;
		offset += n;
		len -= n;
	}
	free(zeros);
	return r;
}

static int
zero_range(int fd, bool is_blk, uint64_t offset, uint64_t len)
{
	if (is_blk) {
		uint64_t range[2] = {offset, len};

		/* The device zeroes it (WRITE ZEROES / discard-zeroes) without
		 * moving the bytes; fall back to writing them. */
		if (ioctl(fd, BLKZEROOUT, range) == 0)
			return 0;
		log_debug("journal format: BLKZEROOUT: %m, writing zeros instead");
	}
	return write_zeros(fd, offset, len);
}

static int
check_opts(const struct journal_format_opts *opts)
{
	if (!opts || !opts->group || strlen(opts->group) >= JOURNAL_GROUPNAME_LEN)
		return -EINVAL;
	if (opts->nvolumes > JOURNAL_MAX_VOLUMES || (opts->nvolumes && !opts->volumes))
		return -EINVAL;
	for (unsigned i = 0; i < opts->nvolumes; i++) {
		if (!opts->volumes[i] || strlen(opts->volumes[i]) >= JOURNAL_VOLNAME_LEN)
			return -EINVAL;
	}
	if (opts->role != JOURNAL_ROLE_MASTER && opts->role != JOURNAL_ROLE_RESTORE)
		return -EINVAL;
	if (opts->size && opts->size < JOURNAL_MIN_SIZE)
		return -EINVAL;
	/* Seqs stay below 2^63: JSON (the dump, ctl) carries them as signed
	 * 64-bit integers, and seq + 1 never overflows. */
	if (opts->first_seq > (uint64_t)INT64_MAX)
		return -EINVAL;
	return 0;
}

int
journal_format(const char *path, const struct journal_format_opts *opts)
{
	struct journal_sb sb;
	uint8_t *sbbuf = NULL;
	uint64_t size = 0, area_size;
	bool is_blk, created = false;
	struct stat st;
	int fd, r;

	r = check_opts(opts);
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		created = fd >= 0;
	}
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	is_blk = S_ISBLK(st.st_mode);
	if (!is_blk && !S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto out;
	}
	if (is_blk || !opts->size) {
		r = util_fd_size(fd, &size);
		if (r < 0)
			goto out;
	}
	if (opts->size) {
		/* A device can hold a smaller journal, never a bigger one. */
		if (is_blk && opts->size > size) {
			r = -ENOSPC;
			goto out;
		}
		size = opts->size;
	}
	if (size < JOURNAL_MIN_SIZE || size > (uint64_t)INT64_MAX) {
		r = -EINVAL;
		goto out;
	}

	memset(&sb, 0, sizeof(sb));
	sb.align = util_dio_align(fd);
	area_size = ALIGN_DOWN(size - JOURNAL_AREA_START, (uint64_t)sb.align);

	/* Invalidate the old superblocks first (see the file comment). */
	r = write_zeros(fd, 0, JOURNAL_AREA_START);
	if (r < 0)
		goto out;
	if (fdatasync(fd) < 0) {
		r = -errno;
		goto out;
	}
	if (!is_blk && ftruncate(fd, (off_t)size) < 0) {
		r = -errno;
		goto out;
	}
	if (!(opts->reuse_area && !is_blk && (uint64_t)st.st_size == size &&
	      (uint64_t)st.st_blocks * 512u >= size))
		r = zero_range(fd, is_blk, JOURNAL_AREA_START, area_size);
	if (r < 0)
		goto out;

	r = fill_random(sb.uuid, sizeof(sb.uuid));
	if (r < 0)
		goto out;
	sb.seed = le_get64(sb.uuid);
	sb.journal_size = size;
	sb.area_start = JOURNAL_AREA_START;
	sb.area_size = area_size;
	sb.epoch = 0;
	sb.tail_lpos = sb.ckpt_lpos = 0;
	/* An empty log: the first record gets tail_seq, and everything
	 * before it counts as checkpointed. */
	sb.tail_seq = sb.ckpt_seq = opts->first_seq ? opts->first_seq : 1;
	sb.created_ns = sb.updated_ns = util_now_ns();
	snprintf(sb.group, sizeof(sb.group), "%s", opts->group);
	sb.nvolumes = (uint16_t)opts->nvolumes;
	sb.role = (uint16_t)opts->role;
	for (unsigned i = 0; i < opts->nvolumes; i++)
		snprintf(sb.volumes[i], sizeof(sb.volumes[i]), "%s", opts->volumes[i]);

	sbbuf = calloc(1, JOURNAL_SB_SIZE);
	if (!sbbuf) {
		r = -ENOMEM;
		goto out;
	}
	/* Two valid copies: B with gen 0, A with gen 1, so A wins and the
	 * first write after open (to the other copy than the one picked) goes
	 * to B. */
	sb.sb_gen = 0;
	journal_sb_encode(&sb, sbbuf);
	r = util_pwrite_full(fd, sbbuf, JOURNAL_SB_SIZE, JOURNAL_SB_SIZE);
	if (r < 0)
		goto out;
	sb.sb_gen = 1;
	journal_sb_encode(&sb, sbbuf);
	r = util_pwrite_full(fd, sbbuf, JOURNAL_SB_SIZE, 0);
	if (r < 0)
		goto out;
	if (fsync(fd) < 0) {
		r = -errno;
		goto out;
	}
	if (created)
		r = util_fsync_parent(path);
	log_debug("journal '%s': formatted, %" PRIu64 " bytes, area %" PRIu64
	          ", align %u, first seq %" PRIu64,
	          path, size, area_size, sb.align, sb.tail_seq);
out:
	free(sbbuf);
	close(fd);
	return r;
}

int
journal_sb_read(int fd, struct journal_sb *ret, unsigned *ret_slot, char *why, size_t whylen)
{
	/* Aligned so this works on an O_DIRECT fd too (align <= 4096). */
	uint8_t *buf = util_aligned_alloc(4096, (size_t)2 * JOURNAL_SB_SIZE);
	const char *wa = NULL, *wb = NULL;
	struct journal_sb a, b;
	int r, ra, rb;

	if (!buf)
		return -ENOMEM;
	r = util_pread_full(fd, buf, (size_t)2 * JOURNAL_SB_SIZE, 0);
	if (r < 0) {
		if (why)
			snprintf(why, whylen, "cannot read the superblocks: %s",
			         strerrordesc_np(-r));
		goto out;
	}
	ra = journal_sb_decode_why(buf, JOURNAL_SB_SIZE, &a, &wa);
	rb = journal_sb_decode_why(buf + JOURNAL_SB_SIZE, JOURNAL_SB_SIZE, &b, &wb);
	if (ra < 0 && rb < 0) {
		if (why)
			snprintf(why, whylen, "superblock A: %s; superblock B: %s", wa, wb);
	}
	r = journal_sb_pick(buf, ret, ret_slot);
out:
	free(buf);
	return r;
}
