/*
 * The target configuration (targets, LUN maps, ACLs) and how it changes
 * while the server runs; the session list and kick.
 *
 * Snapshots. The configuration is an immutable struct iscsi_cfg: an array
 * of immutable struct iscsi_target. A change (map a LUN, set an ACL, ...)
 * never edits what reactors may be reading: it builds a new target object
 * (a deep copy with the change applied) and a new array that shares every
 * untouched target with the old one.
 *
 * Publication. Each reactor serves the snapshot its own rctx->cfg points
 * to, a plain pointer read and written only on that reactor: the I/O path
 * takes no lock and no atomic. After start, a change is published by a
 * "round": one message to every reactor, which switches its pointer,
 * refreshes the LUN view of each of its sessions (setting REPORTED LUNS
 * DATA HAS CHANGED where the view changed, closing sessions whose target is
 * gone or whose initiator is no longer admitted) and acknowledges. The
 * caller (the management thread) waits on a condition variable until
 * every reactor has acknowledged; after that no reactor holds a pointer
 * into the old snapshot (reactors never keep one across callbacks:
 * sessions keep their own copy of what they need, the view), so the old
 * array and the targets only it named are freed. The round is the grace
 * period.
 *
 * Draining. Unmapping a LUN (or removing a target) must not return while
 * a command on the LU is still at the SCSI layer, since the caller may
 * then destroy the volume. After a reactor has switched (so no new
 * command can find the LU), it counts its tasks executing on the LUs
 * being taken away (as the command's LU or, for EXTENDED COPY, as a copy
 * target: tnd_scsi_cmd_uses_lu()), marks them, and acknowledges only
 * when that count falls to zero (cmd_done of a marked task calls
 * tnd_iscsi_cfg_cmd_done()). Only then is the LU freed.
 *
 * Before start there are no sessions: a change is applied directly.
 *
 * Locking: cfg_lock serialises changes (callers: the main thread at
 * set-up, the management thread later). Reactors never take it. A change
 * must not be requested from a reactor thread (it would wait for itself):
 * that returns -EDEADLK.
 *
 * Sessions. sessions_json and kick_session are rounds too: each reactor
 * describes or closes its own connections, so no connection field is ever
 * read from another thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tnd_common.h"
#include "iscsi_conn.h"

#define TAG "iscsi"
#define CHAP_SECRET_MIN 12
#define CHAP_SECRET_MAX 255

/* ---- lookups (reactor side, on a snapshot) ---- */

const struct iscsi_target *tnd_iscsi_cfg_target(const struct iscsi_cfg *cfg, const char *iqn)
{
	if (!cfg)
		return NULL;
	for (unsigned i = 0; i < cfg->nr_targets; i++)
		if (strcmp(cfg->targets[i]->iqn, iqn) == 0)
			return cfg->targets[i];
	return NULL;
}

const struct iscsi_acl *tnd_iscsi_target_acl(const struct iscsi_target *t, const char *initiator)
{
	for (unsigned i = 0; i < t->nr_acls; i++)
		if (strcmp(t->acls[i].initiator, initiator) == 0)
			return &t->acls[i];
	return NULL;
}

bool tnd_iscsi_admitted(const struct iscsi_target *t, const char *initiator)
{
	return t->allow_any || tnd_iscsi_target_acl(t, initiator) != NULL;
}

static bool acl_shows(const struct iscsi_acl *acl, uint64_t lun)
{
	if (!acl || acl->all_luns)
		return true;
	for (unsigned i = 0; i < acl->nr_luns; i++)
		if (acl->luns[i] == lun)
			return true;
	return false;
}

void tnd_iscsi_view_free(struct iscsi_conn *c)
{
	free(c->view);
	free(c->view_ids);
	free(c->view_lus);
	c->view = NULL;
	c->view_ids = NULL;
	c->view_lus = NULL;
	c->view_nr = 0;
}

int tnd_iscsi_session_view(struct iscsi_conn *c)
{
	const struct iscsi_target *t = tnd_iscsi_cfg_target(c->rc->cfg, c->target_iqn);
	if (!t)
		return -ENOENT;
	if (!tnd_iscsi_admitted(t, c->ng.initiator_name))
		return -EACCES;
	const struct iscsi_acl *acl = tnd_iscsi_target_acl(t, c->ng.initiator_name);
	unsigned n = 0;
	for (unsigned i = 0; i < t->nr_luns; i++)
		n += acl_shows(acl, t->luns[i].lun);
	/* One spare entry so that an empty view still allocates. */
	struct iscsi_lun *v = malloc((n + 1) * sizeof(*v));
	uint64_t *ids = malloc((n + 1) * sizeof(*ids));
	struct tnd_scsi_lu **lus = malloc((n + 1) * sizeof(*lus));
	if (!v || !ids || !lus) {
		free(v);
		free(ids);
		free(lus);
		return -ENOMEM;
	}
	n = 0;
	for (unsigned i = 0; i < t->nr_luns; i++) {
		if (!acl_shows(acl, t->luns[i].lun))
			continue;
		v[n] = t->luns[i];
		lus[n] = t->luns[i].lu;
		ids[n++] = t->luns[i].lun;
	}
	/* A different LU at the same number is a changed inventory too. */
	if (c->view && (n != c->view_nr || memcmp(v, c->view, n * sizeof(*v)) != 0))
		c->luns_changed = true;
	tnd_iscsi_view_free(c);
	c->view = v;
	c->view_ids = ids;
	c->view_lus = lus;
	c->view_nr = n;
	return 0;
}

