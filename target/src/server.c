/*
 * The iSCSI server: configuration, portals, accept and hand-off, the
 * session registry, graceful stop. See tnd_target.h for the contract and
 * iscsi_conn.h for how the transport files fit together.
 *
 * Accept. Each portal has one multishot accept on reactor 0. A new socket
 * gets a struct iscsi_conn there and is handed by message to the next
 * reactor round-robin, which owns it from then on.
 *
 * Placement. A normal session whose login reaches full feature phase gets
 * its reactor chosen (tnd_iscsi_place; the rule and its why are in
 * tnd_target.h) and, when that is not the one it is on, moves there once
 * its final login response is out (tnd_iscsi_conn_move, called by the
 * connection at that quiescent point). The move reuses the accept's
 * hand-off message; the connection leaves the old reactor's list first,
 * so no round (listing, kick, configuration change) finds it on two
 * reactors, and c->rc changes under sess_lock, so a reinstatement's kill
 * message goes to the reactor that holds it.
 *
 * Stop. tnd_target_server_stop() sends reactor 0 a message that cancels the
 * accepts; once every portal's accept has completed for the last time, the
 * listening sockets are closed and every reactor gets a stop message (after
 * any hand-off reactor 0 sent it earlier, since messages from one sender
 * arrive in order). A stopping reactor drains its connections: no new
 * PDUs are taken, commands at the SCSI layer finish and their responses go
 * out, then the connection closes. The last reactor to empty calls the
 * user's callback. A connection moving between reactors is counted too
 * (stop_pending), since no message order ties its arrival to the stop
 * messages: it may arrive at a reactor that has already emptied, which
 * closes it, and only then can the callback run.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tnd_common.h"
#include "iscsi_conn.h"
#include "iscsi_pool.h"

#define TAG "iscsi"
#define POOL_CACHE_BYTES (64u << 20)

int tnd_target_server_create(const struct tnd_target_server_opts *opts,
			     struct tnd_target_server **out)
{
	if (!opts || !opts->reactors || opts->nr_reactors == 0)
		return -EINVAL;
	struct tnd_target_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	int ret = -ENOMEM;
	srv->nr_reactors = opts->nr_reactors;
	srv->nop_interval_s = opts->nop_interval_s ? opts->nop_interval_s : 5;
	srv->next_tsih = 1;
	atomic_init(&srv->stop_pending, ISCSI_STOP_BIAS);
	if (opts->state_dir && !(srv->state_dir = strdup(opts->state_dir)))
		goto err_free_srv;
	srv->reactors = calloc(opts->nr_reactors, sizeof(*srv->reactors));
	if (!srv->reactors)
		goto err_free_srv;
	memcpy(srv->reactors, opts->reactors, opts->nr_reactors * sizeof(*srv->reactors));
	srv->rctx = calloc(opts->nr_reactors, sizeof(*srv->rctx));
	if (!srv->rctx)
		goto err_free_reactors;
	unsigned i;
	for (i = 0; i < opts->nr_reactors; i++) {
		srv->rctx[i].srv = srv;
		srv->rctx[i].reactor = opts->reactors[i];
		ret = tnd_iscsi_pool_create(POOL_CACHE_BYTES, &srv->rctx[i].pool);
		if (ret < 0)
			goto err_destroy_pools;
	}
	ret = tnd_iscsi_cfg_init(srv);
	if (ret < 0)
		goto err_destroy_pools;
	pthread_mutex_init(&srv->sess_lock, NULL);
	*out = srv;
	return 0;

err_destroy_pools:
	while (i-- > 0)
		tnd_iscsi_pool_destroy(srv->rctx[i].pool);
	free(srv->rctx);
err_free_reactors:
	free(srv->reactors);
err_free_srv:
	free(srv->state_dir);
	free(srv);
	return ret;
}

/* ---- portals ---- */

