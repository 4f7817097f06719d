/*
 * The lsfs on-disk codec: superblock, record header and checkpoint header
 * to and from 4 KiB blocks. All integers are big-endian (the same helpers
 * as the wire formats); every block ends with a CRC32C over the bytes
 * before it. docs/on-disk-format.md is the reference for the offsets.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lsfs_int.h"

#define CRC_OFF (LSFS_BLK - 4)

static uint32_t blk_crc(const uint8_t *blk)
{
	return tnd_crc32c(0, blk, CRC_OFF);
}

static bool blk_crc_ok(const uint8_t *blk)
{
	return tnd_get_be32(blk + CRC_OFF) == blk_crc(blk);
}

void *lsfs_alloc_blocks(size_t len)
{
	void *p = NULL;
	size_t sz = (len + LSFS_BLK - 1) & ~(size_t)(LSFS_BLK - 1);
	if (sz == 0)
		sz = LSFS_BLK;
	/* 4 KiB alignment so a flat volume can do O_DIRECT into it. */
	if (posix_memalign(&p, LSFS_BLK, sz))
		return NULL;
	memset(p, 0, sz);
	return p;
}

void lsfs_sb_encode(const struct lsfs_sb *sb, uint8_t *blk)
{
	memset(blk, 0, LSFS_BLK);
	memcpy(blk, LSFS_SB_MAGIC, 8);
	tnd_put_be32(blk + 8, sb->major);
	tnd_put_be32(blk + 12, sb->minor);
	tnd_put_be64(blk + 16, sb->incompat);
	tnd_put_be64(blk + 24, sb->compat);
	memcpy(blk + 32, sb->uuid, 16);
	tnd_put_be32(blk + 48, sb->block_size);
	tnd_put_be32(blk + 52, sb->seg_size);
	tnd_put_be64(blk + 56, sb->num_blocks);
	tnd_put_be64(blk + 64, sb->ckpt_off);
	tnd_put_be64(blk + 72, sb->ckpt_size);
	tnd_put_be64(blk + 80, sb->seg_off);
	tnd_put_be32(blk + 88, sb->seg_count);
	tnd_put_be64(blk + 96, sb->sb_seq);
	tnd_put_be32(blk + CRC_OFF, blk_crc(blk));
}

int lsfs_sb_decode(const uint8_t *blk, struct lsfs_sb *sb)
{
	if (memcmp(blk, LSFS_SB_MAGIC, 8) != 0)
		return -EUCLEAN;
	sb->major = tnd_get_be32(blk + 8);
	sb->minor = tnd_get_be32(blk + 12);
	sb->incompat = tnd_get_be64(blk + 16);
	/* The version is checked before the CRC: a newer format may lay the
	 * rest of the block out differently, and must be refused, not
	 * called damaged. */
	if (sb->major > TND_LSFS_FORMAT_MAJOR)
		return -EPROTONOSUPPORT;
	if (!blk_crc_ok(blk))
		return -EUCLEAN;
	if (sb->incompat & ~LSFS_INCOMPAT_KNOWN)
		return -EPROTONOSUPPORT;
	sb->compat = tnd_get_be64(blk + 24);
	memcpy(sb->uuid, blk + 32, 16);
	sb->block_size = tnd_get_be32(blk + 48);
	sb->seg_size = tnd_get_be32(blk + 52);
	sb->num_blocks = tnd_get_be64(blk + 56);
	sb->ckpt_off = tnd_get_be64(blk + 64);
	sb->ckpt_size = tnd_get_be64(blk + 72);
	sb->seg_off = tnd_get_be64(blk + 80);
	sb->seg_count = tnd_get_be32(blk + 88);
	sb->sb_seq = tnd_get_be64(blk + 96);
	if ((sb->block_size != 512 && sb->block_size != 4096) ||
	    sb->seg_size < 8 * LSFS_BLK || sb->seg_size % LSFS_BLK || sb->seg_size > (1u << 30) ||
	    sb->num_blocks == 0 || sb->num_blocks > LSFS_MAX_BYTES / sb->block_size ||
	    sb->seg_count < LSFS_MIN_SEGMENTS || sb->ckpt_off % LSFS_BLK ||
	    sb->ckpt_size % LSFS_BLK || sb->seg_off % LSFS_BLK ||
	    sb->ckpt_off < 2 * LSFS_BLK || sb->ckpt_off > sb->seg_off ||
	    (sb->seg_off - sb->ckpt_off) / 2 < sb->ckpt_size ||   /* no overflow */
	    sb->ckpt_size < lsfs_ckpt_area_size(sb->seg_count, sb->seg_size))
		return -EUCLEAN;
	return 0;
}

