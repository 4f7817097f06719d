/*
 * fixture.c — the in-memory backend; see fixture.h. Every op checks all its
 * preconditions before it changes the model, as the real backend must.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"

static const char *const compress_choices[] = { "none", "lz4", NULL };
static const char *const cmode_choices[] = { "inline", "adaptive", "deferred", NULL };

static const struct tnd_mgmt_dev_option lsfs_options[] = {
	{ .key = "path", .kind = TND_MGMT_OPT_STRING },
	{ .key = "dedup", .kind = TND_MGMT_OPT_BOOL, .updatable = true },
	{ .key = "compress", .kind = TND_MGMT_OPT_STRING, .choices = compress_choices,
	  .updatable = true },
	{ .key = "compress_mode", .kind = TND_MGMT_OPT_STRING, .choices = cmode_choices,
	  .updatable = true },
	{ .key = "read_only", .kind = TND_MGMT_OPT_BOOL, .updatable = true },
	{ .key = "cache_size", .kind = TND_MGMT_OPT_SIZE, .updatable = true },
	{ .key = NULL },
};

static const struct tnd_mgmt_dev_option flat_options[] = {
	{ .key = "path", .kind = TND_MGMT_OPT_STRING },
	{ .key = "read_only", .kind = TND_MGMT_OPT_BOOL, .updatable = true },
	{ .key = NULL },
};

const struct tnd_mgmt_dev_type fixture_device_types[] = {
	{ .name = "lsfs", .size_required = true, .options = lsfs_options },
	{ .name = "flat", .size_required = true, .options = flat_options },
	{ .name = "passthrough", .size_required = false, .options = flat_options },
	{ .name = NULL },
};

static int enter(struct fixture *f)
{
	if (f->delay_ms) {
		struct timespec ts = { .tv_sec = f->delay_ms / 1000,
				       .tv_nsec = (long)(f->delay_ms % 1000) * 1000000 };
		nanosleep(&ts, NULL);
	}
	int ret = f->fail_next;
	f->fail_next = 0;
	return ret;
}

static json_t *find_by(json_t *arr, const char *key, const char *value, size_t *index)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		if (strcmp(json_string_value(json_object_get(v, key)), value) == 0) {
			if (index)
				*index = i;
			return v;
		}
	}
	return NULL;
}

static bool device_mapped(struct fixture *f, const char *name)
{
	size_t i, k;
	json_t *t, *l;
	json_array_foreach(f->targets, i, t)
		json_array_foreach(json_object_get(t, "luns"), k, l)
			if (strcmp(json_string_value(json_object_get(l, "device")), name) == 0)
				return true;
	return false;
}

/* ---- devices ---- */

static void device_stats(const json_t *d, json_t *stats)
{
	json_int_t size = json_integer_value(json_object_get(d, "size"));
	json_object_set_new(stats, "logical_bytes", json_integer(size / 2));
	json_object_set_new(stats, "physical_bytes", json_integer(size / 8));
	json_object_set_new(stats, "dedup_ratio", json_real(2.0));
	json_object_set_new(stats, "compression_ratio", json_real(2.0));
	json_object_set_new(stats, "read_ops", json_integer(10));
	json_object_set_new(stats, "write_ops", json_integer(20));
	json_object_set_new(stats, "read_bytes", json_integer(40960));
	json_object_set_new(stats, "write_bytes", json_integer(81920));
}

static int fx_device_list(void *ctx, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	size_t i;
	json_t *d;
	json_array_foreach(f->devices, i, d) {
		json_t *c = json_deep_copy(d);
		json_object_set_new(c, "state", json_string("online"));
		json_array_append_new(out, c);
	}
	return 0;
}

static int fx_device_get(void *ctx, const char *name, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *d = find_by(f->devices, "name", name, NULL);
	if (!d)
		return -ENOENT;
	json_object_update(out, d);
	json_object_set_new(out, "state", json_string("online"));
	json_t *stats = json_object();
	device_stats(d, stats);
	json_object_set_new(out, "stats", stats);
	return 0;
}

static int fx_device_create(void *ctx, const json_t *spec, struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	const char *name = json_string_value(json_object_get(spec, "name"));
	if (find_by(f->devices, "name", name, NULL)) {
		tnd_mgmt_error_set(err, "name", "a device named %s exists", name);
		return -EEXIST;
	}
	if (!json_object_get(spec, "size")) {
		/* passthrough: the "disk" is 1 GiB */
		json_t *d = json_deep_copy(spec);
		json_object_set_new(d, "size", json_integer(1 << 30));
		json_array_append_new(f->devices, d);
	} else {
		json_array_append_new(f->devices, json_deep_copy(spec));
	}
	f->changes++;
	return 0;
}

