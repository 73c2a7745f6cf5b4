/*
 * The io_uring backend (liburing): one ring per engine, sized to the engine's
 * depth, with the engine's eventfd registered so the event loop's epoll sees
 * completions.
 *
 * Requests beyond the free SQ slots (or beyond depth) stay in the engine
 * queue until the next io_engine_submit(). A short read/write is resubmitted
 * for its remaining bytes (io_req.io_res holds the progress); one that can't
 * progress completes with -EIO. No linked SQEs, no IOSQE_IO_DRAIN: ordering
 * between requests is the caller's job (wait for writes before their fsync).
 *
 * Without liburing the backend still exists and its init returns -ENOSYS.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "config.h"
#include "io/io_internal.h"

#if HAVE_LIBURING

#include <liburing.h>

/* CQEs harvested per peek; the loop repeats until the CQ is empty. */
#define URING_CQE_BATCH 32u

struct uring_backend {
	struct io_uring ring;
};

static int
uring_init(struct io_engine *e, unsigned depth)
{
	struct uring_backend *b;
	int r;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	r = io_uring_queue_init(depth, &b->ring, 0);
	if (r < 0) {
		free(b);
		return r;
	}
	r = io_uring_register_eventfd(&b->ring, e->event_fd);
	if (r < 0) {
		io_uring_queue_exit(&b->ring);
		free(b);
		return r;
	}
	e->backend = b;
	return 0;
}

static void
uring_prep(struct io_uring_sqe *sqe, struct io_req *req)
{
	/* io_res: bytes done by earlier SQEs of a short transfer. */
	uint32_t done = (uint32_t)req->io_res;

	switch (req->op) {
	case IO_OP_READ:
		io_uring_prep_read(sqe, req->fd, (char *)req->buf + done, req->len - done,
		                   req->offset + done);
		break;
	case IO_OP_WRITE:
		io_uring_prep_write(sqe, req->fd, (char *)req->buf + done, req->len - done,
		                    req->offset + done);
		sqe->rw_flags = req->rw_flags;
		break;
	case IO_OP_FSYNC:
		io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
		break;
	case IO_OP_FALLOCATE:
		/* io_req_check() bounded both below INT64_MAX. */
		io_uring_prep_fallocate(sqe, req->fd, req->falloc_mode, (off_t)req->offset,
		                        (off_t)req->len64);
		break;
	}
	io_uring_sqe_set_data(sqe, req);
}

static int
uring_submit(struct io_engine *e)
{
	struct uring_backend *b = e->backend;
	struct io_req *req;
	int n = 0, r;

	while ((req = io_engine_pop_queued(e))) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

		if (!sqe) {
			io_engine_requeue(e, req);
			break;
		}
		uring_prep(sqe, req);
		n++;
	}
	r = io_uring_submit(&b->ring);
	/* EAGAIN/EBUSY (kernel short of memory, CQ overflowing) and EINTR leave
	 * the SQEs in the ring; the next submit or a waiting reap pushes them.
	 * They are counted in flight already. */
	if (r < 0 && r != -EAGAIN && r != -EBUSY && r != -EINTR)
		return r;
	return n;
}

static void
uring_complete(struct io_engine *e, struct io_req *req, int res)
{
	if (res < 0) {
		io_engine_complete(e, req, res);
		return;
	}
	switch (req->op) {
	case IO_OP_READ:
	case IO_OP_WRITE:
		io_engine_progress(e, req, res);
		break;
	case IO_OP_FSYNC:
	case IO_OP_FALLOCATE:
		io_engine_complete(e, req, 0);
		break;
	}
}

static int
uring_reap(struct io_engine *e, bool wait)
{
	struct uring_backend *b = e->backend;
	struct io_uring_cqe *cqes[URING_CQE_BATCH];
	unsigned n;
	int total = 0;

	if (wait) {
		/* Also pushes SQEs an earlier submit left in the ring. */
		int r = io_uring_submit_and_wait(&b->ring, 1);

		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
			return r;
	}
	while ((n = io_uring_peek_batch_cqe(&b->ring, cqes, URING_CQE_BATCH)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			struct io_req *req = io_uring_cqe_get_data(cqes[i]);

			uring_complete(e, req, cqes[i]->res);
		}
		io_uring_cq_advance(&b->ring, n);
		total += (int)n;
	}
	return total;
}

static bool
uring_has_completions(struct io_engine *e)
{
	struct uring_backend *b = e->backend;

	return io_uring_cq_ready(&b->ring) > 0;
}

static void
uring_fini(struct io_engine *e)
{
	struct uring_backend *b = e->backend;

	if (!b)
		return;
	io_uring_queue_exit(&b->ring);
	free(b);
	e->backend = NULL;
}

#else /* !HAVE_LIBURING */

static int
uring_init(struct io_engine *e, unsigned depth)
{
	(void)e;
	(void)depth;
	return -ENOSYS;
}

static int
uring_submit(struct io_engine *e)
{
	(void)e;
	return -ENOSYS;
}

static int
uring_reap(struct io_engine *e, bool wait)
{
	(void)e;
	(void)wait;
	return -ENOSYS;
}

static bool
uring_has_completions(struct io_engine *e)
{
	(void)e;
	return true;
}

static void
uring_fini(struct io_engine *e)
{
	(void)e;
}

#endif

const struct io_backend_ops io_uring_ops = {
    .name = "uring",
    .init = uring_init,
    .submit = uring_submit,
    .reap = uring_reap,
    .fini = uring_fini,
    .has_completions = uring_has_completions,
};
