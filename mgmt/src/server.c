/*
 * server.c — the HTTP side of the management API: libmicrohttpd set-up,
 * the listen address and TLS rules, the bearer token check, routing, body
 * collection and the JSON replies. Handlers and validation are in routes.c.
 *
 * libmicrohttpd calls on_request several times per request: once when the
 * headers are in (we route and authenticate there, so an unauthenticated or
 * misrouted request never has its body read), once per chunk of body, and
 * once more with no data when the body is complete (we dispatch there).
 * Thread per connection: a client that trickles its request, or never
 * finishes it, ties up only its own thread until the connection timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <microhttpd.h>

#include "mgmt_internal.h"
#include "tnd_common.h"

#define TAG "mgmt"
#define CONNECTION_TIMEOUT_S 30
#define CONNECTION_LIMIT 64
#define MAX_PEM (64u << 10)

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

void tnd_mgmt_error_set(struct tnd_mgmt_error *err, const char *field, const char *fmt, ...)
{
	if (!err)
		return;
	snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

/* ---- replies ---- */

int tnd_mgmt_reply(struct tnd_mgmt_req *r, unsigned status, json_t *body)
{
	json_decref(r->reply);
	r->reply = body;
	r->status = status;
	return (int)status;
}

int tnd_mgmt_reply_error(struct tnd_mgmt_req *r, unsigned status, const char *field,
			 const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_t *body = json_pack("{s:s}", "error", msg);
	if (!body) {
		/* Not UTF-8 (a path segment echoed back): keep the message, lose the bytes. */
		for (char *p = msg; *p; p++)
			if ((unsigned char)*p >= 0x80)
				*p = '?';
		body = json_pack("{s:s}", "error", msg);
	}
	if (body && field && *field)
		json_object_set_new(body, "field", json_string(field));
	return tnd_mgmt_reply(r, status, body);
}

/* One place where the backend's -errno becomes an HTTP status. */
static const struct {
	int err;
	unsigned status;
} errno_status[] = {
	{ ENOENT, 404 }, { EEXIST, 409 }, { EBUSY, 409 }, { EINVAL, 400 }, { ERANGE, 400 },
	{ ENOSPC, 507 }, { EOPNOTSUPP, 501 },
};

int tnd_mgmt_reply_backend(struct tnd_mgmt_req *r, int ret, const struct tnd_mgmt_error *err)
{
	unsigned status = 500;
	for (size_t i = 0; i < TND_ARRAY_SIZE(errno_status); i++)
		if (-ret == errno_status[i].err)
			status = errno_status[i].status;
	if (status == 500)
		tnd_err(TAG, "%s %s: backend error: %s", r->route->method, r->path, strerror(-ret));
	const char *field = err && err->field[0] ? err->field : NULL;
	if (err && err->message[0])
		return tnd_mgmt_reply_error(r, status, field, "%s", err->message);
	return tnd_mgmt_reply_error(r, status, field, "%s", strerror(-ret));
}

int tnd_mgmt_query_bool(struct tnd_mgmt_req *r, const char *key, bool def, bool *out)
{
	const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || *v == '\0') {
		*out = true;
		return 0;
	}
	if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

void tnd_mgmt_scrub_secrets(json_t *j)
{
	if (json_is_object(j)) {
		json_object_del(j, "secret");
		const char *key;
		json_t *v;
		json_object_foreach(j, key, v)
			tnd_mgmt_scrub_secrets(v);
	} else if (json_is_array(j)) {
		size_t i;
		json_t *v;
		json_array_foreach(j, i, v)
			tnd_mgmt_scrub_secrets(v);
	}
}

int tnd_mgmt_commit(struct tnd_mgmt_req *r)
{
	struct tnd_mgmt *m = r->m;
	json_t *cfg = NULL;
	int ret = m->ops->config_snapshot(m->ctx, &cfg);
	if (ret == 0 && !json_is_object(cfg))
		ret = -EINVAL;
	if (ret == 0)
		ret = tnd_mgmt_persist_config(m->data_dir, cfg);
	json_decref(cfg);
	if (ret == 0)
		return 0;
	/*
	 * The backend has already applied the change and cannot be asked to
	 * undo it; say so plainly rather than pretend it failed.
	 */
	tnd_err(TAG, "%s %s: applied, but saving %s/%s failed: %s", r->route->method, r->path,
		m->data_dir, TND_MGMT_CONFIG_FILE, strerror(-ret));
	tnd_mgmt_reply_error(r, 500, NULL,
			     "the change was applied but the configuration could not be saved "
			     "to %s/%s: %s", m->data_dir, TND_MGMT_CONFIG_FILE, strerror(-ret));
	return ret;
}

