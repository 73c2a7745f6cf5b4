/*
 * The difference bitmap and its file. Format and contract: diffmap.h.
 *
 * In memory the bits are kept exactly as on disk (bytes, LSB-first), so a
 * dirty page is written straight from the map with no conversion; they are
 * read and written a 64-bit little-endian word at a time (le.h), which on
 * little-endian hosts is a plain load and store. Bits at and past nregions
 * are always zero in memory: the word loops (count, next_set, get_bits)
 * rely on it and never mask the end.
 *
 * Not here: deciding when to sync (the owner syncs before it releases the
 * journal records whose writes set the bits), logging (errors are returned,
 * with a message for open).
 */
#include "bitmap/diffmap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/checked.h"
#include "common/compiler.h"
#include "common/le.h"
#include "common/util.h"

#define WORD_BITS 64u
#define PAGE_WORDS (DIFFMAP_PAGE_SIZE / 8u)

struct diffmap {
	int fd;                /* the map file, O_RDWR; owned */
	uint32_t region_size;  /* bytes, a power of two */
	unsigned region_shift; /* log2(region_size) */
	uint64_t vol_size;     /* bytes */
	uint64_t nregions;     /* ceil(vol_size / region_size) */
	uint64_t count;        /* set bits */
	uint8_t *bits;         /* area_len bytes, the on-disk layout; owned */
	size_t area_len;       /* bytes of bits, a multiple of DIFFMAP_PAGE_SIZE */
	size_t nwords;         /* area_len / 8 */
	size_t npages;         /* area_len / DIFFMAP_PAGE_SIZE */
	uint64_t *dirty;       /* one bit per page, ceil(npages / 64) words; owned */
	size_t ndirty;         /* dirty bits set */
};

static bool
valid_region_size(uint32_t size)
{
	return size >= DIFFMAP_MIN_REGION && size <= DIFFMAP_MAX_REGION && !(size & (size - 1));
}

static uint64_t
nregions_for(uint64_t vol_size, unsigned shift)
{
	return (vol_size >> shift) + ((vol_size & ((1ull << shift) - 1)) != 0);
}

/* Bytes of the bits area for nregions: whole pages. */
static uint64_t
area_len_for(uint64_t nregions)
{
	uint64_t bytes = nregions / 8 + (nregions % 8 != 0);

	/* nregions <= 2^52 (vol_size < 2^64, regions >= 4 KiB): no overflow. */
	return ALIGN_UP(bytes, (uint64_t)DIFFMAP_PAGE_SIZE);
}

static inline uint64_t
word_get(const struct diffmap *m, uint64_t w)
{
	return le_get64(m->bits + w * 8);
}

static inline void
word_put(struct diffmap *m, uint64_t w, uint64_t v)
{
	le_put64(m->bits + w * 8, v);
}

static inline void
page_dirty(struct diffmap *m, uint64_t page)
{
	uint64_t bit = 1ull << (page % 64);

	if (!(m->dirty[page / 64] & bit)) {
		m->dirty[page / 64] |= bit;
		m->ndirty++;
	}
}

/* Mask of the bits of word w inside regions [a, b), a < b. */
static inline uint64_t
word_mask(uint64_t w, uint64_t a, uint64_t b)
{
	uint64_t mask = UINT64_MAX;

	if (w == a / WORD_BITS)
		mask &= UINT64_MAX << (a % WORD_BITS);
	if (w == (b - 1) / WORD_BITS)
		mask &= UINT64_MAX >> (WORD_BITS - 1 - (b - 1) % WORD_BITS);
	return mask;
}

/* Sets regions [a, b), a < b <= nregions; returns the bits that went 0->1. */
static uint64_t
set_range(struct diffmap *m, uint64_t a, uint64_t b)
{
	uint64_t added = 0;

	for (uint64_t w = a / WORD_BITS; w <= (b - 1) / WORD_BITS; w++) {
		uint64_t v = word_get(m, w), add = word_mask(w, a, b) & ~v;

		if (add) {
			word_put(m, w, v | add);
			added += (uint64_t)__builtin_popcountll(add);
			page_dirty(m, w / PAGE_WORDS);
		}
	}
	m->count += added;
	return added;
}

