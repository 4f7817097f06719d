/*
 * scsi_sbc.c — block commands (SBC-3): capacity, READ/WRITE in all sizes,
 * VERIFY, WRITE AND VERIFY, SYNCHRONIZE CACHE, UNMAP, WRITE SAME, GET LBA
 * STATUS, PRE-FETCH, START STOP UNIT.
 *
 * Everything that touches the medium runs as a task: one allocation that
 * holds the task's progress and, after it, a struct tnd_io of
 * tnd_volume_io_size() bytes that the task reuses for each step (a command
 * that needs several volume I/Os issues them one after the other: UNMAP
 * descriptor by descriptor, WRITE SAME and VERIFY chunk by chunk). Each
 * step's completion calls task->step; the last step finishes the command
 * and frees the task. Volume completions arrive on cmd->reactor, so a task
 * is only ever touched by that reactor's thread.
 *
 * The decoding rules every block command shares live here once:
 * sbc_range_ok() for LBA OUT OF RANGE, the maximum transfer check, and
 * sbc_write_flags() for when a write must be FUA.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_priv.h"

/* Chunk size for commands that loop over a range (WRITE SAME, VERIFY). */
#define SBC_CHUNK_BYTES (1u << 20)
/* Blocks per WRITE_ZEROES / UNMAP I/O of a WRITE SAME. */
#define SBC_ZERO_CHUNK_BLOCKS (1u << 16)

struct sbc_task;
typedef void (*sbc_step_fn)(struct sbc_task *t, int status);

struct sbc_task {
	struct tnd_scsi_cmd *cmd;
	struct tnd_volume *vol;
	sbc_step_fn step;
	enum scsi_err_ctx err_ctx;   /* how a failure of the current step reads */
	uint32_t bs;
	uint64_t lba;                /* next block to work on */
	uint64_t left;               /* blocks still to do */
	uint32_t chunk;              /* blocks per I/O */
	uint32_t done_bytes;         /* progress through the data-out */
	uint32_t bytes;              /* the whole transfer */
	unsigned flags;              /* TND_IO_* for writes */
	uint8_t bytchk;              /* VERIFY: 1 = compare all, 3 = one block */
	enum tnd_io_type zero_type;  /* WRITE SAME of zeros: UNMAP or WRITE_ZEROES */
	unsigned idx, nr;            /* UNMAP: descriptor cursor */
	uint8_t *buf;                /* bounce buffer, owned */
	struct iovec iov;
	struct tnd_scsi_lu *lu;      /* COMPARE AND WRITE: whose lock we hold */
	struct scsi_caw_waiter caw;
	struct tnd_io *io;
};

/* ---- the task machinery ---- */

static struct sbc_task *task_new(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	size_t off = (sizeof(struct sbc_task) + 15) & ~(size_t)15;
	size_t io_size = tnd_volume_io_size(ctx->lu->vol);
	struct sbc_task *t = aligned_alloc(16, (off + io_size + 15) & ~(size_t)15);
	if (!t) {
		scsi_check_errno(cmd, -ENOMEM, SCSI_ERR_READ);
		return NULL;
	}
	memset(t, 0, off + io_size);
	t->cmd = cmd;
	t->vol = ctx->lu->vol;
	t->bs = ctx->info.block_size;
	t->io = (struct tnd_io *)((char *)t + off);
	cmd->io = t->io;
	return t;
}

/* Finish the command: GOOD for @status 0, else sense from the errno. */
static void task_finish(struct sbc_task *t, int status)
{
	struct tnd_scsi_cmd *cmd = t->cmd;
	enum scsi_err_ctx what = t->err_ctx;
	free(t->buf);
	free(t);
	cmd->io = NULL;
	cmd->bounce = NULL;
	if (status < 0)
		scsi_check_errno(cmd, status, what);
	else
		scsi_complete(cmd);
}

