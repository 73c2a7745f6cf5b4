/*
 * journal_read_records(): reading retained, durable records back by seq
 * over real files and engines. Every record read is compared byte for byte
 * with what was appended (re-encoded with the journal's seed): varied sizes
 * from zero-payload records to maximal ones, reads spanning several batches,
 * the circular area lapping several times under a releasing consumer,
 * reopened journals (index rebuilt by recovery), pipelined reads, the
 * errors (-EAGAIN, -ENOENT, -EINVAL, -EBADMSG, -EIO), and close with reads
 * in flight. On the sync engine, and on uring where io_uring is allowed.
 * The read cache: the same checks on reads served from memory (copied or
 * borrowed), falling back to the device for what it no longer holds, across
 * laps of the area and of the cache.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"
#include "journal/journal.h"
#include "jrbd/journal_format.h"
#include "leak_check.h"

#define MiB (1ull << 20)
#define KiB (1ull << 10)
#define REC_MAX (JOURNAL_MAX_PAYLOAD + JOURNAL_REC_HDR_SIZE)
#define OUT_CAP (8u << 20)

static char *tmpdir;
static char jpath[PATH_MAX];
static uint8_t *out;     /* OUT_CAP bytes: the reads' output */
static uint8_t *payload; /* JOURNAL_MAX_PAYLOAD bytes: scratch */

/* What was appended, by seq - model_base. */
static struct journal_rec *model;
static size_t model_cap;
static uint64_t model_base;

static void
setup(void)
{
	tmpdir = test_tmpdir();
	cr_assert(tmpdir != NULL, "test_tmpdir");
	snprintf(jpath, sizeof(jpath), "%s/journal", tmpdir);
	out = malloc(OUT_CAP);
	payload = malloc(JOURNAL_MAX_PAYLOAD);
	cr_assert(out && payload);
	model = NULL;
	model_cap = 0;
	model_base = 1;
}

static void
teardown(void)
{
	if (tmpdir) {
		test_rm_rf(tmpdir);
		free(tmpdir);
		tmpdir = NULL;
	}
	free(out);
	free(payload);
	free(model);
	out = payload = NULL;
	model = NULL;
	test_leak_check();
}

TestSuite(journal_reader, .init = setup, .fini = teardown, .timeout = 240);

/* --- helpers --- */

struct ctx {
	uint64_t durable_seq;
	unsigned nerror;
};

static void
on_durable(void *arg, uint64_t seq)
{
	((struct ctx *)arg)->durable_seq = seq;
}

static void
on_error(void *arg, int err)
{
	(void)err;
	((struct ctx *)arg)->nerror++;
}

static const struct journal_ops ops = {
    .on_durable = on_durable,
    .on_error = on_error,
};

static void
format(uint64_t size, uint64_t first_seq)
{
	const char *vols[] = {"alpha", "beta"};
	struct journal_format_opts o = {
	    .size = size,
	    .group = "g1",
	    .nvolumes = 2,
	    .volumes = vols,
	    .role = JOURNAL_ROLE_MASTER,
	    .first_seq = first_seq,
	};
	int r = journal_format(jpath, &o);

	cr_assert(eq(int, r, 0), "journal_format: %s", strerror(-r));
	model_base = first_seq ? first_seq : 1;
}

static struct io_engine *
engine(const char *name)
{
	struct io_engine *e = NULL;
	int r = io_engine_new(name, 64, &e);

	if (!strcmp(name, "uring") && (r == -EPERM || r == -ENOSYS))
		cr_skip_test("io_uring refused here: %s", strerror(-r));
	cr_assert(eq(int, r, 0), "io_engine_new(%s): %s", name, strerror(-r));
	return e;
}

static struct journal *
jopen(struct io_engine *e, struct ctx *c)
{
	struct journal *j = NULL;
	int r = journal_open(jpath, e, &ops, c, &j);

	cr_assert(eq(int, r, 0), "journal_open: %s", strerror(-r));
	return j;
}

static void
drain(struct io_engine *e)
{
	cr_assert(eq(int, io_engine_drain(e), 0));
}

static struct journal_stats
stats(const struct journal *j)
{
	struct journal_stats st;

	journal_get_stats(j, &st);
	return st;
}

/* Payload bytes are a function of the record's seq. */
static void
fill(uint8_t *buf, uint64_t seq, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seq * 131 + i * 7 + (i >> 9));
}

static void
model_put(const struct journal_rec *rec)
{
	size_t i = rec->seq - model_base;

	if (i >= model_cap) {
		size_t cap = model_cap ? model_cap * 2 : 1024;

		while (cap <= i)
			cap *= 2;
		model = realloc(model, cap * sizeof(*model));
		cr_assert(model != NULL);
		model_cap = cap;
	}
	model[i] = *rec;
}

/* Appends one record of the given kind and payload length (kinds without a
 * payload ignore len) and remembers it. */
static uint64_t
append(struct journal *j, uint8_t kind, uint32_t len)
{
	struct journal_rec rec = {.kind = kind, .volume = 1};
	uint64_t seq = stats(j).next_seq;
	int r;

	rec.offset = seq * 4096;
	switch (kind) {
	case JOURNAL_REC_WRITE:
	case JOURNAL_REC_BASE:
		rec.payload_len = len;
		rec.length = len;
		fill(payload, seq, len);
		break;
	case JOURNAL_REC_MARKER:
		rec.offset = 0;
		break;
	default:
		rec.length = 8192;
		break;
	}
	r = journal_append(j, &rec, rec.payload_len ? payload : NULL);
	cr_assert(eq(int, r, 0), "append seq %llu: %s", (unsigned long long)seq, strerror(-r));
	cr_assert(eq(u64, rec.seq, seq));
	model_put(&rec);
	return seq;
}

