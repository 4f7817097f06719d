/*
 * Unit tests for lsfs: bytes written are the bytes read back, across
 * reopen, on 4 KiB and 512 B volumes; unmapped blocks read zeros; a
 * corrupted payload answers -EILSEQ and is never returned; newer formats
 * are refused; a full store answers -ENOSPC and recovers after UNMAP and
 * GC; a failed backing write fail-stops the device; I/O from another
 * reactor is forwarded; the volume grows online; a real file through the
 * flat volume works and passes the checker; compression and dedup keep
 * every byte (test_lsfs_fp12: with fingerprints cut to 12 bits, so the
 * byte-for-byte verify is what keeps them).
 *
 * `test_lsfs --make-image PATH [corrupt]` writes a small lsfs image file
 * (optionally with one payload byte flipped) for the tandem-check test.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <semaphore.h>
#include <cmocka.h>

#include "tnd_common.h"
#include "tnd_flat.h"
#include "tnd_lsfs.h"
#include "tnd_reactor.h"
#include "lsfs_int.h"   /* the block map's own API, for map_against_shadow */
#include "tnd_dedup.h"  /* tnd_dedup_fp_bits(): the fp12 build expects collisions */
#include "testvol.h"

struct env {
	struct tnd_reactor *r;
	uint8_t *img;
	uint64_t size;
	struct tnd_lsfs_opts o;
	struct tnd_volume *vol;
};

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

static int io_on(struct tnd_volume *vol, struct tnd_reactor *sub, struct tnd_reactor *poll2,
		 enum tnd_io_type t, uint64_t lba, uint32_t n, void *buf, size_t len, unsigned flags)
{
	struct tnd_io *io = calloc(1, tnd_volume_io_size(vol));
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct sync_io s = { 0 };
	io->type = t;
	io->flags = flags;
	io->lba = lba;
	io->nblocks = n;
	io->iov = buf ? &iov : NULL;
	io->iovcnt = buf ? 1 : 0;
	io->reactor = sub;
	io->cb = sync_cb;
	io->cb_arg = &s;
	int ret = tnd_volume_submit(vol, io);
	while (ret == 0 && !s.done) {
		tnd_reactor_poll(sub, poll2 ? 0 : -1);
		if (poll2)
			tnd_reactor_poll(poll2, 1);
	}
	free(io);
	return ret < 0 ? ret : s.status;
}

static int io_sync(struct env *e, enum tnd_io_type t, uint64_t lba, uint32_t n, void *buf, unsigned flags)
{
	size_t len = (size_t)n * e->o.block_size;
	return io_on(e->vol, e->r, NULL, t, lba, n, buf, buf ? len : 0, flags);
}

static void env_format(struct env *e, uint64_t dev, uint32_t lbs, uint64_t logical, uint32_t seg)
{
	memset(e, 0, sizeof(*e));
	assert_int_equal(tnd_reactor_create(0, 64, &e->r), 0);
	e->size = dev;
	e->img = calloc(1, dev);
	tnd_lsfs_opts_default(&e->o);
	e->o.size = logical;
	e->o.block_size = lbs;
	e->o.segment_size = seg;
	e->o.gc_interval_ms = 0;
	struct tnd_volume *ram;
	assert_int_equal(ram_vol_wrap(e->img, dev, 512, &ram), 0);
	assert_int_equal(tnd_lsfs_format(ram, &e->o), 0);
	tnd_volume_destroy(ram);
}

static int env_open(struct env *e)
{
	struct tnd_volume *ram;
	assert_int_equal(ram_vol_wrap(e->img, e->size, 512, &ram), 0);
	int ret = tnd_lsfs_open(ram, e->r, &e->o, &e->vol);
	if (ret < 0)
		tnd_volume_destroy(ram);
	return ret;
}

static void env_close(struct env *e)
{
	tnd_volume_destroy(e->vol);
	e->vol = NULL;
}

static void env_free(struct env *e)
{
	if (e->vol)
		env_close(e);
	tnd_reactor_destroy(e->r);
	free(e->img);
}

static uint64_t env_check_errors(struct env *e, bool print)
{
	struct tnd_volume *ram;
	assert_int_equal(ram_vol_wrap(e->img, e->size, 512, &ram), 0);
	struct tnd_lsfs_check_result res;
	assert_int_equal(tnd_lsfs_check(ram, print ? stderr : NULL, &res), 0);
	tnd_volume_destroy(ram);
	return res.errors;
}

static void fill(uint8_t *b, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = test_rand(&seed);
		memcpy(b + i, &v, TND_MIN(8, len - i));
	}
}

static void done_flag(void *arg)
{
	*(bool *)arg = true;
}

static void wait_flag(struct env *e, bool *flag)
{
	while (!*flag)
		tnd_reactor_poll(e->r, -1);
}

/*
 * Test data of a kind: 0 random, 1 text-like (compresses well), 2 all
 * zero, 3 half random and half repeated (saves about half), 4 a fixed
 * random block (the same bytes every time it is asked for).
 */
static void kind_fill(uint8_t *b, size_t len, int kind, uint64_t seed)
{
	static const char text[] = "lsfs stores each 4 KiB block compressed when it saves a sector. ";
	switch (kind) {
	case 0:
		fill(b, len, seed);
		break;
	case 1:
		for (size_t i = 0; i < len; i++)
			b[i] = (uint8_t)text[(i * 7 / 5 + seed) % (sizeof(text) - 1)];
		memcpy(b, &seed, sizeof(seed));
		break;
	case 2:
		memset(b, 0, len);
		break;
	case 3:
		fill(b, len, seed);
		for (size_t i = 0; i < len; i++)
			if (i % 4096 >= 2048)
				b[i] = (uint8_t)(seed | 1);
		break;
	default:
		fill(b, len, 4242);
		break;
	}
}

/* ---- tests ---- */

static void rw_4k_roundtrip_and_reopen(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 4u << 20, 4096, 8u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	struct tnd_volume_info info;
	tnd_volume_info(e.vol, &info);
	assert_int_equal(info.block_size, 4096);
	assert_int_equal(info.num_blocks, 2048);
	assert_true(info.thin && info.unmap_zeroes && info.write_cache);

	uint8_t *w = malloc(16 * 4096), *r = malloc(16 * 4096);
	fill(w, 16 * 4096, 1);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 100, 16, w, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_READ, 100, 16, r, 0), 0);
	assert_memory_equal(w, r, 16 * 4096);
	/* Never written: zeros. */
	memset(r, 0xaa, 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 2047, 1, r, 0), 0);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(r[i], 0);
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);

	assert_int_equal(env_open(&e), 0);
	memset(r, 0, 16 * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 100, 16, r, 0), 0);
	assert_memory_equal(w, r, 16 * 4096);
	/* Out of range. */
	assert_int_equal(io_sync(&e, TND_IO_READ, 2047, 2, r, 0), -EINVAL);
	free(w);
	free(r);
	env_free(&e);
}

/* Random unaligned writes, unmaps and zeroes on a 512 B volume vs a shadow. */
static void rw_512_unaligned_against_shadow(void **state)
{
	(void)state;
	struct env e;
	const uint32_t nblk = 2048;  /* 1 MiB */
	env_format(&e, 4u << 20, 512, (uint64_t)nblk * 512, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	uint8_t *shadow = calloc(nblk, 512);
	uint8_t *buf = malloc(64 * 512);
	uint64_t rng = 42;
	for (int i = 0; i < 600; i++) {
		uint32_t n = 1 + (uint32_t)(test_rand(&rng) % 40);
		uint64_t lba = test_rand(&rng) % (nblk - n);
		uint64_t k = test_rand(&rng) % 10;
		if (k < 7) {
			fill(buf, (size_t)n * 512, rng);
			assert_int_equal(io_sync(&e, TND_IO_WRITE, lba, n, buf, 0), 0);
			memcpy(shadow + lba * 512, buf, (size_t)n * 512);
		} else {
			assert_int_equal(io_sync(&e, k < 9 ? TND_IO_UNMAP : TND_IO_WRITE_ZEROES, lba, n, NULL, 0), 0);
			memset(shadow + lba * 512, 0, (size_t)n * 512);
		}
		if (i % 50 == 0) {
			bool done = false;
			assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
			wait_flag(&e, &done);
		}
	}
	uint8_t *all = malloc((size_t)nblk * 512);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nblk, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nblk * 512);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.rmw > 0);
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	assert_int_equal(env_open(&e), 0);
	memset(all, 0x55, (size_t)nblk * 512);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nblk, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nblk * 512);
	free(all);
	free(buf);
	free(shadow);
	env_free(&e);
}

static void blank_newer_and_foreign_stores_are_refused(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	/* A newer major version: refused, and the store left untouched. */
	uint8_t *copy = malloc(e.size);
	for (int i = 0; i < 2; i++)
		tnd_put_be32(e.img + i * 4096 + 8, TND_LSFS_FORMAT_MAJOR + 1);
	memcpy(copy, e.img, e.size);
	assert_int_equal(env_open(&e), -EPROTONOSUPPORT);
	assert_memory_equal(copy, e.img, e.size);
	free(copy);
	/* Blank: -ENODATA unless asked to create. */
	memset(e.img, 0, e.size);
	assert_int_equal(env_open(&e), -ENODATA);
	e.o.create_if_blank = true;
	assert_int_equal(env_open(&e), 0);
	env_close(&e);
	/* Garbage: not ours. */
	memset(e.img, 0x5a, 8192);
	assert_int_equal(env_open(&e), -EUCLEAN);
	env_free(&e);
}

static void corrupt_payload_reads_eilseq(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	uint8_t w[4096], r[4096];
	fill(w, sizeof(w), 7);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 5, 1, w, TND_IO_FUA), 0);
	env_close(&e);
	/* Find the payload in the image and flip one byte. */
	uint8_t *p = memmem(e.img, e.size, w, sizeof(w));
	assert_non_null(p);
	p[100] ^= 1;
	assert_true(env_check_errors(&e, false) > 0);
	assert_int_equal(env_open(&e), 0);
	memset(r, 0x77, sizeof(r));
	assert_int_equal(io_sync(&e, TND_IO_READ, 5, 1, r, 0), -EILSEQ);
	for (size_t i = 0; i < sizeof(r); i++)
		assert_int_equal(r[i], 0x77);   /* nothing of the bad block reached us */
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.crc_errors, 1);
	/* Rewriting the block heals it. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 5, 1, w, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_READ, 5, 1, r, 0), 0);
	assert_memory_equal(w, r, sizeof(r));
	env_free(&e);
}

/*
 * A store filled by large sequential writes has only record headers dead
 * (~1.5 % of each segment): cleaning such segments gives back almost
 * nothing, so writes past the end must fail with ENOSPC promptly rather
 * than wait while GC churns (they used to hang until the initiator timed
 * out). Each write gets a deadline; then reads go on, and UNMAP makes room.
 */
static int io_deadline(struct env *e, enum tnd_io_type t, uint64_t lba, uint32_t n, void *buf,
		       double seconds)
{
	struct tnd_io *io = calloc(1, tnd_volume_io_size(e->vol));
	struct iovec iov = { .iov_base = buf, .iov_len = (size_t)n * e->o.block_size };
	struct sync_io s = { 0 };
	*io = (struct tnd_io){ .type = t, .lba = lba, .nblocks = n, .iov = buf ? &iov : NULL,
			       .iovcnt = buf ? 1 : 0, .reactor = e->r, .cb = sync_cb, .cb_arg = &s };
	int ret = tnd_volume_submit(e->vol, io);
	uint64_t end = tnd_now_ns() + (uint64_t)(seconds * 1e9);
	while (ret == 0 && !s.done && tnd_now_ns() < end)
		tnd_reactor_poll(e->r, 10);
	if (ret == 0 && !s.done)
		fail_msg("I/O at LBA %llu did not complete in %.0f s", (unsigned long long)lba, seconds);
	free(io);
	return ret < 0 ? ret : s.status;
}

static void full_store_of_large_writes_fails_fast(void **state)
{
	(void)state;
	struct env e;
	/* The daemon's geometry: 4 MiB segments, 512 B blocks, a 512 MiB
	 * promise on 128 MiB of backing store. */
	env_format(&e, 128u << 20, 512, 512u << 20, 4u << 20);
	e.o.gc_interval_ms = 10;        /* background GC and checkpoints on */
	assert_int_equal(env_open(&e), 0);
	enum { N = 512 };               /* 256 KiB writes */
	uint8_t *w = malloc(N * 512), *r = malloc(N * 512);
	uint64_t lba = 0;
	int ret = 0;
	for (; lba + N <= (512u << 20) / 512; lba += N) {
		fill(w, N * 512, lba + 1);
		ret = io_deadline(&e, TND_IO_WRITE, lba, N, w, 10);
		if (ret < 0)
			break;
	}
	assert_int_equal(ret, -ENOSPC);
	/* Most of the store holds data before writes are refused. */
	assert_true(lba * 512 >= (96u << 20));
	/* Again, at once: still full, still fast. */
	assert_int_equal(io_deadline(&e, TND_IO_WRITE, lba, N, w, 10), -ENOSPC);
	fill(w, N * 512, 1);
	assert_int_equal(io_deadline(&e, TND_IO_READ, 0, N, r, 10), 0);
	assert_memory_equal(w, r, N * 512);
	/* Unmapping the first half makes room again. */
	for (uint64_t b = 0; b < lba / 2; b += N)
		assert_int_equal(io_deadline(&e, TND_IO_UNMAP, b, N, NULL, 10), 0);
	fill(w, N * 512, 777);
	assert_int_equal(io_deadline(&e, TND_IO_WRITE, lba, N, w, 30), 0);
	assert_int_equal(io_deadline(&e, TND_IO_READ, lba, N, r, 10), 0);
	assert_memory_equal(w, r, N * 512);
	assert_int_equal(io_deadline(&e, TND_IO_FLUSH, 0, 0, NULL, 10), 0);
	free(w);
	free(r);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	env_free(&e);
}

