/*
 * I/O engine tests. The `io` suite runs every behaviour on each backend
 * (sync, uring, aio, fault); uring is skipped where io_uring_setup is refused
 * (EPERM/ENOSYS in containers), aio where libaio isn't compiled in. The
 * `io_fault` suite checks the crash simulation of the fault backend.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/util.h"
#include "io/io.h"
#include "leak_check.h"

#define BS 4096u

static const char *const engine_names[] = {"sync", "uring", "aio", "fault"};
static char *tmpdir;

static void
setup(void)
{
	tmpdir = test_tmpdir();
	cr_assert(tmpdir != NULL, "test_tmpdir");
}

static void
tmpdir_remove(void)
{
	if (tmpdir) {
		test_rm_rf(tmpdir);
		free(tmpdir);
		tmpdir = NULL;
	}
}

static void
teardown(void)
{
	tmpdir_remove();
	test_leak_check();
}

/* cr_skip_test() ends the test without running .fini, so clean up first. */
#define SKIP(...)                                                                                  \
	do {                                                                                       \
		tmpdir_remove();                                                                   \
		cr_skip_test(__VA_ARGS__);                                                         \
	} while (0)

TestSuite(io, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(io_fault, .init = setup, .fini = teardown, .timeout = 60);

/* Creates the engine, or skips the test when the backend can't run here. */
static struct io_engine *
engine_open(const char *name, unsigned depth)
{
	struct io_engine *e = NULL;
	int r = io_engine_new(name, depth, &e);

	if (r == -ENOSYS && (!strcmp(name, "uring") || !strcmp(name, "aio")))
		SKIP("%s backend not compiled in", name);
	if (!strcmp(name, "uring") && r == -EPERM)
		SKIP("io_uring_setup refused: %s", strerror(-r));
	if (!strcmp(name, "aio") && r == -EAGAIN)
		SKIP("aio-max-nr exhausted");
	cr_assert(eq(int, r, 0), "io_engine_new(%s): %s", name, strerror(-r));
	cr_assert(eq(str, (char *)io_engine_name(e), (char *)name));
	return e;
}

static int
file_open(const char *name, int flags)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | flags, 0600);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	return fd;
}

static uint8_t *
buf_new(size_t len, int fill)
{
	uint8_t *buf = util_aligned_alloc(BS, len);

	cr_assert(buf != NULL);
	memset(buf, fill, len);
	return buf;
}

/* A byte pattern that differs per offset and per seed. */
static void
pattern(uint8_t *buf, size_t len, uint64_t offset, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)((offset + i) * 31 + seed * 7 + ((offset + i) >> 9));
}

static int
run(struct io_engine *e, enum io_op op, int fd, void *buf, uint32_t len, uint64_t offset,
    int rw_flags)
{
	struct io_req req = {
	    .op = op,
	    .fd = fd,
	    .buf = buf,
	    .len = len,
	    .offset = offset,
	    .rw_flags = rw_flags,
	};

	return io_engine_run_one(e, &req);
}

static int
run_falloc(struct io_engine *e, int fd, int mode, uint64_t offset, uint64_t len)
{
	struct io_req req = {
	    .op = IO_OP_FALLOCATE,
	    .fd = fd,
	    .offset = offset,
	    .len64 = len,
	    .falloc_mode = mode,
	};

	return io_engine_run_one(e, &req);
}

struct counter {
	int calls;
	int res;
};

static void
count_done(struct io_req *req, int res)
{
	struct counter *c = req->arg;

	c->calls++;
	c->res = res;
}

ParameterizedTestParameters(io, roundtrip_odirect)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, roundtrip_odirect)
{
	const char *name = engine_names[*idx];
	struct io_engine *e = engine_open(name, 8);
	int fd = file_open("data", O_DIRECT);
	const uint32_t len = 16 * BS;
	uint8_t *wbuf = buf_new(len, 0), *rbuf = buf_new(len, 0xee);

	pattern(wbuf, len, BS, 1);
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, wbuf, len, BS, 0), (int)len));
	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, len, BS, 0), (int)len));
	cr_assert(eq(int, memcmp(wbuf, rbuf, len), 0));
	cr_assert(eq(int, run(e, IO_OP_FSYNC, fd, NULL, 0, 0, 0), 0));
	cr_assert(eq(u32, io_engine_pending(e), 0));

	/* Durable now, so visible to a plain pread too (the fault engine's
	 * fsync wrote its pending copy). */
	memset(rbuf, 0, len);
	cr_assert(eq(int, util_pread_full(fd, rbuf, len, BS), 0));
	cr_assert(eq(int, memcmp(wbuf, rbuf, len), 0));

	io_engine_free(e);
	close(fd);
	free(wbuf);
	free(rbuf);
}

