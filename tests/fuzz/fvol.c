/* fvol.c — see fvol.h. */
#include "fvol.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "tnd_reactor.h"

struct fvol_io {
	struct tnd_msg msg;
	struct tnd_io *io;
	struct fvol *fv;
	int status;
};

static void fvol_complete(struct tnd_msg *msg)
{
	struct fvol_io *m = tnd_container_of(msg, struct fvol_io, msg);
	m->fv->inflight--;
	m->io->cb(m->io, m->status);
}

static int fvol_do(struct fvol *fv, struct tnd_io *io)
{
	uint32_t bs = fv->info.block_size;
	if (io->type == TND_IO_FLUSH)
		return 0;
	if (fv->rw_only && io->type != TND_IO_READ && io->type != TND_IO_WRITE)
		abort();
	if (io->lba > fv->info.num_blocks || io->nblocks > fv->info.num_blocks - io->lba)
		return -EINVAL;
	uint8_t *p = fv->data + io->lba * bs;
	size_t len = (size_t)io->nblocks * bs;
	switch (io->type) {
	case TND_IO_READ:
	case TND_IO_WRITE:
		if (tnd_iov_length(io->iov, io->iovcnt) != len)
			abort(); /* the SCSI layer sized the buffer wrongly */
		for (int i = 0; i < io->iovcnt; i++) {
			if (io->type == TND_IO_READ)
				memcpy(io->iov[i].iov_base, p, io->iov[i].iov_len);
			else
				memcpy(p, io->iov[i].iov_base, io->iov[i].iov_len);
			p += io->iov[i].iov_len;
		}
		return 0;
	case TND_IO_UNMAP:
	case TND_IO_WRITE_ZEROES:
		memset(p, 0, len);
		return 0;
	default:        /* BLOCK_STATUS: cannot tell, as the contract allows */
		return -EOPNOTSUPP;
	}
}

static int fvol_submit(struct tnd_volume *vol, struct tnd_io *io)
{
	struct fvol *fv = (struct fvol *)vol;
	int status;
	fv->touched++;
	if (fv->fail_err && fv->fail_type == io->type) {
		status = fv->fail_err;
		fv->fail_err = 0;
		if (status == -EBUSY)
			return status; /* refused at submit: no callback */
	} else {
		status = fvol_do(fv, io);
	}
	struct fvol_io *m = tnd_io_ctx(io, vol);
	m->msg.fn = fvol_complete;
	m->io = io;
	m->fv = fv;
	m->status = status;
	fv->inflight++;
	tnd_reactor_send(io->reactor, &m->msg);
	return 0;
}

static void fvol_info(struct tnd_volume *vol, struct tnd_volume_info *out)
{
	*out = ((struct fvol *)vol)->info;
}

static void fvol_destroy(struct tnd_volume *vol)
{
	struct fvol *fv = (struct fvol *)vol;
	free(fv->data);
	free(fv);
}

static const struct tnd_volume_ops fvol_ops = {
	.type = "fuzz",
	.ctx_size = sizeof(struct fvol_io),
	.submit = fvol_submit,
	.info = fvol_info,
	.destroy = fvol_destroy,
};

struct fvol *fvol_create(uint32_t bs, uint64_t nblocks)
{
	struct fvol *fv = calloc(1, sizeof(*fv));
	if (!fv)
		abort();
	fv->data = calloc(nblocks, bs);
	if (!fv->data)
		abort();
	fv->cap_blocks = nblocks;
	tnd_volume_init(&fv->vol, &fvol_ops, NULL);
	fv->info = (struct tnd_volume_info){
		.block_size = bs,
		.num_blocks = nblocks,
		.write_cache = true,
		.thin = true,
		.unmap_zeroes = true,
		.opt_io_blocks = 4096 / bs ? 4096 / bs : 1,
		.max_unmap_blocks = 32,
	};
	return fv;
}

static void fuzz_done(struct tnd_scsi_cmd *cmd)
{
	struct fuzz_cmd *f = tnd_container_of(cmd, struct fuzz_cmd, c);
	f->calls++;
}

static bool fuzz_cancelled(const struct tnd_scsi_cmd *cmd)
{
	struct fuzz_cmd *f = tnd_container_of(cmd, struct fuzz_cmd, c);
	return f->cancel && f->steps++ > 0;
}

void fuzz_cmd_init(struct fuzz_cmd *f, struct tnd_reactor *r, struct tnd_scsi_nexus *nx,
		   struct tnd_scsi_lu *lu, const uint8_t *cdb, uint8_t cdb_len, uint8_t *buf,
		   uint32_t len, enum tnd_scsi_dir dir)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->c.cdb, cdb, 16);
	f->c.cdb_len = cdb_len;
	f->c.lu = lu;
	f->c.nexus = nx;
	f->c.reactor = r;
	f->c.data = buf;
	f->c.data_len = len;
	f->c.exp_len = len;
	f->c.dir = dir;
	f->c.done = fuzz_done;
	f->c.cancelled = fuzz_cancelled;
}

void fuzz_cmd_run(struct fuzz_cmd *f, struct tnd_reactor *r, unsigned max_polls,
		  struct fvol *const *vols, unsigned nvols)
{
	tnd_scsi_exec(&f->c);
	for (unsigned i = 0; i < max_polls && f->calls == 0; i++)
		if (tnd_reactor_poll(r, 0) < 0)
			abort();
	for (int i = 0; i < 2; i++)
		tnd_reactor_poll(r, 0);
	if (f->calls != 1) {
		fprintf(stderr, "command %02x completed %d times\n", f->c.cdb[0], f->calls);
		abort();
	}
	if (f->c.in_len > f->c.data_len || f->c.io || f->c.bounce || f->c.xcopy)
		abort();
	if (f->c.status == TND_SAM_CHECK_CONDITION &&
	    (f->c.sense_len < 18 || (f->c.sense[0] & 0x7f) != 0x70))
		abort();
	for (unsigned i = 0; i < nvols; i++)
		if (vols[i]->inflight)
			abort();
}
