/*
 * libFuzzer target: the replication codec (src/repl/wire_codec.c), as the
 * link drives it: wire_frame_peek() over a byte stream, wire_decode() of
 * each whole frame, and wire_records_next() over an uncompressed
 * JOURNAL_DATA's records.
 *
 * Input layout: byte 0 holds options, the rest is the stream of frames.
 *   bit 0 clear: the harness recomputes each frame's header and payload
 *                checksums first, so mutations reach the field checks
 *                instead of dying at the checksum;
 *   bit 1 clear: likewise for the records inside JOURNAL_DATA frames
 *                (seed FUZZ_SEED), so the record walk gets past them.
 * The seeds in tests/fuzz/corpus/wire/ are valid frames with byte 0 = 0.
 *
 * Invariants checked: errors are only -EPROTO/-EBADMSG; a decoded frame
 * re-encodes to the same size and, except for an ERROR's sanitized text,
 * the same bytes; decoding what we encode gives the message back; records
 * walked lie inside the data with consecutive seqs; decoded texts fill the
 * rest of their payload; a BITMAP's bits lie inside the frame and match
 * nbits.
 */
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "journal/journal.h"
#include "repl/wire_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SEED 0x6a72626477697265ull /* seed of the records in the seeds */
#define OPT_KEEP_FRAME_CSUMS 1u
#define OPT_KEEP_RECORD_CSUMS 2u

/* Invariant of the codec broken: stop here so the fuzzer reports it. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

static uint8_t out[WIRE_HDR_SIZE + WIRE_MAX_PAYLOAD];

static uint32_t
get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static void
put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

/* Fixes the checksums of the records in data[0, len) where they fit. */
static void
fix_records(uint8_t *data, size_t len)
{
	size_t off = 0;

	while (len - off >= JOURNAL_REC_HDR_SIZE) {
		uint8_t *p = data + off;
		uint32_t plen = get32(p + 8);

		if (plen > len - off - JOURNAL_REC_HDR_SIZE)
			plen = 0;
		put64(p + 48,
		      plen ? journal_checksum(p + JOURNAL_REC_HDR_SIZE, plen, FUZZ_SEED) : 0);
		put64(p + 56, journal_checksum(p, 56, FUZZ_SEED));
		off += JOURNAL_REC_HDR_SIZE + plen;
	}
}

/* Fixes the frame at p (len bytes available) where it fits. */
static void
fix_frame(uint8_t *p, size_t len, unsigned opts)
{
	uint32_t plen;

	if (len < WIRE_HDR_SIZE)
		return;
	plen = get32(p + 8);
	if (plen <= WIRE_MAX_PAYLOAD && plen <= len - WIRE_HDR_SIZE) {
		bool is_data = p[4] == WIRE_JOURNAL_DATA && p[5] == 0;

		if (!(opts & OPT_KEEP_RECORD_CSUMS) && is_data && plen > 40)
			fix_records(p + WIRE_HDR_SIZE + 40, plen - 40);
		/* A JOURNAL_DATA's checksum covers its fixed part (wire.h). */
		put64(p + 16,
		      plen ? XXH3_64bits(p + WIRE_HDR_SIZE, is_data && plen > 40 ? 40 : plen) : 0);
	}
	put64(p + 24, XXH3_64bits(p, 24));
}

static void
walk_records(const struct wire_journal_data *jd)
{
	struct journal_rec rec;
	const void *payload;
	uint64_t expect = jd->first_seq;
	size_t pos = 0, prev = 0;
	uint32_t n = 0;
	int r;

	while ((r = wire_records_next(jd->data, jd->data_len, FUZZ_SEED, &pos, &expect, &rec,
	                              &payload)) == 1) {
		const uint8_t *pl = payload;

		FUZZ_CHECK(rec.seq == jd->first_seq + n);
		FUZZ_CHECK(expect == rec.seq + 1);
		FUZZ_CHECK(pl == jd->data + prev + JOURNAL_REC_HDR_SIZE);
		FUZZ_CHECK(pos == prev + JOURNAL_REC_HDR_SIZE + rec.payload_len);
		FUZZ_CHECK(pos <= jd->data_len);
		FUZZ_CHECK(rec.payload_len <= JOURNAL_MAX_PAYLOAD);
		prev = pos;
		n++;
		FUZZ_CHECK(n <= jd->data_len / JOURNAL_REC_HDR_SIZE);
	}
	FUZZ_CHECK(r == 0 || r == -EPROTO || r == -EBADMSG);
	if (r == 0)
		FUZZ_CHECK(pos == jd->data_len);
}

