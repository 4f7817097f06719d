/*
 * Unit tests for dedup/: the fingerprint index (hint protocol, fixed
 * budget, CLOCK eviction, removal and moves by pba, against a model) and
 * the reference-count table (implicit single reference, saturation,
 * iteration, against a model).
 *
 * This file is built twice: test_dedup with the library as shipped, and
 * test_dedup_fp12 with the library's sources compiled in under
 * -DTND_DEDUP_FP_BITS=12, where fingerprints collide all the time. The
 * index-structure tests use synthetic fingerprints and run the same in
 * both; shares_only_verified_blocks writes real data through the whole
 * protocol and checks that no write was ever mapped to foreign data.
 */
#include <errno.h>
#include <stdbool.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <xxhash.h>

#include "tnd_dedup.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(2685821657736338717);
}

/* A synthetic, well-spread fingerprint for number @i. */
static struct tnd_dedup_fp fp_of(uint64_t i)
{
	uint64_t s = i * 2 + 1, t = i ^ UINT64_C(0xdeadbeefcafef00d);
	rnd(&s);
	rnd(&t);
	return (struct tnd_dedup_fp){ .lo = rnd(&s), .hi = rnd(&t) };
}

static void fingerprint_width(void **state)
{
	(void)state;
	unsigned char blk[4096];
	struct tnd_dedup_fp a, b;

	assert_int_equal(tnd_dedup_fp_bits(), TND_DEDUP_FP_BITS);
	memset(blk, 0x5a, sizeof(blk));
	tnd_dedup_fingerprint(blk, sizeof(blk), &a);
	tnd_dedup_fingerprint(blk, sizeof(blk), &b);
	assert_memory_equal(&a, &b, sizeof(a));
#if TND_DEDUP_FP_BITS == 12
	assert_int_equal(a.hi, 0);
	assert_true(a.lo < 4096);
#else
	blk[4095] ^= 1;
	tnd_dedup_fingerprint(blk, sizeof(blk), &b);
	assert_memory_not_equal(&a, &b, sizeof(a));
#endif
}

/*
 * The fingerprint is XXH3-128 whichever code path computes it: the
 * library's portable entry point (this file does not include the x86
 * dispatcher) agrees with tnd_dedup_fingerprint() on every length around
 * the vector loops' strides and tails, at every alignment.
 */
static void fingerprint_is_xxh3_128(void **state)
{
	(void)state;
	static unsigned char buf[8192 + 64];
	uint64_t x = 0x243f6a8885a308d3ull;

	for (size_t i = 0; i < sizeof(buf); i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (unsigned char)(x >> 56);
	}
	static const size_t lens[] = { 0, 1, 3, 16, 17, 128, 129, 240, 241, 255, 256, 1023, 1024,
				       1025, 4095, 4096, 4097, 8192 };
	for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
		for (size_t off = 0; off < 64; off += 13) {
			struct tnd_dedup_fp fp;
			XXH128_hash_t h = XXH3_128bits(buf + off, lens[l]);
			tnd_dedup_fingerprint(buf + off, lens[l], &fp);
#if TND_DEDUP_FP_BITS == 12
			assert_int_equal(fp.lo, h.low64 & 0xfff);
			assert_int_equal(fp.hi, 0);
#else
			assert_int_equal(fp.lo, h.low64);
			assert_int_equal(fp.hi, h.high64);
#endif
		}
	}
}

