/*
 * lsfs_int.h — lsfs internals shared by the volume (lsfs.c), open and
 * recovery (open.c), the on-disk codec (ondisk.c), the block map (map.c)
 * and the checker (check.c). Not installed; the format itself is described
 * in docs/on-disk-format.md and the numbers here must match it.
 */
#ifndef TND_LSFS_INT_H
#define TND_LSFS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tnd_common.h"
#include "tnd_lsfs.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"

#define LSFS_TAG "lsfs"

#define LSFS_BLK 4096u                 /* chunk, record header and I/O unit */
#define LSFS_BLK_SHIFT 12
#define LSFS_SB_MAGIC "TNDLSFS1"
#define LSFS_REC_MAGIC "TNDLREC1"
#define LSFS_CKPT_MAGIC "TNDLCKP1"
#define LSFS_MIN_SEGMENTS 6u
#define LSFS_NONE32 0xffffffffu
/* Largest logical size (64 TiB): bounds the map's top array (128 MiB) and
 * any size read back from disk. */
#define LSFS_MAX_BYTES (1ull << 46)

/* ---- superblock: 4 KiB, copies at byte 0 and byte 4096 ---- */

struct lsfs_sb {
	uint32_t major, minor;
	uint64_t incompat, compat;
	uint8_t uuid[16];
	uint32_t block_size;           /* logical */
	uint32_t seg_size;             /* bytes */
	uint64_t num_blocks;           /* logical blocks at format time */
	uint64_t ckpt_off, ckpt_size;  /* bytes: area A at ckpt_off, B right after */
	uint64_t seg_off;              /* bytes: first segment */
	uint32_t seg_count;
	uint64_t sb_seq;
};

/*
 * Incompatible feature bits. PACKED: records may hold LZ4 payloads, and
 * payloads are packed at 512 B sector granularity (so a plain one need not
 * start on a 4 KiB boundary); map entries say where in a block a payload
 * starts. Set before the first such record is written.
 */
#define LSFS_INCOMPAT_PACKED 0x1ull
/* DEDUP: DATA descriptors may share another chunk's payload (flag DEDUP,
 * no payload of their own); several map entries may name one payload. */
#define LSFS_INCOMPAT_DEDUP 0x2ull
/* DEFERRED: plain DATA payloads may carry the DEFERRED mark (descriptor
 * flag, map aux): stored raw because the write path was saturated, to be
 * compressed when GC or compaction moves them. An older reader would
 * take the flag for a torn record, so it must refuse the store. Set
 * lazily (lsfs.c, "Deferred mark"): no deferred record or map aux reaches
 * the disk before this bit is durable in both superblock copies. */
#define LSFS_INCOMPAT_DEFERRED 0x4ull
#define LSFS_INCOMPAT_KNOWN (LSFS_INCOMPAT_PACKED | LSFS_INCOMPAT_DEDUP | LSFS_INCOMPAT_DEFERRED)

void lsfs_sb_encode(const struct lsfs_sb *sb, uint8_t *blk);
/* Write both copies (sb_seq + 1), each followed by a flush. */
int lsfs_sb_write(struct tnd_volume *backing, struct tnd_reactor *r, struct lsfs_sb *sb);
/* 0, -EUCLEAN (not ours/damaged) or -EPROTONOSUPPORT (newer format). */
int lsfs_sb_decode(const uint8_t *blk, struct lsfs_sb *sb);

/* ---- record: a 4 KiB header, then the payload blocks it describes ---- */

#define LSFS_REC_FIXED 64u
#define LSFS_DESC_BYTES 24u
#define LSFS_REC_MAX_DESC ((LSFS_BLK - 4 - LSFS_REC_FIXED) / LSFS_DESC_BYTES)  /* 167 */

enum lsfs_desc_kind {
	LSFS_DESC_DATA = 0,            /* lba: chunk; payload follows */
	LSFS_DESC_TRIM = 1,            /* lba: first chunk; arg: count; no payload */
	LSFS_DESC_SIZE = 2,            /* arg: new logical size in blocks; no payload */
};
#define LSFS_DESC_KIND_MASK 0x00ffu
#define LSFS_DESC_F_LZ4     0x0100u    /* payload is LZ4, stored_len <= 4096 - 512 */
#define LSFS_DESC_F_DEDUP   0x0200u    /* no payload: arg is the sector address of a
					* stored one (pba * 8 + sector) to share */
