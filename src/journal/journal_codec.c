/*
 * Journal codec: record headers and superblocks to and from their on-disk
 * bytes (include/jrbd/journal_format.h). Pure functions over buffers: no
 * I/O, no allocation, no logging. Every integer goes through the explicit
 * little-endian helpers, never through a struct copy, so the format is the
 * same on any host.
 *
 * Not here: deciding whether a record belongs to the log (seq, epoch, area
 * bounds) — that needs scanner state and lives in journal_scan.c.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <xxhash.h>

#include "common/checked.h"
#include "journal/journal_internal.h"

/* The table in journal_format.h, pinned against the packed structs. */
#define SBOFF(f) offsetof(struct journal_sb_wire, f)
#define RECOFF(f) offsetof(struct journal_rec_hdr, f)
_Static_assert(SBOFF(uuid) == 16, "sb uuid");
_Static_assert(SBOFF(epoch) == 60, "sb epoch");
_Static_assert(SBOFF(group) == 120, "sb group");
_Static_assert(SBOFF(nvolumes) == 184, "sb nvolumes");
_Static_assert(SBOFF(volumes) == 192, "sb volumes");
_Static_assert(SBOFF(consumers) == 1472, "sb consumers");
_Static_assert(SBOFF(zero) == 1728, "sb zero");
_Static_assert(SBOFF(sb_csum) == 4088, "sb csum");
_Static_assert(RECOFF(seq) == 16, "rec seq");
_Static_assert(RECOFF(payload_csum) == 48, "rec payload_csum");
_Static_assert(RECOFF(hdr_csum) == 56, "rec hdr_csum");

uint64_t
journal_checksum(const void *buf, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(buf, len, seed);
}

const char *
journal_rec_kind_name(uint8_t kind)
{
	switch (kind) {
	case JOURNAL_REC_WRITE:
		return "write";
	case JOURNAL_REC_TRIM:
		return "trim";
	case JOURNAL_REC_ZERO:
		return "zero";
	case JOURNAL_REC_MARKER:
		return "marker";
	case JOURNAL_REC_BASE:
		return "base";
	case JOURNAL_REC_BASE_ZERO:
		return "base-zero";
	default:
		return "unknown";
	}
}

int
journal_rec_validate(const struct journal_rec *rec)
{
	bool has_payload;

	switch (rec->kind) {
	case JOURNAL_REC_WRITE:
	case JOURNAL_REC_BASE:
		has_payload = true;
		break;
	case JOURNAL_REC_TRIM:
	case JOURNAL_REC_ZERO:
	case JOURNAL_REC_BASE_ZERO:
	case JOURNAL_REC_MARKER:
		has_payload = false;
		break;
	default:
		return -EPROTO;
	}
	if (rec->payload_len > JOURNAL_MAX_PAYLOAD)
		return -EPROTO;
	/* Data records carry exactly the bytes they cover; the others carry
	 * none. Redo relies on this to size its writes. */
	if (has_payload ? rec->payload_len != rec->length : rec->payload_len != 0)
		return -EPROTO;
	if (rec->kind == JOURNAL_REC_MARKER && rec->length != 0)
		return -EPROTO;
	if (!range_within(rec->offset, rec->length, UINT64_MAX))
		return -EPROTO;
	return 0;
}

void
journal_rec_encode(const struct journal_rec *rec, const void *payload, uint64_t seed, void *out)
{
	uint8_t *p = out;
	uint64_t pcsum = 0;

	if (rec->payload_len > 0)
		pcsum = journal_checksum(payload, rec->payload_len, seed);
	le_put32(p + RECOFF(magic), JOURNAL_REC_MAGIC);
	p[RECOFF(kind)] = rec->kind;
	p[RECOFF(flags)] = rec->flags;
	le_put16(p + RECOFF(volume), rec->volume);
	le_put32(p + RECOFF(payload_len), rec->payload_len);
	le_put32(p + RECOFF(epoch), rec->epoch);
	le_put64(p + RECOFF(seq), rec->seq);
	le_put64(p + RECOFF(offset), rec->offset);
	le_put64(p + RECOFF(length), rec->length);
	le_put64(p + RECOFF(timestamp_ns), rec->timestamp_ns);
	le_put64(p + RECOFF(payload_csum), pcsum);
	le_put64(p + RECOFF(hdr_csum), journal_checksum(p, RECOFF(hdr_csum), seed));
}

