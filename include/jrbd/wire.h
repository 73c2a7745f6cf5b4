/*
 * The replication link between two jrbd daemons: message format.
 *
 * The primary's daemon dials the secondary's --listen address. Both ends then
 * authenticate each other (HELLO, AUTH); after that the primary names the
 * pair (PAIR_CREATE or PAIR_ATTACH), and from then on the *secondary* drives:
 * it sends READ_JOURNAL requests (several in flight), the primary answers each
 * with one JOURNAL_DATA, and the secondary reports progress with STATUS.
 *
 * Every message is one frame: a 32-byte header and payload_len bytes of
 * payload. All integers are little-endian; strings are fixed-size and
 * NUL-padded (a full-length string has no NUL).
 *
 * Frame header (32 bytes):
 *
 *   off  size  field
 *   0    4     magic        WIRE_MAGIC ("JRBW")
 *   4    2     type         enum wire_type
 *   6    2     flags        0 (reserved; a receiver refuses others)
 *   8    4     payload_len  <= WIRE_MAX_PAYLOAD
 *   12   4     reserved     0
 *   16   8     payload_csum xxh3_64(payload, seed 0); 0 when payload_len == 0.
 *                JOURNAL_DATA: of its 40-byte fixed part only; its records
 *                carry their own checksums (see below)
 *   24   8     hdr_csum     xxh3_64(bytes 0..23, seed 0)
 *
 * Payloads (offset: size field):
 *
 *   HELLO        0:4 version (WIRE_VERSION)  4:4 role (enum wire_role)
 *                8:32 nonce (random)  40:64 site (daemon's name, informational)
 *   AUTH         0:32 mac = HMAC-SHA-256(key, "jrbd-auth-v1" | role of sender (4 LE)
 *                | sender's nonce | receiver's nonce); key = BLAKE2b-256 of the
 *                secret file's bytes. The secret itself never crosses the link.
 *   ERROR        0:4 code (positive errno)  4:.. message (UTF-8, not NUL-terminated,
 *                at most WIRE_MAX_ERROR bytes)
 *   PAIR_CREATE  0:64 group  64:8 pair_id  72:8 start_seq  80:8 primary_seed
 *                88:1 mode (enum wire_mode)  89:1 initial_copy (0/1)  90:2 nvolumes
 *                92:4 reserved  96:.. nvolumes x {0:40 name, 40:8 size}
 *   PAIR_ATTACH  0:64 group  64:8 pair_id  72:8 primary_seed  80:1 mode
 *                81:7 reserved
 *   PAIR_OK      0:8 received_seq  8:8 restored_seq  16:1 state (enum wire_pair_state,
 *                the secondary's)  17:7 reserved  24:8 gen  32:8 synced_gen
 *   READ_JOURNAL 0:8 req_id  8:8 received_seq  16:8 restored_seq  24:4 max_bytes
 *                28:4 reserved
 *   JOURNAL_DATA 0:8 req_id  8:8 first_seq  16:8 last_seq  24:4 nrecords
 *                28:4 raw_len  32:1 compression (enum wire_compression)  33:7 reserved
 *                40:.. data: the records, raw_len bytes once decompressed.
 *                nrecords == 0 (first_seq = last_seq + 1): nothing new before
 *                the long poll ran out.
 *   STATUS       0:8 received_seq  8:8 restored_seq  16:8 restored_ts_ns
 *   PRIMARY_STATUS 0:1 state (enum wire_pair_state)  1:7 reserved  8:8 written_seq
 *                16:8 copy_done_bytes  24:8 copy_total_bytes  32:8 newest_ts_ns
 *                40:8 gen  48:8 synced_gen  56:8 start_seq  64:128 primary_addr (the
 *                primary's replication HOST:PORT, NUL-padded; may be empty)
 *                192:.. reason (text, at most WIRE_MAX_REASON bytes)
 *   PAIR_CMD     0:1 cmd (enum wire_pair_cmd; | WIRE_CMD_REPLY in the answer)
 *                1:1 flags (WIRE_CMD_FORCE | WIRE_CMD_DRAIN | WIRE_CMD_REFUSED)
 *                2:6 reserved  8:8 pair_id  16:8 seq  24:8 gen  32:8 synced_gen
 *                40:.. text (text, at most WIRE_MAX_REASON bytes; why, when REFUSED).
 *                WIRE_CMD_REFUSED only in a reply.
 *   BITMAP       0:2 volume (the primary's volume id, < JOURNAL_MAX_VOLUMES)
 *                2:2 flags (WIRE_BITMAP_LAST: the last chunk of the whole transfer)
 *                4:4 region_size (a power of two, WIRE_BITMAP_MIN_REGION..
 *                WIRE_BITMAP_MAX_REGION)  8:8 first_region  16:4 nbits
 *                (<= WIRE_BITMAP_MAX_BITS; 0 only with LAST, an empty final marker)
 *                20:4 reserved  24:.. bits: exactly (nbits + 7) / 8 bytes, LSB-first
 *                (region first_region + i is bit i % 8 of byte i / 8); the unused
 *                high bits of the last byte are 0. The regions covered end at or
 *                below 2^64 bytes: (first_region + nbits) * region_size fits 64 bits.
 *
 * Text fields (ERROR's message, reason, PAIR_CMD's text) are UTF-8, not
 * NUL-terminated on the wire: their length is what is left of the payload,
 * and they are NUL-terminated when decoded. A reason or PAIR_CMD text must
 * hold no NUL and no control characters (refused); only an ERROR's message
 * is sanitized instead.
 *
 * Records in JOURNAL_DATA are the master journal's records exactly as stored
 * (include/jrbd/journal_format.h: 64-byte header, then payload), packed back
 * to back with no padding, with consecutive seqs first_seq..last_seq, and
 * checksummed with the primary journal's seed (sent in PAIR_CREATE/ATTACH).
 * Those checksums, made when the primary journaled each record and checked
 * by the secondary before it stores any record of the batch, are what
 * guard the data on the link: the frame's payload_csum leaves it out, so
 * the primary makes no second pass over every byte it sends. Compressed
 * data that is damaged fails zstd or those same checks.
 */
