/*
 * The site daemon: owns STATE_DIR (one daemon per directory, enforced with a
 * lock), its groups, the NBD server and the control socket, all on one event
 * loop.
 */
#ifndef JRBD_DAEMON_H
#define JRBD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#define DAEMON_MAX_LISTEN 8

struct daemon_opts {
	const char *dir;
	const char *nbd_addrs[DAEMON_MAX_LISTEN];
	unsigned n_nbd;
	const char *listen_addr; /* replication port */
	const char *secret_file;
	const char *site;        /* name shown to the other site; default: the state dir's name */
	unsigned window;         /* read-journal requests in flight (secondary) */
	int compress_level;      /* zstd level for the link; < 0: off */
	int64_t read_cache;      /* master journal read cache bytes; 0: default; < 0: off */
	const char *io_engine;   /* "auto" by default */
	unsigned io_depth;
	bool buffered_data; /* --data-cache writeback */
	const char *on_event;  /* hook run on every pair state change */
	const char *advertise; /* replication HOST:PORT the peer dials after a swap */
};

/* Runs until SIGTERM/SIGINT or a shutdown command. Returns a process exit code. */
int daemon_run(const struct daemon_opts *opts);

#endif