int
journal_rec_decode(const void *buf, size_t len, uint64_t seed, struct journal_rec *ret)
{
	const uint8_t *p = buf;
	struct journal_rec rec;

	if (len < JOURNAL_REC_HDR_SIZE)
		return -EPROTO;
	if (le_get32(p + RECOFF(magic)) != JOURNAL_REC_MAGIC)
		return -EPROTO;
	/* The checksum before the fields: a torn header is "bad checksum",
	 * whatever its fields happen to say. */
	if (le_get64(p + RECOFF(hdr_csum)) != journal_checksum(p, RECOFF(hdr_csum), seed))
		return -EBADMSG;
	rec.kind = p[RECOFF(kind)];
	rec.flags = p[RECOFF(flags)];
	rec.volume = le_get16(p + RECOFF(volume));
	rec.payload_len = le_get32(p + RECOFF(payload_len));
	rec.epoch = le_get32(p + RECOFF(epoch));
	rec.seq = le_get64(p + RECOFF(seq));
	rec.offset = le_get64(p + RECOFF(offset));
	rec.length = le_get64(p + RECOFF(length));
	rec.timestamp_ns = le_get64(p + RECOFF(timestamp_ns));
	rec.payload_csum = le_get64(p + RECOFF(payload_csum));
	if (journal_rec_validate(&rec) < 0)
		return -EPROTO;
	if (rec.payload_len == 0 && rec.payload_csum != 0)
		return -EPROTO;
	*ret = rec;
	return 0;
}

int
journal_rec_check_payload(const struct journal_rec *rec, const void *payload, uint64_t seed)
{
	if (rec->payload_len == 0)
		return rec->payload_csum == 0 ? 0 : -EBADMSG;
	if (journal_checksum(payload, rec->payload_len, seed) != rec->payload_csum)
		return -EBADMSG;
	return 0;
}

/* --- superblock --- */

void
journal_sb_encode(const struct journal_sb *sb, void *out4096)
{
	uint8_t *p = out4096;

	memset(p, 0, JOURNAL_SB_SIZE);
	/* The magic is 8 bytes without a NUL, on purpose. */
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
	memcpy(p + SBOFF(magic), JOURNAL_SB_MAGIC, 8);
	le_put32(p + SBOFF(version), JOURNAL_VERSION);
	le_put32(p + SBOFF(sb_size), JOURNAL_SB_SIZE);
	memcpy(p + SBOFF(uuid), sb->uuid, sizeof(sb->uuid));
	le_put64(p + SBOFF(journal_size), sb->journal_size);
	le_put64(p + SBOFF(area_start), sb->area_start);
	le_put64(p + SBOFF(area_size), sb->area_size);
	le_put32(p + SBOFF(align), sb->align);
	le_put32(p + SBOFF(epoch), sb->epoch);
	le_put64(p + SBOFF(sb_gen), sb->sb_gen);
	le_put64(p + SBOFF(tail_lpos), sb->tail_lpos);
	le_put64(p + SBOFF(tail_seq), sb->tail_seq);
	le_put64(p + SBOFF(ckpt_lpos), sb->ckpt_lpos);
	le_put64(p + SBOFF(ckpt_seq), sb->ckpt_seq);
	le_put64(p + SBOFF(created_ns), sb->created_ns);
	le_put64(p + SBOFF(updated_ns), sb->updated_ns);
	/* strncpy semantics on purpose: NUL-padded fields; the last byte stays
	 * 0 so decode's NUL-termination check holds for any input. */
	for (size_t i = 0; i + 1 < JOURNAL_GROUPNAME_LEN && sb->group[i]; i++)
		p[SBOFF(group) + i] = (uint8_t)sb->group[i];
	le_put16(p + SBOFF(nvolumes), sb->nvolumes);
	le_put16(p + SBOFF(role), sb->role);
	for (size_t v = 0; v < JOURNAL_MAX_VOLUMES; v++) {
		uint8_t *dst = p + SBOFF(volumes) + v * JOURNAL_VOLNAME_LEN;

		for (size_t i = 0; i + 1 < JOURNAL_VOLNAME_LEN && sb->volumes[v][i]; i++)
			dst[i] = (uint8_t)sb->volumes[v][i];
	}
	for (size_t c = 0; c < JOURNAL_MAX_CONSUMERS; c++) {
		uint8_t *dst = p + SBOFF(consumers) + c * sizeof(struct journal_consumer_wire);

		le_put64(dst + 0, sb->consumers[c].id);
		le_put64(dst + 8, sb->consumers[c].released_seq);
		le_put64(dst + 16, sb->consumers[c].received_seq);
	}
	le_put64(p + SBOFF(sb_csum), journal_checksum(p, SBOFF(sb_csum), 0));
}

/* Copies a name known to be NUL-terminated within its field; dst was zeroed,
 * so bytes after the NUL (which the format says are zero) are normalized. */
static void
copy_name(char *dst, const uint8_t *src)
{
	for (size_t i = 0; src[i]; i++)
		dst[i] = (char)src[i];
}

static bool
is_nul_terminated(const uint8_t *p, size_t len)
{
	return memchr(p, 0, len) != NULL;
}

