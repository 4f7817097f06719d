/*
 * scsi_spc.c — primary commands (SPC-4) a disk answers from its identity
 * and settings, without touching the medium: TEST UNIT READY, INQUIRY and
 * its VPD pages, REPORT LUNS, REQUEST SENSE, MODE SENSE/SELECT, REPORT
 * SUPPORTED OPERATION CODES and TASK MANAGEMENT FUNCTIONS.
 *
 * Responses are built in a stack or heap buffer at their full length and
 * handed to scsi_data_in() clipped to the allocation length, so every
 * command truncates the same way and xfer_len is always what the command
 * itself transfers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_priv.h"

void spc_test_unit_ready(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	scsi_complete(cmd);
}

/* ---- INQUIRY ---- */

enum {
	INQ_STD_LEN = 66,
	INQ_PERIPHERAL_DISK = 0x00,
	INQ_NO_LU = 0x7f,         /* qualifier 011b, device type 1Fh */
	INQ_VERSION_SPC4 = 0x06,
	INQ_HISUP = 0x10,
	INQ_RDF_2 = 0x02,
	INQ_CMDQUE = 0x02,
};

/* Version descriptors (SPC-4 table 30): SAM-5, SPC-4, SBC-3, iSCSI. */
static const uint16_t inq_versions[] = { 0x00a0, 0x0460, 0x04c0, 0x0960 };

static void inquiry_std(uint8_t *b, const struct tnd_scsi_lu *lu)
{
	memset(b, 0, INQ_STD_LEN);
	b[0] = lu ? INQ_PERIPHERAL_DISK : INQ_NO_LU;
	b[2] = INQ_VERSION_SPC4;
	b[3] = INQ_HISUP | INQ_RDF_2;
	b[4] = INQ_STD_LEN - 5;
	b[7] = INQ_CMDQUE;
	if (lu) {
		memcpy(b + 8, lu->vendor, 8);
		memcpy(b + 16, lu->product, 16);
		memcpy(b + 32, lu->revision, 4);
	} else {
		memcpy(b + 8, "TANDEM  ", 8);
		memset(b + 16, ' ', 16);
		memset(b + 32, ' ', 4);
	}
	for (unsigned i = 0; i < TND_ARRAY_SIZE(inq_versions); i++)
		tnd_put_be16(b + 58 + 2 * i, inq_versions[i]);
}

void spc_inquiry_no_lu(struct tnd_scsi_cmd *cmd)
{
	const uint8_t *cdb = cmd->cdb;
	if (cdb[1] & 0x01) {
		/* Identity pages describe a logical unit; there is none. */
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_LUN_NOT_SUPPORTED);
		return;
	}
	if (cdb[2]) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, -1);
		return;
	}
	uint8_t b[INQ_STD_LEN];
	inquiry_std(b, NULL);
	scsi_data_in(cmd, b, TND_MIN((uint32_t)sizeof(b), tnd_get_be16(cdb + 3)));
	scsi_complete(cmd);
}

enum {
	VPD_SUPPORTED = 0x00,
	VPD_SERIAL = 0x80,
	VPD_DEVICE_ID = 0x83,
	VPD_BLOCK_LIMITS = 0xb0,
	VPD_BLOCK_CHARACTERISTICS = 0xb1,
	VPD_LBP = 0xb2,
};

static const uint8_t vpd_pages[] = {
	VPD_SUPPORTED, VPD_SERIAL, VPD_DEVICE_ID,
	VPD_BLOCK_LIMITS, VPD_BLOCK_CHARACTERISTICS, VPD_LBP,
};

/* Designator descriptor header fields (SPC-4 7.8.6.1). */
enum {
	DES_PROTO_ISCSI = 0x50,   /* protocol identifier 5 in bits 7-4 */
	DES_CODE_BINARY = 0x1,
	DES_CODE_ASCII = 0x2,
	DES_CODE_UTF8 = 0x3,
	DES_PIV = 0x80,
	DES_ASSOC_LU = 0x00,
	DES_ASSOC_PORT = 0x10,
	DES_TYPE_T10 = 0x1,
	DES_TYPE_NAA = 0x3,
	DES_TYPE_REL_PORT = 0x4,
	DES_TYPE_TPG = 0x5,
	DES_TYPE_SCSI_NAME = 0x8,
};

