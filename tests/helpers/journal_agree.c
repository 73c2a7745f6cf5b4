/*
 * Checks journal/data-volume agreement after recovery: replays every valid
 * record of a journal image (in sequence order, newest wins) into memory and
 * checks that each byte a record covers reads the same in the data volume.
 * Run it on a copy of the journal taken right after a crash and on the volumes
 * after the daemon restarted (and redid the journal).
 *
 *   journal_agree JOURNAL VOLUME_PATH... (volume i = id i)
 * Exit: 0 agree, 1 differ, 2 usage/IO error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "journal/journal.h"

struct vol {
	uint64_t size;
	uint8_t *data;
	uint8_t *covered; /* one byte per byte: simple, the test volumes are small */
};

static int
read_fn(void *arg, void *buf, size_t len, uint64_t offset)
{
	return util_pread_full(*(int *)arg, buf, len, offset);
}

int
main(int argc, char **argv)
{
	uint8_t sbbuf[8192];
	struct journal_sb sb;
	struct journal_scan scan;
	struct journal_rec rec;
	const void *payload;
	uint64_t lpos, records = 0, bytes_checked = 0, bad = 0;
	struct vol vols[JOURNAL_MAX_VOLUMES] = {0};
	unsigned nvols = (unsigned)argc - 2, slot;
	int jfd, r;

	if (argc < 3 || nvols > JOURNAL_MAX_VOLUMES) {
		fprintf(stderr, "usage: journal_agree JOURNAL VOLUME_PATH...\n");
		return 2;
	}
	jfd = open(argv[1], O_RDONLY);
	if (jfd < 0 || util_pread_full(jfd, sbbuf, sizeof(sbbuf), 0) < 0 ||
	    journal_sb_pick(sbbuf, &sb, &slot) < 0) {
		fprintf(stderr, "journal_agree: %s: no valid superblock\n", argv[1]);
		return 2;
	}
	for (unsigned i = 0; i < nvols; i++) {
		int fd = open(argv[2 + i], O_RDONLY);

		if (fd < 0 || util_fd_size(fd, &vols[i].size) < 0) {
			fprintf(stderr, "journal_agree: %s: %s\n", argv[2 + i], strerror(errno));
			return 2;
		}
		close(fd);
		vols[i].data = calloc(1, vols[i].size);
		vols[i].covered = calloc(1, vols[i].size);
		if (!vols[i].data || !vols[i].covered)
			return 2;
	}
	if (journal_scan_init(&scan, &sb, read_fn, &jfd) < 0)
		return 2;
	while ((r = journal_scan_next(&scan, &rec, &payload, &lpos)) == 1) {
		struct vol *v;

		records++;
		if (rec.kind == JOURNAL_REC_MARKER)
			continue;
		if (rec.volume >= nvols) {
			fprintf(stderr, "journal_agree: seq %" PRIu64 ": volume %u not given\n",
				rec.seq, rec.volume);
			return 2;
		}
		v = &vols[rec.volume];
		if (rec.offset + rec.length > v->size) {
			fprintf(stderr, "journal_agree: seq %" PRIu64 " beyond the volume\n", rec.seq);
			return 1;
		}
		if (rec.kind == JOURNAL_REC_WRITE || rec.kind == JOURNAL_REC_BASE)
			memcpy(v->data + rec.offset, payload, rec.length);
		else
			memset(v->data + rec.offset, 0, rec.length);
		memset(v->covered + rec.offset, 1, rec.length);
	}
	journal_scan_fini(&scan);
	if (r < 0) {
		fprintf(stderr, "journal_agree: scan: %s\n", strerror(-r));
		return 2;
	}
	for (unsigned i = 0; i < nvols; i++) {
		uint8_t *disk = malloc(vols[i].size);
		int fd = open(argv[2 + i], O_RDONLY);

		if (!disk || fd < 0 || util_pread_full(fd, disk, vols[i].size, 0) < 0)
			return 2;
		close(fd);
		for (uint64_t off = 0; off < vols[i].size; off++) {
			if (!vols[i].covered[off])
				continue;
			bytes_checked++;
			if (disk[off] != vols[i].data[off] && bad++ < 5)
				fprintf(stderr, "journal_agree: volume %u byte %" PRIu64
					" is 0x%02x, journal says 0x%02x\n",
					i, off, disk[off], vols[i].data[off]);
		}
		free(disk);
		free(vols[i].data);
		free(vols[i].covered);
	}
	printf("journal_agree: %" PRIu64 " records, %" PRIu64 " bytes checked, %" PRIu64
	       " differ\n",
	       records, bytes_checked, bad);
	return bad ? 1 : 0;
}
