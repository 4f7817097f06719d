/*
 * iscsi_pdu.h — iSCSI PDU wire format (RFC 7143 section 11), internal to target/.
 *
 * Purpose: everything that knows byte offsets inside a PDU lives here, so
 * the connection code reads as protocol logic rather than as arithmetic on
 * header bytes. It offers:
 * - constants for opcodes, flags, reject reasons, login and TMF codes;
 * - a header decoder that checks the Basic Header Segment, the Additional
 *   Header Segments, the optional header digest and the data segment
 *   length against the negotiated limit, and says how many bytes of data
 *   segment, padding and data digest follow;
 * - a whole-PDU decoder (header + data + digests) for small PDUs;
 * - serial number arithmetic (RFC 1982, 32 bits) and the CmdSN window;
 * - single-level LUN encoding and decoding (SAM-5 peripheral and flat
 *   addressing).
 *
 * Threading: pure functions on caller-owned memory; no state.
 *
 * Ownership: decoders borrow the input bytes and never keep pointers past
 * the call except the @data pointer they return, which points into the
 * input buffer.
 */
#ifndef TND_TARGET_ISCSI_PDU_H
#define TND_TARGET_ISCSI_PDU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ISCSI_BHS_LEN 48u
#define ISCSI_DIGEST_LEN 4u
/* TotalAHSLength is one byte counting 4-byte words. */
#define ISCSI_AHS_MAX (255u * 4u)
/* The largest data segment the 24-bit length field allows. */
#define ISCSI_DSL_FIELD_MAX ((1u << 24) - 1)
#define ISCSI_RSVD_TAG 0xffffffffu

/* Opcodes (byte 0, low 6 bits). */
enum {
	ISCSI_OP_NOP_OUT = 0x00,
	ISCSI_OP_SCSI_CMD = 0x01,
	ISCSI_OP_TMF_REQ = 0x02,
	ISCSI_OP_LOGIN_REQ = 0x03,
	ISCSI_OP_TEXT_REQ = 0x04,
	ISCSI_OP_DATA_OUT = 0x05,
	ISCSI_OP_LOGOUT_REQ = 0x06,
	ISCSI_OP_SNACK = 0x10,

	ISCSI_OP_NOP_IN = 0x20,
	ISCSI_OP_SCSI_RSP = 0x21,
	ISCSI_OP_TMF_RSP = 0x22,
	ISCSI_OP_LOGIN_RSP = 0x23,
	ISCSI_OP_TEXT_RSP = 0x24,
	ISCSI_OP_DATA_IN = 0x25,
	ISCSI_OP_LOGOUT_RSP = 0x26,
	ISCSI_OP_R2T = 0x31,
	ISCSI_OP_ASYNC = 0x32,
	ISCSI_OP_REJECT = 0x3f,
};

#define ISCSI_OP_MASK 0x3f
#define ISCSI_OP_IMMEDIATE 0x40

/* Byte 1 flags. */
#define ISCSI_FLAG_FINAL 0x80
#define ISCSI_FLAG_CONT 0x40          /* Text / Login C bit */
#define ISCSI_CMD_READ 0x40
#define ISCSI_CMD_WRITE 0x20
#define ISCSI_CMD_ATTR_MASK 0x07
#define ISCSI_DATAIN_ACK 0x40
#define ISCSI_DATAIN_OVERFLOW 0x04
#define ISCSI_DATAIN_UNDERFLOW 0x02
#define ISCSI_DATAIN_STATUS 0x01
#define ISCSI_RSP_BIDI_OVERFLOW 0x10
#define ISCSI_RSP_BIDI_UNDERFLOW 0x08
#define ISCSI_RSP_OVERFLOW 0x04
#define ISCSI_RSP_UNDERFLOW 0x02
#define ISCSI_LOGIN_TRANSIT 0x80
#define ISCSI_LOGIN_CONT 0x40
#define ISCSI_LOGIN_CSG(b) (((b) >> 2) & 3)
#define ISCSI_LOGIN_NSG(b) ((b) & 3)

/* Login stages. */
enum {
	ISCSI_STAGE_SECURITY = 0,
	ISCSI_STAGE_OPERATIONAL = 1,
	ISCSI_STAGE_FULL_FEATURE = 3,
};

