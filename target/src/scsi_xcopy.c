/*
 * scsi_xcopy.c — EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4
 * 6.3, 6.18): the copy manager that VMware VAAI uses to clone and move
 * virtual disks without the data crossing the network.
 *
 * What we accept. The parameter list names copy targets (CSCD
 * descriptors) and segments. A copy target must be an identification
 * descriptor (E4h) whose designator is a logical unit's NAA (the 16-byte
 * NAA 6 our VPD page 83h gives, scsi.c lu_make_identity()), and a segment
 * must be block to block (02h). Anything else is refused with the ILLEGAL
 * REQUEST sense SPC-4 names for it before anything is read. The
 * token-based copy (LID4, Windows ODX) is not offered.
 *
 * Who may be copied (CVE-2020-28374). A designator is looked up only
 * among the logical units the requesting I_T nexus can see: its own
 * LU and cmd->view_lus, the transport's LUN view after masking. A
 * designator that is not there gets COPY ABORTED, UNREACHABLE COPY TARGET
 * whether or not such an LU exists elsewhere, so the answer tells an
 * initiator nothing about LUs it may not see, and nothing outside the view
 * is read or written. A copy target whose ALUA state is not active is
 * unreachable too; a read-only destination is DATA PROTECT as a WRITE
 * would be.
 *
 * How it copies. The whole list is checked and resolved synchronously in
 * xcopy_extended_copy() (the transport's view is only valid there), then
 * the segments run one after the other as a chain of volume I/Os on
 * cmd->reactor: read a chunk of the source into a bounce buffer, write it
 * to the destination (FUA when the destination LU's WCE is off, as for a
 * WRITE), next chunk. So a copy never blocks the reactor and holds one
 * chunk of memory. Between steps it asks cmd->cancelled() and stops when
 * the transport no longer wants the answer (abort, session loss); the
 * transport keeps every LU of the copy alive until done() through
 * tnd_scsi_cmd_uses_lu(). A segment whose source and destination overlap
 * on the same LU is copied back to front when the destination is the
 * higher address, so the result is as if the whole source were read
 * before anything was written (memmove).
 *
 * Errors. A failure while copying ends the command with COPY ABORTED:
 * the sense-key-specific segment pointer gives the failing segment
 * descriptor's offset in the parameter list, the command-specific bytes
 * give its number (bytes 10-11) and where the copy target's own sense
 * (what a READ or WRITE would have returned) is appended (byte 8:
 * source, byte 9: destination). RECEIVE COPY RESULTS reports, per list
 * identifier and nexus, the progress (COPY STATUS, also while the copy
 * runs) and the sense of a failed copy (FAILED SEGMENT DETAILS).
 *
 * Limits, advertised by OPERATING PARAMETERS and enforced: 8 copy
 * targets, 16 segments, 1 KiB of descriptors, 16 MiB per segment, so one
 * command is at most 256 MiB of I/O; 8 copies in progress per nexus.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_priv.h"

#define XCOPY_MAX_CSCD 8u
#define XCOPY_MAX_SEGMENTS 16u
#define XCOPY_MAX_DESC_LIST 1024u
#define XCOPY_MAX_SEGMENT_BYTES (16u << 20)
#define XCOPY_CHUNK_BYTES (1u << 20)
#define XCOPY_MAX_RUNNING SCSI_XCOPY_RECORDS

enum {
	XCOPY_HDR_LEN = 16,
	XCOPY_CSCD_LEN = 32,
	XCOPY_B2B_LEN = 28,
	XCOPY_CSCD_ID = 0xe4,           /* identification descriptor CSCD */
	XCOPY_SEG_B2B = 0x02,           /* block device to block device */
	XCOPY_USAGE_HOLD = 0,           /* hold results for RECEIVE COPY RESULTS */
	XCOPY_USAGE_NO_HOLD = 2,
	XCOPY_USAGE_NONE = 3,           /* no list identifier (must be 0) */
	DES_CODE_BINARY = 0x1,
	DES_TYPE_NAA = 0x3,
	SENSE_LEN = 18,
	/* COPY STATUS: COPY MANAGER STATUS values. */
	RCR_DONE = 0x00,
	RCR_DONE_WITH_ERRORS = 0x01,
	RCR_IN_PROGRESS = 0x02,
};

