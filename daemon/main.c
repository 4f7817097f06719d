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
 * The daemon's state lives in struct tnd_daemon (daemon.h) on main's stack, the one place
 * the project allows process-wide state.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "tnd_common.h"
#include "tnd_mgmt.h"
#include "tnd_reactor.h"
#include "tnd_target.h"
#include "tnd_volume.h"

#define RING_ENTRIES 1024
/* Hinted busy-poll window: about one loopback or LAN round trip of an
 * initiator that answers at once; measured in bench/results/2026-11-22-vm-perf-qd1.md. */
#define TND_BUSY_POLL_US_DEFAULT 30

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tandemd [OPTIONS]\n"
		"Serve tandem devices over iSCSI.\n\n"
		"  --data-dir DIR      data directory (default ./tandem-data, created)\n"
		"  --portal HOST:PORT  listen address, repeatable; IPv6 as [::1]:3260\n"
		"                      (default 127.0.0.1:3260, or the config's portals)\n"
		"  --config FILE       JSON configuration (default: DIR/config.json as the\n"
		"                      management API last saved it, else one 1 GiB demo LUN)\n"
		"  --mgmt HOST:PORT    management API address (default 127.0.0.1:9260;\n"
		"                      \"off\" to disable)\n"
		"  --mgmt-cert FILE    TLS certificate (PEM) for the API; needed off loopback\n"
		"  --mgmt-key FILE     TLS private key (PEM)\n"
		"  --reactors N        I/O threads (default: number of CPUs)\n"
		"  --busy-poll-us N    spin up to N us (0-1000) before a reactor sleeps, when\n"
		"                      its connections answer one command at a time (default\n"
		"                      " TND_STR(TND_BUSY_POLL_US_DEFAULT) "; 0: off): lower QD1 latency for CPU time\n"
		"  --busy-poll MODE    qd1 (default: as above) or always (before every sleep)\n"
		"  --pin-reactors      reactor i (and its io_uring workers) on the i-th CPU\n"
		"                      this process may use, not wherever the scheduler\n"
		"                      likes: for cores given to tandem alone\n"
		"  --log-level LEVEL   error, warn, info (default) or debug\n"
		"  --help              this text\n"
		"  --version           print the version\n\n"
		"See docs/config.md for the configuration file.\n");
}

