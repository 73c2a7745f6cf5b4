/* Small helpers: size parsing, clocks, aligned buffers, full reads/writes. */
#ifndef JRBD_UTIL_H
#define JRBD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses "4096", "64K", "1M", "8G", "1T" (binary units, optional "iB"/"B"). */
int util_parse_size(const char *s, uint64_t *ret_size);
/* Formats a byte count as "8.0 GiB" into buf. */
const char *util_format_size(uint64_t bytes, char *buf, size_t buflen);

uint64_t util_now_ns(void);  /* CLOCK_REALTIME, ns since the epoch */
uint64_t util_mono_ns(void); /* CLOCK_MONOTONIC */

/* posix_memalign wrapper; returns NULL on failure. Free with free(). */
void *util_aligned_alloc(size_t align, size_t len);

/* Loop over short reads/writes and EINTR; -errno on failure, -EIO on early EOF. */
int util_pread_full(int fd, void *buf, size_t len, uint64_t offset);
int util_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset);
int util_write_full(int fd, const void *buf, size_t len);

/* Size of a regular file or block device. */
int util_fd_size(int fd, uint64_t *ret_size);
/* Offset/length alignment that O_DIRECT needs on fd (statx DIOALIGN, BLKSSZGET, else 4096). */
uint32_t util_dio_align(int fd);

/* fsync() of a directory, to make entries created or renamed in it durable;
 * of the directory holding path (a file just created there). 0 or -errno. */
int util_fsync_dir(const char *dir);
int util_fsync_parent(const char *path);

/* vsnprintf into err[errlen] for functions that explain their failures;
 * no-op when err is NULL or errlen 0. */
void util_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True when name is a non-empty [A-Za-z0-9_.-] string shorter than maxlen, not "." or "..". */
bool util_valid_name(const char *name, size_t maxlen);

#endif
