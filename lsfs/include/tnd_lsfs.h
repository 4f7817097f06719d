/*
 * tnd_lsfs.h — lsfs, the log-structured store: a thin volume layered on a
 * backing volume (a file or a block device through `flat`).
 *
 * Purpose. lsfs turns random writes into sequential appends. The backing
 * store holds two superblock copies, two checkpoint areas and a run of
 * fixed-size segments; every write appends a record (a 4 KiB header block
 * describing up to 167 blocks, then their payloads) to the open segment.
 * A block map in RAM (LBA -> physical 4 KiB slot + CRC32C; 12 bytes per
 * mapped 4 KiB block where writes are dense, 14 plus slack where they are
 * scattered) says where the newest copy of each block lives;
 * checkpoints write that map out so that opening replays only the log
 * written since. Garbage collection moves the live blocks out of mostly
 * dead segments so the segments can be reused (most of them after a
 * backing flush, without waiting for a checkpoint). Checkpoints are
 * spaced by the log written since the last one, ckpt_ratio times that
 * checkpoint's size, so that their share of the bytes written stays
 * around 1/ckpt_ratio; the replay after a crash is as long. Small
 * records are held back briefly (batch_linger_us) for more writes to
 * join, because each record costs a 4 KiB header. Write amplification is
 * backing_bytes_written / client_bytes_written in the stats. The exact
 * on-disk format is in docs/on-disk-format.md.
 *
 * Write stages. A chunk whose new content is all zero is not stored (it
 * is unmapped and reads back as zeros). With opts.compress, every other
 * chunk is LZ4-compressed (compress/) when that saves at least one 512 B
 * sector, and payloads are packed at sector granularity, so the map
 * entry also says where in its block a payload starts, how long it is
 * and whether it is LZ4. Reads check the CRC32C of the stored bytes, then
 * decompress. opts.compress_mode may take LZ4 off the write path (always,
 * or while the reactor staging a write is saturated): such a chunk is
 * stored raw and marked DEFERRED, and compressed when garbage collection
 * moves it, which idle compaction does for the segments holding the most
 * deferred chunks once the volume has had no write for a while. With opts.dedup, a full chunk whose fingerprint the index
 * knows and whose bytes equal the stored payload's is mapped to that
 * payload instead of being stored again (reference counts are derived from
 * the map; see docs/on-disk-format.md).
 *
 * Units. The map works in 4 KiB chunks. A volume formatted with 512 B
 * logical blocks maps 8 of them per chunk and turns a write that covers
 * part of a chunk into read-modify-write of that chunk. Every payload read
 * is checked against the CRC32C kept in the map; a mismatch fails the I/O
 * with -EILSEQ and is counted, the data never reaches the caller's buffer.
 *
 * Durability. With write_cache (the default, WCE=1) a write completes once
 * its record is written to the backing volume; a completed TND_IO_FLUSH
 * makes every write that completed before it stable, a TND_IO_FUA write is
 * stable when it completes. Without write_cache every write is stable when
 * it completes. Flushes that arrive together share one backing flush
 * (group commit). Recovery restores a prefix of the log: everything stable
 * is in it, nothing after a torn record is.
 *
 * Errors. A failed write or flush on the backing volume fail-stops the
 * device: info.state becomes TND_VOLUME_FAILED, later writes and flushes
 * fail with -EROFS, reads go on. Running out of log space (the volume is
 * thin, so the promise can exceed the backing store) fails writes with
 * -ENOSPC once garbage collection cannot free anything; reads go on.
 *
 * Threading. A lsfs volume belongs to its home reactor: the map, the
 * segments and the log head are touched only there. I/O submitted from
 * another reactor is forwarded by message and completed back on the
 * submitter's reactor. Garbage collection and checkpoints run on the home
 * reactor from a timer, between I/Os, and never wait for them. A write's
 * CPU work (zero test, LZ4, fingerprint, CRC) is done before it reaches
 * the home reactor's append when opts.helpers names the reactors (see
 * there): on the submitter, a large write's second half at the same time
 * on a partner reactor; the home reactor still starts the writes of each
 * submitter in the order they were submitted (a write waits behind an
 * earlier one whose half is still being staged), so overlapping writes
 * land in submission order.
 *
 * Opening, formatting, checking and destroying are synchronous (start-up
 * and shutdown, not the hot path). Their backing I/O goes through a
 * private reactor of the calling thread, so they may be called from any
 * thread, whether @home is already running on its own thread (the daemon)
 * or is polled by the caller (tests). Destroying first lets the log
 * writer, GC and checkpoints in flight land — on @home, by message when
 * @home runs on another thread (it must still be running then) — and then
 * writes a final checkpoint, which first makes every write durable, so a
 * clean close leaves nothing to replay.
 *
 * Memory: the map (measured: 12.3 bytes per mapped 4 KiB block written
 * densely, 15.9 at random over a quarter of a LUN, 28 at random over
 * 0.4 % of one; plus 8 bytes per promised 4 MiB), up to three segment
 * buffers of segment_size each, one
 * more for GC, and during a checkpoint a copy of the map (24 bytes per
 * mapped block). With dedup: the fingerprint index (its whole budget,
 * opts.dedup_index_bytes, 24 bytes per indexed block), the reference
 * table (11-21 bytes per shared payload), a 512 KiB cache of recently
 * verified candidates, and per write in flight 8 KiB per full chunk that
 * has a candidate (its stored bytes, for the compare). With compression
 * or dedup and opts.helpers: per write staged before home, 4 KiB and 40
 * bytes per chunk until it completes (a 256 KiB write: 266 KiB), and an
 * LZ4 state (16 KiB) per helper reactor that has compressed for it.
 *
 * Ownership. tnd_lsfs_open() takes ownership of @backing when it succeeds
 * (tnd_volume_destroy() of the lsfs volume destroys it); on failure the
 * caller still owns it. tnd_lsfs_format() and tnd_lsfs_check() borrow it.
 *
 * From the daemon's config ({"type": "lsfs", "path", "size", "block_size"}):
 *
 *     struct tnd_flat_opts fo = { .path = path, .size = backing_bytes, .block_size = 512 };
 *     tnd_flat_open(&fo, &flat);
 *     struct tnd_lsfs_opts o;
 *     tnd_lsfs_opts_default(&o);
 *     o.size = size; o.block_size = block_size; o.create_if_blank = true;
 *     tnd_lsfs_open(flat, reactors[i], &o, &vol);   // on failure: tnd_volume_destroy(flat)
 *
 * The backing file's size is the physical space; o.size is the promise
 * shown to initiators and may be larger (thin).
 */
