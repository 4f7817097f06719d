/*
 * config.h — tandemd's declarative configuration: devices, targets, LUN
 * maps, portals. See docs/config.md for the file format.
 *
 * The configuration is parsed and validated completely before anything
 * touches the disk: a bad file stops start-up with one message that names
 * the field and why, and nothing is created or opened. When no file is
 * given, an embedded default (one 1 GiB thin demo device on one target open
 * to any initiator) is used, so `tandemd` with no arguments serves a LUN.
 *
 * Ownership: tnd_config_* functions return a struct tnd_config that the
 * caller owns and frees with tnd_config_free(); all strings inside are owned
 * by it. Single-threaded (main, at start-up).
 */
#ifndef TND_DAEMON_CONFIG_H
#define TND_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define TND_DEMO_IQN "iqn.2026-11.io.tandem:demo"

enum tnd_dev_type {
	TND_DEV_FLAT,
	TND_DEV_PASSTHROUGH,
	TND_DEV_LSFS,
};

/* "compress_mode" (values as lsfs's enum tnd_lsfs_compress_mode). */
#define TND_CONFIG_CMODE_INLINE 0
#define TND_CONFIG_CMODE_ADAPTIVE 1
#define TND_CONFIG_CMODE_DEFERRED 2
extern const char *const tnd_config_cmode_names[]; /* by value, NULL-terminated */
/* "dedup_warmup_mbps": default and most (as lsfs's TND_LSFS_WARMUP_MBPS_*). */
#define TND_CONFIG_WARMUP_MBPS_DEFAULT 200u
#define TND_CONFIG_WARMUP_MBPS_MAX 100000u

struct tnd_config_device {
	char *name;
	enum tnd_dev_type type;
	char *path;             /* absolute after tnd_config_resolve() */
	uint64_t size;          /* bytes; 0 = whole device (passthrough only) */
	uint32_t block_size;
	bool read_only;
	/* lsfs only */
	uint64_t capacity;      /* backing bytes; 0 = size + 1/4 + 64 MiB */
	bool write_cache;       /* WCE=1: acked writes stable after FLUSH/FUA */
	bool compress;          /* lsfs: LZ4 for new writes ("compress": "lz4") */
	int compress_mode;      /* lsfs: when LZ4 runs, TND_CONFIG_CMODE_*; default adaptive */
	bool dedup;             /* lsfs: inline dedup of new writes */
	uint64_t dedup_index_bytes; /* lsfs: the fingerprint index's RAM budget; 0: default */
	uint32_t dedup_warmup_mbps; /* lsfs: index warm-up rate under load, MB/s; 0: unlimited */
	bool direct_io;         /* lsfs: write the log with O_DIRECT (flat's direct_writes) */
};

struct tnd_config_lun {
	uint64_t lun;
	char *device;
};

struct tnd_config_chap {
	char *user;
	char *secret;           /* 12-255 bytes; never logged */
};

struct tnd_config_acl {
	char *initiator;
	uint64_t *luns;         /* NULL: every LUN of the target */
	size_t nr_luns;
	struct tnd_config_chap *chap;        /* NULL: no CHAP */
	struct tnd_config_chap *mutual_chap; /* NULL: no mutual CHAP */
};

struct tnd_config_target {
	char *iqn;
	char *alias;
	bool allow_any;
	char **initiators;
	size_t nr_initiators;
	struct tnd_config_lun *luns;
	size_t nr_luns;
	struct tnd_config_acl *acls;
	size_t nr_acls;
};

struct tnd_config {
	json_t *doc;            /* the document it was parsed from (a reference) */
	bool has_secrets;       /* some ACL carries a CHAP secret */
	char **portals;
	size_t nr_portals;
	struct tnd_config_device *devices;
	size_t nr_devices;
	struct tnd_config_target *targets;
	size_t nr_targets;
};

/*
 * Parse and validate a JSON document. On error returns -EINVAL and writes
 * a message naming the field into @err.
 */
int tnd_config_parse(const char *json_text, struct tnd_config **out, char *err, size_t errlen);

/* Validate a document already parsed; takes a reference of its own. */
int tnd_config_from_json(json_t *root, struct tnd_config **out, char *err, size_t errlen);

/*
 * Read @path and parse it; errors name the file and the field. A file that
 * holds CHAP secrets must not be readable by group or others (mode 0600):
 * such a file is refused with -EACCES.
 */
int tnd_config_load(const char *path, struct tnd_config **out, char *err, size_t errlen);

/* The embedded default: device "demo" (lsfs, 1 GiB, thin) as LUN 0 of TND_DEMO_IQN. */
int tnd_config_default(struct tnd_config **out);

/* Make relative device paths absolute under @data_dir; fill default paths. */
int tnd_config_resolve(struct tnd_config *cfg, const char *data_dir, char *err, size_t errlen);

void tnd_config_free(struct tnd_config *cfg);

/* Validation helpers, shared with the API later. */
bool tnd_config_name_valid(const char *name);
bool tnd_config_iqn_valid(const char *iqn);

#endif
