/*
 * A connection's life: receive, send, dispatch, liveness, teardown.
 *
 * Receive. One recv at a time per connection, into a per-connection
 * buffer; every completion parses as many whole PDUs as the buffer holds
 * before the next recv is posted, so a burst of small PDUs costs one
 * system call. When a PDU's data segment belongs in a command's buffer
 * (immediate data, Data-Out), the opcode's dest() hook names that buffer:
 * what is already in the receive buffer is copied there and the rest of
 * the segment is received straight into it (RX_DIRECT), so large writes
 * are not staged through the receive buffer. Other PDUs must fit whole in
 * the receive buffer, which grows to at most one PDU of the negotiated
 * MaxRecvDataSegmentLength: a peer cannot make us allocate more.
 *
 * Send. PDUs are queued in order on txq; one sendmsg at a time carries up
 * to ISCSI_TX_BATCH of them (header, data and trailer as iovecs, data
 * borrowed from the command buffer). A short send resumes where it
 * stopped, so the byte stream keeps the queue's order. The sendmsg is
 * built at the end of the reactor's loop turn (tnd_reactor_defer),
 * not when the first PDU is queued, so every response completed in one turn
 * leaves in the same system call.
 *
 * Dispatch. rx_ops[] is indexed by opcode with one named slot per request
 * type; each says in which phases it is legal and which handler runs.
 *
 * Placement. When a normal session's login reaches full feature phase its
 * reactor is chosen (tnd_target.h); to move, the connection parses nothing
 * after the final Login Request and posts no recv, and the completion of
 * the send that carries the final Login Response, with nothing else
 * queued, hands it over (move_now): nothing of it is then in flight, and
 * bytes the initiator sent early stay in the receive buffer (heap memory,
 * not the reactor's pool) and are parsed on the new reactor.
 *
 * Teardown. tnd_iscsi_conn_close() shuts the socket down (which completes
 * the pending recv and send) and the last of recv, send and in-flight SCSI
 * commands to finish frees the connection, on its reactor.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "tnd_common.h"
#include "iscsi_conn.h"
#include "iscsi_pool.h"

#define TAG "iscsi"
#define RX_INITIAL (16u * 1024)
#define TX_FREE_MAX 256
/*
 * Backpressure: a peer that sends requests but does not read our answers
 * (NOP-Out echoes, Rejects, text) would make the send queue grow without
 * end. Past these marks we stop parsing and reading until it drains.
 */
#define TX_BACKLOG_PDUS 16384u
#define TX_BACKLOG_BYTES (4u << 20)

static bool tx_backlogged(const struct iscsi_conn *c)
{
	return c->tx_count > TX_BACKLOG_PDUS || c->tx_owned_bytes > TX_BACKLOG_BYTES;
}

static void process_rx(struct iscsi_conn *c);
static void post_recv(struct iscsi_conn *c);
static void move_now(struct iscsi_conn *c);

/* ---- send ---- */

struct iscsi_tx *tnd_iscsi_tx_new(struct iscsi_conn *c, uint8_t opcode)
{
	struct iscsi_tx *tx = c->tx_free;
	if (tx) {
		c->tx_free = tx->next;
		c->tx_free_count--;
		memset(tx, 0, sizeof(*tx));
	} else {
		tx = calloc(1, sizeof(*tx));
		if (!tx) {
			tnd_iscsi_conn_close(c, "out of memory");
			return NULL;
		}
	}
	tx->hdr[0] = opcode;
	return tx;
}

static void tx_release(struct iscsi_conn *c, struct iscsi_tx *tx)
{
	if (tx->queued) {
		c->tx_count--;
		if (tx->owned)
			c->tx_owned_bytes -= tx->data_len;
	}
	if (tx->task)
		tnd_iscsi_task_put(tx->task);
	free(tx->owned);
	if (c->tx_free_count < TX_FREE_MAX) {
		tx->next = c->tx_free;
		c->tx_free = tx;
		c->tx_free_count++;
	} else {
		free(tx);
	}
}

void tnd_iscsi_tx_drop(struct iscsi_conn *c, struct iscsi_tx *tx)
{
	tx_release(c, tx);
}

static void tx_kick(struct iscsi_conn *c);

