/*
 * The live journal over real files and I/O engines: format, open/redo,
 * group commit, wrap-around, space, consumers, failure, crash and torn
 * batches, and journal dump. Runs on the sync engine, and on uring (skipped
 * where io_uring is refused) and fault where it matters.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/io.h"
#include "journal/journal.h"
#include "jrbd/journal_format.h"
#include "leak_check.h"

#define MiB (1ull << 20)

static char *tmpdir;
static char jpath[PATH_MAX];

static void
setup(void)
{
	tmpdir = test_tmpdir();
	cr_assert(tmpdir != NULL, "test_tmpdir");
	snprintf(jpath, sizeof(jpath), "%s/journal", tmpdir);
}

static void
teardown(void)
{
	if (tmpdir) {
		test_rm_rf(tmpdir);
		free(tmpdir);
		tmpdir = NULL;
	}
	test_leak_check();
}

TestSuite(journal, .init = setup, .fini = teardown, .timeout = 120);

/* --- helpers --- */

struct ctx {
	uint64_t durable_seq;
	unsigned ndurable;
	unsigned nspace;
	unsigned nerror;
	int err;
	/* redo */
	uint64_t redo_first, redo_last, redo_n;
	bool redo_bad;
	uint64_t redo_fail_seq; /* 0: never */
	uint32_t redo_epoch_max;
};

static void
on_durable(void *arg, uint64_t seq)
{
	struct ctx *c = arg;

	cr_assert(ge(u64, seq, c->durable_seq), "durable_seq went back");
	c->durable_seq = seq;
	c->ndurable++;
}

static void
on_space(void *arg)
{
	((struct ctx *)arg)->nspace++;
}

static void
on_error(void *arg, int err)
{
	struct ctx *c = arg;

	c->nerror++;
	c->err = err;
}

/* Payload bytes are a function of the record's volume offset, so redo can
 * check what it gets. */
static uint8_t
pattern(uint64_t offset, uint32_t i)
{
	return (uint8_t)((offset >> 9) * 131 + i * 7 + (i >> 8));
}

static void
fill(uint8_t *buf, uint64_t offset, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		buf[i] = pattern(offset, i);
}

static int
redo(void *arg, const struct journal_rec *rec, const void *payload)
{
	struct ctx *c = arg;
	const uint8_t *p = payload;

	if (c->redo_n == 0)
		c->redo_first = rec->seq;
	else if (rec->seq != c->redo_last + 1)
		c->redo_bad = true;
	c->redo_last = rec->seq;
	c->redo_n++;
	if (rec->epoch > c->redo_epoch_max)
		c->redo_epoch_max = rec->epoch;
	for (uint32_t i = 0; i < rec->payload_len; i++) {
		if (p[i] != pattern(rec->offset, i)) {
			c->redo_bad = true;
			break;
		}
	}
	if (c->redo_fail_seq && rec->seq == c->redo_fail_seq)
		return -EIO;
	return 0;
}

static const struct journal_ops ops = {
    .on_durable = on_durable,
    .on_space = on_space,
    .on_error = on_error,
    .redo = redo,
};

static void
format(uint64_t size)
{
	const char *vols[] = {"alpha", "beta"};
	struct journal_format_opts o = {
	    .size = size,
	    .group = "g1",
	    .nvolumes = 2,
	    .volumes = vols,
	    .role = JOURNAL_ROLE_MASTER,
	};
	int r = journal_format(jpath, &o);

	cr_assert(eq(int, r, 0), "journal_format: %s", strerror(-r));
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
	cr_assert(not(c->redo_bad), "redo saw a bad record");
	return j;
}

/* Appends one WRITE record of len bytes at volume offset off. */
static int
append_write(struct journal *j, uint64_t off, uint32_t len, uint64_t *ret_seq)
{
	static uint8_t buf[JOURNAL_MAX_PAYLOAD];
	struct journal_rec rec = {
	    .kind = JOURNAL_REC_WRITE,
	    .volume = 1,
	    .offset = off,
	    .length = len,
	    .payload_len = len,
	};
	int r;

	fill(buf, off, len);
	r = journal_append(j, &rec, buf);
	if (r == 0 && ret_seq)
		*ret_seq = rec.seq;
	return r;
}

static void
drain(struct io_engine *e)
{
	cr_assert(eq(int, io_engine_drain(e), 0));
}

static int
dump_quiet(const char *path)
{
	FILE *f = fopen("/dev/null", "w");
	int r;

	cr_assert(f != NULL);
	r = journal_dump(path, false, true, f);
	fclose(f);
	return r;
}

static struct journal_stats
stats(const struct journal *j)
{
	struct journal_stats st;

	journal_get_stats(j, &st);
	return st;
}

/* --- format --- */

Test(journal, format_rejects_bad_options)
{
	const char *vols[] = {"v"};
	const char *long_vol[] = {"0123456789012345678901234567890123456789"};
	struct journal_format_opts o = {
	    .size = 16 * MiB,
	    .group = "g",
	    .nvolumes = 1,
	    .volumes = vols,
	    .role = JOURNAL_ROLE_MASTER,
	};
	struct stat st;

	o.size = JOURNAL_MIN_SIZE - 4096;
	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
	cr_assert(eq(int, stat(jpath, &st), -1), "nothing created for a bad size");
	o.size = 16 * MiB;
	o.role = 0;
	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
	o.role = JOURNAL_ROLE_RESTORE;
	o.nvolumes = 33;
	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
	o.nvolumes = 1;
	o.volumes = long_vol;
	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
	o.volumes = vols;
	o.group = "0123456789012345678901234567890123456789012345678901234567890123";
	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
	/* an existing file too small, with size 0 = "use the file's size" */
	o.group = "g";
	o.size = 0;
	close(open(jpath, O_CREAT | O_WRONLY, 0600));
	cr_assert(eq(int, truncate(jpath, 8 * MiB), 0));
	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
}

