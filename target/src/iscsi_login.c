/*
 * Login (RFC 7143 sections 6 and 7) and Text requests.
 *
 * A login walks security (optional) -> operational (optional) -> full
 * feature phase. Every Login Request names its current stage (CSG) and,
 * with the T bit, the stage it wants next (NSG); text may span several
 * PDUs with the C bit, each answered by an empty response until the last.
 * The identity keys (InitiatorName, SessionType, TargetName) are checked
 * once, on the first complete request; authentication runs through
 * auth_steps[]: None, or CHAP, whose step() runs the challenge exchange
 * (iscsi_auth.c) over several security-stage PDUs, answering a transit
 * request with T=0 until it is over. Which method a login may use is
 * decided by the initiator's ACL before the keys are negotiated
 * (auth_prepare). On the final transition the session is checked once
 * more against the configuration (target still there, initiator still
 * admitted, CHAP done if required), registered (reinstating an older one
 * of the same initiator port), and gets its LUN view and I_T nexus.
 *
 * Text requests (full feature phase, and all a discovery session may do
 * besides Logout) answer SendTargets and renegotiable keys; an answer
 * longer than the initiator's MaxRecvDataSegmentLength goes out in pieces,
 * each but the last with the C bit and a Target Transfer Tag the initiator
 * echoes in an empty request to get the next.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>

#include "tnd_common.h"
#include "iscsi_conn.h"
#include "iscsi_auth.h"

#define TAG "iscsi"

/* ---- authentication methods ---- */

struct auth_method {
	const char *name;
	/* Run one security-stage step; returns 0 (continue), 1 (done) or a
	 * login status to fail with. May add keys to @resp. */
	int (*step)(struct iscsi_conn *c, struct tnd_iscsi_text *resp);
};

static int auth_none_step(struct iscsi_conn *c, struct tnd_iscsi_text *resp)
{
	return 1;
}

/* The ACL of @initiator on target @iqn in this reactor's configuration. */
static const struct iscsi_acl *login_acl(const struct iscsi_conn *c, const char *initiator,
					 const char *iqn)
{
	const struct iscsi_target *t = tnd_iscsi_cfg_target(c->rc->cfg, iqn);
	return t ? tnd_iscsi_target_acl(t, initiator) : NULL;
}

void tnd_iscsi_auth_free(struct iscsi_conn *c)
{
	if (!c->chap)
		return;
	tnd_iscsi_chap_wipe(c->chap);
	free(c->chap);
	c->chap = NULL;
}

static int auth_chap_step(struct iscsi_conn *c, struct tnd_iscsi_text *resp)
{
	if (!c->chap) {
		/* The credentials are copied now: a change of the ACL during
		 * the exchange does not pull them from under it. */
		const struct iscsi_acl *acl =
			c->discovery ? NULL : login_acl(c, c->ng.initiator_name, c->target_iqn);
		if (!acl || !acl->chap)
			return ISCSI_LOGIN_AUTH_FAILED;
		c->chap = malloc(sizeof(*c->chap));
		if (!c->chap)
			return ISCSI_LOGIN_NO_RESOURCES;
		const struct iscsi_chap_cred *m = acl->mutual;
		if (tnd_iscsi_chap_init(c->chap, acl->chap->user, acl->chap->secret,
					acl->chap->secret_len, m ? m->user : NULL,
					m ? m->secret : NULL, m ? m->secret_len : 0) < 0)
			return ISCSI_LOGIN_AUTH_FAILED;
	}
	const char *const *k = c->ng.chap;
	struct tnd_iscsi_chap_keys keys = {
		.a = k[TND_ISCSI_CHAP_A], .i = k[TND_ISCSI_CHAP_I], .c = k[TND_ISCSI_CHAP_C],
		.n = k[TND_ISCSI_CHAP_N], .r = k[TND_ISCSI_CHAP_R],
	};
	int ret = tnd_iscsi_chap_step(c->chap, &keys, resp);
	if (ret == -EACCES) {
		/* Who failed, never with what. */
		tnd_warn(TAG, "%s: CHAP authentication of %s failed", c->peer_str,
			 c->ng.initiator_name);
		return ISCSI_LOGIN_AUTH_FAILED;
	}
	if (ret < 0)
		return ISCSI_LOGIN_TARGET_ERROR;
	if (ret == 1)
		c->auth_chap = true;
	return ret;
}

