/*
 * The NBD wire protocol (fixed newstyle handshake, simple and structured
 * replies) as jrbd speaks it, and its pure codec: parsers and encoders that do
 * no I/O and keep no state, so they can be unit-tested and fuzzed alone.
 *
 * Reference: doc/proto.md of the NetworkBlockDevice/nbd repository.
 * Every integer on the wire is big-endian; the structs below are packed wire
 * images and only nbd_proto.c converts their byte order.
 *
 * Handshake (server first):
 *
 *   S: u64 NBD_MAGIC, u64 NBD_OPTS_MAGIC, u16 handshake flags   (18 bytes)
 *   C: u32 client flags                                         (4 bytes)
 *   then repeated, until NBD_OPT_GO/NBD_OPT_EXPORT_NAME succeeds:
 *   C: u64 NBD_OPTS_MAGIC, u32 option, u32 length, data         (16 + length)
 *   S: u64 NBD_REP_MAGIC, u32 option, u32 reply, u32 length, data (20 + length)
 *   NBD_OPT_EXPORT_NAME is answered instead by u64 size, u16 transmission
 *   flags and 124 zero bytes (none when both sides agreed NO_ZEROES).
 *
 * Transmission:
 *
 *   request (28 bytes, then `length` bytes of payload for NBD_CMD_WRITE):
 *     off 0 u32 magic, 4 u16 flags, 6 u16 type, 8 u64 cookie, 16 u64 offset, 24 u32 length
 *   simple reply (16 bytes, then data for a successful READ):
 *     off 0 u32 magic, 4 u32 error, 8 u64 cookie
 *   structured reply chunk (20 bytes, then `length` bytes of payload):
 *     off 0 u32 magic, 4 u16 flags, 6 u16 type, 8 u64 cookie, 16 u32 length
 *
 * Not supported (answered with NBD_REP_ERR_UNSUP): TLS, metadata contexts
 * and block status, extended headers. The cookie is opaque: it is echoed.
 *
 * Parsers return the number of bytes consumed, -EAGAIN when buf holds fewer
 * bytes than the message needs (nothing consumed: call again with more) or
 * -EPROTO for input that is not NBD. They never write to ret on failure.
 */
#ifndef JRBD_NBD_PROTO_H
#define JRBD_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Magic numbers. */
#define NBD_MAGIC 0x4e42444d41474943ull      /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC 0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ull  /* option replies */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* Handshake flags (server, 16 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)

/* Client flags (32 bits). */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_ROTATIONAL (1u << 4)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_RESIZE (1u << 9)
#define NBD_FLAG_SEND_CACHE (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1u << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT 2u
#define NBD_OPT_LIST 3u
#define NBD_OPT_PEEK_EXPORT 4u /* withdrawn */
#define NBD_OPT_STARTTLS 5u
#define NBD_OPT_INFO 6u
#define NBD_OPT_GO 7u
#define NBD_OPT_STRUCTURED_REPLY 8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT 10u
#define NBD_OPT_EXTENDED_HEADERS 11u

/* Option reply types; errors have bit 31 set. */
#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_FLAG_ERROR (1u << 31)
#define NBD_REP_ERR_UNSUP (NBD_REP_FLAG_ERROR | 1u)
#define NBD_REP_ERR_POLICY (NBD_REP_FLAG_ERROR | 2u)
#define NBD_REP_ERR_INVALID (NBD_REP_FLAG_ERROR | 3u)
#define NBD_REP_ERR_PLATFORM (NBD_REP_FLAG_ERROR | 4u)
#define NBD_REP_ERR_TLS_REQD (NBD_REP_FLAG_ERROR | 5u)
#define NBD_REP_ERR_UNKNOWN (NBD_REP_FLAG_ERROR | 6u)
#define NBD_REP_ERR_SHUTDOWN (NBD_REP_FLAG_ERROR | 7u)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8u)
#define NBD_REP_ERR_TOO_BIG (NBD_REP_FLAG_ERROR | 9u)

/* NBD_REP_INFO information types. */
#define NBD_INFO_EXPORT 0u
#define NBD_INFO_NAME 1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE 3u