#ifndef JRBD_WIRE_H
#define JRBD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jrbd/journal_format.h"

#define WIRE_MAGIC 0x5752424au /* "JRBW" little-endian */
#define WIRE_VERSION 2u        /* 2: JOURNAL_DATA payload_csum covers the fixed part */
#define WIRE_HDR_SIZE 32u
/* Largest raw record data in one JOURNAL_DATA: at least one maximal record. */
#define WIRE_MAX_DATA (4u << 20)
#define WIRE_MAX_PAYLOAD (WIRE_MAX_DATA + 64u)
#define WIRE_NONCE_LEN 32u
#define WIRE_MAC_LEN 32u
#define WIRE_SITE_LEN 64u
#define WIRE_MAX_ERROR 1024u
#define WIRE_MAX_REASON 256u
#define WIRE_ADDR_LEN 128u
/* BITMAP limits: region sizes, and the bits of one chunk (its bytes are at
 * most WIRE_MAX_DATA). */
#define WIRE_BITMAP_MIN_REGION 4096u
#define WIRE_BITMAP_MAX_REGION (1u << 30)
#define WIRE_BITMAP_MAX_BITS (WIRE_MAX_DATA * 8u)

enum wire_type {
	WIRE_HELLO = 1,
	WIRE_AUTH = 2,
	WIRE_ERROR = 3,
	WIRE_PAIR_CREATE = 4,
	WIRE_PAIR_ATTACH = 5,
	WIRE_PAIR_OK = 6,
	WIRE_READ_JOURNAL = 7,
	WIRE_JOURNAL_DATA = 8,
	WIRE_STATUS = 9,
	WIRE_PRIMARY_STATUS = 10,
	WIRE_PAIR_CMD = 11,
	WIRE_BITMAP = 12,
};

enum wire_role {
	WIRE_ROLE_PRIMARY = 1,   /* dialed */
	WIRE_ROLE_SECONDARY = 2, /* accepted */
};

enum wire_mode {
	WIRE_MODE_ASYNC = 0,
	WIRE_MODE_SYNC = 1,
};

enum wire_compression {
	WIRE_COMP_NONE = 0,
	WIRE_COMP_ZSTD = 1,
};

enum wire_pair_state {
	WIRE_STATE_COPY = 1,
	WIRE_STATE_PAIR = 2,
	WIRE_STATE_PFUL = 3,
	WIRE_STATE_PFUS = 4,
	WIRE_STATE_PSUS = 5,
	WIRE_STATE_PSUE = 6,
	WIRE_STATE_SSWS = 7,
};

/* PAIR_CMD's cmd; a reply carries the cmd it answers | WIRE_CMD_REPLY. */
enum wire_pair_cmd_code {
	WIRE_CMD_RESYNC = 1,
	WIRE_CMD_DELETE = 2,
	WIRE_CMD_SWAP = 3,
	WIRE_CMD_SUSPEND = 4,
};
#define WIRE_CMD_REPLY 0x80u

