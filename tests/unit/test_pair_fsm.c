/*
 * The pair command table: every (role, state) x command verdict checked
 * against the specification, the user messages, the `pair check` exit codes,
 * and the Markdown table agreeing with pair_fsm_check().
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/compiler.h"
#include "leak_check.h"
#include "pair/pair_fsm.h"

TestSuite(pair_fsm, .fini = test_leak_check);

#define NSTATES (PAIR_STATE_SSWS + 1)

static const enum pair_state paired_states[] = {
    PAIR_STATE_COPY, PAIR_STATE_PAIR, PAIR_STATE_PFUL,
    PAIR_STATE_PFUS, PAIR_STATE_PSUS, PAIR_STATE_PSUE,
};
/* The states a secondary can be in: the primary's plus SSWS. */
static const enum pair_state secondary_states[] = {
    PAIR_STATE_COPY, PAIR_STATE_PAIR, PAIR_STATE_PFUL, PAIR_STATE_PFUS,
    PAIR_STATE_PSUS, PAIR_STATE_PSUE, PAIR_STATE_SSWS,
};

static bool
is_suspended(enum pair_state s)
{
	return s == PAIR_STATE_PSUS || s == PAIR_STATE_PSUE || s == PAIR_STATE_PFUS;
}

/* Checks one cell: its verdict, and for NOOP/REFUSE a why that names the
 * state (SMPL without a role) and contains needle when given. */
static void
expect(enum pair_role role, enum pair_state state, enum pair_cmd cmd, enum pair_verdict verdict,
       const char *needle)
{
	enum pair_state named = role == PAIR_ROLE_NONE ? PAIR_STATE_SMPL : state;
	char why[512];
	enum pair_verdict got;

	memset(why, 'x', sizeof(why));
	got = pair_fsm_check(role, state, cmd, why, sizeof(why));
	cr_assert_eq(got, verdict, "%s %s '%s': verdict %d, expected %d (%s)", pair_role_name(role),
	             pair_state_name(state), pair_cmd_name(cmd), got, verdict, why);
	if (verdict == PAIR_VERDICT_ACCEPT) {
		cr_assert_str_empty(why, "%s %s '%s': why '%s'", pair_role_name(role),
		                    pair_state_name(state), pair_cmd_name(cmd), why);
		return;
	}
	cr_assert(strlen(why) > 10, "%s %s '%s': why '%s'", pair_role_name(role),
	          pair_state_name(state), pair_cmd_name(cmd), why);
	cr_assert(strstr(why, pair_state_name(named)), "%s %s '%s': '%s' lacks %s",
	          pair_role_name(role), pair_state_name(state), pair_cmd_name(cmd), why,
	          pair_state_name(named));
	cr_assert_null(strstr(why, "{state}"), "unexpanded: '%s'", why);
	if (needle)
		cr_assert(strstr(why, needle), "%s %s '%s': '%s' lacks '%s'", pair_role_name(role),
		          pair_state_name(state), pair_cmd_name(cmd), why, needle);
}

Test(pair_fsm, smpl_without_role)
{
	/* Without a role the group is SMPL whatever state it records. */
	for (unsigned s = 0; s < NSTATES; s++) {
		enum pair_state st = (enum pair_state)s;

		expect(PAIR_ROLE_NONE, st, PAIR_CMD_CREATE, PAIR_VERDICT_ACCEPT, NULL);
		expect(PAIR_ROLE_NONE, st, PAIR_CMD_DELETE, PAIR_VERDICT_NOOP, "not paired");
		expect(PAIR_ROLE_NONE, st, PAIR_CMD_SUSPEND, PAIR_VERDICT_REFUSE,
		       "'jrbd pair create GROUP' at the primary first");
		expect(PAIR_ROLE_NONE, st, PAIR_CMD_RESYNC, PAIR_VERDICT_REFUSE,
		       "'jrbd pair create GROUP' at the primary first");
		expect(PAIR_ROLE_NONE, st, PAIR_CMD_RESYNC_SWAP, PAIR_VERDICT_REFUSE,
		       "'jrbd pair create GROUP' at the primary first");
		expect(PAIR_ROLE_NONE, st, PAIR_CMD_TAKEOVER, PAIR_VERDICT_REFUSE,
		       "'jrbd pair create GROUP' at the primary first");
	}
}