/* Clears regions [a, b), a < b <= area_len * 8 (past nregions: stray bits at load). */
static void
clear_range(struct diffmap *m, uint64_t a, uint64_t b)
{
	uint64_t removed = 0;

	for (uint64_t w = a / WORD_BITS; w <= (b - 1) / WORD_BITS; w++) {
		uint64_t v = word_get(m, w), del = word_mask(w, a, b) & v;

		if (del) {
			word_put(m, w, v & ~del);
			removed += (uint64_t)__builtin_popcountll(del);
			page_dirty(m, w / PAGE_WORDS);
		}
	}
	m->count -= removed;
}

/* ---- The file ------------------------------------------------------------- */

static void
header_encode(uint8_t *hdr, uint32_t region_size, uint64_t vol_size, uint64_t nregions)
{
	memset(hdr, 0, DIFFMAP_HDR_SIZE);
	memcpy(hdr + DIFFMAP_OFF_MAGIC, DIFFMAP_MAGIC, 8);
	le_put32(hdr + DIFFMAP_OFF_VERSION, DIFFMAP_VERSION);
	le_put32(hdr + DIFFMAP_OFF_REGION_SIZE, region_size);
	le_put64(hdr + DIFFMAP_OFF_VOL_SIZE, vol_size);
	le_put64(hdr + DIFFMAP_OFF_NREGIONS, nregions);
	le_put64(hdr + DIFFMAP_OFF_CSUM, XXH3_64bits(hdr, DIFFMAP_OFF_CSUM));
}

static int
header_write(const struct diffmap *m)
{
	uint8_t hdr[DIFFMAP_HDR_SIZE];

	header_encode(hdr, m->region_size, m->vol_size, m->nregions);
	return util_pwrite_full(m->fd, hdr, sizeof(hdr), 0);
}

/* Sets the geometry for vol_size and allocates a clear map and dirty mask. */
static int
geometry_init(struct diffmap *m, uint64_t vol_size, uint32_t region_size)
{
	uint64_t area;

	m->region_size = region_size;
	m->region_shift = (unsigned)__builtin_ctz(region_size);
	m->vol_size = vol_size;
	m->nregions = nregions_for(vol_size, m->region_shift);
	area = area_len_for(m->nregions);
	/* Keeps the file offsets (HDR + area) inside off_t as well. */
	if (area > SIZE_MAX || area > (uint64_t)INT64_MAX - DIFFMAP_HDR_SIZE)
		return -EFBIG;
	m->area_len = (size_t)area;
	m->nwords = m->area_len / 8;
	m->npages = m->area_len / DIFFMAP_PAGE_SIZE;
	m->bits = calloc(1, m->area_len);
	m->dirty = calloc((m->npages + 63) / 64, sizeof(*m->dirty));
	if (!m->bits || !m->dirty)
		return -ENOMEM;
	return 0;
}

/* pwrites the dirty pages, adjacent ones in one call; the dirty mask is
 * left as it is. */
static int
write_dirty(const struct diffmap *m)
{
	size_t p = 0;

	while (p < m->npages) {
		size_t q;
		int r;

		if (!m->dirty[p / 64]) {
			p = ALIGN_DOWN(p, (size_t)64) + 64;
			continue;
		}
		if (!(m->dirty[p / 64] & (1ull << (p % 64)))) {
			p++;
			continue;
		}
		for (q = p + 1; q < m->npages && (m->dirty[q / 64] & (1ull << (q % 64))); q++)
			;
		r = util_pwrite_full(m->fd, m->bits + p * DIFFMAP_PAGE_SIZE,
		                     (q - p) * DIFFMAP_PAGE_SIZE,
		                     DIFFMAP_HDR_SIZE + (uint64_t)p * DIFFMAP_PAGE_SIZE);
		if (r < 0)
			return r;
		p = q;
	}
	return 0;
}

