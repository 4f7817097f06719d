/*
 * scsi_alua.c — asymmetric logical unit access (SPC-4 5.15), implicit
 * only: REPORT TARGET PORT GROUPS, and which commands each asymmetric
 * access state lets through.
 *
 * The model. A target port group is a node: every target port this
 * daemon offers belongs to group nx->port_group (1 unless the transport
 * says otherwise). In iSCSI a target port is the target name plus its
 * portal group tag; we have one portal group per target, so a nexus came
 * in through exactly one port, numbered nx->rel_port_id. REPORT TARGET
 * PORT GROUPS therefore describes one group with that one port. When the
 * HA layer adds the peer node, the peer's group (and its state for this
 * LU) joins the report; until then it has nothing to say about it.
 *
 * The state is the LU's (lu->alua_state: the state of this node's group
 * for that LU), set by tnd_scsi_lu_set_alua_state() from any thread. A
 * change bumps lu->alua_gen, which every nexus turns into ASYMMETRIC
 * ACCESS STATE CHANGED on its next command (scsi.c, like a reset), so
 * multipath re-reads the states at once instead of on its next poll.
 *
 * Which commands run where (SPC-4 5.15.2.4): active states run all;
 * standby runs the ones flagged SCSI_OP_ALUA_STANDBY (mode pages, the
 * REPORT SUPPORTED ones) and SCSI_OP_ALUA_ANY; unavailable and
 * transitioning only SCSI_OP_ALUA_ANY (INQUIRY, REPORT LUNS, REQUEST
 * SENSE, REPORT TARGET PORT GROUPS). Everything else is NOT READY with
 * the ASCQ naming the state. We never change state on our own, so
 * SET TARGET PORT GROUPS (explicit ALUA) is not offered (TPGS = 01b).
 */
#include <string.h>

#include "scsi_priv.h"

bool alua_check(struct tnd_scsi_cmd *cmd, const struct scsi_op *op, const struct tnd_scsi_lu *lu)
{
	uint16_t asc;
	switch (scsi_lu_alua(lu)) {
	case TND_SCSI_ALUA_ACTIVE_OPTIMIZED:
	case TND_SCSI_ALUA_ACTIVE_NON_OPTIMIZED:
		return true;
	case TND_SCSI_ALUA_STANDBY:
		if (op->flags & (SCSI_OP_ALUA_STANDBY | SCSI_OP_ALUA_ANY))
			return true;
		asc = SCSI_ASC_ALUA_STANDBY;
		break;
	case TND_SCSI_ALUA_UNAVAILABLE:
		if (op->flags & SCSI_OP_ALUA_ANY)
			return true;
		asc = SCSI_ASC_ALUA_UNAVAILABLE;
		break;
	default:
		if (op->flags & SCSI_OP_ALUA_ANY)
			return true;
		asc = SCSI_ASC_ALUA_TRANSITION;
		break;
	}
	scsi_check(cmd, SCSI_KEY_NOT_READY, asc);
	return false;
}

enum {
	RTPG_FORMAT_LENGTH_ONLY = 0,
	RTPG_FORMAT_EXTENDED = 1,
	/* Supported states: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP. No
	 * offline (no SCSI target ports that go away one by one) and no
	 * logical block dependent state. */
	RTPG_SUPPORTED = 0x80 | 0x08 | 0x04 | 0x02 | 0x01,
	RTPG_STATUS_NONE = 0x00,
	RTPG_STATUS_IMPLICIT = 0x02,  /* altered by implicit ALUA behaviour */
};

void alua_report_tpgs(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const uint8_t *cdb = cmd->cdb;
	unsigned format = cdb[1] >> 5;
	uint32_t alloc = tnd_get_be32(cdb + 6);
	const struct tnd_scsi_nexus *nx = ctx->nexus;

	if (format > RTPG_FORMAT_EXTENDED) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 7);
		return;
	}
	uint8_t b[8 + 8 + 4];
	unsigned hdr = format == RTPG_FORMAT_EXTENDED ? 8 : 4;
	memset(b, 0, sizeof(b));
	if (format == RTPG_FORMAT_EXTENDED) {
		b[4] = RTPG_FORMAT_EXTENDED << 4;
		/* IMPLICIT TRANSITION TIME: 0, none is ever in progress for
		 * long; the HA layer sets its own when it has one. */
		b[5] = 0;
	}
	uint8_t *d = b + hdr;
	d[0] = (uint8_t)(scsi_lu_alua(ctx->lu) & 0x0f);
	d[1] = RTPG_SUPPORTED;
	tnd_put_be16(d + 2, nx->port_group);
	d[5] = atomic_load_explicit(&ctx->lu->alua_gen, memory_order_acquire)
		       ? RTPG_STATUS_IMPLICIT
		       : RTPG_STATUS_NONE;
	d[7] = 1; /* TARGET PORT COUNT */
	tnd_put_be16(d + 8 + 2, nx->rel_port_id);
	unsigned n = hdr + 8 + 4;
	/* RETURN DATA LENGTH is (n - 3) in both formats: everything after
	 * itself, so the extended header's last four bytes count too. */
	tnd_put_be32(b, n - 4);
	scsi_data_in(cmd, b, TND_MIN((uint32_t)n, alloc));
	scsi_complete(cmd);
}
