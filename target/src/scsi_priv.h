/*
 * scsi_priv.h — what the scsi*.c files share among themselves; the
 * transport sees only scsi.h.
 *
 * Layout of the SCSI layer:
 *   scsi.c        the opcode table, CDB checks, unit attentions, dispatch,
 *                 LU and nexus objects, tnd_scsi_cdb_xfer()
 *   scsi_sense.c  every sense datum is built here, from a key/ASC/ASCQ or
 *                 from a volume's -errno plus what the command was doing
 *   scsi_spc.c    primary commands: INQUIRY and VPD, REPORT LUNS, REQUEST
 *                 SENSE, MODE SENSE/SELECT, REPORT SUPPORTED OPCODES/TMFs
 *   scsi_sbc.c    block commands: READ/WRITE/VERIFY, SYNCHRONIZE CACHE,
 *                 capacity, UNMAP, WRITE SAME, GET LBA STATUS, PRE-FETCH
 *   scsi_alua.c   ALUA: REPORT TARGET PORT GROUPS, which commands each
 *                 asymmetric access state refuses
 *   scsi_xcopy.c  EXTENDED COPY (LID1) and RECEIVE COPY RESULTS
 *   scsi_pr.c     reservations: PERSISTENT RESERVE IN/OUT, RESERVE/RELEASE,
 *                 the conflict check, reservation unit attentions, APTPL
 *
 * Every exec function receives the command and a struct scsi_ctx built by
 * the dispatcher (the decoded op, the LU, the nexus's per-LU state and a
 * snapshot of the volume's info taken for this command). It finishes the
 * command through scsi_complete()/scsi_check*() exactly once, either
 * before returning or later from a volume completion.
 *
 * Threading: the LU is shared by reactors. Its identity is immutable after
 * creation; the only mutable fields are atomics (reset and mode-parameter
 * generations, the WCE setting, the COMPARE AND WRITE lock word) plus the
 * lock's hand-off queue, which only the lock holder touches. Each nexus
 * keeps, per LU it has touched, the generations it last saw; a difference
 * is a unit attention to report. So a reset or MODE SELECT costs one
 * atomic increment and every nexus notices on its next command, with no
 * lock and no cross-reactor message. Plain READ/WRITE touch no shared
 * mutable state at all.
 *
 * Ownership: exec functions borrow cmd (the transport's until done())
 * and ctx (the dispatcher's stack, gone when exec returns: copy what an
 * asynchronous step needs). cmd->data is the transport's; we read data-out
 * from it only within ctx->dout_len and write data-in up to data_len.
 */
#ifndef TND_TARGET_SCSI_PRIV_H
#define TND_TARGET_SCSI_PRIV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "scsi.h"
#include "tnd_common.h"
#include "tnd_reactor.h"

/* ---- opcodes we decode ---- */
enum {
	SCSI_TEST_UNIT_READY = 0x00,
	SCSI_REQUEST_SENSE = 0x03,
	SCSI_READ_6 = 0x08,
	SCSI_WRITE_6 = 0x0a,
	SCSI_INQUIRY = 0x12,
	SCSI_MODE_SELECT_6 = 0x15,
	SCSI_RESERVE_6 = 0x16,
	SCSI_RELEASE_6 = 0x17,
	SCSI_MODE_SENSE_6 = 0x1a,
	SCSI_START_STOP_UNIT = 0x1b,
	SCSI_READ_CAPACITY_10 = 0x25,
	SCSI_READ_10 = 0x28,
	SCSI_WRITE_10 = 0x2a,
	SCSI_WRITE_VERIFY_10 = 0x2e,
	SCSI_VERIFY_10 = 0x2f,
	SCSI_PRE_FETCH_10 = 0x34,
	SCSI_SYNCHRONIZE_CACHE_10 = 0x35,
	SCSI_WRITE_SAME_10 = 0x41,
	SCSI_UNMAP = 0x42,
	SCSI_MODE_SELECT_10 = 0x55,
	SCSI_RESERVE_10 = 0x56,
	SCSI_RELEASE_10 = 0x57,
	SCSI_MODE_SENSE_10 = 0x5a,
	SCSI_PERSISTENT_RESERVE_IN = 0x5e,
	SCSI_PERSISTENT_RESERVE_OUT = 0x5f,
	SCSI_READ_16 = 0x88,
	SCSI_COMPARE_AND_WRITE = 0x89,
	SCSI_WRITE_16 = 0x8a,
	SCSI_WRITE_VERIFY_16 = 0x8e,
	SCSI_VERIFY_16 = 0x8f,
	SCSI_PRE_FETCH_16 = 0x90,
	SCSI_SYNCHRONIZE_CACHE_16 = 0x91,
	SCSI_WRITE_SAME_16 = 0x93,
	SCSI_SERVICE_ACTION_IN_16 = 0x9e,
	SCSI_EXTENDED_COPY = 0x83,      /* THIRD-PARTY COPY OUT */
	SCSI_RECEIVE_COPY_RESULTS = 0x84, /* THIRD-PARTY COPY IN */
	SCSI_REPORT_LUNS = 0xa0,
	SCSI_MAINTENANCE_IN = 0xa3,
	SCSI_READ_12 = 0xa8,
	SCSI_WRITE_12 = 0xaa,
	SCSI_WRITE_VERIFY_12 = 0xae,
	SCSI_VERIFY_12 = 0xaf,
};