static int split_host_port(const char *hp, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon;
	if (hp[0] == '[') {
		const char *close = strchr(hp, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		if ((size_t)(close - hp - 1) >= hlen)
			return -EINVAL;
		memcpy(host, hp + 1, (size_t)(close - hp - 1));
		host[close - hp - 1] = '\0';
		colon = close + 1;
	} else {
		colon = strrchr(hp, ':');
		if (!colon || (size_t)(colon - hp) >= hlen || colon == hp)
			return -EINVAL;
		memcpy(host, hp, (size_t)(colon - hp));
		host[colon - hp] = '\0';
	}
	if (!colon[1] || strlen(colon + 1) >= plen)
		return -EINVAL;
	strcpy(port, colon + 1);
	return 0;
}

int tnd_target_server_add_portal(struct tnd_target_server *srv, const char *host_port)
{
	char host[INET6_ADDRSTRLEN + 1], port[8];
	if (srv->started || !host_port ||
	    split_host_port(host_port, host, sizeof(host), port, sizeof(port)) < 0)
		return -EINVAL;
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
	}, *ai;
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -EINVAL;

	int ret;
	struct iscsi_portal *p = calloc(1, sizeof(*p));
	if (!p) {
		ret = -ENOMEM;
		goto err_free_ai;
	}
	p->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->fd < 0) {
		ret = -errno;
		goto err_free_portal;
	}
	int one = 1;
	setsockopt(p->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		/* "[::]" and "0.0.0.0" on one port are two portals, not a clash. */
		setsockopt(p->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(p->fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(p->fd, 128) < 0) {
		ret = -errno;
		goto err_close_fd;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(p->fd, (struct sockaddr *)&ss, &sl) < 0) {
		ret = -errno;
		goto err_close_fd;
	}
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
		char a[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
		snprintf(p->addr, sizeof(p->addr), "[%s]", a);
		p->port = ntohs(s6->sin6_port);
		p->wildcard = IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, p->addr, sizeof(p->addr));
		p->port = ntohs(s4->sin_port);
		p->wildcard = s4->sin_addr.s_addr == htonl(INADDR_ANY);
	}
	struct iscsi_portal **arr = realloc(srv->portals, (srv->nr_portals + 1) * sizeof(*arr));
	if (!arr) {
		ret = -ENOMEM;
		goto err_close_fd;
	}
	srv->portals = arr;
	p->srv = srv;
	srv->portals[srv->nr_portals++] = p;
	freeaddrinfo(ai);
	return 0;

err_close_fd:
	close(p->fd);
err_free_portal:
	free(p);
err_free_ai:
	freeaddrinfo(ai);
	return ret;
}

int tnd_target_server_portal_port(struct tnd_target_server *srv, unsigned idx)
{
	if (idx >= srv->nr_portals)
		return -ENOENT;
	return srv->portals[idx]->port;
}

/* ---- sessions ---- */

uint16_t tnd_iscsi_session_register(struct iscsi_conn *c)
{
	struct tnd_target_server *srv = c->srv;
	pthread_mutex_lock(&srv->sess_lock);
	if (!c->discovery) {
		struct iscsi_conn **pp = &srv->sessions;
		while (*pp) {
			struct iscsi_conn *s = *pp;
			if (!s->discovery && strcmp(s->target_iqn, c->target_iqn) == 0 &&
			    memcmp(s->isid, c->isid, sizeof(c->isid)) == 0 &&
			    strcmp(s->ng.initiator_name, c->ng.initiator_name) == 0) {
				/* Reinstatement: the old session goes, on its own reactor. */
				*pp = s->reg_next;
				s->registered = false;
				s->kill_sent = true;
				tnd_reactor_send(s->rc->reactor, &s->kill_msg);
				continue;
			}
			pp = &s->reg_next;
		}
	}
	uint16_t tsih = srv->next_tsih++;
	if (srv->next_tsih == 0)
		srv->next_tsih = 1;
	c->reg_next = srv->sessions;
	srv->sessions = c;
	c->registered = true;
	pthread_mutex_unlock(&srv->sess_lock);
	return tsih;
}

void tnd_iscsi_session_unregister(struct iscsi_conn *c)
{
	struct tnd_target_server *srv = c->srv;
	pthread_mutex_lock(&srv->sess_lock);
	if (c->registered) {
		for (struct iscsi_conn **pp = &srv->sessions; *pp; pp = &(*pp)->reg_next) {
			if (*pp == c) {
				*pp = c->reg_next;
				break;
			}
		}
		c->registered = false;
	}
	pthread_mutex_unlock(&srv->sess_lock);
}

/* ---- placement ---- */