static void
dirty_reset(struct diffmap *m)
{
	memset(m->dirty, 0, (m->npages + 63) / 64 * sizeof(*m->dirty));
	m->ndirty = 0;
}

/* Builds the file under "<path>.tmp" and renames it into place, so a crash
 * leaves either no map or a complete one (never an empty file that would
 * fail the header check on the next start). */
static int
map_create(struct diffmap *m, const char *path, char *err, size_t errlen)
{
	uint8_t hdr[DIFFMAP_HDR_SIZE];
	char *tmp = NULL;
	int r;

	if (asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		util_set_err(err, errlen, "diffmap '%s': out of memory", path);
		goto out;
	}
	m->fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (m->fd < 0) {
		r = -errno;
		util_set_err(err, errlen, "diffmap '%s': create: %s", tmp, strerrordesc_np(-r));
		goto out;
	}
	header_encode(hdr, m->region_size, m->vol_size, m->nregions);
	r = util_pwrite_full(m->fd, hdr, sizeof(hdr), 0);
	/* The bits start clear: a sparse area reads as zeros. */
	if (r == 0 && ftruncate(m->fd, (off_t)(DIFFMAP_HDR_SIZE + m->area_len)) < 0)
		r = -errno;
	if (r == 0 && fsync(m->fd) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		util_set_err(err, errlen, "diffmap '%s': create: %s", path, strerrordesc_np(-r));
		unlink(tmp);
		goto out;
	}
	r = util_fsync_parent(path);
	if (r < 0)
		util_set_err(err, errlen, "diffmap '%s': fsync directory: %s", path,
		             strerrordesc_np(-r));
out:
	free(tmp);
	return r;
}

/* Reads and checks the header of the file open on m->fd. Fills the old
 * geometry into ret_vol_size/ret_nregions. */
static int
header_read(const struct diffmap *m, const char *path, uint64_t file_size, uint32_t region_size,
            uint64_t *ret_vol_size, uint64_t *ret_nregions, char *err, size_t errlen)
{
	uint8_t hdr[DIFFMAP_HDR_SIZE];
	uint64_t vol_size, nregions;
	uint32_t version, rsize;
	int r;

	if (file_size < DIFFMAP_HDR_SIZE) {
		util_set_err(err, errlen,
		             "diffmap '%s': file too short for a header (%" PRIu64 " bytes)", path,
		             file_size);
		return -EBADMSG;
	}
	r = util_pread_full(m->fd, hdr, sizeof(hdr), 0);
	if (r < 0) {
		util_set_err(err, errlen, "diffmap '%s': read header: %s", path,
		             strerrordesc_np(-r));
		return r;
	}
	if (memcmp(hdr + DIFFMAP_OFF_MAGIC, DIFFMAP_MAGIC, 8) != 0) {
		util_set_err(err, errlen, "diffmap '%s': bad magic (not a diffmap file)", path);
		return -EBADMSG;
	}
	if (le_get64(hdr + DIFFMAP_OFF_CSUM) != XXH3_64bits(hdr, DIFFMAP_OFF_CSUM)) {
		util_set_err(err, errlen, "diffmap '%s': header checksum mismatch", path);
		return -EBADMSG;
	}
	version = le_get32(hdr + DIFFMAP_OFF_VERSION);
	if (version != DIFFMAP_VERSION) {
		util_set_err(err, errlen,
		             "diffmap '%s': unsupported version %" PRIu32 " (expected %u)", path,
		             version, DIFFMAP_VERSION);
		return -EBADMSG;
	}
	rsize = le_get32(hdr + DIFFMAP_OFF_REGION_SIZE);
	vol_size = le_get64(hdr + DIFFMAP_OFF_VOL_SIZE);
	nregions = le_get64(hdr + DIFFMAP_OFF_NREGIONS);
	if (!valid_region_size(rsize) || vol_size == 0 ||
	    nregions != nregions_for(vol_size, (unsigned)__builtin_ctz(rsize))) {
		util_set_err(err, errlen,
		             "diffmap '%s': inconsistent header (region size %" PRIu32
		             ", volume size %" PRIu64 ", %" PRIu64 " regions)",
		             path, rsize, vol_size, nregions);
		return -EBADMSG;
	}
	if (file_size - DIFFMAP_HDR_SIZE < area_len_for(nregions)) {
		util_set_err(err, errlen,
		             "diffmap '%s': file truncated (%" PRIu64 " bytes, %" PRIu64
		             " regions need %" PRIu64 ")",
		             path, file_size, nregions, DIFFMAP_HDR_SIZE + area_len_for(nregions));
		return -EBADMSG;
	}
	if (rsize != region_size) {
		util_set_err(err, errlen,
		             "diffmap '%s': region size is %" PRIu32 " bytes in the file, %" PRIu32
		             " requested",
		             path, rsize, region_size);
		return -EINVAL;
	}
	*ret_vol_size = vol_size;
	*ret_nregions = nregions;
	return 0;
}

