/*
 * jrbd: the one program. `jrbd daemon` runs a site's daemon; every other verb
 * talks to the local daemon over its control socket (include/jrbd/ctl.h), or
 * reads a journal file directly (`journal dump`, `journal format`).
 *
 * Exit codes: 0 success, 1 the operation failed (message on stderr), 2 usage
 * error, 3 no daemon is running for the state directory.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "config.h"
#include "ctl/ctl.h"
#include "daemon/daemon.h"
#include "journal/journal.h"
#include "pair/pair_fsm.h"

#define EXIT_USAGE 2
#define EXIT_NO_DAEMON 3
#define CTL_TIMEOUT_MS 120000 /* group create formats the journal */

struct command {
	const char *verb;   /* "group create" */
	int (*run)(int argc, char **argv);
	const char *usage;
	const char *help;
};

static const char *state_dir;

static const char *
get_dir(void)
{
	if (state_dir)
		return state_dir;
	state_dir = getenv("JRBD_DIR");
	return state_dir;
}

static int
need_dir(void)
{
	if (!get_dir()) {
		fprintf(stderr, "jrbd: no state directory: pass --dir DIR or set JRBD_DIR\n");
		return -1;
	}
	return 0;
}

/* Absolute path for a file that may not exist yet: its directory must. */
static char *
absolute_path(const char *path)
{
	char *dup1 = strdup(path), *dup2 = strdup(path), dir[PATH_MAX], *out = NULL;

	if (!dup1 || !dup2)
		goto out;
	if (!realpath(dirname(dup1), dir)) {
		fprintf(stderr, "jrbd: directory of '%s' does not exist: %s\n", path,
			strerror(errno));
		goto out;
	}
	if (asprintf(&out, "%s/%s", strcmp(dir, "/") ? dir : "", basename(dup2)) < 0)
		out = NULL;
out:
	free(dup1);
	free(dup2);
	return out;
}

/* Sends req (takes ownership) and returns the reply, or NULL after printing why. */
/* pair create waits for the remote daemon (which formats its restore journal). */
static int call_timeout_ms = CTL_TIMEOUT_MS;

static json_t *
call(json_t *req, int *ret_exit)
{
	json_t *reply = NULL;
	int r;

	r = ctl_call(get_dir(), req, call_timeout_ms, &reply);
	json_decref(req);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		fprintf(stderr, "jrbd: no daemon is running for state directory '%s' "
			"(start one with: jrbd daemon --dir %s)\n", get_dir(), get_dir());
		*ret_exit = EXIT_NO_DAEMON;
		return NULL;
	}
	if (r < 0) {
		fprintf(stderr, "jrbd: control socket of '%s': %s\n", get_dir(), strerror(-r));
		*ret_exit = 1;
		return NULL;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		const char *msg = json_string_value(json_object_get(reply, "error"));

		fprintf(stderr, "jrbd: %s\n", msg ? msg : "the daemon refused the command");
		json_decref(reply);
		*ret_exit = 1;
		return NULL;
	}
	return reply;
}

static int
simple_call(json_t *req)
{
	int code = 0;
	json_t *reply = call(req, &code);

	json_decref(reply);
	return reply ? 0 : code;
}

enum { OPT_DIR = 1000, OPT_JSON, OPT_HELP };

/* Prints a reply's results as JSON, without the protocol fields. */
static void
print_reply_json(json_t *reply)
{
	json_object_del(reply, "v");
	json_object_del(reply, "ok");
	json_dumpf(reply, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
	printf("\n");
}

/* Options of the verbs that take nothing but --dir. */
static int
parse_dir_only(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != OPT_DIR)
			return EXIT_USAGE;
		state_dir = optarg;
	}
	if (optind != argc || need_dir() < 0)
		return EXIT_USAGE;
	return 0;
}

