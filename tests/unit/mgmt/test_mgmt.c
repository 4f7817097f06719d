/*
 * Tests for the management API: the real HTTP server on a free 127.0.0.1
 * port (port 0), the in-memory backend of fixture.c, and libcurl as the
 * client. Each test gets a fresh data directory, backend and server.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "fixture.h"
#include "tnd_common.h"
#include "tnd_mgmt.h"

#define T_IQN "iqn.2026-11.io.tandem:t1"
#define I_IQN "iqn.1994-05.com.redhat:host1"
#define SECRET "s3cret-do-not-show-1"
#define MSECRET "m-s3cret-do-not-show-2"

struct env {
	char dir[64];
	struct fixture *fx;
	struct tnd_mgmt *m;
	char token[TND_MGMT_TOKEN_LEN + 1];
	char base[64];
};

struct resp {
	long status;
	char *body;
	size_t len;
	json_t *json;
};

/* ---- helpers ---- */

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[512];
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static int start(struct env *e, const char *bind)
{
	char err[512] = "";
	struct tnd_mgmt_opts o = {
		.bind = bind,
		.data_dir = e->dir,
		.ops = &fixture_ops,
		.ctx = e->fx,
		.device_types = fixture_device_types,
	};
	int ret = tnd_mgmt_create(&o, &e->m, err, sizeof(err));
	if (ret)
		fprintf(stderr, "tnd_mgmt_create: %s\n", err);
	return ret;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "/tmp/tnd-mgmt-test.XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	e->fx = fixture_create();
	if (start(e, "127.0.0.1:0"))
		return -1;
	char err[256];
	if (tnd_mgmt_token_load_or_create(e->dir, e->token, sizeof(e->token), err, sizeof(err)))
		return -1;
	snprintf(e->base, sizeof(e->base), "http://127.0.0.1:%u", tnd_mgmt_port(e->m));
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	tnd_mgmt_destroy(e->m);
	fixture_destroy(e->fx);
	rm_rf(e->dir);
	free(e);
	return 0;
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	char *nb = realloc(r->body, r->len + size * n + 1);
	assert_non_null(nb);
	memcpy(nb + r->len, data, size * n);
	r->len += size * n;
	nb[r->len] = '\0';
	r->body = nb;
	return size * n;
}

