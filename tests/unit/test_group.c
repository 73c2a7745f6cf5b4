/* The group write pipeline, in-process with real engines: ordering of
 * overlapping writes, trims and zeroes, journal space reuse under load,
 * recovery, limits, difference tracking. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/loop.h"
#include "bitmap/diffmap.h"
#include "common/util.h"
#include "group/group.h"
#include "io/io.h"
#include "journal/journal.h"
#include "leak_check.h"

static char *dir;
static struct group_config cfg;
static struct loop *loop;
static struct io_engine *io;
static struct group *g;
static int completed;

static void
setup(void)
{
	char err[256] = "";

	dir = test_tmpdir();
	cr_assert(ne(ptr, dir, NULL));
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.name, sizeof(cfg.name), "g");
	cr_assert(asprintf(&cfg.journal_path, "%s/j.img", dir) > 0);
	cfg.journal_size = 16u << 20;
	cfg.nvolumes = 2;
	for (unsigned i = 0; i < 2; i++) {
		snprintf(cfg.volumes[i].name, sizeof(cfg.volumes[i].name), "v%u", i);
		cr_assert(asprintf(&cfg.volumes[i].path, "%s/v%u.img", dir, i) > 0);
		cfg.volumes[i].size = 8u << 20;
	}
	cr_assert(eq(int, group_create_storage(&cfg, err, sizeof(err)), 0), "%s", err);
	cr_assert(eq(int, loop_new(&loop), 0));
	cr_assert(eq(int, io_engine_new("auto", 64, &io), 0));
	cr_assert(eq(int, group_open(&cfg, loop, io, &g, err, sizeof(err)), 0), "%s", err);
	completed = 0;
}

static void
teardown(void)
{
	group_close(g);
	io_engine_free(io);
	loop_free(loop);
	group_config_fini(&cfg);
	test_rm_rf(dir);
	free(dir);
	test_leak_check();
}

TestSuite(group, .init = setup, .fini = teardown, .timeout = 120);

struct req {
	struct group_io io;
	int res;
	bool done;
};

static void
req_done(struct group_io *gio, int res)
{
	struct req *r = gio->arg;

	r->res = res;
	r->done = true;
	completed++;
}

static void
submit(struct req *r, enum group_io_op op, unsigned vol, uint64_t off, uint32_t len, void *buf,
       unsigned flags)
{
	memset(r, 0, sizeof(*r));
	r->io.op = op;
	r->io.vol = group_volume(g, vol);
	r->io.offset = off;
	r->io.len = len;
	r->io.buf = buf;
	r->io.flags = flags;
	r->io.done = req_done;
	r->io.arg = r;
	group_io_submit(g, &r->io);
}

static void
run_until(int n)
{
	for (int i = 0; i < 100000 && completed < n; i++) {
		loop_run_once(loop, 10);
		io_engine_reap(io);
	}
	cr_assert(ge(int, completed, n), "only %d of %d requests completed", completed, n);
}

static void
read_file(unsigned vol, uint64_t off, void *buf, size_t len)
{
	int fd = open(cfg.volumes[vol].path, O_RDONLY);

	cr_assert(ge(int, fd, 0));
	cr_assert(eq(int, util_pread_full(fd, buf, len, off), 0));
	close(fd);
}

Test(group, overlapping_writes_land_in_submission_order)
{
	enum { N = 48 };
	struct req *r = calloc(N, sizeof(*r));
	uint8_t *bufs = util_aligned_alloc(4096, (size_t)N * 8192), got[8192];

	/* All overlap the same 8 KiB; the last submitted must win. */
	for (int i = 0; i < N; i++) {
		memset(bufs + (size_t)i * 8192, i + 1, 8192);
		submit(&r[i], GROUP_IO_WRITE, 0, (uint64_t)(i % 2) * 4096, 8192,
		       bufs + (size_t)i * 8192, 0);
	}
	run_until(N);
	for (int i = 0; i < N; i++)
		cr_assert(eq(int, r[i].res, 0));
	read_file(0, 0, got, 8192);
	/* i = N-1 wrote [4096, 12288); i = N-2 wrote [0, 8192) before it. */
	cr_assert(eq(u8, got[0], N - 1));
	cr_assert(eq(u8, got[4096], N));
	free(r);
	free(bufs);
}

/* An early-acknowledged write: a read submitted the moment the host has its
 * answer must see the new data, although the volume write is still to come. */
static struct req early_read;
static uint8_t *early_buf;

static void
early_done(struct group_io *gio, int res)
{
	req_done(gio, res);
	submit(&early_read, GROUP_IO_READ, 0, 8192, 4096, early_buf, 0);
}

static void
early_release(struct group_io *gio, int res)
{
	(void)gio;
	(void)res;
	completed++;
}

