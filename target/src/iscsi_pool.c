/* Per-reactor size-class buffer pool; see iscsi_pool.h. */
#include <errno.h>
#include <stdlib.h>

#include "tnd_common.h"
#include "iscsi_pool.h"

#define POOL_MIN_SHIFT 12   /* 4 KiB */
#define POOL_MAX_SHIFT 23   /* 8 MiB */
#define POOL_CLASSES (POOL_MAX_SHIFT - POOL_MIN_SHIFT + 1)

/* A free buffer stores the link to the next one in its first bytes. */
struct free_buf {
	struct free_buf *next;
};

struct pool_class {
	struct free_buf *head;
	size_t count;
	size_t max_count;
};

struct tnd_iscsi_pool {
	struct pool_class classes[POOL_CLASSES];
	size_t outstanding;
};

int tnd_iscsi_pool_create(size_t max_cached_bytes, struct tnd_iscsi_pool **out)
{
	struct tnd_iscsi_pool *pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	for (unsigned c = 0; c < POOL_CLASSES; c++) {
		size_t sz = (size_t)1 << (c + POOL_MIN_SHIFT);
		/* Split the budget evenly across classes, but keep at least two of
		 * each so a steady stream of one size never allocates. */
		size_t n = max_cached_bytes / POOL_CLASSES / sz;
		pool->classes[c].max_count = n < 2 ? 2 : n;
	}
	*out = pool;
	return 0;
}

void tnd_iscsi_pool_destroy(struct tnd_iscsi_pool *pool)
{
	if (!pool)
		return;
	for (unsigned c = 0; c < POOL_CLASSES; c++) {
		struct free_buf *b = pool->classes[c].head;
		while (b) {
			struct free_buf *next = b->next;
			free(b);
			b = next;
		}
	}
	free(pool);
}

/* The class index for @size, or -1 when it is larger than the largest. */
static int class_of(size_t size)
{
	unsigned shift = POOL_MIN_SHIFT;
	while (shift <= POOL_MAX_SHIFT && ((size_t)1 << shift) < size)
		shift++;
	return shift > POOL_MAX_SHIFT ? -1 : (int)(shift - POOL_MIN_SHIFT);
}

void *tnd_iscsi_pool_get(struct tnd_iscsi_pool *pool, size_t size)
{
	int c = class_of(size);
	void *p = NULL;
	if (c < 0) {
		if (posix_memalign(&p, 4096, size) != 0)
			return NULL;
	} else if (pool->classes[c].head) {
		struct free_buf *b = pool->classes[c].head;
		pool->classes[c].head = b->next;
		pool->classes[c].count--;
		p = b;
	} else if (posix_memalign(&p, 4096, (size_t)1 << (c + POOL_MIN_SHIFT)) != 0) {
		return NULL;
	}
	pool->outstanding++;
	return p;
}

void tnd_iscsi_pool_put(struct tnd_iscsi_pool *pool, void *buf, size_t size)
{
	if (!buf)
		return;
	pool->outstanding--;
	int c = class_of(size);
	if (c < 0 || pool->classes[c].count >= pool->classes[c].max_count) {
		free(buf);
		return;
	}
	struct free_buf *b = buf;
	b->next = pool->classes[c].head;
	pool->classes[c].head = b;
	pool->classes[c].count++;
}

size_t tnd_iscsi_pool_outstanding(const struct tnd_iscsi_pool *pool)
{
	return pool->outstanding;
}