/* Build the next sendmsg at the end of this loop turn. */
static void tx_schedule(struct iscsi_conn *c)
{
	if (c->send_inflight || !c->txq || c->state == CONN_CLOSING || c->tx_defer.queued)
		return;
	c->inflight++; /* the connection outlives the deferred kick */
	tnd_reactor_defer(c->rc->reactor, &c->tx_defer);
}

static void tx_deferred(struct tnd_defer *d)
{
	struct iscsi_conn *c = tnd_container_of(d, struct iscsi_conn, tx_defer);
	c->inflight--;
	tx_kick(c);
	tnd_iscsi_conn_maybe_free(c);
}

static void send_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	struct iscsi_conn *c = tnd_container_of(op, struct iscsi_conn, send_op);
	c->send_inflight = false;
	c->inflight--;
	if (res <= 0 || c->state == CONN_CLOSING) {
		if (res < 0 && res != -EPIPE && res != -ECONNRESET)
			tnd_debug(TAG, "%s: send: %s", c->peer_str, strerror(-res));
		tnd_iscsi_conn_close(c, "send failed");
		tnd_iscsi_conn_maybe_free(c);
		return;
	}
	/* Skip what was sent; a short send resumes mid-iovec. */
	size_t left = (size_t)res;
	while (left > 0 && c->msg.msg_iovlen > 0) {
		struct iovec *v = c->msg.msg_iov;
		if (left >= v->iov_len) {
			left -= v->iov_len;
			c->msg.msg_iov++;
			c->msg.msg_iovlen--;
		} else {
			v->iov_base = (char *)v->iov_base + left;
			v->iov_len -= left;
			left = 0;
		}
	}
	if (c->msg.msg_iovlen > 0) {
		struct io_uring_sqe *sqe = tnd_reactor_sqe(c->rc->reactor, &c->send_op);
		if (!sqe) {
			tnd_iscsi_conn_close(c, "ring full");
			tnd_iscsi_conn_maybe_free(c);
			return;
		}
		io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
		c->send_inflight = true;
		c->inflight++;
		return;
	}
	bool close_after = false;
	for (unsigned i = 0; i < c->tx_sending; i++) {
		struct iscsi_tx *tx = c->txq;
		c->txq = tx->next;
		if (!c->txq)
			c->txq_tail = NULL;
		close_after |= tx->close_after;
		tx_release(c, tx);
	}
	c->tx_sending = 0;
	if (close_after) {
		tnd_iscsi_conn_close(c, "logout or login failure");
		tnd_iscsi_conn_maybe_free(c);
		return;
	}
	tx_schedule(c);
	if (c->move_to && !c->txq) {
		/* The final login response is out: the quiescent point. */
		move_now(c);
		return;
	}
	if (c->rx_paused && !tx_backlogged(c)) {
		c->rx_paused = false;
		process_rx(c);
		post_recv(c);
	}
}

