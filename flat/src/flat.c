/*
 * flat and passthrough volumes; see tnd_flat.h.
 *
 * Every request becomes one io_uring operation on the submitting reactor's
 * ring: readv/writev at the byte offset, fsync(DATASYNC) for FLUSH (group
 * committed: flushes that queue behind a running one share the next, see
 * flat_flush()) and fallocate(PUNCH_HOLE) for UNMAP and WRITE_ZEROES. Short transfers (rare
 * on files, possible on devices) are continued from where they stopped.
 * With O_DIRECT a buffer that is not aligned as the file system asks
 * (statx STATX_DIOALIGN; the device's sector for a disk; else 4 KiB) goes
 * through an aligned bounce buffer instead of failing with EINVAL.
 *
 * A volume has one or two descriptors: fd carries reads, FLUSH and UNMAP,
 * wfd carries writes. They are the same descriptor except in direct-writes
 * mode (lsfs's backing), where wfd is a second open of the file with
 * O_DIRECT; fdatasync on fd covers writes made through wfd, because both
 * name the same inode.
 *
 * Buffered writes on ext4 go straight to io-wq (IOSQE_ASYNC). io_uring
 * first tries a buffered write without blocking and hands it to its
 * io-wq workers when the file system says it would block; ext4 (kernel
 * 6.18) says so for almost every one (1-7 % of 4 KiB writes into cached
 * pages completed inline in a liburing probe), so the attempt is pure
 * cost on the reactor. Skipping it gave 4 KiB random writes at QD32 with
 * a flush every 32 about 4 % more IOPS and 5-8 % less target CPU per
 * write (bench/ab.sh, 10 pairs, every pair ahead). File systems that do
 * take buffered writes inline (XFS, btrfs) keep the attempt.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "tnd_common.h"
#include "tnd_flat.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"

/* O_DIRECT alignment when the kernel does not say: safe on every device. */
#define DIO_ALIGN_DEFAULT 4096u

struct flat_vol {
	struct tnd_volume vol;
	int fd;                 /* reads, FLUSH, UNMAP (and writes unless wfd differs) */
	int wfd;                /* writes: fd, or an O_DIRECT descriptor (direct_write) */
	char *path;
	bool passthrough;
	bool direct_read;       /* fd is O_DIRECT (passthrough) */
	bool direct_write;      /* wfd is O_DIRECT (passthrough, or direct_writes mode) */
	bool write_async;       /* buffered writes on ext4: straight to io-wq (see the top) */
	bool read_only;
	bool is_blockdev;
	uint32_t block_size;
	uint32_t dio_mem_align; /* buffer address alignment for O_DIRECT */
	uint32_t dio_off_align; /* offset and length alignment for O_DIRECT */
	_Atomic uint64_t num_blocks;
	atomic_bool failed;
	_Atomic uint64_t read_ops, write_ops, read_bytes, write_bytes, flush_ops, unmap_ops, errors;
	_Atomic uint64_t bounced_ios, buffered_writes, fdatasyncs;
	/* FLUSH group commit (see flat_flush()): under sync_lock. */
	pthread_spinlock_t sync_lock;
	bool sync_running;              /* an fdatasync is in flight */
	struct flat_io *sync_next;      /* flushes waiting for the next one, newest first */
};

struct flat_io {
	struct tnd_uring_op op;
	struct flat_vol *fv;
	struct tnd_io *io;
	uint64_t off;          /* byte offset of the next transfer */
	size_t done;           /* bytes moved so far */
	size_t total;          /* bytes to move */
	struct iovec *iov;     /* what the next transfer uses */
	int iovcnt;
	struct iovec *owned_iov;
	int fd;                /* the descriptor this transfer uses */
	void *bounce;
	struct iovec bounce_iov;
	/* FLUSH group commit */
	struct flat_io *batch_next;    /* next flush covered by the same fdatasync */
	struct tnd_reactor *ring;      /* batch head: the reactor whose ring runs it */
	int status;                    /* result handed to a member on another reactor */
	struct tnd_msg msg;            /* carries that result there */
};

