/*
 * Full feature phase: commands in CmdSN order, write data (immediate,
 * unsolicited, solicited by R2T), Data-In and SCSI Response, task
 * management and logout.
 *
 * A task is born when its SCSI Command PDU's header arrives (so that
 * immediate data can be received straight into its buffer) and enters the
 * connection's ITT table at once, so Data-Out finds it even while it waits
 * for its CmdSN turn. Delivery happens in CmdSN order: a read executes at
 * once; a write first collects its data (unsolicited up to
 * FirstBurstLength unless InitialR2T=Yes, the rest by R2Ts of at most
 * MaxBurstLength, MaxOutstandingR2T at a time) and executes when the last
 * byte is in. When the SCSI layer is done, the task leaves the table (its
 * ITT may be reused) and lives on only while queued Data-In PDUs borrow its
 * buffer.
 *
 * The command window: a non-immediate command takes a slot from delivery
 * until its response is queued; MaxCmdSN = ExpCmdSN + free slots - 1.
 *
 * Aborts: a task not yet at the SCSI layer is freed on the spot; one at the
 * SCSI layer cannot be recalled from the volume, so it is marked aborted,
 * its response is suppressed, and the TMF response waits for it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "iscsi_conn.h"
#include "iscsi_pool.h"

#define TAG "iscsi"

/* ---- the ITT table ---- */

static struct iscsi_task **bucket(struct iscsi_conn *c, uint32_t itt)
{
	return &c->tasks[itt % ISCSI_TASK_BUCKETS];
}

static struct iscsi_task *task_find(struct iscsi_conn *c, uint32_t itt)
{
	for (struct iscsi_task *t = *bucket(c, itt); t; t = t->hnext)
		if (t->itt == itt)
			return t;
	return NULL;
}

static void task_unlink(struct iscsi_conn *c, struct iscsi_task *t)
{
	for (struct iscsi_task **pp = bucket(c, t->itt); *pp; pp = &(*pp)->hnext) {
		if (*pp == t) {
			*pp = t->hnext;
			t->hnext = NULL;
			c->nr_tasks--;
			break;
		}
	}
	for (struct iscsi_task **pp = &c->held; *pp; pp = &(*pp)->qnext) {
		if (*pp == t) {
			*pp = t->qnext;
			t->qnext = NULL;
			break;
		}
	}
	if (t->counted) {
		t->counted = false;
		c->outstanding--;
	}
}

void tnd_iscsi_task_put(struct iscsi_task *t)
{
	if (--t->refs > 0)
		return;
	struct iscsi_conn *c = t->conn;
	if (t->cmd.data) {
		tnd_iscsi_pool_put(c->rc->pool, t->cmd.data, t->buf_size);
		c->buf_bytes -= t->buf_size;
	}
	c->nr_live--;
	/* Keep a few task structs per connection: a steady command stream
	 * then allocates none. */
	if (c->task_free_count < ISCSI_TASK_CACHE) {
		t->hnext = c->task_free;
		c->task_free = t;
		c->task_free_count++;
	} else {
		free(t);
	}
}

void tnd_iscsi_task_cache_drain(struct iscsi_conn *c)
{
	while (c->task_free) {
		struct iscsi_task *t = c->task_free;
		c->task_free = t->hnext;
		free(t);
	}
	c->task_free_count = 0;
}

/* Drop a task that never reached (or came back from) the SCSI layer, silently. */
static void task_discard(struct iscsi_conn *c, struct iscsi_task *t)
{
	task_unlink(c, t);
	t->state = TASK_SENDING;
	tnd_iscsi_task_put(t);
}

void tnd_iscsi_tasks_release(struct iscsi_conn *c)
{
	for (unsigned b = 0; b < ISCSI_TASK_BUCKETS; b++) {
		while (c->tasks[b])
			task_discard(c, c->tasks[b]);
	}
}

/* ---- creation ---- */

struct cmd_error {
	uint8_t reject;   /* Reject reason, or 0 */
};

static struct iscsi_task *task_create(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h,
				      struct cmd_error *err)
{
	const uint8_t *b = h->bhs;
	const struct tnd_iscsi_params *p = &c->ng.params;
	bool rd = h->flags & ISCSI_CMD_READ, wr = h->flags & ISCSI_CMD_WRITE;
	uint32_t edtl = tnd_get_be32(b + ISCSI_OFF_TTT);

