/*
 * Reassembly of the record stream in seq order (see reorder.h). A sorted
 * singly linked list: the number of pending batches is bounded by the
 * read-journal requests in flight, a handful.
 */
#include "repl/reorder.h"

#include <errno.h>

void
reorder_init(struct reorder *r, uint64_t next)
{
	r->next = next;
	r->pending = NULL;
	r->pending_bytes = 0;
	r->npending = 0;
}

int
reorder_insert(struct reorder *r, struct reorder_batch *b)
{
	struct reorder_batch *prev = NULL, *cur = r->pending;

	if (b->last < b->first)
		return -EPROTO;
	if (b->last < r->next)
		return REORDER_DUPLICATE;
	while (cur && cur->first < b->first) {
		prev = cur;
		cur = cur->next;
	}
	/* Disjoint from its neighbours, or the peer sent a seq twice. */
	if ((cur && cur->first <= b->last) || (prev && prev->last >= b->first))
		return -EPROTO;
	b->next = cur;
	if (prev)
		prev->next = b;
	else
		r->pending = b;
	r->pending_bytes += b->bytes;
	r->npending++;
	return REORDER_QUEUED;
}

struct reorder_batch *
reorder_pop(struct reorder *r)
{
	struct reorder_batch *b = r->pending;

	if (!b || b->first > r->next)
		return NULL;
	r->pending = b->next;
	b->next = NULL;
	r->pending_bytes -= b->bytes;
	r->npending--;
	b->skip = r->next - b->first;
	return b;
}

void
reorder_advance(struct reorder *r, uint64_t delivered_last)
{
	if (delivered_last + 1 > r->next)
		r->next = delivered_last + 1;
}

void
reorder_reset(struct reorder *r, void (*free_fn)(struct reorder_batch *b))
{
	struct reorder_batch *b;

	while ((b = r->pending)) {
		r->pending = b->next;
		free_fn(b);
	}
	r->pending_bytes = 0;
	r->npending = 0;
}