/* Finish with MISCOMPARE at byte @offset of the data compared. */
static void task_finish_miscompare(struct sbc_task *t, uint32_t offset)
{
	struct tnd_scsi_cmd *cmd = t->cmd;
	free(t->buf);
	free(t);
	cmd->io = NULL;
	cmd->bounce = NULL;
	scsi_check_miscompare(cmd, offset);
}

/* Offset of the first differing byte of two buffers known to differ. */
static uint32_t first_diff(const uint8_t *a, const uint8_t *b)
{
	uint32_t i = 0;
	while (a[i] == b[i])
		i++;
	return i;
}

static void task_io_done(struct tnd_io *io, int status)
{
	struct sbc_task *t = io->cb_arg;
	t->step(t, status);
}

/* Issue one volume I/O; its completion (or refusal) runs @next. */
static void task_submit(struct sbc_task *t, enum tnd_io_type type, uint64_t lba,
			uint32_t nblocks, void *buf, size_t len, unsigned flags,
			sbc_step_fn next)
{
	struct tnd_io *io = t->io;
	io->type = type;
	io->flags = flags;
	io->lba = lba;
	io->nblocks = nblocks;
	t->iov.iov_base = buf;
	t->iov.iov_len = len;
	io->iov = buf ? &t->iov : NULL;
	io->iovcnt = buf ? 1 : 0;
	io->reactor = t->cmd->reactor;
	io->cb = task_io_done;
	io->cb_arg = t;
	t->step = next;
	t->err_ctx = type == TND_IO_READ || type == TND_IO_BLOCK_STATUS ? SCSI_ERR_READ
									 : SCSI_ERR_WRITE;
	int ret = tnd_volume_submit(t->vol, io);
	if (ret < 0)
		next(t, ret);
}

/* ---- shared checks ---- */

/* True when [lba, lba + n) lies on the medium; else LBA OUT OF RANGE. */
static bool sbc_range_ok(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx, uint64_t lba,
			 uint64_t n)
{
	uint64_t cap = ctx->info.num_blocks;
	if (lba > cap || n > cap - lba) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_LBA_OUT_OF_RANGE);
		return false;
	}
	return true;
}

/*
 * With the LU's WCE turned off by MODE SELECT on a volume that caches,
 * every write is made stable before it is acknowledged, which is what
 * WCE=0 promises.
 */
static unsigned sbc_write_flags(const struct scsi_ctx *ctx, bool fua)
{
	if (fua || (ctx->info.write_cache && !scsi_lu_wce(ctx->lu, &ctx->info)))
		return TND_IO_FUA;
	return 0;
}

struct lba_len {
	uint64_t lba;
	uint32_t n;
	uint8_t len_off;  /* where the length field is, for field pointers */
};

/* LBA and length of the 10/12/16-byte block command layouts. */
static struct lba_len decode_lba_len(const uint8_t *cdb)
{
	switch (cdb[0] >> 5) {
	case 0: /* 6-byte: 21-bit LBA, 8-bit length */
		return (struct lba_len){ tnd_get_be24(cdb + 1) & 0x1fffff, cdb[4], 4 };
	case 1:
	case 2: /* 10-byte */
		return (struct lba_len){ tnd_get_be32(cdb + 2), tnd_get_be16(cdb + 7), 7 };
	case 4: /* 16-byte */
		return (struct lba_len){ tnd_get_be64(cdb + 2), tnd_get_be32(cdb + 10), 10 };
	case 5: /* 12-byte */
		return (struct lba_len){ tnd_get_be32(cdb + 2), tnd_get_be32(cdb + 6), 6 };
	default:
		return (struct lba_len){ 0, 0, 0 };
	}
}

/* ---- capacity ---- */