/* How many of the LUNs in @c's view have their volume's home on @r. */
static unsigned homes_on(const struct iscsi_conn *c, const struct tnd_reactor *r)
{
	unsigned n = 0;
	for (unsigned i = 0; i < c->view_nr; i++)
		n += c->view[i].home == r;
	return n;
}

struct iscsi_rctx *tnd_iscsi_place(struct iscsi_conn *c)
{
	struct tnd_target_server *srv = c->srv;
	/* Fewest homes of the session's LUNs first, then fewest normal
	 * sessions; starting from the current reactor and taking only a
	 * strictly better one keeps it on a tie (no move for nothing). */
	struct iscsi_rctx *best = c->rc;
	unsigned best_homes = homes_on(c, best->reactor);
	unsigned best_sess = atomic_load_explicit(&best->nr_sessions, memory_order_relaxed);
	for (unsigned i = 0; i < srv->nr_reactors; i++) {
		struct iscsi_rctx *rc = &srv->rctx[i];
		if (rc == c->rc)
			continue;
		unsigned h = homes_on(c, rc->reactor);
		unsigned n = atomic_load_explicit(&rc->nr_sessions, memory_order_relaxed);
		if (h < best_homes || (h == best_homes && n < best_sess)) {
			best = rc;
			best_homes = h;
			best_sess = n;
		}
	}
	/* Counted at once, so logins placed right after this one see it. */
	atomic_fetch_add_explicit(&best->nr_sessions, 1, memory_order_relaxed);
	c->placed = best;
	return best;
}

int tnd_iscsi_conn_move(struct iscsi_conn *c)
{
	struct tnd_target_server *srv = c->srv;
	struct iscsi_rctx *from = c->rc, *to = c->move_to;
	c->move_to = NULL;
	pthread_mutex_lock(&srv->sess_lock);
	if (c->kill_sent) {
		/* A reinstating login already sent @c's kill to this reactor. */
		pthread_mutex_unlock(&srv->sess_lock);
		return -EBUSY;
	}
	tnd_reactor_timer_cancel(from->reactor, &c->nop_timer);
	tnd_iscsi_rctx_unlink(from, c);
	c->moving = true;
	/* In transit: the stop callback waits for the arrival. */
	atomic_fetch_add(&srv->stop_pending, 1);
	tnd_debug(TAG, "%s: session of %s placed on reactor %u (was %u)", c->peer_str,
		  c->ng.initiator_name, tnd_reactor_index(to->reactor),
		  tnd_reactor_index(from->reactor));
	c->rc = to;
	/* Sent under the lock: a kill message sent after it (it reads c->rc
	 * under the lock) is queued behind it on the new reactor. */
	tnd_reactor_send(to->reactor, &c->handoff_msg);
	pthread_mutex_unlock(&srv->sess_lock);
	tnd_iscsi_rctx_conn_gone(from);
	return 0;
}

/* ---- accept and hand-off ---- */

static void stop_put(struct tnd_target_server *srv)
{
	if (atomic_fetch_sub(&srv->stop_pending, 1) == 1)
		srv->stop_cb(srv->stop_arg);
}

void tnd_iscsi_rctx_unlink(struct iscsi_rctx *rc, struct iscsi_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		rc->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	rc->nr_conns--;
}

/* A new connection from reactor 0, or a logged-in one moving here. */
static void conn_handoff(struct tnd_msg *m)
{
	struct iscsi_conn *c = tnd_container_of(m, struct iscsi_conn, handoff_msg);
	struct iscsi_rctx *rc = c->rc;
	struct tnd_target_server *srv = c->srv;
	bool moved = c->moving;
	c->moving = false;
	c->next = rc->conns;
	if (rc->conns)
		rc->conns->prev = c;
	rc->conns = c;
	rc->nr_conns++;
	if (rc->stopping) {
		c->state = CONN_CLOSING;
		tnd_iscsi_conn_maybe_free(c);
	} else if (moved) {
		tnd_iscsi_conn_arrive(c);
	} else {
		tnd_iscsi_conn_start(c);
	}
	/* Last: the stop callback may run from here, and @c may be gone. */
	if (moved)
		stop_put(srv);
}

