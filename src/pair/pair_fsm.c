/*
 * The pair command table (see pair_fsm.h).
 *
 * States a group goes through, and the command or event behind each change
 * (carried out by the replication code; this file only decides whether a
 * command may run):
 *
 *                   create            copy done
 *       NONE/SMPL ----------> COPY ---------------> PAIR <------------> PFUL
 *           ^                  ^   \                 |   journal nearly  |
 *           |                  |    \ suspend,       |   full / drained  | journal
 *         delete         resync|     \ error         | suspend, error    | full
 *       (any paired            |      v              v                   v
 *          state)         PSUS (suspended), PSUE (error), PFUS (journal full)
 *
 *       secondary:  PAIR, PFUL, PSUS, PSUE, PFUS --takeover--> SSWS
 *                   SSWS and those states --resync --swap--> roles reversed
 *
 *   NONE/SMPL -> COPY (PAIR without an initial copy)    [create, at the primary]
 *   COPY, PAIR, PFUL -> PSUS                            [suspend, at the primary]
 *   PSUS, PSUE, PFUS -> COPY                            [resync, at the primary]
 *   secondary PAIR, PFUL, PSUS, PSUE, PFUS -> SSWS      [takeover]
 *   secondary SSWS, PAIR, PFUL, PSUS, PSUE, PFUS
 *     -> this site primary, the other secondary         [resync --swap]
 *   any paired state -> SMPL, role NONE                 [delete]
 *
 * What the verdicts guarantee:
 *   - nothing is accepted in a (role, state) that cannot occur (a primary in
 *     SSWS, a role in SMPL): the group's config is inconsistent, and guessing
 *     could lose writes;
 *   - the secondary is never made writable (takeover, resync --swap) while its
 *     S-VOL is incomplete or inconsistent, i.e. during COPY;
 *   - a command that would only repeat the current state is a NOOP, not an
 *     error, so scripts can run it again.
 *
 * The table is the one source: pair_fsm_check() looks a cell up and
 * pair_fsm_table_markdown() prints them all, so the docs cannot drift.
 */
#include "pair/pair_fsm.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/compiler.h"

#define NROLES (PAIR_ROLE_SECONDARY + 1)
#define NSTATES (PAIR_STATE_SSWS + 1)

struct pair_fsm_rule {
	enum pair_verdict verdict;
	/* For the user; "{state}" becomes the state's name. "" for ACCEPT, NULL
	 * only in a cell the table forgot (refused, see pair_fsm_check()). */
	const char *why;
};

#define STATE_VAR "{state}"

/* Marks the rows of (role, state) pairs that do not occur: refused, and left
 * out of the Markdown table. */
static const char why_inconsistent[] =
    "inconsistent state: " STATE_VAR " does not occur with this site's role; "
    "check 'jrbd pair display GROUP' and the daemon log";

#define WHY_SMPL                                                                                   \
	"group is " STATE_VAR " (not paired); run 'jrbd pair create GROUP' at the primary first"
#define WHY_SMPL_DELETE "group is " STATE_VAR " (not paired); there is no pair to delete"

#define WHY_P_CREATE                                                                               \
	"this site is already the primary of a pair (" STATE_VAR                                   \
	"); run 'jrbd pair delete GROUP' first"
#define WHY_P_SUSPENDED                                                                            \
	"already suspended (" STATE_VAR "); 'jrbd pair resync GROUP' resumes the copy"
#define WHY_P_COPYING                                                                              \
	"a copy is already running (" STATE_VAR "); 'jrbd pair display GROUP' shows its progress"
#define WHY_P_IN_SYNC "already in sync (" STATE_VAR "); there is nothing to resync"
#define WHY_P_SWAP                                                                                 \
	"this site is the primary (" STATE_VAR "); run 'jrbd pair resync GROUP --swap' at the "    \
	"secondary site: the site that runs it becomes the primary"
#define WHY_P_TAKEOVER                                                                             \
	"this site is already the primary (" STATE_VAR "); takeover runs at the secondary"

#define WHY_S_CREATE                                                                               \
	"this site is already the secondary of a pair (" STATE_VAR                                 \
	"); run 'jrbd pair delete GROUP' first"
