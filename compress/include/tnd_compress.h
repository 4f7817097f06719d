/*
 * tnd_compress.h — the LZ4 block codec lsfs calls on its write and read
 * paths.
 *
 * Purpose. lsfs stores the volume in 4 KiB chunks. Before a chunk (or a run
 * of consecutive chunks written together, an "extent") goes into the log,
 * lsfs asks this codec what to store:
 *
 *   ZERO        every byte is zero. Store nothing: lsfs maps the chunks as
 *               unmapped, which reads back as zeros.
 *   RAW         store the input as it is. Either the data does not compress
 *               well enough to be worth it, or the cheap probe (below) said
 *               it would not.
 *   COMPRESSED  store *out_len bytes of LZ4 block format (no frame, no
 *               header of ours) from @out.
 *
 * The one-sector rule. lsfs allocates space in 512 B sectors at the least,
 * so compression only pays when it frees a whole sector: a unit is stored
 * COMPRESSED only when roundup(compressed_len, 512) < len, i.e. when
 * compressed_len <= len - 512. That is enforced by giving LZ4 an output
 * capacity of len - 512: LZ4 stops as soon as its output would exceed it,
 * so data that misses the rule costs no more than compressing it once, and
 * the decision needs no second comparison that could disagree.
 *
 * Early rejection. Already-compressed or encrypted data is common (media,
 * archives, encrypted guests) and would cost a full LZ4 pass per block for
 * nothing. Before compressing, the codec samples 32 bytes at every 512 B
 * offset of each 4 KiB block (256 bytes per block, 1/16 of the data) and
 * estimates how uniform the byte distribution is from its collision count
 * (sum of squared byte counts — the Rényi order-2 entropy, which needs no
 * logarithms). Uniform-looking samples are rejected as RAW without running
 * LZ4. Why 32 bytes every 512: any compressible stretch long enough to
 * save a sector (a zero tail, a text region) is at least ~512 bytes long,
 * so it lands in some window and pulls the estimate away from uniform. What
 * the probe misses is data whose bytes look uniform yet repeat at a
 * distance the windows do not line up with (a random 1000-byte pattern
 * written four times; at a 1 KiB period the windows sample the same bytes
 * twice and the repeat shows); that is stored RAW, the price of the fast
 * path. Extents are sampled the same way, so a random 4 KiB block written
 * eight times over is caught at that period too. The probe only ever turns a COMPRESSED
 * into a RAW, never the other way round, and can be switched off.
 *
 * Extents. Sequential writes compress better as one unit (LZ4 finds matches
 * across the 4 KiB boundaries), at the price that reading any chunk of the
 * extent decompresses all of it. The same call takes any whole number of
 * 4 KiB blocks up to TND_COMPRESS_MAX_LEN; whether a run is compressed as
 * one extent or block by block is lsfs's choice. An extent is ZERO only
 * when all of it is zero; lsfs that wants to drop zero chunks from the
 * middle of a run splits the run first with tnd_compress_is_zero().
 *
 * Decompression is tnd_decompress(): it needs no context, writes at most
 * @expect_len bytes into @out and returns -EILSEQ unless the input decodes
 * to exactly @expect_len bytes. It is safe on arbitrary (corrupt or
 * hostile) input — lsfs checks a record's CRC32C first, but the codec does
 * not rely on that.
 *
 * Threading and memory. A struct tnd_compress_ctx is owned by one reactor
 * (or thread) and used without locks. It holds everything the hot path
 * needs — the LZ4 match-finder state (16 KiB) and the probe's histogram —
 * so compressing allocates nothing per block. Create one per reactor at
 * start-up.
 */
#ifndef TND_COMPRESS_H
#define TND_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TND_COMPRESS_BLOCK   4096u          /* the unit: lsfs's chunk */
#define TND_COMPRESS_SECTOR  512u           /* the saving that makes compression pay */
#define TND_COMPRESS_MAX_LEN (256u * 4096u) /* largest extent: 1 MiB */