static void resp_free(struct resp *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

/* @auth: NULL = no Authorization header, otherwise the token to send. */
static struct resp req_len(struct env *e, const char *method, const char *path, const char *body,
			   size_t body_len, const char *auth)
{
	struct resp r = { 0 };
	char url[1024], hdr[128];
	snprintf(url, sizeof(url), "%s%s", e->base, path);
	CURL *c = curl_easy_init();
	assert_non_null(c);
	struct curl_slist *h = curl_slist_append(NULL, "Expect:");
	if (auth) {
		snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", auth);
		h = curl_slist_append(h, hdr);
	}
	if (body) {
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	CURLcode rc = curl_easy_perform(c);
	if (rc != CURLE_OK)
		fprintf(stderr, "%s %s: %s\n", method, path, curl_easy_strerror(rc));
	assert_int_equal(rc, CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (r.body)
		r.json = json_loads(r.body, 0, NULL);
	return r;
}

static struct resp req(struct env *e, const char *method, const char *path, const char *body)
{
	return req_len(e, method, path, body, body ? strlen(body) : 0, e->token);
}

/* Expect @status; for errors also a {"error"} body and, if given, the field. */
static void expect(struct env *e, const char *method, const char *path, const char *body,
		   long status, const char *field)
{
	struct resp r = req(e, method, path, body);
	if (r.status != status)
		fprintf(stderr, "%s %s %s -> %ld (want %ld): %s\n", method, path, body ? body : "",
			r.status, status, r.body ? r.body : "");
	assert_int_equal(r.status, status);
	if (status >= 400) {
		assert_non_null(r.json);
		assert_true(json_is_string(json_object_get(r.json, "error")));
		if (field) {
			const char *f = json_string_value(json_object_get(r.json, "field"));
			if (!f || strcmp(f, field))
				fprintf(stderr, "%s %s: field %s, want %s (%s)\n", method, path,
					f ? f : "(none)", field, r.body);
			assert_non_null(f);
			assert_string_equal(f, field);
		}
	}
	resp_free(&r);
}

static json_t *snapshot(struct env *e)
{
	json_t *s = NULL;
	assert_int_equal(fixture_ops.config_snapshot(e->fx, &s), 0);
	return s;
}

static void make_basics(struct env *e)
{
	expect(e, "POST", "/v1/devices", "{\"name\":\"d1\",\"type\":\"lsfs\",\"size\":\"10GiB\","
	       "\"dedup\":true,\"compress\":\"lz4\"}", 201, NULL);
	expect(e, "POST", "/v1/targets", "{\"iqn\":\"" T_IQN "\",\"alias\":\"first\"}", 201, NULL);
	expect(e, "POST", "/v1/targets/" T_IQN "/luns", "{\"lun\":0,\"device\":\"d1\"}", 201, NULL);
	expect(e, "POST", "/v1/targets/" T_IQN "/acls",
	       "{\"initiator\":\"" I_IQN "\",\"luns\":[0],\"chap\":{\"user\":\"u\",\"secret\":\""
	       SECRET "\"},\"mutual_chap\":{\"user\":\"t\",\"secret\":\"" MSECRET "\"}}", 201, NULL);
	fixture_add_session(e->fx, "s1", T_IQN, I_IQN);
}

/* The route pattern with its {x} segments filled by existing objects. */
static void fill_pattern(const char *pattern, char *out, size_t len)
{
	static const struct { const char *var, *value; } vars[] = {
		{ "{name}", "d1" }, { "{iqn}", T_IQN }, { "{lun}", "0" },
		{ "{initiator}", I_IQN }, { "{id}", "s1" },
	};
	out[0] = '\0';
	const char *p = pattern;
	while (*p) {
		const char *v = NULL;
		size_t vl = 0;
		for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
			if (!strncmp(p, vars[i].var, strlen(vars[i].var))) {
				v = vars[i].value;
				vl = strlen(vars[i].var);
			}
		}
		size_t n = strlen(out);
		if (v) {
			snprintf(out + n, len - n, "%s", v);
			p += vl;
		} else {
			snprintf(out + n, len - n, "%c", *p++);
		}
	}
}

/* ---- tests ---- */

/* Every route in the table, so a route added without auth fails here. */
static void every_route_needs_the_token(void **state)
{
	struct env *e = *state;
	make_basics(e);
	size_t n;
	const struct tnd_mgmt_route *routes = tnd_mgmt_routes(&n);
	assert_true(n >= 20);
	char wrong[TND_MGMT_TOKEN_LEN + 1];
	memcpy(wrong, e->token, sizeof(wrong));
	wrong[5] = wrong[5] == 'a' ? 'b' : 'a';
	for (size_t i = 0; i < n; i++) {
		char path[256];
		fill_pattern(routes[i].pattern, path, sizeof(path));
		const char *body = strcmp(routes[i].method, "POST") == 0 ||
				   strcmp(routes[i].method, "PATCH") == 0 ? "{}" : NULL;
		bool health = !strcmp(routes[i].method, "GET") &&
			      !strcmp(routes[i].pattern, "/v1/health");
		/* Only the health check is public. */
		assert_int_equal(routes[i].public, health);

		const char *tokens[] = { NULL, wrong, "", "x" };
		for (size_t k = 0; k < sizeof(tokens) / sizeof(tokens[0]); k++) {
			struct resp r = req_len(e, routes[i].method, path, body,
						body ? strlen(body) : 0, tokens[k]);
			if (r.status != (health ? 200 : 401))
				fprintf(stderr, "%s %s without a good token -> %ld\n",
					routes[i].method, path, r.status);
			assert_int_equal(r.status, health ? 200 : 401);
			resp_free(&r);
		}
		if (strcmp(routes[i].method, "DELETE") == 0)
			continue;   /* the token's effect is checked without destroying state */
		struct resp r = req(e, routes[i].method, path, body);
		if (r.status == 401 || r.status == 404 || r.status == 405)
			fprintf(stderr, "%s %s with the token -> %ld\n", routes[i].method, path,
				r.status);
		assert_true(r.status != 401 && r.status != 404 && r.status != 405);
		resp_free(&r);
	}
	/* The token is case-sensitive hex. */
	char upper[TND_MGMT_TOKEN_LEN + 1];
	for (size_t i = 0; i <= TND_MGMT_TOKEN_LEN; i++)
		upper[i] = (char)toupper((unsigned char)e->token[i]);
	struct resp r = req_len(e, "GET", "/v1/version", NULL, 0, upper);
	assert_int_equal(r.status, 401);
	resp_free(&r);
	/* A token with trailing garbage is wrong too. */
	char longer[TND_MGMT_TOKEN_LEN + 2];
	snprintf(longer, sizeof(longer), "%s0", e->token);
	r = req_len(e, "GET", "/v1/version", NULL, 0, longer);
	assert_int_equal(r.status, 401);
	resp_free(&r);
}

static void health_and_version(void **state)
{
	struct env *e = *state;
	struct resp r = req_len(e, "GET", "/v1/health", NULL, 0, NULL);
	assert_int_equal(r.status, 200);
	assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ok");
	resp_free(&r);
	r = req(e, "GET", "/v1/version", NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(json_string_value(json_object_get(r.json, "version")));
	assert_string_equal(json_string_value(json_object_get(r.json, "api")), "v1");
	resp_free(&r);
}

static void device_lifecycle(void **state)
{
	struct env *e = *state;
	struct resp r = req(e, "POST", "/v1/devices",
			    "{\"name\":\"d1\",\"type\":\"lsfs\",\"size\":\"10GiB\",\"dedup\":true,"
			    "\"compress\":\"lz4\"}");
	assert_int_equal(r.status, 201);
	assert_int_equal(json_integer_value(json_object_get(r.json, "size")), 10ll << 30);
	assert_int_equal(json_integer_value(json_object_get(r.json, "block_size")), 512);
	resp_free(&r);

	/* Sizes as plain bytes too, and the default type is the backend's first. */
	r = req(e, "POST", "/v1/devices", "{\"name\":\"d2\",\"size\":1048576,\"block_size\":4096}");
	assert_int_equal(r.status, 201);
	assert_string_equal(json_string_value(json_object_get(r.json, "type")), "lsfs");
	resp_free(&r);

	r = req(e, "GET", "/v1/devices/d1", NULL);
	assert_int_equal(r.status, 200);
	json_t *stats = json_object_get(r.json, "stats");
	static const char *const keys[] = { "logical_bytes", "physical_bytes", "dedup_ratio",
					    "compression_ratio", "read_ops", "write_ops",
					    "read_bytes", "write_bytes" };
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		assert_true(json_is_number(json_object_get(stats, keys[i])));
	assert_true(json_is_string(json_object_get(r.json, "state")));
	assert_true(json_is_true(json_object_get(r.json, "dedup")));
	resp_free(&r);

	r = req(e, "GET", "/v1/devices", NULL);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "devices")), 2);
	resp_free(&r);

	/* Grow, change options; shrinking and fixed fields are refused. */
	r = req(e, "PATCH", "/v1/devices/d1", "{\"size\":\"20GiB\",\"compress\":\"none\"}");
	assert_int_equal(r.status, 200);
	assert_int_equal(json_integer_value(json_object_get(r.json, "size")), 20ll << 30);
	assert_string_equal(json_string_value(json_object_get(r.json, "compress")), "none");
	resp_free(&r);
	expect(e, "PATCH", "/v1/devices/d1", "{\"size\":\"1GiB\"}", 400, "size");
	expect(e, "PATCH", "/v1/devices/d1", "{\"size\":\"20GiB\"}", 200, NULL);
	expect(e, "PATCH", "/v1/devices/d1", "{\"size\":21474836481}", 400, "size");
	expect(e, "PATCH", "/v1/devices/d1", "{\"block_size\":4096}", 400, "block_size");
	expect(e, "PATCH", "/v1/devices/d1", "{\"name\":\"x\"}", 400, "name");
	expect(e, "PATCH", "/v1/devices/d1", "{\"path\":\"/x\"}", 400, "path");
	expect(e, "PATCH", "/v1/devices/d1", "{\"bogus\":1}", 400, "bogus");
	expect(e, "PATCH", "/v1/devices/d1", "{}", 400, NULL);
	/* Live feature switches: bad values name the field. */
	expect(e, "PATCH", "/v1/devices/d1", "{\"compress\":\"zstd\"}", 400, "compress");
	expect(e, "PATCH", "/v1/devices/d1", "{\"compress\":true}", 400, "compress");
	expect(e, "PATCH", "/v1/devices/d1", "{\"dedup\":\"maybe\"}", 400, "dedup");
	expect(e, "PATCH", "/v1/devices/d1", "{\"compress_mode\":\"lazy\"}", 400, "compress_mode");
	expect(e, "PATCH", "/v1/devices/d1", "{\"compress_mode\":2}", 400, "compress_mode");
	r = req(e, "PATCH", "/v1/devices/d1", "{\"compress_mode\":\"deferred\"}");
	assert_int_equal(r.status, 200);
	assert_string_equal(json_string_value(json_object_get(r.json, "compress_mode")), "deferred");
	resp_free(&r);
	expect(e, "PATCH", "/v1/devices/d1", "{\"dedup\":true,\"compress\":\"lz4\"}", 200, NULL);
	expect(e, "PATCH", "/v1/devices/nope", "{\"size\":\"30GiB\"}", 404, NULL);

	expect(e, "DELETE", "/v1/devices/d2", NULL, 204, NULL);
	expect(e, "DELETE", "/v1/devices/d2", NULL, 404, NULL);
	expect(e, "GET", "/v1/devices/d2", NULL, 404, NULL);
	expect(e, "POST", "/v1/devices", "{\"name\":\"d1\",\"size\":\"1GiB\"}", 409, NULL);
}

