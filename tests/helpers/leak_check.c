#include "leak_check.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif

#ifdef HAVE_LSAN
int __lsan_do_recoverable_leak_check(void);
#endif

void
test_leak_check(void)
{
#ifdef HAVE_LSAN
	if (__lsan_do_recoverable_leak_check()) {
		fprintf(stderr, "test_leak_check: memory leaked\n");
		abort();
	}
#endif
}

char *
test_tmpdir(void)
{
	const char *base = getenv("JRBD_TEST_TMPDIR");
	char *path;

	if (!base || !*base)
		base = "/var/tmp";
	if (asprintf(&path, "%s/jrbd-test-XXXXXX", base) < 0)
		return NULL;
	if (!mkdtemp(path)) {
		free(path);
		return NULL;
	}
	return path;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void
test_rm_rf(const char *path)
{
	if (path)
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
