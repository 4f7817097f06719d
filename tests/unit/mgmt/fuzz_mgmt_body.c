/*
 * fuzz_mgmt_body — libFuzzer target for the management API's request
 * bodies, through the real server (HTTP parsing, routing, JSON parsing,
 * validation) over the in-memory backend.
 *
 * Input: the first byte picks a mutating route, the rest is the body. Every
 * answer must be a known status with a JSON body, and no answer may hold the
 * CHAP secret that the seed ACL carries. The server and backend live for the
 * whole process (test code: the one place a fuzzer keeps state).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>

#include "fixture.h"
#include "tnd_mgmt.h"

#define T_IQN "iqn.2026-11.io.tandem:t1"
#define SECRET "fuzz-secret-never-returned"

static struct {
	struct fixture *fx;
	struct tnd_mgmt *m;
	char base[64];
	char auth[128];
	CURL *curl;
} g;

static const struct {
	const char *method;
	const char *path;
} routes[] = {
	{ "POST", "/v1/devices" },
	{ "PATCH", "/v1/devices/d1" },
	{ "POST", "/v1/targets" },
	{ "POST", "/v1/targets/" T_IQN "/luns" },
	{ "POST", "/v1/targets/" T_IQN "/acls" },
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
		abort();
	memcpy(nb + b->len, data, size * n);
	b->len += size * n;
	nb[b->len] = '\0';
	b->data = nb;
	return size * n;
}

static long send_req(const char *method, const char *path, const char *body, size_t len,
		     struct buf *out)
{
	char url[256];
	snprintf(url, sizeof(url), "%s%s", g.base, path);
	struct curl_slist *h = curl_slist_append(NULL, g.auth);
	h = curl_slist_append(h, "Expect:");
	curl_easy_reset(g.curl);
	curl_easy_setopt(g.curl, CURLOPT_URL, url);
	curl_easy_setopt(g.curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(g.curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(g.curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(g.curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(g.curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(g.curl, CURLOPT_WRITEDATA, out);
	if (curl_easy_perform(g.curl) != CURLE_OK)
		abort();
	long status = 0;
	curl_easy_getinfo(g.curl, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	return status;
}

static char dir[] = "/tmp/tnd-fuzz-mgmt.XXXXXX";

static void remove_dir(void)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/%s", dir, TND_MGMT_TOKEN_FILE);
	unlink(p);
	snprintf(p, sizeof(p), "%s/%s", dir, TND_MGMT_CONFIG_FILE);
	unlink(p);
	rmdir(dir);
}

static void start(void)
{
	char err[512], token[TND_MGMT_TOKEN_LEN + 1];
	if (!mkdtemp(dir))
		abort();
	atexit(remove_dir);
	curl_global_init(CURL_GLOBAL_ALL);
	g.fx = fixture_create();
	struct tnd_mgmt_opts o = { .bind = "127.0.0.1:0", .data_dir = dir, .ops = &fixture_ops,
				   .ctx = g.fx, .device_types = fixture_device_types };
	if (tnd_mgmt_create(&o, &g.m, err, sizeof(err)) ||
	    tnd_mgmt_token_load_or_create(dir, token, sizeof(token), err, sizeof(err))) {
		fprintf(stderr, "fuzz_mgmt_body: %s\n", err);
		abort();
	}
	snprintf(g.base, sizeof(g.base), "http://127.0.0.1:%u", tnd_mgmt_port(g.m));
	snprintf(g.auth, sizeof(g.auth), "Authorization: Bearer %s", token);
	g.curl = curl_easy_init();
	static const char *const seed[][3] = {
		{ "POST", "/v1/devices", "{\"name\":\"d1\",\"size\":\"1GiB\"}" },
		{ "POST", "/v1/targets", "{\"iqn\":\"" T_IQN "\"}" },
		{ "POST", "/v1/targets/" T_IQN "/luns", "{\"lun\":0,\"device\":\"d1\"}" },
		{ "POST", "/v1/targets/" T_IQN "/acls",
		  "{\"initiator\":\"iqn.1994-05.com.redhat:h\",\"chap\":{\"user\":\"u\","
		  "\"secret\":\"" SECRET "\"}}" },
	};
	for (size_t i = 0; i < sizeof(seed) / sizeof(seed[0]); i++) {
		struct buf b = { 0 };
		if (send_req(seed[i][0], seed[i][1], seed[i][2], strlen(seed[i][2]), &b) != 201)
			abort();
		free(b.data);
	}
}

static bool has_secret_member(const json_t *j)
{
	const char *key;
	size_t i;
	json_t *v;
	if (json_is_object(j)) {
		json_object_foreach((json_t *)j, key, v)
			if (!strcmp(key, "secret") || has_secret_member(v))
				return true;
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			if (has_secret_member(v))
				return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!g.m)
		start();
	if (size < 1 || size > 4096)
		return 0;
	size_t r = data[0] % (sizeof(routes) / sizeof(routes[0]));
	struct buf b = { 0 };
	long status = send_req(routes[r].method, routes[r].path, (const char *)data + 1, size - 1,
			       &b);
	if (status != 200 && status != 201 && status != 400 && status != 404 && status != 409) {
		fprintf(stderr, "unexpected status %ld: %s\n", status, b.data ? b.data : "");
		abort();
	}
	json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
	/* The stored secret must not come back, unless this input itself carried it. */
	bool echoed = strstr(b.data ? b.data : "", SECRET) &&
		      !memmem(data, size, SECRET, strlen(SECRET));
	if (!json_is_object(j) || echoed || has_secret_member(j)) {
		fprintf(stderr, "bad answer: %s\n", b.data ? b.data : "(none)");
		abort();
	}
	json_decref(j);
	free(b.data);
	return 0;
}