/* A mix: zero-payload kinds, odd and sector sizes, and maximal records. */
static uint64_t
append_mixed(struct journal *j, unsigned i)
{
	static const uint32_t sizes[] = {512, 4096, 1000, 65536, 3333, 131072, 8192, 777};

	switch (i % 23) {
	case 3:
		return append(j, JOURNAL_REC_MARKER, 0);
	case 7:
		return append(j, JOURNAL_REC_TRIM, 0);
	case 11:
		return append(j, JOURNAL_REC_ZERO, 0);
	case 13:
		return append(j, JOURNAL_REC_WRITE, JOURNAL_MAX_PAYLOAD);
	case 17:
		return append(j, JOURNAL_REC_BASE, 300000);
	case 19:
		return append(j, JOURNAL_REC_BASE_ZERO, 0);
	default:
		return append(j, JOURNAL_REC_WRITE, sizes[i % 8]);
	}
}

/* n mixed records, committed every `batch`, all durable; the last seq. */
static uint64_t
append_mixed_n(struct io_engine *e, struct journal *j, const struct ctx *c, unsigned n,
               unsigned batch)
{
	uint64_t last = 0;

	for (unsigned i = 0; i < n; i++) {
		last = append_mixed(j, i);
		if (i % batch == batch - 1) {
			journal_commit(j);
			drain(e);
		}
	}
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c->durable_seq, last));
	return last;
}

struct reader {
	struct journal_read_req req; /* first: done gets it */
	unsigned ndone;
	int res;
};

static void
read_done(struct journal_read_req *r, int res)
{
	struct reader *rd = (struct reader *)(void *)r;

	rd->ndone++;
	rd->res = res;
}

static void
reader_init(struct reader *rd, uint64_t from_seq, uint32_t max_bytes, uint8_t *buf)
{
	memset(rd, 0, sizeof(*rd));
	rd->req.from_seq = from_seq;
	rd->req.max_seq = UINT64_MAX;
	rd->req.max_bytes = max_bytes;
	rd->req.out = buf;
	rd->req.out_cap = OUT_CAP;
	rd->req.done = read_done;
	rd->res = 1;
}

/* Reads served from the read cache / borrowed from it, by read_sync. */
static unsigned cached_reads, borrowed_reads;

/* Starts a read and runs the engine until it completes. The call's own
 * error, or done's result. */
static int
read_sync(struct io_engine *e, struct journal *j, struct reader *rd)
{
	int r = journal_read_records(j, &rd->req);

	if (r == JOURNAL_READ_CACHED) {
		cr_assert(eq(u32, rd->ndone, 0), "done called for a cached read");
		cr_assert(eq(u64, rd->req.first_seq, rd->req.from_seq));
		cr_assert(eq(u64, rd->req.nrecords, rd->req.last_seq - rd->req.first_seq + 1));
		cr_assert(rd->req.data != NULL);
		if (rd->req.data != rd->req.out) {
			cr_assert(rd->req.may_borrow, "borrowed without leave");
			borrowed_reads++;
		}
		cached_reads++;
		return 0;
	}
	if (r < 0) {
		cr_assert(eq(u32, rd->ndone, 0), "done called after a synchronous error");
		return r;
	}
	cr_assert(eq(u32, rd->ndone, 0), "done called inside the call");
	cr_assert(eq(u64, rd->req.first_seq, rd->req.from_seq));
	cr_assert(ge(u64, rd->req.last_seq, rd->req.first_seq));
	cr_assert(eq(u64, rd->req.nrecords, rd->req.last_seq - rd->req.first_seq + 1));
	while (!rd->ndone)
		drain(e);
	cr_assert(eq(u32, rd->ndone, 1));
	cr_assert(rd->req.data == rd->req.out, "a device read is returned in out");
	return rd->res;
}

/* The output holds exactly records first_seq..last_seq as appended. */
static void
check_output(const struct journal *j, const struct reader *rd)
{
	const struct journal_read_req *r = &rd->req;
	uint64_t seed = journal_get_sb(j)->seed;
	static uint8_t hdr[JOURNAL_REC_HDR_SIZE];
	uint32_t pos = 0;
	uint64_t seq = r->first_seq;

	cr_assert(le(u32, r->out_len, r->out_cap));
	while (pos < r->out_len) {
		struct journal_rec got;
		const struct journal_rec *want;

		cr_assert(
		    eq(int, journal_rec_decode(r->data + pos, r->out_len - pos, seed, &got), 0),
		    "seq %llu", (unsigned long long)seq);
		cr_assert(eq(u64, got.seq, seq));
		cr_assert(ge(u64, seq, model_base));
		want = &model[seq - model_base];
		cr_assert(le(u64, pos + 64ull + got.payload_len, r->out_len));
		fill(payload, seq, want->payload_len);
		journal_rec_encode(want, payload, seed, hdr);
		cr_assert(eq(int, memcmp(hdr, r->data + pos, JOURNAL_REC_HDR_SIZE), 0),
		          "header of seq %llu differs", (unsigned long long)seq);
		cr_assert(eq(u32, got.payload_len, want->payload_len));
		cr_assert(eq(int, memcmp(payload, r->data + pos + 64, got.payload_len), 0),
		          "payload of seq %llu differs", (unsigned long long)seq);
		cr_assert(eq(int, journal_rec_check_payload(&got, r->data + pos + 64, seed), 0));
		pos += 64 + got.payload_len;
		seq++;
	}
	cr_assert(eq(u32, pos, r->out_len));
	cr_assert(eq(u64, seq, r->last_seq + 1), "got %llu records, promised %u",
	          (unsigned long long)(seq - r->first_seq), r->nrecords);
	cr_assert(eq(u64, r->newest_ts_ns, model[r->last_seq - model_base].timestamp_ns));
}