void sbc_read_capacity_10(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	/* Without PMI the LBA field must be zero (SBC-3 5.15). */
	if (!(cdb[8] & 0x01) && tnd_get_be32(cdb + 2) != 0) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, -1);
		return;
	}
	uint64_t last = ctx->info.num_blocks ? ctx->info.num_blocks - 1 : 0;
	uint8_t b[8];
	/* Too large for 32 bits: FFFFFFFFh sends the initiator to (16). */
	tnd_put_be32(b, last >= 0xffffffffull ? 0xffffffffu : (uint32_t)last);
	tnd_put_be32(b + 4, ctx->info.block_size);
	scsi_data_in(cmd, b, sizeof(b));
	scsi_complete(cmd);
}

void sbc_read_capacity_16(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	uint32_t alloc = tnd_get_be32(cmd->cdb + 10);
	uint8_t b[32] = { 0 };
	tnd_put_be64(b, ctx->info.num_blocks ? ctx->info.num_blocks - 1 : 0);
	tnd_put_be32(b + 8, ctx->info.block_size);
	if (ctx->info.thin) {
		b[14] |= 0x80;                  /* LBPME */
		if (ctx->info.unmap_zeroes)
			b[14] |= 0x40;          /* LBPRZ */
	}
	scsi_data_in(cmd, b, TND_MIN((uint32_t)sizeof(b), alloc));
	scsi_complete(cmd);
}

/* ---- START STOP UNIT ---- */

static void step_finish(struct sbc_task *t, int status)
{
	task_finish(t, status);
}

void sbc_start_stop_unit(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	bool start = cdb[4] & 0x01, loej = cdb[4] & 0x02, no_flush = cdb[4] & 0x04;
	unsigned power = cdb[4] >> 4;
	/* With a POWER CONDITION, START and LOEJ are ignored (SBC-3 5.25);
	 * we have no power states, so there is nothing to do. */
	if (power) {
		scsi_complete(cmd);
		return;
	}
	/* Our medium is not removable (RMB=0): it cannot be ejected. */
	if (loej && !start) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 4, 1);
		return;
	}
	/* A disk asked to stop writes its cache out first, as a real one
	 * would; starting or loading a LUN has nothing to do. */
	if (!start && !no_flush && ctx->info.write_cache) {
		sbc_flush(cmd, ctx);
		return;
	}
	scsi_complete(cmd);
}

/* ---- READ / WRITE / WRITE AND VERIFY ---- */

static void verify_next(struct sbc_task *t, int status);

/* Start comparing [t->lba, +t->left) with the data-out (bytchk 1) or
 * with its first block repeated (bytchk 3). */
static void verify_start(struct sbc_task *t)
{
	t->chunk = SBC_CHUNK_BYTES / t->bs;
	if (t->chunk == 0)
		t->chunk = 1;
	uint32_t n = (uint32_t)TND_MIN((uint64_t)t->chunk, t->left);
	free(t->buf);
	t->buf = malloc((size_t)n * t->bs);
	if (!t->buf) {
		task_finish(t, -ENOMEM);
		return;
	}
	t->done_bytes = 0;
	verify_next(t, 0);
}

static void verify_read_done(struct sbc_task *t, int status)
{
	if (status < 0) {
		task_finish(t, status);
		return;
	}
	uint32_t len = (uint32_t)t->iov.iov_len;
	const uint8_t *want = t->cmd->data;
	for (uint32_t off = 0; off < len; off += t->bs) {
		const uint8_t *w = t->bytchk == 3 ? want : want + t->done_bytes + off;
		if (memcmp(t->buf + off, w, t->bs) != 0) {
			task_finish_miscompare(t, t->done_bytes + off + first_diff(t->buf + off, w));
			return;
		}
	}
	t->done_bytes += len;
	verify_next(t, 0);
}

static void verify_next(struct sbc_task *t, int status)
{
	if (status < 0 || t->left == 0) {
		task_finish(t, status);
		return;
	}
	uint32_t n = (uint32_t)TND_MIN((uint64_t)t->chunk, t->left);
	uint64_t lba = t->lba;
	t->lba += n;
	t->left -= n;
	task_submit(t, TND_IO_READ, lba, n, t->buf, (size_t)n * t->bs, 0, verify_read_done);
}