/* Service actions. */
enum {
	SCSI_SAI_READ_CAPACITY_16 = 0x10,
	SCSI_SAI_GET_LBA_STATUS = 0x12,
	SCSI_MI_REPORT_TARGET_PORT_GROUPS = 0x0a,
	SCSI_MI_REPORT_SUPPORTED_OPCODES = 0x0c,
	SCSI_MI_REPORT_SUPPORTED_TMFS = 0x0d,
	SCSI_XCOPY_LID1 = 0x00,
	SCSI_RCR_COPY_STATUS = 0x00,
	SCSI_RCR_OPERATING_PARAMETERS = 0x03,
	SCSI_RCR_FAILED_SEGMENT_DETAILS = 0x04,
	SCSI_PRIN_READ_KEYS = 0x00,
	SCSI_PRIN_READ_RESERVATION = 0x01,
	SCSI_PRIN_REPORT_CAPABILITIES = 0x02,
	SCSI_PRIN_READ_FULL_STATUS = 0x03,
	SCSI_PROUT_REGISTER = 0x00,
	SCSI_PROUT_RESERVE = 0x01,
	SCSI_PROUT_RELEASE = 0x02,
	SCSI_PROUT_CLEAR = 0x03,
	SCSI_PROUT_PREEMPT = 0x04,
	SCSI_PROUT_PREEMPT_AND_ABORT = 0x05,
	SCSI_PROUT_REGISTER_AND_IGNORE = 0x06,
	SCSI_PROUT_REGISTER_AND_MOVE = 0x07,
};

/* Sense keys. */
enum {
	SCSI_KEY_NO_SENSE = 0x0,
	SCSI_KEY_NOT_READY = 0x2,
	SCSI_KEY_MEDIUM_ERROR = 0x3,
	SCSI_KEY_HARDWARE_ERROR = 0x4,
	SCSI_KEY_ILLEGAL_REQUEST = 0x5,
	SCSI_KEY_UNIT_ATTENTION = 0x6,
	SCSI_KEY_DATA_PROTECT = 0x7,
	SCSI_KEY_COPY_ABORTED = 0xa,
	SCSI_KEY_ABORTED_COMMAND = 0xb,
	SCSI_KEY_MISCOMPARE = 0xe,
};

