/* iSCSI PDU decoding and small wire helpers; see iscsi_pdu.h. */
#include <errno.h>
#include <string.h>

#include "tnd_common.h"
#include "iscsi_pdu.h"

/* AHS types we understand (RFC 7143 11.2.1.2); anything else is garbage. */
enum {
	AHS_EXTENDED_CDB = 1,
	AHS_BIDI_READ_LEN = 2,
};

void tnd_iscsi_digest_put(uint8_t *p, uint32_t crc)
{
	p[0] = (uint8_t)crc;
	p[1] = (uint8_t)(crc >> 8);
	p[2] = (uint8_t)(crc >> 16);
	p[3] = (uint8_t)(crc >> 24);
}

uint32_t tnd_iscsi_digest_get(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Walk the AHS list: each entry is a 2-byte length, a type byte, a
 * reserved byte and the specific bytes, padded to 4; together they must
 * fill TotalAHSLength exactly. */
static bool ahs_valid(const uint8_t *ahs, uint32_t len)
{
	uint32_t off = 0;
	while (off < len) {
		if (len - off < 4)
			return false;
		uint32_t alen = tnd_get_be16(ahs + off);
		uint8_t type = ahs[off + 2];
		uint32_t span = 3 + alen;
		span += tnd_iscsi_pad4(span);
		if (alen == 0 || span > len - off)
			return false;
		if (type == AHS_BIDI_READ_LEN && alen != 5)
			return false;
		if (type != AHS_EXTENDED_CDB && type != AHS_BIDI_READ_LEN)
			return false;
		off += span;
	}
	return true;
}

int tnd_iscsi_hdr_decode(const uint8_t *buf, size_t len,
			 const struct tnd_iscsi_pdu_limits *lim, struct tnd_iscsi_hdr *out)
{
	if (len < ISCSI_BHS_LEN)
		return 0;
	memset(out, 0, sizeof(*out));
	out->bhs = buf;
	out->opcode = buf[0] & ISCSI_OP_MASK;
	out->immediate = buf[0] & ISCSI_OP_IMMEDIATE;
	out->flags = buf[1];
	out->ahs_len = (uint32_t)buf[ISCSI_OFF_TOTAL_AHS] * 4;
	out->data_len = tnd_get_be24(buf + ISCSI_OFF_DSL);
	out->itt = tnd_get_be32(buf + ISCSI_OFF_ITT);
	out->hdr_len = ISCSI_BHS_LEN + out->ahs_len + (lim->header_digest ? ISCSI_DIGEST_LEN : 0);
	out->pad_len = tnd_iscsi_pad4(out->data_len);
	out->trailer_len = out->data_len ? out->pad_len + (lim->data_digest ? ISCSI_DIGEST_LEN : 0) : 0;
	out->total_len = out->hdr_len + out->data_len + out->trailer_len;

	if (len < out->hdr_len)
		return 0;
	if (lim->header_digest) {
		uint32_t want = tnd_crc32c(0, buf, ISCSI_BHS_LEN + out->ahs_len);
		if (tnd_iscsi_digest_get(buf + ISCSI_BHS_LEN + out->ahs_len) != want)
			return TND_ISCSI_EHDR_DIGEST;
	}
	if (out->ahs_len && !ahs_valid(buf + ISCSI_BHS_LEN, out->ahs_len))
		return TND_ISCSI_EAHS;
	if (out->data_len > lim->max_data)
		return TND_ISCSI_ETOO_LONG;
	return (int)out->hdr_len;
}

int tnd_iscsi_data_check(const struct tnd_iscsi_hdr *hdr, const struct tnd_iscsi_pdu_limits *lim,
			 const uint8_t *data, const uint8_t *trailer)
{
	if (!lim->data_digest || hdr->data_len == 0)
		return 0;
	uint32_t crc = tnd_crc32c(0, data, hdr->data_len);
	crc = tnd_crc32c(crc, trailer, hdr->pad_len);
	if (tnd_iscsi_digest_get(trailer + hdr->pad_len) != crc)
		return TND_ISCSI_EDATA_DIGEST;
	return 0;
}

int tnd_iscsi_pdu_decode(const uint8_t *buf, size_t len, const struct tnd_iscsi_pdu_limits *lim,
			 struct tnd_iscsi_hdr *out, const uint8_t **data)
{
	int ret = tnd_iscsi_hdr_decode(buf, len, lim, out);
	if (ret <= 0)
		return ret;
	if (len < out->total_len)
		return 0;
	*data = buf + out->hdr_len;
	ret = tnd_iscsi_data_check(out, lim, *data, *data + out->data_len);
	if (ret < 0)
		return ret;
	return (int)out->total_len;
}

enum tnd_iscsi_cmdsn_verdict tnd_iscsi_cmdsn_check(uint32_t exp, uint32_t max, uint32_t sn)
{
	if (sn == exp)
		return TND_ISCSI_CMDSN_NOW;
	if (tnd_iscsi_sn_lt(exp, sn) && tnd_iscsi_sn_le(sn, max))
		return TND_ISCSI_CMDSN_LATER;
	return TND_ISCSI_CMDSN_OUTSIDE;
}

uint32_t tnd_iscsi_max_cmdsn(uint32_t exp, uint32_t prev_max, unsigned depth, unsigned outstanding)
{
	/* A full window is advertised as MaxCmdSN = ExpCmdSN - 1. */
	uint32_t free = outstanding >= depth ? 0 : depth - outstanding;
	uint32_t max = exp + free - 1;
	return tnd_iscsi_sn_lt(max, prev_max) ? prev_max : max;
}

int tnd_iscsi_lun_decode(const uint8_t *p, uint64_t *lun)
{
	for (int i = 2; i < 8; i++)
		if (p[i])
			return -EINVAL;
	switch (p[0] >> 6) {
	case 0: /* peripheral device addressing, bus 0 */
		if (p[0] & 0x3f)
			return -EINVAL;
		*lun = p[1];
		return 0;
	case 1: /* flat space addressing */
		*lun = (uint64_t)(p[0] & 0x3f) << 8 | p[1];
		return 0;
	default:
		return -EINVAL;
	}
}

void tnd_iscsi_lun_encode(uint8_t *p, uint64_t lun)
{
	memset(p, 0, 8);
	if (lun < 256) {
		p[1] = (uint8_t)lun;
	} else {
		p[0] = (uint8_t)(0x40 | ((lun >> 8) & 0x3f));
		p[1] = (uint8_t)lun;
	}
}
