/*
 * Power-loss simulation (like SQLite's crash tests): a child process runs a
 * journal group on the `fault` I/O engine, which keeps every write that isn't
 * durable yet in memory. At a random point the child "loses power":
 * io_fault_crash() drops, keeps or tears (sector-granular) each pending write
 * in random order, and the child dies without any cleanup. The parent then
 * recovers the group with a real engine and checks:
 *   - every acknowledged write is there (acks happen once the journal record
 *     is durable, before the volume write, so even unflushed acknowledged
 *     writes survive - through redo);
 *   - every sector holds a valid pattern: a torn record was never replayed;
 *   - a second recovery changes nothing (redo is idempotent).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/loop.h"
#include "common/util.h"
#include "group/group.h"
#include "io/io.h"
#include "leak_check.h"

#define BS 4096u
#define SECTOR 512u
#define VOL_SIZE (4u << 20)
#define NBLOCKS (VOL_SIZE / BS)
#define NVOLS 2
#define QD 24
#define MAGIC 0x4b43415254534146ull

struct shared {
	uint64_t acked[NVOLS][NBLOCKS]; /* highest acknowledged gen per block */
	uint64_t ops_done;
};

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 29);
}

static void
fill(uint8_t *buf, unsigned vol, uint64_t block, uint64_t gen)
{
	for (unsigned s = 0; s < BS / SECTOR; s++) {
		uint64_t *w = (uint64_t *)(void *)(buf + s * SECTOR);

		w[0] = MAGIC;
		w[1] = vol;
		w[2] = block;
		w[3] = gen;
		for (unsigned i = 4; i < SECTOR / 8; i++)
			w[i] = mix(gen ^ (block << 20) ^ ((uint64_t)vol << 40) ^ (s << 8) ^ i);
	}
}

static void
make_config(struct group_config *cfg, const char *dir)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->name, sizeof(cfg->name), "crash");
	cr_assert(asprintf(&cfg->journal_path, "%s/j.img", dir) > 0);
	cfg->journal_size = 16u << 20;
	cfg->nvolumes = NVOLS;
	/* Checkpoint often so crashes land around checkpoints too. */
	cfg->checkpoint_interval_ms = 5;
	for (unsigned i = 0; i < NVOLS; i++) {
		snprintf(cfg->volumes[i].name, sizeof(cfg->volumes[i].name), "v%u", i);
		cr_assert(asprintf(&cfg->volumes[i].path, "%s/v%u.img", dir, i) > 0);
		cfg->volumes[i].size = VOL_SIZE;
	}
}

struct slot {
	struct group_io io;
	struct shared *sh;
	unsigned vol;
	uint64_t block, gen;
	bool busy;
};

static bool block_busy[NVOLS][NBLOCKS];
static int inflight;

/* The acknowledgement: with release set, writes are acknowledged as soon as
 * their records are durable, before the volume write. */
static void
slot_done(struct group_io *io, int res)
{
	struct slot *s = io->arg;

	if (res == 0 && io->op == GROUP_IO_WRITE && s->gen > s->sh->acked[s->vol][s->block])
		s->sh->acked[s->vol][s->block] = s->gen;
}

static void
slot_release(struct group_io *io, int res)
{
	struct slot *s = io->arg;

	(void)res;
	block_busy[s->vol][s->block] = false;
	s->busy = false;
	inflight--;
}

/* The child: random writes/trims at QD, then power loss at op `crash_at`. */
static void
child_run(const char *dir, struct shared *sh, uint64_t seed, unsigned crash_at)
{
	struct group_config cfg;
	struct loop *loop;
	struct io_engine *io;
	struct group *g;
	struct slot *slots = calloc(QD, sizeof(*slots));
	char err[256] = "";
	uint64_t gen = 1000000 * seed;
	unsigned ops = 0;

	srand((unsigned)seed);
	make_config(&cfg, dir);
	if (loop_new(&loop) < 0 || io_engine_new("fault", 64, &io) < 0 ||
	    group_open(&cfg, loop, io, &g, err, sizeof(err)) < 0) {
		fprintf(stderr, "child: open: %s\n", err);
		_exit(3);
	}
	for (int i = 0; i < QD; i++) {
		slots[i].sh = sh;
		slots[i].io.buf = util_aligned_alloc(4096, BS);
	}
	while (ops < crash_at) {
		for (int i = 0; i < QD && ops < crash_at; i++) {
			struct slot *s = &slots[i];
			unsigned vol = (unsigned)rand() % NVOLS;
			uint64_t block = (uint64_t)rand() % NBLOCKS;

			if (s->busy || block_busy[vol][block])
				continue;
			s->busy = true;
			block_busy[vol][block] = true;
			s->vol = vol;
			s->block = block;
			s->gen = ++gen;
			s->io.vol = group_volume(g, vol);
			s->io.offset = block * BS;
			s->io.len = BS;
			s->io.flags = 0;
			s->io.done = slot_done;
			s->io.release = slot_release;
			s->io.arg = s;
			if (rand() % 16 == 0) {
				/* A flush now and then: a no-op for durability, but it
				 * must not break anything. */
				s->io.op = GROUP_IO_FLUSH;
				s->gen = 0;
			} else {
				s->io.op = GROUP_IO_WRITE;
				fill(s->io.buf, vol, block, s->gen);
			}
			inflight++;
			ops++;
			group_io_submit(g, &s->io);
		}
		loop_run_once(loop, 5);
		io_engine_reap(io);
	}
	/* Power loss: whatever isn't durable is dropped, kept or torn. */
	io_fault_crash(io, IO_FAULT_RANDOM, seed);
	sh->ops_done = ops;
	_exit(0);
}

