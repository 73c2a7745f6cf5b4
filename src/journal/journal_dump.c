/*
 * `jrbd journal dump`: a read-only look at a stopped daemon's journal. It
 * prints both superblock copies' verdicts and the one recovery would use,
 * then every record recovery would find from the tail, with the same
 * scanner, and how the log ends.
 *
 * Plain pread through the page cache: the daemon is stopped, and the
 * scanner reads unaligned headers. JSON output is streamed record by record
 * so memory stays bounded whatever the journal's size.
 *
 * Not here: repairing anything. The dump never writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/util.h"
#include "journal/journal_internal.h"

/* ISO-8601 UTC with milliseconds. */
static const char *
format_time(uint64_t ns, char *buf, size_t len)
{
	time_t secs = (time_t)(ns / 1000000000u);
	unsigned ms = (unsigned)(ns % 1000000000u / 1000000u);
	struct tm tm;
	char tmp[32];

	if (!gmtime_r(&secs, &tm) || !strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm)) {
		snprintf(buf, len, "?");
		return buf;
	}
	snprintf(buf, len, "%s.%03uZ", tmp, ms);
	return buf;
}

static const char *
format_uuid(const uint8_t *u, char *buf, size_t len)
{
	snprintf(buf, len, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
	         u[13], u[14], u[15]);
	return buf;
}

static const char *
role_name(uint16_t role)
{
	switch (role) {
	case JOURNAL_ROLE_MASTER:
		return "master";
	case JOURNAL_ROLE_RESTORE:
		return "restore";
	default:
		return "unknown";
	}
}

static const char *
stop_name(enum journal_scan_stop stop)
{
	switch (stop) {
	case JOURNAL_SCAN_END:
		return "end";
	case JOURNAL_SCAN_TORN_HDR:
		return "torn-header";
	case JOURNAL_SCAN_TORN_PAYLOAD:
		return "torn-payload";
	case JOURNAL_SCAN_STALE:
		return "stale";
	case JOURNAL_SCAN_IO_ERROR:
		return "io-error";
	}
	return "unknown";
}

static const char *
volume_name(const struct journal_sb *sb, uint16_t vol)
{
	if (vol < sb->nvolumes && vol < JOURNAL_MAX_VOLUMES && sb->volumes[vol][0])
		return sb->volumes[vol];
	return NULL;
}

static json_t *
u64_json(uint64_t v)
{
	/* jansson integers are signed 64-bit; nothing we print gets near. */
	return json_integer((json_int_t)v);
}

static json_t *
sb_json(const struct journal_sb *sb, unsigned slot, const char *why_a, const char *why_b)
{
	json_t *o = json_object(), *vols = json_array(), *cons = json_array();
	char tbuf[40], ubuf[40];

	if (!o || !vols || !cons) {
		json_decref(o);
		json_decref(vols);
		json_decref(cons);
		return NULL;
	}
	json_object_set_new(o, "copy", json_string(slot ? "B" : "A"));
	json_object_set_new(o, "copy_a", json_string(why_a ? why_a : "ok"));
	json_object_set_new(o, "copy_b", json_string(why_b ? why_b : "ok"));
	json_object_set_new(o, "uuid", json_string(format_uuid(sb->uuid, ubuf, sizeof(ubuf))));
	json_object_set_new(o, "journal_size", u64_json(sb->journal_size));
	json_object_set_new(o, "area_start", u64_json(sb->area_start));
	json_object_set_new(o, "area_size", u64_json(sb->area_size));
	json_object_set_new(o, "align", u64_json(sb->align));
	json_object_set_new(o, "epoch", u64_json(sb->epoch));
	json_object_set_new(o, "sb_gen", u64_json(sb->sb_gen));
	json_object_set_new(o, "tail_lpos", u64_json(sb->tail_lpos));
	json_object_set_new(o, "tail_seq", u64_json(sb->tail_seq));
	json_object_set_new(o, "ckpt_lpos", u64_json(sb->ckpt_lpos));
	json_object_set_new(o, "ckpt_seq", u64_json(sb->ckpt_seq));
	json_object_set_new(o, "created",
	                    json_string(format_time(sb->created_ns, tbuf, sizeof(tbuf))));
	json_object_set_new(o, "updated",
	                    json_string(format_time(sb->updated_ns, tbuf, sizeof(tbuf))));
	json_object_set_new(o, "group", json_string(sb->group));
	json_object_set_new(o, "role", json_string(role_name(sb->role)));
	for (unsigned i = 0; i < sb->nvolumes; i++)
		json_array_append_new(vols, json_string(sb->volumes[i]));
	json_object_set_new(o, "volumes", vols);
	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		json_t *c;

		if (!sb->consumers[i].id)
			continue;
		c = json_object();
		if (!c)
			continue;
		json_object_set_new(c, "id", u64_json(sb->consumers[i].id));
		json_object_set_new(c, "released_seq", u64_json(sb->consumers[i].released_seq));
		json_object_set_new(c, "received_seq", u64_json(sb->consumers[i].received_seq));
		json_array_append_new(cons, c);
	}
	json_object_set_new(o, "consumers", cons);
	return o;
}