static void tx_kick(struct iscsi_conn *c)
{
	if (c->send_inflight || !c->txq || c->state == CONN_CLOSING)
		return;
	unsigned n = 0, iovcnt = 0;
	bool stop = false;
	for (struct iscsi_tx *tx = c->txq; tx && n < ISCSI_TX_BATCH && !stop; tx = tx->next) {
		c->iov[iovcnt++] = (struct iovec){ tx->hdr, tx->hdr_len };
		if (tx->data_len) {
			c->iov[iovcnt++] = (struct iovec){ (void *)tx->data, tx->data_len };
			if (tx->trailer_len)
				c->iov[iovcnt++] = (struct iovec){ tx->trailer, tx->trailer_len };
		}
		n++;
		/* Nothing may follow a PDU after which we close. */
		stop = tx->close_after;
	}
	struct io_uring_sqe *sqe = tnd_reactor_sqe(c->rc->reactor, &c->send_op);
	if (!sqe) {
		tnd_iscsi_conn_close(c, "ring full");
		return;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->iov;
	c->msg.msg_iovlen = iovcnt;
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	c->tx_sending = n;
	c->send_inflight = true;
	c->inflight++;
}

void tnd_iscsi_tx_queue(struct iscsi_conn *c, struct iscsi_tx *tx)
{
	tnd_put_be24(tx->hdr + ISCSI_OFF_DSL, tx->data_len);
	tx->hdr_len = ISCSI_BHS_LEN;
	if (c->lim.header_digest) {
		tnd_iscsi_digest_put(tx->hdr + ISCSI_BHS_LEN, tnd_crc32c(0, tx->hdr, ISCSI_BHS_LEN));
		tx->hdr_len += ISCSI_DIGEST_LEN;
	}
	if (tx->data_len) {
		uint32_t pad = tnd_iscsi_pad4(tx->data_len);
		memset(tx->trailer, 0, pad);
		tx->trailer_len = pad;
		if (c->lim.data_digest) {
			uint32_t crc = tnd_crc32c(0, tx->data, tx->data_len);
			crc = tnd_crc32c(crc, tx->trailer, pad);
			tnd_iscsi_digest_put(tx->trailer + pad, crc);
			tx->trailer_len += ISCSI_DIGEST_LEN;
		}
	}
	tx->next = NULL;
	tx->queued = true;
	c->tx_count++;
	if (tx->owned)
		c->tx_owned_bytes += tx->data_len;
	if (c->txq_tail)
		c->txq_tail->next = tx;
	else
		c->txq = tx;
	c->txq_tail = tx;
	tx_schedule(c);
}

void tnd_iscsi_update_window(struct iscsi_conn *c)
{
	c->max_cmd_sn = tnd_iscsi_max_cmdsn(c->exp_cmd_sn, c->max_cmd_sn, ISCSI_QUEUE_DEPTH,
					    c->outstanding);
}

void tnd_iscsi_fill_sn(struct iscsi_conn *c, uint8_t *hdr, bool advance)
{
	tnd_iscsi_update_window(c);
	tnd_put_be32(hdr + ISCSI_OFF_CMDSN, advance ? c->stat_sn++ : c->stat_sn);
	tnd_put_be32(hdr + ISCSI_OFF_EXPSTATSN, c->exp_cmd_sn);
	tnd_put_be32(hdr + ISCSI_OFF_MAXCMDSN, c->max_cmd_sn);
}

void tnd_iscsi_reject(struct iscsi_conn *c, const uint8_t *bhs, uint8_t reason)
{
	struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_REJECT);
	if (!tx)
		return;
	tx->owned = malloc(ISCSI_BHS_LEN);
	if (!tx->owned) {
		tx_release(c, tx);
		tnd_iscsi_conn_close(c, "out of memory");
		return;
	}
	memcpy(tx->owned, bhs, ISCSI_BHS_LEN);
	tx->data = (const uint8_t *)tx->owned;
	tx->data_len = ISCSI_BHS_LEN;
	tx->hdr[1] = ISCSI_FLAG_FINAL;
	tx->hdr[2] = reason;
	tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, ISCSI_RSVD_TAG);
	tnd_iscsi_fill_sn(c, tx->hdr, true);
	tnd_debug(TAG, "%s: reject opcode 0x%02x reason 0x%02x", c->peer_str,
		  bhs[0] & ISCSI_OP_MASK, reason);
	tnd_iscsi_tx_queue(c, tx);
}

/* ---- NOP ---- */

static void nop_out_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	uint32_t ttt = tnd_get_be32(h->bhs + ISCSI_OFF_TTT);
	if (!h->immediate)
		tnd_iscsi_cmdsn_consume(c, h);
	if (h->itt == ISCSI_RSVD_TAG) {
		/* An answer to our ping, or a bare CmdSN/ExpStatSN update. */
		if (ttt != ISCSI_RSVD_TAG && c->ping_outstanding && ttt == c->ping_ttt)
			c->ping_outstanding = false;
		return;
	}
	if (ttt != ISCSI_RSVD_TAG) {
		tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_PROTOCOL);
		return;
	}
	struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_NOP_IN);
	if (!tx)
		return;
	uint32_t len = TND_MIN(h->data_len, c->ng.params.max_xmit_dsl);
	if (len) {
		tx->owned = malloc(len);
		if (!tx->owned) {
			tx_release(c, tx);
			tnd_iscsi_conn_close(c, "out of memory");
			return;
		}
		memcpy(tx->owned, data, len);
		tx->data = (const uint8_t *)tx->owned;
		tx->data_len = len;
	}
	tx->hdr[1] = ISCSI_FLAG_FINAL;
	memcpy(tx->hdr + ISCSI_OFF_LUN, h->bhs + ISCSI_OFF_LUN, 8);
	tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, h->itt);
	tnd_put_be32(tx->hdr + ISCSI_OFF_TTT, ISCSI_RSVD_TAG);
	tnd_iscsi_fill_sn(c, tx->hdr, true);
	tnd_iscsi_tx_queue(c, tx);
}