Test(pair_fsm, create)
{
	for (size_t i = 0; i < ARRAY_SIZE(paired_states); i++)
		expect(PAIR_ROLE_PRIMARY, paired_states[i], PAIR_CMD_CREATE, PAIR_VERDICT_REFUSE,
		       "already the primary of a pair");
	for (size_t i = 0; i < ARRAY_SIZE(secondary_states); i++)
		expect(PAIR_ROLE_SECONDARY, secondary_states[i], PAIR_CMD_CREATE,
		       PAIR_VERDICT_REFUSE, "already the secondary of a pair");
}

Test(pair_fsm, suspend)
{
	for (size_t i = 0; i < ARRAY_SIZE(paired_states); i++) {
		enum pair_state s = paired_states[i];

		if (is_suspended(s))
			expect(PAIR_ROLE_PRIMARY, s, PAIR_CMD_SUSPEND, PAIR_VERDICT_NOOP,
			       "already suspended");
		else
			expect(PAIR_ROLE_PRIMARY, s, PAIR_CMD_SUSPEND, PAIR_VERDICT_ACCEPT, NULL);
	}
	for (size_t i = 0; i < ARRAY_SIZE(secondary_states); i++) {
		enum pair_state s = secondary_states[i];

		if (is_suspended(s) || s == PAIR_STATE_SSWS)
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_SUSPEND, PAIR_VERDICT_NOOP,
			       "already suspended");
		else
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_SUSPEND, PAIR_VERDICT_REFUSE,
			       "'jrbd pair takeover GROUP' if the primary is lost");
	}
}

Test(pair_fsm, resync)
{
	expect(PAIR_ROLE_PRIMARY, PAIR_STATE_COPY, PAIR_CMD_RESYNC, PAIR_VERDICT_NOOP,
	       "a copy is already running");
	expect(PAIR_ROLE_PRIMARY, PAIR_STATE_PAIR, PAIR_CMD_RESYNC, PAIR_VERDICT_NOOP,
	       "already in sync");
	expect(PAIR_ROLE_PRIMARY, PAIR_STATE_PFUL, PAIR_CMD_RESYNC, PAIR_VERDICT_NOOP,
	       "already in sync");
	expect(PAIR_ROLE_PRIMARY, PAIR_STATE_PSUS, PAIR_CMD_RESYNC, PAIR_VERDICT_ACCEPT, NULL);
	expect(PAIR_ROLE_PRIMARY, PAIR_STATE_PSUE, PAIR_CMD_RESYNC, PAIR_VERDICT_ACCEPT, NULL);
	expect(PAIR_ROLE_PRIMARY, PAIR_STATE_PFUS, PAIR_CMD_RESYNC, PAIR_VERDICT_ACCEPT, NULL);

	for (size_t i = 0; i < ARRAY_SIZE(secondary_states); i++) {
		enum pair_state s = secondary_states[i];

		if (s == PAIR_STATE_SSWS)
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_RESYNC, PAIR_VERDICT_REFUSE,
			       "'jrbd pair resync GROUP --swap' here keeps its writes and makes "
			       "the other site the secondary");
		else if (s == PAIR_STATE_COPY)
			/* --swap is refused in COPY, so not suggested there. */
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_RESYNC, PAIR_VERDICT_REFUSE,
			       "resync runs at the primary site");
		else
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_RESYNC, PAIR_VERDICT_REFUSE,
			       "'jrbd pair resync GROUP --swap' here to reverse the roles");
	}
}

Test(pair_fsm, resync_swap)
{
	for (size_t i = 0; i < ARRAY_SIZE(paired_states); i++)
		expect(PAIR_ROLE_PRIMARY, paired_states[i], PAIR_CMD_RESYNC_SWAP,
		       PAIR_VERDICT_REFUSE,
		       "at the secondary site: the site that runs it becomes the primary");
	for (size_t i = 0; i < ARRAY_SIZE(secondary_states); i++) {
		enum pair_state s = secondary_states[i];

		if (s == PAIR_STATE_COPY)
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_RESYNC_SWAP, PAIR_VERDICT_REFUSE,
			       "the S-VOL is not consistent during COPY");
		else
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_RESYNC_SWAP, PAIR_VERDICT_ACCEPT,
			       NULL);
	}
}