Test(journal, format_writes_both_superblocks)
{
	static uint8_t buf[8192];
	struct journal_sb a, b, picked;
	unsigned slot;
	struct stat st;
	int fd;

	format(20 * MiB + 1000);
	cr_assert(eq(int, stat(jpath, &st), 0));
	cr_assert(eq(u64, (uint64_t)st.st_size, 20 * MiB + 1000));
	cr_assert(eq(u32, st.st_mode & 0777, 0600));
	fd = open(jpath, O_RDONLY);
	cr_assert(eq(long, pread(fd, buf, sizeof(buf), 0), (long)sizeof(buf)));
	close(fd);
	cr_assert(eq(int, journal_sb_decode(buf, 4096, &a), 0));
	cr_assert(eq(int, journal_sb_decode(buf + 4096, 4096, &b), 0));
	cr_assert(eq(int, journal_sb_pick(buf, &picked, &slot), 0));
	cr_assert(eq(u32, slot, 0));
	cr_assert(eq(u64, a.sb_gen, 1));
	cr_assert(eq(u64, b.sb_gen, 0));
	cr_assert(eq(u64, a.tail_seq, 1));
	cr_assert(eq(u64, a.ckpt_seq, 1));
	cr_assert(eq(u64, a.tail_lpos, 0));
	cr_assert(eq(u32, a.epoch, 0));
	cr_assert(eq(u64, a.area_start, 8192));
	cr_assert(eq(u64, a.area_size % a.align, 0));
	cr_assert(le(u64, a.area_start + a.area_size, a.journal_size));
	cr_assert_str_eq(a.group, "g1");
	cr_assert(eq(u16, a.nvolumes, 2));
	cr_assert_str_eq(a.volumes[0], "alpha");
	cr_assert_str_eq(a.volumes[1], "beta");
	cr_assert(eq(u16, a.role, JOURNAL_ROLE_MASTER));
	cr_assert(eq(int, memcmp(a.uuid, b.uuid, 16), 0));

	/* a reformat gets a new uuid, so old records can't validate */
	format(20 * MiB);
	fd = open(jpath, O_RDONLY);
	cr_assert(eq(long, pread(fd, buf, 4096, 0), 4096));
	close(fd);
	cr_assert(eq(int, journal_sb_decode(buf, 4096, &b), 0));
	cr_assert(ne(u64, a.seed, b.seed));
}

/* --- first_seq --- */

static char *dump_to_string(bool json, int *ret);

static void
format_at(uint64_t size, uint64_t first_seq)
{
	const char *vols[] = {"alpha", "beta"};
	struct journal_format_opts o = {
	    .size = size,
	    .group = "g1",
	    .nvolumes = 2,
	    .volumes = vols,
	    .role = JOURNAL_ROLE_RESTORE,
	    .first_seq = first_seq,
	};
	int r = journal_format(jpath, &o);

	cr_assert(eq(int, r, 0), "journal_format: %s", strerror(-r));
}

static struct journal_sb
read_sb(void)
{
	static uint8_t buf[8192];
	struct journal_sb sb;
	int fd = open(jpath, O_RDONLY);

	cr_assert(ge(int, fd, 0));
	cr_assert(eq(long, pread(fd, buf, sizeof(buf), 0), (long)sizeof(buf)));
	close(fd);
	cr_assert(eq(int, journal_sb_pick(buf, &sb, NULL), 0));
	return sb;
}

Test(journal, format_first_seq_zero_means_one)
{
	struct journal_sb sb;

	format_at(16 * MiB, 0);
	sb = read_sb();
	cr_assert(eq(u64, sb.tail_seq, 1));
	cr_assert(eq(u64, sb.ckpt_seq, 1));
	format_at(16 * MiB, 1);
	sb = read_sb();
	cr_assert(eq(u64, sb.tail_seq, 1));
}

Test(journal, format_rejects_a_first_seq_json_cannot_carry)
{
	const char *vols[] = {"v"};
	struct journal_format_opts o = {
	    .size = 16 * MiB,
	    .group = "g",
	    .nvolumes = 1,
	    .volumes = vols,
	    .role = JOURNAL_ROLE_RESTORE,
	    .first_seq = (uint64_t)INT64_MAX + 1,
	};
	struct stat st;

	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
	cr_assert(eq(int, stat(jpath, &st), -1), "nothing created");
	o.first_seq = UINT64_MAX;
	cr_assert(eq(int, journal_format(jpath, &o), -EINVAL));
	o.first_seq = (uint64_t)INT64_MAX;
	cr_assert(eq(int, journal_format(jpath, &o), 0));
	cr_assert(eq(u64, read_sb().tail_seq, (uint64_t)INT64_MAX));
}

static void
first_seq_numbers_records(const char *engine_name)
{
	struct io_engine *e = engine(engine_name);
	struct ctx c = {0};
	struct journal *j;
	struct journal_sb sb;
	uint64_t seq = 0;

	format_at(16 * MiB, 1000);
	sb = read_sb();
	cr_assert(eq(u64, sb.tail_seq, 1000));
	cr_assert(eq(u64, sb.ckpt_seq, 1000));
	cr_assert(eq(u64, sb.tail_lpos, 0));
	cr_assert(eq(u16, sb.role, JOURNAL_ROLE_RESTORE));
	/* an empty journal at 1000 */
	cr_assert(eq(int, dump_quiet(jpath), 0));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 0));
	cr_assert(eq(u64, stats(j).next_seq, 1000));
	cr_assert(eq(u64, stats(j).tail_seq, 1000));
	cr_assert(eq(u64, stats(j).durable_seq, 999), "nothing durable yet");
	cr_assert(eq(u64, stats(j).ckpt_seq, 1000));
	/* a consumer added now holds from the first record */
	cr_assert(eq(int, journal_consumer_add(j, 4), 0));
	drain(e);
	cr_assert(eq(u64, journal_get_sb(j)->consumers[0].released_seq, 999));
	cr_assert(eq(int, journal_consumer_release(j, 4, 1000), -EINVAL), "nothing written");
	for (unsigned i = 0; i < 10; i++) {
		cr_assert(eq(int, append_write(j, i * 4096ull, 4096, &seq), 0));
		cr_assert(eq(u64, seq, 1000 + i));
	}
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, 1009));
	journal_close(j);

	/* reopen: redo from 1000, and the sequence continues */
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 10));
	cr_assert(eq(u64, c.redo_first, 1000));
	cr_assert(eq(u64, c.redo_last, 1009));
	cr_assert(eq(u64, stats(j).next_seq, 1010));
	cr_assert(eq(u64, stats(j).durable_seq, 1009));
	cr_assert(eq(int, append_write(j, 0, 512, &seq), 0));
	cr_assert(eq(u64, seq, 1010));
	journal_commit(j);
	drain(e);
	/* release everything: the tail moves past the records */
	cr_assert(eq(int, journal_consumer_release(j, 4, 1010), 0));
	journal_set_checkpoint(j, 1011);
	drain(e);
	cr_assert(eq(u64, stats(j).tail_seq, 1011));
	cr_assert(eq(u64, stats(j).used_bytes, 0));
	journal_close(j);
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 0));
	cr_assert(eq(u64, stats(j).next_seq, 1011));
	journal_close(j);
	io_engine_free(e);
}