#ifndef TND_LSFS_H
#define TND_LSFS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tnd_volume.h"

struct tnd_reactor;

/* The format version this build writes and the newest it can read. */
#define TND_LSFS_FORMAT_MAJOR 1
#define TND_LSFS_FORMAT_MINOR 0

/*
 * When a write's LZ4 runs (with compress on). INLINE: always on the write
 * path. DEFERRED: never; every non-zero chunk is stored raw (still
 * zero-elided, CRC'd, fingerprinted and deduplicated) with the DEFERRED
 * mark, and compressed when GC or idle compaction moves it (post-process).
 * ADAPTIVE: inline while the reactor staging the write keeps up, deferred
 * while write stages take more than half of its time (measured over 20 ms
 * windows; a saturated reactor defers for 200 ms, then measures again).
 */
enum tnd_lsfs_compress_mode {
	TND_LSFS_COMPRESS_INLINE = 0,
	TND_LSFS_COMPRESS_ADAPTIVE = 1,
	TND_LSFS_COMPRESS_DEFERRED = 2,
};

/* The index warm-up's default rate under client load, and the highest
 * rate accepted (MB/s; see opts.dedup_warmup_mbps). */
#define TND_LSFS_WARMUP_MBPS_DEFAULT 200u
#define TND_LSFS_WARMUP_MBPS_MAX 100000u

/* "inline", "adaptive", "deferred"; NULL for anything else. */
const char *tnd_lsfs_compress_mode_name(enum tnd_lsfs_compress_mode m);
/* 0 and *out, or -EINVAL for an unknown name. */
int tnd_lsfs_compress_mode_parse(const char *name, enum tnd_lsfs_compress_mode *out);

