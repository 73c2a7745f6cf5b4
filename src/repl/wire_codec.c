/*
 * Replication codec: frames to and from the bytes of include/jrbd/wire.h.
 *
 * Pure functions over buffers: no I/O, no allocation, no logging. Everything
 * here is reachable from the network before authentication (HELLO, AUTH and
 * ERROR are decoded from any peer), so every length is checked before it is
 * used, a payload must have exactly the size its type says, reserved bytes
 * must be zero, and every failure is a return value.
 *
 * One set of semantic rules (check_msg()) serves both directions: decode
 * refuses what it finds (-EPROTO) and encode refuses what it was given
 * (-EINVAL), so we can never send a message the peer would refuse.
 *
 * Strings are fixed-size and NUL-padded. Names (site, group, volumes, the
 * primary's address) must be NUL-padded with zeros only and hold no control
 * characters: they end up in logs and file names. Free text at the end of a
 * payload (a PRIMARY_STATUS reason, a PAIR_CMD text) is held to the same
 * rules, with no NUL at all. An ERROR's free text is the one string that is
 * sanitized instead (control characters become '?'), so a peer's error
 * reason is never lost to a strict check.
 *
 * Not here: zstd (the caller decompresses JOURNAL_DATA before walking its
 * records), the handshake (link.c), the meaning of seqs (the pair layer).
 */
#include "repl/wire_codec.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <xxhash.h>

#include "common/checked.h"
#include "common/compiler.h"
#include "common/le.h"

/* Frame header offsets (the table in wire.h). */
#define HDR_MAGIC 0
#define HDR_TYPE 4
#define HDR_FLAGS 6
#define HDR_PAYLOAD_LEN 8
#define HDR_RESERVED 12
#define HDR_PAYLOAD_CSUM 16
#define HDR_CSUM 24

/* Payload sizes per type (fixed part). */
#define HELLO_LEN 104u
#define AUTH_LEN WIRE_MAC_LEN
#define ERROR_MIN_LEN 4u
#define PAIR_CREATE_LEN 96u
#define VOLUME_LEN (JOURNAL_VOLNAME_LEN + 8u)
#define PAIR_ATTACH_LEN 88u
#define PAIR_OK_LEN 40u
#define READ_JOURNAL_LEN 32u
#define JOURNAL_DATA_LEN 40u
#define STATUS_LEN 24u
#define PRIMARY_STATUS_MIN_LEN 192u
#define PAIR_CMD_MIN_LEN 40u
#define BITMAP_MIN_LEN 24u

/* The PAIR_CMD cmd and flags values we know. */
#define CMD_FLAGS_KNOWN ((unsigned)(WIRE_CMD_FORCE | WIRE_CMD_DRAIN | WIRE_CMD_REFUSED))
#define BITMAP_FLAGS_KNOWN ((unsigned)WIRE_BITMAP_LAST)

/* Largest errno an ERROR may carry (the kernel's MAX_ERRNO). */
#define WIRE_MAX_ERRNO 4095

_Static_assert(40 + WIRE_SITE_LEN == HELLO_LEN, "HELLO layout");
_Static_assert(JOURNAL_GROUPNAME_LEN == 64, "PAIR_CREATE/ATTACH group field is 64 bytes");
_Static_assert(JOURNAL_VOLNAME_LEN == 40, "PAIR_CREATE volume name field is 40 bytes");
_Static_assert(WIRE_MAX_PAYLOAD - JOURNAL_DATA_LEN >= WIRE_MAX_DATA,
               "a JOURNAL_DATA of WIRE_MAX_DATA bytes fits in one frame");
_Static_assert(PAIR_CREATE_LEN + JOURNAL_MAX_VOLUMES * VOLUME_LEN <= WIRE_MAX_PAYLOAD,
               "PAIR_CREATE with every volume fits in one frame");
_Static_assert(64 + WIRE_ADDR_LEN == PRIMARY_STATUS_MIN_LEN, "PRIMARY_STATUS layout");
_Static_assert(PRIMARY_STATUS_MIN_LEN + WIRE_MAX_REASON <= WIRE_MAX_PAYLOAD,
               "PRIMARY_STATUS with the longest reason fits in one frame");
_Static_assert(PAIR_CMD_MIN_LEN + WIRE_MAX_REASON <= WIRE_MAX_PAYLOAD,
               "PAIR_CMD with the longest text fits in one frame");
_Static_assert(WIRE_BITMAP_MAX_BITS % 8 == 0 && WIRE_BITMAP_MAX_BITS / 8 <= WIRE_MAX_DATA,
               "a BITMAP chunk's bits are at most WIRE_MAX_DATA bytes");