/* Commands. */
#define NBD_CMD_READ 0u
#define NBD_CMD_WRITE 1u
#define NBD_CMD_DISC 2u
#define NBD_CMD_FLUSH 3u
#define NBD_CMD_TRIM 4u
#define NBD_CMD_CACHE 5u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u
#define NBD_CMD_RESIZE 8u

/* Command flags. */
#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Structured replies. */
#define NBD_REPLY_FLAG_DONE (1u << 0)
#define NBD_REPLY_TYPE_NONE 0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_OFFSET_HOLE 2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR ((1u << 15) | 1u)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) | 2u)

/* Error values on the wire (not the host's errno numbering). */
#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_ENOMEM 12u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP 95u
#define NBD_ESHUTDOWN 108u

/* Limits. */
#define NBD_MAX_STRING 4096u     /* spec: strings MUST be no longer than this */
#define NBD_MAX_OPTION_LEN 4096u /* longer option payloads get NBD_REP_ERR_TOO_BIG */
#define NBD_MIN_BLOCK_SIZE 1u    /* advertised in NBD_INFO_BLOCK_SIZE */
#define NBD_PREF_BLOCK_SIZE 4096u
#define NBD_MAX_BLOCK_SIZE (32u << 20) /* largest maximum block size we advertise */
#define NBD_EXPORT_NAME_ZEROES 124u

/* ---- Wire images (packed, big-endian) ---------------------------------- */

struct nbd_handshake_hdr {
	uint64_t magic;      /* NBD_MAGIC */
	uint64_t opts_magic; /* NBD_OPTS_MAGIC */
	uint16_t gflags;     /* NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES */
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_handshake_hdr) == 18, "nbd handshake is 18 bytes");

struct nbd_client_flags_wire {
	uint32_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_client_flags_wire) == 4, "nbd client flags are 4 bytes");

struct nbd_option_hdr {
	uint64_t magic; /* NBD_OPTS_MAGIC */
	uint32_t option;
	uint32_t len; /* bytes of data that follow */
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_option_hdr) == 16, "nbd option header is 16 bytes");

struct nbd_option_reply_hdr {
	uint64_t magic; /* NBD_REP_MAGIC */
	uint32_t option;
	uint32_t reply;
	uint32_t len; /* bytes of data that follow */
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_option_reply_hdr) == 20, "nbd option reply header is 20 bytes");

/* Answer to NBD_OPT_EXPORT_NAME; only the first 10 bytes go out with NO_ZEROES. */
struct nbd_export_name_reply_wire {
	uint64_t size;
	uint16_t tflags;
	uint8_t zeroes[NBD_EXPORT_NAME_ZEROES];
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_export_name_reply_wire) == 134, "export name reply is 134 bytes");
#define NBD_EXPORT_NAME_REPLY_SHORT 10u

struct nbd_info_export_wire {
	uint16_t type; /* NBD_INFO_EXPORT */
	uint64_t size;
	uint16_t tflags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_info_export_wire) == 12, "NBD_INFO_EXPORT is 12 bytes");

struct nbd_info_block_size_wire {
	uint16_t type; /* NBD_INFO_BLOCK_SIZE */
	uint32_t min;
	uint32_t pref;
	uint32_t max;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_info_block_size_wire) == 14, "NBD_INFO_BLOCK_SIZE is 14 bytes");

struct nbd_request_hdr {
	uint32_t magic; /* NBD_REQUEST_MAGIC */
	uint16_t flags; /* NBD_CMD_FLAG_* */
	uint16_t type;  /* NBD_CMD_* */
	uint64_t cookie;
	uint64_t offset;
	uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_request_hdr) == 28, "nbd request header is 28 bytes");

struct nbd_simple_reply_hdr {
	uint32_t magic; /* NBD_SIMPLE_REPLY_MAGIC */
	uint32_t error; /* NBD_E* */
	uint64_t cookie;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_simple_reply_hdr) == 16, "nbd simple reply is 16 bytes");

struct nbd_structured_reply_hdr {
	uint32_t magic; /* NBD_STRUCTURED_REPLY_MAGIC */
	uint16_t flags; /* NBD_REPLY_FLAG_* */
	uint16_t type;  /* NBD_REPLY_TYPE_* */
	uint64_t cookie;
	uint32_t len; /* bytes of payload that follow */
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_structured_reply_hdr) == 20, "nbd structured reply is 20 bytes");

