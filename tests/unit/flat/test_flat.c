/* Unit tests for the flat and passthrough volumes, on real temp files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>

#include "tnd_common.h"
#include "tnd_flat.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"

struct fixture {
	struct tnd_reactor *r;
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/tnd-flat.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/img", f->dir);
	if (tnd_reactor_create(0, 64, &f->r))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	unlink(f->path);
	rmdir(f->dir);
	tnd_reactor_destroy(f->r);
	free(f);
	return 0;
}

struct waiter {
	int status;
	int calls;
};

static void io_done(struct tnd_io *io, int status)
{
	struct waiter *w = io->cb_arg;
	w->status = status;
	w->calls++;
}

/* Submit one I/O and poll the reactor until it completes; returns status. */
static int do_io(struct fixture *f, struct tnd_volume *v, enum tnd_io_type type, unsigned flags,
		 uint64_t lba, uint32_t nblocks, void *buf, size_t len)
{
	struct tnd_io *io = calloc(1, tnd_volume_io_size(v));
	struct iovec iov = { buf, len };
	struct waiter w = { 0 };
	io->type = type;
	io->flags = flags;
	io->lba = lba;
	io->nblocks = nblocks;
	io->iov = buf ? &iov : NULL;
	io->iovcnt = buf ? 1 : 0;
	io->reactor = f->r;
	io->cb = io_done;
	io->cb_arg = &w;
	int ret = tnd_volume_submit(v, io);
	if (ret == 0) {
		while (w.calls == 0)
			tnd_reactor_poll(f->r, 1000);
		assert_int_equal(w.calls, 1);
		ret = w.status;
	}
	free(io);
	return ret;
}

static void flat_creates_sparse_and_reads_back(void **state)
{
	struct fixture *f = *state;
	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .size = 8 << 20, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&o, &v), 0);

	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_size, 8 << 20);
	assert_true(st.st_blocks * 512 < (8 << 20)); /* sparse */

	struct tnd_volume_info info;
	tnd_volume_info(v, &info);
	assert_int_equal(info.block_size, 512);
	assert_int_equal(info.num_blocks, (8 << 20) / 512);
	assert_true(info.write_cache);

	char wbuf[8192], rbuf[8192];
	for (size_t i = 0; i < sizeof(wbuf); i++)
		wbuf[i] = (char)(i * 7 + 3);
	assert_int_equal(do_io(f, v, TND_IO_WRITE, TND_IO_FUA, 100, 16, wbuf, sizeof(wbuf)), 0);
	assert_int_equal(do_io(f, v, TND_IO_FLUSH, 0, 0, 0, NULL, 0), 0);
	memset(rbuf, 0, sizeof(rbuf));
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 100, 16, rbuf, sizeof(rbuf)), 0);
	assert_memory_equal(wbuf, rbuf, sizeof(wbuf));

	/* Never-written blocks read as zeros. */
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 0, 16, rbuf, sizeof(rbuf)), 0);
	for (size_t i = 0; i < sizeof(rbuf); i++)
		assert_int_equal(rbuf[i], 0);

	/* UNMAP punches a hole: the range reads back as zeros. */
	assert_int_equal(do_io(f, v, TND_IO_UNMAP, 0, 100, 16, NULL, 0), 0);
	memset(rbuf, 0xaa, sizeof(rbuf));
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 100, 16, rbuf, sizeof(rbuf)), 0);
	for (size_t i = 0; i < sizeof(rbuf); i++)
		assert_int_equal(rbuf[i], 0);

	/* Out of range is refused at submit with no callback. */
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, (8 << 20) / 512 - 8, 16, rbuf, sizeof(rbuf)),
			 -EINVAL);
	/* Buffer length must match. */
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 0, 8, rbuf, sizeof(rbuf)), -EINVAL);
	tnd_volume_destroy(v);

	/* Reopen: data persists, the size is kept. */
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 0, 16, wbuf, sizeof(wbuf)), 0);
	tnd_volume_destroy(v);
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	memset(rbuf, 0, sizeof(rbuf));
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 0, 16, rbuf, sizeof(rbuf)), 0);
	assert_memory_equal(wbuf, rbuf, sizeof(wbuf));
	tnd_volume_destroy(v);
}