/* A resync restarts the restore journal in place: the old records stay on
 * disk but belong to the old seed, so the new log starts empty. */
Test(journal, reformat_in_place_keeps_the_area_and_forgets_the_records)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t seq = 0;
	const char *vols[] = {"alpha", "beta"};
	struct journal_format_opts o = {
	    .size = 16 * MiB,
	    .group = "g1",
	    .nvolumes = 2,
	    .volumes = vols,
	    .role = JOURNAL_ROLE_RESTORE,
	    .first_seq = 5000,
	    .reuse_area = true,
	};
	uint8_t *area = malloc(64 * 1024);
	int fd;

	format_at(16 * MiB, 100);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 20; i++)
		cr_assert(eq(int, append_write(j, i * 4096ull, 4096, &seq), 0));
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, 119));
	journal_close(j);
	cr_assert(eq(int, journal_format(jpath, &o), 0));
	/* The area was not rewritten: the old batches are still there. */
	fd = open(jpath, O_RDONLY);
	cr_assert(ge(int, fd, 0));
	cr_assert(eq(long, pread(fd, area, 64 * 1024, JOURNAL_AREA_START), 64 * 1024));
	close(fd);
	{
		bool nonzero = false;

		for (unsigned i = 0; i < 64 * 1024 && !nonzero; i++)
			nonzero = area[i] != 0;
		cr_assert(nonzero, "reuse_area zeroed the record area");
	}
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 0), "old records replayed after a reformat");
	cr_assert(eq(u64, stats(j).next_seq, 5000));
	cr_assert(eq(int, append_write(j, 0, 4096, &seq), 0));
	cr_assert(eq(u64, seq, 5000));
	journal_commit(j);
	drain(e);
	journal_close(j);
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 1));
	cr_assert(eq(u64, c.redo_first, 5000));
	journal_close(j);
	free(area);
	io_engine_free(e);
}

Test(journal, first_seq_numbers_records_sync)
{
	first_seq_numbers_records("sync");
}

Test(journal, first_seq_numbers_records_uring)
{
	first_seq_numbers_records("uring");
}

Test(journal, first_seq_in_the_dump)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	json_t *root, *recs, *sbj;
	json_error_t jerr;
	char *s;
	int r;

	format_at(16 * MiB, 1000);
	s = dump_to_string(false, &r);
	cr_assert(eq(int, r, 0), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "no records"), NULL)), "%s", s);
	free(s);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 3; i++)
		cr_assert(eq(int, append_write(j, i * 4096ull, 4096, NULL), 0));
	journal_close(j);

	s = dump_to_string(false, &r);
	cr_assert(eq(int, r, 0), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "  seq 1000 lpos 0 "), NULL)), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "  seq 1002 "), NULL)), "%s", s);
	cr_assert(eq(ptr, strstr(s, "  seq 1003 "), NULL), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "3 records, seq 1000..1002"), NULL)), "%s", s);
	free(s);

	s = dump_to_string(true, &r);
	cr_assert(eq(int, r, 0));
	root = json_loads(s, 0, &jerr);
	cr_assert(not(eq(ptr, root, NULL)), "bad JSON: %s: %s", jerr.text, s);
	sbj = json_object_get(root, "superblock");
	cr_assert(eq(i64, json_integer_value(json_object_get(sbj, "tail_seq")), 1000));
	cr_assert(eq(i64, json_integer_value(json_object_get(sbj, "ckpt_seq")), 1000));
	recs = json_object_get(root, "records");
	cr_assert(eq(sz, json_array_size(recs), 3));
	cr_assert(
	    eq(i64, json_integer_value(json_object_get(json_array_get(recs, 0), "seq")), 1000));
	cr_assert(eq(i64,
	             json_integer_value(json_object_get(json_object_get(root, "end"), "next_seq")),
	             1003));
	json_decref(root);
	free(s);
	io_engine_free(e);
}

/* --- open, append, redo --- */

Test(journal, open_bumps_the_epoch)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};

	format(16 * MiB);
	for (uint32_t i = 1; i <= 3; i++) {
		struct journal *j;

		memset(&c, 0, sizeof(c));
		j = jopen(e, &c);
		cr_assert(eq(u64, c.redo_n, i - 1));
		struct journal_rec rec = {.kind = JOURNAL_REC_MARKER};

		cr_assert(eq(u32, stats(j).epoch, i));
		cr_assert(eq(u32, journal_get_sb(j)->epoch, i));
		cr_assert(eq(int, journal_append(j, &rec, NULL), 0));
		cr_assert(eq(u32, rec.epoch, i));
		journal_close(j);
	}
	io_engine_free(e);
}

