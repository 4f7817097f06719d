/*
 * Format, open and recovery, all synchronous: they run at start-up (or in
 * the offline checker) and submit to the backing volume, then poll the
 * given reactor until the I/O is done.
 *
 * Recovery = the newest valid checkpoint + replay of the log written after
 * it. The log is a chain: the checkpoint names the segment, offset and
 * record sequence number where replay starts; each record must carry
 * exactly the next sequence number and its segment's seg_seq, and must be
 * whole (header CRC and every payload CRC). The first record that is not
 * ends the segment's part of the chain; the chain goes on in the segment
 * whose first record names this one as its predecessor (prev_seg_seq) and
 * carries the next sequence number. Each record also names the segment
 * reserved to follow (a hint, checked like any other candidate); without a
 * hint every segment is a candidate that was free at checkpoint time, or
 * used then but holds no mapped block any more in the log replayed so far
 * (the writer reuses such a segment once the records that emptied it are
 * durable, without waiting for a checkpoint; see lsfs.c).
 * So the replayed state is always a prefix of the log, and nothing after a
 * torn, dropped or stale record is ever applied.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "lsfs_int.h"

struct sync_wait {
	bool done;
	int status;
};

static void sync_cb(struct tnd_io *io, int status)
{
	struct sync_wait *w = io->cb_arg;
	w->status = status;
	w->done = true;
}

int lsfs_sync_io(struct tnd_volume *v, struct tnd_reactor *r, enum tnd_io_type type,
		 uint64_t off, void *buf, size_t len)
{
	struct tnd_volume_info info;
	tnd_volume_info(v, &info);
	struct tnd_io *io = calloc(1, tnd_volume_io_size(v));
	if (!io)
		return -ENOMEM;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct sync_wait w = { 0 };
	io->type = type;
	io->lba = off / info.block_size;
	io->nblocks = (uint32_t)(len / info.block_size);
	io->iov = buf ? &iov : NULL;
	io->iovcnt = buf ? 1 : 0;
	io->reactor = r;
	io->cb = sync_cb;
	io->cb_arg = &w;
	int ret = tnd_volume_submit(v, io);
	if (ret < 0) {
		free(io);
		return ret;
	}
	while (!w.done) {
		int n = tnd_reactor_poll(r, -1);
		if (n < 0 && n != -EINTR) {
			/* The ring is broken; the io can never complete. */
			tnd_err(LSFS_TAG, "reactor failed during synchronous I/O: %s", strerror(-n));
			abort();
		}
	}
	free(io);
	return w.status;
}

void tnd_lsfs_opts_default(struct tnd_lsfs_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->block_size = 4096;
	o->segment_size = 4u << 20;
	o->write_cache = true;
	o->gc_interval_ms = 100;
	o->ckpt_segments = 8;
	o->ckpt_ratio = 64;
	o->gc_free_low = 0;       /* 0: 1% of the segments, 4..64 */
	o->batch_linger_us = 200;
	o->offload_min_bytes = 64u << 10;
	o->compact_idle_ms = 100;
	o->log_writes = 1;
	o->dedup_warmup_mbps = TND_LSFS_WARMUP_MBPS_DEFAULT;
}

/*
 * Without packing, a checkpoint never holds more map entries than there
 * are data slots. With compression a slot can hold up to eight chunks, so
 * a store formatted for it gets room for as many entries as the logical
 * size has chunks, up to eight per slot (about 0.6 % of the store per
 * area and per factor). Whatever the area holds is the limit on mapped
 * chunks the volume enforces (see map_room in lsfs.c).
 */
static uint64_t layout_seg_off(uint32_t seg_count, uint32_t seg_size, uint64_t nchunks, bool packed,
			       uint64_t *ckpt_size)
{
	uint64_t slots = (uint64_t)seg_count * (seg_size / LSFS_BLK - 1);
	uint64_t entries = slots;
	if (packed)
		entries = TND_MAX(slots, TND_MIN(nchunks, 8 * slots));   /* compression and/or dedup */
	*ckpt_size = lsfs_ckpt_area_size_for(seg_count, entries);
	return 2 * LSFS_BLK + 2 * *ckpt_size;
}