static void insert_lookup_confirm_reject(void **state)
{
	(void)state;
	struct tnd_dedup *d;
	struct tnd_dedup_stats st;
	uint64_t pba;

	assert_int_equal(tnd_dedup_create(TND_DEDUP_MIN_BUDGET - 1, &d), -EINVAL);
	assert_int_equal(tnd_dedup_create(64 << 10, &d), 0);

	struct tnd_dedup_fp a = fp_of(1), b = fp_of(2);
	assert_int_equal(tnd_dedup_lookup(d, &a, &pba), -ENOENT);
	tnd_dedup_insert(d, &a, 100);
	tnd_dedup_insert(d, &b, 200);
	assert_int_equal(tnd_dedup_lookup(d, &a, &pba), 0);
	assert_int_equal(pba, 100);
	tnd_dedup_confirm(d, &a, 100);
	assert_int_equal(tnd_dedup_lookup(d, &b, &pba), 0);
	assert_int_equal(pba, 200);
	/* The caller compared and found other data: the hint is dropped. */
	tnd_dedup_reject(d, &b, 200);
	assert_int_equal(tnd_dedup_lookup(d, &b, &pba), -ENOENT);
	/* Inserting the same pair twice changes nothing. */
	tnd_dedup_insert(d, &a, 100);
	/* The same fingerprint stored again elsewhere (e.g. refcount saturated):
	 * the index follows the new copy. */
	tnd_dedup_insert(d, &a, 300);
	assert_int_equal(tnd_dedup_lookup(d, &a, &pba), 0);
	assert_int_equal(pba, 300);
	/* A pba rewritten with other data: its old fingerprint is forgotten. */
	tnd_dedup_insert(d, &b, 300);
	assert_int_equal(tnd_dedup_lookup(d, &a, &pba), -ENOENT);
	assert_int_equal(tnd_dedup_lookup(d, &b, &pba), 0);
	assert_int_equal(pba, 300);

	tnd_dedup_get_stats(d, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.lookups, 7);
	assert_int_equal(st.candidates, 4);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.verify_mismatches, 1);
	assert_int_equal(st.inserts, 5);
	assert_int_equal(st.evictions, 0);
	assert_true(st.bytes <= 64 << 10);
	tnd_dedup_destroy(d);
	tnd_dedup_destroy(NULL);
}

static void remove_and_move_by_pba(void **state)
{
	(void)state;
	struct tnd_dedup *d;
	struct tnd_dedup_stats st;
	uint64_t pba;
	struct tnd_dedup_fp a = fp_of(10), b = fp_of(11);

	assert_int_equal(tnd_dedup_create(64 << 10, &d), 0);
	tnd_dedup_insert(d, &a, 7);
	tnd_dedup_insert(d, &b, 8);
	/* lsfs freed pba 7. */
	assert_true(tnd_dedup_remove_pba(d, 7));
	assert_false(tnd_dedup_remove_pba(d, 7));
	assert_int_equal(tnd_dedup_lookup(d, &a, &pba), -ENOENT);
	/* GC moved 8 to 9. */
	assert_true(tnd_dedup_move_pba(d, 8, 9));
	assert_false(tnd_dedup_move_pba(d, 8, 10));
	assert_int_equal(tnd_dedup_lookup(d, &b, &pba), 0);
	assert_int_equal(pba, 9);
	assert_false(tnd_dedup_remove_pba(d, 8));
	/* A move onto a pba the index still had drops the stale entry. */
	tnd_dedup_insert(d, &a, 20);
	assert_true(tnd_dedup_move_pba(d, 9, 20));
	assert_int_equal(tnd_dedup_lookup(d, &a, &pba), -ENOENT);
	assert_int_equal(tnd_dedup_lookup(d, &b, &pba), 0);
	assert_int_equal(pba, 20);
	assert_true(tnd_dedup_remove_pba(d, 20));
	tnd_dedup_get_stats(d, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.removes, 2);
	tnd_dedup_destroy(d);
}

/*
 * Random inserts, removals and moves against a model. With @exact the
 * table is big enough never to evict and every lookup must give exactly
 * the model's answer; this walks the reverse table's deletion through
 * every shape of probe run. Without, a small table evicts all the time and
 * wraps around its ends: the index may have forgotten anything, but what
 * it answers must be the model's, and each of its entries must be a pair
 * the model still holds.
 */