static void full_store_enospc_then_reclaim(void **state)
{
	(void)state;
	struct env e;
	/* ~1 MiB of segments behind a 4 MiB promise. */
	env_format(&e, 1200u << 10, 4096, 4u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	uint8_t w[4096], r[4096];
	uint32_t written = 0;
	int ret = 0;
	for (uint32_t b = 0; b < 1024; b++) {
		fill(w, sizeof(w), b + 1);
		ret = io_sync(&e, TND_IO_WRITE, b, 1, w, 0);
		if (ret < 0)
			break;
		written++;
	}
	assert_int_equal(ret, -ENOSPC);
	assert_true(written > 100);
	struct tnd_volume_info info;
	tnd_volume_info(e.vol, &info);
	assert_int_equal(info.state, TND_VOLUME_ONLINE);
	/* Reads go on, and return what was written. */
	for (uint32_t b = 0; b < written; b += 17) {
		fill(w, sizeof(w), b + 1);
		assert_int_equal(io_sync(&e, TND_IO_READ, b, 1, r, 0), 0);
		assert_memory_equal(w, r, sizeof(r));
	}
	/* Free half; GC makes room; writing works again. */
	for (uint32_t b = 0; b < written; b += 2)
		assert_int_equal(io_sync(&e, TND_IO_UNMAP, b, 1, NULL, 0), 0);
	for (uint32_t b = 0; b < written / 4; b++) {
		fill(w, sizeof(w), 100000 + b);
		ret = io_sync(&e, TND_IO_WRITE, 2 * b, 1, w, 0);
		if (ret) {
			struct tnd_lsfs_stats s;
			tnd_lsfs_get_stats(e.vol, &s);
			fprintf(stderr, "b=%u written=%u free=%u/%u gc=%llu moved=%llu freed=%llu ckpt=%llu mapped=%llu\n", b, written,
				s.free_segments, s.segments, (unsigned long long)s.gc_passes, (unsigned long long)s.gc_moved_blocks,
				(unsigned long long)s.gc_freed_segments, (unsigned long long)s.checkpoints, (unsigned long long)s.mapped_blocks);
		}
		assert_int_equal(ret, 0);
	}
	for (uint32_t b = 1; b < written; b += 2) {
		fill(w, sizeof(w), b + 1);
		assert_int_equal(io_sync(&e, TND_IO_READ, b, 1, r, 0), 0);
		assert_memory_equal(w, r, sizeof(r));
	}
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.gc_passes > 0);
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	env_free(&e);
}

static void gc_moves_live_blocks_and_frees_segments(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 4u << 20, 4096, 1u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	uint8_t w[4096], r[4096];
	/* 256 blocks, then overwrite every other one three times. */
	for (int pass = 0; pass < 4; pass++)
		for (uint32_t b = 0; b < 256; b += pass ? 2 : 1) {
			fill(w, sizeof(w), (uint64_t)pass << 20 | b);
			assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 1, w, 0), 0);
		}
	struct tnd_lsfs_stats before, after;
	tnd_lsfs_get_stats(e.vol, &before);
	for (int i = 0; i < 20; i++) {
		bool done = false;
		assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
		wait_flag(&e, &done);
	}
	tnd_lsfs_get_stats(e.vol, &after);
	assert_true(after.gc_moved_blocks > 0);
	assert_true(after.free_segments > before.free_segments);
	for (uint32_t b = 0; b < 256; b++) {
		int pass = b % 2 ? 0 : 3;
		fill(w, sizeof(w), (uint64_t)pass << 20 | b);
		assert_int_equal(io_sync(&e, TND_IO_READ, b, 1, r, 0), 0);
		assert_memory_equal(w, r, sizeof(r));
	}
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	env_free(&e);
}

static void io_from_another_reactor_is_forwarded(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	struct tnd_reactor *other;
	assert_int_equal(tnd_reactor_create(1, 64, &other), 0);
	uint8_t w[8192], r[8192];
	fill(w, sizeof(w), 3);
	assert_int_equal(io_on(e.vol, other, e.r, TND_IO_WRITE, 9, 2, w, sizeof(w), TND_IO_FUA), 0);
	assert_int_equal(io_on(e.vol, other, e.r, TND_IO_READ, 9, 2, r, sizeof(r), 0), 0);
	assert_memory_equal(w, r, sizeof(r));
	assert_int_equal(io_on(e.vol, other, e.r, TND_IO_FLUSH, 0, 0, NULL, 0, 0), 0);
	tnd_reactor_destroy(other);
	env_free(&e);
}

/* Open @e's image through a fault-injecting layer; its handle, to aim faults. */
static struct fault_vol *env_open_faulty(struct env *e)
{
	struct tnd_volume *ram, *fault;
	assert_int_equal(ram_vol_wrap(e->img, e->size, 512, &ram), 0);
	assert_int_equal(fault_vol_create(ram, &fault), 0);
	assert_int_equal(tnd_lsfs_open(fault, e->r, &e->o, &e->vol), 0);
	return fault_vol_of(fault);
}

static void backing_write_error_fail_stops(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	struct fault_vol *fv = env_open_faulty(&e);
	uint8_t w[4096], r[4096];
	fill(w, sizeof(w), 11);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 1, 1, w, TND_IO_FUA), 0);
	fault_fail_at(fv, fault_points(fv), -EIO);
	uint8_t w2[4096];
	fill(w2, sizeof(w2), 12);
	/* Write cache on: acknowledged from RAM. Its record's backing write
	 * fails; the flush that would cover it says so, and the device is
	 * failed from then on. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 2, 1, w2, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), -EIO);
	struct tnd_volume_info info;
	tnd_volume_info(e.vol, &info);
	assert_int_equal(info.state, TND_VOLUME_FAILED);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 3, 1, w2, 0), -EROFS);
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), -EROFS);
	assert_int_equal(io_sync(&e, TND_IO_READ, 1, 1, r, 0), 0);
	assert_memory_equal(w, r, sizeof(r));
	env_close(&e);
	/* Reopened, the durable write is there. */
	assert_int_equal(env_open(&e), 0);
	assert_int_equal(io_sync(&e, TND_IO_READ, 1, 1, r, 0), 0);
	assert_memory_equal(w, r, sizeof(r));
	env_free(&e);
}

/* A FUA write waits for the disk, so a failed backing write fails it. */
static void backing_write_error_fails_fua_write(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	struct fault_vol *fv = env_open_faulty(&e);
	uint8_t w[4096];
	fill(w, sizeof(w), 13);
	fault_fail_at(fv, fault_points(fv), -EIO);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 2, 1, w, TND_IO_FUA), -EIO);
	struct tnd_volume_info info;
	tnd_volume_info(e.vol, &info);
	assert_int_equal(info.state, TND_VOLUME_FAILED);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 3, 1, w, 0), -EROFS);
	env_free(&e);
}

static void online_grow_persists(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	assert_int_equal(tnd_volume_resize(e.vol, 128), -EINVAL);   /* no shrinking */
	assert_int_equal(tnd_volume_resize(e.vol, 1024), 0);
	uint8_t w[4096], r[4096];
	fill(w, sizeof(w), 5);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 1000, 1, w, TND_IO_FUA), 0);
	env_close(&e);
	assert_int_equal(env_open(&e), 0);
	struct tnd_volume_info info;
	tnd_volume_info(e.vol, &info);
	assert_int_equal(info.num_blocks, 1024);
	assert_int_equal(io_sync(&e, TND_IO_READ, 1000, 1, r, 0), 0);
	assert_memory_equal(w, r, sizeof(r));
	env_free(&e);
}

static void write_through_mode_and_map_cost(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 64u << 20, 4096, 1ull << 30, 1u << 20);
	e.o.write_cache = false;
	assert_int_equal(env_open(&e), 0);
	struct tnd_volume_info info;
	tnd_volume_info(e.vol, &info);
	assert_false(info.write_cache);
	/* 8192 blocks (32 MiB) in 256 KiB writes. */
	uint8_t *w = malloc(64 * 4096);
	for (uint32_t b = 0; b < 8192; b += 64) {
		fill(w, 64 * 4096, b);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 64, w, 0), 0);
	}
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.mapped_blocks, 8192);
	double per_block = (double)st.map_bytes / (double)st.mapped_blocks;
	printf("lsfs map: %llu bytes for %llu mapped 4 KiB blocks = %.2f bytes/block (1 GiB promised)\n",
	       (unsigned long long)st.map_bytes, (unsigned long long)st.mapped_blocks, per_block);
	assert_true(per_block <= 16.0);
	/* Write-through: every write was made stable by a backing flush. */
	assert_true(st.backing_flushes > 0);
	free(w);
	env_free(&e);
}

/* One write larger than all segment buffers together. */
static void write_larger_than_segment_buffers(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 8u << 20, 4096, 4u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	size_t len = 2u << 20;
	uint8_t *w = malloc(len), *r = malloc(len);
	fill(w, len, 99);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 3, (uint32_t)(len / 4096), w, TND_IO_FUA), 0);
	assert_int_equal(io_sync(&e, TND_IO_READ, 3, (uint32_t)(len / 4096), r, 0), 0);
	assert_memory_equal(w, r, len);
	env_close(&e);
	assert_int_equal(env_open(&e), 0);
	memset(r, 0, len);
	assert_int_equal(io_sync(&e, TND_IO_READ, 3, (uint32_t)(len / 4096), r, 0), 0);
	assert_memory_equal(w, r, len);
	free(w);
	free(r);
	env_free(&e);
}

/* With the timer on, GC and checkpoints run by themselves. */
static void background_gc_and_checkpoints(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	e.o.gc_interval_ms = 1;
	e.o.ckpt_segments = 2;
	assert_int_equal(env_open(&e), 0);
	uint8_t w[4096], r[4096];
	uint32_t ver[128] = { 0 };
	uint64_t rng = 5;
	for (int i = 0; i < 2000; i++) {
		uint32_t b = (uint32_t)(test_rand(&rng) % 128);
		ver[b] = (uint32_t)i + 1;
		fill(w, sizeof(w), (uint64_t)ver[b] << 20 | b);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 1, w, 0), 0);
	}
	uint64_t t0 = tnd_now_ns();
	while (tnd_now_ns() - t0 < 50000000ull)
		tnd_reactor_poll(e.r, 5);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.gc_passes > 0);
	assert_true(st.checkpoints > 2);
	for (uint32_t b = 0; b < 128; b++) {
		fill(w, sizeof(w), (uint64_t)ver[b] << 20 | b);
		assert_int_equal(io_sync(&e, TND_IO_READ, b, 1, r, 0), 0);
		assert_memory_equal(w, r, sizeof(r));
	}
	json_t *j = json_object();
	tnd_volume_stats_json(e.vol, j);
	assert_non_null(json_object_get(json_object_get(j, "lsfs"), "gc_passes"));
	json_decref(j);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, false), 0);
	env_free(&e);
}

/*
 * Walk every record on the image (each segment's current life from its
 * start) written after record @after: count GC-only segments (their first
 * record flagged GC), descriptors of GC records that are not DATA or name
 * a block version the client never wrote (@crcs: per block, the CRCs of
 * every version written), and descriptors of client records that name a
 * cold block (not a multiple of @hot), which only GC can have put there.
 */
struct seg_scan {
	uint32_t gc_segs;
	uint64_t gc_descs;
	uint64_t gc_bad;
	uint64_t cold_in_client;
	uint64_t max_seq;
};

static void scan_image(const uint8_t *img, uint64_t after, uint32_t hot, uint32_t **crcs,
		       const uint32_t *ncrcs, struct seg_scan *out)
{
	memset(out, 0, sizeof(*out));
	struct lsfs_sb sb;
	assert_int_equal(lsfs_sb_decode(img, &sb), 0);
	for (uint32_t s = 0; s < sb.seg_count; s++) {
		const uint8_t *seg = img + sb.seg_off + (uint64_t)s * sb.seg_size;
		uint64_t seg_seq = 0, expect = 0;
		for (uint32_t off = 0; off + LSFS_BLK <= sb.seg_size;) {
			struct lsfs_rec rh;
			if (lsfs_rec_decode(seg + off, sb.uuid, &rh) < 0 || (off && (rh.seg_seq != seg_seq ||
									     rh.rec_seq != expect)))
				break;
			seg_seq = rh.seg_seq;
			expect = rh.rec_seq + 1;
			out->max_seq = TND_MAX(out->max_seq, rh.rec_seq);
			bool gc = rh.flags & LSFS_REC_F_GC;
			if (gc && off == 0)
				out->gc_segs++;
			for (uint32_t i = 0; rh.rec_seq > after && i < rh.ndesc; i++) {
				struct lsfs_desc d;
				lsfs_desc_decode(seg + off, i, &d);
				if (!gc) {
					out->cold_in_client += d.flags == LSFS_DESC_DATA && d.lba % hot;
					continue;
				}
				out->gc_descs++;
				bool known = false;
				for (uint32_t k = 0; d.flags == LSFS_DESC_DATA && k < ncrcs[d.lba] && !known; k++)
					known = crcs[d.lba][k] == d.crc;
				out->gc_bad += !known;
			}
			off += (1 + rh.npayload) * LSFS_BLK;
		}
	}
}

/*
 * Hot/cold separation, observably: 256 blocks written once, eight at a
 * time, then overwrites only of every eighth (hot), so that cleaning the
 * first segments means moving the cold blocks. With separation, the blocks GC moves go into
 * segments of their own (every record flagged GC, every descriptor a block
 * version the client wrote), so the cold blocks never show up in the
 * clients' records again, except for what the fallback mixed in (at most
 * gc_mixed_blocks); with gc_mix (the old behaviour) they do, and there is
 * no GC-only segment. The checker agrees, and every block reads back.
 */
