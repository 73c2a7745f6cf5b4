/*
 * Link compression policy for the primary's record batches: zstd where it
 * pays. "Pays" means the batch shrinks by at least a tenth; anything less
 * is sent raw, because the CPU zstd burns on data that barely shrinks
 * (already compressed or encrypted by the host) is taken from the loop that
 * also serves host writes.
 *
 * Two things keep that CPU small on such data:
 *  - a large batch is first judged on a sample (a few slices spread over
 *    it); only a sample that shrinks by a tenth gets the whole batch
 *    compressed;
 *  - after a run of batches that did not pay, the next ones are sent raw
 *    without trying, then trying resumes.
 *
 * Pure CPU work over caller memory, no I/O: unit-tested on its own.
 */
#ifndef JRBD_BATCH_COMPRESS_H
#define JRBD_BATCH_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

struct batch_compressor;

struct batch_compress_stats {
	uint64_t batches;    /* offered */
	uint64_t compressed; /* sent compressed */
	uint64_t sampled_out; /* judged incompressible on a sample */
	uint64_t missed;     /* compressed whole, but not by a tenth */
	uint64_t skipped;    /* not tried (backing off after misses) */
};

/* level: a zstd level (negative: zstd's fast modes); max_len: the largest
 * batch that will be offered. NULL on allocation failure. */
struct batch_compressor *batch_compressor_new(int level, size_t max_len);
void batch_compressor_free(struct batch_compressor *c);

/* The compressed size of src[0..len), with *out pointing at it inside c
 * (valid until the next call), or 0: send the batch raw. */
size_t batch_compress(struct batch_compressor *c, const void *src, size_t len,
                      const void **out);

void batch_compress_get_stats(const struct batch_compressor *c,
                              struct batch_compress_stats *st);

#endif
