/*
 * The write pipeline of a journal group (see group.h for the big picture).
 *
 * Life of a write-type group_io (WRITE, TRIM, ZERO):
 *
 *   GIO_APPEND   waiting in append_q for journal space; records appended in
 *                FIFO order, so seq order == arrival order
 *   GIO_DURABLE  in journal_q until the journal's durable_seq covers last_seq;
 *                then, with release set, the host is answered (acked)
 *   GIO_ORDER    in the volume's range_order, waiting for earlier overlapping
 *                writes to finish (reads overlapping it wait in read_wait)
 *   GIO_VOLUME   its data-volume write/fallocate is in flight
 *   GIO_DONE     in done_q; done (unless acked) and release run from the
 *                loop hook
 *
 * The checkpoint (a timer, or journal pressure) fdatasyncs every volume and
 * then tells the journal that records below the oldest write still in flight
 * are in the volumes, which lets it release space.
 *
 * Two more kinds of request share the pipeline:
 *
 * BASE (primary, initial copy) reads a chunk of a volume and journals it as a
 * BASE record. Its data must be the volume's content exactly at the
 * record's place in the sequence, or the secondary, applying records in
 * order, would end up with stale bytes. So the read starts only after every
 * overlapping write journaled so far has reached the volume, and the chunk
 * is watched: a host write to it journaled before the BASE record itself
 * (it could land before or after the read) marks it, and the chunk is read
 * again. After a few such retries the BASE request holds the append queue
 * while it re-reads, so nothing can come between its read and its record.
 *
 * REPLAY (secondary) carries a record of the primary's stream, appended to
 * this group's journal (the restore journal) under the same seq, then
 * applied like a host write. The journal, range order, checkpoint and redo
 * then give the secondary the same guarantees the primary has: records are
 * applied in seq order where they overlap, and a crash recovers to an exact
 * prefix of the stream.
 */
#include "group/group.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/checked.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "bitmap/diffmap.h"
#include "journal/journal.h"

enum group_io_state {
	GIO_NEW = 0,
	GIO_APPEND,
	GIO_DURABLE,
	GIO_ORDER,
	GIO_VOLUME,
	GIO_DONE,
};

struct io_list {
	struct group_io *head, *tail;
};

struct group {
	struct group_config cfg; /* owns its strings */
	struct loop *loop;
	struct io_engine *io;
	struct journal *j;
	struct volume vols[JOURNAL_MAX_VOLUMES];
	unsigned nvols;

	struct loop_hook hook;
	struct loop_timer ckpt_timer;
	struct loop_timer marker_timer;

	struct io_list append_q;  /* GIO_APPEND, FIFO */
	struct io_list journal_q; /* GIO_DURABLE, seq order */
	struct io_list done_q;    /* GIO_DONE */
	struct io_list sync_q;    /* volume I/O done inline, result in req.io_res */
	unsigned inflight;        /* host requests not yet answered */

	uint64_t durable_seq;
	bool failed; /* sticky: journal or volume write failed */
	int failed_err;

	/* Checkpoint in progress: one fsync per volume, then journal_set_checkpoint. */
	bool ckpt_running;
	bool ckpt_wanted;
	unsigned ckpt_pending;
	int ckpt_err;
	uint64_t ckpt_target;
	uint64_t ckpt_seq;
	struct io_req ckpt_reqs[JOURNAL_MAX_VOLUMES];

	uint64_t seq_at_last_marker;
	struct group_stats stats;

	bool secondary;         /* records come only as REPLAY */
	bool sync;              /* host writes wait for remote_durable */
	uint64_t remote_durable; /* the secondary holds every record <= this */
	struct io_list sync_hold; /* done writes waiting for the secondary */
	struct group_io *base_watch[GROUP_MAX_BASE_WATCH]; /* BASE requests between read and append */
	struct group_io *base_barrier; /* re-reading: nothing is appended before it */

	/* Difference tracking (a suspended pair): every write-type record
	 * journaled marks its regions, and so does redo at open. The maps are
	 * synced before a checkpoint lets the journal drop the records that
	 * set them - so a dirty region is never forgotten: until then the
	 * record itself (durable before the host's ack) remembers it. */
	struct diffmap *maps[JOURNAL_MAX_VOLUMES];
	bool tracking;
	bool hold_writes;          /* host writes wait in append_q */
	uint64_t inflow_limit;     /* ...also while the journal holds this many bytes (0: off) */
	uint64_t held_since_ms;    /* inflow control holding writes since (0: not) */
	uint64_t first_tracked_seq; /* first record marked since tracking began (0: none) */
	uint64_t blocked_since_ms; /* append queue waiting for journal space since (0: not) */
};

static void group_pump(struct group *g);
static void base_watch_remove(struct group *g, struct group_io *io);

/* --- lists --- */

static void
list_push(struct io_list *l, struct group_io *io)
{
	io->g_next = NULL;
	if (l->tail)
		l->tail->g_next = io;
	else
		l->head = io;
	l->tail = io;
}

static struct group_io *
list_pop(struct io_list *l)
{
	struct group_io *io = l->head;

	if (io) {
		l->head = io->g_next;
		if (!l->head)
			l->tail = NULL;
		io->g_next = NULL;
	}
	return io;
}

/* --- completion --- */

static void
io_finish(struct group *g, struct group_io *io, int res)
{
	if (io->op == GROUP_IO_BASE)
		base_watch_remove(g, io);
	io->res = res;
	io->state = GIO_DONE;
	list_push(&g->done_q, io);
	loop_wakeup(g->loop);
}

static void
group_fail(struct group *g, int err, const char *what)
{
	if (g->failed)
		return;
	g->failed = true;
	g->failed_err = err;
	log_errno(err, "group '%s': %s; group is FAILED and refuses writes until restarted",
		  g->cfg.name, what);
}

static bool
is_write_op(enum group_io_op op)
{
	return op == GROUP_IO_WRITE || op == GROUP_IO_TRIM || op == GROUP_IO_ZERO;
}

/* What a request does to its volume: REPLAY does what its record says. */
static enum group_io_op
volume_op(const struct group_io *io)
{
	if (io->op != GROUP_IO_REPLAY)
		return io->op;
	switch (io->rec.kind) {
	case JOURNAL_REC_WRITE:
	case JOURNAL_REC_BASE:
		return GROUP_IO_WRITE;
	case JOURNAL_REC_TRIM:
		return GROUP_IO_TRIM;
	case JOURNAL_REC_ZERO:
	case JOURNAL_REC_BASE_ZERO:
		return GROUP_IO_ZERO;
	default:
		return GROUP_IO_FLUSH; /* MARKER: nothing to apply */
	}
}

