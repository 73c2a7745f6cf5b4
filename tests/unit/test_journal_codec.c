/* Journal codec: record headers and superblocks, round trips and every
 * corrupted field. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "journal/journal.h"
#include "jrbd/journal_format.h"
#include "leak_check.h"

#define SEED 0x0123456789abcdefull

static void
fini(void)
{
	test_leak_check();
}

TestSuite(journal_codec, .fini = fini);

static uint64_t
le64_at(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void
put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void
put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Re-seals a hand-edited header so only the semantic checks can reject it. */
static void
reseal_hdr(uint8_t *hdr, uint64_t seed)
{
	put_le64(hdr + 56, journal_checksum(hdr, 56, seed));
}

static void
reseal_sb(uint8_t *sb)
{
	put_le64(sb + 4088, journal_checksum(sb, 4088, 0));
}

static struct journal_rec
write_rec(uint32_t len)
{
	struct journal_rec r = {
	    .kind = JOURNAL_REC_WRITE,
	    .flags = JOURNAL_RF_FUA,
	    .volume = 3,
	    .payload_len = len,
	    .epoch = 7,
	    .seq = 123456789,
	    .offset = 1ull << 40,
	    .length = len,
	    .timestamp_ns = 1700000000123456789ull,
	};
	return r;
}

Test(journal_codec, record_round_trip)
{
	uint8_t payload[4096], hdr[64];
	struct journal_rec in = write_rec(sizeof(payload)), out;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7 + 1);
	journal_rec_encode(&in, payload, SEED, hdr);
	cr_assert(eq(int, journal_rec_decode(hdr, sizeof(hdr), SEED, &out), 0));
	cr_assert(eq(u8, out.kind, in.kind));
	cr_assert(eq(u8, out.flags, in.flags));
	cr_assert(eq(u16, out.volume, in.volume));
	cr_assert(eq(u32, out.payload_len, in.payload_len));
	cr_assert(eq(u32, out.epoch, in.epoch));
	cr_assert(eq(u64, out.seq, in.seq));
	cr_assert(eq(u64, out.offset, in.offset));
	cr_assert(eq(u64, out.length, in.length));
	cr_assert(eq(u64, out.timestamp_ns, in.timestamp_ns));
	cr_assert(eq(u64, out.payload_csum, journal_checksum(payload, sizeof(payload), SEED)));
	cr_assert(eq(int, journal_rec_check_payload(&out, payload, SEED), 0));
}

Test(journal_codec, record_is_little_endian)
{
	uint8_t hdr[64];
	struct journal_rec in = write_rec(0);

	in.kind = JOURNAL_REC_TRIM;
	in.length = 0x1122334455ull;
	journal_rec_encode(&in, NULL, SEED, hdr);
	cr_assert(eq(u8, hdr[0], 'J'));
	cr_assert(eq(u8, hdr[1], 'R'));
	cr_assert(eq(u8, hdr[2], 'B'));
	cr_assert(eq(u8, hdr[3], 'R'));
	cr_assert(eq(u8, hdr[4], JOURNAL_REC_TRIM));
	cr_assert(eq(u8, hdr[6], 3));
	cr_assert(eq(u8, hdr[7], 0));
	cr_assert(eq(u64, le64_at(hdr + 16), in.seq));
	cr_assert(eq(u64, le64_at(hdr + 32), in.length));
	cr_assert(eq(u64, le64_at(hdr + 48), 0)); /* no payload: csum 0 */
	cr_assert(eq(u64, le64_at(hdr + 56), journal_checksum(hdr, 56, SEED)));
}

Test(journal_codec, every_kind_round_trips)
{
	static const uint8_t kinds[] = {JOURNAL_REC_WRITE, JOURNAL_REC_TRIM,
	                                JOURNAL_REC_ZERO,  JOURNAL_REC_MARKER,
	                                JOURNAL_REC_BASE,  JOURNAL_REC_BASE_ZERO};
	uint8_t payload[512] = {1, 2, 3}, hdr[64];

	for (size_t i = 0; i < sizeof(kinds); i++) {
		struct journal_rec in = {.kind = kinds[i], .seq = i + 1}, out;
		bool data = kinds[i] == JOURNAL_REC_WRITE || kinds[i] == JOURNAL_REC_BASE;

		if (data)
			in.payload_len = (uint32_t)(in.length = sizeof(payload));
		else if (kinds[i] != JOURNAL_REC_MARKER)
			in.length = 1 << 20;
		journal_rec_encode(&in, payload, SEED, hdr);
		cr_assert(eq(int, journal_rec_decode(hdr, sizeof(hdr), SEED, &out), 0), "kind %u",
		          kinds[i]);
		cr_assert(eq(u8, out.kind, kinds[i]));
		cr_assert(eq(int, journal_rec_check_payload(&out, payload, SEED), 0));
		cr_assert_str_neq(journal_rec_kind_name(kinds[i]), "unknown");
	}
	cr_assert_str_eq(journal_rec_kind_name(0), "unknown");
	cr_assert_str_eq(journal_rec_kind_name(200), "unknown");
}

