/*
 * scsi.c — the opcode table, CDB checks, unit attentions and dispatch;
 * the LU and nexus objects. See scsi.h for the contract with the transport
 * and scsi_priv.h for how the scsi*.c files divide the work.
 *
 * Every CDB is decoded from one table indexed by opcode. An entry says
 * what the command is called, which function runs it, how long its CDB
 * is, where its transfer length lives (so tnd_scsi_cdb_xfer() and the exec
 * functions agree) and which CDB bits it allows. The allowed-bits mask is
 * the same "CDB usage data" that REPORT SUPPORTED OPERATION CODES returns,
 * so what we advertise and what we enforce cannot drift apart.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "scsi_priv.h"
#include "tnd_reactor.h"

#define FF4 0xff, 0xff, 0xff, 0xff
#define FF8 FF4, FF4

static const struct scsi_op service_action_in_16[32] = {
	[SCSI_SAI_READ_CAPACITY_16] = {
		.name = "READ CAPACITY(16)", .exec = sbc_read_capacity_16, .cdb_len = 16,
		.flags = SCSI_OP_PR_ALLOWED,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 10, .len_size = 4,
		.usage = { 0x9e, 0x10, FF8, FF4, 0x01, 0x00 },
	},
	[SCSI_SAI_GET_LBA_STATUS] = {
		.name = "GET LBA STATUS", .exec = sbc_get_lba_status, .cdb_len = 16,
		.flags = SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 10, .len_size = 4,
		.usage = { 0x9e, 0x12, FF8, FF4, 0x00, 0x00 },
	},
};

static const struct scsi_op maintenance_in[32] = {
	[SCSI_MI_REPORT_TARGET_PORT_GROUPS] = {
		.name = "REPORT TARGET PORT GROUPS", .exec = alua_report_tpgs, .cdb_len = 12,
		/* Multipath must see paths under someone else's reservation. */
		.flags = SCSI_OP_ALUA_ANY | SCSI_OP_PR_ALLOWED | SCSI_OP_SPC2_ALLOWED,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 6, .len_size = 4,
		.usage = { 0xa3, 0xea, 0x00, 0x00, 0x00, 0x00, FF4, 0x00, 0x00 },
	},
	[SCSI_MI_REPORT_SUPPORTED_OPCODES] = {
		.name = "REPORT SUPPORTED OPERATION CODES", .exec = spc_report_opcodes,
		.cdb_len = 12,
		.flags = SCSI_OP_NO_LU | SCSI_OP_ALUA_STANDBY | SCSI_OP_PR_ALLOWED |
			 SCSI_OP_SPC2_ALLOWED,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 6, .len_size = 4,
		.usage = { 0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, FF4, 0x00, 0x00 },
	},
	[SCSI_MI_REPORT_SUPPORTED_TMFS] = {
		.name = "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", .exec = spc_report_tmfs,
		.cdb_len = 12,
		.flags = SCSI_OP_NO_LU | SCSI_OP_ALUA_STANDBY | SCSI_OP_PR_ALLOWED |
			 SCSI_OP_SPC2_ALLOWED,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 6, .len_size = 4,
		.usage = { 0xa3, 0x0d, 0x80, 0x00, 0x00, 0x00, FF4, 0x00, 0x00 },
	},
};

static const struct scsi_op third_party_copy_out[32] = {
	[SCSI_XCOPY_LID1] = {
		/* Not SCSI_OP_WRITES: what it writes is the destination copy
		 * target, whose read-only flag scsi_xcopy.c checks. */
		.name = "EXTENDED COPY(LID1)", .exec = xcopy_extended_copy, .cdb_len = 16,
		.xfer = SCSI_XFER_OUT_PARAM, .len_off = 10, .len_size = 4,
		.usage = { 0x83, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, FF4,
			   0x00, 0x00 },
	},
};

static const struct scsi_op third_party_copy_in[32] = {
	[SCSI_RCR_COPY_STATUS] = {
		.name = "RECEIVE COPY STATUS(LID1)", .exec = xcopy_receive_copy_results,
		.cdb_len = 16,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 10, .len_size = 4,
		.usage = { 0x84, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, FF4,
			   0x00, 0x00 },
	},
	[SCSI_RCR_OPERATING_PARAMETERS] = {
		.name = "RECEIVE COPY OPERATING PARAMETERS", .exec = xcopy_receive_copy_results,
		.cdb_len = 16,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 10, .len_size = 4,
		.usage = { 0x84, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, FF4,
			   0x00, 0x00 },
	},
	[SCSI_RCR_FAILED_SEGMENT_DETAILS] = {
		.name = "RECEIVE COPY FAILURE DETAILS(LID1)", .exec = xcopy_receive_copy_results,
		.cdb_len = 16,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 10, .len_size = 4,
		.usage = { 0x84, 0x04, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, FF4,
			   0x00, 0x00 },
	},
};

#define PRIN(sa_, name_) [sa_] = {						\
		.name = name_, .exec = spc_pr_in, .cdb_len = 10,		\
		.flags = SCSI_OP_PR_ALLOWED | SCSI_OP_ALUA_STANDBY,		\
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 7, .len_size = 2,	\
		.usage = { 0x5e, sa_, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00 }, \
	}