static void rw_read_done(struct sbc_task *t, int status)
{
	struct tnd_scsi_cmd *cmd = t->cmd;
	if (status >= 0) {
		uint32_t n = TND_MIN(t->bytes, cmd->data_len);
		if (t->buf && n)
			memcpy(cmd->data, t->buf, n);
		cmd->in_len = n;
	}
	task_finish(t, status);
}

static void rw_write_done(struct sbc_task *t, int status)
{
	if (status >= 0 && t->bytchk) {
		/* WRITE AND VERIFY: read back what is now on the medium. */
		t->bytchk = 1;
		verify_start(t);
		return;
	}
	task_finish(t, status);
}

void sbc_rw(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	const struct scsi_op *op = ctx->op;
	bool write = op->xfer == SCSI_XFER_OUT_BLOCKS;
	bool verify = cdb[0] == SCSI_WRITE_VERIFY_10 || cdb[0] == SCSI_WRITE_VERIFY_12 ||
		      cdb[0] == SCSI_WRITE_VERIFY_16;
	struct lba_len ll = decode_lba_len(cdb);
	uint64_t n = ll.n;
	if (n == 0 && (op->flags & SCSI_OP_ZERO_IS_256))
		n = 256;
	bool fua = op->cdb_len > 6 && !verify && (cdb[1] & 0x08);

	if (!sbc_range_ok(cmd, ctx, ll.lba, n))
		return;
	if (n == 0) {
		scsi_complete(cmd);
		return;
	}
	uint64_t bytes = n * ctx->info.block_size;
	if (bytes > TND_SCSI_MAX_XFER_BYTES) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, ll.len_off, -1);
		return;
	}
	cmd->xfer_len = (uint32_t)bytes;

	/*
	 * The initiator's Expected Data Transfer Length may be shorter than
	 * the CDB's transfer length (RFC 7143 residual overflow). We move only
	 * what it allowed: a write stores the whole blocks it sent and drops a
	 * partial one, a read returns the first data_len bytes. The range
	 * check above still covered the CDB's full range.
	 */
	uint32_t avail = write ? ctx->dout_len : (cmd->data ? cmd->data_len : 0);
	uint32_t bs = ctx->info.block_size;
	if (avail < bytes) {
		if (write)
			n = avail / bs;
		else
			n = (avail + bs - 1) / bs;
		if (n == 0) {
			scsi_complete(cmd);
			return;
		}
		bytes = n * bs;
	}

	struct sbc_task *t = task_new(cmd, ctx);
	if (!t)
		return;
	t->bytes = (uint32_t)bytes;
	t->lba = ll.lba;
	t->left = n;

	if (write) {
		t->bytchk = verify ? 1 : 0;
		/* Verification reads back the medium, so the write must have
		 * reached it first. */
		unsigned flags = sbc_write_flags(ctx, fua || verify);
		task_submit(t, TND_IO_WRITE, ll.lba, (uint32_t)n, cmd->data, bytes, flags,
			    rw_write_done);
		return;
	}

	void *dst = cmd->data;
	if (avail < bytes) {
		/* The last block does not fit whole: read it aside. */
		t->buf = malloc(bytes);
		if (!t->buf) {
			task_finish(t, -ENOMEM);
			return;
		}
		dst = t->buf;
		cmd->bounce = t->buf;
	}
	task_submit(t, TND_IO_READ, ll.lba, (uint32_t)n, dst, bytes, 0, rw_read_done);
}

/* ---- VERIFY ---- */

