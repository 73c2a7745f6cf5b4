/*
 * On-disk format of a jrbd journal volume (master journal at the primary,
 * restore journal at the secondary). All integers are little-endian.
 *
 * Layout of the journal file or device:
 *
 *   offset 0       superblock copy A (4096 bytes)
 *   offset 4096    superblock copy B (4096 bytes)
 *   offset 8192    record area, area_size bytes, used as a circular log
 *
 * Superblock (struct journal_sb_wire, 4096 bytes):
 *
 *   off  size  field
 *   0    8     magic          "JRBDJRNL"
 *   8    4     version        JOURNAL_VERSION
 *   12   4     sb_size        4096
 *   16   16    uuid           random at format; seeds every checksum (xxh3 seed = low 8 bytes)
 *   32   8     journal_size   bytes of the whole file/device in use
 *   40   8     area_start     8192
 *   48   8     area_size      bytes of the record area
 *   56   4     align          batch alignment in bytes (O_DIRECT alignment, 512..4096)
 *   60   4     epoch          incremented on every open; records carry it
 *   64   8     sb_gen         incremented on every superblock write; the valid copy with
 *                             the highest sb_gen wins (copies are written alternately)
 *   72   8     tail_lpos      logical position of the oldest retained record
 *   80   8     tail_seq       its sequence number (= next seq when the journal is empty)
 *   88   8     ckpt_lpos      redo starts here: records before it are durable in the data volumes
 *   96   8     ckpt_seq       sequence number of the record at ckpt_lpos
 *   104  8     created_ns     format time, ns since the epoch (CLOCK_REALTIME)
 *   112  8     updated_ns     time of this superblock write
 *   120  64    group          group name, NUL-padded
 *   184  2     nvolumes       number of names in volumes[]
 *   186  2     role           JOURNAL_ROLE_* (master or restore)
 *   188  4     reserved
 *   192  32x40 volumes        volume id i's name, NUL-padded (id = index)
 *   1472 8x32  consumers      JOURNAL_MAX_CONSUMERS x {u64 id, u64 released_seq,
 *                             u64 received_seq, u64 reserved} (id 0 = free slot)
 *   1728 ...   zero
 *   4088 8     sb_csum        xxh3_64 (seed 0) of bytes 0..4087
 *
 * Logical positions (lpos) grow forever; the physical offset of lpos is
 * area_start + lpos % area_size. A batch never straddles the end of the area:
 * when it doesn't fit, the writer moves lpos up to the next multiple of
 * area_size and the bytes skipped are wasted until the tail passes them.
 *
 * Record (struct journal_rec_hdr, 64 bytes, then payload_len bytes of payload):
 *
 *   off  size  field
 *   0    4     magic          JOURNAL_REC_MAGIC
 *   4    1     kind           JOURNAL_REC_* below
 *   5    1     flags          JOURNAL_RF_*
 *   6    2     volume         volume id within the group
 *   8    4     payload_len    bytes of payload after the header (WRITE, BASE: == length)
 *   12   4     epoch          superblock epoch when written
 *   16   8     seq            group sequence number, +1 per record, never reused
 *   24   8     offset         byte offset in the volume
 *   32   8     length         bytes of the volume affected (0 for MARKER)
 *   40   8     timestamp_ns   CLOCK_REALTIME when the record was created
 *   48   8     payload_csum   xxh3_64(payload, seed) (0 when payload_len == 0)
 *   56   8     hdr_csum       xxh3_64(bytes 0..55, seed)
 *
 * Records are packed back to back inside a batch; a batch starts at an lpos
 * aligned to `align` and is zero-padded up to the next multiple of `align`.
 * A batch is written with one O_DIRECT write with RWF_DSYNC, so a completed
 * batch is durable.
 *
 * A record at lpos is valid when: the magic matches, hdr_csum matches, kind is
 * known, payload_len <= JOURNAL_MAX_PAYLOAD and the record fits in the area
 * without crossing its end, seq equals the expected next sequence number,
 * epoch is >= the previous record's epoch and <= the superblock's epoch, and
 * payload_csum matches.
 *
 * Recovery (the scanner) starts at tail_lpos expecting tail_seq and follows
 * valid records. Where no valid record stands at lpos:
 *   - if lpos is not aligned, it retries at the next aligned lpos (batch padding);
 *   - else it retries at the next multiple of area_size (wrap), once;
 *   - else the log ends there.
 * So a torn batch ends the log at its first damaged record: a torn record is
 * never replayed, and because batches are acknowledged in sequence order, no
 * acknowledged record lies beyond it. Stale records of an earlier lap have a
 * lower seq; stale records from before a crash that happen to carry the
 * expected seq have a lower epoch than the record before them and are
 * rejected. Records of an earlier format have different checksums (the seed
 * is the new uuid).
 */