/* Additional sense codes as (ASC << 8 | ASCQ). */
enum {
	SCSI_ASC_NONE = 0x0000,
	SCSI_ASC_OPERATION_IN_PROGRESS = 0x0016,
	SCSI_ASC_ALUA_TRANSITION = 0x040a,
	SCSI_ASC_ALUA_STANDBY = 0x040b,
	SCSI_ASC_ALUA_UNAVAILABLE = 0x040c,
	SCSI_ASC_UNREACHABLE_COPY_TARGET = 0x0804,
	SCSI_ASC_WRITE_ERROR = 0x0c00,
	SCSI_ASC_UNRECOVERED_READ_ERROR = 0x1100,
	SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR = 0x1a00,
	SCSI_ASC_MISCOMPARE_DURING_VERIFY = 0x1d00,
	SCSI_ASC_INVALID_OPCODE = 0x2000,
	SCSI_ASC_LBA_OUT_OF_RANGE = 0x2100,
	SCSI_ASC_INVALID_FIELD_IN_CDB = 0x2400,
	SCSI_ASC_LUN_NOT_SUPPORTED = 0x2500,
	SCSI_ASC_INVALID_FIELD_IN_PARAM = 0x2600,
	SCSI_ASC_INVALID_RELEASE_OF_PR = 0x2604,
	SCSI_ASC_TOO_MANY_TARGET_DESCRIPTORS = 0x2606,
	SCSI_ASC_UNSUPPORTED_TARGET_DESCRIPTOR = 0x2607,
	SCSI_ASC_TOO_MANY_SEGMENT_DESCRIPTORS = 0x2608,
	SCSI_ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR = 0x2609,
	SCSI_ASC_WRITE_PROTECTED = 0x2700,
	SCSI_ASC_SPACE_ALLOC_FAILED_WP = 0x2707,
	SCSI_ASC_POWER_ON_RESET = 0x2900,
	SCSI_ASC_LUN_RESET_OCCURRED = 0x2903,
	SCSI_ASC_MODE_PARAMETERS_CHANGED = 0x2a01,
	SCSI_ASC_RESERVATIONS_PREEMPTED = 0x2a03,
	SCSI_ASC_RESERVATIONS_RELEASED = 0x2a04,
	SCSI_ASC_REGISTRATIONS_PREEMPTED = 0x2a05,
	SCSI_ASC_ALUA_STATE_CHANGED = 0x2a06,
	SCSI_ASC_CAPACITY_CHANGED = 0x2a09,
	SCSI_ASC_SAVING_PARAMS_UNSUPPORTED = 0x3900,
	SCSI_ASC_INTERNAL_TARGET_FAILURE = 0x4400,
	SCSI_ASC_INSUFFICIENT_REG_RESOURCES = 0x5504,
};

/* Limits we advertise in the Block Limits VPD page and enforce. */
#define SCSI_MAX_UNMAP_DESCRIPTORS 256u
#define SCSI_MAX_UNMAP_BLOCKS (1u << 20)
/* One WRITE SAME is one command's worth of work: with a pattern it is
 * written block by block, and 64 Ki blocks (32 MiB to 256 MiB) stays well
 * inside an initiator's command timeout. Also WRITE SAME(10)'s limit. */
#define SCSI_MAX_WRITE_SAME_BLOCKS 0xffffu
#define SCSI_MAX_CAW_BLOCKS 16u

struct scsi_op;
struct scsi_ctx;

typedef void (*scsi_exec_fn)(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);

/* How to find a command's data transfer length in its CDB. */
enum scsi_xfer_kind {
	SCSI_XFER_NONE,
	SCSI_XFER_IN_ALLOC,     /* data-in, allocation length field (bytes) */
	SCSI_XFER_OUT_PARAM,    /* data-out, parameter list length field (bytes) */
	SCSI_XFER_IN_BLOCKS,    /* data-in, transfer length field (blocks) */
	SCSI_XFER_OUT_BLOCKS,   /* data-out, transfer length field (blocks) */
	SCSI_XFER_IN_FIXED,     /* data-in of a fixed size (fixed_len) */
	SCSI_XFER_CUSTOM,       /* op->xfer_fn decides */
};

enum {
	/* INQUIRY, REPORT LUNS, REQUEST SENSE: a pending unit attention is
	 * neither reported nor cleared by them (SAM-5 5.14). */
	SCSI_OP_KEEPS_UA = 1u << 0,
	/* Runs without a logical unit (REPORT LUNS on a LUN that is absent). */
	SCSI_OP_NO_LU = 1u << 1,
	/* A transfer length of 0 means 256 blocks (READ/WRITE(6)). */
	SCSI_OP_ZERO_IS_256 = 1u << 2,
	/* Changes the medium: refused on a read-only LU. */
	SCSI_OP_WRITES = 1u << 3,
	/* Exists only with logical block provisioning (scsi_info_lbp()):
	 * INVALID COMMAND OPERATION CODE otherwise, and not reported by
	 * REPORT SUPPORTED OPERATION CODES. */
	SCSI_OP_LBP = 1u << 4,
	/* Runs while the LU's ALUA state is standby (SPC-4 5.15.2.4.4). */
	SCSI_OP_ALUA_STANDBY = 1u << 5,
	/* Runs in every ALUA state, unavailable and transitioning too. */
	SCSI_OP_ALUA_ANY = 1u << 6,
	/*
	 * Reservations (scsi_pr.c; SPC-4 5.13.1 and SBC-3 4.17 tables). An op
	 * with none of these conflicts with any reservation it is not
	 * covered by, which is the right default for anything that changes
	 * the medium or the LU's state.
	 */
	/* Never conflicts with a persistent reservation (INQUIRY, TEST UNIT
	 * READY, READ CAPACITY, PERSISTENT RESERVE IN, ...). */
	SCSI_OP_PR_ALLOWED = 1u << 7,
	/* Reads the medium: conflicts only with the Exclusive Access types. */
	SCSI_OP_PR_READS = 1u << 8,
	/* START STOP UNIT: allowed when START=1 and POWER CONDITION=0. */
	SCSI_OP_PR_START = 1u << 9,
	/* Never conflicts with another nexus's RESERVE(6) reservation. */
	SCSI_OP_SPC2_ALLOWED = 1u << 10,
	/* The exec function applies the reservation rules itself
	 * (PERSISTENT RESERVE OUT, RESERVE, RELEASE). */
	SCSI_OP_RES_EXEC = 1u << 11,
};