/* NBD_REPLY_TYPE_OFFSET_DATA chunk up to its data. */
struct nbd_structured_read_hdr {
	struct nbd_structured_reply_hdr hdr;
	uint64_t offset;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_structured_read_hdr) == 28, "OFFSET_DATA header is 28 bytes");

/* NBD_REPLY_TYPE_ERROR chunk without message. */
struct nbd_structured_error_hdr {
	struct nbd_structured_reply_hdr hdr;
	uint32_t error; /* NBD_E*, nonzero */
	uint16_t msg_len;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_structured_error_hdr) == 26, "ERROR chunk header is 26 bytes");

/* ---- Decoded (host order) ----------------------------------------------- */

struct nbd_option {
	uint32_t option; /* NBD_OPT_* (any value: unknown ones are answered UNSUP) */
	uint32_t len;    /* bytes of data that follow the header */
};

/* Payload of NBD_OPT_INFO / NBD_OPT_GO. */
struct nbd_opt_go {
	char name[NBD_MAX_STRING + 1]; /* NUL-terminated; "" is the default export */
	uint32_t name_len;
	uint16_t ninfo;    /* information requests listed */
	uint32_t info_req; /* bit (1 << NBD_INFO_x) for each known type requested */
};

struct nbd_request {
	uint16_t flags; /* NBD_CMD_FLAG_* */
	uint16_t type;  /* NBD_CMD_* */
	uint64_t cookie;
	uint64_t offset;
	uint32_t len;
};

struct nbd_option_reply {
	uint32_t option;
	uint32_t reply;
	uint32_t len;
};

struct nbd_simple_reply {
	uint32_t error;
	uint64_t cookie;
};

struct nbd_structured_reply {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint32_t len;
};

/* ---- Handshake ----------------------------------------------------------- */

/* The server's first 18 bytes. */
void nbd_encode_handshake(struct nbd_handshake_hdr *w, uint16_t gflags);

/*
 * The client's 32-bit flags. Returns 4, -EAGAIN, or -EPROTO when a bit is
 * unknown or answers a handshake flag the server (gflags) did not offer: the
 * spec says the server must then drop the connection.
 */
int nbd_parse_client_flags(const void *buf, size_t len, uint16_t gflags, uint32_t *ret_flags);

/* Option header: returns 16, -EAGAIN, or -EPROTO on a bad magic. The length
 * is not bounded here: the caller decides what it is willing to read. */
int nbd_parse_option_hdr(const void *buf, size_t len, struct nbd_option *ret);

/*
 * NBD_OPT_EXPORT_NAME payload (the whole option data, len bytes): the name.
 * Copies it NUL-terminated into ret_name (NBD_MAX_STRING + 1 bytes).
 * Returns len, -E2BIG when longer than NBD_MAX_STRING, -EPROTO when it holds
 * a NUL byte.
 */
int nbd_parse_opt_export_name(const void *payload, size_t len, char *ret_name);

/*
 * NBD_OPT_INFO / NBD_OPT_GO payload (the whole option data, len bytes):
 * u32 name length, name, u16 count, count x u16 information request.
 * Returns len, or -EPROTO when a field runs past the end, bytes are left
 * over, or the name holds a NUL; -E2BIG when the name is longer than
 * NBD_MAX_STRING. Unknown information types are ignored (the spec says so).
 */
int nbd_parse_opt_go(const void *payload, size_t len, struct nbd_opt_go *ret);

/* Option replies: each writes the 20-byte header and its payload into buf
 * (cap bytes) and return the total length, or -ENOBUFS when it doesn't fit. */
int nbd_encode_opt_reply(void *buf, size_t cap, uint32_t option, uint32_t reply,
                         const void *payload, size_t payload_len);
/* NBD_REP_SERVER: u32 name length + name. */
int nbd_encode_rep_server(void *buf, size_t cap, uint32_t option, const char *name,
                          size_t name_len);
/* NBD_REP_INFO with NBD_INFO_EXPORT. */
int nbd_encode_rep_info_export(void *buf, size_t cap, uint32_t option, uint64_t size,
                               uint16_t tflags);
