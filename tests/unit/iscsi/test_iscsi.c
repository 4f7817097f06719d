/*
 * Unit tests for the iSCSI transport: PDU decoding (BHS fields, AHS,
 * digests, padding, length limits), LUN addressing, the CmdSN window, the
 * buffer pool, text key parsing and each negotiation rule, and — through a
 * real server on a loopback port driven by its own reactor thread — a
 * discovery login whose SendTargets answer must be split at the
 * initiator's MaxRecvDataSegmentLength of 512 bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tnd_common.h"
#include "tnd_reactor.h"
#include "tnd_target.h"
#include "iscsi_auth.h"
#include "iscsi_pdu.h"
#include "iscsi_pool.h"
#include "iscsi_text.h"
#include "scsi.h"
#include "tnd_volume.h"

/* ---- PDU decoding ---- */

static const struct tnd_iscsi_pdu_limits plain = { .max_data = 8192 };
static const struct tnd_iscsi_pdu_limits digests = { .max_data = 8192, .header_digest = true,
						      .data_digest = true };

static size_t make_pdu(uint8_t *buf, uint8_t op, const uint8_t *ahs, uint32_t ahs_len,
		       const void *data, uint32_t len, const struct tnd_iscsi_pdu_limits *lim)
{
	memset(buf, 0, ISCSI_BHS_LEN);
	buf[0] = op;
	buf[1] = 0x80;
	buf[4] = (uint8_t)(ahs_len / 4);
	tnd_put_be24(buf + 5, len);
	tnd_put_be32(buf + 16, 0x11223344);
	size_t off = ISCSI_BHS_LEN;
	if (ahs_len)
		memcpy(buf + off, ahs, ahs_len);
	off += ahs_len;
	if (lim->header_digest) {
		tnd_iscsi_digest_put(buf + off, tnd_crc32c(0, buf, off));
		off += 4;
	}
	size_t dstart = off;
	if (len)
		memcpy(buf + off, data, len);
	off += len;
	while (off & 3)
		buf[off++] = 0;
	if (lim->data_digest && len) {
		tnd_iscsi_digest_put(buf + off, tnd_crc32c(0, buf + dstart, off - dstart));
		off += 4;
	}
	return off;
}

static void pdu_bhs_fields(void **state)
{
	uint8_t buf[256];
	size_t n = make_pdu(buf, ISCSI_OP_NOP_OUT | ISCSI_OP_IMMEDIATE, NULL, 0, "hello", 5, &plain);
	assert_int_equal(n, 48 + 8);
	struct tnd_iscsi_hdr h;
	const uint8_t *data;
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &data), (int)n);
	assert_int_equal(h.opcode, ISCSI_OP_NOP_OUT);
	assert_true(h.immediate);
	assert_int_equal(h.flags, 0x80);
	assert_int_equal(h.data_len, 5);
	assert_int_equal(h.pad_len, 3);
	assert_int_equal(h.itt, 0x11223344);
	assert_memory_equal(data, "hello", 5);
	/* Every prefix is "need more". */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(tnd_iscsi_pdu_decode(buf, i, &plain, &h, &data), 0);
}

static void pdu_digests(void **state)
{
	uint8_t buf[256];
	size_t n = make_pdu(buf, ISCSI_OP_TEXT_REQ, NULL, 0, "a=b", 4, &digests);
	assert_int_equal(n, 48 + 4 + 4 + 4);
	struct tnd_iscsi_hdr h;
	const uint8_t *data;
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &digests, &h, &data), (int)n);
	buf[20] ^= 1;   /* a header bit flips */
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &digests, &h, &data), TND_ISCSI_EHDR_DIGEST);
	buf[20] ^= 1;
	buf[48 + 4 + 1] ^= 1;   /* a data bit flips */
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &digests, &h, &data), TND_ISCSI_EDATA_DIGEST);
	buf[48 + 4 + 1] ^= 1;
	/* No data: no data digest either. */
	n = make_pdu(buf, ISCSI_OP_NOP_OUT, NULL, 0, NULL, 0, &digests);
	assert_int_equal(n, 52);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &digests, &h, &data), 52);
}

static void pdu_padding_and_limits(void **state)
{
	static uint8_t buf[20000];
	uint8_t data[8193];
	memset(data, 'x', sizeof(data));
	struct tnd_iscsi_hdr h;
	const uint8_t *d;
	for (uint32_t len = 1; len <= 8; len++) {
		size_t n = make_pdu(buf, ISCSI_OP_TEXT_REQ, NULL, 0, data, len, &plain);
		assert_int_equal(n % 4, 0);
		assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &d), (int)n);
		assert_int_equal(h.pad_len, (4 - len % 4) % 4);
	}
	size_t n = make_pdu(buf, ISCSI_OP_TEXT_REQ, NULL, 0, data, 8193, &plain);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &d), TND_ISCSI_ETOO_LONG);
	/* The limit is known from the header alone. */
	assert_int_equal(tnd_iscsi_hdr_decode(buf, 48, &plain, &h), TND_ISCSI_ETOO_LONG);
}

static void pdu_ahs(void **state)
{
	uint8_t buf[512];
	struct tnd_iscsi_hdr h;
	const uint8_t *d;
	/* Extended CDB AHS: length 9 (1 reserved + 8 CDB bytes) -> 12 bytes. */
	uint8_t ahs[12] = { 0, 9, 1, 0 };
	size_t n = make_pdu(buf, ISCSI_OP_SCSI_CMD, ahs, 12, NULL, 0, &plain);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &d), (int)n);
	assert_int_equal(h.ahs_len, 12);
	assert_int_equal(h.hdr_len, 60);
	/* With a header digest the AHS is covered too. */
	n = make_pdu(buf, ISCSI_OP_SCSI_CMD, ahs, 12, NULL, 0, &digests);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &digests, &h, &d), (int)n);
	/* Garbage: length running past the total, unknown type, zero length. */
	uint8_t bad1[8] = { 0, 40, 1, 0 };
	n = make_pdu(buf, ISCSI_OP_SCSI_CMD, bad1, 8, NULL, 0, &plain);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &d), TND_ISCSI_EAHS);
	uint8_t bad2[8] = { 0, 5, 7, 0 };
	n = make_pdu(buf, ISCSI_OP_SCSI_CMD, bad2, 8, NULL, 0, &plain);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &d), TND_ISCSI_EAHS);
	uint8_t bad3[4] = { 0, 0, 1, 0 };
	n = make_pdu(buf, ISCSI_OP_SCSI_CMD, bad3, 4, NULL, 0, &plain);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &d), TND_ISCSI_EAHS);
	/* Bidi read length AHS must be exactly 5. */
	uint8_t bidi[8] = { 0, 5, 2, 0, 0, 0, 0x10, 0 };
	n = make_pdu(buf, ISCSI_OP_SCSI_CMD, bidi, 8, NULL, 0, &plain);
	assert_int_equal(tnd_iscsi_pdu_decode(buf, n, &plain, &h, &d), (int)n);
}

static void lun_addressing(void **state)
{
	uint8_t p[8];
	uint64_t lun;
	for (uint64_t l = 0; l <= TND_ISCSI_LUN_MAX; l += 97) {
		tnd_iscsi_lun_encode(p, l);
		assert_int_equal(tnd_iscsi_lun_decode(p, &lun), 0);
		assert_int_equal(lun, l);
	}
	tnd_iscsi_lun_encode(p, 5);
	assert_int_equal(p[0], 0);
	assert_int_equal(p[1], 5);
	tnd_iscsi_lun_encode(p, 300);
	assert_int_equal(p[0], 0x41);
	assert_int_equal(p[1], 300 - 256);
	uint8_t bad[8] = { 0, 1, 0, 0, 0, 0, 0, 1 };
	assert_int_equal(tnd_iscsi_lun_decode(bad, &lun), -EINVAL);
	uint8_t ext[8] = { 0xc0, 1 };
	assert_int_equal(tnd_iscsi_lun_decode(ext, &lun), -EINVAL);
	uint8_t bus[8] = { 0x01, 1 };
	assert_int_equal(tnd_iscsi_lun_decode(bus, &lun), -EINVAL);
}

/* ---- CmdSN window ---- */

static void cmdsn_window(void **state)
{
	assert_int_equal(tnd_iscsi_cmdsn_check(10, 137, 10), TND_ISCSI_CMDSN_NOW);
	assert_int_equal(tnd_iscsi_cmdsn_check(10, 137, 11), TND_ISCSI_CMDSN_LATER);
	assert_int_equal(tnd_iscsi_cmdsn_check(10, 137, 137), TND_ISCSI_CMDSN_LATER);
	assert_int_equal(tnd_iscsi_cmdsn_check(10, 137, 138), TND_ISCSI_CMDSN_OUTSIDE);
	assert_int_equal(tnd_iscsi_cmdsn_check(10, 137, 9), TND_ISCSI_CMDSN_OUTSIDE);
	assert_int_equal(tnd_iscsi_cmdsn_check(10, 137, 0x80000000u), TND_ISCSI_CMDSN_OUTSIDE);
	/* Across the wrap of 32-bit serial numbers. */
	uint32_t exp = 0xfffffff0u, max = exp + 127;
	assert_int_equal(tnd_iscsi_cmdsn_check(exp, max, 5), TND_ISCSI_CMDSN_LATER);
	assert_int_equal(tnd_iscsi_cmdsn_check(exp, max, max), TND_ISCSI_CMDSN_LATER);
	assert_int_equal(tnd_iscsi_cmdsn_check(exp, max, max + 1), TND_ISCSI_CMDSN_OUTSIDE);
	assert_int_equal(tnd_iscsi_cmdsn_check(exp, max, exp - 1), TND_ISCSI_CMDSN_OUTSIDE);
	assert_true(tnd_iscsi_sn_lt(0xffffffffu, 0));
	assert_false(tnd_iscsi_sn_lt(0, 0xffffffffu));

	/* Depth 128: an idle session offers ExpCmdSN..ExpCmdSN+127. */
	assert_int_equal(tnd_iscsi_max_cmdsn(1, 0, 128, 0), 128);
	/* Three commands outstanding take three slots... */
	assert_int_equal(tnd_iscsi_max_cmdsn(4, 0, 128, 3), 128);
	/* ...a full window is MaxCmdSN = ExpCmdSN - 1... */
	assert_int_equal(tnd_iscsi_max_cmdsn(129, 0, 128, 128), 128);
	/* ...and the window never shrinks once offered. */
	assert_int_equal(tnd_iscsi_max_cmdsn(10, 200, 128, 127), 200);
	assert_int_equal(tnd_iscsi_max_cmdsn(0xffffffffu, 0xfffffff0u, 128, 0), 126);
}

/* ---- pool ---- */

static void pool_reuse(void **state)
{
	struct tnd_iscsi_pool *pool;
	assert_int_equal(tnd_iscsi_pool_create(1 << 20, &pool), 0);
	void *a = tnd_iscsi_pool_get(pool, 5000);
	assert_non_null(a);
	assert_int_equal((uintptr_t)a % 4096, 0);
	memset(a, 1, 8192);   /* the class is 8 KiB */
	tnd_iscsi_pool_put(pool, a, 5000);
	void *b = tnd_iscsi_pool_get(pool, 8192);
	assert_ptr_equal(a, b);
	void *big = tnd_iscsi_pool_get(pool, 9u << 20);   /* beyond the classes */
	assert_non_null(big);
	assert_int_equal(tnd_iscsi_pool_outstanding(pool), 2);
	tnd_iscsi_pool_put(pool, big, 9u << 20);
	tnd_iscsi_pool_put(pool, b, 8192);
	assert_int_equal(tnd_iscsi_pool_outstanding(pool), 0);
	tnd_iscsi_pool_destroy(pool);
}

/* ---- text keys ---- */

static int parse(const char *text, size_t len, struct tnd_iscsi_pair *pairs, char *buf)
{
	memcpy(buf, text, len);
	return tnd_iscsi_text_parse(buf, len, pairs, 64);
}