uint64_t lsfs_ckpt_area_size_for(uint32_t seg_count, uint64_t entries)
{
	uint64_t len = LSFS_BLK + (uint64_t)seg_count * LSFS_CKPT_SEG_ENT + entries * LSFS_CKPT_MAP_ENT;
	return (len + LSFS_BLK - 1) & ~(uint64_t)(LSFS_BLK - 1);
}

uint64_t lsfs_ckpt_area_size(uint32_t seg_count, uint32_t seg_size)
{
	/* Every data slot of every segment could be mapped at once. */
	return lsfs_ckpt_area_size_for(seg_count, (uint64_t)seg_count * (seg_size / LSFS_BLK - 1));
}

uint64_t lsfs_ckpt_capacity(const struct lsfs_sb *sb)
{
	return (sb->ckpt_size - LSFS_BLK - (uint64_t)sb->seg_count * LSFS_CKPT_SEG_ENT) /
	       LSFS_CKPT_MAP_ENT;
}

void lsfs_rec_encode_head(const struct lsfs_rec *r, uint8_t *blk)
{
	memcpy(blk, LSFS_REC_MAGIC, 8);
	tnd_put_be64(blk + 8, r->rec_seq);
	tnd_put_be64(blk + 16, r->seg_seq);
	tnd_put_be64(blk + 24, r->prev_seg_seq);
	tnd_put_be32(blk + 32, r->ndesc);
	tnd_put_be32(blk + 36, r->npayload);
	tnd_put_be32(blk + 40, r->next_seg);
	tnd_put_be32(blk + 44, r->flags);
	memcpy(blk + 48, r->uuid, 16);
}

void lsfs_desc_encode(const struct lsfs_desc *d, uint8_t *blk, uint32_t i)
{
	uint8_t *p = blk + LSFS_REC_FIXED + (size_t)i * LSFS_DESC_BYTES;
	tnd_put_be64(p, d->lba);
	tnd_put_be32(p + 8, d->crc);
	tnd_put_be16(p + 12, d->flags);
	tnd_put_be16(p + 14, d->stored_len);
	tnd_put_be64(p + 16, d->arg);
}

void lsfs_desc_decode(const uint8_t *blk, uint32_t i, struct lsfs_desc *d)
{
	const uint8_t *p = blk + LSFS_REC_FIXED + (size_t)i * LSFS_DESC_BYTES;
	d->lba = tnd_get_be64(p);
	d->crc = tnd_get_be32(p + 8);
	d->flags = tnd_get_be16(p + 12);
	d->stored_len = tnd_get_be16(p + 14);
	d->arg = tnd_get_be64(p + 16);
}

void lsfs_rec_seal(uint8_t *blk)
{
	tnd_put_be32(blk + CRC_OFF, blk_crc(blk));
}