/* Append one designator at @p; returns its total length. */
static unsigned put_designator(uint8_t *p, uint8_t b0, uint8_t b1, const void *id, unsigned len)
{
	p[0] = b0;
	p[1] = b1;
	p[2] = 0;
	p[3] = (uint8_t)len;
	memcpy(p + 4, id, len);
	return 4 + len;
}

static unsigned vpd_device_id(uint8_t *b, const struct scsi_ctx *ctx)
{
	const struct tnd_scsi_lu *lu = ctx->lu;
	const struct tnd_scsi_nexus *nx = ctx->nexus;
	unsigned n = 4;

	n += put_designator(b + n, DES_CODE_BINARY, DES_ASSOC_LU | DES_TYPE_NAA, lu->naa, 16);

	char t10[8 + sizeof(lu->serial)];
	memcpy(t10, lu->vendor, 8);
	size_t sl = strlen(lu->serial);
	memcpy(t10 + 8, lu->serial, sl);
	n += put_designator(b + n, DES_CODE_ASCII, DES_ASSOC_LU | DES_TYPE_T10, t10,
			    (unsigned)(8 + sl));

	if (nx && nx->target_name[0]) {
		/* SCSI name string of the target port: "<iqn>,t,0x<tpgt>",
		 * NUL-terminated and padded to a multiple of four (SPC-4
		 * 7.8.6.11), at most 256 bytes. */
		char name[256];
		int l = snprintf(name, sizeof(name), "%s,t,0x%04x", nx->target_name, nx->tpgt);
		if (l > 0 && (size_t)l < sizeof(name) - 4) {
			unsigned len = ((unsigned)l + 1 + 3) & ~3u;
			memset(name + l, 0, len - (unsigned)l);
			n += put_designator(b + n, DES_PROTO_ISCSI | DES_CODE_UTF8,
					    DES_PIV | DES_ASSOC_PORT | DES_TYPE_SCSI_NAME,
					    name, len);
		}
	}
	if (nx) {
		uint8_t id[4] = { 0 };
		tnd_put_be16(id + 2, nx->rel_port_id);
		n += put_designator(b + n, DES_PROTO_ISCSI | DES_CODE_BINARY,
				    DES_PIV | DES_ASSOC_PORT | DES_TYPE_REL_PORT, id, 4);
		/* One target port group per portal group for now; ALUA
		 * (the replication issue) will number them per node. */
		tnd_put_be16(id + 2, nx->tpgt);
		n += put_designator(b + n, DES_PROTO_ISCSI | DES_CODE_BINARY,
				    DES_PIV | DES_ASSOC_PORT | DES_TYPE_TPG, id, 4);
	}
	return n;
}

static unsigned vpd_block_limits(uint8_t *b, const struct tnd_volume_info *info)
{
	uint32_t bs = info->block_size;
	memset(b + 4, 0, 0x3c);
	b[4] = 0x01; /* WSNZ: WRITE SAME with 0 blocks is refused */
	b[5] = SCSI_MAX_CAW_BLOCKS;
	uint16_t gran = info->opt_io_blocks > 0xffff ? 0xffff : (uint16_t)info->opt_io_blocks;
	tnd_put_be16(b + 6, gran);
	tnd_put_be32(b + 8, TND_SCSI_MAX_XFER_BYTES / bs);
	tnd_put_be32(b + 12, info->opt_io_blocks);
	if (scsi_info_lbp(info)) {
		tnd_put_be32(b + 20, scsi_max_unmap_blocks(info));
		tnd_put_be32(b + 24, SCSI_MAX_UNMAP_DESCRIPTORS);
		tnd_put_be32(b + 28, info->opt_io_blocks ? info->opt_io_blocks : 1);
	}
	tnd_put_be64(b + 36, SCSI_MAX_WRITE_SAME_BLOCKS);
	return 4 + 0x3c;
}

static unsigned vpd_block_characteristics(uint8_t *b, const struct tnd_volume_info *info)
{
	memset(b + 4, 0, 0x3c);
	/* MEDIUM ROTATION RATE: 1 = non-rotating (solid state), 0 = not
	 * reported; we do not know a spinning disk's real rate. */
	tnd_put_be16(b + 4, info->rotational ? 0 : 1);
	return 4 + 0x3c;
}

