/*
 * The I/O engine core: request queue, depth limit, completion list and the
 * eventfd, shared by every backend (see io_internal.h for the request life
 * cycle).
 *
 * The core never blocks except in io_engine_drain()/io_engine_run_one()/
 * io_engine_free(), and never runs a callback from io_engine_queue(): a
 * request that is invalid on arrival is put straight on the done list and the
 * eventfd is bumped, so the callback runs from the next io_engine_reap() like
 * any other completion. The core does not allocate after io_engine_new().
 */
#include "io/io.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "config.h"
#include "io/io_internal.h"

static void
list_append(struct io_req **head, struct io_req **tail, struct io_req *req)
{
	req->io_next = NULL;
	if (*tail)
		(*tail)->io_next = req;
	else
		*head = req;
	*tail = req;
}

void
io_engine_signal(struct io_engine *e)
{
	uint64_t one = 1;

	/* Only fails with EAGAIN when the counter is near UINT64_MAX, and then
	 * the fd is readable anyway. */
	if (write(e->event_fd, &one, sizeof(one)) < 0)
		log_debug("io: eventfd write: %m, ignoring");
}

/* Empties the eventfd counter so the fd only turns readable again for
 * completions that arrive after this point. */
static void
io_engine_clear_signal(struct io_engine *e)
{
	uint64_t v;

	while (read(e->event_fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

struct io_req *
io_engine_pop_queued(struct io_engine *e)
{
	struct io_req *req = e->queue_head;

	if (!req || e->ninflight >= e->depth)
		return NULL;
	e->queue_head = req->io_next;
	if (!e->queue_head)
		e->queue_tail = NULL;
	req->io_next = NULL;
	e->nqueued--;
	e->ninflight++;
	return req;
}

void
io_engine_requeue(struct io_engine *e, struct io_req *req)
{
	req->io_next = e->queue_head;
	e->queue_head = req;
	if (!e->queue_tail)
		e->queue_tail = req;
	e->ninflight--;
	e->nqueued++;
}

static void
io_engine_finish(struct io_engine *e, struct io_req *req, int res)
{
	if (res >= 0 && (req->op == IO_OP_READ || req->op == IO_OP_WRITE) &&
	    (uint32_t)res != req->len)
		res = -EIO; /* the contract: a transfer is whole or an error */
	req->io_res = res;
	list_append(&e->done_head, &e->done_tail, req);
	e->ndone++;
}

void
io_engine_complete(struct io_engine *e, struct io_req *req, int res)
{
	e->ninflight--;
	io_engine_finish(e, req, res);
}

/* True when a read that stopped at `end` hit the end of a regular file, so
 * resubmitting the remainder would only return 0 (or EINVAL for an O_DIRECT
 * fd at an unaligned end). */
static bool
io_read_at_eof(int fd, uint64_t end)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && end >= (uint64_t)st.st_size;
}

void
io_engine_progress(struct io_engine *e, struct io_req *req, int n)
{
	if (n <= 0) {
		/* 0 bytes: EOF for a read, no progress for a write; retrying
		 * would spin. */
		io_engine_complete(e, req, -EIO);
		return;
	}
	req->io_res += n;
	if ((uint32_t)req->io_res >= req->len) {
		io_engine_complete(e, req, req->io_res);
		return;
	}
	if (req->op == IO_OP_READ && io_read_at_eof(req->fd, req->offset + (uint32_t)req->io_res)) {
		io_engine_complete(e, req, -EIO);
		return;
	}
	io_engine_requeue(e, req);
}

/* -EINVAL for requests no backend could execute; bounds offsets so backends
 * can convert them to off_t / long long without overflow. */
static int
io_req_check(const struct io_req *req)
{
	uint64_t end;

	switch (req->op) {
	case IO_OP_READ:
	case IO_OP_WRITE:
		if (req->len > INT_MAX || (req->len && !req->buf))
			return -EINVAL;
		if (__builtin_add_overflow(req->offset, (uint64_t)req->len, &end) ||
		    end > (uint64_t)INT64_MAX)
			return -EINVAL;
		return 0;
	case IO_OP_FSYNC:
		return 0;
	case IO_OP_FALLOCATE:
		if (__builtin_add_overflow(req->offset, req->len64, &end) ||
		    end > (uint64_t)INT64_MAX)
			return -EINVAL;
		return 0;
	}
	return -EINVAL;
}

void
io_engine_queue(struct io_engine *e, struct io_req *req)
{
	int r = e->is_closing ? -ECANCELED : io_req_check(req);

	req->io_res = 0;
	if (r < 0) {
		/* Delivered by the next reap, like a kernel completion. */
		io_engine_finish(e, req, r);
		io_engine_signal(e);
		return;
	}
	list_append(&e->queue_head, &e->queue_tail, req);
	e->nqueued++;
}

int
io_engine_submit(struct io_engine *e)
{
	unsigned ndone = e->ndone;
	int r = 0;

	/* Also with nothing queued: io_uring keeps SQEs that io_uring_enter()
	 * refused with EAGAIN/EBUSY in the ring, and only a submit pushes them
	 * (no syscall when there are none). */
	if (e->nqueued || e->ninflight)
		r = e->ops->submit(e);
	/* Completions made at submit time (sync backends, AIO fsync) have no
	 * kernel to signal them. */
	if (e->ndone > ndone)
		io_engine_signal(e);
	return r;
}

int
io_engine_event_fd(const struct io_engine *e)
{
	return e->event_fd;
}

/* Runs the callbacks of everything on the done list now. Completions added by
 * those callbacks (requests rejected at queue time) wait for the next call,
 * so a callback that keeps failing can't starve the loop. */
static int
io_engine_run_done(struct io_engine *e)
{
	struct io_req *req = e->done_head;
	int ran = 0;

	e->done_head = e->done_tail = NULL;
	e->ndone = 0;
	while (req) {
		struct io_req *next = req->io_next;

		req->io_next = NULL;
		if (req->done)
			req->done(req, req->io_res);
		ran++;
		req = next;
	}
	return ran;
}

int
io_engine_reap(struct io_engine *e)
{
	int r = 0, ran;

	/* Clear before harvesting: a completion landing after the harvest
	 * re-arms the fd instead of being lost. */
	io_engine_clear_signal(e);
	if (e->ninflight)
		r = e->ops->reap(e, false);
	if (r < 0)
		log_debug("io %s: reap: error %d", e->ops->name, r);
	ran = io_engine_run_done(e);
	return ran == 0 && r < 0 ? r : ran;
}

int
io_engine_reap_ready(struct io_engine *e)
{
	/* Clearing the eventfd is a read() per call; most loop iterations
	 * have nothing to reap. */
	if (!e->ndone && e->ops->has_completions && !e->ops->has_completions(e))
		return 0;
	return io_engine_reap(e);
}

unsigned
io_engine_pending(const struct io_engine *e)
{
	return e->nqueued + e->ninflight + e->ndone;
}

int
io_engine_drain(struct io_engine *e)
{
	while (io_engine_pending(e)) {
		int r = io_engine_submit(e);

		if (r < 0)
			return r;
		if (!e->ndone && e->ninflight) {
			r = e->ops->reap(e, true);
			if (r < 0 && r != -EINTR)
				return r;
		}
		r = io_engine_reap(e);
		if (r < 0 && r != -EINTR)
			return r;
	}
	return 0;
}

int
io_engine_run_one(struct io_engine *e, struct io_req *req)
{
	int r;

	io_engine_queue(e, req);
	r = io_engine_drain(e);
	/* After a successful drain every request, req included, has finished
	 * and io_res holds its result. */
	return r < 0 ? r : req->io_res;
}

const char *
io_engine_name(const struct io_engine *e)
{
	return e->ops->name;
}

static int
io_engine_create(const struct io_backend_ops *ops, unsigned depth, struct io_engine **ret)
{
	struct io_engine *e;
	int r;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->ops = ops;
	e->depth = depth;
	e->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->event_fd < 0) {
		r = -errno;
		goto err;
	}
	r = ops->init(e, depth);
	if (r < 0)
		goto err;
	*ret = e;
	return 0;
err:
	if (e->event_fd >= 0)
		close(e->event_fd);
	free(e);
	return r;
}

#if HAVE_LIBURING
/* io_uring is refused by seccomp (EPERM/ENOSYS), by io_uring_disabled
 * (EPERM), by an old kernel (ENOSYS/EINVAL) or by RLIMIT_MEMLOCK (ENOMEM);
 * libaio still works in all of those. */
static bool
io_uring_err_is_fallback(int r)
{
	return r == -EPERM || r == -ENOSYS || r == -ENOMEM || r == -EACCES || r == -EINVAL;
}
#endif

/* uring; aio where io_uring is refused; sync only when neither is compiled
 * in. With io_uring refused and no libaio, its error is returned: silently
 * running a daemon on blocking I/O would be worse. */
static int
io_engine_new_auto(unsigned depth, struct io_engine **ret)
{
#if HAVE_LIBURING
	int r = io_engine_create(&io_uring_ops, depth, ret);

	if (r >= 0 || !io_uring_err_is_fallback(r) || !HAVE_LIBAIO)
		return r;
	log_debug("io: io_uring unavailable (error %d), using aio", r);
#endif
#if HAVE_LIBURING || HAVE_LIBAIO
	return io_engine_create(&io_aio_ops, depth, ret);
#else
	return io_engine_create(&io_sync_ops, depth, ret);
#endif
}

int
io_engine_new(const char *name, unsigned depth, struct io_engine **ret)
{
	static const struct io_backend_ops *const backends[] = {
	    &io_uring_ops,
	    &io_aio_ops,
	    &io_sync_ops,
	    &io_fault_ops,
	};

	if (!name || !ret || depth == 0 || depth > IO_DEPTH_MAX)
		return -EINVAL;
	if (strcmp(name, "auto") == 0)
		return io_engine_new_auto(depth, ret);
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (strcmp(name, backends[i]->name) == 0)
			return io_engine_create(backends[i], depth, ret);
	}
	return -EINVAL;
}

void
io_engine_free(struct io_engine *e)
{
	struct io_req *req;

	if (!e)
		return;
	/* Requests not handed to the backend yet are cancelled; those in
	 * flight own their buffers until the kernel is done with them, so wait
	 * for them. Every callback still runs so owners can free buffers. */
	e->is_closing = true;
	for (;;) {
		while ((req = e->queue_head)) {
			e->queue_head = req->io_next;
			e->nqueued--;
			io_engine_finish(e, req, -ECANCELED);
		}
		e->queue_tail = NULL;
		if (e->ninflight) {
			int r = e->ops->reap(e, true);

			if (r < 0 && r != -EINTR) {
				/* XXX: the backend is broken; its fini tears
				 * down the ring/context, which cancels what
				 * the kernel still holds. */
				log_debug("io %s: free: error %d", e->ops->name, r);
				break;
			}
		}
		io_engine_run_done(e);
		if (!e->ninflight && !e->nqueued && !e->ndone)
			break;
	}
	e->ops->fini(e);
	close(e->event_fd);
	free(e);
}