Test(pair_fsm, takeover)
{
	for (size_t i = 0; i < ARRAY_SIZE(paired_states); i++)
		expect(PAIR_ROLE_PRIMARY, paired_states[i], PAIR_CMD_TAKEOVER, PAIR_VERDICT_REFUSE,
		       "already the primary");
	for (size_t i = 0; i < ARRAY_SIZE(secondary_states); i++) {
		enum pair_state s = secondary_states[i];

		if (s == PAIR_STATE_COPY)
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_TAKEOVER, PAIR_VERDICT_REFUSE,
			       "the S-VOL is incomplete during COPY and cannot be taken over");
		else if (s == PAIR_STATE_SSWS)
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_TAKEOVER, PAIR_VERDICT_NOOP,
			       "already taken over");
		else
			expect(PAIR_ROLE_SECONDARY, s, PAIR_CMD_TAKEOVER, PAIR_VERDICT_ACCEPT,
			       NULL);
	}
}

Test(pair_fsm, delete)
{
	for (size_t i = 0; i < ARRAY_SIZE(paired_states); i++)
		expect(PAIR_ROLE_PRIMARY, paired_states[i], PAIR_CMD_DELETE, PAIR_VERDICT_ACCEPT,
		       NULL);
	for (size_t i = 0; i < ARRAY_SIZE(secondary_states); i++)
		expect(PAIR_ROLE_SECONDARY, secondary_states[i], PAIR_CMD_DELETE,
		       PAIR_VERDICT_ACCEPT, NULL);
}

/* A primary in SSWS, or a role in SMPL, cannot happen: nothing runs. */
Test(pair_fsm, inconsistent_states_refuse_everything)
{
	for (unsigned c = 0; c < PAIR_FSM_NCMDS; c++) {
		enum pair_cmd cmd = (enum pair_cmd)c;

		expect(PAIR_ROLE_PRIMARY, PAIR_STATE_SSWS, cmd, PAIR_VERDICT_REFUSE,
		       "inconsistent state");
		expect(PAIR_ROLE_PRIMARY, PAIR_STATE_SMPL, cmd, PAIR_VERDICT_REFUSE,
		       "inconsistent state");
		expect(PAIR_ROLE_SECONDARY, PAIR_STATE_SMPL, cmd, PAIR_VERDICT_REFUSE,
		       "inconsistent state");
	}
}

/* No cell is missing from the table (a missing one reads "internal error"). */
Test(pair_fsm, every_cell_has_a_rule)
{
	char why[512];

	for (unsigned r = 0; r <= PAIR_ROLE_SECONDARY; r++) {
		for (unsigned s = 0; s < NSTATES; s++) {
			for (unsigned c = 0; c < PAIR_FSM_NCMDS; c++) {
				enum pair_verdict v =
				    pair_fsm_check((enum pair_role)r, (enum pair_state)s,
				                   (enum pair_cmd)c, why, sizeof(why));

				cr_assert(v == PAIR_VERDICT_ACCEPT || v == PAIR_VERDICT_NOOP ||
				          v == PAIR_VERDICT_REFUSE);
				cr_assert_null(strstr(why, "internal error"), "%u %u %u: %s", r, s,
				               c, why);
				cr_assert_eq(v == PAIR_VERDICT_ACCEPT, why[0] == '\0');
			}
		}
	}
}

Test(pair_fsm, out_of_range_refused)
{
	char why[256];

	cr_assert_eq(
	    pair_fsm_check((enum pair_role)3, PAIR_STATE_PAIR, PAIR_CMD_DELETE, why, sizeof(why)),
	    PAIR_VERDICT_REFUSE);
	cr_assert(strlen(why) > 0);
	cr_assert_eq(pair_fsm_check(PAIR_ROLE_PRIMARY, (enum pair_state)NSTATES, PAIR_CMD_DELETE,
	                            why, sizeof(why)),
	             PAIR_VERDICT_REFUSE);
	cr_assert(strlen(why) > 0);
	cr_assert_eq(pair_fsm_check(PAIR_ROLE_NONE, PAIR_STATE_SMPL, (enum pair_cmd)PAIR_FSM_NCMDS,
	                            why, sizeof(why)),
	             PAIR_VERDICT_REFUSE);
	cr_assert(strlen(why) > 0);
	cr_assert_eq(
	    pair_fsm_check(PAIR_ROLE_NONE, PAIR_STATE_SMPL, (enum pair_cmd) - 1, why, sizeof(why)),
	    PAIR_VERDICT_REFUSE);
}