static int
cmd_daemon(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{"nbd", required_argument, NULL, 'n'},
		{"listen", required_argument, NULL, 'l'},
		{"secret-file", required_argument, NULL, 's'},
		{"io-engine", required_argument, NULL, 'e'},
		{"io-depth", required_argument, NULL, 'q'},
		{"log-level", required_argument, NULL, 'v'},
		{"data-cache", required_argument, NULL, 'c'},
		{"site", required_argument, NULL, 'S'},
		{"window", required_argument, NULL, 'W'},
		{"compress-level", required_argument, NULL, 'Z'},
		{"on-event", required_argument, NULL, 'E'},
		{"advertise", required_argument, NULL, 'A'},
		{"read-cache", required_argument, NULL, 'R'},
		{NULL, 0, NULL, 0},
	};
	struct daemon_opts d = {.io_engine = "auto"};
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_DIR:
			state_dir = optarg;
			break;
		case 'n':
			if (d.n_nbd == DAEMON_MAX_LISTEN) {
				fprintf(stderr, "jrbd daemon: at most %d --nbd addresses\n",
					DAEMON_MAX_LISTEN);
				return EXIT_USAGE;
			}
			d.nbd_addrs[d.n_nbd++] = optarg;
			break;
		case 'l':
			d.listen_addr = optarg;
			break;
		case 's':
			d.secret_file = optarg;
			break;
		case 'e':
			d.io_engine = optarg;
			break;
		case 'S':
			d.site = optarg;
			break;
		case 'E':
			if (access(optarg, X_OK) < 0) {
				fprintf(stderr, "jrbd daemon: --on-event '%s': %s\n", optarg,
					strerror(errno));
				return EXIT_USAGE;
			}
			d.on_event = optarg;
			break;
		case 'A':
			d.advertise = optarg;
			break;
		case 'W': {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || v < 1 || v > 6) {
				fprintf(stderr, "jrbd daemon: --window must be 1..6\n");
				return EXIT_USAGE;
			}
			d.window = (unsigned)v;
			break;
		}
		case 'Z': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < -1 || v > 19) {
				fprintf(stderr, "jrbd daemon: --compress-level must be -1 (off) or 0..19\n");
				return EXIT_USAGE;
			}
			d.compress_level = (int)v;
			break;
		}
		case 'R': {
			uint64_t v;

			/* 0 means off here; in repl_opts 0 means the default. */
			if (util_parse_size(optarg, &v) < 0 || (v && (v < JOURNAL_READ_CACHE_MIN || v > (1ull << 34)))) {
				fprintf(stderr, "jrbd daemon: --read-cache must be 0 (off) or 16M..16G\n");
				return EXIT_USAGE;
			}
			d.read_cache = v ? (int64_t)v : -1;
			break;
		}
		case 'q': {
			uint64_t v;

			if (util_parse_size(optarg, &v) < 0 || v < 1 || v > 4096) {
				fprintf(stderr, "jrbd daemon: --io-depth must be 1..4096\n");
				return EXIT_USAGE;
			}
			d.io_depth = (unsigned)v;
			break;
		}
		case 'c':
			if (!strcmp(optarg, "writeback"))
				d.buffered_data = true;
			else if (!strcmp(optarg, "direct"))
				d.buffered_data = false;
			else {
				fprintf(stderr, "jrbd daemon: --data-cache: direct|writeback\n");
				return EXIT_USAGE;
			}
			break;
		case 'v':
			if (!strcmp(optarg, "debug"))
				log_set_level(LOG_DEBUG);
			else if (!strcmp(optarg, "info"))
				log_set_level(LOG_INFO);
			else if (!strcmp(optarg, "warning"))
				log_set_level(LOG_WARN);
			else if (!strcmp(optarg, "error"))
				log_set_level(LOG_ERR);
			else {
				fprintf(stderr, "jrbd daemon: --log-level: error|warning|info|debug\n");
				return EXIT_USAGE;
			}
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "jrbd daemon: unexpected argument '%s'\n", argv[optind]);
		return EXIT_USAGE;
	}
	if (need_dir() < 0)
		return EXIT_USAGE;
	d.dir = get_dir();
	return daemon_run(&d);
}