static void
append_reopen_redo(const char *engine_name)
{
	struct io_engine *e = engine(engine_name);
	struct ctx c = {0};
	struct journal *j;
	uint64_t seq = 0;

	format(64 * MiB);
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 0));
	cr_assert(eq(u64, stats(j).next_seq, 1));
	for (unsigned i = 0; i < 1000; i++) {
		uint32_t len = 512u * (1 + i % 17);

		if (i % 100 == 50) {
			struct journal_rec rec = {
			    .kind = JOURNAL_REC_TRIM, .offset = i * 4096ull, .length = 8192};

			cr_assert(eq(int, journal_append(j, &rec, NULL), 0));
			seq = rec.seq;
		} else {
			cr_assert(eq(int, append_write(j, i * 65536ull, len, &seq), 0));
		}
		cr_assert(eq(u64, seq, i + 1));
		if (i % 10 == 9) {
			journal_commit(j);
			drain(e);
			cr_assert(eq(u64, c.durable_seq, i + 1));
		}
	}
	/* Batches are 10 records each here, so 501 is a batch start. */
	journal_set_checkpoint(j, 501);
	drain(e);
	cr_assert(eq(u64, stats(j).durable_seq, 1000));
	cr_assert(eq(u64, stats(j).ckpt_seq, 501));
	journal_close(j);

	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 500));
	cr_assert(eq(u64, c.redo_first, 501));
	cr_assert(eq(u64, c.redo_last, 1000));
	cr_assert(eq(u64, stats(j).next_seq, 1001));
	cr_assert(eq(u64, stats(j).durable_seq, 1000));
	cr_assert(eq(u64, journal_get_sb(j)->ckpt_seq, 501));
	cr_assert(eq(u64, journal_get_sb(j)->tail_seq, 501));
	/* and appends continue the sequence */
	cr_assert(eq(int, append_write(j, 0, 4096, &seq), 0));
	cr_assert(eq(u64, seq, 1001));
	journal_close(j);

	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_first, 501));
	cr_assert(eq(u64, c.redo_last, 1001));
	journal_close(j);
	io_engine_free(e);
}

Test(journal, append_reopen_redo_sync)
{
	append_reopen_redo("sync");
}

Test(journal, append_reopen_redo_uring)
{
	append_reopen_redo("uring");
}

Test(journal, append_reopen_redo_fault)
{
	append_reopen_redo("fault");
}

/* The checkpoint is kept at batch granularity: redo may start a little
 * before it, never after. */
Test(journal, checkpoint_inside_a_batch_redoes_from_the_batch_start)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 40; i++) {
		cr_assert(eq(int, append_write(j, i * 4096ull, 4096, NULL), 0));
		if (i % 10 == 9) {
			journal_commit(j);
			drain(e);
		}
	}
	journal_set_checkpoint(j, 25);
	drain(e);
	journal_close(j);
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_first, 21));
	cr_assert(eq(u64, c.redo_last, 40));
	journal_close(j);
	io_engine_free(e);
}

Test(journal, redo_failure_aborts_open)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 10; i++)
		cr_assert(eq(int, append_write(j, i * 4096ull, 4096, NULL), 0));
	journal_close(j);
	c.redo_fail_seq = 5;
	j = NULL;
	cr_assert(eq(int, journal_open(jpath, e, &ops, &c, &j), -EIO));
	cr_assert(eq(ptr, j, NULL));
	/* nothing was written: the next open still sees everything */
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 10));
	cr_assert(eq(u32, stats(j).epoch, 2));
	journal_close(j);
	io_engine_free(e);
}

Test(journal, open_rejects_what_is_not_a_journal)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j = NULL;
	int fd = open(jpath, O_CREAT | O_RDWR, 0600);

	cr_assert(eq(int, ftruncate(fd, 16 * MiB), 0));
	close(fd);
	cr_assert(eq(int, journal_open(jpath, e, &ops, &c, &j), -EPROTO));
	cr_assert(eq(int, journal_open("/nonexistent/j", e, &ops, &c, &j), -ENOENT));
	cr_assert(eq(ptr, j, NULL));
	/* a journal whose file was truncated under it */
	format(32 * MiB);
	cr_assert(eq(int, truncate(jpath, 16 * MiB), 0));
	cr_assert(eq(int, journal_open(jpath, e, &ops, &c, &j), -EPROTO));
	io_engine_free(e);
}

Test(journal, append_rejects_bad_records)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint8_t buf[16] = {0};
	struct journal_rec rec;

	format(16 * MiB);
	j = jopen(e, &c);
	rec = (struct journal_rec){.kind = 0};
	cr_assert(eq(int, journal_append(j, &rec, NULL), -EINVAL));
	rec = (struct journal_rec){.kind = 77};
	cr_assert(eq(int, journal_append(j, &rec, NULL), -EINVAL));
	rec = (struct journal_rec){.kind = JOURNAL_REC_WRITE,
	                           .payload_len = JOURNAL_MAX_PAYLOAD + 1,
	                           .length = JOURNAL_MAX_PAYLOAD + 1};
	cr_assert(eq(int, journal_append(j, &rec, buf), -EINVAL));
	rec = (struct journal_rec){.kind = JOURNAL_REC_WRITE, .payload_len = 16, .length = 32};
	cr_assert(eq(int, journal_append(j, &rec, buf), -EINVAL));
	rec = (struct journal_rec){.kind = JOURNAL_REC_WRITE, .payload_len = 16, .length = 16};
	cr_assert(eq(int, journal_append(j, &rec, NULL), -EINVAL));
	rec = (struct journal_rec){.kind = JOURNAL_REC_TRIM, .payload_len = 16, .length = 16};
	cr_assert(eq(int, journal_append(j, &rec, buf), -EINVAL));
	rec = (struct journal_rec){.kind = JOURNAL_REC_ZERO, .offset = UINT64_MAX, .length = 2};
	cr_assert(eq(int, journal_append(j, &rec, NULL), -EINVAL));
	cr_assert(eq(u64, stats(j).next_seq, 1), "no seq consumed by a rejected record");
	/* the largest record is fine */
	cr_assert(eq(int, append_write(j, 0, JOURNAL_MAX_PAYLOAD, NULL), 0));
	journal_close(j);
	io_engine_free(e);
}

/* --- group commit --- */

Test(journal, group_commit_overhead_is_small)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct journal_stats st;
	double ratio;

	format(64 * MiB);
	j = jopen(e, &c);
	for (unsigned commit = 0; commit < 200; commit++) {
		for (unsigned i = 0; i < 32; i++)
			cr_assert(
			    eq(int, append_write(j, (commit * 32 + i) * 4096ull, 4096, NULL), 0));
		journal_commit(j);
		drain(e);
		/* keep space free */
		journal_set_checkpoint(j, c.durable_seq + 1);
	}
	drain(e);
	st = stats(j);
	cr_assert(eq(u64, st.records, 6400));
	cr_assert(eq(u64, st.batches, 200));
	cr_assert(eq(u64, st.payload_bytes, 6400ull * 4096));
	ratio = (double)st.bytes_written / (double)st.payload_bytes;
	cr_log_info("journal bytes / payload bytes = %.4f", ratio);
	fprintf(stderr, "journal: 32 x 4 KiB per commit: bytes_written/payload = %.4f\n", ratio);
	cr_assert(le(dbl, ratio, 1.05));
	journal_close(j);
	io_engine_free(e);
}

