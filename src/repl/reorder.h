/*
 * Reassembly of the primary's record stream at the secondary.
 *
 * Several read-journal replies are in flight, so batches may arrive out of
 * order. Each batch carries consecutive seqs [first, last]; the reorder
 * buffer holds them until the one starting at the next expected seq is
 * there, so records leave it strictly in seq order and a gap waits for its
 * batch. A batch wholly before next (a resend after a reconnect) is a
 * duplicate; one that starts before next but reaches past it is handed out
 * with `skip` records to drop. Overlapping pending batches mean the peer
 * broke the protocol. Pure bookkeeping, no I/O.
 */
#ifndef JRBD_REORDER_H
#define JRBD_REORDER_H

#include <stddef.h>
#include <stdint.h>

struct reorder_batch {
	uint64_t first, last; /* seqs */
	uint64_t skip;        /* set by reorder_pop: leading records already delivered */
	size_t bytes;         /* accounted while pending */
	void *data;           /* the caller's */
	struct reorder_batch *next;
};

struct reorder {
	uint64_t next;                 /* seq the next delivered record must have */
	struct reorder_batch *pending; /* sorted by first, disjoint */
	size_t pending_bytes;
	unsigned npending;
};

enum reorder_result {
	REORDER_QUEUED = 0,
	REORDER_DUPLICATE = 1, /* wholly before next: the caller frees it */
};

void reorder_init(struct reorder *r, uint64_t next);
/* REORDER_QUEUED, REORDER_DUPLICATE, or -EPROTO (last < first, or overlaps a
 * pending batch: the caller frees it and drops the link). */
int reorder_insert(struct reorder *r, struct reorder_batch *b);
/* The batch holding seq `next`, removed (b->skip set), or NULL while there is a
 * gap. The caller delivers its records skip.. and then calls reorder_advance. */
struct reorder_batch *reorder_pop(struct reorder *r);
void reorder_advance(struct reorder *r, uint64_t delivered_last);
/* Drops every pending batch (a new connection resends from next); calls
 * free_fn on each. */
void reorder_reset(struct reorder *r, void (*free_fn)(struct reorder_batch *b));

#endif