ParameterizedTestParameters(io, dsync_write_is_on_disk)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, dsync_write_is_on_disk)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *wbuf = buf_new(2 * BS, 0), *rbuf = buf_new(2 * BS, 0);

	pattern(wbuf, 2 * BS, 0, 2);
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, wbuf, 2 * BS, 0, RWF_DSYNC), (int)(2 * BS)));
	cr_assert(eq(int, util_pread_full(fd, rbuf, 2 * BS, 0), 0));
	cr_assert(eq(int, memcmp(wbuf, rbuf, 2 * BS), 0));
	if (!strcmp(engine_names[*idx], "fault"))
		cr_assert(eq(u32, io_fault_pending(e), 0));

	io_engine_free(e);
	close(fd);
	free(wbuf);
	free(rbuf);
}

ParameterizedTestParameters(io, punch_hole_reads_zeros)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, punch_hole_reads_zeros)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *buf = buf_new(4 * BS, 0xaa), *zero = buf_new(BS, 0);
	int r;

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, buf, 4 * BS, 0, 0), (int)(4 * BS)));
	r = run_falloc(e, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BS, BS);
	if (r == -EOPNOTSUPP)
		SKIP("filesystem can't punch holes");
	cr_assert(eq(int, r, 0));
	cr_assert(eq(int, run(e, IO_OP_READ, fd, buf, 4 * BS, 0, 0), (int)(4 * BS)));
	cr_assert(eq(int, memcmp(buf + BS, zero, BS), 0), "punched range reads zeros");
	cr_assert(eq(u8, buf[0], 0xaa));
	cr_assert(eq(u8, buf[2 * BS], 0xaa));
	cr_assert(eq(u8, buf[4 * BS - 1], 0xaa));

	io_engine_free(e);
	close(fd);
	free(buf);
	free(zero);
}

ParameterizedTestParameters(io, fallocate_extends_file)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, fallocate_extends_file)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", 0);
	struct stat st;

	cr_assert(eq(int, run_falloc(e, fd, 0, 0, 1 << 20), 0));
	cr_assert(eq(int, fstat(fd, &st), 0));
	cr_assert(eq(i64, (int64_t)st.st_size, 1 << 20));

	io_engine_free(e);
	close(fd);
}

#define MANY 100

ParameterizedTestParameters(io, many_requests_beyond_depth)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, many_requests_beyond_depth)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *buf = buf_new(MANY * BS, 0), *rbuf = buf_new(MANY * BS, 0);
	struct io_req reqs[MANY];
	struct counter c[MANY];

	pattern(buf, MANY * BS, 0, 3);
	memset(c, 0, sizeof(c));
	for (int i = 0; i < MANY; i++) {
		reqs[i] = (struct io_req){
		    .op = IO_OP_WRITE,
		    .fd = fd,
		    .buf = buf + (size_t)i * BS,
		    .len = BS,
		    .offset = (uint64_t)i * BS,
		    .done = count_done,
		    .arg = &c[i],
		};
		io_engine_queue(e, &reqs[i]);
	}
	cr_assert(eq(u32, io_engine_pending(e), MANY));
	cr_assert(eq(int, io_engine_drain(e), 0));
	cr_assert(eq(u32, io_engine_pending(e), 0));
	for (int i = 0; i < MANY; i++) {
		cr_assert(eq(int, c[i].calls, 1), "request %d", i);
		cr_assert(eq(int, c[i].res, (int)BS), "request %d", i);
	}
	/* Read back with another 100 queued at once. */
	memset(c, 0, sizeof(c));
	for (int i = 0; i < MANY; i++) {
		reqs[i].op = IO_OP_READ;
		reqs[i].buf = rbuf + (size_t)i * BS;
		io_engine_queue(e, &reqs[i]);
	}
	cr_assert(eq(int, io_engine_drain(e), 0));
	for (int i = 0; i < MANY; i++)
		cr_assert(eq(int, c[i].res, (int)BS), "read %d", i);
	cr_assert(eq(int, memcmp(buf, rbuf, MANY * BS), 0));

	io_engine_free(e);
	close(fd);
	free(buf);
	free(rbuf);
}

/* Each completion queues the next write until `left` runs out. */
struct chain {
	struct io_engine *e;
	struct io_req req;
	int left;
	int completed;
	int last_res;
};

