/*
 * iSCSI text keys; see iscsi_text.h.
 *
 * The negotiation is table-driven: every key we know is one row of
 * key_rules[] (designated by its enum index), and every row names a kind;
 * kind_fns[] holds the one function per kind that computes the answer
 * from the initiator's offer and our value. Adding a key is adding a row.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "iscsi_text.h"

/* The 24-bit DataSegmentLength field bounds every length key. */
#define ISCSI_DSL_FIELD_MAX_T ((1u << 24) - 1)

int tnd_iscsi_text_add(struct tnd_iscsi_text *t, const char *key, const char *value)
{
	size_t kl = strlen(key), vl = strlen(value);
	size_t need = kl + 1 + vl + 1;
	size_t limit = t->limit ? t->limit : TND_ISCSI_TEXT_MAX;
	if (t->len + need > limit)
		return -E2BIG;
	if (t->len + need > t->cap) {
		size_t cap = t->cap ? t->cap : 512;
		while (cap < t->len + need)
			cap *= 2;
		char *b = realloc(t->buf, cap);
		if (!b)
			return -ENOMEM;
		t->buf = b;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, key, kl);
	t->buf[t->len + kl] = '=';
	memcpy(t->buf + t->len + kl + 1, value, vl);
	t->buf[t->len + need - 1] = '\0';
	t->len += need;
	return 0;
}

void tnd_iscsi_text_free(struct tnd_iscsi_text *t)
{
	free(t->buf);
	t->buf = NULL;
	t->len = t->cap = 0;
}

/* RFC 7143 6.1: key names are letters, digits, '.', '-', '+', '@', '_'. */
static bool key_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '+' || c == '@' || c == '_';
}

int tnd_iscsi_text_parse(char *buf, size_t len, struct tnd_iscsi_pair *pairs, unsigned max)
{
	unsigned n = 0;
	size_t off = 0;
	/* The last pair must be NUL terminated on the wire, but a sender that
	 * forgets is tolerated: the caller leaves a spare byte for us. */
	buf[len] = '\0';
	while (off < len) {
		char *p = buf + off;
		size_t plen = strlen(p);
		if (plen == 0) {
			/* Stray NULs (padding-like) between pairs: skip. */
			off++;
			continue;
		}
		char *eq = memchr(p, '=', plen);
		if (!eq || eq == p)
			return -EINVAL;
		size_t kl = (size_t)(eq - p);
		if (kl > TND_ISCSI_KEY_MAX)
			return -EINVAL;
		for (size_t i = 0; i < kl; i++)
			if (!key_char_ok(p[i]))
				return -EINVAL;
		if (n == max)
			return -E2BIG;
		*eq = '\0';
		pairs[n].key = p;
		pairs[n].value = eq + 1;
		pairs[n].value_too_long = strlen(eq + 1) > TND_ISCSI_VALUE_MAX;
		n++;
		off += plen + 1;
	}
	return (int)n;
}

int tnd_iscsi_parse_number(const char *s, uint32_t *out)
{
	if (!s[0])
		return -EINVAL;
	uint64_t v = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		const char *p = s + 2;
		if (!*p)
			return -EINVAL;
		for (; *p; p++) {
			int d;
			if (*p >= '0' && *p <= '9')
				d = *p - '0';
			else if (*p >= 'a' && *p <= 'f')
				d = *p - 'a' + 10;
			else if (*p >= 'A' && *p <= 'F')
				d = *p - 'A' + 10;
			else
				return -EINVAL;
			v = v * 16 + (uint64_t)d;
			if (v > UINT32_MAX)
				return -EINVAL;
		}
	} else {
		for (const char *p = s; *p; p++) {
			if (*p < '0' || *p > '9')
				return -EINVAL;
			v = v * 10 + (uint64_t)(*p - '0');
			if (v > UINT32_MAX)
				return -EINVAL;
		}
	}
	*out = (uint32_t)v;
	return 0;
}