static const struct scsi_op persistent_reserve_in[32] = {
	PRIN(SCSI_PRIN_READ_KEYS, "PERSISTENT RESERVE IN(READ KEYS)"),
	PRIN(SCSI_PRIN_READ_RESERVATION, "PERSISTENT RESERVE IN(READ RESERVATION)"),
	PRIN(SCSI_PRIN_REPORT_CAPABILITIES, "PERSISTENT RESERVE IN(REPORT CAPABILITIES)"),
	PRIN(SCSI_PRIN_READ_FULL_STATUS, "PERSISTENT RESERVE IN(READ FULL STATUS)"),
};

/* SCOPE and TYPE (byte 2) are checked by the service action. */
#define PROUT(sa_, name_) [sa_] = {						\
		.name = name_, .exec = spc_pr_out, .cdb_len = 10,		\
		.flags = SCSI_OP_RES_EXEC | SCSI_OP_ALUA_STANDBY,		\
		.xfer = SCSI_XFER_OUT_PARAM, .len_off = 5, .len_size = 4,	\
		.usage = { 0x5f, sa_, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00 }, \
	}

static const struct scsi_op persistent_reserve_out[32] = {
	PROUT(SCSI_PROUT_REGISTER, "PERSISTENT RESERVE OUT(REGISTER)"),
	PROUT(SCSI_PROUT_RESERVE, "PERSISTENT RESERVE OUT(RESERVE)"),
	PROUT(SCSI_PROUT_RELEASE, "PERSISTENT RESERVE OUT(RELEASE)"),
	PROUT(SCSI_PROUT_CLEAR, "PERSISTENT RESERVE OUT(CLEAR)"),
	PROUT(SCSI_PROUT_PREEMPT, "PERSISTENT RESERVE OUT(PREEMPT)"),
	PROUT(SCSI_PROUT_PREEMPT_AND_ABORT, "PERSISTENT RESERVE OUT(PREEMPT AND ABORT)"),
	PROUT(SCSI_PROUT_REGISTER_AND_IGNORE,
	      "PERSISTENT RESERVE OUT(REGISTER AND IGNORE EXISTING KEY)"),
	PROUT(SCSI_PROUT_REGISTER_AND_MOVE, "PERSISTENT RESERVE OUT(REGISTER AND MOVE)"),
};

