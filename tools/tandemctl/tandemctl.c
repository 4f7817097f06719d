/*
 * tandemctl — a thin command-line client of tandemd's management API
 * (docs/api.md). Every command is one or two HTTP requests; anything it does
 * can be done with curl. Tables for people by default, the server's JSON
 * with --json for scripts. On failure it prints the server's message (and
 * the field it names) and exits 1; a usage error exits 2.
 *
 * Commands are rows of one table (noun, verb, argument counts, accepted
 * options, handler), so `tandemctl help` and the dispatcher read the same
 * list. The bearer token comes from <data-dir>/api.token or --token-file.
 * CHAP secrets are read from files, never from the command line (where ps
 * and shell history would see them), and never printed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <curl/curl.h>
#include <jansson.h>

#include "tnd_common.h"

#define DEFAULT_URL "http://127.0.0.1:9260"
#define DEFAULT_DATA_DIR "./tandem-data"
#define MAX_POS 8
#define MAX_OPTS 32
#define MAX_COLS 12

/* ---- options ---- */

struct opt_spec {
	const char *name;
	bool takes_value;
};

/* Every option any command takes; a command lists the ones it accepts. */
static const struct opt_spec opt_specs[] = {
	{ "url", true }, { "data-dir", true }, { "token-file", true }, { "cacert", true },
	{ "json", false }, { "help", false }, { "version", false },
	{ "type", true }, { "size", true }, { "block-size", true }, { "dedup", false },
	{ "no-dedup", false }, { "compress", true }, { "compress-mode", true }, { "path", true }, { "read-only", false },
	{ "set", true }, { "force", false },
	{ "alias", true }, { "allow-any-initiator", false },
	{ "luns", true }, { "chap-user", true }, { "chap-secret-file", true },
	{ "mutual-chap-user", true }, { "mutual-chap-secret-file", true },
};

static const char *const global_opts[] = { "url", "data-dir", "token-file", "cacert", "json",
					    "help", "version", NULL };

struct opt_value {
	const char *name;
	const char *value;      /* "" for a flag */
};

struct args {
	const char *pos[MAX_POS];
	int npos;
	struct opt_value opts[MAX_OPTS];
	int nopts;
};

static const char *opt(const struct args *a, const char *name)
{
	for (int i = a->nopts - 1; i >= 0; i--)
		if (strcmp(a->opts[i].name, name) == 0)
			return a->opts[i].value;
	return NULL;
}

/* ---- the client ---- */

struct ctl {
	const char *url;
	const char *cacert;
	char token[128];
	bool json;
	CURL *curl;
};