/* ---- the rules ---- */

enum key_kind {
	KIND_DIGEST,        /* list of None/CRC32C: pick the first we support */
	KIND_NUM_MIN,       /* numerical, result = min(offer, ours) */
	KIND_NUM_MAX,       /* numerical, result = max(offer, ours) */
	KIND_BOOL_AND,
	KIND_BOOL_OR,
	KIND_DECL_DSL,      /* MaxRecvDataSegmentLength: declarative per direction */
	KIND_NAME,          /* InitiatorName / TargetName: declarative iSCSI names */
	KIND_DECL_IGNORE,   /* declarative, nothing to answer (InitiatorAlias) */
	KIND_SESSION_TYPE,
	KIND_AUTH,
	KIND_IRRELEVANT,    /* obsolete with our other answers (marker intervals) */
	KIND_SEND_TARGETS,
	KIND_TARGET_ONLY,   /* a key only the target may send */
	KIND_TASK_REPORTING,
	KIND_NR,
};

enum key_id {
	K_HEADER_DIGEST,
	K_DATA_DIGEST,
	K_MAX_RECV_DSL,
	K_MAX_BURST,
	K_FIRST_BURST,
	K_INITIAL_R2T,
	K_IMMEDIATE_DATA,
	K_MAX_OUTSTANDING_R2T,
	K_DATA_PDU_IN_ORDER,
	K_DATA_SEQ_IN_ORDER,
	K_TIME2WAIT,
	K_TIME2RETAIN,
	K_ERL,
	K_MAX_CONNS,
	K_IF_MARKER,
	K_OF_MARKER,
	K_IF_MARK_INT,
	K_OF_MARK_INT,
	K_INITIATOR_NAME,
	K_TARGET_NAME,
	K_INITIATOR_ALIAS,
	K_SESSION_TYPE,
	K_AUTH_METHOD,
	K_SEND_TARGETS,
	K_TARGET_ALIAS,
	K_TARGET_ADDRESS,
	K_TPGT,
	K_PROTOCOL_LEVEL,
	K_TASK_REPORTING,
	K_NR,
};

#define ALL_LOGIN (TND_ISCSI_IN_SECURITY | TND_ISCSI_IN_OPERATIONAL)
#define PARAM(field) offsetof(struct tnd_iscsi_params, field)

struct key_rule {
	const char *name;
	enum key_kind kind;
	unsigned stages;
	uint32_t min, max;    /* numerical range */
	uint32_t ours;        /* our offer (numbers; 1/0 for booleans) */
	size_t param;         /* where the outcome goes in tnd_iscsi_params */
};

#define NO_PARAM SIZE_MAX