	err->reject = 0;
	if (h->itt == ISCSI_RSVD_TAG) {
		err->reject = ISCSI_REJECT_PROTOCOL;
		return NULL;
	}
	if (task_find(c, h->itt)) {
		err->reject = ISCSI_REJECT_TASK_IN_PROGRESS;
		return NULL;
	}
	/* CDBs longer than 16 bytes (extended CDB AHS) are not supported. */
	if (h->ahs_len) {
		err->reject = ISCSI_REJECT_INVALID_FIELD;
		return NULL;
	}
	if (h->data_len && (!wr || !p->immediate_data || h->data_len > p->first_burst ||
			    h->data_len > edtl)) {
		err->reject = ISCSI_REJECT_PROTOCOL;
		return NULL;
	}
	/* Immediate commands bypass the window; cap what they can pile up. */
	if (c->nr_live >= 2 * ISCSI_QUEUE_DEPTH) {
		err->reject = h->immediate ? ISCSI_REJECT_IMM_CMD : ISCSI_REJECT_LONG_OP;
		return NULL;
	}

	struct iscsi_task *t = c->task_free;
	if (t) {
		c->task_free = t->hnext;
		c->task_free_count--;
		memset(t, 0, sizeof(*t));
	} else {
		t = calloc(1, sizeof(*t));
	}
	if (!t) {
		err->reject = ISCSI_REJECT_LONG_OP;
		return NULL;
	}
	t->conn = c;
	t->refs = 1;
	t->itt = h->itt;
	t->cmd_sn = tnd_get_be32(b + ISCSI_OFF_CMDSN);
	t->immediate = h->immediate;
	t->final = h->flags & ISCSI_FLAG_FINAL;
	memcpy(t->lun_raw, b + ISCSI_OFF_LUN, 8);
	t->cmd.exp_len = edtl;
	t->cmd.dir = (rd && wr) ? TND_SCSI_DIR_NONE
		     : wr && edtl ? TND_SCSI_DIR_WRITE
		     : rd && edtl ? TND_SCSI_DIR_READ
				  : TND_SCSI_DIR_NONE;
	t->state = TASK_HELD;

	uint32_t size = 0;
	if (t->cmd.dir == TND_SCSI_DIR_WRITE) {
		if (edtl > TND_SCSI_MAX_XFER_BYTES)
			t->too_big = true;
		else
			size = edtl;
	} else if (t->cmd.dir == TND_SCSI_DIR_READ) {
		size = TND_MIN(edtl, TND_SCSI_MAX_XFER_BYTES);
	}
	if (rd && wr)
		t->too_big = true;   /* bidirectional: answered with CHECK CONDITION */
	if (size && c->buf_bytes + size > ISCSI_SESSION_BUF_BUDGET)
		t->busy = true;
	else if (size) {
		t->cmd.data = tnd_iscsi_pool_get(c->rc->pool, size);
		if (!t->cmd.data) {
			t->busy = true;
		} else {
			t->buf_size = size;
			t->cmd.data_len = size;
			c->buf_bytes += size;
		}
	}
	/* A write we refuse still has its unsolicited data coming: take it
	 * in and drop it, then answer, so the initiator sees a clean end. */
	t->discard = wr && edtl && (t->busy || t->too_big);
	t->want = t->cmd.dir == TND_SCSI_DIR_WRITE && !t->discard ? size : 0;
	t->unsol_limit = p->initial_r2t ? h->data_len
					: TND_MIN(p->first_burst, t->discard ? edtl : t->want);
	t->hnext = *bucket(c, t->itt);
	*bucket(c, t->itt) = t;
	c->nr_tasks++;
	c->nr_live++;
	return t;
}

int tnd_iscsi_cmd_dest(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, uint8_t **dest)
{
	struct cmd_error err;
	struct iscsi_task *t = task_create(c, h, &err);
	if (!t)
		return 0;   /* the handler meets the same error and answers it */
	c->cur_task = t;
	*dest = t->discard ? NULL : t->cmd.data;
	return 0;
}

/* ---- responses ---- */

static void respond(struct iscsi_task *t);

static void respond_check(struct iscsi_task *t, uint8_t status, uint8_t key, uint8_t asc,
			  uint8_t ascq)
{
	t->cmd.status = status;
	t->cmd.sense_len = status == TND_SAM_CHECK_CONDITION
				   ? (uint8_t)tnd_scsi_build_sense(t->cmd.sense, key, asc, ascq)
				   : 0;
	t->cmd.in_len = 0;
	t->cmd.xfer_len = 0;
	respond(t);
}

