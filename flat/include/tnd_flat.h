/*
 * tnd_flat.h — the bottom of every device stack: a file or block device
 * read and written in place through io_uring.
 *
 * Two device types are built on it:
 * - flat: an image file, created sparse if missing and grown to the
 *   configured size; UNMAP punches holes, so the file stays thin and
 *   unmapped blocks read as zeros.
 * - passthrough: an existing block device or file exposed whole, opened
 *   with O_DIRECT where the device allows it, so the page cache is not a
 *   second cache in front of the disk.
 * Later layers (lsfs, the fault injector in tests) use it as their base.
 *
 * Durability: without O_DIRECT a completed write sits in the page cache,
 * and with O_DIRECT possibly in the disk's own cache, so the volume reports
 * write_cache = true (WCE=1). FLUSH is fdatasync; FUA writes are issued
 * with RWF_DSYNC. A failed write, flush or discard fail-stops the volume:
 * from then on writes answer -EROFS and reads go on, because after an
 * fsync error the kernel may already have dropped the dirty pages and a
 * retry would report success for data that is gone.
 *
 * Threads: the volume has no per-reactor state; any reactor may submit and
 * its own ring carries the I/O, except that a buffered read the page cache
 * can serve without blocking is copied on the reactor itself (RWF_NOWAIT;
 * see flat.c). Either way the callback runs from the submitting reactor's
 * loop, never inside submit. Counters are relaxed atomics.
 */
#ifndef TND_FLAT_H
#define TND_FLAT_H

#include <stdbool.h>
#include <stdint.h>

struct tnd_volume;

struct tnd_flat_opts {
	const char *path;
	uint64_t size;          /* bytes; 0 with passthrough = the whole device/file */
	uint32_t block_size;    /* 512 or 4096 */
	bool passthrough;       /* open an existing device/file whole; never create */
	bool read_only;
};

/*
 * Open (and for flat, create or grow) the backing file. Returns 0 and an
 * owned volume, or -errno with a message logged that names the path:
 * -ENOENT (passthrough target missing), -EINVAL (size not a multiple of
 * the block size, or the file is larger than the configured size: we never
 * shrink a user's image silently), -ENOTBLK/-EISDIR (not a file or disk).
 */
int tnd_flat_open(const struct tnd_flat_opts *opts, struct tnd_volume **out);

#endif