#define WHY_S_SUSPEND                                                                              \
	"suspend runs at the primary site (" STATE_VAR " here); at the secondary use "             \
	"'jrbd pair takeover GROUP' if the primary is lost"
#define WHY_S_SUSPENDED                                                                            \
	"already suspended (" STATE_VAR "); 'jrbd pair resync GROUP' at the primary resumes it"
#define WHY_S_SUSPENDED_SSWS                                                                       \
	"already suspended (" STATE_VAR ": this site took over); 'jrbd pair resync GROUP --swap' " \
	"here makes the other site the secondary"
#define WHY_S_RESYNC                                                                               \
	"resync runs at the primary site (" STATE_VAR " here), or use "                            \
	"'jrbd pair resync GROUP --swap' here to reverse the roles"
/* --swap is refused during COPY, so don't suggest it. */
#define WHY_S_RESYNC_COPY                                                                          \
	"resync runs at the primary site, where a copy is already running (" STATE_VAR             \
	"); 'jrbd pair display GROUP' shows its progress"
#define WHY_S_RESYNC_SSWS                                                                          \
	"this site took over (" STATE_VAR "); 'jrbd pair resync GROUP --swap' here keeps its "     \
	"writes and makes the other site the secondary"
#define WHY_S_SWAP_COPY                                                                            \
	"the S-VOL is not consistent during " STATE_VAR "; wait until the copy reaches PAIR"
#define WHY_S_TAKEOVER_COPY                                                                        \
	"the S-VOL is incomplete during " STATE_VAR " and cannot be taken over; let the copy "     \
	"finish first"
#define WHY_S_TAKEN_OVER                                                                           \
	"already taken over (" STATE_VAR "); 'jrbd pair resync GROUP --swap' here makes the "      \
	"other site the secondary"

/* clang-format off */
#define ACCEPT {PAIR_VERDICT_ACCEPT, ""}
#define NOOP(why) {PAIR_VERDICT_NOOP, why}
#define REFUSE(why) {PAIR_VERDICT_REFUSE, why}
#define INCONSISTENT {REFUSE(why_inconsistent), REFUSE(why_inconsistent), REFUSE(why_inconsistent), \
		      REFUSE(why_inconsistent), REFUSE(why_inconsistent), REFUSE(why_inconsistent)}

