/*
 * Replication message codec: pure functions over bytes (no I/O, no globals),
 * so they can be unit-tested and fuzzed. Format: include/jrbd/wire.h.
 */
#ifndef JRBD_WIRE_CODEC_H
#define JRBD_WIRE_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "journal/journal.h"
#include "jrbd/wire.h"

/*
 * Parses a frame header at the start of buf (len bytes available).
 * Returns 0 when fewer than WIRE_HDR_SIZE bytes are there yet, else the total
 * frame size (header + payload) with *ret filled, or -EPROTO (bad magic,
 * flags, reserved bytes, payload_len > WIRE_MAX_PAYLOAD) / -EBADMSG (header
 * checksum mismatch).
 */
ssize_t wire_frame_peek(const void *buf, size_t len, struct wire_hdr *ret);

/*
 * Decodes one whole frame (len == the size wire_frame_peek returned) into
 * msg: checks the payload checksum (-EBADMSG), the type (-EPROTO for an
 * unknown one) and the payload's size and fields for that type (-EPROTO:
 * wrong length, nvolumes > JOURNAL_MAX_VOLUMES, unterminated garbage in
 * names, unknown enum values or flags, raw_len > WIRE_MAX_DATA, nrecords == 0
 * with data, first_seq/last_seq inconsistent with nrecords, a BITMAP's bits
 * not matching nbits, ...). Pointers in msg (journal_data.data, bitmap.bits)
 * point into buf. Names (site, group, volumes, primary_addr) must be
 * zero-padded and free of control characters, and so must free text
 * (reason, PAIR_CMD text: no NUL either); an ERROR's text is sanitized
 * instead (control characters become '?'). msg is untouched on failure.
 */
int wire_decode(const void *buf, size_t len, struct wire_msg *msg);

/*
 * Encodes msg (msg->hdr.type names the member; hdr.payload_len and
 * payload_csum are computed here) into out. Returns the frame size, or
 * -ENOSPC when cap is too small, -EINVAL for a message that wire_decode
 * would refuse. For JOURNAL_DATA the data bytes are copied from
 * journal_data.data (data_len bytes), for BITMAP the bits from bitmap.bits
 * ((nbits + 7) / 8 bytes). hdr.flags is ignored (always sent as 0).
 */
ssize_t wire_encode(const struct wire_msg *msg, void *out, size_t cap);

/* Size of the frame wire_encode would produce for msg. */
size_t wire_encoded_size(const struct wire_msg *msg);

/*
 * The frame without a JOURNAL_DATA's data: the header and the 40-byte fixed
 * part, checksums and all (they don't depend on the data, wire.h), so a
 * sender can write the data from where it lies after it. Any other type is
 * its whole frame. wire_encode_head returns the head size
 * (wire_head_size(msg)) or the errors of wire_encode; the frame is its
 * bytes followed by the data's.
 */
size_t wire_head_size(const struct wire_msg *msg);
ssize_t wire_encode_head(const struct wire_msg *msg, void *out, size_t cap);

/*
 * Walks the records of a JOURNAL_DATA's raw (decompressed) data: call with
 * *pos = 0 and expect = first_seq, then repeatedly. Each record is decoded
 * and its checksums verified with seed (the primary journal's); it must have
 * seq == *expect, fit in len, and pass the journal's record checks.
 * Returns 1 with *ret_rec and *ret_payload (pointing into data) and *pos, *expect
 * advanced; 0 at exactly the end of data; -EPROTO/-EBADMSG on any damage.
 * At the end the caller checks *expect == last_seq + 1 (the count matches).
 */
int wire_records_next(const void *data, size_t len, uint64_t seed, size_t *pos, uint64_t *expect,
                      struct journal_rec *ret_rec, const void **ret_payload);

/* Name of a message type for logs ("READ_JOURNAL"), "unknown" otherwise. */
const char *wire_type_name(uint16_t type);

#endif
