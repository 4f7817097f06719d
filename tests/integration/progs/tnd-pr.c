/*
 * tnd-pr — persistent reservations through libiscsi, for the integration
 * scripts. It logs in with a given initiator name and a fixed ISID (so the
 * I_T nexus is the same across invocations and daemon restarts), clears
 * the unit attentions a fresh session starts with, and runs one action:
 *
 *   tnd-pr URL INITIATOR ISID register KEY [aptpl]   REGISTER AND IGNORE EXISTING KEY
 *   tnd-pr URL INITIATOR ISID unregister KEY         REGISTER with SARK 0
 *   tnd-pr URL INITIATOR ISID reserve KEY TYPE       RESERVE (TYPE 1,3,5,6,7,8)
 *   tnd-pr URL INITIATOR ISID keys                   READ KEYS: one hex key per line
 *   tnd-pr URL INITIATOR ISID reservation            READ RESERVATION: "KEY TYPE" or "none"
 *   tnd-pr URL INITIATOR ISID write LBA              WRITE(10) of one block
 *
 * Exit status: 0 done (GOOD), 2 RESERVATION CONFLICT, 1 anything else.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

static int status_exit(struct iscsi_context *iscsi, struct scsi_task *t, const char *what)
{
	if (!t) {
		fprintf(stderr, "tnd-pr: %s: %s\n", what, iscsi_get_error(iscsi));
		return 1;
	}
	int st = t->status;
	if (st == SCSI_STATUS_GOOD)
		return 0;
	if (st == SCSI_STATUS_RESERVATION_CONFLICT) {
		fprintf(stderr, "tnd-pr: %s: RESERVATION CONFLICT\n", what);
		return 2;
	}
	fprintf(stderr, "tnd-pr: %s: status %d sense %x/%02x%02x\n", what, st,
		t->sense.key, t->sense.ascq >> 8, t->sense.ascq & 0xff);
	return 1;
}

static uint64_t num(const char *s)
{
	return strtoull(s, NULL, 0);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: tnd-pr URL INITIATOR ISID ACTION [ARGS]\n");
		return 1;
	}
	const char *url_s = argv[1], *action = argv[4];
	struct iscsi_context *iscsi = iscsi_create_context(argv[2]);
	if (!iscsi)
		return 1;
	struct iscsi_url *url = iscsi_parse_full_url(iscsi, url_s);
	if (!url) {
		fprintf(stderr, "tnd-pr: bad URL: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	iscsi_set_isid_random(iscsi, (uint32_t)num(argv[3]), 0);
	iscsi_set_targetname(iscsi, url->target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE);
	if (iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "tnd-pr: login: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	int lun = url->lun;
	/* A new session reports power on (and whatever else) first. */
	for (int i = 0; i < 8; i++) {
		struct scsi_task *t = iscsi_testunitready_sync(iscsi, lun);
		int good = t && t->status == SCSI_STATUS_GOOD;
		if (t)
			scsi_free_scsi_task(t);
		if (good)
			break;
	}

	int rc = 1;
	struct scsi_task *t = NULL;
	if (strcmp(action, "register") == 0 && argc >= 6) {
		struct scsi_persistent_reserve_out_basic p = {
			.service_action_reservation_key = num(argv[5]),
			.aptpl = argc >= 7 && strcmp(argv[6], "aptpl") == 0,
		};
		t = iscsi_persistent_reserve_out_sync(
			iscsi, lun, SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, &p);
		rc = status_exit(iscsi, t, "register");
	} else if (strcmp(action, "unregister") == 0 && argc >= 6) {
		struct scsi_persistent_reserve_out_basic p = { .reservation_key = num(argv[5]) };
		t = iscsi_persistent_reserve_out_sync(iscsi, lun, SCSI_PERSISTENT_RESERVE_REGISTER,
						      0, 0, &p);
		rc = status_exit(iscsi, t, "unregister");
	} else if (strcmp(action, "reserve") == 0 && argc >= 7) {
		struct scsi_persistent_reserve_out_basic p = { .reservation_key = num(argv[5]) };
		t = iscsi_persistent_reserve_out_sync(iscsi, lun, SCSI_PERSISTENT_RESERVE_RESERVE,
						      0, (int)num(argv[6]), &p);
		rc = status_exit(iscsi, t, "reserve");
	} else if (strcmp(action, "keys") == 0) {
		t = iscsi_persistent_reserve_in_sync(iscsi, lun, SCSI_PERSISTENT_RESERVE_READ_KEYS,
						     4096);
		rc = status_exit(iscsi, t, "read keys");
		struct scsi_persistent_reserve_in_read_keys *rk = rc ? NULL : scsi_datain_unmarshall(t);
		if (!rc && !rk)
			rc = 1;
		for (int i = 0; rk && i < rk->num_keys; i++)
			printf("0x%016" PRIx64 "\n", rk->keys[i]);
	} else if (strcmp(action, "reservation") == 0) {
		t = iscsi_persistent_reserve_in_sync(iscsi, lun,
						     SCSI_PERSISTENT_RESERVE_READ_RESERVATION, 4096);
		rc = status_exit(iscsi, t, "read reservation");
		struct scsi_persistent_reserve_in_read_reservation *rr =
			rc ? NULL : scsi_datain_unmarshall(t);
		if (!rc && !rr)
			rc = 1;
		if (rr && rr->reserved)
			printf("0x%016" PRIx64 " %d\n", rr->reservation_key, rr->pr_type);
		else if (rr)
			printf("none\n");
	} else if (strcmp(action, "write") == 0 && argc >= 6) {
		unsigned char buf[512];
		memset(buf, 0xa5, sizeof(buf));
		t = iscsi_write10_sync(iscsi, lun, (uint32_t)num(argv[5]), buf, sizeof(buf), 512, 0,
				       0, 0, 0, 0);
		rc = status_exit(iscsi, t, "write");
	} else {
		fprintf(stderr, "tnd-pr: bad action or arguments\n");
	}
	if (t)
		scsi_free_scsi_task(t);
	iscsi_logout_sync(iscsi);
	iscsi_destroy_url(url);
	iscsi_destroy_context(iscsi);
	return rc;
}
