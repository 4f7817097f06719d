/*
 * tnd_target.h — the iSCSI target: portals, targets, LUN maps, sessions.
 *
 * This is the front end of the data path: it accepts TCP connections on
 * its portals, runs iSCSI (RFC 7143) login and full feature phase, and
 * turns SCSI commands into I/O on the volumes mapped as LUNs. SCSI command
 * semantics live in target/src/scsi.c; PDU handling in target/src/iscsi_*.c.
 *
 * Threads: the server is configured on the main thread (add portals,
 * targets and LUNs), then started. Each portal's listening socket lives on
 * reactor 0; accepted connections are spread over the reactors round-robin.
 * After start, configuration changes come from one non-reactor thread at a
 * time (they serialise on a mutex) and reach the reactors as messages; see
 * "live changes" below.
 *
 * Placement: a volume may have a home reactor that owns its state
 * (tnd_volume_info.home: lsfs runs its map, log and GC there, and a write
 * submitted elsewhere is staged on the submitter and forwarded). A session
 * on its LUN's home runs the iSCSI work and the store's write path on one
 * CPU; elsewhere they use two, 10-25 % more IOPS for the same workload on
 * 2 CPUs (bench/results/2026-11-22-vm-dedup.md, "Placement"). Which one a
 * session got used to depend only on the accept counter's parity, so two
 * identical guests on one LUN performed differently. So when a normal
 * session's login reaches full feature phase its reactor is chosen: the
 * one that is the home of the fewest of the LUNs the session sees (so one
 * that is home of none, when there is one), among those the one with the
 * fewest normal sessions; on a tie the session stays where it is (no move
 * for nothing). It then moves there once, right after its final login
 * response is sent, and stays for life; discovery sessions, and every
 * session of a server with one reactor, never move. The LUN map is read at
 * login: mapping or unmapping LUNs later does not move existing sessions.
 * A login does not say which LUN the session will use: on a target whose
 * LUNs have homes on every reactor, its sessions all go to the reactor
 * that is home of the fewest of them (a target per device avoids that).
 * While it moves (microseconds) a session is on no reactor's list, so a
 * session listing made just then can miss it and a kick answers -ENOENT.
 *
 * Ownership: the server borrows the reactors and volumes it is given; they
 * must outlive it. tnd_target_server_stop() stops accepting, takes no new
 * PDUs, lets the commands already at the volumes finish and sends their
 * responses, closes every connection and then calls the callback on the
 * main thread's behalf (from a reactor thread): after that the caller may
 * flush its volumes and destroy the server.
 */
#ifndef TND_TARGET_H
#define TND_TARGET_H

#include <stdbool.h>
#include <stdint.h>

struct tnd_reactor;
struct tnd_volume;
struct tnd_target_server;

struct tnd_target_server_opts {
	struct tnd_reactor **reactors;  /* borrowed; at least one */
	unsigned nr_reactors;
	/* Seconds of connection idleness before the target sends a NOP-In
	 * ping; 0 = default (5 s). A ping unanswered for as long again closes
	 * the connection, and so does a login not finished within three
	 * intervals. */
	unsigned nop_interval_s;
	/* A directory for state the target keeps across restarts: persistent
	 * reservations with APTPL=1 go to <state_dir>/pr/<device>.json (see
	 * docs/architecture.md). Copied. NULL: APTPL is not supported (a PR
	 * OUT asking for it gets INVALID FIELD IN PARAMETER LIST). */
	const char *state_dir;
};

int tnd_target_server_create(const struct tnd_target_server_opts *opts,
			     struct tnd_target_server **out);

/*
 * Listen on "HOST:PORT" ("127.0.0.1:3260", "[::1]:3260", "0.0.0.0:3260").
 * Binds immediately, so a busy port fails here with -EADDRINUSE.
 * Returns 0 or -errno.
 */
int tnd_target_server_add_portal(struct tnd_target_server *srv, const char *host_port);