struct tnd_lsfs_opts {
	/* Format-time choices (ignored when opening a formatted volume). */
	uint64_t size;              /* logical size in bytes (the thin promise), <= 64 TiB */
	uint32_t block_size;        /* logical block size: 512 or 4096; default 4096 */
	uint32_t segment_size;      /* bytes, a multiple of 4 KiB, >= 32 KiB; default 4 MiB */

	/* Run-time choices. */
	bool create_if_blank;       /* tnd_lsfs_open() formats a blank backing store */
	bool write_cache;           /* WCE=1 (see above); default true */
	uint32_t gc_interval_ms;    /* background GC/checkpoint tick; default 100; 0 = manual */
	uint32_t ckpt_segments;     /* checkpoint after at least this many segments filled; default 8 */
	uint32_t ckpt_ratio;        /* ... and once the log written since the last checkpoint is
				       this many times that checkpoint's size; default 64; at the
				       latest after a quarter of the segments */
	uint32_t gc_free_low;       /* GC works while fewer free segments; 0 (default): 1%, 4..64 */
	uint32_t batch_linger_us;   /* an idle writer holds a small record up to this long while
				       more writes keep joining it (never for FUA, write-through
				       or a waiting checkpoint); default 200; 0 = never */
	uint32_t log_writes;        /* log writes in flight, 1..8; default 1: through the
				       page cache a write completes at once and one at a
				       time batches best; a backing written with O_DIRECT
				       (flat's direct_writes) needs several (the daemon: 4) */
	bool gc_mix;                /* GC appends moved blocks among the clients' writes (the
				       behaviour before hot/cold separation) instead of staging
				       them for GC-only segments; default false; for comparison */
	/*
	 * Store new 4 KiB blocks LZ4-compressed when that saves at least one
	 * 512 B sector (default false). Opening a store with it on marks the
	 * store (an incompatible feature bit, set once, for good) so that an
	 * older build refuses it; a store formatted with it on also gets a
	 * checkpoint area with room for more mapped blocks than it has slots.
	 * Turning it off later affects new writes only.
	 */
	bool compress;
	/*
	 * With compress: when LZ4 runs (above); default INLINE (the daemon's
	 * default is ADAPTIVE). Deferred blocks carry a flag older builds do
	 * not know, so the store gets its own incompatible feature bit, but
	 * only when the first block is about to be deferred: that block is
	 * compressed inline and starts a superblock update on the home
	 * reactor (both copies, flushed); blocks are deferred once it is
	 * durable (stats.deferred_marked). A store whose mode never actually
	 * deferred stays readable by older builds. Ignored without compress. Deferred blocks are compressed by GC's moves and
	 * by idle compaction: once the volume has had no write for
	 * compact_idle_ms (default 100; 0: never), passes move the segments
	 * holding the most deferred blocks.
	 */
	enum tnd_lsfs_compress_mode compress_mode;
	uint32_t compact_idle_ms;
	/*
	 * Inline dedup of 4 KiB blocks (default false): a block whose XXH3-128
	 * fingerprint the index knows is compared byte for byte with the
	 * stored one and, when equal, shared instead of stored again. Like
	 * compress it marks the store (its own feature bit) on first open
	 * with it, and a store formatted with it gets the larger checkpoint
	 * area (up to 8 mapped blocks per 4 KiB slot, for dedup and
	 * compression together). dedup_index_bytes is the fingerprint index's
	 * RAM budget (24 bytes per indexed block; 0: 24 per data slot of the
	 * store, at most 64 MiB); when it is full the index evicts cold
	 * entries, dedup finds less, memory stays put.
	 */
	bool dedup;
	uint64_t dedup_index_bytes;
	/*
	 * The index warm-up's read rate while clients do I/O, in MB/s (10^6
	 * bytes a second; default TND_LSFS_WARMUP_MBPS_DEFAULT; 0: unlimited,
	 * back to back even under load). While the volume is idle the walk
	 * always goes back to back. Changeable live: tnd_lsfs_set_warmup_rate.
	 */
	uint32_t dedup_warmup_mbps;
	/*
	 * Reactors that may run a write's CPU stages (zero detection, LZ4,
	 * the XXH3 fingerprint and the payload's CRC32C) before it reaches
	 * the home reactor (the array is copied; the reactors must outlive
	 * the volume and keep running until it is destroyed). A write
	 * submitted on one of them is staged there, in lsfs_submit, unless
	 * it is a small one submitted on @home (staged at the append); one of
	 * at least offload_min_bytes has its second half staged at the same
	 * time on another of them (round-robin, @home included), which
	 * reports to @home by message. The home reactor then only maps,
	 * deduplicates and appends. NULL/0 (the default): every stage runs
	 * on @home, at the append.
	 */
	struct tnd_reactor *const *helpers;
	unsigned nhelpers;
	uint32_t offload_min_bytes; /* default 64 KiB */
};

