/*
 * routes.c — the /v1 routes: the router table, validation of every body
 * and path segment, and the handlers that call the backend.
 *
 * Each handler validates everything it was given before it calls the
 * backend, and builds a fresh, normalised object for the backend (sizes as
 * integer bytes, defaults filled in) rather than handing on what the client
 * sent: the backend then sees only the fields and types the API documents,
 * and a request that fails validation cannot have changed anything. Errors
 * name the field ("chap.secret") so a client can point at it.
 *
 * Handlers run in server.c's dispatch with the backend mutex held and
 * return the HTTP status they set with tnd_mgmt_reply*.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mgmt_internal.h"
#include "tnd_common.h"

#define MAX_STRING 4095
#define MAX_ALIAS 255
#define MAX_CHAP_USER 255
#define MAX_SESSION_ID 64

#define BAD(r, field, ...) tnd_mgmt_reply_error(r, 400, field, __VA_ARGS__)

/* ---- value checks shared by the handlers ---- */

/* A JSON string without embedded NUL (Jansson allows "\u0000"). */
static bool plain_string(const json_t *v)
{
	return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
}

/* Printable text: no control characters (these end up in logs and tables). */
static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* A size: non-negative integer bytes, or "10GiB". 0 or -EINVAL. */
static int json_size(const json_t *v, uint64_t *out)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (plain_string(v) && tnd_parse_size(json_string_value(v), out) == 0 &&
	    *out <= (uint64_t)INT64_MAX)
		return 0;
	return -EINVAL;
}

static int parse_lun_segment(const char *s, uint32_t *out)
{
	if (!*s || strlen(s) > 5)
		return -EINVAL;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
	unsigned long n = strtoul(s, NULL, 10);
	if (n > TND_MGMT_MAX_LUN)
		return -EINVAL;
	*out = (uint32_t)n;
	return 0;
}

static bool session_id_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MAX_SESSION_ID)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._:-", *s))
			return false;
	return true;
}

/* Reject any member of @obj not in @allowed; @prefix names the object ("chap."). */
static bool only_keys(struct tnd_mgmt_req *r, const json_t *obj, const char *const *allowed,
		      const char *prefix)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v) {
		bool ok = false;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = strcmp(*a, key) == 0;
		if (!ok) {
			char field[128];
			snprintf(field, sizeof(field), "%s%s", prefix, key);
			BAD(r, field, "unknown field");
			return false;
		}
	}
	return true;
}

/* Path segments: a 400 that names them, as for a body field. */
static bool check_name(struct tnd_mgmt_req *r, const char *name, const char *field)
{
	if (tnd_config_name_valid(name))
		return true;
	BAD(r, field, "\"%s\" is not a valid name (1-64 of A-Z a-z 0-9 . _ -, not starting with "
	    ". or -)", name);
	return false;
}

static bool check_iqn(struct tnd_mgmt_req *r, const char *iqn, const char *field)
{
	if (tnd_config_iqn_valid(iqn))
		return true;
	BAD(r, field, "\"%s\" is not a valid iSCSI name (iqn.yyyy-mm.domain[:id], eui. or naa., "
	    "lowercase)", iqn);
	return false;
}

/* Backend call that fills a fresh container; on error sets the reply. */
static json_t *fetch(struct tnd_mgmt_req *r, json_t *out, int ret)
{
	if (ret == 0)
		return out;
	json_decref(out);
	tnd_mgmt_reply_backend(r, ret, NULL);
	return NULL;
}

static int list_reply(struct tnd_mgmt_req *r, const char *key, json_t *arr, int ret)
{
	if (!fetch(r, arr, ret))
		return (int)r->status;
	return tnd_mgmt_reply(r, 200, json_pack("{s:o}", key, arr));
}

/* ---- health, version ---- */

static int h_health(struct tnd_mgmt_req *r)
{
	return tnd_mgmt_reply(r, 200, json_pack("{s:s}", "status", "ok"));
}

static int h_version(struct tnd_mgmt_req *r)
{
	return tnd_mgmt_reply(r, 200, json_pack("{s:s,s:s}", "version", TND_VERSION, "api", "v1"));
}

/* ---- devices ---- */

