/* Unit tests of the replication codec (src/repl/wire_codec.c) and of the
 * link authentication primitives (src/repl/auth.c): round trips of every
 * message, every rejection of a damaged or malformed frame, the record walk
 * over JOURNAL_DATA, and key files. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "leak_check.h"
#include "repl/auth.h"
#include "repl/wire_codec.h"

TestSuite(wire, .fini = test_leak_check);
TestSuite(wire_records, .fini = test_leak_check);
TestSuite(auth, .fini = test_leak_check);

/* ---- Helpers ------------------------------------------------------------- */

static void
put16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static void
put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void
put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint16_t
get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return le16toh(v);
}

static uint32_t
get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

/* Recomputes both checksums of the frame at buf after a test changed it.
 * A JOURNAL_DATA's payload checksum covers its 40-byte fixed part only
 * (wire.h). */
static void
fix_csums(uint8_t *buf)
{
	uint32_t plen = get32(buf + 8);
	uint32_t covered = get16(buf + 4) == WIRE_JOURNAL_DATA && plen > 40 ? 40 : plen;

	put64(buf + 16, plen ? XXH3_64bits(buf + 32, covered) : 0);
	put64(buf + 24, XXH3_64bits(buf, 24));
}

static void
fix_hdr_csum(uint8_t *buf)
{
	put64(buf + 24, XXH3_64bits(buf, 24));
}

/* A frame with arbitrary payload bytes and valid checksums; returns its size. */
static size_t
raw_frame(uint8_t *out, uint16_t type, const void *payload, uint32_t plen)
{
	memset(out, 0, 32);
	put32(out, WIRE_MAGIC);
	put16(out + 4, type);
	put32(out + 8, plen);
	if (plen)
		memcpy(out + 32, payload, plen);
	fix_csums(out);
	return 32 + (size_t)plen;
}

static size_t
encode(const struct wire_msg *m, uint8_t *buf, size_t cap)
{
	ssize_t n = wire_encode(m, buf, cap);

	cr_assert(gt(i64, (int64_t)n, 0), "encode %s: %zd", wire_type_name(m->hdr.type), n);
	cr_assert(eq(u64, (uint64_t)n, wire_encoded_size(m)));
	return (size_t)n;
}

/* Encodes m, checks the header peek and the truncations, decodes into out. */
static void
round_trip(const struct wire_msg *m, struct wire_msg *out)
{
	static uint8_t buf[WIRE_HDR_SIZE + WIRE_MAX_PAYLOAD];
	struct wire_hdr h;
	size_t n = encode(m, buf, sizeof(buf));

	for (size_t i = 0; i < WIRE_HDR_SIZE; i++)
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, i, &h), 0));
	cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, &h), (int64_t)n));
	cr_assert(eq(u32, h.type, m->hdr.type));
	cr_assert(eq(u32, h.flags, 0));
	cr_assert(eq(u32, h.payload_len, (uint32_t)(n - WIRE_HDR_SIZE)));
	/* The header is enough to know the size; the frame isn't whole yet. */
	if (n > WIRE_HDR_SIZE) {
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n - 1, NULL), (int64_t)n));
		cr_assert(eq(int, wire_decode(buf, n - 1, out), -EPROTO));
	}
	cr_assert(eq(int, wire_decode(buf, n, out), 0));
	cr_assert(eq(u32, out->hdr.type, m->hdr.type));
	cr_assert(eq(u32, out->hdr.payload_len, (uint32_t)(n - WIRE_HDR_SIZE)));
}

static struct wire_msg
msg_of(uint16_t type)
{
	struct wire_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = type;
	return m;
}

/* One valid message of each type. */
/* The bits of sample(WIRE_BITMAP): 20 regions, the last byte's top nibble 0. */
static const uint8_t sample_bits[3] = {0xa5, 0x0f, 0x09};

static struct wire_msg
sample(uint16_t type)
{
	static const uint8_t data[64 * 2 + 5] = {1, 2, 3};
	struct wire_msg m = msg_of(type);

	switch (type) {
	case WIRE_HELLO:
		m.u.hello.version = WIRE_VERSION;
		m.u.hello.role = WIRE_ROLE_SECONDARY;
		for (unsigned i = 0; i < WIRE_NONCE_LEN; i++)
			m.u.hello.nonce[i] = (uint8_t)(i * 7 + 1);
		strcpy(m.u.hello.site, "site-b");
		break;
	case WIRE_AUTH:
		for (unsigned i = 0; i < WIRE_MAC_LEN; i++)
			m.u.auth.mac[i] = (uint8_t)(0xa0 + i);
		break;
	case WIRE_ERROR:
		m.u.error.code = ENOSPC;
		strcpy(m.u.error.message, "journal full on 'b'");
		break;
	case WIRE_PAIR_CREATE:
		strcpy(m.u.pair_create.group, "db1");
		m.u.pair_create.pair_id = 0x1122334455667788ull;
		m.u.pair_create.start_seq = 42;
		m.u.pair_create.primary_seed = 0xfeedfacecafebeefull;
		m.u.pair_create.mode = WIRE_MODE_SYNC;
		m.u.pair_create.initial_copy = 1;
		m.u.pair_create.nvolumes = 2;
		strcpy(m.u.pair_create.volumes[0].name, "data");
		m.u.pair_create.volumes[0].size = 1ull << 30;
		strcpy(m.u.pair_create.volumes[1].name, "log");
		m.u.pair_create.volumes[1].size = 4096;
		break;
	case WIRE_PAIR_ATTACH:
		strcpy(m.u.pair_attach.group, "db1");
		m.u.pair_attach.pair_id = 77;
		m.u.pair_attach.primary_seed = 0x0123456789abcdefull;
		m.u.pair_attach.mode = WIRE_MODE_ASYNC;
		break;
	case WIRE_PAIR_OK:
		m.u.pair_ok.received_seq = 100;
		m.u.pair_ok.restored_seq = 90;
		m.u.pair_ok.state = WIRE_STATE_PSUS;
		m.u.pair_ok.gen = 0x0102030405060708ull;
		m.u.pair_ok.synced_gen = 0x0102030405060707ull;
		break;
	case WIRE_READ_JOURNAL:
		m.u.read_journal.req_id = 9;
		m.u.read_journal.received_seq = 100;
		m.u.read_journal.restored_seq = 99;
		m.u.read_journal.max_bytes = 1u << 20;
		break;
	case WIRE_JOURNAL_DATA:
		m.u.journal_data.req_id = 9;
		m.u.journal_data.first_seq = 101;
		m.u.journal_data.last_seq = 102;
		m.u.journal_data.nrecords = 2;
		m.u.journal_data.raw_len = sizeof(data);
		m.u.journal_data.compression = WIRE_COMP_NONE;
		m.u.journal_data.data = data;
		m.u.journal_data.data_len = sizeof(data);
		break;
	case WIRE_STATUS:
		m.u.status.received_seq = 102;
		m.u.status.restored_seq = 101;
		m.u.status.restored_ts_ns = 1700000000123456789ull;
		break;
	case WIRE_PRIMARY_STATUS:
		m.u.primary_status.state = WIRE_STATE_COPY;
		m.u.primary_status.written_seq = 500;
		m.u.primary_status.copy_done_bytes = 1ull << 20;
		m.u.primary_status.copy_total_bytes = 1ull << 30;
		m.u.primary_status.newest_ts_ns = 1700000000000000000ull;
		m.u.primary_status.gen = 12;
		m.u.primary_status.synced_gen = 11;
		m.u.primary_status.start_seq = 42;
		strcpy(m.u.primary_status.primary_addr, "[2001:db8::1]:7788");
		strcpy(m.u.primary_status.reason, "initial copy after resync");
		break;
	case WIRE_PAIR_CMD:
		m.u.pair_cmd.cmd = WIRE_CMD_SUSPEND;
		m.u.pair_cmd.flags = WIRE_CMD_DRAIN;
		m.u.pair_cmd.pair_id = 0x1122334455667788ull;
		m.u.pair_cmd.seq = 4242;
		m.u.pair_cmd.gen = 12;
		m.u.pair_cmd.synced_gen = 11;
		strcpy(m.u.pair_cmd.text, "maintenance window");
		break;
	case WIRE_BITMAP:
		m.u.bitmap.volume = 3;
		m.u.bitmap.flags = 0;
		m.u.bitmap.region_size = 1u << 20;
		m.u.bitmap.first_region = 64;
		m.u.bitmap.nbits = 20;
		m.u.bitmap.bits = sample_bits;
		break;
	default:
		cr_fatal("no sample for type %u", type);
	}
	return m;
}

/* Encodes a sample of type into buf and returns the frame size. */
static size_t
sample_frame(uint16_t type, uint8_t *buf, size_t cap)
{
	struct wire_msg m = sample(type);

	return encode(&m, buf, cap);
}

/* Changes byte off of the payload of the frame in buf and fixes checksums. */
static void
poke(uint8_t *buf, size_t off, uint8_t v)
{
	buf[WIRE_HDR_SIZE + off] = v;
	fix_csums(buf);
}

static int
decode_buf(const uint8_t *buf, size_t len)
{
	struct wire_msg m;

	return wire_decode(buf, len, &m);
}

/* ---- Round trips --------------------------------------------------------- */