static void gc_separation_run(bool mix, struct seg_scan *out, struct tnd_lsfs_stats *st)
{
	struct env e;
	env_format(&e, 4u << 20, 4096, 1u << 20, 64u << 10);
	/* No timers (no tick, no lingering): GC runs from the log's own
	 * events (low space, flushes, its own passes), the same at any speed. */
	e.o.gc_interval_ms = 0;
	e.o.batch_linger_us = 0;
	e.o.gc_free_low = 24;           /* GC at work early: a small test */
	e.o.gc_mix = mix;
	assert_int_equal(env_open(&e), 0);
	enum { NB = 256, HOT = 8, MAXV = 4096 };
	uint32_t ver[NB] = { 0 }, ncrcs[NB] = { 0 };
	uint32_t *crcs[NB];
	uint8_t w[4096], r[4096], w8[8 * 4096];
	for (uint32_t b = 0; b < NB; b++) {
		crcs[b] = calloc(MAXV, sizeof(uint32_t));
		fill(w8 + b % 8 * 4096, 4096, (uint64_t)1 << 20 | b);
		ver[b] = 1;
		crcs[b][ncrcs[b]++] = tnd_crc32c(0, w8 + b % 8 * 4096, 4096);
		if (b % 8 == 7)
			assert_int_equal(io_sync(&e, TND_IO_WRITE, b - 7, 8, w8, 0), 0);
	}
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	struct seg_scan fill_scan;
	scan_image(e.img, 0, HOT, crcs, ncrcs, &fill_scan);
	uint64_t rng = 11;
	for (uint32_t i = 0; i < 3000; i++) {
		uint32_t b = (uint32_t)(test_rand(&rng) % (NB / HOT)) * HOT;
		ver[b]++;
		fill(w, sizeof(w), (uint64_t)ver[b] << 20 | b);
		assert_true(ncrcs[b] < MAXV);
		crcs[b][ncrcs[b]++] = tnd_crc32c(0, w, sizeof(w));
		assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 1, w, 0), 0);
	}
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	tnd_lsfs_get_stats(e.vol, st);
	scan_image(e.img, fill_scan.max_seq, HOT, crcs, ncrcs, out);
	for (uint32_t b = 0; b < NB; b++) {
		fill(w, sizeof(w), (uint64_t)ver[b] << 20 | b);
		assert_int_equal(io_sync(&e, TND_IO_READ, b, 1, r, 0), 0);
		assert_memory_equal(w, r, sizeof(r));
	}
	json_t *j = json_object();
	tnd_volume_stats_json(e.vol, j);
	json_t *l = json_object_get(j, "lsfs");
	assert_int_equal(json_integer_value(json_object_get(l, "gc_segments_written")),
			 (json_int_t)st->gc_segments_written);
	assert_non_null(json_object_get(l, "gc_mixed_blocks"));
	json_decref(j);
	/* The image as it is (no closing checkpoint): clean, and the checker
	 * finds the GC-only segments (and no segment that mixes). */
	uint8_t *snap = malloc(e.size);
	memcpy(snap, e.img, e.size);
	struct tnd_volume *ram;
	assert_int_equal(ram_vol_wrap(snap, e.size, 512, &ram), 0);
	struct tnd_lsfs_check_result res;
	assert_int_equal(tnd_lsfs_check(ram, NULL, &res), 0);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.gc_segments > 0, !mix);
	tnd_volume_destroy(ram);
	free(snap);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, false), 0);
	for (uint32_t b = 0; b < NB; b++)
		free(crcs[b]);
	env_free(&e);
}

static void gc_separates_hot_and_cold(void **state)
{
	(void)state;
	struct seg_scan sep, mixed;
	struct tnd_lsfs_stats st_sep, st_mix;
	gc_separation_run(false, &sep, &st_sep);
	gc_separation_run(true, &mixed, &st_mix);
	print_message("separated: %u GC-only segments on disk (%llu written), %llu moves in them, %llu cold "
		      "blocks in client records (%llu moved by the fallback); mixed: %llu cold blocks in "
		      "client records, %llu moved\n", sep.gc_segs,
		      (unsigned long long)st_sep.gc_segments_written, (unsigned long long)sep.gc_descs,
		      (unsigned long long)sep.cold_in_client, (unsigned long long)st_sep.gc_mixed_blocks,
		      (unsigned long long)mixed.cold_in_client, (unsigned long long)st_mix.gc_moved_blocks);
	assert_true(st_sep.gc_segments_written > 0);
	assert_true(sep.gc_segs > 0 && sep.gc_descs > 0);
	assert_int_equal(sep.gc_bad, 0);
	assert_true(sep.cold_in_client <= st_sep.gc_mixed_blocks);
	assert_true(st_mix.gc_moved_blocks > 0);
	assert_int_equal(st_mix.gc_segments_written, 0);
	assert_int_equal(mixed.gc_segs, 0);
	assert_true(mixed.cold_in_client > 0);
	assert_true(sep.cold_in_client < mixed.cold_in_client);
}

/*
 * Hot/cold GC with packed LZ4 payloads of different sizes (1..8 sectors,
 * several in one 4 KiB slot): the stage copies each live payload's
 * stored sectors as the victim scan found them (no map lookup), into a
 * GC-only segment. Every block must read back its newest content, before
 * and after a reopen, and the image must check clean.
 */
static void gc_stage_content(uint8_t *w, uint32_t ver, uint32_t b)
{
	static const int kinds[] = { 0, 1, 3 };
	kind_fill(w, 4096, kinds[b % 3], (uint64_t)ver << 20 | b);
}

static void gc_stages_packed_payloads(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 4u << 20, 4096, 1u << 20, 64u << 10);
	e.o.batch_linger_us = 0;
	e.o.gc_free_low = 24;
	e.o.compress = true;
	assert_int_equal(env_open(&e), 0);
	enum { NB = 256, HOT = 8 };
	uint32_t ver[NB];
	uint8_t w[4096], r[4096];
	for (uint32_t b = 0; b < NB; b++) {
		ver[b] = 1;
		gc_stage_content(w, ver[b], b);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 1, w, 0), 0);
	}
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	uint64_t rng = 23;
	for (uint32_t i = 0; i < 4000; i++) {
		uint32_t b = (uint32_t)(test_rand(&rng) % (NB / HOT)) * HOT;
		ver[b]++;
		gc_stage_content(w, ver[b], b);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 1, w, 0), 0);
	}
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.gc_segments_written > 0);
	assert_true(st.compressed_blocks > 0);
	/* Packed payloads moved as stored: fewer bytes than whole blocks. */
	assert_true(st.gc_bytes_written < st.gc_moved_blocks * 4096);
	for (int round = 0; round < 2; round++) {
		for (uint32_t b = 0; b < NB; b++) {
			gc_stage_content(w, ver[b], b);
			assert_int_equal(io_sync(&e, TND_IO_READ, b, 1, r, 0), 0);
			assert_memory_equal(w, r, sizeof(r));
		}
		env_close(&e);
		assert_int_equal(env_check_errors(&e, false), 0);
		if (round == 0)
			assert_int_equal(env_open(&e), 0);
	}
	env_free(&e);
}

/* Block @b's content at version @ver: unique per version and block, or
 * (@shared) text-like and the same for every block at that version. */
static void content(uint8_t *w, bool shared, uint32_t ver, uint32_t b)
{
	if (shared)
		kind_fill(w, 4096, 1, 5000 + (uint64_t)ver);
	else
		fill(w, 4096, (uint64_t)ver << 20 | b);
}

/*
 * Dead segments that replay from the newest checkpoint never reads are
 * reused after a flush, without a checkpoint; after a crash, replay must
 * follow the log into them (the checkpoint still lists them as used) and
 * find every block's newest version. And the WA counters add up.
 * @features: compression and dedup on, and the blocks' contents drawn
 * from 16 values so that most writes share a payload (DEDUP descriptors
 * pointing into older segments, packed LZ4 payloads): a segment is
 * reused only when no chunk maps it any more, and GC moves a shared
 * payload once.
 */
static void reuse_without_checkpoint(bool features)
{
	struct env e;
	/* 256 KiB of logical blocks in ~3 MiB of 64 KiB segments. */
	env_format(&e, 3u << 20, 4096, 256u << 10, 64u << 10);
	e.o.compress = features;
	e.o.dedup = features;
	assert_int_equal(env_open(&e), 0);
	uint8_t w[4096], r[4096];
	uint32_t ver[64] = { 0 };
	for (uint32_t b = 0; b < 64; b++) {
		ver[b] = 1;
		content(w, features, ver[b], b);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 1, w, 0), 0);
	}
	bool done = false;
	assert_int_equal(tnd_lsfs_checkpoint_run(e.vol, done_flag, &done), 0);
	wait_flag(&e, &done);
	struct tnd_lsfs_stats st0, st;
	tnd_lsfs_get_stats(e.vol, &st0);
	/* Overwrite the lot many times over: the store is ~45 segments, this
	 * writes ~120 of them, so segments must come back without a timer. */
	uint64_t rng = 9;
	for (uint32_t i = 0; i < 120 * 15; i++) {
		uint32_t b = (uint32_t)(test_rand(&rng) % 64);
		ver[b] = features ? (uint32_t)(test_rand(&rng) % 16) : ver[b] + 1;
		content(w, features, ver[b], b);
		/* Shared writes carry no payload; acknowledged from RAM they
		 * would pile up in a few records. FUA gives each its own
		 * record, so the log still runs through ~120 segments. */
		assert_int_equal(io_sync(&e, TND_IO_WRITE, b, 1, w, features ? TND_IO_FUA : 0), 0);
	}
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.reclaimed_segments > st0.reclaimed_segments);
	/* Writes were 4 KiB each; the log wrote them, headers, moves. */
	assert_int_equal(st.client_bytes_written - st0.client_bytes_written, 120 * 15 * 4096);
	assert_true(st.backing_bytes_written - st0.backing_bytes_written >=
		    st.client_bytes_written - st0.client_bytes_written + st.gc_bytes_written - st0.gc_bytes_written);
	/* GC writes a moved payload as stored: a whole block, or fewer
	 * sectors when compressed, nothing but a descriptor for a sharer. */
	if (features)
		assert_true(st.gc_bytes_written - st0.gc_bytes_written <=
			    (st.gc_moved_blocks - st0.gc_moved_blocks) * 4096);
	else
		assert_int_equal(st.gc_bytes_written - st0.gc_bytes_written,
				 (st.gc_moved_blocks - st0.gc_moved_blocks) * 4096);
	if (features)
		assert_true(st.dedup_hits > st0.dedup_hits && st.compressed_blocks > 0);
	json_t *j = json_object();
	tnd_volume_stats_json(e.vol, j);
	json_t *l = json_object_get(j, "lsfs");
	assert_int_equal(json_integer_value(json_object_get(l, "backing_bytes_written")),
			 (json_int_t)st.backing_bytes_written);
	assert_non_null(json_object_get(l, "client_bytes_written"));
	assert_non_null(json_object_get(l, "ckpt_bytes_written"));
	assert_non_null(json_object_get(l, "gc_bytes_written"));
	json_decref(j);

	/* Pull the plug (the image as it is, no closing checkpoint): the copy
	 * must check clean and hold every newest version. (test_lsfs_crash
	 * counts the crash states whose replay runs through reused segments.) */
	uint8_t *copy = malloc(e.size);
	memcpy(copy, e.img, e.size);
	struct tnd_volume *ram;
	assert_int_equal(ram_vol_wrap(copy, e.size, 512, &ram), 0);
	struct tnd_lsfs_check_result res;
	assert_int_equal(tnd_lsfs_check(ram, NULL, &res), 0);
	tnd_volume_destroy(ram);
	assert_int_equal(res.errors, 0);
	struct env c = e;
	c.img = copy;
	c.vol = NULL;
	assert_int_equal(tnd_reactor_create(1, 64, &c.r), 0);
	assert_int_equal(env_open(&c), 0);
	for (uint32_t b = 0; b < 64; b++) {
		content(w, features, ver[b], b);
		assert_int_equal(io_sync(&c, TND_IO_READ, b, 1, r, 0), 0);
		assert_memory_equal(w, r, sizeof(r));
	}
	env_free(&c);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, false), 0);
	env_free(&e);
}

static void dead_segments_reused_without_checkpoint_survive_crash(void **state)
{
	(void)state;
	reuse_without_checkpoint(false);
}

static void reuse_without_checkpoint_with_dedup_and_lz4_survives_crash(void **state)
{
	(void)state;
	reuse_without_checkpoint(true);
}

struct client {
	struct tnd_volume *vol;
	uint32_t first, count;        /* its own range of blocks */
	uint32_t nwrites;
	uint32_t *ver, *ver2;
	int errors;
	double secs;
};

struct cio {
	struct client *cl;
	bool busy;
	int status;
	struct iovec iov;
	uint8_t buf[4096] __attribute__((aligned(4096)));
	struct tnd_io *io;
};

static void cio_done(struct tnd_io *io, int status)
{
	struct cio *c = io->cb_arg;
	c->busy = false;
	if (status < 0)
		c->cl->errors++;
}

/* A submitter on its own thread and reactor, like a target connection. */
static void *client_thread(void *arg)
{
	struct client *cl = arg;
	struct tnd_reactor *r;
	if (tnd_reactor_create(9, 64, &r) < 0) {
		cl->errors++;
		return NULL;
	}
	enum { QD = 16 };
	struct cio *c = aligned_alloc(4096, QD * sizeof(*c));
	memset(c, 0, QD * sizeof(*c));
	for (int i = 0; i < QD; i++) {
		c[i].cl = cl;
		c[i].io = calloc(1, tnd_volume_io_size(cl->vol));
	}
	uint64_t rng = cl->first + 1;
	uint64_t t0 = tnd_now_ns();
	uint32_t issued = 0;
	while (issued < cl->nwrites) {
		for (int i = 0; i < QD && issued < cl->nwrites; i++) {
			if (c[i].busy)
				continue;
			uint32_t b = cl->first + (uint32_t)(test_rand(&rng) % cl->count);
			bool clash = false;
			for (int k = 0; k < QD; k++)
				clash |= c[k].busy && c[k].io->lba == b;
			if (clash)
				continue;
			cl->ver[b - cl->first]++;
			fill(c[i].buf, 4096, (uint64_t)b << 32 | cl->ver[b - cl->first]);
			struct tnd_io *io = c[i].io;
			c[i].iov = (struct iovec){ .iov_base = c[i].buf, .iov_len = 4096 };
			*io = (struct tnd_io){ .type = TND_IO_WRITE, .lba = b, .nblocks = 1, .iov = &c[i].iov,
					       .iovcnt = 1, .reactor = r, .cb = cio_done, .cb_arg = &c[i] };
			c[i].busy = true;
			if (tnd_volume_submit(cl->vol, io) < 0) {
				c[i].busy = false;
				cl->errors++;
			}
			issued++;
		}
		tnd_reactor_poll(r, 1);
	}
	for (bool any = true; any;) {
		any = false;
		for (int i = 0; i < QD; i++)
			any |= c[i].busy;
		if (any)
			tnd_reactor_poll(r, 1);
	}
	cl->secs = (double)(tnd_now_ns() - t0) / 1e9;
	/* Read everything back from this thread too. */
	uint8_t *w = malloc(4096), *rd = malloc(4096);
	for (uint32_t b = cl->first; b < cl->first + cl->count; b++) {
		if (!cl->ver[b - cl->first])
			continue;
		fill(w, 4096, (uint64_t)b << 32 | cl->ver[b - cl->first]);
		if (io_on(cl->vol, r, NULL, TND_IO_READ, b, 1, rd, 4096, 0) < 0 || memcmp(w, rd, 4096))
			cl->errors++;
	}
	free(w);
	free(rd);
	for (int i = 0; i < QD; i++)
		free(c[i].io);
	free(c);
	tnd_reactor_destroy(r);
	return NULL;
}

