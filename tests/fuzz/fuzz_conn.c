/*
 * fuzz_conn.c — libFuzzer target for a whole iSCSI connection: login,
 * negotiation, full feature phase, task management, logout.
 *
 * A real server (two reactor threads, one target with a 1 MiB in-memory
 * LUN whose home is reactor 0) is built once. Connections are handed to
 * the reactors in turn, so every other one logs in on its LUN's home and
 * moves to reactor 1 after login (session placement), with whatever the
 * input sent after the login in its receive buffer. Each input is the byte stream an initiator sends:
 * it is written into one end of a socketpair whose other end the server
 * adopts as a connection, then our side shuts its write half and reads
 * everything the target answers until the target closes.
 *
 * Checked: no crash, leak or sanitizer report in the server, and no hang:
 * after the stream ends the target must close within 10 seconds (it
 * always sees EOF, so a connection that stays open is stuck).
 *
 * Seeds (corpus/conn/) start with a valid login so mutations reach the
 * full feature phase.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iscsi_conn.h"
#include "tnd_common.h"
#include "tnd_reactor.h"
#include "tnd_target.h"
#include "tnd_volume.h"
/* The library is built with -fsanitize=fuzzer-no-link in the fuzz build,
 * so libFuzzer sees the transport's coverage through plain linking. */

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- a RAM volume that completes through reactor messages ---- */

#define RAM_BLOCKS 2048u

struct ram_vol {
	struct tnd_volume base;
	uint8_t *mem;
	struct tnd_reactor *home;      /* reported as the owner, for placement */
};

struct done_msg {
	struct tnd_msg m;
	struct tnd_io *io;
	int status;
};

static void done_fn(struct tnd_msg *m)
{
	struct done_msg *d = tnd_container_of(m, struct done_msg, m);
	d->io->cb(d->io, d->status);
	free(d);
}

static int ram_submit(struct tnd_volume *v, struct tnd_io *io)
{
	struct ram_vol *r = tnd_container_of(v, struct ram_vol, base);
	int status = 0;
	if (io->lba > RAM_BLOCKS || io->nblocks > RAM_BLOCKS - io->lba) {
		status = -EINVAL;
	} else {
		uint8_t *p = r->mem + io->lba * 512;
		size_t len = (size_t)io->nblocks * 512;
		switch (io->type) {
		case TND_IO_READ:
		case TND_IO_WRITE:
			for (int i = 0; i < io->iovcnt && len; i++) {
				size_t n = TND_MIN(len, io->iov[i].iov_len);
				if (io->type == TND_IO_READ)
					memcpy(io->iov[i].iov_base, p, n);
				else
					memcpy(p, io->iov[i].iov_base, n);
				p += n;
				len -= n;
			}
			break;
		case TND_IO_UNMAP:
		case TND_IO_WRITE_ZEROES:
			memset(p, 0, len);
			break;
		case TND_IO_FLUSH:
			break;
		default:        /* BLOCK_STATUS: cannot tell, as the contract allows */
			status = -EOPNOTSUPP;
			break;
		}
	}
	struct done_msg *d = malloc(sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->m.fn = done_fn;
	d->io = io;
	d->status = status;
	tnd_reactor_send(io->reactor, &d->m);
	return 0;
}

static void ram_info(struct tnd_volume *v, struct tnd_volume_info *out)
{
	memset(out, 0, sizeof(*out));
	out->home = tnd_container_of(v, struct ram_vol, base)->home;
	out->block_size = 512;
	out->num_blocks = RAM_BLOCKS;
	out->thin = true;
	out->unmap_zeroes = true;
	out->max_unmap_blocks = RAM_BLOCKS;
	out->state = TND_VOLUME_ONLINE;
}

static void ram_destroy(struct tnd_volume *v)
{
}

static const struct tnd_volume_ops ram_ops = {
	.type = "ram",
	.submit = ram_submit,
	.info = ram_info,
	.destroy = ram_destroy,
};

/* ---- the server, built once (libFuzzer has no teardown hook) ---- */

static struct tnd_target_server *server(void)
{
	static struct tnd_target_server *srv;
	static struct tnd_reactor *r[2];
	static struct ram_vol vol;
	if (srv)
		return srv;
	tnd_log_set_level(getenv("FUZZ_DEBUG") ? TND_LOG_DEBUG : TND_LOG_ERROR);
	vol.mem = calloc(RAM_BLOCKS, 512);
	CHECK(vol.mem);
	tnd_volume_init(&vol.base, &ram_ops, NULL);
	CHECK(tnd_reactor_create(0, 256, &r[0]) == 0);
	CHECK(tnd_reactor_create(1, 256, &r[1]) == 0);
	vol.home = r[0];
	struct tnd_target_server_opts o = { .reactors = r, .nr_reactors = 2 };
	CHECK(tnd_target_server_create(&o, &srv) == 0);
	CHECK(tnd_target_server_add_portal(srv, "127.0.0.1:0") == 0);
	CHECK(tnd_target_server_add_target(srv, "iqn.2026-11.io.tandem:fuzz", "fuzz", true,
					   NULL, 0) == 0);
	CHECK(tnd_target_server_map_lun(srv, "iqn.2026-11.io.tandem:fuzz", 0, "fuzz0",
					&vol.base) == 0);
	/* One initiator must use (mutual) CHAP and sees no LUN 0: the seeds
	 * named after chap start its exchange. */
	static const struct tnd_target_chap chap = { "fuzzuser", "fuzz-secret-12" };
	static const struct tnd_target_chap mutual = { "fuzztarget", "fuzz-mutual-34" };
	static const uint64_t lun1[] = { 1 };
	struct tnd_target_acl acl = { .initiator = "iqn.2026-11.io.tandem:fuzz-chap",
				      .luns = lun1, .nr_luns = 1, .chap = &chap,
				      .mutual_chap = &mutual };
	CHECK(tnd_target_server_set_acl(srv, "iqn.2026-11.io.tandem:fuzz", &acl) == 0);
	CHECK(tnd_target_server_start(srv) == 0);
	CHECK(tnd_reactor_start(r[0]) == 0);
	CHECK(tnd_reactor_start(r[1]) == 0);
	return srv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tnd_target_server *srv = server();
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK(tnd_iscsi_server_adopt(srv, sv[1]) == 0);

	/* Write the stream while draining answers, so neither side blocks. */
	static uint8_t sink[1 << 16];
	size_t off = 0;
	bool eof = false;
	uint64_t deadline = tnd_now_ns() + 10ull * 1000000000;
	if (size == 0)
		shutdown(sv[0], SHUT_WR);
	while (!eof) {
		struct pollfd p = { .fd = sv[0], .events = POLLIN };
		if (off < size)
			p.events |= POLLOUT;
		int n = poll(&p, 1, 100);
		CHECK(tnd_now_ns() < deadline);   /* a hang */
		if (n <= 0)
			continue;
		if (p.revents & POLLOUT) {
			ssize_t w = send(sv[0], data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w > 0)
				off += (size_t)w;
			else if (w < 0 && errno != EAGAIN)
				off = size;   /* the target closed on us: fine */
			if (off == size)
				shutdown(sv[0], SHUT_WR);
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = recv(sv[0], sink, sizeof(sink), MSG_DONTWAIT);
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				eof = true;
		}
	}
	close(sv[0]);
	return 0;
}
