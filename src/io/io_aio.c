/*
 * The Linux native AIO backend (libaio), for hosts where io_uring is disabled.
 *
 * Reads and writes go through io_submit() with the engine's eventfd set on
 * every iocb (IOCB_FLAG_RESFD), so epoll sees their completions; RWF_DSYNC is
 * passed in iocb->aio_rw_flags (kernel >= 4.13). FSYNC and FALLOCATE are done
 * synchronously at submit time, because most filesystems reject
 * IOCB_CMD_FDSYNC and there is no AIO fallocate; they complete through the
 * same done list. Before one of them runs, the reads/writes queued ahead of it
 * are handed to the kernel, so queue order is at least submission order.
 *
 * io_submit() failing with EAGAIN keeps the remaining requests queued for
 * the next submit. Buffered (non-O_DIRECT) AIO is synchronous in the kernel,
 * which is correct, only slow.
 *
 * Without libaio the backend still exists and its init returns -ENOSYS.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "config.h"
#include "io/io_internal.h"

#if HAVE_LIBAIO

#include <libaio.h>

struct aio_backend {
	io_context_t ctx;
	unsigned depth;
	unsigned nkernel;   /* iocbs io_submit() accepted and not reaped */
	struct iocb *iocbs; /* depth iocbs, one per in-flight request */
	struct iocb **free; /* stack of unused iocbs */
	unsigned nfree;
	struct iocb **batch; /* iocbs prepared for the next io_submit() */
	unsigned nbatch;
	struct io_event *events; /* depth events for io_getevents() */
};

static void
aio_free_backend(struct aio_backend *b)
{
	free(b->iocbs);
	free(b->free);
	free(b->batch);
	free(b->events);
	free(b);
}

static int
aio_init(struct io_engine *e, unsigned depth)
{
	struct aio_backend *b;
	int r;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->depth = depth;
	b->iocbs = calloc(depth, sizeof(*b->iocbs));
	b->free = calloc(depth, sizeof(struct iocb *));
	b->batch = calloc(depth, sizeof(struct iocb *));
	b->events = calloc(depth, sizeof(*b->events));
	if (!b->iocbs || !b->free || !b->batch || !b->events) {
		aio_free_backend(b);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < depth; i++)
		b->free[i] = &b->iocbs[i];
	b->nfree = depth;
	/* libaio returns -errno; EAGAIN means /proc/sys/fs/aio-max-nr is used up. */
	r = io_setup((int)depth, &b->ctx);
	if (r < 0) {
		aio_free_backend(b);
		return r;
	}
	e->backend = b;
	return 0;
}

static void
aio_prep(struct io_engine *e, struct iocb *iocb, struct io_req *req)
{
	/* io_res: bytes done by an earlier, short, iocb of this request. */
	uint32_t done = (uint32_t)req->io_res;
	char *buf = (char *)req->buf + done;
	/* io_req_check() bounded offset + len below INT64_MAX. */
	long long off = (long long)req->offset + (long long)done;

	if (req->op == IO_OP_READ) {
		io_prep_pread(iocb, req->fd, buf, req->len - done, off);
	} else {
		io_prep_pwrite(iocb, req->fd, buf, req->len - done, off);
		iocb->aio_rw_flags = (unsigned)req->rw_flags;
	}
	io_set_eventfd(iocb, e->event_fd);
	iocb->data = req;
}

static void
aio_put_iocb(struct aio_backend *b, struct iocb *iocb)
{
	b->free[b->nfree++] = iocb;
}

/* Hands the prepared batch to the kernel. Returns false when the kernel is
 * out of AIO resources (EAGAIN) and the rest of the batch went back to the
 * engine queue. */