static const struct tnd_mgmt_dev_type *find_type(const struct tnd_mgmt *m, const char *name)
{
	for (const struct tnd_mgmt_dev_type *t = m->device_types; t->name; t++)
		if (strcmp(t->name, name) == 0)
			return t;
	return NULL;
}

static const struct tnd_mgmt_dev_option *find_option(const struct tnd_mgmt_dev_type *t,
						     const char *key)
{
	for (const struct tnd_mgmt_dev_option *o = t->options; o && o->key; o++)
		if (strcmp(o->key, key) == 0)
			return o;
	return NULL;
}

/* Validate one option value and put its normalised form in @spec. */
static bool put_option(struct tnd_mgmt_req *r, const struct tnd_mgmt_dev_option *o,
		       const json_t *v, json_t *spec)
{
	uint64_t size;
	switch (o->kind) {
	case TND_MGMT_OPT_BOOL:
		if (!json_is_boolean(v))
			return BAD(r, o->key, "must be true or false"), false;
		json_object_set_new(spec, o->key, json_boolean(json_is_true(v)));
		return true;
	case TND_MGMT_OPT_UINT:
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return BAD(r, o->key, "must be a non-negative integer"), false;
		json_object_set_new(spec, o->key, json_integer(json_integer_value(v)));
		return true;
	case TND_MGMT_OPT_SIZE:
		if (json_size(v, &size))
			return BAD(r, o->key, "must be a size in bytes or like \"10GiB\""), false;
		json_object_set_new(spec, o->key, json_integer((json_int_t)size));
		return true;
	case TND_MGMT_OPT_STRING:
		if (!plain_string(v) || json_string_length(v) > MAX_STRING ||
		    !printable(json_string_value(v)))
			return BAD(r, o->key, "must be a string of printable characters"), false;
		if (o->choices) {
			char list[256] = "";
			for (const char *const *c = o->choices; *c; c++) {
				if (strcmp(*c, json_string_value(v)) == 0) {
					json_object_set_new(spec, o->key, json_string(*c));
					return true;
				}
				size_t n = strlen(list);
				snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", *c);
			}
			return BAD(r, o->key, "must be one of: %s", list), false;
		}
		json_object_set_new(spec, o->key, json_string(json_string_value(v)));
		return true;
	}
	return BAD(r, o->key, "unsupported option kind"), false;
}

/* A device body member that is not a common field: an option of @t, or an error. */
static bool put_device_option(struct tnd_mgmt_req *r, const struct tnd_mgmt_dev_type *t,
			      const char *key, const json_t *v, json_t *spec, bool patch)
{
	const struct tnd_mgmt_dev_option *o = find_option(t, key);
	if (!o) {
		for (const struct tnd_mgmt_dev_type *other = r->m->device_types; other->name;
		     other++)
			if (find_option(other, key))
				return BAD(r, key, "not an option of a %s device", t->name), false;
		return BAD(r, key, "unknown field"), false;
	}
	if (patch && !o->updatable)
		return BAD(r, key, "cannot be changed after the device is created"), false;
	return put_option(r, o, v, spec);
}

static int h_device_list(struct tnd_mgmt_req *r)
{
	json_t *arr = json_array();
	return list_reply(r, "devices", arr, r->m->ops->device_list(r->m->ctx, arr));
}

static int device_reply(struct tnd_mgmt_req *r, unsigned status, const char *name)
{
	json_t *dev = json_object();
	if (!fetch(r, dev, r->m->ops->device_get(r->m->ctx, name, dev)))
		return (int)r->status;
	return tnd_mgmt_reply(r, status, dev);
}