static void cmd_done(struct tnd_scsi_cmd *cmd);

/* The answer will be dropped: a long command may stop early. */
static bool cmd_cancelled(const struct tnd_scsi_cmd *cmd)
{
	const struct iscsi_task *t = cmd->priv;
	return t->aborted || t->conn->state == CONN_CLOSING;
}

/*
 * REPORTED LUNS DATA HAS CHANGED (SPC-4 6.33, SAM-5 5.14): after the LUN
 * inventory of a session changed, its next command to a LUN it has is
 * answered with this unit attention, except INQUIRY, REPORT LUNS and
 * REQUEST SENSE, which never report one; REPORT LUNS clears it. One
 * report per change and session: the initiator rescans the whole target.
 * Kept here, not in the SCSI layer, because it is a property of the
 * session's view (ACL masking), not of any one LU. True when answered.
 */
static bool luns_changed_ua(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;
	uint8_t op = t->cmd.cdb[0];
	if (op == 0xa0) {   /* REPORT LUNS */
		c->luns_changed = false;
		return false;
	}
	if (!t->cmd.lu || op == 0x12 || op == 0x03)   /* INQUIRY, REQUEST SENSE */
		return false;
	c->luns_changed = false;
	respond_check(t, TND_SAM_CHECK_CONDITION, 0x06, 0x3f, 0x0e);
	return true;
}

static void task_exec(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;
	struct tnd_scsi_cmd *cmd = &t->cmd;
	cmd->cdb_len = 16;
	cmd->lu = NULL;
	if (tnd_iscsi_lun_decode(t->lun_raw, &cmd->lun) == 0)
		cmd->lu = tnd_iscsi_view_lu(c, cmd->lun);
	else
		cmd->lun = UINT64_MAX;
	if (c->luns_changed && luns_changed_ua(t))
		return;
	cmd->nexus = c->nexus;
	cmd->reactor = c->rc->reactor;
	/* The view may be replaced between callbacks; REPORT LUNS reads it
	 * within tnd_scsi_exec(), before any. */
	cmd->luns = c->view_ids;
	cmd->view_lus = c->view_lus;
	cmd->nr_luns = c->view_nr;
	cmd->done = cmd_done;
	cmd->cancelled = cmd_cancelled;
	cmd->priv = t;
	t->state = TASK_EXEC;
	if (++c->nr_exec > c->exec_peak)
		c->exec_peak = c->nr_exec;
	if (c->spin_wanted) {
		c->spin_wanted = false;
		tnd_reactor_spin_want(c->rc->reactor, false);
	}
	c->inflight++;
	tnd_scsi_exec(cmd);
}

static void send_r2ts(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;
	uint32_t max_r2t = TND_MIN(c->ng.params.max_outstanding_r2t,
				   (uint32_t)TND_ISCSI_OUR_MAX_OUTSTANDING_R2T);
	while (t->nr_r2t < max_r2t && t->r2t_next < t->want) {
		struct iscsi_r2t *r = &t->r2t[t->nr_r2t++];
		r->ttt = c->next_ttt++;
		if (r->ttt == ISCSI_RSVD_TAG)
			r->ttt = c->next_ttt++;
		r->offset = t->r2t_next;
		r->len = TND_MIN(c->ng.params.max_burst, t->want - t->r2t_next);
		r->got = 0;
		r->data_sn = 0;
		r->r2t_sn = t->r2t_sn++;
		t->r2t_next += r->len;

		struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_R2T);
		if (!tx)
			return;
		tx->hdr[1] = ISCSI_FLAG_FINAL;
		memcpy(tx->hdr + ISCSI_OFF_LUN, t->lun_raw, 8);
		tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, t->itt);
		tnd_put_be32(tx->hdr + ISCSI_OFF_TTT, r->ttt);
		tnd_iscsi_fill_sn(c, tx->hdr, false);
		tnd_put_be32(tx->hdr + ISCSI_OFF_DATASN, r->r2t_sn);
		tnd_put_be32(tx->hdr + ISCSI_OFF_BUFOFFSET, r->offset);
		tnd_put_be32(tx->hdr + 44, r->len);
		tnd_iscsi_tx_queue(c, tx);
	}
}

static void task_refuse(struct iscsi_task *t)
{
	if (t->busy)
		respond_check(t, TND_SAM_BUSY, 0, 0, 0);
	else   /* ILLEGAL REQUEST, INVALID FIELD IN CDB */
		respond_check(t, TND_SAM_CHECK_CONDITION, 0x05, 0x24, 0x00);
}

