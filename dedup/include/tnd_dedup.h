/*
 * tnd_dedup.h — inline deduplication building blocks for lsfs: a
 * fingerprint index with a fixed RAM budget, and a reference-count table.
 *
 * Purpose. When lsfs writes a 4 KiB chunk it fingerprints it
 * (tnd_dedup_fingerprint(): XXH3-128) and asks the index whether a block
 * with that fingerprint is already stored. The answer is a *hint*, never a
 * fact: the index keeps only part of each fingerprint, may have forgotten
 * or never learnt a block, and may point at a block that has since changed
 * if lsfs missed telling it. So the protocol is
 *
 *     tnd_dedup_fingerprint(buf, 4096, &fp);
 *     if (tnd_dedup_lookup(d, &fp, &pba) == 0) {
 *             read pba (and its full fingerprint from lsfs's record);
 *             if (same bytes && tnd_dedup_ref_inc(refs, pba) >= 0) {
 *                     tnd_dedup_confirm(d, &fp, pba);   -> map the chunk to pba
 *                     done;
 *             }
 *             if (not the same bytes)
 *                     tnd_dedup_reject(d, &fp, pba);    -> counted, entry dropped
 *     }
 *     write the block to a new pba;
 *     tnd_dedup_insert(d, &fp, new_pba);
 *
 * and nothing is ever shared without the byte-for-byte compare (ZFS's
 * dedup=verify, VDO's "advice"). A false hint costs a read and a compare;
 * it cannot cost data. Builds with -DTND_DEDUP_FP_BITS=12 truncate every
 * fingerprint to 12 bits so that false hints are everyday events; the unit
 * tests run that build to show the compare catches all of them.
 *
 * The index (struct tnd_dedup). An open-addressing table of 16-byte slots
 * (pba: 64 bits; a 56-bit tag of the fingerprint, an occupied bit and a
 * CLOCK reference bit: 64 bits) plus a reverse table of 4-byte slot
 * numbers keyed by pba, with twice as many entries as slots (the bits a
 * slot number does not need hold a tag of the pba, so a probe that misses
 * rarely reads a slot). A fingerprint
 * hashes to a home slot and may live in any of the TND_DEDUP_WINDOW slots
 * from there on (an overlapping set-associative window, so one full window
 * spills into its neighbours' free slots rather than failing). Slots never
 * move once filled, which keeps the reverse table's slot numbers valid;
 * the reverse table is plain linear probing at a load of at most 1/2 and
 * lets lsfs drop or move entries by pba without knowing their fingerprint.
 * A false tag match (1 in 2^56 per comparison, or a fingerprint collision)
 * is caught by lsfs comparing the full fingerprint on disk or the bytes.
 *
 * Memory budget. The byte budget given to tnd_dedup_create() buys
 * floor((budget - overhead) / 24) slots, allocated once; nothing allocates
 * afterwards, so memory never grows and inserts never fail. Because the
 * windows overlap, a full window's neighbours absorb its overflow: after as
 * many unique inserts as slots the table is about 92 % full (the first
 * evictions came from windows that filled early), and under continued
 * inserts every slot holds an entry. A full index thus costs 24 bytes of
 * RAM per indexed unique block, 26 at 92 % (tnd_dedup_get_stats():
 * bytes / entries; RSS agrees, see tests/unit/dedup/bench_dedup.c). The pages are obtained from
 * calloc, so for large budgets the kernel supplies them as the table is
 * touched and RSS follows the index's fill. Once the home window of a new
 * fingerprint is full, CLOCK evicts: slots whose reference bit is set (a
 * confirmed share since they were last passed) get a second chance, the
 * first one without is replaced. Blocks that keep deduplicating stay; a
 * stream of unique writes recycles the unused entries. A forgotten block
 * only means a missed dedup opportunity.
 *
 * Reference counts (struct tnd_dedup_refs). A separate table, keyed by pba,
 * of how many chunk mappings share a physical block. To stay compact it
 * records only *shared* blocks: a live block that is not in the table has
 * one reference. Each entry is one 64-bit word (48-bit pba, 16-bit count)
 * in a power-of-two linear-probing table kept at most 3/4 full, so a
 * shared block costs 11-21 bytes and an unshared one nothing. Counts
 * saturate at TND_DEDUP_REF_MAX: tnd_dedup_ref_inc() then refuses
 * (-EOVERFLOW) and lsfs stores a new copy instead, which the index then
 * points at. This table is authoritative, not a cache: it grows with the
 * number of shared blocks (its growth can fail with -ENOMEM; the write
 * then simply is not deduplicated), lsfs persists it in its checkpoints and
 * tandem-check recomputes it from the map. Only lsfs knows which pbas are
 * live, so the table trusts its caller: asking about a dead pba gives 1.
 *
 * pba. An opaque 64-bit value to the index (lsfs uses its 4 KiB slot
 * number); the refcount table needs it below 2^48 (1 EiB of 4 KiB slots).
 *
 * Threading. Both tables belong to the reactor that owns the lsfs volume
 * and are used only there, without locks. No call blocks or does I/O.
 */
#ifndef TND_DEDUP_H
#define TND_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Test builds truncate fingerprints to this many bits (1..128). */
#ifndef TND_DEDUP_FP_BITS
#define TND_DEDUP_FP_BITS 128
#endif

#define TND_DEDUP_WINDOW      16u       /* slots a fingerprint may live in */
#define TND_DEDUP_SLOT_BYTES  24u       /* 16 B slot + 2 x 4 B reverse entries */
#define TND_DEDUP_MIN_BUDGET  4096u     /* smallest index budget accepted */
#define TND_DEDUP_REF_MAX     65535u    /* largest reference count */
#define TND_DEDUP_PBA_MAX     ((UINT64_C(1) << 48) - 1)  /* largest pba with a refcount */

