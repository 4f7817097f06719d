/*
 * bad_pdus — send malformed and hostile iSCSI PDUs to a running tandemd,
 * each case on its own connection, and check that every one is answered
 * the way RFC 7143 asks (a Reject, a login failure status, a TMF
 * response, or the connection closed) and never with a hang. Afterwards a
 * healthy libiscsi session must still write and read back data.
 *
 * Usage: bad_pdus HOST PORT TARGET-IQN
 * Exit: 0 all cases behaved, 1 otherwise.
 *
 * The raw client speaks just enough iSCSI with plain blocking sockets
 * (with receive timeouts) to log in and then misbehave.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "tnd_common.h"

static const char *g_host, *g_port, *g_target;
static const char g_initiator[] = "iqn.2026-11.io.tandem.test:bad-pdus";

/* ---- a tiny raw initiator ---- */

struct raw {
	int fd;
	bool hdigest;
	uint32_t cmd_sn;
	uint32_t exp_stat_sn;
	uint32_t itt;
};

enum { R_EOF = -1, R_TIMEOUT = -2 };

static int raw_connect(struct raw *r)
{
	memset(r, 0, sizeof(*r));
	r->itt = 1;
	r->cmd_sn = 1;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	if (getaddrinfo(g_host, g_port, &hints, &ai) != 0)
		return -1;
	r->fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (r->fd < 0 || connect(r->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(r->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

static void raw_close(struct raw *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Send BHS (+AHS) with DataSegmentLength @dsl and @len bytes of data; a
 * @corrupt_digest makes the header digest wrong. */
static int raw_send(struct raw *r, uint8_t *bhs, const uint8_t *ahs, unsigned ahs_len,
		    uint32_t dsl, const void *data, uint32_t len, bool corrupt_digest)
{
	static uint8_t buf[1 << 17];
	bhs[4] = (uint8_t)(ahs_len / 4);
	tnd_put_be24(bhs + 5, dsl);
	size_t off = 0;
	memcpy(buf, bhs, 48);
	off = 48;
	if (ahs_len)
		memcpy(buf + off, ahs, ahs_len);
	off += ahs_len;
	if (r->hdigest) {
		uint32_t crc = tnd_crc32c(0, buf, off) ^ (corrupt_digest ? 0x5a5a : 0);
		buf[off++] = (uint8_t)crc;
		buf[off++] = (uint8_t)(crc >> 8);
		buf[off++] = (uint8_t)(crc >> 16);
		buf[off++] = (uint8_t)(crc >> 24);
	}
	if (len + off + 3 > sizeof(buf))
		return -1;
	if (len)
		memcpy(buf + off, data, len);
	off += len;
	while (off & 3)
		buf[off++] = 0;
	return send_all(r->fd, buf, off);
}

static int recv_all(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			return R_EOF;
		if (n < 0)
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? R_TIMEOUT : R_EOF;
		got += (size_t)n;
	}
	return 0;
}

/* Receive one PDU; returns its data length or R_EOF / R_TIMEOUT. */
static int raw_recv(struct raw *r, uint8_t *bhs, char *data, size_t cap)
{
	int ret = recv_all(r->fd, bhs, 48);
	if (ret < 0)
		return ret;
	uint32_t ahs = bhs[4] * 4u + (r->hdigest ? 4u : 0u);
	char skip[1024 + 4];
	if (ahs && (ret = recv_all(r->fd, skip, ahs)) < 0)
		return ret;
	uint32_t len = tnd_get_be24(bhs + 5);
	uint32_t total = len + ((4 - (len & 3)) & 3);
	if (total > cap)
		return R_EOF;
	if (total && (ret = recv_all(r->fd, data, total)) < 0)
		return ret;
	if ((bhs[0] & 0x3f) != 0x25 || (bhs[1] & 0x01))
		r->exp_stat_sn = tnd_get_be32(bhs + 24) + 1;
	return (int)len;
}

static void login_bhs(struct raw *r, uint8_t *bhs, uint8_t flags)
{
	memset(bhs, 0, 48);
	bhs[0] = 0x43;
	bhs[1] = flags;
	bhs[8] = 0x80;            /* ISID: random format */
	bhs[13] = 0x42;
	tnd_put_be32(bhs + 16, r->itt++);
	tnd_put_be32(bhs + 24, r->cmd_sn);
	tnd_put_be32(bhs + 28, r->exp_stat_sn);
}

static size_t text_len(const char *t)
{
	size_t len = 0;
	while (t[len])
		len += strlen(t + len) + 1;
	return len;
}

/* Log in to full feature phase in one step (operational stage only). */
static int raw_login(struct raw *r, bool hdigest)
{
	char text[1024];
	int n = snprintf(text, sizeof(text),
			 "InitiatorName=%s%cSessionType=Normal%cTargetName=%s%c"
			 "HeaderDigest=%s%cDataDigest=None%cMaxRecvDataSegmentLength=65536%c"
			 "InitialR2T=No%cImmediateData=Yes%c%c",
			 g_initiator, 0, 0, g_target, 0, hdigest ? "CRC32C" : "None", 0, 0, 0, 0,
			 0, 0);
	uint8_t bhs[48], rsp[48];
	static char data[65536];
	login_bhs(r, bhs, 0x80 | (1 << 2) | 3);
	if (raw_send(r, bhs, NULL, 0, (uint32_t)text_len(text), text, (uint32_t)text_len(text),
		     false) < 0)
		return -1;
	(void)n;
	int len = raw_recv(r, rsp, data, sizeof(data));
	if (len < 0 || (rsp[0] & 0x3f) != 0x23 || rsp[36] != 0 || !(rsp[1] & 0x80))
		return -1;
	r->hdigest = hdigest;
	return 0;
}

/* ---- outcomes ---- */

enum outcome {
	O_REJECT,       /* a Reject PDU (the connection may close afterwards) */
	O_LOGIN_FAIL,   /* a Login Response with the given status, then close */
	O_CLOSE,        /* the connection closes (a Reject first is fine) */
	O_TMF,          /* a TMF response with the given response code */
	O_SILENT,       /* nothing for the bad PDU; a NOP-Out ping is still answered */
	O_SCSI_STATUS,  /* a SCSI Response with the given status */
	O_IN_ORDER,     /* two SCSI Responses, the first for ITT @code */
};

static int expect(struct raw *r, enum outcome o, unsigned code, char *why, size_t whylen)
{
	uint8_t bhs[48];
	static char data[1 << 17];
	for (int i = 0; i < 16; i++) {
		int len = raw_recv(r, bhs, data, sizeof(data));
		if (len == R_TIMEOUT) {
			snprintf(why, whylen, "no answer within 5 s (hang)");
			return -1;
		}
		if (len == R_EOF) {
			if (o == O_CLOSE)
				return 0;
			snprintf(why, whylen, "connection closed without the expected answer");
			return -1;
		}
		uint8_t op = bhs[0] & 0x3f;
		switch (o) {
		case O_REJECT:
		case O_CLOSE:
			if (op == 0x3f) {
				if (o == O_REJECT && code && bhs[2] != code) {
					snprintf(why, whylen, "Reject reason 0x%02x, want 0x%02x", bhs[2], code);
					return -1;
				}
				if (o == O_REJECT)
					return 0;
				continue;   /* O_CLOSE: a Reject may come first */
			}
			if (op == 0x23 && bhs[36] != 0 && o == O_CLOSE)
				continue;
			break;
		case O_LOGIN_FAIL:
			if (op == 0x23) {
				unsigned st = tnd_get_be16(bhs + 36);
				if (st != code) {
					snprintf(why, whylen, "login status 0x%04x, want 0x%04x", st, code);
					return -1;
				}
				/* ... and then the connection must close. */
				len = raw_recv(r, bhs, data, sizeof(data));
				if (len != R_EOF) {
					snprintf(why, whylen, "connection stayed open after a login failure");
					return -1;
				}
				return 0;
			}
			break;
		case O_TMF:
			if (op == 0x22) {
				if (bhs[2] != code) {
					snprintf(why, whylen, "TMF response %u, want %u", bhs[2], code);
					return -1;
				}
				return 0;
			}
			break;
		case O_SCSI_STATUS:
			if (op == 0x21) {
				if (bhs[3] != code) {
					snprintf(why, whylen, "SCSI status 0x%02x, want 0x%02x", bhs[3], code);
					return -1;
				}
				return 0;
			}
			break;
		case O_IN_ORDER:
			if (op == 0x21) {
				uint32_t itt = tnd_get_be32(bhs + 16);
				if (itt != code) {
					snprintf(why, whylen, "response for ITT 0x%x first, want 0x%x", itt, code);
					return -1;
				}
				len = raw_recv(r, bhs, data, sizeof(data));
				if (len < 0 || (bhs[0] & 0x3f) != 0x21) {
					snprintf(why, whylen, "the held command was never answered");
					return -1;
				}
				return 0;
			}
			break;
		case O_SILENT:
			if (op == 0x20 && tnd_get_be32(bhs + 16) == 0x5150)
				return 0;   /* our ping came back, nothing before it */
			break;
		}
		snprintf(why, whylen, "unexpected PDU opcode 0x%02x", op);
		return -1;
	}
	snprintf(why, whylen, "too many PDUs");
	return -1;
}

static void send_ping(struct raw *r)
{
	uint8_t bhs[48] = { 0x40, 0x80 };
	tnd_put_be32(bhs + 16, 0x5150);
	tnd_put_be32(bhs + 20, 0xffffffff);
	tnd_put_be32(bhs + 24, r->cmd_sn);
	tnd_put_be32(bhs + 28, r->exp_stat_sn);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

static void scsi_bhs(struct raw *r, uint8_t *bhs, uint8_t flags, uint32_t edtl, uint8_t op)
{
	memset(bhs, 0, 48);
	bhs[0] = 0x01;
	bhs[1] = flags;
	tnd_put_be32(bhs + 16, r->itt++);
	tnd_put_be32(bhs + 20, edtl);
	tnd_put_be32(bhs + 24, r->cmd_sn);
	tnd_put_be32(bhs + 28, r->exp_stat_sn);
	bhs[32] = op;
}

/* ---- the cases ---- */

struct bad_case {
	const char *name;
	bool login_first;
	bool hdigest;
	/* Send the hostile PDUs; returns -1 if sending itself failed early
	 * (which also counts as the server closing on us). */
	void (*send)(struct raw *r);
	enum outcome outcome;
	unsigned code;
};

static void c_unknown_opcode_before_login(struct raw *r)
{
	uint8_t bhs[48] = { 0x1c, 0x80 };
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

static void c_nop_before_login(struct raw *r)
{
	uint8_t bhs[48] = { 0x40, 0x80 };
	tnd_put_be32(bhs + 16, 1);
	tnd_put_be32(bhs + 20, 0xffffffff);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

/* A WRITE(10) of one block of 0xee to LBA 1, with its data as immediate
 * data, before any login: tgt's known failure was to execute it. The
 * healthy session at the end reads LBA 1 back and checks it was not. */
static void c_scsi_write_before_login(struct raw *r)
{
	uint8_t bhs[48] = { 0x01, 0xa0 };   /* SCSI Command, F and W */
	uint8_t data[512];
	memset(data, 0xee, sizeof(data));
	tnd_put_be32(bhs + 16, 1);          /* ITT */
	tnd_put_be32(bhs + 20, sizeof(data)); /* expected data transfer length */
	tnd_put_be32(bhs + 24, 1);          /* CmdSN */
	uint8_t cdb[10] = { 0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0 };
	memcpy(bhs + 32, cdb, sizeof(cdb));
	raw_send(r, bhs, NULL, 0, sizeof(data), data, sizeof(data), false);
}

static void send_login_text(struct raw *r, uint8_t flags, const char *text, size_t len, uint8_t vmin)
{
	uint8_t bhs[48];
	login_bhs(r, bhs, flags);
	bhs[3] = vmin;
	raw_send(r, bhs, NULL, 0, (uint32_t)len, text, (uint32_t)len, false);
}

static char g_text[1 << 16];

static const char *normal_keys(void)
{
	size_t n = (size_t)snprintf(g_text, sizeof(g_text), "InitiatorName=%s", g_initiator);
	n += 1 + (size_t)snprintf(g_text + n + 1, sizeof(g_text) - n - 1, "TargetName=%s", g_target);
	g_text[n + 1] = '\0';
	return g_text;
}

static void c_version(struct raw *r)
{
	const char *t = normal_keys();
	send_login_text(r, 0x87, t, text_len(t), 0x05);
}

static void c_no_initiator_name(struct raw *r)
{
	static const char t[] = "SessionType=Normal\0TargetName=x\0";
	send_login_text(r, 0x87, t, sizeof(t) - 1, 0);
}

static void c_no_target_name(struct raw *r)
{
	char t[256];
	int n = snprintf(t, sizeof(t), "InitiatorName=%s", g_initiator);
	send_login_text(r, 0x87, t, (size_t)n + 1, 0);
}

static void c_unknown_target(struct raw *r)
{
	char t[256];
	int n = snprintf(t, sizeof(t), "InitiatorName=%s%cTargetName=iqn.2000-01.invalid:nope", g_initiator, 0);
	send_login_text(r, 0x87, t, (size_t)n + 1, 0);
}

static void c_wrong_csg(struct raw *r)
{
	const char *t = normal_keys();
	/* security -> operational is fine... */
	send_login_text(r, 0x81, t, text_len(t), 0);
	uint8_t bhs[48];
	static char data[8192];
	raw_recv(r, bhs, data, sizeof(data));
	/* ...but then claiming to be in security again is not. */
	static const char t2[] = "AuthMethod=None\0";
	send_login_text(r, 0x81, t2, sizeof(t2) - 1, 0);
}

static void c_transit_and_continue(struct raw *r)
{
	const char *t = normal_keys();
	send_login_text(r, 0xc7, t, text_len(t), 0);
}

static void c_text_too_long(struct raw *r)
{
	/* 9 x 1000 bytes of continued text: over the 8192-byte cap. */
	static char chunk[1000];
	memset(chunk, 'a', sizeof(chunk));
	memcpy(chunk, "X-pad=", 6);
	chunk[sizeof(chunk) - 1] = '\0';
	uint8_t bhs[48];
	static char data[8192];
	for (int i = 0; i < 9; i++) {
		send_login_text(r, 0x40 | (1 << 2), chunk, sizeof(chunk), 0);
		if (i < 8 && raw_recv(r, bhs, data, sizeof(data)) < 0)
			return;
		if (i < 8 && bhs[36] != 0) {
			/* Failed early: put it back for expect(). Not expected. */
			return;
		}
	}
}

static void c_key_too_long(struct raw *r)
{
	char t[512];
	int n = snprintf(t, sizeof(t), "InitiatorName=%s%cTargetName=%s%c", g_initiator, 0, g_target, 0);
	memset(t + n, 'K', 70);
	memcpy(t + n + 70, "=v", 3);
	send_login_text(r, 0x87, t, (size_t)n + 73, 0);
}

static void c_duplicate_key(struct raw *r)
{
	char t[512];
	int n = snprintf(t, sizeof(t), "InitiatorName=%s%cTargetName=%s%cMaxBurstLength=512%cMaxBurstLength=1024%c",
			 g_initiator, 0, g_target, 0, 0, 0);
	send_login_text(r, 0x87, t, (size_t)n, 0);
}

static void c_login_segment_too_long(struct raw *r)
{
	/* Before negotiation a login PDU may carry at most 8192 bytes. */
	static char big[65536];
	memset(big, 'a', sizeof(big));
	send_login_text(r, 0x87, big, sizeof(big), 0);
}

static void c_ffp_segment_too_long(struct raw *r)
{
	/* A NOP-Out claiming 16 MiB of data: over our MaxRecvDataSegmentLength. */
	uint8_t bhs[48] = { 0x40, 0x80 };
	tnd_put_be32(bhs + 16, 77);
	tnd_put_be32(bhs + 20, 0xffffffff);
	tnd_put_be32(bhs + 24, r->cmd_sn);
	raw_send(r, bhs, NULL, 0, 0xffffff, NULL, 0, false);
}

static void c_header_digest(struct raw *r)
{
	uint8_t bhs[48] = { 0x40, 0x80 };
	tnd_put_be32(bhs + 16, 78);
	tnd_put_be32(bhs + 20, 0xffffffff);
	tnd_put_be32(bhs + 24, r->cmd_sn);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, true);
}

static void c_ahs_garbage(struct raw *r)
{
	uint8_t bhs[48];
	scsi_bhs(r, bhs, 0xc0, 512, 0x28);
	uint8_t ahs[8] = { 0x00, 0x40, 0x01, 0x00 };   /* claims 64 bytes in an 8-byte AHS */
	raw_send(r, bhs, ahs, sizeof(ahs), 0, NULL, 0, false);
}

static void c_data_out_unknown_itt(struct raw *r)
{
	uint8_t bhs[48] = { 0x05, 0x80 };
	tnd_put_be32(bhs + 16, 0xdead);
	tnd_put_be32(bhs + 20, 0xffffffff);
	char data[512] = { 0 };
	raw_send(r, bhs, NULL, 0, sizeof(data), data, sizeof(data), false);
}

static void c_cmdsn_outside_window(struct raw *r)
{
	/* TEST UNIT READY with a CmdSN far beyond MaxCmdSN: ignored. */
	uint8_t bhs[48];
	scsi_bhs(r, bhs, 0x80, 0, 0x00);
	tnd_put_be32(bhs + 24, r->cmd_sn + 100000);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
	send_ping(r);
}

static void c_login_in_ffp(struct raw *r)
{
	const char *t = normal_keys();
	send_login_text(r, 0x87, t, text_len(t), 0);
}

static void c_unknown_opcode_ffp(struct raw *r)
{
	uint8_t bhs[48] = { 0x1d | 0x40, 0x80 };
	tnd_put_be32(bhs + 16, 79);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

static void c_target_opcode_ffp(struct raw *r)
{
	/* A Data-In sent to the target. */
	uint8_t bhs[48] = { 0x25, 0x80 };
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

static void c_snack(struct raw *r)
{
	uint8_t bhs[48] = { 0x10, 0x80 };
	tnd_put_be32(bhs + 16, 0xffffffff);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

static void c_tmf_unsupported(struct raw *r)
{
	uint8_t bhs[48] = { 0x42, 0x80 | 7 };   /* TARGET COLD RESET */
	tnd_put_be32(bhs + 16, 80);
	tnd_put_be32(bhs + 20, 0xffffffff);
	tnd_put_be32(bhs + 24, r->cmd_sn);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

static void c_immediate_data_too_long(struct raw *r)
{
	/* Immediate data beyond the Expected Data Transfer Length. */
	uint8_t bhs[48];
	scsi_bhs(r, bhs, 0xa0, 512, 0x2a);
	bhs[32 + 8] = 1;   /* WRITE(10) of one block */
	static char data[1024];
	raw_send(r, bhs, NULL, 0, sizeof(data), data, sizeof(data), false);
}

static void c_write_over_max_transfer(struct raw *r)
{
	/*
	 * WRITE(16) of 32 MiB (over the 8 MiB we take) with 64 KiB of
	 * immediate data sent in small pieces: refused with CHECK CONDITION
	 * once the data is in, and nothing hangs. (Regression: the refused
	 * task was created twice when its segment came in several recvs.)
	 */
	uint8_t bhs[48];
	scsi_bhs(r, bhs, 0xa0, 32u << 20, 0x8a);
	tnd_put_be32(bhs + 32 + 10, 65536);   /* blocks */
	static uint8_t pdu[48 + 65536];
	tnd_put_be24(bhs + 5, 65536);
	memcpy(pdu, bhs, 48);
	memset(pdu + 48, 0xff, 65536);
	for (size_t off = 0; off < sizeof(pdu); off += 4096) {
		size_t n = sizeof(pdu) - off < 4096 ? sizeof(pdu) - off : 4096;
		if (send_all(r->fd, pdu + off, n) < 0)
			return;
		usleep(1000);
	}
}

static void c_bidi_with_data(struct raw *r)
{
	/* Read and write bits together (bidirectional, not supported), with
	 * immediate data: CHECK CONDITION, the data dropped. */
	uint8_t bhs[48];
	scsi_bhs(r, bhs, 0xe0, 512, 0x2a);
	bhs[32 + 8] = 1;
	static char data[512];
	raw_send(r, bhs, NULL, 0, sizeof(data), data, sizeof(data), false);
}

static void c_cmdsn_gap(struct raw *r)
{
	/* Not hostile, but out of order: CmdSN n+1 arrives before n. The
	 * target holds it and delivers both in CmdSN order. */
	uint8_t bhs[48];
	scsi_bhs(r, bhs, 0x80, 0, 0x00);   /* TEST UNIT READY */
	tnd_put_be32(bhs + 16, 0x7001);
	tnd_put_be32(bhs + 24, r->cmd_sn + 1);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
	usleep(20000);
	scsi_bhs(r, bhs, 0x80, 0, 0x00);
	tnd_put_be32(bhs + 16, 0x7002);
	tnd_put_be32(bhs + 24, r->cmd_sn);
	raw_send(r, bhs, NULL, 0, 0, NULL, 0, false);
}

static void c_nop_flood(struct raw *r)
{
	/*
	 * 32 MiB of 8 KiB pings without reading a single answer: the target
	 * must stop reading once its answer queue is full rather than
	 * buffer without end (our send then times out, which is fine).
	 */
	static uint8_t pdu[48 + 8192];
	memset(pdu, 0, sizeof(pdu));
	pdu[0] = 0x40;
	pdu[1] = 0x80;
	tnd_put_be24(pdu + 5, 8192);
	tnd_put_be32(pdu + 16, 0x5150);
	tnd_put_be32(pdu + 20, 0xffffffff);
	struct timeval tv = { .tv_sec = 1 };
	setsockopt(r->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < 4096; i++)
		if (send_all(r->fd, pdu, sizeof(pdu)) < 0)
			break;
}

static void c_half_header(struct raw *r)
{
	/* Half a BHS and then nothing: the target must not hang on us
	 * forever; here we just shut our side and expect a close. */
	uint8_t bhs[24] = { 0x43, 0x87 };
	send_all(r->fd, bhs, sizeof(bhs));
	shutdown(r->fd, SHUT_WR);
}

static const struct bad_case cases[] = {
	{ "unknown opcode before login", false, false, c_unknown_opcode_before_login, O_LOGIN_FAIL, 0x020b },
	{ "NOP-Out before login", false, false, c_nop_before_login, O_LOGIN_FAIL, 0x020b },
	{ "SCSI WRITE before login", false, false, c_scsi_write_before_login, O_LOGIN_FAIL, 0x020b },
	{ "unsupported version", false, false, c_version, O_LOGIN_FAIL, 0x0205 },
	{ "missing InitiatorName", false, false, c_no_initiator_name, O_LOGIN_FAIL, 0x0207 },
	{ "missing TargetName", false, false, c_no_target_name, O_LOGIN_FAIL, 0x0207 },
	{ "unknown target", false, false, c_unknown_target, O_LOGIN_FAIL, 0x0203 },
	{ "wrong CSG on second login PDU", false, false, c_wrong_csg, O_LOGIN_FAIL, 0x0200 },
	{ "T and C bits together", false, false, c_transit_and_continue, O_LOGIN_FAIL, 0x0200 },
	{ "login text over 8192 bytes", false, false, c_text_too_long, O_LOGIN_FAIL, 0x0200 },
	{ "key name over 63 bytes", false, false, c_key_too_long, O_LOGIN_FAIL, 0x0200 },
	{ "duplicate key", false, false, c_duplicate_key, O_LOGIN_FAIL, 0x0200 },
	{ "login data segment over 8192", false, false, c_login_segment_too_long, O_LOGIN_FAIL, 0x0200 },
	{ "half a header then EOF", false, false, c_half_header, O_CLOSE, 0 },
	{ "data segment over MaxRecvDataSegmentLength", true, false, c_ffp_segment_too_long, O_CLOSE, 0 },
	{ "header digest mismatch", true, true, c_header_digest, O_CLOSE, 0 },
	{ "AHS garbage", true, false, c_ahs_garbage, O_CLOSE, 0 },
	{ "Data-Out for unknown ITT", true, false, c_data_out_unknown_itt, O_REJECT, 0x09 },
	{ "CmdSN outside the window", true, false, c_cmdsn_outside_window, O_SILENT, 0 },
	{ "Login PDU in full feature phase", true, false, c_login_in_ffp, O_CLOSE, 0 },
	{ "unassigned opcode in full feature phase", true, false, c_unknown_opcode_ffp, O_REJECT, 0x05 },
	{ "target opcode sent to the target", true, false, c_target_opcode_ffp, O_REJECT, 0x04 },
	{ "SNACK at ErrorRecoveryLevel 0", true, false, c_snack, O_REJECT, 0x03 },
	{ "unsupported TMF function", true, false, c_tmf_unsupported, O_TMF, 5 },
	{ "immediate data beyond EDTL", true, false, c_immediate_data_too_long, O_REJECT, 0x04 },
	{ "bidirectional command with immediate data", true, false, c_bidi_with_data, O_SCSI_STATUS, 0x02 },
	{ "CmdSN gap filled later (held, then delivered in order)", true, false, c_cmdsn_gap, O_IN_ORDER, 0x7002 },
	{ "NOP-Out flood without reading the answers", true, false, c_nop_flood, O_SILENT, 0 },
	{ "write over the maximum transfer length", true, false, c_write_over_max_transfer, O_SCSI_STATUS, 0x02 },
};

/* ---- the healthy session afterwards ---- */

static int healthy_session(void)
{
	char url[512];
	snprintf(url, sizeof(url), "iscsi://%s:%s/%s/0", g_host, g_port, g_target);
	struct iscsi_context *iscsi = iscsi_create_context("iqn.2026-11.io.tandem.test:healthy");
	if (!iscsi)
		return -1;
	int ret = -1;
	struct iscsi_url *u = iscsi_parse_full_url(iscsi, url);
	if (!u) {
		fprintf(stderr, "bad url: %s\n", iscsi_get_error(iscsi));
		goto out_ctx;
	}
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (iscsi_full_connect_sync(iscsi, u->portal, u->lun) != 0) {
		fprintf(stderr, "login failed: %s\n", iscsi_get_error(iscsi));
		goto out_url;
	}
	enum { BS = 512, NB = 64 };
	static unsigned char wbuf[BS * NB];
	for (size_t i = 0; i < sizeof(wbuf); i++)
		wbuf[i] = (unsigned char)(i * 7 + 3);
	struct scsi_task *t = iscsi_write16_sync(iscsi, u->lun, 1000, wbuf, sizeof(wbuf), BS, 0, 0, 0, 0, 0);
	if (!t || t->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "write failed: %s\n", iscsi_get_error(iscsi));
		if (t)
			scsi_free_scsi_task(t);
		goto out_logout;
	}
	scsi_free_scsi_task(t);
	t = iscsi_read16_sync(iscsi, u->lun, 1000, sizeof(wbuf), BS, 0, 0, 0, 0, 0);
	if (!t || t->status != SCSI_STATUS_GOOD || t->datain.size != (int)sizeof(wbuf) ||
	    memcmp(t->datain.data, wbuf, sizeof(wbuf)) != 0) {
		fprintf(stderr, "read back differs or failed: %s\n", iscsi_get_error(iscsi));
		if (t)
			scsi_free_scsi_task(t);
		goto out_logout;
	}
	scsi_free_scsi_task(t);
	/* The WRITE sent before login never reached the medium. */
	t = iscsi_read10_sync(iscsi, u->lun, 1, BS, BS, 0, 0, 0, 0, 0);
	if (!t || t->status != SCSI_STATUS_GOOD || t->datain.size != BS) {
		fprintf(stderr, "read of LBA 1 failed: %s\n", iscsi_get_error(iscsi));
		if (t)
			scsi_free_scsi_task(t);
		goto out_logout;
	}
	static const unsigned char ee[BS] = { [0 ... BS - 1] = 0xee };
	bool written = memcmp(t->datain.data, ee, BS) == 0;
	scsi_free_scsi_task(t);
	if (written) {
		fprintf(stderr, "a WRITE sent before login was executed\n");
		goto out_logout;
	}
	ret = 0;
out_logout:
	iscsi_logout_sync(iscsi);
out_url:
	iscsi_destroy_url(u);
out_ctx:
	iscsi_destroy_context(iscsi);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s HOST PORT TARGET-IQN\n", argv[0]);
		return 2;
	}
	g_host = argv[1];
	g_port = argv[2];
	g_target = argv[3];
	unsigned passed = 0, failed = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *c = &cases[i];
		struct raw r;
		char why[160] = "";
		int ok = -1;
		if (raw_connect(&r) < 0) {
			snprintf(why, sizeof(why), "cannot connect: %s", strerror(errno));
		} else if (c->login_first && raw_login(&r, c->hdigest) < 0) {
			snprintf(why, sizeof(why), "healthy login before the case failed");
		} else {
			c->send(&r);
			ok = expect(&r, c->outcome, c->code, why, sizeof(why));
		}
		raw_close(&r);
		printf("%-4s %s%s%s\n", ok == 0 ? "ok" : "FAIL", c->name, ok == 0 ? "" : ": ", ok == 0 ? "" : why);
		if (ok == 0)
			passed++;
		else
			failed++;
	}
	int h = healthy_session();
	printf("%-4s healthy libiscsi session writes and reads back 32 KiB, LBA 1 untouched\n",
	       h == 0 ? "ok" : "FAIL");
	if (h == 0)
		passed++;
	else
		failed++;
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