/* Serialise an empty checkpoint: every segment free, nothing mapped. */
static int write_empty_ckpt(struct tnd_volume *b, struct tnd_reactor *r, const struct lsfs_sb *sb)
{
	uint64_t body_len = (uint64_t)sb->seg_count * LSFS_CKPT_SEG_ENT;
	uint8_t *buf = lsfs_alloc_blocks(LSFS_BLK + body_len);
	if (!buf)
		return -ENOMEM;
	struct lsfs_ckpt c = {
		.ckpt_seq = 1,
		.num_blocks = sb->num_blocks,
		.next_rec_seq = 1,
		.replay_seg = LSFS_NONE32,
		.replay_seg_seq = 0,
		.max_seg_seq = 0,
		.seg_count = sb->seg_count,
		.nmapped = 0,
		.body_len = body_len,
		.next_seg = LSFS_NONE32,
	};
	memcpy(c.uuid, sb->uuid, 16);
	c.body_crc = tnd_crc32c(0, buf + LSFS_BLK, body_len);
	lsfs_ckpt_encode_head(&c, buf);
	size_t len = (LSFS_BLK + body_len + LSFS_BLK - 1) & ~(size_t)(LSFS_BLK - 1);
	/* Checkpoint 1 goes where odd numbers go (area B), so that the first
	 * real one, number 2, lands in area A and a tear leaves this one. */
	int ret = lsfs_sync_io(b, r, TND_IO_WRITE, sb->ckpt_off + sb->ckpt_size, buf, len);
	if (ret == 0) {
		/* Area A must not hold a checkpoint of an earlier format. */
		memset(buf, 0, LSFS_BLK);
		ret = lsfs_sync_io(b, r, TND_IO_WRITE, sb->ckpt_off, buf, LSFS_BLK);
	}
	free(buf);
	return ret;
}

static int format_on(struct tnd_volume *backing, struct tnd_reactor *r,
		     const struct tnd_lsfs_opts *opts)
{
	struct tnd_volume_info info;
	tnd_volume_info(backing, &info);
	if (info.block_size == 0 || LSFS_BLK % info.block_size)
		return -EINVAL;
	uint32_t lbs = opts->block_size ? opts->block_size : 4096;
	uint32_t seg_size = opts->segment_size ? opts->segment_size : 4u << 20;
	if ((lbs != 512 && lbs != 4096) || seg_size % LSFS_BLK || seg_size < 8 * LSFS_BLK ||
	    seg_size > (1u << 30) || opts->size == 0 || opts->size % lbs || opts->size > LSFS_MAX_BYTES)
		return -EINVAL;
	uint64_t total = info.num_blocks * info.block_size;

	uint32_t seg_count = (uint32_t)TND_MIN(total / seg_size, (uint64_t)UINT32_MAX - 1);
	uint64_t ckpt_size = 0, seg_off = 0;
	while (seg_count >= LSFS_MIN_SEGMENTS) {
		seg_off = layout_seg_off(seg_count, seg_size, opts->size / LSFS_BLK,
					 opts->compress || opts->dedup, &ckpt_size);
		if (seg_off + (uint64_t)seg_count * seg_size <= total)
			break;
		seg_count--;
	}
	if (seg_count < LSFS_MIN_SEGMENTS) {
		tnd_err(LSFS_TAG, "backing store of %llu bytes is too small for %u segments of %u bytes",
			(unsigned long long)total, LSFS_MIN_SEGMENTS, seg_size);
		return -EINVAL;
	}

	struct lsfs_sb sb = {
		.major = TND_LSFS_FORMAT_MAJOR,
		.minor = TND_LSFS_FORMAT_MINOR,
		.block_size = lbs,
		.seg_size = seg_size,
		.num_blocks = opts->size / lbs,
		.ckpt_off = 2 * LSFS_BLK,
		.ckpt_size = ckpt_size,
		.seg_off = seg_off,
		.seg_count = seg_count,
		.sb_seq = 1,
		.incompat = (opts->compress || opts->dedup ? LSFS_INCOMPAT_PACKED : 0) |
			    (opts->dedup ? LSFS_INCOMPAT_DEDUP : 0),
	};
	if (getrandom(sb.uuid, sizeof(sb.uuid), 0) != sizeof(sb.uuid))
		return -EIO;
	sb.uuid[6] = (uint8_t)((sb.uuid[6] & 0x0f) | 0x40);  /* RFC 4122 version 4 */
	sb.uuid[8] = (uint8_t)((sb.uuid[8] & 0x3f) | 0x80);

	/* Checkpoint first, superblocks last: until both superblocks are
	 * written and flushed the store is not an lsfs and open refuses it. */
	int ret = write_empty_ckpt(backing, r, &sb);
	if (ret == 0)
		ret = lsfs_sync_io(backing, r, TND_IO_FLUSH, 0, NULL, 0);
	if (ret < 0)
		return ret;
	uint8_t *blk = lsfs_alloc_blocks(2 * LSFS_BLK);
	if (!blk)
		return -ENOMEM;
	lsfs_sb_encode(&sb, blk);
	memcpy(blk + LSFS_BLK, blk, LSFS_BLK);
	ret = lsfs_sync_io(backing, r, TND_IO_WRITE, 0, blk, 2 * LSFS_BLK);
	if (ret == 0)
		ret = lsfs_sync_io(backing, r, TND_IO_FLUSH, 0, NULL, 0);
	free(blk);
	return ret;
}

