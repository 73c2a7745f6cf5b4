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
	/* Seq of the first record (0 means 1). A restore journal starts at the
	 * primary's seq where the pair began, so both journals number records
	 * alike. */
	uint64_t first_seq;
	/* Reformatting a journal in place (a resync restarts the restore
	 * journal): a regular file already this size and fully allocated keeps
	 * its record area as is - the new checksum seed makes old records
	 * invalid - instead of being zero-filled again. */
	bool reuse_area;
};
/* Creates or overwrites a journal at path: sizes the file, zero-fills the
 * record area (so later O_DIRECT writes don't convert unwritten extents), and
 * writes both superblock copies with tail_seq = ckpt_seq = first_seq (an
 * empty log whose first record gets first_seq). -EINVAL when smaller than
 * JOURNAL_MIN_SIZE or first_seq > INT64_MAX. */
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
	uint64_t durable_seq;    /* every record <= this is durable (first seq - 1: none yet) */
	uint64_t ckpt_seq;       /* records < this are durable in the data volumes */
	uint64_t bytes_written;  /* journal device bytes written by batches since open */
	uint64_t payload_bytes;  /* record payload bytes appended since open */
	uint64_t records, batches;
	uint64_t last_timestamp_ns; /* of the newest record */
	uint64_t read_cache_bytes;  /* allocated for the read cache (0: off) */
	uint64_t read_cache_hits;   /* journal_read_records() served from memory */
	uint64_t read_cache_misses; /* ... and from the device */
	uint32_t epoch;
	bool failed;
	/* The next batch to write doesn't fit in front of the persisted tail:
	 * appends that block now block for space, not for a batch buffer
	 * (all of them in flight on a slow disk is not a full journal). */
	bool waiting_for_space;
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
 * still run, on_space doesn't) and reads (their done runs), writes the final
 * superblock, frees. Records that never fit in the journal were never durable,
 * so never acknowledged: dropped. */
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
 * Never moves back; capped at durable_seq + 1. Persisted at index granularity:
 * the superblock's checkpoint is the start of the batch holding ckpt_seq (or
 * of its 256 KiB step inside a big batch), so redo after a restart may replay
 * a few records before ckpt_seq (harmless: redo replays in order up to the end
 * of the log). */
void journal_set_checkpoint(struct journal *j, uint64_t ckpt_seq);

/* Consumers keep records until they release them (replication); persisted in
 * the superblock: an add or remove at once, a release with the next
 * superblock write made for another reason (so after a crash a consumer may
 * hold more than it had released, never less). A new consumer holds everything retained now (released_seq =
 * tail_seq - 1). -EINVAL: id 0; -EEXIST; -ENOSPC: JOURNAL_MAX_CONSUMERS in use;
 * -ENOENT: unknown id. release: -EINVAL past the last appended seq; a lower
 * released_seq than before is ignored (late report). */
int journal_consumer_add(struct journal *j, uint64_t id);
int journal_consumer_remove(struct journal *j, uint64_t id);
int journal_consumer_release(struct journal *j, uint64_t id, uint64_t released_seq);
/* The consumer's latest release (the superblock's copy may be older):
 * 0 and *ret, or -ENOENT. */
int journal_consumer_released(const struct journal *j, uint64_t id, uint64_t *ret);