static int h_device_create(struct tnd_mgmt_req *r)
{
	const json_t *b = r->json;
	const json_t *v;

	v = json_object_get(b, "name");
	if (!v)
		return BAD(r, "name", "missing (required)");
	if (!plain_string(v))
		return BAD(r, "name", "must be a string");
	if (!check_name(r, json_string_value(v), "name"))
		return (int)r->status;
	const char *name = json_string_value(v);

	const struct tnd_mgmt_dev_type *type = &r->m->device_types[0];
	v = json_object_get(b, "type");
	if (v) {
		if (!plain_string(v))
			return BAD(r, "type", "must be a string");
		type = find_type(r->m, json_string_value(v));
		if (!type) {
			char list[256] = "";
			for (const struct tnd_mgmt_dev_type *t = r->m->device_types; t->name; t++) {
				size_t n = strlen(list);
				snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", t->name);
			}
			return BAD(r, "type", "\"%s\" is not a device type (%s)",
				   json_string_value(v), list);
		}
	}

	uint32_t block_size = 512;
	v = json_object_get(b, "block_size");
	if (v) {
		if (!json_is_integer(v) ||
		    (json_integer_value(v) != 512 && json_integer_value(v) != 4096))
			return BAD(r, "block_size", "must be 512 or 4096");
		block_size = (uint32_t)json_integer_value(v);
	}

	uint64_t size = 0;
	v = json_object_get(b, "size");
	if (v) {
		if (json_size(v, &size))
			return BAD(r, "size", "must be a size in bytes or like \"10GiB\" (suffixes "
				   "KiB, MiB, GiB, TiB)");
		if (size == 0)
			return BAD(r, "size", "must be larger than 0");
		if (size % block_size)
			return BAD(r, "size", "%llu is not a multiple of block_size %u",
				   (unsigned long long)size, block_size);
	} else if (type->size_required) {
		return BAD(r, "size", "missing (required for a %s device)", type->name);
	}

	json_t *spec = json_pack("{s:s,s:s,s:I}", "name", name, "type", type->name, "block_size",
				 (json_int_t)block_size);
	if (!spec)
		return tnd_mgmt_reply_error(r, 500, NULL, "out of memory");
	if (v)
		json_object_set_new(spec, "size", json_integer((json_int_t)size));
	const char *key;
	json_t *val;
	json_object_foreach((json_t *)b, key, val) {
		if (!strcmp(key, "name") || !strcmp(key, "type") || !strcmp(key, "block_size") ||
		    !strcmp(key, "size"))
			continue;
		if (!put_device_option(r, type, key, val, spec, false)) {
			json_decref(spec);
			return (int)r->status;
		}
	}

	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->device_create(r->m->ctx, spec, &err);
	json_decref(spec);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return device_reply(r, 201, name);
}

static int h_device_get(struct tnd_mgmt_req *r)
{
	if (!check_name(r, r->cap[0], "name"))
		return (int)r->status;
	return device_reply(r, 200, r->cap[0]);
}

static int h_device_update(struct tnd_mgmt_req *r)
{
	const char *name = r->cap[0];
	if (!check_name(r, name, "name"))
		return (int)r->status;
	if (json_object_size(r->json) == 0)
		return BAD(r, NULL, "nothing to change: give size or an option");

	/* The current device: its type decides the options, its size the growth. */
	json_t *cur = json_object();
	if (!fetch(r, cur, r->m->ops->device_get(r->m->ctx, name, cur)))
		return (int)r->status;
	const char *tname = json_string_value(json_object_get(cur, "type"));
	const struct tnd_mgmt_dev_type *type = tname ? find_type(r->m, tname) : NULL;
	json_t *jsize = json_object_get(cur, "size");
	json_t *jbs = json_object_get(cur, "block_size");
	uint64_t cur_size = json_is_integer(jsize) ? (uint64_t)json_integer_value(jsize) : 0;
	uint32_t bs = json_is_integer(jbs) ? (uint32_t)json_integer_value(jbs) : 512;
	json_decref(cur);
	if (!type)
		return tnd_mgmt_reply_error(r, 500, NULL, "backend reports an unknown device type");

	json_t *changes = json_object();
	const char *key;
	json_t *v;
	json_object_foreach(r->json, key, v) {
		if (!strcmp(key, "name") || !strcmp(key, "type") || !strcmp(key, "block_size")) {
			BAD(r, key, "cannot be changed");
			goto err_changes;
		}
		if (!strcmp(key, "size")) {
			uint64_t size;
			if (json_size(v, &size)) {
				BAD(r, "size", "must be a size in bytes or like \"20GiB\"");
				goto err_changes;
			}
			if (size < cur_size) {
				BAD(r, "size", "devices cannot shrink (%llu is smaller than the "
				    "current %llu bytes)", (unsigned long long)size,
				    (unsigned long long)cur_size);
				goto err_changes;
			}
			if (size % bs) {
				BAD(r, "size", "%llu is not a multiple of block_size %u",
				    (unsigned long long)size, bs);
				goto err_changes;
			}
			if (size > cur_size)
				json_object_set_new(changes, "size", json_integer((json_int_t)size));
			continue;
		}
		if (!put_device_option(r, type, key, v, changes, true))
			goto err_changes;
	}
	if (json_object_size(changes)) {
		struct tnd_mgmt_error err = { 0 };
		int ret = r->m->ops->device_update(r->m->ctx, name, changes, &err);
		if (ret) {
			tnd_mgmt_reply_backend(r, ret, &err);
			goto err_changes;
		}
	}
	json_decref(changes);
	return device_reply(r, 200, name);

err_changes:
	json_decref(changes);
	return (int)r->status;
}

