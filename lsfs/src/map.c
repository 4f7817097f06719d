/*
 * The block map: 4 KiB chunk -> physical 4 KiB slot (plus where in it the
 * payload starts, its length and whether it is LZ4: aux) and payload CRC32C.
 *
 * A two-level table: a top array with one pointer per 1024 chunks (4 MiB
 * of address space), then leaves allocated on first use and freed when
 * they empty. A leaf starts sparse — sorted 2-byte offsets beside packed
 * 12-byte entries, 14 bytes per mapped chunk plus up to a quarter of slack
 * — so that random writes scattered over a large thin LUN do not pay for
 * whole leaves; once it holds LSFS_DENSE_AT chunks it turns into a plain
 * array of 1024 entries (12 bytes per chunk, lookups without a search),
 * and back when it drains below LSFS_SPARSE_AT. Never-written space costs
 * only its 8-byte top-array pointer per 4 MiB (128 MiB for the 64 TiB
 * maximum). pba 0 is the superblock, so it doubles as "unmapped".
 *
 * Growing a leaf can need memory in the middle of an append, where there
 * is no good way back; like the reactor's timer heap, running out there
 * aborts rather than continuing with a map that lies.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lsfs_int.h"

#define LSFS_DENSE_AT 768u
#define LSFS_SPARSE_AT 256u

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q && n) {
		tnd_err(LSFS_TAG, "out of memory growing the block map (%zu bytes)", n);
		abort();
	}
	return q;
}

int lsfs_map_init(struct lsfs_map *m, uint64_t nchunks)
{
	memset(m, 0, sizeof(*m));
	return lsfs_map_grow(m, nchunks);
}

int lsfs_map_grow(struct lsfs_map *m, uint64_t nchunks)
{
	uint64_t n = (nchunks + LSFS_LEAF_N - 1) >> LSFS_LEAF_BITS;
	if (n > m->nleaves) {
		struct lsfs_leaf **l = realloc(m->leaves, n * sizeof(*l));
		if (!l)
			return -ENOMEM;
		memset(l + m->nleaves, 0, (n - m->nleaves) * sizeof(*l));
		m->bytes += (n - m->nleaves) * sizeof(*l);
		m->leaves = l;
		m->nleaves = n;
	}
	if (nchunks > m->nchunks)
		m->nchunks = nchunks;
	return 0;
}

static size_t leaf_bytes(const struct lsfs_leaf *l)
{
	size_t b = sizeof(*l);
	if (l->dense)
		b += LSFS_LEAF_N * sizeof(struct lsfs_ment);
	else
		b += (size_t)l->cap * (sizeof(uint16_t) + sizeof(struct lsfs_ment));
	return b;
}

static void leaf_free(struct lsfs_map *m, struct lsfs_leaf *l)
{
	m->bytes -= leaf_bytes(l);
	free(l->idx);
	free(l->e);
	free(l);
}

void lsfs_map_free(struct lsfs_map *m)
{
	for (uint64_t i = 0; i < m->nleaves; i++)
		if (m->leaves[i])
			leaf_free(m, m->leaves[i]);
	free(m->leaves);
	memset(m, 0, sizeof(*m));
}

/* Sparse leaf: index of the first offset >= @off. */
static uint32_t lower_bound(const struct lsfs_leaf *l, uint32_t off)
{
	uint32_t lo = 0, hi = l->used;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (l->idx[mid] < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct lsfs_ment *leaf_find(const struct lsfs_leaf *l, uint32_t off)
{
	if (l->dense) {
		struct lsfs_ment *e = &l->e[off];
		return (e->pba_lo | e->pba_hi) ? e : NULL;
	}
	uint32_t i = lower_bound(l, off);
	return i < l->used && l->idx[i] == off ? &l->e[i] : NULL;
}

const struct lsfs_ment *lsfs_map_get(const struct lsfs_map *m, uint64_t c)
{
	if (c >= m->nchunks)
		return NULL;
	const struct lsfs_leaf *l = m->leaves[c >> LSFS_LEAF_BITS];
	return l ? leaf_find(l, (uint32_t)(c & (LSFS_LEAF_N - 1))) : NULL;
}

int lsfs_map_reserve(struct lsfs_map *m, uint64_t c, uint64_t n)
{
	if (n == 0)
		return 0;
	for (uint64_t i = c >> LSFS_LEAF_BITS; i <= (c + n - 1) >> LSFS_LEAF_BITS; i++) {
		if (m->leaves[i])
			continue;
		m->leaves[i] = calloc(1, sizeof(struct lsfs_leaf));
		if (!m->leaves[i])
			return -ENOMEM;
		m->bytes += sizeof(struct lsfs_leaf);
	}
	return 0;
}

static void leaf_resize(struct lsfs_map *m, struct lsfs_leaf *l, uint32_t cap)
{
	m->bytes -= leaf_bytes(l);
	l->idx = xrealloc(l->idx, (size_t)cap * sizeof(*l->idx));
	l->e = xrealloc(l->e, (size_t)cap * sizeof(*l->e));
	l->cap = cap;
	m->bytes += leaf_bytes(l);
}

static void leaf_densify(struct lsfs_map *m, struct lsfs_leaf *l)
{
	struct lsfs_ment *d = calloc(LSFS_LEAF_N, sizeof(*d));
	if (!d) {
		tnd_err(LSFS_TAG, "out of memory growing the block map");
		abort();
	}
	m->bytes -= leaf_bytes(l);
	for (uint32_t i = 0; i < l->used; i++)
		d[l->idx[i]] = l->e[i];
	free(l->idx);
	free(l->e);
	l->idx = NULL;
	l->e = d;
	l->cap = 0;
	l->dense = true;
	m->bytes += leaf_bytes(l);
}

static void leaf_sparsify(struct lsfs_map *m, struct lsfs_leaf *l)
{
	uint32_t cap = l->used + l->used / 4 + 1;
	uint16_t *idx = malloc((size_t)cap * sizeof(*idx));
	struct lsfs_ment *e = malloc((size_t)cap * sizeof(*e));
	if (!idx || !e) {
		/* Staying dense is always correct, just bigger. */
		free(idx);
		free(e);
		return;
	}
	m->bytes -= leaf_bytes(l);
	uint32_t n = 0;
	for (uint32_t off = 0; off < LSFS_LEAF_N; off++) {
		if (l->e[off].pba_lo | l->e[off].pba_hi) {
			idx[n] = (uint16_t)off;
			e[n++] = l->e[off];
		}
	}
	free(l->e);
	l->idx = idx;
	l->e = e;
	l->cap = cap;
	l->dense = false;
	m->bytes += leaf_bytes(l);
}

uint64_t lsfs_map_set(struct lsfs_map *m, uint64_t c, uint64_t pba, uint32_t crc, uint16_t aux,
		      struct lsfs_ment *oldp)
{
	struct lsfs_leaf *l = m->leaves[c >> LSFS_LEAF_BITS];
	uint32_t off = (uint32_t)(c & (LSFS_LEAF_N - 1));
	struct lsfs_ment *e = leaf_find(l, off);
	uint64_t old = e ? lsfs_ment_pba(e) : 0;
	if (oldp) {
		if (e)
			*oldp = *e;
		else
			memset(oldp, 0, sizeof(*oldp));
	}
	if (!e) {
		if (!l->dense && l->used + 1 >= LSFS_DENSE_AT)
			leaf_densify(m, l);
		if (l->dense) {
			e = &l->e[off];
		} else {
			if (l->used == l->cap)
				leaf_resize(m, l, l->cap + l->cap / 4 + 4);
			uint32_t i = lower_bound(l, off);
			memmove(&l->idx[i + 1], &l->idx[i], (l->used - i) * sizeof(*l->idx));
			memmove(&l->e[i + 1], &l->e[i], (l->used - i) * sizeof(*l->e));
			l->idx[i] = (uint16_t)off;
			e = &l->e[i];
		}
		l->used++;
		m->mapped++;
	}
	e->crc = crc;
	e->pba_lo = (uint32_t)pba;
	e->pba_hi = (uint16_t)(pba >> 32);
	e->aux = aux;
	return old;
}

uint64_t lsfs_map_clear(struct lsfs_map *m, uint64_t c, struct lsfs_ment *oldp)
{
	if (oldp)
		memset(oldp, 0, sizeof(*oldp));
	if (c >= m->nchunks)
		return 0;
	uint64_t li = c >> LSFS_LEAF_BITS;
	struct lsfs_leaf *l = m->leaves[li];
	if (!l)
		return 0;
	uint32_t off = (uint32_t)(c & (LSFS_LEAF_N - 1));
	struct lsfs_ment *e = leaf_find(l, off);
	if (!e)
		return 0;
	uint64_t old = lsfs_ment_pba(e);
	if (oldp)
		*oldp = *e;
	if (l->dense) {
		memset(e, 0, sizeof(*e));
	} else {
		uint32_t i = (uint32_t)(e - l->e);
		memmove(&l->idx[i], &l->idx[i + 1], (l->used - i - 1) * sizeof(*l->idx));
		memmove(&l->e[i], &l->e[i + 1], (l->used - i - 1) * sizeof(*l->e));
	}
	m->mapped--;
	if (--l->used == 0) {
		leaf_free(m, l);
		m->leaves[li] = NULL;
	} else if (l->dense && l->used < LSFS_SPARSE_AT) {
		leaf_sparsify(m, l);
	} else if (!l->dense && l->cap > 16 && l->used < l->cap / 3) {
		leaf_resize(m, l, l->used + l->used / 4 + 4);
	}
	return old;
}

bool lsfs_map_next(const struct lsfs_map *m, uint64_t *cp)
{
	uint64_t c = *cp;
	while (c < m->nchunks) {
		const struct lsfs_leaf *l = m->leaves[c >> LSFS_LEAF_BITS];
		uint64_t base = c & ~(uint64_t)(LSFS_LEAF_N - 1);
		uint32_t off = (uint32_t)(c - base);
		if (l && l->dense) {
			for (; off < LSFS_LEAF_N; off++) {
				if (l->e[off].pba_lo | l->e[off].pba_hi) {
					*cp = base + off;
					return *cp < m->nchunks;
				}
			}
		} else if (l) {
			uint32_t i = lower_bound(l, off);
			if (i < l->used) {
				*cp = base + l->idx[i];
				return *cp < m->nchunks;
			}
		}
		c = base + LSFS_LEAF_N;
	}
	return false;
}

uint64_t lsfs_map_bytes(const struct lsfs_map *m)
{
	return m->bytes;
}
