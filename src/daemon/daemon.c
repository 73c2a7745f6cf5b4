/*
 * The daemon: start-up (state directory, lock, groups, listeners), the control
 * socket server and its commands, and shutdown.
 *
 * Control commands run on the loop thread between I/O events; the slow ones
 * (group create formats a journal) block the loop while they run.
 * XXX: move formatting to a worker thread when groups share a daemon with
 * latency-sensitive hosts.
 */
#include "daemon/daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "config.h"
#include "ctl/ctl.h"
#include "group/group.h"
#include "io/io.h"
#include "journal/journal.h"
#include "nbd/nbd_server.h"
#include "repl/repl.h"

#define DEFAULT_JOURNAL_SIZE (1ull << 30)
#define MAX_GROUPS 64
#define CTL_MAX_CONNS 32

struct daemon_group {
	struct group_config cfg;
	struct group *g; /* NULL when it failed to open: see error */
	char error[512];
};

struct ctl_conn {
	struct daemon *d;
	uint64_t id;   /* finds it again for a deferred reply */
	bool deferred; /* the reply comes later (pair create) */
	int fd;
	struct loop_handle h;
	uint8_t *in;
	size_t inlen, incap;
	uint8_t *out;
	size_t outlen, outoff;
	struct ctl_conn *next;
	bool closing;
};

struct daemon {
	const struct daemon_opts *opts;
	char dir[PATH_MAX];
	char groups_dir[PATH_MAX + 16];
	int lock_fd;
	struct loop *loop;
	struct io_engine *io;
	struct loop_handle io_h;
	struct loop_hook submit_hook;
	struct loop_hook reap_hook;
	struct nbd_server *nbd;
	int ctl_fd;
	struct loop_handle ctl_h;
	struct ctl_conn *ctl_conns;
	unsigned n_ctl;
	int sig_fd;
	struct loop_handle sig_h;
	struct daemon_group *groups[MAX_GROUPS];
	unsigned ngroups;
	struct repl *repl;
	uint64_t next_conn_id;
	int exit_code;
};

static void ctl_send_reply(struct daemon *d, struct ctl_conn *c, json_t *reply);

/* --- groups --- */

static struct daemon_group *
find_group(struct daemon *d, const char *name)
{
	for (unsigned i = 0; i < d->ngroups; i++) {
		if (!strcmp(d->groups[i]->cfg.name, name))
			return d->groups[i];
	}
	return NULL;
}

static struct volume *
nbd_lookup(void *arg, const char *name)
{
	struct daemon *d = arg;

	for (unsigned i = 0; i < d->ngroups; i++) {
		struct volume *v;

		if (d->groups[i]->g && (v = group_find_volume(d->groups[i]->g, name)))
			return v;
	}
	return NULL;
}

static int
nbd_list(void *arg, int (*fn)(void *fnarg, struct volume *v), void *fnarg)
{
	struct daemon *d = arg;

	for (unsigned i = 0; i < d->ngroups; i++) {
		struct group *g = d->groups[i]->g;

		for (unsigned k = 0; g && k < group_nvolumes(g); k++) {
			int r = fn(fnarg, group_volume(g, k));

			if (r < 0)
				return r;
		}
	}
	return 0;
}

static const struct nbd_server_ops daemon_nbd_ops = {
	.lookup = nbd_lookup,
	.list = nbd_list,
};

static void
daemon_group_free(struct daemon_group *dg)
{
	if (!dg)
		return;
	group_close(dg->g);
	group_config_fini(&dg->cfg);
	free(dg);
}

/* Opens a configured group; a failure is kept and shown, not fatal. */
static struct daemon_group *
daemon_group_open(struct daemon *d, struct group_config *cfg)
{
	struct daemon_group *dg = calloc(1, sizeof(*dg));
	int r;

	if (!dg)
		return NULL;
	dg->cfg = *cfg;
	dg->cfg.buffered_data = d->opts->buffered_data;
	memset(cfg, 0, sizeof(*cfg));
	free(dg->cfg.bitmap_dir);
	dg->cfg.bitmap_dir = strdup(d->groups_dir);
	r = group_open(&dg->cfg, d->loop, d->io, &dg->g, dg->error, sizeof(dg->error));
	if (r < 0) {
		dg->g = NULL;
		log_err("group '%s': cannot open: %s", dg->cfg.name, dg->error);
	} else {
		log_info("group '%s': open, %u volume(s), journal '%s'", dg->cfg.name,
			 dg->cfg.nvolumes, dg->cfg.journal_path);
	}
	return dg;
}

static int
load_groups(struct daemon *d)
{
	DIR *dir = opendir(d->groups_dir);
	struct dirent *de;

	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		char path[PATH_MAX * 2], err[512] = "";
		struct group_config cfg;
		size_t n = strlen(de->d_name);
		struct daemon_group *dg;

		if (n < 6 || strcmp(de->d_name + n - 5, ".json"))
			continue;
		if (d->ngroups == MAX_GROUPS) {
			log_err("state dir '%s': more than %u groups, ignoring '%s'", d->dir,
				MAX_GROUPS, de->d_name);
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", d->groups_dir, de->d_name);
		if (group_config_load(path, &cfg, err, sizeof(err)) < 0) {
			log_err("group config '%s': %s, ignoring", path, err);
			continue;
		}
		dg = daemon_group_open(d, &cfg);
		if (!dg) {
			group_config_fini(&cfg);
			closedir(dir);
			return -ENOMEM;
		}
		d->groups[d->ngroups++] = dg;
	}
	closedir(dir);
	return 0;
}

