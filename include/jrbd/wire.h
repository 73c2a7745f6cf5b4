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
 *   16   8     payload_csum xxh3_64(payload, seed 0); 0 when payload_len == 0
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
 *   PAIR_OK      0:8 received_seq  8:8 restored_seq
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
 *
 * Records in JOURNAL_DATA are the master journal's records exactly as stored
 * (include/jrbd/journal_format.h: 64-byte header, then payload), packed back
 * to back with no padding, with consecutive seqs first_seq..last_seq, and
 * checksummed with the primary journal's seed (sent in PAIR_CREATE/ATTACH).
 */
#ifndef JRBD_WIRE_H
#define JRBD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jrbd/journal_format.h"

#define WIRE_MAGIC 0x5752424au /* "JRBW" little-endian */
#define WIRE_VERSION 1u
#define WIRE_HDR_SIZE 32u
/* Largest raw record data in one JOURNAL_DATA: at least one maximal record. */
#define WIRE_MAX_DATA (4u << 20)
#define WIRE_MAX_PAYLOAD (WIRE_MAX_DATA + 64u)
#define WIRE_NONCE_LEN 32u
#define WIRE_MAC_LEN 32u
#define WIRE_SITE_LEN 64u
#define WIRE_MAX_ERROR 1024u

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
	} u;
};

#endif