int sbc_xfer_verify(const uint8_t *cdb, uint32_t block_size, enum tnd_scsi_dir *dir,
		    uint32_t *len)
{
	unsigned bytchk = (cdb[1] >> 1) & 3;
	struct lba_len ll = decode_lba_len(cdb);
	uint64_t n;
	switch (bytchk) {
	case 0:
		n = 0;
		break;
	case 1:
		n = (uint64_t)ll.n * block_size;
		break;
	case 3:
		n = ll.n ? block_size : 0;
		break;
	default:
		return -EINVAL;
	}
	if (n > UINT32_MAX)
		return -EINVAL;
	*len = (uint32_t)n;
	*dir = n ? TND_SCSI_DIR_WRITE : TND_SCSI_DIR_NONE;
	return 0;
}

void sbc_verify(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	unsigned bytchk = (cdb[1] >> 1) & 3;
	struct lba_len ll = decode_lba_len(cdb);
	uint32_t bs = ctx->info.block_size;

	if (bytchk == 2) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 2);
		return;
	}
	if (!sbc_range_ok(cmd, ctx, ll.lba, ll.n))
		return;
	if (ll.n == 0 || bytchk == 0) {
		/* Without a byte check there is nothing to compare: the range
		 * is on the medium, and our medium has no latent errors we
		 * could find faster than the next read does. */
		scsi_complete(cmd);
		return;
	}
	uint64_t out = bytchk == 1 ? (uint64_t)ll.n * bs : bs;
	if (out > TND_SCSI_MAX_XFER_BYTES) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, ll.len_off, -1);
		return;
	}
	if (ctx->dout_len < out) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, ll.len_off, -1);
		return;
	}
	struct sbc_task *t = task_new(cmd, ctx);
	if (!t)
		return;
	cmd->xfer_len = (uint32_t)out;
	t->bytchk = (uint8_t)bytchk;
	t->lba = ll.lba;
	t->left = ll.n;
	verify_start(t);
}

/* ---- SYNCHRONIZE CACHE / PRE-FETCH ---- */

void sbc_sync_cache(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	struct lba_len ll = decode_lba_len(cmd->cdb);
	if (!sbc_range_ok(cmd, ctx, ll.lba, ll.n))
		return;
	/* The volume flushes as a whole; a range (or IMMED) changes nothing
	 * about what must be stable when we answer. */
	sbc_flush(cmd, ctx);
}

void sbc_flush(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	struct sbc_task *t = task_new(cmd, ctx);
	if (t)
		task_submit(t, TND_IO_FLUSH, 0, 0, NULL, 0, 0, step_finish);
}

void sbc_pre_fetch(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	struct lba_len ll = decode_lba_len(cmd->cdb);
	if (!sbc_range_ok(cmd, ctx, ll.lba, ll.n))
		return;
	/* A hint; the cache layer below prefetches on its own terms. GOOD
	 * (not CONDITION MET) says we promise nothing about residency. */
	scsi_complete(cmd);
}

/* ---- UNMAP ---- */

static void unmap_next(struct sbc_task *t, int status)
{
	const uint8_t *p = t->cmd->data;
	while (status >= 0 && t->idx < t->nr) {
		const uint8_t *d = p + 8 + 16 * t->idx++;
		uint64_t lba = tnd_get_be64(d);
		uint32_t n = tnd_get_be32(d + 8);
		if (n) {
			task_submit(t, TND_IO_UNMAP, lba, n, NULL, 0, 0, unmap_next);
			return;
		}
	}
	task_finish(t, status);
}

void sbc_unmap(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	uint32_t plen = tnd_get_be16(cdb + 7);
	const uint8_t *p = cmd->data;

	if (cdb[1] & 0x01) {
		/* ANCHOR: we have no anchored state. */
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 0);
		return;
	}
	if (plen == 0) {
		scsi_complete(cmd);
		return;
	}
	if (plen < 8 || ctx->dout_len < plen) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
		return;
	}
	cmd->xfer_len = plen;
	/* A descriptor cut short by either length is ignored (SBC-3 5.28.2). */
	uint32_t bddl = TND_MIN((uint32_t)tnd_get_be16(p + 2), plen - 8);
	unsigned nr = bddl / 16;
	if (nr > SCSI_MAX_UNMAP_DESCRIPTORS) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 2, -1);
		return;
	}
	uint64_t total = 0;
	for (unsigned i = 0; i < nr; i++) {
		const uint8_t *d = p + 8 + 16 * i;
		uint64_t lba = tnd_get_be64(d);
		uint32_t n = tnd_get_be32(d + 8);
		if (!sbc_range_ok(cmd, ctx, lba, n))
			return;
		total += n;
	}
	if (total > scsi_max_unmap_blocks(&ctx->info)) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 8 + 8, -1);
		return;
	}
	struct sbc_task *t = task_new(cmd, ctx);
	if (!t)
		return;
	t->nr = nr;
	unmap_next(t, 0);
}