static void
sb_text(FILE *out, const struct journal_sb *sb, unsigned slot, const char *why_a, const char *why_b)
{
	char tbuf[40], ubuf[40];
	bool any = false;

	fprintf(out, "superblock: copy %s (sb_gen %" PRIu64 "); copy A: %s, copy B: %s\n",
	        slot ? "B" : "A", sb->sb_gen, why_a ? why_a : "ok", why_b ? why_b : "ok");
	fprintf(out, "  uuid        %s\n", format_uuid(sb->uuid, ubuf, sizeof(ubuf)));
	fprintf(out, "  size        %" PRIu64 " (area %" PRIu64 "+%" PRIu64 ", align %u)\n",
	        sb->journal_size, sb->area_start, sb->area_size, sb->align);
	fprintf(out, "  epoch       %u\n", sb->epoch);
	fprintf(out, "  tail        lpos %" PRIu64 " seq %" PRIu64 "\n", sb->tail_lpos,
	        sb->tail_seq);
	fprintf(out, "  checkpoint  lpos %" PRIu64 " seq %" PRIu64 "\n", sb->ckpt_lpos,
	        sb->ckpt_seq);
	fprintf(out, "  created     %s\n", format_time(sb->created_ns, tbuf, sizeof(tbuf)));
	fprintf(out, "  updated     %s\n", format_time(sb->updated_ns, tbuf, sizeof(tbuf)));
	fprintf(out, "  group       '%s' (%s)\n", sb->group, role_name(sb->role));
	for (unsigned i = 0; i < sb->nvolumes; i++)
		fprintf(out, "  volume %-4u '%s'\n", i, sb->volumes[i]);
	for (unsigned i = 0; i < JOURNAL_MAX_CONSUMERS; i++) {
		if (!sb->consumers[i].id)
			continue;
		any = true;
		fprintf(out,
		        "  consumer    id %" PRIu64 " released %" PRIu64 " received %" PRIu64 "\n",
		        sb->consumers[i].id, sb->consumers[i].released_seq,
		        sb->consumers[i].received_seq);
	}
	if (!any)
		fprintf(out, "  consumers   none\n");
}

static json_t *
rec_json(const struct journal_sb *sb, const struct journal_rec *rec, uint64_t lpos)
{
	json_t *o = json_object();
	const char *vname = volume_name(sb, rec->volume);
	char tbuf[40];

	if (!o)
		return NULL;
	json_object_set_new(o, "seq", u64_json(rec->seq));
	json_object_set_new(o, "lpos", u64_json(lpos));
	json_object_set_new(o, "kind", json_string(journal_rec_kind_name(rec->kind)));
	json_object_set_new(o, "volume", u64_json(rec->volume));
	if (vname)
		json_object_set_new(o, "volume_name", json_string(vname));
	json_object_set_new(o, "offset", u64_json(rec->offset));
	json_object_set_new(o, "length", u64_json(rec->length));
	json_object_set_new(o, "flags", u64_json(rec->flags));
	json_object_set_new(o, "epoch", u64_json(rec->epoch));
	json_object_set_new(o, "time",
	                    json_string(format_time(rec->timestamp_ns, tbuf, sizeof(tbuf))));
	json_object_set_new(o, "payload_len", u64_json(rec->payload_len));
	/* The scanner returns only records whose payload checksum matched. */
	json_object_set_new(o, "payload_csum", json_string("ok"));
	return o;
}

static void
rec_text(FILE *out, const struct journal_sb *sb, const struct journal_rec *rec, uint64_t lpos)
{
	const char *vname = volume_name(sb, rec->volume);
	char tbuf[40];

	fprintf(out,
	        "  seq %" PRIu64 " lpos %" PRIu64 " %s vol %u%s%s%s offset %" PRIu64
	        " length %" PRIu64 " epoch %u time %s csum ok\n",
	        rec->seq, lpos, journal_rec_kind_name(rec->kind), rec->volume, vname ? " '" : "",
	        vname ? vname : "", vname ? "'" : "", rec->offset, rec->length, rec->epoch,
	        format_time(rec->timestamp_ns, tbuf, sizeof(tbuf)));
}

static void
print_json(FILE *out, json_t *o)
{
	if (o)
		json_dumpf(o, out, JSON_COMPACT);
	else
		fputs("null", out);
	json_decref(o);
}

/* No usable superblock: say exactly why, for each copy. */
static void
print_error(FILE *out, bool json, const char *path, const char *msg)
{
	if (json) {
		json_t *o = json_object();

		if (o) {
			json_object_set_new(o, "error", json_string(msg));
			json_object_set_new(o, "path", json_string(path));
		}
		print_json(out, o);
		fputc('\n', out);
	} else {
		fprintf(out, "%s: %s\n", path, msg);
	}
}

