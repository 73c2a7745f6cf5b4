/*
 * zstd where it pays, judged cheaply (see batch_compress.h).
 */
#include "repl/batch_compress.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Batches smaller than this are compressed whole to judge them. */
#define SAMPLE_MIN_BATCH (256u << 10)
/* A sample is SAMPLE_SLICES slices of SAMPLE_SLICE bytes spread evenly over
 * the batch: 4% of a 1 MiB batch, under 1% of a 16 MiB one. Slices, not one
 * block at the start, so a batch mixing text and random data is not judged
 * by its first record alone. */
#define SAMPLE_SLICE (8u << 10)
#define SAMPLE_SLICES 5u
/* Misses in a row before backing off, and batches then sent raw untried. */
#define MISSES_BEFORE_SKIP 4u
#define SKIP_BATCHES 32u

struct batch_compressor {
	ZSTD_CCtx *cctx;
	int level;
	uint8_t *out;
	size_t out_cap;
	unsigned misses, skip;
	struct batch_compress_stats st;
};

struct batch_compressor *
batch_compressor_new(int level, size_t max_len)
{
	struct batch_compressor *c = calloc(1, sizeof(*c));
	size_t sample_bound = ZSTD_compressBound(SAMPLE_SLICE);

	if (!c)
		return NULL;
	c->level = level;
	c->cctx = ZSTD_createCCtx();
	c->out_cap = ZSTD_compressBound(max_len);
	if (c->out_cap < sample_bound)
		c->out_cap = sample_bound;
	c->out = malloc(c->out_cap);
	if (!c->cctx || !c->out ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level))) {
		batch_compressor_free(c);
		return NULL;
	}
	return c;
}

void
batch_compressor_free(struct batch_compressor *c)
{
	if (!c)
		return;
	ZSTD_freeCCtx(c->cctx);
	free(c->out);
	free(c);
}

/* compressed < 9/10 of raw */
static bool
pays(size_t compressed, size_t raw)
{
	return compressed * 10 < raw * 9; /* both <= a few MiB: no overflow */
}

/* Whether the sample of a large batch shrinks by a tenth. */
static bool
sample_pays(struct batch_compressor *c, const uint8_t *src, size_t len)
{
	size_t in = 0, outb = 0;
	size_t stride = (len - SAMPLE_SLICE) / (SAMPLE_SLICES - 1);

	for (unsigned k = 0; k < SAMPLE_SLICES; k++) {
		size_t n = ZSTD_compress2(c->cctx, c->out, c->out_cap, src + k * stride, SAMPLE_SLICE);

		if (ZSTD_isError(n))
			return false;
		in += SAMPLE_SLICE;
		outb += n;
	}
	return pays(outb, in);
}

size_t
batch_compress(struct batch_compressor *c, const void *src, size_t len, const void **out)
{
	size_t n;

	c->st.batches++;
	*out = NULL;
	if (len == 0 || ZSTD_compressBound(len) > c->out_cap)
		return 0;
	if (c->skip) {
		c->skip--;
		c->st.skipped++;
		return 0;
	}
	if (len >= SAMPLE_MIN_BATCH && !sample_pays(c, src, len)) {
		c->st.sampled_out++;
		goto miss;
	}
	n = ZSTD_compress2(c->cctx, c->out, c->out_cap, src, len);
	if (ZSTD_isError(n) || !pays(n, len)) {
		c->st.missed++;
		goto miss;
	}
	c->misses = 0;
	c->st.compressed++;
	*out = c->out;
	return n;
miss:
	if (++c->misses >= MISSES_BEFORE_SKIP) {
		c->misses = 0;
		c->skip = SKIP_BATCHES;
	}
	return 0;
}

void
batch_compress_get_stats(const struct batch_compressor *c, struct batch_compress_stats *st)
{
	*st = c->st;
}