static const struct pair_fsm_rule pair_fsm_table[NROLES][NSTATES][PAIR_FSM_NCMDS] = {
	/* Only SMPL is consulted without a role (see pair_fsm_check()). */
	[PAIR_ROLE_NONE] = {
		/*                   create   suspend           resync            resync --swap     takeover          delete */
		[PAIR_STATE_SMPL] = {ACCEPT,  REFUSE(WHY_SMPL), REFUSE(WHY_SMPL), REFUSE(WHY_SMPL), REFUSE(WHY_SMPL), NOOP(WHY_SMPL_DELETE)},
		[PAIR_STATE_COPY] = INCONSISTENT,
		[PAIR_STATE_PAIR] = INCONSISTENT,
		[PAIR_STATE_PFUL] = INCONSISTENT,
		[PAIR_STATE_PFUS] = INCONSISTENT,
		[PAIR_STATE_PSUS] = INCONSISTENT,
		[PAIR_STATE_PSUE] = INCONSISTENT,
		[PAIR_STATE_SSWS] = INCONSISTENT,
	},
	[PAIR_ROLE_PRIMARY] = {
		/*                   create                suspend                resync                 resync --swap       takeover                delete */
		[PAIR_STATE_SMPL] = INCONSISTENT,
		[PAIR_STATE_COPY] = {REFUSE(WHY_P_CREATE), ACCEPT,                NOOP(WHY_P_COPYING),   REFUSE(WHY_P_SWAP), REFUSE(WHY_P_TAKEOVER), ACCEPT},
		[PAIR_STATE_PAIR] = {REFUSE(WHY_P_CREATE), ACCEPT,                NOOP(WHY_P_IN_SYNC),   REFUSE(WHY_P_SWAP), REFUSE(WHY_P_TAKEOVER), ACCEPT},
		[PAIR_STATE_PFUL] = {REFUSE(WHY_P_CREATE), ACCEPT,                NOOP(WHY_P_IN_SYNC),   REFUSE(WHY_P_SWAP), REFUSE(WHY_P_TAKEOVER), ACCEPT},
		[PAIR_STATE_PFUS] = {REFUSE(WHY_P_CREATE), NOOP(WHY_P_SUSPENDED), ACCEPT,                REFUSE(WHY_P_SWAP), REFUSE(WHY_P_TAKEOVER), ACCEPT},
		[PAIR_STATE_PSUS] = {REFUSE(WHY_P_CREATE), NOOP(WHY_P_SUSPENDED), ACCEPT,                REFUSE(WHY_P_SWAP), REFUSE(WHY_P_TAKEOVER), ACCEPT},
		[PAIR_STATE_PSUE] = {REFUSE(WHY_P_CREATE), NOOP(WHY_P_SUSPENDED), ACCEPT,                REFUSE(WHY_P_SWAP), REFUSE(WHY_P_TAKEOVER), ACCEPT},
		/* Only a secondary takes over. */
		[PAIR_STATE_SSWS] = INCONSISTENT,
	},
	[PAIR_ROLE_SECONDARY] = {
		/*                   create                suspend                     resync                     resync --swap            takeover                     delete */
		[PAIR_STATE_SMPL] = INCONSISTENT,
		[PAIR_STATE_COPY] = {REFUSE(WHY_S_CREATE), REFUSE(WHY_S_SUSPEND),      REFUSE(WHY_S_RESYNC_COPY), REFUSE(WHY_S_SWAP_COPY), REFUSE(WHY_S_TAKEOVER_COPY), ACCEPT},
		[PAIR_STATE_PAIR] = {REFUSE(WHY_S_CREATE), REFUSE(WHY_S_SUSPEND),      REFUSE(WHY_S_RESYNC),      ACCEPT,                  ACCEPT,                      ACCEPT},
		[PAIR_STATE_PFUL] = {REFUSE(WHY_S_CREATE), REFUSE(WHY_S_SUSPEND),      REFUSE(WHY_S_RESYNC),      ACCEPT,                  ACCEPT,                      ACCEPT},
		[PAIR_STATE_PFUS] = {REFUSE(WHY_S_CREATE), NOOP(WHY_S_SUSPENDED),      REFUSE(WHY_S_RESYNC),      ACCEPT,                  ACCEPT,                      ACCEPT},
		[PAIR_STATE_PSUS] = {REFUSE(WHY_S_CREATE), NOOP(WHY_S_SUSPENDED),      REFUSE(WHY_S_RESYNC),      ACCEPT,                  ACCEPT,                      ACCEPT},
		[PAIR_STATE_PSUE] = {REFUSE(WHY_S_CREATE), NOOP(WHY_S_SUSPENDED),      REFUSE(WHY_S_RESYNC),      ACCEPT,                  ACCEPT,                      ACCEPT},
		[PAIR_STATE_SSWS] = {REFUSE(WHY_S_CREATE), NOOP(WHY_S_SUSPENDED_SSWS), REFUSE(WHY_S_RESYNC_SSWS), ACCEPT,                  NOOP(WHY_S_TAKEN_OVER),      ACCEPT},
	},
};
/* clang-format on */

static const char *const cmd_names[] = {
    [PAIR_CMD_CREATE] = "create",     [PAIR_CMD_SUSPEND] = "suspend",
    [PAIR_CMD_RESYNC] = "resync",     [PAIR_CMD_RESYNC_SWAP] = "resync --swap",
    [PAIR_CMD_TAKEOVER] = "takeover", [PAIR_CMD_DELETE] = "delete",
};
_Static_assert(ARRAY_SIZE(cmd_names) == PAIR_FSM_NCMDS, "a name for every pair command");

/* x in the `jrbd pair check` exit codes 20 + x and 30 + x. */
static const int check_exit_x[NSTATES] = {
    [PAIR_STATE_SMPL] = 0, [PAIR_STATE_COPY] = 2, [PAIR_STATE_PAIR] = 3, [PAIR_STATE_PSUS] = 4,
    [PAIR_STATE_PSUE] = 5, [PAIR_STATE_PFUL] = 6, [PAIR_STATE_PFUS] = 7, [PAIR_STATE_SSWS] = 8,
};