static unsigned vpd_lbp(uint8_t *b, const struct tnd_volume_info *info)
{
	memset(b + 4, 0, 4);
	if (scsi_info_lbp(info))
		b[5] |= 0x80 | 0x40 | 0x20; /* LBPU, LBPWS, LBPWS10 */
	if (info->thin && info->unmap_zeroes)
		b[5] |= 0x04;               /* LBPRZ */
	b[6] = info->thin ? 0x02 : 0x00;    /* PROVISIONING TYPE: thin / full */
	return 8;
}

void spc_inquiry(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	uint32_t alloc = tnd_get_be16(cdb + 3);
	uint8_t b[512];
	unsigned n;

	if (!(cdb[1] & 0x01)) {
		if (cdb[2]) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, -1);
			return;
		}
		inquiry_std(b, ctx->lu);
		scsi_data_in(cmd, b, TND_MIN((uint32_t)INQ_STD_LEN, alloc));
		scsi_complete(cmd);
		return;
	}

	memset(b, 0, 4);
	b[0] = INQ_PERIPHERAL_DISK;
	b[1] = cdb[2];
	switch (cdb[2]) {
	case VPD_SUPPORTED:
		memcpy(b + 4, vpd_pages, sizeof(vpd_pages));
		n = 4 + sizeof(vpd_pages);
		break;
	case VPD_SERIAL: {
		size_t l = strlen(ctx->lu->serial);
		memcpy(b + 4, ctx->lu->serial, l);
		n = 4 + (unsigned)l;
		break;
	}
	case VPD_DEVICE_ID:
		n = vpd_device_id(b, ctx);
		break;
	case VPD_BLOCK_LIMITS:
		n = vpd_block_limits(b, &ctx->info);
		break;
	case VPD_BLOCK_CHARACTERISTICS:
		n = vpd_block_characteristics(b, &ctx->info);
		break;
	case VPD_LBP:
		n = vpd_lbp(b, &ctx->info);
		break;
	default:
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, -1);
		return;
	}
	tnd_put_be16(b + 2, (uint16_t)(n - 4));
	scsi_data_in(cmd, b, TND_MIN((uint32_t)n, alloc));
	scsi_complete(cmd);
}

/* ---- REPORT LUNS ---- */

/* SAM-5 single level LUN: peripheral addressing below 256, flat below
 * 16384; anything larger is taken to be in SAM form already. */
static void put_lun(uint8_t *p, uint64_t lun)
{
	memset(p, 0, 8);
	if (lun < 256) {
		p[1] = (uint8_t)lun;
	} else if (lun < 16384) {
		p[0] = (uint8_t)(0x40 | (lun >> 8));
		p[1] = (uint8_t)lun;
	} else {
		tnd_put_be64(p, lun);
	}
}

void spc_report_luns(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	uint32_t alloc = tnd_get_be32(cdb + 6);
	uint8_t select = cdb[2];

	if (select > 2) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, -1);
		return;
	}
	if (alloc < 16) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 6, -1);
		return;
	}
	/* We have no well-known LUs: select 1 reports none. */
	unsigned nr = select == 1 ? 0 : cmd->nr_luns;
	size_t len = 8 + (size_t)nr * 8;
	uint8_t *b = calloc(1, len);
	if (!b) {
		scsi_check_errno(cmd, -ENOMEM, SCSI_ERR_READ);
		return;
	}
	tnd_put_be32(b, (uint32_t)(nr * 8));
	for (unsigned i = 0; i < nr; i++)
		put_lun(b + 8 + 8 * i, cmd->luns[i]);
	scsi_data_in(cmd, b, (uint32_t)TND_MIN(len, (size_t)alloc));
	free(b);
	scsi_complete(cmd);
}

/* ---- REQUEST SENSE ---- */

void spc_request_sense(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	if (cdb[1] & 0x01) {
		/* DESC: we only make fixed-format sense. */
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 0);
		return;
	}
	uint8_t b[18];
	uint16_t asc;
	if (!ctx->lu)
		scsi_build_sense(b, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_LUN_NOT_SUPPORTED);
	else if (scsi_itl_take_ua(ctx->itl, &asc))
		scsi_build_sense(b, SCSI_KEY_UNIT_ATTENTION, asc);
	else
		scsi_build_sense(b, SCSI_KEY_NO_SENSE, SCSI_ASC_NONE);
	scsi_data_in(cmd, b, TND_MIN((uint32_t)sizeof(b), (uint32_t)cdb[4]));
	scsi_complete(cmd);
}

