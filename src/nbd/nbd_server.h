/*
 * The NBD server: listeners (TCP and unix socket), the fixed-newstyle
 * handshake and the transmission phase, one connection per client socket, all
 * on one event loop. Requests are handed to the group layer as struct
 * group_io; replies go out in completion order.
 *
 * It does not parse bytes itself: every message is decoded by the pure
 * functions in nbd_proto.h.
 */
#ifndef JRBD_NBD_SERVER_H
#define JRBD_NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct nbd_server;
struct volume;

struct nbd_server_ops {
	/* Returns the volume exported under name, or NULL. */
	struct volume *(*lookup)(void *arg, const char *name);
	/* Calls fn for every exported volume; stops early when fn returns < 0. */
	int (*list)(void *arg, int (*fn)(void *fnarg, struct volume *v), void *fnarg);
};

struct nbd_server_stats {
	unsigned connections;  /* open now */
	uint64_t accepted;     /* since start */
	uint64_t protocol_errors;
};

int nbd_server_new(struct loop *loop, const struct nbd_server_ops *ops, void *arg,
		   struct nbd_server **ret);
/* Stops listening, closes every connection (their in-flight I/O is waited
 * for), frees. NULL is a no-op.
 * It runs the loop (loop_run_once(), at most 30 s) until the groups have
 * completed that I/O, so call it from outside loop callbacks and before the
 * groups are closed; a connection whose I/O never completes is left to free
 * itself from its last completion. */
void nbd_server_free(struct nbd_server *s);

/* addr: "HOST:PORT" (IPv4/IPv6/hostname; port 0 picks a free port) or
 * "unix:PATH". May be called several times. */
int nbd_server_listen(struct nbd_server *s, const char *addr);
/* The bound address of listener i (e.g. after port 0), "127.0.0.1:34567" or "unix:/p". */
int nbd_server_bound_addr(const struct nbd_server *s, unsigned i, char *buf, size_t len);

/* Disconnects every client of v (used when a group is deleted); its in-flight
 * requests complete first. Returns the number of connections closed. */
unsigned nbd_server_drop_volume(struct nbd_server *s, struct volume *v);

void nbd_server_get_stats(const struct nbd_server *s, struct nbd_server_stats *ret);

#endif
