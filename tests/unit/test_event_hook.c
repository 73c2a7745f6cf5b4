/*
 * The event hook: arguments, environment and stdin the hook sees, failing and
 * missing hooks reaped without harm, and the cap on hooks not yet reaped.
 * Hooks are shell scripts the test writes into a temp dir. Waits are bounded
 * polls of event_hook_reap(), never timing assertions.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/event_hook.h"
#include "leak_check.h"

static char *dir;

/* Polls event_hook_reap() every 10 ms, at most 1000 times (the slowest hook
 * sleeps 1 s); returns how many are still running. */
static unsigned
reap_all(void)
{
	const struct timespec tick = {.tv_nsec = 10 * 1000 * 1000};
	unsigned running = event_hook_reap();

	for (int i = 0; running && i < 1000; i++) {
		nanosleep(&tick, NULL);
		running = event_hook_reap();
	}
	return running;
}

static void
setup(void)
{
	dir = test_tmpdir();
	cr_assert_not_null(dir);
}

static void
teardown(void)
{
	reap_all();
	test_rm_rf(dir);
	free(dir);
	dir = NULL;
	test_leak_check();
}

TestSuite(event_hook, .init = setup, .fini = teardown, .timeout = 60);

static char *
path_in_dir(const char *name)
{
	char *path;

	cr_assert_geq(asprintf(&path, "%s/%s", dir, name), 0);
	return path;
}

/* Writes an executable /bin/sh script named name with body; returns its path. */
static char *
write_script(const char *name, const char *body)
{
	char *path = path_in_dir(name);
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f);
	cr_assert_geq(fprintf(f, "#!/bin/sh\n%s", body), 0);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(chmod(path, 0755), 0);
	return path;
}

/* The whole of dir/name, or "" when it doesn't exist. Caller frees. */
static char *
read_file(const char *name)
{
	char *path = path_in_dir(name), *buf = NULL;
	size_t len = 0;
	FILE *f = fopen(path, "r");
	FILE *m = open_memstream(&buf, &len);
	int ch;

	cr_assert_not_null(m);
	while (f && (ch = fgetc(f)) != EOF)
		fputc(ch, m);
	if (f)
		fclose(f);
	cr_assert_eq(fclose(m), 0);
	free(path);
	return buf;
}

/* Appends its arguments, the JRBD_EVENT_* environment and what stdin gave to
 * "out" next to itself. */
static const char recorder[] =
    "out=\"$(dirname \"$0\")/out\"\n"
    "{\n"
    "	printf 'argc=%s\\n' \"$#\"\n"
    "	for a in \"$@\"; do printf 'arg=%s\\n' \"$a\"; done\n"
    "	printf 'env=%s|%s|%s|%s\\n' \"$JRBD_EVENT_GROUP\" \"$JRBD_EVENT_OLD\" "
    "\"$JRBD_EVENT_NEW\" \"$JRBD_EVENT_REASON\"\n"
    "	printf 'group_vars=%s\\n' \"$(env | grep -c '^JRBD_EVENT_GROUP=')\"\n"
    "	if read -r line; then echo stdin=data; else echo stdin=eof; fi\n"
    "} >>\"$out\"\n";

Test(event_hook, passes_args_env_and_null_stdin)
{
	char *hook = write_script("hook", recorder), *out;

	/* A stale copy in the daemon's environment is replaced, not duplicated. */
	cr_assert_eq(setenv("JRBD_EVENT_GROUP", "stale", 1), 0);
	cr_assert_eq(event_hook_run(hook, "db1", "PAIR", "PSUE", "link lost: timed out"), 0);
	cr_assert_eq(reap_all(), 0);
	cr_assert_eq(event_hook_run(hook, "db2", "COPY", "PAIR", "initial copy done"), 0);
	cr_assert_eq(reap_all(), 0);
	unsetenv("JRBD_EVENT_GROUP");

	out = read_file("out");
	cr_assert_str_eq(out, "argc=4\n"
	                      "arg=db1\n"
	                      "arg=PAIR\n"
	                      "arg=PSUE\n"
	                      "arg=link lost: timed out\n"
	                      "env=db1|PAIR|PSUE|link lost: timed out\n"
	                      "group_vars=1\n"
	                      "stdin=eof\n"
	                      "argc=4\n"
	                      "arg=db2\n"
	                      "arg=COPY\n"
	                      "arg=PAIR\n"
	                      "arg=initial copy done\n"
	                      "env=db2|COPY|PAIR|initial copy done\n"
	                      "group_vars=1\n"
	                      "stdin=eof\n");
	free(out);
	free(hook);
}