static void text_parsing(void **state)
{
	struct tnd_iscsi_pair pairs[64];
	char buf[2048];
	static const char ok[] = "A=1\0Bb.c-d+e@f_g=x=y\0Empty=\0";
	assert_int_equal(parse(ok, sizeof(ok) - 1, pairs, buf), 3);
	assert_string_equal(pairs[0].key, "A");
	assert_string_equal(pairs[0].value, "1");
	assert_string_equal(pairs[1].key, "Bb.c-d+e@f_g");
	assert_string_equal(pairs[1].value, "x=y");
	assert_string_equal(pairs[2].value, "");
	/* Without the final NUL: tolerated. */
	assert_int_equal(parse("A=1\0B=2", 7, pairs, buf), 2);
	assert_int_equal(parse("NoEquals\0", 9, pairs, buf), -EINVAL);
	assert_int_equal(parse("=v\0", 3, pairs, buf), -EINVAL);
	assert_int_equal(parse("Bad Key=v\0", 10, pairs, buf), -EINVAL);
	char key[80];
	memset(key, 'K', 63);
	strcpy(key + 63, "=v");
	assert_int_equal(parse(key, strlen(key) + 1, pairs, buf), 1);
	memset(key, 'K', 64);
	strcpy(key + 64, "=v");
	assert_int_equal(parse(key, strlen(key) + 1, pairs, buf), -EINVAL);
	char val[300] = "K=";
	memset(val + 2, 'v', 255);
	val[257] = '\0';
	assert_int_equal(parse(val, 258, pairs, buf), 1);
	assert_false(pairs[0].value_too_long);
	memset(val + 2, 'v', 256);
	val[258] = '\0';
	assert_int_equal(parse(val, 259, pairs, buf), 1);
	assert_true(pairs[0].value_too_long);
	/* Too many pairs for the caller's array. */
	char many[64 * 4 + 8];
	for (int i = 0; i < 65; i++)
		memcpy(many + i * 4, "a=b", 4);
	assert_int_equal(tnd_iscsi_text_parse(many, 65 * 4, pairs, 64), -E2BIG);

	uint32_t v;
	assert_int_equal(tnd_iscsi_parse_number("262144", &v), 0);
	assert_int_equal(v, 262144);
	assert_int_equal(tnd_iscsi_parse_number("0x200", &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(tnd_iscsi_parse_number("12a", &v), -EINVAL);
	assert_int_equal(tnd_iscsi_parse_number("", &v), -EINVAL);
	assert_int_equal(tnd_iscsi_parse_number("4294967296", &v), -EINVAL);
}

/* Negotiate @text in @stage and return the answer to @key ("" when none). */
static const char *answer_of(struct tnd_iscsi_negotiator *ng, unsigned stage, const char *text,
			     const char *key, int *ret)
{
	static char out[512];
	struct tnd_iscsi_pair pairs[64];
	char buf[2048];
	size_t len = strlen(text) + 1;
	memcpy(buf, text, len);
	/* ';' separates pairs in these test strings. */
	for (size_t i = 0; i < len; i++)
		if (buf[i] == ';')
			buf[i] = '\0';
	int n = tnd_iscsi_text_parse(buf, len - 1, pairs, 64);
	assert_true(n >= 0);
	struct tnd_iscsi_text resp = { 0 };
	*ret = tnd_iscsi_negotiate(ng, stage, pairs, (unsigned)n, &resp);
	out[0] = '\0';
	for (size_t off = 0; off < resp.len; off += strlen(resp.buf + off) + 1) {
		const char *kv = resp.buf + off;
		size_t kl = strlen(key);
		if (strncmp(kv, key, kl) == 0 && kv[kl] == '=')
			snprintf(out, sizeof(out), "%s", kv + kl + 1);
	}
	tnd_iscsi_text_free(&resp);
	return out;
}

#define OP TND_ISCSI_IN_OPERATIONAL

static void negotiate_rules(void **state)
{
	struct tnd_iscsi_negotiator ng;
	int ret;
	tnd_iscsi_negotiator_init(&ng);
	/* Lists: the first we support, in the initiator's order. */
	assert_string_equal(answer_of(&ng, OP, "HeaderDigest=CRC32C,None", "HeaderDigest", &ret), "CRC32C");
	assert_true(ng.params.header_digest);
	assert_string_equal(answer_of(&ng, OP, "DataDigest=None,CRC32C", "DataDigest", &ret), "None");
	assert_false(ng.params.data_digest);
	assert_string_equal(answer_of(&ng, OP, "DataDigest=MD5", "DataDigest", &ret), "Reject");
	/* Numerical minimum. */
	assert_string_equal(answer_of(&ng, OP, "MaxBurstLength=16776192", "MaxBurstLength", &ret), "1048576");
	assert_int_equal(ng.params.max_burst, 1048576);
	assert_string_equal(answer_of(&ng, OP, "MaxBurstLength=4096", "MaxBurstLength", &ret), "4096");
	assert_string_equal(answer_of(&ng, OP, "FirstBurstLength=100", "FirstBurstLength", &ret), "Reject");
	assert_string_equal(answer_of(&ng, OP, "FirstBurstLength=262144", "FirstBurstLength", &ret), "65536");
	assert_string_equal(answer_of(&ng, OP, "MaxOutstandingR2T=0", "MaxOutstandingR2T", &ret), "Reject");
	assert_string_equal(answer_of(&ng, OP, "MaxOutstandingR2T=64", "MaxOutstandingR2T", &ret), "16");
	assert_string_equal(answer_of(&ng, OP, "DefaultTime2Retain=0", "DefaultTime2Retain", &ret), "0");
	assert_string_equal(answer_of(&ng, OP, "ErrorRecoveryLevel=2", "ErrorRecoveryLevel", &ret), "0");
	assert_string_equal(answer_of(&ng, OP, "MaxConnections=8", "MaxConnections", &ret), "1");
	/* Numerical maximum. */
	assert_string_equal(answer_of(&ng, OP, "DefaultTime2Wait=0", "DefaultTime2Wait", &ret), "2");
	assert_string_equal(answer_of(&ng, OP, "DefaultTime2Wait=9", "DefaultTime2Wait", &ret), "9");
	assert_string_equal(answer_of(&ng, OP, "DefaultTime2Wait=3601", "DefaultTime2Wait", &ret), "Reject");
	/* Boolean OR (ours No for InitialR2T, Yes for the in-order keys). */
	assert_string_equal(answer_of(&ng, OP, "InitialR2T=Yes", "InitialR2T", &ret), "Yes");
	assert_true(ng.params.initial_r2t);
	assert_string_equal(answer_of(&ng, OP, "InitialR2T=No", "InitialR2T", &ret), "No");
	assert_false(ng.params.initial_r2t);
	assert_string_equal(answer_of(&ng, OP, "DataPDUInOrder=No", "DataPDUInOrder", &ret), "Yes");
	assert_string_equal(answer_of(&ng, OP, "DataSequenceInOrder=No", "DataSequenceInOrder", &ret), "Yes");
	/* Boolean AND. */
	assert_string_equal(answer_of(&ng, OP, "ImmediateData=No", "ImmediateData", &ret), "No");
	assert_false(ng.params.immediate_data);
	assert_string_equal(answer_of(&ng, OP, "ImmediateData=Yes", "ImmediateData", &ret), "Yes");
	assert_string_equal(answer_of(&ng, OP, "IFMarker=Yes", "IFMarker", &ret), "No");
	assert_string_equal(answer_of(&ng, OP, "OFMarker=No", "OFMarker", &ret), "No");
	assert_string_equal(answer_of(&ng, OP, "ImmediateData=maybe", "ImmediateData", &ret), "Reject");
	assert_string_equal(answer_of(&ng, OP, "OFMarkInt=2048", "OFMarkInt", &ret), "Irrelevant");
	/* Declarative: no answer, but it bounds what we send. */
	assert_string_equal(answer_of(&ng, OP, "MaxRecvDataSegmentLength=512", "MaxRecvDataSegmentLength", &ret), "");
	assert_int_equal(ng.params.max_xmit_dsl, 512);
	assert_string_equal(answer_of(&ng, OP, "MaxRecvDataSegmentLength=511", "MaxRecvDataSegmentLength", &ret), "Reject");
	assert_int_equal(ng.params.max_xmit_dsl, 512);
	/* Unknown and vendor keys. */
	assert_string_equal(answer_of(&ng, OP, "X-com.example.Foo=1", "X-com.example.Foo", &ret), "NotUnderstood");
	assert_string_equal(answer_of(&ng, OP, "Bogus=1", "Bogus", &ret), "NotUnderstood");
	/* A key in the wrong stage or with an empty/oversized value. */
	assert_string_equal(answer_of(&ng, OP, "AuthMethod=None", "AuthMethod", &ret), "Reject");
	assert_string_equal(answer_of(&ng, TND_ISCSI_IN_FFP, "MaxBurstLength=512", "MaxBurstLength", &ret), "Reject");
	assert_string_equal(answer_of(&ng, OP, "MaxBurstLength=", "MaxBurstLength", &ret), "Reject");
	assert_int_equal(ret, 0);
	/* The same key twice in one request is a protocol error. */
	answer_of(&ng, OP, "MaxBurstLength=512;MaxBurstLength=1024", "MaxBurstLength", &ret);
	assert_int_equal(ret, -EPROTO);
}

static void negotiate_identity_and_declare(void **state)
{
	struct tnd_iscsi_negotiator ng;
	int ret;
	tnd_iscsi_negotiator_init(&ng);
	assert_string_equal(answer_of(&ng, TND_ISCSI_IN_SECURITY,
				      "InitiatorName=iqn.2026-01.test:i;SessionType=Normal;"
				      "TargetName=iqn.2026-01.test:t;AuthMethod=CHAP,None",
				      "AuthMethod", &ret), "None");
	assert_int_equal(ret, 0);
	assert_string_equal(ng.initiator_name, "iqn.2026-01.test:i");
	assert_string_equal(ng.target_name, "iqn.2026-01.test:t");
	assert_int_equal(ng.session_type, TND_ISCSI_SESSION_NORMAL);
	assert_string_equal(ng.auth_method, "None");
	assert_string_equal(answer_of(&ng, TND_ISCSI_IN_SECURITY, "AuthMethod=CHAP", "AuthMethod", &ret),
			    "Reject");
	assert_string_equal(ng.auth_method, "");
	assert_string_equal(answer_of(&ng, TND_ISCSI_IN_SECURITY, "SessionType=Weird", "SessionType", &ret),
			    "Reject");
	char name[300] = "InitiatorName=";
	memset(name + 14, 'n', 224);
	name[14 + 224] = '\0';
	assert_string_equal(answer_of(&ng, TND_ISCSI_IN_SECURITY, name, "InitiatorName", &ret), "Reject");

	/* Our declaration comes once; FirstBurstLength is capped by MaxBurstLength. */
	answer_of(&ng, OP, "MaxBurstLength=4096;FirstBurstLength=65536", "x", &ret);
	assert_int_equal(ng.params.first_burst, 65536);
	struct tnd_iscsi_text resp = { 0 };
	assert_int_equal(tnd_iscsi_negotiate_declare(&ng, &resp), 0);
	assert_string_equal(resp.buf, "MaxRecvDataSegmentLength=262144");
	assert_int_equal(ng.params.first_burst, 4096);
	size_t len = resp.len;
	assert_int_equal(tnd_iscsi_negotiate_declare(&ng, &resp), 0);
	assert_int_equal(resp.len, len);
	tnd_iscsi_text_free(&resp);

	/* SendTargets is handed back to the caller. */
	answer_of(&ng, TND_ISCSI_IN_FFP, "SendTargets=All", "x", &ret);
	assert_true(ng.has_send_targets);
	assert_string_equal(ng.send_targets, "All");
}

static void text_builder_limit(void **state)
{
	struct tnd_iscsi_text t = { .limit = 64 };
	assert_int_equal(tnd_iscsi_text_add(&t, "Key", "value"), 0);
	assert_int_equal(t.len, 10);
	char big[80];
	memset(big, 'v', 70);
	big[70] = '\0';
	assert_int_equal(tnd_iscsi_text_add(&t, "K", big), -E2BIG);
	assert_int_equal(t.len, 10);
	tnd_iscsi_text_free(&t);
}

/* ---- SendTargets split at MaxRecvDataSegmentLength=512, over a real socket ---- */

struct live {
	struct tnd_reactor *r;        /* == rs[0] */
	struct tnd_reactor *rs[2];
	unsigned nr;
	struct tnd_target_server *srv;
	int port;
	atomic_bool stopped;
};

static void stopped_cb(void *arg)
{
	struct live *l = arg;
	atomic_store(&l->stopped, true);
}

static void live_start_n(struct live *l, unsigned nr_targets, const char *portal,
			 unsigned nop_s, unsigned nr_reactors)
{
	memset(l, 0, sizeof(*l));
	l->nr = nr_reactors;
	for (unsigned i = 0; i < nr_reactors; i++)
		assert_int_equal(tnd_reactor_create(i, 256, &l->rs[i]), 0);
	l->r = l->rs[0];
	struct tnd_target_server_opts o = { .reactors = l->rs, .nr_reactors = nr_reactors,
					    .nop_interval_s = nop_s };
	assert_int_equal(tnd_target_server_create(&o, &l->srv), 0);
	assert_int_equal(tnd_target_server_add_portal(l->srv, portal), 0);
	l->port = tnd_target_server_portal_port(l->srv, 0);
	assert_true(l->port > 0);
	for (unsigned i = 0; i < nr_targets; i++) {
		char iqn[96];
		snprintf(iqn, sizeof(iqn), "iqn.2026-11.io.tandem.test:target-with-a-longish-name-%03u", i);
		assert_int_equal(tnd_target_server_add_target(l->srv, iqn, NULL, true, NULL, 0), 0);
	}
	assert_int_equal(tnd_target_server_add_target(l->srv, "iqn.2026-11.io.tandem.test:target-with-a-longish-name-000", NULL, true, NULL, 0), -EEXIST);
	static const char *const allowed[] = { "iqn.2026-11.test:allowed" };
	assert_int_equal(tnd_target_server_add_target(l->srv, "iqn.2026-11.io.tandem.test:restricted",
						      "Restricted", false, allowed, 1), 0);
	assert_int_equal(tnd_target_server_start(l->srv), 0);
	for (unsigned i = 0; i < l->nr; i++)
		assert_int_equal(tnd_reactor_start(l->rs[i]), 0);
}

static void live_start_at(struct live *l, unsigned nr_targets, const char *portal,
			  unsigned nop_s)
{
	live_start_n(l, nr_targets, portal, nop_s, 1);
}

static void live_start(struct live *l, unsigned nr_targets)
{
	live_start_at(l, nr_targets, "127.0.0.1:0", 0);
}

static void live_stop(struct live *l)
{
	tnd_target_server_stop(l->srv, stopped_cb, l);
	for (int i = 0; i < 500 && !atomic_load(&l->stopped); i++)
		usleep(10000);
	assert_true(atomic_load(&l->stopped));
	for (unsigned i = 0; i < l->nr; i++) {
		tnd_reactor_stop(l->rs[i]);
		tnd_reactor_join(l->rs[i]);
	}
	tnd_target_server_destroy(l->srv);
	for (unsigned i = 0; i < l->nr; i++)
		tnd_reactor_destroy(l->rs[i]);
}

static int connect_to(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static int connect_to6(int port)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_pdu(int fd, uint8_t *bhs, const char *data, uint32_t len)
{
	uint8_t buf[9000];
	tnd_put_be24(bhs + 5, len);
	memcpy(buf, bhs, 48);
	if (len)
		memcpy(buf + 48, data, len);
	uint32_t total = 48 + len + tnd_iscsi_pad4(len);
	memset(buf + 48 + len, 0, total - 48 - len);
	assert_int_equal(send(fd, buf, total, 0), (ssize_t)total);
}

static int recv_all(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/* One byte (or EOF), retrying when a signal interrupts the wait. */
static ssize_t recv1(int fd, char *c)
{
	ssize_t n;
	do
		n = recv(fd, c, 1, 0);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Receive one PDU (no digests); returns its data length. */
static uint32_t recv_pdu(int fd, uint8_t *bhs, char *data, size_t cap)
{
	assert_int_equal(recv_all(fd, bhs, 48), 0);
	uint32_t len = tnd_get_be24(bhs + 5);
	uint32_t total = len + tnd_iscsi_pad4(len);
	assert_true(total <= cap);
	assert_int_equal(recv_all(fd, data, total), 0);
	return len;
}

static void sendtargets_split_512(void **state)
{
	struct live l;
	live_start(&l, 50);
	int fd = connect_to(l.port);

	static const char login[] = "InitiatorName=iqn.2026-11.test:unit\0SessionType=Discovery\0"
				    "AuthMethod=None\0";
	uint8_t bhs[48] = { 0 }, rsp[48];
	static char data[1 << 16];
	bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_LOGIN_TRANSIT | (0 << 2) | 1;   /* security -> operational */
	bhs[8] = 0x80;                                 /* ISID */
	tnd_put_be32(bhs + 16, 1);
	send_pdu(fd, bhs, login, sizeof(login) - 1);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	assert_int_equal(rsp[36], 0);
	assert_non_null(memmem(data, tnd_get_be24(rsp + 5), "TargetPortalGroupTag=1", 22));

	static const char op[] = "MaxRecvDataSegmentLength=512\0HeaderDigest=None\0";
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_LOGIN_TRANSIT | (1 << 2) | 3;   /* operational -> full feature */
	bhs[8] = 0x80;
	tnd_put_be32(bhs + 16, 2);
	send_pdu(fd, bhs, op, sizeof(op) - 1);
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[36], 0);
	assert_int_equal(rsp[1] & 0x83, 0x83);
	assert_non_null(memmem(data, n, "MaxRecvDataSegmentLength=262144", 31));
	assert_true(tnd_get_be16(rsp + 14) != 0);   /* TSIH */

	static char all[1 << 16];
	size_t all_len = 0;
	uint32_t ttt = ISCSI_RSVD_TAG;
	unsigned pieces = 0;
	for (;;) {
		memset(bhs, 0, 48);
		bhs[0] = ISCSI_OP_TEXT_REQ | ISCSI_OP_IMMEDIATE;
		bhs[1] = ISCSI_FLAG_FINAL;
		tnd_put_be32(bhs + 16, 3);
		tnd_put_be32(bhs + 20, ttt);
		if (ttt == ISCSI_RSVD_TAG)
			send_pdu(fd, bhs, "SendTargets=All", 16);
		else
			send_pdu(fd, bhs, "", 0);
		n = recv_pdu(fd, rsp, data, sizeof(data));
		assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_TEXT_RSP);
		assert_true(n <= 512);
		memcpy(all + all_len, data, n);
		all_len += n;
		pieces++;
		if (rsp[1] & ISCSI_FLAG_FINAL) {
			assert_int_equal(tnd_get_be32(rsp + 20), ISCSI_RSVD_TAG);
			break;
		}
		assert_true(rsp[1] & ISCSI_FLAG_CONT);
		ttt = tnd_get_be32(rsp + 20);
		assert_int_not_equal(ttt, ISCSI_RSVD_TAG);
		assert_true(pieces < 100);
	}
	assert_true(pieces > 1);
	/* Every target, each with its address, in the reassembled text. */
	unsigned names = 0, addrs = 0;
	char want_addr[64];
	snprintf(want_addr, sizeof(want_addr), "TargetAddress=127.0.0.1:%d,1", l.port);
	for (size_t off = 0; off < all_len; off += strlen(all + off) + 1) {
		if (strncmp(all + off, "TargetName=", 11) == 0)
			names++;
		else if (strcmp(all + off, want_addr) == 0)
			addrs++;
	}
	assert_int_equal(names, 50);
	assert_int_equal(addrs, 50);

	/* SendTargets=<name>: just that one. */
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_TEXT_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_FLAG_FINAL;
	tnd_put_be32(bhs + 16, 5);
	tnd_put_be32(bhs + 20, ISCSI_RSVD_TAG);
	static const char one[] = "SendTargets=iqn.2026-11.io.tandem.test:target-with-a-longish-name-007";
	send_pdu(fd, bhs, one, sizeof(one));
	n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_true(rsp[1] & ISCSI_FLAG_FINAL);
	assert_string_equal(data, "TargetName=iqn.2026-11.io.tandem.test:target-with-a-longish-name-007");
	assert_int_equal(n, strlen(data) + 1 + strlen(want_addr) + 1);

	/* SCSI commands are not for discovery sessions: Reject. */
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_SCSI_CMD;
	bhs[1] = ISCSI_FLAG_FINAL;
	tnd_put_be32(bhs + 16, 9);
	send_pdu(fd, bhs, "", 0);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_REJECT);

	/* Logout: a response, then the connection closes. */
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_LOGOUT_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_FLAG_FINAL | ISCSI_LOGOUT_CLOSE_SESSION;
	tnd_put_be32(bhs + 16, 4);
	send_pdu(fd, bhs, "", 0);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGOUT_RSP);
	assert_int_equal(rsp[2], 0);
	char c;
	assert_int_equal(recv1(fd, &c), 0);
	close(fd);
	live_stop(&l);
}

static void login_failures(void **state)
{
	struct live l;
	live_start(&l, 1);
	static char data[1 << 16];
	uint8_t bhs[48], rsp[48];
	struct {
		const char *text;
		size_t len;
		uint16_t status;
	} cases[] = {
		{ "SessionType=Normal\0TargetName=iqn.2026-11.io.tandem.test:target-with-a-longish-name-000\0", 0, 0x0207 },
		{ "InitiatorName=iqn.x:y\0SessionType=Normal\0", 0, 0x0207 },
		{ "InitiatorName=iqn.x:y\0TargetName=iqn.nope:nope\0", 0, 0x0203 },
		{ "InitiatorName=iqn.x:y\0TargetName=iqn.2026-11.io.tandem.test:target-with-a-longish-name-000\0AuthMethod=CHAP\0", 0, 0x0201 },
		{ "InitiatorName=iqn.x:y\0TargetName=iqn.2026-11.io.tandem.test:restricted\0", 0, 0x0202 },
		{ "InitiatorName=iqn.2026-11.test:allowed\0TargetName=iqn.2026-11.io.tandem.test:restricted\0", 0, 0x0000 },
	};
	for (size_t i = 0; i < TND_ARRAY_SIZE(cases); i++) {
		int fd = connect_to(l.port);
		memset(bhs, 0, 48);
		bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
		bhs[1] = ISCSI_LOGIN_TRANSIT | 1;
		bhs[8] = 0x80;
		size_t len = 0;
		while (strlen(cases[i].text + len))
			len += strlen(cases[i].text + len) + 1;
		send_pdu(fd, bhs, cases[i].text, (uint32_t)len);
		recv_pdu(fd, rsp, data, sizeof(data));
		assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
		assert_int_equal(tnd_get_be16(rsp + 36), cases[i].status);
		if (cases[i].status == 0) {
			/* The allowed initiator gets in, and sees the alias. */
			assert_non_null(memmem(data, tnd_get_be24(rsp + 5), "TargetAlias=Restricted", 22));
			close(fd);
			continue;
		}
		char c;
		assert_int_equal(recv1(fd, &c), 0);
		close(fd);
	}
	/* A NOP-Out before login: 0x020b and close. */
	int fd = connect_to(l.port);
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_NOP_OUT | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_FLAG_FINAL;
	send_pdu(fd, bhs, "", 0);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	assert_int_equal(tnd_get_be16(rsp + 36), 0x020b);
	close(fd);
	live_stop(&l);
}

static const char test_target[] = "iqn.2026-11.io.tandem.test:target-with-a-longish-name-000";

/* A normal login of @initiator (ISID low byte @isid_low) to @target; the status. */
static unsigned login_to(int fd, uint8_t isid_low, const char *initiator, const char *target)
{
	char text[512];
	int n = snprintf(text, sizeof(text), "InitiatorName=%s%cTargetName=%s%cSessionType=Normal%c",
			 initiator, 0, target, 0, 0);
	uint8_t bhs[48] = { 0 }, rsp[48];
	static char data[1 << 16];
	bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_LOGIN_TRANSIT | (1 << 2) | 3;
	bhs[8] = 0x80;
	bhs[13] = isid_low;
	tnd_put_be32(bhs + 16, 1);
	send_pdu(fd, bhs, text, (uint32_t)n);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	return tnd_get_be16(rsp + 36);
}

/* A one-PDU login to full feature phase on the test target; the status. */
static unsigned login_normal(int fd, uint8_t isid_low, const char *initiator)
{
	return login_to(fd, isid_low, initiator, test_target);
}

static void discover_address(int fd, char *out, size_t cap)
{
	uint8_t bhs[48] = { 0 }, rsp[48];
	static char data[1 << 16];
	static const char login[] = "InitiatorName=iqn.2026-11.test:unit\0SessionType=Discovery\0";
	bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_LOGIN_TRANSIT | (1 << 2) | 3;
	bhs[8] = 0x80;
	send_pdu(fd, bhs, login, sizeof(login) - 1);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[36], 0);
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_TEXT_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_FLAG_FINAL;
	tnd_put_be32(bhs + 16, 2);
	tnd_put_be32(bhs + 20, ISCSI_RSVD_TAG);
	send_pdu(fd, bhs, "SendTargets=All", 16);
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	out[0] = '\0';
	for (size_t off = 0; off < n; off += strlen(data + off) + 1)
		if (strncmp(data + off, "TargetAddress=", 14) == 0)
			snprintf(out, cap, "%s", data + off + 14);
}