struct buf {
	char *data;
	size_t len;
};

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	char *nb = realloc(b->data, b->len + size * n + 1);
	if (!nb)
		return 0;
	memcpy(nb + b->len, data, size * n);
	b->len += size * n;
	nb[b->len] = '\0';
	b->data = nb;
	return size * n;
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die(const char *fmt, ...)
{
	va_list ap;
	fputs("tandemctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* A path segment, percent-encoded (IQNs carry ':' and '.'). Owned by the caller. */
static char *seg(struct ctl *c, const char *s)
{
	return curl_easy_escape(c->curl, s, 0);
}

/* "/v1/@collection/<@name, escaped>@suffix" into @out. */
static void item_path(struct ctl *c, char *out, size_t cap, const char *collection,
		      const char *name, const char *suffix)
{
	char *n = seg(c, name);
	snprintf(out, cap, "/v1/%s/%s%s", collection, n ? n : "", suffix);
	curl_free(n);
}

/*
 * One request. @body is borrowed and may be NULL. On a 2xx returns 0 and
 * the parsed reply in *@out (NULL for an empty one; may be NULL to ignore);
 * otherwise prints the server's error and returns 1.
 */
static int call(struct ctl *c, const char *method, const char *path, const json_t *body,
		json_t **out)
{
	char url[2048], auth[192];
	struct buf resp = { 0 };
	char *text = NULL;
	long status = 0;
	int ret = 1;
	if (out)
		*out = NULL;
	snprintf(url, sizeof(url), "%s%s", c->url, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
	struct curl_slist *h = curl_slist_append(NULL, auth);
	h = curl_slist_append(h, "Accept: application/json");
	h = curl_slist_append(h, "Expect:");
	curl_easy_reset(c->curl);
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, text);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(text));
	}
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, 300L);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	if (c->cacert)
		curl_easy_setopt(c->curl, CURLOPT_CAINFO, c->cacert);
	CURLcode rc = curl_easy_perform(c->curl);
	if (text) {
		/* The body may hold a CHAP secret: do not leave it in freed memory. */
		explicit_bzero(text, strlen(text));
		free(text);
	}
	curl_slist_free_all(h);
	explicit_bzero(auth, sizeof(auth));
	if (rc != CURLE_OK) {
		die("cannot reach %s: %s", c->url, curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	json_t *j = resp.len ? json_loads(resp.data, 0, NULL) : NULL;
	if (status >= 200 && status < 300) {
		if (out)
			*out = j;
		else
			json_decref(j);
		ret = 0;
		goto out;
	}
	const char *msg = json_string_value(json_object_get(j, "error"));
	const char *field = json_string_value(json_object_get(j, "field"));
	if (!msg)
		die("%s %s: HTTP %ld", method, path, status);
	else if (field)
		die("%s: %s", field, msg);
	else
		die("%s", msg);
	if (status == 401)
		fprintf(stderr, "tandemctl: the token is read from --token-file or "
			"<--data-dir>/api.token (default %s/api.token)\n", DEFAULT_DATA_DIR);
	json_decref(j);
out:
	free(resp.data);
	return ret;
}

/* ---- output helpers ---- */

static void print_json(const json_t *j)
{
	if (!j)
		return;
	char *s = json_dumps(j, JSON_INDENT(2));
	if (s)
		puts(s);
	free(s);
}

static void human_size(uint64_t v, char *out, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	size_t u = 0;
	double d = (double)v;
	while (d >= 1024 && u + 1 < TND_ARRAY_SIZE(units)) {
		d /= 1024;
		u++;
	}
	if (d == (double)(uint64_t)d)
		snprintf(out, len, "%" PRIu64 " %s", (uint64_t)d, units[u]);
	else
		snprintf(out, len, "%.1f %s", d, units[u]);
}

/* A JSON value as table text; sizes (keys ending in "size" or "_bytes") humanised. */
static void cell(const char *key, const json_t *v, char *out, size_t len)
{
	bool is_size = key && strcmp(key, "block_size") != 0 &&
		       (strcmp(key, "size") == 0 || strstr(key, "_bytes") || strstr(key, "_size"));
	if (json_is_string(v))
		snprintf(out, len, "%s", json_string_value(v));
	else if (json_is_integer(v) && is_size)
		human_size((uint64_t)json_integer_value(v), out, len);
	else if (json_is_integer(v))
		snprintf(out, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		snprintf(out, len, "%.2f", json_real_value(v));
	else if (json_is_true(v))
		snprintf(out, len, "yes");
	else if (json_is_false(v))
		snprintf(out, len, "no");
	else if (!v || json_is_null(v))
		snprintf(out, len, "-");
	else {
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(out, len, "%s", s ? s : "?");
		free(s);
	}
}

struct table {
	int ncols;
	const char *head[MAX_COLS];
	char **cells;           /* rows * ncols, owned */
	size_t rows;
};

static void table_add(struct table *t, ...)
{
	char **nc = realloc(t->cells, (t->rows + 1) * (size_t)t->ncols * sizeof(char *));
	if (!nc)
		return;
	t->cells = nc;
	va_list ap;
	va_start(ap, t);
	for (int i = 0; i < t->ncols; i++)
		t->cells[t->rows * (size_t)t->ncols + (size_t)i] = strdup(va_arg(ap, const char *));
	va_end(ap);
	t->rows++;
}

static void table_print(struct table *t)
{
	size_t w[MAX_COLS];
	for (int i = 0; i < t->ncols; i++) {
		w[i] = strlen(t->head[i]);
		for (size_t r = 0; r < t->rows; r++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
			w[i] = TND_MAX(w[i], s ? strlen(s) : 0);
		}
	}
	for (int i = 0; i < t->ncols; i++)
		printf("%-*s%s", i + 1 < t->ncols ? (int)w[i] : 0, t->head[i],
		       i + 1 < t->ncols ? "  " : "\n");
	for (size_t r = 0; r < t->rows; r++) {
		for (int i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
			printf("%-*s%s", i + 1 < t->ncols ? (int)w[i] : 0, s ? s : "",
			       i + 1 < t->ncols ? "  " : "\n");
		}
	}
	for (size_t k = 0; k < t->rows * (size_t)t->ncols; k++)
		free(t->cells[k]);
	free(t->cells);
	t->cells = NULL;
	t->rows = 0;
}

/* "key: value" lines for @obj, skipping @skip members; nested objects indented. */
static void print_fields(const json_t *obj, const char *const *skip, int indent)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v) {
		bool skipped = false;
		for (const char *const *s = skip; s && *s && !skipped; s++)
			skipped = strcmp(*s, key) == 0;
		if (skipped)
			continue;
		if (json_is_object(v)) {
			printf("%*s%s:\n", indent, "", key);
			print_fields(v, NULL, indent + 2);
			continue;
		}
		char text[512];
		cell(key, v, text, sizeof(text));
		printf("%*s%-*s %s\n", indent, "", 20 - indent, key, text);
	}
}

/* Members of a device other than the common ones, as "k=v,k=v". */
static void device_options(const json_t *d, char *out, size_t len)
{
	static const char *const common[] = { "name", "type", "size", "block_size", "state",
					      "stats", NULL };
	const char *key;
	json_t *v;
	out[0] = '\0';
	json_object_foreach((json_t *)d, key, v) {
		bool skip = false;
		for (const char *const *c = common; *c && !skip; c++)
			skip = strcmp(*c, key) == 0;
		if (skip)
			continue;
		char text[256];
		cell(key, v, text, sizeof(text));
		size_t n = strlen(out);
		snprintf(out + n, len - n, "%s%s=%s", n ? "," : "", key, text);
	}
	if (!out[0])
		snprintf(out, len, "-");
}

/* ---- reading inputs ---- */