static const struct auth_method auth_steps[] = {
	{ .name = "None", .step = auth_none_step },
	{ .name = "CHAP", .step = auth_chap_step },
};

static const struct auth_method *find_auth(const char *name)
{
	for (size_t i = 0; i < TND_ARRAY_SIZE(auth_steps); i++)
		if (strcmp(auth_steps[i].name, name) == 0)
			return &auth_steps[i];
	return NULL;
}

/*
 * Which AuthMethod this login may settle on: CHAP alone when the
 * initiator's ACL on the target requires it, else None alone. Decided
 * before the request's keys are negotiated, since AuthMethod may come in
 * the same request as the names it depends on.
 */
static void auth_prepare(struct iscsi_conn *c, const struct tnd_iscsi_pair *pairs, int n)
{
	const char *ini = c->ng.initiator_name, *iqn = c->ng.target_name;
	bool discovery = c->ng.session_type == TND_ISCSI_SESSION_DISCOVERY;
	for (int i = 0; i < n; i++) {
		if (strcmp(pairs[i].key, "InitiatorName") == 0)
			ini = pairs[i].value;
		else if (strcmp(pairs[i].key, "TargetName") == 0)
			iqn = pairs[i].value;
		else if (strcmp(pairs[i].key, "SessionType") == 0)
			discovery = strcmp(pairs[i].value, "Discovery") == 0;
	}
	const struct iscsi_acl *acl = discovery ? NULL : login_acl(c, ini, iqn);
	c->ng.auth_allowed = acl && acl->chap ? TND_ISCSI_AUTH_CHAP : TND_ISCSI_AUTH_NONE;
}

/* ---- responses ---- */

static struct iscsi_tx *login_rsp_new(struct iscsi_conn *c, uint8_t flags, uint16_t status)
{
	struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_LOGIN_RSP);
	if (!tx)
		return NULL;
	tx->hdr[1] = flags;
	tx->hdr[2] = 0x00;   /* VersionMax */
	tx->hdr[3] = 0x00;   /* VersionActive */
	memcpy(tx->hdr + 8, c->isid, 6);
	tnd_put_be16(tx->hdr + 14, status == ISCSI_LOGIN_OK && (flags & ISCSI_LOGIN_TRANSIT) &&
					   ISCSI_LOGIN_NSG(flags) == ISCSI_STAGE_FULL_FEATURE
				   ? c->tsih : 0);
	tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, c->login_itt);
	tnd_iscsi_fill_sn(c, tx->hdr, true);
	tx->hdr[36] = (uint8_t)(status >> 8);
	tx->hdr[37] = (uint8_t)status;
	return tx;
}

void tnd_iscsi_login_fail(struct iscsi_conn *c, uint16_t status)
{
	if (c->state == CONN_CLOSING)
		return;
	tnd_info(TAG, "%s: login failed with status 0x%04x (initiator %s)", c->peer_str, status,
		 c->ng.initiator_name[0] ? c->ng.initiator_name : "?");
	struct iscsi_tx *tx = login_rsp_new(c, (uint8_t)(c->stage << 2), status);
	if (!tx)
		return;
	tx->close_after = true;
	tnd_iscsi_tx_queue(c, tx);
}

/* ---- identity and session ---- */

static uint16_t check_identity(struct iscsi_conn *c)
{
	struct tnd_iscsi_negotiator *ng = &c->ng;
	if (!ng->initiator_name[0])
		return ISCSI_LOGIN_MISSING_PARAM;
	if (ng->session_type == TND_ISCSI_SESSION_UNSET)
		ng->session_type = TND_ISCSI_SESSION_NORMAL;
	/* One connection per session: adding one to an existing session (a
	 * non-zero TSIH) is answered as for a session we do not have. */
	if (c->tsih != 0)
		return ISCSI_LOGIN_NO_SESSION;
	if (ng->session_type == TND_ISCSI_SESSION_DISCOVERY) {
		c->discovery = true;
		return ISCSI_LOGIN_OK;
	}
	if (!ng->target_name[0])
		return ISCSI_LOGIN_MISSING_PARAM;
	const struct iscsi_target *t = tnd_iscsi_cfg_target(c->rc->cfg, ng->target_name);
	if (!t)
		return ISCSI_LOGIN_NOT_FOUND;
	if (!tnd_iscsi_admitted(t, ng->initiator_name))
		return ISCSI_LOGIN_AUTHZ_FAILED;
	snprintf(c->target_iqn, sizeof(c->target_iqn), "%s", t->iqn);
	return ISCSI_LOGIN_OK;
}