/* --- replication hooks --- */

static struct daemon_group *
find_dg_by_group(struct daemon *d, const struct group *g)
{
	for (unsigned i = 0; i < d->ngroups; i++) {
		if (d->groups[i]->g == g)
			return d->groups[i];
	}
	return NULL;
}

static struct group *
repl_find_group(void *arg, const char *name)
{
	struct daemon_group *dg = find_group(arg, name);

	return dg ? dg->g : NULL;
}

static int
repl_save(void *arg, struct group *g, const struct group_pair_config *pc)
{
	struct daemon *d = arg;
	struct daemon_group *dg = find_dg_by_group(d, g);
	struct group_pair_config old;
	int r;

	if (!dg)
		return -ENOENT;
	old = dg->cfg.pair;
	dg->cfg.pair = *pc;
	r = group_config_save(&dg->cfg, d->groups_dir);
	if (r < 0)
		dg->cfg.pair = old;
	return r;
}

/* Secondary pair create: the journal becomes a restore journal numbered
 * like the primary's stream. The group is closed, formatted and reopened. */
static int
repl_reformat(void *arg, struct group *g, uint64_t start_seq, struct group **ret_g, char *err,
	      size_t errlen)
{
	struct daemon *d = arg;
	struct daemon_group *dg = find_dg_by_group(d, g);
	const char *names[JOURNAL_MAX_VOLUMES];
	struct journal_format_opts fo = {0};
	int r;

	if (!dg)
		return -ENOENT;
	for (unsigned k = 0; k < group_nvolumes(g); k++)
		nbd_server_drop_volume(d->nbd, group_volume(g, k));
	group_close(dg->g);
	dg->g = NULL;
	for (unsigned k = 0; k < dg->cfg.nvolumes; k++)
		names[k] = dg->cfg.volumes[k].name;
	fo.group = dg->cfg.name;
	fo.nvolumes = dg->cfg.nvolumes;
	fo.volumes = names;
	fo.role = JOURNAL_ROLE_RESTORE;
	fo.first_seq = start_seq;
	fo.reuse_area = true;
	r = journal_format(dg->cfg.journal_path, &fo);
	if (r < 0) {
		snprintf(dg->error, sizeof(dg->error), "cannot format restore journal '%s': %s",
			 dg->cfg.journal_path, strerror(-r));
		snprintf(err, errlen, "%s", dg->error);
		log_err("group '%s': %s", dg->cfg.name, dg->error);
		return r;
	}
	r = group_open(&dg->cfg, d->loop, d->io, &dg->g, dg->error, sizeof(dg->error));
	if (r < 0) {
		dg->g = NULL;
		snprintf(err, errlen, "%s", dg->error);
		log_err("group '%s': cannot reopen after formatting the restore journal: %s",
			dg->cfg.name, dg->error);
		return r;
	}
	*ret_g = dg->g;
	return 0;
}

static const struct repl_ops daemon_repl_ops = {
	.find_group = repl_find_group,
	.save = repl_save,
	.reformat = repl_reformat,
};

/* --- control commands --- */

static json_t *
reply_error(int err, const char *fmt, ...) PRINTF_FMT(2, 3);

static json_t *
reply_error(int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:i, s:b, s:i, s:s}", "v", CTL_VERSION, "ok", 0, "errno",
			 err < 0 ? -err : err, "error", msg);
}

static json_t *
reply_ok(void)
{
	return json_pack("{s:i, s:b}", "v", CTL_VERSION, "ok", 1);
}

/* Difference bitmaps belong to a group's life: a new group of the same
 * name must not inherit old bits. */
static void
remove_bitmaps(struct daemon *d, const struct group_config *cfg)
{
	char path[PATH_MAX * 2];

	for (unsigned k = 0; k < cfg->nvolumes; k++) {
		snprintf(path, sizeof(path), "%s/%s.%s.bitmap", d->groups_dir, cfg->name,
			 cfg->volumes[k].name);
		if (unlink(path) < 0 && errno != ENOENT)
			log_warn("cannot remove '%s': %s", path, strerror(errno));
	}
}