/* ---- authentication ---- */

/*
 * Constant time in the token: every byte of the expected token is compared
 * whatever the caller sent, so the time taken says nothing about how many
 * leading characters were right.
 */
static bool token_ok(const struct tnd_mgmt *m, const char *hdr)
{
	if (!hdr || strncasecmp(hdr, "Bearer ", 7) != 0)
		return false;
	const char *p = hdr + 7;
	size_t n = strlen(p);
	volatile unsigned char diff = n != TND_MGMT_TOKEN_LEN;
	for (size_t i = 0; i < TND_MGMT_TOKEN_LEN; i++)
		diff |= (unsigned char)((i < n ? p[i] : 0) ^ m->token[i]);
	return diff == 0;
}

/* ---- routing ---- */

/*
 * Match @path against @pattern segment by segment; {x} takes one non-empty
 * segment. Captures are recorded as offsets so a failed match leaves @path
 * untouched; on success the caller cuts them out.
 */
static bool match(const char *pattern, const char *path, size_t *cap_off, size_t *cap_len,
		  size_t *ncap)
{
	const char *p = pattern, *s = path;
	*ncap = 0;
	while (*p && *s) {
		if (*p != '/' || *s != '/')
			return false;
		p++;
		s++;
		const char *pe = strchrnul(p, '/'), *se = strchrnul(s, '/');
		if (*p == '{') {
			if (se == s || *ncap == TND_MGMT_MAX_CAPTURES)
				return false;
			cap_off[*ncap] = (size_t)(s - path);
			cap_len[*ncap] = (size_t)(se - s);
			(*ncap)++;
		} else if (pe - p != se - s || memcmp(p, s, (size_t)(pe - p)) != 0) {
			return false;
		}
		p = pe;
		s = se;
	}
	return *p == '\0' && *s == '\0';
}

/* Route @r; on failure sets a 404 or 405 reply and returns false. */
static bool route_request(struct tnd_mgmt_req *r, const char *method)
{
	size_t n, off[TND_MGMT_MAX_CAPTURES], len[TND_MGMT_MAX_CAPTURES], ncap;
	const struct tnd_mgmt_route *routes = tnd_mgmt_routes(&n);
	char allow[64] = "";
	for (size_t i = 0; i < n; i++) {
		if (!match(routes[i].pattern, r->path, off, len, &ncap))
			continue;
		if (strcmp(routes[i].method, method) != 0) {
			size_t used = strlen(allow);
			snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
				 routes[i].method);
			continue;
		}
		r->route = &routes[i];
		for (size_t c = 0; c < ncap; c++) {
			r->path[off[c] + len[c]] = '\0';
			r->cap[c] = r->path + off[c];
		}
		return true;
	}
	if (allow[0]) {
		r->allow = strdup(allow);
		tnd_mgmt_reply_error(r, 405, NULL, "method %s not allowed here (allowed: %s)",
				     method, allow);
	} else {
		tnd_mgmt_reply_error(r, 404, NULL, "no such route");
	}
	return false;
}

/* ---- request life ---- */

static enum MHD_Result send_reply(struct tnd_mgmt_req *r)
{
	struct MHD_Response *resp;
	const char *ctype = "application/json";
	if (r->text) {
		resp = MHD_create_response_from_buffer(strlen(r->text), r->text,
						       MHD_RESPMEM_MUST_FREE);
		r->text = NULL;
		ctype = "text/plain; version=0.0.4; charset=utf-8";
	} else if (r->reply) {
		/* Last line of defence: no route ever answers with a CHAP secret. */
		tnd_mgmt_scrub_secrets(r->reply);
		char *buf = json_dumps(r->reply, JSON_INDENT(2));
		if (!buf)
			return MHD_NO;
		size_t n = strlen(buf);
		char *nl = realloc(buf, n + 2);
		if (!nl) {
			free(buf);
			return MHD_NO;
		}
		nl[n] = '\n';
		nl[n + 1] = '\0';
		resp = MHD_create_response_from_buffer(n + 1, nl, MHD_RESPMEM_MUST_FREE);
	} else {
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	}
	if (!resp)
		return MHD_NO;
	if (r->text || r->reply)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (r->status == 401)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Bearer realm=\"tandem\"");
	if (r->status == 405 && r->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	enum MHD_Result ret = MHD_queue_response(r->conn, r->status, resp);
	MHD_destroy_response(resp);
	r->sent = true;
	return ret;
}