Test(group, read_after_early_ack_sees_the_write)
{
	struct req w;
	uint8_t *buf = util_aligned_alloc(4096, 4096);

	early_buf = util_aligned_alloc(4096, 4096);
	memset(buf, 0x42, 4096);
	memset(early_buf, 0, 4096);
	memset(&w, 0, sizeof(w));
	w.io.op = GROUP_IO_WRITE;
	w.io.vol = group_volume(g, 0);
	w.io.offset = 8192;
	w.io.len = 4096;
	w.io.buf = buf;
	w.io.done = early_done;
	w.io.release = early_release;
	w.io.arg = &w;
	group_io_submit(g, &w.io);
	run_until(3); /* write done, write release, read done */
	cr_assert(eq(int, w.res, 0));
	cr_assert(early_read.done);
	cr_assert(eq(int, early_read.res, 0));
	for (int i = 0; i < 4096; i++)
		cr_assert(eq(u8, early_buf[i], 0x42), "byte %d", i);
	free(buf);
	free(early_buf);
}

Test(group, trim_and_zero_read_back_as_zero)
{
	struct req r[4];
	uint8_t *buf = util_aligned_alloc(4096, 65536), got[65536];

	memset(buf, 0xab, 65536);
	submit(&r[0], GROUP_IO_WRITE, 1, 0, 65536, buf, 0);
	run_until(1);
	submit(&r[1], GROUP_IO_TRIM, 1, 0, 16384, NULL, 0);
	submit(&r[2], GROUP_IO_ZERO, 1, 16384, 16384, NULL, GROUP_IO_NO_HOLE);
	submit(&r[3], GROUP_IO_ZERO, 1, 32768, 8192, NULL, GROUP_IO_FAST_ZERO);
	run_until(4);
	for (int i = 0; i < 4; i++)
		cr_assert(eq(int, r[i].res, 0));
	read_file(1, 0, got, sizeof(got));
	for (int i = 0; i < 40960; i++)
		cr_assert(eq(u8, got[i], 0), "byte %d", i);
	for (int i = 40960; i < 65536; i++)
		cr_assert(eq(u8, got[i], 0xab), "byte %d", i);
	free(buf);
}

Test(group, journal_space_is_reused_under_sustained_writes)
{
	/* 64 MiB through a 16 MiB journal: checkpoints must release space. */
	enum { QD = 16, LEN = 1 << 20 };
	struct req r[QD];
	uint8_t *buf = util_aligned_alloc(4096, LEN);
	struct group_stats st;
	int submitted = 0;

	memset(buf, 0x5c, LEN);
	memset(r, 0, sizeof(r));
	for (int i = 0; i < QD; i++)
		r[i].done = true;
	while (submitted < 64) {
		for (int i = 0; i < QD && submitted < 64; i++) {
			if (!r[i].done)
				continue;
			cr_assert(eq(int, r[i].res, 0));
			submit(&r[i], GROUP_IO_WRITE, submitted % 2,
			       (uint64_t)(submitted % 8) * LEN, LEN, buf, 0);
			submitted++;
		}
		loop_run_once(loop, 10);
		io_engine_reap(io);
	}
	run_until(64);
	/* The last writes may fill it; the next checkpoint frees it (bounded). */
	for (int i = 0; i < 500; i++) {
		group_get_stats(g, &st);
		if (st.journal_used < st.journal_size)
			break;
		loop_run_once(loop, 10);
		io_engine_reap(io);
	}
	group_get_stats(g, &st);
	cr_assert(ge(u64, st.journal_payload_bytes, 64ull << 20));
	cr_assert(lt(u64, st.journal_used, st.journal_size));
	cr_assert(not(st.failed));
	free(buf);
}

Test(group, rejects_out_of_range_and_oversized_requests)
{
	struct req r[3];
	uint8_t *buf = util_aligned_alloc(4096, 4096);
	uint32_t max = group_volume(g, 0)->max_request;

	cr_assert(ge(u32, max, 1u << 20));
	cr_assert(le(u32, max, GROUP_MAX_REQUEST));
	submit(&r[0], GROUP_IO_WRITE, 0, (8u << 20) - 100, 4096, buf, 0);
	submit(&r[1], GROUP_IO_READ, 0, UINT64_MAX - 10, 4096, buf, 0);
	submit(&r[2], GROUP_IO_READ, 0, 0, max + 1, buf, 0);
	run_until(3);
	for (int i = 0; i < 3; i++)
		cr_assert(eq(int, r[i].res, -EINVAL));
	free(buf);
}

Test(group, recovery_redoes_unapplied_records)
{
	struct req r;
	uint8_t *buf = util_aligned_alloc(4096, 4096), got[4096];
	struct group_stats st;
	char err[256] = "";
	int fd;

	memset(buf, 0x77, 4096);
	submit(&r, GROUP_IO_WRITE, 0, 4096 * 10, 4096, buf, 0);
	run_until(1);
	cr_assert(eq(int, r.res, 0));
	group_close(g);
	g = NULL;
	/* Undo the volume write behind the journal's back, as a lost page would. */
	fd = open(cfg.volumes[0].path, O_RDWR);
	memset(got, 0, sizeof(got));
	cr_assert(eq(int, util_pwrite_full(fd, got, 4096, 4096 * 10), 0));
	close(fd);
	/* A clean close checkpointed, so nothing is redone: the journal is empty. */
	cr_assert(eq(int, group_open(&cfg, loop, io, &g, err, sizeof(err)), 0), "%s", err);
	group_get_stats(g, &st);
	cr_assert(eq(u64, st.redone_records, 0));
	free(buf);
}