/* Requests that take a place in the volume's range order once journaled. */
static bool
has_volume_write(const struct group_io *io)
{
	return is_write_op(io->op) || (io->op == GROUP_IO_REPLAY && volume_op(io) != GROUP_IO_FLUSH);
}

/* --- data-volume I/O --- */

static int
zero_fallocate_mode(unsigned flags)
{
	if (flags & GROUP_IO_NO_HOLE)
		return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
}

/* Writes zeroes with plain writes where fallocate isn't supported. Blocking:
 * XXX: only for volumes on filesystems without fallocate; rare enough that it
 * runs on the loop thread. */
static int
volume_write_zeroes_slow(struct volume *v, uint64_t offset, uint64_t len)
{
	static const char zeroes[65536];

	while (len) {
		size_t n = (size_t)MIN(len, sizeof(zeroes));
		int r = util_pwrite_full(v->fd_buffered, zeroes, n, offset);

		if (r < 0)
			return r;
		offset += n;
		len -= n;
	}
	return 0;
}

static void volume_io_done(struct io_req *req, int res);
static bool volume_io_inline(struct group *g, struct group_io *io);
static void retry_waiting_reads(struct group *g, struct volume *v);

static bool
is_dio_ok(const struct volume *v, uint64_t offset, uint64_t len)
{
	return IS_ALIGNED(offset, (uint64_t)v->dio_align) && IS_ALIGNED(len, (uint64_t)v->dio_align);
}

/*
 * Page-cache I/O is a memcpy: doing it inline beats a trip through the
 * engine (io_uring punts buffered writes to worker threads). Reads use
 * RWF_NOWAIT so a cache miss never blocks the loop; the engine takes those.
 * The completion still runs from the loop hook, never from the submitter.
 * Returns false when the request must go through the engine.
 */
static bool
volume_io_inline(struct group *g, struct group_io *io)
{
	struct io_req *req = &io->req;
	struct iovec iov = {.iov_base = req->buf, .iov_len = req->len};
	ssize_t n;

	if (req->fd != io->vol->fd_buffered && !io->vol->is_buffered)
		return false;
	if (req->op == IO_OP_READ) {
		n = preadv2(req->fd, &iov, 1, (off_t)req->offset, RWF_NOWAIT);
		if (n != (ssize_t)req->len)
			return false; /* miss, short or error: the engine retries and reports */
		req->io_res = (int)n;
	} else {
		int r = util_pwrite_full(req->fd, req->buf, req->len, req->offset);

		/* Start writeback now rather than letting a checkpoint's fdatasync
		 * flush seconds of dirty pages at once and stall the journal's
		 * flushes behind it. Asynchronous: it only queues the pages. */
		if (r == 0 && io->vol->is_buffered)
			sync_file_range(req->fd, (off_t)req->offset, (off_t)req->len,
					SYNC_FILE_RANGE_WRITE);
		req->io_res = r < 0 ? r : (int)req->len;
	}
	list_push(&g->sync_q, io);
	loop_wakeup(g->loop);
	return true;
}

static void
volume_start(struct group *g, struct group_io *io)
{
	struct volume *v = io->vol;
	struct io_req *req = &io->req;

	memset(req, 0, sizeof(*req));
	req->done = volume_io_done;
	req->arg = io;
	req->offset = io->offset;
	io->state = GIO_VOLUME;
	io->range.started = true;
	switch (volume_op(io)) {
	case GROUP_IO_WRITE:
		req->op = IO_OP_WRITE;
		req->fd = is_dio_ok(v, io->offset, io->len) ? v->fd : v->fd_buffered;
		req->buf = io->buf;
		req->len = io->len;
		break;
	case GROUP_IO_TRIM:
		req->op = IO_OP_FALLOCATE;
		req->fd = v->fd_buffered;
		req->len64 = io->len;
		req->falloc_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		break;
	case GROUP_IO_ZERO:
		if (v->zero_fallback) {
			int r = volume_write_zeroes_slow(v, io->offset, io->len);

			req->fd = v->fd_buffered;
			req->op = IO_OP_FALLOCATE;
			volume_io_done(req, r);
			return;
		}
		req->op = IO_OP_FALLOCATE;
		req->fd = v->fd_buffered;
		req->len64 = io->len;
		req->falloc_mode = zero_fallocate_mode(io->flags);
		break;
	default:
		JRBD_VERIFY(0);
	}
	if (req->op == IO_OP_WRITE && volume_io_inline(g, io))
		return;
	io_engine_queue(g->io, req);
}

/* Starts every write of v that is durable and no longer behind an overlapping one. */
static void
volume_start_ready(struct group *g, struct volume *v)
{
	struct range_entry *e = NULL;

	while ((e = range_order_next_startable(&v->order, e)))
		volume_start(g, container_of(e, struct group_io, range));
}

/* A read must not overtake a write it overlaps that may already be
 * acknowledged, or it could return data older than what the host was told
 * is written. */
static bool
read_overlaps_write(const struct volume *v, const struct group_io *io)
{
	/* Only writes that came before the read (io->last_seq: the newest seq
	 * when it arrived), so a stream of rewrites can't starve it. */
	for (const struct range_entry *e = v->order.head; e && e->seq <= io->last_seq;
	     e = e->next) {
		if (ranges_overlap(e->offset, e->len, io->offset, io->len))
			return true;
	}
	return false;
}

static void base_read_done(struct group *g, struct group_io *io, int res);

/* A chunk with no data extent reads as zero: no need to read it. */
static bool
is_hole(const struct volume *v, uint64_t offset, uint64_t len)
{
	off_t data;

	if (v->is_blockdev)
		return false;
	data = lseek(v->fd_buffered, (off_t)offset, SEEK_DATA);
	if (data < 0)
		return errno == ENXIO; /* no data at or after offset */
	return (uint64_t)data >= offset + len;
}

