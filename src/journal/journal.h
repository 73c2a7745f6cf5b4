/*
 * The journal: a circular log of records on a journal volume, written in
 * batches (group commit), recovered by scanning. Format: include/jrbd/journal_format.h.
 *
 * Acknowledgement contract: a record is durable once journal's on_durable
 * callback reports a durable_seq >= its seq. Batches are written with O_DIRECT
 * and RWF_DSYNC, and durable_seq only advances over batches whose predecessors
 * have all completed, so durable_seq is always a prefix of the sequence.
 *
 * Space: records stay until released. tail = min(checkpoint, every registered
 * consumer's released_seq + 1). A batch is written only when it fits in the
 * free space; until then appends fill the open batch and then return -EAGAIN,
 * and on_space is called when space or a batch buffer frees up.
 *
 * Failure: a failed journal write or superblock write makes the journal FAILED
 * (sticky): on_error is called once, appends return -EIO, nothing more becomes
 * durable.
 *
 * Threading: a journal belongs to the thread that owns its io_engine.
 * It does not log above debug level; callers report errors.
 */
#ifndef JRBD_JOURNAL_H
#define JRBD_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "jrbd/journal_format.h"

struct io_engine;
struct journal;

/* A record, decoded (host order). */
struct journal_rec {
	uint8_t kind;  /* enum journal_rec_kind */
	uint8_t flags; /* enum journal_rec_flags */
	uint16_t volume;
	uint32_t payload_len;
	uint32_t epoch;
	uint64_t seq;
	uint64_t offset; /* bytes */
	uint64_t length; /* bytes */
	uint64_t timestamp_ns;
	uint64_t payload_csum;
};

/* The superblock, decoded. */
struct journal_sb {
	uint8_t uuid[16];
	uint64_t seed; /* checksum seed: low 8 bytes of uuid, little-endian */
	uint64_t journal_size;
	uint64_t area_start;
	uint64_t area_size;
	uint32_t align;
	uint32_t epoch;
	uint64_t sb_gen;
	uint64_t tail_lpos, tail_seq;
	uint64_t ckpt_lpos, ckpt_seq;
	uint64_t created_ns, updated_ns;
	char group[JOURNAL_GROUPNAME_LEN];
	uint16_t nvolumes;
	uint16_t role;
	char volumes[JOURNAL_MAX_VOLUMES][JOURNAL_VOLNAME_LEN];
	struct {
		uint64_t id, released_seq, received_seq;
	} consumers[JOURNAL_MAX_CONSUMERS];
};

/* --- Codec: pure functions over bytes (journal_codec.c) --- */

uint64_t journal_checksum(const void *buf, size_t len, uint64_t seed);
/* Fills the 64-byte header at out from rec (rec->payload_csum is computed from
 * payload here when payload_len > 0). */
void journal_rec_encode(const struct journal_rec *rec, const void *payload, uint64_t seed,
			void *out);
/* Decodes and validates a header: -EPROTO for a bad magic, kind or length,
 * -EBADMSG for a header checksum mismatch. Does not check the payload. */
int journal_rec_decode(const void *buf, size_t len, uint64_t seed, struct journal_rec *ret);
/* 0 when the payload matches rec->payload_csum, else -EBADMSG. */
int journal_rec_check_payload(const struct journal_rec *rec, const void *payload, uint64_t seed);
const char *journal_rec_kind_name(uint8_t kind);

void journal_sb_encode(const struct journal_sb *sb, void *out4096);
/* -EPROTO bad magic/version/geometry, -EBADMSG checksum mismatch. */
int journal_sb_decode(const void *buf, size_t len, struct journal_sb *ret);
/* Picks the newer valid of the two superblock copies (8192 bytes at offset 0).
 * ret_slot gets 0 or 1. Errors as journal_sb_decode when neither is valid. */
int journal_sb_pick(const void *buf8192, struct journal_sb *ret, unsigned *ret_slot);

/* --- Scanner: recovery over a reader callback (journal_scan.c) --- */

/* Reads len bytes at physical offset into buf; 0 or -errno. */
typedef int journal_read_fn(void *arg, void *buf, size_t len, uint64_t offset);

enum journal_scan_stop {
	JOURNAL_SCAN_END = 0,       /* clean end: nothing at the expected position */
	JOURNAL_SCAN_TORN_HDR,      /* a header with the right magic failed its checks */
	JOURNAL_SCAN_TORN_PAYLOAD,  /* header valid, payload checksum mismatch */
	JOURNAL_SCAN_STALE,         /* valid record with the wrong seq or an older epoch */
	JOURNAL_SCAN_IO_ERROR,
};

struct journal_scan {
	const struct journal_sb *sb;
	journal_read_fn *read;
	void *read_arg;
	uint64_t lpos;         /* position of the next record to read */
	uint64_t next_seq;     /* expected seq there */
	uint32_t last_epoch;
	bool wrapped_here;     /* already tried the wrap at this position */
	enum journal_scan_stop stop;
	uint64_t stop_lpos;    /* where the log ended */
	char stop_detail[128]; /* human-readable reason */
	/* Buffer for headers and payloads: JOURNAL_MAX_PAYLOAD + a header. */
	uint8_t *buf;
	bool is_done;          /* the log ended (or a read failed); next returns 0 */
	uint64_t bad_lpos;     /* where the record named by stop_detail stands */
};