static void new_connection(struct tnd_target_server *srv, int fd)
{
	struct iscsi_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->srv = srv;
	c->fd = fd;
	c->local_len = sizeof(c->local);
	getsockname(fd, (struct sockaddr *)&c->local, &c->local_len);
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	char a[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0) {
		if (peer.ss_family == AF_INET6) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&peer;
			inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
			port = ntohs(s6->sin6_port);
		} else if (peer.ss_family == AF_UNIX) {
			snprintf(a, sizeof(a), "local");
		} else {
			const struct sockaddr_in *s4 = (const struct sockaddr_in *)&peer;
			inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
			port = ntohs(s4->sin_port);
		}
	}
	snprintf(c->peer_str, sizeof(c->peer_str), "%s:%d", a, port);
	c->kill_msg.fn = tnd_iscsi_conn_kill_msg;
	c->handoff_msg.fn = conn_handoff;
	c->rc = &srv->rctx[srv->next_reactor];
	srv->next_reactor = (srv->next_reactor + 1) % srv->nr_reactors;
	tnd_reactor_send(c->rc->reactor, &c->handoff_msg);
}

struct adopt_msg {
	struct tnd_msg m;
	struct tnd_target_server *srv;
	int fd;
};

static void adopt_fn(struct tnd_msg *m)
{
	struct adopt_msg *a = tnd_container_of(m, struct adopt_msg, m);
	/* A stopping reactor closes what it is handed, so no check here. */
	new_connection(a->srv, a->fd);
	free(a);
}

int tnd_iscsi_server_adopt(struct tnd_target_server *srv, int fd)
{
	struct adopt_msg *a = malloc(sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->m.fn = adopt_fn;
	a->srv = srv;
	a->fd = fd;
	/* Through reactor 0, which owns the round-robin counter. */
	tnd_reactor_send(srv->reactors[0], &a->m);
	return 0;
}

static void portals_closed(struct tnd_target_server *srv);

/* After an accept error (EMFILE, ENOBUFS...) wait a little before the next
 * try, so a persistent error does not spin reactor 0. */
#define ACCEPT_RETRY_NS (100ull * 1000 * 1000)

static void arm_accept(struct iscsi_portal *p)
{
	struct io_uring_sqe *sqe = tnd_reactor_sqe(p->srv->reactors[0], &p->accept_op);
	if (!sqe) {
		tnd_err(TAG, "portal %s:%d: no SQE for accept", p->addr, p->port);
		tnd_reactor_timer_arm(p->srv->reactors[0], &p->retry_timer, ACCEPT_RETRY_NS);
		return;
	}
	io_uring_prep_multishot_accept(sqe, p->fd, NULL, NULL, SOCK_CLOEXEC);
	p->accept_armed = true;
}

static void accept_retry(struct tnd_timer *t)
{
	struct iscsi_portal *p = tnd_container_of(t, struct iscsi_portal, retry_timer);
	if (!p->closing)
		arm_accept(p);
}

static void portal_close(struct iscsi_portal *p)
{
	struct tnd_target_server *srv = p->srv;
	close(p->fd);
	p->fd = -1;
	if (--srv->portals_open == 0)
		portals_closed(srv);
}

static void accept_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	struct iscsi_portal *p = tnd_container_of(op, struct iscsi_portal, accept_op);
	struct tnd_target_server *srv = p->srv;
	if (res >= 0) {
		if (p->closing)
			close(res);
		else
			new_connection(srv, res);
	} else if (res != -ECANCELED && !p->closing) {
		tnd_warn(TAG, "portal %s:%d: accept: %s", p->addr, p->port, strerror(-res));
	}
	if (flags & IORING_CQE_F_MORE)
		return;
	p->accept_armed = false;
	if (p->closing)
		portal_close(p);
	else if (res < 0)
		tnd_reactor_timer_arm(srv->reactors[0], &p->retry_timer, ACCEPT_RETRY_NS);
	else
		arm_accept(p);
}

static void start_msg(struct tnd_msg *m)
{
	struct tnd_target_server *srv = tnd_container_of(m, struct tnd_target_server, start_msg);
	srv->portals_open = srv->nr_portals;
	for (unsigned i = 0; i < srv->nr_portals; i++) {
		struct iscsi_portal *p = srv->portals[i];
		p->accept_op.cb = accept_done;
		p->retry_timer.fn = accept_retry;
		arm_accept(p);
		tnd_info(TAG, "listening on %s:%d", p->addr, p->port);
	}
}

