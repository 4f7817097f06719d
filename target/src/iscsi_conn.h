/*
 * iscsi_conn.h — what the iSCSI transport files share: the server's
 * configuration, per-reactor state, connections (each with its one
 * session) and tasks. Internal to target/.
 *
 * Layout of the transport:
 *   server.c       the public API (tnd_target.h): configuration, portals and
 *                  their multishot accept on reactor 0, hand-off of new
 *                  connections round-robin, the session registry used for
 *                  reinstatement, graceful stop
 *   iscsi_conn.c   a connection's life: receive (batched parse, data straight
 *                  into command buffers), send (one ordered sendmsg chain),
 *                  the opcode dispatch table, Reject, NOP-In/Out, the idle
 *                  ping timer, close and teardown
 *   iscsi_login.c  login phases and operational negotiation, session
 *                  creation, Text requests and SendTargets
 *   iscsi_scsi.c   full feature phase: CmdSN ordering, SCSI commands with
 *                  immediate/unsolicited/R2T data, Data-In and responses,
 *                  task management, logout
 *   iscsi_pdu.c, iscsi_text.c, iscsi_pool.c: wire format, text keys, buffers
 *
 *   iscsi_cfg.c    targets, LUN maps, ACLs as immutable snapshots, live
 *                  changes published to every reactor by message, session
 *                  LUN views (masking), sessions_json and kick
 *
 * Threading: a connection, its session and its tasks live on one reactor
 * at a time (c->rc) and are touched only from that reactor's thread.
 * Portals are fixed once started; the target configuration is a snapshot
 * each reactor reads through its own rctx->cfg, replaced by message
 * (iscsi_cfg.c). The session registry is the one structure shared by
 * reactors; it is guarded by a mutex taken only at login, at a placement
 * move and at teardown, never per command. c->rc changes only under that
 * mutex, so a reinstatement's kill message always goes to the reactor
 * that holds the connection (or comes before the move, which it stops).
 *
 * Lifetime of a connection: accepted on reactor 0, handed to a reactor by
 * message (round-robin). A normal session may then move once, right after
 * its login (placement, tnd_target.h): when the final login response has
 * been sent and before the next recv is posted, with no command, send,
 * recv or timer of it pending, it leaves its reactor's list and is handed
 * on by the same message (handoff_msg, with c->moving set), carrying only
 * heap memory (receive buffer, nexus, view: no pool buffer); the new
 * reactor rebuilds its LUN view from its own snapshot, arms the NOP timer
 * and goes on receiving. It is freed on its reactor once closed and no
 * recv, send or SCSI command of it is in flight
 * (tnd_iscsi_conn_maybe_free()).
 */
#ifndef TND_TARGET_ISCSI_CONN_H
#define TND_TARGET_ISCSI_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "tnd_reactor.h"
#include "tnd_target.h"
#include "iscsi_pdu.h"
#include "iscsi_text.h"
#include "scsi.h"

struct tnd_iscsi_pool;
struct iscsi_conn;
struct iscsi_cfg_round;
struct tnd_iscsi_chap;

/* The command window: at most this many commands per session. */
#define ISCSI_QUEUE_DEPTH 128u
/* Bytes of command data buffers one session may hold at once. */
#define ISCSI_SESSION_BUF_BUDGET (256u << 20)
#define ISCSI_TPGT 1
#define ISCSI_TX_BATCH 64
/* Commands answered one at a time in a row before the reactor spins for the
 * next one (hinted busy-poll): a deep queue rarely drains to one eight times
 * in a row. */
#define ISCSI_QD1_STREAK 8
#define ISCSI_TASK_CACHE 64
/* stop_pending's offset until stop is called (far above any count). */
#define ISCSI_STOP_BIAS (1u << 30)

