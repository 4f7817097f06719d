/*
 * scsi_pr.c — reservations: persistent reservations (SPC-4 5.13, PERSISTENT
 * RESERVE IN/OUT), the older RESERVE/RELEASE (SPC-2), the conflict check
 * every command passes, the unit attentions reservations raise, and the
 * APTPL file that carries persistent reservations over a restart.
 *
 * State. Each LU has one struct scsi_pr: the registrations (reservation
 * key + the registered I_T nexus), the persistent reservation (type and,
 * except for the all-registrants types, the holder's registration), the
 * PRgeneration, the APTPL setting, the holder of a RESERVE(6) reservation,
 * and reservation unit attentions not yet picked up. It belongs to the
 * device, not to one LU: a device mapped in two targets is one logical
 * unit seen through two target ports, so its LUs share one refcounted
 * struct scsi_pr (tnd_scsi_lu_desc.share_with) and one APTPL file.
 *
 * I_T nexus identity. A registration names its nexus by the initiator port
 * name (iSCSI name + ",i,0x" + ISID), the target name and the relative
 * target port identifier, not by a pointer: it outlives sessions (a host
 * that logs in again with the same ISID is the same I_T nexus) and, with
 * APTPL, restarts. A registration made with ALL_TG_PT=1 matches every
 * target port of that initiator port.
 *
 * Threading. The LU is shared by reactors. Every change happens under
 * pr->lock and ends with an increment of pr->gen. Per command a nexus
 * compares pr->gen with the value its I_T_L saw last (one atomic load):
 * equal means its cached verdict (scsi_itl.pr_block: what it may not do)
 * is current; different means it takes the lock once to recompute the
 * verdict and collect the unit attentions queued for it. So with a
 * Windows cluster holding a reservation forever, the I/O path still takes
 * no lock. No file I/O ever happens under pr->lock.
 *
 * Unit attentions. RESERVATIONS PREEMPTED, RESERVATIONS RELEASED and
 * REGISTRATIONS PREEMPTED are for specific I_T nexuses, some of which are
 * no longer registered (the preempted ones). They wait in pr->uas, keyed
 * by nexus identity, until that nexus sends its next command to the LU
 * (then they join its other UAs in scsi_itl.ua). The list is bounded
 * (PR_MAX_UAS): a nexus that never comes back loses its oldest UAs.
 *
 * RESERVE(6). Its holder is the nexus itself, released on LUN reset and on
 * nexus loss. The nexus cannot reach the LUs it reserved when it goes
 * (an LU may already be gone), so the LU holds a reference on a small
 * token the nexus marks dead on destruction; a dead holder counts as no
 * holder. Others' cached verdicts that still say "reserved by another"
 * are rechecked under the lock before a conflict is returned.
 *
 * PREEMPT AND ABORT. The SCSI layer cannot reach another session's tasks
 * (they live on other reactors, inside the transport). What it does: the
 * preempted nexuses lose their registrations at once, so every command of
 * theirs that reaches the SCSI layer afterwards (including those queued in
 * the transport behind the PREEMPT AND ABORT) ends with the REGISTRATIONS
 * PREEMPTED unit attention and then RESERVATION CONFLICT, never touching
 * the medium. Commands already at the volume finish normally.
 *
 * APTPL. With a state directory, the persistent state of an LU whose last
 * REGISTER said APTPL=1 is kept in <state_dir>/pr/<device>.json, written
 * with write-temp, fsync, rename, fsync(dir) before the PR OUT completes;
 * the file is removed when APTPL is cleared or nothing is left to keep.
 * The write runs synchronously on the reactor that executes the PR OUT: a
 * rare administrative command writing a file of a few hundred bytes.
 * Saves of one LU serialise on pr->save_lock (only PR OUTs that change
 * persisted state take it); each save writes the newest state, so the
 * file can never go back to an older one. On LU creation the file is
 * loaded; one that fails validation is logged and ignored, never trusted.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "scsi_priv.h"

#define TAG "scsi"

/* Persistent reservation types (SPC-4 table 173). */
enum {
	PR_WE = 0x1,
	PR_EA = 0x3,
	PR_WE_RO = 0x5,
	PR_EA_RO = 0x6,
	PR_WE_AR = 0x7,
	PR_EA_AR = 0x8,
};

#define PR_SCOPE_LU 0x0
#define PR_PARAM_LEN 24u            /* the basic PR OUT parameter list */
#define PR_MAX_REGS 256u            /* more: INSUFFICIENT REGISTRATION RESOURCES */
#define PR_MAX_UAS 1024u
#define PR_TPID_MAX 512u            /* a TransportID we accept in REGISTER AND MOVE */
#define PR_FILE_VERSION 1

struct scsi_pr_token {
	atomic_uint refs;
	atomic_bool dead;
};

/* An I_T nexus as registrations and unit attentions name it. */
struct pr_id {
	char *initiator;                /* initiator port name */
	char *target;                   /* target name */
	uint16_t rel_port;              /* relative target port identifier */
	bool all_tg_pt;                 /* every target port (rel_port unused) */
};

struct pr_reg {
	struct pr_reg *next;
	struct pr_id id;
	uint64_t key;
};

struct pr_ua {
	struct pr_ua *next;
	struct pr_id id;
	unsigned bits;                  /* SCSI_UA_RES_* / SCSI_UA_REG_* */
};

struct scsi_pr {
	atomic_uint refs;               /* LUs of the device */
	atomic_uint gen;                /* bumped under lock after every change */
	pthread_mutex_t lock;
	uint32_t generation;            /* PRgeneration */
	struct pr_reg *regs;            /* in registration order */
	unsigned nr_regs;
	uint8_t type;                   /* 0: no persistent reservation */
	struct pr_reg *holder;          /* NULL for the all-registrants types */
	bool aptpl;
	struct pr_ua *uas;              /* oldest first */
	unsigned nr_uas;
	struct scsi_pr_token *spc2;     /* RESERVE(6) holder (a reference) */
	uint64_t change_seq;            /* bumped by every change to persisted state */

	/* APTPL: NULL path when unsupported. */
	char *dir;                      /* <state_dir>/pr */
	char *path;                     /* <dir>/<device>.json */
	pthread_mutex_t save_lock;
	uint64_t saved_seq;             /* under save_lock */
};