/* Fill @o with the defaults above (size 0: must be set to format). */
void tnd_lsfs_opts_default(struct tnd_lsfs_opts *o);

/*
 * Write an empty lsfs onto @backing (borrowed) using opts->size,
 * block_size and segment_size. Everything on it is lost. Synchronous.
 * Returns 0 or -errno (-EINVAL: bad options, a size over 64 TiB, or a
 * backing volume too small for even a few segments).
 */
int tnd_lsfs_format(struct tnd_volume *backing, const struct tnd_lsfs_opts *opts);

/*
 * Open the lsfs on @backing: read the superblock and the newest checkpoint,
 * replay the log written after it, write a fresh checkpoint. Returns 0 and
 * *out (owned by the caller, owning @backing) or -errno:
 *   -ENODATA          blank backing store and !opts->create_if_blank
 *   -EPROTONOSUPPORT  written by a newer format version (refused, untouched)
 *   -EUCLEAN          not an lsfs, or its metadata is damaged beyond recovery
 *   -EIO              the backing store failed
 */
int tnd_lsfs_open(struct tnd_volume *backing, struct tnd_reactor *home,
		  const struct tnd_lsfs_opts *opts, struct tnd_volume **out);

/* Index warm-up state (tnd_lsfs_stats.index_warmup). */
enum tnd_lsfs_warmup {
	TND_LSFS_WARMUP_OFF = 0,      /* dedup off, or stopped (fail-stop, dedup switched off) */
	TND_LSFS_WARMUP_RUNNING = 1,
	TND_LSFS_WARMUP_DONE = 2,
};

/* "off", "running", "done". */
const char *tnd_lsfs_warmup_name(enum tnd_lsfs_warmup w);

