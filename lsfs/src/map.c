/*
 * The block map: 4 KiB chunk -> physical 4 KiB slot and payload CRC32C.
 *
 * A two-level table: a top array with one pointer per 1024 chunks (4 MiB
 * of address space), leaves of 1024 packed 12-byte entries allocated on
 * first use and freed when they empty. A densely written volume costs
 * 12 bytes per mapped 4 KiB block plus 8 bytes per 4 MiB of promised size;
 * never-written space costs only its top-array pointer, which keeps a thin
 * 64 TiB promise at 128 MiB of pointers at worst. pba 0 is the superblock,
 * so it doubles as "unmapped".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lsfs_int.h"

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
		m->leaves = l;
		m->nleaves = n;
	}
	if (nchunks > m->nchunks)
		m->nchunks = nchunks;
	return 0;
}

void lsfs_map_free(struct lsfs_map *m)
{
	for (uint64_t i = 0; i < m->nleaves; i++)
		free(m->leaves[i]);
	free(m->leaves);
	memset(m, 0, sizeof(*m));
}

const struct lsfs_ment *lsfs_map_get(const struct lsfs_map *m, uint64_t c)
{
	if (c >= m->nchunks)
		return NULL;
	const struct lsfs_leaf *l = m->leaves[c >> LSFS_LEAF_BITS];
	if (!l)
		return NULL;
	const struct lsfs_ment *e = &l->e[c & (LSFS_LEAF_N - 1)];
	return (e->pba_lo | e->pba_hi) ? e : NULL;
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
		m->leaf_count++;
	}
	return 0;
}

uint64_t lsfs_map_set(struct lsfs_map *m, uint64_t c, uint64_t pba, uint32_t crc)
{
	struct lsfs_leaf *l = m->leaves[c >> LSFS_LEAF_BITS];
	struct lsfs_ment *e = &l->e[c & (LSFS_LEAF_N - 1)];
	uint64_t old = lsfs_ment_pba(e);
	if (!old) {
		l->used++;
		m->mapped++;
	}
	e->crc = crc;
	e->pba_lo = (uint32_t)pba;
	e->pba_hi = (uint16_t)(pba >> 32);
	e->aux = 0;
	return old;
}

uint64_t lsfs_map_clear(struct lsfs_map *m, uint64_t c)
{
	if (c >= m->nchunks)
		return 0;
	uint64_t li = c >> LSFS_LEAF_BITS;
	struct lsfs_leaf *l = m->leaves[li];
	if (!l)
		return 0;
	struct lsfs_ment *e = &l->e[c & (LSFS_LEAF_N - 1)];
	uint64_t old = lsfs_ment_pba(e);
	if (!old)
		return 0;
	memset(e, 0, sizeof(*e));
	m->mapped--;
	if (--l->used == 0) {
		free(l);
		m->leaves[li] = NULL;
		m->leaf_count--;
	}
	return old;
}

bool lsfs_map_next(const struct lsfs_map *m, uint64_t *cp)
{
	uint64_t c = *cp;
	while (c < m->nchunks) {
		const struct lsfs_leaf *l = m->leaves[c >> LSFS_LEAF_BITS];
		if (!l) {
			c = ((c >> LSFS_LEAF_BITS) + 1) << LSFS_LEAF_BITS;
			continue;
		}
		const struct lsfs_ment *e = &l->e[c & (LSFS_LEAF_N - 1)];
		if (e->pba_lo | e->pba_hi) {
			*cp = c;
			return true;
		}
		c++;
	}
	return false;
}

uint64_t lsfs_map_bytes(const struct lsfs_map *m)
{
	return m->nleaves * sizeof(struct lsfs_leaf *) + m->leaf_count * sizeof(struct lsfs_leaf);
}
