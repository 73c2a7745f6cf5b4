/*
 * The reorder buffer: records leave in seq order whatever order batches
 * arrive in; gaps wait; duplicates and overlaps are recognised.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "repl/reorder.h"

static struct reorder_batch *
batch(uint64_t first, uint64_t last)
{
	struct reorder_batch *b = calloc(1, sizeof(*b));

	cr_assert(b);
	b->first = first;
	b->last = last;
	b->bytes = (size_t)(last - first + 1) * 100;
	return b;
}

static void
free_batch(struct reorder_batch *b)
{
	free(b);
}

/* Delivers everything poppable; returns the number of records delivered and
 * checks they are consecutive from *expect. */
static uint64_t
drain(struct reorder *r, uint64_t *expect)
{
	struct reorder_batch *b;
	uint64_t n = 0;

	while ((b = reorder_pop(r))) {
		for (uint64_t s = b->first + b->skip; s <= b->last; s++) {
			cr_assert_eq(s, *expect);
			(*expect)++;
			n++;
		}
		reorder_advance(r, b->last);
		free(b);
	}
	return n;
}

Test(reorder, in_order)
{
	struct reorder r;
	uint64_t expect = 10;

	reorder_init(&r, 10);
	cr_assert_eq(reorder_insert(&r, batch(10, 19)), REORDER_QUEUED);
	cr_assert_eq(drain(&r, &expect), 10);
	cr_assert_eq(r.next, 20);
	cr_assert_eq(r.npending, 0);
	cr_assert_eq(r.pending_bytes, 0);
}

Test(reorder, gap_waits_then_fills)
{
	struct reorder r;
	uint64_t expect = 1;

	reorder_init(&r, 1);
	cr_assert_eq(reorder_insert(&r, batch(11, 20)), REORDER_QUEUED);
	cr_assert_eq(reorder_insert(&r, batch(21, 25)), REORDER_QUEUED);
	cr_assert_eq(drain(&r, &expect), 0, "a gap at 1..10 must hold everything");
	cr_assert_eq(r.npending, 2);
	cr_assert_eq(r.pending_bytes, 1500);
	cr_assert_eq(reorder_insert(&r, batch(1, 10)), REORDER_QUEUED);
	cr_assert_eq(drain(&r, &expect), 25);
	cr_assert_eq(expect, 26);
}

Test(reorder, random_arrival_order)
{
	enum { N = 200 };
	struct reorder_batch *bs[N];
	struct reorder r;
	uint64_t expect = 1000, seq = 1000, total = 0, delivered = 0;

	srand(42);
	for (int i = 0; i < N; i++) {
		uint64_t len = 1 + (uint64_t)(rand() % 7);

		bs[i] = batch(seq, seq + len - 1);
		seq += len;
		total += len;
	}
	for (int i = N - 1; i > 0; i--) {
		int k = rand() % (i + 1);
		struct reorder_batch *t = bs[i];

		bs[i] = bs[k];
		bs[k] = t;
	}
	reorder_init(&r, 1000);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(reorder_insert(&r, bs[i]), REORDER_QUEUED);
		delivered += drain(&r, &expect);
	}
	cr_assert_eq(delivered, total);
	cr_assert_eq(r.npending, 0);
}

Test(reorder, duplicate_and_partial_resend)
{
	struct reorder r;
	struct reorder_batch *b, *dup = batch(1, 5);
	uint64_t expect = 1;

	reorder_init(&r, 1);
	cr_assert_eq(reorder_insert(&r, batch(1, 10)), REORDER_QUEUED);
	drain(&r, &expect);
	cr_assert_eq(reorder_insert(&r, dup), REORDER_DUPLICATE);
	free(dup);
	/* A resend that starts before next but goes further: the old part is skipped. */
	cr_assert_eq(reorder_insert(&r, batch(8, 14)), REORDER_QUEUED);
	b = reorder_pop(&r);
	cr_assert(b);
	cr_assert_eq(b->skip, 3);
	reorder_advance(&r, b->last);
	free(b);
	cr_assert_eq(r.next, 15);
}

Test(reorder, overlap_is_protocol_error)
{
	struct reorder r;
	struct reorder_batch *a = batch(20, 30), *b = batch(25, 35), *c = batch(10, 20),
			     *d = batch(31, 31), *bad = batch(5, 4);

	reorder_init(&r, 1);
	cr_assert_eq(reorder_insert(&r, a), REORDER_QUEUED);
	cr_assert_eq(reorder_insert(&r, b), -EPROTO);
	cr_assert_eq(reorder_insert(&r, c), -EPROTO);
	cr_assert_eq(reorder_insert(&r, d), REORDER_QUEUED);
	cr_assert_eq(reorder_insert(&r, bad), -EPROTO);
	free(b);
	free(c);
	free(bad);
	reorder_reset(&r, free_batch);
	cr_assert_eq(r.npending, 0);
	cr_assert_eq(r.pending, NULL);
}
