/*
 * Group configuration: validation, persistence (one JSON file per group in
 * STATE_DIR/groups/, written atomically) and creation of the storage it names.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "group/group.h"
#include "journal/journal.h"

#define GROUP_CONFIG_VERSION 1

void
group_config_fini(struct group_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->journal_path);
	cfg->journal_path = NULL;
	free(cfg->bitmap_dir);
	cfg->bitmap_dir = NULL;
	for (unsigned i = 0; i < JOURNAL_MAX_VOLUMES; i++) {
		free(cfg->volumes[i].path);
		cfg->volumes[i].path = NULL;
	}
	cfg->nvolumes = 0;
}

static const char *const role_names[] = {"none", "primary", "secondary"};
static const char *const state_names[] = {"SMPL", "COPY", "PAIR", "PFUL",
					   "PFUS", "PSUS", "PSUE", "SSWS"};
static const char *const mode_names[] = {"async", "sync"};

const char *
pair_role_name(enum pair_role role)
{
	return (unsigned)role < ARRAY_SIZE(role_names) ? role_names[role] : "?";
}

const char *
pair_state_name(enum pair_state state)
{
	return (unsigned)state < ARRAY_SIZE(state_names) ? state_names[state] : "?";
}

void
group_repl_options_default(struct group_repl_options *o)
{
	o->high_water_pct = 80;
	o->inflow_control = false;
	o->overflow_watch_ms = 60000;
	o->link_timeout_ms = 30000;
	o->auto_resync_link = true;
	o->auto_resync_error = false;
}

int
group_repl_options_from_json(json_t *obj, struct group_repl_options *o, char *err, size_t errlen)
{
	json_int_t hw = o->high_water_pct, ow = (json_int_t)o->overflow_watch_ms,
	           lt = (json_int_t)o->link_timeout_ms;
	int inflow = o->inflow_control, al = o->auto_resync_link, ae = o->auto_resync_error;
	json_error_t jerr;

	if (json_unpack_ex(obj, &jerr, 0, "{s?I, s?b, s?I, s?I, s?b, s?b}", "high_water_pct", &hw,
	                   "inflow_control", &inflow, "overflow_watch_ms", &ow, "link_timeout_ms",
	                   &lt, "auto_resync_link", &al, "auto_resync_error", &ae)) {
		util_set_err(err, errlen, "%s", jerr.text);
		return -EINVAL;
	}
	if (hw < 1 || hw > 99 || ow < 0 || lt < 0) {
		util_set_err(err, errlen, "high-water mark 1..99 %%, watch times >= 0");
		return -EINVAL;
	}
	o->high_water_pct = (unsigned)hw;
	o->inflow_control = inflow;
	o->overflow_watch_ms = (uint64_t)ow;
	o->link_timeout_ms = (uint64_t)lt;
	o->auto_resync_link = al;
	o->auto_resync_error = ae;
	return 0;
}

const char *
pair_mode_name(enum pair_mode mode)
{
	return (unsigned)mode < ARRAY_SIZE(mode_names) ? mode_names[mode] : "?";
}

static int
name_index(const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(names[i], name))
			return (int)i;
	}
	return -1;
}

/* Seeds and ids are full 64-bit values: stored as hex strings, since JSON
 * integers are signed. */