struct iscsi_lun {
	uint64_t lun;
	struct tnd_scsi_lu *lu;
	/* The reactor owning the LU's volume (tnd_volume_info's home, taken
	 * at map time), or NULL; placement keeps sessions away from it. */
	struct tnd_reactor *home;
};

/* CHAP credentials of one direction; the secret is binary, never logged. */
struct iscsi_chap_cred {
	char *user;
	uint8_t *secret;
	size_t secret_len;
};

/* One initiator's entry on a target: admission, LUN mask, CHAP. */
struct iscsi_acl {
	char *initiator;
	bool all_luns;                /* no LUN mask */
	uint64_t *luns;               /* sorted, when !all_luns */
	unsigned nr_luns;
	struct iscsi_chap_cred *chap;   /* NULL: no CHAP required */
	struct iscsi_chap_cred *mutual; /* NULL: no mutual CHAP */
};

/*
 * A target as one configuration snapshot sees it. Immutable once
 * published (iscsi_cfg.c): a change builds a new one. The LUs are not
 * owned by the target object but by the mapping (they outlive any
 * snapshot that names them and are destroyed by unmap/remove/destroy).
 */
struct iscsi_target {
	char *iqn;
	char *alias;
	bool allow_any;
	struct iscsi_acl *acls;
	unsigned nr_acls;
	struct iscsi_lun *luns;       /* sorted by lun */
	unsigned nr_luns;
};

/* An immutable set of targets: what logins and SendTargets look at. */
struct iscsi_cfg {
	struct iscsi_target **targets;
	unsigned nr_targets;
};

struct iscsi_portal {
	struct tnd_target_server *srv;
	int fd;
	int port;
	bool wildcard;                /* 0.0.0.0 or :: */
	char addr[64];                /* as reported in TargetAddress */
	struct tnd_uring_op accept_op;
	struct tnd_timer retry_timer;
	bool accept_armed;
	bool closing;
};

/* Per-reactor state of the server. */
struct iscsi_rctx {
	struct tnd_target_server *srv;
	struct tnd_reactor *reactor;
	struct tnd_iscsi_pool *pool;
	struct iscsi_conn *conns;     /* doubly linked */
	unsigned nr_conns;
	/* Normal sessions placed on this reactor (placement's count):
	 * raised by whichever reactor places a session here, lowered when
	 * the session's connection is freed. Read by every reactor's
	 * placement, so an atomic; a snapshot is all placement needs. */
	atomic_uint nr_sessions;
	bool stopping;
	bool stop_reported;
	struct tnd_msg stop_msg;
	/* The configuration this reactor serves; replaced by message. */
	const struct iscsi_cfg *cfg;
	/* An unmap or target removal waiting for this reactor's commands
	 * on the LUs it takes away (iscsi_cfg.c). */
	struct iscsi_cfg_round *drain_round;
	unsigned drain_left;
};

struct tnd_target_server {
	struct tnd_reactor **reactors;
	unsigned nr_reactors;
	unsigned nop_interval_s;
	char *state_dir;              /* NULL: no APTPL */
	struct iscsi_rctx *rctx;

	struct iscsi_portal **portals;
	unsigned nr_portals;

	/* The configuration: changed only under cfg_lock, by the caller's
	 * thread; reactors see it through rctx[i].cfg (iscsi_cfg.c). */
	pthread_mutex_t cfg_lock;
	struct iscsi_cfg *cfg;
	atomic_uint_fast64_t next_sid;   /* session ids for sessions_json/kick */

	bool started;
	bool stopping;
	unsigned next_reactor;        /* round-robin; reactor 0 only */
	unsigned portals_open;        /* listening sockets not yet closed; reactor 0 only */
	struct tnd_msg start_msg;
	struct tnd_msg portal_stop_msg;

	/* Session registry for reinstatement (login/teardown only). */
	pthread_mutex_t sess_lock;
	struct iscsi_conn *sessions;  /* singly linked through reg_next */
	uint16_t next_tsih;