static void send_ping(struct iscsi_conn *c)
{
	struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_NOP_IN);
	if (!tx)
		return;
	c->ping_ttt = c->next_ttt++;
	if (c->ping_ttt == ISCSI_RSVD_TAG)
		c->ping_ttt = c->next_ttt++;
	tx->hdr[1] = ISCSI_FLAG_FINAL;
	tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, ISCSI_RSVD_TAG);
	tnd_put_be32(tx->hdr + ISCSI_OFF_TTT, c->ping_ttt);
	/* An unsolicited NOP-In does not advance StatSN. */
	tnd_iscsi_fill_sn(c, tx->hdr, false);
	c->ping_outstanding = true;
	tnd_iscsi_tx_queue(c, tx);
}

static uint64_t nop_interval_ns(const struct iscsi_conn *c)
{
	return (uint64_t)c->srv->nop_interval_s * 1000000000ull;
}

/*
 * Every interval: a connection idle for a whole interval gets a ping; a
 * ping still unanswered one interval later closes the connection. A
 * connection still in login after a few intervals is dropped, so
 * half-open logins don't pin memory.
 */
static void nop_timer_fired(struct tnd_timer *t)
{
	struct iscsi_conn *c = tnd_container_of(t, struct iscsi_conn, nop_timer);
	uint64_t now = tnd_now_ns(), iv = nop_interval_ns(c);
	if (c->state == CONN_CLOSING)
		return;
	if (c->state == CONN_LOGIN) {
		if (now - c->last_rx_ns >= 3 * iv) {
			tnd_iscsi_conn_close(c, "login timed out");
			tnd_iscsi_conn_maybe_free(c);
			return;
		}
	} else if (c->ping_outstanding) {
		tnd_warn(TAG, "%s: ping unanswered, closing", c->peer_str);
		tnd_iscsi_conn_close(c, "ping timeout");
		tnd_iscsi_conn_maybe_free(c);
		return;
	} else if (now - c->last_rx_ns >= iv) {
		send_ping(c);
	}
	tnd_reactor_timer_arm(c->rc->reactor, &c->nop_timer, iv);
}

/* ---- dispatch ---- */

enum {
	PH_LOGIN = 1u << 0,
	PH_NORMAL = 1u << 1,
	PH_DISCOVERY = 1u << 2,
};

struct rx_op {
	const char *name;
	unsigned phases;
	/* Optional: name the task buffer the data segment goes to. */
	int (*dest)(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, uint8_t **dest);
	void (*handle)(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data);
};

static void snack_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	/* ErrorRecoveryLevel 0: there is nothing to retransmit from. */
	tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_SNACK);
}

static const struct rx_op rx_ops[ISCSI_OP_MASK + 1] = {
	[ISCSI_OP_NOP_OUT] = { "NOP-Out", PH_NORMAL | PH_DISCOVERY, NULL, nop_out_rx },
	[ISCSI_OP_SCSI_CMD] = { "SCSI Command", PH_NORMAL, tnd_iscsi_cmd_dest, tnd_iscsi_cmd_rx },
	[ISCSI_OP_TMF_REQ] = { "Task Management", PH_NORMAL, NULL, tnd_iscsi_tmf_rx },
	[ISCSI_OP_LOGIN_REQ] = { "Login", PH_LOGIN, NULL, tnd_iscsi_login_rx },
	[ISCSI_OP_TEXT_REQ] = { "Text", PH_NORMAL | PH_DISCOVERY, NULL, tnd_iscsi_text_rx },
	[ISCSI_OP_DATA_OUT] = { "Data-Out", PH_NORMAL, tnd_iscsi_data_out_dest,
				tnd_iscsi_data_out_rx },
	[ISCSI_OP_LOGOUT_REQ] = { "Logout", PH_NORMAL | PH_DISCOVERY, NULL, tnd_iscsi_logout_rx },
	[ISCSI_OP_SNACK] = { "SNACK", PH_NORMAL, NULL, snack_rx },
};

static unsigned conn_phase(const struct iscsi_conn *c)
{
	if (c->state == CONN_LOGIN)
		return PH_LOGIN;
	return c->discovery ? PH_DISCOVERY : PH_NORMAL;
}