static json_t *
pair_to_json(const struct group_pair_config *p)
{
	char id[24], seed[24];
	json_t *o, *map = json_array();

	snprintf(id, sizeof(id), "%016llx", (unsigned long long)p->id);
	snprintf(seed, sizeof(seed), "%016llx", (unsigned long long)p->primary_seed);
	for (unsigned i = 0; map && i < p->nvolmap; i++)
		json_array_append_new(map, json_integer(p->volmap[i]));
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b, s:I, s:I, s:I}", "role",
			 pair_role_name(p->role), "state", pair_state_name(p->state), "mode",
			 pair_mode_name(p->mode), "remote", p->remote, "peer_site", p->peer_site,
			 "id", id, "start_seq", (json_int_t)p->start_seq, "primary_seed", seed,
			 "initial_copy", p->initial_copy, "copy_volume", (json_int_t)p->copy_volume,
			 "copy_offset", (json_int_t)p->copy_offset, "copy_end_seq",
			 (json_int_t)p->copy_end_seq);
	if (!o || !map) {
		json_decref(o);
		json_decref(map);
		return NULL;
	}
	json_object_set_new(o, "volume_map", map);
	json_object_set_new(o, "confirmed", json_boolean(p->confirmed));
	{
		char gen[24], sgen[24];

		snprintf(gen, sizeof(gen), "%016llx", (unsigned long long)p->gen);
		snprintf(sgen, sizeof(sgen), "%016llx", (unsigned long long)p->synced_gen);
		json_object_set_new(o, "gen", json_string(gen));
		json_object_set_new(o, "synced_gen", json_string(sgen));
	}
	json_object_set_new(o, "reason", json_string(p->reason));
	json_object_set_new(o, "resync", json_boolean(p->resync));
	json_object_set_new(o, "copy_total", json_integer((json_int_t)p->copy_total));
	json_object_set_new(o, "fold_to", json_integer((json_int_t)p->fold_to));
	json_object_set_new(o, "bitmap_clear_pending", json_boolean(p->bitmap_clear_pending));
	json_object_set_new(o, "peer_addr", json_string(p->peer_addr));
	json_object_set_new(o, "cause", json_integer(p->cause));
	json_object_set_new(o, "announce", json_boolean(p->announce));
	return o;
}

static int
pair_from_json(json_t *o, struct group_pair_config *p, char *err, size_t errlen)
{
	const char *role, *state, *mode, *remote = "", *site = "", *id, *seed;
	json_int_t start = 0, cvol = 0, coff = 0, cend = 0;
	int copy = 0, ri, si, mi;
	json_error_t jerr;

	if (json_unpack_ex(o, &jerr, 0, "{s:s, s:s, s:s, s?s, s?s, s:s, s:I, s:s, s?b, s?I, s?I, s?I}",
			   "role", &role, "state", &state, "mode", &mode, "remote", &remote,
			   "peer_site", &site, "id", &id, "start_seq", &start, "primary_seed",
			   &seed, "initial_copy", &copy, "copy_volume", &cvol, "copy_offset", &coff,
			   "copy_end_seq", &cend)) {
		snprintf(err, errlen, "pair: %s", jerr.text);
		return -EINVAL;
	}
	ri = name_index(role_names, ARRAY_SIZE(role_names), role);
	si = name_index(state_names, ARRAY_SIZE(state_names), state);
	mi = name_index(mode_names, ARRAY_SIZE(mode_names), mode);
	if (ri <= 0 || si < 0 || mi < 0 || start < 0 || cvol < 0 || coff < 0 || cend < 0 ||
	    strlen(remote) >= sizeof(p->remote) || strlen(site) >= sizeof(p->peer_site)) {
		snprintf(err, errlen, "pair: invalid role, state, mode or progress");
		return -EINVAL;
	}
	memset(p, 0, sizeof(*p));
	p->role = (enum pair_role)ri;
	p->state = (enum pair_state)si;
	p->mode = (enum pair_mode)mi;
	snprintf(p->remote, sizeof(p->remote), "%s", remote);
	snprintf(p->peer_site, sizeof(p->peer_site), "%s", site);
	p->id = strtoull(id, NULL, 16);
	p->primary_seed = strtoull(seed, NULL, 16);
	p->start_seq = (uint64_t)start;
	p->initial_copy = copy;
	p->copy_volume = (unsigned)cvol;
	p->copy_offset = (uint64_t)coff;
	p->copy_end_seq = (uint64_t)cend;
	p->confirmed = json_is_true(json_object_get(o, "confirmed"));
	{
		const char *gen = "0", *sgen = "0", *reason = "", *paddr = "";
		json_int_t ctotal = 0, fold = 0;
		int resync = 0, clear = 0;

		if (json_unpack_ex(o, &jerr, 0, "{s?s, s?s, s?s, s?b, s?I, s?I, s?b, s?s}", "gen", &gen,
				   "synced_gen", &sgen, "reason", &reason, "resync", &resync,
				   "copy_total", &ctotal, "fold_to", &fold, "bitmap_clear_pending",
				   &clear, "peer_addr", &paddr) ||
		    ctotal < 0 || fold < 0 || strlen(paddr) >= sizeof(p->peer_addr)) {
			snprintf(err, errlen, "pair: invalid lifecycle fields");
			return -EINVAL;
		}
		p->gen = strtoull(gen, NULL, 16);
		p->synced_gen = strtoull(sgen, NULL, 16);
		snprintf(p->reason, sizeof(p->reason), "%s", reason);
		p->resync = resync;
		p->copy_total = (uint64_t)ctotal;
		p->fold_to = (uint64_t)fold;
		p->bitmap_clear_pending = clear;
		snprintf(p->peer_addr, sizeof(p->peer_addr), "%s", paddr);
		p->cause = (unsigned)json_integer_value(json_object_get(o, "cause"));
		p->announce = json_is_true(json_object_get(o, "announce"));
	}
	{
		json_t *map = json_object_get(o, "volume_map"), *e;
		size_t i;

		if (map && (!json_is_array(map) || json_array_size(map) > JOURNAL_MAX_VOLUMES)) {
			snprintf(err, errlen, "pair: invalid volume_map");
			return -EINVAL;
		}
		json_array_foreach(map, i, e)
		{
			json_int_t v = json_integer_value(e);

			if (!json_is_integer(e) || v < 0 || v >= JOURNAL_MAX_VOLUMES) {
				snprintf(err, errlen, "pair: invalid volume_map entry %zu", i);
				return -EINVAL;
			}
			p->volmap[i] = (uint16_t)v;
			p->nvolmap = (unsigned)i + 1;
		}
	}
	return 0;
}