/*
 * Rewrite both superblock copies from @sb with the next sb_seq, one copy
 * at a time with a flush after each: a tear leaves one valid copy, old or
 * new, and the larger sb_seq wins.
 */
int lsfs_sb_write(struct tnd_volume *backing, struct tnd_reactor *r, struct lsfs_sb *sb)
{
	uint8_t *blk = lsfs_alloc_blocks(LSFS_BLK);
	if (!blk)
		return -ENOMEM;
	sb->sb_seq++;
	lsfs_sb_encode(sb, blk);
	int ret = 0;
	for (int i = 0; i < 2 && ret == 0; i++) {
		ret = lsfs_sync_io(backing, r, TND_IO_WRITE, (uint64_t)i * LSFS_BLK, blk, LSFS_BLK);
		if (ret == 0)
			ret = lsfs_sync_io(backing, r, TND_IO_FLUSH, 0, NULL, 0);
	}
	free(blk);
	return ret;
}

int tnd_lsfs_format(struct tnd_volume *backing, const struct tnd_lsfs_opts *opts)
{
	struct tnd_reactor *r;
	int ret = tnd_reactor_create(0, 64, &r);
	if (ret < 0)
		return ret;
	ret = format_on(backing, r, opts);
	tnd_reactor_destroy(r);
	return ret;
}

/* ---- recovery ---- */

static void say(struct lsfs_recovery *rec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct lsfs_recovery *rec, const char *fmt, ...)
{
	if (!rec->report)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(rec->report, fmt, ap);
	va_end(ap);
	fputc('\n', rec->report);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int read_superblock(struct tnd_volume *b, struct tnd_reactor *r, struct lsfs_recovery *rec)
{
	uint8_t *blk = lsfs_alloc_blocks(2 * LSFS_BLK);
	if (!blk)
		return -ENOMEM;
	int ret = lsfs_sync_io(b, r, TND_IO_READ, 0, blk, 2 * LSFS_BLK);
	if (ret < 0)
		goto out_free;
	struct lsfs_sb sb[2];
	int best = -1;
	for (int i = 0; i < 2; i++) {
		rec->sb_valid[i] = lsfs_sb_decode(blk + i * LSFS_BLK, &sb[i]);
		if (rec->sb_valid[i] == -EPROTONOSUPPORT) {
			tnd_err(LSFS_TAG, "superblock copy %d: format %u (features %#llx) is newer than "
				"this build supports (format %u); refusing to open or repair it",
				i, sb[i].major, (unsigned long long)sb[i].incompat, TND_LSFS_FORMAT_MAJOR);
			say(rec, "superblock %d: newer format %u, not supported by this build", i, sb[i].major);
			ret = -EPROTONOSUPPORT;
			goto out_free;
		}
		if (rec->sb_valid[i] == 0 && (best < 0 || sb[i].sb_seq > sb[best].sb_seq))
			best = i;
	}
	if (best < 0) {
		ret = all_zero(blk, 2 * LSFS_BLK) ? -ENODATA : -EUCLEAN;
		say(rec, "superblock: %s", ret == -ENODATA ? "blank store" : "no valid copy");
		goto out_free;
	}
	rec->sb = sb[best];
	rec->sb_differ = rec->sb_valid[0] == 0 && rec->sb_valid[1] == 0 &&
			 memcmp(blk, blk + LSFS_BLK, LSFS_BLK) != 0;
	{
		const uint8_t *u = rec->sb.uuid;
		say(rec, "superblock: format %u.%u, uuid %02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		    "%02x%02x%02x%02x%02x%02x, %u-byte blocks x %llu, %u segments of %u bytes",
		    rec->sb.major, rec->sb.minor, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8],
		    u[9], u[10], u[11], u[12], u[13], u[14], u[15], rec->sb.block_size,
		    (unsigned long long)rec->sb.num_blocks, rec->sb.seg_count, rec->sb.seg_size);
	}
	for (int i = 0; i < 2; i++)
		if (rec->sb_valid[i])
			say(rec, "superblock copy %d: damaged (the other copy is used)", i);
	struct tnd_volume_info info;
	tnd_volume_info(b, &info);
	uint64_t dev = info.num_blocks * info.block_size;
	if (rec->sb.seg_off > dev ||
	    (uint64_t)rec->sb.seg_count * rec->sb.seg_size > dev - rec->sb.seg_off) {
		say(rec, "superblock: segments extend past the end of the backing store");
		ret = -EUCLEAN;
	}
out_free:
	free(blk);
	return ret;
}

