/*
 * tnd_mgmt.h — the management API: an HTTP/JSON server under /v1, its bearer
 * token, the persisted running configuration and the Prometheus exposition.
 *
 * Purpose. tandemd is managed over a small REST API (docs/api.md); tandemctl
 * and scripts with curl are its clients. This library is the whole server
 * side of that API except the state it manages: it parses and validates every
 * request completely, then calls one operation of a backend ops table that
 * the daemon implements by messaging its reactors. The library never touches
 * a volume, a target or a reactor itself, so it can be tested against an
 * in-memory backend (tests/unit/mgmt/) and the daemon can change underneath
 * it without the API changing.
 *
 * Request life. libmicrohttpd accepts the connection on its own thread (one
 * thread per connection, so a slow or stalled client holds only its own
 * thread). The route is matched and the token checked as soon as the headers
 * are in, before any body is read; the body is collected (at most
 * TND_MGMT_MAX_BODY bytes), parsed with Jansson and validated: unknown
 * fields, wrong types, invalid names and IQNs are a 400 that names the field.
 * Only then is the backend called, once. A mutating call that succeeds is
 * followed by config_snapshot and tnd_mgmt_persist_config, so
 * <data-dir>/config.json always holds the configuration the daemon runs.
 *
 * Threading. Backend ops are called on libmicrohttpd's connection threads,
 * never concurrently: the library holds one mutex (inside struct tnd_mgmt)
 * around each op and, for a change, around the op, the snapshot and the file
 * write together, so the file on disk never goes back in time. An op may
 * block (it waits for the reactors' answer); other connections keep being
 * accepted and read while it does, and queue on the mutex only for their own
 * backend call (GET /v1/health and /v1/version call no op and never wait).
 * tnd_mgmt_destroy stops the server and waits for every connection thread;
 * no op runs after it returns.
 *
 * Backend contract. Every op returns 0 or -errno and is all-or-nothing: on
 * error nothing changed. The library maps errors to HTTP statuses:
 *   -ENOENT -> 404, -EEXIST and -EBUSY -> 409, -EINVAL and -ERANGE -> 400,
 *   -ENOSPC -> 507, -EOPNOTSUPP -> 501, anything else -> 500.
 * Ops that take a struct tnd_mgmt_error may fill it (tnd_mgmt_error_set) with
 * a message and the request field it concerns; otherwise strerror is used.
 * Objects handed to an op are borrowed for the call; output objects (@out)
 * are created by the library, empty, and filled by the op.
 *
 * Secrets. CHAP secrets are write-only: the library removes every "secret"
 * member from every JSON it sends, whatever the backend put there, and never
 * logs a request body. config_snapshot must include them (the daemon needs
 * them to restore CHAP at start), which is why config.json is mode 0600 in a
 * 0700 directory.
 *
 * Ownership. tnd_mgmt_create returns an owned handle freed with
 * tnd_mgmt_destroy; the opts, the ops table, the device type table and every
 * string in them are borrowed and must outlive the handle.
 */
#ifndef TND_MGMT_H
#define TND_MGMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define TND_MGMT_DEFAULT_BIND "127.0.0.1:9260"
#define TND_MGMT_MAX_BODY (1u << 20)      /* larger request bodies are a 400 */
#define TND_MGMT_TOKEN_BYTES 32           /* random bytes; the file holds them as hex */
#define TND_MGMT_TOKEN_LEN (2 * TND_MGMT_TOKEN_BYTES)
#define TND_MGMT_TOKEN_FILE "api.token"
#define TND_MGMT_CONFIG_FILE "config.json"
#define TND_MGMT_MAX_LUN 16383
#define TND_MGMT_CHAP_SECRET_MIN 12
#define TND_MGMT_CHAP_SECRET_MAX 255

struct tnd_mgmt;
struct tnd_mgmt_req;

/* What a failed backend op says about the failure; both strings may be empty. */
struct tnd_mgmt_error {
	char message[256];
	char field[96];   /* request field it concerns ("size", "device"), or "" */
};

