/*
 * The accounting layer: a volume that counts what passes through it (ops,
 * bytes, latency histograms per direction) and forwards everything to its
 * base unchanged. The daemon puts one on top of every device stack, so the
 * management API reports what initiators did, whatever the stack below.
 *
 * Counters are relaxed atomics: several reactors submit to one device and
 * exact cross-counter consistency is not needed for statistics.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "tnd_common.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"

static const uint32_t bucket_us[TND_STATS_BUCKETS] = {
	50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000,
};

struct dir_stats {
	_Atomic uint64_t ops, bytes, errors, sum_us;
	_Atomic uint64_t buckets[TND_STATS_BUCKETS + 1];  /* last: above every bound */
};

struct stats_vol {
	struct tnd_volume vol;
	struct dir_stats rd, wr;
	_Atomic uint64_t flushes, unmaps;
};

struct stats_io {
	tnd_io_cb cb;
	void *cb_arg;
	uint64_t start_ns;
	struct stats_vol *sv;
};

static void account(struct dir_stats *d, uint64_t bytes, uint64_t ns, int status)
{
	uint64_t us = ns / 1000;
	unsigned b = 0;
	while (b < TND_STATS_BUCKETS && us > bucket_us[b])
		b++;
	atomic_fetch_add_explicit(&d->ops, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->bytes, bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->sum_us, us, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->buckets[b], 1, memory_order_relaxed);
	if (status < 0)
		atomic_fetch_add_explicit(&d->errors, 1, memory_order_relaxed);
}

static struct stats_io *ctx_of(struct tnd_io *io, struct stats_vol *sv)
{
	return tnd_io_ctx(io, &sv->vol);
}

static void stats_complete(struct tnd_io *io, int status)
{
	struct stats_io *si = io->cb_arg;
	struct stats_vol *sv = si->sv;
	uint64_t ns = tnd_now_ns() - si->start_ns;
	uint64_t bytes = 0;
	if (io->type == TND_IO_READ || io->type == TND_IO_WRITE)
		bytes = tnd_iov_length(io->iov, io->iovcnt);
	if (io->type == TND_IO_READ)
		account(&sv->rd, bytes, ns, status);
	else if (io->type == TND_IO_WRITE)
		account(&sv->wr, bytes, ns, status);
	io->cb = si->cb;
	io->cb_arg = si->cb_arg;
	io->cb(io, status);
}

static int stats_submit(struct tnd_volume *vol, struct tnd_io *io)
{
	struct stats_vol *sv = tnd_container_of(vol, struct stats_vol, vol);
	struct stats_io *si = ctx_of(io, sv);
	si->cb = io->cb;
	si->cb_arg = io->cb_arg;
	si->sv = sv;
	si->start_ns = tnd_now_ns();
	if (io->type == TND_IO_FLUSH)
		atomic_fetch_add_explicit(&sv->flushes, 1, memory_order_relaxed);
	else if (io->type == TND_IO_UNMAP || io->type == TND_IO_WRITE_ZEROES)
		atomic_fetch_add_explicit(&sv->unmaps, 1, memory_order_relaxed);
	io->cb = stats_complete;
	io->cb_arg = si;
	int ret = tnd_volume_submit(vol->base, io);
	if (ret < 0) {
		/* Not accepted: the caller keeps its own callback. */
		io->cb = si->cb;
		io->cb_arg = si->cb_arg;
	}
	return ret;
}

/* Everything, the owning reactor (home) included, is the base's. */
static void stats_info(struct tnd_volume *vol, struct tnd_volume_info *out)
{
	tnd_volume_info(vol->base, out);
}

static json_t *dir_json(struct dir_stats *d)
{
	json_t *o = json_object();
	json_t *b = json_array();
	uint64_t count = 0;
	for (unsigned i = 0; i <= TND_STATS_BUCKETS; i++) {
		uint64_t n = atomic_load_explicit(&d->buckets[i], memory_order_relaxed);
		count += n;
		if (i < TND_STATS_BUCKETS)
			json_array_append_new(b, json_pack("{s:I,s:I}", "le_us", (json_int_t)bucket_us[i],
							   "count", (json_int_t)n));
	}
	json_object_set_new(o, "buckets", b);
	json_object_set_new(o, "count", json_integer((json_int_t)count));
	json_object_set_new(o, "sum_us", json_integer((json_int_t)atomic_load(&d->sum_us)));
	return o;
}

static void stats_json(struct tnd_volume *vol, json_t *out)
{
	struct stats_vol *sv = tnd_container_of(vol, struct stats_vol, vol);
	json_object_set_new(out, "read_ops", json_integer((json_int_t)atomic_load(&sv->rd.ops)));
	json_object_set_new(out, "write_ops", json_integer((json_int_t)atomic_load(&sv->wr.ops)));
	json_object_set_new(out, "read_bytes", json_integer((json_int_t)atomic_load(&sv->rd.bytes)));
	json_object_set_new(out, "write_bytes", json_integer((json_int_t)atomic_load(&sv->wr.bytes)));
	json_object_set_new(out, "read_errors", json_integer((json_int_t)atomic_load(&sv->rd.errors)));
	json_object_set_new(out, "write_errors", json_integer((json_int_t)atomic_load(&sv->wr.errors)));
	json_object_set_new(out, "flush_ops", json_integer((json_int_t)atomic_load(&sv->flushes)));
	json_object_set_new(out, "unmap_ops", json_integer((json_int_t)atomic_load(&sv->unmaps)));
	json_t *lat = json_object();
	json_object_set_new(lat, "read", dir_json(&sv->rd));
	json_object_set_new(lat, "write", dir_json(&sv->wr));
	json_object_set_new(out, "latency", lat);
}

static int stats_resize(struct tnd_volume *vol, uint64_t num_blocks)
{
	return tnd_volume_resize(vol->base, num_blocks);
}

static void stats_destroy(struct tnd_volume *vol)
{
	struct stats_vol *sv = tnd_container_of(vol, struct stats_vol, vol);
	tnd_volume_destroy(vol->base);
	free(sv);
}

static const struct tnd_volume_ops stats_ops = {
	.type = "stats",
	.ctx_size = sizeof(struct stats_io),
	.submit = stats_submit,
	.info = stats_info,
	.stats_json = stats_json,
	.resize = stats_resize,
	.destroy = stats_destroy,
};

int tnd_stats_volume_create(struct tnd_volume *base, struct tnd_volume **out)
{
	struct stats_vol *sv = calloc(1, sizeof(*sv));
	if (!sv)
		return -ENOMEM;
	tnd_volume_init(&sv->vol, &stats_ops, base);
	*out = &sv->vol;
	return 0;
}
