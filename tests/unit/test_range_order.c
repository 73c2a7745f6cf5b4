#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>

#include "group/range_order.h"
#include "leak_check.h"

TestSuite(range_order, .fini = test_leak_check);

static void
entry(struct range_entry *e, uint64_t seq, uint64_t off, uint64_t len)
{
	*e = (struct range_entry){.seq = seq, .offset = off, .len = len, .ready = true};
}

Test(range_order, overlapping_later_write_waits_for_earlier)
{
	struct range_order ro;
	struct range_entry a, b, c;

	range_order_init(&ro);
	entry(&a, 1, 0, 4096);
	entry(&b, 2, 8192, 4096);
	entry(&c, 3, 2048, 4096); /* overlaps a */
	range_order_add(&ro, &a);
	range_order_add(&ro, &b);
	range_order_add(&ro, &c);
	cr_assert(range_order_can_start(&ro, &a));
	cr_assert(range_order_can_start(&ro, &b));
	cr_assert_not(range_order_can_start(&ro, &c));
	range_order_remove(&ro, &a);
	cr_assert(range_order_can_start(&ro, &c));
	cr_assert(eq(u64, range_order_min_seq(&ro), 2));
}

Test(range_order, next_startable_skips_started_and_unready)
{
	struct range_order ro;
	struct range_entry a, b, c;

	range_order_init(&ro);
	entry(&a, 1, 0, 512);
	entry(&b, 2, 512, 512);
	entry(&c, 3, 1024, 512);
	b.ready = false;
	range_order_add(&ro, &a);
	range_order_add(&ro, &b);
	range_order_add(&ro, &c);
	a.started = true;
	cr_assert(eq(ptr, range_order_next_startable(&ro, NULL), &c));
	cr_assert(eq(ptr, range_order_next_startable(&ro, &c), NULL));
	b.ready = true;
	cr_assert(eq(ptr, range_order_next_startable(&ro, NULL), &b));
}

Test(range_order, adjacent_ranges_do_not_conflict)
{
	struct range_order ro;
	struct range_entry a, b;

	range_order_init(&ro);
	entry(&a, 1, 0, 4096);
	entry(&b, 2, 4096, 4096);
	range_order_add(&ro, &a);
	range_order_add(&ro, &b);
	cr_assert(range_order_can_start(&ro, &b));
}

/* Model check: random overlapping writes applied in the order the tracker
 * allows always leave the same bytes as applying them in seq order. */
Test(range_order, random_schedule_matches_sequential_result)
{
	enum { N = 64, SPACE = 64 };

	srand(12345);
	for (int round = 0; round < 200; round++) {
		struct range_order ro;
		struct range_entry e[N];
		unsigned char seq_img[SPACE] = {0}, sched_img[SPACE] = {0};
		bool done[N] = {false};
		int left = N;

		range_order_init(&ro);
		for (int i = 0; i < N; i++) {
			uint64_t off = (uint64_t)(rand() % SPACE);
			uint64_t len = 1 + (uint64_t)(rand() % (int)(SPACE - off));

			entry(&e[i], (uint64_t)i + 1, off, len);
			range_order_add(&ro, &e[i]);
			for (uint64_t k = off; k < off + len; k++)
				seq_img[k] = (unsigned char)(i + 1);
		}
		while (left) {
			/* Pick any startable entry at random and complete it. */
			int cand[N], n = 0;

			for (int i = 0; i < N; i++)
				if (!done[i] && range_order_can_start(&ro, &e[i]))
					cand[n++] = i;
			cr_assert(gt(int, n, 0));
			int i = cand[rand() % n];

			for (uint64_t k = e[i].offset; k < e[i].offset + e[i].len; k++)
				sched_img[k] = (unsigned char)(i + 1);
			range_order_remove(&ro, &e[i]);
			done[i] = true;
			left--;
		}
		cr_assert(eq(int, memcmp(seq_img, sched_img, SPACE), 0));
		cr_assert(eq(u32, ro.count, 0));
	}
}