/* ---- WRITE SAME ---- */

int sbc_xfer_write_same(const uint8_t *cdb, uint32_t block_size, enum tnd_scsi_dir *dir,
			uint32_t *len)
{
	bool ndob = cdb[0] == SCSI_WRITE_SAME_16 && (cdb[1] & 0x01);
	*len = ndob ? 0 : block_size;
	*dir = ndob ? TND_SCSI_DIR_NONE : TND_SCSI_DIR_WRITE;
	return 0;
}

static void write_same_next(struct sbc_task *t, int status)
{
	if (status < 0 || t->left == 0) {
		task_finish(t, status);
		return;
	}
	uint32_t n = (uint32_t)TND_MIN((uint64_t)t->chunk, t->left);
	uint64_t lba = t->lba;
	t->lba += n;
	t->left -= n;
	if (t->buf)
		task_submit(t, TND_IO_WRITE, lba, n, t->buf, (size_t)n * t->bs, t->flags,
			    write_same_next);
	else
		task_submit(t, t->zero_type, lba, n, NULL, 0, t->flags, write_same_next);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

void sbc_write_same(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	bool ten = cdb[0] == SCSI_WRITE_SAME_10;
	bool unmap = cdb[1] & 0x08;
	bool ndob = !ten && (cdb[1] & 0x01);
	struct lba_len ll = decode_lba_len(cdb);
	uint32_t bs = ctx->info.block_size;

	if (cdb[1] & 0x10) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 4); /* ANCHOR */
		return;
	}
	if (unmap && !scsi_info_lbp(&ctx->info)) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 3);
		return;
	}
	/* WSNZ=1 in the Block Limits page: 0 does not mean "to the end". */
	if (ll.n == 0 || ll.n > SCSI_MAX_WRITE_SAME_BLOCKS) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, ll.len_off, -1);
		return;
	}
	if (!sbc_range_ok(cmd, ctx, ll.lba, ll.n))
		return;
	/* Exactly one block of data-out (none with NDOB): anything else means
	 * initiator and target disagree about the command. */
	uint32_t want = ndob ? 0 : bs;
	if (ctx->dout_len != want) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, ll.len_off, -1);
		return;
	}

	struct sbc_task *t = task_new(cmd, ctx);
	if (!t)
		return;
	cmd->xfer_len = ndob ? 0 : bs;
	t->lba = ll.lba;
	t->left = ll.n;
	t->flags = sbc_write_flags(ctx, false);

	if (ndob || all_zero(cmd->data, bs)) {
		/* Zeros: let the volume deallocate when the initiator allows it
		 * and deallocated blocks read back as zeros. */
		bool dealloc = unmap && ctx->info.unmap_zeroes;
		t->zero_type = dealloc ? TND_IO_UNMAP : TND_IO_WRITE_ZEROES;
		t->chunk = dealloc ? TND_MIN(scsi_max_unmap_blocks(&ctx->info), SBC_ZERO_CHUNK_BLOCKS)
				   : SBC_ZERO_CHUNK_BLOCKS;
		if (dealloc)
			t->flags = 0;
	} else {
		t->chunk = TND_MAX(SBC_CHUNK_BYTES / bs, 1u);
		uint32_t n = (uint32_t)TND_MIN((uint64_t)t->chunk, (uint64_t)ll.n);
		t->buf = malloc((size_t)n * bs);
		if (!t->buf) {
			task_finish(t, -ENOMEM);
			return;
		}
		for (uint32_t i = 0; i < n; i++)
			memcpy(t->buf + (size_t)i * bs, cmd->data, bs);
	}
	write_same_next(t, 0);
}

