/*
 * libFuzzer target: the NBD transmission-phase request parser and validator.
 *
 * Input layout: byte 0 selects the export (bit 0: read-only, bit 1: tiny
 * export, bits 2-3: maximum block size), then a stream of client bytes as they would arrive on the
 * socket: request headers, each WRITE followed by its payload. The harness walks the stream as the
 * server does, checks every request against the export, and round-trips the reply encoders. Any
 * crash, sanitizer report or trap is a bug in nbd_proto.c.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/checked.h"
#include "nbd/nbd_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Invariant of the codec broken: stop here so the fuzzer reports it. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

static void
check_replies(const struct nbd_request *rq, int err)
{
	struct nbd_simple_reply_hdr sw;
	struct nbd_simple_reply sr;
	struct nbd_structured_error_hdr ew;
	struct nbd_structured_read_hdr rw;
	struct nbd_structured_reply st;
	uint32_t wire = nbd_errno_to_wire(err);

	FUZZ_CHECK((err == 0) == (wire == 0));
	nbd_encode_simple_reply(&sw, wire, rq->cookie);
	FUZZ_CHECK(nbd_parse_simple_reply(&sw, sizeof(sw), &sr) == (int)sizeof(sw));
	FUZZ_CHECK(sr.cookie == rq->cookie && sr.error == wire);
	if (err) {
		nbd_encode_structured_error(&ew, rq->cookie, wire);
		FUZZ_CHECK(nbd_parse_structured_reply(&ew, sizeof(ew), &st) == 20);
		FUZZ_CHECK(st.type == NBD_REPLY_TYPE_ERROR && st.len == 6);
		FUZZ_CHECK(st.cookie == rq->cookie);
	} else if (rq->type == NBD_CMD_READ && rq->len) {
		nbd_encode_structured_read(&rw, rq->cookie, rq->offset, rq->len);
		FUZZ_CHECK(nbd_parse_structured_reply(&rw, sizeof(rw), &st) == 20);
		FUZZ_CHECK(st.len == rq->len + 8 && (st.flags & NBD_REPLY_FLAG_DONE));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t export_size;
	uint16_t tflags;
	uint32_t max_block;
	size_t pos = 1;

	if (size < 1)
		return 0;
	tflags = nbd_export_flags(data[0] & 1);
	/* Bits 2-3: the maximum block size (default, 4 KiB, 1 MiB, 16 MiB). */
	max_block = (uint32_t[]){0, 4096, 1u << 20, 16u << 20}[(data[0] >> 2) & 3];
	export_size = (data[0] & 2) ? 4096 : (1ull << 40);
	while (pos < size) {
		struct nbd_request rq, again;
		struct nbd_request_hdr w;
		uint32_t payload;
		int r, err;

		r = nbd_parse_request(data + pos, size - pos, &rq);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			/* The server disconnects here; keep exploring the rest. */
			FUZZ_CHECK(r == -EPROTO);
			pos++;
			continue;
		}
		FUZZ_CHECK(r == (int)sizeof(struct nbd_request_hdr));
		pos += (size_t)r;
		/* Encoding what was parsed gives the same request back. */
		nbd_encode_request(&w, &rq);
		FUZZ_CHECK(nbd_parse_request(&w, sizeof(w), &again) == r);
		FUZZ_CHECK(!memcmp(&w, data + pos - sizeof(w), sizeof(w)));
		err = nbd_request_check(&rq, export_size, tflags, max_block);
		FUZZ_CHECK(err == 0 || err == -EINVAL || err == -EPERM || err == -ENOSPC);
		if (err == 0 && rq.type != NBD_CMD_DISC && rq.type != NBD_CMD_FLUSH) {
			/* Whatever passes lies inside the export... */
			FUZZ_CHECK(range_within(rq.offset, rq.len, export_size));
			/* ... and is a known command that may be sent. */
			FUZZ_CHECK(rq.type <= NBD_CMD_WRITE_ZEROES);
			if (tflags & NBD_FLAG_READ_ONLY)
				FUZZ_CHECK(rq.type == NBD_CMD_READ || rq.type == NBD_CMD_CACHE);
			if (rq.type == NBD_CMD_READ || rq.type == NBD_CMD_WRITE)
				FUZZ_CHECK(rq.len <= (max_block ? max_block : NBD_MAX_BLOCK_SIZE));
		}
		check_replies(&rq, err);
		/* Skip the payload, valid or not, as the server does. */
		payload = nbd_request_payload_len(&rq);
		if (payload > size - pos)
			break;
		pos += payload;
	}
	return 0;
}
