/*
 * scsi_sense.c — every status and sense datum the SCSI layer returns is
 * made here, so the mapping from a volume's -errno to what an initiator
 * sees is decided once.
 *
 * We return fixed-format sense (response code 70h): every initiator
 * understands it, and nothing we report needs a 64-bit INFORMATION field.
 */
#include <errno.h>
#include <string.h>

#include "scsi_priv.h"

enum {
	SENSE_FIXED_LEN = 18,
	SENSE_VALID = 0x80,
	SENSE_CURRENT_FIXED = 0x70,
	SKS_VALID = 0x80,
	SKS_CD = 0x40,       /* the field pointer is into the CDB */
	SKS_BPV = 0x08,      /* the bit pointer is valid */
};

unsigned scsi_build_sense(uint8_t *buf, uint8_t key, uint16_t asc)
{
	memset(buf, 0, SENSE_FIXED_LEN);
	buf[0] = SENSE_CURRENT_FIXED;
	buf[2] = key & 0x0f;
	buf[7] = SENSE_FIXED_LEN - 8; /* additional sense length */
	buf[12] = (uint8_t)(asc >> 8);
	buf[13] = (uint8_t)asc;
	return SENSE_FIXED_LEN;
}

unsigned tnd_scsi_build_sense(uint8_t *buf, uint8_t key, uint8_t asc, uint8_t ascq)
{
	return scsi_build_sense(buf, key, (uint16_t)(asc << 8 | ascq));
}

void scsi_data_in(struct tnd_scsi_cmd *cmd, const void *buf, uint32_t len)
{
	uint32_t n = TND_MIN(len, cmd->data_len);
	if (n && cmd->data)
		memcpy(cmd->data, buf, n);
	else
		n = 0;
	cmd->in_len = n;
	cmd->xfer_len = len;
}

void scsi_complete(struct tnd_scsi_cmd *cmd)
{
	cmd->status = TND_SAM_GOOD;
	cmd->done(cmd);
}

void scsi_reservation_conflict(struct tnd_scsi_cmd *cmd)
{
	/* A status without sense data (SAM-5 5.3.1). */
	cmd->status = TND_SAM_RESERVATION_CONFLICT;
	cmd->sense_len = 0;
	cmd->in_len = 0;
	cmd->done(cmd);
}

void scsi_check(struct tnd_scsi_cmd *cmd, uint8_t key, uint16_t asc)
{
	cmd->status = TND_SAM_CHECK_CONDITION;
	cmd->sense_len = (uint8_t)scsi_build_sense(cmd->sense, key, asc);
	/* A failed command transfers nothing the initiator may rely on. */
	cmd->in_len = 0;
	cmd->done(cmd);
}

void scsi_check_field(struct tnd_scsi_cmd *cmd, uint16_t asc, unsigned byte, int bit)
{
	cmd->status = TND_SAM_CHECK_CONDITION;
	cmd->sense_len = (uint8_t)scsi_build_sense(cmd->sense, SCSI_KEY_ILLEGAL_REQUEST, asc);
	uint8_t *sks = cmd->sense + 15;
	sks[0] = SKS_VALID;
	if (asc == SCSI_ASC_INVALID_FIELD_IN_CDB)
		sks[0] |= SKS_CD;
	if (bit >= 0)
		sks[0] |= SKS_BPV | (uint8_t)(bit & 7);
	tnd_put_be16(sks + 1, (uint16_t)byte);
	cmd->in_len = 0;
	cmd->done(cmd);
}

void scsi_check_miscompare(struct tnd_scsi_cmd *cmd, uint32_t offset)
{
	cmd->status = TND_SAM_CHECK_CONDITION;
	cmd->sense_len = (uint8_t)scsi_build_sense(cmd->sense, SCSI_KEY_MISCOMPARE,
						   SCSI_ASC_MISCOMPARE_DURING_VERIFY);
	/* INFORMATION: offset of the first byte that differs (SBC-3 5.3). */
	cmd->sense[0] |= SENSE_VALID;
	tnd_put_be32(cmd->sense + 3, offset);
	cmd->in_len = 0;
	cmd->done(cmd);
}

unsigned scsi_errno_sense(uint8_t *buf, int err, enum scsi_err_ctx what)
{
	switch (err) {
	case -EIO:
		return scsi_build_sense(buf, SCSI_KEY_MEDIUM_ERROR,
					what == SCSI_ERR_READ ? SCSI_ASC_UNRECOVERED_READ_ERROR
							      : SCSI_ASC_WRITE_ERROR);
	case -EILSEQ:
		/* A block that fails its checksum is unreadable, whatever we
		 * were doing when we found out. */
		return scsi_build_sense(buf, SCSI_KEY_MEDIUM_ERROR, SCSI_ASC_UNRECOVERED_READ_ERROR);
	case -ENOSPC:
		return scsi_build_sense(buf, SCSI_KEY_DATA_PROTECT, SCSI_ASC_SPACE_ALLOC_FAILED_WP);
	case -EROFS:
		return scsi_build_sense(buf, SCSI_KEY_DATA_PROTECT, SCSI_ASC_WRITE_PROTECTED);
	case -EINVAL:
		/* The volume's word for "out of range": the size changed under
		 * us between our check and its. */
		return scsi_build_sense(buf, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_LBA_OUT_OF_RANGE);
	case -ENOMEM:
	case -EAGAIN:
	case -EBUSY:
		/* Transient shortage on our side: the initiator retries. */
		return 0;
	default:
		return scsi_build_sense(buf, SCSI_KEY_HARDWARE_ERROR,
					SCSI_ASC_INTERNAL_TARGET_FAILURE);
	}
}

void scsi_check_sense(struct tnd_scsi_cmd *cmd, const uint8_t *sense, unsigned len)
{
	cmd->status = TND_SAM_CHECK_CONDITION;
	if (len > TND_SCSI_SENSE_MAX)
		len = TND_SCSI_SENSE_MAX;
	memcpy(cmd->sense, sense, len);
	cmd->sense_len = (uint8_t)len;
	cmd->in_len = 0;
	cmd->done(cmd);
}

void scsi_check_errno(struct tnd_scsi_cmd *cmd, int err, enum scsi_err_ctx what)
{
	uint8_t b[TND_SCSI_SENSE_MAX];
	unsigned n = scsi_errno_sense(b, err, what);
	if (n) {
		scsi_check_sense(cmd, b, n);
		return;
	}
	cmd->status = TND_SAM_BUSY;
	cmd->sense_len = 0;
	cmd->in_len = 0;
	cmd->done(cmd);
}