Test(wire, round_trips_every_type)
{
	struct wire_msg m, d;

	m = sample(WIRE_HELLO);
	round_trip(&m, &d);
	cr_assert(eq(u32, d.u.hello.version, WIRE_VERSION));
	cr_assert(eq(u32, d.u.hello.role, WIRE_ROLE_SECONDARY));
	cr_assert(eq(int, memcmp(d.u.hello.nonce, m.u.hello.nonce, WIRE_NONCE_LEN), 0));
	cr_assert_str_eq(d.u.hello.site, "site-b");

	m = sample(WIRE_AUTH);
	round_trip(&m, &d);
	cr_assert(eq(int, memcmp(d.u.auth.mac, m.u.auth.mac, WIRE_MAC_LEN), 0));

	m = sample(WIRE_ERROR);
	round_trip(&m, &d);
	cr_assert(eq(i32, d.u.error.code, ENOSPC));
	cr_assert_str_eq(d.u.error.message, "journal full on 'b'");

	m = sample(WIRE_PAIR_CREATE);
	round_trip(&m, &d);
	cr_assert_str_eq(d.u.pair_create.group, "db1");
	cr_assert(eq(u64, d.u.pair_create.pair_id, 0x1122334455667788ull));
	cr_assert(eq(u64, d.u.pair_create.start_seq, 42));
	cr_assert(eq(u64, d.u.pair_create.primary_seed, 0xfeedfacecafebeefull));
	cr_assert(eq(u8, d.u.pair_create.mode, WIRE_MODE_SYNC));
	cr_assert(eq(u8, d.u.pair_create.initial_copy, 1));
	cr_assert(eq(u16, d.u.pair_create.nvolumes, 2));
	cr_assert_str_eq(d.u.pair_create.volumes[0].name, "data");
	cr_assert(eq(u64, d.u.pair_create.volumes[0].size, 1ull << 30));
	cr_assert_str_eq(d.u.pair_create.volumes[1].name, "log");
	cr_assert(eq(u64, d.u.pair_create.volumes[1].size, 4096));

	m = sample(WIRE_PAIR_ATTACH);
	round_trip(&m, &d);
	cr_assert_str_eq(d.u.pair_attach.group, "db1");
	cr_assert(eq(u64, d.u.pair_attach.pair_id, 77));
	cr_assert(eq(u64, d.u.pair_attach.primary_seed, 0x0123456789abcdefull));
	cr_assert(eq(u8, d.u.pair_attach.mode, WIRE_MODE_ASYNC));

	m = sample(WIRE_PAIR_OK);
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 40));
	cr_assert(eq(u64, d.u.pair_ok.received_seq, 100));
	cr_assert(eq(u64, d.u.pair_ok.restored_seq, 90));
	cr_assert(eq(u8, d.u.pair_ok.state, WIRE_STATE_PSUS));
	cr_assert(eq(u64, d.u.pair_ok.gen, 0x0102030405060708ull));
	cr_assert(eq(u64, d.u.pair_ok.synced_gen, 0x0102030405060707ull));

	m = sample(WIRE_READ_JOURNAL);
	round_trip(&m, &d);
	cr_assert(eq(u64, d.u.read_journal.req_id, 9));
	cr_assert(eq(u64, d.u.read_journal.received_seq, 100));
	cr_assert(eq(u64, d.u.read_journal.restored_seq, 99));
	cr_assert(eq(u32, d.u.read_journal.max_bytes, 1u << 20));

	m = sample(WIRE_JOURNAL_DATA);
	round_trip(&m, &d);
	cr_assert(eq(u64, d.u.journal_data.req_id, 9));
	cr_assert(eq(u64, d.u.journal_data.first_seq, 101));
	cr_assert(eq(u64, d.u.journal_data.last_seq, 102));
	cr_assert(eq(u32, d.u.journal_data.nrecords, 2));
	cr_assert(eq(u32, d.u.journal_data.raw_len, m.u.journal_data.raw_len));
	cr_assert(eq(u8, d.u.journal_data.compression, WIRE_COMP_NONE));
	cr_assert(eq(u32, d.u.journal_data.data_len, m.u.journal_data.data_len));
	cr_assert(eq(int, memcmp(d.u.journal_data.data, m.u.journal_data.data, 133), 0));

	m = sample(WIRE_STATUS);
	round_trip(&m, &d);
	cr_assert(eq(u64, d.u.status.received_seq, 102));
	cr_assert(eq(u64, d.u.status.restored_seq, 101));
	cr_assert(eq(u64, d.u.status.restored_ts_ns, 1700000000123456789ull));

	m = sample(WIRE_PRIMARY_STATUS);
	round_trip(&m, &d);
	cr_assert(eq(u8, d.u.primary_status.state, WIRE_STATE_COPY));
	cr_assert(eq(u64, d.u.primary_status.written_seq, 500));
	cr_assert(eq(u64, d.u.primary_status.copy_done_bytes, 1ull << 20));
	cr_assert(eq(u64, d.u.primary_status.copy_total_bytes, 1ull << 30));
	cr_assert(eq(u64, d.u.primary_status.newest_ts_ns, 1700000000000000000ull));
	cr_assert(eq(u64, d.u.primary_status.gen, 12));
	cr_assert(eq(u64, d.u.primary_status.synced_gen, 11));
	cr_assert(eq(u64, d.u.primary_status.start_seq, 42));
	cr_assert_str_eq(d.u.primary_status.primary_addr, "[2001:db8::1]:7788");
	cr_assert_str_eq(d.u.primary_status.reason, "initial copy after resync");
	cr_assert(eq(u32, d.hdr.payload_len, 192 + strlen("initial copy after resync")));

	m = sample(WIRE_PAIR_CMD);
	round_trip(&m, &d);
	cr_assert(eq(u8, d.u.pair_cmd.cmd, WIRE_CMD_SUSPEND));
	cr_assert(eq(u8, d.u.pair_cmd.flags, WIRE_CMD_DRAIN));
	cr_assert(eq(u64, d.u.pair_cmd.pair_id, 0x1122334455667788ull));
	cr_assert(eq(u64, d.u.pair_cmd.seq, 4242));
	cr_assert(eq(u64, d.u.pair_cmd.gen, 12));
	cr_assert(eq(u64, d.u.pair_cmd.synced_gen, 11));
	cr_assert_str_eq(d.u.pair_cmd.text, "maintenance window");
	cr_assert(eq(u32, d.hdr.payload_len, 40 + strlen("maintenance window")));

	m = sample(WIRE_BITMAP);
	round_trip(&m, &d);
	cr_assert(eq(u16, d.u.bitmap.volume, 3));
	cr_assert(eq(u16, d.u.bitmap.flags, 0));
	cr_assert(eq(u32, d.u.bitmap.region_size, 1u << 20));
	cr_assert(eq(u64, d.u.bitmap.first_region, 64));
	cr_assert(eq(u32, d.u.bitmap.nbits, 20));
	cr_assert(eq(u32, d.hdr.payload_len, 24 + 3));
	cr_assert(eq(int, memcmp(d.u.bitmap.bits, sample_bits, 3), 0));
}

/* The wire bytes of the new layouts, field by field (the table in wire.h). */
Test(wire, layouts_of_lifecycle_messages)
{
	uint8_t buf[1024];
	const uint8_t *p = buf + WIRE_HDR_SIZE;
	size_t n;

	n = sample_frame(WIRE_PAIR_OK, buf, sizeof(buf));
	cr_assert(eq(u64, n, WIRE_HDR_SIZE + 40));
	cr_assert(eq(u8, p[0], 100));
	cr_assert(eq(u8, p[8], 90));
	cr_assert(eq(u8, p[16], WIRE_STATE_PSUS));
	cr_assert(eq(u8, p[24], 0x08));
	cr_assert(eq(u8, p[31], 0x01));
	cr_assert(eq(u8, p[32], 0x07));

	n = sample_frame(WIRE_PRIMARY_STATUS, buf, sizeof(buf));
	cr_assert(eq(u64, n, WIRE_HDR_SIZE + 192 + strlen("initial copy after resync")));
	cr_assert(eq(u8, p[0], WIRE_STATE_COPY));
	cr_assert(eq(u8, p[40], 12));
	cr_assert(eq(u8, p[48], 11));
	cr_assert(eq(u8, p[56], 42));
	cr_assert(eq(int, memcmp(p + 64, "[2001:db8::1]:7788", 18), 0));
	for (size_t i = 64 + 18; i < 192; i++)
		cr_assert(eq(u8, p[i], 0));
	cr_assert(eq(int, memcmp(p + 192, "initial copy", 12), 0));

	n = sample_frame(WIRE_PAIR_CMD, buf, sizeof(buf));
	cr_assert(eq(u64, n, WIRE_HDR_SIZE + 40 + strlen("maintenance window")));
	cr_assert(eq(u8, p[0], WIRE_CMD_SUSPEND));
	cr_assert(eq(u8, p[1], WIRE_CMD_DRAIN));
	cr_assert(eq(u8, p[8], 0x88));
	cr_assert(eq(u8, p[16], 4242 & 0xff));
	cr_assert(eq(u8, p[24], 12));
	cr_assert(eq(u8, p[32], 11));
	cr_assert(eq(int, memcmp(p + 40, "maintenance", 11), 0));

	n = sample_frame(WIRE_BITMAP, buf, sizeof(buf));
	cr_assert(eq(u64, n, WIRE_HDR_SIZE + 24 + 3));
	cr_assert(eq(u8, p[0], 3));
	cr_assert(eq(u8, p[2], 0));
	cr_assert(eq(u8, p[6], 0x10)); /* 1 MiB */
	cr_assert(eq(u8, p[8], 64));
	cr_assert(eq(u8, p[16], 20));
	cr_assert(eq(int, memcmp(p + 24, sample_bits, 3), 0));
}

/* The head is the frame's first bytes: a JOURNAL_DATA's header and fixed
 * part, any other type whole. */
Test(wire, encode_head_is_the_frame_without_the_data)
{
	static const uint16_t types[] = {WIRE_JOURNAL_DATA, WIRE_STATUS, WIRE_BITMAP, WIRE_ERROR};
	uint8_t frame[4096], head[4096];

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct wire_msg m = sample(types[i]);
		size_t n = encode(&m, frame, sizeof(frame));
		size_t hs = wire_head_size(&m);
		ssize_t h;

		memset(head, 0xa5, sizeof(head));
		h = wire_encode_head(&m, head, sizeof(head));
		cr_assert(eq(i64, (int64_t)h, (int64_t)hs), "%s", wire_type_name(types[i]));
		cr_assert(eq(u64, hs, types[i] == WIRE_JOURNAL_DATA ? WIRE_HDR_SIZE + 40 : n));
		cr_assert(eq(int, memcmp(head, frame, hs), 0), "%s", wire_type_name(types[i]));
		cr_assert(eq(i64, (int64_t)wire_encode_head(&m, head, hs - 1), -ENOSPC));
	}
	{
		struct wire_msg m = sample(WIRE_JOURNAL_DATA);

		m.u.journal_data.data = NULL;
		cr_assert(eq(i64, (int64_t)wire_encode_head(&m, head, sizeof(head)), -EINVAL));
	}
}

