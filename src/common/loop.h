/*
 * The event loop: epoll over sockets, timers and the I/O engine's eventfd,
 * with before-sleep hooks (where requests are submitted and journal batches
 * committed, once per iteration) and deferred calls.
 *
 * One loop per thread; everything registered runs on that thread. Handlers
 * never block.
 */
#ifndef JRBD_LOOP_H
#define JRBD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;

typedef void loop_fd_fn(struct loop *loop, int fd, uint32_t events, void *arg);
typedef void loop_fn(struct loop *loop, void *arg);

/* Caller-owned registration; stays valid while registered. */
struct loop_handle {
	int fd;
	loop_fd_fn *fn;
	void *arg;
	uint32_t events;
};

struct loop_timer {
	int fd; /* timerfd */
	loop_fn *fn;
	void *arg;
	struct loop_handle h;
};

struct loop_hook {
	loop_fn *fn;
	void *arg;
	struct loop_hook *next;
	bool registered;
};

int loop_new(struct loop **ret);
void loop_free(struct loop *loop); /* NULL is a no-op */

/* events: EPOLLIN/EPOLLOUT/...; level-triggered (never EPOLLET: after a
 * loop_del_fd() the rest of an epoll batch is dropped and relies on the
 * events being reported again). */
int loop_add_fd(struct loop *loop, struct loop_handle *h, int fd, uint32_t events, loop_fd_fn *fn,
		void *arg);
int loop_mod_fd(struct loop *loop, struct loop_handle *h, uint32_t events);
void loop_del_fd(struct loop *loop, struct loop_handle *h);

/* Periodic timer, first firing after interval_ms. */
int loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t interval_ms, loop_fn *fn,
		     void *arg);
void loop_timer_stop(struct loop *loop, struct loop_timer *t);
/* A one-shot timer: created disarmed by loop_timer_start_oneshot, fires fn
 * once delay_us after each loop_timer_arm (re-arming moves the deadline);
 * stopped with loop_timer_stop. */
int loop_timer_start_oneshot(struct loop *loop, struct loop_timer *t, loop_fn *fn, void *arg);
int loop_timer_arm(struct loop_timer *t, uint64_t delay_us);

/* Runs fn before every sleep, in registration order. */
void loop_add_hook(struct loop *loop, struct loop_hook *hook, loop_fn *fn, void *arg);
void loop_del_hook(struct loop *loop, struct loop_hook *hook);

/* Makes the next epoll_wait not sleep (work was queued from a callback). */
void loop_wakeup(struct loop *loop);

/* Runs until loop_stop(); returns 0 or -errno of a failed epoll_wait. */
int loop_run(struct loop *loop);
/* One iteration: hooks, then wait at most timeout_ms (-1: forever) and dispatch. */
int loop_run_once(struct loop *loop, int timeout_ms);
void loop_stop(struct loop *loop);
bool loop_is_stopped(const struct loop *loop);

#endif
