/*
 * The pair command table: which operator command (`jrbd pair ...`) may run at a
 * site, given its group's pair role and state, and what to tell the user when
 * it may not. Also the exit codes of `jrbd pair check` and the Markdown table
 * the README and `jrbd help pair-states` show, both generated from that one
 * table so the code and its documentation cannot disagree.
 *
 * Pure functions, no I/O and no state: carrying a command out (and the state
 * changes it causes) is the caller's job.
 */
#ifndef JRBD_PAIR_FSM_H
#define JRBD_PAIR_FSM_H

#include <stddef.h>

#include "group/group.h"

enum pair_cmd {
	PAIR_CMD_CREATE = 0,
	PAIR_CMD_SUSPEND,
	PAIR_CMD_RESYNC,
	PAIR_CMD_RESYNC_SWAP, /* resync --swap */
	PAIR_CMD_TAKEOVER,
	PAIR_CMD_DELETE,
};
#define PAIR_FSM_NCMDS 6u

enum pair_verdict {
	PAIR_VERDICT_ACCEPT = 0, /* run it */
	PAIR_VERDICT_NOOP,       /* nothing to do: report why and succeed */
	PAIR_VERDICT_REFUSE,     /* not here or not now: report why and fail */
};

/*
 * Whether `cmd` runs at a site whose group has this role and state. Without a
 * role (PAIR_ROLE_NONE) the group is SMPL whatever state it records. A role and
 * state that cannot occur together (a primary in SSWS, a role in SMPL) and
 * out-of-range values are refused as an inconsistent state.
 *
 * For NOOP and REFUSE, why (len bytes, truncated to fit and always terminated
 * when len > 0) gets one sentence for the user that names the state and says
 * what to do instead; for ACCEPT it gets "". why may be NULL when len is 0.
 */
enum pair_verdict pair_fsm_check(enum pair_role role, enum pair_state state, enum pair_cmd cmd,
                                 char *why, size_t len);

/* "create", "suspend", "resync", "resync --swap", "takeover", "delete"; "?" out of range. */
const char *pair_cmd_name(enum pair_cmd cmd);

/*
 * Exit code of `jrbd pair check`: 10 for SMPL (role NONE in any state, or a
 * role with state SMPL), 20 + x at the primary, 30 + x at the secondary, where
 * x = 2 COPY, 3 PAIR, 4 PSUS, 5 PSUE, 6 PFUL, 7 PFUS, 8 SSWS. 1 for a role or
 * state out of range.
 */
int pair_check_exit_code(enum pair_role role, enum pair_state state);

/*
 * Markdown table of the verdict of every command in every (role, state) that
 * occurs, with the `jrbd pair check` exit code, generated from the same table
 * as pair_fsm_check(). Returns a malloc'd string the caller frees, or NULL when
 * out of memory.
 */
char *pair_fsm_table_markdown(void);

#endif