/* ---- MODE SENSE / MODE SELECT ---- */

enum {
	MODE_PAGE_CACHING = 0x08,
	MODE_PAGE_CONTROL = 0x0a,
	MODE_PAGE_IEC = 0x1c,
	MODE_PAGE_ALL = 0x3f,
	MODE_PC_CURRENT = 0,
	MODE_PC_CHANGEABLE = 1,
	MODE_PC_DEFAULT = 2,
	MODE_PC_SAVED = 3,
	MODE_CACHING_WCE = 0x04,
	MODE_DEVSPEC_WP = 0x80,
	MODE_DEVSPEC_DPOFUA = 0x10,
	MODE_PAGE_MAX = 20,
};

static const uint8_t mode_pages[] = { MODE_PAGE_CACHING, MODE_PAGE_CONTROL, MODE_PAGE_IEC };

/* Build page @page as seen with page control @pc; returns its length or 0. */
static unsigned mode_page(uint8_t *p, const struct scsi_ctx *ctx, uint8_t page, unsigned pc)
{
	bool chg = pc == MODE_PC_CHANGEABLE;
	switch (page) {
	case MODE_PAGE_CACHING:
		memset(p, 0, 20);
		p[0] = MODE_PAGE_CACHING;
		p[1] = 0x12;
		/* WCE can change only where there is a cache to turn off;
		 * by default it is on wherever there is one. */
		if (chg || pc == MODE_PC_DEFAULT)
			p[2] = ctx->info.write_cache ? MODE_CACHING_WCE : 0;
		else
			p[2] = scsi_lu_wce(ctx->lu, &ctx->info) ? MODE_CACHING_WCE : 0;
		return 20;
	case MODE_PAGE_CONTROL:
		memset(p, 0, 12);
		p[0] = MODE_PAGE_CONTROL;
		p[1] = 0x0a;
		if (!chg) {
			p[3] = 0x10;                 /* unrestricted reordering */
			tnd_put_be16(p + 8, 0xffff); /* busy timeout: unlimited */
		}
		return 12;
	case MODE_PAGE_IEC:
		memset(p, 0, 12);
		p[0] = MODE_PAGE_IEC;
		p[1] = 0x0a;
		if (!chg)
			p[2] = 0x08; /* DEXCPT: we report no informational exceptions */
		return 12;
	default:
		return 0;
	}
}

void spc_mode_sense(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	bool ten = cdb[0] == SCSI_MODE_SENSE_10;
	bool dbd = cdb[1] & 0x08;
	bool llbaa = ten && (cdb[1] & 0x10);
	unsigned pc = cdb[2] >> 6;
	uint8_t page = cdb[2] & 0x3f;
	uint8_t subpage = cdb[3];
	uint32_t alloc = ten ? tnd_get_be16(cdb + 7) : cdb[4];
	const struct tnd_volume_info *info = &ctx->info;

	if (pc == MODE_PC_SAVED) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_SAVING_PARAMS_UNSUPPORTED);
		return;
	}
	/* We have no subpages: 00h, or FFh ("and all subpages"), only. */
	if (subpage != 0x00 && subpage != 0xff) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 3, -1);
		return;
	}

	uint8_t b[8 + 16 + 3 * MODE_PAGE_MAX];
	unsigned hdr = ten ? 8 : 4;
	unsigned n = hdr;
	memset(b, 0, sizeof(b));

	if (!dbd) {
		uint8_t *d = b + n;
		if (llbaa) {
			tnd_put_be64(d, info->num_blocks);
			tnd_put_be32(d + 12, info->block_size);
			n += 16;
		} else {
			tnd_put_be32(d, info->num_blocks > 0xffffffffull ? 0xffffffffu
									: (uint32_t)info->num_blocks);
			tnd_put_be24(d + 5, info->block_size);
			n += 8;
		}
	}
	unsigned bd_len = n - hdr;

	if (page == MODE_PAGE_ALL) {
		for (unsigned i = 0; i < sizeof(mode_pages); i++)
			n += mode_page(b + n, ctx, mode_pages[i], pc);
	} else {
		unsigned l = mode_page(b + n, ctx, page, pc);
		if (!l) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, 5);
			return;
		}
		n += l;
	}

	uint8_t devspec = MODE_DEVSPEC_DPOFUA;
	if (info->read_only)
		devspec |= MODE_DEVSPEC_WP;
	if (ten) {
		tnd_put_be16(b, (uint16_t)(n - 2));
		b[3] = devspec;
		b[4] = llbaa ? 0x01 : 0x00;
		tnd_put_be16(b + 6, (uint16_t)bd_len);
	} else {
		b[0] = (uint8_t)(n - 1);
		b[2] = devspec;
		b[3] = (uint8_t)bd_len;
	}
	scsi_data_in(cmd, b, TND_MIN((uint32_t)n, alloc));
	scsi_complete(cmd);
}

