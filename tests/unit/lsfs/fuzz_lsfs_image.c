/*
 * libFuzzer target: lsfs recovery and the checker on damaged images.
 *
 * Four base images are made once (a small store closed cleanly, and one
 * caught while open, so replay has a log to read; each plain, and with
 * LZ4, dedup and compress_mode deferred, so that records and the map hold
 * DEFERRED marks, shares of deferred payloads and payloads a GC pass has
 * compressed). The input picks one and patches it: byte 0 holds flags
 * (bit 0: closed or open, bit 1: fix up the CRC of every touched metadata
 * block so the damage gets past the first check, bit 2: the deferred store),
 * then 5-byte patches (block u16, offset u16, value u8). The patched image
 * is checked, opened (the dedup store: its index warm-up run to the end),
 * read whole and written a little. Built only with
 * TND_FUZZ (clang); see tests/fuzz/ for the conventions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "tnd_lsfs.h"
#include "tnd_reactor.h"
#include "testvol.h"

#define DEV (320u << 10)
#define LOGICAL (128u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sync_io {
	bool done;
	int status;
};

static void sync_cb(struct tnd_io *io, int status)
{
	struct sync_io *s = io->cb_arg;
	s->status = status;
	s->done = true;
}

static int rw(struct tnd_volume *vol, struct tnd_reactor *r, enum tnd_io_type t, uint64_t lba,
	      uint32_t n, void *buf, uint32_t lbs)
{
	struct tnd_io *io = calloc(1, tnd_volume_io_size(vol));
	struct iovec iov = { .iov_base = buf, .iov_len = (size_t)n * lbs };
	struct sync_io s = { 0 };
	*io = (struct tnd_io){ .type = t, .lba = lba, .nblocks = n, .iov = &iov, .iovcnt = 1,
			       .reactor = r, .cb = sync_cb, .cb_arg = &s };
	int ret = tnd_volume_submit(vol, io);
	while (ret == 0 && !s.done)
		tnd_reactor_poll(r, -1);
	free(io);
	return ret < 0 ? ret : s.status;
}

static uint8_t *bases[4];
static struct tnd_reactor *reactor;

static void opts(struct tnd_lsfs_opts *o, bool deferred)
{
	tnd_lsfs_opts_default(o);
	o->size = LOGICAL;
	o->segment_size = 32u << 10;
	o->gc_interval_ms = 0;
	o->compress = o->dedup = deferred;
	o->compress_mode = deferred ? TND_LSFS_COMPRESS_DEFERRED : TND_LSFS_COMPRESS_INLINE;
}

static void gc_done(void *arg)
{
	*(bool *)arg = true;
}

static void make_base(bool deferred)
{
	struct tnd_lsfs_opts o;
	opts(&o, deferred);
	uint8_t *img = calloc(1, DEV);
	struct tnd_volume *ram, *vol;
	ram_vol_wrap(img, DEV, 512, &ram);
	tnd_lsfs_format(ram, &o);
	tnd_lsfs_open(ram, reactor, &o, &vol);
	uint8_t buf[4096];
	uint64_t rng = 1;
	for (int i = 0; i < 120; i++) {
		uint64_t lba = test_rand(&rng) % (LOGICAL / 4096);
		memset(buf, i % 40, sizeof(buf));
		buf[i % 4096] = (uint8_t)lba;
		rw(vol, reactor, i % 9 ? TND_IO_WRITE : TND_IO_UNMAP, lba, 1, buf, 4096);
		if (deferred && i == 60) {
			bool done = false;   /* compacts some deferred blocks */
			if (tnd_lsfs_gc_run(vol, gc_done, &done) == 0)
				while (!done)
					tnd_reactor_poll(reactor, -1);
		}
	}
	bases[1 + 2 * deferred] = malloc(DEV);
	memcpy(bases[1 + 2 * deferred], img, DEV);   /* open: a log to replay */
	tnd_volume_destroy(vol);
	bases[2 * deferred] = img;                    /* closed cleanly */
}

static void make_bases(void)
{
	tnd_log_set_level(TND_LOG_ERROR);
	tnd_reactor_create(0, 64, &reactor);
	make_base(false);
	make_base(true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!bases[0])
		make_bases();
	if (size < 1)
		return 0;
	uint8_t *img = malloc(DEV);
	bool deferred = data[0] & 4;
	memcpy(img, bases[(data[0] & 1) + 2 * deferred], DEV);
	bool touched[DEV / 4096] = { false };
	for (size_t i = 1; i + 5 <= size; i += 5) {
		uint32_t blk = (uint32_t)(data[i] << 8 | data[i + 1]) % (DEV / 4096);
		uint32_t off = (uint32_t)(data[i + 2] << 8 | data[i + 3]) % 4092;
		img[blk * 4096 + off] = data[i + 4];
		touched[blk] = true;
	}
	if (data[0] & 2)
		for (uint32_t b = 0; b < DEV / 4096; b++)
			if (touched[b] && memcmp(img + b * 4096, "TNDL", 4) == 0)
				tnd_put_be32(img + b * 4096 + 4092, tnd_crc32c(0, img + b * 4096, 4092));

	struct tnd_volume *ram, *vol;
	ram_vol_wrap(img, DEV, 512, &ram);
	struct tnd_lsfs_check_result res;
	tnd_lsfs_check(ram, NULL, &res);
	struct tnd_lsfs_opts o;
	opts(&o, deferred);
	if (tnd_lsfs_open(ram, reactor, &o, &vol) == 0) {
		struct tnd_volume_info info;
		tnd_volume_info(vol, &info);
		uint32_t n = (uint32_t)TND_MIN(info.num_blocks, 64);
		/* Dedup on: the index warm-up parses every used segment's
		 * records (damaged ones with a recomputed CRC included). */
		if (deferred) {
			bool done = false;
			if (tnd_lsfs_warmup_run(vol, 0, gc_done, &done) == 0)
				while (!done)
					tnd_reactor_poll(reactor, -1);
		}
		uint8_t *all = calloc(n, info.block_size);
		rw(vol, reactor, TND_IO_READ, 0, n, all, info.block_size);
		rw(vol, reactor, TND_IO_WRITE, 0, TND_MIN(n, 2), all, info.block_size);
		free(all);
		tnd_volume_destroy(vol);
	} else {
		tnd_volume_destroy(ram);
	}
	free(img);
	return 0;
}