/* Bad bodies: 400 naming the field, and the model untouched. */
static void bad_bodies_change_nothing(void **state)
{
	struct env *e = *state;
	make_basics(e);
	json_t *before = snapshot(e);
	unsigned changes = e->fx->changes;
	static const struct { const char *path, *body, *field; } cases[] = {
		{ "/v1/devices", "{\"name\":\"d9\",", NULL },
		{ "/v1/devices", "[1,2]", NULL },
		{ "/v1/devices", "{\"name\":\"d9\",\"name\":\"d8\",\"size\":1024}", NULL },
		{ "/v1/devices", "{\"name\":7,\"size\":\"1GiB\"}", "name" },
		{ "/v1/devices", "{\"size\":\"1GiB\"}", "name" },
		{ "/v1/devices", "{\"name\":\"bad name\",\"size\":\"1GiB\"}", "name" },
		{ "/v1/devices", "{\"name\":\"-x\",\"size\":\"1GiB\"}", "name" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":\"1GiB\",\"colour\":\"red\"}", "colour" },
		{ "/v1/devices", "{\"name\":\"d9\",\"type\":\"zfs\",\"size\":\"1GiB\"}", "type" },
		{ "/v1/devices", "{\"name\":\"d9\",\"type\":5,\"size\":\"1GiB\"}", "type" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":\"ten\"}", "size" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":-1}", "size" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":0}", "size" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":1000}", "size" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":\"99999999TiB\"}", "size" },
		{ "/v1/devices", "{\"name\":\"d9\"}", "size" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":4096,\"block_size\":1024}", "block_size" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":4096,\"dedup\":\"yes\"}", "dedup" },
		{ "/v1/devices", "{\"name\":\"d9\",\"size\":4096,\"compress\":\"zstd\"}", "compress" },
		{ "/v1/devices", "{\"name\":\"d9\",\"type\":\"flat\",\"size\":4096,\"dedup\":true}",
		  "dedup" },
		{ "/v1/devices", "{\"name\":\"d1\",\"size\":4096}", "name" },
		{ "/v1/targets", "{\"iqn\":\"iqn.2026-11.io.tandem:T2\"}", "iqn" },
		{ "/v1/targets", "{\"iqn\":\"not-an-iqn\"}", "iqn" },
		{ "/v1/targets", "{\"iqn\":\"iqn.2026-11.io.tandem:t2\",\"allow_any_initiator\":1}",
		  "allow_any_initiator" },
		{ "/v1/targets", "{\"iqn\":\"iqn.2026-11.io.tandem:t2\",\"extra\":true}", "extra" },
		{ "/v1/targets", "{\"iqn\":\"iqn.2026-11.io.tandem:t2\",\"alias\":\"a\\nb\"}", "alias" },
		{ "/v1/targets", "{\"alias\":\"x\"}", "iqn" },
		{ "/v1/targets/" T_IQN "/luns", "{\"lun\":16384,\"device\":\"d1\"}", "lun" },
		{ "/v1/targets/" T_IQN "/luns", "{\"lun\":\"1\",\"device\":\"d1\"}", "lun" },
		{ "/v1/targets/" T_IQN "/luns", "{\"lun\":1,\"device\":\"no such\"}", "device" },
		{ "/v1/targets/" T_IQN "/luns", "{\"lun\":1,\"device\":\"d1\",\"ro\":1}", "ro" },
		{ "/v1/targets/" T_IQN "/luns", "{\"lun\":1,\"device\":\"d404\"}", "device" },
		{ "/v1/targets/" T_IQN "/luns", "{\"lun\":0,\"device\":\"d1\"}", "lun" },
		{ "/v1/targets/" T_IQN "/acls", "{\"initiator\":\"iqn.bad\"}", "initiator" },
		{ "/v1/targets/" T_IQN "/acls", "{\"initiator\":\"" I_IQN "x\",\"luns\":[0,0]}",
		  "luns" },
		{ "/v1/targets/" T_IQN "/acls", "{\"initiator\":\"" I_IQN "x\",\"luns\":[-1]}",
		  "luns[0]" },
		{ "/v1/targets/" T_IQN "/acls", "{\"initiator\":\"" I_IQN "x\",\"luns\":0}", "luns" },
		{ "/v1/targets/" T_IQN "/acls",
		  "{\"initiator\":\"" I_IQN "x\",\"chap\":{\"user\":\"u\",\"secret\":\"short\"}}",
		  "chap.secret" },
		{ "/v1/targets/" T_IQN "/acls",
		  "{\"initiator\":\"" I_IQN "x\",\"chap\":{\"user\":\"\",\"secret\":\"" SECRET "\"}}",
		  "chap.user" },
		{ "/v1/targets/" T_IQN "/acls",
		  "{\"initiator\":\"" I_IQN "x\",\"chap\":{\"user\":\"u\",\"secret\":\"" SECRET "\","
		  "\"hint\":1}}", "chap.hint" },
		{ "/v1/targets/" T_IQN "/acls",
		  "{\"initiator\":\"" I_IQN "x\",\"mutual_chap\":{\"user\":\"u\",\"secret\":\""
		  SECRET "\"}}", "mutual_chap" },
		{ "/v1/targets/" T_IQN "/acls",
		  "{\"initiator\":\"" I_IQN "x\",\"chap\":{\"user\":\"u\",\"secret\":\"" SECRET "\"},"
		  "\"mutual_chap\":{\"user\":\"t\",\"secret\":\"" SECRET "\"}}", "mutual_chap.secret" },
		{ "/v1/targets/" T_IQN "/acls", "{\"initiator\":\"" I_IQN "\"}", "initiator" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct resp r = req(e, "POST", cases[i].path, cases[i].body);
		if (r.status != 400 && r.status != 404 && r.status != 409)
			fprintf(stderr, "case %zu: %s -> %ld %s\n", i, cases[i].body, r.status,
				r.body);
		assert_true(r.status == 400 || r.status == 404 || r.status == 409);
		assert_non_null(r.json);
		assert_true(json_is_string(json_object_get(r.json, "error")));
		const char *f = json_string_value(json_object_get(r.json, "field"));
		if (cases[i].field && (!f || strcmp(f, cases[i].field))) {
			fprintf(stderr, "case %zu: %s -> field %s, want %s\n", i, cases[i].body,
				f ? f : "(none)", cases[i].field);
			fail();
		}
		/* The CHAP secret is never echoed, not even in an error. */
		assert_null(strstr(r.body, SECRET));
		resp_free(&r);
	}
	/* Malformed JSON and wrong top-level types are 400s specifically. */
	expect(e, "POST", "/v1/devices", "{\"name\":", 400, NULL);
	expect(e, "POST", "/v1/devices", "\"d1\"", 400, NULL);
	expect(e, "POST", "/v1/targets", "", 400, NULL);
	expect(e, "POST", "/v1/devices", "{\"name\":\"d\\u0000x\",\"size\":4096}", 400, NULL);
	expect(e, "POST", "/v1/devices", "{\"name\":\"d9\",\"size\":4096,\"unknown\":1}", 400,
	       "unknown");
	expect(e, "POST", "/v1/targets", "{\"iqn\":\"iqn.2026-11.io.tandem:t2\",\"x\":1}", 400, "x");

	json_t *after = snapshot(e);
	assert_true(json_equal(before, after));
	assert_int_equal(e->fx->changes, changes);
	json_decref(before);
	json_decref(after);
}

struct chunked {
	size_t left;
};

static size_t chunked_read(char *buf, size_t size, size_t n, void *arg)
{
	struct chunked *c = arg;
	size_t len = TND_MIN(size * n, c->left);
	memset(buf, ' ', len);
	if (len && c->left == 64u << 20)
		buf[0] = '{';
	c->left -= len;
	return len;
}

static void oversized_body_is_refused(void **state)
{
	struct env *e = *state;
	size_t n = TND_MGMT_MAX_BODY + 100;
	char *big = malloc(n + 1);
	memset(big, ' ', n);
	memcpy(big, "{\"name\":\"big\",\"size\":4096", 25);
	big[n - 1] = '}';
	big[n] = '\0';
	struct resp r = req_len(e, "POST", "/v1/devices", big, n, e->token);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "larger than"));
	resp_free(&r);
	free(big);
	expect(e, "GET", "/v1/devices/big", NULL, 404, NULL);
	assert_int_equal(e->fx->changes, 0);

	/* Chunked, with no Content-Length to refuse it by: stopped once past the limit. */
	struct chunked src = { .left = 64u << 20 };
	char url[128], hdr[128];
	snprintf(url, sizeof(url), "%s/v1/devices", e->base);
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", e->token);
	CURL *c = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, hdr);
	h = curl_slist_append(h, "Transfer-Encoding: chunked");
	h = curl_slist_append(h, "Expect:");
	r = (struct resp){ 0 };
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, chunked_read);
	curl_easy_setopt(c, CURLOPT_READDATA, &src);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	/* The server answers and closes; curl may see the close while still sending. */
	assert_true(rc == CURLE_OK || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR);
	if (rc == CURLE_OK)
		assert_int_equal(r.status, 400);
	assert_true(src.left > 0);     /* it did not read all 64 MiB */
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	resp_free(&r);
	assert_int_equal(e->fx->changes, 0);
	/* The server still answers after refusing it. */
	expect(e, "GET", "/v1/version", NULL, 200, NULL);
}