/* With the in-flight limit reached, commits don't submit: the open batch
 * keeps filling, and goes out when a slot frees. */
Test(journal, adaptive_group_commit_fills_the_open_batch)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 20; i++) {
		cr_assert(eq(int, append_write(j, i * 4096ull, 4096, NULL), 0));
		journal_commit(j); /* nothing reaped in between */
	}
	cr_assert(eq(u64, stats(j).batches, 4));
	cr_assert(eq(u64, c.durable_seq, 0));
	drain(e);
	cr_assert(eq(u64, stats(j).batches, 5));
	cr_assert(eq(u64, c.durable_seq, 20));
	cr_assert(eq(u64, stats(j).durable_seq, 20));
	journal_close(j);
	io_engine_free(e);
}

/* A commit with nothing appended writes nothing. */
Test(journal, empty_commit_writes_nothing)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;

	format(16 * MiB);
	j = jopen(e, &c);
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, stats(j).batches, 0));
	cr_assert(eq(u64, stats(j).bytes_written, 0));
	journal_close(j);
	io_engine_free(e);
}

/* Big records fill batches; full batches go without waiting for a commit. */
Test(journal, full_batches_are_submitted_without_a_commit)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;

	format(64 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 6; i++)
		cr_assert(eq(int, append_write(j, i * MiB, JOURNAL_MAX_PAYLOAD, NULL), 0));
	/* 1 MiB + 64 bytes each: one per 2 MiB batch; 5 sealed, 4 submitted */
	cr_assert(eq(u64, stats(j).batches, 4));
	cr_assert(not(stats(j).waiting_for_space), "the in-flight limit holds it, not space");
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, 6));
	journal_close(j);
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 6));
	journal_close(j);
	io_engine_free(e);
}

/* --- space --- */

/* Every batch buffer in flight (a slow disk) blocks appends too, with the
 * journal nearly empty: that is not a full journal. The pair layer tells
 * the two apart by waiting_for_space, and only suspends a pair for space. */
Test(journal, busy_batches_are_not_waiting_for_space)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t last = 0;
	unsigned n = 0;
	int r = 0;

	format(64 * MiB);
	j = jopen(e, &c);
	/* one record per batch, nothing reaped: the pool runs out */
	while (n < 64 && (r = append_write(j, n * MiB, JOURNAL_MAX_PAYLOAD, &last)) == 0)
		n++;
	cr_assert(eq(int, r, -EAGAIN), "the pool of batch buffers ran out");
	cr_assert(lt(u64, stats(j).used_bytes, stats(j).area_size / 2));
	cr_assert(not(stats(j).waiting_for_space));
	drain(e);
	cr_assert(eq(int, append_write(j, n * MiB, JOURNAL_MAX_PAYLOAD, &last), 0));
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, last));
	cr_assert(not(stats(j).waiting_for_space));
	journal_close(j);
	io_engine_free(e);
}

static void
wraps_around(const char *engine_name, uint64_t laps)
{
	struct io_engine *e = engine(engine_name);
	struct ctx c = {0};
	struct journal *j;
	struct journal_stats st;
	uint64_t off = 0, last = 0;

	format(16 * MiB);
	j = jopen(e, &c);
	st = stats(j);
	while (stats(j).head_lpos < laps * st.area_size) {
		for (unsigned i = 0; i < 7; i++) {
			uint32_t len = 4096u * (1 + (unsigned)(off / 4096 % 23));

			cr_assert(eq(int, append_write(j, off, len, &last), 0));
			off += len;
		}
		journal_commit(j);
		drain(e);
		cr_assert(eq(u64, c.durable_seq, last));
		/* checkpoint all but the last few records */
		journal_set_checkpoint(j, last > 10 ? last - 10 : 1);
		drain(e);
		cr_assert(le(u64, stats(j).used_bytes, 4 * MiB));
	}
	cr_assert(eq(u32, c.nerror, 0));
	journal_close(j);
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(le(u64, c.redo_first, last - 10));
	cr_assert(ge(u64, c.redo_first, last - 20));
	cr_assert(eq(u64, c.redo_last, last));
	cr_assert(eq(u64, stats(j).next_seq, last + 1));
	journal_close(j);
	cr_assert(eq(int, dump_quiet(jpath), 0));
	io_engine_free(e);
}

Test(journal, wraps_around_many_laps_sync)
{
	wraps_around("sync", 12);
}

Test(journal, wraps_around_many_laps_uring)
{
	wraps_around("uring", 5);
}

Test(journal, full_journal_returns_eagain_then_on_space)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	struct journal_stats st;
	uint64_t last = 0, off = 0;
	int r = 0;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned n = 0; n < 1000; n++) {
		r = append_write(j, off, 65536, &last);
		if (r < 0)
			break;
		off += 65536;
		journal_commit(j);
		drain(e);
	}
	cr_assert(eq(int, r, -EAGAIN));
	st = stats(j);
	cr_assert(gt(u64, st.used_bytes, st.area_size - 2 * MiB), "used %llu of %llu",
	          (unsigned long long)st.used_bytes, (unsigned long long)st.area_size);
	cr_assert(le(u64, st.used_bytes, st.area_size));
	cr_assert(lt(u64, c.durable_seq, last), "the last batches wait for space");
	cr_assert(eq(u32, c.nspace, 0));
	cr_assert(eq(u64, st.next_seq, last + 1), "-EAGAIN consumed no seq");
	cr_assert(st.waiting_for_space);

	/* releasing space lets the waiting batches go, then appends work again */
	journal_set_checkpoint(j, c.durable_seq + 1);
	drain(e);
	cr_assert(ge(u32, c.nspace, 1));
	cr_assert(not(stats(j).waiting_for_space));
	journal_commit(j);
	drain(e);
	journal_set_checkpoint(j, c.durable_seq + 1);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, last));
	cr_assert(eq(int, append_write(j, off, 65536, &last), 0));
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, last));
	journal_close(j);
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_last, last));
	journal_close(j);
	io_engine_free(e);
}

/* --- consumers --- */

