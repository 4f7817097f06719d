/*
 * The management API's backend: mgmt/'s ops table implemented over the
 * running daemon.
 *
 * Every change follows one pattern, so that a failed request changes
 * nothing: copy the running configuration document, edit the copy, validate
 * it completely with the same parser start-up uses (so the API can never
 * create a configuration tandemd would refuse at its next start), apply
 * the one live change (open a device, call the target), and only then make
 * the new document the running one. The mgmt library then persists it to
 * <data-dir>/config.json, which start-up restores.
 *
 * Ops run on libmicrohttpd's threads, one at a time (the library's mutex);
 * they block while reactors do the work (tnd_daemon_run_on, the target's
 * live-change calls). See daemon.h for who may touch what.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "tnd_common.h"
#include "tnd_lsfs.h"
#include "tnd_mgmt.h"
#include "tnd_reactor.h"
#include "tnd_target.h"
#include "tnd_volume.h"

/* ---- the running document ---- */

static json_t *doc_array(json_t *doc, const char *key)
{
	json_t *a = json_object_get(doc, key);
	if (!a) {
		a = json_array();
		json_object_set_new(doc, key, a);
	}
	return a;
}

static json_t *doc_find(json_t *arr, const char *key, const char *value, size_t *idx)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		const char *s = json_string_value(json_object_get(v, key));
		if (s && strcmp(s, value) == 0) {
			if (idx)
				*idx = i;
			return v;
		}
	}
	return NULL;
}

/* Validate @doc (taking it) as the next configuration. */
static int prepare(struct tnd_daemon *d, json_t *doc, struct tnd_config **out,
		   struct tnd_mgmt_error *err)
{
	char msg[400];
	*out = NULL;   /* tnd_config_from_json leaves it unset when it fails */
	int ret = tnd_config_from_json(doc, out, msg, sizeof(msg));
	json_decref(doc);
	if (ret == 0)
		ret = tnd_config_resolve(*out, d->data_dir, msg, sizeof(msg));
	if (ret < 0) {
		tnd_mgmt_error_set(err, NULL, "%s", msg);
		if (*out) {
			tnd_config_free(*out);
			*out = NULL;
		}
		return -EINVAL;
	}
	return 0;
}

static void commit(struct tnd_daemon *d, struct tnd_config *next)
{
	tnd_config_free(d->cfg);
	d->cfg = next;
}

static const struct tnd_config_device *cfg_device(struct tnd_config *c, const char *name)
{
	for (size_t i = 0; i < c->nr_devices; i++)
		if (strcmp(c->devices[i].name, name) == 0)
			return &c->devices[i];
	return NULL;
}

static struct tnd_config_target *cfg_target(struct tnd_config *c, const char *iqn)
{
	for (size_t i = 0; i < c->nr_targets; i++)
		if (strcmp(c->targets[i].iqn, iqn) == 0)
			return &c->targets[i];
	return NULL;
}

static const char *const type_names[] = {
	[TND_DEV_FLAT] = "flat",
	[TND_DEV_PASSTHROUGH] = "passthrough",
	[TND_DEV_LSFS] = "lsfs",
};

/* ---- devices ---- */