static json_t *
cmd_group_create(struct daemon *d, json_t *req)
{
	struct group_config cfg = {0};
	const char *name = NULL, *journal = NULL;
	json_int_t jsize = 0, region = GROUP_DEFAULT_REGION_SIZE;
	json_t *vols = NULL, *v, *reply;
	json_error_t jerr;
	struct daemon_group *dg;
	char err[1024] = "";
	size_t i;
	int r;

	if (json_unpack_ex(req, &jerr, 0, "{s:s, s:s, s?I, s:o, s?I}", "name", &name, "journal",
	                   &journal, "journal_size", &jsize, "volumes", &vols, "region_size",
	                   &region) ||
	    !json_is_array(vols) || jsize < 0)
		return reply_error(EINVAL, "group-create: %s", jerr.text);
	/* A region is copied as one record at most, so it can't exceed one. */
	if (region < 4096 || region > JOURNAL_MAX_PAYLOAD || (region & (region - 1)))
		return reply_error(EINVAL, "region size %lld: a power of two from 4 KiB to %u KiB",
				   (long long)region, JOURNAL_MAX_PAYLOAD >> 10);
	group_repl_options_default(&cfg.ropts);
	if (group_repl_options_from_json(req, &cfg.ropts, err, sizeof(err)) < 0)
		return reply_error(EINVAL, "group-create: %s", err);
	cfg.region_size = (uint32_t)region;
	if (!util_valid_name(name, JOURNAL_GROUPNAME_LEN))
		return reply_error(EINVAL, "invalid group name '%s' (letters, digits, '_', '-', "
				   "'.', at most %u characters)", name, JOURNAL_GROUPNAME_LEN - 1);
	if (find_group(d, name))
		return reply_error(EEXIST, "group '%s' already exists", name);
	if (d->ngroups == MAX_GROUPS)
		return reply_error(ENOSPC, "this daemon already has %u groups", MAX_GROUPS);
	if (json_array_size(vols) == 0 || json_array_size(vols) > JOURNAL_MAX_VOLUMES)
		return reply_error(EINVAL, "a group needs 1 to %u volumes", JOURNAL_MAX_VOLUMES);
	if (journal[0] != '/')
		return reply_error(EINVAL, "journal path '%s' must be absolute", journal);
	snprintf(cfg.name, sizeof(cfg.name), "%s", name);
	cfg.journal_size = (uint64_t)jsize;
	if (!cfg.journal_size && access(journal, F_OK) < 0)
		cfg.journal_size = DEFAULT_JOURNAL_SIZE;
	cfg.journal_path = strdup(journal);
	if (!cfg.journal_path)
		return reply_error(ENOMEM, "out of memory");
	json_array_foreach(vols, i, v)
	{
		const char *vname, *vpath;
		json_int_t vsize = 0;

		if (json_unpack_ex(v, &jerr, 0, "{s:s, s:s, s?I}", "name", &vname, "path", &vpath,
				   "size", &vsize) ||
		    vsize < 0) {
			reply = reply_error(EINVAL, "group-create: volume %zu: %s", i, jerr.text);
			goto out;
		}
		if (!util_valid_name(vname, JOURNAL_VOLNAME_LEN)) {
			reply = reply_error(EINVAL, "invalid volume name '%s' (letters, digits, '_', "
					    "'-', '.', at most %u characters)", vname,
					    JOURNAL_VOLNAME_LEN - 1);
			goto out;
		}
		if (vpath[0] != '/') {
			reply = reply_error(EINVAL, "volume '%s': path '%s' must be absolute", vname,
					    vpath);
			goto out;
		}
		for (unsigned k = 0; k < i; k++) {
			if (!strcmp(cfg.volumes[k].name, vname)) {
				reply = reply_error(EINVAL, "volume name '%s' given twice", vname);
				goto out;
			}
		}
		if (nbd_lookup(d, vname)) {
			reply = reply_error(EEXIST, "volume name '%s' is already exported by another "
					    "group of this daemon", vname);
			goto out;
		}
		snprintf(cfg.volumes[i].name, sizeof(cfg.volumes[i].name), "%s", vname);
		cfg.volumes[i].path = strdup(vpath);
		cfg.volumes[i].size = (uint64_t)vsize;
		cfg.nvolumes++;
		if (!cfg.volumes[i].path) {
			reply = reply_error(ENOMEM, "out of memory");
			goto out;
		}
	}
	/* A file another group of this daemon uses must not be formatted or shared. */
	for (unsigned gi = 0; gi < d->ngroups; gi++) {
		const struct group_config *o = &d->groups[gi]->cfg;

		for (unsigned a = 0; a <= cfg.nvolumes; a++) {
			const char *mine = a < cfg.nvolumes ? cfg.volumes[a].path : cfg.journal_path;

			for (unsigned b = 0; b <= o->nvolumes; b++) {
				const char *theirs = b < o->nvolumes ? o->volumes[b].path
								     : o->journal_path;

				if (group_same_file(mine, theirs)) {
					reply = reply_error(EBUSY, "'%s' is already used by group '%s'",
							    mine, o->name);
					goto out;
				}
			}
		}
	}
	r = group_create_storage(&cfg, err, sizeof(err));
	if (r < 0) {
		reply = reply_error(r, "group '%s': %s", name, err);
		goto out;
	}
	/* Sizes are now fixed: remember them so a restart exports the same sizes. */
	for (unsigned k = 0; k < cfg.nvolumes; k++) {
		if (!cfg.volumes[k].size) {
			int fd = open(cfg.volumes[k].path, O_RDONLY | O_CLOEXEC);

			if (fd >= 0) {
				util_fd_size(fd, &cfg.volumes[k].size);
				close(fd);
			}
		}
	}
	remove_bitmaps(d, &cfg);
	r = group_config_save(&cfg, d->groups_dir);
	if (r < 0) {
		reply = reply_error(r, "group '%s': cannot save its configuration in '%s': %s",
				    name, d->groups_dir, strerror(-r));
		goto out;
	}
	dg = daemon_group_open(d, &cfg);
	if (!dg) {
		reply = reply_error(ENOMEM, "out of memory");
		goto out;
	}
	if (!dg->g) {
		char path[PATH_MAX * 2];

		reply = reply_error(EIO, "group '%s': created but cannot open: %s", name,
				    dg->error);
		snprintf(path, sizeof(path), "%s/%s.json", d->groups_dir, name);
		unlink(path);
		daemon_group_free(dg);
		goto out;
	}
	d->groups[d->ngroups++] = dg;
	log_info("group '%s': created with %u volume(s)", name, dg->cfg.nvolumes);
	reply = reply_ok();
out:
	group_config_fini(&cfg);
	return reply;
}