/* Move a delivered write on: more R2Ts, or execute once all data is in. */
static void task_progress(struct iscsi_task *t)
{
	if (t->state != TASK_RECEIVING)
		return;
	if (t->discard) {
		if (t->final || t->unsol_done || t->unsol_next >= t->unsol_limit ||
		    t->conn->ng.params.initial_r2t)
			task_refuse(t);
		return;
	}
	if (t->received >= t->want) {
		task_exec(t);
		return;
	}
	if (!t->unsol_done && (t->final || t->received >= t->unsol_limit ||
			       t->conn->ng.params.initial_r2t)) {
		t->unsol_done = true;
	}
	if (t->unsol_done) {
		if (t->r2t_next < t->unsol_next)
			t->r2t_next = t->unsol_next;
		send_r2ts(t);
	}
}

static void task_deliver(struct iscsi_task *t)
{
	if (t->aborted) {
		task_discard(t->conn, t);
		return;
	}
	if (t->busy || t->too_big) {
		if (t->discard) {
			t->state = TASK_RECEIVING;
			task_progress(t);
		} else {
			task_refuse(t);
		}
		return;
	}
	if (t->cmd.dir == TND_SCSI_DIR_WRITE) {
		t->state = TASK_RECEIVING;
		task_progress(t);
	} else {
		task_exec(t);
	}
}

/* Deliver held commands whose turn has come. */
static void drain_held(struct iscsi_conn *c)
{
	while (c->held && c->held->cmd_sn == c->exp_cmd_sn && c->state != CONN_CLOSING) {
		struct iscsi_task *t = c->held;
		c->held = t->qnext;
		t->qnext = NULL;
		c->exp_cmd_sn++;
		task_deliver(t);
	}
}

void tnd_iscsi_cmdsn_consume(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h)
{
	uint32_t sn = tnd_get_be32(h->bhs + ISCSI_OFF_CMDSN);
	if (sn == c->exp_cmd_sn) {
		c->exp_cmd_sn++;
		drain_held(c);
	}
}

void tnd_iscsi_cmd_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	struct iscsi_task *t = c->cur_task;
	c->cur_task = NULL;
	if (!t) {
		struct cmd_error err;
		t = task_create(c, h, &err);
		if (!t) {
			tnd_iscsi_reject(c, h->bhs, err.reject);
			return;
		}
		if (h->data_len && t->cmd.data && !t->discard)
			memcpy(t->cmd.data, data, h->data_len);
	}
	memcpy(t->cmd.cdb, h->bhs + ISCSI_OFF_CDB, 16);
	t->received = h->data_len;
	t->unsol_next = h->data_len;

	if (h->immediate) {
		task_deliver(t);
		return;
	}
	switch (tnd_iscsi_cmdsn_check(c->exp_cmd_sn, c->max_cmd_sn, t->cmd_sn)) {
	case TND_ISCSI_CMDSN_NOW:
		t->counted = true;
		c->outstanding++;
		c->exp_cmd_sn++;
		task_deliver(t);
		drain_held(c);
		break;
	case TND_ISCSI_CMDSN_LATER: {
		t->counted = true;
		c->outstanding++;
		struct iscsi_task **pp = &c->held;
		while (*pp && tnd_iscsi_sn_lt((*pp)->cmd_sn, t->cmd_sn))
			pp = &(*pp)->qnext;
		if (*pp && (*pp)->cmd_sn == t->cmd_sn) {
			/* Same CmdSN twice: the newcomer is a protocol error. */
			task_discard(c, t);
			tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_PROTOCOL);
			return;
		}
		t->qnext = *pp;
		*pp = t;
		break;
	}
	case TND_ISCSI_CMDSN_OUTSIDE:
		/* RFC 7143 3.2.2.1: silently ignore a command outside the window. */
		tnd_debug(TAG, "%s: CmdSN %u outside [%u, %u], dropped", c->peer_str, t->cmd_sn,
			  c->exp_cmd_sn, c->max_cmd_sn);
		task_discard(c, t);
		break;
	}
}

/* ---- Data-Out ---- */

