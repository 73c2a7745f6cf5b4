/*
 * The I/O engine: asynchronous reads, writes, fsyncs and fallocates on files
 * and block devices, behind swappable backends.
 *
 * Backends:
 *   uring  - io_uring via liburing (default). One ring per engine.
 *   aio    - Linux native AIO via libaio (fallback where io_uring is disabled).
 *            fsync and fallocate are done synchronously at submit time,
 *            because most filesystems don't implement IOCB_CMD_FDSYNC.
 *   sync   - pread/pwrite at submit time; the reference the tests compare with.
 *   fault  - test-only: wraps sync, keeps every write that isn't durable yet in
 *            memory until an fsync (or an RWF_DSYNC write) makes it durable;
 *            io_fault_crash() then drops, keeps or tears each pending write to
 *            simulate power loss.
 * A backend that isn't compiled in still exists; io_engine_new() returns -ENOSYS.
 *
 * Threading: an engine belongs to one thread (the event loop that owns it).
 * Completion callbacks run from io_engine_reap() on that thread and may queue
 * new requests.
 *
 * Ownership: a buffer handed to io_engine_queue() belongs to the kernel until
 * its completion callback runs. No error path may free or reuse it earlier.
 */
#ifndef JRBD_IO_H
#define JRBD_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct io_engine;
struct io_req;

enum io_op {
	IO_OP_READ = 0,
	IO_OP_WRITE,
	IO_OP_FSYNC,     /* fdatasync(fd) */
	IO_OP_FALLOCATE, /* fallocate(fd, mode, offset, len) */
};

/* res: bytes transferred (must equal len for reads/writes, a short transfer is
 * reported as -EIO by the engine), 0 for fsync/fallocate, or -errno. */
typedef void io_done_fn(struct io_req *req, int res);

/*
 * One request. Caller-owned storage; must stay valid until `done` runs.
 * The first field is the op so a completion can be dispatched on it.
 */
struct io_req {
	enum io_op op;
	int fd;
	void *buf;       /* READ/WRITE: buffer (aligned for O_DIRECT fds) */
	uint32_t len;    /* READ/WRITE: bytes; FALLOCATE: see len64 */
	uint64_t offset; /* bytes */
	uint64_t len64;  /* FALLOCATE: length in bytes */
	int rw_flags;    /* WRITE: RWF_DSYNC to make the write durable on completion */
	int falloc_mode; /* FALLOCATE: FALLOC_FL_* */
	io_done_fn *done;
	void *arg; /* for the caller */
	/* Private to the engine. */
	struct io_req *io_next;
	int io_res;
};

/* Creates an engine. name: "uring", "aio", "sync", "fault" or "auto" (uring,
 * then aio if io_uring_setup fails with EPERM/ENOSYS). depth: max requests the
 * backend has in flight; more may be queued and wait in the engine. */
int io_engine_new(const char *name, unsigned depth, struct io_engine **ret);
void io_engine_free(struct io_engine *e); /* NULL is a no-op; waits for in-flight requests */
const char *io_engine_name(const struct io_engine *e);

/* Queues req; it is handed to the kernel by the next io_engine_submit() (or
 * earlier if the engine's own queue is full). Never fails: errors are delivered
 * through req->done. */
void io_engine_queue(struct io_engine *e, struct io_req *req);
/* Hands every queued request to the backend. Called once per loop iteration. */
int io_engine_submit(struct io_engine *e);
/* A file descriptor that is readable when completions may be waiting (an
 * eventfd); put it in epoll. */
int io_engine_event_fd(const struct io_engine *e);
/* Runs completion callbacks for everything finished, without blocking.
 * Returns the number of completions run. */
int io_engine_reap(struct io_engine *e);
/* The same, for a hook that runs every loop iteration: returns 0 at once,
 * without a syscall, when the backend can tell without one that nothing
 * has finished (io_uring: its completion ring is empty). */
int io_engine_reap_ready(struct io_engine *e);
/* Requests queued or in flight. */
unsigned io_engine_pending(const struct io_engine *e);
/* Submits and waits until nothing is queued or in flight (tools, tests, shutdown). */
int io_engine_drain(struct io_engine *e);

/* Convenience for blocking callers (tools, recovery): queue one request and
 * drain. Returns the request's result. */
int io_engine_run_one(struct io_engine *e, struct io_req *req);

/*
 * Fault backend controls (test-only). With the fault engine, the file bytes on
 * disk are the "durable" image; writes not yet durable live in memory and are
 * visible to reads through the engine.
 */
enum io_fault_mode {
	IO_FAULT_DROP_ALL = 0, /* every pending write is lost */
	IO_FAULT_KEEP_ALL,     /* every pending write lands (like kill -9) */
	IO_FAULT_RANDOM,       /* each pending write: dropped, kept or torn, in random order */
};
/* Simulates power loss: resolves every non-durable write per mode using seed,
 * and forgets them. Returns the number of pending writes that were affected. */
int io_fault_crash(struct io_engine *e, enum io_fault_mode mode, uint64_t seed);
/* Number of writes not yet durable. */
unsigned io_fault_pending(const struct io_engine *e);

#endif
