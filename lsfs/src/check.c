/*
 * The offline checker behind `tandem-check`: recover exactly as open does
 * (without writing), then cross-check everything that recovery trusts.
 *
 *   superblocks   both copies valid and equal (a torn or older copy is a
 *                 warning: an interrupted superblock update leaves one,
 *                 and open repairs it)
 *   checkpoints   the newest is valid; the stored segment live counts
 *                 agree with its own map
 *   log           every record in every used segment parses; every payload
 *                 that a map entry points at has the CRC the map says, and
 *                 its record names that block; a segment's records are all
 *                 GC records (a GC-only segment: DATA descriptors only) or
 *                 none is
 *   map           no two blocks share a payload (unless the store has the
 *                 DEDUP feature; then all sharers agree on its CRC and
 *                 layout, and no payload has more than LSFS_REF_MAX of
 *                 them: the reference counts are the map's), none points
 *                 into a free segment; every LZ4 payload decompresses to
 *                 one block
 *
 * A torn record at the end of the log, or an older checkpoint area that is
 * torn, is what a crash leaves and only a warning.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lsfs_int.h"
#include "tnd_compress.h"

/* One map entry by payload address: the map sorted by where it points. */
struct ck_ref {
	uint64_t loc;                  /* lsfs_ment_loc */
	uint64_t chunk;
};

struct ck_state {
	struct lsfs_recovery *rec;
	struct tnd_lsfs_check_result *res;
	FILE *out;
	struct ck_ref *refs;           /* every mapped chunk, sorted by (loc, chunk) */
	uint64_t nrefs;
	uint8_t *verified;             /* per refs[]: an intact record holds its payload */
	uint8_t *scratch;              /* 4 KiB: decompression target */
};