static int fx_device_update(void *ctx, const char *name, const json_t *changes,
			    struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *d = find_by(f->devices, "name", name, NULL);
	if (!d)
		return -ENOENT;
	json_object_update(d, (json_t *)changes);
	f->changes++;
	return 0;
}

static int fx_device_delete(void *ctx, const char *name, bool force, struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	size_t idx;
	if (!find_by(f->devices, "name", name, &idx))
		return -ENOENT;
	if (device_mapped(f, name) && !force)
		return -EBUSY;
	size_t i;
	json_t *t;
	json_array_foreach(f->targets, i, t) {
		json_t *luns = json_object_get(t, "luns");
		for (size_t k = json_array_size(luns); k-- > 0;)
			if (strcmp(json_string_value(json_object_get(json_array_get(luns, k),
								     "device")), name) == 0)
				json_array_remove(luns, k);
	}
	json_array_remove(f->devices, idx);
	f->changes++;
	return 0;
}

/* ---- targets ---- */

static json_t *acl_public(const json_t *acl)
{
	/* The fixture leaves the secrets in on purpose: the library must strip them. */
	return json_deep_copy(acl);
}

static int fx_target_list(void *ctx, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	size_t i;
	json_t *t;
	json_array_foreach(f->targets, i, t)
		json_array_append_new(out, json_deep_copy(t));
	return 0;
}

static int fx_target_get(void *ctx, const char *iqn, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *t = find_by(f->targets, "iqn", iqn, NULL);
	if (!t)
		return -ENOENT;
	json_t *c = json_deep_copy(t);
	json_object_update(out, c);
	json_decref(c);
	return 0;
}

static int fx_target_create(void *ctx, const json_t *spec, struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	const char *iqn = json_string_value(json_object_get(spec, "iqn"));
	if (find_by(f->targets, "iqn", iqn, NULL))
		return -EEXIST;
	json_t *t = json_deep_copy(spec);
	json_object_set_new(t, "luns", json_array());
	json_object_set_new(t, "acls", json_array());
	json_array_append_new(f->targets, t);
	f->changes++;
	return 0;
}

static int fx_target_delete(void *ctx, const char *iqn, struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	size_t idx;
	if (!find_by(f->targets, "iqn", iqn, &idx))
		return -ENOENT;
	json_array_remove(f->targets, idx);
	f->changes++;
	return 0;
}

/* ---- LUNs ---- */

static int fx_lun_list(void *ctx, const char *iqn, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *t = find_by(f->targets, "iqn", iqn, NULL);
	if (!t)
		return -ENOENT;
	json_array_extend(out, json_object_get(t, "luns"));
	return 0;
}

static int fx_lun_map(void *ctx, const char *iqn, uint32_t lun, const char *device,
		      struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *t = find_by(f->targets, "iqn", iqn, NULL);
	if (!t) {
		tnd_mgmt_error_set(err, NULL, "no target %s", iqn);
		return -ENOENT;
	}
	if (!find_by(f->devices, "name", device, NULL)) {
		tnd_mgmt_error_set(err, "device", "no device named %s", device);
		return -ENOENT;
	}
	size_t i;
	json_t *l;
	json_array_foreach(json_object_get(t, "luns"), i, l)
		if (json_integer_value(json_object_get(l, "lun")) == lun)
			return -EEXIST;
	json_array_append_new(json_object_get(t, "luns"),
			      json_pack("{s:I,s:s}", "lun", (json_int_t)lun, "device", device));
	f->changes++;
	return 0;
}

static int fx_lun_unmap(void *ctx, const char *iqn, uint32_t lun, struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *t = find_by(f->targets, "iqn", iqn, NULL);
	if (!t)
		return -ENOENT;
	json_t *luns = json_object_get(t, "luns");
	size_t i;
	json_t *l;
	json_array_foreach(luns, i, l) {
		if (json_integer_value(json_object_get(l, "lun")) == lun) {
			json_array_remove(luns, i);
			f->changes++;
			return 0;
		}
	}
	return -ENOENT;
}

/* ---- ACLs ---- */

static int fx_acl_list(void *ctx, const char *iqn, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *t = find_by(f->targets, "iqn", iqn, NULL);
	if (!t)
		return -ENOENT;
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(t, "acls"), i, a)
		json_array_append_new(out, acl_public(a));
	return 0;
}

static int fx_acl_add(void *ctx, const char *iqn, const json_t *acl, struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *t = find_by(f->targets, "iqn", iqn, NULL);
	if (!t)
		return -ENOENT;
	json_t *acls = json_object_get(t, "acls");
	if (find_by(acls, "initiator", json_string_value(json_object_get(acl, "initiator")), NULL))
		return -EEXIST;
	json_array_append_new(acls, json_deep_copy(acl));
	f->changes++;
	return 0;
}