static void flat_fail(struct flat_vol *fv, const char *what, int err)
{
	atomic_fetch_add_explicit(&fv->errors, 1, memory_order_relaxed);
	if (!atomic_exchange(&fv->failed, true))
		tnd_err("flat", "%s: %s failed (%s): device fail-stopped, writes refused from now on",
			fv->path, what, strerror(-err));
}

static int flat_queue(struct flat_io *fi);

static void flat_complete(struct flat_io *fi, int status)
{
	struct tnd_io *io = fi->io;
	if (fi->bounce) {
		if (status == 0 && io->type == TND_IO_READ) {
			/* Scatter the aligned copy back into the caller's buffers. */
			const char *src = fi->bounce;
			for (int i = 0; i < io->iovcnt; i++) {
				memcpy(io->iov[i].iov_base, src, io->iov[i].iov_len);
				src += io->iov[i].iov_len;
			}
		}
		free(fi->bounce);
		fi->bounce = NULL;
	}
	free(fi->owned_iov);
	fi->owned_iov = NULL;
	io->cb(io, status);
}

/* Drop @n bytes from the front of the current iovec list (short transfer). */
static int advance_iov(struct flat_io *fi, size_t n)
{
	if (!fi->owned_iov) {
		fi->owned_iov = malloc(sizeof(struct iovec) * (size_t)fi->iovcnt);
		if (!fi->owned_iov)
			return -ENOMEM;
		memcpy(fi->owned_iov, fi->iov, sizeof(struct iovec) * (size_t)fi->iovcnt);
		fi->iov = fi->owned_iov;
	}
	while (n > 0 && fi->iovcnt > 0) {
		if (n >= fi->iov[0].iov_len) {
			n -= fi->iov[0].iov_len;
			fi->iov++;
			fi->iovcnt--;
		} else {
			fi->iov[0].iov_base = (char *)fi->iov[0].iov_base + n;
			fi->iov[0].iov_len -= n;
			n = 0;
		}
	}
	return 0;
}

static void flat_rw_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	struct flat_io *fi = tnd_container_of(op, struct flat_io, op);
	struct flat_vol *fv = fi->fv;
	bool is_write = fi->io->type == TND_IO_WRITE;

	if (res < 0 || (res == 0 && fi->done < fi->total)) {
		int err = res < 0 ? res : -EIO;
		if (is_write) {
			flat_fail(fv, "write", err);
			flat_complete(fi, err == -ENOSPC ? -ENOSPC : -EIO);
		} else {
			atomic_fetch_add_explicit(&fv->errors, 1, memory_order_relaxed);
			tnd_err("flat", "%s: read at %llu failed: %s", fv->path,
				(unsigned long long)fi->off, strerror(-err));
			flat_complete(fi, -EIO);
		}
		return;
	}
	fi->done += (size_t)res;
	fi->off += (uint64_t)res;
	if (fi->done < fi->total) {
		int ret = advance_iov(fi, (size_t)res);
		if (ret == 0)
			ret = flat_queue(fi);
		if (ret < 0)
			flat_complete(fi, ret);
		return;
	}
	flat_complete(fi, 0);
}

static void flat_sync_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	struct flat_io *fi = tnd_container_of(op, struct flat_io, op);
	if (res < 0) {
		flat_fail(fi->fv, "discard", res);
		flat_complete(fi, -EIO);
		return;
	}
	flat_complete(fi, 0);
}

/*
 * FLUSH group commit. An fdatasync covers every write that completed
 * before it started. A FLUSH that arrives while one is running cannot
 * join that one (a write it must cover may have completed after it
 * started), but it can share the next with every other FLUSH that arrives
 * meanwhile: the volume runs one fdatasync at a time, and all the flushes
 * that queued behind it complete with the next. Sessions flushing the same
 * image at once then cost one fdatasync per round instead of one each,
 * where concurrent fdatasyncs of one inode would mostly wait for each
 * other's writeback and the same device cache flush.
 *
 * The queue is shared by all reactors. Its lock is a spinlock held for a
 * few pointer moves, never across a call out. The next fdatasync runs on
 * the ring of the reactor that saw the previous one complete; every flush
 * of a batch completes on its own reactor (by message when that is another
 * one). After a failed fdatasync the flushes queued behind it fail too
 * without a retry: the kernel may have dropped the dirty pages already,
 * and a second fdatasync would report success for data that is gone.
 */
