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
 * Direct writes (opts.direct_writes; lsfs devices with "direct_io"):
 * writes go through a second descriptor opened with O_DIRECT, reads
 * through the ordinary, buffered one. A log-structured store writes its log in large aligned
 * appends and never reads what it is writing; through the page cache each
 * append is one more copy and leaves dirty pages that the next FLUSH must
 * write back while the initiator waits. With O_DIRECT the data reaches the
 * disk when the write completes, and a FLUSH is only the device's cache
 * flush (plus the file system's metadata for blocks the write allocated).
 * Reads keep the page cache: an all-O_DIRECT backing was measured to lose
 * almost half the random-read IOPS, because lsfs's reads are small and the
 * page cache is its read cache. This is coherent: before and after an
 * O_DIRECT write the kernel writes back and drops the cached pages of the
 * range it covers, so a buffered read issued after the write completed
 * sees the new bytes. The one case it does not cover is a buffered read of
 * a range *while* a direct write to it is in flight (a stale page could be
 * cached); lsfs never does that (it reads a slot only once the write that
 * put it there has completed, and a segment is rewritten only when all its
 * blocks are dead). Buffers whose address or length is not aligned for
 * O_DIRECT are copied through an aligned bounce buffer; a write whose
 * offset or length is not a multiple of the device's direct-I/O unit
 * (larger than the volume's block size, e.g. a 4 KiB-sector disk under a
 * 512 B volume) goes through the buffered descriptor instead: the kernel
 * writes back and invalidates cached pages before a later direct write to
 * the same range, so mixing is coherent as long as no buffered and direct
 * write touch the same page at the same time (lsfs's writes are whole
 * 4 KiB blocks, so for it the fallback does not happen). Where the file
 * system refuses O_DIRECT (EINVAL at open), the volume logs it and writes
 * through the page cache as before.
 *
 * Durability: without O_DIRECT a completed write sits in the page cache,
 * and with O_DIRECT possibly in the disk's own cache (and the file
 * system's metadata for newly allocated blocks in its journal), so the
 * volume reports write_cache = true (WCE=1) in every mode. FLUSH is
 * fdatasync (with direct writes it finds no dirty pages, and is the
 * journal commit and the disk cache flush); FUA writes are issued with
 * RWF_DSYNC. Flushes are group-committed: the volume runs one fdatasync
 * at a time, and the flushes that arrive while it runs (from any reactor)
 * all complete with the one after it, which starts after they arrived and
 * so covers every write completed before each of them. The stats show
 * flush_ops (flushes asked for) and fdatasyncs (run). A failed write, flush or discard fail-stops the volume:
 * from then on writes answer -EROFS and reads go on, because after an
 * fsync error the kernel may already have dropped the dirty pages and a
 * retry would report success for data that is gone.
 *
 * Threads: the volume has no per-reactor state; any reactor may submit and
 * its own ring carries the I/O, except that a FLUSH queued behind a
 * running fdatasync is carried by the ring of the reactor that starts the
 * next one and is completed back on its own by message. The flush queue
 * is under a spinlock held for a few pointer moves; counters are relaxed
 * atomics.
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
	bool direct_writes;     /* write with O_DIRECT, read buffered (see above); flat only */
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
