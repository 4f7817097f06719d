/*
 * Device stacks: building each configured device's volume stack, and the
 * few things the daemon does to a running device (flush, stats, close).
 *
 * Every stack is topped by the accounting layer so the API reports what
 * initiators did, whatever is below: stats(lsfs(flat(file))),
 * stats(flat(file)), stats(passthrough(disk)). The table dev_open maps a
 * device type to the function that builds the rest.
 */
#include <errno.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon.h"
#include "tnd_common.h"
#include "tnd_flat.h"
#include "tnd_lsfs.h"
#include "tnd_reactor.h"
#include "tnd_target.h"
#include "tnd_volume.h"

typedef int (*open_fn)(struct tnd_daemon *d, const struct tnd_config_device *dev,
		       struct tnd_reactor *home, struct tnd_volume **out);

static int open_flat(struct tnd_daemon *d, const struct tnd_config_device *dev,
		     struct tnd_reactor *home, struct tnd_volume **out)
{
	struct tnd_flat_opts o = {
		.path = dev->path,
		.size = dev->size,
		.block_size = dev->block_size,
		.passthrough = dev->type == TND_DEV_PASSTHROUGH,
		.read_only = dev->read_only,
	};
	return tnd_flat_open(&o, out);
}

/*
 * lsfs(flat(file)): the backing file is sparse and sized to the capacity,
 * so the promise (size) and the physical space used both stay thin.
 * With "direct_io" the log is written with O_DIRECT and read through the
 * page cache (flat's direct_writes): no copy into the page cache and no
 * dirty pages for SYNCHRONIZE CACHE to write back, but GC then reads its
 * victims (and initiators their recent writes) from the disk instead of
 * from the cache. Off by default: on a store that fits in RAM, GC's
 * cache hits are worth more (bench/results/2026-11-22-vm-lsfs-flush.md).
 */
static void lsfs_start_fn(void *arg)
{
	tnd_lsfs_start_background(arg);
}

static int open_lsfs(struct tnd_daemon *d, const struct tnd_config_device *dev,
		     struct tnd_reactor *home, struct tnd_volume **out)
{
	struct tnd_flat_opts fo = {
		.path = dev->path,
		.size = dev->capacity,
		.block_size = 512,
		.read_only = dev->read_only,
		.direct_writes = dev->direct_io,
	};
	struct tnd_volume *backing;
	int ret = tnd_flat_open(&fo, &backing);
	if (ret < 0)
		return ret;

	struct tnd_lsfs_opts lo;
	tnd_lsfs_opts_default(&lo);
	lo.size = dev->size;
	lo.block_size = dev->block_size;
	lo.write_cache = dev->write_cache;
	lo.compress = dev->compress;
	lo.compress_mode = (enum tnd_lsfs_compress_mode)dev->compress_mode;
	lo.dedup = dev->dedup;
	lo.dedup_index_bytes = dev->dedup_index_bytes;
	_Static_assert(TND_CONFIG_WARMUP_MBPS_DEFAULT == TND_LSFS_WARMUP_MBPS_DEFAULT &&
		       TND_CONFIG_WARMUP_MBPS_MAX == TND_LSFS_WARMUP_MBPS_MAX, "config and lsfs agree");
	lo.dedup_warmup_mbps = dev->dedup_warmup_mbps;
	/* A write's compression and fingerprint run on any reactor, so that
	 * one busy device does not load its home reactor alone. */
	lo.helpers = d->reactors;
	lo.nhelpers = d->nr_reactors;
	lo.create_if_blank = !dev->read_only;
	/* O_DIRECT log writes take the disk's latency: keep several going. */
	lo.log_writes = dev->direct_io ? 4 : 1;
	ret = tnd_lsfs_open(backing, home, &lo, out);
	if (ret == 0) {
		/* Background work (GC tick, the dedup index's warm-up) starts
		 * now, not at the first client I/O. */
		tnd_daemon_run_on(home, lsfs_start_fn, *out);
		return 0;
	}
	if (ret < 0) {
		tnd_volume_destroy(backing);
		if (ret == -EPROTONOSUPPORT)
			tnd_err("tandemd", "device %s: %s was written by a newer tandem; refusing to "
				"touch it", dev->name, dev->path);
		else if (ret == -EUCLEAN)
			tnd_err("tandemd", "device %s: %s is not an lsfs store or its metadata is "
				"damaged; run tandem-check %s", dev->name, dev->path, dev->path);
	}
	return ret;
}