static void flush_member_msg(struct tnd_msg *msg)
{
	struct flat_io *fi = tnd_container_of(msg, struct flat_io, msg);
	flat_complete(fi, fi->status);
}

/* Complete every flush of the batch @fi heads, each on its own reactor. */
static void flush_batch_complete(struct flat_io *fi, int status)
{
	while (fi) {
		struct flat_io *next = fi->batch_next;  /* the callback may free fi */
		if (tnd_reactor_is_current(fi->io->reactor)) {
			flat_complete(fi, status);
		} else {
			fi->status = status;
			fi->msg.fn = flush_member_msg;
			tnd_reactor_send(fi->io->reactor, &fi->msg);
		}
		fi = next;
	}
}

static void flush_done(struct tnd_uring_op *op, int res, unsigned flags);

/* Start the fdatasync of the batch @head on @r's ring (@r is this thread's). */
static int flush_issue(struct flat_vol *fv, struct tnd_reactor *r, struct flat_io *head)
{
	struct io_uring_sqe *sqe = tnd_reactor_sqe(r, &head->op);
	if (!sqe)
		return -EBUSY;
	head->ring = r;
	head->op.cb = flush_done;
	io_uring_prep_fsync(sqe, fv->fd, IORING_FSYNC_DATASYNC);
	atomic_fetch_add_explicit(&fv->fdatasyncs, 1, memory_order_relaxed);
	return 0;
}

/* The running fdatasync is over: run one for the flushes that queued
 * behind it, or mark the volume idle when none did. */
static void flush_next(struct flat_vol *fv, struct tnd_reactor *r)
{
	for (;;) {
		pthread_spin_lock(&fv->sync_lock);
		struct flat_io *batch = fv->sync_next;
		fv->sync_next = NULL;
		if (!batch)
			fv->sync_running = false;
		pthread_spin_unlock(&fv->sync_lock);
		if (!batch)
			return;
		if (atomic_load(&fv->failed)) {
			flush_batch_complete(batch, -EIO);
			continue;
		}
		if (flush_issue(fv, r, batch) == 0)
			return;
		tnd_err("flat", "%s: no submission queue entry for fdatasync", fv->path);
		flush_batch_complete(batch, -EIO);
	}
}

static void flush_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	struct flat_io *head = tnd_container_of(op, struct flat_io, op);
	struct flat_vol *fv = head->fv;

	if (res < 0)
		flat_fail(fv, "fdatasync", res);
	/* Hand the queue on first: a callback below may flush again. */
	flush_next(fv, head->ring);
	flush_batch_complete(head, res < 0 ? -EIO : 0);
}

static int flat_flush(struct flat_vol *fv, struct flat_io *fi)
{
	pthread_spin_lock(&fv->sync_lock);
	bool lead = !fv->sync_running;
	if (lead) {
		fv->sync_running = true;
	} else {
		fi->batch_next = fv->sync_next;
		fv->sync_next = fi;
	}
	pthread_spin_unlock(&fv->sync_lock);
	if (!lead)
		return 0;
	int ret = flush_issue(fv, fi->io->reactor, fi);
	if (ret < 0)
		flush_next(fv, fi->io->reactor);        /* not accepted: pass the turn on */
	return ret;
}

