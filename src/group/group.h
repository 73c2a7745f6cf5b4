/*
 * A journal group at one site: its data volumes, its journal, and the write
 * pipeline between host I/O and both.
 *
 * Write path (one struct group_io per host request):
 *   1. the request gets journal records (one per JOURNAL_MAX_PAYLOAD bytes),
 *      appended to the open batch - the group-commit point;
 *   2. once the journal's durable_seq covers its last record, the host may be
 *      answered (when the caller set group_io.release): redo would restore
 *      the write after any crash;
 *   3. it waits until no earlier-sequence write still in flight overlaps it
 *      (range order), then its data-volume write is submitted; reads of the
 *      range wait for it;
 *   4. when that completes, the caller gets release (or done, without it).
 * So FUA needs no extra I/O and FLUSH has nothing left to do: every
 * acknowledged write is already durable. A periodic checkpoint fdatasyncs the
 * data volumes and lets the journal release space.
 *
 * Threading: a group lives on the loop thread that owns its io_engine.
 */
#ifndef JRBD_GROUP_H
#define JRBD_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "group/range_order.h"
#include "io/io.h"
#include "jrbd/journal_format.h"
#include "journal/journal.h"

struct group;
struct journal;
struct loop;

enum group_io_op {
	GROUP_IO_READ = 0,
	GROUP_IO_WRITE,
	GROUP_IO_TRIM,
	GROUP_IO_ZERO,
	GROUP_IO_FLUSH,
	GROUP_IO_CACHE,
	/* Primary, initial copy: reads [offset, len) of the volume into buf and
	 * journals it as one BASE record (BASE_ZERO when it reads as zero or is a
	 * hole) whose data is the volume's content at that record's place in the
	 * sequence, while host writes go on. len <= JOURNAL_MAX_PAYLOAD. done
	 * runs once the record is durable; io->last_seq is its seq. */
	GROUP_IO_BASE,
	/* Secondary: applies one record of the primary's stream (io->rec, the
	 * payload in buf) through the restore journal; rec.seq must be the next
	 * seq of the group's journal. done runs once it is in the volume. */
	GROUP_IO_REPLAY,
};

enum group_io_flags {
	GROUP_IO_FUA = 1u << 0,
	GROUP_IO_NO_HOLE = 1u << 1,   /* ZERO: keep the range allocated */
	GROUP_IO_FAST_ZERO = 1u << 2, /* ZERO: fail with -ENOTSUP rather than write zeroes slowly */
};

struct volume {
	char name[JOURNAL_VOLNAME_LEN];
	uint16_t id;        /* index in the group, stored in journal records */
	uint64_t size;      /* bytes exported */
	char *path;
	int fd;             /* O_DIRECT */
	int fd_buffered;    /* for requests not aligned to dio_align */
	uint32_t dio_align; /* bytes */
	uint32_t max_request; /* bytes: largest READ/WRITE accepted (NBD maximum block size) */
	bool is_blockdev;
	bool is_buffered;   /* fd goes through the page cache (no O_DIRECT) */
	bool read_only;     /* exported read-only (secondary side) */
	unsigned nbd_conns; /* NBD connections using this volume */
	bool zero_fallback; /* fallocate unsupported: zeroes are written */
	struct range_order order; /* in-flight writes, by seq */
	struct group_io *read_wait; /* reads waiting for overlapping writes to land */
	struct group *group;
};

/* Largest READ/WRITE length: a power of two small enough that the journal
 * always has room for one whole request besides the batches in flight. */
#define GROUP_MAX_REQUEST (32u << 20)
/* BASE requests in flight at once, and reads of a chunk before it holds the
 * append queue to get a clean one. */
#define GROUP_MAX_BASE_WATCH 32u
#define GROUP_BASE_TRIES 4u

struct group_io;
typedef void group_io_done_fn(struct group_io *io, int res);