/* Reads [from, to] in calls of max_bytes; checks every record. Returns the
 * number of calls. */
static unsigned
read_range(struct io_engine *e, struct journal *j, uint64_t from, uint64_t to, uint32_t max_bytes,
           unsigned *ret_multi_entry)
{
	unsigned calls = 0;

	while (from <= to) {
		struct reader rd;
		int r;

		reader_init(&rd, from, max_bytes, out);
		rd.req.max_seq = to;
		r = read_sync(e, j, &rd);
		cr_assert(eq(int, r, 0), "read from %llu (max_bytes %u): %s",
		          (unsigned long long)from, max_bytes, strerror(-r));
		cr_assert(le(u64, rd.req.last_seq, to));
		if (rd.req.nrecords > 1)
			cr_assert(le(u32, rd.req.out_len, max_bytes), "max_bytes overrun");
		check_output(j, &rd);
		if (ret_multi_entry && rd.req.out_len > 2 * MiB)
			(*ret_multi_entry)++;
		from = rd.req.last_seq + 1;
		calls++;
	}
	return calls;
}

/* --- reads --- */

static void
reads_back_everything(const char *engine_name)
{
	static const uint32_t max_bytes[] = {0,   1,       4096,    100000,    600 * KiB,
	                                     MiB, 4 * MiB, 8 * MiB, UINT32_MAX};
	struct io_engine *e = engine(engine_name);
	struct ctx c = {0};
	struct journal *j;
	uint64_t last = 0;
	unsigned multi = 0;

	format(64 * MiB, 0);
	j = jopen(e, &c);
	last = append_mixed_n(e, j, &c, 400, 9);
	cr_assert(gt(u64, stats(j).batches, 20), "several batches");

	for (size_t m = 0; m < sizeof(max_bytes) / sizeof(max_bytes[0]); m++) {
		unsigned calls = read_range(e, j, 1, last, max_bytes[m], &multi);

		if (max_bytes[m] <= 1)
			cr_assert(eq(u32, calls, (unsigned)last), "one record per call");
		if (max_bytes[m] >= 8 * MiB)
			cr_assert(lt(u32, calls, 40), "big reads take many records");
	}
	cr_assert(gt(u32, multi, 0), "some reads spanned several batches");
	/* from every seq, a small and a large budget */
	for (uint64_t from = 1; from <= last; from++) {
		struct reader rd;

		reader_init(&rd, from, (uint32_t)(from % 7 ? 300 * KiB : 3 * MiB), out);
		cr_assert(eq(int, read_sync(e, j, &rd), 0));
		check_output(j, &rd);
	}
	/* max_seq bounds the range, even inside a batch */
	for (uint64_t from = 1; from + 5 <= last; from += 37) {
		struct reader rd;

		reader_init(&rd, from, UINT32_MAX, out);
		rd.req.max_seq = from + 4;
		cr_assert(eq(int, read_sync(e, j, &rd), 0));
		cr_assert(le(u64, rd.req.last_seq, from + 4));
		check_output(j, &rd);
	}
	journal_close(j);
	io_engine_free(e);
}

Test(journal_reader, reads_back_everything_sync)
{
	reads_back_everything("sync");
}

Test(journal_reader, reads_back_everything_uring)
{
	reads_back_everything("uring");
}

/* The read cache holds the newest batches only: older records come from the
 * device, newer ones from memory, and both read back exactly as appended,
 * whatever the budget, copied or borrowed. It exists only while a consumer
 * does. */
Test(journal_reader, read_cache_and_device_agree)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t last = 0;

	format(160 * MiB, 0);
	j = jopen(e, &c);
	journal_set_read_cache(j, 4 * MiB);
	cr_assert(eq(u64, stats(j).read_cache_bytes, 0), "no consumer, no cache");
	cr_assert(eq(int, journal_consumer_add(j, 7), 0));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 16 * MiB), "rounded up to the smallest cache");
	last = append_mixed_n(e, j, &c, 1200, 9);
	cr_assert(gt(u64, stats(j).bytes_written, 64 * MiB), "much more than the cache");

	for (unsigned borrow = 0; borrow < 2; borrow++) {
		static const uint32_t budgets[] = {1, 100000, MiB, 3 * MiB};

		for (size_t b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++) {
			cached_reads = borrowed_reads = 0;
			for (uint64_t from = 1; from <= last;) {
				struct reader rd;

				reader_init(&rd, from, budgets[b], out);
				rd.req.may_borrow = borrow;
				cr_assert(eq(int, read_sync(e, j, &rd), 0));
				check_output(j, &rd);
				from = rd.req.last_seq + 1;
			}
			cr_assert(gt(u32, cached_reads, 0), "the newest records come from memory");
			if (borrow)
				cr_assert(gt(u32, borrowed_reads, 0));
			else
				cr_assert(eq(u32, borrowed_reads, 0));
		}
	}
	cr_assert(gt(u64, stats(j).read_cache_misses, 0), "the oldest from the device");
	cr_assert(gt(u64, stats(j).read_cache_hits, 0));
	/* The last record, alone, from memory; the first from the device. */
	{
		struct reader rd;

		reader_init(&rd, last, MiB, out);
		cr_assert(eq(int, journal_read_records(j, &rd.req), JOURNAL_READ_CACHED));
		check_output(j, &rd);
		reader_init(&rd, 1, MiB, out);
		cr_assert(eq(int, read_sync(e, j, &rd), 0));
		check_output(j, &rd);
	}
	cr_assert(eq(int, journal_consumer_remove(j, 7), 0));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 0), "freed with the last consumer");
	journal_close(j);
	io_engine_free(e);
}