Test(journal_codec, every_corrupted_header_byte_is_rejected)
{
	uint8_t payload[100] = {9}, hdr[64], bad[64];
	struct journal_rec in = write_rec(sizeof(payload)), out;

	journal_rec_encode(&in, payload, SEED, hdr);
	for (size_t i = 0; i < sizeof(hdr); i++) {
		for (int bit = 0; bit < 8; bit++) {
			int r;

			memcpy(bad, hdr, sizeof(hdr));
			bad[i] ^= (uint8_t)(1u << bit);
			r = journal_rec_decode(bad, sizeof(bad), SEED, &out);
			if (i < 4)
				cr_assert(eq(int, r, -EPROTO), "byte %zu bit %d", i, bit);
			else
				cr_assert(eq(int, r, -EBADMSG), "byte %zu bit %d", i, bit);
		}
	}
}

Test(journal_codec, short_header_is_rejected)
{
	uint8_t hdr[64];
	struct journal_rec in = write_rec(0), out;

	in.kind = JOURNAL_REC_MARKER;
	in.length = 0;
	journal_rec_encode(&in, NULL, SEED, hdr);
	cr_assert(eq(int, journal_rec_decode(hdr, 63, SEED, &out), -EPROTO));
	cr_assert(eq(int, journal_rec_decode(hdr, 64, SEED, &out), 0));
}

/* Fields with a good checksum but impossible values. */
Test(journal_codec, invalid_fields_with_good_checksum_are_rejected)
{
	uint8_t payload[64] = {0}, hdr[64], bad[64];
	struct journal_rec in = write_rec(sizeof(payload)), out;

	journal_rec_encode(&in, payload, SEED, hdr);

	/* unknown kinds */
	for (unsigned k = 0; k < 256; k++) {
		if (k >= JOURNAL_REC_WRITE && k <= JOURNAL_REC_BASE_ZERO)
			continue;
		memcpy(bad, hdr, 64);
		bad[4] = (uint8_t)k;
		reseal_hdr(bad, SEED);
		cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO), "kind %u", k);
	}
	/* payload_len above the maximum, even when length agrees */
	memcpy(bad, hdr, 64);
	put_le32(bad + 8, JOURNAL_MAX_PAYLOAD + 1);
	put_le64(bad + 32, JOURNAL_MAX_PAYLOAD + 1);
	reseal_hdr(bad, SEED);
	cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO));
	memcpy(bad, hdr, 64);
	put_le32(bad + 8, UINT32_MAX);
	put_le64(bad + 32, UINT32_MAX);
	reseal_hdr(bad, SEED);
	cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO));
	/* WRITE whose payload doesn't cover its length */
	memcpy(bad, hdr, 64);
	put_le64(bad + 32, sizeof(payload) + 1);
	reseal_hdr(bad, SEED);
	cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO));
	/* TRIM with a payload */
	memcpy(bad, hdr, 64);
	bad[4] = JOURNAL_REC_TRIM;
	reseal_hdr(bad, SEED);
	cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO));
	/* MARKER with a length */
	memcpy(bad, hdr, 64);
	bad[4] = JOURNAL_REC_MARKER;
	put_le32(bad + 8, 0);
	put_le64(bad + 48, 0);
	reseal_hdr(bad, SEED);
	cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO));
	/* offset + length wrapping */
	memcpy(bad, hdr, 64);
	put_le64(bad + 24, UINT64_MAX - 10);
	reseal_hdr(bad, SEED);
	cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO));
	/* no payload but a payload checksum */
	memcpy(bad, hdr, 64);
	bad[4] = JOURNAL_REC_ZERO;
	put_le32(bad + 8, 0);
	reseal_hdr(bad, SEED);
	cr_assert(eq(int, journal_rec_decode(bad, 64, SEED, &out), -EPROTO));
}

Test(journal_codec, corrupted_payload_is_rejected)
{
	uint8_t payload[4096], hdr[64];
	struct journal_rec in = write_rec(sizeof(payload)), out;

	memset(payload, 0x5a, sizeof(payload));
	journal_rec_encode(&in, payload, SEED, hdr);
	cr_assert(eq(int, journal_rec_decode(hdr, 64, SEED, &out), 0));
	for (size_t i = 0; i < sizeof(payload); i += 511) {
		payload[i] ^= 0x80;
		cr_assert(eq(int, journal_rec_check_payload(&out, payload, SEED), -EBADMSG));
		payload[i] ^= 0x80;
	}
	cr_assert(eq(int, journal_rec_check_payload(&out, payload, SEED), 0));
}