static void
check_decoded(const struct wire_msg *m, const uint8_t *frame, size_t len)
{
	struct wire_msg again;
	ssize_t n;

	FUZZ_CHECK(wire_encoded_size(m) == len);
	FUZZ_CHECK(strcmp(wire_type_name(m->hdr.type), "unknown") != 0);
	n = wire_encode(m, out, sizeof(out));
	FUZZ_CHECK(n == (ssize_t)len);
	FUZZ_CHECK(wire_encode(m, out, len - 1) == -ENOSPC);
	FUZZ_CHECK(wire_decode(out, len, &again) == 0);
	FUZZ_CHECK(again.hdr.type == m->hdr.type);
	if (m->hdr.type == WIRE_ERROR) {
		/* The text was sanitized: same length and code, clean now. */
		FUZZ_CHECK(again.u.error.code == m->u.error.code);
		FUZZ_CHECK(strcmp(again.u.error.message, m->u.error.message) == 0);
		FUZZ_CHECK(strlen(m->u.error.message) == len - WIRE_HDR_SIZE - 4);
	} else {
		FUZZ_CHECK(memcmp(out, frame, len) == 0);
	}
	switch (m->hdr.type) {
	case WIRE_HELLO:
		FUZZ_CHECK(strlen(m->u.hello.site) <= WIRE_SITE_LEN);
		break;
	case WIRE_PAIR_CREATE:
		FUZZ_CHECK(m->u.pair_create.nvolumes <= JOURNAL_MAX_VOLUMES);
		for (unsigned i = 0; i < m->u.pair_create.nvolumes; i++)
			FUZZ_CHECK(strlen(m->u.pair_create.volumes[i].name) > 0);
		break;
	case WIRE_PAIR_OK:
		FUZZ_CHECK(m->u.pair_ok.state >= WIRE_STATE_COPY &&
		           m->u.pair_ok.state <= WIRE_STATE_SSWS);
		break;
	case WIRE_PRIMARY_STATUS:
		FUZZ_CHECK(m->u.primary_status.state >= WIRE_STATE_COPY &&
		           m->u.primary_status.state <= WIRE_STATE_SSWS);
		FUZZ_CHECK(strlen(m->u.primary_status.primary_addr) <= WIRE_ADDR_LEN);
		FUZZ_CHECK(strlen(m->u.primary_status.reason) == len - WIRE_HDR_SIZE - 192);
		break;
	case WIRE_PAIR_CMD:
		FUZZ_CHECK((m->u.pair_cmd.cmd & ~WIRE_CMD_REPLY) >= WIRE_CMD_RESYNC &&
		           (m->u.pair_cmd.cmd & ~WIRE_CMD_REPLY) <= WIRE_CMD_SUSPEND);
		if (m->u.pair_cmd.flags & WIRE_CMD_REFUSED)
			FUZZ_CHECK(m->u.pair_cmd.cmd & WIRE_CMD_REPLY);
		FUZZ_CHECK(strlen(m->u.pair_cmd.text) == len - WIRE_HDR_SIZE - 40);
		break;
	case WIRE_BITMAP:
		FUZZ_CHECK(m->u.bitmap.bits == frame + WIRE_HDR_SIZE + 24);
		FUZZ_CHECK(m->u.bitmap.nbits <= WIRE_BITMAP_MAX_BITS);
		FUZZ_CHECK(len == WIRE_HDR_SIZE + 24 + ((size_t)m->u.bitmap.nbits + 7) / 8);
		FUZZ_CHECK(m->u.bitmap.volume < JOURNAL_MAX_VOLUMES);
		FUZZ_CHECK(m->u.bitmap.nbits > 0 || (m->u.bitmap.flags & WIRE_BITMAP_LAST));
		FUZZ_CHECK((m->u.bitmap.region_size & (m->u.bitmap.region_size - 1)) == 0);
		break;
	case WIRE_JOURNAL_DATA:
		FUZZ_CHECK(m->u.journal_data.data == frame + WIRE_HDR_SIZE + 40);
		FUZZ_CHECK(m->u.journal_data.raw_len <= WIRE_MAX_DATA);
		if (m->u.journal_data.nrecords == 0)
			FUZZ_CHECK(m->u.journal_data.data_len == 0);
		else if (m->u.journal_data.compression == WIRE_COMP_NONE)
			walk_records(&m->u.journal_data);
		break;
	default:
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned opts;
	uint8_t *buf;
	size_t len, pos = 0;

	if (size < 1)
		return 0;
	opts = data[0];
	len = size - 1;
	/* A copy: the harness fixes checksums in place, and the decoder must
	 * not read a byte past len (ASan sees the exact allocation). */
	buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, len);
	while (pos < len) {
		struct wire_msg m;
		struct wire_hdr h;
		ssize_t n;
		int r;

		if (!(opts & OPT_KEEP_FRAME_CSUMS))
			fix_frame(buf + pos, len - pos, opts);
		n = wire_frame_peek(buf + pos, len - pos, &h);
		if (n == 0) {
			FUZZ_CHECK(len - pos < WIRE_HDR_SIZE);
			FUZZ_CHECK(wire_decode(buf + pos, len - pos, &m) == -EPROTO);
			break;
		}
		if (n < 0) {
			/* The link closes here; keep exploring the rest. */
			FUZZ_CHECK(n == -EPROTO || n == -EBADMSG);
			FUZZ_CHECK(wire_decode(buf + pos, len - pos, &m) == n);
			pos++;
			continue;
		}
		FUZZ_CHECK(n >= (ssize_t)WIRE_HDR_SIZE);
		FUZZ_CHECK((size_t)n == WIRE_HDR_SIZE + h.payload_len);
		FUZZ_CHECK(h.payload_len <= WIRE_MAX_PAYLOAD && h.flags == 0);
		if ((size_t)n > len - pos) {
			/* Incomplete: the link waits for more. */
			FUZZ_CHECK(wire_decode(buf + pos, len - pos, &m) == -EPROTO);
			break;
		}
		r = wire_decode(buf + pos, (size_t)n, &m);
		if (r < 0)
			FUZZ_CHECK(r == -EPROTO || r == -EBADMSG);
		else
			check_decoded(&m, buf + pos, (size_t)n);
		pos += (size_t)n;
	}
	free(buf);
	return 0;
}