/* A read-only image refuses writes but flushes fine: nothing of it is
 * unstable, and tandemd's final flush at stop must not fail on it. */
static void flat_read_only_flushes(void **state)
{
	struct fixture *f = *state;
	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .size = 1 << 20, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	tnd_volume_destroy(v);
	o.read_only = true;
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	char buf[512] = { 1 };
	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 0, 1, buf, sizeof(buf)), -EROFS);
	assert_int_equal(do_io(f, v, TND_IO_UNMAP, 0, 0, 1, NULL, 0), -EROFS);
	assert_int_equal(do_io(f, v, TND_IO_FLUSH, 0, 0, 0, NULL, 0), 0);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 0, 1, buf, sizeof(buf)), 0);
	tnd_volume_destroy(v);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 31 + seed);
}

/*
 * Reads and writes of every shape (split iovecs, large, FUA, from the page
 * cache or not) land the same bytes, and none calls back inside submit.
 */
static void flat_io_shapes_agree(void **state)
{
	struct fixture *f = *state;
	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .size = 8 << 20, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&o, &v), 0);

	enum { SMALL = 4096, LARGE = 256 * 1024 };
	uint8_t *small = malloc(SMALL), *large = malloc(LARGE), *fua = malloc(SMALL);
	uint8_t *rbuf = malloc(LARGE);
	fill(small, SMALL, 1);
	fill(large, LARGE, 2);
	fill(fua, SMALL, 3);

	/* Completions come from the loop, not from inside submit. */
	struct tnd_io *io = calloc(1, tnd_volume_io_size(v));
	struct iovec iov[2] = { { small, 1024 }, { small + 1024, SMALL - 1024 } };
	struct waiter w = { 0 };
	*io = (struct tnd_io){ .type = TND_IO_WRITE, .lba = 8, .nblocks = SMALL / 512,
			       .iov = iov, .iovcnt = 2, .reactor = f->r, .cb = io_done,
			       .cb_arg = &w };
	assert_int_equal(tnd_volume_submit(v, io), 0);
	assert_int_equal(w.calls, 0);
	while (w.calls == 0)
		tnd_reactor_poll(f->r, 1000);
	assert_int_equal(w.calls, 1);
	assert_int_equal(w.status, 0);
	free(io);

	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 1024, LARGE / 512, large, LARGE), 0);
	assert_int_equal(do_io(f, v, TND_IO_WRITE, TND_IO_FUA, 4000, SMALL / 512, fua, SMALL), 0);

	/* From the page cache, still completed from the loop. */
	io = calloc(1, tnd_volume_io_size(v));
	struct iovec riov[2] = { { rbuf, 512 }, { rbuf + 512, SMALL - 512 } };
	w = (struct waiter){ 0 };
	*io = (struct tnd_io){ .type = TND_IO_READ, .lba = 8, .nblocks = SMALL / 512,
			       .iov = riov, .iovcnt = 2, .reactor = f->r, .cb = io_done,
			       .cb_arg = &w };
	assert_int_equal(tnd_volume_submit(v, io), 0);
	assert_int_equal(w.calls, 0);
	while (w.calls == 0)
		tnd_reactor_poll(f->r, 1000);
	assert_int_equal(w.calls, 1);
	assert_int_equal(w.status, 0);
	free(io);
	assert_memory_equal(rbuf, small, SMALL);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 1024, LARGE / 512, rbuf, LARGE), 0);
	assert_memory_equal(rbuf, large, LARGE);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 4000, SMALL / 512, rbuf, SMALL), 0);
	assert_memory_equal(rbuf, fua, SMALL);

	/* Out of the page cache: read from the file again. */
	assert_int_equal(do_io(f, v, TND_IO_FLUSH, 0, 0, 0, NULL, 0), 0);
	int fd = open(f->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
	memset(rbuf, 0, LARGE);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 1024, LARGE / 512, rbuf, LARGE), 0);
	assert_memory_equal(rbuf, large, LARGE);
	memset(rbuf, 0, SMALL);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 8, SMALL / 512, rbuf, SMALL), 0);
	assert_memory_equal(rbuf, small, SMALL);

	tnd_volume_destroy(v);
	free(small);
	free(large);
	free(fua);
	free(rbuf);
}