static int
parse_volume(const char *arg, json_t *vols)
{
	char *s = strdup(arg), *eq, *colon, *path;
	uint64_t size = 0;
	int r = EXIT_USAGE;

	if (!s)
		return 1;
	eq = strchr(s, '=');
	if (!eq || eq == s || !eq[1]) {
		fprintf(stderr, "jrbd: --volume '%s': expected NAME=PATH[:SIZE]\n", arg);
		goto out;
	}
	*eq = '\0';
	colon = strrchr(eq + 1, ':');
	if (colon && util_parse_size(colon + 1, &size) == 0)
		*colon = '\0';
	else if (colon && colon[1] && !strchr(colon + 1, '/')) {
		fprintf(stderr, "jrbd: --volume '%s': bad size '%s' (e.g. 512M, 8G)\n", arg,
			colon + 1);
		goto out;
	} else
		size = 0;
	path = absolute_path(eq + 1);
	if (!path) {
		r = 1;
		goto out;
	}
	json_array_append_new(vols, json_pack("{s:s, s:s, s:I}", "name", s, "path", path,
					      "size", (json_int_t)size));
	free(path);
	r = 0;
out:
	free(s);
	return r;
}

static int
cmd_group_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{"journal", required_argument, NULL, 'j'},
		{"journal-size", required_argument, NULL, 's'},
		{"volume", required_argument, NULL, 'v'},
		{"region-size", required_argument, NULL, 'R'},
		{"high-water", required_argument, NULL, 'H'},
		{"inflow-control", no_argument, NULL, 'I'},
		{"overflow-watch", required_argument, NULL, 'O'},
		{"link-timeout", required_argument, NULL, 'T'},
		{"no-auto-resync", no_argument, NULL, 'N'},
		{"auto-resync-errors", no_argument, NULL, 'X'},
		{NULL, 0, NULL, 0},
	};
	const char *journal = NULL;
	uint64_t jsize = 0, region = 64 << 10;
	double hw = 80, ow = 60, lt = 30;
	int inflow = 0, auto_link = 1, auto_err = 0;
	json_t *vols = json_array();
	char *jpath;
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_DIR:
			state_dir = optarg;
			break;
		case 'j':
			journal = optarg;
			break;
		case 's':
			if (util_parse_size(optarg, &jsize) < 0) {
				fprintf(stderr, "jrbd: --journal-size '%s': not a size\n", optarg);
				goto usage;
			}
			break;
		case 'v':
			r = parse_volume(optarg, vols);
			if (r) {
				json_decref(vols);
				return r;
			}
			break;
		case 'R':
			if (util_parse_size(optarg, &region) < 0) {
				fprintf(stderr, "jrbd: --region-size '%s': not a size\n", optarg);
				goto usage;
			}
			break;
		case 'H':
			hw = atof(optarg);
			if (hw < 1 || hw > 99) {
				fprintf(stderr, "jrbd: --high-water: a percentage, 1..99\n");
				goto usage;
			}
			break;
		case 'I':
			inflow = 1;
			break;
		case 'O':
		case 'T': {
			char *end;
			double v = strtod(optarg, &end);

			if (*end || v < 0) {
				fprintf(stderr, "jrbd: --%s: seconds\n",
					c == 'O' ? "overflow-watch" : "link-timeout");
				goto usage;
			}
			*(c == 'O' ? &ow : &lt) = v;
			break;
		}
		case 'N':
			auto_link = 0;
			break;
		case 'X':
			auto_err = 1;
			break;
		default:
			goto usage;
		}
	}
	if (optind + 1 != argc || !journal || json_array_size(vols) == 0) {
		fprintf(stderr, "jrbd group create: need GROUP, --journal and at least one "
			"--volume\n");
		goto usage;
	}
	if (need_dir() < 0)
		goto usage;
	jpath = absolute_path(journal);
	if (!jpath) {
		json_decref(vols);
		return 1;
	}
	r = simple_call(json_pack("{s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:b, s:I, s:I, s:b, s:b}",
				  "cmd", "group-create", "name", argv[optind], "journal", jpath,
				  "journal_size", (json_int_t)jsize, "volumes", vols, "region_size",
				  (json_int_t)region, "high_water_pct", (json_int_t)hw,
				  "inflow_control", inflow, "overflow_watch_ms",
				  (json_int_t)(ow * 1000), "link_timeout_ms", (json_int_t)(lt * 1000),
				  "auto_resync_link", auto_link, "auto_resync_error", auto_err));
	free(jpath);
	if (r == 0)
		printf("group '%s' created\n", argv[optind]);
	return r;
