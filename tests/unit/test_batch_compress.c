/*
 * batch_compress(): zstd only where it pays. Compressible batches come back
 * compressed and decompress to the input; random ones are sent raw, large
 * ones judged on a sample without compressing them whole; a run of misses
 * backs off, then trying resumes.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "leak_check.h"
#include "repl/batch_compress.h"

#define MAXLEN (4u << 20)

static uint8_t *buf, *back;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint8_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint8_t)rng;
}

static void
setup(void)
{
	buf = malloc(MAXLEN);
	back = malloc(MAXLEN);
	cr_assert(buf && back);
}

static void
teardown(void)
{
	free(buf);
	free(back);
	test_leak_check();
}

TestSuite(batch_compress, .init = setup, .fini = teardown, .timeout = 60);

static void
fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = rnd();
}

/* Text-like: a small alphabet, compresses well. */
static void
fill_text(uint8_t *p, size_t len)
{
	static const char words[] = "journal record batch volume sequence restore ";

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)words[(i * 7 + (size_t)(rnd() % 3)) % (sizeof(words) - 1)];
}

/* Half random, half zero in every 4 KiB: compresses about 2:1. */
static void
fill_half(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = i % 4096 < 2048 ? rnd() : 0;
}

static void
roundtrip(const void *z, size_t n, size_t len)
{
	size_t m = ZSTD_decompress(back, MAXLEN, z, n);

	cr_assert(eq(int, ZSTD_isError(m) ? 1 : 0, 0), "%s", ZSTD_getErrorName(m));
	cr_assert(eq(sz, m, len));
	cr_assert(eq(int, memcmp(back, buf, len), 0));
}

Test(batch_compress, compressible_batches_shrink_and_roundtrip)
{
	static const size_t lens[] = {4096, 100000, 256u << 10, 1u << 20, MAXLEN};
	struct batch_compressor *c = batch_compressor_new(-3, MAXLEN);
	struct batch_compress_stats st;

	cr_assert(c != NULL);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		const void *z;
		size_t n;

		fill_text(buf, lens[i]);
		n = batch_compress(c, buf, lens[i], &z);
		cr_assert(gt(sz, n, 0), "text of %zu bytes sent raw", lens[i]);
		cr_assert(lt(sz, n * 10, lens[i] * 9));
		roundtrip(z, n, lens[i]);

		fill_half(buf, lens[i]);
		n = batch_compress(c, buf, lens[i], &z);
		cr_assert(gt(sz, n, 0), "half-random %zu bytes sent raw", lens[i]);
		cr_assert(lt(sz, n, lens[i] * 6 / 10), "about 2:1");
		roundtrip(z, n, lens[i]);
	}
	batch_compress_get_stats(c, &st);
	cr_assert(eq(u64, st.batches, 10));
	cr_assert(eq(u64, st.compressed, 10));
	batch_compressor_free(c);
}

Test(batch_compress, random_data_is_sent_raw_judged_on_a_sample)
{
	struct batch_compressor *c = batch_compressor_new(1, MAXLEN);
	struct batch_compress_stats st;
	const void *z;

	cr_assert(c != NULL);
	fill_random(buf, MAXLEN);
	cr_assert(eq(sz, batch_compress(c, buf, 64u << 10, &z), 0));
	cr_assert(z == NULL);
	cr_assert(eq(sz, batch_compress(c, buf, MAXLEN, &z), 0));
	batch_compress_get_stats(c, &st);
	cr_assert(eq(u64, st.missed, 1), "the small batch was compressed whole");
	cr_assert(eq(u64, st.sampled_out, 1), "the large one only sampled");
	cr_assert(eq(u64, st.compressed, 0));
	batch_compressor_free(c);
}

/* A batch whose sample pays is compressed whole, even if other parts of it
 * are random; one whose sample does not is sent raw. */
Test(batch_compress, the_sample_spans_the_batch)
{
	struct batch_compressor *c = batch_compressor_new(-3, MAXLEN);
	struct batch_compress_stats st;
	const void *z;
	size_t n;

	cr_assert(c != NULL);
	/* random first MiB, text after it: a sample of the start alone would
	 * send it raw */
	fill_random(buf, 1u << 20);
	fill_text(buf + (1u << 20), MAXLEN - (1u << 20));
	n = batch_compress(c, buf, MAXLEN, &z);
	cr_assert(gt(sz, n, 0));
	roundtrip(z, n, MAXLEN);
	batch_compress_get_stats(c, &st);
	cr_assert(eq(u64, st.compressed, 1));
	batch_compressor_free(c);
}

Test(batch_compress, backs_off_after_misses_then_tries_again)
{
	struct batch_compressor *c = batch_compressor_new(-3, MAXLEN);
	struct batch_compress_stats st;
	const void *z;
	unsigned i;

	cr_assert(c != NULL);
	fill_random(buf, 1u << 20);
	for (i = 0; i < 4; i++)
		cr_assert(eq(sz, batch_compress(c, buf, 1u << 20, &z), 0));
	/* now compressible, but the next 32 are not even tried */
	fill_text(buf, 1u << 20);
	for (i = 0; i < 32; i++)
		cr_assert(eq(sz, batch_compress(c, buf, 1u << 20, &z), 0), "batch %u tried", i);
	batch_compress_get_stats(c, &st);
	cr_assert(eq(u64, st.skipped, 32));
	cr_assert(gt(sz, batch_compress(c, buf, 1u << 20, &z), 0), "trying resumed");
	/* a hit resets the run of misses */
	fill_random(buf, 1u << 20);
	for (i = 0; i < 3; i++)
		cr_assert(eq(sz, batch_compress(c, buf, 1u << 20, &z), 0));
	fill_text(buf, 1u << 20);
	cr_assert(gt(sz, batch_compress(c, buf, 1u << 20, &z), 0), "3 misses: still trying");
	batch_compressor_free(c);
}

Test(batch_compress, edges)
{
	struct batch_compressor *c = batch_compressor_new(-3, 1u << 20);
	const void *z = buf;

	cr_assert(c != NULL);
	cr_assert(eq(sz, batch_compress(c, buf, 0, &z), 0), "empty");
	cr_assert(z == NULL);
	fill_text(buf, 2u << 20);
	cr_assert(eq(sz, batch_compress(c, buf, 2u << 20, &z), 0), "larger than announced: raw");
	batch_compressor_free(c);
	batch_compressor_free(NULL);
}