Test(journal, consumers_hold_the_tail)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t last = 0;

	format(16 * MiB);
	j = jopen(e, &c);
	cr_assert(eq(int, journal_consumer_add(j, 7), 0));
	for (unsigned b = 0; b < 10; b++) {
		for (unsigned i = 0; i < 10; i++)
			cr_assert(eq(int, append_write(j, (b * 10 + i) * 4096ull, 4096, &last), 0));
		journal_commit(j);
		drain(e);
	}
	journal_set_checkpoint(j, last + 1);
	drain(e);
	/* the consumer released nothing: the tail stays, the checkpoint moves */
	cr_assert(eq(u64, stats(j).tail_seq, 1));
	cr_assert(eq(u64, journal_get_sb(j)->ckpt_seq, last + 1));
	cr_assert(eq(int, journal_consumer_release(j, 7, 30), 0));
	drain(e);
	cr_assert(eq(u64, stats(j).tail_seq, 31));
	cr_assert(eq(u64, journal_get_sb(j)->consumers[0].released_seq, 30));
	/* an older report is ignored */
	cr_assert(eq(int, journal_consumer_release(j, 7, 20), 0));
	drain(e);
	cr_assert(eq(u64, stats(j).tail_seq, 31));
	/* inside a batch: the tail stays at the batch start */
	cr_assert(eq(int, journal_consumer_release(j, 7, 45), 0));
	drain(e);
	cr_assert(eq(u64, stats(j).tail_seq, 41));
	cr_assert(eq(u64, journal_get_sb(j)->consumers[0].released_seq, 45));
	/* a release that moves nothing writes no superblock: the persisted
	 * release lags (after a crash the journal keeps more than needed,
	 * never less); close persists it */
	{
		uint64_t gen = journal_get_sb(j)->sb_gen;

		cr_assert(eq(int, journal_consumer_release(j, 7, 47), 0));
		drain(e);
		cr_assert(eq(u64, stats(j).tail_seq, 41));
		uint64_t rel = 0;

		cr_assert(eq(u64, journal_get_sb(j)->sb_gen, gen), "no superblock write");
		cr_assert(eq(u64, journal_get_sb(j)->consumers[0].released_seq, 45));
		cr_assert(eq(int, journal_consumer_released(j, 7, &rel), 0));
		cr_assert(eq(u64, rel, 47), "the live release");
		cr_assert(eq(int, journal_consumer_released(j, 8, &rel), -ENOENT));
	}
	journal_close(j);

	/* consumers persist */
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, journal_get_sb(j)->consumers[0].id, 7));
	cr_assert(eq(u64, journal_get_sb(j)->consumers[0].released_seq, 47));
	cr_assert(eq(u64, stats(j).tail_seq, 41));
	cr_assert(eq(u64, c.redo_n, 0), "everything was checkpointed");
	cr_assert(eq(int, journal_consumer_remove(j, 7), 0));
	drain(e);
	cr_assert(eq(u64, stats(j).tail_seq, last + 1));
	cr_assert(eq(u64, stats(j).used_bytes, 0));
	journal_close(j);
	io_engine_free(e);
}

Test(journal, consumer_errors)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;

	format(16 * MiB);
	j = jopen(e, &c);
	cr_assert(eq(int, journal_consumer_add(j, 0), -EINVAL));
	for (uint64_t id = 1; id <= JOURNAL_MAX_CONSUMERS; id++)
		cr_assert(eq(int, journal_consumer_add(j, id), 0));
	cr_assert(eq(int, journal_consumer_add(j, 3), -EEXIST));
	cr_assert(eq(int, journal_consumer_add(j, 100), -ENOSPC));
	cr_assert(eq(int, journal_consumer_remove(j, 100), -ENOENT));
	cr_assert(eq(int, journal_consumer_release(j, 100, 1), -ENOENT));
	cr_assert(eq(int, journal_consumer_release(j, 0, 1), -EINVAL));
	cr_assert(eq(int, journal_consumer_release(j, 3, 1), -EINVAL), "nothing written yet");
	cr_assert(eq(int, journal_consumer_remove(j, 3), 0));
	cr_assert(eq(int, journal_consumer_add(j, 100), 0));
	drain(e);
	journal_close(j);
	io_engine_free(e);
}

/* --- failure --- */

/* Swaps the journal's O_DIRECT fd for a read-only one: every write fails. */
static void
break_journal_fd(void)
{
	char real[PATH_MAX], link[PATH_MAX], target[PATH_MAX];
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int found = -1;

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
	{
		int ro = open(jpath, O_RDONLY);

		cr_assert(eq(int, dup2(ro, found), found));
		close(ro);
	}
}

Test(journal, failed_write_is_sticky)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t seq;

	format(16 * MiB);
	j = jopen(e, &c);
	cr_assert(eq(int, append_write(j, 0, 4096, &seq), 0));
	journal_commit(j);
	drain(e);
	cr_assert(eq(u64, c.durable_seq, 1));
	break_journal_fd();
	cr_assert(eq(int, append_write(j, 4096, 4096, NULL), 0));
	journal_commit(j);
	drain(e);
	cr_assert(eq(u32, c.nerror, 1));
	cr_assert(lt(int, c.err, 0));
	cr_assert(eq(u64, c.durable_seq, 1));
	cr_assert(stats(j).failed);
	cr_assert(eq(int, append_write(j, 8192, 4096, NULL), -EIO));
	journal_commit(j);
	journal_set_checkpoint(j, 2);
	drain(e);
	cr_assert(eq(u32, c.nerror, 1), "on_error once");
	journal_close(j);
	/* what was durable survives */
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_last, 1));
	journal_close(j);
	io_engine_free(e);
}

/* --- crashes --- */

/*
 * A child appends, commits and drains some batches (durable: reported to
 * the parent), submits more without reaping them, queues more without
 * submitting, then dies (the fault engine's crash, then _exit). Every durable
 * record must survive, nothing may be replayed out of order, and what was
 * never submitted can't appear.
 */