int
group_config_save(const struct group_config *cfg, const char *dir)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	json_t *root, *vols;
	char *text = NULL;
	int fd = -1, r;

	if (snprintf(path, sizeof(path), "%s/%s.json", dir, cfg->name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	vols = json_array();
	root = json_pack("{s:i, s:s, s:s, s:I, s:I, s:I, s:o}", "version", GROUP_CONFIG_VERSION,
			 "name", cfg->name, "journal", cfg->journal_path, "journal_size",
			 (json_int_t)cfg->journal_size, "marker_interval_ms",
			 (json_int_t)cfg->marker_interval_ms, "checkpoint_interval_ms",
			 (json_int_t)cfg->checkpoint_interval_ms, "volumes", vols);
	if (!root)
		return -ENOMEM;
	json_object_set_new(root, "region_size", json_integer(cfg->region_size));
	json_object_set_new(
		root, "replication",
		json_pack("{s:i, s:b, s:I, s:I, s:b, s:b}", "high_water_pct",
			  (int)cfg->ropts.high_water_pct, "inflow_control", cfg->ropts.inflow_control,
			  "overflow_watch_ms", (json_int_t)cfg->ropts.overflow_watch_ms,
			  "link_timeout_ms", (json_int_t)cfg->ropts.link_timeout_ms,
			  "auto_resync_link", cfg->ropts.auto_resync_link, "auto_resync_error",
			  cfg->ropts.auto_resync_error));
	if (cfg->pair.role != PAIR_ROLE_NONE) {
		json_t *p = pair_to_json(&cfg->pair);

		if (!p || json_object_set_new(root, "pair", p)) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (unsigned i = 0; i < cfg->nvolumes; i++) {
		json_t *v = json_pack("{s:s, s:s, s:I}", "name", cfg->volumes[i].name, "path",
				      cfg->volumes[i].path, "size",
				      (json_int_t)cfg->volumes[i].size);

		if (!v || json_array_append_new(vols, v)) {
			r = -ENOMEM;
			goto out;
		}
	}
	text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!text) {
		r = -ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = util_write_full(fd, text, strlen(text));
	if (r == 0 && (util_write_full(fd, "\n", 1) < 0 || fsync(fd) < 0))
		r = -errno;
	if (r < 0)
		goto out;
	/* Atomic replace, then make the rename itself durable. */
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto out;
	}
	r = util_fsync_dir(dir);
out:
	if (fd >= 0)
		close(fd);
	if (r < 0)
		unlink(tmp);
	free(text);
	json_decref(root);
	return r;
}

int
group_config_load(const char *file, struct group_config *ret, char *err, size_t errlen)
{
	struct group_config cfg = {0};
	json_error_t jerr;
	json_t *root, *vols, *v, *pair;
	const char *name = NULL, *journal = NULL;
	json_int_t jsize = 0, marker = 0, ckpt = 0, version = 0;
	size_t i;
	int r = -EINVAL;

	root = json_load_file(file, 0, &jerr);
	if (!root) {
		snprintf(err, errlen, "%s: line %d: %s", file, jerr.line, jerr.text);
		return -EINVAL;
	}
	if (json_unpack_ex(root, &jerr, 0, "{s:I, s:s, s:s, s:I, s?I, s?I, s:o}", "version",
			   &version, "name", &name, "journal", &journal, "journal_size", &jsize,
			   "marker_interval_ms", &marker, "checkpoint_interval_ms", &ckpt,
			   "volumes", &vols) ||
	    !json_is_array(vols)) {
		snprintf(err, errlen, "%s: %s", file, jerr.text);
		goto out;
	}
	if (version != GROUP_CONFIG_VERSION) {
		snprintf(err, errlen, "%s: unsupported config version %lld", file,
			 (long long)version);
		goto out;
	}
	if (!util_valid_name(name, sizeof(cfg.name)) || json_array_size(vols) == 0 ||
	    json_array_size(vols) > JOURNAL_MAX_VOLUMES || jsize < 0 || marker < 0 || ckpt < 0) {
		snprintf(err, errlen, "%s: invalid group name, volume count or interval", file);
		goto out;
	}
	snprintf(cfg.name, sizeof(cfg.name), "%s", name);
	cfg.journal_size = (uint64_t)jsize;
	cfg.marker_interval_ms = (uint64_t)marker;
	cfg.checkpoint_interval_ms = (uint64_t)ckpt;
	group_repl_options_default(&cfg.ropts);
	cfg.region_size = GROUP_DEFAULT_REGION_SIZE;
	{
		json_t *rs = json_object_get(root, "region_size"),
		       *ro = json_object_get(root, "replication");

		if (rs) {
			json_int_t rv = json_integer_value(rs);

			if (!json_is_integer(rs) || rv < 4096 || rv > (1 << 30) || (rv & (rv - 1))) {
				snprintf(err, errlen, "%s: region_size must be a power of two, 4 KiB..1 GiB",
					 file);
				goto out;
			}
			cfg.region_size = (uint32_t)rv;
		}
		if (ro && group_repl_options_from_json(ro, &cfg.ropts, NULL, 0) < 0) {
			snprintf(err, errlen, "%s: invalid replication options", file);
			goto out;
		}
	}
	pair = json_object_get(root, "pair");
	if (pair) {
		char perr[256];

		if (pair_from_json(pair, &cfg.pair, perr, sizeof(perr)) < 0) {
			snprintf(err, errlen, "%s: %s", file, perr);
			goto out;
		}
	}
	cfg.journal_path = strdup(journal);
	if (!cfg.journal_path) {
		r = -ENOMEM;
		goto out;
	}
	json_array_foreach(vols, i, v)
	{
		const char *vname, *vpath;
		json_int_t vsize;

		if (json_unpack_ex(v, &jerr, 0, "{s:s, s:s, s:I}", "name", &vname, "path", &vpath,
				   "size", &vsize) ||
		    !util_valid_name(vname, JOURNAL_VOLNAME_LEN) || vsize < 0) {
			snprintf(err, errlen, "%s: volume %zu: invalid entry", file, i);
			goto out;
		}
		snprintf(cfg.volumes[i].name, sizeof(cfg.volumes[i].name), "%s", vname);
		cfg.volumes[i].size = (uint64_t)vsize;
		cfg.volumes[i].path = strdup(vpath);
		if (!cfg.volumes[i].path) {
			r = -ENOMEM;
			goto out;
		}
		cfg.nvolumes++;
	}
	*ret = cfg;
	memset(&cfg, 0, sizeof(cfg));
	r = 0;
out:
	group_config_fini(&cfg);
	json_decref(root);
	return r;
}

/* Is there already something at path that isn't an empty regular file? */
static bool
has_content(const struct stat *st)
{
	return !S_ISREG(st->st_mode) || st->st_size > 0;
}

/* True when path holds a jrbd journal; its group name goes to ret_group. */
static bool
is_journal(const char *path, char *ret_group, size_t len)
{
	uint8_t *buf = malloc(2 * JOURNAL_SB_SIZE);
	struct journal_sb sb;
	unsigned slot;
	bool yes = false;
	int fd;

	if (!buf)
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		yes = util_pread_full(fd, buf, 2 * JOURNAL_SB_SIZE, 0) == 0 &&
		      journal_sb_pick(buf, &sb, &slot) == 0;
		close(fd);
	}
	if (yes)
		snprintf(ret_group, len, "%s", sb.group);
	free(buf);
	return yes;
}

