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
 * reactor 0; accepted connections are spread over the reactors round-robin
 * and each connection (with its session) stays on its reactor for life.
 * Configuration is read-only once started; live changes (the mgmt issue)
 * will arrive as messages to the reactors.
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
 * same device keeps the same identity across restarts and nodes.
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
	const uint64_t *luns;                   /* NULL = every LUN of the target */
	unsigned nr_luns;
	const struct tnd_target_chap *chap;     /* NULL = no CHAP for this initiator */
	const struct tnd_target_chap *mutual_chap; /* NULL = no mutual CHAP; needs chap */
};

/* Add or replace the ACL of acl->initiator on target @iqn. 0, -ENOENT, -EINVAL. */
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
 * HAS CHANGED (3Fh/0Eh). Unmapping waits until no command on that LUN is in
 * flight any more, so the caller may then destroy the volume. Removing a
 * target closes its sessions first.
 */
int tnd_target_server_unmap_lun(struct tnd_target_server *srv, const char *iqn, uint64_t lun);
int tnd_target_server_remove_target(struct tnd_target_server *srv, const char *iqn);
/* Turn allow_any on or off for a target. */
int tnd_target_server_set_allow_any(struct tnd_target_server *srv, const char *iqn, bool allow_any);

/* ---- sessions --------------------------------------------------------------
 *
 * Sessions are listed as a JSON array of objects: id (a stable string),
 * initiator, isid, target, type ("normal"/"discovery"), peer address,
 * portal, reactor, connections, and the negotiated parameters. Kicking a
 * session ends it (its initiator may log in again).
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