/* Headers are in: route, authenticate, check the announced body size. */
static void on_headers(struct tnd_mgmt_req *r, const char *method)
{
	if (!route_request(r, method))
		return;
	if (!r->route->public &&
	    !token_ok(r->m, MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
							MHD_HTTP_HEADER_AUTHORIZATION))) {
		tnd_mgmt_reply_error(r, 401, NULL,
				     "missing or wrong bearer token (see <data-dir>/%s)",
				     TND_MGMT_TOKEN_FILE);
		return;
	}
	const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl && strtoull(cl, NULL, 10) > TND_MGMT_MAX_BODY)
		tnd_mgmt_reply_error(r, 400, NULL, "request body larger than %u bytes",
				     TND_MGMT_MAX_BODY);
}

static void append_body(struct tnd_mgmt_req *r, const char *data, size_t n)
{
	if (r->body_too_large)
		return;
	if (r->body_len + n > TND_MGMT_MAX_BODY) {
		r->body_too_large = true;
		free(r->body);
		r->body = NULL;
		r->body_len = 0;
		return;
	}
	if (r->body_len + n + 1 > r->body_cap) {
		size_t cap = r->body_cap ? r->body_cap : 4096;
		while (cap < r->body_len + n + 1)
			cap *= 2;
		char *nb = realloc(r->body, cap);
		if (!nb) {
			/* Treated like an oversized body: refused, never half-read. */
			r->body_too_large = true;
			return;
		}
		r->body = nb;
		r->body_cap = cap;
	}
	memcpy(r->body + r->body_len, data, n);
	r->body_len += n;
	r->body[r->body_len] = '\0';
}

/* The body is complete: parse it and run the handler. */
static void dispatch(struct tnd_mgmt_req *r)
{
	bool wants_body = strcmp(r->route->method, "POST") == 0 ||
			  strcmp(r->route->method, "PATCH") == 0;
	if (r->body_too_large) {
		tnd_mgmt_reply_error(r, 400, NULL, "request body larger than %u bytes",
				     TND_MGMT_MAX_BODY);
		return;
	}
	if (wants_body) {
		json_error_t jerr;
		if (r->body_len == 0) {
			tnd_mgmt_reply_error(r, 400, NULL, "a JSON object body is required");
			return;
		}
		r->json = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
		if (!r->json) {
			tnd_mgmt_reply_error(r, 400, NULL, "malformed JSON: line %d column %d: %s",
					     jerr.line, jerr.column, jerr.text);
			return;
		}
		if (!json_is_object(r->json)) {
			tnd_mgmt_reply_error(r, 400, NULL, "the body must be a JSON object");
			return;
		}
	}

	struct tnd_mgmt *m = r->m;
	if (r->route->no_backend) {
		r->route->handler(r);
	} else {
		pthread_mutex_lock(&m->lock);
		r->route->handler(r);
		if (r->route->mutates && r->status >= 200 && r->status < 300)
			tnd_mgmt_commit(r);
		pthread_mutex_unlock(&m->lock);
	}
	if (!r->status)
		tnd_mgmt_reply_error(r, 500, NULL, "handler gave no answer");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct tnd_mgmt_req *r = *con_cls;
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		r->m = cls;
		r->conn = conn;
		r->path = strdup(url);
		*con_cls = r;
		if (!r->path)
			return MHD_NO;
		on_headers(r, method);
		/* Refused before the body: answer now; MHD closes after it. */
		return r->status ? send_reply(r) : MHD_YES;
	}
	if (r->sent) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		append_body(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		/* A chunked body with no Content-Length: refuse as soon as it is too big. */
		if (r->body_too_large) {
			tnd_mgmt_reply_error(r, 400, NULL, "request body larger than %u bytes",
					     TND_MGMT_MAX_BODY);
			return send_reply(r);
		}
		return MHD_YES;
	}
	dispatch(r);
	tnd_debug(TAG, "%s %s -> %u", method, url, r->status);
	return send_reply(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct tnd_mgmt_req *r = *con_cls;
	if (!r)
		return;
	json_decref(r->json);
	json_decref(r->reply);
	free(r->text);
	free(r->body);
	free(r->allow);
	free(r->path);
	free(r);
	*con_cls = NULL;
}