static int flat_queue(struct flat_io *fi)
{
	struct tnd_io *io = fi->io;
	struct flat_vol *fv = fi->fv;
	struct io_uring_sqe *sqe = tnd_reactor_sqe(io->reactor, &fi->op);
	if (!sqe)
		return -EBUSY;

	switch (io->type) {
	case TND_IO_READ:
		fi->op.cb = flat_rw_done;
		io_uring_prep_readv(sqe, fi->fd, fi->iov, (unsigned)fi->iovcnt, fi->off);
		break;
	case TND_IO_WRITE:
		fi->op.cb = flat_rw_done;
		io_uring_prep_writev(sqe, fi->fd, fi->iov, (unsigned)fi->iovcnt, fi->off);
		if (io->flags & TND_IO_FUA)
			sqe->rw_flags = RWF_DSYNC;
		if (fv->write_async)
			sqe->flags |= IOSQE_ASYNC;
		break;
	case TND_IO_UNMAP:
	case TND_IO_WRITE_ZEROES:
		fi->op.cb = flat_sync_done;
		io_uring_prep_fallocate(sqe, fv->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					fi->off, (off_t)fi->total);
		break;
	default:        /* flat_submit() refuses the rest */
		return -EOPNOTSUPP;
	}
	return 0;
}

/* Can O_DIRECT take these buffers as they are? Each segment's address must
 * be aligned for DMA and its length a multiple of the direct-I/O unit. */
static bool iov_aligned(const struct flat_vol *fv, const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++)
		if (((uintptr_t)iov[i].iov_base & (fv->dio_mem_align - 1)) ||
		    (iov[i].iov_len & (fv->dio_off_align - 1)))
			return false;
	return true;
}

static int flat_submit(struct tnd_volume *vol, struct tnd_io *io)
{
	struct flat_vol *fv = tnd_container_of(vol, struct flat_vol, vol);
	struct flat_io *fi = tnd_io_ctx(io, vol);
	uint64_t nb = atomic_load_explicit(&fv->num_blocks, memory_order_relaxed);

	if (io->type != TND_IO_FLUSH && (io->lba > nb || io->nblocks > nb - io->lba))
		return -EINVAL;
	/* A read-only image has nothing unstable: a FLUSH (the daemon's final
	 * one, SYNCHRONIZE CACHE) succeeds; writes of any kind do not. */
	if (io->type != TND_IO_READ &&
	    (atomic_load(&fv->failed) || (fv->read_only && io->type != TND_IO_FLUSH)))
		return -EROFS;

	memset(fi, 0, sizeof(*fi));
	fi->fv = fv;
	fi->io = io;
	fi->off = io->lba * fv->block_size;
	fi->total = (size_t)io->nblocks * fv->block_size;
	fi->iov = io->iov;
	fi->iovcnt = io->iovcnt;
	fi->fd = fv->fd;

	bool direct;
	switch (io->type) {
	case TND_IO_READ:
	case TND_IO_WRITE:
		if (tnd_iov_length(io->iov, io->iovcnt) != fi->total)
			return -EINVAL;
		if (fi->total == 0)
			return -EINVAL;
		direct = io->type == TND_IO_READ ? fv->direct_read : fv->direct_write;
		if (io->type == TND_IO_WRITE) {
			fi->fd = fv->wfd;
			/* An offset O_DIRECT cannot take (a device unit larger than
			 * our block): the page cache, which is coherent with the
			 * direct writes around it (see tnd_flat.h). */
			if (direct && ((fi->off | fi->total) & (fv->dio_off_align - 1))) {
				fi->fd = fv->fd;
				direct = false;
				atomic_fetch_add_explicit(&fv->buffered_writes, 1, memory_order_relaxed);
			}
		}
		if (direct && !iov_aligned(fv, io->iov, io->iovcnt)) {
			size_t alloc = (fi->total + fv->dio_off_align - 1) & ~(size_t)(fv->dio_off_align - 1);
			uint32_t ma = fv->dio_mem_align < sizeof(void *) ? sizeof(void *) : fv->dio_mem_align;
			if (posix_memalign(&fi->bounce, ma, alloc))
				return -ENOMEM;
			atomic_fetch_add_explicit(&fv->bounced_ios, 1, memory_order_relaxed);
			if (io->type == TND_IO_WRITE) {
				char *dst = fi->bounce;
				for (int i = 0; i < io->iovcnt; i++) {
					memcpy(dst, io->iov[i].iov_base, io->iov[i].iov_len);
					dst += io->iov[i].iov_len;
				}
			}
			fi->bounce_iov = (struct iovec){ fi->bounce, fi->total };
			fi->iov = &fi->bounce_iov;
			fi->iovcnt = 1;
		}
		if (io->type == TND_IO_READ) {
			atomic_fetch_add_explicit(&fv->read_ops, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&fv->read_bytes, fi->total, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&fv->write_ops, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&fv->write_bytes, fi->total, memory_order_relaxed);
		}
		break;
	case TND_IO_FLUSH:
		atomic_fetch_add_explicit(&fv->flush_ops, 1, memory_order_relaxed);
		return flat_flush(fv, fi);
	case TND_IO_UNMAP:
	case TND_IO_WRITE_ZEROES:
		atomic_fetch_add_explicit(&fv->unmap_ops, 1, memory_order_relaxed);
		if (fi->total == 0)
			return -EINVAL;
		break;
	default:
		return -EOPNOTSUPP;
	}

	int ret = flat_queue(fi);
	if (ret < 0) {
		free(fi->bounce);
		return ret;
	}
	return 0;
}