/* A PDU not legal now: a login failure during login, else a Reject. */
static bool phase_ok(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const struct rx_op *op)
{
	unsigned ph = conn_phase(c);
	if (op->handle && (op->phases & ph))
		return true;
	if (ph == PH_LOGIN) {
		tnd_iscsi_login_fail(c, ISCSI_LOGIN_INVALID_REQUEST);
	} else if (!op->handle) {
		/* Target opcodes sent to us, or unassigned ones. */
		tnd_iscsi_reject(c, h->bhs, h->opcode >= 0x20 ? ISCSI_REJECT_PROTOCOL
							      : ISCSI_REJECT_CMD_NOT_SUPPORTED);
	} else if (h->opcode == ISCSI_OP_LOGIN_REQ) {
		/* A login in full feature phase is a protocol error (RFC 7143 7.1.1). */
		tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_PROTOCOL);
		tnd_iscsi_conn_close(c, "login PDU in full feature phase");
	} else {
		tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_PROTOCOL);
	}
	return false;
}

static void dispatch(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	const struct rx_op *op = &rx_ops[h->opcode];
	if (c->logout_pending && h->opcode != ISCSI_OP_DATA_OUT) {
		tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_WAITING_LOGOUT);
		return;
	}
	if (!phase_ok(c, h, op))
		return;
	op->handle(c, h, data);
}

/* ---- receive ---- */

/* Make room for @need bytes of one PDU at the start of the buffer. */
static int rx_reserve(struct iscsi_conn *c, size_t need)
{
	if (c->rx_off > 0) {
		memmove(c->rxbuf, c->rxbuf + c->rx_off, c->rx_len - c->rx_off);
		c->rx_len -= c->rx_off;
		c->rx_off = 0;
	}
	if (need <= c->rx_cap)
		return 0;
	uint8_t *b = realloc(c->rxbuf, need);
	if (!b)
		return -ENOMEM;
	c->rxbuf = b;
	c->rx_cap = need;
	return 0;
}

static void rx_error(struct iscsi_conn *c, const uint8_t *bhs, int err)
{
	switch (err) {
	case TND_ISCSI_EHDR_DIGEST:
		/* Nothing in a corrupt header can be trusted, not even its length. */
		tnd_warn(TAG, "%s: header digest error, closing", c->peer_str);
		break;
	case TND_ISCSI_EAHS:
		tnd_iscsi_reject(c, bhs, ISCSI_REJECT_INVALID_FIELD);
		break;
	case TND_ISCSI_ETOO_LONG:
		if (c->state == CONN_LOGIN)
			tnd_iscsi_login_fail(c, ISCSI_LOGIN_INITIATOR_ERROR);
		else
			tnd_iscsi_reject(c, bhs, ISCSI_REJECT_PROTOCOL);
		break;
	case TND_ISCSI_EDATA_DIGEST:
		/* At ErrorRecoveryLevel 0 the task cannot be recovered. */
		tnd_iscsi_reject(c, bhs, ISCSI_REJECT_DATA_DIGEST);
		break;
	}
	/* The byte stream can no longer be followed; the Reject (if any) is
	 * sent before the connection goes. */
	if (c->txq_tail && c->state != CONN_CLOSING)
		c->txq_tail->close_after = true;
	else
		tnd_iscsi_conn_close(c, "receive error");
}

/* The data segment is complete in the task buffer: check the trailer and dispatch. */
static void rx_finish_direct(struct iscsi_conn *c, const uint8_t *trailer)
{
	c->cur.bhs = c->cur_bhs;
	int ret = tnd_iscsi_data_check(&c->cur, &c->lim, c->cur_dest, trailer);
	c->rx_state = RX_HDR;
	if (ret < 0) {
		rx_error(c, c->cur_bhs, ret);
		return;
	}
	dispatch(c, &c->cur, c->cur_dest);
	c->cur_dest = NULL;
	c->cur_task = NULL;
}