struct xcopy_cscd {
	struct tnd_scsi_lu *lu;
	uint32_t bs;
};

struct xcopy_seg {
	uint8_t src, dst;               /* CSCD indexes */
	uint32_t off;                   /* descriptor offset in the list */
	uint64_t src_lba, dst_lba;
	uint64_t bytes;
};

struct scsi_xcopy {
	struct tnd_scsi_cmd *cmd;
	struct tnd_scsi_nexus *nx;
	struct scsi_copy_rec *rec;      /* NULL: results not held */
	struct xcopy_cscd cscd[XCOPY_MAX_CSCD];
	unsigned nr_cscd;
	struct xcopy_seg seg[XCOPY_MAX_SEGMENTS];
	unsigned nr_seg;
	unsigned cur;                   /* segment being copied */
	uint64_t done;                  /* bytes of it copied */
	uint32_t n;                     /* bytes of the chunk in flight */
	uint64_t chunk_off;             /* its offset in the segment */
	bool backward;
	uint32_t chunk_max;
	uint8_t *buf;
	struct iovec iov;
	struct tnd_io *io;
};

bool xcopy_uses_lu(const struct scsi_xcopy *x, const struct tnd_scsi_lu *lu)
{
	for (unsigned i = 0; i < x->nr_cscd; i++)
		if (x->cscd[i].lu == lu)
			return true;
	return false;
}

/* ---- results kept per nexus ---- */

static bool rec_is(const struct scsi_copy_rec *r, const struct tnd_scsi_lu *lu, uint8_t list_id)
{
	return r->lu == lu && r->lu_epoch == lu->epoch && r->list_id == list_id;
}

static struct scsi_copy_rec *rec_find(struct tnd_scsi_nexus *nx, const struct tnd_scsi_lu *lu,
				      uint8_t list_id)
{
	for (unsigned i = 0; i < SCSI_XCOPY_RECORDS; i++)
		if (rec_is(&nx->copies[i], lu, list_id))
			return &nx->copies[i];
	return NULL;
}

/* A slot for a new copy: the same list id's old results, a free slot,
 * or the oldest finished one. NULL when all are running. */
static struct scsi_copy_rec *rec_take(struct tnd_scsi_nexus *nx, const struct tnd_scsi_lu *lu,
				      uint8_t list_id)
{
	struct scsi_copy_rec *r = rec_find(nx, lu, list_id), *old = NULL;
	if (!r) {
		for (unsigned i = 0; i < SCSI_XCOPY_RECORDS && !r; i++) {
			struct scsi_copy_rec *c = &nx->copies[i];
			if (!c->lu)
				r = c;
			else if (!c->running && (!old || c->age < old->age))
				old = c;
		}
		if (!r)
			r = old;
	}
	if (!r)
		return NULL;
	*r = (struct scsi_copy_rec){
		.lu = lu,
		.lu_epoch = lu->epoch,
		.age = ++nx->copy_age,
		.list_id = list_id,
		.running = true,
	};
	return r;
}

/* ---- finishing ---- */

static void x_free(struct scsi_xcopy *x)
{
	struct tnd_scsi_cmd *cmd = x->cmd;
	x->nx->copies_running--;
	if (x->rec)
		x->rec->running = false;
	free(x->buf);
	free(x->io);
	free(x);
	cmd->xcopy = NULL;
	cmd->io = NULL;
}

static void x_finish_good(struct scsi_xcopy *x)
{
	struct tnd_scsi_cmd *cmd = x->cmd;
	if (x->rec)
		x->rec->status = TND_SAM_GOOD;
	x_free(x);
	scsi_complete(cmd);
}