static void portal_ipv6_and_wildcard(void **state)
{
	struct live l;
	char addr[128], want[128];
	live_start_at(&l, 1, "[::1]:0", 0);
	int fd = connect_to6(l.port);
	discover_address(fd, addr, sizeof(addr));
	snprintf(want, sizeof(want), "[::1]:%d,1", l.port);
	assert_string_equal(addr, want);
	close(fd);
	live_stop(&l);

	/* A wildcard portal reports the address the connection came in on. */
	live_start_at(&l, 1, "0.0.0.0:0", 0);
	fd = connect_to(l.port);
	discover_address(fd, addr, sizeof(addr));
	snprintf(want, sizeof(want), "127.0.0.1:%d,1", l.port);
	assert_string_equal(addr, want);
	close(fd);
	live_stop(&l);

	struct tnd_target_server *srv;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 8, &r), 0);
	struct tnd_target_server_opts o = { .reactors = &r, .nr_reactors = 1 };
	assert_int_equal(tnd_target_server_create(&o, &srv), 0);
	assert_int_equal(tnd_target_server_add_portal(srv, "nonsense"), -EINVAL);
	assert_int_equal(tnd_target_server_add_portal(srv, "[::1:3260"), -EINVAL);
	assert_int_equal(tnd_target_server_add_portal(srv, "127.0.0.1:"), -EINVAL);
	assert_int_equal(tnd_target_server_add_portal(srv, "127.0.0.1:0"), 0);
	char busy[32];
	snprintf(busy, sizeof(busy), "127.0.0.1:%d", tnd_target_server_portal_port(srv, 0));
	assert_int_equal(tnd_target_server_add_portal(srv, busy), -EADDRINUSE);
	assert_int_equal(tnd_target_server_map_lun(srv, "iqn.none:x", 0, "d", (struct tnd_volume *)1), -ENOENT);
	tnd_target_server_destroy(srv);   /* never started */
	tnd_reactor_destroy(r);
}

