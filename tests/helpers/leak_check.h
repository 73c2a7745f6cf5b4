/* Makes LeakSanitizer failures fail criterion tests (criterion ignores LSan
 * reports unless the worker aborts). Call from every suite's .fini. */
#ifndef JRBD_TEST_LEAK_CHECK_H
#define JRBD_TEST_LEAK_CHECK_H

void test_leak_check(void);
/* A fresh empty temp directory under $TMPDIR (or /var/tmp, which supports
 * O_DIRECT, unlike tmpfs); caller frees the string and removes the tree with
 * test_rm_rf(). */
char *test_tmpdir(void);
void test_rm_rf(const char *path);

#endif