static void x_finish_aborted(struct scsi_xcopy *x)
{
	struct tnd_scsi_cmd *cmd = x->cmd;
	if (x->rec)
		x->rec->status = TND_SAM_TASK_ABORTED;
	x_free(x);
	cmd->status = TND_SAM_TASK_ABORTED;
	cmd->sense_len = 0;
	cmd->in_len = 0;
	cmd->done(cmd);
}

/*
 * COPY ABORTED for the current segment. @inner is the copy target's
 * sense (@inner_len bytes, 0 for none), @dst whether it came from the
 * destination.
 */
static void x_finish_copy_aborted(struct scsi_xcopy *x, uint16_t asc, bool dst,
				  const uint8_t *inner, unsigned inner_len)
{
	struct tnd_scsi_cmd *cmd = x->cmd;
	uint8_t b[TND_SCSI_SENSE_MAX];
	unsigned n = scsi_build_sense(b, SCSI_KEY_COPY_ABORTED, asc);
	const struct xcopy_seg *s = &x->seg[x->cur < x->nr_seg ? x->cur : 0];
	if (inner_len && n + inner_len <= sizeof(b)) {
		memcpy(b + n, inner, inner_len);
		b[dst ? 9 : 8] = (uint8_t)n;
		n += inner_len;
		b[7] = (uint8_t)(n - 8);
	}
	tnd_put_be16(b + 10, (uint16_t)x->cur);
	b[15] = 0x80; /* SKSV; SD = 0: the pointer is into the parameter list */
	tnd_put_be16(b + 16, (uint16_t)TND_MIN(s->off, 0xffffu));
	if (x->rec) {
		x->rec->status = TND_SAM_CHECK_CONDITION;
		memcpy(x->rec->sense, b, n);
		x->rec->sense_len = (uint8_t)n;
	}
	x_free(x);
	scsi_check_sense(cmd, b, n);
}

static void x_fail_errno(struct scsi_xcopy *x, int err, bool dst)
{
	uint8_t inner[TND_SCSI_SENSE_MAX];
	unsigned n = scsi_errno_sense(inner, err, dst ? SCSI_ERR_WRITE : SCSI_ERR_READ);
	x_finish_copy_aborted(x, SCSI_ASC_NONE, dst, inner, n);
}

/* ---- the copy loop ---- */

static void x_next_chunk(struct scsi_xcopy *x);

static bool x_cancelled(const struct scsi_xcopy *x)
{
	return x->cmd->cancelled && x->cmd->cancelled(x->cmd);
}

static void x_submit(struct scsi_xcopy *x, struct tnd_scsi_lu *lu, enum tnd_io_type type,
		     uint64_t lba, uint32_t nblocks, unsigned flags, tnd_io_cb cb)
{
	struct tnd_io *io = x->io;
	io->type = type;
	io->flags = flags;
	io->lba = lba;
	io->nblocks = nblocks;
	x->iov.iov_base = x->buf;
	x->iov.iov_len = x->n;
	io->iov = &x->iov;
	io->iovcnt = 1;
	io->reactor = x->cmd->reactor;
	io->cb = cb;
	io->cb_arg = x;
	int ret = tnd_volume_submit(lu->vol, io);
	if (ret < 0)
		cb(io, ret);
}

static void x_write_done(struct tnd_io *io, int status)
{
	struct scsi_xcopy *x = io->cb_arg;
	if (status < 0) {
		x_fail_errno(x, status, true);
		return;
	}
	x->done += x->n;
	if (x->rec)
		x->rec->bytes += x->n;
	x_next_chunk(x);
}

static void x_read_done(struct tnd_io *io, int status)
{
	struct scsi_xcopy *x = io->cb_arg;
	if (status < 0) {
		x_fail_errno(x, status, false);
		return;
	}
	if (x_cancelled(x)) {
		x_finish_aborted(x);
		return;
	}
	const struct xcopy_seg *s = &x->seg[x->cur];
	const struct xcopy_cscd *d = &x->cscd[s->dst];
	struct tnd_volume_info info;
	tnd_volume_info(d->lu->vol, &info);
	x_submit(x, d->lu, TND_IO_WRITE, s->dst_lba + x->chunk_off / d->bs, x->n / d->bs,
		 scsi_lu_write_flags(d->lu, &info, false), x_write_done);
}