static void session_reinstatement(void **state)
{
	struct live l;
	/* Two reactors: connections alternate, so the reinstating login (the
	 * fourth connection) lands on the other reactor than the old session. */
	live_start_n(&l, 1, "127.0.0.1:0", 0, 2);
	int a = connect_to(l.port);
	assert_int_equal(login_normal(a, 7, "iqn.2026-11.test:same"), 0);
	/* Another ISID of the same initiator is another session: both stay. */
	int b = connect_to(l.port);
	assert_int_equal(login_normal(b, 8, "iqn.2026-11.test:same"), 0);
	int d = connect_to(l.port);
	/* The same initiator name and ISID again replaces the first session. */
	int c = connect_to(l.port);
	assert_int_equal(login_normal(c, 7, "iqn.2026-11.test:same"), 0);
	char ch;
	assert_int_equal(recv1(a, &ch), 0);
	struct timeval tv = { .tv_usec = 200000 };
	setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(recv1(b, &ch), -1);   /* still open, just quiet */
	close(a);
	close(b);
	close(c);
	close(d);
	live_stop(&l);
}

static void nop_ping_unanswered_closes(void **state)
{
	struct live l;
	live_start_at(&l, 1, "127.0.0.1:0", 1);
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:sleepy"), 0);
	uint8_t rsp[48];
	static char data[1 << 16];
	uint64_t t0 = tnd_now_ns();
	/* After about one idle second: a ping with a Target Transfer Tag. */
	if (recv_all(fd, rsp, 48) != 0)
		fail_msg("no ping after %llu ms: %s", (unsigned long long)((tnd_now_ns() - t0) / 1000000), strerror(errno));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_NOP_IN);
	assert_int_equal(tnd_get_be32(rsp + 16), ISCSI_RSVD_TAG);
	assert_int_not_equal(tnd_get_be32(rsp + 20), ISCSI_RSVD_TAG);
	/* We don't answer: about one second later the target hangs up. */
	char ch;
	assert_int_equal(recv1(fd, &ch), 0);
	uint64_t ms = (tnd_now_ns() - t0) / 1000000;
	assert_true(ms >= 500 && ms < 4500);
	close(fd);

	/* Answered pings keep the connection. */
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 2, "iqn.2026-11.test:awake"), 0);
	for (int i = 0; i < 3; i++) {
		recv_pdu(fd, rsp, data, sizeof(data));
		assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_NOP_IN);
		uint8_t bhs[48] = { 0 };
		bhs[0] = ISCSI_OP_NOP_OUT | ISCSI_OP_IMMEDIATE;
		bhs[1] = ISCSI_FLAG_FINAL;
		tnd_put_be32(bhs + 16, ISCSI_RSVD_TAG);
		memcpy(bhs + 20, rsp + 20, 4);
		send_pdu(fd, bhs, "", 0);
	}
	close(fd);
	live_stop(&l);
}

/* ---- ABORT TASK on a command the volume holds ---- */

/*
 * A test volume whose reads wait at a gate until the test opens it, so a
 * command can be caught "at the volume". Everything else completes at once
 * (through a message, as the async contract wants).
 */
struct gate_vol {
	struct tnd_volume base;
	atomic_bool closed;
	atomic_int held_count;
	struct tnd_io *held[16];     /* reactor thread only */
	int nheld;
	struct tnd_msg open_msg;
	struct tnd_reactor *home;    /* reported by info: session placement */
};

struct io_done_msg {
	struct tnd_msg m;
	struct tnd_io *io;
};

static void io_done_fn(struct tnd_msg *m)
{
	struct io_done_msg *d = tnd_container_of(m, struct io_done_msg, m);
	d->io->cb(d->io, 0);
	free(d);
}

static int gate_submit(struct tnd_volume *v, struct tnd_io *io)
{
	struct gate_vol *g = tnd_container_of(v, struct gate_vol, base);
	if (io->type == TND_IO_READ) {
		for (int i = 0; i < io->iovcnt; i++)
			memset(io->iov[i].iov_base, 0xab, io->iov[i].iov_len);
		if (atomic_load(&g->closed) && g->nheld < 16) {
			g->held[g->nheld++] = io;
			atomic_fetch_add(&g->held_count, 1);
			return 0;
		}
	}
	struct io_done_msg *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->m.fn = io_done_fn;
	d->io = io;
	tnd_reactor_send(io->reactor, &d->m);
	return 0;
}

static void gate_info(struct tnd_volume *v, struct tnd_volume_info *out)
{
	memset(out, 0, sizeof(*out));
	out->block_size = 512;
	out->num_blocks = 4096;
	out->state = TND_VOLUME_ONLINE;
	out->home = tnd_container_of(v, struct gate_vol, base)->home;
}

static void gate_destroy(struct tnd_volume *v)
{
}

static const struct tnd_volume_ops gate_ops = {
	.type = "gate",
	.submit = gate_submit,
	.info = gate_info,
	.destroy = gate_destroy,
};

static void gate_open_fn(struct tnd_msg *m)
{
	struct gate_vol *g = tnd_container_of(m, struct gate_vol, open_msg);
	atomic_store(&g->closed, false);
	for (int i = 0; i < g->nheld; i++)
		g->held[i]->cb(g->held[i], 0);
	g->nheld = 0;
}

static void scsi_cmd(int fd, uint32_t itt, uint32_t cmd_sn, uint8_t flags, uint32_t edtl,
		     const uint8_t *cdb, unsigned cdb_len)
{
	uint8_t bhs[48] = { 0 };
	bhs[0] = ISCSI_OP_SCSI_CMD;
	bhs[1] = flags;
	tnd_put_be32(bhs + 16, itt);
	tnd_put_be32(bhs + 20, edtl);
	tnd_put_be32(bhs + 24, cmd_sn);
	memcpy(bhs + 32, cdb, cdb_len);
	send_pdu(fd, bhs, "", 0);
}

static void abort_task_waits_for_volume(void **state)
{
	struct live l;
	struct gate_vol g = { 0 };
	tnd_volume_init(&g.base, &gate_ops, NULL);
	g.open_msg.fn = gate_open_fn;
	atomic_store(&g.closed, true);

	memset(&l, 0, sizeof(l));
	assert_int_equal(tnd_reactor_create(0, 256, &l.rs[0]), 0);
	l.r = l.rs[0];
	l.nr = 1;
	struct tnd_target_server_opts o = { .reactors = l.rs, .nr_reactors = 1 };
	assert_int_equal(tnd_target_server_create(&o, &l.srv), 0);
	assert_int_equal(tnd_target_server_add_portal(l.srv, "127.0.0.1:0"), 0);
	l.port = tnd_target_server_portal_port(l.srv, 0);
	assert_int_equal(tnd_target_server_add_target(l.srv, test_target, NULL, true, NULL, 0), 0);
	assert_int_equal(tnd_target_server_map_lun(l.srv, test_target, 0, "gate0", &g.base), 0);
	assert_int_equal(tnd_target_server_map_lun(l.srv, test_target, 0, "gate0", &g.base), -EEXIST);
	assert_int_equal(tnd_target_server_start(l.srv), 0);
	assert_int_equal(tnd_reactor_start(l.r), 0);

	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 3, "iqn.2026-11.test:aborter"), 0);
	uint8_t rsp[48];
	static char data[1 << 16];

	/* The first command of a nexus reports the power-on unit attention. */
	static const uint8_t tur[6] = { 0 };
	scsi_cmd(fd, 0x10, 0, ISCSI_FLAG_FINAL, 0, tur, 6);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_SCSI_RSP);
	assert_int_equal(rsp[3], TND_SAM_CHECK_CONDITION);

	/* READ(10) of one block: it reaches the volume and waits there. */
	static const uint8_t read10[10] = { 0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0 };
	scsi_cmd(fd, 0x100, 1, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 512, read10, 10);
	for (int i = 0; i < 200 && atomic_load(&g.held_count) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&g.held_count), 1);

	/* ABORT TASK for it: no answer while the read is at the volume. */
	uint8_t bhs[48] = { 0 };
	bhs[0] = ISCSI_OP_TMF_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_FLAG_FINAL | ISCSI_TMF_ABORT_TASK;
	tnd_put_be32(bhs + 16, 0x101);
	tnd_put_be32(bhs + 20, 0x100);
	tnd_put_be32(bhs + 24, 2);
	tnd_put_be32(bhs + 32, 1);
	send_pdu(fd, bhs, "", 0);
	struct timeval tv = { .tv_usec = 200000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char ch;
	assert_int_equal(recv1(fd, &ch), -1);
	tv.tv_sec = 5;
	tv.tv_usec = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	/* The volume finishes: the TMF says "function complete" and the read
	 * itself is never answered. */
	tnd_reactor_send(l.r, &g.open_msg);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_TMF_RSP);
	assert_int_equal(tnd_get_be32(rsp + 16), 0x101);
	assert_int_equal(rsp[2], ISCSI_TMF_RSP_COMPLETE);

	/* ABORT TASK for a task long gone: "task does not exist". */
	tnd_put_be32(bhs + 16, 0x102);
	tnd_put_be32(bhs + 20, 0x10);
	tnd_put_be32(bhs + 32, 0);
	send_pdu(fd, bhs, "", 0);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_TMF_RSP);
	assert_int_equal(rsp[2], ISCSI_TMF_RSP_NO_TASK);

	/* A read now goes through, its status collapsed into the Data-In. */
	scsi_cmd(fd, 0x103, 2, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 512, read10, 10);
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_DATA_IN);
	assert_int_equal(tnd_get_be32(rsp + 16), 0x103);
	assert_int_equal(rsp[1] & (ISCSI_FLAG_FINAL | ISCSI_DATAIN_STATUS),
			 ISCSI_FLAG_FINAL | ISCSI_DATAIN_STATUS);
	assert_int_equal(rsp[3], TND_SAM_GOOD);
	assert_int_equal(n, 512);
	assert_int_equal((uint8_t)data[0], 0xab);

	/* Residual underflow: EDTL 1024 for a one-block read. */
	scsi_cmd(fd, 0x104, 3, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 1024, read10, 10);
	n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(n, 512);
	assert_true(rsp[1] & ISCSI_DATAIN_UNDERFLOW);
	assert_int_equal(tnd_get_be32(rsp + 44), 512);

	/* A LUN that is not mapped: CHECK CONDITION with sense (2-byte length first). */
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_SCSI_CMD;
	bhs[1] = ISCSI_FLAG_FINAL | ISCSI_CMD_READ;
	bhs[9] = 7;   /* LUN 7 */
	tnd_put_be32(bhs + 16, 0x105);
	tnd_put_be32(bhs + 20, 512);
	tnd_put_be32(bhs + 24, 4);
	memcpy(bhs + 32, read10, 10);
	send_pdu(fd, bhs, "", 0);
	n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_SCSI_RSP);
	assert_int_equal(rsp[3], TND_SAM_CHECK_CONDITION);
	assert_true(n >= 2 + 18);
	assert_int_equal(tnd_get_be16((uint8_t *)data), n - 2);

	close(fd);
	live_stop(&l);
}

static void login_text_continued(void **state)
{
	struct live l;
	live_start(&l, 1);
	int fd = connect_to(l.port);
	char text[512];
	int n = snprintf(text, sizeof(text), "InitiatorName=iqn.2026-11.test:cont%cTargetName=%s%c",
			 0, test_target, 0);
	/* Split in the middle of a key: the C bit joins the pieces. */
	uint32_t cut = 20;
	uint8_t bhs[48] = { 0 }, rsp[48];
	static char data[1 << 16];
	bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_LOGIN_CONT | (1 << 2);
	bhs[8] = 0x80;
	tnd_put_be32(bhs + 16, 1);
	send_pdu(fd, bhs, text, cut);
	uint32_t len = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	assert_int_equal(tnd_get_be16(rsp + 36), 0);
	assert_int_equal(len, 0);
	assert_int_equal(rsp[1] & (ISCSI_LOGIN_TRANSIT | ISCSI_LOGIN_CONT), 0);
	bhs[1] = ISCSI_LOGIN_TRANSIT | (1 << 2) | 3;
	send_pdu(fd, bhs, text + cut, (uint32_t)n - cut);
	len = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(tnd_get_be16(rsp + 36), 0);
	assert_int_equal(rsp[1] & 0x83, 0x83);
	assert_non_null(memmem(data, len, "TargetPortalGroupTag=1", 22));
	close(fd);
	live_stop(&l);
}

/* ---- live changes and sessions ---- */

/* A SCSI command to @lun (single-level LUN addressing). */
static void scsi_cmd_lun(int fd, uint64_t lun, uint32_t itt, uint32_t cmd_sn, uint8_t flags,
			 uint32_t edtl, const uint8_t *cdb, unsigned cdb_len)
{
	uint8_t bhs[48] = { 0 };
	bhs[0] = ISCSI_OP_SCSI_CMD;
	bhs[1] = flags;
	bhs[9] = (uint8_t)lun;
	tnd_put_be32(bhs + 16, itt);
	tnd_put_be32(bhs + 20, edtl);
	tnd_put_be32(bhs + 24, cmd_sn);
	memcpy(bhs + 32, cdb, cdb_len);
	send_pdu(fd, bhs, "", 0);
}