/* Returns a login status: the target may have gone since the first request. */
static uint16_t session_start(struct iscsi_conn *c)
{
	if (!c->discovery) {
		/* An initiator whose ACL requires CHAP gets in only through it,
		 * even when it skipped the security stage. */
		const struct iscsi_acl *acl =
			login_acl(c, c->ng.initiator_name, c->target_iqn);
		if (acl && acl->chap && !c->auth_chap)
			return ISCSI_LOGIN_AUTH_FAILED;
		int ret = tnd_iscsi_session_view(c);
		if (ret == -ENOENT)
			return ISCSI_LOGIN_NOT_FOUND;
		if (ret == -EACCES)
			return ISCSI_LOGIN_AUTHZ_FAILED;
		if (ret < 0)
			return ISCSI_LOGIN_NO_RESOURCES;
		/* A new session starts with the inventory it is about to ask for. */
		c->luns_changed = false;
	}
	c->tsih = tnd_iscsi_session_register(c);
	c->sid = atomic_fetch_add(&c->srv->next_sid, 1);
	c->login_time = (int64_t)time(NULL);
	if (c->discovery)
		return ISCSI_LOGIN_OK;
	/* The SCSI initiator port name of an iSCSI initiator: name,i,0xISID. */
	char port_name[TND_ISCSI_NAME_MAX + 24];
	snprintf(port_name, sizeof(port_name), "%s,i,0x%02x%02x%02x%02x%02x%02x",
		 c->ng.initiator_name, c->isid[0], c->isid[1], c->isid[2], c->isid[3],
		 c->isid[4], c->isid[5]);
	struct tnd_scsi_port port = {
		.target_name = c->target_iqn,
		.tpgt = ISCSI_TPGT,
		.rel_port_id = 1,
	};
	return tnd_scsi_nexus_create(port_name, &port, &c->nexus) < 0 ? ISCSI_LOGIN_NO_RESOURCES
								      : ISCSI_LOGIN_OK;
}

/* ---- text accumulation shared by Login and Text ---- */

static int req_append(struct iscsi_conn *c, const uint8_t *data, uint32_t len)
{
	if (!c->req_text) {
		c->req_text = malloc(TND_ISCSI_TEXT_MAX + 1);
		if (!c->req_text)
			return -ENOMEM;
	}
	if (c->req_len + len > TND_ISCSI_TEXT_MAX)
		return -E2BIG;
	memcpy(c->req_text + c->req_len, data, len);
	c->req_len += len;
	return 0;
}

/* Parse and negotiate the accumulated request text; consumes it. */
static int req_negotiate(struct iscsi_conn *c, unsigned stage_bit, struct tnd_iscsi_text *resp)
{
	struct tnd_iscsi_pair *pairs = malloc(TND_ISCSI_PAIRS_MAX * sizeof(*pairs));
	if (!pairs)
		return -ENOMEM;
	int n = 0;
	if (c->req_len)
		n = tnd_iscsi_text_parse(c->req_text, c->req_len, pairs, TND_ISCSI_PAIRS_MAX);
	c->req_len = 0;
	if (n >= 0 && stage_bit == TND_ISCSI_IN_SECURITY)
		auth_prepare(c, pairs, n);
	int ret = n < 0 ? -EPROTO : tnd_iscsi_negotiate(&c->ng, stage_bit, pairs, (unsigned)n, resp);
	free(pairs);
	return ret;
}

static void login_queue(struct iscsi_conn *c, uint8_t flags, struct tnd_iscsi_text *resp)
{
	struct iscsi_tx *tx = login_rsp_new(c, flags, ISCSI_LOGIN_OK);
	if (!tx) {
		tnd_iscsi_text_free(resp);
		return;
	}
	tx->owned = resp->buf;
	tx->data = (const uint8_t *)resp->buf;
	tx->data_len = (uint32_t)resp->len;
	resp->buf = NULL;
	tnd_iscsi_tx_queue(c, tx);
}