static json_t *
cmd_group_delete(struct daemon *d, json_t *req)
{
	const char *name = NULL;
	int force = 0;
	struct daemon_group *dg;
	char path[PATH_MAX * 2];
	json_error_t jerr;

	if (json_unpack_ex(req, &jerr, 0, "{s:s, s?b}", "name", &name, "force", &force))
		return reply_error(EINVAL, "group-delete: %s", jerr.text);
	dg = find_group(d, name);
	if (!dg)
		return reply_error(ENOENT, "no group '%s'", name);
	if (dg->cfg.pair.role != PAIR_ROLE_NONE && !force)
		return reply_error(EBUSY, "group '%s' is the %s of a pair; delete the pair first "
				   "(or use --force)", name, pair_role_name(dg->cfg.pair.role));
	for (unsigned k = 0; dg->g && k < group_nvolumes(dg->g); k++) {
		struct volume *v = group_volume(dg->g, k);

		if (v->nbd_conns && !force)
			return reply_error(EBUSY, "group '%s': volume '%s' has %u NBD connection(s); "
					   "disconnect them or use --force", name, v->name,
					   v->nbd_conns);
	}
	snprintf(path, sizeof(path), "%s/%s.json", d->groups_dir, name);
	if (unlink(path) < 0 && errno != ENOENT)
		return reply_error(errno, "group '%s': cannot remove '%s': %s", name, path,
				   strerror(errno));
	for (unsigned k = 0; dg->g && k < group_nvolumes(dg->g); k++)
		nbd_server_drop_volume(d->nbd, group_volume(dg->g, k));
	for (unsigned i = 0; i < d->ngroups; i++) {
		if (d->groups[i] == dg) {
			d->groups[i] = d->groups[--d->ngroups];
			break;
		}
	}
	if (dg->g && d->repl)
		repl_group_detach(d->repl, dg->g);
	remove_bitmaps(d, &dg->cfg);
	daemon_group_free(dg);
	log_info("group '%s': deleted (volumes and journal files are kept)", name);
	return reply_ok();
}

static json_t *
group_to_json(struct daemon *d, const struct daemon_group *dg)
{
	json_t *o, *vols = json_array();
	struct group_stats st;
	struct journal_stats js;

	o = json_pack("{s:s, s:s, s:s, s:s}", "name", dg->cfg.name, "role",
		      dg->cfg.pair.role == PAIR_ROLE_NONE ? "simplex"
							  : pair_role_name(dg->cfg.pair.role),
		      "state", pair_state_name(dg->cfg.pair.state), "journal_path",
		      dg->cfg.journal_path);
	if (!dg->g) {
		json_object_set_new(o, "error", json_string(dg->error));
		json_object_set_new(o, "failed", json_true());
		for (unsigned i = 0; i < dg->cfg.nvolumes; i++)
			json_array_append_new(vols, json_pack("{s:s, s:s, s:I}", "name",
							      dg->cfg.volumes[i].name, "path",
							      dg->cfg.volumes[i].path, "size",
							      (json_int_t)dg->cfg.volumes[i].size));
		json_object_set_new(o, "volumes", vols);
		return o;
	}
	group_get_stats(dg->g, &st);
	journal_get_stats(group_journal(dg->g), &js);
	for (unsigned i = 0; i < group_nvolumes(dg->g); i++) {
		struct volume *v = group_volume(dg->g, i);

		json_array_append_new(vols, json_pack("{s:s, s:s, s:I, s:i, s:b}", "name", v->name,
						      "path", v->path, "size", (json_int_t)v->size,
						      "nbd_connections", (int)v->nbd_conns,
						      "read_only", v->read_only));
	}
	json_object_set_new(o, "volumes", vols);
	repl_group_json(d->repl, dg->g, o);
	json_object_set_new(o, "failed", json_boolean(st.failed));
	if (st.failed)
		json_object_set_new(o, "error", json_string(strerror(-st.failed_err)));
	json_object_set_new(
		o, "journal",
		json_pack("{s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:i, s:{s:I, s:I, s:I}}", "size",
			  (json_int_t)js.area_size, "used", (json_int_t)js.used_bytes, "used_pct",
			  js.area_size ? 100.0 * (double)js.used_bytes / (double)js.area_size : 0.0,
			  "records", (json_int_t)js.records, "batches", (json_int_t)js.batches,
			  "bytes_written", (json_int_t)js.bytes_written, "payload_bytes",
			  (json_int_t)js.payload_bytes, "tail_seq", (json_int_t)js.tail_seq,
			  "epoch", (int)js.epoch, "read_cache", "bytes",
			  (json_int_t)js.read_cache_bytes, "hits", (json_int_t)js.read_cache_hits,
			  "misses", (json_int_t)js.read_cache_misses));
	json_object_set_new(o, "seq",
			    json_pack("{s:I, s:I, s:I}", "written", (json_int_t)st.last_seq,
				      "durable", (json_int_t)st.durable_seq, "checkpoint",
				      (json_int_t)st.ckpt_seq));
	json_object_set_new(o, "last_record_ns", json_integer((json_int_t)js.last_timestamp_ns));
	json_object_set_new(
		o, "io",
		json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "writes",
			  (json_int_t)st.writes, "reads", (json_int_t)st.reads, "trims",
			  (json_int_t)st.trims, "zeroes", (json_int_t)st.zeroes, "flushes",
			  (json_int_t)st.flushes, "bytes_written", (json_int_t)st.bytes_written,
			  "bytes_read", (json_int_t)st.bytes_read, "redone_records",
			  (json_int_t)st.redone_records));
	return o;
}

