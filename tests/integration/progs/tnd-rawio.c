/*
 * tnd-rawio — a deliberately small iSCSI initiator written from RFC 7143
 * for the one thing libiscsi cannot do: DataDigest=CRC32C (libiscsi always
 * offers DataDigest=None). It logs in with both digests, writes seeded
 * random data with WRITE(16) through R2T/Data-Out, reads it back with
 * READ(16), checks every received header and data digest and compares the
 * bytes. It shares no code with the target's PDU codec on purpose: a bug
 * there must not cancel itself out here.
 *
 *   tnd-rawio HOST PORT TARGET-IQN BYTES [SEED]
 *
 * Exit 0 when everything read back identical with valid digests.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tnd_common.h"

#define CHUNK (256u * 1024)
#define BS 512u

struct conn {
	int fd;
	uint32_t cmdsn;
	uint32_t exp_statsn;
	uint32_t itt;
	uint32_t max_xmit;    /* the target's MaxRecvDataSegmentLength */
	int digests;
};

struct pdu {
	uint8_t bhs[48];
	uint8_t *data;
	uint32_t dlen;
};

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "tnd-rawio: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n <= 0)
			die("send: %s", n < 0 ? strerror(errno) : "closed");
		p += n;
		len -= (size_t)n;
	}
}

static void read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = read(fd, p, len);
		if (n <= 0)
			die("receive: %s", n < 0 ? strerror(errno) : "connection closed by target");
		p += n;
		len -= (size_t)n;
	}
}

/* RFC 7143 B.4: digests travel least significant byte first. */
static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void send_pdu(struct conn *c, uint8_t *bhs, const void *data, uint32_t dlen)
{
	static const uint8_t zero[4];
	bhs[4] = 0;
	tnd_put_be24(bhs + 5, dlen);
	write_all(c->fd, bhs, 48);
	if (c->digests) {
		uint8_t d[4];
		put_le32(d, tnd_crc32c(0, bhs, 48));
		write_all(c->fd, d, 4);
	}
	if (dlen) {
		uint32_t pad = (4 - dlen % 4) % 4;
		write_all(c->fd, data, dlen);
		write_all(c->fd, zero, pad);
		if (c->digests) {
			uint32_t crc = tnd_crc32c(0, data, dlen);
			crc = tnd_crc32c(crc, zero, pad);
			uint8_t d[4];
			put_le32(d, crc);
			write_all(c->fd, d, 4);
		}
	}
}

static void recv_pdu(struct conn *c, struct pdu *p)
{
	read_all(c->fd, p->bhs, 48);
	uint32_t ahs = p->bhs[4] * 4u;
	if (ahs)
		die("unexpected AHS of %u bytes", ahs);
	if (c->digests) {
		uint8_t got[4];
		read_all(c->fd, got, 4);
		if (get_le32(got) != tnd_crc32c(0, p->bhs, 48))
			die("header digest mismatch from target (opcode 0x%02x)", p->bhs[0] & 0x3f);
	}
	p->dlen = tnd_get_be24(p->bhs + 5);
	free(p->data);
	p->data = NULL;
	if (p->dlen) {
		uint32_t padded = (p->dlen + 3) & ~3u;
		p->data = malloc(padded);
		read_all(c->fd, p->data, padded);
		if (c->digests) {
			uint8_t got[4];
			read_all(c->fd, got, 4);
			if (get_le32(got) != tnd_crc32c(0, p->data, padded))
				die("data digest mismatch from target (opcode 0x%02x)", p->bhs[0] & 0x3f);
		}
	}
}

/* Answer target pings; returns true if @p was one (and is consumed). */
static bool handle_nop_in(struct conn *c, struct pdu *p)
{
	if ((p->bhs[0] & 0x3f) != 0x20)
		return false;
	uint32_t ttt = tnd_get_be32(p->bhs + 20);
	if (ttt != 0xffffffff) {
		uint8_t bhs[48] = { 0x00 | 0x40, 0x80 };
		memcpy(bhs + 8, p->bhs + 8, 8); /* LUN */
		tnd_put_be32(bhs + 16, 0xffffffff);
		tnd_put_be32(bhs + 20, ttt);
		tnd_put_be32(bhs + 24, c->cmdsn);
		tnd_put_be32(bhs + 28, c->exp_statsn);
		send_pdu(c, bhs, NULL, 0);
	}
	return true;
}