static void flat_refuses_bad_sizes(void **state)
{
	struct fixture *f = *state;
	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .size = 1000, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&o, &v), -EINVAL);
	o.size = 4096;
	o.block_size = 1024;
	assert_int_equal(tnd_flat_open(&o, &v), -EINVAL);
	/* An existing larger image is never shrunk. */
	o.block_size = 512;
	o.size = 1 << 20;
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	tnd_volume_destroy(v);
	o.size = 1 << 19;
	assert_int_equal(tnd_flat_open(&o, &v), -EINVAL);
	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
}

static void flat_grows_online(void **state)
{
	struct fixture *f = *state;
	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .size = 1 << 20, .block_size = 4096 };
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	assert_int_equal(tnd_volume_resize(v, 512), 0);
	struct tnd_volume_info info;
	tnd_volume_info(v, &info);
	assert_int_equal(info.num_blocks, 512);
	assert_int_equal(tnd_volume_resize(v, 100), -EINVAL);
	char buf[4096];
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 511, 1, buf, sizeof(buf)), 0);
	tnd_volume_destroy(v);
}

static void passthrough_uses_whole_file_and_unaligned_buffers(void **state)
{
	struct fixture *f = *state;
	int fd = open(f->path, O_CREAT | O_RDWR, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 2 << 20), 0);
	close(fd);

	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .block_size = 512, .passthrough = true };
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	struct tnd_volume_info info;
	tnd_volume_info(v, &info);
	assert_int_equal(info.num_blocks, (2 << 20) / 512);

	/* A deliberately misaligned buffer (O_DIRECT needs the bounce path). */
	char *raw = malloc(4096 + 1024 + 1);
	char *wbuf = raw + 1;
	for (int i = 0; i < 4096 + 1024; i++)
		wbuf[i] = (char)(i ^ 0x33);
	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 3, 10, wbuf, 5120), 0);
	char *rraw = malloc(5120 + 3);
	char *rbuf = rraw + 3;
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 3, 10, rbuf, 5120), 0);
	assert_memory_equal(wbuf, rbuf, 5120);
	free(raw);
	free(rraw);
	tnd_volume_destroy(v);

	struct tnd_flat_opts missing = { .path = "/nonexistent/tnd", .passthrough = true, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&missing, &v), -ENOENT);
}

/* A number from the volume's stats. */
static json_int_t stat_int(struct tnd_volume *v, const char *key)
{
	json_t *o = json_object();
	tnd_volume_stats_json(v, o);
	json_int_t n = json_integer_value(json_object_get(o, key));
	json_decref(o);
	return n;
}

static bool stat_bool(struct tnd_volume *v, const char *key)
{
	json_t *o = json_object();
	tnd_volume_stats_json(v, o);
	bool b = json_is_true(json_object_get(o, key));
	json_decref(o);
	return b;
}

/*
 * lsfs's backing: writes through O_DIRECT, reads through the page cache.
 * On a file under /var/tmp (a disk file system, where /tmp may be tmpfs);
 * skipped with a message where O_DIRECT is refused. What it guards: the
 * two paths stay coherent (a read after a direct write sees the new bytes
 * even when the old ones were cached; a direct write over pages dirtied by
 * a buffered write wins), unaligned buffers are bounced, FUA and FLUSH
 * work, and reopening shows what was written.
 */