/* True when [lba, lba + bytes) lies on @c's medium now. */
static bool x_in_range(const struct xcopy_cscd *c, uint64_t lba, uint64_t bytes)
{
	struct tnd_volume_info info;
	tnd_volume_info(c->lu->vol, &info);
	uint64_t n = bytes / c->bs;
	return lba <= info.num_blocks && n <= info.num_blocks - lba;
}

static void x_start_segment(struct scsi_xcopy *x)
{
	for (; x->cur < x->nr_seg; x->cur++) {
		const struct xcopy_seg *s = &x->seg[x->cur];
		if (s->bytes == 0) {
			if (x->rec)
				x->rec->segments++;
			continue;
		}
		const struct xcopy_cscd *src = &x->cscd[s->src], *dst = &x->cscd[s->dst];
		uint8_t inner[SENSE_LEN];
		if (!x_in_range(src, s->src_lba, s->bytes) ||
		    !x_in_range(dst, s->dst_lba, s->bytes)) {
			bool is_dst = x_in_range(src, s->src_lba, s->bytes);
			scsi_build_sense(inner, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_LBA_OUT_OF_RANGE);
			x_finish_copy_aborted(x, SCSI_ASC_NONE, is_dst, inner, SENSE_LEN);
			return;
		}
		uint64_t sb = s->src_lba * src->bs, db = s->dst_lba * dst->bs;
		x->backward = src->lu == dst->lu && db > sb && db < sb + s->bytes;
		x->done = 0;
		x_next_chunk(x);
		return;
	}
	x_finish_good(x);
}

static void x_next_chunk(struct scsi_xcopy *x)
{
	const struct xcopy_seg *s = &x->seg[x->cur];
	if (x->done == s->bytes) {
		if (x->rec)
			x->rec->segments++;
		x->cur++;
		x_start_segment(x);
		return;
	}
	if (x_cancelled(x)) {
		x_finish_aborted(x);
		return;
	}
	uint64_t left = s->bytes - x->done;
	x->n = (uint32_t)TND_MIN(left, (uint64_t)x->chunk_max);
	x->chunk_off = x->backward ? left - x->n : x->done;
	const struct xcopy_cscd *c = &x->cscd[s->src];
	x_submit(x, c->lu, TND_IO_READ, s->src_lba + x->chunk_off / c->bs, x->n / c->bs, 0,
		 x_read_done);
}

/* ---- parsing ---- */

/* The LU with designator @naa among those @cmd's nexus can see. */
static struct tnd_scsi_lu *x_lu_by_naa(const struct tnd_scsi_cmd *cmd, const uint8_t *naa)
{
	if (memcmp(cmd->lu->naa, naa, sizeof(cmd->lu->naa)) == 0)
		return cmd->lu;
	if (!cmd->view_lus)
		return NULL;
	for (unsigned i = 0; i < cmd->nr_luns; i++) {
		struct tnd_scsi_lu *lu = cmd->view_lus[i];
		if (lu && memcmp(lu->naa, naa, sizeof(lu->naa)) == 0)
			return lu;
	}
	return NULL;
}

/*
 * Check the parameter list (@p, @len bytes) and fill @x's copy targets and
 * segments. On error @cmd is finished and false returned.
 */
static bool x_parse(struct tnd_scsi_cmd *cmd, const uint8_t *p, uint32_t len,
		    struct scsi_xcopy *x)
{
	uint32_t tlen = tnd_get_be16(p + 2);
	uint32_t slen = tnd_get_be32(p + 8);
	uint32_t ilen = tnd_get_be32(p + 12);