static int h_device_delete(struct tnd_mgmt_req *r)
{
	bool force;
	if (!check_name(r, r->cap[0], "name"))
		return (int)r->status;
	if (tnd_mgmt_query_bool(r, "force", false, &force))
		return BAD(r, "force", "must be true or false");
	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->device_delete(r->m->ctx, r->cap[0], force, &err);
	if (ret == -EBUSY && !err.message[0])
		tnd_mgmt_error_set(&err, NULL, "device %s is mapped as a LUN; unmap it first or "
				   "delete with ?force=true", r->cap[0]);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return tnd_mgmt_reply(r, 204, NULL);
}

/* ---- targets ---- */

static int h_target_list(struct tnd_mgmt_req *r)
{
	json_t *arr = json_array();
	return list_reply(r, "targets", arr, r->m->ops->target_list(r->m->ctx, arr));
}

static int target_reply(struct tnd_mgmt_req *r, unsigned status, const char *iqn)
{
	json_t *t = json_object();
	if (!fetch(r, t, r->m->ops->target_get(r->m->ctx, iqn, t)))
		return (int)r->status;
	return tnd_mgmt_reply(r, status, t);
}

static int h_target_create(struct tnd_mgmt_req *r)
{
	static const char *const keys[] = { "iqn", "alias", "allow_any_initiator", NULL };
	const json_t *b = r->json;
	if (!only_keys(r, b, keys, ""))
		return (int)r->status;
	const json_t *v = json_object_get(b, "iqn");
	if (!v)
		return BAD(r, "iqn", "missing (required)");
	if (!plain_string(v))
		return BAD(r, "iqn", "must be a string");
	if (!check_iqn(r, json_string_value(v), "iqn"))
		return (int)r->status;
	const char *iqn = json_string_value(v);

	json_t *spec = json_pack("{s:s,s:b}", "iqn", iqn, "allow_any_initiator", 0);
	v = json_object_get(b, "alias");
	if (v) {
		if (!plain_string(v) || json_string_length(v) > MAX_ALIAS ||
		    !printable(json_string_value(v))) {
			json_decref(spec);
			return BAD(r, "alias", "must be a string of up to %d printable bytes",
				   MAX_ALIAS);
		}
		json_object_set_new(spec, "alias", json_string(json_string_value(v)));
	}
	v = json_object_get(b, "allow_any_initiator");
	if (v) {
		if (!json_is_boolean(v)) {
			json_decref(spec);
			return BAD(r, "allow_any_initiator", "must be true or false");
		}
		json_object_set_new(spec, "allow_any_initiator", json_boolean(json_is_true(v)));
	}

	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->target_create(r->m->ctx, spec, &err);
	json_decref(spec);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return target_reply(r, 201, iqn);
}

static int h_target_get(struct tnd_mgmt_req *r)
{
	if (!check_iqn(r, r->cap[0], "iqn"))
		return (int)r->status;
	return target_reply(r, 200, r->cap[0]);
}

static int h_target_delete(struct tnd_mgmt_req *r)
{
	if (!check_iqn(r, r->cap[0], "iqn"))
		return (int)r->status;
	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->target_delete(r->m->ctx, r->cap[0], &err);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return tnd_mgmt_reply(r, 204, NULL);
}

/* ---- LUN maps ---- */

static int h_lun_list(struct tnd_mgmt_req *r)
{
	if (!check_iqn(r, r->cap[0], "iqn"))
		return (int)r->status;
	json_t *arr = json_array();
	return list_reply(r, "luns", arr, r->m->ops->lun_list(r->m->ctx, r->cap[0], arr));
}

