/*
 * The difference bitmap (src/bitmap/diffmap.c) over real files: the region
 * math of mark/clear/test/count/dirty_bytes (partial last region, word and
 * page boundaries, clamping), next_set on a big sparse map, get_bits and
 * merge against a plain bool-per-region model, and the file: persistence
 * across close/reopen, memory-only changes before sync, growing, the open
 * errors (shrink, region size, damaged header), and that sync writes only
 * dirty pages.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "bitmap/diffmap.h"
#include "common/le.h"
#include "common/util.h"
#include "leak_check.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)
#define RS (64u << 10) /* the default region size */
/* Regions in one 4096-byte page of bits. */
#define PAGE_REGIONS (DIFFMAP_PAGE_SIZE * 8ull)

static char *tmpdir;
static char path[PATH_MAX];
static char err[256];

static void
setup(void)
{
	tmpdir = test_tmpdir();
	cr_assert(tmpdir != NULL, "test_tmpdir");
	snprintf(path, sizeof(path), "%s/diffmap", tmpdir);
	err[0] = '\0';
}

static void
teardown(void)
{
	if (tmpdir) {
		test_rm_rf(tmpdir);
		free(tmpdir);
		tmpdir = NULL;
	}
	test_leak_check();
}

TestSuite(diffmap, .init = setup, .fini = teardown, .timeout = 60);

/* --- helpers --- */

static struct diffmap *
dm_open(uint64_t vol_size, uint32_t region_size)
{
	struct diffmap *m = NULL;
	int r = diffmap_open(path, vol_size, region_size, &m, err, sizeof(err));

	cr_assert(eq(int, r, 0), "diffmap_open: %s (%s)", strerror(-r), err);
	cr_assert(m != NULL);
	return m;
}

/* Expects open to fail with want; *ret stays untouched and err is set. */
static void
open_fails(uint64_t vol_size, uint32_t region_size, int want)
{
	struct diffmap *m = (struct diffmap *)(uintptr_t)0x1;

	err[0] = '\0';
	cr_assert(eq(int, diffmap_open(path, vol_size, region_size, &m, err, sizeof(err)), want),
	          "%s", err);
	cr_assert(m == (struct diffmap *)(uintptr_t)0x1);
	cr_assert(strlen(err) > 0, "no message");
}

static uint64_t
file_size(void)
{
	struct stat st;

	cr_assert(eq(int, stat(path, &st), 0));
	return (uint64_t)st.st_size;
}

static void
file_write(const void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	cr_assert(fd >= 0);
	cr_assert(eq(int, util_pwrite_full(fd, buf, len, off), 0));
	close(fd);
}

static void
file_read(void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	cr_assert(fd >= 0);
	cr_assert(eq(int, util_pread_full(fd, buf, len, off), 0));
	close(fd);
}

/* Rewrites one header field and, when fix_csum, the checksum after it. */
static void
header_patch32(unsigned off, uint32_t v, bool fix_csum)
{
	uint8_t hdr[DIFFMAP_HDR_SIZE];

	file_read(hdr, sizeof(hdr), 0);
	le_put32(hdr + off, v);
	if (fix_csum)
		le_put64(hdr + DIFFMAP_OFF_CSUM, XXH3_64bits(hdr, DIFFMAP_OFF_CSUM));
	file_write(hdr, sizeof(hdr), 0);
}

/* Every region's bit equals the model's, and the count agrees. */
static void
check_model(const struct diffmap *m, const bool *model)
{
	uint64_t n = diffmap_nregions(m), set = 0;

	for (uint64_t r = 0; r < n; r++) {
		cr_assert(eq(int, diffmap_test(m, r), model[r]), "region %lu", (unsigned long)r);
		set += model[r];
	}
	cr_assert(eq(u64, diffmap_count(m), set));
}

/* A deterministic pseudo-random sequence (xorshift64). */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* --- geometry and region math --- */

