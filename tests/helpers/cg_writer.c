/*
 * Consistency-group workload (libnbd): dependent writes across two volumes of
 * one group, and a checker that a volume pair is the image of one instant.
 *
 * `write` mode runs NTHREADS writer threads, each with its own NBD
 * connection to each export and its own disjoint range of SLOTS/NTHREADS
 * slots. Thread t loops i = 1, 2, ...:
 *
 *   1. writes record i, one 4 KiB write, into rec at slot s = base_t + i % per
 *      (offset s * 4096): a header {magic, i, thread, slot, body checksum}
 *      and a body derived from (thread, i); waits for the ack;
 *   2. writes marker i, one 512-byte write, into mark at sector s: {magic, i,
 *      thread, slot, checksum of the whole record block, own checksum};
 *      waits for the ack.
 *
 * Record i+1 is only issued once marker i is acknowledged, so at every
 * instant of the primary, thread t's slots hold exactly records 1..R and
 * markers 1..M (each slot the newest of its numbers) with R == M or
 * R == M + 1.
 *
 * `check` mode reads the two image files and verifies:
 *   - every non-zero record block is a whole, valid record of its slot (not
 *     torn), every non-zero marker sector a valid marker of its slot;
 *   - the group invariant: a marker for i in slot s needs rec slot s to hold
 *     a valid record j >= i (j == i: the marker's record checksum matches);
 *   - the stronger exact-prefix property above, per thread.
 * It prints the counts and exits 1 naming the first violating slot.
 *
 *   cg_writer write REC_URI MARK_URI SECONDS [NTHREADS [SLOTS]]
 *   cg_writer check REC_FILE MARK_FILE [NTHREADS [SLOTS]]
 *
 * Defaults: 8 threads, 4096 slots (16 MiB of rec, 2 MiB of mark).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REC_BS 4096u
#define MARK_BS 512u
#define REC_MAGIC 0x3143455247474343ull  /* "CCGGREC1" */
#define MARK_MAGIC 0x314b524d47474343ull /* "CCGGMRK1" */
#define DEF_THREADS 8u
#define DEF_SLOTS 4096u

struct rec_hdr {
	uint64_t magic;
	uint64_t num;
	uint32_t thread;
	uint32_t slot;
	uint64_t body_sum;
};

struct mark_blk {
	uint64_t magic;
	uint64_t num;
	uint32_t thread;
	uint32_t slot;
	uint64_t rec_sum; /* of the whole 4 KiB record block */
	uint64_t self_sum; /* of the bytes before it */
};

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static uint64_t
sum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return mix(h);
}

static void
make_record(uint8_t *buf, uint32_t thread, uint32_t slot, uint64_t num)
{
	struct rec_hdr *h = (void *)buf;
	uint64_t *body = (uint64_t *)(void *)(buf + sizeof(*h));
	size_t nwords = (REC_BS - sizeof(*h)) / 8;

	for (size_t k = 0; k < nwords; k++)
		body[k] = mix(num * 0x9e3779b97f4a7c15ull + thread * 1000003ull + k);
	h->magic = REC_MAGIC;
	h->num = num;
	h->thread = thread;
	h->slot = slot;
	h->body_sum = sum(body, nwords * 8);
}

static void
make_marker(uint8_t *buf, uint32_t thread, uint32_t slot, uint64_t num, const uint8_t *rec)
{
	struct mark_blk *m = (void *)buf;

	memset(buf, 0, MARK_BS);
	m->magic = MARK_MAGIC;
	m->num = num;
	m->thread = thread;
	m->slot = slot;
	m->rec_sum = sum(rec, REC_BS);
	m->self_sum = sum(m, offsetof(struct mark_blk, self_sum));
}

static bool
all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* --- write --- */

struct writer {
	pthread_t tid;
	const char *rec_uri, *mark_uri;
	uint32_t thread, base, per;
	time_t end;
	uint64_t done; /* markers acknowledged */
	int rc;
	char err[512];
};

static atomic_bool stop;

static void
on_term(int sig)
{
	(void)sig;
	atomic_store(&stop, true);
}

