/*
 * tandemd — wires the modules together from the configuration and runs
 * until SIGINT or SIGTERM.
 *
 * Start-up order, visible here on purpose: parse flags, load and validate
 * the configuration (nothing touched on disk before it is known good),
 * create the data directory, start one reactor per core, open each device's
 * volume stack, configure the target and start it. Shutdown runs it
 * backwards: stop accepting and drain in-flight commands, flush every
 * device, close the volumes, stop the reactors.
 *
 * The main thread does no I/O after start-up; it waits for a signal with
 * sigwait (the signals are blocked in every thread so they arrive here).
 * The daemon's state lives in struct daemon on main's stack, the one place
 * the project allows process-wide state.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "tnd_common.h"
#include "tnd_flat.h"
#include "tnd_lsfs.h"
#include "tnd_reactor.h"
#include "tnd_target.h"
#include "tnd_volume.h"

#define MAX_PORTALS 16
#define RING_ENTRIES 1024

struct daemon_opts {
	const char *data_dir;
	const char *config_path;
	const char *portals[MAX_PORTALS];
	unsigned nr_portals;
	unsigned nr_reactors;
};

struct daemon {
	struct daemon_opts opts;
	struct tnd_config *cfg;
	char data_dir[PATH_MAX];
	struct tnd_reactor **reactors;
	unsigned nr_reactors;
	struct tnd_volume **volumes;    /* parallel to cfg->devices */
	unsigned next_home;             /* round-robin home reactor for lsfs */
	struct tnd_target_server *srv;
	sem_t done;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tandemd [OPTIONS]\n"
		"Serve tandem devices over iSCSI.\n\n"
		"  --data-dir DIR      data directory (default ./tandem-data, created)\n"
		"  --portal HOST:PORT  listen address, repeatable; IPv6 as [::1]:3260\n"
		"                      (default 127.0.0.1:3260, or the config's portals)\n"
		"  --config FILE       JSON configuration (default: one 1 GiB demo LUN)\n"
		"  --reactors N        I/O threads (default: number of CPUs)\n"
		"  --log-level LEVEL   error, warn, info (default) or debug\n"
		"  --help              this text\n"
		"  --version           print the version\n\n"
		"See docs/config.md for the configuration file.\n");
}

static int parse_args(int argc, char **argv, struct daemon_opts *o)
{
	static const struct option longopts[] = {
		{ "data-dir", required_argument, NULL, 'd' },
		{ "portal", required_argument, NULL, 'p' },
		{ "config", required_argument, NULL, 'c' },
		{ "reactors", required_argument, NULL, 'r' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	o->data_dir = "./tandem-data";
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o->data_dir = optarg;
			break;
		case 'p':
			if (o->nr_portals == MAX_PORTALS) {
				fprintf(stderr, "tandemd: at most %d --portal options\n", MAX_PORTALS);
				return 2;
			}
			o->portals[o->nr_portals++] = optarg;
			break;
		case 'c':
			o->config_path = optarg;
			break;
		case 'r': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256) {
				fprintf(stderr, "tandemd: --reactors: expected 1 to 256, got \"%s\"\n", optarg);
				return 2;
			}
			o->nr_reactors = (unsigned)n;
			break;
		}
		case 'l': {
			enum tnd_log_level lvl;
			if (tnd_log_parse_level(optarg, &lvl)) {
				fprintf(stderr, "tandemd: --log-level: expected error, warn, info or debug\n");
				return 2;
			}
			tnd_log_set_level(lvl);
			break;
		}
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("tandemd %s\n", TND_VERSION);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tandemd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return 0;
}