static void process_rx(struct iscsi_conn *c)
{
	/* Nothing after a login that moves the connection: what follows is
	 * parsed on the new reactor, with its buffers. */
	while (c->state != CONN_CLOSING && c->rx_state != RX_DIRECT && !c->draining &&
	       !c->move_to && !(c->txq_tail && c->txq_tail->close_after)) {
		if (tx_backlogged(c)) {
			c->rx_paused = true;
			break;
		}
		const uint8_t *p = c->rxbuf + c->rx_off;
		size_t avail = c->rx_len - c->rx_off;

		if (c->rx_state == RX_TRAILER) {
			if (avail < c->cur.trailer_len)
				break;
			c->rx_off += c->cur.trailer_len;
			rx_finish_direct(c, p);
			continue;
		}

		struct tnd_iscsi_hdr h;
		int ret = tnd_iscsi_hdr_decode(p, avail, &c->lim, &h);
		if (ret == 0) {
			size_t need = avail < ISCSI_BHS_LEN ? ISCSI_BHS_LEN : h.hdr_len;
			if (rx_reserve(c, need) < 0)
				tnd_iscsi_conn_close(c, "out of memory");
			break;
		}
		if (ret < 0) {
			rx_error(c, p, ret);
			break;
		}
		c->last_rx_ns = tnd_now_ns();

		uint8_t *dest = NULL;
		const struct rx_op *op = &rx_ops[h.opcode];
		/* dest() may create state (a task): run it once per PDU, not
		 * again when we come back for the rest of a buffered segment. */
		if (!c->rx_dest_done) {
			c->cur_task = NULL;
			if (h.data_len && op->dest && (op->phases & conn_phase(c)) &&
			    !c->logout_pending)
				op->dest(c, &h, &dest);
			if (c->state == CONN_CLOSING)
				break;
		}

		if (dest) {
			/* Copy what came with the header, receive the rest in place. */
			memcpy(c->cur_bhs, p, ISCSI_BHS_LEN);
			c->cur = h;
			c->cur.bhs = c->cur_bhs;
			c->cur_dest = dest;
			size_t have = TND_MIN(avail - h.hdr_len, (size_t)h.data_len);
			memcpy(dest, p + h.hdr_len, have);
			c->cur_got = (uint32_t)have;
			c->rx_off += h.hdr_len + have;
			c->rx_state = c->cur_got < h.data_len ? RX_DIRECT : RX_TRAILER;
			continue;
		}

		if (avail < h.total_len) {
			c->rx_dest_done = true;
			if (rx_reserve(c, h.total_len) < 0)
				tnd_iscsi_conn_close(c, "out of memory");
			break;
		}
		c->rx_dest_done = false;
		const uint8_t *data = p + h.hdr_len;
		ret = tnd_iscsi_data_check(&h, &c->lim, data, data + h.data_len);
		c->rx_off += h.total_len;
		if (ret < 0) {
			rx_error(c, p, ret);
			break;
		}
		/* The handler may queue PDUs but never touches rxbuf, so @p stays valid. */
		dispatch(c, &h, data);
	}
	if (c->rx_off == c->rx_len)
		c->rx_off = c->rx_len = 0;
}

static void recv_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	struct iscsi_conn *c = tnd_container_of(op, struct iscsi_conn, recv_op);
	c->recv_inflight = false;
	c->inflight--;
	if (c->state == CONN_CLOSING || res <= 0) {
		if (res < 0 && res != -ECONNRESET && c->state != CONN_CLOSING)
			tnd_debug(TAG, "%s: recv: %s", c->peer_str, strerror(-res));
		tnd_iscsi_conn_close(c, res == 0 ? "peer closed" : "recv failed");
		tnd_iscsi_conn_maybe_free(c);
		return;
	}
	c->last_rx_ns = tnd_now_ns();
	if (c->rx_state == RX_DIRECT) {
		c->cur_got += (uint32_t)res;
		if (c->cur_got == c->cur.data_len)
			c->rx_state = RX_TRAILER;
	} else {
		c->rx_len += (size_t)res;
	}
	process_rx(c);
	if (c->state != CONN_CLOSING)
		post_recv(c);
	tnd_iscsi_conn_maybe_free(c);
}