Test(diffmap, create_is_clear)
{
	struct diffmap *m = dm_open(1 * GiB, RS);
	char tmp[PATH_MAX + 8];

	cr_assert(eq(u32, diffmap_region_size(m), RS));
	cr_assert(eq(u64, diffmap_nregions(m), 16384));
	cr_assert(eq(u64, diffmap_vol_size(m), 1 * GiB));
	cr_assert(eq(u64, diffmap_count(m), 0));
	cr_assert(eq(u64, diffmap_dirty_bytes(m), 0));
	cr_assert(not(diffmap_needs_sync(m)));
	cr_assert(eq(u64, diffmap_next_set(m, 0), UINT64_MAX));
	/* 16384 bits = 2048 bytes: one page after the header. */
	cr_assert(eq(u64, file_size(), DIFFMAP_HDR_SIZE + DIFFMAP_PAGE_SIZE));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	cr_assert(eq(int, access(tmp, F_OK), -1), "the temp file was renamed away");
	diffmap_close(m);
	diffmap_close(NULL);
}

Test(diffmap, header_layout)
{
	struct diffmap *m = dm_open(10 * MiB + 5, RS);
	uint8_t hdr[DIFFMAP_HDR_SIZE];

	diffmap_close(m);
	file_read(hdr, sizeof(hdr), 0);
	cr_assert(eq(int, memcmp(hdr, "JRBDDMAP", 8), 0));
	cr_assert(eq(u32, le_get32(hdr + 8), 1));
	cr_assert(eq(u32, le_get32(hdr + 12), RS));
	cr_assert(eq(u64, le_get64(hdr + 16), 10 * MiB + 5));
	cr_assert(eq(u64, le_get64(hdr + 24), 161));
	cr_assert(eq(u64, le_get64(hdr + 32), XXH3_64bits(hdr, 32)));
	for (size_t i = 40; i < sizeof(hdr); i++)
		cr_assert(eq(u8, hdr[i], 0), "byte %zu", i);
}

Test(diffmap, mark_count_dirty_bytes_partial_last)
{
	/* 10 full regions and a last one of 1000 bytes. */
	struct diffmap *m = dm_open(10 * RS + 1000, RS);

	cr_assert(eq(u64, diffmap_nregions(m), 11));
	cr_assert(eq(u64, diffmap_mark(m, 0, 1), 1));
	cr_assert(eq(u64, diffmap_dirty_bytes(m), RS));
	cr_assert(diffmap_needs_sync(m));
	cr_assert(eq(u64, diffmap_mark(m, 10 * RS + 999, 1), 1));
	cr_assert(diffmap_test(m, 10));
	cr_assert(eq(u64, diffmap_count(m), 2));
	cr_assert(eq(u64, diffmap_dirty_bytes(m), RS + 1000));
	/* Already set: nothing new. */
	cr_assert(eq(u64, diffmap_mark(m, 100, 4096), 0));
	cr_assert(eq(u64, diffmap_count(m), 2));
	/* Everything: the bytes are exactly the volume. */
	cr_assert(eq(u64, diffmap_mark(m, 0, 10 * RS + 1000), 9));
	cr_assert(eq(u64, diffmap_count(m), 11));
	cr_assert(eq(u64, diffmap_dirty_bytes(m), 10 * RS + 1000));
	diffmap_clear_regions(m, 10, 1);
	cr_assert(eq(u64, diffmap_dirty_bytes(m), 10 * RS));
	cr_assert(not(diffmap_test(m, 11)), "past the end reads false");
	diffmap_close(m);
}