static void
chain_done(struct io_req *req, int res)
{
	struct chain *ch = req->arg;

	ch->completed++;
	ch->last_res = res;
	if (res < 0 || --ch->left == 0)
		return;
	req->offset += BS;
	io_engine_queue(ch->e, req);
}

ParameterizedTestParameters(io, callback_queues_more)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, callback_queues_more)
{
	struct io_engine *e = engine_open(engine_names[*idx], 2);
	int fd = file_open("data", O_DIRECT);
	uint8_t *buf = buf_new(BS, 0x5a), *rbuf = buf_new(10 * BS, 0);
	struct chain ch = {.e = e, .left = 10};

	ch.req = (struct io_req){
	    .op = IO_OP_WRITE,
	    .fd = fd,
	    .buf = buf,
	    .len = BS,
	    .done = chain_done,
	    .arg = &ch,
	};
	io_engine_queue(e, &ch.req);
	cr_assert(eq(int, io_engine_drain(e), 0));
	cr_assert(eq(int, ch.completed, 10));
	cr_assert(eq(int, ch.last_res, (int)BS));
	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, 10 * BS, 0, 0), (int)(10 * BS)));
	for (size_t i = 0; i < 10 * BS; i++)
		cr_assert(eq(u8, rbuf[i], 0x5a), "byte %zu", i);

	io_engine_free(e);
	close(fd);
	free(buf);
	free(rbuf);
}

ParameterizedTestParameters(io, read_past_eof_is_eio)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, read_past_eof_is_eio)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", O_DIRECT);
	int bfd = file_open("data", 0);
	uint8_t *buf = buf_new(2 * BS, 0x11);

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, buf, BS, 0, RWF_DSYNC), (int)BS));
	/* Straddling EOF: short read. */
	cr_assert(eq(int, run(e, IO_OP_READ, fd, buf, 2 * BS, 0, 0), -EIO));
	/* Entirely past EOF. */
	cr_assert(eq(int, run(e, IO_OP_READ, fd, buf, BS, 4 * BS, 0), -EIO));
	/* Buffered, unaligned EOF. */
	cr_assert(eq(int, ftruncate(bfd, 1000), 0));
	cr_assert(eq(int, run(e, IO_OP_READ, bfd, buf, 1001, 0, 0), -EIO));
	cr_assert(eq(int, run(e, IO_OP_READ, bfd, buf, 1000, 0, 0), 1000));

	io_engine_free(e);
	close(fd);
	close(bfd);
	free(buf);
}

ParameterizedTestParameters(io, bad_fd_is_ebadf)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, bad_fd_is_ebadf)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", 0);
	uint8_t *buf = buf_new(BS, 0);
	struct counter c[3] = {{0}};
	struct io_req reqs[3] = {
	    {.op = IO_OP_READ, .buf = buf, .len = BS},
	    {.op = IO_OP_WRITE, .buf = buf, .len = BS},
	    {.op = IO_OP_FSYNC},
	};

	close(fd); /* a closed fd is a bad one */
	for (int i = 0; i < 3; i++) {
		reqs[i].fd = fd;
		reqs[i].done = count_done;
		reqs[i].arg = &c[i];
		io_engine_queue(e, &reqs[i]);
	}
	cr_assert(eq(int, io_engine_drain(e), 0));
	for (int i = 0; i < 3; i++) {
		cr_assert(eq(int, c[i].calls, 1));
		cr_assert(eq(int, c[i].res, -EBADF), "op %d: %d", i, c[i].res);
	}

	io_engine_free(e);
	free(buf);
}

/* What an event loop does: wait on the eventfd, then reap (with reap:
 * io_engine_reap, or io_engine_reap_ready as the daemon's hook does).
 * Returns the callbacks run. */
static int
wait_and_reap(struct io_engine *e, int (*reap)(struct io_engine *e))
{
	struct pollfd pfd = {.fd = io_engine_event_fd(e), .events = POLLIN};
	int ran = 0;

	for (int i = 0; io_engine_pending(e); i++) {
		int r;

		cr_assert(lt(int, i, 1000), "still pending after %d reaps", i);
		cr_assert(eq(int, poll(&pfd, 1, 10000), 1), "eventfd readable");
		r = reap(e);
		cr_assert(ge(int, r, 0));
		ran += r;
	}
	return ran;
}