static void
read_start(struct group *g, struct group_io *io)
{
	struct volume *v = io->vol;

	if (io->op == GROUP_IO_BASE && !g->failed && is_hole(v, io->offset, io->len)) {
		io->base_zero = true;
		base_read_done(g, io, 0);
		return;
	}
	memset(&io->req, 0, sizeof(io->req));
	io->req.op = IO_OP_READ;
	io->req.fd = is_dio_ok(v, io->offset, io->len) ? v->fd : v->fd_buffered;
	io->req.buf = io->buf;
	io->req.len = io->len;
	io->req.offset = io->offset;
	io->req.done = volume_io_done;
	io->req.arg = io;
	io->state = GIO_VOLUME;
	if (g->failed) {
		/* The volume may lag acknowledged writes that failed to land. */
		io_finish(g, io, -EIO);
		return;
	}
	if (!volume_io_inline(g, io))
		io_engine_queue(g->io, &io->req);
}

static void
retry_waiting_reads(struct group *g, struct volume *v)
{
	struct group_io *waiting = v->read_wait, *io;

	v->read_wait = NULL;
	while ((io = waiting)) {
		waiting = io->g_next;
		io->g_next = NULL;
		if (read_overlaps_write(v, io)) {
			io->g_next = v->read_wait;
			v->read_wait = io;
		} else {
			read_start(g, io);
		}
	}
}

static void
volume_io_done(struct io_req *req, int res)
{
	struct group_io *io = req->arg;
	struct group *g = io->g;
	struct volume *v = io->vol;

	if (io->op == GROUP_IO_BASE) {
		base_read_done(g, io, res < 0 ? res : 0);
		return;
	}
	if (io->op == GROUP_IO_READ || io->op == GROUP_IO_CACHE) {
		if (res < 0)
			log_warn("group '%s' volume '%s': read at %llu+%u failed: %s", g->cfg.name,
				 v->name, (unsigned long long)io->offset, io->len, strerror(-res));
		io_finish(g, io, res < 0 ? res : 0);
		return;
	}
	if (res == -EOPNOTSUPP && req->op == IO_OP_FALLOCATE) {
		/* Filesystem or device without hole punching: zeroes it is, from now on. */
		v->zero_fallback = true;
		res = volume_write_zeroes_slow(v, io->offset, io->len);
	}
	range_order_remove(&v->order, &io->range);
	retry_waiting_reads(g, v);
	if (res < 0) {
		/* The journal holds the record, but the volume didn't take it: the
		 * volume now lags the journal; stop accepting writes. */
		group_fail(g, res, "data volume write failed");
		io_finish(g, io, -EIO);
	} else {
		g->stats.bytes_written += volume_op(io) == GROUP_IO_WRITE ? io->len : 0;
		io_finish(g, io, 0);
	}
	volume_start_ready(g, v);
}

/* --- journal side --- */

/* --- initial copy (BASE) --- */

static int
base_watch_add(struct group *g, struct group_io *io)
{
	for (unsigned i = 0; i < GROUP_MAX_BASE_WATCH; i++) {
		if (g->base_watch[i] == io)
			return 0;
	}
	for (unsigned i = 0; i < GROUP_MAX_BASE_WATCH; i++) {
		if (!g->base_watch[i]) {
			g->base_watch[i] = io;
			return 0;
		}
	}
	return -EBUSY;
}

static void
base_watch_remove(struct group *g, struct group_io *io)
{
	for (unsigned i = 0; i < GROUP_MAX_BASE_WATCH; i++) {
		if (g->base_watch[i] == io)
			g->base_watch[i] = NULL;
	}
}

/* A host write is being journaled: BASE reads of chunks it overlaps may
 * have missed it. */
static void
base_watch_note_write(struct group *g, const struct group_io *io)
{
	for (unsigned i = 0; i < GROUP_MAX_BASE_WATCH; i++) {
		struct group_io *b = g->base_watch[i];

		if (b && b->vol == io->vol && ranges_overlap(b->offset, b->len, io->offset, io->len))
			b->base_conflict = true;
	}
}

/* (Re)starts the read of a BASE chunk: after every overlapping write
 * journaled so far is in the volume. */
static void
base_start(struct group *g, struct group_io *io)
{
	struct volume *v = io->vol;

	io->base_conflict = false;
	io->base_zero = false;
	io->last_seq = g->stats.last_seq;
	io->state = GIO_ORDER;
	if (read_overlaps_write(v, io)) {
		io->g_next = v->read_wait;
		v->read_wait = io;
		return;
	}
	read_start(g, io);
}

static bool
is_all_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!len)
		return true;
	return p[0] == 0 && !memcmp(p, p + 1, len - 1);
}

static void
base_read_done(struct group *g, struct group_io *io, int res)
{
	if (res < 0) {
		log_warn("group '%s' volume '%s': initial copy read at %llu+%u failed: %s",
			 g->cfg.name, io->vol->name, (unsigned long long)io->offset, io->len,
			 strerror(-res));
		if (g->base_barrier == io)
			g->base_barrier = NULL;
		io_finish(g, io, res);
		loop_wakeup(g->loop);
		return;
	}
	if (!io->base_zero)
		io->base_zero = is_all_zero(io->buf, io->len);
	io->state = GIO_APPEND;
	if (!io->base_barrier)
		list_push(&g->append_q, io);
	loop_wakeup(g->loop);
}

/* --- journal side --- */

static uint8_t
record_kind(const struct group_io *io)
{
	switch (io->op) {
	case GROUP_IO_WRITE:
		return JOURNAL_REC_WRITE;
	case GROUP_IO_TRIM:
		return JOURNAL_REC_TRIM;
	default:
		return JOURNAL_REC_ZERO;
	}
}

/* Appends the records of io; 0 when all are in, -EAGAIN when the journal is
 * full for now, other -errno on failure. */
static int
append_one(struct group *g, struct group_io *io, struct journal_rec *rec, const void *payload)
{
	int r = journal_append(g->j, rec, payload);

	if (r < 0)
		return r;
	io->first_seq = io->last_seq = rec->seq;
	g->stats.last_seq = rec->seq;
	return 0;
}