struct scsi_op {
	const char *name;
	scsi_exec_fn exec;
	uint8_t cdb_len;
	uint16_t flags;                 /* SCSI_OP_* */
	/* Service-action opcodes: the per-action table, indexed by the
	 * 5-bit SERVICE ACTION field in byte 1 (exec is NULL then). */
	const struct scsi_op *sa;
	enum scsi_xfer_kind xfer;
	uint8_t len_off, len_size;      /* where the length field is */
	uint16_t fixed_len;
	int (*xfer_fn)(const uint8_t *cdb, uint32_t block_size,
		       enum tnd_scsi_dir *dir, uint32_t *len);
	/*
	 * CDB usage data as REPORT SUPPORTED OPERATION CODES returns it: a bit
	 * is set where the CDB may have a one. Also what the dispatcher checks
	 * reserved bits against (bytes 1..cdb_len-1; byte 0 is the opcode).
	 */
	uint8_t usage[16];
};

/* Look up the op for a CDB: NULL if unsupported. */
const struct scsi_op *scsi_op_lookup(const uint8_t *cdb);
/* Iterate over every supported op (REPORT SUPPORTED OPERATION CODES). */
const struct scsi_op *scsi_op_next(const struct scsi_op *prev);
/* Whether @opcode has service actions (its byte 1 bits 4-0). */
bool scsi_opcode_has_sa(uint8_t opcode);

/* Pending unit attention conditions of one I_T_L, in reporting order. */
enum {
	SCSI_UA_POWER_ON = 1u << 0,     /* 29/00 */
	SCSI_UA_LUN_RESET = 1u << 1,    /* 29/03 */
	SCSI_UA_MODE_CHANGED = 1u << 2, /* 2A/01 */
	SCSI_UA_CAPACITY = 1u << 3,     /* 2A/09 */
	SCSI_UA_ALUA_CHANGED = 1u << 4, /* 2A/06 */
	SCSI_UA_RES_PREEMPTED = 1u << 5, /* 2A/03 */
	SCSI_UA_RES_RELEASED = 1u << 6, /* 2A/04 */
	SCSI_UA_REG_PREEMPTED = 1u << 7, /* 2A/05 */
};

/* A nexus's view of one LU (the "L" of I_T_L). Owned by the nexus. */
struct scsi_itl {
	const struct tnd_scsi_lu *lu;
	uint64_t lu_epoch;              /* tells a new LU at a reused address */
	unsigned seen_reset_gen;
	unsigned seen_mode_gen;
	unsigned seen_alua_gen;
	uint64_t seen_blocks;
	unsigned ua;                    /* SCSI_UA_* */
	/* The reservation verdict for this I_T_L (SCSI_PR_BLOCK_*), valid
	 * while scsi_pr_gen(lu) equals seen_pr_gen (scsi_pr.c). */
	unsigned seen_pr_gen;
	uint8_t pr_block;
};

/*
 * COMPARE AND WRITE is atomic per LU: its read, compare and write run
 * under an LU-wide lock shared by every reactor. The lock never blocks a
 * thread: a command that finds it taken leaves a waiter and returns; the
 * holder, on release, hands the lock to the next waiter by a message to
 * that waiter's reactor, where @granted runs.
 */
struct scsi_caw_waiter {
	struct scsi_caw_waiter *next;
	struct tnd_msg msg;
	struct tnd_reactor *reactor;
	void (*granted)(struct scsi_caw_waiter *w);
};