/* Fill @err (if not NULL) with a field name (may be NULL) and a message. */
void tnd_mgmt_error_set(struct tnd_mgmt_error *err, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The backend: what the daemon implements. JSON shapes are in docs/api.md;
 * the summary here is what the library guarantees before each call.
 *
 * device_list(ctx, out)      @out: empty array; append one object per device
 *                            (same members as device_get, "stats" optional).
 * device_get(ctx, name, out) @out: empty object; fill "name", "type", "size"
 *                            (integer bytes), "block_size", the type's options,
 *                            "state" (string) and "stats" (object with at least
 *                            logical_bytes, physical_bytes, dedup_ratio,
 *                            compression_ratio, read_ops, write_ops,
 *                            read_bytes, write_bytes). -ENOENT if none.
 * device_create(ctx, spec)   @spec: validated object: "name" (valid), "type"
 *                            (one of tnd_mgmt_opts.device_types), "block_size"
 *                            (512 or 4096, filled in), "size" (integer bytes, a
 *                            multiple of block_size, present when the type
 *                            requires it) and only that type's options with
 *                            the declared kinds (sizes as integer bytes).
 *                            -EEXIST if the name is taken.
 * device_update(ctx, name, changes)
 *                            @changes: validated non-empty object with "size"
 *                            (larger than the current size, a multiple of the
 *                            block size) and/or options declared .updatable.
 *                            -ENOENT if none.
 * device_delete(ctx, name, force)
 *                            -ENOENT; -EBUSY while mapped as a LUN unless
 *                            @force, in which case it is unmapped everywhere
 *                            and deleted.
 * target_list(ctx, out)      @out: empty array of target objects.
 * target_get(ctx, iqn, out)  @out: empty object: "iqn", "alias" (if any),
 *                            "allow_any_initiator", "luns" (array as lun_list),
 *                            "acls" (array as acl_list). -ENOENT.
 * target_create(ctx, spec)   @spec: "iqn" (valid), optional "alias" (<= 255
 *                            bytes), "allow_any_initiator" (filled in, false
 *                            by default: a new target admits nobody). -EEXIST.
 * target_delete(ctx, iqn)    removes its LUN maps and ACLs, ends its sessions.
 * lun_list(ctx, iqn, out)    @out: empty array of {"lun": n, "device": name}.
 * lun_map(ctx, iqn, lun, device)
 *                            -ENOENT (no target; or no device, with field
 *                            "device"), -EEXIST if @lun is already mapped.
 * lun_unmap(ctx, iqn, lun)   -ENOENT if the target or the LUN is not there.
 * acl_list(ctx, iqn, out)    @out: empty array of {"initiator", "luns" (absent
 *                            = every LUN of the target), "chap": {"user"},
 *                            "mutual_chap": {"user"}}; secrets may be left in,
 *                            the library strips them.
 * acl_add(ctx, iqn, acl)     @acl: "initiator" (valid IQN), optional "luns"
 *                            (sorted distinct integers 0..16383), optional
 *                            "chap" {"user", "secret"} and "mutual_chap" (only
 *                            with chap; secrets 12..255 bytes, not equal).
 *                            -ENOENT, -EEXIST if the initiator has an ACL.
 * acl_remove(ctx, iqn, initiator)   -ENOENT.
 * session_list(ctx, out)     @out: empty array of session objects, each with
 *                            "id" (string of 1-64 of A-Z a-z 0-9 . _ : -, the
 *                            handle session_kick takes), "target",
 *                            "initiator", and what else the backend knows
 *                            (address, connections, login time).
 * session_kick(ctx, id)      end the session (a logout request or a close).
 * stats(ctx, out)            @out: empty object: daemon-wide statistics, the
 *                            source of /v1/stats and /metrics (docs/api.md).
 * config_snapshot(ctx, out)  *@out = new reference to the running
 *                            configuration as a docs/config.md document with
 *                            "acls" in each target, secrets included.
 */
struct tnd_mgmt_backend_ops {
	int (*device_list)(void *ctx, json_t *out);
	int (*device_get)(void *ctx, const char *name, json_t *out);
	int (*device_create)(void *ctx, const json_t *spec, struct tnd_mgmt_error *err);
	int (*device_update)(void *ctx, const char *name, const json_t *changes,
			     struct tnd_mgmt_error *err);
	int (*device_delete)(void *ctx, const char *name, bool force, struct tnd_mgmt_error *err);

	int (*target_list)(void *ctx, json_t *out);
	int (*target_get)(void *ctx, const char *iqn, json_t *out);
	int (*target_create)(void *ctx, const json_t *spec, struct tnd_mgmt_error *err);
	int (*target_delete)(void *ctx, const char *iqn, struct tnd_mgmt_error *err);

	int (*lun_list)(void *ctx, const char *iqn, json_t *out);
	int (*lun_map)(void *ctx, const char *iqn, uint32_t lun, const char *device,
		       struct tnd_mgmt_error *err);
	int (*lun_unmap)(void *ctx, const char *iqn, uint32_t lun, struct tnd_mgmt_error *err);

	int (*acl_list)(void *ctx, const char *iqn, json_t *out);
	int (*acl_add)(void *ctx, const char *iqn, const json_t *acl, struct tnd_mgmt_error *err);
	int (*acl_remove)(void *ctx, const char *iqn, const char *initiator,
			  struct tnd_mgmt_error *err);

	int (*session_list)(void *ctx, json_t *out);
	int (*session_kick)(void *ctx, const char *id, struct tnd_mgmt_error *err);

	int (*stats)(void *ctx, json_t *out);
	int (*config_snapshot)(void *ctx, json_t **out);
};

/*
 * Device types and their options, declared by the backend so that the
 * library can validate a device completely before calling it. The common
 * fields (name, type, size, block_size) are the library's; everything else
 * in a device body must be an option of its type.
 */
enum tnd_mgmt_opt_kind {
	TND_MGMT_OPT_BOOL,
	TND_MGMT_OPT_STRING,    /* up to 4095 bytes, or one of .choices */
	TND_MGMT_OPT_SIZE,      /* bytes or "10GiB"; handed on as integer bytes */
	TND_MGMT_OPT_UINT,      /* a non-negative integer */
};

struct tnd_mgmt_dev_option {
	const char *key;
	enum tnd_mgmt_opt_kind kind;
	const char *const *choices;     /* STRING: NULL-terminated allowed values, or NULL */
	bool updatable;                 /* may be changed by PATCH */
};

struct tnd_mgmt_dev_type {
	const char *name;
	bool size_required;                       /* false: the backend may size it (passthrough) */
	const struct tnd_mgmt_dev_option *options; /* terminated by { .key = NULL } */
};

struct tnd_mgmt_opts {
	const char *bind;           /* "HOST:PORT", numeric, "[::1]:9260" for IPv6;
				     * NULL = TND_MGMT_DEFAULT_BIND; port 0 = any free port */
	const char *data_dir;       /* holds api.token and config.json; must exist */
	const char *tls_cert_file;  /* PEM; both or neither; required off loopback */
	const char *tls_key_file;
	const struct tnd_mgmt_backend_ops *ops;
	void *ctx;                  /* passed to every op */
	const struct tnd_mgmt_dev_type *device_types;  /* terminated by { .name = NULL };
							* the first is the default type */
};

/*
 * Load or create the token, listen and start serving. Refuses (-EINVAL, with
 * a message in @err) a bind address that is not loopback when no TLS
 * certificate is given, and a token file readable by group or others
 * (-EACCES). Returns 0 and an owned handle in *@out, or -errno.
 */
int tnd_mgmt_create(const struct tnd_mgmt_opts *opts, struct tnd_mgmt **out, char *err,
		    size_t errlen);

/* Stop accepting, wait for in-flight requests, free. NULL is a no-op. */
void tnd_mgmt_destroy(struct tnd_mgmt *m);

/* The TCP port actually bound (useful with port 0). */
uint16_t tnd_mgmt_port(const struct tnd_mgmt *m);

/*
 * Read <data_dir>/api.token, or create it (32 bytes from getrandom as hex,
 * O_CREAT|O_EXCL, mode 0600) if it does not exist. A file with any group or
 * other permission bit, not a regular file, or not holding exactly one token
 * is refused with a message in @err. @token receives TND_MGMT_TOKEN_LEN hex
 * digits and a NUL (@len >= TND_MGMT_TOKEN_LEN + 1). Returns 0 or -errno.
 */
int tnd_mgmt_token_load_or_create(const char *data_dir, char *token, size_t len, char *err,
				  size_t errlen);

/*
 * Write @cfg (borrowed) to <data_dir>/config.json atomically: a temp file in
 * the same directory (mode 0600), fsync, rename over the old file, fsync the
 * directory. After a crash the file holds either the old or the new
 * document, never a mix. Returns 0 or -errno.
 */
int tnd_mgmt_persist_config(const char *data_dir, const json_t *cfg);

/*
 * Build the Prometheus text exposition (format 0.0.4) from a stats object as
 * the backend's stats op fills it (docs/api.md). Returns an owned string
 * (free()) or NULL on allocation failure.
 */
char *tnd_mgmt_metrics_text(const json_t *stats);

/*
 * The router, for tests and docs: every route the server answers. Handlers
 * are internal; what is visible is the method, the path pattern ({name}
 * segments match one path segment) and whether the token is required.
 */
struct tnd_mgmt_route {
	const char *method;
	const char *pattern;
	bool public;    /* true: no token needed (only GET /v1/health) */
	bool mutates;   /* true: success persists the configuration */
	bool no_backend; /* true: calls no op, so runs without the backend mutex
			  * (health stays quick while a slow op runs) */
	int (*handler)(struct tnd_mgmt_req *req);
};

const struct tnd_mgmt_route *tnd_mgmt_routes(size_t *count);

#endif
