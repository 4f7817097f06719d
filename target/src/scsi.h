/*
 * scsi.h — the SCSI layer of the target (SPC-4, SBC-3), internal to target/.
 *
 * The iSCSI transport (iscsi_*.c) turns PDUs into struct tnd_scsi_cmd and
 * hands them to tnd_scsi_exec(); this layer decodes the CDB in one place,
 * checks it, builds sense data in one place, and executes the few things
 * a backing store does (read, write, flush, unmap) as struct tnd_io on the
 * logical unit's volume. It knows nothing of PDUs, sockets or sessions.
 *
 * Objects:
 * - struct tnd_scsi_lu: one logical unit = one device's volume plus its SCSI
 *   identity (vendor/product, serial, NAA designator derived from the
 *   device name) and the state every I_T nexus shares (reset generation for
 *   unit attentions, mode page state, the ALUA state on this node). Created by the daemon/target at
 *   configuration time, shared by sessions on every reactor: the fields
 *   touched on the I/O path are atomics, nothing takes a lock per command.
 *   Its reservation state (persistent reservations, RESERVE(6), APTPL
 *   file) belongs to the device and is shared by the LUs of one device
 *   (scsi_pr.c; desc->share_with).
 * - struct tnd_scsi_nexus: one I_T nexus (an iSCSI session), owned by that
 *   session and used only on its reactor. Holds pending unit attentions
 *   (power on at creation; reset or parameter change observed through the
 *   LU's generation counters), the sense data kept for REQUEST SENSE and
 *   the results of its EXTENDED COPY commands. Destroying it is I_T nexus
 *   loss: a RESERVE(6) it holds is released.
 *
 * Buffers: the transport allocates cmd->data. For a write it holds the
 * data-out received (data_len bytes); for a read it is a buffer of data_len
 * bytes (the Expected Data Transfer Length, capped by the transport) that
 * this layer fills, setting in_len. If a command would return more than
 * data_len bytes, only data_len bytes are returned and xfer_len says how much
 * the command wanted, so the transport computes the residual from exp_len and
 * xfer_len (RFC 7143 11.4.5.1). Data-out is taken only when cmd->dir is
 * TND_SCSI_DIR_WRITE: a write CDB in a PDU without the W bit moves no data.
 * A write whose data-out is shorter than its CDB says stores the whole
 * blocks received (GOOD, residual overflow), as initiators expect.
 *
 * The SCSI layer's internals (opcode table, unit attentions, the COMPARE
 * AND WRITE lock) are described in scsi_priv.h.
 *
 * Completion: tnd_scsi_exec() always completes the command by calling
 * cmd->done(cmd) exactly once, on cmd->reactor's thread, possibly before it
 * returns (for commands answered without I/O).
 */
#ifndef TND_TARGET_SCSI_H
#define TND_TARGET_SCSI_H

#include <stdbool.h>
#include <stdint.h>

#include "tnd_volume.h"

struct tnd_reactor;
struct tnd_scsi_lu;
struct tnd_scsi_nexus;
struct tnd_scsi_cmd;
struct scsi_xcopy;

/* SAM status codes. */
enum {
	TND_SAM_GOOD = 0x00,
	TND_SAM_CHECK_CONDITION = 0x02,
	TND_SAM_CONDITION_MET = 0x04,
	TND_SAM_BUSY = 0x08,
	TND_SAM_RESERVATION_CONFLICT = 0x18,
	TND_SAM_TASK_SET_FULL = 0x28,
	TND_SAM_TASK_ABORTED = 0x40,
};

enum tnd_scsi_dir {
	TND_SCSI_DIR_NONE,
	TND_SCSI_DIR_READ,   /* data-in: target to initiator */
	TND_SCSI_DIR_WRITE,  /* data-out: initiator to target */
};

/* Largest data transfer one command may ask for (also the Block Limits
 * VPD MAXIMUM TRANSFER LENGTH). The transport caps cmd->data at this. */
