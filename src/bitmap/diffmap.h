/*
 * The difference bitmap: one bit per region of a data volume, set when the
 * region may differ between the two sites of a pair. Kept in memory (exactly
 * one bit per region, plus one dirty bit per 4096-byte page of bits) and
 * persisted in a file so that a daemon restart keeps it. A set bit is only
 * ever "may differ": a bit set that need not be costs a region copy, a bit
 * missing loses data, so every doubt resolves to setting bits.
 *
 * File format. All integers are little-endian.
 *
 *   offset 0       header (4096 bytes)
 *   offset 4096    the bits, DIFFMAP_PAGE_SIZE-byte pages, as many as
 *                  ceil(nregions / 8) bytes need (the rest of the last page
 *                  is zero)
 *
 * Header:
 *
 *   off  size  field
 *   0    8     magic          "JRBDDMAP"
 *   8    4     version        DIFFMAP_VERSION
 *   12   4     region_size    bytes per region, a power of two, 4 KiB..1 GiB
 *   16   8     vol_size       bytes of the volume tracked
 *   24   8     nregions       ceil(vol_size / region_size)
 *   32   8     hdr_csum       xxh3_64 (seed 0) of bytes 0..31
 *   40   ...   zero
 *
 * Bits: region r is bit r % 8 of byte r / 8 of the bits (LSB-first), the
 * same layout diffmap_get_bits() and diffmap_merge() use. Bits past
 * nregions are zero (read as zero whatever the file says).
 *
 * The header is valid when magic, hdr_csum and version match, region_size
 * is a valid size, nregions agrees with vol_size, and the file holds the
 * whole bits area. Anything else is -EBADMSG: the map cannot be trusted and
 * the owner must decide (typically: discard it and resync everything).
 *
 * There is no checksum over the bits, on purpose. A bit matters only until
 * the journal records that set it are released, and the owner syncs the map
 * (diffmap_sync) before releasing them; so a page torn by a crash during
 * sync can only lose bits whose records are still in the journal, and redo
 * of those records sets them again. A checksum would turn such a page into
 * a lost map instead.
 *
 * Writes: marking and clearing change memory only and make the pages they
 * touch dirty; diffmap_sync() pwrites the dirty pages (adjacent ones
 * coalesced, buffered I/O) and fdatasyncs. A page is 4096 bytes, so on
 * storage with 4 KiB atomic writes a page is never torn.
 *
 * A new file is built under "<path>.tmp", fsynced and renamed into place,
 * then the directory is fsynced: after a crash, the file either does not
 * exist or is complete. Growing the volume extends the file (new regions
 * clear), makes the size durable, and then rewrites the header.
 *
 * Not here: what sets and clears bits (the pair's write path and resync),
 * the wire format that carries bitmap chunks to the peer, locking.
 *
 * Threading: a diffmap belongs to one thread; no locks.
 */
#ifndef JRBD_DIFFMAP_H
#define JRBD_DIFFMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIFFMAP_MAGIC "JRBDDMAP" /* 8 bytes, no NUL on disk */
#define DIFFMAP_VERSION 1u
#define DIFFMAP_HDR_SIZE 4096u
#define DIFFMAP_PAGE_SIZE 4096u /* unit of dirty tracking and of writes */
#define DIFFMAP_MIN_REGION (4u << 10)
#define DIFFMAP_MAX_REGION (1u << 30)
#define DIFFMAP_DEFAULT_REGION (64u << 10)

/* Header field offsets (see above). */
#define DIFFMAP_OFF_MAGIC 0
#define DIFFMAP_OFF_VERSION 8
#define DIFFMAP_OFF_REGION_SIZE 12
#define DIFFMAP_OFF_VOL_SIZE 16
#define DIFFMAP_OFF_NREGIONS 24
#define DIFFMAP_OFF_CSUM 32

struct diffmap;

/* Opens PATH, or creates it (all clear) when it does not exist, for a volume of
 * vol_size bytes (> 0) tracked in region_size-byte regions (a power of two,
 * 4 KiB..1 GiB). An existing file must have the same region size (else -EINVAL
 * with a message naming both sizes); when vol_size grew, the map grows (new
 * regions clear) and the header is rewritten; when it shrank, -EINVAL. A
 * damaged header (bad magic, checksum, version, inconsistent fields, file too
 * short) is -EBADMSG. Other failures: -ENOMEM, -EFBIG (the map would not fit
 * in memory), or the -errno of the failing call. On failure, err (errlen bytes,
 * may be NULL) holds a message naming the file; *ret is untouched. Blocks (file
 * I/O, fsync). */
int diffmap_open(const char *path, uint64_t vol_size, uint32_t region_size, struct diffmap **ret,
                 char *err, size_t errlen);
/* NULL ok. Does not sync: changes since the last diffmap_sync() are lost. */
void diffmap_close(struct diffmap *m);

uint32_t diffmap_region_size(const struct diffmap *m);
uint64_t diffmap_nregions(const struct diffmap *m);
uint64_t diffmap_vol_size(const struct diffmap *m);

/* Marks every region overlapping [off, off+len) (len 0: nothing; clamped to the
 * volume). Returns how many bits went 0->1. Memory only: the pages become dirty. */
uint64_t diffmap_mark(struct diffmap *m, uint64_t off, uint64_t len);
/* Clears regions [first, first+n) (clamped to nregions). Memory only. */
void diffmap_clear_regions(struct diffmap *m, uint64_t first, uint64_t n);
void diffmap_clear_all(struct diffmap *m);
/* False past the end. */
bool diffmap_test(const struct diffmap *m, uint64_t region);
/* Set bits, kept incrementally (O(1)). */
uint64_t diffmap_count(const struct diffmap *m);
/* Bytes covered by set bits; the last region counts only up to vol_size. */
uint64_t diffmap_dirty_bytes(const struct diffmap *m);
/* First set region >= from, or UINT64_MAX. Skips whole zero 64-bit words. */
uint64_t diffmap_next_set(const struct diffmap *m, uint64_t from);
/* Copies nbits bits starting at region first into out (LSB-first: bit i of the
 * range is out[i/8] >> (i%8) & 1); bits past the end read as 0. out holds
 * (nbits+7)/8 bytes; the unused high bits of its last byte are zeroed. */
void diffmap_get_bits(const struct diffmap *m, uint64_t first, uint64_t nbits, uint8_t *out);
/* Merges a peer's bitmap chunk: bits (same LSB-first layout, (nbits+7)/8 bytes)
 * describing regions of peer_region_size bytes (power of two, 4 KiB..1 GiB),
 * starting at peer region `first`. Every set bit marks its byte range here (so
 * region sizes may differ). Returns bits set 0->1 here, or -EINVAL for a bad
 * peer_region_size. Ranges past the volume end are clamped (not an error).
 * Memory only. */
int64_t diffmap_merge(struct diffmap *m, uint32_t peer_region_size, uint64_t first,
                      const uint8_t *bits, uint64_t nbits);

/* True when some page changed since the last successful sync. */
bool diffmap_needs_sync(const struct diffmap *m);
/* Writes every dirty page (pwrite, adjacent pages coalesced) and fdatasyncs the
 * file; 0 or -errno. Pages stay dirty on failure, so a later call writes them
 * again (not only fsyncs: after a failed fsync the kernel may have dropped the
 * dirty page cache, so the rewrite is what makes a retry mean something). The
 * owner should still treat a failure as a storage failure. Blocks. */
int diffmap_sync(struct diffmap *m);

#endif
