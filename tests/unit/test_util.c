#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>

#include "common/checked.h"
#include "common/util.h"
#include "leak_check.h"

TestSuite(util, .fini = test_leak_check);

Test(util, parses_sizes_with_binary_units)
{
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
		{"0", 0},       {"4096", 4096},         {"64K", 65536},      {"64KiB", 65536},
		{"1M", 1 << 20}, {"8G", 8ull << 30},    {"1T", 1ull << 40},  {"512m", 512ull << 20},
		{"2GB", 2ull << 30},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t v = 1;

		cr_assert(eq(int, util_parse_size(ok[i].s, &v), 0), "%s", ok[i].s);
		cr_assert(eq(u64, v, ok[i].v), "%s", ok[i].s);
	}
}

Test(util, rejects_bad_sizes_without_touching_output)
{
	static const char *const bad[] = {"", "-1", "K", "1X", "1KK", "12 ", "1.5G", "99999999999T"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 7;

		cr_assert(lt(int, util_parse_size(bad[i], &v), 0), "'%s'", bad[i]);
		cr_assert(eq(u64, v, 7));
	}
}

Test(util, validates_names)
{
	cr_assert(util_valid_name("data", 40));
	cr_assert(util_valid_name("db-1.log_x", 40));
	cr_assert_not(util_valid_name("", 40));
	cr_assert_not(util_valid_name("..", 40));
	cr_assert_not(util_valid_name("a/b", 40));
	cr_assert_not(util_valid_name("a b", 40));
	cr_assert_not(util_valid_name("0123456789", 10));
}

Test(util, range_checks_catch_overflow)
{
	cr_assert(range_within(0, 4096, 4096));
	cr_assert_not(range_within(1, 4096, 4096));
	cr_assert_not(range_within(UINT64_MAX, 2, UINT64_MAX));
	cr_assert(ranges_overlap(0, 10, 9, 1));
	cr_assert_not(ranges_overlap(0, 10, 10, 1));
	cr_assert_not(ranges_overlap(0, 0, 0, 10));
}