Test(diffmap, mark_boundaries_and_clamping)
{
	struct diffmap *m = dm_open(100 * RS, RS);

	cr_assert(eq(u64, diffmap_mark(m, 5 * RS, 0), 0), "len 0 marks nothing");
	cr_assert(not(diffmap_needs_sync(m)));
	cr_assert(eq(u64, diffmap_count(m), 0));
	/* Two bytes straddling the boundary of regions 0 and 1. */
	cr_assert(eq(u64, diffmap_mark(m, RS - 1, 2), 2));
	cr_assert(diffmap_test(m, 0) && diffmap_test(m, 1) && !diffmap_test(m, 2));
	/* Exactly one region, aligned: just it. */
	cr_assert(eq(u64, diffmap_mark(m, 3 * RS, RS), 1));
	cr_assert(not(diffmap_test(m, 2)));
	cr_assert(not(diffmap_test(m, 4)));
	/* One byte more reaches into the next. */
	cr_assert(eq(u64, diffmap_mark(m, 5 * RS, RS + 1), 2));
	cr_assert(diffmap_test(m, 6) && !diffmap_test(m, 7));
	/* Past the end: nothing; reaching past it (or overflowing): clamped. */
	cr_assert(eq(u64, diffmap_mark(m, 100 * RS, 1), 0));
	cr_assert(eq(u64, diffmap_mark(m, UINT64_MAX, UINT64_MAX), 0));
	cr_assert(eq(u64, diffmap_mark(m, 98 * RS + 7, 10 * RS), 2));
	cr_assert(eq(u64, diffmap_mark(m, 90 * RS, UINT64_MAX), 8));
	cr_assert(eq(u64, diffmap_count(m), 2 + 1 + 2 + 10));
	cr_assert(eq(u64, diffmap_dirty_bytes(m), 15 * RS));
	diffmap_close(m);
}

ParameterizedTestParameters(diffmap, random_ops_match_model)
{
	static uint32_t sizes[] = {4u << 10, 64u << 10, 1u << 20, 1u << 30};

	return cr_make_param_array(uint32_t, sizes, sizeof(sizes) / sizeof(sizes[0]));
}

/* Random marks and clears, across word and page boundaries, against a bool
 * per region. */
ParameterizedTest(uint32_t *rs, diffmap, random_ops_match_model)
{
	const uint64_t nregions = 3 * PAGE_REGIONS / 2 + 77;
	const uint64_t vol = (nregions - 1) * *rs + 123;
	struct diffmap *m = dm_open(vol, *rs);
	bool *model = calloc(nregions, sizeof(*model));
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ *rs;

	cr_assert(model != NULL);
	cr_assert(eq(u64, diffmap_nregions(m), nregions));
	for (int k = 0; k < 400; k++) {
		uint64_t a = rnd(&seed) % nregions, n = rnd(&seed) % (k % 3 ? 200 : 40000);

		if (k % 4 == 3) {
			diffmap_clear_regions(m, a, n);
			for (uint64_t r = a; r < a + n && r < nregions; r++)
				model[r] = false;
		} else {
			uint64_t off = a * *rs + rnd(&seed) % *rs, len = n * *rs / 3, added = 0;

			/* The last region is partial: marks from past vol do nothing. */
			for (uint64_t r = off / *rs;
			     len && off < vol && r <= (off + len - 1) / *rs && r < nregions; r++) {
				added += !model[r];
				model[r] = true;
			}
			cr_assert(eq(u64, diffmap_mark(m, off, len), added), "op %d", k);
		}
	}
	check_model(m, model);
	/* next_set walks exactly the set regions. */
	for (uint64_t r = diffmap_next_set(m, 0), want = 0;; r = diffmap_next_set(m, r + 1)) {
		while (want < nregions && !model[want])
			want++;
		if (want == nregions) {
			cr_assert(eq(u64, r, UINT64_MAX));
			break;
		}
		cr_assert(eq(u64, r, want));
		want++;
	}
	diffmap_close(m);
	free(model);
}