/* --- initial copy (BASE) and replay (secondary) --- */

/*
 * Random overlapping writes race with BASE reads of the same chunks. Whatever
 * seq a BASE record gets, its data must be exactly what the writes before it
 * in the sequence leave in the volume: the secondary applies records in seq
 * order, so anything else would leave it with stale bytes.
 */
Test(group, base_records_match_the_volume_at_their_seq)
{
	enum { NW = 400, CHUNK = 256 << 10, NB = 8, SPAN = 1 << 20 };
	struct req *w = calloc(NW, sizeof(*w)), b[NB];
	uint8_t *wbuf = util_aligned_alloc(4096, (size_t)NW * 8192);
	uint8_t *bbuf = util_aligned_alloc(4096, (size_t)NB * CHUNK);
	uint8_t *model = calloc(1, SPAN);
	uint32_t woff[NW], wlen[NW];
	struct group_stats st;
	int nb = 0;

	srand(7);
	for (int i = 0, k = 0; i < NW; i++) {
		wlen[i] = 4096u * (1 + (unsigned)(rand() % 2));
		woff[i] = 4096u * (uint32_t)(rand() % (SPAN / 4096 - 2));
		memset(wbuf + (size_t)i * 8192, (i % 250) + 1, 8192);
		submit(&w[i], GROUP_IO_WRITE, 0, woff[i], wlen[i], wbuf + (size_t)i * 8192, 0);
		if (i % (NW / NB) == NW / NB / 2 && k < NB) {
			submit(&b[k], GROUP_IO_BASE, 0, (uint64_t)(k % (SPAN / CHUNK)) * CHUNK, CHUNK,
			       bbuf + (size_t)k * CHUNK, 0);
			k++;
			nb = k;
		}
		if (i % 16 == 0)
			loop_run_once(loop, 0); /* let some land between submissions */
	}
	run_until(NW + nb);
	for (int k = 0; k < nb; k++) {
		uint64_t seq = b[k].io.last_seq;
		uint64_t off = b[k].io.offset;

		cr_assert(eq(int, b[k].res, 0));
		cr_assert(eq(int, b[k].io.rec.seq, seq));
		/* The model: writes with a lower seq, in seq order. */
		memset(model, 0, SPAN);
		for (uint64_t s = 1; s < seq; s++) {
			for (int i = 0; i < NW; i++) {
				if (w[i].io.first_seq == s)
					memset(model + woff[i], (i % 250) + 1, wlen[i]);
			}
		}
		cr_assert(eq(int, memcmp(model + off, bbuf + (size_t)k * CHUNK, CHUNK), 0),
			  "BASE chunk %d (seq %llu) differs from the volume at its seq", k,
			  (unsigned long long)seq);
		cr_assert(eq(u8, b[k].io.rec.kind,
			     b[k].io.base_zero ? JOURNAL_REC_BASE_ZERO : JOURNAL_REC_BASE));
	}
	group_get_stats(g, &st);
	cr_assert(eq(u64, st.base_records + st.base_zero_records, (uint64_t)nb));
	free(w);
	free(wbuf);
	free(bbuf);
	free(model);
}

Test(group, base_of_a_hole_is_a_zero_record)
{
	struct req b;
	uint8_t *buf = util_aligned_alloc(4096, 1 << 20);
	struct group_stats st;

	submit(&b, GROUP_IO_BASE, 1, 2 << 20, 1 << 20, buf, 0);
	run_until(1);
	cr_assert(eq(int, b.res, 0));
	cr_assert(eq(u8, b.io.rec.kind, JOURNAL_REC_BASE_ZERO));
	cr_assert(eq(u32, b.io.rec.payload_len, 0));
	group_get_stats(g, &st);
	cr_assert(eq(u64, st.base_zero_records, 1));
	cr_assert(eq(u64, st.base_bytes, 0));
	/* Not on a secondary, and not larger than one record. */
	group_set_secondary(g, true);
	submit(&b, GROUP_IO_BASE, 1, 0, 4096, buf, 0);
	run_until(2);
	cr_assert(eq(int, b.res, -EINVAL));
	free(buf);
}

/* Replays a little stream of every record kind starting at first_seq. */
static int
replay_stream(struct req *r, uint8_t *buf, uint64_t first_seq)
{
	static const uint8_t kinds[] = {JOURNAL_REC_WRITE, JOURNAL_REC_MARKER, JOURNAL_REC_BASE,
					JOURNAL_REC_ZERO, JOURNAL_REC_WRITE, JOURNAL_REC_TRIM,
					JOURNAL_REC_BASE_ZERO, JOURNAL_REC_WRITE};
	int n = (int)sizeof(kinds);

	for (int i = 0; i < n; i++) {
		struct journal_rec rec = {0};

		rec.kind = kinds[i];
		rec.seq = first_seq + (uint64_t)i;
		rec.volume = (uint16_t)(i % 2);
		rec.offset = (uint64_t)(i / 2) * 8192;
		rec.length = rec.kind == JOURNAL_REC_MARKER ? 0 : 8192;
		rec.payload_len = (rec.kind == JOURNAL_REC_WRITE || rec.kind == JOURNAL_REC_BASE) ? 8192 : 0;
		memset(buf + (size_t)i * 8192, 0xa0 + i, 8192);
		memset(&r[i], 0, sizeof(r[i]));
		r[i].io.op = GROUP_IO_REPLAY;
		r[i].io.rec = rec;
		r[i].io.vol = group_volume(g, rec.volume);
		r[i].io.buf = buf + (size_t)i * 8192;
		r[i].io.done = req_done;
		r[i].io.arg = &r[i];
		group_io_submit(g, &r[i].io);
	}
	return n;
}