static const struct scsi_op ops[256] = {
	[SCSI_TEST_UNIT_READY] = {
		.name = "TEST UNIT READY", .exec = spc_test_unit_ready, .cdb_len = 6,
		.flags = SCSI_OP_PR_ALLOWED,
		.usage = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 },
	},
	[SCSI_REQUEST_SENSE] = {
		.name = "REQUEST SENSE", .exec = spc_request_sense, .cdb_len = 6,
		.flags = SCSI_OP_KEEPS_UA | SCSI_OP_NO_LU | SCSI_OP_ALUA_ANY | SCSI_OP_PR_ALLOWED |
			 SCSI_OP_SPC2_ALLOWED,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 4, .len_size = 1,
		.usage = { 0x03, 0x01, 0x00, 0x00, 0xff, 0x00 },
	},
	[SCSI_READ_6] = {
		.name = "READ(6)", .exec = sbc_rw, .cdb_len = 6,
		.flags = SCSI_OP_ZERO_IS_256 | SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_IN_BLOCKS, .len_off = 4, .len_size = 1,
		.usage = { 0x08, 0x1f, 0xff, 0xff, 0xff, 0x00 },
	},
	[SCSI_WRITE_6] = {
		.name = "WRITE(6)", .exec = sbc_rw, .cdb_len = 6,
		.flags = SCSI_OP_ZERO_IS_256 | SCSI_OP_WRITES,
		.xfer = SCSI_XFER_OUT_BLOCKS, .len_off = 4, .len_size = 1,
		.usage = { 0x0a, 0x1f, 0xff, 0xff, 0xff, 0x00 },
	},
	[SCSI_INQUIRY] = {
		.name = "INQUIRY", .exec = spc_inquiry, .cdb_len = 6,
		.flags = SCSI_OP_KEEPS_UA | SCSI_OP_ALUA_ANY | SCSI_OP_PR_ALLOWED |
			 SCSI_OP_SPC2_ALLOWED,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 3, .len_size = 2,
		.usage = { 0x12, 0x01, 0xff, 0xff, 0xff, 0x00 },
	},
	[SCSI_MODE_SELECT_6] = {
		.name = "MODE SELECT(6)", .exec = spc_mode_select, .cdb_len = 6,
		.flags = SCSI_OP_ALUA_STANDBY,
		.xfer = SCSI_XFER_OUT_PARAM, .len_off = 4, .len_size = 1,
		.usage = { 0x15, 0x11, 0x00, 0x00, 0xff, 0x00 },
	},
	[SCSI_RESERVE_6] = {
		.name = "RESERVE(6)", .exec = spc_reserve, .cdb_len = 6,
		.flags = SCSI_OP_RES_EXEC,
		.usage = { 0x16, 0x00, 0x00, 0x00, 0x00, 0x00 },
	},
	[SCSI_RELEASE_6] = {
		.name = "RELEASE(6)", .exec = spc_release, .cdb_len = 6,
		.flags = SCSI_OP_RES_EXEC,
		.usage = { 0x17, 0x00, 0x00, 0x00, 0x00, 0x00 },
	},
	[SCSI_MODE_SENSE_6] = {
		.name = "MODE SENSE(6)", .exec = spc_mode_sense, .cdb_len = 6,
		.flags = SCSI_OP_ALUA_STANDBY,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 4, .len_size = 1,
		.usage = { 0x1a, 0x08, 0xff, 0xff, 0xff, 0x00 },
	},
	[SCSI_START_STOP_UNIT] = {
		.name = "START STOP UNIT", .exec = sbc_start_stop_unit, .cdb_len = 6,
		.flags = SCSI_OP_PR_START,
		.usage = { 0x1b, 0x01, 0x00, 0x0f, 0xf7, 0x00 },
	},
	[SCSI_READ_CAPACITY_10] = {
		.name = "READ CAPACITY(10)", .exec = sbc_read_capacity_10, .cdb_len = 10,
		.flags = SCSI_OP_PR_ALLOWED,
		.xfer = SCSI_XFER_IN_FIXED, .fixed_len = 8,
		.usage = { 0x25, 0x00, FF4, 0x00, 0x00, 0x01, 0x00 },
	},
	[SCSI_READ_10] = {
		.name = "READ(10)", .exec = sbc_rw, .cdb_len = 10,
		.flags = SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_IN_BLOCKS, .len_off = 7, .len_size = 2,
		.usage = { 0x28, 0x1c, FF4, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_WRITE_10] = {
		.name = "WRITE(10)", .exec = sbc_rw, .cdb_len = 10,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_OUT_BLOCKS, .len_off = 7, .len_size = 2,
		.usage = { 0x2a, 0x18, FF4, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_WRITE_VERIFY_10] = {
		.name = "WRITE AND VERIFY(10)", .exec = sbc_rw, .cdb_len = 10,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_OUT_BLOCKS, .len_off = 7, .len_size = 2,
		.usage = { 0x2e, 0x12, FF4, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_VERIFY_10] = {
		.name = "VERIFY(10)", .exec = sbc_verify, .cdb_len = 10,
		.flags = SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_CUSTOM, .xfer_fn = sbc_xfer_verify,
		.usage = { 0x2f, 0x16, FF4, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_PRE_FETCH_10] = {
		.name = "PRE-FETCH(10)", .exec = sbc_pre_fetch, .cdb_len = 10,
		.flags = SCSI_OP_PR_READS,
		.usage = { 0x34, 0x02, FF4, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_SYNCHRONIZE_CACHE_10] = {
		.name = "SYNCHRONIZE CACHE(10)", .exec = sbc_sync_cache, .cdb_len = 10,
		.usage = { 0x35, 0x06, FF4, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_WRITE_SAME_10] = {
		.name = "WRITE SAME(10)", .exec = sbc_write_same, .cdb_len = 10,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_CUSTOM, .xfer_fn = sbc_xfer_write_same,
		.usage = { 0x41, 0x18, FF4, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_UNMAP] = {
		.name = "UNMAP", .exec = sbc_unmap, .cdb_len = 10,
		.flags = SCSI_OP_WRITES | SCSI_OP_LBP,
		.xfer = SCSI_XFER_OUT_PARAM, .len_off = 7, .len_size = 2,
		.usage = { 0x42, 0x01, 0x00, 0x00, 0x00, 0x00, 0x1f, 0xff, 0xff, 0x00 },
	},
	[SCSI_MODE_SELECT_10] = {
		.name = "MODE SELECT(10)", .exec = spc_mode_select, .cdb_len = 10,
		.flags = SCSI_OP_ALUA_STANDBY,
		.xfer = SCSI_XFER_OUT_PARAM, .len_off = 7, .len_size = 2,
		.usage = { 0x55, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00 },
	},
	[SCSI_RESERVE_10] = {
		.name = "RESERVE(10)", .exec = spc_reserve, .cdb_len = 10,
		.flags = SCSI_OP_RES_EXEC,
		.usage = { 0x56, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 },
	},
	[SCSI_RELEASE_10] = {
		.name = "RELEASE(10)", .exec = spc_release, .cdb_len = 10,
		.flags = SCSI_OP_RES_EXEC,
		.usage = { 0x57, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 },
	},
	[SCSI_MODE_SENSE_10] = {
		.name = "MODE SENSE(10)", .exec = spc_mode_sense, .cdb_len = 10,
		.flags = SCSI_OP_ALUA_STANDBY,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 7, .len_size = 2,
		.usage = { 0x5a, 0x18, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00 },
	},
	[SCSI_PERSISTENT_RESERVE_IN] = {
		.name = "PERSISTENT RESERVE IN", .cdb_len = 10, .sa = persistent_reserve_in,
	},
	[SCSI_PERSISTENT_RESERVE_OUT] = {
		.name = "PERSISTENT RESERVE OUT", .cdb_len = 10, .sa = persistent_reserve_out,
	},
	[SCSI_READ_16] = {
		.name = "READ(16)", .exec = sbc_rw, .cdb_len = 16,
		.flags = SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_IN_BLOCKS, .len_off = 10, .len_size = 4,
		.usage = { 0x88, 0x1c, FF8, FF4, 0x1f, 0x00 },
	},
	[SCSI_COMPARE_AND_WRITE] = {
		.name = "COMPARE AND WRITE", .exec = sbc_compare_and_write, .cdb_len = 16,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_CUSTOM, .xfer_fn = sbc_xfer_compare_and_write,
		.usage = { 0x89, 0x18, FF8, 0x00, 0x00, 0x00, 0xff, 0x1f, 0x00 },
	},
	[SCSI_WRITE_16] = {
		.name = "WRITE(16)", .exec = sbc_rw, .cdb_len = 16,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_OUT_BLOCKS, .len_off = 10, .len_size = 4,
		.usage = { 0x8a, 0x18, FF8, FF4, 0x1f, 0x00 },
	},
	[SCSI_WRITE_VERIFY_16] = {
		.name = "WRITE AND VERIFY(16)", .exec = sbc_rw, .cdb_len = 16,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_OUT_BLOCKS, .len_off = 10, .len_size = 4,
		.usage = { 0x8e, 0x12, FF8, FF4, 0x1f, 0x00 },
	},
	[SCSI_VERIFY_16] = {
		.name = "VERIFY(16)", .exec = sbc_verify, .cdb_len = 16,
		.flags = SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_CUSTOM, .xfer_fn = sbc_xfer_verify,
		.usage = { 0x8f, 0x16, FF8, FF4, 0x1f, 0x00 },
	},
	[SCSI_PRE_FETCH_16] = {
		.name = "PRE-FETCH(16)", .exec = sbc_pre_fetch, .cdb_len = 16,
		.flags = SCSI_OP_PR_READS,
		.usage = { 0x90, 0x02, FF8, FF4, 0x1f, 0x00 },
	},
	[SCSI_SYNCHRONIZE_CACHE_16] = {
		.name = "SYNCHRONIZE CACHE(16)", .exec = sbc_sync_cache, .cdb_len = 16,
		.usage = { 0x91, 0x06, FF8, FF4, 0x1f, 0x00 },
	},
	[SCSI_WRITE_SAME_16] = {
		.name = "WRITE SAME(16)", .exec = sbc_write_same, .cdb_len = 16,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_CUSTOM, .xfer_fn = sbc_xfer_write_same,
		.usage = { 0x93, 0x19, FF8, FF4, 0x1f, 0x00 },
	},
	[SCSI_EXTENDED_COPY] = {
		.name = "THIRD-PARTY COPY OUT", .cdb_len = 16, .sa = third_party_copy_out,
	},
	[SCSI_RECEIVE_COPY_RESULTS] = {
		.name = "THIRD-PARTY COPY IN", .cdb_len = 16, .sa = third_party_copy_in,
	},
	[SCSI_SERVICE_ACTION_IN_16] = {
		.name = "SERVICE ACTION IN(16)", .cdb_len = 16, .sa = service_action_in_16,
	},
	[SCSI_REPORT_LUNS] = {
		.name = "REPORT LUNS", .exec = spc_report_luns, .cdb_len = 12,
		.flags = SCSI_OP_KEEPS_UA | SCSI_OP_NO_LU | SCSI_OP_ALUA_ANY | SCSI_OP_PR_ALLOWED |
			 SCSI_OP_SPC2_ALLOWED,
		.xfer = SCSI_XFER_IN_ALLOC, .len_off = 6, .len_size = 4,
		.usage = { 0xa0, 0x00, 0xff, 0x00, 0x00, 0x00, FF4, 0x00, 0x00 },
	},
	[SCSI_MAINTENANCE_IN] = {
		.name = "MAINTENANCE IN", .cdb_len = 12, .sa = maintenance_in,
	},
	[SCSI_READ_12] = {
		.name = "READ(12)", .exec = sbc_rw, .cdb_len = 12,
		.flags = SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_IN_BLOCKS, .len_off = 6, .len_size = 4,
		.usage = { 0xa8, 0x1c, FF4, FF4, 0x1f, 0x00 },
	},
	[SCSI_WRITE_12] = {
		.name = "WRITE(12)", .exec = sbc_rw, .cdb_len = 12,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_OUT_BLOCKS, .len_off = 6, .len_size = 4,
		.usage = { 0xaa, 0x18, FF4, FF4, 0x1f, 0x00 },
	},
	[SCSI_WRITE_VERIFY_12] = {
		.name = "WRITE AND VERIFY(12)", .exec = sbc_rw, .cdb_len = 12,
		.flags = SCSI_OP_WRITES,
		.xfer = SCSI_XFER_OUT_BLOCKS, .len_off = 6, .len_size = 4,
		.usage = { 0xae, 0x12, FF4, FF4, 0x1f, 0x00 },
	},
	[SCSI_VERIFY_12] = {
		.name = "VERIFY(12)", .exec = sbc_verify, .cdb_len = 12,
		.flags = SCSI_OP_PR_READS,
		.xfer = SCSI_XFER_CUSTOM, .xfer_fn = sbc_xfer_verify,
		.usage = { 0xaf, 0x16, FF4, FF4, 0x1f, 0x00 },
	},
};

const struct scsi_op *scsi_op_lookup(const uint8_t *cdb)
{
	const struct scsi_op *op = &ops[cdb[0]];
	if (op->sa)
		op = &op->sa[cdb[1] & 0x1f];
	return op->exec ? op : NULL;
}

bool scsi_opcode_has_sa(uint8_t opcode)
{
	return ops[opcode].sa != NULL;
}

/* Walk the table in opcode, then service action order. */
const struct scsi_op *scsi_op_next(const struct scsi_op *prev)
{
	unsigned opc = 0, sa = 0;
	if (prev) {
		opc = prev->usage[0];
		if (ops[opc].sa)
			sa = (unsigned)(prev - ops[opc].sa) + 1;
		else
			opc++;
	}
	for (; opc < TND_ARRAY_SIZE(ops); opc++, sa = 0) {
		if (ops[opc].sa) {
			for (; sa < 32; sa++)
				if (ops[opc].sa[sa].exec)
					return &ops[opc].sa[sa];
		} else if (ops[opc].exec) {
			return &ops[opc];
		}
	}
	return NULL;
}

static uint32_t get_be(const uint8_t *p, unsigned size)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v = v << 8 | p[i];
	return v;
}

uint32_t scsi_alloc_len(const struct scsi_op *op, const uint8_t *cdb)
{
	if (op->xfer != SCSI_XFER_IN_ALLOC)
		return 0;
	return get_be(cdb + op->len_off, op->len_size);
}

/* Decode dir and byte length from @op's table entry. */
static int op_xfer(const struct scsi_op *op, const uint8_t *cdb, uint32_t bs,
		   enum tnd_scsi_dir *dir, uint32_t *len)
{
	uint64_t n;
	switch (op->xfer) {
	case SCSI_XFER_NONE:
		*dir = TND_SCSI_DIR_NONE;
		*len = 0;
		return 0;
	case SCSI_XFER_IN_ALLOC:
	case SCSI_XFER_OUT_PARAM:
		n = get_be(cdb + op->len_off, op->len_size);
		*dir = op->xfer == SCSI_XFER_IN_ALLOC ? TND_SCSI_DIR_READ : TND_SCSI_DIR_WRITE;
		break;
	case SCSI_XFER_IN_FIXED:
		n = op->fixed_len;
		*dir = TND_SCSI_DIR_READ;
		break;
	case SCSI_XFER_IN_BLOCKS:
	case SCSI_XFER_OUT_BLOCKS:
		n = get_be(cdb + op->len_off, op->len_size);
		if (n == 0 && (op->flags & SCSI_OP_ZERO_IS_256))
			n = 256;
		n *= bs;
		*dir = op->xfer == SCSI_XFER_IN_BLOCKS ? TND_SCSI_DIR_READ : TND_SCSI_DIR_WRITE;
		break;
	case SCSI_XFER_CUSTOM:
		return op->xfer_fn(cdb, bs, dir, len);
	default:
		return -EINVAL;
	}
	if (n > UINT32_MAX)
		return -EINVAL;
	*len = (uint32_t)n;
	if (n == 0)
		*dir = TND_SCSI_DIR_NONE;
	return 0;
}

int tnd_scsi_cdb_xfer(const struct tnd_scsi_lu *lu, const uint8_t *cdb, uint8_t cdb_len,
		      enum tnd_scsi_dir *dir, uint32_t *len)
{
	if (cdb_len < 6)
		return -EINVAL;
	const struct scsi_op *op = scsi_op_lookup(cdb);
	if (!op || cdb_len < op->cdb_len)
		return -EINVAL;
	uint32_t bs = 512;
	if (lu) {
		struct tnd_volume_info info;
		tnd_volume_info(lu->vol, &info);
		bs = info.block_size;
	}
	return op_xfer(op, cdb, bs, dir, len);
}

/* ---- unit attentions ---- */

static const uint16_t ua_asc[] = {
	SCSI_ASC_POWER_ON_RESET,
	SCSI_ASC_LUN_RESET_OCCURRED,
	SCSI_ASC_MODE_PARAMETERS_CHANGED,
	SCSI_ASC_CAPACITY_CHANGED,
	SCSI_ASC_ALUA_STATE_CHANGED,
	SCSI_ASC_RESERVATIONS_PREEMPTED,
	SCSI_ASC_RESERVATIONS_RELEASED,
	SCSI_ASC_REGISTRATIONS_PREEMPTED,
};

bool scsi_itl_take_ua(struct scsi_itl *itl, uint16_t *asc)
{
	if (!itl || !itl->ua)
		return false;
	unsigned bit = (unsigned)__builtin_ctz(itl->ua);
	*asc = ua_asc[bit];
	itl->ua &= ~(1u << bit);
	/* A power-on report covers a reset that happened since. */
	if (bit == 0)
		itl->ua &= ~SCSI_UA_LUN_RESET;
	return true;
}

/* Fold what changed on the LU since this nexus last looked into its UAs. */
static void itl_observe(struct scsi_itl *itl, const struct tnd_scsi_lu *lu,
			const struct tnd_volume_info *info)
{
	unsigned g = atomic_load_explicit(&lu->reset_gen, memory_order_acquire);
	if (g != itl->seen_reset_gen) {
		itl->seen_reset_gen = g;
		itl->ua |= SCSI_UA_LUN_RESET;
	}
	g = atomic_load_explicit(&lu->mode_gen, memory_order_acquire);
	if (g != itl->seen_mode_gen) {
		itl->seen_mode_gen = g;
		itl->ua |= SCSI_UA_MODE_CHANGED;
	}
	g = atomic_load_explicit(&lu->alua_gen, memory_order_acquire);
	if (g != itl->seen_alua_gen) {
		itl->seen_alua_gen = g;
		itl->ua |= SCSI_UA_ALUA_CHANGED;
	}
	if (info->num_blocks != itl->seen_blocks) {
		itl->seen_blocks = info->num_blocks;
		itl->ua |= SCSI_UA_CAPACITY;
	}
}

/* Find or make this nexus's state for @lu; NULL on allocation failure. */
static struct scsi_itl *nexus_itl(struct tnd_scsi_nexus *nx, const struct tnd_scsi_lu *lu,
				  const struct tnd_volume_info *info)
{
	for (unsigned i = 0; i < nx->nr_itl; i++) {
		struct scsi_itl *itl = &nx->itl[i];
		if (itl->lu == lu) {
			if (itl->lu_epoch == lu->epoch)
				return itl;
			/* A different LU now lives at this address. */
			itl->lu = NULL;
		}
	}
	struct scsi_itl *slot = NULL;
	for (unsigned i = 0; i < nx->nr_itl; i++)
		if (!nx->itl[i].lu) {
			slot = &nx->itl[i];
			break;
		}
	if (!slot) {
		if (nx->nr_itl == nx->cap_itl) {
			unsigned cap = nx->cap_itl ? nx->cap_itl * 2 : 4;
			struct scsi_itl *a = realloc(nx->itl, cap * sizeof(*a));
			if (!a)
				return NULL;
			nx->itl = a;
			nx->cap_itl = cap;
		}
		slot = &nx->itl[nx->nr_itl++];
	}
	*slot = (struct scsi_itl){
		.lu = lu,
		.lu_epoch = lu->epoch,
		.seen_reset_gen = atomic_load(&lu->reset_gen),
		.seen_mode_gen = atomic_load(&lu->mode_gen),
		.seen_alua_gen = atomic_load(&lu->alua_gen),
		.seen_blocks = info->num_blocks,
		.ua = SCSI_UA_POWER_ON,
		/* Not the current value: the first command works the
		 * reservation verdict out. */
		.seen_pr_gen = scsi_pr_gen(lu) - 1,
	};
	return slot;
}

/* ---- LU live settings ---- */

bool scsi_lu_wce(const struct tnd_scsi_lu *lu, const struct tnd_volume_info *info)
{
	return info->write_cache && atomic_load_explicit(&lu->wce, memory_order_acquire);
}

unsigned scsi_lu_write_flags(const struct tnd_scsi_lu *lu, const struct tnd_volume_info *info,
			     bool fua)
{
	if (fua || (info->write_cache && !scsi_lu_wce(lu, info)))
		return TND_IO_FUA;
	return 0;
}

void scsi_lu_set_wce(struct tnd_scsi_lu *lu, struct scsi_itl *self, bool wce)
{
	if (atomic_exchange(&lu->wce, wce) == wce)
		return;
	unsigned old = atomic_fetch_add_explicit(&lu->mode_gen, 1, memory_order_acq_rel);
	/* We made the change: only the other nexuses need telling. If someone
	 * else changed the parameters since we last looked, keep that news. */
	if (self && self->seen_mode_gen == old)
		self->seen_mode_gen = old + 1;
}

/* ---- the COMPARE AND WRITE lock ---- */

/* Marks the lock held; never dereferenced. */
#define SCSI_CAW_HELD ((struct scsi_caw_waiter *)(uintptr_t)1)

bool scsi_caw_acquire(struct tnd_scsi_lu *lu, struct scsi_caw_waiter *w)
{
	struct scsi_caw_waiter *old = atomic_load_explicit(&lu->caw_head, memory_order_relaxed);
	for (;;) {
		struct scsi_caw_waiter *new = old ? w : SCSI_CAW_HELD;
		w->next = old;
		if (atomic_compare_exchange_weak_explicit(&lu->caw_head, &old, new,
							  memory_order_acq_rel,
							  memory_order_relaxed))
			return old == NULL;
	}
}

static void caw_granted_msg(struct tnd_msg *msg)
{
	struct scsi_caw_waiter *w = tnd_container_of(msg, struct scsi_caw_waiter, msg);
	w->granted(w);
}

static void caw_hand_to(struct scsi_caw_waiter *w)
{
	/* Always by message, even to our own reactor: the waiter resumes
	 * from its reactor's loop, never inside the releaser's stack. */
	w->msg.fn = caw_granted_msg;
	tnd_reactor_send(w->reactor, &w->msg);
}

void scsi_caw_release(struct tnd_scsi_lu *lu)
{
	struct scsi_caw_waiter *w = lu->caw_queue;
	if (w) {
		lu->caw_queue = w->next;
		caw_hand_to(w);
		return;
	}
	struct scsi_caw_waiter *old = atomic_load_explicit(&lu->caw_head, memory_order_acquire);
	for (;;) {
		/* No waiters: free it. Waiters: keep it held, take them all. */
		struct scsi_caw_waiter *new = old == SCSI_CAW_HELD ? NULL : SCSI_CAW_HELD;
		if (atomic_compare_exchange_weak_explicit(&lu->caw_head, &old, new,
							  memory_order_acq_rel,
							  memory_order_acquire))
			break;
	}
	if (old == SCSI_CAW_HELD)
		return;
	/* The stack is newest first and ends in SCSI_CAW_HELD: reverse it so
	 * waiters are served in the order they came. */
	struct scsi_caw_waiter *fifo = NULL;
	while (old != SCSI_CAW_HELD) {
		struct scsi_caw_waiter *next = old->next;
		old->next = fifo;
		fifo = old;
		old = next;
	}
	lu->caw_queue = fifo->next;
	caw_hand_to(fifo);
}

/* ---- dispatch ---- */

/* Reserved bits set in the CDB: INVALID FIELD IN CDB pointing at them. */
static bool cdb_reserved_ok(struct tnd_scsi_cmd *cmd, const struct scsi_op *op)
{
	for (unsigned i = 1; i < op->cdb_len; i++) {
		uint8_t allowed = op->usage[i];
		/* Byte 1 of a service-action CDB: the action (already looked
		 * up) plus whatever bits 7-5 the action itself allows. */
		if (i == 1 && ops[op->usage[0]].sa)
			allowed = 0x1f | (op->usage[1] & 0xe0);
		uint8_t bad = cmd->cdb[i] & (uint8_t)~allowed;
		if (bad) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, i,
					 31 - __builtin_clz(bad));
			return false;
		}
	}
	return true;
}

/*
 * No logical unit at this LUN for this nexus. INQUIRY answers with
 * peripheral qualifier 011b, the LU-independent commands (REPORT LUNS,
 * REQUEST SENSE, the REPORT SUPPORTED ones) run as usual, anything else
 * is LOGICAL UNIT NOT SUPPORTED.
 */
static void exec_no_lu(struct tnd_scsi_cmd *cmd, const struct scsi_op *op)
{
	bool inquiry = op && cmd->cdb[0] == SCSI_INQUIRY;
	if (!op || !(inquiry || (op->flags & SCSI_OP_NO_LU))) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_LUN_NOT_SUPPORTED);
		return;
	}
	if (!cdb_reserved_ok(cmd, op))
		return;
	if (inquiry) {
		spc_inquiry_no_lu(cmd);
		return;
	}
	struct scsi_ctx ctx = { .op = op, .nexus = cmd->nexus };
	op->exec(cmd, &ctx);
}

void tnd_scsi_exec(struct tnd_scsi_cmd *cmd)
{
	cmd->status = TND_SAM_GOOD;
	cmd->sense_len = 0;
	cmd->in_len = 0;
	cmd->xfer_len = 0;
	cmd->io = NULL;
	cmd->bounce = NULL;
	cmd->stage = 0;
	cmd->xcopy = NULL;

	const struct scsi_op *op = NULL;
	if (cmd->cdb_len >= 6) {
		op = scsi_op_lookup(cmd->cdb);
		if (op && cmd->cdb_len < op->cdb_len)
			op = NULL;
	}

	if (!cmd->lu) {
		exec_no_lu(cmd, op);
		return;
	}

	struct scsi_ctx ctx = { .op = op, .lu = cmd->lu, .nexus = cmd->nexus };
	if (cmd->dir == TND_SCSI_DIR_WRITE && cmd->data)
		ctx.dout_len = cmd->data_len;
	tnd_volume_info(cmd->lu->vol, &ctx.info);
	ctx.itl = nexus_itl(cmd->nexus, cmd->lu, &ctx.info);
	if (!ctx.itl) {
		cmd->status = TND_SAM_BUSY;
		cmd->done(cmd);
		return;
	}
	itl_observe(ctx.itl, cmd->lu, &ctx.info);
	scsi_pr_observe(cmd->lu, cmd->nexus, ctx.itl);

	/* A pending unit attention is the answer to anything but the three
	 * commands an initiator uses to find out what is there. */
	bool keeps_ua = op && (op->flags & SCSI_OP_KEEPS_UA);
	uint16_t ua;
	if (!keeps_ua && scsi_itl_take_ua(ctx.itl, &ua)) {
		scsi_check(cmd, SCSI_KEY_UNIT_ATTENTION, ua);
		return;
	}

	if (op && (op->flags & SCSI_OP_LBP) && !scsi_info_lbp(&ctx.info))
		op = NULL;
	if (!op) {
		if (cmd->cdb_len >= 2 && ops[cmd->cdb[0]].sa)
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 1, 4);
		else
			scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_INVALID_OPCODE);
		return;
	}
	if (!cdb_reserved_ok(cmd, op))
		return;
	if (!alua_check(cmd, op, cmd->lu))
		return;
	if (scsi_pr_conflict(cmd, &ctx))
		return;
	if ((op->flags & SCSI_OP_WRITES) && ctx.info.read_only) {
		scsi_check(cmd, SCSI_KEY_DATA_PROTECT, SCSI_ASC_WRITE_PROTECTED);
		return;
	}
	op->exec(cmd, &ctx);
}