Test(diffmap, clear_regions_and_clear_all)
{
	struct diffmap *m = dm_open(1000 * RS, RS);

	cr_assert(eq(u64, diffmap_mark(m, 0, 1000 * RS), 1000));
	cr_assert(eq(int, diffmap_sync(m), 0));
	cr_assert(not(diffmap_needs_sync(m)));

	diffmap_clear_regions(m, 10, 0);
	cr_assert(not(diffmap_needs_sync(m)), "n 0 clears nothing");
	diffmap_clear_regions(m, 1000, 5);
	cr_assert(not(diffmap_needs_sync(m)), "past the end clears nothing");
	diffmap_clear_regions(m, 63, 66); /* 63..128: across two word boundaries */
	cr_assert(eq(u64, diffmap_count(m), 934));
	cr_assert(diffmap_test(m, 62) && !diffmap_test(m, 63) && !diffmap_test(m, 128) &&
	          diffmap_test(m, 129));
	cr_assert(diffmap_needs_sync(m));
	diffmap_clear_regions(m, 990, UINT64_MAX); /* clamped */
	cr_assert(eq(u64, diffmap_count(m), 924));
	cr_assert(diffmap_test(m, 989) && !diffmap_test(m, 999));
	cr_assert(eq(u64, diffmap_next_set(m, 63), 129));

	diffmap_clear_all(m);
	cr_assert(eq(u64, diffmap_count(m), 0));
	cr_assert(eq(u64, diffmap_dirty_bytes(m), 0));
	cr_assert(eq(u64, diffmap_next_set(m, 0), UINT64_MAX));
	cr_assert(eq(int, diffmap_sync(m), 0));
	diffmap_close(m);

	m = dm_open(1000 * RS, RS);
	cr_assert(eq(u64, diffmap_count(m), 0), "the clear was persisted");
	diffmap_close(m);
}

Test(diffmap, next_set_sparse_8g)
{
	struct diffmap *m = dm_open(8 * GiB, RS);

	cr_assert(eq(u64, diffmap_nregions(m), 131072));
	cr_assert(eq(u64, diffmap_next_set(m, 0), UINT64_MAX));
	diffmap_mark(m, 0, 1);
	diffmap_mark(m, 64 * (uint64_t)RS, 1);
	diffmap_mark(m, 8 * GiB - 1, 1);
	cr_assert(eq(u64, diffmap_count(m), 3));
	cr_assert(eq(u64, diffmap_next_set(m, 0), 0));
	cr_assert(eq(u64, diffmap_next_set(m, 1), 64));
	cr_assert(eq(u64, diffmap_next_set(m, 64), 64));
	cr_assert(eq(u64, diffmap_next_set(m, 65), 131071));
	cr_assert(eq(u64, diffmap_next_set(m, 131071), 131071));
	cr_assert(eq(u64, diffmap_next_set(m, 131072), UINT64_MAX));
	cr_assert(eq(u64, diffmap_next_set(m, UINT64_MAX), UINT64_MAX));
	diffmap_clear_regions(m, 131071, 1);
	cr_assert(eq(u64, diffmap_next_set(m, 65), UINT64_MAX));
	diffmap_close(m);
}

Test(diffmap, get_bits_round_trip)
{
	const uint64_t nregions = 5000;
	struct diffmap *m = dm_open(nregions * RS - 1, RS);
	bool *model = calloc(nregions, sizeof(*model));
	uint64_t seed = 42;
	static const uint64_t firsts[] = {0, 1, 7, 63, 64, 65, 1000, 4990, 4999, 5000, 9999};
	static const uint64_t lens[] = {1, 7, 8, 9, 63, 64, 65, 129, 4000, 5000};

	cr_assert(model != NULL);
	for (uint64_t r = 0; r < nregions; r++) {
		if (rnd(&seed) % 3 == 0) {
			diffmap_mark(m, r * RS, 1);
			model[r] = true;
		}
	}
	check_model(m, model);
	for (size_t i = 0; i < sizeof(firsts) / sizeof(firsts[0]); i++) {
		for (size_t j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
			uint64_t first = firsts[i], nbits = lens[j];
			size_t nbytes = (size_t)((nbits + 7) / 8);
			/* Exactly the size the contract allows: ASan catches overruns. */
			uint8_t *out = malloc(nbytes);

			cr_assert(out != NULL);
			memset(out, 0xa5, nbytes);
			diffmap_get_bits(m, first, nbits, out);
			for (uint64_t b = 0; b < nbytes * 8; b++) {
				bool want = b < nbits && first + b < nregions && model[first + b];

				cr_assert(eq(int, (out[b / 8] >> (b % 8)) & 1, want),
				          "first %lu nbits %lu bit %lu", (unsigned long)first,
				          (unsigned long)nbits, (unsigned long)b);
			}
			free(out);
		}
	}

	/* Round trip: the bits merged into a fresh map of the same geometry
	 * give the same map. */
	{
		uint8_t *all = malloc(nregions / 8 + 1);
		struct diffmap *m2 = NULL;
		char path2[PATH_MAX + 8];

		cr_assert(all != NULL);
		diffmap_get_bits(m, 0, nregions, all);
		snprintf(path2, sizeof(path2), "%s/other", tmpdir);
		cr_assert(
		    eq(int, diffmap_open(path2, nregions * RS - 1, RS, &m2, err, sizeof(err)), 0));
		cr_assert(
		    eq(i64, diffmap_merge(m2, RS, 0, all, nregions), (int64_t)diffmap_count(m)));
		check_model(m2, model);
		diffmap_close(m2);
		free(all);
	}
	diffmap_close(m);
	free(model);
}