/* Counters, for stats_json and tests. Home reactor only. */
struct tnd_lsfs_stats {
	uint64_t reads, writes, flushes, unmaps;
	uint64_t crc_errors;          /* payload reads that failed their CRC32C */
	uint64_t batches;             /* backing writes issued by the log */
	uint64_t backing_flushes;
	uint64_t records;
	uint64_t rmw;                 /* partial-chunk writes (512 B volumes) */
	uint64_t gc_passes, gc_moved_blocks, gc_freed_segments;
	uint64_t checkpoints;
	uint64_t reclaimed_segments;  /* dead segments reused after a flush, without a checkpoint */
	/* Write amplification = backing_bytes_written / client_bytes_written. */
	uint64_t client_bytes_written; /* bytes of client WRITEs that completed */
	uint64_t backing_bytes_written; /* every byte lsfs wrote to its backing volume */
	uint64_t gc_bytes_written;    /* of those: payloads GC moved */
	uint64_t gc_segments_written; /* GC-only segments (cold data moved by GC, no client write) */
	uint64_t gc_mixed_blocks;     /* blocks GC moved into a segment of client writes (fallback) */
	uint64_t ckpt_bytes_written;  /* of those: checkpoints */
	uint64_t mapped_blocks;       /* 4 KiB chunks with data */
	uint64_t map_bytes;           /* RAM used by the block map */
	uint64_t logical_bytes_written;  /* bytes of WRITE commands accepted */
	uint64_t stored_bytes;        /* bytes the mapped payloads occupy (whole 512 B sectors) */
	uint64_t zero_blocks;         /* 4 KiB chunks written as all zero: unmapped, not stored */
	uint64_t compressed_blocks;   /* chunks written LZ4-compressed */
	uint64_t raw_blocks;          /* chunks written as they are (deferred ones included) */
	uint64_t deferred_writes;     /* of those: chunks stored raw with compression deferred */
	uint64_t deferred_blocks;     /* mapped chunks whose payload is still deferred (now) */
	uint64_t compacted_blocks;    /* deferred payloads compressed when GC/compaction moved them */
	uint64_t compacted_raw_blocks; /* deferred payloads moved raw (LZ4 saved no sector) */
	uint64_t compacted_bytes_saved; /* stored bytes those compressions saved (whole sectors) */
	uint64_t compaction_passes;   /* GC passes whose victim was picked for its deferred blocks */
	bool deferred_marked;         /* the store is marked (durably) as holding DEFERRED
					 records: set by the first chunk a mode wanted deferred,
					 kept for good; before it, such chunks are compressed */
	uint64_t map_capacity;        /* most chunks a checkpoint can map */
	uint64_t dedup_hits;          /* chunks written as a share of a stored payload */
	uint64_t dedup_saturated;     /* shares refused at the reference count limit */
	uint64_t dup_fp_only;         /* chunks staged off home by fingerprint only, in a
					 duplicate stream (LZ4 and CRC left to home if unshared) */
	uint64_t verify_mismatches;   /* index candidates whose bytes differed */
	uint64_t shared_payloads;     /* payloads mapped by more than one chunk */
	uint64_t unique_blocks;       /* payloads mapped (mapped_blocks less the extra shares) */
	uint64_t index_entries;       /* blocks in the fingerprint index */
	uint64_t index_bytes;         /* RAM of the index (its whole budget) */
	uint64_t refs_bytes;          /* RAM of the reference-count table */
	/* Index warm-up (dedup on): the index is rebuilt from the log after
	 * open, or after dedup is switched on live; see tnd_lsfs_warmup_run. */
	uint32_t index_warmup;        /* enum tnd_lsfs_warmup */
	uint64_t warmup_segments;     /* segments the walk set out to scan */
	uint64_t warmup_scanned;      /* of those, scanned (or skipped: emptied, reused, GC's) */
	uint64_t warmup_entries;      /* index entries it added */
	uint64_t warmup_ms;           /* from its start to its end (or to now, while running) */
	uint32_t segments, free_segments;
	uint32_t segment_size;
};

void tnd_lsfs_get_stats(struct tnd_volume *vol, struct tnd_lsfs_stats *out);

/*
 * Start a garbage collection pass (followed by what frees the segments it
 * emptied: a backing flush, or a checkpoint when replay would still read
 * them) / a checkpoint now; home reactor only. @cb(arg) runs on
 * the home reactor when it has finished, possibly before this call returns
 * when there was nothing to do. For tests and for an operator's "compact
 * now". Returns 0, or -EBUSY when one is already running, -EROFS when the
 * volume has failed.
 */
int tnd_lsfs_gc_run(struct tnd_volume *vol, tnd_done_cb cb, void *arg);
int tnd_lsfs_checkpoint_run(struct tnd_volume *vol, tnd_done_cb cb, void *arg);

/*
 * Index warm-up. The on-disk format holds no fingerprints, so a dedup
 * volume's index starts empty at open; a background walk on the home
 * reactor then reads the stored segments, newest first, one segment read
 * in flight, and indexes every payload that is still live (see lsfs.c,
 * "Index warm-up"). It runs from the background tick (opts.gc_interval_ms):
 * while clients do I/O at opts.dedup_warmup_mbps (each tick grants the
 * bytes of its interval; segments are read back to back while they last,
 * a segment larger than that is paid off over the next ticks), back to
 * back while they are idle, never during a GC pass or while writes wait
 * for space. It stops
 * early once the index is about full (2 % of its inserts evict; the
 * budget never grows). Switching dedup on live starts it again; switching
 * it off or a fail-stop ends it.
 *
 * tnd_lsfs_warmup_run: scan up to @max_segments (0: all that are left)
 * now, whatever the load; home reactor only. @cb(arg) runs on the home
 * reactor when they are scanned or the walk has ended, possibly before
 * this call returns. For tests (gc_interval_ms 0 has no tick) and for an
 * operator. 0, or -EBUSY when a run is already going on.
 *
 * tnd_lsfs_start_background: arm the background tick now (home reactor
 * only) rather than at the volume's first I/O, so that the warm-up of a
 * freshly opened volume starts before its first client does.
 */