int tnd_target_server_start(struct tnd_target_server *srv)
{
	if (srv->started)
		return -EALREADY;
	srv->started = true;
	srv->start_msg.fn = start_msg;
	tnd_reactor_send(srv->reactors[0], &srv->start_msg);
	return 0;
}

/* ---- stop ---- */

void tnd_iscsi_rctx_conn_gone(struct iscsi_rctx *rc)
{
	if (!rc->stopping || rc->nr_conns > 0 || rc->stop_reported)
		return;
	rc->stop_reported = true;
	stop_put(rc->srv);
}

static void rctx_stop(struct tnd_msg *m)
{
	struct iscsi_rctx *rc = tnd_container_of(m, struct iscsi_rctx, stop_msg);
	rc->stopping = true;
	struct iscsi_conn *c = rc->conns;
	if (!c) {
		tnd_iscsi_rctx_conn_gone(rc);
		return;
	}
	/* Draining may free connections; walk with the next pointer saved,
	 * and count so the last one freed is the one that reports. */
	while (c) {
		struct iscsi_conn *next = c->next;
		tnd_iscsi_conn_drain(c);
		c = next;
	}
}

static void portals_closed(struct tnd_target_server *srv)
{
	for (unsigned i = 0; i < srv->nr_reactors; i++) {
		srv->rctx[i].stop_msg.fn = rctx_stop;
		tnd_reactor_send(srv->rctx[i].reactor, &srv->rctx[i].stop_msg);
	}
}

static void cancel_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	free(op);
}

static void portal_stop_msg(struct tnd_msg *m)
{
	struct tnd_target_server *srv =
		tnd_container_of(m, struct tnd_target_server, portal_stop_msg);
	if (srv->nr_portals == 0) {
		portals_closed(srv);
		return;
	}
	for (unsigned i = 0; i < srv->nr_portals; i++) {
		struct iscsi_portal *p = srv->portals[i];
		p->closing = true;
		if (!p->accept_armed) {
			/* Waiting to retry after an error: nothing in the ring. */
			tnd_reactor_timer_cancel(srv->reactors[0], &p->retry_timer);
			portal_close(p);
			continue;
		}
		struct tnd_uring_op *cop = malloc(sizeof(*cop));
		struct io_uring_sqe *sqe = cop ? tnd_reactor_sqe(srv->reactors[0], cop) : NULL;
		if (!sqe) {
			/* Without a cancel, shutting the socket down ends the accept. */
			free(cop);
			shutdown(p->fd, SHUT_RDWR);
			continue;
		}
		cop->cb = cancel_done;
		io_uring_prep_cancel(sqe, &p->accept_op, 0);
	}
}

void tnd_target_server_stop(struct tnd_target_server *srv, tnd_target_stopped_cb cb, void *arg)
{
	/* Sets srv->stopping once no configuration change is under way. */
	tnd_iscsi_cfg_shutdown(srv);
	srv->stop_cb = cb;
	srv->stop_arg = arg;
	if (!srv->started) {
		cb(arg);
		return;
	}
	/* From bias + moving connections to reactors + moving connections:
	 * no reactor reports before its stop message, sent after this. */
	atomic_fetch_add(&srv->stop_pending, srv->nr_reactors - ISCSI_STOP_BIAS);
	srv->portal_stop_msg.fn = portal_stop_msg;
	tnd_reactor_send(srv->reactors[0], &srv->portal_stop_msg);
}

void tnd_target_server_destroy(struct tnd_target_server *srv)
{
	if (!srv)
		return;
	for (unsigned i = 0; i < srv->nr_portals; i++) {
		if (srv->portals[i]->fd >= 0)
			close(srv->portals[i]->fd);
		free(srv->portals[i]);
	}
	free(srv->portals);
	tnd_iscsi_cfg_destroy(srv);
	for (unsigned i = 0; i < srv->nr_reactors; i++)
		tnd_iscsi_pool_destroy(srv->rctx[i].pool);
	free(srv->rctx);
	free(srv->reactors);
	pthread_mutex_destroy(&srv->sess_lock);
	free(srv->state_dir);
	free(srv);
}