static const struct key_rule key_rules[K_NR] = {
	[K_HEADER_DIGEST] = { .name = "HeaderDigest", .kind = KIND_DIGEST, .stages = ALL_LOGIN,
			      .param = PARAM(header_digest) },
	[K_DATA_DIGEST] = { .name = "DataDigest", .kind = KIND_DIGEST, .stages = ALL_LOGIN,
			    .param = PARAM(data_digest) },
	[K_MAX_RECV_DSL] = { .name = "MaxRecvDataSegmentLength", .kind = KIND_DECL_DSL,
			     .stages = ALL_LOGIN | TND_ISCSI_IN_FFP, .min = 512,
			     .max = ISCSI_DSL_FIELD_MAX_T, .ours = TND_ISCSI_OUR_MAX_RECV_DSL,
			     .param = PARAM(max_xmit_dsl) },
	[K_MAX_BURST] = { .name = "MaxBurstLength", .kind = KIND_NUM_MIN, .stages = ALL_LOGIN,
			  .min = 512, .max = ISCSI_DSL_FIELD_MAX_T, .ours = TND_ISCSI_OUR_MAX_BURST,
			  .param = PARAM(max_burst) },
	[K_FIRST_BURST] = { .name = "FirstBurstLength", .kind = KIND_NUM_MIN, .stages = ALL_LOGIN,
			    .min = 512, .max = ISCSI_DSL_FIELD_MAX_T,
			    .ours = TND_ISCSI_OUR_FIRST_BURST, .param = PARAM(first_burst) },
	[K_INITIAL_R2T] = { .name = "InitialR2T", .kind = KIND_BOOL_OR, .stages = ALL_LOGIN,
			    .ours = 0, .param = PARAM(initial_r2t) },
	[K_IMMEDIATE_DATA] = { .name = "ImmediateData", .kind = KIND_BOOL_AND, .stages = ALL_LOGIN,
			       .ours = 1, .param = PARAM(immediate_data) },
	[K_MAX_OUTSTANDING_R2T] = { .name = "MaxOutstandingR2T", .kind = KIND_NUM_MIN,
				    .stages = ALL_LOGIN, .min = 1, .max = 65535,
				    .ours = TND_ISCSI_OUR_MAX_OUTSTANDING_R2T,
				    .param = PARAM(max_outstanding_r2t) },
	[K_DATA_PDU_IN_ORDER] = { .name = "DataPDUInOrder", .kind = KIND_BOOL_OR,
				  .stages = ALL_LOGIN, .ours = 1, .param = PARAM(data_pdu_in_order) },
	[K_DATA_SEQ_IN_ORDER] = { .name = "DataSequenceInOrder", .kind = KIND_BOOL_OR,
				  .stages = ALL_LOGIN, .ours = 1, .param = PARAM(data_seq_in_order) },
	[K_TIME2WAIT] = { .name = "DefaultTime2Wait", .kind = KIND_NUM_MAX, .stages = ALL_LOGIN,
			  .min = 0, .max = 3600, .ours = 2, .param = PARAM(time2wait) },
	[K_TIME2RETAIN] = { .name = "DefaultTime2Retain", .kind = KIND_NUM_MIN, .stages = ALL_LOGIN,
			    .min = 0, .max = 3600, .ours = 20, .param = PARAM(time2retain) },
	/* ErrorRecoveryLevel 0 only: errors end the session, no recovery. */
	[K_ERL] = { .name = "ErrorRecoveryLevel", .kind = KIND_NUM_MIN, .stages = ALL_LOGIN,
		    .min = 0, .max = 2, .ours = 0, .param = PARAM(erl) },
	/* One connection per session: a connection and its session share a reactor. */
	[K_MAX_CONNS] = { .name = "MaxConnections", .kind = KIND_NUM_MIN, .stages = ALL_LOGIN,
			  .min = 1, .max = 65535, .ours = 1, .param = PARAM(max_conns) },
	[K_IF_MARKER] = { .name = "IFMarker", .kind = KIND_BOOL_AND, .stages = ALL_LOGIN,
			  .ours = 0, .param = NO_PARAM },
	[K_OF_MARKER] = { .name = "OFMarker", .kind = KIND_BOOL_AND, .stages = ALL_LOGIN,
			  .ours = 0, .param = NO_PARAM },
	[K_IF_MARK_INT] = { .name = "IFMarkInt", .kind = KIND_IRRELEVANT, .stages = ALL_LOGIN,
			    .param = NO_PARAM },
	[K_OF_MARK_INT] = { .name = "OFMarkInt", .kind = KIND_IRRELEVANT, .stages = ALL_LOGIN,
			    .param = NO_PARAM },
	[K_INITIATOR_NAME] = { .name = "InitiatorName", .kind = KIND_NAME, .stages = ALL_LOGIN,
			       .param = NO_PARAM },
	[K_TARGET_NAME] = { .name = "TargetName", .kind = KIND_NAME, .stages = ALL_LOGIN,
			    .param = NO_PARAM },
	[K_INITIATOR_ALIAS] = { .name = "InitiatorAlias", .kind = KIND_DECL_IGNORE,
				.stages = ALL_LOGIN | TND_ISCSI_IN_FFP, .param = NO_PARAM },
	[K_SESSION_TYPE] = { .name = "SessionType", .kind = KIND_SESSION_TYPE,
			     .stages = ALL_LOGIN, .param = NO_PARAM },
	[K_AUTH_METHOD] = { .name = "AuthMethod", .kind = KIND_AUTH,
			    .stages = TND_ISCSI_IN_SECURITY, .param = NO_PARAM },
	[K_SEND_TARGETS] = { .name = "SendTargets", .kind = KIND_SEND_TARGETS,
			     .stages = TND_ISCSI_IN_FFP, .param = NO_PARAM },
	[K_TARGET_ALIAS] = { .name = "TargetAlias", .kind = KIND_TARGET_ONLY,
			     .stages = ALL_LOGIN | TND_ISCSI_IN_FFP, .param = NO_PARAM },
	[K_TARGET_ADDRESS] = { .name = "TargetAddress", .kind = KIND_TARGET_ONLY,
			       .stages = ALL_LOGIN | TND_ISCSI_IN_FFP, .param = NO_PARAM },
	[K_TPGT] = { .name = "TargetPortalGroupTag", .kind = KIND_TARGET_ONLY,
		     .stages = ALL_LOGIN, .param = NO_PARAM },
	/* RFC 7144: we implement RFC 7143, protocol level 1; the lower offer wins. */
	[K_PROTOCOL_LEVEL] = { .name = "iSCSIProtocolLevel", .kind = KIND_NUM_MIN,
			       .stages = ALL_LOGIN, .min = 0, .max = 31, .ours = 1,
			       .param = NO_PARAM },
	[K_TASK_REPORTING] = { .name = "TaskReporting", .kind = KIND_TASK_REPORTING,
			       .stages = ALL_LOGIN, .param = NO_PARAM },
};