	/* Reactors that have not reported their connections gone, plus
	 * connections in transit between reactors (a session moving after
	 * login: see tnd_iscsi_conn_move); until stop, plus ISCSI_STOP_BIAS,
	 * so that it reaches 0 only once, after stop: whoever takes it there
	 * calls stop_cb. */
	atomic_uint stop_pending;
	tnd_target_stopped_cb stop_cb;
	void *stop_arg;
};

/* One queued outgoing PDU. */
struct iscsi_tx {
	struct iscsi_tx *next;
	uint8_t hdr[ISCSI_BHS_LEN + ISCSI_DIGEST_LEN];
	uint8_t trailer[8];           /* pad + data digest */
	uint32_t hdr_len;
	uint32_t trailer_len;
	const uint8_t *data;
	uint32_t data_len;
	struct iscsi_task *task;      /* data borrowed from this task (a ref) */
	char *owned;                  /* freed once sent */
	bool close_after;             /* close the connection once sent */
	bool queued;                  /* counted in the connection's backlog */
};

enum iscsi_task_state {
	TASK_HELD,                    /* waiting for its CmdSN turn */
	TASK_RECEIVING,               /* delivered, waiting for write data */
	TASK_EXEC,                    /* at the SCSI layer */
	TASK_SENDING,                 /* response queued; table entry gone */
};

struct iscsi_r2t {
	uint32_t ttt;
	uint32_t offset;
	uint32_t len;
	uint32_t got;
	uint32_t data_sn;
	uint32_t r2t_sn;
};

struct iscsi_tmf;

struct iscsi_task {
	struct tnd_scsi_cmd cmd;
	struct iscsi_conn *conn;
	struct iscsi_task *hnext;     /* ITT hash chain */
	struct iscsi_task *qnext;     /* held queue, by CmdSN */
	enum iscsi_task_state state;
	uint32_t itt;
	uint32_t cmd_sn;
	uint8_t lun_raw[8];
	bool immediate;
	bool final;                   /* F bit: no unsolicited Data-Out follows */
	bool too_big;                 /* EDTL over what we take: answered without data */
	bool busy;                    /* over the session's buffer budget */
	bool discard;                 /* refused write: unsolicited data is dropped */
	bool counted;                 /* takes a slot of the command window */
	bool aborted;                 /* no response: TMF or connection close */
	bool drain_counted;           /* counted by the configuration round draining */
	struct iscsi_tmf *tmf;        /* the TMF waiting for this task */
	unsigned refs;                /* 1 while alive + one per queued PDU using its data */
	size_t buf_size;              /* what was taken from the pool */

	/* Write progress. */
	uint32_t want;                /* bytes of data-out we will accept */
	uint32_t received;
	uint32_t unsol_limit;         /* immediate + unsolicited bytes allowed */
	uint32_t unsol_next;          /* next unsolicited offset */
	uint32_t unsol_data_sn;
	bool unsol_done;
	uint32_t r2t_next;            /* next offset to ask for */
	uint32_t r2t_sn;
	unsigned nr_r2t;
	struct iscsi_r2t r2t[TND_ISCSI_OUR_MAX_OUTSTANDING_R2T];

	/* Data-In progress. */
	uint32_t data_sn;
};

struct iscsi_tmf {
	uint32_t itt;
	uint8_t response;
	unsigned waiting;             /* aborted tasks still at the SCSI layer */
};

enum iscsi_conn_state {
	CONN_LOGIN,
	CONN_FFP,
	CONN_CLOSING,
};

enum iscsi_rx_state {
	RX_HDR,                       /* parsing from the receive buffer */
	RX_DIRECT,                    /* receiving a data segment into a task buffer */
	RX_TRAILER,                   /* pad and data digest after a direct segment */
};

#define ISCSI_TASK_BUCKETS 256