static json_t *device_json(struct tnd_daemon *d, const struct tnd_config_device *c)
{
	json_t *o = json_object();
	json_object_set_new(o, "name", json_string(c->name));
	json_object_set_new(o, "type", json_string(type_names[c->type]));
	json_object_set_new(o, "block_size", json_integer(c->block_size));
	json_object_set_new(o, "path", json_string(c->path));
	json_object_set_new(o, "read_only", json_boolean(c->read_only));
	if (c->type == TND_DEV_LSFS) {
		json_object_set_new(o, "capacity", json_integer((json_int_t)c->capacity));
		json_object_set_new(o, "write_cache", json_boolean(c->write_cache));
		json_object_set_new(o, "compress", json_string(c->compress ? "lz4" : "none"));
		json_object_set_new(o, "compress_mode",
				    json_string(tnd_config_cmode_names[c->compress_mode]));
		json_object_set_new(o, "dedup", json_boolean(c->dedup));
		json_object_set_new(o, "direct_io", json_boolean(c->direct_io));
		if (c->dedup_index_bytes)
			json_object_set_new(o, "dedup_index_bytes",
					    json_integer((json_int_t)c->dedup_index_bytes));
		json_object_set_new(o, "dedup_warmup_mbps", json_integer(c->dedup_warmup_mbps));
	}
	struct tnd_daemon_dev *dev = tnd_daemon_find_dev(d, c->name);
	json_t *stats = dev ? tnd_daemon_device_stats(d, dev) : NULL;
	if (stats) {
		json_object_set(o, "size", json_object_get(stats, "size"));
		json_object_set(o, "state", json_object_get(stats, "state"));
		json_object_del(stats, "type");
		json_object_set_new(o, "stats", stats);
	} else {
		json_object_set_new(o, "size", json_integer((json_int_t)c->size));
		json_object_set_new(o, "state", json_string("closed"));
	}
	return o;
}

static int be_device_list(void *ctx, json_t *out)
{
	struct tnd_daemon *d = ctx;
	for (size_t i = 0; i < d->cfg->nr_devices; i++)
		json_array_append_new(out, device_json(d, &d->cfg->devices[i]));
	return 0;
}

static int be_device_get(void *ctx, const char *name, json_t *out)
{
	struct tnd_daemon *d = ctx;
	const struct tnd_config_device *c = cfg_device(d->cfg, name);
	if (!c)
		return -ENOENT;
	json_t *o = device_json(d, c);
	json_object_update(out, o);
	json_decref(o);
	return 0;
}

static int be_device_create(void *ctx, const json_t *spec, struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	const char *name = json_string_value(json_object_get(spec, "name"));
	if (cfg_device(d->cfg, name)) {
		tnd_mgmt_error_set(err, "name", "device %s exists", name);
		return -EEXIST;
	}
	json_t *doc = json_deep_copy(d->cfg->doc);
	json_array_append_new(doc_array(doc, "devices"), json_deep_copy(spec));
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	const struct tnd_config_device *c = cfg_device(next, name);
	if (access(c->path, F_OK) == 0 && c->type != TND_DEV_PASSTHROUGH &&
	    !json_object_get(spec, "path")) {
		/* A leftover image in the data dir is someone's data: never adopt it. */
		tnd_mgmt_error_set(err, "name", "%s already exists; remove it or give a path",
				   c->path);
		tnd_config_free(next);
		return -EEXIST;
	}
	ret = tnd_daemon_open_device(d, c);
	if (ret < 0) {
		tnd_mgmt_error_set(err, NULL, "cannot open device %s at %s: %s", name, c->path,
				   strerror(-ret));
		tnd_config_free(next);
		return ret == -ENOMEM ? ret : -EINVAL;
	}
	commit(d, next);
	return 0;
}

struct resize_req {
	struct tnd_volume *vol;
	uint64_t blocks;
	int ret;
};

static void resize_fn(void *arg)
{
	struct resize_req *r = arg;
	r->ret = tnd_volume_resize(r->vol, r->blocks);
}

/*
 * PATCH: "size" grows the device; "compress", "compress_mode" and "dedup"
 * (lsfs; mgmt lets no other type through) switch the store's features for
 * new writes, at once; "dedup_warmup_mbps" paces the index warm-up from
 * its next tick. The features go first: if growing then fails, they are put back,
 * so a failed request changes nothing.
 */