static json_t *
cmd_display(struct daemon *d, json_t *req)
{
	const char *name = NULL;
	json_t *reply, *arr;
	json_error_t jerr;

	if (json_unpack_ex(req, &jerr, 0, "{s?s}", "name", &name))
		return reply_error(EINVAL, "display: %s", jerr.text);
	if (name && !find_group(d, name))
		return reply_error(ENOENT, "no group '%s'", name);
	arr = json_array();
	for (unsigned i = 0; i < d->ngroups; i++) {
		if (!name || !strcmp(name, d->groups[i]->cfg.name))
			json_array_append_new(arr, group_to_json(d, d->groups[i]));
	}
	reply = reply_ok();
	json_object_set_new(reply, "groups", arr);
	return reply;
}

struct pending_create {
	struct daemon *d;
	uint64_t conn_id;
	char group[JOURNAL_GROUPNAME_LEN];
	const char *verb;
};

static struct ctl_conn *
find_conn(struct daemon *d, uint64_t id)
{
	for (struct ctl_conn *c = d->ctl_conns; c; c = c->next) {
		if (c->id == id)
			return c;
	}
	return NULL;
}

static void
pair_create_done(void *arg, int err, const char *msg)
{
	struct pending_create *pc = arg;
	struct ctl_conn *c = find_conn(pc->d, pc->conn_id);

	if (c) {
		json_t *reply = err ? reply_error(err, "group '%s': pair %s: %s", pc->group, pc->verb,
						  msg)
				    : reply_ok();

		if (!err && msg && msg[0])
			json_object_set_new(reply, "message", json_string(msg));

		c->deferred = false;
		ctl_send_reply(pc->d, c, reply);
		json_decref(reply);
	}
	free(pc);
}

static json_t *
cmd_pair_create(struct daemon *d, struct ctl_conn *c, json_t *req)
{
	const char *name = NULL, *remote = NULL, *mode = "async";
	int initial_copy = 1;
	struct daemon_group *dg;
	struct pending_create *pc;
	json_error_t jerr;
	char err[512] = "";
	int r;

	if (json_unpack_ex(req, &jerr, 0, "{s:s, s:s, s?s, s?b}", "name", &name, "remote", &remote,
			   "mode", &mode, "initial_copy", &initial_copy))
		return reply_error(EINVAL, "pair-create: %s", jerr.text);
	dg = find_group(d, name);
	if (!dg)
		return reply_error(ENOENT, "no group '%s'", name);
	if (!dg->g)
		return reply_error(EIO, "group '%s' is not open: %s", name, dg->error);
	if (strcmp(mode, "async") && strcmp(mode, "sync"))
		return reply_error(EINVAL, "mode '%s': async or sync", mode);
	pc = calloc(1, sizeof(*pc));
	if (!pc)
		return reply_error(ENOMEM, "out of memory");
	pc->d = d;
	pc->conn_id = c->id;
	pc->verb = "create";
	snprintf(pc->group, sizeof(pc->group), "%s", name);
	r = repl_pair_create(d->repl, dg->g, remote,
			     strcmp(mode, "sync") ? PAIR_MODE_ASYNC : PAIR_MODE_SYNC, initial_copy,
			     pair_create_done, pc, err, sizeof(err));
	if (r < 0) {
		free(pc);
		return reply_error(r, "group '%s': pair create: %s", name, err);
	}
	c->deferred = true;
	return NULL;
}