static void set_param(struct tnd_iscsi_negotiator *ng, const struct key_rule *r, uint32_t v)
{
	if (r->param == NO_PARAM)
		return;
	char *base = (char *)&ng->params;
	switch (r->kind) {
	case KIND_DIGEST:
	case KIND_BOOL_AND:
	case KIND_BOOL_OR:
		*(bool *)(base + r->param) = v != 0;
		break;
	default:
		*(uint32_t *)(base + r->param) = v;
		break;
	}
}

static int answer(struct tnd_iscsi_text *resp, const char *key, const char *value)
{
	return tnd_iscsi_text_add(resp, key, value);
}

static int answer_num(struct tnd_iscsi_text *resp, const char *key, uint32_t v)
{
	char buf[16];
	snprintf(buf, sizeof(buf), "%u", v);
	return answer(resp, key, buf);
}

static int parse_bool(const char *s, uint32_t *out)
{
	if (strcmp(s, "Yes") == 0)
		*out = 1;
	else if (strcmp(s, "No") == 0)
		*out = 0;
	else
		return -EINVAL;
	return 0;
}

typedef int (*kind_fn)(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
		       const char *value, struct tnd_iscsi_text *resp);

/* Walk a comma-separated list and return the first element we accept. */
static int kind_digest(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
		       const char *value, struct tnd_iscsi_text *resp)
{
	const char *p = value;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t l = end ? (size_t)(end - p) : strlen(p);
		if (l == 4 && memcmp(p, "None", 4) == 0) {
			set_param(ng, r, 0);
			return answer(resp, r->name, "None");
		}
		if (l == 6 && memcmp(p, "CRC32C", 6) == 0) {
			set_param(ng, r, 1);
			return answer(resp, r->name, "CRC32C");
		}
		if (!end)
			break;
		p = end + 1;
	}
	return answer(resp, r->name, "Reject");
}