/* A CHAP secret from a file: the whole file, minus one trailing newline. */
static int read_secret(const char *path, char *out, size_t len)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return die("%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
		fprintf(stderr, "tandemctl: warning: %s is readable by others (mode %04o)\n", path,
			(unsigned)(st.st_mode & 07777));
	size_t n = fread(out, 1, len - 1, f);
	bool more = fgetc(f) != EOF;
	fclose(f);
	if (more)
		return die("%s: longer than %zu bytes", path, len - 2);
	out[n] = '\0';
	if (n && out[n - 1] == '\n')
		out[--n] = '\0';
	if (n && out[n - 1] == '\r')
		out[--n] = '\0';
	if (strlen(out) != n)
		return die("%s: contains a NUL byte", path);
	return 0;
}

static int load_token(struct ctl *c, const struct args *a)
{
	char path[4096];
	const char *file = opt(a, "token-file");
	if (!file) {
		const char *dir = opt(a, "data-dir") ? opt(a, "data-dir") : DEFAULT_DATA_DIR;
		snprintf(path, sizeof(path), "%s/api.token", dir);
		file = path;
	}
	FILE *f = fopen(file, "re");
	if (!f)
		return die("cannot read the API token %s: %s (give --data-dir or --token-file)",
			   file, strerror(errno));
	size_t n = fread(c->token, 1, sizeof(c->token) - 1, f);
	fclose(f);
	c->token[n] = '\0';
	while (n && (c->token[n - 1] == '\n' || c->token[n - 1] == '\r' || c->token[n - 1] == ' '))
		c->token[--n] = '\0';
	if (!n)
		return die("%s: empty token file", file);
	return 0;
}

/*
 * A --set KEY=VALUE value: JSON when it parses as a scalar (true, 12,
 * "x"), otherwise the text as a string, so --set compress=lz4 works.
 */
static json_t *set_value(const char *text)
{
	json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
	if (v && !json_is_object(v) && !json_is_array(v))
		return v;
	json_decref(v);
	return json_string(text);
}

static int apply_sets(json_t *body, int argc, const char *const *argv, const struct args *a)
{
	for (int i = 0; i < a->nopts; i++) {
		if (strcmp(a->opts[i].name, "set"))
			continue;
		const char *kv = a->opts[i].value, *eq = strchr(kv, '=');
		if (!eq || eq == kv)
			return die("--set %s: expected KEY=VALUE", kv), 2;
		char key[128];
		snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
		json_object_set_new(body, key, set_value(eq + 1));
	}
	for (int i = 0; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		if (!eq || eq == argv[i])
			return die("%s: expected KEY=VALUE", argv[i]), 2;
		char key[128];
		snprintf(key, sizeof(key), "%.*s", (int)(eq - argv[i]), argv[i]);
		json_object_set_new(body, key, set_value(eq + 1));
	}
	return 0;
}

/* A size option: handed to the server as given (it validates), numbers as integers. */
static json_t *size_value(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*s && !*end && !errno && v <= INT64_MAX)
		return json_integer((json_int_t)v);
	return json_string(s);
}

/* ---- commands ---- */

static int cmd_device_create(struct ctl *c, const struct args *a)
{
	json_t *body = json_pack("{s:s}", "name", a->pos[0]);
	const char *v;
	if ((v = opt(a, "type")))
		json_object_set_new(body, "type", json_string(v));
	if ((v = opt(a, "size")))
		json_object_set_new(body, "size", size_value(v));
	if ((v = opt(a, "block-size"))) {
		char *end;
		long bs = strtol(v, &end, 10);
		json_object_set_new(body, "block_size", *end ? json_string(v) : json_integer(bs));
	}
	if (opt(a, "dedup"))
		json_object_set_new(body, "dedup", json_true());
	if (opt(a, "no-dedup"))
		json_object_set_new(body, "dedup", json_false());
	if ((v = opt(a, "compress")))
		json_object_set_new(body, "compress", json_string(v));
	if ((v = opt(a, "compress-mode")))
		json_object_set_new(body, "compress_mode", json_string(v));
	if ((v = opt(a, "path")))
		json_object_set_new(body, "path", json_string(v));
	if (opt(a, "read-only"))
		json_object_set_new(body, "read_only", json_true());
	int ret = apply_sets(body, 0, NULL, a);
	json_t *out = NULL;
	if (!ret)
		ret = call(c, "POST", "/v1/devices", body, &out);
	json_decref(body);
	if (ret)
		return ret;
	if (c->json) {
		print_json(out);
	} else {
		char size[32];
		cell("size", json_object_get(out, "size"), size, sizeof(size));
		printf("device %s created: %s, %s\n", a->pos[0],
		       json_string_value(json_object_get(out, "type")), size);
	}
	json_decref(out);
	return 0;
}