/* From the cache, a read that may borrow gets large batches one at a time,
 * without a copy (each batch has a region of its own there), and lone small
 * batches together, copied: one reply each would cost a round trip each. */
Test(journal_reader, borrowing_takes_a_large_batch_or_many_small_ones)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t first, last = 0;
	struct reader rd;

	format(64 * MiB, 0);
	j = jopen(e, &c);
	journal_set_read_cache(j, 16 * MiB);
	cr_assert(eq(int, journal_consumer_add(j, 7), 0));
	/* 20 lone 4 KiB writes, a batch each */
	for (unsigned i = 0; i < 20; i++) {
		last = append(j, JOURNAL_REC_WRITE, 4096);
		journal_commit(j);
		drain(e);
	}
	reader_init(&rd, 1, 8 * MiB, out);
	rd.req.may_borrow = true;
	cached_reads = borrowed_reads = 0;
	cr_assert(eq(int, read_sync(e, j, &rd), 0));
	check_output(j, &rd);
	cr_assert(eq(u64, rd.req.last_seq, last), "all 20 in one read");
	cr_assert(eq(u32, cached_reads, 1));
	cr_assert(eq(u32, borrowed_reads, 0), "copied together");

	/* three batches of 1.5 MiB each */
	first = last + 1;
	for (unsigned b = 0; b < 3; b++) {
		for (unsigned i = 0; i < 6; i++)
			last = append(j, JOURNAL_REC_WRITE, 256 * KiB);
		journal_commit(j);
		drain(e);
	}
	cr_assert(eq(u64, c.durable_seq, last));
	for (uint64_t from = first, n = 0; from <= last; n++) {
		cr_assert(lt(u64, n, 3));
		reader_init(&rd, from, 8 * MiB, out);
		rd.req.may_borrow = true;
		cached_reads = borrowed_reads = 0;
		cr_assert(eq(int, read_sync(e, j, &rd), 0));
		check_output(j, &rd);
		cr_assert(eq(u32, borrowed_reads, 1), "read %llu borrowed", (unsigned long long)n);
		cr_assert(eq(u64, rd.req.last_seq, from + 5), "one batch");
		from = rd.req.last_seq + 1;
	}
	/* without leave to borrow, one read takes them all */
	reader_init(&rd, first, 8 * MiB, out);
	cr_assert(eq(int, read_sync(e, j, &rd), 0));
	check_output(j, &rd);
	cr_assert(eq(u64, rd.req.last_seq, last));
	journal_close(j);
	io_engine_free(e);
}

/* Batches are packed in the read cache itself. When it goes (last consumer
 * removed) or changes size, open and sealed batches move to their own
 * buffers, and the change waits for the batches the kernel is writing from
 * the cache. Everything reads back as appended, before and after a reopen. */
static void
fill_pipeline(struct io_engine *e, struct journal *j, uint64_t *last)
{
	/* One maximal record per batch: four in flight, one sealed, one open
	 * with a small record behind a maximal one. */
	for (unsigned i = 0; i < 6; i++)
		*last = append(j, JOURNAL_REC_WRITE, JOURNAL_MAX_PAYLOAD);
	*last = append(j, JOURNAL_REC_WRITE, 4096);
	cr_assert(ge(int, io_engine_submit(e), 0));
}

static void
cache_changes_wait_for_batches_in_flight(const char *engine_name)
{
	struct io_engine *e = engine(engine_name);
	struct ctx c = {0};
	struct journal *j;
	uint64_t last = 0;

	format(64 * MiB, 0);
	j = jopen(e, &c);
	journal_set_read_cache(j, 16 * MiB);
	cr_assert(eq(int, journal_consumer_add(j, 7), 0));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 16 * MiB));

	/* resized while four batches are in flight from it */
	fill_pipeline(e, j, &last);
	journal_set_read_cache(j, 24 * MiB);
	cr_assert(eq(u64, stats(j).read_cache_bytes, 16 * MiB), "in use until they complete");
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, last));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 24 * MiB));
	read_range(e, j, 1, last, 3 * MiB, NULL);

	/* resized and back while in flight: it stays, and serves again */
	fill_pipeline(e, j, &last);
	journal_set_read_cache(j, 32 * MiB);
	journal_set_read_cache(j, 24 * MiB);
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, last));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 24 * MiB));
	read_range(e, j, 1, last, 3 * MiB, NULL);

	/* the new cache serves new batches */
	{
		uint64_t first = last + 1;
		struct reader rd;

		last = append_mixed_n(e, j, &c, 30, 5);
		reader_init(&rd, last, MiB, out);
		cr_assert(eq(int, journal_read_records(j, &rd.req), JOURNAL_READ_CACHED));
		check_output(j, &rd);
		read_range(e, j, first, last, 3 * MiB, NULL);
	}

	/* freed with the last consumer, again only once nothing is in flight */
	fill_pipeline(e, j, &last);
	cr_assert(eq(int, journal_consumer_remove(j, 7), 0));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 24 * MiB), "in use until they complete");
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, last));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 0));
	read_range(e, j, 1, last, 5 * MiB, NULL);

	/* and back, with a batch open in it when the journal closes */
	cr_assert(eq(int, journal_consumer_add(j, 8), 0));
	cr_assert(eq(u64, stats(j).read_cache_bytes, 24 * MiB));
	last = append_mixed_n(e, j, &c, 50, 7);
	last = append(j, JOURNAL_REC_WRITE, 8192);
	cr_assert(eq(u32, c.nerror, 0));
	journal_close(j);
	j = jopen(e, &c);
	read_range(e, j, 1, last, 5 * MiB, NULL);
	journal_close(j);
	io_engine_free(e);
}

