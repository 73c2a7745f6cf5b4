#include "common/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 64

struct loop {
	int epfd;
	bool stopped;
	bool woken;      /* skip the next sleep */
	bool dispatching; /* inside the event loop of loop_run_once */
	bool batch_stale; /* a handle was removed: the rest of the batch may point at freed memory */
	struct loop_hook *hooks;
};

int
loop_new(struct loop **ret)
{
	struct loop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return -ENOMEM;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		int r = -errno;

		free(loop);
		return r;
	}
	*ret = loop;
	return 0;
}

void
loop_free(struct loop *loop)
{
	if (!loop)
		return;
	close(loop->epfd);
	free(loop);
}

int
loop_add_fd(struct loop *loop, struct loop_handle *h, int fd, uint32_t events, loop_fd_fn *fn,
	    void *arg)
{
	struct epoll_event ev = {.events = events, .data.ptr = h};

	h->fd = fd;
	h->fn = fn;
	h->arg = arg;
	h->events = events;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	return 0;
}

int
loop_mod_fd(struct loop *loop, struct loop_handle *h, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = h};

	if (h->events == events)
		return 0;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0)
		return -errno;
	h->events = events;
	return 0;
}

void
loop_del_fd(struct loop *loop, struct loop_handle *h)
{
	if (h->fd >= 0)
		epoll_ctl(loop->epfd, EPOLL_CTL_DEL, h->fd, NULL);
	h->fd = -1;
	/* The handle's owner may free it right after this; events already
	 * fetched for it must not be dispatched. Dropping the rest of the batch
	 * is safe because everything is level-triggered: pending events are
	 * reported again by the next epoll_wait. */
	if (loop->dispatching)
		loop->batch_stale = true;
}

static void
timer_fired(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct loop_timer *t = arg;
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return;
	t->fn(loop, t->arg);
}

int
loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t interval_ms, loop_fn *fn,
		 void *arg)
{
	struct itimerspec its = {0};
	int r = loop_timer_start_oneshot(loop, t, fn, arg);

	if (r < 0)
		return r;
	its.it_interval.tv_sec = (time_t)(interval_ms / 1000);
	its.it_interval.tv_nsec = (long)(interval_ms % 1000) * 1000000L;
	its.it_value = its.it_interval;
	if (timerfd_settime(t->fd, 0, &its, NULL) < 0) {
		r = -errno;
		loop_timer_stop(loop, t);
	}
	return r;
}

int
loop_timer_start_oneshot(struct loop *loop, struct loop_timer *t, loop_fn *fn, void *arg)
{
	int r;

	t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->fd < 0)
		return -errno;
	t->fn = fn;
	t->arg = arg;
	r = loop_add_fd(loop, &t->h, t->fd, EPOLLIN, timer_fired, t);
	if (r < 0) {
		close(t->fd);
		t->fd = -1;
	}
	return r;
}

int
loop_timer_arm(struct loop_timer *t, uint64_t delay_us)
{
	struct itimerspec its = {0};

	if (t->fd < 0)
		return -EBADF;
	delay_us = delay_us ? delay_us : 1; /* 0 would disarm it */
	its.it_value.tv_sec = (time_t)(delay_us / 1000000);
	its.it_value.tv_nsec = (long)(delay_us % 1000000) * 1000L;
	return timerfd_settime(t->fd, 0, &its, NULL) < 0 ? -errno : 0;
}

void
loop_timer_stop(struct loop *loop, struct loop_timer *t)
{
	if (t->fd < 0)
		return;
	loop_del_fd(loop, &t->h);
	close(t->fd);
	t->fd = -1;
}

void
loop_add_hook(struct loop *loop, struct loop_hook *hook, loop_fn *fn, void *arg)
{
	struct loop_hook **p = &loop->hooks;

	hook->fn = fn;
	hook->arg = arg;
	hook->next = NULL;
	hook->registered = true;
	while (*p)
		p = &(*p)->next;
	*p = hook;
}

void
loop_del_hook(struct loop *loop, struct loop_hook *hook)
{
	for (struct loop_hook **p = &loop->hooks; *p; p = &(*p)->next) {
		if (*p == hook) {
			*p = hook->next;
			hook->registered = false;
			return;
		}
	}
}

void
loop_wakeup(struct loop *loop)
{
	loop->woken = true;
}

int
loop_run_once(struct loop *loop, int timeout_ms)
{
	struct epoll_event evs[LOOP_MAX_EVENTS];
	int n;

	/* Hooks may queue more work for each other; run them until quiet (bounded). */
	for (int round = 0; round < 4; round++) {
		loop->woken = false;
		for (struct loop_hook *h = loop->hooks, *next; h; h = next) {
			next = h->next;
			h->fn(loop, h->arg);
		}
		if (!loop->woken)
			break;
	}
	if (loop->woken)
		timeout_ms = 0;
	loop->woken = false;
	n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	loop->dispatching = true;
	loop->batch_stale = false;
	for (int i = 0; i < n && !loop->batch_stale; i++) {
		struct loop_handle *h = evs[i].data.ptr;

		if (h->fd >= 0)
			h->fn(loop, h->fd, evs[i].events, h->arg);
	}
	loop->dispatching = false;
	return n;
}

int
loop_run(struct loop *loop)
{
	while (!loop->stopped) {
		int r = loop_run_once(loop, -1);

		if (r < 0)
			return r;
	}
	return 0;
}

void
loop_stop(struct loop *loop)
{
	loop->stopped = true;
}

bool
loop_is_stopped(const struct loop *loop)
{
	return loop->stopped;
}