/* ---- LU ---- */

/* Copy @src into a space-padded field of @n bytes (+ NUL for printing). */
static void pad_copy(char *dst, size_t n, const char *src)
{
	size_t l = strnlen(src, n);
	memcpy(dst, src, l);
	memset(dst + l, ' ', n - l);
	dst[n] = '\0';
}

/*
 * The identity is a pure function of the device name, so both nodes of an
 * HA pair and every restart present the same disk to multipath.
 */
static void lu_make_identity(struct tnd_scsi_lu *lu, const char *name)
{
	XXH128_hash_t h = XXH3_128bits(name, strlen(name));
	/* NAA 6 (IEEE Registered Extended): 4-bit NAA, 24-bit company id,
	 * 36-bit vendor specific id, 64-bit extension. The company id is a
	 * made-up locally-administered-looking value; the rest is the hash. */
	static const uint32_t company_id = 0x0a7e5d;
	uint8_t *n = lu->naa;
	n[0] = (uint8_t)(0x60 | (company_id >> 20));
	n[1] = (uint8_t)(company_id >> 12);
	n[2] = (uint8_t)(company_id >> 4);
	n[3] = (uint8_t)((company_id & 0xf) << 4 | ((h.high64 >> 32) & 0xf));
	tnd_put_be32(n + 4, (uint32_t)h.high64);
	tnd_put_be64(n + 8, h.low64);
	/* The unit serial is what udev shows as ID_SERIAL_SHORT: keep it
	 * short, hex, and tied to the same hash as the NAA designator. */
	snprintf(lu->serial, sizeof(lu->serial), "%016llx",
		 (unsigned long long)h.low64);
}