static int load_ckpt_body(struct lsfs_recovery *rec, const uint8_t *body)
{
	const struct lsfs_sb *sb = &rec->sb;
	const struct lsfs_ckpt *ck = &rec->ck;
	uint64_t nchunks = (ck->num_blocks * sb->block_size + LSFS_BLK - 1) / LSFS_BLK;
	int ret = lsfs_map_init(&rec->map, nchunks);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < sb->seg_count; i++) {
		const uint8_t *p = body + (size_t)i * LSFS_CKPT_SEG_ENT;
		rec->segs[i].seq = tnd_get_be64(p);
		rec->ck_live[i] = tnd_get_be32(p + 8);
		uint32_t st = tnd_get_be32(p + 12);
		rec->segs[i].state = st == LSFS_SEG_USED ? LSFS_SEG_USED : LSFS_SEG_FREE;
	}
	const uint8_t *m = body + (size_t)sb->seg_count * LSFS_CKPT_SEG_ENT;
	uint64_t first = lsfs_seg_base_pba(sb, 0);
	uint64_t end = lsfs_seg_base_pba(sb, sb->seg_count);
	for (uint64_t i = 0; i < ck->nmapped; i++, m += LSFS_CKPT_MAP_ENT) {
		uint64_t lba = tnd_get_be64(m);
		uint64_t pba = tnd_get_be64(m + 8);
		uint32_t crc = tnd_get_be32(m + 16);
		uint32_t aux = tnd_get_be32(m + 20);
		if (lba >= nchunks || pba < first || pba >= end) {
			say(rec, "checkpoint: map entry %llu -> %llu out of range",
			    (unsigned long long)lba, (unsigned long long)pba);
			return -EUCLEAN;
		}
		if (!lsfs_aux_valid(aux) || (aux && !(sb->incompat & LSFS_INCOMPAT_PACKED)) ||
		    (lsfs_aux_deferred((uint16_t)aux) && !(sb->incompat & LSFS_INCOMPAT_DEFERRED))) {
			say(rec, "checkpoint: map entry %llu has an impossible layout %#x",
			    (unsigned long long)lba, aux);
			return -EUCLEAN;
		}
		uint32_t seg = (uint32_t)((pba - first) / (sb->seg_size / LSFS_BLK));
		uint32_t seg_last = (uint32_t)((pba + lsfs_aux_blocks((uint16_t)aux) - 1 - first) /
					       (sb->seg_size / LSFS_BLK));
		if (seg_last != seg || pba + lsfs_aux_blocks((uint16_t)aux) > end) {
			say(rec, "checkpoint: block %llu runs past its segment", (unsigned long long)lba);
			return -EUCLEAN;
		}
		if (rec->segs[seg].state != LSFS_SEG_USED) {
			say(rec, "checkpoint: block %llu maps into free segment %u",
			    (unsigned long long)lba, seg);
			return -EUCLEAN;
		}
		ret = lsfs_map_reserve(&rec->map, lba, 1);
		if (ret < 0)
			return ret;
		rec->ck_map_live[seg]++;
		if (lsfs_map_set(&rec->map, lba, pba, crc, (uint16_t)aux, NULL)) {
			say(rec, "checkpoint: block %llu mapped twice", (unsigned long long)lba);
			return -EUCLEAN;
		}
	}
	return 0;
}