ParameterizedTestParameters(io, eventfd_signals_completions)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, eventfd_signals_completions)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *buf = buf_new(BS, 0x42);
	struct counter c = {0};
	struct io_req req = {
	    .op = IO_OP_WRITE,
	    .fd = fd,
	    .buf = buf,
	    .len = BS,
	    .done = count_done,
	    .arg = &c,
	};
	struct pollfd pfd = {.fd = io_engine_event_fd(e), .events = POLLIN};

	cr_assert(eq(int, poll(&pfd, 1, 0), 0), "idle engine: eventfd not readable");
	io_engine_queue(e, &req);
	cr_assert(eq(int, c.calls, 0), "no callback from queue");
	cr_assert(ge(int, io_engine_submit(e), 0));
	cr_assert(eq(int, wait_and_reap(e, io_engine_reap), 1));
	cr_assert(eq(int, c.calls, 1));
	cr_assert(eq(int, c.res, (int)BS));
	cr_assert(eq(int, poll(&pfd, 1, 0), 0), "reaped: eventfd cleared");

	/* The same through io_engine_reap_ready: a backend without a cheap
	 * check reaps as io_engine_reap does, io_uring finds its ring
	 * non-empty once the eventfd fired. */
	io_engine_queue(e, &req);
	cr_assert(ge(int, io_engine_submit(e), 0));
	cr_assert(eq(int, wait_and_reap(e, io_engine_reap_ready), 1));
	cr_assert(eq(int, c.calls, 2));
	cr_assert(eq(int, c.res, (int)BS));
	cr_assert(eq(int, poll(&pfd, 1, 0), 0), "reaped: eventfd cleared");

	io_engine_free(e);
	close(fd);
	free(buf);
}

ParameterizedTestParameters(io, invalid_request_fails_through_callback)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, invalid_request_fails_through_callback)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	struct counter c = {0};
	struct io_req req = {
	    .op = IO_OP_READ,
	    .fd = 0,
	    .buf = NULL,
	    .len = BS,
	    .done = count_done,
	    .arg = &c,
	};
	struct pollfd pfd = {.fd = io_engine_event_fd(e), .events = POLLIN};

	io_engine_queue(e, &req);
	cr_assert(eq(int, c.calls, 0), "no callback from queue");
	cr_assert(eq(int, poll(&pfd, 1, 0), 1));
	cr_assert(eq(int, io_engine_reap(e), 1));
	cr_assert(eq(int, c.res, -EINVAL));

	req = (struct io_req){.op = IO_OP_FALLOCATE,
	                      .fd = 0,
	                      .offset = UINT64_MAX - 1,
	                      .len64 = 10,
	                      .done = count_done,
	                      .arg = &c};
	cr_assert(eq(int, io_engine_run_one(e, &req), -EINVAL));
	cr_assert(eq(int, c.calls, 2));

	io_engine_free(e);
}

ParameterizedTestParameters(io, free_cancels_queued)
{
	static int idx[] = {0, 1, 2, 3};

	return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *idx, io, free_cancels_queued)
{
	struct io_engine *e = engine_open(engine_names[*idx], 4);
	int fd = file_open("data", 0);
	uint8_t *buf = buf_new(BS, 0);
	struct counter c = {0};
	struct io_req req = {
	    .op = IO_OP_WRITE,
	    .fd = fd,
	    .buf = buf,
	    .len = BS,
	    .done = count_done,
	    .arg = &c,
	};

	io_engine_queue(e, &req);
	io_engine_free(e);
	cr_assert(eq(int, c.calls, 1), "callback ran so the owner can free the buffer");
	cr_assert(eq(int, c.res, -ECANCELED));
	close(fd);
	free(buf);
}

/* io_uring reads a pipe with whatever is there; the engine must resubmit the
 * remainder rather than report a short read. */
Test(io, uring_short_read_resubmits_remainder)
{
	struct io_engine *e = engine_open("uring", 4);
	char wbuf[200], rbuf[200];
	struct counter c = {0};
	struct io_req req = {
	    .op = IO_OP_READ,
	    .buf = rbuf,
	    .len = sizeof(rbuf),
	    .done = count_done,
	    .arg = &c,
	};
	struct pollfd pfd = {.fd = io_engine_event_fd(e), .events = POLLIN};
	int p[2];

	cr_assert(eq(int, pipe2(p, O_CLOEXEC), 0));
	for (size_t i = 0; i < sizeof(wbuf); i++)
		wbuf[i] = (char)i;
	cr_assert(eq(int, (int)write(p[1], wbuf, 100), 100));
	req.fd = p[0];
	io_engine_queue(e, &req);
	cr_assert(ge(int, io_engine_submit(e), 0));
	cr_assert(eq(int, poll(&pfd, 1, 10000), 1));
	cr_assert(eq(int, io_engine_reap(e), 0), "short: resubmitted, no callback");
	cr_assert(eq(u32, io_engine_pending(e), 1));
	cr_assert(ge(int, io_engine_submit(e), 0));
	cr_assert(eq(int, (int)write(p[1], wbuf + 100, 100), 100));
	cr_assert(eq(int, io_engine_drain(e), 0));
	cr_assert(eq(int, c.calls, 1));
	cr_assert(eq(int, c.res, 200));
	cr_assert(eq(int, memcmp(rbuf, wbuf, sizeof(rbuf)), 0));

	io_engine_free(e);
	close(p[0]);
	close(p[1]);
}