static int h_lun_map(struct tnd_mgmt_req *r)
{
	static const char *const keys[] = { "lun", "device", NULL };
	if (!check_iqn(r, r->cap[0], "iqn") || !only_keys(r, r->json, keys, ""))
		return (int)r->status;
	const json_t *lun = json_object_get(r->json, "lun");
	const json_t *dev = json_object_get(r->json, "device");
	if (!lun)
		return BAD(r, "lun", "missing (required)");
	if (!json_is_integer(lun) || json_integer_value(lun) < 0 ||
	    json_integer_value(lun) > TND_MGMT_MAX_LUN)
		return BAD(r, "lun", "must be an integer from 0 to %d", TND_MGMT_MAX_LUN);
	if (!dev)
		return BAD(r, "device", "missing (required)");
	if (!plain_string(dev))
		return BAD(r, "device", "must be a device name");
	if (!check_name(r, json_string_value(dev), "device"))
		return (int)r->status;

	struct tnd_mgmt_error err = { 0 };
	uint32_t n = (uint32_t)json_integer_value(lun);
	int ret = r->m->ops->lun_map(r->m->ctx, r->cap[0], n, json_string_value(dev), &err);
	if (ret == -EEXIST && !err.message[0])
		tnd_mgmt_error_set(&err, "lun", "LUN %u is already mapped", n);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return tnd_mgmt_reply(r, 201, json_pack("{s:I,s:s}", "lun", (json_int_t)n, "device",
						json_string_value(dev)));
}

static int h_lun_unmap(struct tnd_mgmt_req *r)
{
	uint32_t lun;
	if (!check_iqn(r, r->cap[0], "iqn"))
		return (int)r->status;
	if (parse_lun_segment(r->cap[1], &lun))
		return BAD(r, "lun", "must be a number from 0 to %d", TND_MGMT_MAX_LUN);
	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->lun_unmap(r->m->ctx, r->cap[0], lun, &err);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return tnd_mgmt_reply(r, 204, NULL);
}

/* ---- ACLs ---- */

/* {"user": "...", "secret": "..."} at @field ("chap" or "mutual_chap"). */
static json_t *check_chap(struct tnd_mgmt_req *r, const json_t *v, const char *field)
{
	static const char *const keys[] = { "user", "secret", NULL };
	char prefix[32], f[48];
	if (!json_is_object(v))
		return BAD(r, field, "must be an object {\"user\": ..., \"secret\": ...}"), NULL;
	snprintf(prefix, sizeof(prefix), "%s.", field);
	if (!only_keys(r, v, keys, prefix))
		return NULL;
	const json_t *user = json_object_get(v, "user");
	const json_t *secret = json_object_get(v, "secret");
	snprintf(f, sizeof(f), "%s.user", field);
	if (!user)
		return BAD(r, f, "missing (required)"), NULL;
	if (!plain_string(user) || json_string_length(user) == 0 ||
	    json_string_length(user) > MAX_CHAP_USER || !printable(json_string_value(user)))
		return BAD(r, f, "must be 1 to %d printable bytes", MAX_CHAP_USER), NULL;
	snprintf(f, sizeof(f), "%s.secret", field);
	if (!secret)
		return BAD(r, f, "missing (required)"), NULL;
	/* Never echo the secret, not even in the error. */
	if (!plain_string(secret) || json_string_length(secret) < TND_MGMT_CHAP_SECRET_MIN ||
	    json_string_length(secret) > TND_MGMT_CHAP_SECRET_MAX)
		return BAD(r, f, "must be a string of %d to %d bytes", TND_MGMT_CHAP_SECRET_MIN,
			   TND_MGMT_CHAP_SECRET_MAX), NULL;
	return json_pack("{s:s,s:s}", "user", json_string_value(user), "secret",
			 json_string_value(secret));
}

static int cmp_json_int(const void *a, const void *b)
{
	json_int_t x = *(const json_int_t *)a, y = *(const json_int_t *)b;
	return (x > y) - (x < y);
}