static void flat_info(struct tnd_volume *vol, struct tnd_volume_info *out)
{
	struct flat_vol *fv = tnd_container_of(vol, struct flat_vol, vol);
	*out = (struct tnd_volume_info){
		.block_size = fv->block_size,
		.num_blocks = atomic_load_explicit(&fv->num_blocks, memory_order_relaxed),
		.write_cache = true,
		.thin = !fv->passthrough,
		.unmap_zeroes = true,
		.read_only = fv->read_only,
		.rotational = false,
		.state = atomic_load(&fv->failed) ? TND_VOLUME_FAILED : TND_VOLUME_ONLINE,
		.opt_io_blocks = 4096 / fv->block_size,
		.max_unmap_blocks = fv->read_only ? 0 : (uint32_t)((1u << 30) / fv->block_size),
		/* Every I/O runs on its submitter's ring: no owning reactor. */
		.home = NULL,
	};
}

static void flat_stats_json(struct tnd_volume *vol, json_t *out)
{
	struct flat_vol *fv = tnd_container_of(vol, struct flat_vol, vol);
	struct { const char *key; _Atomic uint64_t *v; } c[] = {
		{ "read_ops", &fv->read_ops }, { "write_ops", &fv->write_ops },
		{ "read_bytes", &fv->read_bytes }, { "write_bytes", &fv->write_bytes },
		{ "flush_ops", &fv->flush_ops }, { "unmap_ops", &fv->unmap_ops },
		{ "io_errors", &fv->errors }, { "bounced_ios", &fv->bounced_ios },
		{ "buffered_writes", &fv->buffered_writes }, { "fdatasyncs", &fv->fdatasyncs },
	};
	for (size_t i = 0; i < TND_ARRAY_SIZE(c); i++)
		json_object_set_new(out, c[i].key, json_integer((json_int_t)atomic_load(c[i].v)));
	json_object_set_new(out, "path", json_string(fv->path));
	json_object_set_new(out, "direct_io", json_boolean(fv->direct_read && fv->direct_write));
	json_object_set_new(out, "direct_writes", json_boolean(fv->direct_write));
	json_object_set_new(out, "async_writes", json_boolean(fv->write_async));

	struct stat st;
	if (fstat(fv->fd, &st) == 0 && S_ISREG(st.st_mode)) {
		uint64_t phys = (uint64_t)st.st_blocks * 512;
		json_object_set_new(out, "physical_bytes", json_integer((json_int_t)phys));
	}
}

static int flat_resize(struct tnd_volume *vol, uint64_t num_blocks)
{
	struct flat_vol *fv = tnd_container_of(vol, struct flat_vol, vol);
	if (fv->passthrough || fv->read_only)
		return -EOPNOTSUPP;
	if (num_blocks < atomic_load(&fv->num_blocks))
		return -EINVAL; /* shrinking would cut off the user's data */
	if (ftruncate(fv->fd, (off_t)(num_blocks * fv->block_size)) < 0)
		return -errno;
	atomic_store(&fv->num_blocks, num_blocks);
	return 0;
}

