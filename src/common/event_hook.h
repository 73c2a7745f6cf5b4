/*
 * The operator's event hook: a program the daemon starts on every pair state
 * change (to page someone, update a monitor, fence a host), without waiting
 * for it.
 *
 * Not a queue: when EVENT_HOOK_MAX_CHILDREN hooks are still running (or not
 * yet reaped), the event is skipped, not delayed, so a stuck hook cannot make
 * the daemon pile up processes. The hook's output goes to the daemon's stderr.
 *
 * Threading: a static table, used only from the daemon's loop thread.
 */
#ifndef JRBD_EVENT_HOOK_H
#define JRBD_EVENT_HOOK_H

#define EVENT_HOOK_MAX_CHILDREN 32u

/*
 * Runs prog (a path: no PATH search) with argv {prog, group, old_state,
 * new_state, reason} and the environment plus JRBD_EVENT_GROUP, _OLD, _NEW and
 * _REASON set to the same, stdin </dev/null, default signal dispositions and
 * an empty signal mask. Uses posix_spawn (not fork+exec: the daemon may be
 * large) and does not wait: the child is remembered until event_hook_reap()
 * finds it finished. NULL strings other than prog are passed as "".
 *
 * Returns 0, -EINVAL (no prog), -EAGAIN (EVENT_HOOK_MAX_CHILDREN hooks not yet
 * reaped: the event is skipped) or -errno from posix_spawn (which may instead
 * succeed and the child exit 127, e.g. for a missing program). Logs every
 * failure itself.
 */
int event_hook_run(const char *prog, const char *group, const char *old_state,
                   const char *new_state, const char *reason);

/*
 * Reaps finished hook children: waitpid(WNOHANG) on each remembered pid, never
 * waitpid(-1), since the daemon has other children. Logs a non-zero exit or a
 * death by signal with the group and event. Never blocks. Returns how many are
 * still running. Call it on SIGCHLD or from a timer.
 */
unsigned event_hook_reap(void);

#endif