/* Check a Data-Out against its task; 0 or a Reject reason. */
static uint8_t data_out_check(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h,
			      struct iscsi_task **tp, int *r2t_idx)
{
	const uint8_t *b = h->bhs;
	uint32_t ttt = tnd_get_be32(b + ISCSI_OFF_TTT);
	uint32_t data_sn = tnd_get_be32(b + ISCSI_OFF_DATASN);
	uint32_t off = tnd_get_be32(b + ISCSI_OFF_BUFOFFSET);
	struct iscsi_task *t = task_find(c, h->itt);
	*r2t_idx = -1;
	if (!t || (t->state != TASK_HELD && t->state != TASK_RECEIVING) ||
	    (!t->discard && (t->cmd.dir != TND_SCSI_DIR_WRITE || t->want == 0)))
		return ISCSI_REJECT_INVALID_FIELD;
	if (ttt == ISCSI_RSVD_TAG) {
		if (t->unsol_done || c->ng.params.initial_r2t || off != t->unsol_next ||
		    (uint64_t)off + h->data_len > t->unsol_limit || data_sn != t->unsol_data_sn)
			return ISCSI_REJECT_PROTOCOL;
	} else {
		int i;
		for (i = 0; i < (int)t->nr_r2t; i++)
			if (t->r2t[i].ttt == ttt)
				break;
		if (i == (int)t->nr_r2t)
			return ISCSI_REJECT_INVALID_FIELD;
		const struct iscsi_r2t *r = &t->r2t[i];
		if (off != r->offset + r->got || r->got + h->data_len > r->len ||
		    data_sn != r->data_sn)
			return ISCSI_REJECT_PROTOCOL;
		*r2t_idx = i;
	}
	*tp = t;
	return 0;
}

int tnd_iscsi_data_out_dest(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, uint8_t **dest)
{
	struct iscsi_task *t;
	int idx;
	if (data_out_check(c, h, &t, &idx) != 0 || t->discard)
		return 0;
	*dest = t->cmd.data + tnd_get_be32(h->bhs + ISCSI_OFF_BUFOFFSET);
	return 0;
}

void tnd_iscsi_data_out_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	struct iscsi_task *t;
	int idx;
	uint8_t reason = data_out_check(c, h, &t, &idx);
	if (reason) {
		/*
		 * The PDU is dropped and the task keeps waiting for correct data;
		 * the initiator's timeout and ABORT TASK end it. Closing would be
		 * allowed at ErrorRecoveryLevel 0, but an initiator that reconnects
		 * then renegotiates and never learns which PDU was wrong.
		 */
		tnd_iscsi_reject(c, h->bhs, reason);
		return;
	}
	uint32_t off = tnd_get_be32(h->bhs + ISCSI_OFF_BUFOFFSET);
	if (!t->discard) {
		uint8_t *dst = t->cmd.data + off;
		if (data != dst && h->data_len)
			memcpy(dst, data, h->data_len);
	}
	t->received += h->data_len;
	bool fin = h->flags & ISCSI_FLAG_FINAL;
	if (idx < 0) {
		t->unsol_next += h->data_len;
		t->unsol_data_sn++;
		if (fin)
			t->unsol_done = true;
	} else {
		struct iscsi_r2t *r = &t->r2t[idx];
		r->got += h->data_len;
		r->data_sn++;
		if (r->got == r->len)
			t->r2t[idx] = t->r2t[--t->nr_r2t];
	}
	task_progress(t);
}

/* ---- completion: Data-In and SCSI Response ---- */

