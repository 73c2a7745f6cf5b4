/*
 * The journal's read cache: the most recent batches, as written, in memory,
 * so the replication sender reads records it is about to ship from memory
 * instead of from the device (contract in journal_internal.h).
 *
 * A secondary that keeps up asks for records written a few milliseconds ago.
 * Reading them back with O_DIRECT costs a device read per batch (on the disk
 * the host writes are waiting for) and a payload checksum check per record;
 * a copy of each batch made when it is submitted costs one memcpy.
 *
 * Layout: batches are copied back to back into one buffer of `cap` bytes, at
 * virtual positions v (monotonic, never straddling the buffer's end: a batch
 * that would is placed at the next multiple of cap), stored at v % cap. The
 * bytes at v are intact while v >= (end of the newest batch) - cap, so the
 * oldest descriptors are dropped as new batches overwrite them. Descriptors
 * sit in a FIFO ordered by lpos (batches are submitted in lpos order), found
 * by binary search.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "journal/journal_internal.h"

/* One descriptor per this many cache bytes: a burst of batches smaller than
 * that (lone 512-byte writes) drops the oldest early, which costs reads
 * from the device, never correctness. */
#define CACHE_BYTES_PER_DESC 4096u

int
journal_cache_init(struct journal_cache *c, size_t cap)
{
	memset(c, 0, sizeof(*c));
	if (cap < 2 * JOURNAL_BATCH_CAP)
		return -EINVAL;
	c->buf = malloc(cap);
	c->ndesc_cap = cap / CACHE_BYTES_PER_DESC;
	c->desc = calloc(c->ndesc_cap, sizeof(*c->desc));
	if (!c->buf || !c->desc) {
		journal_cache_fini(c);
		return -ENOMEM;
	}
	c->cap = cap;
	return 0;
}

void
journal_cache_fini(struct journal_cache *c)
{
	free(c->buf);
	free(c->desc);
	memset(c, 0, sizeof(*c));
}

static struct journal_cache_desc *
desc_at(const struct journal_cache *c, size_t i)
{
	return &c->desc[(c->dhead + i) % c->ndesc_cap];
}

void
journal_cache_put(struct journal_cache *c, uint64_t lpos, const void *data, uint32_t len)
{
	uint64_t v = c->vend, end;

	if (!c->buf || len == 0)
		return;
	if (len > c->cap) {
		c->ndesc = 0; /* can't happen: a batch is at most JOURNAL_BATCH_CAP */
		return;
	}
	if (v % c->cap + len > c->cap)
		v += c->cap - v % c->cap;
	end = v + len;
	/* Drop what the new bytes overwrite, and make room for one descriptor. */
	while (c->ndesc && (desc_at(c, 0)->v + c->cap < end || c->ndesc == c->ndesc_cap)) {
		c->dhead = (c->dhead + 1) % c->ndesc_cap;
		c->ndesc--;
	}
	/* lpos only grows; a journal reopened or reformatted starts a new cache. */
	if (c->ndesc && lpos < desc_at(c, c->ndesc - 1)->lpos + desc_at(c, c->ndesc - 1)->len)
		c->ndesc = 0;
	memcpy(c->buf + v % c->cap, data, len);
	*desc_at(c, c->ndesc) = (struct journal_cache_desc){.lpos = lpos, .v = v, .len = len};
	c->ndesc++;
	c->vend = end;
}

const uint8_t *
journal_cache_get(const struct journal_cache *c, uint64_t lpos, uint32_t len)
{
	size_t lo = 0, hi = c->ndesc;
	const struct journal_cache_desc *d;

	/* The last descriptor with d->lpos <= lpos. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (desc_at(c, mid)->lpos <= lpos)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	d = desc_at(c, lo - 1);
	if (lpos + len > d->lpos + d->len)
		return NULL;
	return c->buf + d->v % c->cap + (lpos - d->lpos);
}
