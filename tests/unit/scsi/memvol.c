/* memvol.c — see memvol.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "memvol.h"
#include "tnd_common.h"
#include "tnd_reactor.h"

struct memvol_io {
	struct tnd_msg msg;
	struct tnd_io *io;
	int status;
};

static void memvol_complete(struct tnd_msg *msg)
{
	struct memvol_io *m = tnd_container_of(msg, struct memvol_io, msg);
	struct tnd_io *io = m->io;
	io->cb(io, m->status);
}

static bool block_is_zero(const uint8_t *p, uint32_t bs)
{
	for (uint32_t i = 0; i < bs; i++)
		if (p[i])
			return false;
	return true;
}

static int memvol_do(struct memvol *mv, struct tnd_io *io)
{
	uint32_t bs = mv->info.block_size;
	if (io->type == TND_IO_FLUSH)
		return 0;
	if (io->lba > mv->info.num_blocks || io->nblocks > mv->info.num_blocks - io->lba)
		return -EINVAL;
	uint8_t *p = mv->data + io->lba * bs;
	size_t len = (size_t)io->nblocks * bs;
	switch (io->type) {
	case TND_IO_READ:
	case TND_IO_WRITE: {
		if (tnd_iov_length(io->iov, io->iovcnt) != len)
			return -EINVAL;
		for (int i = 0; i < io->iovcnt; i++) {
			if (io->type == TND_IO_READ)
				memcpy(io->iov[i].iov_base, p, io->iov[i].iov_len);
			else
				memcpy(p, io->iov[i].iov_base, io->iov[i].iov_len);
			p += io->iov[i].iov_len;
		}
		return 0;
	}
	case TND_IO_UNMAP:
	case TND_IO_WRITE_ZEROES:
		memset(p, 0, len);
		return 0;
	case TND_IO_BLOCK_STATUS: {
		if (!mv->block_status)
			return -EOPNOTSUPP;
		if (io->iovcnt != 1 || io->iov[0].iov_len < sizeof(struct tnd_block_status) ||
		    io->nblocks == 0)
			return -EINVAL;
		struct tnd_block_status *st = io->iov[0].iov_base;
		bool mapped = !block_is_zero(p, bs);
		uint32_t n = 1;
		while (n < io->nblocks && !block_is_zero(p + (size_t)n * bs, bs) == mapped)
			n++;
		st->nblocks = n;
		st->mapped = mapped;
		return 0;
	}
	default:
		return -EOPNOTSUPP;
	}
}

static int memvol_submit(struct tnd_volume *vol, struct tnd_io *io)
{
	struct memvol *mv = (struct memvol *)vol;
	pthread_mutex_lock(&mv->lock);
	mv->last.type = io->type;
	mv->last.flags = io->flags;
	mv->last.lba = io->lba;
	mv->last.nblocks = io->nblocks;
	mv->count[io->type]++;
	int status;
	if (mv->fail_err && mv->fail_type == io->type) {
		status = mv->fail_err;
		mv->fail_err = 0;
		if (mv->fail_submit) {
			mv->fail_submit = false;
			pthread_mutex_unlock(&mv->lock);
			return status;
		}
	} else if (io->type != TND_IO_READ && io->type != TND_IO_FLUSH && mv->info.read_only) {
		status = -EROFS;
	} else {
		status = memvol_do(mv, io);
	}
	pthread_mutex_unlock(&mv->lock);
	struct memvol_io *m = tnd_io_ctx(io, vol);
	m->msg.fn = memvol_complete;
	m->io = io;
	m->status = status;
	tnd_reactor_send(io->reactor, &m->msg);
	return 0;
}

static void memvol_info(struct tnd_volume *vol, struct tnd_volume_info *out)
{
	*out = ((struct memvol *)vol)->info;
}

static int memvol_resize(struct tnd_volume *vol, uint64_t num_blocks)
{
	struct memvol *mv = (struct memvol *)vol;
	uint8_t *d = realloc(mv->data, num_blocks * mv->info.block_size);
	if (!d)
		return -ENOMEM;
	if (num_blocks > mv->info.num_blocks)
		memset(d + mv->info.num_blocks * mv->info.block_size, 0,
		       (num_blocks - mv->info.num_blocks) * mv->info.block_size);
	mv->data = d;
	mv->info.num_blocks = num_blocks;
	return 0;
}

static void memvol_destroy(struct tnd_volume *vol)
{
	struct memvol *mv = (struct memvol *)vol;
	pthread_mutex_destroy(&mv->lock);
	free(mv->data);
	free(mv);
}

static const struct tnd_volume_ops memvol_ops = {
	.type = "mem",
	.ctx_size = sizeof(struct memvol_io),
	.submit = memvol_submit,
	.info = memvol_info,
	.resize = memvol_resize,
	.destroy = memvol_destroy,
};

struct memvol *memvol_create(uint32_t block_size, uint64_t num_blocks)
{
	struct memvol *mv = calloc(1, sizeof(*mv));
	if (!mv)
		return NULL;
	mv->data = calloc(num_blocks, block_size);
	if (!mv->data) {
		free(mv);
		return NULL;
	}
	pthread_mutex_init(&mv->lock, NULL);
	tnd_volume_init(&mv->vol, &memvol_ops, NULL);
	mv->info = (struct tnd_volume_info){
		.block_size = block_size,
		.num_blocks = num_blocks,
		.write_cache = true,
		.thin = true,
		.unmap_zeroes = true,
		.rotational = false,
		.opt_io_blocks = 4096 / block_size ? 4096 / block_size : 1,
		.max_unmap_blocks = 1u << 16,
	};
	return mv;
}