enum tnd_compress_result {
	TND_COMPRESS_ZERO = 0,          /* all zero: store nothing */
	TND_COMPRESS_RAW = 1,           /* store the input as is */
	TND_COMPRESS_COMPRESSED = 2,    /* store *out_len bytes of @out */
};

struct tnd_compress_opts {
	/*
	 * LZ4 acceleration: 1 is LZ4's default (what `lz4 -1` uses); larger is
	 * faster and compresses less. Default 1.
	 */
	int acceleration;
	/* Run the early-rejection probe. Default true. */
	bool probe;
	/*
	 * Probe threshold, in percent of the collision count uniform random
	 * bytes would give: a sample whose collisions stay below it is
	 * rejected. Random bytes measure about 100 (99.99 % of random 4 KiB
	 * blocks stay below 137), text well over 1000. Default 150: raising it
	 * rejects more blocks that would have saved a sector (on a tar of
	 * /usr/share/doc, 110 → 150 → 200 cost 0.6 → 0.8 → 1.0 % more bytes
	 * than lz4 -1), lowering it lets more random blocks through to LZ4.
	 */
	unsigned probe_threshold_pct;
};

struct tnd_compress_stats {
	uint64_t units;                 /* calls that returned a result */
	uint64_t bytes_in;              /* input bytes of those calls */
	uint64_t bytes_out;             /* bytes to store: 0 zero, len raw, out_len compressed */
	uint64_t zero;                  /* units that were all zero */
	uint64_t raw;                   /* units stored raw (probe rejects included) */
	uint64_t compressed;            /* units stored compressed */
	uint64_t probe_rejects;         /* raw without running LZ4 */
};

struct tnd_compress_ctx;

/* Fill @o with the defaults above. */
void tnd_compress_opts_default(struct tnd_compress_opts *o);

/*
 * Create a context. @o may be NULL for the defaults; it is copied. Returns
 * 0 and *out (owned by the caller) or -EINVAL (acceleration < 1) /
 * -ENOMEM.
 */
int tnd_compress_ctx_create(const struct tnd_compress_opts *o, struct tnd_compress_ctx **out);

/* Free @c (NULL is fine). */
void tnd_compress_ctx_destroy(struct tnd_compress_ctx *c);

/*
 * Decide how to store @len bytes at @in (borrowed): a whole number of 4 KiB
 * blocks, at most TND_COMPRESS_MAX_LEN. @out (borrowed, @out_cap bytes)
 * receives the compressed form; an @out_cap of len - 512 or more lets every
 * saving count, a smaller one demands a bigger saving. *out_len is set for
 * COMPRESSED only. Returns a non-negative enum tnd_compress_result or
 * -EINVAL (bad length, no output room); @out's contents are unspecified
 * unless the result is COMPRESSED.
 */
int tnd_compress_block(struct tnd_compress_ctx *c, const void *in, size_t len,
		       void *out, size_t out_cap, size_t *out_len);

/*
 * Decode @in_len bytes of LZ4 block format at @in (borrowed) into @out
 * (borrowed, room for @expect_len bytes). Writes nothing past
 * out + expect_len. Returns 0 when the input decoded to exactly
 * @expect_len bytes; -EILSEQ otherwise (corrupt, truncated, too long or
 * too short), with @out's contents unspecified; -EINVAL for lengths no
 * compressed unit can have (0, or over TND_COMPRESS_MAX_LEN).
 */
int tnd_decompress(const void *in, size_t in_len, void *out, size_t expect_len);

/* True when all @len bytes at @buf are zero. Any length. */
bool tnd_compress_is_zero(const void *buf, size_t len);

/* Copy @c's counters into @out. */
void tnd_compress_get_stats(const struct tnd_compress_ctx *c, struct tnd_compress_stats *out);

#endif