static int
file_read(void *arg, void *buf, size_t len, uint64_t offset)
{
	return util_pread_full(*(int *)arg, buf, len, offset);
}

/* Records at or after the checkpoint of the journal at path: writes that may
 * not be in the volumes yet. -errno when it can't be scanned. */
static int64_t
journal_unapplied(const char *path)
{
	uint8_t buf[2 * JOURNAL_SB_SIZE];
	struct journal_sb sb;
	struct journal_scan scan;
	struct journal_rec rec;
	const void *payload;
	uint64_t lpos;
	unsigned slot;
	int64_t n = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = util_pread_full(fd, buf, sizeof(buf), 0);
	if (r == 0)
		r = journal_sb_pick(buf, &sb, &slot);
	if (r == 0)
		r = journal_scan_init(&scan, &sb, file_read, &fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	while ((r = journal_scan_next(&scan, &rec, &payload, &lpos)) == 1) {
		if (rec.seq >= sb.ckpt_seq && rec.kind != JOURNAL_REC_MARKER)
			n++;
	}
	journal_scan_fini(&scan);
	close(fd);
	return r < 0 ? r : n;
}

bool
group_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!strcmp(a, b))
		return true;
	if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
		return false;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int
group_create_storage(const struct group_config *cfg, char *err, size_t errlen)
{
	bool created[JOURNAL_MAX_VOLUMES] = {false};
	bool existed_empty[JOURNAL_MAX_VOLUMES] = {false};
	const char *names[JOURNAL_MAX_VOLUMES];
	struct journal_format_opts fo = {0};
	struct stat st;
	int r = 0;

	/* Check everything before touching anything. */
	for (unsigned i = 0; i < cfg->nvolumes; i++) {
		const struct group_volume_config *vc = &cfg->volumes[i];

		names[i] = vc->name;
		if (group_same_file(vc->path, cfg->journal_path)) {
			snprintf(err, errlen, "volume '%s' and the journal are the same file '%s'",
				 vc->name, vc->path);
			return -EINVAL;
		}
		for (unsigned k = 0; k < i; k++) {
			if (group_same_file(vc->path, cfg->volumes[k].path)) {
				snprintf(err, errlen, "volumes '%s' and '%s' are the same file '%s'",
					 cfg->volumes[k].name, vc->name, vc->path);
				return -EINVAL;
			}
		}
		if (stat(vc->path, &st) == 0) {
			uint64_t size = 0;
			int fd = open(vc->path, O_RDONLY | O_CLOEXEC);

			if (fd < 0 || util_fd_size(fd, &size) < 0) {
				snprintf(err, errlen, "volume '%s': '%s' is not a usable file or "
					 "block device", vc->name, vc->path);
				if (fd >= 0)
					close(fd);
				return -EINVAL;
			}
			close(fd);
			if (vc->size > size && !(S_ISREG(st.st_mode) && size == 0)) {
				snprintf(err, errlen,
					 "volume '%s': '%s' exists with %llu bytes, smaller than the "
					 "requested %llu",
					 vc->name, vc->path, (unsigned long long)size,
					 (unsigned long long)vc->size);
				return -ENOSPC;
			}
			if (!vc->size && !size) {
				snprintf(err, errlen, "volume '%s': '%s' is empty; give a size "
					 "(NAME=PATH:SIZE)", vc->name, vc->path);
				return -EINVAL;
			}
		} else if (errno != ENOENT) {
			snprintf(err, errlen, "volume '%s': '%s': %s", vc->name, vc->path,
				 strerror(errno));
			return -errno;
		} else if (!vc->size) {
			snprintf(err, errlen, "volume '%s': '%s' does not exist; give a size to "
				 "create it (NAME=PATH:SIZE)", vc->name, vc->path);
			return -ENOENT;
		}
	}
	if (stat(cfg->journal_path, &st) == 0 && has_content(&st)) {
		char owner[JOURNAL_GROUPNAME_LEN] = "";
		bool journal = is_journal(cfg->journal_path, owner, sizeof(owner));

		if (S_ISREG(st.st_mode) && !journal) {
			snprintf(err, errlen, "journal '%s' exists and is not a jrbd journal; "
				 "refusing to overwrite it", cfg->journal_path);
			return -EEXIST;
		}
		if (journal && !strcmp(owner, cfg->name)) {
			int64_t n = journal_unapplied(cfg->journal_path);

			/* Reformatting would drop acknowledged writes the volumes lack. */
			if (n != 0) {
				if (n > 0)
					snprintf(err, errlen,
						 "journal '%s' holds %lld records of group '%s' that "
						 "may not be in its volumes yet; recover them first "
						 "(restore the group's configuration and start the "
						 "daemon) or discard them with jrbd journal format",
						 cfg->journal_path, (long long)n, owner);
				else
					snprintf(err, errlen, "journal '%s' of group '%s' cannot be "
						 "scanned: %s", cfg->journal_path, owner,
						 strerror((int)-n));
				return -EEXIST;
			}
		}
		if (journal && strcmp(owner, cfg->name)) {
			/* Somebody's records may still be in there. */
			snprintf(err, errlen, "journal '%s' belongs to group '%s'; refusing to "
				 "overwrite it (jrbd journal format reformats it)",
				 cfg->journal_path, owner);
			return -EEXIST;
		}
	}
	if (cfg->journal_size && cfg->journal_size < JOURNAL_MIN_SIZE) {
		snprintf(err, errlen, "journal size %llu is below the minimum of %llu bytes",
			 (unsigned long long)cfg->journal_size,
			 (unsigned long long)JOURNAL_MIN_SIZE);
		return -EINVAL;
	}
	/* Create missing volumes as sparse files. */
	for (unsigned i = 0; i < cfg->nvolumes; i++) {
		const struct group_volume_config *vc = &cfg->volumes[i];
		int fd;

		if (stat(vc->path, &st) == 0) {
			if (!(S_ISREG(st.st_mode) && st.st_size == 0))
				continue;
			/* An existing empty file is the user's: undo truncates it back. */
			existed_empty[i] = true;
		}
		fd = open(vc->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			r = -errno;
			snprintf(err, errlen, "volume '%s': cannot create '%s': %s", vc->name,
				 vc->path, strerror(errno));
			goto undo;
		}
		created[i] = true;
		if (ftruncate(fd, (off_t)vc->size) < 0) {
			r = -errno;
			snprintf(err, errlen, "volume '%s': cannot size '%s' to %llu bytes: %s",
				 vc->name, vc->path, (unsigned long long)vc->size, strerror(errno));
			close(fd);
			goto undo;
		}
		close(fd);
	}
	fo.size = cfg->journal_size;
	fo.group = cfg->name;
	fo.nvolumes = cfg->nvolumes;
	fo.volumes = names;
	fo.role = JOURNAL_ROLE_MASTER;
	r = journal_format(cfg->journal_path, &fo);
	if (r < 0) {
		snprintf(err, errlen, "journal '%s': cannot format: %s", cfg->journal_path,
			 strerror(-r));
		goto undo;
	}
	return 0;
undo:
	for (unsigned i = 0; i < cfg->nvolumes; i++) {
		if (created[i] && existed_empty[i]) {
			if (truncate(cfg->volumes[i].path, 0) < 0)
				log_debug("undo: truncate '%s': %m", cfg->volumes[i].path);
		} else if (created[i])
			unlink(cfg->volumes[i].path);
	}
	return r;
}