_Static_assert(BITMAP_MIN_LEN + WIRE_BITMAP_MAX_BITS / 8 <= WIRE_MAX_PAYLOAD,
               "a BITMAP of WIRE_BITMAP_MAX_BITS bits fits in one frame");
_Static_assert(WIRE_STATE_COPY == 1 && WIRE_STATE_SSWS == 7, "pair states are 1..7");
_Static_assert(WIRE_CMD_RESYNC == 1 && WIRE_CMD_SUSPEND == 4, "pair commands are 1..4");
_Static_assert((WIRE_CMD_REPLY & WIRE_CMD_SUSPEND) == 0, "the reply bit is not a command's");

static bool
all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i])
			return false;
	}
	return true;
}

static bool
is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* ---- Strings ------------------------------------------------------------- */

/* A host string for a field of field_len bytes: fits (a full-length string
 * has no NUL on the wire), no control characters, non-empty if required. */
static bool
str_ok(const char *s, size_t field_len, bool allow_empty)
{
	size_t n = strnlen(s, field_len + 1);

	if (n > field_len || (n == 0 && !allow_empty))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (is_control((unsigned char)s[i]))
			return false;
	}
	return true;
}

static void
put_str(uint8_t *dst, const char *s, size_t field_len)
{
	size_t n = strnlen(s, field_len);

	memcpy(dst, s, n);
	memset(dst + n, 0, field_len - n);
}

static void
put_text(uint8_t *dst, const char *s, size_t max_len)
{
	memcpy(dst, s, strnlen(s, max_len));
}

/* Copies the n bytes of free text at the end of a payload into dst (n + 1
 * bytes, NUL-terminated); the caller bounded n. A NUL inside would cut the
 * text short, so it is refused here; the character checks are check_msg()'s. */