static void flat_destroy(struct tnd_volume *vol)
{
	struct flat_vol *fv = tnd_container_of(vol, struct flat_vol, vol);
	if (fv->wfd != fv->fd)
		close(fv->wfd);
	close(fv->fd);
	pthread_spin_destroy(&fv->sync_lock);
	free(fv->path);
	free(fv);
}

static const struct tnd_volume_ops flat_ops = {
	.type = "flat",
	.ctx_size = sizeof(struct flat_io),
	.submit = flat_submit,
	.info = flat_info,
	.stats_json = flat_stats_json,
	.resize = flat_resize,
	.destroy = flat_destroy,
};

static const struct tnd_volume_ops passthrough_ops = {
	.type = "passthrough",
	.ctx_size = sizeof(struct flat_io),
	.submit = flat_submit,
	.info = flat_info,
	.stats_json = flat_stats_json,
	.destroy = flat_destroy,
};

/* Size and sector size of what @fd is; for files the sector is 512. */
static int probe(struct flat_vol *fv, uint64_t *bytes, uint32_t *sector)
{
	struct stat st;
	if (fstat(fv->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		int ss;
		if (ioctl(fv->fd, BLKGETSIZE64, &sz) < 0 || ioctl(fv->fd, BLKSSZGET, &ss) < 0)
			return -errno;
		fv->is_blockdev = true;
		*bytes = sz;
		*sector = (uint32_t)ss;
		return 0;
	}
	if (S_ISREG(st.st_mode)) {
		*bytes = (uint64_t)st.st_size;
		*sector = 512;
		return 0;
	}
	return S_ISDIR(st.st_mode) ? -EISDIR : -ENOTBLK;
}

/*
 * What O_DIRECT needs of buffers and offsets here: the file system says
 * (statx STATX_DIOALIGN, Linux 6.1+); a disk's logical sector otherwise;
 * else 4 KiB, which every device accepts.
 */
static void dio_align(struct flat_vol *fv, uint32_t sector)
{
	fv->dio_mem_align = fv->dio_off_align = DIO_ALIGN_DEFAULT;
	if (!fv->direct_read && !fv->direct_write)
		return;
	struct statx sx;
	if (statx(fv->wfd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align && sx.stx_dio_mem_align) {
		fv->dio_mem_align = sx.stx_dio_mem_align;
		fv->dio_off_align = sx.stx_dio_offset_align;
	} else if (fv->is_blockdev && sector) {
		fv->dio_mem_align = fv->dio_off_align = sector;
	}
}

int tnd_flat_open(const struct tnd_flat_opts *opts, struct tnd_volume **out)
{
	int ret;
	uint32_t bs = opts->block_size ? opts->block_size : 512;
	if (bs != 512 && bs != 4096) {
		tnd_err("flat", "%s: block size %u: must be 512 or 4096", opts->path, bs);
		return -EINVAL;
	}
	if (opts->size % bs) {
		tnd_err("flat", "%s: size %llu is not a multiple of the block size %u", opts->path,
			(unsigned long long)opts->size, bs);
		return -EINVAL;
	}
	if (!opts->passthrough && opts->size == 0) {
		tnd_err("flat", "%s: a flat device needs a size", opts->path);
		return -EINVAL;
	}

	struct flat_vol *fv = calloc(1, sizeof(*fv));
	if (!fv)
		return -ENOMEM;
	ret = -pthread_spin_init(&fv->sync_lock, PTHREAD_PROCESS_PRIVATE);
	if (ret < 0)
		goto err_free;
	fv->path = strdup(opts->path);
	if (!fv->path) {
		ret = -ENOMEM;
		goto err_spin;
	}
	fv->passthrough = opts->passthrough;
	fv->read_only = opts->read_only;
	fv->block_size = bs;

	if (opts->direct_writes && opts->passthrough) {
		tnd_err("flat", "%s: direct_writes is for flat images (passthrough is all direct)",
			opts->path);
		ret = -EINVAL;
		goto err_free_path;
	}
	int mode = opts->read_only ? O_RDONLY : O_RDWR;
	if (opts->passthrough) {
		/* Direct I/O where the device allows; a file on tmpfs does not. */
		fv->fd = open(opts->path, mode | O_CLOEXEC | O_DIRECT);
		if (fv->fd >= 0)
			fv->direct_read = fv->direct_write = true;
		else if (errno == EINVAL)
			fv->fd = open(opts->path, mode | O_CLOEXEC);
	} else {
		fv->fd = open(opts->path, mode | O_CLOEXEC | (opts->read_only ? 0 : O_CREAT), 0600);
	}
	if (fv->fd < 0) {
		ret = -errno;
		tnd_err("flat", "%s: cannot open: %s", opts->path, strerror(errno));
		goto err_free_path;
	}
	fv->wfd = fv->fd;

	uint64_t bytes = 0;
	uint32_t sector = 0;
	ret = probe(fv, &bytes, &sector);
	if (ret < 0) {
		tnd_err("flat", "%s: not a regular file or block device (%s)", opts->path, strerror(-ret));
		goto err_close_fd;
	}
	if (sector > bs) {
		tnd_err("flat", "%s: device sector size %u is larger than the block size %u",
			opts->path, sector, bs);
		ret = -EINVAL;
		goto err_close_fd;
	}

	uint64_t size = opts->size;
	if (opts->passthrough) {
		if (size == 0)
			size = bytes - bytes % bs;
		if (size > bytes) {
			tnd_err("flat", "%s: size %llu exceeds the device (%llu bytes)", opts->path,
				(unsigned long long)size, (unsigned long long)bytes);
			ret = -EINVAL;
			goto err_close_fd;
		}
	} else if (bytes > size) {
		tnd_err("flat", "%s: existing image is %llu bytes, larger than the configured size "
			"%llu; refusing to shrink it", opts->path, (unsigned long long)bytes,
			(unsigned long long)size);
		ret = -EINVAL;
		goto err_close_fd;
	} else if (bytes < size && !opts->read_only) {
		if (ftruncate(fv->fd, (off_t)size) < 0) {
			ret = -errno;
			tnd_err("flat", "%s: cannot size image: %s", opts->path, strerror(errno));
			goto err_close_fd;
		}
	}
	if (size == 0) {
		tnd_err("flat", "%s: empty device", opts->path);
		ret = -EINVAL;
		goto err_close_fd;
	}
	fv->num_blocks = size / bs;

	if (opts->direct_writes && !opts->read_only) {
		/* After the image has its size: the second descriptor never
		 * creates or truncates. EINVAL: the file system has no O_DIRECT. */
		fv->wfd = open(opts->path, O_WRONLY | O_CLOEXEC | O_DIRECT);
		if (fv->wfd >= 0) {
			fv->direct_write = true;
		} else if (errno == EINVAL) {
			tnd_info("flat", "%s: the file system refuses O_DIRECT; writes go through the "
				 "page cache", opts->path);
			fv->wfd = fv->fd;
		} else {
			ret = -errno;
			tnd_err("flat", "%s: cannot open for direct writes: %s", opts->path,
				strerror(errno));
			fv->wfd = fv->fd;
			goto err_close_fd;
		}
	}
	dio_align(fv, sector);
	struct statfs sfs;
	fv->write_async = !fv->direct_write && !fv->is_blockdev && fstatfs(fv->wfd, &sfs) == 0 &&
			  sfs.f_type == EXT4_SUPER_MAGIC;
	tnd_volume_init(&fv->vol, opts->passthrough ? &passthrough_ops : &flat_ops, NULL);
	*out = &fv->vol;
	return 0;

err_close_fd:
	if (fv->wfd != fv->fd)
		close(fv->wfd);
	close(fv->fd);
err_free_path:
	free(fv->path);
err_spin:
	pthread_spin_destroy(&fv->sync_lock);
err_free:
	free(fv);
	return ret;
}