/* Recovers with a real engine and checks every acknowledged write. */
static void
verify(const char *dir, const struct shared *sh, uint64_t seed)
{
	struct group_config cfg;
	struct loop *loop;
	struct io_engine *io;
	struct group *g;
	char err[256] = "";
	uint8_t *buf = malloc(VOL_SIZE);

	make_config(&cfg, dir);
	cr_assert(eq(int, loop_new(&loop), 0));
	cr_assert(eq(int, io_engine_new("sync", 64, &io), 0));
	cr_assert(eq(int, group_open(&cfg, loop, io, &g, err, sizeof(err)), 0),
		  "seed %llu: recovery failed: %s", (unsigned long long)seed, err);
	for (unsigned v = 0; v < NVOLS; v++) {
		int fd = open(cfg.volumes[v].path, O_RDONLY);

		cr_assert(ge(int, fd, 0));
		cr_assert(eq(int, util_pread_full(fd, buf, VOL_SIZE, 0), 0));
		close(fd);
		for (uint64_t b = 0; b < NBLOCKS; b++) {
			for (unsigned s = 0; s < BS / SECTOR; s++) {
				const uint64_t *w = (const void *)(buf + b * BS + s * SECTOR);
				uint8_t expect[BS];
				bool zero = true;

				for (unsigned i = 0; i < SECTOR / 8; i++)
					zero = zero && !w[i];
				if (zero) {
					cr_assert(eq(u64, sh->acked[v][b], 0),
						  "seed %llu: vol %u block %llu sector %u: acknowledged "
						  "gen %llu lost",
						  (unsigned long long)seed, v, (unsigned long long)b, s,
						  (unsigned long long)sh->acked[v][b]);
					continue;
				}
				cr_assert(eq(u64, w[0], MAGIC), "seed %llu: garbage in vol %u block %llu",
					  (unsigned long long)seed, v, (unsigned long long)b);
				cr_assert(eq(u64, w[2], b));
				fill(expect, v, b, w[3]);
				cr_assert(eq(int, memcmp(w, expect + s * SECTOR, SECTOR), 0),
					  "seed %llu: torn/garbage sector", (unsigned long long)seed);
				cr_assert(ge(u64, w[3], sh->acked[v][b]),
					  "seed %llu: vol %u block %llu: gen %llu older than acked %llu",
					  (unsigned long long)seed, v, (unsigned long long)b,
					  (unsigned long long)w[3], (unsigned long long)sh->acked[v][b]);
			}
		}
	}
	group_close(g);
	io_engine_free(io);
	loop_free(loop);
	group_config_fini(&cfg);
	free(buf);
}

static void
one_crash(uint64_t seed)
{
	char *dir = test_tmpdir();
	struct group_config cfg;
	char err[256] = "";
	struct shared *sh;
	pid_t pid;
	int status;

	cr_assert(ne(ptr, dir, NULL));
	make_config(&cfg, dir);
	cr_assert(eq(int, group_create_storage(&cfg, err, sizeof(err)), 0), "%s", err);
	group_config_fini(&cfg);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(ne(ptr, sh, MAP_FAILED));
	memset(sh, 0, sizeof(*sh));
	srand((unsigned)seed * 7919u);
	pid = fork();
	cr_assert(ge(int, pid, 0));
	if (pid == 0)
		child_run(dir, sh, seed, 50 + (unsigned)rand() % 1500);
	cr_assert(eq(int, waitpid(pid, &status, 0), pid));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		cr_fatal("seed %llu: child failed (status 0x%x)", (unsigned long long)seed, status);
	verify(dir, sh, seed);
	verify(dir, sh, seed); /* recovering twice changes nothing */
	munmap(sh, sizeof(*sh));
	test_rm_rf(dir);
	free(dir);
}

TestSuite(crash, .fini = test_leak_check, .timeout = 600);

Test(crash, random_power_loss_keeps_every_acknowledged_write)
{
	const char *soak = getenv("JRBD_SOAK");
	unsigned rounds = soak && !strcmp(soak, "1") ? 2000 : 60;

	for (unsigned i = 1; i <= rounds; i++)
		one_crash(i);
}