/*
 * MODE SELECT: validate the whole parameter list first, then apply, so a
 * rejected list changes nothing. The only field that may change is WCE in
 * the caching page, and only on a volume that has a write cache.
 */
void spc_mode_select(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	bool ten = cdb[0] == SCSI_MODE_SELECT_10;
	uint32_t plen = ten ? tnd_get_be16(cdb + 7) : cdb[4];
	const uint8_t *p = cmd->data;
	unsigned hdr = ten ? 8 : 4;

	if (cdb[1] & 0x01) {
		/* SP: we cannot save parameters. */
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 0);
		return;
	}
	if (plen == 0) {
		scsi_complete(cmd);
		return;
	}
	if (!(cdb[1] & 0x10)) {
		/* PF=0 would mean vendor-specific pages; we have none. */
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 4);
		return;
	}
	if (ctx->dout_len < plen || plen < hdr) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
		return;
	}
	cmd->xfer_len = plen;

	unsigned bd_len = ten ? tnd_get_be16(p + 6) : p[3];
	bool long_lba = ten && (p[4] & 0x01);
	if (bd_len != 0 && bd_len != (long_lba ? 16u : 8u)) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, ten ? 6 : 3, -1);
		return;
	}
	if (hdr + bd_len > plen) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
		return;
	}
	if (bd_len) {
		/* The block descriptor may restate the geometry, not change it. */
		const uint8_t *d = p + hdr;
		uint64_t blocks = long_lba ? tnd_get_be64(d) : tnd_get_be32(d);
		uint32_t bs = long_lba ? tnd_get_be32(d + 12) : tnd_get_be24(d + 5);
		uint64_t cur = ctx->info.num_blocks;
		if (!long_lba && cur > 0xffffffffull)
			cur = 0xffffffffull;
		if (blocks != 0 && blocks != cur) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, hdr, -1);
			return;
		}
		if (bs != ctx->info.block_size) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM,
					 hdr + (long_lba ? 12 : 5), -1);
			return;
		}
	}

	int new_wce = -1;
	for (unsigned off = hdr + bd_len; off < plen;) {
		if (plen - off < 2) {
			scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST,
				   SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
			return;
		}
		const uint8_t *pg = p + off;
		if (pg[0] & 0x40) {
			/* SPF: a subpage; we have none. */
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, off, 6);
			return;
		}
		uint8_t cur[MODE_PAGE_MAX], chg[MODE_PAGE_MAX];
		unsigned len = mode_page(cur, ctx, pg[0] & 0x3f, MODE_PC_CURRENT);
		if (!len) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, off, 5);
			return;
		}
		if (pg[1] != len - 2) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, off + 1, -1);
			return;
		}
		if (plen - off < len) {
			scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST,
				   SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
			return;
		}
		mode_page(chg, ctx, pg[0] & 0x3f, MODE_PC_CHANGEABLE);
		for (unsigned i = 2; i < len; i++) {
			uint8_t bad = (uint8_t)((pg[i] ^ cur[i]) & ~chg[i]);
			if (bad) {
				scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, off + i,
						 31 - __builtin_clz(bad));
				return;
			}
		}
		if ((pg[0] & 0x3f) == MODE_PAGE_CACHING)
			new_wce = (pg[2] & MODE_CACHING_WCE) != 0;
		off += len;
	}

	if (new_wce >= 0 && ctx->info.write_cache) {
		bool was = scsi_lu_wce(ctx->lu, &ctx->info);
		scsi_lu_set_wce(ctx->lu, ctx->itl, new_wce);
		if (was && !new_wce) {
			/* Writes from now on are FUA; the ones acknowledged while
			 * the cache was on are made stable before we answer, so
			 * that WCE=0 means "every acknowledged write" at once. */
			sbc_flush(cmd, ctx);
			return;
		}
	}
	scsi_complete(cmd);
}