Test(wire, round_trips_limits)
{
	struct wire_msg m, d;
	uint8_t *data;

	/* Full-length strings have no NUL on the wire. */
	m = sample(WIRE_HELLO);
	memset(m.u.hello.site, 's', WIRE_SITE_LEN);
	round_trip(&m, &d);
	cr_assert(eq(u64, strlen(d.u.hello.site), WIRE_SITE_LEN));

	m = sample(WIRE_ERROR);
	memset(m.u.error.message, 'e', WIRE_MAX_ERROR);
	round_trip(&m, &d);
	cr_assert(eq(u64, strlen(d.u.error.message), WIRE_MAX_ERROR));

	m = msg_of(WIRE_ERROR);
	m.u.error.code = 4095;
	round_trip(&m, &d);
	cr_assert_str_eq(d.u.error.message, "");

	m = sample(WIRE_PAIR_CREATE);
	memset(m.u.pair_create.group, 'g', JOURNAL_GROUPNAME_LEN);
	m.u.pair_create.nvolumes = JOURNAL_MAX_VOLUMES;
	for (unsigned i = 0; i < JOURNAL_MAX_VOLUMES; i++) {
		memset(m.u.pair_create.volumes[i].name, 'a' + (int)(i % 26), JOURNAL_VOLNAME_LEN);
		m.u.pair_create.volumes[i].size = i * 4096ull;
	}
	round_trip(&m, &d);
	cr_assert(eq(u64, strlen(d.u.pair_create.group), JOURNAL_GROUPNAME_LEN));
	cr_assert(eq(u16, d.u.pair_create.nvolumes, JOURNAL_MAX_VOLUMES));
	for (unsigned i = 0; i < JOURNAL_MAX_VOLUMES; i++) {
		cr_assert_str_eq(d.u.pair_create.volumes[i].name, m.u.pair_create.volumes[i].name);
		cr_assert(eq(u64, d.u.pair_create.volumes[i].size, i * 4096ull));
	}

	m = sample(WIRE_PAIR_CREATE);
	m.u.pair_create.nvolumes = 0;
	round_trip(&m, &d);
	cr_assert(eq(u16, d.u.pair_create.nvolumes, 0));

	/* The largest JOURNAL_DATA, raw and compressed. */
	data = malloc(WIRE_MAX_DATA + 24);
	cr_assert(data != NULL);
	for (size_t i = 0; i < WIRE_MAX_DATA + 24; i++)
		data[i] = (uint8_t)(i * 31);
	m = sample(WIRE_JOURNAL_DATA);
	m.u.journal_data.first_seq = m.u.journal_data.last_seq = 7;
	m.u.journal_data.nrecords = 1;
	m.u.journal_data.raw_len = m.u.journal_data.data_len = WIRE_MAX_DATA;
	m.u.journal_data.data = data;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.u.journal_data.data_len, WIRE_MAX_DATA));
	cr_assert(eq(int, memcmp(d.u.journal_data.data, data, WIRE_MAX_DATA), 0));
	m.u.journal_data.compression = WIRE_COMP_ZSTD;
	m.u.journal_data.data_len = WIRE_MAX_DATA + 24; /* the whole payload */
	round_trip(&m, &d);
	cr_assert(eq(u32, d.u.journal_data.data_len, WIRE_MAX_DATA + 24));
	m.u.journal_data.data_len = 100;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.u.journal_data.raw_len, WIRE_MAX_DATA));
	free(data);

	/* "Nothing new": no records, first_seq = last_seq + 1. */
	m = msg_of(WIRE_JOURNAL_DATA);
	m.u.journal_data.req_id = 3;
	m.u.journal_data.first_seq = 11;
	m.u.journal_data.last_seq = 10;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.u.journal_data.nrecords, 0));
	cr_assert(eq(u32, d.u.journal_data.data_len, 0));

	/* Every pair state, in PAIR_OK and PRIMARY_STATUS. */
	for (uint8_t st = WIRE_STATE_COPY; st <= WIRE_STATE_SSWS; st++) {
		m = sample(WIRE_PRIMARY_STATUS);
		m.u.primary_status.state = st;
		round_trip(&m, &d);
		cr_assert(eq(u8, d.u.primary_status.state, st));
		m = sample(WIRE_PAIR_OK);
		m.u.pair_ok.state = st;
		round_trip(&m, &d);
		cr_assert(eq(u8, d.u.pair_ok.state, st));
	}
	m = sample(WIRE_PAIR_OK);
	m.u.pair_ok.received_seq = m.u.pair_ok.restored_seq = UINT64_MAX;
	m.u.pair_ok.gen = m.u.pair_ok.synced_gen = UINT64_MAX;
	round_trip(&m, &d);
	cr_assert(eq(u64, d.u.pair_ok.gen, UINT64_MAX));
	cr_assert(eq(u64, d.u.pair_ok.synced_gen, UINT64_MAX));

	/* PRIMARY_STATUS: empty address and reason (the fixed part only), then
	 * a full-length address (no NUL on the wire) and the longest reason. */
	m = sample(WIRE_PRIMARY_STATUS);
	m.u.primary_status.primary_addr[0] = '\0';
	m.u.primary_status.reason[0] = '\0';
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 192));
	cr_assert_str_eq(d.u.primary_status.primary_addr, "");
	cr_assert_str_eq(d.u.primary_status.reason, "");
	cr_assert(eq(u64, d.u.primary_status.start_seq, 42));
	memset(m.u.primary_status.primary_addr, 'h', WIRE_ADDR_LEN);
	memset(m.u.primary_status.reason, 'r', WIRE_MAX_REASON);
	m.u.primary_status.reason[0] = '\xc3'; /* UTF-8 passes as is */
	m.u.primary_status.reason[1] = '\xa9';
	m.u.primary_status.gen = m.u.primary_status.synced_gen = UINT64_MAX;
	m.u.primary_status.start_seq = UINT64_MAX;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 192 + WIRE_MAX_REASON));
	cr_assert(eq(u64, strlen(d.u.primary_status.primary_addr), WIRE_ADDR_LEN));
	cr_assert(eq(u64, strlen(d.u.primary_status.reason), WIRE_MAX_REASON));
	cr_assert(eq(
	    int, memcmp(d.u.primary_status.reason, m.u.primary_status.reason, WIRE_MAX_REASON), 0));
	cr_assert(eq(u64, d.u.primary_status.start_seq, UINT64_MAX));

	/* PAIR_CMD: every command and every reply, all flag combinations we
	 * allow, empty and longest text. */
	for (uint8_t c = WIRE_CMD_RESYNC; c <= WIRE_CMD_SUSPEND; c++) {
		for (uint8_t fl = 0; fl < 8; fl++) {
			bool is_reply = (fl & WIRE_CMD_REFUSED) != 0;

			m = sample(WIRE_PAIR_CMD);
			m.u.pair_cmd.cmd = (uint8_t)(c | (is_reply ? WIRE_CMD_REPLY : 0));
			m.u.pair_cmd.flags = fl;
			round_trip(&m, &d);
			cr_assert(eq(u8, d.u.pair_cmd.cmd, m.u.pair_cmd.cmd));
			cr_assert(eq(u8, d.u.pair_cmd.flags, fl));
		}
		m = sample(WIRE_PAIR_CMD);
		m.u.pair_cmd.cmd = (uint8_t)(c | WIRE_CMD_REPLY);
		m.u.pair_cmd.flags = 0;
		round_trip(&m, &d);
		cr_assert(eq(u8, d.u.pair_cmd.cmd, c | 0x80));
	}
	m = sample(WIRE_PAIR_CMD);
	m.u.pair_cmd.text[0] = '\0';
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 40));
	cr_assert_str_eq(d.u.pair_cmd.text, "");
	m.u.pair_cmd.cmd = WIRE_CMD_SWAP | WIRE_CMD_REPLY;
	m.u.pair_cmd.flags = WIRE_CMD_REFUSED;
	memset(m.u.pair_cmd.text, 't', WIRE_MAX_REASON);
	m.u.pair_cmd.pair_id = m.u.pair_cmd.seq = UINT64_MAX;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 40 + WIRE_MAX_REASON));
	cr_assert(eq(u64, strlen(d.u.pair_cmd.text), WIRE_MAX_REASON));
	cr_assert(eq(u8, d.u.pair_cmd.flags, WIRE_CMD_REFUSED));
	cr_assert(eq(u64, d.u.pair_cmd.seq, UINT64_MAX));

	/* BITMAP: 1, 8 and 9 bits, the most bits in one chunk, the empty LAST
	 * marker, the smallest and largest regions, the last volume. */
	{
		static const uint8_t one[1] = {0x01}, eight[1] = {0x80}, nine[2] = {0xff, 0x01};
		static const struct {
			uint32_t nbits;
			const uint8_t *bits;
		} cases[] = {{1, one}, {8, eight}, {9, nine}};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			m = sample(WIRE_BITMAP);
			m.u.bitmap.nbits = cases[i].nbits;
			m.u.bitmap.bits = cases[i].bits;
			round_trip(&m, &d);
			cr_assert(eq(u32, d.u.bitmap.nbits, cases[i].nbits));
			cr_assert(eq(u32, d.hdr.payload_len, 24 + (cases[i].nbits + 7) / 8));
			cr_assert(eq(
			    int, memcmp(d.u.bitmap.bits, cases[i].bits, (cases[i].nbits + 7) / 8),
			    0));
		}
	}
	m = sample(WIRE_BITMAP);
	m.u.bitmap.flags = WIRE_BITMAP_LAST;
	m.u.bitmap.nbits = 0;
	m.u.bitmap.bits = NULL;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 24));
	cr_assert(eq(u16, d.u.bitmap.flags, WIRE_BITMAP_LAST));
	cr_assert(eq(u32, d.u.bitmap.nbits, 0));
	m = sample(WIRE_BITMAP);
	m.u.bitmap.flags = WIRE_BITMAP_LAST;
	m.u.bitmap.volume = JOURNAL_MAX_VOLUMES - 1;
	m.u.bitmap.region_size = 4096;
	round_trip(&m, &d);
	cr_assert(eq(u16, d.u.bitmap.volume, JOURNAL_MAX_VOLUMES - 1));
	cr_assert(eq(u32, d.u.bitmap.region_size, 4096));
	m.u.bitmap.region_size = 1u << 30;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.u.bitmap.region_size, 1u << 30));
	/* The last regions of a 2^64-byte space: (first + nbits) * size == 2^64 - 4096. */
	m = sample(WIRE_BITMAP);
	m.u.bitmap.region_size = 4096;
	m.u.bitmap.first_region = (UINT64_MAX >> 12) - 20;
	round_trip(&m, &d);
	cr_assert(eq(u64, d.u.bitmap.first_region, (UINT64_MAX >> 12) - 20));

	data = malloc(WIRE_BITMAP_MAX_BITS / 8);
	cr_assert(data != NULL);
	for (size_t i = 0; i < WIRE_BITMAP_MAX_BITS / 8; i++)
		data[i] = (uint8_t)(i * 37 + 1);
	m = sample(WIRE_BITMAP);
	m.u.bitmap.nbits = WIRE_BITMAP_MAX_BITS;
	m.u.bitmap.bits = data;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 24 + WIRE_BITMAP_MAX_BITS / 8));
	cr_assert(eq(u32, d.u.bitmap.nbits, WIRE_BITMAP_MAX_BITS));
	cr_assert(eq(int, memcmp(d.u.bitmap.bits, data, WIRE_BITMAP_MAX_BITS / 8), 0));
	/* A large odd count: the unused top bits of the last byte cleared. */
	m.u.bitmap.nbits = WIRE_BITMAP_MAX_BITS - 3;
	data[WIRE_BITMAP_MAX_BITS / 8 - 1] = 0x1f;
	m.u.bitmap.flags = WIRE_BITMAP_LAST;
	round_trip(&m, &d);
	cr_assert(eq(u32, d.hdr.payload_len, 24 + WIRE_BITMAP_MAX_BITS / 8));
	cr_assert(eq(u8, d.u.bitmap.bits[WIRE_BITMAP_MAX_BITS / 8 - 1], 0x1f));
	free(data);
}