static int ref_cmp(const void *a, const void *b)
{
	const struct ck_ref *x = a, *y = b;
	if (x->loc != y->loc)
		return x->loc < y->loc ? -1 : 1;
	return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

/* Index of the first reference to @loc, or nrefs. */
static uint64_t ref_find(const struct ck_state *s, uint64_t loc)
{
	uint64_t lo = 0, hi = s->nrefs;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (s->refs[mid].loc < loc)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->nrefs && s->refs[lo].loc == loc ? lo : s->nrefs;
}

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
	uint32_t nrec = 0, ngc = 0;
	while (off + LSFS_BLK <= sb->seg_size) {
		const uint8_t *hdr = buf + off;
		struct lsfs_rec rh;
		if (lsfs_rec_decode(hdr, sb->uuid, &rh) < 0 || rh.seg_seq != seg_seq ||
		    (off && rh.rec_seq != expect) ||
		    off + (uint64_t)(1 + rh.npayload) * LSFS_BLK > sb->seg_size)
			break;
		s->res->records++;
		nrec++;
		bool gc = rh.flags & LSFS_REC_F_GC;
		ngc += gc;
		uint32_t sec = 0;
		for (uint32_t i = 0; i < rh.ndesc; i++) {
			struct lsfs_desc d;
			lsfs_desc_decode(hdr, i, &d);
			/* GC only moves blocks: a GC record holds DATA descriptors. */
			if (gc && (d.flags & LSFS_DESC_KIND_MASK) != LSFS_DESC_DATA)
				problem(s, true, "segment %u record %llu: a GC record holds a %s descriptor",
					seg, (unsigned long long)rh.rec_seq,
					(d.flags & LSFS_DESC_KIND_MASK) == LSFS_DESC_TRIM ? "TRIM" : "SIZE");
			if ((d.flags & LSFS_DESC_F_DEFERRED) && !(sb->incompat & LSFS_INCOMPAT_DEFERRED))
				problem(s, true, "segment %u record %llu: block %llu is marked deferred in a "
					"store without the DEFERRED feature", seg,
					(unsigned long long)rh.rec_seq, (unsigned long long)d.lba);
			if (!lsfs_desc_payload(&d))
				continue;
			uint32_t pos = off + LSFS_BLK + sec * LSFS_SECTOR;
			sec += lsfs_len_sectors(d.stored_len);
			uint64_t pba = base + pos / LSFS_BLK;
			uint64_t loc = pba << 3 | (pos % LSFS_BLK) / LSFS_SECTOR;
			const uint8_t *p = buf + pos;
			bool crc_ok = tnd_crc32c(0, p, d.stored_len) == d.crc;
			/* Live when some chunk maps this payload: the one the
			 * record names, or (dedup) any other. */
			uint64_t ri = (d.flags & LSFS_DESC_KIND_MASK) == LSFS_DESC_DATA
				? ref_find(s, loc) : s->nrefs;
			const struct lsfs_ment *m = ri < s->nrefs
				? lsfs_map_get(&rec->map, s->refs[ri].chunk) : NULL;
			if (!m) {
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
			if (lsfs_aux_len(m->aux) != d.stored_len ||
			    lsfs_aux_lz4(m->aux) != !!(d.flags & LSFS_DESC_F_LZ4) ||
			    lsfs_aux_deferred(m->aux) != !!(d.flags & LSFS_DESC_F_DEFERRED)) {
				problem(s, true, "block %llu (segment %u, pba %llu): map and record disagree "
					"on its length, compression or deferred mark", (unsigned long long)d.lba, seg,
					(unsigned long long)pba);
				continue;
			}
			if (lsfs_aux_lz4(m->aux) &&
			    tnd_decompress(p, d.stored_len, s->scratch, LSFS_BLK) < 0) {
				problem(s, true, "block %llu (segment %u, pba %llu): LZ4 payload does not "
					"decompress to one block", (unsigned long long)d.lba, seg,
					(unsigned long long)pba);
				continue;
			}
			s->verified[ri] = 1;
		}
		expect = rh.rec_seq + 1;
		off += (1 + rh.npayload) * LSFS_BLK;
	}
	/* Hot/cold separation: a segment is GC-only or holds no GC record. */
	if (ngc && ngc != nrec)
		problem(s, true, "segment %u mixes %u GC records with %u client records", seg, ngc, nrec - ngc);
	else if (ngc)
		s->res->gc_segments++;
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
	res->gc_replayed_records = rec.gc_replayed;
	res->mapped_blocks = rec.map.mapped;
	/* The copies are rewritten one at a time (when a feature bit is set),
	 * so a crash can leave one torn or older; open rewrites both. */
	for (int i = 0; i < 2; i++)
		if (rec.sb_valid[i])
			problem(&s, false, "superblock copy %d is damaged or torn (the next open rewrites it)", i);
	if (rec.sb_differ)
		problem(&s, false, "the two superblock copies differ (an interrupted update; the next "
			"open rewrites the older)");
	for (int i = 0; i < 2; i++)
		if (rec.ck_valid[i] && i != rec.ck_area)
			problem(&s, false, "checkpoint area %d holds no valid checkpoint (torn or unused)", i);
	for (uint32_t i = 0; i < sb->seg_count; i++)
		if (rec.ck_live[i] != rec.ck_map_live[i])
			problem(&s, true, "checkpoint: segment %u usage %u, its map says %u",
				i, rec.ck_live[i], rec.ck_map_live[i]);

	/* The map by payload address: shares show up as neighbours. */
	s.nrefs = rec.map.mapped;
	s.refs = malloc((s.nrefs ? s.nrefs : 1) * sizeof(*s.refs));
	s.verified = calloc(s.nrefs ? s.nrefs : 1, 1);
	s.scratch = lsfs_alloc_blocks(LSFS_BLK);
	uint8_t *buf = lsfs_alloc_blocks(sb->seg_size);
	if (!s.refs || !s.verified || !buf || !s.scratch) {
		ret = -ENOMEM;
		goto out_free_bufs;
	}
	uint64_t n = 0;
	for (uint64_t c = 0; lsfs_map_next(&rec.map, &c) && n < s.nrefs; c++)
		s.refs[n++] = (struct ck_ref){ .loc = lsfs_ment_loc(lsfs_map_get(&rec.map, c)), .chunk = c };
	qsort(s.refs, n, sizeof(*s.refs), ref_cmp);
	uint64_t phys_sec = 0, shared = 0, extra = 0;
	for (uint64_t i = 0; i < n; i++) {
		const struct lsfs_ment *e = lsfs_map_get(&rec.map, s.refs[i].chunk);
		uint64_t pba = lsfs_ment_pba(e);
		res->deferred_blocks += lsfs_aux_deferred(e->aux);
		uint32_t seg = (uint32_t)((pba - lsfs_seg_base_pba(sb, 0)) / (sb->seg_size / LSFS_BLK));
		if (rec.segs[seg].state != LSFS_SEG_USED && !rec.segs[seg].in_chain)
			problem(&s, true, "block %llu maps into free segment %u",
				(unsigned long long)s.refs[i].chunk, seg);
		if (i == 0 || s.refs[i - 1].loc != s.refs[i].loc) {
			phys_sec += lsfs_len_sectors(lsfs_aux_len(e->aux));
			uint64_t k = i + 1;
			while (k < n && s.refs[k].loc == s.refs[i].loc)
				k++;
			if (k - i > 1) {
				shared++;
				extra += k - i - 1;
			}
			if (k - i > 1 && !(sb->incompat & LSFS_INCOMPAT_DEDUP))
				problem(&s, true, "pba %llu is mapped by more than one block (again by %llu)",
					(unsigned long long)pba, (unsigned long long)s.refs[i + 1].chunk);
			if (k - i > LSFS_REF_MAX)
				problem(&s, true, "pba %llu is shared by %llu blocks, more than %u",
					(unsigned long long)pba, (unsigned long long)(k - i), LSFS_REF_MAX);
			continue;
		}
		/* Every sharer must agree with the first on what is stored. */
		const struct lsfs_ment *f = lsfs_map_get(&rec.map, s.refs[i - 1].chunk);
		if (f->crc != e->crc || f->aux != e->aux)
			problem(&s, true, "blocks %llu and %llu share pba %llu but disagree on its "
				"CRC or layout", (unsigned long long)s.refs[i - 1].chunk,
				(unsigned long long)s.refs[i].chunk, (unsigned long long)pba);
	}
	res->shared_blocks = shared;
	for (uint32_t i = 0; i < sb->seg_count; i++) {
		if (rec.segs[i].state != LSFS_SEG_USED && !rec.segs[i].in_chain)
			continue;
		ret = lsfs_sync_io(backing, r, TND_IO_READ, sb->seg_off + (uint64_t)i * sb->seg_size,
				   buf, sb->seg_size);
		if (ret < 0)
			goto out_free_bufs;
		check_segment(&s, i, buf);
	}
	for (uint64_t i = 0; i < n; i++) {
		if (i > 0 && s.refs[i - 1].loc == s.refs[i].loc)
			continue;
		if (!s.verified[i])
			problem(&s, true, "block %llu -> pba %llu: no intact record holds it",
				(unsigned long long)s.refs[i].chunk,
				(unsigned long long)(s.refs[i].loc >> 3));
	}
	if (report && shared)
		fprintf(report, "dedup: %llu payloads shared by %llu more blocks\n",
			(unsigned long long)shared, (unsigned long long)extra);
	if (report) {
		uint32_t used = 0;
		for (uint32_t i = 0; i < sb->seg_count; i++)
			used += rec.segs[i].state == LSFS_SEG_USED || rec.segs[i].in_chain;
		fprintf(report, "segments: %u used, %u free; map: %llu blocks = %llu KiB of data "
			"stored in %llu KiB%s\n",
			used, sb->seg_count - used, (unsigned long long)rec.map.mapped,
			(unsigned long long)rec.map.mapped * 4, (unsigned long long)phys_sec / 2,
			sb->incompat & LSFS_INCOMPAT_PACKED ? " (packed, LZ4)" : "");
	}
	if (report && res->deferred_blocks)
		fprintf(report, "deferred: %llu mapped blocks stored raw, awaiting compression\n",
			(unsigned long long)res->deferred_blocks);
	if (report && res->gc_segments)
		fprintf(report, "gc: %llu GC-only segments (blocks moved by GC, no client write); "
			"%llu of their records replayed\n", (unsigned long long)res->gc_segments,
			(unsigned long long)res->gc_replayed_records);
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
	free(s.refs);
	free(s.verified);
	free(s.scratch);
out_free_rec:
	lsfs_recovery_free(&rec);
	return ret;
}