/* --- merge --- */

Test(diffmap, merge_same_region_size)
{
	struct diffmap *m = dm_open(100 * RS, RS);
	uint8_t bits[2] = {0x81, 0x03}; /* regions first+0, +7, +8, +9 */

	diffmap_mark(m, 10 * RS, 1);
	cr_assert(eq(i64, diffmap_merge(m, RS, 10, bits, 16), 3));
	cr_assert(diffmap_test(m, 10) && diffmap_test(m, 17) && diffmap_test(m, 18) &&
	          diffmap_test(m, 19));
	cr_assert(eq(u64, diffmap_count(m), 4));
	/* nbits cuts the chunk: bit 8 and 9 ignored. */
	cr_assert(eq(i64, diffmap_merge(m, RS, 50, bits, 8), 2));
	cr_assert(diffmap_test(m, 50) && diffmap_test(m, 57) && !diffmap_test(m, 58));
	cr_assert(eq(i64, diffmap_merge(m, RS, 0, bits, 0), 0));
	diffmap_close(m);
}

Test(diffmap, merge_smaller_peer_regions)
{
	struct diffmap *m = dm_open(100 * RS, RS);
	/* 16 KiB peer regions: 4 per region here. Bits 3 and 4 straddle
	 * regions 0 and 1; bit 11 is in region 2; bit 13 in region 3. */
	uint8_t bits[2] = {0x18, 0x28};

	cr_assert(eq(i64, diffmap_merge(m, 16 * KiB, 0, bits, 16), 4));
	cr_assert(diffmap_test(m, 0) && diffmap_test(m, 1) && diffmap_test(m, 2) &&
	          diffmap_test(m, 3) && !diffmap_test(m, 4));
	/* Starting at peer region 400 = region 100: past the end. */
	cr_assert(eq(i64, diffmap_merge(m, 16 * KiB, 400, bits, 16), 0));
	/* Peer region 399 is the last quarter of region 99. */
	bits[0] = 0x01;
	cr_assert(eq(i64, diffmap_merge(m, 16 * KiB, 399, bits, 8), 1));
	cr_assert(diffmap_test(m, 99));
	diffmap_close(m);
}

Test(diffmap, merge_larger_peer_regions)
{
	/* Volume ends inside the peer's region 3 (1 MiB peer regions). */
	struct diffmap *m = dm_open(3 * MiB + 3 * RS + 5, RS);
	uint8_t bits[1] = {0x0a}; /* peer regions 1 and 3 */

	cr_assert(eq(u64, diffmap_nregions(m), 52));
	cr_assert(eq(i64, diffmap_merge(m, 1 * MiB, 0, bits, 8), 16 + 4));
	cr_assert(not(diffmap_test(m, 15)));
	for (uint64_t r = 16; r < 32; r++)
		cr_assert(diffmap_test(m, r), "region %lu", (unsigned long)r);
	cr_assert(not(diffmap_test(m, 32)));
	cr_assert(not(diffmap_test(m, 47)));
	for (uint64_t r = 48; r < 52; r++)
		cr_assert(diffmap_test(m, r), "region %lu", (unsigned long)r);
	cr_assert(eq(u64, diffmap_dirty_bytes(m), 1 * MiB + 3 * RS + 5));
	/* A run of set bits reaching far past the end, and a first so large
	 * that first * size overflows: clamped, not errors. */
	{
		uint8_t ones[16];

		memset(ones, 0xff, sizeof(ones));
		cr_assert(eq(i64, diffmap_merge(m, 1 * GiB, 0, ones, 128), 52 - 20));
		cr_assert(eq(u64, diffmap_count(m), 52));
		cr_assert(eq(i64, diffmap_merge(m, 1 * GiB, UINT64_MAX - 3, ones, 128), 0));
		cr_assert(eq(i64, diffmap_merge(m, 4096, UINT64_MAX / 2, ones, 128), 0));
	}
	diffmap_close(m);
}

