/*
 * The fault backend (test-only): simulated power loss, after SQLite's crash
 * tests.
 *
 * The file on disk is the durable image. Requests run synchronously at
 * submit time like the sync backend, except:
 *   - A write without RWF_DSYNC is not written: a copy of its data is kept as
 *     a pending write of that file. Files are keyed by st_dev/st_ino (st_rdev
 *     for block devices), so every fd of a file shares one pending list.
 *   - A read sees the disk overlaid with the file's pending writes, oldest
 *     first, and may extend past the disk's EOF up to the end of the last
 *     pending write (the gap reads as zeros, like a hole).
 *   - FSYNC writes the file's pending writes in order, fdatasyncs it and
 *     forgets them.
 *   - An RWF_DSYNC write goes to disk, and the bytes it covers are trimmed
 *     from older pending writes: newer durable data can't be overwritten by
 *     older data after a crash.
 *   - FALLOCATE is durable at once. Punching or zeroing a range trims the
 *     pending writes it covers; collapsing or inserting a range shifts data,
 *     so the file's pending writes are flushed first; plain allocation leaves
 *     them alone, as it changes no data.
 * io_fault_crash() then resolves every pending write (drop, keep, or tear at
 * 512-byte sector granularity) and forgets it.
 *
 * Pending writes are applied through the backend's own fd for the file,
 * reopened through /proc/self/fd without O_DIRECT, so a torn write can land
 * on any 512-byte sector and the caller may close its fd before a crash.
 * Memory is bounded only by what the test writes; this is never used in
 * production.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "io/io_internal.h"

/* The unit a torn write is made of: what a disk writes atomically. */
#define FAULT_SECTOR 512u

struct fault_write {
	struct fault_write *next; /* in issue order */
	uint64_t offset;          /* bytes */
	uint32_t len;             /* bytes, > 0 */
	uint8_t *data;            /* len bytes, owned */
};

struct fault_file {
	struct fault_file *next;
	dev_t dev; /* st_dev, or st_rdev for a block device */
	ino_t ino; /* 0 for a block device */
	int fd;    /* our own fd, without O_DIRECT; owned */
	struct fault_write *head, *tail;
};

struct fault_backend {
	struct fault_file *files;
	unsigned npending; /* pending writes over all files */
};

static int
fault_key(int fd, dev_t *ret_dev, ino_t *ret_ino)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		*ret_dev = st.st_rdev;
		*ret_ino = 0;
	} else {
		*ret_dev = st.st_dev;
		*ret_ino = st.st_ino;
	}
	return 0;
}

static struct fault_file *
fault_find(struct fault_backend *b, dev_t dev, ino_t ino)
{
	for (struct fault_file *f = b->files; f; f = f->next) {
		if (f->dev == dev && f->ino == ino)
			return f;
	}
	return NULL;
}

/* The pending list of fd's file, or NULL when it has none (or fd is bad). */
static struct fault_file *
fault_file_of(struct fault_backend *b, int fd)
{
	dev_t dev = 0;
	ino_t ino = 0;

	if (fault_key(fd, &dev, &ino) < 0)
		return NULL;
	return fault_find(b, dev, ino);
}

/* Reopens fd's file without O_DIRECT; dup() when /proc isn't there (a torn
 * write then fails on an O_DIRECT fd unless sectors match its alignment). */
static int
fault_reopen(int fd)
{
	char path[64];
	int nfd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	nfd = open(path, O_RDWR | O_CLOEXEC);
	if (nfd >= 0)
		return nfd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (nfd >= 0)
		return nfd;
	return -errno;
}