struct stats_req {
	struct tnd_msg msg;
	struct tnd_volume *vol;
	struct tnd_lsfs_stats st;
	sem_t done;
};

static void stats_msg(struct tnd_msg *m)
{
	struct stats_req *r = tnd_container_of(m, struct stats_req, msg);
	tnd_lsfs_get_stats(r->vol, &r->st);
	sem_post(&r->done);
}

/*
 * The daemon's shape: lsfs on a flat file, its home reactor on its own
 * thread, two submitters on other threads. Also prints throughput and how
 * many writes each backing write carried. @direct: the shape of a device
 * with "direct_io" (the log written with O_DIRECT, 4 log writes in flight).
 */
static void threaded_run(bool direct)
{
	char path[256];
	const char *dir = getenv("TMPDIR");
	snprintf(path, sizeof(path), "%s/tnd-lsfs-thr-%d.img", dir ? dir : "/tmp", (int)getpid());
	unlink(path);
	struct tnd_reactor *home;
	assert_int_equal(tnd_reactor_create(0, 256, &home), 0);
	struct tnd_flat_opts fo = { .path = path, .size = 96u << 20, .block_size = 512,
				    .direct_writes = direct };
	struct tnd_volume *flat, *vol;
	assert_int_equal(tnd_flat_open(&fo, &flat), 0);
	struct tnd_lsfs_opts o;
	tnd_lsfs_opts_default(&o);
	if (direct)
		o.log_writes = 4;
	o.size = 32u << 20;
	o.segment_size = 1u << 20;
	o.create_if_blank = true;
	assert_int_equal(tnd_lsfs_open(flat, home, &o, &vol), 0);
	assert_int_equal(tnd_reactor_start(home), 0);

	struct client cl[2];
	pthread_t t[2];
	for (int i = 0; i < 2; i++) {
		cl[i] = (struct client){ .vol = vol, .first = (uint32_t)i * 4096, .count = 4096, .nwrites = 20000 };
		cl[i].ver = calloc(cl[i].count, sizeof(uint32_t));
		assert_int_equal(pthread_create(&t[i], NULL, client_thread, &cl[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	/* Stats are home-reactor data: read them there. */
	struct stats_req sr = { .msg.fn = stats_msg, .vol = vol };
	sem_init(&sr.done, 0, 0);
	tnd_reactor_send(home, &sr.msg);
	sem_wait(&sr.done);
	struct tnd_lsfs_stats st = sr.st;
	/* Destroyed from this thread while home still runs, as the daemon does. */
	tnd_volume_destroy(vol);
	tnd_reactor_stop(home);
	tnd_reactor_join(home);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(cl[i].errors, 0);
		cl[i].ver2 = cl[i].ver;
	}
	double secs = TND_MAX(cl[0].secs, cl[1].secs);
	printf("lsfs on flat file%s, 2 threads x QD16 random 4 KiB writes: %.0f writes/s, "
	       "%.1f writes per backing write, %llu GC passes moved %llu blocks (%.2f per write), "
	       "%llu checkpoints\n", direct ? " (direct writes, 4 in flight)" : "",
	       (double)(cl[0].nwrites + cl[1].nwrites) / secs,
	       (double)st.writes / (double)TND_MAX(st.batches, 1), (unsigned long long)st.gc_passes,
	       (unsigned long long)st.gc_moved_blocks, (double)st.gc_moved_blocks / (double)st.writes,
	       (unsigned long long)st.checkpoints);
	/* Reopened, everything is there (the close left a checkpoint). */
	fo.size = 0;
	fo.passthrough = true;
	fo.direct_writes = false;
	assert_int_equal(tnd_flat_open(&fo, &flat), 0);
	assert_int_equal(tnd_lsfs_open(flat, home, &o, &vol), 0);
	uint8_t *w = malloc(4096), *rd = malloc(4096);
	for (int i = 0; i < 2; i++)
		for (uint32_t b = cl[i].first; b < cl[i].first + cl[i].count; b += 97) {
			uint32_t v = cl[i].ver2[b - cl[i].first];
			fill(w, 4096, (uint64_t)b << 32 | v);
			if (!v)
				memset(w, 0, 4096);
			assert_int_equal(io_on(vol, home, NULL, TND_IO_READ, b, 1, rd, 4096, 0), 0);
			assert_memory_equal(w, rd, 4096);
		}
	free(w);
	free(rd);
	for (int i = 0; i < 2; i++)
		free(cl[i].ver2);
	tnd_volume_destroy(vol);
	tnd_reactor_destroy(home);
	unlink(path);
}

static void threaded_submitters_on_flat_file(void **state)
{
	(void)state;
	threaded_run(false);
}

static void threaded_submitters_direct_log_writes(void **state)
{
	(void)state;
	threaded_run(true);
}

/* The block map against a plain array, through sparse/dense switches. */
static void map_against_shadow(void **state)
{
	(void)state;
	const uint64_t n = 8 * LSFS_LEAF_N;
	struct lsfs_map m;
	assert_int_equal(lsfs_map_init(&m, n), 0);
	uint64_t *shadow = calloc(n, sizeof(uint64_t));
	uint64_t rng = 3, mapped = 0;
	for (int i = 0; i < 200000; i++) {
		/* phases: fill a few leaves densely, then drain them */
		uint64_t span = i < 100000 ? n : n / 2;
		uint64_t c = test_rand(&rng) % span;
		bool set = i < 100000 ? test_rand(&rng) % 4 != 0 : test_rand(&rng) % 4 == 0;
		if (set) {
			uint64_t pba = 100 + test_rand(&rng) % 1000000;
			assert_int_equal(lsfs_map_reserve(&m, c, 1), 0);
			assert_int_equal(lsfs_map_set(&m, c, pba, (uint32_t)pba * 7, 0, NULL), shadow[c]);
			mapped += !shadow[c];
			shadow[c] = pba;
		} else {
			assert_int_equal(lsfs_map_clear(&m, c, NULL), shadow[c]);
			mapped -= !!shadow[c];
			shadow[c] = 0;
		}
		if (i % 20000 == 0 || i == 199999) {
			uint64_t seen = 0;
			for (uint64_t x = 0; x < n; x++) {
				const struct lsfs_ment *e = lsfs_map_get(&m, x);
				assert_int_equal(e ? lsfs_ment_pba(e) : 0, shadow[x]);
				if (e)
					assert_int_equal(e->crc, (uint32_t)shadow[x] * 7);
			}
			for (uint64_t x = 0; lsfs_map_next(&m, &x); x++, seen++)
				assert_true(shadow[x] != 0);
			assert_int_equal(seen, mapped);
			assert_int_equal(m.mapped, mapped);
		}
	}
	lsfs_map_free(&m);
	free(shadow);
}

/* Map cost when writes are scattered thinly over a large LUN. */
static void sparse_map_cost(void **state)
{
	(void)state;
	struct lsfs_map m;
	uint64_t chunks = (1ull << 40) / 4096;   /* a 1 TiB LUN */
	assert_int_equal(lsfs_map_init(&m, chunks), 0);
	uint64_t top = lsfs_map_bytes(&m);
	uint64_t rng = 9;
	const uint64_t n = 1u << 20;   /* 4 GiB written at random: 0.4% of the LUN */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t c = test_rand(&rng) % chunks;
		assert_int_equal(lsfs_map_reserve(&m, c, 1), 0);
		lsfs_map_set(&m, c, 100 + i, 1, 0, NULL);
	}
	double per = (double)(lsfs_map_bytes(&m) - top) / (double)m.mapped;
	printf("lsfs map, 4 GiB of random 4 KiB blocks over a 1 TiB LUN (0.4%% full): %.2f bytes/block "
	       "(+ %llu bytes of top array for the promise)\n", per, (unsigned long long)top);
	assert_true(per <= 32.0);
	lsfs_map_free(&m);

	/* The same at 25 % of a 16 GiB LUN. */
	chunks = (16ull << 30) / 4096;
	assert_int_equal(lsfs_map_init(&m, chunks), 0);
	top = lsfs_map_bytes(&m);
	for (uint64_t i = 0; i < chunks / 4; i++) {
		uint64_t c = test_rand(&rng) % chunks;
		assert_int_equal(lsfs_map_reserve(&m, c, 1), 0);
		lsfs_map_set(&m, c, 100 + i, 1, 0, NULL);
	}
	per = (double)(lsfs_map_bytes(&m) - top) / (double)m.mapped;
	printf("lsfs map, random 4 KiB blocks over a 16 GiB LUN (%.0f%% full): %.2f bytes/block\n",
	       100.0 * (double)m.mapped / (double)chunks, per);
	assert_true(per <= 20.0);
	lsfs_map_free(&m);
}

/* Block status follows the map: written chunks mapped, never-written and
 * unmapped ones deallocated, runs on 4 KiB chunk boundaries, clipped to
 * the request and to the medium; walked to the end it tiles the volume. */
static int block_status(struct env *e, uint64_t lba, uint32_t n, struct tnd_block_status *bs)
{
	return io_on(e->vol, e->r, NULL, TND_IO_BLOCK_STATUS, lba, n, bs, sizeof(*bs), 0);
}

static void block_status_follows_the_map(void **state)
{
	(void)state;
	struct env e;
	const uint32_t nblk = 4096;  /* 2 MiB of 512 B blocks = 512 chunks */
	env_format(&e, 4u << 20, 512, (uint64_t)nblk * 512, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	uint8_t *w = malloc(64 * 512);
	fill(w, 64 * 512, 9);
	bool shadow[512] = { false };
	/* Chunks 8-15 by a 4 KiB-aligned write, chunk 20 by a one-sector write
	 * (read-modify-write maps the whole chunk), 100-139 then unmap 110-119. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 64, 64, w, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 163, 1, w, 0), 0);
	for (int k = 0; k < 5; k++)
		assert_int_equal(io_sync(&e, TND_IO_WRITE, 800 + 64 * k, 64, w, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_UNMAP, 880, 80, NULL, 0), 0);
	for (int c = 8; c < 16; c++)
		shadow[c] = true;
	shadow[20] = true;
	for (int c = 100; c < 140; c++)
		shadow[c] = c < 110 || c >= 120;

	struct tnd_block_status bs;
	/* In the middle of a chunk: the run starts there, ends on a boundary. */
	assert_int_equal(block_status(&e, 65, nblk, &bs), 0);
	assert_true(bs.mapped);
	assert_int_equal(bs.nblocks, 128 - 65);
	/* Clipped to the request. */
	assert_int_equal(block_status(&e, 64, 10, &bs), 0);
	assert_true(bs.mapped);
	assert_int_equal(bs.nblocks, 10);
	assert_int_equal(block_status(&e, 0, nblk, &bs), 0);
	assert_false(bs.mapped);
	assert_int_equal(bs.nblocks, 64);
	/* Bad requests. */
	assert_int_equal(block_status(&e, nblk, 1, &bs), -EINVAL);
	assert_int_equal(block_status(&e, 0, 0, &bs), -EINVAL);

	/* Walk the whole volume, before and after a reopen (checkpoint + map). */
	for (int pass = 0; pass < 2; pass++) {
		uint64_t lba = 0;
		while (lba < nblk) {
			assert_int_equal(block_status(&e, lba, nblk - (uint32_t)lba, &bs), 0);
			assert_true(bs.nblocks >= 1 && lba + bs.nblocks <= nblk);
			for (uint64_t b = lba; b < lba + bs.nblocks; b++)
				assert_int_equal(shadow[b / 8], bs.mapped);
			/* Maximal: the next run has the other state. */
			if (lba + bs.nblocks < nblk)
				assert_int_not_equal(shadow[(lba + bs.nblocks) / 8], bs.mapped);
			lba += bs.nblocks;
		}
		env_close(&e);
		assert_int_equal(env_check_errors(&e, true), 0);
		assert_int_equal(env_open(&e), 0);
	}
	free(w);
	env_free(&e);
}

static const char *tmp_image_path(char *buf, size_t len)
{
	const char *dir = getenv("TMPDIR");
	snprintf(buf, len, "%s/tnd-lsfs-test-%d.img", dir ? dir : "/tmp", (int)getpid());
	return buf;
}

/* Build an image on a real file through flat (io_uring); see main(). */
static int make_image(const char *path, bool corrupt)
{
	struct tnd_reactor *r;
	if (tnd_reactor_create(0, 64, &r) < 0)
		return 1;
	unlink(path);
	struct tnd_flat_opts fo = { .path = path, .size = 4u << 20, .block_size = 512 };
	struct tnd_volume *flat;
	int ret = tnd_flat_open(&fo, &flat);
	if (ret < 0)
		return 1;
	struct tnd_lsfs_opts o;
	tnd_lsfs_opts_default(&o);
	o.size = 8u << 20;
	o.segment_size = 256u << 10;
	o.create_if_blank = true;
	o.gc_interval_ms = 0;
	struct tnd_volume *vol;
	ret = tnd_lsfs_open(flat, r, &o, &vol);
	if (ret < 0)
		return 1;
	uint8_t w[4096 * 4];
	for (uint32_t b = 0; b < 256; b += 4) {
		fill(w, sizeof(w), b);
		if (io_on(vol, r, NULL, TND_IO_WRITE, b, 4, w, sizeof(w), 0) < 0)
			return 1;
	}
	uint8_t rd[4096 * 4];
	for (uint32_t b = 0; b < 256; b += 4) {
		fill(w, sizeof(w), b);
		if (io_on(vol, r, NULL, TND_IO_READ, b, 4, rd, sizeof(rd), 0) < 0 || memcmp(w, rd, sizeof(w)))
			return 1;
	}
	if (io_on(vol, r, NULL, TND_IO_FLUSH, 0, 0, NULL, 0, 0) < 0)
		return 1;
	tnd_volume_destroy(vol);
	tnd_reactor_destroy(r);
	if (corrupt) {
		/* Flip a byte of block 40's payload in the file. */
		fill(w, sizeof(w), 40);
		int fd = open(path, O_RDWR);
		static uint8_t img[4u << 20];
		if (fd < 0 || pread(fd, img, sizeof(img), 0) != (ssize_t)sizeof(img))
			return 1;
		uint8_t *p = memmem(img, sizeof(img), w, 4096);
		if (!p)
			return 1;
		uint8_t bad = (uint8_t)(p[7] ^ 0x40);
		if (pwrite(fd, &bad, 1, (p - img) + 7) != 1)
			return 1;
		close(fd);
	}
	return 0;
}

static void flat_file_backing_passes_checker(void **state)
{
	(void)state;
	char path[256];
	tmp_image_path(path, sizeof(path));
	assert_int_equal(make_image(path, false), 0);
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	struct tnd_flat_opts fo = { .path = path, .block_size = 512, .passthrough = true, .read_only = true };
	struct tnd_volume *flat;
	assert_int_equal(tnd_flat_open(&fo, &flat), 0);
	struct tnd_lsfs_check_result res;
	assert_int_equal(tnd_lsfs_check(flat, NULL, &res), 0);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.mapped_blocks, 256);
	tnd_volume_destroy(flat);
	tnd_reactor_destroy(r);
	unlink(path);
}


/*
 * Compression switched on for a store formatted plain: the store gets its
 * feature bit; random, text, zero, half-compressible and repeated blocks
 * read back byte for byte on 4 KiB and 512 B volumes (with unaligned
 * overwrites of compressed chunks), through GC, checkpoints and reopen;
 * zero blocks are not stored; compressed ones take less space; the
 * checker is clean.
 */
static void compress_roundtrip(uint32_t lbs)
{
	struct env e;
	const uint32_t nchunks = 512;
	env_format(&e, 8u << 20, lbs, (uint64_t)nchunks * 4096, 64u << 10);
	e.o.compress = true;
	assert_int_equal(env_open(&e), 0);
	uint32_t per = 4096 / lbs;
	uint8_t *shadow = calloc(nchunks, 4096);
	uint8_t *buf = malloc(16 * 4096);
	uint64_t rng = 99;
	uint32_t zeros = 0;
	for (uint32_t c = 0; c < nchunks; c += 4) {
		int kind = (int)((c / 4) % 5);
		kind_fill(buf, 4 * 4096, kind, c);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, (uint64_t)c * per, 4 * per, buf, 0), 0);
		memcpy(shadow + (size_t)c * 4096, buf, 4 * 4096);
		zeros += kind == 2 ? 4 : 0;
	}
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.zero_blocks, zeros);
	assert_int_equal(st.mapped_blocks, nchunks - zeros);
	assert_true(st.compressed_blocks > 0);
	assert_true(st.stored_bytes < st.mapped_blocks * 4096 * 3 / 4);
	assert_int_equal(st.logical_bytes_written, (uint64_t)nchunks * 4096);
	/* Overwrites: whole chunks of other kinds, and unaligned pieces. */
	for (int i = 0; i < 400; i++) {
		uint32_t n = 1 + (uint32_t)(test_rand(&rng) % (12 * per));
		uint64_t lba = test_rand(&rng) % ((uint64_t)nchunks * per - n);
		uint64_t k = test_rand(&rng) % 10;
		if (k < 8) {
			kind_fill(buf, (size_t)n * lbs, (int)(k % 5), rng);
			assert_int_equal(io_sync(&e, TND_IO_WRITE, lba, n, buf, 0), 0);
			memcpy(shadow + lba * lbs, buf, (size_t)n * lbs);
		} else {
			assert_int_equal(io_sync(&e, k == 8 ? TND_IO_UNMAP : TND_IO_WRITE_ZEROES, lba, n,
						 NULL, 0), 0);
			memset(shadow + lba * lbs, 0, (size_t)n * lbs);
		}
		if (i % 40 == 0) {
			bool done = false;
			assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
			wait_flag(&e, &done);
		}
	}
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.gc_moved_blocks > 0);
	uint8_t *all = malloc((size_t)nchunks * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks * per, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	/* The feature bit is in both superblock copies. */
	for (int i = 0; i < 2; i++)
		assert_true(tnd_get_be64(e.img + i * 4096 + 16) & 1);
	/* Reopened with compression off: the data reads back, new writes
	 * are stored plain. */
	e.o.compress = false;
	assert_int_equal(env_open(&e), 0);
	memset(all, 0x5a, (size_t)nchunks * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks * per, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	kind_fill(buf, 4096, 1, 5);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 0, per, buf, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, 0);
	assert_int_equal(st.raw_blocks, 1);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	free(all);
	free(buf);
	free(shadow);
	env_free(&e);
}