/* Receive a SCSI Response; returns (key << 16 | asc << 8 | ascq), or 0 for GOOD. */
static unsigned recv_status(int fd)
{
	uint8_t rsp[48];
	static char data[1 << 16];
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	if ((rsp[0] & 0x3f) == ISCSI_OP_DATA_IN) {
		assert_true(rsp[1] & ISCSI_DATAIN_STATUS);
		return 0;
	}
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_SCSI_RSP);
	if (rsp[3] == TND_SAM_GOOD)
		return 0;
	assert_int_equal(rsp[3], TND_SAM_CHECK_CONDITION);
	assert_true(n >= 2 + 14);
	const uint8_t *sense = (const uint8_t *)data + 2;
	return (unsigned)(sense[2] & 0x0f) << 16 | (unsigned)sense[12] << 8 | sense[13];
}

/* REPORT LUNS: the LUN numbers into @luns; returns how many. */
static unsigned report_luns(int fd, uint32_t itt, uint32_t cmd_sn, uint64_t *luns, unsigned max)
{
	uint8_t cdb[12] = { 0xa0 };
	tnd_put_be32(cdb + 6, 4096);
	scsi_cmd_lun(fd, 0, itt, cmd_sn, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 4096, cdb, 12);
	uint8_t rsp[48];
	static char data[1 << 16];
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_DATA_IN);
	assert_true(n >= 8);
	unsigned nr = tnd_get_be32((uint8_t *)data) / 8;
	for (unsigned i = 0; i < nr && i < max; i++)
		luns[i] = ((const uint8_t *)data)[8 + 8 * i + 1];
	return nr;
}

static void gate_setup(struct gate_vol *g, bool closed)
{
	memset(g, 0, sizeof(*g));
	tnd_volume_init(&g->base, &gate_ops, NULL);
	g->open_msg.fn = gate_open_fn;
	atomic_store(&g->closed, closed);
}

static void live_start_gate(struct live *l, struct gate_vol *g, unsigned nr_reactors)
{
	memset(l, 0, sizeof(*l));
	l->nr = nr_reactors;
	for (unsigned i = 0; i < nr_reactors; i++)
		assert_int_equal(tnd_reactor_create(i, 256, &l->rs[i]), 0);
	l->r = l->rs[0];
	struct tnd_target_server_opts o = { .reactors = l->rs, .nr_reactors = nr_reactors };
	assert_int_equal(tnd_target_server_create(&o, &l->srv), 0);
	assert_int_equal(tnd_target_server_add_portal(l->srv, "127.0.0.1:0"), 0);
	l->port = tnd_target_server_portal_port(l->srv, 0);
	assert_int_equal(tnd_target_server_add_target(l->srv, test_target, NULL, true, NULL, 0), 0);
	assert_int_equal(tnd_target_server_map_lun(l->srv, test_target, 0, "gate0", &g->base), 0);
	assert_int_equal(tnd_target_server_start(l->srv), 0);
	for (unsigned i = 0; i < nr_reactors; i++)
		assert_int_equal(tnd_reactor_start(l->rs[i]), 0);
}

static const uint8_t tur6[6] = { 0 };
static const uint8_t read10_1[10] = { 0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0 };

static void live_map_lun_raises_ua(void **state)
{
	struct live l;
	struct gate_vol g, g1;
	gate_setup(&g, false);
	gate_setup(&g1, false);
	live_start_gate(&l, &g, 2);
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:live"), 0);
	scsi_cmd_lun(fd, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);   /* power on */
	uint64_t luns[8];
	assert_int_equal(report_luns(fd, 2, 1, luns, 8), 1);

	/* Map LUN 1 while the session runs: in effect when the call returns. */
	assert_int_equal(tnd_target_server_map_lun(l.srv, test_target, 1, "gate1", &g1.base), 0);
	assert_int_equal(tnd_target_server_map_lun(l.srv, test_target, 1, "gate1", &g1.base), -EEXIST);
	assert_int_equal(tnd_target_server_map_lun(l.srv, "iqn.2026-11.test:none", 2, "x", &g1.base),
			 -ENOENT);
	scsi_cmd_lun(fd, 0, 3, 2, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x063f0e);   /* REPORTED LUNS DATA HAS CHANGED */
	scsi_cmd_lun(fd, 0, 4, 3, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0);          /* reported once */
	assert_int_equal(report_luns(fd, 5, 4, luns, 8), 2);
	assert_int_equal(luns[0], 0);
	assert_int_equal(luns[1], 1);
	scsi_cmd_lun(fd, 1, 6, 5, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);   /* LUN 1's own power on */

	/* REPORT LUNS clears a pending report. */
	assert_int_equal(tnd_target_server_unmap_lun(l.srv, test_target, 1), 0);
	assert_int_equal(tnd_target_server_unmap_lun(l.srv, test_target, 1), -ENOENT);
	assert_int_equal(report_luns(fd, 7, 6, luns, 8), 1);
	scsi_cmd_lun(fd, 0, 8, 7, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0);
	scsi_cmd_lun(fd, 1, 9, 8, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x052500);   /* LOGICAL UNIT NOT SUPPORTED */

	/* The session list, then a kick. */
	json_t *arr = json_array();
	assert_int_equal(tnd_target_server_sessions_json(l.srv, arr), 0);
	assert_int_equal(json_array_size(arr), 1);
	json_t *s0 = json_array_get(arr, 0);
	assert_string_equal(json_string_value(json_object_get(s0, "initiator")),
			    "iqn.2026-11.test:live");
	assert_string_equal(json_string_value(json_object_get(s0, "target")), test_target);
	assert_string_equal(json_string_value(json_object_get(s0, "type")), "normal");
	assert_string_equal(json_string_value(json_object_get(s0, "isid")), "800000000001");
	assert_non_null(json_object_get(s0, "params"));
	char id[32];
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(s0, "id")));
	json_decref(arr);
	assert_int_equal(tnd_target_server_kick_session(l.srv, "999999"), -ENOENT);
	assert_int_equal(tnd_target_server_kick_session(l.srv, "nonsense"), -ENOENT);
	assert_int_equal(tnd_target_server_kick_session(l.srv, id), 0);
	char ch;
	assert_int_equal(recv1(fd, &ch), 0);
	close(fd);
	arr = json_array();
	assert_int_equal(tnd_target_server_sessions_json(l.srv, arr), 0);
	assert_int_equal(json_array_size(arr), 0);
	json_decref(arr);
	assert_int_equal(tnd_target_server_kick_session(l.srv, id), -ENOENT);
	live_stop(&l);
}

/* ALUA through the public API: the state reaches the session at once. */
static void live_alua_state(void **state)
{
	struct live l;
	struct gate_vol g;
	gate_setup(&g, false);
	live_start_gate(&l, &g, 1);
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:alua"), 0);
	scsi_cmd_lun(fd, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);   /* power on */

	assert_int_equal(tnd_target_server_set_alua_state(l.srv, test_target, 0,
							  TND_TARGET_ALUA_STANDBY), 0);
	assert_int_equal(tnd_target_server_set_alua_state(l.srv, test_target, 9,
							  TND_TARGET_ALUA_STANDBY), -ENOENT);
	assert_int_equal(tnd_target_server_set_alua_state(l.srv, "iqn.2026-11.test:none", 0,
							  TND_TARGET_ALUA_STANDBY), -ENOENT);
	assert_int_equal(tnd_target_server_set_alua_state(l.srv, test_target, 0,
							  (enum tnd_target_alua_state)5), -EINVAL);
	scsi_cmd_lun(fd, 0, 2, 1, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062a06);   /* ASYMMETRIC ACCESS STATE CHANGED */
	scsi_cmd_lun(fd, 0, 3, 2, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x02040b);   /* standby */

	assert_int_equal(tnd_target_server_set_alua_state(l.srv, test_target, 0,
							  TND_TARGET_ALUA_ACTIVE_OPTIMIZED), 0);
	scsi_cmd_lun(fd, 0, 4, 3, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062a06);
	scsi_cmd_lun(fd, 0, 5, 4, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0);
	close(fd);
	live_stop(&l);
}

struct unmap_arg {
	struct tnd_target_server *srv;
	atomic_bool done;
	int ret;
};

static void *unmap_thread(void *p)
{
	struct unmap_arg *a = p;
	a->ret = tnd_target_server_unmap_lun(a->srv, test_target, 0);
	atomic_store(&a->done, true);
	return NULL;
}

static void *remove_thread(void *p)
{
	struct unmap_arg *a = p;
	a->ret = tnd_target_server_remove_target(a->srv, test_target);
	atomic_store(&a->done, true);
	return NULL;
}

static void live_remove_target_waits_for_io(void **state)
{
	struct live l;
	struct gate_vol g;
	gate_setup(&g, true);
	live_start_gate(&l, &g, 2);
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:busy"), 0);
	scsi_cmd_lun(fd, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);
	scsi_cmd_lun(fd, 0, 2, 1, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 512, read10_1, 10);
	for (int i = 0; i < 200 && atomic_load(&g.held_count) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&g.held_count), 1);
	struct unmap_arg a = { .srv = l.srv };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, remove_thread, &a), 0);
	/* The session is closed at once; the call waits for the read. */
	char ch;
	assert_int_equal(recv1(fd, &ch), 0);
	usleep(100000);
	assert_false(atomic_load(&a.done));
	/* The first connection went to reactor 0, where the read is held. */
	tnd_reactor_send(l.r, &g.open_msg);
	pthread_join(th, NULL);
	assert_int_equal(a.ret, 0);
	close(fd);
	live_stop(&l);
}

static void live_unmap_waits_for_io(void **state)
{
	struct live l;
	struct gate_vol g;
	gate_setup(&g, true);
	live_start_gate(&l, &g, 1);
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:unmap"), 0);
	scsi_cmd_lun(fd, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);
	/* A read waits at the volume... */
	scsi_cmd_lun(fd, 0, 2, 1, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 512, read10_1, 10);
	for (int i = 0; i < 200 && atomic_load(&g.held_count) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&g.held_count), 1);
	/* ...so unmapping its LUN waits too. */
	struct unmap_arg a = { .srv = l.srv };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, unmap_thread, &a), 0);
	usleep(200000);
	assert_false(atomic_load(&a.done));
	tnd_reactor_send(l.r, &g.open_msg);
	pthread_join(th, NULL);
	assert_int_equal(a.ret, 0);
	/* The read itself completes normally, and the LUN is gone after it. */
	assert_int_equal(recv_status(fd), 0);
	scsi_cmd_lun(fd, 0, 3, 2, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 512, read10_1, 10);
	assert_int_equal(recv_status(fd), 0x052500);
	uint64_t luns[4];
	assert_int_equal(report_luns(fd, 4, 3, luns, 4), 0);
	close(fd);
	live_stop(&l);
}

/* The NAA designator of @lun from VPD page 83h (its first designator). */
static void inquiry_naa(int fd, uint64_t lun, uint32_t itt, uint32_t cmd_sn, uint8_t *naa)
{
	uint8_t cdb[6] = { 0x12, 0x01, 0x83, 0x00, 0xff, 0x00 };
	scsi_cmd_lun(fd, lun, itt, cmd_sn, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 255, cdb, 6);
	uint8_t rsp[48];
	static char data[1 << 16];
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_DATA_IN);
	assert_true(n >= 24);
	const uint8_t *d = (const uint8_t *)data + 4;
	assert_int_equal(d[1] & 0x0f, 0x3);   /* NAA */
	assert_int_equal(d[3], 16);
	memcpy(naa, d + 4, 16);
}

/*
 * An EXTENDED COPY sent to LUN 1 that reads LUN 0: unmapping LUN 0 must
 * wait for it like for a command sent to LUN 0 itself, or the volume
 * could be destroyed under the copy.
 */
static void live_unmap_waits_for_xcopy_source(void **state)
{
	struct live l;
	struct gate_vol g, g1;
	gate_setup(&g, false);
	gate_setup(&g1, false);
	live_start_gate(&l, &g, 1);
	assert_int_equal(tnd_target_server_map_lun(l.srv, test_target, 1, "gate1", &g1.base), 0);
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:xcopy"), 0);
	scsi_cmd_lun(fd, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);
	scsi_cmd_lun(fd, 1, 2, 1, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);
	uint8_t naa0[16], naa1[16];
	inquiry_naa(fd, 0, 3, 2, naa0);
	inquiry_naa(fd, 1, 4, 3, naa1);

	/* Copy 8 blocks LUN 0 -> LUN 1; the read of LUN 0 waits at its gate. */
	atomic_store(&g.closed, true);
	uint8_t p[16 + 64 + 28] = { 1, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 28 };
	for (int i = 0; i < 2; i++) {
		uint8_t *c = p + 16 + 32 * i;
		c[0] = 0xe4;
		c[4] = 0x01;
		c[5] = 0x03;
		c[7] = 16;
		memcpy(c + 8, i ? naa1 : naa0, 16);
		tnd_put_be24(c + 29, 512);
	}
	uint8_t *sg = p + 16 + 64;
	sg[0] = 0x02;
	sg[3] = 24;
	sg[7] = 1;
	sg[11] = 8;
	uint8_t cdb[16] = { 0x83, 0x00 };
	tnd_put_be32(cdb + 10, sizeof(p));
	uint8_t bhs[48] = { 0 };
	bhs[0] = ISCSI_OP_SCSI_CMD;
	bhs[1] = ISCSI_FLAG_FINAL | ISCSI_CMD_WRITE;
	bhs[9] = 1;                                  /* sent to LUN 1 */
	tnd_put_be32(bhs + 16, 5);
	tnd_put_be32(bhs + 20, sizeof(p));
	tnd_put_be32(bhs + 24, 4);
	memcpy(bhs + 32, cdb, 16);
	send_pdu(fd, bhs, (const char *)p, sizeof(p));
	for (int i = 0; i < 200 && atomic_load(&g.held_count) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&g.held_count), 1);

	struct unmap_arg a = { .srv = l.srv };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, unmap_thread, &a), 0);
	usleep(200000);
	assert_false(atomic_load(&a.done));
	tnd_reactor_send(l.r, &g.open_msg);
	pthread_join(th, NULL);
	assert_int_equal(a.ret, 0);
	assert_int_equal(recv_status(fd), 0);       /* the copy finished */
	close(fd);
	live_stop(&l);
}