/* sync: batches stay in flight until reaped; uring: the kernel has them */
Test(journal_reader, cache_changes_wait_for_batches_in_flight_sync)
{
	cache_changes_wait_for_batches_in_flight("sync");
}

Test(journal_reader, cache_changes_wait_for_batches_in_flight_uring)
{
	cache_changes_wait_for_batches_in_flight("uring");
}

/* Small records in full 2 MiB batches: a budget smaller than a batch still
 * gets many records per read (the index has points inside batches). */
Test(journal_reader, budget_smaller_than_a_batch)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t last = 0;
	unsigned calls;

	format(32 * MiB, 0);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 2000; i++)
		last = append(j, JOURNAL_REC_WRITE, 4096);
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, last));
	cr_assert(le(u64, stats(j).batches, 5), "full batches");
	calls = read_range(e, j, 1, last, 600 * KiB, NULL);
	cr_assert(le(u32, calls, 80), "%u calls for 8 MiB in 600 KiB reads", calls);
	/* and from the middle of a batch */
	calls = read_range(e, j, 777, last, 600 * KiB, NULL);
	cr_assert(le(u32, calls, 80));
	journal_close(j);
	io_engine_free(e);
}

/* The index after a reopen comes from recovery, not from the writer. */
Test(journal_reader, reads_after_reopen)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t last = 0, mid;

	format(64 * MiB, 0);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 300; i++) {
		last = append_mixed(j, i);
		if (i % 50 == 49) {
			journal_commit(j);
			drain(e);
		}
	}
	journal_close(j);
	mid = last;
	j = jopen(e, &c);
	cr_assert(eq(u64, stats(j).durable_seq, last));
	read_range(e, j, 1, last, 700 * KiB, NULL);
	read_range(e, j, 5, last, UINT32_MAX, NULL);
	/* new records after recovered ones */
	for (unsigned i = 0; i < 40; i++)
		last = append_mixed(j, i);
	journal_commit(j);
	drain(e);
	read_range(e, j, mid - 3, last, 2 * MiB, NULL);
	read_range(e, j, 1, last, UINT32_MAX, NULL);
	journal_close(j);
	io_engine_free(e);
}

/* Several reads in flight, each started at the previous one's last_seq + 1
 * before it completed. */
Test(journal_reader, pipelined_reads)
{
	enum { NR = 4 };
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct reader rd[NR];
	uint8_t *bufs[NR];
	uint64_t last, from = 1;

	format(64 * MiB, 0);
	j = jopen(e, &c);
	last = append_mixed_n(e, j, &c, 250, 10);
	for (unsigned k = 0; k < NR; k++) {
		bufs[k] = malloc(OUT_CAP);
		cr_assert(bufs[k] != NULL);
	}
	while (from <= last) {
		unsigned n = 0;

		for (; n < NR && from <= last; n++) {
			reader_init(&rd[n], from, 1500 * KiB, bufs[n]);
			cr_assert(eq(int, journal_read_records(j, &rd[n].req), 0));
			from = rd[n].req.last_seq + 1;
		}
		drain(e);
		for (unsigned k = 0; k < n; k++) {
			cr_assert(eq(u32, rd[k].ndone, 1));
			cr_assert(eq(int, rd[k].res, 0));
			check_output(j, &rd[k]);
			if (k)
				cr_assert(eq(u64, rd[k].req.first_seq, rd[k - 1].req.last_seq + 1));
		}
	}
	for (unsigned k = 0; k < NR; k++)
		free(bufs[k]);
	journal_close(j);
	io_engine_free(e);
}

/* A journal laps many times; a consumer releases what was read, and
 * reading follows the writer around the area. */