int tnd_scsi_lu_create(const struct tnd_scsi_lu_desc *desc, struct tnd_scsi_lu **out)
{
	if (!desc || !desc->name || !desc->name[0] || !desc->vol)
		return -EINVAL;
	if (strlen(desc->name) >= sizeof(((struct tnd_scsi_lu *)0)->name))
		return -ENAMETOOLONG;
	struct tnd_volume_info info;
	tnd_volume_info(desc->vol, &info);
	if (info.block_size < 512 || (info.block_size & (info.block_size - 1)) ||
	    info.block_size > TND_SCSI_MAX_XFER_BYTES)
		return -EINVAL;

	struct tnd_scsi_lu *lu = calloc(1, sizeof(*lu));
	if (!lu)
		return -ENOMEM;
	lu->vol = desc->vol;
	lu->epoch = tnd_now_ns();
	strcpy(lu->name, desc->name);
	pad_copy(lu->vendor, 8, desc->vendor ? desc->vendor : "TANDEM");
	if (desc->product) {
		pad_copy(lu->product, 16, desc->product);
	} else {
		char p[32];
		snprintf(p, sizeof(p), "tandem %s", desc->vol->ops->type ? desc->vol->ops->type : "");
		pad_copy(lu->product, 16, p);
	}
	static const char rev[4] = TND_REVISION_DIGITS;
	memcpy(lu->revision, rev, sizeof(rev));
	lu_make_identity(lu, desc->name);
	atomic_init(&lu->reset_gen, 0);
	atomic_init(&lu->mode_gen, 0);
	atomic_init(&lu->wce, true);
	atomic_init(&lu->caw_head, NULL);
	atomic_init(&lu->alua_state, TND_SCSI_ALUA_ACTIVE_OPTIMIZED);
	atomic_init(&lu->alua_gen, 0);
	int ret = scsi_pr_create(lu, desc->state_dir, desc->share_with);
	if (ret < 0) {
		free(lu);
		return ret;
	}
	*out = lu;
	return 0;
}