struct iscsi_conn {
	struct tnd_target_server *srv;
	struct iscsi_rctx *rc;
	struct iscsi_conn *prev, *next;
	struct tnd_msg handoff_msg;
	/* Placement: the reactor this session moves to once its final login
	 * response is sent (NULL: it stays); moving: handoff_msg carries a
	 * logged-in connection, not a new one; placed: whose nr_sessions
	 * counts this session (NULL: none). */
	struct iscsi_rctx *move_to;
	bool moving;
	struct iscsi_rctx *placed;
	int fd;
	struct sockaddr_storage local;
	socklen_t local_len;
	char peer_str[64];
	enum iscsi_conn_state state;
	unsigned inflight;            /* recv + send + commands at the SCSI layer */
	bool recv_inflight;
	bool send_inflight;
	bool freed;
	bool draining;

	/* Receive. */
	struct tnd_uring_op recv_op;
	uint8_t *rxbuf;
	size_t rx_cap, rx_len, rx_off;
	enum iscsi_rx_state rx_state;
	uint8_t cur_bhs[ISCSI_BHS_LEN];
	struct tnd_iscsi_hdr cur;
	uint8_t *cur_dest;            /* task buffer the data goes to, or NULL */
	bool rx_dest_done;            /* dest() ran for the PDU at rx_off */
	uint32_t cur_got;
	struct iscsi_task *cur_task;
	struct tnd_iscsi_pdu_limits lim;

	/* Send. */
	struct tnd_uring_op send_op;
	struct iscsi_tx *txq, *txq_tail;
	unsigned tx_sending;          /* PDUs at the head of txq in the sendmsg */
	struct iscsi_tx *tx_free;
	unsigned tx_free_count;
	unsigned tx_count;            /* queued PDUs */
	size_t tx_owned_bytes;        /* bytes of answers we allocated, queued */
	bool rx_paused;               /* backpressure: waiting for the queue to drain */
	struct tnd_defer tx_defer;     /* a sendmsg to build at the next loop turn */
	struct msghdr msg;
	struct iovec iov[ISCSI_TX_BATCH * 3];

	/* Login. */
	struct tnd_iscsi_negotiator ng;
	bool login_started;
	bool login_first_rsp_sent;
	unsigned stage;               /* ISCSI_STAGE_* */
	uint8_t isid[6];
	uint16_t tsih;
	uint16_t cid;
	uint32_t login_itt;
	bool auth_done;
	char *req_text;               /* request text across C-bit PDUs */
	size_t req_len;

	/* Session (one connection per session). */
	char target_iqn[TND_ISCSI_NAME_MAX + 1];  /* "" for discovery */
	bool discovery;
	uint64_t sid;                 /* stable session id, from 1 */
	int64_t login_time;           /* CLOCK_REALTIME seconds */
	/* The LUNs this session sees (the target's, through its ACL's mask),
	 * owned by the connection, replaced by configuration changes. */
	struct iscsi_lun *view;
	uint64_t *view_ids;           /* the same numbers, for REPORT LUNS */
	struct tnd_scsi_lu **view_lus; /* their LUs, for EXTENDED COPY */
	unsigned view_nr;
	bool luns_changed;            /* REPORTED LUNS DATA HAS CHANGED pending */
	struct tnd_iscsi_chap *chap;  /* CHAP exchange during login, else NULL */
	bool auth_chap;               /* the session authenticated with CHAP */
	struct tnd_scsi_nexus *nexus;
	uint32_t exp_cmd_sn, max_cmd_sn, stat_sn;
	unsigned outstanding;         /* window slots taken */
	size_t buf_bytes;             /* command buffers held */
	struct iscsi_task *tasks[ISCSI_TASK_BUCKETS];
	unsigned nr_tasks;            /* in the table */
	unsigned nr_live;             /* allocated (table + sending) */
	unsigned nr_exec;             /* at the SCSI layer */
	/* Hinted busy-poll: the most commands at the SCSI layer at once since
	 * nr_exec was last 0, and how many times in a row that was one. */
	unsigned exec_peak;
	unsigned qd1_streak;
	bool spin_wanted;             /* counted in the reactor's spin_want */
	struct iscsi_task *held;      /* by CmdSN */
	struct iscsi_task *task_free; /* cached task structs, via hnext */
	unsigned task_free_count;
	uint32_t next_ttt;
	bool logout_pending;
	uint32_t logout_itt;
	uint8_t logout_response;