Test(diffmap, merge_rejects_bad_peer_region_size)
{
	struct diffmap *m = dm_open(100 * RS, RS);
	uint8_t bits[1] = {0xff};
	static const uint32_t bad[] = {0, 1, 2048, 3 * 4096, 65535, 2u << 30, UINT32_MAX};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert(eq(i64, diffmap_merge(m, bad[i], 0, bits, 8), -EINVAL), "%u", bad[i]);
	cr_assert(eq(u64, diffmap_count(m), 0));
	cr_assert(not(diffmap_needs_sync(m)));
	cr_assert(eq(i64, diffmap_merge(m, 4096, 0, bits, 8), 1));
	cr_assert(eq(i64, diffmap_merge(m, 1u << 30, 0, bits, 8), 99));
	diffmap_close(m);
}

/* --- the file --- */

Test(diffmap, persists_after_sync)
{
	const uint64_t vol = 3 * PAGE_REGIONS * RS; /* three pages of bits */
	struct diffmap *m = dm_open(vol, RS);
	uint8_t *a = malloc(3 * DIFFMAP_PAGE_SIZE), *b = malloc(3 * DIFFMAP_PAGE_SIZE);
	uint64_t count;

	cr_assert(a && b);
	diffmap_mark(m, 0, 3 * RS);
	diffmap_mark(m, PAGE_REGIONS * RS - 1, 2); /* last of page 0, first of page 1 */
	diffmap_mark(m, vol - 1, 1);
	diffmap_mark(m, 70000 * (uint64_t)RS, 100 * RS);
	count = diffmap_count(m);
	diffmap_get_bits(m, 0, 3 * PAGE_REGIONS, a);
	cr_assert(diffmap_needs_sync(m));
	cr_assert(eq(int, diffmap_sync(m), 0));
	cr_assert(not(diffmap_needs_sync(m)));
	cr_assert(eq(int, diffmap_sync(m), 0), "nothing dirty: a no-op");
	diffmap_close(m);

	m = dm_open(vol, RS);
	cr_assert(eq(u64, diffmap_count(m), count));
	cr_assert(not(diffmap_needs_sync(m)));
	diffmap_get_bits(m, 0, 3 * PAGE_REGIONS, b);
	cr_assert(eq(int, memcmp(a, b, 3 * DIFFMAP_PAGE_SIZE), 0));
	cr_assert(diffmap_test(m, PAGE_REGIONS - 1) && diffmap_test(m, PAGE_REGIONS));
	cr_assert(diffmap_test(m, 3 * PAGE_REGIONS - 1));
	diffmap_close(m);
	free(a);
	free(b);
}

Test(diffmap, unsynced_changes_are_memory_only)
{
	struct diffmap *m = dm_open(100 * RS, RS);

	diffmap_mark(m, 5 * RS, 1);
	cr_assert(eq(int, diffmap_sync(m), 0));
	diffmap_mark(m, 50 * RS, 1);
	diffmap_clear_regions(m, 5, 1);
	diffmap_close(m); /* no sync */

	m = dm_open(100 * RS, RS);
	cr_assert(diffmap_test(m, 5), "the clear was not synced");
	cr_assert(not(diffmap_test(m, 50)), "the mark was not synced");
	cr_assert(eq(u64, diffmap_count(m), 1));
	diffmap_close(m);
}