static int
fault_file_get(struct fault_backend *b, int fd, struct fault_file **ret)
{
	struct fault_file *f;
	dev_t dev = 0;
	ino_t ino = 0;
	int r;

	r = fault_key(fd, &dev, &ino);
	if (r < 0)
		return r;
	f = fault_find(b, dev, ino);
	if (f) {
		*ret = f;
		return 0;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	r = fault_reopen(fd);
	if (r < 0) {
		free(f);
		return r;
	}
	f->fd = r;
	f->dev = dev;
	f->ino = ino;
	f->next = b->files;
	b->files = f;
	*ret = f;
	return 0;
}

static void
fault_write_free(struct fault_write *w)
{
	free(w->data);
	free(w);
}

/* Forgets every pending write of f (and f itself). */
static void
fault_file_forget(struct fault_backend *b, struct fault_file *f)
{
	struct fault_file **pp;
	struct fault_write *w = f->head;

	while (w) {
		struct fault_write *next = w->next;

		fault_write_free(w);
		b->npending--;
		w = next;
	}
	for (pp = &b->files; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	}
	close(f->fd);
	free(f);
}

/*
 * Removes [off, off + len) from f's pending writes: a write inside the range
 * goes, one straddling an edge is shortened, one covering the whole range is
 * split in two (the tail keeps the original's place in the order).
 */
static int
fault_trim(struct fault_backend *b, struct fault_file *f, uint64_t off, uint64_t len)
{
	struct fault_write *prev = NULL, *w = f->head;
	uint64_t end = off + len;

	while (w) {
		struct fault_write *next = w->next;
		uint64_t wend = w->offset + w->len;

		if (wend <= off || w->offset >= end) {
			prev = w;
		} else if (w->offset >= off && wend <= end) {
			if (prev)
				prev->next = next;
			else
				f->head = next;
			if (f->tail == w)
				f->tail = prev;
			fault_write_free(w);
			b->npending--;
		} else if (w->offset < off && wend > end) {
			struct fault_write *t = calloc(1, sizeof(*t));
			uint32_t tlen = (uint32_t)(wend - end);

			if (!t)
				return -ENOMEM;
			t->data = malloc(tlen);
			if (!t->data) {
				free(t);
				return -ENOMEM;
			}
			memcpy(t->data, w->data + (end - w->offset), tlen);
			t->offset = end;
			t->len = tlen;
			t->next = next;
			w->next = t;
			w->len = (uint32_t)(off - w->offset);
			if (f->tail == w)
				f->tail = t;
			b->npending++;
			prev = t;
		} else if (w->offset < off) {
			w->len = (uint32_t)(off - w->offset); /* keep the head */
			prev = w;
		} else {
			uint32_t cut = (uint32_t)(end - w->offset); /* keep the tail */

			memmove(w->data, w->data + cut, w->len - cut);
			w->offset = end;
			w->len -= cut;
			prev = w;
		}
		w = next;
	}
	return 0;
}

static int
fault_apply(int fd, const uint8_t *data, size_t len, uint64_t offset)
{
	return util_pwrite_full(fd, data, len, offset);
}

/* Writes f's pending writes in order, makes them durable and forgets f. On
 * failure the writes not applied yet stay pending. */
static int
fault_flush(struct fault_backend *b, struct fault_file *f)
{
	while (f->head) {
		struct fault_write *w = f->head;
		int r = fault_apply(f->fd, w->data, w->len, w->offset);
		if (r < 0)
			return r;
		f->head = w->next;
		if (!f->head)
			f->tail = NULL;
		fault_write_free(w);
		b->npending--;
	}
	if (fdatasync(f->fd) < 0)
		return -errno;
	fault_file_forget(b, f);
	return 0;
}

static int
fault_read(struct fault_backend *b, const struct io_req *req)
{
	struct fault_file *f = fault_file_of(b, req->fd);
	uint64_t end = req->offset + req->len, avail;
	uint32_t got = 0;
	struct stat st;
	int r;

	while (got < req->len) {
		ssize_t n = pread(req->fd, (char *)req->buf + got, req->len - got,
		                  (off_t)(req->offset + got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (uint32_t)n;
		/* Past EOF an O_DIRECT pread at an unaligned offset fails
		 * with EINVAL instead of returning 0. */
		if (got < req->len && fstat(req->fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    req->offset + got >= (uint64_t)st.st_size)
			break;
	}
	memset((char *)req->buf + got, 0, req->len - got);
	avail = req->offset + got;
	for (struct fault_write *w = f ? f->head : NULL; w; w = w->next) {
		uint64_t wend = w->offset + w->len;
		uint64_t lo = w->offset > req->offset ? w->offset : req->offset;
		uint64_t hi = wend < end ? wend : end;

		if (wend > avail)
			avail = wend;
		if (lo < hi)
			memcpy((char *)req->buf + (lo - req->offset), w->data + (lo - w->offset),
			       hi - lo);
	}
	r = avail >= end ? (int)req->len : -EIO;
	return r;
}

/* What a real write would refuse: a read-only fd, or a misaligned O_DIRECT
 * request; the fault engine must not hide those bugs from crash tests. */
static int
fault_check_write(const struct io_req *req)
{
	int fl = fcntl(req->fd, F_GETFL);

	if (fl < 0)
		return -errno;
	if ((fl & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (fl & O_DIRECT) {
		uint32_t align = util_dio_align(req->fd);

		if ((uintptr_t)req->buf % align || req->len % align || req->offset % align)
			return -EINVAL;
	}
	return 0;
}

static int
fault_write(struct fault_backend *b, const struct io_req *req)
{
	struct fault_file *f;
	struct fault_write *w;
	int r;

	r = fault_check_write(req);
	if (r < 0)
		return r;
	if (req->len == 0)
		return 0;
	if (req->rw_flags & RWF_DSYNC) {
		r = io_sync_execute(req);
		if (r < 0)
			return r;
		f = fault_file_of(b, req->fd);
		if (f) {
			int t = fault_trim(b, f, req->offset, req->len);

			if (t < 0)
				return t;
		}
		return r;
	}
	r = fault_file_get(b, req->fd, &f);
	if (r < 0)
		return r;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->data = malloc(req->len);
	if (!w->data) {
		free(w);
		return -ENOMEM;
	}
	memcpy(w->data, req->buf, req->len);
	w->offset = req->offset;
	w->len = req->len;
	if (f->tail)
		f->tail->next = w;
	else
		f->head = w;
	f->tail = w;
	b->npending++;
	return (int)req->len;
}

static int
fault_fsync(struct fault_backend *b, const struct io_req *req)
{
	struct fault_file *f = fault_file_of(b, req->fd);

	if (f) {
		int r = fault_flush(b, f);

		if (r < 0)
			return r;
	}
	return io_sync_execute(req);
}

static int
fault_fallocate(struct fault_backend *b, const struct io_req *req)
{
	struct fault_file *f = fault_file_of(b, req->fd);
	int r;

	if (f && (req->falloc_mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))) {
		r = fault_flush(b, f);
		if (r < 0)
			return r;
		f = NULL;
	}
	r = io_sync_execute(req);
	if (r < 0 || !f)
		return r;
	if (req->falloc_mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		r = fault_trim(b, f, req->offset, req->len64);
	return r;
}

static int
fault_execute(struct fault_backend *b, const struct io_req *req)
{
	switch (req->op) {
	case IO_OP_READ:
		return fault_read(b, req);
	case IO_OP_WRITE:
		return fault_write(b, req);
	case IO_OP_FSYNC:
		return fault_fsync(b, req);
	case IO_OP_FALLOCATE:
		return fault_fallocate(b, req);
	}
	return -EINVAL;
}

static int
fault_init(struct io_engine *e, unsigned depth)
{
	(void)depth;
	e->backend = calloc(1, sizeof(struct fault_backend));
	return e->backend ? 0 : -ENOMEM;
}

static int
fault_submit(struct io_engine *e)
{
	struct io_req *req;
	int n = 0;

	while ((req = io_engine_pop_queued(e))) {
		io_engine_complete(e, req, fault_execute(e->backend, req));
		n++;
	}
	return n;
}

static int
fault_reap(struct io_engine *e, bool wait)
{
	(void)e;
	(void)wait;
	return 0;
}

static void
fault_fini(struct io_engine *e)
{
	struct fault_backend *b = e->backend;

	if (!b)
		return;
	/* Like a process exiting cleanly: the page cache would still write
	 * what the process wrote, so pending writes land. */
	while (b->files) {
		struct fault_file *f = b->files;

		if (fault_flush(b, f) < 0)
			fault_file_forget(b, f);
	}
	free(b);
	e->backend = NULL;
}

const struct io_backend_ops io_fault_ops = {
    .name = "fault",
    .init = fault_init,
    .submit = fault_submit,
    .reap = fault_reap,
    .fini = fault_fini,
};

/* splitmix64: a seed gives the same crash on every run and host. */
static uint64_t
fault_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Writes a random subset of w's sectors (absolute 512-byte sectors, clipped
 * to w). */
static int
fault_tear(int fd, const struct fault_write *w, uint64_t *rng)
{
	uint64_t end = w->offset + w->len, pos = w->offset;
	int r;

	while (pos < end) {
		uint64_t next = (pos / FAULT_SECTOR + 1) * FAULT_SECTOR;

		if (next > end)
			next = end;
		if (fault_rand(rng) & 1) {
			r = fault_apply(fd, w->data + (pos - w->offset), next - pos, pos);
			if (r < 0)
				return r;
		}
		pos = next;
	}
	return 0;
}

struct fault_ref {
	struct fault_file *f;
	struct fault_write *w;
};

static int
fault_crash_random(struct fault_backend *b, uint64_t seed)
{
	struct fault_ref *refs;
	uint64_t rng = seed;
	unsigned n = 0;
	int r, ret = 0;

	refs = calloc(b->npending ? b->npending : 1, sizeof(*refs));
	if (!refs)
		return -ENOMEM;
	for (struct fault_file *f = b->files; f; f = f->next) {
		for (struct fault_write *w = f->head; w; w = w->next)
			refs[n++] = (struct fault_ref){f, w};
	}
	/* Fisher-Yates: write-back order after a crash is arbitrary. */
	for (unsigned i = n; i > 1; i--) {
		unsigned j = (unsigned)(fault_rand(&rng) % i);
		struct fault_ref t = refs[i - 1];

		refs[i - 1] = refs[j];
		refs[j] = t;
	}
	for (unsigned i = 0; i < n; i++) {
		const struct fault_write *w = refs[i].w;

		switch (fault_rand(&rng) % 3) {
		case 0: /* never reached the disk */
			r = 0;
			break;
		case 1:
			r = fault_apply(refs[i].f->fd, w->data, w->len, w->offset);
			break;
		default:
			r = fault_tear(refs[i].f->fd, w, &rng);
			break;
		}
		if (r < 0 && ret == 0)
			ret = r;
	}
	free(refs);
	return ret;
}

int
io_fault_crash(struct io_engine *e, enum io_fault_mode mode, uint64_t seed)
{
	struct fault_backend *b;
	unsigned n;
	int r = 0;

	if (!e || e->ops != &io_fault_ops)
		return -EINVAL;
	b = e->backend;
	n = b->npending;
	switch (mode) {
	case IO_FAULT_DROP_ALL:
		break;
	case IO_FAULT_KEEP_ALL:
		for (struct fault_file *f = b->files; f; f = f->next) {
			for (struct fault_write *w = f->head; w; w = w->next) {
				int t = fault_apply(f->fd, w->data, w->len, w->offset);

				if (t < 0 && r == 0)
					r = t;
			}
		}
		break;
	case IO_FAULT_RANDOM:
		r = fault_crash_random(b, seed);
		break;
	default:
		return -EINVAL;
	}
	while (b->files)
		fault_file_forget(b, b->files);
	return r < 0 ? r : (int)n;
}

unsigned
io_fault_pending(const struct io_engine *e)
{
	const struct fault_backend *b;

	if (!e || e->ops != &io_fault_ops)
		return 0;
	b = e->backend;
	return b->npending;
}