static void flat_direct_writes_coherent_with_buffered_reads(void **state)
{
	struct fixture *f = *state;
	char dir[64] = "/var/tmp/tnd-flatdio.XXXXXX", path[128];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/img", dir);

	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = path, .size = 8 << 20, .block_size = 512,
				   .direct_writes = true };
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	if (!stat_bool(v, "direct_writes")) {
		tnd_volume_destroy(v);
		unlink(path);
		rmdir(dir);
		print_message("O_DIRECT refused on %s: direct-writes path not tested here\n", dir);
		skip();
	}
	assert_false(stat_bool(v, "direct_io"));   /* reads stay buffered */

	enum { LEN = 64 << 10 };
	uint8_t *a = NULL, *b = NULL, *r = NULL;
	assert_int_equal(posix_memalign((void **)&a, 4096, LEN), 0);
	assert_int_equal(posix_memalign((void **)&b, 4096, LEN), 0);
	assert_int_equal(posix_memalign((void **)&r, 4096, LEN), 0);
	for (int i = 0; i < LEN; i++) {
		a[i] = (uint8_t)(i * 13 + 1);
		b[i] = (uint8_t)(i * 29 + 7);
	}

	/* Write A, read it (now cached), overwrite with B: B is read back. */
	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 64, LEN / 512, a, LEN), 0);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 64, LEN / 512, r, LEN), 0);
	assert_memory_equal(r, a, LEN);
	assert_int_equal(do_io(f, v, TND_IO_WRITE, TND_IO_FUA, 64, LEN / 512, b, LEN), 0);
	memset(r, 0, LEN);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 64, LEN / 512, r, LEN), 0);
	assert_memory_equal(r, b, LEN);
	assert_int_equal(stat_int(v, "bounced_ios"), 0);

	/* Another process's buffered view (the same page cache) agrees. */
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, r, LEN, 64 * 512), LEN);
	assert_memory_equal(r, b, LEN);

	/* Pages dirtied by a buffered write, then a direct write over them:
	 * the direct bytes win, before and after the flush. */
	assert_int_equal(pwrite(fd, a, LEN, 1024 * 512), LEN);
	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 1024, LEN / 512, b, LEN), 0);
	assert_int_equal(do_io(f, v, TND_IO_FLUSH, 0, 0, 0, NULL, 0), 0);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 1024, LEN / 512, r, LEN), 0);
	assert_memory_equal(r, b, LEN);
	close(fd);

	/* A misaligned buffer goes through the bounce buffer. */
	uint8_t *raw = malloc(5120 + 1);
	for (int i = 0; i < 5120; i++)
		raw[i + 1] = (uint8_t)(i ^ 0x5a);
	assert_int_equal(do_io(f, v, TND_IO_WRITE, 0, 3, 10, raw + 1, 5120), 0);
	assert_int_equal(stat_int(v, "bounced_ios"), 1);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 3, 10, r, 5120), 0);
	assert_memory_equal(r, raw + 1, 5120);
	assert_int_equal(stat_int(v, "buffered_writes"), 0);
	assert_int_equal(do_io(f, v, TND_IO_FLUSH, 0, 0, 0, NULL, 0), 0);
	tnd_volume_destroy(v);

	/* Reopened (buffered this time): everything is there. */
	o.direct_writes = false;
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 3, 10, r, 5120), 0);
	assert_memory_equal(r, raw + 1, 5120);
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 64, LEN / 512, r, LEN), 0);
	assert_memory_equal(r, b, LEN);
	tnd_volume_destroy(v);

	/* Not with passthrough (that is all direct already). */
	o.passthrough = true;
	o.direct_writes = true;
	assert_int_equal(tnd_flat_open(&o, &v), -EINVAL);

	free(raw);
	free(a);
	free(b);
	free(r);
	unlink(path);
	rmdir(dir);
}

/*
 * Buffered writes on ext4 skip io_uring's inline attempt (IOSQE_ASYNC):
 * the stats say which way a volume writes, truthfully for the file system
 * under /var/tmp, and on ext4 what goes that way reads back, FUA and flush
 * included. Direct writes never take the flag.
 */
static void flat_async_writes_on_ext4(void **state)
{
	struct fixture *f = *state;
	char dir[64] = "/var/tmp/tnd-flatasync.XXXXXX", path[128];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/img", dir);
	struct statfs sfs;
	assert_int_equal(statfs(dir, &sfs), 0);

	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = path, .size = 4 << 20, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	assert_int_equal(stat_bool(v, "async_writes"), sfs.f_type == EXT4_SUPER_MAGIC);
	uint8_t w[4096], r[4096];
	uint64_t x = 77;
	for (int i = 0; i < 256; i++) {
		for (size_t k = 0; k < sizeof(w); k++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			w[k] = (uint8_t)(x >> 56);
		}
		uint64_t lba = (uint64_t)(i * 37 % 1024) * 8;
		assert_int_equal(do_io(f, v, TND_IO_WRITE, i % 8 ? 0 : TND_IO_FUA, lba, 8, w, sizeof(w)), 0);
		assert_int_equal(do_io(f, v, TND_IO_READ, 0, lba, 8, r, sizeof(r)), 0);
		assert_memory_equal(w, r, sizeof(r));
	}
	assert_int_equal(do_io(f, v, TND_IO_FLUSH, 0, 0, 0, NULL, 0), 0);
	assert_int_equal(stat_int(v, "write_ops"), 256);
	tnd_volume_destroy(v);

	o.direct_writes = true;
	assert_int_equal(tnd_flat_open(&o, &v), 0);
	if (stat_bool(v, "direct_writes"))
		assert_false(stat_bool(v, "async_writes"));
	tnd_volume_destroy(v);
	unlink(path);
	rmdir(dir);
}