usage:
	json_decref(vols);
	return EXIT_USAGE;
}

static int
cmd_group_delete(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{"force", no_argument, NULL, 'f'},
		{NULL, 0, NULL, 0},
	};
	int c, force = 0, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_DIR)
			state_dir = optarg;
		else if (c == 'f')
			force = 1;
		else
			return EXIT_USAGE;
	}
	if (optind + 1 != argc || need_dir() < 0) {
		fprintf(stderr, "jrbd group delete: need GROUP\n");
		return EXIT_USAGE;
	}
	r = simple_call(json_pack("{s:s, s:s, s:b}", "cmd", "group-delete", "name", argv[optind],
				  "force", force));
	if (r == 0)
		printf("group '%s' deleted (volume and journal files kept)\n", argv[optind]);
	return r;
}

static json_int_t
jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static void
print_group(json_t *g)
{
	json_t *j = json_object_get(g, "journal"), *seq = json_object_get(g, "seq"), *v;
	char a[32], b[32], rate[40];
	size_t i;

	printf("group %s  role %s  state %s%s\n", json_string_value(json_object_get(g, "name")),
	       json_string_value(json_object_get(g, "role")),
	       json_string_value(json_object_get(g, "state")),
	       json_is_true(json_object_get(g, "failed")) ? "  FAILED" : "");
	if (json_object_get(g, "error"))
		printf("  error: %s\n", json_string_value(json_object_get(g, "error")));
	if (j) {
		double ratio = jint(j, "payload_bytes")
				       ? (double)jint(j, "bytes_written") /
						 (double)jint(j, "payload_bytes")
				       : 0.0;

		printf("  journal %s: %s of %s used (%.1f%%), %lld records retained from seq %lld\n",
		       json_string_value(json_object_get(g, "journal_path")),
		       util_format_size((uint64_t)jint(j, "used"), a, sizeof(a)),
		       util_format_size((uint64_t)jint(j, "size"), b, sizeof(b)),
		       json_real_value(json_object_get(j, "used_pct")),
		       (long long)(jint(seq, "written") - jint(j, "tail_seq") + 1),
		       (long long)jint(j, "tail_seq"));
		printf("  seq: written %lld  durable %lld  checkpoint %lld   journal bytes/payload "
		       "%.3f\n",
		       (long long)jint(seq, "written"), (long long)jint(seq, "durable"),
		       (long long)jint(seq, "checkpoint"), ratio);
	}
	if ((v = json_object_get(g, "pair"))) {
		json_t *ps = json_object_get(v, "seq"), *lag = json_object_get(v, "lag"),
		       *cp = json_object_get(v, "copy");
		const char *err = json_string_value(json_object_get(v, "error"));

		printf("  pair %s  mode %s  peer %s%s%s  %s\n",
		       json_string_value(json_object_get(v, "id")),
		       json_string_value(json_object_get(v, "mode")),
		       json_string_value(json_object_get(v, "peer_site")),
		       json_object_get(v, "remote") ? " at " : "",
		       json_object_get(v, "remote") ? json_string_value(json_object_get(v, "remote"))
						    : "",
		       json_is_true(json_object_get(v, "connected")) ? "connected" : "NOT CONNECTED");
		printf("  pair seq: written %lld  received %lld  restored %lld   lag %lld records, "
		       "%.1f s\n",
		       (long long)jint(ps, "written"), (long long)jint(ps, "received"),
		       (long long)jint(ps, "restored"), (long long)jint(lag, "records"),
		       json_real_value(json_object_get(lag, "seconds")));
		if (cp && !strcmp(json_string_value(json_object_get(g, "state")), "COPY"))
			printf("  copy: %.1f%% (%s of %s)%s%s/s\n",
			       json_real_value(json_object_get(cp, "percent")),
			       util_format_size((uint64_t)jint(cp, "done_bytes"), a, sizeof(a)),
			       util_format_size((uint64_t)jint(cp, "total_bytes"), b, sizeof(b)),
			       ", rate ",
			       util_format_size((uint64_t)jint(cp, "rate_bytes_per_s"), rate,
						sizeof(rate)));
		{
			const char *why = json_string_value(json_object_get(v, "reason"));
			json_t *bm = json_object_get(v, "bitmap");

			if (why && *why)
				printf("  pair state %s: %s\n", json_string_value(json_object_get(v, "state")),
				       why);
			if (bm && (jint(bm, "dirty_bytes") || json_is_true(json_object_get(bm, "tracking"))))
				printf("  difference bitmaps: %s marked%s\n",
				       util_format_size((uint64_t)jint(bm, "dirty_bytes"), a, sizeof(a)),
				       json_is_true(json_object_get(bm, "tracking")) ? ", tracking writes" : "");
			if (json_object_get(v, "pending"))
				printf("  pair: %s in progress\n",
				       json_string_value(json_object_get(v, "pending")));
		}
		if (err && *err)
			printf("  pair error: %s\n", err);
	}
	printf("  %-16s %10s %4s  %s\n", "VOLUME", "SIZE", "NBD", "PATH");
	json_array_foreach(json_object_get(g, "volumes"), i, v)
	{
		printf("  %-16s %10s %4lld  %s\n", json_string_value(json_object_get(v, "name")),
		       util_format_size((uint64_t)jint(v, "size"), a, sizeof(a)),
		       (long long)jint(v, "nbd_connections"),
		       json_string_value(json_object_get(v, "path")));
	}
}

