#include "group/range_order.h"

#include <stddef.h>

#include "common/checked.h"

void
range_order_init(struct range_order *ro)
{
	ro->head = ro->tail = NULL;
	ro->count = 0;
}

void
range_order_add(struct range_order *ro, struct range_entry *e)
{
	e->next = NULL;
	e->prev = ro->tail;
	if (ro->tail)
		ro->tail->next = e;
	else
		ro->head = e;
	ro->tail = e;
	ro->count++;
}

void
range_order_remove(struct range_order *ro, struct range_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		ro->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		ro->tail = e->prev;
	e->prev = e->next = NULL;
	ro->count--;
}

bool
range_order_can_start(const struct range_order *ro, const struct range_entry *e)
{
	(void)ro;
	for (const struct range_entry *p = e->prev; p; p = p->prev) {
		if (ranges_overlap(p->offset, p->len, e->offset, e->len))
			return false;
	}
	return true;
}

struct range_entry *
range_order_next_startable(const struct range_order *ro, const struct range_entry *after)
{
	for (struct range_entry *e = after ? after->next : ro->head; e; e = e->next) {
		if (e->ready && !e->started && range_order_can_start(ro, e))
			return e;
	}
	return NULL;
}

uint64_t
range_order_min_seq(const struct range_order *ro)
{
	return ro->head ? ro->head->seq : UINT64_MAX;
}