static void live_remove_target_closes_sessions(void **state)
{
	struct live l;
	struct gate_vol g;
	gate_setup(&g, false);
	live_start_gate(&l, &g, 2);
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:removed"), 0);
	int fd2 = connect_to(l.port);
	assert_int_equal(login_normal(fd2, 2, "iqn.2026-11.test:removed"), 0);
	assert_int_equal(tnd_target_server_remove_target(l.srv, test_target), 0);
	assert_int_equal(tnd_target_server_remove_target(l.srv, test_target), -ENOENT);
	char ch;
	assert_int_equal(recv1(fd, &ch), 0);
	assert_int_equal(recv1(fd2, &ch), 0);
	close(fd);
	close(fd2);
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:removed"), 0x0203);
	close(fd);
	/* Added back live, with allow_any off: nobody is admitted... */
	assert_int_equal(tnd_target_server_add_target(l.srv, test_target, "Back", false, NULL, 0), 0);
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:removed"), 0x0202);
	close(fd);
	/* ...until allow_any is turned on. */
	assert_int_equal(tnd_target_server_set_allow_any(l.srv, test_target, true), 0);
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:removed"), 0);
	/* Turning it off again ends the session of an initiator without an ACL. */
	assert_int_equal(tnd_target_server_set_allow_any(l.srv, test_target, false), 0);
	assert_int_equal(recv1(fd, &ch), 0);
	close(fd);
	live_stop(&l);
}

/* SendTargets=All in a discovery session of @initiator: how many targets. */
static unsigned sendtargets_count(int port, const char *initiator)
{
	int fd = connect_to(port);
	uint8_t bhs[48] = { 0 }, rsp[48];
	static char data[1 << 16];
	char login[256];
	int len = snprintf(login, sizeof(login), "InitiatorName=%s%cSessionType=Discovery%c",
			   initiator, 0, 0);
	bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_LOGIN_TRANSIT | (1 << 2) | 3;
	bhs[8] = 0x80;
	send_pdu(fd, bhs, login, (uint32_t)len);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(tnd_get_be16(rsp + 36), 0);
	memset(bhs, 0, 48);
	bhs[0] = ISCSI_OP_TEXT_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = ISCSI_FLAG_FINAL;
	tnd_put_be32(bhs + 16, 2);
	tnd_put_be32(bhs + 20, ISCSI_RSVD_TAG);
	send_pdu(fd, bhs, "SendTargets=All", 16);
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	unsigned names = 0;
	for (size_t off = 0; off < n; off += strlen(data + off) + 1)
		names += strncmp(data + off, "TargetName=", 11) == 0;
	close(fd);
	return names;
}

static void acl_admission_and_lun_masking(void **state)
{
	struct live l;
	struct gate_vol g, g1;
	gate_setup(&g, false);
	gate_setup(&g1, false);
	live_start_gate(&l, &g, 2);
	assert_int_equal(tnd_target_server_map_lun(l.srv, test_target, 1, "gate1", &g1.base), 0);
	assert_int_equal(tnd_target_server_set_allow_any(l.srv, test_target, false), 0);
	static const uint64_t only1[] = { 1 };
	struct tnd_target_acl a = { .initiator = "iqn.2026-11.test:a", .luns = only1, .nr_luns = 1 };
	struct tnd_target_acl b = { .initiator = "iqn.2026-11.test:b" };
	assert_int_equal(tnd_target_server_set_acl(l.srv, test_target, &a), 0);
	assert_int_equal(tnd_target_server_set_acl(l.srv, test_target, &b), 0);
	assert_int_equal(tnd_target_server_set_acl(l.srv, "iqn.2026-11.test:none", &b), -ENOENT);
	struct tnd_target_acl bad = { .initiator = "" };
	assert_int_equal(tnd_target_server_set_acl(l.srv, test_target, &bad), -EINVAL);
	static const struct tnd_target_chap short_secret = { "u", "short" };
	bad = (struct tnd_target_acl){ .initiator = "iqn.2026-11.test:c", .chap = &short_secret };
	assert_int_equal(tnd_target_server_set_acl(l.srv, test_target, &bad), -EINVAL);

	/* Not in an ACL: authorization failure, and discovery shows nothing. */
	int fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:c"), 0x0202);
	close(fd);
	assert_int_equal(sendtargets_count(l.port, "iqn.2026-11.test:c"), 0);
	assert_int_equal(sendtargets_count(l.port, "iqn.2026-11.test:a"), 1);

	/* A sees only LUN 1; LUN 0 does not exist for it. */
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:a"), 0);
	uint64_t luns[8];
	assert_int_equal(report_luns(fd, 1, 0, luns, 8), 1);
	assert_int_equal(luns[0], 1);
	scsi_cmd_lun(fd, 0, 2, 1, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 512, read10_1, 10);
	assert_int_equal(recv_status(fd), 0x052500);
	scsi_cmd_lun(fd, 1, 3, 2, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x062900);
	/* B sees both. */
	int fdb = connect_to(l.port);
	assert_int_equal(login_normal(fdb, 1, "iqn.2026-11.test:b"), 0);
	assert_int_equal(report_luns(fdb, 1, 0, luns, 8), 2);

	/* Widening A's mask live: a unit attention, then both LUNs. */
	static const uint64_t both[] = { 1, 0 };
	a.luns = both;
	a.nr_luns = 2;
	assert_int_equal(tnd_target_server_set_acl(l.srv, test_target, &a), 0);
	scsi_cmd_lun(fd, 1, 4, 3, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fd), 0x063f0e);
	assert_int_equal(report_luns(fd, 5, 4, luns, 8), 2);
	/* B's view did not change: no unit attention for it. */
	scsi_cmd_lun(fdb, 1, 2, 1, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fdb), 0x062900);
	scsi_cmd_lun(fdb, 1, 3, 2, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fdb), 0);

	/* Removing A's ACL ends A's session, not B's. */
	assert_int_equal(tnd_target_server_remove_acl(l.srv, test_target, "iqn.2026-11.test:a"), 0);
	assert_int_equal(tnd_target_server_remove_acl(l.srv, test_target, "iqn.2026-11.test:a"),
			 -ENOENT);
	char ch;
	assert_int_equal(recv1(fd, &ch), 0);
	close(fd);
	scsi_cmd_lun(fdb, 1, 4, 3, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fdb), 0);
	close(fdb);
	live_stop(&l);
}

/* ---- CHAP ---- */

/* The value of @key in a response text, or NULL. */
static const char *text_value(const char *text, size_t len, const char *key)
{
	size_t kl = strlen(key);
	for (size_t off = 0; off < len; off += strlen(text + off) + 1)
		if (strncmp(text + off, key, kl) == 0 && text[off + kl] == '=')
			return text + off + kl + 1;
	return NULL;
}

static void chap_encodings(void **state)
{
	uint8_t b[2048];
	assert_int_equal(tnd_iscsi_binary_decode("0x0aFf", b, sizeof(b)), 2);
	assert_int_equal(b[0], 0x0a);
	assert_int_equal(b[1], 0xff);
	assert_int_equal(tnd_iscsi_binary_decode("0XabC", b, sizeof(b)), 2);   /* odd: 0x0a 0xbc */
	assert_int_equal(b[0], 0x0a);
	assert_int_equal(b[1], 0xbc);
	assert_int_equal(tnd_iscsi_binary_decode("0bYWJj", b, sizeof(b)), 3);
	assert_memory_equal(b, "abc", 3);
	assert_int_equal(tnd_iscsi_binary_decode("0BYWI=", b, sizeof(b)), 2);
	assert_memory_equal(b, "ab", 2);
	assert_int_equal(tnd_iscsi_binary_decode("0x", b, sizeof(b)), -EINVAL);
	assert_int_equal(tnd_iscsi_binary_decode("0xzz", b, sizeof(b)), -EINVAL);
	assert_int_equal(tnd_iscsi_binary_decode("1234", b, sizeof(b)), -EINVAL);
	assert_int_equal(tnd_iscsi_binary_decode("0b%%%%", b, sizeof(b)), -EINVAL);
	assert_int_equal(tnd_iscsi_binary_decode("0x112233", b, 2), -E2BIG);
	char hex[16];
	static const uint8_t in[3] = { 0x00, 0x7f, 0xa5 };
	tnd_iscsi_binary_encode(in, 3, hex);
	assert_string_equal(hex, "0x007fa5");
	/* MD5(0x01 "secret" "abc"), as computed independently. */
	uint8_t r[16], want[16];
	tnd_iscsi_chap_response(1, (const uint8_t *)"secret", 6, (const uint8_t *)"abc", 3, r);
	assert_int_equal(tnd_iscsi_binary_decode("0xea64469e3d699ce7884d07b0e6b1edb3", want, 16), 16);
	assert_memory_equal(r, want, 16);
}

#define SECRET "twelve-bytes-at-least"
#define MSECRET "another-secret-for-mutual"

/* Run the exchange up to our challenge; returns the identifier. */
static uint8_t chap_challenge(struct tnd_iscsi_chap *s, bool mutual, uint8_t *challenge)
{
	assert_int_equal(tnd_iscsi_chap_init(s, "alice", (const uint8_t *)SECRET, strlen(SECRET),
					     mutual ? "target" : NULL,
					     (const uint8_t *)MSECRET, strlen(MSECRET)), 0);
	struct tnd_iscsi_text t = { 0 };
	struct tnd_iscsi_chap_keys k = { 0 };
	assert_int_equal(tnd_iscsi_chap_step(s, &k, &t), 0);   /* nothing yet */
	k.a = "7,5";
	assert_int_equal(tnd_iscsi_chap_step(s, &k, &t), 0);
	assert_string_equal(text_value(t.buf, t.len, "CHAP_A"), "5");
	uint32_t id;
	assert_int_equal(tnd_iscsi_parse_number(text_value(t.buf, t.len, "CHAP_I"), &id), 0);
	assert_true(id <= 255);
	assert_int_equal(tnd_iscsi_binary_decode(text_value(t.buf, t.len, "CHAP_C"), challenge,
						 TND_CHAP_CHALLENGE_LEN), TND_CHAP_CHALLENGE_LEN);
	tnd_iscsi_text_free(&t);
	return (uint8_t)id;
}

