/*
 * daemon.h — tandemd's own state and the pieces main.c, devices.c and
 * backend.c share. Internal to daemon/.
 *
 * struct tnd_daemon lives on main()'s stack: the one place the project
 * keeps process-wide state. Its configuration (cfg, with the JSON document
 * it came from) and its device list change only on two threads, never at
 * once: main during start-up and shutdown, and the management API's backend
 * ops in between (which libmicrohttpd runs one at a time under the mgmt
 * library's mutex). Reactors never read them: they see volumes and the
 * target's own tables.
 */
#ifndef TND_DAEMON_H
#define TND_DAEMON_H

#include <limits.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define TND_DAEMON_MAX_PORTALS 16

struct tnd_reactor;
struct tnd_volume;
struct tnd_target_server;
struct tnd_mgmt;

struct tnd_daemon_opts {
	const char *data_dir;
	const char *config_path;
	const char *portals[TND_DAEMON_MAX_PORTALS];
	unsigned nr_portals;
	unsigned nr_reactors;
	unsigned busy_poll_us;          /* reactor busy-poll window, 0: off */
	bool busy_poll_always;          /* spin before every sleep, not only at QD1 */
	bool pin_reactors;              /* reactor i on the i-th allowed CPU */
	const char *mgmt_bind;          /* NULL: 127.0.0.1:9260; "off": no API */
	const char *mgmt_cert;
	const char *mgmt_key;
};

/* A device that is open: its volume stack and where it lives. */
struct tnd_daemon_dev {
	char *name;
	struct tnd_volume *vol;
	struct tnd_reactor *home;       /* runs stats and resize for this stack */
};

struct tnd_daemon {
	struct tnd_daemon_opts opts;
	struct tnd_config *cfg;         /* the running configuration */
	char data_dir[PATH_MAX];
	struct tnd_reactor **reactors;
	unsigned nr_reactors;
	unsigned next_home;             /* round-robin home reactor for new devices */
	struct tnd_daemon_dev *devs;
	size_t nr_devs;
	struct tnd_target_server *srv;
	struct tnd_mgmt *mgmt;
	uint64_t start_ns;
	sem_t done;
};

/* devices.c */

/* Open @dev's volume stack and add it to d->devs. 0 or -errno (logged). */
int tnd_daemon_open_device(struct tnd_daemon *d, const struct tnd_config_device *dev);

struct tnd_daemon_dev *tnd_daemon_find_dev(struct tnd_daemon *d, const char *name);

/* Flush, destroy and forget device @name. Returns the flush status. */
int tnd_daemon_close_device(struct tnd_daemon *d, const char *name);

/* Flush a volume through its home reactor and wait. 0 or -errno. */
int tnd_daemon_flush(struct tnd_daemon *d, struct tnd_daemon_dev *dev);

/* Run fn(arg) on @r's thread and wait for it (from a non-reactor thread). */
void tnd_daemon_run_on(struct tnd_reactor *r, void (*fn)(void *arg), void *arg);

/* The device's stats object, as GET /v1/devices/{name} shows it. */
json_t *tnd_daemon_device_stats(struct tnd_daemon *d, struct tnd_daemon_dev *dev);

/* Apply a target's ACLs from the configuration to the running target. */
int tnd_daemon_apply_acl(struct tnd_daemon *d, const char *iqn, const struct tnd_config_acl *acl);

/* backend.c: the management API over this daemon. */
int tnd_daemon_mgmt_start(struct tnd_daemon *d, char *err, size_t errlen);

#endif
