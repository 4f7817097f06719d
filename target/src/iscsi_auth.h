/*
 * iscsi_auth.h — CHAP authentication for iSCSI login (RFC 7143 section
 * 12.1.3, CHAP of RFC 1994 with MD5), internal to target/.
 *
 * The exchange, in the security stage of a login:
 *
 *   I -> T  AuthMethod=CHAP,...           (answered by the login code)
 *   I -> T  CHAP_A=<A1,A2,...>
 *   T -> I  CHAP_A=5 CHAP_I=<id> CHAP_C=<challenge>
 *   I -> T  CHAP_N=<name> CHAP_R=<response> [CHAP_I=<id'> CHAP_C=<challenge'>]
 *   T -> I  [CHAP_N=<our name> CHAP_R=<our response>]   (mutual CHAP)
 *
 * where a response is MD5(id || secret || challenge). Our challenge is 16
 * random bytes from getrandom(); the identifier a random byte. The
 * initiator's response is compared in constant time. Mutual CHAP answers
 * the initiator's own challenge with the mutual secret, after refusing a
 * challenge equal to ours (a reflection attack) or longer than 1024 bytes.
 *
 * This module is a pure state machine over the keys of one request: it
 * takes the CHAP_* values the text negotiator collected and appends its
 * answers to the response text. It knows nothing of connections, so the
 * unit tests and the fuzzer drive it directly. Secrets are copied in at
 * start, wiped by tnd_iscsi_chap_wipe() and never logged.
 *
 * Binary values (CHAP_C, CHAP_R) are encoded per RFC 7143 section 6.1:
 * "0x" + hex digits (an odd count implies a leading zero) or "0b" +
 * base64. We send hex.
 */
#ifndef TND_TARGET_ISCSI_AUTH_H
#define TND_TARGET_ISCSI_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iscsi_text.h"

#define TND_CHAP_ALG_MD5 5
#define TND_CHAP_BINARY_MAX 1024      /* RFC 7143: C and R at most 1024 bytes */
#define TND_CHAP_CHALLENGE_LEN 16
#define TND_CHAP_DIGEST_LEN 16        /* MD5 */
#define TND_CHAP_SECRET_MAX 255
#define TND_CHAP_NAME_MAX 255

/* The CHAP_* values of one request; NULL where absent. Borrowed. */
struct tnd_iscsi_chap_keys {
	const char *a, *i, *c, *n, *r;
};

enum tnd_iscsi_chap_state {
	TND_CHAP_WAIT_A,      /* AuthMethod=CHAP agreed, waiting for CHAP_A */
	TND_CHAP_WAIT_NR,     /* challenge sent, waiting for CHAP_N/CHAP_R */
	TND_CHAP_DONE,        /* authenticated */
	TND_CHAP_FAILED,
};

struct tnd_iscsi_chap {
	enum tnd_iscsi_chap_state state;
	uint8_t id;
	uint8_t challenge[TND_CHAP_CHALLENGE_LEN];
	char user[TND_CHAP_NAME_MAX + 1];
	uint8_t secret[TND_CHAP_SECRET_MAX];
	size_t secret_len;
	bool mutual;
	char mutual_user[TND_CHAP_NAME_MAX + 1];
	uint8_t mutual_secret[TND_CHAP_SECRET_MAX];
	size_t mutual_secret_len;
};

/*
 * Start an exchange that expects @user/@secret from the initiator and,
 * when @mutual_user is not NULL, answers its challenge with
 * @mutual_user/@mutual_secret. Copies everything. 0 or -EINVAL (a name or
 * secret too long, or empty).
 */
int tnd_iscsi_chap_init(struct tnd_iscsi_chap *s, const char *user, const uint8_t *secret,
			size_t secret_len, const char *mutual_user, const uint8_t *mutual_secret,
			size_t mutual_secret_len);

/*
 * Feed the CHAP keys of one request. Returns 0 when the exchange goes on
 * (answers may have been added to @resp), 1 once the initiator is
 * authenticated (and, for mutual CHAP, our answer added), -EACCES when
 * authentication fails (missing or malformed keys, wrong algorithm, name
 * or response, a reflected or over-long challenge), -ENOMEM / -E2BIG /
 * -EIO (no randomness) for our own trouble. After a failure the state is
 * TND_CHAP_FAILED and every further step fails.
 */
int tnd_iscsi_chap_step(struct tnd_iscsi_chap *s, const struct tnd_iscsi_chap_keys *k,
			struct tnd_iscsi_text *resp);

/* Forget the secrets (and everything else). */
void tnd_iscsi_chap_wipe(struct tnd_iscsi_chap *s);

/*
 * Decode a binary value ("0x..." or "0b...") into at most @cap bytes.
 * Returns the length, -EINVAL for a malformed value, -E2BIG when longer
 * than @cap.
 */
int tnd_iscsi_binary_decode(const char *s, uint8_t *out, size_t cap);

/* Encode @len bytes as "0x" + lowercase hex into @out (>= 2 + 2 * len + 1). */
void tnd_iscsi_binary_encode(const uint8_t *in, size_t len, char *out);

/* The CHAP response MD5(@id || @secret || @challenge) into @out (16 bytes). */
void tnd_iscsi_chap_response(uint8_t id, const uint8_t *secret, size_t secret_len,
			     const uint8_t *challenge, size_t challenge_len, uint8_t *out);

#endif