static void not_found_and_wrong_method(void **state)
{
	struct env *e = *state;
	expect(e, "GET", "/v1/nothing", NULL, 404, NULL);
	expect(e, "GET", "/v2/devices", NULL, 404, NULL);
	expect(e, "GET", "/v1/devices/", NULL, 404, NULL);
	expect(e, "GET", "/v1/devices/a/b", NULL, 404, NULL);
	expect(e, "PUT", "/v1/devices", "{}", 405, NULL);
	expect(e, "DELETE", "/v1/devices", NULL, 405, NULL);
	expect(e, "POST", "/v1/health", "{}", 405, NULL);
	expect(e, "PATCH", "/v1/targets/" T_IQN, "{}", 405, NULL);
	expect(e, "GET", "/v1/devices/nope", NULL, 404, NULL);
	expect(e, "GET", "/v1/targets/" T_IQN, NULL, 404, NULL);
	expect(e, "GET", "/v1/targets/" T_IQN "/luns", NULL, 404, NULL);
	expect(e, "GET", "/v1/targets/" T_IQN "/acls", NULL, 404, NULL);
	expect(e, "DELETE", "/v1/sessions/zz", NULL, 404, NULL);
	expect(e, "GET", "/v1/devices/bad%20name", NULL, 400, "name");
	expect(e, "GET", "/v1/targets/NOT.AN.IQN", NULL, 400, "iqn");
	expect(e, "DELETE", "/v1/targets/Bad/luns/0", NULL, 400, "iqn");
	expect(e, "POST", "/v1/targets", "{\"iqn\":\"" T_IQN "\"}", 201, NULL);
	expect(e, "DELETE", "/v1/targets/" T_IQN "/luns/x", NULL, 400, "lun");
	expect(e, "DELETE", "/v1/targets/" T_IQN "/luns/99999", NULL, 400, "lun");
	expect(e, "DELETE", "/v1/targets/" T_IQN "/luns/3", NULL, 404, NULL);
	expect(e, "POST", "/v1/targets", "{\"iqn\":\"" T_IQN "\"}", 409, NULL);
	expect(e, "DELETE", "/v1/devices/x?force=maybe", NULL, 400, "force");
	struct resp r = req(e, "PUT", "/v1/devices", "{}");
	assert_int_equal(r.status, 405);
	resp_free(&r);
}