static void *
writer_main(void *arg)
{
	struct writer *w = arg;
	struct nbd_handle *hr = nbd_create(), *hm = nbd_create();
	uint8_t *rec = aligned_alloc(REC_BS, REC_BS), *mark = aligned_alloc(MARK_BS, MARK_BS);

	w->rc = 2;
	if (!hr || !hm || !rec || !mark) {
		snprintf(w->err, sizeof(w->err), "out of memory");
		goto out;
	}
	if (nbd_connect_uri(hr, w->rec_uri) < 0 || nbd_connect_uri(hm, w->mark_uri) < 0) {
		snprintf(w->err, sizeof(w->err), "connect: %s", nbd_get_error());
		goto out;
	}
	if ((uint64_t)nbd_get_size(hr) < (uint64_t)(w->base + w->per) * REC_BS ||
	    (uint64_t)nbd_get_size(hm) < (uint64_t)(w->base + w->per) * MARK_BS) {
		snprintf(w->err, sizeof(w->err), "exports too small for the slots");
		goto out;
	}
	for (uint64_t i = 1; !atomic_load(&stop) && time(NULL) < w->end; i++) {
		uint32_t slot = w->base + (uint32_t)(i % w->per);

		make_record(rec, w->thread, slot, i);
		if (nbd_pwrite(hr, rec, REC_BS, (uint64_t)slot * REC_BS, 0) < 0) {
			snprintf(w->err, sizeof(w->err), "record %" PRIu64 " slot %u: %s", i, slot,
				 nbd_get_error());
			goto out;
		}
		make_marker(mark, w->thread, slot, i, rec);
		if (nbd_pwrite(hm, mark, MARK_BS, (uint64_t)slot * MARK_BS, 0) < 0) {
			snprintf(w->err, sizeof(w->err), "marker %" PRIu64 " slot %u: %s", i, slot,
				 nbd_get_error());
			goto out;
		}
		w->done = i;
	}
	w->rc = 0;
	nbd_shutdown(hr, 0);
	nbd_shutdown(hm, 0);
out:
	nbd_close(hr);
	nbd_close(hm);
	free(rec);
	free(mark);
	return NULL;
}

static int
do_write(const char *rec_uri, const char *mark_uri, unsigned seconds, uint32_t nthreads,
         uint32_t nslots)
{
	struct writer *ws = calloc(nthreads, sizeof(*ws));
	struct sigaction sa = {.sa_handler = on_term};
	uint32_t per = nslots / nthreads;
	uint64_t total = 0;
	struct timespec t0, t1;
	int rc = 0;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint32_t t = 0; t < nthreads; t++) {
		ws[t] = (struct writer){.rec_uri = rec_uri, .mark_uri = mark_uri, .thread = t,
		                        .base = t * per, .per = per,
		                        .end = time(NULL) + (time_t)seconds};
		if (pthread_create(&ws[t].tid, NULL, writer_main, &ws[t]) != 0) {
			fprintf(stderr, "cg_writer: pthread_create failed\n");
			exit(2);
		}
	}
	for (uint32_t t = 0; t < nthreads; t++) {
		pthread_join(ws[t].tid, NULL);
		if (ws[t].rc) {
			fprintf(stderr, "cg_writer: thread %u: %s\n", t, ws[t].err);
			rc = ws[t].rc;
		}
		total += ws[t].done;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%" PRIu64 " record+marker pairs by %u threads in %.1f s (%.0f pairs/s), "
	       "%u slots (each rewritten ~%" PRIu64 " times)\n",
	       total, nthreads, secs, secs > 0 ? (double)total / secs : 0.0, per * nthreads,
	       total / (per * nthreads));
	free(ws);
	return rc;
}

/* --- check --- */

static uint8_t *
read_file(const char *path, size_t need)
{
	int fd = open(path, O_RDONLY);
	uint8_t *buf;
	size_t got = 0;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "cg_writer: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	if ((size_t)st.st_size < need) {
		fprintf(stderr, "cg_writer: %s: %lld bytes, need %zu\n", path, (long long)st.st_size,
			need);
		exit(2);
	}
	buf = malloc(need ? need : 1);
	if (!buf) {
		fprintf(stderr, "cg_writer: out of memory\n");
		exit(2);
	}
	while (got < need) {
		ssize_t n = pread(fd, buf + got, need - got, (off_t)got);

		if (n <= 0) {
			fprintf(stderr, "cg_writer: read %s: %s\n", path,
				n < 0 ? strerror(errno) : "short file");
			exit(2);
		}
		got += (size_t)n;
	}
	close(fd);
	return buf;
}