static int
cmd_pair_display(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{"json", no_argument, NULL, OPT_JSON},
		{"watch", optional_argument, NULL, 'w'},
		{NULL, 0, NULL, 0},
	};
	int c, json = 0, code = 0;
	double watch = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_DIR)
			state_dir = optarg;
		else if (c == OPT_JSON)
			json = 1;
		else if (c == 'w')
			watch = optarg ? atof(optarg) : 1.0;
		else
			return EXIT_USAGE;
	}
	if (optind + 1 < argc || need_dir() < 0)
		return EXIT_USAGE;
	for (;;) {
		json_t *req = json_pack("{s:s}", "cmd", "display"), *reply, *g;
		size_t i;

		if (optind < argc)
			json_object_set_new(req, "name", json_string(argv[optind]));
		reply = call(req, &code);
		if (!reply)
			return code;
		if (json) {
			print_reply_json(reply);
		} else {
			if (json_array_size(json_object_get(reply, "groups")) == 0)
				printf("no groups\n");
			json_array_foreach(json_object_get(reply, "groups"), i, g)
				print_group(g);
		}
		json_decref(reply);
		fflush(stdout);
		if (watch <= 0)
			return 0;
		{
			struct timespec ts = {.tv_sec = (time_t)watch,
					      .tv_nsec = (long)((watch - (double)(time_t)watch) *
								1e9)};

			nanosleep(&ts, NULL);
		}
		if (!json)
			printf("\n");
	}
}

static int
cmd_status(int argc, char **argv)
{
	int code = parse_dir_only(argc, argv);
	json_t *reply;

	if (code)
		return code;
	reply = call(json_pack("{s:s}", "cmd", "status"), &code);
	if (!reply)
		return code;
	print_reply_json(reply);
	json_decref(reply);
	return 0;
}

static int
cmd_shutdown(int argc, char **argv)
{
	int code = parse_dir_only(argc, argv);

	if (code)
		return code;
	return simple_call(json_pack("{s:s}", "cmd", "shutdown"));
}

static int
cmd_journal_dump(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, OPT_JSON},
		{"dir", required_argument, NULL, OPT_DIR},
		{NULL, 0, NULL, 0},
	};
	int c, json = 0, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_JSON)
			json = 1;
		else if (c != OPT_DIR)
			return EXIT_USAGE;
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "jrbd journal dump: need PATH\n");
		return EXIT_USAGE;
	}
	r = journal_dump(argv[optind], json, true, stdout);
	if (r < 0) {
		fprintf(stderr, "jrbd journal dump: '%s': %s\n", argv[optind], strerror(-r));
		return 1;
	}
	return r; /* 1: the log ends in a torn or corrupt record */
}