/* ---- FLUSH group commit ---------------------------------------------- */

struct seq_waiter {
	int status;
	int calls;
	int seq;                /* completion order */
	int *clock;
};

static void seq_done(struct tnd_io *io, int status)
{
	struct seq_waiter *w = io->cb_arg;
	w->status = status;
	w->calls++;
	w->seq = ++*w->clock;
}

/*
 * Flushes that arrive while an fdatasync is running share the next one:
 * nine flushes, the first leads, the eight behind it (with a write among
 * them) complete together after it, with two fdatasyncs in all. Then a
 * flush on an idle volume runs its own.
 */
static void flat_flushes_behind_a_running_one_share_the_next(void **state)
{
	struct fixture *f = *state;
	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .size = 1 << 20, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&o, &v), 0);

	enum { N = 9 };
	int clock = 0;
	struct tnd_io *io[N];
	struct seq_waiter w[N];
	char buf[512];
	memset(buf, 0xa5, sizeof(buf));
	struct iovec iov = { buf, sizeof(buf) };
	for (int i = 0; i < N; i++) {
		io[i] = calloc(1, tnd_volume_io_size(v));
		w[i] = (struct seq_waiter){ .clock = &clock };
		*io[i] = (struct tnd_io){ .type = TND_IO_FLUSH, .reactor = f->r, .cb = seq_done,
					  .cb_arg = &w[i] };
	}
	/* io[4] is a write between the flushes. */
	io[4]->type = TND_IO_WRITE;
	io[4]->lba = 7;
	io[4]->nblocks = 1;
	io[4]->iov = &iov;
	io[4]->iovcnt = 1;
	for (int i = 0; i < N; i++)
		assert_int_equal(tnd_volume_submit(v, io[i]), 0);
	for (int i = 0; i < N; i++)
		while (w[i].calls == 0)
			assert_true(tnd_reactor_poll(f->r, 1000) >= 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(w[i].calls, 1);
		assert_int_equal(w[i].status, 0);
		if (i != 0 && i != 4)
			assert_true(w[i].seq > w[0].seq);   /* none rode on the first */
	}
	assert_int_equal(stat_int(v, "flush_ops"), N - 1);
	assert_int_equal(stat_int(v, "fdatasyncs"), 2);

	assert_int_equal(do_io(f, v, TND_IO_FLUSH, 0, 0, 0, NULL, 0), 0);
	assert_int_equal(stat_int(v, "fdatasyncs"), 3);
	char r[512];
	assert_int_equal(do_io(f, v, TND_IO_READ, 0, 7, 1, r, sizeof(r)), 0);
	assert_memory_equal(r, buf, sizeof(r));
	for (int i = 0; i < N; i++)
		free(io[i]);
	tnd_volume_destroy(v);
}

/* One writer-flusher per reactor thread: write a block, flush, repeat. */
struct stream {
	struct tnd_volume *vol;
	struct tnd_reactor *r;
	struct tnd_io *io;
	struct tnd_msg start;
	struct iovec iov;
	uint8_t buf[512];
	int idx, round, rounds;
	int errors, wrong_thread;
	atomic_int *finished;
};

enum { STREAMS = 3, ROUNDS = 200 };

static void stream_write(struct stream *s);