static const char *const verdict_names[] = {
    [PAIR_VERDICT_ACCEPT] = "accept",
    [PAIR_VERDICT_NOOP] = "no-op",
    [PAIR_VERDICT_REFUSE] = "refuse",
};

static bool
row_occurs(unsigned role, unsigned state)
{
	return pair_fsm_table[role][state][0].why != why_inconsistent;
}

/* Copies tmpl into why (len bytes, truncated, terminated when len > 0) with
 * each STATE_VAR replaced by state. */
static void
format_why(char *why, size_t len, const char *tmpl, const char *state)
{
	const size_t var_len = sizeof(STATE_VAR) - 1;
	size_t n = 0;

	if (!len)
		return;
	while (*tmpl && n + 1 < len) {
		if (!strncmp(tmpl, STATE_VAR, var_len)) {
			for (const char *s = state; *s && n + 1 < len; s++)
				why[n++] = *s;
			tmpl += var_len;
		} else {
			why[n++] = *tmpl++;
		}
	}
	why[n] = '\0';
}

enum pair_verdict
pair_fsm_check(enum pair_role role, enum pair_state state, enum pair_cmd cmd, char *why, size_t len)
{
	const struct pair_fsm_rule *rule;

	if ((unsigned)role >= NROLES || (unsigned)state >= NSTATES ||
	    (unsigned)cmd >= PAIR_FSM_NCMDS) {
		format_why(why, len, "unknown pair role, state or command; nothing done", "");
		return PAIR_VERDICT_REFUSE;
	}
	/* A group without a role is unpaired, whatever state it last recorded. */
	if (role == PAIR_ROLE_NONE)
		state = PAIR_STATE_SMPL;
	rule = &pair_fsm_table[role][state][cmd];
	if (!rule->why) {
		format_why(why, len, "internal error: no rule for this command in " STATE_VAR,
		           pair_state_name(state));
		return PAIR_VERDICT_REFUSE;
	}
	format_why(why, len, rule->why, pair_state_name(state));
	return rule->verdict;
}

const char *
pair_cmd_name(enum pair_cmd cmd)
{
	return (unsigned)cmd < ARRAY_SIZE(cmd_names) ? cmd_names[cmd] : "?";
}

int
pair_check_exit_code(enum pair_role role, enum pair_state state)
{
	if ((unsigned)role >= NROLES || (unsigned)state >= NSTATES)
		return 1;
	if (role == PAIR_ROLE_NONE || state == PAIR_STATE_SMPL)
		return 10;
	return (role == PAIR_ROLE_PRIMARY ? 20 : 30) + check_exit_x[state];
}

char *
pair_fsm_table_markdown(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int err;

	if (!f)
		return NULL;
	fputs("| role | state | `pair check` exit |", f);
	for (unsigned c = 0; c < PAIR_FSM_NCMDS; c++)
		fprintf(f, " %s |", cmd_names[c]);
	fputs("\n|---|---|---|", f);
	for (unsigned c = 0; c < PAIR_FSM_NCMDS; c++)
		fputs("---|", f);
	fputc('\n', f);
	for (unsigned r = 0; r < NROLES; r++) {
		for (unsigned s = 0; s < NSTATES; s++) {
			enum pair_role role = (enum pair_role)r;
			enum pair_state state = (enum pair_state)s;

			if (!row_occurs(r, s))
				continue;
			fprintf(f, "| %s | %s | %d |", pair_role_name(role), pair_state_name(state),
			        pair_check_exit_code(role, state));
			for (unsigned c = 0; c < PAIR_FSM_NCMDS; c++)
				fprintf(f, " %s |", verdict_names[pair_fsm_table[r][s][c].verdict]);
			fputc('\n', f);
		}
	}
	/* fclose() sets buf even after a failed write. */
	err = ferror(f);
	if (fclose(f) || err) {
		free(buf);
		return NULL;
	}
	return buf;
}
