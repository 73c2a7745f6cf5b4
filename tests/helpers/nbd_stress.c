/*
 * Crash-test client (libnbd). `write` mode writes self-describing 4 KiB blocks
 * at random with up to 16 requests in flight, flushes every few writes, and
 * after each FLUSH completes records durably (state file, fsync + rename)
 * which generation of every block the flush made durable. It keeps going
 * until its time is up or the server dies under it. `verify` mode reads every
 * block and checks that each 512-byte sector holds a valid pattern of its
 * block, with a generation at least the flushed one: no acknowledged and
 * flushed write is lost, and nothing is garbage.
 *
 *   nbd_stress write  URI STATE NBLOCKS SECONDS SEED
 *   nbd_stress verify URI STATE
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BS 4096u
#define SECTOR 512u
#define QD 16
#define FLUSH_EVERY 64
#define PATTERN_MAGIC 0x5354525344425252ull /* "RRBDSRTS" */
#define STATE_MAGIC 0x4554415453445242ull

struct state_hdr {
	uint64_t magic;
	uint64_t nblocks;
	uint64_t next_gen;
};

static uint64_t nblocks;
static uint64_t *acked;   /* highest completed gen per block */
static uint64_t *flushed; /* gen per block made durable by a completed flush */
static uint64_t *snapshot;
static bool *busy;
static uint64_t next_gen = 1;

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static void
fill(uint8_t *buf, uint64_t block, uint64_t gen)
{
	for (unsigned s = 0; s < BS / SECTOR; s++) {
		uint64_t *w = (uint64_t *)(void *)(buf + s * SECTOR);

		w[0] = PATTERN_MAGIC;
		w[1] = block;
		w[2] = gen;
		w[3] = s;
		for (unsigned i = 4; i < SECTOR / 8; i++)
			w[i] = mix(gen * 1000003u + block * 131u + s * 17u + i);
	}
}

/* 0 valid (gen in *ret_gen), 1 all zero, -1 garbage */
static int
check_sector(const uint8_t *p, uint64_t block, unsigned s, uint64_t *ret_gen)
{
	const uint64_t *w = (const void *)p;
	bool zero = true;

	for (unsigned i = 0; i < SECTOR / 8; i++)
		zero = zero && w[i] == 0;
	if (zero)
		return 1;
	if (w[0] != PATTERN_MAGIC || w[1] != block || w[3] != s)
		return -1;
	for (unsigned i = 4; i < SECTOR / 8; i++)
		if (w[i] != mix(w[2] * 1000003u + block * 131u + s * 17u + i))
			return -1;
	*ret_gen = w[2];
	return 0;
}