static void stream_io_done(struct tnd_io *io, int status)
{
	struct stream *s = io->cb_arg;
	if (status)
		s->errors++;
	if (!tnd_reactor_is_current(s->r))
		s->wrong_thread++;
	if (io->type == TND_IO_WRITE) {
		*io = (struct tnd_io){ .type = TND_IO_FLUSH, .reactor = s->r, .cb = stream_io_done,
				       .cb_arg = s };
		if (tnd_volume_submit(s->vol, io))
			s->errors++;
		return;
	}
	if (++s->round < s->rounds)
		stream_write(s);
	else
		atomic_fetch_add(s->finished, 1);
}

static void stream_write(struct stream *s)
{
	memset(s->buf, (uint8_t)(s->idx * 64 + s->round), sizeof(s->buf));
	s->iov = (struct iovec){ s->buf, sizeof(s->buf) };
	*s->io = (struct tnd_io){ .type = TND_IO_WRITE, .lba = (uint64_t)(s->idx * ROUNDS + s->round),
				  .nblocks = 1, .iov = &s->iov, .iovcnt = 1, .reactor = s->r,
				  .cb = stream_io_done, .cb_arg = s };
	if (tnd_volume_submit(s->vol, s->io)) {
		s->errors++;
		atomic_fetch_add(s->finished, 1);
	}
}

static void stream_start(struct tnd_msg *m)
{
	stream_write(tnd_container_of(m, struct stream, start));
}

/*
 * Several reactors flush one volume at once: every flush completes, on
 * its own reactor, with success; concurrent ones shared fdatasyncs (fewer
 * than flushes); every block written before a flush reads back.
 */
static void flat_concurrent_flushes_from_many_reactors(void **state)
{
	struct fixture *f = *state;
	struct tnd_volume *v;
	struct tnd_flat_opts o = { .path = f->path, .size = 1 << 20, .block_size = 512 };
	assert_int_equal(tnd_flat_open(&o, &v), 0);

	atomic_int finished = 0;
	struct stream st[STREAMS];
	for (int i = 0; i < STREAMS; i++) {
		st[i] = (struct stream){ .vol = v, .idx = i, .rounds = ROUNDS, .finished = &finished };
		st[i].io = calloc(1, tnd_volume_io_size(v));
		st[i].start.fn = stream_start;
		assert_int_equal(tnd_reactor_create((unsigned)i + 1, 64, &st[i].r), 0);
		assert_int_equal(tnd_reactor_start(st[i].r), 0);
	}
	for (int i = 0; i < STREAMS; i++)
		tnd_reactor_send(st[i].r, &st[i].start);
	for (int waited = 0; atomic_load(&finished) < STREAMS && waited < 60000; waited++)
		usleep(1000);
	assert_int_equal(atomic_load(&finished), STREAMS);
	for (int i = 0; i < STREAMS; i++) {
		tnd_reactor_stop(st[i].r);
		tnd_reactor_join(st[i].r);
		tnd_reactor_destroy(st[i].r);
		assert_int_equal(st[i].errors, 0);
		assert_int_equal(st[i].wrong_thread, 0);
		free(st[i].io);
	}
	json_int_t flushes = stat_int(v, "flush_ops"), syncs = stat_int(v, "fdatasyncs");
	print_message("%lld flushes, %lld fdatasyncs\n", (long long)flushes, (long long)syncs);
	assert_int_equal(flushes, STREAMS * ROUNDS);
	assert_true(syncs >= 1 && syncs < flushes);

	uint8_t r[512], want[512];
	for (int i = 0; i < STREAMS; i++)
		for (int k = 0; k < ROUNDS; k++) {
			memset(want, (uint8_t)(i * 64 + k), sizeof(want));
			assert_int_equal(do_io(f, v, TND_IO_READ, 0, (uint64_t)(i * ROUNDS + k), 1,
					       r, sizeof(r)), 0);
			assert_memory_equal(r, want, sizeof(r));
		}
	tnd_volume_destroy(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(flat_creates_sparse_and_reads_back, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_io_shapes_agree, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_refuses_bad_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_read_only_flushes, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_grows_online, setup, teardown),
		cmocka_unit_test_setup_teardown(passthrough_uses_whole_file_and_unaligned_buffers, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_direct_writes_coherent_with_buffered_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_async_writes_on_ext4, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_flushes_behind_a_running_one_share_the_next, setup, teardown),
		cmocka_unit_test_setup_teardown(flat_concurrent_flushes_from_many_reactors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