Test(diffmap, grows_with_the_volume)
{
	struct diffmap *m = dm_open(100 * RS + 10, RS);

	diffmap_mark(m, 100 * RS, 1); /* the partial last region, 100 */
	diffmap_mark(m, 7 * RS, 1);
	cr_assert(eq(int, diffmap_sync(m), 0));
	diffmap_close(m);

	/* Within the last page of bits, then well past it (two more pages). */
	m = dm_open(200 * RS, RS);
	cr_assert(eq(u64, diffmap_nregions(m), 200));
	cr_assert(eq(u64, diffmap_vol_size(m), 200 * RS));
	cr_assert(eq(u64, diffmap_count(m), 2));
	cr_assert(diffmap_test(m, 7) && diffmap_test(m, 100) && !diffmap_test(m, 101));
	cr_assert(eq(u64, diffmap_dirty_bytes(m), 2 * RS), "region 100 is whole now");
	cr_assert(not(diffmap_needs_sync(m)));
	diffmap_close(m);

	m = dm_open(2 * PAGE_REGIONS * RS + 1, RS);
	cr_assert(eq(u64, diffmap_nregions(m), 2 * PAGE_REGIONS + 1));
	cr_assert(eq(u64, file_size(), DIFFMAP_HDR_SIZE + 3 * DIFFMAP_PAGE_SIZE));
	cr_assert(eq(u64, diffmap_count(m), 2));
	cr_assert(eq(u64, diffmap_next_set(m, 101), UINT64_MAX), "new regions are clear");
	diffmap_mark(m, 2 * PAGE_REGIONS * RS, 1);
	cr_assert(eq(int, diffmap_sync(m), 0));
	diffmap_close(m);

	/* The header was rewritten: the old size is a shrink now. */
	open_fails(200 * RS, RS, -EINVAL);
	m = dm_open(2 * PAGE_REGIONS * RS + 1, RS);
	cr_assert(eq(u64, diffmap_count(m), 3));
	cr_assert(diffmap_test(m, 2 * PAGE_REGIONS));
	diffmap_close(m);
}

Test(diffmap, shrink_is_einval)
{
	diffmap_close(dm_open(100 * RS, RS));
	open_fails(100 * RS - 1, RS, -EINVAL);
	cr_assert(strstr(err, "shrank") != NULL, "%s", err);
	/* The file is untouched. */
	diffmap_close(dm_open(100 * RS, RS));
}

Test(diffmap, wrong_region_size_is_einval)
{
	diffmap_close(dm_open(100 * RS, RS));
	open_fails(100 * RS, 2 * RS, -EINVAL);
	cr_assert(strstr(err, "65536") != NULL && strstr(err, "131072") != NULL, "%s", err);
}

Test(diffmap, rejects_bad_arguments)
{
	static const uint32_t bad[] = {0, 2048, 4097, 3 * 4096, 2u << 30};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		open_fails(1 * GiB, bad[i], -EINVAL);
	open_fails(0, RS, -EINVAL);
	cr_assert(eq(int, access(path, F_OK), -1), "nothing was created");
}