struct tnd_scsi_lu *tnd_iscsi_view_lu(const struct iscsi_conn *c, uint64_t lun)
{
	for (unsigned i = 0; i < c->view_nr; i++)
		if (c->view[i].lun == lun)
			return c->view[i].lu;
	return NULL;
}

/* ---- building snapshots (caller side, under cfg_lock) ---- */

static void cred_free(struct iscsi_chap_cred *cr)
{
	if (!cr)
		return;
	if (cr->secret)
		explicit_bzero(cr->secret, cr->secret_len);
	free(cr->secret);
	free(cr->user);
	free(cr);
}

static struct iscsi_chap_cred *cred_new(const char *user, const uint8_t *secret, size_t len)
{
	struct iscsi_chap_cred *cr = calloc(1, sizeof(*cr));
	if (!cr)
		return NULL;
	cr->user = strdup(user);
	cr->secret = malloc(len ? len : 1);
	if (!cr->user || !cr->secret) {
		cred_free(cr);
		return NULL;
	}
	memcpy(cr->secret, secret, len);
	cr->secret_len = len;
	return cr;
}

static void acl_clear(struct iscsi_acl *a)
{
	free(a->initiator);
	free(a->luns);
	cred_free(a->chap);
	cred_free(a->mutual);
	memset(a, 0, sizeof(*a));
}

static int acl_copy(struct iscsi_acl *dst, const struct iscsi_acl *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->all_luns = src->all_luns;
	dst->initiator = strdup(src->initiator);
	if (!dst->initiator)
		goto err_clear;
	if (src->nr_luns) {
		dst->luns = malloc(src->nr_luns * sizeof(*dst->luns));
		if (!dst->luns)
			goto err_clear;
		memcpy(dst->luns, src->luns, src->nr_luns * sizeof(*dst->luns));
		dst->nr_luns = src->nr_luns;
	}
	if (src->chap && !(dst->chap = cred_new(src->chap->user, src->chap->secret,
						src->chap->secret_len)))
		goto err_clear;
	if (src->mutual && !(dst->mutual = cred_new(src->mutual->user, src->mutual->secret,
						    src->mutual->secret_len)))
		goto err_clear;
	return 0;

err_clear:
	acl_clear(dst);
	return -ENOMEM;
}

static void target_free(struct iscsi_target *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->nr_acls; i++)
		acl_clear(&t->acls[i]);
	free(t->acls);
	free(t->luns);
	free(t->iqn);
	free(t->alias);
	free(t);
}

/*
 * A deep copy of @t with room for one more ACL and one more LUN, which
 * the caller may fill in. The LUs themselves are shared, not copied.
 */
static struct iscsi_target *target_clone(const struct iscsi_target *t)
{
	struct iscsi_target *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->allow_any = t->allow_any;
	n->iqn = strdup(t->iqn);
	n->alias = t->alias ? strdup(t->alias) : NULL;
	n->acls = calloc(t->nr_acls + 1, sizeof(*n->acls));
	n->luns = calloc(t->nr_luns + 1, sizeof(*n->luns));
	if (!n->iqn || (t->alias && !n->alias) || !n->acls || !n->luns)
		goto err_free_target;
	for (unsigned i = 0; i < t->nr_acls; i++) {
		if (acl_copy(&n->acls[i], &t->acls[i]) < 0)
			goto err_free_target;
		n->nr_acls++;
	}
	memcpy(n->luns, t->luns, t->nr_luns * sizeof(*n->luns));
	n->nr_luns = t->nr_luns;
	return n;

err_free_target:
	target_free(n);
	return NULL;
}

static void cfg_free(struct iscsi_cfg *cfg)
{
	if (!cfg)
		return;
	free(cfg->targets);
	free(cfg);
}

/*
 * A new snapshot: @old's targets, with @old_t replaced by @new_t (either
 * may be NULL: add or remove). Borrows everything; the caller hands
 * @new_t over once the snapshot is published.
 */