int tnd_lsfs_warmup_run(struct tnd_volume *vol, uint32_t max_segments, tnd_done_cb cb, void *arg);
/*
 * Change opts.dedup_warmup_mbps of the open volume @vol live (from any
 * thread; the next background tick applies it). 0, or -EINVAL (not an
 * lsfs volume, or @mbps over TND_LSFS_WARMUP_MBPS_MAX).
 */
int tnd_lsfs_set_warmup_rate(struct tnd_volume *vol, uint32_t mbps);
void tnd_lsfs_start_background(struct tnd_volume *vol);

/*
 * Turn LZ4 compression and inline dedup on or off for new writes of the
 * open volume @vol, without a restart (what opening with opts.compress /
 * opts.dedup would do, live). Turning a feature on first marks the store
 * with its incompatible feature bit, durably, before any record that
 * needs it; the dedup index starts empty (blocks written from then on
 * are found) with the budget opts.dedup_index_bytes gave at open. Turning
 * compression off stores new writes plain; packed payloads still read.
 * Turning dedup off stops deduplicating new writes and frees the index;
 * blocks already shared stay shared and counted. Writes in flight may
 * land either way. The setting is not stored in the volume: reopen with
 * the same opts to keep it.
 *
 * Synchronous, not concurrently with itself, open or destroy: on the
 * home reactor's thread (or the thread that polls it; it polls home while
 * the deferred mark's superblock update is in flight), or from any other
 * thread while the home reactor runs (the swap is a message to it).
 * Returns 0, -EINVAL (not an lsfs volume), -EROFS (the volume has
 * failed), -ENOMEM (nothing changed), or the -errno of the superblock
 * write, which fail-stops the volume like any backing write error.
 */
int tnd_lsfs_set_features(struct tnd_volume *vol, bool compress, bool dedup);

/*
 * Change opts.compress_mode of the open volume @vol live, like
 * tnd_lsfs_set_features (same threading, same returns). It writes no
 * feature bit: the first block the new mode wants deferred marks the
 * store (see opts.compress_mode). Blocks already
 * deferred stay deferred until they are moved; with INLINE, idle
 * compaction still compresses them.
 */
int tnd_lsfs_set_compress_mode(struct tnd_volume *vol, enum tnd_lsfs_compress_mode mode);

/* Result of the offline checker. */
struct tnd_lsfs_check_result {
	uint64_t errors;              /* inconsistencies: non-zero means not clean */
	uint64_t warnings;            /* harmless oddities (a torn old checkpoint) */
	uint64_t records;             /* records parsed in live segments */
	uint64_t mapped_blocks;
	uint64_t replayed_records;
	uint64_t shared_blocks;       /* payloads mapped by more than one block (dedup) */
	uint64_t reused_segments;     /* replay went on in segments the checkpoint lists as used
					 (reused after a flush, without a checkpoint) */
	uint64_t gc_segments;         /* used segments whose records all hold GC's moves only */
	uint64_t gc_replayed_records; /* replayed records of such segments */
	uint64_t deferred_blocks;     /* mapped chunks whose payload is DEFERRED */
};

/*
 * Check the lsfs on @backing (borrowed, only read) offline: superblocks,
 * checkpoints, the replay of the log, every record's CRC in used segments,
 * every mapped block against its record and its CRC, and segment usage
 * counts. Prints a human report to @report (may be NULL). Synchronous.
 * Returns 0 when it could run (see res->errors) or -errno when the backing
 * store could not be read.
 */
int tnd_lsfs_check(struct tnd_volume *backing, FILE *report, struct tnd_lsfs_check_result *res);

#endif