static void mapped_device_delete_conflicts(void **state)
{
	struct env *e = *state;
	make_basics(e);
	json_t *before = snapshot(e);
	expect(e, "DELETE", "/v1/devices/d1", NULL, 409, NULL);
	expect(e, "DELETE", "/v1/devices/d1?force=false", NULL, 409, NULL);
	json_t *after = snapshot(e);
	assert_true(json_equal(before, after));
	json_decref(before);
	json_decref(after);
	expect(e, "DELETE", "/v1/devices/d1?force=true", NULL, 204, NULL);
	struct resp r = req(e, "GET", "/v1/targets/" T_IQN "/luns", NULL);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "luns")), 0);
	resp_free(&r);
}

static void targets_luns_acls(void **state)
{
	struct env *e = *state;
	expect(e, "POST", "/v1/devices", "{\"name\":\"d1\",\"size\":\"1GiB\"}", 201, NULL);
	struct resp r = req(e, "POST", "/v1/targets", "{\"iqn\":\"" T_IQN "\"}");
	assert_int_equal(r.status, 201);
	/* A new target admits nobody. */
	assert_true(json_is_false(json_object_get(r.json, "allow_any_initiator")));
	assert_int_equal(json_array_size(json_object_get(r.json, "acls")), 0);
	resp_free(&r);

	r = req(e, "POST", "/v1/targets/" T_IQN "/luns", "{\"lun\":3,\"device\":\"d1\"}");
	assert_int_equal(r.status, 201);
	assert_int_equal(json_integer_value(json_object_get(r.json, "lun")), 3);
	resp_free(&r);
	expect(e, "POST", "/v1/targets/" T_IQN "/luns", "{\"lun\":3,\"device\":\"d1\"}", 409, "lun");
	expect(e, "POST", "/v1/targets/iqn.2026-11.io.tandem:none/luns",
	       "{\"lun\":3,\"device\":\"d1\"}", 404, NULL);

	r = req(e, "POST", "/v1/targets/" T_IQN "/acls",
		"{\"initiator\":\"" I_IQN "\",\"luns\":[3,1],\"chap\":{\"user\":\"u\",\"secret\":\""
		SECRET "\"}}");
	assert_int_equal(r.status, 201);
	json_t *luns = json_object_get(r.json, "luns");
	assert_int_equal(json_integer_value(json_array_get(luns, 0)), 1);   /* sorted */
	assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "chap"),
							      "user")), "u");
	assert_null(json_object_get(json_object_get(r.json, "chap"), "secret"));
	resp_free(&r);
	expect(e, "POST", "/v1/targets/" T_IQN "/acls", "{\"initiator\":\"" I_IQN "\"}", 409,
	       "initiator");

	r = req(e, "GET", "/v1/targets/" T_IQN "/acls", NULL);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "acls")), 1);
	resp_free(&r);
	r = req(e, "GET", "/v1/targets", NULL);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "targets")), 1);
	resp_free(&r);

	expect(e, "DELETE", "/v1/targets/" T_IQN "/acls/" I_IQN, NULL, 204, NULL);
	expect(e, "DELETE", "/v1/targets/" T_IQN "/acls/" I_IQN, NULL, 404, NULL);
	expect(e, "DELETE", "/v1/targets/" T_IQN "/luns/3", NULL, 204, NULL);
	expect(e, "DELETE", "/v1/targets/" T_IQN, NULL, 204, NULL);
	expect(e, "DELETE", "/v1/targets/" T_IQN, NULL, 404, NULL);

	/* allow_any_initiator and alias are kept. */
	r = req(e, "POST", "/v1/targets", "{\"iqn\":\"eui.0123456789abcdef\",\"alias\":\"open\","
		"\"allow_any_initiator\":true}");
	assert_int_equal(r.status, 201);
	assert_true(json_is_true(json_object_get(r.json, "allow_any_initiator")));
	assert_string_equal(json_string_value(json_object_get(r.json, "alias")), "open");
	resp_free(&r);
}

static void sessions_and_stats(void **state)
{
	struct env *e = *state;
	make_basics(e);
	struct resp r = req(e, "GET", "/v1/sessions", NULL);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "sessions")), 1);
	resp_free(&r);
	r = req(e, "GET", "/v1/stats", NULL);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_integer_value(json_object_get(r.json, "sessions")), 1);
	resp_free(&r);
	expect(e, "DELETE", "/v1/sessions/s1", NULL, 204, NULL);
	expect(e, "DELETE", "/v1/sessions/s1", NULL, 404, NULL);
	expect(e, "DELETE", "/v1/sessions/a%20b", NULL, 400, "id");
}