/* True: held now. False: @w->granted will run on @w->reactor once it is. */
bool scsi_caw_acquire(struct tnd_scsi_lu *lu, struct scsi_caw_waiter *w);
/* Release (or hand on) the lock; only its holder calls this. */
void scsi_caw_release(struct tnd_scsi_lu *lu);

struct tnd_scsi_lu {
	struct tnd_volume *vol;
	uint64_t epoch;
	char name[256];
	char vendor[9];
	char product[17];
	char revision[5];
	char serial[33];
	uint8_t naa[16];

	atomic_uint reset_gen;
	atomic_uint mode_gen;
	/* ALUA: the state (enum tnd_scsi_alua_state) and how often it was
	 * changed, for the unit attention and RTPG's STATUS CODE. */
	atomic_uint alua_state;
	atomic_uint alua_gen;
	/* WCE as set by MODE SELECT; meaningful only while the volume has a
	 * write cache (info.write_cache, asked per command: a cache layer may
	 * switch between write-back and write-through). When false every
	 * write is sent with TND_IO_FUA, so that the caching page's WCE=0
	 * stays true. */
	atomic_bool wce;

	/* The COMPARE AND WRITE lock: NULL free; SCSI_CAW_HELD held with no
	 * waiters; else a stack of waiters ending in SCSI_CAW_HELD. */
	_Atomic(struct scsi_caw_waiter *) caw_head;
	/* Waiters already taken off the stack, oldest first; only the
	 * holder touches it (the hand-off message orders the accesses). */
	struct scsi_caw_waiter *caw_queue;

	/* Reservation state (scsi_pr.c), shared by the LUs of one device.
	 * Its generation (scsi_pr_gen()) is bumped after every change a
	 * nexus must notice, so the per-command check is one atomic load
	 * while nothing changes. */
	struct scsi_pr *pr;
};

/*
 * What RECEIVE COPY RESULTS reports of one EXTENDED COPY (LID1) of a
 * nexus, by (LU, list identifier). Kept in the nexus: SPC-4 scopes list
 * identifiers to the I_T nexus. @lu is compared, never dereferenced.
 */
#define SCSI_XCOPY_RECORDS 8
struct scsi_copy_rec {
	const struct tnd_scsi_lu *lu;   /* NULL: slot free */
	uint64_t lu_epoch;
	uint64_t age;                   /* for reuse: the oldest goes first */
	uint8_t list_id;
	bool running;
	uint8_t status;                 /* TND_SAM_* once finished */
	uint16_t segments;              /* segment descriptors processed */
	uint64_t bytes;                 /* bytes written to copy targets */
	uint8_t sense_len;              /* failed segment details */
	uint8_t sense[TND_SCSI_SENSE_MAX];
};

struct tnd_scsi_nexus {
	char *initiator;
	char *target_name;
	uint16_t tpgt;
	uint16_t rel_port_id;
	uint16_t port_group;
	struct scsi_itl *itl;
	unsigned nr_itl, cap_itl;
	/* EXTENDED COPY: results by list id, and copies in progress. */
	struct scsi_copy_rec copies[SCSI_XCOPY_RECORDS];
	uint64_t copy_age;
	unsigned copies_running;
	/* Tells an LU holding this nexus's RESERVE(6) that it is gone. */
	struct scsi_pr_token *pr_token;
};

/* What the dispatcher hands to every exec function. */
struct scsi_ctx {
	const struct scsi_op *op;
	struct tnd_scsi_lu *lu;         /* NULL only for SCSI_OP_NO_LU ops */
	struct tnd_scsi_nexus *nexus;
	struct scsi_itl *itl;           /* NULL when lu is NULL */
	struct tnd_volume_info info;    /* zeroed when lu is NULL */
	/*
	 * Bytes of data-out the command may consume: cmd->data_len when the
	 * PDU said "write", else 0. A data-out command sent without the W bit
	 * must not take the transport's data-in buffer for data: it holds
	 * whatever the buffer pool held before.
	 */
	uint32_t dout_len;
};

/* ---- completing a command (scsi_sense.c) ---- */