static struct iscsi_cfg *cfg_with(const struct iscsi_cfg *old, const struct iscsi_target *old_t,
				  struct iscsi_target *new_t)
{
	struct iscsi_cfg *cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return NULL;
	cfg->targets = calloc(old->nr_targets + 1, sizeof(*cfg->targets));
	if (!cfg->targets) {
		free(cfg);
		return NULL;
	}
	for (unsigned i = 0; i < old->nr_targets; i++) {
		if (old->targets[i] == old_t) {
			if (new_t)
				cfg->targets[cfg->nr_targets++] = new_t;
			continue;
		}
		cfg->targets[cfg->nr_targets++] = old->targets[i];
	}
	if (!old_t && new_t)
		cfg->targets[cfg->nr_targets++] = new_t;
	return cfg;
}

/* ---- rounds: one message to every reactor, and wait ---- */

struct round_msg {
	struct tnd_msg m;
	struct iscsi_cfg_round *round;
	struct iscsi_rctx *rc;
	json_t *sessions;             /* sessions_json: this reactor's part */
};

struct iscsi_cfg_round {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending;
	/* What the round does on each reactor. */
	const struct iscsi_cfg *cfg;          /* publish this (NULL: keep) */
	struct tnd_scsi_lu *const *drain;     /* wait for commands on these */
	unsigned nr_drain;
	uint64_t kick_sid;                    /* kick_session */
	bool kicked;
	struct round_msg *msgs;
	unsigned nr_msgs;
};

static void round_ack(struct iscsi_cfg_round *r)
{
	pthread_mutex_lock(&r->lock);
	if (--r->pending == 0)
		pthread_cond_signal(&r->cond);
	/* The waiter may free @r as soon as the lock is dropped. */
	pthread_mutex_unlock(&r->lock);
}

/* Run @fn on every reactor and wait for every acknowledgement. */
static int round_run(struct tnd_target_server *srv, struct iscsi_cfg_round *r, tnd_msg_fn fn)
{
	r->msgs = calloc(srv->nr_reactors, sizeof(*r->msgs));
	if (!r->msgs)
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	r->pending = srv->nr_reactors;
	r->nr_msgs = srv->nr_reactors;
	for (unsigned i = 0; i < srv->nr_reactors; i++) {
		r->msgs[i].m.fn = fn;
		r->msgs[i].round = r;
		r->msgs[i].rc = &srv->rctx[i];
		tnd_reactor_send(srv->reactors[i], &r->msgs[i].m);
	}
	pthread_mutex_lock(&r->lock);
	while (r->pending > 0)
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	return 0;
}

static void round_free(struct iscsi_cfg_round *r)
{
	for (unsigned i = 0; i < r->nr_msgs; i++)
		json_decref(r->msgs[i].sessions);
	free(r->msgs);
}

void tnd_iscsi_cfg_cmd_done(struct iscsi_rctx *rc)
{
	struct iscsi_cfg_round *r = rc->drain_round;
	if (!r)
		return;
	if (--rc->drain_left == 0) {
		rc->drain_round = NULL;
		round_ack(r);
	}
}

/*
 * Whether executing task @t may touch an LU being taken away: its own LU
 * or, for an EXTENDED COPY, any of its copy targets (which need not be
 * the LU the command was sent to).
 */
static bool task_uses_draining(const struct iscsi_cfg_round *r, const struct iscsi_task *t)
{
	for (unsigned i = 0; i < r->nr_drain; i++)
		if (tnd_scsi_cmd_uses_lu(&t->cmd, r->drain[i]))
			return true;
	return false;
}

/* Publish a snapshot on this reactor: see the essay at the top. */
static void apply_msg(struct tnd_msg *m)
{
	struct round_msg *rm = tnd_container_of(m, struct round_msg, m);
	struct iscsi_cfg_round *r = rm->round;
	struct iscsi_rctx *rc = rm->rc;
	rc->cfg = r->cfg;
	unsigned busy = 0;
	struct iscsi_conn *next;
	for (struct iscsi_conn *c = rc->conns; c; c = next) {
		next = c->next;
		bool closed = false;
		if (c->state == CONN_FFP && !c->discovery) {
			int ret = tnd_iscsi_session_view(c);
			if (ret < 0) {
				/* Closed before the drain count below, whose
				 * commands still finish (their answers dropped). */
				tnd_info(TAG, "%s: closing session of %s: %s", c->peer_str,
					 c->ng.initiator_name,
					 ret == -ENOENT ? "target removed"
					 : ret == -EACCES ? "initiator no longer admitted"
							  : "out of memory");
				tnd_iscsi_view_free(c);
				tnd_iscsi_conn_close(c, "configuration change");
				closed = true;
			}
		}
		for (unsigned b = 0; r->nr_drain && b < ISCSI_TASK_BUCKETS; b++)
			for (struct iscsi_task *t = c->tasks[b]; t; t = t->hnext)
				if (t->state == TASK_EXEC && task_uses_draining(r, t)) {
					t->drain_counted = true;
					busy++;
				}
		/* Frees it now if nothing of it is in flight (so no task of it
		 * was counted); else its last completion does. */
		if (closed)
			tnd_iscsi_conn_maybe_free(c);
	}
	if (busy) {
		rc->drain_round = r;
		rc->drain_left = busy;
		return;
	}
	round_ack(r);
}

