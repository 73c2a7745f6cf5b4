/*
 * Private helpers shared by the journal's source files (little-endian field
 * access is common/le.h): the record validity rules the writer and the
 * scanner must agree on, superblock decoding with a reason string for `journal dump`, and the
 * live journal's state (struct journal, its batches and its index), shared
 * by journal.c (writer) and journal_reader.c (reading records back).
 */
#ifndef JRBD_JOURNAL_INTERNAL_H
#define JRBD_JOURNAL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/le.h"
#include "io/io.h"
#include "journal/journal.h"

/* Semantic checks on a decoded or to-be-written record (kind known, payload
 * length bounded and consistent with the kind, offset+length not wrapping).
 * The writer runs the same checks as the scanner so it can never write a
 * record that recovery would reject. 0 or -EPROTO. */
int journal_rec_validate(const struct journal_rec *rec);

/* journal_sb_decode() that also says why a copy was rejected ("bad magic",
 * "bad checksum", ...); *ret_why is a static string, set on failure only. */
int journal_sb_decode_why(const void *buf, size_t len, struct journal_sb *ret,
                          const char **ret_why);

/* A journal_read_fn over a file descriptor that reads ahead: the scanner asks
 * for a 64-byte header, then its payload, record after record, and one
 * pread per window instead of two per record makes recovery of a large
 * journal cheap. Reads never go past `limit` (the end of the record area),
 * so a window never runs into EOF. In journal_scan.c. */
struct journal_file_reader {
	int fd;         /* not owned */
	uint64_t limit; /* bytes of the file that may be read */
	uint8_t *win;   /* JOURNAL_READ_WINDOW bytes, owned */
	uint64_t win_off;
	size_t win_len; /* valid bytes in win */
};
#define JOURNAL_READ_WINDOW (1u << 20)
int journal_file_reader_init(struct journal_file_reader *r, int fd, uint64_t limit);
void journal_file_reader_fini(struct journal_file_reader *r);
int journal_file_read(void *arg, void *buf, size_t len, uint64_t offset);

/* Reads both superblock copies of fd with pread and picks the newest valid
 * one; on failure, why (if non-NULL) gets "superblock A: ...; superblock B: ...".
 * In journal_format.c. */
int journal_sb_read(int fd, struct journal_sb *ret, unsigned *ret_slot, char *why, size_t whylen);

/* --- The live journal's state (journal.c, journal_reader.c) --- */

/* A batch holds at least one maximal record, and 2 MiB is enough for the
 * device to run at its streaming rate. */
#define JOURNAL_BATCH_CAP (2u << 20)
_Static_assert(JOURNAL_BATCH_CAP >= JOURNAL_MAX_PAYLOAD + JOURNAL_REC_HDR_SIZE, "batch cap");
/* Outstanding (submitted, not yet retired) batches: enough to keep a device
 * queue busy; more only adds latency to each commit. */
#define JOURNAL_MAX_INFLIGHT 4u
/* In flight, plus one filling, plus one sealed and waiting. */
#define JOURNAL_NBATCHES (JOURNAL_MAX_INFLIGHT + 2u)
#define JOURNAL_INDEX_INIT 1024u
/* The index has an entry at every batch start and then one every this many
 * record bytes inside a batch (a run, after recovery). That bounds what a
 * reader must read to reach a record (an entry spans < granule + one
 * maximal record), lets a read range be decided from the index alone, and
 * lets the tail advance in steps smaller than a batch. */
#define JOURNAL_IDX_GRANULE (256u << 10)
/* Entries a batch can need: each one but the last spans >= the granule, and
 * a new one starts only in front of a record that fits. */
#define JOURNAL_BATCH_MARKS (JOURNAL_BATCH_CAP / JOURNAL_IDX_GRANULE)

enum journal_batch_state {
	BATCH_FREE = 0,
	BATCH_OPEN,
	BATCH_READY,
	BATCH_INFLIGHT,
	BATCH_DONE,
};