/* The loop hook's reap: with nothing finished it returns without touching
 * the eventfd (no read() per loop iteration); once a completion is in the
 * ring it runs the callback and clears the eventfd like io_engine_reap. */
Test(io, uring_reap_ready_skips_when_nothing_finished)
{
	struct io_engine *e = engine_open("uring", 4);
	char wbuf[64] = {1, 2, 3}, rbuf[64];
	struct counter c = {0};
	struct io_req req = {
	    .op = IO_OP_READ,
	    .buf = rbuf,
	    .len = sizeof(rbuf),
	    .done = count_done,
	    .arg = &c,
	};
	int efd = io_engine_event_fd(e);
	struct pollfd pfd = {.fd = efd, .events = POLLIN};
	uint64_t one = 1, v;
	int p[2];

	cr_assert(eq(int, pipe2(p, O_CLOEXEC), 0));
	req.fd = p[0];
	io_engine_queue(e, &req);
	cr_assert(ge(int, io_engine_submit(e), 0));
	/* In flight, nothing finished: a signal left on the eventfd stays. */
	cr_assert(eq(int, (int)write(efd, &one, sizeof(one)), (int)sizeof(one)));
	cr_assert(eq(int, io_engine_reap_ready(e), 0));
	cr_assert(eq(int, poll(&pfd, 1, 0), 1), "reap_ready read the eventfd with nothing to reap");
	cr_assert(eq(int, (int)read(efd, &v, sizeof(v)), (int)sizeof(v)));
	cr_assert(eq(int, c.calls, 0));

	/* Finished: the callback runs and the eventfd is cleared. */
	cr_assert(eq(int, (int)write(p[1], wbuf, sizeof(wbuf)), (int)sizeof(wbuf)));
	cr_assert(eq(int, poll(&pfd, 1, 10000), 1));
	cr_assert(eq(int, io_engine_reap_ready(e), 1));
	cr_assert(eq(int, c.calls, 1));
	cr_assert(eq(int, c.res, (int)sizeof(wbuf)));
	cr_assert(eq(int, poll(&pfd, 1, 0), 0), "eventfd still readable after the reap");
	cr_assert(eq(u32, io_engine_pending(e), 0));

	io_engine_free(e);
	close(p[0]);
	close(p[1]);
}

Test(io, new_rejects_bad_arguments)
{
	struct io_engine *e = NULL;

	cr_assert(eq(int, io_engine_new("nope", 4, &e), -EINVAL));
	cr_assert(eq(int, io_engine_new("sync", 0, &e), -EINVAL));
	cr_assert(eq(int, io_engine_new("sync", 1u << 30, &e), -EINVAL));
	cr_assert_null(e);
	io_engine_free(NULL);
	cr_assert(eq(int, io_fault_crash(NULL, IO_FAULT_DROP_ALL, 0), -EINVAL));
}

Test(io, auto_picks_a_kernel_backend)
{
	struct io_engine *e = NULL;
	int r = io_engine_new("auto", 8, &e);

	cr_assert(eq(int, r, 0), "auto: %s", strerror(-r));
	cr_assert(strcmp(io_engine_name(e), "uring") == 0 ||
	          strcmp(io_engine_name(e), "aio") == 0 || strcmp(io_engine_name(e), "sync") == 0);
	cr_assert(eq(int, io_fault_crash(e, IO_FAULT_DROP_ALL, 0), -EINVAL));
	io_engine_free(e);
}

/* --- fault backend --- */

/* The bytes on disk, read around the engine. */
static void
disk_read(int fd, void *buf, size_t len, uint64_t offset)
{
	cr_assert(eq(int, util_pread_full(fd, buf, len, offset), 0));
}

