/*
 * iscsi_pool.h — per-reactor data buffer pool, internal to target/.
 *
 * Purpose: SCSI data buffers (write data received, read data to send) are
 * needed for every command and are mostly of a few sizes (4 KiB to a few
 * MiB). Allocating and freeing them per I/O costs page faults for the
 * large ones; this pool keeps freed buffers in power-of-two size classes
 * from 4 KiB to 8 MiB and hands them out again. Each class keeps at most a
 * bounded number of bytes, so an idle reactor does not hoard memory after
 * a burst. Buffers are 4 KiB aligned so they can go to O_DIRECT files.
 *
 * Threading: one pool per reactor, used only on that reactor's thread, no
 * locks. A buffer must go back to the pool it came from.
 *
 * Ownership: tnd_iscsi_pool_get() returns an owned buffer; the caller gives
 * it back with tnd_iscsi_pool_put() and the same size it asked for.
 */
#ifndef TND_TARGET_ISCSI_POOL_H
#define TND_TARGET_ISCSI_POOL_H

#include <stddef.h>

struct tnd_iscsi_pool;

int tnd_iscsi_pool_create(size_t max_cached_bytes, struct tnd_iscsi_pool **out);
/* Frees the cached buffers; every buffer must have been put back. */
void tnd_iscsi_pool_destroy(struct tnd_iscsi_pool *pool);

/* A buffer of at least @size bytes (> 0), or NULL when out of memory. */
void *tnd_iscsi_pool_get(struct tnd_iscsi_pool *pool, size_t size);
void tnd_iscsi_pool_put(struct tnd_iscsi_pool *pool, void *buf, size_t size);

/* Buffers handed out and not yet returned (for leak checks in tests). */
size_t tnd_iscsi_pool_outstanding(const struct tnd_iscsi_pool *pool);

#endif