#define LSFS_DESC_F_DEFERRED 0x0400u   /* a plain payload whose compression was deferred
					* (DEFERRED stores; never with LZ4) */

struct lsfs_desc {
	uint64_t lba;
	uint32_t crc;                  /* CRC32C of the stored payload bytes */
	uint16_t flags;
	uint16_t stored_len;           /* bytes on disk; 4096 plain; 0 no payload */
	uint64_t arg;
};

/* Bytes of payload that follow in the record for @d (DEDUP: none). */
static inline uint32_t lsfs_desc_payload(const struct lsfs_desc *d)
{
	return d->flags & LSFS_DESC_F_DEDUP ? 0 : d->stored_len;
}

struct lsfs_rec {
	uint64_t rec_seq;
	uint64_t seg_seq;
	uint64_t prev_seg_seq;         /* seg_seq of the segment before in the log */
	uint32_t ndesc;
	uint32_t npayload;             /* 4 KiB blocks of (packed) payload after the header */
	uint32_t next_seg;             /* hint: segment the log continues in, or NONE */
	uint32_t flags;                /* LSFS_REC_F_*; unknown bits are ignored */
	uint8_t uuid[16];
};

/* Record flags (header bytes 44..47; zero in stores written before they
 * existed, and a reader ignores bits it does not know: they describe, they
 * never change how a record is applied). GC: every descriptor is a block
 * moved by garbage collection, and the record lies in a GC-only segment
 * (all of whose records carry the flag). */
#define LSFS_REC_F_GC 0x1u

#define LSFS_SECTOR 512u
#define LSFS_LZ4_MAX (LSFS_BLK - LSFS_SECTOR)   /* the one-sector rule */

/* Sectors a payload of @len stored bytes occupies. */
static inline uint32_t lsfs_len_sectors(uint32_t len)
{
	return (len + LSFS_SECTOR - 1) / LSFS_SECTOR;
}

void lsfs_rec_encode_head(const struct lsfs_rec *r, uint8_t *blk);
void lsfs_desc_encode(const struct lsfs_desc *d, uint8_t *blk, uint32_t i);
void lsfs_rec_seal(uint8_t *blk);      /* write the CRC at the end */
/* Checks magic, CRC, uuid and the descriptor count. 0 or -EUCLEAN. */
int lsfs_rec_decode(const uint8_t *blk, const uint8_t uuid[16], struct lsfs_rec *r);
void lsfs_desc_decode(const uint8_t *blk, uint32_t i, struct lsfs_desc *d);

/* ---- checkpoint: header block + body (segment table, then map) ---- */

#define LSFS_CKPT_SEG_ENT 16u
#define LSFS_CKPT_MAP_ENT 24u

struct lsfs_ckpt {
	uint64_t ckpt_seq;
	uint8_t uuid[16];
	uint64_t num_blocks;
	uint64_t next_rec_seq;
	uint32_t replay_seg;
	uint32_t replay_off;
	uint64_t replay_seg_seq;
	uint64_t max_seg_seq;
	uint32_t seg_count;
	uint64_t nmapped;
	uint64_t body_len;
	uint32_t body_crc;
	uint32_t next_seg;             /* hint, as in records */
};

void lsfs_ckpt_encode_head(const struct lsfs_ckpt *c, uint8_t *blk);
int lsfs_ckpt_decode_head(const uint8_t *blk, const uint8_t uuid[16], struct lsfs_ckpt *c);

enum lsfs_seg_state {
	LSFS_SEG_FREE = 0,
	LSFS_SEG_USED = 1,
	LSFS_SEG_OPEN = 2,             /* in RAM only: being appended to */
	LSFS_SEG_DEAD = 3,             /* in RAM only: no live data, free after next checkpoint */
	LSFS_SEG_NEXT = 4,             /* in RAM only: reserved as the next open segment */
};

/* Layout helpers: sizes of the checkpoint area for a geometry (the
 * minimum: one map entry per data slot), and for @entries map entries. */
uint64_t lsfs_ckpt_area_size(uint32_t seg_count, uint32_t seg_size);
uint64_t lsfs_ckpt_area_size_for(uint32_t seg_count, uint64_t entries);
/* Map entries a checkpoint area of the superblock's size can hold. */
uint64_t lsfs_ckpt_capacity(const struct lsfs_sb *sb);