Test(io_fault, pending_write_invisible_on_disk_visible_through_engine)
{
	struct io_engine *e = engine_open("fault", 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *old = buf_new(2 * BS, 0x01), *new = buf_new(BS, 0x02), *rbuf = buf_new(2 * BS, 0);

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, old, 2 * BS, 0, RWF_DSYNC), (int)(2 * BS)));
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, new, BS, BS, 0), (int)BS));
	cr_assert(eq(u32, io_fault_pending(e), 1));

	disk_read(fd, rbuf, 2 * BS, 0);
	cr_assert(eq(int, memcmp(rbuf, old, 2 * BS), 0), "not on disk yet");

	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, 2 * BS, 0, 0), (int)(2 * BS)));
	cr_assert(eq(int, memcmp(rbuf, old, BS), 0));
	cr_assert(eq(int, memcmp(rbuf + BS, new, BS), 0), "engine reads see it");

	/* Past the disk's EOF, as far as the pending write reaches. */
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, new, BS, 4 * BS, 0), (int)BS));
	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, BS, 3 * BS, 0), (int)BS));
	for (size_t i = 0; i < BS; i++)
		cr_assert(eq(u8, rbuf[i], 0), "gap reads as a hole");
	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, BS, 4 * BS, 0), (int)BS));
	cr_assert(eq(int, memcmp(rbuf, new, BS), 0));
	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, BS, 5 * BS, 0), -EIO));

	cr_assert(eq(int, io_fault_crash(e, IO_FAULT_DROP_ALL, 0), 2));
	io_engine_free(e);
	close(fd);
	free(old);
	free(new);
	free(rbuf);
}

Test(io_fault, fsync_makes_pending_durable)
{
	struct io_engine *e = engine_open("fault", 4);
	int fd = file_open("data", O_DIRECT);
	int fd2 = file_open("data", 0); /* same file, other fd */
	int other = file_open("other", 0);
	uint8_t *a = buf_new(BS, 0x0a), *b = buf_new(BS, 0x0b), *rbuf = buf_new(BS, 0);

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, a, BS, 0, 0), (int)BS));
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, b, BS, 0, 0), (int)BS)); /* newer wins */
	cr_assert(eq(int, run(e, IO_OP_WRITE, other, a, BS, 0, 0), (int)BS));
	cr_assert(eq(u32, io_fault_pending(e), 3));

	/* An fsync through another fd of the same file flushes its writes only. */
	cr_assert(eq(int, run(e, IO_OP_FSYNC, fd2, NULL, 0, 0, 0), 0));
	cr_assert(eq(u32, io_fault_pending(e), 1));
	disk_read(fd2, rbuf, BS, 0);
	cr_assert(eq(int, memcmp(rbuf, b, BS), 0));

	/* Survives a crash that drops everything pending. */
	cr_assert(eq(int, io_fault_crash(e, IO_FAULT_DROP_ALL, 0), 1));
	disk_read(fd, rbuf, BS, 0);
	cr_assert(eq(int, memcmp(rbuf, b, BS), 0));
	cr_assert(eq(int, run(e, IO_OP_READ, other, rbuf, BS, 0, 0), -EIO), "lost");

	io_engine_free(e);
	close(fd);
	close(fd2);
	close(other);
	free(a);
	free(b);
	free(rbuf);
}

Test(io_fault, drop_all_loses_keep_all_keeps)
{
	struct io_engine *e = engine_open("fault", 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *old = buf_new(4 * BS, 0x01), *new = buf_new(BS, 0x02), *rbuf = buf_new(4 * BS, 0);

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, old, 4 * BS, 0, RWF_DSYNC), (int)(4 * BS)));
	for (int i = 0; i < 4; i++)
		cr_assert(eq(int, run(e, IO_OP_WRITE, fd, new, BS, (uint64_t)i * BS, 0), (int)BS));
	cr_assert(eq(int, io_fault_crash(e, IO_FAULT_DROP_ALL, 0), 4));
	cr_assert(eq(u32, io_fault_pending(e), 0));
	disk_read(fd, rbuf, 4 * BS, 0);
	cr_assert(eq(int, memcmp(rbuf, old, 4 * BS), 0));
	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, 4 * BS, 0, 0), (int)(4 * BS)));
	cr_assert(eq(int, memcmp(rbuf, old, 4 * BS), 0), "engine forgot them too");

	for (int i = 0; i < 4; i++)
		cr_assert(eq(int, run(e, IO_OP_WRITE, fd, new, BS, (uint64_t)i * BS, 0), (int)BS));
	cr_assert(eq(int, io_fault_crash(e, IO_FAULT_KEEP_ALL, 0), 4));
	cr_assert(eq(u32, io_fault_pending(e), 0));
	disk_read(fd, rbuf, 4 * BS, 0);
	for (size_t i = 0; i < 4 * BS; i++)
		cr_assert(eq(u8, rbuf[i], 0x02));

	io_engine_free(e);
	close(fd);
	free(old);
	free(new);
	free(rbuf);
}