static void post_recv(struct iscsi_conn *c)
{
	if (c->recv_inflight || c->state == CONN_CLOSING || c->move_to)
		return;
	/* After a PDU that ends the connection, read nothing more; while the
	 * peer is not reading our answers, read nothing either. */
	if ((c->txq_tail && c->txq_tail->close_after) || c->rx_paused)
		return;
	void *buf;
	size_t len;
	if (c->rx_state == RX_DIRECT) {
		buf = c->cur_dest + c->cur_got;
		len = c->cur.data_len - c->cur_got;
	} else {
		/* Slide the unparsed tail down when the free space gets small. */
		if (c->rx_off > 0 && c->rx_cap - c->rx_len < c->rx_cap / 4)
			(void)rx_reserve(c, 0);
		if (c->rx_len == c->rx_cap && rx_reserve(c, c->rx_cap) < 0) {
			tnd_iscsi_conn_close(c, "out of memory");
			return;
		}
		if (c->rx_len == c->rx_cap) {
			/* Full of one partial PDU that will not grow the buffer
			 * further: process_rx() reserved its size, so this
			 * cannot happen; guard anyway. */
			tnd_iscsi_conn_close(c, "receive buffer full");
			return;
		}
		buf = c->rxbuf + c->rx_len;
		len = c->rx_cap - c->rx_len;
	}
	struct io_uring_sqe *sqe = tnd_reactor_sqe(c->rc->reactor, &c->recv_op);
	if (!sqe) {
		tnd_iscsi_conn_close(c, "ring full");
		return;
	}
	io_uring_prep_recv(sqe, c->fd, buf, len, 0);
	c->recv_inflight = true;
	c->inflight++;
}

/* ---- life ---- */

void tnd_iscsi_conn_start(struct iscsi_conn *c)
{
	c->recv_op.cb = recv_done;
	c->send_op.cb = send_done;
	c->tx_defer.fn = tx_deferred;
	c->nop_timer.fn = nop_timer_fired;
	c->lim.max_data = TND_ISCSI_DEFAULT_DSL;
	c->next_ttt = 1;
	c->last_rx_ns = tnd_now_ns();
	tnd_iscsi_negotiator_init(&c->ng);
	c->rxbuf = malloc(RX_INITIAL);
	if (!c->rxbuf) {
		tnd_iscsi_conn_close(c, "out of memory");
		tnd_iscsi_conn_maybe_free(c);
		return;
	}
	c->rx_cap = RX_INITIAL;
	tnd_reactor_timer_arm(c->rc->reactor, &c->nop_timer, nop_interval_ns(c));
	post_recv(c);
}

void tnd_iscsi_conn_place(struct iscsi_conn *c)
{
	struct iscsi_rctx *to = tnd_iscsi_place(c);
	if (to != c->rc)
		c->move_to = to;
}

/*
 * The send of the final login response completed with nothing more to
 * send: hand the connection to c->move_to, unless something of it is
 * still pending here after all (then, and when a reinstatement's kill is
 * already on its way, it stays and goes on here).
 */
static void move_now(struct iscsi_conn *c)
{
	bool quiet = c->state == CONN_FFP && !c->draining && !c->rc->stopping &&
		     c->inflight == 0 && !c->recv_inflight && !c->send_inflight &&
		     !c->tx_defer.queued && c->nr_live == 0 && c->rx_state == RX_HDR &&
		     !c->spin_wanted;
	if (quiet && tnd_iscsi_conn_move(c) == 0)
		return;   /* @c belongs to the new reactor now */
	if (!quiet)
		tnd_debug(TAG, "%s: not moving a busy connection", c->peer_str);
	c->move_to = NULL;
	if (c->placed && c->placed != c->rc) {
		/* The placement count follows where it stays. */
		atomic_fetch_sub_explicit(&c->placed->nr_sessions, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->rc->nr_sessions, 1, memory_order_relaxed);
		c->placed = c->rc;
	}
	process_rx(c);
	post_recv(c);
	tnd_iscsi_conn_maybe_free(c);
}

void tnd_iscsi_conn_arrive(struct iscsi_conn *c)
{
	/* The view was built from the old reactor's snapshot; the session
	 * reads this one's from now on (the same, or newer after a change,
	 * which then flags REPORTED LUNS DATA HAS CHANGED as it would have
	 * there). */
	int ret = tnd_iscsi_session_view(c);
	if (ret < 0) {
		tnd_info(TAG, "%s: closing session of %s: %s", c->peer_str, c->ng.initiator_name,
			 ret == -ENOENT ? "target removed"
			 : ret == -EACCES ? "initiator no longer admitted"
					  : "out of memory");
		tnd_iscsi_conn_close(c, "configuration change");
		tnd_iscsi_conn_maybe_free(c);
		return;
	}
	tnd_reactor_timer_arm(c->rc->reactor, &c->nop_timer, nop_interval_ns(c));
	/* PDUs the initiator sent before it had our final login response. */
	process_rx(c);
	post_recv(c);
	tnd_iscsi_conn_maybe_free(c);
}