static json_t *check_acl_luns(struct tnd_mgmt_req *r, const json_t *v)
{
	if (!json_is_array(v) || json_array_size(v) > TND_MGMT_MAX_LUN + 1)
		return BAD(r, "luns", "must be an array of LUN numbers"), NULL;
	size_t n = json_array_size(v), i;
	json_int_t *tmp = calloc(n + 1, sizeof(*tmp));
	if (!tmp)
		return tnd_mgmt_reply_error(r, 500, NULL, "out of memory"), NULL;
	const json_t *e;
	json_array_foreach(v, i, e) {
		if (!json_is_integer(e) || json_integer_value(e) < 0 ||
		    json_integer_value(e) > TND_MGMT_MAX_LUN) {
			free(tmp);
			char f[32];
			snprintf(f, sizeof(f), "luns[%zu]", i);
			return BAD(r, f, "must be an integer from 0 to %d", TND_MGMT_MAX_LUN), NULL;
		}
		tmp[i] = json_integer_value(e);
	}
	qsort(tmp, n, sizeof(*tmp), cmp_json_int);
	json_t *out = json_array();
	for (i = 0; i < n; i++) {
		if (i && tmp[i] == tmp[i - 1]) {
			long long dup = (long long)tmp[i];
			json_decref(out);
			free(tmp);
			return BAD(r, "luns", "LUN %lld is listed twice", dup), NULL;
		}
		json_array_append_new(out, json_integer(tmp[i]));
	}
	free(tmp);
	return out;
}

static int h_acl_list(struct tnd_mgmt_req *r)
{
	if (!check_iqn(r, r->cap[0], "iqn"))
		return (int)r->status;
	json_t *arr = json_array();
	return list_reply(r, "acls", arr, r->m->ops->acl_list(r->m->ctx, r->cap[0], arr));
}

static int h_acl_add(struct tnd_mgmt_req *r)
{
	static const char *const keys[] = { "initiator", "luns", "chap", "mutual_chap", NULL };
	const json_t *b = r->json;
	if (!check_iqn(r, r->cap[0], "iqn") || !only_keys(r, b, keys, ""))
		return (int)r->status;
	const json_t *v = json_object_get(b, "initiator");
	if (!v)
		return BAD(r, "initiator", "missing (required)");
	if (!plain_string(v))
		return BAD(r, "initiator", "must be a string");
	if (!check_iqn(r, json_string_value(v), "initiator"))
		return (int)r->status;

	json_t *acl = json_pack("{s:s}", "initiator", json_string_value(v));
	json_t *part;
	if ((v = json_object_get(b, "luns"))) {
		if (!(part = check_acl_luns(r, v)))
			goto err_acl;
		json_object_set_new(acl, "luns", part);
	}
	if ((v = json_object_get(b, "chap"))) {
		if (!(part = check_chap(r, v, "chap")))
			goto err_acl;
		json_object_set_new(acl, "chap", part);
	}
	if ((v = json_object_get(b, "mutual_chap"))) {
		if (!json_object_get(acl, "chap")) {
			BAD(r, "mutual_chap", "needs chap: the initiator authenticates first");
			goto err_acl;
		}
		if (!(part = check_chap(r, v, "mutual_chap")))
			goto err_acl;
		/* RFC 7143 12.1.3: one secret must not serve both directions. */
		if (strcmp(json_string_value(json_object_get(part, "secret")),
			   json_string_value(json_object_get(json_object_get(acl, "chap"),
							     "secret"))) == 0) {
			json_decref(part);
			BAD(r, "mutual_chap.secret", "must differ from chap.secret");
			goto err_acl;
		}
		json_object_set_new(acl, "mutual_chap", part);
	}

	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->acl_add(r->m->ctx, r->cap[0], acl, &err);
	if (ret == -EEXIST && !err.message[0])
		tnd_mgmt_error_set(&err, "initiator", "initiator %s already has an ACL on this "
				   "target; remove it first", json_string_value(
					   json_object_get(acl, "initiator")));
	if (ret) {
		tnd_mgmt_reply_backend(r, ret, &err);
		goto err_acl;
	}
	/* The reply is the ACL as stored, minus the secrets (send_reply strips them). */
	return tnd_mgmt_reply(r, 201, acl);

err_acl:
	json_decref(acl);
	return (int)r->status;
}