Test(event_hook, null_strings_pass_as_empty)
{
	char *hook = write_script("hook", recorder), *out;

	cr_assert_eq(event_hook_run(hook, "db1", NULL, "PAIR", NULL), 0);
	cr_assert_eq(reap_all(), 0);
	out = read_file("out");
	cr_assert_str_eq(out, "argc=4\n"
	                      "arg=db1\n"
	                      "arg=\n"
	                      "arg=PAIR\n"
	                      "arg=\n"
	                      "env=db1||PAIR|\n"
	                      "group_vars=1\n"
	                      "stdin=eof\n");
	free(out);
	free(hook);
}

Test(event_hook, rejects_no_program)
{
	cr_assert_eq(event_hook_run(NULL, "db1", "PAIR", "PSUS", "x"), -EINVAL);
	cr_assert_eq(event_hook_run("", "db1", "PAIR", "PSUS", "x"), -EINVAL);
	cr_assert_eq(event_hook_reap(), 0);
}

Test(event_hook, failing_hook_is_reaped)
{
	char *hook = write_script("hook", "echo ran >\"$(dirname \"$0\")/out\"\nexit 3\n"), *out;

	cr_assert_eq(event_hook_run(hook, "db1", "PAIR", "PSUS", "operator"), 0);
	cr_assert_eq(reap_all(), 0);
	out = read_file("out");
	cr_assert_str_eq(out, "ran\n");
	free(out);
	free(hook);
}

Test(event_hook, killed_hook_is_reaped)
{
	char *hook = write_script("hook", "kill -TERM $$\nsleep 5\n");

	cr_assert_eq(event_hook_run(hook, "db1", "PAIR", "PSUS", "operator"), 0);
	cr_assert_eq(reap_all(), 0);
	free(hook);
}

/* posix_spawn may fail, or succeed and the child exit 127 (126 when not
 * executable): either way nothing is left running. */
Test(event_hook, missing_or_unrunnable_program)
{
	char *missing = path_in_dir("no-such-hook");
	char *plain = write_script("not-executable", "exit 0\n");
	int r;

	r = event_hook_run(missing, "db1", "PAIR", "PSUS", "operator");
	cr_assert(r == 0 || r < 0, "r %d", r);
	cr_assert_eq(reap_all(), 0);

	cr_assert_eq(chmod(plain, 0644), 0);
	r = event_hook_run(plain, "db1", "PAIR", "PSUS", "operator");
	cr_assert(r == 0 || r < 0, "r %d", r);
	cr_assert_eq(reap_all(), 0);
	free(missing);
	free(plain);
}

/* Children count until reaped, finished or not, so this is deterministic. */
Test(event_hook, skips_beyond_max_children)
{
	char *slow = write_script("slow", "sleep 1\n");
	char *fast = write_script("fast", "exit 0\n");

	for (unsigned i = 0; i < EVENT_HOOK_MAX_CHILDREN; i++)
		cr_assert_eq(event_hook_run(slow, "db1", "PAIR", "PSUE", "flapping link"), 0,
		             "hook %u", i);
	cr_assert_eq(event_hook_run(slow, "db1", "PSUE", "PAIR", "flapping link"), -EAGAIN);
	cr_assert_eq(reap_all(), 0);
	/* Reaping frees the slots. */
	cr_assert_eq(event_hook_run(fast, "db1", "PSUE", "PAIR", "link back"), 0);
	cr_assert_eq(reap_all(), 0);
	free(slow);
	free(fast);
}