static void compress_4k_roundtrip_gc_reopen(void **state)
{
	(void)state;
	compress_roundtrip(4096);
}

static void compress_512_unaligned_roundtrip(void **state)
{
	(void)state;
	compress_roundtrip(512);
}

/* Without compression the format is 1.0's: no feature bit, every payload
 * a whole aligned block, all-zero blocks still not stored. */
static void plain_store_is_written_as_before(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	assert_int_equal(env_open(&e), 0);
	uint8_t w[3 * 4096], r[3 * 4096];
	kind_fill(w, sizeof(w), 1, 7);
	memset(w + 4096, 0, 4096);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 3, 3, w, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_READ, 3, 3, r, 0), 0);
	assert_memory_equal(w, r, sizeof(r));
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.mapped_blocks, 2);
	assert_int_equal(st.zero_blocks, 1);
	assert_int_equal(st.stored_bytes, 2 * 4096);
	env_close(&e);
	for (int i = 0; i < 2; i++)
		assert_int_equal(tnd_get_be64(e.img + i * 4096 + 16), 0);
	uint8_t *p = memmem(e.img, e.size, w, 4096);
	assert_non_null(p);
	assert_int_equal((p - e.img) % 4096, 0);
	assert_int_equal(env_check_errors(&e, true), 0);
	env_free(&e);
}

/* An incompatible feature this build does not know: refused, untouched. */
static void unknown_feature_bit_is_refused(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	for (int i = 0; i < 2; i++) {
		uint8_t *sb = e.img + i * 4096;
		tnd_put_be64(sb + 16, tnd_get_be64(sb + 16) | 0x20);
		tnd_put_be32(sb + 4092, tnd_crc32c(0, sb, 4092));
	}
	uint8_t *copy = malloc(e.size);
	memcpy(copy, e.img, e.size);
	assert_int_equal(env_open(&e), -EPROTONOSUPPORT);
	assert_memory_equal(copy, e.img, e.size);
	free(copy);
	env_free(&e);
}

/* A compressed payload with a flipped byte answers -EILSEQ, like a plain one. */
static void corrupt_compressed_payload_reads_eilseq(void **state)
{
	(void)state;
	struct env e;
	memset(&e, 0, sizeof(e));
	env_format(&e, 2u << 20, 4096, 1u << 20, 64u << 10);
	e.o.compress = true;
	assert_int_equal(env_open(&e), 0);
	uint8_t w[4096], r[4096];
	kind_fill(w, sizeof(w), 3, 11);   /* half random: the random half survives LZ4 */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 5, 1, w, TND_IO_FUA), 0);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, 1);
	env_close(&e);
	uint8_t *p = memmem(e.img, e.size, w + 64, 256);
	assert_non_null(p);
	p[10] ^= 1;
	assert_true(env_check_errors(&e, false) > 0);
	assert_int_equal(env_open(&e), 0);
	memset(r, 0x77, sizeof(r));
	assert_int_equal(io_sync(&e, TND_IO_READ, 5, 1, r, 0), -EILSEQ);
	for (size_t i = 0; i < sizeof(r); i++)
		assert_int_equal(r[i], 0x77);
	env_free(&e);
}


/*
 * Dedup (with and without compression): eight copies of one random
 * region are stored about once; duplicates inside one write and against
 * blocks only on disk are found; overwrites, unmaps and GC passes keep
 * every block's bytes, across reopen; the checker is clean and sees the
 * shared payloads.
 */
static void dedup_roundtrip(uint32_t lbs, bool compress)
{
	struct env e;
	const uint32_t nchunks = 1024;
	env_format(&e, 16u << 20, lbs, (uint64_t)nchunks * 4096, 64u << 10);
	e.o.dedup = true;
	e.o.compress = compress;
	assert_int_equal(env_open(&e), 0);
	uint32_t per = 4096 / lbs;
	uint8_t *shadow = calloc(nchunks, 4096);
	uint8_t *buf = malloc(64 * 4096);
	/* One 256 KiB region of random and text blocks, written eight times. */
	for (int k = 0; k < 64; k++)
		kind_fill(buf + k * 4096, 4096, k % 3 == 0 ? 1 : 0, 1000 + (uint64_t)k);
	for (uint32_t copy = 0; copy < 8; copy++) {
		uint64_t c0 = copy * 100;
		assert_int_equal(io_sync(&e, TND_IO_WRITE, c0 * per, 64 * per, buf, 0), 0);
		memcpy(shadow + c0 * 4096, buf, 64 * 4096);
		if (copy == 3) {
			/* Push the first copies out of RAM: later copies must
			 * find them on disk. */
			bool done = false;
			assert_int_equal(tnd_lsfs_checkpoint_run(e.vol, done_flag, &done), 0);
			wait_flag(&e, &done);
		}
	}
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	bool exact = tnd_dedup_fp_bits() > 16;   /* else colliding entries replace each other */
	assert_int_equal(st.mapped_blocks, 8 * 64);
	assert_true(exact ? st.dedup_hits == 7 * 64 : st.dedup_hits >= 7 * 64 * 3 / 4);
	assert_int_equal(st.unique_blocks, st.mapped_blocks - st.dedup_hits);
	assert_true(!exact || st.stored_bytes <= 64 * 4096);
	assert_true(st.index_entries >= (exact ? 64 : 16));
	/* Duplicates inside one write. */
	for (int k = 0; k < 16; k++)
		memcpy(buf + k * 4096, shadow + 5 * 4096, 4096);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 900 * (uint64_t)per, 16 * per, buf, 0), 0);
	memcpy(shadow + 900 * 4096, buf, 16 * 4096);
	uint64_t hits = st.dedup_hits;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(exact ? st.dedup_hits == hits + 16 : st.dedup_hits >= hits + 8);
	/* Overwrites (some duplicating, some not), unmaps, GC. */
	uint64_t rng = 5;
	for (int i = 0; i < 500; i++) {
		uint32_t n = 1 + (uint32_t)(test_rand(&rng) % (8 * per));
		uint64_t lba = test_rand(&rng) % ((uint64_t)nchunks * per - n);
		uint64_t k = test_rand(&rng) % 10;
		if (k < 4) {
			/* a copy of a piece of the shadow elsewhere */
			uint64_t from = test_rand(&rng) % ((uint64_t)nchunks * per - n);
			memcpy(buf, shadow + from * lbs, (size_t)n * lbs);
		} else if (k < 8) {
			kind_fill(buf, (size_t)n * lbs, (int)(k % 4), rng);
		}
		if (k < 8) {
			assert_int_equal(io_sync(&e, TND_IO_WRITE, lba, n, buf, 0), 0);
			memcpy(shadow + lba * lbs, buf, (size_t)n * lbs);
		} else {
			assert_int_equal(io_sync(&e, TND_IO_UNMAP, lba, n, NULL, 0), 0);
			memset(shadow + lba * lbs, 0, (size_t)n * lbs);
		}
		if (i % 25 == 0) {
			bool done = false;
			assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
			wait_flag(&e, &done);
		}
	}
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.gc_moved_blocks > 0);
	/* With 12-bit fingerprints hundreds of blocks collide: every false
	 * hint was caught by the compare (and the reads below are right). */
	if (tnd_dedup_fp_bits() <= 16)
		assert_true(st.verify_mismatches > 0);
	else
		assert_int_equal(st.verify_mismatches, 0);
	uint8_t *all = malloc((size_t)nchunks * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks * per, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	uint64_t unique = st.unique_blocks, mapped = st.mapped_blocks, stored = st.stored_bytes;
	env_close(&e);
	struct tnd_volume *ram;
	assert_int_equal(ram_vol_wrap(e.img, e.size, 512, &ram), 0);
	struct tnd_lsfs_check_result res;
	assert_int_equal(tnd_lsfs_check(ram, stderr, &res), 0);
	tnd_volume_destroy(ram);
	assert_int_equal(res.errors, 0);
	assert_true(res.shared_blocks > 0);
	/* Reopen (dedup off now): the counts come back from the map. */
	e.o.dedup = false;
	assert_int_equal(env_open(&e), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.unique_blocks, unique);
	assert_int_equal(st.mapped_blocks, mapped);
	assert_int_equal(st.stored_bytes, stored);
	memset(all, 0x5a, (size_t)nchunks * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks * per, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	/* Dropping every copy but one, then GC: the survivor reads back. */
	for (uint32_t copy = 1; copy < 8; copy++)
		assert_int_equal(io_sync(&e, TND_IO_UNMAP, (uint64_t)copy * 100 * per, 64 * per, NULL, 0), 0);
	for (uint32_t copy = 1; copy < 8; copy++)
		memset(shadow + (size_t)copy * 100 * 4096, 0, 64 * 4096);
	for (int i = 0; i < 10; i++) {
		bool done = false;
		assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
		wait_flag(&e, &done);
	}
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks * per, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	free(all);
	free(buf);
	free(shadow);
	env_free(&e);
}

static void dedup_4k_roundtrip(void **state)
{
	(void)state;
	dedup_roundtrip(4096, false);
}

static void dedup_compress_512_roundtrip(void **state)
{
	(void)state;
	dedup_roundtrip(512, true);
}

/* An I/O in flight for the staging test: submitted now, waited for later. */
struct async_io {
	struct sync_io s;
	struct iovec iov;
	struct tnd_io *io;
};

static void async_submit(struct async_io *a, struct tnd_volume *vol, struct tnd_reactor *sub,
			 enum tnd_io_type t, uint64_t lba, uint32_t n, void *buf, size_t len)
{
	memset(a, 0, sizeof(*a));
	a->io = calloc(1, tnd_volume_io_size(vol));
	assert_non_null(a->io);
	a->iov = (struct iovec){ .iov_base = buf, .iov_len = len };
	a->io->type = t;
	a->io->lba = lba;
	a->io->nblocks = n;
	a->io->iov = &a->iov;
	a->io->iovcnt = 1;
	a->io->reactor = sub;
	a->io->cb = sync_cb;
	a->io->cb_arg = &a->s;
	assert_int_equal(tnd_volume_submit(vol, a->io), 0);
}

static int async_wait(struct async_io *a, struct tnd_reactor *r1, struct tnd_reactor *r2)
{
	while (!a->s.done) {
		tnd_reactor_poll(r1, 0);
		tnd_reactor_poll(r2, 1);
	}
	free(a->io);
	return a->s.status;
}

/*
 * A 16 MiB dedup + LZ4 store (inline compression) whose write stages run
 * off home: @helpers[0] is a second reactor (the caller destroys it),
 * @helpers[1] home. The array must live while e->o points at it.
 */
static void env_open_staged(struct env *e, struct tnd_reactor *helpers[2])
{
	env_format(e, 16u << 20, 4096, 8u << 20, 256u << 10);
	assert_int_equal(tnd_reactor_create(1, 64, &helpers[0]), 0);
	helpers[1] = e->r;
	e->o.compress = true;
	e->o.dedup = true;
	e->o.compress_mode = TND_LSFS_COMPRESS_INLINE;
	e->o.helpers = helpers;
	e->o.nhelpers = 2;
	assert_int_equal(env_open(e), 0);
}

/*
 * Writes whose stages (zero test, LZ4, fingerprint, CRC) run on the
 * submitter and, for half of a large write, on a partner reactor store
 * what a home-only volume stores, and the home reactor applies writes in
 * the order they were submitted: a small write submitted on home right
 * after a large one whose second half is being staged elsewhere, over the
 * same block, must win, though it needs no staging and would otherwise
 * overtake it; the same from another submitter.
 */
static void staged_writes_keep_data_and_order(void **state)
{
	(void)state;
	struct env e;
	struct tnd_reactor *helpers[2];
	env_open_staged(&e, helpers);
	struct tnd_reactor *other = helpers[0];

	const size_t big = 256u << 10;
	uint8_t *w1 = malloc(big), *w3 = malloc(big), *r = malloc(big);
	uint8_t w2[4096];
	assert_non_null(w1);
	assert_non_null(w3);
	assert_non_null(r);
	for (size_t k = 0; k < big / 4096; k++)
		kind_fill(w1 + k * 4096, 4096, k % 8 == 3 ? 2 : k % 8 == 5 ? 4 : (int)(k % 2), k);
	for (size_t k = 0; k < big / 4096; k++)
		kind_fill(w3 + k * 4096, 4096, 1, 1000 + k);
	kind_fill(w2, sizeof(w2), 0, 99);

	/* w1 (64 chunks): its second half is staged on other; w2 over its
	 * chunk 1 is staged nowhere and queues behind it at home. */
	struct async_io a1, a2, a3;
	async_submit(&a1, e.vol, e.r, TND_IO_WRITE, 0, (uint32_t)(big / 4096), w1, big);
	async_submit(&a2, e.vol, e.r, TND_IO_WRITE, 1, 1, w2, sizeof(w2));
	/* w3 from another reactor: half staged there, half on home; then
	 * w2 again over its chunk 5, from there too: it must land after. */
	struct async_io a4;
	async_submit(&a3, e.vol, other, TND_IO_WRITE, 256, (uint32_t)(big / 4096), w3, big);
	async_submit(&a4, e.vol, other, TND_IO_WRITE, 256 + 5, 1, w2, sizeof(w2));
	assert_int_equal(async_wait(&a1, e.r, other), 0);
	assert_int_equal(async_wait(&a2, e.r, other), 0);
	assert_int_equal(async_wait(&a3, other, e.r), 0);
	assert_int_equal(async_wait(&a4, other, e.r), 0);
	memcpy(w3 + 5 * 4096, w2, sizeof(w2));

	uint8_t *want = malloc(big);
	assert_non_null(want);
	memcpy(want, w1, big);
	memcpy(want + 4096, w2, sizeof(w2));
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, (uint32_t)(big / 4096), r, 0), 0);
	assert_memory_equal(r, want, big);
	assert_int_equal(io_sync(&e, TND_IO_READ, 256, (uint32_t)(big / 4096), r, 0), 0);
	assert_memory_equal(r, w3, big);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.compressed_blocks >= 63);    /* w3's text and w1's */
	assert_int_equal(st.zero_blocks, 8);        /* w1's every eighth chunk */
	assert_true(st.dedup_hits >= 7);            /* w1's fixed block, eight times */
	assert_true(st.stored_bytes < st.mapped_blocks * 4096 / 2);

	/* Reopened without helpers, everything reads back, the check is clean. */
	env_close(&e);
	e.o.helpers = NULL;
	e.o.nhelpers = 0;
	assert_int_equal(env_open(&e), 0);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, (uint32_t)(big / 4096), r, 0), 0);
	assert_memory_equal(r, want, big);
	assert_int_equal(io_sync(&e, TND_IO_READ, 256, (uint32_t)(big / 4096), r, 0), 0);
	assert_memory_equal(r, w3, big);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	free(w1);
	free(w3);
	free(r);
	free(want);
	tnd_reactor_destroy(other);
	env_free(&e);
}