static int parse_args(int argc, char **argv, struct tnd_daemon_opts *o)
{
	static const struct option longopts[] = {
		{ "data-dir", required_argument, NULL, 'd' },
		{ "portal", required_argument, NULL, 'p' },
		{ "config", required_argument, NULL, 'c' },
		{ "reactors", required_argument, NULL, 'r' },
		{ "busy-poll-us", required_argument, NULL, 'b' },
		{ "busy-poll", required_argument, NULL, 'B' },
		{ "pin-reactors", no_argument, NULL, 'P' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "mgmt", required_argument, NULL, 'm' },
		{ "mgmt-cert", required_argument, NULL, 'C' },
		{ "mgmt-key", required_argument, NULL, 'K' },
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
			if (o->nr_portals == TND_DAEMON_MAX_PORTALS) {
				fprintf(stderr, "tandemd: at most %d --portal options\n",
					TND_DAEMON_MAX_PORTALS);
				return 2;
			}
			o->portals[o->nr_portals++] = optarg;
			break;
		case 'c':
			o->config_path = optarg;
			break;
		case 'm':
			o->mgmt_bind = optarg;
			break;
		case 'C':
			o->mgmt_cert = optarg;
			break;
		case 'K':
			o->mgmt_key = optarg;
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
		case 'b': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (!*optarg || *end || n < 0 || n > 1000) {
				fprintf(stderr, "tandemd: --busy-poll-us: expected 0 to 1000, got \"%s\"\n",
					optarg);
				return 2;
			}
			o->busy_poll_us = (unsigned)n;
			break;
		}
		case 'P':
			o->pin_reactors = true;
			break;
		case 'B':
			if (strcmp(optarg, "qd1") == 0) {
				o->busy_poll_always = false;
			} else if (strcmp(optarg, "always") == 0) {
				o->busy_poll_always = true;
			} else {
				fprintf(stderr, "tandemd: --busy-poll: expected qd1 or always, got \"%s\"\n",
					optarg);
				return 2;
			}
			break;
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

static int make_data_dir(struct tnd_daemon *d)
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

static int open_devices(struct tnd_daemon *d)
{
	for (size_t i = 0; i < d->cfg->nr_devices; i++) {
		int ret = tnd_daemon_open_device(d, &d->cfg->devices[i]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- target ---- */

static int configure_target(struct tnd_daemon *d)
{
	struct tnd_target_server_opts so = {
		.reactors = d->reactors,
		.nr_reactors = d->nr_reactors,
		.state_dir = d->data_dir,
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
		for (size_t a = 0; a < t->nr_acls; a++) {
			ret = tnd_daemon_apply_acl(d, t->iqn, &t->acls[a]);
			if (ret < 0) {
				tnd_err("tandemd", "target %s ACL %s: %s", t->iqn, t->acls[a].initiator,
					strerror(-ret));
				return ret;
			}
		}
		if (!t->allow_any && t->nr_initiators == 0 && t->nr_acls == 0)
			tnd_warn("tandemd", "target %s admits no initiator (no allow_any_initiator, "
				 "no initiators)", t->iqn);
		for (size_t l = 0; l < t->nr_luns; l++) {
			ret = tnd_target_server_map_lun(d->srv, t->iqn, t->luns[l].lun,
							t->luns[l].device,
							tnd_daemon_find_dev(d, t->luns[l].device)->vol);
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
	struct tnd_daemon *d = arg;
	sem_post(&d->done);
}

static int start_reactors(struct tnd_daemon *d)
{
	d->nr_reactors = d->opts.nr_reactors;
	if (d->nr_reactors == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		d->nr_reactors = n > 0 ? (unsigned)n : 1;
	}
	d->reactors = calloc(d->nr_reactors, sizeof(*d->reactors));
	if (!d->reactors)
		return -ENOMEM;
	/* --pin-reactors: the CPUs this process may use (taskset, systemd's
	 * CPUAffinity=), in order; more reactors than CPUs wrap around. */
	int cpus[CPU_SETSIZE];
	int nr_cpus = 0;
	if (d->opts.pin_reactors) {
		cpu_set_t allowed;
		if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
			return -errno;
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &allowed))
				cpus[nr_cpus++] = c;
		if (nr_cpus == 0)
			return -EINVAL;
	}
	for (unsigned i = 0; i < d->nr_reactors; i++) {
		int ret = tnd_reactor_create(i, RING_ENTRIES, &d->reactors[i]);
		if (ret == 0) {
			if (nr_cpus) {
				int cpu = cpus[i % (unsigned)nr_cpus];
				tnd_reactor_set_cpu(d->reactors[i], cpu);
				tnd_info("tandemd", "reactor %u pinned to CPU %d", i, cpu);
			}
			if (d->opts.busy_poll_always)
				tnd_reactor_set_busy_poll(d->reactors[i], d->opts.busy_poll_us);
			else
				tnd_reactor_set_busy_poll_hinted(d->reactors[i], d->opts.busy_poll_us);
			ret = tnd_reactor_start(d->reactors[i]);
		}
		if (ret < 0) {
			tnd_err("tandemd", "reactor %u: %s", i, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static void stop_reactors(struct tnd_daemon *d)
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

/*
 * Where the configuration comes from: --config FILE when given; else the
 * document the management API last saved in the data directory; else the
 * embedded demo. All three are validated before anything is touched.
 */
static int load_config(struct tnd_daemon *d, char *err, size_t errlen)
{
	if (d->opts.config_path)
		return tnd_config_load(d->opts.config_path, &d->cfg, err, errlen);
	char saved[PATH_MAX];
	snprintf(saved, sizeof(saved), "%s/%s", d->opts.data_dir, TND_MGMT_CONFIG_FILE);
	if (access(saved, F_OK) == 0)
		return tnd_config_load(saved, &d->cfg, err, errlen);
	return tnd_config_default(&d->cfg);
}

int main(int argc, char **argv)
{
	struct tnd_daemon d = { .opts.busy_poll_us = TND_BUSY_POLL_US_DEFAULT };
	char err[512] = "";
	int ret = parse_args(argc, argv, &d.opts);
	if (ret)
		return ret;
	d.start_ns = tnd_now_ns();

	/* Validate everything before the disk is touched. */
	if (load_config(&d, err, sizeof(err))) {
		fprintf(stderr, "tandemd: invalid configuration: %s\n", err);
		return 1;
	}

	/* Signals go to sigwait in main only (threads created later inherit the
	 * mask); a closed socket is an error code, not a signal. */
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
	if (!d.opts.mgmt_bind || strcmp(d.opts.mgmt_bind, "off") != 0) {
		if (tnd_daemon_mgmt_start(&d, err, sizeof(err)) < 0) {
			tnd_err("tandemd", "management API: %s", err);
			goto out_stop_target;
		}
		tnd_info("tandemd", "management API on %s (token in %s/%s)",
			 d.opts.mgmt_bind ? d.opts.mgmt_bind : TND_MGMT_DEFAULT_BIND, d.data_dir,
			 TND_MGMT_TOKEN_FILE);
	}
	tnd_info("tandemd", "ready: %u reactor(s), %zu device(s), %zu target(s)", d.nr_reactors,
		 d.cfg->nr_devices, d.cfg->nr_targets);

	int sig;
	sigwait(&sigs, &sig);
	tnd_info("tandemd", "%s: stopping (draining in-flight commands)", strsignal(sig));
	/* The API first, so no change races the shutdown. */
	tnd_mgmt_destroy(d.mgmt);
	exit_code = 0;

out_stop_target:
	tnd_target_server_stop(d.srv, target_stopped, &d);
	sem_wait(&d.done);
	for (size_t i = 0; i < d.nr_devs; i++)
		if (tnd_daemon_flush(&d, &d.devs[i]) < 0 && exit_code == 0)
			exit_code = 1;
	if (exit_code == 0)
		tnd_info("tandemd", "stopped");
	else if (d.mgmt)
		tnd_err("tandemd", "stopped; a device failed its final flush");

out_target:
	tnd_target_server_destroy(d.srv);
out_volumes:
	while (d.nr_devs > 0) {
		struct tnd_daemon_dev *dev = &d.devs[--d.nr_devs];
		tnd_volume_destroy(dev->vol);
		free(dev->name);
	}
	free(d.devs);
out_reactors:
	stop_reactors(&d);
out_config:
	tnd_config_free(d.cfg);
	sem_destroy(&d.done);
	return exit_code;
}