/*
 * One host request. Caller-owned; stays valid until done runs - or, when
 * release is set, until release runs. Neither is called from inside
 * group_io_submit(); res is 0 or -errno.
 *
 * With release set, a WRITE/TRIM/ZERO is answered (done) as soon as its
 * journal records are durable - the data volume write then happens in the
 * background, and reads of that range wait for it - and release follows once
 * the group no longer uses buf. Without it, done comes after the volume write.
 * release always comes after done, exactly once, for every op.
 */
struct group_io {
	enum group_io_op op;
	unsigned flags;     /* enum group_io_flags */
	struct volume *vol;
	uint64_t offset;    /* bytes */
	uint32_t len;       /* bytes (not used by FLUSH) */
	void *buf;          /* READ/WRITE: len bytes, aligned to 4096 */
	group_io_done_fn *done;
	group_io_done_fn *release; /* optional, see above */
	void *arg;

	/* Private to the group. */
	struct group_io *g_next; /* wait/ready lists */
	struct group_io *g_prev;
	struct group *g;
	uint64_t first_seq, last_seq;
	uint32_t appended;         /* bytes of payload already journaled */
	int res;
	int state;                 /* enum group_io_state in group.c */
	bool acked;                /* done already ran (early acknowledgement) */
	struct range_entry range;  /* place in the volume's write order */
	struct journal_rec rec;    /* REPLAY: the record (in); BASE: the record (out) */
	uint8_t base_tries;        /* BASE: reads so far */
	bool base_conflict;        /* BASE: an overlapping write was journaled since the read began */
	bool base_barrier;         /* BASE: holding the append queue while it re-reads */
	bool base_zero;            /* BASE: read as zero */
	bool sync_held;            /* waiting for the secondary (sync mode) */
	struct io_req req;         /* the data-volume I/O */
};

struct group_volume_config {
	char name[JOURNAL_VOLNAME_LEN];
	char *path;
	uint64_t size; /* 0: use the existing size */
};

/* The pair a group belongs to (persisted with the group). */
enum pair_role {
	PAIR_ROLE_NONE = 0,
	PAIR_ROLE_PRIMARY,
	PAIR_ROLE_SECONDARY,
};

/* Names as the arrays use them; PRODUCT.md and README "Pair lifecycle". */
enum pair_state {
	PAIR_STATE_SMPL = 0,
	PAIR_STATE_COPY, /* initial copy or resync running */
	PAIR_STATE_PAIR, /* in sync, journaling */
	PAIR_STATE_PFUL, /* PAIR, but the master journal is above its high-water mark */
	PAIR_STATE_PFUS, /* suspended: the journal filled */
	PAIR_STATE_PSUS, /* suspended by the operator */
	PAIR_STATE_PSUE, /* suspended by an error (link lost, I/O error) */
	PAIR_STATE_SSWS, /* secondary taken over: S-VOLs writable */
};

enum pair_mode {
	PAIR_MODE_ASYNC = 0,
	PAIR_MODE_SYNC,
};

#define PAIR_REMOTE_LEN 256u

struct group_pair_config {
	enum pair_role role;
	enum pair_state state;
	enum pair_mode mode;
	char remote[PAIR_REMOTE_LEN]; /* primary: the secondary's HOST:PORT */
	char peer_site[64];           /* the other daemon's site name, for display */
	uint64_t id;                  /* random; the primary journal's consumer id */
	uint64_t start_seq;           /* first seq of the pair's stream */
	uint64_t primary_seed;        /* secondary: checksum seed of the primary's records */
	bool initial_copy;
	/* Initial copy progress (primary): volumes < copy_volume and
	 * [0, copy_offset) of copy_volume are journaled; copy_end_seq is the
	 * seq of the last BASE record once it is all journaled (0 before). */
	unsigned copy_volume;
	uint64_t copy_offset;
	uint64_t copy_end_seq;
	/* Secondary: our volume index for each of the primary's volume ids. */
	unsigned nvolmap;
	uint16_t volmap[JOURNAL_MAX_VOLUMES];
	bool confirmed; /* primary: the secondary accepted the pair */