	if ((uint64_t)tlen + slen + ilen > XCOPY_MAX_DESC_LIST ||
	    XCOPY_HDR_LEN + (uint64_t)tlen + slen + ilen > len) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
		return false;
	}
	if (ilen) {
		/* MAXIMUM INLINE DATA LENGTH is 0: no segment uses it. */
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 12, -1);
		return false;
	}
	if (tlen / XCOPY_CSCD_LEN > XCOPY_MAX_CSCD) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_TOO_MANY_TARGET_DESCRIPTORS);
		return false;
	}
	/* Count the segments by their own lengths before judging them. */
	unsigned nseg = 0;
	for (uint32_t off = 0; off < slen; nseg++) {
		if (slen - off < 4) {
			scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST,
				   SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
			return false;
		}
		off += 4 + tnd_get_be16(p + XCOPY_HDR_LEN + tlen + off + 2);
	}
	if (nseg > XCOPY_MAX_SEGMENTS) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_TOO_MANY_SEGMENT_DESCRIPTORS);
		return false;
	}

	/* Every CSCD type we take is 32 bytes: a slot of another type (some
	 * are 64) is refused for its type before its length matters. */
	x->nr_cscd = tlen / XCOPY_CSCD_LEN;
	for (unsigned i = 0; i < (tlen + XCOPY_CSCD_LEN - 1) / XCOPY_CSCD_LEN; i++) {
		uint32_t off = XCOPY_HDR_LEN + i * XCOPY_CSCD_LEN;
		const uint8_t *d = p + off;
		if (d[0] != XCOPY_CSCD_ID) {
			scsi_check_field(cmd, SCSI_ASC_UNSUPPORTED_TARGET_DESCRIPTOR, off, -1);
			return false;
		}
		if (tlen - i * XCOPY_CSCD_LEN < XCOPY_CSCD_LEN) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 2, -1);
			return false;
		}
		/* Byte 1: LU ID TYPE and NUL are ignored (SPC-4); the
		 * peripheral device type must be a block device. */
		if (d[1] & 0x1f) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, off + 1, 4);
			return false;
		}
		if (d[7] > 20) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, off + 7, -1);
			return false;
		}
		x->cscd[i].bs = tnd_get_be24(d + 29);
	}

	const uint8_t *sp = p + XCOPY_HDR_LEN + tlen;
	x->nr_seg = nseg;
	for (uint32_t i = 0, off = 0; i < nseg; i++) {
		const uint8_t *s = sp + off;
		uint32_t at = XCOPY_HDR_LEN + tlen + off;
		if (s[0] != XCOPY_SEG_B2B) {
			scsi_check_field(cmd, SCSI_ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR, at, -1);
			return false;
		}
		if (tnd_get_be16(s + 2) != XCOPY_B2B_LEN - 4) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, at + 2, -1);
			return false;
		}
		if (slen - off < XCOPY_B2B_LEN) {
			scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST,
				   SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
			return false;
		}
		struct xcopy_seg *g = &x->seg[i];
		g->off = at;
		g->src = (uint8_t)TND_MIN(tnd_get_be16(s + 4), 0xffu);
		g->dst = (uint8_t)TND_MIN(tnd_get_be16(s + 6), 0xffu);
		g->src_lba = tnd_get_be64(s + 12);
		g->dst_lba = tnd_get_be64(s + 20);
		/* NUMBER OF BLOCKS in destination blocks with DC set, else in
		 * source blocks; resolved once the block sizes are known. */
		g->bytes = tnd_get_be16(s + 10);
		off += XCOPY_B2B_LEN;
	}
	return true;
}

/*
 * Resolve the copy targets within the nexus's view and check every
 * segment against them. Errors finish @cmd (with @x->cur set to the
 * offending segment for the sense) and return false.
 */