/* PAIR_CMD's flags (bits); a receiver refuses others. */
enum wire_pair_cmd_flag {
	WIRE_CMD_FORCE = 1,
	WIRE_CMD_DRAIN = 2,
	WIRE_CMD_REFUSED = 4, /* reply only: the answer is no, text says why */
};

/* BITMAP's flags (bits); a receiver refuses others. */
enum wire_bitmap_flag {
	WIRE_BITMAP_LAST = 1,
};

struct wire_hdr {
	uint16_t type;
	uint16_t flags;
	uint32_t payload_len;
	uint64_t payload_csum;
};

struct wire_hello {
	uint32_t version;
	uint32_t role;
	uint8_t nonce[WIRE_NONCE_LEN];
	char site[WIRE_SITE_LEN + 1]; /* NUL-terminated when decoded */
};

struct wire_auth {
	uint8_t mac[WIRE_MAC_LEN];
};

struct wire_error {
	int32_t code;
	char message[WIRE_MAX_ERROR + 1]; /* NUL-terminated when decoded */
};

struct wire_volume {
	char name[JOURNAL_VOLNAME_LEN + 1];
	uint64_t size;
};

struct wire_pair_create {
	char group[JOURNAL_GROUPNAME_LEN + 1];
	uint64_t pair_id;
	uint64_t start_seq;
	uint64_t primary_seed;
	uint8_t mode;
	uint8_t initial_copy;
	uint16_t nvolumes;
	struct wire_volume volumes[JOURNAL_MAX_VOLUMES];
};

struct wire_pair_attach {
	char group[JOURNAL_GROUPNAME_LEN + 1];
	uint64_t pair_id;
	uint64_t primary_seed;
	uint8_t mode;
};

struct wire_pair_ok {
	uint64_t received_seq;
	uint64_t restored_seq;
	uint8_t state; /* enum wire_pair_state */
	uint64_t gen;
	uint64_t synced_gen;
};

struct wire_read_journal {
	uint64_t req_id;
	uint64_t received_seq;
	uint64_t restored_seq;
	uint32_t max_bytes;
};

struct wire_journal_data {
	uint64_t req_id;
	uint64_t first_seq;
	uint64_t last_seq;
	uint32_t nrecords;
	uint32_t raw_len;
	uint8_t compression;
	const uint8_t *data; /* decoded: points into the frame payload */
	uint32_t data_len;   /* bytes at data (compressed length if compressed) */
};

struct wire_status {
	uint64_t received_seq;
	uint64_t restored_seq;
	uint64_t restored_ts_ns;
};

struct wire_primary_status {
	uint8_t state;
	uint64_t written_seq;
	uint64_t copy_done_bytes;
	uint64_t copy_total_bytes;
	uint64_t newest_ts_ns;
	uint64_t gen;
	uint64_t synced_gen;
	uint64_t start_seq;
	char primary_addr[WIRE_ADDR_LEN + 1]; /* NUL-terminated when decoded */
	char reason[WIRE_MAX_REASON + 1];     /* NUL-terminated when decoded */
};

struct wire_pair_cmd {
	uint8_t cmd;   /* enum wire_pair_cmd_code, | WIRE_CMD_REPLY in a reply */
	uint8_t flags; /* enum wire_pair_cmd_flag bits */
	uint64_t pair_id;
	uint64_t seq;
	uint64_t gen;
	uint64_t synced_gen;
	char text[WIRE_MAX_REASON + 1]; /* NUL-terminated when decoded */
};

struct wire_bitmap {
	uint16_t volume;
	uint16_t flags; /* enum wire_bitmap_flag bits */
	uint32_t region_size;
	uint64_t first_region;
	uint32_t nbits;
	const uint8_t *bits; /* decoded: points into the frame payload */
};

/*
 * Decoded message: hdr plus the one member of the union named by hdr.type.
 */
struct wire_msg {
	struct wire_hdr hdr;
	union {
		struct wire_hello hello;
		struct wire_auth auth;
		struct wire_error error;
		struct wire_pair_create pair_create;
		struct wire_pair_attach pair_attach;
		struct wire_pair_ok pair_ok;
		struct wire_read_journal read_journal;
		struct wire_journal_data journal_data;
		struct wire_status status;
		struct wire_primary_status primary_status;
		struct wire_pair_cmd pair_cmd;
		struct wire_bitmap bitmap;
	} u;
};

#endif