static void
wraps_around_cached(const char *engine_name, unsigned laps, uint64_t jsize, size_t cache)
{
	struct io_engine *e = engine(engine_name);
	struct ctx c = {0};
	struct journal *j;
	struct journal_stats st;
	uint64_t next_read = 1, last = 0, lap_seen = 0;
	unsigned i = 0, reads = 0;

	format(jsize, 0);
	j = jopen(e, &c);
	journal_set_read_cache(j, cache);
	cached_reads = borrowed_reads = 0;
	cr_assert(eq(int, journal_consumer_add(j, 42), 0));
	st = stats(j);
	while (stats(j).head_lpos < laps * st.area_size) {
		/* a few MiB per round: several rounds per lap */
		for (unsigned k = 0; k < 12; k++, i++)
			last = append_mixed(j, i);
		journal_commit(j);
		drain(e);
		cr_assert(eq(u64, c.durable_seq, last));
		/* the sender catches up, then releases */
		for (;;) {
			struct reader rd;
			int r;

			reader_init(&rd, next_read, (uint32_t)(i % 3 ? 1 * MiB : 5 * MiB), out);
			rd.req.may_borrow = reads % 2;
			r = read_sync(e, j, &rd);
			if (r == -EAGAIN)
				break;
			cr_assert(eq(int, r, 0), "read from %llu: %s",
			          (unsigned long long)next_read, strerror(-r));
			check_output(j, &rd);
			next_read = rd.req.last_seq + 1;
			reads++;
		}
		cr_assert(eq(u64, next_read, last + 1));
		cr_assert(eq(int, journal_consumer_release(j, 42, last), 0));
		journal_set_checkpoint(j, last + 1);
		drain(e);
		if (stats(j).head_lpos / st.area_size > lap_seen) {
			lap_seen = stats(j).head_lpos / st.area_size;
			/* released records are gone */
			if (stats(j).tail_seq > 1) {
				struct reader rd;

				reader_init(&rd, stats(j).tail_seq - 1, MiB, out);
				cr_assert(eq(int, journal_read_records(j, &rd.req), -ENOENT));
			}
		}
	}
	cr_assert(ge(u64, lap_seen, laps));
	cr_assert(eq(u32, c.nerror, 0));
	if (cache) {
		/* The sender keeps up: everything comes from memory, and most
		 * reads that may borrow (half of them) do. */
		cr_assert(eq(u32, cached_reads, reads));
		cr_assert(eq(u64, stats(j).read_cache_hits, reads));
		cr_assert(eq(u64, stats(j).read_cache_misses, 0));
		cr_assert(gt(u32, borrowed_reads, reads / 4));
	} else {
		cr_assert(eq(u32, cached_reads, 0));
	}
	cr_log_info("%u reads over %u laps, %u from the cache", reads, laps, cached_reads);
	journal_close(j);
	io_engine_free(e);
}

static void
wraps_around(const char *engine_name, unsigned laps)
{
	wraps_around_cached(engine_name, laps, JOURNAL_MIN_SIZE, 0);
}

Test(journal_reader, wraps_around_sync)
{
	wraps_around("sync", 6);
}

/* A cache smaller than the area: it laps several times per lap of the area. */
Test(journal_reader, wraps_around_from_the_read_cache)
{
	wraps_around_cached("sync", 3, 48 * MiB, 16 * MiB);
}

Test(journal_reader, wraps_around_uring)
{
	wraps_around("uring", 4);
}

/* A consumer holds records across laps of other writes... and across a
 * reopen: the retained range straddles the end of the area. */
Test(journal_reader, retained_range_across_the_area_end_after_reopen)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct journal_stats st;
	uint64_t last = 0, hold = 0;
	unsigned i = 0;

	format(JOURNAL_MIN_SIZE, 0);
	j = jopen(e, &c);
	cr_assert(eq(int, journal_consumer_add(j, 5), 0));
	st = stats(j);
	/* fill most of the first lap, release it but hold the last ~3 MiB */
	while (stats(j).head_lpos < st.area_size - 4 * MiB) {
		last = append(j, JOURNAL_REC_WRITE, 200000 + (i++ % 7) * 1000);
		journal_commit(j);
		drain(e);
	}
	hold = last - 12;
	cr_assert(eq(int, journal_consumer_release(j, 5, hold), 0));
	journal_set_checkpoint(j, last + 1);
	drain(e);
	/* go past the end of the area */
	while (stats(j).head_lpos < st.area_size + 3 * MiB) {
		last = append(j, JOURNAL_REC_WRITE, 300000 + (i++ % 5) * 512);
		journal_commit(j);
		drain(e);
	}
	cr_assert(le(u64, stats(j).tail_seq, hold + 1));
	read_range(e, j, hold + 1, last, 5 * MiB, NULL);
	read_range(e, j, hold + 1, last, UINT32_MAX, NULL);
	journal_close(j);
	j = jopen(e, &c);
	read_range(e, j, stats(j).tail_seq, last, 5 * MiB, NULL);
	read_range(e, j, hold + 1, last, 0, NULL);
	journal_close(j);
	io_engine_free(e);
}

/* Batches that fill a lap exactly: the records of the last batch of a lap
 * and the first of the next stand back to back in lpos but not on disk.
 * Recovery must not index them as one run. */
Test(journal_reader, batches_ending_exactly_at_the_area_end)
{
	const uint32_t rec_size = 8192, len = rec_size - JOURNAL_REC_HDR_SIZE;
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct journal_stats st;
	uint64_t last = 0, released = 0;

	format(JOURNAL_MIN_SIZE, 0);
	j = jopen(e, &c);
	cr_assert(eq(int, journal_consumer_add(j, 3), 0));
	st = stats(j);
	cr_assert(eq(u64, st.area_size % rec_size, 0), "area %llu",
	          (unsigned long long)st.area_size);
	/* Stop soon after the end, so the retained records (less than an index
	 * granule of them) straddle it: recovery then finds one contiguous run
	 * from the tail across the end. */
	while (stats(j).head_lpos < st.area_size + 64 * KiB) {
		uint64_t room = (st.area_size - stats(j).head_lpos % st.area_size) / rec_size;
		uint64_t n = room < 5 ? room : 5;

		for (uint64_t i = 0; i < n; i++)
			last = append(j, JOURNAL_REC_WRITE, len);
		journal_commit(j);
		drain(e);
		cr_assert(eq(u64, c.durable_seq, last));
		cr_assert(eq(u64, stats(j).head_lpos % rec_size, 0), "batches are contiguous");
		/* keep the last 20 records retained */
		if (last > 20) {
			released = last - 20;
			cr_assert(eq(int, journal_consumer_release(j, 3, released), 0));
			journal_set_checkpoint(j, last + 1);
			drain(e);
		}
	}
	cr_assert(lt(u64, stats(j).tail_lpos, st.area_size));
	read_range(e, j, stats(j).tail_seq, last, 4 * MiB, NULL);
	journal_close(j);
	j = jopen(e, &c);
	cr_assert(le(u64, stats(j).tail_seq, released + 1));
	cr_assert(lt(u64, stats(j).tail_lpos, st.area_size));
	read_range(e, j, stats(j).tail_seq, last, 4 * MiB, NULL);
	read_range(e, j, stats(j).tail_seq, last, UINT32_MAX, NULL);
	journal_close(j);
	io_engine_free(e);
}