static int make_data_dir(struct daemon *d)
{
	if (mkdir(d->opts.data_dir, 0700) < 0 && errno != EEXIST) {
		tnd_err("tandemd", "cannot create data directory %s: %s", d->opts.data_dir,
			strerror(errno));
		return -errno;
	}
	if (!realpath(d->opts.data_dir, d->data_dir)) {
		tnd_err("tandemd", "data directory %s: %s", d->opts.data_dir, strerror(errno));
		return -errno;
	}
	struct stat st;
	if (stat(d->data_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		tnd_err("tandemd", "data directory %s is not a directory", d->data_dir);
		return -ENOTDIR;
	}
	return 0;
}

/* ---- device stacks, by type ---- */

typedef int (*open_fn)(struct daemon *d, const struct tnd_config_device *dev,
		       struct tnd_volume **out);

static int open_flat(struct daemon *d, const struct tnd_config_device *dev, struct tnd_volume **out)
{
	struct tnd_flat_opts o = {
		.path = dev->path,
		.size = dev->size,
		.block_size = dev->block_size,
		.read_only = dev->read_only,
	};
	return tnd_flat_open(&o, out);
}

static int open_passthrough(struct daemon *d, const struct tnd_config_device *dev,
			    struct tnd_volume **out)
{
	struct tnd_flat_opts o = {
		.path = dev->path,
		.size = dev->size,
		.block_size = dev->block_size,
		.passthrough = true,
		.read_only = dev->read_only,
	};
	return tnd_flat_open(&o, out);
}

/*
 * lsfs(flat(file)): the backing file is sparse and sized to the capacity,
 * so the promise (size) and the physical space used both stay thin. Each
 * lsfs device gets a home reactor, spread round-robin.
 */
static int open_lsfs(struct daemon *d, const struct tnd_config_device *dev, struct tnd_volume **out)
{
	struct tnd_flat_opts fo = {
		.path = dev->path,
		.size = dev->capacity,
		.block_size = 512,
		.read_only = dev->read_only,
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
	lo.create_if_blank = !dev->read_only;
	ret = tnd_lsfs_open(backing, d->reactors[d->next_home++ % d->nr_reactors], &lo, out);
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
	[TND_DEV_PASSTHROUGH] = open_passthrough,
	[TND_DEV_LSFS] = open_lsfs,
};

static int open_devices(struct daemon *d)
{
	d->volumes = calloc(d->cfg->nr_devices + 1, sizeof(*d->volumes));
	if (!d->volumes)
		return -ENOMEM;
	for (size_t i = 0; i < d->cfg->nr_devices; i++) {
		const struct tnd_config_device *dev = &d->cfg->devices[i];
		if ((size_t)dev->type >= TND_ARRAY_SIZE(dev_open) || !dev_open[dev->type]) {
			tnd_err("tandemd", "device %s: type not available in this build", dev->name);
			return -EOPNOTSUPP;
		}
		int ret = dev_open[dev->type](d, dev, &d->volumes[i]);
		if (ret < 0) {
			tnd_err("tandemd", "device %s: cannot open %s: %s", dev->name, dev->path,
				strerror(-ret));
			return ret;
		}
		struct tnd_volume_info info;
		tnd_volume_info(d->volumes[i], &info);
		tnd_info("tandemd", "device %s: %s, %llu MiB, %u-byte blocks, %s", dev->name,
			 d->volumes[i]->ops->type,
			 (unsigned long long)(info.num_blocks * info.block_size >> 20),
			 info.block_size, dev->path);
	}
	return 0;
}

static struct tnd_volume *find_volume(struct daemon *d, const char *name)
{
	for (size_t i = 0; i < d->cfg->nr_devices; i++)
		if (strcmp(d->cfg->devices[i].name, name) == 0)
			return d->volumes[i];
	return NULL;
}

/* ---- flushing devices at shutdown, on reactor 0 ---- */

struct flush_req {
	struct tnd_msg msg;
	struct tnd_volume *vol;
	struct tnd_reactor *reactor;
	struct tnd_io *io;
	int status;
	sem_t *done;
};

static void flush_done(struct tnd_io *io, int status)
{
	struct flush_req *req = io->cb_arg;
	req->status = status;
	sem_post(req->done);
}

static void flush_start(struct tnd_msg *m)
{
	struct flush_req *req = tnd_container_of(m, struct flush_req, msg);
	struct tnd_io *io = req->io;
	io->type = TND_IO_FLUSH;
	io->reactor = req->reactor;
	io->cb = flush_done;
	io->cb_arg = req;
	int ret = tnd_volume_submit(req->vol, io);
	if (ret < 0)
		flush_done(io, ret);
}

static int flush_volume(struct daemon *d, const char *name, struct tnd_volume *vol)
{
	struct flush_req req = { .msg.fn = flush_start, .vol = vol, .reactor = d->reactors[0],
				 .done = &d->done };
	req.io = calloc(1, tnd_volume_io_size(vol));
	if (!req.io)
		return -ENOMEM;
	tnd_reactor_send(d->reactors[0], &req.msg);
	sem_wait(&d->done);
	free(req.io);
	if (req.status < 0 && req.status != -EROFS)
		tnd_err("tandemd", "device %s: final flush failed: %s", name, strerror(-req.status));
	return req.status;
}

/* ---- target ---- */

static int configure_target(struct daemon *d)
{
	struct tnd_target_server_opts so = {
		.reactors = d->reactors,
		.nr_reactors = d->nr_reactors,
	};
	int ret = tnd_target_server_create(&so, &d->srv);
	if (ret < 0)
		return ret;

	const char *const *portals = d->opts.portals;
	size_t nr = d->opts.nr_portals;
	static const char *const default_portal[] = { "127.0.0.1:3260" };
	if (nr == 0 && d->cfg->nr_portals) {
		portals = (const char *const *)d->cfg->portals;
		nr = d->cfg->nr_portals;
	} else if (nr == 0) {
		portals = default_portal;
		nr = 1;
	}
	for (size_t i = 0; i < nr; i++) {
		ret = tnd_target_server_add_portal(d->srv, portals[i]);
		if (ret < 0) {
			tnd_err("tandemd", "portal %s: %s", portals[i],
				ret == -EADDRINUSE ? "address already in use" : strerror(-ret));
			return ret;
		}
		tnd_info("tandemd", "listening on %s", portals[i]);
	}

	for (size_t i = 0; i < d->cfg->nr_targets; i++) {
		const struct tnd_config_target *t = &d->cfg->targets[i];
		ret = tnd_target_server_add_target(d->srv, t->iqn, t->alias, t->allow_any,
						   (const char *const *)t->initiators,
						   (unsigned)t->nr_initiators);
		if (ret < 0) {
			tnd_err("tandemd", "target %s: %s", t->iqn, strerror(-ret));
			return ret;
		}
		if (!t->allow_any && t->nr_initiators == 0)
			tnd_warn("tandemd", "target %s admits no initiator (no allow_any_initiator, "
				 "no initiators)", t->iqn);
		for (size_t l = 0; l < t->nr_luns; l++) {
			ret = tnd_target_server_map_lun(d->srv, t->iqn, t->luns[l].lun,
							t->luns[l].device,
							find_volume(d, t->luns[l].device));
			if (ret < 0) {
				tnd_err("tandemd", "target %s LUN %llu: %s", t->iqn,
					(unsigned long long)t->luns[l].lun, strerror(-ret));
				return ret;
			}
		}
		tnd_info("tandemd", "target %s: %zu LUN(s)%s", t->iqn, t->nr_luns,
			 t->allow_any ? ", any initiator" : "");
	}
	return tnd_target_server_start(d->srv);
}

static void target_stopped(void *arg)
{
	struct daemon *d = arg;
	sem_post(&d->done);
}

static int start_reactors(struct daemon *d)
{
	d->nr_reactors = d->opts.nr_reactors;
	if (d->nr_reactors == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		d->nr_reactors = n > 0 ? (unsigned)n : 1;
	}
	d->reactors = calloc(d->nr_reactors, sizeof(*d->reactors));
	if (!d->reactors)
		return -ENOMEM;
	for (unsigned i = 0; i < d->nr_reactors; i++) {
		int ret = tnd_reactor_create(i, RING_ENTRIES, &d->reactors[i]);
		if (ret == 0)
			ret = tnd_reactor_start(d->reactors[i]);
		if (ret < 0) {
			tnd_err("tandemd", "reactor %u: %s", i, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static void stop_reactors(struct daemon *d)
{
	for (unsigned i = 0; i < d->nr_reactors && d->reactors; i++) {
		if (!d->reactors[i])
			continue;
		tnd_reactor_stop(d->reactors[i]);
		tnd_reactor_join(d->reactors[i]);
		tnd_reactor_destroy(d->reactors[i]);
	}
	free(d->reactors);
}

int main(int argc, char **argv)
{
	struct daemon d = { 0 };
	char err[512];
	int ret = parse_args(argc, argv, &d.opts);
	if (ret)
		return ret;

	/* Validate everything before the disk is touched. */
	if (d.opts.config_path)
		ret = tnd_config_load(d.opts.config_path, &d.cfg, err, sizeof(err));
	else
		ret = tnd_config_default(&d.cfg);
	if (ret) {
		fprintf(stderr, "tandemd: invalid configuration: %s\n", err);
		return 1;
	}

	/* Signals go to sigwait in main only; a closed socket is an error code, not a signal. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	sem_init(&d.done, 0, 0);

	int exit_code = 1;
	if (make_data_dir(&d) < 0)
		goto out_config;
	if (tnd_config_resolve(d.cfg, d.data_dir, err, sizeof(err)) < 0) {
		fprintf(stderr, "tandemd: %s\n", err);
		goto out_config;
	}
	tnd_info("tandemd", "tandemd %s starting, data directory %s", TND_VERSION, d.data_dir);
	if (start_reactors(&d) < 0)
		goto out_reactors;
	if (open_devices(&d) < 0)
		goto out_volumes;
	if (configure_target(&d) < 0)
		goto out_target;
	tnd_info("tandemd", "ready: %u reactor(s), %zu device(s), %zu target(s)", d.nr_reactors,
		 d.cfg->nr_devices, d.cfg->nr_targets);

	int sig;
	sigwait(&sigs, &sig);
	tnd_info("tandemd", "%s: stopping (draining in-flight commands)", strsignal(sig));
	tnd_target_server_stop(d.srv, target_stopped, &d);
	sem_wait(&d.done);

	exit_code = 0;
	for (size_t i = 0; i < d.cfg->nr_devices; i++)
		if (d.volumes[i] && flush_volume(&d, d.cfg->devices[i].name, d.volumes[i]) < 0)
			exit_code = 1;
	tnd_info("tandemd", "stopped%s", exit_code ? " (a device failed its final flush)" : "");

out_target:
	tnd_target_server_destroy(d.srv);
out_volumes:
	for (size_t i = 0; d.volumes && i < d.cfg->nr_devices; i++)
		tnd_volume_destroy(d.volumes[i]);
	free(d.volumes);
out_reactors:
	stop_reactors(&d);
out_config:
	tnd_config_free(d.cfg);
	sem_destroy(&d.done);
	return exit_code;
}
