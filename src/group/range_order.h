/*
 * Write ordering on one volume: overlapping writes reach the volume in the
 * order of their sequence numbers, so the data volume never disagrees with the
 * journal (and a secondary restoring the journal in order never diverges).
 * Non-overlapping writes proceed in parallel.
 *
 * Entries are added in seq order and removed when their volume write
 * completes. An entry may start once no earlier entry overlaps it.
 * O(n) per check with n in-flight writes; n is bounded by the NBD queue limits.
 */
#ifndef JRBD_RANGE_ORDER_H
#define JRBD_RANGE_ORDER_H

#include <stdbool.h>
#include <stdint.h>

struct range_entry {
	uint64_t seq;
	uint64_t offset, len; /* bytes */
	bool ready;           /* its journal record is durable */
	bool started;         /* its volume write is in flight */
	struct range_entry *prev, *next;
};

struct range_order {
	struct range_entry *head, *tail;
	unsigned count;
};

void range_order_init(struct range_order *ro);
/* Appends e; e->seq must be greater than every entry's seq. */
void range_order_add(struct range_order *ro, struct range_entry *e);
void range_order_remove(struct range_order *ro, struct range_entry *e);
/* True when no entry before e overlaps it. */
bool range_order_can_start(const struct range_order *ro, const struct range_entry *e);
/* Next entry after `after` (NULL: from the head) that is ready, not started and
 * may start; NULL when none. */
struct range_entry *range_order_next_startable(const struct range_order *ro,
					       const struct range_entry *after);
/* Smallest seq of any entry, or UINT64_MAX when empty. */
uint64_t range_order_min_seq(const struct range_order *ro);

#endif