Test(wire, type_names)
{
	cr_assert_str_eq(wire_type_name(WIRE_READ_JOURNAL), "READ_JOURNAL");
	cr_assert_str_eq(wire_type_name(WIRE_PRIMARY_STATUS), "PRIMARY_STATUS");
	cr_assert_str_eq(wire_type_name(WIRE_PAIR_CMD), "PAIR_CMD");
	cr_assert_str_eq(wire_type_name(WIRE_BITMAP), "BITMAP");
	cr_assert_str_eq(wire_type_name(11), "PAIR_CMD");
	cr_assert_str_eq(wire_type_name(12), "BITMAP");
	cr_assert_str_eq(wire_type_name(0), "unknown");
	cr_assert_str_eq(wire_type_name(13), "unknown");
}

/* ---- Header rejections --------------------------------------------------- */

Test(wire, rejects_bad_magic)
{
	uint8_t buf[256];
	size_t n = sample_frame(WIRE_STATUS, buf, sizeof(buf));

	buf[0] ^= 1;
	fix_hdr_csum(buf);
	cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, NULL), -EPROTO));
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
}

Test(wire, rejects_flags_and_reserved)
{
	uint8_t buf[256];
	size_t n;

	for (unsigned bit = 0; bit < 16; bit++) {
		n = sample_frame(WIRE_STATUS, buf, sizeof(buf));
		put16(buf + 6, (uint16_t)(1u << bit));
		fix_hdr_csum(buf);
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, NULL), -EPROTO));
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	}
	for (unsigned i = 12; i < 16; i++) {
		n = sample_frame(WIRE_STATUS, buf, sizeof(buf));
		buf[i] = 0x80;
		fix_hdr_csum(buf);
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, NULL), -EPROTO));
	}
}

Test(wire, rejects_oversized_payload_len)
{
	uint8_t buf[64];
	struct wire_hdr h;

	raw_frame(buf, WIRE_JOURNAL_DATA, NULL, 0);
	put32(buf + 8, WIRE_MAX_PAYLOAD);
	fix_hdr_csum(buf);
	cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, 32, &h),
	             (int64_t)(WIRE_HDR_SIZE + WIRE_MAX_PAYLOAD)));
	put32(buf + 8, WIRE_MAX_PAYLOAD + 1);
	fix_hdr_csum(buf);
	cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, 32, &h), -EPROTO));
	put32(buf + 8, UINT32_MAX);
	fix_hdr_csum(buf);
	cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, 32, &h), -EPROTO));
}

Test(wire, rejects_bad_checksums)
{
	uint8_t buf[256];
	size_t n;

	/* Any header bit flipped: the header checksum catches it. */
	for (unsigned i = 4 * 8; i < 24 * 8; i++) {
		n = sample_frame(WIRE_PAIR_OK, buf, sizeof(buf));
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, NULL), -EBADMSG), "bit %u", i);
	}
	n = sample_frame(WIRE_PAIR_OK, buf, sizeof(buf));
	buf[30] ^= 4;
	cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, NULL), -EBADMSG));

	/* Any payload bit flipped: the header is fine, decode refuses. */
	for (unsigned i = 0; i < 16 * 8; i++) {
		n = sample_frame(WIRE_PAIR_OK, buf, sizeof(buf));
		buf[32 + i / 8] ^= (uint8_t)(1u << (i % 8));
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, NULL), (int64_t)n));
		cr_assert(eq(int, decode_buf(buf, n), -EBADMSG));
	}

	/* An empty payload has checksum 0. */
	n = raw_frame(buf, WIRE_AUTH, NULL, 0);
	put64(buf + 16, 1);
	fix_hdr_csum(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EBADMSG));
}

Test(wire, truncated_frames_need_more_bytes)
{
	uint8_t buf[256];
	struct wire_msg m;
	size_t n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));

	for (size_t i = 0; i < WIRE_HDR_SIZE; i++)
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, i, NULL), 0));
	for (size_t i = WIRE_HDR_SIZE; i <= n; i++)
		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, i, NULL), (int64_t)n));
	/* decode wants exactly one frame: not less, not more. */
	for (size_t i = 0; i < n; i++)
		cr_assert(eq(int, wire_decode(buf, i, &m), -EPROTO));
	cr_assert(eq(int, wire_decode(buf, n + 1, &m), -EPROTO));
	cr_assert(eq(int, wire_decode(buf, n, &m), 0));
}

Test(wire, rejects_unknown_types)
{
	static const uint16_t bad[] = {0, 13, 14, 0x100, 0xffff};
	uint8_t buf[64], payload[16] = {0};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = raw_frame(buf, bad[i], payload, sizeof(payload));
		struct wire_msg m = msg_of(bad[i]);

		cr_assert(eq(i64, (int64_t)wire_frame_peek(buf, n, NULL), (int64_t)n));
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "type %u", bad[i]);
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	}
}

/* ---- Payload rejections -------------------------------------------------- */

/* Every type's payload one byte short or long (and empty) is refused. */
Test(wire, rejects_wrong_payload_lengths)
{
	static const uint16_t types[] = {WIRE_HELLO,       WIRE_AUTH,    WIRE_PAIR_CREATE,
	                                 WIRE_PAIR_ATTACH, WIRE_PAIR_OK, WIRE_READ_JOURNAL,
	                                 WIRE_STATUS,      WIRE_BITMAP};
	static uint8_t good[4096], buf[4096];

	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		size_t n = sample_frame(types[t], good, sizeof(good));
		uint32_t plen = (uint32_t)(n - WIRE_HDR_SIZE);
		uint32_t lens[] = {0, plen - 1, plen + 1, plen + 48};

		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			size_t m = raw_frame(buf, types[t], good + WIRE_HDR_SIZE, lens[i]);

			cr_assert(eq(int, decode_buf(buf, m), -EPROTO), "%s with %u bytes",
			          wire_type_name(types[t]), lens[i]);
		}
	}
	/* ERROR: a code, then at most WIRE_MAX_ERROR bytes of text. */
	{
		uint8_t payload[4 + WIRE_MAX_ERROR + 1];
		size_t m;

		memset(payload, 'x', sizeof(payload));
		put32(payload, EIO);
		m = raw_frame(buf, WIRE_ERROR, payload, 3);
		cr_assert(eq(int, decode_buf(buf, m), -EPROTO));
		m = raw_frame(buf, WIRE_ERROR, payload, 4);
		cr_assert(eq(int, decode_buf(buf, m), 0));
		m = raw_frame(buf, WIRE_ERROR, payload, 4 + WIRE_MAX_ERROR);
		cr_assert(eq(int, decode_buf(buf, m), 0));
		m = raw_frame(buf, WIRE_ERROR, payload, 4 + WIRE_MAX_ERROR + 1);
		cr_assert(eq(int, decode_buf(buf, m), -EPROTO));
	}
	/* PRIMARY_STATUS and PAIR_CMD: the fixed part, then 0..WIRE_MAX_REASON
	 * bytes of text. */
	{
		static const struct {
			uint16_t type;
			uint32_t fixed;
		} texts[] = {{WIRE_PRIMARY_STATUS, 192}, {WIRE_PAIR_CMD, 40}};

		for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
			uint8_t payload[192 + WIRE_MAX_REASON + 1];
			uint32_t fixed = texts[t].fixed;
			size_t m;

			sample_frame(texts[t].type, good, sizeof(good));
			memset(payload, 'x', sizeof(payload));
			memcpy(payload, good + WIRE_HDR_SIZE, fixed);
			m = raw_frame(buf, texts[t].type, payload, 0);
			cr_assert(eq(int, decode_buf(buf, m), -EPROTO));
			m = raw_frame(buf, texts[t].type, payload, fixed - 1);
			cr_assert(eq(int, decode_buf(buf, m), -EPROTO), "%s short",
			          wire_type_name(texts[t].type));
			m = raw_frame(buf, texts[t].type, payload, fixed);
			cr_assert(eq(int, decode_buf(buf, m), 0));
			m = raw_frame(buf, texts[t].type, payload, fixed + WIRE_MAX_REASON);
			cr_assert(eq(int, decode_buf(buf, m), 0));
			m = raw_frame(buf, texts[t].type, payload, fixed + WIRE_MAX_REASON + 1);
			cr_assert(eq(int, decode_buf(buf, m), -EPROTO), "%s reason too long",
			          wire_type_name(texts[t].type));
		}
	}
	/* JOURNAL_DATA: at least its 40-byte fixed part. */
	{
		size_t n = sample_frame(WIRE_JOURNAL_DATA, good, sizeof(good));
		size_t m = raw_frame(buf, WIRE_JOURNAL_DATA, good + WIRE_HDR_SIZE, 39);

		cr_assert(eq(int, decode_buf(buf, m), -EPROTO));
		/* One data byte less or more than raw_len. */
		m = raw_frame(buf, WIRE_JOURNAL_DATA, good + WIRE_HDR_SIZE,
		              (uint32_t)(n - WIRE_HDR_SIZE - 1));
		cr_assert(eq(int, decode_buf(buf, m), -EPROTO));
		m = raw_frame(buf, WIRE_JOURNAL_DATA, good + WIRE_HDR_SIZE,
		              (uint32_t)(n - WIRE_HDR_SIZE + 1));
		cr_assert(eq(int, decode_buf(buf, m), -EPROTO));
	}
}

Test(wire, rejects_too_many_volumes)
{
	static uint8_t buf[WIRE_HDR_SIZE + 96 + 40 * 48];
	struct wire_msg m = sample(WIRE_PAIR_CREATE);
	size_t n;

	/* A frame sized for 33 volumes, saying so. */
	m.u.pair_create.nvolumes = 1;
	n = encode(&m, buf, sizeof(buf));
	memset(buf + n, 0, sizeof(buf) - n);
	for (unsigned i = 0; i < 33; i++)
		memcpy(buf + WIRE_HDR_SIZE + 96 + i * 48, "vol", 3);
	put16(buf + WIRE_HDR_SIZE + 90, 33);
	put32(buf + 8, 96 + 33 * 48);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, WIRE_HDR_SIZE + 96 + 33 * 48), -EPROTO));
	put16(buf + WIRE_HDR_SIZE + 90, 0xffff);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, WIRE_HDR_SIZE + 96 + 33 * 48), -EPROTO));
	/* The count must match the size. */
	put16(buf + WIRE_HDR_SIZE + 90, 2);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, WIRE_HDR_SIZE + 96 + 33 * 48), -EPROTO));

	m.u.pair_create.nvolumes = JOURNAL_MAX_VOLUMES + 1;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
}