/* ---- GET LBA STATUS ---- */

/*
 * GET LBA STATUS: one descriptor per run of mapped or deallocated blocks
 * from the requested LBA on, as many as the allocation length holds (at
 * most GLS_MAX_DESC), each asked of the volume with TND_IO_BLOCK_STATUS.
 * A volume that cannot tell gets the rest of the medium as one mapped
 * extent: "mapped or unknown" is what SBC-3 status 0 means, and it is
 * never wrong about what a read returns.
 */
#define GLS_MAX_DESC 64u

static void gls_step(struct sbc_task *t, int status);

static void gls_query(struct sbc_task *t)
{
	struct tnd_block_status *bs = (struct tnd_block_status *)(t->buf + 8 + 16 * GLS_MAX_DESC);
	task_submit(t, TND_IO_BLOCK_STATUS, t->lba, (uint32_t)TND_MIN(t->left, 0xffffffffull), bs,
		    sizeof(*bs), 0, gls_step);
}

static void gls_finish(struct sbc_task *t)
{
	uint32_t len = 8 + 16 * t->idx;
	tnd_put_be32(t->buf, len - 4);
	scsi_data_in(t->cmd, t->buf, TND_MIN(len, t->bytes));
	task_finish(t, 0);
}

static void gls_add(struct sbc_task *t, uint64_t n, bool mapped)
{
	uint8_t *prev = t->idx ? t->buf + 8 + 16 * (t->idx - 1) : NULL;
	uint8_t state = mapped ? 0x0 : 0x1;
	/* A volume may cut a long run in pieces: join them while they fit. */
	if (prev && (prev[12] & 0xf) == state && tnd_get_be32(prev + 8) + n <= 0xffffffffull) {
		tnd_put_be32(prev + 8, (uint32_t)(tnd_get_be32(prev + 8) + n));
	} else {
		uint8_t *d = t->buf + 8 + 16 * t->idx++;
		tnd_put_be64(d, t->lba);
		tnd_put_be32(d + 8, (uint32_t)TND_MIN(n, 0xffffffffull));
		d[12] = state;
		n = TND_MIN(n, 0xffffffffull);
	}
	t->lba += n;
	t->left -= n;
}

static void gls_step(struct sbc_task *t, int status)
{
	const struct tnd_block_status *bs = t->iov.iov_base;
	if (status == -EOPNOTSUPP && t->idx == 0) {
		gls_add(t, t->left, true);
		gls_finish(t);
		return;
	}
	if (status < 0) {
		task_finish(t, status);
		return;
	}
	if (bs->nblocks == 0 || bs->nblocks > t->left) {
		task_finish(t, -EIO);   /* a volume broke the contract */
		return;
	}
	gls_add(t, bs->nblocks, bs->mapped);
	if (t->left == 0 || t->idx >= t->nr)
		gls_finish(t);
	else
		gls_query(t);
}

void sbc_get_lba_status(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	uint64_t lba = tnd_get_be64(cdb + 2);
	uint32_t alloc = tnd_get_be32(cdb + 10);
	if (lba >= ctx->info.num_blocks) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_LBA_OUT_OF_RANGE);
		return;
	}
	if (alloc < 8) {
		/* Room for no descriptor: the header alone, truncated. */
		uint8_t h[8] = { 0 };
		tnd_put_be32(h, 4 + 16);
		scsi_data_in(cmd, h, alloc);
		scsi_complete(cmd);
		return;
	}
	struct sbc_task *t = task_new(cmd, ctx);
	if (!t)
		return;
	t->buf = calloc(1, 8 + 16 * GLS_MAX_DESC + sizeof(struct tnd_block_status));
	if (!t->buf) {
		task_finish(t, -ENOMEM);
		return;
	}
	t->lba = lba;
	t->left = ctx->info.num_blocks - lba;
	t->bytes = alloc;
	/* At least one descriptor: it is what the command is for, and a
	 * truncated one still tells the initiator about the first LBA. */
	t->nr = TND_MAX(1u, TND_MIN((alloc - 8) / 16, GLS_MAX_DESC));
	gls_query(t);
}