Test(pair_fsm, why_truncated_and_terminated)
{
	char why[8];

	memset(why, 'x', sizeof(why));
	cr_assert_eq(
	    pair_fsm_check(PAIR_ROLE_PRIMARY, PAIR_STATE_PAIR, PAIR_CMD_TAKEOVER, why, sizeof(why)),
	    PAIR_VERDICT_REFUSE);
	cr_assert_eq(strlen(why), sizeof(why) - 1);
	cr_assert_eq(pair_fsm_check(PAIR_ROLE_PRIMARY, PAIR_STATE_PAIR, PAIR_CMD_TAKEOVER, why, 1),
	             PAIR_VERDICT_REFUSE);
	cr_assert_str_empty(why);
	/* len 0: why is not touched, and may be NULL. */
	cr_assert_eq(pair_fsm_check(PAIR_ROLE_PRIMARY, PAIR_STATE_PAIR, PAIR_CMD_TAKEOVER, NULL, 0),
	             PAIR_VERDICT_REFUSE);
	cr_assert_eq(pair_fsm_check(PAIR_ROLE_PRIMARY, PAIR_STATE_PAIR, PAIR_CMD_DELETE, NULL, 0),
	             PAIR_VERDICT_ACCEPT);
}

Test(pair_fsm, cmd_names)
{
	cr_assert_str_eq(pair_cmd_name(PAIR_CMD_CREATE), "create");
	cr_assert_str_eq(pair_cmd_name(PAIR_CMD_SUSPEND), "suspend");
	cr_assert_str_eq(pair_cmd_name(PAIR_CMD_RESYNC), "resync");
	cr_assert_str_eq(pair_cmd_name(PAIR_CMD_RESYNC_SWAP), "resync --swap");
	cr_assert_str_eq(pair_cmd_name(PAIR_CMD_TAKEOVER), "takeover");
	cr_assert_str_eq(pair_cmd_name(PAIR_CMD_DELETE), "delete");
	cr_assert_str_eq(pair_cmd_name((enum pair_cmd)PAIR_FSM_NCMDS), "?");
	cr_assert_str_eq(pair_cmd_name((enum pair_cmd) - 1), "?");
}

Test(pair_fsm, check_exit_codes)
{
	static const struct {
		enum pair_state state;
		int x;
	} xs[] = {
	    {PAIR_STATE_COPY, 2}, {PAIR_STATE_PAIR, 3}, {PAIR_STATE_PSUS, 4}, {PAIR_STATE_PSUE, 5},
	    {PAIR_STATE_PFUL, 6}, {PAIR_STATE_PFUS, 7}, {PAIR_STATE_SSWS, 8},
	};

	for (unsigned s = 0; s < NSTATES; s++)
		cr_assert_eq(pair_check_exit_code(PAIR_ROLE_NONE, (enum pair_state)s), 10);
	cr_assert_eq(pair_check_exit_code(PAIR_ROLE_PRIMARY, PAIR_STATE_SMPL), 10);
	cr_assert_eq(pair_check_exit_code(PAIR_ROLE_SECONDARY, PAIR_STATE_SMPL), 10);
	for (size_t i = 0; i < ARRAY_SIZE(xs); i++) {
		cr_assert_eq(pair_check_exit_code(PAIR_ROLE_PRIMARY, xs[i].state), 20 + xs[i].x);
		cr_assert_eq(pair_check_exit_code(PAIR_ROLE_SECONDARY, xs[i].state), 30 + xs[i].x);
	}
	cr_assert_eq(pair_check_exit_code((enum pair_role)3, PAIR_STATE_PAIR), 1);
	cr_assert_eq(pair_check_exit_code(PAIR_ROLE_PRIMARY, (enum pair_state)NSTATES), 1);
}