/*
 * A duplicate stream: once most chunks home looks up are shared, the
 * stages off home only test for zeros and fingerprint (dup_fp_only
 * counts them); a chunk home then cannot share is compressed there, at
 * the append. What is stored and read back does not change: the unique
 * text chunks written into the stream are stored compressed, every
 * chunk reads back, and the check is clean.
 */
static void duplicate_stream_stages_fingerprint_only(void **state)
{
	(void)state;
	struct env e;
	struct tnd_reactor *helpers[2];
	env_open_staged(&e, helpers);
	struct tnd_reactor *other = helpers[0];

	const size_t wl = 64u << 10;          /* 16 chunks a write */
	const uint32_t ndup = 768;            /* three windows of lookups */
	uint8_t *buf = malloc(wl), *r = malloc(wl);
	assert_non_null(buf);
	assert_non_null(r);
	for (size_t k = 0; k < wl / 4096; k++)
		kind_fill(buf + k * 4096, 4096, 1, 7);
	for (uint32_t lba = 0; lba < ndup; lba += wl / 4096) {
		struct async_io a;
		async_submit(&a, e.vol, other, TND_IO_WRITE, lba, (uint32_t)(wl / 4096), buf, wl);
		assert_int_equal(async_wait(&a, other, e.r), 0);
	}
	struct tnd_lsfs_stats st0;
	tnd_lsfs_get_stats(e.vol, &st0);
	assert_true(st0.dedup_hits >= ndup - 1);
	assert_true(st0.dup_fp_only >= ndup - 2 * 256);
	assert_int_equal(st0.compressed_blocks, 1);

	/* Sixteen unique text chunks in the stream: staged by fingerprint
	 * only, not shareable, so compressed on home. */
	uint8_t *u = malloc(wl);
	assert_non_null(u);
	for (size_t k = 0; k < wl / 4096; k++)
		kind_fill(u + k * 4096, 4096, 1, 1000 + k);
	struct async_io a;
	async_submit(&a, e.vol, other, TND_IO_WRITE, ndup, (uint32_t)(wl / 4096), u, wl);
	assert_int_equal(async_wait(&a, other, e.r), 0);
	struct tnd_lsfs_stats st1;
	tnd_lsfs_get_stats(e.vol, &st1);
	assert_true(st1.dup_fp_only >= st0.dup_fp_only + wl / 4096);
	assert_int_equal(st1.compressed_blocks, st0.compressed_blocks + wl / 4096);
	assert_int_equal(st1.dedup_hits, st0.dedup_hits);

	for (uint32_t lba = 0; lba < ndup; lba += wl / 4096) {
		assert_int_equal(io_sync(&e, TND_IO_READ, lba, (uint32_t)(wl / 4096), r, 0), 0);
		assert_memory_equal(r, buf, wl);
	}
	assert_int_equal(io_sync(&e, TND_IO_READ, ndup, (uint32_t)(wl / 4096), r, 0), 0);
	assert_memory_equal(r, u, wl);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	free(buf);
	free(u);
	free(r);
	tnd_reactor_destroy(other);
	env_free(&e);
}

/*
 * Compression and dedup switched on and off on an open volume: new writes
 * follow the setting at once, older ones read back whatever they were
 * written as, shares made while dedup was on stay after it is turned off
 * and after a reopen with both off, and the store is clean throughout.
 */
static void features_switched_live(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 16u << 20, 4096, 8u << 20, 256u << 10);
	assert_int_equal(env_open(&e), 0);
	const uint32_t n = 16;
	uint8_t *w = malloc((size_t)3 * n * 4096), *r = malloc((size_t)n * 4096);
	assert_non_null(w);
	assert_non_null(r);
	for (uint32_t k = 0; k < 3 * n; k++)
		kind_fill(w + (size_t)k * 4096, 4096, k % 4 == 0 ? 4 : 1, k);
	struct tnd_lsfs_stats st;

	/* Plain: stored as it is. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 0, n, w, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, 0);
	assert_int_equal(st.raw_blocks, n);

	/* On: text compressed, the fixed block shared. */
	assert_int_equal(tnd_lsfs_set_features(e.vol, true, true), 0);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 100, n, w + (size_t)n * 4096, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, n - n / 4 - 1 + 1);   /* 12 text + the first fixed */
	assert_int_equal(st.dedup_hits, n / 4 - 1);

	/* Off again: plain, not shared. */
	assert_int_equal(tnd_lsfs_set_features(e.vol, false, false), 0);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 200, n, w + (size_t)2 * n * 4096, 0), 0);
	struct tnd_lsfs_stats st2;
	tnd_lsfs_get_stats(e.vol, &st2);
	assert_int_equal(st2.compressed_blocks, st.compressed_blocks);
	assert_int_equal(st2.dedup_hits, st.dedup_hits);
	assert_int_equal(st2.raw_blocks, st.raw_blocks + n);
	assert_int_equal(st2.shared_payloads, 1);
	assert_int_equal(tnd_lsfs_set_features(NULL, true, true), -EINVAL);

	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t k = 0; k < 3; k++) {
			assert_int_equal(io_sync(&e, TND_IO_READ, k * 100, n, r, 0), 0);
			assert_memory_equal(r, w + (size_t)k * n * 4096, (size_t)n * 4096);
		}
		env_close(&e);
		assert_int_equal(env_check_errors(&e, true), 0);
		assert_int_equal(env_open(&e), 0);   /* both off at open: the shares stay */
		tnd_lsfs_get_stats(e.vol, &st);
		assert_int_equal(st.shared_payloads, 1);
	}
	free(w);
	free(r);
	env_free(&e);
}

/*
 * A mode that defers starts deferring only once the store is marked for
 * it: the first chunk it wants deferred is compressed inline and starts
 * the superblock update on home. Write one random chunk at @chunk, poll
 * until the mark is durable, and unmap the chunk again (raw_blocks
 * counts it).
 */
static void defer_prime(struct env *e, uint64_t chunk)
{
	uint32_t per = 4096 / e->o.block_size;
	uint8_t b[4096];
	kind_fill(b, sizeof(b), 0, 4242 + chunk);
	assert_int_equal(io_sync(e, TND_IO_WRITE, chunk * per, per, b, 0), 0);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e->vol, &st);
	for (int i = 0; i < 10000 && !st.deferred_marked; i++) {
		tnd_reactor_poll(e->r, 1);
		tnd_lsfs_get_stats(e->vol, &st);
	}
	assert_true(st.deferred_marked);
	assert_int_equal(io_sync(e, TND_IO_UNMAP, chunk * per, per, NULL, 0), 0);
}

/*
 * compress_mode DEFERRED: every chunk is stored raw with the DEFERRED mark
 * (dedup still inline: duplicates share the raw payload), reads back
 * exact, the marks survive a close and reopen, and GC passes (explicit,
 * or with @idle the volume's own idle compaction) compress them, sharers
 * following the compressed copy, until none is left; incompressible
 * blocks lose the mark without being compressed, so nothing loops.
 */