int journal_scan_init(struct journal_scan *s, const struct journal_sb *sb, journal_read_fn *read,
		      void *read_arg);
void journal_scan_fini(struct journal_scan *s);
/* 1 and a record (payload points into the scanner's buffer, valid until the
 * next call), 0 at the end of the log (see s->stop), or -errno. */
int journal_scan_next(struct journal_scan *s, struct journal_rec *ret_rec, const void **ret_payload,
		      uint64_t *ret_lpos);
uint64_t journal_phys(const struct journal_sb *sb, uint64_t lpos);

/* --- Format (journal_format.c) --- */

struct journal_format_opts {
	uint64_t size; /* bytes; 0: use the existing file/device size */
	const char *group;
	unsigned nvolumes;
	const char *const *volumes;
	enum journal_role role;
};
/* Creates or overwrites a journal at path: sizes the file, zero-fills the
 * record area (so later O_DIRECT writes don't convert unwritten extents), and
 * writes both superblock copies. -EINVAL when smaller than JOURNAL_MIN_SIZE. */
int journal_format(const char *path, const struct journal_format_opts *opts);

/* --- The live journal (journal.c) --- */

struct journal_ops {
	void (*on_durable)(void *arg, uint64_t durable_seq);
	void (*on_space)(void *arg);
	void (*on_error)(void *arg, int err);
	/* Called during journal_open for every record with seq >= ckpt_seq, in
	 * order; returning < 0 aborts the open. */
	int (*redo)(void *arg, const struct journal_rec *rec, const void *payload);
};

struct journal_stats {
	uint64_t size, area_size;
	uint64_t used_bytes;     /* head_lpos - tail_lpos */
	uint64_t head_lpos, tail_lpos;
	uint64_t tail_seq;       /* oldest retained record */
	uint64_t next_seq;       /* seq the next append gets */
	uint64_t durable_seq;    /* every record <= this is durable (0: none yet) */
	uint64_t ckpt_seq;       /* records < this are durable in the data volumes */
	uint64_t bytes_written;  /* journal device bytes written by batches since open */
	uint64_t payload_bytes;  /* record payload bytes appended since open */
	uint64_t records, batches;
	uint64_t last_timestamp_ns; /* of the newest record */
	uint32_t epoch;
	bool failed;
};

/* Opens, bumps the epoch, scans from the tail, calls ops->redo for records at or
 * after the checkpoint, and is ready for appends after the last valid record.
 * The journal must not be open elsewhere (the caller holds the state-dir lock).
 * Blocks (reads, one fdatasync and a superblock write through io, drained).
 * -EPROTO/-EBADMSG: no valid superblock or the file is shorter than it says;
 * -EUCLEAN: the log ends (corrupt record) before the checkpoint, so new
 * records would get numbers redo skips; a redo error is returned as is. */
int journal_open(const char *path, struct io_engine *io, const struct journal_ops *ops, void *arg,
		 struct journal **ret);
/* NULL is a no-op. Commits, waits for in-flight writes (on_durable/on_error may
 * still run, on_space doesn't), writes the final superblock, frees. Records that
 * never fit in the journal were never durable, so never acknowledged: dropped. */
void journal_close(struct journal *j);

/* Appends a record. In: kind, flags, volume, offset, length, payload_len.
 * Out: rec->seq, rec->epoch, rec->timestamp_ns. The payload is copied into the
 * open batch before return. -EAGAIN: no room now, retry after on_space.
 * -EIO: the journal has FAILED. -EINVAL: bad record. */
int journal_append(struct journal *j, struct journal_rec *rec, const void *payload);
/* Submits the open batch if it has records (the group-commit point; called once
 * per event-loop iteration). */
void journal_commit(struct journal *j);

/* Records with seq < ckpt_seq are durable in the data volumes (the caller
 * fsynced them). Persists the superblock asynchronously and may release space.
 * Never moves back; capped at durable_seq + 1. Persisted at batch granularity:
 * the superblock's checkpoint is the start of the batch holding ckpt_seq, so
 * redo after a restart may replay a few records before ckpt_seq (harmless:
 * redo replays in order up to the end of the log). */
void journal_set_checkpoint(struct journal *j, uint64_t ckpt_seq);

/* Consumers keep records until they release them (replication); persisted in
 * the superblock. A new consumer holds everything retained now (released_seq =
 * tail_seq - 1). -EINVAL: id 0; -EEXIST; -ENOSPC: JOURNAL_MAX_CONSUMERS in use;
 * -ENOENT: unknown id. release: -EINVAL past the last appended seq; a lower
 * released_seq than before is ignored (late report). */
int journal_consumer_add(struct journal *j, uint64_t id);
int journal_consumer_remove(struct journal *j, uint64_t id);
int journal_consumer_release(struct journal *j, uint64_t id, uint64_t released_seq);

void journal_get_stats(const struct journal *j, struct journal_stats *ret);
const struct journal_sb *journal_get_sb(const struct journal *j);

/* --- Dump (journal_dump.c) --- */

/* Prints superblock and every record from the tail with checksum verdicts
 * (all_records false: records before the checkpoint are counted, not listed).
 * Returns 0 when the log is clean, 1 when it ends in a torn or corrupt record,
 * -errno when the file can't be read or has no valid superblock (the message
 * on out says why, per superblock copy). Read-only; plain pread. */
int journal_dump(const char *path, bool json, bool all_records, FILE *out);

#endif