static int kind_num(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
		    const char *value, struct tnd_iscsi_text *resp)
{
	uint32_t v;
	if (tnd_iscsi_parse_number(value, &v) < 0 || v < r->min || v > r->max)
		return answer(resp, r->name, "Reject");
	if (r->kind == KIND_NUM_MIN)
		v = TND_MIN(v, r->ours);
	else
		v = TND_MAX(v, r->ours);
	set_param(ng, r, v);
	return answer_num(resp, r->name, v);
}

static int kind_bool(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
		     const char *value, struct tnd_iscsi_text *resp)
{
	uint32_t v;
	if (parse_bool(value, &v) < 0)
		return answer(resp, r->name, "Reject");
	v = r->kind == KIND_BOOL_AND ? (v && r->ours) : (v || r->ours);
	set_param(ng, r, v);
	return answer(resp, r->name, v ? "Yes" : "No");
}

/* The initiator declares what it can receive; that bounds what we send.
 * Our own value is declared separately (tnd_iscsi_negotiate_declare). */
static int kind_decl_dsl(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
			 const char *value, struct tnd_iscsi_text *resp)
{
	uint32_t v;
	if (tnd_iscsi_parse_number(value, &v) < 0 || v < r->min || v > r->max)
		return answer(resp, r->name, "Reject");
	set_param(ng, r, v);
	return 0;
}

static int kind_name(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
		     const char *value, struct tnd_iscsi_text *resp)
{
	size_t l = strlen(value);
	if (l == 0 || l > TND_ISCSI_NAME_MAX)
		return answer(resp, r->name, "Reject");
	char *dst = r == &key_rules[K_INITIATOR_NAME] ? ng->initiator_name : ng->target_name;
	memcpy(dst, value, l + 1);
	return 0;
}

static int kind_decl_ignore(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
			    const char *value, struct tnd_iscsi_text *resp)
{
	return 0;
}

static int kind_session_type(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
			     const char *value, struct tnd_iscsi_text *resp)
{
	if (strcmp(value, "Normal") == 0)
		ng->session_type = TND_ISCSI_SESSION_NORMAL;
	else if (strcmp(value, "Discovery") == 0)
		ng->session_type = TND_ISCSI_SESSION_DISCOVERY;
	else
		return answer(resp, r->name, "Reject");
	return 0;
}

/*
 * AuthMethod: the methods we can run, in our order of preference. Only
 * None today; CHAP joins this list together with its exchange in the login
 * code, and the login code refuses a session whose outcome its allow-list
 * does not accept.
 */
static const char *const auth_methods[] = { "None" };

static int kind_auth(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
		     const char *value, struct tnd_iscsi_text *resp)
{
	ng->auth_offered = true;
	for (size_t m = 0; m < TND_ARRAY_SIZE(auth_methods); m++) {
		const char *p = value;
		size_t ml = strlen(auth_methods[m]);
		while (*p) {
			const char *end = strchr(p, ',');
			size_t l = end ? (size_t)(end - p) : strlen(p);
			if (l == ml && memcmp(p, auth_methods[m], l) == 0) {
				snprintf(ng->auth_method, sizeof(ng->auth_method), "%s",
					 auth_methods[m]);
				return answer(resp, r->name, auth_methods[m]);
			}
			if (!end)
				break;
			p = end + 1;
		}
	}
	ng->auth_method[0] = '\0';
	return answer(resp, r->name, "Reject");
}

static int kind_irrelevant(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
			   const char *value, struct tnd_iscsi_text *resp)
{
	return answer(resp, r->name, "Irrelevant");
}

static int kind_send_targets(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
			     const char *value, struct tnd_iscsi_text *resp)
{
	size_t l = strlen(value);
	if (l > TND_ISCSI_NAME_MAX)
		return answer(resp, r->name, "Reject");
	ng->has_send_targets = true;
	memcpy(ng->send_targets, value, l + 1);
	return 0;
}

static int kind_target_only(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
			    const char *value, struct tnd_iscsi_text *resp)
{
	return answer(resp, r->name, "Irrelevant");
}