/* ---- REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS ---- */

enum {
	RSOC_ALL = 0,
	RSOC_ONE = 1,
	RSOC_ONE_SA = 2,
	RSOC_ONE_ANY = 3,
	RSOC_SUPPORTED = 0x03,
	RSOC_NOT_SUPPORTED = 0x01,
	RSOC_CTDP = 0x02,
	RSOC_SERVACTV = 0x01,
	RSOC_TIMEOUTS_LEN = 12,
};

static bool op_has_sa(const struct scsi_op *op)
{
	return scsi_op_has_sa(op->usage[0]);
}

/* Whether this LU runs @op (without an LU: everything we know). */
static bool op_supported(const struct scsi_op *op, const struct scsi_ctx *ctx)
{
	return !(op->flags & SCSI_OP_LBP) || !ctx->lu || scsi_info_lbp(&ctx->info);
}

/* Command timeouts descriptor: no nominal or recommended timeout known. */
static unsigned put_timeouts(uint8_t *p)
{
	memset(p, 0, RSOC_TIMEOUTS_LEN);
	tnd_put_be16(p, RSOC_TIMEOUTS_LEN - 2);
	return RSOC_TIMEOUTS_LEN;
}

void spc_report_opcodes(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	bool rctd = cdb[2] & 0x80;
	unsigned opt = cdb[2] & 0x07;
	uint8_t opcode = cdb[3];
	uint16_t sa = tnd_get_be16(cdb + 4);
	uint32_t alloc = tnd_get_be32(cdb + 6);
	uint8_t b[4096];
	unsigned n = 0;

	if (opt == RSOC_ALL) {
		n = 4;
		for (const struct scsi_op *op = scsi_op_next(NULL); op; op = scsi_op_next(op)) {
			if (!op_supported(op, ctx))
				continue;
			uint8_t *d = b + n;
			memset(d, 0, 8);
			d[0] = op->usage[0];
			if (op_has_sa(op)) {
				tnd_put_be16(d + 2, op->usage[1]);
				d[5] |= RSOC_SERVACTV;
			}
			if (rctd)
				d[5] |= RSOC_CTDP;
			tnd_put_be16(d + 6, op->cdb_len);
			n += 8;
			if (rctd)
				n += put_timeouts(b + n);
		}
		tnd_put_be32(b, n - 4);
	} else if (opt <= RSOC_ONE_ANY) {
		uint8_t c[16] = { opcode, (uint8_t)(sa & 0x1f) };
		const struct scsi_op *op = scsi_op_lookup(c);
		bool is_sa_opcode = scsi_op_has_sa(opcode);
		if (opt == RSOC_ONE && is_sa_opcode) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, 2);
			return;
		}
		if (opt == RSOC_ONE_SA && !is_sa_opcode) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, 2);
			return;
		}
		if ((is_sa_opcode && sa > 0x1f) || (op && !op_supported(op, ctx)))
			op = NULL;
		memset(b, 0, 4);
		if (rctd)
			b[1] |= 0x80; /* CTDP */
		if (!op) {
			b[1] |= RSOC_NOT_SUPPORTED;
			n = 4;
		} else {
			b[1] |= RSOC_SUPPORTED;
			tnd_put_be16(b + 2, op->cdb_len);
			memcpy(b + 4, op->usage, op->cdb_len);
			n = 4 + op->cdb_len;
		}
		if (rctd)
			n += put_timeouts(b + n);
	} else {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, 2);
		return;
	}
	scsi_data_in(cmd, b, TND_MIN((uint32_t)n, alloc));
	scsi_complete(cmd);
}

void spc_report_tmfs(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	bool repd = cdb[2] & 0x80;
	uint32_t alloc = tnd_get_be32(cdb + 6);
	uint8_t b[16] = { 0 };
	/* What the iSCSI transport implements: ABORT TASK, ABORT TASK SET,
	 * CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET. */
	b[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;
	unsigned n = 4;
	if (repd) {
		b[3] = 0x0c;
		n = 16;
	}
	scsi_data_in(cmd, b, TND_MIN((uint32_t)n, alloc));
	scsi_complete(cmd);
}