static const char *key_value(const char *text, uint32_t len, const char *key)
{
	size_t kl = strlen(key);
	for (uint32_t off = 0; off < len;) {
		const char *kv = text + off;
		size_t n = strnlen(kv, len - off);
		if (n > kl && strncmp(kv, key, kl) == 0 && kv[kl] == '=')
			return kv + kl + 1;
		off += (uint32_t)n + 1;
	}
	return NULL;
}

static void login(struct conn *c, const char *target)
{
	char keys[1024];
	int n = snprintf(keys, sizeof(keys),
			 "InitiatorName=iqn.2026-11.io.tandem:rawio%c"
			 "TargetName=%s%cSessionType=Normal%c"
			 "HeaderDigest=CRC32C%cDataDigest=CRC32C%c"
			 "MaxRecvDataSegmentLength=262144%cInitialR2T=Yes%cImmediateData=No%c"
			 "MaxBurstLength=262144%cFirstBurstLength=65536%c"
			 "ErrorRecoveryLevel=0%cMaxConnections=1%c",
			 0, target, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	uint8_t bhs[48] = { 0x03 | 0x40, 0x80 | (1 << 2) | 3 }; /* T, CSG=1, NSG=3 */
	bhs[8] = 0x40; /* ISID type random */
	bhs[9] = 0x12;
	bhs[10] = 0x34;
	bhs[11] = 0x56;
	tnd_put_be32(bhs + 16, c->itt++);
	tnd_put_be32(bhs + 24, c->cmdsn);
	tnd_put_be32(bhs + 28, c->exp_statsn);
	send_pdu(c, bhs, keys, (uint32_t)n);

	struct pdu p = { 0 };
	for (;;) {
		recv_pdu(c, &p);
		if ((p.bhs[0] & 0x3f) != 0x23)
			die("expected a Login Response, got opcode 0x%02x", p.bhs[0] & 0x3f);
		if (p.bhs[36] != 0)
			die("login refused: status class 0x%02x detail 0x%02x", p.bhs[36], p.bhs[37]);
		c->exp_statsn = tnd_get_be32(p.bhs + 24) + 1;
		const char *v;
		if ((v = key_value((char *)p.data, p.dlen, "HeaderDigest")) && strcmp(v, "CRC32C"))
			die("target refused HeaderDigest=CRC32C (%s)", v);
		if ((v = key_value((char *)p.data, p.dlen, "DataDigest")) && strcmp(v, "CRC32C"))
			die("target refused DataDigest=CRC32C (%s)", v);
		if ((v = key_value((char *)p.data, p.dlen, "MaxRecvDataSegmentLength")))
			c->max_xmit = (uint32_t)strtoul(v, NULL, 10);
		if ((p.bhs[1] & 0x80) && (p.bhs[1] & 3) == 3)
			break;
		/* Target wants another round: send an empty continuation. */
		memset(bhs, 0, sizeof(bhs));
		bhs[0] = 0x03 | 0x40;
		bhs[1] = 0x80 | (1 << 2) | 3;
		bhs[8] = 0x40; bhs[9] = 0x12; bhs[10] = 0x34; bhs[11] = 0x56;
		memcpy(bhs + 14, p.bhs + 14, 2); /* TSIH */
		tnd_put_be32(bhs + 16, c->itt - 1);
		tnd_put_be32(bhs + 24, c->cmdsn);
		tnd_put_be32(bhs + 28, c->exp_statsn);
		send_pdu(c, bhs, NULL, 0);
	}
	free(p.data);
	c->digests = 1; /* from the first PDU after the final login response */
	if (c->max_xmit == 0)
		c->max_xmit = 8192;
}

static void scsi_cmd_bhs(struct conn *c, uint8_t *bhs, bool write, uint64_t lba, uint32_t len)
{
	memset(bhs, 0, 48);
	bhs[0] = 0x01;
	bhs[1] = 0x80 | (write ? 0x20 : 0x40) | 0x01; /* F, W/R, SIMPLE */
	tnd_put_be32(bhs + 16, c->itt++);
	tnd_put_be32(bhs + 20, len);
	tnd_put_be32(bhs + 24, c->cmdsn++);
	tnd_put_be32(bhs + 28, c->exp_statsn);
	uint8_t *cdb = bhs + 32;
	cdb[0] = write ? 0x8a : 0x88;
	tnd_put_be64(cdb + 2, lba);
	tnd_put_be32(cdb + 10, len / BS);
}

static void check_response(struct conn *c, struct pdu *p)
{
	c->exp_statsn = tnd_get_be32(p->bhs + 24) + 1;
	if (p->bhs[2] != 0 || p->bhs[3] != 0)
		die("command failed: response 0x%02x status 0x%02x", p->bhs[2], p->bhs[3]);
}

static void do_write(struct conn *c, uint64_t lba, const uint8_t *buf, uint32_t len)
{
	uint8_t bhs[48];
	scsi_cmd_bhs(c, bhs, true, lba, len);
	uint32_t itt = tnd_get_be32(bhs + 16);
	send_pdu(c, bhs, NULL, 0);
	struct pdu p = { 0 };
	for (;;) {
		recv_pdu(c, &p);
		if (handle_nop_in(c, &p))
			continue;
		uint8_t op = p.bhs[0] & 0x3f;
		if (op == 0x21) {
			check_response(c, &p);
			break;
		}
		if (op != 0x31)
			die("write: unexpected opcode 0x%02x", op);
		if (tnd_get_be32(p.bhs + 16) != itt)
			die("R2T for the wrong task");
		uint32_t ttt = tnd_get_be32(p.bhs + 20);
		uint32_t off = tnd_get_be32(p.bhs + 40);
		uint32_t want = tnd_get_be32(p.bhs + 44);
		if (off + want > len)
			die("R2T beyond the transfer (%u+%u > %u)", off, want, len);
		uint32_t datasn = 0;
		for (uint32_t done = 0; done < want;) {
			uint32_t n = want - done < c->max_xmit ? want - done : c->max_xmit;
			uint8_t d[48] = { 0x05 };
			if (done + n == want)
				d[1] = 0x80;
			tnd_put_be32(d + 16, itt);
			tnd_put_be32(d + 20, ttt);
			tnd_put_be32(d + 28, c->exp_statsn);
			tnd_put_be32(d + 36, datasn++);
			tnd_put_be32(d + 40, off + done);
			send_pdu(c, d, buf + off + done, n);
			done += n;
		}
	}
	free(p.data);
}

static void do_read(struct conn *c, uint64_t lba, uint8_t *buf, uint32_t len)
{
	uint8_t bhs[48];
	scsi_cmd_bhs(c, bhs, false, lba, len);
	send_pdu(c, bhs, NULL, 0);
	struct pdu p = { 0 };
	uint32_t got = 0;
	for (;;) {
		recv_pdu(c, &p);
		if (handle_nop_in(c, &p))
			continue;
		uint8_t op = p.bhs[0] & 0x3f;
		if (op == 0x21) {
			check_response(c, &p);
			break;
		}
		if (op != 0x25)
			die("read: unexpected opcode 0x%02x", op);
		uint32_t off = tnd_get_be32(p.bhs + 40);
		if (off + p.dlen > len)
			die("Data-In beyond the buffer");
		memcpy(buf + off, p.data, p.dlen);
		got += p.dlen;
		if (p.bhs[1] & 0x01) { /* S: status in the last Data-In */
			c->exp_statsn = tnd_get_be32(p.bhs + 24) + 1;
			if (p.bhs[3] != 0)
				die("read failed: status 0x%02x", p.bhs[3]);
			break;
		}
	}
	if (got != len)
		die("read returned %u of %u bytes", got, len);
	free(p.data);
}

/* TEST UNIT READY until GOOD: the first command of a new nexus reports the
 * POWER ON unit attention, as SAM requires. */
static void clear_unit_attention(struct conn *c)
{
	for (int tries = 0; tries < 5; tries++) {
		uint8_t bhs[48] = { 0x01, 0x80 | 0x01 };
		tnd_put_be32(bhs + 16, c->itt++);
		tnd_put_be32(bhs + 24, c->cmdsn++);
		tnd_put_be32(bhs + 28, c->exp_statsn);
		send_pdu(c, bhs, NULL, 0);
		struct pdu p = { 0 };
		do
			recv_pdu(c, &p);
		while (handle_nop_in(c, &p));
		free(p.data);
		if ((p.bhs[0] & 0x3f) != 0x21)
			die("TEST UNIT READY: unexpected opcode 0x%02x", p.bhs[0] & 0x3f);
		c->exp_statsn = tnd_get_be32(p.bhs + 24) + 1;
		if (p.bhs[3] == 0)
			return;
	}
	die("TEST UNIT READY never returned GOOD");
}

static void logout(struct conn *c)
{
	uint8_t bhs[48] = { 0x06 | 0x40, 0x80 };
	tnd_put_be32(bhs + 16, c->itt++);
	tnd_put_be32(bhs + 24, c->cmdsn);
	tnd_put_be32(bhs + 28, c->exp_statsn);
	send_pdu(c, bhs, NULL, 0);
	struct pdu p = { 0 };
	do
		recv_pdu(c, &p);
	while (handle_nop_in(c, &p));
	if ((p.bhs[0] & 0x3f) != 0x26 || p.bhs[2] != 0)
		die("logout not acknowledged");
	free(p.data);
}

int main(int argc, char **argv)
{
	if (argc < 5)
		die("usage: tnd-rawio HOST PORT TARGET-IQN BYTES [SEED]");
	uint64_t total = strtoull(argv[4], NULL, 0);
	unsigned seed = argc > 5 ? (unsigned)atoi(argv[5]) : 1;
	if (total == 0 || total % CHUNK)
		die("BYTES must be a multiple of %u", CHUNK);

	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	if (getaddrinfo(argv[1], argv[2], &hints, &ai))
		die("cannot resolve %s", argv[1]);
	struct conn c = { .fd = socket(ai->ai_family, SOCK_STREAM, 0), .cmdsn = 1, .itt = 1 };
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int one = 1; /* we write header, digest and data separately: no Nagle waits */
	setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c.fd, ai->ai_addr, ai->ai_addrlen) < 0)
		die("connect: %s", strerror(errno));
	freeaddrinfo(ai);

	login(&c, argv[3]);
	clear_unit_attention(&c);

	uint8_t *wbuf = malloc(CHUNK), *rbuf = malloc(CHUNK);
	srand(seed);
	for (uint64_t off = 0; off < total; off += CHUNK) {
		for (uint32_t i = 0; i < CHUNK; i++)
			wbuf[i] = (uint8_t)rand();
		do_write(&c, off / BS, wbuf, CHUNK);
	}
	srand(seed);
	for (uint64_t off = 0; off < total; off += CHUNK) {
		for (uint32_t i = 0; i < CHUNK; i++)
			wbuf[i] = (uint8_t)rand();
		memset(rbuf, 0, CHUNK);
		do_read(&c, off / BS, rbuf, CHUNK);
		if (memcmp(wbuf, rbuf, CHUNK))
			die("data read back at byte %llu differs", (unsigned long long)off);
	}
	logout(&c);
	close(c.fd);
	free(wbuf);
	free(rbuf);
	printf("tnd-rawio: %llu bytes written and read back with HeaderDigest and DataDigest CRC32C\n",
	       (unsigned long long)total);
	return 0;
}