static bool on_a_reactor(const struct tnd_target_server *srv)
{
	for (unsigned i = 0; i < srv->nr_reactors; i++)
		if (tnd_reactor_is_current(srv->reactors[i]))
			return true;
	return false;
}

/*
 * Make @cfg the configuration (taking ownership of it): directly before
 * start, by a round after. Then free the old snapshot and the targets
 * only it named. Returns once every reactor serves @cfg and no command on
 * @drain is in flight. Under cfg_lock.
 */
static int cfg_publish(struct tnd_target_server *srv, struct iscsi_cfg *cfg,
		       struct tnd_scsi_lu *const *drain, unsigned nr_drain)
{
	struct iscsi_cfg *old = srv->cfg;
	if (!srv->started) {
		for (unsigned i = 0; i < srv->nr_reactors; i++)
			srv->rctx[i].cfg = cfg;
	} else {
		struct iscsi_cfg_round r = { .cfg = cfg, .drain = drain, .nr_drain = nr_drain };
		int ret = round_run(srv, &r, apply_msg);
		round_free(&r);
		if (ret < 0)
			return ret;
	}
	srv->cfg = cfg;
	for (unsigned i = 0; i < old->nr_targets; i++) {
		bool kept = false;
		for (unsigned j = 0; j < cfg->nr_targets && !kept; j++)
			kept = cfg->targets[j] == old->targets[i];
		if (!kept)
			target_free(old->targets[i]);
	}
	cfg_free(old);
	return 0;
}

/*
 * Take cfg_lock for a change: -EDEADLK on a reactor thread, -ESHUTDOWN
 * once the server is stopping. On success the caller must unlock.
 */
static int change_begin(struct tnd_target_server *srv)
{
	if (srv->started && on_a_reactor(srv))
		return -EDEADLK;
	pthread_mutex_lock(&srv->cfg_lock);
	if (srv->stopping) {
		pthread_mutex_unlock(&srv->cfg_lock);
		return -ESHUTDOWN;
	}
	return 0;
}

/* Replace target @old_t by @new_t (taking it) and publish. Under cfg_lock. */
static int replace_target(struct tnd_target_server *srv, const struct iscsi_target *old_t,
			  struct iscsi_target *new_t, struct tnd_scsi_lu *const *drain,
			  unsigned nr_drain)
{
	struct iscsi_cfg *cfg = cfg_with(srv->cfg, old_t, new_t);
	if (!cfg) {
		target_free(new_t);
		return -ENOMEM;
	}
	int ret = cfg_publish(srv, cfg, drain, nr_drain);
	if (ret < 0) {
		cfg_free(cfg);
		target_free(new_t);
	}
	return ret;
}

int tnd_iscsi_cfg_init(struct tnd_target_server *srv)
{
	srv->cfg = calloc(1, sizeof(*srv->cfg));
	if (!srv->cfg)
		return -ENOMEM;
	for (unsigned i = 0; i < srv->nr_reactors; i++)
		srv->rctx[i].cfg = srv->cfg;
	pthread_mutex_init(&srv->cfg_lock, NULL);
	atomic_init(&srv->next_sid, 1);
	return 0;
}

void tnd_iscsi_cfg_shutdown(struct tnd_target_server *srv)
{
	pthread_mutex_lock(&srv->cfg_lock);
	srv->stopping = true;
	pthread_mutex_unlock(&srv->cfg_lock);
}

void tnd_iscsi_cfg_destroy(struct tnd_target_server *srv)
{
	struct iscsi_cfg *cfg = srv->cfg;
	if (!cfg)
		return;
	for (unsigned i = 0; i < cfg->nr_targets; i++) {
		struct iscsi_target *t = cfg->targets[i];
		for (unsigned l = 0; l < t->nr_luns; l++)
			tnd_scsi_lu_destroy(t->luns[l].lu);
		target_free(t);
	}
	cfg_free(cfg);
	srv->cfg = NULL;
	pthread_mutex_destroy(&srv->cfg_lock);
}

/* ---- the public configuration calls ---- */

static bool name_ok(const char *s)
{
	return s && s[0] && strlen(s) <= TND_ISCSI_NAME_MAX;
}

static struct iscsi_target *find_mut(struct tnd_target_server *srv, const char *iqn)
{
	return (struct iscsi_target *)tnd_iscsi_cfg_target(srv->cfg, iqn);
}