	/* Lifecycle (issue 4). */
	char reason[256];        /* why the pair is in its state (suspended: the cause) */
	uint64_t gen;            /* this site's generation: new on takeover and on the
				  * first write while suspended */
	uint64_t synced_gen;     /* the generation both sites agreed on at the last sync;
				  * gen != synced_gen: this site has writes the other lacks */
	bool resync;             /* COPY copies the difference bitmaps, not whole volumes */
	uint64_t copy_total;     /* resync: bytes to copy, fixed when it starts */
	uint64_t fold_to;        /* primary, suspending: records up to this seq are still to
				  * be folded into the bitmaps (0: none) */
	bool bitmap_clear_pending; /* secondary: clear the bitmaps once the primary holds them */
	char peer_addr[PAIR_REMOTE_LEN]; /* secondary: the primary's replication HOST:PORT */
	unsigned cause;          /* enum pair_cause: why it is suspended */
	bool announce;           /* primary after a swap: name the pair with PAIR_CREATE */
};

enum pair_cause {
	PAIR_CAUSE_NONE = 0,
	PAIR_CAUSE_OPERATOR,
	PAIR_CAUSE_LINK,
	PAIR_CAUSE_IO,
	PAIR_CAUSE_FULL,
	PAIR_CAUSE_TAKEOVER, /* the secondary took over */
};

/* Group options for a pair's reaction to trouble (persisted with the group). */
struct group_repl_options {
	unsigned high_water_pct;     /* PFUL above this journal use; default 80 */
	bool inflow_control;         /* hold host writes above high water (default off) */
	uint64_t overflow_watch_ms;  /* ...for at most this long, then PFUS; default 60000 */
	uint64_t link_timeout_ms;    /* no contact this long: PSUE; default 30000 */
	bool auto_resync_link;       /* resync when the link returns (default on) */
	bool auto_resync_error;      /* ...also after an I/O error (default off) */
};

#define GROUP_DEFAULT_REGION_SIZE (64u << 10)

void group_repl_options_default(struct group_repl_options *o);
/* Overrides *o with the options present in the JSON object obj (keys
 * high_water_pct, inflow_control, overflow_watch_ms, link_timeout_ms,
 * auto_resync_link, auto_resync_error; others are ignored): the group
 * config file's "replication" object and the group-create request share
 * them. -EINVAL with the reason in err (o unchanged) when one has the
 * wrong type or is out of range. */
struct json_t;
int group_repl_options_from_json(struct json_t *obj, struct group_repl_options *o, char *err,
                                 size_t errlen);

struct group_config {
	char name[JOURNAL_GROUPNAME_LEN];
	char *journal_path;
	uint64_t journal_size;
	unsigned nvolumes;
	struct group_volume_config volumes[JOURNAL_MAX_VOLUMES];
	uint64_t marker_interval_ms;     /* idle marker period; default 1000 */
	uint64_t checkpoint_interval_ms; /* default 1000 */
	struct group_pair_config pair;
	uint32_t region_size; /* difference bitmap region, bytes; default 64 KiB */
	struct group_repl_options ropts;
	/* Runtime only (set by the daemon): where difference bitmaps live. NULL:
	 * none (tracking refused). */
	char *bitmap_dir;
	/* Runtime only (a daemon option, not saved): data volumes through the page
	 * cache instead of O_DIRECT. Durability is unchanged - it comes from the
	 * journal - but reads can hit the cache and volume writes are memcpys. */
	bool buffered_data;
};

struct group_stats {
	uint64_t writes, reads, trims, zeroes, flushes;
	uint64_t bytes_written, bytes_read;
	uint64_t last_seq; /* newest seq assigned */
	uint64_t durable_seq;
	uint64_t ckpt_seq;
	uint64_t journal_size, journal_used;
	uint64_t journal_bytes_written, journal_payload_bytes;
	uint64_t redone_records; /* replayed onto volumes at open */
	uint64_t base_records, base_zero_records, base_bytes, base_rereads;
	uint64_t replayed_records;
	uint64_t applied_seq;    /* every record <= this is in the volumes (maybe not synced) */
	bool failed;
	int failed_err;
};

