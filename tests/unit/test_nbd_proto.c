/* Unit tests of the NBD codec (src/nbd/nbd_proto.c): every parser with valid,
 * short and malformed input, request validation, error mapping, encoders. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "leak_check.h"
#include "nbd/nbd_proto.h"

static void
suite_fini(void)
{
	test_leak_check();
}

TestSuite(nbd_proto, .fini = suite_fini);

/* Big-endian writers for hand-built messages. */
static size_t
put16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, 2);
	return 2;
}

static size_t
put32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
	return 4;
}

static size_t
put64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
	return 8;
}

static uint16_t
get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return be16toh(v);
}

static uint32_t
get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return be32toh(v);
}

static uint64_t
get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return be64toh(v);
}

/* GO/INFO payload: name, then n information requests. */
static size_t
build_go(uint8_t *buf, const char *name, size_t name_len, const uint16_t *info, unsigned n)
{
	size_t pos = put32(buf, (uint32_t)name_len);

	memcpy(buf + pos, name, name_len);
	pos += name_len;
	pos += put16(buf + pos, (uint16_t)n);
	for (unsigned i = 0; i < n; i++)
		pos += put16(buf + pos, info[i]);
	return pos;
}

/* ---- Handshake ----------------------------------------------------------- */

Test(nbd_proto, handshake_bytes)
{
	struct nbd_handshake_hdr w;
	const uint8_t *p = (const uint8_t *)&w;

	nbd_encode_handshake(&w, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	cr_assert(eq(mem, ((struct cr_mem){p, 8}), ((struct cr_mem){"NBDMAGIC", 8})));
	cr_assert(eq(mem, ((struct cr_mem){p + 8, 8}), ((struct cr_mem){"IHAVEOPT", 8})));
	cr_assert(eq(u16, get16(p + 16), 3));
}

Test(nbd_proto, client_flags_valid)
{
	const uint16_t gflags = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
	uint8_t buf[4];
	uint32_t flags = 0xdead;

	for (uint32_t f = 0; f < 4; f++) {
		put32(buf, f);
		cr_assert(eq(int, nbd_parse_client_flags(buf, 4, gflags, &flags), 4));
		cr_assert(eq(u32, flags, f));
	}
}

Test(nbd_proto, client_flags_short)
{
	uint8_t buf[4] = {0};
	uint32_t flags = 77;

	for (size_t len = 0; len < 4; len++)
		cr_assert(eq(int, nbd_parse_client_flags(buf, len, 3, &flags), -EAGAIN));
	cr_assert(eq(u32, flags, 77));
}

Test(nbd_proto, client_flags_unknown_bit)
{
	uint8_t buf[4];
	uint32_t flags = 77;

	put32(buf, 1u << 2);
	cr_assert(eq(int, nbd_parse_client_flags(buf, 4, 3, &flags), -EPROTO));
	put32(buf, 0x80000001u);
	cr_assert(eq(int, nbd_parse_client_flags(buf, 4, 3, &flags), -EPROTO));
	cr_assert(eq(u32, flags, 77));
}

Test(nbd_proto, client_flags_not_offered)
{
	uint8_t buf[4];
	uint32_t flags;

	/* NO_ZEROES answered although the server didn't offer it. */
	put32(buf, NBD_FLAG_C_NO_ZEROES);
	cr_assert(
	    eq(int, nbd_parse_client_flags(buf, 4, NBD_FLAG_FIXED_NEWSTYLE, &flags), -EPROTO));
}

Test(nbd_proto, option_hdr_valid)
{
	struct nbd_option_hdr w;
	struct nbd_option opt;

	nbd_encode_option_hdr(&w, NBD_OPT_GO, 0xffffffffu);
	cr_assert(eq(int, nbd_parse_option_hdr(&w, sizeof(w) + 5, &opt), 16));
	cr_assert(eq(u32, opt.option, NBD_OPT_GO));
	/* Not bounded by the parser: the server decides. */
	cr_assert(eq(u32, opt.len, 0xffffffffu));
}

Test(nbd_proto, option_hdr_short)
{
	struct nbd_option_hdr w;
	struct nbd_option opt = {.option = 9};

	nbd_encode_option_hdr(&w, NBD_OPT_LIST, 0);
	for (size_t len = 0; len < sizeof(w); len++)
		cr_assert(eq(int, nbd_parse_option_hdr(&w, len, &opt), -EAGAIN));
	cr_assert(eq(u32, opt.option, 9));
}

Test(nbd_proto, option_hdr_bad_magic)
{
	struct nbd_option_hdr w;
	struct nbd_option opt = {.option = 9};
	uint8_t *p = (uint8_t *)&w;

	for (size_t i = 0; i < 8; i++) {
		nbd_encode_option_hdr(&w, NBD_OPT_LIST, 0);
		p[i] ^= 0x20;
		cr_assert(eq(int, nbd_parse_option_hdr(&w, sizeof(w), &opt), -EPROTO));
	}
	/* A reply's magic is not an option's. */
	put64(p, NBD_REP_MAGIC);
	cr_assert(eq(int, nbd_parse_option_hdr(&w, sizeof(w), &opt), -EPROTO));
	cr_assert(eq(u32, opt.option, 9));
}

Test(nbd_proto, export_name_valid)
{
	char name[NBD_MAX_STRING + 1];

	cr_assert(eq(int, nbd_parse_opt_export_name("vol1", 4, name), 4));
	cr_assert_str_eq(name, "vol1");
	cr_assert(eq(int, nbd_parse_opt_export_name("", 0, name), 0));
	cr_assert_str_eq(name, "");
}

Test(nbd_proto, export_name_bad)
{
	char name[NBD_MAX_STRING + 1] = "keep";
	char *big = calloc(1, NBD_MAX_STRING + 1);

	cr_assert(not(eq(ptr, big, NULL)));
	cr_assert(eq(int, nbd_parse_opt_export_name("a\0b", 3, name), -EPROTO));
	memset(big, 'x', NBD_MAX_STRING + 1);
	cr_assert(eq(int, nbd_parse_opt_export_name(big, NBD_MAX_STRING + 1, name), -E2BIG));
	cr_assert_str_eq(name, "keep");
	/* Exactly the limit is fine. */
	cr_assert(eq(int, nbd_parse_opt_export_name(big, NBD_MAX_STRING, name), NBD_MAX_STRING));
	cr_assert(eq(sz, strlen(name), NBD_MAX_STRING));
	free(big);
}

/* ---- NBD_OPT_INFO / NBD_OPT_GO payloads ---------------------------------- */

Test(nbd_proto, opt_go_valid)
{
	static struct nbd_opt_go go;
	const uint16_t info[] = {NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, 1000};
	uint8_t buf[64];
	size_t len = build_go(buf, "db1", 3, info, 3);

	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), (int)len));
	cr_assert_str_eq(go.name, "db1");
	cr_assert(eq(u32, go.name_len, 3));
	cr_assert(eq(u16, go.ninfo, 3));
	/* The unknown type 1000 is ignored. */
	cr_assert(eq(u32, go.info_req, (1u << NBD_INFO_BLOCK_SIZE) | (1u << NBD_INFO_NAME)));
}