const char *tnd_scsi_lu_name(const struct tnd_scsi_lu *lu)
{
	return lu->name;
}

void tnd_scsi_lu_destroy(struct tnd_scsi_lu *lu)
{
	if (!lu)
		return;
	scsi_pr_destroy(lu);
	free(lu);
}

void tnd_scsi_lu_reset(struct tnd_scsi_lu *lu)
{
	scsi_pr_lu_reset(lu);
	atomic_fetch_add_explicit(&lu->reset_gen, 1, memory_order_acq_rel);
}

int tnd_scsi_lu_set_alua_state(struct tnd_scsi_lu *lu, enum tnd_scsi_alua_state state)
{
	switch (state) {
	case TND_SCSI_ALUA_ACTIVE_OPTIMIZED:
	case TND_SCSI_ALUA_ACTIVE_NON_OPTIMIZED:
	case TND_SCSI_ALUA_STANDBY:
	case TND_SCSI_ALUA_UNAVAILABLE:
	case TND_SCSI_ALUA_TRANSITIONING:
		break;
	default:
		return -EINVAL;
	}
	if (atomic_exchange_explicit(&lu->alua_state, state, memory_order_acq_rel) != state)
		atomic_fetch_add_explicit(&lu->alua_gen, 1, memory_order_acq_rel);
	return 0;
}