Test(wire, rejects_bad_enums)
{
	uint8_t buf[512];
	size_t n;

	n = sample_frame(WIRE_HELLO, buf, sizeof(buf));
	for (uint32_t role = 0; role < 5; role++) {
		put32(buf + WIRE_HDR_SIZE + 4, role);
		fix_csums(buf);
		cr_assert(eq(int, decode_buf(buf, n), role == 1 || role == 2 ? 0 : -EPROTO));
	}

	n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));
	poke(buf, 88, 2); /* mode */
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));
	poke(buf, 89, 2); /* initial_copy */
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));

	n = sample_frame(WIRE_PAIR_ATTACH, buf, sizeof(buf));
	poke(buf, 80, 2);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	poke(buf, 80, 1);
	cr_assert(eq(int, decode_buf(buf, n), 0));

	n = sample_frame(WIRE_JOURNAL_DATA, buf, sizeof(buf));
	poke(buf, 32, 2); /* compression */
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));

	/* Pair states: 1..7, in PRIMARY_STATUS (byte 0) and PAIR_OK (byte 16). */
	for (unsigned st = 0; st < 256; st++) {
		int want = st >= 1 && st <= 7 ? 0 : -EPROTO;
		struct wire_msg m;

		n = sample_frame(WIRE_PRIMARY_STATUS, buf, sizeof(buf));
		poke(buf, 0, (uint8_t)st);
		cr_assert(eq(int, decode_buf(buf, n), want), "PRIMARY_STATUS state %u", st);
		n = sample_frame(WIRE_PAIR_OK, buf, sizeof(buf));
		poke(buf, 16, (uint8_t)st);
		cr_assert(eq(int, decode_buf(buf, n), want), "PAIR_OK state %u", st);
		/* Encode refuses what decode would. */
		m = sample(WIRE_PAIR_OK);
		m.u.pair_ok.state = (uint8_t)st;
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)),
		             want ? -EINVAL : (int64_t)WIRE_HDR_SIZE + 40));
		m = sample(WIRE_PRIMARY_STATUS);
		m.u.primary_status.state = (uint8_t)st;
		if (want)
			cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	}

	/* ERROR codes are positive errnos. */
	n = sample_frame(WIRE_ERROR, buf, sizeof(buf));
	put32(buf + WIRE_HDR_SIZE, 0);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	put32(buf + WIRE_HDR_SIZE, (uint32_t)-5);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	put32(buf + WIRE_HDR_SIZE, 4096);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
}

Test(wire, rejects_nonzero_reserved_payload_bytes)
{
	static const struct {
		uint16_t type;
		size_t from, to;
	} fields[] = {
	    {WIRE_PAIR_CREATE, 92, 96},  {WIRE_PAIR_ATTACH, 81, 88},  {WIRE_READ_JOURNAL, 28, 32},
	    {WIRE_JOURNAL_DATA, 33, 40}, {WIRE_PRIMARY_STATUS, 1, 8}, {WIRE_PAIR_OK, 17, 24},
	    {WIRE_PAIR_CMD, 2, 8},       {WIRE_BITMAP, 20, 24},
	};
	uint8_t buf[512];

	for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
		for (size_t off = fields[f].from; off < fields[f].to; off++) {
			size_t n = sample_frame(fields[f].type, buf, sizeof(buf));

			poke(buf, off, 0x01);
			cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "%s byte %zu",
			          wire_type_name(fields[f].type), off);
		}
	}
}

Test(wire, checks_names)
{
	uint8_t buf[512];
	struct wire_msg m, d;
	size_t n;

	/* Garbage after the terminating NUL. */
	n = sample_frame(WIRE_HELLO, buf, sizeof(buf));
	poke(buf, 40 + 63, 'x');
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));
	poke(buf, 10, 'x'); /* group "db1\0...x" */
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));
	poke(buf, 96 + 48 + 39, 'x'); /* volume 1's name */
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PAIR_ATTACH, buf, sizeof(buf));
	poke(buf, 63, 'x');
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));

	/* Control characters. */
	n = sample_frame(WIRE_HELLO, buf, sizeof(buf));
	poke(buf, 41, '\n');
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));
	poke(buf, 96 + 1, 0x1b);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PAIR_ATTACH, buf, sizeof(buf));
	poke(buf, 0, 0x7f);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));

	/* Empty group and volume names are refused; an empty site is fine. */
	n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));
	memset(buf + WIRE_HDR_SIZE, 0, 3);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PAIR_CREATE, buf, sizeof(buf));
	memset(buf + WIRE_HDR_SIZE + 96, 0, 4);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	m = sample(WIRE_HELLO);
	m.u.hello.site[0] = '\0';
	round_trip(&m, &d);

	/* Encode refuses what decode would. */
	m = sample(WIRE_HELLO);
	memset(m.u.hello.site, 's', sizeof(m.u.hello.site)); /* no NUL at all */
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m = sample(WIRE_HELLO);
	strcpy(m.u.hello.site, "a\tb");
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m = sample(WIRE_PAIR_ATTACH);
	m.u.pair_attach.group[0] = '\0';
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m = sample(WIRE_PAIR_CREATE);
	m.u.pair_create.volumes[1].name[0] = '\0';
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	/* Volumes past nvolumes are not looked at. */
	m = sample(WIRE_PAIR_CREATE);
	m.u.pair_create.nvolumes = 1;
	m.u.pair_create.volumes[1].name[0] = '\x01';
	cr_assert(gt(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), 0));
}

Test(wire, sanitizes_error_text)
{
	uint8_t buf[256], payload[12];
	struct wire_msg m;
	size_t n;

	put32(payload, EPERM);
	memcpy(payload + 4, "a\nb\0c\x1b[m", 8);
	n = raw_frame(buf, WIRE_ERROR, payload, sizeof(payload));
	cr_assert(eq(int, wire_decode(buf, n, &m), 0));
	cr_assert(eq(i32, m.u.error.code, EPERM));
	cr_assert_str_eq(m.u.error.message, "a?b?c?[m");

	/* Too long to send. */
	m = msg_of(WIRE_ERROR);
	m.u.error.code = EIO;
	memset(m.u.error.message, 'x', sizeof(m.u.error.message));
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m.u.error.code = 0;
	m.u.error.message[0] = '\0';
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
}

/* JOURNAL_DATA fields that don't agree with each other. */
Test(wire, rejects_inconsistent_journal_data)
{
	static const uint8_t data[256];
	static uint8_t buf[WIRE_HDR_SIZE + 40 + 256];
	struct wire_journal_data *jd;
	struct wire_msg m;
	size_t n;

#define JD_RESET()                                                                                 \
	do {                                                                                       \
		m = msg_of(WIRE_JOURNAL_DATA);                                                     \
		jd = &m.u.journal_data;                                                            \
		jd->first_seq = 10;                                                                \
		jd->last_seq = 13;                                                                 \
		jd->nrecords = 4;                                                                  \
		jd->raw_len = jd->data_len = 256;                                                  \
		jd->data = data;                                                                   \
	} while (0)
/* Encode refuses m; forced onto the wire (over a valid frame with the same
 * data), decode refuses it too. */
#define JD_REFUSED()                                                                               \
	do {                                                                                       \
		struct wire_msg ok_ = msg_of(WIRE_JOURNAL_DATA);                                   \
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));           \
		ok_.u.journal_data.first_seq = ok_.u.journal_data.last_seq = 1;                    \
		ok_.u.journal_data.nrecords = 1;                                                   \
		ok_.u.journal_data.raw_len = ok_.u.journal_data.data_len = jd->data_len;           \
		ok_.u.journal_data.data = data;                                                    \
		n = encode(&ok_, buf, sizeof(buf));                                                \
		put64(buf + WIRE_HDR_SIZE + 8, jd->first_seq);                                     \
		put64(buf + WIRE_HDR_SIZE + 16, jd->last_seq);                                     \
		put32(buf + WIRE_HDR_SIZE + 24, jd->nrecords);                                     \
		put32(buf + WIRE_HDR_SIZE + 28, jd->raw_len);                                      \
		buf[WIRE_HDR_SIZE + 32] = jd->compression;                                         \
		fix_csums(buf);                                                                    \
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO));                                   \
	} while (0)

	JD_RESET();
	n = encode(&m, buf, sizeof(buf));
	cr_assert(eq(int, decode_buf(buf, n), 0));

	JD_RESET();
	jd->last_seq = 14; /* 5 seqs for 4 records */
	JD_REFUSED();
	JD_RESET();
	jd->last_seq = 12;
	JD_REFUSED();
	JD_RESET();
	jd->last_seq = 9; /* backwards */
	JD_REFUSED();
	JD_RESET();
	jd->nrecords = 5; /* 5 * 64 > raw_len */
	jd->last_seq = 14;
	JD_REFUSED();
	JD_RESET();
	jd->raw_len = 255; /* uncompressed: data_len must equal raw_len */
	JD_REFUSED();
	JD_RESET();
	jd->raw_len = WIRE_MAX_DATA + 1;
	jd->compression = WIRE_COMP_ZSTD;
	JD_REFUSED();
	JD_RESET();
	jd->first_seq = 0;
	jd->last_seq = UINT64_MAX; /* the span overflows nrecords */
	JD_REFUSED();
	JD_RESET();
	jd->nrecords = 0; /* no records, yet data */
	jd->first_seq = 14;
	JD_REFUSED();

	/* Empty answers: first_seq = last_seq + 1, nothing else. */
	m = msg_of(WIRE_JOURNAL_DATA);
	m.u.journal_data.first_seq = 5;
	m.u.journal_data.last_seq = 5;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m.u.journal_data.last_seq = UINT64_MAX;
	m.u.journal_data.first_seq = 0;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m.u.journal_data.last_seq = 4;
	m.u.journal_data.first_seq = 5;
	m.u.journal_data.raw_len = 64;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m.u.journal_data.raw_len = 0;
	n = encode(&m, buf, sizeof(buf));
	put32(buf + WIRE_HDR_SIZE + 28, 64); /* raw_len without records */
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	put32(buf + WIRE_HDR_SIZE + 28, 0);
	put64(buf + WIRE_HDR_SIZE + 8, 6); /* first_seq != last_seq + 1 */
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	put64(buf + WIRE_HDR_SIZE + 8, 5);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), 0));

	/* Records but no data, even compressed. */
	JD_RESET();
	jd->compression = WIRE_COMP_ZSTD;
	jd->data_len = 0;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	/* Data promised but no pointer. */
	JD_RESET();
	jd->data = NULL;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	/* More data than one frame holds. */
	JD_RESET();
	jd->compression = WIRE_COMP_ZSTD;
	jd->data_len = WIRE_MAX_PAYLOAD - 40 + 1;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