	/* Registry (under srv->sess_lock). */
	struct iscsi_conn *reg_next;
	bool registered;
	bool kill_sent;
	struct tnd_msg kill_msg;

	/* Text response being handed out in pieces. */
	struct tnd_iscsi_text text_rsp;
	size_t text_rsp_off;
	uint32_t text_ttt;
	uint32_t text_itt;

	/* Liveness. */
	struct tnd_timer nop_timer;
	uint64_t last_rx_ns;
	bool ping_outstanding;
	uint32_t ping_ttt;
};

/* ---- iscsi_conn.c ---- */
void tnd_iscsi_conn_start(struct iscsi_conn *c);
void tnd_iscsi_conn_close(struct iscsi_conn *c, const char *why);
void tnd_iscsi_conn_maybe_free(struct iscsi_conn *c);
/* Server stop: take no new PDUs, close once no command is at the SCSI layer. */
void tnd_iscsi_conn_drain(struct iscsi_conn *c);
void tnd_iscsi_conn_check_drained(struct iscsi_conn *c);
/* A zeroed PDU with opcode set; NULL when out of memory (the connection is closed). */
struct iscsi_tx *tnd_iscsi_tx_new(struct iscsi_conn *c, uint8_t opcode);
/* Give back a PDU that was never queued. */
void tnd_iscsi_tx_drop(struct iscsi_conn *c, struct iscsi_tx *tx);
/* Queue @tx (fills DataSegmentLength and digests) and start sending. */
void tnd_iscsi_tx_queue(struct iscsi_conn *c, struct iscsi_tx *tx);
void tnd_iscsi_reject(struct iscsi_conn *c, const uint8_t *bhs, uint8_t reason);
/* Fill StatSN (advancing it if @advance), ExpCmdSN and MaxCmdSN. */
void tnd_iscsi_fill_sn(struct iscsi_conn *c, uint8_t *hdr, bool advance);
void tnd_iscsi_update_window(struct iscsi_conn *c);
void tnd_iscsi_enter_ffp(struct iscsi_conn *c);
void tnd_iscsi_conn_kill_msg(struct tnd_msg *m);
/*
 * Placement of a normal session whose login just reached full feature
 * phase: choose its reactor (tnd_iscsi_place) and, when that is another
 * one, arrange the move for when the final login response has been sent.
 */
void tnd_iscsi_conn_place(struct iscsi_conn *c);
/* A moved connection arrived on its new reactor (c->rc): go on there. */
void tnd_iscsi_conn_arrive(struct iscsi_conn *c);

/* ---- iscsi_login.c ---- */
void tnd_iscsi_login_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data);
void tnd_iscsi_login_fail(struct iscsi_conn *c, uint16_t status);
void tnd_iscsi_text_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data);
void tnd_iscsi_session_unregister(struct iscsi_conn *c);
/* Wipe and free the CHAP state of a login (at its end or the close). */
void tnd_iscsi_auth_free(struct iscsi_conn *c);