/* ---- tokens ---- */

struct scsi_pr_token *scsi_pr_token_new(void)
{
	struct scsi_pr_token *t = malloc(sizeof(*t));
	if (!t)
		return NULL;
	atomic_init(&t->refs, 1);
	atomic_init(&t->dead, false);
	return t;
}

static struct scsi_pr_token *token_get(struct scsi_pr_token *t)
{
	atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
	return t;
}

static void token_put(struct scsi_pr_token *t)
{
	if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
		free(t);
}

void scsi_pr_token_kill(struct scsi_pr_token *t)
{
	if (!t)
		return;
	atomic_store_explicit(&t->dead, true, memory_order_release);
	token_put(t);
}

static bool token_dead(const struct scsi_pr_token *t)
{
	return atomic_load_explicit(&t->dead, memory_order_acquire);
}

/* ---- identities, registrations, unit attentions (under pr->lock) ---- */

static void id_free(struct pr_id *id)
{
	free(id->initiator);
	free(id->target);
	id->initiator = id->target = NULL;
}

static int id_set(struct pr_id *id, const char *initiator, const char *target, uint16_t rel_port,
		  bool all_tg_pt)
{
	id->initiator = strdup(initiator);
	id->target = strdup(target);
	id->rel_port = rel_port;
	id->all_tg_pt = all_tg_pt;
	if (!id->initiator || !id->target) {
		id_free(id);
		return -ENOMEM;
	}
	return 0;
}

static bool id_is(const struct pr_id *id, const char *initiator, const char *target,
		  uint16_t rel_port)
{
	return strcasecmp(id->initiator, initiator) == 0 && strcmp(id->target, target) == 0 &&
	       (id->all_tg_pt || id->rel_port == rel_port);
}

static bool id_matches(const struct pr_id *id, const struct tnd_scsi_nexus *nx)
{
	return id_is(id, nx->initiator, nx->target_name, nx->rel_port_id);
}

static bool id_equal(const struct pr_id *a, const struct pr_id *b)
{
	return strcasecmp(a->initiator, b->initiator) == 0 && strcmp(a->target, b->target) == 0 &&
	       a->all_tg_pt == b->all_tg_pt && (a->all_tg_pt || a->rel_port == b->rel_port);
}

static bool type_valid(uint8_t t)
{
	return t == PR_WE || t == PR_EA || t == PR_WE_RO || t == PR_EA_RO || t == PR_WE_AR ||
	       t == PR_EA_AR;
}

static bool type_all_regs(uint8_t t)
{
	return t == PR_WE_AR || t == PR_EA_AR;
}

static bool type_regs_only(uint8_t t)
{
	return t == PR_WE_RO || t == PR_EA_RO;
}

static bool type_excl_access(uint8_t t)
{
	return t == PR_EA || t == PR_EA_RO || t == PR_EA_AR;
}

static struct pr_reg *reg_find(const struct scsi_pr *pr, const struct tnd_scsi_nexus *nx)
{
	for (struct pr_reg *r = pr->regs; r; r = r->next)
		if (id_matches(&r->id, nx))
			return r;
	return NULL;
}

static bool reg_is_holder(const struct scsi_pr *pr, const struct pr_reg *r)
{
	return r && pr->type && (type_all_regs(pr->type) || pr->holder == r);
}

static struct pr_reg *reg_add(struct scsi_pr *pr, const char *initiator, const char *target,
			      uint16_t rel_port, bool all_tg_pt, uint64_t key)
{
	struct pr_reg *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	if (id_set(&r->id, initiator, target, rel_port, all_tg_pt) < 0) {
		free(r);
		return NULL;
	}
	r->key = key;
	struct pr_reg **pp = &pr->regs;
	while (*pp)
		pp = &(*pp)->next;
	*pp = r;
	pr->nr_regs++;
	return r;
}