int
journal_dump(const char *path, bool json, bool all_records, FILE *out)
{
	struct journal_file_reader fr = {.fd = -1};
	uint64_t fsize = 0, limit;
	const char *why_a = NULL, *why_b = NULL;
	struct journal_scan scan;
	struct journal_sb sb, a, b;
	uint8_t *sbbuf = NULL;
	uint64_t nrecs = 0, nshown = 0;
	unsigned slot = 0;
	char msg[256];
	int r;

	memset(&scan, 0, sizeof(scan));
	r = open(path, O_RDONLY | O_CLOEXEC);
	if (r < 0) {
		r = -errno;
		snprintf(msg, sizeof(msg), "cannot open: %s", strerrordesc_np(-r));
		print_error(out, json, path, msg);
		return r;
	}
	fr.fd = r;
	sbbuf = malloc((size_t)2 * JOURNAL_SB_SIZE);
	if (!sbbuf) {
		r = -ENOMEM;
		goto out;
	}
	r = util_pread_full(fr.fd, sbbuf, (size_t)2 * JOURNAL_SB_SIZE, 0);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot read the superblocks: %s", strerrordesc_np(-r));
		print_error(out, json, path, msg);
		goto out;
	}
	/* Each copy's verdict, for the report; pick decides which one counts. */
	journal_sb_decode_why(sbbuf, JOURNAL_SB_SIZE, &a, &why_a);
	journal_sb_decode_why(sbbuf + JOURNAL_SB_SIZE, JOURNAL_SB_SIZE, &b, &why_b);
	r = journal_sb_pick(sbbuf, &sb, &slot);
	if (r < 0) {
		snprintf(msg, sizeof(msg),
		         "no valid superblock: superblock A: %s; superblock B: %s", why_a, why_b);
		print_error(out, json, path, msg);
		goto out;
	}
	if (json) {
		fputs("{\"superblock\":", out);
		print_json(out, sb_json(&sb, slot, why_a, why_b));
		fputs(",\"records\":[", out);
	} else {
		sb_text(out, &sb, slot, why_a, why_b);
		fprintf(out, "records%s:\n", all_records ? "" : " (from the checkpoint)");
	}

	/* A truncated file reads as an I/O error where it ends, not before. */
	limit = sb.area_start + sb.area_size; /* decode checked it */
	if (util_fd_size(fr.fd, &fsize) == 0 && fsize < limit)
		limit = fsize;
	r = journal_file_reader_init(&fr, fr.fd, limit);
	if (r < 0)
		goto out;
	r = journal_scan_init(&scan, &sb, journal_file_read, &fr);
	if (r < 0)
		goto out;
	for (;;) {
		struct journal_rec rec;
		uint64_t lpos;

		r = journal_scan_next(&scan, &rec, NULL, &lpos);
		if (r <= 0)
			break;
		nrecs++;
		if (!all_records && rec.seq < sb.ckpt_seq)
			continue;
		if (json) {
			if (nshown)
				fputc(',', out);
			print_json(out, rec_json(&sb, &rec, lpos));
		} else {
			rec_text(out, &sb, &rec, lpos);
		}
		nshown++;
	}
	/* r < 0 is a read error: the scanner recorded it as its stop reason. */
	if (json) {
		json_t *end = json_object();

		if (end) {
			json_object_set_new(end, "reason", json_string(stop_name(scan.stop)));
			json_object_set_new(end, "lpos", u64_json(scan.stop_lpos));
			json_object_set_new(end, "bad_lpos", u64_json(scan.bad_lpos));
			json_object_set_new(end, "next_seq", u64_json(scan.next_seq));
			json_object_set_new(end, "records", u64_json(nrecs));
			json_object_set_new(end, "detail", json_string(scan.stop_detail));
		}
		fputs("],\"end\":", out);
		print_json(out, end);
		fputs("}\n", out);
	} else {
		const char *what =
		    scan.stop == JOURNAL_SCAN_TORN_HDR || scan.stop == JOURNAL_SCAN_TORN_PAYLOAD
		        ? "torn record"
		    : scan.stop == JOURNAL_SCAN_IO_ERROR ? "read error"
		                                         : "clean end";

		if (nrecs)
			fprintf(out, "%" PRIu64 " records, seq %" PRIu64 "..%" PRIu64 "\n", nrecs,
			        sb.tail_seq, scan.next_seq - 1);
		else
			fprintf(out, "no records\n");
		fprintf(out, "end: %s at lpos %" PRIu64 ": %s\n", what, scan.stop_lpos,
		        scan.stop_detail);
	}
	if (r < 0)
		goto out;
	r = scan.stop == JOURNAL_SCAN_TORN_HDR || scan.stop == JOURNAL_SCAN_TORN_PAYLOAD ? 1 : 0;
out:
	journal_scan_fini(&scan);
	journal_file_reader_fini(&fr);
	free(sbbuf);
	close(fr.fd);
	return r;
}