static int be_device_update(void *ctx, const char *name, const json_t *changes,
			    struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	const struct tnd_config_device *c = cfg_device(d->cfg, name);
	struct tnd_daemon_dev *dev = tnd_daemon_find_dev(d, name);
	if (!c || !dev)
		return -ENOENT;
	json_t *size = json_object_get(changes, "size");
	json_t *jc = json_object_get(changes, "compress");
	json_t *jd = json_object_get(changes, "dedup");
	json_t *jm = json_object_get(changes, "compress_mode");
	json_t *jw = json_object_get(changes, "dedup_warmup_mbps");
	int mode = c->compress_mode;
	if (jm) {
		/* mgmt checked it against the choices, the same names. */
		for (int k = 0; tnd_config_cmode_names[k]; k++)
			if (strcmp(json_string_value(jm), tnd_config_cmode_names[k]) == 0)
				mode = k;
	}
	bool cmode = mode != c->compress_mode;
	uint64_t bytes = size ? (uint64_t)json_integer_value(size) : c->size;
	bool compress = jc ? strcmp(json_string_value(jc), "lz4") == 0 : c->compress;
	bool dedup = jd ? json_is_true(jd) : c->dedup;
	bool grow = bytes != c->size;
	bool feat = compress != c->compress || dedup != c->dedup;
	/* mgmt checked it is a non-negative integer; the range is the config's. */
	json_int_t rate = jw ? json_integer_value(jw) : (json_int_t)c->dedup_warmup_mbps;
	bool wrate = rate != (json_int_t)c->dedup_warmup_mbps;
	if (!grow && !feat && !cmode && !wrate)
		return 0;
	if ((feat || cmode || wrate) && c->type != TND_DEV_LSFS) {
		tnd_mgmt_error_set(err, jc ? "compress" : jd ? "dedup" : jm ? "compress_mode"
				   : "dedup_warmup_mbps", "only lsfs devices have it");
		return -EINVAL;
	}
	json_t *doc = json_deep_copy(d->cfg->doc);
	json_t *obj = doc_find(doc_array(doc, "devices"), "name", name, NULL);
	if (grow)
		json_object_set_new(obj, "size", json_integer((json_int_t)bytes));
	if (jc)
		json_object_set_new(obj, "compress", json_string(compress ? "lz4" : "none"));
	if (jd)
		json_object_set_new(obj, "dedup", json_boolean(dedup));
	if (jm)
		json_object_set_new(obj, "compress_mode", json_string(tnd_config_cmode_names[mode]));
	if (jw)
		json_object_set_new(obj, "dedup_warmup_mbps", json_integer(rate));
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	uint32_t old_rate = c->dedup_warmup_mbps;
	if (wrate) {
		/* In range: prepare() checked it as the config file's. */
		ret = tnd_lsfs_set_warmup_rate(dev->vol->base, (uint32_t)rate);
		if (ret < 0) {
			tnd_mgmt_error_set(err, "dedup_warmup_mbps", "cannot change %s: %s", name,
					   strerror(-ret));
			tnd_config_free(next);
			return ret;
		}
		tnd_info("tandemd", "device %s: index warm-up rate %u MB/s%s", name, (unsigned)rate,
			 rate ? "" : " (unlimited)");
	}
	bool old_compress = c->compress, old_dedup = c->dedup;
	int old_mode = c->compress_mode;
	if (cmode) {
		/* First, so that compression switched on below starts in the new
		 * mode (and the store is marked for it before). */
		ret = tnd_lsfs_set_compress_mode(dev->vol->base, (enum tnd_lsfs_compress_mode)mode);
		if (ret < 0) {
			tnd_mgmt_error_set(err, "compress_mode", "cannot change %s: %s", name,
					   ret == -EROFS ? "the device has failed" : strerror(-ret));
			tnd_config_free(next);
			if (wrate)
				tnd_lsfs_set_warmup_rate(dev->vol->base, old_rate);
			return ret == -EROFS ? -EBUSY : ret;
		}
		tnd_info("tandemd", "device %s: compression mode %s", name, tnd_config_cmode_names[mode]);
	}
	if (feat) {
		/* From this thread: the superblock write must not stall a reactor. */
		ret = tnd_lsfs_set_features(dev->vol->base, compress, dedup);
		if (ret < 0) {
			tnd_mgmt_error_set(err, jc ? "compress" : "dedup", "cannot change %s: %s", name,
					   ret == -EROFS ? "the device has failed" : strerror(-ret));
			tnd_config_free(next);
			if (cmode)
				tnd_lsfs_set_compress_mode(dev->vol->base,
							   (enum tnd_lsfs_compress_mode)old_mode);
			if (wrate)
				tnd_lsfs_set_warmup_rate(dev->vol->base, old_rate);
			/* A failed device is a 409; a superblock write error (which
			 * fail-stopped it) or no memory a 500. */
			return ret == -EROFS ? -EBUSY : ret;
		}
		tnd_info("tandemd", "device %s: new writes with compression %s, dedup %s", name,
			 compress ? "lz4" : "none", dedup ? "on" : "off");
	}
	if (grow) {
		struct resize_req rr = { .vol = dev->vol, .blocks = bytes / c->block_size };
		tnd_daemon_run_on(dev->home, resize_fn, &rr);
		if (rr.ret < 0) {
			tnd_mgmt_error_set(err, "size", "cannot grow %s: %s", name, strerror(-rr.ret));
			tnd_config_free(next);
			if (feat && tnd_lsfs_set_features(dev->vol->base, old_compress, old_dedup) < 0)
				tnd_warn("tandemd", "device %s: compression/dedup stay as requested until "
					 "restart", name);
			if (cmode && tnd_lsfs_set_compress_mode(dev->vol->base,
								(enum tnd_lsfs_compress_mode)old_mode) < 0)
				tnd_warn("tandemd", "device %s: compression mode stays as requested until "
					 "restart", name);
			if (wrate)
				tnd_lsfs_set_warmup_rate(dev->vol->base, old_rate);
			return rr.ret == -EOPNOTSUPP ? -EOPNOTSUPP : -EINVAL;
		}
		tnd_info("tandemd", "device %s grown to %llu bytes", name, (unsigned long long)bytes);
	}
	commit(d, next);
	return 0;
}