static int cmd_device_list(struct ctl *c, const struct args *a)
{
	json_t *out;
	if (call(c, "GET", "/v1/devices", NULL, &out))
		return 1;
	if (c->json) {
		print_json(out);
		json_decref(out);
		return 0;
	}
	struct table t = { .ncols = 6,
			   .head = { "NAME", "TYPE", "SIZE", "BLOCK", "STATE", "OPTIONS" } };
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(out, "devices"), i, d) {
		char name[128], type[64], size[32], bs[16], state[64], opts[512];
		cell("name", json_object_get(d, "name"), name, sizeof(name));
		cell("type", json_object_get(d, "type"), type, sizeof(type));
		cell("size", json_object_get(d, "size"), size, sizeof(size));
		cell("block_size", json_object_get(d, "block_size"), bs, sizeof(bs));
		cell("state", json_object_get(d, "state"), state, sizeof(state));
		device_options(d, opts, sizeof(opts));
		table_add(&t, name, type, size, bs, state, opts);
	}
	table_print(&t);
	json_decref(out);
	return 0;
}

static int cmd_device_show(struct ctl *c, const struct args *a)
{
	char path[512];
	item_path(c, path, sizeof(path), "devices", a->pos[0], "");
	json_t *out;
	if (call(c, "GET", path, NULL, &out))
		return 1;
	if (c->json)
		print_json(out);
	else
		print_fields(out, NULL, 0);
	json_decref(out);
	return 0;
}

static int patch_device(struct ctl *c, const char *name, json_t *body)
{
	char path[512];
	item_path(c, path, sizeof(path), "devices", name, "");
	json_t *out;
	if (call(c, "PATCH", path, body, &out))
		return 1;
	if (c->json) {
		print_json(out);
	} else {
		char size[32], opts[512];
		cell("size", json_object_get(out, "size"), size, sizeof(size));
		device_options(out, opts, sizeof(opts));
		printf("device %s: %s, %s\n", name, size, opts);
	}
	json_decref(out);
	return 0;
}

static int cmd_device_grow(struct ctl *c, const struct args *a)
{
	json_t *body = json_pack("{s:o}", "size", size_value(a->pos[1]));
	int ret = patch_device(c, a->pos[0], body);
	json_decref(body);
	return ret;
}

static int cmd_device_set(struct ctl *c, const struct args *a)
{
	json_t *body = json_object();
	int ret = apply_sets(body, a->npos - 1, a->pos + 1, a);
	if (!ret && json_object_size(body) == 0)
		ret = (die("device set: give KEY=VALUE (e.g. compress=lz4 dedup=false)"), 2);
	if (!ret)
		ret = patch_device(c, a->pos[0], body);
	json_decref(body);
	return ret;
}

static int cmd_device_delete(struct ctl *c, const struct args *a)
{
	char path[512];
	item_path(c, path, sizeof(path), "devices", a->pos[0], opt(a, "force") ? "?force=true" : "");
	if (call(c, "DELETE", path, NULL, NULL))
		return 1;
	if (!c->json)
		printf("device %s deleted\n", a->pos[0]);
	return 0;
}

static int cmd_target_create(struct ctl *c, const struct args *a)
{
	json_t *body = json_pack("{s:s}", "iqn", a->pos[0]);
	if (opt(a, "alias"))
		json_object_set_new(body, "alias", json_string(opt(a, "alias")));
	if (opt(a, "allow-any-initiator"))
		json_object_set_new(body, "allow_any_initiator", json_true());
	json_t *out;
	int ret = call(c, "POST", "/v1/targets", body, &out);
	json_decref(body);
	if (ret)
		return ret;
	if (c->json)
		print_json(out);
	else
		printf("target %s created%s\n", a->pos[0],
		       json_is_true(json_object_get(out, "allow_any_initiator"))
			       ? " (any initiator may log in)"
			       : " (no initiator admitted until an ACL is added)");
	json_decref(out);
	return 0;
}

static void access_text(const json_t *t, char *out, size_t len)
{
	size_t n = json_array_size(json_object_get(t, "acls"));
	if (json_is_true(json_object_get(t, "allow_any_initiator")))
		snprintf(out, len, "any initiator");
	else if (n)
		snprintf(out, len, "%zu ACL%s", n, n == 1 ? "" : "s");
	else
		snprintf(out, len, "nobody");
}

static int cmd_target_list(struct ctl *c, const struct args *a)
{
	json_t *out;
	if (call(c, "GET", "/v1/targets", NULL, &out))
		return 1;
	if (c->json) {
		print_json(out);
		json_decref(out);
		return 0;
	}
	struct table t = { .ncols = 4, .head = { "IQN", "ALIAS", "LUNS", "ACCESS" } };
	size_t i, k;
	json_t *tg, *l;
	json_array_foreach(json_object_get(out, "targets"), i, tg) {
		char iqn[256], alias[256], luns[512] = "", access[64];
		cell("iqn", json_object_get(tg, "iqn"), iqn, sizeof(iqn));
		cell("alias", json_object_get(tg, "alias"), alias, sizeof(alias));
		json_array_foreach(json_object_get(tg, "luns"), k, l) {
			size_t n = strlen(luns);
			snprintf(luns + n, sizeof(luns) - n, "%s%" JSON_INTEGER_FORMAT ":%s",
				 n ? "," : "", json_integer_value(json_object_get(l, "lun")),
				 json_string_value(json_object_get(l, "device")));
		}
		access_text(tg, access, sizeof(access));
		table_add(&t, iqn, alias, luns[0] ? luns : "-", access);
	}
	table_print(&t);
	json_decref(out);
	return 0;
}