Test(journal, crash_keeps_every_durable_record)
{
	for (uint64_t round = 0; round < 4; round++) {
		int pfd[2];
		pid_t pid;
		uint64_t reported[2] = {0, 0};
		struct io_engine *e;
		struct ctx c = {0};
		struct journal *j;
		int status;

		format(16 * MiB);
		cr_assert(eq(int, pipe(pfd), 0));
		pid = fork();
		cr_assert(ge(int, pid, 0));
		if (pid == 0) {
			struct io_engine *ce = NULL;
			struct journal *cj = NULL;
			struct ctx cc = {0};
			uint64_t seq = 0, submitted = 0;

			if (io_engine_new("fault", 16, &ce) < 0 &&
			    io_engine_new("sync", 16, &ce) < 0)
				_exit(2);
			if (journal_open(jpath, ce, &ops, &cc, &cj) < 0)
				_exit(3);
			for (unsigned i = 0; i < 200 + round * 50; i++) {
				if (append_write(cj, i * 8192ull, 512u * (1 + i % 9), &seq) < 0)
					_exit(4);
				if (i % 7 == 6) {
					journal_commit(cj);
					if (i % 3 == 0)
						io_engine_drain(ce);
				}
			}
			/* on disk, not acknowledged */
			journal_commit(cj);
			io_engine_submit(ce);
			submitted = seq;
			/* only queued: lost */
			for (unsigned i = 0; i < 20; i++)
				append_write(cj, (1000 + i) * 8192ull, 4096, &seq);
			journal_commit(cj);
			if (!strcmp(io_engine_name(ce), "fault"))
				io_fault_crash(ce, IO_FAULT_RANDOM, round);
			reported[0] = cc.durable_seq;
			reported[1] = submitted;
			if (write(pfd[1], reported, sizeof(reported)) != sizeof(reported))
				_exit(5);
			_exit(0);
		}
		close(pfd[1]);
		cr_assert(
		    eq(long, read(pfd[0], reported, sizeof(reported)), (long)sizeof(reported)));
		close(pfd[0]);
		cr_assert(eq(int, waitpid(pid, &status, 0), pid));
		cr_assert(eq(int, WEXITSTATUS(status), 0));
		cr_assert(gt(u64, reported[0], 0));

		e = engine("sync");
		j = jopen(e, &c);
		cr_assert(eq(u64, c.redo_first, 1));
		cr_assert(ge(u64, c.redo_last, reported[0]), "a durable record was lost");
		cr_assert(le(u64, c.redo_last, reported[1]), "a record never written appeared");
		cr_assert(eq(u64, stats(j).next_seq, c.redo_last + 1));
		cr_assert(eq(u32, c.redo_epoch_max, 1));
		journal_close(j);
		io_engine_free(e);
	}
}

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

/* lpos and length of record seq, by scanning the closed journal. */
static void
find_record(uint64_t seq, struct journal_sb *ret_sb, uint64_t *ret_lpos, uint32_t *ret_len)
{
	static uint8_t buf[8192];
	struct finder f = {.fd = open(jpath, O_RDONLY)};
	struct journal_scan s;
	struct journal_rec rec;
	uint64_t lpos;

	cr_assert(ge(int, f.fd, 0));
	cr_assert(eq(long, pread(f.fd, buf, sizeof(buf), 0), (long)sizeof(buf)));
	cr_assert(eq(int, journal_sb_pick(buf, ret_sb, NULL), 0));
	cr_assert(eq(int, journal_scan_init(&s, ret_sb, file_read, &f), 0));
	while (journal_scan_next(&s, &rec, NULL, &lpos) == 1) {
		if (rec.seq == seq) {
			*ret_lpos = lpos;
			*ret_len = 64 + rec.payload_len;
			journal_scan_fini(&s);
			close(f.fd);
			return;
		}
	}
	journal_scan_fini(&s);
	close(f.fd);
	cr_assert(false, "record %llu not found", (unsigned long long)seq);
}

static void
tear(uint64_t phys, size_t len)
{
	int fd = open(jpath, O_WRONLY);
	uint8_t junk[256];

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	cr_assert(le(sz, len, sizeof(junk)));
	cr_assert(eq(long, pwrite(fd, junk, len, (off_t)phys), (long)len));
	close(fd);
}

/* Power loss tore the last batch in its middle: recovery ends before the
 * torn record, the next writer (new epoch) continues from there, and the
 * old batch's later records are never replayed. */
Test(journal, torn_batch_is_never_replayed)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal_sb sb;
	struct journal *j;
	uint64_t lpos, seq;
	uint32_t len;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 100; i++) {
		cr_assert(eq(int, append_write(j, i * 4096ull, 1000, NULL), 0));
		if (i % 10 == 9) {
			journal_commit(j);
			drain(e);
		}
	}
	journal_close(j);

	/* tear record 95's payload (the batch 91..100) */
	find_record(95, &sb, &lpos, &len);
	tear(journal_phys(&sb, lpos) + 64 + 500, 100);
	cr_assert(eq(int, dump_quiet(jpath), 1));

	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_last, 94));
	cr_assert(eq(u64, stats(j).next_seq, 95));
	/* the new epoch writes 95..97, a shorter batch than the torn one */
	for (unsigned i = 0; i < 3; i++) {
		cr_assert(eq(int, append_write(j, (5000 + i) * 4096ull, 1000, &seq), 0));
		cr_assert(eq(u64, seq, 95 + i));
	}
	journal_commit(j);
	drain(e);
	journal_close(j);

	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_first, 1));
	cr_assert(eq(u64, c.redo_last, 97), "old records 98.. must not come back");
	cr_assert(not(c.redo_bad));
	journal_close(j);

	/* tear a header: the log ends right before it */
	find_record(60, &sb, &lpos, &len);
	tear(journal_phys(&sb, lpos) + 10, 4);
	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_last, 59));
	journal_close(j);
	io_engine_free(e);
}

/* A log that doesn't reach its checkpoint can't take new records safely. */
Test(journal, log_ending_before_the_checkpoint_is_refused)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal_sb sb;
	struct journal *j = NULL;
	uint64_t lpos;
	uint32_t len;

	format(16 * MiB);
	j = jopen(e, &c);
	/* a consumer keeps the tail at 1 while the checkpoint moves to 21 */
	cr_assert(eq(int, journal_consumer_add(j, 1), 0));
	for (unsigned i = 0; i < 30; i++) {
		cr_assert(eq(int, append_write(j, i * 4096ull, 1000, NULL), 0));
		if (i % 10 == 9) {
			journal_commit(j);
			drain(e);
		}
	}
	journal_set_checkpoint(j, 21);
	drain(e);
	journal_close(j);
	find_record(15, &sb, &lpos, &len);
	tear(journal_phys(&sb, lpos) + 64, 8);
	j = NULL;
	cr_assert(eq(int, journal_open(jpath, e, &ops, &c, &j), -EUCLEAN));
	cr_assert(eq(ptr, j, NULL));
	io_engine_free(e);
}