void tnd_iscsi_login_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	const uint8_t *b = h->bhs;
	bool transit = h->flags & ISCSI_LOGIN_TRANSIT;
	bool cont = h->flags & ISCSI_LOGIN_CONT;
	unsigned csg = ISCSI_LOGIN_CSG(h->flags), nsg = ISCSI_LOGIN_NSG(h->flags);

	if (!c->login_started) {
		memcpy(c->isid, b + 8, 6);
		c->tsih = tnd_get_be16(b + 14);
		c->cid = tnd_get_be16(b + 20);
		c->exp_cmd_sn = tnd_get_be32(b + ISCSI_OFF_CMDSN);
		c->max_cmd_sn = c->exp_cmd_sn + ISCSI_QUEUE_DEPTH - 1;
		c->stat_sn = tnd_get_be32(b + ISCSI_OFF_EXPSTATSN);
		c->stage = csg;
		c->login_started = true;
		c->login_itt = h->itt;
		/* VersionMin above ours (0x00): we cannot speak it. */
		if (b[3] > 0x00) {
			tnd_iscsi_login_fail(c, ISCSI_LOGIN_UNSUPPORTED_VERSION);
			return;
		}
		if (csg != ISCSI_STAGE_SECURITY && csg != ISCSI_STAGE_OPERATIONAL) {
			tnd_iscsi_login_fail(c, ISCSI_LOGIN_INITIATOR_ERROR);
			return;
		}
	} else {
		c->login_itt = h->itt;
		if (memcmp(c->isid, b + 8, 6) != 0 || tnd_get_be16(b + 14) != c->tsih ||
		    csg != c->stage) {
			tnd_iscsi_login_fail(c, ISCSI_LOGIN_INITIATOR_ERROR);
			return;
		}
	}
	if ((transit && cont) ||
	    (transit && (nsg <= csg || nsg == 2))) {
		tnd_iscsi_login_fail(c, ISCSI_LOGIN_INITIATOR_ERROR);
		return;
	}
	int ret = req_append(c, data, h->data_len);
	if (ret < 0) {
		tnd_iscsi_login_fail(c, ret == -E2BIG ? ISCSI_LOGIN_INITIATOR_ERROR
						      : ISCSI_LOGIN_NO_RESOURCES);
		return;
	}
	struct tnd_iscsi_text resp = { 0 };
	if (cont) {
		/* More text follows: acknowledge with an empty response. */
		login_queue(c, (uint8_t)(csg << 2), &resp);
		return;
	}

	unsigned stage_bit = csg == ISCSI_STAGE_SECURITY ? TND_ISCSI_IN_SECURITY
							 : TND_ISCSI_IN_OPERATIONAL;
	ret = req_negotiate(c, stage_bit, &resp);
	uint16_t status = ISCSI_LOGIN_OK;
	if (ret == -EPROTO)
		status = ISCSI_LOGIN_INITIATOR_ERROR;
	else if (ret < 0)
		status = ISCSI_LOGIN_TARGET_ERROR;
	else if (!c->login_first_rsp_sent)
		status = check_identity(c);
	if (status != ISCSI_LOGIN_OK)
		goto fail;

	if (csg == ISCSI_STAGE_SECURITY) {
		bool chap_required = c->ng.auth_allowed & TND_ISCSI_AUTH_CHAP;
		if (c->ng.auth_offered) {
			const struct auth_method *m = find_auth(c->ng.auth_method);
			if (!m) {
				status = ISCSI_LOGIN_AUTH_FAILED;
				goto fail;
			}
			int r = m->step(c, &resp);
			if (r > 1) {
				status = (uint16_t)r;
				goto fail;
			}
			c->auth_done = r == 1;
		}
		if (transit && !c->auth_done) {
			if (c->chap && c->chap->state != TND_CHAP_FAILED) {
				/* The exchange is not over: answer with T=0 and
				 * stay in the security stage (RFC 7143 6.3). */
				transit = false;
			} else if (c->ng.auth_offered || chap_required) {
				/* Leaving security without authenticating. */
				status = ISCSI_LOGIN_AUTH_FAILED;
				goto fail;
			}
		}
	}

	if (!c->login_first_rsp_sent) {
		ret = tnd_iscsi_text_add(&resp, "TargetPortalGroupTag", "1");
		const struct iscsi_target *t =
			c->discovery ? NULL : tnd_iscsi_cfg_target(c->rc->cfg, c->target_iqn);
		if (ret == 0 && t && t->alias && t->alias[0])
			ret = tnd_iscsi_text_add(&resp, "TargetAlias", t->alias);
		if (ret < 0) {
			status = ISCSI_LOGIN_TARGET_ERROR;
			goto fail;
		}
		c->login_first_rsp_sent = true;
	}
	/* Operational declarations belong to the operational stage, or to the
	 * final response when the initiator skips it. */
	if (csg == ISCSI_STAGE_OPERATIONAL || (transit && nsg == ISCSI_STAGE_FULL_FEATURE)) {
		if (tnd_iscsi_negotiate_declare(&c->ng, &resp) < 0) {
			status = ISCSI_LOGIN_TARGET_ERROR;
			goto fail;
		}
	}
	uint8_t flags = (uint8_t)(csg << 2);
	if (transit) {
		flags |= ISCSI_LOGIN_TRANSIT | nsg;
		if (nsg == ISCSI_STAGE_FULL_FEATURE) {
			status = session_start(c);
			if (status != ISCSI_LOGIN_OK)
				goto fail;
		}
	}
	login_queue(c, flags, &resp);
	if (transit) {
		c->stage = nsg;
		if (nsg == ISCSI_STAGE_FULL_FEATURE) {
			free(c->req_text);
			c->req_text = NULL;
			tnd_iscsi_auth_free(c);
			tnd_iscsi_enter_ffp(c);
			tnd_info(TAG, "%s: %s session for %s%s%s (TSIH %u)", c->peer_str,
				 c->discovery ? "discovery" : "normal", c->ng.initiator_name,
				 c->discovery ? "" : " to ", c->target_iqn, c->tsih);
			/* Discovery sessions carry no I/O: they stay. */
			if (!c->discovery)
				tnd_iscsi_conn_place(c);
		}
	}
	return;