static int
append_records(struct group *g, struct group_io *io)
{
	if (io->op == GROUP_IO_BASE) {
		struct journal_rec rec = {0};
		int r;

		rec.kind = io->base_zero ? JOURNAL_REC_BASE_ZERO : JOURNAL_REC_BASE;
		rec.volume = io->vol->id;
		rec.offset = io->offset;
		rec.length = io->len;
		rec.payload_len = io->base_zero ? 0 : io->len;
		r = append_one(g, io, &rec, io->base_zero ? NULL : io->buf);
		if (r == 0) {
			io->rec = rec;
			g->stats.base_records += !io->base_zero;
			g->stats.base_zero_records += io->base_zero;
			g->stats.base_bytes += rec.payload_len;
			base_watch_remove(g, io);
		}
		return r;
	}
	if (io->op == GROUP_IO_REPLAY) {
		struct journal_stats js;
		struct journal_rec rec = io->rec;
		int r;

		journal_get_stats(g->j, &js);
		if (js.next_seq != io->rec.seq) {
			log_err("group '%s': replayed record seq %llu, but the restore journal is at "
				"seq %llu", g->cfg.name, (unsigned long long)io->rec.seq,
				(unsigned long long)js.next_seq);
			return -EPROTO;
		}
		r = append_one(g, io, &rec, rec.payload_len ? io->buf : NULL);
		if (r == 0)
			g->stats.replayed_records++;
		return r;
	}
	base_watch_note_write(g, io);
	do {
		struct journal_rec rec = {0};
		uint32_t chunk = 0;
		int r;

		rec.kind = record_kind(io);
		rec.volume = io->vol->id;
		rec.flags = (uint8_t)(((io->flags & GROUP_IO_NO_HOLE) ? JOURNAL_RF_NO_HOLE : 0) |
				      ((io->flags & GROUP_IO_FUA) ? JOURNAL_RF_FUA : 0));
		if (io->op == GROUP_IO_WRITE) {
			chunk = MIN(io->len - io->appended, JOURNAL_MAX_PAYLOAD);
			rec.offset = io->offset + io->appended;
			rec.length = chunk;
			rec.payload_len = chunk;
		} else {
			rec.offset = io->offset;
			rec.length = io->len;
		}
		r = journal_append(g->j, &rec,
				   chunk ? (const char *)io->buf + io->appended : NULL);
		if (r < 0)
			return r;
		if (io->first_seq == 0)
			io->first_seq = rec.seq;
		io->last_seq = rec.seq;
		g->stats.last_seq = rec.seq;
		io->appended += chunk;
	} while (io->op == GROUP_IO_WRITE && io->appended < io->len);
	return 0;
}

static void
track_write(struct group *g, unsigned vol, uint64_t offset, uint64_t len, uint64_t seq)
{
	if (!g->maps[vol])
		return;
	diffmap_mark(g->maps[vol], offset, len);
	if (!g->first_tracked_seq)
		g->first_tracked_seq = seq;
}

/* Inflow control: host writes wait while the journal is above the limit
 * (the journal's space callback wakes the loop when it drops). */
static bool
inflow_holds(struct group *g)
{
	struct journal_stats js;

	if (g->hold_writes)
		return true;
	if (!g->inflow_limit)
		return false;
	journal_get_stats(g->j, &js);
	if (js.used_bytes < g->inflow_limit) {
		g->held_since_ms = 0;
		return false;
	}
	if (!g->held_since_ms)
		g->held_since_ms = util_mono_ns() / 1000000u;
	return true;
}

static void
process_append_q(struct group *g)
{
	struct group_io *io;

	for (;;) {
		bool barrier = false;
		int r;

		if ((io = g->base_barrier)) {
			/* A BASE chunk re-reading with the queue held: nothing may be
			 * journaled between its read and its record. */
			if (io->state != GIO_APPEND)
				break;
			barrier = true;
		} else if (!(io = g->append_q.head)) {
			break;
		}
		if (g->failed) {
			if (barrier)
				g->base_barrier = NULL;
			else
				list_pop(&g->append_q);
			io_finish(g, io, -EIO);
			continue;
		}
		if (io->op == GROUP_IO_BASE && io->base_conflict) {
			g->stats.base_rereads++;
			if (!barrier)
				list_pop(&g->append_q);
			if (++io->base_tries >= GROUP_BASE_TRIES) {
				io->base_barrier = true;
				g->base_barrier = io;
			}
			base_start(g, io);
			continue;
		}
		if (!barrier && is_write_op(io->op) && inflow_holds(g))
			break; /* inflow control: the journal is above its high-water mark */
		r = append_records(g, io);
		if (r == -EAGAIN) {
			/* Journal full: ask for a checkpoint to free space now. */
			g->ckpt_wanted = true;
			if (!g->blocked_since_ms)
				g->blocked_since_ms = util_mono_ns() / 1000000u;
			break;
		}
		g->blocked_since_ms = 0;
		if (barrier)
			g->base_barrier = NULL;
		else
			list_pop(&g->append_q);
		if (r == 0 && g->tracking && is_write_op(io->op))
			track_write(g, io->vol->id, io->offset, io->len, io->first_seq);
		if (r < 0) {
			if (io->appended)
				group_fail(g, r, "journal append failed mid-request");
			io_finish(g, io, (r == -EINVAL || r == -EPROTO) ? r : -EIO);
			continue;
		}
		io->state = GIO_DURABLE;
		if (!has_volume_write(io)) {
			list_push(&g->journal_q, io);
			continue;
		}
		io->range.seq = io->first_seq;
		io->range.offset = io->offset;
		io->range.len = io->len;
		io->range.ready = false;
		io->range.started = false;
		range_order_add(&io->vol->order, &io->range);
		list_push(&g->journal_q, io);
	}
}

static void
on_journal_durable(void *arg, uint64_t durable_seq)
{
	struct group *g = arg;
	struct group_io *io;

	g->durable_seq = durable_seq;
	g->stats.durable_seq = durable_seq;
	while ((io = g->journal_q.head) && io->last_seq <= durable_seq) {
		list_pop(&g->journal_q);
		if (!has_volume_write(io)) {
			io_finish(g, io, 0); /* BASE, or a replayed MARKER */
			continue;
		}
		io->state = GIO_ORDER;
		io->range.ready = true;
		if (io->release && !g->failed && !g->sync) {
			/* Durable in the journal: redo would restore it, so the host
			 * may have its answer now; reads of the range wait for the
			 * volume write (read_overlaps_write). */
			io->acked = true;
			io->done(io, 0);
		}
		if (range_order_can_start(&io->vol->order, &io->range))
			volume_start(g, io);
	}
	loop_wakeup(g->loop);
}

static void
on_journal_space(void *arg)
{
	struct group *g = arg;

	loop_wakeup(g->loop);
}

static void
on_journal_error(void *arg, int err)
{
	struct group *g = arg;
	struct group_io *io;

	group_fail(g, err, "journal write failed");
	/* Nothing in journal_q can become durable any more. */
	while ((io = list_pop(&g->journal_q))) {
		if (has_volume_write(io))
			range_order_remove(&io->vol->order, &io->range);
		io_finish(g, io, -EIO);
	}
	for (unsigned i = 0; i < g->nvols; i++)
		retry_waiting_reads(g, &g->vols[i]);
	loop_wakeup(g->loop);
}