/* Unlink and free @r; the caller has dealt with the reservation. */
static void reg_unlink(struct scsi_pr *pr, struct pr_reg *r)
{
	for (struct pr_reg **pp = &pr->regs; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	if (pr->holder == r)
		pr->holder = NULL;
	pr->nr_regs--;
	id_free(&r->id);
	free(r);
}

static void ua_free(struct pr_ua *u)
{
	id_free(&u->id);
	free(u);
}

/* Queue @bits for the nexus @id names. Best effort under memory pressure. */
static void ua_add(struct scsi_pr *pr, const struct pr_id *id, unsigned bits)
{
	struct pr_ua **pp = &pr->uas;
	for (; *pp; pp = &(*pp)->next) {
		if (id_equal(&(*pp)->id, id)) {
			(*pp)->bits |= bits;
			return;
		}
	}
	struct pr_ua *u = calloc(1, sizeof(*u));
	if (!u || id_set(&u->id, id->initiator, id->target, id->rel_port, id->all_tg_pt) < 0) {
		free(u);
		tnd_warn(TAG, "out of memory: reservation unit attention for %s lost",
			 id->initiator);
		return;
	}
	u->bits = bits;
	*pp = u;
	if (++pr->nr_uas > PR_MAX_UAS) {
		struct pr_ua *old = pr->uas;
		pr->uas = old->next;
		ua_free(old);
		pr->nr_uas--;
	}
}

/* Queue @bits for every registrant but the nexus @except. */
static void ua_to_registrants(struct scsi_pr *pr, const struct tnd_scsi_nexus *except,
			      unsigned bits)
{
	for (struct pr_reg *r = pr->regs; r; r = r->next)
		if (!except || !id_matches(&r->id, except))
			ua_add(pr, &r->id, bits);
}

static void ua_take(struct scsi_pr *pr, const struct tnd_scsi_nexus *nx, unsigned *ua)
{
	struct pr_ua **pp = &pr->uas;
	while (*pp) {
		struct pr_ua *u = *pp;
		if (id_matches(&u->id, nx)) {
			*ua |= u->bits;
			*pp = u->next;
			ua_free(u);
			pr->nr_uas--;
			continue;
		}
		pp = &u->next;
	}
}

/* A change every nexus must notice (verdicts, queued UAs). */
static void pr_bump(struct tnd_scsi_lu *lu)
{
	atomic_fetch_add_explicit(&lu->pr->gen, 1, memory_order_release);
}

unsigned scsi_pr_gen(const struct tnd_scsi_lu *lu)
{
	return atomic_load_explicit(&lu->pr->gen, memory_order_acquire);
}

/* Drop a RESERVE(6) whose holder is gone. True if one was dropped. */
static bool spc2_reap(struct scsi_pr *pr)
{
	if (pr->spc2 && token_dead(pr->spc2)) {
		token_put(pr->spc2);
		pr->spc2 = NULL;
		return true;
	}
	return false;
}

static bool spc2_other(const struct scsi_pr *pr, const struct tnd_scsi_nexus *nx)
{
	return pr->spc2 && pr->spc2 != nx->pr_token && !token_dead(pr->spc2);
}

/* What @nx may not do now (SCSI_PR_BLOCK_*). */
static uint8_t verdict(const struct scsi_pr *pr, const struct tnd_scsi_nexus *nx)
{
	uint8_t b = 0;
	if (spc2_other(pr, nx))
		b |= SCSI_PR_SPC2_OTHER;
	if (pr->type) {
		const struct pr_reg *r = reg_find(pr, nx);
		bool ok = reg_is_holder(pr, r) ||
			  (r && (type_regs_only(pr->type) || type_all_regs(pr->type)));
		if (!ok) {
			b |= SCSI_PR_BLOCK_WRITES;
			if (type_excl_access(pr->type))
				b |= SCSI_PR_BLOCK_READS;
		}
	}
	return b;
}

/* ---- the per-command part ---- */

void scsi_pr_observe(struct tnd_scsi_lu *lu, struct tnd_scsi_nexus *nx, struct scsi_itl *itl)
{
	struct scsi_pr *pr = lu->pr;
	unsigned g = atomic_load_explicit(&pr->gen, memory_order_acquire);
	if (g == itl->seen_pr_gen)
		return;
	pthread_mutex_lock(&pr->lock);
	ua_take(pr, nx, &itl->ua);
	itl->pr_block = verdict(pr, nx);
	/* Every bump happens under the lock: this is the state we saw. */
	itl->seen_pr_gen = atomic_load_explicit(&pr->gen, memory_order_relaxed);
	pthread_mutex_unlock(&pr->lock);
}

static bool op_blocked(const struct scsi_op *op, const uint8_t *cdb, uint8_t b)
{
	if ((b & SCSI_PR_SPC2_OTHER) && !(op->flags & SCSI_OP_SPC2_ALLOWED))
		return true;
	if (!(b & SCSI_PR_BLOCK_WRITES) || (op->flags & SCSI_OP_PR_ALLOWED))
		return false;
	/* START STOP UNIT with START=1 and POWER CONDITION=0 only spins up. */
	if ((op->flags & SCSI_OP_PR_START) && (cdb[4] & 0x01) && !(cdb[4] & 0xf0))
		return false;
	if (op->flags & SCSI_OP_PR_READS)
		return b & SCSI_PR_BLOCK_READS;
	return true;
}

bool scsi_pr_conflict(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	const struct scsi_op *op = ctx->op;
	uint8_t b = ctx->itl->pr_block;
	if (!b || (op->flags & SCSI_OP_RES_EXEC) || !op_blocked(op, cmd->cdb, b))
		return false;
	if (b & SCSI_PR_SPC2_OTHER) {
		/* The holder may have gone since the verdict was cached. */
		struct scsi_pr *pr = ctx->lu->pr;
		pthread_mutex_lock(&pr->lock);
		if (spc2_reap(pr))
			pr_bump(ctx->lu);
		b = verdict(pr, ctx->nexus);
		ctx->itl->pr_block = b;
		pthread_mutex_unlock(&pr->lock);
		if (!op_blocked(op, cmd->cdb, b))
			return false;
	}
	scsi_reservation_conflict(cmd);
	return true;
}

bool scsi_pr_blocks_copy(struct tnd_scsi_lu *lu, const struct tnd_scsi_nexus *nx, bool write)
{
	struct scsi_pr *pr = lu->pr;
	pthread_mutex_lock(&pr->lock);
	if (spc2_reap(pr))
		pr_bump(lu);
	uint8_t b = verdict(pr, nx);
	pthread_mutex_unlock(&pr->lock);
	if (b & SCSI_PR_SPC2_OTHER)
		return true;
	return write ? (b & SCSI_PR_BLOCK_WRITES) : (b & SCSI_PR_BLOCK_READS);
}

/* ---- RESERVE / RELEASE (SPC-2) ---- */

/*
 * SPC-4 5.13.3: while any I_T nexus is registered, RESERVE and RELEASE
 * conflict whoever sends them.
 */
void spc_reserve(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	struct scsi_pr *pr = ctx->lu->pr;
	bool conflict = false;
	pthread_mutex_lock(&pr->lock);
	bool changed = spc2_reap(pr);
	if (pr->nr_regs || spc2_other(pr, ctx->nexus)) {
		conflict = true;
	} else if (!pr->spc2) {
		pr->spc2 = token_get(ctx->nexus->pr_token);
		changed = true;
	}
	if (changed)
		pr_bump(ctx->lu);
	pthread_mutex_unlock(&pr->lock);
	if (conflict)
		scsi_reservation_conflict(cmd);
	else
		scsi_complete(cmd);
}

void spc_release(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	struct scsi_pr *pr = ctx->lu->pr;
	bool conflict = false;
	pthread_mutex_lock(&pr->lock);
	bool changed = spc2_reap(pr);
	if (pr->nr_regs) {
		conflict = true;
	} else if (pr->spc2 == ctx->nexus->pr_token) {
		token_put(pr->spc2);
		pr->spc2 = NULL;
		changed = true;
	}
	/* A RELEASE from a nexus that holds nothing does nothing (GOOD). */
	if (changed)
		pr_bump(ctx->lu);
	pthread_mutex_unlock(&pr->lock);
	if (conflict)
		scsi_reservation_conflict(cmd);
	else
		scsi_complete(cmd);
}

void scsi_pr_lu_reset(struct tnd_scsi_lu *lu)
{
	struct scsi_pr *pr = lu->pr;
	pthread_mutex_lock(&pr->lock);
	if (pr->spc2) {
		token_put(pr->spc2);
		pr->spc2 = NULL;
		pr_bump(lu);
	}
	pthread_mutex_unlock(&pr->lock);
}

/* ---- PERSISTENT RESERVE IN ---- */

/* Bytes of a TransportID (format 01b) for @port_name. */
static uint32_t tpid_len(const char *port_name)
{
	uint32_t n = (uint32_t)strlen(port_name) + 1;
	n = (n + 3) & ~3u;
	if (n < 20)
		n = 20;
	return 4 + n;
}

static void tpid_put(uint8_t *p, const char *port_name)
{
	uint32_t len = tpid_len(port_name);
	memset(p, 0, len);
	p[0] = 0x40 | 0x05;             /* FORMAT CODE 01b, PROTOCOL IDENTIFIER iSCSI */
	tnd_put_be16(p + 2, (uint16_t)(len - 4));
	memcpy(p + 4, port_name, strlen(port_name));
}

/* The data of one PR IN service action, built under the lock. */
static uint8_t *pr_in_build(const struct scsi_pr *pr, unsigned sa, uint32_t *len)
{
	size_t cap = 8;
	for (const struct pr_reg *r = pr->regs; r; r = r->next)
		cap += 24 + tpid_len(r->id.initiator);
	if (cap < 24)
		cap = 24;
	uint8_t *b = calloc(1, cap);
	if (!b)
		return NULL;
	uint32_t n = 8;
	tnd_put_be32(b, pr->generation);
	switch (sa) {
	case SCSI_PRIN_READ_KEYS:
		for (const struct pr_reg *r = pr->regs; r; r = r->next, n += 8)
			tnd_put_be64(b + n, r->key);
		break;
	case SCSI_PRIN_READ_RESERVATION:
		if (pr->type) {
			/* All-registrants reservations report key 0. */
			tnd_put_be64(b + 8, pr->holder ? pr->holder->key : 0);
			b[8 + 13] = (uint8_t)(PR_SCOPE_LU << 4 | pr->type);
			n += 16;
		}
		break;
	case SCSI_PRIN_REPORT_CAPABILITIES:
		memset(b, 0, 8);
		tnd_put_be16(b, 8);
		/* CRH: RESERVE/RELEASE follow 5.13.3; ATP_C: ALL_TG_PT;
		 * PTPL_C: APTPL only with a state directory. */
		b[2] = 0x10 | 0x04 | (pr->path ? 0x01 : 0x00);
		/* TMV, ALLOW COMMANDS 001b (TEST UNIT READY passes the
		 * Exclusive types), PTPL_A. */
		b[3] = 0x80 | 0x10 | (pr->aptpl ? 0x01 : 0x00);
		b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; /* WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX */
		b[5] = 0x01;                             /* EX_AC_AR */
		*len = 8;
		return b;
	case SCSI_PRIN_READ_FULL_STATUS:
		for (const struct pr_reg *r = pr->regs; r; r = r->next) {
			uint8_t *d = b + n;
			uint32_t tl = tpid_len(r->id.initiator);
			tnd_put_be64(d, r->key);
			if (r->id.all_tg_pt)
				d[12] |= 0x02;
			if (reg_is_holder(pr, r)) {
				d[12] |= 0x01;
				d[13] = (uint8_t)(PR_SCOPE_LU << 4 | pr->type);
			}
			if (!r->id.all_tg_pt)
				tnd_put_be16(d + 18, r->id.rel_port);
			tnd_put_be32(d + 20, tl);
			tpid_put(d + 24, r->id.initiator);
			n += 24 + tl;
		}
		break;
	}
	tnd_put_be32(b + 4, n - 8);
	*len = n;
	return b;
}

void spc_pr_in(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	struct scsi_pr *pr = ctx->lu->pr;
	uint32_t alloc = tnd_get_be16(cmd->cdb + 7);
	uint32_t len = 0;
	pthread_mutex_lock(&pr->lock);
	uint8_t *b = pr_in_build(pr, cmd->cdb[1] & 0x1f, &len);
	pthread_mutex_unlock(&pr->lock);
	if (!b) {
		scsi_check_errno(cmd, -ENOMEM, SCSI_ERR_READ);
		return;
	}
	scsi_data_in(cmd, b, TND_MIN(len, alloc));
	free(b);
	scsi_complete(cmd);
}

/* ---- the APTPL file ---- */

static json_t *pr_to_json(const struct scsi_pr *pr, const struct tnd_scsi_lu *lu)
{
	json_t *regs = json_array();
	json_t *o = json_pack("{s:s, s:i, s:s, s:I, s:o}", "format", "tandem-pr", "version",
			      PR_FILE_VERSION, "device", lu->name, "generation",
			      (json_int_t)pr->generation, "registrations", regs);
	if (!o)
		return NULL;
	int holder = -1, i = 0;
	for (const struct pr_reg *r = pr->regs; r; r = r->next, i++) {
		char key[24];
		snprintf(key, sizeof(key), "0x%016" PRIx64, r->key);
		json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:b}", "key", key, "initiator",
				      r->id.initiator, "target", r->id.target, "relative_port",
				      (int)r->id.rel_port, "all_target_ports", r->id.all_tg_pt);
		if (!j || json_array_append_new(regs, j) < 0) {
			json_decref(o);
			return NULL;
		}
		if (r == pr->holder)
			holder = i;
	}
	json_t *res = json_null();
	if (pr->type) {
		res = holder >= 0 ? json_pack("{s:i, s:i}", "type", pr->type, "holder", holder)
				  : json_pack("{s:i}", "type", pr->type);
	}
	if (!res || json_object_set_new(o, "reservation", res) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int write_file(const char *dir, const char *path, const char *text)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	/* @path is @dir/<name>. */
	return tnd_file_replace(dir, path + strlen(dir) + 1, text, strlen(text));
}