/* Creates volumes that don't exist (sparse, of the given size) and formats the
 * journal. Changes nothing and returns -errno with a message in err (errlen
 * bytes) when anything doesn't fit. */
int group_create_storage(const struct group_config *cfg, char *err, size_t errlen);

/* Opens volumes and journal, recovers (redo), starts the timers on loop.
 * err/errlen: as above. */
int group_open(const struct group_config *cfg, struct loop *loop, struct io_engine *io,
	       struct group **ret, char *err, size_t errlen);
/* Waits for in-flight I/O, checkpoints, closes. NULL is a no-op. */
void group_close(struct group *g);

void group_io_submit(struct group *g, struct group_io *io);

/* Secondary role: volumes read-only to hosts, no markers of its own; records
 * come only through GROUP_IO_REPLAY. Turning it on fails host writes that
 * wait for the journal with -EPERM (never acknowledged). */
void group_set_secondary(struct group *g, bool on);
/* Host writes waiting for the journal (not yet all journaled). */
unsigned group_host_writes_queued(const struct group *g);
/* Sync mode (primary): a host write is answered only once the secondary holds
 * it (group_set_remote_durable) - and, as always, once it is durable here. */
void group_set_sync(struct group *g, bool on);
void group_set_remote_durable(struct group *g, uint64_t seq);
/* Every record <= this is applied to the volumes (maybe not fsynced). */
uint64_t group_applied_seq(const struct group *g);

/* Difference bitmaps (one per volume, in cfg.bitmap_dir). With tracking on,
 * every write-type record journaled from now on marks its regions - and redo
 * at the next open does too when the persisted pair state tracks
 * (group_pair_tracks). -ENOTSUP without a bitmap_dir. */
bool group_pair_tracks(const struct group_pair_config *pc);
int group_set_tracking(struct group *g, bool on);
bool group_tracking(const struct group *g);
/* Seq of the first record marked since tracking went on; 0: none yet. */
uint64_t group_first_tracked_seq(const struct group *g);
struct diffmap *group_diffmap(struct group *g, unsigned vol);
/* Writes and syncs every dirty bitmap page now; 0 or -errno. */
int group_sync_bitmaps(struct group *g);
/* Runs a checkpoint soon (not waiting for the timer), freeing journal space
 * that only it holds. */
void group_request_checkpoint(struct group *g);
/* Marks the regions of every record appended but not yet durable. */
void group_mark_undurable(struct group *g);
/* Inflow control: host writes wait before the journal while on. */
void group_hold_writes(struct group *g, bool on);
/* Inflow control: host writes wait before the journal while it holds at
 * least bytes (0: off); since when they wait (monotonic ms, 0: they don't). */
void group_set_inflow_limit(struct group *g, uint64_t bytes);
uint64_t group_held_since_ms(const struct group *g);
/* Since when (monotonic ms) the next write waits for journal space; 0: it doesn't. */
uint64_t group_blocked_since_ms(const struct group *g);
/* The pair configuration the group keeps (its redo and tracking follow it). */
void group_set_pair_config(struct group *g, const struct group_pair_config *pc);

const char *group_name(const struct group *g);
unsigned group_nvolumes(const struct group *g);
struct volume *group_volume(struct group *g, unsigned idx);
struct volume *group_find_volume(struct group *g, const char *name);
struct journal *group_journal(struct group *g);
void group_get_stats(const struct group *g, struct group_stats *ret);
const struct group_config *group_get_config(const struct group *g);

const char *pair_role_name(enum pair_role role);
const char *pair_state_name(enum pair_state state);
const char *pair_mode_name(enum pair_mode mode);

/* Group config persistence (group_config.c): JSON in STATE_DIR/groups/NAME.json. */
int group_config_save(const struct group_config *cfg, const char *dir);
int group_config_load(const char *file, struct group_config *ret, char *err, size_t errlen);
void group_config_fini(struct group_config *cfg);
/* Same path, or the same inode. */
bool group_same_file(const char *a, const char *b);

#endif