int lsfs_rec_decode(const uint8_t *blk, const uint8_t uuid[16], struct lsfs_rec *r)
{
	if (memcmp(blk, LSFS_REC_MAGIC, 8) != 0 || !blk_crc_ok(blk))
		return -EUCLEAN;
	if (memcmp(blk + 48, uuid, 16) != 0)
		return -EUCLEAN;
	r->rec_seq = tnd_get_be64(blk + 8);
	r->seg_seq = tnd_get_be64(blk + 16);
	r->prev_seg_seq = tnd_get_be64(blk + 24);
	r->ndesc = tnd_get_be32(blk + 32);
	r->npayload = tnd_get_be32(blk + 36);
	r->next_seg = tnd_get_be32(blk + 40);
	r->flags = tnd_get_be32(blk + 44);
	memcpy(r->uuid, blk + 48, 16);
	if (r->ndesc > LSFS_REC_MAX_DESC || r->npayload > r->ndesc)
		return -EUCLEAN;
	/* Known: plain DATA (4096 bytes; DEFERRED or not), LZ4 DATA (1..3584 bytes: the
	 * one-sector rule), TRIM and SIZE (no payload); anything else,
	 * makes the record invalid. DEDUP DATA descriptors carry the shared
	 * payload's length and LZ4 flag but no payload of their own.
	 * Payloads are packed at sector granularity, so the payload area is
	 * the sum of their sectors rounded up to whole blocks; with only
	 * plain payloads that is one block each, as in format 1.0. */
	uint64_t sec = 0;
	for (uint32_t i = 0; i < r->ndesc; i++) {
		struct lsfs_desc d;
		lsfs_desc_decode(blk, i, &d);
		switch (d.flags) {
		case LSFS_DESC_DATA:
		case LSFS_DESC_DATA | LSFS_DESC_F_DEFERRED:
			if (d.stored_len != LSFS_BLK)
				return -EUCLEAN;
			sec += LSFS_BLK / LSFS_SECTOR;
			break;
		case LSFS_DESC_DATA | LSFS_DESC_F_LZ4:
			if (d.stored_len == 0 || d.stored_len > LSFS_LZ4_MAX)
				return -EUCLEAN;
			sec += lsfs_len_sectors(d.stored_len);
			break;
		/* DEDUP: the shared payload's length and flag, no payload here. */
		case LSFS_DESC_DATA | LSFS_DESC_F_DEDUP:
		case LSFS_DESC_DATA | LSFS_DESC_F_DEDUP | LSFS_DESC_F_DEFERRED:
			if (d.stored_len != LSFS_BLK)
				return -EUCLEAN;
			break;
		case LSFS_DESC_DATA | LSFS_DESC_F_DEDUP | LSFS_DESC_F_LZ4:
			if (d.stored_len == 0 || d.stored_len > LSFS_LZ4_MAX)
				return -EUCLEAN;
			break;
		case LSFS_DESC_TRIM:
		case LSFS_DESC_SIZE:
			if (d.stored_len != 0)
				return -EUCLEAN;
			break;
		default:
			return -EUCLEAN;
		}
	}
	return (sec + 7) / 8 == r->npayload ? 0 : -EUCLEAN;
}

void lsfs_ckpt_encode_head(const struct lsfs_ckpt *c, uint8_t *blk)
{
	memset(blk, 0, LSFS_BLK);
	memcpy(blk, LSFS_CKPT_MAGIC, 8);
	tnd_put_be64(blk + 8, c->ckpt_seq);
	memcpy(blk + 16, c->uuid, 16);
	tnd_put_be64(blk + 32, c->num_blocks);
	tnd_put_be64(blk + 40, c->next_rec_seq);
	tnd_put_be32(blk + 48, c->replay_seg);
	tnd_put_be32(blk + 52, c->replay_off);
	tnd_put_be64(blk + 56, c->replay_seg_seq);
	tnd_put_be64(blk + 64, c->max_seg_seq);
	tnd_put_be32(blk + 72, c->seg_count);
	tnd_put_be32(blk + 76, c->next_seg);
	tnd_put_be64(blk + 80, c->nmapped);
	tnd_put_be64(blk + 88, c->body_len);
	tnd_put_be32(blk + 96, c->body_crc);
	tnd_put_be32(blk + CRC_OFF, blk_crc(blk));
}

int lsfs_ckpt_decode_head(const uint8_t *blk, const uint8_t uuid[16], struct lsfs_ckpt *c)
{
	if (memcmp(blk, LSFS_CKPT_MAGIC, 8) != 0 || !blk_crc_ok(blk))
		return -EUCLEAN;
	if (memcmp(blk + 16, uuid, 16) != 0)
		return -EUCLEAN;
	c->ckpt_seq = tnd_get_be64(blk + 8);
	memcpy(c->uuid, blk + 16, 16);
	c->num_blocks = tnd_get_be64(blk + 32);
	c->next_rec_seq = tnd_get_be64(blk + 40);
	c->replay_seg = tnd_get_be32(blk + 48);
	c->replay_off = tnd_get_be32(blk + 52);
	c->replay_seg_seq = tnd_get_be64(blk + 56);
	c->max_seg_seq = tnd_get_be64(blk + 64);
	c->seg_count = tnd_get_be32(blk + 72);
	c->next_seg = tnd_get_be32(blk + 76);
	c->nmapped = tnd_get_be64(blk + 80);
	c->body_len = tnd_get_be64(blk + 88);
	c->body_crc = tnd_get_be32(blk + 96);
	return 0;
}