static int be_device_delete(void *ctx, const char *name, bool force, struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	const struct tnd_config_device *c = cfg_device(d->cfg, name);
	if (!c)
		return -ENOENT;
	bool own_file = false;
	json_t *doc = json_deep_copy(d->cfg->doc);
	size_t idx;
	json_t *obj = doc_find(doc_array(doc, "devices"), "name", name, &idx);
	own_file = c->type != TND_DEV_PASSTHROUGH && !json_object_get(obj, "path");
	json_array_remove(doc_array(doc, "devices"), idx);

	/* Drop its LUN maps from the copy; refuse unless forced. */
	unsigned mapped = 0;
	json_t *t;
	size_t ti;
	json_array_foreach(doc_array(doc, "targets"), ti, t) {
		json_t *luns = json_object_get(t, "luns");
		const char *key;
		json_t *v;
		void *tmp;
		json_object_foreach_safe(luns, tmp, key, v) {
			if (strcmp(json_string_value(v), name) == 0) {
				json_object_del(luns, key);
				mapped++;
			}
		}
	}
	if (mapped && !force) {
		json_decref(doc);
		tnd_mgmt_error_set(err, "name", "device %s is mapped as %u LUN(s); unmap it or use "
				   "?force=true", name, mapped);
		return -EBUSY;
	}
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < d->cfg->nr_targets; i++) {
		struct tnd_config_target *tg = &d->cfg->targets[i];
		for (size_t l = 0; l < tg->nr_luns; l++)
			if (strcmp(tg->luns[l].device, name) == 0)
				tnd_target_server_unmap_lun(d->srv, tg->iqn, tg->luns[l].lun);
	}
	ret = tnd_target_server_forget_device(d->srv, name);
	if (ret < 0)
		tnd_warn("tandemd", "device %s deleted; cannot remove its reservation file: %s",
			 name, strerror(-ret));
	char *path = strdup(c->path);
	tnd_daemon_close_device(d, name);
	if (own_file && path && unlink(path) < 0)
		tnd_warn("tandemd", "device %s deleted; cannot remove %s: %s", name, path,
			 strerror(errno));
	tnd_info("tandemd", "device %s deleted%s", name, own_file ? " with its image" : "");
	free(path);
	commit(d, next);
	return 0;
}

