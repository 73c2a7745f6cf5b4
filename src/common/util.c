#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int
util_parse_size(const char *s, uint64_t *ret_size)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (shift && (!strcmp(end, "iB") || !strcmp(end, "B")))
		end += strlen(end);
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*ret_size = (uint64_t)v << shift;
	return 0;
}

const char *
util_format_size(uint64_t bytes, char *buf, size_t buflen)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, buflen, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, buflen, "%.1f %s", v, units[u]);
	return buf;
}

static uint64_t
clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t
util_now_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}

uint64_t
util_mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

void *
util_aligned_alloc(size_t align, size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, align, len ? len : align))
		return NULL;
	return p;
}

int
util_pread_full(int fd, void *buf, size_t len, uint64_t offset)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)offset);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

int
util_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)offset);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

int
util_write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
util_fd_size(int fd, uint64_t *ret_size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;

		if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
			return -errno;
		*ret_size = sz;
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*ret_size = (uint64_t)st.st_size;
	return 0;
}

uint32_t
util_dio_align(int fd)
{
	struct stat st;
	int ssz;

#ifdef STATX_DIOALIGN
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align >= 512 &&
	    stx.stx_dio_offset_align <= 4096)
		return stx.stx_dio_offset_align;
#endif
	if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) && ioctl(fd, BLKSSZGET, &ssz) == 0 &&
	    ssz >= 512 && ssz <= 4096)
		return (uint32_t)ssz;
	return 4096;
}

bool
util_valid_name(const char *name, size_t maxlen)
{
	size_t n = strlen(name);

	if (n == 0 || n >= maxlen || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int
util_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int
util_fsync_parent(const char *path)
{
	char *copy = strdup(path), *slash;
	int r;

	if (!copy)
		return -ENOMEM;
	/* dirname() by hand: the libc one isn't thread-safe. */
	slash = strrchr(copy, '/');
	if (!slash)
		r = util_fsync_dir(".");
	else {
		if (slash == copy)
			slash++; /* the root: keep its "/" */
		*slash = '\0';
		r = util_fsync_dir(copy);
	}
	free(copy);
	return r;
}

void
util_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