/*
 * libmicrohttpd's messages: while starting they explain a failure (a bind
 * error); once serving they are mostly clients hanging up, so debug level.
 */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct tnd_mgmt *m = cls;
	enum tnd_log_level level = atomic_load(&m->serving) ? TND_LOG_DEBUG : TND_LOG_WARN;
	if (tnd_log_get_level() < level)
		return;
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	tnd_log(level, TAG, "http: %s", buf);
}

/* ---- set-up ---- */

/* "A.B.C.D:PORT" or "[v6]:PORT", numeric only: a name would need a resolver. */
static int parse_bind(const char *bind, struct sockaddr_storage *ss, bool *loopback, char *err,
		      size_t errlen)
{
	char host[64];
	const char *port;
	memset(ss, 0, sizeof(*ss));
	if (bind[0] == '[') {
		const char *close = strchr(bind, ']');
		if (!close || close[1] != ':' || (size_t)(close - bind - 1) >= sizeof(host))
			return ERR("mgmt address \"%s\": expected HOST:PORT or [IPV6]:PORT", bind);
		memcpy(host, bind + 1, (size_t)(close - bind - 1));
		host[close - bind - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(bind, ':');
		if (!colon || (size_t)(colon - bind) >= sizeof(host) || strchr(bind, ':') != colon)
			return ERR("mgmt address \"%s\": expected HOST:PORT or [IPV6]:PORT", bind);
		memcpy(host, bind, (size_t)(colon - bind));
		host[colon - bind] = '\0';
		port = colon + 1;
	}
	char *end;
	errno = 0;
	unsigned long p = strtoul(port, &end, 10);
	if (!*port || *end || errno || p > 65535)
		return ERR("mgmt address \"%s\": bad port", bind);

	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)p);
		*loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)p);
		*loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
			    (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
			     sin6->sin6_addr.s6_addr[12] == 127);
	} else {
		return ERR("mgmt address \"%s\": \"%s\" is not a numeric IPv4 or IPv6 address",
			   bind, host);
	}
	return 0;
}