/* A record written under one journal's uuid doesn't validate in another:
 * a reformatted journal never replays the old one's records. */
Test(journal_codec, checksum_seed_binds_records_to_their_journal)
{
	uint8_t payload[256] = {7}, hdr[64];
	struct journal_rec in = write_rec(sizeof(payload)), out;

	journal_rec_encode(&in, payload, SEED, hdr);
	cr_assert(eq(int, journal_rec_decode(hdr, 64, SEED + 1, &out), -EBADMSG));
	cr_assert(eq(int, journal_rec_decode(hdr, 64, SEED, &out), 0));
	cr_assert(eq(int, journal_rec_check_payload(&out, payload, SEED + 1), -EBADMSG));
	cr_assert(ne(u64, journal_checksum(payload, sizeof(payload), 1),
	             journal_checksum(payload, sizeof(payload), 2)));
}

/* --- superblock --- */

static struct journal_sb
sample_sb(void)
{
	struct journal_sb sb;

	memset(&sb, 0, sizeof(sb));
	for (int i = 0; i < 16; i++)
		sb.uuid[i] = (uint8_t)(0xa0 + i);
	sb.seed = le64_at(sb.uuid);
	sb.journal_size = 64ull << 20;
	sb.area_start = JOURNAL_AREA_START;
	sb.area_size = (64ull << 20) - 8192;
	sb.align = 4096;
	sb.epoch = 17;
	sb.sb_gen = 99;
	sb.tail_lpos = 1ull << 33;
	sb.tail_seq = 1000;
	sb.ckpt_lpos = (1ull << 33) + 4096;
	sb.ckpt_seq = 1010;
	sb.created_ns = 1;
	sb.updated_ns = 2;
	strcpy(sb.group, "db-group");
	sb.nvolumes = 2;
	sb.role = JOURNAL_ROLE_MASTER;
	strcpy(sb.volumes[0], "vol0");
	memset(sb.volumes[1], 'x', JOURNAL_VOLNAME_LEN - 1);
	sb.consumers[2].id = 42;
	sb.consumers[2].released_seq = 1005;
	sb.consumers[2].received_seq = 1100;
	return sb;
}

Test(journal_codec, superblock_round_trip)
{
	static uint8_t buf[4096];
	struct journal_sb in = sample_sb(), out;

	journal_sb_encode(&in, buf);
	cr_assert(eq(int, memcmp(buf, "JRBDJRNL", 8), 0));
	cr_assert(eq(u64, le64_at(buf + 72), in.tail_lpos));
	cr_assert(eq(int, journal_sb_decode(buf, sizeof(buf), &out), 0));
	cr_assert(eq(int, memcmp(&in, &out, sizeof(in)), 0));
	cr_assert(eq(u64, out.seed, le64_at(in.uuid)));
	/* bytes 1728..4087 stay zero */
	for (size_t i = 1728; i < 4088; i++)
		cr_assert(eq(u8, buf[i], 0));
}

Test(journal_codec, superblock_short_buffer_is_rejected)
{
	static uint8_t buf[4096];
	struct journal_sb in = sample_sb(), out;

	journal_sb_encode(&in, buf);
	cr_assert(eq(int, journal_sb_decode(buf, 4095, &out), -EPROTO));
}

Test(journal_codec, superblock_checksum_mismatch_is_ebadmsg)
{
	static uint8_t buf[4096];
	struct journal_sb in = sample_sb(), out;

	journal_sb_encode(&in, buf);
	for (size_t i = 8; i < 4096; i += 37) {
		buf[i] ^= 1;
		cr_assert(eq(int, journal_sb_decode(buf, 4096, &out), -EBADMSG), "byte %zu", i);
		buf[i] ^= 1;
	}
	buf[0] ^= 1;
	cr_assert(eq(int, journal_sb_decode(buf, 4096, &out), -EPROTO)); /* magic first */
}