static void run_model(uint64_t budget, uint64_t n, int ops, bool exact)
{
	struct tnd_dedup *d;
	struct tnd_dedup_stats st;
	/* model: fingerprint number -> pba (0: absent); pba -> fingerprint + 1 */
	uint64_t *pba_of = calloc(n, sizeof(uint64_t));
	uint64_t *fp_at = calloc(4 * n + 1, sizeof(uint64_t));
	uint64_t s = 77, pba, entries = 0;

	assert_non_null(pba_of);
	assert_non_null(fp_at);
	assert_int_equal(tnd_dedup_create(budget, &d), 0);
	for (int op = 0; op < ops; op++) {
		uint64_t i = rnd(&s) % n, p = 1 + rnd(&s) % (4 * n);
		struct tnd_dedup_fp fp = fp_of(i);
		bool had;
		switch (rnd(&s) % 4) {
		case 0: /* insert i at p */
		case 1:
			if (fp_at[p] && fp_at[p] - 1 != i) {     /* p held other data */
				pba_of[fp_at[p] - 1] = 0;
				entries--;
			}
			if (pba_of[i] && pba_of[i] != p)
				fp_at[pba_of[i]] = 0;
			else if (!pba_of[i])
				entries++;
			pba_of[i] = p;
			fp_at[p] = i + 1;
			tnd_dedup_insert(d, &fp, p);
			break;
		case 2: /* free p */
			had = tnd_dedup_remove_pba(d, p);
			assert_true(exact ? had == (fp_at[p] != 0) : !had || fp_at[p]);
			if (fp_at[p]) {
				pba_of[fp_at[p] - 1] = 0;
				fp_at[p] = 0;
				entries--;
			}
			break;
		case 3: { /* move p to q */
			uint64_t q = 1 + rnd(&s) % (4 * n);
			if (q == p)
				break;
			if (fp_at[q]) {
				pba_of[fp_at[q] - 1] = 0;
				fp_at[q] = 0;
				entries--;
			}
			had = tnd_dedup_move_pba(d, p, q);
			assert_true(exact ? had == (fp_at[p] != 0) : !had || fp_at[p]);
			if (fp_at[p]) {
				pba_of[fp_at[p] - 1] = q;
				fp_at[q] = fp_at[p];
				fp_at[p] = 0;
			}
			break;
		}
		}
		if (op % 1000 == 0 || op == ops - 1) {
			uint64_t found = 0;
			for (uint64_t k = 0; k < n; k++) {
				struct tnd_dedup_fp f = fp_of(k);
				int rc = tnd_dedup_lookup(d, &f, &pba);
				if (rc == 0) {
					assert_int_equal(pba, pba_of[k]);
					found++;
				} else {
					assert_int_equal(rc, -ENOENT);
					assert_true(!exact || !pba_of[k]);
				}
			}
			tnd_dedup_get_stats(d, &st);
			assert_int_equal(st.entries, found);
			assert_true(st.entries <= st.slots);
		}
	}
	tnd_dedup_get_stats(d, &st);
	if (exact) {
		assert_int_equal(st.entries, entries);
		assert_int_equal(st.evictions, 0);
	} else {
		assert_true(st.evictions > 0);
	}
	tnd_dedup_destroy(d);
	free(pba_of);
	free(fp_at);
}

static void index_matches_model(void **state)
{
	(void)state;
	/* 64 slots per fingerprint: a 16-slot window never fills. */
	run_model(3000 * 64 * TND_DEDUP_SLOT_BYTES, 3000, 60000, true);
}

static void small_index_stays_consistent(void **state)
{
	(void)state;
	/* The smallest budget (about 165 slots) and 2000 fingerprints. */
	run_model(TND_DEDUP_MIN_BUDGET, 2000, 60000, false);
}

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

/*
 * Ten times more unique blocks than the budget holds: the accounting stays
 * within the budget, the heap does not grow after create, the table fills
 * nearly every slot, and whatever is still indexed is still right.
 */
static void budget_is_never_exceeded(void **state)
{
	(void)state;
	const uint64_t budget = 1 << 20;
	struct tnd_dedup *d;
	struct tnd_dedup_stats st;
	uint64_t pba;

	size_t heap0 = heap_in_use();
	assert_int_equal(tnd_dedup_create(budget, &d), 0);
	size_t heap1 = heap_in_use();
	tnd_dedup_get_stats(d, &st);
	const uint64_t slots = st.slots, n = 10 * slots;
	assert_true(st.bytes <= budget);
	assert_true(slots * TND_DEDUP_SLOT_BYTES > budget - 1024);
	for (uint64_t i = 0; i < n; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		tnd_dedup_insert(d, &fp, i + 1);
		if (i % slots == slots - 1) {
			tnd_dedup_get_stats(d, &st);
			assert_true(st.entries <= slots);
			assert_true(st.bytes <= budget);
			assert_int_equal(heap_in_use(), heap1);
		}
	}
	tnd_dedup_get_stats(d, &st);
	assert_int_equal(st.inserts, n);
	assert_int_equal(st.evictions, n - st.entries);
	/* Overlapping windows fill up before they evict. */
	assert_true(st.entries * 100 >= slots * 97);
	uint64_t found = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		if (tnd_dedup_lookup(d, &fp, &pba) == 0) {
			assert_int_equal(pba, i + 1);
			found++;
		}
	}
	assert_int_equal(found, st.entries);