#undef JD_RESET
#undef JD_REFUSED
}

/* PAIR_CMD: cmd 1..4, or 0x81..0x84 in a reply; known flags only; REFUSED
 * only in a reply. */
Test(wire, rejects_bad_pair_cmds)
{
	uint8_t buf[512];
	struct wire_msg m;
	size_t n;

	for (unsigned c = 0; c < 256; c++) {
		unsigned code = c & ~WIRE_CMD_REPLY; /* the reply bit either way */
		int want = code >= 1 && code <= 4 ? 0 : -EPROTO;

		n = sample_frame(WIRE_PAIR_CMD, buf, sizeof(buf));
		poke(buf, 0, (uint8_t)c);
		cr_assert(eq(int, decode_buf(buf, n), want), "cmd 0x%x", c);
		m = sample(WIRE_PAIR_CMD);
		m.u.pair_cmd.cmd = (uint8_t)c;
		if (want)
			cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL),
			          "cmd 0x%x", c);
		else
			cr_assert(gt(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), 0));
	}
	/* Named refusals: unknown, the reply bit alone, the reply bit with an
	 * unknown command. */
	{
		static const uint8_t bad[] = {0, 5, 0x7f, 0x80, 0x85, 0xff, 0x41};

		for (size_t i = 0; i < sizeof(bad); i++) {
			n = sample_frame(WIRE_PAIR_CMD, buf, sizeof(buf));
			poke(buf, 0, bad[i]);
			cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "cmd 0x%x", bad[i]);
		}
	}

	/* Flags: every unknown bit, alone and with known ones. */
	for (unsigned bit = 3; bit < 8; bit++) {
		n = sample_frame(WIRE_PAIR_CMD, buf, sizeof(buf));
		poke(buf, 1, (uint8_t)(1u << bit));
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "flag bit %u", bit);
		poke(buf, 1, (uint8_t)((1u << bit) | WIRE_CMD_FORCE));
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "flag bit %u", bit);
		m = sample(WIRE_PAIR_CMD);
		m.u.pair_cmd.flags = (uint8_t)(1u << bit);
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	}
	n = sample_frame(WIRE_PAIR_CMD, buf, sizeof(buf));
	poke(buf, 1, WIRE_CMD_FORCE | WIRE_CMD_DRAIN);
	cr_assert(eq(int, decode_buf(buf, n), 0));

	/* REFUSED in a request (no reply bit) is refused; in a reply it's fine. */
	n = sample_frame(WIRE_PAIR_CMD, buf, sizeof(buf));
	poke(buf, 1, WIRE_CMD_REFUSED);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	poke(buf, 0, WIRE_CMD_SUSPEND | WIRE_CMD_REPLY);
	cr_assert(eq(int, decode_buf(buf, n), 0));
	m = sample(WIRE_PAIR_CMD);
	m.u.pair_cmd.flags = WIRE_CMD_REFUSED;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m.u.pair_cmd.cmd |= WIRE_CMD_REPLY;
	cr_assert(gt(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), 0));
}

/* Free text (PRIMARY_STATUS reason, PAIR_CMD text) and the primary's
 * address: bounded, no NUL in text, no garbage after an address's NUL, no
 * control characters. */
Test(wire, checks_texts_and_addr)
{
	static const struct {
		uint16_t type;
		size_t text_off;
	} texts[] = {{WIRE_PRIMARY_STATUS, 192}, {WIRE_PAIR_CMD, 40}};
	uint8_t buf[1024];
	struct wire_msg m;
	size_t n;

	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		size_t at = texts[t].text_off;
		const char *name = wire_type_name(texts[t].type);

		/* A NUL inside, at the start or at the end of the text. */
		n = sample_frame(texts[t].type, buf, sizeof(buf));
		poke(buf, at + 3, 0);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "%s NUL", name);
		n = sample_frame(texts[t].type, buf, sizeof(buf));
		poke(buf, at, 0);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "%s NUL", name);
		n = sample_frame(texts[t].type, buf, sizeof(buf));
		poke(buf, n - WIRE_HDR_SIZE - 1, 0);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "%s NUL", name);
		/* Control characters. */
		n = sample_frame(texts[t].type, buf, sizeof(buf));
		poke(buf, at + 1, '\n');
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "%s newline", name);
		poke(buf, at + 1, 0x7f);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "%s DEL", name);
		poke(buf, at + 1, 0x1b);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "%s ESC", name);
		poke(buf, at + 1, 0xc3); /* high bytes are UTF-8's business */
		cr_assert(eq(int, decode_buf(buf, n), 0), "%s high byte", name);
	}

	/* Encode refuses text too long (no NUL within WIRE_MAX_REASON + 1) or
	 * with control characters. */
	m = sample(WIRE_PRIMARY_STATUS);
	memset(m.u.primary_status.reason, 'r', sizeof(m.u.primary_status.reason));
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m = sample(WIRE_PRIMARY_STATUS);
	strcpy(m.u.primary_status.reason, "copy\tfailed");
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m = sample(WIRE_PAIR_CMD);
	memset(m.u.pair_cmd.text, 't', sizeof(m.u.pair_cmd.text));
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m = sample(WIRE_PAIR_CMD);
	strcpy(m.u.pair_cmd.text, "no\r\n");
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));

	/* The address: NUL-padded with zeros only, no control characters;
	 * full-length (no NUL) passes. */
	n = sample_frame(WIRE_PRIMARY_STATUS, buf, sizeof(buf));
	poke(buf, 64 + 127, 'x');
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PRIMARY_STATUS, buf, sizeof(buf));
	poke(buf, 64 + 1, '\n');
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = sample_frame(WIRE_PRIMARY_STATUS, buf, sizeof(buf));
	memset(buf + WIRE_HDR_SIZE + 64, 'a', 128);
	fix_csums(buf);
	cr_assert(eq(int, decode_buf(buf, n), 0));
	m = sample(WIRE_PRIMARY_STATUS);
	memset(m.u.primary_status.primary_addr, 'a', sizeof(m.u.primary_status.primary_addr));
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	m = sample(WIRE_PRIMARY_STATUS);
	strcpy(m.u.primary_status.primary_addr, "host\x01:1");
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
}

/* A BITMAP payload with the given fields and bits_len bytes of bits. */
static size_t
bitmap_frame(uint8_t *out, uint16_t volume, uint16_t flags, uint32_t region_size,
             uint64_t first_region, uint32_t nbits, const uint8_t *bits, size_t bits_len)
{
	static uint8_t payload[24 + 80];

	cr_assert(le(u64, bits_len, 80));
	memset(payload, 0, sizeof(payload));
	put16(payload + 0, volume);
	put16(payload + 2, flags);
	put32(payload + 4, region_size);
	put64(payload + 8, first_region);
	put32(payload + 16, nbits);
	if (bits_len)
		memcpy(payload + 24, bits, bits_len);
	return raw_frame(out, WIRE_BITMAP, payload, (uint32_t)(24 + bits_len));
}