/* ---- the block map: chunk -> pba (4 KiB units) + CRC, 12 bytes an entry ---- */

/*
 * aux says how the payload lies at pba. 0: a plain 4096-byte payload that
 * is the whole block pba (all that format 1.0 has). Otherwise bit 15 is
 * LZ4, bits 12..14 the 512 B sector of block pba where the payload starts,
 * bits 0..11 its stored length - 1; a payload may run on into block pba+1
 * (same record, same segment). A non-LZ4 payload is always 4096 bytes, so
 * aux 0 cannot be mistaken for anything else, and its bits 0..11 are
 * 0xfff, or 0xffe when the payload is DEFERRED (stored raw because the
 * write path was saturated; compressed when it is moved).
 */
struct lsfs_ment {
	uint32_t crc;
	uint32_t pba_lo;
	uint16_t pba_hi;
	uint16_t aux;
};

#define LSFS_AUX_LZ4 0x8000u
#define LSFS_AUX_LEN_MASK 0x0fffu
#define LSFS_AUX_DEFERRED_LEN 0x0ffeu  /* bits 0..11 of a deferred plain payload */
/* Most chunks that may share one payload (the dedup refcount limit). */
#define LSFS_REF_MAX 65535u

static inline uint16_t lsfs_aux_make(bool lz4, uint32_t sector, uint32_t len)
{
	if (!lz4 && sector == 0 && len == LSFS_BLK)
		return 0;
	return (uint16_t)((lz4 ? LSFS_AUX_LZ4 : 0) | sector << 12 | (len - 1));
}

/* A plain payload at @sector whose compression was deferred. */
static inline uint16_t lsfs_aux_make_deferred(uint32_t sector)
{
	return (uint16_t)(sector << 12 | LSFS_AUX_DEFERRED_LEN);
}

static inline uint32_t lsfs_aux_sector(uint16_t aux)
{
	return (aux >> 12) & 7u;
}

static inline bool lsfs_aux_lz4(uint16_t aux)
{
	return aux & LSFS_AUX_LZ4;
}

static inline uint32_t lsfs_aux_len(uint16_t aux)
{
	return aux & LSFS_AUX_LZ4 ? (aux & LSFS_AUX_LEN_MASK) + 1 : LSFS_BLK;
}

static inline bool lsfs_aux_deferred(uint16_t aux)
{
	return !(aux & LSFS_AUX_LZ4) && (aux & LSFS_AUX_LEN_MASK) == LSFS_AUX_DEFERRED_LEN;
}

/* Is @aux (as read from disk) one this build can have written? */
static inline bool lsfs_aux_valid(uint32_t aux)
{
	if (aux > 0xffffu)
		return false;
	if (aux == 0)
		return true;
	uint32_t len = (aux & LSFS_AUX_LEN_MASK) + 1;
	if (aux & LSFS_AUX_LZ4)
		return len <= LSFS_LZ4_MAX;
	return len == LSFS_BLK || (aux & LSFS_AUX_LEN_MASK) == LSFS_AUX_DEFERRED_LEN;
}

/* Blocks from pba that hold the payload: 1 or 2. */
static inline uint32_t lsfs_aux_blocks(uint16_t aux)
{
	return (lsfs_aux_sector(aux) * LSFS_SECTOR + lsfs_aux_len(aux) + LSFS_BLK - 1) / LSFS_BLK;
}

#define LSFS_LEAF_BITS 10
#define LSFS_LEAF_N (1u << LSFS_LEAF_BITS)

/* A leaf covers LSFS_LEAF_N chunks: sparse (sorted offsets + entries,
 * 14 bytes a mapped chunk) until it is most of the way full, then dense
 * (an array indexed by offset, 12 bytes a chunk). See map.c. */
struct lsfs_leaf {
	uint32_t used;                 /* mapped chunks */
	uint32_t cap;                  /* sparse: room in idx[] and e[] */
	bool dense;
	uint16_t *idx;                 /* sparse only: sorted chunk offsets */
	struct lsfs_ment *e;
};

struct lsfs_map {
	struct lsfs_leaf **leaves;
	uint64_t nleaves;
	uint64_t nchunks;
	uint64_t mapped;
	uint64_t bytes;                /* heap bytes held by leaves and the top array */
};