/* ---- iscsi_scsi.c ---- */
int tnd_iscsi_cmd_dest(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, uint8_t **dest);
void tnd_iscsi_cmd_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data);
int tnd_iscsi_data_out_dest(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, uint8_t **dest);
void tnd_iscsi_data_out_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data);
void tnd_iscsi_tmf_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data);
void tnd_iscsi_logout_rx(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h, const uint8_t *data);
/* Consume the CmdSN of a non-immediate non-SCSI command. */
void tnd_iscsi_cmdsn_consume(struct iscsi_conn *c, const struct tnd_iscsi_hdr *h);
void tnd_iscsi_task_put(struct iscsi_task *t);
/* Free every task of a closed connection (nothing is in flight). */
void tnd_iscsi_tasks_release(struct iscsi_conn *c);
void tnd_iscsi_task_cache_drain(struct iscsi_conn *c);
/* Called when a command leaves the SCSI layer during logout/close. */
void tnd_iscsi_logout_progress(struct iscsi_conn *c);

/* ---- server.c ---- */
/* Take @c off @rc's list of connections (on @rc's reactor, or under sess_lock while moving). */
void tnd_iscsi_rctx_unlink(struct iscsi_rctx *rc, struct iscsi_conn *c);
void tnd_iscsi_rctx_conn_gone(struct iscsi_rctx *rc);
/*
 * The reactor normal session @c should run on (the policy is in
 * tnd_target.h), counted in its nr_sessions (c->placed). On @c's reactor,
 * once its LUN view is built.
 */
struct iscsi_rctx *tnd_iscsi_place(struct iscsi_conn *c);
/*
 * Hand logged-in @c over to c->move_to, on its current reactor, at a
 * quiescent point (no recv, send, deferred send, command or timer of it
 * pending, nothing to send). Returns 0 once the hand-off message is sent
 * (@c must not be touched after that: it belongs to the new reactor), or
 * -EBUSY when a reinstatement's kill message is already on its way to the
 * current reactor: then @c stays and that message closes it.
 */
int tnd_iscsi_conn_move(struct iscsi_conn *c);
/*
 * Register a new session: returns the TSIH, and closes an older session
 * of the same initiator name, ISID and target (reinstatement).
 */
uint16_t tnd_iscsi_session_register(struct iscsi_conn *c);
/*
 * Serve an already connected stream socket (takes ownership of @fd) as if
 * a portal had accepted it; any thread, after start. Used by the
 * connection fuzzer with one end of a socketpair.
 */
int tnd_iscsi_server_adopt(struct tnd_target_server *srv, int fd);

/* ---- iscsi_cfg.c ---- */
/* The target @iqn in @cfg, or NULL. */
const struct iscsi_target *tnd_iscsi_cfg_target(const struct iscsi_cfg *cfg, const char *iqn);
/* @initiator's ACL on @t, or NULL. */
const struct iscsi_acl *tnd_iscsi_target_acl(const struct iscsi_target *t, const char *initiator);
/* Whether @t admits @initiator: allow_any or an ACL names it. */
bool tnd_iscsi_admitted(const struct iscsi_target *t, const char *initiator);
/*
 * (Re)build the LUN view of normal session @c from its reactor's
 * configuration. Returns 0, -ENOENT (the target is gone), -EACCES (the
 * initiator is no longer admitted) or -ENOMEM; on error the old view stays.
 * Sets c->luns_changed when a view that existed before changes.
 */
int tnd_iscsi_session_view(struct iscsi_conn *c);
void tnd_iscsi_view_free(struct iscsi_conn *c);
/* The LU at @lun in @c's view, or NULL. */
struct tnd_scsi_lu *tnd_iscsi_view_lu(const struct iscsi_conn *c, uint64_t lun);
/* A command on @lu left the SCSI layer: counts down a pending drain. */
/* A task counted by the round draining LUs (drain_counted) finished. */
void tnd_iscsi_cfg_cmd_done(struct iscsi_rctx *rc);
int tnd_iscsi_cfg_init(struct tnd_target_server *srv);
/* Free the configuration and every LU still mapped (server destroy). */
void tnd_iscsi_cfg_destroy(struct tnd_target_server *srv);
/* Under cfg_lock: no change starts after this (server stop). */
void tnd_iscsi_cfg_shutdown(struct tnd_target_server *srv);

#endif