/* Every GET after an ACL with secrets was added: no secret anywhere. */
static void chap_secrets_are_never_returned(void **state)
{
	struct env *e = *state;
	make_basics(e);
	size_t n;
	const struct tnd_mgmt_route *routes = tnd_mgmt_routes(&n);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(routes[i].method, "GET"))
			continue;
		char path[256];
		fill_pattern(routes[i].pattern, path, sizeof(path));
		struct resp r = req(e, "GET", path, NULL);
		assert_int_equal(r.status, 200);
		assert_null(strstr(r.body, SECRET));
		assert_null(strstr(r.body, MSECRET));
		assert_null(strstr(r.body, "\"secret\""));
		resp_free(&r);
	}
	/* ...but the persisted configuration keeps them, for the restart. */
	char path[128], buf[8192];
	snprintf(path, sizeof(path), "%s/config.json", e->dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t len = fread(buf, 1, sizeof(buf) - 1, f);
	buf[len] = '\0';
	fclose(f);
	assert_non_null(strstr(buf, SECRET));
}

static void config_is_persisted_atomically(void **state)
{
	struct env *e = *state;
	char path[128];
	snprintf(path, sizeof(path), "%s/config.json", e->dir);
	struct stat st;
	assert_int_equal(stat(path, &st), -1);   /* nothing changed yet, nothing written */

	make_basics(e);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	json_t *disk = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	json_t *snap = snapshot(e);
	assert_non_null(disk);
	assert_true(json_equal(disk, snap));
	json_decref(disk);
	json_decref(snap);

	/* A failed request does not rewrite it; a successful one does. */
	ino_t ino = st.st_ino;
	expect(e, "POST", "/v1/devices", "{\"name\":\"x\",\"size\":\"bad\"}", 400, "size");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_ino, ino);
	expect(e, "PATCH", "/v1/devices/d1", "{\"size\":\"11GiB\"}", 200, NULL);
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_ino != ino);    /* replaced by rename, not rewritten in place */
	disk = json_load_file(path, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(
		json_object_get(disk, "devices"), 0), "size")), 11ll << 30);
	json_decref(disk);

	/* No temp file left behind. */
	DIR *d = opendir(e->dir);
	struct dirent *de;
	while ((de = readdir(d)))
		assert_null(strstr(de->d_name, ".config.json."));
	closedir(d);
}

/* A backend failure is reported and nothing is persisted. */
static void backend_errors_map_to_statuses(void **state)
{
	struct env *e = *state;
	char path[128];
	struct stat st;
	snprintf(path, sizeof(path), "%s/config.json", e->dir);
	e->fx->fail_next = -EIO;
	expect(e, "POST", "/v1/devices", "{\"name\":\"d1\",\"size\":4096}", 500, NULL);
	assert_int_equal(stat(path, &st), -1);
	e->fx->fail_next = -ENOSPC;
	expect(e, "POST", "/v1/devices", "{\"name\":\"d1\",\"size\":4096}", 507, NULL);
	e->fx->fail_next = -EINVAL;
	expect(e, "GET", "/v1/stats", NULL, 400, NULL);
	e->fx->fail_next = -EIO;
	expect(e, "GET", "/metrics", NULL, 500, NULL);
	expect(e, "GET", "/v1/devices", NULL, 200, NULL);
}