static void chap_state_machine(void **state)
{
	struct tnd_iscsi_chap s;
	struct tnd_iscsi_text t = { 0 };
	uint8_t ch[TND_CHAP_CHALLENGE_LEN], r[16];
	char rhex[64];

	/* The right answer, in hex. */
	uint8_t id = chap_challenge(&s, false, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
	tnd_iscsi_binary_encode(r, 16, rhex);
	struct tnd_iscsi_chap_keys k = { .n = "alice", .r = rhex };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), 1);
	assert_int_equal(t.len, 0);
	tnd_iscsi_chap_wipe(&s);

	/* The same in base64 ("0b"). */
	id = chap_challenge(&s, false, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
	char b64[64] = "0b";
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 2;
	for (int i = 0; i < 16; i += 3) {
		uint32_t v = (uint32_t)r[i] << 16 | (i + 1 < 16 ? (uint32_t)r[i + 1] << 8 : 0) |
			     (i + 2 < 16 ? r[i + 2] : 0);
		b64[o++] = al[v >> 18 & 63];
		b64[o++] = al[v >> 12 & 63];
		b64[o++] = i + 1 < 16 ? al[v >> 6 & 63] : '=';
		b64[o++] = i + 2 < 16 ? al[v & 63] : '=';
	}
	b64[o] = '\0';
	k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = b64 };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), 1);
	tnd_iscsi_chap_wipe(&s);

	/* Wrong secret, wrong name, wrong length, missing response. */
	id = chap_challenge(&s, false, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)"not-the-secret!", 15, ch, sizeof(ch), r);
	tnd_iscsi_binary_encode(r, 16, rhex);
	k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = rhex };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);
	assert_int_equal(s.state, TND_CHAP_FAILED);
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);   /* stays failed */
	id = chap_challenge(&s, false, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
	tnd_iscsi_binary_encode(r, 16, rhex);
	k = (struct tnd_iscsi_chap_keys){ .n = "mallory", .r = rhex };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);
	id = chap_challenge(&s, false, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
	tnd_iscsi_binary_encode(r, 15, rhex);
	k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = rhex };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);
	id = chap_challenge(&s, false, ch);
	k = (struct tnd_iscsi_chap_keys){ .n = "alice" };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);

	/* No MD5 among the algorithms; keys out of order. */
	assert_int_equal(tnd_iscsi_chap_init(&s, "alice", (const uint8_t *)SECRET, strlen(SECRET),
					     NULL, NULL, 0), 0);
	k = (struct tnd_iscsi_chap_keys){ .a = "6,7" };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);
	assert_int_equal(tnd_iscsi_chap_init(&s, "alice", (const uint8_t *)SECRET, strlen(SECRET),
					     NULL, NULL, 0), 0);
	k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = "0x00" };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);

	/* Mutual: our answer to the initiator's challenge. */
	id = chap_challenge(&s, true, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
	tnd_iscsi_binary_encode(r, 16, rhex);
	k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = rhex, .i = "77",
					  .c = "0x0102030405060708090a0b0c0d0e0f10" };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), 1);
	assert_string_equal(text_value(t.buf, t.len, "CHAP_N"), "target");
	uint8_t mine[16], want[16], ic[16];
	assert_int_equal(tnd_iscsi_binary_decode(k.c, ic, 16), 16);
	tnd_iscsi_chap_response(77, (const uint8_t *)MSECRET, strlen(MSECRET), ic, 16, want);
	assert_int_equal(tnd_iscsi_binary_decode(text_value(t.buf, t.len, "CHAP_R"), mine, 16), 16);
	assert_memory_equal(mine, want, 16);
	tnd_iscsi_text_free(&t);

	/* Mutual required but the initiator sends no challenge. */
	id = chap_challenge(&s, true, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
	tnd_iscsi_binary_encode(r, 16, rhex);
	k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = rhex };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);

	/* A reflected challenge: ours, sent back. */
	id = chap_challenge(&s, true, ch);
	tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
	tnd_iscsi_binary_encode(r, 16, rhex);
	char chex[64];
	tnd_iscsi_binary_encode(ch, sizeof(ch), chex);
	k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = rhex, .i = "1", .c = chex };
	assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), -EACCES);
	assert_int_equal(t.len, 0);

	/* A challenge over 1024 bytes; and one of exactly 1024, accepted. */
	static char longc[2 + 2 * 1025 + 1];
	static uint8_t zeros[1025];
	for (size_t len = 1025; len >= 1024; len--) {
		id = chap_challenge(&s, true, ch);
		tnd_iscsi_chap_response(id, (const uint8_t *)SECRET, strlen(SECRET), ch, sizeof(ch), r);
		tnd_iscsi_binary_encode(r, 16, rhex);
		tnd_iscsi_binary_encode(zeros, len, longc);
		k = (struct tnd_iscsi_chap_keys){ .n = "alice", .r = rhex, .i = "1", .c = longc };
		assert_int_equal(tnd_iscsi_chap_step(&s, &k, &t), len > 1024 ? -EACCES : 1);
		tnd_iscsi_text_free(&t);
	}
	tnd_iscsi_chap_wipe(&s);
	assert_int_equal(tnd_iscsi_chap_init(&s, "", (const uint8_t *)"x", 1, NULL, NULL, 0), -EINVAL);
}

/* One login PDU with @text; returns the status, the response in @out. */
static unsigned login_pdu(int fd, uint8_t flags, const char *text, size_t len, char *out,
			  size_t *out_len, uint8_t *rsp_flags)
{
	uint8_t bhs[48] = { 0 }, rsp[48];
	bhs[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	bhs[1] = flags;
	bhs[8] = 0x80;
	bhs[13] = 9;
	tnd_put_be32(bhs + 16, 1);
	send_pdu(fd, bhs, text, (uint32_t)len);
	uint32_t n = recv_pdu(fd, rsp, out, 1 << 16);
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	if (out_len)
		*out_len = n;
	if (rsp_flags)
		*rsp_flags = rsp[1];
	return tnd_get_be16(rsp + 36);
}

/* A whole CHAP login over a socket with @secret; returns the final status. */
static unsigned chap_login(int port, const char *initiator, const char *secret)
{
	int fd = connect_to(port);
	static char data[1 << 16];
	char text[512];
	size_t n;
	uint8_t fl;
	int len = snprintf(text, sizeof(text), "InitiatorName=%s%cTargetName=%s%cAuthMethod=CHAP,None%c",
			   initiator, 0, test_target, 0, 0);
	unsigned st = login_pdu(fd, ISCSI_LOGIN_TRANSIT | 1, text, (size_t)len, data, &n, &fl);
	if (st) {
		close(fd);
		return st;
	}
	if (strcmp(text_value(data, n, "AuthMethod"), "CHAP") != 0) {
		/* None agreed: try to go on as the initiator would. */
		st = login_pdu(fd, ISCSI_LOGIN_TRANSIT | (1 << 2) | 3, "", 0, data, &n, &fl);
		close(fd);
		return st;
	}
	assert_int_equal(fl & ISCSI_LOGIN_TRANSIT, 0);   /* more to come */
	st = login_pdu(fd, 0, "CHAP_A=5", 9, data, &n, &fl);
	assert_int_equal(st, 0);
	uint32_t id;
	uint8_t ch[1024], r[16];
	assert_int_equal(tnd_iscsi_parse_number(text_value(data, n, "CHAP_I"), &id), 0);
	int cl = tnd_iscsi_binary_decode(text_value(data, n, "CHAP_C"), ch, sizeof(ch));
	assert_true(cl >= 16);
	tnd_iscsi_chap_response((uint8_t)id, (const uint8_t *)secret, strlen(secret), ch, (size_t)cl, r);
	char rhex[64];
	tnd_iscsi_binary_encode(r, 16, rhex);
	len = snprintf(text, sizeof(text), "CHAP_N=alice%cCHAP_R=%s%c", 0, rhex, 0);
	st = login_pdu(fd, ISCSI_LOGIN_TRANSIT | 3, text, (size_t)len, data, &n, &fl);
	if (st == 0)
		assert_int_equal(fl & 0x83, 0x83);
	close(fd);
	return st;
}

static void chap_login_live(void **state)
{
	struct live l;
	struct gate_vol g;
	gate_setup(&g, false);
	live_start_gate(&l, &g, 1);
	static const struct tnd_target_chap cred = { "alice", SECRET };
	struct tnd_target_acl a = { .initiator = "iqn.2026-11.test:chap", .chap = &cred };
	assert_int_equal(tnd_target_server_set_acl(l.srv, test_target, &a), 0);
	assert_int_equal(chap_login(l.port, "iqn.2026-11.test:chap", SECRET), 0);
	assert_int_equal(chap_login(l.port, "iqn.2026-11.test:chap", "wrong-secret-here"), 0x0201);
	/* Without CHAP (AuthMethod=None only, or skipping security): refused. */
	int fd = connect_to(l.port);
	static char data[1 << 16];
	static const char none[] = "InitiatorName=iqn.2026-11.test:chap\0TargetName="
				   "iqn.2026-11.io.tandem.test:target-with-a-longish-name-000\0AuthMethod=None";
	assert_int_equal(login_pdu(fd, ISCSI_LOGIN_TRANSIT | 1, none, sizeof(none), data, NULL, NULL),
			 0x0201);
	close(fd);
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:chap"), 0x0201);
	close(fd);
	/* allow_any admits others without CHAP; they need none. */
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 1, "iqn.2026-11.test:other"), 0);
	close(fd);
	assert_int_equal(chap_login(l.port, "iqn.2026-11.test:other", SECRET), 0);
	/* The session says how it authenticated. */
	fd = connect_to(l.port);
	assert_int_equal(login_normal(fd, 2, "iqn.2026-11.test:other"), 0);
	json_t *arr = json_array();
	assert_int_equal(tnd_target_server_sessions_json(l.srv, arr), 0);
	assert_int_equal(json_array_size(arr), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "auth")), "None");
	json_decref(arr);
	close(fd);
	live_stop(&l);
}

/* ---- session placement ---- */

static const char place_t0[] = "iqn.2026-11.test:place-home0";
static const char place_t1[] = "iqn.2026-11.test:place-home1";
static const char place_both[] = "iqn.2026-11.test:place-both";

/*
 * Two reactors; g0's home is reactor 0, g1's reactor 1. Targets: place_t0
 * (g0), place_t1 (g1), place_both (g0 as LUN 0, g1 as LUN 1).
 */
static void live_start_placed(struct live *l, struct gate_vol *g0, struct gate_vol *g1)
{
	memset(l, 0, sizeof(*l));
	l->nr = 2;
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(tnd_reactor_create(i, 256, &l->rs[i]), 0);
	l->r = l->rs[0];
	gate_setup(g0, false);
	gate_setup(g1, false);
	g0->home = l->rs[0];
	g1->home = l->rs[1];
	struct tnd_target_server_opts o = { .reactors = l->rs, .nr_reactors = 2 };
	assert_int_equal(tnd_target_server_create(&o, &l->srv), 0);
	assert_int_equal(tnd_target_server_add_portal(l->srv, "127.0.0.1:0"), 0);
	l->port = tnd_target_server_portal_port(l->srv, 0);
	const char *tg[] = { place_t0, place_t1, place_both };
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(tnd_target_server_add_target(l->srv, tg[i], NULL, true, NULL, 0), 0);
	assert_int_equal(tnd_target_server_map_lun(l->srv, place_t0, 0, "g0", &g0->base), 0);
	assert_int_equal(tnd_target_server_map_lun(l->srv, place_t1, 0, "g1", &g1->base), 0);
	assert_int_equal(tnd_target_server_map_lun(l->srv, place_both, 0, "g0", &g0->base), 0);
	assert_int_equal(tnd_target_server_map_lun(l->srv, place_both, 1, "g1", &g1->base), 0);
	assert_int_equal(tnd_target_server_start(l->srv), 0);
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(tnd_reactor_start(l->rs[i]), 0);
}

/* The reactor of every normal session to @target, in @out; returns how many. */
static unsigned session_reactors(struct tnd_target_server *srv, const char *target,
				 int *out, unsigned max)
{
	json_t *arr = json_array(), *s;
	size_t i;
	unsigned n = 0;
	assert_int_equal(tnd_target_server_sessions_json(srv, arr), 0);
	json_array_foreach(arr, i, s) {
		if (strcmp(json_string_value(json_object_get(s, "target")), target) != 0)
			continue;
		assert_string_equal(json_string_value(json_object_get(s, "type")), "normal");
		assert_true(n < max);
		out[n++] = (int)json_integer_value(json_object_get(s, "reactor"));
	}
	json_decref(arr);
	return n;
}

/* READ(10) of one block of LUN @lun: the gate volume fills it with 0xab. */
static void read_ab(int fd, uint64_t lun, uint32_t itt, uint32_t cmd_sn)
{
	scsi_cmd_lun(fd, lun, itt, cmd_sn, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 512, read10_1, 10);
	uint8_t rsp[48];
	static char data[1 << 16];
	uint32_t n = recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_DATA_IN);
	assert_true(rsp[1] & ISCSI_DATAIN_STATUS);
	assert_int_equal(n, 512);
	for (unsigned i = 0; i < 512; i++)
		assert_int_equal((uint8_t)data[i], 0xab);
}

/*
 * Sessions go to the reactor that is not their LUN's home, wherever their
 * connection was accepted, and I/O works there; a target with LUNs on both
 * homes gets its sessions spread by count. Stopping with moved sessions
 * logged in drains them.
 */
