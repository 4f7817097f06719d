/*
 * fuzz_chap.c — libFuzzer target for the CHAP exchange of a login
 * (target/src/iscsi_auth.c) and the binary encodings it decodes.
 *
 * An input is up to four login requests separated by 0xff bytes. Each is
 * split into key=value pairs as the login code would; the CHAP_* values
 * are fed to one exchange (with mutual CHAP configured, so every branch
 * is reachable). The first request's text is also decoded as a binary
 * value on its own.
 *
 * Checked: no crash or sanitizer report; the state machine never reports
 * success for a response it did not verify (an input cannot know our
 * random challenge, so success is impossible), and a failed exchange
 * stays failed.
 *
 * Seeds (corpus/chap/): the four requests of a mutual exchange with hex
 * and base64 values, a reflected challenge, an over-long challenge.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi_text.h"
/* Compiled in for coverage (the fuzz build instruments fuzz_*.c only). */
#include "../../target/src/iscsi_auth.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void feed(struct tnd_iscsi_chap *s, const uint8_t *req, size_t len, bool first)
{
	char *buf = malloc(len + 1);
	struct tnd_iscsi_pair *pairs = malloc(64 * sizeof(*pairs));
	if (!buf || !pairs)
		goto out;
	memcpy(buf, req, len);
	buf[len] = '\0';
	if (first) {
		uint8_t bin[TND_CHAP_BINARY_MAX];
		int r = tnd_iscsi_binary_decode(buf, bin, sizeof(bin));
		CHECK(r <= (int)sizeof(bin));
	}
	int n = tnd_iscsi_text_parse(buf, len, pairs, 64);
	if (n < 0)
		goto out;
	struct tnd_iscsi_chap_keys k = { 0 };
	for (int i = 0; i < n; i++) {
		const char *v = pairs[i].value;
		if (strcmp(pairs[i].key, "CHAP_A") == 0)
			k.a = v;
		else if (strcmp(pairs[i].key, "CHAP_I") == 0)
			k.i = v;
		else if (strcmp(pairs[i].key, "CHAP_C") == 0)
			k.c = v;
		else if (strcmp(pairs[i].key, "CHAP_N") == 0)
			k.n = v;
		else if (strcmp(pairs[i].key, "CHAP_R") == 0)
			k.r = v;
	}
	bool was_failed = s->state == TND_CHAP_FAILED;
	struct tnd_iscsi_text resp = { 0 };
	int r = tnd_iscsi_chap_step(s, &k, &resp);
	CHECK(r != 1);                         /* cannot guess the challenge */
	CHECK(!was_failed || r == -EACCES);
	CHECK(r != -EACCES || s->state == TND_CHAP_FAILED);
	tnd_iscsi_text_free(&resp);
out:
	free(pairs);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char secret[] = "fuzzing-secret-123", msecret[] = "mutual-secret-4567";
	struct tnd_iscsi_chap s;
	CHECK(tnd_iscsi_chap_init(&s, "alice", (const uint8_t *)secret, sizeof(secret) - 1,
				  "target", (const uint8_t *)msecret, sizeof(msecret) - 1) == 0);
	size_t off = 0;
	for (int i = 0; i < 4 && off <= size; i++) {
		const uint8_t *end = memchr(data + off, 0xff, size - off);
		size_t len = end ? (size_t)(end - (data + off)) : size - off;
		feed(&s, data + off, len, i == 0);
		off += len + 1;
	}
	tnd_iscsi_chap_wipe(&s);
	return 0;
}