static void
check_replayed(void)
{
	uint8_t got[8192], want[8192];

	/* WRITE 0 -> v0 @0, BASE 2 -> v0 @8K, WRITE 4 -> v0 @16K, BASE_ZERO 6 -> v0 @24K;
	 * ZERO 3 -> v1 @8K, TRIM 5 -> v1 @16K, WRITE 7 -> v1 @24K. */
	const struct {
		unsigned vol;
		uint64_t off;
		int fill;
	} want_at[] = {{0, 0, 0xa0}, {0, 8192, 0xa2}, {0, 16384, 0xa4}, {0, 24576, 0},
		       {1, 8192, 0}, {1, 16384, 0}, {1, 24576, 0xa7}};

	for (size_t i = 0; i < sizeof(want_at) / sizeof(want_at[0]); i++) {
		read_file(want_at[i].vol, want_at[i].off, got, sizeof(got));
		memset(want, want_at[i].fill, sizeof(want));
		cr_assert(eq(int, memcmp(got, want, sizeof(got)), 0), "volume %u at %llu",
			  want_at[i].vol, (unsigned long long)want_at[i].off);
	}
}

Test(group, replay_applies_records_in_order_and_checks_seq)
{
	struct req r[9];
	uint8_t *buf = util_aligned_alloc(4096, 9 * 8192);
	struct journal_stats js;
	struct group_stats st;
	int n;

	/* A host write may not reach a secondary's volumes. */
	group_set_secondary(g, true);
	submit(&r[0], GROUP_IO_WRITE, 0, 0, 4096, buf, 0);
	run_until(1);
	cr_assert(eq(int, r[0].res, -EPERM));
	journal_get_stats(group_journal(g), &js);
	completed = 0;
	n = replay_stream(r, buf, js.next_seq);
	run_until(n);
	for (int i = 0; i < n; i++)
		cr_assert(eq(int, r[i].res, 0), "record %d: %d", i, r[i].res);
	check_replayed();
	group_get_stats(g, &st);
	cr_assert(eq(u64, st.replayed_records, (uint64_t)n));
	cr_assert(eq(u64, st.applied_seq, js.next_seq + (uint64_t)n - 1));
	/* A gap in the stream is refused, not journaled under the wrong number. */
	completed = 0;
	memset(&r[8], 0, sizeof(r[8]));
	r[8].io.op = GROUP_IO_REPLAY;
	r[8].io.rec.kind = JOURNAL_REC_MARKER;
	r[8].io.rec.seq = js.next_seq + (uint64_t)n + 5;
	r[8].io.vol = group_volume(g, 0);
	r[8].io.done = req_done;
	r[8].io.arg = &r[8];
	group_io_submit(g, &r[8].io);
	run_until(1);
	cr_assert(eq(int, r[8].res, -EPROTO));
	free(buf);
}

/*
 * The restore journal's recovery: a secondary that dies after its records
 * are durable but with volume writes lost gets them back, in order, from
 * its journal when it reopens.
 */
Test(group, restore_journal_redo_after_crash)
{
	struct group_stats st;
	char err[256] = "";
	uint8_t zero[65536] = {0};
	uint64_t first;
	pid_t pid;
	int status;

	{
		struct journal_stats js;

		journal_get_stats(group_journal(g), &js);
		first = js.next_seq;
	}
	group_close(g);
	g = NULL;
	cfg.checkpoint_interval_ms = 600000; /* no checkpoint before the "crash" */
	pid = fork();
	cr_assert(ge(int, pid, 0));
	if (pid == 0) {
		struct loop *l2;
		struct io_engine *io2;
		struct req r[8];
		uint8_t *buf = util_aligned_alloc(4096, 8 * 8192);
		int n;

		if (loop_new(&l2) < 0 || io_engine_new("auto", 64, &io2) < 0 ||
		    group_open(&cfg, l2, io2, &g, err, sizeof(err)) < 0)
			_exit(2);
		loop = l2;
		io = io2;
		group_set_secondary(g, true);
		completed = 0;
		n = replay_stream(r, buf, first);
		for (int i = 0; i < 100000 && completed < n; i++) {
			loop_run_once(loop, 10);
			io_engine_reap(io);
		}
		for (int i = 0; i < n; i++) {
			if (r[i].res != 0)
				_exit(3);
		}
		_exit(completed == n ? 0 : 4); /* no close, no checkpoint: a crash */
	}
	cr_assert(eq(int, waitpid(pid, &status, 0), pid));
	cr_assert(eq(int, WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0), "child status %d",
		  status);
	/* Lose the volume writes, as a crash before writeback would. */
	for (unsigned v = 0; v < 2; v++) {
		int fd = open(cfg.volumes[v].path, O_RDWR);

		cr_assert(ge(int, fd, 0));
		cr_assert(eq(int, util_pwrite_full(fd, zero, sizeof(zero), 0), 0));
		close(fd);
	}
	cr_assert(eq(int, group_open(&cfg, loop, io, &g, err, sizeof(err)), 0), "%s", err);
	group_get_stats(g, &st);
	cr_assert(ge(u64, st.redone_records, 7), "redone %llu",
		  (unsigned long long)st.redone_records);
	check_replayed();
}