static void deferred_roundtrip(bool dedup, bool idle)
{
	struct env e;
	const uint32_t nchunks = 1024;
	env_format(&e, 16u << 20, 4096, (uint64_t)nchunks * 4096, 64u << 10);
	e.o.compress = true;
	e.o.dedup = dedup;
	e.o.compress_mode = TND_LSFS_COMPRESS_DEFERRED;
	assert_int_equal(env_open(&e), 0);
	defer_prime(&e, 1000);
	uint8_t *shadow = calloc(nchunks, 4096);
	uint8_t *buf = malloc(16 * 4096);
	/* 256 text chunks, 32 random ones, and (dedup) 32 copies of text. */
	for (uint32_t c = 0; c < 256; c += 16) {
		for (int k = 0; k < 16; k++)
			kind_fill(buf + k * 4096, 4096, 1, 7000 + c + (uint64_t)k);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, c, 16, buf, 0), 0);
		memcpy(shadow + (size_t)c * 4096, buf, 16 * 4096);
	}
	for (uint32_t c = 300; c < 332; c += 16) {
		kind_fill(buf, 16 * 4096, 0, c);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, c, 16, buf, 0), 0);
		memcpy(shadow + (size_t)c * 4096, buf, 16 * 4096);
	}
	uint32_t copies = dedup ? 32 : 0;
	for (uint32_t c = 0; c < copies; c += 16) {
		assert_int_equal(io_sync(&e, TND_IO_WRITE, 512 + c, 16, shadow + (size_t)c * 4096, 0), 0);
		memcpy(shadow + (size_t)(512 + c) * 4096, shadow + (size_t)c * 4096, 16 * 4096);
	}
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	/* (The fp12 build's colliding fingerprints miss some copies.) */
	bool exact = tnd_dedup_fp_bits() > 16;
	uint64_t hits = st.dedup_hits, extra = copies - hits;
	assert_true(exact ? hits == copies : hits >= copies / 2);
	assert_int_equal(st.compressed_blocks, 0);
	assert_int_equal(st.deferred_writes, 288 + extra);
	assert_int_equal(st.raw_blocks, 288 + extra + 1);
	assert_int_equal(st.deferred_blocks, 288 + copies);
	assert_int_equal(st.stored_bytes, (288 + extra) * 4096);
	uint8_t *all = malloc((size_t)nchunks * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	/* The DEFERRED feature bit (and PACKED) in both superblock copies. */
	for (int i = 0; i < 2; i++)
		assert_int_equal(tnd_get_be64(e.img + i * 4096 + 16) & 5, 5);
	/* The marks are rebuilt at open. */
	if (idle) {
		e.o.gc_interval_ms = 10;
		e.o.compact_idle_ms = 20;
	}
	assert_int_equal(env_open(&e), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.deferred_blocks, 288 + copies);
	if (idle) {
		/* Any I/O starts the tick. */
		uint8_t one[4096];
		assert_int_equal(io_sync(&e, TND_IO_READ, 0, 1, one, 0), 0);
		uint64_t t0 = tnd_now_ns();
		while (st.deferred_blocks && tnd_now_ns() - t0 < 5000000000ull) {
			tnd_reactor_poll(e.r, 5);
			tnd_lsfs_get_stats(e.vol, &st);
		}
	} else {
		for (int i = 0; i < 100 && st.deferred_blocks; i++) {
			bool done = false;
			assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
			wait_flag(&e, &done);
			tnd_lsfs_get_stats(e.vol, &st);
		}
	}
	assert_int_equal(st.deferred_blocks, 0);
	assert_true(st.compaction_passes > 0);
	assert_int_equal(st.compacted_blocks, 256 + extra);
	assert_int_equal(st.compacted_raw_blocks, 32);
	assert_true(st.compacted_bytes_saved >= (256 + extra) * 2048);
	/* Text compresses more than 2x: the stored bytes drop. */
	assert_true(st.stored_bytes <= 32 * 4096 + (256 + extra) * 2048);
	assert_int_equal(st.mapped_blocks, 288 + copies);
	if (dedup)
		assert_int_equal(st.unique_blocks, 288 + extra);
	memset(all, 0x5a, (size_t)nchunks * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	/* Nothing left to compact: another pass is not a compaction. */
	uint64_t passes = st.compaction_passes;
	bool done = false;
	assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
	wait_flag(&e, &done);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compaction_passes, passes);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	e.o.gc_interval_ms = 0;
	assert_int_equal(env_open(&e), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.deferred_blocks, 0);
	memset(all, 0x5a, (size_t)nchunks * 4096);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	/* Switched to inline live: new writes compress at once; back to
	 * deferred: they are deferred again. */
	assert_int_equal(tnd_lsfs_set_compress_mode(e.vol, TND_LSFS_COMPRESS_INLINE), 0);
	kind_fill(buf, 2 * 4096, 1, 99);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 700, 1, buf, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, 1);
	assert_int_equal(st.deferred_writes, 0);
	assert_int_equal(tnd_lsfs_set_compress_mode(e.vol, TND_LSFS_COMPRESS_DEFERRED), 0);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 701, 1, buf + 4096, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.deferred_writes, 1);
	assert_int_equal(st.deferred_blocks, 1);
	assert_int_equal(tnd_lsfs_set_compress_mode(e.vol, (enum tnd_lsfs_compress_mode)7), -EINVAL);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	env_free(&e);
	free(all);
	free(buf);
	free(shadow);
}

static void deferred_compress_compacts_on_gc(void **state)
{
	(void)state;
	deferred_roundtrip(false, false);
}

static void deferred_compress_dedup_sharers_follow(void **state)
{
	(void)state;
	deferred_roundtrip(true, false);
}

static void deferred_compress_idle_compaction(void **state)
{
	(void)state;
	deferred_roundtrip(true, true);
}

/* Bit 2 (DEFERRED) of the superblock copies in the image. */
static bool img_deferred_bit(const struct env *e, int copy)
{
	return tnd_get_be64(e->img + copy * 4096 + 16) & 4;
}

/*
 * The DEFERRED feature bit is set when the store is about to hold its
 * first deferred record, not at open: an lz4 store opened (or switched
 * live) to ADAPTIVE or DEFERRED stays readable by older builds until a
 * chunk is actually deferred. The chunk that wants it is compressed
 * inline; once the superblock update is durable (both copies), chunks
 * are deferred and read back exact; the bit survives reopen, INLINE and
 * compression off, and is never cleared.
 */
static void deferred_mark_is_lazy(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 8u << 20, 4096, 1u << 20, 64u << 10);
	e.o.compress = true;
	e.o.compress_mode = TND_LSFS_COMPRESS_ADAPTIVE;
	assert_int_equal(env_open(&e), 0);
	uint8_t buf[8 * 4096], rd[8 * 4096];
	for (int i = 0; i < 8; i++)
		kind_fill(buf + i * 4096, 4096, 1, 300 + (uint64_t)i);
	/* Opened adaptive, written at low load: compressed, not marked. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 0, 8, buf, 0), 0);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, 8);
	assert_false(st.deferred_marked);
	for (int c = 0; c < 2; c++) {
		assert_true(tnd_get_be64(e.img + c * 4096 + 16) & 1);   /* PACKED: at open */
		assert_false(img_deferred_bit(&e, c));
	}
	/* Live switch to DEFERRED: no superblock write for it. */
	assert_int_equal(tnd_lsfs_set_compress_mode(e.vol, TND_LSFS_COMPRESS_DEFERRED), 0);
	assert_false(img_deferred_bit(&e, 0) || img_deferred_bit(&e, 1));
	env_close(&e);
	assert_false(img_deferred_bit(&e, 0) || img_deferred_bit(&e, 1));

	/* Reopened DEFERRED: still not marked after open. */
	e.o.compress_mode = TND_LSFS_COMPRESS_DEFERRED;
	assert_int_equal(env_open(&e), 0);
	assert_false(img_deferred_bit(&e, 0) || img_deferred_bit(&e, 1));
	tnd_lsfs_get_stats(e.vol, &st);
	assert_false(st.deferred_marked);
	/* The first chunk it wants deferred is compressed and starts the mark. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 8, 1, buf, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, 1);
	assert_int_equal(st.deferred_writes, 0);
	for (int i = 0; i < 10000 && !st.deferred_marked; i++) {
		tnd_reactor_poll(e.r, 1);
		tnd_lsfs_get_stats(e.vol, &st);
	}
	assert_true(st.deferred_marked);
	/* Durable in both copies before any deferred record. */
	assert_true(img_deferred_bit(&e, 0) && img_deferred_bit(&e, 1));
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 16, 8, buf, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.deferred_writes, 8);
	assert_int_equal(st.deferred_blocks, 8);
	assert_int_equal(io_sync(&e, TND_IO_READ, 16, 8, rd, 0), 0);
	assert_memory_equal(rd, buf, sizeof(buf));
	/* Inline, then compression off: the bit stays (deferred blocks remain). */
	assert_int_equal(tnd_lsfs_set_compress_mode(e.vol, TND_LSFS_COMPRESS_INLINE), 0);
	assert_int_equal(tnd_lsfs_set_features(e.vol, false, false), 0);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	assert_true(img_deferred_bit(&e, 0) && img_deferred_bit(&e, 1));
	e.o.compress = false;
	e.o.compress_mode = TND_LSFS_COMPRESS_INLINE;
	assert_int_equal(env_open(&e), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.deferred_marked);
	assert_int_equal(st.deferred_blocks, 8);
	memset(rd, 0, sizeof(rd));
	assert_int_equal(io_sync(&e, TND_IO_READ, 16, 8, rd, 0), 0);
	assert_memory_equal(rd, buf, sizeof(buf));
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, 8, rd, 0), 0);
	assert_memory_equal(rd, buf, sizeof(buf));
	env_close(&e);
	assert_true(img_deferred_bit(&e, 0) && img_deferred_bit(&e, 1));
	env_free(&e);
}

/* ADAPTIVE at low load (one small write now and then) compresses inline. */
static void adaptive_compresses_at_low_load(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 4u << 20, 4096, 1u << 20, 64u << 10);
	e.o.compress = true;
	e.o.compress_mode = TND_LSFS_COMPRESS_ADAPTIVE;
	assert_int_equal(env_open(&e), 0);
	uint8_t buf[4096];
	for (int i = 0; i < 64; i++) {
		kind_fill(buf, sizeof(buf), 1, (uint64_t)i);
		assert_int_equal(io_sync(&e, TND_IO_WRITE, (uint64_t)i, 1, buf, 0), 0);
		usleep(1000);
	}
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.compressed_blocks, 64);
	assert_int_equal(st.deferred_writes, 0);
	env_free(&e);
}

static void compress_mode_names(void **state)
{
	(void)state;
	enum tnd_lsfs_compress_mode m;
	const char *names[] = { "inline", "adaptive", "deferred" };
	for (int i = 0; i < 3; i++) {
		assert_int_equal(tnd_lsfs_compress_mode_parse(names[i], &m), 0);
		assert_int_equal((int)m, i);
		assert_string_equal(tnd_lsfs_compress_mode_name(m), names[i]);
	}
	assert_int_equal(tnd_lsfs_compress_mode_parse("lazy", &m), -EINVAL);
	assert_int_equal(tnd_lsfs_compress_mode_parse(NULL, &m), -EINVAL);
	assert_null(tnd_lsfs_compress_mode_name((enum tnd_lsfs_compress_mode)3));
}

/*
 * Index warm-up: the format stores no fingerprints, so a reopened dedup
 * store's index is empty until the background walk has read the log back.
 * Blocks of every stored form (LZ4, plain, deferred) written before a
 * close must be found again afterwards: copies at other LBAs become shares
 * and take no new space, and every byte reads back.
 */
static void warmup_run_sync(struct env *e, uint32_t max)
{
	bool done = false;
	assert_int_equal(tnd_lsfs_warmup_run(e->vol, max, done_flag, &done), 0);
	wait_flag(e, &done);
}

static void dedup_index_warms_up_after_reopen(void **state)
{
	(void)state;
	struct env e;
	const uint32_t n = 96, nchunks = 1024;
	env_format(&e, 16u << 20, 4096, (uint64_t)nchunks * 4096, 64u << 10);
	e.o.dedup = true;
	e.o.compress = true;
	assert_int_equal(env_open(&e), 0);
	bool exact = tnd_dedup_fp_bits() > 16;
	uint8_t *w = malloc((size_t)n * 4096), *r = malloc((size_t)n * 4096);
	assert_non_null(w);
	assert_non_null(r);
	/* random (plain), text (LZ4), half and half (LZ4 saving half) */
	for (uint32_t k = 0; k < n; k++)
		kind_fill(w + (size_t)k * 4096, 4096, (int)(k % 3 == 2 ? 3 : k % 3), 7000 + k);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 0, 64, w, 0), 0);
	/* The last 32 deferred: stored raw with the DEFERRED mark. */
	assert_int_equal(tnd_lsfs_set_compress_mode(e.vol, TND_LSFS_COMPRESS_DEFERRED), 0);
	defer_prime(&e, 1000);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 64, n - 64, w + 64 * 4096, 0), 0);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.compressed_blocks > 0 && st.deferred_blocks == n - 64);
	/* (A fresh store has nothing to walk.) */
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_DONE);
	env_close(&e);

	e.o.compress_mode = TND_LSFS_COMPRESS_INLINE;
	assert_int_equal(env_open(&e), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_RUNNING);
	assert_int_equal(st.index_entries, 0);
	assert_true(st.warmup_segments > 0);
	assert_int_equal(st.warmup_scanned, 0);
	/* One segment at a time, then the rest. */
	warmup_run_sync(&e, 1);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.warmup_scanned, 1);
	warmup_run_sync(&e, 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_DONE);
	assert_int_equal(st.warmup_scanned, st.warmup_segments);
	assert_true(exact ? st.warmup_entries == n : st.warmup_entries >= n * 3 / 4);
	assert_int_equal(st.index_entries, st.warmup_entries);
	assert_true(st.warmup_ms < 60000);
	uint64_t stored = st.stored_bytes, hits = st.dedup_hits;
	assert_int_equal(hits, 0);

	/* The same contents elsewhere: shares, no new space. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 200, n, w, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(exact ? st.dedup_hits == n : st.dedup_hits >= n * 3 / 4);
	if (exact)
		assert_int_equal(st.stored_bytes, stored);
	assert_int_equal(st.unique_blocks, st.mapped_blocks - st.dedup_hits);
	for (uint64_t at = 0; at <= 200; at += 200) {
		assert_int_equal(io_sync(&e, TND_IO_READ, at, n, r, 0), 0);
		assert_memory_equal(r, w, (size_t)n * 4096);
	}
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);

	/* Dedup switched on live over stored data starts a walk too. */
	e.o.dedup = false;
	assert_int_equal(env_open(&e), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_OFF);
	assert_int_equal(tnd_lsfs_set_features(e.vol, true, true), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_RUNNING);
	warmup_run_sync(&e, 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_DONE);
	hits = st.dedup_hits;
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 400, n, w, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(exact ? st.dedup_hits == hits + n : st.dedup_hits >= hits + n * 3 / 4);
	/* Switched off: the walk is over. */
	assert_int_equal(tnd_lsfs_set_features(e.vol, true, false), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_OFF);
	assert_int_equal(io_sync(&e, TND_IO_READ, 400, n, r, 0), 0);
	assert_memory_equal(r, w, (size_t)n * 4096);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	free(w);
	free(r);
	env_free(&e);
}

/*
 * The walk against a changing store: blocks overwritten, unmapped and
 * moved by GC after the reopen and between its steps (GC passes running
 * at the same time as a step). What it indexes must be live when it is
 * indexed: copies of dead contents written afterwards must not share
 * dead payloads (tandem-check recounts every reference and segment), and
 * every byte reads back, before and after another reopen.
 */