static void persist_config_writes_exactly_the_document(void **state)
{
	struct env *e = *state;
	json_t *doc = json_pack("{s:[{s:s,s:i}],s:[]}", "devices", "name", "a", "size", 4096,
				"targets");
	assert_int_equal(tnd_mgmt_persist_config(e->dir, doc), 0);
	char path[128];
	snprintf(path, sizeof(path), "%s/config.json", e->dir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	json_t *back = json_load_file(path, 0, NULL);
	assert_true(json_equal(doc, back));
	json_decref(back);
	/* Overwriting a file that was 0644 leaves it 0600. */
	chmod(path, 0644);
	assert_int_equal(tnd_mgmt_persist_config(e->dir, doc), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(tnd_mgmt_persist_config("/nonexistent-dir-tnd", doc), -ENOENT);
	json_decref(doc);
}

static void token_is_created_private_and_reused(void **state)
{
	struct env *e = *state;
	char path[128];
	snprintf(path, sizeof(path), "%s/api.token", e->dir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, TND_MGMT_TOKEN_LEN + 1);
	assert_int_equal(strlen(e->token), TND_MGMT_TOKEN_LEN);

	/* A restart reuses it. */
	tnd_mgmt_destroy(e->m);
	e->m = NULL;
	assert_int_equal(start(e, "127.0.0.1:0"), 0);
	char again[TND_MGMT_TOKEN_LEN + 1], err[256];
	assert_int_equal(tnd_mgmt_token_load_or_create(e->dir, again, sizeof(again), err,
						       sizeof(err)), 0);
	assert_string_equal(again, e->token);
	snprintf(e->base, sizeof(e->base), "http://127.0.0.1:%u", tnd_mgmt_port(e->m));
	expect(e, "GET", "/v1/version", NULL, 200, NULL);

	/* Two data directories get different tokens. */
	char dir2[] = "/tmp/tnd-mgmt-test2.XXXXXX", other[TND_MGMT_TOKEN_LEN + 1];
	assert_non_null(mkdtemp(dir2));
	assert_int_equal(tnd_mgmt_token_load_or_create(dir2, other, sizeof(other), err,
						       sizeof(err)), 0);
	assert_string_not_equal(other, e->token);
	rm_rf(dir2);
}

static void unsafe_token_files_are_refused(void **state)
{
	struct env *e = *state;
	char path[128], tok[TND_MGMT_TOKEN_LEN + 1], err[512];
	snprintf(path, sizeof(path), "%s/api.token", e->dir);
	tnd_mgmt_destroy(e->m);
	e->m = NULL;

	chmod(path, 0644);
	assert_int_equal(tnd_mgmt_token_load_or_create(e->dir, tok, sizeof(tok), err,
						       sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "0644"));
	assert_int_equal(start(e, "127.0.0.1:0"), -EACCES);
	chmod(path, 0640);
	assert_int_equal(start(e, "127.0.0.1:0"), -EACCES);

	/* Not a token. */
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hunter2\n", 8), 8);
	close(fd);
	assert_int_equal(tnd_mgmt_token_load_or_create(e->dir, tok, sizeof(tok), err,
						       sizeof(err)), -EINVAL);
	/* A symlink is not followed. */
	unlink(path);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_true(tnd_mgmt_token_load_or_create(e->dir, tok, sizeof(tok), err, sizeof(err)) < 0);
	unlink(path);
	assert_int_equal(start(e, "127.0.0.1:0"), 0);
}

static void loopback_only_without_tls(void **state)
{
	struct env *e = *state;
	struct tnd_mgmt *m = NULL;
	char err[512] = "";
	static const char *const refused[] = { "0.0.0.0:0", "[::]:0", "192.0.2.1:9260",
					       "localhost:9260", "127.0.0.1", "127.0.0.1:70000",
					       "[::1:9260" };
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		struct tnd_mgmt_opts o = { .bind = refused[i], .data_dir = e->dir,
					   .ops = &fixture_ops, .ctx = e->fx,
					   .device_types = fixture_device_types };
		assert_int_equal(tnd_mgmt_create(&o, &m, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != '\0');
	}
	/* Cert without key. */
	struct tnd_mgmt_opts o = { .bind = "127.0.0.1:0", .data_dir = e->dir, .ops = &fixture_ops,
				   .ctx = e->fx, .device_types = fixture_device_types,
				   .tls_cert_file = "/nonexistent" };
	assert_int_equal(tnd_mgmt_create(&o, &m, err, sizeof(err)), -EINVAL);
	/* A missing op is refused up front. */
	struct tnd_mgmt_backend_ops partial = fixture_ops;
	partial.acl_remove = NULL;
	o.tls_cert_file = NULL;
	o.ops = &partial;
	assert_int_equal(tnd_mgmt_create(&o, &m, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "acl_remove"));
	/* A port in use is named as such. */
	char busy[32];
	snprintf(busy, sizeof(busy), "127.0.0.1:%u", tnd_mgmt_port(e->m));
	o.ops = &fixture_ops;
	o.bind = busy;
	assert_true(tnd_mgmt_create(&o, &m, err, sizeof(err)) < 0);
	fprintf(stderr, "note: %s\n", err);
	assert_non_null(strstr(err, "in use"));
	/* IPv6 loopback is fine. */
	o.ops = &fixture_ops;
	o.bind = "[::1]:0";
	int ret = tnd_mgmt_create(&o, &m, err, sizeof(err));
	if (ret == 0)
		tnd_mgmt_destroy(m);
	else
		fprintf(stderr, "note: no IPv6 loopback here (%s)\n", err);
}

/* TLS off loopback: served over https with the given certificate. */
static void tls_is_served(void **state)
{
	struct env *e = *state;
	char cert[128], key[128], cmd[512];
	snprintf(cert, sizeof(cert), "%s/cert.pem", e->dir);
	snprintf(key, sizeof(key), "%s/key.pem", e->dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 "
		 "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1", key, cert);
	if (system(cmd) != 0) {
		fprintf(stderr, "note: openssl not available, TLS not tested\n");
		skip();
	}
	struct tnd_mgmt *m = NULL;
	char err[512] = "";
	struct tnd_mgmt_opts o = { .bind = "127.0.0.1:0", .data_dir = e->dir, .ops = &fixture_ops,
				   .ctx = e->fx, .device_types = fixture_device_types,
				   .tls_cert_file = cert, .tls_key_file = key };
	int ret = tnd_mgmt_create(&o, &m, err, sizeof(err));
	if (ret)
		fprintf(stderr, "tls create: %s\n", err);
	assert_int_equal(ret, 0);

	char url[128], hdr[128];
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/v1/version", tnd_mgmt_port(m));
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", e->token);
	struct resp r = { 0 };
	CURL *c = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, hdr);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CAINFO, cert);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	assert_int_equal(r.status, 200);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	resp_free(&r);
	tnd_mgmt_destroy(m);
}