fail:
	tnd_iscsi_text_free(&resp);
	tnd_iscsi_login_fail(c, status);
}

/* ---- Text ---- */

static void append_address(struct iscsi_conn *c, const struct iscsi_portal *p,
			   struct tnd_iscsi_text *t, int *ret)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *addr = p->addr;
	if (p->wildcard) {
		/* Report the address this connection came in on. */
		char a[INET6_ADDRSTRLEN];
		if (c->local.ss_family == AF_INET6) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&c->local;
			inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
			if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
				snprintf(host, sizeof(host), "%s", a + 7);
			else
				snprintf(host, sizeof(host), "[%s]", a);
		} else {
			const struct sockaddr_in *s4 = (const struct sockaddr_in *)&c->local;
			inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
			snprintf(host, sizeof(host), "%s", a);
		}
		addr = host;
	}
	char v[sizeof(p->addr) + sizeof(host) + 16];
	snprintf(v, sizeof(v), "%s:%d,%d", addr, p->port, ISCSI_TPGT);
	if (*ret == 0)
		*ret = tnd_iscsi_text_add(t, "TargetAddress", v);
}

static int send_targets(struct iscsi_conn *c, const char *which, struct tnd_iscsi_text *t)
{
	const struct tnd_target_server *srv = c->srv;
	const struct iscsi_cfg *cfg = c->rc->cfg;
	int ret = 0;
	for (unsigned i = 0; i < cfg->nr_targets && ret == 0; i++) {
		const struct iscsi_target *tg = cfg->targets[i];
		bool match = strcmp(which, "All") == 0 ? true
			     : which[0] == '\0'        ? !c->discovery && strcmp(tg->iqn, c->target_iqn) == 0
						       : strcmp(which, tg->iqn) == 0;
		/* Only targets this initiator may log in to. */
		if (!match || !tnd_iscsi_admitted(tg, c->ng.initiator_name))
			continue;
		ret = tnd_iscsi_text_add(t, "TargetName", tg->iqn);
		for (unsigned p = 0; p < srv->nr_portals; p++)
			append_address(c, srv->portals[p], t, &ret);
	}
	return ret;
}