static int read_pem(const char *path, char **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	char *buf = malloc(MAX_PEM + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	size_t n = fread(buf, 1, MAX_PEM + 1, f);
	int ret = 0;
	if (ferror(f))
		ret = -EIO, snprintf(err, errlen, "%s: read error", path);
	else if (n > MAX_PEM)
		ret = -EFBIG, snprintf(err, errlen, "%s: larger than %u bytes", path, MAX_PEM);
	else if (n == 0)
		ret = -EINVAL, snprintf(err, errlen, "%s: empty", path);
	fclose(f);
	if (ret) {
		free(buf);
		return ret;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

/* Every op must be there: a missing one would be a crash on first use. */
static const char *missing_op(const struct tnd_mgmt_backend_ops *o)
{
	static const struct {
		const char *name;
		size_t off;
	} ops[] = {
#define OP(n) { #n, offsetof(struct tnd_mgmt_backend_ops, n) }
		OP(device_list), OP(device_get), OP(device_create), OP(device_update),
		OP(device_delete), OP(target_list), OP(target_get), OP(target_create),
		OP(target_delete), OP(lun_list), OP(lun_map), OP(lun_unmap), OP(acl_list),
		OP(acl_add), OP(acl_remove), OP(session_list), OP(session_kick), OP(stats),
		OP(config_snapshot),
#undef OP
	};
	for (size_t i = 0; i < TND_ARRAY_SIZE(ops); i++) {
		void (*fn)(void);
		memcpy(&fn, (const char *)o + ops[i].off, sizeof(fn));
		if (!fn)
			return ops[i].name;
	}
	return NULL;
}

int tnd_mgmt_create(const struct tnd_mgmt_opts *opts, struct tnd_mgmt **out, char *err,
		    size_t errlen)
{
	const char *bind = opts->bind ? opts->bind : TND_MGMT_DEFAULT_BIND;
	struct sockaddr_storage ss;
	bool loopback, tls = opts->tls_cert_file || opts->tls_key_file;
	int ret;

	if (!opts->ops || !opts->data_dir || !opts->device_types || !opts->device_types[0].name)
		return ERR("mgmt: backend ops, data directory and device types are required");
	const char *missing = missing_op(opts->ops);
	if (missing)
		return ERR("mgmt: backend op %s is missing", missing);
	if ((ret = parse_bind(bind, &ss, &loopback, err, errlen)))
		return ret;
	if (tls && !(opts->tls_cert_file && opts->tls_key_file))
		return ERR("mgmt: TLS needs both a certificate and a key file");
	if (!loopback && !tls)
		return ERR("mgmt: refusing to serve the API on %s without TLS; give a certificate "
			   "and key, or bind to 127.0.0.1", bind);
	if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
		return ERR("mgmt: this libmicrohttpd has no TLS support");

	struct tnd_mgmt *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->ops = opts->ops;
	m->ctx = opts->ctx;
	m->device_types = opts->device_types;
	m->data_dir = strdup(opts->data_dir);
	if (!m->data_dir) {
		ret = -ENOMEM;
		goto err_free;
	}
	if (tls) {
		if ((ret = read_pem(opts->tls_cert_file, &m->tls_cert, err, errlen)) ||
		    (ret = read_pem(opts->tls_key_file, &m->tls_key, err, errlen)))
			goto err_free;
	}
	ret = tnd_mgmt_token_load_or_create(m->data_dir, m->token, sizeof(m->token), err, errlen);
	if (ret)
		goto err_free;
	if ((ret = -pthread_mutex_init(&m->lock, NULL)))
		goto err_free;

	struct MHD_OptionItem items[] = {
		{ MHD_OPTION_SOCK_ADDR, 0, &ss },
		{ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, m },
		{ MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_S, NULL },
		{ MHD_OPTION_CONNECTION_LIMIT, CONNECTION_LIMIT, NULL },
		/* Without TLS this item ends the list, so the key is never looked at. */
		{ tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, m->tls_cert },
		{ MHD_OPTION_HTTPS_MEM_KEY, 0, m->tls_key },
		{ MHD_OPTION_END, 0, NULL },
	};
	unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (tls)
		flags |= MHD_USE_TLS;
	errno = 0;
	/* The logger goes first, or MHD prints its early messages itself. */
	uint16_t port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						       : ((struct sockaddr_in *)&ss)->sin_port);
	/* SOCK_ADDR decides; the port argument only names it in MHD's messages. */
	m->daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, m,
				     MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, m,
				     MHD_OPTION_ARRAY, items, MHD_OPTION_END);
	if (!m->daemon) {
		ret = errno ? -errno : -EIO;
		snprintf(err, errlen, "mgmt: cannot serve on %s: %s", bind,
			 ret == -EADDRINUSE ? "address already in use" : strerror(-ret));
		goto err_mutex;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon,
								MHD_DAEMON_INFO_BIND_PORT);
	m->port = info ? info->port : 0;
	atomic_store(&m->serving, true);
	tnd_info(TAG, "management API on %s%s (port %u), token in %s/%s", tls ? "https://" : "http://",
		 bind, m->port, m->data_dir, TND_MGMT_TOKEN_FILE);
	*out = m;
	return 0;

err_mutex:
	pthread_mutex_destroy(&m->lock);
err_free:
	explicit_bzero(m->token, sizeof(m->token));
	free(m->tls_key);
	free(m->tls_cert);
	free(m->data_dir);
	free(m);
	return ret;
}

void tnd_mgmt_destroy(struct tnd_mgmt *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->daemon);
	pthread_mutex_destroy(&m->lock);
	explicit_bzero(m->token, sizeof(m->token));
	if (m->tls_key)
		explicit_bzero(m->tls_key, strlen(m->tls_key));
	free(m->tls_key);
	free(m->tls_cert);
	free(m->data_dir);
	free(m);
}

uint16_t tnd_mgmt_port(const struct tnd_mgmt *m)
{
	return m->port;
}