static const char *const verdict_text[] = {
    [PAIR_VERDICT_ACCEPT] = "accept",
    [PAIR_VERDICT_NOOP] = "no-op",
    [PAIR_VERDICT_REFUSE] = "refuse",
};

/* Splits "| a | b |" into trimmed cells; returns how many (at most max). */
static unsigned
split_row(char *line, char **cells, unsigned max)
{
	unsigned n = 0;
	char *save = NULL;

	cr_assert_eq(line[0], '|', "row '%s'", line);
	for (char *tok = strtok_r(line, "|", &save); tok && n < max;
	     tok = strtok_r(NULL, "|", &save)) {
		while (*tok == ' ')
			tok++;
		for (size_t len = strlen(tok); len && tok[len - 1] == ' '; len--)
			tok[len - 1] = '\0';
		cells[n++] = tok;
	}
	return n;
}

/* One row per (role, state) that occurs, each agreeing with pair_fsm_check(). */
Test(pair_fsm, markdown_table)
{
	char *md = pair_fsm_table_markdown();
	char *save = NULL, *line, *cells[16];
	unsigned rows = 0, n, ncols = 3 + PAIR_FSM_NCMDS;
	bool seen[PAIR_ROLE_SECONDARY + 1][NSTATES] = {{false}};

	cr_assert_not_null(md);
	line = strtok_r(md, "\n", &save);
	cr_assert_not_null(line);
	n = split_row(line, cells, 16);
	cr_assert_eq(n, ncols, "header '%s'", line);
	cr_assert_str_eq(cells[0], "role");
	cr_assert_str_eq(cells[1], "state");
	for (unsigned c = 0; c < PAIR_FSM_NCMDS; c++)
		cr_assert_str_eq(cells[3 + c], pair_cmd_name((enum pair_cmd)c));
	line = strtok_r(NULL, "\n", &save);
	cr_assert_not_null(line);
	cr_assert_eq(strncmp(line, "|---|", 5), 0, "separator '%s'", line);

	while ((line = strtok_r(NULL, "\n", &save))) {
		unsigned r, s;

		n = split_row(line, cells, 16);
		cr_assert_eq(n, ncols, "row '%s'", line);
		for (r = 0; r <= PAIR_ROLE_SECONDARY; r++) {
			if (!strcmp(cells[0], pair_role_name((enum pair_role)r)))
				break;
		}
		cr_assert_leq(r, PAIR_ROLE_SECONDARY, "role '%s'", cells[0]);
		for (s = 0; s < NSTATES; s++) {
			if (!strcmp(cells[1], pair_state_name((enum pair_state)s)))
				break;
		}
		cr_assert_lt(s, NSTATES, "state '%s'", cells[1]);
		cr_assert_not(seen[r][s], "row '%s' twice", line);
		seen[r][s] = true;
		cr_assert_eq(atoi(cells[2]),
		             pair_check_exit_code((enum pair_role)r, (enum pair_state)s));
		for (unsigned c = 0; c < PAIR_FSM_NCMDS; c++) {
			enum pair_verdict v = pair_fsm_check((enum pair_role)r, (enum pair_state)s,
			                                     (enum pair_cmd)c, NULL, 0);

			cr_assert_str_eq(cells[3 + c], verdict_text[v], "row '%s', '%s'", line,
			                 pair_cmd_name((enum pair_cmd)c));
		}
		rows++;
	}
	/* NONE/SMPL, the primary's six states, the secondary's seven. */
	cr_assert_eq(rows, 1 + ARRAY_SIZE(paired_states) + ARRAY_SIZE(secondary_states));
	cr_assert(seen[PAIR_ROLE_NONE][PAIR_STATE_SMPL]);
	for (size_t i = 0; i < ARRAY_SIZE(paired_states); i++)
		cr_assert(seen[PAIR_ROLE_PRIMARY][paired_states[i]]);
	for (size_t i = 0; i < ARRAY_SIZE(secondary_states); i++)
		cr_assert(seen[PAIR_ROLE_SECONDARY][secondary_states[i]]);
	free(md);
}