/* Prometheus text format: HELP/TYPE before samples, every sample line well formed. */
static void metrics_parse(void **state)
{
	struct env *e = *state;
	make_basics(e);
	expect(e, "POST", "/v1/devices", "{\"name\":\"d2\",\"type\":\"flat\",\"size\":\"1GiB\"}",
	       201, NULL);
	struct resp r = req(e, "GET", "/metrics", NULL);
	assert_int_equal(r.status, 200);
	regex_t sample, help, type;
	assert_int_equal(regcomp(&sample,
				 "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
				 "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
				 "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*\\})?"
				 " (-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?|[-+]Inf|NaN)$",
				 REG_EXTENDED), 0);
	assert_int_equal(regcomp(&help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$", REG_EXTENDED), 0);
	assert_int_equal(regcomp(&type, "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) "
				 "(counter|gauge|histogram|summary|untyped)$", REG_EXTENDED), 0);
	char *save, *line, typed[128][64];
	size_t ntyped = 0, nsamples = 0;
	bool saw_read_ops = false, saw_bucket = false, saw_ratio = false, saw_sessions = false;
	for (line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		regmatch_t mt[3];
		if (!regexec(&help, line, 0, NULL, 0))
			continue;
		if (!regexec(&type, line, 3, mt, 0)) {
			assert_true(ntyped < 128);
			snprintf(typed[ntyped++], 64, "%.*s", (int)(mt[1].rm_eo - mt[1].rm_so),
				 line + mt[1].rm_so);
			continue;
		}
		if (regexec(&sample, line, 3, mt, 0)) {
			fprintf(stderr, "bad metrics line: %s\n", line);
			fail();
		}
		nsamples++;
		char name[64];
		snprintf(name, sizeof(name), "%.*s", (int)(mt[1].rm_eo - mt[1].rm_so),
			 line + mt[1].rm_so);
		bool declared = false;
		for (size_t i = 0; i < ntyped && !declared; i++) {
			size_t tl = strlen(typed[i]);
			declared = !strcmp(name, typed[i]) ||
				   (!strncmp(name, typed[i], tl) &&
				    (!strcmp(name + tl, "_bucket") || !strcmp(name + tl, "_sum") ||
				     !strcmp(name + tl, "_count")));
		}
		if (!declared)
			fprintf(stderr, "sample before its TYPE: %s\n", line);
		assert_true(declared);
		saw_read_ops |= !strncmp(line, "tandem_device_read_ops_total{device=\"d1\"} 10", 46);
		saw_bucket |= strstr(line, "le=\"+Inf\"} 10") != NULL;
		saw_ratio |= !strncmp(line, "tandem_device_dedup_ratio{device=\"d2\"} 2", 40);
		saw_sessions |= !strcmp(line, "tandem_sessions 1");
	}
	assert_true(nsamples > 20);
	assert_true(saw_read_ops && saw_bucket && saw_ratio && saw_sessions);
	regfree(&sample);
	regfree(&help);
	regfree(&type);
	resp_free(&r);
}

static int connect_port(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* Clients that stall mid-headers or mid-body do not hold up anybody else. */
static void slow_client_does_not_block_others(void **state)
{
	struct env *e = *state;
	uint16_t port = tnd_mgmt_port(e->m);
	int stalled[4];
	char buf[512];
	stalled[0] = connect_port(port);                      /* sends nothing */
	stalled[1] = connect_port(port);                      /* half a request line */
	assert_true(write(stalled[1], "GET /v1/dev", 11) == 11);
	stalled[2] = connect_port(port);                      /* headers, half the body */
	int n = snprintf(buf, sizeof(buf), "POST /v1/devices HTTP/1.1\r\nHost: x\r\n"
			 "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: 100\r\n\r\n{\"name\":", e->token);
	assert_true(write(stalled[2], buf, (size_t)n) == n);
	stalled[3] = connect_port(port);
	assert_true(write(stalled[3], "GET /v1/version HTTP/1.1\r\nHost: x\r\n", 35) == 35);

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 20; i++) {
		expect(e, "GET", "/v1/version", NULL, 200, NULL);
		expect(e, "POST", "/v1/targets", "{\"iqn\":\"iqn.2026-11.io.tandem:slow\"}",
		       i == 0 ? 201 : 409, NULL);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(s < 5.0);
	for (int i = 0; i < 4; i++)
		close(stalled[i]);
}

/* Threads record what they saw; only the main thread asserts (cmocka's longjmp). */
struct creator {
	struct env *e;
	int id;
	int bad;
};

static void *create_devices(void *arg)
{
	struct creator *c = arg;
	for (int i = 0; i < 10; i++) {
		char body[128];
		snprintf(body, sizeof(body), "{\"name\":\"c%d-%d\",\"size\":\"1GiB\"}", c->id, i);
		struct resp r = req(c->e, "POST", "/v1/devices", body);
		c->bad += r.status != 201;
		resp_free(&r);
	}
	return NULL;
}

/* Concurrent changes: config.json ends equal to the final state, never behind it. */
static void concurrent_changes_persist_in_order(void **state)
{
	struct env *e = *state;
	pthread_t th[4];
	struct creator c[4];
	for (int i = 0; i < 4; i++) {
		c[i] = (struct creator){ .e = e, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, create_devices, &c[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(c[i].bad, 0);
	}
	char path[128];
	snprintf(path, sizeof(path), "%s/config.json", e->dir);
	json_t *disk = json_load_file(path, 0, NULL);
	json_t *snap = snapshot(e);
	assert_int_equal(json_array_size(json_object_get(disk, "devices")), 40);
	assert_true(json_equal(disk, snap));
	json_decref(disk);
	json_decref(snap);
}

static void *slow_list(void *arg)
{
	struct env *e = arg;
	struct resp r = req(e, "GET", "/v1/devices", NULL);
	long status = r.status;
	resp_free(&r);
	return (void *)(intptr_t)status;
}

/* A slow backend op delays other backend calls, never the health check. */
static void health_answers_during_a_slow_op(void **state)
{
	struct env *e = *state;
	e->fx->delay_ms = 1500;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, slow_list, e), 0);
	struct timespec pause = { .tv_nsec = 200 * 1000000 }, t0, t1;
	nanosleep(&pause, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct resp r = req_len(e, "GET", "/v1/health", NULL, 0, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(s < 1.0);
	void *status;
	pthread_join(th, &status);
	assert_int_equal((intptr_t)status, 200);
	e->fx->delay_ms = 0;
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(every_route_needs_the_token, setup, teardown),
		cmocka_unit_test_setup_teardown(health_and_version, setup, teardown),
		cmocka_unit_test_setup_teardown(device_lifecycle, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_bodies_change_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(oversized_body_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(not_found_and_wrong_method, setup, teardown),
		cmocka_unit_test_setup_teardown(mapped_device_delete_conflicts, setup, teardown),
		cmocka_unit_test_setup_teardown(targets_luns_acls, setup, teardown),
		cmocka_unit_test_setup_teardown(sessions_and_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(chap_secrets_are_never_returned, setup, teardown),
		cmocka_unit_test_setup_teardown(config_is_persisted_atomically, setup, teardown),
		cmocka_unit_test_setup_teardown(backend_errors_map_to_statuses, setup, teardown),
		cmocka_unit_test_setup_teardown(persist_config_writes_exactly_the_document, setup,
						teardown),
		cmocka_unit_test_setup_teardown(token_is_created_private_and_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(unsafe_token_files_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(loopback_only_without_tls, setup, teardown),
		cmocka_unit_test_setup_teardown(tls_is_served, setup, teardown),
		cmocka_unit_test_setup_teardown(metrics_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(slow_client_does_not_block_others, setup, teardown),
		cmocka_unit_test_setup_teardown(concurrent_changes_persist_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(health_answers_during_a_slow_op, setup, teardown),
	};
	int ret = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return ret;
}