static void print_luns(const json_t *luns)
{
	struct table t = { .ncols = 2, .head = { "LUN", "DEVICE" } };
	size_t i;
	json_t *l;
	json_array_foreach(luns, i, l) {
		char lun[16], dev[128];
		cell("lun", json_object_get(l, "lun"), lun, sizeof(lun));
		cell("device", json_object_get(l, "device"), dev, sizeof(dev));
		table_add(&t, lun, dev);
	}
	table_print(&t);
}

static void print_acls(const json_t *acls)
{
	struct table t = { .ncols = 4, .head = { "INITIATOR", "LUNS", "CHAP USER",
						 "MUTUAL CHAP USER" } };
	size_t i, k;
	json_t *a, *l;
	json_array_foreach(acls, i, a) {
		char ini[256], luns[256] = "", chap[256], mutual[256];
		cell("initiator", json_object_get(a, "initiator"), ini, sizeof(ini));
		json_array_foreach(json_object_get(a, "luns"), k, l) {
			size_t n = strlen(luns);
			snprintf(luns + n, sizeof(luns) - n, "%s%" JSON_INTEGER_FORMAT, n ? "," : "",
				 json_integer_value(l));
		}
		if (!json_object_get(a, "luns"))
			snprintf(luns, sizeof(luns), "all");
		cell("user", json_object_get(json_object_get(a, "chap"), "user"), chap, sizeof(chap));
		cell("user", json_object_get(json_object_get(a, "mutual_chap"), "user"), mutual,
		     sizeof(mutual));
		table_add(&t, ini, luns[0] ? luns : "none", chap, mutual);
	}
	table_print(&t);
}

static int cmd_target_show(struct ctl *c, const struct args *a)
{
	char path[512];
	item_path(c, path, sizeof(path), "targets", a->pos[0], "");
	json_t *out;
	if (call(c, "GET", path, NULL, &out))
		return 1;
	if (c->json) {
		print_json(out);
	} else {
		static const char *const skip[] = { "luns", "acls", NULL };
		char access[64];
		print_fields(out, skip, 0);
		access_text(out, access, sizeof(access));
		printf("%-20s %s\n\n", "access", access);
		print_luns(json_object_get(out, "luns"));
		putchar('\n');
		print_acls(json_object_get(out, "acls"));
	}
	json_decref(out);
	return 0;
}

static int cmd_target_delete(struct ctl *c, const struct args *a)
{
	char path[512];
	item_path(c, path, sizeof(path), "targets", a->pos[0], "");
	if (call(c, "DELETE", path, NULL, NULL))
		return 1;
	if (!c->json)
		printf("target %s deleted\n", a->pos[0]);
	return 0;
}

static int parse_lun(const char *s, json_int_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < 0)
		return die("\"%s\" is not a LUN number", s), 2;
	*out = v;
	return 0;
}

static int cmd_lun_map(struct ctl *c, const struct args *a)
{
	json_int_t lun;
	int ret = parse_lun(a->pos[1], &lun);
	if (ret)
		return ret;
	char path[512];
	item_path(c, path, sizeof(path), "targets", a->pos[0], "/luns");
	json_t *body = json_pack("{s:I,s:s}", "lun", lun, "device", a->pos[2]);
	json_t *out;
	ret = call(c, "POST", path, body, &out);
	json_decref(body);
	if (ret)
		return ret;
	if (c->json)
		print_json(out);
	else
		printf("%s LUN %s -> device %s\n", a->pos[0], a->pos[1], a->pos[2]);
	json_decref(out);
	return 0;
}

static int cmd_lun_unmap(struct ctl *c, const struct args *a)
{
	json_int_t lun;
	int ret = parse_lun(a->pos[1], &lun);
	if (ret)
		return ret;
	char path[512];
	char suffix[32];
	snprintf(suffix, sizeof(suffix), "/luns/%" JSON_INTEGER_FORMAT, lun);
	item_path(c, path, sizeof(path), "targets", a->pos[0], suffix);
	if (call(c, "DELETE", path, NULL, NULL))
		return 1;
	if (!c->json)
		printf("%s LUN %s unmapped\n", a->pos[0], a->pos[1]);
	return 0;
}

/* GET /v1/targets/{iqn}/{what} and print it: JSON, or @print's table. */
static int list_target_sub(struct ctl *c, const char *target, const char *what,
			   void (*print)(const json_t *list))
{
	char path[512];
	char suffix[16];
	snprintf(suffix, sizeof(suffix), "/%s", what);
	item_path(c, path, sizeof(path), "targets", target, suffix);
	json_t *out;
	if (call(c, "GET", path, NULL, &out))
		return 1;
	if (c->json)
		print_json(out);
	else
		print(json_object_get(out, what));
	json_decref(out);
	return 0;
}

static int cmd_lun_list(struct ctl *c, const struct args *a)
{
	return list_target_sub(c, a->pos[0], "luns", print_luns);
}