static int
get_text(char *dst, const uint8_t *src, size_t n)
{
	if (memchr(src, 0, n))
		return -EPROTO;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

/* Copies a NUL-padded field into dst (field_len + 1 bytes, NUL-terminated).
 * Bytes after the first NUL must be zero: anything else is garbage a
 * careless or hostile sender left there. The character checks are
 * check_msg()'s. */
static int
get_str(char *dst, const uint8_t *src, size_t field_len)
{
	const uint8_t *nul = memchr(src, 0, field_len);
	size_t n = nul ? (size_t)(nul - src) : field_len;

	if (!all_zero(src + n, field_len - n))
		return -EPROTO;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

/* ---- Semantic rules, shared by encode and decode ------------------------- */

static bool
journal_data_ok(const struct wire_journal_data *d)
{
	uint64_t span, min_raw;

	if (d->compression != WIRE_COMP_NONE && d->compression != WIRE_COMP_ZSTD)
		return false;
	if (d->raw_len > WIRE_MAX_DATA || d->data_len > WIRE_MAX_PAYLOAD - JOURNAL_DATA_LEN)
		return false;
	if (d->nrecords == 0) {
		/* "Nothing new": an empty range right after last_seq. */
		return d->raw_len == 0 && d->data_len == 0 && d->last_seq != UINT64_MAX &&
		       d->first_seq == d->last_seq + 1;
	}
	if (d->last_seq < d->first_seq)
		return false;
	span = d->last_seq - d->first_seq;
	if (span != (uint64_t)d->nrecords - 1)
		return false;
	/* Every record has at least its header. */
	if (!checked_mul_u64(d->nrecords, JOURNAL_REC_HDR_SIZE, &min_raw) || min_raw > d->raw_len)
		return false;
	if (d->data_len == 0)
		return false;
	if (d->compression == WIRE_COMP_NONE && d->data_len != d->raw_len)
		return false;
	return true;
}

static bool
pair_state_ok(uint8_t state)
{
	return state >= WIRE_STATE_COPY && state <= WIRE_STATE_SSWS;
}

static bool
pair_cmd_ok(const struct wire_pair_cmd *c)
{
	unsigned code = c->cmd & ~WIRE_CMD_REPLY;

	if (code < WIRE_CMD_RESYNC || code > WIRE_CMD_SUSPEND)
		return false;
	if (c->flags & ~CMD_FLAGS_KNOWN)
		return false;
	/* Only an answer can say no. */
	if ((c->flags & WIRE_CMD_REFUSED) && !(c->cmd & WIRE_CMD_REPLY))
		return false;
	return str_ok(c->text, WIRE_MAX_REASON, true);
}

/* Bytes of a BITMAP's bits for nbits (nbits bounded or not: no overflow). */
static size_t
bitmap_len(uint32_t nbits)
{
	return ((size_t)nbits + 7) / 8;
}

static bool
bitmap_ok(const struct wire_bitmap *b)
{
	uint64_t end, end_bytes;

	if (b->volume >= JOURNAL_MAX_VOLUMES || (b->flags & ~BITMAP_FLAGS_KNOWN))
		return false;
	if (b->region_size < WIRE_BITMAP_MIN_REGION || b->region_size > WIRE_BITMAP_MAX_REGION ||
	    (b->region_size & (b->region_size - 1)))
		return false;
	if (b->nbits > WIRE_BITMAP_MAX_BITS)
		return false;
	/* No bits is only the empty end-of-transfer marker. */
	if (b->nbits == 0)
		return (b->flags & WIRE_BITMAP_LAST) != 0;
	if (!b->bits)
		return false;
	/* The last byte's bits past nbits are zero. */
	if ((b->nbits % 8) && (b->bits[b->nbits / 8] >> (b->nbits % 8)))
		return false;
	/* The regions covered lie inside a 64-bit byte space. */
	if (!checked_add_u64(b->first_region, b->nbits, &end) ||
	    !checked_mul_u64(end, b->region_size, &end_bytes))
		return false;
	return true;
}

/* 0 when msg is a message we send and accept, else -EPROTO. */
static int
check_msg(const struct wire_msg *msg)
{
	const struct wire_pair_create *pc;

	switch (msg->hdr.type) {
	case WIRE_HELLO:
		if (msg->u.hello.role != WIRE_ROLE_PRIMARY &&
		    msg->u.hello.role != WIRE_ROLE_SECONDARY)
			return -EPROTO;
		if (!str_ok(msg->u.hello.site, WIRE_SITE_LEN, true))
			return -EPROTO;
		return 0;
	case WIRE_AUTH:
		return 0;
	case WIRE_ERROR:
		if (msg->u.error.code <= 0 || msg->u.error.code > WIRE_MAX_ERRNO)
			return -EPROTO;
		if (strnlen(msg->u.error.message, WIRE_MAX_ERROR + 1) > WIRE_MAX_ERROR)
			return -EPROTO;
		return 0;
	case WIRE_PAIR_CREATE:
		pc = &msg->u.pair_create;
		if (!str_ok(pc->group, JOURNAL_GROUPNAME_LEN, false))
			return -EPROTO;
		if (pc->mode != WIRE_MODE_ASYNC && pc->mode != WIRE_MODE_SYNC)
			return -EPROTO;
		if (pc->initial_copy > 1 || pc->nvolumes > JOURNAL_MAX_VOLUMES)
			return -EPROTO;
		for (unsigned i = 0; i < pc->nvolumes; i++) {
			if (!str_ok(pc->volumes[i].name, JOURNAL_VOLNAME_LEN, false))
				return -EPROTO;
		}
		return 0;
	case WIRE_PAIR_ATTACH:
		if (!str_ok(msg->u.pair_attach.group, JOURNAL_GROUPNAME_LEN, false))
			return -EPROTO;
		if (msg->u.pair_attach.mode != WIRE_MODE_ASYNC &&
		    msg->u.pair_attach.mode != WIRE_MODE_SYNC)
			return -EPROTO;
		return 0;
	case WIRE_PAIR_OK:
		return pair_state_ok(msg->u.pair_ok.state) ? 0 : -EPROTO;
	case WIRE_READ_JOURNAL:
	case WIRE_STATUS:
		return 0;
	case WIRE_JOURNAL_DATA:
		return journal_data_ok(&msg->u.journal_data) ? 0 : -EPROTO;
	case WIRE_PRIMARY_STATUS:
		if (!pair_state_ok(msg->u.primary_status.state))
			return -EPROTO;
		if (!str_ok(msg->u.primary_status.primary_addr, WIRE_ADDR_LEN, true) ||
		    !str_ok(msg->u.primary_status.reason, WIRE_MAX_REASON, true))
			return -EPROTO;
		return 0;
	case WIRE_PAIR_CMD:
		return pair_cmd_ok(&msg->u.pair_cmd) ? 0 : -EPROTO;
	case WIRE_BITMAP:
		return bitmap_ok(&msg->u.bitmap) ? 0 : -EPROTO;
	default:
		return -EPROTO;
	}
}

/* ---- Frame header -------------------------------------------------------- */

/*
 * How many payload bytes payload_csum covers: all of them, except that a
 * JOURNAL_DATA's records are left out. Each record carries its own header
 * and payload checksums, made when the primary journaled it and checked by
 * the secondary (wire_records_next) before anything is stored, so they
 * guard the bytes end to end already; hashing them once more per frame
 * cost the primary a second pass over every byte it replicates. Damaged
 * compressed data fails zstd or those same record checks.
 */
static size_t
payload_csum_len(uint16_t type, size_t payload_len)
{
	return type == WIRE_JOURNAL_DATA ? MIN(payload_len, JOURNAL_DATA_LEN) : payload_len;
}

ssize_t
wire_frame_peek(const void *buf, size_t len, struct wire_hdr *ret)
{
	const uint8_t *p = buf;
	struct wire_hdr h;

	if (len < WIRE_HDR_SIZE)
		return 0;
	if (le_get32(p + HDR_MAGIC) != WIRE_MAGIC)
		return -EPROTO;
	/* The checksum before the fields: a corrupted header is "bad
	 * checksum", whatever its fields happen to say. */
	if (le_get64(p + HDR_CSUM) != XXH3_64bits(p, HDR_CSUM))
		return -EBADMSG;
	h.type = le_get16(p + HDR_TYPE);
	h.flags = le_get16(p + HDR_FLAGS);
	h.payload_len = le_get32(p + HDR_PAYLOAD_LEN);
	h.payload_csum = le_get64(p + HDR_PAYLOAD_CSUM);
	if (h.flags != 0 || le_get32(p + HDR_RESERVED) != 0 || h.payload_len > WIRE_MAX_PAYLOAD)
		return -EPROTO;
	if (ret)
		*ret = h;
	return (ssize_t)(WIRE_HDR_SIZE + h.payload_len);
}

/* ---- Decode -------------------------------------------------------------- */

static int
decode_hello(const uint8_t *p, size_t len, struct wire_hello *m)
{
	if (len != HELLO_LEN)
		return -EPROTO;
	m->version = le_get32(p + 0);
	m->role = le_get32(p + 4);
	memcpy(m->nonce, p + 8, WIRE_NONCE_LEN);
	return get_str(m->site, p + 40, WIRE_SITE_LEN);
}

static int
decode_error(const uint8_t *p, size_t len, struct wire_error *m)
{
	size_t n;

	if (len < ERROR_MIN_LEN || len - ERROR_MIN_LEN > WIRE_MAX_ERROR)
		return -EPROTO;
	m->code = (int32_t)le_get32(p);
	n = len - ERROR_MIN_LEN;
	/* Free text from the peer, bound for our logs: neutralize control
	 * characters (and NULs, which would cut it short) rather than refuse
	 * it and lose the reason the peer gave. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[ERROR_MIN_LEN + i];

		m->message[i] = is_control(c) ? '?' : (char)c;
	}
	m->message[n] = '\0';
	return 0;
}

static int
decode_pair_create(const uint8_t *p, size_t len, struct wire_pair_create *m)
{
	int r;

	if (len < PAIR_CREATE_LEN)
		return -EPROTO;
	r = get_str(m->group, p, JOURNAL_GROUPNAME_LEN);
	if (r < 0)
		return r;
	m->pair_id = le_get64(p + 64);
	m->start_seq = le_get64(p + 72);
	m->primary_seed = le_get64(p + 80);
	m->mode = p[88];
	m->initial_copy = p[89];
	m->nvolumes = le_get16(p + 90);
	if (le_get32(p + 92) != 0)
		return -EPROTO;
	/* The count before the size: it indexes volumes[]. */
	if (m->nvolumes > JOURNAL_MAX_VOLUMES)
		return -EPROTO;
	if (len - PAIR_CREATE_LEN != (size_t)m->nvolumes * VOLUME_LEN)
		return -EPROTO;
	for (size_t i = 0; i < m->nvolumes; i++) {
		const uint8_t *v = p + PAIR_CREATE_LEN + i * VOLUME_LEN;

		r = get_str(m->volumes[i].name, v, JOURNAL_VOLNAME_LEN);
		if (r < 0)
			return r;
		m->volumes[i].size = le_get64(v + JOURNAL_VOLNAME_LEN);
	}
	return 0;
}

static int
decode_pair_attach(const uint8_t *p, size_t len, struct wire_pair_attach *m)
{
	if (len != PAIR_ATTACH_LEN)
		return -EPROTO;
	m->pair_id = le_get64(p + 64);
	m->primary_seed = le_get64(p + 72);
	m->mode = p[80];
	if (!all_zero(p + 81, 7))
		return -EPROTO;
	return get_str(m->group, p, JOURNAL_GROUPNAME_LEN);
}

static int
decode_read_journal(const uint8_t *p, size_t len, struct wire_read_journal *m)
{
	if (len != READ_JOURNAL_LEN)
		return -EPROTO;
	m->req_id = le_get64(p + 0);
	m->received_seq = le_get64(p + 8);
	m->restored_seq = le_get64(p + 16);
	m->max_bytes = le_get32(p + 24);
	if (le_get32(p + 28) != 0)
		return -EPROTO;
	return 0;
}

static int
decode_journal_data(const uint8_t *p, size_t len, struct wire_journal_data *m)
{
	if (len < JOURNAL_DATA_LEN)
		return -EPROTO;
	m->req_id = le_get64(p + 0);
	m->first_seq = le_get64(p + 8);
	m->last_seq = le_get64(p + 16);
	m->nrecords = le_get32(p + 24);
	m->raw_len = le_get32(p + 28);
	m->compression = p[32];
	if (!all_zero(p + 33, 7))
		return -EPROTO;
	/* len <= WIRE_MAX_PAYLOAD (wire_frame_peek), so this fits. */
	m->data_len = (uint32_t)(len - JOURNAL_DATA_LEN);
	m->data = p + JOURNAL_DATA_LEN;
	return 0;
}

static int
decode_pair_ok(const uint8_t *p, size_t len, struct wire_pair_ok *m)
{
	if (len != PAIR_OK_LEN)
		return -EPROTO;
	m->received_seq = le_get64(p + 0);
	m->restored_seq = le_get64(p + 8);
	m->state = p[16];
	if (!all_zero(p + 17, 7))
		return -EPROTO;
	m->gen = le_get64(p + 24);
	m->synced_gen = le_get64(p + 32);
	return 0;
}

static int
decode_primary_status(const uint8_t *p, size_t len, struct wire_primary_status *m)
{
	int r;

	if (len < PRIMARY_STATUS_MIN_LEN || len - PRIMARY_STATUS_MIN_LEN > WIRE_MAX_REASON)
		return -EPROTO;
	m->state = p[0];
	if (!all_zero(p + 1, 7))
		return -EPROTO;
	m->written_seq = le_get64(p + 8);
	m->copy_done_bytes = le_get64(p + 16);
	m->copy_total_bytes = le_get64(p + 24);
	m->newest_ts_ns = le_get64(p + 32);
	m->gen = le_get64(p + 40);
	m->synced_gen = le_get64(p + 48);
	m->start_seq = le_get64(p + 56);
	r = get_str(m->primary_addr, p + 64, WIRE_ADDR_LEN);
	if (r < 0)
		return r;
	return get_text(m->reason, p + PRIMARY_STATUS_MIN_LEN, len - PRIMARY_STATUS_MIN_LEN);
}

static int
decode_pair_cmd(const uint8_t *p, size_t len, struct wire_pair_cmd *m)
{
	if (len < PAIR_CMD_MIN_LEN || len - PAIR_CMD_MIN_LEN > WIRE_MAX_REASON)
		return -EPROTO;
	m->cmd = p[0];
	m->flags = p[1];
	if (!all_zero(p + 2, 6))
		return -EPROTO;
	m->pair_id = le_get64(p + 8);
	m->seq = le_get64(p + 16);
	m->gen = le_get64(p + 24);
	m->synced_gen = le_get64(p + 32);
	return get_text(m->text, p + PAIR_CMD_MIN_LEN, len - PAIR_CMD_MIN_LEN);
}

static int
decode_bitmap(const uint8_t *p, size_t len, struct wire_bitmap *m)
{
	if (len < BITMAP_MIN_LEN)
		return -EPROTO;
	m->volume = le_get16(p + 0);
	m->flags = le_get16(p + 2);
	m->region_size = le_get32(p + 4);
	m->first_region = le_get64(p + 8);
	m->nbits = le_get32(p + 16);
	if (le_get32(p + 20) != 0)
		return -EPROTO;
	/* The count before the size it implies. */
	if (m->nbits > WIRE_BITMAP_MAX_BITS)
		return -EPROTO;
	if (len - BITMAP_MIN_LEN != bitmap_len(m->nbits))
		return -EPROTO;
	m->bits = p + BITMAP_MIN_LEN;
	return 0;
}

static int
decode_payload(const uint8_t *p, size_t len, struct wire_msg *m)
{
	switch (m->hdr.type) {
	case WIRE_HELLO:
		return decode_hello(p, len, &m->u.hello);
	case WIRE_AUTH:
		if (len != AUTH_LEN)
			return -EPROTO;
		memcpy(m->u.auth.mac, p, WIRE_MAC_LEN);
		return 0;
	case WIRE_ERROR:
		return decode_error(p, len, &m->u.error);
	case WIRE_PAIR_CREATE:
		return decode_pair_create(p, len, &m->u.pair_create);
	case WIRE_PAIR_ATTACH:
		return decode_pair_attach(p, len, &m->u.pair_attach);
	case WIRE_PAIR_OK:
		return decode_pair_ok(p, len, &m->u.pair_ok);
	case WIRE_READ_JOURNAL:
		return decode_read_journal(p, len, &m->u.read_journal);
	case WIRE_JOURNAL_DATA:
		return decode_journal_data(p, len, &m->u.journal_data);
	case WIRE_STATUS:
		if (len != STATUS_LEN)
			return -EPROTO;
		m->u.status.received_seq = le_get64(p + 0);
		m->u.status.restored_seq = le_get64(p + 8);
		m->u.status.restored_ts_ns = le_get64(p + 16);
		return 0;
	case WIRE_PRIMARY_STATUS:
		return decode_primary_status(p, len, &m->u.primary_status);
	case WIRE_PAIR_CMD:
		return decode_pair_cmd(p, len, &m->u.pair_cmd);
	case WIRE_BITMAP:
		return decode_bitmap(p, len, &m->u.bitmap);
	default:
		return -EPROTO;
	}
}

int
wire_decode(const void *buf, size_t len, struct wire_msg *msg)
{
	const uint8_t *p = buf;
	const uint8_t *payload = p + WIRE_HDR_SIZE;
	struct wire_msg m;
	ssize_t n;
	int r;

	n = wire_frame_peek(buf, len, &m.hdr);
	if (n < 0)
		return (int)n;
	if (n == 0 || (size_t)n != len)
		return -EPROTO;
	if (m.hdr.payload_len == 0
	        ? m.hdr.payload_csum != 0
	        : XXH3_64bits(payload, payload_csum_len(m.hdr.type, m.hdr.payload_len)) !=
	              m.hdr.payload_csum)
		return -EBADMSG;
	memset(&m.u, 0, sizeof(m.u));
	r = decode_payload(payload, m.hdr.payload_len, &m);
	if (r < 0)
		return r;
	r = check_msg(&m);
	if (r < 0)
		return r;
	*msg = m;
	return 0;
}

/* ---- Encode -------------------------------------------------------------- */

static size_t
payload_size(const struct wire_msg *msg)
{
	switch (msg->hdr.type) {
	case WIRE_HELLO:
		return HELLO_LEN;
	case WIRE_AUTH:
		return AUTH_LEN;
	case WIRE_ERROR:
		return ERROR_MIN_LEN + strnlen(msg->u.error.message, WIRE_MAX_ERROR);
	case WIRE_PAIR_CREATE:
		return PAIR_CREATE_LEN + (size_t)msg->u.pair_create.nvolumes * VOLUME_LEN;
	case WIRE_PAIR_ATTACH:
		return PAIR_ATTACH_LEN;
	case WIRE_PAIR_OK:
		return PAIR_OK_LEN;
	case WIRE_READ_JOURNAL:
		return READ_JOURNAL_LEN;
	case WIRE_JOURNAL_DATA:
		return JOURNAL_DATA_LEN + (size_t)msg->u.journal_data.data_len;
	case WIRE_STATUS:
		return STATUS_LEN;
	case WIRE_PRIMARY_STATUS:
		return PRIMARY_STATUS_MIN_LEN +
		       strnlen(msg->u.primary_status.reason, WIRE_MAX_REASON);
	case WIRE_PAIR_CMD:
		return PAIR_CMD_MIN_LEN + strnlen(msg->u.pair_cmd.text, WIRE_MAX_REASON);
	case WIRE_BITMAP:
		return BITMAP_MIN_LEN + bitmap_len(msg->u.bitmap.nbits);
	default:
		return 0;
	}
}

size_t
wire_encoded_size(const struct wire_msg *msg)
{
	return WIRE_HDR_SIZE + payload_size(msg);
}

/* Fills the payload at p (zeroed for its fixed part); msg passed check_msg(). */
static void
encode_payload(const struct wire_msg *msg, uint8_t *p)
{
	const struct wire_pair_create *pc = &msg->u.pair_create;
	const struct wire_journal_data *jd = &msg->u.journal_data;
	const struct wire_primary_status *ps = &msg->u.primary_status;
	const struct wire_pair_cmd *pcmd = &msg->u.pair_cmd;
	const struct wire_bitmap *bm = &msg->u.bitmap;
	size_t n;

	switch (msg->hdr.type) {
	case WIRE_HELLO:
		le_put32(p + 0, msg->u.hello.version);
		le_put32(p + 4, msg->u.hello.role);
		memcpy(p + 8, msg->u.hello.nonce, WIRE_NONCE_LEN);
		put_str(p + 40, msg->u.hello.site, WIRE_SITE_LEN);
		break;
	case WIRE_AUTH:
		memcpy(p, msg->u.auth.mac, WIRE_MAC_LEN);
		break;
	case WIRE_ERROR:
		le_put32(p, (uint32_t)msg->u.error.code);
		n = strnlen(msg->u.error.message, WIRE_MAX_ERROR);
		memcpy(p + ERROR_MIN_LEN, msg->u.error.message, n);
		break;
	case WIRE_PAIR_CREATE:
		put_str(p, pc->group, JOURNAL_GROUPNAME_LEN);
		le_put64(p + 64, pc->pair_id);
		le_put64(p + 72, pc->start_seq);
		le_put64(p + 80, pc->primary_seed);
		p[88] = pc->mode;
		p[89] = pc->initial_copy;
		le_put16(p + 90, pc->nvolumes);
		for (size_t i = 0; i < pc->nvolumes; i++) {
			uint8_t *v = p + PAIR_CREATE_LEN + i * VOLUME_LEN;

			put_str(v, pc->volumes[i].name, JOURNAL_VOLNAME_LEN);
			le_put64(v + JOURNAL_VOLNAME_LEN, pc->volumes[i].size);
		}
		break;
	case WIRE_PAIR_ATTACH:
		put_str(p, msg->u.pair_attach.group, JOURNAL_GROUPNAME_LEN);
		le_put64(p + 64, msg->u.pair_attach.pair_id);
		le_put64(p + 72, msg->u.pair_attach.primary_seed);
		p[80] = msg->u.pair_attach.mode;
		break;
	case WIRE_PAIR_OK:
		le_put64(p + 0, msg->u.pair_ok.received_seq);
		le_put64(p + 8, msg->u.pair_ok.restored_seq);
		p[16] = msg->u.pair_ok.state;
		le_put64(p + 24, msg->u.pair_ok.gen);
		le_put64(p + 32, msg->u.pair_ok.synced_gen);
		break;
	case WIRE_READ_JOURNAL:
		le_put64(p + 0, msg->u.read_journal.req_id);
		le_put64(p + 8, msg->u.read_journal.received_seq);
		le_put64(p + 16, msg->u.read_journal.restored_seq);
		le_put32(p + 24, msg->u.read_journal.max_bytes);
		break;
	case WIRE_JOURNAL_DATA:
		le_put64(p + 0, jd->req_id);
		le_put64(p + 8, jd->first_seq);
		le_put64(p + 16, jd->last_seq);
		le_put32(p + 24, jd->nrecords);
		le_put32(p + 28, jd->raw_len);
		p[32] = jd->compression;
		break; /* the data follows the head: wire_encode copies it */
	case WIRE_STATUS:
		le_put64(p + 0, msg->u.status.received_seq);
		le_put64(p + 8, msg->u.status.restored_seq);
		le_put64(p + 16, msg->u.status.restored_ts_ns);
		break;
	case WIRE_PRIMARY_STATUS:
		p[0] = ps->state;
		le_put64(p + 8, ps->written_seq);
		le_put64(p + 16, ps->copy_done_bytes);
		le_put64(p + 24, ps->copy_total_bytes);
		le_put64(p + 32, ps->newest_ts_ns);
		le_put64(p + 40, ps->gen);
		le_put64(p + 48, ps->synced_gen);
		le_put64(p + 56, ps->start_seq);
		put_str(p + 64, ps->primary_addr, WIRE_ADDR_LEN);
		put_text(p + PRIMARY_STATUS_MIN_LEN, ps->reason, WIRE_MAX_REASON);
		break;
	case WIRE_PAIR_CMD:
		p[0] = pcmd->cmd;
		p[1] = pcmd->flags;
		le_put64(p + 8, pcmd->pair_id);
		le_put64(p + 16, pcmd->seq);
		le_put64(p + 24, pcmd->gen);
		le_put64(p + 32, pcmd->synced_gen);
		put_text(p + PAIR_CMD_MIN_LEN, pcmd->text, WIRE_MAX_REASON);
		break;
	case WIRE_BITMAP:
		le_put16(p + 0, bm->volume);
		le_put16(p + 2, bm->flags);
		le_put32(p + 4, bm->region_size);
		le_put64(p + 8, bm->first_region);
		le_put32(p + 16, bm->nbits);
		if (bm->nbits)
			memcpy(p + BITMAP_MIN_LEN, bm->bits, bitmap_len(bm->nbits));
		break;
	default:
		break;
	}
}

/* The payload size of msg if it can be encoded, else -EINVAL. */
static ssize_t
encodable_payload_size(const struct wire_msg *msg)
{
	size_t plen;

	if (check_msg(msg) < 0)
		return -EINVAL;
	if (msg->hdr.type == WIRE_JOURNAL_DATA && msg->u.journal_data.data_len &&
	    !msg->u.journal_data.data)
		return -EINVAL;
	plen = payload_size(msg);
	if (plen > WIRE_MAX_PAYLOAD)
		return -EINVAL;
	return (ssize_t)plen;
}

size_t
wire_head_size(const struct wire_msg *msg)
{
	if (msg->hdr.type == WIRE_JOURNAL_DATA)
		return WIRE_HDR_SIZE + JOURNAL_DATA_LEN;
	return wire_encoded_size(msg);
}

ssize_t
wire_encode_head(const struct wire_msg *msg, void *out, size_t cap)
{
	uint8_t *p = out;
	ssize_t plen = encodable_payload_size(msg);
	size_t head, fixed;

	if (plen < 0)
		return plen;
	head = wire_head_size(msg);
	if (cap < head)
		return -ENOSPC;
	/* Zero the header and the fixed part of the payload (reserved bytes,
	 * string padding); BITMAP's bits are copied over whole. */
	fixed = msg->hdr.type == WIRE_BITMAP ? BITMAP_MIN_LEN : head - WIRE_HDR_SIZE;
	memset(p, 0, WIRE_HDR_SIZE + fixed);
	encode_payload(msg, p + WIRE_HDR_SIZE);
	le_put32(p + HDR_MAGIC, WIRE_MAGIC);
	le_put16(p + HDR_TYPE, msg->hdr.type);
	le_put32(p + HDR_PAYLOAD_LEN, (uint32_t)plen);
	/* Within the head: a JOURNAL_DATA's checksum leaves its data out. */
	le_put64(p + HDR_PAYLOAD_CSUM,
	         plen
	             ? XXH3_64bits(p + WIRE_HDR_SIZE, payload_csum_len(msg->hdr.type, (size_t)plen))
	             : 0);
	le_put64(p + HDR_CSUM, XXH3_64bits(p, HDR_CSUM));
	return (ssize_t)head;
}

ssize_t
wire_encode(const struct wire_msg *msg, void *out, size_t cap)
{
	ssize_t plen = encodable_payload_size(msg), head;
	size_t size;

	if (plen < 0)
		return plen;
	size = WIRE_HDR_SIZE + (size_t)plen;
	if (cap < size)
		return -ENOSPC;
	head = wire_encode_head(msg, out, cap);
	if (head < 0)
		return head;
	if (size > (size_t)head)
		memcpy((uint8_t *)out + head, msg->u.journal_data.data, size - (size_t)head);
	return (ssize_t)size;
}

/* ---- Records of a JOURNAL_DATA ------------------------------------------- */

int
wire_records_next(const void *data, size_t len, uint64_t seed, size_t *pos, uint64_t *expect,
                  struct journal_rec *ret_rec, const void **ret_payload)
{
	const uint8_t *p = data;
	struct journal_rec rec;
	size_t off = *pos, left;
	int r;

	if (off > len)
		return -EPROTO;
	if (off == len)
		return 0;
	left = len - off;
	/* A partial header at the end is garbage, not a record. */
	if (left < JOURNAL_REC_HDR_SIZE)
		return -EPROTO;
	/* Checks magic, header checksum and the record rules
	 * (journal_rec_validate: kind, payload_len vs length, bounds). */
	r = journal_rec_decode(p + off, left, seed, &rec);
	if (r < 0)
		return r;
	if (rec.seq != *expect)
		return -EPROTO;
	if (rec.payload_len > left - JOURNAL_REC_HDR_SIZE)
		return -EPROTO;
	r = journal_rec_check_payload(&rec, p + off + JOURNAL_REC_HDR_SIZE, seed);
	if (r < 0)
		return r;
	*ret_rec = rec;
	*ret_payload = p + off + JOURNAL_REC_HDR_SIZE;
	*pos = off + JOURNAL_REC_HDR_SIZE + rec.payload_len;
	*expect = rec.seq + 1;
	return 1;
}

const char *
wire_type_name(uint16_t type)
{
	switch (type) {
	case WIRE_HELLO:
		return "HELLO";
	case WIRE_AUTH:
		return "AUTH";
	case WIRE_ERROR:
		return "ERROR";
	case WIRE_PAIR_CREATE:
		return "PAIR_CREATE";
	case WIRE_PAIR_ATTACH:
		return "PAIR_ATTACH";
	case WIRE_PAIR_OK:
		return "PAIR_OK";
	case WIRE_READ_JOURNAL:
		return "READ_JOURNAL";
	case WIRE_JOURNAL_DATA:
		return "JOURNAL_DATA";
	case WIRE_STATUS:
		return "STATUS";
	case WIRE_PRIMARY_STATUS:
		return "PRIMARY_STATUS";
	case WIRE_PAIR_CMD:
		return "PAIR_CMD";
	case WIRE_BITMAP:
		return "BITMAP";
	default:
		return "unknown";
	}
}