static void respond(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;
	struct tnd_scsi_cmd *cmd = &t->cmd;
	/* The task leaves the table now: its ITT may be reused at once. */
	task_unlink(c, t);
	t->state = TASK_SENDING;

	uint32_t exp = cmd->exp_len, xfer = cmd->xfer_len;
	uint8_t res_flags = 0;
	uint32_t residual = 0;
	/* RFC 7143 11.4.5.1: residuals compare what the command transfers
	 * with the Expected Data Transfer Length, even when that is 0. */
	if (xfer < exp) {
		res_flags = ISCSI_DATAIN_UNDERFLOW;
		residual = exp - xfer;
	} else if (xfer > exp) {
		res_flags = ISCSI_DATAIN_OVERFLOW;
		residual = xfer - exp;
	}
	uint32_t len = cmd->dir == TND_SCSI_DIR_READ ? TND_MIN(cmd->in_len, cmd->data_len) : 0;
	bool collapse = len > 0 && cmd->status == TND_SAM_GOOD && cmd->sense_len == 0;
	uint32_t seg = c->ng.params.max_xmit_dsl, burst = c->ng.params.max_burst;

	for (uint32_t off = 0; off < len;) {
		uint32_t burst_end = (off / burst + 1) * burst;
		uint32_t n = TND_MIN(seg, TND_MIN(len, burst_end) - off);
		bool last = off + n == len;
		struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_DATA_IN);
		if (!tx)
			break;
		uint8_t fl = 0;
		if (last || off + n == burst_end)
			fl |= ISCSI_FLAG_FINAL;
		if (last && collapse) {
			fl |= ISCSI_DATAIN_STATUS | res_flags;
			tx->hdr[3] = cmd->status;
		}
		tx->hdr[1] = fl;
		memcpy(tx->hdr + ISCSI_OFF_LUN, t->lun_raw, 8);
		tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, t->itt);
		tnd_put_be32(tx->hdr + ISCSI_OFF_TTT, ISCSI_RSVD_TAG);
		tnd_iscsi_fill_sn(c, tx->hdr, last && collapse);
		if (!(last && collapse))
			tnd_put_be32(tx->hdr + ISCSI_OFF_CMDSN, 0);
		tnd_put_be32(tx->hdr + ISCSI_OFF_DATASN, t->data_sn++);
		tnd_put_be32(tx->hdr + ISCSI_OFF_BUFOFFSET, off);
		if (last && collapse)
			tnd_put_be32(tx->hdr + 44, residual);
		tx->data = cmd->data + off;
		tx->data_len = n;
		tx->task = t;
		t->refs++;
		tnd_iscsi_tx_queue(c, tx);
		off += n;
	}
	if (!collapse) {
		struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_SCSI_RSP);
		if (tx) {
			tx->hdr[1] = ISCSI_FLAG_FINAL | res_flags;
			tx->hdr[2] = 0x00;   /* command completed at target */
			tx->hdr[3] = cmd->status;
			tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, t->itt);
			tnd_iscsi_fill_sn(c, tx->hdr, true);
			/* ExpDataSN: the R2Ts and Data-Ins sent for this command. */
			tnd_put_be32(tx->hdr + ISCSI_OFF_DATASN, t->data_sn + t->r2t_sn);
			tnd_put_be32(tx->hdr + 44, residual);
			if (cmd->sense_len) {
				/* SenseLength (2 bytes) then the sense data. */
				tx->owned = malloc(2u + cmd->sense_len);
				if (tx->owned) {
					tnd_put_be16((uint8_t *)tx->owned, cmd->sense_len);
					memcpy(tx->owned + 2, cmd->sense, cmd->sense_len);
					tx->data = (const uint8_t *)tx->owned;
					tx->data_len = 2u + cmd->sense_len;
				}
			}
			tnd_iscsi_tx_queue(c, tx);
		}
	}
	tnd_iscsi_task_put(t);
}

static void tmf_respond(struct iscsi_conn *c, struct iscsi_tmf *m);

static void cmd_done(struct tnd_scsi_cmd *cmd)
{
	struct iscsi_task *t = cmd->priv;
	struct iscsi_conn *c = t->conn;
	c->nr_exec--;
	c->inflight--;
	if (c->nr_exec == 0) {
		/* An initiator that keeps one command in flight sends the next
		 * as soon as it has this answer: worth a short spin of the
		 * reactor instead of a sleep and a wake-up (hinted busy-poll). */
		c->qd1_streak = c->exec_peak == 1 ? c->qd1_streak + 1 : 0;
		c->exec_peak = 0;
		if (c->qd1_streak >= ISCSI_QD1_STREAK && !c->spin_wanted &&
		    c->state != CONN_CLOSING) {
			c->spin_wanted = true;
			tnd_reactor_spin_want(c->rc->reactor, true);
		}
	}
	if (t->drain_counted) {
		t->drain_counted = false;
		tnd_iscsi_cfg_cmd_done(c->rc);
	}
	struct iscsi_tmf *m = t->tmf;
	if (t->aborted || c->state == CONN_CLOSING)
		task_discard(c, t);
	else
		respond(t);
	if (m && --m->waiting == 0)
		tmf_respond(c, m);
	tnd_iscsi_logout_progress(c);
	tnd_iscsi_conn_check_drained(c);
	tnd_iscsi_conn_maybe_free(c);
}

/* ---- task management ---- */

static void tmf_respond(struct iscsi_conn *c, struct iscsi_tmf *m)
{
	if (c->state != CONN_CLOSING) {
		struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_TMF_RSP);
		if (tx) {
			tx->hdr[1] = ISCSI_FLAG_FINAL;
			tx->hdr[2] = m->response;
			tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, m->itt);
			tnd_iscsi_fill_sn(c, tx->hdr, true);
			tnd_iscsi_tx_queue(c, tx);
		}
	}
	free(m);
}

