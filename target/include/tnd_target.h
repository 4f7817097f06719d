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

int tnd_target_server_start(struct tnd_target_server *srv);

typedef void (*tnd_target_stopped_cb)(void *arg);

/* Graceful stop; see above. Call from the main thread, once. */
void tnd_target_server_stop(struct tnd_target_server *srv, tnd_target_stopped_cb cb, void *arg);

/* Free everything. Only after the stopped callback (or if never started). */
void tnd_target_server_destroy(struct tnd_target_server *srv);

#endif