#ifndef UNDER_ASAN
	/* The heap grew by the table's own accounting, within malloc's rounding. */
	assert_true(heap1 - heap0 <= st.bytes + 4096);
	assert_true(heap1 - heap0 + 4096 >= st.bytes);
#endif
	print_message("index: budget %llu B, %llu slots, %llu entries, %.2f B per indexed block "
		      "(heap growth %zu B)\n", (unsigned long long)budget,
		      (unsigned long long)slots, (unsigned long long)st.entries,
		      (double)st.bytes / (double)st.entries, heap1 - heap0);
	tnd_dedup_destroy(d);
}

/*
 * CLOCK keeps blocks that keep deduplicating. 200 hot blocks are confirmed
 * as they get hits; 200 others inserted at the same time never are. A
 * stream of 20 tables' worth of unique blocks then passes through.
 */
static void eviction_keeps_hot_entries(void **state)
{
	(void)state;
	struct tnd_dedup *d;
	struct tnd_dedup_stats st;
	uint64_t pba;

	assert_int_equal(tnd_dedup_create(64 << 10, &d), 0);
	tnd_dedup_get_stats(d, &st);
	const uint64_t slots = st.slots;
	for (uint64_t i = 0; i < 400; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		tnd_dedup_insert(d, &fp, i + 1);
	}
	for (uint64_t i = 1000; i < 1000 + 20 * slots; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		tnd_dedup_insert(d, &fp, i + 1);
		/* The hot blocks are written again now and then: lookup, compare
		 * (equal, here), confirm. Re-insert the ones that fell out. */
		if (i % 64 == 0) {
			for (uint64_t h = 0; h < 200; h++) {
				struct tnd_dedup_fp hf = fp_of(h);
				if (tnd_dedup_lookup(d, &hf, &pba) == 0)
					tnd_dedup_confirm(d, &hf, pba);
				else
					tnd_dedup_insert(d, &hf, h + 1);
			}
		}
	}
	unsigned hot = 0, cold = 0;
	for (uint64_t i = 0; i < 400; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		if (tnd_dedup_lookup(d, &fp, &pba) == 0)
			*(i < 200 ? &hot : &cold) += 1;
	}
	tnd_dedup_get_stats(d, &st);
	print_message("CLOCK: %u/200 hot and %u/200 cold blocks survive %llu evictions\n",
		      hot, cold, (unsigned long long)st.evictions);
	assert_true(hot >= 190);
	assert_true(cold <= 10);
	tnd_dedup_destroy(d);
}

/*
 * The whole protocol on real data, as lsfs will run it: 1500 distinct
 * blocks, each written three times in a shuffled order. In the 12-bit
 * build most lookups find some other block; the byte compare must catch
 * every one of them and no write may end up mapped to data it did not
 * write.
 */