struct journal_batch {
	struct io_req req; /* first: completions dispatch on it */
	struct journal *j;
	uint8_t *buf; /* where its records are packed: own, or a region of the
	               * read cache (in_cache); the kernel's while INFLIGHT */
	uint8_t *own; /* JOURNAL_BATCH_CAP bytes, 4096-aligned, owned */
	uint64_t cache_v; /* in_cache: the region's virtual position */
	bool in_cache;
	uint32_t len; /* bytes of records packed in */
	uint32_t nrecords;
	uint64_t first_seq; /* of its records */
	uint64_t last_seq;
	/* Where its index entries start: mark 0 is the batch start, then one
	 * every JOURNAL_IDX_GRANULE record bytes. */
	uint64_t mark_seq[JOURNAL_BATCH_MARKS];
	uint32_t mark_off[JOURNAL_BATCH_MARKS]; /* bytes into buf */
	unsigned nmarks;
	uint64_t lpos;  /* where it is written (from submit on) */
	uint64_t order; /* submit order: durability follows it */
	int res;        /* DONE: the write's result */
	bool dsync;     /* written with RWF_DSYNC: durable on completion */
	enum journal_batch_state state;
};

/* An index entry: records seq.. stand back to back from lpos, len bytes of
 * them (header + payload each, no padding), up to the next entry's seq. An
 * entry never crosses the end of the area. The next entry starts at lpos +
 * len, at the next aligned lpos (batch padding) or at the next lap. */
struct journal_idx {
	uint64_t seq;
	uint64_t lpos;
	uint32_t len; /* bytes */
};

/* The read cache (journal_cache.c): the newest batches, for
 * journal_read_records() to serve without reading the device. Batches are
 * packed in place in it (no copy): each takes a region at its end when it
 * opens, and is served from the time it is submitted. */
struct journal_cache_desc {
	uint64_t lpos; /* where the batch's records start */
	uint64_t v;    /* virtual position in the cache: bytes at buf + v % cap */
	uint32_t len;  /* record bytes (no padding) */
};
struct journal_cache {
	uint8_t *buf; /* cap bytes, 4096-aligned; NULL: no cache */
	size_t cap;   /* a multiple of 4096 */
	uint64_t vend; /* virtual end of the newest region that stopped growing */
	uint64_t vres_end; /* virtual end of the newest region reserved */
	struct journal_cache_desc *desc; /* FIFO, lpos (and v) ascending */
	size_t ndesc_cap, dhead, ndesc;
};
/* The smallest cache: a region for a new batch must never reach one of the
 * other batches still packed in the cache (at most JOURNAL_NBATCHES - 1, one
 * wrap gap among them and one before the new region: each < a batch). */
#define JOURNAL_CACHE_MIN ((size_t)(JOURNAL_NBATCHES + 2) * JOURNAL_BATCH_CAP)
_Static_assert(JOURNAL_READ_CACHE_MIN >= JOURNAL_CACHE_MIN,
               "the public minimum covers what packing batches in place needs");
/* cap is rounded down to 4096; -EINVAL (below JOURNAL_READ_CACHE_MIN), -ENOMEM, or 0. */
int journal_cache_init(struct journal_cache *c, size_t cap);
void journal_cache_fini(struct journal_cache *c);
/* A region of JOURNAL_BATCH_CAP bytes, 4096-aligned, after the newest one,
 * for a batch to be packed in; what it may overwrite is no longer served.
 * *ret_v gets its virtual position. */
uint8_t *journal_cache_reserve(struct journal_cache *c, uint64_t *ret_v);
/* The batch packed at v stopped growing at len bytes: the next region
 * starts after them. */
void journal_cache_fill_end(struct journal_cache *c, uint64_t v, uint32_t len);
/* The batch packed at v, len record bytes, was submitted at lpos: it is
 * served from now on. */
