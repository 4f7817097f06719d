/*
 * mgmt_internal.h — what server.c (HTTP, auth, routing) and routes.c
 * (handlers, validation) share. Not installed; nothing outside mgmt/
 * includes it.
 */
#ifndef TND_MGMT_INTERNAL_H
#define TND_MGMT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "tnd_mgmt.h"

#define TND_MGMT_MAX_CAPTURES 3

struct MHD_Daemon;
struct MHD_Connection;

struct tnd_mgmt {
	struct MHD_Daemon *daemon;
	const struct tnd_mgmt_backend_ops *ops;
	void *ctx;
	const struct tnd_mgmt_dev_type *device_types;
	char *data_dir;
	char *tls_cert;                 /* PEM text, kept while the daemon runs */
	char *tls_key;
	char token[TND_MGMT_TOKEN_LEN + 1];
	uint16_t port;
	pthread_mutex_t lock;           /* serialises backend calls and persistence */
	atomic_bool serving;            /* start-up done: MHD's messages become debug */
};

/* One HTTP request, from its headers to its response. */
struct tnd_mgmt_req {
	struct tnd_mgmt *m;
	struct MHD_Connection *conn;
	const struct tnd_mgmt_route *route;
	char *path;                              /* owned copy; captures point into it */
	const char *cap[TND_MGMT_MAX_CAPTURES];  /* {x} segments, in order */
	char *body;
	size_t body_len;
	size_t body_cap;
	bool body_too_large;
	json_t *json;                            /* parsed body, or NULL when empty */
	/* The answer a handler gives: */
	unsigned status;
	json_t *reply;                           /* owned; NULL = no body */
	char *text;                              /* owned plain-text body (/metrics) */
	char *allow;                             /* owned Allow header value for a 405 */
	bool sent;                               /* a response is queued */
};

/* Set an error reply {"error": ..., "field": ...}; returns @status for tail calls. */
int tnd_mgmt_reply_error(struct tnd_mgmt_req *r, unsigned status, const char *field,
			 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Set a JSON reply (takes ownership of @body, may be NULL). */
int tnd_mgmt_reply(struct tnd_mgmt_req *r, unsigned status, json_t *body);

/* Map a backend op's -errno and error to a reply. */
int tnd_mgmt_reply_backend(struct tnd_mgmt_req *r, int ret, const struct tnd_mgmt_error *err);

/* Query argument @key as a boolean: absent = @def; "true"/"1"/"false"/"0"; else -EINVAL. */
int tnd_mgmt_query_bool(struct tnd_mgmt_req *r, const char *key, bool def, bool *out);

/* After a successful change: snapshot and persist; on failure sets a 500 reply. */
int tnd_mgmt_commit(struct tnd_mgmt_req *r);

/* Remove every "secret" member, recursively, in place. */
void tnd_mgmt_scrub_secrets(json_t *j);

#endif