/* --- dump --- */

static char *
dump_to_string(bool json, int *ret)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	cr_assert(f != NULL);
	*ret = journal_dump(jpath, json, true, f);
	fclose(f);
	return s;
}

Test(journal, dump_text_and_json)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	json_t *root, *recs, *end;
	json_error_t jerr;
	char *s;
	int r;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 5; i++)
		cr_assert(eq(int, append_write(j, i * 4096ull, 4096, NULL), 0));
	{
		struct journal_rec rec = {.kind = JOURNAL_REC_MARKER, .volume = 9};

		cr_assert(eq(int, journal_append(j, &rec, NULL), 0));
	}
	journal_close(j);

	s = dump_to_string(false, &r);
	cr_assert(eq(int, r, 0), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "'g1'"), NULL)), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "'beta'"), NULL)), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "seq 6"), NULL)), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "clean end"), NULL)), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "Z csum ok"), NULL)), "%s", s);
	free(s);

	s = dump_to_string(true, &r);
	cr_assert(eq(int, r, 0));
	root = json_loads(s, 0, &jerr);
	cr_assert(not(eq(ptr, root, NULL)), "bad JSON: %s: %s", jerr.text, s);
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(root, "superblock"), "group")), "g1");
	recs = json_object_get(root, "records");
	cr_assert(eq(sz, json_array_size(recs), 6));
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "volume_name")),
	                 "beta");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(recs, 5), "kind")),
	                 "marker");
	cr_assert(eq(ptr, json_object_get(json_array_get(recs, 5), "volume_name"), NULL));
	end = json_object_get(root, "end");
	cr_assert_str_eq(json_string_value(json_object_get(end, "reason")), "end");
	json_decref(root);
	free(s);
	io_engine_free(e);
}

Test(journal, dump_explains_a_missing_superblock)
{
	char *s;
	int r, fd;

	format(16 * MiB);
	fd = open(jpath, O_WRONLY);
	/* A: one flipped byte (bad checksum); B: zeroed (bad magic) */
	cr_assert(eq(long, pwrite(fd, "X", 1, 300), 1));
	{
		static uint8_t zero[4096];

		cr_assert(eq(long, pwrite(fd, zero, sizeof(zero), 4096), 4096));
	}
	close(fd);
	s = dump_to_string(false, &r);
	cr_assert(lt(int, r, 0));
	cr_assert(
	    not(eq(ptr, strstr(s, "superblock A: bad checksum; superblock B: bad magic"), NULL)),
	    "%s", s);
	free(s);
	s = dump_to_string(true, &r);
	cr_assert(lt(int, r, 0));
	cr_assert(not(eq(ptr, strstr(s, "\"error\""), NULL)), "%s", s);
	free(s);
	cr_assert(lt(int, dump_quiet("/nonexistent/j"), 0));
}

Test(journal, dump_from_the_checkpoint_only)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	char *s = NULL;
	size_t n = 0;
	FILE *f;

	format(16 * MiB);
	j = jopen(e, &c);
	cr_assert(eq(int, journal_consumer_add(j, 9), 0)); /* keeps 1..10 retained */
	for (unsigned i = 0; i < 20; i++) {
		cr_assert(eq(int, append_write(j, i * 4096ull, 512, NULL), 0));
		if (i % 10 == 9) {
			journal_commit(j);
			drain(e);
		}
	}
	journal_set_checkpoint(j, 11);
	drain(e);
	journal_close(j);
	f = open_memstream(&s, &n);
	cr_assert(eq(int, journal_dump(jpath, false, false, f), 0));
	fclose(f);
	cr_assert(eq(ptr, strstr(s, "seq 10 "), NULL), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "seq 11 "), NULL)), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "20 records"), NULL)), "%s", s);
	free(s);
	io_engine_free(e);
}

/* A journal file cut short: the dump reports a read error where it ends. */
Test(journal, dump_of_a_truncated_journal)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	char *s;
	int r;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 10; i++)
		cr_assert(eq(int, append_write(j, i * 4096ull, 8192, NULL), 0));
	journal_close(j);
	cr_assert(eq(int, truncate(jpath, 8192 + 30000), 0));
	s = dump_to_string(false, &r);
	cr_assert(eq(int, r, -EIO), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "seq 3 "), NULL)), "%s", s);
	cr_assert(not(eq(ptr, strstr(s, "read error"), NULL)), "%s", s);
	free(s);
	io_engine_free(e);
}

/* Everything released: the tail sits at the (unaligned) head; the next open
 * finds no record there and the next batch after the padding. */
Test(journal, reopen_with_an_empty_log_continues_the_sequence)
{
	struct io_engine *e = engine("sync");
	struct ctx c = {0};
	struct journal *j;
	uint64_t seq = 0;

	format(16 * MiB);
	j = jopen(e, &c);
	for (unsigned i = 0; i < 10; i++)
		cr_assert(eq(int, append_write(j, i * 4096ull, 100, &seq), 0));
	journal_commit(j);
	drain(e);
	journal_set_checkpoint(j, seq + 1);
	drain(e);
	cr_assert(eq(u64, stats(j).used_bytes, 0));
	cr_assert(eq(u64, journal_get_sb(j)->tail_seq, 11));
	journal_close(j);

	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_n, 0));
	cr_assert(eq(u64, stats(j).next_seq, 11));
	for (unsigned i = 0; i < 5; i++)
		cr_assert(eq(int, append_write(j, i * 4096ull, 100, &seq), 0));
	cr_assert(eq(u64, seq, 15));
	journal_close(j);

	memset(&c, 0, sizeof(c));
	j = jopen(e, &c);
	cr_assert(eq(u64, c.redo_first, 11));
	cr_assert(eq(u64, c.redo_last, 15));
	cr_assert(eq(u32, stats(j).epoch, 3));
	journal_close(j);
	io_engine_free(e);
}