/* Send the next piece of the pending text response. */
static void text_send_piece(struct iscsi_conn *c)
{
	struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_TEXT_RSP);
	if (!tx)
		return;
	size_t left = c->text_rsp.len - c->text_rsp_off;
	size_t n = TND_MIN(left, (size_t)c->ng.params.max_xmit_dsl);
	if (n) {
		tx->owned = malloc(n);
		if (!tx->owned) {
			tnd_iscsi_tx_drop(c, tx);
			tnd_iscsi_conn_close(c, "out of memory");
			return;
		}
		memcpy(tx->owned, c->text_rsp.buf + c->text_rsp_off, n);
		tx->data = (const uint8_t *)tx->owned;
		tx->data_len = (uint32_t)n;
	}
	c->text_rsp_off += n;
	bool more = c->text_rsp_off < c->text_rsp.len;
	tx->hdr[1] = more ? ISCSI_FLAG_CONT : ISCSI_FLAG_FINAL;
	tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, c->text_itt);
	if (more) {
		if (!c->text_ttt || c->text_ttt == ISCSI_RSVD_TAG) {
			c->text_ttt = c->next_ttt++;
			if (c->text_ttt == ISCSI_RSVD_TAG)
				c->text_ttt = c->next_ttt++;
		}
		tnd_put_be32(tx->hdr + ISCSI_OFF_TTT, c->text_ttt);
	} else {
		tnd_put_be32(tx->hdr + ISCSI_OFF_TTT, ISCSI_RSVD_TAG);
		tnd_iscsi_text_free(&c->text_rsp);
		c->text_rsp_off = 0;
		c->text_ttt = 0;
	}
	tnd_iscsi_fill_sn(c, tx->hdr, true);
	tnd_iscsi_tx_queue(c, tx);
}

void tnd_iscsi_text_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data)
{
	uint32_t ttt = tnd_get_be32(h->bhs + ISCSI_OFF_TTT);
	bool cont = h->flags & ISCSI_FLAG_CONT;
	if (!h->immediate)
		tnd_iscsi_cmdsn_consume(c, h);

	/* The initiator asks for the next piece of our answer. */
	if (ttt != ISCSI_RSVD_TAG && c->text_rsp.len && ttt == c->text_ttt && h->data_len == 0) {
		c->text_itt = h->itt;
		text_send_piece(c);
		return;
	}
	/* A fresh request (or a continued one of ours) abandons any answer in progress. */
	bool continuing = ttt != ISCSI_RSVD_TAG && c->req_len && ttt == c->text_ttt;
	if (ttt != ISCSI_RSVD_TAG && !continuing) {
		tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_PROTOCOL);
		return;
	}
	tnd_iscsi_text_free(&c->text_rsp);
	c->text_rsp_off = 0;
	c->text_itt = h->itt;
	if (!continuing)
		c->req_len = 0;
	if (req_append(c, data, h->data_len) < 0) {
		c->req_len = 0;
		tnd_iscsi_reject(c, h->bhs, ISCSI_REJECT_PROTOCOL);
		return;
	}
	if (cont) {
		/* Ask for the rest of the request with an empty response. */
		struct iscsi_tx *tx = tnd_iscsi_tx_new(c, ISCSI_OP_TEXT_RSP);
		if (!tx)
			return;
		if (!c->text_ttt || c->text_ttt == ISCSI_RSVD_TAG)
			c->text_ttt = c->next_ttt++;
		tnd_put_be32(tx->hdr + ISCSI_OFF_ITT, h->itt);
		tnd_put_be32(tx->hdr + ISCSI_OFF_TTT, c->text_ttt);
		tnd_iscsi_fill_sn(c, tx->hdr, true);
		tnd_iscsi_tx_queue(c, tx);
		return;
	}
	c->text_ttt = 0;
	/* Answers can be long (SendTargets with many targets): allow more
	 * than a request may carry; it is handed out in pieces. */
	c->text_rsp.limit = 1u << 20;
	int ret = req_negotiate(c, TND_ISCSI_IN_FFP, &c->text_rsp);
	if (ret == 0 && c->ng.has_send_targets)
		ret = send_targets(c, c->ng.send_targets, &c->text_rsp);
	if (ret < 0) {
		tnd_iscsi_text_free(&c->text_rsp);
		tnd_iscsi_reject(c, h->bhs, ret == -EPROTO ? ISCSI_REJECT_PROTOCOL
							   : ISCSI_REJECT_LONG_OP);
		return;
	}
	text_send_piece(c);
}