static bool x_resolve(struct tnd_scsi_cmd *cmd, const uint8_t *p, struct scsi_xcopy *x)
{
	for (unsigned i = 0; i < x->nr_cscd; i++) {
		uint32_t off = XCOPY_HDR_LEN + i * XCOPY_CSCD_LEN;
		const uint8_t *d = p + off;
		struct tnd_scsi_lu *lu = NULL;
		/* Code set binary, association LU, NAA, 16 bytes: the
		 * designator our VPD page 83h gives for an LU. */
		if ((d[4] & 0x0f) == DES_CODE_BINARY && (d[5] & 0x30) == 0 &&
		    (d[5] & 0x0f) == DES_TYPE_NAA && d[7] == 16)
			lu = x_lu_by_naa(cmd, d + 8);
		if (!lu || !scsi_alua_active(scsi_lu_alua(lu))) {
			scsi_check(cmd, SCSI_KEY_COPY_ABORTED, SCSI_ASC_UNREACHABLE_COPY_TARGET);
			return false;
		}
		struct tnd_volume_info info;
		tnd_volume_info(lu->vol, &info);
		if (x->cscd[i].bs != info.block_size) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, off + 29, -1);
			return false;
		}
		x->cscd[i].lu = lu;
	}
	for (unsigned i = 0; i < x->nr_seg; i++) {
		struct xcopy_seg *g = &x->seg[i];
		const uint8_t *s = p + g->off;
		if (g->src >= x->nr_cscd || g->dst >= x->nr_cscd) {
			scsi_check(cmd, SCSI_KEY_COPY_ABORTED, SCSI_ASC_UNREACHABLE_COPY_TARGET);
			return false;
		}
		const struct xcopy_cscd *src = &x->cscd[g->src], *dst = &x->cscd[g->dst];
		bool dc = s[1] & 0x02;
		g->bytes *= dc ? dst->bs : src->bs;
		/* Whole blocks at both ends: an inexact segment would need
		 * padding or concatenation (PAD, CAT), which disks do not do. */
		if (g->bytes % src->bs || g->bytes % dst->bs) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, g->off + 10, -1);
			return false;
		}
		if (g->bytes > XCOPY_MAX_SEGMENT_BYTES) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, g->off + 10, -1);
			return false;
		}
		struct tnd_volume_info info;
		tnd_volume_info(dst->lu->vol, &info);
		if (g->bytes && info.read_only) {
			scsi_check(cmd, SCSI_KEY_DATA_PROTECT, SCSI_ASC_WRITE_PROTECTED);
			return false;
		}
		/* The copy reads and writes for the initiator: a reservation
		 * that would refuse its READ or WRITE refuses the copy, checked
		 * for the whole copy before it starts. (One that appears while
		 * the copy runs finds it in flight, as it would a WRITE.) */
		if (g->bytes && (scsi_pr_blocks_copy(src->lu, cmd->nexus, false) ||
				 scsi_pr_blocks_copy(dst->lu, cmd->nexus, true))) {
			scsi_reservation_conflict(cmd);
			return false;
		}
	}
	return true;
}

void xcopy_extended_copy(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	uint32_t plen = tnd_get_be32(cmd->cdb + 10);
	const uint8_t *p = cmd->data;
	struct tnd_scsi_nexus *nx = ctx->nexus;

	if (plen == 0) {
		/* Not an error (SPC-4 6.4.1): nothing to copy. */
		scsi_complete(cmd);
		return;
	}
	if (ctx->dout_len < plen || plen < XCOPY_HDR_LEN) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
		return;
	}
	cmd->xfer_len = plen;

	uint8_t list_id = p[0];
	unsigned usage = (p[1] >> 3) & 0x3;
	if (usage == 1) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 1, 4);
		return;
	}
	if (usage == XCOPY_USAGE_NONE && list_id != 0) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 0, -1);
		return;
	}
	if (usage != XCOPY_USAGE_NONE) {
		struct scsi_copy_rec *r = rec_find(nx, ctx->lu, list_id);
		if (r && r->running) {
			/* A list identifier names one copy at a time. */
			scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_OPERATION_IN_PROGRESS);
			return;
		}
	}

	struct scsi_xcopy *x = calloc(1, sizeof(*x));
	if (!x) {
		scsi_check_errno(cmd, -ENOMEM, SCSI_ERR_READ);
		return;
	}
	x->cmd = cmd;
	x->nx = nx;
	if (!x_parse(cmd, p, plen, x) || !x_resolve(cmd, p, x)) {
		free(x);
		return;
	}
	if (nx->copies_running >= XCOPY_MAX_RUNNING) {
		free(x);
		cmd->status = TND_SAM_BUSY;
		cmd->done(cmd);
		return;
	}

	size_t io_size = 0;
	x->chunk_max = XCOPY_CHUNK_BYTES;
	for (unsigned i = 0; i < x->nr_cscd; i++) {
		io_size = TND_MAX(io_size, tnd_volume_io_size(x->cscd[i].lu->vol));
		x->chunk_max = TND_MAX(x->chunk_max, x->cscd[i].bs);
	}
	if (x->nr_cscd) {
		x->io = aligned_alloc(16, (io_size + 15) & ~(size_t)15);
		x->buf = aligned_alloc(4096, x->chunk_max);
		if (!x->io || !x->buf) {
			free(x->io);
			free(x->buf);
			free(x);
			scsi_check_errno(cmd, -ENOMEM, SCSI_ERR_READ);
			return;
		}
		memset(x->io, 0, io_size);
	}
	if (usage == XCOPY_USAGE_HOLD)
		x->rec = rec_take(nx, ctx->lu, list_id);
	nx->copies_running++;
	cmd->xcopy = x;
	x_start_segment(x);
}