static const open_fn dev_open[] = {
	[TND_DEV_FLAT] = open_flat,
	[TND_DEV_PASSTHROUGH] = open_flat,
	[TND_DEV_LSFS] = open_lsfs,
};

int tnd_daemon_open_device(struct tnd_daemon *d, const struct tnd_config_device *dev)
{
	if ((size_t)dev->type >= TND_ARRAY_SIZE(dev_open) || !dev_open[dev->type])
		return -EOPNOTSUPP;
	struct tnd_daemon_dev *devs = realloc(d->devs, (d->nr_devs + 1) * sizeof(*devs));
	if (!devs)
		return -ENOMEM;
	d->devs = devs;
	struct tnd_daemon_dev *nd = &d->devs[d->nr_devs];
	nd->name = strdup(dev->name);
	if (!nd->name)
		return -ENOMEM;
	nd->home = d->reactors[d->next_home % d->nr_reactors];

	struct tnd_volume *stack;
	int ret = dev_open[dev->type](d, dev, nd->home, &stack);
	if (ret < 0) {
		tnd_err("tandemd", "device %s: cannot open %s: %s", dev->name, dev->path,
			strerror(-ret));
		goto err_free_name;
	}
	ret = tnd_stats_volume_create(stack, &nd->vol);
	if (ret < 0) {
		tnd_volume_destroy(stack);
		goto err_free_name;
	}
	d->next_home++;
	d->nr_devs++;

	struct tnd_volume_info info;
	tnd_volume_info(nd->vol, &info);
	tnd_info("tandemd", "device %s: %s, %llu MiB, %u-byte blocks, %s", dev->name,
		 stack->ops->type, (unsigned long long)(info.num_blocks * info.block_size >> 20),
		 info.block_size, dev->path);
	return 0;

err_free_name:
	free(nd->name);
	return ret;
}

struct tnd_daemon_dev *tnd_daemon_find_dev(struct tnd_daemon *d, const char *name)
{
	for (size_t i = 0; i < d->nr_devs; i++)
		if (strcmp(d->devs[i].name, name) == 0)
			return &d->devs[i];
	return NULL;
}

/* ---- running work on a reactor from the main or mgmt thread ---- */

struct run_msg {
	struct tnd_msg msg;
	void (*fn)(void *arg);
	void *arg;
	sem_t done;
};

static void run_msg_fn(struct tnd_msg *m)
{
	struct run_msg *rm = tnd_container_of(m, struct run_msg, msg);
	rm->fn(rm->arg);
	sem_post(&rm->done);
}

void tnd_daemon_run_on(struct tnd_reactor *r, void (*fn)(void *arg), void *arg)
{
	struct run_msg rm = { .msg.fn = run_msg_fn, .fn = fn, .arg = arg };
	sem_init(&rm.done, 0, 0);
	tnd_reactor_send(r, &rm.msg);
	sem_wait(&rm.done);
	sem_destroy(&rm.done);
}

/* ---- flush ---- */

struct flush_req {
	struct tnd_volume *vol;
	struct tnd_reactor *reactor;
	struct tnd_io *io;
	int status;
	sem_t done;
};

static void flush_done(struct tnd_io *io, int status)
{
	struct flush_req *req = io->cb_arg;
	req->status = status;
	sem_post(&req->done);
}

static void flush_start(void *arg)
{
	struct flush_req *req = arg;
	struct tnd_io *io = req->io;
	io->type = TND_IO_FLUSH;
	io->reactor = req->reactor;
	io->cb = flush_done;
	io->cb_arg = req;
	int ret = tnd_volume_submit(req->vol, io);
	if (ret < 0)
		flush_done(io, ret);
}