/* The port actually bound by portal @idx (useful with port 0). */
int tnd_target_server_portal_port(struct tnd_target_server *srv, unsigned idx);

/*
 * Add a target. @initiators is an allow-list of initiator IQNs (may be
 * NULL/0 when @allow_any is true). Returns 0, -EEXIST or -EINVAL.
 */
int tnd_target_server_add_target(struct tnd_target_server *srv, const char *iqn,
				 const char *alias, bool allow_any,
				 const char *const *initiators, unsigned nr_initiators);

/*
 * Map @vol as LUN @lun of target @iqn; @dev_name is the device's name,
 * which seeds the LU's SCSI identity (NAA designator and serial), so the
 * same device keeps the same identity across restarts and nodes. The
 * volume's home reactor (tnd_volume_info) is read here, for placement (a
 * home that is none of the server's reactors counts as no home).
 * Returns 0, -ENOENT (no such target), -EEXIST (LUN taken) or -errno.
 */
int tnd_target_server_map_lun(struct tnd_target_server *srv, const char *iqn,
			      uint64_t lun, const char *dev_name, struct tnd_volume *vol);

/* ---- access control ------------------------------------------------------
 *
 * A target admits an initiator when allow_any is set or an ACL names it.
 * An ACL may restrict the LUNs the initiator sees (LUN masking: a LUN not
 * listed is absent from its REPORT LUNS and answers LOGICAL UNIT NOT
 * SUPPORTED) and may require CHAP (RFC 7143 section 12.1.3, MD5) and mutual
 * CHAP. Secrets are 12 to 255 bytes; they are copied in and never logged or
 * returned.
 */
struct tnd_target_chap {
	const char *user;
	const char *secret;
};

struct tnd_target_acl {
	const char *initiator;                  /* initiator IQN */
	/* NULL = every LUN of the target, present and future; non-NULL with
	 * nr_luns 0 = none. Duplicates are ignored; listed LUNs need not be
	 * mapped (yet): they appear once they are. */
	const uint64_t *luns;
	unsigned nr_luns;
	const struct tnd_target_chap *chap;     /* NULL = no CHAP for this initiator */
	const struct tnd_target_chap *mutual_chap; /* NULL = no mutual CHAP; needs chap */
};

/*
 * Add or replace the ACL of acl->initiator on target @iqn. 0, -ENOENT,
 * -EINVAL (bad name, LUN over 16383, secret length, mutual_chap without
 * chap, or the same secret both ways). The initiators given to
 * add_target are ACLs without mask or CHAP. A logged-in session keeps its
 * authentication; its LUNs follow the new mask (with the unit attention).
 * remove_acl: 0 or -ENOENT; the initiator's sessions end unless allow_any.
 */
int tnd_target_server_set_acl(struct tnd_target_server *srv, const char *iqn,
			      const struct tnd_target_acl *acl);
int tnd_target_server_remove_acl(struct tnd_target_server *srv, const char *iqn,
				 const char *initiator);

/* ---- live changes ----------------------------------------------------------
 *
 * Every configuration call above and below also works after start, from a
 * thread that is not a reactor (the management API's). They return once the
 * change is in effect on every reactor: new logins see it at once, and
 * logged-in initiators whose LUN inventory changed get REPORTED LUNS DATA
 * HAS CHANGED (3Fh/0Eh) on their next command to a LUN they still have.
 * Unmapping waits until no command on that LUN is in flight any more, so
 * the caller may then destroy the volume. Removing a target closes its
 * sessions first (and waits for their commands likewise). A session whose
 * initiator is no longer admitted (allow_any turned off, ACL removed) is
 * closed. Calls serialise on a mutex; each may return -EDEADLK when made
 * on a reactor thread and -ESHUTDOWN once stop has been called. A call
 * waiting for in-flight commands waits as long as the volume takes.
 */
