/*
 * Configuration parsing and validation; see config.h and docs/config.md.
 *
 * Every field is checked with its path ("devices[1].size") so the message
 * tells the admin exactly what to fix. Unknown fields are errors, not
 * ignored: a typo like "allow_any_initator" must not silently lock out
 * every initiator or, worse, leave a target open.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <jansson.h>

#include "config.h"
#include "tnd_common.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

static const struct {
	const char *name;
	enum tnd_dev_type type;
} dev_types[] = {
	{ "flat", TND_DEV_FLAT },
	{ "passthrough", TND_DEV_PASSTHROUGH },
	{ "lsfs", TND_DEV_LSFS },
};

bool tnd_config_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '-' && c != '_' && c != '.')
			return false;
	}
	return name[0] != '.' && name[0] != '-';
}

/*
 * RFC 7143 section 4.2.7: iqn.yyyy-mm.reversed.domain[:anything], eui. +
 * 16 hex digits, naa. + 16 or 32 hex digits; at most 223 bytes; we accept
 * the lowercase ASCII subset of the stringprep profile.
 */
bool tnd_config_iqn_valid(const char *iqn)
{
	size_t n = strlen(iqn);
	if (n < 5 || n > 223)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)iqn[i];
		if (!(islower(c) || isdigit(c) || c == '-' || c == '.' || c == ':'))
			return false;
	}
	if (strncmp(iqn, "iqn.", 4) == 0) {
		/* yyyy-mm. then a domain */
		if (n < 13)
			return false;
		for (int i = 4; i < 8; i++)
			if (!isdigit((unsigned char)iqn[i]))
				return false;
		return iqn[8] == '-' && isdigit((unsigned char)iqn[9]) &&
		       isdigit((unsigned char)iqn[10]) && iqn[11] == '.' && iqn[12] != '\0';
	}
	if (strncmp(iqn, "eui.", 4) == 0 || strncmp(iqn, "naa.", 4) == 0) {
		size_t h = n - 4;
		bool naa = iqn[0] == 'n';
		if (!(h == 16 || (naa && h == 32)))
			return false;
		for (size_t i = 4; i < n; i++)
			if (!isxdigit((unsigned char)iqn[i]))
				return false;
		return true;
	}
	return false;
}

/* Fail on any key of @obj not in @allowed. */
static int check_keys(json_t *obj, const char *const *allowed, const char *where,
		      char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(*a, key) == 0)
				ok = true;
		if (!ok)
			return ERR("%s.%s: unknown field", where, key);
	}
	return 0;
}

static int get_string(json_t *obj, const char *key, bool required, char **out,
		      const char *where, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (required)
			return ERR("%s.%s: missing (required)", where, key);
		return 0;
	}
	if (!json_is_string(v))
		return ERR("%s.%s: must be a string", where, key);
	*out = strdup(json_string_value(v));
	return *out ? 0 : -ENOMEM;
}

static int get_bool(json_t *obj, const char *key, bool *out, const char *where, char *err,
		    size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return ERR("%s.%s: must be true or false", where, key);
	*out = json_is_true(v);
	return 0;
}

/* A size is bytes as a number, or a string with an optional binary suffix. */
static int get_size(json_t *obj, const char *key, uint64_t *out, const char *where, char *err,
		    size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v) && tnd_parse_size(json_string_value(v), out) == 0)
		return 0;
	return ERR("%s.%s: must be a size in bytes or like \"10GiB\" (suffixes KiB, MiB, GiB, TiB)",
		   where, key);
}

const char *const tnd_config_cmode_names[] = {
	[TND_CONFIG_CMODE_INLINE] = "inline",
	[TND_CONFIG_CMODE_ADAPTIVE] = "adaptive",
	[TND_CONFIG_CMODE_DEFERRED] = "deferred",
	NULL,
};