static void shares_only_verified_blocks(void **state)
{
	(void)state;
	enum { UNIQUE = 1500, WRITES = 3 * UNIQUE, BS = 4096 };
	unsigned char *data = malloc((size_t)UNIQUE * BS);          /* the distinct blocks */
	unsigned char *disk = malloc((size_t)WRITES * BS);          /* pba -> stored block */
	uint64_t *map = malloc(WRITES * sizeof(uint64_t));          /* write -> pba */
	unsigned *order = malloc(WRITES * sizeof(unsigned));
	struct tnd_dedup *d;
	struct tnd_dedup_refs *refs;
	struct tnd_dedup_stats st;
	uint64_t s = 5, next_pba = 0, shared = 0;

	assert_non_null(data);
	assert_non_null(disk);
	assert_non_null(map);
	assert_non_null(order);
	for (size_t i = 0; i < (size_t)UNIQUE * BS / 8; i++) {
		uint64_t v = rnd(&s);
		memcpy(data + i * 8, &v, 8);
	}
	for (unsigned w = 0; w < WRITES; w++)
		order[w] = w % UNIQUE;
	for (unsigned w = WRITES - 1; w > 0; w--) {
		unsigned j = (unsigned)(rnd(&s) % (w + 1)), t = order[w];
		order[w] = order[j];
		order[j] = t;
	}

	assert_int_equal(tnd_dedup_create(1 << 20, &d), 0);
	assert_int_equal(tnd_dedup_refs_create(&refs), 0);
	for (unsigned w = 0; w < WRITES; w++) {
		const unsigned char *blk = data + (size_t)order[w] * BS;
		struct tnd_dedup_fp fp;
		uint64_t cand;

		tnd_dedup_fingerprint(blk, BS, &fp);
		if (tnd_dedup_lookup(d, &fp, &cand) == 0) {
			if (!memcmp(disk + cand * BS, blk, BS) && tnd_dedup_ref_inc(refs, cand) >= 0) {
				tnd_dedup_confirm(d, &fp, cand);
				map[w] = cand;
				shared++;
				continue;
			}
			tnd_dedup_reject(d, &fp, cand);
		}
		memcpy(disk + next_pba * BS, blk, BS);
		map[w] = next_pba;
		tnd_dedup_insert(d, &fp, next_pba++);
	}
	/* Not one wrong share. */
	for (unsigned w = 0; w < WRITES; w++)
		assert_memory_equal(disk + map[w] * BS, data + (size_t)order[w] * BS, BS);

	tnd_dedup_get_stats(d, &st);
	print_message("fp bits %u: %llu writes, %llu shared, %llu stored, %llu verify mismatches\n",
		      tnd_dedup_fp_bits(), (unsigned long long)WRITES, (unsigned long long)shared,
		      (unsigned long long)next_pba, (unsigned long long)st.verify_mismatches);
	assert_int_equal(st.hits, shared);
#if TND_DEDUP_FP_BITS == 12
	/* 1500 blocks over 4096 fingerprints: hundreds of false hints. */
	assert_true(st.verify_mismatches >= 100);
	assert_true(shared > 0);
#else
	/* Full fingerprints, nothing evicted: every repeat is found, no false hint. */
	assert_int_equal(st.verify_mismatches, 0);
	assert_int_equal(shared, WRITES - UNIQUE);
	assert_int_equal(next_pba, UNIQUE);
#endif
	tnd_dedup_refs_destroy(refs);
	tnd_dedup_destroy(d);
	free(data);
	free(disk);
	free(map);
	free(order);
}

static void refcounts_basics_and_saturation(void **state)
{
	(void)state;
	struct tnd_dedup_refs *r;
	struct tnd_dedup_refs_stats st;

	assert_int_equal(tnd_dedup_refs_create(&r), 0);
	/* Not in the table: one reference. */
	assert_int_equal(tnd_dedup_ref_get(r, 42), 1);
	assert_int_equal(tnd_dedup_ref_inc(r, 42), 2);
	assert_int_equal(tnd_dedup_ref_inc(r, 42), 3);
	assert_int_equal(tnd_dedup_ref_get(r, 42), 3);
	assert_int_equal(tnd_dedup_ref_dec(r, 42), 2);
	assert_int_equal(tnd_dedup_ref_dec(r, 42), 1);
	tnd_dedup_refs_get_stats(r, &st);
	assert_int_equal(st.entries, 0);             /* unshared again: no entry */
	assert_int_equal(tnd_dedup_ref_dec(r, 42), 0);  /* the last one: free it */

	/* Count up to the limit one by one: then inc refuses and changes nothing. */
	for (unsigned c = 2; c <= TND_DEDUP_REF_MAX; c++)
		assert_int_equal(tnd_dedup_ref_inc(r, 7), (int)c);
	assert_int_equal(tnd_dedup_ref_inc(r, 7), -EOVERFLOW);
	assert_int_equal(tnd_dedup_ref_inc(r, 7), -EOVERFLOW);
	assert_int_equal(tnd_dedup_ref_get(r, 7), TND_DEDUP_REF_MAX);
	assert_int_equal(tnd_dedup_ref_dec(r, 7), TND_DEDUP_REF_MAX - 1);
	assert_int_equal(tnd_dedup_ref_inc(r, 7), TND_DEDUP_REF_MAX);
	tnd_dedup_refs_get_stats(r, &st);
	assert_int_equal(st.saturations, 2);
	assert_int_equal(st.entries, 1);

	/* Limits of the encoding. */
	assert_int_equal(tnd_dedup_ref_inc(r, TND_DEDUP_PBA_MAX), 2);
	assert_int_equal(tnd_dedup_ref_get(r, TND_DEDUP_PBA_MAX), 2);
	assert_int_equal(tnd_dedup_ref_inc(r, TND_DEDUP_PBA_MAX + 1), -ERANGE);
	assert_int_equal(tnd_dedup_ref_dec(r, TND_DEDUP_PBA_MAX + 1), -ERANGE);
	assert_int_equal(tnd_dedup_ref_set(r, 9, TND_DEDUP_REF_MAX + 1), -EOVERFLOW);
	assert_int_equal(tnd_dedup_ref_inc(r, 0), 2);   /* pba 0 is a pba like any */
	assert_int_equal(tnd_dedup_ref_set(r, 0, 1), 0);
	assert_int_equal(tnd_dedup_ref_get(r, 0), 1);

	/* GC moves a shared block. */
	assert_int_equal(tnd_dedup_ref_set(r, 100, 5), 0);
	assert_int_equal(tnd_dedup_ref_move(r, 100, 200), 0);
	assert_int_equal(tnd_dedup_ref_get(r, 100), 1);
	assert_int_equal(tnd_dedup_ref_get(r, 200), 5);
	assert_int_equal(tnd_dedup_ref_move(r, 7, 200), -EEXIST);
	assert_int_equal(tnd_dedup_ref_move(r, 300, 301), 0);  /* unshared: nothing to move */
	tnd_dedup_refs_destroy(r);
	tnd_dedup_refs_destroy(NULL);
}