/* ---- targets, LUNs, ACLs ---- */

static json_t *acls_json(const struct tnd_config_target *t)
{
	json_t *a = json_array();
	for (size_t i = 0; i < t->nr_initiators; i++)
		json_array_append_new(a, json_pack("{s:s}", "initiator", t->initiators[i]));
	for (size_t i = 0; i < t->nr_acls; i++) {
		const struct tnd_config_acl *c = &t->acls[i];
		json_t *o = json_pack("{s:s}", "initiator", c->initiator);
		if (c->luns) {
			json_t *l = json_array();
			for (size_t k = 0; k < c->nr_luns; k++)
				json_array_append_new(l, json_integer((json_int_t)c->luns[k]));
			json_object_set_new(o, "luns", l);
		}
		if (c->chap)
			json_object_set_new(o, "chap", json_pack("{s:s}", "user", c->chap->user));
		if (c->mutual_chap)
			json_object_set_new(o, "mutual_chap",
					    json_pack("{s:s}", "user", c->mutual_chap->user));
		json_array_append_new(a, o);
	}
	return a;
}

static json_t *luns_json(const struct tnd_config_target *t)
{
	json_t *a = json_array();
	for (size_t i = 0; i < t->nr_luns; i++)
		json_array_append_new(a, json_pack("{s:I,s:s}", "lun", (json_int_t)t->luns[i].lun,
						   "device", t->luns[i].device));
	return a;
}

static json_t *target_json(const struct tnd_config_target *t)
{
	json_t *o = json_pack("{s:s,s:b}", "iqn", t->iqn, "allow_any_initiator", t->allow_any);
	if (t->alias)
		json_object_set_new(o, "alias", json_string(t->alias));
	json_object_set_new(o, "luns", luns_json(t));
	json_object_set_new(o, "acls", acls_json(t));
	return o;
}

static int be_target_list(void *ctx, json_t *out)
{
	struct tnd_daemon *d = ctx;
	for (size_t i = 0; i < d->cfg->nr_targets; i++)
		json_array_append_new(out, target_json(&d->cfg->targets[i]));
	return 0;
}

static int be_target_get(void *ctx, const char *iqn, json_t *out)
{
	struct tnd_daemon *d = ctx;
	struct tnd_config_target *t = cfg_target(d->cfg, iqn);
	if (!t)
		return -ENOENT;
	json_t *o = target_json(t);
	json_object_update(out, o);
	json_decref(o);
	return 0;
}

static int be_target_create(void *ctx, const json_t *spec, struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	const char *iqn = json_string_value(json_object_get(spec, "iqn"));
	if (cfg_target(d->cfg, iqn)) {
		tnd_mgmt_error_set(err, "iqn", "target %s exists", iqn);
		return -EEXIST;
	}
	json_t *doc = json_deep_copy(d->cfg->doc);
	json_array_append_new(doc_array(doc, "targets"), json_deep_copy(spec));
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	struct tnd_config_target *t = cfg_target(next, iqn);
	ret = tnd_target_server_add_target(d->srv, t->iqn, t->alias, t->allow_any, NULL, 0);
	if (ret < 0) {
		tnd_config_free(next);
		tnd_mgmt_error_set(err, "iqn", "cannot add target %s: %s", iqn, strerror(-ret));
		return ret;
	}
	tnd_info("tandemd", "target %s created", iqn);
	commit(d, next);
	return 0;
}