static int
save_state(const char *path)
{
	char tmp[4096];
	struct state_hdr h = {STATE_MAGIC, nblocks, next_gen};
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	if (write(fd, &h, sizeof(h)) != sizeof(h) ||
	    write(fd, flushed, nblocks * 8) != (ssize_t)(nblocks * 8) || fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return rename(tmp, path);
}

static int
load_state(const char *path, uint64_t want_nblocks)
{
	struct state_hdr h;
	FILE *f = fopen(path, "rb");

	if (!f)
		return errno == ENOENT ? 1 : -1;
	if (fread(&h, sizeof(h), 1, f) != 1 || h.magic != STATE_MAGIC ||
	    (want_nblocks && h.nblocks != want_nblocks)) {
		fclose(f);
		return -1;
	}
	nblocks = h.nblocks;
	next_gen = h.next_gen;
	flushed = calloc(nblocks, 8);
	if (fread(flushed, 8, nblocks, f) != nblocks) {
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

struct wctx {
	uint64_t block, gen;
	uint8_t *buf;
	bool used;
};

static struct wctx slots[QD];
static int inflight;
static bool flush_inflight;
static const char *state_path;
static bool failed;

static int
write_done(void *user_data, int *error)
{
	struct wctx *w = user_data;

	if (*error) {
		failed = true;
	} else if (w->gen > acked[w->block]) {
		acked[w->block] = w->gen;
	}
	busy[w->block] = false;
	w->used = false;
	inflight--;
	return 1;
}

static int
flush_done(void *user_data, int *error)
{
	(void)user_data;
	flush_inflight = false;
	if (*error) {
		failed = true;
		return 1;
	}
	memcpy(flushed, snapshot, nblocks * 8);
	if (save_state(state_path) < 0) {
		perror("save state");
		exit(2);
	}
	return 1;
}

static int
do_write(const char *uri, uint64_t seconds, uint64_t seed)
{
	struct nbd_handle *h = nbd_create();
	time_t end = time(NULL) + (time_t)seconds;
	uint64_t writes = 0, flushes = 0, since_flush = 0;

	srand((unsigned)seed);
	acked = calloc(nblocks, 8);
	snapshot = calloc(nblocks, 8);
	busy = calloc(nblocks, 1);
	memcpy(acked, flushed, nblocks * 8);
	for (int i = 0; i < QD; i++)
		slots[i].buf = aligned_alloc(BS, BS);
	if (!h || nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "nbd_stress: connect: %s\n", nbd_get_error());
		nbd_close(h);
		return 2;
	}
	if ((uint64_t)nbd_get_size(h) < nblocks * BS) {
		fprintf(stderr, "nbd_stress: export too small\n");
		nbd_close(h);
		return 2;
	}
	/* STATE.connected: a test may crash the server only once we are in. */
	{
		char marker[PATH_MAX];
		FILE *f;

		snprintf(marker, sizeof(marker), "%s.connected", state_path);
		f = fopen(marker, "w");
		if (f)
			fclose(f);
	}
	while (!failed && time(NULL) < end) {
		while (inflight < QD && !failed) {
			uint64_t block = (uint64_t)rand() % nblocks;
			struct wctx *w = NULL;

			if (busy[block])
				break;
			for (int i = 0; i < QD; i++)
				if (!slots[i].used) {
					w = &slots[i];
					break;
				}
			w->used = true;
			w->block = block;
			w->gen = next_gen++;
			busy[block] = true;
			fill(w->buf, block, w->gen);
			if (nbd_aio_pwrite(h, w->buf, BS, block * BS,
					   (nbd_completion_callback){.callback = write_done,
								     .user_data = w},
					   0) < 0) {
				failed = true;
				break;
			}
			inflight++;
			writes++;
			since_flush++;
		}
		if (!flush_inflight && since_flush >= FLUSH_EVERY && !failed) {
			/* A flush covers every write completed before it is sent. */
			memcpy(snapshot, acked, nblocks * 8);
			if (nbd_aio_flush(h, (nbd_completion_callback){.callback = flush_done}, 0) < 0)
				failed = true;
			flush_inflight = true;
			since_flush = 0;
			flushes++;
		}
		if (nbd_poll(h, 1000) < 0)
			failed = true;
	}
	/* Drain what's outstanding if the server is still there (bounded). */
	for (int i = 0; i < 100 && !failed && (inflight || flush_inflight); i++)
		if (nbd_poll(h, 100) < 0)
			break;
	printf("nbd_stress: %" PRIu64 " writes, %" PRIu64 " flushes%s\n", writes, flushes,
	       failed ? ", server went away" : "");
	nbd_close(h);
	for (int i = 0; i < QD; i++)
		free(slots[i].buf);
	free(acked);
	free(snapshot);
	free(busy);
	free(flushed);
	return 0;
}

static int
do_verify(const char *uri)
{
	struct nbd_handle *h = nbd_create();
	uint8_t *buf = aligned_alloc(BS, BS * 64);
	uint64_t bad = 0, newer = 0;

	if (!h || !buf || nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "nbd_stress: connect: %s\n", nbd_get_error());
		nbd_close(h);
		free(buf);
		return 2;
	}
	for (uint64_t b0 = 0; b0 < nblocks; b0 += 64) {
		uint64_t n = nblocks - b0 < 64 ? nblocks - b0 : 64;

		if (nbd_pread(h, buf, n * BS, b0 * BS, 0) < 0) {
			fprintf(stderr, "nbd_stress: read: %s\n", nbd_get_error());
			return 2;
		}
		for (uint64_t i = 0; i < n; i++) {
			uint64_t block = b0 + i;

			for (unsigned s = 0; s < BS / SECTOR; s++) {
				uint64_t gen = 0;
				int r = check_sector(buf + i * BS + s * SECTOR, block, s, &gen);

				if (r < 0 || (r == 1 && flushed[block]) ||
				    (r == 0 && gen < flushed[block])) {
					if (bad++ < 10)
						fprintf(stderr,
							"nbd_stress: block %" PRIu64 " sector %u: %s "
							"(gen %" PRIu64 ", flushed gen %" PRIu64 ")\n",
							block, s,
							r < 0 ? "garbage"
							: r == 1 ? "zero, flushed write lost"
								 : "older than flushed",
							gen, flushed[block]);
				} else if (r == 0 && gen > flushed[block]) {
					newer++;
				}
			}
		}
	}
	nbd_close(h);
	free(buf);
	free(flushed);
	printf("nbd_stress: verified %" PRIu64 " blocks: %" PRIu64 " bad sectors, %" PRIu64
	       " sectors newer than their last flush\n",
	       nblocks, bad, newer);
	return bad ? 1 : 0;
}

int
main(int argc, char **argv)
{
	if (argc == 7 && !strcmp(argv[1], "write")) {
		uint64_t want = strtoull(argv[4], NULL, 10);
		int r;

		state_path = argv[3];
		r = load_state(state_path, want);
		if (r < 0) {
			fprintf(stderr, "nbd_stress: bad state file %s\n", state_path);
			return 2;
		}
		if (r == 1) {
			nblocks = want;
			flushed = calloc(nblocks, 8);
			if (save_state(state_path) < 0)
				return 2;
		}
		return do_write(argv[2], strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10));
	}
	if (argc == 4 && !strcmp(argv[1], "verify")) {
		if (load_state(argv[3], 0) != 0) {
			fprintf(stderr, "nbd_stress: bad state file %s\n", argv[3]);
			return 2;
		}
		return do_verify(argv[2]);
	}
	fprintf(stderr, "usage: nbd_stress write URI STATE NBLOCKS SECONDS SEED\n"
			"       nbd_stress verify URI STATE\n");
	return 2;
}