/* ---- COMPARE AND WRITE ---- */

int sbc_xfer_compare_and_write(const uint8_t *cdb, uint32_t block_size, enum tnd_scsi_dir *dir,
			       uint32_t *len)
{
	/* The verify data, then the write data: two blocks per block. */
	*len = 2u * cdb[13] * block_size;
	*dir = *len ? TND_SCSI_DIR_WRITE : TND_SCSI_DIR_NONE;
	return 0;
}

static void caw_done(struct sbc_task *t, int status)
{
	scsi_caw_release(t->lu);
	task_finish(t, status);
}

static void caw_read_done(struct sbc_task *t, int status)
{
	if (status < 0) {
		caw_done(t, status);
		return;
	}
	size_t len = (size_t)t->left * t->bs;
	const uint8_t *verify = t->cmd->data, *write = t->cmd->data + len;
	if (memcmp(t->buf, verify, len) != 0) {
		scsi_caw_release(t->lu);
		task_finish_miscompare(t, first_diff(t->buf, verify));
		return;
	}
	task_submit(t, TND_IO_WRITE, t->lba, (uint32_t)t->left, (void *)write, len, t->flags,
		    caw_done);
}

/* We hold the LU's lock: read what is there now. */
static void caw_locked(struct sbc_task *t)
{
	task_submit(t, TND_IO_READ, t->lba, (uint32_t)t->left, t->buf, (size_t)t->left * t->bs,
		    0, caw_read_done);
}

static void caw_granted(struct scsi_caw_waiter *w)
{
	caw_locked(tnd_container_of(w, struct sbc_task, caw));
}

/*
 * COMPARE AND WRITE (SBC-3 5.2): the read, compare and write run under the
 * LU's lock, so two of them on overlapping blocks, from any sessions on any
 * reactors, never interleave. Plain WRITEs do not take the lock (that
 * would put an LU-wide atomic on every write); initiators that use
 * COMPARE AND WRITE as a lock (VMware ATS) use it for every update of the
 * locked blocks.
 */
void sbc_compare_and_write(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	uint64_t lba = tnd_get_be64(cdb + 2);
	uint32_t n = cdb[13];
	uint32_t bs = ctx->info.block_size;

	if (n > SCSI_MAX_CAW_BLOCKS) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 13, -1);
		return;
	}
	if (!sbc_range_ok(cmd, ctx, lba, n))
		return;
	/* Both halves or nothing: a short or long data-out cannot be split
	 * into verify and write data (and data-out with NUMBER OF LOGICAL
	 * BLOCKS 0 means the initiator meant something else). */
	if (ctx->dout_len != 2 * n * bs) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 13, -1);
		return;
	}
	if (n == 0) {
		scsi_complete(cmd);
		return;
	}
	struct sbc_task *t = task_new(cmd, ctx);
	if (!t)
		return;
	cmd->xfer_len = 2 * n * bs;
	t->lba = lba;
	t->left = n;
	t->flags = sbc_write_flags(ctx, cdb[1] & 0x08);
	t->buf = malloc((size_t)n * bs);
	if (!t->buf) {
		task_finish(t, -ENOMEM);
		return;
	}
	t->lu = ctx->lu;
	t->caw.reactor = cmd->reactor;
	t->caw.granted = caw_granted;
	if (scsi_caw_acquire(ctx->lu, &t->caw))
		caw_locked(t);
}