/* Loads the existing file open on m->fd; grows it when vol_size grew. */
static int
map_load(struct diffmap *m, const char *path, uint64_t vol_size, uint32_t region_size, char *err,
         size_t errlen)
{
	uint64_t old_vol, old_nregions, old_area;
	struct stat st;
	int r;

	if (fstat(m->fd, &st) < 0) {
		r = -errno;
		util_set_err(err, errlen, "diffmap '%s': stat: %s", path, strerrordesc_np(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		util_set_err(err, errlen, "diffmap '%s': not a regular file", path);
		return -EINVAL;
	}
	r = header_read(m, path, (uint64_t)st.st_size, region_size, &old_vol, &old_nregions, err,
	                errlen);
	if (r < 0)
		return r;
	if (vol_size < old_vol) {
		util_set_err(err, errlen,
		             "diffmap '%s': volume shrank from %" PRIu64 " to %" PRIu64
		             " bytes (not supported)",
		             path, old_vol, vol_size);
		return -EINVAL;
	}
	r = geometry_init(m, vol_size, region_size);
	if (r < 0) {
		util_set_err(err, errlen, "diffmap '%s': %" PRIu64 " regions: %s", path,
		             m->nregions, strerrordesc_np(-r));
		return r;
	}
	old_area = area_len_for(old_nregions); /* <= m->area_len */
	r = util_pread_full(m->fd, m->bits, (size_t)old_area, DIFFMAP_HDR_SIZE);
	if (r < 0) {
		util_set_err(err, errlen, "diffmap '%s': read bits: %s", path, strerrordesc_np(-r));
		return r;
	}
	m->count = 0;
	for (size_t w = 0; w < m->nwords; w++)
		m->count += (uint64_t)__builtin_popcountll(word_get(m, w));
	/* Bits past the old end should be zero; if the file says otherwise,
	 * they mean nothing. Clearing them dirties their page, which is
	 * written with the next sync (until then a crash could bring them
	 * back, and a stray set bit costs only a copy). */
	if (old_nregions < old_area * 8)
		clear_range(m, old_nregions, old_area * 8);

	if (vol_size == old_vol)
		return 0;
	/* Grow. Whatever lies past the old area is cut first, so the new
	 * regions read as zero on disk as they do in memory. The larger file,
	 * and any page cleared above, must be durable before the header
	 * claims the new size. */
	if ((uint64_t)st.st_size > DIFFMAP_HDR_SIZE + old_area &&
	    ftruncate(m->fd, (off_t)(DIFFMAP_HDR_SIZE + old_area)) < 0)
		r = -errno;
	if (r == 0 && ftruncate(m->fd, (off_t)(DIFFMAP_HDR_SIZE + m->area_len)) < 0)
		r = -errno;
	if (r == 0)
		r = write_dirty(m);
	if (r == 0 && fsync(m->fd) < 0)
		r = -errno;
	if (r == 0)
		r = header_write(m);
	if (r == 0 && fdatasync(m->fd) < 0)
		r = -errno;
	if (r < 0) {
		util_set_err(err, errlen,
		             "diffmap '%s': grow from %" PRIu64 " to %" PRIu64 " bytes: %s", path,
		             old_vol, vol_size, strerrordesc_np(-r));
		return r;
	}
	dirty_reset(m);
	return 0;
}

int
diffmap_open(const char *path, uint64_t vol_size, uint32_t region_size, struct diffmap **ret,
             char *err, size_t errlen)
{
	struct diffmap *m;
	int r;

	if (!path || !*path || !ret) {
		util_set_err(err, errlen, "diffmap: no path");
		return -EINVAL;
	}
	if (!valid_region_size(region_size)) {
		util_set_err(err, errlen,
		             "diffmap '%s': bad region size %" PRIu32
		             " (a power of two from 4 KiB to 1 GiB)",
		             path, region_size);
		return -EINVAL;
	}
	if (vol_size == 0) {
		util_set_err(err, errlen, "diffmap '%s': volume size is 0", path);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		util_set_err(err, errlen, "diffmap '%s': out of memory", path);
		return -ENOMEM;
	}
	m->fd = open(path, O_RDWR | O_CLOEXEC);
	if (m->fd >= 0) {
		r = map_load(m, path, vol_size, region_size, err, errlen);
	} else if (errno == ENOENT) {
		r = geometry_init(m, vol_size, region_size);
		if (r < 0)
			util_set_err(err, errlen, "diffmap '%s': %" PRIu64 " regions: %s", path,
			             m->nregions, strerrordesc_np(-r));
		else
			r = map_create(m, path, err, errlen);
	} else {
		r = -errno;
		util_set_err(err, errlen, "diffmap '%s': open: %s", path, strerrordesc_np(-r));
	}
	if (r < 0) {
		diffmap_close(m);
		return r;
	}
	*ret = m;
	return 0;
}

void
diffmap_close(struct diffmap *m)
{
	if (!m)
		return;
	if (m->fd >= 0)
		close(m->fd);
	free(m->bits);
	free(m->dirty);
	free(m);
}

int
diffmap_sync(struct diffmap *m)
{
	int r;

	if (!m->ndirty)
		return 0;
	r = write_dirty(m);
	if (r < 0)
		return r;
	if (fdatasync(m->fd) < 0)
		return -errno;
	dirty_reset(m);
	return 0;
}

bool
diffmap_needs_sync(const struct diffmap *m)
{
	return m->ndirty != 0;
}

/* ---- The bits ------------------------------------------------------------- */

uint32_t
diffmap_region_size(const struct diffmap *m)
{
	return m->region_size;
}

uint64_t
diffmap_nregions(const struct diffmap *m)
{
	return m->nregions;
}

uint64_t
diffmap_vol_size(const struct diffmap *m)
{
	return m->vol_size;
}

uint64_t
diffmap_mark(struct diffmap *m, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (!len || off >= m->vol_size)
		return 0;
	end = len > m->vol_size - off ? m->vol_size : off + len;
	return set_range(m, off >> m->region_shift, ((end - 1) >> m->region_shift) + 1);
}

void
diffmap_clear_regions(struct diffmap *m, uint64_t first, uint64_t n)
{
	if (!n || first >= m->nregions)
		return;
	clear_range(m, first, n > m->nregions - first ? m->nregions : first + n);
}

void
diffmap_clear_all(struct diffmap *m)
{
	if (!m->count)
		return;
	for (size_t w = 0; w < m->nwords; w++) {
		if (word_get(m, w)) {
			word_put(m, w, 0);
			page_dirty(m, w / PAGE_WORDS);
		}
	}
	m->count = 0;
}

bool
diffmap_test(const struct diffmap *m, uint64_t region)
{
	return region < m->nregions && ((m->bits[region / 8] >> (region % 8)) & 1);
}

uint64_t
diffmap_count(const struct diffmap *m)
{
	return m->count;
}

uint64_t
diffmap_dirty_bytes(const struct diffmap *m)
{
	uint64_t last = m->nregions - 1;

	/* Neither product can overflow: both are < vol_size. */
	if (diffmap_test(m, last))
		return (m->count - 1) * m->region_size + (m->vol_size - (last << m->region_shift));
	return m->count * m->region_size;
}

uint64_t
diffmap_next_set(const struct diffmap *m, uint64_t from)
{
	uint64_t w, v, nw;

	if (from >= m->nregions)
		return UINT64_MAX;
	nw = (m->nregions + WORD_BITS - 1) / WORD_BITS;
	w = from / WORD_BITS;
	v = word_get(m, w) & (UINT64_MAX << (from % WORD_BITS));
	while (!v) {
		if (++w >= nw)
			return UINT64_MAX;
		v = word_get(m, w);
	}
	/* Bits past nregions are zero, so this is < nregions. */
	return w * WORD_BITS + (uint64_t)__builtin_ctzll(v);
}

/* The 64 bits from region pos on (zero past the area). */
static uint64_t
bits64_at(const struct diffmap *m, uint64_t pos)
{
	uint64_t w = pos / WORD_BITS, s = pos % WORD_BITS, v;

	if (w >= m->nwords)
		return 0;
	v = word_get(m, w) >> s;
	if (s && w + 1 < m->nwords)
		v |= word_get(m, w + 1) << (WORD_BITS - s);
	return v;
}

void
diffmap_get_bits(const struct diffmap *m, uint64_t first, uint64_t nbits, uint8_t *out)
{
	uint64_t avail;

	if (!nbits)
		return;
	memset(out, 0, (size_t)(nbits / 8 + (nbits % 8 != 0)));
	if (first >= m->nregions)
		return;
	avail = MIN(nbits, m->nregions - first);
	for (uint64_t i = 0; i < avail; i += WORD_BITS) {
		uint64_t v = bits64_at(m, first + i), n = MIN(WORD_BITS, avail - i);
		uint8_t b[8];

		/* Bits past nregions are already zero; only the range's end is cut. */
		if (n < WORD_BITS)
			v &= (1ull << n) - 1;
		le_put64(b, v);
		memcpy(out + i / 8, b, (size_t)(n / 8 + (n % 8 != 0)));
	}
}

/* First bit >= from in bits[0, nbits) equal to want, or nbits. Uniform
 * 64-bit words and bytes are skipped whole. */
static uint64_t
bits_find(const uint8_t *bits, uint64_t nbits, uint64_t from, bool want)
{
	uint64_t skip64 = want ? 0 : UINT64_MAX;
	uint8_t skip8 = want ? 0 : 0xff;

	while (from < nbits) {
		if (from % 64 == 0 && nbits - from >= 64 && le_get64(bits + from / 8) == skip64) {
			from += 64;
			continue;
		}
		if (from % 8 == 0 && nbits - from >= 8 && bits[from / 8] == skip8) {
			from += 8;
			continue;
		}
		if ((((bits[from / 8] >> (from % 8)) & 1) != 0) == want)
			return from;
		from++;
	}
	return nbits;
}

int64_t
diffmap_merge(struct diffmap *m, uint32_t peer_region_size, uint64_t first, const uint8_t *bits,
              uint64_t nbits)
{
	uint64_t added = 0, i = 0;

	if (!valid_region_size(peer_region_size))
		return -EINVAL;
	/* Each run of set bits is one byte range here. */
	while (i < nbits) {
		uint64_t a = bits_find(bits, nbits, i, true), b, region, off, len;

		if (a >= nbits)
			break;
		b = bits_find(bits, nbits, a + 1, false);
		/* Runs only move up the volume: the first past its end ends it. */
		if (!checked_add_u64(first, a, &region) ||
		    !checked_mul_u64(region, peer_region_size, &off) || off >= m->vol_size)
			break;
		if (!checked_mul_u64(b - a, peer_region_size, &len))
			len = UINT64_MAX; /* diffmap_mark clamps to the volume */
		added += diffmap_mark(m, off, len);
		i = b;
	}
	return (int64_t)added;
}