static void dedup_warmup_against_overwrites_unmaps_and_gc(void **state)
{
	(void)state;
	struct env e;
	const uint32_t nchunks = 1024, n = 384;
	env_format(&e, 16u << 20, 4096, (uint64_t)nchunks * 4096, 64u << 10);
	e.o.dedup = true;
	e.o.compress = true;
	assert_int_equal(env_open(&e), 0);
	uint8_t *shadow = calloc(nchunks, 4096), *buf = malloc(16 * 4096);
	uint8_t *old = malloc((size_t)n * 4096), *all = malloc((size_t)nchunks * 4096);
	assert_non_null(shadow);
	assert_non_null(buf);
	assert_non_null(old);
	assert_non_null(all);
	for (uint32_t k = 0; k < n; k++)
		kind_fill(shadow + (size_t)k * 4096, 4096, (int)(k % 4 == 3 ? 3 : k % 2), 9000 + k);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 0, n, shadow, 0), 0);
	/* Shared payloads whose writer moves on below. */
	memcpy(shadow + 500 * 4096, shadow, 32 * 4096);
	memcpy(shadow + 540 * 4096, shadow, 32 * 4096);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 500, 32, shadow, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 540, 32, shadow, 0), 0);
	memcpy(old, shadow, (size_t)n * 4096);
	env_close(&e);

	assert_int_equal(env_open(&e), 0);
	uint64_t rng = 77;
	struct tnd_lsfs_stats st;
	for (int round = 0; round < 200; round++) {
		tnd_lsfs_get_stats(e.vol, &st);
		if (st.index_warmup != TND_LSFS_WARMUP_RUNNING && round > 40)
			break;
		/* Overwrite or unmap a few blocks of the old data. */
		uint32_t cnt = 1 + (uint32_t)(test_rand(&rng) % 8);
		uint64_t lba = test_rand(&rng) % (n - cnt);
		uint64_t k = test_rand(&rng) % 4;
		if (k == 0) {
			assert_int_equal(io_sync(&e, TND_IO_UNMAP, lba, cnt, NULL, 0), 0);
			memset(shadow + lba * 4096, 0, (size_t)cnt * 4096);
		} else {
			kind_fill(buf, (size_t)cnt * 4096, (int)(k % 2), rng);
			assert_int_equal(io_sync(&e, TND_IO_WRITE, lba, cnt, buf, 0), 0);
			memcpy(shadow + lba * 4096, buf, (size_t)cnt * 4096);
		}
		/* A warm-up step, with a GC pass at the same time now and then. */
		bool gdone = true, wdone = false;
		if (round % 3 == 0) {
			gdone = false;
			assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &gdone), 0);
		}
		assert_int_equal(tnd_lsfs_warmup_run(e.vol, 1, done_flag, &wdone), 0);
		wait_flag(&e, &wdone);
		wait_flag(&e, &gdone);
	}
	warmup_run_sync(&e, 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_DONE);
	assert_true(st.gc_moved_blocks > 0);
	assert_true(st.warmup_entries > 0);
	/* Copies of every old content, dead or alive, at new LBAs. */
	uint64_t hits = st.dedup_hits;
	for (uint32_t k = 0; k < n; k += 16) {
		uint64_t at = 600 + k;
		if (at + 16 > nchunks)
			break;
		assert_int_equal(io_sync(&e, TND_IO_WRITE, at, 16, old + (size_t)k * 4096, 0), 0);
		memcpy(shadow + at * 4096, old + (size_t)k * 4096, 16 * 4096);
	}
	tnd_lsfs_get_stats(e.vol, &st);
	assert_true(st.dedup_hits > hits);
	if (tnd_dedup_fp_bits() > 16)
		assert_int_equal(st.verify_mismatches, 0);
	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks, all, 0), 0);
		assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
		env_close(&e);
		assert_int_equal(env_check_errors(&e, true), 0);
		assert_int_equal(env_open(&e), 0);
	}
	/* Drop everything but the copies, clean, check again. */
	assert_int_equal(io_sync(&e, TND_IO_UNMAP, 0, 600, NULL, 0), 0);
	memset(shadow, 0, 600 * 4096);
	for (int i = 0; i < 8; i++) {
		bool done = false;
		assert_int_equal(tnd_lsfs_gc_run(e.vol, done_flag, &done), 0);
		wait_flag(&e, &done);
	}
	warmup_run_sync(&e, 0);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, nchunks, all, 0), 0);
	assert_memory_equal(all, shadow, (size_t)nchunks * 4096);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	free(shadow);
	free(buf);
	free(old);
	free(all);
	env_free(&e);
}


/*
 * A tight index budget: the walk never grows the index past it, ends
 * once its inserts start to evict, and what it kept is the newest
 * content (segments are walked newest first).
 */
static void dedup_warmup_tight_budget_keeps_newest(void **state)
{
	(void)state;
	struct env e;
	const uint32_t n = 2048;
	env_format(&e, 32u << 20, 4096, (uint64_t)n * 4096, 64u << 10);
	e.o.dedup = true;
	e.o.dedup_index_bytes = 16384;
	assert_int_equal(env_open(&e), 0);
	uint8_t *w = malloc((size_t)n * 4096), *r = malloc(64 * 4096);
	assert_non_null(w);
	assert_non_null(r);
	fill(w, (size_t)n * 4096, 31337);
	for (uint32_t k = 0; k < n; k += 64)
		assert_int_equal(io_sync(&e, TND_IO_WRITE, k, 64, w + (size_t)k * 4096, 0), 0);
	env_close(&e);
	assert_int_equal(env_open(&e), 0);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	uint64_t budget = st.index_bytes;
	assert_true(budget <= 16384);
	warmup_run_sync(&e, 0);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_DONE);
	assert_int_equal(st.index_bytes, budget);
	assert_true(st.warmup_scanned < st.warmup_segments);   /* ended early: full */
	assert_true(st.warmup_entries < n / 2);
	assert_true(st.index_entries * TND_DEDUP_SLOT_BYTES <= budget);
	/* The newest 64 blocks (walked first) are found, the oldest not. */
	tnd_lsfs_get_stats(e.vol, &st);
	uint64_t hits = st.dedup_hits;
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 0, 64, w + (size_t)(n - 64) * 4096, 0), 0);
	tnd_lsfs_get_stats(e.vol, &st);
	bool exact = tnd_dedup_fp_bits() > 16;
	assert_true(exact ? st.dedup_hits - hits >= 60 : st.dedup_hits - hits >= 32);
	assert_int_equal(io_sync(&e, TND_IO_READ, 0, 64, r, 0), 0);
	assert_memory_equal(r, w + (size_t)(n - 64) * 4096, 64 * 4096);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, true), 0);
	free(w);
	free(r);
	env_free(&e);
}


/*
 * Close with a warm-up read in flight (it is waited for; ASan sees no
 * leak or use after free), and a fail-stop ends the walk.
 */
static void dedup_warmup_close_and_fail_stop(void **state)
{
	(void)state;
	struct env e;
	env_format(&e, 16u << 20, 4096, 4u << 20, 64u << 10);
	e.o.dedup = true;
	assert_int_equal(env_open(&e), 0);
	uint8_t *w = malloc(256 * 4096);
	assert_non_null(w);
	fill(w, 256 * 4096, 4711);
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 0, 256, w, 0), 0);
	env_close(&e);

	assert_int_equal(env_open(&e), 0);
	bool done = false;
	assert_int_equal(tnd_lsfs_warmup_run(e.vol, 1, done_flag, &done), 0);
	assert_false(done);   /* its read is in flight */
	assert_int_equal(tnd_lsfs_warmup_run(e.vol, 1, done_flag, &done), -EBUSY);
	env_close(&e);
	assert_int_equal(env_check_errors(&e, false), 0);

	struct fault_vol *fv = env_open_faulty(&e);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_RUNNING);
	fault_fail_at(fv, fault_points(fv), -EIO);
	/* Acknowledged from RAM; the flush meets the failed backing write. */
	assert_int_equal(io_sync(&e, TND_IO_WRITE, 300, 1, w, 0), 0);
	assert_int_equal(io_sync(&e, TND_IO_FLUSH, 0, 0, NULL, 0), -EIO);
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_OFF);
	done = false;
	assert_int_equal(tnd_lsfs_warmup_run(e.vol, 0, done_flag, &done), 0);
	assert_true(done);   /* nothing left to run */
	tnd_lsfs_get_stats(e.vol, &st);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_OFF);
	env_close(&e);
	free(w);
	env_free(&e);
}

/*
 * Under client load the background warm-up reads at opts.dedup_warmup_mbps:
 * at 1 MB/s with 64 KiB segments, while a client keeps reading, the walk
 * scans no more than the rate allows (plus the one it may start in
 * debt) but does progress; switched live to 0 (unlimited) it finishes
 * under the same load.
 */
static void dedup_warmup_paced_by_rate(void **state)
{
	(void)state;
	struct env e;
	const uint32_t n = 2048;
	env_format(&e, 32u << 20, 4096, (uint64_t)n * 4096, 64u << 10);
	e.o.dedup = true;
	assert_int_equal(env_open(&e), 0);
	uint8_t *w = malloc((size_t)n * 4096);
	assert_non_null(w);
	fill(w, (size_t)n * 4096, 999);
	for (uint32_t k = 0; k < n; k += 64)
		assert_int_equal(io_sync(&e, TND_IO_WRITE, k, 64, w + (size_t)k * 4096, 0), 0);
	env_close(&e);
	e.o.gc_interval_ms = 10;
	e.o.dedup_warmup_mbps = 1;
	assert_int_equal(env_open(&e), 0);
	assert_int_equal(tnd_lsfs_set_warmup_rate(e.vol, TND_LSFS_WARMUP_MBPS_MAX + 1), -EINVAL);
	struct tnd_lsfs_stats st;
	uint8_t one[4096];
	uint64_t t0 = tnd_now_ns(), t;
	do {
		assert_int_equal(io_sync(&e, TND_IO_READ, (t0 / 7) % n, 1, one, 0), 0);
		tnd_reactor_poll(e.r, 0);
		t = tnd_now_ns() - t0;
	} while (t < 600000000ull);
	tnd_lsfs_get_stats(e.vol, &st);
	uint64_t most = t / 1000u * 1 / 65536 + 2;   /* ns * MB/s / 1000 = bytes */
	print_message("warm-up at 1 MB/s under load: %llu of %llu segments in %llu ms (at most %llu)\n",
		      (unsigned long long)st.warmup_scanned, (unsigned long long)st.warmup_segments,
		      (unsigned long long)(t / 1000000u), (unsigned long long)most);
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_RUNNING);
	assert_true(st.warmup_segments > 100);
	assert_true(st.warmup_scanned >= 1);
	assert_true(st.warmup_scanned <= most);
	/* Unlimited: back to back under the same load. */
	assert_int_equal(tnd_lsfs_set_warmup_rate(e.vol, 0), 0);
	t0 = tnd_now_ns();
	while (st.index_warmup == TND_LSFS_WARMUP_RUNNING && tnd_now_ns() - t0 < 10000000000ull) {
		assert_int_equal(io_sync(&e, TND_IO_READ, (t0 / 7) % n, 1, one, 0), 0);
		tnd_reactor_poll(e.r, 0);
		tnd_lsfs_get_stats(e.vol, &st);
	}
	assert_int_equal(st.index_warmup, TND_LSFS_WARMUP_DONE);
	assert_int_equal(st.warmup_scanned, st.warmup_segments);
	env_close(&e);
	free(w);
	env_free(&e);
}

int main(int argc, char **argv)
{
	tnd_log_set_level(TND_LOG_ERROR);
	if (argc >= 3 && strcmp(argv[1], "--make-image") == 0)
		return make_image(argv[2], argc > 3 && strcmp(argv[3], "corrupt") == 0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rw_4k_roundtrip_and_reopen),
		cmocka_unit_test(rw_512_unaligned_against_shadow),
		cmocka_unit_test(blank_newer_and_foreign_stores_are_refused),
		cmocka_unit_test(corrupt_payload_reads_eilseq),
		cmocka_unit_test(full_store_enospc_then_reclaim),
		cmocka_unit_test(full_store_of_large_writes_fails_fast),
		cmocka_unit_test(gc_moves_live_blocks_and_frees_segments),
		cmocka_unit_test(io_from_another_reactor_is_forwarded),
		cmocka_unit_test(backing_write_error_fail_stops),
		cmocka_unit_test(backing_write_error_fails_fua_write),
		cmocka_unit_test(online_grow_persists),
		cmocka_unit_test(write_through_mode_and_map_cost),
		cmocka_unit_test(flat_file_backing_passes_checker),
		cmocka_unit_test(write_larger_than_segment_buffers),
		cmocka_unit_test(background_gc_and_checkpoints),
		cmocka_unit_test(gc_separates_hot_and_cold),
		cmocka_unit_test(gc_stages_packed_payloads),
		cmocka_unit_test(dead_segments_reused_without_checkpoint_survive_crash),
		cmocka_unit_test(reuse_without_checkpoint_with_dedup_and_lz4_survives_crash),
		cmocka_unit_test(threaded_submitters_on_flat_file),
		cmocka_unit_test(threaded_submitters_direct_log_writes),
		cmocka_unit_test(map_against_shadow),
		cmocka_unit_test(sparse_map_cost),
		cmocka_unit_test(block_status_follows_the_map),
		cmocka_unit_test(compress_4k_roundtrip_gc_reopen),
		cmocka_unit_test(compress_512_unaligned_roundtrip),
		cmocka_unit_test(plain_store_is_written_as_before),
		cmocka_unit_test(unknown_feature_bit_is_refused),
		cmocka_unit_test(corrupt_compressed_payload_reads_eilseq),
		cmocka_unit_test(dedup_4k_roundtrip),
		cmocka_unit_test(dedup_compress_512_roundtrip),
		cmocka_unit_test(staged_writes_keep_data_and_order),
		cmocka_unit_test(duplicate_stream_stages_fingerprint_only),
		cmocka_unit_test(features_switched_live),
		cmocka_unit_test(deferred_compress_compacts_on_gc),
		cmocka_unit_test(deferred_compress_dedup_sharers_follow),
		cmocka_unit_test(deferred_compress_idle_compaction),
		cmocka_unit_test(deferred_mark_is_lazy),
		cmocka_unit_test(dedup_warmup_paced_by_rate),
		cmocka_unit_test(adaptive_compresses_at_low_load),
		cmocka_unit_test(compress_mode_names),
		cmocka_unit_test(dedup_index_warms_up_after_reopen),
		cmocka_unit_test(dedup_warmup_against_overwrites_unmaps_and_gc),
		cmocka_unit_test(dedup_warmup_tight_budget_keeps_newest),
		cmocka_unit_test(dedup_warmup_close_and_fail_stop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
