/*
 * Logging to stderr with a level and a debug category mask.
 *
 * Core modules (io, journal, nbd parser) log only at debug level and return
 * errors; the daemon and control plane decide what to report.
 */
#ifndef JRBD_LOG_H
#define JRBD_LOG_H

#include "common/compiler.h"

enum log_level { LOG_ERR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *fmt, ...) PRINTF_FMT(2, 3);
/* Logs "<msg>: <strerror(-err)>" at error level and returns err (negative errno). */
int log_errno(int err, const char *fmt, ...) PRINTF_FMT(2, 3);

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (unlikely(log_get_level() >= LOG_DEBUG))                                        \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                           \
	} while (0)

/* Always-on invariant check for conditions that could corrupt replicated data. */
#define JRBD_VERIFY(cond)                                                                          \
	do {                                                                                       \
		if (unlikely(!(cond)))                                                             \
			jrbd_verify_failed(#cond, __FILE__, __LINE__);                             \
	} while (0)
__attribute__((noreturn)) void jrbd_verify_failed(const char *what, const char *file, int line);

#endif
