#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "leak_check.h"

TestSuite(ctl, .fini = test_leak_check);

static size_t
frame(uint8_t *buf, const char *body)
{
	uint32_t n = htonl((uint32_t)strlen(body));

	memcpy(buf, &n, 4);
	memcpy(buf + 4, body, strlen(body));
	return 4 + strlen(body);
}

Test(ctl, frame_round_trip)
{
	json_t *msg = json_pack("{s:i, s:s}", "v", 1, "cmd", "display");
	uint8_t *buf;
	size_t len, blen;
	const uint8_t *body;

	cr_assert(eq(int, ctl_frame_encode(msg, &buf, &len), 0));
	cr_assert(eq(int, ctl_frame_decode(buf, len, &body, &blen), (int)len));
	cr_assert(eq(u64, blen, len - 4));
	/* Every strict prefix needs more bytes. */
	for (size_t i = 0; i < len; i++)
		cr_assert(eq(int, ctl_frame_decode(buf, i, &body, &blen), -EAGAIN));
	free(buf);
	json_decref(msg);
}

Test(ctl, rejects_zero_and_oversized_lengths)
{
	uint8_t buf[8] = {0};
	const uint8_t *body;
	size_t blen;
	uint32_t big = htonl(CTL_MAX_MSG + 1);

	cr_assert(eq(int, ctl_frame_decode(buf, 8, &body, &blen), -EPROTO));
	memcpy(buf, &big, 4);
	cr_assert(eq(int, ctl_frame_decode(buf, 8, &body, &blen), -EPROTO));
}

Test(ctl, request_parse_checks_version_and_shape)
{
	static const char *const bad[] = {
		"[1,2]", "{\"v\":1}", "{\"cmd\":\"x\"}", "{\"v\":2,\"cmd\":\"x\"}",
		"{\"v\":\"1\",\"cmd\":\"x\"}", "{\"v\":1,\"cmd\":7}", "not json",
		"{\"v\":1,\"cmd\":\"a\",\"cmd\":\"b\"}",
	};
	uint8_t buf[256];
	char err[128];
	const char *cmd;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = frame(buf, bad[i]);

		cr_assert(eq(ptr, ctl_request_parse(buf + 4, n - 4, &cmd, err, sizeof(err)), NULL),
			  "%s", bad[i]);
		cr_assert(gt(u64, strlen(err), 0));
	}
	{
		size_t n = frame(buf, "{\"v\":1,\"cmd\":\"status\"}");
		json_t *req = ctl_request_parse(buf + 4, n - 4, &cmd, err, sizeof(err));

		cr_assert(ne(ptr, req, NULL));
		cr_assert_str_eq(cmd, "status");
		json_decref(req);
	}
}