/*
 * change_begin() for a change to the existing target @iqn, which it finds
 * into *@out. 0: cfg_lock is held; -errno (-ENOENT: no such target): it
 * is not.
 */
static int change_target(struct tnd_target_server *srv, const char *iqn,
			 const struct iscsi_target **out)
{
	int ret = change_begin(srv);
	if (ret < 0)
		return ret;
	*out = find_mut(srv, iqn);
	if (!*out) {
		pthread_mutex_unlock(&srv->cfg_lock);
		return -ENOENT;
	}
	return 0;
}

int tnd_target_server_add_target(struct tnd_target_server *srv, const char *iqn,
				 const char *alias, bool allow_any,
				 const char *const *initiators, unsigned nr_initiators)
{
	if (!name_ok(iqn) || (alias && strlen(alias) > TND_ISCSI_VALUE_MAX) ||
	    (nr_initiators && !initiators))
		return -EINVAL;
	for (unsigned i = 0; i < nr_initiators; i++)
		if (!name_ok(initiators[i]))
			return -EINVAL;
	int ret = change_begin(srv);
	if (ret < 0)
		return ret;
	ret = -EEXIST;
	if (find_mut(srv, iqn))
		goto out_unlock;
	ret = -ENOMEM;
	struct iscsi_target *t = calloc(1, sizeof(*t));
	if (!t)
		goto out_unlock;
	t->allow_any = allow_any;
	t->iqn = strdup(iqn);
	t->alias = alias ? strdup(alias) : NULL;
	t->acls = calloc(nr_initiators + 1, sizeof(*t->acls));
	t->luns = calloc(1, sizeof(*t->luns));
	if (!t->iqn || (alias && !t->alias) || !t->acls || !t->luns)
		goto err_free_target;
	/* The allow-list: ACLs that see every LUN and need no CHAP. */
	for (unsigned i = 0; i < nr_initiators; i++) {
		if (tnd_iscsi_target_acl(t, initiators[i]))
			continue;
		struct iscsi_acl *a = &t->acls[t->nr_acls];
		a->all_luns = true;
		a->initiator = strdup(initiators[i]);
		if (!a->initiator)
			goto err_free_target;
		t->nr_acls++;
	}
	ret = replace_target(srv, NULL, t, NULL, 0);
	goto out_unlock;

err_free_target:
	target_free(t);
out_unlock:
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

/* An LU of device @dev_name in any target of @cfg, or NULL. */
static struct tnd_scsi_lu *lu_of_device(const struct iscsi_cfg *cfg, const char *dev_name)
{
	for (unsigned i = 0; i < cfg->nr_targets; i++)
		for (unsigned l = 0; l < cfg->targets[i]->nr_luns; l++)
			if (strcmp(tnd_scsi_lu_name(cfg->targets[i]->luns[l].lu), dev_name) == 0)
				return cfg->targets[i]->luns[l].lu;
	return NULL;
}

int tnd_target_server_map_lun(struct tnd_target_server *srv, const char *iqn,
			      uint64_t lun, const char *dev_name, struct tnd_volume *vol)
{
	if (!iqn || lun > TND_ISCSI_LUN_MAX || !dev_name || !vol)
		return -EINVAL;
	const struct iscsi_target *old;
	int ret = change_target(srv, iqn, &old);
	if (ret < 0)
		return ret;
	unsigned pos = 0;
	while (pos < old->nr_luns && old->luns[pos].lun < lun)
		pos++;
	ret = -EEXIST;
	if (pos < old->nr_luns && old->luns[pos].lun == lun)
		goto out_unlock;
	struct iscsi_target *t = target_clone(old);
	ret = -ENOMEM;
	if (!t)
		goto out_unlock;
	/* The same device mapped elsewhere is the same logical unit behind
	 * another target port: it shares that LU's reservation state. Else
	 * the LU loads the device's APTPL reservation file, if any. */
	struct tnd_scsi_lu_desc desc = { .name = dev_name, .vol = vol, .state_dir = srv->state_dir,
					 .share_with = lu_of_device(srv->cfg, dev_name) };
	struct tnd_scsi_lu *lu;
	ret = tnd_scsi_lu_create(&desc, &lu);
	if (ret < 0)
		goto err_free_target;
	/* Where the volume keeps its state, for session placement. */
	struct tnd_volume_info info;
	tnd_volume_info(vol, &info);
	memmove(&t->luns[pos + 1], &t->luns[pos], (t->nr_luns - pos) * sizeof(*t->luns));
	t->luns[pos] = (struct iscsi_lun){ .lun = lun, .lu = lu, .home = info.home };
	t->nr_luns++;
	ret = replace_target(srv, old, t, NULL, 0);
	if (ret < 0)
		tnd_scsi_lu_destroy(lu);   /* never published */
	goto out_unlock;

err_free_target:
	target_free(t);
out_unlock:
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

_Static_assert((int)TND_TARGET_ALUA_ACTIVE_OPTIMIZED == (int)TND_SCSI_ALUA_ACTIVE_OPTIMIZED &&
		       (int)TND_TARGET_ALUA_ACTIVE_NON_OPTIMIZED ==
			       (int)TND_SCSI_ALUA_ACTIVE_NON_OPTIMIZED &&
		       (int)TND_TARGET_ALUA_STANDBY == (int)TND_SCSI_ALUA_STANDBY &&
		       (int)TND_TARGET_ALUA_UNAVAILABLE == (int)TND_SCSI_ALUA_UNAVAILABLE &&
		       (int)TND_TARGET_ALUA_TRANSITIONING == (int)TND_SCSI_ALUA_TRANSITIONING,
	       "the public ALUA states are the SCSI layer's encoding");

int tnd_target_server_set_alua_state(struct tnd_target_server *srv, const char *iqn,
				     uint64_t lun, enum tnd_target_alua_state state)
{
	if (!iqn)
		return -EINVAL;
	const struct iscsi_target *t;
	int ret = change_target(srv, iqn, &t);
	if (ret < 0)
		return ret;
	/* The LU object is shared by every snapshot that maps it, and its
	 * state is an atomic: no new snapshot, no round. */
	ret = -ENOENT;
	for (unsigned i = 0; i < t->nr_luns; i++)
		if (t->luns[i].lun == lun) {
			ret = tnd_scsi_lu_set_alua_state(t->luns[i].lu,
							 (enum tnd_scsi_alua_state)state);
			break;
		}
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

int tnd_target_server_unmap_lun(struct tnd_target_server *srv, const char *iqn, uint64_t lun)
{
	if (!iqn)
		return -EINVAL;
	const struct iscsi_target *old;
	int ret = change_target(srv, iqn, &old);
	if (ret < 0)
		return ret;
	unsigned pos = 0;
	ret = -ENOENT;
	while (pos < old->nr_luns && old->luns[pos].lun != lun)
		pos++;
	if (pos == old->nr_luns)
		goto out_unlock;
	struct tnd_scsi_lu *lu = old->luns[pos].lu;
	struct iscsi_target *t = target_clone(old);
	ret = -ENOMEM;
	if (!t)
		goto out_unlock;
	memmove(&t->luns[pos], &t->luns[pos + 1], (t->nr_luns - pos - 1) * sizeof(*t->luns));
	t->nr_luns--;
	ret = replace_target(srv, old, t, &lu, 1);
	if (ret == 0)
		tnd_scsi_lu_destroy(lu);
out_unlock:
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

int tnd_target_server_forget_device(struct tnd_target_server *srv, const char *dev_name)
{
	if (!dev_name || !dev_name[0])
		return -EINVAL;
	int ret = change_begin(srv);
	if (ret < 0)
		return ret;
	/* Under cfg_lock: no LU of the device can appear meanwhile. */
	ret = lu_of_device(srv->cfg, dev_name) ? -EBUSY : tnd_scsi_pr_forget(srv->state_dir, dev_name);
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

int tnd_target_server_remove_target(struct tnd_target_server *srv, const char *iqn)
{
	if (!iqn)
		return -EINVAL;
	const struct iscsi_target *old;
	int ret = change_target(srv, iqn, &old);
	if (ret < 0)
		return ret;
	ret = -ENOMEM;
	struct tnd_scsi_lu **lus = calloc(old->nr_luns + 1, sizeof(*lus));
	if (!lus)
		goto out_unlock;
	unsigned nr = old->nr_luns;
	for (unsigned i = 0; i < nr; i++)
		lus[i] = old->luns[i].lu;
	/* @old is freed by the publication: only @lus is used after it. */
	ret = replace_target(srv, old, NULL, lus, nr);
	if (ret == 0)
		for (unsigned i = 0; i < nr; i++)
			tnd_scsi_lu_destroy(lus[i]);
	free(lus);
out_unlock:
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

int tnd_target_server_set_allow_any(struct tnd_target_server *srv, const char *iqn, bool allow_any)
{
	if (!iqn)
		return -EINVAL;
	const struct iscsi_target *old;
	int ret = change_target(srv, iqn, &old);
	if (ret < 0)
		return ret;
	ret = 0;
	if (old->allow_any == allow_any)
		goto out_unlock;
	struct iscsi_target *t = target_clone(old);
	ret = -ENOMEM;
	if (!t)
		goto out_unlock;
	t->allow_any = allow_any;
	ret = replace_target(srv, old, t, NULL, 0);
out_unlock:
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

static bool chap_ok(const struct tnd_target_chap *c)
{
	if (!c)
		return true;
	if (!c->user || !c->user[0] || strlen(c->user) > TND_ISCSI_VALUE_MAX || !c->secret)
		return false;
	size_t l = strlen(c->secret);
	return l >= CHAP_SECRET_MIN && l <= CHAP_SECRET_MAX;
}

/* Fill @a from the caller's @acl (validated). */
static int acl_from(struct iscsi_acl *a, const struct tnd_target_acl *acl)
{
	memset(a, 0, sizeof(*a));
	a->initiator = strdup(acl->initiator);
	if (!a->initiator)
		goto err_clear;
	a->all_luns = acl->luns == NULL;
	if (acl->luns && acl->nr_luns) {
		a->luns = malloc(acl->nr_luns * sizeof(*a->luns));
		if (!a->luns)
			goto err_clear;
		/* Sorted, without duplicates. */
		for (unsigned i = 0; i < acl->nr_luns; i++) {
			uint64_t v = acl->luns[i];
			unsigned p = 0;
			while (p < a->nr_luns && a->luns[p] < v)
				p++;
			if (p < a->nr_luns && a->luns[p] == v)
				continue;
			memmove(&a->luns[p + 1], &a->luns[p], (a->nr_luns - p) * sizeof(*a->luns));
			a->luns[p] = v;
			a->nr_luns++;
		}
	}
	if (acl->chap && !(a->chap = cred_new(acl->chap->user, (const uint8_t *)acl->chap->secret,
					      strlen(acl->chap->secret))))
		goto err_clear;
	if (acl->mutual_chap &&
	    !(a->mutual = cred_new(acl->mutual_chap->user, (const uint8_t *)acl->mutual_chap->secret,
				   strlen(acl->mutual_chap->secret))))
		goto err_clear;
	return 0;

err_clear:
	acl_clear(a);
	return -ENOMEM;
}

int tnd_target_server_set_acl(struct tnd_target_server *srv, const char *iqn,
			      const struct tnd_target_acl *acl)
{
	if (!iqn || !acl || !name_ok(acl->initiator) || (acl->nr_luns && !acl->luns) ||
	    !chap_ok(acl->chap) || !chap_ok(acl->mutual_chap) || (acl->mutual_chap && !acl->chap))
		return -EINVAL;
	for (unsigned i = 0; i < acl->nr_luns; i++)
		if (acl->luns[i] > TND_ISCSI_LUN_MAX)
			return -EINVAL;
	/* RFC 7143 12.1.3: the two directions must not share a secret. */
	if (acl->mutual_chap && strcmp(acl->chap->secret, acl->mutual_chap->secret) == 0)
		return -EINVAL;
	const struct iscsi_target *old;
	int ret = change_target(srv, iqn, &old);
	if (ret < 0)
		return ret;
	struct iscsi_target *t = target_clone(old);
	ret = -ENOMEM;
	if (!t)
		goto out_unlock;
	struct iscsi_acl *slot = NULL;
	for (unsigned i = 0; i < t->nr_acls && !slot; i++)
		if (strcmp(t->acls[i].initiator, acl->initiator) == 0)
			slot = &t->acls[i];
	if (slot)
		acl_clear(slot);
	else
		slot = &t->acls[t->nr_acls++];
	ret = acl_from(slot, acl);
	if (ret < 0) {
		/* Keep the array dense for target_free. */
		*slot = t->acls[--t->nr_acls];
		memset(&t->acls[t->nr_acls], 0, sizeof(*slot));
		target_free(t);
		goto out_unlock;
	}
	ret = replace_target(srv, old, t, NULL, 0);
out_unlock:
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

int tnd_target_server_remove_acl(struct tnd_target_server *srv, const char *iqn,
				 const char *initiator)
{
	if (!iqn || !initiator)
		return -EINVAL;
	const struct iscsi_target *old;
	int ret = change_target(srv, iqn, &old);
	if (ret < 0)
		return ret;
	ret = -ENOENT;
	if (!tnd_iscsi_target_acl(old, initiator))
		goto out_unlock;
	struct iscsi_target *t = target_clone(old);
	ret = -ENOMEM;
	if (!t)
		goto out_unlock;
	for (unsigned i = 0; i < t->nr_acls; i++) {
		if (strcmp(t->acls[i].initiator, initiator) != 0)
			continue;
		acl_clear(&t->acls[i]);
		t->acls[i] = t->acls[--t->nr_acls];
		memset(&t->acls[t->nr_acls], 0, sizeof(t->acls[0]));
		break;
	}
	ret = replace_target(srv, old, t, NULL, 0);
out_unlock:
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

/* ---- sessions ---- */

/* "a.b.c.d:port" or "[v6]:port" of a socket address. */
static void addr_str(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char a[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
		snprintf(out, cap, "[%s]:%d", a, ntohs(s6->sin6_port));
		return;
	}
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
		port = ntohs(s4->sin_port);
	}
	snprintf(out, cap, "%s:%d", a, port);
}

static json_t *session_json(const struct iscsi_conn *c)
{
	char id[24], isid[16], portal[INET6_ADDRSTRLEN + 16];
	snprintf(id, sizeof(id), "%llu", (unsigned long long)c->sid);
	snprintf(isid, sizeof(isid), "%02x%02x%02x%02x%02x%02x", c->isid[0], c->isid[1],
		 c->isid[2], c->isid[3], c->isid[4], c->isid[5]);
	addr_str(&c->local, portal, sizeof(portal));
	const struct tnd_iscsi_params *p = &c->ng.params;
	json_t *params = json_pack(
		"{s:b, s:b, s:I, s:I, s:I, s:I, s:b, s:b, s:I, s:I}",
		"header_digest", p->header_digest, "data_digest", p->data_digest,
		"max_recv_data_segment_length", (json_int_t)p->max_recv_dsl,
		"max_xmit_data_segment_length", (json_int_t)p->max_xmit_dsl,
		"max_burst_length", (json_int_t)p->max_burst,
		"first_burst_length", (json_int_t)p->first_burst,
		"immediate_data", p->immediate_data, "initial_r2t", p->initial_r2t,
		"max_outstanding_r2t", (json_int_t)p->max_outstanding_r2t,
		"error_recovery_level", (json_int_t)p->erl);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:i, s:I, s:I, s:s, s:o*}",
			 "id", id, "initiator", c->ng.initiator_name, "isid", isid,
			 "target", c->target_iqn,
			 "type", c->discovery ? "discovery" : "normal",
			 "address", c->peer_str, "portal", portal,
			 "reactor", (json_int_t)tnd_reactor_index(c->rc->reactor),
			 "connections", 1, "tsih", (json_int_t)c->tsih,
			 "login_time", (json_int_t)c->login_time,
			 "auth", c->auth_chap ? "CHAP" : "None", "params", params);
}

static void list_msg(struct tnd_msg *m)
{
	struct round_msg *rm = tnd_container_of(m, struct round_msg, m);
	rm->sessions = json_array();
	for (struct iscsi_conn *c = rm->rc->conns; c && rm->sessions; c = c->next) {
		/* A session exists from its final login response to its close. */
		if (c->state != CONN_FFP || !c->sid)
			continue;
		json_t *o = session_json(c);
		if (!o || json_array_append_new(rm->sessions, o) < 0) {
			json_decref(rm->sessions);
			rm->sessions = NULL;
		}
	}
	round_ack(rm->round);
}

int tnd_target_server_sessions_json(struct tnd_target_server *srv, json_t *out_array)
{
	if (!json_is_array(out_array))
		return -EINVAL;
	if (!srv->started)
		return 0;
	int ret = change_begin(srv);
	if (ret < 0)
		return ret;
	struct iscsi_cfg_round r = { 0 };
	ret = round_run(srv, &r, list_msg);
	for (unsigned i = 0; ret == 0 && i < srv->nr_reactors; i++)
		if (!r.msgs[i].sessions || json_array_extend(out_array, r.msgs[i].sessions) < 0)
			ret = -ENOMEM;
	round_free(&r);
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}

static void kick_msg(struct tnd_msg *m)
{
	struct round_msg *rm = tnd_container_of(m, struct round_msg, m);
	struct iscsi_cfg_round *r = rm->round;
	struct iscsi_conn *next;
	for (struct iscsi_conn *c = rm->rc->conns; c; c = next) {
		next = c->next;
		if (c->state != CONN_FFP || c->sid != r->kick_sid)
			continue;
		tnd_info(TAG, "%s: session %llu of %s kicked", c->peer_str,
			 (unsigned long long)c->sid, c->ng.initiator_name);
		/* The same rule as for a failed command stream: what is at
		 * the SCSI layer finishes, its answers are dropped. */
		tnd_iscsi_conn_close(c, "kicked");
		r->kicked = true;   /* one reactor has it: no race on this */
		tnd_iscsi_conn_maybe_free(c);
	}
	round_ack(r);
}

int tnd_target_server_kick_session(struct tnd_target_server *srv, const char *id)
{
	if (!id || !id[0])
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long sid = strtoull(id, &end, 10);
	if (*end || errno || sid == 0 || id[0] < '0' || id[0] > '9')
		return -ENOENT;
	if (!srv->started)
		return -ENOENT;
	int ret = change_begin(srv);
	if (ret < 0)
		return ret;
	struct iscsi_cfg_round r = { .kick_sid = sid };
	ret = round_run(srv, &r, kick_msg);
	if (ret == 0 && !r.kicked)
		ret = -ENOENT;
	round_free(&r);
	pthread_mutex_unlock(&srv->cfg_lock);
	return ret;
}