static int parse_device(json_t *d, size_t i, struct tnd_config_device *dev, char *err,
			size_t errlen)
{
	static const char *const keys[] = { "name", "type", "path", "size", "block_size",
					    "read_only", "capacity", "write_cache", "compress", "dedup",
					    "dedup_index_bytes", "direct_io", "compress_mode",
					    "dedup_warmup_mbps", NULL };
	char where[48];
	snprintf(where, sizeof(where), "devices[%zu]", i);
	if (!json_is_object(d))
		return ERR("%s: must be an object", where);
	int ret = check_keys(d, keys, where, err, errlen);
	if (ret)
		return ret;
	if ((ret = get_string(d, "name", true, &dev->name, where, err, errlen)))
		return ret;
	if (!tnd_config_name_valid(dev->name))
		return ERR("%s.name: \"%s\" is not a valid name (1-64 of A-Z a-z 0-9 . _ -)",
			   where, dev->name);

	char *type = NULL;
	if ((ret = get_string(d, "type", false, &type, where, err, errlen)))
		return ret;
	dev->type = TND_DEV_LSFS;
	if (type) {
		bool found = false;
		for (size_t t = 0; t < TND_ARRAY_SIZE(dev_types); t++) {
			if (strcmp(type, dev_types[t].name) == 0) {
				dev->type = dev_types[t].type;
				found = true;
			}
		}
		if (!found) {
			ret = ERR("%s.type: \"%s\" is not a device type (lsfs, flat, passthrough)",
				  where, type);
			free(type);
			return ret;
		}
		free(type);
	}
	if ((ret = get_string(d, "path", dev->type == TND_DEV_PASSTHROUGH, &dev->path, where,
			      err, errlen)))
		return ret;
	if ((ret = get_size(d, "size", &dev->size, where, err, errlen)))
		return ret;
	if ((ret = get_bool(d, "read_only", &dev->read_only, where, err, errlen)))
		return ret;
	dev->write_cache = true;
	if (dev->type != TND_DEV_LSFS &&
	    (json_object_get(d, "capacity") || json_object_get(d, "write_cache") ||
	     json_object_get(d, "compress") || json_object_get(d, "dedup") ||
	     json_object_get(d, "dedup_index_bytes") || json_object_get(d, "direct_io") ||
	     json_object_get(d, "compress_mode") || json_object_get(d, "dedup_warmup_mbps")))
		return ERR("%s: capacity, write_cache, compress, compress_mode, dedup, "
			   "dedup_index_bytes, dedup_warmup_mbps and direct_io apply to lsfs devices "
			   "only", where);
	if ((ret = get_bool(d, "dedup", &dev->dedup, where, err, errlen)))
		return ret;
	if ((ret = get_bool(d, "direct_io", &dev->direct_io, where, err, errlen)))
		return ret;
	if ((ret = get_size(d, "dedup_index_bytes", &dev->dedup_index_bytes, where, err, errlen)))
		return ret;
	if (dev->dedup_index_bytes && dev->dedup_index_bytes < 4096)
		return ERR("%s.dedup_index_bytes: at least 4096", where);
	/* Accepted with dedup off too: it applies once dedup is switched on. */
	dev->dedup_warmup_mbps = TND_CONFIG_WARMUP_MBPS_DEFAULT;
	json_t *wm = json_object_get(d, "dedup_warmup_mbps");
	if (wm) {
		if (!json_is_integer(wm) || json_integer_value(wm) < 0 ||
		    json_integer_value(wm) > TND_CONFIG_WARMUP_MBPS_MAX)
			return ERR("%s.dedup_warmup_mbps: must be an integer from 0 (unlimited) to %u "
				   "(MB/s)", where, TND_CONFIG_WARMUP_MBPS_MAX);
		dev->dedup_warmup_mbps = (uint32_t)json_integer_value(wm);
	}
	json_t *cz = json_object_get(d, "compress");
	if (cz) {
		const char *cs = json_string_value(cz);
		if (!cs || (strcmp(cs, "lz4") != 0 && strcmp(cs, "none") != 0))
			return ERR("%s.compress: must be \"lz4\" or \"none\"", where);
		dev->compress = strcmp(cs, "lz4") == 0;
	}
	/* Accepted (and kept) with compress none too: it applies once
	 * compression is switched on. */
	dev->compress_mode = TND_CONFIG_CMODE_ADAPTIVE;
	json_t *cm = json_object_get(d, "compress_mode");
	if (cm) {
		const char *ms = json_string_value(cm);
		int found = -1;
		for (int k = 0; ms && tnd_config_cmode_names[k]; k++)
			if (strcmp(ms, tnd_config_cmode_names[k]) == 0)
				found = k;
		if (found < 0)
			return ERR("%s.compress_mode: must be \"inline\", \"adaptive\" or \"deferred\"",
				   where);
		dev->compress_mode = found;
	}
	if ((ret = get_size(d, "capacity", &dev->capacity, where, err, errlen)))
		return ret;
	if ((ret = get_bool(d, "write_cache", &dev->write_cache, where, err, errlen)))
		return ret;

	dev->block_size = 512;
	json_t *bs = json_object_get(d, "block_size");
	if (bs) {
		if (!json_is_integer(bs) ||
		    (json_integer_value(bs) != 512 && json_integer_value(bs) != 4096))
			return ERR("%s.block_size: must be 512 or 4096", where);
		dev->block_size = (uint32_t)json_integer_value(bs);
	}
	if (dev->type != TND_DEV_PASSTHROUGH && dev->size == 0)
		return ERR("%s.size: missing (required for a %s device)", where,
			   dev->type == TND_DEV_LSFS ? "lsfs" : "flat");
	if (dev->size % dev->block_size)
		return ERR("%s.size: %llu is not a multiple of block_size %u", where,
			   (unsigned long long)dev->size, dev->block_size);
	if (dev->type == TND_DEV_LSFS) {
		if (dev->size % 4096)
			return ERR("%s.size: an lsfs device's size must be a multiple of 4 KiB", where);
		if (dev->size > (64ull << 40))
			return ERR("%s.size: lsfs devices are at most 64 TiB", where);
		/* A full device then fills 80 % of its store, the fill GC is
		 * designed for; at size + 1/8 a full device under uniform
		 * overwrites wrote about 4 backing bytes per client byte. */
		if (dev->capacity == 0)
			dev->capacity = (dev->size + dev->size / 4 + (64u << 20) + (1u << 20) - 1) &
					~(uint64_t)((1u << 20) - 1);
		if (dev->capacity % 4096)
			return ERR("%s.capacity: must be a multiple of 4 KiB", where);
	}
	return 0;
}