int tnd_target_server_unmap_lun(struct tnd_target_server *srv, const char *iqn, uint64_t lun);
/*
 * Forget the persistent reservations kept for device @dev_name across
 * restarts (its APTPL file under state_dir), for when the device itself is
 * deleted: a new device of the same name must not inherit them. Unmapping
 * alone keeps them, as a disk keeps them over a power cycle. 0 (also when
 * there is nothing to forget), -EBUSY while the device is still mapped, or
 * -errno.
 */
int tnd_target_server_forget_device(struct tnd_target_server *srv, const char *dev_name);
int tnd_target_server_remove_target(struct tnd_target_server *srv, const char *iqn);
/* Turn allow_any on or off for a target. */
int tnd_target_server_set_allow_any(struct tnd_target_server *srv, const char *iqn, bool allow_any);

/*
 * ALUA (implicit, SPC-4 5.15): this node is one target port group; each
 * LUN has an asymmetric access state in it, active/optimized at first.
 * The HA layer moves it: standby and unavailable refuse the data path
 * with NOT READY (04h/0Bh, 04h/0Ch) and keep discovery and REPORT TARGET
 * PORT GROUPS working, so multipath sends I/O to the peer; transitioning
 * answers 04h/0Ah. Every session of the LUN gets ASYMMETRIC ACCESS STATE
 * CHANGED (2Ah/06h) on its next command. Takes effect at once (no
 * round): 0, -ENOENT (no such target or LUN), -EINVAL (not a state).
 */
enum tnd_target_alua_state {
	TND_TARGET_ALUA_ACTIVE_OPTIMIZED = 0x0,
	TND_TARGET_ALUA_ACTIVE_NON_OPTIMIZED = 0x1,
	TND_TARGET_ALUA_STANDBY = 0x2,
	TND_TARGET_ALUA_UNAVAILABLE = 0x3,
	TND_TARGET_ALUA_TRANSITIONING = 0xf,
};
int tnd_target_server_set_alua_state(struct tnd_target_server *srv, const char *iqn,
				     uint64_t lun, enum tnd_target_alua_state state);

/* ---- sessions --------------------------------------------------------------
 *
 * Sessions are listed as a JSON array of objects: id (a stable string),
 * initiator, isid, target, type ("normal"/"discovery"), peer address,
 * portal, reactor (the index of the one it runs on, after placement),
 * connections, and the negotiated parameters. Kicking a
 * session ends it (its initiator may log in again).
 *
 * Exactly: {"id": "17" (decimal, unique for the server's life),
 * "initiator", "isid": "400001370000" (12 hex digits), "target" ("" for
 * discovery), "type", "address": "127.0.0.1:51234" (peer), "portal":
 * "127.0.0.1:3260" (local), "reactor": 0, "connections": 1, "tsih",
 * "login_time" (Unix seconds), "auth": "None"|"CHAP", "params": {
 * "header_digest", "data_digest" (booleans), "max_recv_data_segment_length",
 * "max_xmit_data_segment_length", "max_burst_length", "first_burst_length",
 * "immediate_data", "initial_r2t", "max_outstanding_r2t",
 * "error_recovery_level"}}. Sessions are appended to @out_array (0,
 * -EINVAL if it is not an array, -ENOMEM, -ESHUTDOWN); before start there
 * are none. kick_session: 0 once the session is closing (gone from the
 * list), -ENOENT for an unknown id; commands it has at the volumes
 * finish, their answers are dropped.
 */
#include <jansson.h>
int tnd_target_server_sessions_json(struct tnd_target_server *srv, json_t *out_array);
int tnd_target_server_kick_session(struct tnd_target_server *srv, const char *id);

int tnd_target_server_start(struct tnd_target_server *srv);

typedef void (*tnd_target_stopped_cb)(void *arg);

/* Graceful stop; see above. Call from the main thread, once. */
void tnd_target_server_stop(struct tnd_target_server *srv, tnd_target_stopped_cb cb, void *arg);

/* Free everything. Only after the stopped callback (or if never started). */
void tnd_target_server_destroy(struct tnd_target_server *srv);

#endif