#define TND_SCSI_MAX_XFER_BYTES (8u << 20)

#define TND_SCSI_SENSE_MAX 96

typedef void (*tnd_scsi_done_cb)(struct tnd_scsi_cmd *cmd);

struct tnd_scsi_cmd {
	/* ---- set by the transport ---- */
	uint8_t cdb[16];
	uint8_t cdb_len;
	uint64_t lun;                   /* LUN number as decoded from the PDU */
	struct tnd_scsi_lu *lu;         /* NULL: no such LUN for this nexus */
	struct tnd_scsi_nexus *nexus;
	struct tnd_reactor *reactor;
	enum tnd_scsi_dir dir;          /* from the PDU's R/W bits */
	uint32_t exp_len;               /* Expected Data Transfer Length */
	uint8_t *data;                  /* see "Buffers" above */
	uint32_t data_len;
	/* LUNs this nexus may see, for REPORT LUNS (sorted ascending). */
	const uint64_t *luns;
	unsigned nr_luns;
	/*
	 * The logical units behind luns[] (same order and count), or NULL.
	 * EXTENDED COPY resolves its copy targets' designators among these
	 * and cmd->lu only: a copy never reaches an LU outside the nexus's
	 * view (the XCOPY ACL bypass, CVE-2020-28374). Read only within
	 * tnd_scsi_exec(); the transport must keep every LU a command uses
	 * (tnd_scsi_cmd_uses_lu()) alive until done().
	 */
	struct tnd_scsi_lu *const *view_lus;
	tnd_scsi_done_cb done;
	/*
	 * Optional: true once the transport no longer wants the answer (task
	 * aborted, session going away). Long commands (EXTENDED COPY) poll it
	 * between steps and stop early; the answer is then dropped anyway.
	 */
	bool (*cancelled)(const struct tnd_scsi_cmd *cmd);
	void *priv;                     /* the transport's; untouched here */

	/* ---- set by the SCSI layer before done() ---- */
	uint8_t status;                 /* TND_SAM_* */
	uint8_t sense_len;
	uint8_t sense[TND_SCSI_SENSE_MAX]; /* fixed format sense data */
	uint32_t in_len;                /* bytes of data-in produced, <= data_len */
	uint32_t xfer_len;              /* bytes the command itself transfers */

	/* ---- private to the SCSI layer ---- */
	struct tnd_io *io;
	void *bounce;
	uint32_t stage;
	struct scsi_xcopy *xcopy;       /* EXTENDED COPY in progress */
};

/* The identity and options of a logical unit, given at creation. */
struct tnd_scsi_lu_desc {
	const char *name;               /* device name; seeds NAA and serial */
	struct tnd_volume *vol;         /* borrowed; outlives the LU */
	const char *vendor;             /* 8 chars max; NULL = "TANDEM" */
	const char *product;            /* 16 chars max; NULL = "tandem <type>" */
	/* Where persistent reservations with APTPL are kept:
	 * <state_dir>/pr/<name>.json. NULL: APTPL unsupported. */
	const char *state_dir;
	/* Another LU of the same device (same name), e.g. the device mapped
	 * in a second target: initiators see one logical unit through two
	 * target ports, so the two share their reservation state (and then
	 * state_dir is not used). Borrowed; NULL: none. */
	struct tnd_scsi_lu *share_with;
};

/* Identity of the target port a nexus came in through (VPD 0x83). */
struct tnd_scsi_port {
	const char *target_name;        /* the target IQN */
	uint16_t tpgt;                  /* target portal group tag */
	uint16_t rel_port_id;           /* relative target port identifier, >= 1 */
	/* ALUA target port group of the port (one per node); 0 = 1. */
	uint16_t port_group;
};