/* Applies one recovered record to its volume, synchronously (start-up only). */
static int
redo_record(void *arg, const struct journal_rec *rec, const void *payload)
{
	struct group *g = arg;
	struct volume *v;
	int r = 0;

	if (rec->kind == JOURNAL_REC_MARKER)
		return 0;
	if (rec->volume >= g->nvols) {
		log_err("group '%s': journal record seq %llu names volume %u, group has %u",
			g->cfg.name, (unsigned long long)rec->seq, rec->volume, g->nvols);
		return -EPROTO;
	}
	v = &g->vols[rec->volume];
	if (!range_within(rec->offset, rec->length, v->size)) {
		log_err("group '%s' volume '%s': journal record seq %llu at %llu+%llu is outside "
			"the volume (%llu bytes)",
			g->cfg.name, v->name, (unsigned long long)rec->seq,
			(unsigned long long)rec->offset, (unsigned long long)rec->length,
			(unsigned long long)v->size);
		return -EPROTO;
	}
	switch (rec->kind) {
	case JOURNAL_REC_WRITE:
	case JOURNAL_REC_BASE:
		r = util_pwrite_full(v->fd_buffered, payload, rec->payload_len, rec->offset);
		break;
	case JOURNAL_REC_TRIM:
	case JOURNAL_REC_ZERO:
	case JOURNAL_REC_BASE_ZERO: {
		int mode = zero_fallocate_mode(
			rec->kind == JOURNAL_REC_ZERO && (rec->flags & JOURNAL_RF_NO_HOLE)
				? GROUP_IO_NO_HOLE
				: 0);

		if (fallocate(v->fd_buffered, mode, (off_t)rec->offset, (off_t)rec->length) < 0) {
			r = -errno;
			if (r == -EOPNOTSUPP)
				r = volume_write_zeroes_slow(v, rec->offset, rec->length);
		}
		break;
	}
	default:
		return -EPROTO;
	}
	if (r < 0)
		return log_errno(r, "group '%s' volume '%s': redo of seq %llu", g->cfg.name,
				 v->name, (unsigned long long)rec->seq);
	if (g->tracking)
		track_write(g, rec->volume, rec->offset, rec->length, rec->seq);
	g->stats.redone_records++;
	return 0;
}

static const struct journal_ops group_journal_ops = {
	.on_durable = on_journal_durable,
	.on_space = on_journal_space,
	.on_error = on_journal_error,
	.redo = redo_record,
};

/* --- checkpoint --- */

/* Oldest seq whose volume write may not have completed. */
static uint64_t
oldest_unapplied_seq(const struct group *g)
{
	struct journal_stats js;
	uint64_t seq;

	journal_get_stats(g->j, &js);
	seq = js.next_seq;
	if (g->durable_seq + 1 < seq)
		seq = g->durable_seq + 1;
	for (unsigned i = 0; i < g->nvols; i++)
		seq = MIN(seq, range_order_min_seq(&g->vols[i].order));
	/* A write whose first records are in but whose last didn't fit yet. */
	if (g->append_q.head && g->append_q.head->first_seq)
		seq = MIN(seq, g->append_q.head->first_seq);
	return seq;
}

static void
ckpt_fsync_done(struct io_req *req, int res)
{
	struct group *g = req->arg;

	if (res < 0 && !g->ckpt_err)
		g->ckpt_err = res;
	if (--g->ckpt_pending)
		return;
	g->ckpt_running = false;
	if (g->ckpt_err) {
		group_fail(g, g->ckpt_err, "data volume fdatasync failed");
		return;
	}
	g->ckpt_seq = g->ckpt_target;
	g->stats.ckpt_seq = g->ckpt_seq;
	journal_set_checkpoint(g->j, g->ckpt_target);
	loop_wakeup(g->loop);
}

int
group_sync_bitmaps(struct group *g)
{
	for (unsigned i = 0; i < g->nvols; i++) {
		int r;

		if (!g->maps[i] || !diffmap_needs_sync(g->maps[i]))
			continue;
		r = diffmap_sync(g->maps[i]);
		if (r < 0)
			return log_errno(r, "group '%s' volume '%s': difference bitmap sync",
					 g->cfg.name, g->vols[i].name);
	}
	return 0;
}

static void
checkpoint_start(struct group *g)
{
	uint64_t target;

	if (g->ckpt_running || g->failed)
		return;
	g->ckpt_wanted = false;
	target = oldest_unapplied_seq(g);
	if (target <= g->ckpt_seq)
		return;
	/* Records below target are about to be released: the bits they set
	 * must be on disk first. */
	if (group_sync_bitmaps(g) < 0) {
		group_fail(g, -EIO, "difference bitmap write failed");
		return;
	}
	g->ckpt_running = true;
	g->ckpt_err = 0;
	g->ckpt_target = target;
	g->ckpt_pending = g->nvols;
	for (unsigned i = 0; i < g->nvols; i++) {
		struct io_req *req = &g->ckpt_reqs[i];

		memset(req, 0, sizeof(*req));
		req->op = IO_OP_FSYNC;
		req->fd = g->vols[i].fd;
		req->done = ckpt_fsync_done;
		req->arg = g;
		io_engine_queue(g->io, req);
	}
}

static void
ckpt_timer_fired(struct loop *loop, void *arg)
{
	(void)loop;
	checkpoint_start(arg);
}

static void
marker_timer_fired(struct loop *loop, void *arg)
{
	struct group *g = arg;
	struct journal_rec rec = {.kind = JOURNAL_REC_MARKER};

	(void)loop;
	if (g->failed || g->secondary || g->stats.last_seq != g->seq_at_last_marker)
		goto out;
	/* Idle: a timestamped marker lets consumers measure their lag in seconds. */
	if (journal_append(g->j, &rec, NULL) == 0) {
		g->stats.last_seq = rec.seq;
		loop_wakeup(g->loop);
	}
out:
	g->seq_at_last_marker = g->stats.last_seq;
}

/* --- the loop hook: group commit and deferred completions --- */

static void
deliver(struct group *g, struct group_io *io)
{
	/* Without release, done may free io: nothing of it is read after. */
	group_io_done_fn *release = io->release;

	g->inflight--;
	if (!io->acked)
		io->done(io, io->res);
	if (release)
		release(io, io->res);
}