static int h_acl_remove(struct tnd_mgmt_req *r)
{
	if (!check_iqn(r, r->cap[0], "iqn") || !check_iqn(r, r->cap[1], "initiator"))
		return (int)r->status;
	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->acl_remove(r->m->ctx, r->cap[0], r->cap[1], &err);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return tnd_mgmt_reply(r, 204, NULL);
}

/* ---- sessions, stats ---- */

static int h_session_list(struct tnd_mgmt_req *r)
{
	json_t *arr = json_array();
	return list_reply(r, "sessions", arr, r->m->ops->session_list(r->m->ctx, arr));
}

static int h_session_kick(struct tnd_mgmt_req *r)
{
	if (!session_id_valid(r->cap[0]))
		return BAD(r, "id", "not a session id");
	struct tnd_mgmt_error err = { 0 };
	int ret = r->m->ops->session_kick(r->m->ctx, r->cap[0], &err);
	if (ret)
		return tnd_mgmt_reply_backend(r, ret, &err);
	return tnd_mgmt_reply(r, 204, NULL);
}

static int h_stats(struct tnd_mgmt_req *r)
{
	json_t *s = json_object();
	if (!fetch(r, s, r->m->ops->stats(r->m->ctx, s)))
		return (int)r->status;
	return tnd_mgmt_reply(r, 200, s);
}

static int h_metrics(struct tnd_mgmt_req *r)
{
	json_t *s = json_object();
	if (!fetch(r, s, r->m->ops->stats(r->m->ctx, s)))
		return (int)r->status;
	r->text = tnd_mgmt_metrics_text(s);
	json_decref(s);
	if (!r->text)
		return tnd_mgmt_reply_error(r, 500, NULL, "out of memory");
	r->status = 200;
	return 200;
}

/* ---- the router ---- */

static const struct tnd_mgmt_route routes[] = {
	{ .method = "GET", .pattern = "/v1/health", .public = true, .no_backend = true,
	  .handler = h_health },
	{ .method = "GET", .pattern = "/v1/version", .no_backend = true, .handler = h_version },

	{ .method = "GET", .pattern = "/v1/devices", .handler = h_device_list },
	{ .method = "POST", .pattern = "/v1/devices", .mutates = true,
	  .handler = h_device_create },
	{ .method = "GET", .pattern = "/v1/devices/{name}", .handler = h_device_get },
	{ .method = "PATCH", .pattern = "/v1/devices/{name}", .mutates = true,
	  .handler = h_device_update },
	{ .method = "DELETE", .pattern = "/v1/devices/{name}", .mutates = true,
	  .handler = h_device_delete },

	{ .method = "GET", .pattern = "/v1/targets", .handler = h_target_list },
	{ .method = "POST", .pattern = "/v1/targets", .mutates = true,
	  .handler = h_target_create },
	{ .method = "GET", .pattern = "/v1/targets/{iqn}", .handler = h_target_get },
	{ .method = "DELETE", .pattern = "/v1/targets/{iqn}", .mutates = true,
	  .handler = h_target_delete },

	{ .method = "GET", .pattern = "/v1/targets/{iqn}/luns", .handler = h_lun_list },
	{ .method = "POST", .pattern = "/v1/targets/{iqn}/luns", .mutates = true,
	  .handler = h_lun_map },
	{ .method = "DELETE", .pattern = "/v1/targets/{iqn}/luns/{lun}", .mutates = true,
	  .handler = h_lun_unmap },

	{ .method = "GET", .pattern = "/v1/targets/{iqn}/acls", .handler = h_acl_list },
	{ .method = "POST", .pattern = "/v1/targets/{iqn}/acls", .mutates = true,
	  .handler = h_acl_add },
	{ .method = "DELETE", .pattern = "/v1/targets/{iqn}/acls/{initiator}", .mutates = true,
	  .handler = h_acl_remove },

	{ .method = "GET", .pattern = "/v1/sessions", .handler = h_session_list },
	{ .method = "DELETE", .pattern = "/v1/sessions/{id}", .handler = h_session_kick },

	{ .method = "GET", .pattern = "/v1/stats", .handler = h_stats },
	{ .method = "GET", .pattern = "/metrics", .handler = h_metrics },
};

const struct tnd_mgmt_route *tnd_mgmt_routes(size_t *count)
{
	*count = TND_ARRAY_SIZE(routes);
	return routes;
}