static int remove_file(const char *dir, const char *path)
{
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -errno;
	return tnd_fsync_dir(dir);
}

/*
 * Make the file match the newest persisted state: written while APTPL is
 * set and there is something to keep, absent otherwise. Never under
 * pr->lock. On failure APTPL is turned off (PTPL_A tells the truth) and
 * the file removed if possible: a stale file must not come back at start.
 */
static int pr_save(struct tnd_scsi_lu *lu)
{
	struct scsi_pr *pr = lu->pr;
	if (!pr->path)
		return 0;
	pthread_mutex_lock(&pr->save_lock);
	pthread_mutex_lock(&pr->lock);
	uint64_t seq = pr->change_seq;
	bool keep = pr->aptpl && pr->nr_regs > 0;
	json_t *j = keep && seq != pr->saved_seq ? pr_to_json(pr, lu) : NULL;
	pthread_mutex_unlock(&pr->lock);
	int ret = 0;
	if (seq != pr->saved_seq) {
		char *text = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
		if (keep && !text)
			ret = -ENOMEM;
		else
			ret = keep ? write_file(pr->dir, pr->path, text) : remove_file(pr->dir, pr->path);
		free(text);
		if (ret == 0)
			pr->saved_seq = seq;
	}
	json_decref(j);
	if (ret < 0) {
		tnd_err(TAG, "%s: cannot save persistent reservations to %s: %s; APTPL off",
			lu->name, pr->path, strerror(-ret));
		pthread_mutex_lock(&pr->lock);
		pr->aptpl = false;
		pr->change_seq++;
		pthread_mutex_unlock(&pr->lock);
		remove_file(pr->dir, pr->path);
	}
	pthread_mutex_unlock(&pr->save_lock);
	return ret;
}