/* Sync mode: answers the writes the secondary now holds (all of them when
 * sync mode went off). */
static void
release_sync_held(struct group *g)
{
	struct io_list keep = {0};
	struct group_io *io;

	if (!g->sync_hold.head)
		return;
	while ((io = list_pop(&g->sync_hold))) {
		if (g->sync && io->last_seq > g->remote_durable) {
			list_push(&keep, io);
			continue;
		}
		io->sync_held = false;
		deliver(g, io);
	}
	g->sync_hold = keep;
}

static void
group_pump(struct group *g)
{
	struct group_io *io;
	struct journal_stats js;

	while ((io = list_pop(&g->sync_q)))
		volume_io_done(&io->req, io->req.io_res);
	process_append_q(g);
	journal_commit(g->j);
	/* Hand the batch to the kernel now, whatever order the loop hooks run in. */
	io_engine_submit(g->io);
	journal_get_stats(g->j, &js);
	/* Free space before the journal fills up, not after. */
	if (g->ckpt_wanted || js.used_bytes > js.area_size / 2)
		checkpoint_start(g);
	while ((io = list_pop(&g->done_q))) {
		if (g->sync && is_write_op(io->op) && !io->acked && io->res == 0 &&
		    io->last_seq > g->remote_durable) {
			io->sync_held = true;
			list_push(&g->sync_hold, io);
			continue;
		}
		deliver(g, io);
	}
	release_sync_held(g);
}

static void
group_hook(struct loop *loop, void *arg)
{
	(void)loop;
	group_pump(arg);
}

/* --- submission --- */

void
group_io_submit(struct group *g, struct group_io *io)
{
	struct volume *v = io->vol;

	io->g = g;
	io->res = 0;
	io->acked = false;
	io->g_next = NULL;
	io->first_seq = io->last_seq = 0;
	io->appended = 0;
	io->state = GIO_NEW;
	io->sync_held = false;
	g->inflight++;
	if (io->op == GROUP_IO_REPLAY) {
		/* The caller checked the record against the group (volume, length). */
		io->offset = io->rec.offset;
		io->len = (uint32_t)io->rec.length;
		io->flags = (io->rec.kind == JOURNAL_REC_ZERO && (io->rec.flags & JOURNAL_RF_NO_HOLE))
				    ? GROUP_IO_NO_HOLE
				    : 0;
	}
	if (io->op != GROUP_IO_FLUSH && !range_within(io->offset, io->len, v->size)) {
		io_finish(g, io, -EINVAL);
		return;
	}
	if ((io->op == GROUP_IO_READ || io->op == GROUP_IO_WRITE) && io->len > v->max_request) {
		io_finish(g, io, -EINVAL);
		return;
	}
	if (is_write_op(io->op) && v->read_only) {
		io_finish(g, io, -EPERM);
		return;
	}
	switch (io->op) {
	case GROUP_IO_READ:
		g->stats.reads++;
		g->stats.bytes_read += io->len;
		io->last_seq = g->stats.last_seq;
		if (read_overlaps_write(v, io)) {
			io->state = GIO_ORDER;
			io->g_next = v->read_wait;
			v->read_wait = io;
			return;
		}
		read_start(g, io);
		return;
	case GROUP_IO_CACHE:
		posix_fadvise(v->fd_buffered, (off_t)io->offset, (off_t)io->len,
			      POSIX_FADV_WILLNEED);
		io_finish(g, io, 0);
		return;
	case GROUP_IO_FLUSH:
		/* Every acknowledged write is already durable in the journal (the
		 * group flush ran before it was answered) and redo restores the
		 * volumes from it. */
		g->stats.flushes++;
		io_finish(g, io, g->failed ? -EIO : 0);
		return;
	case GROUP_IO_ZERO:
		if ((io->flags & GROUP_IO_FAST_ZERO) && v->zero_fallback) {
			io_finish(g, io, -ENOTSUP);
			return;
		}
		g->stats.zeroes++;
		break;
	case GROUP_IO_TRIM:
		g->stats.trims++;
		break;
	case GROUP_IO_WRITE:
		g->stats.writes++;
		break;
	case GROUP_IO_BASE:
		io->base_tries = 0;
		io->base_barrier = false;
		if (g->failed || g->secondary || io->len == 0 || io->len > JOURNAL_MAX_PAYLOAD) {
			io_finish(g, io, g->failed ? -EIO : -EINVAL);
			return;
		}
		if (base_watch_add(g, io) < 0) {
			io_finish(g, io, -EBUSY);
			return;
		}
		base_start(g, io);
		return;
	case GROUP_IO_REPLAY:
		if (!g->secondary) {
			io_finish(g, io, -EPERM);
			return;
		}
		if (g->failed) {
			io_finish(g, io, -EIO);
			return;
		}
		io->state = GIO_APPEND;
		list_push(&g->append_q, io);
		loop_wakeup(g->loop);
		return;
	}
	if (g->failed || io->len == 0) {
		io_finish(g, io, g->failed ? -EIO : 0);
		return;
	}
	io->state = GIO_APPEND;
	list_push(&g->append_q, io);
	loop_wakeup(g->loop);
}

/* --- open / create / close --- */