void journal_cache_add(struct journal_cache *c, uint64_t lpos, uint64_t v, uint32_t len);
/* Whether a region at v is still intact (nothing reserved since reaches it). */
bool journal_cache_holds(const struct journal_cache *c, uint64_t v);
/* The bytes [lpos, lpos + len) if one cached batch holds all of them, or NULL. */
const uint8_t *journal_cache_get(const struct journal_cache *c, uint64_t lpos, uint32_t len);

/* Everything below belongs to the engine's thread. */
struct journal {
	int fd; /* O_RDWR | O_DIRECT, owned */
	struct io_engine *io;
	const struct journal_ops *ops;
	void *arg;

	struct journal_sb sb; /* as last persisted (tail, ckpt, gen, epoch) */
	unsigned sb_slot;     /* copy holding sb: 0 = A, 1 = B */

	uint64_t head_lpos;     /* end of the last submitted batch */
	uint64_t submitted_seq; /* first seq not submitted yet */
	uint64_t next_seq;      /* seq the next append gets */
	uint64_t written_seq;   /* every record <= this is written (maybe not durable) */
	uint64_t durable_seq;   /* every record <= this is durable; always the end of an
	                         * index entry */
	uint64_t ckpt_req;      /* highest checkpoint the caller asked for */
	struct {
		uint64_t id, released_seq, received_seq;
	} cons[JOURNAL_MAX_CONSUMERS]; /* live consumer state (persisted lazily) */

	struct journal_batch batches[JOURNAL_NBATCHES];
	struct journal_batch *open;                    /* filling, or NULL */
	struct journal_batch *ready[JOURNAL_NBATCHES]; /* sealed, FIFO */
	unsigned nready;
	unsigned noutstanding; /* INFLIGHT + DONE */
	uint64_t next_order;   /* order of the next submitted batch */
	uint64_t retire_order; /* order of the oldest outstanding batch */
	bool commit_wanted;    /* commit asked for while the open batch couldn't go */
	bool want_space;       /* an append got -EAGAIN: call on_space */
	bool in_pump, pump_again;

	/* Ring of retained index entries, seq ascending; every submitted
	 * record >= sb.tail_seq is covered by one (see journal_idx_find). */
	struct journal_idx *idx;
	size_t idx_cap, idx_head, idx_len;

	/* Group flush: one fdatasync in flight, making records <= flush_target durable. */
	struct io_req flush_req;
	uint64_t flush_target;
	bool flush_inflight;

	/* Superblock writer: one write in flight, the rest coalesced. */
	struct io_req sb_req;
	uint8_t *sb_buf;           /* 4096 bytes, aligned, owned; the kernel's while in flight */
	struct journal_sb sb_next; /* what the write in flight persists */
	unsigned sb_next_slot;
	bool sb_inflight, sb_dirty;

	unsigned nreads; /* journal_read_records() in flight (journal_reader.c) */
	size_t cache_want;          /* journal_set_read_cache(); in use only with consumers */
	struct journal_cache cache; /* buf NULL while off */
	bool cache_moving; /* going or resizing once no batch in it is in flight */
	uint64_t cache_hits, cache_misses; /* reads served from it / from the device */

	bool failed; /* sticky */
	bool error_reported;
	bool closing;
	int error;

	uint64_t bytes_written, payload_bytes, records, nbatches, last_timestamp_ns;
};

/* Entry i of the index, 0 = oldest. i < idx_len. */
static inline struct journal_idx *
journal_idx_at(const struct journal *j, size_t i)
{
	return &j->idx[(j->idx_head + i) % j->idx_cap];
}

/* Seq just past entry i's records: the next entry's seq, or the first seq
 * not submitted yet for the newest entry. */
static inline uint64_t
journal_idx_end_seq(const struct journal *j, size_t i)
{
	return i + 1 < j->idx_len ? journal_idx_at(j, i + 1)->seq : j->submitted_seq;
}

/* The entry holding seq: the last one with entry.seq <= seq, or idx_len when
 * there is none (seq before the oldest entry, or an empty index). The caller
 * checks seq < submitted_seq. In journal.c. */
size_t journal_idx_find(const struct journal *j, uint64_t seq);

#endif