/* --- difference tracking (suspended pairs) --- */

#define REGION ((uint64_t)GROUP_DEFAULT_REGION_SIZE)

/* Closes the group and opens it again with cfg as it is now. */
static void
reopen(void)
{
	char err[256] = "";

	group_close(g);
	g = NULL;
	cr_assert(eq(int, group_open(&cfg, loop, io, &g, err, sizeof(err)), 0), "%s", err);
}

/* Bitmaps in the test directory: DIR/g.v0.bitmap, DIR/g.v1.bitmap. */
static void
use_bitmaps(void)
{
	free(cfg.bitmap_dir);
	cfg.bitmap_dir = strdup(dir);
	cr_assert(ne(ptr, cfg.bitmap_dir, NULL));
	reopen();
}

static void
set_pair(enum pair_role role, enum pair_state state)
{
	memset(&cfg.pair, 0, sizeof(cfg.pair));
	cfg.pair.role = role;
	cfg.pair.state = state;
}

/* Every write-type op, regions with gaps between them, unaligned edges, and a
 * range that ends exactly on a region boundary (the next region stays clear). */
static const struct tracked_write {
	enum group_io_op op;
	unsigned vol;
	uint64_t off;
	uint32_t len;
} tracked[] = {
	{GROUP_IO_WRITE, 0, 0, 4096},                                /* region 0 */
	{GROUP_IO_WRITE, 0, REGION + 100, 8192},                     /* region 1 only */
	{GROUP_IO_WRITE, 0, 4 * REGION - 100, 8192},                 /* regions 3 and 4 */
	{GROUP_IO_TRIM, 0, 6 * REGION, (uint32_t)REGION},            /* region 6, not 7 */
	{GROUP_IO_ZERO, 0, 9 * REGION + 4096, 2 * (uint32_t)REGION}, /* regions 9, 10, 11 */
	{GROUP_IO_WRITE, 1, 112 * REGION + 8192, 4096},              /* volume 1: region 112 */
};
#define NTRACKED ((int)(sizeof(tracked) / sizeof(tracked[0])))
static const uint64_t tracked_v0[] = {0, 1, 3, 4, 6, 9, 10, 11};
static const uint64_t tracked_v1[] = {112};

/* buf: 8192 bytes per entry of tracked. */
static void
submit_tracked(struct req *r, uint8_t *buf)
{
	for (int i = 0; i < NTRACKED; i++) {
		bool has_data = tracked[i].op == GROUP_IO_WRITE;

		memset(buf + (size_t)i * 8192, 0x30 + i, 8192);
		submit(&r[i], tracked[i].op, tracked[i].vol, tracked[i].off, tracked[i].len,
		       has_data ? buf + (size_t)i * 8192 : NULL, 0);
	}
}

/* Exactly the regions want[0..n) (distinct) are set in the map of vol. */
static void
assert_regions(unsigned vol, const uint64_t *want, size_t n)
{
	struct diffmap *m = group_diffmap(g, vol);
	uint64_t r = 0;

	cr_assert(ne(ptr, m, NULL), "volume %u has no difference bitmap", vol);
	for (size_t i = 0; i < n; i++)
		cr_assert(diffmap_test(m, want[i]), "volume %u: region %llu not marked", vol,
			  (unsigned long long)want[i]);
	cr_assert(eq(u64, diffmap_count(m), (uint64_t)n),
		  "volume %u: %llu regions marked, want %zu", vol,
		  (unsigned long long)diffmap_count(m), n);
	/* Name an unexpected one, if any, for the failure message. */
	while ((r = diffmap_next_set(m, r)) != UINT64_MAX) {
		bool wanted = false;

		for (size_t i = 0; i < n; i++)
			wanted |= want[i] == r;
		cr_assert(wanted, "volume %u: region %llu marked", vol, (unsigned long long)r);
		r++;
	}
}

static void
assert_tracked_regions(void)
{
	assert_regions(0, tracked_v0, sizeof(tracked_v0) / sizeof(tracked_v0[0]));
	assert_regions(1, tracked_v1, sizeof(tracked_v1) / sizeof(tracked_v1[0]));
}