/* --- errors --- */

Test(journal_reader, eagain_beyond_durable)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct reader rd;
	uint64_t last = 0;

	format(16 * MiB, 0);
	j = jopen(e, &c);
	reader_init(&rd, 1, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EAGAIN), "empty journal");
	for (unsigned i = 0; i < 10; i++)
		last = append(j, JOURNAL_REC_WRITE, 4096);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EAGAIN), "not committed");
	journal_commit(j);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EAGAIN), "not written yet");
	drain(e);
	cr_assert(eq(int, read_sync(e, j, &rd), 0));
	check_output(j, &rd);
	cr_assert(eq(u64, rd.req.last_seq, last));
	/* more appended but not durable: the read stops at durable */
	for (unsigned i = 0; i < 10; i++)
		append(j, JOURNAL_REC_WRITE, 4096);
	reader_init(&rd, 3, UINT32_MAX, out);
	cr_assert(eq(int, read_sync(e, j, &rd), 0));
	cr_assert(eq(u64, rd.req.last_seq, last));
	reader_init(&rd, last + 1, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EAGAIN));
	cr_assert(eq(u32, rd.ndone, 0));
	journal_close(j);
	io_engine_free(e);
}

Test(journal_reader, enoent_for_released_records)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct reader rd;
	uint64_t last = 0;

	format(16 * MiB, 0);
	j = jopen(e, &c);
	for (unsigned b = 0; b < 5; b++) {
		for (unsigned i = 0; i < 10; i++)
			last = append(j, JOURNAL_REC_WRITE, 8192);
		journal_commit(j);
		drain(e);
	}
	journal_set_checkpoint(j, 31);
	drain(e);
	cr_assert(eq(u64, stats(j).tail_seq, 31));
	reader_init(&rd, 30, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -ENOENT));
	reader_init(&rd, 0, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -ENOENT));
	reader_init(&rd, 1, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -ENOENT));
	cr_assert(eq(u32, rd.ndone, 0));
	reader_init(&rd, 31, UINT32_MAX, out);
	cr_assert(eq(int, read_sync(e, j, &rd), 0));
	cr_assert(eq(u64, rd.req.last_seq, last));
	check_output(j, &rd);
	journal_close(j);
	io_engine_free(e);
}

Test(journal_reader, rejects_bad_arguments)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct reader rd;

	format(16 * MiB, 0);
	j = jopen(e, &c);
	append(j, JOURNAL_REC_WRITE, 4096);
	journal_commit(j);
	drain(e);
	reader_init(&rd, 1, MiB, out);
	rd.req.out_cap = REC_MAX - 1;
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EINVAL));
	reader_init(&rd, 1, MiB, out);
	rd.req.out = NULL;
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EINVAL));
	reader_init(&rd, 1, MiB, out);
	rd.req.done = NULL;
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EINVAL));
	reader_init(&rd, 2, MiB, out);
	rd.req.max_seq = 1;
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EINVAL));
	/* the smallest buffer allowed holds a maximal record */
	reader_init(&rd, 1, UINT32_MAX, out);
	rd.req.out_cap = REC_MAX;
	cr_assert(eq(int, read_sync(e, j, &rd), 0));
	check_output(j, &rd);
	journal_close(j);
	io_engine_free(e);
}

/* Where record seq stands on disk (scanning the file like recovery). */
struct finder {
	int fd;
};

static int
file_read(void *arg, void *buf, size_t len, uint64_t offset)
{
	struct finder *f = arg;
	ssize_t n = pread(f->fd, buf, len, (off_t)offset);

	return n == (ssize_t)len ? 0 : -EIO;
}

static uint64_t
record_phys(const struct journal_sb *sb, uint64_t seq)
{
	struct finder f = {.fd = open(jpath, O_RDONLY)};
	struct journal_scan s;
	struct journal_rec rec;
	uint64_t lpos;

	cr_assert(ge(int, f.fd, 0));
	cr_assert(eq(int, journal_scan_init(&s, sb, file_read, &f), 0));
	while (journal_scan_next(&s, &rec, NULL, &lpos) == 1) {
		if (rec.seq == seq) {
			journal_scan_fini(&s);
			close(f.fd);
			return journal_phys(sb, lpos);
		}
	}
	journal_scan_fini(&s);
	close(f.fd);
	cr_assert(false, "record %llu not found", (unsigned long long)seq);
	return 0;
}

static void
flip_byte(uint64_t phys)
{
	int fd = open(jpath, O_RDWR);
	uint8_t b;

	cr_assert(ge(int, fd, 0));
	cr_assert(eq(long, pread(fd, &b, 1, (off_t)phys), 1));
	b ^= 0x40;
	cr_assert(eq(long, pwrite(fd, &b, 1, (off_t)phys), 1));
	cr_assert(eq(int, fsync(fd), 0));
	close(fd);
}