Test(nbd_proto, opt_go_default_export_no_info)
{
	static struct nbd_opt_go go;
	uint8_t buf[16];
	size_t len = build_go(buf, "", 0, NULL, 0);

	cr_assert(eq(sz, len, 6));
	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), 6));
	cr_assert_str_eq(go.name, "");
	cr_assert(eq(u16, go.ninfo, 0));
	cr_assert(eq(u32, go.info_req, 0));
}

Test(nbd_proto, opt_go_missing_bytes)
{
	static struct nbd_opt_go go = {.name = "keep"};
	const uint16_t info[] = {NBD_INFO_NAME, NBD_INFO_DESCRIPTION};
	uint8_t buf[64];
	size_t len = build_go(buf, "vol", 3, info, 2);

	/* Every truncation is malformed: the length came from the option header. */
	for (size_t l = 0; l < len; l++)
		cr_assert(eq(int, nbd_parse_opt_go(buf, l, &go), -EPROTO), "len %zu", l);
	cr_assert_str_eq(go.name, "keep");
}

Test(nbd_proto, opt_go_trailing_bytes)
{
	static struct nbd_opt_go go;
	const uint16_t info[] = {NBD_INFO_NAME};
	uint8_t buf[64];
	size_t len = build_go(buf, "vol", 3, info, 1);

	buf[len] = 0;
	cr_assert(eq(int, nbd_parse_opt_go(buf, len + 1, &go), -EPROTO));
	buf[len + 1] = 0;
	cr_assert(eq(int, nbd_parse_opt_go(buf, len + 2, &go), -EPROTO));
}

Test(nbd_proto, opt_go_name_past_end)
{
	static struct nbd_opt_go go;
	uint8_t buf[16];
	size_t len = build_go(buf, "ab", 2, NULL, 0);

	put32(buf, 0xffffffffu);
	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), -EPROTO));
	put32(buf, 3);
	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), -EPROTO));
}

Test(nbd_proto, opt_go_count_too_large)
{
	static struct nbd_opt_go go;
	const uint16_t info[] = {NBD_INFO_NAME};
	uint8_t buf[16];
	size_t len = build_go(buf, "v", 1, info, 1);

	put16(buf + 4 + 1, 0xffff);
	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), -EPROTO));
}

Test(nbd_proto, opt_go_nul_in_name)
{
	static struct nbd_opt_go go;
	uint8_t buf[16];
	size_t len = build_go(buf, "a\0b", 3, NULL, 0);

	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), -EPROTO));
}

