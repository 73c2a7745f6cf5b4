/*
 * The event hook (see event_hook.h): posix_spawn and a fixed table of the
 * children not yet reaped. The table is small and scanned linearly; a hook
 * runs for a state change, not per I/O.
 */
#include "common/event_hook.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/compiler.h"
#include "common/log.h"

struct hook_child {
	pid_t pid;
	char group[64]; /* for the log only: may be truncated */
	char event[48]; /* "OLD -> NEW", likewise */
};

/* Loop thread only. Unordered: a reaped child's slot takes the last one. */
static struct hook_child children[EVENT_HOOK_MAX_CHILDREN];
static unsigned nchildren;

/* The order of the values in argv after prog. */
static const char *const env_names[] = {
    "JRBD_EVENT_GROUP",
    "JRBD_EVENT_OLD",
    "JRBD_EVENT_NEW",
    "JRBD_EVENT_REASON",
};
#define NVARS ARRAY_SIZE(env_names)

/* True when entry ("NAME=value") sets one of env_names: the daemon's own
 * environment must not leave a second, stale copy for the hook. */
static bool
is_event_var(const char *entry)
{
	for (size_t i = 0; i < NVARS; i++) {
		size_t n = strlen(env_names[i]);

		if (!strncmp(entry, env_names[i], n) && entry[n] == '=')
			return true;
	}
	return false;
}

static int
spawn_hook(pid_t *ret_pid, char *prog, char *const argv[], char *const envp[])
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	int r;

	r = posix_spawn_file_actions_init(&fa);
	if (r)
		return -r;
	r = posix_spawnattr_init(&attr);
	if (r) {
		posix_spawn_file_actions_destroy(&fa);
		return -r;
	}
	/* The daemon blocks and handles signals, and ignores SIGPIPE; an
	 * ignored signal would stay ignored in the hook across exec. */
	sigemptyset(&none);
	sigfillset(&all);
	r = posix_spawnattr_setsigmask(&attr, &none);
	if (!r)
		r = posix_spawnattr_setsigdefault(&attr, &all);
	if (!r)
		r = posix_spawnattr_setflags(
		    &attr, (short)(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
	if (!r)
		r = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
	/* Whatever the daemon left without O_CLOEXEC (volumes, journal,
	 * sockets) stays out of the hook. */
	if (!r)
		r = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
#endif
	if (!r)
		r = posix_spawn(ret_pid, prog, &fa, &attr, argv, envp);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return -r;
}

int
event_hook_run(const char *prog, const char *group, const char *old_state, const char *new_state,
               const char *reason)
{
	const char *vals[NVARS] = {group, old_state, new_state, reason};
	char *vars[NVARS] = {NULL};
	char *argv[NVARS + 2] = {NULL};
	char **envp = NULL;
	size_t nenv = 0, n = 0;
	struct hook_child *c;
	pid_t pid;
	int r;

	if (!prog || !*prog)
		return -EINVAL;
	for (size_t i = 0; i < NVARS; i++) {
		if (!vals[i])
			vals[i] = "";
	}
	if (nchildren >= EVENT_HOOK_MAX_CHILDREN) {
		log_warn("event hook '%s': %u hooks still running, skipping group '%s' %s -> %s "
		         "(%s)",
		         prog, nchildren, vals[0], vals[1], vals[2], vals[3]);
		return -EAGAIN;
	}

	argv[0] = strdup(prog);
	if (!argv[0]) {
		r = -ENOMEM;
		goto out;
	}
	/* argv[1..] point at the values inside "NAME=value". */
	for (size_t i = 0; i < NVARS; i++) {
		if (asprintf(&vars[i], "%s=%s", env_names[i], vals[i]) < 0) {
			vars[i] = NULL;
			r = -ENOMEM;
			goto out;
		}
		argv[i + 1] = vars[i] + strlen(env_names[i]) + 1;
	}
	for (char **e = environ; e && *e; e++)
		nenv++;
	envp = calloc(nenv + NVARS + 1, sizeof(*envp));
	if (!envp) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nenv; i++) {
		if (!is_event_var(environ[i]))
			envp[n++] = environ[i];
	}
	for (size_t i = 0; i < NVARS; i++)
		envp[n++] = vars[i];

	r = spawn_hook(&pid, argv[0], argv, envp);
	if (r < 0)
		goto out;
	c = &children[nchildren++];
	c->pid = pid;
	snprintf(c->group, sizeof(c->group), "%s", vals[0]);
	snprintf(c->event, sizeof(c->event), "%s -> %s", vals[1], vals[2]);
	log_debug("event hook '%s': pid %d for group '%s' %s -> %s", prog, (int)pid, c->group,
	          vals[1], vals[2]);
out:
	if (r < 0) {
		char ebuf[128];

		log_warn("event hook '%s': group '%s' %s -> %s: %s, event skipped", prog, vals[0],
		         vals[1], vals[2], strerror_r(-r, ebuf, sizeof(ebuf)));
	}
	free(envp);
	for (size_t i = 0; i < NVARS; i++)
		free(vars[i]);
	free(argv[0]);
	return r;
}

unsigned
event_hook_reap(void)
{
	unsigned i = 0;

	while (i < nchildren) {
		struct hook_child *c = &children[i];
		int status = 0;
		pid_t r = waitpid(c->pid, &status, WNOHANG);

		if (r == 0 || (r < 0 && errno == EINTR)) {
			i++;
			continue;
		}
		if (r < 0) {
			char ebuf[128];

			/* ECHILD: someone else reaped it (SIGCHLD ignored?). */
			log_warn("event hook pid %d (group '%s', %s): cannot wait for it: %s, "
			         "forgetting it",
			         (int)c->pid, c->group, c->event,
			         strerror_r(errno, ebuf, sizeof(ebuf)));
		} else if (WIFEXITED(status) && WEXITSTATUS(status)) {
			log_warn(
			    "event hook pid %d (group '%s', %s): exited with status %d, ignoring",
			    (int)c->pid, c->group, c->event, WEXITSTATUS(status));
		} else if (WIFSIGNALED(status)) {
			log_warn(
			    "event hook pid %d (group '%s', %s): killed by signal %d, ignoring",
			    (int)c->pid, c->group, c->event, WTERMSIG(status));
		} else {
			log_debug("event hook pid %d (group '%s', %s): done", (int)c->pid, c->group,
			          c->event);
		}
		*c = children[--nchildren];
	}
	return nchildren;
}