static int kind_task_reporting(struct tnd_iscsi_negotiator *ng, const struct key_rule *r,
			       const char *value, struct tnd_iscsi_text *resp)
{
	/* Only the RFC 3720 semantics; ResponseFence/FastAbort are not offered. */
	return answer(resp, r->name, "RFC3720");
}

static const kind_fn kind_fns[KIND_NR] = {
	[KIND_DIGEST] = kind_digest,
	[KIND_NUM_MIN] = kind_num,
	[KIND_NUM_MAX] = kind_num,
	[KIND_BOOL_AND] = kind_bool,
	[KIND_BOOL_OR] = kind_bool,
	[KIND_DECL_DSL] = kind_decl_dsl,
	[KIND_NAME] = kind_name,
	[KIND_DECL_IGNORE] = kind_decl_ignore,
	[KIND_SESSION_TYPE] = kind_session_type,
	[KIND_AUTH] = kind_auth,
	[KIND_IRRELEVANT] = kind_irrelevant,
	[KIND_SEND_TARGETS] = kind_send_targets,
	[KIND_TARGET_ONLY] = kind_target_only,
	[KIND_TASK_REPORTING] = kind_task_reporting,
};

void tnd_iscsi_negotiator_init(struct tnd_iscsi_negotiator *ng)
{
	memset(ng, 0, sizeof(*ng));
	ng->params = (struct tnd_iscsi_params){
		.header_digest = false,
		.data_digest = false,
		.max_xmit_dsl = TND_ISCSI_DEFAULT_DSL,
		.max_recv_dsl = TND_ISCSI_OUR_MAX_RECV_DSL,
		.max_burst = 262144,
		.first_burst = 65536,
		.max_outstanding_r2t = 1,
		.initial_r2t = true,
		.immediate_data = true,
		.data_pdu_in_order = true,
		.data_seq_in_order = true,
		.time2wait = 2,
		.time2retain = 20,
		.erl = 0,
		.max_conns = 1,
	};
}

static const struct key_rule *find_rule(const char *key)
{
	for (size_t i = 0; i < K_NR; i++)
		if (strcmp(key_rules[i].name, key) == 0)
			return &key_rules[i];
	return NULL;
}

int tnd_iscsi_negotiate(struct tnd_iscsi_negotiator *ng, unsigned stage,
			const struct tnd_iscsi_pair *pairs, unsigned n,
			struct tnd_iscsi_text *resp)
{
	uint64_t seen = 0;
	ng->has_send_targets = false;
	for (unsigned i = 0; i < n; i++) {
		const struct key_rule *r = find_rule(pairs[i].key);
		int ret;
		if (!r) {
			/* Unknown, vendor (X-...) or private (X#...) keys alike. */
			ret = answer(resp, pairs[i].key, "NotUnderstood");
		} else {
			uint64_t bit = 1ull << (r - key_rules);
			/* A key twice in one request is a protocol error (RFC 7143 6.2). */
			if (seen & bit)
				return -EPROTO;
			seen |= bit;
			if (pairs[i].value_too_long || pairs[i].value[0] == '\0')
				ret = answer(resp, r->name, "Reject");
			else if (!(r->stages & stage))
				ret = answer(resp, r->name, "Reject");
			else
				ret = kind_fns[r->kind](ng, r, pairs[i].value, resp);
		}
		if (ret < 0)
			return ret;
	}
	ng->answered |= seen;
	return 0;
}

int tnd_iscsi_negotiate_declare(struct tnd_iscsi_negotiator *ng, struct tnd_iscsi_text *resp)
{
	struct tnd_iscsi_params *p = &ng->params;
	if (p->first_burst > p->max_burst)
		p->first_burst = p->max_burst;
	if (ng->declared_ours)
		return 0;
	int ret = answer_num(resp, key_rules[K_MAX_RECV_DSL].name, p->max_recv_dsl);
	if (ret == 0)
		ng->declared_ours = true;
	return ret;
}