static int be_target_delete(void *ctx, const char *iqn, struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	if (!cfg_target(d->cfg, iqn))
		return -ENOENT;
	json_t *doc = json_deep_copy(d->cfg->doc);
	size_t idx;
	doc_find(doc_array(doc, "targets"), "iqn", iqn, &idx);
	json_array_remove(doc_array(doc, "targets"), idx);
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	ret = tnd_target_server_remove_target(d->srv, iqn);
	if (ret < 0) {
		tnd_config_free(next);
		return ret;
	}
	tnd_info("tandemd", "target %s deleted", iqn);
	commit(d, next);
	return 0;
}

static int be_lun_list(void *ctx, const char *iqn, json_t *out)
{
	struct tnd_daemon *d = ctx;
	struct tnd_config_target *t = cfg_target(d->cfg, iqn);
	if (!t)
		return -ENOENT;
	json_t *a = luns_json(t);
	json_array_extend(out, a);
	json_decref(a);
	return 0;
}

static int be_lun_map(void *ctx, const char *iqn, uint32_t lun, const char *device,
		      struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	struct tnd_config_target *t = cfg_target(d->cfg, iqn);
	if (!t)
		return -ENOENT;
	struct tnd_daemon_dev *dev = tnd_daemon_find_dev(d, device);
	if (!dev) {
		tnd_mgmt_error_set(err, "device", "no device named %s", device);
		return -ENOENT;
	}
	for (size_t i = 0; i < t->nr_luns; i++) {
		if (t->luns[i].lun == lun) {
			tnd_mgmt_error_set(err, "lun", "LUN %u of %s is mapped to %s", lun, iqn,
					   t->luns[i].device);
			return -EEXIST;
		}
	}
	json_t *doc = json_deep_copy(d->cfg->doc);
	json_t *tobj = doc_find(doc_array(doc, "targets"), "iqn", iqn, NULL);
	json_t *luns = json_object_get(tobj, "luns");
	if (!luns) {
		luns = json_object();
		json_object_set_new(tobj, "luns", luns);
	}
	char key[16];
	snprintf(key, sizeof(key), "%u", lun);
	json_object_set_new(luns, key, json_string(device));
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	ret = tnd_target_server_map_lun(d->srv, iqn, lun, device, dev->vol);
	if (ret < 0) {
		tnd_config_free(next);
		tnd_mgmt_error_set(err, "lun", "cannot map LUN %u: %s", lun, strerror(-ret));
		return ret;
	}
	tnd_info("tandemd", "target %s: LUN %u -> device %s", iqn, lun, device);
	commit(d, next);
	return 0;
}

static int be_lun_unmap(void *ctx, const char *iqn, uint32_t lun, struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	struct tnd_config_target *t = cfg_target(d->cfg, iqn);
	if (!t)
		return -ENOENT;
	char key[16];
	snprintf(key, sizeof(key), "%u", lun);
	json_t *doc = json_deep_copy(d->cfg->doc);
	json_t *tobj = doc_find(doc_array(doc, "targets"), "iqn", iqn, NULL);
	if (json_object_del(json_object_get(tobj, "luns"), key) < 0) {
		json_decref(doc);
		return -ENOENT;
	}
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	ret = tnd_target_server_unmap_lun(d->srv, iqn, lun);
	if (ret < 0) {
		tnd_config_free(next);
		return ret;
	}
	tnd_info("tandemd", "target %s: LUN %u unmapped", iqn, lun);
	commit(d, next);
	return 0;
}

static int be_acl_list(void *ctx, const char *iqn, json_t *out)
{
	struct tnd_daemon *d = ctx;
	struct tnd_config_target *t = cfg_target(d->cfg, iqn);
	if (!t)
		return -ENOENT;
	json_t *a = acls_json(t);
	json_array_extend(out, a);
	json_decref(a);
	return 0;
}

static bool target_admits(const struct tnd_config_target *t, const char *initiator)
{
	for (size_t i = 0; i < t->nr_initiators; i++)
		if (strcmp(t->initiators[i], initiator) == 0)
			return true;
	for (size_t i = 0; i < t->nr_acls; i++)
		if (strcmp(t->acls[i].initiator, initiator) == 0)
			return true;
	return false;
}