/* ---- the Third-party Copy VPD page (8Fh) ---- */

/* Append a descriptor header of @type for @body bytes, padded to 4. */
static unsigned tpc_desc(uint8_t *p, uint16_t type, unsigned body)
{
	unsigned len = (body + 3) & ~3u;
	tnd_put_be16(p, type);
	tnd_put_be16(p + 2, (uint16_t)len);
	return 4 + len;
}

unsigned xcopy_vpd_tpc(uint8_t *b, const struct tnd_volume_info *info)
{
	/* What the page promises is what the parser enforces: the same
	 * constants as OPERATING PARAMETERS. */
	static const uint8_t cmds[] = {
		SCSI_EXTENDED_COPY, 1, SCSI_XCOPY_LID1,
		SCSI_RECEIVE_COPY_RESULTS, 3, SCSI_RCR_COPY_STATUS,
		SCSI_RCR_OPERATING_PARAMETERS, SCSI_RCR_FAILED_SEGMENT_DETAILS,
	};
	static const uint8_t descs[] = { XCOPY_SEG_B2B, XCOPY_CSCD_ID };
	uint8_t *p = b + 4;
	unsigned n;

	/* Supported Commands (0001h). */
	memset(p, 0, 4 + ((1 + sizeof(cmds) + 3) & ~3u));
	p[4] = sizeof(cmds);
	memcpy(p + 5, cmds, sizeof(cmds));
	p += tpc_desc(p, 0x0001, 1 + sizeof(cmds));

	/* Parameter Data (0004h). */
	memset(p, 0, 32);
	tnd_put_be16(p + 8, XCOPY_MAX_CSCD);
	tnd_put_be16(p + 10, XCOPY_MAX_SEGMENTS);
	tnd_put_be32(p + 12, XCOPY_MAX_DESC_LIST);
	p += tpc_desc(p, 0x0004, 28);

	/* Supported Descriptors (0008h). */
	memset(p, 0, 8);
	p[4] = sizeof(descs);
	memcpy(p + 5, descs, sizeof(descs));
	p += tpc_desc(p, 0x0008, 1 + sizeof(descs));

	/* Supported CSCD Descriptor IDs (000Ch): none. */
	memset(p, 0, 8);
	p += tpc_desc(p, 0x000c, 2);

	/* General Copy Operations (8001h). */
	memset(p, 0, 36);
	tnd_put_be32(p + 4, XCOPY_MAX_RUNNING);
	tnd_put_be32(p + 8, XCOPY_MAX_RUNNING);
	tnd_put_be32(p + 12, XCOPY_MAX_SEGMENT_BYTES);
	p[16] = (uint8_t)__builtin_ctz(info->block_size);
	p += tpc_desc(p, 0x8001, 32);

	n = (unsigned)(p - b);
	return n;
}

/* ---- RECEIVE COPY RESULTS ---- */