/* GOOD status; data already placed with scsi_data_in() if any. */
void scsi_complete(struct tnd_scsi_cmd *cmd);
/* RESERVATION CONFLICT status, no sense data. */
void scsi_reservation_conflict(struct tnd_scsi_cmd *cmd);
/* CHECK CONDITION with @key and @ascq (an SCSI_ASC_* value). */
void scsi_check(struct tnd_scsi_cmd *cmd, uint8_t key, uint16_t asc);
/*
 * ILLEGAL REQUEST with a sense-key-specific field pointer: @asc is
 * INVALID FIELD IN CDB or IN PARAMETER LIST; @byte and @bit locate the
 * offending field (bit < 0: no bit pointer).
 */
void scsi_check_field(struct tnd_scsi_cmd *cmd, uint16_t asc, unsigned byte, int bit);
/* MISCOMPARE with the byte offset of the first difference. */
void scsi_check_miscompare(struct tnd_scsi_cmd *cmd, uint32_t offset);

/* What a command was doing when its volume I/O failed. */
enum scsi_err_ctx {
	SCSI_ERR_READ,
	SCSI_ERR_WRITE,   /* also flush, unmap, write zeroes */
};
/* CHECK CONDITION (or BUSY) for a volume's -errno. */
void scsi_check_errno(struct tnd_scsi_cmd *cmd, int err, enum scsi_err_ctx what);

/* Build fixed sense (18 bytes) for (@key, @asc) into @buf. */
unsigned scsi_build_sense(uint8_t *buf, uint8_t key, uint16_t asc);
/*
 * The sense a volume's -errno makes (as scsi_check_errno() would report
 * it) into @buf; returns its length, 0 for the transient errors that are
 * answered with BUSY and no sense.
 */
unsigned scsi_errno_sense(uint8_t *buf, int err, enum scsi_err_ctx what);
/* Finish @cmd with CHECK CONDITION and the @len bytes of sense in @sense. */
void scsi_check_sense(struct tnd_scsi_cmd *cmd, const uint8_t *sense, unsigned len);

/*
 * Return @len bytes of data-in: copies what fits the transport's buffer
 * and records the command's own transfer length in xfer_len. The caller
 * has already clipped @len to the CDB's allocation length.
 */
void scsi_data_in(struct tnd_scsi_cmd *cmd, const void *buf, uint32_t len);

/* ---- CDB field helpers ---- */

/* Allocation length of a data-in command per its op (0 when none). */
uint32_t scsi_alloc_len(const struct scsi_op *op, const uint8_t *cdb);

/* ---- the LU's live settings ---- */

/* WCE as the caching page reports it now, given the volume's @info. */
bool scsi_lu_wce(const struct tnd_scsi_lu *lu, const struct tnd_volume_info *info);
/* Change WCE (MODE SELECT); raises MODE PARAMETERS CHANGED for others. */
void scsi_lu_set_wce(struct tnd_scsi_lu *lu, struct scsi_itl *self, bool wce);
/* Take the next pending UA of @itl into @key/@asc; false when none. */
bool scsi_itl_take_ua(struct scsi_itl *itl, uint16_t *asc);

/*
 * Whether we offer logical block provisioning management (UNMAP, WRITE
 * SAME with UNMAP): a thin volume that can deallocate. One definition, so
 * the VPD pages, READ CAPACITY(16) and the commands agree.
 */
static inline bool scsi_info_lbp(const struct tnd_volume_info *info)
{
	return info->thin && info->max_unmap_blocks > 0;
}

/*
 * MAXIMUM UNMAP LBA COUNT as advertised and enforced: the volume's limit,
 * capped so that one UNMAP stays a bounded amount of work.
 */
static inline uint32_t scsi_max_unmap_blocks(const struct tnd_volume_info *info)
{
	return info->max_unmap_blocks < SCSI_MAX_UNMAP_BLOCKS ? info->max_unmap_blocks
							       : SCSI_MAX_UNMAP_BLOCKS;
}

/* ALUA state of @lu now. */
static inline unsigned scsi_lu_alua(const struct tnd_scsi_lu *lu)
{
	return atomic_load_explicit(&lu->alua_state, memory_order_acquire);
}

/* Whether a copy target in this ALUA state may be read and written. */
static inline bool scsi_alua_active(unsigned state)
{
	return state == TND_SCSI_ALUA_ACTIVE_OPTIMIZED ||
	       state == TND_SCSI_ALUA_ACTIVE_NON_OPTIMIZED;
}

/* WRITE flags a write to @lu needs so that WCE=0 holds (see sbc). */
unsigned scsi_lu_write_flags(const struct tnd_scsi_lu *lu, const struct tnd_volume_info *info,
			     bool fua);