static bool
aio_flush_batch(struct io_engine *e, struct aio_backend *b)
{
	unsigned off = 0;
	bool ok = true;

	while (off < b->nbatch) {
		int r = io_submit(b->ctx, (long)(b->nbatch - off), b->batch + off);

		if (r > 0) {
			off += (unsigned)r;
			b->nkernel += (unsigned)r;
			continue;
		}
		if (r == -EINTR)
			continue;
		if (r == 0 || r == -EAGAIN) {
			if (b->nkernel == 0) {
				/* Nothing in flight will free resources, so
				 * waiting could last forever: fail this one. */
				struct iocb *iocb = b->batch[off++];

				io_engine_complete(e, iocb->data, -EAGAIN);
				aio_put_iocb(b, iocb);
				continue;
			}
			/* Requeue in reverse so queue order is kept. */
			for (unsigned i = b->nbatch; i > off; i--) {
				struct iocb *iocb = b->batch[i - 1];

				io_engine_requeue(e, iocb->data);
				aio_put_iocb(b, iocb);
			}
			ok = false;
			break;
		}
		/* Any other error belongs to the first iocb (EBADF, EINVAL
		 * for a misaligned O_DIRECT request or unsupported flags). */
		io_engine_complete(e, b->batch[off]->data, r);
		aio_put_iocb(b, b->batch[off]);
		off++;
	}
	b->nbatch = 0;
	return ok;
}

static int
aio_submit(struct io_engine *e)
{
	struct aio_backend *b = e->backend;
	struct io_req *req;
	int n = 0;

	while ((req = io_engine_pop_queued(e))) {
		struct iocb *iocb;

		n++;
		if (req->op == IO_OP_FSYNC || req->op == IO_OP_FALLOCATE) {
			if (b->nbatch) {
				/* Hand the reads/writes queued ahead of it to
				 * the kernel first. Requeued before the flush,
				 * so a batch the kernel refuses goes back in
				 * front of it; otherwise the next pop takes it
				 * again. */
				io_engine_requeue(e, req);
				n--;
				if (!aio_flush_batch(e, b))
					break;
				continue;
			}
			io_engine_complete(e, req, io_sync_execute(req));
			continue;
		}
		/* pop_queued() caps in-flight requests at depth, so an iocb is
		 * always free. */
		iocb = b->free[--b->nfree];
		aio_prep(e, iocb, req);
		b->batch[b->nbatch++] = iocb;
	}
	aio_flush_batch(e, b);
	return n;
}

static int
aio_reap(struct io_engine *e, bool wait)
{
	struct aio_backend *b = e->backend;
	struct timespec zero = {0, 0};
	int total = 0;

	while (b->nkernel) {
		long min_nr = wait && total == 0 ? 1 : 0;
		int r =
		    io_getevents(b->ctx, min_nr, (long)b->depth, b->events, min_nr ? NULL : &zero);

		if (r == -EINTR)
			continue;
		if (r < 0)
			return r;
		if (r == 0)
			break;
		for (int i = 0; i < r; i++) {
			struct iocb *iocb = b->events[i].obj;
			struct io_req *req = iocb->data;
			/* res is an unsigned long carrying a byte count or
			 * -errno. */
			long res = (long)b->events[i].res;

			b->nkernel--;
			aio_put_iocb(b, iocb);
			if (res < 0)
				io_engine_complete(e, req, (int)res);
			else
				io_engine_progress(e, req, (int)res);
		}
		total += r;
	}
	return total;
}

static void
aio_fini(struct io_engine *e)
{
	struct aio_backend *b = e->backend;

	if (!b)
		return;
	io_destroy(b->ctx);
	aio_free_backend(b);
	e->backend = NULL;
}

#else /* !HAVE_LIBAIO */

static int
aio_init(struct io_engine *e, unsigned depth)
{
	(void)e;
	(void)depth;
	return -ENOSYS;
}

static int
aio_submit(struct io_engine *e)
{
	(void)e;
	return -ENOSYS;
}

static int
aio_reap(struct io_engine *e, bool wait)
{
	(void)e;
	(void)wait;
	return -ENOSYS;
}

static void
aio_fini(struct io_engine *e)
{
	(void)e;
}

#endif

const struct io_backend_ops io_aio_ops = {
    .name = "aio",
    .init = aio_init,
    .submit = aio_submit,
    .reap = aio_reap,
    .fini = aio_fini,
};