enum tnd_scsi_alua_state tnd_scsi_lu_alua_state(const struct tnd_scsi_lu *lu)
{
	return (enum tnd_scsi_alua_state)scsi_lu_alua(lu);
}

bool tnd_scsi_cmd_uses_lu(const struct tnd_scsi_cmd *cmd, const struct tnd_scsi_lu *lu)
{
	return cmd->lu == lu || (cmd->xcopy && xcopy_uses_lu(cmd->xcopy, lu));
}

/* ---- nexus ---- */

int tnd_scsi_nexus_create(const char *initiator, const struct tnd_scsi_port *port,
			  struct tnd_scsi_nexus **out)
{
	struct tnd_scsi_nexus *nx = calloc(1, sizeof(*nx));
	if (!nx)
		return -ENOMEM;
	nx->initiator = strdup(initiator ? initiator : "");
	if (!nx->initiator)
		goto err_free_nexus;
	nx->target_name = strdup(port && port->target_name ? port->target_name : "");
	if (!nx->target_name)
		goto err_free_initiator;
	nx->tpgt = port ? port->tpgt : 1;
	nx->rel_port_id = port && port->rel_port_id ? port->rel_port_id : 1;
	nx->port_group = port && port->port_group ? port->port_group : 1;
	nx->pr_token = scsi_pr_token_new();
	if (!nx->pr_token)
		goto err_free_target_name;
	*out = nx;
	return 0;

err_free_target_name:
	free(nx->target_name);
err_free_initiator:
	free(nx->initiator);
err_free_nexus:
	free(nx);
	return -ENOMEM;
}

void tnd_scsi_nexus_destroy(struct tnd_scsi_nexus *nx)
{
	if (!nx)
		return;
	/* Releases any RESERVE(6) it holds, whichever LU that is on. */
	scsi_pr_token_kill(nx->pr_token);
	free(nx->itl);
	free(nx->target_name);
	free(nx->initiator);
	free(nx);
}