Test(io_fault, dsync_write_supersedes_older_pending)
{
	struct io_engine *e = engine_open("fault", 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *stale = buf_new(3 * BS, 0x0c), *fresh = buf_new(BS, 0x0f),
	        *rbuf = buf_new(3 * BS, 0);

	/* Pending over [0, 3 BS), then a durable write in the middle. */
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, stale, 3 * BS, 0, 0), (int)(3 * BS)));
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, fresh, BS, BS, RWF_DSYNC), (int)BS));
	cr_assert(eq(u32, io_fault_pending(e), 2), "split around the durable range");
	cr_assert(eq(int, run(e, IO_OP_READ, fd, rbuf, 3 * BS, 0, 0), (int)(3 * BS)));
	cr_assert(eq(u8, rbuf[0], 0x0c));
	cr_assert(eq(u8, rbuf[BS], 0x0f), "durable data not hidden by an older pending write");
	cr_assert(eq(u8, rbuf[2 * BS], 0x0c));

	cr_assert(eq(int, io_fault_crash(e, IO_FAULT_KEEP_ALL, 0), 2));
	disk_read(fd, rbuf, 3 * BS, 0);
	for (size_t i = BS; i < 2 * BS; i++)
		cr_assert(eq(u8, rbuf[i], 0x0f), "old bytes resurrected at %zu", i);
	cr_assert(eq(u8, rbuf[0], 0x0c));
	cr_assert(eq(u8, rbuf[3 * BS - 1], 0x0c));

	/* An exact overwrite leaves nothing pending. */
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, stale, BS, 0, 0), (int)BS));
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, fresh, BS, 0, RWF_DSYNC), (int)BS));
	cr_assert(eq(u32, io_fault_pending(e), 0));

	io_engine_free(e);
	close(fd);
	free(stale);
	free(fresh);
	free(rbuf);
}

Test(io_fault, punch_hole_trims_pending)
{
	struct io_engine *e = engine_open("fault", 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *buf = buf_new(2 * BS, 0x33), *rbuf = buf_new(2 * BS, 0xff);
	int r;

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, buf, 2 * BS, 0, RWF_DSYNC), (int)(2 * BS)));
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, buf, 2 * BS, 0, 0), (int)(2 * BS)));
	r = run_falloc(e, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, BS);
	if (r == -EOPNOTSUPP)
		SKIP("filesystem can't punch holes");
	cr_assert(eq(int, r, 0));
	cr_assert(eq(u32, io_fault_pending(e), 1));
	cr_assert(eq(int, io_fault_crash(e, IO_FAULT_KEEP_ALL, 0), 1));
	disk_read(fd, rbuf, 2 * BS, 0);
	cr_assert(eq(u8, rbuf[0], 0));
	cr_assert(eq(u8, rbuf[BS - 1], 0));
	cr_assert(eq(u8, rbuf[BS], 0x33));

	io_engine_free(e);
	close(fd);
	free(buf);
	free(rbuf);
}

Test(io_fault, free_lands_pending_like_a_clean_exit)
{
	struct io_engine *e = engine_open("fault", 4);
	int fd = file_open("data", 0);
	uint8_t *buf = buf_new(BS, 0x44), *rbuf = buf_new(BS, 0);

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, buf, BS, 0, 0), (int)BS));
	io_engine_free(e);
	disk_read(fd, rbuf, BS, 0);
	cr_assert(eq(int, memcmp(rbuf, buf, BS), 0));
	close(fd);
	free(buf);
	free(rbuf);
}

/*
 * After a random crash every 512-byte sector holds a whole version: the old
 * durable bytes or the bytes of one of the pending writes that covered it.
 * Writes start at odd sector offsets and overlap, so tears and reorderings
 * show up.
 */
#define RND_SECTORS 64u
#define RND_WRITES 6