/* suspend, resync, takeover, delete: answered now or when the pair is done. */
static json_t *
cmd_pair_lifecycle(struct daemon *d, struct ctl_conn *c, json_t *req, const char *verb)
{
	const char *name = NULL;
	int drain = 0, swap = 0, force = 0;
	struct daemon_group *dg;
	struct pending_create *pc;
	json_error_t jerr;
	char err[512] = "";
	json_t *reply;
	int r;

	if (json_unpack_ex(req, &jerr, 0, "{s:s, s?b, s?b, s?b}", "name", &name, "drain", &drain,
			   "swap", &swap, "force", &force))
		return reply_error(EINVAL, "pair-%s: %s", verb, jerr.text);
	dg = find_group(d, name);
	if (!dg)
		return reply_error(ENOENT, "no group '%s'", name);
	if (!dg->g)
		return reply_error(EIO, "group '%s' is not open: %s", name, dg->error);
	if (!d->repl)
		return reply_error(ENOTSUP, "replication is not running in this daemon");
	pc = calloc(1, sizeof(*pc));
	if (!pc)
		return reply_error(ENOMEM, "out of memory");
	pc->d = d;
	pc->conn_id = c->id;
	pc->verb = verb;
	snprintf(pc->group, sizeof(pc->group), "%s", name);
	if (!strcmp(verb, "suspend"))
		r = repl_pair_suspend(d->repl, dg->g, drain, pair_create_done, pc, err, sizeof(err));
	else if (!strcmp(verb, "resync"))
		r = repl_pair_resync(d->repl, dg->g, swap, force, pair_create_done, pc, err,
				     sizeof(err));
	else if (!strcmp(verb, "takeover"))
		r = repl_pair_takeover(d->repl, dg->g, pair_create_done, pc, err, sizeof(err));
	else
		r = repl_pair_delete(d->repl, dg->g, pair_create_done, pc, err, sizeof(err));
	if (r == 0) {
		c->deferred = true;
		return NULL;
	}
	free(pc);
	if (r < 0)
		return reply_error(r, "group '%s': pair %s: %s", name, verb, err);
	reply = reply_ok();
	json_object_set_new(reply, "message", json_string(err));
	if (!strncmp(err, "nothing to do", 13))
		json_object_set_new(reply, "noop", json_true());
	return reply;
}

static json_t *
cmd_status(struct daemon *d)
{
	json_t *reply = reply_ok(), *addrs = json_array();
	char buf[PATH_MAX + 16];

	for (unsigned i = 0; d->nbd && nbd_server_bound_addr(d->nbd, i, buf, sizeof(buf)) == 0;
	     i++)
		json_array_append_new(addrs, json_string(buf));
	json_object_set_new(reply, "pid", json_integer(getpid()));
	json_object_set_new(reply, "dir", json_string(d->dir));
	json_object_set_new(reply, "io_engine", json_string(io_engine_name(d->io)));
	json_object_set_new(reply, "nbd", addrs);
	if (d->repl && repl_bound_addr(d->repl, buf, sizeof(buf)) == 0)
		json_object_set_new(reply, "replication", json_string(buf));
	json_object_set_new(reply, "version", json_string(JRBD_VERSION));
	return reply;
}

static json_t *
ctl_dispatch(struct daemon *d, struct ctl_conn *c, const uint8_t *body, size_t len)
{
	char err[256];
	const char *cmd;
	json_t *req, *reply;

	req = ctl_request_parse(body, len, &cmd, err, sizeof(err));
	if (!req)
		return reply_error(EINVAL, "%s", err);
	if (!strcmp(cmd, "group-create"))
		reply = cmd_group_create(d, req);
	else if (!strcmp(cmd, "group-delete"))
		reply = cmd_group_delete(d, req);
	else if (!strcmp(cmd, "display"))
		reply = cmd_display(d, req);
	else if (!strcmp(cmd, "pair-create"))
		reply = cmd_pair_create(d, c, req);
	else if (!strcmp(cmd, "pair-suspend"))
		reply = cmd_pair_lifecycle(d, c, req, "suspend");
	else if (!strcmp(cmd, "pair-resync"))
		reply = cmd_pair_lifecycle(d, c, req, "resync");
	else if (!strcmp(cmd, "pair-takeover"))
		reply = cmd_pair_lifecycle(d, c, req, "takeover");
	else if (!strcmp(cmd, "pair-delete"))
		reply = cmd_pair_lifecycle(d, c, req, "delete");
	else if (!strcmp(cmd, "status"))
		reply = cmd_status(d);
	else if (!strcmp(cmd, "shutdown")) {
		log_info("shutdown requested over the control socket");
		loop_stop(d->loop);
		reply = reply_ok();
	} else
		reply = reply_error(EINVAL, "unknown command '%s'", cmd);
	json_decref(req);
	return reply;
}

/* --- control socket server --- */

static void
ctl_conn_free(struct daemon *d, struct ctl_conn *c)
{
	for (struct ctl_conn **p = &d->ctl_conns; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	loop_del_fd(d->loop, &c->h);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	d->n_ctl--;
}

static void
ctl_conn_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct ctl_conn *c = arg;
	struct daemon *d = c->d;
	const uint8_t *body;
	size_t bodylen;
	json_t *reply;
	int r;

	(void)loop;
	if (c->out) {
		ssize_t n = write(fd, c->out + c->outoff, c->outlen - c->outoff);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0 || (c->outoff += (size_t)n) == c->outlen)
			ctl_conn_free(d, c);
		return;
	}
	if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
		ctl_conn_free(d, c);
		return;
	}
	if (c->deferred) {
		/* Waiting for our answer: the client may only go away. */
		uint8_t junk[256];
		ssize_t n = read(fd, junk, sizeof(junk));

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			ctl_conn_free(d, c);
		return;
	}
	if (c->inlen == c->incap) {
		size_t cap = c->incap ? c->incap * 2 : 4096;
		uint8_t *p;

		if (cap > CTL_MAX_MSG + 4 || !(p = realloc(c->in, cap))) {
			ctl_conn_free(d, c);
			return;
		}
		c->in = p;
		c->incap = cap;
	}
	{
		ssize_t n = read(fd, c->in + c->inlen, c->incap - c->inlen);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			ctl_conn_free(d, c);
			return;
		}
		c->inlen += (size_t)n;
	}
	r = ctl_frame_decode(c->in, c->inlen, &body, &bodylen);
	if (r == -EAGAIN)
		return;
	if (r < 0) {
		log_warn("control socket: bad frame, closing the connection");
		ctl_conn_free(d, c);
		return;
	}
	reply = ctl_dispatch(d, c, body, bodylen);
	if (!reply && c->deferred)
		return;
	ctl_send_reply(d, c, reply);
	json_decref(reply);
}