Test(diffmap, damaged_header_is_ebadmsg)
{
	uint8_t b;

	diffmap_close(dm_open(100 * RS, RS));
	/* One byte of vol_size: the checksum no longer matches. */
	file_read(&b, 1, 17);
	b ^= 0x10;
	file_write(&b, 1, 17);
	open_fails(100 * RS, RS, -EBADMSG);
	cr_assert(strstr(err, "checksum") != NULL, "%s", err);
	b ^= 0x10;
	file_write(&b, 1, 17);
	diffmap_close(dm_open(100 * RS, RS));

	/* A damaged checksum field. */
	file_read(&b, 1, 39);
	b ^= 0x01;
	file_write(&b, 1, 39);
	open_fails(100 * RS, RS, -EBADMSG);
	b ^= 0x01;
	file_write(&b, 1, 39);

	/* Bad magic. */
	file_write("X", 1, 0);
	open_fails(100 * RS, RS, -EBADMSG);
	cr_assert(strstr(err, "magic") != NULL, "%s", err);
	file_write("J", 1, 0);

	/* Another version, with a valid checksum. */
	header_patch32(DIFFMAP_OFF_VERSION, 2, true);
	open_fails(100 * RS, RS, -EBADMSG);
	cr_assert(strstr(err, "version") != NULL, "%s", err);
	header_patch32(DIFFMAP_OFF_VERSION, 1, true);

	/* A region size that disagrees with nregions, checksum valid. */
	header_patch32(DIFFMAP_OFF_REGION_SIZE, 2 * RS, true);
	open_fails(100 * RS, RS, -EBADMSG);
	header_patch32(DIFFMAP_OFF_REGION_SIZE, RS, true);
	diffmap_close(dm_open(100 * RS, RS));

	/* The bits area cut short. */
	cr_assert(eq(int, truncate(path, DIFFMAP_HDR_SIZE + 100), 0));
	open_fails(100 * RS, RS, -EBADMSG);
	/* Too short for a header. */
	cr_assert(eq(int, truncate(path, 100), 0));
	open_fails(100 * RS, RS, -EBADMSG);
}

/* Sync rewrites only the dirty pages: a page damaged on disk behind the
 * map's back stays damaged when another page is synced. */
Test(diffmap, sync_writes_only_dirty_pages)
{
	const uint64_t vol = 3 * PAGE_REGIONS * RS;
	struct diffmap *m = dm_open(vol, RS);
	uint8_t junk[16];

	cr_assert(eq(u64, file_size(), DIFFMAP_HDR_SIZE + 3 * DIFFMAP_PAGE_SIZE));
	cr_assert(eq(int, diffmap_sync(m), 0));
	memset(junk, 0xff, sizeof(junk));
	file_write(junk, sizeof(junk), DIFFMAP_HDR_SIZE + 2 * DIFFMAP_PAGE_SIZE + 100);
	diffmap_mark(m, (PAGE_REGIONS + 5) * RS, 1); /* page 1 only */
	cr_assert(eq(int, diffmap_sync(m), 0));
	diffmap_close(m);

	m = dm_open(vol, RS);
	cr_assert(diffmap_test(m, PAGE_REGIONS + 5));
	cr_assert(eq(u64, diffmap_count(m), 1 + 16 * 8), "page 2 was not rewritten");
	cr_assert(eq(u64, diffmap_next_set(m, PAGE_REGIONS + 6), 2 * PAGE_REGIONS + 800));
	/* Now page 2 is dirtied and synced: its on-disk bytes follow memory. */
	diffmap_clear_regions(m, 2 * PAGE_REGIONS, PAGE_REGIONS);
	cr_assert(eq(int, diffmap_sync(m), 0));
	diffmap_close(m);
	m = dm_open(vol, RS);
	cr_assert(eq(u64, diffmap_count(m), 1));
	diffmap_close(m);
}

/* A 1 TiB volume in 64 KiB regions: 2^24 regions, 2 MiB of bits. */
Test(diffmap, one_tib_volume_is_two_mib)
{
	uint64_t t0 = util_mono_ns();
	struct diffmap *m = dm_open(1 * TiB, RS);

	cr_assert(eq(u64, diffmap_nregions(m), 16777216));
	cr_assert(eq(u64, file_size(), DIFFMAP_HDR_SIZE + 2 * MiB));
	cr_assert(eq(u64, diffmap_mark(m, 1 * TiB - 1, 1), 1));
	cr_assert(eq(u64, diffmap_next_set(m, 0), 16777215));
	cr_assert(eq(int, diffmap_sync(m), 0));
	diffmap_close(m);
	m = dm_open(1 * TiB, RS);
	cr_assert(eq(u64, diffmap_count(m), 1));
	diffmap_close(m);
	cr_assert(util_mono_ns() - t0 < 5000000000ull, "open took too long");
}