/* "chap" or "mutual_chap" from --[mutual-]chap-user and --[mutual-]chap-secret-file. */
static int chap_object(const struct args *a, const char *prefix, json_t *body, const char *key)
{
	char user_opt[64], file_opt[64], secret[512];
	snprintf(user_opt, sizeof(user_opt), "%schap-user", prefix);
	snprintf(file_opt, sizeof(file_opt), "%schap-secret-file", prefix);
	const char *user = opt(a, user_opt), *file = opt(a, file_opt);
	if (!user && !file)
		return 0;
	if (!user || !file)
		return die("--%s and --%s go together", user_opt, file_opt), 2;
	if (read_secret(file, secret, sizeof(secret)))
		return 1;
	json_object_set_new(body, key, json_pack("{s:s,s:s}", "user", user, "secret", secret));
	explicit_bzero(secret, sizeof(secret));
	return 0;
}

static int cmd_acl_add(struct ctl *c, const struct args *a)
{
	json_t *body = json_pack("{s:s}", "initiator", a->pos[1]);
	int ret = 0;
	const char *luns = opt(a, "luns");
	if (luns) {
		json_t *arr = json_array();
		char *copy = strdup(luns), *save, *tok;
		for (tok = strtok_r(copy, ",", &save); tok && !ret; tok = strtok_r(NULL, ",", &save)) {
			json_int_t n;
			if (!(ret = parse_lun(tok, &n)))
				json_array_append_new(arr, json_integer(n));
		}
		free(copy);
		json_object_set_new(body, "luns", arr);
	}
	if (!ret)
		ret = chap_object(a, "", body, "chap");
	if (!ret)
		ret = chap_object(a, "mutual-", body, "mutual_chap");
	char path[512];
	item_path(c, path, sizeof(path), "targets", a->pos[0], "/acls");
	json_t *out = NULL;
	if (!ret)
		ret = call(c, "POST", path, body, &out);
	json_decref(body);
	if (ret)
		return ret;
	if (c->json)
		print_json(out);
	else
		printf("%s: initiator %s admitted%s\n", a->pos[0], a->pos[1],
		       json_object_get(out, "chap") ? " with CHAP" : "");
	json_decref(out);
	return 0;
}

static int cmd_acl_remove(struct ctl *c, const struct args *a)
{
	char path[1024], suffix[512];
	char *ini = seg(c, a->pos[1]);
	snprintf(suffix, sizeof(suffix), "/acls/%s", ini ? ini : "");
	curl_free(ini);
	item_path(c, path, sizeof(path), "targets", a->pos[0], suffix);
	if (call(c, "DELETE", path, NULL, NULL))
		return 1;
	if (!c->json)
		printf("%s: initiator %s removed\n", a->pos[0], a->pos[1]);
	return 0;
}

static int cmd_acl_list(struct ctl *c, const struct args *a)
{
	return list_target_sub(c, a->pos[0], "acls", print_acls);
}

static int cmd_session_list(struct ctl *c, const struct args *a)
{
	json_t *out;
	if (call(c, "GET", "/v1/sessions", NULL, &out))
		return 1;
	if (c->json) {
		print_json(out);
		json_decref(out);
		return 0;
	}
	struct table t = { .ncols = 5,
			   .head = { "ID", "TARGET", "INITIATOR", "ADDRESS", "REACTOR" } };
	size_t i;
	json_t *s;
	json_array_foreach(json_object_get(out, "sessions"), i, s) {
		char id[128], tg[256], ini[256], addr[128], re[32];
		cell("id", json_object_get(s, "id"), id, sizeof(id));
		cell("target", json_object_get(s, "target"), tg, sizeof(tg));
		cell("initiator", json_object_get(s, "initiator"), ini, sizeof(ini));
		cell("address", json_object_get(s, "address"), addr, sizeof(addr));
		cell("reactor", json_object_get(s, "reactor"), re, sizeof(re));
		table_add(&t, id, tg, ini, addr, re);
	}
	table_print(&t);
	json_decref(out);
	return 0;
}

static int cmd_session_kick(struct ctl *c, const struct args *a)
{
	char path[512];
	item_path(c, path, sizeof(path), "sessions", a->pos[0], "");
	if (call(c, "DELETE", path, NULL, NULL))
		return 1;
	if (!c->json)
		printf("session %s ended\n", a->pos[0]);
	return 0;
}

static int cmd_stats(struct ctl *c, const struct args *a)
{
	json_t *out;
	if (call(c, "GET", "/v1/stats", NULL, &out))
		return 1;
	if (c->json) {
		print_json(out);
		json_decref(out);
		return 0;
	}
	static const char *const skip[] = { "devices", "targets", NULL };
	print_fields(out, skip, 0);
	struct table t = { .ncols = 11, .head = { "DEVICE", "STATE", "SIZE", "LOGICAL", "PHYSICAL",
						  "DEDUP", "COMPRESS", "READS", "WRITES", "READ",
						  "WRITTEN" } };
	static const char *const keys[] = { "name", "state", "size", "logical_bytes",
					    "physical_bytes", "dedup_ratio", "compression_ratio",
					    "read_ops", "write_ops", "read_bytes", "write_bytes" };
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(out, "devices"), i, d) {
		char v[11][64];
		for (size_t k = 0; k < TND_ARRAY_SIZE(keys); k++)
			cell(keys[k], json_object_get(d, keys[k]), v[k], sizeof(v[k]));
		table_add(&t, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]);
	}
	if (t.rows) {
		putchar('\n');
		table_print(&t);
	}
	json_decref(out);
	return 0;
}