static void
ctl_send_reply(struct daemon *d, struct ctl_conn *c, json_t *reply)
{
	if (!reply || ctl_frame_encode(reply, &c->out, &c->outlen) < 0) {
		ctl_conn_free(d, c);
		return;
	}
	/* Replies are small: usually one write sends it all. Sending now also
	 * answers 'shutdown' before the loop stops. */
	{
		ssize_t n = write(c->fd, c->out, c->outlen);

		if (n == (ssize_t)c->outlen || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			ctl_conn_free(d, c);
			return;
		}
		c->outoff = n > 0 ? (size_t)n : 0;
	}
	loop_mod_fd(d->loop, &c->h, EPOLLOUT);
}

static void
ctl_accept(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct daemon *d = arg;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct ctl_conn *c;
	int cfd;

	(void)events;
	cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0)
		return;
	if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    (cred.uid != 0 && cred.uid != getuid())) {
		log_warn("control socket: refusing uid %u (daemon runs as uid %u)",
			 (unsigned)cred.uid, (unsigned)getuid());
		close(cfd);
		return;
	}
	if (d->n_ctl >= CTL_MAX_CONNS) {
		log_warn("control socket: %u connections open, refusing another", d->n_ctl);
		close(cfd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || loop_add_fd(loop, &c->h, cfd, EPOLLIN, ctl_conn_event, c) < 0) {
		free(c);
		close(cfd);
		return;
	}
	c->d = d;
	c->id = ++d->next_conn_id;
	c->fd = cfd;
	c->next = d->ctl_conns;
	d->ctl_conns = c;
	d->n_ctl++;
}

static int
ctl_listen(struct daemon *d)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", d->dir, CTL_SOCKET_NAME) >=
	    (int)sizeof(sa.sun_path))
		return log_errno(-ENAMETOOLONG, "state dir '%s': path too long for a socket",
				 d->dir);
	unlink(sa.sun_path); /* stale: we hold the lock, so no daemon uses it */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(sa.sun_path, 0600) < 0 ||
	    listen(fd, 16) < 0) {
		r = -errno;
		close(fd);
		return log_errno(r, "control socket '%s'", sa.sun_path);
	}
	d->ctl_fd = fd;
	return loop_add_fd(d->loop, &d->ctl_h, fd, EPOLLIN, ctl_accept, d);
}

/* --- plumbing --- */

static void
io_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct daemon *d = arg;

	(void)loop;
	(void)fd;
	(void)events;
	io_engine_reap(d->io); /* it clears the eventfd */
}

static void
submit_hook(struct loop *loop, void *arg)
{
	struct daemon *d = arg;

	(void)loop;
	/* Completions may be waiting that the eventfd already reported; reaping
	 * here keeps their callbacks in this iteration's batch. */
	io_engine_reap_ready(d->io);
	io_engine_submit(d->io);
}

static void
signal_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct signalfd_siginfo si;

	(void)events;
	(void)arg;
	if (read(fd, &si, sizeof(si)) == sizeof(si)) {
		log_info("signal %u: shutting down", si.ssi_signo);
		loop_stop(loop);
	}
}

static int
lock_state_dir(struct daemon *d)
{
	char path[PATH_MAX + 16], pid[32];
	int fd;

	snprintf(path, sizeof(path), "%s/daemon.lock", d->dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return log_errno(-errno, "state dir '%s': cannot open lock file", d->dir);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);

		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		log_err("state dir '%s' is already owned by a running jrbd daemon (pid %s)", d->dir,
			pid[0] ? pid : "unknown");
		close(fd);
		return -EBUSY;
	}
	if (ftruncate(fd, 0) == 0) {
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());

		util_pwrite_full(fd, pid, (size_t)n, 0);
	}
	d->lock_fd = fd;
	return 0;
}

