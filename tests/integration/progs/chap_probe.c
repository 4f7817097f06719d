/*
 * chap_probe — drive a CHAP login by hand against a running tandemd, to
 * check what libiscsi cannot be made to send: a mutual-CHAP challenge that
 * reflects the target's own challenge, or one longer than RFC 7143's 1024
 * bytes. A third mode does a correct mutual exchange and checks the
 * target's answer to our challenge, with our own MD5.
 *
 * Usage: chap_probe HOST PORT TARGET-IQN INITIATOR-IQN USER SECRET MUTUAL-SECRET MODE
 *   MODE: good | reflect | long
 * Exit: 0 when the target behaved (good: logged in and proved it knows the
 * mutual secret; reflect, long: login status 0x0201), 1 otherwise.
 */
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <nettle/md5.h>

#include "tnd_common.h"

static int dial(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -1;
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd >= 0) {
		struct timeval tv = { .tv_sec = 5 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	return fd;
}

static int recv_all(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/* One Login Request with @text; the answer's text into @out. Returns the
 * status, or -1 when the connection failed. */
static int login_pdu(int fd, uint8_t flags, const char *text, size_t len, char *out,
		     size_t cap, size_t *out_len)
{
	static uint32_t cmd_sn;
	uint8_t bhs[48] = { 0 };
	bhs[0] = 0x03 | 0x40;
	bhs[1] = flags;
	bhs[8] = 0x80;
	bhs[13] = 0x42;
	tnd_put_be24(bhs + 5, (uint32_t)len);
	tnd_put_be32(bhs + 16, 1);
	tnd_put_be32(bhs + 24, cmd_sn);
	size_t total = 48 + ((len + 3) & ~(size_t)3);
	uint8_t *buf = calloc(1, total);
	if (!buf)
		return -1;
	memcpy(buf, bhs, 48);
	memcpy(buf + 48, text, len);
	ssize_t sent = send(fd, buf, total, MSG_NOSIGNAL);
	free(buf);
	if (sent != (ssize_t)total)
		return -1;
	uint8_t rsp[48];
	if (recv_all(fd, rsp, 48) < 0 || (rsp[0] & 0x3f) != 0x23)
		return -1;
	uint32_t n = tnd_get_be24(rsp + 5), padded = (n + 3) & ~3u;
	if (padded + 1 > cap || recv_all(fd, out, padded) < 0)
		return -1;
	out[n] = '\0';
	*out_len = n;
	return tnd_get_be16(rsp + 36);
}

static const char *value_of(const char *text, size_t len, const char *key)
{
	size_t kl = strlen(key);
	for (size_t off = 0; off < len; off += strlen(text + off) + 1)
		if (strncmp(text + off, key, kl) == 0 && text[off + kl] == '=')
			return text + off + kl + 1;
	return NULL;
}

static size_t hex_decode(const char *s, uint8_t *out, size_t cap)
{
	if (!s || strncmp(s, "0x", 2) != 0)
		return 0;
	size_t n = 0;
	for (s += 2; s[0] && s[1] && n < cap; s += 2) {
		unsigned v;
		if (sscanf(s, "%2x", &v) != 1)
			return 0;
		out[n++] = (uint8_t)v;
	}
	return n;
}

static void hex_encode(const uint8_t *in, size_t len, char *out)
{
	out += sprintf(out, "0x");
	for (size_t i = 0; i < len; i++)
		out += sprintf(out, "%02x", in[i]);
}

static void chap_md5(uint8_t id, const char *secret, const uint8_t *c, size_t clen, uint8_t *out)
{
	struct md5_ctx ctx;
	md5_init(&ctx);
	md5_update(&ctx, 1, &id);
	md5_update(&ctx, strlen(secret), (const uint8_t *)secret);
	md5_update(&ctx, clen, c);
	md5_digest(&ctx, MD5_DIGEST_SIZE, out);
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr, "usage: chap_probe HOST PORT TARGET INITIATOR USER SECRET "
				"MUTUAL-SECRET good|reflect|long\n");
		return 1;
	}
	const char *target = argv[3], *initiator = argv[4], *user = argv[5], *secret = argv[6],
		   *msecret = argv[7], *mode = argv[8];
	int fd = dial(argv[1], argv[2]);
	if (fd < 0) {
		perror("chap_probe: connect");
		return 1;
	}
	static char text[8192], rsp[65536];
	size_t n;
	int len = snprintf(text, sizeof(text), "InitiatorName=%s%cTargetName=%s%cAuthMethod=CHAP%c",
			   initiator, 0, target, 0, 0);
	int st = login_pdu(fd, 0x00 | 1, text, (size_t)len, rsp, sizeof(rsp), &n);
	const char *am = value_of(rsp, n, "AuthMethod");
	if (st != 0 || !am || strcmp(am, "CHAP") != 0) {
		fprintf(stderr, "chap_probe: AuthMethod not agreed (status %d)\n", st);
		return 1;
	}
	st = login_pdu(fd, 0x00, "CHAP_A=5", 9, rsp, sizeof(rsp), &n);
	uint8_t ch[1024], r[16];
	unsigned id;
	const char *is = value_of(rsp, n, "CHAP_I");
	size_t cl = hex_decode(value_of(rsp, n, "CHAP_C"), ch, sizeof(ch));
	if (st != 0 || !is || sscanf(is, "%u", &id) != 1 || cl < 16) {
		fprintf(stderr, "chap_probe: no challenge (status %d)\n", st);
		return 1;
	}
	chap_md5((uint8_t)id, secret, ch, cl, r);
	char rhex[40];
	hex_encode(r, 16, rhex);

	/* Our challenge to the target. */
	static uint8_t mine[1025];
	size_t mlen = 16;
	if (strcmp(mode, "reflect") == 0) {
		memcpy(mine, ch, cl);
		mlen = cl;
	} else if (strcmp(mode, "long") == 0) {
		memset(mine, 0x5a, sizeof(mine));
		mlen = sizeof(mine);
	} else {
		for (size_t i = 0; i < mlen; i++)
			mine[i] = (uint8_t)(i * 37 + 11);
	}
	static char chex[2 + 2 * sizeof(mine) + 1];
	hex_encode(mine, mlen, chex);
	len = snprintf(text, sizeof(text), "CHAP_N=%s%cCHAP_R=%s%cCHAP_I=9%cCHAP_C=%s%c", user, 0,
		       rhex, 0, 0, chex, 0);
	st = login_pdu(fd, 0x80 | 1, text, (size_t)len, rsp, sizeof(rsp), &n);
	close(fd);
	if (strcmp(mode, "good") != 0) {
		if (st != 0x0201) {
			fprintf(stderr, "chap_probe: %s: expected status 0x0201, got %d\n", mode, st);
			return 1;
		}
		printf("chap_probe: %s refused with 0x0201\n", mode);
		return 0;
	}
	uint8_t theirs[16], want[16];
	chap_md5(9, msecret, mine, mlen, want);
	if (st != 0 || hex_decode(value_of(rsp, n, "CHAP_R"), theirs, 16) != 16 ||
	    memcmp(theirs, want, 16) != 0) {
		fprintf(stderr, "chap_probe: good: status %d, target's CHAP_R %s\n", st,
			value_of(rsp, n, "CHAP_R") ? "wrong" : "missing");
		return 1;
	}
	printf("chap_probe: mutual CHAP ok (target is %s)\n", value_of(rsp, n, "CHAP_N"));
	return 0;
}