static int
cmd_journal_format(int argc, char **argv)
{
	static const struct option opts[] = {
		{"size", required_argument, NULL, 's'},
		{"group", required_argument, NULL, 'g'},
		{"dir", required_argument, NULL, OPT_DIR},
		{NULL, 0, NULL, 0},
	};
	struct journal_format_opts fo = {.group = "", .role = JOURNAL_ROLE_MASTER};
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 's') {
			if (util_parse_size(optarg, &fo.size) < 0) {
				fprintf(stderr, "jrbd journal format: --size '%s': not a size\n",
					optarg);
				return EXIT_USAGE;
			}
		} else if (c == 'g')
			fo.group = optarg;
		else if (c != OPT_DIR)
			return EXIT_USAGE;
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "jrbd journal format: need PATH\n");
		return EXIT_USAGE;
	}
	r = journal_format(argv[optind], &fo);
	if (r < 0) {
		fprintf(stderr, "jrbd journal format: '%s': %s\n", argv[optind], strerror(-r));
		return 1;
	}
	printf("journal '%s' formatted\n", argv[optind]);
	return 0;
}

static int
cmd_pair_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{"remote", required_argument, NULL, 'r'},
		{"mode", required_argument, NULL, 'm'},
		{"no-initial-copy", no_argument, NULL, 'n'},
		{NULL, 0, NULL, 0},
	};
	const char *remote = NULL, *mode = "async";
	int c, copy = 1, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_DIR)
			state_dir = optarg;
		else if (c == 'r')
			remote = optarg;
		else if (c == 'm')
			mode = optarg;
		else if (c == 'n')
			copy = 0;
		else
			return EXIT_USAGE;
	}
	if (optind + 1 != argc || !remote || need_dir() < 0) {
		fprintf(stderr, "jrbd pair create: need GROUP and --remote HOST:PORT\n");
		return EXIT_USAGE;
	}
	if (strcmp(mode, "async") && strcmp(mode, "sync")) {
		fprintf(stderr, "jrbd pair create: --mode async|sync\n");
		return EXIT_USAGE;
	}
	call_timeout_ms = 120000;
	r = simple_call(json_pack("{s:s, s:s, s:s, s:s, s:b}", "cmd", "pair-create", "name",
				  argv[optind], "remote", remote, "mode", mode, "initial_copy", copy));
	if (r == 0)
		printf("group '%s' paired with %s (%s mode, %s); see 'jrbd pair display %s'\n",
		       argv[optind], remote, mode, copy ? "initial copy running" : "no initial copy",
		       argv[optind]);
	return r;
}

/* suspend/resync/takeover/delete: one request, answered when the pair is done. */
static int
pair_verb(int argc, char **argv, const char *verb)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{"drain", no_argument, NULL, 'd'},
		{"swap", no_argument, NULL, 's'},
		{"force", no_argument, NULL, 'f'},
		{"json", no_argument, NULL, OPT_JSON},
		{NULL, 0, NULL, 0},
	};
	int c, drain = 0, swap = 0, force = 0, json = 0, code = 0;
	char cmd[32];
	json_t *req, *reply;
	const char *msg;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_DIR)
			state_dir = optarg;
		else if (c == 'd' && !strcmp(verb, "suspend"))
			drain = 1;
		else if (c == 's' && !strcmp(verb, "resync"))
			swap = 1;
		else if (c == 'f' && !strcmp(verb, "resync"))
			force = 1;
		else if (c == OPT_JSON)
			json = 1;
		else
			return EXIT_USAGE;
	}
	if (optind + 1 != argc || need_dir() < 0) {
		fprintf(stderr, "jrbd pair %s: need GROUP\n", verb);
		return EXIT_USAGE;
	}
	snprintf(cmd, sizeof(cmd), "pair-%s", verb);
	req = json_pack("{s:s, s:s, s:b, s:b, s:b}", "cmd", cmd, "name", argv[optind], "drain",
			drain, "swap", swap, "force", force);
	call_timeout_ms = 180000; /* drains and swaps wait for the other site */
	reply = call(req, &code);
	if (!reply)
		return code;
	msg = json_string_value(json_object_get(reply, "message"));
	if (json) {
		print_reply_json(reply);
	} else {
		printf("group '%s': pair %s%s: %s\n", argv[optind], verb, swap ? " --swap" : "",
		       msg ? msg : "done");
	}
	/* takeover's exit code says which variant ran (README). */
	if (!strcmp(verb, "takeover")) {
		if (json_is_true(json_object_get(reply, "noop")))
			code = 0;
		else if (msg && !strncmp(msg, "swap", 4))
			code = 11;
		else
			code = 10;
	}
	json_decref(reply);
	return code;
}