/* Parse "0x" + 1..16 hex digits, nonzero. */
static bool parse_key(const char *s, uint64_t *out)
{
	if (!s || strncmp(s, "0x", 2) != 0)
		return false;
	s += 2;
	size_t n = strlen(s);
	if (n == 0 || n > 16)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*out = v;
	return v != 0;
}

static void pr_clear_regs(struct scsi_pr *pr)
{
	while (pr->regs)
		reg_unlink(pr, pr->regs);
	pr->type = 0;
	pr->holder = NULL;
}

/* Fill @pr from a parsed file; -EINVAL with @why on anything unexpected. */
static int pr_from_json(struct scsi_pr *pr, const struct tnd_scsi_lu *lu, json_t *o,
			const char **why)
{
	const char *format = NULL, *device = NULL;
	int version = 0;
	json_int_t gen = -1;
	json_t *regs = NULL, *res = NULL;
	json_error_t e;
	if (json_unpack_ex(o, &e, JSON_STRICT, "{s:s, s:i, s:s, s:I, s:o, s:o}", "format",
			   &format, "version", &version, "device", &device, "generation", &gen,
			   "registrations", &regs, "reservation", &res) < 0) {
		*why = "not a persistent reservation file";
		return -EINVAL;
	}
	if (strcmp(format, "tandem-pr") != 0 || version != PR_FILE_VERSION) {
		*why = "unknown format or version";
		return -EINVAL;
	}
	if (strcmp(device, lu->name) != 0) {
		*why = "written for another device";
		return -EINVAL;
	}
	if (gen < 0 || gen > UINT32_MAX) {
		*why = "bad generation";
		return -EINVAL;
	}
	if (!json_is_array(regs) || json_array_size(regs) == 0 ||
	    json_array_size(regs) > PR_MAX_REGS) {
		*why = "bad registrations";
		return -EINVAL;
	}
	size_t i;
	json_t *it;
	json_array_foreach(regs, i, it) {
		const char *key = NULL, *ini = NULL, *tgt = NULL;
		int rel = 0, all = 0;
		uint64_t k;
		if (json_unpack_ex(it, &e, JSON_STRICT, "{s:s, s:s, s:s, s:i, s:b}", "key", &key,
				   "initiator", &ini, "target", &tgt, "relative_port", &rel,
				   "all_target_ports", &all) < 0 ||
		    !parse_key(key, &k) || !ini[0] || strlen(ini) > 512 || !strstr(ini, ",i,0x") ||
		    !tgt[0] || strlen(tgt) > 512 || rel < 1 || rel > 0xffff) {
			*why = "bad registration";
			return -EINVAL;
		}
		for (const struct pr_reg *r = pr->regs; r; r = r->next) {
			struct pr_id id = { (char *)ini, (char *)tgt, (uint16_t)rel, all };
			if (id_equal(&r->id, &id)) {
				*why = "duplicate registration";
				return -EINVAL;
			}
		}
		if (!reg_add(pr, ini, tgt, (uint16_t)rel, all, k))
			return -ENOMEM;
	}
	if (!json_is_null(res)) {
		int type = 0, holder = -1;
		if (json_unpack_ex(res, &e, JSON_STRICT, "{s:i, s?:i}", "type", &type, "holder",
				   &holder) < 0 || !type_valid((uint8_t)type) || type > 0xf) {
			*why = "bad reservation";
			return -EINVAL;
		}
		pr->type = (uint8_t)type;
		if (type_all_regs(pr->type)) {
			if (holder != -1) {
				*why = "all-registrants reservation with a holder";
				return -EINVAL;
			}
		} else {
			if (holder < 0 || (unsigned)holder >= pr->nr_regs) {
				*why = "reservation holder out of range";
				return -EINVAL;
			}
			struct pr_reg *r = pr->regs;
			for (int h = 0; h < holder; h++)
				r = r->next;
			pr->holder = r;
		}
	}
	pr->generation = (uint32_t)gen;
	pr->aptpl = true;
	return 0;
}

static void pr_load(struct scsi_pr *pr, const struct tnd_scsi_lu *lu)
{
	struct stat st;
	if (stat(pr->path, &st) < 0) {
		if (errno != ENOENT)
			tnd_warn(TAG, "%s: persistent reservation file %s: %s; ignored", lu->name,
				 pr->path, strerror(errno));
		return;
	}
	json_error_t e;
	json_t *o = json_load_file(pr->path, JSON_REJECT_DUPLICATES, &e);
	const char *why = e.text;
	int ret = o ? pr_from_json(pr, lu, o, &why) : -EINVAL;
	json_decref(o);
	if (ret < 0) {
		pr_clear_regs(pr);
		pr->generation = 0;
		pr->aptpl = false;
		tnd_warn(TAG, "%s: ignoring persistent reservation file %s: %s", lu->name, pr->path,
			 ret == -ENOMEM ? "out of memory" : why);
		return;
	}
	tnd_info(TAG, "%s: restored %u persistent reservation registration(s)%s", lu->name,
		 pr->nr_regs, pr->type ? " and a reservation" : "");
}