static int parse_chap(json_t *c, struct tnd_config_chap **out, const char *where, char *err,
		      size_t errlen)
{
	static const char *const keys[] = { "user", "secret", NULL };
	if (!json_is_object(c))
		return ERR("%s: must be an object with user and secret", where);
	int ret = check_keys(c, keys, where, err, errlen);
	if (ret)
		return ret;
	struct tnd_config_chap *chap = calloc(1, sizeof(*chap));
	if (!chap)
		return -ENOMEM;
	*out = chap;
	if ((ret = get_string(c, "user", true, &chap->user, where, err, errlen)))
		return ret;
	if ((ret = get_string(c, "secret", true, &chap->secret, where, err, errlen)))
		return ret;
	size_t n = strlen(chap->user);
	if (n == 0 || n > 255)
		return ERR("%s.user: must be 1 to 255 bytes", where);
	n = strlen(chap->secret);
	/* RFC 7143 12.1.3 asks for at least 96 bits of secret. */
	if (n < 12 || n > 255)
		return ERR("%s.secret: must be 12 to 255 bytes", where);
	return 0;
}

static int parse_acl(json_t *a, const char *where, struct tnd_config_acl *acl,
		     struct tnd_config *cfg, char *err, size_t errlen)
{
	static const char *const keys[] = { "initiator", "luns", "chap", "mutual_chap", NULL };
	char sub[96];
	if (!json_is_object(a))
		return ERR("%s: must be an object", where);
	int ret = check_keys(a, keys, where, err, errlen);
	if (ret)
		return ret;
	if ((ret = get_string(a, "initiator", true, &acl->initiator, where, err, errlen)))
		return ret;
	if (!tnd_config_iqn_valid(acl->initiator))
		return ERR("%s.initiator: \"%s\" is not a valid initiator IQN", where, acl->initiator);
	json_t *luns = json_object_get(a, "luns");
	if (luns) {
		if (!json_is_array(luns))
			return ERR("%s.luns: must be an array of LUN numbers", where);
		acl->luns = calloc(json_array_size(luns) + 1, sizeof(*acl->luns));
		if (!acl->luns)
			return -ENOMEM;
		size_t k;
		json_t *v;
		json_array_foreach(luns, k, v) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 16383)
				return ERR("%s.luns[%zu]: must be a LUN number from 0 to 16383", where, k);
			acl->luns[acl->nr_luns++] = (uint64_t)json_integer_value(v);
		}
	}
	json_t *c = json_object_get(a, "chap");
	if (c) {
		snprintf(sub, sizeof(sub), "%s.chap", where);
		if ((ret = parse_chap(c, &acl->chap, sub, err, errlen)))
			return ret;
		cfg->has_secrets = true;
	}
	c = json_object_get(a, "mutual_chap");
	if (c) {
		snprintf(sub, sizeof(sub), "%s.mutual_chap", where);
		if (!acl->chap)
			return ERR("%s: mutual CHAP needs chap as well", sub);
		if ((ret = parse_chap(c, &acl->mutual_chap, sub, err, errlen)))
			return ret;
		if (strcmp(acl->mutual_chap->secret, acl->chap->secret) == 0)
			return ERR("%s.secret: must differ from the initiator's CHAP secret", sub);
	}
	return 0;
}