Test(nbd_proto, opt_go_name_too_long)
{
	static struct nbd_opt_go go;
	size_t name_len = NBD_MAX_STRING + 1;
	uint8_t *buf = malloc(name_len + 6);
	char *name = malloc(name_len);
	size_t len;

	cr_assert(not(eq(ptr, buf, NULL)));
	cr_assert(not(eq(ptr, name, NULL)));
	memset(name, 'n', name_len);
	len = build_go(buf, name, name_len, NULL, 0);
	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), -E2BIG));
	len = build_go(buf, name, name_len - 1, NULL, 0);
	cr_assert(eq(int, nbd_parse_opt_go(buf, len, &go), (int)len));
	cr_assert(eq(sz, strlen(go.name), NBD_MAX_STRING));
	free(buf);
	free(name);
}

/* ---- Option replies ------------------------------------------------------ */

Test(nbd_proto, opt_reply_round_trip)
{
	uint8_t buf[64];
	struct nbd_option_reply rep;
	int n;

	n = nbd_encode_opt_reply(buf, sizeof(buf), NBD_OPT_LIST, NBD_REP_ERR_UNSUP, "hi", 2);
	cr_assert(eq(int, n, 22));
	cr_assert(eq(int, nbd_parse_option_reply(buf, (size_t)n, &rep), 20));
	cr_assert(eq(u32, rep.option, NBD_OPT_LIST));
	cr_assert(eq(u32, rep.reply, 0x80000001u));
	cr_assert(eq(u32, rep.len, 2));
	cr_assert(eq(u64, get64(buf), 0x0003e889045565a9ull));
	cr_assert(eq(mem, ((struct cr_mem){buf + 20, 2}), ((struct cr_mem){"hi", 2})));
}

Test(nbd_proto, opt_reply_no_room)
{
	uint8_t buf[64];

	cr_assert(eq(int, nbd_encode_opt_reply(buf, 19, 1, NBD_REP_ACK, NULL, 0), -ENOBUFS));
	cr_assert(eq(int, nbd_encode_opt_reply(buf, 21, 1, NBD_REP_ACK, "ab", 2), -ENOBUFS));
	cr_assert(eq(int, nbd_encode_rep_server(buf, 20 + 4 + 2, 3, "abc", 3), -ENOBUFS));
	cr_assert(eq(int, nbd_encode_rep_info_export(buf, 31, 7, 1, 1), -ENOBUFS));
	cr_assert(eq(int, nbd_encode_rep_info_block_size(buf, 33, 7, 1, 2, 3), -ENOBUFS));
	cr_assert(
	    eq(int, nbd_encode_rep_info_string(buf, 23, 7, NBD_INFO_NAME, "ab", 2), -ENOBUFS));
}

Test(nbd_proto, opt_reply_short_and_bad_magic)
{
	uint8_t buf[32];
	struct nbd_option_reply rep;

	nbd_encode_opt_reply(buf, sizeof(buf), 1, NBD_REP_ACK, NULL, 0);
	for (size_t len = 0; len < 20; len++)
		cr_assert(eq(int, nbd_parse_option_reply(buf, len, &rep), -EAGAIN));
	buf[7] ^= 1;
	cr_assert(eq(int, nbd_parse_option_reply(buf, 20, &rep), -EPROTO));
}

Test(nbd_proto, rep_server_layout)
{
	uint8_t buf[64];
	struct nbd_option_reply rep;
	int n = nbd_encode_rep_server(buf, sizeof(buf), NBD_OPT_LIST, "vol9", 4);

	cr_assert(eq(int, n, 20 + 4 + 4));
	nbd_parse_option_reply(buf, (size_t)n, &rep);
	cr_assert(eq(u32, rep.reply, NBD_REP_SERVER));
	cr_assert(eq(u32, rep.len, 8));
	cr_assert(eq(u32, get32(buf + 20), 4));
	cr_assert(eq(mem, ((struct cr_mem){buf + 24, 4}), ((struct cr_mem){"vol9", 4})));
}

Test(nbd_proto, rep_info_export_layout)
{
	uint8_t buf[64];
	struct nbd_option_reply rep;
	int n = nbd_encode_rep_info_export(buf, sizeof(buf), NBD_OPT_GO, 1ull << 40, 0x1234);

	cr_assert(eq(int, n, 20 + 12));
	nbd_parse_option_reply(buf, (size_t)n, &rep);
	cr_assert(eq(u32, rep.option, NBD_OPT_GO));
	cr_assert(eq(u32, rep.reply, NBD_REP_INFO));
	cr_assert(eq(u32, rep.len, 12));
	cr_assert(eq(u16, get16(buf + 20), NBD_INFO_EXPORT));
	cr_assert(eq(u64, get64(buf + 22), 1ull << 40));
	cr_assert(eq(u16, get16(buf + 30), 0x1234));
}