/* Each field check, with a valid checksum. */
Test(journal_codec, superblock_bad_fields_are_eproto)
{
	static uint8_t good[4096], buf[4096];
	struct journal_sb in = sample_sb(), out;
	struct {
		size_t off;
		unsigned width;
		uint64_t value;
		const char *what;
	} cases[] = {
	    {8, 4, 2, "version"},
	    {12, 4, 512, "sb_size"},
	    {40, 8, 4096, "area_start"},
	    {48, 8, 0, "area_size 0"},
	    {48, 8, 64ull << 20, "area past journal_size"},
	    {48, 8, UINT64_MAX - 4095, "area_start + area_size overflows"},
	    {32, 8, 8192, "journal_size too small"},
	    {56, 4, 256, "align too small"},
	    {56, 4, 8192, "align too big"},
	    {56, 4, 3072, "align not a power of two"},
	    {48, 8, (64ull << 20) - 8192 - 512, "area_size not a multiple of align"},
	    {72, 8, (1ull << 33) + 8192, "tail_lpos past ckpt_lpos"},
	    {80, 8, 2000, "tail_seq past ckpt_seq"},
	    {88, 8, (1ull << 35), "ckpt more than one area past the tail"},
	    {184, 2, 33, "nvolumes"},
	};

	journal_sb_encode(&in, good);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		memcpy(buf, good, sizeof(buf));
		for (unsigned i = 0; i < cases[c].width; i++)
			buf[cases[c].off + i] = (uint8_t)(cases[c].value >> (8 * i));
		reseal_sb(buf);
		cr_assert(eq(int, journal_sb_decode(buf, 4096, &out), -EPROTO), "%s",
		          cases[c].what);
	}
	/* group name without its NUL */
	memcpy(buf, good, sizeof(buf));
	memset(buf + 120, 'g', JOURNAL_GROUPNAME_LEN);
	reseal_sb(buf);
	cr_assert(eq(int, journal_sb_decode(buf, 4096, &out), -EPROTO));
	/* a volume name without its NUL, even past nvolumes */
	memcpy(buf, good, sizeof(buf));
	memset(buf + 192 + 31 * JOURNAL_VOLNAME_LEN, 'v', JOURNAL_VOLNAME_LEN);
	reseal_sb(buf);
	cr_assert(eq(int, journal_sb_decode(buf, 4096, &out), -EPROTO));
	/* and the unmodified one still decodes */
	cr_assert(eq(int, journal_sb_decode(good, 4096, &out), 0));
}

Test(journal_codec, superblock_accepts_every_alignment)
{
	static uint8_t buf[4096];
	struct journal_sb in = sample_sb(), out;

	for (uint32_t a = 512; a <= 4096; a *= 2) {
		in.align = a;
		journal_sb_encode(&in, buf);
		cr_assert(eq(int, journal_sb_decode(buf, 4096, &out), 0), "align %u", a);
		cr_assert(eq(u32, out.align, a));
	}
}

static void
encode_pair(uint8_t *buf8192, uint64_t gen_a, uint64_t gen_b)
{
	struct journal_sb sb = sample_sb();

	sb.sb_gen = gen_a;
	sb.epoch = 1;
	journal_sb_encode(&sb, buf8192);
	sb.sb_gen = gen_b;
	sb.epoch = 2;
	journal_sb_encode(&sb, buf8192 + 4096);
}

Test(journal_codec, pick_takes_the_newer_copy)
{
	static uint8_t buf[8192];
	struct journal_sb out;
	unsigned slot = 9;

	encode_pair(buf, 5, 6);
	cr_assert(eq(int, journal_sb_pick(buf, &out, &slot), 0));
	cr_assert(eq(u32, slot, 1));
	cr_assert(eq(u64, out.sb_gen, 6));
	encode_pair(buf, 8, 7);
	cr_assert(eq(int, journal_sb_pick(buf, &out, &slot), 0));
	cr_assert(eq(u32, slot, 0));
	cr_assert(eq(u64, out.sb_gen, 8));
	encode_pair(buf, 3, 3); /* only after format; A wins */
	cr_assert(eq(int, journal_sb_pick(buf, &out, &slot), 0));
	cr_assert(eq(u32, slot, 0));
}

Test(journal_codec, pick_falls_back_to_the_other_copy)
{
	static uint8_t buf[8192];
	struct journal_sb out;
	unsigned slot = 9;

	/* the newer copy (B) was torn: A, the previous state, wins */
	encode_pair(buf, 5, 6);
	buf[4096 + 100] ^= 0xff;
	cr_assert(eq(int, journal_sb_pick(buf, &out, &slot), 0));
	cr_assert(eq(u32, slot, 0));
	cr_assert(eq(u64, out.sb_gen, 5));
	/* the newer copy (A) was torn */
	encode_pair(buf, 8, 7);
	buf[200] ^= 0xff;
	cr_assert(eq(int, journal_sb_pick(buf, &out, &slot), 0));
	cr_assert(eq(u32, slot, 1));
	cr_assert(eq(u64, out.sb_gen, 7));
}

Test(journal_codec, pick_fails_when_both_copies_are_bad)
{
	static uint8_t buf[8192];
	struct journal_sb out;
	unsigned slot = 9;

	encode_pair(buf, 5, 6);
	buf[100] ^= 1;
	buf[4096 + 100] ^= 1;
	cr_assert(eq(int, journal_sb_pick(buf, &out, &slot), -EBADMSG));
	cr_assert(eq(u32, slot, 9));
	memset(buf, 0, sizeof(buf));
	cr_assert(eq(int, journal_sb_pick(buf, &out, &slot), -EPROTO));
}