static int cmd_version(struct ctl *c, const struct args *a)
{
	json_t *out;
	if (call(c, "GET", "/v1/version", NULL, &out))
		return 1;
	if (c->json)
		print_json(out);
	else
		printf("tandemctl %s, tandemd %s (API %s)\n", TND_VERSION,
		       json_string_value(json_object_get(out, "version")),
		       json_string_value(json_object_get(out, "api")));
	json_decref(out);
	return 0;
}

/* ---- the command table ---- */

struct command {
	const char *noun;
	const char *verb;               /* NULL: the noun alone is the command */
	const char *synopsis;
	int min_args;
	int max_args;
	const char *const *opts;        /* accepted beyond the global ones */
	int (*run)(struct ctl *c, const struct args *a);
};

static const struct command commands[] = {
	{ .noun = "device", .verb = "create", .run = cmd_device_create,
	  .synopsis = "NAME [--type lsfs|flat|passthrough] [--size 10GiB] [--block-size 512|4096]\n"
		      "                [--dedup|--no-dedup] [--compress lz4|none]\n"
		      "                [--compress-mode inline|adaptive|deferred] [--path P]\n"
		      "                [--read-only] [--set KEY=VALUE]...",
	  .min_args = 1, .max_args = 1,
	  .opts = (const char *const[]){ "type", "size", "block-size", "dedup", "no-dedup",
					 "compress", "compress-mode", "path", "read-only", "set", NULL } },
	{ .noun = "device", .verb = "list", .run = cmd_device_list, .synopsis = "" },
	{ .noun = "device", .verb = "show", .run = cmd_device_show, .synopsis = "NAME",
	  .min_args = 1, .max_args = 1 },
	{ .noun = "device", .verb = "grow", .run = cmd_device_grow, .synopsis = "NAME SIZE",
	  .min_args = 2, .max_args = 2 },
	{ .noun = "device", .verb = "set", .run = cmd_device_set,
	  .synopsis = "NAME KEY=VALUE...  (e.g. compress=none dedup=false compress_mode=deferred dedup_warmup_mbps=100)",
	  .min_args = 1, .max_args = MAX_POS, .opts = (const char *const[]){ "set", NULL } },
	{ .noun = "device", .verb = "delete", .run = cmd_device_delete, .synopsis = "NAME [--force]",
	  .min_args = 1, .max_args = 1, .opts = (const char *const[]){ "force", NULL } },

	{ .noun = "target", .verb = "create", .run = cmd_target_create,
	  .synopsis = "IQN [--alias TEXT] [--allow-any-initiator]", .min_args = 1, .max_args = 1,
	  .opts = (const char *const[]){ "alias", "allow-any-initiator", NULL } },
	{ .noun = "target", .verb = "list", .run = cmd_target_list, .synopsis = "" },
	{ .noun = "target", .verb = "show", .run = cmd_target_show, .synopsis = "IQN",
	  .min_args = 1, .max_args = 1 },
	{ .noun = "target", .verb = "delete", .run = cmd_target_delete, .synopsis = "IQN",
	  .min_args = 1, .max_args = 1 },

	{ .noun = "lun", .verb = "map", .run = cmd_lun_map, .synopsis = "TARGET-IQN LUN DEVICE",
	  .min_args = 3, .max_args = 3 },
	{ .noun = "lun", .verb = "unmap", .run = cmd_lun_unmap, .synopsis = "TARGET-IQN LUN",
	  .min_args = 2, .max_args = 2 },
	{ .noun = "lun", .verb = "list", .run = cmd_lun_list, .synopsis = "TARGET-IQN",
	  .min_args = 1, .max_args = 1 },

	{ .noun = "acl", .verb = "add", .run = cmd_acl_add,
	  .synopsis = "TARGET-IQN INITIATOR-IQN [--luns 0,1]\n"
		      "                [--chap-user U --chap-secret-file F]\n"
		      "                [--mutual-chap-user U --mutual-chap-secret-file F]",
	  .min_args = 2, .max_args = 2,
	  .opts = (const char *const[]){ "luns", "chap-user", "chap-secret-file",
					 "mutual-chap-user", "mutual-chap-secret-file", NULL } },
	{ .noun = "acl", .verb = "remove", .run = cmd_acl_remove,
	  .synopsis = "TARGET-IQN INITIATOR-IQN", .min_args = 2, .max_args = 2 },
	{ .noun = "acl", .verb = "list", .run = cmd_acl_list, .synopsis = "TARGET-IQN",
	  .min_args = 1, .max_args = 1 },

	{ .noun = "session", .verb = "list", .run = cmd_session_list, .synopsis = "" },
	{ .noun = "session", .verb = "kick", .run = cmd_session_kick, .synopsis = "ID",
	  .min_args = 1, .max_args = 1 },

	{ .noun = "stats", .run = cmd_stats, .synopsis = "" },
	{ .noun = "version", .run = cmd_version, .synopsis = "" },
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tandemctl [OPTIONS] COMMAND [ARGS]\n"
		"Manage a tandemd through its API (docs/api.md).\n\n"
		"Options (anywhere on the line):\n"
		"  --url URL          API address (default %s)\n"
		"  --data-dir DIR     read the token from DIR/api.token (default %s)\n"
		"  --token-file FILE  read the token from FILE instead\n"
		"  --cacert FILE      CA certificate for an https:// URL\n"
		"  --json             print the server's JSON instead of tables\n"
		"  --help, --version\n\nCommands:\n", DEFAULT_URL, DEFAULT_DATA_DIR);
	for (size_t i = 0; i < TND_ARRAY_SIZE(commands); i++) {
		const struct command *c = &commands[i];
		fprintf(f, "  %s%s%s%s%s\n", c->noun, c->verb ? " " : "", c->verb ? c->verb : "",
			c->synopsis[0] ? " " : "", c->synopsis);
	}
}