static void rcr_operating_parameters(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx,
				     uint32_t alloc)
{
	static const uint8_t implemented[] = { XCOPY_SEG_B2B, XCOPY_CSCD_ID };
	uint8_t b[44 + sizeof(implemented)];
	memset(b, 0, sizeof(b));
	tnd_put_be32(b, sizeof(b) - 4);
	b[4] = 0x01; /* SNLID: LIST ID USAGE 11b is supported */
	tnd_put_be16(b + 8, XCOPY_MAX_CSCD);
	tnd_put_be16(b + 10, XCOPY_MAX_SEGMENTS);
	tnd_put_be32(b + 12, XCOPY_MAX_DESC_LIST);
	tnd_put_be32(b + 16, XCOPY_MAX_SEGMENT_BYTES);
	/* MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE
	 * TRANSFER SIZE: 0, we copy between disks only. */
	tnd_put_be16(b + 34, XCOPY_MAX_RUNNING);
	b[36] = XCOPY_MAX_RUNNING;
	/* DATA SEGMENT GRANULARITY: log2 of the block size. */
	b[37] = (uint8_t)__builtin_ctz(ctx->info.block_size);
	b[43] = sizeof(implemented);
	memcpy(b + 44, implemented, sizeof(implemented));
	scsi_data_in(cmd, b, TND_MIN((uint32_t)sizeof(b), alloc));
	scsi_complete(cmd);
}

static void rcr_copy_status(struct tnd_scsi_cmd *cmd, const struct scsi_copy_rec *r,
			    uint32_t alloc)
{
	uint8_t b[12];
	memset(b, 0, sizeof(b));
	tnd_put_be32(b, sizeof(b) - 4);
	if (r->running)
		b[4] = RCR_IN_PROGRESS;
	else
		b[4] = r->status == TND_SAM_GOOD ? RCR_DONE : RCR_DONE_WITH_ERRORS;
	tnd_put_be16(b + 5, r->segments);
	/* TRANSFER COUNT in bytes while it fits, else in KiB (units 01h). */
	if (r->bytes <= UINT32_MAX) {
		b[7] = 0x00;
		tnd_put_be32(b + 8, (uint32_t)r->bytes);
	} else {
		b[7] = 0x01;
		tnd_put_be32(b + 8, (uint32_t)(r->bytes >> 10));
	}
	scsi_data_in(cmd, b, TND_MIN((uint32_t)sizeof(b), alloc));
	scsi_complete(cmd);
}

static void rcr_failed_segment_details(struct tnd_scsi_cmd *cmd, struct scsi_copy_rec *r,
				       uint32_t alloc)
{
	uint8_t b[60 + TND_SCSI_SENSE_MAX];
	unsigned n = 4;
	memset(b, 0, sizeof(b));
	if (!r->running && r->status != TND_SAM_GOOD && r->sense_len) {
		n = 60 + r->sense_len;
		b[56] = r->status;
		tnd_put_be16(b + 58, r->sense_len);
		memcpy(b + 60, r->sense, r->sense_len);
	}
	tnd_put_be32(b, n - 4);
	scsi_data_in(cmd, b, TND_MIN((uint32_t)n, alloc));
	/* Once delivered whole, the details are discarded (SPC-4 6.18.5). */
	if (n > 4 && alloc >= n)
		r->sense_len = 0;
	scsi_complete(cmd);
}

void xcopy_receive_copy_results(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	unsigned sa = cmd->cdb[1] & 0x1f;
	uint32_t alloc = tnd_get_be32(cmd->cdb + 10);
	if (sa == SCSI_RCR_OPERATING_PARAMETERS) {
		rcr_operating_parameters(cmd, ctx, alloc);
		return;
	}
	struct scsi_copy_rec *r = rec_find(ctx->nexus, ctx->lu, cmd->cdb[2]);
	if (!r) {
		/* No copy with this list identifier whose results we hold. */
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, -1);
		return;
	}
	if (sa == SCSI_RCR_COPY_STATUS)
		rcr_copy_status(cmd, r, alloc);
	else
		rcr_failed_segment_details(cmd, r, alloc);
}
