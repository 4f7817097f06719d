/*
 * The offline checker behind `tandem-check`: recover exactly as open does
 * (without writing), then cross-check everything that recovery trusts.
 *
 *   superblocks   both copies valid (one bad copy is an error: nothing in
 *                 normal operation damages one)
 *   checkpoints   the newest is valid; the stored segment live counts
 *                 agree with its own map
 *   log           every record in every used segment parses; every payload
 *                 that a map entry points at has the CRC the map says, and
 *                 its record names that block
 *   map           no two blocks share a physical slot, none points into a
 *                 free segment
 *
 * A torn record at the end of the log, or an older checkpoint area that is
 * torn, is what a crash leaves and only a warning.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lsfs_int.h"

struct ck_state {
	struct lsfs_recovery *rec;
	struct tnd_lsfs_check_result *res;
	FILE *out;
	uint8_t *verified;             /* per data pba: the map entry was confirmed */
	uint64_t first_pba;
};

static void problem(struct ck_state *s, bool error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void problem(struct ck_state *s, bool error, const char *fmt, ...)
{
	if (error)
		s->res->errors++;
	else
		s->res->warnings++;
	if (!s->out)
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs(error ? "ERROR: " : "warning: ", s->out);
	vfprintf(s->out, fmt, ap);
	va_end(ap);
	fputc('\n', s->out);
}

/* Walk one used segment's records; confirm the map entries that point here. */
static void check_segment(struct ck_state *s, uint32_t seg, uint8_t *buf)
{
	struct lsfs_recovery *rec = s->rec;
	const struct lsfs_sb *sb = &rec->sb;
	uint64_t base = lsfs_seg_base_pba(sb, seg);
	uint64_t seg_seq = rec->segs[seg].seq;
	uint32_t off = 0;
	uint64_t expect = 0;
	while (off + LSFS_BLK <= sb->seg_size) {
		const uint8_t *hdr = buf + off;
		struct lsfs_rec rh;
		if (lsfs_rec_decode(hdr, sb->uuid, &rh) < 0 || rh.seg_seq != seg_seq ||
		    (off && rh.rec_seq != expect) ||
		    off + (uint64_t)(1 + rh.npayload) * LSFS_BLK > sb->seg_size)
			break;
		s->res->records++;
		uint32_t pay = 0;
		for (uint32_t i = 0; i < rh.ndesc; i++) {
			struct lsfs_desc d;
			lsfs_desc_decode(hdr, i, &d);
			if (!d.stored_len)
				continue;
			uint64_t pba = base + off / LSFS_BLK + 1 + pay++;
			const uint8_t *p = buf + (pba - base) * LSFS_BLK;
			bool crc_ok = tnd_crc32c(0, p, d.stored_len) == d.crc;
			const struct lsfs_ment *m = (d.flags & LSFS_DESC_KIND_MASK) == LSFS_DESC_DATA
				? lsfs_map_get(&rec->map, d.lba) : NULL;
			bool live = m && lsfs_ment_pba(m) == pba;
			if (!live) {
				if (!crc_ok)
					problem(s, false, "segment %u record %llu: dead block %llu fails its CRC",
						seg, (unsigned long long)rh.rec_seq, (unsigned long long)d.lba);
				continue;
			}
			if (!crc_ok || m->crc != d.crc) {
				problem(s, true, "block %llu (segment %u, pba %llu): payload CRC mismatch",
					(unsigned long long)d.lba, seg, (unsigned long long)pba);
				continue;
			}
			s->verified[pba - s->first_pba] = 1;
		}
		expect = rh.rec_seq + 1;
		off += (1 + rh.npayload) * LSFS_BLK;
	}
}

static int check_on(struct tnd_volume *backing, struct tnd_reactor *r, FILE *report,
		    struct tnd_lsfs_check_result *res);

int tnd_lsfs_check(struct tnd_volume *backing, FILE *report, struct tnd_lsfs_check_result *res)
{
	struct tnd_reactor *r;
	int ret = tnd_reactor_create(0, 64, &r);
	if (ret < 0)
		return ret;
	ret = check_on(backing, r, report, res);
	tnd_reactor_destroy(r);
	return ret;
}

static int check_on(struct tnd_volume *backing, struct tnd_reactor *r, FILE *report,
		    struct tnd_lsfs_check_result *res)
{
	memset(res, 0, sizeof(*res));
	struct lsfs_recovery rec = { .report = report };
	struct ck_state s = { .rec = &rec, .res = res, .out = report };
	int ret = lsfs_recover(backing, r, &rec);
	res->warnings += rec.warnings;
	if (ret == -ENODATA || ret == -EUCLEAN || ret == -EPROTONOSUPPORT) {
		problem(&s, true, "cannot recover the store: %s", strerror(-ret));
		ret = 0;
		goto out_free_rec;
	}
	if (ret < 0)
		goto out_free_rec;
	const struct lsfs_sb *sb = &rec.sb;
	res->replayed_records = rec.replayed;
	res->reused_segments = rec.reused;
	res->mapped_blocks = rec.map.mapped;
	for (int i = 0; i < 2; i++)
		if (rec.sb_valid[i])
			problem(&s, true, "superblock copy %d is damaged", i);
	if (rec.sb_differ)
		problem(&s, true, "the two superblock copies differ");
	for (int i = 0; i < 2; i++)
		if (rec.ck_valid[i] && i != rec.ck_area)
			problem(&s, false, "checkpoint area %d holds no valid checkpoint (torn or unused)", i);
	for (uint32_t i = 0; i < sb->seg_count; i++)
		if (rec.ck_live[i] != rec.ck_map_live[i])
			problem(&s, true, "checkpoint: segment %u usage %u, its map says %u",
				i, rec.ck_live[i], rec.ck_map_live[i]);

	uint64_t nslots = (uint64_t)sb->seg_count * (sb->seg_size / LSFS_BLK);
	s.first_pba = lsfs_seg_base_pba(sb, 0);
	s.verified = calloc(nslots, 1);
	uint8_t *seen = calloc(nslots, 1);
	uint8_t *buf = lsfs_alloc_blocks(sb->seg_size);
	if (!s.verified || !seen || !buf) {
		ret = -ENOMEM;
		goto out_free_bufs;
	}
	for (uint64_t c = 0; lsfs_map_next(&rec.map, &c); c++) {
		uint64_t pba = lsfs_ment_pba(lsfs_map_get(&rec.map, c));
		uint64_t slot = pba - s.first_pba;
		uint32_t seg = (uint32_t)(slot / (sb->seg_size / LSFS_BLK));
		if (seen[slot]++)
			problem(&s, true, "pba %llu is mapped by more than one block (again by %llu)",
				(unsigned long long)pba, (unsigned long long)c);
		if (rec.segs[seg].state != LSFS_SEG_USED && !rec.segs[seg].in_chain)
			problem(&s, true, "block %llu maps into free segment %u", (unsigned long long)c, seg);
	}
	for (uint32_t i = 0; i < sb->seg_count; i++) {
		if (rec.segs[i].state != LSFS_SEG_USED && !rec.segs[i].in_chain)
			continue;
		ret = lsfs_sync_io(backing, r, TND_IO_READ, sb->seg_off + (uint64_t)i * sb->seg_size,
				   buf, sb->seg_size);
		if (ret < 0)
			goto out_free_bufs;
		check_segment(&s, i, buf);
	}
	for (uint64_t c = 0; lsfs_map_next(&rec.map, &c); c++) {
		uint64_t pba = lsfs_ment_pba(lsfs_map_get(&rec.map, c));
		if (!s.verified[pba - s.first_pba])
			problem(&s, true, "block %llu -> pba %llu: no intact record holds it",
				(unsigned long long)c, (unsigned long long)pba);
	}
	if (report) {
		uint32_t used = 0;
		for (uint32_t i = 0; i < sb->seg_count; i++)
			used += rec.segs[i].state == LSFS_SEG_USED || rec.segs[i].in_chain;
		fprintf(report, "segments: %u used, %u free; map: %llu blocks = %llu KiB of data\n",
			used, sb->seg_count - used, (unsigned long long)rec.map.mapped,
			(unsigned long long)rec.map.mapped * 4);
	}
	if (report)
		fprintf(report, "%s: %llu segments, %llu records, %llu blocks mapped, %llu replayed "
			"(%llu in reused segments); %llu errors, %llu warnings\n",
			res->errors ? "NOT CLEAN" : "clean", (unsigned long long)sb->seg_count,
			(unsigned long long)res->records, (unsigned long long)res->mapped_blocks,
			(unsigned long long)res->replayed_records, (unsigned long long)res->reused_segments,
			(unsigned long long)res->errors,
			(unsigned long long)res->warnings);
	ret = 0;
out_free_bufs:
	free(buf);
	free(seen);
	free(s.verified);
out_free_rec:
	lsfs_recovery_free(&rec);
	return ret;
}