Test(nbd_proto, rep_info_block_size_layout)
{
	uint8_t buf[64];
	struct nbd_option_reply rep;
	int n = nbd_encode_rep_info_block_size(buf, sizeof(buf), NBD_OPT_INFO, NBD_MIN_BLOCK_SIZE,
	                                       NBD_PREF_BLOCK_SIZE, NBD_MAX_BLOCK_SIZE);

	cr_assert(eq(int, n, 20 + 14));
	nbd_parse_option_reply(buf, (size_t)n, &rep);
	cr_assert(eq(u32, rep.len, 14));
	cr_assert(eq(u16, get16(buf + 20), NBD_INFO_BLOCK_SIZE));
	cr_assert(eq(u32, get32(buf + 22), 1));
	cr_assert(eq(u32, get32(buf + 26), 4096));
	cr_assert(eq(u32, get32(buf + 30), 32u << 20));
}

Test(nbd_proto, rep_info_string_layout)
{
	uint8_t buf[64];
	struct nbd_option_reply rep;
	int n = nbd_encode_rep_info_string(buf, sizeof(buf), NBD_OPT_GO, NBD_INFO_DESCRIPTION,
	                                   "desc", 4);

	cr_assert(eq(int, n, 20 + 2 + 4));
	nbd_parse_option_reply(buf, (size_t)n, &rep);
	cr_assert(eq(u32, rep.len, 6));
	cr_assert(eq(u16, get16(buf + 20), NBD_INFO_DESCRIPTION));
	cr_assert(eq(mem, ((struct cr_mem){buf + 22, 4}), ((struct cr_mem){"desc", 4})));
}