int tnd_scsi_pr_forget(const char *state_dir, const char *name)
{
	if (!state_dir || strchr(name, '/') || name[0] == '.')
		return 0;
	char dir[PATH_MAX], path[PATH_MAX];
	if (snprintf(dir, sizeof(dir), "%s/pr", state_dir) >= (int)sizeof(dir) ||
	    snprintf(path, sizeof(path), "%s/%s.json", dir, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	return remove_file(dir, path);
}

/* ---- LU create / destroy ---- */

int scsi_pr_create(struct tnd_scsi_lu *lu, const char *state_dir, struct tnd_scsi_lu *twin)
{
	if (twin) {
		if (strcmp(twin->name, lu->name) != 0)
			return -EINVAL;
		atomic_fetch_add_explicit(&twin->pr->refs, 1, memory_order_relaxed);
		lu->pr = twin->pr;
		return 0;
	}
	struct scsi_pr *pr = calloc(1, sizeof(*pr));
	if (!pr)
		return -ENOMEM;
	atomic_init(&pr->refs, 1);
	atomic_init(&pr->gen, 0);
	pthread_mutex_init(&pr->lock, NULL);
	pthread_mutex_init(&pr->save_lock, NULL);
	lu->pr = pr;
	if (!state_dir)
		return 0;
	/* Device names are validated by the configuration; still, a name
	 * that could leave the directory gets no file. */
	if (strchr(lu->name, '/') || lu->name[0] == '.') {
		tnd_warn(TAG, "%s: device name unusable as a file name: APTPL unsupported",
			 lu->name);
		return 0;
	}
	if (asprintf(&pr->dir, "%s/pr", state_dir) < 0) {
		pr->dir = NULL;
		goto err_free;
	}
	if (asprintf(&pr->path, "%s/%s.json", pr->dir, lu->name) < 0) {
		pr->path = NULL;
		goto err_free;
	}
	pr_load(pr, lu);
	return 0;

err_free:
	scsi_pr_destroy(lu);
	return -ENOMEM;
}

void scsi_pr_destroy(struct tnd_scsi_lu *lu)
{
	struct scsi_pr *pr = lu->pr;
	if (!pr)
		return;
	lu->pr = NULL;
	if (atomic_fetch_sub_explicit(&pr->refs, 1, memory_order_acq_rel) != 1)
		return;
	pr_clear_regs(pr);
	while (pr->uas) {
		struct pr_ua *u = pr->uas;
		pr->uas = u->next;
		ua_free(u);
	}
	token_put(pr->spc2);
	free(pr->path);
	free(pr->dir);
	pthread_mutex_destroy(&pr->save_lock);
	pthread_mutex_destroy(&pr->lock);
	free(pr);
}

/* ---- PERSISTENT RESERVE OUT ---- */

/* How a service action ended (decided under the lock, reported after). */
struct pr_out_res {
	enum {
		PRO_GOOD,
		PRO_CONFLICT,
		PRO_FIELD_PARAM,        /* INVALID FIELD IN PARAMETER LIST at byte/bit */
		PRO_BAD_RELEASE,        /* INVALID RELEASE OF PERSISTENT RESERVATION */
		PRO_NO_RESOURCES,       /* INSUFFICIENT REGISTRATION RESOURCES */
	} kind;
	unsigned byte;
	int bit;
	bool changed;                   /* pr_gen bump */
	bool persist;                   /* persisted state changed */
};

static void res_field(struct pr_out_res *res, int kind, unsigned byte, int bit)
{
	res->kind = kind;
	res->byte = byte;
	res->bit = bit;
}

/* What every PR OUT service action shares. */
struct pr_out_args {
	const struct tnd_scsi_nexus *nx;
	uint8_t sa, type;
	uint64_t rk, sark;
	bool aptpl, all_tg_pt;
	const uint8_t *param;
	uint32_t plen;
};

/* Unregister @r (a registrant's own doing): SPC-4 5.13.11.2.2/3. */
static void unregister(struct scsi_pr *pr, struct pr_reg *r)
{
	if (pr->type && pr->holder == r) {
		/* A registrants-only reservation ends with its holder, and the
		 * other registrants hear of it. */
		if (type_regs_only(pr->type)) {
			for (struct pr_reg *o = pr->regs; o; o = o->next)
				if (o != r)
					ua_add(pr, &o->id, SCSI_UA_RES_RELEASED);
		}
		pr->type = 0;
	}
	reg_unlink(pr, r);
	/* An all-registrants reservation lasts while anyone is registered. */
	if (pr->type && !pr->nr_regs)
		pr->type = 0;
}

static void pro_register(struct scsi_pr *pr, const struct pr_out_args *a, struct pr_out_res *res)
{
	struct pr_reg *r = reg_find(pr, a->nx);
	bool ignore = a->sa == SCSI_PROUT_REGISTER_AND_IGNORE;
	if (!r) {
		if (!ignore && a->rk != 0) {
			res->kind = PRO_CONFLICT;
			return;
		}
		if (a->sark == 0)
			return;         /* nothing to register: GOOD, no change */
		if (pr->nr_regs >= PR_MAX_REGS) {
			res->kind = PRO_NO_RESOURCES;
			return;
		}
		if (!reg_add(pr, a->nx->initiator, a->nx->target_name, a->nx->rel_port_id,
			     a->all_tg_pt, a->sark)) {
			res->kind = PRO_NO_RESOURCES;
			return;
		}
		pr->aptpl = a->aptpl;
	} else {
		if (!ignore && a->rk != r->key) {
			res->kind = PRO_CONFLICT;
			return;
		}
		if (a->sark == 0) {
			unregister(pr, r);
		} else {
			r->key = a->sark;
			pr->aptpl = a->aptpl;
		}
	}
	pr->generation++;
	res->changed = res->persist = true;
}

static void pro_reserve(struct scsi_pr *pr, struct pr_reg *r, const struct pr_out_args *a,
			struct pr_out_res *res)
{
	if (pr->type) {
		if (!reg_is_holder(pr, r) || pr->type != a->type)
			res->kind = PRO_CONFLICT;
		return;                 /* the same reservation again: GOOD */
	}
	pr->type = a->type;
	pr->holder = type_all_regs(a->type) ? NULL : r;
	res->changed = res->persist = true;
}

static void pro_release(struct scsi_pr *pr, struct pr_reg *r, const struct pr_out_args *a,
			struct pr_out_res *res)
{
	if (!pr->type || !reg_is_holder(pr, r))
		return;                 /* nothing of ours to release: GOOD */
	if (pr->type != a->type) {
		res->kind = PRO_BAD_RELEASE;
		return;
	}
	if (type_regs_only(pr->type) || type_all_regs(pr->type))
		ua_to_registrants(pr, a->nx, SCSI_UA_RES_RELEASED);
	pr->type = 0;
	pr->holder = NULL;
	res->changed = res->persist = true;
}

static void pro_clear(struct scsi_pr *pr, const struct pr_out_args *a, struct pr_out_res *res)
{
	ua_to_registrants(pr, a->nx, SCSI_UA_RES_PREEMPTED);
	pr_clear_regs(pr);
	pr->generation++;
	res->changed = res->persist = true;
}

/* Remove every registration with @key except @self's; true if any had it. */
static bool remove_key(struct scsi_pr *pr, uint64_t key, const struct pr_reg *self)
{
	bool found = false;
	struct pr_reg *next;
	for (struct pr_reg *r = pr->regs; r; r = next) {
		next = r->next;
		if (r->key != key)
			continue;
		found = true;
		if (r == self)
			continue;
		ua_add(pr, &r->id, SCSI_UA_REG_PREEMPTED);
		reg_unlink(pr, r);
	}
	return found;
}

static bool key_registered(const struct scsi_pr *pr, uint64_t key)
{
	for (const struct pr_reg *r = pr->regs; r; r = r->next)
		if (r->key == key)
			return true;
	return false;
}

/* PREEMPT and PREEMPT AND ABORT: SPC-4 5.13.11.4. */
static void pro_preempt(struct scsi_pr *pr, struct pr_reg *self, const struct pr_out_args *a,
			struct pr_out_res *res)
{
	if (pr->type && type_all_regs(pr->type) && a->sark == 0) {
		/* Everyone else goes; we hold a new reservation. */
		struct pr_reg *next;
		for (struct pr_reg *r = pr->regs; r; r = next) {
			next = r->next;
			if (r != self) {
				ua_add(pr, &r->id, SCSI_UA_REG_PREEMPTED);
				reg_unlink(pr, r);
			}
		}
		pr->type = a->type;
		pr->holder = type_all_regs(a->type) ? NULL : self;
	} else if (a->sark == 0) {
		res_field(res, PRO_FIELD_PARAM, 8, -1);
		return;
	} else if (!key_registered(pr, a->sark)) {
		res->kind = PRO_CONFLICT;
		return;
	} else if (pr->type && !type_all_regs(pr->type) && pr->holder->key == a->sark) {
		/* Take the reservation over. */
		uint8_t old = pr->type;
		remove_key(pr, a->sark, self);
		pr->type = a->type;
		pr->holder = type_all_regs(a->type) ? NULL : self;
		if (old != a->type)
			ua_to_registrants(pr, a->nx, SCSI_UA_RES_RELEASED);
	} else {
		/* Registrations only; the reservation (if any) stays. */
		remove_key(pr, a->sark, self);
	}
	pr->generation++;
	res->changed = res->persist = true;
}

/*
 * REGISTER AND MOVE: register the nexus the TransportID names (with this
 * target and the given relative port) and hand it our reservation.
 * Only iSCSI TransportIDs of format 01b (initiator port name with ISID)
 * name one I_T nexus, so only those are accepted; the only target ports
 * we know are our own, so the relative port must be the one this nexus
 * came in through.
 */
static void pro_move(struct scsi_pr *pr, struct pr_reg *self, const struct pr_out_args *a,
		     struct pr_out_res *res)
{
	const uint8_t *p = a->param;
	bool unreg = p[17] & 0x02;
	uint16_t rel = tnd_get_be16(p + 18);
	uint32_t tl = tnd_get_be32(p + 20);
	if (!pr->type || type_all_regs(pr->type) || pr->holder != self) {
		res->kind = PRO_CONFLICT;
		return;
	}
	if (a->sark == 0) {
		res_field(res, PRO_FIELD_PARAM, 8, -1);
		return;
	}
	if (rel != a->nx->rel_port_id) {
		res_field(res, PRO_FIELD_PARAM, 18, -1);
		return;
	}
	const uint8_t *t = p + PR_PARAM_LEN;
	if ((t[0] & 0x0f) != 0x05) {
		res_field(res, PRO_FIELD_PARAM, PR_PARAM_LEN, 3);
		return;
	}
	if ((t[0] >> 6) != 0x01) {
		res_field(res, PRO_FIELD_PARAM, PR_PARAM_LEN, 7);
		return;
	}
	uint32_t al = tnd_get_be16(t + 2);
	if (al < 20 || (al & 3) || 4 + al > tl) {
		res_field(res, PRO_FIELD_PARAM, PR_PARAM_LEN + 2, -1);
		return;
	}
	const char *name = (const char *)t + 4;
	size_t nl = strnlen(name, al);
	const char *sep = nl < al ? strstr(name, ",i,0x") : NULL;
	if (!sep || sep == name || strlen(sep + 5) == 0 || strlen(sep + 5) > 12) {
		res_field(res, PRO_FIELD_PARAM, PR_PARAM_LEN + 4, -1);
		return;
	}
	if (strcasecmp(a->nx->initiator, name) == 0) {
		/* Moving to ourselves (same initiator port, target and port). */
		res_field(res, PRO_FIELD_PARAM, PR_PARAM_LEN + 4, -1);
		return;
	}
	struct pr_reg *dst = NULL;
	for (struct pr_reg *r = pr->regs; r; r = r->next)
		if (r != self && id_is(&r->id, name, a->nx->target_name, rel))
			dst = r;
	if (!dst) {
		if (pr->nr_regs >= PR_MAX_REGS ||
		    !(dst = reg_add(pr, name, a->nx->target_name, rel, false, a->sark))) {
			res->kind = PRO_NO_RESOURCES;
			return;
		}
	}
	dst->key = a->sark;
	pr->holder = dst;
	if (unreg)
		reg_unlink(pr, self);
	pr->aptpl = a->aptpl;
	pr->generation++;
	res->changed = res->persist = true;
}

/* Checks that need no state: CDB and parameter list. False: completed. */
static bool pr_out_args(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx,
			struct pr_out_args *a)
{
	const uint8_t *cdb = cmd->cdb;
	a->nx = ctx->nexus;
	a->sa = cdb[1] & 0x1f;
	a->type = cdb[2] & 0x0f;
	uint8_t scope = cdb[2] >> 4;
	uint32_t plen = tnd_get_be32(cdb + 5);
	bool move = a->sa == SCSI_PROUT_REGISTER_AND_MOVE;
	bool typed = a->sa == SCSI_PROUT_RESERVE || a->sa == SCSI_PROUT_RELEASE ||
		     a->sa == SCSI_PROUT_PREEMPT || a->sa == SCSI_PROUT_PREEMPT_AND_ABORT;

	if (typed && scope != PR_SCOPE_LU) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, 7);
		return false;
	}
	if (typed && !type_valid(a->type)) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_CDB, 2, 3);
		return false;
	}
	if (plen < PR_PARAM_LEN || ctx->dout_len < plen || !cmd->data ||
	    (move && plen > PR_PARAM_LEN + PR_TPID_MAX)) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
		return false;
	}
	const uint8_t *p = cmd->data;
	a->param = p;
	a->plen = plen;
	a->rk = tnd_get_be64(p);
	a->sark = tnd_get_be64(p + 8);
	if (move) {
		uint32_t tl = tnd_get_be32(p + 20);
		if (plen != PR_PARAM_LEN + tl) {
			scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST,
				   SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
			return false;
		}
		if (tl < 24) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 20, -1);
			return false;
		}
		if (p[16] || (p[17] & 0xfc)) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, p[16] ? 16 : 17, -1);
			return false;
		}
		a->aptpl = p[17] & 0x01;
		if (a->aptpl && !ctx->lu->pr->path) {
			scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 17, 0);
			return false;
		}
		return true;
	}
	/* We do not take SPEC_I_PT (SIP_C=0): list the bit as invalid. */
	if (p[20] & 0x08) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 20, 3);
		return false;
	}
	if (plen != PR_PARAM_LEN) {
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_PARAMETER_LIST_LENGTH_ERROR);
		return false;
	}
	if ((p[20] & 0xf2) || p[21]) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, p[21] ? 21 : 20, -1);
		return false;
	}
	bool registering = a->sa == SCSI_PROUT_REGISTER || a->sa == SCSI_PROUT_REGISTER_AND_IGNORE;
	a->all_tg_pt = registering && (p[20] & 0x04);
	a->aptpl = registering && (p[20] & 0x01);
	if (a->aptpl && !ctx->lu->pr->path) {
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, 20, 0);
		return false;
	}
	return true;
}