static int
cmd_pair_suspend(int argc, char **argv)
{
	return pair_verb(argc, argv, "suspend");
}

static int
cmd_pair_resync(int argc, char **argv)
{
	return pair_verb(argc, argv, "resync");
}

static int
cmd_pair_takeover(int argc, char **argv)
{
	return pair_verb(argc, argv, "takeover");
}

static int
cmd_pair_delete(int argc, char **argv)
{
	return pair_verb(argc, argv, "delete");
}

/* Exit code = role and state, as array tools do (README "pair check"). */
static int
cmd_pair_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, OPT_DIR},
		{NULL, 0, NULL, 0},
	};
	int c, code = 0;
	json_t *reply, *g, *p;
	const char *role = "simplex", *state = "SMPL";
	enum pair_role r = PAIR_ROLE_NONE;
	enum pair_state st = PAIR_STATE_SMPL;
	static const char *const states[] = {"SMPL", "COPY", "PAIR", "PFUL", "PFUS", "PSUS", "PSUE",
					     "SSWS"};

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_DIR)
			state_dir = optarg;
		else
			return EXIT_USAGE;
	}
	if (optind + 1 != argc || need_dir() < 0) {
		fprintf(stderr, "jrbd pair check: need GROUP\n");
		return EXIT_USAGE;
	}
	reply = call(json_pack("{s:s, s:s}", "cmd", "display", "name", argv[optind]), &code);
	if (!reply)
		return code == EXIT_NO_DAEMON ? code : 1;
	g = json_array_get(json_object_get(reply, "groups"), 0);
	p = json_object_get(g, "pair");
	if (p) {
		role = json_string_value(json_object_get(p, "role"));
		state = json_string_value(json_object_get(p, "state"));
		r = !strcmp(role, "primary") ? PAIR_ROLE_PRIMARY : PAIR_ROLE_SECONDARY;
		for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
			if (!strcmp(states[i], state))
				st = (enum pair_state)i;
		}
	}
	code = pair_check_exit_code(r, st);
	printf("%s %s %s\n", argv[optind], p ? role : "simplex", p ? state : "SMPL");
	json_decref(reply);
	return code;
}

/* The command table the daemon enforces, as the README shows it. */
static int
cmd_pair_states(int argc, char **argv)
{
	char *md = pair_fsm_table_markdown();

	(void)argc;
	(void)argv;
	if (!md) {
		fprintf(stderr, "jrbd: out of memory\n");
		return 1;
	}
	fputs(md, stdout);
	free(md);
	return 0;
}

static int
cmd_not_yet(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "jrbd: '%s' needs replication, which this version does not have yet\n",
		argv[0]);
	return 1;
}

static int cmd_help(int argc, char **argv);