static int violations;

static void __attribute__((format(printf, 1, 2)))
violation(const char *fmt, ...)
{
	va_list ap;

	if (violations++ >= 20)
		return;
	fputs("cg_writer: VIOLATION: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* 1: valid record (number in *num), 0: all zero, -1: bad (reported). */
static int
check_record(const uint8_t *blk, uint32_t slot, uint32_t thread, uint64_t *num)
{
	const struct rec_hdr *h = (const void *)blk;
	uint8_t want[REC_BS];

	if (all_zero(blk, REC_BS))
		return 0;
	if (h->magic != REC_MAGIC || h->slot != slot || h->thread != thread || h->num == 0) {
		violation("rec slot %u (offset %llu): not a record of this slot (magic %016llx, "
			  "slot %u, thread %u, number %llu): torn or misplaced",
			  slot, (unsigned long long)slot * REC_BS, (unsigned long long)h->magic,
			  h->slot, h->thread, (unsigned long long)h->num);
		return -1;
	}
	make_record(want, thread, slot, h->num);
	if (h->body_sum != sum(blk + sizeof(*h), REC_BS - sizeof(*h)) ||
	    memcmp(want, blk, REC_BS) != 0) {
		violation("rec slot %u (offset %llu): record %llu is torn (body checksum mismatch)",
			  slot, (unsigned long long)slot * REC_BS, (unsigned long long)h->num);
		return -1;
	}
	*num = h->num;
	return 1;
}

static int
check_marker(const uint8_t *blk, uint32_t slot, uint32_t thread, uint64_t *num,
             uint64_t *rec_sum)
{
	const struct mark_blk *m = (const void *)blk;

	if (all_zero(blk, MARK_BS))
		return 0;
	if (m->magic != MARK_MAGIC || m->slot != slot || m->thread != thread || m->num == 0 ||
	    m->self_sum != sum(m, offsetof(struct mark_blk, self_sum)) ||
	    !all_zero(blk + sizeof(*m), MARK_BS - sizeof(*m))) {
		violation("mark slot %u (offset %llu): not a valid marker of this slot (magic "
			  "%016llx, slot %u, thread %u, number %llu)",
			  slot, (unsigned long long)slot * MARK_BS, (unsigned long long)m->magic,
			  m->slot, m->thread, (unsigned long long)m->num);
		return -1;
	}
	*num = m->num;
	*rec_sum = m->rec_sum;
	return 1;
}

static int
do_check(const char *rec_path, const char *mark_path, uint32_t nthreads, uint32_t nslots)
{
	uint32_t per = nslots / nthreads;
	uint32_t used = per * nthreads;
	uint8_t *rec = read_file(rec_path, (size_t)used * REC_BS);
	uint8_t *mark = read_file(mark_path, (size_t)used * MARK_BS);
	uint64_t *rnum = calloc(used, 8), *mnum = calloc(used, 8), *msum = calloc(used, 8);
	uint64_t markers = 0, records = 0, max_marker = 0, max_record = 0, pending = 0;

	if (!rnum || !mnum || !msum) {
		fprintf(stderr, "cg_writer: out of memory\n");
		exit(2);
	}

	/* Every block whole and in its slot. */
	for (uint32_t s = 0; s < used; s++) {
		uint32_t t = s / per;

		if (check_record(rec + (size_t)s * REC_BS, s, t, &rnum[s]) > 0)
			records++;
		if (check_marker(mark + (size_t)s * MARK_BS, s, t, &mnum[s], &msum[s]) > 0)
			markers++;
		if (rnum[s] > max_record)
			max_record = rnum[s];
		if (mnum[s] > max_marker)
			max_marker = mnum[s];
	}
	/* No marker without its record (or a newer record of its slot). */
	for (uint32_t s = 0; s < used; s++) {
		if (!mnum[s])
			continue;
		if (rnum[s] < mnum[s]) {
			if (rnum[s])
				violation("slot %u: marker %llu committed, but rec slot holds older "
					  "record %llu: the marker arrived without its record",
					  s, (unsigned long long)mnum[s], (unsigned long long)rnum[s]);
			else
				violation("slot %u: marker %llu committed, but rec slot is empty: the "
					  "marker arrived without its record",
					  s, (unsigned long long)mnum[s]);
		} else if (rnum[s] == mnum[s] &&
		           msum[s] != sum(rec + (size_t)s * REC_BS, REC_BS)) {
			violation("slot %u: marker %llu does not match the record's checksum", s,
				  (unsigned long long)mnum[s]);
		}
	}
	/* Exact prefix per thread: records 1..R, markers 1..M, R in {M, M+1}, each
	 * slot holding the newest number of its residue. */
	for (uint32_t t = 0; t < nthreads; t++) {
		uint64_t R = 0, M = 0;

		for (uint32_t k = 0; k < per; k++) {
			uint32_t s = t * per + k;

			R = rnum[s] > R ? rnum[s] : R;
			M = mnum[s] > M ? mnum[s] : M;
		}
		if (R != M && R != M + 1) {
			violation("thread %u: newest record %llu, newest marker %llu: not the image "
				  "of one instant (want record == marker or marker + 1)",
				  t, (unsigned long long)R, (unsigned long long)M);
			continue;
		}
		pending += R - M;
		for (uint32_t k = 0; k < per; k++) {
			uint32_t s = t * per + k;
			/* Newest n <= L with n % per == k, n >= 1; 0 if none. */
			uint64_t wr = 0, wm = 0;

			if (R >= k && (R - k) / per * per + k >= 1)
				wr = (R - k) / per * per + k;
			if (M >= k && (M - k) / per * per + k >= 1)
				wm = (M - k) / per * per + k;
			if (rnum[s] != wr)
				violation("thread %u slot %u: holds record %llu, the instant with "
					  "records 1..%llu has %llu there (a lost or stale record)",
					  t, s, (unsigned long long)rnum[s], (unsigned long long)R,
					  (unsigned long long)wr);
			if (mnum[s] != wm)
				violation("thread %u slot %u: holds marker %llu, the instant with "
					  "markers 1..%llu has %llu there (a lost or stale marker)",
					  t, s, (unsigned long long)mnum[s], (unsigned long long)M,
					  (unsigned long long)wm);
		}
	}
	free(rec);
	free(mark);
	free(rnum);
	free(mnum);
	free(msum);
	if (violations) {
		fprintf(stderr, "cg_writer: %d violation(s) in %s / %s (%" PRIu64 " markers, %" PRIu64
			" records, newest marker %" PRIu64 ")\n",
			violations, rec_path, mark_path, markers, records, max_marker);
		return 1;
	}
	printf("%" PRIu64 " markers checked, %" PRIu64 " records, newest marker %" PRIu64
	       ", newest record %" PRIu64 ", %" PRIu64 " records ahead of their marker\n",
	       markers, records, max_marker, max_record, pending);
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: cg_writer write REC_URI MARK_URI SECONDS [NTHREADS [SLOTS]]\n"
			"       cg_writer check REC_FILE MARK_FILE [NTHREADS [SLOTS]]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	uint32_t nthreads = DEF_THREADS, nslots = DEF_SLOTS;
	int nargs;

	if (argc < 2)
		usage();
	nargs = strcmp(argv[1], "write") == 0 ? 5 : 4;
	if (argc < nargs || argc > nargs + 2)
		usage();
	if (argc > nargs)
		nthreads = (uint32_t)strtoul(argv[nargs], NULL, 0);
	if (argc > nargs + 1)
		nslots = (uint32_t)strtoul(argv[nargs + 1], NULL, 0);
	if (nthreads == 0 || nthreads > 256 || nslots < nthreads || nslots / nthreads < 2)
		usage();
	if (strcmp(argv[1], "write") == 0)
		return do_write(argv[2], argv[3], (unsigned)strtoul(argv[4], NULL, 0), nthreads,
				nslots);
	if (strcmp(argv[1], "check") == 0)
		return do_check(argv[2], argv[3], nthreads, nslots);
	usage();
	return 2;
}
