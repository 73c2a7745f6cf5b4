/*
 * Private helpers shared by the journal's source files: little-endian field
 * access, the record validity rules the writer and the scanner must agree
 * on, and superblock decoding with a reason string for `journal dump`.
 */
#ifndef JRBD_JOURNAL_INTERNAL_H
#define JRBD_JOURNAL_INTERNAL_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "journal/journal.h"

/* Byte-order conversion happens only through these: the on-disk format is
 * little-endian whatever the host is. memcpy keeps unaligned access legal. */
static inline uint16_t
journal_get_le16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static inline uint32_t
journal_get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static inline uint64_t
journal_get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline void
journal_put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static inline void
journal_put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void
journal_put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

/* Semantic checks on a decoded or to-be-written record (kind known, payload
 * length bounded and consistent with the kind, offset+length not wrapping).
 * The writer runs the same checks as the scanner so it can never write a
 * record that recovery would reject. 0 or -EPROTO. */
int journal_rec_validate(const struct journal_rec *rec);

/* journal_sb_decode() that also says why a copy was rejected ("bad magic",
 * "bad checksum", ...); *ret_why is a static string, set on failure only. */
int journal_sb_decode_why(const void *buf, size_t len, struct journal_sb *ret,
                          const char **ret_why);

/* A journal_read_fn over a file descriptor that reads ahead: the scanner asks
 * for a 64-byte header, then its payload, record after record, and one
 * pread per window instead of two per record makes recovery of a large
 * journal cheap. Reads never go past `limit` (the end of the record area),
 * so a window never runs into EOF. In journal_scan.c. */
struct journal_file_reader {
	int fd;         /* not owned */
	uint64_t limit; /* bytes of the file that may be read */
	uint8_t *win;   /* JOURNAL_READ_WINDOW bytes, owned */
	uint64_t win_off;
	size_t win_len; /* valid bytes in win */
};
#define JOURNAL_READ_WINDOW (1u << 20)
int journal_file_reader_init(struct journal_file_reader *r, int fd, uint64_t limit);
void journal_file_reader_fini(struct journal_file_reader *r);
int journal_file_read(void *arg, void *buf, size_t len, uint64_t offset);

/* Reads both superblock copies of fd with pread and picks the newest valid
 * one; on failure, why (if non-NULL) gets "superblock A: ...; superblock B: ...".
 * In journal_format.c. */
int journal_sb_read(int fd, struct journal_sb *ret, unsigned *ret_slot, char *why, size_t whylen);

#endif