Test(wire, rejects_bad_bitmaps)
{
	static const uint8_t ones[64] = {[0 ... 63] = 0xff};
	static const uint8_t bits3[3] = {0xa5, 0x0f, 0x09};
	uint8_t buf[256];
	struct wire_msg m;
	size_t n;

	/* The frame bitmap_frame builds is valid with these arguments. */
	n = bitmap_frame(buf, 3, 0, 1u << 20, 64, 20, bits3, 3);
	cr_assert(eq(int, decode_buf(buf, n), 0));
	m = sample(WIRE_BITMAP);
	{
		uint8_t enc[256];
		size_t e = encode(&m, enc, sizeof(enc));

		cr_assert(eq(u64, e, n));
		cr_assert(eq(int, memcmp(enc, buf, n), 0));
	}

	/* region_size: a power of two, 4096..1 GiB. */
	{
		static const uint32_t bad[] = {
		    0,        1,        2048,      4095, 4097, 12288, (1u << 20) + 4096,
		    3u << 28, 1u << 31, UINT32_MAX};
		static const uint32_t good[] = {4096, 8192, 1u << 20, 1u << 29, 1u << 30};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			n = bitmap_frame(buf, 3, 0, bad[i], 64, 20, bits3, 3);
			cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "region_size %u", bad[i]);
			m = sample(WIRE_BITMAP);
			m.u.bitmap.region_size = bad[i];
			cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
		}
		for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
			n = bitmap_frame(buf, 3, 0, good[i], 64, 20, bits3, 3);
			cr_assert(eq(int, decode_buf(buf, n), 0), "region_size %u", good[i]);
		}
	}

	/* volume < JOURNAL_MAX_VOLUMES. */
	n = bitmap_frame(buf, JOURNAL_MAX_VOLUMES - 1, 0, 4096, 0, 20, bits3, 3);
	cr_assert(eq(int, decode_buf(buf, n), 0));
	n = bitmap_frame(buf, JOURNAL_MAX_VOLUMES, 0, 4096, 0, 20, bits3, 3);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = bitmap_frame(buf, 0xffff, 0, 4096, 0, 20, bits3, 3);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	m = sample(WIRE_BITMAP);
	m.u.bitmap.volume = JOURNAL_MAX_VOLUMES;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));

	/* flags: only LAST. */
	for (unsigned bit = 1; bit < 16; bit++) {
		n = bitmap_frame(buf, 3, (uint16_t)(1u << bit), 4096, 0, 20, bits3, 3);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "flag bit %u", bit);
		n = bitmap_frame(buf, 3, (uint16_t)((1u << bit) | WIRE_BITMAP_LAST), 4096, 0, 20,
		                 bits3, 3);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "flag bit %u", bit);
	}
	m = sample(WIRE_BITMAP);
	m.u.bitmap.flags = 2;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));

	/* nbits 0 only as the LAST marker. */
	n = bitmap_frame(buf, 3, 0, 4096, 0, 0, NULL, 0);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = bitmap_frame(buf, 3, WIRE_BITMAP_LAST, 4096, 0, 0, NULL, 0);
	cr_assert(eq(int, decode_buf(buf, n), 0));
	m = sample(WIRE_BITMAP);
	m.u.bitmap.nbits = 0;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	/* ... and then with no bits at all. */
	n = bitmap_frame(buf, 3, WIRE_BITMAP_LAST, 4096, 0, 0, ones, 1);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));

	/* The bits: exactly (nbits + 7) / 8 bytes. */
	{
		static const uint32_t counts[] = {1, 7, 8, 9, 16, 17, 100, 512};

		for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
			uint32_t nb = counts[i];
			size_t len = (nb + 7) / 8;
			uint8_t bits[80];

			memset(bits, 0xff, sizeof(bits));
			if (nb % 8)
				bits[len - 1] = (uint8_t)((1u << (nb % 8)) - 1);
			n = bitmap_frame(buf, 3, 0, 4096, 0, nb, bits, len);
			cr_assert(eq(int, decode_buf(buf, n), 0), "nbits %u", nb);
			n = bitmap_frame(buf, 3, 0, 4096, 0, nb, bits, len - 1);
			cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "nbits %u, one short", nb);
			bits[len] = 0;
			n = bitmap_frame(buf, 3, 0, 4096, 0, nb, bits, len + 1);
			cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "nbits %u, one long", nb);
		}
		/* A count the frame can't hold, and the most there is, plus one. */
		n = bitmap_frame(buf, 3, 0, 4096, 0, UINT32_MAX, ones, 64);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
		n = bitmap_frame(buf, 3, 0, 4096, 0, WIRE_BITMAP_MAX_BITS + 1, ones, 64);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
		m = sample(WIRE_BITMAP);
		m.u.bitmap.nbits = WIRE_BITMAP_MAX_BITS + 1;
		m.u.bitmap.bits = ones; /* not read: refused first */
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	}

	/* Stray bits above nbits in the last byte. */
	for (uint32_t nb = 1; nb < 8; nb++) {
		uint8_t b = (uint8_t)(1u << nb);

		n = bitmap_frame(buf, 3, 0, 4096, 0, nb, &b, 1);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "nbits %u", nb);
		b = 0x80;
		n = bitmap_frame(buf, 3, 0, 4096, 0, nb, &b, 1);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO), "nbits %u", nb);
		b = (uint8_t)((1u << nb) - 1);
		n = bitmap_frame(buf, 3, 0, 4096, 0, nb, &b, 1);
		cr_assert(eq(int, decode_buf(buf, n), 0), "nbits %u", nb);
	}
	{
		static const uint8_t stray[3] = {0xa5, 0x0f, 0x19}; /* bit 20 set */

		n = bitmap_frame(buf, 3, 0, 4096, 0, 20, stray, 3);
		cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
		m = sample(WIRE_BITMAP);
		m.u.bitmap.bits = stray;
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
	}

	/* Regions past the end of a 64-bit byte space. */
	n = bitmap_frame(buf, 3, 0, 4096, (UINT64_MAX >> 12) - 20, 20, bits3, 3);
	cr_assert(eq(int, decode_buf(buf, n), 0));
	n = bitmap_frame(buf, 3, 0, 4096, (UINT64_MAX >> 12) - 19, 20, bits3, 3);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	n = bitmap_frame(buf, 3, 0, 4096, UINT64_MAX - 10, 20, bits3, 3);
	cr_assert(eq(int, decode_buf(buf, n), -EPROTO));
	m = sample(WIRE_BITMAP);
	m.u.bitmap.first_region = UINT64_MAX;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));

	/* Bits promised but no pointer. */
	m = sample(WIRE_BITMAP);
	m.u.bitmap.bits = NULL;
	cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, sizeof(buf)), -EINVAL));
}

Test(wire, encode_reports_enospc)
{
	uint8_t buf[512];

	for (uint16_t t = WIRE_HELLO; t <= WIRE_BITMAP; t++) {
		struct wire_msg m = sample(t);
		size_t size = wire_encoded_size(&m);

		cr_assert(le(u64, size, sizeof(buf)));
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, size - 1), -ENOSPC));
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, 0), -ENOSPC));
		cr_assert(eq(i64, (int64_t)wire_encode(&m, buf, size), (int64_t)size));
	}
}

/* ---- Records of a JOURNAL_DATA ------------------------------------------- */

#define SEED 0x5eed5eed12345678ull

/* Three records (WRITE with 100 bytes, TRIM, MARKER) from seq first. */
static size_t
build_records(uint8_t *out, uint64_t first, uint64_t seed)
{
	uint8_t payload[100];
	struct journal_rec rec;
	size_t pos = 0;

	for (unsigned i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i + 1);
	memset(&rec, 0, sizeof(rec));
	rec.kind = JOURNAL_REC_WRITE;
	rec.volume = 1;
	rec.payload_len = sizeof(payload);
	rec.length = sizeof(payload);
	rec.offset = 8192;
	rec.epoch = 3;
	rec.seq = first;
	rec.timestamp_ns = 1000;
	journal_rec_encode(&rec, payload, seed, out + pos);
	memcpy(out + pos + JOURNAL_REC_HDR_SIZE, payload, sizeof(payload));
	pos += JOURNAL_REC_HDR_SIZE + sizeof(payload);

	memset(&rec, 0, sizeof(rec));
	rec.kind = JOURNAL_REC_TRIM;
	rec.offset = 1 << 20;
	rec.length = 1 << 16;
	rec.epoch = 3;
	rec.seq = first + 1;
	journal_rec_encode(&rec, NULL, seed, out + pos);
	pos += JOURNAL_REC_HDR_SIZE;

	memset(&rec, 0, sizeof(rec));
	rec.kind = JOURNAL_REC_MARKER;
	rec.epoch = 3;
	rec.seq = first + 2;
	rec.timestamp_ns = 2000;
	journal_rec_encode(&rec, NULL, seed, out + pos);
	pos += JOURNAL_REC_HDR_SIZE;
	return pos;
}

/* Walks data; returns the last result and the count of records. */
static int
walk(const uint8_t *data, size_t len, uint64_t seed, uint64_t first, unsigned *ret_n,
     uint64_t *ret_expect)
{
	struct journal_rec rec;
	const void *payload;
	size_t pos = 0;
	uint64_t expect = first;
	unsigned n = 0;
	int r;

	while ((r = wire_records_next(data, len, seed, &pos, &expect, &rec, &payload)) == 1) {
		cr_assert(eq(u64, rec.seq, first + n));
		cr_assert(le(u64, pos, len));
		n++;
		cr_assert(lt(u32, n, 100));
	}
	*ret_n = n;
	if (ret_expect)
		*ret_expect = expect;
	return r;
}

Test(wire_records, walks_a_good_chain)
{
	uint8_t data[512];
	size_t len = build_records(data, 10, SEED);
	struct journal_rec rec;
	const void *payload;
	size_t pos = 0;
	uint64_t expect = 10;

	cr_assert(eq(int, wire_records_next(data, len, SEED, &pos, &expect, &rec, &payload), 1));
	cr_assert(eq(u8, rec.kind, JOURNAL_REC_WRITE));
	cr_assert(eq(u64, rec.seq, 10));
	cr_assert(eq(u32, rec.payload_len, 100));
	cr_assert(eq(ptr, (void *)payload, data + 64));
	cr_assert(eq(u8, ((const uint8_t *)payload)[99], 100));
	cr_assert(eq(u64, pos, 164));
	cr_assert(eq(u64, expect, 11));
	cr_assert(eq(int, wire_records_next(data, len, SEED, &pos, &expect, &rec, &payload), 1));
	cr_assert(eq(u8, rec.kind, JOURNAL_REC_TRIM));
	cr_assert(eq(int, wire_records_next(data, len, SEED, &pos, &expect, &rec, &payload), 1));
	cr_assert(eq(u8, rec.kind, JOURNAL_REC_MARKER));
	cr_assert(eq(u64, rec.timestamp_ns, 2000));
	cr_assert(eq(u64, pos, len));
	cr_assert(eq(int, wire_records_next(data, len, SEED, &pos, &expect, &rec, &payload), 0));
	cr_assert(eq(u64, expect, 13));
	/* Empty data is the end right away. */
	pos = 0;
	cr_assert(eq(int, wire_records_next(data, 0, SEED, &pos, &expect, &rec, &payload), 0));
	/* A position past the end is the caller's bug, refused. */
	pos = len + 1;
	cr_assert(
	    eq(int, wire_records_next(data, len, SEED, &pos, &expect, &rec, &payload), -EPROTO));
}

Test(wire_records, rejects_wrong_seq)
{
	uint8_t data[512];
	size_t len = build_records(data, 10, SEED);
	unsigned n;

	cr_assert(eq(int, walk(data, len, SEED, 9, &n, NULL), -EPROTO));
	cr_assert(eq(u32, n, 0));
	cr_assert(eq(int, walk(data, len, SEED, 11, &n, NULL), -EPROTO));
	/* A gap in the middle: WRITE 10, then the TRIM of a chain from 11
	 * (seq 12). */
	{
		uint8_t more[512];

		build_records(more, 11, SEED);
		memcpy(data + 164, more + 164, 64);
	}
	cr_assert(eq(int, walk(data, len, SEED, 10, &n, NULL), -EPROTO));
	cr_assert(eq(u32, n, 1));
}

Test(wire_records, rejects_wrong_seed)
{
	uint8_t data[512];
	size_t len = build_records(data, 10, SEED);
	unsigned n;

	cr_assert(eq(int, walk(data, len, SEED + 1, 10, &n, NULL), -EBADMSG));
	cr_assert(eq(u32, n, 0));
}

Test(wire_records, rejects_truncated_payload)
{
	uint8_t data[512];
	size_t len = build_records(data, 10, SEED);
	unsigned n;

	/* Only the WRITE, cut anywhere. */
	for (size_t cut = 1; cut < 164; cut++) {
		cr_assert(eq(int, walk(data, cut, SEED, 10, &n, NULL), -EPROTO), "cut %zu", cut);
		cr_assert(eq(u32, n, 0));
	}
	/* The chain cut inside its last header. */
	cr_assert(eq(int, walk(data, len - 1, SEED, 10, &n, NULL), -EPROTO));
	cr_assert(eq(u32, n, 2));
}

Test(wire_records, rejects_corrupted_payload)
{
	uint8_t data[512];
	size_t len = build_records(data, 10, SEED);
	unsigned n;

	data[64 + 50] ^= 0x40;
	cr_assert(eq(int, walk(data, len, SEED, 10, &n, NULL), -EBADMSG));
	cr_assert(eq(u32, n, 0));
	data[64 + 50] ^= 0x40;
	data[164 + 20] ^= 1; /* the TRIM's header */
	cr_assert(eq(int, walk(data, len, SEED, 10, &n, NULL), -EBADMSG));
	cr_assert(eq(u32, n, 1));
}