static void abort_one(struct iscsi_conn *c, struct iscsi_task *t, struct iscsi_tmf *m)
{
	switch (t->state) {
	case TASK_EXEC:
		if (!t->aborted && !t->tmf) {
			t->tmf = m;
			m->waiting++;
		}
		t->aborted = true;
		break;
	case TASK_HELD:
		/* Keeps its place in CmdSN order; dropped when its turn comes. */
		t->aborted = true;
		break;
	case TASK_RECEIVING:
		task_discard(c, t);
		break;
	case TASK_SENDING:
		break;
	}
}

/* Abort every task on @lun (or all when @all). */
static void abort_matching(struct iscsi_conn *c, const uint8_t *lun_raw, bool all,
			   struct iscsi_tmf *m)
{
	for (unsigned b = 0; b < ISCSI_TASK_BUCKETS; b++) {
		struct iscsi_task *t = c->tasks[b];
		while (t) {
			struct iscsi_task *next = t->hnext;
			if (all || memcmp(t->lun_raw, lun_raw, 8) == 0)
				abort_one(c, t, m);
			t = next;
		}
	}
}

static struct tnd_scsi_lu *lu_of(struct iscsi_conn *c, const uint8_t *lun_raw)
{
	uint64_t lun;
	if (tnd_iscsi_lun_decode(lun_raw, &lun) < 0)
		return NULL;
	return tnd_iscsi_view_lu(c, lun);
}

struct tmf_req {
	const uint8_t *lun_raw;
	uint32_t ref_itt;
	uint32_t ref_cmd_sn;
	uint32_t cmd_sn;
};

typedef uint8_t (*tmf_fn)(struct iscsi_conn *c, const struct tmf_req *r, struct iscsi_tmf *m);

static uint8_t tmf_abort_task(struct iscsi_conn *c, const struct tmf_req *r, struct iscsi_tmf *m)
{
	struct iscsi_task *t = task_find(c, r->ref_itt);
	if (t && memcmp(t->lun_raw, r->lun_raw, 8) == 0) {
		abort_one(c, t, m);
		return ISCSI_TMF_RSP_COMPLETE;
	}
	/*
	 * RFC 7143 11.5.1: a task we never saw whose RefCmdSN is inside the
	 * window and before this request counts as received and aborted;
	 * otherwise it has already completed (or never existed).
	 */
	if (tnd_iscsi_cmdsn_check(c->exp_cmd_sn, c->max_cmd_sn, r->ref_cmd_sn) !=
		    TND_ISCSI_CMDSN_OUTSIDE &&
	    tnd_iscsi_sn_lt(r->ref_cmd_sn, r->cmd_sn))
		return ISCSI_TMF_RSP_COMPLETE;
	return ISCSI_TMF_RSP_NO_TASK;
}

static uint8_t tmf_abort_task_set(struct iscsi_conn *c, const struct tmf_req *r,
				  struct iscsi_tmf *m)
{
	if (!lu_of(c, r->lun_raw))
		return ISCSI_TMF_RSP_NO_LUN;
	abort_matching(c, r->lun_raw, false, m);
	return ISCSI_TMF_RSP_COMPLETE;
}

static uint8_t tmf_lun_reset(struct iscsi_conn *c, const struct tmf_req *r, struct iscsi_tmf *m)
{
	struct tnd_scsi_lu *lu = lu_of(c, r->lun_raw);
	if (!lu)
		return ISCSI_TMF_RSP_NO_LUN;
	abort_matching(c, r->lun_raw, false, m);
	tnd_scsi_lu_reset(lu);
	return ISCSI_TMF_RSP_COMPLETE;
}

static uint8_t tmf_target_warm_reset(struct iscsi_conn *c, const struct tmf_req *r,
				     struct iscsi_tmf *m)
{
	abort_matching(c, NULL, true, m);
	for (unsigned i = 0; i < c->view_nr; i++)
		tnd_scsi_lu_reset(c->view[i].lu);
	return ISCSI_TMF_RSP_COMPLETE;
}

static const tmf_fn tmf_fns[] = {
	[ISCSI_TMF_ABORT_TASK] = tmf_abort_task,
	[ISCSI_TMF_ABORT_TASK_SET] = tmf_abort_task_set,
	/* Our task sets are per I_T nexus (one session), so clearing the task
	 * set is aborting this session's tasks on the LU. */
	[ISCSI_TMF_CLEAR_TASK_SET] = tmf_abort_task_set,
	[ISCSI_TMF_LUN_RESET] = tmf_lun_reset,
	[ISCSI_TMF_TARGET_WARM_RESET] = tmf_target_warm_reset,
};

