/*
 * The sync backend: every request runs to completion inside
 * io_engine_submit() with pread/pwritev2/fdatasync/fallocate, and its
 * callback runs from the next io_engine_reap() (the core bumps the eventfd).
 *
 * It blocks the calling thread, so it is the reference implementation for
 * tests and a last resort, not a production path. RWF_DSYNC goes to
 * pwritev2(), so a durable write costs what it costs with io_uring.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/io_internal.h"

/* True when a read ending at `end` reached the end of a regular file. Checked
 * only after a short read: the next pread of an O_DIRECT fd at an unaligned
 * EOF would fail with EINVAL rather than return 0. */
static bool
sync_at_eof(int fd, uint64_t end)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && end >= (uint64_t)st.st_size;
}

static int
sync_rw(const struct io_req *req)
{
	uint32_t done = 0;

	while (done < req->len) {
		struct iovec iov = {
		    .iov_base = (char *)req->buf + done,
		    .iov_len = req->len - done,
		};
		/* io_req_check() bounded offset + len below INT64_MAX. */
		off_t off = (off_t)(req->offset + done);
		ssize_t n;

		if (req->op == IO_OP_READ)
			n = preadv2(req->fd, &iov, 1, off, 0);
		else
			n = pwritev2(req->fd, &iov, 1, off, req->rw_flags);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* EOF, or a write that can't progress */
		done += (uint32_t)n;
		if (done < req->len && req->op == IO_OP_READ &&
		    sync_at_eof(req->fd, req->offset + done))
			return -EIO;
	}
	return (int)done;
}

int
io_sync_execute(const struct io_req *req)
{
	switch (req->op) {
	case IO_OP_READ:
	case IO_OP_WRITE:
		return sync_rw(req);
	case IO_OP_FSYNC:
		/* Never retried on failure: after a failed fdatasync the kernel
		 * may have dropped the dirty pages, so a second call could
		 * succeed without the data being durable. */
		return fdatasync(req->fd) < 0 ? -errno : 0;
	case IO_OP_FALLOCATE:
		if (fallocate(req->fd, req->falloc_mode, (off_t)req->offset, (off_t)req->len64) < 0)
			return -errno;
		return 0;
	}
	return -EINVAL;
}

static int
sync_init(struct io_engine *e, unsigned depth)
{
	(void)e;
	(void)depth;
	return 0;
}

static int
sync_submit(struct io_engine *e)
{
	struct io_req *req;
	int n = 0;

	while ((req = io_engine_pop_queued(e))) {
		io_engine_complete(e, req, io_sync_execute(req));
		n++;
	}
	return n;
}

static int
sync_reap(struct io_engine *e, bool wait)
{
	/* Nothing is ever in flight after submit returns. */
	(void)e;
	(void)wait;
	return 0;
}

static void
sync_fini(struct io_engine *e)
{
	(void)e;
}

const struct io_backend_ops io_sync_ops = {
    .name = "sync",
    .init = sync_init,
    .submit = sync_submit,
    .reap = sync_reap,
    .fini = sync_fini,
};
