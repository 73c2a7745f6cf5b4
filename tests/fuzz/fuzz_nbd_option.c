/*
 * libFuzzer target: the NBD handshake parsers (client flags, option headers,
 * NBD_OPT_EXPORT_NAME and NBD_OPT_INFO/GO payloads) and the option reply
 * encoders fed with what they parsed.
 *
 * Input: the client's side of a handshake as it would arrive on the socket:
 * 4 bytes of client flags, then options (16-byte header + data). The harness
 * walks them as the server does; any crash, sanitizer report or trap is a
 * bug in nbd_proto.c.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nbd/nbd_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* Reply buffer as large as the biggest reply built from a parsed name. */
static uint8_t reply[sizeof(struct nbd_option_reply_hdr) + 4 + NBD_MAX_STRING];
static struct nbd_opt_go go;
static char name[NBD_MAX_STRING + 1];

static void
check_name_replies(uint32_t option, const char *s, size_t len)
{
	struct nbd_option_reply rep;
	int n;

	n = nbd_encode_rep_server(reply, sizeof(reply), option, s, len);
	FUZZ_CHECK(n == (int)(20 + 4 + len));
	FUZZ_CHECK(nbd_parse_option_reply(reply, (size_t)n, &rep) == 20);
	FUZZ_CHECK(rep.reply == NBD_REP_SERVER && rep.len == 4 + len);
	FUZZ_CHECK(!memcmp(reply + 24, s, len));
	n = nbd_encode_rep_info_string(reply, sizeof(reply), option, NBD_INFO_NAME, s, len);
	FUZZ_CHECK(n == (int)(20 + 2 + len));
	/* One byte short never overflows. */
	FUZZ_CHECK(nbd_encode_rep_server(reply, (size_t)(20 + 4 + len - 1), option, s, len) ==
	           -ENOBUFS);
}

static void
handle_option(const struct nbd_option *opt, const uint8_t *payload, size_t len)
{
	int r;

	switch (opt->option) {
	case NBD_OPT_EXPORT_NAME:
		r = nbd_parse_opt_export_name(payload, len, name);
		FUZZ_CHECK(r == (int)len || r == -EPROTO || r == -E2BIG);
		if (r >= 0) {
			FUZZ_CHECK(strlen(name) == len);
			check_name_replies(opt->option, name, len);
		}
		break;
	default:
		/* Any option's data is tried as INFO/GO: it is the richest parser. */
		r = nbd_parse_opt_go(payload, len, &go);
		FUZZ_CHECK(r == (int)len || r == -EPROTO || r == -E2BIG);
		if (r >= 0) {
			FUZZ_CHECK(go.name_len <= NBD_MAX_STRING);
			FUZZ_CHECK(strlen(go.name) == go.name_len);
			FUZZ_CHECK(len == 4u + go.name_len + 2u + 2u * go.ninfo);
			FUZZ_CHECK((go.info_req & ~0xfu) == 0);
			check_name_replies(opt->option, go.name, go.name_len);
		}
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint16_t gflags = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
	uint32_t cflags;
	size_t pos = 0;
	int r;

	r = nbd_parse_client_flags(data, size, gflags, &cflags);
	if (r == -EAGAIN)
		return 0;
	FUZZ_CHECK(r == 4 || r == -EPROTO);
	if (r > 0)
		FUZZ_CHECK((cflags & ~3u) == 0);
	/* The server would hang up on bad flags; go on to reach the options. */
	pos = 4;
	while (pos < size) {
		struct nbd_option opt;
		size_t len;

		r = nbd_parse_option_hdr(data + pos, size - pos, &opt);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			FUZZ_CHECK(r == -EPROTO);
			pos++;
			continue;
		}
		FUZZ_CHECK(r == (int)sizeof(struct nbd_option_hdr));
		pos += (size_t)r;
		/* A truncated last option is parsed as far as it goes. */
		len = opt.len < size - pos ? opt.len : size - pos;
		handle_option(&opt, data + pos, len);
		pos += len;
	}
	return 0;
}
