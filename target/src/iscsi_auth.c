/*
 * CHAP for iSCSI login; see iscsi_auth.h for the exchange and the rules.
 *
 * MD5, base64 and the constant-time comparison come from nettle (the
 * crypto library GnuTLS is built on), never from hand-written code.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nettle/base64.h>
#include <nettle/md5.h>
#include <nettle/memops.h>

#include "iscsi_auth.h"

/* ---- encodings ---- */

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int hex_decode(const char *s, uint8_t *out, size_t cap)
{
	size_t n = strlen(s);
	if (n == 0)
		return -EINVAL;
	size_t len = (n + 1) / 2;
	if (len > cap)
		return -E2BIG;
	/* An odd count of digits: the first byte has only its low nibble. */
	size_t o = 0;
	size_t i = 0;
	if (n % 2) {
		int d = hex_digit(s[0]);
		if (d < 0)
			return -EINVAL;
		out[o++] = (uint8_t)d;
		i = 1;
	}
	for (; i < n; i += 2) {
		int hi = hex_digit(s[i]), lo = hex_digit(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[o++] = (uint8_t)(hi << 4 | lo);
	}
	return (int)o;
}

static int base64_decode(const char *s, uint8_t *out, size_t cap)
{
	/* Room for a little more than the largest value we take, so that an
	 * over-long one is told apart from a malformed one. */
	uint8_t tmp[TND_CHAP_BINARY_MAX + 8];
	size_t n = strlen(s);
	if (n == 0)
		return -EINVAL;
	if (BASE64_DECODE_LENGTH(n) > sizeof(tmp))
		return -E2BIG;
	struct base64_decode_ctx ctx;
	base64_decode_init(&ctx);
	size_t got = sizeof(tmp);
	if (!base64_decode_update(&ctx, &got, tmp, n, s) || !base64_decode_final(&ctx))
		return -EINVAL;
	if (got > cap)
		return -E2BIG;
	memcpy(out, tmp, got);
	return (int)got;
}

int tnd_iscsi_binary_decode(const char *s, uint8_t *out, size_t cap)
{
	if (!s || s[0] != '0')
		return -EINVAL;
	if (s[1] == 'x' || s[1] == 'X')
		return hex_decode(s + 2, out, cap);
	if (s[1] == 'b' || s[1] == 'B')
		return base64_decode(s + 2, out, cap);
	return -EINVAL;
}

void tnd_iscsi_binary_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	*out++ = '0';
	*out++ = 'x';
	for (size_t i = 0; i < len; i++) {
		*out++ = digits[in[i] >> 4];
		*out++ = digits[in[i] & 0xf];
	}
	*out = '\0';
}

void tnd_iscsi_chap_response(uint8_t id, const uint8_t *secret, size_t secret_len,
			     const uint8_t *challenge, size_t challenge_len, uint8_t *out)
{
	struct md5_ctx ctx;
	md5_init(&ctx);
	md5_update(&ctx, 1, &id);
	md5_update(&ctx, secret_len, secret);
	md5_update(&ctx, challenge_len, challenge);
	md5_digest(&ctx, MD5_DIGEST_SIZE, out);
}

/* ---- the exchange ---- */

int tnd_iscsi_chap_init(struct tnd_iscsi_chap *s, const char *user, const uint8_t *secret,
			size_t secret_len, const char *mutual_user, const uint8_t *mutual_secret,
			size_t mutual_secret_len)
{
	memset(s, 0, sizeof(*s));
	if (!user || !user[0] || strlen(user) > TND_CHAP_NAME_MAX || secret_len == 0 ||
	    secret_len > TND_CHAP_SECRET_MAX)
		return -EINVAL;
	if (mutual_user && (!mutual_user[0] || strlen(mutual_user) > TND_CHAP_NAME_MAX ||
			    mutual_secret_len == 0 || mutual_secret_len > TND_CHAP_SECRET_MAX))
		return -EINVAL;
	strcpy(s->user, user);
	memcpy(s->secret, secret, secret_len);
	s->secret_len = secret_len;
	if (mutual_user) {
		s->mutual = true;
		strcpy(s->mutual_user, mutual_user);
		memcpy(s->mutual_secret, mutual_secret, mutual_secret_len);
		s->mutual_secret_len = mutual_secret_len;
	}
	s->state = TND_CHAP_WAIT_A;
	return 0;
}

void tnd_iscsi_chap_wipe(struct tnd_iscsi_chap *s)
{
	explicit_bzero(s, sizeof(*s));
}

/* Does the comma-separated list @v name algorithm 5? Numbers may be hex. */
static bool offers_md5(const char *v)
{
	char buf[TND_ISCSI_VALUE_MAX + 1];
	snprintf(buf, sizeof(buf), "%s", v);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		uint32_t a;
		if (tnd_iscsi_parse_number(tok, &a) == 0 && a == TND_CHAP_ALG_MD5)
			return true;
	}
	return false;
}