Test(io_fault, random_crash_is_sector_granular)
{
	static const struct {
		uint64_t sector;
		uint32_t nsectors;
	} w[RND_WRITES] = {{0, 16}, {5, 20}, {30, 9}, {33, 31}, {1, 2}, {40, 10}};
	const size_t len = RND_SECTORS * 512;
	uint8_t *old = buf_new(len, 0), *disk = buf_new(len, 0);
	uint8_t *data[RND_WRITES];
	unsigned changed_total = 0, torn_or_mixed = 0;

	for (int i = 0; i < RND_WRITES; i++) {
		data[i] = buf_new(w[i].nsectors * 512, 0);
		memset(data[i], 0x10 + i, w[i].nsectors * 512);
	}
	memset(old, 0xee, len);
	for (uint64_t seed = 1; seed <= 40; seed++) {
		struct io_engine *e = engine_open("fault", 4);
		char name[32];
		int fd;
		unsigned changed = 0;

		snprintf(name, sizeof(name), "data%llu", (unsigned long long)seed);
		fd = file_open(name, 0);
		cr_assert(eq(int, util_pwrite_full(fd, old, len, 0), 0));
		for (int i = 0; i < RND_WRITES; i++)
			cr_assert(eq(int,
			             run(e, IO_OP_WRITE, fd, data[i], w[i].nsectors * 512,
			                 w[i].sector * 512, 0),
			             (int)(w[i].nsectors * 512)));
		cr_assert(eq(int, io_fault_crash(e, IO_FAULT_RANDOM, seed), RND_WRITES));
		cr_assert(eq(u32, io_fault_pending(e), 0));
		disk_read(fd, disk, len, 0);
		for (unsigned s = 0; s < RND_SECTORS; s++) {
			const uint8_t *sec = disk + s * 512;
			bool ok = false;

			for (size_t j = 1; j < 512; j++)
				cr_assert(eq(u8, sec[j], sec[0]), "seed %llu sector %u torn inside",
				          (unsigned long long)seed, s);
			if (sec[0] == 0xee)
				ok = true;
			for (int i = 0; i < RND_WRITES; i++) {
				if (s >= w[i].sector && s < w[i].sector + w[i].nsectors &&
				    sec[0] == 0x10 + i)
					ok = true;
			}
			cr_assert(ok, "seed %llu sector %u: byte 0x%02x from no write covering it",
			          (unsigned long long)seed, s, sec[0]);
			changed += sec[0] != 0xee;
		}
		/* A write that landed only in part shows up as a mix. */
		for (int i = 0; i < RND_WRITES; i++) {
			unsigned mine = 0;

			for (unsigned s = w[i].sector; s < w[i].sector + w[i].nsectors; s++)
				mine += disk[s * 512] == 0x10 + i;
			if (mine && mine < w[i].nsectors)
				torn_or_mixed++;
		}
		changed_total += changed;
		io_engine_free(e);
		close(fd);
	}
	cr_assert(gt(u32, changed_total, 0), "some seed kept something");
	cr_assert(gt(u32, torn_or_mixed, 0), "some seed tore or reordered a write");
	cr_assert(lt(u32, changed_total, 40 * RND_SECTORS), "some seed dropped something");
	for (int i = 0; i < RND_WRITES; i++)
		free(data[i]);
	free(old);
	free(disk);
}

Test(io_fault, random_crash_is_reproducible)
{
	const size_t len = 32 * 512;
	uint8_t *a = buf_new(len, 0), *b = buf_new(len, 0), *data = buf_new(len, 0x77);
	uint8_t *out[2] = {a, b};

	for (int round = 0; round < 2; round++) {
		struct io_engine *e = engine_open("fault", 4);
		int fd = file_open(round ? "b" : "a", 0);

		cr_assert(eq(int, ftruncate(fd, (off_t)len), 0));
		for (int i = 0; i < 8; i++)
			cr_assert(eq(
			    int, run(e, IO_OP_WRITE, fd, data, 4 * 512, (uint64_t)i * 4 * 512, 0),
			    4 * 512));
		cr_assert(eq(int, io_fault_crash(e, IO_FAULT_RANDOM, 12345), 8));
		disk_read(fd, out[round], len, 0);
		io_engine_free(e);
		close(fd);
	}
	cr_assert(eq(int, memcmp(a, b, len), 0), "same seed, same crash");
	free(a);
	free(b);
	free(data);
}

Test(io_fault, rejects_misaligned_odirect_write)
{
	struct io_engine *e = engine_open("fault", 4);
	int fd = file_open("data", O_DIRECT);
	uint8_t *buf = buf_new(2 * BS, 0);

	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, buf + 1, BS, 0, 0), -EINVAL));
	cr_assert(eq(int, run(e, IO_OP_WRITE, fd, buf, BS, 100, 0), -EINVAL));
	cr_assert(eq(u32, io_fault_pending(e), 0));
	io_engine_free(e);
	close(fd);
	free(buf);
}