int tnd_daemon_flush(struct tnd_daemon *d, struct tnd_daemon_dev *dev)
{
	struct flush_req req = { .vol = dev->vol, .reactor = dev->home };
	req.io = calloc(1, tnd_volume_io_size(dev->vol));
	if (!req.io)
		return -ENOMEM;
	sem_init(&req.done, 0, 0);
	tnd_daemon_run_on(dev->home, flush_start, &req);
	sem_wait(&req.done);
	sem_destroy(&req.done);
	free(req.io);
	if (req.status < 0 && req.status != -EROFS)
		tnd_err("tandemd", "device %s: flush failed: %s", dev->name, strerror(-req.status));
	return req.status;
}

int tnd_daemon_close_device(struct tnd_daemon *d, const char *name)
{
	struct tnd_daemon_dev *dev = tnd_daemon_find_dev(d, name);
	if (!dev)
		return -ENOENT;
	int ret = tnd_daemon_flush(d, dev);
	tnd_volume_destroy(dev->vol);
	free(dev->name);
	size_t i = (size_t)(dev - d->devs);
	memmove(&d->devs[i], &d->devs[i + 1], (d->nr_devs - i - 1) * sizeof(*d->devs));
	d->nr_devs--;
	return ret == -EROFS ? 0 : ret;
}

/* ---- stats ---- */

struct stats_req {
	struct tnd_volume *vol;
	json_t *out;
};

static void stats_collect(void *arg)
{
	struct stats_req *req = arg;
	tnd_volume_stats_json(req->vol, req->out);
}

/* The layers' counters on the home reactor (lsfs's are not atomics). */
json_t *tnd_daemon_device_stats(struct tnd_daemon *d, struct tnd_daemon_dev *dev)
{
	struct stats_req req = { .vol = dev->vol, .out = json_object() };
	if (!req.out)
		return NULL;
	tnd_daemon_run_on(dev->home, stats_collect, &req);
	json_t *s = req.out;

	/* The API's common fields, derived from what the layers report. */
	json_t *lsfs = json_object_get(s, "lsfs");
	json_int_t block = 4096;
	if (lsfs) {
		json_int_t mapped = json_integer_value(json_object_get(lsfs, "mapped_blocks"));
		json_object_set_new(s, "logical_bytes", json_integer(mapped * block));
		json_object_set(s, "logical_bytes_written", json_object_get(lsfs, "logical_bytes_written"));
		json_object_set(s, "stored_bytes", json_object_get(lsfs, "stored_bytes"));
		json_object_set(s, "compression_ratio", json_object_get(lsfs, "compression_ratio"));
		json_object_set(s, "dedup_ratio", json_object_get(lsfs, "dedup_ratio"));
	} else if (!json_object_get(s, "logical_bytes")) {
		json_object_set(s, "logical_bytes", json_object_get(s, "physical_bytes") ?
				json_object_get(s, "physical_bytes") : json_object_get(s, "size"));
	}
	if (!json_object_get(s, "physical_bytes"))
		json_object_set(s, "physical_bytes", json_object_get(s, "logical_bytes"));
	/* No dedup or compression outside lsfs: those ratios are 1. */
	if (!json_object_get(s, "dedup_ratio"))
		json_object_set_new(s, "dedup_ratio", json_real(1.0));
	if (!json_object_get(s, "compression_ratio"))
		json_object_set_new(s, "compression_ratio", json_real(1.0));
	return s;
}

/* ---- ACLs ---- */

int tnd_daemon_apply_acl(struct tnd_daemon *d, const char *iqn, const struct tnd_config_acl *a)
{
	struct tnd_target_chap chap, mutual;
	struct tnd_target_acl acl = {
		.initiator = a->initiator,
		.luns = a->luns,
		.nr_luns = (unsigned)a->nr_luns,
	};
	if (a->chap) {
		chap = (struct tnd_target_chap){ a->chap->user, a->chap->secret };
		acl.chap = &chap;
	}
	if (a->mutual_chap) {
		mutual = (struct tnd_target_chap){ a->mutual_chap->user, a->mutual_chap->secret };
		acl.mutual_chap = &mutual;
	}
	return tnd_target_server_set_acl(d->srv, iqn, &acl);
}