Test(nbd_proto, export_name_reply_layout)
{
	struct nbd_export_name_reply_wire w;
	const uint8_t *p = (const uint8_t *)&w;
	uint8_t zero[NBD_EXPORT_NAME_ZEROES] = {0};

	memset(&w, 0xff, sizeof(w));
	nbd_encode_export_name_reply(&w, 4096, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
	cr_assert(eq(u64, get64(p), 4096));
	cr_assert(eq(u16, get16(p + 8), 3));
	cr_assert(eq(sz, NBD_EXPORT_NAME_REPLY_SHORT, 10));
	cr_assert(eq(mem, ((struct cr_mem){p + 10, sizeof(zero)}),
	             ((struct cr_mem){zero, sizeof(zero)})));
}

/* ---- Transmission -------------------------------------------------------- */

Test(nbd_proto, export_flags)
{
	uint16_t rw = nbd_export_flags(false), ro = nbd_export_flags(true);
	const uint16_t want = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	                      NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
	                      NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_SEND_CACHE |
	                      NBD_FLAG_CAN_MULTI_CONN;

	cr_assert(eq(u16, rw, want));
	cr_assert(eq(u16, ro, want | NBD_FLAG_READ_ONLY));
	/* Values straight from the spec. */
	cr_assert(eq(u16, want, 0x1 | 0x4 | 0x8 | 0x20 | 0x40 | 0x800 | 0x400 | 0x100));
}

Test(nbd_proto, request_round_trip)
{
	const struct nbd_request in = {
	    .flags = NBD_CMD_FLAG_FUA,
	    .type = NBD_CMD_WRITE,
	    .cookie = 0x0123456789abcdefull,
	    .offset = 0xfedcba9876543210ull,
	    .len = 0x01020304,
	};
	struct nbd_request_hdr w;
	struct nbd_request out;
	const uint8_t *p = (const uint8_t *)&w;

	nbd_encode_request(&w, &in);
	cr_assert(eq(u32, get32(p), 0x25609513u));
	cr_assert(eq(u16, get16(p + 4), NBD_CMD_FLAG_FUA));
	cr_assert(eq(u16, get16(p + 6), NBD_CMD_WRITE));
	cr_assert(eq(u64, get64(p + 8), in.cookie));
	cr_assert(eq(u64, get64(p + 16), in.offset));
	cr_assert(eq(u32, get32(p + 24), in.len));
	cr_assert(eq(int, nbd_parse_request(&w, sizeof(w), &out), 28));
	cr_assert(eq(u16, out.flags, in.flags));
	cr_assert(eq(u16, out.type, in.type));
	cr_assert(eq(u64, out.cookie, in.cookie));
	cr_assert(eq(u64, out.offset, in.offset));
	cr_assert(eq(u32, out.len, in.len));
	cr_assert(eq(u32, nbd_request_payload_len(&out), in.len));
}

Test(nbd_proto, request_batch)
{
	/* Several requests back to back parse one after another. */
	uint8_t buf[3 * 28 + 5];
	struct nbd_request rq = {.type = NBD_CMD_READ, .len = 512};
	struct nbd_request out;
	size_t pos = 0;

	for (int i = 0; i < 3; i++) {
		rq.cookie = (uint64_t)i;
		nbd_encode_request((void *)(buf + (size_t)i * 28), &rq);
	}
	for (int i = 0; i < 3; i++) {
		int r = nbd_parse_request(buf + pos, sizeof(buf) - pos, &out);

		cr_assert(eq(int, r, 28));
		cr_assert(eq(u64, out.cookie, (uint64_t)i));
		pos += (size_t)r;
	}
	cr_assert(eq(int, nbd_parse_request(buf + pos, sizeof(buf) - pos, &out), -EAGAIN));
}

Test(nbd_proto, request_short)
{
	struct nbd_request rq = {.type = NBD_CMD_READ};
	struct nbd_request_hdr w;
	struct nbd_request out = {.cookie = 5};

	nbd_encode_request(&w, &rq);
	for (size_t len = 0; len < sizeof(w); len++)
		cr_assert(eq(int, nbd_parse_request(&w, len, &out), -EAGAIN));
	cr_assert(eq(u64, out.cookie, 5));
}

Test(nbd_proto, request_bad_magic)
{
	struct nbd_request rq = {.type = NBD_CMD_READ};
	struct nbd_request_hdr w;
	struct nbd_request out = {.cookie = 5};

	for (int i = 0; i < 4; i++) {
		nbd_encode_request(&w, &rq);
		((uint8_t *)&w)[i] ^= 0x80;
		cr_assert(eq(int, nbd_parse_request(&w, sizeof(w), &out), -EPROTO));
	}
	/* The historic magic is not accepted either. */
	put32((uint8_t *)&w, 0x12560953u);
	cr_assert(eq(int, nbd_parse_request(&w, sizeof(w), &out), -EPROTO));
	cr_assert(eq(u64, out.cookie, 5));
}

Test(nbd_proto, payload_len_only_for_write)
{
	struct nbd_request rq = {.len = 4096};

	for (uint16_t t = 0; t < 16; t++) {
		rq.type = t;
		cr_assert(eq(u32, nbd_request_payload_len(&rq), t == NBD_CMD_WRITE ? 4096 : 0));
	}
}

struct check_case {
	uint16_t type;
	uint16_t flags;
	uint64_t offset;
	uint32_t len;
	bool read_only;
	int want;
};

#define SZ (1ull << 30) /* export size of the table below */
#define MAXB NBD_MAX_BLOCK_SIZE
#define FUA NBD_CMD_FLAG_FUA

static const struct check_case check_cases[] = {
    /* Plain valid requests. */
    {NBD_CMD_READ, 0, 0, 4096, false, 0},
    {NBD_CMD_READ, 0, SZ - 1, 1, false, 0},
    {NBD_CMD_WRITE, FUA, SZ - 4096, 4096, false, 0},
    {NBD_CMD_FLUSH, 0, 0, 0, false, 0},
    {NBD_CMD_FLUSH, FUA, 0, 0, false, 0},
    {NBD_CMD_TRIM, FUA, 0, 1u << 20, false, 0},
    {NBD_CMD_CACHE, 0, 0, MAXB, false, 0},
    {NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | FUA, 0, MAXB, false, 0},
    {NBD_CMD_DISC, 0, 0, 0, false, 0},
    /* Read-only export: writes of any kind are EPERM, reads pass. */
    {NBD_CMD_READ, 0, 0, 512, true, 0},
    {NBD_CMD_CACHE, 0, 0, 512, true, 0},
    {NBD_CMD_FLUSH, 0, 0, 0, true, 0},
    {NBD_CMD_WRITE, 0, 0, 512, true, -EPERM},
    {NBD_CMD_TRIM, 0, 0, 512, true, -EPERM},
    {NBD_CMD_WRITE_ZEROES, 0, 0, 512, true, -EPERM},
    /* EPERM wins over out of range for writes on a read-only export. */
    {NBD_CMD_WRITE, 0, SZ, 512, true, -EPERM},
    /* Zero length is valid (no I/O needed), even at the very end. */
    {NBD_CMD_READ, 0, SZ, 0, false, 0},
    {NBD_CMD_WRITE, 0, 0, 0, false, 0},
    {NBD_CMD_TRIM, 0, 17, 0, false, 0},
    /* Out of range: EINVAL for reads/trims/cache, ENOSPC for writes. */
    {NBD_CMD_READ, 0, SZ - 511, 512, false, -EINVAL},
    {NBD_CMD_READ, 0, SZ + 1, 0, false, -EINVAL},
    {NBD_CMD_READ, 0, UINT64_MAX, 1, false, -EINVAL},
    {NBD_CMD_READ, 0, UINT64_MAX - 10, 4096, false, -EINVAL}, /* wraps */
    {NBD_CMD_CACHE, 0, SZ, 1, false, -EINVAL},
    {NBD_CMD_TRIM, 0, SZ - 1, 2, false, -EINVAL},
    {NBD_CMD_WRITE, 0, SZ - 511, 512, false, -ENOSPC},
    {NBD_CMD_WRITE, 0, UINT64_MAX, 512, false, -ENOSPC},
    {NBD_CMD_WRITE_ZEROES, 0, SZ, 512, false, -ENOSPC},
    /* Length bounds: 32 MiB for READ/WRITE/CACHE/WRITE_ZEROES. */
    {NBD_CMD_READ, 0, 0, MAXB + 1, false, -EINVAL},
    {NBD_CMD_WRITE, 0, 0, MAXB + 1, false, -EINVAL},
    {NBD_CMD_WRITE, 0, 0, UINT32_MAX, false, -EINVAL},
    {NBD_CMD_CACHE, 0, 0, MAXB + 1, false, -EINVAL},
    {NBD_CMD_WRITE_ZEROES, 0, 0, MAXB + 1, false, -EINVAL},
    /* ... but not for TRIM or a fast zero (the spec exempts them). */
    {NBD_CMD_TRIM, 0, 0, MAXB + 1, false, 0},
    {NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 0, 512u << 20, false, 0},
    /* Flags not valid for the command. */
    {NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE, 0, 512, false, -EINVAL},
    {NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, false, -EINVAL}, /* SEND_DF not offered */
    {NBD_CMD_WRITE, NBD_CMD_FLAG_FAST_ZERO, 0, 512, false, -EINVAL},
    {NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE, 0, 512, false, -EINVAL},
    {NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_REQ_ONE, 0, 512, false, -EINVAL},
    {NBD_CMD_CACHE, NBD_CMD_FLAG_DF, 0, 512, false, -EINVAL},
    {NBD_CMD_READ, 1u << 5, 0, 512, false, -EINVAL},
    {NBD_CMD_READ, 0x8000, 0, 512, false, -EINVAL},
    /* Bad flags are EINVAL even on a read-only export. */
    {NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512, true, -EINVAL},
    /* FLUSH must have zero offset and length. */
    {NBD_CMD_FLUSH, 0, 4096, 0, false, -EINVAL},
    {NBD_CMD_FLUSH, 0, 0, 4096, false, -EINVAL},
    {NBD_CMD_FLUSH, NBD_CMD_FLAG_NO_HOLE, 0, 0, false, -EINVAL},
    /* Unknown or unsupported commands. */
    {NBD_CMD_BLOCK_STATUS, 0, 0, 512, false, -EINVAL},
    {NBD_CMD_RESIZE, 0, 0, 0, false, -EINVAL},
    {9, 0, 0, 512, false, -EINVAL},
    {0xffff, 0, 0, 0, false, -EINVAL},
};

Test(nbd_proto, request_check_table)
{
	for (size_t i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
		const struct check_case *tc = &check_cases[i];
		struct nbd_request rq = {
		    .type = tc->type,
		    .flags = tc->flags,
		    .offset = tc->offset,
		    .len = tc->len,
		};

		cr_assert(eq(int, nbd_request_check(&rq, SZ, nbd_export_flags(tc->read_only), 0),
		             tc->want),
		          "case %zu: %s flags 0x%x offset %llu len %u ro %d", i,
		          nbd_cmd_name(tc->type), tc->flags, (unsigned long long)tc->offset,
		          tc->len, tc->read_only);
	}
}

Test(nbd_proto, request_check_unadvertised)
{
	/* A command or flag whose transmission flag was not sent is EINVAL. */
	struct nbd_request rq = {.type = NBD_CMD_FLUSH};

	cr_assert(eq(int, nbd_request_check(&rq, SZ, NBD_FLAG_HAS_FLAGS, 0), -EINVAL));
	rq = (struct nbd_request){.type = NBD_CMD_TRIM, .len = 512};
	cr_assert(eq(int, nbd_request_check(&rq, SZ, NBD_FLAG_HAS_FLAGS, 0), -EINVAL));
	rq = (struct nbd_request){.type = NBD_CMD_WRITE_ZEROES, .len = 512};
	cr_assert(eq(int, nbd_request_check(&rq, SZ, NBD_FLAG_HAS_FLAGS, 0), -EINVAL));
	rq = (struct nbd_request){.type = NBD_CMD_WRITE, .len = 512, .flags = NBD_CMD_FLAG_FUA};
	cr_assert(eq(int, nbd_request_check(&rq, SZ, NBD_FLAG_HAS_FLAGS, 0), -EINVAL));
	rq = (struct nbd_request){
	    .type = NBD_CMD_WRITE_ZEROES, .len = 512, .flags = NBD_CMD_FLAG_FAST_ZERO};
	cr_assert(eq(int,
	             nbd_request_check(&rq, SZ, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_WRITE_ZEROES, 0),
	             -EINVAL));
	/* DF is valid once advertised. */
	rq = (struct nbd_request){.type = NBD_CMD_READ, .len = 512, .flags = NBD_CMD_FLAG_DF};
	cr_assert(eq(int, nbd_request_check(&rq, SZ, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_DF, 0), 0));
	/* CACHE is accepted unadvertised (clients that do this exist). */
	rq = (struct nbd_request){.type = NBD_CMD_CACHE, .len = 512};
	cr_assert(eq(int, nbd_request_check(&rq, SZ, NBD_FLAG_HAS_FLAGS, 0), 0));
}

Test(nbd_proto, request_check_smaller_max_block)
{
	/* A group with a small journal advertises a smaller maximum. */
	const uint16_t tf = nbd_export_flags(false);
	struct nbd_request rq = {.type = NBD_CMD_WRITE, .len = 8u << 20};

	cr_assert(eq(int, nbd_request_check(&rq, SZ, tf, 8u << 20), 0));
	rq.len = (8u << 20) + 1;
	cr_assert(eq(int, nbd_request_check(&rq, SZ, tf, 8u << 20), -EINVAL));
	rq.type = NBD_CMD_READ;
	cr_assert(eq(int, nbd_request_check(&rq, SZ, tf, 8u << 20), -EINVAL));
	rq.type = NBD_CMD_WRITE_ZEROES;
	cr_assert(eq(int, nbd_request_check(&rq, SZ, tf, 8u << 20), -EINVAL));
	/* Trims and fast zeroes stay exempt. */
	rq.type = NBD_CMD_TRIM;
	cr_assert(eq(int, nbd_request_check(&rq, SZ, tf, 8u << 20), 0));
	rq.type = NBD_CMD_WRITE_ZEROES;
	rq.flags = NBD_CMD_FLAG_FAST_ZERO;
	cr_assert(eq(int, nbd_request_check(&rq, SZ, tf, 8u << 20), 0));
}

Test(nbd_proto, request_check_empty_export)
{
	struct nbd_request rq = {.type = NBD_CMD_READ, .len = 1};

	cr_assert(eq(int, nbd_request_check(&rq, 0, nbd_export_flags(false), 0), -EINVAL));
	rq.len = 0;
	cr_assert(eq(int, nbd_request_check(&rq, 0, nbd_export_flags(false), 0), 0));
}

Test(nbd_proto, errno_mapping)
{
	static const struct {
		int err;
		uint32_t want;
	} map[] = {
	    {0, 0},
	    {-EPERM, NBD_EPERM},
	    {-EROFS, NBD_EPERM},
	    {-EIO, NBD_EIO},
	    {-ENOMEM, NBD_ENOMEM},
	    {-EINVAL, NBD_EINVAL},
	    {-ENOSPC, NBD_ENOSPC},
	    {-EDQUOT, NBD_ENOSPC},
	    {-EFBIG, NBD_ENOSPC},
	    {-EOVERFLOW, NBD_EOVERFLOW},
	    {-ENOTSUP, NBD_ENOTSUP},
	    {-EOPNOTSUPP, NBD_ENOTSUP},
	    {-ESHUTDOWN, NBD_ESHUTDOWN},
	    {-EBADMSG, NBD_EIO},
	    {-ENOENT, NBD_EIO},
	    {-EPROTO, NBD_EIO},
	    {-ESTALE, NBD_EIO},
	    {-99999, NBD_EIO},
	    {EINVAL, NBD_EINVAL}, /* a positive errno works too */
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		cr_assert(eq(u32, nbd_errno_to_wire(map[i].err), map[i].want), "errno %d",
		          map[i].err);
	/* The wire values are the spec's, not the host's by accident. */
	cr_assert(eq(u32, NBD_EPERM, 1));
	cr_assert(eq(u32, NBD_EIO, 5));
	cr_assert(eq(u32, NBD_ENOMEM, 12));
	cr_assert(eq(u32, NBD_EINVAL, 22));
	cr_assert(eq(u32, NBD_ENOSPC, 28));
	cr_assert(eq(u32, NBD_EOVERFLOW, 75));
	cr_assert(eq(u32, NBD_ENOTSUP, 95));
	cr_assert(eq(u32, NBD_ESHUTDOWN, 108));
}

Test(nbd_proto, simple_reply_round_trip)
{
	struct nbd_simple_reply_hdr w;
	struct nbd_simple_reply rep;

	nbd_encode_simple_reply(&w, NBD_ENOSPC, 0xa1b2c3d4e5f60718ull);
	cr_assert(eq(u32, get32((const uint8_t *)&w), 0x67446698u));
	cr_assert(eq(int, nbd_parse_simple_reply(&w, sizeof(w), &rep), 16));
	cr_assert(eq(u32, rep.error, NBD_ENOSPC));
	cr_assert(eq(u64, rep.cookie, 0xa1b2c3d4e5f60718ull));
	cr_assert(eq(int, nbd_parse_simple_reply(&w, 15, &rep), -EAGAIN));
	((uint8_t *)&w)[0] ^= 1;
	cr_assert(eq(int, nbd_parse_simple_reply(&w, sizeof(w), &rep), -EPROTO));
}

Test(nbd_proto, structured_reply_round_trip)
{
	struct nbd_structured_reply_hdr w;
	struct nbd_structured_reply rep;

	nbd_encode_structured_reply(&w, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 42, 0);
	cr_assert(eq(u32, get32((const uint8_t *)&w), 0x668e33efu));
	cr_assert(eq(int, nbd_parse_structured_reply(&w, sizeof(w), &rep), 20));
	cr_assert(eq(u16, rep.flags, NBD_REPLY_FLAG_DONE));
	cr_assert(eq(u16, rep.type, NBD_REPLY_TYPE_NONE));
	cr_assert(eq(u64, rep.cookie, 42));
	cr_assert(eq(u32, rep.len, 0));
	cr_assert(eq(int, nbd_parse_structured_reply(&w, 19, &rep), -EAGAIN));
	((uint8_t *)&w)[3] ^= 1;
	cr_assert(eq(int, nbd_parse_structured_reply(&w, sizeof(w), &rep), -EPROTO));
}

Test(nbd_proto, structured_read_layout)
{
	struct nbd_structured_read_hdr w;
	struct nbd_structured_reply rep;
	const uint8_t *p = (const uint8_t *)&w;

	nbd_encode_structured_read(&w, 7, 1ull << 33, 65536);
	cr_assert(eq(int, nbd_parse_structured_reply(&w, sizeof(w), &rep), 20));
	cr_assert(eq(u16, rep.flags, NBD_REPLY_FLAG_DONE));
	cr_assert(eq(u16, rep.type, NBD_REPLY_TYPE_OFFSET_DATA));
	cr_assert(eq(u64, rep.cookie, 7));
	/* The chunk length covers the offset and the data. */
	cr_assert(eq(u32, rep.len, 8 + 65536));
	cr_assert(eq(u64, get64(p + 20), 1ull << 33));
}

Test(nbd_proto, structured_error_layout)
{
	struct nbd_structured_error_hdr w;
	struct nbd_structured_reply rep;
	const uint8_t *p = (const uint8_t *)&w;

	nbd_encode_structured_error(&w, 99, NBD_EPERM);
	cr_assert(eq(int, nbd_parse_structured_reply(&w, sizeof(w), &rep), 20));
	cr_assert(eq(u16, rep.flags, NBD_REPLY_FLAG_DONE));
	cr_assert(eq(u16, rep.type, 0x8001));
	cr_assert(eq(u64, rep.cookie, 99));
	cr_assert(eq(u32, rep.len, 6));
	cr_assert(eq(u32, get32(p + 20), NBD_EPERM));
	cr_assert(eq(u16, get16(p + 24), 0));
	/* An error chunk must carry a nonzero error. */
	nbd_encode_structured_error(&w, 99, 0);
	cr_assert(eq(u32, get32(p + 20), NBD_EIO));
}

Test(nbd_proto, names)
{
	cr_assert_str_eq(nbd_opt_name(NBD_OPT_GO), "NBD_OPT_GO");
	cr_assert_str_eq(nbd_opt_name(NBD_OPT_EXTENDED_HEADERS), "NBD_OPT_EXTENDED_HEADERS");
	cr_assert_str_eq(nbd_opt_name(12345), "unknown");
	cr_assert_str_eq(nbd_cmd_name(NBD_CMD_WRITE_ZEROES), "WRITE_ZEROES");
	cr_assert_str_eq(nbd_cmd_name(0xffff), "unknown");
}

Test(nbd_proto, constants_match_spec)
{
	cr_assert(eq(u64, NBD_MAGIC, 0x4e42444d41474943ull));
	cr_assert(eq(u64, NBD_OPTS_MAGIC, 0x49484156454F5054ull));
	cr_assert(eq(u64, NBD_REP_MAGIC, 0x3e889045565a9ull));
	cr_assert(eq(u32, NBD_REP_ERR_UNSUP, (1u << 31) + 1));
	cr_assert(eq(u32, NBD_REP_ERR_UNKNOWN, (1u << 31) + 6));
	cr_assert(eq(u32, NBD_REP_ERR_TOO_BIG, (1u << 31) + 9));
	cr_assert(eq(u32, NBD_OPT_LIST_META_CONTEXT, 9));
	cr_assert(eq(u32, NBD_OPT_SET_META_CONTEXT, 10));
	cr_assert(eq(u32, NBD_CMD_WRITE_ZEROES, 6));
	cr_assert(eq(u32, NBD_CMD_FLAG_FAST_ZERO, 1u << 4));
	cr_assert(eq(u32, NBD_FLAG_SEND_CACHE, 1u << 10));
	cr_assert(eq(u32, NBD_FLAG_SEND_FAST_ZERO, 1u << 11));
	cr_assert(eq(u32, NBD_REPLY_TYPE_ERROR, 32769));
}