static int be_acl_add(void *ctx, const char *iqn, const json_t *acl, struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	struct tnd_config_target *t = cfg_target(d->cfg, iqn);
	if (!t)
		return -ENOENT;
	const char *ini = json_string_value(json_object_get(acl, "initiator"));
	if (target_admits(t, ini)) {
		tnd_mgmt_error_set(err, "initiator", "%s already has an ACL on %s", ini, iqn);
		return -EEXIST;
	}
	json_t *doc = json_deep_copy(d->cfg->doc);
	json_t *tobj = doc_find(doc_array(doc, "targets"), "iqn", iqn, NULL);
	json_array_append_new(doc_array(tobj, "acls"), json_deep_copy(acl));
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	struct tnd_config_target *nt = cfg_target(next, iqn);
	ret = tnd_daemon_apply_acl(d, iqn, &nt->acls[nt->nr_acls - 1]);
	if (ret < 0) {
		tnd_config_free(next);
		tnd_mgmt_error_set(err, "initiator", "cannot add the ACL: %s", strerror(-ret));
		return ret;
	}
	tnd_info("tandemd", "target %s: ACL for %s added", iqn, ini);
	commit(d, next);
	return 0;
}

static int be_acl_remove(void *ctx, const char *iqn, const char *initiator,
			 struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	struct tnd_config_target *t = cfg_target(d->cfg, iqn);
	if (!t || !target_admits(t, initiator))
		return -ENOENT;
	json_t *doc = json_deep_copy(d->cfg->doc);
	json_t *tobj = doc_find(doc_array(doc, "targets"), "iqn", iqn, NULL);
	size_t idx;
	if (doc_find(doc_array(tobj, "acls"), "initiator", initiator, &idx)) {
		json_array_remove(json_object_get(tobj, "acls"), idx);
	} else {
		json_t *inits = json_object_get(tobj, "initiators");
		size_t i;
		json_t *v;
		json_array_foreach(inits, i, v) {
			if (strcmp(json_string_value(v), initiator) == 0) {
				json_array_remove(inits, i);
				break;
			}
		}
	}
	struct tnd_config *next;
	int ret = prepare(d, doc, &next, err);
	if (ret < 0)
		return ret;
	ret = tnd_target_server_remove_acl(d->srv, iqn, initiator);
	if (ret < 0) {
		tnd_config_free(next);
		return ret;
	}
	tnd_info("tandemd", "target %s: ACL for %s removed", iqn, initiator);
	commit(d, next);
	return 0;
}

/* ---- sessions, stats, snapshot ---- */

static int be_session_list(void *ctx, json_t *out)
{
	struct tnd_daemon *d = ctx;
	return tnd_target_server_sessions_json(d->srv, out);
}

static int be_session_kick(void *ctx, const char *id, struct tnd_mgmt_error *err)
{
	struct tnd_daemon *d = ctx;
	return tnd_target_server_kick_session(d->srv, id);
}

static int be_stats(void *ctx, json_t *out)
{
	struct tnd_daemon *d = ctx;
	json_t *sessions = json_array();
	tnd_target_server_sessions_json(d->srv, sessions);
	json_object_set_new(out, "uptime_seconds",
			    json_integer((json_int_t)((tnd_now_ns() - d->start_ns) / 1000000000ull)));
	json_object_set_new(out, "sessions", json_integer((json_int_t)json_array_size(sessions)));
	json_t *targets = json_array();
	for (size_t i = 0; i < d->cfg->nr_targets; i++) {
		const char *iqn = d->cfg->targets[i].iqn;
		json_int_t n = 0;
		size_t k;
		json_t *s;
		json_array_foreach(sessions, k, s) {
			const char *t = json_string_value(json_object_get(s, "target"));
			if (t && strcmp(t, iqn) == 0)
				n++;
		}
		json_array_append_new(targets, json_pack("{s:s,s:I}", "iqn", iqn, "sessions", n));
	}
	json_object_set_new(out, "targets", targets);
	json_decref(sessions);

	json_t *devices = json_array();
	for (size_t i = 0; i < d->nr_devs; i++) {
		json_t *s = tnd_daemon_device_stats(d, &d->devs[i]);
		if (!s)
			continue;
		json_object_set_new(s, "name", json_string(d->devs[i].name));
		json_array_append_new(devices, s);
	}
	json_object_set_new(out, "devices", devices);
	return 0;
}