int
journal_sb_decode_why(const void *buf, size_t len, struct journal_sb *ret, const char **ret_why)
{
	const uint8_t *p = buf;
	struct journal_sb sb;
	uint64_t area_end;
	const char *why;
	int err = -EPROTO;

	memset(&sb, 0, sizeof(sb));
	if (len < JOURNAL_SB_SIZE) {
		why = "short superblock";
		goto fail;
	}
	if (memcmp(p + SBOFF(magic), JOURNAL_SB_MAGIC, 8) != 0) {
		why = "bad magic";
		goto fail;
	}
	if (le_get64(p + SBOFF(sb_csum)) != journal_checksum(p, SBOFF(sb_csum), 0)) {
		why = "bad checksum";
		err = -EBADMSG;
		goto fail;
	}
	if (le_get32(p + SBOFF(version)) != JOURNAL_VERSION) {
		why = "unsupported version";
		goto fail;
	}
	if (le_get32(p + SBOFF(sb_size)) != JOURNAL_SB_SIZE) {
		why = "bad sb_size";
		goto fail;
	}
	memcpy(sb.uuid, p + SBOFF(uuid), sizeof(sb.uuid));
	sb.seed = le_get64(sb.uuid);
	sb.journal_size = le_get64(p + SBOFF(journal_size));
	sb.area_start = le_get64(p + SBOFF(area_start));
	sb.area_size = le_get64(p + SBOFF(area_size));
	sb.align = le_get32(p + SBOFF(align));
	sb.epoch = le_get32(p + SBOFF(epoch));
	sb.sb_gen = le_get64(p + SBOFF(sb_gen));
	sb.tail_lpos = le_get64(p + SBOFF(tail_lpos));
	sb.tail_seq = le_get64(p + SBOFF(tail_seq));
	sb.ckpt_lpos = le_get64(p + SBOFF(ckpt_lpos));
	sb.ckpt_seq = le_get64(p + SBOFF(ckpt_seq));
	sb.created_ns = le_get64(p + SBOFF(created_ns));
	sb.updated_ns = le_get64(p + SBOFF(updated_ns));
	sb.nvolumes = le_get16(p + SBOFF(nvolumes));
	sb.role = le_get16(p + SBOFF(role));

	if (sb.area_start != JOURNAL_AREA_START || sb.area_size == 0 ||
	    !checked_add_u64(sb.area_start, sb.area_size, &area_end) ||
	    area_end > sb.journal_size) {
		why = "bad geometry (area outside the journal)";
		goto fail;
	}
	if (sb.align < 512 || sb.align > 4096 || (sb.align & (sb.align - 1)) != 0 ||
	    sb.area_size % sb.align != 0) {
		why = "bad geometry (alignment)";
		goto fail;
	}
	/* The tail can't be past the checkpoint, nor the checkpoint more than
	 * one area ahead of the tail: both lie inside the retained log. */
	if (sb.tail_lpos > sb.ckpt_lpos || sb.tail_seq > sb.ckpt_seq ||
	    sb.ckpt_lpos - sb.tail_lpos > sb.area_size) {
		why = "bad tail/checkpoint";
		goto fail;
	}
	if (sb.nvolumes > JOURNAL_MAX_VOLUMES) {
		why = "too many volumes";
		goto fail;
	}
	if (!is_nul_terminated(p + SBOFF(group), JOURNAL_GROUPNAME_LEN)) {
		why = "group name not terminated";
		goto fail;
	}
	copy_name(sb.group, p + SBOFF(group));
	for (size_t v = 0; v < JOURNAL_MAX_VOLUMES; v++) {
		const uint8_t *src = p + SBOFF(volumes) + v * JOURNAL_VOLNAME_LEN;

		if (!is_nul_terminated(src, JOURNAL_VOLNAME_LEN)) {
			why = "volume name not terminated";
			goto fail;
		}
		copy_name(sb.volumes[v], src);
	}
	for (size_t c = 0; c < JOURNAL_MAX_CONSUMERS; c++) {
		const uint8_t *src =
		    p + SBOFF(consumers) + c * sizeof(struct journal_consumer_wire);

		sb.consumers[c].id = le_get64(src + 0);
		sb.consumers[c].released_seq = le_get64(src + 8);
		sb.consumers[c].received_seq = le_get64(src + 16);
	}
	*ret = sb;
	return 0;
fail:
	if (ret_why)
		*ret_why = why;
	return err;
}

int
journal_sb_decode(const void *buf, size_t len, struct journal_sb *ret)
{
	return journal_sb_decode_why(buf, len, ret, NULL);
}

int
journal_sb_pick(const void *buf8192, struct journal_sb *ret, unsigned *ret_slot)
{
	const uint8_t *p = buf8192;
	struct journal_sb a, b;
	int ra = journal_sb_decode(p, JOURNAL_SB_SIZE, &a);
	int rb = journal_sb_decode(p + JOURNAL_SB_SIZE, JOURNAL_SB_SIZE, &b);

	if (ra < 0 && rb < 0)
		return ra == -EBADMSG || rb == -EBADMSG ? -EBADMSG : -EPROTO;
	/* Copies are written alternately with sb_gen + 1, so the higher gen is
	 * the newer; the other copy is the previous state, intact if the newer
	 * write was torn. A tie can only come from format (A wins there). */
	if (rb == 0 && (ra < 0 || b.sb_gen > a.sb_gen)) {
		*ret = b;
		if (ret_slot)
			*ret_slot = 1;
	} else {
		*ret = a;
		if (ret_slot)
			*ret_slot = 0;
	}
	return 0;
}