/*
 * ALUA (SPC-4 5.15): asymmetric access states, as REPORT TARGET PORT
 * GROUPS encodes them. Every LU starts active/optimized; the HA layer
 * moves the LU's state on this node's target port group (one group per
 * node), and commands are then refused as SPC-4 says for the state:
 * standby and unavailable answer NOT READY, LOGICAL UNIT NOT ACCESSIBLE
 * (04h/0Bh, 04h/0Ch) to everything but the discovery and reporting
 * commands, transitioning answers 04h/0Ah. A change raises ASYMMETRIC
 * ACCESS STATE CHANGED (2Ah/06h) on every nexus.
 */
enum tnd_scsi_alua_state {
	TND_SCSI_ALUA_ACTIVE_OPTIMIZED = 0x0,
	TND_SCSI_ALUA_ACTIVE_NON_OPTIMIZED = 0x1,
	TND_SCSI_ALUA_STANDBY = 0x2,
	TND_SCSI_ALUA_UNAVAILABLE = 0x3,
	TND_SCSI_ALUA_TRANSITIONING = 0xf,
};

/* Create / destroy a logical unit. Returns 0 or -errno (-EINVAL also
 * when share_with is an LU of another name). */
int tnd_scsi_lu_create(const struct tnd_scsi_lu_desc *desc, struct tnd_scsi_lu **out);
void tnd_scsi_lu_destroy(struct tnd_scsi_lu *lu);
/* The device name the LU was created with. */
const char *tnd_scsi_lu_name(const struct tnd_scsi_lu *lu);
/* Remove device @name's APTPL reservation file under @state_dir (no LU of
 * it may exist). 0 when done or absent, else -errno. */
int tnd_scsi_pr_forget(const char *state_dir, const char *name);

/*
 * A LUN RESET (or TARGET WARM RESET) reached this LU: every nexus gets
 * a unit attention (29h/03h or 29h/00h) on its next command, and a
 * RESERVE(6) reservation is released (persistent ones stay). Any thread.
 */
void tnd_scsi_lu_reset(struct tnd_scsi_lu *lu);

/* Set / read @lu's ALUA state on this node's port group. Any thread;
 * -EINVAL for a value that is not a state above. */
int tnd_scsi_lu_set_alua_state(struct tnd_scsi_lu *lu, enum tnd_scsi_alua_state state);
enum tnd_scsi_alua_state tnd_scsi_lu_alua_state(const struct tnd_scsi_lu *lu);

/* Create an I_T nexus; @initiator is the initiator port name (IQN + ISID). */
int tnd_scsi_nexus_create(const char *initiator, const struct tnd_scsi_port *port,
			  struct tnd_scsi_nexus **out);
void tnd_scsi_nexus_destroy(struct tnd_scsi_nexus *nexus);

/* Execute a command; see "Completion" above. */
void tnd_scsi_exec(struct tnd_scsi_cmd *cmd);

/*
 * Whether @cmd, executing (between tnd_scsi_exec() and done()), may still
 * touch @lu: its own LU, or a copy target of an EXTENDED COPY. The
 * transport asks before it lets an unmapped LU be destroyed.
 */
bool tnd_scsi_cmd_uses_lu(const struct tnd_scsi_cmd *cmd, const struct tnd_scsi_lu *lu);

/*
 * Decide the data direction and transfer length a CDB implies, without
 * executing it (used by the transport to sanity-check the PDU's flags).
 * Returns 0, or -EINVAL for an unknown or malformed CDB.
 */
int tnd_scsi_cdb_xfer(const struct tnd_scsi_lu *lu, const uint8_t *cdb, uint8_t cdb_len,
		      enum tnd_scsi_dir *dir, uint32_t *len);

/*
 * Build fixed-format sense data: @key, @asc, @ascq into @buf (>= 18 bytes).
 * Returns the length written (18).
 */
unsigned tnd_scsi_build_sense(uint8_t *buf, uint8_t key, uint8_t asc, uint8_t ascq);

#endif