/* Random traffic against a model, through growth and many deletions; then
 * iteration must list exactly the model's shared blocks. */
static void refcounts_match_model(void **state)
{
	(void)state;
	enum { N = 50000, OPS = 400000 };
	struct tnd_dedup_refs *r;
	struct tnd_dedup_refs_stats st;
	unsigned *model = calloc(N, sizeof(unsigned));
	uint64_t s = 3, shared = 0;

	assert_non_null(model);
	for (unsigned i = 0; i < N; i++)
		model[i] = 1;
	assert_int_equal(tnd_dedup_refs_create(&r), 0);
	for (int op = 0; op < OPS; op++) {
		uint64_t p = rnd(&s) % N;
		/* Sparse, large pbas exercise the hash; the model index is p. */
		uint64_t pba = p * UINT64_C(1048573) + 5;
		if (rnd(&s) % 3) {
			assert_int_equal(tnd_dedup_ref_inc(r, pba), (int)model[p] + 1);
			model[p]++;
		} else if (model[p] > 1) {
			assert_int_equal(tnd_dedup_ref_dec(r, pba), (int)model[p] - 1);
			model[p]--;
		}
		if (op % 50000 == 0)
			for (unsigned i = 0; i < N; i++)
				assert_int_equal(tnd_dedup_ref_get(r, i * UINT64_C(1048573) + 5), model[i]);
	}
	for (unsigned i = 0; i < N; i++)
		shared += model[i] > 1;
	uint64_t cursor = 0, pba, listed = 0;
	unsigned count;
	while (tnd_dedup_refs_next(r, &cursor, &pba, &count)) {
		assert_int_equal((pba - 5) % 1048573, 0);
		assert_int_equal(model[(pba - 5) / 1048573], count);
		listed++;
	}
	assert_int_equal(listed, shared);
	tnd_dedup_refs_get_stats(r, &st);
	assert_int_equal(st.entries, shared);
	assert_true(st.entries * 4 <= st.capacity * 3);
	print_message("refs: %llu shared blocks in %llu B (%.1f B each)\n",
		      (unsigned long long)st.entries, (unsigned long long)st.bytes,
		      (double)st.bytes / (double)st.entries);
	tnd_dedup_refs_destroy(r);
	free(model);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fingerprint_width),
		cmocka_unit_test(fingerprint_is_xxh3_128),
		cmocka_unit_test(insert_lookup_confirm_reject),
		cmocka_unit_test(remove_and_move_by_pba),
		cmocka_unit_test(index_matches_model),
		cmocka_unit_test(small_index_stays_consistent),
		cmocka_unit_test(budget_is_never_exceeded),
		cmocka_unit_test(eviction_keeps_hot_entries),
		cmocka_unit_test(shares_only_verified_blocks),
		cmocka_unit_test(refcounts_basics_and_saturation),
		cmocka_unit_test(refcounts_match_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