static int parse_target(json_t *t, size_t i, struct tnd_config *cfg,
			struct tnd_config_target *tgt, char *err, size_t errlen)
{
	static const char *const keys[] = { "iqn", "alias", "allow_any_initiator", "initiators",
					    "luns", "acls", NULL };
	char where[48];
	snprintf(where, sizeof(where), "targets[%zu]", i);
	if (!json_is_object(t))
		return ERR("%s: must be an object", where);
	int ret = check_keys(t, keys, where, err, errlen);
	if (ret)
		return ret;
	if ((ret = get_string(t, "iqn", true, &tgt->iqn, where, err, errlen)))
		return ret;
	if (!tnd_config_iqn_valid(tgt->iqn))
		return ERR("%s.iqn: \"%s\" is not a valid iSCSI name (iqn.yyyy-mm.domain[:id], "
			   "lowercase)", where, tgt->iqn);
	if ((ret = get_string(t, "alias", false, &tgt->alias, where, err, errlen)))
		return ret;
	if (tgt->alias && strlen(tgt->alias) > 255)
		return ERR("%s.alias: longer than 255 bytes", where);
	if ((ret = get_bool(t, "allow_any_initiator", &tgt->allow_any, where, err, errlen)))
		return ret;

	json_t *inits = json_object_get(t, "initiators");
	if (inits) {
		if (!json_is_array(inits))
			return ERR("%s.initiators: must be an array of initiator IQNs", where);
		tgt->initiators = calloc(json_array_size(inits) + 1, sizeof(char *));
		if (!tgt->initiators)
			return -ENOMEM;
		size_t k;
		json_t *v;
		json_array_foreach(inits, k, v) {
			if (!json_is_string(v) || !tnd_config_iqn_valid(json_string_value(v)))
				return ERR("%s.initiators[%zu]: must be a valid initiator IQN", where, k);
			tgt->initiators[k] = strdup(json_string_value(v));
			tgt->nr_initiators++;
		}
	}

	json_t *luns = json_object_get(t, "luns");
	if (luns) {
		if (!json_is_object(luns))
			return ERR("%s.luns: must be an object mapping LUN numbers to device names",
				   where);
		tgt->luns = calloc(json_object_size(luns) + 1, sizeof(*tgt->luns));
		if (!tgt->luns)
			return -ENOMEM;
		const char *key;
		json_t *v;
		json_object_foreach(luns, key, v) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(key, &end, 10);
			if (!isdigit((unsigned char)key[0]) || *end || errno || n > 16383)
				return ERR("%s.luns.%s: LUN must be a number from 0 to 16383", where, key);
			if (!json_is_string(v))
				return ERR("%s.luns.%s: must be a device name", where, key);
			const char *dev = json_string_value(v);
			bool found = false;
			for (size_t d = 0; d < cfg->nr_devices; d++)
				if (strcmp(cfg->devices[d].name, dev) == 0)
					found = true;
			if (!found)
				return ERR("%s.luns.%s: no device named \"%s\"", where, key, dev);
			for (size_t l = 0; l < tgt->nr_luns; l++)
				if (tgt->luns[l].lun == n)
					return ERR("%s.luns.%s: LUN mapped twice", where, key);
			tgt->luns[tgt->nr_luns].lun = n;
			tgt->luns[tgt->nr_luns].device = strdup(dev);
			tgt->nr_luns++;
		}
	}

	json_t *acls = json_object_get(t, "acls");
	if (acls) {
		if (!json_is_array(acls))
			return ERR("%s.acls: must be an array of ACL objects", where);
		tgt->acls = calloc(json_array_size(acls) + 1, sizeof(*tgt->acls));
		if (!tgt->acls)
			return -ENOMEM;
		size_t k;
		json_t *v;
		json_array_foreach(acls, k, v) {
			char aw[80];
			snprintf(aw, sizeof(aw), "%s.acls[%zu]", where, k);
			tgt->nr_acls++;
			ret = parse_acl(v, aw, &tgt->acls[k], cfg, err, errlen);
			if (ret)
				return ret;
			for (size_t j = 0; j < k; j++)
				if (strcmp(tgt->acls[j].initiator, tgt->acls[k].initiator) == 0)
					return ERR("%s.initiator: %s has two ACLs", aw, tgt->acls[k].initiator);
			for (size_t j = 0; j < tgt->nr_initiators; j++)
				if (strcmp(tgt->initiators[j], tgt->acls[k].initiator) == 0)
					return ERR("%s.initiator: %s is also in initiators; use one", aw,
						   tgt->acls[k].initiator);
		}
	}
	return 0;
}