Test(group, tracking_marks_exactly_the_written_regions)
{
	struct req r[NTRACKED], w;
	uint8_t *buf = util_aligned_alloc(4096, (size_t)NTRACKED * 8192);

	use_bitmaps();
	cr_assert(ne(ptr, group_diffmap(g, 0), NULL));
	cr_assert(ne(ptr, group_diffmap(g, 1), NULL));
	cr_assert(eq(ptr, group_diffmap(g, 2), NULL));
	cr_assert(not(group_tracking(g)), "no pair: not tracking after open");

	/* Off: a write marks nothing. */
	memset(buf, 0x11, 4096);
	submit(&w, GROUP_IO_WRITE, 0, 20 * REGION, 4096, buf, 0);
	run_until(1);
	cr_assert(eq(int, w.res, 0));
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 0)), 0));
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 1)), 0));
	cr_assert(eq(u64, group_first_tracked_seq(g), 0));

	cr_assert(eq(int, group_set_tracking(g, true), 0));
	cr_assert(group_tracking(g));
	cr_assert(eq(u64, group_first_tracked_seq(g), 0), "nothing marked yet");
	completed = 0;
	submit_tracked(r, buf);
	run_until(NTRACKED);
	for (int i = 0; i < NTRACKED; i++)
		cr_assert(eq(int, r[i].res, 0), "request %d", i);
	assert_tracked_regions();
	cr_assert(not(diffmap_test(group_diffmap(g, 0), 20)), "write before tracking marked");
	/* Appended in submission order: the first tracked record is r[0]'s. */
	cr_assert(gt(u64, r[0].io.first_seq, w.io.last_seq));
	for (int i = 1; i < NTRACKED; i++)
		cr_assert(gt(u64, r[i].io.first_seq, r[0].io.first_seq));
	cr_assert(eq(u64, group_first_tracked_seq(g), r[0].io.first_seq));

	/* Off again: nothing more is marked; on again: a new first seq. */
	cr_assert(eq(int, group_set_tracking(g, false), 0));
	cr_assert(not(group_tracking(g)));
	completed = 0;
	submit(&w, GROUP_IO_WRITE, 0, 30 * REGION, 4096, buf, 0);
	run_until(1);
	cr_assert(eq(int, w.res, 0));
	assert_tracked_regions();
	cr_assert(eq(int, group_set_tracking(g, true), 0));
	cr_assert(eq(u64, group_first_tracked_seq(g), 0));
	completed = 0;
	submit(&w, GROUP_IO_WRITE, 1, 40 * REGION, 4096, buf, 0);
	run_until(1);
	cr_assert(eq(int, w.res, 0));
	cr_assert(eq(u64, group_first_tracked_seq(g), w.io.first_seq));
	cr_assert(diffmap_test(group_diffmap(g, 1), 40));
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 1)), 2));
	cr_assert(not(diffmap_test(group_diffmap(g, 0), 30)));
	free(buf);
}

Test(group, tracking_needs_a_bitmap_dir)
{
	cr_assert(eq(ptr, cfg.bitmap_dir, NULL));
	cr_assert(eq(int, group_set_tracking(g, true), -ENOTSUP));
	cr_assert(not(group_tracking(g)));
	cr_assert(eq(ptr, group_diffmap(g, 0), NULL));
	cr_assert(eq(ptr, group_diffmap(g, 1), NULL));
	cr_assert(eq(int, group_set_tracking(g, false), 0));
	cr_assert(eq(int, group_sync_bitmaps(g), 0));
	/* A pair state that tracks doesn't turn it on without bitmaps either. */
	set_pair(PAIR_ROLE_PRIMARY, PAIR_STATE_PSUS);
	reopen();
	cr_assert(not(group_tracking(g)));
	cr_assert(eq(ptr, group_diffmap(g, 0), NULL));
}

Test(group, tracked_regions_survive_a_clean_close)
{
	struct req r[NTRACKED], w;
	uint8_t *buf = util_aligned_alloc(4096, (size_t)NTRACKED * 8192);
	struct group_stats st;

	use_bitmaps();
	cr_assert(eq(int, group_set_tracking(g, true), 0));
	submit_tracked(r, buf);
	run_until(NTRACKED);
	for (int i = 0; i < NTRACKED; i++)
		cr_assert(eq(int, r[i].res, 0), "request %d", i);

	/* No pair that tracks: the bits are kept, tracking stays off. */
	reopen();
	group_get_stats(g, &st);
	cr_assert(eq(u64, st.redone_records, 0), "clean close: nothing to redo");
	cr_assert(not(group_tracking(g)));
	assert_tracked_regions();

	/* A suspended primary tracks from open on. */
	set_pair(PAIR_ROLE_PRIMARY, PAIR_STATE_PSUS);
	reopen();
	group_get_stats(g, &st);
	cr_assert(eq(u64, st.redone_records, 0));
	cr_assert(group_tracking(g), "PSUS primary: tracking after open");
	assert_tracked_regions();
	/* ...and it really marks, without group_set_tracking(). */
	completed = 0;
	memset(buf, 0x22, 4096);
	submit(&w, GROUP_IO_WRITE, 1, 50 * REGION, 4096, buf, 0);
	run_until(1);
	cr_assert(eq(int, w.res, 0));
	cr_assert(diffmap_test(group_diffmap(g, 1), 50));
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 1)), 2));
	cr_assert(eq(u64, group_first_tracked_seq(g), w.io.first_seq));
	free(buf);
}