#ifndef JRBD_JOURNAL_FORMAT_H
#define JRBD_JOURNAL_FORMAT_H

#include <stdint.h>

#define JOURNAL_SB_MAGIC "JRBDJRNL"
#define JOURNAL_VERSION 1u
#define JOURNAL_SB_SIZE 4096u
#define JOURNAL_AREA_START 8192u
#define JOURNAL_REC_MAGIC 0x5242524au /* "JRBR" little-endian */
#define JOURNAL_REC_HDR_SIZE 64u
#define JOURNAL_MAX_PAYLOAD (1u << 20)    /* a longer host write becomes several records */
#define JOURNAL_MIN_SIZE (16ull << 20)    /* smallest journal we format */
#define JOURNAL_MAX_VOLUMES 32u
#define JOURNAL_VOLNAME_LEN 40u
#define JOURNAL_GROUPNAME_LEN 64u
#define JOURNAL_MAX_CONSUMERS 8u

enum journal_rec_kind {
	JOURNAL_REC_WRITE = 1,  /* host write: payload is the data */
	JOURNAL_REC_TRIM = 2,   /* host trim: no payload; reads as zero after replay */
	JOURNAL_REC_ZERO = 3,   /* host write-zeroes: no payload */
	JOURNAL_REC_MARKER = 4, /* timestamp only: lets consumers measure lag when idle */
	JOURNAL_REC_BASE = 5,   /* initial-copy / resync data: payload is the data */
	JOURNAL_REC_BASE_ZERO = 6, /* initial-copy region that reads as zero: no payload */
};

enum journal_rec_flags {
	JOURNAL_RF_NO_HOLE = 1u << 0, /* ZERO: keep the range allocated */
	JOURNAL_RF_FUA = 1u << 1,     /* host asked for FUA (informational) */
};

enum journal_role {
	JOURNAL_ROLE_MASTER = 1,
	JOURNAL_ROLE_RESTORE = 2,
};

struct journal_rec_hdr {
	uint32_t magic;
	uint8_t kind;
	uint8_t flags;
	uint16_t volume;
	uint32_t payload_len;
	uint32_t epoch;
	uint64_t seq;
	uint64_t offset;
	uint64_t length;
	uint64_t timestamp_ns;
	uint64_t payload_csum;
	uint64_t hdr_csum;
} __attribute__((packed));
_Static_assert(sizeof(struct journal_rec_hdr) == JOURNAL_REC_HDR_SIZE, "record header size");

struct journal_consumer_wire {
	uint64_t id; /* 0: free slot */
	uint64_t released_seq;
	uint64_t received_seq;
	uint64_t reserved;
} __attribute__((packed));

struct journal_sb_wire {
	char magic[8];
	uint32_t version;
	uint32_t sb_size;
	uint8_t uuid[16];
	uint64_t journal_size;
	uint64_t area_start;
	uint64_t area_size;
	uint32_t align;
	uint32_t epoch;
	uint64_t sb_gen;
	uint64_t tail_lpos;
	uint64_t tail_seq;
	uint64_t ckpt_lpos;
	uint64_t ckpt_seq;
	uint64_t created_ns;
	uint64_t updated_ns;
	char group[JOURNAL_GROUPNAME_LEN];
	uint16_t nvolumes;
	uint16_t role;
	uint32_t reserved;
	char volumes[JOURNAL_MAX_VOLUMES][JOURNAL_VOLNAME_LEN];
	struct journal_consumer_wire consumers[JOURNAL_MAX_CONSUMERS];
	uint8_t zero[4088 - 1728];
	uint64_t sb_csum;
} __attribute__((packed));
_Static_assert(sizeof(struct journal_sb_wire) == JOURNAL_SB_SIZE, "superblock size");

#endif