int tnd_config_parse(const char *text, struct tnd_config **out, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return ERR("line %d column %d: %s", jerr.line, jerr.column, jerr.text);
	int ret = tnd_config_from_json(root, out, err, errlen);
	json_decref(root);
	return ret;
}

int tnd_config_from_json(json_t *root, struct tnd_config **out, char *err, size_t errlen)
{
	static const char *const keys[] = { "portals", "devices", "targets", NULL };
	int ret;
	json_incref(root);

	struct tnd_config *cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		ret = -ENOMEM;
		goto err_root;
	}
	if (!json_is_object(root)) {
		ret = ERR("top level: must be an object");
		goto err_cfg;
	}
	if ((ret = check_keys(root, keys, "config", err, errlen)))
		goto err_cfg;

	json_t *portals = json_object_get(root, "portals");
	if (portals) {
		if (!json_is_array(portals)) {
			ret = ERR("portals: must be an array of \"HOST:PORT\" strings");
			goto err_cfg;
		}
		cfg->portals = calloc(json_array_size(portals) + 1, sizeof(char *));
		size_t i;
		json_t *v;
		json_array_foreach(portals, i, v) {
			if (!json_is_string(v) || !strchr(json_string_value(v), ':')) {
				ret = ERR("portals[%zu]: must be a \"HOST:PORT\" string", i);
				goto err_cfg;
			}
			cfg->portals[cfg->nr_portals++] = strdup(json_string_value(v));
		}
	}

	json_t *devices = json_object_get(root, "devices");
	if (devices) {
		if (!json_is_array(devices)) {
			ret = ERR("devices: must be an array");
			goto err_cfg;
		}
		cfg->devices = calloc(json_array_size(devices) + 1, sizeof(*cfg->devices));
		size_t i;
		json_t *v;
		json_array_foreach(devices, i, v) {
			cfg->nr_devices++;
			if ((ret = parse_device(v, i, &cfg->devices[i], err, errlen)))
				goto err_cfg;
			for (size_t j = 0; j < i; j++) {
				if (strcmp(cfg->devices[j].name, cfg->devices[i].name) == 0) {
					ret = ERR("devices[%zu].name: \"%s\" is already used by devices[%zu]",
						  i, cfg->devices[i].name, j);
					goto err_cfg;
				}
			}
		}
	}

	json_t *targets = json_object_get(root, "targets");
	if (targets) {
		if (!json_is_array(targets)) {
			ret = ERR("targets: must be an array");
			goto err_cfg;
		}
		cfg->targets = calloc(json_array_size(targets) + 1, sizeof(*cfg->targets));
		size_t i;
		json_t *v;
		json_array_foreach(targets, i, v) {
			cfg->nr_targets++;
			if ((ret = parse_target(v, i, cfg, &cfg->targets[i], err, errlen)))
				goto err_cfg;
			for (size_t j = 0; j < i; j++) {
				if (strcmp(cfg->targets[j].iqn, cfg->targets[i].iqn) == 0) {
					ret = ERR("targets[%zu].iqn: \"%s\" is declared twice", i,
						  cfg->targets[i].iqn);
					goto err_cfg;
				}
			}
		}
	}

	cfg->doc = root;
	*out = cfg;
	return 0;

