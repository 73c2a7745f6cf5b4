#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum log_level log_level = LOG_INFO;
static const char *const level_names[] = {"error", "warning", "info", "debug"};

void
log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level
log_get_level(void)
{
	return log_level;
}

static void log_vmsg(enum log_level level, const char *suffix, const char *fmt, va_list ap)
	PRINTF_FMT(3, 0);

static void
log_vmsg(enum log_level level, const char *suffix, const char *fmt, va_list ap)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;

	if (level > log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ld jrbd %s: ", ts.tv_nsec / 1000000,
			      level_names[level]);
	if (n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	/* One write per line so lines from several processes don't interleave. */
	fprintf(stderr, "%s%s\n", line, suffix ? suffix : "");
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, NULL, fmt, ap);
	va_end(ap);
}

int
log_errno(int err, const char *fmt, ...)
{
	char suffix[160];
	char buf[128];
	va_list ap;

	snprintf(suffix, sizeof(suffix), ": %s", strerror_r(err < 0 ? -err : err, buf, sizeof(buf)));
	va_start(ap, fmt);
	log_vmsg(LOG_ERR, suffix, fmt, ap);
	va_end(ap);
	return err;
}

void
jrbd_verify_failed(const char *what, const char *file, int line)
{
	fprintf(stderr, "jrbd: invariant violated: %s at %s:%d\n", what, file, line);
	abort();
}