/*
 * Child of a crash test: opens the group as a suspended primary (tracking
 * from open), writes the tracked set, waits for the answers, optionally
 * waits for a checkpoint to release their records, and dies without closing.
 * Returns its exit status.
 */
static int
tracked_crash_child(bool checkpoint)
{
	struct loop *l2;
	struct io_engine *io2;
	struct req r[NTRACKED];
	uint8_t *buf = util_aligned_alloc(4096, (size_t)NTRACKED * 8192);
	char err[256] = "";
	struct group_stats st;
	uint64_t last = 0;

	if (!buf || loop_new(&l2) < 0 || io_engine_new("auto", 64, &io2) < 0 ||
	    group_open(&cfg, l2, io2, &g, err, sizeof(err)) < 0)
		return 2;
	loop = l2;
	io = io2;
	if (!group_tracking(g))
		return 3;
	completed = 0;
	submit_tracked(r, buf);
	for (int i = 0; i < 3000 && completed < NTRACKED; i++) {
		loop_run_once(loop, 10);
		io_engine_reap(io);
	}
	if (completed < NTRACKED)
		return 4;
	for (int i = 0; i < NTRACKED; i++) {
		if (r[i].res != 0)
			return 5;
		if (r[i].io.last_seq > last)
			last = r[i].io.last_seq;
	}
	group_get_stats(g, &st);
	if (!checkpoint)
		return st.ckpt_seq > r[0].io.first_seq ? 6 : 0; /* redo must see them all */
	/* Wait for a checkpoint past the writes, and for the journal superblock
	 * that records it (no I/O left), so redo won't see them. */
	for (int i = 0; i < 3000; i++) {
		loop_run_once(loop, 10);
		io_engine_reap(io);
		group_get_stats(g, &st);
		if (st.ckpt_seq > last && !io_engine_pending(io))
			break;
	}
	if (st.ckpt_seq <= last || io_engine_pending(io))
		return 7;
	return 0;
}

static void
crash_while_tracking(bool checkpoint)
{
	struct group_stats st;
	pid_t pid;
	int status;

	free(cfg.bitmap_dir);
	cfg.bitmap_dir = strdup(dir);
	cr_assert(ne(ptr, cfg.bitmap_dir, NULL));
	group_close(g);
	g = NULL;
	set_pair(PAIR_ROLE_PRIMARY, PAIR_STATE_PSUS);
	cfg.checkpoint_interval_ms = checkpoint ? 10 : 600000;
	cfg.marker_interval_ms = 600000;
	pid = fork();
	cr_assert(ge(int, pid, 0));
	if (pid == 0)
		_exit(tracked_crash_child(checkpoint)); /* no close: a crash */
	cr_assert(eq(int, waitpid(pid, &status, 0), pid));
	cr_assert(eq(int, WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0), "child status %d",
		  status);
	cfg.checkpoint_interval_ms = 600000;
	reopen();
	group_get_stats(g, &st);
	if (checkpoint)
		cr_assert(eq(u64, st.redone_records, 0),
			  "records released by the checkpoint were redone (%llu)",
			  (unsigned long long)st.redone_records);
	else
		cr_assert(eq(u64, st.redone_records, (uint64_t)NTRACKED), "redone %llu",
			  (unsigned long long)st.redone_records);
	cr_assert(group_tracking(g));
	assert_tracked_regions();
}

/* Nothing synced the bitmaps: the bits come back from redo. */
Test(group, tracked_regions_survive_a_crash)
{
	crash_while_tracking(false);
}

/* The checkpoint released the records: the bits come from the bitmap files
 * it synced first. */
Test(group, tracked_regions_survive_a_crash_after_checkpoint)
{
	crash_while_tracking(true);
}