static int fx_acl_remove(void *ctx, const char *iqn, const char *initiator,
			 struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *t = find_by(f->targets, "iqn", iqn, NULL);
	size_t idx;
	if (!t || !find_by(json_object_get(t, "acls"), "initiator", initiator, &idx))
		return -ENOENT;
	json_array_remove(json_object_get(t, "acls"), idx);
	f->changes++;
	return 0;
}

/* ---- sessions, stats, snapshot ---- */

static int fx_session_list(void *ctx, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_array_extend(out, f->sessions);
	return 0;
}

static int fx_session_kick(void *ctx, const char *id, struct tnd_mgmt_error *err)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	size_t idx;
	if (!find_by(f->sessions, "id", id, &idx))
		return -ENOENT;
	json_array_remove(f->sessions, idx);
	return 0;
}

static int fx_stats(void *ctx, json_t *out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_object_set_new(out, "uptime_seconds", json_integer(42));
	json_object_set_new(out, "sessions", json_integer((json_int_t)json_array_size(f->sessions)));
	json_t *devs = json_array(), *tgts = json_array();
	size_t i;
	json_t *d, *t;
	json_array_foreach(f->devices, i, d) {
		json_t *s = json_pack("{s:O,s:s,s:O}", "name", json_object_get(d, "name"), "state",
				      "online", "size", json_object_get(d, "size"));
		device_stats(d, s);
		json_object_set_new(s, "latency", json_pack(
			"{s:{s:[{s:i,s:i},{s:i,s:i}],s:i,s:i}}", "read", "buckets", "le_us", 100,
			"count", 7, "le_us", 1000, "count", 2, "count", 10, "sum_us", 2500));
		json_array_append_new(devs, s);
	}
	json_array_foreach(f->targets, i, t) {
		json_int_t n = 0;
		size_t k;
		json_t *s;
		json_array_foreach(f->sessions, k, s)
			n += strcmp(json_string_value(json_object_get(s, "target")),
				    json_string_value(json_object_get(t, "iqn"))) == 0;
		json_array_append_new(tgts, json_pack("{s:O,s:I}", "iqn", json_object_get(t, "iqn"),
						      "sessions", n));
	}
	json_object_set_new(out, "devices", devs);
	json_object_set_new(out, "targets", tgts);
	return 0;
}

/* The docs/config.md document, with "acls" per target and the LUN map as an object. */
static int fx_config_snapshot(void *ctx, json_t **out)
{
	struct fixture *f = ctx;
	int ret = enter(f);
	if (ret)
		return ret;
	json_t *targets = json_array();
	size_t i, k;
	json_t *t, *l;
	json_array_foreach(f->targets, i, t) {
		json_t *c = json_deep_copy(t);
		json_t *luns = json_object();
		json_array_foreach(json_object_get(t, "luns"), k, l) {
			char key[16];
			snprintf(key, sizeof(key), "%lld",
				 (long long)json_integer_value(json_object_get(l, "lun")));
			json_object_set(luns, key, json_object_get(l, "device"));
		}
		json_object_set_new(c, "luns", luns);
		json_array_append_new(targets, c);
	}
	*out = json_pack("{s:O,s:o}", "devices", f->devices, "targets", targets);
	return *out ? 0 : -ENOMEM;
}

const struct tnd_mgmt_backend_ops fixture_ops = {
	.device_list = fx_device_list,
	.device_get = fx_device_get,
	.device_create = fx_device_create,
	.device_update = fx_device_update,
	.device_delete = fx_device_delete,
	.target_list = fx_target_list,
	.target_get = fx_target_get,
	.target_create = fx_target_create,
	.target_delete = fx_target_delete,
	.lun_list = fx_lun_list,
	.lun_map = fx_lun_map,
	.lun_unmap = fx_lun_unmap,
	.acl_list = fx_acl_list,
	.acl_add = fx_acl_add,
	.acl_remove = fx_acl_remove,
	.session_list = fx_session_list,
	.session_kick = fx_session_kick,
	.stats = fx_stats,
	.config_snapshot = fx_config_snapshot,
};

struct fixture *fixture_create(void)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->devices = json_array();
	f->targets = json_array();
	f->sessions = json_array();
	return f;
}

void fixture_destroy(struct fixture *f)
{
	if (!f)
		return;
	json_decref(f->devices);
	json_decref(f->targets);
	json_decref(f->sessions);
	free(f);
}

void fixture_add_session(struct fixture *f, const char *id, const char *target,
			 const char *initiator)
{
	json_array_append_new(f->sessions,
			      json_pack("{s:s,s:s,s:s,s:s,s:i}", "id", id, "target", target,
					"initiator", initiator, "address", "127.0.0.1:50000",
					"reactor", 1));
}