void tnd_iscsi_tmf_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	const uint8_t *b = h->bhs;
	unsigned fn = b[1] & 0x7f;
	if (!(b[1] & ISCSI_FLAG_FINAL)) {
		tnd_iscsi_reject(c, b, ISCSI_REJECT_PROTOCOL);
		return;
	}
	struct tmf_req r = {
		.lun_raw = b + ISCSI_OFF_LUN,
		.ref_itt = tnd_get_be32(b + ISCSI_OFF_TTT),
		.cmd_sn = tnd_get_be32(b + ISCSI_OFF_CMDSN),
		.ref_cmd_sn = tnd_get_be32(b + 32),
	};
	if (!h->immediate)
		tnd_iscsi_cmdsn_consume(c, h);
	struct iscsi_tmf *m = calloc(1, sizeof(*m));
	if (!m) {
		tnd_iscsi_reject(c, b, ISCSI_REJECT_LONG_OP);
		return;
	}
	m->itt = h->itt;
	m->waiting = 1;   /* held by us until the function has run */
	if (fn < TND_ARRAY_SIZE(tmf_fns) && tmf_fns[fn])
		m->response = tmf_fns[fn](c, &r, m);
	else
		m->response = ISCSI_TMF_RSP_NOT_SUPPORTED;
	tnd_debug(TAG, "%s: TMF %u -> %u (waiting for %u)", c->peer_str, fn, m->response,
		  m->waiting - 1);
	if (--m->waiting == 0)
		tmf_respond(c, m);
}

/* ---- logout ---- */

void tnd_iscsi_logout_progress(struct iscsi_conn *c)
{
	if (!c->logout_pending || c->nr_exec > 0 || c->state == CONN_CLOSING)
		return;
	c->logout_pending = false;
	struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_LOGOUT_RSP);
	if (!tx)
		return;
	tx->hdr[1] = ISCSI_FLAG_FINAL;
	tx->hdr[2] = c->logout_response;
	tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, c->logout_itt);
	tnd_iscsi_fill_sn(c, tx->hdr, true);
	tnd_put_be16(tx->hdr + 40, 0);  /* Time2Wait */
	tnd_put_be16(tx->hdr + 42, 0);  /* Time2Retain */
	tx->close_after = true;
	tnd_iscsi_tx_queue(c, tx);
}

void tnd_iscsi_logout_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	const uint8_t *b = h->bhs;
	unsigned reason = b[1] & 0x7f;
	uint16_t cid = tnd_get_be16(b + 20);
	if (!h->immediate)
		tnd_iscsi_cmdsn_consume(c, h);
	if (reason > ISCSI_LOGOUT_RECOVERY) {
		tnd_iscsi_reject(c, b, ISCSI_REJECT_PROTOCOL);
		return;
	}
	uint8_t response = ISCSI_LOGOUT_RSP_OK;
	if (reason == ISCSI_LOGOUT_RECOVERY)
		response = ISCSI_LOGOUT_RSP_NO_RECOVERY;
	else if (reason == ISCSI_LOGOUT_CLOSE_CONN && cid != c->cid)
		response = ISCSI_LOGOUT_RSP_NO_CID;
	c->logout_itt = h->itt;
	c->logout_response = response;
	if (response != ISCSI_LOGOUT_RSP_OK) {
		struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_LOGOUT_RSP);
		if (!tx)
			return;
		tx->hdr[1] = ISCSI_FLAG_FINAL;
		tx->hdr[2] = response;
		tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, h->itt);
		tnd_iscsi_fill_sn(c, tx->hdr, true);
		tnd_iscsi_tx_queue(c, tx);
		return;
	}
	/* Tasks still waiting for data or their turn end here; those at the
	 * SCSI layer are waited for, then we answer and close. */
	for (unsigned bk = 0; bk < ISCSI_TASK_BUCKETS; bk++) {
		struct iscsi_task *t = c->tasks[bk];
		while (t) {
			struct iscsi_task *next = t->hnext;
			if (t->state == TASK_HELD || t->state == TASK_RECEIVING)
				task_discard(c, t);
			t = next;
		}
	}
	c->logout_pending = true;
	tnd_iscsi_logout_progress(c);
}
