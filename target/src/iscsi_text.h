/*
 * iscsi_text.h — iSCSI text keys: parsing and negotiation (RFC 7143
 * sections 6 and 13), internal to target/.
 *
 * Purpose: a login or Text request carries "key=value\0" pairs. This
 * module splits such a text into pairs (checking the syntax limits: key
 * names of at most 63 bytes made of the allowed characters, values of at
 * most 255 bytes, 223 for iSCSI names), and runs the target side of the
 * negotiation: each key has one rule in a table (its kind — list,
 * numerical minimum or maximum, boolean AND or OR, declarative — the
 * stages it is valid in, its range and our own value), and the kind
 * decides the answer. Unknown keys are answered NotUnderstood, bad
 * values Reject. The outcome lands in struct tnd_iscsi_params, which the
 * connection then obeys.
 *
 * What is not negotiation stays with the caller: whether the target
 * exists, the allow-list, authentication steps (the AuthMethod outcome is
 * reported here; the method's own exchange runs in the login code) and
 * answering SendTargets (whose value is handed back).
 *
 * Threading: a negotiator belongs to one connection and is used on its
 * reactor only.
 *
 * Ownership: the response text buffer is owned by the caller's struct
 * tnd_iscsi_text and freed with tnd_iscsi_text_free(). Parsing works in
 * place on a caller-owned buffer.
 */
#ifndef TND_TARGET_ISCSI_TEXT_H
#define TND_TARGET_ISCSI_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TND_ISCSI_KEY_MAX 63
#define TND_ISCSI_VALUE_MAX 255
#define TND_ISCSI_NAME_MAX 223
/* The most text we accept in one request, across continuation PDUs. */
#define TND_ISCSI_TEXT_MAX 8192
/* The most key=value pairs in one request (8192 / "a=b\0"). */
#define TND_ISCSI_PAIRS_MAX 2048

/* Our own offers; what a session ends up with is in tnd_iscsi_params. */
#define TND_ISCSI_OUR_MAX_RECV_DSL (256u * 1024)
#define TND_ISCSI_OUR_MAX_BURST (1024u * 1024)
#define TND_ISCSI_OUR_FIRST_BURST (64u * 1024)
#define TND_ISCSI_OUR_MAX_OUTSTANDING_R2T 16u
#define TND_ISCSI_DEFAULT_DSL 8192u

/* A growable response text with a hard cap. */
struct tnd_iscsi_text {
	char *buf;
	size_t len;
	size_t cap;
	size_t limit;   /* 0 = TND_ISCSI_TEXT_MAX */
};

/* Append "key=value\0". Returns 0, -ENOMEM or -E2BIG (over the limit). */
int tnd_iscsi_text_add(struct tnd_iscsi_text *t, const char *key, const char *value);
void tnd_iscsi_text_free(struct tnd_iscsi_text *t);

struct tnd_iscsi_pair {
	const char *key;
	const char *value;
	bool value_too_long;   /* syntactically fine key, value over 255 */
};

/*
 * Split @len bytes at @buf into pairs, writing NULs in place (the buffer
 * must have one spare byte after @len). Returns the number of pairs, or
 * -EINVAL for a malformed text (no '=', empty or oversized key name,
 * forbidden characters) or -E2BIG for more than @max pairs.
 */
int tnd_iscsi_text_parse(char *buf, size_t len, struct tnd_iscsi_pair *pairs, unsigned max);

enum tnd_iscsi_session_type {
	TND_ISCSI_SESSION_UNSET,
	TND_ISCSI_SESSION_NORMAL,
	TND_ISCSI_SESSION_DISCOVERY,
};

/* Negotiated operational parameters (RFC 7143 defaults before login). */
struct tnd_iscsi_params {
	bool header_digest;
	bool data_digest;
	uint32_t max_xmit_dsl;        /* the initiator's MaxRecvDataSegmentLength */
	uint32_t max_recv_dsl;        /* ours */
	uint32_t max_burst;
	uint32_t first_burst;
	uint32_t max_outstanding_r2t;
	bool initial_r2t;
	bool immediate_data;
	bool data_pdu_in_order;
	bool data_seq_in_order;
	uint32_t time2wait;
	uint32_t time2retain;
	uint32_t erl;
	uint32_t max_conns;
};

enum {
	TND_ISCSI_AUTH_NONE = 1u << 0,
	TND_ISCSI_AUTH_CHAP = 1u << 1,
};

/* Index of each CHAP key in tnd_iscsi_negotiator.chap[]. */
enum { TND_ISCSI_CHAP_A, TND_ISCSI_CHAP_I, TND_ISCSI_CHAP_C, TND_ISCSI_CHAP_N, TND_ISCSI_CHAP_R };

/* Stages a key may appear in (bit per stage). */
enum {
	TND_ISCSI_IN_SECURITY = 1u << 0,
	TND_ISCSI_IN_OPERATIONAL = 1u << 1,
	TND_ISCSI_IN_FFP = 1u << 2,
};

struct tnd_iscsi_negotiator {
	struct tnd_iscsi_params params;
	/* Declarations and identity seen so far. */
	char initiator_name[TND_ISCSI_NAME_MAX + 1];
	char target_name[TND_ISCSI_NAME_MAX + 1];
	enum tnd_iscsi_session_type session_type;
	bool auth_offered;            /* AuthMethod was seen */
	char auth_method[16];         /* chosen method, "" until negotiated */
	/* Methods AuthMethod may settle on (TND_ISCSI_AUTH_* bits), set by the
	 * login code once it knows the initiator and target: None alone by
	 * default, CHAP alone when the initiator's ACL requires it. */
	unsigned auth_allowed;
	/* CHAP_A/I/C/N/R of the last request, pointing into the request text
	 * (valid until the caller reuses it); NULL where absent. */
	const char *chap[5];
	/* SendTargets value of the last request (valid if has_send_targets). */
	bool has_send_targets;
	char send_targets[TND_ISCSI_NAME_MAX + 1];
	bool declared_ours;           /* our declarations already sent */
	uint64_t answered;            /* keys seen in this login, by rule index */
};

/* Defaults of RFC 7143 section 13, and our own MaxRecvDataSegmentLength. */
void tnd_iscsi_negotiator_init(struct tnd_iscsi_negotiator *ng);

/*
 * Negotiate the pairs of one request in @stage (a TND_ISCSI_IN_* bit),
 * appending answers to @resp. Returns 0, or -EPROTO for a protocol error
 * that fails the login or rejects the Text request (a key given twice in
 * one request, text syntax errors are caught by the parser), or -E2BIG /
 * -ENOMEM from the response buffer.
 */
int tnd_iscsi_negotiate(struct tnd_iscsi_negotiator *ng, unsigned stage,
			const struct tnd_iscsi_pair *pairs, unsigned n,
			struct tnd_iscsi_text *resp);

/*
 * Add our own declarations (MaxRecvDataSegmentLength) once, and settle
 * dependent values (FirstBurstLength <= MaxBurstLength). Call when moving
 * to the operational stage or to full feature phase.
 */
int tnd_iscsi_negotiate_declare(struct tnd_iscsi_negotiator *ng, struct tnd_iscsi_text *resp);

/* Parse a numerical value (decimal or 0x hex), <= UINT32_MAX. 0 or -EINVAL. */
int tnd_iscsi_parse_number(const char *s, uint32_t *out);

#endif
