/* tnd_client: see tnd_client.h. */
#include "tnd_client.h"

#include <errno.h>
#include <stdio.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

bool tnd_client_data_digest(void)
{
#ifdef TND_HAVE_ISCSI_DATA_DIGEST
	return true;
#else
	return false;
#endif
}

int tnd_client_connect(const struct tnd_client_opts *o, const char *url,
		       struct iscsi_context **out, int *lun)
{
	int ret;
	struct iscsi_context *iscsi = iscsi_create_context(o->initiator);
	if (!iscsi) {
		fprintf(stderr, "%s: cannot create iSCSI context\n", o->prog);
		return -ENOMEM;
	}
	struct iscsi_url *u = iscsi_parse_full_url(iscsi, url);
	if (!u) {
		fprintf(stderr, "%s: bad URL %s: %s\n", o->prog, url, iscsi_get_error(iscsi));
		ret = -EINVAL;
		goto err_destroy;
	}
	iscsi_set_targetname(iscsi, u->target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	if (u->user[0])
		iscsi_set_initiator_username_pwd(iscsi, u->user, u->passwd);
	iscsi_set_header_digest(iscsi, o->header_digest ? ISCSI_HEADER_DIGEST_CRC32C
							: ISCSI_HEADER_DIGEST_NONE);
#ifdef TND_HAVE_ISCSI_DATA_DIGEST
	iscsi_set_data_digest(iscsi, o->data_digest ? ISCSI_DATA_DIGEST_CRC32C
						    : ISCSI_DATA_DIGEST_NONE);
#endif
	iscsi_set_noautoreconnect(iscsi, 1);
	iscsi_set_timeout(iscsi, 30);
	if (iscsi_full_connect_sync(iscsi, u->portal, u->lun) != 0) {
		fprintf(stderr, "%s: login to %s failed: %s\n", o->prog, url, iscsi_get_error(iscsi));
		ret = -ECONNREFUSED;
		goto err_free_url;
	}
	*lun = u->lun;
	*out = iscsi;
	iscsi_destroy_url(u);
	return 0;

err_free_url:
	iscsi_destroy_url(u);
err_destroy:
	iscsi_destroy_context(iscsi);
	return ret;
}

void tnd_client_close(struct iscsi_context *iscsi)
{
	if (!iscsi)
		return;
	if (iscsi_is_logged_in(iscsi))
		iscsi_logout_sync(iscsi);
	iscsi_destroy_context(iscsi);
}

int tnd_client_capacity(const struct tnd_client_opts *o, struct iscsi_context *iscsi, int lun,
			uint32_t *block_size, uint64_t *nblocks)
{
	int ret = -EIO;
	struct scsi_task *task = iscsi_readcapacity16_sync(iscsi, lun);
	if (!task || task->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "%s: READ CAPACITY(16) failed: %s\n", o->prog, iscsi_get_error(iscsi));
		goto out_free_task;
	}
	struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(task);
	if (!rc || rc->block_length == 0) {
		fprintf(stderr, "%s: cannot parse the READ CAPACITY(16) answer\n", o->prog);
		goto out_free_task;
	}
	*block_size = rc->block_length;
	*nblocks = rc->returned_lba + 1;
	ret = 0;
out_free_task:
	if (task)
		scsi_free_scsi_task(task);
	return ret;
}

const char *tnd_client_status_name(int status)
{
	switch (status) {
	case SCSI_STATUS_GOOD: return "GOOD";
	case SCSI_STATUS_CHECK_CONDITION: return "CHECK CONDITION";
	case SCSI_STATUS_BUSY: return "BUSY";
	case SCSI_STATUS_RESERVATION_CONFLICT: return "RESERVATION CONFLICT";
	case SCSI_STATUS_TASK_SET_FULL: return "TASK SET FULL";
	case SCSI_STATUS_TASK_ABORTED: return "TASK ABORTED";
	case SCSI_STATUS_CANCELLED: return "cancelled (connection lost)";
	case SCSI_STATUS_ERROR: return "transport error";
	case SCSI_STATUS_TIMEOUT: return "timeout";
	default: return "unexpected status";
	}
}