static int read_checkpoint(struct tnd_volume *b, struct tnd_reactor *r, struct lsfs_recovery *rec)
{
	const struct lsfs_sb *sb = &rec->sb;
	struct lsfs_ckpt ck[2];
	uint8_t *blk = lsfs_alloc_blocks(LSFS_BLK);
	if (!blk)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		int ret = lsfs_sync_io(b, r, TND_IO_READ, sb->ckpt_off + i * sb->ckpt_size, blk, LSFS_BLK);
		if (ret < 0) {
			free(blk);
			return ret;
		}
		rec->ck_valid[i] = lsfs_ckpt_decode_head(blk, sb->uuid, &ck[i]);
		/* Everything replay will index with is checked here. */
		if (rec->ck_valid[i] == 0 &&
		    (ck[i].seg_count != sb->seg_count || ck[i].body_len + LSFS_BLK > sb->ckpt_size ||
		     (ck[i].replay_seg != LSFS_NONE32 && ck[i].replay_seg >= sb->seg_count) ||
		     ck[i].replay_off % LSFS_BLK || ck[i].replay_off > sb->seg_size ||
		     ck[i].num_blocks == 0 || ck[i].num_blocks > LSFS_MAX_BYTES / sb->block_size ||
		     ck[i].body_len > sb->ckpt_size || ck[i].nmapped > ck[i].body_len ||
		     ck[i].body_len != (uint64_t)sb->seg_count * LSFS_CKPT_SEG_ENT +
					  ck[i].nmapped * LSFS_CKPT_MAP_ENT))
			rec->ck_valid[i] = -EUCLEAN;
	}
	free(blk);

	/* Newest first; an area whose body fails its CRC is a torn write. */
	int order[2] = { 0, 1 };
	if (rec->ck_valid[1] == 0 && (rec->ck_valid[0] || ck[1].ckpt_seq > ck[0].ckpt_seq)) {
		order[0] = 1;
		order[1] = 0;
	}
	for (int k = 0; k < 2; k++) {
		int i = order[k];
		if (rec->ck_valid[i])
			continue;
		size_t len = (LSFS_BLK + ck[i].body_len + LSFS_BLK - 1) & ~(size_t)(LSFS_BLK - 1);
		uint8_t *buf = lsfs_alloc_blocks(len);
		if (!buf)
			return -ENOMEM;
		int ret = lsfs_sync_io(b, r, TND_IO_READ, sb->ckpt_off + i * sb->ckpt_size, buf, len);
		if (ret < 0) {
			free(buf);
			return ret;
		}
		if (tnd_crc32c(0, buf + LSFS_BLK, ck[i].body_len) != ck[i].body_crc) {
			rec->ck_valid[i] = -EUCLEAN;
			say(rec, "checkpoint area %d (seq %llu): body CRC mismatch (torn write), using the other",
			    i, (unsigned long long)ck[i].ckpt_seq);
			rec->warnings++;
			free(buf);
			continue;
		}
		rec->ck = ck[i];
		rec->ck_area = i;
		ret = load_ckpt_body(rec, buf + LSFS_BLK);
		free(buf);
		if (ret == 0)
			return 0;
		lsfs_map_free(&rec->map);
		memset(rec->ck_map_live, 0, sb->seg_count * sizeof(*rec->ck_map_live));
		if (ret != -EUCLEAN)
			return ret;
		rec->ck_valid[i] = -EUCLEAN;
	}
	say(rec, "checkpoint: no valid checkpoint in either area");
	return -EUCLEAN;
}

static uint32_t seg_of_pba(const struct lsfs_sb *sb, uint64_t pba)
{
	return (uint32_t)((pba - lsfs_seg_base_pba(sb, 0)) / (sb->seg_size / LSFS_BLK));
}