void tnd_iscsi_enter_ffp(struct iscsi_conn *c)
{
	/* Our MaxRecvDataSegmentLength and the digests apply from the first
	 * PDU after the final login response. */
	c->state = CONN_FFP;
	c->lim.max_data = c->ng.params.max_recv_dsl;
	c->lim.header_digest = c->ng.params.header_digest;
	c->lim.data_digest = c->ng.params.data_digest;
}

void tnd_iscsi_conn_close(struct iscsi_conn *c, const char *why)
{
	if (c->state == CONN_CLOSING)
		return;
	tnd_debug(TAG, "%s: closing: %s", c->peer_str, why);
	c->state = CONN_CLOSING;
	tnd_reactor_timer_cancel(c->rc->reactor, &c->nop_timer);
	if (c->spin_wanted) {
		c->spin_wanted = false;
		tnd_reactor_spin_want(c->rc->reactor, false);
	}
	/* Completes the pending recv and send with an error or EOF. */
	shutdown(c->fd, SHUT_RDWR);
}

void tnd_iscsi_conn_check_drained(struct iscsi_conn *c)
{
	if (!c->draining || c->nr_exec > 0 || c->state == CONN_CLOSING)
		return;
	/* Flush what is queued (responses of the last commands), then close. */
	if (c->txq_tail)
		c->txq_tail->close_after = true;
	else
		tnd_iscsi_conn_close(c, "target stopping");
}

void tnd_iscsi_conn_drain(struct iscsi_conn *c)
{
	c->draining = true;
	if (c->state == CONN_LOGIN)
		tnd_iscsi_conn_close(c, "target stopping");
	else
		tnd_iscsi_conn_check_drained(c);
	tnd_iscsi_conn_maybe_free(c);
}

void tnd_iscsi_conn_kill_msg(struct tnd_msg *m)
{
	struct iscsi_conn *c = tnd_container_of(m, struct iscsi_conn, kill_msg);
	pthread_mutex_lock(&c->srv->sess_lock);
	c->kill_sent = false;
	pthread_mutex_unlock(&c->srv->sess_lock);
	if (c->freed) {
		/* Teardown finished while this message was on its way. */
		free(c);
		return;
	}
	tnd_info(TAG, "%s: session reinstated by a new login, closing the old one", c->peer_str);
	tnd_iscsi_conn_close(c, "session reinstatement");
	tnd_iscsi_conn_maybe_free(c);
}

void tnd_iscsi_conn_maybe_free(struct iscsi_conn *c)
{
	if (c->state != CONN_CLOSING || c->inflight > 0 || c->freed)
		return;
	while (c->txq) {
		struct iscsi_tx *tx = c->txq;
		c->txq = tx->next;
		tx_release(c, tx);
	}
	c->txq_tail = NULL;
	tnd_iscsi_tasks_release(c);
	tnd_iscsi_task_cache_drain(c);
	while (c->tx_free) {
		struct iscsi_tx *tx = c->tx_free;
		c->tx_free = tx->next;
		free(tx);
	}
	tnd_iscsi_session_unregister(c);
	if (c->placed)
		atomic_fetch_sub_explicit(&c->placed->nr_sessions, 1, memory_order_relaxed);
	if (c->nexus)
		tnd_scsi_nexus_destroy(c->nexus);
	tnd_iscsi_text_free(&c->text_rsp);
	tnd_iscsi_view_free(c);
	tnd_iscsi_auth_free(c);
	free(c->req_text);
	free(c->rxbuf);
	close(c->fd);

	struct iscsi_rctx *rc = c->rc;
	tnd_iscsi_rctx_unlink(rc, c);

	/* A reinstating login elsewhere may still be sending us a message:
	 * then that message frees the memory. */
	pthread_mutex_lock(&c->srv->sess_lock);
	bool wait = c->kill_sent;
	c->freed = true;
	pthread_mutex_unlock(&c->srv->sess_lock);
	if (!wait)
		free(c);
	tnd_iscsi_rctx_conn_gone(rc);
}