/* ---- reservations (scsi_pr.c) ---- */

/* What the cached verdict of an I_T_L forbids. */
enum {
	SCSI_PR_BLOCK_WRITES = 1u << 0, /* every op but the allowed ones */
	SCSI_PR_BLOCK_READS = 1u << 1,  /* SCSI_OP_PR_READS ops too */
	SCSI_PR_SPC2_OTHER = 1u << 2,   /* another nexus holds RESERVE(6) */
};

/* A refcounted "this nexus is alive" flag shared with reserving LUs. */
struct scsi_pr_token;
struct scsi_pr_token *scsi_pr_token_new(void);
/* The nexus is gone: mark the token dead and drop the nexus's reference. */
void scsi_pr_token_kill(struct scsi_pr_token *t);

/*
 * Give @lu its reservation state: @twin's (another LU of the same device,
 * shared) or a new one, loading the device's APTPL file if any.
 */
int scsi_pr_create(struct tnd_scsi_lu *lu, const char *state_dir, struct tnd_scsi_lu *twin);
/* Drop @lu's reference; the last LU of the device frees the state. */
void scsi_pr_destroy(struct tnd_scsi_lu *lu);
/* The reservation state's change generation (acquire). */
unsigned scsi_pr_gen(const struct tnd_scsi_lu *lu);
/* LUN reset: drops a RESERVE(6) reservation, keeps persistent ones. */
void scsi_pr_lu_reset(struct tnd_scsi_lu *lu);
/* Bring @itl's verdict and reservation UAs up to date (per command). */
void scsi_pr_observe(struct tnd_scsi_lu *lu, struct tnd_scsi_nexus *nx, struct scsi_itl *itl);
/* True when @cmd conflicts with a reservation: it is then completed
 * with RESERVATION CONFLICT. */
bool scsi_pr_conflict(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
/*
 * Whether a reservation on @lu keeps @nx from reading (@write false) or
 * writing it, as a READ or WRITE from @nx would conflict: for EXTENDED
 * COPY, whose copy targets are other LUs than the one it was sent to.
 */
bool scsi_pr_blocks_copy(struct tnd_scsi_lu *lu, const struct tnd_scsi_nexus *nx, bool write);

void spc_pr_in(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_pr_out(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_reserve(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_release(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);

/* ---- exec functions ---- */

/* scsi_alua.c */
/* True: @op may run in @lu's ALUA state; else @cmd is finished with the
 * sense the state calls for. */
bool alua_check(struct tnd_scsi_cmd *cmd, const struct scsi_op *op, const struct tnd_scsi_lu *lu);
void alua_report_tpgs(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);

/* scsi_xcopy.c */
void xcopy_extended_copy(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void xcopy_receive_copy_results(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
/* The EXTENDED COPY of @cmd may touch @lu (see tnd_scsi_cmd_uses_lu()). */
bool xcopy_uses_lu(const struct scsi_xcopy *x, const struct tnd_scsi_lu *lu);
/* The Third-party Copy VPD page body after @b's 4-byte header; returns
 * the page's whole length. */
unsigned xcopy_vpd_tpc(uint8_t *b, const struct tnd_volume_info *info);

/* scsi_spc.c */
void spc_test_unit_ready(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_inquiry(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_report_luns(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_request_sense(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_mode_sense(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_mode_select(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_report_opcodes(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void spc_report_tmfs(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
/* The data INQUIRY returns for a LUN that does not exist. */
void spc_inquiry_no_lu(struct tnd_scsi_cmd *cmd);

/* scsi_sbc.c */
void sbc_start_stop_unit(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_read_capacity_10(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_read_capacity_16(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_rw(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_verify(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_sync_cache(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_pre_fetch(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_unmap(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_write_same(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_get_lba_status(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
void sbc_compare_and_write(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);
/* Flush the LU's volume, then complete @cmd (GOOD or sense). */
void sbc_flush(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx);

/* Transfer length decoders for the irregular block commands. */
int sbc_xfer_verify(const uint8_t *cdb, uint32_t block_size, enum tnd_scsi_dir *dir,
		    uint32_t *len);
int sbc_xfer_write_same(const uint8_t *cdb, uint32_t block_size, enum tnd_scsi_dir *dir,
			uint32_t *len);
int sbc_xfer_compare_and_write(const uint8_t *cdb, uint32_t block_size, enum tnd_scsi_dir *dir,
			       uint32_t *len);


#endif