/* The frame checksum covers a JOURNAL_DATA's fixed part; its records are
 * guarded by their own checksums, which the secondary checks with
 * wire_records_next before storing anything. Between them every byte is
 * covered: a flip anywhere is refused, at one level or the other. */
Test(wire_records, journal_data_every_byte_is_guarded)
{
	static uint8_t frame[WIRE_HDR_SIZE + 40 + 512];
	uint8_t records[512];
	struct wire_msg m = {.hdr.type = WIRE_JOURNAL_DATA}, d;
	size_t len = build_records(records, 10, SEED), n;
	unsigned nrec;

	m.u.journal_data.req_id = 3;
	m.u.journal_data.first_seq = 10;
	m.u.journal_data.last_seq = 12;
	m.u.journal_data.nrecords = 3;
	m.u.journal_data.raw_len = (uint32_t)len;
	m.u.journal_data.data = records;
	m.u.journal_data.data_len = (uint32_t)len;
	n = encode(&m, frame, sizeof(frame));
	cr_assert(eq(u64, n, WIRE_HDR_SIZE + 40 + len));
	cr_assert(eq(int, wire_decode(frame, n, &d), 0));
	cr_assert(eq(
	    int, walk(d.u.journal_data.data, d.u.journal_data.data_len, SEED, 10, &nrec, NULL), 0));
	cr_assert(eq(u32, nrec, 3));

	/* The fixed part: the frame is refused. */
	for (unsigned bit = 0; bit < 40 * 8; bit++) {
		frame[WIRE_HDR_SIZE + bit / 8] ^= (uint8_t)(1u << (bit % 8));
		cr_assert(eq(int, wire_decode(frame, n, &d), -EBADMSG), "bit %u", bit);
		frame[WIRE_HDR_SIZE + bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	/* The records: the frame decodes, the record walk refuses it. */
	for (size_t i = 0; i < len; i++) {
		int r;

		frame[WIRE_HDR_SIZE + 40 + i] ^= 0x10;
		cr_assert(eq(int, wire_decode(frame, n, &d), 0), "byte %zu", i);
		r = walk(d.u.journal_data.data, d.u.journal_data.data_len, SEED, 10, &nrec, NULL);
		cr_assert(r == -EBADMSG || r == -EPROTO, "byte %zu: %d", i, r);
		frame[WIRE_HDR_SIZE + 40 + i] ^= 0x10;
	}
}

Test(wire_records, rejects_trailing_garbage)
{
	uint8_t data[512];
	size_t len = build_records(data, 10, SEED);
	uint64_t expect;
	unsigned n;

	cr_assert(eq(int, walk(data, len, SEED, 10, &n, &expect), 0));
	cr_assert(eq(u32, n, 3));
	cr_assert(eq(u64, expect, 13));
	for (size_t extra = 1; extra <= 100; extra += 33) {
		memset(data + len, 0xa5, extra);
		cr_assert(eq(int, walk(data, len + extra, SEED, 10, &n, NULL), -EPROTO));
		cr_assert(eq(u32, n, 3));
	}
	/* Zero padding is garbage too: records are packed without it. */
	memset(data + len, 0, 64);
	cr_assert(eq(int, walk(data, len + 64, SEED, 10, &n, NULL), -EPROTO));
}

Test(wire_records, rejects_invalid_records)
{
	uint8_t data[512];
	struct journal_rec rec;
	unsigned n;

	/* A TRIM that claims a payload: journal_rec_validate refuses it. */
	memset(&rec, 0, sizeof(rec));
	rec.kind = JOURNAL_REC_TRIM;
	rec.seq = 10;
	rec.length = 4;
	rec.payload_len = 4;
	journal_rec_encode(&rec, "abcd", SEED, data);
	memcpy(data + 64, "abcd", 4);
	cr_assert(eq(int, walk(data, 68, SEED, 10, &n, NULL), -EPROTO));
	/* An unknown kind. */
	memset(&rec, 0, sizeof(rec));
	rec.kind = 99;
	rec.seq = 10;
	journal_rec_encode(&rec, NULL, SEED, data);
	cr_assert(eq(int, walk(data, 64, SEED, 10, &n, NULL), -EPROTO));
}

/* ---- Authentication ------------------------------------------------------ */

static const char secret_a[] = "correct horse battery staple";
static const char secret_b[] = "correct horse battery stapler";

Test(auth, mac_verifies_only_with_the_right_inputs)
{
	struct auth_key ka, kb;
	uint8_t na[WIRE_NONCE_LEN], nb[WIRE_NONCE_LEN], mac[WIRE_MAC_LEN];

	cr_assert(eq(int, auth_init(), 0));
	cr_assert(eq(int, auth_key_from_bytes(secret_a, strlen(secret_a), &ka), 0));
	cr_assert(eq(int, auth_key_from_bytes(secret_b, strlen(secret_b), &kb), 0));
	auth_nonce(na);
	auth_nonce(nb);
	cr_assert(ne(int, memcmp(na, nb, WIRE_NONCE_LEN), 0));

	auth_mac(&ka, WIRE_ROLE_PRIMARY, na, nb, mac);
	cr_assert(eq(int, auth_verify(&ka, WIRE_ROLE_PRIMARY, na, nb, mac), 0));
	/* Wrong key, the other role, the nonces swapped. */
	cr_assert(eq(int, auth_verify(&kb, WIRE_ROLE_PRIMARY, na, nb, mac), -EACCES));
	cr_assert(eq(int, auth_verify(&ka, WIRE_ROLE_SECONDARY, na, nb, mac), -EACCES));
	cr_assert(eq(int, auth_verify(&ka, WIRE_ROLE_PRIMARY, nb, na, mac), -EACCES));
	/* Any bit of the MAC. */
	for (unsigned i = 0; i < WIRE_MAC_LEN * 8; i++) {
		mac[i / 8] ^= (uint8_t)(1u << (i % 8));
		cr_assert(eq(int, auth_verify(&ka, WIRE_ROLE_PRIMARY, na, nb, mac), -EACCES));
		mac[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	/* The peer's MAC (its role, its nonce first) differs from ours: a MAC
	 * reflected back doesn't pass. */
	{
		uint8_t peer[WIRE_MAC_LEN];

		auth_mac(&ka, WIRE_ROLE_SECONDARY, nb, na, peer);
		cr_assert(ne(int, memcmp(peer, mac, WIRE_MAC_LEN), 0));
		cr_assert(eq(int, auth_verify(&ka, WIRE_ROLE_SECONDARY, nb, na, peer), 0));
		cr_assert(eq(int, auth_verify(&ka, WIRE_ROLE_SECONDARY, nb, na, mac), -EACCES));
	}
	auth_key_wipe(&ka);
	for (unsigned i = 0; i < AUTH_KEY_LEN; i++)
		cr_assert(eq(u8, ka.key[i], 0));
}

Test(auth, key_from_bytes)
{
	struct auth_key k1, k2, k3;

	cr_assert(eq(int, auth_key_from_bytes(secret_a, 15, &k1), -EINVAL));
	cr_assert(eq(int, auth_key_from_bytes(secret_a, 16, &k1), 0));
	cr_assert(eq(int, auth_key_from_bytes(secret_a, 16, &k2), 0));
	cr_assert(eq(int, memcmp(&k1, &k2, sizeof(k1)), 0));
	cr_assert(eq(int, auth_key_from_bytes(secret_a, 17, &k3), 0));
	cr_assert(ne(int, memcmp(&k1, &k3, sizeof(k1)), 0));
}

static char *
write_secret(const char *dir, const char *name, const void *data, size_t len, mode_t mode)
{
	char *path;
	int fd;

	cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert(eq(i64, (int64_t)write(fd, data, len), (int64_t)len));
	cr_assert(eq(int, fchmod(fd, mode), 0));
	close(fd);
	return path;
}

Test(auth, key_from_file)
{
	char *dir = test_tmpdir();
	struct auth_key kf, kb;
	char err[256];
	char *path, *missing;
	uint8_t *big;

	cr_assert(dir != NULL);
	/* 0600: the key is BLAKE2b of the bytes, newline included. */
	path = write_secret(dir, "ok", "a secret of 26 bytes long\n", 26, 0600);
	err[0] = '\0';
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), 0));
	cr_assert(eq(int, auth_key_from_bytes("a secret of 26 bytes long\n", 26, &kb), 0));
	cr_assert(eq(int, memcmp(&kf, &kb, sizeof(kf)), 0));
	cr_assert(eq(int, chmod(path, 0400), 0));
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), 0));

	/* Readable by others: refused, with a message naming the file. */
	cr_assert(eq(int, chmod(path, 0644), 0));
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), -EPERM));
	cr_assert(ne(ptr, strstr(err, path), NULL), "%s", err);
	cr_assert(ne(ptr, strstr(err, "chmod 600"), NULL), "%s", err);
	cr_assert(eq(int, chmod(path, 0640), 0));
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), -EPERM));
	free(path);

	/* Too short. */
	path = write_secret(dir, "short", "only 15 bytes!!", 15, 0600);
	err[0] = '\0';
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), -EINVAL));
	cr_assert(ne(ptr, strstr(err, "at least 16"), NULL), "%s", err);
	free(path);
	path = write_secret(dir, "empty", "", 0, 0600);
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), -EINVAL));
	free(path);

	/* Too long (64 KiB is the most). */
	big = calloc(1, (64u << 10) + 1);
	cr_assert(big != NULL);
	path = write_secret(dir, "max", big, 64u << 10, 0600);
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), 0));
	free(path);
	path = write_secret(dir, "big", big, (64u << 10) + 1, 0600);
	err[0] = '\0';
	cr_assert(eq(int, auth_key_from_file(path, &kf, err, sizeof(err)), -EFBIG));
	cr_assert(ne(ptr, strstr(err, "longer than"), NULL), "%s", err);
	free(path);
	free(big);

	/* Missing, and not a file. */
	cr_assert(asprintf(&missing, "%s/missing", dir) > 0);
	err[0] = '\0';
	cr_assert(eq(int, auth_key_from_file(missing, &kf, err, sizeof(err)), -ENOENT));
	cr_assert(ne(ptr, strstr(err, missing), NULL), "%s", err);
	free(missing);
	cr_assert(eq(int, chmod(dir, 0700), 0));
	cr_assert(eq(int, auth_key_from_file(dir, &kf, err, sizeof(err)), -EINVAL));
	/* No message buffer is fine too. */
	cr_assert(eq(int, auth_key_from_file(dir, &kf, NULL, 0), -EINVAL));

	test_rm_rf(dir);
	free(dir);
}