/* Login status: class << 8 | detail (RFC 7143 11.13.5). */
enum {
	ISCSI_LOGIN_OK = 0x0000,
	ISCSI_LOGIN_INITIATOR_ERROR = 0x0200,
	ISCSI_LOGIN_AUTH_FAILED = 0x0201,
	ISCSI_LOGIN_AUTHZ_FAILED = 0x0202,
	ISCSI_LOGIN_NOT_FOUND = 0x0203,
	ISCSI_LOGIN_TARGET_REMOVED = 0x0204,
	ISCSI_LOGIN_UNSUPPORTED_VERSION = 0x0205,
	ISCSI_LOGIN_TOO_MANY_CONNS = 0x0206,
	ISCSI_LOGIN_MISSING_PARAM = 0x0207,
	ISCSI_LOGIN_CANT_INCLUDE = 0x0208,
	ISCSI_LOGIN_SESSION_TYPE = 0x0209,
	ISCSI_LOGIN_NO_SESSION = 0x020a,
	ISCSI_LOGIN_INVALID_REQUEST = 0x020b,
	ISCSI_LOGIN_TARGET_ERROR = 0x0300,
	ISCSI_LOGIN_UNAVAILABLE = 0x0301,
	ISCSI_LOGIN_NO_RESOURCES = 0x0302,
};

/* Reject reasons (RFC 7143 11.17.1). */
enum {
	ISCSI_REJECT_DATA_DIGEST = 0x02,
	ISCSI_REJECT_SNACK = 0x03,
	ISCSI_REJECT_PROTOCOL = 0x04,
	ISCSI_REJECT_CMD_NOT_SUPPORTED = 0x05,
	ISCSI_REJECT_IMM_CMD = 0x06,
	ISCSI_REJECT_TASK_IN_PROGRESS = 0x07,
	ISCSI_REJECT_INVALID_DATA_ACK = 0x08,
	ISCSI_REJECT_INVALID_FIELD = 0x09,
	ISCSI_REJECT_LONG_OP = 0x0a,
	ISCSI_REJECT_WAITING_LOGOUT = 0x0c,
};

/* Task management functions and responses (RFC 7143 11.5, 11.6). */
enum {
	ISCSI_TMF_ABORT_TASK = 1,
	ISCSI_TMF_ABORT_TASK_SET = 2,
	ISCSI_TMF_CLEAR_ACA = 3,
	ISCSI_TMF_CLEAR_TASK_SET = 4,
	ISCSI_TMF_LUN_RESET = 5,
	ISCSI_TMF_TARGET_WARM_RESET = 6,
	ISCSI_TMF_TARGET_COLD_RESET = 7,
	ISCSI_TMF_TASK_REASSIGN = 8,
};
enum {
	ISCSI_TMF_RSP_COMPLETE = 0,
	ISCSI_TMF_RSP_NO_TASK = 1,
	ISCSI_TMF_RSP_NO_LUN = 2,
	ISCSI_TMF_RSP_NOT_SUPPORTED = 5,
	ISCSI_TMF_RSP_REJECTED = 255,
};

/* Logout reasons and responses. */
enum {
	ISCSI_LOGOUT_CLOSE_SESSION = 0,
	ISCSI_LOGOUT_CLOSE_CONN = 1,
	ISCSI_LOGOUT_RECOVERY = 2,
};
enum {
	ISCSI_LOGOUT_RSP_OK = 0,
	ISCSI_LOGOUT_RSP_NO_CID = 1,
	ISCSI_LOGOUT_RSP_NO_RECOVERY = 2,
};

/* Common BHS field offsets. */
enum {
	ISCSI_OFF_TOTAL_AHS = 4,
	ISCSI_OFF_DSL = 5,
	ISCSI_OFF_LUN = 8,
	ISCSI_OFF_ITT = 16,
	ISCSI_OFF_TTT = 20,          /* also EDTL in a SCSI Command */
	ISCSI_OFF_CMDSN = 24,        /* StatSN in target PDUs */
	ISCSI_OFF_EXPSTATSN = 28,    /* ExpCmdSN in target PDUs */
	ISCSI_OFF_MAXCMDSN = 32,
	ISCSI_OFF_DATASN = 36,
	ISCSI_OFF_BUFOFFSET = 40,
	ISCSI_OFF_CDB = 32,
};

/* Negotiated limits the decoder enforces on incoming PDUs. */
struct tnd_iscsi_pdu_limits {
	uint32_t max_data;     /* our MaxRecvDataSegmentLength */
	bool header_digest;
	bool data_digest;
};