static inline uint64_t lsfs_ment_pba(const struct lsfs_ment *e)
{
	return (uint64_t)e->pba_hi << 32 | e->pba_lo;
}

/* Where the payload starts, in sectors: unique per stored payload. */
static inline uint64_t lsfs_ment_loc(const struct lsfs_ment *e)
{
	return lsfs_ment_pba(e) << 3 | lsfs_aux_sector(e->aux);
}

int lsfs_map_init(struct lsfs_map *m, uint64_t nchunks);
int lsfs_map_grow(struct lsfs_map *m, uint64_t nchunks);
void lsfs_map_free(struct lsfs_map *m);
/* NULL when unmapped. */
const struct lsfs_ment *lsfs_map_get(const struct lsfs_map *m, uint64_t chunk);
/* Make sure the leaves for [c, c+n) exist, so that a set cannot fail. */
int lsfs_map_reserve(struct lsfs_map *m, uint64_t c, uint64_t n);
/* Returns the old pba (0 when it was unmapped) and, with @old, the old
 * entry. The leaf must exist. */
uint64_t lsfs_map_set(struct lsfs_map *m, uint64_t chunk, uint64_t pba, uint32_t crc, uint16_t aux,
		      struct lsfs_ment *old);
uint64_t lsfs_map_clear(struct lsfs_map *m, uint64_t chunk, struct lsfs_ment *old);
/* First mapped chunk >= *c; false when none. */
bool lsfs_map_next(const struct lsfs_map *m, uint64_t *c);
uint64_t lsfs_map_bytes(const struct lsfs_map *m);

/* ---- synchronous backing I/O for open, format and check ---- */

/* Byte offsets and lengths, multiples of 4 KiB. Polls @r until done. */
int lsfs_sync_io(struct tnd_volume *v, struct tnd_reactor *r, enum tnd_io_type type,
		 uint64_t off, void *buf, size_t len);

/* ---- recovery state shared by open and check ---- */

struct lsfs_seginfo {
	uint64_t seq;
	uint32_t live;                 /* mapped chunks stored here */
	uint32_t live_sec;             /* in RAM only: 512 B sectors they occupy */
	uint32_t deferred;             /* in RAM only: mapped chunks whose payload here is DEFERRED */
	uint8_t state;                 /* enum lsfs_seg_state */
	bool in_chain;                 /* replayed (written after the checkpoint) */
};

struct lsfs_recovery {
	struct lsfs_sb sb;
	struct lsfs_ckpt ck;
	int ck_area;
	struct lsfs_map map;
	struct lsfs_seginfo *segs;
	uint32_t *ck_live;             /* live counts as stored in the checkpoint */
	uint32_t *ck_map_live;         /* live counts the checkpoint's own map implies */
	uint64_t num_blocks;
	uint64_t next_rec_seq;
	uint64_t max_seg_seq;
	uint32_t tail_seg;             /* where the replayed log ends */
	uint32_t tail_off;
	uint64_t tail_seg_seq;
	uint64_t replayed;
	uint32_t reused;               /* successors the checkpoint listed as used */
	uint64_t gc_replayed;          /* replayed records of GC-only segments (LSFS_REC_F_GC) */
	int sb_valid[2];               /* 0 ok, else -errno per copy */
	bool sb_differ;                /* both valid but not identical */
	int ck_valid[2];
	FILE *report;                  /* check mode: where to say what was found */
	uint64_t warnings;
};

/* Read superblocks, the newest checkpoint and replay the log. */
int lsfs_recover(struct tnd_volume *backing, struct tnd_reactor *r, struct lsfs_recovery *rec);
void lsfs_recovery_free(struct lsfs_recovery *rec);

static inline uint64_t lsfs_seg_base_pba(const struct lsfs_sb *sb, uint32_t seg)
{
	return (sb->seg_off + (uint64_t)seg * sb->seg_size) >> LSFS_BLK_SHIFT;
}

/* Create the volume from a finished recovery (takes rec's map and tables);
 * @r is the caller's private reactor for the opening checkpoint. */
int lsfs_create_volume(struct tnd_volume *backing, struct tnd_reactor *home, struct tnd_reactor *r,
		       const struct tnd_lsfs_opts *opts, struct lsfs_recovery *rec,
		       struct tnd_volume **out);

void *lsfs_alloc_blocks(size_t len);

#endif
