/*
 * fixture.h — an in-memory management backend for the mgmt tests.
 *
 * Implements struct tnd_mgmt_backend_ops over a small JSON model (devices,
 * targets with LUN maps and ACLs, sessions) with the semantics documented in
 * tnd_mgmt.h: all-or-nothing ops, -ENOENT/-EEXIST/-EBUSY where the contract
 * says so. Test-only; the daemon implements the real backend.
 *
 * Threading: the mgmt library calls ops one at a time; the test thread reads
 * the model only between requests.
 */
#ifndef TND_MGMT_FIXTURE_H
#define TND_MGMT_FIXTURE_H

#include <jansson.h>

#include "tnd_mgmt.h"

struct fixture {
	json_t *devices;        /* [{name, type, size, block_size, options...}] */
	json_t *targets;        /* [{iqn, alias?, allow_any_initiator, luns: [], acls: []}] */
	json_t *sessions;       /* [{id, target, initiator, address}] */
	unsigned changes;       /* successful mutating ops */
	int fail_next;          /* if non-zero, the next op returns it (fault injection) */
	unsigned delay_ms;      /* every op sleeps this long first (slow backend) */
};

extern const struct tnd_mgmt_backend_ops fixture_ops;
extern const struct tnd_mgmt_dev_type fixture_device_types[];

struct fixture *fixture_create(void);
void fixture_destroy(struct fixture *f);

/* Add a session as if an initiator had logged in. */
void fixture_add_session(struct fixture *f, const char *id, const char *target,
			 const char *initiator);

#endif
