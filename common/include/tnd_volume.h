/*
 * tnd_volume.h — the one interface every storage layer below the target
 * implements.
 *
 * A device is a stack of volumes built from its configuration:
 * flat(file), passthrough(/dev/sdX), later lsfs(file), cache(lsfs(...)),
 * ha(cache(...)). The SCSI target knows only this interface and a layer
 * knows only the volume directly below it (its base), so a new layer never
 * touches the others.
 *
 * I/O. A struct tnd_io describes one request in units of the volume's
 * logical block size. Its tail, ctx[], holds every layer's private per-I/O
 * state; each layer owns the slice at tnd_io_ctx(io, vol). The slices are
 * laid out bottom-up: the lowest volume's slice starts at offset 0 and each
 * layer stacked on top of it starts after the one below. So a layer can be
 * stacked without the layers below knowing, and one allocation of
 * tnd_volume_io_size(top) bytes serves the whole stack with no malloc per
 * layer. A layer that needs several child I/Os allocates them at
 * tnd_volume_io_size(base).
 *
 * The async contract, for every submit: a negative return means the I/O
 * was not accepted and no callback will come; 0 means io->cb will be
 * called exactly once, on io->reactor's thread, with 0 or -errno. The
 * buffers in io->iov are borrowed until that callback. A volume may be
 * submitted to from any reactor; one whose state belongs to a single
 * reactor forwards the I/O there by message and completes it back on the
 * submitter's reactor.
 *
 * Errors are -errno: -EIO (medium or device error), -ENOSPC (out of
 * space), -EILSEQ (checksum mismatch: data unreadable), -EROFS (device
 * fail-stopped or read-only), -EINVAL (out of range). The target turns
 * them into SCSI sense in one place.
 *
 * Lifetime: the creator of a volume owns it and destroys it with
 * tnd_volume_destroy() once no I/O is in flight; a layer owns its base and
 * destroys it in turn.
 */
#ifndef TND_VOLUME_H
#define TND_VOLUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <jansson.h>

struct tnd_reactor;
struct tnd_volume;
struct tnd_io;

enum tnd_io_type {
	TND_IO_READ,
	TND_IO_WRITE,
	TND_IO_FLUSH,          /* make every completed write stable */
	TND_IO_UNMAP,          /* deallocate; reads return zeros afterwards */
	TND_IO_WRITE_ZEROES,   /* like UNMAP where the volume can, else writes zeros */
	TND_IO_BLOCK_STATUS,   /* how far the allocation state of io->lba runs: below */
};

/*
 * TND_IO_BLOCK_STATUS asks whether block io->lba is mapped (holds data the
 * volume stores) or deallocated (reads as zeros, uses no space), and for how
 * many blocks from there, at most io->nblocks, that stays so. The answer goes
 * into the struct tnd_block_status that io->iov[0] points at (iovcnt 1); it
 * moves no data. A volume that cannot tell answers -EOPNOTSUPP, and the
 * caller must then treat the blocks as mapped: "mapped" is never wrong for
 * what a read returns, "deallocated" must be exact. Layers that do not
 * change where blocks live pass it down unchanged.
 */
struct tnd_block_status {
	uint64_t nblocks;             /* >= 1: blocks from io->lba in this state */
	bool mapped;
};

enum {
	TND_IO_FUA = 1u << 0,  /* this write is stable when it completes */
};

typedef void (*tnd_io_cb)(struct tnd_io *io, int status);
typedef void (*tnd_done_cb)(void *arg);

struct tnd_io {
	enum tnd_io_type type;
	unsigned flags;
	uint64_t lba;
	uint32_t nblocks;
	int iovcnt;
	struct iovec *iov;            /* borrowed until completion */
	struct tnd_reactor *reactor;  /* submitter; the callback runs here */
	tnd_io_cb cb;
	void *cb_arg;
	unsigned char ctx[] __attribute__((aligned(16)));
};

enum tnd_volume_state {
	TND_VOLUME_ONLINE,
	TND_VOLUME_FAILED,     /* fail-stopped: reads may work, writes -EROFS */
};