err_cfg:
	tnd_config_free(cfg);
err_root:
	json_decref(root);
	return ret;
}

int tnd_config_load(const char *path, struct tnd_config **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return snprintf(err, errlen, "%s: %s", path, strerror(errno)), -errno;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int ret = 0;
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			if (cap > (16u << 20)) {
				ret = -EFBIG;
				snprintf(err, errlen, "%s: larger than 16 MiB", path);
				goto out;
			}
			char *nb = realloc(buf, cap);
			if (!nb) {
				ret = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		size_t n = fread(buf + len, 1, 4096, f);
		len += n;
		if (n < 4096)
			break;
	}
	if (ferror(f)) {
		ret = -EIO;
		snprintf(err, errlen, "%s: read error", path);
		goto out;
	}
	buf[len] = '\0';
	if (strlen(buf) != len) {
		ret = -EINVAL;
		snprintf(err, errlen, "%s: contains a NUL byte; not a JSON text file", path);
		goto out;
	}
	char inner[400];
	ret = tnd_config_parse(buf, out, inner, sizeof(inner));
	if (ret) {
		snprintf(err, errlen, "%s: %s", path, inner);
		goto out;
	}
	struct stat st;
	if ((*out)->has_secrets && fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
		snprintf(err, errlen, "%s: holds CHAP secrets but is readable by group or others "
			 "(mode %04o); chmod 600 it", path, (unsigned)(st.st_mode & 07777));
		tnd_config_free(*out);
		*out = NULL;
		ret = -EACCES;
	}
out:
	free(buf);
	fclose(f);
	return ret;
}

int tnd_config_default(struct tnd_config **out)
{
	static const char demo[] =
		"{\"devices\":[{\"name\":\"demo\",\"type\":\"lsfs\",\"size\":\"1GiB\","
		"\"block_size\":512}],"
		"\"targets\":[{\"iqn\":\"" TND_DEMO_IQN "\",\"alias\":\"tandem demo\","
		"\"allow_any_initiator\":true,\"luns\":{\"0\":\"demo\"}}]}";
	char err[128];
	return tnd_config_parse(demo, out, err, sizeof(err));
}

int tnd_config_resolve(struct tnd_config *cfg, const char *data_dir, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->nr_devices; i++) {
		struct tnd_config_device *d = &cfg->devices[i];
		char *p;
		int n;
		if (!d->path)
			n = asprintf(&p, "%s/%s.%s", data_dir, d->name,
				     d->type == TND_DEV_LSFS ? "lsfs" : "img");
		else if (d->path[0] != '/')
			n = asprintf(&p, "%s/%s", data_dir, d->path);
		else
			continue;
		if (n < 0)
			return -ENOMEM;
		free(d->path);
		d->path = p;
	}
	(void)err;
	(void)errlen;
	return 0;
}

static void free_chap(struct tnd_config_chap *c)
{
	if (!c)
		return;
	free(c->user);
	if (c->secret) {
		/* Secrets don't linger in freed heap memory. */
		explicit_bzero(c->secret, strlen(c->secret));
		free(c->secret);
	}
	free(c);
}

void tnd_config_free(struct tnd_config *cfg)
{
	if (!cfg)
		return;
	json_decref(cfg->doc);
	for (size_t i = 0; i < cfg->nr_portals; i++)
		free(cfg->portals[i]);
	free(cfg->portals);
	for (size_t i = 0; i < cfg->nr_devices; i++) {
		free(cfg->devices[i].name);
		free(cfg->devices[i].path);
	}
	free(cfg->devices);
	for (size_t i = 0; i < cfg->nr_targets; i++) {
		struct tnd_config_target *t = &cfg->targets[i];
		free(t->iqn);
		free(t->alias);
		for (size_t k = 0; k < t->nr_initiators; k++)
			free(t->initiators[k]);
		free(t->initiators);
		for (size_t k = 0; k < t->nr_luns; k++)
			free(t->luns[k].device);
		free(t->luns);
		for (size_t k = 0; k < t->nr_acls; k++) {
			struct tnd_config_acl *a = &t->acls[k];
			free(a->initiator);
			free(a->luns);
			free_chap(a->chap);
			free_chap(a->mutual_chap);
		}
		free(t->acls);
	}
	free(cfg->targets);
	free(cfg);
}