static const struct opt_spec *find_spec(const char *name)
{
	for (size_t i = 0; i < TND_ARRAY_SIZE(opt_specs); i++)
		if (strcmp(opt_specs[i].name, name) == 0)
			return &opt_specs[i];
	return NULL;
}

static bool listed(const char *const *list, const char *name)
{
	for (; list && *list; list++)
		if (strcmp(*list, name) == 0)
			return true;
	return false;
}

/* Split argv into options (--x, --x V, --x=V) and positionals. 0 or 2 (usage). */
static int parse(int argc, char **argv, struct args *a)
{
	bool dashdash = false;
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		if (dashdash || strncmp(s, "--", 2) != 0 || s[2] == '\0') {
			if (!dashdash && strcmp(s, "--") == 0) {
				dashdash = true;
				continue;
			}
			if (a->npos == MAX_POS)
				return die("too many arguments"), 2;
			a->pos[a->npos++] = s;
			continue;
		}
		char name[64];
		const char *eq = strchr(s + 2, '=');
		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - s - 2) : (int)strlen(s + 2),
			 s + 2);
		const struct opt_spec *spec = find_spec(name);
		if (!spec)
			return die("unknown option --%s (see tandemctl --help)", name), 2;
		if (a->nopts == MAX_OPTS)
			return die("too many options"), 2;
		const char *value = "";
		if (spec->takes_value) {
			if (eq)
				value = eq + 1;
			else if (i + 1 < argc)
				value = argv[++i];
			else
				return die("--%s needs a value", name), 2;
		} else if (eq) {
			return die("--%s takes no value", name), 2;
		}
		a->opts[a->nopts++] = (struct opt_value){ .name = spec->name, .value = value };
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct args a = { 0 };
	int ret = parse(argc, argv, &a);
	if (ret)
		return ret;
	if (opt(&a, "help")) {
		usage(stdout);
		return 0;
	}
	if (opt(&a, "version") && a.npos == 0) {
		printf("tandemctl %s\n", TND_VERSION);
		return 0;
	}
	if (a.npos == 0) {
		usage(stderr);
		return 2;
	}

	/* Find the command: "noun verb" first, then a noun that stands alone. */
	const struct command *cmd = NULL;
	int skip = 0;
	bool noun_known = false;
	for (size_t i = 0; i < TND_ARRAY_SIZE(commands) && !cmd; i++) {
		const struct command *c = &commands[i];
		if (strcmp(c->noun, a.pos[0]) != 0)
			continue;
		noun_known = true;
		if (!c->verb)
			cmd = c, skip = 1;
		else if (a.npos > 1 && strcmp(c->verb, a.pos[1]) == 0)
			cmd = c, skip = 2;
	}
	if (!cmd) {
		if (noun_known)
			die("%s: expected one of the %s commands below", a.npos > 1 ? a.pos[1] : "(none)",
			    a.pos[0]);
		else
			die("unknown command \"%s\"", a.pos[0]);
		usage(stderr);
		return 2;
	}
	struct args cargs = a;
	cargs.npos = a.npos - skip;
	for (int i = 0; i < cargs.npos; i++)
		cargs.pos[i] = a.pos[i + skip];
	if (cargs.npos < cmd->min_args || cargs.npos > cmd->max_args) {
		fprintf(stderr, "Usage: tandemctl %s%s%s %s\n", cmd->noun, cmd->verb ? " " : "",
			cmd->verb ? cmd->verb : "", cmd->synopsis);
		return 2;
	}
	for (int i = 0; i < a.nopts; i++) {
		if (!listed(global_opts, a.opts[i].name) && !listed(cmd->opts, a.opts[i].name)) {
			die("--%s does not apply to \"%s%s%s\"", a.opts[i].name, cmd->noun,
			    cmd->verb ? " " : "", cmd->verb ? cmd->verb : "");
			return 2;
		}
	}

	struct ctl c = {
		.url = opt(&a, "url") ? opt(&a, "url") : DEFAULT_URL,
		.cacert = opt(&a, "cacert"),
		.json = opt(&a, "json") != NULL,
	};
	size_t ul = strlen(c.url);
	char url[1024];
	snprintf(url, sizeof(url), "%.*s", (int)(ul && c.url[ul - 1] == '/' ? ul - 1 : ul), c.url);
	c.url = url;
	if (load_token(&c, &a))
		return 1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(c.curl = curl_easy_init()))
		return die("cannot initialise libcurl");
	ret = cmd->run(&c, &cargs);
	curl_easy_cleanup(c.curl);
	curl_global_cleanup();
	explicit_bzero(c.token, sizeof(c.token));
	return ret;
}