/* A decoded header. */
struct tnd_iscsi_hdr {
	const uint8_t *bhs;    /* the 48 BHS bytes (borrowed) */
	uint8_t opcode;
	bool immediate;
	uint8_t flags;         /* byte 1 */
	uint32_t ahs_len;      /* bytes */
	uint32_t data_len;     /* DataSegmentLength */
	uint32_t itt;
	uint32_t hdr_len;      /* BHS + AHS + header digest */
	uint32_t pad_len;      /* 0..3 */
	uint32_t trailer_len;  /* pad + data digest (0 when data_len == 0) */
	uint32_t total_len;    /* everything */
};

/* Error codes of the decoders (negative). */
enum {
	TND_ISCSI_EHDR_DIGEST = -1,  /* header digest mismatch: close the connection */
	TND_ISCSI_EAHS = -2,         /* AHS lengths inconsistent */
	TND_ISCSI_ETOO_LONG = -3,    /* data segment longer than negotiated */
	TND_ISCSI_EDATA_DIGEST = -4, /* data digest mismatch */
};

static inline uint32_t tnd_iscsi_pad4(uint32_t n)
{
	return (4 - (n & 3)) & 3;
}

/*
 * Decode the header at @buf (@len bytes available). Returns the header
 * length (> 0) when complete and valid, 0 when more bytes are needed, or a
 * TND_ISCSI_E* error. On success and on TND_ISCSI_ETOO_LONG @out is filled.
 */
int tnd_iscsi_hdr_decode(const uint8_t *buf, size_t len,
			 const struct tnd_iscsi_pdu_limits *lim, struct tnd_iscsi_hdr *out);

/*
 * Check the trailer (pad + data digest) of a data segment: the digest
 * covers the data and the pad bytes. @trailer points at hdr->trailer_len
 * bytes. Returns 0 or TND_ISCSI_EDATA_DIGEST.
 */
int tnd_iscsi_data_check(const struct tnd_iscsi_hdr *hdr, const struct tnd_iscsi_pdu_limits *lim,
			 const uint8_t *data, const uint8_t *trailer);

/*
 * Decode one whole PDU from @buf. Returns its total length (> 0), 0 when
 * more bytes are needed, or a TND_ISCSI_E* error. *@data points at the data
 * segment inside @buf.
 */
int tnd_iscsi_pdu_decode(const uint8_t *buf, size_t len, const struct tnd_iscsi_pdu_limits *lim,
			 struct tnd_iscsi_hdr *out, const uint8_t **data);

/* Digest as stored on the wire (little-endian CRC32C, as every initiator does). */
void tnd_iscsi_digest_put(uint8_t *p, uint32_t crc);
uint32_t tnd_iscsi_digest_get(const uint8_t *p);

/* ---- serial number arithmetic (RFC 1982, SERIAL_BITS = 32) ---- */

static inline bool tnd_iscsi_sn_lt(uint32_t a, uint32_t b)
{
	return a != b && (int32_t)(a - b) < 0;
}

static inline bool tnd_iscsi_sn_le(uint32_t a, uint32_t b)
{
	return a == b || tnd_iscsi_sn_lt(a, b);
}

enum tnd_iscsi_cmdsn_verdict {
	TND_ISCSI_CMDSN_NOW,     /* == ExpCmdSN: deliver */
	TND_ISCSI_CMDSN_LATER,   /* in (ExpCmdSN, MaxCmdSN]: hold until the gap fills */
	TND_ISCSI_CMDSN_OUTSIDE, /* outside the window: ignore */
};

/* Classify a non-immediate command's CmdSN against [@exp, @max]. */
enum tnd_iscsi_cmdsn_verdict tnd_iscsi_cmdsn_check(uint32_t exp, uint32_t max, uint32_t sn);

/*
 * The MaxCmdSN to advertise: a window of @depth commands of which
 * @outstanding are taken, never below @prev_max (the window never shrinks
 * from the initiator's point of view).
 */
uint32_t tnd_iscsi_max_cmdsn(uint32_t exp, uint32_t prev_max, unsigned depth, unsigned outstanding);

/* ---- LUN addressing ---- */

#define TND_ISCSI_LUN_MAX 16383u

/* Decode an 8-byte single-level LUN; returns 0 or -EINVAL (other formats). */
int tnd_iscsi_lun_decode(const uint8_t *p, uint64_t *lun);
/* Encode LUN @lun (<= 16383) as peripheral (< 256) or flat addressing. */
void tnd_iscsi_lun_encode(uint8_t *p, uint64_t lun);

#endif