struct tnd_volume_info {
	uint32_t block_size;          /* 512 or 4096 */
	uint64_t num_blocks;
	bool write_cache;             /* WCE: acked writes may be volatile until FLUSH */
	bool thin;                    /* space is used as written; UNMAP frees it */
	bool unmap_zeroes;            /* unmapped blocks read as zeros (LBPRZ) */
	bool read_only;
	bool rotational;
	enum tnd_volume_state state;
	uint32_t opt_io_blocks;       /* preferred transfer granularity, 0 = none */
	uint32_t max_unmap_blocks;    /* 0 = UNMAP unsupported */
	/*
	 * The reactor that owns the volume's state (the one that runs its
	 * write path and to which I/O from other reactors is forwarded), or
	 * NULL: no owner, every reactor is as good as any other. A layer that
	 * keeps state on one reactor fills it; a layer that does not passes
	 * its base's through. Constant for the volume's life. The target
	 * places a session away from the homes of its LUNs, so that the
	 * session's iSCSI work and the store's work run on two CPUs.
	 */
	struct tnd_reactor *home;
};

struct tnd_volume_ops {
	const char *type;             /* "flat", "passthrough", "lsfs", ... */
	size_t ctx_size;              /* bytes of per-I/O state this layer needs */
	/* <0: not accepted, no callback. 0: exactly one callback. */
	int (*submit)(struct tnd_volume *vol, struct tnd_io *io);
	void (*info)(struct tnd_volume *vol, struct tnd_volume_info *out);
	/* Add this layer's counters to @out (optional). */
	void (*stats_json)(struct tnd_volume *vol, json_t *out);
	/* Change the size (optional). 0 or -errno. Owning reactor only. */
	int (*resize)(struct tnd_volume *vol, uint64_t num_blocks);
	/* Release everything; no I/O is in flight. Destroys the base too. */
	void (*destroy)(struct tnd_volume *vol);
};

struct tnd_volume {
	const struct tnd_volume_ops *ops;
	struct tnd_volume *base;      /* the volume below, owned; NULL at the bottom */
	size_t ctx_offset;            /* where this layer's slice starts in io->ctx */
	size_t io_size;               /* sizeof(struct tnd_io) + all slices up to here */
};

/* Set up the embedded base struct of a new layer on top of @base (may be NULL). */
void tnd_volume_init(struct tnd_volume *vol, const struct tnd_volume_ops *ops,
		     struct tnd_volume *base);

static inline void *tnd_io_ctx(struct tnd_io *io, const struct tnd_volume *vol)
{
	return io->ctx + vol->ctx_offset;
}

static inline size_t tnd_volume_io_size(const struct tnd_volume *vol)
{
	return vol->io_size;
}

/* See the async contract above. */
static inline int tnd_volume_submit(struct tnd_volume *vol, struct tnd_io *io)
{
	return vol->ops->submit(vol, io);
}

static inline void tnd_volume_info(struct tnd_volume *vol, struct tnd_volume_info *out)
{
	vol->ops->info(vol, out);
}

/* Fill @out (an object) with type, info and every layer's counters. */
void tnd_volume_stats_json(struct tnd_volume *vol, json_t *out);

int tnd_volume_resize(struct tnd_volume *vol, uint64_t num_blocks);

void tnd_volume_destroy(struct tnd_volume *vol);

/*
 * The accounting layer (common/src/stats_volume.c): counts ops, bytes and
 * latency (per-bucket histograms, bounds in microseconds) of what passes
 * through it and forwards everything to @base unchanged. Takes ownership of
 * @base. Its stats_json adds read_ops, write_ops, read_bytes, write_bytes,
 * read_errors, write_errors, flush_ops, unmap_ops and "latency".
 */
#define TND_STATS_BUCKETS 10
int tnd_stats_volume_create(struct tnd_volume *base, struct tnd_volume **out);

/* Total bytes described by an iovec array. */
size_t tnd_iov_length(const struct iovec *iov, int iovcnt);

/* Fill @iov with zeros. */
void tnd_iov_zero(const struct iovec *iov, int iovcnt);

#endif