static int fail(struct tnd_iscsi_chap *s)
{
	s->state = TND_CHAP_FAILED;
	return -EACCES;
}

/* Send CHAP_A=5, a fresh identifier and challenge. */
static int send_challenge(struct tnd_iscsi_chap *s, struct tnd_iscsi_text *resp)
{
	uint8_t rnd[1 + TND_CHAP_CHALLENGE_LEN];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	s->id = rnd[0];
	memcpy(s->challenge, rnd + 1, TND_CHAP_CHALLENGE_LEN);
	char id[8], c[2 + 2 * TND_CHAP_CHALLENGE_LEN + 1];
	snprintf(id, sizeof(id), "%u", s->id);
	tnd_iscsi_binary_encode(s->challenge, TND_CHAP_CHALLENGE_LEN, c);
	int ret = tnd_iscsi_text_add(resp, "CHAP_A", "5");
	if (ret == 0)
		ret = tnd_iscsi_text_add(resp, "CHAP_I", id);
	if (ret == 0)
		ret = tnd_iscsi_text_add(resp, "CHAP_C", c);
	s->state = TND_CHAP_WAIT_NR;
	return ret;
}

/* Check CHAP_N/CHAP_R against what we expect. */
static bool response_ok(const struct tnd_iscsi_chap *s, const struct tnd_iscsi_chap_keys *k)
{
	uint8_t r[TND_CHAP_BINARY_MAX], want[TND_CHAP_DIGEST_LEN];
	if (strcmp(k->n, s->user) != 0)
		return false;
	int len = tnd_iscsi_binary_decode(k->r, r, sizeof(r));
	if (len != TND_CHAP_DIGEST_LEN)
		return false;
	tnd_iscsi_chap_response(s->id, s->secret, s->secret_len, s->challenge,
				TND_CHAP_CHALLENGE_LEN, want);
	bool ok = memeql_sec(r, want, TND_CHAP_DIGEST_LEN);
	explicit_bzero(want, sizeof(want));
	return ok;
}

/* Answer the initiator's challenge (mutual CHAP). 0, -EACCES or a text error. */
static int answer_challenge(struct tnd_iscsi_chap *s, const struct tnd_iscsi_chap_keys *k,
			    struct tnd_iscsi_text *resp)
{
	uint32_t id;
	uint8_t c[TND_CHAP_BINARY_MAX];
	if (tnd_iscsi_parse_number(k->i, &id) < 0 || id > 255)
		return -EACCES;
	int len = tnd_iscsi_binary_decode(k->c, c, sizeof(c));
	if (len <= 0)
		return -EACCES;
	/* Our own challenge sent back: answering it would hand the initiator
	 * a response it could replay to us. */
	if (len == TND_CHAP_CHALLENGE_LEN && memcmp(c, s->challenge, TND_CHAP_CHALLENGE_LEN) == 0)
		return -EACCES;
	uint8_t r[TND_CHAP_DIGEST_LEN];
	char hex[2 + 2 * TND_CHAP_DIGEST_LEN + 1];
	tnd_iscsi_chap_response((uint8_t)id, s->mutual_secret, s->mutual_secret_len, c,
				(size_t)len, r);
	tnd_iscsi_binary_encode(r, sizeof(r), hex);
	int ret = tnd_iscsi_text_add(resp, "CHAP_N", s->mutual_user);
	if (ret == 0)
		ret = tnd_iscsi_text_add(resp, "CHAP_R", hex);
	explicit_bzero(r, sizeof(r));
	return ret;
}

int tnd_iscsi_chap_step(struct tnd_iscsi_chap *s, const struct tnd_iscsi_chap_keys *k,
			struct tnd_iscsi_text *resp)
{
	switch (s->state) {
	case TND_CHAP_WAIT_A:
		/* The request that agreed on CHAP may carry no CHAP key yet. */
		if (!k->a && !k->i && !k->c && !k->n && !k->r)
			return 0;
		if (!k->a || k->i || k->c || k->n || k->r || !offers_md5(k->a))
			return fail(s);
		return send_challenge(s, resp);
	case TND_CHAP_WAIT_NR: {
		if (k->a || !k->n || !k->r || !response_ok(s, k))
			return fail(s);
		bool wants_mutual = k->i || k->c;
		if (wants_mutual != s->mutual || (wants_mutual && (!k->i || !k->c)))
			return fail(s);
		if (s->mutual) {
			int ret = answer_challenge(s, k, resp);
			if (ret == -EACCES)
				return fail(s);
			if (ret < 0)
				return ret;
		}
		s->state = TND_CHAP_DONE;
		return 1;
	}
	case TND_CHAP_DONE:
		/* Nothing more may come once authenticated. */
		if (k->a || k->i || k->c || k->n || k->r)
			return fail(s);
		return 1;
	case TND_CHAP_FAILED:
		break;
	}
	return -EACCES;
}
