/* Overflow-checked arithmetic for offsets and lengths that come from outside. */
#ifndef JRBD_CHECKED_H
#define JRBD_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* True when [off, off+len) lies inside [0, size) without overflow. */
static inline bool
range_within(uint64_t off, uint64_t len, uint64_t size)
{
	uint64_t end;

	if (__builtin_add_overflow(off, len, &end))
		return false;
	return end <= size;
}

static inline bool
checked_add_u64(uint64_t a, uint64_t b, uint64_t *ret)
{
	return !__builtin_add_overflow(a, b, ret);
}

static inline bool
checked_mul_u64(uint64_t a, uint64_t b, uint64_t *ret)
{
	return !__builtin_mul_overflow(a, b, ret);
}

/* True when [a, a+alen) and [b, b+blen) share at least one byte. */
static inline bool
ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

#endif
