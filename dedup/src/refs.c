/*
 * The reference-count table; semantics in tnd_dedup.h.
 *
 * One 64-bit word per shared block: pba << 16 | count, with count >= 2, so
 * a zero word is an empty slot whatever the pba. Power-of-two linear
 * probing, grown (doubled) before it passes 3/4 full, deletion by shifting
 * later entries back so that no tombstones build up under the churn of
 * blocks becoming shared and unshared. The table does not shrink: its size
 * follows the peak number of shared blocks, which lsfs bounds anyway.
 */
#include <errno.h>
#include <stdlib.h>

#include "tnd_dedup.h"
#include "hash.h"

#define COUNT_BITS 16
#define COUNT_MASK ((UINT64_C(1) << COUNT_BITS) - 1)
#define INITIAL_CAP 1024u
#define NONE UINT64_MAX

_Static_assert(TND_DEDUP_REF_MAX == COUNT_MASK, "count width");
_Static_assert(TND_DEDUP_PBA_MAX == UINT64_MAX >> COUNT_BITS, "pba width");

struct tnd_dedup_refs {
	uint64_t *w;
	uint64_t cap;                   /* power of two */
	uint64_t n;
	uint64_t saturations;
};

static inline uint64_t w_pba(uint64_t w) { return w >> COUNT_BITS; }
static inline unsigned w_count(uint64_t w) { return (unsigned)(w & COUNT_MASK); }
static inline uint64_t w_make(uint64_t pba, unsigned count) { return pba << COUNT_BITS | count; }

static inline uint64_t home_of(uint64_t cap, uint64_t pba)
{
	return dd_mix64(pba) & (cap - 1);
}

/* Slot of @pba, or NONE. */
static uint64_t find(const struct tnd_dedup_refs *r, uint64_t pba)
{
	for (uint64_t i = home_of(r->cap, pba); r->w[i]; i = (i + 1) & (r->cap - 1))
		if (w_pba(r->w[i]) == pba)
			return i;
	return NONE;
}

static void place(uint64_t *w, uint64_t cap, uint64_t word)
{
	uint64_t i = home_of(cap, w_pba(word));

	while (w[i])
		i = (i + 1) & (cap - 1);
	w[i] = word;
}

static int grow(struct tnd_dedup_refs *r)
{
	uint64_t cap = r->cap * 2;
	uint64_t *w = calloc(cap, sizeof(*w));

	if (!w)
		return -ENOMEM;
	for (uint64_t i = 0; i < r->cap; i++)
		if (r->w[i])
			place(w, cap, r->w[i]);
	free(r->w);
	r->w = w;
	r->cap = cap;
	return 0;
}

/* Add a new entry; @pba must not be present. */
static int add(struct tnd_dedup_refs *r, uint64_t pba, unsigned count)
{
	if ((r->n + 1) * 4 > r->cap * 3) {
		int rc = grow(r);
		if (rc < 0)
			return rc;
	}
	place(r->w, r->cap, w_make(pba, count));
	r->n++;
	return 0;
}

/* Empty slot @i and shift the rest of its run back (see index.c). */
static void delete_at(struct tnd_dedup_refs *r, uint64_t i)
{
	uint64_t mask = r->cap - 1, j = i;

	for (;;) {
		j = (j + 1) & mask;
		if (!r->w[j])
			break;
		uint64_t k = home_of(r->cap, w_pba(r->w[j]));
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (stays)
			continue;
		r->w[i] = r->w[j];
		i = j;
	}
	r->w[i] = 0;
	r->n--;
}

int tnd_dedup_refs_create(struct tnd_dedup_refs **out)
{
	struct tnd_dedup_refs *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->w = calloc(INITIAL_CAP, sizeof(*r->w));
	if (!r->w)
		goto err_free_handle;
	r->cap = INITIAL_CAP;
	*out = r;
	return 0;

err_free_handle:
	free(r);
	return -ENOMEM;
}

void tnd_dedup_refs_destroy(struct tnd_dedup_refs *r)
{
	if (!r)
		return;
	free(r->w);
	free(r);
}

int tnd_dedup_ref_inc(struct tnd_dedup_refs *r, uint64_t pba)
{
	if (pba > TND_DEDUP_PBA_MAX)
		return -ERANGE;

	uint64_t i = find(r, pba);
	if (i == NONE) {
		int rc = add(r, pba, 2);
		return rc < 0 ? rc : 2;
	}
	unsigned c = w_count(r->w[i]);
	if (c >= TND_DEDUP_REF_MAX) {
		r->saturations++;
		return -EOVERFLOW;
	}
	r->w[i] = w_make(pba, c + 1);
	return (int)c + 1;
}

int tnd_dedup_ref_dec(struct tnd_dedup_refs *r, uint64_t pba)
{
	if (pba > TND_DEDUP_PBA_MAX)
		return -ERANGE;

	uint64_t i = find(r, pba);
	if (i == NONE)
		return 0;               /* it had the implicit single reference */
	unsigned c = w_count(r->w[i]);
	if (c == 2) {
		delete_at(r, i);
		return 1;
	}
	r->w[i] = w_make(pba, c - 1);
	return (int)c - 1;
}

unsigned tnd_dedup_ref_get(const struct tnd_dedup_refs *r, uint64_t pba)
{
	if (pba > TND_DEDUP_PBA_MAX)
		return 1;
	uint64_t i = find(r, pba);
	return i == NONE ? 1 : w_count(r->w[i]);
}

int tnd_dedup_ref_set(struct tnd_dedup_refs *r, uint64_t pba, unsigned count)
{
	if (pba > TND_DEDUP_PBA_MAX)
		return -ERANGE;
	if (count > TND_DEDUP_REF_MAX)
		return -EOVERFLOW;

	uint64_t i = find(r, pba);
	if (count <= 1) {
		if (i != NONE)
			delete_at(r, i);
		return 0;
	}
	if (i != NONE) {
		r->w[i] = w_make(pba, count);
		return 0;
	}
	return add(r, pba, count);
}

int tnd_dedup_ref_move(struct tnd_dedup_refs *r, uint64_t old_pba, uint64_t new_pba)
{
	if (old_pba > TND_DEDUP_PBA_MAX || new_pba > TND_DEDUP_PBA_MAX)
		return -ERANGE;
	if (old_pba == new_pba)
		return 0;
	if (find(r, new_pba) != NONE)
		return -EEXIST;

	uint64_t i = find(r, old_pba);
	if (i == NONE)
		return 0;               /* unshared: nothing recorded to move */
	unsigned c = w_count(r->w[i]);
	/* Delete then add: the count of entries is unchanged, so no growth. */
	delete_at(r, i);
	return add(r, new_pba, c);
}

bool tnd_dedup_refs_next(const struct tnd_dedup_refs *r, uint64_t *cursor,
			 uint64_t *pba, unsigned *count)
{
	for (uint64_t i = *cursor; i < r->cap; i++) {
		if (r->w[i]) {
			*pba = w_pba(r->w[i]);
			*count = w_count(r->w[i]);
			*cursor = i + 1;
			return true;
		}
	}
	*cursor = r->cap;
	return false;
}

void tnd_dedup_refs_get_stats(const struct tnd_dedup_refs *r, struct tnd_dedup_refs_stats *out)
{
	*out = (struct tnd_dedup_refs_stats){
		.entries = r->n,
		.capacity = r->cap,
		.bytes = sizeof(*r) + r->cap * sizeof(*r->w),
		.saturations = r->saturations,
	};
}
