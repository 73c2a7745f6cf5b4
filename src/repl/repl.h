/*
 * Replication between two sites: the pairs of this daemon's groups.
 *
 * The primary's daemon dials the secondary's --listen address and keeps
 * redialing (with backoff) while the pair exists. Once both ends are
 * authenticated the primary names the pair (PAIR_CREATE the first time,
 * PAIR_ATTACH after that), and the secondary pulls: it keeps a window of
 * READ_JOURNAL requests in flight, each answered by one JOURNAL_DATA batch
 * read back from the master journal (long poll when there is nothing new),
 * reorders batches by seq, and replays records through its group
 * (group.h: GROUP_IO_REPLAY) so they land in its restore journal and then
 * in the S-VOLs in seq order. It reports received (durable in the restore
 * journal) and restored (applied) numbers; the primary releases its journal
 * up to restored and, in sync mode, answers host writes at received.
 *
 * The initial copy runs at the primary as BASE records in the same stream
 * (GROUP_IO_BASE), a few chunks in flight, throttled by journal space.
 *
 * Threading: everything runs on the daemon's loop thread.
 */
#ifndef JRBD_REPL_H
#define JRBD_REPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "group/group.h"
#include "pair/pair_fsm.h"

struct loop;
struct io_engine;
struct repl;

struct repl_ops {
	/* The open group of that name, or NULL. */
	struct group *(*find_group)(void *arg, const char *name);
	/* Persists pc as the group's pair configuration; 0 or -errno. */
	int (*save)(void *arg, struct group *g, const struct group_pair_config *pc);
	/* Secondary, PAIR_CREATE: formats the group's journal as a restore journal
	 * whose first seq is start_seq and reopens the group (the old struct group
	 * is gone afterwards). -errno with a message in err; the group must then
	 * be left as it was or shown failed. */
	int (*reformat)(void *arg, struct group *g, uint64_t start_seq, struct group **ret_g,
	                char *err, size_t errlen);
};

struct repl_opts {
	const char *listen_addr; /* NULL: no replication port */
	const char *secret_file; /* NULL: pairing refused */
	const char *site;        /* this daemon's name in HELLO and logs */
	unsigned window;         /* READ_JOURNAL requests in flight (secondary); 0: 4 */
	int compress_level;      /* zstd level 1..19; 0: default (fast mode, -3); < 0: no compression */
	int64_t read_cache;      /* bytes of the master journal kept in memory for the
				  * secondary (journal_set_read_cache); 0: 64 MiB; < 0: off */
	const char *on_event;    /* program run on every pair state change, or NULL */
	const char *advertise;   /* our replication HOST:PORT as the peer should dial it
				  * (after a swap); NULL: the bound --listen address */
};

int repl_new(struct loop *loop, struct io_engine *io, const struct repl_opts *opts,
             const struct repl_ops *ops, void *arg, struct repl **ret, char *err, size_t errlen);
/* "HOST:PORT" the replication port is bound to (port 0 resolved); -ENOENT
 * without --listen. */
int repl_bound_addr(const struct repl *r, char *buf, size_t len);
/* Drops links; call after every group was detached. NULL is a no-op. */
void repl_free(struct repl *r);

/* Starts the group's pair from its persisted configuration, if any. */
int repl_group_attach(struct repl *r, struct group *g);
/* Before group_close(): stops using the group. Requests in flight complete
 * during group_close(); their state is freed then. */
void repl_group_detach(struct repl *r, struct group *g);

/* `pair create` at the primary. cb runs once, from the loop, with 0 when the
 * secondary accepted (the pair is then persisted at both sites) or -errno and
 * a message (nothing changed). */
typedef void repl_create_cb(void *arg, int err, const char *msg);
int repl_pair_create(struct repl *r, struct group *g, const char *remote, enum pair_mode mode,
                     bool initial_copy, repl_create_cb *cb, void *cb_arg, char *err, size_t errlen);

/*
 * Lifecycle commands (README "Pair lifecycle" has the table of which runs in
 * which state). Each returns 0 when cb will run later from the loop (with 0
 * and a message saying what happened, or -errno and why), 1 when it finished
 * now (a no-op or a local-only change; err holds the message), or -errno
 * with the message in err.
 */
int repl_pair_suspend(struct repl *r, struct group *g, bool drain, repl_create_cb *cb,
                      void *cb_arg, char *err, size_t errlen);
int repl_pair_resync(struct repl *r, struct group *g, bool swap, bool force, repl_create_cb *cb,
                     void *cb_arg, char *err, size_t errlen);
int repl_pair_takeover(struct repl *r, struct group *g, repl_create_cb *cb, void *cb_arg,
                       char *err, size_t errlen);
int repl_pair_delete(struct repl *r, struct group *g, repl_create_cb *cb, void *cb_arg,
                     char *err, size_t errlen);

/* Adds the pair's runtime state to a group's display object. */
void repl_group_json(struct repl *r, struct group *g, json_t *o);

#endif