/*
 * Reading retained records back by seq (the replication sender).
 *
 * Fills out with records exactly as stored (64-byte header + payload each,
 * packed back to back, no padding) with consecutive seqs from req->from_seq,
 * never beyond req->max_seq or durable_seq, nor past req->max_bytes of
 * record bytes, except that the record at from_seq is always returned (it
 * fits in out_cap). A read may return fewer records than that allows: the
 * range is decided from the journal's index (a batch start, then a point
 * every 256 KiB of records inside a batch), it stays on one lap of the
 * circular area, and one read is bounded; the next call continues. A
 * max_bytes smaller than an index step (up to 256 KiB + one maximal
 * record) may get one record per call.
 *
 * When the call returns 0, first_seq (= from_seq), last_seq and nrecords
 * are decided, so the caller can start the next read at last_seq + 1 right
 * away, before this one completes. The records then come with done: out_len
 * and newest_ts_ns are set, and with res 0 out holds exactly nrecords
 * records first_seq..last_seq. One O_DIRECT read through the io engine per
 * call; each record's checksums, seq, kind and length are verified. done
 * runs from an engine completion, never inside the call, and may reuse or
 * free r (the journal no longer touches it).
 *
 * Returned by the call: 0 (done follows); JOURNAL_READ_CACHED (complete,
 * done not called); and, done not called: -EINVAL bad arguments (no out
 * or done, out_cap < JOURNAL_MAX_PAYLOAD + JOURNAL_REC_HDR_SIZE, max_seq <
 * from_seq); -ENOENT from_seq was released (< tail_seq); -EAGAIN nothing
 * durable at from_seq yet; -EIO the journal has FAILED; -ECANCELED the
 * journal is closing; -ENOMEM.
 * Passed to done: 0; -EBADMSG/-EPROTO a record on disk is damaged (the whole
 * read fails); -ENOENT records were released while the read was in flight;
 * -EIO the read failed (the journal does not become FAILED for it).
 *
 * Several reads may be in flight. The records stay retained only while a
 * consumer holds them (the caller's job). journal_close() waits for reads in
 * flight, and their done runs from inside it.
 */
struct journal_read_req {
	uint64_t from_seq;
	uint64_t max_seq;   /* UINT64_MAX: up to durable */
	uint32_t max_bytes; /* of record bytes returned */
	uint8_t *out;       /* caller's buffer; the journal's until done */
	uint32_t out_cap;   /* >= JOURNAL_MAX_PAYLOAD + JOURNAL_REC_HDR_SIZE */
	void (*done)(struct journal_read_req *r, int res);
	void *arg;
	/* Served from the read cache, the records may be left where they are:
	 * data then points into the cache, valid only until the caller returns
	 * to the event loop or appends (an append can open a batch over them). */
	bool may_borrow;
	/* Results. first_seq/last_seq/nrecords are decided when the call
	 * returns 0; out_len, data and newest_ts_ns come with done (or with
	 * JOURNAL_READ_CACHED). data: where the out_len bytes of records are,
	 * out or (borrowed) the cache. */
	const uint8_t *data;
	uint64_t first_seq, last_seq;
	uint32_t nrecords;
	uint32_t out_len;
	uint64_t newest_ts_ns; /* timestamp of the last record returned */
	/* Private to the journal (journal_reader.c), set while in flight. */
	struct journal *j;
	uint8_t *rbuf;      /* aligned read buffer, owned while in flight */
	uint32_t rbuf_len;
	uint64_t rlpos;     /* logical position rbuf starts at */
	struct io_req *ioreq;
};
int journal_read_records(struct journal *j, struct journal_read_req *r);
/* journal_read_records() returned this: the records came from the read
 * cache and the request is complete on return, out_len and newest_ts_ns
 * set; done is not called. */
#define JOURNAL_READ_CACHED 1

/* The smallest read cache journal_set_read_cache() sets up (a smaller
 * `bytes` is rounded up to it); the CLI refuses less. */
#define JOURNAL_READ_CACHE_MIN ((size_t)16 << 20)

/* Keep up to `bytes` (at most the area is used, but never less than
 * JOURNAL_READ_CACHE_MIN) of the newest batches in memory while the journal has a
 * consumer, so journal_read_records() serves a consumer that keeps up
 * without reading the device or re-checking payload checksums (they are the
 * bytes this process checksummed and wrote). 0 (the default): off. The
 * memory is allocated when the first consumer is added and freed with the
 * last one; when it can't be allocated, reads go to the device. */
void journal_set_read_cache(struct journal *j, size_t bytes);

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