/* Apply one whole record (already checked) to the map. */
static int apply_record(struct lsfs_recovery *rec, const uint8_t *hdr, const struct lsfs_rec *rh,
			uint64_t hdr_pba)
{
	const struct lsfs_sb *sb = &rec->sb;
	uint32_t sec = 0;                 /* payload sectors before this one */
	for (uint32_t i = 0; i < rh->ndesc; i++) {
		struct lsfs_desc d;
		lsfs_desc_decode(hdr, i, &d);
		uint64_t nchunks = rec->map.nchunks;
		switch (d.flags & LSFS_DESC_KIND_MASK) {
		case LSFS_DESC_DATA: {
			uint64_t pba = hdr_pba + 1 + sec / 8;
			bool deferred = d.flags & LSFS_DESC_F_DEFERRED;
			uint16_t aux = deferred ? lsfs_aux_make_deferred(sec % 8)
						: lsfs_aux_make(d.flags & LSFS_DESC_F_LZ4, sec % 8, d.stored_len);
			if (d.flags & LSFS_DESC_F_DEDUP) {
				/* A share of a payload stored earlier in the log. */
				pba = d.arg >> 3;
				aux = deferred ? lsfs_aux_make_deferred(d.arg & 7)
					       : lsfs_aux_make(d.flags & LSFS_DESC_F_LZ4, d.arg & 7, d.stored_len);
				uint64_t first = lsfs_seg_base_pba(sb, 0);
				uint32_t sb_blocks = sb->seg_size / LSFS_BLK;
				if (!(sb->incompat & LSFS_INCOMPAT_DEDUP) || pba < first ||
				    pba >= lsfs_seg_base_pba(sb, sb->seg_count) ||
				    (pba - first) / sb_blocks !=
				    (pba + lsfs_aux_blocks(aux) - 1 - first) / sb_blocks) {
					say(rec, "record %llu: block %llu shares an impossible address %llu; "
					    "ignored", (unsigned long long)rh->rec_seq,
					    (unsigned long long)d.lba, (unsigned long long)d.arg);
					rec->warnings++;
					break;
				}
			} else {
				sec += lsfs_len_sectors(d.stored_len);
			}
			if (d.lba >= nchunks) {
				say(rec, "record %llu: block %llu beyond the volume size",
				    (unsigned long long)rh->rec_seq, (unsigned long long)d.lba);
				rec->warnings++;
				break;
			}
			int ret = lsfs_map_reserve(&rec->map, d.lba, 1);
			if (ret < 0)
				return ret;
			/* Per chunk, shared payloads included: a segment some
			 * DEDUP descriptor still points into is not empty. */
			struct lsfs_ment old;
			if (lsfs_map_set(&rec->map, d.lba, pba, d.crc, aux, &old))
				rec->segs[seg_of_pba(sb, lsfs_ment_pba(&old))].live--;
			rec->segs[seg_of_pba(sb, pba)].live++;
			break;
		}
		case LSFS_DESC_TRIM: {
			uint64_t end = d.lba + d.arg < d.lba ? nchunks : TND_MIN(d.lba + d.arg, nchunks);
			for (uint64_t c = d.lba; c < end && lsfs_map_next(&rec->map, &c) && c < end; c++) {
				struct lsfs_ment old;
				lsfs_map_clear(&rec->map, c, &old);
				rec->segs[seg_of_pba(sb, lsfs_ment_pba(&old))].live--;
			}
			break;
		}
		case LSFS_DESC_SIZE: {
			uint64_t nb = d.arg;
			if (nb > LSFS_MAX_BYTES / sb->block_size) {
				say(rec, "record %llu: size %llu blocks is not believable; ignored",
				    (unsigned long long)rh->rec_seq, (unsigned long long)nb);
				rec->warnings++;
				break;
			}
			int ret = lsfs_map_grow(&rec->map, (nb * sb->block_size + LSFS_BLK - 1) / LSFS_BLK);
			if (ret < 0)
				return ret;
			if (nb > rec->num_blocks)
				rec->num_blocks = nb;
			break;
		}
		default:
			break;   /* lsfs_rec_decode() admits no other kind */
		}
	}
	return 0;
}

/*
 * Parse records in @buf (the segment's bytes from @off on) while they
 * continue the chain. Returns the offset after the last good record.
 */
static uint32_t replay_segment(struct lsfs_recovery *rec, uint32_t seg, uint8_t *segbuf,
			       uint32_t off, uint64_t seg_seq, uint32_t *hint, int *err)
{
	const struct lsfs_sb *sb = &rec->sb;
	uint64_t base = lsfs_seg_base_pba(sb, seg);
	while (off + LSFS_BLK <= sb->seg_size) {
		const uint8_t *hdr = segbuf + off;
		struct lsfs_rec rh;
		if (lsfs_rec_decode(hdr, sb->uuid, &rh) < 0 || rh.rec_seq != rec->next_rec_seq ||
		    rh.seg_seq != seg_seq)
			break;
		if (off + (uint64_t)(1 + rh.npayload) * LSFS_BLK > sb->seg_size)
			break;
		/* A record is applied whole or not at all: any payload that
		 * fails its CRC means the write was torn, and the log ends. */
		bool whole = true;
		uint32_t sec = 0;
		for (uint32_t i = 0; i < rh.ndesc && whole; i++) {
			struct lsfs_desc d;
			lsfs_desc_decode(hdr, i, &d);
			if (!lsfs_desc_payload(&d))
				continue;
			const uint8_t *p = segbuf + off + LSFS_BLK + (size_t)sec * LSFS_SECTOR;
			sec += lsfs_len_sectors(d.stored_len);
			whole = tnd_crc32c(0, p, d.stored_len) == d.crc;
		}
		if (!whole)
			break;
		*err = apply_record(rec, hdr, &rh, base + off / LSFS_BLK);
		if (*err < 0)
			return off;
		rec->next_rec_seq++;
		rec->replayed++;
		if (rh.flags & LSFS_REC_F_GC)
			rec->gc_replayed++;
		*hint = rh.next_seg;
		rec->segs[seg].in_chain = true;
		off += (1 + rh.npayload) * LSFS_BLK;
	}
	return off;
}