Test(journal_reader, damaged_record_is_ebadmsg)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct journal_sb sb;
	struct reader rd;
	uint64_t last = 0, phys25, phys45;

	format(16 * MiB, 0);
	j = jopen(e, &c);
	for (unsigned b = 0; b < 6; b++) {
		for (unsigned i = 0; i < 10; i++)
			last = append(j, JOURNAL_REC_WRITE, 5000);
		journal_commit(j);
		drain(e);
	}
	cr_assert(eq(u64, c.durable_seq, last));
	sb = *journal_get_sb(j);
	phys25 = record_phys(&sb, 25);
	phys45 = record_phys(&sb, 45);

	/* a payload byte of record 25 (batch 21..30) */
	flip_byte(phys25 + 64 + 1234);
	reader_init(&rd, 25, MiB, out);
	cr_assert(eq(int, read_sync(e, j, &rd), -EBADMSG));
	cr_assert(eq(u32, rd.req.out_len, 0));
	/* a read whose range holds it fails whole */
	reader_init(&rd, 21, UINT32_MAX, out);
	cr_assert(eq(int, read_sync(e, j, &rd), -EBADMSG));
	reader_init(&rd, 1, UINT32_MAX, out);
	rd.req.max_seq = 30;
	cr_assert(eq(int, read_sync(e, j, &rd), -EBADMSG));
	/* records around it read fine */
	read_range(e, j, 1, 20, MiB, NULL);
	read_range(e, j, 31, last, MiB, NULL);
	/* and a record before it in its batch, alone */
	reader_init(&rd, 22, 0, out);
	cr_assert(eq(int, read_sync(e, j, &rd), 0));
	check_output(j, &rd);

	/* a header byte (its seq field) of record 45 */
	flip_byte(phys45 + 17);
	reader_init(&rd, 41, UINT32_MAX, out);
	cr_assert(eq(int, read_sync(e, j, &rd), -EBADMSG));
	journal_close(j);
	io_engine_free(e);
}

/* Swaps the journal's O_DIRECT fd for a read-only one: every write fails. */
static void
break_journal_fd(void)
{
	char real[PATH_MAX], link[PATH_MAX], target[PATH_MAX];
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int found = -1, ro;

	cr_assert(realpath(jpath, real) != NULL);
	cr_assert(d != NULL);
	while ((de = readdir(d))) {
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (!strcmp(target, real))
			found = atoi(de->d_name);
	}
	closedir(d);
	cr_assert(ge(int, found, 0), "journal fd not found");
	ro = open(jpath, O_RDONLY);
	cr_assert(eq(int, dup2(ro, found), found));
	close(ro);
}

Test(journal_reader, failed_journal_is_eio)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct reader rd;

	format(16 * MiB, 0);
	j = jopen(e, &c);
	append(j, JOURNAL_REC_WRITE, 4096);
	journal_commit(j);
	drain(e);
	break_journal_fd();
	append(j, JOURNAL_REC_WRITE, 4096);
	journal_commit(j);
	drain(e);
	cr_assert(stats(j).failed);
	reader_init(&rd, 1, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EIO));
	journal_close(j);
	io_engine_free(e);
}

/* journal_close() completes reads in flight before it frees anything; new
 * reads are refused while it closes. */
static struct journal *closing_j;
static int reread_res;

static void
read_done_reread(struct journal_read_req *r, int res)
{
	read_done(r, res);
	reread_res = journal_read_records(closing_j, r);
}

Test(journal_reader, close_waits_for_reads_in_flight)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct reader rd[2];
	uint8_t *buf2 = malloc(OUT_CAP);

	cr_assert(buf2 != NULL);
	format(16 * MiB, 0);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 30; i++)
		append_mixed(j, i);
	journal_commit(j);
	drain(e);
	reader_init(&rd[0], 1, 512 * KiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd[0].req), 0));
	reader_init(&rd[1], rd[0].req.last_seq + 1, MiB, buf2);
	rd[1].req.done = read_done_reread;
	cr_assert(eq(int, journal_read_records(j, &rd[1].req), 0));
	closing_j = j;
	reread_res = 1;
	journal_close(j);
	cr_assert(eq(u32, rd[0].ndone, 1));
	cr_assert(eq(int, rd[0].res, 0));
	cr_assert(eq(u32, rd[1].ndone, 1));
	cr_assert(eq(int, rd[1].res, 0));
	cr_assert(eq(int, reread_res, -ECANCELED));
	/* the model still holds: check against it without the journal */
	{
		struct journal *j2 = jopen(e, &c);

		check_output(j2, &rd[0]);
		check_output(j2, &rd[1]);
		journal_close(j2);
	}
	free(buf2);
	io_engine_free(e);
}

/* --- first_seq --- */

Test(journal_reader, reads_from_a_journal_formatted_at_first_seq)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct reader rd;
	uint64_t last = 0;

	format(16 * MiB, 5000);
	j = jopen(e, &c);
	reader_init(&rd, 5000, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -EAGAIN));
	reader_init(&rd, 4999, MiB, out);
	cr_assert(eq(int, journal_read_records(j, &rd.req), -ENOENT));
	for (unsigned i = 0; i < 60; i++)
		last = append_mixed(j, i);
	cr_assert(eq(u64, last, 5059));
	journal_commit(j);
	drain(e);
	read_range(e, j, 5000, last, MiB, NULL);
	journal_close(j);
	j = jopen(e, &c);
	read_range(e, j, 5000, last, UINT32_MAX, NULL);
	journal_close(j);
	io_engine_free(e);
}