static const struct command commands[] = {
	{"daemon", cmd_daemon,
	 "daemon --dir DIR [--nbd ADDR|unix:PATH]... [--io-engine auto|uring|aio|sync]\n"
	 "           [--data-cache direct|writeback] [--io-depth N] [--log-level LEVEL]\n"
	 "           [--listen HOST:PORT] [--secret-file F] [--site NAME] [--window N]\n"
	 "           [--compress-level N] [--read-cache SIZE] [--on-event PROG]\n"
	 "           [--advertise HOST:PORT]",
	 "run the site daemon (foreground)"},
	{"group create", cmd_group_create,
	 "group create GROUP --journal PATH [--journal-size SIZE] --volume NAME=PATH[:SIZE]...\n"
	 "           [--region-size SIZE] [--high-water PCT] [--inflow-control]\n"
	 "           [--overflow-watch SECS] [--link-timeout SECS] [--no-auto-resync]\n"
	 "           [--auto-resync-errors]",
	 "create a journal group (sparse volumes created when missing)"},
	{"group delete", cmd_group_delete, "group delete GROUP [--force]",
	 "forget a group (files are kept)"},
	{"pair display", cmd_pair_display, "pair display [GROUP] [--json] [--watch[=SECS]]",
	 "show groups, volumes, journal use and sequence numbers"},
	{"pair create", cmd_pair_create,
	 "pair create GROUP --remote HOST:PORT [--mode async|sync] [--no-initial-copy]",
	 "pair a group with the same-named group of the remote daemon (run at the primary)"},
	{"pair suspend", cmd_pair_suspend, "pair suspend GROUP [--drain]",
	 "stop replicating (PSUS); host writes go on, tracked in the difference bitmaps"},
	{"pair resync", cmd_pair_resync, "pair resync GROUP [--swap] [--force]",
	 "copy only the changed regions and return to PAIR (--swap: at the secondary, become "
	 "the primary)"},
	{"pair takeover", cmd_pair_takeover, "pair takeover GROUP",
	 "at the secondary: swap roles if the primary is reachable, else make the S-VOLs "
	 "writable (SSWS); exit 10 takeover, 11 swap, 0 nothing to do"},
	{"pair delete", cmd_pair_delete, "pair delete GROUP",
	 "dissolve the pair at both sites (SMPL); volumes keep their data"},
	{"pair states", cmd_pair_states, "pair states",
	 "which pair command runs in which role and state (the table the daemon enforces)"},
	{"pair check", cmd_pair_check, "pair check GROUP",
	 "exit code = role and state: 10 SMPL, 2x primary, 3x secondary (README)"},
	{"pair verify", cmd_not_yet, "pair verify GROUP", "(not yet)"},
	{"journal dump", cmd_journal_dump, "journal dump PATH [--json]",
	 "print a journal's superblock and records with checksum verdicts"},
	{"journal format", cmd_journal_format, "journal format PATH --size SIZE [--group NAME]",
	 "format a journal volume"},
	{"status", cmd_status, "status", "daemon pid, NBD addresses, I/O engine"},
	{"shutdown", cmd_shutdown, "shutdown", "stop the daemon cleanly"},
	{"help", cmd_help, "help", "this text"},
};

static int
cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("jrbd %s: journal-replicated block devices\n\nusage:\n", JRBD_VERSION);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		printf("  jrbd %-80s\n      %s\n", commands[i].usage, commands[i].help);
	printf("\nEvery command takes --dir DIR (or JRBD_DIR) naming the site's state "
	       "directory.\nExit codes: 0 ok, 1 failed, 2 usage, 3 no daemon running.\n");
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(argc, argv) == 0 && argc >= 2 ? 0 : EXIT_USAGE;
	if (!strcmp(argv[1], "--version")) {
		printf("jrbd %s\n", JRBD_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const char *verb = commands[i].verb, *sp = strchr(verb, ' ');

		if (!sp && !strcmp(argv[1], verb))
			return commands[i].run(argc - 1, argv + 1);
		if (sp && argc >= 3 && !strncmp(argv[1], verb, (size_t)(sp - verb)) &&
		    strlen(argv[1]) == (size_t)(sp - verb) && !strcmp(argv[2], sp + 1)) {
			/* getopt sees "jrbd-group-create ARGS...". */
			return commands[i].run(argc - 2, argv + 2);
		}
	}
	fprintf(stderr, "jrbd: unknown command '%s%s%s' (see jrbd --help)\n", argv[1],
		argc >= 3 ? " " : "", argc >= 3 ? argv[2] : "");
	return EXIT_USAGE;
}
