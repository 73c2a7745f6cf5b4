/*
 * Private to src/io/: the engine struct shared by the core (io.c) and the
 * backends (io_sync.c, io_uring.c, io_aio.c, io_fault.c).
 *
 * A request moves through three lists/counts, all touched only by the thread
 * that owns the engine:
 *
 *   io_engine_queue() -> queue (nqueued)
 *        backend submit: io_engine_pop_queued() -> in flight (ninflight)
 *        short transfer / backend full: io_engine_requeue() -> back to queue
 *        io_engine_complete() -> done list (ndone)
 *   io_engine_reap() -> callback
 *
 * While a READ/WRITE request is queued or in flight, req->io_res holds the
 * bytes already transferred, so a backend can resubmit only the remainder of
 * a short transfer. Once the request is on the done list it holds the result.
 */
#ifndef JRBD_IO_INTERNAL_H
#define JRBD_IO_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "io/io.h"

/* Upper bound on io_engine_new()'s depth: it sizes a ring / an AIO context and
 * per-request arrays, and io_uring refuses more than 32768 SQ entries anyway. */
#define IO_DEPTH_MAX 4096u

struct io_engine;

/*
 * A backend. Every function runs on the engine's thread.
 *   init:   sets up e->backend for at most `depth` requests in flight.
 *           -ENOSYS when the backend isn't compiled in.
 *   submit: takes requests with io_engine_pop_queued() (which enforces the
 *           depth) and starts them; a request the backend can't take right now
 *           goes back with io_engine_requeue(). Requests finished at submit time
 *           go through io_engine_complete(). Returns how many it started or
 *           finished, or -errno when the backend itself is broken.
 *   reap:   moves finished requests to the done list with io_engine_complete()
 *           (or io_engine_requeue() to resubmit a short transfer's remainder).
 *           With wait, blocks until at least one of its in-flight requests
 *           finishes, if any is in flight. Returns >= 0 or -errno.
 *   fini:   releases e->backend; all requests have finished by then.
 *   has_completions: optional; false only when no in-flight request has
 *           finished, known without a syscall.
 */
struct io_backend_ops {
	const char *name;
	int (*init)(struct io_engine *e, unsigned depth);
	int (*submit)(struct io_engine *e);
	int (*reap)(struct io_engine *e, bool wait);
	void (*fini)(struct io_engine *e);
	bool (*has_completions)(struct io_engine *e);
};

struct io_engine {
	const struct io_backend_ops *ops;
	void *backend;   /* owned by ops: allocated in init, freed in fini */
	unsigned depth;  /* max requests in flight in the backend */
	int event_fd;    /* eventfd, owned; the kernel or io_engine_signal() bumps it */
	bool is_closing; /* io_engine_free() running: new requests get -ECANCELED */
	/* Queued, not handed to the backend yet; FIFO through io_req.io_next. */
	struct io_req *queue_head;
	struct io_req *queue_tail;
	unsigned nqueued;
	unsigned ninflight; /* owned by the backend (kernel or being executed) */
	/* Finished, callback not run yet; FIFO through io_req.io_next. */
	struct io_req *done_head;
	struct io_req *done_tail;
	unsigned ndone;
};

extern const struct io_backend_ops io_sync_ops;
extern const struct io_backend_ops io_uring_ops;
extern const struct io_backend_ops io_aio_ops;
extern const struct io_backend_ops io_fault_ops;

/* Takes the oldest queued request and counts it in flight; NULL when the queue
 * is empty or `depth` requests are already in flight. */
struct io_req *io_engine_pop_queued(struct io_engine *e);
/* Puts an in-flight request back at the head of the queue (keeping io_res, the
 * progress so far), e.g. when the backend is full or a transfer was short. */
void io_engine_requeue(struct io_engine *e, struct io_req *req);
/* Finishes an in-flight request with res (final byte count, 0, or -errno); a
 * READ/WRITE byte count other than len becomes -EIO. Its callback runs from the
 * next io_engine_reap(). Does not signal the eventfd. */
void io_engine_complete(struct io_engine *e, struct io_req *req, int res);
/* Makes the eventfd readable, for completions the kernel didn't signal. */
void io_engine_signal(struct io_engine *e);
/*
 * A READ/WRITE in flight transferred `n` more bytes (n >= 0, from the kernel):
 * completes it when it's whole, when nothing moved or when a read hit the end
 * of a regular file (both -EIO), and otherwise requeues it so the backend
 * submits the remaining bytes.
 */
void io_engine_progress(struct io_engine *e, struct io_req *req, int n);

/* Runs req synchronously (pread/pwritev2/fdatasync/fallocate, retrying short
 * transfers and EINTR); returns the result io_engine_complete() expects. */
int io_sync_execute(const struct io_req *req);

#endif