/* NBD_REP_INFO with NBD_INFO_BLOCK_SIZE. */
int nbd_encode_rep_info_block_size(void *buf, size_t cap, uint32_t option, uint32_t min,
                                   uint32_t pref, uint32_t max);
/* NBD_REP_INFO with a string item (NBD_INFO_NAME, NBD_INFO_DESCRIPTION). */
int nbd_encode_rep_info_string(void *buf, size_t cap, uint32_t option, uint16_t info_type,
                               const char *str, size_t str_len);

/* Answer to NBD_OPT_EXPORT_NAME; send NBD_EXPORT_NAME_REPLY_SHORT bytes of it
 * when NO_ZEROES was agreed, else all of it. */
void nbd_encode_export_name_reply(struct nbd_export_name_reply_wire *w, uint64_t size,
                                  uint16_t tflags);

/* ---- Transmission -------------------------------------------------------- */

/* Transmission flags of an export as jrbd serves it. */
uint16_t nbd_export_flags(bool read_only);

/* Request header: returns 28, -EAGAIN, or -EPROTO on a bad magic (the stream
 * can't be resynchronised after that: close the connection). */
int nbd_parse_request(const void *buf, size_t len, struct nbd_request *ret);

/* Bytes of payload that follow the request header (WRITE: len, else 0),
 * whether the request is valid or not. */
uint32_t nbd_request_payload_len(const struct nbd_request *req);

/*
 * Checks a request against the export: size in bytes, tflags as sent to the
 * client (NBD_FLAG_READ_ONLY included), max_block the maximum block size
 * advertised (0: NBD_MAX_BLOCK_SIZE). Returns 0 or the error to answer with
 * (as -errno, for nbd_errno_to_wire()):
 *   -EINVAL  unknown command, flag not valid for the command or not
 *            negotiated, FLUSH/DISC with offset or length, READ/TRIM/CACHE
 *            past the end, READ/WRITE/CACHE/WRITE_ZEROES (without FAST_ZERO)
 *            longer than max_block;
 *   -EPERM   WRITE/TRIM/WRITE_ZEROES on a read-only export;
 *   -ENOSPC  WRITE/WRITE_ZEROES past the end (the spec's advice).
 * A zero length is valid (the spec leaves it unspecified but says not to
 * disconnect): the caller may answer it without doing I/O.
 */
int nbd_request_check(const struct nbd_request *req, uint64_t size, uint16_t tflags,
                      uint32_t max_block);

/* -errno (or errno) of a failed request -> NBD error value; 0 -> 0. The one
 * place where host errors become wire errors. */
uint32_t nbd_errno_to_wire(int err);

void nbd_encode_simple_reply(struct nbd_simple_reply_hdr *w, uint32_t error, uint64_t cookie);
void nbd_encode_structured_reply(struct nbd_structured_reply_hdr *w, uint16_t flags, uint16_t type,
                                 uint64_t cookie, uint32_t len);
/* Header of a one-chunk read reply (OFFSET_DATA with DONE); data_len bytes follow. */
void nbd_encode_structured_read(struct nbd_structured_read_hdr *w, uint64_t cookie, uint64_t offset,
                                uint32_t data_len);
/* Final NBD_REPLY_TYPE_ERROR chunk with no message; error is an NBD_E* value. */
void nbd_encode_structured_error(struct nbd_structured_error_hdr *w, uint64_t cookie,
                                 uint32_t error);

/* ---- Client side (tests and tools) --------------------------------------- */

void nbd_encode_request(struct nbd_request_hdr *w, const struct nbd_request *req);
void nbd_encode_option_hdr(struct nbd_option_hdr *w, uint32_t option, uint32_t len);
/* Return the header size, -EAGAIN or -EPROTO (bad magic). */
int nbd_parse_option_reply(const void *buf, size_t len, struct nbd_option_reply *ret);
int nbd_parse_simple_reply(const void *buf, size_t len, struct nbd_simple_reply *ret);
int nbd_parse_structured_reply(const void *buf, size_t len, struct nbd_structured_reply *ret);

/* Names for logs ("NBD_OPT_GO", "READ"); "unknown" for others. */
const char *nbd_opt_name(uint32_t option);
const char *nbd_cmd_name(uint16_t type);

#endif