/* Is @seg the continuation of the chain after a segment with @prev_seq? */
static bool is_successor(struct tnd_volume *b, struct tnd_reactor *r, struct lsfs_recovery *rec,
			 uint32_t seg, uint64_t prev_seq, uint8_t *blk, uint64_t *seg_seq, int *err)
{
	const struct lsfs_sb *sb = &rec->sb;
	if (seg >= sb->seg_count || rec->segs[seg].in_chain ||
	    (rec->segs[seg].state != LSFS_SEG_FREE && rec->segs[seg].live != 0))
		return false;
	*err = lsfs_sync_io(b, r, TND_IO_READ, sb->seg_off + (uint64_t)seg * sb->seg_size, blk, LSFS_BLK);
	if (*err < 0)
		return false;
	struct lsfs_rec rh;
	if (lsfs_rec_decode(blk, sb->uuid, &rh) < 0 || rh.rec_seq != rec->next_rec_seq ||
	    rh.prev_seg_seq != prev_seq || rh.seg_seq <= prev_seq)
		return false;
	*seg_seq = rh.seg_seq;
	return true;
}

static int replay(struct tnd_volume *b, struct tnd_reactor *r, struct lsfs_recovery *rec)
{
	const struct lsfs_sb *sb = &rec->sb;
	uint8_t *segbuf = lsfs_alloc_blocks(sb->seg_size);
	if (!segbuf)
		return -ENOMEM;
	int err = 0;
	uint32_t seg = rec->ck.replay_seg;
	uint32_t off = rec->ck.replay_off;
	uint64_t seg_seq = rec->ck.replay_seg_seq;
	uint32_t hint = rec->ck.next_seg;
	rec->next_rec_seq = rec->ck.next_rec_seq;
	rec->tail_seg = seg;
	rec->tail_off = off;
	rec->tail_seg_seq = seg_seq;

	for (;;) {
		if (seg != LSFS_NONE32 && off < sb->seg_size) {
			/* Read the rest of the segment in one go. */
			err = lsfs_sync_io(b, r, TND_IO_READ, sb->seg_off + (uint64_t)seg * sb->seg_size + off,
					   segbuf + off, sb->seg_size - off);
			if (err < 0)
				break;
			off = replay_segment(rec, seg, segbuf, off, seg_seq, &hint, &err);
			if (err < 0)
				break;
		}
		rec->tail_seg = seg;
		rec->tail_off = off;
		rec->tail_seg_seq = seg_seq;

		uint64_t next_seq = 0;
		uint32_t next = LSFS_NONE32;
		if (hint != LSFS_NONE32 && is_successor(b, r, rec, hint, seg_seq, segbuf, &next_seq, &err))
			next = hint;
		for (uint32_t s = 0; next == LSFS_NONE32 && err == 0 && s < sb->seg_count; s++)
			if (s != hint && is_successor(b, r, rec, s, seg_seq, segbuf, &next_seq, &err))
				next = s;
		if (err < 0 || next == LSFS_NONE32)
			break;
		seg = next;
		off = 0;
		seg_seq = next_seq;
		hint = LSFS_NONE32;
		rec->reused += rec->segs[seg].state == LSFS_SEG_USED;
		rec->segs[seg].seq = seg_seq;
		rec->segs[seg].state = LSFS_SEG_USED;
		if (seg_seq > rec->max_seg_seq)
			rec->max_seg_seq = seg_seq;
	}
	free(segbuf);
	return err;
}