static int
write_addr_file(struct daemon *d)
{
	char path[PATH_MAX + 16], tmp[PATH_MAX + 32], buf[PATH_MAX + 16];
	FILE *f;

	snprintf(path, sizeof(path), "%s/nbd.addr", d->dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	for (unsigned i = 0; nbd_server_bound_addr(d->nbd, i, buf, sizeof(buf)) == 0; i++)
		fprintf(f, "%s\n", buf);
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		return -errno;
	return 0;
}

int
daemon_run(const struct daemon_opts *opts)
{
	struct daemon d = {.opts = opts, .lock_fd = -1, .ctl_fd = -1, .sig_fd = -1,
			   .exit_code = 1};
	sigset_t mask;
	int r;

	if (!realpath(opts->dir, d.dir)) {
		if (errno != ENOENT || mkdir(opts->dir, 0700) < 0 || !realpath(opts->dir, d.dir)) {
			log_errno(-errno, "state dir '%s'", opts->dir);
			return 1;
		}
	}
	snprintf(d.groups_dir, sizeof(d.groups_dir), "%s/groups", d.dir);
	if (mkdir(d.groups_dir, 0700) < 0 && errno != EEXIST) {
		log_errno(-errno, "state dir '%s': cannot create groups/", d.dir);
		return 1;
	}
	if (lock_state_dir(&d) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	r = loop_new(&d.loop);
	if (r < 0)
		goto out;
	d.sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d.sig_fd < 0 || loop_add_fd(d.loop, &d.sig_h, d.sig_fd, EPOLLIN, signal_event, &d) < 0)
		goto out;
	r = io_engine_new(opts->io_engine ? opts->io_engine : "auto",
			  opts->io_depth ? opts->io_depth : 256, &d.io);
	if (r < 0) {
		log_errno(r, "io engine '%s'", opts->io_engine ? opts->io_engine : "auto");
		goto out;
	}
	log_info("state dir '%s', io engine %s", d.dir, io_engine_name(d.io));
	r = loop_add_fd(d.loop, &d.io_h, io_engine_event_fd(d.io), EPOLLIN, io_event, &d);
	if (r < 0)
		goto out;
	r = load_groups(&d);
	if (r < 0) {
		log_errno(r, "state dir '%s': cannot load groups", d.dir);
		goto out;
	}
	/* Before replication: hooks run in the order added, and so the hosts'
	 * replies of a pass leave before replication's sends of that pass (an
	 * async secondary must not sit in a host write's latency: 4k QD1
	 * fsync async went from ~3170 to ~3600 IOPS, pinned A/B). */
	r = nbd_server_new(d.loop, &daemon_nbd_ops, &d, &d.nbd);
	if (r < 0)
		goto out;
	{
		struct repl_opts ro = {
			.listen_addr = opts->listen_addr,
			.secret_file = opts->secret_file,
			.site = opts->site,
			.window = opts->window,
			.compress_level = opts->compress_level,
			.read_cache = opts->read_cache,
			.on_event = opts->on_event,
			.advertise = opts->advertise,
		};
		char site[64], err[512] = "";

		if (!ro.site) {
			const char *base = strrchr(d.dir, '/');

			snprintf(site, sizeof(site), "%.63s", base && base[1] ? base + 1 : d.dir);
			ro.site = site;
		}
		r = repl_new(d.loop, d.io, &ro, &daemon_repl_ops, &d, &d.repl, err, sizeof(err));
		if (r < 0) {
			log_err("replication: %s", err);
			goto out;
		}
		if (repl_bound_addr(d.repl, site, sizeof(site)) == 0) {
			char path[PATH_MAX + 16], tmp[PATH_MAX + 32];
			FILE *f;

			log_info("replication: listening on %s", site);
			/* Like nbd.addr: lets scripts and tests use port 0. */
			snprintf(path, sizeof(path), "%s/repl.addr", d.dir);
			snprintf(tmp, sizeof(tmp), "%s.tmp", path);
			f = fopen(tmp, "w");
			if (!f || fprintf(f, "%s\n", site) < 0 || fclose(f) != 0 ||
			    rename(tmp, path) < 0)
				log_warn("cannot write '%s'", path);
		}
		for (unsigned i = 0; i < d.ngroups; i++) {
			if (d.groups[i]->g && repl_group_attach(d.repl, d.groups[i]->g) < 0)
				log_err("group '%s': cannot start its pair", d.groups[i]->cfg.name);
		}
	}
	/* The engine submit hook runs after every group's commit hook. */
	loop_add_hook(d.loop, &d.submit_hook, submit_hook, &d);
	for (unsigned i = 0; i < opts->n_nbd; i++) {
		r = nbd_server_listen(d.nbd, opts->nbd_addrs[i]);
		if (r < 0) {
			log_errno(r, "nbd: cannot listen on '%s'", opts->nbd_addrs[i]);
			goto out;
		}
	}
	write_addr_file(&d);
	r = ctl_listen(&d);
	if (r < 0)
		goto out;
	log_info("ready: %u group(s), control socket %s/%s", d.ngroups, d.dir, CTL_SOCKET_NAME);
	r = loop_run(d.loop);
	d.exit_code = r < 0 ? 1 : 0;
out:
	if (d.ctl_fd >= 0) {
		char path[PATH_MAX + 16];

		loop_del_fd(d.loop, &d.ctl_h);
		close(d.ctl_fd);
		snprintf(path, sizeof(path), "%s/%s", d.dir, CTL_SOCKET_NAME);
		unlink(path);
	}
	while (d.ctl_conns)
		ctl_conn_free(&d, d.ctl_conns);
	/* Connections first: their in-flight requests finish into the groups. */
	nbd_server_free(d.nbd);
	for (unsigned i = 0; d.repl && i < d.ngroups; i++) {
		if (d.groups[i]->g)
			repl_group_detach(d.repl, d.groups[i]->g);
	}
	for (unsigned i = 0; i < d.ngroups; i++)
		daemon_group_free(d.groups[i]);
	repl_free(d.repl);
	if (d.io)
		loop_del_fd(d.loop, &d.io_h);
	io_engine_free(d.io);
	if (d.sig_fd >= 0)
		close(d.sig_fd);
	loop_free(d.loop);
	if (d.lock_fd >= 0)
		close(d.lock_fd);
	if (d.exit_code == 0)
		log_info("stopped cleanly");
	return d.exit_code;
}