static void placement_off_home(void **state)
{
	struct live l;
	struct gate_vol g0, g1;
	live_start_placed(&l, &g0, &g1);
	int fds[12];
	unsigned nfd = 0;
	const char *tg[] = { place_t0, place_t1, place_both };
	for (unsigned t = 0; t < 3; t++) {
		for (uint8_t k = 1; k <= 4; k++) {
			int fd = connect_to(l.port);
			assert_int_equal(login_to(fd, k, "iqn.2026-11.test:placed", tg[t]), 0);
			/* The first command answered: the session has settled. */
			scsi_cmd_lun(fd, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
			assert_int_equal(recv_status(fd), 0x062900);   /* power on */
			read_ab(fd, 0, 2, 1);
			if (t == 2) {
				scsi_cmd_lun(fd, 1, 3, 2, ISCSI_FLAG_FINAL, 0, tur6, 6);
				assert_int_equal(recv_status(fd), 0x062900);
				read_ab(fd, 1, 4, 3);
			}
			fds[nfd++] = fd;
		}
	}
	int r[8];
	assert_int_equal(session_reactors(l.srv, place_t0, r, 8), 4);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(r[i], 1);
	assert_int_equal(session_reactors(l.srv, place_t1, r, 8), 4);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(r[i], 0);
	/* Both reactors are a home of place_both: fewest sessions wins. */
	assert_int_equal(session_reactors(l.srv, place_both, r, 8), 4);
	unsigned on1 = 0;
	for (unsigned i = 0; i < 4; i++)
		on1 += r[i] == 1;
	assert_int_equal(on1, 2);
	/* Sessions still run after a later round on their new reactor. */
	assert_int_equal(tnd_target_server_unmap_lun(l.srv, place_both, 1), 0);
	scsi_cmd_lun(fds[8], 1, 5, 4, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(fds[8]), 0x052500);   /* LOGICAL UNIT NOT SUPPORTED */
	live_stop(&l);
	char ch;
	for (unsigned i = 0; i < nfd; i++) {
		assert_int_equal(recv1(fds[i], &ch), 0);   /* drained and closed */
		close(fds[i]);
	}
}

/*
 * An initiator that sends commands before it has read the final login
 * response (it must not, but may): they are answered, from the reactor the
 * session moved to.
 */
static void placement_carries_early_pdus(void **state)
{
	struct live l;
	struct gate_vol g0, g1;
	live_start_placed(&l, &g0, &g1);
	/* The first connection lands on reactor 0, place_t0's home. */
	int fd = connect_to(l.port);
	char text[512];
	int n = snprintf(text, sizeof(text), "InitiatorName=iqn.2026-11.test:eager%cTargetName=%s%c"
			 "SessionType=Normal%c", 0, place_t0, 0, 0);
	uint8_t buf[1024] = { 0 };
	uint8_t *b = buf;
	b[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	b[1] = ISCSI_LOGIN_TRANSIT | (1 << 2) | 3;
	b[8] = 0x80;
	b[13] = 1;
	tnd_put_be32(b + 16, 1);
	tnd_put_be24(b + 5, (uint32_t)n);
	memcpy(b + 48, text, (size_t)n);
	size_t len = 48 + (size_t)n + tnd_iscsi_pad4((uint32_t)n);
	/* A TEST UNIT READY and a READ(10) right behind it, same write. */
	for (unsigned i = 0; i < 2; i++) {
		b = buf + len;
		b[0] = ISCSI_OP_SCSI_CMD;
		b[1] = ISCSI_FLAG_FINAL | (i ? ISCSI_CMD_READ : 0);
		tnd_put_be32(b + 16, 10 + i);
		tnd_put_be32(b + 20, i ? 512 : 0);
		tnd_put_be32(b + 24, i);
		memcpy(b + 32, i ? read10_1 : tur6, i ? 10 : 6);
		len += 48;
	}
	assert_int_equal(send(fd, buf, len, 0), (ssize_t)len);
	uint8_t rsp[48];
	static char data[1 << 16];
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	assert_int_equal(tnd_get_be16(rsp + 36), 0);
	assert_int_equal(recv_status(fd), 0x062900);
	recv_pdu(fd, rsp, data, sizeof(data));
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_DATA_IN);
	assert_int_equal((uint8_t)data[0], 0xab);
	int r[2];
	assert_int_equal(session_reactors(l.srv, place_t0, r, 2), 1);
	assert_int_equal(r[0], 1);
	close(fd);
	live_stop(&l);
}

/*
 * A session that moved is reinstated, kicked and listed on the reactor it
 * moved to; NOP-In pings follow it there.
 */
static void placement_reinstate_kick_ping(void **state)
{
	struct live l;
	struct gate_vol g0, g1;
	live_start_placed(&l, &g0, &g1);
	/* Lands on reactor 0, moves to 1. */
	int a = connect_to(l.port);
	assert_int_equal(login_to(a, 7, "iqn.2026-11.test:same", place_t0), 0);
	scsi_cmd_lun(a, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(a), 0x062900);
	/* Lands on reactor 1 and stays; the old session goes. */
	int c = connect_to(l.port);
	assert_int_equal(login_to(c, 7, "iqn.2026-11.test:same", place_t0), 0);
	char ch;
	assert_int_equal(recv1(a, &ch), 0);
	close(a);
	scsi_cmd_lun(c, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	unsigned st = recv_status(c);
	assert_true(st == 0 || st == 0x062900);
	int r[2];
	assert_int_equal(session_reactors(l.srv, place_t0, r, 2), 1);
	assert_int_equal(r[0], 1);

	/* Lands on reactor 0, moves to 1; kicked there. */
	int k = connect_to(l.port);
	assert_int_equal(login_to(k, 8, "iqn.2026-11.test:kicked", place_t0), 0);
	scsi_cmd_lun(k, 0, 1, 0, ISCSI_FLAG_FINAL, 0, tur6, 6);
	assert_int_equal(recv_status(k), 0x062900);
	json_t *arr = json_array(), *s;
	size_t i;
	char id[32] = "";
	assert_int_equal(tnd_target_server_sessions_json(l.srv, arr), 0);
	json_array_foreach(arr, i, s)
		if (strcmp(json_string_value(json_object_get(s, "initiator")), "iqn.2026-11.test:kicked") == 0) {
			assert_int_equal(json_integer_value(json_object_get(s, "reactor")), 1);
			snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(s, "id")));
		}
	json_decref(arr);
	assert_int_equal(tnd_target_server_kick_session(l.srv, id), 0);
	assert_int_equal(recv1(k, &ch), 0);
	close(k);
	close(c);
	live_stop(&l);

	/* Pings on the new reactor: one-second interval, moved session. */
	memset(&l, 0, sizeof(l));
	l.nr = 2;
	for (unsigned j = 0; j < 2; j++)
		assert_int_equal(tnd_reactor_create(j, 256, &l.rs[j]), 0);
	l.r = l.rs[0];
	gate_setup(&g0, false);
	g0.home = l.rs[0];
	struct tnd_target_server_opts o = { .reactors = l.rs, .nr_reactors = 2, .nop_interval_s = 1 };
	assert_int_equal(tnd_target_server_create(&o, &l.srv), 0);
	assert_int_equal(tnd_target_server_add_portal(l.srv, "127.0.0.1:0"), 0);
	l.port = tnd_target_server_portal_port(l.srv, 0);
	assert_int_equal(tnd_target_server_add_target(l.srv, place_t0, NULL, true, NULL, 0), 0);
	assert_int_equal(tnd_target_server_map_lun(l.srv, place_t0, 0, "g0", &g0.base), 0);
	assert_int_equal(tnd_target_server_start(l.srv), 0);
	for (unsigned j = 0; j < 2; j++)
		assert_int_equal(tnd_reactor_start(l.rs[j]), 0);
	int p = connect_to(l.port);
	assert_int_equal(login_to(p, 1, "iqn.2026-11.test:sleepy", place_t0), 0);
	uint8_t rsp[48];
	assert_int_equal(recv_all(p, rsp, 48), 0);
	assert_int_equal(rsp[0] & 0x3f, ISCSI_OP_NOP_IN);
	assert_int_not_equal(tnd_get_be32(rsp + 20), ISCSI_RSVD_TAG);
	assert_int_equal(session_reactors(l.srv, place_t0, r, 2), 1);
	assert_int_equal(r[0], 1);
	assert_int_equal(recv1(p, &ch), 0);   /* unanswered: closed */
	close(p);
	live_stop(&l);
}

/* ---- placement under churn ---- */

struct churn {
	int port;
	atomic_bool stop;
	atomic_uint logins;
	unsigned seed;
};

/* One connection's life without cmocka (not thread-safe): log in to @target
 * with ISID low byte @isid, maybe send a TUR and read its answer, close at
 * some point. Errors just end it: the target may kick, reinstate or stop. */
static void churn_one(struct churn *ch, unsigned *rnd, const char *target)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return;
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)ch->port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto out_close;
	char text[256];
	int n = snprintf(text, sizeof(text), "InitiatorName=iqn.2026-11.test:churn%cTargetName=%s%c"
			 "SessionType=Normal%c", 0, target, 0, 0);
	uint8_t buf[512] = { 0 }, rsp[48];
	buf[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	buf[1] = ISCSI_LOGIN_TRANSIT | (1 << 2) | 3;
	buf[8] = 0x80;
	buf[13] = (uint8_t)(rand_r(rnd) % 4);   /* few ISIDs: reinstatements */
	tnd_put_be32(buf + 16, 1);
	tnd_put_be24(buf + 5, (uint32_t)n);
	memcpy(buf + 48, text, (size_t)n);
	size_t len = 48 + (size_t)n + tnd_iscsi_pad4((uint32_t)n);
	bool eager = rand_r(rnd) % 2;
	if (eager) {
		/* A TUR right behind the login, in the same write. */
		uint8_t *b = buf + len;
		b[0] = ISCSI_OP_SCSI_CMD;
		b[1] = ISCSI_FLAG_FINAL;
		tnd_put_be32(b + 16, 5);
		len += 48;
	}
	if (send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len)
		goto out_close;
	unsigned what = rand_r(rnd) % 3;
	if (what == 0)
		goto out_close;   /* gone before reading the response */
	if (recv_all(fd, rsp, 48) != 0 || (rsp[0] & 0x3f) != ISCSI_OP_LOGIN_RSP)
		goto out_close;
	uint32_t dl = tnd_get_be24(rsp + 5);
	char skip[4096];
	if (dl > sizeof(skip) || recv_all(fd, skip, dl + tnd_iscsi_pad4(dl)) != 0 || rsp[36])
		goto out_close;
	atomic_fetch_add(&ch->logins, 1);
	if (what == 1 && !eager) {
		uint8_t bhs[48] = { 0 };
		bhs[0] = ISCSI_OP_SCSI_CMD;
		bhs[1] = ISCSI_FLAG_FINAL;
		tnd_put_be32(bhs + 16, 5);
		if (send(fd, bhs, 48, MSG_NOSIGNAL) != 48)
			goto out_close;
	}
	if (what == 1 || eager)
		(void)recv_all(fd, rsp, 48);
	if (rand_r(rnd) % 2)
		usleep(rand_r(rnd) % 3000);
out_close:
	close(fd);
}

static void *churn_thread(void *p)
{
	struct churn *ch = p;
	unsigned rnd = ch->seed;
	const char *tg[] = { place_t0, place_t1, place_both };
	while (!atomic_load(&ch->stop))
		churn_one(ch, &rnd, tg[rand_r(&rnd) % 3]);
	return NULL;
}

/*
 * Sessions logging in, moving, being reinstated, kicked, listed and closed
 * from three threads while the LUN map changes, then a stop in the middle
 * of it: nothing may crash or leak (the sanitizer build checks), and the
 * stop callback must come.
 */
static void placement_churn(void **state)
{
	struct live l;
	struct gate_vol g0, g1;
	live_start_placed(&l, &g0, &g1);
	struct churn ch[3];
	pthread_t th[3];
	for (unsigned i = 0; i < 3; i++) {
		ch[i] = (struct churn){ .port = l.port, .seed = 7 + i };
		assert_int_equal(pthread_create(&th[i], NULL, churn_thread, &ch[i]), 0);
	}
	uint64_t end = tnd_now_ns() + 1500ull * 1000 * 1000;
	for (unsigned k = 0; tnd_now_ns() < end; k++) {
		json_t *arr = json_array();
		assert_int_equal(tnd_target_server_sessions_json(l.srv, arr), 0);
		if (json_array_size(arr) > 0) {
			const char *id = json_string_value(json_object_get(json_array_get(arr, 0), "id"));
			int ret = tnd_target_server_kick_session(l.srv, id);
			assert_true(ret == 0 || ret == -ENOENT);
		}
		json_decref(arr);
		if (k % 2)
			assert_int_equal(tnd_target_server_map_lun(l.srv, place_t0, 1, "g1", &g1.base), 0);
		else if (k > 0)
			assert_int_equal(tnd_target_server_unmap_lun(l.srv, place_t0, 1), 0);
		usleep(2000);
	}
	/* Stop while logins go on. */
	live_stop(&l);
	unsigned logins = 0;
	for (unsigned i = 0; i < 3; i++) {
		atomic_store(&ch[i].stop, true);
		pthread_join(th[i], NULL);
		logins += atomic_load(&ch[i].logins);
	}
	print_message("placement_churn: %u logins\n", logins);
	assert_true(logins > 10);
}

int main(void)
{
	if (getenv("TND_TEST_DEBUG"))
		tnd_log_set_level(TND_LOG_DEBUG);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pdu_bhs_fields),
		cmocka_unit_test(pdu_digests),
		cmocka_unit_test(pdu_padding_and_limits),
		cmocka_unit_test(pdu_ahs),
		cmocka_unit_test(lun_addressing),
		cmocka_unit_test(cmdsn_window),
		cmocka_unit_test(pool_reuse),
		cmocka_unit_test(text_parsing),
		cmocka_unit_test(negotiate_rules),
		cmocka_unit_test(negotiate_identity_and_declare),
		cmocka_unit_test(text_builder_limit),
		cmocka_unit_test(sendtargets_split_512),
		cmocka_unit_test(login_failures),
		cmocka_unit_test(login_text_continued),
		cmocka_unit_test(portal_ipv6_and_wildcard),
		cmocka_unit_test(session_reinstatement),
		cmocka_unit_test(nop_ping_unanswered_closes),
		cmocka_unit_test(abort_task_waits_for_volume),
		cmocka_unit_test(live_map_lun_raises_ua),
		cmocka_unit_test(live_alua_state),
		cmocka_unit_test(live_unmap_waits_for_xcopy_source),
		cmocka_unit_test(live_unmap_waits_for_io),
		cmocka_unit_test(live_remove_target_waits_for_io),
		cmocka_unit_test(live_remove_target_closes_sessions),
		cmocka_unit_test(acl_admission_and_lun_masking),
		cmocka_unit_test(chap_encodings),
		cmocka_unit_test(chap_state_machine),
		cmocka_unit_test(chap_login_live),
		cmocka_unit_test(placement_off_home),
		cmocka_unit_test(placement_carries_early_pdus),
		cmocka_unit_test(placement_reinstate_kick_ping),
		cmocka_unit_test(placement_churn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
