/*
 * The journal's read cache: the most recent batches, as written, in memory,
 * so the replication sender reads records it is about to ship from memory
 * instead of from the device (contract in journal_internal.h).
 *
 * A secondary that keeps up asks for records written a few milliseconds ago.
 * Reading them back with O_DIRECT costs a device read per batch (on the disk
 * the host writes are waiting for) and a payload checksum check per record.
 * Batches are packed in the cache itself and written to the device from
 * there, so keeping them costs no copy (at 1 MiB writes a copy at submit was
 * 6% of the primary's CPU).
 *
 * Layout: one buffer of `cap` bytes. Each batch gets a region of a whole
 * batch at a virtual position v (monotonic, 4096-aligned, never straddling
 * the buffer's end: a region that would is placed at the next multiple of
 * cap), stored at v % cap; once the batch stops growing, the next region
 * starts after its bytes. Bytes at v are intact while v + cap >= the end of
 * the newest region, so the oldest descriptors are dropped as new regions
 * are reserved over them. Descriptors sit in a FIFO ordered by lpos
 * (batches are submitted in lpos order, and in the order they opened),
 * found by binary search.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/compiler.h"
#include "common/util.h"
#include "journal/journal_internal.h"

/* One descriptor per this many cache bytes: regions are 4096-aligned, so
 * the FIFO never runs out before the bytes do. */
#define CACHE_BYTES_PER_DESC 4096u

int
journal_cache_init(struct journal_cache *c, size_t cap)
{
	memset(c, 0, sizeof(*c));
	cap = ALIGN_DOWN(cap, (size_t)4096);
	if (cap < JOURNAL_READ_CACHE_MIN)
		return -EINVAL;
	c->buf = util_aligned_alloc(4096, cap);
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

static void
desc_drop_oldest(struct journal_cache *c)
{
	c->dhead = (c->dhead + 1) % c->ndesc_cap;
	c->ndesc--;
}

uint8_t *
journal_cache_reserve(struct journal_cache *c, uint64_t *ret_v)
{
	uint64_t v = ALIGN_UP(c->vend, (uint64_t)4096), end;

	if (v % c->cap + JOURNAL_BATCH_CAP > c->cap)
		v += c->cap - v % c->cap;
	end = v + JOURNAL_BATCH_CAP;
	while (c->ndesc && desc_at(c, 0)->v + c->cap < end)
		desc_drop_oldest(c);
	c->vend = v; /* until it stops growing */
	c->vres_end = end;
	*ret_v = v;
	return c->buf + v % c->cap;
}

void
journal_cache_fill_end(struct journal_cache *c, uint64_t v, uint32_t len)
{
	c->vend = v + len;
}

bool
journal_cache_holds(const struct journal_cache *c, uint64_t v)
{
	return v + c->cap >= c->vres_end;
}

void
journal_cache_add(struct journal_cache *c, uint64_t lpos, uint64_t v, uint32_t len)
{
	if (len == 0)
		return;
	/* lpos only grows; a journal reopened or reformatted starts a new cache. */
	if (c->ndesc && lpos < desc_at(c, c->ndesc - 1)->lpos + desc_at(c, c->ndesc - 1)->len)
		c->ndesc = 0;
	if (c->ndesc == c->ndesc_cap)
		desc_drop_oldest(c);
	*desc_at(c, c->ndesc) = (struct journal_cache_desc){.lpos = lpos, .v = v, .len = len};
	c->ndesc++;
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