/* A block's XXH3-128 fingerprint (truncated in TND_DEDUP_FP_BITS builds). */
struct tnd_dedup_fp {
	uint64_t lo, hi;
};

/* Fingerprint @len bytes at @buf (borrowed). */
void tnd_dedup_fingerprint(const void *buf, size_t len, struct tnd_dedup_fp *out);

/* The TND_DEDUP_FP_BITS the library was built with. */
unsigned tnd_dedup_fp_bits(void);

/* ---- the fingerprint index ---- */

struct tnd_dedup;

struct tnd_dedup_stats {
	uint64_t slots;                 /* capacity */
	uint64_t entries;               /* indexed blocks now */
	uint64_t bytes;                 /* RAM held by the index, all of it */
	uint64_t lookups;
	uint64_t candidates;            /* lookups that returned a pba */
	uint64_t hits;                  /* confirmed shares */
	uint64_t verify_mismatches;     /* candidates the caller rejected */
	uint64_t inserts;
	uint64_t evictions;             /* entries dropped to make room */
	uint64_t removes;               /* entries dropped by pba (freed blocks) */
};

/*
 * Create an index that uses at most @budget_bytes of RAM (including this
 * handle). Returns 0 and *out (owned by the caller), -EINVAL when the
 * budget is under TND_DEDUP_MIN_BUDGET, or -ENOMEM.
 */
int tnd_dedup_create(uint64_t budget_bytes, struct tnd_dedup **out);

/* Free @d (NULL is fine). */
void tnd_dedup_destroy(struct tnd_dedup *d);

/*
 * A candidate for @fp (borrowed): 0 and *pba, or -ENOENT. The candidate
 * must be verified byte for byte and then confirmed or rejected.
 */
int tnd_dedup_lookup(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t *pba);

/* The caller verified that @pba holds @fp's data and shares it. */
void tnd_dedup_confirm(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t pba);

/* The candidate @pba for @fp held other data: counted, and forgotten. */
void tnd_dedup_reject(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t pba);

/*
 * @pba now holds a block with fingerprint @fp. Never fails: it replaces an
 * entry with the same fingerprint or the same pba, takes a free slot, or
 * evicts; in the rarest case it leaves the block unindexed.
 */
void tnd_dedup_insert(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t pba);

/* lsfs freed @pba: forget it. True when it was indexed. */
bool tnd_dedup_remove_pba(struct tnd_dedup *d, uint64_t pba);

/* GC moved the block at @old_pba to @new_pba. True when it was indexed. */
bool tnd_dedup_move_pba(struct tnd_dedup *d, uint64_t old_pba, uint64_t new_pba);

void tnd_dedup_get_stats(const struct tnd_dedup *d, struct tnd_dedup_stats *out);

/* ---- reference counts ---- */

struct tnd_dedup_refs;

struct tnd_dedup_refs_stats {
	uint64_t entries;               /* shared blocks (count >= 2) */
	uint64_t capacity;              /* table slots */
	uint64_t bytes;                 /* RAM held by the table */
	uint64_t saturations;           /* tnd_dedup_ref_inc() refusals at TND_DEDUP_REF_MAX */
};

/* Returns 0 and *out (owned by the caller) or -ENOMEM. */
int tnd_dedup_refs_create(struct tnd_dedup_refs **out);
void tnd_dedup_refs_destroy(struct tnd_dedup_refs *r);

/*
 * Add a reference to the live block @pba. Returns the new count (>= 2),
 * -EOVERFLOW when it is already TND_DEDUP_REF_MAX (nothing changes: store a
 * new copy), -ERANGE for a pba over TND_DEDUP_PBA_MAX, or -ENOMEM.
 */
int tnd_dedup_ref_inc(struct tnd_dedup_refs *r, uint64_t pba);

/*
 * Drop a reference to the live block @pba. Returns the new count; 0 means
 * that was the last one and lsfs frees the block (and calls
 * tnd_dedup_remove_pba()). -ERANGE for a pba over TND_DEDUP_PBA_MAX.
 */
int tnd_dedup_ref_dec(struct tnd_dedup_refs *r, uint64_t pba);

/* References to the live block @pba (1 when it is not shared). */
unsigned tnd_dedup_ref_get(const struct tnd_dedup_refs *r, uint64_t pba);

/*
 * Set @pba's count outright, when loading a checkpoint or rebuilding from
 * the map. @count <= 1 forgets the entry. 0, -EOVERFLOW (count over
 * TND_DEDUP_REF_MAX), -ERANGE or -ENOMEM.
 */
int tnd_dedup_ref_set(struct tnd_dedup_refs *r, uint64_t pba, unsigned count);

/*
 * GC moved the block at @old_pba to @new_pba: its count moves with it.
 * 0, -EEXIST (@new_pba already shared), -ERANGE.
 */
int tnd_dedup_ref_move(struct tnd_dedup_refs *r, uint64_t old_pba, uint64_t new_pba);

/*
 * Iterate over the shared blocks, for checkpoints and the checker: start
 * with *cursor = 0; each true return gives one (pba, count). Any change to
 * the table invalidates the cursor.
 */
bool tnd_dedup_refs_next(const struct tnd_dedup_refs *r, uint64_t *cursor,
			 uint64_t *pba, unsigned *count);

void tnd_dedup_refs_get_stats(const struct tnd_dedup_refs *r, struct tnd_dedup_refs_stats *out);

#endif