int lsfs_recover(struct tnd_volume *b, struct tnd_reactor *r, struct lsfs_recovery *rec)
{
	struct tnd_volume_info info;
	tnd_volume_info(b, &info);
	if (info.block_size == 0 || LSFS_BLK % info.block_size)
		return -EINVAL;
	int ret = read_superblock(b, r, rec);
	if (ret < 0)
		return ret;
	const struct lsfs_sb *sb = &rec->sb;
	rec->segs = calloc(sb->seg_count, sizeof(*rec->segs));
	rec->ck_live = calloc(sb->seg_count, sizeof(*rec->ck_live));
	rec->ck_map_live = calloc(sb->seg_count, sizeof(*rec->ck_map_live));
	if (!rec->segs || !rec->ck_live || !rec->ck_map_live)
		return -ENOMEM;
	ret = read_checkpoint(b, r, rec);
	if (ret < 0)
		return ret;
	say(rec, "checkpoint: area %d, seq %llu, %llu blocks mapped, replay from segment %d offset %u",
	    rec->ck_area, (unsigned long long)rec->ck.ckpt_seq, (unsigned long long)rec->ck.nmapped,
	    (int)rec->ck.replay_seg, rec->ck.replay_off);
	rec->num_blocks = rec->ck.num_blocks;
	rec->max_seg_seq = rec->ck.max_seg_seq;
	for (uint32_t i = 0; i < sb->seg_count; i++) {
		if (rec->segs[i].seq > rec->max_seg_seq)
			rec->max_seg_seq = rec->segs[i].seq;
		/* Kept up to date by replay: a used segment that replay has
		 * emptied may be the log's continuation. */
		rec->segs[i].live = rec->ck_map_live[i];
	}
	ret = replay(b, r, rec);
	if (ret < 0)
		return ret;
	say(rec, "replay: %llu records, log ends in segment %d at offset %u, next record %llu",
	    (unsigned long long)rec->replayed, (int)rec->tail_seg, rec->tail_off,
	    (unsigned long long)rec->next_rec_seq);
	/* Live counts follow from the map. */
	for (uint32_t i = 0; i < sb->seg_count; i++)
		rec->segs[i].live = rec->segs[i].live_sec = rec->segs[i].deferred = 0;
	uint64_t c = 0;
	while (lsfs_map_next(&rec->map, &c)) {
		const struct lsfs_ment *e = lsfs_map_get(&rec->map, c);
		struct lsfs_seginfo *si = &rec->segs[seg_of_pba(sb, lsfs_ment_pba(e))];
		si->live++;
		si->live_sec += lsfs_len_sectors(lsfs_aux_len(e->aux));
		si->deferred += lsfs_aux_deferred(e->aux);
		c++;
	}
	return 0;
}

void lsfs_recovery_free(struct lsfs_recovery *rec)
{
	lsfs_map_free(&rec->map);
	free(rec->segs);
	free(rec->ck_live);
	free(rec->ck_map_live);
	rec->segs = NULL;
	rec->ck_live = NULL;
	rec->ck_map_live = NULL;
}

int tnd_lsfs_open(struct tnd_volume *backing, struct tnd_reactor *home,
		  const struct tnd_lsfs_opts *opts, struct tnd_volume **out)
{
	struct tnd_lsfs_opts o;
	if (!opts) {
		tnd_lsfs_opts_default(&o);
		opts = &o;
	}
	/* All of opening runs on a private reactor of the calling thread: the
	 * home reactor may already be running on its own thread. */
	struct tnd_reactor *r;
	int ret = tnd_reactor_create(0, 64, &r);
	if (ret < 0)
		return ret;
	struct lsfs_recovery *rec = calloc(1, sizeof(*rec));
	if (!rec) {
		ret = -ENOMEM;
		goto err_destroy_reactor;
	}
	ret = lsfs_recover(backing, r, rec);
	if (ret == -ENODATA && opts->create_if_blank) {
		lsfs_recovery_free(rec);
		memset(rec, 0, sizeof(*rec));
		ret = format_on(backing, r, opts);
		if (ret == 0)
			ret = lsfs_recover(backing, r, rec);
	}
	if (ret < 0) {
		if (ret == -EUCLEAN)
			tnd_err(LSFS_TAG, "not an lsfs store, or its metadata is damaged (run tandem-check)");
		goto err_free_rec;
	}
	ret = lsfs_create_volume(backing, home, r, opts, rec, out);
err_free_rec:
	lsfs_recovery_free(rec);
	free(rec);
err_destroy_reactor:
	tnd_reactor_destroy(r);
	return ret;
}