static int be_config_snapshot(void *ctx, json_t **out)
{
	struct tnd_daemon *d = ctx;
	*out = json_deep_copy(d->cfg->doc);
	return *out ? 0 : -ENOMEM;
}

static const struct tnd_mgmt_backend_ops backend_ops = {
	.device_list = be_device_list,
	.device_get = be_device_get,
	.device_create = be_device_create,
	.device_update = be_device_update,
	.device_delete = be_device_delete,
	.target_list = be_target_list,
	.target_get = be_target_get,
	.target_create = be_target_create,
	.target_delete = be_target_delete,
	.lun_list = be_lun_list,
	.lun_map = be_lun_map,
	.lun_unmap = be_lun_unmap,
	.acl_list = be_acl_list,
	.acl_add = be_acl_add,
	.acl_remove = be_acl_remove,
	.session_list = be_session_list,
	.session_kick = be_session_kick,
	.stats = be_stats,
	.config_snapshot = be_config_snapshot,
};

static const char *const compress_choices[] = { "lz4", "none", NULL };
static const char *const cmode_choices[] = { "inline", "adaptive", "deferred", NULL };

static const struct tnd_mgmt_dev_option lsfs_options[] = {
	{ .key = "compress", .kind = TND_MGMT_OPT_STRING, .choices = compress_choices,
	  .updatable = true },
	{ .key = "compress_mode", .kind = TND_MGMT_OPT_STRING, .choices = cmode_choices,
	  .updatable = true },
	{ .key = "dedup", .kind = TND_MGMT_OPT_BOOL, .updatable = true },
	{ .key = "dedup_index_bytes", .kind = TND_MGMT_OPT_SIZE },
	{ .key = "dedup_warmup_mbps", .kind = TND_MGMT_OPT_UINT, .updatable = true },
	{ .key = "direct_io", .kind = TND_MGMT_OPT_BOOL },
	{ .key = "path", .kind = TND_MGMT_OPT_STRING },
	{ .key = "capacity", .kind = TND_MGMT_OPT_SIZE },
	{ .key = "write_cache", .kind = TND_MGMT_OPT_BOOL },
	{ .key = "read_only", .kind = TND_MGMT_OPT_BOOL },
	{ .key = NULL },
};

static const struct tnd_mgmt_dev_option flat_options[] = {
	{ .key = "path", .kind = TND_MGMT_OPT_STRING },
	{ .key = "read_only", .kind = TND_MGMT_OPT_BOOL },
	{ .key = NULL },
};

/* The first is the default type, as in the configuration file. */
static const struct tnd_mgmt_dev_type dev_types[] = {
	{ .name = "lsfs", .size_required = true, .options = lsfs_options },
	{ .name = "flat", .size_required = true, .options = flat_options },
	{ .name = "passthrough", .size_required = false, .options = flat_options },
	{ .name = NULL },
};

int tnd_daemon_mgmt_start(struct tnd_daemon *d, char *err, size_t errlen)
{
	struct tnd_mgmt_opts o = {
		.bind = d->opts.mgmt_bind,
		.data_dir = d->data_dir,
		.tls_cert_file = d->opts.mgmt_cert,
		.tls_key_file = d->opts.mgmt_key,
		.ops = &backend_ops,
		.ctx = d,
		.device_types = dev_types,
	};
	return tnd_mgmt_create(&o, &d->mgmt, err, errlen);
}