static int
open_volume(struct volume *v, const struct group_volume_config *vc, bool buffered, char *err,
	    size_t errlen)
{
	struct stat st;
	uint64_t size;
	int r;

	v->fd = v->fd_buffered = -1;
	v->fd_buffered = open(vc->path, O_RDWR | O_CLOEXEC);
	if (v->fd_buffered < 0) {
		r = -errno;
		snprintf(err, errlen, "volume '%s': cannot open '%s': %s", vc->name, vc->path,
			 strerror(errno));
		return r;
	}
	if (fstat(v->fd_buffered, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		snprintf(err, errlen, "volume '%s': '%s' is not a regular file or block device",
			 vc->name, vc->path);
		return -EINVAL;
	}
	v->is_blockdev = S_ISBLK(st.st_mode);
	r = util_fd_size(v->fd_buffered, &size);
	if (r < 0) {
		snprintf(err, errlen, "volume '%s': cannot size '%s': %s", vc->name, vc->path,
			 strerror(-r));
		return r;
	}
	if (vc->size > size) {
		snprintf(err, errlen, "volume '%s': '%s' holds %llu bytes, configured size is %llu",
			 vc->name, vc->path, (unsigned long long)size,
			 (unsigned long long)vc->size);
		return -ENOSPC;
	}
	v->size = vc->size ? vc->size : size;
	v->fd = buffered ? -1 : open(vc->path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (v->fd < 0) {
		/* Buffered by choice, or a filesystem without O_DIRECT (tmpfs):
		 * still correct, the journal makes writes durable. */
		v->fd = dup(v->fd_buffered);
		v->dio_align = 1;
		v->is_buffered = true;
	} else {
		v->dio_align = util_dio_align(v->fd);
	}
	if (v->fd < 0) {
		r = -errno;
		snprintf(err, errlen, "volume '%s': %s", vc->name, strerror(errno));
		return r;
	}
	snprintf(v->name, sizeof(v->name), "%s", vc->name);
	v->path = strdup(vc->path);
	if (!v->path)
		return -ENOMEM;
	range_order_init(&v->order);
	return 0;
}

static void
close_volume(struct volume *v)
{
	if (v->fd >= 0)
		close(v->fd);
	if (v->fd_buffered >= 0)
		close(v->fd_buffered);
	v->fd = v->fd_buffered = -1;
	free(v->path);
	v->path = NULL;
}

static int
copy_config(struct group_config *dst, const struct group_config *src)
{
	*dst = *src;
	dst->journal_path = NULL;
	dst->bitmap_dir = NULL;
	for (unsigned i = 0; i < JOURNAL_MAX_VOLUMES; i++)
		dst->volumes[i].path = NULL;
	dst->journal_path = strdup(src->journal_path);
	if (!dst->journal_path)
		return -ENOMEM;
	if (src->bitmap_dir && !(dst->bitmap_dir = strdup(src->bitmap_dir)))
		return -ENOMEM;
	for (unsigned i = 0; i < src->nvolumes; i++) {
		dst->volumes[i].path = strdup(src->volumes[i].path);
		if (!dst->volumes[i].path)
			return -ENOMEM;
	}
	return 0;
}

/*
 * A write is applied to its volume only once all its records are in the
 * journal, and the checkpoint can't release records of a write that is still
 * being appended; so a whole request plus the batches in flight must fit.
 * A quarter of the area leaves room for the rest of the traffic.
 */
static uint32_t
max_request_for(uint64_t area_size)
{
	uint32_t max = GROUP_MAX_REQUEST;

	while (max > 4096 && (uint64_t)max > area_size / 4)
		max >>= 1;
	return max;
}

int
group_open(const struct group_config *cfg, struct loop *loop, struct io_engine *io,
	   struct group **ret, char *err, size_t errlen)
{
	struct group *g;
	struct journal_stats js;
	int r;

	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->loop = loop;
	g->io = io;
	g->ckpt_timer.fd = g->marker_timer.fd = -1;
	for (unsigned i = 0; i < JOURNAL_MAX_VOLUMES; i++)
		g->vols[i].fd = g->vols[i].fd_buffered = -1;
	r = copy_config(&g->cfg, cfg);
	if (r < 0)
		goto err;
	if (!g->cfg.marker_interval_ms)
		g->cfg.marker_interval_ms = 1000;
	if (!g->cfg.checkpoint_interval_ms)
		g->cfg.checkpoint_interval_ms = 1000;
	for (unsigned i = 0; i < cfg->nvolumes; i++) {
		r = open_volume(&g->vols[i], &cfg->volumes[i], cfg->buffered_data, err, errlen);
		if (r < 0)
			goto err;
		g->vols[i].id = (uint16_t)i;
		g->vols[i].group = g;
		g->nvols++;
	}
	if (!g->cfg.region_size)
		g->cfg.region_size = GROUP_DEFAULT_REGION_SIZE;
	if (g->cfg.bitmap_dir) {
		for (unsigned i = 0; i < g->nvols; i++) {
			char path[PATH_MAX];

			snprintf(path, sizeof(path), "%s/%s.%s.bitmap", g->cfg.bitmap_dir, g->cfg.name,
				 g->vols[i].name);
			r = diffmap_open(path, g->vols[i].size, g->cfg.region_size, &g->maps[i], err,
					 errlen);
			if (r < 0)
				goto err;
		}
	}
	/* Redo marks the bitmaps too when the pair was tracking changes. */
	g->tracking = group_pair_tracks(&g->cfg.pair) && g->cfg.bitmap_dir;
	r = journal_open(cfg->journal_path, io, &group_journal_ops, g, &g->j);
	if (r < 0) {
		snprintf(err, errlen, "journal '%s': cannot open/recover: %s", cfg->journal_path,
			 strerror(-r));
		goto err;
	}
	journal_get_stats(g->j, &js);
	for (unsigned i = 0; i < g->nvols; i++)
		g->vols[i].max_request = max_request_for(js.area_size);
	g->durable_seq = js.next_seq - 1;
	g->stats.last_seq = js.next_seq - 1;
	g->stats.durable_seq = g->durable_seq;
	g->seq_at_last_marker = g->stats.last_seq;
	if (g->stats.redone_records) {
		/* Make the redone writes durable before the journal forgets them. */
		for (unsigned i = 0; i < g->nvols; i++) {
			if (fdatasync(g->vols[i].fd_buffered) < 0) {
				r = -errno;
				snprintf(err, errlen, "volume '%s': fdatasync after redo: %s",
					 g->vols[i].name, strerror(errno));
				goto err;
			}
		}
		log_info("group '%s': recovered, replayed %llu journal records onto the volumes",
			 g->cfg.name, (unsigned long long)g->stats.redone_records);
	}
	g->ckpt_seq = js.next_seq;
	g->stats.ckpt_seq = g->ckpt_seq;
	journal_set_checkpoint(g->j, js.next_seq);
	loop_add_hook(loop, &g->hook, group_hook, g);
	r = loop_timer_start(loop, &g->ckpt_timer, g->cfg.checkpoint_interval_ms, ckpt_timer_fired,
			     g);
	if (r < 0)
		goto err;
	r = loop_timer_start(loop, &g->marker_timer, g->cfg.marker_interval_ms,
			     marker_timer_fired, g);
	if (r < 0)
		goto err;
	*ret = g;
	return 0;
err:
	if (!err[0])
		snprintf(err, errlen, "group '%s': %s", cfg->name, strerror(-r));
	group_close(g);
	return r;
}

void
group_close(struct group *g)
{
	struct group_io *io_held;

	if (!g)
		return;
	if (g->loop) {
		loop_timer_stop(g->loop, &g->ckpt_timer);
		loop_timer_stop(g->loop, &g->marker_timer);
		if (g->hook.registered)
			loop_del_hook(g->loop, &g->hook);
	}
	/* Held writes (inflow control) must reach the journal for the drain
	 * below to end. */
	g->hold_writes = false;
	g->inflow_limit = 0;
	/* Writes waiting for a secondary that is going away fail rather than claim
	 * a copy that may not exist. */
	while ((io_held = list_pop(&g->sync_hold))) {
		io_held->res = -EIO;
		deliver(g, io_held);
	}
	g->sync = false;
	/* Let everything in flight finish so no buffer is freed under the kernel.
	 * Each round makes progress (appends, I/O completions or a checkpoint
	 * freeing journal space); the bound only guards against a bug. */
	for (unsigned round = 0; g->j && round < 100000; round++) {
		group_pump(g);
		if (!g->inflight && !g->ckpt_running)
			break;
		io_engine_submit(g->io);
		io_engine_drain(g->io);
	}
	if (g->j && !g->failed) {
		checkpoint_start(g);
		io_engine_drain(g->io);
	}
	journal_close(g->j);
	for (unsigned i = 0; i < g->nvols; i++) {
		if (g->maps[i])
			diffmap_sync(g->maps[i]);
		diffmap_close(g->maps[i]);
		close_volume(&g->vols[i]);
	}
	group_config_fini(&g->cfg);
	free(g);
}

void
group_set_secondary(struct group *g, bool on)
{
	struct io_list keep = {0};
	struct group_io *io;

	g->secondary = on;
	for (unsigned i = 0; i < g->nvols; i++)
		g->vols[i].read_only = on;
	if (!on)
		return;
	/* Host writes queued but not yet journaled were never acknowledged:
	 * they fail like any write to a read-only volume, rather than land
	 * after the site stopped being the one that writes. */
	while ((io = list_pop(&g->append_q))) {
		if (is_write_op(io->op) && !io->first_seq)
			io_finish(g, io, -EPERM);
		else
			list_push(&keep, io);
	}
	g->append_q = keep;
	loop_wakeup(g->loop);
}

unsigned
group_host_writes_queued(const struct group *g)
{
	unsigned n = 0;

	for (const struct group_io *io = g->append_q.head; io; io = io->g_next)
		n += is_write_op(io->op);
	return n;
}

bool
group_pair_tracks(const struct group_pair_config *pc)
{
	if (pc->role == PAIR_ROLE_PRIMARY)
		return pc->state == PAIR_STATE_PSUS || pc->state == PAIR_STATE_PSUE ||
		       pc->state == PAIR_STATE_PFUS;
	return pc->role == PAIR_ROLE_SECONDARY && pc->state == PAIR_STATE_SSWS;
}

int
group_set_tracking(struct group *g, bool on)
{
	if (on && !g->cfg.bitmap_dir)
		return -ENOTSUP;
	if (on && !g->tracking)
		g->first_tracked_seq = 0;
	g->tracking = on;
	return 0;
}

bool
group_tracking(const struct group *g)
{
	return g->tracking;
}

uint64_t
group_first_tracked_seq(const struct group *g)
{
	return g->first_tracked_seq;
}

struct diffmap *
group_diffmap(struct group *g, unsigned vol)
{
	return vol < g->nvols ? g->maps[vol] : NULL;
}

void
group_hold_writes(struct group *g, bool on)
{
	if (g->hold_writes == on)
		return;
	g->hold_writes = on;
	loop_wakeup(g->loop);
}

void
group_mark_undurable(struct group *g)
{
	struct group_io *io;

	for (io = g->journal_q.head; io; io = io->g_next) {
		if ((is_write_op(io->op) || io->op == GROUP_IO_BASE) && g->maps[io->vol->id])
			diffmap_mark(g->maps[io->vol->id], io->offset, io->len);
	}
	io = g->append_q.head;
	if (io && io->first_seq && is_write_op(io->op) && g->maps[io->vol->id])
		diffmap_mark(g->maps[io->vol->id], io->offset, io->len);
}

void
group_request_checkpoint(struct group *g)
{
	if (g->ckpt_wanted || g->ckpt_running)
		return;
	g->ckpt_wanted = true;
	loop_wakeup(g->loop);
}

void
group_set_inflow_limit(struct group *g, uint64_t bytes)
{
	if (g->inflow_limit == bytes)
		return;
	g->inflow_limit = bytes;
	if (!bytes)
		g->held_since_ms = 0;
	loop_wakeup(g->loop);
}

uint64_t
group_held_since_ms(const struct group *g)
{
	return g->held_since_ms;
}

uint64_t
group_blocked_since_ms(const struct group *g)
{
	return g->blocked_since_ms;
}

void
group_set_pair_config(struct group *g, const struct group_pair_config *pc)
{
	g->cfg.pair = *pc;
}

void
group_set_sync(struct group *g, bool on)
{
	g->sync = on;
	loop_wakeup(g->loop);
}

void
group_set_remote_durable(struct group *g, uint64_t seq)
{
	if (seq <= g->remote_durable)
		return;
	g->remote_durable = seq;
	if (g->sync_hold.head)
		loop_wakeup(g->loop);
}

uint64_t
group_applied_seq(const struct group *g)
{
	return oldest_unapplied_seq(g) - 1;
}

const char *
group_name(const struct group *g)
{
	return g->cfg.name;
}

unsigned
group_nvolumes(const struct group *g)
{
	return g->nvols;
}

struct volume *
group_volume(struct group *g, unsigned idx)
{
	return idx < g->nvols ? &g->vols[idx] : NULL;
}

struct volume *
group_find_volume(struct group *g, const char *name)
{
	for (unsigned i = 0; i < g->nvols; i++) {
		if (!strcmp(g->vols[i].name, name))
			return &g->vols[i];
	}
	return NULL;
}

struct journal *
group_journal(struct group *g)
{
	return g->j;
}

const struct group_config *
group_get_config(const struct group *g)
{
	return &g->cfg;
}

void
group_get_stats(const struct group *g, struct group_stats *ret)
{
	struct journal_stats js;

	*ret = g->stats;
	journal_get_stats(g->j, &js);
	ret->journal_size = js.area_size;
	ret->journal_used = js.used_bytes;
	ret->journal_bytes_written = js.bytes_written;
	ret->journal_payload_bytes = js.payload_bytes;
	ret->failed = g->failed || js.failed;
	ret->applied_seq = oldest_unapplied_seq(g) - 1;
	ret->failed_err = g->failed_err;
}