void spc_pr_out(struct tnd_scsi_cmd *cmd, const struct scsi_ctx *ctx)
{
	struct pr_out_args a;
	if (!pr_out_args(cmd, ctx, &a))
		return;
	struct tnd_scsi_lu *lu = ctx->lu;
	struct scsi_pr *pr = lu->pr;
	struct pr_out_res res = { .kind = PRO_GOOD, .bit = -1 };

	pthread_mutex_lock(&pr->lock);
	bool aptpl_before = pr->aptpl;
	res.changed = spc2_reap(pr);
	struct pr_reg *self = reg_find(pr, a.nx);
	bool registering = a.sa == SCSI_PROUT_REGISTER || a.sa == SCSI_PROUT_REGISTER_AND_IGNORE;
	if (spc2_other(pr, a.nx)) {
		/* Another nexus holds RESERVE(6): PR OUT conflicts (SPC-2). */
		res.kind = PRO_CONFLICT;
	} else if (registering) {
		pro_register(pr, &a, &res);
	} else if (!self || self->key != a.rk) {
		res.kind = PRO_CONFLICT;
	} else {
		switch (a.sa) {
		case SCSI_PROUT_RESERVE:
			pro_reserve(pr, self, &a, &res);
			break;
		case SCSI_PROUT_RELEASE:
			pro_release(pr, self, &a, &res);
			break;
		case SCSI_PROUT_CLEAR:
			pro_clear(pr, &a, &res);
			break;
		case SCSI_PROUT_PREEMPT:
		case SCSI_PROUT_PREEMPT_AND_ABORT:
			pro_preempt(pr, self, &a, &res);
			break;
		case SCSI_PROUT_REGISTER_AND_MOVE:
			pro_move(pr, self, &a, &res);
			break;
		}
	}
	if (!pr->nr_regs)
		pr->aptpl = false;      /* nothing left to keep */
	if (res.persist)
		pr->change_seq++;
	if (res.changed || res.persist)
		pr_bump(lu);
	bool save = res.persist && (aptpl_before || pr->aptpl);
	pthread_mutex_unlock(&pr->lock);

	if (save && pr_save(lu) < 0) {
		scsi_check(cmd, SCSI_KEY_HARDWARE_ERROR, SCSI_ASC_INTERNAL_TARGET_FAILURE);
		return;
	}
	switch (res.kind) {
	case PRO_GOOD:
		scsi_complete(cmd);
		break;
	case PRO_CONFLICT:
		scsi_reservation_conflict(cmd);
		break;
	case PRO_FIELD_PARAM:
		scsi_check_field(cmd, SCSI_ASC_INVALID_FIELD_IN_PARAM, res.byte, res.bit);
		break;
	case PRO_BAD_RELEASE:
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_INVALID_RELEASE_OF_PR);
		break;
	case PRO_NO_RESOURCES:
		scsi_check(cmd, SCSI_KEY_ILLEGAL_REQUEST, SCSI_ASC_INSUFFICIENT_REG_RESOURCES);
		break;
	}
}