Test(group, pair_tracks_truth_table)
{
	static const enum pair_role roles[] = {PAIR_ROLE_NONE, PAIR_ROLE_PRIMARY,
					       PAIR_ROLE_SECONDARY};
	static const enum pair_state states[] = {PAIR_STATE_SMPL, PAIR_STATE_COPY, PAIR_STATE_PAIR,
						 PAIR_STATE_PFUL, PAIR_STATE_PFUS, PAIR_STATE_PSUS,
						 PAIR_STATE_PSUE, PAIR_STATE_SSWS};

	for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
		for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
			struct group_pair_config pc = {.role = roles[i], .state = states[k]};
			enum pair_state s = states[k];
			bool want = false;

			if (roles[i] == PAIR_ROLE_PRIMARY)
				want = s == PAIR_STATE_PSUS || s == PAIR_STATE_PSUE ||
				       s == PAIR_STATE_PFUS;
			else if (roles[i] == PAIR_ROLE_SECONDARY)
				want = s == PAIR_STATE_SSWS;
			cr_assert(eq(int, group_pair_tracks(&pc), want), "%s %s",
				  pair_role_name(roles[i]), pair_state_name(s));
		}
	}
	/* The cases by name, in case the loop above is ever edited wrong. */
	{
		struct group_pair_config pc = {.role = PAIR_ROLE_PRIMARY};

		pc.state = PAIR_STATE_PSUS;
		cr_assert(group_pair_tracks(&pc));
		pc.state = PAIR_STATE_PSUE;
		cr_assert(group_pair_tracks(&pc));
		pc.state = PAIR_STATE_PFUS;
		cr_assert(group_pair_tracks(&pc));
		pc.state = PAIR_STATE_PAIR;
		cr_assert(not(group_pair_tracks(&pc)));
		pc.state = PAIR_STATE_COPY;
		cr_assert(not(group_pair_tracks(&pc)));
		pc.state = PAIR_STATE_PFUL;
		cr_assert(not(group_pair_tracks(&pc)));
		pc.role = PAIR_ROLE_SECONDARY;
		pc.state = PAIR_STATE_SSWS;
		cr_assert(group_pair_tracks(&pc));
		pc.state = PAIR_STATE_PSUS;
		cr_assert(not(group_pair_tracks(&pc)));
		pc.role = PAIR_ROLE_NONE;
		pc.state = PAIR_STATE_PSUS;
		cr_assert(not(group_pair_tracks(&pc)));
		pc.state = PAIR_STATE_SSWS;
		cr_assert(not(group_pair_tracks(&pc)));
	}
}

Test(group, held_writes_wait_until_released)
{
	struct req w, z, rd;
	uint8_t *buf = util_aligned_alloc(4096, 4096), *rbuf = util_aligned_alloc(4096, 4096);
	uint8_t got[4096];
	struct group_stats before, st;

	cfg.marker_interval_ms = 600000; /* no idle marker moving last_seq */
	reopen();
	group_get_stats(g, &before);
	memset(buf, 0x5a, 4096);
	group_hold_writes(g, true);
	submit(&w, GROUP_IO_WRITE, 0, 3 * REGION, 4096, buf, 0);
	submit(&z, GROUP_IO_ZERO, 1, 0, 8192, NULL, 0);
	for (int i = 0; i < 50; i++) {
		loop_run_once(loop, 10);
		io_engine_reap(io);
	}
	cr_assert(not(w.done), "held write answered");
	cr_assert(not(z.done), "held write-zeroes answered");
	cr_assert(eq(int, completed, 0));
	group_get_stats(g, &st);
	cr_assert(eq(u64, st.writes, before.writes + 1));
	cr_assert(eq(u64, st.zeroes, before.zeroes + 1));
	cr_assert(eq(u64, st.last_seq, before.last_seq), "a held write was journaled");
	/* Reads go on meanwhile. */
	submit(&rd, GROUP_IO_READ, 0, 10 * REGION, 4096, rbuf, 0);
	run_until(1);
	cr_assert(eq(int, rd.res, 0));
	cr_assert(not(w.done));

	group_hold_writes(g, false);
	run_until(3);
	cr_assert(w.done);
	cr_assert(z.done);
	cr_assert(eq(int, w.res, 0));
	cr_assert(eq(int, z.res, 0));
	group_get_stats(g, &st);
	cr_assert(ge(u64, st.last_seq, before.last_seq + 2));
	read_file(0, 3 * REGION, got, sizeof(got));
	cr_assert(eq(int, memcmp(got, buf, sizeof(got)), 0));
	free(buf);
	free(rbuf);
}

/*
 * Appends happen in the loop hook (group_pump) and durability only when the
 * journal's batch completes, which the engine reports from io_engine_reap():
 * so after one loop iteration without a reap, every request is journaled but
 * none is durable.
 */
Test(group, mark_undurable_marks_appended_records)
{
	struct req r[NTRACKED];
	uint8_t *buf = util_aligned_alloc(4096, (size_t)NTRACKED * 8192);
	struct group_stats st;

	cfg.marker_interval_ms = 600000;
	use_bitmaps();
	cr_assert(not(group_tracking(g)));
	submit_tracked(r, buf);
	loop_run_once(loop, 0); /* appends and commits; no completion runs */
	group_get_stats(g, &st);
	for (int i = 0; i < NTRACKED; i++)
		cr_assert(ne(u64, r[i].io.first_seq, 0), "request %d not appended", i);
	cr_assert(eq(u64, st.last_seq, r[NTRACKED - 1].io.last_seq));
	cr_assert(lt(u64, st.durable_seq, r[0].io.first_seq), "already durable: can't stage");
	cr_assert(eq(int, completed, 0));
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 0)), 0), "not tracking");
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 1)), 0));

	group_mark_undurable(g);
	assert_tracked_regions();

	run_until(NTRACKED);
	for (int i = 0; i < NTRACKED; i++)
		cr_assert(eq(int, r[i].res, 0), "request %d", i);
	/* Once durable, there is nothing left to mark. */
	diffmap_clear_all(group_diffmap(g, 0));
	diffmap_clear_all(group_diffmap(g, 1));
	group_mark_undurable(g);
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 0)), 0));
	cr_assert(eq(u64, diffmap_count(group_diffmap(g, 1)), 0));
	free(buf);
}
